/* Unit tests of dialer-worker's pure parts: job parsing and validation, the
 * classification of carrier answers, resend backoff, the create's form body
 * and the reading of call and list answers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dl_util.h"
#include "worker.h"

#define DIAL_OK                                                                                         \
	"{\"type\":\"dial\",\"messageId\":\"msg_1\",\"attemptId\":\"att_abc\",\"callId\":12,"              \
	"\"campaignId\":\"camp_x\",\"organizationId\":\"org_y\",\"to\":\"+15551230001\","                   \
	"\"from\":\"+15005550006\",\"voiceUrl\":\"http://flows.example/v.xml\","                            \
	"\"statusCallback\":\"http://api.example/v1/carrier/status?attemptId=att_abc\","                    \
	"\"timeLimitSec\":300,\"ringTimeoutSec\":30}"

/* A dial job with one field replaced (value is raw JSON) or, with value NULL, removed. */
static char *dial_with(const char *field, const char *value)
{
	static const char *const fields[][2] = {
		{"type", "\"dial\""},
		{"messageId", "\"msg_1\""},
		{"attemptId", "\"att_abc\""},
		{"callId", "12"},
		{"campaignId", "\"camp_x\""},
		{"organizationId", "\"org_y\""},
		{"to", "\"+15551230001\""},
		{"from", "\"+15005550006\""},
		{"voiceUrl", "\"http://flows.example/v.xml\""},
		{"statusCallback", "\"http://api.example/v1/carrier/status?attemptId=att_abc\""},
		{"timeLimitSec", "300"},
		{"ringTimeoutSec", "30"},
	};
	char *out = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&out, &len);
	bool first = true;

	assert_non_null(f);
	fputc('{', f);
	for (size_t i = 0; i < DL_ARRAY_LEN(fields); i++) {
		const char *v = fields[i][1];

		if (!strcmp(fields[i][0], field)) {
			if (value == NULL)
				continue;
			v = value;
		}
		fprintf(f, "%s\"%s\":%s", first ? "" : ",", fields[i][0], v);
		first = false;
	}
	fputc('}', f);
	fclose(f);
	return out;
}

static void test_parse_valid(void **state)
{
	struct worker_job j;
	char err[256] = "";

	(void)state;
	assert_int_equal(worker_job_parse(DIAL_OK, strlen(DIAL_OK), &j, err, sizeof(err)), 0);
	assert_int_equal(j.type, WORKER_JOB_DIAL);
	assert_string_equal(j.message_id, "msg_1");
	assert_string_equal(j.attempt_id, "att_abc");
	assert_int_equal(j.call_id, 12);
	assert_string_equal(j.campaign_id, "camp_x");
	assert_string_equal(j.to, "+15551230001");
	assert_string_equal(j.from, "+15005550006");
	assert_string_equal(j.voice_url, "http://flows.example/v.xml");
	assert_int_equal(j.time_limit_sec, 300);
	assert_int_equal(j.ring_timeout_sec, 30);

	{
		const char *h = "{\"type\":\"hangup\",\"messageId\":\"m\",\"attemptId\":\"att_1\","
				"\"callSid\":\"CA0123456789abcdef0123456789abcdef\"}";

		assert_int_equal(worker_job_parse(h, strlen(h), &j, err, sizeof(err)), 0);
		assert_int_equal(j.type, WORKER_JOB_HANGUP);
		assert_string_equal(j.call_sid, "CA0123456789abcdef0123456789abcdef");
	}
	{
		const char *r = "{\"type\":\"reconcile\",\"messageId\":\"m\",\"attemptId\":\"att_1\","
				"\"to\":\"+15551230001\",\"since\":\"2026-03-10T09:00:00.250Z\"}";

		assert_int_equal(worker_job_parse(r, strlen(r), &j, err, sizeof(err)), 0);
		assert_int_equal(j.type, WORKER_JOB_RECONCILE);
		assert_int_equal(j.since_ms, 1773133200250LL);
	}
	{
		/* from is optional (carrier.from), so are the ids only logged; unknown fields are ignored. */
		char *b = dial_with("from", "null");
		char *c = dial_with("campaignId", NULL);
		const char *extra = "{\"type\":\"dial\",\"attemptId\":\"att_1\",\"to\":\"+15551230001\","
				    "\"voiceUrl\":\"https://a.b/v\",\"statusCallback\":\"https://a.b/s\","
				    "\"timeLimitSec\":1,\"ringTimeoutSec\":1,\"future\":{\"x\":[1,2]}}";

		assert_int_equal(worker_job_parse(b, strlen(b), &j, err, sizeof(err)), 0);
		assert_string_equal(j.from, "");
		assert_int_equal(worker_job_parse(c, strlen(c), &j, err, sizeof(err)), 0);
		assert_string_equal(j.campaign_id, "");
		assert_int_equal(worker_job_parse(extra, strlen(extra), &j, err, sizeof(err)), 0);
		assert_string_equal(j.message_id, "");
		free(b);
		free(c);
	}
}

static void test_parse_invalid_fields(void **state)
{
	static const struct {
		const char *field;
		const char *value; /* raw JSON; NULL removes the field */
		const char *why;   /* a piece of the reason */
	} cases[] = {
		/* missing */
		{"type", NULL, "type is required"},
		{"attemptId", NULL, "attemptId is required"},
		{"to", NULL, "to is required"},
		{"voiceUrl", NULL, "voiceUrl is required"},
		{"statusCallback", NULL, "statusCallback is required"},
		{"timeLimitSec", NULL, "timeLimitSec is required"},
		{"ringTimeoutSec", NULL, "ringTimeoutSec is required"},
		{"attemptId", "null", "attemptId is required"},
		{"attemptId", "\"\"", "must not be empty"},
		/* wrong types */
		{"type", "1", "type must be a string"},
		{"attemptId", "42", "attemptId must be a string"},
		{"to", "15551230001", "to must be a string"},
		{"from", "[]", "from must be a string"},
		{"voiceUrl", "{}", "voiceUrl must be a string"},
		{"timeLimitSec", "\"300\"", "timeLimitSec must be an integer"},
		{"timeLimitSec", "300.5", "timeLimitSec must be an integer"},
		{"ringTimeoutSec", "true", "ringTimeoutSec must be an integer"},
		{"callId", "\"12\"", "callId must be an integer"},
		{"campaignId", "7", "campaignId must be a string"},
		/* bounds */
		{"timeLimitSec", "0", "between"},
		{"timeLimitSec", "86401", "between"},
		{"ringTimeoutSec", "-1", "between"},
		{"ringTimeoutSec", "601", "between"},
		{"callId", "0", "between"},
		/* bad values */
		{"type", "\"call\"", "unknown job type"},
		{"type", "\"DIAL\"", "unknown job type"},
		{"to", "\"5551230001\"", "E.164"},
		{"to", "\"+0551230001\"", "E.164"},
		{"to", "\"+1555123\"", "E.164"},
		{"to", "\"+1 555 123 0001\"", "E.164"},
		{"to", "\"+1555123000a\"", "E.164"},
		{"from", "\"12345\"", "E.164"},
		{"attemptId", "\"att 1\"", "not an id"},
		{"attemptId", "\"att_1'; DROP TABLE calls;--\"", "not an id"},
		{"messageId", "\"m/1\"", "not an id"},
		{"voiceUrl", "\"ftp://x/v.xml\"", "http(s) URL"},
		{"voiceUrl", "\"http://\"", "http(s) URL"},
		{"voiceUrl", "\"http://a b/v\"", "http(s) URL"},
		{"statusCallback", "\"javascript:alert(1)\"", "http(s) URL"},
		{"statusCallback", "\"http://x/\\u0007\"", "http(s) URL"},
	};

	(void)state;
	for (size_t i = 0; i < DL_ARRAY_LEN(cases); i++) {
		char *body = dial_with(cases[i].field, cases[i].value);
		struct worker_job j;
		char err[256] = "";

		memset(&j, 0x5a, sizeof(j));
		if (worker_job_parse(body, strlen(body), &j, err, sizeof(err)) != -EINVAL)
			fail_msg("case %zu (%s=%s) accepted", i, cases[i].field,
				 cases[i].value ? cases[i].value : "<none>");
		if (strstr(err, cases[i].why) == NULL)
			fail_msg("case %zu (%s): reason \"%s\" lacks \"%s\"", i, cases[i].field, err, cases[i].why);
		/* Out-parameters are written only on success. */
		assert_int_equal(((unsigned char *)&j)[0], 0x5a);
		free(body);
	}
}

static void test_parse_other_types(void **state)
{
	static const struct {
		const char *body;
		const char *why;
	} cases[] = {
		{"{\"type\":\"hangup\",\"attemptId\":\"att_1\"}", "callSid is required"},
		{"{\"type\":\"hangup\",\"attemptId\":\"att_1\",\"callSid\":\"CA../../x\"}", "not a call sid"},
		{"{\"type\":\"hangup\",\"attemptId\":\"att_1\",\"callSid\":\"C\"}", "not a call sid"},
		{"{\"type\":\"hangup\",\"attemptId\":\"att_1\",\"callSid\":5}", "must be a string"},
		{"{\"type\":\"reconcile\",\"attemptId\":\"att_1\",\"to\":\"+15551230001\"}", "since is required"},
		{"{\"type\":\"reconcile\",\"attemptId\":\"att_1\",\"to\":\"+15551230001\",\"since\":\"yesterday\"}",
		 "ISO 8601"},
		{"{\"type\":\"reconcile\",\"attemptId\":\"att_1\",\"to\":\"x\",\"since\":\"2026-03-10T09:00:00Z\"}",
		 "E.164"},
		{"{\"type\":\"reconcile\",\"attemptId\":\"att_1\",\"since\":\"2026-03-10T09:00:00Z\"}",
		 "to is required"},
	};

	(void)state;
	for (size_t i = 0; i < DL_ARRAY_LEN(cases); i++) {
		struct worker_job j;
		char err[256] = "";

		if (worker_job_parse(cases[i].body, strlen(cases[i].body), &j, err, sizeof(err)) != -EINVAL)
			fail_msg("case %zu accepted: %s", i, cases[i].body);
		if (strstr(err, cases[i].why) == NULL)
			fail_msg("case %zu: reason \"%s\" lacks \"%s\"", i, err, cases[i].why);
	}
}

static void test_parse_not_jobs(void **state)
{
	static const char *const bodies[] = {
		"",
		"not json",
		"{\"type\":\"dial\"",
		"[]",
		"\"dial\"",
		"42",
		"null",
		"{}",
		"{\"type\":\"dial\",\"type\":\"hangup\",\"attemptId\":\"a\",\"callSid\":\"CA1\"}",
		"\xff\xfe{}",
	};
	struct worker_job j;
	char err[256];

	(void)state;
	for (size_t i = 0; i < DL_ARRAY_LEN(bodies); i++) {
		err[0] = '\0';
		if (worker_job_parse(bodies[i], strlen(bodies[i]), &j, err, sizeof(err)) != -EINVAL)
			fail_msg("body %zu accepted", i);
		assert_true(err[0] != '\0');
	}
	/* NULL body, and a body that is not NUL-terminated where it stops. */
	assert_int_equal(worker_job_parse(NULL, 0, &j, err, sizeof(err)), -EINVAL);
	assert_int_equal(worker_job_parse(DIAL_OK "garbage", strlen(DIAL_OK), &j, err, sizeof(err)), 0);
	assert_int_equal(worker_job_parse(DIAL_OK, strlen(DIAL_OK) - 1, &j, err, sizeof(err)), -EINVAL);
	/* err may be absent. */
	assert_int_equal(worker_job_parse("x", 1, &j, NULL, 0), -EINVAL);
}

/* A JSON string (quotes included) holding an http URL of exactly len bytes. */
static char *quoted_url(size_t len)
{
	static const char head[] = "http://a.example/";
	char *s = malloc(len + 3);

	assert_non_null(s);
	assert_true(len >= sizeof(head) - 1);
	s[0] = '"';
	memcpy(s + 1, head, sizeof(head) - 1);
	memset(s + 1 + sizeof(head) - 1, 'v', len - (sizeof(head) - 1));
	s[len + 1] = '"';
	s[len + 2] = '\0';
	return s;
}

static void test_parse_caps(void **state)
{
	struct worker_job j;
	char err[256], *body, *url;

	(void)state;
	/* A string at its cap passes, one byte more fails. */
	url = quoted_url(WK_URL_LEN);
	body = dial_with("voiceUrl", url);
	assert_int_equal(worker_job_parse(body, strlen(body), &j, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "longer than"));
	free(body);
	free(url);
	url = quoted_url(WK_URL_LEN - 1);
	body = dial_with("statusCallback", url);
	assert_int_equal(worker_job_parse(body, strlen(body), &j, err, sizeof(err)), 0);
	assert_int_equal(strlen(j.status_callback), WK_URL_LEN - 1);
	free(body);
	free(url);

	{
		char id[WK_ID_LEN + 3];

		id[0] = '"';
		memset(id + 1, 'a', WK_ID_LEN);
		id[WK_ID_LEN + 1] = '"';
		id[WK_ID_LEN + 2] = '\0';
		body = dial_with("attemptId", id);
		assert_int_equal(worker_job_parse(body, strlen(body), &j, err, sizeof(err)), -EINVAL);
		assert_non_null(strstr(err, "longer than"));
		free(body);
	}

	/* The whole body is capped before parsing. */
	{
		size_t len = WK_BODY_MAX + 1;
		char *huge = malloc(len + 1);

		assert_non_null(huge);
		memset(huge, ' ', len);
		memcpy(huge, DIAL_OK, strlen(DIAL_OK));
		huge[len] = '\0';
		assert_int_equal(worker_job_parse(huge, len, &j, err, sizeof(err)), -E2BIG);
		/* ...and at the cap, trailing blanks are fine. */
		assert_int_equal(worker_job_parse(huge, WK_BODY_MAX, &j, err, sizeof(err)), 0);
		free(huge);
	}
}

static void test_parse_deeply_nested(void **state)
{
	struct worker_job j;
	char err[256];
	char *body = malloc(WK_BODY_MAX + 1);
	size_t depth = 5000;

	(void)state;
	assert_non_null(body);
	/* Nesting deeper than the parser allows... */
	memset(body, '[', depth);
	memset(body + depth, ']', depth);
	assert_int_equal(worker_job_parse(body, 2 * depth, &j, err, sizeof(err)), -EINVAL);
	/* ...and nesting in a known field, within the body cap. */
	{
		int n = snprintf(body, WK_BODY_MAX, "{\"type\":\"dial\",\"attemptId\":");

		for (int i = 0; i < 1000; i++)
			body[n++] = '[';
		for (int i = 0; i < 1000; i++)
			body[n++] = ']';
		body[n++] = '}';
		assert_int_equal(worker_job_parse(body, (size_t)n, &j, err, sizeof(err)), -EINVAL);
		assert_non_null(strstr(err, "attemptId must be a string"));
	}
	free(body);
}

static void test_classify(void **state)
{
	static const struct {
		long status;
		const char *body;
		enum worker_class cls;
	} cases[] = {
		{201, "{\"sid\":\"CA0123456789abcdef0123456789abcdef\",\"status\":\"queued\"}", WORKER_ACCEPTED},
		{200, "{\"sid\":\"CAabc\"}", WORKER_ACCEPTED},
		{201, "{\"status\":\"queued\"}", WORKER_AMBIGUOUS},
		{201, "{\"sid\":42}", WORKER_AMBIGUOUS},
		{201, "{\"sid\":\"XX0123\"}", WORKER_AMBIGUOUS},
		{201, "{\"sid\":\"CA/../x\"}", WORKER_AMBIGUOUS},
		{201, "not json", WORKER_AMBIGUOUS},
		{201, "", WORKER_AMBIGUOUS},
		{201, NULL, WORKER_AMBIGUOUS},
		{400, "{\"code\":21211,\"message\":\"The 'To' number is not a valid phone number.\",\"status\":400}",
		 WORKER_INVALID_NUMBER},
		{400, "{\"code\":21217,\"message\":\"Phone number is not valid\"}", WORKER_INVALID_NUMBER},
		{400, "{\"code\":\"21211\"}", WORKER_INVALID_NUMBER},
		{400, "{\"code\":21210,\"message\":\"From not verified\"}", WORKER_REJECTED},
		{400, "{\"message\":\"bad\"}", WORKER_REJECTED},
		{400, "<html>bad request</html>", WORKER_REJECTED},
		{400, NULL, WORKER_REJECTED},
		{404, "{\"code\":21211}", WORKER_REJECTED},
		{422, "{\"code\":21217}", WORKER_REJECTED},
		{401, "{\"code\":20003,\"message\":\"Authenticate\",\"status\":401}", WORKER_UNAUTHORIZED},
		{401, NULL, WORKER_UNAUTHORIZED},
		{403, "{\"code\":20003}", WORKER_REJECTED},
		{404, "{\"code\":20404}", WORKER_REJECTED},
		{408, NULL, WORKER_REJECTED},
		{409, NULL, WORKER_REJECTED},
		{413, NULL, WORKER_REJECTED},
		{429, "{\"code\":20429,\"message\":\"Too Many Requests\",\"status\":429}", WORKER_RATE_LIMITED},
		{429, NULL, WORKER_RATE_LIMITED},
		{499, NULL, WORKER_REJECTED},
		{500, "{\"code\":20500,\"message\":\"Internal Server Error\",\"status\":500}", WORKER_AMBIGUOUS},
		{500, "{\"code\":21211}", WORKER_AMBIGUOUS},
		{502, "<html>bad gateway</html>", WORKER_AMBIGUOUS},
		{503, NULL, WORKER_AMBIGUOUS},
		{504, NULL, WORKER_AMBIGUOUS},
		{0, NULL, WORKER_AMBIGUOUS},
		{100, NULL, WORKER_AMBIGUOUS},
		{302, "{\"sid\":\"CAabc\"}", WORKER_AMBIGUOUS},
		{304, NULL, WORKER_AMBIGUOUS},
		{600, NULL, WORKER_AMBIGUOUS},
		{-1, NULL, WORKER_AMBIGUOUS},
	};

	(void)state;
	for (size_t i = 0; i < DL_ARRAY_LEN(cases); i++) {
		enum worker_class got = worker_classify(cases[i].status, cases[i].body);

		if (got != cases[i].cls)
			fail_msg("case %zu: %ld %s: got %s, want %s", i, cases[i].status,
				 cases[i].body ? cases[i].body : "(null)", worker_class_name(got),
				 worker_class_name(cases[i].cls));
	}
}

static void test_backoff(void **state)
{
	static const uint32_t rnds[] = {0, 1, 7, 124, 125, 126, 1000, 4000, 4001, 65535, 0x7fffffff, 0xffffffffu};

	(void)state;
	for (int retry = -1; retry < 40; retry++) {
		int step = 250;

		for (int i = 0; i < retry && step < 8000; i++)
			step *= 2;
		if (step > 8000)
			step = 8000;
		for (size_t k = 0; k < DL_ARRAY_LEN(rnds); k++) {
			int d = worker_backoff_ms(retry, rnds[k]);

			if (d < step / 2 || d > step || d < 125 || d > 8000)
				fail_msg("retry %d rnd %u: %d outside [%d, %d]", retry, rnds[k], d, step / 2, step);
		}
	}
	/* Grows, then stays capped. */
	assert_int_equal(worker_backoff_ms(0, 0), 125);
	assert_int_equal(worker_backoff_ms(1, 0), 250);
	assert_int_equal(worker_backoff_ms(2, 0), 500);
	assert_int_equal(worker_backoff_ms(5, 0), 4000);
	assert_int_equal(worker_backoff_ms(6, 0), 4000);
	assert_int_equal(worker_backoff_ms(1000, 0), 4000);
	assert_int_equal(worker_backoff_ms(1000, 4000), 8000);
	/* Jitter spreads the delays. */
	assert_true(worker_backoff_ms(3, 0) != worker_backoff_ms(3, 777));
}

static void test_form_create(void **state)
{
	struct worker_job j;
	char err[256];
	char *form;

	(void)state;
	assert_int_equal(worker_job_parse(DIAL_OK, strlen(DIAL_OK), &j, err, sizeof(err)), 0);
	form = worker_form_create(&j, "+15009999999");
	assert_non_null(form);
	assert_string_equal(form, "To=%2B15551230001&From=%2B15005550006&Url=http%3A%2F%2Fflows.example%2Fv.xml"
				  "&StatusCallback=http%3A%2F%2Fapi.example%2Fv1%2Fcarrier%2Fstatus"
				  "%3FattemptId%3Datt_abc"
				  "&StatusCallbackEvent=initiated&StatusCallbackEvent=ringing"
				  "&StatusCallbackEvent=answered&StatusCallbackEvent=completed"
				  "&StatusCallbackMethod=POST&Timeout=30&TimeLimit=300");
	free(form);
	j.from[0] = '\0';
	form = worker_form_create(&j, "+15009999999");
	assert_non_null(strstr(form, "&From=%2B15009999999&"));
	free(form);
}

static void test_answers(void **state)
{
	struct worker_found f;
	char sid[WK_SID_LEN], detail[256];

	(void)state;
	assert_int_equal(worker_answer_sid("{\"sid\":\"CA0123456789abcdef0123456789abcdef\"}", sid, sizeof(sid)), 0);
	assert_string_equal(sid, "CA0123456789abcdef0123456789abcdef");
	assert_int_equal(worker_answer_sid("{\"sid\":null}", sid, sizeof(sid)), -EINVAL);
	assert_int_equal(worker_answer_sid("[]", sid, sizeof(sid)), -EINVAL);
	assert_int_equal(worker_answer_sid("{\"sid\":\"CA0123456789abcdef\"}", sid, 8), -EINVAL);

	worker_answer_detail(400, "{\"code\":21211,\"message\":\"not valid\"}", detail, sizeof(detail));
	assert_string_equal(detail, "carrier 400 21211: not valid");
	worker_answer_detail(502, "<html>", detail, sizeof(detail));
	assert_string_equal(detail, "carrier 502");
	worker_answer_detail(404, NULL, detail, sizeof(detail));
	assert_string_equal(detail, "carrier 404");

	/* Newest first as the carrier lists them... */
	assert_int_equal(worker_reconcile_pick("{\"calls\":["
					       "{\"sid\":\"CAnew\",\"status\":\"completed\",\"duration\":\"42\","
					       "\"date_created\":\"Tue, 10 Mar 2026 09:00:05 +0000\"},"
					       "{\"sid\":\"CAold\",\"status\":\"busy\",\"duration\":\"0\","
					       "\"date_created\":\"Tue, 10 Mar 2026 09:00:01 +0000\"}],\"page\":0}",
					       &f),
			 0);
	assert_true(f.found);
	assert_string_equal(f.sid, "CAnew");
	assert_string_equal(f.status, "completed");
	assert_int_equal(f.duration, 42);
	/* ...or not: the later date wins. */
	assert_int_equal(worker_reconcile_pick("{\"calls\":["
					       "{\"sid\":\"CAold\",\"status\":\"busy\",\"duration\":null,"
					       "\"date_created\":\"Tue, 10 Mar 2026 09:00:01 +0000\"},"
					       "{\"sid\":\"CAnew\",\"status\":\"in-progress\",\"duration\":null,"
					       "\"date_created\":\"Tue, 10 Mar 2026 10:00:05 +0100\"}]}",
					       &f),
			 0);
	assert_string_equal(f.sid, "CAnew");
	assert_string_equal(f.status, "in-progress");
	assert_int_equal(f.duration, -1);
	/* Unparseable dates keep the listed order. */
	assert_int_equal(worker_reconcile_pick("{\"calls\":[{\"sid\":\"CA1\",\"status\":\"queued\"},"
					       "{\"sid\":\"CA2\",\"status\":\"queued\"}]}",
					       &f),
			 0);
	assert_string_equal(f.sid, "CA1");
	assert_int_equal(worker_reconcile_pick("{\"calls\":[]}", &f), 0);
	assert_false(f.found);
	assert_int_equal(worker_reconcile_pick("{\"calls\":{}}", &f), -EINVAL);
	assert_int_equal(worker_reconcile_pick("nope", &f), -EINVAL);

	/* One call, as a hang-up asks for it first. */
	assert_int_equal(worker_call_parse("{\"sid\":\"CA9\",\"status\":\"completed\",\"duration\":\"42\","
					   "\"answered_by\":\"machine_start\"}",
					   &f),
			 0);
	assert_true(f.found);
	assert_string_equal(f.sid, "CA9");
	assert_string_equal(f.status, "completed");
	assert_int_equal(f.duration, 42);
	assert_string_equal(f.answered_by, "machine_start");
	assert_int_equal(worker_call_parse("{\"sid\":\"CA9\",\"status\":\"in-progress\",\"duration\":null}", &f),
			 0);
	assert_int_equal(f.duration, -1);
	assert_string_equal(f.answered_by, "");
	assert_int_equal(worker_call_parse("{\"status\":\"completed\"}", &f), -EINVAL);
	assert_int_equal(worker_call_parse("[]", &f), -EINVAL);
	assert_int_equal(worker_call_parse(NULL, &f), -EINVAL);
	for (size_t i = 0; i < 5; i++)
		assert_true(worker_status_ended((const char *[]){"completed", "busy", "no-answer", "failed",
								 "canceled"}[i]));
	assert_false(worker_status_ended("in-progress"));
	assert_false(worker_status_ended("ringing"));
	assert_false(worker_status_ended("queued"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_valid),
		cmocka_unit_test(test_parse_invalid_fields),
		cmocka_unit_test(test_parse_other_types),
		cmocka_unit_test(test_parse_not_jobs),
		cmocka_unit_test(test_parse_caps),
		cmocka_unit_test(test_parse_deeply_nested),
		cmocka_unit_test(test_classify),
		cmocka_unit_test(test_backoff),
		cmocka_unit_test(test_form_create),
		cmocka_unit_test(test_answers),
	};

	return cmocka_run_group_tests_name("dialer-worker", tests, NULL, NULL);
}
