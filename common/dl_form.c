#include "dl_form.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Decodes src[0..len) into dst (room for len bytes); returns the decoded
 * length, or -EINVAL for a bad escape or a NUL. */
static long decode(const char *src, size_t len, char *dst)
{
	size_t o = 0;

	for (size_t i = 0; i < len; i++) {
		char c = src[i];

		if (c == '+') {
			c = ' ';
		} else if (c == '%') {
			int hi, lo;

			if (len - i < 3)
				return -EINVAL;
			hi = hexval(src[i + 1]);
			lo = hexval(src[i + 2]);
			if (hi < 0 || lo < 0)
				return -EINVAL;
			c = (char)(hi << 4 | lo);
			i += 2;
		}
		if (c == '\0')
			return -EINVAL;
		dst[o++] = c;
	}
	return (long)o;
}

void dl_form_init(struct dl_form *f)
{
	memset(f, 0, sizeof(*f));
}

int dl_form_parse(const char *body, size_t len, struct dl_form *out)
{
	struct dl_form f;
	char *w;
	size_t i = 0;
	int rc = -EINVAL;

	dl_form_init(&f);
	if (len > DL_FORM_MAX_BYTES)
		return -EINVAL;
	/* Decoded text never outgrows the input; each separator's byte holds
	 * a terminator, the extra one ends the last segment. */
	f.buf = malloc(len + 1);
	if (f.buf == NULL)
		return -ENOMEM;
	w = f.buf;
	while (i < len) {
		const char *seg = body + i, *amp = memchr(seg, '&', len - i), *eq;
		size_t seglen = amp ? (size_t)(amp - seg) : len - i;
		size_t klen;
		long n;

		i += seglen + 1;
		if (seglen == 0)
			continue;
		if (f.n == DL_FORM_MAX_PAIRS)
			goto out;
		eq = memchr(seg, '=', seglen);
		klen = eq ? (size_t)(eq - seg) : seglen;
		if (klen == 0)
			goto out;
		n = decode(seg, klen, w);
		if (n < 0)
			goto out;
		f.pairs[f.n].key = w;
		w += n;
		*w++ = '\0';
		if (eq == NULL) {
			f.pairs[f.n].value = "";
		} else {
			n = decode(eq + 1, seglen - klen - 1, w);
			if (n < 0)
				goto out;
			f.pairs[f.n].value = w;
			w += n;
			*w++ = '\0';
		}
		f.n++;
	}
	*out = f;
	f.buf = NULL;
	rc = 0;
out:
	free(f.buf);
	return rc;
}

void dl_form_free(struct dl_form *f)
{
	if (f == NULL)
		return;
	free(f->buf);
	dl_form_init(f);
}

int dl_form_add(struct dl_form *f, const char *key, const char *value)
{
	if (f->n == DL_FORM_MAX_PAIRS)
		return -E2BIG;
	f->pairs[f->n].key = key;
	f->pairs[f->n].value = value;
	f->n++;
	return 0;
}

const char *dl_form_get_nth(const struct dl_form *f, const char *key, int nth)
{
	for (int i = 0; i < f->n; i++)
		if (strcmp(f->pairs[i].key, key) == 0 && nth-- == 0)
			return f->pairs[i].value;
	return NULL;
}

const char *dl_form_get(const struct dl_form *f, const char *key)
{
	return dl_form_get_nth(f, key, 0);
}

int dl_form_count(const struct dl_form *f, const char *key)
{
	int n = 0;

	for (int i = 0; i < f->n; i++)
		if (strcmp(f->pairs[i].key, key) == 0)
			n++;
	return n;
}

static bool unreserved(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
	       c == '.' || c == '_' || c == '~';
}

/* Writes s escaped to out; space becomes space_as. */
static void escape_to(FILE *out, const char *s, const char *space_as)
{
	static const char hex[] = "0123456789ABCDEF";

	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (unreserved(*p)) {
			fputc(*p, out);
		} else if (*p == ' ') {
			fputs(space_as, out);
		} else {
			fputc('%', out);
			fputc(hex[*p >> 4], out);
			fputc(hex[*p & 15], out);
		}
	}
}

int dl_form_encode(const struct dl_form *f, char **out, size_t *outlen)
{
	char *text = NULL;
	size_t len = 0;
	FILE *m = open_memstream(&text, &len);

	if (m == NULL)
		return -ENOMEM;
	for (int i = 0; i < f->n; i++) {
		if (i > 0)
			fputc('&', m);
		escape_to(m, f->pairs[i].key, "+");
		fputc('=', m);
		escape_to(m, f->pairs[i].value, "+");
	}
	if (fclose(m) != 0 || text == NULL) {
		free(text);
		return -ENOMEM;
	}
	*out = text;
	if (outlen != NULL)
		*outlen = len;
	return 0;
}

char *dl_form_escape(const char *s)
{
	char *text = NULL;
	size_t len = 0;
	FILE *m = open_memstream(&text, &len);

	if (m == NULL)
		return NULL;
	escape_to(m, s, "%20");
	if (fclose(m) != 0) {
		free(text);
		return NULL;
	}
	return text;
}
