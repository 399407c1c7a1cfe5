/* dl_config: the one configuration of every Dialer service.
 * Values come from defaults, then a libconfig file, then DIALER_<SECTION>_<KEY>
 * environment variables (e.g. DIALER_DB_URL, DIALER_CLOCK_MINUTE_MS). */
#ifndef DL_CONFIG_H
#define DL_CONFIG_H

#include <stdbool.h>
#include <stdio.h>

#include "dl_util.h"

struct dl_config {
	/* log */
	char *log_level;
	/* clock */
	int clock_minute_ms;
	/* db */
	char *db_url;
	int db_pool_size;
	int db_connect_timeout_s;
	/* amqp */
	char *amqp_url;
	int amqp_heartbeat_s;
	bool amqp_tls;
	char *amqp_tls_ca_file;
	char *amqp_commands_exchange;
	char *amqp_commands_queue;
	char *amqp_jobs_exchange;
	char *amqp_jobs_queue;
	char *amqp_results_queue;
	char *amqp_dead_letter_exchange;
	char *amqp_dead_letter_queue;
	int amqp_delivery_limit;
	/* http (the API's listener and every service's health listener) */
	char *http_listen;
	int http_port;
	int http_threads;
	int http_max_connections;
	int http_per_ip_connections;
	int http_connection_timeout_s;
	int http_request_timeout_ms;
	int http_max_body_bytes;
	/* health: port of the health/metrics listener of non-API services */
	int health_port;
	/* api */
	char *api_public_url;
	int api_rate_per_min;
	int api_bulk_rate_per_min;
	int api_outbox_batch;
	int api_import_threads;
	int api_read_cache_entries;    /* responses of campaign reads kept (0: no read cache) */
	int api_read_cache_max_age_ms; /* a kept response is never served older than this */
	int api_publish_wait_ms; /* a carrier callback waits this long for the broker, then uses the outbox */
	/* carrier */
	char *carrier_base_url;
	char *carrier_account_sid;
	char *carrier_auth_token;
	char *carrier_from;
	/* sim */
	char *sim_listen;
	int sim_port;
	int sim_call_seconds;    /* length of an answered call, in (scaled) seconds */
	int sim_ring_seconds;    /* ringing before the outcome, in (scaled) seconds */
	int sim_latency_ms;      /* added to every API answer */
	int sim_rate_429_pct;    /* share of creates answered 429 (call not created) */
	int sim_rate_5xx_pct;    /* share of creates answered 500 after creating the call */
	bool sim_honor_time_limit; /* false: a carrier that lets calls run past TimeLimit */
	/* scheduler */
	int scheduler_tick_ms;
	int scheduler_lease_s;
	int scheduler_timeout_grace_s;
	int scheduler_reconcile_after_s;
	int scheduler_results_consumers; /* threads applying results and call events (1..16) */
	int scheduler_snapshot_chunk; /* calls created per snapshot transaction (the first at most 2,000) */
	int scheduler_dispatch_batch; /* dials a dispatch pass claims before it commits */
	int scheduler_snapshot_connections; /* snapshot ranges copied at once, each on its own connection (1..8) */
	int scheduler_dial_late_ms; /* a dial job later than its slot by more than this is not dialed (0: never late) */
	/* worker */
	int worker_max_in_flight;
	int worker_connect_timeout_ms;
	int worker_request_timeout_ms;
	int worker_max_429_retries;
	char *worker_db_url;
	char *worker_crash_at; /* fault tests only: where a worker dies as if killed */
};

/* Fills cfg with defaults, then path's values (if path is not NULL), then the
 * environment. Returns 0, or -EINVAL after writing what is wrong to err. */
int dl_config_load(struct dl_config *cfg, const char *path, char *err, size_t errlen) DL_WUR;
/* Frees every string of cfg. Takes NULL. */
void dl_config_free(struct dl_config *cfg);
/* Writes the effective configuration as libconfig text, secrets masked. */
void dl_config_print(const struct dl_config *cfg, FILE *out);

#endif
