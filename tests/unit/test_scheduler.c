/* Unit tests of the scheduler's rules: pacing arithmetic (no minute ever
 * holds more than calls_per_minute starts, starts are evenly spaced, the cap
 * on live calls holds, no burst after an idle spell), carrier outcomes and
 * the parsing of result and event messages. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "scheduler.h"

/* Simulates a leader ticking every tick_ms for `minutes` minutes and checks
 * every sliding window of one minute. */
static void simulate(int cpm, int max_conc, int minute_ms, int tick_ms, int minutes, int call_ms)
{
	struct sched_pace p = {0, cpm, max_conc, 0, minute_ms, tick_ms};
	int64_t *starts = calloc((size_t)cpm * (size_t)(minutes + 2) + 16, sizeof(int64_t));
	int64_t *ends = calloc((size_t)cpm * (size_t)(minutes + 2) + 16, sizeof(int64_t));
	size_t n = 0;
	int64_t t0 = 1000000, now;

	for (now = t0; now < t0 + (int64_t)minutes * minute_ms; now += tick_ms) {
		int64_t base;
		int k;

		p.live = 0;
		for (size_t i = 0; i < n; i++)
			if (ends[i] > now)
				p.live++;
		k = sched_pace_allow(&p, now * 1000, &base);
		assert_true(k >= 0);
		assert_true(p.live + k <= max_conc);
		for (int i = 0; i < k; i++) {
			starts[n] = now;
			ends[n] = now + call_ms;
			n++;
		}
		if (k > 0)
			p.next_us = sched_pace_advance(&p, base, k);
	}
	/* No sliding minute holds more than cpm starts. */
	for (size_t i = 0, j = 0; i < n; i++) {
		while (starts[i] - starts[j] >= minute_ms)
			j++;
		if (i - j + 1 > (size_t)cpm)
			fail_msg("cpm %d: %zu starts within one minute", cpm, i - j + 1);
	}
	/* Unconstrained by concurrency, the pace is met within 5%. */
	if (max_conc >= cpm) {
		double per_min = (double)n / minutes;

		if (per_min < cpm * 0.95 || per_min > cpm)
			fail_msg("cpm %d: %.1f starts per minute", cpm, per_min);
	}
	free(starts);
	free(ends);
}

static void test_pacing_table(void **state)
{
	static const struct {
		int cpm, max_conc, minute_ms, tick_ms, minutes, call_ms;
	} cases[] = {
		{10, 1000, 60000, 100, 5, 1000},   {1, 1000, 60000, 100, 5, 1000},
		{7, 1000, 60000, 100, 5, 1000},    {60, 1000, 1000, 10, 10, 10},
		{600, 1000, 60000, 100, 3, 100},   {6000, 1000, 60000, 100, 2, 10},
		{6000, 1000, 1000, 5, 3, 1},       {59, 1000, 1000, 7, 20, 1},
		{120, 5, 60000, 100, 3, 10000},    {100, 1, 1000, 5, 5, 30},
	};

	(void)state;
	for (size_t i = 0; i < DL_ARRAY_LEN(cases); i++)
		simulate(cases[i].cpm, cases[i].max_conc, cases[i].minute_ms, cases[i].tick_ms, cases[i].minutes,
			 cases[i].call_ms);
}

static void test_pacing_no_burst_after_idle(void **state)
{
	/* A campaign idle for ten minutes (paused, or a new leader) does not
	 * dial the missed starts at once. */
	struct sched_pace p = {1000000000, 60, 1000, 0, 60000, 100};
	int64_t base;
	int n = sched_pace_allow(&p, 1000000000 + 600000000, &base);

	(void)state;
	assert_int_equal(n, 1);
	/* Exactly on time: one; before time: none. */
	p.next_us = 5000000;
	assert_int_equal(sched_pace_allow(&p, 5000000, &base), 1);
	assert_int_equal(sched_pace_allow(&p, 4999999, &base), 0);
	/* Live calls at the cap: none. */
	p.live = 1000;
	assert_int_equal(sched_pace_allow(&p, 5000000, &base), 0);
}

static void test_outcomes(void **state)
{
	static const struct {
		const char *status, *answered_by;
		long duration;
		bool answered, hung_up;
		const char *outcome; /* NULL: not terminal */
		bool retry;
	} cases[] = {
		{"completed", "human", 42, true, false, "answered", false},
		{"completed", NULL, 42, false, false, "answered", false},
		{"completed", "machine_start", 10, true, false, "voicemail", false},
		{"completed", "machine_end_beep", 10, true, false, "voicemail", false},
		{"completed", NULL, 0, false, false, "no-answer", true},
		{"completed", "human", 300, true, true, "timeout", false},
		{"busy", NULL, 0, false, false, "busy", true},
		{"no-answer", NULL, 0, false, false, "no-answer", true},
		{"failed", NULL, 0, false, false, "failed", true},
		{"canceled", NULL, 0, false, false, "failed", true},
		{"canceled", NULL, 0, true, true, "timeout", false},
		{"initiated", NULL, 0, false, false, NULL, false},
		{"ringing", NULL, 0, false, false, NULL, false},
		{"in-progress", "human", 0, true, false, NULL, false},
		{"queued", NULL, 0, false, false, NULL, false},
	};

	(void)state;
	for (size_t i = 0; i < DL_ARRAY_LEN(cases); i++) {
		const char *o = sched_outcome(cases[i].status, cases[i].answered_by, cases[i].duration,
					      cases[i].answered, cases[i].hung_up);

		if (cases[i].outcome == NULL) {
			assert_null(o);
			continue;
		}
		assert_non_null(o);
		assert_string_equal(o, cases[i].outcome);
		assert_int_equal(sched_outcome_retryable(o), cases[i].retry);
	}
	assert_false(sched_outcome_retryable("invalid-number"));
	assert_false(sched_outcome_retryable("answered"));
	assert_string_equal(sched_outcome_call_status("answered"), "COMPLETED");
	assert_string_equal(sched_outcome_call_status("voicemail"), "COMPLETED");
	assert_string_equal(sched_outcome_call_status("busy"), "FAILED");
	assert_string_equal(sched_outcome_call_status("invalid-number"), "FAILED");
	assert_int_equal(sched_minutes_charged("answered", 1), 1);
	assert_int_equal(sched_minutes_charged("answered", 60), 1);
	assert_int_equal(sched_minutes_charged("answered", 61), 2);
	assert_int_equal(sched_minutes_charged("voicemail", 87), 2);
	assert_int_equal(sched_minutes_charged("busy", 87), 0);
	assert_int_equal(sched_minutes_charged("answered", 0), 0);
}

#define SID "CA0123456789abcdef0123456789abcdef"

/* Every kind of result message, and the malformed ones that can never be
 * applied (-EINVAL: dropped and counted, not retried). */
static void test_result_messages(void **state)
{
	static const struct {
		const char *body;
		int rc;
		enum sched_msg_kind kind;
	} cases[] = {
		{"{\"type\":\"dial.result\",\"attemptId\":\"a\",\"outcome\":\"accepted\",\"callSid\":\"" SID "\"}", 0,
		 SCHED_MSG_ACCEPTED},
		{"{\"type\":\"dial.result\",\"attemptId\":\"a\",\"outcome\":\"accepted\",\"callSid\":\"CA12\"}", -EINVAL, 0},
		{"{\"type\":\"dial.result\",\"attemptId\":\"a\",\"outcome\":\"accepted\"}", -EINVAL, 0},
		{"{\"type\":\"dial.result\",\"attemptId\":\"a\",\"outcome\":\"skipped\"}", 0, SCHED_MSG_IGNORE},
		{"{\"type\":\"dial.result\",\"attemptId\":\"a\",\"outcome\":\"failed\",\"class\":\"invalid-number\"}", 0,
		 SCHED_MSG_INVALID_NUMBER},
		{"{\"type\":\"dial.result\",\"attemptId\":\"a\",\"outcome\":\"failed\",\"class\":\"ambiguous\"}", 0,
		 SCHED_MSG_AMBIGUOUS},
		{"{\"type\":\"dial.result\",\"attemptId\":\"a\",\"outcome\":\"failed\",\"class\":\"refused\"}", 0,
		 SCHED_MSG_REFUSED},
		{"{\"type\":\"dial.result\",\"attemptId\":\"a\",\"outcome\":\"failed\"}", -EINVAL, 0},
		{"{\"type\":\"dial.result\",\"attemptId\":\"a\",\"outcome\":\"maybe\"}", -EINVAL, 0},
		{"{\"type\":\"dial.result\",\"attemptId\":\"a\",\"outcome\":7}", -EINVAL, 0},
		{"{\"type\":\"call.status\",\"attemptId\":\"a\",\"callSid\":\"" SID "\",\"callStatus\":\"busy\","
		 "\"sequenceNumber\":2}", 0, SCHED_MSG_STATUS},
		{"{\"type\":\"call.status\",\"attemptId\":\"a\",\"callSid\":\"" SID "\",\"callStatus\":\"busy\","
		 "\"sequenceNumber\":\"2\"}", -EINVAL, 0},
		{"{\"type\":\"call.status\",\"attemptId\":\"a\",\"callSid\":\"" SID "\",\"sequenceNumber\":2}", -EINVAL, 0},
		{"{\"type\":\"reconcile.result\",\"attemptId\":\"a\",\"found\":false}", 0, SCHED_MSG_RECONCILE},
		{"{\"type\":\"hangup.result\",\"attemptId\":\"a\"}", 0, SCHED_MSG_HANGUP},
		{"{\"type\":\"hangup.result\",\"attemptId\":\"a\",\"ended\":true,\"callSid\":\"" SID "\","
		 "\"callStatus\":\"completed\"}", 0, SCHED_MSG_HANGUP},
		{"{\"type\":\"hangup.result\",\"attemptId\":\"a\",\"hungUp\":true,\"callSid\":\"" SID "\"}", 0,
		 SCHED_MSG_HANGUP},
		{"{\"type\":\"hangup.result\",\"attemptId\":\"a\",\"ended\":true}", -EINVAL, 0},
		{"{\"type\":\"hangup.result\",\"attemptId\":\"a\",\"hungUp\":true,\"callSid\":\"CA12\"}", -EINVAL, 0},
		{"{\"type\":\"dial\",\"attemptId\":\"a\"}", -EINVAL, 0},
		{"{\"type\":\"hangup.result\"}", -EINVAL, 0},
		{"{\"type\":\"hangup.result\",\"attemptId\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
		 "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"}", -EINVAL, 0},
		{"[\"type\",\"dial.result\"]", -EINVAL, 0},
		{"{\"type\":\"dial.result\"", -EINVAL, 0},
		{"", -EINVAL, 0},
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct sched_message m;
		int rc = sched_message_parse(cases[i].body, strlen(cases[i].body), &m);

		if (rc != cases[i].rc || (rc == 0 && m.kind != cases[i].kind))
			fail_msg("%s: rc %d kind %d", cases[i].body, rc, rc == 0 ? (int)m.kind : -1);
	}
}

/* A delivery: one message, a call.statuses carrying 1 to 64 call statuses,
 * or a job.results carrying 1 to 64 job results, all valid, in their order;
 * anything else in one is refused whole. */
static void test_result_deliveries(void **state)
{
#define ST(a, seq) "{\"type\":\"call.status\",\"attemptId\":\"" a "\",\"callSid\":\"" SID "\",\"callStatus\":" \
		   "\"ringing\",\"sequenceNumber\":" #seq "}"
#define DR(a) "{\"type\":\"dial.result\",\"attemptId\":\"" a "\",\"outcome\":\"accepted\",\"callSid\":\"" SID "\"}"
	static const struct {
		const char *body;
		int rc;
		const char *attempts; /* of the statuses, in order */
	} cases[] = {
		{ST("a", 1), 1, "a"},
		{"{\"type\":\"dial.result\",\"attemptId\":\"a\",\"outcome\":\"skipped\"}", 1, "a"},
		{"{\"type\":\"dial.result\",\"attemptId\":\"a\",\"outcome\":\"maybe\"}", -EINVAL, ""},
		{"{\"type\":\"call.statuses\",\"statuses\":[" ST("a", 1) "]}", 1, "a"},
		{"{\"type\":\"call.statuses\",\"messageId\":\"m\",\"statuses\":[" ST("a", 1) "," ST("b", 2) "," ST("a", 3) "]}",
		 3, "aba"},
		{"{\"type\":\"call.statuses\",\"statuses\":[]}", -EINVAL, ""},
		{"{\"type\":\"call.statuses\"}", -EINVAL, ""},
		{"{\"type\":\"call.statuses\",\"statuses\":{}}", -EINVAL, ""},
		{"{\"type\":\"call.statuses\",\"statuses\":[" ST("a", 1) ",7]}", -EINVAL, ""},
		{"{\"type\":\"call.statuses\",\"statuses\":[" ST("a", 1)
		 ",{\"type\":\"dial.result\",\"attemptId\":\"a\",\"outcome\":\"skipped\"}]}", -EINVAL, ""},
		{"{\"type\":\"call.statuses\",\"statuses\":[" ST("a", 1)
		 ",{\"type\":\"call.status\",\"attemptId\":\"b\",\"callSid\":\"CA1\",\"callStatus\":\"busy\","
		 "\"sequenceNumber\":2}]}", -EINVAL, ""},
		{"{\"type\":\"call.statuses\",\"statuses\":[" ST("a", 1) "," ST("b", 2) "]", -EINVAL, ""},
		/* job.results: a worker's results, any kind of job's, never a status */
		{"{\"type\":\"job.results\",\"messageId\":\"m\",\"results\":[" DR("a") ","
		 "{\"type\":\"reconcile.result\",\"attemptId\":\"b\",\"found\":false}," DR("c") "]}",
		 3, "abc"},
		{"{\"type\":\"job.results\",\"results\":[" DR("a") "]}", 1, "a"},
		{"{\"type\":\"job.results\",\"results\":[]}", -EINVAL, ""},
		{"{\"type\":\"job.results\",\"statuses\":[" DR("a") "]}", -EINVAL, ""},
		{"{\"type\":\"job.results\",\"results\":[" DR("a") "," ST("b", 2) "]}", -EINVAL, ""},
		{"{\"type\":\"job.results\",\"results\":[" DR("a") ","
		 "{\"type\":\"dial.result\",\"attemptId\":\"b\",\"outcome\":\"maybe\"}]}", -EINVAL, ""},
		{"{\"type\":\"job.results\",\"results\":[{\"type\":\"job.results\",\"results\":[" DR("a") "]}]}",
		 -EINVAL, ""},
		{"{\"type\":\"call.statuses\",\"statuses\":[" DR("a") "]}", -EINVAL, ""},
	};
#undef ST
#undef DR
	struct sched_message m[SCHED_STATUSES_MAX + 1];

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int rc = sched_messages_parse(cases[i].body, strlen(cases[i].body), m, SCHED_STATUSES_MAX);

		if (rc != cases[i].rc)
			fail_msg("%s: rc %d, want %d", cases[i].body, rc, cases[i].rc);
		for (int k = 0; k < rc; k++)
			if (m[k].attempt[0] != cases[i].attempts[k] || m[k].attempt[1] != '\0')
				fail_msg("%s: status %d is of attempt %s", cases[i].body, k, m[k].attempt);
	}
}

/* The caps: 64 statuses or results in one message at most, and no more
 * than the batch has room for. */
static void test_result_deliveries_capped(void **state)
{
	static const char *const heads[] = {"{\"type\":\"call.statuses\",\"statuses\":[",
					    "{\"type\":\"job.results\",\"results\":["};
	struct sched_message m[SCHED_STATUSES_MAX + 1];
	char *body = malloc(300 * (SCHED_STATUSES_MAX + 1) + 64);
	size_t len;

	(void)state;
	assert_non_null(body);
	for (size_t i = 0; i < sizeof(heads) / sizeof(heads[0]); i++) {
		for (int n = SCHED_STATUSES_MAX; n <= SCHED_STATUSES_MAX + 1; n++) {
			len = (size_t)sprintf(body, "%s", heads[i]);
			for (int k = 0; k < n; k++)
				len += (size_t)(i == 0 ? sprintf(body + len,
								 "%s{\"type\":\"call.status\",\"attemptId\":\"a%d\","
								 "\"callSid\":\"" SID "\",\"callStatus\":\"ringing\","
								 "\"sequenceNumber\":%d}",
								 k ? "," : "", k, k)
						       : sprintf(body + len,
								 "%s{\"type\":\"dial.result\",\"attemptId\":\"a%d\","
								 "\"outcome\":\"accepted\",\"callSid\":\"" SID "\"}",
								 k ? "," : "", k));
			len += (size_t)sprintf(body + len, "]}");
			assert_int_equal(sched_messages_parse(body, len, m, SCHED_STATUSES_MAX + 1),
					 n <= SCHED_STATUSES_MAX ? n : -EINVAL);
			if (n == SCHED_STATUSES_MAX) {
				assert_string_equal(m[n - 1].attempt, "a63");
				assert_int_equal(sched_messages_parse(body, len, m, n - 1), -EINVAL);
			}
		}
	}
	free(body);
}

/* What a call.status carries to the outcome: sequence, duration (an
 * impossible one counts as 0) and who answered. */
static void test_result_status_fields(void **state)
{
	static const char body[] = "{\"type\":\"call.status\",\"attemptId\":\"att_1\",\"callSid\":\"" SID "\","
				   "\"callStatus\":\"completed\",\"sequenceNumber\":5,\"callDuration\":90000,"
				   "\"answeredBy\":\"machine_end_beep\"}";
	struct sched_message m;

	(void)state;
	assert_int_equal(sched_message_parse(body, strlen(body), &m), 0);
	assert_string_equal(m.attempt, "att_1");
	assert_string_equal(m.sid, SID);
	assert_string_equal(m.status, "completed");
	assert_int_equal(m.seq, 5);
	assert_int_equal(m.duration, 0);
	assert_true(m.has_answered_by);
	assert_string_equal(sched_outcome(m.status, m.answered_by, 30, true, false), "voicemail");
}

/* A hang-up or reconcile result carries the carrier's call resource, whose
 * duration is a string; what it says reaches the outcome. */
static void test_result_call_resource_fields(void **state)
{
	static const struct {
		const char *duration;
		long want;
	} cases[] = {
		{"\"duration\":\"42\"", 42},
		{"\"duration\":42", 42},
		{"\"duration\":\"\"", 0},
		{"\"duration\":\"4x\"", 0},
		{"\"duration\":\"-5\"", 0},
		{"\"duration\":\"9999999999\"", 0},
		{"\"duration\":null", 0},
		{"\"callDuration\":7,\"duration\":\"42\"", 7},
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char body[512];
		struct sched_message m;

		snprintf(body, sizeof(body),
			 "{\"type\":\"hangup.result\",\"attemptId\":\"a\",\"ended\":true,\"callSid\":\"" SID "\","
			 "\"callStatus\":\"completed\",%s}",
			 cases[i].duration);
		assert_int_equal(sched_message_parse(body, strlen(body), &m), 0);
		assert_true(m.ended);
		assert_false(m.hung_up);
		if (m.duration != cases[i].want)
			fail_msg("%s: duration %ld, want %ld", cases[i].duration, m.duration, cases[i].want);
	}
}

/* Which call events a final status later in the same batch says in full. */
static void test_subsumed(void **state)
{
	static const struct {
		const char *name;
		const char *msgs[6]; /* "attempt status seq", in batch order */
		const char *want;    /* one char a message: s skipped, a applied */
	} cases[] = {
		{"a whole call", {"a initiated 0", "a ringing 1", "a in-progress 2", "a completed 3"}, "ssaa"},
		{"no final status", {"a initiated 0", "a ringing 1", "a in-progress 2"}, "aaa"},
		{"final status first", {"a completed 3", "a ringing 1"}, "as"},
		{"a newer event than the final", {"a busy 2", "a ringing 4"}, "aa"},
		{"another attempt's final", {"a ringing 1", "b completed 3"}, "aa"},
		{"two attempts", {"a initiated 0", "a no-answer 2", "b ringing 1", "b queued 0"}, "saaa"},
		{"no sequence", {"a ringing -1", "a completed 3"}, "aa"},
		{"final of each kind", {"a ringing 1", "a canceled 2", "b ringing 1", "b failed 5"}, "sasa"},
	};

	(void)state;
	for (size_t c = 0; c < DL_ARRAY_LEN(cases); c++) {
		struct sched_message msgs[6];
		const struct sched_message *m[6];
		bool skip[6];
		int n = 0;

		memset(msgs, 0, sizeof(msgs));
		for (; n < 6 && cases[c].msgs[n] != NULL; n++) {
			assert_int_equal(sscanf(cases[c].msgs[n], "%128s %128s %ld", msgs[n].attempt, msgs[n].status,
						&msgs[n].seq),
					 3);
			msgs[n].kind = SCHED_MSG_STATUS;
			m[n] = &msgs[n];
		}
		sched_subsumed(m, n, skip);
		for (int i = 0; i < n; i++)
			if (skip[i] != (cases[c].want[i] == 's'))
				fail_msg("%s: message %d (%s): skip %d", cases[c].name, i, cases[c].msgs[i], skip[i]);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_pacing_table),
		cmocka_unit_test(test_pacing_no_burst_after_idle),
		cmocka_unit_test(test_outcomes),
		cmocka_unit_test(test_result_messages),
		cmocka_unit_test(test_result_deliveries),
		cmocka_unit_test(test_result_deliveries_capped),
		cmocka_unit_test(test_result_call_resource_fields),
		cmocka_unit_test(test_result_status_fields),
		cmocka_unit_test(test_subsumed),
	};

	return cmocka_run_group_tests_name("scheduler rules", tests, NULL, NULL);
}
