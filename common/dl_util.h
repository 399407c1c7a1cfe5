/* dl_util: small self-contained helpers: ids, time, hashing, strings. */
#ifndef DL_UTIL_H
#define DL_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define DL_WUR __attribute__((warn_unused_result))
#define DL_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
/* Drops a result the caller has nothing to do about (best-effort cleanup). */
#define DL_IGNORE(x) \
	do {         \
		if (x) {  \
		}         \
	} while (0)

/* Length of an id: prefix + '_' + 24 chars + NUL fits in this. */
#define DL_ID_MAX 48
/* "2026-03-10T09:00:00.000Z" + NUL */
#define DL_TIME_MAX 32

/* Writes "<prefix>_<24 lowercase base32 chars>" into out (DL_ID_MAX bytes):
 * 10 chars of the time in milliseconds, then 14 random ones (70 bits). Ids
 * made later sort after (bytewise, as the database's "C" columns compare
 * them), so the rows of a new campaign or contact go to the end of the
 * indexes keyed by them, where an insert is cheapest. */
void dl_id_new(const char *prefix, char out[DL_ID_MAX]);
/* dl_id_new at a given time (milliseconds since the epoch). */
void dl_id_at(const char *prefix, uint64_t ms, char out[DL_ID_MAX]);
/* Fills buf with n cryptographically random bytes; returns 0 or -EIO. */
int dl_random_bytes(void *buf, size_t n) DL_WUR;
/* Writes n random chars of [A-Za-z0-9] plus NUL into out. */
int dl_random_alnum(char *out, size_t n) DL_WUR;

/* Milliseconds since the epoch (realtime) and monotonic. */
int64_t dl_now_ms(void);
int64_t dl_mono_ms(void);
/* The time ms milliseconds from now on clock (a pthread_cond_timedwait
 * deadline). */
void dl_timespec_in(clockid_t clock, int ms, struct timespec *out);
/* Formats epoch ms as ISO 8601 UTC with milliseconds. */
void dl_time_format(int64_t epoch_ms, char out[DL_TIME_MAX]);
/* Parses ISO 8601 (date, 'T', time, optional fraction, 'Z' or +hh:mm);
 * returns 0 and writes *epoch_ms, or -EINVAL. */
int dl_time_parse(const char *s, int64_t *epoch_ms) DL_WUR;
/* True when name is an IANA time zone known to this system's tzdata. */
bool dl_timezone_valid(const char *name);

/* Lowercase hex SHA-256 of data into out (65 bytes). */
void dl_sha256_hex(const void *data, size_t len, char out[65]);
/* Constant-time equality of two buffers of the same length. */
bool dl_ct_equal(const void *a, const void *b, size_t len);

/* True when s is E.164: '+', a first digit 1-9, 8 to 15 digits in all. */
bool dl_phone_valid(const char *s);
/* Counts UTF-8 code points; returns -1 when s is not valid UTF-8. */
long dl_utf8_len(const char *s);

/* Cuts a string that was truncated to fit a buffer back to the end of its
 * last whole UTF-8 character, so it stays valid text. */
void dl_utf8_trim(char *s);

/* Sleeps up to ms, returning early when *stop becomes true. */
void dl_sleep_ms(int64_t ms, volatile const int *stop);

#endif
