/* The scheduler's derived metrics. Families are registered on first use of
 * any function here, so the scheduler needs no init call for them. */
#include "sched_metrics.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dl_db.h"
#include "dl_metrics.h"

#define M_IN_FLIGHT "dialer_scheduler_attempts_in_flight"
#define M_CAMPAIGNS "dialer_scheduler_campaigns_active"
#define M_PACE "dialer_scheduler_pace_ratio"
#define M_CONSUMED "dialer_scheduler_messages_consumed_total"
#define M_BATCH "dialer_scheduler_results_batch_size"

/* Gauges refresh this often at most: the query is cheap but not free. */
#define SCHED_METRICS_REFRESH_MS 5000
/* Campaigns tracked for pacing at once; more are not observed. */
#define PACE_SLOTS 512

/* Both counts read partial indexes only (call_attempts_live, campaigns_active). */
static const char SQL_LIVE[] =
	"SELECT 'a', status, count(*) FROM call_attempts"
	" WHERE status IN ('QUEUED', 'DIALING', 'ACCEPTED', 'UNKNOWN') GROUP BY status"
	" UNION ALL SELECT 'c', status, count(*) FROM campaigns"
	" WHERE status IN ('SCHEDULED', 'IN_PROGRESS') GROUP BY status";

static const char *const attempt_states[] = {"QUEUED", "DIALING", "ACCEPTED", "UNKNOWN"};
static const char *const campaign_states[] = {"SCHEDULED", "IN_PROGRESS"};
/* Dial starts over target: fine steps around 1, where pacing should sit. */
static const double pace_buckets[] = {0.25, 0.5, 0.75, 0.9, 0.95, 1, 1.05, 1.1, 1.25, 1.5, 2};
/* Results a batch or a lane's share holds: powers of two up to SCHED_ITEMS_MAX. */
static const double batch_buckets[] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024};
static const char *const consumed_types[] = {"dial.result",      "reconcile.result", "hangup.result",
					     "job.results",      "call.status",      "call.statuses",
					     "campaign.started", "campaign.paused",  "campaign.resumed",
					     "campaign.cancelled"};

struct pace_slot {
	char id[DL_ID_MAX];    /* "" when free */
	int64_t window_start;  /* monotonic ms */
	int64_t last_seen;     /* monotonic ms */
	long started;          /* dial starts in this window */
};

static pthread_once_t once = PTHREAD_ONCE_INIT;
static pthread_mutex_t pace_lock = PTHREAD_MUTEX_INITIALIZER;
static struct pace_slot pace[PACE_SLOTS];
static int64_t next_refresh;
static bool was_leading;

static void sm_register(void)
{
	dl_metrics_register(M_IN_FLIGHT, "gauge",
			    "Call attempts not yet ended, by status (queued, dialing, accepted, unknown); "
			    "0 on a follower.");
	dl_metrics_register(M_CAMPAIGNS, "gauge", "Campaigns scheduled or in progress, by status; 0 on a follower.");
	dl_metrics_register_histogram(M_PACE,
				      "Dial starts per campaign per minute over its callsPerMinute, one observation "
				      "per running campaign per minute (under 1 when maxConcurrentCalls holds it back).",
				      pace_buckets, DL_ARRAY_LEN(pace_buckets));
	dl_metrics_register(M_CONSUMED, "counter",
			    "Results, events and commands consumed, by type and result (applied, invalid, requeued).");
	dl_metrics_register_histogram(M_BATCH,
				      "Results and carrier statuses applied together: per batch taken from the queue "
				      "(of=\"batch\") and per lane's transaction (of=\"share\"). Small ones cost "
				      "Postgres more a result.",
				      batch_buckets, DL_ARRAY_LEN(batch_buckets));
}

/* "IN_PROGRESS" -> "in_progress" into out (len bytes). */
static void lower(char *out, size_t len, const char *s)
{
	size_t i = 0;

	for (; s[i] && i + 1 < len; i++)
		out[i] = (s[i] >= 'A' && s[i] <= 'Z') ? (char)(s[i] - 'A' + 'a') : s[i];
	out[i] = '\0';
}

/* Sets one gauge series per state, taking its count from r (kind in column
 * 0, state in 1, count in 2) or 0; r NULL sets them all to 0. */
static void set_states(const char *metric, const char *kind, const char *const *states, size_t n, PGresult *r)
{
	for (size_t i = 0; i < n; i++) {
		char labels[64], state[24];
		double v = 0;

		for (int row = 0; r != NULL && row < PQntuples(r); row++)
			if (!strcmp(PQgetvalue(r, row, 0), kind) && !strcmp(PQgetvalue(r, row, 1), states[i]))
				v = atof(PQgetvalue(r, row, 2));
		lower(state, sizeof(state), states[i]);
		snprintf(labels, sizeof(labels), "status=\"%s\"", state);
		dl_metrics_set(metric, labels, v);
	}
}

void sched_metrics_refresh(struct sched_ctx *s, PGconn *db)
{
	bool leading = s->leading != 0;
	int64_t now = dl_mono_ms();
	PGresult *r;

	pthread_once(&once, sm_register);
	if (!leading) {
		/* Once on losing (or never having) the lead, then nothing to do. */
		if (was_leading || next_refresh == 0) {
			set_states(M_IN_FLIGHT, "a", attempt_states, DL_ARRAY_LEN(attempt_states), NULL);
			set_states(M_CAMPAIGNS, "c", campaign_states, DL_ARRAY_LEN(campaign_states), NULL);
			next_refresh = 1;
		}
		was_leading = false;
		return;
	}
	if (was_leading && now < next_refresh)
		return;
	was_leading = true;
	next_refresh = now + SCHED_METRICS_REFRESH_MS;
	if (db == NULL || (r = dl_db_exec(db, SQL_LIVE, 0, NULL, NULL)) == NULL)
		return; /* dl_db_exec logged it; the gauges keep their last values */
	set_states(M_IN_FLIGHT, "a", attempt_states, DL_ARRAY_LEN(attempt_states), r);
	set_states(M_CAMPAIGNS, "c", campaign_states, DL_ARRAY_LEN(campaign_states), r);
	PQclear(r);
}

/* The slot of id, a free or stale one for it, or NULL when all are taken;
 * called with pace_lock held. */
static struct pace_slot *pace_slot(const char *id, int64_t now, int minute_ms)
{
	struct pace_slot *spare = NULL;

	for (size_t i = 0; i < PACE_SLOTS; i++) {
		struct pace_slot *p = &pace[i];

		if (p->id[0] && !strcmp(p->id, id))
			return p;
		if (spare == NULL && (!p->id[0] || now - p->last_seen > 2 * (int64_t)minute_ms))
			spare = p;
	}
	if (spare != NULL) {
		snprintf(spare->id, sizeof(spare->id), "%s", id);
		spare->window_start = spare->last_seen = now;
		spare->started = 0;
	}
	return spare;
}

void sched_metrics_observe_pace(const char *campaign_id, int started, int calls_per_minute, int minute_ms)
{
	int64_t now = dl_mono_ms();
	struct pace_slot *p;

	pthread_once(&once, sm_register);
	if (campaign_id == NULL || strlen(campaign_id) >= DL_ID_MAX || calls_per_minute <= 0 || minute_ms <= 0 ||
	    started < 0)
		return;
	pthread_mutex_lock(&pace_lock);
	p = pace_slot(campaign_id, now, minute_ms);
	if (p == NULL)
		goto out;
	if (now - p->last_seen > minute_ms / 4) {
		/* Not running throughout (paused, nothing pending, or no leader):
		 * that window says nothing about pacing. */
		p->window_start = now;
		p->started = 0;
	} else if (now - p->window_start >= minute_ms) {
		double target = (double)calls_per_minute * (double)(now - p->window_start) / minute_ms;

		dl_metrics_observe(M_PACE, NULL, (double)p->started / target);
		p->window_start = now;
		p->started = 0;
	}
	p->started += started;
	p->last_seen = now;
out:
	pthread_mutex_unlock(&pace_lock);
}

void sched_metrics_consumed(const amqp_basic_properties_t *props, int result)
{
	const char *type = "other", *what;
	char labels[96];

	pthread_once(&once, sm_register);
	if (props != NULL && (props->_flags & AMQP_BASIC_TYPE_FLAG))
		for (size_t i = 0; i < DL_ARRAY_LEN(consumed_types); i++)
			if (props->type.len == strlen(consumed_types[i]) &&
			    !memcmp(props->type.bytes, consumed_types[i], props->type.len))
				type = consumed_types[i];
	what = result == 0 ? "applied" : result == -EINVAL ? "invalid" : "requeued";
	snprintf(labels, sizeof(labels), "type=\"%s\",result=\"%s\"", type, what);
	dl_metrics_add(M_CONSUMED, labels, 1);
}

void sched_metrics_batch(const char *of, int n)
{
	char labels[32];

	pthread_once(&once, sm_register);
	snprintf(labels, sizeof(labels), "of=\"%s\"", of);
	dl_metrics_observe(M_BATCH, labels, n);
}
