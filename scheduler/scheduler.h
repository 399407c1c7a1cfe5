/* dialer-scheduler: private header. A campaign's path: sched_lease.c (who
 * leads) → sched_sweep.c (scheduled starts, snapshots, cancels, timeouts,
 * reconciles, completion) → sched_dispatch.c (pacing, claim, attempt, job in
 * the outbox) → the relay → workers → sched_results.c (results and carrier
 * events applied as conditional transitions). */
#ifndef SCHEDULER_H
#define SCHEDULER_H

#include <jansson.h>
#include <libpq-fe.h>
#include <stdbool.h>
#include <stdint.h>

#include "dl_amqp.h"
#include "dl_config.h"
#include "dl_service.h"
#include "dl_util.h"

struct sched_ctx {
	struct dl_service_ctx *svc;
	const struct dl_config *cfg;
	char holder[128];      /* this replica's name in the lease */
	int64_t term;          /* lease term held, 0 when not leading */
	int64_t lease_until;   /* monotonic ms until which we may act as leader */
	volatile int leading;  /* for /readyz and metrics */
	volatile int wake;     /* set by the command consumer: act now */
	int snapshot_wake;     /* the same for the snapshot thread (atomic) */
	bool dispatch_more;    /* the last pass stopped at its budget: the next one at once */
};

/* sched_main.c */
/* Connects to the database with the session limits every scheduler
 * connection needs: a frozen or stuck session's transaction is ended by the
 * server well before a lease expires, so it cannot block a new leader. */
int sched_db_connect(struct sched_ctx *s, PGconn **out) DL_WUR;

/* sched_lease.c */
/* Acquires or renews the lease; true while this replica leads. */
bool sched_lease_tick(struct sched_ctx *s, PGconn *db);
/* Inside a transaction: locks the lease row shared and checks the term is
 * still ours, so no other leader can be elected until commit. */
bool sched_lease_check(struct sched_ctx *s, PGconn *db);
/* Whether this replica holds the lease as far as it knows, without asking
 * the database (any thread). */
bool sched_lease_held(struct sched_ctx *s);
/* Gives the lease up (on a clean stop) so a standby takes over at once. */
void sched_lease_release(struct sched_ctx *s, PGconn *db);

/* sched_pacing.c: pure pacing arithmetic. */
struct sched_pace {
	int64_t next_us;   /* earliest next dial start, epoch microseconds (0: none yet) */
	int calls_per_minute;
	int max_concurrent;
	int64_t live;      /* queued + in progress */
	int minute_ms;
	int tick_ms;
};
/* How many dials may start at now_us, writing the slot they start from to
 * *next_base. Never more than calls_per_minute in any minute, evenly spaced,
 * no catch-up burst after an idle spell. */
int sched_pace_allow(const struct sched_pace *p, int64_t now_us, int64_t *next_base);
/* next_us to store after n dials starting from base. */
int64_t sched_pace_advance(const struct sched_pace *p, int64_t base, int n);

/* sched_outcome.c: carrier statuses to outcomes. */
/* The outcome of a terminal carrier status, or NULL when not terminal.
 * answered_by may be NULL; hung_up says the scheduler hung the call up. */
const char *sched_outcome(const char *call_status, const char *answered_by, long duration, bool was_answered,
			  bool hung_up);
/* True when the outcome may be retried (busy, no-answer, failed). */
bool sched_outcome_retryable(const char *outcome);
/* COMPLETED for answered calls (a person or voicemail), else FAILED. */
const char *sched_outcome_call_status(const char *outcome);
/* Minutes charged for an answered call of duration seconds (rounded up). */
long sched_minutes_charged(const char *outcome, long duration);

/* sched_dispatch.c: one dispatch pass over running campaigns; returns the
 * number of jobs created or -EIO. */
int sched_dispatch(struct sched_ctx *s, PGconn *db);

/* sched_sweep.c: housekeeping passes, each in its own transaction. */
int sched_sweep(struct sched_ctx *s, PGconn *db);

/* sched_message.c: result and event messages, parsed without I/O. */
#define SCHED_MSG_STR 129 /* longer strings count as absent */
enum sched_msg_kind {
	SCHED_MSG_IGNORE,         /* skipped dial: nothing to do */
	SCHED_MSG_ACCEPTED,       /* dial.result accepted, with a valid sid */
	SCHED_MSG_INVALID_NUMBER, /* dial.result failed: the number is invalid */
	SCHED_MSG_AMBIGUOUS,      /* dial.result failed: the carrier may have the call */
	SCHED_MSG_REFUSED,        /* dial.result failed: the carrier refused it */
	SCHED_MSG_STATUS,         /* call.status with a valid sid, a status, a sequence */
	SCHED_MSG_RECONCILE,      /* reconcile.result, checked by the caller */
	SCHED_MSG_HANGUP,         /* hangup.result; a valid sid when ended or hung up */
};
struct sched_message {
	enum sched_msg_kind kind;
	char attempt[SCHED_MSG_STR];
	char sid[SCHED_MSG_STR];
	char status[SCHED_MSG_STR];
	char answered_by[SCHED_MSG_STR];
	bool has_sid, has_status, has_answered_by;
	long duration; /* callDuration (or the call's duration), 0 when absent or outside 0..86400 */
	long seq;      /* sequenceNumber of a call.status, else -1 */
	bool found;    /* reconcile.result: the carrier knows the call */
	bool ended;    /* hangup.result: the call had ended before the hang-up */
	bool hung_up;  /* hangup.result: the hang-up ended the live call */
};
/* Parses one message into *out (written only on success); 0 or -EINVAL for
 * a message that can never be applied. */
int sched_message_parse(const char *body, size_t len, struct sched_message *out) DL_WUR;
/* Messages one delivery carries at most: the call statuses of a
 * call.statuses message, the results of a job.results one. */
#define SCHED_STATUSES_MAX DL_CALL_STATUSES_MAX
_Static_assert(DL_JOB_RESULTS_MAX <= SCHED_STATUSES_MAX, "a job.results message fits a delivery's room");
/* Parses one delivery: a message (as sched_message_parse), a call.statuses
 * message, {"type": "call.statuses", "statuses": [call.status messages]},
 * or a job.results message, {"type": "job.results", "results": [dial.result,
 * reconcile.result or hangup.result messages]}, each carrying 1 to
 * SCHED_STATUSES_MAX of them. Writes out[0..] (at most max) and returns how
 * many, or -EINVAL when any of them can never be applied (nothing of it
 * is). */
int sched_messages_parse(const char *body, size_t len, struct sched_message *out, int max) DL_WUR;
/* Over n messages ordered by attempt (arrival order within one), sets
 * skip[i] for each call.status "queued", "initiated" or "ringing" that a
 * final status of the same attempt with a higher sequence follows or
 * precedes in the same batch: applying the final one says all it would
 * have ("in-progress" is kept, it tells the call was answered). */
void sched_subsumed(const struct sched_message *const *m, int n, bool *skip);
/* True for a carrier call sid: "CA" and 32 hex digits. */
bool sched_sid_valid(const char *sid);

/* sched_results.c */
/* Messages a consumer applies at once, at most (its prefetch is twice
 * that, so the next batch is at hand when one is acknowledged). */
#define SCHED_BATCH_MAX 256
/* Messages (call statuses counted one by one) a batch applies at most: a
 * consumer stops taking deliveries when one more might not fit. */
#define SCHED_ITEMS_MAX (4 * SCHED_BATCH_MAX)
/* Thread body: consumes dialer.results and applies them (arg: sched_ctx). */
#define SCHED_RESULTS_CONSUMERS_MAX 16
void *sched_results_thread(void *arg);
/* sched_snapshot.c: copies started campaigns' audiences into calls while
 * this replica leads. */
void *sched_snapshot_thread(void *arg);
/* Thread body: consumes commands, waking the leader (arg: sched_ctx). */
void *sched_commands_thread(void *arg);

#endif
