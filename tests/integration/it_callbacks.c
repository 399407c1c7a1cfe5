/* Integration tests of the carrier's status callbacks (POST
 * /v1/carrier/status?attemptId=...): a correctly signed form is answered 204
 * and becomes one call.status message on the results route of dialer.jobs;
 * a forged, missing or misplaced signature is 403, a malformed form or an
 * invalid field 400, and none of them publishes anything. Messages are read
 * from a durable queue of this test bound to dialer.jobs with key "result". */
#include <amqp.h>
#include <curl/curl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#include "dl_form.h"
#include "dl_twsig.h"
#include "dl_util.h"
#include "it_lib.h"

#define CSID "CA0123456789abcdef0123456789abcdef"

static char queue[64];
static char token[256];
static char base[512];
static char prefix[32]; /* of every attempt id of this run */

static int setup(void **state)
{
	const char *t = getenv("DIALER_CARRIER_AUTH_TOKEN"), *pub = getenv("DIALER_API_PUBLIC_URL");
	amqp_connection_state_t conn;

	(void)state;
	curl_global_init(CURL_GLOBAL_DEFAULT);
	snprintf(token, sizeof(token), "%s", t && *t ? t : "dialer-local-auth-token");
	snprintf(base, sizeof(base), "%s", pub && *pub ? pub : it_env("DIALER_API_URL"));
	snprintf(prefix, sizeof(prefix), "att_it%d_", (int)getpid());
	snprintf(queue, sizeof(queue), "it.results.%d", (int)getpid());
	conn = it_mq_open();
	amqp_queue_declare(conn, 1, amqp_cstring_bytes(queue), 0, 1, 0, 0, amqp_empty_table);
	assert_int_equal(amqp_get_rpc_reply(conn).reply_type, AMQP_RESPONSE_NORMAL);
	amqp_queue_bind(conn, 1, amqp_cstring_bytes(queue), amqp_cstring_bytes("dialer.jobs"),
			amqp_cstring_bytes("result"), amqp_empty_table);
	assert_int_equal(amqp_get_rpc_reply(conn).reply_type, AMQP_RESPONSE_NORMAL);
	it_mq_close(conn);
	return 0;
}

static int teardown(void **state)
{
	amqp_connection_state_t conn = it_mq_open();

	(void)state;
	amqp_queue_delete(conn, 1, amqp_cstring_bytes(queue), 0, 0);
	it_mq_close(conn);
	return 0;
}

struct msg {
	char attempt[80];
	json_t *body;
};

/* Reads this run's messages from the test queue until one for attempt
 * `until` arrived and at least `want` in all (or wait_ms pass), then a
 * short while more: the API and the scheduler both relay the outbox, so
 * messages committed in order may arrive in another. Returns how many were
 * stored in out. */
static int drain_until(const char *until, int want, struct msg *out, int max, int wait_ms)
{
	amqp_connection_state_t conn = it_mq_open();
	int64_t deadline = dl_mono_ms() + wait_ms, grace_end = 0;
	int n = 0;
	bool seen = false;

	amqp_basic_consume(conn, 1, amqp_cstring_bytes(queue), amqp_empty_bytes, 0, 1, 0, amqp_empty_table);
	assert_int_equal(amqp_get_rpc_reply(conn).reply_type, AMQP_RESPONSE_NORMAL);
	while (dl_mono_ms() < deadline && (grace_end == 0 || dl_mono_ms() < grace_end)) {
		amqp_envelope_t env;
		struct timeval tv = {0, 200000};
		amqp_rpc_reply_t rr;
		json_t *body;
		const char *att, *type;

		amqp_maybe_release_buffers(conn);
		rr = amqp_consume_message(conn, &env, &tv, 0);
		if (rr.reply_type != AMQP_RESPONSE_NORMAL)
			continue;
		body = json_loadb(env.message.body.bytes, env.message.body.len, 0, NULL);
		assert_non_null(body);
		assert_int_equal(env.message.properties.delivery_mode, 2);
		assert_true(env.message.properties._flags & AMQP_BASIC_MESSAGE_ID_FLAG);
		assert_true(env.message.properties._flags & AMQP_BASIC_TYPE_FLAG);
		type = json_string_value(json_object_get(body, "type"));
		/* a call.statuses message: each of its statuses as if alone */
		for (size_t k = 0, many = type != NULL && !strcmp(type, "call.statuses"),
			    count = many ? json_array_size(json_object_get(body, "statuses")) : 1;
		     k < count; k++) {
			json_t *one = many ? json_array_get(json_object_get(body, "statuses"), k) : body;

			att = json_string_value(json_object_get(one, "attemptId"));
			type = json_string_value(json_object_get(one, "type"));
			if (att != NULL && type != NULL && !strcmp(type, "call.status") &&
			    !strncmp(att, prefix, strlen(prefix)) && n < max) {
				snprintf(out[n].attempt, sizeof(out[n].attempt), "%s", att);
				out[n].body = json_incref(one);
				n++;
				seen = seen || !strcmp(att, until);
				if (seen && n >= want && grace_end == 0)
					grace_end = dl_mono_ms() + 500;
			}
		}
		json_decref(body);
		amqp_destroy_envelope(&env);
	}
	it_mq_close(conn);
	if (!seen)
		fail_msg("no call.status message for %s within %d ms", until, wait_ms);
	return n;
}

static void msgs_free(struct msg *m, int n)
{
	for (int i = 0; i < n; i++)
		json_decref(m[i].body);
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

/* POSTs form to the callback URL of attempt (raw, unescaped in the query)
 * on the API at api_url, with content type ctype and signature header sig
 * (NULL: none). A request that fails fails the test, unless err is given:
 * then it is stored there (the answer's status is 0). */
static struct it_resp *post_at(const char *api_url, const char *attempt, const char *ctype, const char *form,
			       const char *sig, CURLcode *err)
{
	CURL *h = curl_easy_init();
	struct it_resp *r = calloc(1, sizeof(*r));
	struct buf data = {calloc(1, 1), 0};
	struct curl_slist *hdrs = curl_slist_append(NULL, "Expect:");
	char url[1024], line[256];
	CURLcode rc;

	assert_non_null(h);
	snprintf(url, sizeof(url), "%s/v1/carrier/status?attemptId=%s", api_url, attempt);
	snprintf(line, sizeof(line), "Content-Type: %s", ctype);
	hdrs = curl_slist_append(hdrs, line);
	if (sig != NULL) {
		snprintf(line, sizeof(line), "X-Twilio-Signature: %s", sig);
		hdrs = curl_slist_append(hdrs, line);
	}
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_TIMEOUT, 20L);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(h, CURLOPT_POSTFIELDS, form);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, &data);
	rc = curl_easy_perform(h);
	if (err != NULL)
		*err = rc;
	else if (rc != CURLE_OK)
		fail_msg("POST %s failed: %s", url, curl_easy_strerror(rc));
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r->status);
	r->body = data.p;
	r->headers = calloc(1, 1);
	r->json = json_loads(r->body, JSON_DECODE_ANY, NULL);
	curl_slist_free_all(hdrs);
	curl_easy_cleanup(h);
	return r;
}

static struct it_resp *post(const char *attempt, const char *ctype, const char *form, const char *sig)
{
	return post_at(it_env("DIALER_API_URL"), attempt, ctype, form, sig, NULL);
}

/* The carrier's signature of form for attempt's callback URL, with key. */
static void sign(const char *key, const char *attempt, const char *form, char sig[DL_TWSIG_LEN])
{
	struct dl_form f;
	char url[1024];

	snprintf(url, sizeof(url), "%s/v1/carrier/status?attemptId=%s", base, attempt);
	assert_int_equal(dl_form_parse(form, strlen(form), &f), 0);
	assert_int_equal(dl_twsig_compute(key, url, &f, sig), 0);
	dl_form_free(&f);
}

/* A form as the simulator sends it. */
static void form_of(char *out, size_t len, const char *status, int seq, const char *tail)
{
	snprintf(out, len,
		 "CallSid=" CSID "&AccountSid=ACdialerlocal00000000000000000000&From=%%2B15005550006"
		 "&To=%%2B15551230001&CallStatus=%s&Direction=outbound-api&SequenceNumber=%d"
		 "&Timestamp=Tue%%2C+10+Mar+2026+09%%3A00%%3A00+%%2B0000&CallbackSource=call-progress-events%s",
		 status, seq, tail ? tail : "");
}

static void attempt_id(char *out, size_t len, const char *tag)
{
	snprintf(out, len, "%s%s", prefix, tag);
}

static const char FORM_CT[] = "application/x-www-form-urlencoded";

/* Posts a correctly signed form; expects status. */
static void post_signed(const char *attempt, const char *form, long status)
{
	char sig[DL_TWSIG_LEN];
	struct it_resp *r;

	sign(token, attempt, form, sig);
	r = post(attempt, FORM_CT, form, sig);
	if (r->status != status)
		fail_msg("callback for %s: expected %ld, got %ld: %s", attempt, status, r->status, r->body);
	if (status >= 400)
		it_expect(r, status);
	else
		assert_true(r->body == NULL || r->body[0] == '\0');
	it_resp_free(r);
}

/* Orders the four messages of test_signed_callback_published as posted:
 * att, dup, dup, end (arrival order across two relays may differ). */
static void sort_by_attempt(struct msg *m, int n, const char *a, const char *b, const char *c)
{
	const char *order[] = {a, b, b, c};
	struct msg sorted[8];
	bool used[8] = {false};

	for (int i = 0; i < n && i < 4; i++)
		for (int j = 0; j < n; j++)
			if (!used[j] && !strcmp(m[j].attempt, order[i])) {
				sorted[i] = m[j];
				used[j] = true;
				break;
			}
	memcpy(m, sorted, sizeof(struct msg) * (size_t)n);
}

/* The API's count of accepted callbacks that reached the broker by how
 * ("broker": published at once, "outbox": through the outbox). */
static long relayed(const char *how)
{
	struct it_resp *r = it_call("GET", "/metrics", NULL, NULL, NULL);
	char needle[96];
	const char *at;
	long n = 0;

	it_expect(r, 200);
	snprintf(needle, sizeof(needle), "dialer_carrier_callbacks_relayed_total{via=\"%s\"} ", how);
	at = strstr(r->body, needle);
	if (at != NULL)
		n = atol(at + strlen(needle));
	it_resp_free(r);
	return n;
}

static void test_signed_callback_published(void **state)
{
	char att[80], dup[80], end[80], form[1024];
	struct msg m[8];
	json_t *b;
	int n;

	long direct = relayed("broker");

	(void)state;
	attempt_id(att, sizeof(att), "ok");
	attempt_id(dup, sizeof(dup), "dup");
	attempt_id(end, sizeof(end), "end");
	form_of(form, sizeof(form), "completed", 3, "&CallDuration=27&AnsweredBy=human");
	post_signed(att, form, 204);
	/* A callback delivered twice is published twice; the scheduler dedupes. */
	form_of(form, sizeof(form), "in-progress", 2, "&AnsweredBy=machine_start");
	post_signed(dup, form, 204);
	post_signed(dup, form, 204);
	form_of(form, sizeof(form), "ringing", 1, NULL);
	post_signed(end, form, 204);
	/* With the broker up, each was confirmed by it before the answer. */
	assert_int_equal(relayed("broker") - direct, 4);
	n = drain_until(end, 4, m, 8, 15000);
	assert_int_equal(n, 4);
	sort_by_attempt(m, n, att, dup, end);
	b = m[0].body;
	assert_string_equal(m[0].attempt, att);
	assert_string_equal(json_string_value(json_object_get(b, "type")), "call.status");
	assert_string_equal(json_string_value(json_object_get(b, "callSid")), CSID);
	assert_string_equal(json_string_value(json_object_get(b, "callStatus")), "completed");
	assert_int_equal(json_integer_value(json_object_get(b, "sequenceNumber")), 3);
	assert_int_equal(json_integer_value(json_object_get(b, "callDuration")), 27);
	assert_string_equal(json_string_value(json_object_get(b, "answeredBy")), "human");
	assert_non_null(json_string_value(json_object_get(b, "messageId")));
	b = m[1].body;
	assert_string_equal(m[1].attempt, dup);
	assert_string_equal(json_string_value(json_object_get(b, "callStatus")), "in-progress");
	assert_int_equal(json_integer_value(json_object_get(b, "sequenceNumber")), 2);
	assert_true(json_is_null(json_object_get(b, "callDuration")));
	assert_string_equal(json_string_value(json_object_get(b, "answeredBy")), "machine_start");
	assert_string_equal(m[2].attempt, dup);
	assert_string_not_equal(json_string_value(json_object_get(m[1].body, "messageId")),
				json_string_value(json_object_get(m[2].body, "messageId")));
	b = m[3].body;
	assert_string_equal(m[3].attempt, end);
	assert_true(json_is_null(json_object_get(b, "callDuration")));
	assert_true(json_is_null(json_object_get(b, "answeredBy")));
	msgs_free(m, n);
}

static void run_stack(const char *verb)
{
	char cmd[1024];

	snprintf(cmd, sizeof(cmd), "bash %s %s %s >/dev/null", it_env("DIALER_STACK"), verb,
		 it_env("STACK_RUNDIR"));
	assert_int_equal(system(cmd), 0);
}

/* Posts another callback; true once one went straight to the broker. */
static int goes_direct(void *arg)
{
	long before = relayed("broker");
	char att[80], form[1024];

	attempt_id(att, sizeof(att), (const char *)arg);
	form_of(form, sizeof(form), "ringing", 1, NULL);
	post_signed(att, form, 204);
	return relayed("broker") > before;
}

static void test_callback_during_broker_outage(void **state)
{
	char att[80], form[1024];
	long kept = relayed("outbox");
	struct msg m[4];
	int n;

	(void)state;
	attempt_id(att, sizeof(att), "outage");
	form_of(form, sizeof(form), "completed", 5, "&CallDuration=9&AnsweredBy=human");
	run_stack("stop-broker");
	/* Accepted while the broker is down: kept in the outbox... */
	post_signed(att, form, 204);
	assert_int_equal(relayed("outbox") - kept, 1);
	assert_int_equal(it_db_count("SELECT count(*) FROM outbox WHERE body->>'attemptId' = $1", att, NULL), 1);
	run_stack("start-broker");
	/* ...and published once it is back. */
	n = drain_until(att, 1, m, 4, 60000);
	assert_int_equal(n, 1);
	assert_string_equal(m[0].attempt, att);
	assert_string_equal(json_string_value(json_object_get(m[0].body, "callStatus")), "completed");
	assert_int_equal(json_integer_value(json_object_get(m[0].body, "sequenceNumber")), 5);
	msgs_free(m, n);
	/* Callbacks go straight to the broker again. */
	{
		char tag[] = "after";

		assert_true(it_poll(goes_direct, tag, 30000));
	}
}

enum sig_mode { SIG_NONE, SIG_RIGHT, SIG_WRONG_KEY, SIG_OTHER_ATTEMPT, SIG_GARBAGE, SIG_TAMPERED };

static void test_rejected_callbacks_publish_nothing(void **state)
{
	static const struct {
		const char *tag;
		const char *raw;    /* the body as is; NULL: a simulator form with status and tail */
		const char *status;
		const char *tail;
		enum sig_mode sig;
		const char *ctype;
		long want;
	} cases[] = {
		{"forged", NULL, "completed", NULL, SIG_WRONG_KEY, FORM_CT, 403},
		{"missing", NULL, "completed", NULL, SIG_NONE, FORM_CT, 403},
		{"replayed", NULL, "completed", NULL, SIG_OTHER_ATTEMPT, FORM_CT, 403},
		{"garbage", NULL, "completed", NULL, SIG_GARBAGE, FORM_CT, 403},
		{"tampered", NULL, "completed", NULL, SIG_TAMPERED, FORM_CT, 403},
		{"status", NULL, "answered-ish", NULL, SIG_RIGHT, FORM_CT, 400},
		{"twice", NULL, "completed", "&CallStatus=busy", SIG_RIGHT, FORM_CT, 400},
		{"dur", NULL, "completed", "&CallDuration=-5", SIG_RIGHT, FORM_CT, 400},
		{"durtext", NULL, "completed", "&CallDuration=abc", SIG_RIGHT, FORM_CT, 400},
		{"ab", NULL, "completed", "&AnsweredBy=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", SIG_RIGHT, FORM_CT, 400},
		{"seqneg", "CallSid=" CSID "&CallStatus=completed&SequenceNumber=-1", NULL, NULL, SIG_RIGHT, FORM_CT, 400},
		{"seqnone", "CallSid=" CSID "&CallStatus=completed", NULL, NULL, SIG_RIGHT, FORM_CT, 400},
		{"sid", "CallSid=CA12&CallStatus=completed&SequenceNumber=0", NULL, NULL, SIG_RIGHT, FORM_CT, 400},
		{"sidnone", "CallStatus=completed&SequenceNumber=0", NULL, NULL, SIG_RIGHT, FORM_CT, 400},
		{"badform", "CallSid=CA%ZZ&CallStatus=completed", NULL, NULL, SIG_GARBAGE, FORM_CT, 400},
		{"nulform", "CallSid=%00", NULL, NULL, SIG_GARBAGE, FORM_CT, 400},
		{"json", "{\"CallStatus\":\"completed\"}", NULL, NULL, SIG_GARBAGE, "application/json", 415},
	};
	char sentinel[80], form[1024];
	struct msg m[16];
	int n;

	(void)state;
	for (size_t i = 0; i < DL_ARRAY_LEN(cases); i++) {
		char att[80], other[80], sig[DL_TWSIG_LEN];
		const char *sigp = sig;
		struct it_resp *r;

		attempt_id(att, sizeof(att), cases[i].tag);
		if (cases[i].raw != NULL)
			snprintf(form, sizeof(form), "%s", cases[i].raw);
		else
			form_of(form, sizeof(form), cases[i].status, 1, cases[i].tail);
		switch (cases[i].sig) {
		case SIG_NONE:
			sigp = NULL;
			break;
		case SIG_RIGHT:
			sign(token, att, form, sig);
			break;
		case SIG_WRONG_KEY:
			sign("not-the-token", att, form, sig);
			break;
		case SIG_OTHER_ATTEMPT:
			attempt_id(other, sizeof(other), "someone-else");
			sign(token, other, form, sig);
			break;
		case SIG_GARBAGE:
			snprintf(sig, sizeof(sig), "0/KCTR6DLpKmkAf8muzZqo1nDgQ=");
			break;
		case SIG_TAMPERED:
			/* Signed, then a field changed on the way. */
			sign(token, att, form, sig);
			form_of(form, sizeof(form), "busy", 1, NULL);
			break;
		}
		r = post(att, cases[i].ctype, form, sigp);
		if (r->status != cases[i].want)
			fail_msg("case %s: expected %ld, got %ld: %s", cases[i].tag, cases[i].want, r->status, r->body);
		it_expect(r, cases[i].want);
		it_resp_free(r);
	}
	/* Bad attempt ids never reach the signature check. */
	{
		static const char *const bad[] = {
			"att-1", "att%201", "att%2B1", "",
			"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
		};

		for (size_t i = 0; i < DL_ARRAY_LEN(bad); i++) {
			struct it_resp *r;

			form_of(form, sizeof(form), "completed", 1, NULL);
			r = post(bad[i], FORM_CT, form, "0/KCTR6DLpKmkAf8muzZqo1nDgQ=");
			if (r->status != 400)
				fail_msg("attemptId \"%s\": expected 400, got %ld", bad[i], r->status);
			it_expect(r, 400);
			it_resp_free(r);
		}
	}
	/* Once the sentinel (posted last) is out, and a little after, anything a
	 * rejected callback had written would be out too. */
	attempt_id(sentinel, sizeof(sentinel), "sentinel");
	form_of(form, sizeof(form), "ringing", 1, NULL);
	post_signed(sentinel, form, 204);
	n = drain_until(sentinel, 1, m, 16, 15000);
	for (int i = 0; i < n; i++)
		if (strcmp(m[i].attempt, sentinel) != 0)
			fail_msg("a rejected callback was published: %s", m[i].attempt);
	assert_int_equal(n, 1);
	msgs_free(m, n);
}

/* ------------------------------------------- a callback awaiting its confirm */

static pid_t waiting_pid;

/* rabbitmqctl on the stack's broker; its output, or NULL when it failed. */
static char *mq_ctl(const char *args)
{
	char cmd[1024], *out = NULL;
	size_t cap = 0, len = 0;
	FILE *f;
	char chunk[512];
	size_t n;

	snprintf(cmd, sizeof(cmd), "bash %s ctl %s %s 2>&1", it_env("DIALER_STACK"), it_env("STACK_RUNDIR"), args);
	f = popen(cmd, "r");
	assert_non_null(f);
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
		if (len + n + 1 > cap) {
			cap = (len + n + 1) * 2;
			out = realloc(out, cap);
			assert_non_null(out);
		}
		memcpy(out + len, chunk, n);
		len += n;
		out[len] = '\0';
	}
	if (pclose(f) != 0) {
		free(out);
		return NULL;
	}
	return out ? out : calloc(1, 1);
}

/* True while the broker's memory alarm blocks every publisher. */
static int mq_blocked(void *arg)
{
	char *out = mq_ctl("eval 'rabbit_alarm:get_alarms().'");
	int on = out != NULL && strstr(out, "memory") != NULL;

	(void)arg;
	free(out);
	return on;
}

static int mq_unblocked(void *arg)
{
	return !mq_blocked(arg);
}

/* Lifts the memory alarm and stops the private API, pass or fail. */
static int waiting_teardown(void **state)
{
	(void)state;
	free(mq_ctl("set_vm_memory_high_watermark 0.4"));
	if (waiting_pid > 0)
		it_stop_pid(waiting_pid);
	waiting_pid = 0;
	return 0;
}

/* The private API's value of a metric series, or -1 when it has none. */
static long long private_metric(int port, const char *series)
{
	char url[128], line[160];
	struct it_resp *r;
	const char *at;
	long long v = -1;

	snprintf(url, sizeof(url), "http://127.0.0.1:%d/metrics", port);
	snprintf(line, sizeof(line), "\n%s", series);
	r = it_call_url("GET", url);
	if (r->status == 200 && (at = strstr(r->body, line)) != NULL)
		v = atoll(at + strlen(line));
	it_resp_free(r);
	return v;
}

struct waiting {
	int port;
	long waiting; /* the series' value polled for */
	char api[64], attempt[80], form[1024], sig[DL_TWSIG_LEN];
	long status;
	CURLcode err;
	atomic_int done;
};

static int private_waiting(void *arg)
{
	struct waiting *w = arg;

	return private_metric(w->port, "dialer_http_requests_waiting ") == w->waiting;
}

static void *post_waiting(void *arg)
{
	struct waiting *w = arg;
	/* From this thread a failure is only recorded: the test's thread
	 * checks it, after the broker is unblocked. */
	struct it_resp *r = post_at(w->api, w->attempt, FORM_CT, w->form, w->sig, &w->err);

	w->status = r->status;
	it_resp_free(r);
	atomic_store(&w->done, 1);
	return NULL;
}

/* Starts w's callback on its own thread and waits until the private API
 * has set it aside: each poll is a request to the one listener thread the
 * callback would otherwise hold. */
static void post_set_aside(struct waiting *w, pthread_t *th)
{
	assert_int_equal(pthread_create(th, NULL, post_waiting, w), 0);
	w->waiting = 1;
	assert_true(it_poll(private_waiting, w, 15000));
	assert_false(atomic_load(&w->done));
}

static void joined_204(struct waiting *w, pthread_t th)
{
	pthread_join(th, NULL);
	if (w->err != CURLE_OK)
		fail_msg("the waiting callback failed: %s", curl_easy_strerror(w->err));
	assert_int_equal(w->status, 204);
}

/* An API with one listener thread and api.publish_wait_ms 10 s, and a
 * broker that confirms nothing (its memory alarm blocks every publisher):
 * a callback waits for its confirm set aside, and the same thread goes on
 * answering (/metrics, /healthz) meanwhile. Unconfirmed after its 10 s it
 * is answered 204 from the outbox; a second one, still waiting when the
 * broker is back, is answered 204 once confirmed. Both messages arrive. */
#define WAIT_MS "10000"
static void test_waiting_callback_holds_no_thread(void **state)
{
	char port[16], db[512], url[128];
	const char *admin = it_env("DIALER_DB_URL"), *at = strchr(admin, '@');
	const char *env[] = {
		"DIALER_HTTP_PORT", port, "DIALER_DB_URL", db, "DIALER_HTTP_THREADS", "1",
		"DIALER_API_PUBLISH_WAIT_MS", WAIT_MS, "DIALER_API_PUBLIC_URL", base, NULL,
	};
	/* Static: should an assertion end the test early, the threads still
	 * write here. */
	static struct waiting w[2];
	const char *tags[2] = {"kept", "confirmed"};
	pthread_t th[2];
	struct it_resp *r;
	struct msg m[8];
	int n, seen[2] = {0, 0};

	(void)state;
	assert_non_null(at);
	memset(w, 0, sizeof(w));
	snprintf(db, sizeof(db), "postgresql://dialer_api:dialer_api%s", at);
	w[0].port = it_free_port();
	snprintf(port, sizeof(port), "%d", w[0].port);
	waiting_pid = it_spawn("dialer-api", "callbacks", env);
	assert_true(waiting_pid > 0 && it_api_ready(w[0].port, 20000));
	for (int i = 0; i < 2; i++) {
		w[i].port = w[0].port;
		snprintf(w[i].api, sizeof(w[i].api), "http://127.0.0.1:%d", w[0].port);
		attempt_id(w[i].attempt, sizeof(w[i].attempt), tags[i]);
		/* signed for the URL the carrier was given: the stack's */
		form_of(w[i].form, sizeof(w[i].form), "completed", 4 + i, "&CallDuration=12&AnsweredBy=human");
		sign(token, w[i].attempt, w[i].form, w[i].sig);
	}

	free(mq_ctl("set_vm_memory_high_watermark 0.000001"));
	assert_true(it_poll(mq_blocked, NULL, 30000));
	post_set_aside(&w[0], &th[0]);
	snprintf(url, sizeof(url), "%s/healthz", w[0].api);
	r = it_call_url("GET", url);
	assert_int_equal(r->status, 200);
	it_resp_free(r);
	assert_false(atomic_load(&w[0].done));
	/* Its wait over, the broker still blocked: kept in the outbox. */
	joined_204(&w[0], th[0]);
	assert_int_equal(private_metric(w[0].port, "dialer_carrier_callbacks_relayed_total{via=\"outbox\"} "), 1);
	assert_int_equal(it_db_count("SELECT count(*) FROM outbox WHERE body->>'attemptId' = $1", w[0].attempt, NULL),
			 1);

	post_set_aside(&w[1], &th[1]);
	free(mq_ctl("set_vm_memory_high_watermark 0.4"));
	assert_true(it_poll(mq_unblocked, NULL, 30000));
	/* Confirmed once the broker took it, within its wait. */
	joined_204(&w[1], th[1]);
	assert_int_equal(private_metric(w[0].port, "dialer_carrier_callbacks_relayed_total{via=\"broker\"} "), 1);
	w[0].waiting = 0;
	assert_true(it_poll(private_waiting, &w[0], 5000));

	/* The confirmed one arrives once; the kept one from the outbox, and
	 * maybe a second time, had the broker confirmed its first try after
	 * the wait (the scheduler absorbs that). */
	n = drain_until(w[1].attempt, 2, m, 8, 30000);
	for (int i = 0; i < n; i++) {
		for (int k = 0; k < 2; k++)
			if (!strcmp(m[i].attempt, w[k].attempt)) {
				seen[k]++;
				assert_int_equal(json_integer_value(json_object_get(m[i].body, "sequenceNumber")), 4 + k);
			}
		assert_string_equal(json_string_value(json_object_get(m[i].body, "callStatus")), "completed");
	}
	assert_true(seen[0] >= 1 && seen[0] <= 2);
	assert_int_equal(seen[1], 1);
	msgs_free(m, n);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_signed_callback_published),
		cmocka_unit_test(test_rejected_callbacks_publish_nothing),
		cmocka_unit_test_teardown(test_waiting_callback_holds_no_thread, waiting_teardown),
		/* last: it leaves messages of its own in the test queue */
		cmocka_unit_test(test_callback_during_broker_outage),
	};

	return cmocka_run_group_tests_name("carrier callbacks", tests, setup, teardown);
}
