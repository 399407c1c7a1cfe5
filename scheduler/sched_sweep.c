/* Housekeeping passes of the leader, each its own transaction that re-checks
 * the lease: scheduled starts, cancels, quota pauses,
 * call timeouts, reconciles of attempts whose outcome is unknown, and
 * completion. Audience snapshots have a thread of their own
 * (sched_snapshot.c). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dl_db.h"
#include "dl_log.h"
#include "dl_metrics.h"
#include "scheduler.h"

static const char SQL_SCHEDULED_START[] =
	"UPDATE campaigns SET status = 'IN_PROGRESS', started_at = coalesce(started_at, now())"
	" WHERE status = 'SCHEDULED' AND scheduled_at <= now() RETURNING id";
/* The pending calls of cancelled campaigns, found campaign by campaign
 * (the planner, left to itself, read the whole calls table for them at
 * every sweep, there were any or not). */
static const char SQL_CANCEL_PENDING[] =
	"WITH s AS (UPDATE calls SET status = 'SKIPPED', outcome = 'cancelled', completed_at = now()"
	"  WHERE id = ANY (ARRAY(SELECT k.id FROM campaigns c CROSS JOIN LATERAL"
	"   (SELECT id FROM calls WHERE calls.campaign_id = c.id AND calls.status = 'PENDING' OFFSET 0) k"
	"   WHERE c.status = 'CANCELLED' AND c.pending > 0))"
	"  AND status = 'PENDING' RETURNING campaign_id),"
	" n AS (SELECT campaign_id, count(*) AS c FROM s GROUP BY campaign_id)"
	" UPDATE campaigns SET pending = pending - n.c, skipped = skipped + n.c FROM n"
	" WHERE campaigns.id = n.campaign_id";
static const char SQL_QUOTA_PAUSE[] =
	"UPDATE campaigns SET status = 'PAUSED', pause_reason = 'quota_exhausted'"
	" WHERE status = 'IN_PROGRESS' AND organization_id IN"
	" (SELECT id FROM organizations WHERE used_minutes >= quota_minutes) RETURNING id";
/* Live past callTimeoutMinutes plus the grace: hang up (the worker first
 * asks the carrier whether the call is still live). Its result is awaited
 * for reconcile_after_s ($4). Only attempts past their hangup_at (the
 * claim's time plus that much) are read (call_attempts_talking); each is
 * due once as long has passed since it was dialed. */
static const char SQL_TIMEOUT_HANGUP[] =
	"WITH t AS ("
	"  UPDATE call_attempts a SET hangup_sent = true,"
	"   reconcile_at = now() + make_interval(secs => $4::int)"
	"  FROM campaigns c WHERE c.id = a.campaign_id AND a.status = 'ACCEPTED' AND NOT a.hangup_sent"
	"   AND a.hangup_at < now()"
	"   AND a.dialed_at < now() - make_interval(secs => (c.call_timeout_minutes * 60 + $3::int) * $2::int / 60000.0)"
	"  RETURNING a.id, a.call_sid)"
	" INSERT INTO outbox (exchange, routing_key, message_id, message_type, body)"
	" SELECT $1, 'dial', 'msg_hangup_' || t.id, 'hangup',"
	"  jsonb_build_object('type', 'hangup', 'messageId', 'msg_hangup_' || t.id, 'attemptId', t.id,"
	"   'callSid', t.call_sid) FROM t RETURNING 1";
/* No result of the hang-up yet: send it again, twice at most. */
static const char SQL_HANGUP_AGAIN[] =
	"WITH t AS ("
	"  UPDATE call_attempts SET hangup_tries = hangup_tries + 1,"
	"   reconcile_at = now() + make_interval(secs => $2::int)"
	"  WHERE id IN (SELECT id FROM call_attempts WHERE status = 'ACCEPTED' AND hangup_sent"
	"   AND reconcile_at < now() AND hangup_tries < 2 LIMIT 500)"
	"  RETURNING id, call_sid, hangup_tries)"
	" INSERT INTO outbox (exchange, routing_key, message_id, message_type, body)"
	" SELECT $1, 'dial', 'msg_hangup_' || t.id || '_' || t.hangup_tries, 'hangup',"
	"  jsonb_build_object('type', 'hangup', 'messageId', 'msg_hangup_' || t.id || '_' || t.hangup_tries,"
	"   'attemptId', t.id, 'callSid', t.call_sid) FROM t RETURNING 1";
/* Hung up three times and still nothing from the carrier: end as timeout. */
static const char SQL_TIMED_OUT[] =
	"SELECT id FROM call_attempts WHERE status = 'ACCEPTED' AND hangup_sent AND reconcile_at < now()"
	" AND hangup_tries >= 2 LIMIT 500";
static const char SQL_END[] = "SELECT dialer_end_attempt($1, $2, $3::int, $4::boolean, $5::int)";
/* Fenced but silent (worker died?) or ambiguous: ask the carrier first.
 * The dialing attempts are read from call_attempts_dialing, only those
 * silent long enough; an attempt that moved on since is left alone. */
static const char SQL_RECONCILE[] =
	"WITH r AS ("
	"  UPDATE call_attempts SET status = 'UNKNOWN',"
	"   reconcile_at = now() + make_interval(secs => $2::int)"
	"  WHERE id IN ((SELECT id FROM call_attempts WHERE status = 'DIALING'"
	"    AND dialed_at < now() - make_interval(secs => $2::int) LIMIT 500)"
	"   UNION ALL (SELECT id FROM call_attempts WHERE status = 'UNKNOWN' AND reconcile_at <= now() LIMIT 500)"
	"   LIMIT 500)"
	"  AND ((status = 'DIALING' AND dialed_at < now() - make_interval(secs => $2::int))"
	"   OR (status = 'UNKNOWN' AND reconcile_at <= now()))"
	"  RETURNING id, to_number, dialed_at,"
	"   'msg_rec_' || id || '_' || (extract(epoch FROM now()) * 1000)::bigint AS mid)"
	" INSERT INTO outbox (exchange, routing_key, message_id, message_type, body)"
	" SELECT $1, 'dial', r.mid, 'reconcile',"
	"  jsonb_build_object('type', 'reconcile', 'messageId', r.mid, 'attemptId', r.id,"
	"   'to', r.to_number, 'since', iso_utc(r.dialed_at - interval '5 seconds')) FROM r RETURNING 1";
static const char SQL_COMPLETE[] =
	"UPDATE campaigns SET status = 'COMPLETED', completed_at = now()"
	" WHERE status = 'IN_PROGRESS' AND snapshot_done AND pending = 0 AND queued = 0 AND in_progress = 0"
	" RETURNING id";

/* One pass in its own transaction under the lease; logs `what` per
 * campaign id returned when log_ids. Returns rows affected or -EIO. */
static int step(struct sched_ctx *s, PGconn *db, const char *what, bool log_ids, const char *sql, int n,
		const char *const *p)
{
	PGresult *r;
	int rows;

	if (dl_db_cmd(db, "BEGIN") < 0)
		return -EIO;
	if (!sched_lease_check(s, db)) {
		DL_IGNORE(dl_db_cmd(db, "ROLLBACK"));
		return 0;
	}
	r = dl_db_exec(db, sql, n, p, NULL);
	if (r == NULL || dl_db_cmd(db, "COMMIT") < 0) {
		PQclear(r);
		DL_IGNORE(dl_db_cmd(db, "ROLLBACK"));
		return -EIO;
	}
	rows = PQresultStatus(r) == PGRES_TUPLES_OK ? PQntuples(r) : atoi(PQcmdTuples(r));
	for (int i = 0; log_ids && i < PQntuples(r); i++)
		dl_log_kv(DL_INFO, what, "campaign_id", PQgetvalue(r, i, 0), NULL);
	if (!log_ids && rows > 0) {
		char count[16];

		snprintf(count, sizeof(count), "%d", rows);
		dl_log_kv(DL_INFO, what, "count", count, NULL);
	}
	PQclear(r);
	return rows;
}

static int end_timed_out(struct sched_ctx *s, PGconn *db)
{
	PGresult *r = dl_db_exec(db, SQL_TIMED_OUT, 0, NULL, NULL);
	char minute[16];
	int n = 0;

	if (r == NULL)
		return -EIO;
	snprintf(minute, sizeof(minute), "%d", s->cfg->clock_minute_ms);
	for (int i = 0; i < PQntuples(r); i++) {
		const char *p[5] = {PQgetvalue(r, i, 0), "timeout", "0", "false", minute};
		PGresult *e = dl_db_exec(db, SQL_END, 5, p, NULL);

		if (e != NULL)
			n++;
		PQclear(e);
	}
	PQclear(r);
	return n;
}

int sched_sweep(struct sched_ctx *s, PGconn *db)
{
	char minute[16], grace[16], reconcile[16];
	const char *hang[4] = {s->cfg->amqp_jobs_exchange, minute, grace, reconcile};
	const char *rec[2] = {s->cfg->amqp_jobs_exchange, reconcile};

	snprintf(minute, sizeof(minute), "%d", s->cfg->clock_minute_ms);
	snprintf(grace, sizeof(grace), "%d", s->cfg->scheduler_timeout_grace_s);
	snprintf(reconcile, sizeof(reconcile), "%d", s->cfg->scheduler_reconcile_after_s);
	if (step(s, db, "scheduled campaign started", true, SQL_SCHEDULED_START, 0, NULL) < 0)
		return -EIO;
	if (step(s, db, "cancelled calls skipped", false, SQL_CANCEL_PENDING, 0, NULL) < 0 ||
	    step(s, db, "campaign paused: no call minutes left", true, SQL_QUOTA_PAUSE, 0, NULL) < 0 ||
	    step(s, db, "timed-out calls hung up", false, SQL_TIMEOUT_HANGUP, 4, hang) < 0 ||
	    step(s, db, "hang-ups sent again", false, SQL_HANGUP_AGAIN, 2, rec) < 0 ||
	    step(s, db, "attempts sent for reconciliation", false, SQL_RECONCILE, 2, rec) < 0 ||
	    end_timed_out(s, db) < 0 ||
	    step(s, db, "campaign completed", true, SQL_COMPLETE, 0, NULL) < 0)
		return -EIO;
	return 0;
}
