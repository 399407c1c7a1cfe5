#include "dl_util.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

int dl_random_bytes(void *buf, size_t n)
{
	return RAND_bytes(buf, (int)n) == 1 ? 0 : -EIO;
}

void dl_id_at(const char *prefix, uint64_t ms, char out[DL_ID_MAX])
{
	/* base32 in ASCII order, so that the text sorts as the number */
	static const char b32[] = "234567abcdefghijklmnopqrstuvwxyz";
	unsigned char raw[14];
	char body[25];

	for (int i = 9; i >= 0; i--) {
		body[i] = b32[ms & 31];
		ms >>= 5;
	}
	if (dl_random_bytes(raw, sizeof(raw)) < 0)
		abort();
	for (size_t i = 0; i < sizeof(raw); i++)
		body[10 + i] = b32[raw[i] & 31];
	body[24] = '\0';
	snprintf(out, DL_ID_MAX, "%s_%s", prefix, body);
}

void dl_id_new(const char *prefix, char out[DL_ID_MAX])
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	dl_id_at(prefix, (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000, out);
}

int dl_random_alnum(char *out, size_t n)
{
	static const char cs[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
	unsigned char raw[256];

	if (n > sizeof(raw))
		return -EINVAL;
	if (dl_random_bytes(raw, n) < 0)
		return -EIO;
	/* 62 does not divide 256: reject bytes >= 248 to stay uniform. */
	for (size_t i = 0; i < n; i++) {
		while (raw[i] >= 248) {
			if (dl_random_bytes(&raw[i], 1) < 0)
				return -EIO;
		}
		out[i] = cs[raw[i] % 62];
	}
	out[n] = '\0';
	return 0;
}

int64_t dl_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t dl_mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void dl_timespec_in(clockid_t clock, int ms, struct timespec *out)
{
	clock_gettime(clock, out);
	out->tv_sec += ms / 1000;
	out->tv_nsec += (long)(ms % 1000) * 1000000L;
	if (out->tv_nsec >= 1000000000L) {
		out->tv_sec++;
		out->tv_nsec -= 1000000000L;
	}
}

void dl_time_format(int64_t epoch_ms, char out[DL_TIME_MAX])
{
	time_t secs = (time_t)(epoch_ms / 1000);
	int ms = (int)(epoch_ms % 1000);
	struct tm tm;

	if (ms < 0) {
		ms += 1000;
		secs -= 1;
	}
	gmtime_r(&secs, &tm);
	/* Years past 9999 cannot come from the API's inputs; clamp for the width. */
	if (tm.tm_year > 8099)
		tm.tm_year = 8099;
	snprintf(out, DL_TIME_MAX, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ",
		 (tm.tm_year + 1900) % 10000, (tm.tm_mon + 1) % 100, tm.tm_mday % 100, tm.tm_hour % 100,
		 tm.tm_min % 100, tm.tm_sec % 100, ms % 1000);
}

static int parse_digits(const char **p, int n, int *out)
{
	int v = 0;

	for (int i = 0; i < n; i++) {
		if ((*p)[i] < '0' || (*p)[i] > '9')
			return -EINVAL;
		v = v * 10 + ((*p)[i] - '0');
	}
	*p += n;
	*out = v;
	return 0;
}

static bool expect(const char **p, char c)
{
	if (**p != c)
		return false;
	(*p)++;
	return true;
}

int dl_time_parse(const char *s, int64_t *epoch_ms)
{
	static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
	const char *p = s;
	int y, mo, d, h, mi, sec, ms = 0, off = 0;
	struct tm tm;

	if (parse_digits(&p, 4, &y) || !expect(&p, '-') || parse_digits(&p, 2, &mo) ||
	    !expect(&p, '-') || parse_digits(&p, 2, &d) || !(expect(&p, 'T') || expect(&p, 't')) ||
	    parse_digits(&p, 2, &h) || !expect(&p, ':') || parse_digits(&p, 2, &mi) ||
	    !expect(&p, ':') || parse_digits(&p, 2, &sec))
		return -EINVAL;
	if (*p == '.') {
		int digits = 0;

		p++;
		while (*p >= '0' && *p <= '9') {
			if (digits < 3)
				ms = ms * 10 + (*p - '0');
			digits++;
			p++;
		}
		if (digits == 0 || digits > 9)
			return -EINVAL;
		for (int i = digits; i < 3; i++)
			ms *= 10;
	}
	if (*p == 'Z' || *p == 'z') {
		p++;
	} else if (*p == '+' || *p == '-') {
		int sign = *p == '-' ? -1 : 1, oh, om;

		p++;
		if (parse_digits(&p, 2, &oh) || !expect(&p, ':') || parse_digits(&p, 2, &om) ||
		    oh > 23 || om > 59)
			return -EINVAL;
		off = sign * (oh * 60 + om);
	} else {
		return -EINVAL;
	}
	if (*p != '\0')
		return -EINVAL;
	if (y < 1970 || y > 9999 || mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] ||
	    h > 23 || mi > 59 || sec > 59)
		return -EINVAL;
	if (mo == 2 && d == 29 && !((y % 4 == 0 && y % 100 != 0) || y % 400 == 0))
		return -EINVAL;
	memset(&tm, 0, sizeof(tm));
	tm.tm_year = y - 1900;
	tm.tm_mon = mo - 1;
	tm.tm_mday = d;
	tm.tm_hour = h;
	tm.tm_min = mi;
	tm.tm_sec = sec;
	*epoch_ms = ((int64_t)timegm(&tm) - (int64_t)off * 60) * 1000 + ms;
	return 0;
}

bool dl_timezone_valid(const char *name)
{
	char path[512];
	struct stat st;
	size_t n = strlen(name);

	if (n == 0 || n > 64 || name[0] == '/' || strstr(name, ".."))
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = name[i];
		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		      c == '/' || c == '_' || c == '-' || c == '+'))
			return false;
	}
	if (strcmp(name, "UTC") == 0)
		return true;
	snprintf(path, sizeof(path), "/usr/share/zoneinfo/%s", name);
	return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

void dl_sha256_hex(const void *data, size_t len, char out[65])
{
	unsigned char md[SHA256_DIGEST_LENGTH];

	SHA256(data, len, md);
	for (int i = 0; i < SHA256_DIGEST_LENGTH; i++)
		snprintf(out + 2 * i, 3, "%02x", md[i]);
}

bool dl_ct_equal(const void *a, const void *b, size_t len)
{
	return CRYPTO_memcmp(a, b, len) == 0;
}

bool dl_phone_valid(const char *s)
{
	size_t n;

	if (s == NULL || s[0] != '+' || s[1] < '1' || s[1] > '9')
		return false;
	n = strlen(s + 1);
	if (n < 8 || n > 15)
		return false;
	for (size_t i = 1; i <= n; i++)
		if (s[i] < '0' || s[i] > '9')
			return false;
	return true;
}

long dl_utf8_len(const char *s)
{
	const unsigned char *p = (const unsigned char *)s;
	long n = 0;

	while (*p) {
		int extra;
		unsigned cp;

		if (*p < 0x80) {
			extra = 0;
			cp = *p;
		} else if ((*p & 0xE0) == 0xC0) {
			extra = 1;
			cp = *p & 0x1F;
		} else if ((*p & 0xF0) == 0xE0) {
			extra = 2;
			cp = *p & 0x0F;
		} else if ((*p & 0xF8) == 0xF0) {
			extra = 3;
			cp = *p & 0x07;
		} else {
			return -1;
		}
		p++;
		for (int i = 0; i < extra; i++, p++) {
			if ((*p & 0xC0) != 0x80)
				return -1;
			cp = (cp << 6) | (*p & 0x3F);
		}
		if ((extra == 1 && cp < 0x80) || (extra == 2 && cp < 0x800) ||
		    (extra == 3 && (cp < 0x10000 || cp > 0x10FFFF)) ||
		    (cp >= 0xD800 && cp <= 0xDFFF))
			return -1;
		n++;
	}
	return n;
}

void dl_utf8_trim(char *s)
{
	size_t n = strlen(s), start = n, need;
	unsigned char lead;

	/* Find the lead byte of the last character and check it is complete. */
	while (start > 0 && ((unsigned char)s[start - 1] & 0xC0) == 0x80)
		start--;
	if (start == 0)
		return;
	lead = (unsigned char)s[start - 1];
	need = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1;
	if (n - (start - 1) < need)
		s[start - 1] = '\0';
}

void dl_sleep_ms(int64_t ms, volatile const int *stop)
{
	int64_t end = dl_mono_ms() + ms;

	for (;;) {
		int64_t left = end - dl_mono_ms();
		struct timespec ts;

		if (left <= 0 || (stop && *stop))
			return;
		if (left > 100)
			left = 100;
		ts.tv_sec = 0;
		ts.tv_nsec = (long)left * 1000000L;
		nanosleep(&ts, NULL);
	}
}
