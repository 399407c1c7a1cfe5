/* Unit tests of the campaign rules: state machine, settings validation,
 * paging, routing and the rate limiter. Table-driven. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"

static void test_state_machine(void **state)
{
	static const struct {
		const char *from;
		enum api_action action;
		bool future;
		const char *to; /* NULL: 409 */
	} cases[] = {
		{"DRAFT", API_ACT_START, false, "IN_PROGRESS"},
		{"DRAFT", API_ACT_START, true, "SCHEDULED"},
		{"SCHEDULED", API_ACT_START, true, "IN_PROGRESS"},
		{"SCHEDULED", API_ACT_START, false, "IN_PROGRESS"},
		{"IN_PROGRESS", API_ACT_START, false, NULL},
		{"PAUSED", API_ACT_START, false, NULL},
		{"COMPLETED", API_ACT_START, false, NULL},
		{"CANCELLED", API_ACT_START, false, NULL},
		{"IN_PROGRESS", API_ACT_PAUSE, false, "PAUSED"},
		{"DRAFT", API_ACT_PAUSE, false, NULL},
		{"SCHEDULED", API_ACT_PAUSE, false, NULL},
		{"PAUSED", API_ACT_PAUSE, false, NULL},
		{"COMPLETED", API_ACT_PAUSE, false, NULL},
		{"PAUSED", API_ACT_RESUME, false, "IN_PROGRESS"},
		{"IN_PROGRESS", API_ACT_RESUME, false, NULL},
		{"DRAFT", API_ACT_RESUME, false, NULL},
		{"CANCELLED", API_ACT_RESUME, false, NULL},
		{"DRAFT", API_ACT_CANCEL, false, "CANCELLED"},
		{"SCHEDULED", API_ACT_CANCEL, false, "CANCELLED"},
		{"IN_PROGRESS", API_ACT_CANCEL, false, "CANCELLED"},
		{"PAUSED", API_ACT_CANCEL, false, "CANCELLED"},
		{"COMPLETED", API_ACT_CANCEL, false, NULL},
		{"CANCELLED", API_ACT_CANCEL, false, NULL},
	};

	(void)state;
	for (size_t i = 0; i < DL_ARRAY_LEN(cases); i++) {
		const char *got = api_campaign_next_status(cases[i].from, cases[i].action, cases[i].future);

		if (cases[i].to == NULL)
			assert_null(got);
		else
			assert_string_equal(got, cases[i].to);
	}
}

static void test_validate(void **state)
{
	/* 2026-01-01T00:00:00Z as "now". */
	const int64_t now = 1767225600000LL;
	static const struct {
		const char *body;
		bool partial;
		const char *err; /* NULL: valid; else a substring of the message */
	} cases[] = {
		{"{\"name\":\"a\",\"flowId\":\"f\",\"audienceId\":\"a\"}", false, NULL},
		{"{\"flowId\":\"f\",\"audienceId\":\"a\"}", false, "name is required"},
		{"{\"name\":\"\",\"flowId\":\"f\",\"audienceId\":\"a\"}", false, "name must be 1 to 200"},
		{"{\"name\":\"a\",\"audienceId\":\"a\"}", false, "flowId is required"},
		{"{\"name\":\"a\",\"flowId\":\"f\"}", false, "audienceId is required"},
		{"{\"name\":1,\"flowId\":\"f\",\"audienceId\":\"a\"}", false, "name must be a string"},
		{"{\"name\":\"a\",\"flowId\":\"f\",\"audienceId\":\"a\",\"callsPerMinute\":0}", false,
		 "callsPerMinute must be an integer from 1 to 6000"},
		{"{\"name\":\"a\",\"flowId\":\"f\",\"audienceId\":\"a\",\"callsPerMinute\":6000}", false, NULL},
		{"{\"name\":\"a\",\"flowId\":\"f\",\"audienceId\":\"a\",\"callsPerMinute\":6001}", false,
		 "callsPerMinute"},
		{"{\"name\":\"a\",\"flowId\":\"f\",\"audienceId\":\"a\",\"callsPerMinute\":1.5}", false,
		 "callsPerMinute must be an integer"},
		{"{\"name\":\"a\",\"flowId\":\"f\",\"audienceId\":\"a\",\"callsPerMinute\":\"5\"}", false,
		 "callsPerMinute must be an integer"},
		{"{\"name\":\"a\",\"flowId\":\"f\",\"audienceId\":\"a\",\"maxConcurrentCalls\":1001}", false,
		 "maxConcurrentCalls must be an integer from 1 to 1000"},
		{"{\"name\":\"a\",\"flowId\":\"f\",\"audienceId\":\"a\",\"maxRetries\":-1}", false,
		 "maxRetries must be an integer from 0 to 10"},
		{"{\"name\":\"a\",\"flowId\":\"f\",\"audienceId\":\"a\",\"maxRetries\":0}", false, NULL},
		{"{\"name\":\"a\",\"flowId\":\"f\",\"audienceId\":\"a\",\"retryDelayMinutes\":1441}", false,
		 "retryDelayMinutes must be an integer from 0 to 1440"},
		{"{\"name\":\"a\",\"flowId\":\"f\",\"audienceId\":\"a\",\"callTimeoutMinutes\":0}", false,
		 "callTimeoutMinutes must be an integer from 1 to 60"},
		{"{\"name\":\"a\",\"flowId\":\"f\",\"audienceId\":\"a\",\"scheduledAt\":\"2026-03-15T09:00:00Z\"}",
		 false, "timezone is required"},
		{"{\"name\":\"a\",\"flowId\":\"f\",\"audienceId\":\"a\",\"scheduledAt\":\"2026-03-15T09:00:00Z\","
		 "\"timezone\":\"Asia/Kolkata\"}", false, NULL},
		{"{\"name\":\"a\",\"flowId\":\"f\",\"audienceId\":\"a\",\"scheduledAt\":\"2025-03-15T09:00:00Z\","
		 "\"timezone\":\"Asia/Kolkata\"}", false, "scheduledAt must be in the future"},
		{"{\"name\":\"a\",\"flowId\":\"f\",\"audienceId\":\"a\",\"scheduledAt\":\"tomorrow\","
		 "\"timezone\":\"Asia/Kolkata\"}", false, "scheduledAt must be an ISO 8601"},
		{"{\"name\":\"a\",\"flowId\":\"f\",\"audienceId\":\"a\",\"scheduledAt\":\"2026-03-15T09:00:00Z\","
		 "\"timezone\":\"Mars/Olympus\"}", false, "timezone must be an IANA"},
		{"{\"name\":\"a\",\"flowId\":\"f\",\"audienceId\":\"a\",\"scheduledAt\":null,\"timezone\":null}",
		 false, NULL},
		{"{\"name\":\"a\",\"flowId\":\"f\",\"audienceId\":\"a\",\"color\":\"red\"}", false,
		 "unknown field \"color\""},
		{"{\"name\":null,\"flowId\":\"f\",\"audienceId\":\"a\"}", false, "name must not be null"},
		{"{}", true, NULL},
		{"{\"maxRetries\":2}", true, NULL},
		{"{\"maxRetries\":11}", true, "maxRetries"},
		{"{\"status\":\"COMPLETED\"}", true, "unknown field \"status\""},
		{"{\"name\":\"\xff\xfe\"}", true, "valid text"},
	};

	(void)state;
	for (size_t i = 0; i < DL_ARRAY_LEN(cases); i++) {
		json_t *body = json_loads(cases[i].body, 0, NULL);
		char err[256] = "";
		bool ok;

		if (body == NULL) {
			/* Invalid UTF-8 never parses: jansson rejects it before us. */
			assert_non_null(cases[i].err);
			continue;
		}
		ok = api_campaign_validate(body, cases[i].partial, now, err, sizeof(err));
		if (cases[i].err == NULL) {
			if (!ok)
				fail_msg("case %zu: %s rejected: %s", i, cases[i].body, err);
		} else {
			if (ok)
				fail_msg("case %zu: %s accepted", i, cases[i].body);
			if (strstr(err, cases[i].err) == NULL)
				fail_msg("case %zu: message \"%s\" lacks \"%s\"", i, err, cases[i].err);
		}
		json_decref(body);
	}
}

static void test_unknown_field_message_stays_utf8(void **state)
{
	/* Found by fuzz_campaign: a long multi-byte field name was echoed cut in
	 * the middle of a character, and the 400 lost its JSON body. */
	static const struct api_field fields[] = {{"name", API_F_STRING, false, false, 1, 200}};
	char key[200] = "", err[256];
	json_t *body;
	struct dl_http_resp resp;

	(void)state;
	for (int i = 0; i < 33; i++)
		strcat(key, "\xc3\xa9"); /* 66 bytes of "é" */
	body = json_object();
	json_object_set_new(body, key, json_true());
	assert_false(api_check_fields(body, fields, 1, err, sizeof(err)));
	assert_true(dl_utf8_len(err) > 0);
	memset(&resp, 0, sizeof(resp));
	dl_http_error(&resp, 400, "%s", err);
	assert_non_null(resp.body);
	free(resp.body);
	json_decref(body);
}

static void test_paging(void **state)
{
	static const struct {
		const char *page, *limit;
		bool ok;
		long want_page, want_limit;
	} cases[] = {
		{NULL, NULL, true, 1, 20},      {"2", "50", true, 2, 50},   {"1", "100", true, 1, 100},
		{"1", "101", true, 1, 100},     {"1", "100000", true, 1, 100}, {"0", NULL, false, 0, 0},
		{"-1", NULL, false, 0, 0},      {"abc", NULL, false, 0, 0}, {NULL, "0", false, 0, 0},
		{NULL, "-5", false, 0, 0},      {NULL, "ten", false, 0, 0}, {"1.5", NULL, false, 0, 0},
		{"", NULL, false, 0, 0},        {"99999999999999999999", NULL, false, 0, 0},
	};

	(void)state;
	for (size_t i = 0; i < DL_ARRAY_LEN(cases); i++) {
		long p = 0, l = 0;
		char err[128];
		bool ok = api_parse_paging(cases[i].page, cases[i].limit, &p, &l, err, sizeof(err));

		assert_int_equal(ok, cases[i].ok);
		if (ok) {
			assert_int_equal(p, cases[i].want_page);
			assert_int_equal(l, cases[i].want_limit);
		}
	}
}

static void test_routes(void **state)
{
	static const struct {
		const char *method, *path, *pattern, *param;
		bool known; /* for no match: path exists under another method */
	} cases[] = {
		{"GET", "/v1/campaigns", "/v1/campaigns", NULL, false},
		{"GET", "/v1/campaigns/", "/v1/campaigns", NULL, false},
		{"POST", "/v1/campaigns", "/v1/campaigns", NULL, false},
		{"GET", "/v1/campaigns/camp_1", "/v1/campaigns/:id", "camp_1", false},
		{"POST", "/v1/campaigns/camp_1/start", "/v1/campaigns/:id/start", "camp_1", false},
		{"GET", "/v1/campaigns/camp_1/progress", "/v1/campaigns/:id/progress", "camp_1", false},
		{"PUT", "/v1/campaigns/camp_1", NULL, NULL, true},
		{"GET", "/v1/campaigns/camp_1/start", NULL, NULL, true},
		{"GET", "/v1/campaigns/camp_1/nope", NULL, NULL, false},
		{"GET", "/v1/campaignsx", NULL, NULL, false},
		{"GET", "/v1", NULL, NULL, false},
		{"POST", "/v1/contacts/bulk", "/v1/contacts/bulk", NULL, false},
		{"GET", "/v1/contacts/ct_9", "/v1/contacts/:id", "ct_9", false},
		{"DELETE", "/v1/dnc/+15551234567", "/v1/dnc/:phone", "+15551234567", false},
		{"POST", "/v1/imports/api/bulk", "/v1/imports/api/bulk", NULL, false},
		{"GET", "/v1/imports/imp_1/status", "/v1/imports/:id/status", "imp_1", false},
		{"GET", "/v1/campaigns//start", NULL, NULL, false},
	};

	(void)state;
	for (size_t i = 0; i < DL_ARRAY_LEN(cases); i++) {
		const char *params[API_MAX_PARAMS] = {NULL};
		char buf[256];
		bool known;
		const struct api_route *r =
			api_route_match(cases[i].method, cases[i].path, params, buf, sizeof(buf), &known);

		if (cases[i].pattern == NULL) {
			if (r != NULL)
				fail_msg("case %zu: %s %s matched %s", i, cases[i].method, cases[i].path, r->pattern);
			assert_int_equal(known, cases[i].known);
			continue;
		}
		assert_non_null(r);
		assert_string_equal(r->pattern, cases[i].pattern);
		if (cases[i].param)
			assert_string_equal(params[0], cases[i].param);
	}
}

static void test_ratelimit(void **state)
{
	struct api_ratelimit *rl = NULL;
	int retry = 0;

	(void)state;
	assert_int_equal(api_ratelimit_new(60, 10, &rl), 0);
	/* A full minute's burst, then refusal with a Retry-After. */
	for (int i = 0; i < 10; i++)
		assert_true(api_ratelimit_take(rl, "k1", API_RATE_BULK, 1000, &retry));
	assert_false(api_ratelimit_take(rl, "k1", API_RATE_BULK, 1000, &retry));
	assert_int_equal(retry, 6); /* one token per 6 s at 10/min */
	/* Classes and keys are independent. */
	assert_true(api_ratelimit_take(rl, "k1", API_RATE_DEFAULT, 1000, &retry));
	assert_true(api_ratelimit_take(rl, "k2", API_RATE_BULK, 1000, &retry));
	/* Refill: 6 s later exactly one more bulk call. */
	assert_true(api_ratelimit_take(rl, "k1", API_RATE_BULK, 7000, &retry));
	assert_false(api_ratelimit_take(rl, "k1", API_RATE_BULK, 7000, &retry));
	/* Default class: 60 then refusal for about a second. */
	for (int i = 0; i < 59; i++)
		assert_true(api_ratelimit_take(rl, "k3", API_RATE_DEFAULT, 1000, &retry));
	assert_true(api_ratelimit_take(rl, "k3", API_RATE_DEFAULT, 1000, &retry));
	assert_false(api_ratelimit_take(rl, "k3", API_RATE_DEFAULT, 1000, &retry));
	assert_int_equal(retry, 1);
	/* Unlimited routes never refuse. */
	assert_true(api_ratelimit_take(rl, "k3", API_RATE_NONE, 1000, &retry));
	api_ratelimit_free(rl);
}

/* Verified keys are trusted for the TTL counted from the lookup's start,
 * and never after; a key that shares another's slot only evicts it. */
static void test_keycache(void **state)
{
	struct api_keycache *kc = NULL, *off = NULL;
	char h1[65], h2[65], org[DL_ID_MAX], kid[DL_ID_MAX];

	(void)state;
	dl_sha256_hex("sk_live_one", 11, h1);
	dl_sha256_hex("sk_live_two", 11, h2);
	assert_int_equal(api_keycache_new(1000, &kc), 0);
	assert_false(api_keycache_get(kc, h1, 5000, org, kid));
	api_keycache_put(kc, h1, "org_a", "key_a", 5000);
	assert_true(api_keycache_get(kc, h1, 5000, org, kid));
	assert_string_equal(org, "org_a");
	assert_string_equal(kid, "key_a");
	assert_true(api_keycache_get(kc, h1, 5999, org, kid));
	assert_false(api_keycache_get(kc, h1, 6000, org, kid));
	assert_false(api_keycache_get(kc, h2, 5500, org, kid));
	/* Same first digits, another key: a miss, not the other's organization. */
	{
		char h3[65];

		memcpy(h3, h1, sizeof(h3));
		h3[63] = h3[63] == '0' ? '1' : '0';
		assert_false(api_keycache_get(kc, h3, 5500, org, kid));
		api_keycache_put(kc, h3, "org_b", "key_b", 5500);
		assert_true(api_keycache_get(kc, h3, 5500, org, kid));
		assert_string_equal(org, "org_b");
		assert_false(api_keycache_get(kc, h1, 5500, org, kid));
	}
	assert_false(api_keycache_get(kc, "short", 5500, org, kid));
	api_keycache_free(kc);
	/* A TTL of 0 holds nothing. */
	assert_int_equal(api_keycache_new(0, &off), 0);
	api_keycache_put(off, h1, "org_a", "key_a", 5000);
	assert_false(api_keycache_get(off, h1, 5000, org, kid));
	api_keycache_free(off);
	api_keycache_free(NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_state_machine), cmocka_unit_test(test_validate),
		cmocka_unit_test(test_paging),        cmocka_unit_test(test_routes),
		cmocka_unit_test(test_unknown_field_message_stays_utf8),
		cmocka_unit_test(test_ratelimit),
		cmocka_unit_test(test_keycache),
	};

	return cmocka_run_group_tests_name("campaign rules", tests, NULL, NULL);
}
