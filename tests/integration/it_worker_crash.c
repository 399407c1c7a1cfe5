/* A dialer worker dies (as by SIGKILL) at each step of a dial: after it
 * took the job, after it fenced the attempt, after the carrier created the call, and after its
 * result was confirmed but before it acked the job. Each time the contact
 * is dialed exactly once and the campaign completes: the redelivered job is
 * refused by the fence, the unknown attempt is reconciled with the carrier
 * (released if the carrier never saw it), a created call is adopted. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "it_lib.h"

static pid_t managed;

/* Starts a worker that dies at step; returns once it consumes. */
static pid_t spawn_crashing_worker(const char *step, char *log, size_t loglen)
{
	pid_t pid;

	snprintf(log, loglen, "%s/logs/dialer-worker-crash-%s.log", it_env("STACK_RUNDIR"), step);
	unlink(log);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		char bin[512], worker_db[512];
		FILE *f = freopen(log, "a", stdout);

		(void)f;
		dup2(1, 2);
		/* The worker's own role, as the stack runs it. */
		it_worker_db_url(worker_db, sizeof(worker_db));
		setenv("DIALER_WORKER_DB_URL", worker_db, 1);
		setenv("DIALER_WORKER_CRASH_AT", step, 1);
		setenv("DIALER_HEALTH_PORT", "0", 1);
		setenv("DIALER_CARRIER_BASE_URL", getenv("DIALER_SIM_URL"), 1);
		snprintf(bin, sizeof(bin), "%.*s/dialer-worker",
			 (int)(strrchr(getenv("DIALER_CTL"), '/') - getenv("DIALER_CTL")), getenv("DIALER_CTL"));
		execl(bin, bin, (char *)NULL);
		_exit(127);
	}
	for (int i = 0; i < 500; i++) {
		char line[1024];
		FILE *f = fopen(log, "r");
		int ready = 0;
		struct timespec ts = {0, 20000000};

		while (f && fgets(line, sizeof(line), f))
			if (strstr(line, "consuming jobs"))
				ready = 1;
		if (f)
			fclose(f);
		if (ready)
			return pid;
		nanosleep(&ts, NULL);
	}
	fail_msg("the crashing worker did not start consuming (see %s)", log);
	return -1;
}

static int teardown(void **state)
{
	(void)state;
	if (managed > 0) {
		it_services_start();
		managed = 0;
	}
	return 0;
}

static void run_crash(const char *step)
{
	struct it_org org;
	struct it_resp *r;
	char phone[20], audience[64], campaign[64], path[160], url[512], log[512];
	int status = 0, calls = 0, exited = 0;
	pid_t crashy;

	it_org_new(&org, 100000);
	it_phone(phone, 1);
	r = it_callf("POST", "/v1/contacts", org.key, "{\"phoneNumber\":\"%s\"}", phone);
	it_expect(r, 201);
	{
		char cid[64];

		snprintf(cid, sizeof(cid), "%s", it_str(r, "id"));
		it_resp_free(r);
		r = it_call("POST", "/v1/audiences", org.key, "{\"name\":\"crash\"}", NULL);
		it_expect(r, 201);
		snprintf(audience, sizeof(audience), "%s", it_str(r, "id"));
		it_resp_free(r);
		snprintf(path, sizeof(path), "/v1/audiences/%s/contacts", audience);
		r = it_callf("POST", path, org.key, "{\"contactIds\":[\"%s\"]}", cid);
		it_expect(r, 200);
		it_resp_free(r);
	}
	r = it_callf("POST", "/v1/campaigns", org.key,
		     "{\"name\":\"crash %s\",\"flowId\":\"%s\",\"audienceId\":\"%s\",\"maxRetries\":0}", step,
		     org.flow_id, audience);
	it_expect(r, 201);
	snprintf(campaign, sizeof(campaign), "%s", it_str(r, "id"));
	it_resp_free(r);

	/* Only the crashing worker takes jobs while the stack's own is stopped. */
	managed = it_service_pid("dialer-worker");
	it_stop_pid(managed);
	crashy = spawn_crashing_worker(step, log, sizeof(log));
	snprintf(path, sizeof(path), "/v1/campaigns/%s/start", campaign);
	r = it_call("POST", path, org.key, NULL, NULL);
	it_expect(r, 200);
	it_resp_free(r);
	for (int i = 0; i < 1000 && !exited; i++) {
		struct timespec ts = {0, 20000000};

		if (waitpid(crashy, &status, WNOHANG) == crashy)
			exited = 1;
		else
			nanosleep(&ts, NULL);
	}
	if (!exited) {
		kill(crashy, SIGKILL);
		waitpid(crashy, NULL, 0);
		fail_msg("the worker did not die at %s (see %s)", step, log);
	}
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 137);
	it_services_start();
	managed = 0;

	snprintf(path, sizeof(path), "/v1/campaigns/%s/progress", campaign);
	for (int i = 0; i < 2000; i++) {
		struct timespec ts = {0, 20000000};
		int done;

		r = it_call("GET", path, org.key, NULL, NULL);
		done = !strcmp(it_str(r, "status"), "COMPLETED");
		if (done) {
			assert_int_equal(it_int(r, "completed"), 1);
			it_resp_free(r);
			break;
		}
		it_resp_free(r);
		nanosleep(&ts, NULL);
	}
	r = it_call("GET", path, org.key, NULL, NULL);
	if (strcmp(it_str(r, "status"), "COMPLETED"))
		fail_msg("campaign after a crash at %s: %s", step, r->body);
	it_resp_free(r);

	snprintf(url, sizeof(url), "%s/_sim/calls", it_env("DIALER_SIM_URL"));
	r = it_call_url("GET", url);
	{
		json_t *c;
		size_t i;

		json_array_foreach(json_object_get(r->json, "calls"), i, c)
			if (!strcmp(json_string_value(json_object_get(c, "to")), phone))
				calls++;
	}
	it_resp_free(r);
	if (calls != 1)
		fail_msg("crash at %s: the carrier saw %d calls to %s", step, calls, phone);
	snprintf(path, sizeof(path), "/v1/campaigns/%s/calls", campaign);
	r = it_call("GET", path, org.key, NULL, NULL);
	{
		json_t *c = json_array_get(json_object_get(r->json, "data"), 0);

		assert_string_equal(json_string_value(json_object_get(c, "outcome")), "answered");
		/* An attempt the carrier never saw does not count. */
		assert_int_equal(json_integer_value(json_object_get(c, "attempts")), 1);
	}
	it_resp_free(r);
}

static void test_crash_after_take(void **state)
{
	(void)state;
	run_crash("after-take");
}

static void test_crash_after_fence(void **state)
{
	(void)state;
	run_crash("after-fence");
}

static void test_crash_after_create(void **state)
{
	(void)state;
	run_crash("after-create");
}

static void test_crash_before_ack(void **state)
{
	(void)state;
	run_crash("before-ack");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_crash_after_take, teardown),
		cmocka_unit_test_teardown(test_crash_after_fence, teardown),
		cmocka_unit_test_teardown(test_crash_after_create, teardown),
		cmocka_unit_test_teardown(test_crash_before_ack, teardown),
	};

	return cmocka_run_group_tests_name("worker crashes", tests, NULL, NULL);
}
