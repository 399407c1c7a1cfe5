/* dl_metrics: a process-wide registry rendered in the Prometheus text format.
 * Labels are given preformatted (`route="/v1/x",status="200"`); keep their
 * cardinality low. Thread-safe. */
#ifndef DL_METRICS_H
#define DL_METRICS_H

/* Declares a family; type is "counter", "gauge" or "histogram". Idempotent. */
void dl_metrics_register(const char *name, const char *type, const char *help);
void dl_metrics_add(const char *name, const char *labels, double v);
void dl_metrics_set(const char *name, const char *labels, double v);
/* Adds an observation to a histogram (seconds-scale buckets). */
void dl_metrics_observe(const char *name, const char *labels, double v);
/* Renders every family; the caller frees the text. */
char *dl_metrics_render(void);

#endif
