#include "dl_jw.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define JW_DEFAULT_CAP 256

void dl_jw_init(struct dl_jw *w, size_t cap)
{
	memset(w, 0, sizeof(*w));
	w->cap = cap > 0 ? cap : JW_DEFAULT_CAP;
	w->buf = malloc(w->cap);
	if (w->buf == NULL)
		w->failed = true;
	else
		w->buf[0] = '\0';
}

void dl_jw_free(struct dl_jw *w)
{
	free(w->buf);
	memset(w, 0, sizeof(*w));
}

char *dl_jw_take(struct dl_jw *w, size_t *len)
{
	char *out = w->failed ? NULL : w->buf;

	if (out == NULL)
		free(w->buf);
	*len = out ? w->len : 0;
	memset(w, 0, sizeof(*w));
	return out;
}

/* Room for n more bytes and the terminating NUL; false once memory ran out. */
static bool reserve(struct dl_jw *w, size_t n)
{
	size_t cap;
	char *nb;

	if (w->failed)
		return false;
	if (w->len + n + 1 <= w->cap)
		return true;
	cap = w->cap * 2;
	if (cap < w->len + n + 1)
		cap = w->len + n + 1;
	nb = realloc(w->buf, cap);
	if (nb == NULL) {
		w->failed = true;
		return false;
	}
	w->buf = nb;
	w->cap = cap;
	return true;
}

static void put(struct dl_jw *w, const char *s, size_t n)
{
	if (!reserve(w, n))
		return;
	memcpy(w->buf + w->len, s, n);
	w->len += n;
	w->buf[w->len] = '\0';
}

static void put_c(struct dl_jw *w, char c)
{
	if (!reserve(w, 1))
		return;
	w->buf[w->len++] = c;
	w->buf[w->len] = '\0';
}

/* The comma before a key or an element that follows another. */
static void begin_value(struct dl_jw *w)
{
	if (w->sep)
		put_c(w, ',');
	w->sep = true;
}

void dl_jw_open(struct dl_jw *w, char c)
{
	begin_value(w);
	put_c(w, c);
	w->sep = false;
}

void dl_jw_close(struct dl_jw *w, char c)
{
	put_c(w, c);
	w->sep = true;
}

/* The quoted string, escaped as jansson escapes it: the quote, the
 * backslash and the control characters; bytes from 0x7f up as they are. */
static void put_string(struct dl_jw *w, const char *s, size_t n)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t run = 0;

	/* At most 6 bytes out per byte in: one reservation for the whole string. */
	if (n > (SIZE_MAX - 2) / 6 || !reserve(w, n * 6 + 2))
		return;
	w->buf[w->len++] = '"';
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		char *o;

		if (c >= 0x20 && c != '"' && c != '\\')
			continue;
		memcpy(w->buf + w->len, s + run, i - run);
		w->len += i - run;
		run = i + 1;
		o = w->buf + w->len;
		o[0] = '\\';
		switch (c) {
		case '"': o[1] = '"'; break;
		case '\\': o[1] = '\\'; break;
		case '\b': o[1] = 'b'; break;
		case '\f': o[1] = 'f'; break;
		case '\n': o[1] = 'n'; break;
		case '\r': o[1] = 'r'; break;
		case '\t': o[1] = 't'; break;
		default:
			o[1] = 'u';
			o[2] = '0';
			o[3] = '0';
			o[4] = hex[c >> 4];
			o[5] = hex[c & 0xf];
			w->len += 4;
		}
		w->len += 2;
	}
	memcpy(w->buf + w->len, s + run, n - run);
	w->len += n - run;
	w->buf[w->len++] = '"';
	w->buf[w->len] = '\0';
}

void dl_jw_key(struct dl_jw *w, const char *key, size_t n)
{
	begin_value(w);
	put_string(w, key, n);
	put_c(w, ':');
	w->sep = false;
}

void dl_jw_str(struct dl_jw *w, const char *s, size_t n)
{
	begin_value(w);
	put_string(w, s, n);
}

/* Writes v in decimal into the end of buf[24]; returns where it starts. */
static char *format_int(long long v, char buf[24])
{
	char *p = buf + 24;
	unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;

	do {
		*--p = (char)('0' + u % 10);
		u /= 10;
	} while (u > 0);
	if (v < 0)
		*--p = '-';
	return p;
}

void dl_jw_int(struct dl_jw *w, long long v)
{
	char buf[24], *p = format_int(v, buf);

	begin_value(w);
	put(w, p, (size_t)(buf + sizeof(buf) - p));
}

void dl_jw_bool(struct dl_jw *w, bool v)
{
	begin_value(w);
	if (v)
		put(w, "true", 4);
	else
		put(w, "false", 5);
}

void dl_jw_null(struct dl_jw *w)
{
	begin_value(w);
	put(w, "null", 4);
}

void dl_jw_raw(struct dl_jw *w, const char *s, size_t n)
{
	begin_value(w);
	put(w, s, n);
}

#define US_PER_DAY 86400000000LL

/* sep then v (0..99) in two digits; returns the end. */
static char *put_2(char *p, char sep, long long v)
{
	*p++ = sep;
	*p++ = (char)('0' + v / 10);
	*p++ = (char)('0' + v % 10);
	return p;
}

void dl_jw_pg_time(struct dl_jw *w, int64_t us)
{
	long long days, z, era, doe, yoe, y, doy, mp, d, m, secs, ms;
	int64_t rem;
	char out[48];

	if (us == INT64_MIN || us == INT64_MAX) {
		dl_jw_null(w);
		return;
	}
	days = us / US_PER_DAY;
	rem = us % US_PER_DAY;
	if (rem < 0) {
		rem += US_PER_DAY;
		days--;
	}
	/* The proleptic Gregorian date of a day count (Postgres' calendar),
	 * counted from 0000-03-01 so that leap days end a year. */
	z = days + 10957 + 719468; /* 2000-01-01 is day 10957 after 1970-01-01 */
	era = (z >= 0 ? z : z - 146096) / 146097;
	doe = z - era * 146097;
	yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	mp = (5 * doy + 2) / 153;
	d = doy - (153 * mp + 2) / 5 + 1;
	m = mp < 10 ? mp + 3 : mp - 9;
	y = yoe + era * 400 + (m <= 2);
	if (y <= 0)
		y = 1 - y; /* to_char's YYYY of a year BC */
	secs = rem / 1000000;
	{
		char ybuf[24], *yp = format_int(y, ybuf), *p = out;
		size_t yn = (size_t)(ybuf + sizeof(ybuf) - yp);

		for (size_t i = yn; i < 4; i++)
			*p++ = '0';
		memcpy(p, yp, yn);
		p += yn;
		p = put_2(p, '-', m);
		p = put_2(p, '-', d);
		p = put_2(p, 'T', secs / 3600);
		p = put_2(p, ':', secs / 60 % 60);
		p = put_2(p, ':', secs % 60);
		*p++ = '.';
		ms = rem % 1000000 / 1000;
		*p++ = (char)('0' + ms / 100);
		*p++ = (char)('0' + ms / 10 % 10);
		*p++ = (char)('0' + ms % 10);
		*p++ = 'Z';
		dl_jw_str(w, out, (size_t)(p - out));
	}
}
