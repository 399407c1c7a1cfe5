#!/usr/bin/env bash
# Offline validation of deploy/ (no cluster, no container engine):
#   - yamllint (--strict, tests/deploy/yamllint.yaml) on every YAML source under deploy/k8s
#   - `kubectl kustomize` renders the base, every overlay, the RabbitMQ example and the ops pod
#   - check.mjs: every rendered object against its schema (kubernetes-models and
#     @kubernetes-models/keda), then the policy: resources, probes, restricted
#     security context, pinned images, PDBs, autoscalers, references, network
#     policies; the services' own `--check-config` on the rendered settings
#     when build/ has the binaries
#   - deploy/docker/Dockerfile: dockerfilelint, targets, users, exec-form
#     entrypoints, runtime packages (against the binaries' shared libraries),
#     the build context against deploy/docker/dockerignore
# The last line is `deploy: ok`; any failure exits 1.
#
#   tests/deploy/validate.sh               validate the tree
#   tests/deploy/validate.sh --self-test   break copies on purpose; every check must catch its case
#   tests/deploy/validate.sh --build-context   also compile the five binaries from exactly
#                                          what the Dockerfile's build stage COPYs (slower)
#
# Needs node and npm (Debian's nodejs/npm are installed when missing), yamllint
# (Debian package, installed when missing) and kubectl, which has no Debian
# package: without it the render, schema and policy checks are skipped with a
# message. The npm registry is needed only once (npm ci into tests/deploy/node_modules).
# shellcheck disable=SC2001,SC2012,SC2016  # sed prefixes, overlay names, literal $patch
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
log() { printf 'deploy: %s\n' "$*"; }
export npm_config_update_notifier=false npm_config_fund=false npm_config_audit=false

mode=validate
for a in "$@"; do
	case $a in
	--self-test) mode=self-test ;;
	--build-context) build_context=1 ;;
	-h | --help) sed -n '2,23p' "$0"; exit 0 ;;
	*) log "unknown argument $a"; exit 2 ;;
	esac
done

# ------------------------------------------------------------------ tools
apt_install() {
	local sudo=
	if [[ $(id -u) != 0 ]]; then
		command -v sudo >/dev/null 2>&1 || { log "not root and no sudo: install $* (Debian packages)"; return 1; }
		sudo=sudo
	fi
	log "installing Debian packages: $*"
	$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null 2>&1 ||
		{ $sudo apt-get update -qq >/dev/null 2>&1 &&
			$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null; }
}

tools() {
	command -v yamllint >/dev/null 2>&1 || apt_install yamllint || { log "FAIL yamllint missing"; return 1; }
	if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
		apt_install nodejs npm || { log "FAIL node/npm missing"; return 1; }
	fi
	# npm ci when node_modules is missing or older than the lock file.
	if [[ ! -f $here/node_modules/.package-lock.json || $here/package-lock.json -nt $here/node_modules/.package-lock.json ]]; then
		log "installing the pinned npm packages into tests/deploy/node_modules (npm ci)"
		(cd "$here" && npm ci --no-audit --no-fund --loglevel=error >/dev/null) || { log "FAIL npm ci"; return 1; }
	fi
	if command -v kubectl >/dev/null 2>&1; then
		have_kubectl=1
	else
		have_kubectl=0
		log "SKIPPED: kubectl is not installed (Debian has no package for it; install it from your" \
			"platform's packages), so the manifests are not rendered, schema-checked or policy-checked;" \
			"yamllint and the Dockerfile checks still run"
	fi
}

# ------------------------------------------------------------------ checks
# run_checks K8S_DIR DOCKERFILE DOCKERIGNORE: every check on one tree; prints
# what fails and returns non-zero if anything did.
run_checks() {
	local k8s=$1 dockerfile=$2 dockerignore=$3 out rc=0 dir name ext
	out=$(mktemp -d /tmp/dialer-deploy.XXXXXX)

	# 1. yamllint on the sources.
	if ! yamllint --strict -f parsable -c "$here/yamllint.yaml" "$k8s" >"$out/yamllint" 2>&1; then
		sed 's/^/deploy: FAIL yamllint: /' "$out/yamllint"
		rc=1
	fi

	# 2. The ConfigMap's libconfig file is deploy/dialer.conf, copied.
	if ! cmp -s "$root/deploy/dialer.conf" "$k8s/base/dialer.conf"; then
		log "FAIL $k8s/base/dialer.conf differs from deploy/dialer.conf (cp deploy/dialer.conf deploy/k8s/base/dialer.conf)"
		rc=1
	fi

	# 3. Render the base, every overlay and the RabbitMQ example.
	local -a renders=() externals=()
	if [[ $have_kubectl == 1 ]]; then
		for dir in "$k8s/base" "$k8s"/overlays/* "$k8s/rabbitmq" "$k8s/ops"; do
			[[ -f $dir/kustomization.yaml ]] || continue
			name=$(basename "$dir")
			if kubectl kustomize "$dir" >"$out/$name.yaml" 2>"$out/$name.err"; then
				renders+=(--render "$name=$out/$name.yaml" --kustomization "$name=$dir/kustomization.yaml")
			else
				log "FAIL render $name: $(grep -v '^\s*$' "$out/$name.err" | head -3 | tr '\n' ' ')"
				rc=1
			fi
			# Objects an overlay leaves to the cluster: "# validate: external Kind/name".
			while read -r ext; do
				externals+=(--external "$name=$ext")
			done < <(sed -n 's/^# validate: external \([A-Za-z]*\/[a-z0-9.-]*\).*/\1/p' "$dir/kustomization.yaml")
		done
	fi

	# 4. Schema and policy of the renders, the Dockerfile and its context.
	local -a bins=()
	[[ -x $root/build/dialer-api && ${CHECK_BINS:-1} == 1 ]] && bins=(--bin-dir "$root/build")
	if ! node "$here/check.mjs" "${renders[@]}" "${externals[@]}" --dockerfile "$dockerfile" \
		--dockerignore "$dockerignore" --repo "$root" "${bins[@]}" >"$out/check" 2>&1; then
		grep -v '^check: ok' "$out/check" | sed 's/^check: /deploy: /'
		rc=1
	fi
	[[ ${#bins[@]} -gt 0 || ${CHECK_BINS:-1} == 0 ]] ||
		log "note: build/ has no binaries: --check-config and the shared-library check skipped"

	# 5. dockerfilelint.
	if ! "$here/node_modules/.bin/dockerfilelint" -c "$here" "$dockerfile" >"$out/dockerfilelint" 2>&1; then
		grep -v '^\s*$' "$out/dockerfilelint" | sed 's/^/deploy: FAIL dockerfilelint: /'
		rc=1
	fi
	rm -rf "$out"
	return $rc
}

# Compiles the five binaries from only what the build stage COPYs, with its
# make command: proves the Dockerfile's context is complete.
build_context_check() {
	local ctx
	ctx=$(mktemp -d /tmp/dialer-ctx.XXXXXX)
	sed -n 's/^COPY \([^-][^ ]*\) .*/\1/p' "$root/deploy/docker/Dockerfile" | while read -r src; do
		mkdir -p "$ctx/$(dirname "${src%/}")"
		cp -r "$root/${src%/}" "$ctx/${src%/}"
	done
	if (cd "$ctx" && make -j"$(nproc)" BUILD="$ctx/out" VERSION=context-check \
		"$ctx/out/dialer-api" "$ctx/out/dialer-scheduler" "$ctx/out/dialer-worker" \
		"$ctx/out/dialerctl" "$ctx/out/telephony-sim" >"$ctx/make.log" 2>&1); then
		log "build context: the build stage's COPYs build all five binaries"
		rm -rf "$ctx"
	else
		tail -5 "$ctx/make.log" | sed 's/^/deploy: FAIL build context: /'
		rm -rf "$ctx"
		return 1
	fi
}

# ------------------------------------------------------------------ self-test
# add_patch OVERLAY_DIR PATCH [KIND NAME]: appends an inline patch (a JSON
# 6902 one when KIND and NAME give its target) to the overlay's `patches:`
# list, the last key of each overlay's kustomization.yaml.
add_patch() {
	{
		if [[ $# -ge 4 ]]; then
			printf '  - target:\n      kind: %s\n      name: %s\n    patch: |-\n' "$3" "$4"
		else
			echo "  - patch: |-"
		fi
		sed 's/^/      /' <<<"$2"
	} >>"$1/kustomization.yaml"
}

self_test() {
	local t passed=0 failed=0 rc
	t=$(mktemp -d /tmp/dialer-deploy-selftest.XXXXXX)
	trap 'rm -rf "$t"' RETURN
	fresh() {
		rm -rf "$t/k8s" "$t/docker"
		cp -r "$root/deploy/k8s" "$t/k8s"
		mkdir -p "$t/docker"
		cp "$root/deploy/docker/Dockerfile" "$root/deploy/docker/dockerignore" "$t/docker/"
	}
	# expect NAME REGEX: the checks must fail on the broken copy, for the
	# expected reason (REGEX in their output).
	expect() {
		local out
		out=$(run_checks "$t/k8s" "$t/docker/Dockerfile" "$t/docker/dockerignore" 2>&1)
		rc=$?
		if [[ $rc -ne 0 ]] && grep -Eq -- "$2" <<<"$out"; then
			log "self-test: caught: $1"
			passed=$((passed + 1))
		else
			log "self-test: NOT caught: $1 (exit $rc, wanted /$2/); output:"
			sed 's/^/    /' <<<"$out" | head -20
			failed=$((failed + 1))
		fi
	}

	fresh
	if run_checks "$t/k8s" "$t/docker/Dockerfile" "$t/docker/dockerignore" >"$t/control" 2>&1; then
		log "self-test: the unbroken copy passes"
	else
		log "self-test: FAIL the unbroken copy does not pass:"
		cat "$t/control"
		return 1
	fi
	[[ $have_kubectl == 1 ]] || { log "self-test: needs kubectl"; return 1; }
	# The binaries' own checks only where a case needs them (speed).
	export CHECK_BINS=0

	fresh
	add_patch "$t/k8s/overlays/prod" '- op: remove
  path: /spec/template/spec/containers/0/resources/limits' Deployment dialer-worker
	expect "a container without limits" 'dialer-worker: resources\.limits\.cpu missing'

	fresh
	sed -i '/name: registry.example.com\/dialer\/api$/{n;s/newTag: 0.1.0/newTag: latest/}' "$t/k8s/overlays/dev/kustomization.yaml"
	expect "an image tagged :latest" 'api:latest" uses the latest tag'

	fresh
	sed -i 's/name: registry.example.com\/dialer\/worker$/name: dialer-worker/' "$t/k8s/overlays/prod/kustomization.yaml"
	expect "an images: entry that matches no image (a silent no-op)" 'entry "dialer-worker" changes no container image'

	fresh
	printf '  labels: {app: [unclosed\n' >>"$t/k8s/base/serviceaccount.yaml"
	expect "a syntactically invalid manifest" 'yamllint: .*syntax|FAIL render base'

	fresh
	add_patch "$t/k8s/overlays/prod" '- op: remove
  path: /spec/template/spec/containers/0/readinessProbe' Deployment dialer-scheduler
	expect "a Deployment without a readiness probe" 'dialer-scheduler: readinessProbe missing'

	fresh
	add_patch "$t/k8s/overlays/prod" '- op: replace
  path: /spec/template/spec/containers/0/securityContext/allowPrivilegeEscalation
  value: true
- op: replace
  path: /spec/template/spec/containers/0/securityContext/runAsUser
  value: 0' Deployment dialer-api
	expect "privilege escalation and root" 'allowPrivilegeEscalation must be false.*|runAsUser must be 10001'

	fresh
	add_patch "$t/k8s/overlays/prod" '- op: replace
  path: /spec/template/spec/containers/0/securityContext/readOnlyRootFilesystem
  value: false' Job dialer-migrate
	expect "a Job with a writable root filesystem" 'Job/dialer-migrate container dialerctl: readOnlyRootFilesystem must be true'

	fresh
	add_patch "$t/k8s/overlays/prod" '$patch: delete
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: dialer-scheduler'
	expect "a Deployment without a PodDisruptionBudget" 'dialer-scheduler: no PodDisruptionBudget'

	fresh
	sed -i 's/readOnlyRootFilesystem: true/readOnlyRootFileSystem: true/' "$t/k8s/base/worker.yaml"
	expect "a misspelt field" 'unknown field "readOnlyRootFileSystem"'

	fresh
	sed -i 's/^  revisionHistoryLimit: 5$/  revisionHistoryLimit: "five"/' "$t/k8s/base/scheduler.yaml"
	expect "a schema violation (string for an integer)" 'schema: .*revisionHistoryLimit must be integer'

	fresh
	sed -i 's/protocol: http$/protocol: amqp/' "$t/k8s/base/worker.yaml"
	expect "a KEDA trigger that ignores unacked jobs" 'protocol: http'

	fresh
	add_patch "$t/k8s/overlays/prod" 'apiVersion: apps/v1
kind: Deployment
metadata:
  name: dialer-api
spec:
  replicas: 4'
	expect "fixed replicas on an autoscaled Deployment" 'spec.replicas is set on an autoscaled Deployment'

	fresh
	cp "$t/k8s/overlays/dev/telephony-sim.yaml" "$t/k8s/overlays/prod/"
	sed -i 's|^  - ../../base$|  - ../../base\n  - telephony-sim.yaml|' "$t/k8s/overlays/prod/kustomization.yaml"
	expect "the simulator in prod" 'the simulator must not run in prod'

	fresh
	sed -i 's/^# validate: external .*//' "$t/k8s/overlays/prod/kustomization.yaml"
	expect "a reference to a Secret that is not there" 'Secret dialer-secrets not in the render'

	fresh
	sed -i 's/^ENTRYPOINT \["\/usr\/local\/bin\/dialer-worker"\]/ENTRYPOINT \/usr\/local\/bin\/dialer-worker/' "$t/docker/Dockerfile"
	sed -i '0,/^FROM debian:bookworm-slim AS runtime/s//FROM debian:latest AS runtime/' "$t/docker/Dockerfile"
	expect "a shell-form ENTRYPOINT and a :latest base image" 'ENTRYPOINT must be exec form.*|uses latest'

	fresh
	sed -i 's/^USER 10001:10001$/USER root/' "$t/docker/Dockerfile"
	expect "an image running as root" 'USER root must be a numeric non-root uid'

	fresh
	sed -i 's/libconfig9 libssl3/libconfig9 libconfig-dev libssl3/' "$t/docker/Dockerfile"
	expect "a -dev package in a runtime image" 'installs libconfig-dev, not a runtime package'

	fresh
	echo "common" >>"$t/docker/dockerignore"
	expect "a build context that drops sources" 'COPY common/: excluded by dockerignore'

	fresh
	echo 'bogus: { key = 1; };' >>"$t/k8s/base/dialer.conf"
	expect "a ConfigMap copy that drifted from deploy/dialer.conf" 'differs from deploy/dialer.conf'

	if [[ -x $root/build/dialer-api ]]; then
		fresh
		sed -i 's/DIALER_CLOCK_MINUTE_MS=6000/DIALER_CLOCK_MINUTE_MS=5/' "$t/k8s/overlays/dev/kustomization.yaml"
		CHECK_BINS=1 expect "a setting the services reject (--check-config)" 'check-config rejects the rendered settings'

		fresh
		sed -i 's/ libpq5 / /' "$t/docker/Dockerfile"
		CHECK_BINS=1 expect "an image missing a library its binary needs" 'needs libpq.so.5'
	fi

	log "self-test: $passed caught, $failed not caught"
	[[ $failed -eq 0 ]]
}

# ------------------------------------------------------------------ main
start=$SECONDS
tools || exit 1
if [[ $mode == self-test ]]; then
	self_test || { log "FAIL self-test"; exit 1; }
	log "ok"
	exit 0
fi
status=0
run_checks "$root/deploy/k8s" "$root/deploy/docker/Dockerfile" "$root/deploy/docker/dockerignore" || status=1
if [[ ${build_context:-0} == 1 ]]; then
	build_context_check || status=1
fi
if [[ $status -ne 0 ]]; then
	log "FAILED ($((SECONDS - start)) s)"
	exit 1
fi
if [[ $have_kubectl == 1 ]]; then
	log "rendered and checked: base, $(cd "$root/deploy/k8s/overlays" && ls -d -- */ | tr -d / | tr '\n' ' ')rabbitmq ops; Dockerfile linted ($((SECONDS - start)) s)"
else
	log "yamllint and Dockerfile checked; manifests NOT rendered (no kubectl) ($((SECONDS - start)) s)"
fi
log "ok"
