/* Integration tests of `dialerctl dlq`. Two running campaigns, A and B, get
 * QUEUED calls and attempts straight in Postgres (as the scheduler leaves
 * them after dispatch); their dial jobs are dead-lettered as RabbitMQ does
 * it: published to the dead-letter exchange with an x-death header (reason
 * delivery_limit from dialer.dial-jobs), interleaved A1 B1 A2 B2 A3 B3.
 * Then: list (shape, --max, filters, nothing moves), replay A as a dry run
 * (nothing changes) and for real (the worker dials each A contact once
 * through the simulator; B's jobs stay, in order), replay the same A jobs
 * again (the fence: nobody dialed twice), and purge B. Other suites' dead
 * letters may share the queue: checks look at these campaigns only, and
 * compare the queue's depth before and after. */
#include <amqp.h>
#include <amqp_tcp_socket.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "it_lib.h"

#define NCALLS 3
#define DLQ "dialer.dead-letters"
/* A dial and its result: a create under sim latency, plus resends. */
#define DIAL_WAIT_MS 15000

struct camp {
	char id[48];
	char att[NCALLS][48];
	char phone[NCALLS][20];
	json_t *job[NCALLS]; /* the dial jobs (owned) */
};

static amqp_connection_state_t mq;
static char org[48], flow[48], aud[48], results_q[64];
static struct camp A, B;

/* Opens a connection with channel 1 in confirm mode, polling up to 10 s for
 * the broker (an earlier suite may have just restarted it). */
static amqp_connection_state_t mq_open(void)
{
	struct timespec step = {0, 100 * 1000000L};

	for (int i = 0; i < 100; i++, nanosleep(&step, NULL)) {
		struct amqp_connection_info info;
		char *url = strdup(it_env("DIALER_AMQP_URL"));
		amqp_connection_state_t c = amqp_new_connection();
		amqp_socket_t *sock = amqp_tcp_socket_new(c);
		bool ok = false;

		assert_int_equal(amqp_parse_url(url, &info), AMQP_STATUS_OK);
		if (amqp_socket_open(sock, info.host, info.port) == AMQP_STATUS_OK &&
		    amqp_login(c, info.vhost, 0, 131072, 0, AMQP_SASL_METHOD_PLAIN, info.user, info.password)
				    .reply_type == AMQP_RESPONSE_NORMAL) {
			amqp_channel_open(c, 1);
			if (amqp_get_rpc_reply(c).reply_type == AMQP_RESPONSE_NORMAL) {
				amqp_confirm_select(c, 1);
				ok = amqp_get_rpc_reply(c).reply_type == AMQP_RESPONSE_NORMAL;
			}
		}
		free(url);
		if (ok)
			return c;
		amqp_destroy_connection(c);
	}
	fail_msg("cannot connect to the broker at DIALER_AMQP_URL");
	return NULL;
}

/* Ready messages in the dead-letter queue now. */
static long dlq_depth(void)
{
	amqp_queue_declare_ok_t *ok =
		amqp_queue_declare(mq, 1, amqp_cstring_bytes(DLQ), 1, 0, 0, 0, amqp_empty_table);

	assert_non_null(ok);
	return (long)ok->message_count;
}

static void exec_params(const char *sql, int n, const char *const *p, char *out, size_t outlen)
{
	PGresult *r = PQexecParams(it_db(), sql, n, NULL, p, NULL, NULL, 0);

	if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK)
		fail_msg("%s: %s", sql, PQresultErrorMessage(r));
	if (out != NULL)
		snprintf(out, outlen, "%s", PQgetvalue(r, 0, 0));
	PQclear(r);
}

/* A campaign of status with n QUEUED calls to fresh numbers ending in 1,
 * their QUEUED attempts and the dial jobs the scheduler would send. */
static void camp_new(struct camp *c, const char *status, int n)
{
	char total[8];

	memset(c, 0, sizeof(*c));
	snprintf(c->id, sizeof(c->id), "camp_itdlq%d%08lx", (int)getpid() % 100000, (unsigned long)random());
	snprintf(total, sizeof(total), "%d", n);
	{
		const char *p[] = {c->id, org, status, flow, aud, total};

		exec_params("INSERT INTO campaigns (id, organization_id, name, status, flow_id, audience_id,"
			    " started_at, snapshot_done, total, queued)"
			    " VALUES ($1, $2, 'it dlq', $3, $4, $5, now(), true, $6::int, $6::int)",
			    6, p, NULL, 0);
	}
	for (int i = 0; i < n; i++) {
		char call_id[24], contact[32], cb[512], mid[64];

		it_phone(c->phone[i], 1);
		snprintf(contact, sizeof(contact), "ct_it%d", i);
		snprintf(c->att[i], sizeof(c->att[i]), "att_%s_%d", c->id + 5, i);
		{
			const char *p[] = {c->id, contact, c->phone[i]};

			exec_params("INSERT INTO calls (campaign_id, contact_id, phone_number, status, attempts)"
				    " VALUES ($1, $2, $3, 'QUEUED', 1) RETURNING id",
				    3, p, call_id, sizeof(call_id));
		}
		{
			const char *p[] = {c->att[i], call_id, c->id, c->phone[i]};

			exec_params("INSERT INTO call_attempts (id, call_id, campaign_id, attempt_no, to_number)"
				    " VALUES ($1, $2, $3, 1, $4)",
				    4, p, NULL, 0);
		}
		snprintf(cb, sizeof(cb), "%s/v1/carrier/status?attemptId=%s", it_env("DIALER_API_URL"), c->att[i]);
		snprintf(mid, sizeof(mid), "msg_%s", c->att[i]);
		c->job[i] = json_pack("{s:s, s:s, s:s, s:I, s:s, s:s, s:s, s:s, s:s, s:s, s:i, s:i}", "type", "dial",
				      "messageId", mid, "attemptId", c->att[i], "callId", (json_int_t)atoll(call_id),
				      "campaignId", c->id, "organizationId", org, "to", c->phone[i], "from",
				      "+15005550006", "voiceUrl", "http://127.0.0.1:9/voice.xml", "statusCallback", cb,
				      "timeLimitSec", 30, "ringTimeoutSec", 10);
		assert_non_null(c->job[i]);
	}
}

static void camp_free(struct camp *c)
{
	for (int i = 0; i < NCALLS; i++)
		json_decref(c->job[i]);
	memset(c, 0, sizeof(*c));
}

static amqp_table_entry_t entry(const char *key, amqp_field_value_t v)
{
	amqp_table_entry_t e;

	e.key = amqp_cstring_bytes(key);
	e.value = v;
	return e;
}

static amqp_field_value_t val_str(const char *s)
{
	amqp_field_value_t v;

	v.kind = AMQP_FIELD_KIND_UTF8;
	v.value.bytes = amqp_cstring_bytes(s);
	return v;
}

/* Publishes body to exchange/key with the given properties and waits for the
 * broker's ack (an unroutable message fails the test). */
static void publish(const char *exchange, const char *key, amqp_basic_properties_t *props, const char *body)
{
	amqp_frame_t f;

	assert_int_equal(amqp_basic_publish(mq, 1, amqp_cstring_bytes(exchange), amqp_cstring_bytes(key), 1, 0, props,
					    amqp_cstring_bytes(body)),
			 AMQP_STATUS_OK);
	assert_int_equal(amqp_simple_wait_frame(mq, &f), AMQP_STATUS_OK);
	assert_int_equal(f.frame_type, AMQP_FRAME_METHOD);
	if (f.payload.method.id != AMQP_BASIC_ACK_METHOD)
		fail_msg("publish to %s was not acked (method 0x%08x)", exchange, f.payload.method.id);
}

/* Dead-letters job as RabbitMQ does when dialer.dial-jobs gives up on it:
 * through the dead-letter exchange, properties kept, an x-death entry added. */
static void dead_letter(json_t *job, const char *reason, int age_s)
{
	char *text = json_dumps(job, JSON_COMPACT);
	amqp_field_value_t rk = val_str("dial"), death_v, arr_v;
	amqp_table_entry_t death[6], hdr[1];
	amqp_basic_properties_t props;

	death[0] = entry("count", (amqp_field_value_t){.kind = AMQP_FIELD_KIND_I64, .value.i64 = 5});
	death[1] = entry("reason", val_str(reason));
	death[2] = entry("queue", val_str("dialer.dial-jobs"));
	death[3] = entry("time", (amqp_field_value_t){.kind = AMQP_FIELD_KIND_TIMESTAMP,
						      .value.u64 = (uint64_t)(time(NULL) - age_s)});
	death[4] = entry("exchange", val_str("dialer.jobs"));
	arr_v.kind = AMQP_FIELD_KIND_ARRAY;
	arr_v.value.array.num_entries = 1;
	arr_v.value.array.entries = &rk;
	death[5] = entry("routing-keys", arr_v);
	death_v.kind = AMQP_FIELD_KIND_TABLE;
	death_v.value.table.num_entries = 6;
	death_v.value.table.entries = death;
	arr_v.value.array.entries = &death_v;
	hdr[0] = entry("x-death", arr_v);
	memset(&props, 0, sizeof(props));
	props._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_MESSAGE_ID_FLAG |
		       AMQP_BASIC_TYPE_FLAG | AMQP_BASIC_HEADERS_FLAG | AMQP_BASIC_TIMESTAMP_FLAG;
	props.content_type = amqp_cstring_bytes("application/json");
	props.delivery_mode = AMQP_DELIVERY_PERSISTENT;
	props.message_id = amqp_cstring_bytes(json_string_value(json_object_get(job, "messageId")));
	props.type = amqp_cstring_bytes("dial");
	props.timestamp = (uint64_t)(time(NULL) - age_s - 30);
	props.headers.num_entries = 1;
	props.headers.entries = hdr;
	publish("dialer.dead-letter", "dial", &props, text);
	free(text);
}

/* A's and B's jobs, interleaved; B3 was rejected two hours ago. */
static void dead_letter_all(void)
{
	for (int i = 0; i < NCALLS; i++) {
		dead_letter(A.job[i], "delivery_limit", 60);
		if (i == NCALLS - 1)
			dead_letter(B.job[i], "rejected", 7200);
		else
			dead_letter(B.job[i], "delivery_limit", 60);
	}
}

static int setup(void **state)
{
	char tag[32];

	(void)state;
	srandom((unsigned)getpid() ^ (unsigned)time(NULL));
	mq = mq_open();
	snprintf(tag, sizeof(tag), "itdlq%d%06lx", (int)getpid() % 100000, (unsigned long)random() % 0xffffff);
	snprintf(org, sizeof(org), "org_%s", tag);
	snprintf(flow, sizeof(flow), "flow_%s", tag);
	snprintf(aud, sizeof(aud), "aud_%s", tag);
	{
		const char *p[] = {org};

		exec_params("INSERT INTO organizations (id, name, quota_minutes) VALUES ($1, 'it dlq', 1000)", 1, p,
			    NULL, 0);
	}
	{
		const char *p[] = {flow, org};

		exec_params("INSERT INTO flows (id, organization_id, name, voice_url)"
			    " VALUES ($1, $2, 'it flow', 'http://127.0.0.1:9/voice.xml')",
			    2, p, NULL, 0);
	}
	{
		const char *p[] = {aud, org};

		exec_params("INSERT INTO audiences (id, organization_id, name) VALUES ($1, $2, 'it audience')", 2, p,
			    NULL, 0);
	}
	camp_new(&A, "IN_PROGRESS", NCALLS);
	camp_new(&B, "IN_PROGRESS", NCALLS);
	/* Every result, for the sync job below. */
	snprintf(results_q, sizeof(results_q), "it.dlq.results.%d", (int)getpid());
	amqp_queue_declare(mq, 1, amqp_cstring_bytes(results_q), 0, 1, 0, 0, amqp_empty_table);
	assert_int_equal(amqp_get_rpc_reply(mq).reply_type, AMQP_RESPONSE_NORMAL);
	amqp_queue_bind(mq, 1, amqp_cstring_bytes(results_q), amqp_cstring_bytes("dialer.jobs"),
			amqp_cstring_bytes("result"), amqp_empty_table);
	assert_int_equal(amqp_get_rpc_reply(mq).reply_type, AMQP_RESPONSE_NORMAL);
	dead_letter_all();
	return 0;
}

static int teardown(void **state)
{
	int code;

	(void)state;
	/* Leaves no dead letter of this suite behind, whatever failed. */
	free(it_ctl(&code, "dlq", "purge", "--campaign", A.id, NULL));
	free(it_ctl(&code, "dlq", "purge", "--campaign", B.id, NULL));
	if (mq != NULL) {
		amqp_queue_delete(mq, 1, amqp_cstring_bytes(results_q), 0, 0);
		amqp_channel_close(mq, 1, AMQP_REPLY_SUCCESS);
		amqp_connection_close(mq, AMQP_REPLY_SUCCESS);
		amqp_destroy_connection(mq);
	}
	camp_free(&A);
	camp_free(&B);
	return 0;
}

/* Runs dialerctl with args (ending in NULL), expects exit code want and
 * returns its stdout as an array of JSON values, one a line (owned); the
 * last is the summary. */
static json_t *ctl_lines(int want, ...)
{
	const char *argv[16];
	int n = 0, code;
	char *out, *line, *save = NULL;
	json_t *lines = json_array();
	va_list ap;

	va_start(ap, want);
	while (n < 15 && (argv[n] = va_arg(ap, const char *)) != NULL)
		n++;
	va_end(ap);
	for (int i = n; i < 16; i++)
		argv[i] = NULL;
	out = it_ctl(&code, argv[0], argv[1], argv[2], argv[3], argv[4], argv[5], argv[6], argv[7], argv[8],
		     argv[9], argv[10], argv[11], argv[12], argv[13], argv[14], NULL);
	if (code != want)
		fail_msg("dialerctl %s %s %s %s: exit %d, expected %d; stdout: %s", argv[0], argv[1],
			 argv[2] ? argv[2] : "", argv[3] ? argv[3] : "", code, want, out);
	for (line = strtok_r(out, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		json_t *j = json_loads(line, 0, NULL);

		if (!json_is_object(j))
			fail_msg("dialerctl printed a line that is not a JSON object: %s", line);
		json_array_append_new(lines, j);
	}
	free(out);
	return lines;
}

static json_t *summary(json_t *lines)
{
	json_t *s = json_array_get(lines, json_array_size(lines) - 1);

	if (s == NULL || json_object_get(s, "scanned") == NULL)
		fail_msg("no summary line");
	return s;
}

static long long num(json_t *obj, const char *key)
{
	json_t *v = json_object_get(obj, key);

	if (!json_is_integer(v))
		fail_msg("%s is not an integer in %s", key, json_dumps(obj, JSON_COMPACT));
	return json_integer_value(v);
}

/* The attemptIds of the message lines (not the summary), in order, joined by spaces. */
static void attempts_of(json_t *lines, char *out, size_t len)
{
	size_t used = 0;

	out[0] = '\0';
	for (size_t i = 0; i + 1 < json_array_size(lines); i++) {
		const char *a = json_string_value(json_object_get(json_array_get(lines, i), "attemptId"));

		used += (size_t)snprintf(out + used, len - used, "%s%s", used ? " " : "", a ? a : "?");
		assert_true(used < len);
	}
}

/* The attemptIds of c's jobs in order, joined by spaces (first n). */
static void expected_attempts(const struct camp *c, int n, char *out, size_t len)
{
	size_t used = 0;

	out[0] = '\0';
	for (int i = 0; i < n; i++)
		used += (size_t)snprintf(out + used, len - used, "%s%s", used ? " " : "", c->att[i]);
}

/* How many calls the simulator ever created to phone. */
static int sim_calls_to(const char *phone)
{
	char url[512];
	struct it_resp *r;
	json_t *calls, *c;
	size_t i;
	int n = 0;

	snprintf(url, sizeof(url), "%s/_sim/calls", it_env("DIALER_SIM_URL"));
	r = it_call_url("GET", url);
	calls = json_object_get(r->json, "calls");
	if (r->status != 200 || !json_is_array(calls))
		fail_msg("GET /_sim/calls: %ld %.200s", r->status, r->body);
	json_array_foreach(calls, i, c) {
		const char *to = json_string_value(json_object_get(c, "to"));

		n += to != NULL && !strcmp(to, phone);
	}
	it_resp_free(r);
	return n;
}

static int all_dialed_once(void *arg)
{
	const struct camp *c = arg;

	for (int i = 0; i < NCALLS; i++)
		if (sim_calls_to(c->phone[i]) != 1)
			return 0;
	return 1;
}

/* Takes results off the test queue until one for att arrives (or times out). */
static void wait_result_for(const char *att)
{
	struct timespec step = {0, 20 * 1000000L};

	for (int waited = 0; waited < DIAL_WAIT_MS; waited += 20) {
		amqp_rpc_reply_t rr;
		amqp_message_t m;
		bool found;

		amqp_maybe_release_buffers(mq);
		rr = amqp_basic_get(mq, 1, amqp_cstring_bytes(results_q), 1);
		assert_int_equal(rr.reply_type, AMQP_RESPONSE_NORMAL);
		if (rr.reply.id != AMQP_BASIC_GET_OK_METHOD) {
			nanosleep(&step, NULL);
			continue;
		}
		assert_int_equal(amqp_read_message(mq, 1, &m, 0).reply_type, AMQP_RESPONSE_NORMAL);
		found = memmem(m.body.bytes, m.body.len, att, strlen(att)) != NULL;
		amqp_destroy_message(&m);
		if (found)
			return;
	}
	fail_msg("no result for %s within %d ms (is dialer-worker running?)", att, DIAL_WAIT_MS);
}

/* A job of a paused campaign published now and answered: the worker takes
 * jobs in order, so every job published before it has met the fence. */
static void sync_worker(void)
{
	struct camp p;
	char *text;
	amqp_basic_properties_t props;

	camp_new(&p, "PAUSED", 1);
	text = json_dumps(p.job[0], JSON_COMPACT);
	memset(&props, 0, sizeof(props));
	props._flags = AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_MESSAGE_ID_FLAG | AMQP_BASIC_TYPE_FLAG;
	props.delivery_mode = AMQP_DELIVERY_PERSISTENT;
	props.message_id = amqp_cstring_bytes(json_string_value(json_object_get(p.job[0], "messageId")));
	props.type = amqp_cstring_bytes("dial");
	publish("dialer.jobs", "dial", &props, text);
	free(text);
	wait_result_for(p.att[0]);
	camp_free(&p);
}

static const char *attempt_status(const char *att)
{
	static char buf[32];
	const char *p[] = {att};

	exec_params("SELECT status FROM call_attempts WHERE id = $1", 1, p, buf, sizeof(buf));
	return buf;
}

static void test_list(void **state)
{
	char got[512], want[512];
	long depth = dlq_depth();
	json_t *lines, *s, *first;

	(void)state;
	lines = ctl_lines(0, "dlq", "list", "--campaign", B.id, NULL);
	assert_int_equal(json_array_size(lines), NCALLS + 1);
	/* One line per message, in queue order, with every field. */
	attempts_of(lines, got, sizeof(got));
	expected_attempts(&B, NCALLS, want, sizeof(want));
	assert_string_equal(got, want);
	first = json_array_get(lines, 0);
	assert_int_equal(json_object_size(first), 7);
	assert_string_equal(json_string_value(json_object_get(first, "messageId")),
			    json_string_value(json_object_get(B.job[0], "messageId")));
	assert_string_equal(json_string_value(json_object_get(first, "type")), "dial");
	assert_string_equal(json_string_value(json_object_get(first, "campaignId")), B.id);
	assert_string_equal(json_string_value(json_object_get(first, "reason")), "delivery_limit");
	assert_int_equal(num(first, "count"), 5);
	assert_true(num(first, "age") >= 59 && num(first, "age") < 600);
	assert_string_equal(json_string_value(json_object_get(json_array_get(lines, 2), "reason")), "rejected");
	assert_true(num(json_array_get(lines, 2), "age") >= 7199);
	s = summary(lines);
	assert_true(num(s, "scanned") >= 2 * NCALLS);
	assert_int_equal(num(s, "matched"), NCALLS);
	assert_int_equal(num(s, "listed"), NCALLS);
	assert_int_equal(num(s, "skipped"), 0);
	json_decref(lines);

	/* --max: the first N, the rest counted as skipped. */
	lines = ctl_lines(0, "dlq", "list", "--campaign", B.id, "--max", "2", NULL);
	attempts_of(lines, got, sizeof(got));
	expected_attempts(&B, 2, want, sizeof(want));
	assert_string_equal(got, want);
	assert_int_equal(num(summary(lines), "listed"), 2);
	assert_int_equal(num(summary(lines), "skipped"), 1);
	json_decref(lines);

	/* Filters by x-death reason and age. */
	lines = ctl_lines(0, "dlq", "list", "--campaign", B.id, "--reason", "rejected", NULL);
	attempts_of(lines, got, sizeof(got));
	assert_string_equal(got, B.att[2]);
	json_decref(lines);
	lines = ctl_lines(0, "dlq", "list", "--campaign", B.id, "--older-than", "1h", NULL);
	attempts_of(lines, got, sizeof(got));
	assert_string_equal(got, B.att[2]);
	json_decref(lines);
	lines = ctl_lines(0, "dlq", "list", "--campaign", A.id, "--reason", "delivery_limit", "--older-than", "30s",
			  NULL);
	assert_int_equal(num(summary(lines), "matched"), NCALLS);
	json_decref(lines);

	/* Listing moved nothing: same depth, same order. */
	assert_int_equal(dlq_depth(), depth);
	lines = ctl_lines(0, "dlq", "list", "--campaign", B.id, NULL);
	attempts_of(lines, got, sizeof(got));
	expected_attempts(&B, NCALLS, want, sizeof(want));
	assert_string_equal(got, want);
	json_decref(lines);
}

static void test_bad_usage(void **state)
{
	long depth = dlq_depth();
	int code;

	(void)state;
	/* A misspelt filter must not mean "everything". */
	free(it_ctl(&code, "dlq", "replay", "--campain", A.id, NULL));
	assert_int_equal(code, 2);
	free(it_ctl(&code, "dlq", "purge", NULL));
	assert_int_equal(code, 2);
	free(it_ctl(&code, "dlq", "purge", "--max", "1", NULL));
	assert_int_equal(code, 2);
	free(it_ctl(&code, "dlq", "list", "--older-than", "10 minutes", NULL));
	assert_int_equal(code, 2);
	free(it_ctl(&code, "dlq", "replay", "--rate", "0", NULL));
	assert_int_equal(code, 2);
	free(it_ctl(&code, "dlq", "nuke", NULL));
	assert_int_equal(code, 2);
	assert_int_equal(dlq_depth(), depth);
}

static void test_replay_dry_run(void **state)
{
	long depth = dlq_depth();
	json_t *lines, *s, *sample, *m;
	size_t i;

	(void)state;
	lines = ctl_lines(0, "dlq", "replay", "--campaign", A.id, "--dry-run", NULL);
	assert_int_equal(json_array_size(lines), 1);
	s = summary(lines);
	assert_int_equal(num(s, "matched"), NCALLS);
	assert_int_equal(num(s, "replayed"), 0);
	assert_int_equal(num(s, "wouldReplay"), NCALLS);
	assert_true(json_is_true(json_object_get(s, "dryRun")));
	sample = json_object_get(s, "sample");
	assert_int_equal(json_array_size(sample), NCALLS);
	json_array_foreach(sample, i, m) {
		assert_string_equal(json_string_value(json_object_get(m, "campaignId")), A.id);
	}
	json_decref(lines);
	/* Nothing changed: same depth, nothing dialed or fenced. */
	assert_int_equal(dlq_depth(), depth);
	for (int k = 0; k < NCALLS; k++) {
		assert_int_equal(sim_calls_to(A.phone[k]), 0);
		assert_string_equal(attempt_status(A.att[k]), "QUEUED");
	}
}

/* The worker's count of replayed jobs it took (its /metrics). */
static long long worker_replayed(void)
{
	return it_metric("DIALER_WORKER_HEALTH_URL", "dialer_worker_jobs_replayed_total");
}

static void test_replay(void **state)
{
	char got[512], want[512];
	long depth = dlq_depth();
	json_t *lines, *s;

	long long replayed_before = worker_replayed();

	(void)state;
	lines = ctl_lines(0, "dlq", "replay", "--campaign", A.id, "--rate", "50", NULL);
	s = summary(lines);
	assert_int_equal(num(s, "matched"), NCALLS);
	assert_int_equal(num(s, "replayed"), NCALLS);
	assert_int_equal(num(s, "skipped"), 0);
	assert_int_equal(num(s, "scanned"), depth);
	json_decref(lines);
	/* A's jobs left the dead letters; the worker dials each contact once. */
	assert_int_equal(dlq_depth(), depth - NCALLS);
	if (!it_poll(all_dialed_once, &A, DIAL_WAIT_MS))
		fail_msg("replayed jobs of campaign A were not each dialed once");
	for (int k = 0; k < NCALLS; k++)
		assert_string_not_equal(attempt_status(A.att[k]), "QUEUED");
	/* The worker counted them as replays. */
	assert_int_equal(worker_replayed() - replayed_before, NCALLS);
	lines = ctl_lines(0, "dlq", "list", "--campaign", A.id, NULL);
	assert_int_equal(num(summary(lines), "matched"), 0);
	json_decref(lines);
	/* B's stay, in their order, undialed. */
	lines = ctl_lines(0, "dlq", "list", "--campaign", B.id, NULL);
	attempts_of(lines, got, sizeof(got));
	expected_attempts(&B, NCALLS, want, sizeof(want));
	assert_string_equal(got, want);
	json_decref(lines);
	for (int k = 0; k < NCALLS; k++) {
		assert_int_equal(sim_calls_to(B.phone[k]), 0);
		assert_string_equal(attempt_status(B.att[k]), "QUEUED");
	}
}

static void test_replay_again_is_fenced(void **state)
{
	char got[512], want[512];
	json_t *lines;
	long depth;

	(void)state;
	/* The same A jobs dead-lettered again (a duplicate, or a second incident). */
	for (int k = 0; k < NCALLS; k++)
		dead_letter(A.job[k], "delivery_limit", 5);
	depth = dlq_depth();
	lines = ctl_lines(0, "dlq", "replay", "--campaign", A.id, NULL);
	assert_int_equal(num(summary(lines), "replayed"), NCALLS);
	json_decref(lines);
	assert_int_equal(dlq_depth(), depth - NCALLS);
	sync_worker();
	/* The fence refused every copy: still one call per contact. */
	for (int k = 0; k < NCALLS; k++)
		assert_int_equal(sim_calls_to(A.phone[k]), 1);
	/* B's jobs are still there, in order, after a second rotation. */
	lines = ctl_lines(0, "dlq", "list", "--campaign", B.id, NULL);
	attempts_of(lines, got, sizeof(got));
	expected_attempts(&B, NCALLS, want, sizeof(want));
	assert_string_equal(got, want);
	json_decref(lines);
}

static void test_purge(void **state)
{
	long depth = dlq_depth();
	json_t *lines, *s;

	(void)state;
	lines = ctl_lines(0, "dlq", "purge", "--campaign", B.id, "--dry-run", NULL);
	s = summary(lines);
	assert_int_equal(num(s, "matched"), NCALLS);
	assert_int_equal(num(s, "purged"), 0);
	assert_int_equal(num(s, "wouldPurge"), NCALLS);
	json_decref(lines);
	assert_int_equal(dlq_depth(), depth);

	lines = ctl_lines(0, "dlq", "purge", "--campaign", B.id, "--max", "1", NULL);
	assert_int_equal(num(summary(lines), "purged"), 1);
	assert_int_equal(num(summary(lines), "skipped"), NCALLS - 1);
	json_decref(lines);
	lines = ctl_lines(0, "dlq", "purge", "--campaign", B.id, NULL);
	assert_int_equal(num(summary(lines), "purged"), NCALLS - 1);
	json_decref(lines);
	assert_int_equal(dlq_depth(), depth - NCALLS);
	lines = ctl_lines(0, "dlq", "list", "--campaign", B.id, NULL);
	assert_int_equal(num(summary(lines), "matched"), 0);
	json_decref(lines);
	for (int k = 0; k < NCALLS; k++)
		assert_int_equal(sim_calls_to(B.phone[k]), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_list),
		cmocka_unit_test(test_bad_usage),
		cmocka_unit_test(test_replay_dry_run),
		cmocka_unit_test(test_replay),
		cmocka_unit_test(test_replay_again_is_fenced),
		cmocka_unit_test(test_purge),
	};

	return cmocka_run_group_tests_name("dialerctl dlq", tests, setup, teardown);
}
