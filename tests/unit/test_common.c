/* Unit tests of common/: time parsing and formatting, phone numbers, UTF-8,
 * configuration (file, environment, errors) and the metrics text. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dl_config.h"
#include "dl_metrics.h"
#include "dl_util.h"

static void test_time_parse(void **state)
{
	static const struct {
		const char *in;
		int ok;
		int64_t ms;
	} cases[] = {
		{"2026-03-10T09:00:00.000Z", 1, 1773133200000LL},
		{"2026-03-10T09:00:00Z", 1, 1773133200000LL},
		{"2026-03-10T09:00:00.5Z", 1, 1773133200500LL},
		{"2026-03-10T14:30:00+05:30", 1, 1773133200000LL},
		{"2026-03-10T04:00:00-05:00", 1, 1773133200000LL},
		{"2026-03-10t09:00:00z", 1, 1773133200000LL},
		{"2024-02-29T00:00:00Z", 1, 1709164800000LL},
		{"2026-02-29T00:00:00Z", 0, 0},
		{"2026-13-01T00:00:00Z", 0, 0},
		{"2026-03-10T24:00:00Z", 0, 0},
		{"2026-03-10T09:00:00", 0, 0},
		{"2026-03-10 09:00:00Z", 0, 0},
		{"2026-03-10", 0, 0},
		{"", 0, 0},
		{"2026-03-10T09:00:00.Z", 0, 0},
		{"2026-03-10T09:00:00Zjunk", 0, 0},
		{"1969-12-31T23:59:59Z", 0, 0},
	};

	(void)state;
	for (size_t i = 0; i < DL_ARRAY_LEN(cases); i++) {
		int64_t ms = 0;
		int r = dl_time_parse(cases[i].in, &ms);

		if (cases[i].ok) {
			if (r != 0)
				fail_msg("%s rejected", cases[i].in);
			assert_int_equal(ms, cases[i].ms);
		} else if (r == 0) {
			fail_msg("%s accepted", cases[i].in);
		}
	}
}

static void test_time_format(void **state)
{
	char out[DL_TIME_MAX];

	(void)state;
	dl_time_format(1773133200000LL, out);
	assert_string_equal(out, "2026-03-10T09:00:00.000Z");
	dl_time_format(1773133200123LL, out);
	assert_string_equal(out, "2026-03-10T09:00:00.123Z");
	dl_time_format(0, out);
	assert_string_equal(out, "1970-01-01T00:00:00.000Z");
}

static void test_phone(void **state)
{
	static const struct {
		const char *in;
		bool ok;
	} cases[] = {
		{"+919876543210", true}, {"+12025550123", true}, {"+12345678", true},
		{"+123456789012345", true}, {"+1234567", false}, {"+1234567890123456", false},
		{"919876543210", false}, {"+019876543210", false}, {"+91 98765 43210", false},
		{"+9198765432a0", false}, {"", false}, {"+", false},
	};

	(void)state;
	for (size_t i = 0; i < DL_ARRAY_LEN(cases); i++)
		if (dl_phone_valid(cases[i].in) != cases[i].ok)
			fail_msg("%s: expected %d", cases[i].in, cases[i].ok);
	assert_false(dl_phone_valid(NULL));
}

static void test_utf8(void **state)
{
	(void)state;
	assert_int_equal(dl_utf8_len("abc"), 3);
	assert_int_equal(dl_utf8_len("Priya Sh\xc4\x81rm\xc4\x81"), 12);
	assert_int_equal(dl_utf8_len("\xe0\xa4\xae\xe0\xa5\x81\xe0\xa4\x82"), 3); /* Devanagari */
	assert_int_equal(dl_utf8_len("\xf0\x9f\x93\x9e"), 1);                     /* emoji */
	assert_int_equal(dl_utf8_len("\xff"), -1);
	assert_int_equal(dl_utf8_len("\xc0\x80"), -1);         /* overlong NUL */
	assert_int_equal(dl_utf8_len("\xed\xa0\x80"), -1);     /* surrogate */
	assert_int_equal(dl_utf8_len("\xe0\xa4"), -1);         /* truncated */
}

static void test_ids(void **state)
{
	char a[DL_ID_MAX], b[DL_ID_MAX];

	(void)state;
	dl_id_new("camp", a);
	dl_id_new("camp", b);
	assert_int_equal(strlen(a), 5 + 24);
	assert_memory_equal(a, "camp_", 5);
	assert_string_not_equal(a, b);
	for (const char *p = a + 5; *p; p++)
		assert_non_null(strchr("234567abcdefghijklmnopqrstuvwxyz", *p));
}

/* Ids made later sort after, bytewise: across a change of every digit, and
 * whatever the random part. */
static void test_ids_in_time_order(void **state)
{
	static const uint64_t earlier_later[][2] = {
		{0, 1},
		{30, 31},
		{31, 32},                                /* a carry into the second digit */
		{1023, 1024},
		{1795000000000ull, 1795000000001ull},    /* 2026 */
		{(1ull << 45) - 1, 1ull << 45},
		{1795000000000ull, 4102444800000ull},    /* 2100 */
	};

	(void)state;
	for (size_t i = 0; i < sizeof(earlier_later) / sizeof(earlier_later[0]); i++)
		for (int k = 0; k < 20; k++) {
			char a[DL_ID_MAX], b[DL_ID_MAX];

			dl_id_at("camp", earlier_later[i][0], a);
			dl_id_at("camp", earlier_later[i][1], b);
			assert_int_equal(strlen(a), 5 + 24);
			assert_true(strcmp(a, b) < 0);
		}
}

static void test_config(void **state)
{
	char path[] = "/tmp/dialer-cfg-XXXXXX";
	struct dl_config cfg;
	char err[512];
	FILE *f;
	int fd;

	(void)state;
	/* Defaults. */
	unsetenv("DIALER_CLOCK_MINUTE_MS");
	assert_int_equal(dl_config_load(&cfg, NULL, err, sizeof(err)), 0);
	assert_int_equal(cfg.clock_minute_ms, 60000);
	assert_int_equal(cfg.api_rate_per_min, cfg.api_rate_per_min); /* present */
	dl_config_free(&cfg);

	/* File, then environment over it. */
	fd = mkstemp(path);
	assert_true(fd >= 0);
	f = fdopen(fd, "w");
	fputs("clock: { minute_ms = 1000; };\nhttp: { port = 9999; listen = \"0.0.0.0\"; };\n", f);
	fclose(f);
	assert_int_equal(dl_config_load(&cfg, path, err, sizeof(err)), 0);
	assert_int_equal(cfg.clock_minute_ms, 1000);
	assert_int_equal(cfg.http_port, 9999);
	assert_string_equal(cfg.http_listen, "0.0.0.0");
	dl_config_free(&cfg);
	setenv("DIALER_CLOCK_MINUTE_MS", "250", 1);
	setenv("DIALER_HTTP_LISTEN", "127.0.0.2", 1);
	assert_int_equal(dl_config_load(&cfg, path, err, sizeof(err)), 0);
	assert_int_equal(cfg.clock_minute_ms, 250);
	assert_string_equal(cfg.http_listen, "127.0.0.2");
	dl_config_free(&cfg);

	/* Bad environment values are errors that name the variable. */
	setenv("DIALER_CLOCK_MINUTE_MS", "fast", 1);
	assert_int_not_equal(dl_config_load(&cfg, path, err, sizeof(err)), 0);
	assert_non_null(strstr(err, "DIALER_CLOCK_MINUTE_MS"));
	dl_config_free(&cfg);
	setenv("DIALER_CLOCK_MINUTE_MS", "0", 1);
	assert_int_not_equal(dl_config_load(&cfg, path, err, sizeof(err)), 0);
	dl_config_free(&cfg);
	unsetenv("DIALER_CLOCK_MINUTE_MS");
	unsetenv("DIALER_HTTP_LISTEN");

	/* Unknown settings, wrong types and syntax errors in the file. */
	static const char *const bad[] = {
		"clock: { minute_mss = 1000; };\n",
		"clock: { minute_ms = \"1000\"; };\n",
		"clock: { minute_ms = 1000 \n",
		"nosuch: { x = 1; };\n",
	};
	for (size_t i = 0; i < DL_ARRAY_LEN(bad); i++) {
		f = fopen(path, "w");
		fputs(bad[i], f);
		fclose(f);
		if (dl_config_load(&cfg, path, err, sizeof(err)) == 0)
			fail_msg("accepted bad config: %s", bad[i]);
		dl_config_free(&cfg);
	}
	unlink(path);
}

static void test_metrics(void **state)
{
	char *text;

	(void)state;
	dl_metrics_register("t_requests_total", "counter", "Requests.");
	dl_metrics_register("t_latency_seconds", "histogram", "Latency.");
	dl_metrics_add("t_requests_total", "route=\"/a\"", 2);
	dl_metrics_add("t_requests_total", "route=\"/a\"", 1);
	dl_metrics_observe("t_latency_seconds", "", 0.003);
	dl_metrics_observe("t_latency_seconds", "", 7);
	text = dl_metrics_render();
	assert_non_null(strstr(text, "# TYPE t_requests_total counter\n"));
	assert_non_null(strstr(text, "t_requests_total{route=\"/a\"} 3\n"));
	assert_non_null(strstr(text, "t_latency_seconds_bucket{le=\"0.0025\"} 0\n"));
	assert_non_null(strstr(text, "t_latency_seconds_bucket{le=\"0.005\"} 1\n"));
	assert_non_null(strstr(text, "t_latency_seconds_bucket{le=\"+Inf\"} 2\n"));
	assert_non_null(strstr(text, "t_latency_seconds_count 2\n"));
	free(text);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_time_parse), cmocka_unit_test(test_time_format),
		cmocka_unit_test(test_phone),      cmocka_unit_test(test_utf8),
		cmocka_unit_test(test_ids),        cmocka_unit_test(test_ids_in_time_order),
		cmocka_unit_test(test_config),
		cmocka_unit_test(test_metrics),
	};

	return cmocka_run_group_tests_name("common", tests, NULL, NULL);
}
