#!/usr/bin/env bash
# Lint api/openapi.yaml with Redocly CLI (pinned in tests/openapi/package.json).
#
#   tests/openapi/lint.sh              lint the document; last line "openapi: lint ok"
#   tests/openapi/lint.sh --self-test  also prove the lint catches broken copies
#
# Needs the npm registry only the first time (npm ci into tests/openapi/node_modules);
# after that it runs offline. Installs Debian's nodejs/npm when node is missing.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
spec="api/openapi.yaml"

self_test=0
case "${1:-}" in
  "") ;;
  --self-test) self_test=1 ;;
  -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
  *) echo "usage: $0 [--self-test]" >&2; exit 2 ;;
esac

# Redocly must not phone home: no telemetry, no update check.
export REDOCLY_TELEMETRY=off
export REDOCLY_SUPPRESS_UPDATE_NOTICE=true
export NO_UPDATE_NOTIFIER=1
export npm_config_update_notifier=false

log() { echo "openapi: $*" >&2; }

ensure_node() {
  if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
    return
  fi
  log "node/npm missing; installing Debian packages nodejs npm"
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { log "not root and no sudo: install nodejs and npm"; exit 1; }
    sudo="sudo"
  fi
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
}

ensure_redocly() {
  local want have=""
  want="$(node -p 'require(process.argv[1]).devDependencies["@redocly/cli"]' "$here/package.json")"
  if [ -f "$here/node_modules/@redocly/cli/package.json" ]; then
    have="$(node -p 'require(process.argv[1]).version' "$here/node_modules/@redocly/cli/package.json")"
  fi
  if [ "$have" != "$want" ] || [ ! -x "$here/node_modules/.bin/redocly" ]; then
    log "installing @redocly/cli@$want into tests/openapi/node_modules (npm ci)"
    (cd "$here" && npm ci --no-audit --no-fund --loglevel=error)
  fi
}

# redocly_lint SPEC CONFIG: lint SPEC (path relative to the cwd) with CONFIG.
redocly_lint() {
  npx --prefix "$here" --no -- redocly lint "$1" --config "$2"
}

self_test() {
  local tmp out rc failures=0
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' RETURN
  # Same layout as the repo so the ignore file's relative paths still apply.
  mkdir -p "$tmp/api" "$tmp/tests/openapi"
  cp "$here/redocly.yaml" "$here/.redocly.lint-ignore.yaml" "$tmp/tests/openapi/"

  # mutate NAME EXPECT JS: write a copy of the spec changed by JS (a function
  # body over `doc`), lint it, and require a failure whose output matches EXPECT.
  mutate() {
    local name="$1" expect="$2" js="$3"
    NODE_PATH="$here/node_modules" node -e '
      const fs = require("fs"), yaml = require("js-yaml");
      const [src, dst, body] = process.argv.slice(1);
      const doc = yaml.load(fs.readFileSync(src, "utf8"));
      new Function("doc", body)(doc);
      fs.writeFileSync(dst, yaml.dump(doc, { noRefs: true, lineWidth: -1 }));
    ' "$root/$spec" "$tmp/api/openapi.yaml" "$js"
    set +e
    out="$(cd "$tmp" && redocly_lint api/openapi.yaml tests/openapi/redocly.yaml 2>&1)"
    rc=$?
    set -e
    if [ "$rc" -ne 0 ] && grep -q -- "$expect" <<<"$out"; then
      log "self-test: $name: lint failed as expected ($expect)"
    else
      log "self-test: $name: NOT caught (rc=$rc, expected failure matching '$expect')"
      printf '%s\n' "$out" | tail -n 30 >&2
      failures=$((failures + 1))
    fi
  }

  # Control: the unchanged document (re-serialized) must pass in the temp layout.
  NODE_PATH="$here/node_modules" node -e '
    const fs = require("fs"), yaml = require("js-yaml");
    fs.writeFileSync(process.argv[2], yaml.dump(yaml.load(fs.readFileSync(process.argv[1], "utf8")), { noRefs: true, lineWidth: -1 }));
  ' "$root/$spec" "$tmp/api/openapi.yaml"
  if out="$(cd "$tmp" && redocly_lint api/openapi.yaml tests/openapi/redocly.yaml 2>&1)"; then
    log "self-test: control copy passes"
  else
    log "self-test: control copy FAILED"; printf '%s\n' "$out" | tail -n 30 >&2
    failures=$((failures + 1))
  fi

  mutate "missing info.title" "struct" 'delete doc.info.title;'
  mutate "missing responses" "struct" 'delete doc.paths["/v1/campaigns"].get.responses;'
  mutate "seed example off-schema" "no-invalid-schema-examples" \
    'doc.components.schemas.Campaign.example.status = "RUNNING";'
  mutate "unresolved \$ref" "no-unresolved-refs" \
    'doc.paths["/v1/campaigns/{id}"].get.responses["200"] = { $ref: "#/components/responses/Nope" };'
  mutate "no 4xx on an API operation" "operation-4xx-response" \
    'const r = doc.paths["/v1/contacts/{id}"].delete.responses; for (const k of Object.keys(r)) if (/^4/.test(k)) delete r[k];'
  mutate "429 without Retry-After" "response-contains-header" \
    'delete doc.components.responses.TooManyRequests.headers["Retry-After"];'

  if [ "$failures" -ne 0 ]; then
    log "self-test: $failures case(s) failed"
    return 1
  fi
  log "self-test ok"
}

ensure_node
ensure_redocly
cd "$root"
if [ "$self_test" -eq 1 ]; then
  self_test
fi
redocly_lint "$spec" tests/openapi/redocly.yaml
echo "openapi: lint ok"
