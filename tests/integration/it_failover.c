/* Scheduler failover on the real stack: two more scheduler replicas join the
 * one the stack runs; the leader is frozen past its lease (a standby takes
 * over, the frozen one wakes up and must not act), then the new leader is
 * killed with SIGKILL mid-campaign. The campaign completes, its pace holds
 * and no contact is dialed twice. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "dl_util.h"
#include "it_lib.h"

static pid_t extra[2];

static pid_t spawn_scheduler(int n)
{
	char log[512];
	pid_t pid;

	snprintf(log, sizeof(log), "%s/logs/dialer-scheduler-extra%d.log", it_env("STACK_RUNDIR"), n);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		char bin[512];
		FILE *f = freopen(log, "a", stdout);

		(void)f;
		dup2(1, 2);
		setenv("DIALER_HEALTH_PORT", "0", 1);
		setenv("DIALER_API_PUBLIC_URL", getenv("DIALER_API_URL"), 1);
		snprintf(bin, sizeof(bin), "%.*s/dialer-scheduler",
			 (int)(strrchr(getenv("DIALER_CTL"), '/') - getenv("DIALER_CTL")), getenv("DIALER_CTL"));
		execl(bin, bin, (char *)NULL);
		_exit(127);
	}
	return pid;
}

static pid_t managed_scheduler(void)
{
	char path[512];
	FILE *f;
	int pid = 0;

	snprintf(path, sizeof(path), "%s/pids/dialer-scheduler.pid", it_env("STACK_RUNDIR"));
	f = fopen(path, "r");
	assert_non_null(f);
	assert_int_equal(fscanf(f, "%d", &pid), 1);
	fclose(f);
	return pid;
}

/* The pid in the lease holder ("host:pid") while the lease is live, or 0. */
static pid_t leader(void)
{
	PGresult *r = PQexec(it_db(), "SELECT holder FROM scheduler_lease WHERE expires_at > now()");
	pid_t pid = 0;

	if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1) {
		const char *colon = strrchr(PQgetvalue(r, 0, 0), ':');

		if (colon)
			pid = atoi(colon + 1);
	}
	PQclear(r);
	return pid;
}

static pid_t frozen;

static int someone_else_leads(void *arg)
{
	pid_t l = leader();

	(void)arg;
	return l != 0 && l != frozen;
}

static int teardown(void **state)
{
	(void)state;
	if (frozen)
		kill(frozen, SIGCONT);
	for (int i = 0; i < 2; i++) {
		if (extra[i] > 0) {
			kill(extra[i], SIGTERM);
			waitpid(extra[i], NULL, 0);
		}
	}
	return 0;
}

static void test_failover(void **state)
{
	struct it_org org;
	struct it_resp *r;
	json_t *body = json_object(), *arr = json_array(), *ids = json_array();
	char phones[120][20], audience[64], campaign[64], path[160], url[512], *text;
	const int n = 120;
	const long long minute = atoll(it_env("DIALER_CLOCK_MINUTE_MS"));
	pid_t victim;
	long long t[256];
	int seen = 0;

	(void)state;
	extra[0] = spawn_scheduler(1);
	extra[1] = spawn_scheduler(2);

	/* Freeze whoever leads now until a standby has taken over. */
	frozen = leader();
	if (frozen == 0)
		frozen = managed_scheduler();
	kill(frozen, SIGSTOP);
	assert_true(it_poll(someone_else_leads, NULL, 30000));
	kill(frozen, SIGCONT);
	frozen = 0;

	it_org_new(&org, 100000);
	for (int i = 0; i < n; i++) {
		it_phone(phones[i], 1);
		json_array_append_new(arr, json_pack("{s:s}", "phoneNumber", phones[i]));
	}
	json_object_set_new(body, "contacts", arr);
	text = json_dumps(body, JSON_COMPACT);
	r = it_call("POST", "/v1/contacts/bulk", org.key, text, NULL);
	it_expect(r, 200);
	for (size_t i = 0; i < json_array_size(json_object_get(r->json, "data")); i++)
		json_array_append(ids, json_object_get(json_array_get(json_object_get(r->json, "data"), i), "id"));
	it_resp_free(r);
	free(text);
	json_decref(body);
	r = it_call("POST", "/v1/audiences", org.key, "{\"name\":\"failover\"}", NULL);
	it_expect(r, 201);
	snprintf(audience, sizeof(audience), "%s", it_str(r, "id"));
	it_resp_free(r);
	body = json_pack("{s:o}", "contactIds", ids);
	text = json_dumps(body, JSON_COMPACT);
	snprintf(path, sizeof(path), "/v1/audiences/%s/contacts", audience);
	r = it_call("POST", path, org.key, text, NULL);
	it_expect(r, 200);
	it_resp_free(r);
	free(text);
	json_decref(body);

	r = it_callf("POST", "/v1/campaigns", org.key,
		     "{\"name\":\"failover\",\"flowId\":\"%s\",\"audienceId\":\"%s\",\"callsPerMinute\":60,"
		     "\"maxConcurrentCalls\":50,\"maxRetries\":0}",
		     org.flow_id, audience);
	it_expect(r, 201);
	snprintf(campaign, sizeof(campaign), "%s", it_str(r, "id"));
	it_resp_free(r);
	snprintf(path, sizeof(path), "/v1/campaigns/%s/start", campaign);
	r = it_call("POST", path, org.key, NULL, NULL);
	it_expect(r, 200);
	it_resp_free(r);

	/* Mid-campaign, kill the leader outright. */
	for (int i = 0; i < 400; i++) {
		long long done = it_db_count("SELECT count(*) FROM call_attempts WHERE campaign_id = $1", campaign, NULL);
		struct timespec ts = {0, 20000000};

		if (done >= 30)
			break;
		nanosleep(&ts, NULL);
	}
	victim = leader();
	assert_true(victim > 0);
	kill(victim, SIGKILL);
	for (int i = 0; i < 2; i++)
		if (extra[i] == victim) {
			waitpid(victim, NULL, 0);
			extra[i] = 0;
		}

	/* It completes under the next leader. */
	snprintf(path, sizeof(path), "/v1/campaigns/%s/progress", campaign);
	for (int i = 0; i < 3000; i++) {
		struct timespec ts = {0, 20000000};

		r = it_call("GET", path, org.key, NULL, NULL);
		if (!strcmp(it_str(r, "status"), "COMPLETED")) {
			assert_int_equal(it_int(r, "completed"), n);
			it_resp_free(r);
			break;
		}
		it_resp_free(r);
		nanosleep(&ts, NULL);
	}
	r = it_call("GET", path, org.key, NULL, NULL);
	assert_string_equal(it_str(r, "status"), "COMPLETED");
	it_resp_free(r);
	assert_true(leader() != victim);

	/* Each contact reached the carrier exactly once, at the pace. */
	snprintf(url, sizeof(url), "%s/_sim/calls", it_env("DIALER_SIM_URL"));
	r = it_call_url("GET", url);
	{
		json_t *c;
		size_t i;

		json_array_foreach(json_object_get(r->json, "calls"), i, c) {
			const char *to = json_string_value(json_object_get(c, "to"));

			for (int k = 0; k < n; k++) {
				if (!strcmp(to, phones[k])) {
					int64_t ms;

					assert_true(seen < 256);
					assert_int_equal(dl_time_parse(json_string_value(json_object_get(c, "createdAt")), &ms), 0);
					t[seen++] = ms;
				}
			}
		}
	}
	it_resp_free(r);
	assert_int_equal(seen, n);
	assert_int_equal(it_db_count("SELECT count(*) FROM call_attempts WHERE campaign_id = $1", campaign, NULL), n);
	for (int a = 0, b = 0; b < seen; b++) {
		/* The carrier lists calls in creation order. */
		while (t[b] - t[a] >= minute)
			a++;
		if (b - a + 1 > 60)
			fail_msg("%d dial starts within one minute across the failover", b - a + 1);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_failover, teardown),
	};

	return cmocka_run_group_tests_name("scheduler failover", tests, NULL, NULL);
}
