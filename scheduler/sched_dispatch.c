/* Dispatch: for each running campaign, as many dials as its pace and its
 * concurrency cap allow now; each claimed call gets an attempt with a fresh
 * id and a dial job in the outbox, all in the transaction that checked this
 * replica still leads. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dl_db.h"
#include "dl_log.h"
#include "dl_metrics.h"
#include "sched_metrics.h"
#include "scheduler.h"

static const char SQL_RUNNING[] =
	"SELECT c.id, c.calls_per_minute, c.max_concurrent_calls,"
	" coalesce((extract(epoch FROM c.next_dial_at) * 1000000)::bigint, 0), c.queued + c.in_progress,"
	" c.call_timeout_minutes, f.voice_url, c.organization_id,"
	" (extract(epoch FROM clock_timestamp()) * 1000000)::bigint"
	" FROM campaigns c JOIN flows f ON f.id = c.flow_id"
	" WHERE c.status = 'IN_PROGRESS' AND c.pending > 0"
	/* Back-pressure: while a dial job of the campaign has waited for a
	 * worker longer than half its lateness allowance ($1 ms), the workers
	 * are behind; more jobs would only wait past their dial deadlines and
	 * be refused. Its slots go by unused until the queue moves again. A
	 * job waiting longer than reconcile_after_s ($2) counts as lost (say,
	 * dead-lettered) and holds nothing back. */
	" AND ($1::int = 0 OR NOT EXISTS (SELECT 1 FROM call_attempts a WHERE a.status = 'QUEUED'"
	"  AND a.campaign_id = c.id AND a.created_at < now() - make_interval(secs => $1::int / 1000.0)"
	"  AND a.created_at > now() - make_interval(secs => $2::int)))"
	" ORDER BY c.next_dial_at NULLS FIRST LIMIT 2000 FOR UPDATE OF c SKIP LOCKED";

/* Claims up to $2 due calls of campaign $1 (due retries first, then fresh
 * calls in snapshot order), creates their attempts and dial jobs, and moves
 * the campaign's counters and its next slot on by as many ($11 apart): one
 * round trip, so that a pass over many campaigns due at once fits their
 * pace. Each
 * attempt's dial deadline is its slot ($10 + k * $11, epoch microseconds)
 * plus $12 ms (none when 0): the fence refuses a job that comes later. Its
 * hangup_at, from which the timeout sweep looks at it, is the claim's time
 * plus its call's timeout and the grace ($13 ms): it is dialed later. */
static const char SQL_CLAIM[] =
	"WITH due AS ("
	"  (SELECT id FROM calls WHERE campaign_id = $1 AND status = 'PENDING'"
	"    AND next_attempt_at <= now() ORDER BY next_attempt_at LIMIT $2)"
	"  UNION ALL"
	"  (SELECT id FROM calls WHERE campaign_id = $1 AND status = 'PENDING'"
	"    AND next_attempt_at IS NULL ORDER BY id LIMIT $2)"
	"  LIMIT $2),"
	" claimed AS ("
	"  UPDATE calls SET status = 'QUEUED', attempts = attempts + 1, attempt_seq = attempt_seq + 1"
	"   WHERE id IN (SELECT id FROM due) AND status = 'PENDING'"
	"  RETURNING id, attempt_seq, phone_number),"
	" att AS ("
	"  INSERT INTO call_attempts (id, call_id, campaign_id, attempt_no, to_number, dial_deadline, hangup_at)"
	"  SELECT 'att_' || replace(gen_random_uuid()::text, '-', ''), id, $1, attempt_seq, phone_number,"
	"    CASE WHEN $12::bigint > 0 THEN to_timestamp(($10::bigint + (row_number() OVER (ORDER BY id) - 1)"
	"      * $11::bigint + $12::bigint * 1000) / 1000000.0) END,"
	"    now() + make_interval(secs => $13::bigint / 1000.0)"
	"    FROM claimed RETURNING id, call_id, to_number),"
	" jobs AS ("
	"  INSERT INTO outbox (exchange, routing_key, message_id, message_type, body)"
	"  SELECT $3, 'dial', 'msg_' || att.id, 'dial', jsonb_build_object("
	"    'type', 'dial', 'messageId', 'msg_' || att.id, 'attemptId', att.id, 'callId', att.call_id,"
	"    'campaignId', $1::text, 'organizationId', $4::text, 'to', att.to_number, 'from', $5::text,"
	"    'voiceUrl', $6::text, 'statusCallback', $7::text || att.id, 'timeLimitSec', $8::int,"
	"    'ringTimeoutSec', $9::int)"
	"  FROM att RETURNING 1),"
	/* the campaign's counters, and its next slot past the ones taken */
	" adv AS ("
	"  UPDATE campaigns SET pending = pending - n.k, queued = queued + n.k,"
	"   next_dial_at = to_timestamp(($10::bigint + n.k * $11::bigint) / 1000000.0)"
	"  FROM (SELECT count(*) AS k FROM claimed) n WHERE id = $1 AND n.k > 0 RETURNING 1)"
	" SELECT count(*) FROM jobs";

/* Ring time given to the carrier, in seconds. */
#define RING_TIMEOUT_S "30"

/* A due campaign's claim: its row in the running campaigns and the claim's
 * parameters. */
struct claim {
	int row;
	char limit[16], time_limit[16], base_s[24], step_s[24], late_s[16], hangup_ms[24];
	const char *p[13];
};

/* Campaigns claimed in one pipeline: their statements go out together and
 * their results come back after one sync (they must fit the socket buffers
 * meanwhile, so a pipeline carries a bounded number). */
#define DISPATCH_PIPE_MAX 64

/* Fills *cl for the campaign of camps' row when it may dial now; false
 * when its pace or its concurrency cap allows nothing. */
static bool claim_prepare(struct sched_ctx *s, PGresult *camps, int row, int64_t now_us, const char *callback,
			  struct claim *cl)
{
	struct sched_pace pace = {
		.next_us = atoll(PQgetvalue(camps, row, 3)),
		.calls_per_minute = atoi(PQgetvalue(camps, row, 1)),
		.max_concurrent = atoi(PQgetvalue(camps, row, 2)),
		.live = atoll(PQgetvalue(camps, row, 4)),
		.minute_ms = s->cfg->clock_minute_ms,
		.tick_ms = s->cfg->scheduler_tick_ms,
	};
	int64_t base;
	int n = sched_pace_allow(&pace, now_us, &base);

	if (n <= 0)
		return false;
	cl->row = row;
	snprintf(cl->limit, sizeof(cl->limit), "%d", n);
	snprintf(cl->time_limit, sizeof(cl->time_limit), "%d", atoi(PQgetvalue(camps, row, 5)) * 60);
	snprintf(cl->base_s, sizeof(cl->base_s), "%lld", (long long)base);
	snprintf(cl->step_s, sizeof(cl->step_s), "%lld", (long long)(sched_pace_advance(&pace, base, 1) - base));
	snprintf(cl->late_s, sizeof(cl->late_s), "%d", s->cfg->scheduler_dial_late_ms);
	snprintf(cl->hangup_ms, sizeof(cl->hangup_ms), "%lld",
		 ((long long)atoi(PQgetvalue(camps, row, 5)) * 60 + s->cfg->scheduler_timeout_grace_s) *
			 s->cfg->clock_minute_ms / 60);
	cl->p[0] = PQgetvalue(camps, row, 0);
	cl->p[1] = cl->limit;
	cl->p[2] = s->cfg->amqp_jobs_exchange;
	cl->p[3] = PQgetvalue(camps, row, 7);
	cl->p[4] = s->cfg->carrier_from;
	cl->p[5] = PQgetvalue(camps, row, 6);
	cl->p[6] = callback;
	cl->p[7] = cl->time_limit;
	cl->p[8] = RING_TIMEOUT_S;
	cl->p[9] = cl->base_s;
	cl->p[10] = cl->step_s;
	cl->p[11] = cl->late_s;
	cl->p[12] = cl->hangup_ms;
	return true;
}

/* Claims for n due campaigns in one pipeline, each under a savepoint
 * (SAVEPOINT, claim, RELEASE), one round trip for all. Returns how many
 * were claimed for (from the first on, their dials added to *total); when
 * that is fewer than n, the next one's claim failed and was rolled back
 * alone, and the caller goes on after it. -EIO when the pass must end. */
static int claim_pipeline(struct sched_ctx *s, PGconn *db, PGresult *camps, const struct claim *cl, int n,
			  int *total)
{
	int done = 0, left;

	if (dl_db_pipe_begin(db) < 0)
		return -EIO;
	for (int i = 0; i < n; i++)
		if (dl_db_pipe_send(db, "SAVEPOINT campaign", 0, NULL) < 0 ||
		    dl_db_pipe_send(db, SQL_CLAIM, 13, cl[i].p) < 0 ||
		    dl_db_pipe_send(db, "RELEASE SAVEPOINT campaign", 0, NULL) < 0)
			goto lost;
	if (dl_db_pipe_sync(db) < 0)
		goto lost;
	left = 3 * n;
	for (; done < n; done++) {
		PGresult *sp = dl_db_pipe_result(db, "SAVEPOINT campaign"), *r, *rel;
		int got;

		left--;
		if (sp == NULL)
			goto lost;
		PQclear(sp);
		r = dl_db_pipe_result(db, SQL_CLAIM);
		left--;
		if (r == NULL) {
			/* Its claim failed (logged): the rest of the pipeline was
			 * skipped. Back to its savepoint; the others go on. */
			if (dl_db_pipe_end(db, left) < 0 || PQstatus(db) != CONNECTION_OK ||
			    dl_db_cmd(db, "ROLLBACK TO SAVEPOINT campaign") < 0)
				return -EIO;
			dl_log_kv(DL_ERROR, "dispatch failed for a campaign; others go on", "campaign_id",
				  PQgetvalue(camps, cl[done].row, 0), NULL);
			return done;
		}
		got = atoi(PQgetvalue(r, 0, 0));
		PQclear(r);
		rel = dl_db_pipe_result(db, "RELEASE SAVEPOINT campaign");
		left--;
		if (rel == NULL)
			goto lost;
		PQclear(rel);
		sched_metrics_observe_pace(PQgetvalue(camps, cl[done].row, 0), got,
					   atoi(PQgetvalue(camps, cl[done].row, 1)), s->cfg->clock_minute_ms);
		*total += got;
	}
	if (dl_db_pipe_synced(db) < 0) {
		DL_IGNORE(dl_db_pipe_end(db, 0));
		return -EIO;
	}
	return dl_db_pipe_end(db, 0) < 0 ? -EIO : n;
lost:
	DL_IGNORE(dl_db_pipe_end(db, 3 * n));
	return -EIO;
}

int sched_dispatch(struct sched_ctx *s, PGconn *db)
{
	PGresult *camps = NULL;
	struct claim *cl = NULL;
	char waited[16], lost[16], callback[512];
	int total = 0, r = -EIO, budget = s->cfg->scheduler_dispatch_batch;

	s->dispatch_more = false;
	/* The claim is prepared (parsed once a connection) but planned for
	 * each campaign, as it was unprepared: a generic plan, the same for a
	 * campaign of a thousand calls and one of a million, is not trusted
	 * with it. Preparing alone took a pass over 1,000 campaigns from
	 * 997 to 720 ms on this machine. */
	if (dl_db_prepare(db, SQL_CLAIM, 13) < 0)
		return -EIO;
	if (dl_db_cmd(db, "BEGIN") < 0)
		return -EIO;
	if (dl_db_cmd(db, "SET LOCAL plan_cache_mode = force_custom_plan") < 0)
		goto out;
	if (!sched_lease_check(s, db)) {
		r = 0;
		goto out;
	}
	snprintf(waited, sizeof(waited), "%d", s->cfg->scheduler_dial_late_ms / 2);
	snprintf(lost, sizeof(lost), "%d", s->cfg->scheduler_reconcile_after_s);
	snprintf(callback, sizeof(callback), "%s/v1/carrier/status?attemptId=", s->cfg->api_public_url);
	camps = dl_db_exec(db, SQL_RUNNING, 2, (const char *const[]){waited, lost}, NULL);
	if (camps == NULL)
		goto out;
	cl = malloc(sizeof(*cl) * DISPATCH_PIPE_MAX);
	if (cl == NULL)
		goto out;
	/* The due campaigns, DISPATCH_PIPE_MAX to a pipeline. One campaign's
	 * failure must not stall the others: each runs under a savepoint, and
	 * a failed one is rolled back alone. The database's clock paces, so
	 * replicas' clocks never matter. */
	for (int i = 0; i < PQntuples(camps);) {
		int n = 0, done, planned = 0;

		/* A pass commits after about scheduler.dispatch_batch dials, so
		 * that the relay publishes those while the next pass claims more
		 * (fifty campaigns of a thousand dials each were one transaction
		 * of 50,000 jobs, seconds with nothing published until its
		 * commit). The next pass follows at once and finds the campaigns
		 * again, so a pause or a cancel in between is seen. */
		if (total >= budget) {
			s->dispatch_more = true;
			break;
		}
		for (; i < PQntuples(camps) && n < DISPATCH_PIPE_MAX && total + planned < budget; i++)
			if (claim_prepare(s, camps, i, atoll(PQgetvalue(camps, i, 8)), callback, &cl[n]))
				planned += atoi(cl[n++].limit);
		if (n == 0)
			break;
		done = claim_pipeline(s, db, camps, cl, n, &total);
		if (done < 0)
			goto out;
		if (done < n)
			i = cl[done].row + 1; /* on after the failed one */
	}
	if (dl_db_cmd(db, "COMMIT") < 0)
		goto out;
	if (total > 0)
		dl_metrics_add("dialer_scheduler_dials_dispatched_total", "", total);
	r = total;
out:
	if (r < 0)
		s->dispatch_more = false; /* after a failure, the tick's pause */
	free(cl);
	PQclear(camps);
	if (PQtransactionStatus(db) != PQTRANS_IDLE)
		DL_IGNORE(dl_db_cmd(db, "ROLLBACK"));
	return r;
}
