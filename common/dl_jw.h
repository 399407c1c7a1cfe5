/* dl_jw: JSON text written straight into one growing buffer, for answers
 * built from result rows without a jansson tree. The text is what jansson's
 * json_dumps(..., JSON_COMPACT) gives for the same values in the same order:
 * no spaces, the same string escapes, UTF-8 left as it is. No logging. */
#ifndef DL_JW_H
#define DL_JW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dl_util.h"

struct dl_jw {
	char *buf;   /* owned; NUL-terminated */
	size_t len, cap;
	bool sep;    /* a value ends here: the next key or element needs a comma */
	bool failed; /* out of memory: later calls write nothing */
};

/* Starts an empty writer with room for about cap bytes (0 for a default). */
void dl_jw_init(struct dl_jw *w, size_t cap);
/* Frees the buffer; the writer may be initialized again. */
void dl_jw_free(struct dl_jw *w);
/* Hands over the text (caller frees) and its length, or NULL when memory
 * ran out; the writer is left empty. */
char *dl_jw_take(struct dl_jw *w, size_t *len);

/* '{' or '[' and its closing '}' or ']'. */
void dl_jw_open(struct dl_jw *w, char c);
void dl_jw_close(struct dl_jw *w, char c);
/* An object member's name, n bytes of UTF-8; its value follows. */
void dl_jw_key(struct dl_jw *w, const char *key, size_t n);
/* Values. dl_jw_str takes n bytes of UTF-8; dl_jw_raw a complete JSON text
 * written as it is. */
void dl_jw_str(struct dl_jw *w, const char *s, size_t n);
void dl_jw_int(struct dl_jw *w, long long v);
void dl_jw_bool(struct dl_jw *w, bool v);
void dl_jw_null(struct dl_jw *w);
void dl_jw_raw(struct dl_jw *w, const char *s, size_t n);
/* A Postgres timestamp (microseconds since 2000-01-01 00:00 UTC, as its
 * binary format carries it) as the string that to_char(t AT TIME ZONE 'UTC',
 * 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') gives: milliseconds truncated, years BC
 * as their number, null for +-infinity (to_char's NULL). */
void dl_jw_pg_time(struct dl_jw *w, int64_t us);

#endif
