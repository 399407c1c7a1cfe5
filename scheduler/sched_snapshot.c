/* Audience snapshots, on a thread of their own so that a large audience
 * never holds up the leader's dispatch of other campaigns. A started
 * campaign's audience becomes call rows a chunk at a time, in the
 * audience's order (added_at, contact_id): a small first chunk so that
 * dialing starts at once, then large ones. Each chunk is one set-based
 * statement in its own transaction; numbers on the
 * organization's do-not-call list become SKIPPED calls. Contacts added to
 * the audience after the campaign started are not part of it. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dl_db.h"
#include "dl_log.h"
#include "scheduler.h"

#define FIRST_CHUNK_MAX 2000

static const char SQL_TO_SNAPSHOT[] =
	"SELECT id, audience_id, status, total,"
	" coalesce(snapshot_after_at, '-infinity'::timestamptz), coalesce(snapshot_after_id, ''),"
	" coalesce(started_at, now())"
	" FROM campaigns WHERE NOT snapshot_done"
	" AND status IN ('IN_PROGRESS', 'PAUSED', 'CANCELLED') ORDER BY started_at LIMIT 1";
/* $1 campaign, $2 audience, $3/$4 cursor, $5 chunk size, $6 started at.
 * The campaign row is locked only by the UPDATE at the end, so dispatch of
 * its calls goes on while a chunk is copied.
 *
 * What a chunk costs is mostly its rows' inserts, so it asks no more of
 * them than it must:
 * - the audience's rows come in index order and keep it through the
 *   lookups, so no sort is needed to insert them in order (the cursor is
 *   read past the chunk in the index again, not from the rows);
 * - the do-not-call list is looked up only when the organization has one
 *   (an InitPlan of the same statement: the same snapshot as the rows);
 * - the INSERT is plain: a call that exists already makes it fail, and the
 *   chunk is copied again by SQL_CHUNK_AGAIN, which skips such calls (ON
 *   CONFLICT DO NOTHING costs a quarter more on every row). Only a replica
 *   that has just lost the lease copies a chunk twice. */
#define CHUNK_SQL(ON_CONFLICT)                                                                              \
	"WITH ins AS ("                                                                                     \
	"  INSERT INTO calls (campaign_id, contact_id, contact_name, phone_number, status, outcome, completed_at)" \
	"  SELECT $1, c.id, c.name, c.phone_number,"                                                       \
	"    CASE WHEN d.phone_number IS NULL THEN 'PENDING' ELSE 'SKIPPED' END,"                           \
	"    CASE WHEN d.phone_number IS NULL THEN NULL ELSE 'dnc' END,"                                   \
	"    CASE WHEN d.phone_number IS NULL THEN NULL ELSE now() END"                                     \
	"  FROM (SELECT contact_id, added_at FROM audience_contacts"                                        \
	"    WHERE audience_id = $2 AND (added_at, contact_id) > ($3::timestamptz, $4::text)"               \
	"    ORDER BY added_at, contact_id LIMIT $5::int) src"                                              \
	/* Each contact by its key (OFFSET 0 keeps the planner from turning a  \
	 * chunk into a scan of every contact of the database). */            \
	"  CROSS JOIN LATERAL (SELECT id, name, phone_number, organization_id FROM contacts"               \
	"    WHERE contacts.id = src.contact_id OFFSET 0) c"                                                \
	"  LEFT JOIN LATERAL (SELECT phone_number FROM dnc"                                                 \
	"    WHERE (SELECT EXISTS (SELECT 1 FROM dnc WHERE dnc.organization_id ="                           \
	"      (SELECT organization_id FROM campaigns WHERE id = $1)))"                                      \
	"    AND dnc.organization_id = c.organization_id AND dnc.phone_number = c.phone_number OFFSET 0) d"  \
	"  ON true"                                                                                         \
	"  WHERE src.added_at <= $6::timestamptz ORDER BY src.added_at, src.contact_id"                     \
	ON_CONFLICT " RETURNING status),"                                                                   \
	" last AS (SELECT added_at, contact_id FROM audience_contacts"                                      \
	"  WHERE audience_id = $2 AND (added_at, contact_id) > ($3::timestamptz, $4::text)"                 \
	"  ORDER BY added_at, contact_id OFFSET $5::int - 1 LIMIT 1),"                                      \
	" n AS (SELECT count(*) AS made, count(*) FILTER (WHERE status = 'PENDING') AS due FROM ins)"       \
	" UPDATE campaigns SET total = total + n.made, pending = pending + n.due,"                          \
	"  skipped = skipped + (n.made - n.due),"                                                           \
	"  snapshot_after_at = coalesce((SELECT added_at FROM last), snapshot_after_at),"                   \
	"  snapshot_after_id = coalesce((SELECT contact_id FROM last), snapshot_after_id),"                 \
	"  snapshot_done = NOT EXISTS (SELECT 1 FROM last)"                                                 \
	"  OR coalesce((SELECT added_at FROM last) > $6::timestamptz, false)"                               \
	" FROM n WHERE id = $1 RETURNING campaigns.total, campaigns.snapshot_done"
static const char SQL_CHUNK[] = CHUNK_SQL("");
static const char SQL_CHUNK_AGAIN[] = CHUNK_SQL(" ON CONFLICT (campaign_id, contact_id) DO NOTHING");
static const char SQL_SNAPSHOT_NONE[] = "UPDATE campaigns SET snapshot_done = true WHERE id = $1";

/* Copies one chunk of one campaign's audience: 1 when it did, 0 when there
 * was nothing to do (or this replica does not lead), -EIO. */
static int snapshot_chunk(struct sched_ctx *s, PGconn *db)
{
	PGresult *r = NULL, *ins = NULL;
	int rc = -EIO;

	r = dl_db_exec(db, SQL_TO_SNAPSHOT, 0, NULL, NULL);
	if (r == NULL)
		return -EIO;
	if (PQntuples(r) == 0) {
		PQclear(r);
		return 0;
	}
	/* The lease is not locked here (a chunk would hold up its renewal):
	 * a chunk copied by a replica that has just lost the lease is
	 * harmless, as copying is idempotent (ON CONFLICT DO NOTHING, counts
	 * from the rows actually inserted, the cursor only moves forward). */
	if (!sched_lease_held(s)) {
		PQclear(r);
		return 0;
	}
	if (dl_db_cmd(db, "BEGIN") < 0)
		goto out;
	{
		const char *id = PQgetvalue(r, 0, 0);
		char chunk[16];
		const char *p[6] = {id, PQgetvalue(r, 0, 1), PQgetvalue(r, 0, 4), PQgetvalue(r, 0, 5), chunk,
				    PQgetvalue(r, 0, 6)};
		int64_t t0 = dl_mono_ms();
		int n = s->cfg->scheduler_snapshot_chunk;

		if (atol(PQgetvalue(r, 0, 3)) == 0 && n > FIRST_CHUNK_MAX)
			n = FIRST_CHUNK_MAX;
		snprintf(chunk, sizeof(chunk), "%d", n);
		/* A campaign cancelled before it ran has nothing to call. */
		if (!strcmp(PQgetvalue(r, 0, 2), "CANCELLED")) {
			ins = dl_db_exec(db, SQL_SNAPSHOT_NONE, 1, p, NULL);
		} else {
			char state[6];

			ins = dl_db_exec(db, SQL_CHUNK, 6, p, state);
			if (ins == NULL && !strcmp(state, "23505")) {
				dl_log_kv(DL_WARN, "audience chunk has calls already: copying it again without them",
					  "campaign_id", id, NULL);
				if (dl_db_cmd(db, "ROLLBACK") < 0 || dl_db_cmd(db, "BEGIN") < 0)
					goto out;
				ins = dl_db_exec(db, SQL_CHUNK_AGAIN, 6, p, NULL);
			}
		}
		if (ins == NULL || dl_db_cmd(db, "COMMIT") < 0)
			goto out;
		if (PQntuples(ins) == 1 && PQgetvalue(ins, 0, 1)[0] == 't') {
			char ms[24];

			snprintf(ms, sizeof(ms), "%lld", (long long)(dl_mono_ms() - t0));
			dl_log_kv(DL_INFO, "audience snapshotted", "campaign_id", id, "calls", PQgetvalue(ins, 0, 0),
				  "last_chunk_ms", ms, NULL);
		}
	}
	rc = 1;
out:
	PQclear(r);
	PQclear(ins);
	if (PQtransactionStatus(db) != PQTRANS_IDLE)
		DL_IGNORE(dl_db_cmd(db, "ROLLBACK"));
	return rc;
}

void *sched_snapshot_thread(void *arg)
{
	struct sched_ctx *s = arg;
	volatile int *stop = &s->svc->stop;
	PGconn *db = NULL;

	while (!*stop) {
		int r = 0;

		if (db == NULL || PQstatus(db) != CONNECTION_OK) {
			PQfinish(db);
			db = NULL;
			/* Its role runs without JIT (migration 0013): a chunk's plan
			 * costs enough to be compiled every time, which took longer
			 * than it saved. */
			if (sched_db_connect(s, &db) < 0) {
				dl_sleep_ms(1000, stop);
				continue;
			}
		}
		if (sched_lease_held(s))
			r = snapshot_chunk(s, db);
		if (r < 0)
			dl_sleep_ms(500, stop);
		else if (r == 0)
			/* Nothing to copy: look again after a tick, or at once on
			 * a command. */
			for (int waited = 0; waited < s->cfg->scheduler_tick_ms && !*stop &&
					     !__atomic_exchange_n(&s->snapshot_wake, 0, __ATOMIC_ACQ_REL);
			     waited += 5)
				dl_sleep_ms(5, NULL);
	}
	PQfinish(db);
	return NULL;
}
