/* Unit tests of the metrics: label escaping and validation in the registry,
 * histogram buckets and HELP text (common/dl_metrics.c), and the
 * scheduler's derived metrics (scheduler/sched_metrics.c) that need no
 * database: pacing windows and consumed messages by type. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dl_metrics.h"
#include "dl_util.h"
#include "sched_metrics.h"

/* The value of one series line ("name{labels}") in the rendered text, or -1
 * when it is absent. */
static double series_value(const char *series)
{
	char *text = dl_metrics_render(), *p, *hit = NULL;
	size_t n = strlen(series);
	double v = -1;

	assert_non_null(text);
	for (p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
		if (!strncmp(p, series, n) && p[n] == ' ') {
			hit = p + n + 1;
			break;
		}
	if (hit)
		v = strtod(hit, NULL);
	free(text);
	return v;
}

static void test_escape(void **state)
{
	static const struct {
		const char *in;
		size_t len;
		const char *out;
	} cases[] = {
		{"/v1/campaigns/:id", 64, "/v1/campaigns/:id"},
		{"a\"b", 64, "a\\\"b"},
		{"a\\b", 64, "a\\\\b"},
		{"a\nb", 64, "a\\nb"},
		{"caf\xc3\xa9", 64, "caf\xc3\xa9"},
		{"\xff", 64, "?"},
		{"\xc0\xaf", 64, "??"},         /* overlong '/' */
		{"\xed\xa0\x80", 64, "???"},    /* a surrogate */
		{"\xe2\x82", 64, "??"},         /* cut short */
		{"ab\"", 4, "ab"},              /* never half an escape */
		{"a\xc3\xa9", 3, "a"},          /* never half a character */
		{"abc", 1, ""},
		{NULL, 8, ""},
	};
	char buf[64];

	(void)state;
	for (size_t i = 0; i < DL_ARRAY_LEN(cases); i++) {
		assert_ptr_equal(dl_metrics_escape(buf, cases[i].len, cases[i].in), buf);
		assert_string_equal(buf, cases[i].out);
	}
}

static void test_labels_refused(void **state)
{
	static const struct {
		const char *labels;
		int ok;
	} cases[] = {
		{"", 1},
		{"a=\"x\"", 1},
		{"route=\"/v1/x/:id\",method=\"GET\",status=\"200\"", 1},
		{"a=\"x\\\"y\\\\z\\n\"", 1},
		{"_a1=\"\"", 1},
		{"a=\"x\"y\"", 0},   /* unescaped quote */
		{"a=\"x\\q\"", 0},   /* unknown escape */
		{"a=\"x\ny\"", 0},   /* raw newline */
		{"a=\"x", 0},        /* unterminated */
		{"1a=\"x\"", 0},     /* bad name */
		{"a-b=\"x\"", 0},
		{"a=x", 0},
		{"a=\"x\",", 0},
		{"a=\"x\" ,b=\"y\"", 0},
		{"a=\"\xff\"", 0},   /* not UTF-8 */
	};
	char series[128];

	(void)state;
	dl_metrics_register("t_labels_total", "counter", "Label validation.");
	for (size_t i = 0; i < DL_ARRAY_LEN(cases); i++) {
		dl_metrics_add("t_labels_total", cases[i].labels, 1);
		if (cases[i].labels[0])
			snprintf(series, sizeof(series), "t_labels_total{%s}", cases[i].labels);
		else
			snprintf(series, sizeof(series), "t_labels_total");
		if (cases[i].ok)
			assert_true(series_value(series) == 1);
		else
			assert_true(series_value(series) == -1);
	}
}

static void test_histogram_buckets(void **state)
{
	static const double good[] = {0.5, 1, 1.05, 0.1 + 0.2};
	static const double ok[] = {0.5, 1, 1.05};
	static const double bad[] = {1, 1};
	char *text;

	(void)state;
	dl_metrics_register_histogram("t_ratio", "Custom buckets.", ok, DL_ARRAY_LEN(ok));
	dl_metrics_register_histogram("t_bad_seconds", "Bad buckets fall back.", bad, DL_ARRAY_LEN(bad));
	dl_metrics_register_histogram("t_unsorted", "Unsorted buckets fall back.", good, DL_ARRAY_LEN(good));
	dl_metrics_register("t_help", "gauge", "back\\slash and\nnewline");
	dl_metrics_set("t_help", NULL, 1);
	dl_metrics_observe("t_ratio", "", 1.02);
	dl_metrics_observe("t_ratio", "", 3);
	dl_metrics_observe("t_bad_seconds", "", 0.003);
	dl_metrics_add("t_ratio", "x=\"y\"", 1); /* not for a histogram: refused */
	text = dl_metrics_render();
	assert_non_null(strstr(text, "t_ratio_bucket{le=\"1\"} 0\n"));
	assert_non_null(strstr(text, "t_ratio_bucket{le=\"1.05\"} 1\n"));
	assert_non_null(strstr(text, "t_ratio_bucket{le=\"+Inf\"} 2\n"));
	assert_non_null(strstr(text, "t_ratio_count 2\n"));
	assert_non_null(strstr(text, "t_ratio_sum 4.02\n"));
	assert_non_null(strstr(text, "t_bad_seconds_bucket{le=\"0.005\"} 1\n"));
	assert_non_null(strstr(text, "# HELP t_help back\\\\slash and\\nnewline\n"));
	assert_null(strstr(text, "t_ratio_sum{x="));
	free(text);
	/* Observing a counter changes nothing. */
	dl_metrics_register("t_obs_total", "counter", "Not a histogram.");
	dl_metrics_observe("t_obs_total", "", 1);
	assert_true(series_value("t_obs_total") == -1);
	/* Values Prometheus spells its own way. */
	dl_metrics_register("t_special", "gauge", "NaN and infinities.");
	dl_metrics_set("t_special", "v=\"nan\"", NAN);
	dl_metrics_set("t_special", "v=\"inf\"", INFINITY);
	dl_metrics_set("t_special", "v=\"small\"", 0.1);
	text = dl_metrics_render();
	assert_non_null(strstr(text, "t_special{v=\"nan\"} NaN\n"));
	assert_non_null(strstr(text, "t_special{v=\"inf\"} +Inf\n"));
	assert_non_null(strstr(text, "t_special{v=\"small\"} 0.1\n"));
	free(text);
}

static void sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

	while (nanosleep(&ts, &ts) < 0)
		;
}

/* Calls observe_pace every step_ms for total_ms. */
static void pace_run(const char *id, int started, int cpm, int minute_ms, int step_ms, int total_ms)
{
	for (int t = 0; t < total_ms; t += step_ms) {
		sched_metrics_observe_pace(id, started, cpm, minute_ms);
		sleep_ms(step_ms);
	}
}

static void test_pace(void **state)
{
	double count, low, high;

	(void)state;
	sched_metrics_observe_pace("camp_init", 0, 1, 1000000); /* registers the family, observes nothing */
	assert_true(series_value("dialer_scheduler_pace_ratio_count") == -1);
	/* Seen throughout, nothing started: every window observes 0. */
	pace_run("camp_idle", 0, 10, 100, 2, 400);
	count = series_value("dialer_scheduler_pace_ratio_count");
	low = series_value("dialer_scheduler_pace_ratio_bucket{le=\"0.25\"}");
	assert_true(count >= 1);
	assert_true(low == count);
	/* Seen only every 60 ms of a 100 ms minute: never throughout, never observed. */
	pace_run("camp_gaps", 5, 10, 100, 60, 400);
	assert_true(series_value("dialer_scheduler_pace_ratio_count") == count);
	/* Far more starts than the target: above the last finite bucket. */
	high = series_value("dialer_scheduler_pace_ratio_bucket{le=\"2\"}");
	pace_run("camp_fast", 100, 1, 100, 2, 400);
	assert_true(series_value("dialer_scheduler_pace_ratio_count") > count);
	assert_true(series_value("dialer_scheduler_pace_ratio_bucket{le=\"2\"}") == high);
	/* Nonsense is ignored. */
	sched_metrics_observe_pace(NULL, 1, 10, 40);
	sched_metrics_observe_pace("camp_x", 1, 0, 40);
	sched_metrics_observe_pace("camp_x", -1, 10, 40);
	sched_metrics_observe_pace("camp_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", 1, 10, 40);
}

static void test_consumed(void **state)
{
	amqp_basic_properties_t props = {0};

	(void)state;
	props._flags = AMQP_BASIC_TYPE_FLAG;
	props.type = amqp_cstring_bytes("dial.result");
	sched_metrics_consumed(&props, 0);
	sched_metrics_consumed(&props, 0);
	sched_metrics_consumed(&props, -EINVAL);
	sched_metrics_consumed(&props, -EIO);
	props.type = amqp_cstring_bytes("dial.result.x\"");
	sched_metrics_consumed(&props, 0);
	props._flags = 0;
	sched_metrics_consumed(&props, 0);
	sched_metrics_consumed(NULL, 0);
	assert_true(series_value("dialer_scheduler_messages_consumed_total{type=\"dial.result\",result=\"applied\"}") ==
		    2);
	assert_true(series_value("dialer_scheduler_messages_consumed_total{type=\"dial.result\",result=\"invalid\"}") ==
		    1);
	assert_true(series_value("dialer_scheduler_messages_consumed_total{type=\"dial.result\",result=\"requeued\"}") ==
		    1);
	assert_true(series_value("dialer_scheduler_messages_consumed_total{type=\"other\",result=\"applied\"}") == 3);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_escape),   cmocka_unit_test(test_labels_refused),
		cmocka_unit_test(test_histogram_buckets), cmocka_unit_test(test_pace),
		cmocka_unit_test(test_consumed),
	};

	return cmocka_run_group_tests_name("metrics", tests, NULL, NULL);
}
