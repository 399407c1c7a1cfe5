/* The simulator's routes: the Twilio Calls subset under
 * /2010-04-01/Accounts/{sid} (Basic auth, injected latency, 429s and
 * 5xx-after-create), /_sim/calls and /_sim/stats for tests, the voice URL of
 * the local flow, and the health and metrics routes of every service. */
#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "dl_form.h"
#include "dl_log.h"
#include "dl_metrics.h"
#include "sim.h"

#define ACCOUNTS "/2010-04-01/Accounts/"
#define ROUTE_CALLS "/2010-04-01/Accounts/:sid/Calls.json"
#define ROUTE_CALL "/2010-04-01/Accounts/:sid/Calls/:callSid.json"
#define PAGE_SIZE_DEFAULT 50
#define PAGE_SIZE_MAX 1000
/* /_sim/calls copies calls out of the store this many at a time, so the
 * lock is never held for long. */
#define DUMP_BATCH 4096

/* A Twilio error body: {code, message, more_info, status}. */
static void tw_error(struct dl_http_resp *resp, int status, int code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static void tw_error(struct dl_http_resp *resp, int status, int code, const char *fmt, ...)
{
	char msg[256], info[96];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	snprintf(info, sizeof(info), "https://www.twilio.com/docs/errors/%d", code);
	dl_http_json(resp, status,
		     json_pack("{s:i, s:s, s:s, s:i}", "code", code, "message", msg, "more_info", info, "status",
			       status));
}

/* A per-thread xorshift: fault rolls need no lock and no quality. */
static int roll_pct(void)
{
	static __thread uint64_t x;

	if (x == 0 && (dl_random_bytes(&x, sizeof(x)) < 0 || x == 0))
		x = (uint64_t)dl_mono_ms() | 1;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return (int)(x % 100);
}

static json_t *date_or_null(int64_t ms)
{
	char d[SIM_DATE_MAX];

	if (ms == 0)
		return json_null();
	sim_rfc2822(ms, d);
	return json_string(d);
}

static bool ended(int status)
{
	return status >= SIM_COMPLETED;
}

/* The call resource as the carrier shows it. */
static json_t *call_json(struct sim *s, const struct sim_call *c)
{
	char sid[SIM_SID_LEN], uri[160], dur[16];
	const char *ab = sim_answered_by_name(c->answered_by);
	json_t *o = json_object();

	sim_sid_format(c->sid, sid);
	snprintf(uri, sizeof(uri), "/2010-04-01/Accounts/%s/Calls/%s.json", s->cfg->carrier_account_sid, sid);
	snprintf(dur, sizeof(dur), "%u", c->duration);
	json_object_set_new(o, "sid", json_string(sid));
	json_object_set_new(o, "account_sid", json_string(s->cfg->carrier_account_sid));
	json_object_set_new(o, "to", json_string(c->to));
	json_object_set_new(o, "from", json_string(c->from));
	json_object_set_new(o, "status", json_string(sim_status_name(c->status)));
	json_object_set_new(o, "direction", json_string("outbound-api"));
	json_object_set_new(o, "api_version", json_string("2010-04-01"));
	json_object_set_new(o, "date_created", date_or_null(c->created_ms));
	json_object_set_new(o, "start_time", date_or_null(c->start_ms));
	json_object_set_new(o, "end_time", date_or_null(c->end_ms));
	json_object_set_new(o, "duration", ended(c->status) ? json_string(dur) : json_null());
	json_object_set_new(o, "answered_by", ab ? json_string(ab) : json_null());
	json_object_set_new(o, "uri", json_string(uri));
	return o;
}

/* True when the Authorization header carries account_sid:auth_token. */
static bool authorized(struct sim *s, struct dl_http_req *req)
{
	const char *h = dl_http_header(req, "Authorization");
	unsigned char dec[384];
	size_t in, want = strlen(s->basic_auth);
	int n;

	if (h == NULL || strncasecmp(h, "Basic ", 6) != 0)
		return false;
	h += 6;
	while (*h == ' ')
		h++;
	in = strlen(h);
	if (in == 0 || in % 4 != 0 || in / 4 * 3 > sizeof(dec))
		return false;
	n = EVP_DecodeBlock(dec, (const unsigned char *)h, (int)in);
	if (n < 0)
		return false;
	/* EVP_DecodeBlock counts the padding as decoded zero bytes. */
	if (h[in - 1] == '=')
		n--;
	if (h[in - 2] == '=')
		n--;
	return (size_t)n == want && CRYPTO_memcmp(dec, s->basic_auth, want) == 0;
}

static bool url_ok(const char *u)
{
	size_t n = strlen(u);

	if (n > SIM_URL_MAX || (strncmp(u, "http://", 7) != 0 && strncmp(u, "https://", 8) != 0))
		return false;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)u[i] <= ' ' || u[i] == 0x7f)
			return false;
	return n > 8;
}

/* Parses a decimal integer of at most 9 digits. */
static bool int_ok(const char *v, int *out)
{
	size_t n = strlen(v);
	int x = 0;

	if (n == 0 || n > 9)
		return false;
	for (size_t i = 0; i < n; i++) {
		if (v[i] < '0' || v[i] > '9')
			return false;
		x = x * 10 + (v[i] - '0');
	}
	*out = x;
	return true;
}

/* StatusCallbackEvent: repeated and/or space-separated names. */
static bool events_parse(const struct dl_form *f, uint8_t *out, char *bad, size_t badlen)
{
	static const struct {
		const char *name;
		uint8_t bit;
	} names[] = {
		{"initiated", SIM_EV_INITIATED},
		{"ringing", SIM_EV_RINGING},
		{"answered", SIM_EV_ANSWERED},
		{"completed", SIM_EV_COMPLETED},
	};
	const char *v;
	uint8_t ev = 0;
	bool any = false;

	for (int i = 0; (v = dl_form_get_nth(f, "StatusCallbackEvent", i)) != NULL; i++) {
		while (*v) {
			size_t len = strcspn(v, " ,");
			bool known = false;

			for (size_t k = 0; len > 0 && k < DL_ARRAY_LEN(names); k++) {
				if (strlen(names[k].name) == len && strncmp(v, names[k].name, len) == 0) {
					ev |= names[k].bit;
					known = true;
				}
			}
			if (len > 0 && !known) {
				snprintf(bad, badlen, "%.*s", (int)(len > 32 ? 32 : len), v);
				return false;
			}
			any = any || len > 0;
			v += len;
			v += strspn(v, " ,");
		}
	}
	/* Without a subscription the carrier reports only the end. */
	*out = any ? ev : SIM_EV_COMPLETED;
	return true;
}

static bool phone_invalid(const char *p)
{
	size_t n = strlen(p);

	return !dl_phone_valid(p) || n >= SIM_PHONE_MAX || (n >= 2 && !strcmp(p + n - 2, "00"));
}

static void calls_create(struct sim *s, struct dl_http_req *req, struct dl_http_resp *resp)
{
	const struct dl_config *cfg = s->cfg;
	struct dl_form f;
	struct sim_create cr;
	struct sim_call call;
	const char *to, *from, *url, *cb, *method, *v;
	char bad[40];
	int rc;

	dl_form_init(&f);
	if (cfg->sim_rate_429_pct > 0 && roll_pct() < cfg->sim_rate_429_pct) {
		atomic_fetch_add(&s->faults_429, 1);
		tw_error(resp, 429, 20429, "Too Many Requests");
		goto out;
	}
	if (req->body_len > DL_FORM_MAX_BYTES) {
		tw_error(resp, 413, 20001, "the form is larger than %d bytes", DL_FORM_MAX_BYTES);
		goto out;
	}
	if (dl_form_parse(req->body, req->body_len, &f) < 0) {
		tw_error(resp, 400, 20001, "the body is not a valid application/x-www-form-urlencoded form");
		goto out;
	}
	memset(&cr, 0, sizeof(cr));
	to = dl_form_get(&f, "To");
	from = dl_form_get(&f, "From");
	url = dl_form_get(&f, "Url");
	cb = dl_form_get(&f, "StatusCallback");
	method = dl_form_get(&f, "StatusCallbackMethod");
	if (to == NULL || !*to) {
		tw_error(resp, 400, 21201, "No 'To' number is specified");
		goto out;
	}
	if (phone_invalid(to)) {
		tw_error(resp, 400, 21211, "The 'To' number %.32s is not a valid phone number.", to);
		goto out;
	}
	if (from == NULL || !*from) {
		tw_error(resp, 400, 21213, "No 'From' number is specified");
		goto out;
	}
	if (!dl_phone_valid(from) || strlen(from) >= SIM_PHONE_MAX) {
		tw_error(resp, 400, 21212, "The 'From' number %.32s is not a valid phone number.", from);
		goto out;
	}
	if (url == NULL || !url_ok(url)) {
		tw_error(resp, 400, 21205, "Url is not a valid URL");
		goto out;
	}
	if (cb != NULL && *cb && !url_ok(cb)) {
		tw_error(resp, 400, 21609, "StatusCallback is not a valid URL");
		goto out;
	}
	if (method != NULL && strcasecmp(method, "POST") != 0) {
		tw_error(resp, 400, 20001, "StatusCallbackMethod must be POST");
		goto out;
	}
	if (!events_parse(&f, &cr.events, bad, sizeof(bad))) {
		tw_error(resp, 400, 20001,
			 "StatusCallbackEvent %s is not one of initiated, ringing, answered, completed", bad);
		goto out;
	}
	cr.timeout_s = SIM_TIMEOUT_DEFAULT;
	if ((v = dl_form_get(&f, "Timeout")) != NULL && (!int_ok(v, &cr.timeout_s) || cr.timeout_s < 1)) {
		tw_error(resp, 400, 20001, "Timeout must be a positive integer");
		goto out;
	}
	if (cr.timeout_s > SIM_TIMEOUT_MAX)
		cr.timeout_s = SIM_TIMEOUT_MAX;
	cr.time_limit_s = SIM_TIME_LIMIT_DEFAULT;
	if ((v = dl_form_get(&f, "TimeLimit")) != NULL &&
	    (!int_ok(v, &cr.time_limit_s) || cr.time_limit_s < 1 || cr.time_limit_s > SIM_TIME_LIMIT_MAX)) {
		tw_error(resp, 400, 20001, "TimeLimit must be an integer from 1 to %d", SIM_TIME_LIMIT_MAX);
		goto out;
	}
	cr.to = to;
	cr.from = from;
	cr.callback = cb != NULL && *cb ? cb : NULL;
	rc = sim_calls_create(s, &cr, &call);
	if (rc == -ENOSPC) {
		tw_error(resp, 503, 20503, "the simulator holds %u calls, its most", SIM_MAX_CALLS);
		goto out;
	}
	if (rc < 0) {
		tw_error(resp, 500, 20500, "Internal Server Error");
		goto out;
	}
	/* The ambiguous answer: the call exists and proceeds, the caller is told 500. */
	if (cfg->sim_rate_5xx_pct > 0 && roll_pct() < cfg->sim_rate_5xx_pct) {
		atomic_fetch_add(&s->faults_5xx, 1);
		tw_error(resp, 500, 20500, "Internal Server Error");
		goto out;
	}
	dl_http_json(resp, 201, call_json(s, &call));
out:
	dl_form_free(&f);
}

/* Parses StartTime: an ISO 8601 time or a date (midnight UTC). */
static int since_parse(const char *v, int64_t *out)
{
	char buf[40];

	if (strlen(v) == 10) {
		snprintf(buf, sizeof(buf), "%sT00:00:00Z", v);
		v = buf;
	}
	return dl_time_parse(v, out);
}

static void calls_list(struct sim *s, struct dl_http_req *req, struct dl_http_resp *resp)
{
	const char *to = dl_http_query(req, "To"), *v;
	char tobuf[SIM_PHONE_MAX + 8], uri[160];
	struct sim_call *found = NULL;
	int64_t since = 0;
	int size = PAGE_SIZE_DEFAULT, n;
	json_t *arr, *o;

	/* "StartTime>=x" arrives as key "StartTime>"; plain "StartTime=x" too. */
	v = dl_http_query(req, "StartTime>");
	if (v == NULL)
		v = dl_http_query(req, "StartTime");
	if (v != NULL && since_parse(v, &since) < 0) {
		tw_error(resp, 400, 20001, "StartTime must be a date or an ISO 8601 time");
		return;
	}
	if ((v = dl_http_query(req, "PageSize")) != NULL && (!int_ok(v, &size) || size < 1)) {
		tw_error(resp, 400, 20001, "PageSize must be a positive integer");
		return;
	}
	if (size > PAGE_SIZE_MAX)
		size = PAGE_SIZE_MAX;
	if (to != NULL) {
		/* An unencoded '+' may have been read as a space. */
		snprintf(tobuf, sizeof(tobuf), "%s", to);
		if (tobuf[0] == ' ')
			tobuf[0] = '+';
		to = tobuf;
	}
	found = calloc((size_t)size, sizeof(*found));
	if (found == NULL) {
		tw_error(resp, 500, 20500, "Internal Server Error");
		return;
	}
	n = sim_calls_list(s, to && *to ? to : NULL, since, size, found);
	arr = json_array();
	for (int i = 0; i < n; i++)
		json_array_append_new(arr, call_json(s, &found[i]));
	free(found);
	snprintf(uri, sizeof(uri), "/2010-04-01/Accounts/%s/Calls.json", s->cfg->carrier_account_sid);
	o = json_pack("{s:o, s:i, s:i, s:i, s:i, s:s, s:s, s:n, s:n}", "calls", arr, "page", 0, "page_size", size,
		      "start", 0, "end", n > 0 ? n - 1 : 0, "uri", uri, "first_page_uri", uri, "next_page_uri",
		      "previous_page_uri");
	dl_http_json(resp, 200, o);
}

static void call_not_found(struct dl_http_resp *resp, const char *path)
{
	tw_error(resp, 404, 20404, "The requested resource %.200s was not found", path);
}

static void call_fetch(struct sim *s, struct dl_http_req *req, struct dl_http_resp *resp, const char *sid)
{
	struct sim_call call;

	if (sim_calls_get(s, sid, &call) < 0)
		return call_not_found(resp, req->url);
	dl_http_json(resp, 200, call_json(s, &call));
}

static void call_update(struct sim *s, struct dl_http_req *req, struct dl_http_resp *resp, const char *sid)
{
	struct dl_form f;
	struct sim_call call;
	const char *status;
	int rc;

	if (req->body_len > DL_FORM_MAX_BYTES || dl_form_parse(req->body, req->body_len, &f) < 0) {
		tw_error(resp, 400, 20001, "the body is not a valid application/x-www-form-urlencoded form");
		return;
	}
	status = dl_form_get(&f, "Status");
	if (status == NULL) {
		rc = sim_calls_get(s, sid, &call);
	} else if (!strcmp(status, "completed") || !strcmp(status, "canceled")) {
		rc = sim_calls_hangup(s, sid, !strcmp(status, "completed") ? SIM_COMPLETED : SIM_CANCELED, &call);
	} else {
		tw_error(resp, 400, 20001, "Status must be completed or canceled");
		dl_form_free(&f);
		return;
	}
	dl_form_free(&f);
	if (rc < 0)
		return call_not_found(resp, req->url);
	dl_http_json(resp, 200, call_json(s, &call));
}

/* /2010-04-01/Accounts/{sid}/Calls.json and /Calls/{CallSid}.json. */
static void carrier(struct sim *s, struct dl_http_req *req, struct dl_http_resp *resp)
{
	const char *rest = req->url + strlen(ACCOUNTS), *slash = strchr(rest, '/');
	const char *acct = s->cfg->carrier_account_sid;
	bool get = !strcmp(req->method, "GET"), post = !strcmp(req->method, "POST");

	resp->route = "/2010-04-01/Accounts/:sid/*";
	if (s->cfg->sim_latency_ms > 0)
		dl_sleep_ms(s->cfg->sim_latency_ms, NULL);
	if (!authorized(s, req)) {
		dl_http_json(resp, 401, json_pack("{s:i, s:s, s:s, s:i}", "code", 20003, "message", "Authenticate",
						  "more_info", "https://www.twilio.com/docs/errors/20003", "status",
						  401));
		return;
	}
	if (slash == NULL || (size_t)(slash - rest) != strlen(acct) || strncmp(rest, acct, strlen(acct)) != 0)
		return call_not_found(resp, req->url);
	if (!strcmp(slash, "/Calls.json")) {
		resp->route = ROUTE_CALLS;
		if (post)
			return calls_create(s, req, resp);
		if (get)
			return calls_list(s, req, resp);
		tw_error(resp, 405, 20004, "Method not allowed");
		return;
	}
	if (!strncmp(slash, "/Calls/", 7) && strlen(slash) == 7 + SIM_SID_LEN - 1 + 5 &&
	    !strcmp(slash + 7 + SIM_SID_LEN - 1, ".json")) {
		char sid[SIM_SID_LEN];

		resp->route = ROUTE_CALL;
		memcpy(sid, slash + 7, SIM_SID_LEN - 1);
		sid[SIM_SID_LEN - 1] = '\0';
		if (get)
			return call_fetch(s, req, resp, sid);
		if (post)
			return call_update(s, req, resp, sid);
		tw_error(resp, 405, 20004, "Method not allowed");
		return;
	}
	call_not_found(resp, req->url);
}

static void dump_one(FILE *m, const struct sim_call *c, bool first)
{
	char sid[SIM_SID_LEN], created[DL_TIME_MAX];
	const char *ab = sim_answered_by_name(c->answered_by);

	sim_sid_format(c->sid, sid);
	dl_time_format(c->created_ms, created);
	/* Every field is a sid, an E.164 number, a time or a fixed word: no escaping needed. */
	fprintf(m, "%s{\"sid\":\"%s\",\"to\":\"%s\",\"from\":\"%s\",\"createdAt\":\"%s\",\"status\":\"%s\",",
		first ? "" : ",", sid, c->to, c->from, created, sim_status_name(c->status));
	if (ended(c->status))
		fprintf(m, "\"duration\":%u,", c->duration);
	else
		fputs("\"duration\":null,", m);
	if (ab)
		fprintf(m, "\"answeredBy\":\"%s\",", ab);
	else
		fputs("\"answeredBy\":null,", m);
	fprintf(m, "\"callbacks\":%u}", c->delivered);
}

/* GET /_sim/calls[?to=+1...][&offset=N][&limit=N]: calls in creation order. */
static void sim_calls_dump(struct sim *s, struct dl_http_req *req, struct dl_http_resp *resp)
{
	const char *to = dl_http_query(req, "to"), *v;
	int offset = 0, limit = (int)SIM_MAX_CALLS;
	struct sim_call *batch;
	char *text = NULL, tobuf[SIM_PHONE_MAX + 8];
	size_t len = 0;
	bool first = true;
	FILE *m;

	if (((v = dl_http_query(req, "offset")) != NULL && !int_ok(v, &offset)) ||
	    ((v = dl_http_query(req, "limit")) != NULL && !int_ok(v, &limit))) {
		dl_http_error(resp, 400, "offset and limit must be non-negative integers");
		return;
	}
	batch = calloc(DUMP_BATCH, sizeof(*batch));
	m = batch ? open_memstream(&text, &len) : NULL;
	if (m == NULL) {
		free(batch);
		dl_http_error(resp, 500, "out of memory");
		return;
	}
	fputs("{\"calls\":[", m);
	if (to != NULL) {
		int n;

		snprintf(tobuf, sizeof(tobuf), "%s", to);
		if (tobuf[0] == ' ')
			tobuf[0] = '+';
		/* The index gives them newest first. */
		n = sim_calls_list(s, tobuf, 0, DUMP_BATCH, batch);
		for (int i = n - 1 - offset; i >= 0 && n - 1 - i - offset < limit; i--) {
			dump_one(m, &batch[i], first);
			first = false;
		}
	} else {
		uint32_t at = (uint32_t)offset, left = (uint32_t)limit, got;

		while (left > 0 && (got = sim_calls_range(s, at, left < DUMP_BATCH ? left : DUMP_BATCH, batch)) > 0) {
			for (uint32_t i = 0; i < got; i++) {
				dump_one(m, &batch[i], first);
				first = false;
			}
			at += got;
			left -= got;
		}
	}
	fputs("]}", m);
	free(batch);
	if (fclose(m) != 0 || text == NULL) {
		free(text);
		dl_http_error(resp, 500, "out of memory");
		return;
	}
	free(resp->body);
	resp->status = 200;
	resp->content_type = "application/json";
	resp->body = text;
	resp->body_len = len;
}

static void sim_stats_json(struct sim *s, struct dl_http_resp *resp)
{
	struct sim_stats st;
	struct sim_cb_timing tm;
	json_t *by = json_object();
	uint64_t live;

	sim_calls_stats(s, &st);
	sim_cb_timing(s, &tm);
	live = st.by_status[SIM_QUEUED] + st.by_status[SIM_RINGING] + st.by_status[SIM_IN_PROGRESS];
	for (int i = 0; i < SIM_NSTATUS; i++)
		json_object_set_new(by, sim_status_name(i), json_integer((json_int_t)st.by_status[i]));
	dl_http_json(resp, 200,
		     json_pack("{s:I, s:I, s:o, s:{s:I, s:I, s:I, s:I, s:I, s:{s:I, s:I, s:I, s:I}}, s:{s:I, s:I}}", "calls",
			       (json_int_t)st.calls, "live", (json_int_t)live, "byStatus", by, "callbacks",
			       "generated", (json_int_t)atomic_load(&s->cb_generated), "delivered",
			       (json_int_t)atomic_load(&s->cb_delivered), "retried",
			       (json_int_t)atomic_load(&s->cb_retried), "dropped",
			       (json_int_t)atomic_load(&s->cb_dropped), "pending", (json_int_t)sim_cb_pending(s),
			       "timing", "delivered", (json_int_t)tm.delivered, "queuedUs", (json_int_t)tm.queued_us,
			       "sendUs", (json_int_t)tm.send_us, "answerUs", (json_int_t)tm.answer_us, "faults", "rateLimited", (json_int_t)atomic_load(&s->faults_429), "serverErrors",
			       (json_int_t)atomic_load(&s->faults_5xx)));
}

void sim_http_metrics_register(void)
{
	dl_metrics_register("dialer_sim_calls_created_total", "counter", "Calls the simulator created.");
	dl_metrics_register("dialer_sim_calls", "gauge", "Simulated calls by status.");
	dl_metrics_register("dialer_sim_faults_total", "counter", "Injected faults by kind.");
	dl_metrics_register("dialer_sim_callbacks_total", "counter",
			    "Status callbacks generated, delivered, retried and dropped.");
	dl_metrics_register("dialer_sim_callbacks_pending", "gauge", "Status callbacks queued or in flight.");
}

/* Counters live in the store and in atomics; /metrics copies them. */
static void metrics_refresh(struct sim *s)
{
	static const char *const cb_results[] = {"generated", "delivered", "retried", "dropped"};
	atomic_uint_fast64_t *cb_vals[] = {&s->cb_generated, &s->cb_delivered, &s->cb_retried, &s->cb_dropped};
	struct sim_stats st;
	char labels[64];

	sim_calls_stats(s, &st);
	dl_metrics_set("dialer_sim_calls_created_total", "", (double)st.calls);
	for (int i = 0; i < SIM_NSTATUS; i++) {
		snprintf(labels, sizeof(labels), "status=\"%s\"", sim_status_name(i));
		dl_metrics_set("dialer_sim_calls", labels, (double)st.by_status[i]);
	}
	dl_metrics_set("dialer_sim_faults_total", "kind=\"429\"", (double)atomic_load(&s->faults_429));
	dl_metrics_set("dialer_sim_faults_total", "kind=\"5xx\"", (double)atomic_load(&s->faults_5xx));
	for (size_t i = 0; i < DL_ARRAY_LEN(cb_results); i++) {
		snprintf(labels, sizeof(labels), "result=\"%s\"", cb_results[i]);
		dl_metrics_set("dialer_sim_callbacks_total", labels, (double)atomic_load(cb_vals[i]));
	}
	dl_metrics_set("dialer_sim_callbacks_pending", "", (double)sim_cb_pending(s));
}

void sim_http_handle(void *ctx, struct dl_http_req *req, struct dl_http_resp *resp)
{
	static const char twiml[] = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
				    "<Response><Say>Hello from the Dialer simulator.</Say></Response>\n";
	struct sim *s = ctx;
	bool get = !strcmp(req->method, "GET");

	if (get && !strcmp(req->url, "/metrics"))
		metrics_refresh(s);
	if (dl_service_health(s->svc, req, resp))
		return;
	if (!strncmp(req->url, ACCOUNTS, strlen(ACCOUNTS)))
		return carrier(s, req, resp);
	if (get && !strcmp(req->url, "/_sim/calls")) {
		resp->route = "/_sim/calls";
		return sim_calls_dump(s, req, resp);
	}
	if (get && !strcmp(req->url, "/_sim/stats")) {
		resp->route = "/_sim/stats";
		return sim_stats_json(s, resp);
	}
	if ((get || !strcmp(req->method, "POST")) && !strcmp(req->url, "/voice.xml")) {
		resp->route = "/voice.xml";
		dl_http_text(resp, 200, "text/xml", twiml, sizeof(twiml) - 1);
		return;
	}
	resp->route = "other";
	dl_http_error(resp, 404, "no route for %s %s", req->method, req->url);
}
