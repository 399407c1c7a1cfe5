/* dl_log: one JSON object per line on stdout. Thread-safe. */
#ifndef DL_LOG_H
#define DL_LOG_H

enum dl_log_level { DL_DEBUG = 0, DL_INFO = 1, DL_WARN = 2, DL_ERROR = 3 };

/* Sets the service name written in every line and the minimum level. */
void dl_log_init(const char *service, enum dl_log_level min_level);
/* Sends log lines to stderr instead of stdout (for CLI tools whose stdout is data). */
void dl_log_to_stderr(void);
/* Parses "debug|info|warn|error"; returns 0 or -EINVAL. */
int dl_log_level_parse(const char *s, enum dl_log_level *out);
/* Logs msg with extra string fields given as key, value pairs ending in NULL.
 * A NULL value is skipped. */
void dl_log_kv(enum dl_log_level level, const char *msg, ...) __attribute__((sentinel));
/* Logs a printf-formatted message. */
void dl_logf(enum dl_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
