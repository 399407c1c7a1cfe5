/* Pacing: dial starts at calls_per_minute, spread evenly, and never more
 * live calls than max_concurrent. The next allowed start lives in Postgres,
 * so a new leader carries on where the old one stopped. */
#include "scheduler.h"

/* The spacing of starts. A start happens up to one tick after its slot, and
 * a job reaches the carrier with a few milliseconds of jitter, so the slots
 * are spread over the minute plus a guard of one tick and 2%: starts run
 * late by at most a tick and 1%, which leaves 1% of the minute for the
 * jitter between here and the carrier, so no sliding minute ever holds more
 * than calls_per_minute starts as the carrier sees them, and the pace stays
 * within 3% of the target. */
static int64_t interval_us(const struct sched_pace *p)
{
	int64_t cpm = p->calls_per_minute > 0 ? p->calls_per_minute : 1;
	int64_t span = ((int64_t)p->minute_ms + p->tick_ms + p->minute_ms / 50) * 1000;
	int64_t i = (span + cpm - 1) / cpm;

	return i > 0 ? i : 1;
}

int sched_pace_allow(const struct sched_pace *p, int64_t now_us, int64_t *next_base)
{
	int64_t interval = interval_us(p), base = p->next_us, n;
	int64_t late_us = ((int64_t)p->tick_ms + p->minute_ms / 100) * 1000;

	*next_base = base;
	if (p->calls_per_minute <= 0 || p->live >= p->max_concurrent)
		return 0;
	/* A start may run late by up to a tick and 1% of the minute (a slow
	 * tick, a busy database) and still keep within the guard; slots missed
	 * beyond that (a pause, a new leader) are dropped: no burst. */
	if (base < now_us - late_us)
		base = now_us - late_us;
	*next_base = base;
	if (base > now_us)
		return 0;
	n = (now_us - base) / interval + 1;
	if (n > p->max_concurrent - p->live)
		n = p->max_concurrent - p->live;
	if (n > 1000)
		n = 1000;
	return (int)n;
}

int64_t sched_pace_advance(const struct sched_pace *p, int64_t base, int n)
{
	return base + interval_us(p) * n;
}
