/* api_contact_validate: what a contact may hold, case by case. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../api/api.h"

/* Builders for inputs too long to write inline. */
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

static json_t *with_name(const char *unit, int n)
{
	char *name = repeat(unit, n);
	json_t *o = json_pack("{s:s, s:s}", "phoneNumber", "+15551234567", "name", name);

	free(name);
	return o;
}

static json_t *name_200_ascii(void) { return with_name("a", 200); }
static json_t *name_201_ascii(void) { return with_name("a", 201); }
static json_t *name_200_accented(void) { return with_name("\xc3\xa9", 200); }   /* é: 400 bytes */
static json_t *name_201_accented(void) { return with_name("\xc3\xa9", 201); }
static json_t *name_200_emoji(void) { return with_name("\xf0\x9f\x98\x80", 200); } /* 800 bytes */

static json_t *with_language(int n)
{
	char *lang = repeat("a", n);
	json_t *o = json_pack("{s:s, s:s}", "phoneNumber", "+15551234567", "language", lang);

	free(lang);
	return o;
}

static json_t *language_35(void) { return with_language(35); }
static json_t *language_36(void) { return with_language(36); }

/* metadata {"k":"xxx..."} serialized to total bytes. */
static json_t *with_meta_size(int total)
{
	char *v = repeat("x", total - 8);
	json_t *o = json_pack("{s:s, s:{s:s}}", "phoneNumber", "+15551234567", "metadata", "k", v);

	free(v);
	return o;
}

static json_t *meta_4096(void) { return with_meta_size(4096); }
static json_t *meta_4097(void) { return with_meta_size(4097); }

/* metadata nested depth objects deep ({} is depth 1). */
static json_t *with_meta_depth(int depth)
{
	json_t *m = json_object();

	for (int i = 1; i < depth; i++)
		m = json_pack("{s:o}", "a", m);
	return json_pack("{s:s, s:o}", "phoneNumber", "+15551234567", "metadata", m);
}

static json_t *meta_depth_8(void) { return with_meta_depth(8); }
static json_t *meta_depth_9(void) { return with_meta_depth(9); }

static json_t *name_with_nul(void)
{
	return json_pack("{s:s, s:s#}", "phoneNumber", "+15551234567", "name", "a\0b", (int)3);
}

static json_t *name_bad_utf8(void)
{
	json_t *o = json_pack("{s:s}", "phoneNumber", "+15551234567");

	json_object_set_new(o, "name", json_string_nocheck("\xff\xfe"));
	return o;
}

struct vcase {
	const char *what;
	const char *json;         /* the object, or NULL when make builds it */
	json_t *(*make)(void);
	bool partial;
	const char *prefix;
	bool ok;
	const char *msg;          /* a piece of the error message */
};

static const struct vcase cases[] = {
	/* phone numbers */
	{"8 digits", "{\"phoneNumber\":\"+12345678\"}", NULL, false, NULL, true, NULL},
	{"15 digits", "{\"phoneNumber\":\"+123456789012345\"}", NULL, false, NULL, true, NULL},
	{"typical US", "{\"phoneNumber\":\"+15551234567\"}", NULL, false, NULL, true, NULL},
	{"7 digits", "{\"phoneNumber\":\"+1234567\"}", NULL, false, NULL, false, "phoneNumber must be an E.164"},
	{"16 digits", "{\"phoneNumber\":\"+1234567890123456\"}", NULL, false, NULL, false, "E.164"},
	{"leading 0", "{\"phoneNumber\":\"+01234567890\"}", NULL, false, NULL, false, "E.164"},
	{"letters", "{\"phoneNumber\":\"+1555abc4567\"}", NULL, false, NULL, false, "E.164"},
	{"no plus", "{\"phoneNumber\":\"15551234567\"}", NULL, false, NULL, false, "E.164"},
	{"plus only", "{\"phoneNumber\":\"+\"}", NULL, false, NULL, false, "E.164"},
	{"empty", "{\"phoneNumber\":\"\"}", NULL, false, NULL, false, "E.164"},
	{"inner space", "{\"phoneNumber\":\"+1 5551234567\"}", NULL, false, NULL, false, "E.164"},
	{"dashes", "{\"phoneNumber\":\"+1-555-123-4567\"}", NULL, false, NULL, false, "E.164"},
	{"trailing newline", "{\"phoneNumber\":\"+15551234567\\n\"}", NULL, false, NULL, false, "E.164"},
	{"phone as number", "{\"phoneNumber\":15551234567}", NULL, false, NULL, false,
	 "phoneNumber must be a string"},
	{"phone null", "{\"phoneNumber\":null}", NULL, false, NULL, false, "phoneNumber must not be null"},
	{"phone missing", "{\"name\":\"Ann\"}", NULL, false, NULL, false, "phoneNumber is required"},
	{"phone missing, PATCH", "{\"name\":\"Ann\"}", NULL, true, NULL, true, NULL},
	{"empty PATCH", "{}", NULL, true, NULL, true, NULL},
	{"bad phone, PATCH", "{\"phoneNumber\":\"+0123\"}", NULL, true, NULL, false, "E.164"},
	{"phone null, PATCH", "{\"phoneNumber\":null}", NULL, true, NULL, false, "must not be null"},

	/* name */
	{"name ok", "{\"phoneNumber\":\"+15551234567\",\"name\":\"Ann Lee\"}", NULL, false, NULL, true, NULL},
	{"name null", "{\"phoneNumber\":\"+15551234567\",\"name\":null}", NULL, false, NULL, true, NULL},
	{"name empty", "{\"phoneNumber\":\"+15551234567\",\"name\":\"\"}", NULL, false, NULL, true, NULL},
	{"name 200 ascii", NULL, name_200_ascii, false, NULL, true, NULL},
	{"name 201 ascii", NULL, name_201_ascii, false, NULL, false, "name must be at most 200 characters"},
	{"name 200 accented (400 bytes)", NULL, name_200_accented, false, NULL, true, NULL},
	{"name 201 accented", NULL, name_201_accented, false, NULL, false, "at most 200 characters"},
	{"name 200 emoji (800 bytes)", NULL, name_200_emoji, false, NULL, true, NULL},
	{"name number", "{\"phoneNumber\":\"+15551234567\",\"name\":5}", NULL, false, NULL, false,
	 "name must be a string or null"},
	{"name object", "{\"phoneNumber\":\"+15551234567\",\"name\":{}}", NULL, false, NULL, false,
	 "name must be a string"},
	{"name with NUL", NULL, name_with_nul, false, NULL, false, "without NUL"},
	{"name not UTF-8", NULL, name_bad_utf8, false, NULL, false, "valid text"},

	/* language */
	{"language en", "{\"phoneNumber\":\"+15551234567\",\"language\":\"en\"}", NULL, false, NULL, true, NULL},
	{"language zh-Hant-TW", "{\"phoneNumber\":\"+15551234567\",\"language\":\"zh-Hant-TW\"}", NULL, false,
	 NULL, true, NULL},
	{"language null", "{\"phoneNumber\":\"+15551234567\",\"language\":null}", NULL, false, NULL, true, NULL},
	{"language 35", NULL, language_35, false, NULL, true, NULL},
	{"language 36", NULL, language_36, false, NULL, false, "language must be 1 to 35 characters"},
	{"language empty", "{\"phoneNumber\":\"+15551234567\",\"language\":\"\"}", NULL, false, NULL, false,
	 "language must be 1 to 35"},
	{"language underscore", "{\"phoneNumber\":\"+15551234567\",\"language\":\"en_US\"}", NULL, false, NULL,
	 false, "language must be a language tag"},
	{"language space", "{\"phoneNumber\":\"+15551234567\",\"language\":\"en US\"}", NULL, false, NULL, false,
	 "language tag"},
	{"language accented", "{\"phoneNumber\":\"+15551234567\",\"language\":\"fr-\\u00e9\"}", NULL, false, NULL,
	 false, "language tag"},
	{"language number", "{\"phoneNumber\":\"+15551234567\",\"language\":1}", NULL, false, NULL, false,
	 "language must be a string"},

	/* metadata */
	{"metadata empty", "{\"phoneNumber\":\"+15551234567\",\"metadata\":{}}", NULL, false, NULL, true, NULL},
	{"metadata mixed", "{\"phoneNumber\":\"+15551234567\",\"metadata\":{\"a\":1,\"b\":[1,{\"c\":null}],\"d\":"
			   "\"x\"}}",
	 NULL, false, NULL, true, NULL},
	{"metadata 4096 bytes", NULL, meta_4096, false, NULL, true, NULL},
	{"metadata 4097 bytes", NULL, meta_4097, false, NULL, false, "metadata is larger than 4096 bytes"},
	{"metadata depth 8", NULL, meta_depth_8, false, NULL, true, NULL},
	{"metadata depth 9", NULL, meta_depth_9, false, NULL, false, "metadata is nested deeper than 8"},
	{"metadata array", "{\"phoneNumber\":\"+15551234567\",\"metadata\":[]}", NULL, false, NULL, false,
	 "metadata must be an object"},
	{"metadata string", "{\"phoneNumber\":\"+15551234567\",\"metadata\":\"{}\"}", NULL, false, NULL, false,
	 "metadata must be an object"},
	{"metadata null", "{\"phoneNumber\":\"+15551234567\",\"metadata\":null}", NULL, false, NULL, false,
	 "metadata must not be null"},

	/* shape */
	{"unknown field", "{\"phoneNumber\":\"+15551234567\",\"email\":\"a@b.c\"}", NULL, false, NULL, false,
	 "unknown field \"email\""},
	{"unknown field, PATCH", "{\"id\":\"ct_x\"}", NULL, true, NULL, false, "unknown field \"id\""},
	{"field names are case-sensitive", "{\"phonenumber\":\"+15551234567\"}", NULL, false, NULL, false,
	 "unknown field \"phonenumber\""},
	{"array", "[]", NULL, false, NULL, false, "request body must be a JSON object"},
	{"string", "\"+15551234567\"", NULL, false, NULL, false, "must be a JSON object"},

	/* messages inside a list name the item */
	{"prefix, bad phone", "{\"phoneNumber\":\"+0\"}", NULL, false, "contacts[3]", false,
	 "contacts[3].phoneNumber: must be an E.164"},
	{"prefix, missing phone", "{}", NULL, false, "contacts[0]", false, "contacts[0].phoneNumber: is required"},
	{"prefix, long name", NULL, name_201_ascii, false, "contacts[7]", false,
	 "contacts[7].name: must be at most 200"},
	{"prefix, deep metadata", NULL, meta_depth_9, false, "contacts[2]", false,
	 "contacts[2].metadata: is nested deeper"},
	{"prefix, unknown field", "{\"phoneNumber\":\"+15551234567\",\"x\":1}", NULL, false, "contacts[12]",
	 false, "contacts[12]: unknown field \"x\""},
	{"prefix, not an object", "42", NULL, false, "contacts[5]", false, "contacts[5]: must be an object"},
	{"prefix, valid", "{\"phoneNumber\":\"+15551234567\"}", NULL, false, "contacts[1]", true, NULL},
};

static void test_validate_table(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct vcase *t = &cases[i];
		char err[512] = "";
		json_t *obj;
		bool ok;

		obj = t->make ? t->make() : json_loads(t->json, JSON_DECODE_ANY, NULL);
		if (obj == NULL)
			fail_msg("case \"%s\": test input does not parse", t->what);
		ok = api_contact_validate(obj, t->partial, t->prefix, err, sizeof(err));
		json_decref(obj);
		if (ok != t->ok)
			fail_msg("case \"%s\": expected %s, got %s (%s)", t->what, t->ok ? "valid" : "invalid",
				 ok ? "valid" : "invalid", err);
		if (!t->ok && strstr(err, t->msg) == NULL)
			fail_msg("case \"%s\": message \"%s\" does not contain \"%s\"", t->what, err, t->msg);
	}
}

/* A long unknown field name is cut and never overflows the message. */
static void test_unknown_field_echo_is_bounded(void **state)
{
	char *key = repeat("k", 5000);
	json_t *obj = json_pack("{s:s, s:i}", "phoneNumber", "+15551234567", key, 1);
	char err[128];

	(void)state;
	assert_false(api_contact_validate(obj, false, NULL, err, sizeof(err)));
	assert_non_null(strstr(err, "unknown field"));
	assert_true(strlen(err) < sizeof(err));
	json_decref(obj);
	free(key);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_validate_table),
		cmocka_unit_test(test_unknown_field_echo_is_bounded),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
