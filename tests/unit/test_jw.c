/* Unit tests of the JSON writer (common/dl_jw.c) and of the API's rows
 * written from binary results (api_row_write): each must give the text that
 * jansson's compact dump of the same values gives, and timestamps the text
 * of Postgres' to_char. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "dl_jw.h"

/* The writer's text (the caller frees it); the writer is left empty. */
static char *take(struct dl_jw *w)
{
	size_t len;
	char *s = dl_jw_take(w, &len);

	assert_non_null(s);
	assert_int_equal(strlen(s), len);
	return s;
}

static void test_strings(void **state)
{
	static const char *const cases[] = {
		"",
		"plain",
		"quote \" and backslash \\",
		"slash / stays",
		"\b\f\n\r\t",
		"\x01\x02\x1f\x7f",
		"na\xc3\xafve \xe2\x9c\x93 \xf0\x9f\x98\x80",
		"\"\"\\\\",
		"end\n",
	};

	(void)state;
	for (size_t i = 0; i < DL_ARRAY_LEN(cases); i++) {
		struct dl_jw w;
		json_t *j = json_string(cases[i]);
		char *want = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY), *got;

		dl_jw_init(&w, 1); /* grows from one byte */
		dl_jw_str(&w, cases[i], strlen(cases[i]));
		got = take(&w);
		assert_string_equal(got, want);
		free(got);
		free(want);
		json_decref(j);
	}
}

static void test_ints(void **state)
{
	static const long long cases[] = {0, 1, -1, 9, 10, 1000, -1000, 2147483647LL, -2147483648LL,
					  9223372036854775807LL, -9223372036854775807LL - 1};

	(void)state;
	for (size_t i = 0; i < DL_ARRAY_LEN(cases); i++) {
		struct dl_jw w;
		char want[32], *got;

		snprintf(want, sizeof(want), "%lld", cases[i]);
		dl_jw_init(&w, 0);
		dl_jw_int(&w, cases[i]);
		got = take(&w);
		assert_string_equal(got, want);
		free(got);
	}
}

/* Nesting, commas and every kind of value against jansson's dump of the
 * same tree. */
static void test_structure(void **state)
{
	struct dl_jw w;
	json_t *j;
	char *want, *got;

	(void)state;
	j = json_pack("{s:[{s:s, s:n}, {}, []], s:I, s:b, s:b, s:[i, s], s:{s:{}}}", "data", "a", "x", "b", "n",
		      (json_int_t)-42, "t", 1, "f", 0, "mix", 7, "o", "in", "deep");
	want = json_dumps(j, JSON_COMPACT);
	dl_jw_init(&w, 0);
	dl_jw_open(&w, '{');
	dl_jw_key(&w, "data", 4);
	dl_jw_open(&w, '[');
	dl_jw_open(&w, '{');
	dl_jw_key(&w, "a", 1);
	dl_jw_str(&w, "x", 1);
	dl_jw_key(&w, "b", 1);
	dl_jw_null(&w);
	dl_jw_close(&w, '}');
	dl_jw_open(&w, '{');
	dl_jw_close(&w, '}');
	dl_jw_open(&w, '[');
	dl_jw_close(&w, ']');
	dl_jw_close(&w, ']');
	dl_jw_key(&w, "n", 1);
	dl_jw_int(&w, -42);
	dl_jw_key(&w, "t", 1);
	dl_jw_bool(&w, true);
	dl_jw_key(&w, "f", 1);
	dl_jw_bool(&w, false);
	dl_jw_key(&w, "mix", 3);
	dl_jw_open(&w, '[');
	dl_jw_int(&w, 7);
	dl_jw_raw(&w, "\"o\"", 3);
	dl_jw_close(&w, ']');
	dl_jw_key(&w, "in", 2);
	dl_jw_open(&w, '{');
	dl_jw_key(&w, "deep", 4);
	dl_jw_open(&w, '{');
	dl_jw_close(&w, '}');
	dl_jw_close(&w, '}');
	dl_jw_close(&w, '}');
	got = take(&w);
	assert_string_equal(got, want);
	free(got);
	free(want);
	json_decref(j);
}

/* Microseconds since 2000-01-01 UTC and what Postgres 15 answers for
 * to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'). */
static const struct {
	int64_t us;
	const char *text;
} pg_times[] = {
	{0, "2000-01-01T00:00:00.000Z"},
	{-1, "1999-12-31T23:59:59.999Z"},
	{849080033397999LL, "2026-11-27T07:33:53.397Z"},
	{-946684800000000LL, "1970-01-01T00:00:00.000Z"},
	{-3150532799999999LL, "1900-03-01T12:00:00.000Z"},
	{762566399500000LL, "2024-02-29T23:59:59.500Z"},
	{12627878400000000LL, "2400-02-29T00:00:00.000Z"},
	{3160861323004000LL, "2100-03-01T01:02:03.004Z"},
	{252455615999999999LL, "9999-12-31T23:59:59.999Z"},
	{252455616000000000LL, "10000-01-01T00:00:00.000Z"},
	{-63082281600000000LL, "0001-01-01T00:00:00.000Z"},
	{-63082281600001000LL, "0001-12-31T23:59:59.999Z"}, /* 1 BC */
	{-64464465600000000LL, "0044-03-15T12:00:00.000Z"}, /* 44 BC */
	{-12617661171100000LL, "1600-02-29T06:07:08.900Z"},
};

static void test_pg_time(void **state)
{
	(void)state;
	for (size_t i = 0; i < DL_ARRAY_LEN(pg_times); i++) {
		struct dl_jw w;
		char want[64], *got;

		snprintf(want, sizeof(want), "\"%s\"", pg_times[i].text);
		dl_jw_init(&w, 0);
		dl_jw_pg_time(&w, pg_times[i].us);
		got = take(&w);
		assert_string_equal(got, want);
		free(got);
	}
	for (int inf = 0; inf < 2; inf++) {
		struct dl_jw w;
		char *got;

		dl_jw_init(&w, 0);
		dl_jw_pg_time(&w, inf ? INT64_MAX : INT64_MIN);
		got = take(&w);
		assert_string_equal(got, "null");
		free(got);
	}
}

/* A column of a result made here: its type, its binary value and the text
 * value the same column has in a text result. */
struct col {
	Oid type;
	const char *bin; /* NULL: SQL NULL */
	int bin_len;
	const char *text;
};

static PGresult *result_of(const struct col *cols, int n, bool binary)
{
	PGresult *r = PQmakeEmptyPGresult(NULL, PGRES_TUPLES_OK);
	PGresAttDesc attrs[16];
	char names[16][8];

	assert_true(n <= 16);
	memset(attrs, 0, sizeof(attrs));
	for (int i = 0; i < n; i++) {
		snprintf(names[i], sizeof(names[i]), "c%d", i);
		attrs[i].name = names[i];
		attrs[i].format = binary ? 1 : 0;
		attrs[i].typid = binary ? cols[i].type : 25;
		attrs[i].typlen = -1;
		attrs[i].atttypmod = -1;
	}
	assert_int_equal(PQsetResultAttrs(r, n, attrs), 1);
	for (int i = 0; i < n; i++) {
		const char *v = binary ? cols[i].bin : cols[i].text;
		int len = v == NULL ? -1 : binary ? cols[i].bin_len : (int)strlen(v);

		assert_int_equal(PQsetvalue(r, 0, i, (char *)v, len), 1);
	}
	return r;
}

/* A row of every type the API's lists carry, written from its binary result,
 * is the text api_row_json gives for the same row as text (the database's
 * to_char text for the timestamp). */
static void test_row_write(void **state)
{
	static const char *const specs[] = {"id:s",    "count:i", "small:i",  "neg:i",   "on:b",   "off:b",
					    "at:s",    "never:s", "meta:j",   "doc:j",   "name:s", "none:i",
					    "label:s", "big:i",   "asText:s"};
	static const struct col cols[] = {
		{25, "camp_1", 6, "camp_1"},
		{23, "\x00\x00\x17\x70", 4, "6000"},
		{21, "\x00\x05", 2, "5"},
		{20, "\xff\xff\xff\xff\xff\xff\xff\xfe", 8, "-2"},
		{16, "\x01", 1, "t"},
		{16, "\x00", 1, "f"},
		/* 849080033397999 us */
		{1184, "\x00\x03\x04\x3b\xd9\xc6\xcc\xef", 8, "2026-11-27T07:33:53.397Z"},
		{1184, NULL, 0, NULL},
		{3802, "\x01{\"a\": [1, 2.5, null], \"b\": \"\\u00e9\\n\"}", 39,
		 "{\"a\": [1, 2.5, null], \"b\": \"\\u00e9\\n\"}"},
		{114, "{\"z\" : 1 ,\"a\":{}}", 17, "{\"z\" : 1 ,\"a\":{}}"},
		{1043, "we\"ird\\ \t \xc3\xa9", 12, "we\"ird\\ \t \xc3\xa9"},
		{20, NULL, 0, NULL},
		{25, "", 0, ""},
		{20, "\x7f\xff\xff\xff\xff\xff\xff\xff", 8, "9223372036854775807"},
		{23, "\xff\xff\xff\xfb", 4, "-5"},
	};
	int n = (int)DL_ARRAY_LEN(cols);
	PGresult *bin = result_of(cols, n, true), *text = result_of(cols, n, false);
	json_t *j = api_row_json(text, 0, specs, n);
	char *want = json_dumps(j, JSON_COMPACT), *got;
	struct dl_jw w;

	(void)state;
	assert_int_equal(DL_ARRAY_LEN(specs), DL_ARRAY_LEN(cols));
	dl_jw_init(&w, 0);
	assert_int_equal(api_row_write(&w, bin, 0, specs, n), 0);
	got = take(&w);
	assert_string_equal(got, want);
	free(got);
	free(want);
	json_decref(j);
	PQclear(bin);
	PQclear(text);
}

/* A column of a type the writer does not know fails the row (a 500) rather
 * than writing something else. */
static void test_row_write_unknown_type(void **state)
{
	static const char *const specs[] = {"id:s", "price:i"};
	static const struct col cols[] = {{25, "x", 1, "x"}, {1700, "\x00\x01\x00\x00\x00\x00\x00\x00", 8, "1"}};
	static const struct col bad_int[] = {{25, "x", 1, "x"}, {23, "\x00\x01\x02", 3, "1"}};
	PGresult *r = result_of(cols, 2, true);
	struct dl_jw w;

	(void)state;
	dl_jw_init(&w, 0);
	assert_int_equal(api_row_write(&w, r, 0, specs, 2), -EPROTO);
	dl_jw_free(&w);
	PQclear(r);
	r = result_of(bad_int, 2, true);
	dl_jw_init(&w, 0);
	assert_int_equal(api_row_write(&w, r, 0, specs, 2), -EPROTO);
	dl_jw_free(&w);
	PQclear(r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_strings),   cmocka_unit_test(test_ints),
		cmocka_unit_test(test_structure), cmocka_unit_test(test_pg_time),
		cmocka_unit_test(test_row_write), cmocka_unit_test(test_row_write_unknown_type),
	};

	return cmocka_run_group_tests_name("json writer", tests, NULL, NULL);
}
