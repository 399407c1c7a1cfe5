#include "dl_metrics.h"

#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dl_util.h"

static const double default_buckets[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};

struct series {
	struct series *next;
	char *labels;
	double value;                 /* counter/gauge value, or histogram sum */
	unsigned long long *counts;   /* histogram: nbounds + 1 (the last is +Inf); owned */
};

struct family {
	struct family *next;
	char *name, *type, *help;
	const double *bounds;         /* histogram upper bounds: default_buckets or owned */
	size_t nbounds;
	struct series *series;
};

static struct family *families;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static struct family *find_family(const char *name)
{
	for (struct family *f = families; f; f = f->next)
		if (!strcmp(f->name, name))
			return f;
	return NULL;
}

/* Bounds usable as histogram buckets: finite and strictly increasing. */
static bool bounds_ok(const double *b, size_t n)
{
	if (b == NULL || n == 0)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!isfinite(b[i]) || (i > 0 && b[i] <= b[i - 1]))
			return false;
	return true;
}

/* Adds a family unless one of that name exists; takes the lock. */
static void add_family(const char *name, const char *type, const char *help, const double *bounds, size_t n)
{
	struct family *f;

	pthread_mutex_lock(&lock);
	if (find_family(name) != NULL || (f = calloc(1, sizeof(*f))) == NULL)
		goto out;
	f->name = strdup(name);
	f->type = strdup(type);
	f->help = strdup(help);
	if (!strcmp(type, "histogram")) {
		double *own = NULL;

		if (bounds_ok(bounds, n) && (own = malloc(n * sizeof(*own))) != NULL) {
			memcpy(own, bounds, n * sizeof(*own));
			f->bounds = own;
			f->nbounds = n;
		} else {
			f->bounds = default_buckets;
			f->nbounds = DL_ARRAY_LEN(default_buckets);
		}
	}
	/* Appended so the output keeps registration order. */
	{
		struct family **pp = &families;

		while (*pp)
			pp = &(*pp)->next;
		*pp = f;
	}
out:
	pthread_mutex_unlock(&lock);
}

void dl_metrics_register(const char *name, const char *type, const char *help)
{
	add_family(name, type, help, NULL, 0);
}

void dl_metrics_register_histogram(const char *name, const char *help, const double *bounds, size_t n)
{
	add_family(name, "histogram", help, bounds, n);
}

/* Length of the UTF-8 sequence at s, or 0 when it is not one (overlong
 * forms and surrogates included). */
static size_t utf8_seq(const unsigned char *s)
{
	unsigned char c = s[0];
	size_t n;
	unsigned char lo = 0x80, hi = 0xBF;

	if (c < 0x80)
		return 1;
	if (c >= 0xC2 && c <= 0xDF)
		n = 2;
	else if (c >= 0xE0 && c <= 0xEF)
		n = 3;
	else if (c >= 0xF0 && c <= 0xF4)
		n = 4;
	else
		return 0;
	if (c == 0xE0)
		lo = 0xA0;
	else if (c == 0xED)
		hi = 0x9F;
	else if (c == 0xF0)
		lo = 0x90;
	else if (c == 0xF4)
		hi = 0x8F;
	if (s[1] < lo || s[1] > hi)
		return 0;
	for (size_t i = 2; i < n; i++)
		if (s[i] < 0x80 || s[i] > 0xBF)
			return 0;
	return n;
}

const char *dl_metrics_escape(char *dst, size_t len, const char *value)
{
	const unsigned char *s = (const unsigned char *)(value ? value : "");
	size_t o = 0;

	if (len == 0)
		return dst;
	while (*s) {
		char esc[2] = {0, 0};
		const char *piece;
		size_t n = utf8_seq(s), adv = n ? n : 1;

		if (*s == '\\' || *s == '"' || *s == '\n') {
			esc[0] = '\\';
			esc[1] = *s == '\n' ? 'n' : (char)*s;
			piece = esc;
			n = 2;
		} else if (n == 0) {
			piece = "?";
			n = 1;
		} else {
			piece = (const char *)s;
		}
		if (o + n >= len)
			break;
		memcpy(dst + o, piece, n);
		o += n;
		s += adv;
	}
	dst[o] = '\0';
	return dst;
}

static bool name_start(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

/* True when labels is empty or name="value" pairs joined by commas, each
 * value escaped and UTF-8. */
static bool labels_ok(const char *labels)
{
	const char *s = labels;

	if (!*s)
		return true;
	for (;;) {
		if (!name_start(*s))
			return false;
		while (name_start(*s) || (*s >= '0' && *s <= '9'))
			s++;
		if (*s++ != '=' || *s++ != '"')
			return false;
		while (*s != '"') {
			size_t n;

			if (*s == '\0' || *s == '\n')
				return false;
			if (*s == '\\') {
				s++;
				if (*s != '\\' && *s != '"' && *s != 'n')
					return false;
				s++;
				continue;
			}
			if ((n = utf8_seq((const unsigned char *)s)) == 0)
				return false;
			s += n;
		}
		s++;
		if (!*s)
			return true;
		if (*s++ != ',')
			return false;
	}
}

/* Finds or adds a series; called with the lock held. */
static struct series *get_series(const char *name, const char *labels)
{
	struct family *f = find_family(name);
	struct series *s;

	if (f == NULL)
		return NULL;
	for (s = f->series; s; s = s->next)
		if (!strcmp(s->labels, labels))
			return s;
	if (!labels_ok(labels))
		return NULL;
	s = calloc(1, sizeof(*s));
	if (s == NULL)
		return NULL;
	s->labels = strdup(labels);
	if (f->nbounds > 0)
		s->counts = calloc(f->nbounds + 1, sizeof(*s->counts));
	if (s->labels == NULL || (f->nbounds > 0 && s->counts == NULL)) {
		free(s->labels);
		free(s->counts);
		free(s);
		return NULL;
	}
	s->next = f->series;
	f->series = s;
	return s;
}

/* The series of a counter or gauge; NULL for a histogram (observe only).
 * Called with the lock held. */
static struct series *get_scalar(const char *name, const char *labels)
{
	struct family *f = find_family(name);

	if (f == NULL || f->nbounds > 0)
		return NULL;
	return get_series(name, labels ? labels : "");
}

void dl_metrics_add(const char *name, const char *labels, double v)
{
	struct series *s;

	pthread_mutex_lock(&lock);
	if ((s = get_scalar(name, labels)) != NULL)
		s->value += v;
	pthread_mutex_unlock(&lock);
}

void dl_metrics_set(const char *name, const char *labels, double v)
{
	struct series *s;

	pthread_mutex_lock(&lock);
	if ((s = get_scalar(name, labels)) != NULL)
		s->value = v;
	pthread_mutex_unlock(&lock);
}

void dl_metrics_observe(const char *name, const char *labels, double v)
{
	struct family *f;
	struct series *s;

	pthread_mutex_lock(&lock);
	f = find_family(name);
	if (f != NULL && f->nbounds > 0 && !isnan(v) && (s = get_series(name, labels ? labels : "")) != NULL) {
		size_t i = 0;

		while (i < f->nbounds && v > f->bounds[i])
			i++;
		s->counts[i]++;
		s->value += v;
	}
	pthread_mutex_unlock(&lock);
}

static void labels_with(FILE *out, const char *labels, const char *extra)
{
	if (!*labels && !extra)
		return;
	fputc('{', out);
	fputs(labels, out);
	if (extra)
		fprintf(out, "%s%s", *labels ? "," : "", extra);
	fputc('}', out);
}

/* HELP text escapes backslash and newline. */
static void put_help(FILE *out, const char *help)
{
	for (const char *p = help; *p; p++) {
		if (*p == '\\')
			fputs("\\\\", out);
		else if (*p == '\n')
			fputs("\\n", out);
		else
			fputc(*p, out);
	}
}

/* v as the shorter of %.15g and %.17g that reads back as v (0.1, not
 * 0.10000000000000001), in buf; returns buf. */
static const char *fmt_num(char buf[32], double v)
{
	if (isnan(v))
		return strcpy(buf, "NaN");
	if (isinf(v))
		return strcpy(buf, v > 0 ? "+Inf" : "-Inf");
	snprintf(buf, 32, "%.15g", v);
	if (strtod(buf, NULL) != v)
		snprintf(buf, 32, "%.17g", v);
	return buf;
}

static void render_histogram(FILE *out, const struct family *f, const struct series *s)
{
	unsigned long long cum = 0;
	char le[48], num[32];

	for (size_t i = 0; i <= f->nbounds; i++) {
		cum += s->counts[i];
		snprintf(le, sizeof(le), "le=\"%s\"", i < f->nbounds ? fmt_num(num, f->bounds[i]) : "+Inf");
		fprintf(out, "%s_bucket", f->name);
		labels_with(out, s->labels, le);
		fprintf(out, " %llu\n", cum);
	}
	fprintf(out, "%s_sum", f->name);
	labels_with(out, s->labels, NULL);
	fprintf(out, " %s\n%s_count", fmt_num(num, s->value), f->name);
	labels_with(out, s->labels, NULL);
	fprintf(out, " %llu\n", cum);
}

char *dl_metrics_render(void)
{
	char *text = NULL;
	size_t len = 0;
	FILE *out = open_memstream(&text, &len);

	if (out == NULL)
		return NULL;
	pthread_mutex_lock(&lock);
	for (struct family *f = families; f; f = f->next) {
		char num[32];

		fprintf(out, "# HELP %s ", f->name);
		put_help(out, f->help);
		fprintf(out, "\n# TYPE %s %s\n", f->name, f->type);
		for (struct series *s = f->series; s; s = s->next) {
			if (f->nbounds > 0) {
				render_histogram(out, f, s);
			} else {
				fputs(f->name, out);
				labels_with(out, s->labels, NULL);
				fprintf(out, " %s\n", fmt_num(num, s->value));
			}
		}
	}
	pthread_mutex_unlock(&lock);
	fclose(out);
	return text;
}
