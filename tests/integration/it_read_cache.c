/* The API's read cache of the campaign reads, on an API of its own whose
 * kept answers would stay valid for ten minutes by age: every change these
 * tests see in time can only have been heard through the database's NOTIFY
 * (or made by the API itself). Also the trigger's payloads, read with
 * LISTEN straight from Postgres. */
#include <curl/curl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "it_lib.h"

/* Far longer than any poll below. */
#define MAX_AGE_MS 600000
/* How long a change may take to show through the NOTIFY on a loaded machine. */
#define NOTIFY_DEADLINE_MS 3000

static int private_port;
static pid_t private_pid;
static char base[64];

static void url_of(char *out, size_t len, const char *path)
{
	snprintf(out, len, "%s%s", base, path);
}

static struct it_resp *get(const char *path, const char *key)
{
	char url[1024];

	url_of(url, sizeof(url), path);
	return it_call("GET", url, key, NULL, NULL);
}

static struct it_resp *get_fresh(const char *path, const char *key)
{
	char url[1024];

	url_of(url, sizeof(url), path);
	return it_call("GET", url, key, NULL, "Cache-Control: no-cache", NULL);
}

/* A metric of the private API's /metrics: the value of the first line
 * starting with series, or -1. */
static double metric(const char *series)
{
	char url[128];
	struct it_resp *r;
	double v = -1;
	size_t n = strlen(series);

	snprintf(url, sizeof(url), "%s/metrics", base);
	r = it_call_url("GET", url);
	for (const char *p = r->body; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) {
		if (!strncmp(p, series, n) && p[n] == ' ') {
			v = atof(p + n + 1);
			break;
		}
	}
	it_resp_free(r);
	return v;
}

#define HITS "dialer_api_read_cache_total{result=\"hit\"}"
#define MISSES "dialer_api_read_cache_total{result=\"miss\"}"
#define BYPASSES "dialer_api_read_cache_total{result=\"bypass\"}"
#define LISTENING "dialer_api_read_cache_listening"

static int listening(void *arg)
{
	(void)arg;
	return metric(LISTENING) == 1;
}

struct fixture {
	struct it_org org;
	char audience[64];
};
static void fixture_new(struct fixture *f);
static void campaign_new(struct fixture *f, const char *name, char id[64]);

/* A campaign of its own org whose progress only settle() invalidates. */
static char marker_org[64], marker_key[64], marker_path[128];

static int group_setup(void **state)
{
	char port[16], age[16], db[512];
	const char *admin = it_env("DIALER_DB_URL"), *at = strchr(admin, '@');
	const char *env[] = {
		"DIALER_HTTP_PORT", port, "DIALER_DB_URL", db, "DIALER_API_READ_CACHE_MAX_AGE_MS", age, NULL,
	};

	(void)state;
	curl_global_init(CURL_GLOBAL_DEFAULT);
	if (at == NULL)
		return -1;
	private_port = it_free_port();
	snprintf(port, sizeof(port), "%d", private_port);
	snprintf(base, sizeof(base), "http://127.0.0.1:%d", private_port);
	snprintf(age, sizeof(age), "%d", MAX_AGE_MS);
	/* The API's own least-privileged role, as services.sh gives it. */
	snprintf(db, sizeof(db), "postgresql://dialer_api:dialer_api%s", at);
	private_pid = it_spawn("dialer-api", "read-cache", env);
	if (private_pid <= 0 || !it_api_ready(private_port, 20000) || !it_poll(listening, NULL, 10000))
		return -1;
	{
		struct fixture m;
		char id[64];

		fixture_new(&m);
		campaign_new(&m, "Marker", id);
		snprintf(marker_org, sizeof(marker_org), "%s", m.org.id);
		snprintf(marker_key, sizeof(marker_key), "%s", m.org.key);
		snprintf(marker_path, sizeof(marker_path), "/v1/campaigns/%s/progress", id);
	}
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	if (private_pid > 0)
		it_stop_pid(private_pid);
	return 0;
}

static void fixture_new(struct fixture *f)
{
	char url[256];
	struct it_resp *r;

	it_org_new(&f->org, 1000);
	url_of(url, sizeof(url), "/v1/audiences");
	r = it_call("POST", url, f->org.key, "{\"name\":\"Pune\"}", NULL);
	it_expect(r, 201);
	snprintf(f->audience, sizeof(f->audience), "%s", it_str(r, "id"));
	it_resp_free(r);
}

/* Creates a DRAFT campaign through the private API; writes its id. */
static void campaign_new(struct fixture *f, const char *name, char id[64])
{
	char url[256];
	struct it_resp *r;

	url_of(url, sizeof(url), "/v1/campaigns");
	r = it_callf("POST", url, f->org.key, "{\"name\":\"%s\",\"flowId\":\"%s\",\"audienceId\":\"%s\"}", name,
		     f->org.flow_id, f->audience);
	it_expect(r, 201);
	snprintf(id, 64, "%s", it_str(r, "id"));
	it_resp_free(r);
}

/* Runs sql (parameter $1: a campaign id) as the database's owner, as the
 * scheduler and the workers change campaigns: outside the API. */
static void db_change(const char *sql, const char *campaign)
{
	const char *params[1] = {campaign};
	PGresult *r = PQexecParams(it_db(), sql, 1, NULL, params, NULL, NULL, 0);

	if (PQresultStatus(r) != PGRES_COMMAND_OK)
		fail_msg("%s: %s", sql, PQerrorMessage(it_db()));
	assert_string_equal(PQcmdTuples(r), "1");
	PQclear(r);
}

/* True when body of a list names campaign id. */
static bool list_has(const struct it_resp *r, const char *id)
{
	json_t *data = json_object_get(r->json, "data"), *item;
	size_t i;

	json_array_foreach(data, i, item) {
		if (!strcmp(json_string_value(json_object_get(item, "id")), id))
			return true;
	}
	return false;
}

/* True when a GET of path was answered from the cache. */
static bool get_was_hit(const char *path, const char *key)
{
	double before = metric(HITS);
	struct it_resp *r = get(path, key);
	bool hit = r->status == 200 && metric(HITS) > before;

	it_resp_free(r);
	return hit;
}

static int marker_kept(void *arg)
{
	(void)arg;
	return get_was_hit(marker_path, marker_key);
}

static int marker_dropped(void *arg)
{
	(void)arg;
	return !get_was_hit(marker_path, marker_key);
}

/* Returns once the API has heard every campaign change committed so far (the
 * late NOTIFY of its own writes included, which drops what was kept since):
 * notifications arrive in commit order, so once a marker sent now has
 * dropped the marker campaign's kept progress, all before it were heard. */
static void settle(void)
{
	char payload[160];
	const char *params[1] = {payload};
	PGresult *r;

	assert_true(it_poll(marker_kept, NULL, 5000));
	snprintf(payload, sizeof(payload), "%s %.*s p", marker_org,
		 (int)(strrchr(marker_path, '/') - marker_path - strlen("/v1/campaigns/")),
		 marker_path + strlen("/v1/campaigns/"));
	r = PQexecParams(it_db(), "SELECT pg_notify('dialer_campaigns', $1)", 1, NULL, params, NULL, NULL, 0);
	assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
	PQclear(r);
	assert_true(it_poll(marker_dropped, NULL, NOTIFY_DEADLINE_MS));
}

/* ------------------------------------------------------------ the trigger */

/* The notifications the test's own connection has received, joined by '|'. */
static void notes_read(char *out, size_t len)
{
	PGnotify *n;

	out[0] = '\0';
	PQconsumeInput(it_db());
	while ((n = PQnotifies(it_db())) != NULL) {
		if (!strcmp(n->relname, "dialer_campaigns"))
			snprintf(out + strlen(out), len - strlen(out), "%s%s", out[0] ? "|" : "", n->extra);
		PQfreemem(n);
	}
}

/* Each change of a campaign row, made the scheduler's way, announces what
 * it changed: 'l' when the list or the campaign shows it, 'p' when only the
 * progress may, nothing when nothing changed. */
static void test_trigger_payloads(void **state)
{
	static const struct {
		const char *sql;
		char kind; /* 0: no notification */
	} cases[] = {
		{"UPDATE campaigns SET total = total + 5, pending = pending + 5 WHERE id = $1", 'p'},
		{"UPDATE campaigns SET next_dial_at = now() WHERE id = $1", 'p'},
		{"UPDATE campaigns SET name = name || ' (2)' WHERE id = $1", 'l'},
		{"UPDATE campaigns SET status = 'PAUSED', pause_reason = 'quota_exhausted' WHERE id = $1", 'l'},
		{"UPDATE campaigns SET completed_at = now(), completed = completed + 1 WHERE id = $1", 'l'},
		{"UPDATE campaigns SET name = name, total = total WHERE id = $1", 0},
		{"DELETE FROM campaigns WHERE id = $1", 'l'},
	};
	struct fixture f;
	char id[64], got[512], want[256];
	PGresult *r;

	(void)state;
	fixture_new(&f);
	campaign_new(&f, "Trigger", id);
	/* Its snapshot counted as done: once the cases below pause it, the
	 * running scheduler would otherwise copy its audience and announce
	 * that change ('p') among the cases' own. */
	db_change("UPDATE campaigns SET snapshot_done = true WHERE id = $1", id);
	r = PQexec(it_db(), "LISTEN dialer_campaigns");
	assert_int_equal(PQresultStatus(r), PGRES_COMMAND_OK);
	PQclear(r);
	notes_read(got, sizeof(got));
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		db_change(cases[i].sql, id);
		/* A session hears its own notifications with its command's result. */
		notes_read(got, sizeof(got));
		if (cases[i].kind)
			snprintf(want, sizeof(want), "%s %s %c", f.org.id, id, cases[i].kind);
		else
			want[0] = '\0';
		if (strcmp(got, want) != 0)
			fail_msg("%s: notified '%s', want '%s'", cases[i].sql, got, want);
	}
	r = PQexec(it_db(), "UNLISTEN dialer_campaigns");
	PQclear(r);
}

/* ------------------------------------------------------------ the cache */

/* (a) A list, kept; a campaign created through the API shows in the very
 * next list, and its rename and deletion in the very next reads. */
static void test_own_writes_show_at_once(void **state)
{
	struct fixture f;
	char id[64], url[256], path[128];
	struct it_resp *r;
	double hits;

	(void)state;
	fixture_new(&f);
	r = get("/v1/campaigns", f.org.key);
	it_expect(r, 200);
	assert_int_equal(it_int(r, "total"), 0);
	it_resp_free(r);
	hits = metric(HITS);
	r = get("/v1/campaigns", f.org.key);
	it_expect(r, 200);
	it_resp_free(r);
	assert_true(metric(HITS) == hits + 1); /* kept: the next one could be stale */

	campaign_new(&f, "Own write", id);
	r = get("/v1/campaigns", f.org.key);
	it_expect(r, 200);
	assert_int_equal(it_int(r, "total"), 1);
	assert_true(list_has(r, id));
	it_resp_free(r);

	snprintf(path, sizeof(path), "/v1/campaigns/%s", id);
	r = get(path, f.org.key);
	it_expect(r, 200);
	it_resp_free(r);
	url_of(url, sizeof(url), path);
	r = it_call("PATCH", url, f.org.key, "{\"name\":\"Renamed\"}", NULL);
	it_expect(r, 200);
	it_resp_free(r);
	r = get(path, f.org.key);
	it_expect(r, 200);
	assert_string_equal(it_str(r, "name"), "Renamed");
	it_resp_free(r);
	r = get("/v1/campaigns?search=renamed", f.org.key);
	it_expect(r, 200);
	assert_true(list_has(r, id));
	it_resp_free(r);

	r = it_call("DELETE", url, f.org.key, NULL, NULL);
	it_expect(r, 204);
	it_resp_free(r);
	r = get(path, f.org.key);
	it_expect(r, 404);
	it_resp_free(r);
	r = get("/v1/campaigns", f.org.key);
	it_expect(r, 200);
	assert_int_equal(it_int(r, "total"), 0);
	it_resp_free(r);
}

struct progress_wait {
	const char *path;
	const char *key;
	long long total;
	const char *status;
};

static int progress_shows(void *arg)
{
	struct progress_wait *w = arg;
	struct it_resp *r = get(w->path, w->key);
	int ok = r->status == 200 && it_int(r, "total") == w->total &&
		 (w->status == NULL || !strcmp(it_str(r, "status"), w->status));

	it_resp_free(r);
	return ok;
}

/* (b) The scheduler's changes (counters, then a status) show in kept
 * progress, campaign and list answers well before they could age out. */
static void test_database_changes_show(void **state)
{
	struct fixture f;
	char id[64], path[128], one[128];
	struct progress_wait w;
	struct it_resp *r;
	double hits;

	(void)state;
	fixture_new(&f);
	campaign_new(&f, "Scheduler's", id);
	settle();
	snprintf(path, sizeof(path), "/v1/campaigns/%s/progress", id);
	snprintf(one, sizeof(one), "/v1/campaigns/%s", id);
	r = get(path, f.org.key);
	it_expect(r, 200);
	assert_int_equal(it_int(r, "total"), 0);
	it_resp_free(r);
	r = get("/v1/campaigns?status=PAUSED", f.org.key);
	it_expect(r, 200);
	assert_false(list_has(r, id));
	it_resp_free(r);
	r = get(one, f.org.key);
	it_expect(r, 200);
	it_resp_free(r);
	hits = metric(HITS);
	r = get(path, f.org.key);
	it_expect(r, 200);
	it_resp_free(r);
	assert_true(metric(HITS) == hits + 1);

	db_change("UPDATE campaigns SET total = total + 7, pending = pending + 7 WHERE id = $1", id);
	w = (struct progress_wait){path, f.org.key, 7, "DRAFT"};
	assert_true(it_poll(progress_shows, &w, NOTIFY_DEADLINE_MS));

	db_change("UPDATE campaigns SET status = 'PAUSED', pause_reason = 'quota_exhausted' WHERE id = $1", id);
	w.status = "PAUSED";
	assert_true(it_poll(progress_shows, &w, NOTIFY_DEADLINE_MS));
	/* The same notification dropped the campaign and the organization's lists. */
	r = get(one, f.org.key);
	it_expect(r, 200);
	assert_string_equal(it_str(r, "status"), "PAUSED");
	assert_string_equal(it_str(r, "pauseReason"), "quota_exhausted");
	it_resp_free(r);
	r = get("/v1/campaigns?status=PAUSED", f.org.key);
	it_expect(r, 200);
	assert_true(list_has(r, id));
	it_resp_free(r);
}

static int listener_gone(void *arg)
{
	(void)arg;
	/* Either the API noticed and is reconnecting, or it has a new backend. */
	return metric(LISTENING) == 0 ||
	       it_db_count("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'dialer-api-cache'"
			   " AND NOT (pid = ANY($1::int[]))",
			   (const char *)arg, NULL) > 0;
}

struct hit_wait {
	const char *path, *key;
};

static int hits_again(void *arg)
{
	struct hit_wait *w = arg;
	double before = metric(HITS);
	struct it_resp *r = get(w->path, w->key);
	int ok = r->status == 200 && metric(HITS) > before;

	it_resp_free(r);
	return ok;
}

/* (c) The listener's session is terminated: once the API has noticed (the
 * socket closes at once; it is in the milliseconds documented), a change
 * made then shows in the very next read, whether the API has reconnected
 * yet or not; after the reconnect, answers are kept and served again. */
static void test_listener_loss(void **state)
{
	struct fixture f;
	char id[64], path[128], pids[256];
	PGconn *admin;
	PGresult *r;
	struct it_resp *resp;
	struct hit_wait hw;
	double hits;

	(void)state;
	fixture_new(&f);
	campaign_new(&f, "Listener", id);
	settle();
	snprintf(path, sizeof(path), "/v1/campaigns/%s/progress", id);
	resp = get(path, f.org.key);
	it_resp_free(resp);
	hits = metric(HITS);
	resp = get(path, f.org.key);
	it_resp_free(resp);
	assert_true(metric(HITS) == hits + 1);

	admin = PQconnectdb(it_env("DIALER_DB_ADMIN_URL"));
	assert_int_equal(PQstatus(admin), CONNECTION_OK);
	r = PQexec(admin, "SELECT '{' || coalesce(string_agg(pid::text, ','), '') || '}',"
			  " bool_and(pg_terminate_backend(pid, 5000)) FROM pg_stat_activity"
			  " WHERE application_name = 'dialer-api-cache'");
	assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
	assert_string_equal(PQgetvalue(r, 0, 1), "t");
	snprintf(pids, sizeof(pids), "%s", PQgetvalue(r, 0, 0));
	PQclear(r);
	PQfinish(admin);
	assert_true(it_poll(listener_gone, pids, 5000));

	db_change("UPDATE campaigns SET total = total + 3, completed = completed + 3 WHERE id = $1", id);
	resp = get(path, f.org.key);
	it_expect(resp, 200);
	assert_int_equal(it_int(resp, "total"), 3);
	assert_int_equal(it_int(resp, "completed"), 3);
	it_resp_free(resp);

	assert_true(it_poll(listening, NULL, 10000));
	hw = (struct hit_wait){path, f.org.key};
	assert_true(it_poll(hits_again, &hw, 5000));
	resp = get(path, f.org.key);
	assert_int_equal(it_int(resp, "total"), 3);
	it_resp_free(resp);
	/* And what it hears after the reconnect drops answers again. */
	db_change("UPDATE campaigns SET total = total + 1 WHERE id = $1", id);
	{
		struct progress_wait w = {path, f.org.key, 4, NULL};

		assert_true(it_poll(progress_shows, &w, NOTIFY_DEADLINE_MS));
	}
}

/* (d) Cache-Control: no-cache is neither served from the cache nor kept. */
static void test_no_cache_bypasses(void **state)
{
	struct fixture f;
	char id[64], path[128];
	struct it_resp *r;
	double hits, misses, bypasses;

	(void)state;
	fixture_new(&f);
	campaign_new(&f, "Bypass", id);
	settle();
	snprintf(path, sizeof(path), "/v1/campaigns/%s/progress", id);
	hits = metric(HITS);
	misses = metric(MISSES);
	bypasses = metric(BYPASSES);
	r = get_fresh(path, f.org.key);
	it_expect(r, 200);
	it_resp_free(r);
	assert_true(metric(BYPASSES) == bypasses + 1);
	assert_true(metric(HITS) == hits && metric(MISSES) == misses);
	/* Not kept: the next plain read goes to the database, the one after not. */
	r = get(path, f.org.key);
	it_resp_free(r);
	assert_true(metric(MISSES) == misses + 1 && metric(HITS) == hits);
	r = get(path, f.org.key);
	it_resp_free(r);
	assert_true(metric(HITS) == hits + 1);
	/* Kept, yet no-cache reads the database. */
	r = get_fresh(path, f.org.key);
	it_expect(r, 200);
	assert_int_equal(it_int(r, "total"), 0);
	it_resp_free(r);
	assert_true(metric(HITS) == hits + 1 && metric(BYPASSES) == bypasses + 2);
}

/* (e) An answer from the cache is the database's answer, byte for byte and
 * header for header (but the request id and the date); checks, keys and
 * validation still come first. */
static void test_cached_answer_identical(void **state)
{
	static const char *const headers[] = {"Content-Type", "Content-Length", "Cache-Control", "ETag"};
	struct fixture f;
	char id[64], paths[4][160];
	struct it_resp *r;

	(void)state;
	fixture_new(&f);
	campaign_new(&f, "Identical", id);
	settle();
	snprintf(paths[0], sizeof(paths[0]), "/v1/campaigns");
	snprintf(paths[1], sizeof(paths[1]), "/v1/campaigns?status=DRAFT&search=iden&page=1&limit=5");
	snprintf(paths[2], sizeof(paths[2]), "/v1/campaigns/%s", id);
	snprintf(paths[3], sizeof(paths[3]), "/v1/campaigns/%s/progress", id);
	for (int i = 0; i < 4; i++) {
		struct it_resp *fresh, *kept;
		double hits;

		r = get(paths[i], f.org.key);
		it_expect(r, 200);
		it_resp_free(r);
		hits = metric(HITS);
		kept = get(paths[i], f.org.key);
		assert_true(metric(HITS) == hits + 1);
		fresh = get_fresh(paths[i], f.org.key);
		assert_int_equal(kept->status, fresh->status);
		assert_string_equal(kept->body, fresh->body);
		for (size_t h = 0; h < sizeof(headers) / sizeof(headers[0]); h++) {
			char a[256], b[256];
			const char *va = it_header(kept, headers[h], a, sizeof(a));
			const char *vb = it_header(fresh, headers[h], b, sizeof(b));

			if ((va == NULL) != (vb == NULL) || (va && strcmp(va, vb) != 0))
				fail_msg("%s: header %s differs: '%s' vs '%s'", paths[i], headers[h], va ? va : "(none)",
					 vb ? vb : "(none)");
		}
		it_resp_free(kept);
		it_resp_free(fresh);
	}
	/* A kept list is no answer to a request without a key, or a bad one. */
	r = get("/v1/campaigns", NULL);
	it_expect(r, 401);
	it_resp_free(r);
	r = get("/v1/campaigns", "sk_live_not_a_key_at_all");
	it_expect(r, 401);
	it_resp_free(r);
	r = get("/v1/campaigns?status=BOGUS", f.org.key);
	it_expect(r, 400);
	it_resp_free(r);
	r = get("/v1/campaigns?limit=0", f.org.key);
	it_expect(r, 400);
	it_resp_free(r);
	/* Another organization's key does not see this one's campaign. */
	{
		struct fixture g;

		fixture_new(&g);
		r = get(paths[3], g.org.key);
		it_expect(r, 404);
		it_resp_free(r);
		r = get("/v1/campaigns", g.org.key);
		it_expect(r, 200);
		assert_int_equal(it_int(r, "total"), 0);
		it_resp_free(r);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_trigger_payloads),
		cmocka_unit_test(test_own_writes_show_at_once),
		cmocka_unit_test(test_database_changes_show),
		cmocka_unit_test(test_listener_loss),
		cmocka_unit_test(test_no_cache_bypasses),
		cmocka_unit_test(test_cached_answer_identical),
	};

	srandom((unsigned)time(NULL) ^ (unsigned)getpid());
	return cmocka_run_group_tests_name("it_read_cache", tests, group_setup, group_teardown);
}
