/* Leadership: one lease row with a term. The leader renews it every third
 * of its length; a leader that cannot renew stops acting before the lease
 * can expire, and every dispatching transaction re-checks the term. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dl_db.h"
#include "dl_log.h"
#include "dl_metrics.h"
#include "scheduler.h"

static const char SQL_LEASE_ACQUIRE[] =
	"INSERT INTO scheduler_lease (id, holder, term, expires_at)"
	" VALUES (1, $1, 1, now() + make_interval(secs => $2::int))"
	" ON CONFLICT (id) DO UPDATE SET holder = $1, term = scheduler_lease.term + 1,"
	" expires_at = now() + make_interval(secs => $2::int)"
	" WHERE scheduler_lease.expires_at < now() OR scheduler_lease.holder = $1"
	" RETURNING term";
static const char SQL_LEASE_RENEW[] =
	"UPDATE scheduler_lease SET expires_at = now() + make_interval(secs => $3::int)"
	" WHERE id = 1 AND holder = $1 AND term = $2 RETURNING term";
static const char SQL_LEASE_CHECK[] =
	"SELECT 1 FROM scheduler_lease WHERE id = 1 AND holder = $1 AND term = $2 AND expires_at > now()"
	" FOR SHARE";
static const char SQL_LEASE_RELEASE[] =
	"UPDATE scheduler_lease SET expires_at = now() - interval '1 second' WHERE id = 1 AND holder = $1"
	" AND term = $2";

bool sched_lease_tick(struct sched_ctx *s, PGconn *db)
{
	char secs[16], term[24];
	int64_t started = dl_mono_ms();
	PGresult *r;

	snprintf(secs, sizeof(secs), "%d", s->cfg->scheduler_lease_s);
	if (s->term > 0) {
		const char *p[3] = {s->holder, term, secs};

		/* Renew only every third of the lease. */
		if (s->lease_until - started > s->cfg->scheduler_lease_s * 1000 * 2 / 3)
			return true;
		snprintf(term, sizeof(term), "%lld", (long long)s->term);
		r = dl_db_exec(db, SQL_LEASE_RENEW, 3, p, NULL);
		if (r != NULL && PQntuples(r) == 1) {
			/* Counted from before the call: the database's clock started earlier still. */
			__atomic_store_n(&s->lease_until, started + s->cfg->scheduler_lease_s * 1000 - 500, __ATOMIC_RELEASE);
			PQclear(r);
			return true;
		}
		PQclear(r);
		if (started < s->lease_until - 1000)
			return true; /* a failed renewal; retry on the next tick while time remains */
		dl_log_kv(DL_WARN, "lost the scheduler lease", "holder", s->holder, NULL);
		__atomic_store_n(&s->term, 0, __ATOMIC_RELEASE);
		s->leading = 0;
		return false;
	}
	{
		const char *p[2] = {s->holder, secs};

		r = dl_db_exec(db, SQL_LEASE_ACQUIRE, 2, p, NULL);
		if (r != NULL && PQntuples(r) == 1) {
			__atomic_store_n(&s->term, atoll(PQgetvalue(r, 0, 0)), __ATOMIC_RELEASE);
			__atomic_store_n(&s->lease_until, started + s->cfg->scheduler_lease_s * 1000 - 500, __ATOMIC_RELEASE);
			s->leading = 1;
			snprintf(term, sizeof(term), "%lld", (long long)s->term);
			dl_log_kv(DL_INFO, "leading the schedulers", "holder", s->holder, "term", term, NULL);
		}
		PQclear(r);
	}
	dl_metrics_set("dialer_scheduler_leader", "", s->term > 0 ? 1 : 0);
	return s->term > 0;
}

bool sched_lease_check(struct sched_ctx *s, PGconn *db)
{
	/* Also called by the snapshot thread: the main thread writes these. */
	int64_t held = __atomic_load_n(&s->term, __ATOMIC_ACQUIRE);
	char term[24];
	const char *p[2] = {s->holder, term};
	PGresult *r;
	bool ok;

	if (held == 0 || dl_mono_ms() >= __atomic_load_n(&s->lease_until, __ATOMIC_ACQUIRE))
		return false;
	snprintf(term, sizeof(term), "%lld", (long long)held);
	r = dl_db_exec(db, SQL_LEASE_CHECK, 2, p, NULL);
	ok = r != NULL && PQntuples(r) == 1;
	PQclear(r);
	return ok;
}

bool sched_lease_held(struct sched_ctx *s)
{
	return __atomic_load_n(&s->term, __ATOMIC_ACQUIRE) != 0 &&
	       dl_mono_ms() < __atomic_load_n(&s->lease_until, __ATOMIC_ACQUIRE);
}

void sched_lease_release(struct sched_ctx *s, PGconn *db)
{
	char term[24];
	const char *p[2] = {s->holder, term};
	PGresult *r;

	if (s->term == 0)
		return;
	snprintf(term, sizeof(term), "%lld", (long long)s->term);
	r = dl_db_exec(db, SQL_LEASE_RELEASE, 2, p, NULL);
	PQclear(r);
	__atomic_store_n(&s->term, 0, __ATOMIC_RELEASE);
	s->leading = 0;
}
