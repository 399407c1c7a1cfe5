/* Pacing: dial starts at calls_per_minute, spread evenly, and never more
 * live calls than max_concurrent. The next allowed start lives in Postgres,
 * so a new leader carries on where the old one stopped. */
#include "scheduler.h"

/* Rounded up, so that calls_per_minute intervals never fit in one minute
 * plus one start. */
static int64_t interval_ms(const struct sched_pace *p)
{
	int64_t cpm = p->calls_per_minute > 0 ? p->calls_per_minute : 1;
	int64_t i = ((int64_t)p->minute_ms + cpm - 1) / cpm;

	return i > 0 ? i : 1;
}

int sched_pace_allow(const struct sched_pace *p, int64_t now_ms, int64_t *next_base)
{
	int64_t interval = interval_ms(p), base = p->next_ms, n;

	*next_base = base;
	if (p->calls_per_minute <= 0 || p->live >= p->max_concurrent)
		return 0;
	/* After an idle spell, catch up at most one tick: no burst. */
	if (base < now_ms - p->tick_ms)
		base = now_ms - p->tick_ms;
	*next_base = base;
	if (base > now_ms)
		return 0;
	n = (now_ms - base) / interval + 1;
	if (n > p->max_concurrent - p->live)
		n = p->max_concurrent - p->live;
	if (n > 1000)
		n = 1000;
	return (int)n;
}

int64_t sched_pace_advance(const struct sched_pace *p, int64_t base, int n)
{
	return base + interval_ms(p) * n;
}
