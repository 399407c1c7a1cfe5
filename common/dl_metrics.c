#include "dl_metrics.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dl_util.h"

static const double buckets[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
#define NBUCKETS DL_ARRAY_LEN(buckets)

struct series {
	struct series *next;
	char *labels;
	double value;                 /* counter/gauge value, or histogram sum */
	unsigned long long counts[NBUCKETS + 1];
};

struct family {
	struct family *next;
	char *name, *type, *help;
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

void dl_metrics_register(const char *name, const char *type, const char *help)
{
	struct family *f;

	pthread_mutex_lock(&lock);
	if (find_family(name) == NULL && (f = calloc(1, sizeof(*f))) != NULL) {
		f->name = strdup(name);
		f->type = strdup(type);
		f->help = strdup(help);
		/* Appended so the output keeps registration order. */
		struct family **pp = &families;
		while (*pp)
			pp = &(*pp)->next;
		*pp = f;
	}
	pthread_mutex_unlock(&lock);
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
	s = calloc(1, sizeof(*s));
	if (s == NULL)
		return NULL;
	s->labels = strdup(labels);
	if (s->labels == NULL) {
		free(s);
		return NULL;
	}
	s->next = f->series;
	f->series = s;
	return s;
}

void dl_metrics_add(const char *name, const char *labels, double v)
{
	struct series *s;

	pthread_mutex_lock(&lock);
	if ((s = get_series(name, labels ? labels : "")) != NULL)
		s->value += v;
	pthread_mutex_unlock(&lock);
}

void dl_metrics_set(const char *name, const char *labels, double v)
{
	struct series *s;

	pthread_mutex_lock(&lock);
	if ((s = get_series(name, labels ? labels : "")) != NULL)
		s->value = v;
	pthread_mutex_unlock(&lock);
}

void dl_metrics_observe(const char *name, const char *labels, double v)
{
	struct series *s;

	pthread_mutex_lock(&lock);
	if ((s = get_series(name, labels ? labels : "")) != NULL) {
		size_t i = 0;

		while (i < NBUCKETS && v > buckets[i])
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

char *dl_metrics_render(void)
{
	char *text = NULL;
	size_t len = 0;
	FILE *out = open_memstream(&text, &len);

	if (out == NULL)
		return NULL;
	pthread_mutex_lock(&lock);
	for (struct family *f = families; f; f = f->next) {
		fprintf(out, "# HELP %s %s\n# TYPE %s %s\n", f->name, f->help, f->name, f->type);
		for (struct series *s = f->series; s; s = s->next) {
			if (strcmp(f->type, "histogram") == 0) {
				unsigned long long cum = 0;
				char le[32];

				for (size_t i = 0; i <= NBUCKETS; i++) {
					cum += s->counts[i];
					if (i < NBUCKETS)
						snprintf(le, sizeof(le), "le=\"%g\"", buckets[i]);
					else
						snprintf(le, sizeof(le), "le=\"+Inf\"");
					fprintf(out, "%s_bucket", f->name);
					labels_with(out, s->labels, le);
					fprintf(out, " %llu\n", cum);
				}
				fprintf(out, "%s_sum", f->name);
				labels_with(out, s->labels, NULL);
				fprintf(out, " %.6f\n%s_count", s->value, f->name);
				labels_with(out, s->labels, NULL);
				fprintf(out, " %llu\n", cum);
			} else {
				fputs(f->name, out);
				labels_with(out, s->labels, NULL);
				fprintf(out, " %.17g\n", s->value);
			}
		}
	}
	pthread_mutex_unlock(&lock);
	fclose(out);
	return text;
}
