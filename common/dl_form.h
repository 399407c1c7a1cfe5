/* dl_form: application/x-www-form-urlencoded bodies (RFC 1866 / WHATWG
 * urlencoded): parsing untrusted input into key/value pairs, lookup, and
 * encoding. Repeated keys are kept in order. No logging. */
#ifndef DL_FORM_H
#define DL_FORM_H

#include <stddef.h>

#include "dl_util.h"

#define DL_FORM_MAX_PAIRS 64
#define DL_FORM_MAX_BYTES 65536

struct dl_form_pair {
	const char *key;   /* NUL-terminated, never NULL */
	const char *value; /* NUL-terminated, never NULL ("" for "key" or "key=") */
};

struct dl_form {
	int n;
	struct dl_form_pair pairs[DL_FORM_MAX_PAIRS];
	char *buf; /* decoded text of a parsed form (owned); NULL for a built one */
};

/* Initializes an empty form to build with dl_form_add. */
void dl_form_init(struct dl_form *f);
/* Parses body (len bytes, need not be NUL-terminated): pairs separated by
 * '&' (empty segments skipped), '+' as space, %XX decoded. Returns 0 and
 * fills *out (free with dl_form_free), or -EINVAL for a body over
 * DL_FORM_MAX_BYTES, more than DL_FORM_MAX_PAIRS pairs, an empty key, a bad
 * %-escape or a NUL (raw or %00); -ENOMEM. *out is untouched on failure. */
int dl_form_parse(const char *body, size_t len, struct dl_form *out) DL_WUR;
/* Frees what dl_form_parse allocated and empties f; takes NULL. */
void dl_form_free(struct dl_form *f);
/* Appends a pair; f stores the pointers, so key and value must outlive it.
 * Returns 0, or -E2BIG when f is full. */
int dl_form_add(struct dl_form *f, const char *key, const char *value) DL_WUR;

/* The value of the first pair named key, or NULL. */
const char *dl_form_get(const struct dl_form *f, const char *key);
/* The value of the nth (from 0) pair named key, or NULL. */
const char *dl_form_get_nth(const struct dl_form *f, const char *key, int nth);
/* How many pairs are named key. */
int dl_form_count(const struct dl_form *f, const char *key);

/* Encodes f as "k=v&k=v" (unreserved bytes kept, space as '+', the rest
 * %XX). Returns 0 and a malloc'd NUL-terminated *out (caller frees) with its
 * length in *outlen (may be NULL), or -ENOMEM. */
int dl_form_encode(const struct dl_form *f, char **out, size_t *outlen) DL_WUR;
/* Percent-encodes s for a URL query value (space as %20) into a malloc'd
 * string (caller frees); NULL when out of memory. */
char *dl_form_escape(const char *s);

#endif
