#include "dl_config.h"

#include <ctype.h>
#include <errno.h>
#include <libconfig.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

enum opt_type { OPT_STR, OPT_INT, OPT_BOOL };

struct opt {
	const char *section;
	const char *key;
	enum opt_type type;
	size_t offset;
	const char *def;
	long min, max;
	bool secret;
};

#define S(sec, k, field, d) {sec, k, OPT_STR, offsetof(struct dl_config, field), d, 0, 0, false}
#define SECRET(sec, k, field, d) {sec, k, OPT_STR, offsetof(struct dl_config, field), d, 0, 0, true}
#define I(sec, k, field, d, lo, hi) {sec, k, OPT_INT, offsetof(struct dl_config, field), #d, lo, hi, false}
#define B(sec, k, field, d) {sec, k, OPT_BOOL, offsetof(struct dl_config, field), #d, 0, 1, false}

/* The declarative table: every setting of every service, with its default. */
static const struct opt opts[] = {
	S("log", "level", log_level, "info"),
	I("clock", "minute_ms", clock_minute_ms, 60000, 10, 3600000),
	SECRET("db", "url", db_url, "postgresql://dialer:dialer@127.0.0.1:5432/dialer"),
	I("db", "pool_size", db_pool_size, 8, 1, 256),
	I("db", "connect_timeout_s", db_connect_timeout_s, 5, 1, 300),
	SECRET("amqp", "url", amqp_url, "amqp://guest:guest@127.0.0.1:5672/%2F"),
	I("amqp", "heartbeat_s", amqp_heartbeat_s, 10, 0, 600),
	B("amqp", "tls", amqp_tls, 0),
	S("amqp", "tls_ca_file", amqp_tls_ca_file, ""),
	S("amqp", "commands_exchange", amqp_commands_exchange, "dialer.commands"),
	S("amqp", "commands_queue", amqp_commands_queue, "dialer.scheduler.commands"),
	S("amqp", "jobs_exchange", amqp_jobs_exchange, "dialer.jobs"),
	S("amqp", "jobs_queue", amqp_jobs_queue, "dialer.dial-jobs"),
	S("amqp", "results_queue", amqp_results_queue, "dialer.results"),
	S("amqp", "dead_letter_exchange", amqp_dead_letter_exchange, "dialer.dead-letter"),
	S("amqp", "dead_letter_queue", amqp_dead_letter_queue, "dialer.dead-letters"),
	I("amqp", "delivery_limit", amqp_delivery_limit, 5, 1, 1000),
	S("http", "listen", http_listen, "127.0.0.1"),
	I("http", "port", http_port, 8080, 0, 65535),
	I("http", "threads", http_threads, 48, 1, 256),
	I("http", "max_connections", http_max_connections, 1024, 1, 100000),
	I("http", "per_ip_connections", http_per_ip_connections, 256, 1, 100000),
	I("http", "connection_timeout_s", http_connection_timeout_s, 15, 1, 3600),
	I("http", "request_timeout_ms", http_request_timeout_ms, 30000, 100, 3600000),
	I("http", "max_body_bytes", http_max_body_bytes, 4194304, 1024, 268435456),
	I("health", "port", health_port, 9090, 0, 65535),
	S("api", "public_url", api_public_url, "http://127.0.0.1:8080"),
	I("api", "rate_per_min", api_rate_per_min, 60, 1, 10000000),
	I("api", "bulk_rate_per_min", api_bulk_rate_per_min, 10, 1, 10000000),
	I("api", "outbox_batch", api_outbox_batch, 200, 1, 10000),
	I("api", "import_threads", api_import_threads, 1, 1, 16),
	I("api", "read_cache_entries", api_read_cache_entries, 4096, 0, 1000000),
	I("api", "read_cache_max_age_ms", api_read_cache_max_age_ms, 5000, 10, 3600000),
	I("api", "publish_wait_ms", api_publish_wait_ms, 2000, 100, 30000),
	S("carrier", "base_url", carrier_base_url, "http://127.0.0.1:8090"),
	S("carrier", "account_sid", carrier_account_sid, "ACdialerlocal00000000000000000000"),
	SECRET("carrier", "auth_token", carrier_auth_token, "dialer-local-auth-token"),
	S("carrier", "from", carrier_from, "+15005550006"),
	S("sim", "listen", sim_listen, "127.0.0.1"),
	I("sim", "port", sim_port, 8090, 0, 65535),
	I("sim", "call_seconds", sim_call_seconds, 30, 0, 3600),
	I("sim", "ring_seconds", sim_ring_seconds, 5, 0, 600),
	I("sim", "latency_ms", sim_latency_ms, 0, 0, 60000),
	I("sim", "rate_429_pct", sim_rate_429_pct, 0, 0, 100),
	I("sim", "rate_5xx_pct", sim_rate_5xx_pct, 0, 0, 100),
	B("sim", "honor_time_limit", sim_honor_time_limit, 1),
	I("scheduler", "tick_ms", scheduler_tick_ms, 100, 5, 10000),
	I("scheduler", "lease_s", scheduler_lease_s, 10, 2, 600),
	I("scheduler", "timeout_grace_s", scheduler_timeout_grace_s, 30, 0, 3600),
	I("scheduler", "reconcile_after_s", scheduler_reconcile_after_s, 60, 1, 3600),
	I("scheduler", "dial_late_ms", scheduler_dial_late_ms, 0, 0, 3600000),
	I("scheduler", "dispatch_batch", scheduler_dispatch_batch, 2000, 1, 100000),
	I("scheduler", "snapshot_chunk", scheduler_snapshot_chunk, 50000, 1, 1000000),
	I("scheduler", "snapshot_connections", scheduler_snapshot_connections, 3, 1, 8),
	I("scheduler", "results_consumers", scheduler_results_consumers, 4, 1, 16),
	I("worker", "max_in_flight", worker_max_in_flight, 200, 1, 100000),
	I("worker", "connect_timeout_ms", worker_connect_timeout_ms, 3000, 100, 60000),
	I("worker", "request_timeout_ms", worker_request_timeout_ms, 10000, 100, 120000),
	I("worker", "max_429_retries", worker_max_429_retries, 5, 0, 100),
	SECRET("worker", "db_url", worker_db_url, ""),
	S("worker", "crash_at", worker_crash_at, ""),
};

static char **str_field(struct dl_config *cfg, const struct opt *o)
{
	return (char **)((char *)cfg + o->offset);
}

static int *int_field(struct dl_config *cfg, const struct opt *o)
{
	return (int *)((char *)cfg + o->offset);
}

static bool *bool_field(struct dl_config *cfg, const struct opt *o)
{
	return (bool *)((char *)cfg + o->offset);
}

static int parse_long(const char *s, long *out)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || end == s || *end != '\0')
		return -EINVAL;
	*out = v;
	return 0;
}

static int parse_bool(const char *s, bool *out)
{
	if (!strcmp(s, "1") || !strcasecmp(s, "true") || !strcasecmp(s, "yes") || !strcasecmp(s, "on"))
		*out = true;
	else if (!strcmp(s, "0") || !strcasecmp(s, "false") || !strcasecmp(s, "no") || !strcasecmp(s, "off"))
		*out = false;
	else
		return -EINVAL;
	return 0;
}

/* Sets one option from text (a default or an environment value). */
static int set_text(struct dl_config *cfg, const struct opt *o, const char *text,
		    const char *origin, char *err, size_t errlen)
{
	long v;

	switch (o->type) {
	case OPT_STR: {
		char *dup = strdup(text);

		if (dup == NULL)
			return -ENOMEM;
		free(*str_field(cfg, o));
		*str_field(cfg, o) = dup;
		return 0;
	}
	case OPT_INT:
		if (parse_long(text, &v) || v < o->min || v > o->max) {
			snprintf(err, errlen, "%s: %s.%s must be an integer from %ld to %ld, got \"%s\"",
				 origin, o->section, o->key, o->min, o->max, text);
			return -EINVAL;
		}
		*int_field(cfg, o) = (int)v;
		return 0;
	case OPT_BOOL:
		if (parse_bool(text, bool_field(cfg, o))) {
			snprintf(err, errlen, "%s: %s.%s must be true or false, got \"%s\"", origin,
				 o->section, o->key, text);
			return -EINVAL;
		}
		return 0;
	}
	return -EINVAL;
}

static int load_file(struct dl_config *cfg, const char *path, char *err, size_t errlen)
{
	config_t lc;
	int r = 0;

	config_init(&lc);
	if (config_read_file(&lc, path) != CONFIG_TRUE) {
		snprintf(err, errlen, "%s:%d: %s", config_error_file(&lc) ? config_error_file(&lc) : path,
			 config_error_line(&lc), config_error_text(&lc));
		r = -EINVAL;
		goto out;
	}
	/* Unknown settings are an error: a typo must not pass silently. */
	for (int s = 0; s < config_setting_length(config_root_setting(&lc)); s++) {
		config_setting_t *sec = config_setting_get_elem(config_root_setting(&lc), (unsigned)s);

		if (!config_setting_is_group(sec)) {
			snprintf(err, errlen, "%s:%d: %s must be a group", path,
				 config_setting_source_line(sec), config_setting_name(sec));
			r = -EINVAL;
			goto out;
		}
		for (int k = 0; k < config_setting_length(sec); k++) {
			config_setting_t *item = config_setting_get_elem(sec, (unsigned)k);
			const struct opt *o = NULL;
			char buf[64];

			for (size_t i = 0; i < DL_ARRAY_LEN(opts); i++)
				if (!strcmp(opts[i].section, config_setting_name(sec)) &&
				    !strcmp(opts[i].key, config_setting_name(item)))
					o = &opts[i];
			if (o == NULL) {
				snprintf(err, errlen, "%s:%d: unknown setting %s.%s", path,
					 config_setting_source_line(item), config_setting_name(sec),
					 config_setting_name(item));
				r = -EINVAL;
				goto out;
			}
			switch (config_setting_type(item)) {
			case CONFIG_TYPE_STRING:
				if (o->type != OPT_STR)
					goto wrong_type;
				r = set_text(cfg, o, config_setting_get_string(item), path, err, errlen);
				break;
			case CONFIG_TYPE_INT:
			case CONFIG_TYPE_INT64:
				if (o->type != OPT_INT)
					goto wrong_type;
				snprintf(buf, sizeof(buf), "%lld", (long long)config_setting_get_int64(item));
				r = set_text(cfg, o, buf, path, err, errlen);
				break;
			case CONFIG_TYPE_BOOL:
				if (o->type != OPT_BOOL)
					goto wrong_type;
				*bool_field(cfg, o) = config_setting_get_bool(item);
				break;
			default:
				goto wrong_type;
			}
			if (r < 0)
				goto out;
			continue;
wrong_type:
			snprintf(err, errlen, "%s:%d: %s.%s has the wrong type", path,
				 config_setting_source_line(item), o->section, o->key);
			r = -EINVAL;
			goto out;
		}
	}
out:
	config_destroy(&lc);
	return r;
}

int dl_config_load(struct dl_config *cfg, const char *path, char *err, size_t errlen)
{
	int r;

	memset(cfg, 0, sizeof(*cfg));
	for (size_t i = 0; i < DL_ARRAY_LEN(opts); i++) {
		r = set_text(cfg, &opts[i], opts[i].def, "default", err, errlen);
		if (r < 0)
			return r;
	}
	if (path != NULL) {
		r = load_file(cfg, path, err, errlen);
		if (r < 0)
			return r;
	}
	for (size_t i = 0; i < DL_ARRAY_LEN(opts); i++) {
		char name[128];
		const char *v;
		size_t n;

		n = (size_t)snprintf(name, sizeof(name), "DIALER_%s_%s", opts[i].section, opts[i].key);
		for (size_t j = 0; j < n; j++)
			name[j] = (char)toupper((unsigned char)name[j]);
		v = getenv(name);
		if (v == NULL)
			continue;
		r = set_text(cfg, &opts[i], v, name, err, errlen);
		if (r < 0)
			return r;
	}
	return 0;
}

void dl_config_free(struct dl_config *cfg)
{
	if (cfg == NULL)
		return;
	for (size_t i = 0; i < DL_ARRAY_LEN(opts); i++) {
		if (opts[i].type == OPT_STR) {
			free(*str_field(cfg, &opts[i]));
			*str_field(cfg, &opts[i]) = NULL;
		}
	}
}

/* Masks the password of a URL ("scheme://user:pass@host") or a whole secret. */
static void print_secret(FILE *out, const char *v)
{
	const char *scheme = strstr(v, "://"), *at = strrchr(v, '@'), *colon;

	if (scheme == NULL || at == NULL) {
		fputs("\"****\"", out);
		return;
	}
	colon = memchr(scheme + 3, ':', (size_t)(at - scheme - 3));
	if (colon == NULL) {
		fprintf(out, "\"%s\"", v);
		return;
	}
	fprintf(out, "\"%.*s****%s\"", (int)(colon + 1 - v), v, at);
}

void dl_config_print(const struct dl_config *cfg, FILE *out)
{
	const char *section = "";

	for (size_t i = 0; i < DL_ARRAY_LEN(opts); i++) {
		const struct opt *o = &opts[i];
		struct dl_config *c = (struct dl_config *)cfg;

		if (strcmp(section, o->section)) {
			if (*section)
				fputs("};\n", out);
			fprintf(out, "%s: {\n", o->section);
			section = o->section;
		}
		fprintf(out, "  %s = ", o->key);
		if (o->type == OPT_INT)
			fprintf(out, "%d", *int_field(c, o));
		else if (o->type == OPT_BOOL)
			fputs(*bool_field(c, o) ? "true" : "false", out);
		else if (o->secret)
			print_secret(out, *str_field(c, o));
		else
			fprintf(out, "\"%s\"", *str_field(c, o));
		fputs(";\n", out);
	}
	fputs("};\n", out);
}
