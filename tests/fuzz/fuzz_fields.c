/* libFuzzer target: api_check_fields, the check of every body that has no
 * validator of its own (audiences, their contact lists, the do-not-call
 * list, imports' envelope), on those handlers' own tables plus one
 * with every field type. An accepted body must hold exactly what the table
 * says; a refused one gets a message the API can send. */
#include "api.h"
#include "fuzz.h"

struct table {
	const struct api_field *f;
	int n;
};

static const struct api_field every_type[] = {
	{"s", API_F_STRING, false, true, 2, 5},
	{"i", API_F_INT, false, false, -3, 1000},
	{"o", API_F_OBJECT, false, true, 0, 0},
	{"a", API_F_ARRAY, false, false, 0, 3},
	{"t", API_F_TIME, false, true, 0, 0},
	{"b", API_F_BOOL, false, false, 0, 0},
};

#define T(x) {x, (int)DL_ARRAY_LEN(x)}
static const struct table tables[] = {
	{api_audience_fields, API_AUDIENCE_NFIELDS},
	{api_audience_patch_fields, API_AUDIENCE_NFIELDS},
	{api_contact_ids_fields, API_CONTACT_IDS_NFIELDS},
	{api_dnc_fields, API_DNC_NFIELDS},
	{api_import_fields, API_IMPORT_NFIELDS},
	T(every_type),
};

static void check_accepted(json_t *body, const struct table *t)
{
	const char *key;
	json_t *v;

	FZ_REQUIRE(json_is_object(body), "accepted a non-object");
	json_object_foreach(body, key, v) {
		const struct api_field *f = NULL;
		int64_t ms;

		for (int i = 0; i < t->n; i++)
			if (!strcmp(t->f[i].name, key))
				f = &t->f[i];
		FZ_REQUIRE(f != NULL, "unknown field %s accepted", key);
		if (json_is_null(v)) {
			FZ_REQUIRE(f->nullable && !f->required, "null %s accepted", key);
			continue;
		}
		switch (f->type) {
		case API_F_STRING: {
			long n = dl_utf8_len(json_string_value(v));

			FZ_REQUIRE(json_is_string(v), "%s not a string", key);
			FZ_REQUIRE(strlen(json_string_value(v)) == json_string_length(v), "%s with a NUL", key);
			FZ_REQUIRE(n >= f->min && n <= f->max, "%s of %ld characters", key, n);
			break;
		}
		case API_F_INT:
			FZ_REQUIRE(json_is_integer(v) && json_integer_value(v) >= f->min &&
					   json_integer_value(v) <= f->max,
				   "%s out of range", key);
			break;
		case API_F_OBJECT:
			FZ_REQUIRE(json_is_object(v), "%s not an object", key);
			break;
		case API_F_ARRAY:
			FZ_REQUIRE(json_is_array(v) && (long)json_array_size(v) >= f->min &&
					   (long)json_array_size(v) <= f->max,
				   "%s: wrong array", key);
			break;
		case API_F_TIME:
			FZ_REQUIRE(json_is_string(v) && dl_time_parse(json_string_value(v), &ms) == 0, "%s: bad time",
				   key);
			break;
		case API_F_BOOL:
			FZ_REQUIRE(json_is_boolean(v), "%s not a boolean", key);
			break;
		}
	}
	for (int i = 0; i < t->n; i++)
		FZ_REQUIRE(!t->f[i].required || json_object_get(body, t->f[i].name) != NULL, "%s missing",
			   t->f[i].name);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	json_t *body = fz_json(data, size);

	if (body == NULL)
		return 0;
	for (size_t i = 0; i < DL_ARRAY_LEN(tables); i++) {
		char err[256];

		memset(err, 0, sizeof(err));
		if (api_check_fields(body, tables[i].f, tables[i].n, err, sizeof(err)))
			check_accepted(body, &tables[i]);
		else
			fz_check_message(err, sizeof(err));
	}
	json_decref(body);
	return 0;
}
