/* dl_metrics: a process-wide registry rendered in the Prometheus text format.
 * Labels are given preformatted (`route="/v1/x",status="200"`); keep their
 * cardinality low, and pass every value not written in the source through
 * dl_metrics_escape. A labels string that is not well-formed
 * (name="value" pairs, values escaped) is refused: the call does nothing, so
 * the exposition always parses. Thread-safe; nothing here logs. */
#ifndef DL_METRICS_H
#define DL_METRICS_H

#include <stddef.h>

/* Declares a family; type is "counter", "gauge" or "histogram" (with the
 * seconds-scale default buckets). Idempotent. */
void dl_metrics_register(const char *name, const char *type, const char *help);
/* Declares a histogram with its own upper bounds (n finite, strictly
 * increasing values; +Inf is implied). Bad bounds fall back to the defaults.
 * Idempotent. */
void dl_metrics_register_histogram(const char *name, const char *help, const double *bounds, size_t n);
void dl_metrics_add(const char *name, const char *labels, double v);
void dl_metrics_set(const char *name, const char *labels, double v);
/* Adds an observation to a histogram. */
void dl_metrics_observe(const char *name, const char *labels, double v);
/* Writes value into dst (len bytes, NUL-terminated) escaped for a label
 * value: backslash, double quote and newline escaped, bytes that are not
 * UTF-8 replaced by '?', cut at a character when it does not fit. Returns dst. */
const char *dl_metrics_escape(char *dst, size_t len, const char *value);
/* Renders every family; the caller frees the text. */
char *dl_metrics_render(void);

#endif
