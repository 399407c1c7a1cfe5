/* telephony-sim: private header shared by the simulator's modules.
 * A call's path: sim_http.c (routes, auth, faults) → sim_calls.c (store,
 * state machine, the timer thread) → sim_callback.c (signed status callbacks
 * over libcurl's multi interface, on one thread). */
#ifndef SIM_H
#define SIM_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "dl_config.h"
#include "dl_http.h"
#include "dl_service.h"
#include "dl_util.h"

/* Calls kept in memory, ever; creates past it answer 503. */
#define SIM_MAX_CALLS 2000000u
#define SIM_NONE UINT32_MAX
/* "CA" + 32 lowercase hex + NUL */
#define SIM_SID_LEN 35
#define SIM_PHONE_MAX 17
#define SIM_URL_MAX 2048
/* Twilio's bounds: Timeout 1..600 (above is clamped), TimeLimit 1..86400. */
#define SIM_TIMEOUT_DEFAULT 60
#define SIM_TIMEOUT_MAX 600
#define SIM_TIME_LIMIT_DEFAULT 14400
#define SIM_TIME_LIMIT_MAX 86400

enum sim_status {
	SIM_QUEUED = 0,
	SIM_RINGING,
	SIM_IN_PROGRESS,
	SIM_COMPLETED,
	SIM_BUSY,
	SIM_NO_ANSWER,
	SIM_FAILED,
	SIM_CANCELED,
	SIM_NSTATUS
};

enum sim_answered_by { SIM_AB_NONE = 0, SIM_AB_HUMAN, SIM_AB_MACHINE };

/* StatusCallbackEvent subscriptions. */
enum {
	SIM_EV_INITIATED = 1 << 0,
	SIM_EV_RINGING = 1 << 1,
	SIM_EV_ANSWERED = 1 << 2,
	SIM_EV_COMPLETED = 1 << 3,
};

/* One call; kept small, there may be millions. Times are epoch ms, 0 unset. */
struct sim_call {
	uint8_t sid[16];
	char to[SIM_PHONE_MAX];
	char from[SIM_PHONE_MAX];
	uint8_t status;      /* enum sim_status */
	uint8_t final;       /* the outcome until dialed, then the status the end step sets */
	uint8_t answered_by; /* enum sim_answered_by */
	uint8_t events;      /* SIM_EV_* subscribed */
	uint8_t next_step;   /* what the pending timer does */
	uint8_t gen;         /* bumped to cancel the pending timer */
	uint8_t seq;         /* callbacks generated so far (the next SequenceNumber) */
	uint8_t delivered;   /* callbacks the receiver answered 2xx */
	uint16_t timeout_s;
	uint32_t time_limit_s;
	uint32_t duration;   /* seconds: planned once answered, final once ended */
	uint32_t to_next;    /* older call in the same To bucket, or SIM_NONE */
	int64_t created_ms, start_ms, answered_ms, end_ms;
	char *callback;      /* StatusCallback URL (owned), freed after the final event */
};

/* What a create asks for, validated by sim_http.c. */
struct sim_create {
	const char *to, *from, *callback; /* callback may be NULL */
	uint8_t events;
	int timeout_s, time_limit_s;
};

/* A status callback to send, as sim_calls.c hands it to sim_callback.c. */
struct sim_event {
	char *url; /* owned */
	uint32_t idx;
	char sid[SIM_SID_LEN];
	char to[SIM_PHONE_MAX], from[SIM_PHONE_MAX];
	const char *status;      /* static */
	const char *answered_by; /* static, or NULL */
	int seq;
	int duration;            /* -1: not sent */
	int64_t at_ms;
};

struct sim_stats {
	uint64_t calls, by_status[SIM_NSTATUS];
};

struct sim_timer {
	int64_t due; /* monotonic ms */
	uint32_t idx;
	uint8_t gen;
};

struct sim_cb;

struct sim {
	struct dl_service_ctx *svc;
	const struct dl_config *cfg;
	struct dl_httpd *httpd;
	struct sim_cb *cb;
	char *basic_auth; /* "account_sid:auth_token", compared in constant time */

	/* The call store, its index and the timers: all under lock. */
	pthread_mutex_t lock;
	pthread_cond_t wake;
	bool store_ready;
	uint32_t sid_key;
	struct sim_call **chunks;
	uint32_t ncalls;
	uint32_t *to_heads;
	struct sim_timer *heap;
	size_t heap_n, heap_cap;
	uint64_t by_status[SIM_NSTATUS];
	pthread_t timer_thread;
	bool timer_started;
	int timer_stop;

	/* Counters read by /metrics and /_sim/stats. */
	atomic_uint_fast64_t faults_429, faults_5xx;
	atomic_uint_fast64_t cb_generated, cb_delivered, cb_retried, cb_dropped;
};

/* sim_calls.c */
/* Allocates the store of s; 0 or -ENOMEM. */
int sim_calls_init(struct sim *s) DL_WUR;
/* Starts the timer thread; 0 or -EAGAIN. */
int sim_calls_start(struct sim *s) DL_WUR;
/* Stops the timer thread: calls stay where they are. */
void sim_calls_stop(struct sim *s);
/* Stops the timer thread and frees the store; takes a store never set up.
 * The callback thread must be stopped first: it writes to the store. */
void sim_calls_fini(struct sim *s);
/* Creates a call and schedules its first step; writes its snapshot to
 * *out. Returns 0, -ENOSPC when the store is full, -ENOMEM. */
int sim_calls_create(struct sim *s, const struct sim_create *req, struct sim_call *out) DL_WUR;
/* Snapshot of the call with sid; 0 or -ENOENT. */
int sim_calls_get(struct sim *s, const char *sid, struct sim_call *out) DL_WUR;
/* Ends the call with sid now (status: SIM_COMPLETED or SIM_CANCELED as
 * asked): a live call completes with its duration so far, a queued or ringing
 * one is canceled, an ended one is left alone. 0 or -ENOENT. */
int sim_calls_hangup(struct sim *s, const char *sid, int status, struct sim_call *out) DL_WUR;
/* Up to max calls, newest first, created at or after since_ms, to the number
 * to (NULL: any). Returns how many were written to out. */
int sim_calls_list(struct sim *s, const char *to, int64_t since_ms, int max, struct sim_call *out);
/* Copies calls [from, from + n) (creation order) into out; returns how many
 * exist there. */
uint32_t sim_calls_range(struct sim *s, uint32_t from, uint32_t n, struct sim_call *out);
void sim_calls_stats(struct sim *s, struct sim_stats *out);
/* Notes that a callback of call idx was delivered. */
void sim_calls_delivered(struct sim *s, uint32_t idx);
/* Formats a sid as "CA" + 32 lowercase hex. */
void sim_sid_format(const uint8_t sid[16], char out[SIM_SID_LEN]);
const char *sim_status_name(int status);
const char *sim_answered_by_name(int answered_by);
/* Formats epoch ms as an RFC 2822 date ("Tue, 10 Mar 2026 09:00:00 +0000"). */
#define SIM_DATE_MAX 40
void sim_rfc2822(int64_t epoch_ms, char out[SIM_DATE_MAX]);
/* Milliseconds of secs (scaled) seconds: a second is clock.minute_ms / 60. */
int64_t sim_secs_ms(const struct sim *s, int64_t secs);

/* sim_callback.c */
/* Starts the delivery thread; 0 or -errno. */
int sim_cb_start(struct sim *s) DL_WUR;
/* Delivers what is pending for up to a short grace, drops the rest, stops
 * the thread, frees; takes NULL state. */
void sim_cb_stop(struct sim *s);
/* Signs and queues ev for delivery; takes ownership of ev->url. Never blocks
 * on the network. */
void sim_cb_post(struct sim *s, struct sim_event *ev);
/* Deliveries queued or in flight. */
uint64_t sim_cb_pending(struct sim *s);
/* Where delivered callbacks spent their time, summed in µs: queued here
 * before the first try, the last try in curl, and the receiver's part of
 * it (request sent to the answer's first byte). */
struct sim_cb_timing {
	uint64_t delivered, queued_us, send_us, answer_us;
};
void sim_cb_timing(struct sim *s, struct sim_cb_timing *out);

/* sim_http.c */
/* The listener's handler: the Calls API, /_sim/calls, /_sim/stats, health and metrics. */
void sim_http_handle(void *ctx, struct dl_http_req *req, struct dl_http_resp *resp);
/* Registers the simulator's metric families. */
void sim_http_metrics_register(void);

#endif
