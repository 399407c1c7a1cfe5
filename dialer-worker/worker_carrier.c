/* worker_carrier: the carrier's REST API (Twilio Calls subset) over the
 * libcurl multi interface, so one thread keeps many creates in flight, and
 * the pure helpers that build requests and read answers. */
#include "worker.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* libcurl's receive buffer for an answer that is one call resource
 * (CURL_MIN_READ_BUFFER_SIZE is 1024). */
#define WK_RECV_BUFFER 1024L

#ifndef DIALER_VERSION
#define DIALER_VERSION "dev"
#endif

enum worker_class worker_classify(long http_status, const char *body)
{
	enum worker_class cls = WORKER_AMBIGUOUS;
	json_t *o = NULL; /* owned */

	if (http_status >= 200 && http_status < 300) {
		char sid[WK_SID_LEN];

		/* A success without a sid we can read leaves a call we cannot name. */
		cls = body != NULL && worker_answer_sid(body, sid, sizeof(sid)) == 0 ? WORKER_ACCEPTED
										: WORKER_AMBIGUOUS;
		goto out;
	}
	if (http_status == 401) {
		cls = WORKER_UNAUTHORIZED;
		goto out;
	}
	if (http_status == 429) {
		cls = WORKER_RATE_LIMITED;
		goto out;
	}
	if (http_status == 400 && body != NULL && (o = json_loads(body, 0, NULL)) != NULL) {
		json_t *code = json_object_get(o, "code");
		long long c = -1;

		if (json_is_integer(code))
			c = json_integer_value(code);
		else if (json_is_string(code))
			c = strtoll(json_string_value(code), NULL, 10);
		if (c == 21211 || c == 21217) {
			cls = WORKER_INVALID_NUMBER;
			goto out;
		}
	}
	/* Any other 4xx is a refusal: the carrier did not create the call. 5xx,
	 * 1xx, 3xx and no answer at all leave it unknown. */
	cls = http_status >= 400 && http_status < 500 ? WORKER_REJECTED : WORKER_AMBIGUOUS;
out:
	json_decref(o);
	return cls;
}

const char *worker_class_name(enum worker_class cls)
{
	switch (cls) {
	case WORKER_ACCEPTED:
		return "accepted";
	case WORKER_INVALID_NUMBER:
		return "invalid-number";
	case WORKER_RATE_LIMITED:
		return "rate-limited";
	case WORKER_UNAUTHORIZED:
		return "unauthorized";
	case WORKER_REJECTED:
		return "rejected";
	case WORKER_AMBIGUOUS:
		return "ambiguous";
	}
	return "ambiguous";
}

int worker_backoff_ms(int retry, uint32_t rnd)
{
	int step = 250;

	if (retry < 0)
		retry = 0;
	for (int i = 0; i < retry && step < 8000; i++)
		step *= 2;
	if (step > 8000)
		step = 8000;
	/* Full jitter over the upper half: spread, yet never shorter than half a step. */
	return step / 2 + (int)(rnd % (uint32_t)(step / 2 + 1));
}

/* Writes s form-encoded (RFC 3986 unreserved kept, the rest %XX) to f. */
static void wk_form_put(FILE *f, const char *key, const char *s)
{
	static const char hex[] = "0123456789ABCDEF";

	fprintf(f, "%s%s=", ftell(f) > 0 ? "&" : "", key);
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
		    *p == '-' || *p == '.' || *p == '_' || *p == '~') {
			fputc(*p, f);
		} else {
			fputc('%', f);
			fputc(hex[*p >> 4], f);
			fputc(hex[*p & 15], f);
		}
	}
}

char *worker_form_create(const struct worker_job *job, const char *default_from)
{
	static const char *const events[] = {"initiated", "ringing", "answered", "completed"};
	char *text = NULL;
	size_t len = 0;
	char num[16];
	FILE *f = open_memstream(&text, &len);

	if (f == NULL)
		return NULL;
	wk_form_put(f, "To", job->to);
	wk_form_put(f, "From", job->from[0] ? job->from : default_from);
	wk_form_put(f, "Url", job->voice_url);
	wk_form_put(f, "StatusCallback", job->status_callback);
	for (size_t i = 0; i < DL_ARRAY_LEN(events); i++)
		wk_form_put(f, "StatusCallbackEvent", events[i]);
	wk_form_put(f, "StatusCallbackMethod", "POST");
	snprintf(num, sizeof(num), "%d", job->ring_timeout_sec);
	wk_form_put(f, "Timeout", num);
	snprintf(num, sizeof(num), "%d", job->time_limit_sec);
	wk_form_put(f, "TimeLimit", num);
	if (fclose(f) != 0) {
		free(text);
		return NULL;
	}
	return text;
}

int worker_answer_sid(const char *body, char *sid, size_t len)
{
	json_t *o = json_loads(body, 0, NULL); /* owned */
	const char *s = json_string_value(json_object_get(o, "sid"));
	int r = -EINVAL;

	if (s == NULL || strlen(s) < 3 || strlen(s) >= len || strncmp(s, "CA", 2) != 0)
		goto out;
	for (const char *p = s; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9')))
			goto out;
	snprintf(sid, len, "%s", s);
	r = 0;
out:
	json_decref(o);
	return r;
}

void worker_answer_detail(long http_status, const char *body, char *out, size_t len)
{
	json_t *o = body ? json_loads(body, 0, NULL) : NULL; /* owned */
	json_t *code = json_object_get(o, "code");
	const char *msg = json_string_value(json_object_get(o, "message"));
	char c[32] = "";

	if (json_is_integer(code))
		snprintf(c, sizeof(c), " %lld", (long long)json_integer_value(code));
	if (msg != NULL)
		snprintf(out, len, "carrier %ld%s: %.160s", http_status, c, msg);
	else
		snprintf(out, len, "carrier %ld%s", http_status, c);
	/* The carrier's text may have been cut to fit: keep it valid UTF-8, or
	 * the result could not be sent as JSON. */
	dl_utf8_trim(out);
	json_decref(o);
}

/* Epoch seconds of an RFC 2822 date ("Tue, 10 Mar 2026 09:00:00 +0000"), or -1. */
static long long wk_rfc2822(const char *s)
{
	struct tm tm;
	const char *end;

	if (s == NULL)
		return -1;
	memset(&tm, 0, sizeof(tm));
	end = strptime(s, "%a, %d %b %Y %H:%M:%S %z", &tm);
	if (end == NULL || *end != '\0')
		return -1;
	return (long long)timegm(&tm) - tm.tm_gmtoff;
}

/* Reads one call resource into *f; 0 or -EINVAL (no sid, a field too long). */
static int wk_call_read(json_t *c, struct worker_found *f)
{
	const char *sid = json_string_value(json_object_get(c, "sid"));
	const char *st = json_string_value(json_object_get(c, "status"));
	const char *by = json_string_value(json_object_get(c, "answered_by"));
	json_t *d = json_object_get(c, "duration");

	memset(f, 0, sizeof(*f));
	f->duration = -1;
	if (sid == NULL || strlen(sid) >= sizeof(f->sid) || (st != NULL && strlen(st) >= sizeof(f->status)))
		return -EINVAL;
	f->found = true;
	snprintf(f->sid, sizeof(f->sid), "%s", sid);
	snprintf(f->status, sizeof(f->status), "%s", st ? st : "");
	/* An answeredBy we cannot hold is left out, not cut. */
	if (by != NULL && strlen(by) < sizeof(f->answered_by))
		snprintf(f->answered_by, sizeof(f->answered_by), "%s", by);
	if (json_is_integer(d) && json_integer_value(d) >= 0 && json_integer_value(d) < 1000000000)
		f->duration = (long)json_integer_value(d);
	else if (json_is_string(d) && *json_string_value(d))
		f->duration = strtol(json_string_value(d), NULL, 10);
	if (f->duration < 0 || f->duration >= 1000000000)
		f->duration = -1;
	return 0;
}

int worker_reconcile_pick(const char *body, struct worker_found *out)
{
	json_t *o = json_loads(body, 0, NULL); /* owned */
	json_t *calls = json_object_get(o, "calls"), *best = NULL, *c;
	long long best_t = -2;
	struct worker_found f;
	size_t i;
	int r = -EINVAL;

	if (!json_is_array(calls))
		goto out;
	memset(&f, 0, sizeof(f));
	f.duration = -1;
	/* The carrier lists newest first; a later date still wins if it does not. */
	json_array_foreach(calls, i, c) {
		long long t;

		if (!json_is_string(json_object_get(c, "sid")))
			continue;
		t = wk_rfc2822(json_string_value(json_object_get(c, "date_created")));
		if (best == NULL || t > best_t) {
			best = c;
			best_t = t;
		}
	}
	if (best != NULL && wk_call_read(best, &f) < 0)
		goto out;
	*out = f;
	r = 0;
out:
	json_decref(o);
	return r;
}

int worker_call_parse(const char *body, struct worker_found *out)
{
	json_t *o = json_loads(body ? body : "", 0, NULL); /* owned */
	struct worker_found f;
	int r = -EINVAL;

	if (json_is_object(o) && wk_call_read(o, &f) == 0) {
		*out = f;
		r = 0;
	}
	json_decref(o);
	return r;
}

bool worker_status_ended(const char *status)
{
	static const char *const ended[] = {"completed", "busy", "no-answer", "failed", "canceled"};

	for (size_t i = 0; i < sizeof(ended) / sizeof(ended[0]); i++)
		if (!strcmp(status, ended[i]))
			return true;
	return false;
}

int worker_carrier_init(struct worker_carrier *c, const struct dl_config *cfg)
{
	const char *base = cfg->carrier_base_url;
	size_t n = strlen(base);

	memset(c, 0, sizeof(*c));
	c->cfg = cfg;
	while (n > 0 && base[n - 1] == '/')
		n--;
	if (asprintf(&c->account_url, "%.*s/2010-04-01/Accounts/%s", (int)n, base, cfg->carrier_account_sid) < 0) {
		c->account_url = NULL;
		return -ENOMEM;
	}
	c->headers = curl_slist_append(NULL, "Accept: application/json");
	if (c->headers != NULL) {
		/* No 100-continue round trip for a few hundred bytes of form. */
		struct curl_slist *h = curl_slist_append(c->headers, "Expect:");

		if (h == NULL) {
			curl_slist_free_all(c->headers);
			c->headers = NULL;
		}
	}
	c->multi = curl_multi_init();
	if (c->headers == NULL || c->multi == NULL) {
		worker_carrier_fini(c);
		return -ENOMEM;
	}
	return 0;
}

void worker_carrier_fini(struct worker_carrier *c)
{
	if (c->multi != NULL)
		curl_multi_cleanup(c->multi);
	curl_slist_free_all(c->headers);
	free(c->account_url);
	memset(c, 0, sizeof(*c));
}

/* Appends a received chunk to the answer, refusing more than the cap. */
static size_t wk_on_body(char *ptr, size_t size, size_t nmemb, void *ud)
{
	struct worker_http *h = ud;
	size_t n = size * nmemb, cap = h->kind == WORKER_REQ_LIST ? WK_LIST_ANSWER_MAX : WK_ANSWER_MAX;
	char *np;

	if (h->len + n > cap)
		return 0;
	np = realloc(h->body, h->len + n + 1);
	if (np == NULL)
		return 0;
	memcpy(np + h->len, ptr, n);
	h->len += n;
	np[h->len] = '\0';
	h->body = np;
	return n;
}

/* The URL of request kind for job; malloc'd, NULL when out of memory. */
static char *wk_url(const struct worker_carrier *c, enum worker_req kind, const struct worker_held *job)
{
	char *url = NULL, *q = NULL;
	size_t len = 0;
	FILE *f;

	switch (kind) {
	case WORKER_REQ_CREATE:
		if (asprintf(&url, "%s/Calls.json", c->account_url) < 0)
			url = NULL;
		break;
	case WORKER_REQ_HANGUP:
	case WORKER_REQ_FETCH:
		/* The sid was checked to be [A-Za-z0-9] when the job was parsed. */
		if (asprintf(&url, "%s/Calls/%s.json", c->account_url, job->call_sid) < 0)
			url = NULL;
		break;
	case WORKER_REQ_PROBE:
		if (asprintf(&url, "%s/Calls.json?PageSize=1", c->account_url) < 0)
			url = NULL;
		break;
	case WORKER_REQ_LIST: {
		char since[DL_TIME_MAX];

		/* Whole seconds, rounded down: a call created in the same second is kept. */
		dl_time_format(job->since_ms - job->since_ms % 1000, since);
		memcpy(since + 19, "Z", 2);
		f = open_memstream(&q, &len);
		if (f == NULL)
			break;
		wk_form_put(f, "To", job->to);
		wk_form_put(f, "StartTime%3E", since);
		if (fclose(f) != 0) {
			free(q);
			q = NULL;
			break;
		}
		if (asprintf(&url, "%s/Calls.json?%s", c->account_url, q) < 0)
			url = NULL;
		free(q);
		break;
	}
	}
	return url;
}

int worker_carrier_start(struct worker_carrier *c, struct worker_http *h, enum worker_req kind,
			 const struct worker_held *job)
{
	const struct dl_config *cfg = c->cfg;
	char *url = NULL; /* owned */
	CURL *e = NULL;   /* owned until added */
	int r = -ENOMEM;

	worker_http_reset(c, h);
	h->kind = kind;
	if (kind != WORKER_REQ_PROBE && job == NULL) {
		r = -EINVAL;
		goto out;
	}
	if (kind == WORKER_REQ_CREATE && job->form == NULL) {
		r = -EINVAL;
		goto out;
	}
	url = wk_url(c, kind, job);
	if (kind == WORKER_REQ_CREATE)
		h->form = job->form;
	else if (kind == WORKER_REQ_HANGUP)
		h->form = "Status=completed";
	e = curl_easy_init();
	if (url == NULL || e == NULL)
		goto out;
	curl_easy_setopt(e, CURLOPT_URL, url);
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)cfg->worker_connect_timeout_ms);
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)cfg->worker_request_timeout_ms);
	curl_easy_setopt(e, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
	curl_easy_setopt(e, CURLOPT_USERNAME, cfg->carrier_account_sid);
	curl_easy_setopt(e, CURLOPT_PASSWORD, cfg->carrier_auth_token);
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, c->headers);
	curl_easy_setopt(e, CURLOPT_USERAGENT, "dialer-worker/" DIALER_VERSION);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, wk_on_body);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, h);
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, h->error);
	curl_easy_setopt(e, CURLOPT_PRIVATE, h);
	/* Answers other than a list are one call resource (a kilobyte or two;
	 * the probe's page holds one): libcurl's default 16 KB receive buffer
	 * each was most of a request's memory with a thousand in flight. A
	 * longer answer only takes a few more reads. */
	if (kind != WORKER_REQ_LIST)
		curl_easy_setopt(e, CURLOPT_BUFFERSIZE, WK_RECV_BUFFER);
	if (h->form != NULL) {
		/* POSTFIELDS is not copied: h->form outlives the request. */
		curl_easy_setopt(e, CURLOPT_POSTFIELDS, h->form);
		curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)strlen(h->form));
	}
	h->error[0] = '\0';
	h->started_ms = dl_mono_ms();
	if (curl_multi_add_handle(c->multi, e) != CURLM_OK)
		goto out;
	h->easy = e;
	e = NULL;
	c->active++;
	r = 0;
out:
	if (e != NULL)
		curl_easy_cleanup(e);
	if (r < 0)
		h->form = NULL;
	free(url);
	return r;
}

int worker_carrier_wait(struct worker_carrier *c, const int *fds, int nfds, int timeout_ms)
{
	struct curl_waitfd wfd[WORKER_WAIT_FDS_MAX];
	unsigned n = 0;
	int running = 0;

	for (int i = 0; i < nfds && n < WORKER_WAIT_FDS_MAX; i++)
		if (fds[i] >= 0)
			wfd[n++] = (struct curl_waitfd){fds[i], CURL_WAIT_POLLIN, 0};
	if (curl_multi_poll(c->multi, n > 0 ? wfd : NULL, n, timeout_ms, NULL) != CURLM_OK)
		return -EIO;
	if (curl_multi_perform(c->multi, &running) != CURLM_OK)
		return -EIO;
	return 0;
}

struct worker_http *worker_carrier_next_done(struct worker_carrier *c)
{
	CURLMsg *m;
	int left;

	while ((m = curl_multi_info_read(c->multi, &left)) != NULL) {
		struct worker_http *h = NULL;
		curl_off_t pre = 0, retry = 0;
		CURL *e = m->easy_handle;

		if (m->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(e, CURLINFO_PRIVATE, (char **)&h);
		h->rc = m->data.result;
		h->status = 0;
		curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &h->status);
		curl_easy_getinfo(e, CURLINFO_PRETRANSFER_TIME_T, &pre);
		curl_easy_getinfo(e, CURLINFO_RETRY_AFTER, &retry);
		/* Before pretransfer nothing of the request was written: a failure
		 * there (resolve, connect, TLS) cannot have created a call. */
		h->sent = h->rc == CURLE_OK || h->status != 0 || pre > 0;
		h->retry_after_s = retry > 0 && retry < 3600 ? (long)retry : 0;
		if (h->rc != CURLE_OK && !h->error[0])
			snprintf(h->error, sizeof(h->error), "%s", curl_easy_strerror(h->rc));
		curl_multi_remove_handle(c->multi, e);
		curl_easy_cleanup(e);
		h->easy = NULL;
		c->active--;
		return h;
	}
	return NULL;
}

void worker_http_reset(struct worker_carrier *c, struct worker_http *h)
{
	if (h->easy != NULL) {
		curl_multi_remove_handle(c->multi, h->easy);
		curl_easy_cleanup(h->easy);
		h->easy = NULL;
		c->active--;
	}
	free(h->body);
	h->form = NULL;
	h->body = NULL;
	h->len = 0;
	h->status = 0;
	h->sent = false;
	h->rc = CURLE_OK;
	h->retry_after_s = 0;
	h->error[0] = '\0';
}
