#!/usr/bin/env bash
# make faults: the fault suite. Starts a private Postgres and RabbitMQ on
# loopback ports under a temporary directory, then for each scenario restarts
# Dialer's services with the scenario's settings, runs two campaigns through
# the real API while it injects the fault, and checks Postgres against the
# carrier simulator's log (tests/faults/check.py). One line per scenario,
# then `faults: N passed, M failed in S s`; exits non-zero on any failure.
#   FAULTS="carrier-429 worker-kill9" make faults   runs only those
#   KEEP_RUN=1 make faults                           keeps the run directory
# On a failure the run directory is kept with each failed scenario's logs and
# checker details under scenarios/<name>/.
set -uo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
say() { printf 'faults: %s\n' "$*"; }

for b in dialer-api dialer-scheduler dialer-worker dialerctl telephony-sim; do
	[[ -x build/$b ]] || { say "build/$b missing: run make first"; exit 1; }
done
command -v psql >/dev/null || { say "psql not found"; exit 1; }
# The driver and checker need only python3's standard library (CI's Debian
# has no python3 until it is installed).
if ! command -v python3 >/dev/null; then
	if [[ $EUID -eq 0 ]] && command -v apt-get >/dev/null; then
		say "installing python3"
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3; } >/dev/null 2>&1 ||
			{ say "could not install python3"; exit 1; }
	else
		say "python3 not found"
		exit 1
	fi
fi

python3 tests/faults/check.py --self-test >/dev/null || { say "the checker failed its self-test"; exit 1; }

run=$(mktemp -d /tmp/dialer-faults.XXXXXX)
chmod 755 "$run"
t0=$SECONDS
keep=${KEEP_RUN:-0}
cleanup() {
	bash deploy/local/services.sh stop "$run" >/dev/null 2>&1 || true
	bash deploy/local/stack.sh infra-down "$run" --purge >/dev/null 2>&1 || true
	if [[ $keep == 1 ]]; then
		say "logs kept in $run"
	else
		rm -rf "$run"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Every port below the kernel's ephemeral range: the suite restarts
# services (and the broker and Postgres) in place many times, and a port in
# that range can meanwhile be the local end of some outgoing connection.
read -r eph_lo _ </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || eph_lo=32768
taken=" "
low_port() {
	local p
	for _ in $(seq 1 500); do
		p=$((20000 + RANDOM % (eph_lo - 20000)))
		[[ $taken == *" $p "* ]] && continue
		[[ -n $(ss -Hltn "( sport = :$p )" 2>/dev/null) ]] && continue
		taken+="$p "
		echo "$p"
		return 0
	done
	return 1
}
if ((eph_lo > 21000)); then
	{
		echo "PG_PORT=$(low_port)"
		echo "MQ_PORT=$(low_port)"
		echo "MQ_MGMT_PORT=$(low_port)"
		echo "MQ_DIST_PORT=$(low_port)"
		echo "EPMD_PORT=$(low_port)"
	} >"$run/stack.state"
	{
		echo "API_PORT=$(low_port)"
		echo "SIM_PORT=$(low_port)"
		echo "SCHED_HEALTH=$(low_port)"
		echo "WORKER_HEALTH=$(low_port)"
	} >"$run/ports"
fi

export DIALER_STACK_FAST=1
bash deploy/local/stack.sh infra-up "$run" >"$run/infra-up.log" 2>&1 || {
	say "could not start Postgres and RabbitMQ (see $run/infra-up.log)"
	keep=1
	exit 1
}

# shellcheck disable=SC2086
timeout --kill-after=10 720 python3 tests/faults/faults.py "$run" ${FAULTS:-}
rc=$?
read -r passed failed <"$run/summary" 2>/dev/null || { passed=0; failed=1; }
if ((rc != 0 && failed == 0)); then failed=1; fi
if ((failed > 0)); then
	keep=1
	# only the failed scenarios' logs are worth keeping
	for d in "$run"/scenarios/*/; do
		grep -q ' PASS ([0-9]* s)$' "$d/check.txt" 2>/dev/null && rm -rf "$d"
	done
fi
say "${passed} passed, ${failed} failed in $((SECONDS - t0)) s"
((failed == 0))
