/* Unit tests of dl_form (form-urlencoded parsing, caps, encoding) and
 * dl_twsig (the carrier's request signature). Table-driven, plus a random
 * round trip through the encoder and the parser. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dl_form.h"
#include "dl_twsig.h"

static void test_parse_table(void **state)
{
	static const struct {
		const char *in;
		int rc;
		int n;
		/* Expected pairs as "key=value" after decoding, '|' separated. */
		const char *pairs;
	} cases[] = {
		{"", 0, 0, ""},
		{"a=1", 0, 1, "a=1"},
		{"a=1&b=2", 0, 2, "a=1|b=2"},
		{"a=1&a=2&a=3", 0, 3, "a=1|a=2|a=3"},
		{"a=hello+world", 0, 1, "a=hello world"},
		{"a=%2B1555%20x", 0, 1, "a=+1555 x"},
		{"%41%62=%7e%7E", 0, 1, "Ab=~~"},
		{"a", 0, 1, "a="},
		{"a=", 0, 1, "a="},
		{"a==b", 0, 1, "a==b"},
		{"a=1&&b=2&", 0, 2, "a=1|b=2"},
		{"&&&", 0, 0, ""},
		{"To=%2B15550001111&StatusCallbackEvent=initiated+ringing", 0, 2,
		 "To=+15550001111|StatusCallbackEvent=initiated ringing"},
		{"a=%C3%A9", 0, 1, "a=\xc3\xa9"},
		{"=1", -EINVAL, 0, ""},
		{"a=1&=2", -EINVAL, 0, ""},
		{"a=%", -EINVAL, 0, ""},
		{"a=%4", -EINVAL, 0, ""},
		{"a=%4g", -EINVAL, 0, ""},
		{"a=%g4", -EINVAL, 0, ""},
		{"a=%00", -EINVAL, 0, ""},
		{"%00=1", -EINVAL, 0, ""},
		{"a%=1", -EINVAL, 0, ""},
	};

	(void)state;
	for (size_t i = 0; i < DL_ARRAY_LEN(cases); i++) {
		struct dl_form f;
		char got[512] = "";
		size_t off = 0;
		int rc = dl_form_parse(cases[i].in, strlen(cases[i].in), &f);

		if (rc != cases[i].rc)
			fail_msg("case %zu \"%s\": rc %d, want %d", i, cases[i].in, rc, cases[i].rc);
		if (rc != 0)
			continue;
		assert_int_equal(f.n, cases[i].n);
		for (int p = 0; p < f.n; p++)
			off += (size_t)snprintf(got + off, sizeof(got) - off, "%s%s=%s", p ? "|" : "",
						f.pairs[p].key, f.pairs[p].value);
		if (strcmp(got, cases[i].pairs) != 0)
			fail_msg("case %zu \"%s\": got \"%s\", want \"%s\"", i, cases[i].in, got, cases[i].pairs);
		dl_form_free(&f);
	}
}

static void test_parse_nul_and_length(void **state)
{
	static const char raw[] = "a=1\0&b=2";
	struct dl_form f;

	(void)state;
	/* A raw NUL inside the declared length is refused, not a terminator. */
	assert_int_equal(dl_form_parse(raw, sizeof(raw) - 1, &f), -EINVAL);
	/* Only len bytes are read: the rest of the buffer is not parsed. */
	assert_int_equal(dl_form_parse("a=1&b=2", 3, &f), 0);
	assert_int_equal(f.n, 1);
	assert_string_equal(dl_form_get(&f, "a"), "1");
	dl_form_free(&f);
	dl_form_free(NULL);
}

static void test_caps(void **state)
{
	char *body = malloc(DL_FORM_MAX_BYTES + 2);
	size_t off = 0;
	struct dl_form f;

	(void)state;
	assert_non_null(body);
	/* Exactly 64 pairs pass; 65 do not. */
	for (int i = 0; i < DL_FORM_MAX_PAIRS; i++)
		off += (size_t)sprintf(body + off, "%sk%d=v", i ? "&" : "", i);
	assert_int_equal(dl_form_parse(body, off, &f), 0);
	assert_int_equal(f.n, DL_FORM_MAX_PAIRS);
	assert_string_equal(dl_form_get(&f, "k63"), "v");
	dl_form_free(&f);
	off += (size_t)sprintf(body + off, "&k64=v");
	assert_int_equal(dl_form_parse(body, off, &f), -EINVAL);
	/* A body of exactly the cap passes; one byte more does not. */
	memset(body, 'x', DL_FORM_MAX_BYTES + 1);
	memcpy(body, "a=", 2);
	assert_int_equal(dl_form_parse(body, DL_FORM_MAX_BYTES, &f), 0);
	assert_int_equal(strlen(dl_form_get(&f, "a")), DL_FORM_MAX_BYTES - 2);
	dl_form_free(&f);
	assert_int_equal(dl_form_parse(body, DL_FORM_MAX_BYTES + 1, &f), -EINVAL);
	free(body);
}

static void test_lookup(void **state)
{
	static const char in[] = "StatusCallbackEvent=initiated&To=%2B1&StatusCallbackEvent=completed";
	struct dl_form f;

	(void)state;
	assert_int_equal(dl_form_parse(in, strlen(in), &f), 0);
	assert_string_equal(dl_form_get(&f, "To"), "+1");
	assert_null(dl_form_get(&f, "to"));
	assert_int_equal(dl_form_count(&f, "StatusCallbackEvent"), 2);
	assert_string_equal(dl_form_get_nth(&f, "StatusCallbackEvent", 0), "initiated");
	assert_string_equal(dl_form_get_nth(&f, "StatusCallbackEvent", 1), "completed");
	assert_null(dl_form_get_nth(&f, "StatusCallbackEvent", 2));
	assert_int_equal(dl_form_count(&f, "Missing"), 0);
	dl_form_free(&f);
}

static void test_encode(void **state)
{
	static const struct {
		const char *key, *value, *want;
	} cases[] = {
		{"To", "+15550001111", "To=%2B15550001111"},
		{"Url", "http://h:1/v?a=1&b=2", "Url=http%3A%2F%2Fh%3A1%2Fv%3Fa%3D1%26b%3D2"},
		{"k", "a b", "k=a+b"},
		{"k k", "-._~", "k+k=-._~"},
		{"k", "", "k="},
		{"k", "\xc3\xa9%", "k=%C3%A9%25"},
	};

	(void)state;
	for (size_t i = 0; i < DL_ARRAY_LEN(cases); i++) {
		struct dl_form f;
		char *out = NULL;
		size_t len = 0;

		dl_form_init(&f);
		assert_int_equal(dl_form_add(&f, cases[i].key, cases[i].value), 0);
		assert_int_equal(dl_form_encode(&f, &out, &len), 0);
		assert_string_equal(out, cases[i].want);
		assert_int_equal(len, strlen(cases[i].want));
		free(out);
	}
	{
		char *e = dl_form_escape("a b+c/");

		assert_string_equal(e, "a%20b%2Bc%2F");
		free(e);
	}
	{
		struct dl_form f;

		dl_form_init(&f);
		for (int i = 0; i < DL_FORM_MAX_PAIRS; i++)
			assert_int_equal(dl_form_add(&f, "k", "v"), 0);
		assert_int_equal(dl_form_add(&f, "k", "v"), -E2BIG);
	}
}

/* Random pairs (every byte but NUL) survive encode then parse. */
static void test_round_trip(void **state)
{
	(void)state;
	srand(7);
	for (int iter = 0; iter < 500; iter++) {
		char keys[8][16], values[8][32];
		struct dl_form in, out;
		char *text = NULL;
		size_t len = 0;
		int n = 1 + rand() % 8;

		dl_form_init(&in);
		for (int i = 0; i < n; i++) {
			int kl = 1 + rand() % 15, vl = rand() % 32;

			for (int c = 0; c < kl; c++)
				keys[i][c] = (char)(1 + rand() % 255);
			keys[i][kl] = '\0';
			for (int c = 0; c < vl; c++)
				values[i][c] = (char)(1 + rand() % 255);
			values[i][vl] = '\0';
			assert_int_equal(dl_form_add(&in, keys[i], values[i]), 0);
		}
		assert_int_equal(dl_form_encode(&in, &text, &len), 0);
		assert_int_equal(dl_form_parse(text, len, &out), 0);
		assert_int_equal(out.n, n);
		for (int i = 0; i < n; i++) {
			assert_string_equal(out.pairs[i].key, keys[i]);
			assert_string_equal(out.pairs[i].value, values[i]);
		}
		dl_form_free(&out);
		free(text);
	}
}

/* Random bytes never crash the parser, and whatever parses has no NUL
 * inside its declared strings. */
static void test_parse_fuzz(void **state)
{
	static const char alphabet[] = "ab=&%+0fG\x01\xff";
	char buf[64];

	(void)state;
	srand(11);
	for (int iter = 0; iter < 20000; iter++) {
		size_t len = (size_t)(rand() % (int)sizeof(buf));
		struct dl_form f;

		for (size_t i = 0; i < len; i++)
			buf[i] = alphabet[rand() % (int)(sizeof(alphabet) - 1)];
		if (dl_form_parse(buf, len, &f) == 0) {
			for (int p = 0; p < f.n; p++)
				assert_true(strlen(f.pairs[p].key) > 0);
			dl_form_free(&f);
		}
	}
}

/* Twilio's documented example (verified with
 * `openssl dgst -sha1 -hmac 12345 -binary | base64`). */
static const char tw_url[] = "https://mycompany.com/myapp.php?foo=1&bar=2";
static const char tw_body[] =
	"CallSid=CA1234567890ABCDE&Caller=%2B12349013030&Digits=1234&From=%2B12349013030&To=%2B18005551212";
static const char tw_sig[] = "0/KCTR6DLpKmkAf8muzZqo1nDgQ=";

static void test_signature_vector(void **state)
{
	/* The same parameters in another order sign the same. */
	static const char shuffled[] =
		"To=%2B18005551212&Digits=1234&From=%2B12349013030&CallSid=CA1234567890ABCDE&Caller=%2B12349013030";
	struct dl_form f;
	char sig[DL_TWSIG_LEN];

	(void)state;
	assert_int_equal(dl_form_parse(tw_body, strlen(tw_body), &f), 0);
	assert_int_equal(dl_twsig_compute("12345", tw_url, &f, sig), 0);
	assert_string_equal(sig, tw_sig);
	dl_form_free(&f);
	assert_int_equal(dl_form_parse(shuffled, strlen(shuffled), &f), 0);
	assert_int_equal(dl_twsig_compute("12345", tw_url, &f, sig), 0);
	assert_string_equal(sig, tw_sig);
	dl_form_free(&f);
}

static void test_signature_verify(void **state)
{
	static const struct {
		const char *token, *url, *body, *sig;
		bool valid;
	} cases[] = {
		{"12345", tw_url, tw_body, tw_sig, true},
		{"12346", tw_url, tw_body, tw_sig, false},
		{"12345", "https://mycompany.com/myapp.php?foo=1&bar=3", tw_body, tw_sig, false},
		{"12345", tw_url, "CallSid=CA1234567890ABCDE&Caller=%2B12349013030&Digits=1235&From=%2B12349013030&To=%2B18005551212",
		 tw_sig, false},
		{"12345", tw_url, tw_body, "0/KCTR6DLpKmkAf8muzZqo1nDgQ", false},
		{"12345", tw_url, tw_body, "1/KCTR6DLpKmkAf8muzZqo1nDgQ=", false},
		{"12345", tw_url, tw_body, "", false},
		{"12345", tw_url, tw_body, NULL, false},
		{"12345", tw_url, tw_body, "0/KCTR6DLpKmkAf8muzZqo1nDgQ=x", false},
		/* An added parameter changes the signature. */
		{"12345", tw_url, "CallSid=CA1234567890ABCDE&Caller=%2B12349013030&Digits=1234&From=%2B12349013030&To=%2B18005551212&X=",
		 tw_sig, false},
	};

	(void)state;
	for (size_t i = 0; i < DL_ARRAY_LEN(cases); i++) {
		struct dl_form f;

		assert_int_equal(dl_form_parse(cases[i].body, strlen(cases[i].body), &f), 0);
		if (dl_twsig_valid(cases[i].token, cases[i].url, &f, cases[i].sig) != cases[i].valid)
			fail_msg("signature case %zu: want %s", i, cases[i].valid ? "valid" : "invalid");
		dl_form_free(&f);
	}
}

static void test_signature_repeated_keys(void **state)
{
	struct dl_form a, b;
	char sa[DL_TWSIG_LEN], sb[DL_TWSIG_LEN];

	(void)state;
	/* Repeated keys are signed in a canonical order of their values. */
	assert_int_equal(dl_form_parse("E=b&E=a&K=1", 11, &a), 0);
	assert_int_equal(dl_form_parse("K=1&E=a&E=b", 11, &b), 0);
	assert_int_equal(dl_twsig_compute("t", "http://x/", &a, sa), 0);
	assert_int_equal(dl_twsig_compute("t", "http://x/", &b, sb), 0);
	assert_string_equal(sa, sb);
	assert_int_equal(strlen(sa), DL_TWSIG_LEN - 1);
	dl_form_free(&a);
	dl_form_free(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_table),
		cmocka_unit_test(test_parse_nul_and_length),
		cmocka_unit_test(test_caps),
		cmocka_unit_test(test_lookup),
		cmocka_unit_test(test_encode),
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_parse_fuzz),
		cmocka_unit_test(test_signature_vector),
		cmocka_unit_test(test_signature_verify),
		cmocka_unit_test(test_signature_repeated_keys),
	};

	return cmocka_run_group_tests_name("form and signature", tests, NULL, NULL);
}
