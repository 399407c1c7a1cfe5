#!/usr/bin/env bash
# make test: builds, starts a private Postgres and RabbitMQ under a temp dir,
# starts the services, runs the unit and integration suites and the OpenAPI
# lint, fails on any sanitizer report in a service's log, and stops it all.
set -uo pipefail
shopt -s nullglob

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
say() { printf 'test: %s\n' "$*"; }

make -j2 all || { say "build failed"; exit 1; }

run=$(mktemp -d /tmp/dialer-test.XXXXXX)
chmod 755 "$run"
cleanup() {
	bash deploy/local/services.sh stop "$run" >/dev/null 2>&1 || true
	bash deploy/local/stack.sh infra-down "$run" >/dev/null 2>&1 || true
	if [[ ${KEEP_RUN:-0} == 1 ]]; then say "kept $run"; else rm -rf "$run"; fi
}
trap cleanup EXIT

export DIALER_STACK_FAST=1
bash deploy/local/stack.sh infra-up "$run" || { say "could not start Postgres and RabbitMQ"; exit 1; }
# shellcheck disable=SC1091
source "$run/infra.env"
# Integration suites make many calls per key; the limits themselves are
# tested on the bulk class, which keeps its default.
export DIALER_API_RATE_PER_MIN=${DIALER_API_RATE_PER_MIN:-1000000}
export DIALER_LOG_LEVEL=${DIALER_LOG_LEVEL:-info}
# A two-second minute: campaigns, retries and simulated calls run 30 times
# faster; the scheduler ticks often enough to pace at that speed.
export DIALER_CLOCK_MINUTE_MS=${DIALER_CLOCK_MINUTE_MS:-2000}
export DIALER_SCHEDULER_TICK_MS=${DIALER_SCHEDULER_TICK_MS:-10}
# Dispatch passes commit every 50 dials (2,000 by default), so every test
# that dials more at once runs passes cut short and followed at once.
export DIALER_SCHEDULER_DISPATCH_BATCH=${DIALER_SCHEDULER_DISPATCH_BATCH:-50}
# A short lease so that failover tests take seconds.
export DIALER_SCHEDULER_LEASE_S=${DIALER_SCHEDULER_LEASE_S:-3}
# Attempts silent this long are reconciled with the carrier. It must exceed
# the longest a worker can take over one dial (request timeout and 429
# resends), or a slow dial could be reconciled as never made.
export DIALER_SCHEDULER_RECONCILE_AFTER_S=${DIALER_SCHEDULER_RECONCILE_AFTER_S:-12}
# Audiences are copied 40 contacts a transaction, so every campaign of the
# suites starts dialing mid-snapshot and crosses many chunk boundaries.
export DIALER_SCHEDULER_SNAPSHOT_CHUNK=${DIALER_SCHEDULER_SNAPSHOT_CHUNK:-40}
bash deploy/local/services.sh start "$run" || { say "could not start the services"; exit 1; }
# shellcheck disable=SC1091
source "$run/env"
export DIALER_CTL=$root/build/dialerctl STACK_RUNDIR=$run
export DIALER_STACK=$root/deploy/local/stack.sh

passed=0
failed=0
failures=()
suite() {
	local name=$1
	shift
	# SUITES="it_scheduler test_common" runs only those (a developer's shortcut).
	if [[ -n ${SUITES:-} && " $SUITES " != *" $name "* ]]; then
		return 0
	fi
	say "suite $name"
	if "$@"; then
		passed=$((passed + 1))
	else
		failed=$((failed + 1))
		failures+=("$name")
	fi
}

for t in build/tests/test_*; do
	[[ -x $t ]] && suite "$(basename "$t")" "$t"
done
for t in build/tests/it_*; do
	[[ -x $t ]] && suite "$(basename "$t")" "$t"
done
suite metrics bash tests/metrics/check.sh
suite openapi-lint bash tests/openapi/lint.sh
suite deploy-validate bash tests/deploy/validate.sh
suite deploy-selftest bash tests/deploy/validate.sh --self-test

# Every service must have logged no sanitizer report.
if grep -lE 'ERROR: (Address|Leak|Thread)Sanitizer|runtime error:' "$run"/logs/*.log 2>/dev/null; then
	say "sanitizer reports in the service logs above"
	failed=$((failed + 1))
	failures+=("sanitizers")
fi
# Every service must drain and exit 0 on SIGTERM.
for f in "$run"/pids/*.pid; do
	pid=$(cat "$f")
	kill -TERM "$pid" 2>/dev/null
done
for f in "$run"/pids/*.pid; do
	name=$(basename "$f" .pid)
	pid=$(cat "$f")
	for _ in $(seq 1 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
	if kill -0 "$pid" 2>/dev/null; then
		say "$name did not stop within 20 s of SIGTERM"
		failed=$((failed + 1))
		failures+=("$name-drain")
	elif ! grep -q '"msg":"stopped"' "$run/logs/$name.log"; then
		say "$name did not log a clean stop"
		failed=$((failed + 1))
		failures+=("$name-drain")
	fi
	rm -f "$f"
done

if ((failed > 0)); then
	say "failed: ${failures[*]}"
	for f in "$run"/logs/*.log; do
		say "last lines of $f:"
		tail -n 20 "$f"
	done
fi
echo "${passed} passed, ${failed} failed"
((failed == 0))
