/* Integration tests of the Campaigns API against the real server and
 * database: every endpoint of the seed, its defaults, codes and shapes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "it_lib.h"

/* An organization with an audience of n contacts, ready for campaigns. */
struct fixture {
	struct it_org org;
	char audience[64];
};

static void fixture_new(struct fixture *f, long quota, int contacts)
{
	struct it_resp *r;

	it_org_new(&f->org, quota);
	r = it_call("POST", "/v1/audiences", f->org.key, "{\"name\":\"Mumbai\"}", NULL);
	it_expect(r, 201);
	snprintf(f->audience, sizeof(f->audience), "%s", it_str(r, "id"));
	it_resp_free(r);
	for (int i = 0; i < contacts; i++) {
		char phone[20], path[128];

		it_phone(phone, i % 10);
		r = it_callf("POST", "/v1/contacts", f->org.key, "{\"phoneNumber\":\"%s\",\"name\":\"C %d\"}",
			     phone, i);
		it_expect(r, 201);
		snprintf(path, sizeof(path), "/v1/audiences/%s/contacts", f->audience);
		{
			struct it_resp *a = it_callf("POST", path, f->org.key, "{\"contactIds\":[\"%s\"]}",
						     it_str(r, "id"));
			it_expect(a, 200);
			it_resp_free(a);
		}
		it_resp_free(r);
	}
}

static struct it_resp *create(struct fixture *f, const char *extra)
{
	return it_callf("POST", "/v1/campaigns", f->org.key,
			"{\"name\":\"Mumbai Outreach - March 2026\",\"flowId\":\"%s\",\"audienceId\":\"%s\"%s%s}",
			f->org.flow_id, f->audience, extra[0] ? "," : "", extra);
}

static char *campaign_id(struct it_resp *r)
{
	return strdup(it_str(r, "id"));
}

static void test_create_defaults(void **state)
{
	struct fixture f;
	struct it_resp *r;
	static const char *const keys[] = {
		"id", "name", "status", "flowId", "audienceId", "callsPerMinute", "maxConcurrentCalls",
		"maxRetries", "retryDelayMinutes", "callTimeoutMinutes", "scheduledAt", "timezone",
		"organizationId", "createdAt", "startedAt", "completedAt",
	};

	(void)state;
	fixture_new(&f, 100, 0);
	r = create(&f, "");
	it_expect(r, 201);
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
		if (json_object_get(r->json, keys[i]) == NULL)
			fail_msg("campaign lacks %s: %s", keys[i], r->body);
	assert_string_equal(it_str(r, "status"), "DRAFT");
	assert_string_equal(it_str(r, "name"), "Mumbai Outreach - March 2026");
	assert_string_equal(it_str(r, "flowId"), f.org.flow_id);
	assert_string_equal(it_str(r, "audienceId"), f.audience);
	assert_string_equal(it_str(r, "organizationId"), f.org.id);
	assert_int_equal(it_int(r, "callsPerMinute"), 10);
	assert_int_equal(it_int(r, "maxConcurrentCalls"), 5);
	assert_int_equal(it_int(r, "maxRetries"), 3);
	assert_int_equal(it_int(r, "retryDelayMinutes"), 5);
	assert_int_equal(it_int(r, "callTimeoutMinutes"), 5);
	assert_true(json_is_null(json_object_get(r->json, "scheduledAt")));
	assert_true(json_is_null(json_object_get(r->json, "timezone")));
	assert_true(json_is_null(json_object_get(r->json, "startedAt")));
	assert_true(json_is_null(json_object_get(r->json, "completedAt")));
	assert_int_equal(strncmp(it_str(r, "id"), "camp_", 5), 0);
	/* createdAt: ISO 8601 UTC with milliseconds. */
	assert_int_equal(strlen(it_str(r, "createdAt")), 24);
	assert_int_equal(it_str(r, "createdAt")[23], 'Z');
	assert_int_equal(it_str(r, "createdAt")[19], '.');
	it_resp_free(r);
}

static void test_create_seed_example(void **state)
{
	struct fixture f;
	struct it_resp *r;

	(void)state;
	fixture_new(&f, 100, 0);
	r = create(&f, "\"callsPerMinute\":10,\"maxConcurrentCalls\":5,\"maxRetries\":2,"
		       "\"scheduledAt\":\"2099-03-15T09:00:00Z\",\"timezone\":\"Asia/Kolkata\"");
	it_expect(r, 201);
	assert_int_equal(it_int(r, "maxRetries"), 2);
	assert_string_equal(it_str(r, "scheduledAt"), "2099-03-15T09:00:00.000Z");
	assert_string_equal(it_str(r, "timezone"), "Asia/Kolkata");
	assert_string_equal(it_str(r, "status"), "DRAFT");
	it_resp_free(r);
}

static void test_create_invalid(void **state)
{
	static const struct {
		const char *extra;
		const char *msg;
	} cases[] = {
		{"\"scheduledAt\":\"2099-03-15T09:00:00Z\"", "timezone is required"},
		{"\"scheduledAt\":\"2001-03-15T09:00:00Z\",\"timezone\":\"UTC\"", "in the future"},
		{"\"scheduledAt\":\"2099-03-15T09:00:00Z\",\"timezone\":\"Nowhere/City\"", "IANA"},
		{"\"callsPerMinute\":0", "callsPerMinute"},
		{"\"callsPerMinute\":6001", "callsPerMinute"},
		{"\"callsPerMinute\":\"10\"", "callsPerMinute"},
		{"\"maxConcurrentCalls\":0", "maxConcurrentCalls"},
		{"\"maxRetries\":11", "maxRetries"},
		{"\"retryDelayMinutes\":-1", "retryDelayMinutes"},
		{"\"callTimeoutMinutes\":61", "callTimeoutMinutes"},
		{"\"status\":\"IN_PROGRESS\"", "unknown field"},
		{"\"name\":\"x\"", "duplicate"},
	};
	struct fixture f;
	long long before;

	(void)state;
	fixture_new(&f, 100, 0);
	before = it_db_count("SELECT count(*) FROM campaigns WHERE organization_id = $1", f.org.id, NULL);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct it_resp *r = create(&f, cases[i].extra);

		it_expect(r, 400);
		if (strstr(it_str(r, "message"), cases[i].msg) == NULL)
			fail_msg("case %zu: message %s lacks %s", i, it_str(r, "message"), cases[i].msg);
		it_resp_free(r);
	}
	/* Missing fields, foreign references, bad bodies. */
	{
		static const char *const bodies[] = {
			"{\"flowId\":\"x\",\"audienceId\":\"y\"}",
			"{\"name\":\"\",\"flowId\":\"x\",\"audienceId\":\"y\"}",
			"{\"name\":\"n\",\"flowId\":\"flow_nope\",\"audienceId\":\"aud_nope\"}",
			"{\"name\":", "[]", "\"text\"", "null", "",
		};
		for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
			struct it_resp *r = it_call("POST", "/v1/campaigns", f.org.key, bodies[i], NULL);

			it_expect(r, 400);
			it_resp_free(r);
		}
	}
	{
		struct it_resp *r = it_call_raw("POST", "/v1/campaigns", f.org.key, "text/plain", "name=x", 6);

		it_expect(r, 415);
		it_resp_free(r);
	}
	assert_int_equal(it_db_count("SELECT count(*) FROM campaigns WHERE organization_id = $1", f.org.id, NULL),
			 before);
}

static void test_get_list_filters(void **state)
{
	struct fixture f;
	struct it_resp *r;
	char *a, *b, path[256];

	(void)state;
	fixture_new(&f, 100, 0);
	r = it_callf("POST", "/v1/campaigns", f.org.key,
		     "{\"name\":\"Alpha Mumbai\",\"flowId\":\"%s\",\"audienceId\":\"%s\"}", f.org.flow_id,
		     f.audience);
	it_expect(r, 201);
	a = campaign_id(r);
	it_resp_free(r);
	r = it_callf("POST", "/v1/campaigns", f.org.key,
		     "{\"name\":\"Beta Delhi\",\"flowId\":\"%s\",\"audienceId\":\"%s\"}", f.org.flow_id,
		     f.audience);
	it_expect(r, 201);
	b = campaign_id(r);
	it_resp_free(r);
	snprintf(path, sizeof(path), "/v1/campaigns/%s/cancel", b);
	r = it_call("POST", path, f.org.key, NULL, NULL);
	it_expect(r, 200);
	it_resp_free(r);

	snprintf(path, sizeof(path), "/v1/campaigns/%s", a);
	r = it_call("GET", path, f.org.key, NULL, NULL);
	it_expect(r, 200);
	assert_string_equal(it_str(r, "name"), "Alpha Mumbai");
	it_resp_free(r);

	r = it_call("GET", "/v1/campaigns", f.org.key, NULL, NULL);
	it_expect(r, 200);
	assert_int_equal(it_int(r, "total"), 2);
	assert_int_equal(it_int(r, "page"), 1);
	assert_int_equal(it_int(r, "limit"), 20);
	assert_int_equal(it_int(r, "totalPages"), 1);
	assert_int_equal(json_array_size(json_object_get(r->json, "data")), 2);
	/* Newest first. */
	assert_string_equal(json_string_value(json_object_get(json_array_get(json_object_get(r->json, "data"), 0),
							      "id")), b);
	it_resp_free(r);

	r = it_call("GET", "/v1/campaigns?status=CANCELLED", f.org.key, NULL, NULL);
	it_expect(r, 200);
	assert_int_equal(it_int(r, "total"), 1);
	it_resp_free(r);
	r = it_call("GET", "/v1/campaigns?status=DRAFT&search=mumbai", f.org.key, NULL, NULL);
	it_expect(r, 200);
	assert_int_equal(it_int(r, "total"), 1);
	assert_string_equal(json_string_value(json_object_get(json_array_get(json_object_get(r->json, "data"), 0),
							      "id")), a);
	it_resp_free(r);
	r = it_call("GET", "/v1/campaigns?search=%25", f.org.key, NULL, NULL);
	it_expect(r, 200);
	assert_int_equal(it_int(r, "total"), 0); /* % is a character, not a wildcard */
	it_resp_free(r);
	r = it_call("GET", "/v1/campaigns?status=RUNNING", f.org.key, NULL, NULL);
	it_expect(r, 400);
	it_resp_free(r);
	r = it_call("GET", "/v1/campaigns?limit=1&page=2", f.org.key, NULL, NULL);
	it_expect(r, 200);
	assert_int_equal(it_int(r, "totalPages"), 2);
	assert_int_equal(json_array_size(json_object_get(r->json, "data")), 1);
	it_resp_free(r);
	r = it_call("GET", "/v1/campaigns?limit=500", f.org.key, NULL, NULL);
	it_expect(r, 200);
	assert_int_equal(it_int(r, "limit"), 100);
	it_resp_free(r);
	r = it_call("GET", "/v1/campaigns?limit=0", f.org.key, NULL, NULL);
	it_expect(r, 400);
	it_resp_free(r);
	r = it_call("GET", "/v1/campaigns?page=zero", f.org.key, NULL, NULL);
	it_expect(r, 400);
	it_resp_free(r);
	r = it_call("GET", "/v1/campaigns/camp_doesnotexist", f.org.key, NULL, NULL);
	it_expect(r, 404);
	it_resp_free(r);
	free(a);
	free(b);
}

static void test_patch_delete(void **state)
{
	struct fixture f;
	struct it_resp *r;
	char *id, path[256], action[256];

	(void)state;
	fixture_new(&f, 100, 0);
	r = create(&f, "");
	id = campaign_id(r);
	it_resp_free(r);
	snprintf(path, sizeof(path), "/v1/campaigns/%s", id);
	r = it_call("PATCH", path, f.org.key, "{\"callsPerMinute\":30,\"name\":\"Renamed\"}", NULL);
	it_expect(r, 200);
	assert_int_equal(it_int(r, "callsPerMinute"), 30);
	assert_string_equal(it_str(r, "name"), "Renamed");
	assert_int_equal(it_int(r, "maxConcurrentCalls"), 5);
	it_resp_free(r);
	r = it_call("PATCH", path, f.org.key, "{\"scheduledAt\":\"2099-01-01T00:00:00Z\"}", NULL);
	it_expect(r, 400); /* timezone required */
	it_resp_free(r);
	r = it_call("PATCH", path, f.org.key, "{\"maxRetries\":99}", NULL);
	it_expect(r, 400);
	it_resp_free(r);
	r = it_call("PATCH", path, f.org.key, "{\"audienceId\":\"aud_nope\"}", NULL);
	it_expect(r, 400);
	it_resp_free(r);
	r = it_call("GET", path, f.org.key, NULL, NULL);
	assert_int_equal(it_int(r, "callsPerMinute"), 30); /* rejected PATCHes changed nothing */
	assert_int_equal(it_int(r, "maxRetries"), 3);
	it_resp_free(r);

	/* Outside DRAFT: PATCH and DELETE are 409 and change nothing. */
	snprintf(action, sizeof(action), "/v1/campaigns/%s/start", id);
	r = it_call("POST", action, f.org.key, NULL, NULL);
	it_expect(r, 200);
	it_resp_free(r);
	r = it_call("PATCH", path, f.org.key, "{\"callsPerMinute\":40}", NULL);
	it_expect(r, 409);
	it_resp_free(r);
	r = it_call("DELETE", path, f.org.key, NULL, NULL);
	it_expect(r, 409);
	it_resp_free(r);
	r = it_call("GET", path, f.org.key, NULL, NULL);
	assert_int_equal(it_int(r, "callsPerMinute"), 30);
	it_resp_free(r);
	free(id);

	/* DELETE in DRAFT. */
	r = create(&f, "");
	id = campaign_id(r);
	it_resp_free(r);
	snprintf(path, sizeof(path), "/v1/campaigns/%s", id);
	r = it_call("DELETE", path, f.org.key, NULL, NULL);
	it_expect(r, 204);
	it_resp_free(r);
	r = it_call("GET", path, f.org.key, NULL, NULL);
	it_expect(r, 404);
	it_resp_free(r);
	r = it_call("DELETE", path, f.org.key, NULL, NULL);
	it_expect(r, 404);
	it_resp_free(r);
	free(id);
}

static struct it_resp *act(struct fixture *f, const char *id, const char *action)
{
	char path[256];

	snprintf(path, sizeof(path), "/v1/campaigns/%s/%s", id, action);
	return it_call("POST", path, f->org.key, NULL, NULL);
}

static void test_lifecycle(void **state)
{
	struct fixture f;
	struct it_resp *r;
	char *id;

	(void)state;
	fixture_new(&f, 100, 0);
	r = create(&f, "");
	id = campaign_id(r);
	it_resp_free(r);

	/* Only start is allowed from DRAFT (and cancel). */
	r = act(&f, id, "pause");
	it_expect(r, 409);
	it_resp_free(r);
	r = act(&f, id, "resume");
	it_expect(r, 409);
	it_resp_free(r);

	r = act(&f, id, "start");
	it_expect(r, 200);
	assert_string_equal(it_str(r, "status"), "IN_PROGRESS");
	assert_string_equal(it_str(r, "id"), id);
	assert_true(json_is_string(json_object_get(r->json, "startedAt")));
	assert_true(json_is_integer(json_object_get(r->json, "callsPerMinute")));
	it_resp_free(r);
	r = act(&f, id, "start");
	it_expect(r, 409);
	it_resp_free(r);

	r = act(&f, id, "pause");
	it_expect(r, 200);
	assert_string_equal(r->body, "{\"status\":\"PAUSED\"}");
	it_resp_free(r);
	r = act(&f, id, "pause");
	it_expect(r, 409);
	it_resp_free(r);
	r = act(&f, id, "resume");
	it_expect(r, 200);
	assert_string_equal(r->body, "{\"status\":\"IN_PROGRESS\"}");
	it_resp_free(r);
	r = act(&f, id, "cancel");
	it_expect(r, 200);
	assert_string_equal(r->body, "{\"status\":\"CANCELLED\"}");
	it_resp_free(r);
	/* Final: nothing more. */
	static const char *const actions[] = {"start", "pause", "resume", "cancel"};
	for (size_t i = 0; i < 4; i++) {
		r = act(&f, id, actions[i]);
		it_expect(r, 409);
		it_resp_free(r);
	}
	r = act(&f, "camp_unknown", "start");
	it_expect(r, 404);
	it_resp_free(r);
	free(id);
}

static void test_scheduled_start(void **state)
{
	struct fixture f;
	struct it_resp *r;
	char *id;

	(void)state;
	fixture_new(&f, 100, 0);
	r = create(&f, "\"scheduledAt\":\"2099-03-15T09:00:00Z\",\"timezone\":\"Asia/Kolkata\"");
	id = campaign_id(r);
	it_resp_free(r);
	r = act(&f, id, "start");
	it_expect(r, 200);
	assert_string_equal(it_str(r, "status"), "SCHEDULED");
	assert_true(json_is_null(json_object_get(r->json, "startedAt")));
	it_resp_free(r);
	/* Start on SCHEDULED starts now. */
	r = act(&f, id, "start");
	it_expect(r, 200);
	assert_string_equal(it_str(r, "status"), "IN_PROGRESS");
	it_resp_free(r);
	free(id);
}

static void test_start_no_minutes(void **state)
{
	struct fixture f;
	struct it_resp *r;
	char *id, path[256];

	(void)state;
	fixture_new(&f, 0, 0);
	r = create(&f, "");
	id = campaign_id(r);
	it_resp_free(r);
	r = act(&f, id, "start");
	it_expect(r, 402);
	assert_string_equal(it_str(r, "error"), "Payment Required");
	it_resp_free(r);
	snprintf(path, sizeof(path), "/v1/campaigns/%s", id);
	r = it_call("GET", path, f.org.key, NULL, NULL);
	assert_string_equal(it_str(r, "status"), "DRAFT");
	it_resp_free(r);
	assert_int_equal(it_db_count("SELECT count(*) FROM outbox WHERE body->>'campaignId' = $1", id, NULL), 0);
	free(id);
}

struct progress_of {
	const char *path, *key;
};

static int progress_complete(void *arg)
{
	struct progress_of *p = arg;
	struct it_resp *r = it_call("GET", p->path, p->key, NULL, NULL);
	int done = r->status == 200 && it_int(r, "percentComplete") == 100;

	it_resp_free(r);
	return done;
}

static void test_progress_and_calls_shape(void **state)
{
	struct fixture f;
	struct it_resp *r;
	char *id, path[256];
	static const char *const keys[] = {"status", "total", "pending", "queued", "inProgress",
					   "completed", "failed", "skipped", "percentComplete"};

	(void)state;
	fixture_new(&f, 100, 0);
	r = create(&f, "");
	id = campaign_id(r);
	it_resp_free(r);
	snprintf(path, sizeof(path), "/v1/campaigns/%s/progress", id);
	r = it_call("GET", path, f.org.key, NULL, NULL);
	it_expect(r, 200);
	assert_int_equal(json_object_size(r->json), 9);
	for (size_t i = 0; i < 9; i++)
		assert_non_null(json_object_get(r->json, keys[i]));
	assert_string_equal(it_str(r, "status"), "DRAFT");
	assert_int_equal(it_int(r, "total"), 0);
	assert_int_equal(it_int(r, "percentComplete"), 0);
	it_resp_free(r);

	snprintf(path, sizeof(path), "/v1/campaigns/%s/calls?limit=1000", id);
	r = it_call("GET", path, f.org.key, NULL, NULL);
	it_expect(r, 200);
	assert_true(json_is_array(json_object_get(r->json, "data")));
	assert_int_equal(it_int(r, "total"), 0);
	assert_int_equal(it_int(r, "page"), 1);
	assert_int_equal(it_int(r, "limit"), 100);
	it_resp_free(r);
	snprintf(path, sizeof(path), "/v1/campaigns/%s/calls?page=-1", id);
	r = it_call("GET", path, f.org.key, NULL, NULL);
	it_expect(r, 400);
	it_resp_free(r);
	r = it_call("GET", "/v1/campaigns/camp_nope/progress", f.org.key, NULL, NULL);
	it_expect(r, 404);
	it_resp_free(r);
	r = it_call("GET", "/v1/campaigns/camp_nope/calls", f.org.key, NULL, NULL);
	it_expect(r, 404);
	it_resp_free(r);

	/* Call rows as the scheduler writes them read back in the seed's shape. */
	assert_int_not_equal(
		it_db_count("WITH c AS (INSERT INTO calls (campaign_id, contact_id, contact_name, phone_number,"
			    " status, outcome, attempts, call_sid, duration, started_at, completed_at)"
			    " VALUES ($1, 'ct_x', 'Priya Sharma', '+919876543210', 'COMPLETED', 'answered', 1,"
			    " 'CA0123456789abcdef0123456789abcdef', 87, '2026-03-10T09:07:00Z',"
			    " '2026-03-10T09:08:27Z') RETURNING 1)"
			    " UPDATE campaigns SET total = 1, completed = 1 WHERE id = $1 RETURNING 1", id, NULL),
		-1);
	snprintf(path, sizeof(path), "/v1/campaigns/%s/calls", id);
	r = it_call("GET", path, f.org.key, NULL, NULL);
	it_expect(r, 200);
	{
		json_t *c = json_array_get(json_object_get(r->json, "data"), 0);

		assert_string_equal(json_string_value(json_object_get(c, "callSid")),
				    "CA0123456789abcdef0123456789abcdef");
		assert_string_equal(json_string_value(json_object_get(c, "contactId")), "ct_x");
		assert_string_equal(json_string_value(json_object_get(c, "contactName")), "Priya Sharma");
		assert_string_equal(json_string_value(json_object_get(c, "phoneNumber")), "+919876543210");
		assert_string_equal(json_string_value(json_object_get(c, "status")), "COMPLETED");
		assert_int_equal(json_integer_value(json_object_get(c, "duration")), 87);
		assert_int_equal(json_integer_value(json_object_get(c, "attempts")), 1);
		assert_string_equal(json_string_value(json_object_get(c, "startedAt")), "2026-03-10T09:07:00.000Z");
		assert_string_equal(json_string_value(json_object_get(c, "completedAt")),
				    "2026-03-10T09:08:27.000Z");
		assert_int_equal(it_int(r, "total"), 1);
	}
	it_resp_free(r);
	/* The progress read above may be kept by the API's read cache until the
	 * NOTIFY of the scheduler's write reaches it, milliseconds later; far
	 * sooner than api.read_cache_max_age_ms. */
	snprintf(path, sizeof(path), "/v1/campaigns/%s/progress", id);
	if (!it_poll(progress_complete, &(struct progress_of){path, f.org.key}, 2000))
		fail_msg("%s did not show the scheduler's write within 2 s", path);
	free(id);
}

/* A live call shows the sid of its attempt on the line, a retried one its
 * new attempt's rather than the last one's; an ended call the sid it kept. */
static void test_live_call_sid(void **state)
{
	static const char *const want[][2] = {
		{"ct_retried", "CA22222222222222222222222222222222"},
		{"ct_live", "CA33333333333333333333333333333333"},
		{"ct_dialing", NULL},
		{"ct_done", "CA44444444444444444444444444444444"},
	};
	struct fixture f;
	struct it_resp *r;
	char *id, path[256];
	json_t *data;

	(void)state;
	fixture_new(&f, 100, 0);
	r = create(&f, "");
	id = campaign_id(r);
	it_resp_free(r);
	assert_int_equal(
		it_db_count("WITH c AS (INSERT INTO calls (campaign_id, contact_id, phone_number, status, attempts, call_sid)"
			    " VALUES ($1, 'ct_retried', '+15550000001', 'IN_PROGRESS', 2, 'CA11111111111111111111111111111111'),"
			    " ($1, 'ct_live', '+15550000002', 'IN_PROGRESS', 1, NULL),"
			    " ($1, 'ct_dialing', '+15550000003', 'IN_PROGRESS', 1, NULL),"
			    " ($1, 'ct_done', '+15550000004', 'COMPLETED', 1, 'CA44444444444444444444444444444444')"
			    " RETURNING id, contact_id),"
			    " a AS (INSERT INTO call_attempts (id, call_id, campaign_id, attempt_no, status, call_sid)"
			    " SELECT $1 || '_' || contact_id || '_' || n, c.id, $1, n, st, sid FROM c JOIN (VALUES"
			    " ('ct_retried', 1, 'ENDED', 'CA11111111111111111111111111111111'),"
			    " ('ct_retried', 2, 'ACCEPTED', 'CA22222222222222222222222222222222'),"
			    " ('ct_live', 1, 'ACCEPTED', 'CA33333333333333333333333333333333'),"
			    " ('ct_dialing', 1, 'DIALING', NULL),"
			    " ('ct_done', 1, 'ENDED', 'CA55555555555555555555555555555555')) v(ct, n, st, sid)"
			    " ON v.ct = c.contact_id RETURNING 1)"
			    " SELECT count(*) FROM a",
			    id, NULL),
		5);
	snprintf(path, sizeof(path), "/v1/campaigns/%s/calls", id);
	r = it_call("GET", path, f.org.key, NULL, NULL);
	it_expect(r, 200);
	data = json_object_get(r->json, "data");
	assert_int_equal(json_array_size(data), 4);
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		json_t *c, *got = NULL;
		size_t k;

		json_array_foreach(data, k, c) {
			if (!strcmp(json_string_value(json_object_get(c, "contactId")), want[i][0]))
				got = json_object_get(c, "callSid");
		}
		if (want[i][1] == NULL ? !json_is_null(got) : !json_is_string(got) || strcmp(json_string_value(got), want[i][1]))
			fail_msg("%s: callSid %s, want %s", want[i][0], got ? json_dumps(got, JSON_ENCODE_ANY) : "(none)",
				 want[i][1] ? want[i][1] : "null");
	}
	it_resp_free(r);
	free(id);
}

static void test_isolation(void **state)
{
	struct fixture a, b;
	struct it_resp *r;
	char *id, path[256];
	static const char *const routes[][2] = {
		{"GET", ""}, {"PATCH", ""}, {"DELETE", ""}, {"POST", "/start"}, {"POST", "/pause"},
		{"POST", "/resume"}, {"POST", "/cancel"}, {"GET", "/progress"}, {"GET", "/calls"},
	};

	(void)state;
	fixture_new(&a, 100, 0);
	fixture_new(&b, 100, 0);
	r = create(&a, "");
	id = campaign_id(r);
	it_resp_free(r);
	for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
		snprintf(path, sizeof(path), "/v1/campaigns/%s%s", id, routes[i][1]);
		r = it_call(routes[i][0], path, b.org.key, !strcmp(routes[i][0], "PATCH") ? "{\"name\":\"x\"}" : NULL,
			    NULL);
		it_expect(r, 404);
		it_resp_free(r);
	}
	r = it_call("GET", "/v1/campaigns", b.org.key, NULL, NULL);
	assert_int_equal(it_int(r, "total"), 0);
	it_resp_free(r);
	/* B cannot point a campaign at A's audience or flow. */
	r = it_callf("POST", "/v1/campaigns", b.org.key, "{\"name\":\"x\",\"flowId\":\"%s\",\"audienceId\":\"%s\"}",
		     a.org.flow_id, b.audience);
	it_expect(r, 400);
	it_resp_free(r);
	r = it_callf("POST", "/v1/campaigns", b.org.key, "{\"name\":\"x\",\"flowId\":\"%s\",\"audienceId\":\"%s\"}",
		     b.org.flow_id, a.audience);
	it_expect(r, 400);
	it_resp_free(r);
	snprintf(path, sizeof(path), "/v1/campaigns/%s", id);
	r = it_call("GET", path, a.org.key, NULL, NULL);
	assert_string_equal(it_str(r, "name"), "Mumbai Outreach - March 2026");
	assert_string_equal(it_str(r, "status"), "DRAFT");
	it_resp_free(r);
	free(id);
}

static void test_auth_and_protocol(void **state)
{
	struct it_resp *r;
	char buf[256];

	(void)state;
	r = it_call("GET", "/v1/campaigns", NULL, NULL, NULL);
	it_expect(r, 401);
	it_resp_free(r);
	r = it_call("GET", "/v1/campaigns", "sk_live_00000000000000000000000000000000", NULL, NULL);
	it_expect(r, 401);
	it_resp_free(r);
	r = it_call("GET", "/v1/nothing-here", "sk_live_x", NULL, NULL);
	it_expect(r, 404);
	it_resp_free(r);
	r = it_call("PUT", "/v1/campaigns", NULL, NULL, NULL);
	it_expect(r, 405);
	it_resp_free(r);
	/* X-Request-Id: echoed when given, made when not. */
	r = it_call("GET", "/healthz", NULL, NULL, "X-Request-Id: it-req-42", NULL);
	it_expect(r, 200);
	assert_string_equal(it_header(r, "X-Request-Id", buf, sizeof(buf)), "it-req-42");
	it_resp_free(r);
	r = it_call("GET", "/healthz", NULL, NULL, NULL);
	assert_non_null(it_header(r, "X-Request-Id", buf, sizeof(buf)));
	assert_true(strlen(buf) > 8);
	it_resp_free(r);
	r = it_call("GET", "/openapi.yaml", NULL, NULL, NULL);
	it_expect(r, 200);
	assert_non_null(strstr(r->body, "openapi: 3"));
	assert_non_null(strstr(r->body, "/v1/campaigns/{id}/progress"));
	it_resp_free(r);
	r = it_call("GET", "/readyz", NULL, NULL, NULL);
	it_expect(r, 200);
	it_resp_free(r);
	r = it_call("GET", "/metrics", NULL, NULL, NULL);
	it_expect(r, 200);
	assert_non_null(strstr(r->body, "dialer_http_requests_total"));
	it_resp_free(r);
}

static void test_oversized_body(void **state)
{
	struct it_org org;
	size_t n = 5 * 1024 * 1024;
	char *big = malloc(n);
	struct it_resp *r;

	(void)state;
	it_org_new(&org, 100);
	memset(big, ' ', n);
	big[0] = '{';
	big[n - 1] = '}';
	r = it_call_raw("POST", "/v1/campaigns", org.key, "application/json", big, n);
	it_expect(r, 413);
	it_resp_free(r);
	assert_int_equal(it_db_count("SELECT count(*) FROM campaigns WHERE organization_id = $1", org.id, NULL), 0);
	free(big);
}

static void test_idempotency_key(void **state)
{
	struct fixture f;
	struct it_resp *a, *b;
	char body[512], path[160];

	(void)state;
	fixture_new(&f, 100, 0);
	snprintf(body, sizeof(body), "{\"name\":\"Once\",\"flowId\":\"%s\",\"audienceId\":\"%s\"}", f.org.flow_id,
		 f.audience);
	/* The same key twice creates one campaign and answers the same. */
	a = it_call("POST", "/v1/campaigns", f.org.key, body, "Idempotency-Key: create-1", NULL);
	it_expect(a, 201);
	b = it_call("POST", "/v1/campaigns", f.org.key, body, "Idempotency-Key: create-1", NULL);
	it_expect(b, 201);
	assert_string_equal(a->body, b->body);
	assert_int_equal(it_db_count("SELECT count(*) FROM campaigns WHERE organization_id = $1", f.org.id, NULL), 1);
	/* Reused with another request: refused, nothing created. */
	it_resp_free(b);
	b = it_call("POST", "/v1/campaigns", f.org.key, "{\"name\":\"Other\",\"flowId\":\"x\",\"audienceId\":\"y\"}",
		    "Idempotency-Key: create-1", NULL);
	it_expect(b, 422);
	it_resp_free(b);
	assert_int_equal(it_db_count("SELECT count(*) FROM campaigns WHERE organization_id = $1", f.org.id, NULL), 1);
	/* Another key creates another. */
	b = it_call("POST", "/v1/campaigns", f.org.key, body, "Idempotency-Key: create-2", NULL);
	it_expect(b, 201);
	assert_string_not_equal(it_str(a, "id"), it_str(b, "id"));
	it_resp_free(b);
	/* start twice with one key: one transition, the same 200 both times
	 * (without the key the second would be a 409). */
	snprintf(path, sizeof(path), "/v1/campaigns/%s/start", it_str(a, "id"));
	b = it_call("POST", path, f.org.key, NULL, "Idempotency-Key: start-1", NULL);
	it_expect(b, 200);
	it_resp_free(b);
	b = it_call("POST", path, f.org.key, NULL, "Idempotency-Key: start-1", NULL);
	it_expect(b, 200);
	assert_string_equal(it_str(b, "status"), "IN_PROGRESS");
	it_resp_free(b);
	b = it_call("POST", path, f.org.key, NULL, NULL);
	it_expect(b, 409);
	it_resp_free(b);
	/* Keys belong to an organization: another one's same key is its own. */
	{
		struct fixture g;

		fixture_new(&g, 100, 0);
		b = it_call("POST", path, g.org.key, NULL, "Idempotency-Key: start-1", NULL);
		it_expect(b, 404);
		it_resp_free(b);
	}
	/* A malformed key is a 400 and changes nothing. */
	{
		char longkey[400] = "Idempotency-Key: ";

		memset(longkey + strlen(longkey), 'k', 300);
		b = it_call("POST", "/v1/campaigns", f.org.key, body, longkey, NULL);
		it_expect(b, 400);
		it_resp_free(b);
	}
	assert_int_equal(it_db_count("SELECT count(*) FROM campaigns WHERE organization_id = $1", f.org.id, NULL), 2);
	it_resp_free(a);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_create_defaults),
		cmocka_unit_test(test_create_seed_example),
		cmocka_unit_test(test_create_invalid),
		cmocka_unit_test(test_get_list_filters),
		cmocka_unit_test(test_patch_delete),
		cmocka_unit_test(test_lifecycle),
		cmocka_unit_test(test_scheduled_start),
		cmocka_unit_test(test_start_no_minutes),
		cmocka_unit_test(test_progress_and_calls_shape),
		cmocka_unit_test(test_live_call_sid),
		cmocka_unit_test(test_isolation),
		cmocka_unit_test(test_auth_and_protocol),
		cmocka_unit_test(test_oversized_body),
		cmocka_unit_test(test_idempotency_key),
	};

	return cmocka_run_group_tests_name("campaigns api", tests, NULL, NULL);
}
