#include "dl_log.h"

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "dl_util.h"

static const char *log_service = "dialer";
static enum dl_log_level log_min = DL_INFO;
static FILE *log_stream;
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static const char *const level_names[] = {"debug", "info", "warn", "error"};

void dl_log_init(const char *service, enum dl_log_level min_level)
{
	log_service = service;
	log_min = min_level;
}

void dl_log_to_stderr(void)
{
	log_stream = stderr;
}

int dl_log_level_parse(const char *s, enum dl_log_level *out)
{
	for (int i = 0; i < 4; i++) {
		if (strcmp(s, level_names[i]) == 0) {
			*out = (enum dl_log_level)i;
			return 0;
		}
	}
	return -EINVAL;
}

static void emit(json_t *line)
{
	char *text = json_dumps(line, JSON_COMPACT | JSON_ENSURE_ASCII);

	if (text == NULL)
		return;
	pthread_mutex_lock(&log_lock);
	FILE *f = log_stream ? log_stream : stdout;

	fputs(text, f);
	fputc('\n', f);
	fflush(f);
	pthread_mutex_unlock(&log_lock);
	free(text);
}

static json_t *line_new(enum dl_log_level level, const char *msg)
{
	char ts[DL_TIME_MAX];

	dl_time_format(dl_now_ms(), ts);
	return json_pack("{s:s, s:s, s:s, s:s}", "ts", ts, "level", level_names[level],
			 "service", log_service, "msg", msg);
}

void dl_log_kv(enum dl_log_level level, const char *msg, ...)
{
	json_t *line;
	va_list ap;

	if (level < log_min)
		return;
	line = line_new(level, msg);
	if (line == NULL)
		return;
	va_start(ap, msg);
	for (;;) {
		const char *k = va_arg(ap, const char *);
		const char *v;

		if (k == NULL)
			break;
		v = va_arg(ap, const char *);
		if (v != NULL)
			json_object_set_new(line, k, json_string(v));
	}
	va_end(ap);
	emit(line);
	json_decref(line);
}

void dl_logf(enum dl_log_level level, const char *fmt, ...)
{
	char buf[2048];
	json_t *line;
	va_list ap;

	if (level < log_min)
		return;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	line = line_new(level, buf);
	if (line == NULL)
		return;
	emit(line);
	json_decref(line);
}
