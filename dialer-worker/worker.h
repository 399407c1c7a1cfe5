/* dialer-worker: takes jobs from dialer.dial-jobs, fences each dial in
 * Postgres, places it through the carrier's REST API (libcurl multi: many
 * requests in flight in one thread) and publishes the result with confirms
 * before it acks the job. Private header of dialer-worker/.
 *
 * Files: worker_jobs.c parses jobs (pure), worker_carrier.c speaks the
 * carrier's protocol and classifies its answers, worker_loop.c is the
 * consume/fence/dial/publish/ack loop, worker_main.c the service entry. */
#ifndef WORKER_H
#define WORKER_H

#include <curl/curl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dl_config.h"
#include "dl_util.h"

/* Caps on what a job may carry (bytes, NUL included for strings). */
#define WK_BODY_MAX 16384
#define WK_ID_LEN 64
#define WK_PHONE_LEN 20
#define WK_URL_LEN 2048
#define WK_SID_LEN 64
#define WK_TIME_LIMIT_MAX 86400
#define WK_RING_TIMEOUT_MAX 600
/* Caps on what the carrier may answer. */
#define WK_ANSWER_MAX (64 * 1024)
#define WK_LIST_ANSWER_MAX (1024 * 1024)

enum worker_job_type {
	WORKER_JOB_DIAL,
	WORKER_JOB_HANGUP,
	WORKER_JOB_RECONCILE,
};

/* A validated job; every string is NUL-terminated and within its cap. */
struct worker_job {
	enum worker_job_type type;
	char message_id[WK_ID_LEN];  /* "" when the job carries none */
	char attempt_id[WK_ID_LEN];
	/* dial */
	long long call_id;           /* 0 when absent */
	char campaign_id[WK_ID_LEN];
	char organization_id[WK_ID_LEN];
	char to[WK_PHONE_LEN];       /* dial and reconcile */
	char from[WK_PHONE_LEN];     /* "" means carrier.from */
	char voice_url[WK_URL_LEN];
	char status_callback[WK_URL_LEN];
	int time_limit_sec;
	int ring_timeout_sec;
	/* hangup */
	char call_sid[WK_SID_LEN];
	/* reconcile */
	int64_t since_ms;            /* epoch ms */
	bool replayed;               /* republished from the dead-letter queue by dialerctl dlq */
};

/* What a job in flight keeps of its worker_job: its ids and what its carrier
 * requests need. A dial's URLs (4 KB of caps) serve only the create's form,
 * built once when the job is taken, so a thousand dials in flight do not
 * hold 4 MB of mostly empty URL buffers. Zero it before first use. */
struct worker_held {
	enum worker_job_type type;
	char message_id[WK_ID_LEN];
	char attempt_id[WK_ID_LEN];
	char campaign_id[WK_ID_LEN];
	char to[WK_PHONE_LEN];       /* reconcile */
	char call_sid[WK_SID_LEN];   /* hangup */
	int64_t since_ms;            /* reconcile */
	char *form;                  /* dial: the create's form (worker_form_create); owned */
};

/* Parses and validates one job body (untrusted, not NUL-terminated). Returns
 * 0 and fills *out, or -E2BIG (over WK_BODY_MAX) / -EINVAL (not JSON, wrong
 * shape, a field missing, of the wrong type or out of bounds) with the reason
 * in err. Pure: does not log, touches *out only on success. */
int worker_job_parse(const char *body, size_t len, struct worker_job *out, char *err, size_t errlen) DL_WUR;
/* Fills *out (zeroed) from job: the create's form for a dial, from being
 * job->from or default_from. 0 or -ENOMEM (out untouched). Pure. */
int worker_held_init(struct worker_held *out, const struct worker_job *job, const char *default_from) DL_WUR;
/* Frees what held owns and zeroes it. */
void worker_held_clear(struct worker_held *held);
/* "dial", "hangup" or "reconcile". */
const char *worker_job_type_name(enum worker_job_type type);

/* What a carrier answer to a create means for the attempt. */
enum worker_class {
	WORKER_ACCEPTED,       /* 2xx with a call sid: the call exists */
	WORKER_INVALID_NUMBER, /* 400 with code 21211 or 21217: final for the contact */
	WORKER_RATE_LIMITED,   /* 429: not created, safe to resend */
	WORKER_UNAUTHORIZED,   /* 401: not created; our credentials are refused */
	WORKER_REJECTED,       /* any other 4xx: not created */
	WORKER_AMBIGUOUS,      /* 5xx, no answer, or an answer we cannot read: may exist */
};

/* Classifies a create's answer: http_status 0 means no HTTP answer (timeout,
 * connection lost after sending). body may be NULL. Pure. */
enum worker_class worker_classify(long http_status, const char *body);
/* "accepted", "invalid-number", "rate-limited", "unauthorized", "rejected", "ambiguous". */
const char *worker_class_name(enum worker_class cls);
/* Delay before resend number retry (0-based) after a 429 or an unreachable
 * carrier: exponential from 250 ms, capped at 8 s, full jitter over the upper
 * half driven by rnd. Always within [125, 8000]. Pure. */
int worker_backoff_ms(int retry, uint32_t rnd);

/* The form body of a create (To, From, Url, StatusCallback, the four
 * StatusCallbackEvent values, StatusCallbackMethod, Timeout, TimeLimit),
 * from being job->from or, when empty, default_from. Returns a malloc'd
 * string the caller frees, or NULL when out of memory. Pure. */
char *worker_form_create(const struct worker_job *job, const char *default_from);
/* The sid of a call resource answer into sid; 0 or -EINVAL. Pure. */
int worker_answer_sid(const char *body, char *sid, size_t len) DL_WUR;
/* Writes "carrier <status>[ <code>][: <message>]" into out, from an error
 * answer (body may be NULL or not JSON). Pure. */
void worker_answer_detail(long http_status, const char *body, char *out, size_t len);

/* The newest call of a list answer. */
struct worker_found {
	bool found;
	char sid[WK_SID_LEN];
	char status[32];
	long duration;      /* -1 when the carrier gave none */
	char answered_by[32]; /* "" when the carrier gave none */
};

/* Picks the newest call (by date_created, else the first listed) of a
 * {"calls": [...]} answer; 0 (found may be false) or -EINVAL when the answer
 * is not such a list. Pure. */
int worker_reconcile_pick(const char *body, struct worker_found *out) DL_WUR;
/* Reads a single call resource answer (found is then true); 0 or -EINVAL.
 * Pure. */
int worker_call_parse(const char *body, struct worker_found *out) DL_WUR;
/* True for a carrier status after which the call is over. Pure. */
bool worker_status_ended(const char *status);

/* The carrier's REST requests. */
enum worker_req {
	WORKER_REQ_CREATE,
	WORKER_REQ_HANGUP,
	WORKER_REQ_LIST,
	WORKER_REQ_PROBE,
	WORKER_REQ_FETCH,   /* GET one call: what a hang-up first asks */
};

/* One request and its answer. Zero it before first use. */
struct worker_http {
	CURL *easy;          /* NULL when idle */
	enum worker_req kind;
	void *owner;         /* the caller's (the loop's task) */
	const char *form;    /* request body, or NULL; not owned: it outlives the request */
	char *body;          /* answer body, NUL-terminated; owned */
	size_t len;
	long status;         /* HTTP status; 0 when no answer came */
	bool sent;           /* the request may have reached the carrier */
	CURLcode rc;
	long retry_after_s;  /* Retry-After of the answer, 0 when none */
	int64_t started_ms;  /* monotonic */
	char error[CURL_ERROR_SIZE];
};

struct worker_carrier {
	CURLM *multi;
	const struct dl_config *cfg;
	struct curl_slist *headers;
	char *account_url;   /* {base}/2010-04-01/Accounts/{sid} */
	int active;
};

/* Creates the multi handle; 0 or -ENOMEM. */
int worker_carrier_init(struct worker_carrier *c, const struct dl_config *cfg) DL_WUR;
/* Frees the multi handle; requests still attached must be reset first. Takes a zeroed c. */
void worker_carrier_fini(struct worker_carrier *c);
/* Starts request kind for job (NULL for the probe) on an idle h: create
 * (job->form, which must outlive the request), hang up, list by To since, or
 * the probe (first page of the account's calls). 0, or -ENOMEM / -EINVAL
 * (nothing was sent). */
int worker_carrier_start(struct worker_carrier *c, struct worker_http *h, enum worker_req kind,
			 const struct worker_held *job) DL_WUR;
/* Waits up to timeout_ms for activity on the requests or for input on one
 * of the nfds other sockets (-1 entries skipped: the AMQP socket, the
 * fence's database connection), then moves every request on. 0 or -EIO. */
#define WORKER_WAIT_FDS_MAX 4
int worker_carrier_wait(struct worker_carrier *c, const int *fds, int nfds, int timeout_ms) DL_WUR;
/* The next finished request with its answer filled in (its easy handle is
 * released), or NULL when none finished. */
struct worker_http *worker_carrier_next_done(struct worker_carrier *c);
/* Aborts h if in flight and frees its buffers; h keeps owner and kind. Takes an idle h. */
void worker_http_reset(struct worker_carrier *c, struct worker_http *h);

/* The worker: connections, the in-flight jobs, readiness. */
struct worker;

/* Allocates the worker for cfg (kept by reference) and registers its metrics;
 * 0 or -ENOMEM. Logs nothing. */
int worker_new(const struct dl_config *cfg, struct worker **out) DL_WUR;
/* Closes everything; takes NULL. */
void worker_free(struct worker *w);
/* Runs the loop until *stop, then drains: stops consuming, lets requests in
 * flight finish, publishes their results with confirms, acks, requeues what
 * was not started. Returns 0. Logs. */
int worker_run(struct worker *w, volatile int *stop);
/* Ready: both AMQP connections up and the carrier not refusing our
 * credentials. Thread-safe (called from the health listener). */
bool worker_ready(struct worker *w, char *why, size_t whylen);

#endif
