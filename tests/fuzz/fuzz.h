/* What the libFuzzer targets share: the input as the API would parse it, and
 * the invariants every parser's answer must keep. A broken invariant aborts,
 * which libFuzzer reports as a crash with its input. */
#ifndef FUZZ_H
#define FUZZ_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dl_http.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Reports a broken invariant and aborts (libFuzzer keeps the input). */
#define FZ_REQUIRE(cond, ...)                                                      \
	do {                                                                       \
		if (!(cond)) {                                                     \
			fprintf(stderr, "fuzz invariant failed: %s: ", #cond);     \
			fprintf(stderr, __VA_ARGS__);                              \
			fputc('\n', stderr);                                       \
			abort();                                                   \
		}                                                                  \
	} while (0)

/* A NUL-terminated copy of the input (caller frees). */
static inline char *fz_cstr(const uint8_t *data, size_t size)
{
	char *s = malloc(size + 1);

	if (s == NULL)
		abort();
	memcpy(s, data, size);
	s[size] = '\0';
	return s;
}

/* The input parsed as the API parses a request body; NULL when not JSON. */
static inline json_t *fz_json(const uint8_t *data, size_t size)
{
	return json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, NULL);
}

/* A validation message is answered as {"statusCode","message","error"}:
 * it must be non-empty, valid UTF-8 (or the client gets a generic message,
 * or no body at all) and make an error body. */
static inline void fz_check_message(const char *err, size_t errlen)
{
	struct dl_http_resp resp;

	FZ_REQUIRE(memchr(err, '\0', errlen) != NULL, "message not terminated");
	FZ_REQUIRE(err[0] != '\0', "empty message");
	FZ_REQUIRE(dl_utf8_len(err) >= 0, "message \"%s\" is not valid UTF-8", err);
	memset(&resp, 0, sizeof(resp));
	dl_http_error(&resp, 400, "%s", err);
	FZ_REQUIRE(resp.body != NULL, "message \"%s\" cannot be answered as JSON (invalid UTF-8?)", err);
	free(resp.body);
}

#endif
