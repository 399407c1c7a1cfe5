#!/usr/bin/env bash
# make bench: the figures of issue 7 on a private stack (Postgres, RabbitMQ,
# API, scheduler, worker, simulator on loopback), each printed as
#   bench: name=value unit <baseline>=value ratio=r target... MET|MISSED|INFO
# next to a baseline measured in the same run, then a summary table.
#
# Environment:
#   BENCH_PHASES="floor dispatch api import e2e start1m growth footprint latency pacing"
#                         the phases to run (default: all, in that order; growth
#                         needs dispatch and api, and start1m before it)
#   BENCH_E2E_CONTACTS=100000  contacts of the end-to-end run
#   BENCH_E2E_CAMPAIGNS=4      campaigns they are split into (1,000 live calls each)
#   BENCH_E2E_CAP_S=200        the end-to-end run stops there (what is left is
#                              cancelled, the figure is MISSED) so that the whole
#                              bench stays within 15 minutes
#   BENCH_BIG_CONTACTS=1000000 audience size of the large start
#   BENCH_IMPORT_1M=1          0 skips the import of 1,000,000 contacts through the
#                              API (it stops after 120 s: MISSED)
#   BENCH_RUNDIR=DIR           reuse (or leave behind) the stack in DIR instead of a temp dir
#   BENCH_KEEP=1               leave the stack and its logs up at the end
#   BENCH_WRK_THREADS=1, BENCH_WRK_CONNS=16  the load of the API figures
set -uo pipefail
shopt -s nullglob

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
here=$root/tests/bench
say() { printf 'bench: # %s\n' "$*"; }
now_ms() { local t=${EPOCHREALTIME/./}; echo $((t / 1000)); }
T_BEGIN=$(now_ms)

PHASES=${BENCH_PHASES:-floor dispatch api import e2e start1m growth footprint latency pacing}
want() { [[ " $PHASES " == *" $1 "* ]]; }

# ------------------------------------------------------------------ tools
if ! command -v wrk >/dev/null; then
	if [[ $EUID -eq 0 ]]; then
		say "installing wrk"
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wrk >/dev/null 2>&1 ||
			{ apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wrk >/dev/null 2>&1; }
	fi
	command -v wrk >/dev/null || say "wrk is missing (apt-get install wrk): the API figures are skipped"
fi
mkdir -p build/bench
MQ=build/bench/mq_floor
if [[ ! -x $MQ || $here/mq_floor.c -nt $MQ ]]; then
	# shellcheck disable=SC2046
	cc -O2 -g -std=c11 -D_GNU_SOURCE -Wall -Wextra $(pkg-config --cflags librabbitmq) "$here/mq_floor.c" \
		-o "$MQ" $(pkg-config --libs librabbitmq) || { say "could not build mq_floor"; exit 1; }
fi
CTL=$root/build/dialerctl
CLK_TCK=$(getconf CLK_TCK)

# ------------------------------------------------------------------ results
declare -a ROWS=()
# fig NAME VALUE UNIT BASELINE_NAME BASELINE_VALUE RATIO TARGET VERDICT [NOTE]
fig() {
	local name=$1 value=$2 unit=$3 bname=$4 bval=$5 ratio=$6 target=$7 verdict=$8 note=${9:-}
	local line="bench: $name=$value $unit"
	[[ -n $bname ]] && line+=" $bname=$bval"
	[[ -n $ratio ]] && line+=" ratio=$ratio"
	[[ -n $target ]] && line+=" target:$target"
	line+=" $verdict"
	[[ -n $note ]] && line+=" ($note)"
	echo "$line"
	ROWS+=("$name|$value $unit|${bname:+$bname=$bval}|$ratio|$target|$verdict")
}
info() { echo "bench: # $*"; }
# calc EXPR: awk arithmetic, printed with up to 2 decimals when needed
calc() { awk "BEGIN { v = $1; if (v == int(v)) printf \"%d\", v; else printf \"%.2f\", v }"; }
ge() { awk "BEGIN { exit !(($1) >= ($2)) }"; }
le() { awk "BEGIN { exit !(($1) <= ($2)) }"; }
verdict() { if "$@"; then echo MET; else echo MISSED; fi; }

# ------------------------------------------------------------------ the stack
if [[ -n ${BENCH_RUNDIR:-} ]]; then
	run=$(realpath -m "$BENCH_RUNDIR")
	mkdir -p "$run"
	own_run=0
else
	run=$(mktemp -d /tmp/dialer-bench.XXXXXX)
	own_run=1
fi
chmod 755 "$run"
cleanup() {
	[[ -n ${watch_pid:-} ]] && kill "$watch_pid" 2>/dev/null
	if [[ ${BENCH_KEEP:-0} == 1 || $own_run == 0 ]]; then
		say "stack left up in $run (deploy/local/services.sh stop $run; deploy/local/stack.sh infra-down $run --purge)"
		return
	fi
	bash deploy/local/services.sh stop "$run" >/dev/null 2>&1 || true
	bash deploy/local/stack.sh infra-down "$run" --purge >/dev/null 2>&1 || true
	rm -rf "$run"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

export DIALER_STACK_FAST=1
bash deploy/local/stack.sh infra-up "$run" >"$run/infra-up.log" 2>&1 ||
	{ cat "$run/infra-up.log"; say "could not start Postgres and RabbitMQ"; exit 1; }
# shellcheck disable=SC1091
source "$run/infra.env"
DB_URL=$DIALER_DB_URL
# psql itself, not Debian's wrapper: the wrapper is a Perl program, and
# starting Perl for every sample costs the measured services a few percent
# of the machine
PSQL=$(pg_config --bindir 2>/dev/null)/psql
[[ -x $PSQL ]] || PSQL=psql
psqlq() { "$PSQL" -X -q -v ON_ERROR_STOP=1 -At "$DB_URL" "$@"; }

# The bench profile: a short minute so pacing is not the limit (a campaign at
# 6,000 calls per minute may start 10,000 calls per second), calls the
# simulator answers at once and ends after one scaled second, warn-level logs
# (per-request info lines cost), and rate limits out of the way.
export DIALER_LOG_LEVEL=warn
export DIALER_API_RATE_PER_MIN=10000000 DIALER_API_BULK_RATE_PER_MIN=10000000
export DIALER_SIM_CALL_SECONDS=1 DIALER_SIM_RING_SECONDS=0
FAST_ENV=(DIALER_CLOCK_MINUTE_MS=1200 DIALER_SCHEDULER_TICK_MS=10)
# Dispatch runs under a 50 ms minute: a campaign at 6,000 per minute may then
# take its whole concurrency (1,000) in one pass, so pacing never limits it.
DISPATCH_ENV=(DIALER_CLOCK_MINUTE_MS=50 DIALER_SCHEDULER_TICK_MS=10)
NORMAL_ENV=(DIALER_CLOCK_MINUTE_MS=60000)

svc_start() { # ENV=VALUE...: starts whatever of the services is not running
	env "$@" bash deploy/local/services.sh start "$run" >>"$run/services.log" 2>&1 ||
		{ tail -n 20 "$run/services.log"; say "could not start the services"; exit 1; }
	# shellcheck disable=SC1091
	source "$run/env"
	API=$DIALER_API_URL
}
svc_stop_all() { bash deploy/local/services.sh stop "$run" >>"$run/services.log" 2>&1 || true; }
pid_of() { cat "$run/pids/$1.pid" 2>/dev/null; }
svc_kill() { # NAME: SIGTERM one service (ours), wait for its drain, SIGKILL after 20 s
	local pid
	pid=$(pid_of "$1") || return 0
	kill -TERM "$pid" 2>/dev/null
	for _ in $(seq 1 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
	kill -KILL "$pid" 2>/dev/null
	rm -f "$run/pids/$1.pid"
}
svc_stop_all
svc_start "${FAST_ENV[@]}"
info "stack up in $run: API $API, simulator $DIALER_SIM_URL"

# One organization with minutes enough for everything, and a flow.
org_json=$("$CTL" org create --name bench --quota-minutes 1000000000) || { say "org create failed"; exit 1; }
ORG=$(jq -r .organizationId <<<"$org_json")
KEY=$(jq -r .apiKey <<<"$org_json")
FLOW=$("$CTL" flow create --org "$ORG" --name bench --voice-url "$DIALER_SIM_URL/voice.xml" | jq -r .id)
export BENCH_KEY=$KEY
RID=${ORG: -6}  # ids made by this run carry it, so a reused stack takes a second run

# ------------------------------------------------------------------ helpers
api() { # METHOD PATH [BODY]: prints the body, then a tab and the status
	local args=(-s -X "$1" -H "x-api-key: $KEY" -w '\t%{http_code}')
	[[ -n ${3:-} ]] && args+=(-H 'content-type: application/json' --data-raw "$3")
	curl "${args[@]}" "$API$2"
}
# api_multi METHOD BODY PATH...: one curl, one connection, a line "body<TAB>status" per path
api_multi() {
	local method=$1 body=$2 cfg
	shift 2
	cfg=$(mktemp)
	for p in "$@"; do printf 'url = "%s%s"\n' "$API" "$p"; done >"$cfg"
	local args=(-s -X "$method" -H "x-api-key: $KEY" -w '\t%{http_code}\n' -K "$cfg")
	[[ -n $body ]] && args+=(-H 'content-type: application/json' --data-raw "$body")
	curl "${args[@]}"
	rm -f "$cfg"
}
# mkaudiences TAG K M PREFIX: K audiences aud_TAG_k of M new contacts each,
# straight into Postgres (setup, not a figure). Numbers +1 PREFIX(3) then 8
# digits ending in 1-5 (the simulator answers them, by a human). Prints the ids.
mkaudiences() {
	local tag=$1$RID k=$2 m=$3 prefix=$4
	psqlq <<SQL >/dev/null || return 1
INSERT INTO contacts (id, organization_id, phone_number, name)
SELECT 'ct_${tag}_' || a || '_' || lpad(i::text, 8, '0'), '$ORG',
       '+1' || lpad(($prefix + a - 1)::text, 3, '0') || lpad((i * 10 + 1 + i % 5)::text, 8, '0'), 'Bench ' || i
  FROM generate_series(1, $k) a, generate_series(1, $m) i
 ORDER BY a, i;
INSERT INTO audiences (id, organization_id, name)
SELECT 'aud_${tag}_' || a, '$ORG', 'bench $tag ' || a FROM generate_series(1, $k) a;
INSERT INTO audience_contacts (audience_id, contact_id)
SELECT 'aud_${tag}_' || a, 'ct_${tag}_' || a || '_' || lpad(i::text, 8, '0')
  FROM generate_series(1, $k) a, generate_series(1, $m) i
 ORDER BY a, i;
SQL
	for a in $(seq 1 "$k"); do echo "aud_${tag}_$a"; done
}
# first_phone PREFIX K: the number of contact 1 of audience K (dialed first)
first_phone() { printf '+1%03d%08d' $(($1 + $2 - 1)) 12; }
# mkcampaigns N AUDIENCE SETTINGS: N campaigns over one audience; prints ids
mkcampaigns() {
	local n=$1 aud=$2 settings=$3 paths=()
	for _ in $(seq 1 "$n"); do paths+=(/v1/campaigns); done
	api_multi POST "{\"name\":\"bench\",\"flowId\":\"$FLOW\",\"audienceId\":\"$aud\",$settings}" "${paths[@]}" |
		awk -F'\t' '$2 == 201' | cut -f1 | jq -r .id
}
# campaigns_do VERB ID...: POST /v1/campaigns/ID/VERB for each; prints how many answered 2xx
campaigns_do() {
	local verb=$1 paths=()
	shift
	for id in "$@"; do paths+=("/v1/campaigns/$id/$verb"); done
	api_multi POST "" "${paths[@]}" | awk -F'\t' '$2 ~ /^2/ { n++ } END { print n + 0 }'
}
# CPU ticks (user + system) of one process, and of all of Postgres / RabbitMQ
ticks_pid() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
pg_master() { head -n1 "$run/pg/data/postmaster.pid"; }
ticks_children() { # PID: the process and its children
	local p=$1 sum
	sum=$(ticks_pid "$p")
	for c in $(cat /proc/"$p"/task/*/children 2>/dev/null); do sum=$((sum + $(ticks_pid "$c"))); done
	echo "$sum"
}
cpu_snapshot() { # prints "scheduler api worker sim postgres rabbitmq" ticks
	local out=()
	for s in dialer-scheduler dialer-api dialer-worker telephony-sim; do
		local p
		p=$(pid_of $s)
		if [[ -n $p ]]; then out+=("$(ticks_pid "$p")"); else out+=(0); fi
	done
	out+=("$(ticks_children "$(pg_master)")")
	local beam
	beam=$(cat "$run/mq/rabbitmq.pid" 2>/dev/null)
	out+=("$(ticks_children "${beam:-1}")")
	echo "${out[*]}"
}
# The sum and count of each batch-size histogram that e2e reports: the
# API's call.statuses, the worker's job.results, the scheduler's batches
# taken from the results queue and its lanes' transactions (8 numbers).
batch_sums() {
	local sel
	for sel in "$API|dialer_amqp_batch_size|type=\"call.statuses\"" \
		"$DIALER_WORKER_HEALTH_URL|dialer_amqp_batch_size|type=\"job.results\"" \
		"$DIALER_SCHEDULER_HEALTH_URL|dialer_scheduler_results_batch_size|of=\"batch\"" \
		"$DIALER_SCHEDULER_HEALTH_URL|dialer_scheduler_results_batch_size|of=\"share\""; do
		IFS='|' read -r url name label <<<"$sel"
		curl -s "$url/metrics" | awk -v s="${name}_sum{$label}" -v c="${name}_count{$label}" \
			'$1 == s { sum = $2 } $1 == c { n = $2 } END { printf "%d %d ", sum, n }'
	done
	echo
}
# The API's time answering status callbacks: "SUM_SECONDS COUNT" of its histogram.
callback_latency() {
	curl -s "$API/metrics" | awk -v s='dialer_http_request_duration_seconds_sum{route="/v1/carrier/status"}' \
		-v c='dialer_http_request_duration_seconds_count{route="/v1/carrier/status"}' \
		'$1 == s { sum = $2 } $1 == c { n = $2 } END { printf "%f %d\n", sum, n }'
}
# batch_report LABEL "BEFORE" "AFTER": members per batch over the interval
batch_report() {
	read -r -a b <<<"$2"
	read -r -a a <<<"$3"
	local names=(call.statuses job.results consumer-batch lane-share) line="$1: mean batch size:" i
	for i in 0 1 2 3; do
		line+=" ${names[$i]}=$(awk "BEGIN { n = ${a[$((2 * i + 1))]} - ${b[$((2 * i + 1))]}; printf(\"%.1f\", (n > 0 ? (${a[$((2 * i))]} - ${b[$((2 * i))]}) / n : 0)) }")"
	done
	info "$line"
}
# cpu_report LABEL "BEFORE" "AFTER" SECONDS: cores used per process over the interval
cpu_report() {
	local label=$1 secs=$4
	read -r -a b <<<"$2"
	read -r -a a <<<"$3"
	local names=(scheduler api worker sim postgres rabbitmq) line="cpu during $label (cores):"
	for i in "${!names[@]}"; do
		line+=" ${names[$i]}=$(awk "BEGIN { printf \"%.2f\", (${a[$i]} - ${b[$i]}) / $CLK_TCK / $secs }")"
	done
	info "$line"
}
# wrk's latency in ms: the value of field $2 on the line starting with $1
wrk_ms() {
	awk -v k="$1" '$1 == k { v = $2; u = v; sub(/[0-9.]+/, "", u); sub(/[a-z]+$/, "", v);
		if (u == "us") v /= 1000; else if (u == "s") v *= 1000; else if (u == "m") v *= 60000;
		printf "%.2f", v; exit }'
}
# One wrk thread: with two on this 2-core machine, runs against the
# fastest routes now and then reported a p99 of 0.3 to 1 s (and a mean
# above what 16 connections at that rate allow) while the API's own
# histogram had every request under 1 ms; with one thread, 11 runs of 11
# agreed with it. /healthz, the baseline, is measured the same way.
#
# Even so, a run now and then reports a p99 its own rate rules out: with C
# connections at R requests/s the mean latency is at most C/R (Little's
# law), and the slowest 1% alone add p99/100 to the mean. Such a run is
# reported (INFO) and measured once more.
# wrk_run NAME SECONDS SCRIPT URL: sets WRK_RPS, WRK_P99_MS, WRK_NON2XX, WRK_ERR
wrk_run() {
	local out c0 c1 conns=${BENCH_WRK_CONNS:-16} try
	for try in 1 2; do
		c0=$(cpu_snapshot)
		out=$(wrk -t"${BENCH_WRK_THREADS:-1}" -c"$conns" -d"$2"s --latency -s "$3" "$4" 2>&1)
		c1=$(cpu_snapshot)
		echo "$out" >"$run/wrk-$1.txt"
		cpu_report "wrk $1" "$c0" "$c1" "$2"
		WRK_RPS=$(awk '/^Requests\/sec:/ { printf "%d", $2 }' <<<"$out")
		WRK_P99_MS=$(wrk_ms 99% <<<"$out")
		WRK_NON2XX=$(awk '/Non-2xx/ { print $NF }' <<<"$out")
		WRK_NON2XX=${WRK_NON2XX:-0}
		WRK_ERR=$(awk '/Socket errors/ { print }' <<<"$out")
		: "${WRK_RPS:=0}" "${WRK_P99_MS:=0}"
		((WRK_RPS > 0)) && awk "BEGIN { exit !($WRK_P99_MS / 100 > $conns * 1000 / $WRK_RPS) }" || break
		info "wrk $1 (run $try): p99 $WRK_P99_MS ms is impossible at $WRK_RPS req/s over $conns connections (mean at most $(calc "$conns * 1000 / $WRK_RPS") ms, mean reported $(wrk_ms Latency <<<"$out") ms)"
	done
}
iso_ms() { date -d "$1" +%s%3N; }
wait_leader() { # until the (re)started scheduler holds the lease
	for _ in $(seq 1 300); do
		curl -s "$DIALER_SCHEDULER_HEALTH_URL/metrics" | grep -q '^dialer_scheduler_leader 1' && return 0
		sleep 0.05
	done
	info "the scheduler did not take the lease within 15 s"
}
mgmt() { curl -s -u dialer:dialer "http://127.0.0.1:$STACK_MQ_MGMT_PORT$1" "${@:2}"; }
# mq_published: messages published so far to the dial-jobs and results queues
# (the management statistics, refreshed every few seconds)
mq_published() {
	mgmt "/api/queues/%2F?columns=name,message_stats.publish" |
		jq '[.[] | select(.name == "dialer.dial-jobs" or .name == "dialer.results") | .message_stats.publish // 0] | add // 0'
}

FLOOR_PUB=0
# ------------------------------------------------------------------ 1. broker floor
phase_floor() {
	local out
	out=$("$MQ" floor "$DIALER_AMQP_URL" 50000 600 100) || { info "mq_floor failed"; return; }
	info "mq_floor: $out"
	FLOOR_PUB=$(sed -E 's/.*publish_per_s=([0-9]+).*/\1/' <<<"$out")
	FLOOR_CON=$(sed -E 's/.*consume_per_s=([0-9]+).*/\1/' <<<"$out")
	fig broker_publish_per_s "$FLOOR_PUB" msg/s "" "" "" "" BASELINE "quorum queue, persistent, confirms, 100 unconfirmed, 600 B"
	fig broker_consume_per_s "$FLOOR_CON" msg/s "" "" "" "" BASELINE "quorum queue, prefetch 100, one ack per message"
}

# ------------------------------------------------------------------ 2. dispatch
DISP_AUD=
# floor_publish: the broker's publish floor (msg/s), measured briefly now;
# nothing when the measurement failed
floor_publish() {
	local fl
	fl=$("$MQ" floor "$DIALER_AMQP_URL" 20000 600 100) && sed -E 's/.*publish_per_s=([0-9]+).*/\1/' <<<"$fl"
}
# dispatch_run LABEL CAMPAIGNS: jobs claimed, recorded and published per second
# with no consumer; sets DISP_RATE and DISP_IDS
dispatch_run() {
	local label=$1 n=$2 per=1000 total
	total=$((n * per))
	[[ -n $DISP_AUD ]] || DISP_AUD=$(mkaudiences disp 1 $per 201)
	svc_kill dialer-scheduler
	svc_kill dialer-worker
	svc_start "${DISPATCH_ENV[@]}"
	svc_kill dialer-worker
	wait_leader
	"$MQ" purge "$DIALER_AMQP_URL" dialer.dial-jobs >/dev/null
	mapfile -t DISP_IDS < <(mkcampaigns "$n" "$DISP_AUD" \
		'"callsPerMinute":6000,"maxConcurrentCalls":1000,"maxRetries":0,"callTimeoutMinutes":60')
	if ((${#DISP_IDS[@]} != n)); then info "dispatch: created ${#DISP_IDS[@]} of $n campaigns"; fi
	local rows_before watch_out=$run/watch-$label.txt cpu0 cpu1 t0 t_started floor0 floor1
	# the broker floor again, right before and right after (the mean of the
	# two), under the same load from others
	floor0=$(floor_publish)
	rows_before=$(psqlq -c "SELECT count(*) FROM calls")
	"$MQ" watch "$DIALER_AMQP_URL" dialer.dial-jobs "$total" 120000 >"$watch_out" &
	watch_pid=$!
	cpu0=$(cpu_snapshot)
	t0=$(now_ms)
	campaigns_do start "${DISP_IDS[@]}" >/dev/null
	t_started=$(now_ms)
	# meanwhile: how many dial jobs wait in the outbox for a relay, over
	# one connection (a client started per sample would cost the services)
	local ob_max
	ob_max=$(while kill -0 "$watch_pid" 2>/dev/null; do
		echo "SELECT count(*) FROM outbox;"
		sleep 0.2
	done | psqlq | sort -n | tail -1)
	wait "$watch_pid"
	local rc=$?
	watch_pid=
	cpu1=$(cpu_snapshot)
	local t_end
	t_end=$(now_ms)
	"$MQ" purge "$DIALER_AMQP_URL" dialer.dial-jobs >/dev/null
	floor1=$(floor_publish)
	if [[ -n $floor0 && -n $floor1 ]]; then DISP_FLOOR=$(calc "int(($floor0 + $floor1) / 2)"); else DISP_FLOOR=${floor0:-${floor1:-0}}; fi
	info "dispatch $label: broker floor $floor0 msg/s before, $floor1 after"
	read -r t_first t10 t90 t_last last <<<"$(awk -v T="$total" '
		$2 > 0 && !f { f = $1 } $2 >= T * 0.1 && !a { a = $1 } $2 >= T * 0.9 && !b { b = $1 }
		{ l = $1; c = $2 } END { printf "%.0f %.0f %.0f %.0f %.0f\n", f, a, b, l, c }' "$watch_out")"
	if ((rc != 0 || t90 <= t10)); then
		info "dispatch $label: only $last of $total jobs in the queue after 120 s"
		DISP_RATE=$(calc "$last / (($t_last - $t0) / 1000)")
	else
		DISP_RATE=$(calc "int($total * 0.8 / (($t90 - $t10) / 1000))")
	fi
	info "dispatch $label: $n campaigns x $per contacts, calls rows before $rows_before; starts answered in $((t_started - t0)) ms," \
		"first job after $((t_first - t0)) ms, all $total after $((t_last - t0)) ms" \
		"(overall $(calc "int($total / (($t_last - $t0) / 1000))") jobs/s incl. snapshots); steady rate over 10%-90%: $DISP_RATE jobs/s"
	cpu_report "dispatch $label" "$cpu0" "$cpu1" "$(calc "($t_end - $t0) / 1000")"
	info "dispatch $label: most dial jobs waiting in the outbox for a relay, sampled every 0.2 s: $ob_max"
	# the real size of a dial job
	local sz
	sz=$(mgmt "/api/queues/%2F/dialer.dial-jobs/get" -H 'content-type: application/json' \
		-d '{"count":1,"ackmode":"ack_requeue_true","encoding":"auto"}' | jq -r '.[0].payload_bytes // empty')
	[[ -n $sz ]] && info "a dial job is $sz bytes"
	# clean up: cancel, drop the jobs, worker back
	campaigns_do cancel "${DISP_IDS[@]}" >/dev/null
	"$MQ" purge "$DIALER_AMQP_URL" dialer.dial-jobs >/dev/null
	svc_kill dialer-scheduler
	svc_start "${FAST_ENV[@]}"
	wait_leader
}
DISP_SMALL=0 DISP_FLOOR=0
phase_dispatch() {
	dispatch_run small 50
	DISP_SMALL=$DISP_RATE DISP_SMALL_FLOOR=$DISP_FLOOR
	local ratio
	ratio=$(awk "BEGIN { printf \"%.2f\", $DISP_RATE / ($DISP_FLOOR > 0 ? $DISP_FLOOR : 1) }")
	fig dispatch_jobs_per_s "$DISP_RATE" jobs/s baseline_broker_publish_per_s "$DISP_FLOOR" "$ratio" ">=0.40" \
		"$(verdict ge "$ratio" 0.40)" "50 campaigns x 1000, no consumer"
}

# ------------------------------------------------------------------ 3. API
API_PROGRESS=0 API_CALLS=0 API_HEALTHZ=1 PROGRESS_CAMPAIGN=
# growth_api_round TAG: the API reads the growth figure compares, the same
# sequence at either table size: /healthz, the progress past the read cache
# (the database's path), the first page of the campaign's calls, /healthz
# again. Sets G_HZ (the mean of the two /healthz rates, so that load from
# others on the machine cancels out), G_PROG, G_PROG_P99, G_CALLS, G_CALLS_P99.
growth_api_round() {
	local hz0
	wrk_run "healthz-$1" 6 "$here/get.lua" "$API/healthz"
	hz0=$WRK_RPS
	BENCH_HEADER="Cache-Control: no-cache" wrk_run "progress-$1" 6 "$here/get.lua" \
		"$API/v1/campaigns/$PROGRESS_CAMPAIGN/progress"
	G_PROG=$WRK_RPS G_PROG_P99=$WRK_P99_MS
	wrk_run "calls-$1" 5 "$here/get.lua" "$API/v1/campaigns/$PROGRESS_CAMPAIGN/calls?limit=100"
	G_CALLS=$WRK_RPS G_CALLS_P99=$WRK_P99_MS
	wrk_run "healthz-$1-after" 6 "$here/get.lua" "$API/healthz"
	G_HZ=$(calc "int(($hz0 + $WRK_RPS) / 2)")
	((G_HZ > 0)) || G_HZ=1
	info "/healthz around the $1 round's reads: $hz0 req/s before, $WRK_RPS after"
}
API_G_HZ=1
phase_api() {
	command -v wrk >/dev/null || return
	# Statistics as autovacuum keeps them on a live database: the tables
	# made a moment ago have none yet, and without them the server plans
	# each prepared read anew instead of settling on one plan.
	psqlq -c "ANALYZE" >/dev/null
	PROGRESS_CAMPAIGN=${DISP_IDS[0]:-}
	if [[ -z $PROGRESS_CAMPAIGN ]]; then
		DISP_AUD=${DISP_AUD:-$(mkaudiences disp 1 1000 201)}
		PROGRESS_CAMPAIGN=$(mkcampaigns 1 "$DISP_AUD" '"callsPerMinute":60')
	fi
	local d=6 hz
	wrk_run healthz $d "$here/get.lua" "$API/healthz"
	hz=$WRK_RPS API_HEALTHZ=$WRK_RPS
	fig api_healthz_rps "$hz" req/s "" "" "" "" BASELINE "p99 ${WRK_P99_MS} ms"
	local name path
	for name in progress list; do
		case $name in
		progress) path=/v1/campaigns/$PROGRESS_CAMPAIGN/progress ;;
		list) path=/v1/campaigns ;;
		esac
		wrk_run "$name" $d "$here/get.lua" "$API$path"
		local ratio p99=$WRK_P99_MS rps=$WRK_RPS
		ratio=$(awk "BEGIN { printf \"%.2f\", $rps / ($hz > 0 ? $hz : 1) }")
		fig "api_${name}_rps" "$rps" req/s baseline_healthz_rps "$hz" "$ratio" ">=0.30,>=5000/s,p99<25ms" \
			"$(verdict eval "ge $ratio 0.30 && ge $rps 5000 && le $p99 25 && [[ $WRK_NON2XX == 0 ]]")" \
			"GET $path, p99 $p99 ms, non-2xx $WRK_NON2XX"
		fig "api_${name}_p99_ms" "$p99" ms "" "" "" "<25" "$(verdict le "$p99" 25)"
		# The same read past the read cache (Cache-Control: no-cache): what
		# each request costs the database.
		BENCH_HEADER="Cache-Control: no-cache" wrk_run "$name-uncached" $d "$here/get.lua" "$API$path"
		ratio=$(awk "BEGIN { printf \"%.2f\", $WRK_RPS / ($hz > 0 ? $hz : 1) }")
		fig "api_${name}_uncached_rps" "$WRK_RPS" req/s baseline_healthz_rps "$hz" "$ratio" "" INFO \
			"GET $path with Cache-Control: no-cache, p99 $WRK_P99_MS ms, non-2xx $WRK_NON2XX"
	done
	# the growth figure's reads with the table still small
	growth_api_round small
	API_PROGRESS=$G_PROG API_CALLS=$G_CALLS API_G_HZ=$G_HZ
	info "GET /v1/campaigns/:id/calls?limit=100 (1,000 calls): $G_CALLS req/s, p99 $G_CALLS_P99 ms"
	BENCH_PREFIX=$((700 + RANDOM % 200)) wrk_run contacts $d "$here/post_contacts.lua" "$API/v1/contacts"
	local rps=$WRK_RPS ratio
	ratio=$(awk "BEGIN { printf \"%.2f\", $rps / ($hz > 0 ? $hz : 1) }")
	fig api_contacts_post_per_s "$rps" req/s baseline_healthz_rps "$hz" "$ratio" ">=2000/s" \
		"$(verdict eval "ge $rps 2000 && [[ $WRK_NON2XX == 0 ]]")" "POST /v1/contacts, unique numbers, p99 $WRK_P99_MS ms, non-2xx $WRK_NON2XX"
}

# ------------------------------------------------------------------ 4. import
# import_body N PREFIX FILE
import_body() {
	awk -v n="$1" -v p="$2" 'BEGIN { printf "{\"contacts\":["; for (i = 1; i <= n; i++)
		printf "%s{\"phoneNumber\":\"+1%03d%08d\",\"name\":\"Imported %d\",\"city\":\"Pune\"}", (i > 1 ? "," : ""), p, i * 10 + 1 + i % 5, i;
		printf "]}" }' >"$3"
}
# import_wait ID [DEADLINE_MS]: polls until the import ends (or the deadline);
# prints its final status
import_wait() {
	local st deadline=${2:-$(($(now_ms) + 300000))}
	while (($(now_ms) < deadline)); do
		st=$(curl -s -H "x-api-key: $KEY" "$API/v1/imports/$1/status" | jq -r .status)
		case $st in COMPLETED | COMPLETED_WITH_ERRORS | FAILED) echo "$st"; return ;; esac
		sleep 0.01
	done
	echo TIMEOUT
}
IMPORT_MS=0 COPY_MS=0
phase_import() {
	local f=$run/import10k.json resp id code t0 t1 st
	import_body 10000 610 "$f"
	t0=$(now_ms)
	resp=$(curl -s -w '\t%{http_code}' -H "x-api-key: $KEY" -H 'content-type: application/json' \
		--data-binary @"$f" "$API/v1/imports/api/bulk")
	code=${resp##*$'\t'}
	id=$(jq -r .id <<<"${resp%$'\t'*}")
	[[ $code == 202 ]] || { info "import: POST answered $code"; return; }
	st=$(import_wait "$id")
	t1=$(now_ms)
	IMPORT_MS=$((t1 - t0))
	local created
	created=$(curl -s -H "x-api-key: $KEY" "$API/v1/imports/$id/status" | jq -r '"\(.created) created, \(.updated) updated, \(.failed) failed"')
	# the baseline: COPY of the same rows into a scratch copy of contacts
	local csv=$run/import10k.csv copy_ms
	awk -v org="$ORG" 'BEGIN { for (i = 1; i <= 10000; i++)
		printf "ct_copy_%d\t%s\t+1%03d%08d\tImported %d\t{\"city\": \"Pune\"}\n", i, org, 611, i * 10 + 1 + i % 5, i }' >"$csv"
	psqlq -c "SET client_min_messages = warning" -c "DROP TABLE IF EXISTS bench_scratch_contacts" \
		-c "CREATE TABLE bench_scratch_contacts (LIKE contacts INCLUDING ALL)" >/dev/null
	copy_ms=$( { echo '\timing on'; echo "COPY bench_scratch_contacts (id, organization_id, phone_number, name, metadata) FROM STDIN;"
		cat "$csv"; echo '\.'; } | "$PSQL" -X -q -v ON_ERROR_STOP=1 "$DB_URL" 2>&1 | awk '/^Time:/ { printf "%d", $2 } /ERROR/ { print > "/dev/stderr" }')
	local copied
	copied=$(psqlq -c "SELECT count(*) FROM bench_scratch_contacts")
	((copied == 10000)) || info "the COPY baseline loaded $copied rows, not 10000"
	psqlq -c "DROP TABLE bench_scratch_contacts" >/dev/null
	COPY_MS=${copy_ms:-0}
	local ratio
	ratio=$(awk "BEGIN { printf \"%.2f\", ${copy_ms:-0} / ($IMPORT_MS > 0 ? $IMPORT_MS : 1) }")
	fig import_10k_ms "$IMPORT_MS" ms baseline_copy_ms "$copy_ms" "$ratio" "<=1000ms" \
		"$(verdict eval "le $IMPORT_MS 1000 && [[ $st == COMPLETED ]]")" "POST to $st as polled every 10 ms: $created"
}
phase_import_1m() {
	if [[ ${BENCH_IMPORT_1M:-1} != 1 ]]; then
		info "import of 1,000,000 contacts skipped (BENCH_IMPORT_1M=0)"
		ROWS+=("import_1m_s|not run||||SKIPPED")
		return
	fi
	local ids=() t0 t1 f=$run/imp.json st done_n=0 deadline
	t0=$(now_ms)
	deadline=$((t0 + 120000))
	for b in $(seq 0 99); do
		import_body 10000 $((620 + b)) "$f"
		ids+=("$(curl -s -H "x-api-key: $KEY" -H 'content-type: application/json' --data-binary @"$f" \
			"$API/v1/imports/api/bulk" | jq -r .id)")
	done
	for id in "${ids[@]}"; do
		st=$(import_wait "$id" "$deadline")
		[[ $st == TIMEOUT ]] && break
		done_n=$((done_n + 1))
	done
	t1=$(now_ms)
	local secs
	secs=$(calc "($t1 - $t0) / 1000")
	local base ratio=""
	base=$(calc "$COPY_MS * 100 / 1000")
	((COPY_MS > 0)) && ratio=$(awk "BEGIN { printf \"%.2f\", $base / $secs }")
	fig import_1m_s "$secs" s baseline_copy_10k_x100_s "$base" "$ratio" "<=60s" \
		"$(verdict eval "((done_n == 100)) && le $secs 60")" \
		"$done_n of 100 imports of 10,000 done, the last $st; baseline: 100 times the COPY of 10,000 rows"
}

# ------------------------------------------------------------------ 6. end to end
phase_e2e() {
	# Four campaigns at 6,000 per (1.2 s) minute and 1,000 live calls each:
	# pacing (20,000 starts a second) and the caps (4,000 live calls) are
	# far above the target, and the backlog they allow stays well within a
	# call's timeout (callTimeoutMinutes 60 = 72 s here).
	local total=${BENCH_E2E_CONTACTS:-100000} n=${BENCH_E2E_CAMPAIGNS:-4} per cap_s=${BENCH_E2E_CAP_S:-200}
	per=$((total / n))
	local auds ids=() aud
	mapfile -t auds < <(mkaudiences e2e "$n" $per 300)
	for aud in "${auds[@]}"; do
		ids+=("$(mkcampaigns 1 "$aud" '"callsPerMinute":6000,"maxConcurrentCalls":1000,"maxRetries":0,"callTimeoutMinutes":60')")
	done
	local idlist
	idlist=$(printf "'%s'," "${ids[@]}")
	idlist=${idlist%,}
	local sim0 cpu0 cpu1 t0 t1 done_n=0 st pub0 pub1 bat0
	sim0=$(curl -s "$DIALER_SIM_URL/_sim/stats")
	pub0=$(mq_published)
	bat0=$(batch_sums)
	cpu0=$(cpu_snapshot)
	t0=$(now_ms)
	campaigns_do start "${ids[@]}" >/dev/null
	local deadline=$((t0 + cap_s * 1000)) last_print=$t0 last_sample=0 max_jobs=0 max_results=0 samples=() cbl0
	cbl0=$(callback_latency)
	while :; do
		# once a second: each psql is a connection, and the machine is the
		# one under test (the end is read from completed_at, not from here)
		st=$(psqlq -c "SELECT count(*) FILTER (WHERE status = 'COMPLETED'), sum(completed), sum(failed), sum(queued + in_progress) FROM campaigns WHERE id IN ($idlist)")
		done_n=${st%%|*}
		if (($(now_ms) > last_sample + 2000)); then
			# where the work waits: the jobs queue (workers), the results
			# queue (the scheduler's consumer), the carrier's callbacks not
			# yet delivered (the simulator), out of the calls live
			local qj qr cb
			qj=$("$MQ" count "$DIALER_AMQP_URL" dialer.dial-jobs)
			qr=$("$MQ" count "$DIALER_AMQP_URL" dialer.results)
			cb=$(curl -s "$DIALER_SIM_URL/_sim/stats" | jq '.callbacks.pending // 0')
			((qj > max_jobs)) && max_jobs=$qj
			((qr > max_results)) && max_results=$qr
			samples+=("${st##*|} $qj $qr $cb")
			last_sample=$(now_ms)
			if ((last_sample > last_print + 10000)); then
				info "e2e: after $(((last_sample - t0) / 1000)) s: campaigns done|calls completed|failed|live $st; queued jobs $qj, queued results $qr"
				last_print=$last_sample
			fi
		fi
		((done_n >= n)) && break
		(($(now_ms) > deadline)) && break
		sleep 1
	done
	t1=$(now_ms)
	if ((done_n >= n)); then
		# when the last campaign completed, by the database's clock (the same host clock)
		t1=$(psqlq -c "SELECT (extract(epoch FROM max(completed_at)) * 1000)::bigint FROM campaigns WHERE id IN ($idlist)")
	fi
	cpu1=$(cpu_snapshot)
	local secs answered attempts sim1 rate
	secs=$(calc "($t1 - $t0) / 1000")
	answered=$(psqlq -c "SELECT count(*) FROM calls WHERE campaign_id IN ($idlist) AND outcome = 'answered'")
	attempts=$(psqlq -c "SELECT count(*) || ' attempts, ' || count(*) FILTER (WHERE status = 'ENDED' AND outcome = 'answered') || ' ended answered' FROM call_attempts WHERE campaign_id IN ($idlist)")
	sim1=$(curl -s "$DIALER_SIM_URL/_sim/stats")
	rate=$(calc "int($answered / $secs)")
	info "e2e: $n campaigns x $per contacts: $done_n completed in $secs s; $answered answered; $attempts;" \
		"simulator calls +$(($(jq .calls <<<"$sim1") - $(jq .calls <<<"$sim0"))), callbacks delivered" \
		"+$(($(jq .callbacks.delivered <<<"$sim1") - $(jq .callbacks.delivered <<<"$sim0"))), dropped $(jq .callbacks.dropped <<<"$sim1")"
	cpu_report e2e "$cpu0" "$cpu1" "$secs"
	batch_report e2e "$bat0" "$(batch_sums)"
	info "e2e: most messages waiting, sampled every 2 s: dial jobs $max_jobs, results and call events $max_results"
	((${#samples[@]} > 0)) && info "e2e: on average, sampled every 2 s: $(printf '%s\n' "${samples[@]}" |
		awk '{ l += $1; j += $2; r += $3; c += $4 } END { printf "%d calls live, %d dial jobs queued, %d result and call-status messages queued, %d status callbacks the simulator has not delivered yet", l / NR, j / NR, r / NR, c / NR }')"
	read -r -a cbl1 <<<"$(callback_latency)"
	read -r -a cbl0 <<<"$cbl0"
	local ncb=$((cbl1[1] - cbl0[1]))
	info "e2e: the API answered $ncb status callbacks in $(awk "BEGIN { printf \"%.2f\", (${cbl1[0]} - ${cbl0[0]}) * 1000 / ($ncb > 0 ? $ncb : 1) }") ms on average"
	# the simulator's side of the same callbacks: queued there before the
	# first try, then the try in curl, of which the API's answer
	jq -r --argjson a "$sim0" '.callbacks.timing as $b | $a.callbacks.timing as $a |
		($b.delivered - $a.delivered) as $n | if $n > 0 then
		"e2e: the simulator delivered \($n) status callbacks: queued there \((($b.queuedUs - $a.queuedUs) / $n / 1000 * 100 | round) / 100) ms, then in curl \((($b.sendUs - $a.sendUs) / $n / 1000 * 100 | round) / 100) ms, of which request sent to answer \((($b.answerUs - $a.answerUs) / $n / 1000 * 100 | round) / 100) ms, on average"
		else empty end' <<<"$sim1" | while read -r l; do info "$l"; done
	local ok=1 note
	((done_n >= n && answered == total)) || ok=0
	if ((done_n < n)); then
		# over the cap: the rest is cancelled, and the results still queued
		# are applied before the next phase measures anything
		note="capped at $cap_s s: $answered of $total answered"
		campaigns_do cancel "${ids[@]}" >/dev/null
		local q
		for _ in $(seq 1 600); do
			q=$("$MQ" count "$DIALER_AMQP_URL" dialer.results)
			((q == 0)) && break
			sleep 0.2
		done
	else
		note="$total contacts, start to COMPLETED in $secs s"
	fi
	# the baseline: the broker floor over the messages one answered call takes
	# (its dial job, the worker's result and the carrier's callbacks)
	sleep 5
	pub1=$(mq_published)
	local per_call=0 base=0 ratio="" answered_all
	# every call answered by now, those still live at the cap included
	answered_all=$(psqlq -c "SELECT count(*) FROM calls WHERE campaign_id IN ($idlist) AND outcome = 'answered'")
	if ((answered_all > 0 && pub1 > pub0)); then
		per_call=$(calc "($pub1 - $pub0) / $answered_all")
		base=$(calc "int($FLOOR_PUB / $per_call)")
		((base > 0)) && ratio=$(awk "BEGIN { printf \"%.2f\", $rate / $base }")
	fi
	fig e2e_answered_per_s "$rate" calls/s baseline_broker_calls_per_s "$base" "$ratio" ">=1000/s" \
		"$(verdict eval "((ok)) && ge $rate 1000")" \
		"$note, every call answered and applied: $([[ $ok == 1 ]] && echo yes || echo NO); $per_call broker messages per call; baseline = broker publish floor / that"
}

# ------------------------------------------------------------------ 5. start over a large audience
BIG_ID=
phase_start1m() {
	local n=${BENCH_BIG_CONTACTS:-1000000} t0 t1 aud
	t0=$(now_ms)
	aud=$(mkaudiences big 1 "$n" 500)
	info "setup: $n contacts and their audience inserted with generate_series in $(($(now_ms) - t0)) ms"
	psqlq -c "ANALYZE contacts" -c "ANALYZE audience_contacts" >/dev/null
	# the baseline: the same rows, raw INSERT ... SELECT into a scratch copy of calls
	local raw_ms
	psqlq -c "SET client_min_messages = warning" -c "DROP TABLE IF EXISTS bench_scratch_calls" -c "CREATE TABLE bench_scratch_calls (LIKE calls INCLUDING ALL)" >/dev/null
	raw_ms=$("$PSQL" -X -q "$DB_URL" 2>&1 <<SQL | awk '/^Time:/ { printf "%d", $2 }'
\timing on
INSERT INTO bench_scratch_calls (campaign_id, contact_id, contact_name, phone_number, status)
SELECT 'scratch', c.id, c.name, c.phone_number, 'PENDING'
  FROM audience_contacts ac JOIN contacts c ON c.id = ac.contact_id
 WHERE ac.audience_id = '$aud' ORDER BY ac.added_at, ac.contact_id;
SQL
	)
	psqlq -c "DROP TABLE bench_scratch_calls" >/dev/null
	BIG_ID=$(mkcampaigns 1 "$aud" '"callsPerMinute":60,"maxConcurrentCalls":5,"maxRetries":0,"callTimeoutMinutes":60')
	local phone snap_out=$run/snapshot.txt answer_s code first_ms=0 snap_ms
	phone=$(first_phone 500 1)
	# waits in Postgres for the snapshot to commit, then prints the time
	psqlq >"$snap_out" 2>&1 <<SQL &
DO \$\$ BEGIN
  WHILE NOT (SELECT snapshot_done FROM campaigns WHERE id = '$BIG_ID') LOOP PERFORM pg_sleep(0.005); END LOOP;
  RAISE NOTICE 'done %', (extract(epoch FROM clock_timestamp()) * 1000)::bigint;
END \$\$;
SQL
	local snap_pid=$!
	sleep 0.3
	local get_s get_ms
	get_s=$(curl -s -o /dev/null -w '%{time_total}' -H "x-api-key: $KEY" "$API/v1/campaigns/$BIG_ID")
	get_ms=$(calc "$get_s * 1000")
	local c0 c1
	c0=$(cpu_snapshot)
	t0=$(now_ms)
	read -r code answer_s < <(curl -s -o /dev/null -w '%{http_code} %{time_total}\n' -X POST -H "x-api-key: $KEY" \
		"$API/v1/campaigns/$BIG_ID/start")
	local answer_ms
	answer_ms=$(calc "$answer_s * 1000")
	for _ in $(seq 1 6000); do
		local c
		c=$(curl -s "$DIALER_SIM_URL/_sim/calls?to=$(printf %s "$phone" | sed 's/+/%2B/')" | jq -r '.calls[0].createdAt // empty')
		if [[ -n $c ]]; then first_ms=$(($(iso_ms "$c") - t0)); break; fi
		sleep 0.01
	done
	wait "$snap_pid"
	snap_ms=$(($(sed -nE 's/.*done ([0-9]+).*/\1/p' "$snap_out") - t0))
	c1=$(cpu_snapshot)
	cpu_report "the snapshot of $n contacts" "$c0" "$c1" "$(calc "($(now_ms) - $t0) / 1000")"
	local total
	total=$(psqlq -c "SELECT total FROM campaigns WHERE id = '$BIG_ID'")
	[[ $(campaigns_do pause "$BIG_ID") == 1 ]] || info "could not pause the large campaign"
	fig start_answer_ms "$answer_ms" ms baseline_get_campaign_ms "$get_ms" "" "<1000ms" \
		"$(verdict eval "le $answer_ms 1000 && [[ $code == 200 ]]")" "POST start over $n contacts answered $code; baseline: GET of the same campaign"
	fig start_first_dial_ms "$first_ms" ms baseline_insert_select_ms "$raw_ms" \
		"$(awk "BEGIN { printf \"%.2f\", ${raw_ms:-0} / ($first_ms > 0 ? $first_ms : 1) }")" "<5000ms" \
		"$(verdict eval "((first_ms > 0)) && le $first_ms 5000")" "the carrier's create of the first contact"
	local ratio
	ratio=$(awk "BEGIN { printf \"%.2f\", ${raw_ms:-0} / ($snap_ms > 0 ? $snap_ms : 1) }")
	fig start_snapshot_ms "$snap_ms" ms baseline_insert_select_ms "$raw_ms" "$ratio" "<10000ms" \
		"$(verdict eval "le $snap_ms 10000 && [[ $total == $n ]]")" "campaigns.total = $total"
}

# ------------------------------------------------------------------ 9b. growth
phase_growth() {
	local rows
	rows=$(psqlq -c "SELECT count(*) FROM calls")
	if ((DISP_SMALL > 0)); then
		dispatch_run large 50
		local ratio raw
		raw=$(awk "BEGIN { printf \"%.2f\", $DISP_RATE / $DISP_SMALL }")
		# each rate over the broker floor measured right before it, so that load from others cancels out
		ratio=$(awk "BEGIN { printf \"%.2f\", ($DISP_RATE / $DISP_FLOOR) / ($DISP_SMALL / $DISP_SMALL_FLOOR) }")
		fig growth_dispatch_jobs_per_s "$DISP_RATE" jobs/s baseline_small_table "$DISP_SMALL" "$ratio" ">=0.80" \
			"$(verdict ge "$ratio" 0.80)" "$rows call rows vs under 100,000; ratio of the two rates over their floors, $DISP_FLOOR and $DISP_SMALL_FLOOR msg/s; raw ratio $raw"
	fi
	if ((API_PROGRESS > 0)); then
		# each rate over the /healthz rate around it, in either round
		local ratio raw
		growth_api_round large
		raw=$(awk "BEGIN { printf \"%.2f\", $G_PROG / $API_PROGRESS }")
		ratio=$(awk "BEGIN { printf \"%.2f\", ($G_PROG / $G_HZ) / ($API_PROGRESS / $API_G_HZ) }")
		fig growth_api_progress_rps "$G_PROG" req/s baseline_small_table "$API_PROGRESS" "$ratio" ">=0.80" \
			"$(verdict ge "$ratio" 0.80)" "$rows call rows; p99 $G_PROG_P99 ms; ratio of the two rates over their /healthz rates, $G_HZ and $API_G_HZ req/s; raw ratio $raw"
		raw=$(awk "BEGIN { printf \"%.2f\", $G_CALLS / ($API_CALLS > 0 ? $API_CALLS : 1) }")
		ratio=$(awk "BEGIN { printf \"%.2f\", ($G_CALLS / $G_HZ) / (($API_CALLS > 0 ? $API_CALLS : 1) / $API_G_HZ) }")
		fig growth_api_calls_rps "$G_CALLS" req/s baseline_small_table "$API_CALLS" "$ratio" ">=0.80" \
			"$(verdict ge "$ratio" 0.80)" "GET .../calls?limit=100 of a 1,000-call campaign, p99 $G_CALLS_P99 ms; over /healthz as above; raw ratio $raw"
		if [[ -n $BIG_ID ]]; then
			wrk_run calls-big 5 "$here/get.lua" "$API/v1/campaigns/$BIG_ID/calls?limit=100"
			info "GET /v1/campaigns/:id/calls?limit=100 of the 1,000,000-call campaign: $WRK_RPS req/s, p99 $WRK_P99_MS ms, non-2xx $WRK_NON2XX"
		fi
	fi
}

# ------------------------------------------------------------------ 8. worker footprint
phase_footprint() {
	svc_kill dialer-worker
	svc_kill telephony-sim
	svc_start "${FAST_ENV[@]}" DIALER_SIM_LATENCY_MS=2000 DIALER_HTTP_THREADS=64 \
		DIALER_HTTP_MAX_CONNECTIONS=4000 DIALER_HTTP_PER_IP_CONNECTIONS=4000 \
		DIALER_WORKER_MAX_IN_FLIGHT=1000 DIALER_WORKER_REQUEST_TIMEOUT_MS=60000
	local wpid rss0 t0 t1 k0 k1 idle
	wpid=$(pid_of dialer-worker)
	sleep 2
	rss0=$(awk '/^VmRSS/ { print $2 }' "/proc/$wpid/status")
	cp "/proc/$wpid/status" "$run/worker-idle-status"
	k0=$(ticks_pid "$wpid")
	t0=$(now_ms)
	sleep 10
	k1=$(ticks_pid "$wpid")
	t1=$(now_ms)
	idle=$(awk "BEGIN { printf \"%.2f\", ($k1 - $k0) / $CLK_TCK / (($t1 - $t0) / 1000) * 100 }")
	local aud id inflight=0 rss hwm
	aud=$(mkaudiences foot 1 1500 410)
	id=$(mkcampaigns 1 "$aud" '"callsPerMinute":6000,"maxConcurrentCalls":1000,"maxRetries":0,"callTimeoutMinutes":60')
	campaigns_do start "$id" >/dev/null
	for _ in $(seq 1 300); do
		inflight=$(curl -s "$DIALER_WORKER_HEALTH_URL/metrics" | awk '$1 == "dialer_worker_in_flight" { printf "%d", $2 }')
		((${inflight:-0} >= 1000)) && break
		sleep 0.05
	done
	sleep 1
	inflight=$(curl -s "$DIALER_WORKER_HEALTH_URL/metrics" | awk '$1 == "dialer_worker_in_flight" { printf "%d", $2 }')
	rss=$(awk '/^VmRSS/ { print $2 }' "/proc/$wpid/status")
	hwm=$(awk '/^VmHWM/ { print $2 }' "/proc/$wpid/status")
	# Where the worker's memory is at load: its largest mappings by Rss.
	cp "/proc/$wpid/smaps" "$run/worker-load-smaps" 2>/dev/null
	info "worker mappings at load (Rss KB, Anonymous KB, size KB, name): $(awk '
		/^[0-9a-f]+-[0-9a-f]+ / { name = $6 ? $6 : "[anon]" } /^Size:/ { size = $2 }
		/^Rss:/ { rss = $2 } /^Anonymous:/ { printf "%d %d %d %s\n", rss, $2, size, name }' "$run/worker-load-smaps" |
		sort -rn | head -n 6 | tr '\n' ';')"
	info "worker at load: $(grep -E '^(RssAnon|RssFile|Threads|VmData)' "/proc/$wpid/status" | tr -s ' \t' ' ' | tr '\n' ' ');" \
		"idle: $(grep -E '^(RssAnon|Threads)' "$run/worker-idle-status" | tr -s ' \t' ' ' | tr '\n' ' ')"
	local mb
	mb=$(calc "$rss / 1024")
	fig worker_rss_mb "$mb" MB baseline_idle_rss_mb "$(calc "$rss0 / 1024")" "" "<30MB" "$(verdict eval "((inflight >= 1000)) && le $mb 30")" \
		"VmRSS with $inflight jobs in flight (simulator latency 2 s), VmHWM $(calc "$hwm / 1024") MB"
	fig worker_idle_cpu_pct "$idle" "% of a core" "" "" "" "~0" "$(verdict le "$idle" 1)" "utime+stime over 10 s idle"
	campaigns_do cancel "$id" >/dev/null
	svc_kill dialer-worker
	svc_kill telephony-sim
	"$MQ" purge "$DIALER_AMQP_URL" dialer.dial-jobs >/dev/null
}

# ------------------------------------------------------------------ 7. latency, normal minute
phase_latency() {
	local k=20 auds ids=() i lat=() ans=() t0 c phone a
	mapfile -t auds < <(mkaudiences lat "$k" 1 430)
	for i in $(seq 1 "$k"); do ids+=("$(mkcampaigns 1 "${auds[$((i - 1))]}" '"callsPerMinute":60,"maxConcurrentCalls":5')"); done
	for i in $(seq 1 "$k"); do
		phone=$(first_phone 430 "$i" | sed 's/+/%2B/')
		t0=$(now_ms)
		a=$(curl -s -o /dev/null -w '%{time_total}' -X POST -H "x-api-key: $KEY" "$API/v1/campaigns/${ids[$((i - 1))]}/start")
		ans+=("$(calc "$a * 1000")")
		c=
		for _ in $(seq 1 1000); do
			c=$(curl -s "$DIALER_SIM_URL/_sim/calls?to=$phone" | jq -r '.calls[0].createdAt // empty')
			[[ -n $c ]] && break
			sleep 0.005
		done
		[[ -n $c ]] && lat+=($(($(iso_ms "$c") - t0)))
		sleep 0.$((RANDOM % 3))
	done
	local med p90 sorted amed
	median() { sort -n | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else print int((a[NR / 2] + a[NR / 2 + 1]) / 2) }'; }
	sorted=$(printf '%s\n' "${lat[@]}" | sort -n)
	med=$(median <<<"$sorted")
	amed=$(printf '%s\n' "${ans[@]}" | median)
	p90=$(awk '{ a[NR] = $1 } END { print a[int(NR * 0.9 + 0.5)] }' <<<"$sorted")
	fig start_to_first_dial_median_ms "${med:-0}" ms baseline_start_answer_ms "$amed" "" "<200ms" "$(verdict eval "((${#lat[@]} == k)) && le ${med:-999999} 200")" \
		"${#lat[@]} of $k starts, one-minute minute, tick 100 ms; baseline: median time the POST start took; p90 $p90 ms, min $(head -n1 <<<"$sorted"), max $(tail -n1 <<<"$sorted")"
}

# ------------------------------------------------------------------ 9a. pacing at scale, normal minute
phase_pacing() {
	local n=1000 aud ids secs=30
	aud=$(mkaudiences pace 1 100 450)
	svc_kill dialer-worker
	mapfile -t ids < <(mkcampaigns $n "$aud" '"callsPerMinute":60,"maxConcurrentCalls":1000,"maxRetries":0')
	# the baseline: the scheduler's own CPU with nothing to dial, over 5 s
	local idle_cores k0
	k0=$(ticks_pid "$(pid_of dialer-scheduler)")
	sleep 5
	idle_cores=$(awk "BEGIN { printf \"%.2f\", ($(ticks_pid "$(pid_of dialer-scheduler)") - $k0) / $CLK_TCK / 5 }")
	local t0 started
	t0=$(now_ms)
	started=$(campaigns_do start "${ids[@]}")
	info "pacing: $n campaigns created; $started starts answered in $(($(now_ms) - t0)) ms"
	local dialing=0 ready_s
	for _ in $(seq 1 1800); do
		dialing=$(psqlq -c "SELECT count(*) FROM campaigns WHERE audience_id = '$aud' AND status = 'IN_PROGRESS' AND snapshot_done AND queued > 0")
		((dialing >= n)) && break
		sleep 0.1
	done
	ready_s=$(calc "($(now_ms) - $t0) / 1000")
	fig pacing_all_dialing_s "$ready_s" s "" "" "" "" INFO "$dialing of $n campaigns snapshotted and dialing this long after their starts"
	sleep 2
	local spid c0 c1 p0 p1 w0 w1 pg
	spid=$(pid_of dialer-scheduler)
	pg=$(pg_master)
	c0=$(ticks_pid "$spid")
	p0=$(ticks_children "$pg")
	w0=$(psqlq -c "SELECT clock_timestamp()")
	sleep $secs
	w1=$(psqlq -c "SELECT clock_timestamp()")
	c1=$(ticks_pid "$spid")
	p1=$(ticks_children "$pg")
	local sched_cores pg_cores stats
	sched_cores=$(awk "BEGIN { printf \"%.2f\", ($c1 - $c0) / $CLK_TCK / $secs }")
	pg_cores=$(awk "BEGIN { printf \"%.2f\", ($p1 - $p0) / $CLK_TCK / $secs }")
	# each campaign's pace over the window: (dials - 1) per the span from its first to its last dial
	stats=$(psqlq -F' ' <<SQL
WITH a AS (
  SELECT campaign_id, count(*) AS n, extract(epoch FROM max(created_at) - min(created_at)) AS span
    FROM call_attempts WHERE campaign_id IN (SELECT id FROM campaigns WHERE audience_id = '$aud')
     AND created_at >= '$w0' AND created_at < '$w1' GROUP BY campaign_id),
p AS (SELECT CASE WHEN span > 0 THEN (n - 1) * 60 / span ELSE 0 END AS pace FROM a)
SELECT count(*), round(avg(pace)::numeric, 2), round(min(pace)::numeric, 2), round(max(pace)::numeric, 2),
       count(*) FILTER (WHERE abs(pace - 60) <= 3) FROM p;
SQL
	)
	# each dispatch pass is one transaction: its attempts share created_at
	local passes
	passes=$(psqlq -F' ' -c "WITH t AS (SELECT DISTINCT created_at FROM call_attempts WHERE campaign_id IN
		(SELECT id FROM campaigns WHERE audience_id = '$aud') AND created_at >= '$w0' AND created_at < '$w1')
		SELECT count(*), round((extract(epoch FROM max(created_at) - min(created_at)) * 1000 / greatest(count(*) - 1, 1))::numeric) FROM t")
	local got avg mn mx within
	read -r got avg mn mx within <<<"$stats"
	info "pacing: $got campaigns dialing in the window; pace per campaign avg $avg min $mn max $mx /min; $within within 5% of 60;" \
		"dispatch passes that dialed, and ms between them: $passes; postgres $pg_cores cores"
	fig pacing_campaigns_within_5pct "$within" campaigns target_pace_per_min 60 "$(awk "BEGIN { printf \"%.2f\", ${avg:-0} / 60 }")" "=$n" "$(verdict eval "((within == n))")" \
		"$n campaigns x 60/min over ${secs} s (no worker: jobs queue up); pace avg $avg, min $mn, max $mx"
	fig pacing_scheduler_cores "$sched_cores" cores baseline_idle_cores "$idle_cores" "" "<0.5" "$(verdict le "$sched_cores" 0.5)" "postgres used $pg_cores cores"
	campaigns_do cancel "${ids[@]}" >/dev/null
	"$MQ" purge "$DIALER_AMQP_URL" dialer.dial-jobs >/dev/null
}

# ------------------------------------------------------------------ run
want floor && phase_floor
want dispatch && phase_dispatch
want api && phase_api
if want import; then phase_import; phase_import_1m; fi
want e2e && phase_e2e
want start1m && phase_start1m
want growth && phase_growth
want footprint && phase_footprint
if want latency || want pacing; then
	svc_stop_all
	svc_start "${NORMAL_ENV[@]}"
	want latency && phase_latency
	want pacing && phase_pacing
fi

# ------------------------------------------------------------------ summary
echo
echo "bench: summary of \`make bench\` (BENCH_PHASES=\"$PHASES\") on $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'), $(( ($(now_ms) - T_BEGIN) / 1000 )) s in all"
{
	echo "figure|measured|baseline|ratio|target|met"
	printf '%s\n' "${ROWS[@]}"
} | column -t -s'|'
