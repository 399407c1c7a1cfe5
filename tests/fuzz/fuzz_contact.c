/* libFuzzer target: a contact's create and PATCH bodies, and the items of a
 * bulk upsert ({"contacts": [...]}), through api_contact_validate. */
#include <stdio.h>

#include "api.h"
#include "fuzz.h"

static void check(json_t *obj, bool partial, const char *prefix)
{
	char err[320];
	json_t *phone, *meta;

	memset(err, 0, sizeof(err));
	if (!api_contact_validate(obj, partial, prefix, err, sizeof(err))) {
		fz_check_message(err, sizeof(err));
		return;
	}
	FZ_REQUIRE(json_is_object(obj), "accepted a non-object");
	phone = json_object_get(obj, "phoneNumber");
	if (!partial)
		FZ_REQUIRE(phone != NULL, "create without a phoneNumber");
	if (phone != NULL)
		FZ_REQUIRE(dl_phone_valid(json_string_value(phone)), "phoneNumber accepted but not E.164");
	meta = json_object_get(obj, "metadata");
	if (meta != NULL) {
		char *text = json_dumps(meta, JSON_COMPACT);

		/* The handler stores json_dumps(metadata); it must serialize within the cap. */
		FZ_REQUIRE(text != NULL && strlen(text) <= 4096, "metadata accepted but not within 4096 bytes");
		free(text);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	json_t *body = fz_json(data, size), *items, *item;
	size_t i;

	if (body == NULL)
		return 0;
	check(body, false, NULL);
	check(body, true, NULL);
	items = json_object_get(body, "contacts");
	json_array_foreach(items, i, item) {
		char prefix[32];

		if (i >= 64)
			break;
		snprintf(prefix, sizeof(prefix), "contacts[%zu]", i);
		check(item, false, prefix);
	}
	json_decref(body);
	return 0;
}
