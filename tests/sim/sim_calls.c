/* The simulator's calls: an append-only store in creation order (chunks that
 * never move), an index by To number, and a min-heap of timers that one
 * thread drives through each call's steps: dial (initiated, ringing), answer,
 * end. Outcomes follow the To number's last digit; lengths are in scaled
 * seconds (clock.minute_ms / 60 ms). Events leave through sim_cb_post. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dl_log.h"
#include "sim.h"

#define CHUNK_BITS 16
#define CHUNK_SIZE (1u << CHUNK_BITS)
#define NCHUNKS ((SIM_MAX_CALLS + CHUNK_SIZE - 1) / CHUNK_SIZE)
#define TO_BUCKETS (1u << 20)
/* Events gathered under the lock before they are posted without it. */
#define EV_BATCH 768

enum step { STEP_NONE = 0, STEP_DIAL, STEP_ANSWER, STEP_END };
/* What the number's last digit decides. */
enum kind { KIND_HUMAN, KIND_MACHINE, KIND_NO_ANSWER, KIND_BUSY, KIND_FAILED };

struct evbuf {
	struct sim_event *ev;
	int n, cap;
};

static const char *const status_names[SIM_NSTATUS] = {
	"queued", "ringing", "in-progress", "completed", "busy", "no-answer", "failed", "canceled",
};

const char *sim_status_name(int status)
{
	return status >= 0 && status < SIM_NSTATUS ? status_names[status] : "unknown";
}

const char *sim_answered_by_name(int answered_by)
{
	switch (answered_by) {
	case SIM_AB_HUMAN: return "human";
	case SIM_AB_MACHINE: return "machine_start";
	default: return NULL;
	}
}

void sim_rfc2822(int64_t epoch_ms, char out[SIM_DATE_MAX])
{
	time_t t = (time_t)(epoch_ms / 1000);
	struct tm tm;

	gmtime_r(&t, &tm);
	/* The C locale's English names, as the format wants. */
	if (strftime(out, SIM_DATE_MAX, "%a, %d %b %Y %H:%M:%S +0000", &tm) == 0)
		out[0] = '\0';
}

int64_t sim_secs_ms(const struct sim *s, int64_t secs)
{
	return secs * s->cfg->clock_minute_ms / 60;
}

void sim_sid_format(const uint8_t sid[16], char out[SIM_SID_LEN])
{
	static const char hex[] = "0123456789abcdef";

	out[0] = 'C';
	out[1] = 'A';
	for (int i = 0; i < 16; i++) {
		out[2 + 2 * i] = hex[sid[i] >> 4];
		out[3 + 2 * i] = hex[sid[i] & 15];
	}
	out[SIM_SID_LEN - 1] = '\0';
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* A sid is 12 random bytes and the call's index masked by the first four
 * and a per-process key: no hash table is needed to find a call, and a
 * guessed sid still fails the comparison with the stored one. */
static uint32_t sid_mask(const struct sim *s, const uint8_t *sid)
{
	return ((uint32_t)sid[0] << 24 | (uint32_t)sid[1] << 16 | (uint32_t)sid[2] << 8 | sid[3]) ^ s->sid_key;
}

static uint32_t sid_index(const struct sim *s, const uint8_t sid[16])
{
	uint32_t v = (uint32_t)sid[12] << 24 | (uint32_t)sid[13] << 16 | (uint32_t)sid[14] << 8 | sid[15];

	return v ^ sid_mask(s, sid);
}

static int sid_parse(const char *text, uint8_t out[16])
{
	if (strlen(text) != SIM_SID_LEN - 1 || text[0] != 'C' || text[1] != 'A')
		return -EINVAL;
	for (int i = 0; i < 16; i++) {
		int hi = hexval(text[2 + 2 * i]), lo = hexval(text[3 + 2 * i]);

		if (hi < 0 || lo < 0)
			return -EINVAL;
		out[i] = (uint8_t)(hi << 4 | lo);
	}
	return 0;
}

static struct sim_call *call_at(struct sim *s, uint32_t idx)
{
	return &s->chunks[idx >> CHUNK_BITS][idx & (CHUNK_SIZE - 1)];
}

static uint32_t to_bucket(const char *to)
{
	uint32_t h = 2166136261u;

	for (const unsigned char *p = (const unsigned char *)to; *p; p++)
		h = (h ^ *p) * 16777619u;
	return h & (TO_BUCKETS - 1);
}

/* Looks up a call by sid text; NULL when unknown. Under lock. */
static struct sim_call *find(struct sim *s, const char *sid)
{
	uint8_t raw[16];
	uint32_t idx;
	struct sim_call *c;

	if (sid_parse(sid, raw) < 0)
		return NULL;
	idx = sid_index(s, raw);
	if (idx >= s->ncalls)
		return NULL;
	c = call_at(s, idx);
	return memcmp(c->sid, raw, 16) == 0 ? c : NULL;
}

static void snapshot(const struct sim_call *c, struct sim_call *out)
{
	*out = *c;
	out->callback = NULL;
}

static void set_status(struct sim *s, struct sim_call *c, int status)
{
	s->by_status[c->status]--;
	s->by_status[status]++;
	c->status = (uint8_t)status;
}

/* The timer heap, ordered by due time. */
static void heap_swap(struct sim_timer *a, struct sim_timer *b)
{
	struct sim_timer t = *a;

	*a = *b;
	*b = t;
}

static int heap_reserve(struct sim *s, size_t more)
{
	size_t cap;
	struct sim_timer *nh;

	if (s->heap_n + more <= s->heap_cap)
		return 0;
	cap = s->heap_cap ? s->heap_cap * 2 : 4096;
	while (cap < s->heap_n + more)
		cap *= 2;
	nh = realloc(s->heap, cap * sizeof(*nh));
	if (nh == NULL)
		return -ENOMEM;
	s->heap = nh;
	s->heap_cap = cap;
	return 0;
}

/* Pushes a timer; the room was reserved by the create that made the call
 * (each step pops one timer before it pushes the next). */
static void heap_push(struct sim *s, int64_t due, uint32_t idx, uint8_t gen)
{
	size_t i = s->heap_n++;

	s->heap[i].due = due;
	s->heap[i].idx = idx;
	s->heap[i].gen = gen;
	while (i > 0 && s->heap[(i - 1) / 2].due > s->heap[i].due) {
		heap_swap(&s->heap[(i - 1) / 2], &s->heap[i]);
		i = (i - 1) / 2;
	}
}

static struct sim_timer heap_pop(struct sim *s)
{
	struct sim_timer top = s->heap[0];
	size_t i = 0;

	s->heap[0] = s->heap[--s->heap_n];
	for (;;) {
		size_t l = 2 * i + 1, r = l + 1, m = i;

		if (l < s->heap_n && s->heap[l].due < s->heap[m].due)
			m = l;
		if (r < s->heap_n && s->heap[r].due < s->heap[m].due)
			m = r;
		if (m == i)
			break;
		heap_swap(&s->heap[i], &s->heap[m]);
		i = m;
	}
	return top;
}

static void schedule(struct sim *s, struct sim_call *c, uint32_t idx, int step, int64_t in_ms)
{
	c->next_step = (uint8_t)step;
	heap_push(s, dl_mono_ms() + in_ms, idx, c->gen);
}

/* Adds the callback for status to b when the call subscribed to ev_bit.
 * The final event takes the URL; the call keeps none after it. Under lock. */
static void emit(struct sim *s, struct sim_call *c, uint32_t idx, int ev_bit, struct evbuf *b)
{
	bool final = ev_bit == SIM_EV_COMPLETED;
	struct sim_event *ev;

	if (c->callback == NULL || !(c->events & ev_bit) || b->n == b->cap)
		goto out;
	ev = &b->ev[b->n];
	memset(ev, 0, sizeof(*ev));
	if (final) {
		ev->url = c->callback;
		c->callback = NULL;
	} else {
		ev->url = strdup(c->callback);
		if (ev->url == NULL) {
			atomic_fetch_add(&s->cb_dropped, 1);
			goto out;
		}
	}
	ev->idx = idx;
	sim_sid_format(c->sid, ev->sid);
	memcpy(ev->to, c->to, sizeof(ev->to));
	memcpy(ev->from, c->from, sizeof(ev->from));
	/* The initiated event reports "initiated" though the resource says queued. */
	ev->status = ev_bit == SIM_EV_INITIATED ? "initiated" : sim_status_name(c->status);
	ev->answered_by = sim_answered_by_name(c->answered_by);
	ev->seq = c->seq++;
	ev->duration = final ? (int)c->duration : -1;
	ev->at_ms = dl_now_ms();
	b->n++;
	atomic_fetch_add(&s->cb_generated, 1);
out:
	if (final) {
		free(c->callback);
		c->callback = NULL;
	}
}

/* Ends c now with status; duration already set. Under lock. */
static void end_call(struct sim *s, struct sim_call *c, uint32_t idx, int status, struct evbuf *b)
{
	c->gen++;
	c->next_step = STEP_NONE;
	c->end_ms = dl_now_ms();
	set_status(s, c, status);
	emit(s, c, idx, SIM_EV_COMPLETED, b);
}

static int64_t min64(int64_t a, int64_t b)
{
	return a < b ? a : b;
}

/* Runs the due step of call idx. Under lock. */
static void step(struct sim *s, uint32_t idx, struct evbuf *b)
{
	struct sim_call *c = call_at(s, idx);
	int64_t ring = s->cfg->sim_ring_seconds, len;
	/* Busy and carrier failure come back fast: a second, or the ring time if shorter. */
	int64_t quick = min64(1, ring);

	switch (c->next_step) {
	case STEP_DIAL:
		c->start_ms = dl_now_ms();
		emit(s, c, idx, SIM_EV_INITIATED, b);
		if (c->final == KIND_FAILED) {
			c->final = SIM_FAILED;
			schedule(s, c, idx, STEP_END, sim_secs_ms(s, quick));
			break;
		}
		set_status(s, c, SIM_RINGING);
		emit(s, c, idx, SIM_EV_RINGING, b);
		if (c->final == KIND_BUSY) {
			c->final = SIM_BUSY;
			schedule(s, c, idx, STEP_END, sim_secs_ms(s, quick));
		} else if (c->final == KIND_NO_ANSWER || c->timeout_s < ring) {
			/* Nobody picks up, or the caller gives up ringing before anyone would. */
			c->final = SIM_NO_ANSWER;
			schedule(s, c, idx, STEP_END, sim_secs_ms(s, min64(c->timeout_s, ring)));
		} else {
			c->answered_by = c->final == KIND_HUMAN ? SIM_AB_HUMAN : SIM_AB_MACHINE;
			c->final = SIM_COMPLETED;
			schedule(s, c, idx, STEP_ANSWER, sim_secs_ms(s, ring));
		}
		break;
	case STEP_ANSWER:
		c->answered_ms = dl_now_ms();
		set_status(s, c, SIM_IN_PROGRESS);
		emit(s, c, idx, SIM_EV_ANSWERED, b);
		len = s->cfg->sim_call_seconds;
		if (c->answered_by == SIM_AB_MACHINE)
			len = len / 3 + (len % 3 != 0);
		if (c->answered_by == SIM_AB_MACHINE && len < 1)
			len = 1;
		if (len > c->time_limit_s && s->cfg->sim_honor_time_limit)
			len = c->time_limit_s;
		c->duration = (uint32_t)len;
		schedule(s, c, idx, STEP_END, sim_secs_ms(s, len));
		break;
	case STEP_END:
		end_call(s, c, idx, c->final, b);
		break;
	default:
		break;
	}
}

int sim_calls_init(struct sim *s)
{
	pthread_condattr_t ca;

	pthread_mutex_init(&s->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&s->wake, &ca);
	pthread_condattr_destroy(&ca);
	s->store_ready = true;
	if (dl_random_bytes(&s->sid_key, sizeof(s->sid_key)) < 0)
		return -EIO;
	s->chunks = calloc(NCHUNKS, sizeof(*s->chunks));
	s->to_heads = malloc(TO_BUCKETS * sizeof(*s->to_heads));
	if (s->chunks == NULL || s->to_heads == NULL)
		return -ENOMEM;
	memset(s->to_heads, 0xff, TO_BUCKETS * sizeof(*s->to_heads));
	return heap_reserve(s, 1);
}

int sim_calls_create(struct sim *s, const struct sim_create *req, struct sim_call *out)
{
	uint8_t rnd[12];
	char *callback = NULL;
	struct sim_call *c;
	uint32_t idx, bucket, mask;
	size_t last = strlen(req->to) - 1;
	int d = req->to[last] - '0', rc = -ENOMEM;

	if (dl_random_bytes(rnd, sizeof(rnd)) < 0)
		return -EIO;
	if (req->callback != NULL && (callback = strdup(req->callback)) == NULL)
		return -ENOMEM;
	pthread_mutex_lock(&s->lock);
	if (s->ncalls >= SIM_MAX_CALLS) {
		rc = -ENOSPC;
		goto out;
	}
	idx = s->ncalls;
	if (s->chunks[idx >> CHUNK_BITS] == NULL &&
	    (s->chunks[idx >> CHUNK_BITS] = calloc(CHUNK_SIZE, sizeof(struct sim_call))) == NULL)
		goto out;
	if (heap_reserve(s, 1) < 0)
		goto out;
	c = call_at(s, idx);
	memset(c, 0, sizeof(*c));
	memcpy(c->sid, rnd, 12);
	mask = idx ^ sid_mask(s, c->sid);
	c->sid[12] = (uint8_t)(mask >> 24);
	c->sid[13] = (uint8_t)(mask >> 16);
	c->sid[14] = (uint8_t)(mask >> 8);
	c->sid[15] = (uint8_t)mask;
	snprintf(c->to, sizeof(c->to), "%s", req->to);
	snprintf(c->from, sizeof(c->from), "%s", req->from);
	c->status = SIM_QUEUED;
	c->final = d <= 5 ? KIND_HUMAN : d == 6 ? KIND_MACHINE : d == 7 ? KIND_NO_ANSWER : d == 8 ? KIND_BUSY
											: KIND_FAILED;
	c->events = req->events;
	c->timeout_s = (uint16_t)req->timeout_s;
	c->time_limit_s = (uint32_t)req->time_limit_s;
	c->created_ms = dl_now_ms();
	c->callback = callback;
	callback = NULL;
	bucket = to_bucket(c->to);
	c->to_next = s->to_heads[bucket];
	s->to_heads[bucket] = idx;
	s->ncalls++;
	s->by_status[SIM_QUEUED]++;
	snapshot(c, out);
	schedule(s, c, idx, STEP_DIAL, 0);
	pthread_cond_signal(&s->wake);
	rc = 0;
out:
	pthread_mutex_unlock(&s->lock);
	free(callback);
	return rc;
}

int sim_calls_get(struct sim *s, const char *sid, struct sim_call *out)
{
	struct sim_call *c;
	int rc = -ENOENT;

	pthread_mutex_lock(&s->lock);
	c = find(s, sid);
	if (c != NULL) {
		snapshot(c, out);
		rc = 0;
	}
	pthread_mutex_unlock(&s->lock);
	return rc;
}

int sim_calls_hangup(struct sim *s, const char *sid, int status, struct sim_call *out)
{
	struct sim_event ev;
	struct evbuf b = {&ev, 0, 1};
	struct sim_call *c;
	int rc = -ENOENT;

	pthread_mutex_lock(&s->lock);
	c = find(s, sid);
	if (c == NULL)
		goto out;
	rc = 0;
	if (c->status == SIM_QUEUED || c->status == SIM_RINGING) {
		c->duration = 0;
		end_call(s, c, sid_index(s, c->sid), SIM_CANCELED, &b);
	} else if (c->status == SIM_IN_PROGRESS && status == SIM_COMPLETED) {
		int64_t secs = (dl_now_ms() - c->answered_ms) * 60 / s->cfg->clock_minute_ms;

		/* The talk so far, never more than what was planned. */
		if (secs < (int64_t)c->duration)
			c->duration = (uint32_t)(secs < 0 ? 0 : secs);
		end_call(s, c, sid_index(s, c->sid), SIM_COMPLETED, &b);
	}
	snapshot(c, out);
out:
	pthread_mutex_unlock(&s->lock);
	if (b.n == 1)
		sim_cb_post(s, &ev);
	return rc;
}

int sim_calls_list(struct sim *s, const char *to, int64_t since_ms, int max, struct sim_call *out)
{
	int n = 0;

	pthread_mutex_lock(&s->lock);
	if (to != NULL) {
		/* The bucket's chain runs newest to oldest, other numbers mixed in. */
		for (uint32_t i = s->to_heads[to_bucket(to)]; i != SIM_NONE && n < max;) {
			struct sim_call *c = call_at(s, i);

			if (c->created_ms < since_ms)
				break;
			if (strcmp(c->to, to) == 0)
				snapshot(c, &out[n++]);
			i = c->to_next;
		}
	} else {
		for (uint32_t i = s->ncalls; i-- > 0 && n < max;) {
			struct sim_call *c = call_at(s, i);

			if (c->created_ms < since_ms)
				break;
			snapshot(c, &out[n++]);
		}
	}
	pthread_mutex_unlock(&s->lock);
	return n;
}

uint32_t sim_calls_range(struct sim *s, uint32_t from, uint32_t n, struct sim_call *out)
{
	uint32_t got = 0;

	pthread_mutex_lock(&s->lock);
	for (uint32_t i = from; i < s->ncalls && got < n; i++)
		snapshot(call_at(s, i), &out[got++]);
	pthread_mutex_unlock(&s->lock);
	return got;
}

void sim_calls_stats(struct sim *s, struct sim_stats *out)
{
	pthread_mutex_lock(&s->lock);
	out->calls = s->ncalls;
	memcpy(out->by_status, s->by_status, sizeof(out->by_status));
	pthread_mutex_unlock(&s->lock);
}

void sim_calls_delivered(struct sim *s, uint32_t idx)
{
	pthread_mutex_lock(&s->lock);
	if (idx < s->ncalls) {
		struct sim_call *c = call_at(s, idx);

		if (c->delivered < UINT8_MAX)
			c->delivered++;
	}
	pthread_mutex_unlock(&s->lock);
}

/* Sleeps on the condition until due (monotonic ms) or a signal. Under lock. */
static void wait_until(struct sim *s, int64_t due)
{
	struct timespec ts = {(time_t)(due / 1000), (long)(due % 1000) * 1000000L};

	pthread_cond_timedwait(&s->wake, &s->lock, &ts);
}

static void *timer_main(void *arg)
{
	struct sim *s = arg;
	struct evbuf b = {NULL, 0, EV_BATCH};

	b.ev = calloc(EV_BATCH, sizeof(*b.ev));
	if (b.ev == NULL) {
		dl_log_kv(DL_ERROR, "simulator timer thread is out of memory", NULL);
		return NULL;
	}
	pthread_mutex_lock(&s->lock);
	while (!s->timer_stop) {
		int64_t now = dl_mono_ms();

		if (s->heap_n == 0 || s->heap[0].due > now) {
			wait_until(s, s->heap_n == 0 ? now + 1000 : min64(s->heap[0].due, now + 1000));
			continue;
		}
		/* A step emits at most two events. */
		while (s->heap_n > 0 && s->heap[0].due <= now && b.n + 2 <= b.cap) {
			struct sim_timer t = heap_pop(s);

			if (call_at(s, t.idx)->gen == t.gen)
				step(s, t.idx, &b);
		}
		if (b.n > 0) {
			pthread_mutex_unlock(&s->lock);
			for (int i = 0; i < b.n; i++)
				sim_cb_post(s, &b.ev[i]);
			b.n = 0;
			pthread_mutex_lock(&s->lock);
		}
	}
	pthread_mutex_unlock(&s->lock);
	free(b.ev);
	return NULL;
}

int sim_calls_start(struct sim *s)
{
	if (pthread_create(&s->timer_thread, NULL, timer_main, s) != 0)
		return -EAGAIN;
	s->timer_started = true;
	return 0;
}

void sim_calls_stop(struct sim *s)
{
	if (s->timer_started) {
		pthread_mutex_lock(&s->lock);
		s->timer_stop = 1;
		pthread_cond_signal(&s->wake);
		pthread_mutex_unlock(&s->lock);
		pthread_join(s->timer_thread, NULL);
		s->timer_started = false;
	}
}

void sim_calls_fini(struct sim *s)
{
	sim_calls_stop(s);
	if (s->chunks != NULL) {
		for (uint32_t i = 0; i < s->ncalls; i++)
			free(call_at(s, i)->callback);
		for (uint32_t i = 0; i < NCHUNKS; i++)
			free(s->chunks[i]);
		free(s->chunks);
	}
	if (s->store_ready) {
		pthread_mutex_destroy(&s->lock);
		pthread_cond_destroy(&s->wake);
		s->store_ready = false;
	}
	free(s->to_heads);
	free(s->heap);
	s->chunks = NULL;
	s->to_heads = NULL;
	s->heap = NULL;
}
