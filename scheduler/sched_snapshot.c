/* Audience snapshots, on a thread of their own so that a large audience
 * never holds up the leader's dispatch of other campaigns. A started
 * campaign's audience becomes call rows a range at a time, in the
 * audience's order (added_at, contact_id): a small first range so that
 * dialing starts at once, then large ones. Numbers on the organization's
 * do-not-call list become SKIPPED calls. Contacts added to the audience
 * after the campaign started are not part of it.
 *
 * A range's copy is one set-based statement, CPU-bound in Postgres, so the
 * ranges are copied scheduler.snapshot_connections at a time, each on a
 * connection of its own (sent without waiting, answered as they finish).
 * So that the calls still have the audience's order (calls are dialed and
 * listed by id), each range's ids are reserved before it is sent: a block
 * of the calls' sequence as long as the range, numbered in the range's
 * order. The campaign's cursor (snapshot_after_*) moves only over ranges
 * that are all copied; each range adds to the campaign's counters in its
 * own statement. A range copied again (its copy committed, the cursor not
 * yet moved past it, then the leader changed) meets its calls and is
 * copied again without them, counted from the rows actually inserted. */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dl_db.h"
#include "dl_log.h"
#include "scheduler.h"

#define FIRST_CHUNK_MAX 2000
#define SNAPSHOT_CONNS_MAX 8
#define SNAPSHOT_TEXT_MAX 256 /* a cursor's timestamp or contact id as text */
/* The ids of a range are reserved under this (transaction) lock, so two
 * reservations never interleave. */
#define RESERVE_LOCK "7309198190137712"

static const char SQL_TO_SNAPSHOT[] =
	"SELECT id, audience_id, status, total,"
	" coalesce(snapshot_after_at, '-infinity'::timestamptz), coalesce(snapshot_after_id, ''),"
	" coalesce(started_at, now())"
	" FROM campaigns WHERE NOT snapshot_done"
	" AND status IN ('IN_PROGRESS', 'PAUSED', 'CANCELLED') ORDER BY started_at LIMIT 1";
/* The next range: $1 campaign, $2 audience, $3/$4 where it starts
 * (exclusive), $5 its length, $6 the start of the campaign. Answers its last
 * row (none when fewer rows are left; the range is the last one, too, when
 * that row was added after the start), the campaign's status, and the first
 * of $5 call ids reserved for it. */
static const char SQL_NEXT_RANGE[] =
	"SELECT b.added_at, b.contact_id, coalesce(b.added_at > $6::timestamptz, true), c.status,"
	" setval('calls_id_seq', nextval('calls_id_seq') + $5::int - 1) - $5::int + 1"
	" FROM (SELECT pg_advisory_xact_lock(" RESERVE_LOCK ")) l"
	" CROSS JOIN (SELECT status FROM campaigns WHERE id = $1) c"
	" LEFT JOIN LATERAL (SELECT added_at, contact_id FROM audience_contacts"
	"  WHERE audience_id = $2 AND (added_at, contact_id) > ($3::timestamptz, $4::text)"
	"  ORDER BY added_at, contact_id OFFSET $5::int - 1 LIMIT 1) b ON true";
/* One range's copy: $1 campaign, $2 audience, $3/$4 after, $5/$6 up to and
 * including, $7 the start of the campaign, $8 the first id reserved, $9 the
 * range's length (as many ids are reserved), $10 whether it is copied again.
 * dialer_snapshot_range (migration 0021) inserts the range's calls, moves
 * the campaign's counters by its row count, and returns the campaign's
 * total.
 *
 * What a range costs is mostly its rows' inserts, so it asks no more of
 * them than it must:
 * - the audience's rows come in index order and keep it through the
 *   lookups, so no sort is needed to number and insert them in order;
 * - the do-not-call list is looked up only when the organization has one;
 * - the INSERT returns nothing (the counters come from its row count);
 * - the INSERT is plain: a call that exists already makes it fail, and the
 *   range is copied again with $10, which skips such calls (ON CONFLICT DO
 *   NOTHING costs a quarter more on every row). */
static const char SQL_CHUNK[] =
	"SELECT dialer_snapshot_range($1, $2, $3::timestamptz, $4::text, $5::timestamptz, $6::text, $7::timestamptz,"
	" $8::bigint, $9::int, $10::bool)";
/* $1 campaign, $2/$3 the cursor (NULL: unchanged), $4 whether done. The
 * cursor only moves forward (a replica that has just lost the lease may
 * still be writing it). */
#define CURSOR_MOVES                                                                                        \
	"CASE WHEN $2::timestamptz IS NOT NULL AND ($2::timestamptz, $3::text) >"                          \
	" (coalesce(snapshot_after_at, '-infinity'::timestamptz), coalesce(snapshot_after_id, ''))"
static const char SQL_CURSOR[] =
	"UPDATE campaigns SET snapshot_after_at = " CURSOR_MOVES " THEN $2::timestamptz ELSE snapshot_after_at END,"
	" snapshot_after_id = " CURSOR_MOVES " THEN $3::text ELSE snapshot_after_id END,"
	" snapshot_done = snapshot_done OR $4::bool WHERE id = $1 RETURNING total";

/* A range of the audience: after from, up to and including to. The last
 * range has no end: the rest of the audience, as far as the start. */
struct snap_range {
	char from_at[SNAPSHOT_TEXT_MAX], from_id[SNAPSHOT_TEXT_MAX];
	char to_at[SNAPSHOT_TEXT_MAX], to_id[SNAPSHOT_TEXT_MAX];
	char base[24]; /* the first call id reserved for it */
	char len[16];  /* its length, as many ids as are reserved */
	bool last;
	bool done;
	bool again;    /* being copied without the calls it has already */
};

struct snap_conn {
	PGconn *db;
	struct snap_range *range; /* the range it copies; NULL when idle */
};

/* The campaign whose audience is being copied. */
struct snap_job {
	bool active;
	bool failed;       /* a range failed: start over from the cursor once idle */
	bool all_sent;     /* the last range is sent, or the campaign was cancelled */
	bool cancelled;
	char id[DL_ID_MAX], audience[DL_ID_MAX], started_at[64];
	bool first;        /* no call of it exists yet: a small first range */
	/* where the next range starts */
	char next_at[SNAPSHOT_TEXT_MAX], next_id[SNAPSHOT_TEXT_MAX];
	/* the ranges sent and not yet passed by the cursor, in order */
	struct snap_range ranges[SNAPSHOT_CONNS_MAX];
	int head, count;
	int64_t t0;
};

struct snapshot {
	struct sched_ctx *s;
	PGconn *db; /* picks campaigns, reserves ranges, moves cursors */
	struct snap_conn conns[SNAPSHOT_CONNS_MAX];
	int nconns;
	struct snap_job job;
};

static bool text_fits(const char *v)
{
	return strlen(v) < SNAPSHOT_TEXT_MAX;
}

static int busy_conns(const struct snapshot *sn)
{
	int n = 0;

	for (int i = 0; i < sn->nconns; i++)
		n += sn->conns[i].range != NULL;
	return n;
}

/* Picks the campaign to copy next; 1 when there is one, 0, -EIO. */
static int job_pick(struct snapshot *sn)
{
	struct snap_job *j = &sn->job;
	PGresult *r = dl_db_exec(sn->db, SQL_TO_SNAPSHOT, 0, NULL, NULL);
	int rc = 0;

	if (r == NULL)
		return -EIO;
	if (PQntuples(r) == 1 && strlen(PQgetvalue(r, 0, 0)) < sizeof(j->id) &&
	    strlen(PQgetvalue(r, 0, 1)) < sizeof(j->audience) && strlen(PQgetvalue(r, 0, 6)) < sizeof(j->started_at) &&
	    text_fits(PQgetvalue(r, 0, 4)) && text_fits(PQgetvalue(r, 0, 5))) {
		memset(j, 0, sizeof(*j));
		j->active = true;
		j->cancelled = !strcmp(PQgetvalue(r, 0, 2), "CANCELLED");
		j->all_sent = j->cancelled;
		j->first = atol(PQgetvalue(r, 0, 3)) == 0;
		snprintf(j->id, sizeof(j->id), "%s", PQgetvalue(r, 0, 0));
		snprintf(j->audience, sizeof(j->audience), "%s", PQgetvalue(r, 0, 1));
		snprintf(j->next_at, sizeof(j->next_at), "%s", PQgetvalue(r, 0, 4));
		snprintf(j->next_id, sizeof(j->next_id), "%s", PQgetvalue(r, 0, 5));
		snprintf(j->started_at, sizeof(j->started_at), "%s", PQgetvalue(r, 0, 6));
		j->t0 = dl_mono_ms();
		rc = 1;
	}
	PQclear(r);
	return rc;
}

static void range_send_failed(struct snapshot *sn, struct snap_conn *c, const char *why)
{
	dl_log_kv(DL_WARN, "audience range not sent", "campaign_id", sn->job.id, "error", why, NULL);
	c->range = NULL;
	PQfinish(c->db);
	c->db = NULL;
	sn->job.failed = true;
}

/* Sends c's range's copy without waiting for it. */
static void range_send(struct snapshot *sn, struct snap_conn *c)
{
	const struct snap_range *rg = c->range;
	const char *p[10] = {sn->job.id,
			    sn->job.audience,
			    rg->from_at,
			    rg->from_id,
			    rg->last ? "infinity" : rg->to_at,
			    rg->last ? "" : rg->to_id,
			    sn->job.started_at,
			    rg->base,
			    rg->len,
			    rg->again ? "true" : "false"};

	if (!PQsendQueryParams(c->db, SQL_CHUNK, 10, NULL, p, NULL, NULL, 0))
		range_send_failed(sn, c, PQerrorMessage(c->db));
}

/* Reserves the next range of the job and sends it on c; 1 when sent, 0 when
 * there is none (the last is sent, or the campaign is cancelled), -EIO. */
static int range_next(struct snapshot *sn, struct snap_conn *c)
{
	struct snap_job *j = &sn->job;
	struct snap_range *rg;
	char len[16];
	int n = sn->s->cfg->scheduler_snapshot_chunk;
	PGresult *r;

	if (j->first && n > FIRST_CHUNK_MAX)
		n = FIRST_CHUNK_MAX;
	j->first = false;
	snprintf(len, sizeof(len), "%d", n);
	{
		const char *p[6] = {j->id, j->audience, j->next_at, j->next_id, len, j->started_at};

		r = dl_db_exec(sn->db, SQL_NEXT_RANGE, 6, p, NULL);
	}
	if (r == NULL)
		return -EIO;
	if (PQntuples(r) == 0 || !strcmp(PQgetvalue(r, 0, 3), "CANCELLED")) {
		/* Gone or cancelled: nothing more of it is called. */
		j->all_sent = true;
		j->cancelled = true;
		PQclear(r);
		return 0;
	}
	if (!text_fits(PQgetvalue(r, 0, 0)) || !text_fits(PQgetvalue(r, 0, 1))) {
		dl_log_kv(DL_ERROR, "audience cursor too long to hold", "campaign_id", j->id, NULL);
		PQclear(r);
		return -EIO;
	}
	rg = &j->ranges[(j->head + j->count) % SNAPSHOT_CONNS_MAX];
	memset(rg, 0, sizeof(*rg));
	snprintf(rg->from_at, sizeof(rg->from_at), "%s", j->next_at);
	snprintf(rg->from_id, sizeof(rg->from_id), "%s", j->next_id);
	snprintf(rg->to_at, sizeof(rg->to_at), "%s", PQgetvalue(r, 0, 0));
	snprintf(rg->to_id, sizeof(rg->to_id), "%s", PQgetvalue(r, 0, 1));
	snprintf(rg->base, sizeof(rg->base), "%s", PQgetvalue(r, 0, 4));
	snprintf(rg->len, sizeof(rg->len), "%s", len);
	rg->last = PQgetvalue(r, 0, 2)[0] == 't';
	PQclear(r);
	j->count++;
	j->all_sent = rg->last;
	snprintf(j->next_at, sizeof(j->next_at), "%s", rg->to_at);
	snprintf(j->next_id, sizeof(j->next_id), "%s", rg->to_id);
	c->range = rg;
	range_send(sn, c);
	return 1;
}

/* Moves the campaign's cursor past the ranges copied from its start on;
 * ends the job when its last range is. */
static int cursor_advance(struct snapshot *sn)
{
	struct snap_job *j = &sn->job;
	const struct snap_range *upto = NULL;
	bool done;
	PGresult *r;

	while (j->count > 0 && j->ranges[j->head].done) {
		upto = &j->ranges[j->head];
		j->head = (j->head + 1) % SNAPSHOT_CONNS_MAX;
		j->count--;
	}
	done = (j->all_sent && j->count == 0 && busy_conns(sn) == 0) && (upto != NULL || j->cancelled);
	if (upto == NULL && !done)
		return 0;
	{
		bool moves = upto != NULL && !upto->last;
		const char *p[4] = {j->id, moves ? upto->to_at : NULL, moves ? upto->to_id : NULL, done ? "true" : "false"};

		r = dl_db_exec(sn->db, SQL_CURSOR, 4, p, NULL);
	}
	if (r == NULL)
		return -EIO;
	if (done) {
		char ms[24];

		snprintf(ms, sizeof(ms), "%lld", (long long)(dl_mono_ms() - j->t0));
		dl_log_kv(DL_INFO, j->cancelled ? "audience snapshot ended: campaign cancelled" : "audience snapshotted",
			  "campaign_id", j->id, "calls", PQntuples(r) == 1 ? PQgetvalue(r, 0, 0) : "?", "ms", ms,
			  NULL);
		j->active = false;
	}
	PQclear(r);
	return 0;
}

/* Takes c's answer, once it has all come: the range is copied, or copied
 * again without the calls it has already, or the job starts over. */
static void range_answered(struct snapshot *sn, struct snap_conn *c)
{
	struct snap_range *rg = c->range;
	PGresult *r;
	bool ok = false, exists = false;
	char why[256] = "";

	if (!PQconsumeInput(c->db)) {
		range_send_failed(sn, c, PQerrorMessage(c->db));
		return;
	}
	if (PQisBusy(c->db))
		return;
	while ((r = PQgetResult(c->db)) != NULL) {
		ExecStatusType st = PQresultStatus(r);

		if (st == PGRES_TUPLES_OK) {
			ok = true;
		} else {
			const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);

			exists = state != NULL && !strcmp(state, "23505");
			snprintf(why, sizeof(why), "%s", PQresultErrorMessage(r));
		}
		PQclear(r);
	}
	c->range = NULL;
	if (ok) {
		rg->done = true;
		return;
	}
	if (exists && !rg->again) {
		/* Its calls were copied, or some of them, by a leader that has
		 * lost the lease since: copied again without them. */
		dl_log_kv(DL_WARN, "audience range has calls already: copying it again without them", "campaign_id",
			  sn->job.id, NULL);
		rg->again = true;
		c->range = rg;
		range_send(sn, c);
		return;
	}
	why[strcspn(why, "\n")] = '\0';
	dl_log_kv(DL_WARN, "audience range not copied: starting over from the cursor", "campaign_id", sn->job.id,
		  "error", why, NULL);
	sn->job.failed = true;
}

/* Waits up to wait_ms for the copying connections, taking their answers. */
static void conns_wait(struct snapshot *sn, int wait_ms)
{
	struct pollfd fds[SNAPSHOT_CONNS_MAX];
	int map[SNAPSHOT_CONNS_MAX], n = 0;

	for (int i = 0; i < sn->nconns; i++) {
		if (sn->conns[i].range == NULL)
			continue;
		fds[n] = (struct pollfd){.fd = PQsocket(sn->conns[i].db), .events = POLLIN};
		map[n++] = i;
	}
	if (n == 0 || poll(fds, (nfds_t)n, wait_ms) <= 0)
		return;
	for (int k = 0; k < n; k++)
		if (fds[k].revents != 0)
			range_answered(sn, &sn->conns[map[k]]);
}

/* An idle connection to copy a range on, connected if need be; NULL when
 * none is free or none connects. */
static struct snap_conn *conn_idle(struct snapshot *sn)
{
	for (int i = 0; i < sn->nconns; i++) {
		struct snap_conn *c = &sn->conns[i];

		if (c->range != NULL)
			continue;
		if (c->db != NULL && PQstatus(c->db) != CONNECTION_OK) {
			PQfinish(c->db);
			c->db = NULL;
		}
		if (c->db == NULL && sched_db_connect(sn->s, &c->db) < 0)
			continue;
		return c;
	}
	return NULL;
}

static void conns_close(struct snapshot *sn)
{
	for (int i = 0; i < sn->nconns; i++) {
		struct snap_conn *c = &sn->conns[i];

		if (c->range != NULL && c->db != NULL) {
			/* Stopping: a copy cut short is copied again later. */
			PGcancel *cancel = PQgetCancel(c->db);
			char err[128];

			if (cancel != NULL) {
				DL_IGNORE(PQcancel(cancel, err, sizeof(err)));
				PQfreeCancel(cancel);
			}
		}
		PQfinish(c->db);
		c->db = NULL;
		c->range = NULL;
	}
}

/* One step of the snapshot: sends what may be sent, waits a little for the
 * answers, moves the cursor. 1 when busy, 0 when there is nothing to copy,
 * -EIO. */
static int snapshot_step(struct snapshot *sn)
{
	struct snap_job *j = &sn->job;
	bool leading = sched_lease_held(sn->s);

	if (!j->active) {
		int r;

		/* The lease is not locked here (a copy would hold up its
		 * renewal): a range copied by a replica that has just lost the
		 * lease is harmless, as copying is idempotent (ON CONFLICT DO
		 * NOTHING, counts from the rows actually inserted, the cursor
		 * only moves forward). */
		if (!leading)
			return 0;
		r = job_pick(sn);
		if (r <= 0)
			return r;
	}
	while (leading && !j->failed && !j->all_sent && j->count < SNAPSHOT_CONNS_MAX) {
		struct snap_conn *c = conn_idle(sn);
		int r;

		if (c == NULL)
			break;
		r = range_next(sn, c);
		if (r < 0)
			j->failed = true;
		if (r <= 0)
			break;
	}
	if (leading && !j->all_sent && busy_conns(sn) == 0)
		j->failed = true; /* no connection to copy on */
	conns_wait(sn, 100);
	if (leading && cursor_advance(sn) < 0)
		j->failed = true;
	if (j->active && (j->failed || !leading)) {
		if (busy_conns(sn) > 0)
			return 1;
		/* Idle: what was copied stays (the cursor is behind it only
		 * when a range before it failed), the rest is copied again. */
		j->active = false;
		return j->failed ? -EIO : 0;
	}
	return 1;
}

void *sched_snapshot_thread(void *arg)
{
	struct snapshot sn = {.s = arg};
	volatile int *stop = &sn.s->svc->stop;

	sn.nconns = sn.s->cfg->scheduler_snapshot_connections;
	if (sn.nconns > SNAPSHOT_CONNS_MAX)
		sn.nconns = SNAPSHOT_CONNS_MAX;
	while (!*stop) {
		int r;

		if (sn.db == NULL || PQstatus(sn.db) != CONNECTION_OK) {
			PQfinish(sn.db);
			sn.db = NULL;
			/* Its role runs without JIT (migration 0013): a range's
			 * plan costs enough to be compiled every time, which took
			 * longer than it saved. */
			if (sched_db_connect(sn.s, &sn.db) < 0) {
				dl_sleep_ms(1000, stop);
				continue;
			}
		}
		r = snapshot_step(&sn);
		if (r < 0)
			dl_sleep_ms(500, stop);
		else if (r == 0)
			/* Nothing to copy: look again after a tick, or at once on
			 * a command. */
			for (int waited = 0; waited < sn.s->cfg->scheduler_tick_ms && !*stop &&
					     !__atomic_exchange_n(&sn.s->snapshot_wake, 0, __ATOMIC_ACQ_REL);
			     waited += 5)
				dl_sleep_ms(5, NULL);
	}
	conns_close(&sn);
	PQfinish(sn.db);
	return NULL;
}
