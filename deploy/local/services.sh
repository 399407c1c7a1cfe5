#!/usr/bin/env bash
# Starts and stops Dialer's own processes (API, scheduler, worker, simulator)
# against the Postgres and RabbitMQ that stack.sh runs under the same RUNDIR.
#   services.sh start RUNDIR   migrate, start what is not running, write RUNDIR/env
#   services.sh stop RUNDIR    SIGTERM each service, wait for its drain
# Every DIALER_* variable in the caller's environment reaches every service.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
bin=${DIALER_BIN:-$root/build}
say() { printf 'services: %s\n' "$*"; }
die() { printf 'services: error: %s\n' "$*" >&2; exit 1; }

# Any socket on the port counts (a client's local port, TIME_WAIT), and
# ports come from below the kernel's range for client ports, as in stack.sh.
port_free() { [[ -z $(ss -Htan "( sport = :$1 )" 2>/dev/null) ]]; }
pick_port() {
	local p lo
	lo=$(awk '{ print $1 }' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
	((lo > 21000)) || lo=40001
	for _ in $(seq 1 200); do
		p=$((20000 + RANDOM % (lo - 20000)))
		if port_free "$p"; then echo "$p"; return 0; fi
	done
	die "no free port"
}
alive() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

# wait_http URL SECONDS: polls until URL answers 200.
wait_http() {
	local deadline=$((SECONDS + $2))
	until curl -fsS -o /dev/null --max-time 2 "$1" 2>/dev/null; do
		((SECONDS < deadline)) || return 1
		sleep 0.1
	done
}

# start_one NAME PORT_VAR_VALUE BINARY [ENV=VALUE...]
start_one() {
	local name=$1 bin_path=$2
	shift 2
	if alive "$run/pids/$name.pid"; then
		return 0
	fi
	env "$@" "$bin_path" >>"$run/logs/$name.log" 2>&1 &
	echo $! >"$run/pids/$name.pid"
}

cmd_start() {
	run=$1
	[[ -f $run/infra.env ]] || die "$run/infra.env missing: run stack.sh infra-up first"
	# shellcheck disable=SC1091
	source "$run/infra.env"
	mkdir -p "$run/pids" "$run/logs"
	[[ -f $run/ports ]] || {
		echo "API_PORT=${DIALER_HTTP_PORT:-$(pick_port)}"
		echo "SIM_PORT=${DIALER_SIM_PORT:-$(pick_port)}"
		echo "SCHED_HEALTH=$(pick_port)"
		echo "WORKER_HEALTH=$(pick_port)"
	} >"$run/ports"
	# shellcheck disable=SC1091
	source "$run/ports"
	"$bin/dialerctl" migrate >/dev/null || die "migrations failed"
	local api_url=http://127.0.0.1:$API_PORT sim_url=http://127.0.0.1:$SIM_PORT
	export DIALER_CARRIER_BASE_URL=${DIALER_CARRIER_BASE_URL:-$sim_url}
	export DIALER_API_PUBLIC_URL=${DIALER_API_PUBLIC_URL:-$api_url}
	# Each service connects with its own least-privileged role.
	local api_db=${DIALER_API_DB_URL:-$(sed 's#://[^@]*@#://dialer_api:dialer_api@#' <<<"$DIALER_DB_URL")}
	local sched_db=${DIALER_SCHEDULER_DB_URL:-$(sed 's#://[^@]*@#://dialer_scheduler:dialer_scheduler@#' <<<"$DIALER_DB_URL")}
	start_one telephony-sim "$bin/telephony-sim" DIALER_SIM_PORT="$SIM_PORT"
	start_one dialer-api "$bin/dialer-api" DIALER_HTTP_PORT="$API_PORT" DIALER_DB_URL="$api_db"
	start_one dialer-scheduler "$bin/dialer-scheduler" DIALER_HEALTH_PORT="$SCHED_HEALTH" DIALER_DB_URL="$sched_db"
	# The worker connects as dialer_worker, a role that may only call the fence.
	local worker_db=${DIALER_WORKER_DB_URL:-$(sed 's#://[^@]*@#://dialer_worker:dialer_worker@#' <<<"$DIALER_DB_URL")}
	start_one dialer-worker "$bin/dialer-worker" DIALER_HEALTH_PORT="$WORKER_HEALTH" DIALER_WORKER_DB_URL="$worker_db"
	wait_http "$api_url/readyz" 30 || die "dialer-api did not become ready (see $run/logs/dialer-api.log)"
	wait_http "$sim_url/healthz" 30 || die "telephony-sim did not start (see $run/logs/telephony-sim.log)"
	wait_http "http://127.0.0.1:$SCHED_HEALTH/healthz" 30 || die "dialer-scheduler did not start"
	wait_http "http://127.0.0.1:$WORKER_HEALTH/healthz" 30 || die "dialer-worker did not start"
	if [[ ! -f $run/dev-org.json ]]; then
		"$bin/dialerctl" org create --name "dev" --quota-minutes 100000 >"$run/dev-org.json.tmp"
		org=$(jq -r .organizationId "$run/dev-org.json.tmp")
		"$bin/dialerctl" flow create --org "$org" --name "Dev flow" --voice-url "$sim_url/voice.xml" \
			>"$run/dev-flow.json"
		mv "$run/dev-org.json.tmp" "$run/dev-org.json"
	fi
	{
		echo "export DIALER_API_URL=$api_url"
		echo "export DIALER_API_KEY=$(jq -r .apiKey "$run/dev-org.json")"
		echo "export DIALER_ORG_ID=$(jq -r .organizationId "$run/dev-org.json")"
		echo "export DIALER_FLOW_ID=$(jq -r .id "$run/dev-flow.json")"
		echo "export DIALER_DB_URL=$DIALER_DB_URL"
		echo "export DIALER_AMQP_URL=$DIALER_AMQP_URL"
		echo "export DIALER_SIM_URL=$sim_url"
		echo "export DIALER_SCHEDULER_HEALTH_URL=http://127.0.0.1:$SCHED_HEALTH"
		echo "export DIALER_WORKER_HEALTH_URL=http://127.0.0.1:$WORKER_HEALTH"
	} >"$run/env"
	say "API $api_url, simulator $sim_url (logs in $run/logs)"
}

cmd_stop() {
	run=$1
	local f pid deadline
	[[ -d $run/pids ]] || return 0
	for f in "$run"/pids/*.pid; do
		[[ -f $f ]] || continue
		pid=$(cat "$f")
		kill -TERM "$pid" 2>/dev/null || true
	done
	for f in "$run"/pids/*.pid; do
		[[ -f $f ]] || continue
		pid=$(cat "$f")
		deadline=$((SECONDS + 20))
		while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
		if kill -0 "$pid" 2>/dev/null; then
			say "$(basename "$f" .pid) did not drain in 20 s; killing it"
			kill -KILL "$pid" 2>/dev/null || true
		fi
		rm -f "$f"
	done
}

case ${1:-} in
start) cmd_start "$(realpath -m "${2:?RUNDIR}")" ;;
stop) cmd_stop "$(realpath -m "${2:?RUNDIR}")" ;;
*) echo "usage: services.sh start|stop RUNDIR" >&2; exit 2 ;;
esac
