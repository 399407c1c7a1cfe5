#!/usr/bin/env bash
# make demo: the stack, then a campaign over 250 contacts with a mix of
# outcomes, shown live until it completes, then a summary by outcome. Uses a
# shortened minute (DIALER_CLOCK_MINUTE_MS, default 1000 ms) so it runs in
# well under two minutes. Leaves the stack up; `make down` stops it.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
run=$root/.run
export DIALER_CLOCK_MINUTE_MS=${DIALER_CLOCK_MINUTE_MS:-1000}
# Simulated answered calls last 20 (shortened) seconds.
export DIALER_SIM_CALL_SECONDS=${DIALER_SIM_CALL_SECONDS:-20}
started=$SECONDS

bash "$root/deploy/local/stack.sh" infra-up "$run"
# Restart the services so they all run with the demo's minute.
bash "$root/deploy/local/services.sh" stop "$run"
bash "$root/deploy/local/services.sh" start "$run"
# shellcheck disable=SC1091
source "$run/env"

api() {
	local method=$1 path=$2 body=${3:-}
	if [[ -n $body ]]; then
		curl -fsS -X "$method" -H "x-api-key: $DIALER_API_KEY" -H 'Content-Type: application/json' \
			--data-binary "$body" "$DIALER_API_URL$path"
	else
		curl -fsS -X "$method" -H "x-api-key: $DIALER_API_KEY" "$DIALER_API_URL$path"
	fi
}

# 250 contacts; the simulator decides each call by the number's last digit:
# 0-5 answered, 6 voicemail, 7 no-answer, 8 busy, 9 carrier failure, 00 invalid.
contacts=$(jq -nc --argjson run "$((RANDOM % 90 + 10))" '
	{contacts: [range(0; 250) | {
		phoneNumber: ("+1555" + ($run | tostring) + ((. + 1000000) | tostring)),
		name: ("Demo contact " + (. | tostring)),
		language: "en"}]}')
ids=$(api POST /v1/contacts/bulk "$contacts" | jq -c '[.data[].id]')
audience=$(api POST /v1/audiences '{"name":"Demo audience","description":"250 contacts from make demo"}' | jq -r .id)
api POST "/v1/audiences/$audience/contacts" "{\"contactIds\":$ids}" >/dev/null
campaign=$(api POST /v1/campaigns "$(jq -nc --arg f "$DIALER_FLOW_ID" --arg a "$audience" '{
	name: "Demo campaign", flowId: $f, audienceId: $a, callsPerMinute: 600,
	maxConcurrentCalls: 50, maxRetries: 2, retryDelayMinutes: 1, callTimeoutMinutes: 2}')" | jq -r .id)
api POST "/v1/campaigns/$campaign/start" >/dev/null
echo "demo: campaign $campaign started: 250 contacts, 600 calls per minute, 50 at once, up to 2 retries"
echo "demo: one minute lasts ${DIALER_CLOCK_MINUTE_MS} ms here"

status=""
deadline=$((SECONDS + 150))
while ((SECONDS < deadline)); do
	p=$(api GET "/v1/campaigns/$campaign/progress")
	status=$(jq -r .status <<<"$p")
	line=$(jq -r '"\(.status)  pending \(.pending)  queued \(.queued)  in progress \(.inProgress)  completed \(.completed)  failed \(.failed)  skipped \(.skipped)  \(.percentComplete)%"' <<<"$p")
	if [[ -t 1 ]]; then printf '\r\033[K%s' "$line"; else echo "$line"; fi
	[[ $status == COMPLETED || $status == CANCELLED ]] && break
	sleep 0.5
done
[[ -t 1 ]] && echo
if [[ $status != COMPLETED ]]; then
	echo "demo: the campaign did not complete in time (status $status); logs are in $run/logs" >&2
	exit 1
fi
echo "demo: completed in $((SECONDS - started)) s; calls by outcome:"
for page in 1 2 3; do
	api GET "/v1/campaigns/$campaign/calls?limit=100&page=$page"
done | jq -rs '[.[].data[]] | group_by(.outcome) | map("  \(.[0].outcome // "none"): \(length)") | .[]'
echo "demo: attempts in all: $(for page in 1 2 3; do api GET "/v1/campaigns/$campaign/calls?limit=100&page=$page"; done | jq -s '[.[].data[].attempts] | add')"
echo "demo: the stack is still up: . .run/env, then curl -H \"x-api-key: \$DIALER_API_KEY\" \$DIALER_API_URL/v1/campaigns/$campaign/calls"
echo "demo: stop it with  make down"
