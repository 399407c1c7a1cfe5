/* Recently verified API keys: the SHA-256 of a key to its organization and
 * key id, trusted for a short time after the database accepted the key, so
 * that a busy client does not cost a key lookup per request. A revoked key is
 * refused at the latest ttl_ms after its revocation committed. Only keys the
 * database accepted are held: wrong keys can neither fill nor poison it.
 * Held per API process. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"

#define KC_SLOTS 1024

struct kc_entry {
	char hash[65];
	char org[DL_ID_MAX];
	char key_id[DL_ID_MAX];
	int64_t until_ms; /* 0: empty */
};

struct api_keycache {
	int ttl_ms;
	pthread_mutex_t lock;
	struct kc_entry slots[KC_SLOTS];
};

int api_keycache_new(int ttl_ms, struct api_keycache **out)
{
	struct api_keycache *kc = calloc(1, sizeof(*kc));

	if (kc == NULL)
		return -ENOMEM;
	kc->ttl_ms = ttl_ms;
	pthread_mutex_init(&kc->lock, NULL);
	*out = kc;
	return 0;
}

void api_keycache_free(struct api_keycache *kc)
{
	if (kc == NULL)
		return;
	pthread_mutex_destroy(&kc->lock);
	free(kc);
}

/* The hash is a SHA-256 in hex: its first digits already spread evenly.
 * Direct-mapped: a collision only costs the evicted key one lookup. */
static struct kc_entry *slot(struct api_keycache *kc, const char *hash)
{
	unsigned h = 0;

	for (int i = 0; i < 8 && hash[i]; i++)
		h = h * 31u + (unsigned char)hash[i];
	return &kc->slots[h % KC_SLOTS];
}

bool api_keycache_get(struct api_keycache *kc, const char *hash, int64_t now_ms, char org[DL_ID_MAX],
		      char key_id[DL_ID_MAX])
{
	struct kc_entry *e;
	bool hit;

	if (kc == NULL || kc->ttl_ms <= 0 || strlen(hash) != 64)
		return false;
	pthread_mutex_lock(&kc->lock);
	e = slot(kc, hash);
	hit = e->until_ms > now_ms && dl_ct_equal(e->hash, hash, 64);
	if (hit) {
		memcpy(org, e->org, DL_ID_MAX);
		memcpy(key_id, e->key_id, DL_ID_MAX);
	}
	pthread_mutex_unlock(&kc->lock);
	return hit;
}

void api_keycache_put(struct api_keycache *kc, const char *hash, const char *org, const char *key_id,
		      int64_t looked_up_ms)
{
	struct kc_entry *e;

	if (kc == NULL || kc->ttl_ms <= 0 || strlen(hash) != 64)
		return;
	pthread_mutex_lock(&kc->lock);
	e = slot(kc, hash);
	memcpy(e->hash, hash, 65);
	snprintf(e->org, sizeof(e->org), "%s", org);
	snprintf(e->key_id, sizeof(e->key_id), "%s", key_id);
	e->until_ms = looked_up_ms + kc->ttl_ms;
	pthread_mutex_unlock(&kc->lock);
}
