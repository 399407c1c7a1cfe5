/* Results of dial, reconcile and hang-up jobs, and the carrier's call-status
 * events, applied as conditional transitions: a duplicate or late message
 * changes nothing and a final state is never left. Each message is applied
 * in its own transaction and acknowledged after the commit. Any replica
 * applies results; only the leader dispatches. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dl_amqp.h"
#include "dl_db.h"
#include "dl_log.h"
#include "dl_metrics.h"
#include "sched_metrics.h"
#include "scheduler.h"

static const char SQL_ATTEMPT[] =
	"SELECT status, last_sequence, answered_at IS NOT NULL, hangup_sent, hung_up FROM call_attempts"
	" WHERE id = $1 FOR UPDATE";
static const char SQL_HUNG_UP[] = "UPDATE call_attempts SET hung_up = true WHERE id = $1 AND status <> 'ENDED'";
static const char SQL_ACCEPT[] =
	"WITH a AS (UPDATE call_attempts SET status = 'ACCEPTED', call_sid = $2"
	"  WHERE id = $1 AND status IN ('DIALING', 'UNKNOWN') RETURNING call_id)"
	" UPDATE calls SET call_sid = $2 FROM a WHERE calls.id = a.call_id";
static const char SQL_AMBIGUOUS[] =
	"UPDATE call_attempts SET status = 'UNKNOWN', reconcile_at = now() WHERE id = $1 AND status = 'DIALING'";
static const char SQL_EVENT[] =
	"WITH a AS (UPDATE call_attempts SET last_sequence = greatest(last_sequence, $2::int),"
	"  call_sid = coalesce(call_sid, $3),"
	"  status = CASE WHEN status IN ('DIALING', 'UNKNOWN') THEN 'ACCEPTED' ELSE status END,"
	"  answered_at = CASE WHEN $4 = 'in-progress' THEN coalesce(answered_at, now()) ELSE answered_at END"
	"  WHERE id = $1 RETURNING call_id)"
	" UPDATE calls SET call_sid = $3 FROM a WHERE calls.id = a.call_id AND calls.call_sid IS DISTINCT FROM $3";
static const char SQL_END[] = "SELECT dialer_end_attempt($1, $2, $3::int, $4::boolean, $5::int)";
static const char SQL_RELEASE[] = "SELECT dialer_release_attempt($1)";

/* Ends attempt with outcome; 0 or -EIO. */
static int end_attempt(struct sched_ctx *s, PGconn *db, const char *attempt, const char *outcome, long duration)
{
	char dur[24], minute[16];
	const char *p[5] = {attempt, outcome, dur, sched_outcome_retryable(outcome) ? "true" : "false", minute};
	PGresult *r;

	snprintf(dur, sizeof(dur), "%ld", duration);
	snprintf(minute, sizeof(minute), "%d", s->cfg->clock_minute_ms);
	r = dl_db_exec(db, SQL_END, 5, p, NULL);
	if (r == NULL)
		return -EIO;
	{
		char labels[64];

		snprintf(labels, sizeof(labels), "outcome=\"%s\"", outcome);
		if (strcmp(PQgetvalue(r, 0, 0), "ignored"))
			dl_metrics_add("dialer_calls_total", labels, 1);
	}
	PQclear(r);
	return 0;
}

static int exec1(PGconn *db, const char *sql, int n, const char *const *p)
{
	PGresult *r = dl_db_exec(db, sql, n, p, NULL);

	if (r == NULL)
		return -EIO;
	PQclear(r);
	return 0;
}

/* Who ended a call, as far as a status message knows. */
enum hang_src {
	HANG_EVENT,  /* a callback or a reconcile: the attempt's hung_up says */
	HANG_NOT_US, /* a hang-up found the call already ended */
	HANG_US,     /* a hang-up ended the live call */
};

/* A terminal carrier status (from a callback, a reconcile or a hang-up's
 * result) ends the attempt. A callback that ends a call completed or
 * canceled while its hang-up's result is awaited ends nothing: that result
 * says whether the carrier or our hang-up ended it (timeout). */
static int apply_status(struct sched_ctx *s, PGconn *db, const struct sched_message *m, enum hang_src src)
{
	const char *attempt = m->attempt, *outcome;
	char seq_s[24];
	const char *p[4] = {attempt, seq_s, m->sid, m->status};
	PGresult *cur;
	bool answered, hangup_sent, hung_up;

	cur = dl_db_exec(db, SQL_ATTEMPT, 1, &attempt, NULL);
	if (cur == NULL)
		return -EIO;
	if (PQntuples(cur) == 0 || !strcmp(PQgetvalue(cur, 0, 0), "ENDED") ||
	    (m->seq >= 0 && m->seq <= atol(PQgetvalue(cur, 0, 1)))) {
		PQclear(cur); /* unknown, final already, or older than what we saw */
		return 0;
	}
	answered = PQgetvalue(cur, 0, 2)[0] == 't' || !strcmp(m->status, "in-progress");
	hangup_sent = PQgetvalue(cur, 0, 3)[0] == 't';
	hung_up = src == HANG_US || (src == HANG_EVENT && PQgetvalue(cur, 0, 4)[0] == 't');
	PQclear(cur);
	snprintf(seq_s, sizeof(seq_s), "%ld", m->seq >= 0 ? m->seq : 0);
	if (exec1(db, SQL_EVENT, 4, p) < 0)
		return -EIO;
	if (src == HANG_EVENT && hangup_sent && !hung_up &&
	    (!strcmp(m->status, "completed") || !strcmp(m->status, "canceled")))
		return 0;
	outcome = sched_outcome(m->status, m->has_answered_by ? m->answered_by : NULL, m->duration, answered,
				hung_up);
	if (outcome == NULL)
		return 0;
	return end_attempt(s, db, attempt, outcome, m->duration);
}

static int apply_msg(struct sched_ctx *s, PGconn *db, const struct sched_message *m)
{
	const char *attempt = m->attempt;
	const char *p[2] = {attempt, m->sid};

	switch (m->kind) {
	case SCHED_MSG_IGNORE:
		return 0;
	case SCHED_MSG_ACCEPTED:
		return exec1(db, SQL_ACCEPT, 2, p);
	case SCHED_MSG_INVALID_NUMBER:
		return end_attempt(s, db, attempt, "invalid-number", 0);
	case SCHED_MSG_AMBIGUOUS:
		return exec1(db, SQL_AMBIGUOUS, 1, &attempt);
	case SCHED_MSG_REFUSED:
		return end_attempt(s, db, attempt, "failed", 0);
	case SCHED_MSG_STATUS:
		return apply_status(s, db, m, HANG_EVENT);
	case SCHED_MSG_RECONCILE: {
		PGresult *cur = dl_db_exec(db, SQL_ATTEMPT, 1, &attempt, NULL);
		bool unknown;

		if (cur == NULL)
			return -EIO;
		unknown = PQntuples(cur) == 1 && !strcmp(PQgetvalue(cur, 0, 0), "UNKNOWN");
		PQclear(cur);
		if (!unknown)
			return 0;
		if (!m->found)
			/* The carrier never saw it: the dial did not happen. */
			return exec1(db, SQL_RELEASE, 1, &attempt);
		if (!sched_sid_valid(m->sid) || !m->has_status)
			return -EINVAL;
		if (exec1(db, SQL_ACCEPT, 2, p) < 0)
			return -EIO;
		return apply_status(s, db, m, HANG_EVENT);
	}
	case SCHED_MSG_HANGUP:
		/* ended: the call was over before the hang-up (a lost or late
		 * final callback): its real outcome. hungUp: we ended it. Neither
		 * (the hang-up failed): the sweep sends it again. */
		if (!m->ended && !m->hung_up)
			return 0;
		if (!m->ended && exec1(db, SQL_HUNG_UP, 1, &attempt) < 0)
			return -EIO;
		if (!m->has_status)
			return 0; /* the final callback ends it */
		return apply_status(s, db, m, m->ended ? HANG_NOT_US : HANG_US);
	}
	return -EINVAL;
}

int sched_apply(struct sched_ctx *s, PGconn *db, const char *body, size_t len)
{
	struct sched_message m;
	int r;

	if (sched_message_parse(body, len, &m) < 0)
		return -EINVAL;
	if (dl_db_cmd(db, "BEGIN") < 0)
		return -EIO;
	r = apply_msg(s, db, &m);
	if (r == 0 && dl_db_cmd(db, "COMMIT") < 0)
		r = -EIO;
	if (PQtransactionStatus(db) != PQTRANS_IDLE)
		DL_IGNORE(dl_db_cmd(db, "ROLLBACK"));
	return r;
}

/* Shared loop of the two consumers: deliveries to handle(), acked after. */
static void consume(struct sched_ctx *s, const char *queue, int prefetch,
		    int (*handle)(struct sched_ctx *s, PGconn *db, const char *body, size_t len), bool need_db)
{
	volatile int *stop = &s->svc->stop;
	struct dl_amqp mq;
	PGconn *db = NULL;
	bool consuming = false;

	dl_amqp_init(&mq, s->cfg);
	while (!*stop) {
		struct dl_amqp_msg msg;
		int r;

		if (need_db && (db == NULL || PQstatus(db) != CONNECTION_OK)) {
			PQfinish(db);
			db = NULL;
			if (sched_db_connect(s, &db) < 0) {
				dl_sleep_ms(1000, stop);
				continue;
			}
		}
		if (!mq.open) {
			consuming = false;
			if (dl_amqp_ensure(&mq, stop) < 0)
				break;
		}
		if (!consuming) {
			if (dl_amqp_consume(&mq, queue, prefetch) < 0)
				continue;
			consuming = true;
		}
		r = dl_amqp_next(&mq, &msg, 500);
		if (r <= 0)
			continue;
		r = handle(s, db, msg.env.message.body.bytes, msg.env.message.body.len);
		sched_metrics_consumed(&msg.env.message.properties, r);
		if (r == -EIO) {
			/* Database trouble: give it back and slow down. */
			DL_IGNORE(dl_amqp_nack(&mq, msg.env.delivery_tag, true));
			dl_sleep_ms(500, stop);
		} else {
			if (r == -EINVAL) {
				dl_log_kv(DL_ERROR, "message dropped: not a valid result", "queue", queue, NULL);
				dl_metrics_add("dialer_scheduler_results_invalid_total", "", 1);
			}
			DL_IGNORE(dl_amqp_ack(&mq, msg.env.delivery_tag));
		}
		dl_amqp_msg_done(&mq, &msg);
	}
	dl_amqp_close(&mq);
	PQfinish(db);
}

void *sched_results_thread(void *arg)
{
	struct sched_ctx *s = arg;

	consume(s, s->cfg->amqp_results_queue, 64, sched_apply, true);
	return NULL;
}

static int wake(struct sched_ctx *s, PGconn *db, const char *body, size_t len)
{
	(void)db;
	(void)body;
	(void)len;
	s->wake = 1;
	__atomic_store_n(&s->snapshot_wake, 1, __ATOMIC_RELEASE);
	return 0;
}

void *sched_commands_thread(void *arg)
{
	struct sched_ctx *s = arg;

	consume(s, s->cfg->amqp_commands_queue, 32, wake, false);
	return NULL;
}
