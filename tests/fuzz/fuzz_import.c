/* libFuzzer target: the import processor's row rules. The input is one row or
 * an array of rows, as stored from POST /v1/imports/api/bulk; each goes
 * through api_import_row_normalize. */
#include "api.h"
#include "fuzz.h"

static void check(json_t *row)
{
	json_t *contact = NULL, *v;
	char err[256];
	char *text;

	memset(err, 0, sizeof(err));
	if (!api_import_row_normalize(row, &contact, err, sizeof(err))) {
		FZ_REQUIRE(contact == NULL, "contact written on failure");
		fz_check_message(err, sizeof(err));
		return;
	}
	FZ_REQUIRE(json_is_object(contact), "normalized row is not an object");
	FZ_REQUIRE(dl_phone_valid(json_string_value(json_object_get(contact, "phoneNumber"))),
		   "phoneNumber accepted but not E.164");
	v = json_object_get(contact, "name");
	FZ_REQUIRE(json_is_null(v) || (json_is_string(v) && dl_utf8_len(json_string_value(v)) <= 200),
		   "name out of bounds");
	v = json_object_get(contact, "language");
	FZ_REQUIRE(json_is_null(v) || (json_is_string(v) && json_string_length(v) >= 1 &&
					json_string_length(v) <= 35),
		   "language out of bounds");
	v = json_object_get(contact, "metadata");
	FZ_REQUIRE(json_is_object(v), "metadata is not an object");
	text = json_dumps(v, JSON_COMPACT);
	FZ_REQUIRE(text != NULL && strlen(text) <= 4096, "metadata accepted over 4096 bytes");
	free(text);
	/* The processor dumps the valid rows into one statement. */
	text = json_dumps(contact, JSON_COMPACT);
	FZ_REQUIRE(text != NULL, "normalized row does not serialize");
	free(text);
	json_decref(contact);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	json_t *in = json_loadb((const char *)data, size, JSON_DECODE_ANY, NULL), *row;
	size_t i;

	if (in == NULL)
		return 0;
	if (json_is_array(in)) {
		json_array_foreach(in, i, row) {
			if (i >= 64)
				break;
			check(row);
		}
	} else {
		check(in);
	}
	json_decref(in);
	return 0;
}
