/* libFuzzer target: the small parsers every service uses on untrusted text:
 * dl_time_parse (with a format round trip), dl_phone_valid and dl_utf8_len
 * (each against an independent reading), dl_timezone_valid. */
#include <ctype.h>

#include "dl_util.h"
#include "fuzz.h"

/* 10000-01-01T00:00:00Z: dl_time_format prints four-digit years only. */
#define YEAR_10000_MS 253402300800000LL

static bool phone_reference(const char *s)
{
	size_t n = strlen(s);

	if (n < 9 || n > 16 || s[0] != '+' || s[1] == '0')
		return false;
	for (size_t i = 1; i < n; i++)
		if (!isdigit((unsigned char)s[i]))
			return false;
	return true;
}

static void check_time(const char *s)
{
	int64_t ms = 0, back = 0;
	char text[DL_TIME_MAX];

	if (dl_time_parse(s, &ms) != 0)
		return;
	if (ms < 0 || ms >= YEAR_10000_MS)
		return; /* an offset took it across an edge the format cannot show */
	dl_time_format(ms, text);
	FZ_REQUIRE(dl_time_parse(text, &back) == 0, "formatted time %s does not parse", text);
	FZ_REQUIRE(back == ms, "%s -> %lld -> %s -> %lld", s, (long long)ms, text, (long long)back);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s = fz_cstr(data, size);
	long n;

	check_time(s);
	FZ_REQUIRE(dl_phone_valid(s) == phone_reference(s), "dl_phone_valid(\"%s\") disagrees", s);
	n = dl_utf8_len(s);
	{
		/* jansson checks UTF-8 on its own; both must agree on what is text. */
		json_t *j = json_string(s);

		FZ_REQUIRE((n >= 0) == (j != NULL), "dl_utf8_len %ld, jansson %s", n, j ? "accepts" : "refuses");
		if (j != NULL)
			json_decref(j);
	}
	if (n >= 0)
		FZ_REQUIRE((size_t)n <= strlen(s), "more characters than bytes");
	if (size <= 80)
		(void)dl_timezone_valid(s);
	free(s);
	return 0;
}
