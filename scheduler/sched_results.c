/* Results of dial, reconcile and hang-up jobs, and the carrier's call-status
 * events, applied as conditional transitions: a duplicate or late message
 * changes nothing and a final state is never left. One consumer takes the
 * messages at hand (up to SCHED_BATCH_MAX) and splits them by attempt over
 * scheduler.results_consumers lanes, each a thread with its own connection
 * that applies its share in one transaction; the batch is acknowledged
 * after every lane committed. The counters of the campaigns and the minutes
 * of the organizations a lane's share touches are added up and written
 * once each, in id order, just before its commit. A share that fails on the
 * database is applied again one message per transaction, so one bad message
 * cannot hold the others back. Any replica applies results; only the leader
 * dispatches. */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
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
	"SELECT status, last_sequence, answered_at IS NOT NULL, hangup_sent, hung_up, call_sid IS NOT NULL"
	" FROM call_attempts WHERE id = $1 FOR UPDATE";
static const char SQL_HUNG_UP[] = "UPDATE call_attempts SET hung_up = true WHERE id = $1 AND status <> 'ENDED'";
/* The sid is the attempt's: its call takes it when the attempt ends (a
 * live call's is read from its attempt), which spares the call's row a
 * write, and its indexes an entry each, for every call placed. */
static const char SQL_ACCEPT[] =
	"UPDATE call_attempts SET status = 'ACCEPTED', call_sid = $2 WHERE id = $1 AND status IN ('DIALING', 'UNKNOWN')";
static const char SQL_AMBIGUOUS[] =
	"UPDATE call_attempts SET status = 'UNKNOWN', reconcile_at = now() WHERE id = $1 AND status = 'DIALING'";
/* A carrier status recorded on its attempt ($1: attempt, $2: sequence, $3:
 * sid, $4: status), where the attempt matches COND. */
#define SQL_EVENT_WHERE(cond)                                                                                   \
	"UPDATE call_attempts SET last_sequence = greatest(last_sequence, $2::int),"                              \
	"  call_sid = coalesce(call_sid, $3),"                                                                    \
	"  status = CASE WHEN status IN ('DIALING', 'UNKNOWN') THEN 'ACCEPTED' ELSE status END,"                  \
	"  answered_at = CASE WHEN $4 = 'in-progress' THEN coalesce(answered_at, now()) ELSE answered_at END"     \
	"  WHERE id = $1" cond
/* The caller has checked the attempt under its lock. */
static const char SQL_EVENT[] = SQL_EVENT_WHERE("");
/* A call still going (queued, initiated, ringing, in progress): one
 * conditional write, and none when it would change nothing but the
 * sequence (a final status always comes last, so an older one cannot
 * follow it unnoticed). */
static const char SQL_PROGRESS[] = SQL_EVENT_WHERE(
	" AND status <> 'ENDED' AND ($2::int < 0 OR last_sequence < $2::int)"
	" AND (status IN ('DIALING', 'UNKNOWN') OR call_sid IS NULL OR ($4 = 'in-progress' AND answered_at IS NULL))");
static const char SQL_END[] = "SELECT result, campaign_id, organization_id, left_status, minutes"
			      " FROM dialer_end_call($1, $2, $3::int, $4::boolean, $5::int, $6::int)";
static const char SQL_COUNT[] = "SELECT dialer_count_calls($1, $2, $3, $4, $5, $6)";
static const char SQL_CHARGE[] = "SELECT dialer_charge_minutes($1, $2)";
/* A dial the carrier never saw: its call back to PENDING (migration 0018). */
static const char SQL_RELEASE[] = "SELECT campaign_id, left_status FROM dialer_release_call($1)";

/* What a batch changes in the rows its results share: per campaign, the
 * calls that left QUEUED and IN_PROGRESS and those now PENDING, COMPLETED
 * and FAILED; per organization, the minutes to charge. */
enum { LEFT_QUEUED, LEFT_IN_PROGRESS, TO_PENDING, TO_COMPLETED, TO_FAILED, TALLY_COUNTS };
struct tally_row {
	char id[SCHED_MSG_STR];
	long long v[TALLY_COUNTS];
};
struct tally {
	int n_camp, n_org;
	struct tally_row camp[SCHED_ITEMS_MAX]; /* a message ends one attempt at most */
	struct tally_row org[SCHED_ITEMS_MAX];  /* v[0]: minutes */
	int n_ended;
	const char *ended[SCHED_ITEMS_MAX];     /* outcomes (static strings), counted after the commit */
};

/* One delivery of a batch and what became of it. */
struct delivery {
	struct dl_amqp_msg msg;
	int r; /* 0 applied or ignored, -EINVAL never applicable, -EIO to retry */
};

/* One message of a batch: a delivery holds one, a call.statuses many. */
struct batch_item {
	struct sched_message m;
	bool skip; /* said in full by a later status of its attempt in the batch */
	int r;     /* as a delivery's */
	int d;     /* its delivery in the batch */
};

static struct tally_row *tally_row(struct tally_row *rows, int *n, const char *id)
{
	for (int i = 0; i < *n; i++)
		if (!strcmp(rows[i].id, id))
			return &rows[i];
	if (*n == SCHED_ITEMS_MAX || strlen(id) >= sizeof(rows[0].id))
		return NULL;
	memset(&rows[*n], 0, sizeof(rows[0]));
	strcpy(rows[*n].id, id);
	return &rows[(*n)++];
}

static int by_id(const void *a, const void *b)
{
	return strcmp(((const struct tally_row *)a)->id, ((const struct tally_row *)b)->id);
}

/* Runs sql, or queues it when piped (its result read later); 0 or -EIO. */
static int run(PGconn *db, bool piped, const char *sql, int n, const char *const *p)
{
	PGresult *r;

	if (piped)
		return dl_db_pipe_send(db, sql, n, p);
	r = dl_db_exec_prepared(db, sql, n, p, NULL);
	if (r == NULL)
		return -EIO;
	PQclear(r);
	return 0;
}

/* Writes the batch's counters and minutes, each row once, in id order (so
 * that two batches never wait on each other's rows crosswise), or queues
 * them when piped (t->n_camp + t->n_org statements); 0 or -EIO. */
static int tally_flush(PGconn *db, struct tally *t, bool piped)
{
	qsort(t->camp, (size_t)t->n_camp, sizeof(t->camp[0]), by_id);
	qsort(t->org, (size_t)t->n_org, sizeof(t->org[0]), by_id);
	for (int i = 0; i < t->n_camp; i++) {
		char v[TALLY_COUNTS][24];
		const char *p[1 + TALLY_COUNTS] = {t->camp[i].id, v[0], v[1], v[2], v[3], v[4]};

		for (int k = 0; k < TALLY_COUNTS; k++)
			snprintf(v[k], sizeof(v[k]), "%lld", t->camp[i].v[k]);
		if (run(db, piped, SQL_COUNT, 1 + TALLY_COUNTS, p) < 0)
			return -EIO;
	}
	for (int i = 0; i < t->n_org; i++) {
		char minutes[24];
		const char *p[2] = {t->org[i].id, minutes};

		snprintf(minutes, sizeof(minutes), "%lld", t->org[i].v[0]);
		if (run(db, piped, SQL_CHARGE, 2, p) < 0)
			return -EIO;
	}
	return 0;
}

/* After the commit: the calls ended count in the metrics. */
static void tally_done(struct tally *t)
{
	for (int i = 0; i < t->n_ended; i++) {
		char labels[64];

		snprintf(labels, sizeof(labels), "outcome=\"%s\"", t->ended[i]);
		dl_metrics_add("dialer_calls_total", labels, 1);
	}
	t->n_camp = t->n_org = t->n_ended = 0;
}

/* The parameters of SQL_END. */
struct end_args {
	char dur[24], minute[16], seq[24];
	const char *p[6];
};

static void end_args(struct sched_ctx *s, struct end_args *a, const char *attempt, const char *outcome,
		     long duration, long seq)
{
	snprintf(a->dur, sizeof(a->dur), "%ld", duration);
	snprintf(a->minute, sizeof(a->minute), "%d", s->cfg->clock_minute_ms);
	snprintf(a->seq, sizeof(a->seq), "%ld", seq);
	a->p[0] = attempt;
	a->p[1] = outcome;
	a->p[2] = a->dur;
	a->p[3] = sched_outcome_retryable(outcome) ? "true" : "false";
	a->p[4] = a->minute;
	a->p[5] = a->seq;
}

/* Counts in t a call of campaign that left left_status ("QUEUED" or
 * "IN_PROGRESS") for to (TO_*); its row, or NULL when the id does not fit. */
static struct tally_row *tally_call(struct tally *t, const char *campaign, const char *left_status, int to)
{
	struct tally_row *c = tally_row(t->camp, &t->n_camp, campaign);

	if (c != NULL) {
		c->v[!strcmp(left_status, "QUEUED") ? LEFT_QUEUED : LEFT_IN_PROGRESS]++;
		c->v[to]++;
	}
	return c;
}

/* What SQL_END did (r, which it clears) added to t; 0 or -EIO. */
static int end_tally(struct tally *t, PGresult *r, const char *attempt, const char *outcome)
{
	const char *result, *left;
	struct tally_row *c, *o = NULL;
	long long minutes;

	result = PQgetvalue(r, 0, 0);
	left = PQgetvalue(r, 0, 3);
	minutes = atoll(PQgetvalue(r, 0, 4));
	if (PQgetisnull(r, 0, 3)) {
		PQclear(r);
		return 0; /* ended already, or its call had moved on */
	}
	c = tally_call(t, PQgetvalue(r, 0, 1), left,
		       !strcmp(result, "retry") ? TO_PENDING : !strcmp(result, "COMPLETED") ? TO_COMPLETED : TO_FAILED);
	if (minutes > 0)
		o = tally_row(t->org, &t->n_org, PQgetvalue(r, 0, 2));
	if (c == NULL || (minutes > 0 && o == NULL)) {
		PQclear(r);
		dl_log_kv(DL_ERROR, "result not applied: campaign or organization id too long", "attempt_id", attempt,
			  NULL);
		return -EIO;
	}
	if (o != NULL)
		o->v[0] += minutes;
	if (t->n_ended < SCHED_ITEMS_MAX)
		t->ended[t->n_ended++] = outcome;
	PQclear(r);
	return 0;
}

/* Releases attempt (UNKNOWN, and the carrier has no call of it): its call
 * goes back to PENDING, the counters' change added to t; 0 or -EIO. */
static int release_attempt(PGconn *db, struct tally *t, const char *attempt)
{
	PGresult *r = dl_db_exec_prepared(db, SQL_RELEASE, 1, &attempt, NULL);
	struct tally_row *c;

	if (r == NULL)
		return -EIO;
	if (PQgetisnull(r, 0, 1)) {
		PQclear(r);
		return 0; /* not UNKNOWN, or its call had moved on */
	}
	c = tally_call(t, PQgetvalue(r, 0, 0), PQgetvalue(r, 0, 1), TO_PENDING);
	PQclear(r);
	if (c == NULL) {
		dl_log_kv(DL_ERROR, "release not applied: campaign id too long", "attempt_id", attempt, NULL);
		return -EIO;
	}
	return 0;
}

/* Ends attempt with outcome, its counters and minutes added to t; 0 or -EIO. */
static int end_attempt(struct sched_ctx *s, PGconn *db, struct tally *t, const char *attempt, const char *outcome,
		       long duration, long seq)
{
	struct end_args a;
	PGresult *r;

	end_args(s, &a, attempt, outcome, duration, seq);
	r = dl_db_exec_prepared(db, SQL_END, 6, a.p, NULL);
	if (r == NULL)
		return -EIO;
	return end_tally(t, r, attempt, outcome);
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
/* What a status does to its attempt, given the attempt's row (SQL_ATTEMPT). */
struct status_plan {
	bool apply;          /* false: unknown attempt, final already, or older than what we saw */
	bool event;          /* record the status on the attempt (SQL_EVENT) */
	const char *outcome; /* end the attempt with it; NULL: not ended */
	char seq[24];        /* the sequence recorded */
	const char *p[4];    /* SQL_EVENT's parameters */
};

static void status_plan(const struct sched_message *m, enum hang_src src, const PGresult *cur,
			struct status_plan *pl)
{
	bool answered, hangup_sent, hung_up, known;

	pl->apply = PQntuples(cur) == 1 && strcmp(PQgetvalue(cur, 0, 0), "ENDED") != 0 &&
		    !(m->seq >= 0 && m->seq <= atol(PQgetvalue(cur, 0, 1)));
	if (!pl->apply)
		return;
	answered = PQgetvalue(cur, 0, 2)[0] == 't' || !strcmp(m->status, "in-progress");
	hangup_sent = PQgetvalue(cur, 0, 3)[0] == 't';
	hung_up = src == HANG_US || (src == HANG_EVENT && PQgetvalue(cur, 0, 4)[0] == 't');
	/* accepted with its sid: a final status that ends it needs no event */
	known = !strcmp(PQgetvalue(cur, 0, 0), "ACCEPTED") && PQgetvalue(cur, 0, 5)[0] == 't';
	snprintf(pl->seq, sizeof(pl->seq), "%ld", m->seq >= 0 ? m->seq : 0);
	pl->outcome = sched_outcome(m->status, m->has_answered_by ? m->answered_by : NULL, m->duration, answered,
				    hung_up);
	if (src == HANG_EVENT && hangup_sent && !hung_up &&
	    (!strcmp(m->status, "completed") || !strcmp(m->status, "canceled")))
		pl->outcome = NULL; /* the hang-up's result ends it */
	pl->event = pl->outcome == NULL || !known;
	pl->p[0] = m->attempt;
	pl->p[1] = pl->seq;
	pl->p[2] = m->sid;
	pl->p[3] = m->status;
}

/* A status that does not end a call (queued, initiated, ringing, in
 * progress) from a callback: SQL_PROGRESS needs no look at the attempt. */
static bool status_goes_on(const struct sched_message *m)
{
	return sched_outcome(m->status, NULL, 0, false, false) == NULL;
}

static int apply_status(struct sched_ctx *s, PGconn *db, struct tally *t, const struct sched_message *m,
			enum hang_src src)
{
	const char *attempt = m->attempt;
	struct status_plan pl;
	PGresult *cur;

	if (src == HANG_EVENT && status_goes_on(m)) {
		char seq_s[24];
		const char *p[4] = {attempt, seq_s, m->sid, m->status};

		snprintf(seq_s, sizeof(seq_s), "%ld", m->seq);
		return run(db, false, SQL_PROGRESS, 4, p);
	}
	cur = dl_db_exec_prepared(db, SQL_ATTEMPT, 1, &attempt, NULL);
	if (cur == NULL)
		return -EIO;
	status_plan(m, src, cur, &pl);
	PQclear(cur);
	if (!pl.apply)
		return 0;
	if (pl.event && run(db, false, SQL_EVENT, 4, pl.p) < 0)
		return -EIO;
	if (pl.outcome == NULL)
		return 0;
	return end_attempt(s, db, t, attempt, pl.outcome, m->duration, m->seq >= 0 ? m->seq : 0);
}

static int apply_msg(struct sched_ctx *s, PGconn *db, struct tally *t, const struct sched_message *m)
{
	const char *attempt = m->attempt;
	const char *p[2] = {attempt, m->sid};

	switch (m->kind) {
	case SCHED_MSG_IGNORE:
		return 0;
	case SCHED_MSG_ACCEPTED:
		return run(db, false, SQL_ACCEPT, 2, p);
	case SCHED_MSG_INVALID_NUMBER:
		return end_attempt(s, db, t, attempt, "invalid-number", 0, -1);
	case SCHED_MSG_AMBIGUOUS:
		return run(db, false, SQL_AMBIGUOUS, 1, &attempt);
	case SCHED_MSG_REFUSED:
		return end_attempt(s, db, t, attempt, "failed", 0, -1);
	case SCHED_MSG_STATUS:
		return apply_status(s, db, t, m, HANG_EVENT);
	case SCHED_MSG_RECONCILE: {
		PGresult *cur = dl_db_exec_prepared(db, SQL_ATTEMPT, 1, &attempt, NULL);
		bool unknown;

		if (cur == NULL)
			return -EIO;
		unknown = PQntuples(cur) == 1 && !strcmp(PQgetvalue(cur, 0, 0), "UNKNOWN");
		PQclear(cur);
		if (!unknown)
			return 0;
		if (!m->found)
			/* The carrier never saw it: the dial did not happen. */
			return release_attempt(db, t, attempt);
		if (!sched_sid_valid(m->sid) || !m->has_status)
			return -EINVAL;
		if (run(db, false, SQL_ACCEPT, 2, p) < 0)
			return -EIO;
		return apply_status(s, db, t, m, HANG_EVENT);
	}
	case SCHED_MSG_HANGUP:
		/* ended: the call was over before the hang-up (a lost or late
		 * final callback): its real outcome. hungUp: we ended it. Neither
		 * (the hang-up failed): the sweep sends it again. */
		if (!m->ended && !m->hung_up)
			return 0;
		if (!m->ended && run(db, false, SQL_HUNG_UP, 1, &attempt) < 0)
			return -EIO;
		if (!m->has_status)
			return 0; /* the final callback ends it */
		return apply_status(s, db, t, m, m->ended ? HANG_NOT_US : HANG_US);
	}
	return -EINVAL;
}

/* Applies the batch's messages in order in the open transaction, then its
 * tallies, and commits: 0 (each item's r set: 0 or -EINVAL), or -EIO with
 * the transaction rolled back and nothing applied. */
static int apply_txn(struct sched_ctx *s, PGconn *db, struct tally *t, struct batch_item **items, int n)
{
	int r = 0;

	t->n_camp = t->n_org = t->n_ended = 0;
	if (dl_db_cmd(db, "BEGIN") < 0)
		return -EIO;
	for (int i = 0; i < n && r == 0; i++) {
		int a = items[i]->skip ? 0 : apply_msg(s, db, t, &items[i]->m);

		if (a == -EIO)
			r = -EIO;
		else
			items[i]->r = a;
	}
	if (r == 0 && tally_flush(db, t, false) < 0)
		r = -EIO;
	if (r == 0 && dl_db_cmd(db, "COMMIT") < 0)
		r = -EIO;
	if (PQtransactionStatus(db) != PQTRANS_IDLE)
		DL_IGNORE(dl_db_cmd(db, "ROLLBACK"));
	if (r == 0)
		tally_done(t);
	return r;
}

/* The pipelined share: a lane's messages of one shape, the common one (a
 * dial accepted, the call's progress, its final status), applied in three
 * round trips instead of one or two a message. */
static const char *const piped_sql[] = {SQL_ACCEPT, SQL_PROGRESS, SQL_ATTEMPT, SQL_EVENT, SQL_END, SQL_COUNT,
					SQL_CHARGE};
static const int piped_nparams[] = {2, 4, 1, 4, 6, 1 + TALLY_COUNTS, 2};

/* The parameter count of one of piped_sql. */
static int piped_nparams_of(const char *sql)
{
	for (size_t i = 0; i < DL_ARRAY_LEN(piped_sql); i++)
		if (piped_sql[i] == sql)
			return piped_nparams[i];
	abort();
}

/* Whether the share (in attempt order) has that shape: dial results that
 * accepted a call, ignored ones, and carrier statuses, an attempt's status
 * that ends its call coming last among its messages (the same outcome as
 * applying them one by one, where nothing after an end changes it). */
static bool piped_shape(struct batch_item *const *items, int n)
{
	for (int i = 0; i < n; i++) {
		const struct sched_message *m = &items[i]->m;

		if (items[i]->skip || m->kind == SCHED_MSG_IGNORE || m->kind == SCHED_MSG_ACCEPTED)
			continue;
		if (m->kind != SCHED_MSG_STATUS)
			return false;
		if (status_goes_on(m))
			continue;
		for (int k = i + 1; k < n && !strcmp(items[k]->m.attempt, m->attempt); k++)
			if (!items[k]->skip && items[k]->m.kind != SCHED_MSG_IGNORE)
				return false;
	}
	return true;
}

/* Reads the results of a pipeline's k statements (cur[i] keeps those of
 * the statements marked in keep, NULL elsewhere), then its sync; 0, or -EIO
 * with every kept result cleared and the pipeline read to its sync, or
 * -EPIPE when the sync did not come where it should. */
static int piped_read(PGconn *db, int k, const char *const *sql, const bool *keep, PGresult **cur)
{
	for (int i = 0; i < k; i++) {
		PGresult *r = dl_db_pipe_result(db, sql[i]);

		if (r == NULL) {
			for (int j = 0; j < i; j++) {
				PQclear(cur[j]);
				cur[j] = NULL;
			}
			DL_IGNORE(dl_db_pipe_end(db, k - i - 1));
			return -EIO;
		}
		if (keep != NULL && keep[i])
			cur[i] = r;
		else
			PQclear(r);
	}
	if (dl_db_pipe_synced(db) < 0) {
		for (int j = 0; j < k; j++) {
			PQclear(cur[j]);
			cur[j] = NULL;
		}
		return -EPIPE;
	}
	return 0;
}

/* The share in one transaction of three pipelined round trips: (1) BEGIN,
 * each dial accepted, each progress and the row of each attempt a final
 * status ends (locked); (2) each final status recorded and its attempt
 * ended; (3) the tallies and COMMIT. 0 (each item's r set), -EAGAIN when the
 * share is not of that shape, -EIO with nothing applied, -EPIPE when the
 * connection is no longer usable. */
static int apply_piped(struct sched_ctx *s, PGconn *db, struct tally *t, struct batch_item **items, int n)
{
	/* per round trip at most: BEGIN and a statement per message; two a
	 * message; a tally row per message, two a message, and COMMIT */
	const char *sql[2 * SCHED_ITEMS_MAX + 1];
	const char *params[SCHED_ITEMS_MAX][4];
	char seq[SCHED_ITEMS_MAX][24];
	PGresult *cur[2 * SCHED_ITEMS_MAX + 1] = {NULL};
	bool keep[2 * SCHED_ITEMS_MAX + 1] = {false};
	struct status_plan *plan = NULL;
	struct end_args *ends = NULL;
	int k = 0, r = -EIO, at[SCHED_ITEMS_MAX];

	if (!piped_shape(items, n))
		return -EAGAIN;
	for (size_t i = 0; i < DL_ARRAY_LEN(piped_sql); i++)
		if (dl_db_prepare(db, piped_sql[i], piped_nparams[i]) < 0)
			return -EIO;
	plan = calloc((size_t)n, sizeof(*plan));
	ends = calloc((size_t)n, sizeof(*ends));
	if (plan == NULL || ends == NULL || dl_db_pipe_begin(db) < 0)
		goto out_free;
	t->n_camp = t->n_org = t->n_ended = 0;

	/* (1) */
	sql[k++] = "BEGIN";
	if (dl_db_pipe_send(db, "BEGIN", 0, NULL) < 0)
		goto out_pipe;
	for (int i = 0; i < n; i++) {
		const struct sched_message *m = &items[i]->m;

		items[i]->r = 0;
		at[i] = -1;
		if (items[i]->skip || m->kind == SCHED_MSG_IGNORE)
			continue;
		params[i][0] = m->attempt;
		params[i][1] = m->sid;
		if (m->kind == SCHED_MSG_ACCEPTED) {
			sql[k] = SQL_ACCEPT;
		} else if (status_goes_on(m)) {
			snprintf(seq[i], sizeof(seq[i]), "%ld", m->seq);
			params[i][1] = seq[i];
			params[i][2] = m->sid;
			params[i][3] = m->status;
			sql[k] = SQL_PROGRESS;
		} else {
			sql[k] = SQL_ATTEMPT;
			keep[k] = true;
			at[i] = k;
		}
		if (dl_db_pipe_send(db, sql[k], piped_nparams_of(sql[k]), params[i]) < 0)
			goto out_pipe;
		k++;
	}
	if (dl_db_pipe_sync(db) < 0 || piped_read(db, k, sql, keep, cur) < 0)
		goto out_pipe_read;

	/* (2) */
	k = 0;
	for (int i = 0; i < n; i++) {
		const struct sched_message *m = &items[i]->m;

		if (at[i] < 0)
			continue;
		status_plan(m, HANG_EVENT, cur[at[i]], &plan[i]);
		if (!plan[i].apply)
			continue;
		if (plan[i].event) {
			sql[k] = SQL_EVENT;
			if (dl_db_pipe_send(db, SQL_EVENT, piped_nparams_of(SQL_EVENT), plan[i].p) < 0)
				goto out_pipe;
			k++;
		}
		if (plan[i].outcome != NULL) {
			end_args(s, &ends[i], m->attempt, plan[i].outcome, m->duration, m->seq >= 0 ? m->seq : 0);
			sql[k] = SQL_END;
			if (dl_db_pipe_send(db, SQL_END, piped_nparams_of(SQL_END), ends[i].p) < 0)
				goto out_pipe;
			k++;
		}
	}
	for (int i = 0; i < 2 * SCHED_ITEMS_MAX + 1; i++) {
		PQclear(cur[i]);
		cur[i] = NULL;
		keep[i] = false;
	}
	/* keep every SQL_END's result, in the order they were sent */
	for (int i = 0; i < k; i++)
		keep[i] = sql[i] == SQL_END;
	if (k > 0 && (dl_db_pipe_sync(db) < 0 || piped_read(db, k, sql, keep, cur) < 0))
		goto out_pipe_read;
	for (int i = 0, e = 0; i < n; i++) {
		if (at[i] < 0 || !plan[i].apply || plan[i].outcome == NULL)
			continue;
		while (sql[e] != SQL_END)
			e++;
		if (end_tally(t, cur[e], items[i]->m.attempt, plan[i].outcome) < 0) {
			cur[e] = NULL;
			goto out_pipe_done;
		}
		cur[e++] = NULL;
	}

	/* (3) */
	k = t->n_camp + t->n_org + 1;
	if (tally_flush(db, t, true) < 0 || dl_db_pipe_send(db, "COMMIT", 0, NULL) < 0)
		goto out_pipe;
	for (int i = 0; i < k; i++) {
		sql[i] = i < t->n_camp ? SQL_COUNT : i < k - 1 ? SQL_CHARGE : "COMMIT";
		keep[i] = false;
	}
	if (dl_db_pipe_sync(db) < 0 || piped_read(db, k, sql, NULL, cur) < 0)
		goto out_pipe_read;
	r = 0;
	goto out_pipe_done;

out_pipe:
	/* a send failed: what was sent is read with its sync */
	DL_IGNORE(dl_db_pipe_sync(db));
	DL_IGNORE(dl_db_pipe_end(db, k));
	goto out_exit;
out_pipe_read:
out_pipe_done:
	if (PQpipelineStatus(db) != PQ_PIPELINE_OFF && !PQexitPipelineMode(db))
		r = -EPIPE;
out_exit:
	for (int i = 0; i < 2 * SCHED_ITEMS_MAX + 1; i++)
		PQclear(cur[i]);
	if (r != -EPIPE && PQpipelineStatus(db) != PQ_PIPELINE_OFF)
		r = -EPIPE;
	if (r == -EIO && PQtransactionStatus(db) != PQTRANS_IDLE)
		DL_IGNORE(dl_db_cmd(db, "ROLLBACK"));
	if (r == 0)
		tally_done(t);
out_free:
	free(plan);
	free(ends);
	return r;
}

static int by_attempt(const void *a, const void *b)
{
	const struct batch_item *x = *(struct batch_item *const *)a, *y = *(struct batch_item *const *)b;
	int c = strcmp(x->m.attempt, y->m.attempt);

	/* items of one batch array: their addresses are their order of arrival */
	return c != 0 ? c : (x > y) - (x < y);
}

/* A lane applies the messages of the attempts that hash to it, on its own
 * connection: the lanes of a batch never wait on each other's attempts. */
struct lane {
	struct lanes *all;
	pthread_t thread;
	PGconn *db;
	struct tally t;
	struct batch_item *items[SCHED_ITEMS_MAX];
	int n;
};
struct lanes {
	struct sched_ctx *s;
	pthread_mutex_t mu;
	pthread_cond_t work, done;
	uint64_t round; /* bumped for each batch handed out */
	int busy;       /* lanes still applying the current batch */
	bool stop;
	int k;
	struct lane lane[SCHED_RESULTS_CONSUMERS_MAX];
	struct batch_item *items; /* the batch's messages (SCHED_ITEMS_MAX) */
	int n_items;
	struct sched_message parsed[SCHED_STATUSES_MAX]; /* a delivery's */
};

/* The lane's messages in one transaction, in attempt order (another
 * replica's consumer locks the same attempts in the same order, and the
 * messages of one attempt stay in their order of arrival); if it fails, one
 * message a transaction. */
/* The lane's connection, opened afresh when it is not there, went bad, or
 * (fresh) when asked; false (the share to retry) when there is none. */
static bool lane_connect(struct lane *l, bool fresh)
{
	if (fresh || l->db == NULL || PQstatus(l->db) != CONNECTION_OK) {
		PQfinish(l->db);
		l->db = NULL;
		if (sched_db_connect(l->all->s, &l->db) < 0) {
			for (int i = 0; i < l->n; i++)
				l->items[i]->r = -EIO;
			return false;
		}
	}
	return true;
}

static void lane_apply(struct lane *l)
{
	struct sched_ctx *s = l->all->s;

	if (l->n == 0 || !lane_connect(l, false))
		return;
	qsort(l->items, (size_t)l->n, sizeof(l->items[0]), by_attempt);
	{
		const struct sched_message *m[SCHED_ITEMS_MAX];
		bool skip[SCHED_ITEMS_MAX];

		for (int i = 0; i < l->n; i++)
			m[i] = &l->items[i]->m;
		sched_subsumed(m, l->n, skip);
		for (int i = 0; i < l->n; i++)
			l->items[i]->skip = skip[i];
	}
	switch (apply_piped(s, l->db, &l->t, l->items, l->n)) {
	case 0:
		dl_metrics_add("dialer_scheduler_results_shares_total", "path=\"pipelined\"", 1);
		return;
	case -EAGAIN:
		if (apply_txn(s, l->db, &l->t, l->items, l->n) == 0) {
			dl_metrics_add("dialer_scheduler_results_shares_total", "path=\"one_transaction\"", 1);
			return;
		}
		break;
	case -EPIPE:
		if (!lane_connect(l, true))
			return;
		break;
	default:
		break;
	}
	dl_metrics_add("dialer_scheduler_results_shares_total", "path=\"one_by_one\"", 1);
	for (int i = 0; i < l->n; i++)
		if (apply_txn(s, l->db, &l->t, &l->items[i], 1) < 0)
			l->items[i]->r = -EIO;
}

static void *lane_thread(void *arg)
{
	struct lane *l = arg;
	struct lanes *all = l->all;
	uint64_t seen = 0;

	pthread_mutex_lock(&all->mu);
	for (;;) {
		while (!all->stop && all->round == seen)
			pthread_cond_wait(&all->work, &all->mu);
		if (all->stop)
			break;
		seen = all->round;
		pthread_mutex_unlock(&all->mu);
		lane_apply(l);
		pthread_mutex_lock(&all->mu);
		if (--all->busy == 0)
			pthread_cond_signal(&all->done);
	}
	pthread_mutex_unlock(&all->mu);
	PQfinish(l->db);
	return NULL;
}

static uint32_t attempt_hash(const char *id)
{
	uint32_t h = 2166136261u;

	for (; *id; id++)
		h = (h ^ (uint8_t)*id) * 16777619u;
	return h;
}

/* A consumer's batch: take() is given each delivery as it comes (and says
 * whether the batch has room for another), apply() all of them. */
struct consumer {
	bool (*take)(void *ctx, struct delivery *d, int i);
	void (*apply)(struct sched_ctx *s, void *ctx, struct delivery *d, int n);
};

/* Results: a delivery's messages parsed into the batch's items. */
static bool results_take(void *ctx, struct delivery *d, int i)
{
	struct lanes *all = ctx;
	/* room for SCHED_STATUSES_MAX: take() said so before */
	int n = sched_messages_parse(d[i].msg.env.message.body.bytes, d[i].msg.env.message.body.len, all->parsed,
				     SCHED_STATUSES_MAX);

	d[i].r = n < 0 ? -EINVAL : 0;
	for (int k = 0; k < n; k++) {
		struct batch_item *it = &all->items[all->n_items++];

		it->m = all->parsed[k];
		it->r = 0;
		it->d = i;
	}
	return all->n_items <= SCHED_ITEMS_MAX - SCHED_STATUSES_MAX;
}

/* Results: each message to the lane of its attempt; returns when all lanes
 * are done with the batch, each delivery's r the worst of its messages'. */
static void results_apply(struct sched_ctx *s, void *ctx, struct delivery *d, int n)
{
	struct lanes *all = ctx;

	(void)s;
	(void)n;
	for (int i = 0; i < all->k; i++)
		all->lane[i].n = 0;
	for (int i = 0; i < all->n_items; i++) {
		struct lane *l = &all->lane[attempt_hash(all->items[i].m.attempt) % (uint32_t)all->k];

		l->items[l->n++] = &all->items[i];
	}
	sched_metrics_batch("batch", all->n_items);
	for (int i = 0; i < all->k; i++)
		if (all->lane[i].n > 0)
			sched_metrics_batch("share", all->lane[i].n);
	pthread_mutex_lock(&all->mu);
	all->busy = all->k;
	all->round++;
	pthread_cond_broadcast(&all->work);
	while (all->busy > 0)
		pthread_cond_wait(&all->done, &all->mu);
	pthread_mutex_unlock(&all->mu);
	for (int i = 0; i < all->n_items; i++) {
		struct delivery *of = &d[all->items[i].d];

		if (all->items[i].r == -EIO || (all->items[i].r == -EINVAL && of->r == 0))
			of->r = all->items[i].r;
	}
	all->n_items = 0;
}

/* Shared loop of the two consumers: the deliveries at hand (up to
 * SCHED_BATCH_MAX, fewer when the consumer's batch is full) to it, each
 * acked or given back after. */
static void consume(struct sched_ctx *s, const char *queue, const struct consumer *c, void *ctx)
{
	volatile int *stop = &s->svc->stop;
	struct delivery *d = calloc(SCHED_BATCH_MAX, sizeof(*d));
	struct dl_amqp mq;
	bool consuming = false;

	if (d == NULL) {
		dl_log_kv(DL_ERROR, "consumer not started: out of memory", "queue", queue, NULL);
		s->svc->stop = 1;
		return;
	}
	dl_amqp_init(&mq, s->cfg);
	while (!*stop) {
		bool all_ok = true, room;
		int n;

		if (!mq.open) {
			consuming = false;
			if (dl_amqp_ensure(&mq, stop) < 0)
				break;
		}
		if (!consuming) {
			if (dl_amqp_consume(&mq, queue, 2 * SCHED_BATCH_MAX) < 0)
				continue;
			consuming = true;
		}
		if (dl_amqp_next(&mq, &d[0].msg, 500) <= 0)
			continue;
		room = c->take(ctx, d, 0);
		for (n = 1; room && n < SCHED_BATCH_MAX && dl_amqp_next(&mq, &d[n].msg, 0) == 1; n++)
			room = c->take(ctx, d, n);
		c->apply(s, ctx, d, n);
		for (int i = 0; i < n; i++) {
			sched_metrics_consumed(&d[i].msg.env.message.properties, d[i].r);
			if (d[i].r == -EINVAL) {
				char head[121];
				size_t len = d[i].msg.env.message.body.len;

				/* what it began with, for whoever looks into it */
				if (len >= sizeof(head))
					len = sizeof(head) - 1;
				memcpy(head, d[i].msg.env.message.body.bytes, len);
				head[len] = '\0';
				dl_log_kv(DL_ERROR, "message dropped: not a valid result", "queue", queue, "body", head, NULL);
				dl_metrics_add("dialer_scheduler_results_invalid_total", "", 1);
			}
			all_ok = all_ok && d[i].r != -EIO;
		}
		if (all_ok) {
			DL_IGNORE(dl_amqp_ack_through(&mq, d[n - 1].msg.env.delivery_tag));
		} else {
			/* Database trouble: give those back and slow down. */
			for (int i = 0; i < n; i++) {
				uint64_t tag = d[i].msg.env.delivery_tag;

				DL_IGNORE(d[i].r == -EIO ? dl_amqp_nack(&mq, tag, true) : dl_amqp_ack(&mq, tag));
			}
			dl_sleep_ms(500, stop);
		}
		for (int i = 0; i < n; i++)
			dl_amqp_msg_done(&mq, &d[i].msg);
	}
	dl_amqp_close(&mq);
	free(d);
}

void *sched_results_thread(void *arg)
{
	struct sched_ctx *s = arg;
	struct lanes *all = calloc(1, sizeof(*all));
	int started = 0;

	if (all != NULL && (all->items = calloc(SCHED_ITEMS_MAX, sizeof(all->items[0]))) == NULL) {
		free(all);
		all = NULL;
	}
	if (all == NULL) {
		dl_log_kv(DL_ERROR, "results not applied: out of memory", NULL);
		s->svc->stop = 1;
		return NULL;
	}
	all->s = s;
	all->k = s->cfg->scheduler_results_consumers;
	pthread_mutex_init(&all->mu, NULL);
	pthread_cond_init(&all->work, NULL);
	pthread_cond_init(&all->done, NULL);
	for (; started < all->k; started++) {
		all->lane[started].all = all;
		if (pthread_create(&all->lane[started].thread, NULL, lane_thread, &all->lane[started]) != 0)
			break;
	}
	if (started == all->k) {
		static const struct consumer results = {results_take, results_apply};

		consume(s, s->cfg->amqp_results_queue, &results, all);
	}
	else {
		dl_log_kv(DL_ERROR, "results not applied: could not start their threads", NULL);
		s->svc->stop = 1;
	}
	pthread_mutex_lock(&all->mu);
	all->stop = true;
	pthread_cond_broadcast(&all->work);
	pthread_mutex_unlock(&all->mu);
	for (int i = 0; i < started; i++)
		pthread_join(all->lane[i].thread, NULL);
	pthread_mutex_destroy(&all->mu);
	pthread_cond_destroy(&all->work);
	pthread_cond_destroy(&all->done);
	free(all->items);
	free(all);
	return NULL;
}

static bool command_take(void *ctx, struct delivery *d, int i)
{
	(void)ctx;
	d[i].r = 0;
	return true;
}

static void wake(struct sched_ctx *s, void *ctx, struct delivery *d, int n)
{
	(void)ctx;
	(void)d;
	(void)n;
	s->wake = 1;
	__atomic_store_n(&s->snapshot_wake, 1, __ATOMIC_RELEASE);
}

void *sched_commands_thread(void *arg)
{
	struct sched_ctx *s = arg;

	static const struct consumer commands = {command_take, wake};

	consume(s, s->cfg->amqp_commands_queue, &commands, NULL);
	return NULL;
}
