/* Integration tests of dialer-worker, driven directly: attempts are inserted
 * straight into Postgres, jobs published raw to dialer.jobs, results read
 * from a test queue bound to the results routing key (and dead letters from
 * one bound to the dead-letter exchange). The carrier is the simulator,
 * checked through GET /_sim/calls. Covers: accepted and invalid-number
 * dials, a job delivered twice dialing once, jobs of paused and cancelled
 * campaigns released, a job past its dial deadline released, poison jobs
 * dead-lettered, reconcile, hang-up (of a live call and of one that had
 * ended), a reconcile that found no call releasing its attempt (and the
 * release leaving the campaign's row to the fence), and the worker's
 * readiness and metrics. */
#include <amqp.h>
#include <amqp_tcp_socket.h>
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "dl_amqp.h"
#include "dl_util.h"
#include "it_lib.h"

/* How long a result may take: a create under sim latency, plus resends. */
#define RESULT_WAIT_MS 20000

static char results_q[64], dead_q[64];
static amqp_connection_state_t mq;
/* Results read off the queue, by attemptId: arrays of messages (owned). */
static json_t *seen;

/* Opens a connection and channel 1 to the test broker; NULL on failure. */
static amqp_connection_state_t mq_try_open(void)
{
	struct amqp_connection_info info;
	char *url = strdup(it_env("DIALER_AMQP_URL"));
	amqp_connection_state_t conn = amqp_new_connection();
	amqp_socket_t *sock = amqp_tcp_socket_new(conn);
	bool ok = false;

	assert_int_equal(amqp_parse_url(url, &info), AMQP_STATUS_OK);
	if (amqp_socket_open(sock, info.host, info.port) == AMQP_STATUS_OK &&
	    amqp_login(conn, info.vhost, 0, 131072, 0, AMQP_SASL_METHOD_PLAIN, info.user, info.password).reply_type ==
		    AMQP_RESPONSE_NORMAL) {
		amqp_channel_open(conn, 1);
		ok = amqp_get_rpc_reply(conn).reply_type == AMQP_RESPONSE_NORMAL;
	}
	free(url);
	if (!ok) {
		amqp_destroy_connection(conn);
		conn = NULL;
	}
	return conn;
}

/* Opens a connection to the test broker, polling up to 10 s for it (an
 * earlier suite may have just restarted it). */
static amqp_connection_state_t mq_open(void)
{
	struct timespec step = {0, 100 * 1000000L};
	amqp_connection_state_t conn;

	for (int i = 0; (conn = mq_try_open()) == NULL; i++) {
		if (i == 100)
			fail_msg("cannot connect to the broker at DIALER_AMQP_URL");
		nanosleep(&step, NULL);
	}
	return conn;
}

static void mq_close(amqp_connection_state_t conn)
{
	amqp_channel_close(conn, 1, AMQP_REPLY_SUCCESS);
	amqp_connection_close(conn, AMQP_REPLY_SUCCESS);
	amqp_destroy_connection(conn);
}

/* Declares a durable queue of this test bound to exchange with key. */
static void bind_queue(const char *queue, const char *exchange, const char *key)
{
	amqp_queue_declare(mq, 1, amqp_cstring_bytes(queue), 0, 1, 0, 0, amqp_empty_table);
	assert_int_equal(amqp_get_rpc_reply(mq).reply_type, AMQP_RESPONSE_NORMAL);
	amqp_queue_bind(mq, 1, amqp_cstring_bytes(queue), amqp_cstring_bytes(exchange), amqp_cstring_bytes(key),
			amqp_empty_table);
	assert_int_equal(amqp_get_rpc_reply(mq).reply_type, AMQP_RESPONSE_NORMAL);
}

/* The test queues exist before anything is published, so they get every result. */
static int setup(void **state)
{
	(void)state;
	snprintf(results_q, sizeof(results_q), "it.worker.results.%d", (int)getpid());
	snprintf(dead_q, sizeof(dead_q), "it.worker.dead.%d", (int)getpid());
	mq = mq_open();
	bind_queue(results_q, "dialer.jobs", "result");
	bind_queue(dead_q, "dialer.dead-letter", "");
	seen = json_object();
	srandom((unsigned)getpid());
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	if (mq == NULL)
		return 0;
	amqp_queue_delete(mq, 1, amqp_cstring_bytes(results_q), 0, 0);
	amqp_queue_delete(mq, 1, amqp_cstring_bytes(dead_q), 0, 0);
	mq_close(mq);
	json_decref(seen);
	return 0;
}

/* Takes one message off queue (acked on the way); returns its body (caller
 * frees) and writes its message id, or NULL when the queue is empty. */
static char *get_one(const char *queue, char *mid, size_t midlen)
{
	amqp_rpc_reply_t rr;
	amqp_message_t m;
	char *body;

	amqp_maybe_release_buffers(mq);
	rr = amqp_basic_get(mq, 1, amqp_cstring_bytes(queue), 1);
	assert_int_equal(rr.reply_type, AMQP_RESPONSE_NORMAL);
	if (rr.reply.id != AMQP_BASIC_GET_OK_METHOD)
		return NULL;
	assert_int_equal(amqp_read_message(mq, 1, &m, 0).reply_type, AMQP_RESPONSE_NORMAL);
	body = strndup(m.body.bytes, m.body.len);
	if (mid != NULL && (m.properties._flags & AMQP_BASIC_MESSAGE_ID_FLAG))
		snprintf(mid, midlen, "%.*s", (int)m.properties.message_id.len,
			 (const char *)m.properties.message_id.bytes);
	else if (mid != NULL)
		mid[0] = '\0';
	amqp_destroy_message(&m);
	return body;
}

/* Moves every result now in the test queue into `seen`. */
static void pull_results(void)
{
	char *body;

	while ((body = get_one(results_q, NULL, 0)) != NULL) {
		json_t *j = json_loads(body, 0, NULL), *list, *m;
		size_t i;

		if (j == NULL)
			fail_msg("a result is not JSON: %s", body);
		assert_non_null(json_string_value(json_object_get(j, "messageId")));
		/* a job.results message: the results a worker had confirmed together */
		list = json_object_get(j, "results");
		if (strcmp(json_string_value(json_object_get(j, "type")), "job.results") != 0) {
			list = json_array();
			json_array_append(list, j);
		} else {
			json_incref(list);
			assert_true(json_array_size(list) >= 2 && json_array_size(list) <= DL_JOB_RESULTS_MAX);
		}
		json_array_foreach(list, i, m) {
			const char *att = json_string_value(json_object_get(m, "attemptId"));

			/* Every result names its message and attempt. */
			assert_non_null(json_string_value(json_object_get(m, "messageId")));
			assert_non_null(json_string_value(json_object_get(m, "type")));
			if (att != NULL) {
				if (json_object_get(seen, att) == NULL)
					json_object_set_new(seen, att, json_array());
				json_array_append(json_object_get(seen, att), m);
			}
		}
		json_decref(list);
		json_decref(j);
		free(body);
	}
}

/* The results seen so far for attempt att of type (NULL: any). */
static size_t count_results(const char *att, const char *type)
{
	json_t *arr = json_object_get(seen, att), *m;
	size_t i, n = 0;

	json_array_foreach(arr, i, m) {
		if (type == NULL || !strcmp(json_string_value(json_object_get(m, "type")), type))
			n++;
	}
	return n;
}

/* Waits for the first result of type for att; returns it (borrowed from `seen`). */
static json_t *wait_result(const char *att, const char *type)
{
	struct timespec step = {0, 20 * 1000000L};

	for (int waited = 0; waited <= RESULT_WAIT_MS; waited += 20) {
		json_t *arr, *m;
		size_t i;

		pull_results();
		arr = json_object_get(seen, att);
		json_array_foreach(arr, i, m) {
			if (!strcmp(json_string_value(json_object_get(m, "type")), type))
				return m;
		}
		nanosleep(&step, NULL);
	}
	fail_msg("no %s for %s within %d ms (is dialer-worker running?)", type, att, RESULT_WAIT_MS);
	return NULL;
}

static const char *field(json_t *m, const char *key)
{
	const char *v = json_string_value(json_object_get(m, key));

	if (v == NULL)
		fail_msg("result has no string %s: %s", key, json_dumps(m, JSON_COMPACT));
	return v;
}

/* Publishes body to dialer.jobs with routing key key, persistent, with confirms. */
static void publish_to(const char *key, const char *body, const char *mid, const char *type)
{
	amqp_connection_state_t c = mq_open();
	amqp_basic_properties_t props;
	amqp_frame_t f;

	amqp_confirm_select(c, 1);
	assert_int_equal(amqp_get_rpc_reply(c).reply_type, AMQP_RESPONSE_NORMAL);
	memset(&props, 0, sizeof(props));
	props._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_MESSAGE_ID_FLAG;
	props.content_type = amqp_cstring_bytes("application/json");
	props.delivery_mode = AMQP_DELIVERY_PERSISTENT;
	props.message_id = amqp_cstring_bytes(mid);
	if (type != NULL) {
		props._flags |= AMQP_BASIC_TYPE_FLAG;
		props.type = amqp_cstring_bytes(type);
	}
	assert_int_equal(amqp_basic_publish(c, 1, amqp_cstring_bytes("dialer.jobs"), amqp_cstring_bytes(key), 1,
					    0, &props, amqp_cstring_bytes(body)),
			 AMQP_STATUS_OK);
	/* The broker's ack: the job is queued. */
	assert_int_equal(amqp_simple_wait_frame(c, &f), AMQP_STATUS_OK);
	assert_int_equal(f.frame_type, AMQP_FRAME_METHOD);
	assert_int_equal(f.payload.method.id, AMQP_BASIC_ACK_METHOD);
	mq_close(c);
}

/* A job, as the scheduler's outbox relay publishes it. */
static void publish_job(const char *body, const char *mid, const char *type)
{
	publish_to("dial", body, mid, type);
}

/* One attempt in the database, as the scheduler leaves it after dispatch. */
struct fx {
	char org[48], flow[48], aud[48], camp[48], att[48];
	char call_id[24];
	char phone[20];
	json_t *job; /* the dial job (owned) */
};

static void exec_params(const char *sql, int n, const char *const *p)
{
	PGresult *r = PQexecParams(it_db(), sql, n, NULL, p, NULL, NULL, 0);

	if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK)
		fail_msg("%s: %s", sql, PQresultErrorMessage(r));
	PQclear(r);
}

/* The first column of the first row as text (into a static buffer). */
static const char *db_str(const char *sql, const char *param)
{
	static char buf[256];
	PGresult *r = PQexecParams(it_db(), sql, 1, NULL, &param, NULL, NULL, 0);

	if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1)
		fail_msg("%s: %s", sql, PQresultErrorMessage(r));
	snprintf(buf, sizeof(buf), "%s", PQgetisnull(r, 0, 0) ? "<null>" : PQgetvalue(r, 0, 0));
	PQclear(r);
	return buf;
}

/* A QUEUED call of f's campaign, for contact, to f's number, with its
 * QUEUED attempt att; its id goes to call_id. */
static void fx_queue_call(struct fx *f, const char *contact, const char *att, char call_id[24])
{
	const char *p[] = {f->camp, contact, f->phone};
	PGresult *r = PQexecParams(it_db(),
				   "INSERT INTO calls (campaign_id, contact_id, phone_number, status, attempts,"
				   " attempt_seq) VALUES ($1, $2, $3, 'QUEUED', 1, 1) RETURNING id",
				   3, NULL, p, NULL, NULL, 0);

	if (PQresultStatus(r) != PGRES_TUPLES_OK)
		fail_msg("insert call: %s", PQresultErrorMessage(r));
	snprintf(call_id, 24, "%s", PQgetvalue(r, 0, 0));
	PQclear(r);
	exec_params("INSERT INTO call_attempts (id, call_id, campaign_id, attempt_no, to_number)"
		    " VALUES ($1, $2, $3, 1, $4)",
		    4, (const char *const[]){att, call_id, f->camp, f->phone});
}

/* A campaign of status with one QUEUED call to a fresh number ending in
 * digits, its QUEUED attempt, and the dial job the scheduler would send. */
static void fx_new(struct fx *f, const char *status, const char *digits)
{
	char tag[32], cb[512], mid[64];
	size_t n;

	memset(f, 0, sizeof(*f));
	snprintf(tag, sizeof(tag), "itw%d%08lx", (int)getpid() % 100000, (unsigned long)random());
	snprintf(f->org, sizeof(f->org), "org_%s", tag);
	snprintf(f->flow, sizeof(f->flow), "flow_%s", tag);
	snprintf(f->aud, sizeof(f->aud), "aud_%s", tag);
	snprintf(f->camp, sizeof(f->camp), "camp_%s", tag);
	snprintf(f->att, sizeof(f->att), "att_%s", tag);
	it_phone(f->phone, digits[strlen(digits) - 1] - '0');
	n = strlen(f->phone);
	for (size_t i = 0; i + 1 < strlen(digits); i++)
		f->phone[n - strlen(digits) + i] = digits[i];
	{
		const char *p[] = {f->org};

		exec_params("INSERT INTO organizations (id, name, quota_minutes) VALUES ($1, 'it worker', 1000)", 1, p);
	}
	{
		const char *p[] = {f->flow, f->org};

		exec_params("INSERT INTO flows (id, organization_id, name, voice_url)"
			    " VALUES ($1, $2, 'it flow', 'http://127.0.0.1:9/voice.xml')",
			    2, p);
	}
	{
		const char *p[] = {f->aud, f->org};

		exec_params("INSERT INTO audiences (id, organization_id, name) VALUES ($1, $2, 'it audience')", 2, p);
	}
	{
		const char *p[] = {f->camp, f->org, status, f->flow, f->aud};

		exec_params("INSERT INTO campaigns (id, organization_id, name, status, flow_id, audience_id,"
			    " started_at, snapshot_done, total, queued)"
			    " VALUES ($1, $2, 'it worker', $3, $4, $5, now(), true, 1, 1)",
			    5, p);
	}
	fx_queue_call(f, "ct_it", f->att, f->call_id);
	snprintf(cb, sizeof(cb), "%s/v1/carrier/status?attemptId=%s", it_env("DIALER_API_URL"), f->att);
	snprintf(mid, sizeof(mid), "msg_%s", f->att);
	f->job = json_pack("{s:s, s:s, s:s, s:I, s:s, s:s, s:s, s:s, s:s, s:s, s:i, s:i}", "type", "dial",
			   "messageId", mid, "attemptId", f->att, "callId", (json_int_t)atoll(f->call_id),
			   "campaignId", f->camp, "organizationId", f->org, "to", f->phone, "from", "+15005550006",
			   "voiceUrl", "http://127.0.0.1:9/voice.xml", "statusCallback", cb, "timeLimitSec", 30,
			   "ringTimeoutSec", 10);
	assert_non_null(f->job);
}

static void fx_free(struct fx *f)
{
	json_decref(f->job);
	f->job = NULL;
}

/* Publishes f's dial job (as the scheduler's outbox relay would). */
static void fx_publish(struct fx *f)
{
	char *text = json_dumps(f->job, JSON_COMPACT);

	publish_job(text, json_string_value(json_object_get(f->job, "messageId")), "dial");
	free(text);
}

struct buf {
	char *p;
	size_t n;
};

static size_t on_data(char *ptr, size_t size, size_t nmemb, void *ud)
{
	struct buf *b = ud;
	size_t n = size * nmemb;
	char *np = realloc(b->p, b->n + n + 1);

	if (np == NULL)
		return 0;
	memcpy(np + b->n, ptr, n);
	b->n += n;
	np[b->n] = '\0';
	b->p = np;
	return n;
}

/* GETs url; returns the status and the body (caller frees) in *body. */
static long http_get(const char *url, char **body)
{
	CURL *h = curl_easy_init();
	struct buf b = {calloc(1, 1), 0};
	long status = 0;
	CURLcode rc;

	assert_non_null(h);
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_TIMEOUT, 10L);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
	rc = curl_easy_perform(h);
	if (rc != CURLE_OK)
		fail_msg("GET %s: %s", url, curl_easy_strerror(rc));
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
	curl_easy_cleanup(h);
	*body = b.p;
	return status;
}

/* How many calls the simulator ever created to phone. */
static int sim_calls_to(const char *phone)
{
	char url[512], *body;
	json_t *j, *calls, *c;
	size_t i;
	int n = 0;

	snprintf(url, sizeof(url), "%s/_sim/calls", it_env("DIALER_SIM_URL"));
	if (http_get(url, &body) != 200)
		fail_msg("GET /_sim/calls failed: %s", body);
	j = json_loads(body, 0, NULL);
	calls = json_object_get(j, "calls");
	if (!json_is_array(calls))
		fail_msg("GET /_sim/calls is not {\"calls\": [...]}: %.200s", body);
	json_array_foreach(calls, i, c) {
		const char *to = json_string_value(json_object_get(c, "to"));

		if (to != NULL && !strcmp(to, phone))
			n++;
	}
	json_decref(j);
	free(body);
	return n;
}

static bool is_call_sid(const char *s)
{
	if (s == NULL || strlen(s) != 34 || strncmp(s, "CA", 2) != 0)
		return false;
	for (const char *p = s + 2; *p; p++)
		if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
			return false;
	return true;
}

/* A job of a paused campaign, published and answered: every job published
 * before it has been taken and fenced by then (one queue, in order). */
static void sync_worker(void)
{
	struct fx s;

	fx_new(&s, "PAUSED", "1");
	fx_publish(&s);
	wait_result(s.att, "dial.result");
	fx_free(&s);
}

static void test_dial_accepted(void **state)
{
	struct fx f;
	json_t *r;

	(void)state;
	fx_new(&f, "IN_PROGRESS", "1");
	fx_publish(&f);
	r = wait_result(f.att, "dial.result");
	assert_string_equal(field(r, "outcome"), "accepted");
	if (!is_call_sid(field(r, "callSid")))
		fail_msg("callSid %s is not CA + 32 hex", field(r, "callSid"));
	/* Fenced by this worker (hostname:pid), before the carrier saw it. */
	assert_string_not_equal(db_str("SELECT status FROM call_attempts WHERE id = $1", f.att), "QUEUED");
	assert_non_null(strchr(db_str("SELECT worker FROM call_attempts WHERE id = $1", f.att), ':'));
	assert_string_equal(db_str("SELECT dialed_at IS NOT NULL FROM call_attempts WHERE id = $1", f.att), "t");
	assert_int_equal(sim_calls_to(f.phone), 1);
	fx_free(&f);
}

static void test_dial_invalid_number(void **state)
{
	struct fx f;
	json_t *r;

	(void)state;
	fx_new(&f, "IN_PROGRESS", "00");
	assert_string_equal(f.phone + strlen(f.phone) - 2, "00");
	fx_publish(&f);
	r = wait_result(f.att, "dial.result");
	assert_string_equal(field(r, "outcome"), "failed");
	assert_string_equal(field(r, "class"), "invalid-number");
	assert_non_null(strstr(field(r, "detail"), "21211"));
	assert_int_equal(sim_calls_to(f.phone), 0);
	fx_free(&f);
}

static void test_same_job_twice_dials_once(void **state)
{
	struct fx f;
	json_t *r;

	(void)state;
	fx_new(&f, "IN_PROGRESS", "2");
	fx_publish(&f);
	fx_publish(&f);
	r = wait_result(f.att, "dial.result");
	assert_string_equal(field(r, "outcome"), "accepted");
	sync_worker();
	pull_results();
	/* The copy found the fence taken: no second call, no second result. */
	assert_int_equal(sim_calls_to(f.phone), 1);
	assert_int_equal(count_results(f.att, "dial.result"), 1);
	assert_string_not_equal(db_str("SELECT status FROM call_attempts WHERE id = $1", f.att), "QUEUED");
	assert_int_equal(it_db_count("SELECT count(*) FROM call_attempts WHERE call_id = $1", f.call_id, NULL), 1);
	/* A third delivery, later (a replay from the dead letters), is refused too. */
	fx_publish(&f);
	sync_worker();
	pull_results();
	assert_int_equal(sim_calls_to(f.phone), 1);
	assert_int_equal(count_results(f.att, "dial.result"), 1);
	fx_free(&f);
}

static void test_paused_campaign_not_dialed(void **state)
{
	struct fx f;
	json_t *r;

	(void)state;
	fx_new(&f, "PAUSED", "3");
	fx_publish(&f);
	r = wait_result(f.att, "dial.result");
	assert_string_equal(field(r, "outcome"), "skipped");
	assert_string_equal(field(r, "reason"), "paused");
	assert_int_equal(sim_calls_to(f.phone), 0);
	/* The call is back to PENDING, its attempt never happened. */
	assert_string_equal(db_str("SELECT status FROM calls WHERE id = $1", f.call_id), "PENDING");
	assert_string_equal(db_str("SELECT attempts FROM calls WHERE id = $1", f.call_id), "0");
	assert_string_equal(db_str("SELECT status || '/' || outcome FROM call_attempts WHERE id = $1", f.att),
			    "ENDED/released");
	assert_string_equal(db_str("SELECT pending || '/' || queued FROM campaigns WHERE id = $1", f.camp), "1/0");
	fx_free(&f);
}

static void test_cancelled_campaign_not_dialed(void **state)
{
	struct fx f;
	json_t *r;

	(void)state;
	fx_new(&f, "CANCELLED", "4");
	fx_publish(&f);
	r = wait_result(f.att, "dial.result");
	assert_string_equal(field(r, "outcome"), "skipped");
	assert_string_equal(field(r, "reason"), "cancelled");
	assert_int_equal(sim_calls_to(f.phone), 0);
	assert_string_equal(db_str("SELECT status || '/' || outcome FROM calls WHERE id = $1", f.call_id),
			    "SKIPPED/cancelled");
	fx_free(&f);
}

/* Waits for a dead letter whose message id is mid. */
static int dead_lettered(void *arg)
{
	const char *want = arg;
	char mid[128], *body;
	int found = 0;

	while ((body = get_one(dead_q, mid, sizeof(mid))) != NULL) {
		if (!strcmp(mid, want))
			found = 1;
		free(body);
	}
	return found;
}

static void test_poison_jobs_dead_lettered(void **state)
{
	static const char *const bodies[] = {
		"{not json",
		"[1,2,3]",
		"{\"type\":\"dial\",\"attemptId\":\"att_x\",\"to\":\"12\",\"voiceUrl\":\"http://a/v\","
		"\"statusCallback\":\"http://a/s\",\"timeLimitSec\":30,\"ringTimeoutSec\":10}",
		"{\"type\":\"explode\",\"attemptId\":\"att_x\"}",
	};

	(void)state;
	for (size_t i = 0; i < DL_ARRAY_LEN(bodies); i++) {
		char mid[64];

		snprintf(mid, sizeof(mid), "it-poison-%d-%zu-%ld", (int)getpid(), i, random());
		publish_job(bodies[i], mid, "dial");
		if (!it_poll(dead_lettered, mid, RESULT_WAIT_MS))
			fail_msg("poison job %zu (%s) did not reach the dead letters", i, bodies[i]);
	}
	/* The worker still works after them. */
	sync_worker();
}

/* A dial accepted; returns its call sid (static). */
static const char *accepted_call(struct fx *f, const char *digit)
{
	static char sid[64];
	json_t *r;

	fx_new(f, "IN_PROGRESS", digit);
	fx_publish(f);
	r = wait_result(f->att, "dial.result");
	assert_string_equal(field(r, "outcome"), "accepted");
	snprintf(sid, sizeof(sid), "%s", field(r, "callSid"));
	return sid;
}

static void test_reconcile(void **state)
{
	char since[DL_TIME_MAX], mid[64], *text, sid[64];
	struct fx f, g;
	json_t *r, *job;

	(void)state;
	dl_time_format(dl_now_ms() - 2000, since);
	snprintf(sid, sizeof(sid), "%s", accepted_call(&f, "5"));
	/* The call to that number since then is found... */
	snprintf(mid, sizeof(mid), "msg_rec_%s", f.att);
	job = json_pack("{s:s, s:s, s:s, s:s, s:s}", "type", "reconcile", "messageId", mid, "attemptId", f.att, "to",
			f.phone, "since", since);
	text = json_dumps(job, JSON_COMPACT);
	publish_job(text, mid, "reconcile");
	free(text);
	json_decref(job);
	r = wait_result(f.att, "reconcile.result");
	assert_true(json_is_true(json_object_get(r, "found")));
	assert_string_equal(field(r, "callSid"), sid);
	assert_non_null(json_string_value(json_object_get(r, "callStatus")));

	/* ...and a number never called has none. */
	fx_new(&g, "IN_PROGRESS", "5");
	snprintf(mid, sizeof(mid), "msg_rec_%s", g.att);
	job = json_pack("{s:s, s:s, s:s, s:s, s:s}", "type", "reconcile", "messageId", mid, "attemptId", g.att, "to",
			g.phone, "since", since);
	text = json_dumps(job, JSON_COMPACT);
	publish_job(text, mid, "reconcile");
	free(text);
	json_decref(job);
	r = wait_result(g.att, "reconcile.result");
	assert_true(json_is_false(json_object_get(r, "found")));
	assert_true(json_is_null(json_object_get(r, "callSid")));
	assert_int_equal(sim_calls_to(g.phone), 0);
	fx_free(&f);
	fx_free(&g);
}

/* The carrier's status of its newest call to phone (into a static buffer). */
static const char *sim_status(const char *phone)
{
	static char st[32];
	char url[512], *body;
	json_t *j, *calls, *c;
	size_t i;

	st[0] = '\0';
	snprintf(url, sizeof(url), "%s/_sim/calls", it_env("DIALER_SIM_URL"));
	if (http_get(url, &body) != 200)
		fail_msg("GET /_sim/calls failed: %s", body);
	j = json_loads(body, 0, NULL);
	calls = json_object_get(j, "calls");
	json_array_foreach(calls, i, c) {
		const char *to = json_string_value(json_object_get(c, "to"));
		const char *status = json_string_value(json_object_get(c, "status"));

		if (to != NULL && status != NULL && !strcmp(to, phone))
			snprintf(st, sizeof(st), "%s", status);
	}
	json_decref(j);
	free(body);
	return st;
}

/* Publishes a hang-up job for f's call sid and returns its result. */
static json_t *hang_up(struct fx *f, const char *sid)
{
	char mid[64], *text;
	json_t *job;

	snprintf(mid, sizeof(mid), "msg_hup_%s", f->att);
	job = json_pack("{s:s, s:s, s:s, s:s}", "type", "hangup", "messageId", mid, "attemptId", f->att, "callSid",
			sid);
	text = json_dumps(job, JSON_COMPACT);
	publish_job(text, mid, "hangup");
	free(text);
	json_decref(job);
	return wait_result(f->att, "hangup.result");
}

static void test_hangup(void **state)
{
	char sid[64];
	struct fx f;
	json_t *r;

	(void)state;
	/* A live call: hung up by us. */
	snprintf(sid, sizeof(sid), "%s", accepted_call(&f, "1"));
	r = hang_up(&f, sid);
	assert_string_equal(field(r, "callSid"), sid);
	assert_true(json_is_true(json_object_get(r, "ok")));
	assert_true(json_is_true(json_object_get(r, "hungUp")));
	assert_true(json_is_false(json_object_get(r, "ended")));
	assert_non_null(strstr("completed canceled", field(r, "callStatus")));
	fx_free(&f);
}

static void test_hangup_of_ended_call(void **state)
{
	/* A call the carrier ended by itself (its final callback lost or late):
	 * the hang-up says how it ended, and hangs up nothing. */
	struct timespec step = {0, 50 * 1000000L};
	char sid[64];
	struct fx f;
	json_t *r;
	int i;

	(void)state;
	snprintf(sid, sizeof(sid), "%s", accepted_call(&f, "8"));
	for (i = 0; i < 400 && strcmp(sim_status(f.phone), "busy"); i++)
		nanosleep(&step, NULL);
	assert_string_equal(sim_status(f.phone), "busy");
	r = hang_up(&f, sid);
	assert_true(json_is_true(json_object_get(r, "ok")));
	assert_true(json_is_true(json_object_get(r, "ended")));
	assert_true(json_is_false(json_object_get(r, "hungUp")));
	assert_string_equal(field(r, "callStatus"), "busy");
	assert_string_equal(sim_status(f.phone), "busy");
	fx_free(&f);
}

static void test_expired_job_not_dialed(void **state)
{
	/* A job that comes after its dial deadline (held back in the outbox or
	 * the queue) is not dialed: its call goes back to PENDING, to be dialed
	 * at a new paced slot, and the attempt does not count. */
	struct fx f;
	json_t *r;

	(void)state;
	fx_new(&f, "IN_PROGRESS", "3");
	exec_params("UPDATE call_attempts SET dial_deadline = now() - interval '1 second' WHERE id = $1", 1,
		    (const char *const[]){f.att});
	/* The campaign's next paced slot is an hour away, so the scheduler
	 * keeps the released call PENDING while this is checked. */
	exec_params("UPDATE campaigns SET next_dial_at = now() + interval '1 hour' WHERE id = $1", 1,
		    (const char *const[]){f.camp});
	fx_publish(&f);
	r = wait_result(f.att, "dial.result");
	assert_string_equal(field(r, "outcome"), "skipped");
	assert_string_equal(field(r, "reason"), "expired");
	assert_int_equal(sim_calls_to(f.phone), 0);
	assert_string_equal(db_str("SELECT status || '/' || attempts FROM calls WHERE id = $1", f.call_id),
			    "PENDING/0");
	assert_string_equal(db_str("SELECT status || '/' || outcome FROM call_attempts WHERE id = $1", f.att),
			    "ENDED/released");
	assert_string_equal(db_str("SELECT pending || '/' || queued FROM campaigns WHERE id = $1", f.camp), "1/0");
	fx_free(&f);

	/* Before its deadline, it is dialed. */
	fx_new(&f, "IN_PROGRESS", "3");
	exec_params("UPDATE call_attempts SET dial_deadline = now() + interval '1 minute' WHERE id = $1", 1,
		    (const char *const[]){f.att});
	fx_publish(&f);
	r = wait_result(f.att, "dial.result");
	assert_string_equal(field(r, "outcome"), "accepted");
	fx_free(&f);
}

/* f's attempt as the reconcile sweep leaves a dial nobody reported on: the
 * attempt UNKNOWN, its call IN_PROGRESS and counted so. Its next reconcile
 * is an hour away, so the sweep does not ask the carrier about it. */
static void fx_unknown(struct fx *f)
{
	const char *p[] = {f->att};

	exec_params("UPDATE call_attempts SET status = 'UNKNOWN', dialed_at = now(),"
		    " reconcile_at = now() + interval '1 hour'"
		    " WHERE id = $1",
		    1, p);
	exec_params("UPDATE calls SET status = 'IN_PROGRESS' WHERE id = (SELECT call_id FROM call_attempts"
		    " WHERE id = $1)",
		    1, p);
	exec_params("UPDATE campaigns SET queued = 0, in_progress = 1 WHERE id = (SELECT campaign_id"
		    " FROM call_attempts WHERE id = $1)",
		    1, p);
}

struct db_wait {
	const char *sql;
	const char *param;
	const char *want;
};

static int db_is(void *arg)
{
	struct db_wait *w = arg;

	return !strcmp(db_str(w->sql, w->param), w->want);
}

static void wait_db(const char *sql, const char *param, const char *want)
{
	struct db_wait w = {sql, param, want};

	if (!it_poll(db_is, &w, RESULT_WAIT_MS))
		fail_msg("%s ($1 = %s) gave %s, not %s", sql, param, db_str(sql, param), want);
}

/* A reconcile that finds no call releases the attempt: the call goes back
 * to PENDING, its attempt does not count, and the campaign's counters say
 * so. */
static void test_reconcile_not_found_releases(void **state)
{
	char mid[64], *text;
	struct fx f;
	json_t *res;

	(void)state;
	/* paused, so that the scheduler leaves the released call PENDING */
	fx_new(&f, "PAUSED", "5");
	fx_unknown(&f);
	snprintf(mid, sizeof(mid), "msg_recres_%s", f.att);
	res = json_pack("{s:s, s:s, s:s, s:b}", "type", "reconcile.result", "messageId", mid, "attemptId", f.att,
			"found", 0);
	text = json_dumps(res, JSON_COMPACT);
	publish_to("result", text, mid, "reconcile.result");
	free(text);
	json_decref(res);
	wait_db("SELECT status || '/' || coalesce(outcome, '') FROM call_attempts WHERE id = $1", f.att,
		"ENDED/released");
	assert_string_equal(db_str("SELECT status || '/' || attempts FROM calls WHERE id = $1", f.call_id),
			    "PENDING/0");
	wait_db("SELECT pending || '/' || queued || '/' || in_progress FROM campaigns WHERE id = $1", f.camp,
		"1/0/0");
	fx_free(&f);
}

/* Releasing an attempt (what the scheduler does with a reconcile that found
 * no call) takes no lock on the campaign's row before the caller writes
 * the counters at its commit: a worker's fence of another attempt of the
 * campaign goes through meanwhile. (The release used to lock the row at
 * once; with the fence holding attempts the scheduler's batch needed next,
 * the two deadlocked under load.) */
static void test_release_leaves_campaign_row_free(void **state)
{
	struct fx f;
	char other[56], call2[24];
	PGconn *lane = PQconnectdb(it_env("DIALER_DB_URL"));
	PGresult *r;

	(void)state;
	assert_int_equal(PQstatus(lane), CONNECTION_OK);
	fx_new(&f, "IN_PROGRESS", "5");
	fx_unknown(&f);
	/* a second call of the campaign, queued to be dialed */
	snprintf(other, sizeof(other), "%s_2", f.att);
	exec_params("UPDATE campaigns SET total = 2, queued = 1, next_dial_at = now() + interval '1 hour'"
		    " WHERE id = $1",
		    1, (const char *const[]){f.camp});
	fx_queue_call(&f, "ct_it2", other, call2);

	/* The scheduler's transaction releases the first attempt... */
	r = PQexec(lane, "BEGIN");
	PQclear(r);
	r = PQexecParams(lane, "SELECT campaign_id, left_status FROM dialer_release_call($1)", 1, NULL,
			 (const char *const[]){f.att}, NULL, NULL, 0);
	if (PQresultStatus(r) != PGRES_TUPLES_OK)
		fail_msg("release: %s", PQresultErrorMessage(r));
	assert_string_equal(PQgetvalue(r, 0, 0), f.camp);
	assert_string_equal(PQgetvalue(r, 0, 1), "IN_PROGRESS");
	PQclear(r);
	/* ...and, while it is open, a worker fences the second one. */
	r = PQexec(it_db(), "SET lock_timeout = '5s'");
	PQclear(r);
	r = PQexecParams(it_db(), "SELECT verdict FROM dialer_fence_attempts(ARRAY[$1], 'it-worker')", 1, NULL,
			 (const char *const[]){other}, NULL, NULL, 0);
	if (PQresultStatus(r) != PGRES_TUPLES_OK)
		fail_msg("the fence waited for the releasing transaction: %s", PQresultErrorMessage(r));
	assert_string_equal(PQgetvalue(r, 0, 0), "dial");
	PQclear(r);
	r = PQexec(it_db(), "RESET lock_timeout");
	PQclear(r);
	r = PQexec(lane, "COMMIT");
	assert_int_equal(PQresultStatus(r), PGRES_COMMAND_OK);
	PQclear(r);
	PQfinish(lane);
	assert_string_equal(db_str("SELECT status || '/' || attempts FROM calls WHERE id = $1", f.call_id),
			    "PENDING/0");
	assert_string_equal(db_str("SELECT status FROM calls WHERE id = $1", call2), "IN_PROGRESS");
	fx_free(&f);
}

static void test_ready_and_metrics(void **state)
{
	char url[512], *body;

	(void)state;
	snprintf(url, sizeof(url), "%s/readyz", it_env("DIALER_WORKER_HEALTH_URL"));
	if (http_get(url, &body) != 200)
		fail_msg("worker not ready: %s", body);
	free(body);
	snprintf(url, sizeof(url), "%s/metrics", it_env("DIALER_WORKER_HEALTH_URL"));
	assert_int_equal(http_get(url, &body), 200);
	assert_non_null(strstr(body, "dialer_worker_jobs_consumed_total{type=\"dial\"}"));
	assert_non_null(strstr(body, "dialer_worker_dial_results_total{outcome=\"accepted\"}"));
	assert_non_null(strstr(body, "dialer_worker_dial_latency_seconds_bucket"));
	assert_non_null(strstr(body, "dialer_worker_in_flight"));
	assert_non_null(strstr(body, "dialer_worker_carrier_429_total"));
	free(body);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_dial_accepted),
		cmocka_unit_test(test_dial_invalid_number),
		cmocka_unit_test(test_same_job_twice_dials_once),
		cmocka_unit_test(test_paused_campaign_not_dialed),
		cmocka_unit_test(test_cancelled_campaign_not_dialed),
		cmocka_unit_test(test_poison_jobs_dead_lettered),
		cmocka_unit_test(test_reconcile),
		cmocka_unit_test(test_hangup),
		cmocka_unit_test(test_hangup_of_ended_call),
		cmocka_unit_test(test_expired_job_not_dialed),
		cmocka_unit_test(test_reconcile_not_found_releases),
		cmocka_unit_test(test_release_leaves_campaign_row_free),
		cmocka_unit_test(test_ready_and_metrics),
	};

	return cmocka_run_group_tests_name("dialer-worker", tests, setup, teardown);
}
