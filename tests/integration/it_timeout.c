/* The scheduler enforces callTimeoutMinutes itself: against a carrier that
 * lets calls run past the TimeLimit it was given, a call live longer than
 * the timeout (plus the grace) gets a hang-up job and ends as `timeout`.
 * The test runs its own simulator (honor_time_limit = false, long calls) and
 * its own worker pointed at it, with the stack's own worker stopped. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "it_lib.h"

static pid_t sim_pid, worker_pid;
static int stopped_managed;

static int free_port(void)
{
	struct sockaddr_in a;
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0), port;

	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
	port = ntohs(a.sin_port);
	close(fd);
	return port;
}

static const char *bin_dir(char *out, size_t len)
{
	const char *ctl = it_env("DIALER_CTL");

	snprintf(out, len, "%.*s", (int)(strrchr(ctl, '/') - ctl), ctl);
	return out;
}

static pid_t spawn(const char *name, const char *const *env)
{
	char log[512], dir[512], bin[600];
	pid_t pid;

	snprintf(log, sizeof(log), "%s/logs/%s-timeout-test.log", it_env("STACK_RUNDIR"), name);
	snprintf(bin, sizeof(bin), "%s/%s", bin_dir(dir, sizeof(dir)), name);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		FILE *f = freopen(log, "a", stdout);

		(void)f;
		dup2(1, 2);
		for (int i = 0; env[i]; i += 2)
			setenv(env[i], env[i + 1], 1);
		execl(bin, bin, (char *)NULL);
		_exit(127);
	}
	return pid;
}

static void services(const char *verb_pid)
{
	char cmd[1024];
	const char *stack = it_env("DIALER_STACK");

	snprintf(cmd, sizeof(cmd), "bash %.*s/services.sh start %s >/dev/null", (int)(strrchr(stack, '/') - stack),
		 stack, it_env("STACK_RUNDIR"));
	(void)verb_pid;
	assert_int_equal(system(cmd), 0);
}

static pid_t managed_worker(void)
{
	char path[512];
	FILE *f;
	int pid = 0;

	snprintf(path, sizeof(path), "%s/pids/dialer-worker.pid", it_env("STACK_RUNDIR"));
	f = fopen(path, "r");
	assert_non_null(f);
	assert_int_equal(fscanf(f, "%d", &pid), 1);
	fclose(f);
	return pid;
}

static int teardown(void **state)
{
	(void)state;
	if (worker_pid > 0) {
		kill(worker_pid, SIGTERM);
		waitpid(worker_pid, NULL, 0);
	}
	if (sim_pid > 0) {
		kill(sim_pid, SIGTERM);
		waitpid(sim_pid, NULL, 0);
	}
	if (stopped_managed)
		services("start");
	return 0;
}

/* True once something listens on the port (arg: int *). */
static int sim_up(void *arg)
{
	struct sockaddr_in a;
	int fd = socket(AF_INET, SOCK_STREAM, 0), ok;

	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_port = htons((uint16_t)*(int *)arg);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ok = connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
	close(fd);
	return ok;
}

static void test_timeout_hangup(void **state)
{
	struct it_org org;
	struct it_resp *r;
	char phone[20], port[16], sim_url[64], health[80], audience[64], campaign[64], path[160], worker_db[512];
	const char *db = it_env("DIALER_DB_URL");
	pid_t managed;

	(void)state;
	snprintf(port, sizeof(port), "%d", free_port());
	snprintf(sim_url, sizeof(sim_url), "http://127.0.0.1:%s", port);
	snprintf(health, sizeof(health), "%s/healthz", sim_url);
	snprintf(worker_db, sizeof(worker_db), "postgresql://dialer_worker:dialer_worker%s", strstr(db, "@"));
	{
		/* Calls of 600 (scaled) seconds that ignore TimeLimit. */
		const char *env[] = {"DIALER_SIM_PORT", port, "DIALER_SIM_HONOR_TIME_LIMIT", "false",
				     "DIALER_SIM_CALL_SECONDS", "600", "DIALER_SIM_RING_SECONDS", "1", NULL};

		sim_pid = spawn("telephony-sim", env);
	}
	{
		int p = atoi(port);

		assert_true(it_poll(sim_up, &p, 10000));
	}
	{
		struct it_resp *h = it_call_url("GET", health);

		assert_int_equal(h->status, 200);
		it_resp_free(h);
	}
	managed = managed_worker();
	kill(managed, SIGTERM);
	for (int i = 0; i < 1000 && kill(managed, 0) == 0; i++) {
		struct timespec ts = {0, 20000000};

		nanosleep(&ts, NULL);
	}
	stopped_managed = 1;
	{
		const char *env[] = {"DIALER_CARRIER_BASE_URL", sim_url, "DIALER_HEALTH_PORT", "0",
				     "DIALER_WORKER_DB_URL", worker_db, NULL};

		worker_pid = spawn("dialer-worker", env);
	}

	it_org_new(&org, 100000);
	it_phone(phone, 1);
	r = it_callf("POST", "/v1/contacts", org.key, "{\"phoneNumber\":\"%s\"}", phone);
	it_expect(r, 201);
	{
		char cid[64];

		snprintf(cid, sizeof(cid), "%s", it_str(r, "id"));
		it_resp_free(r);
		r = it_call("POST", "/v1/audiences", org.key, "{\"name\":\"timeout\"}", NULL);
		snprintf(audience, sizeof(audience), "%s", it_str(r, "id"));
		it_resp_free(r);
		snprintf(path, sizeof(path), "/v1/audiences/%s/contacts", audience);
		r = it_callf("POST", path, org.key, "{\"contactIds\":[\"%s\"]}", cid);
		it_expect(r, 200);
		it_resp_free(r);
	}
	r = it_callf("POST", "/v1/campaigns", org.key,
		     "{\"name\":\"timeout\",\"flowId\":\"%s\",\"audienceId\":\"%s\",\"callTimeoutMinutes\":1,"
		     "\"maxRetries\":0}",
		     org.flow_id, audience);
	it_expect(r, 201);
	snprintf(campaign, sizeof(campaign), "%s", it_str(r, "id"));
	it_resp_free(r);
	snprintf(path, sizeof(path), "/v1/campaigns/%s/start", campaign);
	r = it_call("POST", path, org.key, NULL, NULL);
	it_expect(r, 200);
	it_resp_free(r);

	/* A 600 s call, a one-minute timeout: the scheduler hangs it up. */
	snprintf(path, sizeof(path), "/v1/campaigns/%s/progress", campaign);
	for (int i = 0; i < 1500; i++) {
		struct timespec ts = {0, 20000000};
		int done;

		r = it_call("GET", path, org.key, NULL, NULL);
		done = !strcmp(it_str(r, "status"), "COMPLETED");
		it_resp_free(r);
		if (done)
			break;
		nanosleep(&ts, NULL);
	}
	snprintf(path, sizeof(path), "/v1/campaigns/%s/calls", campaign);
	r = it_call("GET", path, org.key, NULL, NULL);
	{
		json_t *c = json_array_get(json_object_get(r->json, "data"), 0);
		const char *outcome = json_string_value(json_object_get(c, "outcome"));

		if (outcome == NULL || strcmp(outcome, "timeout"))
			fail_msg("call after its timeout: %s", r->body);
		assert_string_equal(json_string_value(json_object_get(c, "status")), "FAILED");
	}
	it_resp_free(r);
	/* The carrier was told to hang up: its call ended well before 600 s. */
	assert_int_equal(it_db_count("SELECT count(*) FROM call_attempts a JOIN calls c ON c.id = a.call_id"
				     " WHERE c.campaign_id = $1 AND a.hangup_sent AND a.outcome = 'timeout'",
				     campaign, NULL),
			 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_timeout_hangup, teardown),
	};

	return cmocka_run_group_tests_name("call timeouts", tests, NULL, NULL);
}
