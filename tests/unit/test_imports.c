/* api_import_row_normalize: what an import row may hold and the contact it
 * becomes, case by case. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../api/api.h"

static char *repeat(const char *unit, int n)
{
	size_t len = strlen(unit);
	char *s = malloc(len * (size_t)n + 1);

	assert_non_null(s);
	for (int i = 0; i < n; i++)
		memcpy(s + len * (size_t)i, unit, len);
	s[len * (size_t)n] = '\0';
	return s;
}

/* {"phoneNumber": ..., key: <unit repeated n times>} */
static json_t *row_with(const char *key, const char *unit, int n)
{
	char *v = repeat(unit, n);
	json_t *o = json_pack("{s:s, s:s}", "phoneNumber", "+15551234567", key, v);

	free(v);
	return o;
}

static json_t *name_200(void) { return row_with("name", "a", 200); }
static json_t *name_201(void) { return row_with("name", "a", 201); }
static json_t *name_200_accented(void) { return row_with("name", "\xc3\xa9", 200); } /* 400 bytes */
static json_t *name_201_accented(void) { return row_with("name", "\xc3\xa9", 201); }
static json_t *language_35(void) { return row_with("language", "a", 35); }
static json_t *language_36(void) { return row_with("language", "a", 36); }
/* An extra key "note" whose metadata {"note":"x..."} is n + 11 bytes. */
static json_t *meta_4096(void) { return row_with("note", "x", 4085); }
static json_t *meta_4097(void) { return row_with("note", "x", 4086); }

static json_t *nested(int levels)
{
	json_t *v = json_string("leaf");

	/* The extra key's value holds levels - 1 objects; metadata adds one. */
	for (int i = 1; i < levels; i++)
		v = json_pack("{s:o}", "k", v);
	return json_pack("{s:s, s:o}", "phoneNumber", "+15551234567", "deep", v);
}

static json_t *depth_8(void) { return nested(8); }
static json_t *depth_9(void) { return nested(9); }

static void test_normalize_table(void **state)
{
	static const struct {
		const char *row;         /* JSON input, or NULL to use build */
		json_t *(*build)(void);
		const char *want;        /* the contact, when valid */
		const char *err;         /* else a substring of the message */
	} cases[] = {
		/* phoneNumber */
		{"{\"phoneNumber\":\"+14155550100\"}", NULL,
		 "{\"phoneNumber\":\"+14155550100\",\"name\":null,\"language\":null,\"metadata\":{}}", NULL},
		{"{\"phoneNumber\":\"+12345678\"}", NULL,
		 "{\"phoneNumber\":\"+12345678\",\"name\":null,\"language\":null,\"metadata\":{}}", NULL},
		{"{\"phoneNumber\":\"+123456789012345\"}", NULL,
		 "{\"phoneNumber\":\"+123456789012345\",\"name\":null,\"language\":null,\"metadata\":{}}", NULL},
		{"{\"phoneNumber\":\"+1234567\"}", NULL, NULL, "phoneNumber must be an E.164 number"},
		{"{\"phoneNumber\":\"+1234567890123456\"}", NULL, NULL, "phoneNumber must be an E.164 number"},
		{"{\"phoneNumber\":\"14155550100\"}", NULL, NULL, "phoneNumber must be an E.164 number"},
		{"{\"phoneNumber\":\"+04155550100\"}", NULL, NULL, "phoneNumber must be an E.164 number"},
		{"{\"phoneNumber\":\"+1415555O100\"}", NULL, NULL, "phoneNumber must be an E.164 number"},
		{"{\"phoneNumber\":\"+1 415 555 0100\"}", NULL, NULL, "phoneNumber must be an E.164 number"},
		{"{\"phoneNumber\":14155550100}", NULL, NULL, "phoneNumber must be an E.164 number"},
		{"{\"phoneNumber\":\"\"}", NULL, NULL, "phoneNumber must be an E.164 number"},
		{"{\"phoneNumber\":null}", NULL, NULL, "phoneNumber is required"},
		{"{\"name\":\"Ann\"}", NULL, NULL, "phoneNumber is required"},
		{"{}", NULL, NULL, "phoneNumber is required"},
		/* the row itself */
		{"[]", NULL, NULL, "row must be an object"},
		{"\"+14155550100\"", NULL, NULL, "row must be an object"},
		{"42", NULL, NULL, "row must be an object"},
		{"null", NULL, NULL, "row must be an object"},
		/* name */
		{"{\"phoneNumber\":\"+14155550100\",\"name\":\"Ann Lee\"}", NULL,
		 "{\"phoneNumber\":\"+14155550100\",\"name\":\"Ann Lee\",\"language\":null,\"metadata\":{}}", NULL},
		{"{\"phoneNumber\":\"+14155550100\",\"name\":null}", NULL,
		 "{\"phoneNumber\":\"+14155550100\",\"name\":null,\"language\":null,\"metadata\":{}}", NULL},
		{"{\"phoneNumber\":\"+14155550100\",\"name\":7}", NULL, NULL, "name must be a string"},
		{"{\"phoneNumber\":\"+14155550100\",\"name\":{\"first\":\"Ann\"}}", NULL, NULL, "name must be a string"},
		{NULL, name_200, "", NULL},
		{NULL, name_201, NULL, "at most 200 characters"},
		{NULL, name_200_accented, "", NULL},
		{NULL, name_201_accented, NULL, "at most 200 characters"},
		/* language */
		{"{\"phoneNumber\":\"+14155550100\",\"language\":\"en-US\"}", NULL,
		 "{\"phoneNumber\":\"+14155550100\",\"name\":null,\"language\":\"en-US\",\"metadata\":{}}", NULL},
		{"{\"phoneNumber\":\"+14155550100\",\"language\":null}", NULL,
		 "{\"phoneNumber\":\"+14155550100\",\"name\":null,\"language\":null,\"metadata\":{}}", NULL},
		{"{\"phoneNumber\":\"+14155550100\",\"language\":\"\"}", NULL, NULL, "language must be 1 to 35"},
		{"{\"phoneNumber\":\"+14155550100\",\"language\":\"en_US\"}", NULL, NULL, "language must be 1 to 35"},
		{"{\"phoneNumber\":\"+14155550100\",\"language\":\"fr \"}", NULL, NULL, "language must be 1 to 35"},
		{"{\"phoneNumber\":\"+14155550100\",\"language\":5}", NULL, NULL, "language must be 1 to 35"},
		{NULL, language_35, "", NULL},
		{NULL, language_36, NULL, "language must be 1 to 35"},
		/* every other key becomes metadata */
		{"{\"phoneNumber\":\"+14155550100\",\"city\":\"Lyon\",\"age\":31,\"vip\":true,\"tags\":[\"a\"],"
		 "\"note\":null}",
		 NULL,
		 "{\"phoneNumber\":\"+14155550100\",\"name\":null,\"language\":null,"
		 "\"metadata\":{\"city\":\"Lyon\",\"age\":31,\"vip\":true,\"tags\":[\"a\"],\"note\":null}}",
		 NULL},
		{"{\"phoneNumber\":\"+14155550100\",\"name\":\"Bo\",\"language\":\"sv\",\"id\":\"x1\"}", NULL,
		 "{\"phoneNumber\":\"+14155550100\",\"name\":\"Bo\",\"language\":\"sv\",\"metadata\":{\"id\":\"x1\"}}",
		 NULL},
		/* an explicit metadata object is merged; the top-level key wins */
		{"{\"phoneNumber\":\"+14155550100\",\"metadata\":{\"a\":1,\"b\":2},\"b\":3}", NULL,
		 "{\"phoneNumber\":\"+14155550100\",\"name\":null,\"language\":null,\"metadata\":{\"a\":1,\"b\":3}}",
		 NULL},
		{"{\"phoneNumber\":\"+14155550100\",\"metadata\":null}", NULL,
		 "{\"phoneNumber\":\"+14155550100\",\"name\":null,\"language\":null,\"metadata\":{}}", NULL},
		{"{\"phoneNumber\":\"+14155550100\",\"metadata\":\"vip\"}", NULL, NULL, "metadata must be an object"},
		{"{\"phoneNumber\":\"+14155550100\",\"metadata\":[1]}", NULL, NULL, "metadata must be an object"},
		/* metadata caps */
		{NULL, meta_4096, "", NULL},
		{NULL, meta_4097, NULL, "larger than 4096 bytes"},
		{NULL, depth_8, "", NULL},
		{NULL, depth_9, NULL, "deeper than 8 levels"},
	};

	(void)state;
	for (size_t i = 0; i < DL_ARRAY_LEN(cases); i++) {
		json_t *row = cases[i].row ? json_loads(cases[i].row, JSON_DECODE_ANY, NULL) : cases[i].build();
		json_t *sentinel = json_string("untouched"), *got = sentinel;
		char err[256] = "";
		bool ok;

		if (row == NULL)
			fail_msg("case %zu: bad input", i);
		ok = api_import_row_normalize(row, &got, err, sizeof(err));
		if (cases[i].err != NULL) {
			if (ok)
				fail_msg("case %zu: %s accepted", i, cases[i].row ? cases[i].row : "(built)");
			if (strstr(err, cases[i].err) == NULL)
				fail_msg("case %zu: message \"%s\" lacks \"%s\"", i, err, cases[i].err);
			/* Written only on success. */
			assert_ptr_equal(got, sentinel);
		} else {
			if (!ok)
				fail_msg("case %zu: rejected: %s", i, err);
			assert_ptr_not_equal(got, sentinel);
			/* The contact holds its own references: the row may go first. */
			json_decref(row);
			row = NULL;
			assert_true(json_is_object(json_object_get(got, "metadata")));
			assert_int_equal(json_object_size(got), 4);
			if (cases[i].want[0] != '\0') {
				json_t *want = json_loads(cases[i].want, 0, NULL);

				assert_non_null(want);
				if (!json_equal(got, want)) {
					char *text = json_dumps(got, JSON_COMPACT);

					fail_msg("case %zu: got %s, want %s", i, text, cases[i].want);
				}
				json_decref(want);
			}
			json_decref(got);
		}
		json_decref(row);
		json_decref(sentinel);
	}
}

/* The row is not changed: its extra keys are copied, not moved. */
static void test_row_untouched(void **state)
{
	json_t *row = json_pack("{s:s, s:s, s:{s:i}}", "phoneNumber", "+14155550100", "city", "Oslo", "metadata",
				"a", 1);
	json_t *copy = json_deep_copy(row), *contact = NULL;
	char err[256];

	(void)state;
	assert_true(api_import_row_normalize(row, &contact, err, sizeof(err)));
	assert_true(json_equal(row, copy));
	assert_string_equal(json_string_value(json_object_get(json_object_get(contact, "metadata"), "city")), "Oslo");
	json_decref(contact);
	json_decref(copy);
	json_decref(row);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_normalize_table),
		cmocka_unit_test(test_row_untouched),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
