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
static const char SQL_ACCEPT[] =
	"WITH a AS (UPDATE call_attempts SET status = 'ACCEPTED', call_sid = $2"
	"  WHERE id = $1 AND status IN ('DIALING', 'UNKNOWN') RETURNING call_id)"
	" UPDATE calls SET call_sid = $2 FROM a WHERE calls.id = a.call_id";
static const char SQL_AMBIGUOUS[] =
	"UPDATE call_attempts SET status = 'UNKNOWN', reconcile_at = now() WHERE id = $1 AND status = 'DIALING'";
/* A carrier status recorded on its attempt ($1: attempt, $2: sequence, $3:
 * sid, $4: status) and the call's sid, where the attempt matches COND. */
#define SQL_EVENT_WHERE(cond)                                                                                   \
	"WITH a AS (UPDATE call_attempts SET last_sequence = greatest(last_sequence, $2::int),"                  \
	"  call_sid = coalesce(call_sid, $3),"                                                                    \
	"  status = CASE WHEN status IN ('DIALING', 'UNKNOWN') THEN 'ACCEPTED' ELSE status END,"                  \
	"  answered_at = CASE WHEN $4 = 'in-progress' THEN coalesce(answered_at, now()) ELSE answered_at END"     \
	"  WHERE id = $1" cond " RETURNING call_id)"                                                              \
	" UPDATE calls SET call_sid = $3 FROM a WHERE calls.id = a.call_id AND calls.call_sid IS DISTINCT FROM $3"
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
static const char SQL_RELEASE[] = "SELECT dialer_release_attempt($1)";

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
	struct tally_row camp[SCHED_BATCH_MAX]; /* a message ends one attempt at most */
	struct tally_row org[SCHED_BATCH_MAX];  /* v[0]: minutes */
	int n_ended;
	const char *ended[SCHED_BATCH_MAX];     /* outcomes (static strings), counted after the commit */
};

/* One delivery of a batch and what became of it. */
struct batch_item {
	struct dl_amqp_msg msg;
	struct sched_message m;
	bool skip; /* said in full by a later status of its attempt in the batch */
	int r;     /* 0 applied or ignored, -EINVAL never applicable, -EIO to retry */
};

static struct tally_row *tally_row(struct tally_row *rows, int *n, const char *id)
{
	for (int i = 0; i < *n; i++)
		if (!strcmp(rows[i].id, id))
			return &rows[i];
	if (*n == SCHED_BATCH_MAX || strlen(id) >= sizeof(rows[0].id))
		return NULL;
	memset(&rows[*n], 0, sizeof(rows[0]));
	strcpy(rows[*n].id, id);
	return &rows[(*n)++];
}

static int by_id(const void *a, const void *b)
{
	return strcmp(((const struct tally_row *)a)->id, ((const struct tally_row *)b)->id);
}

/* Writes the batch's counters and minutes, each row once, in id order (so
 * that two batches never wait on each other's rows crosswise); 0 or -EIO. */
static int tally_flush(PGconn *db, struct tally *t)
{
	qsort(t->camp, (size_t)t->n_camp, sizeof(t->camp[0]), by_id);
	qsort(t->org, (size_t)t->n_org, sizeof(t->org[0]), by_id);
	for (int i = 0; i < t->n_camp; i++) {
		char v[TALLY_COUNTS][24];
		const char *p[1 + TALLY_COUNTS] = {t->camp[i].id, v[0], v[1], v[2], v[3], v[4]};
		PGresult *r;

		for (int k = 0; k < TALLY_COUNTS; k++)
			snprintf(v[k], sizeof(v[k]), "%lld", t->camp[i].v[k]);
		r = dl_db_exec_prepared(db, SQL_COUNT, 1 + TALLY_COUNTS, p, NULL);
		if (r == NULL)
			return -EIO;
		PQclear(r);
	}
	for (int i = 0; i < t->n_org; i++) {
		char minutes[24];
		const char *p[2] = {t->org[i].id, minutes};
		PGresult *r;

		snprintf(minutes, sizeof(minutes), "%lld", t->org[i].v[0]);
		r = dl_db_exec_prepared(db, SQL_CHARGE, 2, p, NULL);
		if (r == NULL)
			return -EIO;
		PQclear(r);
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

/* Ends attempt with outcome, its counters and minutes added to t; 0 or -EIO. */
static int end_attempt(struct sched_ctx *s, PGconn *db, struct tally *t, const char *attempt, const char *outcome,
		       long duration, long seq)
{
	char dur[24], minute[16], seq_s[24];
	const char *p[6] = {attempt, outcome, dur, sched_outcome_retryable(outcome) ? "true" : "false", minute, seq_s};
	const char *result, *left;
	struct tally_row *c, *o = NULL;
	long long minutes;
	PGresult *r;

	snprintf(dur, sizeof(dur), "%ld", duration);
	snprintf(minute, sizeof(minute), "%d", s->cfg->clock_minute_ms);
	snprintf(seq_s, sizeof(seq_s), "%ld", seq);
	r = dl_db_exec_prepared(db, SQL_END, 6, p, NULL);
	if (r == NULL)
		return -EIO;
	result = PQgetvalue(r, 0, 0);
	left = PQgetvalue(r, 0, 3);
	minutes = atoll(PQgetvalue(r, 0, 4));
	if (PQgetisnull(r, 0, 3)) {
		PQclear(r);
		return 0; /* ended already, or its call had moved on */
	}
	c = tally_row(t->camp, &t->n_camp, PQgetvalue(r, 0, 1));
	if (minutes > 0)
		o = tally_row(t->org, &t->n_org, PQgetvalue(r, 0, 2));
	if (c == NULL || (minutes > 0 && o == NULL)) {
		PQclear(r);
		dl_log_kv(DL_ERROR, "result not applied: campaign or organization id too long", "attempt_id", attempt,
			  NULL);
		return -EIO;
	}
	c->v[!strcmp(left, "QUEUED") ? LEFT_QUEUED : LEFT_IN_PROGRESS]++;
	c->v[!strcmp(result, "retry") ? TO_PENDING : !strcmp(result, "COMPLETED") ? TO_COMPLETED : TO_FAILED]++;
	if (o != NULL)
		o->v[0] += minutes;
	if (t->n_ended < SCHED_BATCH_MAX)
		t->ended[t->n_ended++] = outcome;
	PQclear(r);
	return 0;
}

static int exec1(PGconn *db, const char *sql, int n, const char *const *p)
{
	PGresult *r = dl_db_exec_prepared(db, sql, n, p, NULL);

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
static int apply_status(struct sched_ctx *s, PGconn *db, struct tally *t, const struct sched_message *m,
			enum hang_src src)
{
	const char *attempt = m->attempt, *outcome;
	char seq_s[24];
	const char *p[4] = {attempt, seq_s, m->sid, m->status};
	PGresult *cur;
	bool answered, hangup_sent, hung_up, known;

	if (src == HANG_EVENT && sched_outcome(m->status, NULL, 0, false, false) == NULL) {
		snprintf(seq_s, sizeof(seq_s), "%ld", m->seq);
		return exec1(db, SQL_PROGRESS, 4, p);
	}
	cur = dl_db_exec_prepared(db, SQL_ATTEMPT, 1, &attempt, NULL);
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
	/* accepted with its sid: a final status that ends it needs no event */
	known = !strcmp(PQgetvalue(cur, 0, 0), "ACCEPTED") && PQgetvalue(cur, 0, 5)[0] == 't';
	PQclear(cur);
	snprintf(seq_s, sizeof(seq_s), "%ld", m->seq >= 0 ? m->seq : 0);
	outcome = sched_outcome(m->status, m->has_answered_by ? m->answered_by : NULL, m->duration, answered,
				hung_up);
	if (src == HANG_EVENT && hangup_sent && !hung_up &&
	    (!strcmp(m->status, "completed") || !strcmp(m->status, "canceled")))
		outcome = NULL; /* the hang-up's result ends it */
	if ((outcome == NULL || !known) && exec1(db, SQL_EVENT, 4, p) < 0)
		return -EIO;
	if (outcome == NULL)
		return 0;
	return end_attempt(s, db, t, attempt, outcome, m->duration, m->seq >= 0 ? m->seq : 0);
}

static int apply_msg(struct sched_ctx *s, PGconn *db, struct tally *t, const struct sched_message *m)
{
	const char *attempt = m->attempt;
	const char *p[2] = {attempt, m->sid};

	switch (m->kind) {
	case SCHED_MSG_IGNORE:
		return 0;
	case SCHED_MSG_ACCEPTED:
		return exec1(db, SQL_ACCEPT, 2, p);
	case SCHED_MSG_INVALID_NUMBER:
		return end_attempt(s, db, t, attempt, "invalid-number", 0, -1);
	case SCHED_MSG_AMBIGUOUS:
		return exec1(db, SQL_AMBIGUOUS, 1, &attempt);
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
			return exec1(db, SQL_RELEASE, 1, &attempt);
		if (!sched_sid_valid(m->sid) || !m->has_status)
			return -EINVAL;
		if (exec1(db, SQL_ACCEPT, 2, p) < 0)
			return -EIO;
		return apply_status(s, db, t, m, HANG_EVENT);
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
	if (r == 0 && tally_flush(db, t) < 0)
		r = -EIO;
	if (r == 0 && dl_db_cmd(db, "COMMIT") < 0)
		r = -EIO;
	if (PQtransactionStatus(db) != PQTRANS_IDLE)
		DL_IGNORE(dl_db_cmd(db, "ROLLBACK"));
	if (r == 0)
		tally_done(t);
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
	struct batch_item *items[SCHED_BATCH_MAX];
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
};

/* The lane's messages in one transaction, in attempt order (another
 * replica's consumer locks the same attempts in the same order, and the
 * messages of one attempt stay in their order of arrival); if it fails, one
 * message a transaction. */
static void lane_apply(struct lane *l)
{
	struct sched_ctx *s = l->all->s;

	if (l->n == 0)
		return;
	if (l->db == NULL || PQstatus(l->db) != CONNECTION_OK) {
		PQfinish(l->db);
		l->db = NULL;
		if (sched_db_connect(s, &l->db) < 0) {
			for (int i = 0; i < l->n; i++)
				l->items[i]->r = -EIO;
			return;
		}
	}
	qsort(l->items, (size_t)l->n, sizeof(l->items[0]), by_attempt);
	{
		const struct sched_message *m[SCHED_BATCH_MAX];
		bool skip[SCHED_BATCH_MAX];

		for (int i = 0; i < l->n; i++)
			m[i] = &l->items[i]->m;
		sched_subsumed(m, l->n, skip);
		for (int i = 0; i < l->n; i++)
			l->items[i]->skip = skip[i];
	}
	if (apply_txn(s, l->db, &l->t, l->items, l->n) == 0)
		return;
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

/* Results: each valid message to the lane of its attempt; returns when all
 * lanes are done with the batch. */
static void apply_results(struct sched_ctx *s, void *ctx, struct batch_item *items, int n)
{
	struct lanes *all = ctx;

	(void)s;
	for (int i = 0; i < all->k; i++)
		all->lane[i].n = 0;
	for (int i = 0; i < n; i++) {
		struct lane *l;

		items[i].r = sched_message_parse(items[i].msg.env.message.body.bytes,
						  items[i].msg.env.message.body.len, &items[i].m);
		if (items[i].r < 0)
			continue;
		l = &all->lane[attempt_hash(items[i].m.attempt) % (uint32_t)all->k];
		l->items[l->n++] = &items[i];
	}
	pthread_mutex_lock(&all->mu);
	all->busy = all->k;
	all->round++;
	pthread_cond_broadcast(&all->work);
	while (all->busy > 0)
		pthread_cond_wait(&all->done, &all->mu);
	pthread_mutex_unlock(&all->mu);
}

/* Shared loop of the two consumers: the deliveries at hand (up to
 * SCHED_BATCH_MAX) to handle(), each acked or given back after. */
static void consume(struct sched_ctx *s, const char *queue,
		    void (*handle)(struct sched_ctx *s, void *ctx, struct batch_item *items, int n), void *ctx)
{
	volatile int *stop = &s->svc->stop;
	struct batch_item *items = calloc(SCHED_BATCH_MAX, sizeof(*items));
	struct dl_amqp mq;
	bool consuming = false;

	if (items == NULL) {
		dl_log_kv(DL_ERROR, "consumer not started: out of memory", "queue", queue, NULL);
		s->svc->stop = 1;
		return;
	}
	dl_amqp_init(&mq, s->cfg);
	while (!*stop) {
		bool all_ok = true;
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
		if (dl_amqp_next(&mq, &items[0].msg, 500) <= 0)
			continue;
		for (n = 1; n < SCHED_BATCH_MAX && dl_amqp_next(&mq, &items[n].msg, 0) == 1; n++)
			;
		handle(s, ctx, items, n);
		for (int i = 0; i < n; i++) {
			sched_metrics_consumed(&items[i].msg.env.message.properties, items[i].r);
			if (items[i].r == -EINVAL) {
				dl_log_kv(DL_ERROR, "message dropped: not a valid result", "queue", queue, NULL);
				dl_metrics_add("dialer_scheduler_results_invalid_total", "", 1);
			}
			all_ok = all_ok && items[i].r != -EIO;
		}
		if (all_ok) {
			DL_IGNORE(dl_amqp_ack_through(&mq, items[n - 1].msg.env.delivery_tag));
		} else {
			/* Database trouble: give those back and slow down. */
			for (int i = 0; i < n; i++) {
				uint64_t tag = items[i].msg.env.delivery_tag;

				DL_IGNORE(items[i].r == -EIO ? dl_amqp_nack(&mq, tag, true) : dl_amqp_ack(&mq, tag));
			}
			dl_sleep_ms(500, stop);
		}
		for (int i = 0; i < n; i++)
			dl_amqp_msg_done(&mq, &items[i].msg);
	}
	dl_amqp_close(&mq);
	free(items);
}

void *sched_results_thread(void *arg)
{
	struct sched_ctx *s = arg;
	struct lanes *all = calloc(1, sizeof(*all));
	int started = 0;

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
	if (started == all->k)
		consume(s, s->cfg->amqp_results_queue, apply_results, all);
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
	free(all);
	return NULL;
}

static void wake(struct sched_ctx *s, void *ctx, struct batch_item *items, int n)
{
	(void)ctx;
	for (int i = 0; i < n; i++)
		items[i].r = 0;
	s->wake = 1;
	__atomic_store_n(&s->snapshot_wake, 1, __ATOMIC_RELEASE);
}

void *sched_commands_thread(void *arg)
{
	struct sched_ctx *s = arg;

	consume(s, s->cfg->amqp_commands_queue, wake, NULL);
	return NULL;
}
