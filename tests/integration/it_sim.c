/* Integration tests of telephony-sim, the carrier of every local run: the
 * Calls API (auth, validation, create, fetch, list, hang up), /_sim/calls,
 * outcomes by the number's last digit, signed status callbacks to a receiver
 * run inside this test, delivery retries, and fault injection (a private
 * simulator started with faults on). Timing comes from the same
 * configuration the services read (clock.minute_ms, sim.*); waits poll. */
#include <arpa/inet.h>
#include <curl/curl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "dl_config.h"
#include "dl_form.h"
#include "dl_http.h"
#include "dl_twsig.h"
#include "dl_util.h"
#include "it_lib.h"

static struct dl_config cfg;
static char userpwd[256];

/* One status callback as the receiver got it. */
struct rx_item {
	char path[64];
	char sid[40];
	char status[16];
	char answered_by[32];
	char account[40];
	char source[32];
	int seq;
	int duration; /* -1 when absent */
	bool sig_ok;
	bool refused; /* answered 503 on purpose */
};

static struct {
	pthread_mutex_t lock;
	struct rx_item items[512];
	int n;
	int port;
	int flaky_left; /* requests to /cb/flaky* still to refuse */
	struct dl_httpd *httpd;
} rx = {.lock = PTHREAD_MUTEX_INITIALIZER};

static int64_t sec_ms(int64_t secs)
{
	return secs * cfg.clock_minute_ms / 60;
}

/* Longest a call of this stack may take to end, with room for a slow box. */
static int call_wait_ms(void)
{
	return (int)(sec_ms(cfg.sim_ring_seconds + cfg.sim_call_seconds) + 8000);
}

static void rx_handler(void *ctx, struct dl_http_req *req, struct dl_http_resp *resp)
{
	struct dl_form f;
	struct rx_item it;
	char url[256];
	const char *v;

	(void)ctx;
	resp->route = "/cb";
	if (dl_form_parse(req->body, req->body_len, &f) < 0) {
		dl_http_error(resp, 400, "bad form");
		return;
	}
	memset(&it, 0, sizeof(it));
	snprintf(it.path, sizeof(it.path), "%s", req->url);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", rx.port, req->url);
	it.sig_ok = dl_twsig_valid(cfg.carrier_auth_token, url, &f, dl_http_header(req, "X-Twilio-Signature"));
	snprintf(it.sid, sizeof(it.sid), "%s", (v = dl_form_get(&f, "CallSid")) ? v : "");
	snprintf(it.status, sizeof(it.status), "%s", (v = dl_form_get(&f, "CallStatus")) ? v : "");
	snprintf(it.answered_by, sizeof(it.answered_by), "%s", (v = dl_form_get(&f, "AnsweredBy")) ? v : "");
	snprintf(it.account, sizeof(it.account), "%s", (v = dl_form_get(&f, "AccountSid")) ? v : "");
	snprintf(it.source, sizeof(it.source), "%s", (v = dl_form_get(&f, "CallbackSource")) ? v : "");
	it.seq = (v = dl_form_get(&f, "SequenceNumber")) ? atoi(v) : -1;
	it.duration = (v = dl_form_get(&f, "CallDuration")) ? atoi(v) : -1;
	dl_form_free(&f);
	pthread_mutex_lock(&rx.lock);
	if (!strncmp(it.path, "/cb/flaky", 9) && rx.flaky_left > 0) {
		rx.flaky_left--;
		it.refused = true;
	}
	if (rx.n < (int)DL_ARRAY_LEN(rx.items))
		rx.items[rx.n++] = it;
	pthread_mutex_unlock(&rx.lock);
	if (it.refused)
		dl_http_error(resp, 503, "try again");
	else
		dl_http_json(resp, 204, NULL);
}

/* The delivered (not refused) callbacks to path, ordered by SequenceNumber. */
static int rx_get(const char *path, struct rx_item *out, int max)
{
	int n = 0;

	pthread_mutex_lock(&rx.lock);
	for (int i = 0; i < rx.n && n < max; i++)
		if (!strcmp(rx.items[i].path, path) && !rx.items[i].refused)
			out[n++] = rx.items[i];
	pthread_mutex_unlock(&rx.lock);
	for (int i = 1; i < n; i++)
		for (int j = i; j > 0 && out[j - 1].seq > out[j].seq; j--) {
			struct rx_item t = out[j];

			out[j] = out[j - 1];
			out[j - 1] = t;
		}
	return n;
}

static int rx_count_all(const char *path)
{
	int n = 0;

	pthread_mutex_lock(&rx.lock);
	for (int i = 0; i < rx.n; i++)
		n += !strcmp(rx.items[i].path, path);
	pthread_mutex_unlock(&rx.lock);
	return n;
}

struct final_wait {
	const char *path;
	int want; /* delivered callbacks expected */
};

static int rx_has(void *arg)
{
	struct final_wait *w = arg;
	struct rx_item items[16];

	return rx_get(w->path, items, 16) >= w->want;
}

static int setup(void **state)
{
	char err[256];

	(void)state;
	curl_global_init(CURL_GLOBAL_DEFAULT);
	if (dl_config_load(&cfg, NULL, err, sizeof(err)) < 0)
		fail_msg("configuration: %s", err);
	snprintf(userpwd, sizeof(userpwd), "%s:%s", cfg.carrier_account_sid, cfg.carrier_auth_token);
	assert_int_equal(dl_httpd_start(&cfg, "127.0.0.1", 0, 2, rx_handler, NULL, &rx.httpd), 0);
	rx.port = dl_httpd_port(rx.httpd);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	dl_httpd_stop(rx.httpd);
	dl_config_free(&cfg);
	return 0;
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

/* Calls the simulator at base + path with Basic auth auth (NULL: none) and
 * a form body (NULL: none). */
static struct it_resp *sim_at(const char *base, const char *method, const char *path, const char *auth,
			      const char *form)
{
	CURL *h = curl_easy_init();
	struct it_resp *r = calloc(1, sizeof(*r));
	struct buf data = {calloc(1, 1), 0};
	struct curl_slist *hdrs = curl_slist_append(NULL, "Expect:");
	char url[2048];
	CURLcode rc;

	assert_non_null(h);
	assert_non_null(r);
	snprintf(url, sizeof(url), "%s%s", base, path);
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_TIMEOUT, 20L);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, &data);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
	if (auth != NULL) {
		curl_easy_setopt(h, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
		curl_easy_setopt(h, CURLOPT_USERPWD, auth);
	}
	if (form != NULL)
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, form);
	rc = curl_easy_perform(h);
	if (rc != CURLE_OK)
		fail_msg("%s %s failed: %s", method, url, curl_easy_strerror(rc));
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r->status);
	r->body = data.p;
	r->headers = calloc(1, 1);
	r->json = json_loads(r->body, JSON_DECODE_ANY, NULL);
	curl_slist_free_all(hdrs);
	curl_easy_cleanup(h);
	return r;
}

static struct it_resp *sim(const char *method, const char *path, const char *auth, const char *form)
{
	return sim_at(it_env("DIALER_SIM_URL"), method, path, auth, form);
}

/* Path of the Calls resource, or of one call when sid is given. */
static void calls_path(char *out, size_t len, const char *sid, const char *query)
{
	if (sid)
		snprintf(out, len, "/2010-04-01/Accounts/%s/Calls/%s.json", cfg.carrier_account_sid, sid);
	else
		snprintf(out, len, "/2010-04-01/Accounts/%s/Calls.json%s", cfg.carrier_account_sid,
			 query ? query : "");
}

static void expect_twilio_error(const struct it_resp *r, long status, int code)
{
	if (r->status != status)
		fail_msg("expected HTTP %ld, got %ld: %s", status, r->status, r->body);
	if (!json_is_integer(json_object_get(r->json, "code")) ||
	    json_integer_value(json_object_get(r->json, "code")) != code ||
	    !json_is_string(json_object_get(r->json, "message")) ||
	    json_integer_value(json_object_get(r->json, "status")) != status)
		fail_msg("expected carrier error %d, got: %s", code, r->body);
}

/* Creates a call to a fresh number ending in digit; extra is appended to
 * the form ("&Timeout=1"...). Returns the 201 answer. */
static struct it_resp *create(char to[20], int digit, const char *callback, const char *extra)
{
	char form[2048], path[256], *cb = callback ? dl_form_escape(callback) : NULL;
	struct it_resp *r;

	it_phone(to, digit);
	calls_path(path, sizeof(path), NULL, NULL);
	snprintf(form, sizeof(form), "To=%%2B%s&From=%%2B15005550006&Url=http%%3A%%2F%%2F127.0.0.1%%2Fvoice.xml%s%s%s",
		 to + 1, cb ? "&StatusCallback=" : "", cb ? cb : "", extra ? extra : "");
	free(cb);
	r = sim("POST", path, userpwd, form);
	if (r->status != 201)
		fail_msg("create failed: %ld %s", r->status, r->body);
	return r;
}

static bool sid_valid(const char *s)
{
	if (s == NULL || strlen(s) != 34 || strncmp(s, "CA", 2) != 0)
		return false;
	for (int i = 2; i < 34; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	return true;
}

static void test_auth(void **state)
{
	char path[256], wrong[300], other[256];
	struct it_resp *r;

	(void)state;
	calls_path(path, sizeof(path), NULL, NULL);
	r = sim("POST", path, NULL, "To=%2B15551234561");
	expect_twilio_error(r, 401, 20003);
	it_resp_free(r);
	snprintf(wrong, sizeof(wrong), "%s:not-the-token", cfg.carrier_account_sid);
	r = sim("POST", path, wrong, "To=%2B15551234561");
	expect_twilio_error(r, 401, 20003);
	it_resp_free(r);
	r = sim("GET", path, wrong, NULL);
	expect_twilio_error(r, 401, 20003);
	it_resp_free(r);
	/* Right credentials, another account's path. */
	snprintf(other, sizeof(other), "/2010-04-01/Accounts/ACffffffffffffffffffffffffffffffff/Calls.json");
	r = sim("GET", other, userpwd, NULL);
	expect_twilio_error(r, 404, 20404);
	it_resp_free(r);
	/* Health and test routes need no auth. */
	r = sim("GET", "/healthz", NULL, NULL);
	assert_int_equal(r->status, 200);
	it_resp_free(r);
}

static void test_validation(void **state)
{
	static const struct {
		const char *form;
		long status;
		int code;
	} cases[] = {
		{"To=%2B15551234500&From=%2B15005550006&Url=http%3A%2F%2Fx%2Fv", 400, 21211},
		{"To=5551234561&From=%2B15005550006&Url=http%3A%2F%2Fx%2Fv", 400, 21211},
		{"To=%2B1555abc4561&From=%2B15005550006&Url=http%3A%2F%2Fx%2Fv", 400, 21211},
		{"From=%2B15005550006&Url=http%3A%2F%2Fx%2Fv", 400, 21201},
		{"To=%2B15551234561&Url=http%3A%2F%2Fx%2Fv", 400, 21213},
		{"To=%2B15551234561&From=%2B15005550006", 400, 21205},
		{"To=%2B15551234561&From=%2B15005550006&Url=ftp%3A%2F%2Fx", 400, 21205},
		{"To=%2B15551234561&From=%2B15005550006&Url=http%3A%2F%2Fx%2Fv&StatusCallback=nope", 400, 21609},
		{"To=%2B15551234561&From=%2B15005550006&Url=http%3A%2F%2Fx%2Fv&StatusCallbackEvent=hello", 400, 20001},
		{"To=%2B15551234561&From=%2B15005550006&Url=http%3A%2F%2Fx%2Fv&Timeout=abc", 400, 20001},
		{"To=%2B15551234561&From=%2B15005550006&Url=http%3A%2F%2Fx%2Fv&TimeLimit=0", 400, 20001},
		{"To=%2B15551234561&From=%2B15005550006&Url=http%3A%2F%2Fx%2Fv&StatusCallbackMethod=GET", 400, 20001},
		{"To=%2B1555%ZZ", 400, 20001},
	};
	char path[256];

	(void)state;
	calls_path(path, sizeof(path), NULL, NULL);
	for (size_t i = 0; i < DL_ARRAY_LEN(cases); i++) {
		struct it_resp *r = sim("POST", path, userpwd, cases[i].form);

		expect_twilio_error(r, cases[i].status, cases[i].code);
		it_resp_free(r);
	}
}

struct status_wait {
	const char *sid;
	const char *status;
};

static int call_has_status(void *arg)
{
	struct status_wait *w = arg;
	char path[256];
	struct it_resp *r;
	int ok;

	calls_path(path, sizeof(path), w->sid, NULL);
	r = sim("GET", path, userpwd, NULL);
	ok = r->status == 200 && !strcmp(it_str(r, "status"), w->status);
	it_resp_free(r);
	return ok;
}

/* The /_sim/calls entry of sid (caller frees), or NULL. */
static json_t *sim_entry(const char *to, const char *sid)
{
	char path[128];
	struct it_resp *r;
	json_t *found = NULL, *c;
	size_t i;

	snprintf(path, sizeof(path), "/_sim/calls?to=%%2B%s", to + 1);
	r = sim("GET", path, NULL, NULL);
	assert_int_equal(r->status, 200);
	json_array_foreach(json_object_get(r->json, "calls"), i, c)
		if (!strcmp(json_string_value(json_object_get(c, "sid")), sid))
			found = json_incref(c);
	it_resp_free(r);
	return found;
}

static void test_create_fetch_list(void **state)
{
	char to[20], path[256], query[256], since[DL_TIME_MAX], sid[40];
	struct it_resp *r = NULL, *c;
	json_t *e;

	(void)state;
	dl_time_format(dl_now_ms() - 60000, since);
	c = create(to, 1, NULL, NULL);
	snprintf(sid, sizeof(sid), "%s", it_str(c, "sid"));
	assert_true(sid_valid(sid));
	assert_string_equal(it_str(c, "status"), "queued");
	assert_string_equal(it_str(c, "to"), to);
	assert_string_equal(it_str(c, "from"), "+15005550006");
	assert_string_equal(it_str(c, "direction"), "outbound-api");
	assert_string_equal(it_str(c, "account_sid"), cfg.carrier_account_sid);
	assert_non_null(it_str(c, "date_created"));
	assert_true(json_is_null(json_object_get(c->json, "duration")));
	calls_path(path, sizeof(path), sid, NULL);
	assert_string_equal(it_str(c, "uri"), path);
	it_resp_free(c);

	/* Fetch, and an unknown sid. */
	r = sim("GET", path, userpwd, NULL);
	assert_int_equal(r->status, 200);
	assert_string_equal(it_str(r, "sid"), sid);
	it_resp_free(r);
	calls_path(path, sizeof(path), "CA0123456789abcdef0123456789abcdef", NULL);
	r = sim("GET", path, userpwd, NULL);
	expect_twilio_error(r, 404, 20404);
	it_resp_free(r);

	/* List by To since a time, in each spelling the worker may use. */
	{
		const char *keys[] = {"StartTime%3E", "StartTime>", "StartTime"};

		for (size_t i = 0; i < DL_ARRAY_LEN(keys); i++) {
			char q[128];

			snprintf(q, sizeof(q), "?To=%%2B%s&%s=%s", to + 1, keys[i], since);
			calls_path(query, sizeof(query), NULL, q);
			r = sim("GET", query, userpwd, NULL);
			assert_int_equal(r->status, 200);
			assert_int_equal(json_array_size(json_object_get(r->json, "calls")), 1);
			assert_string_equal(
				json_string_value(json_object_get(json_array_get(json_object_get(r->json, "calls"), 0), "sid")),
				sid);
			it_resp_free(r);
		}
	}
	/* Nothing to that number since tomorrow; a date alone is accepted. */
	{
		char q[128], tomorrow[DL_TIME_MAX];

		dl_time_format(dl_now_ms() + 86400000, tomorrow);
		tomorrow[10] = '\0';
		snprintf(q, sizeof(q), "?To=%%2B%s&StartTime%%3E=%s", to + 1, tomorrow);
		calls_path(query, sizeof(query), NULL, q);
		r = sim("GET", query, userpwd, NULL);
		assert_int_equal(r->status, 200);
		assert_int_equal(json_array_size(json_object_get(r->json, "calls")), 0);
		it_resp_free(r);
		calls_path(query, sizeof(query), NULL, "?StartTime%3E=yesterday");
		r = sim("GET", query, userpwd, NULL);
		expect_twilio_error(r, 400, 20001);
		it_resp_free(r);
	}
	/* /_sim/calls lists it, without auth. */
	e = sim_entry(to, sid);
	assert_non_null(e);
	assert_string_equal(json_string_value(json_object_get(e, "to")), to);
	assert_non_null(json_string_value(json_object_get(e, "createdAt")));
	json_decref(e);
	r = sim("GET", "/_sim/stats", NULL, NULL);
	assert_int_equal(r->status, 200);
	assert_true(it_int(r, "calls") >= 1);
	it_resp_free(r);
}

static void test_hangup(void **state)
{
	char to[20], path[256], sid[40];
	struct status_wait w;
	struct it_resp *r;
	int64_t t0;
	json_t *e;

	(void)state;
	/* A call hung up before it is answered is canceled. */
	t0 = dl_mono_ms();
	r = create(to, 2, NULL, NULL);
	snprintf(sid, sizeof(sid), "%s", it_str(r, "sid"));
	it_resp_free(r);
	calls_path(path, sizeof(path), sid, NULL);
	r = sim("POST", path, userpwd, "Status=completed");
	assert_int_equal(r->status, 200);
	if (dl_mono_ms() - t0 < sec_ms(cfg.sim_ring_seconds)) {
		assert_string_equal(it_str(r, "status"), "canceled");
		assert_string_equal(it_str(r, "duration"), "0");
	}
	it_resp_free(r);
	e = sim_entry(to, sid);
	assert_non_null(e);
	assert_true(!strcmp(json_string_value(json_object_get(e, "status")), "canceled") ||
		    !strcmp(json_string_value(json_object_get(e, "status")), "completed"));
	json_decref(e);

	/* A live call hung up completes with the talk so far. */
	r = create(to, 3, NULL, NULL);
	snprintf(sid, sizeof(sid), "%s", it_str(r, "sid"));
	it_resp_free(r);
	w.sid = sid;
	w.status = "in-progress";
	assert_true(it_poll(call_has_status, &w, call_wait_ms()));
	calls_path(path, sizeof(path), sid, NULL);
	r = sim("POST", path, userpwd, "Status=completed");
	assert_int_equal(r->status, 200);
	assert_string_equal(it_str(r, "status"), "completed");
	assert_string_equal(it_str(r, "answered_by"), "human");
	assert_true(atoi(it_str(r, "duration")) <= cfg.sim_call_seconds);
	assert_non_null(it_str(r, "end_time"));
	it_resp_free(r);
	/* Hanging up an ended call changes nothing. */
	r = sim("POST", path, userpwd, "Status=canceled");
	assert_int_equal(r->status, 200);
	assert_string_equal(it_str(r, "status"), "completed");
	it_resp_free(r);
	r = sim("POST", path, userpwd, "Status=ringing");
	expect_twilio_error(r, 400, 20001);
	it_resp_free(r);
	calls_path(path, sizeof(path), "CA0123456789abcdef0123456789abcdef", NULL);
	r = sim("POST", path, userpwd, "Status=completed");
	expect_twilio_error(r, 404, 20404);
	it_resp_free(r);
	e = sim_entry(to, sid);
	assert_non_null(e);
	assert_string_equal(json_string_value(json_object_get(e, "status")), "completed");
	assert_string_equal(json_string_value(json_object_get(e, "answeredBy")), "human");
	json_decref(e);
}

/* One expected callback sequence. */
struct cb_case {
	int digit;
	const char *extra;       /* appended to the create form */
	int n;                   /* callbacks expected */
	const char *statuses[4]; /* by SequenceNumber */
	const char *answered_by; /* on the final one; "" for none */
	int duration;            /* on the final one; -2: the configured call length */
};

static const char all_events[] = "&StatusCallbackEvent=initiated+ringing&StatusCallbackEvent=answered"
				 "&StatusCallbackEvent=completed&StatusCallbackMethod=POST";

static void test_callbacks(void **state)
{
	int call_s = cfg.sim_call_seconds, vm_s = call_s / 3 + (call_s % 3 != 0);
	char extra[8][256];
	struct cb_case cases[8];
	char to[8][20], path[8][64], sids[8][40];
	int ncases = 0;

	(void)state;
	if (vm_s < 1)
		vm_s = 1;
	/* A person answers: every event, in order, the full length. */
	snprintf(extra[ncases], sizeof(extra[0]), "%s", all_events);
	cases[ncases++] = (struct cb_case){1, extra[0], 4, {"initiated", "ringing", "in-progress", "completed"}, "human", call_s};
	/* Busy. */
	snprintf(extra[ncases], sizeof(extra[0]), "%s", all_events);
	cases[ncases++] = (struct cb_case){8, extra[1], 3, {"initiated", "ringing", "busy"}, "", 0};
	/* Voicemail, with no subscription: only the end is reported. */
	cases[ncases++] = (struct cb_case){6, "", 1, {"completed"}, "machine_start", vm_s};
	/* TimeLimit cuts an answered call. */
	snprintf(extra[ncases], sizeof(extra[0]), "&StatusCallbackEvent=answered+completed&TimeLimit=1");
	cases[ncases++] = (struct cb_case){2, extra[3], 2, {"in-progress", "completed"}, "human", call_s < 1 ? call_s : 1};
	/* No answer, and carrier failure. */
	snprintf(extra[ncases], sizeof(extra[0]), "&StatusCallbackEvent=ringing+completed");
	cases[ncases++] = (struct cb_case){7, extra[4], 2, {"ringing", "no-answer"}, "", 0};
	snprintf(extra[ncases], sizeof(extra[0]), "%s", all_events);
	cases[ncases++] = (struct cb_case){9, extra[5], 2, {"initiated", "failed"}, "", 0};
	/* A Timeout shorter than the ringing: nobody gets to answer. */
	if (cfg.sim_ring_seconds > 1) {
		snprintf(extra[ncases], sizeof(extra[0]), "&Timeout=1");
		cases[ncases++] = (struct cb_case){4, extra[6], 1, {"no-answer"}, "", 0};
	}

	/* All calls run at once; each has its own callback path. */
	for (int i = 0; i < ncases; i++) {
		char url[160];
		struct it_resp *r;

		snprintf(path[i], sizeof(path[i]), "/cb/%d-%d", (int)getpid(), i);
		snprintf(url, sizeof(url), "http://127.0.0.1:%d%.63s", rx.port, path[i]);
		r = create(to[i], cases[i].digit, url, cases[i].extra);
		snprintf(sids[i], sizeof(sids[i]), "%s", it_str(r, "sid"));
		it_resp_free(r);
	}
	for (int i = 0; i < ncases; i++) {
		struct final_wait w = {path[i], cases[i].n};
		struct rx_item got[8];
		int n;

		if (!it_poll(rx_has, &w, call_wait_ms()))
			fail_msg("case %d (digit %d): %d of %d callbacks", i, cases[i].digit, rx_get(path[i], got, 8),
				 cases[i].n);
		n = rx_get(path[i], got, 8);
		assert_int_equal(n, cases[i].n);
		for (int k = 0; k < n; k++) {
			if (got[k].seq != k || strcmp(got[k].status, cases[i].statuses[k]) != 0)
				fail_msg("case %d (digit %d): callback %d is #%d %s, want #%d %s", i, cases[i].digit, k,
					 got[k].seq, got[k].status, k, cases[i].statuses[k]);
			assert_true(got[k].sig_ok);
			assert_string_equal(got[k].sid, sids[i]);
			assert_string_equal(got[k].account, cfg.carrier_account_sid);
			assert_string_equal(got[k].source, "call-progress-events");
			if (k < n - 1)
				assert_int_equal(got[k].duration, -1);
		}
		assert_string_equal(got[n - 1].answered_by, cases[i].answered_by);
		assert_int_equal(got[n - 1].duration, cases[i].duration);
		/* The simulator counted what the receiver took. */
		{
			json_t *e = NULL;
			int64_t deadline = dl_mono_ms() + 5000;

			do {
				json_decref(e);
				e = sim_entry(to[i], sids[i]);
				assert_non_null(e);
			} while (json_integer_value(json_object_get(e, "callbacks")) < n && dl_mono_ms() < deadline);
			assert_int_equal(json_integer_value(json_object_get(e, "callbacks")), n);
			assert_string_equal(json_string_value(json_object_get(e, "status")),
					    cases[i].statuses[cases[i].n - 1]);
			json_decref(e);
		}
	}
}

/* A receiver that fails gets the same callback again. */
static void test_callback_retry(void **state)
{
	char to[20], url[128], path[64];
	struct final_wait w = {path, 1};
	struct rx_item got[4];
	struct it_resp *r;

	(void)state;
	snprintf(path, sizeof(path), "/cb/flaky-%d", (int)getpid());
	snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", rx.port, path);
	pthread_mutex_lock(&rx.lock);
	rx.flaky_left = 1;
	pthread_mutex_unlock(&rx.lock);
	r = create(to, 8, url, NULL);
	it_resp_free(r);
	assert_true(it_poll(rx_has, &w, call_wait_ms()));
	assert_int_equal(rx_get(path, got, 4), 1);
	assert_string_equal(got[0].status, "busy");
	assert_int_equal(got[0].seq, 0);
	/* One refused, one delivered: the same SequenceNumber twice. */
	assert_int_equal(rx_count_all(path), 2);
}

static int free_port(void)
{
	struct sockaddr_in sa = {0};
	socklen_t len = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM, 0), port;

	assert_true(fd >= 0);
	sa.sin_family = AF_INET;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
	port = ntohs(sa.sin_port);
	close(fd);
	return port;
}

struct private_sim {
	pid_t pid;
	char url[64];
};

static int sim_up(void *arg)
{
	struct private_sim *p = arg;
	CURL *h = curl_easy_init();
	char url[128];
	long code = 0;

	snprintf(url, sizeof(url), "%s/healthz", p->url);
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_TIMEOUT, 2L);
	curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
	if (curl_easy_perform(h) == CURLE_OK)
		curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
	curl_easy_cleanup(h);
	return code == 200;
}

/* Starts a simulator of its own with extra DIALER_* settings ("K=V", NULL-ended). */
static void private_start(struct private_sim *p, ...)
{
	const char *bin = getenv("DIALER_SIM_BIN") ? getenv("DIALER_SIM_BIN") : "build/telephony-sim";
	int port = free_port();
	va_list ap;

	snprintf(p->url, sizeof(p->url), "http://127.0.0.1:%d", port);
	p->pid = fork();
	assert_true(p->pid >= 0);
	if (p->pid == 0) {
		char portenv[32];
		const char *kv;

		va_start(ap, p);
		while ((kv = va_arg(ap, const char *)) != NULL)
			putenv((char *)kv);
		va_end(ap);
		snprintf(portenv, sizeof(portenv), "DIALER_SIM_PORT=%d", port);
		putenv(portenv);
		if (freopen("/dev/null", "w", stdout) == NULL)
			_exit(126);
		execl(bin, bin, (char *)NULL);
		_exit(127);
	}
	if (!it_poll(sim_up, p, 10000))
		fail_msg("the private simulator (%s) did not start", bin);
}

/* Stops it with SIGTERM; it must drain and exit 0. */
static void private_stop(struct private_sim *p)
{
	int status;

	kill(p->pid, SIGTERM);
	assert_int_equal(waitpid(p->pid, &status, 0), p->pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
}

static void test_fault_injection(void **state)
{
	struct private_sim p;
	char path[256], form[256], to[20];
	struct it_resp *r;
	int64_t t0;

	(void)state;
	calls_path(path, sizeof(path), NULL, NULL);
	it_phone(to, 1);
	snprintf(form, sizeof(form), "To=%%2B%s&From=%%2B15005550006&Url=http%%3A%%2F%%2Fx%%2Fv", to + 1);

	/* Every create refused with 429, nothing created. */
	private_start(&p, "DIALER_SIM_RATE_429_PCT=100", NULL);
	r = sim_at(p.url, "POST", path, userpwd, form);
	expect_twilio_error(r, 429, 20429);
	it_resp_free(r);
	r = sim_at(p.url, "GET", "/_sim/calls", NULL, NULL);
	assert_int_equal(json_array_size(json_object_get(r->json, "calls")), 0);
	it_resp_free(r);
	private_stop(&p);

	/* Every create answered 500 after creating, each answer late. */
	private_start(&p, "DIALER_SIM_RATE_5XX_PCT=100", "DIALER_SIM_LATENCY_MS=150", NULL);
	t0 = dl_mono_ms();
	r = sim_at(p.url, "POST", path, userpwd, form);
	assert_true(dl_mono_ms() - t0 >= 150);
	expect_twilio_error(r, 500, 20500);
	it_resp_free(r);
	r = sim_at(p.url, "GET", "/_sim/calls", NULL, NULL);
	assert_int_equal(json_array_size(json_object_get(r->json, "calls")), 1);
	assert_string_equal(json_string_value(json_object_get(json_array_get(json_object_get(r->json, "calls"), 0), "to")),
			    to);
	it_resp_free(r);
	r = sim_at(p.url, "GET", "/_sim/stats", NULL, NULL);
	assert_int_equal(json_integer_value(json_object_get(json_object_get(r->json, "faults"), "serverErrors")), 1);
	it_resp_free(r);
	/* The worker's reconcile finds it. */
	{
		char q[128], lpath[256];

		snprintf(q, sizeof(q), "?To=%%2B%s", to + 1);
		calls_path(lpath, sizeof(lpath), NULL, q);
		r = sim_at(p.url, "GET", lpath, userpwd, NULL);
		assert_int_equal(r->status, 200);
		assert_int_equal(json_array_size(json_object_get(r->json, "calls")), 1);
		it_resp_free(r);
	}
	r = sim_at(p.url, "GET", "/metrics", NULL, NULL);
	assert_int_equal(r->status, 200);
	assert_non_null(strstr(r->body, "dialer_sim_faults_total{kind=\"5xx\"} 1"));
	it_resp_free(r);
	private_stop(&p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_auth),
		cmocka_unit_test(test_validation),
		cmocka_unit_test(test_create_fetch_list),
		cmocka_unit_test(test_hangup),
		cmocka_unit_test(test_callbacks),
		cmocka_unit_test(test_callback_retry),
		cmocka_unit_test(test_fault_injection),
	};

	return cmocka_run_group_tests_name("telephony-sim", tests, setup, teardown);
}
