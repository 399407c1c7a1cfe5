#!/usr/bin/env bash
# Checks every service's /metrics on a live stack, and the sample alerts:
#   - scrapes the API, scheduler, worker and simulator (DIALER_API_URL,
#     DIALER_SCHEDULER_HEALTH_URL, DIALER_WORKER_HEALTH_URL, DIALER_SIM_URL,
#     as tests/run.sh and deploy/local/services.sh set them);
#   - each scrape: the text content type, `promtool check metrics` with no
#     error and no lint warning, valid histograms (le ascending, counts
#     cumulative, +Inf last and equal to _count) and the families that
#     service must export;
#   - every dialer_* metric that deploy/k8s/monitoring/alerts.yaml uses is
#     exported by some service;
#   - `promtool check rules` and `promtool test rules` on the alerts.
# Run it after the integration suites so that counters have values. The last
# line is `metrics: ok`; any failure exits 1. promtool comes from Debian's
# `prometheus` package, installed when missing (its daemon is not started).
set -uo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
alerts_dir=$root/deploy/k8s/monitoring
log() { printf 'metrics: %s\n' "$*"; }

install_promtool() {
	local sudo=
	if [[ $(id -u) != 0 ]]; then
		command -v sudo >/dev/null 2>&1 || { log "not root and no sudo: install the Debian package prometheus"; return 1; }
		sudo=sudo
	fi
	log "installing promtool (Debian package prometheus)"
	# RUNLEVEL=1: the package's service is installed but not started.
	$sudo env DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 apt-get install -y -qq --no-install-recommends prometheus \
		>/dev/null 2>&1 ||
		{ $sudo apt-get update -qq >/dev/null 2>&1 &&
			$sudo env DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 \
				apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }
}
command -v promtool >/dev/null 2>&1 || install_promtool || { log "FAIL promtool missing"; exit 1; }

tmp=$(mktemp -d /tmp/dialer-metrics.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
rc=0
fail() { log "FAIL $*"; rc=1; }

# Histogram structure, which promtool's parser does not check. Prints one
# line per problem.
check_histograms() {
	awk '
	function problem(msg) { print msg; bad = 1 }
	/^# TYPE / { if ($4 == "histogram") hist[$3] = 1; next }
	/^#/ || /^$/ { next }
	{
		if (!match($0, / [^ ]+$/)) { problem("no value: " $0); next }
		series = substr($0, 1, RSTART - 1); value = substr($0, RSTART + 1) + 0
		name = series; labels = ""
		if ((i = index(series, "{")) > 0) {
			name = substr(series, 1, i - 1); labels = substr(series, i + 1, length(series) - i - 1)
		}
		if (name ~ /_bucket$/ && substr(name, 1, length(name) - 7) in hist) {
			base = substr(name, 1, length(name) - 7)
			if (!match(labels, /(^|,)le="[^"]*"/)) { problem(series ": no le label"); next }
			le = substr(labels, RSTART, RLENGTH); sub(/^,/, "", le); le = substr(le, 5, length(le) - 5)
			rest = labels; sub(/(^|,)le="[^"]*"/, "", rest); sub(/^,/, "", rest)
			key = base "{" rest "}"
			inf = (le == "+Inf")
			if (!inf && le !~ /^[-+]?[0-9.]+([eE][-+]?[0-9]+)?$/) problem(series ": le is not a number")
			if (key in last) {
				if (lastinf[key] || (!inf && le + 0 <= last[key] + 0))
					problem(series ": le not increasing")
				if (value < lastcount[key]) problem(series ": bucket counts not cumulative")
			}
			last[key] = le; lastinf[key] = inf; lastcount[key] = value
		} else if (name ~ /_count$/ && substr(name, 1, length(name) - 6) in hist) {
			count[substr(name, 1, length(name) - 6) "{" labels "}"] = value
		}
	}
	END {
		for (key in last) {
			if (!lastinf[key]) problem(key ": no le=\"+Inf\" bucket")
			else if (!(key in count)) problem(key ": no _count")
			else if (count[key] != lastcount[key]) problem(key ": _count differs from the +Inf bucket")
		}
		exit bad
	}' "$1"
}

# service URL_VARIABLE required families...
services=(
	"dialer-api DIALER_API_URL dialer_build_info dialer_http_requests_total dialer_http_request_duration_seconds
	 dialer_outbox_published_total dialer_outbox_lag_seconds dialer_api_read_cache_total
	 dialer_api_read_cache_listening"
	"dialer-scheduler DIALER_SCHEDULER_HEALTH_URL dialer_build_info dialer_http_requests_total
	 dialer_scheduler_leader dialer_scheduler_dials_dispatched_total dialer_calls_total dialer_outbox_published_total
	 dialer_outbox_lag_seconds dialer_scheduler_attempts_in_flight dialer_scheduler_campaigns_active
	 dialer_scheduler_pace_ratio dialer_scheduler_messages_consumed_total"
	"dialer-worker DIALER_WORKER_HEALTH_URL dialer_build_info dialer_http_requests_total
	 dialer_worker_jobs_consumed_total dialer_worker_dial_results_total dialer_worker_dial_latency_seconds
	 dialer_worker_in_flight dialer_worker_jobs_dead_lettered_total dialer_worker_carrier_authorized
	 dialer_worker_amqp_connected"
	"telephony-sim DIALER_SIM_URL dialer_build_info dialer_http_requests_total dialer_sim_calls_created_total"
)
# check_scrape NAME FILE FAMILY...: the checks on one exposition; prints and
# returns 1 on any problem.
check_scrape() {
	local name=$1 out=$2 family bad=0
	shift 2
	if ! promtool check metrics <"$out" >"$tmp/promtool" 2>&1 || [[ -s $tmp/promtool ]]; then
		log "FAIL $name: promtool check metrics:"
		sed 's/^/    /' "$tmp/promtool"
		bad=1
	fi
	if ! check_histograms "$out" >"$tmp/hist"; then
		log "FAIL $name: histograms:"
		sed 's/^/    /' "$tmp/hist"
		bad=1
	fi
	for family in "$@"; do
		grep -q "^# TYPE $family " "$out" || { log "FAIL $name: no $family family"; bad=1; }
	done
	return $bad
}

for entry in "${services[@]}"; do
	read -r -a words <<<"$(tr '\n\t' '  ' <<<"$entry")"
	name=${words[0]} var=${words[1]}
	url=${!var:-}
	if [[ -z $url ]]; then
		fail "$name: $var is not set (run through tests/run.sh, or source a stack's env file)"
		continue
	fi
	out=$tmp/$name.prom
	if ! ctype=$(curl -fsS --max-time 10 -o "$out" -w '%{content_type}' "$url/metrics" 2>"$tmp/curl.err"); then
		fail "$name: GET $url/metrics: $(head -1 "$tmp/curl.err")"
		continue
	fi
	[[ $ctype == "text/plain; version=0.0.4"* ]] || fail "$name: Content-Type is '$ctype', want text/plain; version=0.0.4"
	check_scrape "$name" "$out" "${words[@]:2}" || rc=1
	grep -q "^dialer_build_info{service=\"$name\"" "$out" || fail "$name: dialer_build_info has no service=\"$name\""
	log "$name: $(grep -c '^# TYPE ' "$out") families, $(grep -vc '^#' "$out") series"
done
if grep -q '^# TYPE dialer_scheduler_leader ' "$tmp/dialer-scheduler.prom" 2>/dev/null &&
	! grep -q '^# TYPE dialer_scheduler_attempts_in_flight ' "$tmp/dialer-scheduler.prom"; then
	log "hint: the scheduler's derived metrics appear once its main loop calls sched_metrics_refresh()" \
		"(scheduler/sched_metrics.h)"
fi

# Every dialer_* metric an alert uses must be exported somewhere.
cat "$tmp"/*.prom 2>/dev/null | sed -n 's/^# TYPE \([^ ]*\) \(.*\)$/\1 \2/p' | sort -u >"$tmp/families"
while read -r m; do
	base=$(sed -E 's/_(bucket|count|sum)$//' <<<"$m")
	grep -q "^$m " "$tmp/families" || grep -q "^$base histogram$" "$tmp/families" ||
		fail "alerts.yaml uses $m, which no service exports"
done < <(grep -o 'dialer_[a-z0-9_]*' "$alerts_dir/alerts.yaml" | sort -u)

# The rules load, and each alert fires and stays quiet when it should.
promtool check rules "$alerts_dir/alerts.yaml" >"$tmp/rules" 2>&1 || { fail "promtool check rules:"; sed 's/^/    /' "$tmp/rules"; }
(cd "$alerts_dir" && promtool test rules alerts_test.yaml) >"$tmp/rules-test" 2>&1 ||
	{ fail "promtool test rules:"; sed 's/^/    /' "$tmp/rules-test"; }

# The checks themselves: each broken exposition below must be refused.
selftest() {
	local good='# HELP t_seconds Latency.
# TYPE t_seconds histogram
t_seconds_bucket{route="/a",le="0.5"} 1
t_seconds_bucket{route="/a",le="1"} 2
t_seconds_bucket{route="/a",le="+Inf"} 3
t_seconds_sum{route="/a"} 4.5
t_seconds_count{route="/a"} 3
# HELP t_total Things.
# TYPE t_total counter
t_total{path="a\"b"} 1
'
	local -a broken=(
		"counter without _total|s/t_total/t_things/g"
		"unescaped quote in a label value|s/a\\\\\"b/a\"b/"
		"no HELP|/# HELP t_total/d"
		"unit abbreviation|s/t_seconds/t_ms/g"
		"buckets not cumulative|s/le=\"1\"} 2/le=\"1\"} 0/"
		"le not increasing|s/le=\"1\"}/le=\"0.25\"}/"
		"no +Inf bucket|/le=\"+Inf\"/d"
		"_count not the +Inf bucket|s/_count{route=\"\/a\"} 3/_count{route=\"\/a\"} 4/"
		"missing family|s/t_total/t_other_total/g"
	)
	local case what expr n=0
	printf '%s' "$good" >"$tmp/good.prom"
	check_scrape selftest "$tmp/good.prom" t_seconds t_total >/dev/null || { fail "self-test: the good sample fails"; check_scrape selftest "$tmp/good.prom" t_seconds t_total; }
	for case in "${broken[@]}"; do
		what=${case%%|*} expr=${case#*|}
		sed "$expr" "$tmp/good.prom" >"$tmp/bad.prom"
		if cmp -s "$tmp/good.prom" "$tmp/bad.prom"; then
			fail "self-test: '$what' changed nothing (fix its sed expression)"
		elif check_scrape selftest "$tmp/bad.prom" t_seconds t_total >/dev/null; then
			fail "self-test: not caught: $what"
		else
			n=$((n + 1))
		fi
	done
	log "self-test: $n broken expositions caught"
}
selftest

if ((rc != 0)); then
	log "failed"
	exit 1
fi
log ok
