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

static const char *str(json_t *m, const char *k)
{
	const char *v = json_string_value(json_object_get(m, k));

	return v && strlen(v) <= 128 ? v : NULL;
}

static bool sid_valid(const char *sid)
{
	if (sid == NULL || strlen(sid) != 34 || sid[0] != 'C' || sid[1] != 'A')
		return false;
	for (int i = 2; i < 34; i++)
		if (!strchr("0123456789abcdefABCDEF", sid[i]))
			return false;
	return true;
}

/* Who ended a call, as far as a status message knows. */
enum hang_src {
	HANG_EVENT,   /* a callback or a reconcile: the attempt's hung_up says */
	HANG_NOT_US,  /* a hang-up found the call already ended */
	HANG_US,      /* a hang-up ended the live call */
};

/* A terminal carrier status (from a callback, a reconcile or a hang-up's
 * result) ends the attempt. A callback that ends a call completed or
 * canceled while its hang-up's result is awaited ends nothing: that result
 * says whether the carrier or our hang-up ended it (timeout). */
static int apply_status(struct sched_ctx *s, PGconn *db, json_t *m, const char *attempt, const char *sid,
			const char *status, long seq, enum hang_src src)
{
	const char *answered_by = str(m, "answeredBy"), *outcome;
	json_t *d = json_object_get(m, json_object_get(m, "callDuration") ? "callDuration" : "duration");
	long duration = json_is_integer(d) ? (long)json_integer_value(d)
					   : json_is_string(d) ? strtol(json_string_value(d), NULL, 10) : 0;
	char seq_s[24];
	const char *p[4] = {attempt, seq_s, sid, status};
	PGresult *cur;
	bool answered, hangup_sent, hung_up;

	cur = dl_db_exec(db, SQL_ATTEMPT, 1, &attempt, NULL);
	if (cur == NULL)
		return -EIO;
	if (PQntuples(cur) == 0 || !strcmp(PQgetvalue(cur, 0, 0), "ENDED") ||
	    (seq >= 0 && seq <= atol(PQgetvalue(cur, 0, 1)))) {
		PQclear(cur); /* unknown, final already, or older than what we saw */
		return 0;
	}
	answered = PQgetvalue(cur, 0, 2)[0] == 't' || !strcmp(status, "in-progress");
	hangup_sent = PQgetvalue(cur, 0, 3)[0] == 't';
	hung_up = src == HANG_US || (src == HANG_EVENT && PQgetvalue(cur, 0, 4)[0] == 't');
	PQclear(cur);
	snprintf(seq_s, sizeof(seq_s), "%ld", seq >= 0 ? seq : 0);
	if (exec1(db, SQL_EVENT, 4, p) < 0)
		return -EIO;
	if (src == HANG_EVENT && hangup_sent && !hung_up && (!strcmp(status, "completed") || !strcmp(status, "canceled")))
		return 0;
	if (duration < 0 || duration > 86400)
		duration = 0;
	outcome = sched_outcome(status, answered_by, duration, answered, hung_up);
	if (outcome == NULL)
		return 0;
	return end_attempt(s, db, attempt, outcome, duration);
}

static int apply_msg(struct sched_ctx *s, PGconn *db, json_t *m)
{
	const char *type = str(m, "type"), *attempt = str(m, "attemptId");

	if (type == NULL || attempt == NULL)
		return -EINVAL;
	if (!strcmp(type, "dial.result")) {
		const char *outcome = str(m, "outcome"), *cls = str(m, "class"), *sid = str(m, "callSid");

		if (outcome == NULL)
			return -EINVAL;
		if (!strcmp(outcome, "accepted")) {
			const char *p[2] = {attempt, sid};

			return sid_valid(sid) ? exec1(db, SQL_ACCEPT, 2, p) : -EINVAL;
		}
		if (!strcmp(outcome, "skipped"))
			return 0;
		if (strcmp(outcome, "failed") || cls == NULL)
			return -EINVAL;
		if (!strcmp(cls, "invalid-number"))
			return end_attempt(s, db, attempt, "invalid-number", 0);
		if (!strcmp(cls, "ambiguous"))
			return exec1(db, SQL_AMBIGUOUS, 1, &attempt);
		/* Refused by the carrier: no call was made; a carrier failure. */
		return end_attempt(s, db, attempt, "failed", 0);
	}
	if (!strcmp(type, "call.status")) {
		const char *sid = str(m, "callSid"), *status = str(m, "callStatus");
		json_t *seq = json_object_get(m, "sequenceNumber");

		if (!sid_valid(sid) || status == NULL || !json_is_integer(seq))
			return -EINVAL;
		return apply_status(s, db, m, attempt, sid, status, (long)json_integer_value(seq), HANG_EVENT);
	}
	if (!strcmp(type, "reconcile.result")) {
		const char *sid = str(m, "callSid"), *status = str(m, "callStatus");
		PGresult *cur;
		bool unknown;

		cur = dl_db_exec(db, SQL_ATTEMPT, 1, &attempt, NULL);
		if (cur == NULL)
			return -EIO;
		unknown = PQntuples(cur) == 1 && !strcmp(PQgetvalue(cur, 0, 0), "UNKNOWN");
		PQclear(cur);
		if (!unknown)
			return 0;
		if (!json_is_true(json_object_get(m, "found")))
			/* The carrier never saw it: the dial did not happen. */
			return exec1(db, SQL_RELEASE, 1, &attempt);
		if (!sid_valid(sid) || status == NULL)
			return -EINVAL;
		{
			const char *p[2] = {attempt, sid};

			if (exec1(db, SQL_ACCEPT, 2, p) < 0)
				return -EIO;
		}
		return apply_status(s, db, m, attempt, sid, status, -1, HANG_EVENT);
	}
	if (!strcmp(type, "hangup.result")) {
		/* ended: the call was over before the hang-up (a lost or late
		 * final callback): its real outcome. hungUp: we ended it. Neither
		 * (the hang-up failed): the sweep sends it again. */
		const char *sid = str(m, "callSid"), *status = str(m, "callStatus");
		bool ended = json_is_true(json_object_get(m, "ended"));

		if (!ended && !json_is_true(json_object_get(m, "hungUp")))
			return 0;
		if (!sid_valid(sid))
			return -EINVAL;
		if (!ended && exec1(db, SQL_HUNG_UP, 1, &attempt) < 0)
			return -EIO;
		if (status == NULL)
			return 0; /* the final callback ends it */
		return apply_status(s, db, m, attempt, sid, status, -1, ended ? HANG_NOT_US : HANG_US);
	}
	return -EINVAL;
}

int sched_apply(struct sched_ctx *s, PGconn *db, const char *body, size_t len)
{
	json_t *m = json_loadb(body, len, 0, NULL);
	int r;

	if (!json_is_object(m)) {
		json_decref(m);
		return -EINVAL;
	}
	if (dl_db_cmd(db, "BEGIN") < 0) {
		json_decref(m);
		return -EIO;
	}
	r = apply_msg(s, db, m);
	if (r == 0 && dl_db_cmd(db, "COMMIT") < 0)
		r = -EIO;
	if (PQtransactionStatus(db) != PQTRANS_IDLE)
		DL_IGNORE(dl_db_cmd(db, "ROLLBACK"));
	json_decref(m);
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
	return 0;
}

void *sched_commands_thread(void *arg)
{
	struct sched_ctx *s = arg;

	consume(s, s->cfg->amqp_commands_queue, 32, wake, false);
	return NULL;
}
