/* Unit tests of the read cache's validity rules (api_cache.c): sequence
 * numbers, floor, dependencies, age and the caps. Each case is a script of
 * steps run against a new cache. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"

enum op {
	END,
	LISTEN,   /* arg "1" or "0" */
	GET,      /* key at now: expect hit (body arg) or miss; a miss's token goes to slot */
	PUT,      /* key, dep, the token of slot, body arg, read at now */
	NOTIFY,   /* payload arg; expect 0 for accepted, 1 for refused */
	CHANGED,  /* the API's own write: arg "org campaign" (listed) */
	COUNT,    /* expect entries kept */
};

struct step {
	enum op op;
	const char *key, *dep, *arg;
	int slot;
	int64_t now;
	int expect; /* GET: 1 hit, 0 miss with a token, -1 miss without a token */
};

struct script {
	const char *name;
	struct api_cache_limits lim;
	struct step steps[24];
};

#define LIM(e, body, bytes, deps) {e, 5000, body, bytes, deps}
#define STD LIM(16, 1024, 1 << 20, 64)

static const struct script scripts[] = {
	{"nothing is served or kept before the listener is up", STD, {
		{GET, "P|o1|c1", 0, 0, 0, 0, -1},
		{PUT, "P|o1|c1", "c:c1", "x", 0, 0, 0},
		{COUNT, 0, 0, 0, 0, 0, 0},
		{LISTEN, 0, 0, "1", 0, 0, 0},
		{GET, "P|o1|c1", 0, 0, 0, 0, 0},
		{PUT, "P|o1|c1", "c:c1", "x", 0, 0, 0},
		{GET, "P|o1|c1", 0, "x", 0, 1, 1},
		{END, 0, 0, 0, 0, 0, 0}}},
	{"a read that raced a change is not kept", STD, {
		{LISTEN, 0, 0, "1", 0, 0, 0},
		{GET, "P|o1|c1", 0, 0, 0, 0, 0},
		{NOTIFY, 0, 0, "o1 c1 p", 0, 0, 0},
		{PUT, "P|o1|c1", "c:c1", "old", 0, 0, 0},
		{GET, "P|o1|c1", 0, 0, 1, 1, 0},
		{PUT, "P|o1|c1", "c:c1", "new", 1, 1, 0},
		{GET, "P|o1|c1", 0, "new", 0, 2, 1},
		{END, 0, 0, 0, 0, 0, 0}}},
	{"'p' drops the campaign's answers, 'l' its organization's lists too", STD, {
		{LISTEN, 0, 0, "1", 0, 0, 0},
		{GET, "P|o1|c1", 0, 0, 0, 0, 0},
		{PUT, "P|o1|c1", "c:c1", "p1", 0, 0, 0},
		{GET, "L|o1|-|-|-|-", 0, 0, 1, 0, 0},
		{PUT, "L|o1|-|-|-|-", "o:o1", "l1", 1, 0, 0},
		{GET, "L|o2|-|-|-|-", 0, 0, 2, 0, 0},
		{PUT, "L|o2|-|-|-|-", "o:o2", "l2", 2, 0, 0},
		{NOTIFY, 0, 0, "o1 c1 p", 0, 0, 0},
		{GET, "P|o1|c1", 0, 0, 3, 1, 0},
		{GET, "L|o1|-|-|-|-", 0, "l1", 0, 1, 1},
		{NOTIFY, 0, 0, "o1 c9 l", 0, 0, 0},
		{GET, "L|o1|-|-|-|-", 0, 0, 3, 1, 0},
		{GET, "L|o2|-|-|-|-", 0, "l2", 0, 1, 1},
		{CHANGED, 0, 0, "o2 c5", 0, 0, 0},
		{GET, "L|o2|-|-|-|-", 0, 0, 3, 1, 0},
		{END, 0, 0, 0, 0, 0, 0}}},
	{"an answer is served until its maximum age", STD, {
		{LISTEN, 0, 0, "1", 0, 0, 0},
		{GET, "G|o1|c1", 0, 0, 0, 1000, 0},
		{PUT, "G|o1|c1", "c:c1", "g", 0, 1000, 0},
		{GET, "G|o1|c1", 0, "g", 0, 5999, 1},
		{GET, "G|o1|c1", 0, 0, 0, 6000, 0},
		{END, 0, 0, 0, 0, 0, 0}}},
	{"a lost listener serves nothing; its reconnect drops everything", STD, {
		{LISTEN, 0, 0, "1", 0, 0, 0},
		{GET, "G|o1|c1", 0, 0, 0, 0, 0},
		{PUT, "G|o1|c1", "c:c1", "g", 0, 0, 0},
		{GET, "G|o1|c2", 0, 0, 1, 0, 0},
		{LISTEN, 0, 0, "0", 0, 0, 0},
		{GET, "G|o1|c1", 0, 0, 2, 0, -1},
		{PUT, "G|o1|c2", "c:c2", "g2", 1, 0, 0},
		{LISTEN, 0, 0, "1", 0, 0, 0},
		{GET, "G|o1|c2", 0, 0, 2, 0, 0},
		{COUNT, 0, 0, 0, 0, 0, 0},
		{END, 0, 0, 0, 0, 0, 0}}},
	{"a payload that cannot be read drops everything", STD, {
		{LISTEN, 0, 0, "1", 0, 0, 0},
		{GET, "G|o1|c1", 0, 0, 0, 0, 0},
		{PUT, "G|o1|c1", "c:c1", "g", 0, 0, 0},
		{NOTIFY, 0, 0, "o1 c1 x", 0, 0, 1},
		{GET, "G|o1|c1", 0, 0, 0, 0, 0},
		{PUT, "G|o1|c1", "c:c1", "g", 0, 0, 0},
		{NOTIFY, 0, 0, "o1c1l", 0, 0, 1},
		{GET, "G|o1|c1", 0, 0, 0, 0, 0},
		{PUT, "G|o1|c1", "c:c1", "g", 0, 0, 0},
		{NOTIFY, 0, 0, " c1 l", 0, 0, 1},
		{GET, "G|o1|c1", 0, 0, 0, 0, 0},
		{END, 0, 0, 0, 0, 0, 0}}},
	{"a full dependency map drops everything once and starts again", LIM(16, 1024, 1 << 20, 2), {
		{LISTEN, 0, 0, "1", 0, 0, 0},
		{GET, "G|o1|z", 0, 0, 0, 0, 0},
		{PUT, "G|o1|z", "c:z", "z", 0, 0, 0},
		{NOTIFY, 0, 0, "o1 a p", 0, 0, 0},
		{NOTIFY, 0, 0, "o1 b p", 0, 0, 0},
		{GET, "G|o1|z", 0, "z", 0, 0, 1},
		{NOTIFY, 0, 0, "o1 c p", 0, 0, 0},
		{GET, "G|o1|z", 0, 0, 0, 0, 0},
		{PUT, "G|o1|z", "c:z", "z2", 0, 0, 0},
		{NOTIFY, 0, 0, "o1 d p", 0, 0, 0},
		{GET, "G|o1|z", 0, "z2", 0, 0, 1},
		{END, 0, 0, 0, 0, 0, 0}}},
	{"the oldest answer makes room for a new one", LIM(2, 1024, 1 << 20, 64), {
		{LISTEN, 0, 0, "1", 0, 0, 0},
		{GET, "G|o1|c1", 0, 0, 0, 0, 0},
		{PUT, "G|o1|c1", "c:c1", "1", 0, 0, 0},
		{GET, "G|o1|c2", 0, 0, 1, 0, 0},
		{PUT, "G|o1|c2", "c:c2", "2", 1, 0, 0},
		{GET, "G|o1|c3", 0, 0, 2, 0, 0},
		{PUT, "G|o1|c3", "c:c3", "3", 2, 0, 0},
		{COUNT, 0, 0, 0, 0, 0, 2},
		{GET, "G|o1|c2", 0, "2", 0, 0, 1},
		{GET, "G|o1|c3", 0, "3", 0, 0, 1},
		{GET, "G|o1|c1", 0, 0, 0, 0, 0},
		{END, 0, 0, 0, 0, 0, 0}}},
	{"an answer over the body cap is not kept", LIM(16, 4, 1 << 20, 64), {
		{LISTEN, 0, 0, "1", 0, 0, 0},
		{GET, "G|o1|c1", 0, 0, 0, 0, 0},
		{PUT, "G|o1|c1", "c:c1", "12345", 0, 0, 0},
		{COUNT, 0, 0, 0, 0, 0, 0},
		{PUT, "G|o1|c1", "c:c1", "1234", 0, 0, 0},
		{COUNT, 0, 0, 0, 0, 0, 1},
		{END, 0, 0, 0, 0, 0, 0}}},
	{"the byte cap evicts the oldest", LIM(16, 1024, 300, 64), {
		{LISTEN, 0, 0, "1", 0, 0, 0},
		{GET, "G|o1|c1", 0, 0, 0, 0, 0},
		{PUT, "G|o1|c1", "c:c1", "a", 0, 0, 0},
		{GET, "G|o1|c2", 0, 0, 1, 0, 0},
		{PUT, "G|o1|c2", "c:c2", "b", 1, 0, 0},
		{GET, "G|o1|c3", 0, 0, 2, 0, 0},
		{PUT, "G|o1|c3", "c:c3", "c", 2, 0, 0},
		{GET, "G|o1|c3", 0, "c", 0, 0, 1},
		{GET, "G|o1|c1", 0, 0, 0, 0, 0},
		{END, 0, 0, 0, 0, 0, 0}}},
	{"an earlier read does not replace a later one's answer", STD, {
		{LISTEN, 0, 0, "1", 0, 0, 0},
		{GET, "G|o1|c1", 0, 0, 0, 0, 0},
		{GET, "G|o1|c1", 0, 0, 1, 0, 0},
		{PUT, "G|o1|c1", "c:c1", "later", 1, 0, 0},
		{PUT, "G|o1|c1", "c:c1", "earlier", 0, 0, 0},
		{GET, "G|o1|c1", 0, "later", 0, 0, 1},
		{END, 0, 0, 0, 0, 0, 0}}},
};

static void run_script(const struct script *sc)
{
	struct api_cache *c = NULL;
	uint64_t slots[4] = {0};

	assert_int_equal(api_cache_new(&sc->lim, &c), 0);
	for (int i = 0; sc->steps[i].op != END; i++) {
		const struct step *s = &sc->steps[i];
		struct api_cache_blob *hit = NULL;
		uint64_t token = 0;
		char org[32], camp[32];
		int entries;
		size_t bytes, len;
		const char *data;

		switch (s->op) {
		case LISTEN:
			api_cache_set_listening(c, s->arg[0] == '1');
			break;
		case GET:
			if (api_cache_get(c, s->key, s->now, &hit, &token)) {
				if (s->expect != 1)
					fail_msg("%s, step %d: %s served, expected a miss", sc->name, i, s->key);
				data = api_cache_blob_data(hit, &len);
				if (len != strlen(s->arg) || memcmp(data, s->arg, len) != 0)
					fail_msg("%s, step %d: %s served '%.*s', expected '%s'", sc->name, i, s->key,
						 (int)len, data, s->arg);
				api_cache_blob_release(hit);
			} else {
				if (s->expect == 1)
					fail_msg("%s, step %d: %s missed, expected '%s'", sc->name, i, s->key, s->arg);
				if ((s->expect == -1) != (token == 0))
					fail_msg("%s, step %d: token %llu", sc->name, i, (unsigned long long)token);
				slots[s->slot] = token;
			}
			break;
		case PUT:
			api_cache_put(c, s->key, s->dep, slots[s->slot], s->now, s->arg, strlen(s->arg));
			break;
		case NOTIFY:
			if ((api_cache_notify(c, s->arg) < 0) != (s->expect == 1))
				fail_msg("%s, step %d: payload '%s'", sc->name, i, s->arg);
			break;
		case CHANGED:
			assert_int_equal(sscanf(s->arg, "%31s %31s", org, camp), 2);
			api_cache_changed(c, org, camp, true);
			break;
		case COUNT:
			api_cache_stats(c, &entries, &bytes);
			if (entries != s->expect)
				fail_msg("%s, step %d: %d kept, expected %d", sc->name, i, entries, s->expect);
			break;
		case END:
			break;
		}
	}
	api_cache_free(c);
}

static void test_scripts(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(scripts) / sizeof(scripts[0]); i++)
		run_script(&scripts[i]);
}

/* A served answer stays readable after it was dropped from the cache. */
static void test_hit_outlives_eviction(void **state)
{
	struct api_cache_limits lim = STD;
	struct api_cache *c = NULL;
	struct api_cache_blob *hit = NULL;
	uint64_t token = 0;
	const char *data;
	size_t len;

	(void)state;
	assert_int_equal(api_cache_new(&lim, &c), 0);
	api_cache_set_listening(c, true);
	assert_false(api_cache_get(c, "k", 0, &hit, &token));
	api_cache_put(c, "k", "c:x", token, 0, "body", 4);
	assert_true(api_cache_get(c, "k", 0, &hit, &token));
	assert_int_equal(api_cache_notify(c, "o x p"), 0);
	assert_false(api_cache_get(c, "k", 0, &(struct api_cache_blob *){NULL}, &token)); /* dropped */
	data = api_cache_blob_data(hit, &len);
	assert_int_equal(len, 4);
	assert_memory_equal(data, "body", 4);
	api_cache_blob_release(hit);
	api_cache_free(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_scripts),
		cmocka_unit_test(test_hit_outlives_eviction),
	};

	return cmocka_run_group_tests_name("read cache", tests, NULL, NULL);
}
