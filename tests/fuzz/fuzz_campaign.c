/* libFuzzer target: a campaign's create and PATCH bodies, parsed as the API
 * parses them (jansson, duplicate keys refused) and checked by
 * api_campaign_validate in both modes. */
#include "api.h"
#include "fuzz.h"

/* 2026-01-01T00:00:00Z: a fixed "now" keeps runs reproducible. */
#define NOW_MS 1767225600000LL

static void check(json_t *body, bool partial)
{
	char err[256];

	memset(err, 0, sizeof(err));
	if (!api_campaign_validate(body, partial, NOW_MS, err, sizeof(err))) {
		fz_check_message(err, sizeof(err));
		return;
	}
	/* Accepted: what the handler relies on holds. */
	FZ_REQUIRE(json_is_object(body), "accepted a non-object");
	if (!partial) {
		FZ_REQUIRE(json_is_string(json_object_get(body, "name")), "create without a name");
		FZ_REQUIRE(json_is_string(json_object_get(body, "flowId")), "create without a flowId");
		FZ_REQUIRE(json_is_string(json_object_get(body, "audienceId")), "create without an audienceId");
	}
	{
		json_t *name = json_object_get(body, "name");

		if (name != NULL) {
			long n = dl_utf8_len(json_string_value(name));

			FZ_REQUIRE(n >= 1 && n <= 200, "name of %ld characters accepted", n);
			FZ_REQUIRE(strlen(json_string_value(name)) == json_string_length(name), "name with a NUL");
		}
	}
	{
		json_t *at = json_object_get(body, "scheduledAt");
		int64_t ms;

		if (json_is_string(at)) {
			FZ_REQUIRE(dl_time_parse(json_string_value(at), &ms) == 0 && ms > NOW_MS,
				   "scheduledAt %s accepted", json_string_value(at));
			if (!partial)
				FZ_REQUIRE(json_is_string(json_object_get(body, "timezone")),
					   "scheduledAt without a timezone accepted");
		}
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	json_t *body = fz_json(data, size);

	if (body == NULL)
		return 0;
	check(body, false);
	check(body, true);
	json_decref(body);
	return 0;
}
