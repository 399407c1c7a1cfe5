/* Per-key token buckets: each key gets rate tokens a minute per class, up to
 * a burst of one minute's worth. Held per API process. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "api.h"

#define RL_SLOTS 4096

struct bucket {
	char key[DL_ID_MAX];
	double tokens[2];
	int64_t at_ms[2];
	bool used;
};

struct api_ratelimit {
	int per_min[2];
	pthread_mutex_t lock;
	struct bucket slots[RL_SLOTS];
};

int api_ratelimit_new(int per_min_default, int per_min_bulk, struct api_ratelimit **out)
{
	struct api_ratelimit *rl = calloc(1, sizeof(*rl));

	if (rl == NULL)
		return -ENOMEM;
	rl->per_min[API_RATE_DEFAULT] = per_min_default;
	rl->per_min[API_RATE_BULK] = per_min_bulk;
	pthread_mutex_init(&rl->lock, NULL);
	*out = rl;
	return 0;
}

void api_ratelimit_free(struct api_ratelimit *rl)
{
	if (rl == NULL)
		return;
	pthread_mutex_destroy(&rl->lock);
	free(rl);
}

static unsigned hash(const char *s)
{
	unsigned h = 2166136261u;

	while (*s)
		h = (h ^ (unsigned char)*s++) * 16777619u;
	return h;
}

/* Finds key's bucket by open addressing; a full table recycles the slot the
 * hash points at (keys are few; losing one bucket only forgives it). */
static struct bucket *find(struct api_ratelimit *rl, const char *key, int64_t now_ms)
{
	unsigned h = hash(key);

	for (unsigned i = 0; i < 16; i++) {
		struct bucket *b = &rl->slots[(h + i) % RL_SLOTS];

		if (b->used && !strcmp(b->key, key))
			return b;
		if (!b->used) {
			h = (h + i) % RL_SLOTS;
			goto fresh;
		}
	}
	h %= RL_SLOTS;
fresh:
	{
		struct bucket *b = &rl->slots[h];

		snprintf(b->key, sizeof(b->key), "%s", key);
		b->used = true;
		for (int c = 0; c < 2; c++) {
			b->tokens[c] = rl->per_min[c];
			b->at_ms[c] = now_ms;
		}
		return b;
	}
}

bool api_ratelimit_take(struct api_ratelimit *rl, const char *key, enum api_rate_class cls,
			int64_t now_ms, int *retry_after_s)
{
	struct bucket *b;
	double rate, cap;
	bool ok;

	if (cls == API_RATE_NONE)
		return true;
	pthread_mutex_lock(&rl->lock);
	b = find(rl, key, now_ms);
	cap = rl->per_min[cls];
	rate = cap / 60000.0; /* tokens per ms */
	if (now_ms > b->at_ms[cls]) {
		b->tokens[cls] += (double)(now_ms - b->at_ms[cls]) * rate;
		if (b->tokens[cls] > cap)
			b->tokens[cls] = cap;
		b->at_ms[cls] = now_ms;
	}
	ok = b->tokens[cls] >= 1.0;
	if (ok) {
		b->tokens[cls] -= 1.0;
	} else {
		double wait_ms = (1.0 - b->tokens[cls]) / rate;

		*retry_after_s = (int)((wait_ms + 999.0) / 1000.0);
		if (*retry_after_s < 1)
			*retry_after_s = 1;
	}
	pthread_mutex_unlock(&rl->lock);
	return ok;
}
