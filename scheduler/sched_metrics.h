/* sched_metrics: the scheduler's metrics that need more than one counter
 * bump: attempts in flight (from the database), pacing per campaign (one
 * histogram, no campaign label) and messages consumed by type. Nothing here
 * logs; every call is cheap enough for the loops that make it. */
#ifndef SCHED_METRICS_H
#define SCHED_METRICS_H

#include <amqp.h>
#include <libpq-fe.h>

#include "scheduler.h"

/* On the leader, at most every SCHED_METRICS_REFRESH_MS, reads the live
 * attempts by status and the active campaigns (two index-only counts) into
 * gauges; on a follower sets them to 0, so a sum over replicas counts once.
 * Call every turn of the main loop, outside a transaction, with its db. */
void sched_metrics_refresh(struct sched_ctx *s, PGconn *db);
/* Records that a dispatch pass started `started` dials (0 included) for a
 * running campaign with its callsPerMinute. Each (clock) minute that the
 * campaign was seen throughout gives one observation of starts / target in
 * dialer_scheduler_pace_ratio. Call once per campaign per pass. */
void sched_metrics_observe_pace(const char *campaign_id, int started, int calls_per_minute, int minute_ms);
/* Counts one consumed message by its AMQP type (known types, else "other")
 * and what became of it: result is the handler's 0 (applied or ignored as a
 * duplicate), -EINVAL (dropped as invalid) or another -errno (requeued). */
void sched_metrics_consumed(const amqp_basic_properties_t *props, int result);
/* Observes the size of a set of results applied together: of is "batch"
 * (a consumer's, n messages) or "share" (a lane's transaction). */
void sched_metrics_batch(const char *of, int n);

#endif
