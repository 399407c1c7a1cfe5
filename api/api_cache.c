/* The read cache: whole 200 answers of GET /v1/campaigns, /v1/campaigns/:id
 * and /v1/campaigns/:id/progress, kept in memory and dropped exactly when
 * the database announces a change of what they show.
 *
 * Validity is by sequence numbers, so that a read that raced a change can
 * never be kept as fresh. One counter, seq, is bumped by every read that
 * may be kept (before its query runs) and by every invalidation. Each
 * dependency (an organization's list, "o:<org>", or one campaign,
 * "c:<id>") remembers the seq of its last invalidation; an answer is
 * served only while the seq its read took is above that and above floor
 * (which invalidates everything at once), and while it is younger than
 * api.read_cache_max_age_ms. A change committed after a read's snapshot is
 * announced after that read took its seq, so its invalidation is above it.
 *
 * The listener thread keeps a connection LISTENing on dialer_campaigns
 * (common/sql/0010_campaign_change_notify.sql). While it is not connected
 * nothing is served or kept; on every (re)connect, once LISTEN is in
 * place, floor moves up so that nothing kept before is served. What remains
 * is the time a NOTIFY takes from the commit to this process (or a lost
 * connection takes to be noticed): a few milliseconds in which another
 * replica's or the scheduler's change may not show yet. The API's own
 * writes invalidate here before they answer. */
#include <errno.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "dl_log.h"
#include "dl_metrics.h"

struct api_cache_blob {
	atomic_int refs;
	size_t len;
	char data[];
};

/* A kept answer; key and dep are stored after it in the same allocation. */
struct entry {
	struct entry *hnext;       /* hash chain */
	struct entry *older, *newer; /* age list */
	uint64_t hash;
	uint64_t fill_seq;
	int64_t filled_ms;
	size_t cost; /* bytes charged against max_bytes */
	struct api_cache_blob *blob;
	const char *dep;
	char key[];
};

/* The seq of a dependency's last invalidation. */
struct dep {
	struct dep *hnext;
	uint64_t hash;
	uint64_t seq;
	char name[];
};

struct api_cache {
	pthread_mutex_t mu;
	struct api_cache_limits lim;
	uint64_t seq, floor;
	bool listening;
	struct entry **buckets;
	size_t nbuckets; /* a power of two */
	struct entry *oldest, *newest;
	int n;
	size_t bytes;
	struct dep **dbuckets;
	size_t ndbuckets; /* a power of two */
	int ndeps;
};

static uint64_t hash_str(const char *s)
{
	uint64_t h = 1469598103934665603ULL;

	for (; *s; s++) {
		h ^= (unsigned char)*s;
		h *= 1099511628211ULL;
	}
	return h;
}

static size_t pow2_at_least(size_t n)
{
	size_t p = 16;

	while (p < n)
		p <<= 1;
	return p;
}

int api_cache_new(const struct api_cache_limits *lim, struct api_cache **out)
{
	struct api_cache *c;

	if (lim->entries <= 0 || lim->max_deps <= 0)
		return -EINVAL;
	c = calloc(1, sizeof(*c));
	if (c == NULL)
		return -ENOMEM;
	c->lim = *lim;
	c->nbuckets = pow2_at_least((size_t)lim->entries * 2);
	c->ndbuckets = pow2_at_least((size_t)lim->max_deps * 2);
	c->buckets = calloc(c->nbuckets, sizeof(*c->buckets));
	c->dbuckets = calloc(c->ndbuckets, sizeof(*c->dbuckets));
	if (c->buckets == NULL || c->dbuckets == NULL || pthread_mutex_init(&c->mu, NULL) != 0) {
		free(c->buckets);
		free(c->dbuckets);
		free(c);
		return -ENOMEM;
	}
	*out = c;
	return 0;
}

void api_cache_blob_release(struct api_cache_blob *b)
{
	if (b != NULL && atomic_fetch_sub(&b->refs, 1) == 1)
		free(b);
}

const char *api_cache_blob_data(const struct api_cache_blob *b, size_t *len)
{
	*len = b->len;
	return b->data;
}

/* Unlinks e from the hash and the age list and frees it. Under mu. */
static void entry_drop(struct api_cache *c, struct entry *e)
{
	struct entry **pp = &c->buckets[e->hash & (c->nbuckets - 1)];

	while (*pp != e)
		pp = &(*pp)->hnext;
	*pp = e->hnext;
	if (e->older)
		e->older->newer = e->newer;
	else
		c->oldest = e->newer;
	if (e->newer)
		e->newer->older = e->older;
	else
		c->newest = e->older;
	c->n--;
	c->bytes -= e->cost;
	api_cache_blob_release(e->blob);
	free(e);
}

static void deps_clear(struct api_cache *c)
{
	for (size_t i = 0; i < c->ndbuckets; i++) {
		struct dep *d = c->dbuckets[i], *next;

		for (; d != NULL; d = next) {
			next = d->hnext;
			free(d);
		}
		c->dbuckets[i] = NULL;
	}
	c->ndeps = 0;
}

void api_cache_free(struct api_cache *c)
{
	if (c == NULL)
		return;
	while (c->oldest != NULL)
		entry_drop(c, c->oldest);
	deps_clear(c);
	free(c->buckets);
	free(c->dbuckets);
	pthread_mutex_destroy(&c->mu);
	free(c);
}

static struct dep *dep_find(struct api_cache *c, const char *name, uint64_t h)
{
	for (struct dep *d = c->dbuckets[h & (c->ndbuckets - 1)]; d != NULL; d = d->hnext)
		if (d->hash == h && !strcmp(d->name, name))
			return d;
	return NULL;
}

/* The seq of dep's last invalidation, 0 when none is remembered. Under mu. */
static uint64_t dep_seq(struct api_cache *c, const char *name)
{
	struct dep *d = dep_find(c, name, hash_str(name));

	return d ? d->seq : 0;
}

/* Everything kept so far stops being served. Under mu. */
static void invalidate_all(struct api_cache *c)
{
	c->floor = ++c->seq;
	/* Every remembered invalidation is now at or below floor. */
	deps_clear(c);
}

static void invalidate(struct api_cache *c, const char *name)
{
	uint64_t h = hash_str(name);
	struct dep *d;
	size_t len = strlen(name);

	pthread_mutex_lock(&c->mu);
	d = dep_find(c, name, h);
	if (d != NULL) {
		d->seq = ++c->seq;
	} else if (c->ndeps >= c->lim.max_deps || (d = malloc(sizeof(*d) + len + 1)) == NULL) {
		/* No room to remember it: forget everything instead. */
		invalidate_all(c);
	} else {
		d->hash = h;
		d->seq = ++c->seq;
		memcpy(d->name, name, len + 1);
		d->hnext = c->dbuckets[h & (c->ndbuckets - 1)];
		c->dbuckets[h & (c->ndbuckets - 1)] = d;
		c->ndeps++;
	}
	pthread_mutex_unlock(&c->mu);
}

void api_cache_changed(struct api_cache *c, const char *org, const char *campaign, bool listed)
{
	char dep[DL_ID_MAX + 3];

	if (c == NULL)
		return;
	if (listed) {
		snprintf(dep, sizeof(dep), "o:%s", org);
		invalidate(c, dep);
	}
	snprintf(dep, sizeof(dep), "c:%s", campaign);
	invalidate(c, dep);
}

int api_cache_notify(struct api_cache *c, const char *payload)
{
	const char *sp1 = strchr(payload, ' '), *sp2 = sp1 ? strchr(sp1 + 1, ' ') : NULL;
	char org[DL_ID_MAX], campaign[DL_ID_MAX];
	size_t norg, ncamp;

	if (sp2 == NULL || (sp2[1] != 'l' && sp2[1] != 'p') || sp2[2] != '\0')
		goto bad;
	norg = (size_t)(sp1 - payload);
	ncamp = (size_t)(sp2 - sp1 - 1);
	if (norg == 0 || norg >= sizeof(org) || ncamp == 0 || ncamp >= sizeof(campaign))
		goto bad;
	memcpy(org, payload, norg);
	org[norg] = '\0';
	memcpy(campaign, sp1 + 1, ncamp);
	campaign[ncamp] = '\0';
	api_cache_changed(c, org, campaign, sp2[1] == 'l');
	return 0;
bad:
	/* Something changed that cannot be named: nothing kept is trusted. */
	pthread_mutex_lock(&c->mu);
	invalidate_all(c);
	pthread_mutex_unlock(&c->mu);
	return -EINVAL;
}

void api_cache_set_listening(struct api_cache *c, bool on)
{
	pthread_mutex_lock(&c->mu);
	c->listening = on;
	if (on)
		invalidate_all(c);
	pthread_mutex_unlock(&c->mu);
}

/* True when e may be served at now_ms. Under mu. */
static bool entry_fresh(struct api_cache *c, const struct entry *e, int64_t now_ms)
{
	return c->listening && e->fill_seq > c->floor && now_ms - e->filled_ms < c->lim.max_age_ms &&
	       e->fill_seq > dep_seq(c, e->dep);
}

static struct entry *entry_find(struct api_cache *c, const char *key, uint64_t h)
{
	for (struct entry *e = c->buckets[h & (c->nbuckets - 1)]; e != NULL; e = e->hnext)
		if (e->hash == h && !strcmp(e->key, key))
			return e;
	return NULL;
}

bool api_cache_get(struct api_cache *c, const char *key, int64_t now_ms, struct api_cache_blob **hit,
		   uint64_t *token)
{
	uint64_t h = hash_str(key);
	struct entry *e;
	bool found = false;

	pthread_mutex_lock(&c->mu);
	e = entry_find(c, key, h);
	if (e != NULL && entry_fresh(c, e, now_ms)) {
		atomic_fetch_add(&e->blob->refs, 1);
		*hit = e->blob;
		found = true;
	} else {
		if (e != NULL)
			entry_drop(c, e);
		*token = c->listening ? ++c->seq : 0;
	}
	pthread_mutex_unlock(&c->mu);
	return found;
}

void api_cache_put(struct api_cache *c, const char *key, const char *dep, uint64_t token, int64_t read_ms,
		   const char *body, size_t len)
{
	size_t klen = strlen(key), dlen = strlen(dep), cost;
	uint64_t h = hash_str(key);
	struct api_cache_blob *b;
	struct entry *e, *old;

	if (token == 0 || len > c->lim.max_body)
		return;
	cost = sizeof(*e) + klen + dlen + 2 + sizeof(*b) + len;
	if (cost > c->lim.max_bytes)
		return;
	/* Copied before the lock, so that it is held only to link. */
	b = malloc(sizeof(*b) + len);
	e = malloc(sizeof(*e) + klen + dlen + 2);
	if (b == NULL || e == NULL) {
		free(b);
		free(e);
		return;
	}
	atomic_init(&b->refs, 1);
	b->len = len;
	memcpy(b->data, body, len);
	memcpy(e->key, key, klen + 1);
	memcpy(e->key + klen + 1, dep, dlen + 1);
	e->dep = e->key + klen + 1;
	e->hash = h;
	e->fill_seq = token;
	e->filled_ms = read_ms;
	e->cost = cost;
	e->blob = b;

	pthread_mutex_lock(&c->mu);
	/* A change announced since the read took its token: it may be stale. */
	if (!c->listening || token <= c->floor || token <= dep_seq(c, e->dep))
		goto discard;
	old = entry_find(c, key, h);
	if (old != NULL) {
		if (old->fill_seq >= token && entry_fresh(c, old, read_ms))
			goto discard; /* a later read already kept its answer */
		entry_drop(c, old);
	}
	while (c->oldest != NULL && (c->n >= c->lim.entries || c->bytes + cost > c->lim.max_bytes))
		entry_drop(c, c->oldest);
	e->hnext = c->buckets[h & (c->nbuckets - 1)];
	c->buckets[h & (c->nbuckets - 1)] = e;
	e->older = c->newest;
	e->newer = NULL;
	if (c->newest)
		c->newest->newer = e;
	else
		c->oldest = e;
	c->newest = e;
	c->n++;
	c->bytes += cost;
	pthread_mutex_unlock(&c->mu);
	return;
discard:
	pthread_mutex_unlock(&c->mu);
	free(b);
	free(e);
}

void api_cache_stats(struct api_cache *c, int *entries, size_t *bytes)
{
	pthread_mutex_lock(&c->mu);
	*entries = c->n;
	*bytes = c->bytes;
	pthread_mutex_unlock(&c->mu);
}

/* ------------------------------------------------------------ requests */

static void count(const char *result)
{
	char labels[32];

	snprintf(labels, sizeof(labels), "result=\"%s\"", result);
	dl_metrics_add("dialer_api_read_cache_total", labels, 1);
}

void api_cache_metrics_register(void)
{
	dl_metrics_register("dialer_api_read_cache_total", "counter",
			    "Campaign reads by how the read cache answered them: hit, miss (the database "
			    "answered), bypass (Cache-Control: no-cache or no-store, or not cacheable).");
	dl_metrics_register("dialer_api_read_cache_listening", "gauge",
			    "1 while the read cache hears of campaign changes (and so serves), else 0.");
	/* Exported before the first request. */
	dl_metrics_add("dialer_api_read_cache_total", "result=\"hit\"", 0);
	dl_metrics_add("dialer_api_read_cache_total", "result=\"miss\"", 0);
	dl_metrics_add("dialer_api_read_cache_total", "result=\"bypass\"", 0);
	dl_metrics_set("dialer_api_read_cache_listening", "", 0);
}

/* True when the client asked for an answer from the database. */
static bool no_cache_asked(struct dl_http_req *req)
{
	const char *cc = dl_http_header(req, "Cache-Control");
	const char *pragma;

	if (cc != NULL)
		return strcasestr(cc, "no-cache") != NULL || strcasestr(cc, "no-store") != NULL;
	pragma = dl_http_header(req, "Pragma");
	return pragma != NULL && strcasestr(pragma, "no-cache") != NULL;
}

/* Appends a query value, its absence and length included, so that no two
 * requests share a key. False when it does not fit. */
static bool key_add(char *key, size_t size, size_t *used, const char *value)
{
	int n = value ? snprintf(key + *used, size - *used, "|%zu:%s", strlen(value), value)
		      : snprintf(key + *used, size - *used, "|-");

	if (n < 0 || (size_t)n >= size - *used)
		return false;
	*used += (size_t)n;
	return true;
}

/* The key of a request and the dependency its answer has. */
static bool make_key(struct api_call *c, enum api_cache_route route, char *key, size_t size, char *dep,
		     size_t depsize)
{
	static const char *const args[] = {"status", "search", "page", "limit"};
	size_t used;
	int n;

	switch (route) {
	case API_CACHE_LIST:
		n = snprintf(key, size, "L|%s", c->org_id);
		if (n < 0 || (size_t)n >= size)
			return false;
		used = (size_t)n;
		for (size_t i = 0; i < DL_ARRAY_LEN(args); i++)
			if (!key_add(key, size, &used, dl_http_query(c->req, args[i])))
				return false;
		snprintf(dep, depsize, "o:%s", c->org_id);
		return true;
	case API_CACHE_GET:
	case API_CACHE_PROGRESS:
		if (c->params[0] == NULL || strlen(c->params[0]) >= DL_ID_MAX)
			return false;
		n = snprintf(key, size, "%c|%s|%s", route == API_CACHE_GET ? 'G' : 'P', c->org_id, c->params[0]);
		if (n < 0 || (size_t)n >= size)
			return false;
		snprintf(dep, depsize, "c:%s", c->params[0]);
		return true;
	case API_CACHE_NONE:
		break;
	}
	return false;
}

void api_cache_serve(struct api_call *c, const struct api_route *route)
{
	struct api_cache *cache = c->api->cache;
	char key[API_CACHE_KEY_MAX], dep[DL_ID_MAX + 3];
	struct api_cache_blob *hit = NULL;
	uint64_t token = 0;
	int64_t read_ms;

	if (cache == NULL)
		return route->fn(c);
	if (no_cache_asked(c->req) || !make_key(c, route->cache, key, sizeof(key), dep, sizeof(dep))) {
		count("bypass");
		return route->fn(c);
	}
	read_ms = dl_mono_ms();
	if (api_cache_get(cache, key, read_ms, &hit, &token)) {
		count("hit");
		dl_http_text(c->resp, 200, "application/json", hit->data, hit->len);
		api_cache_blob_release(hit);
		if (c->resp->body == NULL)
			dl_http_error(c->resp, 500, "out of memory");
		return;
	}
	count("miss");
	route->fn(c);
	if (c->resp->status == 200 && c->resp->body != NULL)
		api_cache_put(cache, key, dep, token, read_ms, c->resp->body, c->resp->body_len);
}

/* ------------------------------------------------------------ listener */

#define LISTEN_BACKOFF_MIN_MS 100
#define LISTEN_BACKOFF_MAX_MS 5000

/* Applies the notifications libpq has read. */
static void drain(struct api_cache *cache, PGconn *db)
{
	PGnotify *note;

	while ((note = PQnotifies(db)) != NULL) {
		if (!strcmp(note->relname, "dialer_campaigns") && api_cache_notify(cache, note->extra) < 0)
			dl_log_kv(DL_WARN, "campaign change notification not understood; read cache cleared",
				  "payload", note->extra, NULL);
		PQfreemem(note);
	}
}

/* Listens on db until its connection is lost or stop is set. */
static void listen_loop(struct api_cache *cache, PGconn *db, volatile int *stop)
{
	struct pollfd pfd = {PQsocket(db), POLLIN, 0};

	drain(cache, db);
	while (!*stop) {
		int rc = poll(&pfd, 1, 250);

		if (rc < 0 && errno != EINTR)
			return;
		/* A terminated backend makes the socket readable: the read fails. */
		if (rc > 0 && !PQconsumeInput(db))
			return;
		if (PQstatus(db) != CONNECTION_OK)
			return;
		drain(cache, db);
	}
}

void *api_cache_thread(void *arg)
{
	struct api_ctx *api = arg;
	volatile int *stop = &api->svc->stop;
	int64_t backoff = LISTEN_BACKOFF_MIN_MS;
	PGconn *db = NULL;

	while (!*stop) {
		if (dl_db_connect_named(api->cfg->db_url, api->cfg->db_connect_timeout_s, "dialer-api-cache", &db) <
			    0 ||
		    dl_db_cmd(db, "LISTEN dialer_campaigns") < 0) {
			PQfinish(db);
			db = NULL;
			dl_sleep_ms(backoff, stop);
			backoff = backoff * 2 > LISTEN_BACKOFF_MAX_MS ? LISTEN_BACKOFF_MAX_MS : backoff * 2;
			continue;
		}
		api_cache_set_listening(api->cache, true);
		dl_metrics_set("dialer_api_read_cache_listening", "", 1);
		dl_log_kv(DL_INFO, "read cache listening for campaign changes", NULL);
		backoff = LISTEN_BACKOFF_MIN_MS;
		listen_loop(api->cache, db, stop);
		api_cache_set_listening(api->cache, false);
		dl_metrics_set("dialer_api_read_cache_listening", "", 0);
		if (!*stop) {
			char msg[256];

			snprintf(msg, sizeof(msg), "%s", PQerrorMessage(db));
			msg[strcspn(msg, "\n")] = '\0';
			dl_log_kv(DL_WARN, "read cache lost its listening connection; reads go to the database",
				  "error", msg, NULL);
		}
		PQfinish(db);
		db = NULL;
	}
	return NULL;
}
