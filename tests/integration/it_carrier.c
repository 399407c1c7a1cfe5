/* Campaigns against a misbehaving carrier: the test runs its own simulator
 * with the fault and its own worker pointed at it (the stack's own worker
 * stopped meanwhile), then checks the campaign completes, every contact's
 * call is answered, and the carrier saw each contact exactly once.
 * - a 429 storm: workers resend with backoff (a 429 created nothing);
 * - 5xx after create: the carrier made the call but answered 500; the
 *   attempt is ambiguous and is reconciled and adopted, never redialed;
 * - a carrier that lets calls run past TimeLimit: the scheduler hangs up a
 *   call live past callTimeoutMinutes and it ends as `timeout`;
 * - callbacks lost (refused by the API): at the timeout the hang-up finds
 *   the call ended and records its real outcome, not a timeout;
 * - callbacks replayed after a call ended (duplicates, late, contradicting)
 *   change nothing. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>

#include "it_lib.h"

static pid_t sim_pid, worker_pid;
static int stopped_managed;
static char sim_url[64];

/* Runs a simulator with env and a worker pointed at it. */
static void start_carrier(const char *tag, const char *const *sim_env)
{
	char port[16], worker_db[512];
	const char *env[32];
	int n = 0;

	snprintf(port, sizeof(port), "%d", it_free_port());
	snprintf(sim_url, sizeof(sim_url), "http://127.0.0.1:%s", port);
	env[n++] = "DIALER_SIM_PORT";
	env[n++] = port;
	for (int i = 0; sim_env[i] && n < 30; i++)
		env[n++] = sim_env[i];
	env[n] = NULL;
	sim_pid = it_spawn("telephony-sim", tag, env);
	assert_true(it_port_up(atoi(port), 10000));
	it_stop_pid(it_service_pid("dialer-worker"));
	stopped_managed = 1;
	it_worker_db_url(worker_db, sizeof(worker_db));
	{
		const char *wenv[10] = {"DIALER_CARRIER_BASE_URL", sim_url, "DIALER_HEALTH_PORT", "0",
					"DIALER_WORKER_DB_URL", worker_db, NULL};

		/* A carrier with its own credentials: the worker gets them too. */
		for (int i = 0; sim_env[i] && sim_env[i + 1]; i += 2)
			if (!strcmp(sim_env[i], "DIALER_CARRIER_AUTH_TOKEN")) {
				wenv[6] = sim_env[i];
				wenv[7] = sim_env[i + 1];
				wenv[8] = NULL;
			}
		worker_pid = it_spawn("dialer-worker", tag, wenv);
	}
}

static int teardown(void **state)
{
	(void)state;
	if (worker_pid > 0) {
		kill(worker_pid, SIGTERM);
		waitpid(worker_pid, NULL, 0);
		worker_pid = 0;
	}
	if (sim_pid > 0) {
		kill(sim_pid, SIGTERM);
		waitpid(sim_pid, NULL, 0);
		sim_pid = 0;
	}
	if (stopped_managed) {
		it_services_start();
		stopped_managed = 0;
	}
	return 0;
}

struct run {
	struct it_org org;
	char campaign[64];
	char phones[64][20];
	int n;
};

/* n contacts ending in 1 (answered), an audience, a campaign, started. */
static void run_campaign(struct run *r, int n, const char *settings)
{
	json_t *body = json_object(), *arr = json_array(), *ids = json_array();
	struct it_resp *resp;
	char audience[64], path[160], *text;

	it_org_new(&r->org, 100000);
	r->n = n;
	for (int i = 0; i < n; i++) {
		it_phone(r->phones[i], 1);
		json_array_append_new(arr, json_pack("{s:s}", "phoneNumber", r->phones[i]));
	}
	json_object_set_new(body, "contacts", arr);
	text = json_dumps(body, JSON_COMPACT);
	resp = it_call("POST", "/v1/contacts/bulk", r->org.key, text, NULL);
	it_expect(resp, 200);
	for (size_t i = 0; i < json_array_size(json_object_get(resp->json, "data")); i++)
		json_array_append(ids, json_object_get(json_array_get(json_object_get(resp->json, "data"), i), "id"));
	it_resp_free(resp);
	free(text);
	json_decref(body);
	resp = it_call("POST", "/v1/audiences", r->org.key, "{\"name\":\"carrier\"}", NULL);
	it_expect(resp, 201);
	snprintf(audience, sizeof(audience), "%s", it_str(resp, "id"));
	it_resp_free(resp);
	body = json_pack("{s:o}", "contactIds", ids);
	text = json_dumps(body, JSON_COMPACT);
	snprintf(path, sizeof(path), "/v1/audiences/%s/contacts", audience);
	resp = it_call("POST", path, r->org.key, text, NULL);
	it_expect(resp, 200);
	it_resp_free(resp);
	free(text);
	json_decref(body);
	resp = it_callf("POST", "/v1/campaigns", r->org.key, "{\"name\":\"carrier\",\"flowId\":\"%s\",\"audienceId\":\"%s\",%s}",
			r->org.flow_id, audience, settings);
	it_expect(resp, 201);
	snprintf(r->campaign, sizeof(r->campaign), "%s", it_str(resp, "id"));
	it_resp_free(resp);
	snprintf(path, sizeof(path), "/v1/campaigns/%s/start", r->campaign);
	resp = it_call("POST", path, r->org.key, NULL, NULL);
	it_expect(resp, 200);
	it_resp_free(resp);
}

static void wait_completed(struct run *r, int timeout_ms)
{
	char path[160];
	struct it_resp *resp;

	snprintf(path, sizeof(path), "/v1/campaigns/%s/progress", r->campaign);
	for (int waited = 0; waited < timeout_ms; waited += 50) {
		struct timespec ts = {0, 50000000};
		int done;

		resp = it_call("GET", path, r->org.key, NULL, NULL);
		done = !strcmp(it_str(resp, "status"), "COMPLETED");
		it_resp_free(resp);
		if (done)
			return;
		nanosleep(&ts, NULL);
	}
	resp = it_call("GET", path, r->org.key, NULL, NULL);
	fail_msg("campaign not COMPLETED: %s", resp->body);
}

/* Every contact answered, and the carrier saw each one exactly once. */
static void expect_each_once_answered(struct run *r)
{
	char url[128], path[200];
	struct it_resp *resp;
	json_t *c;
	size_t i;
	int seen[64] = {0};

	snprintf(url, sizeof(url), "%s/_sim/calls", sim_url);
	resp = it_call_url("GET", url);
	json_array_foreach(json_object_get(resp->json, "calls"), i, c)
		for (int k = 0; k < r->n; k++)
			if (!strcmp(json_string_value(json_object_get(c, "to")), r->phones[k]))
				seen[k]++;
	it_resp_free(resp);
	for (int k = 0; k < r->n; k++)
		if (seen[k] != 1)
			fail_msg("the carrier saw %d calls to %s", seen[k], r->phones[k]);
	snprintf(path, sizeof(path), "/v1/campaigns/%s/calls?limit=100", r->campaign);
	resp = it_call("GET", path, r->org.key, NULL, NULL);
	json_array_foreach(json_object_get(resp->json, "data"), i, c)
		assert_string_equal(json_string_value(json_object_get(c, "outcome")), "answered");
	assert_int_equal(json_array_size(json_object_get(resp->json, "data")), r->n);
	it_resp_free(resp);
}

static void test_429_storm(void **state)
{
	static const char *const env[] = {"DIALER_SIM_RATE_429_PCT", "40", NULL};
	struct run r;

	(void)state;
	start_carrier("429", env);
	run_campaign(&r, 30, "\"callsPerMinute\":600,\"maxConcurrentCalls\":10,\"maxRetries\":2,\"retryDelayMinutes\":0");
	wait_completed(&r, 90000);
	expect_each_once_answered(&r);
}

static void test_5xx_after_create(void **state)
{
	static const char *const env[] = {"DIALER_SIM_RATE_5XX_PCT", "30", NULL};
	struct run r;

	(void)state;
	start_carrier("5xx", env);
	run_campaign(&r, 30, "\"callsPerMinute\":600,\"maxConcurrentCalls\":10,\"maxRetries\":2,\"retryDelayMinutes\":0");
	wait_completed(&r, 90000);
	/* The 500s were ambiguous, reconciled and adopted: nobody dialed twice. */
	expect_each_once_answered(&r);
	assert_true(it_db_count("SELECT count(*) FROM call_attempts a JOIN calls c ON c.id = a.call_id"
				" WHERE c.campaign_id = $1 AND a.reconcile_at IS NOT NULL", r.campaign, NULL) > 0);
}

static void test_timeout_hangup(void **state)
{
	/* Calls of 600 (scaled) seconds, a carrier that ignores TimeLimit, a
	 * one-minute timeout: the scheduler hangs the call up. */
	static const char *const env[] = {"DIALER_SIM_HONOR_TIME_LIMIT", "false", "DIALER_SIM_CALL_SECONDS", "600",
					  "DIALER_SIM_RING_SECONDS", "1", NULL};
	struct run r;
	struct it_resp *resp;
	char path[200];

	(void)state;
	start_carrier("timeout", env);
	run_campaign(&r, 1, "\"callTimeoutMinutes\":1,\"maxRetries\":0");
	wait_completed(&r, 60000);
	snprintf(path, sizeof(path), "/v1/campaigns/%s/calls", r.campaign);
	resp = it_call("GET", path, r.org.key, NULL, NULL);
	{
		json_t *c = json_array_get(json_object_get(resp->json, "data"), 0);
		const char *outcome = json_string_value(json_object_get(c, "outcome"));

		if (outcome == NULL || strcmp(outcome, "timeout"))
			fail_msg("call after its timeout: %s", resp->body);
		assert_string_equal(json_string_value(json_object_get(c, "status")), "FAILED");
	}
	it_resp_free(resp);
	assert_int_equal(it_db_count("SELECT count(*) FROM call_attempts a JOIN calls c ON c.id = a.call_id"
				     " WHERE c.campaign_id = $1 AND a.hung_up AND a.outcome = 'timeout'",
				     r.campaign, NULL),
			 1);
	/* Not cut before its time: the minute and the grace (30 s, scaled) after
	 * it was dialed, however long before that it was claimed. */
	{
		const char *grace = getenv("DIALER_SCHEDULER_TIMEOUT_GRACE_S");
		char limit_ms[32];

		snprintf(limit_ms, sizeof(limit_ms), "%ld",
			 (60 + (grace ? atol(grace) : 30)) * atol(it_env("DIALER_CLOCK_MINUTE_MS")) / 60);
		assert_int_equal(it_db_count("SELECT count(*) FROM call_attempts WHERE campaign_id = $1 AND hung_up"
					     " AND ended_at - dialed_at >= make_interval(secs => $2::int / 1000.0)",
					     r.campaign, limit_ms, NULL),
				 1);
	}
}

static void test_lost_callbacks_not_timeout(void **state)
{
	/* The carrier signs its callbacks with a token the API does not know:
	 * every callback is refused (lost), the call ends answered at the
	 * carrier long before its one-minute timeout. The timeout's hang-up
	 * first asks the carrier and records the real outcome, not a timeout. */
	static const char *const env[] = {"DIALER_CARRIER_AUTH_TOKEN", "a-token-the-api-does-not-know",
					  "DIALER_SIM_CALL_SECONDS", "10", "DIALER_SIM_RING_SECONDS", "1", NULL};
	struct run r;

	(void)state;
	start_carrier("lost", env);
	run_campaign(&r, 1, "\"callTimeoutMinutes\":1,\"maxRetries\":0");
	wait_completed(&r, 60000);
	assert_int_equal(it_db_count("SELECT count(*) FROM calls WHERE campaign_id = $1 AND status = 'COMPLETED'"
				     " AND outcome = 'answered' AND duration > 0",
				     r.campaign, NULL),
			 1);
	assert_int_equal(it_db_count("SELECT count(*) FROM call_attempts WHERE campaign_id = $1 AND hangup_sent"
				     " AND NOT hung_up AND outcome = 'answered'",
				     r.campaign, NULL),
			 1);
}

static int results_drained(void *arg)
{
	char url[512];
	struct it_resp *r;
	int drained;

	(void)arg;
	if (it_db_count("SELECT count(*) FROM outbox WHERE message_type = 'call.status'", NULL) != 0)
		return 0;
	snprintf(url, sizeof(url), "%s/api/queues/%%2F/dialer.results", it_env("DIALER_AMQP_MGMT_URL"));
	r = it_call_url("GET", url);
	drained = r->status == 200 && json_integer_value(json_object_get(r->json, "messages")) == 0;
	it_resp_free(r);
	return drained;
}

static void test_replayed_callbacks(void **state)
{
	/* After a call ended answered, its callbacks come again: duplicated, an
	 * older one late, and a contradicting final one. Nothing changes. */
	struct run r;
	PGresult *q;
	char attempt[64], sid[64], form[1024], path[200];
	long long last_seq, used;
	struct it_resp *resp, *before;
	static const char *const replays[][2] = {{"completed", "0"}, {"ringing", "-3"}, {"busy", "5"},
						  {"no-answer", "6"}, {"in-progress", "-1"}};

	(void)state;
	snprintf(sim_url, sizeof(sim_url), "%s", it_env("DIALER_SIM_URL"));
	run_campaign(&r, 1, "\"maxRetries\":2");
	wait_completed(&r, 60000);
	expect_each_once_answered(&r);
	q = PQexecParams(it_db(),
			 "SELECT a.id, a.call_sid, a.last_sequence FROM call_attempts a JOIN calls c ON c.id = a.call_id"
			 " WHERE c.campaign_id = $1",
			 1, NULL, (const char *const[]){r.campaign}, NULL, NULL, 0);
	assert_int_equal(PQntuples(q), 1);
	snprintf(attempt, sizeof(attempt), "%s", PQgetvalue(q, 0, 0));
	snprintf(sid, sizeof(sid), "%s", PQgetvalue(q, 0, 1));
	last_seq = atoll(PQgetvalue(q, 0, 2));
	PQclear(q);
	used = it_db_count("SELECT used_minutes FROM organizations WHERE id = $1", r.org.id, NULL);
	snprintf(path, sizeof(path), "/v1/campaigns/%s/calls", r.campaign);
	before = it_call("GET", path, r.org.key, NULL, NULL);

	for (size_t i = 0; i < sizeof(replays) / sizeof(replays[0]); i++) {
		long long seq = last_seq + atoll(replays[i][1]);

		snprintf(form, sizeof(form),
			 "CallSid=%s&AccountSid=ACdialerlocal00000000000000000000&To=%%2B1555&CallStatus=%s"
			 "&SequenceNumber=%lld&CallDuration=7&Direction=outbound-api",
			 sid, replays[i][0], seq < 0 ? 0 : seq);
		resp = it_post_callback(attempt, form);
		assert_int_equal(resp->status, 204);
		it_resp_free(resp);
	}
	assert_true(it_poll(results_drained, NULL, 20000));
	resp = it_call("GET", path, r.org.key, NULL, NULL);
	assert_string_equal(resp->body, before->body);
	it_resp_free(resp);
	it_resp_free(before);
	assert_int_equal(it_db_count("SELECT used_minutes FROM organizations WHERE id = $1", r.org.id, NULL), used);
	assert_int_equal(it_db_count("SELECT count(*) FROM call_attempts a JOIN calls c ON c.id = a.call_id"
				     " WHERE c.campaign_id = $1", r.campaign, NULL), 1);
	snprintf(path, sizeof(path), "/v1/campaigns/%s/progress", r.campaign);
	resp = it_call("GET", path, r.org.key, NULL, NULL);
	assert_int_equal(it_int(resp, "completed"), 1);
	assert_int_equal(it_int(resp, "failed"), 0);
	assert_int_equal(it_int(resp, "pending"), 0);
	it_resp_free(resp);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_429_storm, teardown),
		cmocka_unit_test_teardown(test_5xx_after_create, teardown),
		cmocka_unit_test_teardown(test_timeout_hangup, teardown),
		cmocka_unit_test_teardown(test_lost_callbacks_not_timeout, teardown),
		cmocka_unit_test(test_replayed_callbacks),
	};

	return cmocka_run_group_tests_name("misbehaving carrier", tests, NULL, NULL);
}
