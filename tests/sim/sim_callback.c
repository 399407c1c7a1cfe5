/* Status callbacks: each event is form-encoded and signed as the carrier
 * does (X-Twilio-Signature over the exact StatusCallback URL), then sent by
 * one thread driving libcurl's multi interface, so thousands of calls in
 * flight need no thread each. A delivery that fails (no connection, timeout,
 * 5xx, 408, 429) is retried twice, then dropped and counted; other 4xx
 * answers are final. Nothing here blocks the timer thread or a request. */
#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dl_form.h"
#include "dl_log.h"
#include "dl_twsig.h"
#include "sim.h"

#define MAX_IN_FLIGHT 256
#define MAX_PENDING 500000
#define MAX_ATTEMPTS 3
#define DRAIN_MS 3000
#define POLL_MS 200
static const int retry_delay_ms[MAX_ATTEMPTS - 1] = {250, 1000};

struct delivery {
	struct delivery *next;
	struct delivery *fprev, *fnext; /* the in-flight list */
	char *url;
	char *body;
	size_t body_len;
	struct curl_slist *hdrs;
	CURL *easy;
	uint32_t idx;
	int attempts;
	int64_t due; /* monotonic ms of the next try */
	int64_t posted_us; /* monotonic µs it was queued */
	int64_t queued_us; /* µs from queued to its first try */
};

struct fifo {
	struct delivery *head, *tail;
};

struct sim_cb {
	pthread_mutex_t lock;
	struct delivery *flying; /* in the multi handle; the thread's own */
	struct fifo incoming; /* under lock */
	CURLM *multi;
	pthread_t thread;
	bool started;
	atomic_int stop;
	atomic_uint_fast64_t pending; /* incoming + ready + retrying + in flight */
	/* Of the delivered callbacks (s->cb_delivered), their time waiting
	 * here before the first try, their last try's time in curl, and the
	 * receiver's part of that (request written to answer's first byte),
	 * summed in µs. */
	atomic_uint_fast64_t queued_us, send_us, answer_us;
};

static int64_t mono_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void fifo_push(struct fifo *q, struct delivery *d)
{
	d->next = NULL;
	if (q->tail)
		q->tail->next = d;
	else
		q->head = d;
	q->tail = d;
}

static struct delivery *fifo_pop(struct fifo *q)
{
	struct delivery *d = q->head;

	if (d != NULL) {
		q->head = d->next;
		if (q->head == NULL)
			q->tail = NULL;
	}
	return d;
}

static void fifo_append(struct fifo *q, struct fifo *from)
{
	if (from->head == NULL)
		return;
	if (q->tail)
		q->tail->next = from->head;
	else
		q->head = from->head;
	q->tail = from->tail;
	from->head = from->tail = NULL;
}

static void delivery_free(struct delivery *d)
{
	if (d == NULL)
		return;
	if (d->easy)
		curl_easy_cleanup(d->easy);
	curl_slist_free_all(d->hdrs);
	free(d->url);
	free(d->body);
	free(d);
}

static void drop(struct sim *s, struct delivery *d, const char *why)
{
	uint64_t n = atomic_fetch_add(&s->cb_dropped, 1) + 1;

	/* One line for the first and then every thousandth: a dead receiver
	 * must not flood the log. */
	if (n == 1 || n % 1000 == 0) {
		char count[24];

		snprintf(count, sizeof(count), "%llu", (unsigned long long)n);
		dl_log_kv(DL_WARN, "status callback dropped", "reason", why, "url", d->url, "dropped_total", count,
			  NULL);
	}
	atomic_fetch_sub(&s->cb->pending, 1);
	delivery_free(d);
}

static size_t discard(char *ptr, size_t size, size_t nmemb, void *ud)
{
	(void)ptr;
	(void)ud;
	return size * nmemb;
}

void sim_cb_post(struct sim *s, struct sim_event *ev)
{
	struct sim_cb *cb = s->cb;
	struct delivery *d = NULL;
	struct dl_form f;
	char seq[16], dur[16], ts[SIM_DATE_MAX], sig[DL_TWSIG_LEN], hdr[64];
	const char *pairs[][2] = {
		{"AccountSid", s->cfg->carrier_account_sid},
		{"ApiVersion", "2010-04-01"},
		{"CallSid", ev->sid},
		{"CallStatus", ev->status},
		{"CallbackSource", "call-progress-events"},
		{"Direction", "outbound-api"},
		{"From", ev->from},
		{"SequenceNumber", seq},
		{"Timestamp", ts},
		{"To", ev->to},
		{"CallDuration", ev->duration >= 0 ? dur : NULL},
		{"AnsweredBy", ev->answered_by},
	};

	if (atomic_load(&cb->pending) >= MAX_PENDING) {
		atomic_fetch_add(&s->cb_dropped, 1);
		free(ev->url);
		ev->url = NULL;
		return;
	}
	snprintf(seq, sizeof(seq), "%d", ev->seq);
	snprintf(dur, sizeof(dur), "%d", ev->duration);
	sim_rfc2822(ev->at_ms, ts);
	dl_form_init(&f);
	for (size_t i = 0; i < DL_ARRAY_LEN(pairs); i++)
		if (pairs[i][1] != NULL && dl_form_add(&f, pairs[i][0], pairs[i][1]) < 0)
			goto fail;
	d = calloc(1, sizeof(*d));
	if (d == NULL)
		goto fail;
	d->url = ev->url;
	ev->url = NULL;
	d->idx = ev->idx;
	if (dl_form_encode(&f, &d->body, &d->body_len) < 0 || dl_twsig_compute(s->cfg->carrier_auth_token, d->url, &f, sig) < 0)
		goto fail;
	snprintf(hdr, sizeof(hdr), "X-Twilio-Signature: %s", sig);
	d->hdrs = curl_slist_append(NULL, hdr);
	if (d->hdrs == NULL ||
	    curl_slist_append(d->hdrs, "Content-Type: application/x-www-form-urlencoded") == NULL ||
	    curl_slist_append(d->hdrs, "Expect:") == NULL)
		goto fail;
	d->posted_us = mono_us();
	atomic_fetch_add(&cb->pending, 1);
	pthread_mutex_lock(&cb->lock);
	fifo_push(&cb->incoming, d);
	pthread_mutex_unlock(&cb->lock);
	curl_multi_wakeup(cb->multi);
	return;
fail:
	atomic_fetch_add(&s->cb_dropped, 1);
	free(ev->url);
	ev->url = NULL;
	delivery_free(d);
}

uint64_t sim_cb_pending(struct sim *s)
{
	return s->cb ? atomic_load(&s->cb->pending) : 0;
}

void sim_cb_timing(struct sim *s, struct sim_cb_timing *out)
{
	memset(out, 0, sizeof(*out));
	if (s->cb == NULL)
		return;
	out->delivered = atomic_load(&s->cb_delivered);
	out->queued_us = atomic_load(&s->cb->queued_us);
	out->send_us = atomic_load(&s->cb->send_us);
	out->answer_us = atomic_load(&s->cb->answer_us);
}

/* Hands d to the multi handle; false (and d dropped) when curl refuses. */
static bool start(struct sim *s, struct delivery *d)
{
	if (d->easy == NULL) {
		d->easy = curl_easy_init();
		if (d->easy == NULL) {
			drop(s, d, "out of memory");
			return false;
		}
		curl_easy_setopt(d->easy, CURLOPT_URL, d->url);
		curl_easy_setopt(d->easy, CURLOPT_POST, 1L);
		curl_easy_setopt(d->easy, CURLOPT_POSTFIELDS, d->body);
		curl_easy_setopt(d->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)d->body_len);
		curl_easy_setopt(d->easy, CURLOPT_HTTPHEADER, d->hdrs);
		curl_easy_setopt(d->easy, CURLOPT_USERAGENT, "TwilioProxy/1.1 (telephony-sim)");
		curl_easy_setopt(d->easy, CURLOPT_NOSIGNAL, 1L);
		curl_easy_setopt(d->easy, CURLOPT_CONNECTTIMEOUT_MS, 2000L);
		curl_easy_setopt(d->easy, CURLOPT_TIMEOUT_MS, 5000L);
		curl_easy_setopt(d->easy, CURLOPT_WRITEFUNCTION, discard);
		curl_easy_setopt(d->easy, CURLOPT_PRIVATE, d);
#if LIBCURL_VERSION_NUM >= 0x075500
		curl_easy_setopt(d->easy, CURLOPT_PROTOCOLS_STR, "http,https");
#endif
	}
	if (d->attempts++ == 0)
		d->queued_us = mono_us() - d->posted_us;
	if (curl_multi_add_handle(s->cb->multi, d->easy) != CURLM_OK) {
		drop(s, d, "curl refused the request");
		return false;
	}
	d->fprev = NULL;
	d->fnext = s->cb->flying;
	if (d->fnext)
		d->fnext->fprev = d;
	s->cb->flying = d;
	return true;
}

static void unfly(struct sim_cb *cb, struct delivery *d)
{
	if (d->fprev)
		d->fprev->fnext = d->fnext;
	else
		cb->flying = d->fnext;
	if (d->fnext)
		d->fnext->fprev = d->fprev;
	d->fprev = d->fnext = NULL;
}

/* A finished try: delivered, retried later, or dropped. */
static void finished(struct sim *s, struct delivery *d, CURLcode res, struct fifo retry[])
{
	long code = 0;

	curl_multi_remove_handle(s->cb->multi, d->easy);
	unfly(s->cb, d);
	curl_easy_getinfo(d->easy, CURLINFO_RESPONSE_CODE, &code);
	if (res == CURLE_OK && code >= 200 && code < 300) {
		curl_off_t total = 0, pre = 0, first = 0;

		curl_easy_getinfo(d->easy, CURLINFO_TOTAL_TIME_T, &total);
		curl_easy_getinfo(d->easy, CURLINFO_PRETRANSFER_TIME_T, &pre);
		curl_easy_getinfo(d->easy, CURLINFO_STARTTRANSFER_TIME_T, &first);
		atomic_fetch_add(&s->cb->queued_us, (uint64_t)d->queued_us);
		atomic_fetch_add(&s->cb->send_us, (uint64_t)total);
		atomic_fetch_add(&s->cb->answer_us, (uint64_t)(first > pre ? first - pre : 0));
		atomic_fetch_add(&s->cb_delivered, 1);
		sim_calls_delivered(s, d->idx);
		atomic_fetch_sub(&s->cb->pending, 1);
		delivery_free(d);
		return;
	}
	if (res == CURLE_OK && code >= 400 && code < 500 && code != 408 && code != 429) {
		drop(s, d, "the receiver refused it");
		return;
	}
	if (d->attempts >= MAX_ATTEMPTS || atomic_load(&s->cb->stop)) {
		drop(s, d, res != CURLE_OK ? curl_easy_strerror(res) : "the receiver failed");
		return;
	}
	atomic_fetch_add(&s->cb_retried, 1);
	d->due = dl_mono_ms() + retry_delay_ms[d->attempts - 1];
	fifo_push(&retry[d->attempts - 1], d);
}

static void *cb_main(void *arg)
{
	struct sim *s = arg;
	struct sim_cb *cb = s->cb;
	/* ready: waiting for a slot; retry[i]: after i + 1 failures. Each retry
	 * queue has one delay, so it is already sorted by due time. */
	struct fifo ready = {NULL, NULL}, retry[MAX_ATTEMPTS - 1] = {{NULL, NULL}, {NULL, NULL}};
	struct delivery *d;
	int in_flight = 0, running = 0;
	int64_t deadline = 0;

	for (;;) {
		int64_t now = dl_mono_ms(), wait = POLL_MS;
		CURLMsg *msg;
		int left;

		pthread_mutex_lock(&cb->lock);
		fifo_append(&ready, &cb->incoming);
		pthread_mutex_unlock(&cb->lock);
		for (int i = 0; i < MAX_ATTEMPTS - 1; i++) {
			while (retry[i].head && retry[i].head->due <= now)
				fifo_push(&ready, fifo_pop(&retry[i]));
			if (retry[i].head && retry[i].head->due - now < wait)
				wait = retry[i].head->due - now;
		}
		while (in_flight < MAX_IN_FLIGHT && (d = fifo_pop(&ready)) != NULL)
			if (start(s, d))
				in_flight++;
		curl_multi_perform(cb->multi, &running);
		while ((msg = curl_multi_info_read(cb->multi, &left)) != NULL) {
			if (msg->msg != CURLMSG_DONE)
				continue;
			curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&d);
			in_flight--;
			finished(s, d, msg->data.result, retry);
		}
		if (atomic_load(&cb->stop)) {
			if (deadline == 0)
				deadline = now + DRAIN_MS;
			if (atomic_load(&cb->pending) == 0 || now >= deadline)
				break;
		}
		if (ready.head != NULL && in_flight < MAX_IN_FLIGHT)
			wait = 0;
		curl_multi_poll(cb->multi, NULL, 0, (int)(wait < 0 ? 0 : wait), NULL);
	}
	/* Past the drain: whatever is left is dropped and counted. */
	pthread_mutex_lock(&cb->lock);
	fifo_append(&ready, &cb->incoming);
	pthread_mutex_unlock(&cb->lock);
	for (int i = 0; i < MAX_ATTEMPTS - 1; i++)
		fifo_append(&ready, &retry[i]);
	while ((d = fifo_pop(&ready)) != NULL)
		drop(s, d, "shutting down");
	while ((d = cb->flying) != NULL) {
		curl_multi_remove_handle(cb->multi, d->easy);
		unfly(cb, d);
		drop(s, d, "shutting down");
	}
	return NULL;
}

int sim_cb_start(struct sim *s)
{
	struct sim_cb *cb = calloc(1, sizeof(*cb));

	if (cb == NULL)
		return -ENOMEM;
	s->cb = cb;
	pthread_mutex_init(&cb->lock, NULL);
	cb->multi = curl_multi_init();
	if (cb->multi == NULL)
		return -ENOMEM;
	/* Keep-alive connections to the receiver, a bounded number of them:
	 * a carrier sends each call's events as they happen, many at once
	 * (Twilio from a fleet of hosts), so a receiver is not paced by a
	 * handful of connections. */
	curl_multi_setopt(cb->multi, CURLMOPT_MAX_HOST_CONNECTIONS, 128L);
	curl_multi_setopt(cb->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, 256L);
	curl_multi_setopt(cb->multi, CURLMOPT_MAXCONNECTS, 256L);
	if (pthread_create(&cb->thread, NULL, cb_main, s) != 0)
		return -EAGAIN;
	cb->started = true;
	return 0;
}

void sim_cb_stop(struct sim *s)
{
	struct sim_cb *cb = s->cb;

	if (cb == NULL)
		return;
	if (cb->started) {
		atomic_store(&cb->stop, 1);
		curl_multi_wakeup(cb->multi);
		pthread_join(cb->thread, NULL);
	}
	if (cb->multi)
		curl_multi_cleanup(cb->multi);
	pthread_mutex_destroy(&cb->lock);
	free(cb);
	s->cb = NULL;
}
