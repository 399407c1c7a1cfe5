/* libFuzzer target: the carrier's status callback. The input is
 * "SIGNATURE\nBODY": the body goes through dl_form_parse, the signature
 * through dl_twsig_valid. Round trips: an encoded form parses back to the
 * same pairs, and the computed signature verifies while a changed one does not. */
#include "dl_form.h"
#include "dl_twsig.h"
#include "fuzz.h"

static const char TOKEN[] = "fuzz-auth-token";
static const char URL[] = "http://127.0.0.1:8080/v1/carrier/status?attemptId=att_fuzz";

static void same_pairs(const struct dl_form *a, const struct dl_form *b)
{
	FZ_REQUIRE(a->n == b->n, "%d pairs, %d after a round trip", a->n, b->n);
	for (int i = 0; i < a->n; i++) {
		FZ_REQUIRE(!strcmp(a->pairs[i].key, b->pairs[i].key), "key %d changed in a round trip", i);
		FZ_REQUIRE(!strcmp(a->pairs[i].value, b->pairs[i].value), "value %d changed in a round trip", i);
	}
}

static void check_form(const struct dl_form *f, const char *sig)
{
	char want[DL_TWSIG_LEN], *enc = NULL, *esc;
	struct dl_form back;
	size_t enclen = 0;

	for (int i = 0; i < f->n; i++) {
		FZ_REQUIRE(f->pairs[i].key[0] != '\0', "empty key");
		FZ_REQUIRE(dl_form_get(f, f->pairs[i].key) != NULL, "a parsed key is not found");
		FZ_REQUIRE(dl_form_count(f, f->pairs[i].key) >= 1, "a parsed key counts 0");
	}
	/* The callback handler's lookups. */
	(void)dl_form_get(f, "CallSid");
	(void)dl_form_get_nth(f, "CallStatus", 1);
	(void)dl_twsig_valid(TOKEN, URL, f, sig);

	FZ_REQUIRE(dl_twsig_compute(TOKEN, URL, f, want) == 0, "signing failed");
	FZ_REQUIRE(strlen(want) == DL_TWSIG_LEN - 1, "signature of %zu chars", strlen(want));
	FZ_REQUIRE(dl_twsig_valid(TOKEN, URL, f, want), "own signature refused");
	want[0] = want[0] == 'A' ? 'B' : 'A';
	FZ_REQUIRE(!dl_twsig_valid(TOKEN, URL, f, want), "altered signature accepted");

	FZ_REQUIRE(dl_form_encode(f, &enc, &enclen) == 0, "encoding failed");
	FZ_REQUIRE(strlen(enc) == enclen, "encoded length");
	if (enclen <= DL_FORM_MAX_BYTES) {
		FZ_REQUIRE(dl_form_parse(enc, enclen, &back) == 0, "encoded form does not parse: %s", enc);
		same_pairs(f, &back);
		dl_form_free(&back);
	}
	free(enc);
	if (f->n > 0) {
		esc = dl_form_escape(f->pairs[0].value);
		FZ_REQUIRE(esc != NULL, "escape failed");
		free(esc);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *nl = memchr(data, '\n', size);
	char *sig = NULL;
	const char *body = (const char *)data;
	size_t len = size;
	struct dl_form f;

	if (nl != NULL) {
		sig = fz_cstr(data, (size_t)(nl - data));
		body = (const char *)nl + 1;
		len = size - (size_t)(nl - data) - 1;
	}
	/* The body is not NUL-terminated, as it is not in the handler's view of it. */
	{
		char *copy = malloc(len ? len : 1);

		if (copy == NULL)
			abort();
		memcpy(copy, body, len);
		memset(&f, 0x5a, sizeof(f));
		if (dl_form_parse(copy, len, &f) == 0) {
			FZ_REQUIRE(f.n >= 0 && f.n <= DL_FORM_MAX_PAIRS, "%d pairs", f.n);
			check_form(&f, sig);
			dl_form_free(&f);
		}
		free(copy);
	}
	/* A missing signature is refused, never a crash. */
	{
		struct dl_form empty;

		dl_form_init(&empty);
		FZ_REQUIRE(!dl_twsig_valid(TOKEN, URL, &empty, NULL), "NULL signature accepted");
	}
	free(sig);
	return 0;
}
