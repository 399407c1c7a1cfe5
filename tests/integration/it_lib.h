/* it_lib: what the integration suites share: HTTP calls to the real API,
 * organizations made with the real dialerctl, and direct Postgres reads to
 * check what a request changed. Everything here aborts the test on failure.
 * Environment (set by tests/run.sh): DIALER_API_URL, DIALER_DB_URL,
 * DIALER_AMQP_URL, DIALER_CTL (path of dialerctl). */
#ifndef IT_LIB_H
#define IT_LIB_H

#include <amqp.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <sys/types.h>
#include <cmocka.h>

struct it_resp {
	long status;
	char *body;     /* raw body, NUL-terminated */
	json_t *json;   /* parsed body, or NULL when not JSON */
	char *headers;  /* raw response headers */
};

/* An organization with its key (quota in minutes). */
struct it_org {
	char id[64];
	char key[64];
	char flow_id[64];
};

/* The value of environment variable name; fails the test when unset. */
const char *it_env(const char *name);
/* Calls the API: method, path (e.g. "/v1/campaigns?limit=5"), the API key
 * (NULL for none) and a body (NULL for none; sent as application/json).
 * Extra headers may be given as "Name: value" strings ending in NULL. */
struct it_resp *it_call(const char *method, const char *path, const char *key, const char *body, ...)
	__attribute__((sentinel));
/* Like it_call with a printf-formatted body. */
struct it_resp *it_callf(const char *method, const char *path, const char *key, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
/* Sends raw bytes as the body with a given content type (NULL: none). */
struct it_resp *it_call_raw(const char *method, const char *path, const char *key, const char *ctype,
			    const void *body, size_t len);
/* POSTs a form-encoded body to the carrier callback of attempt, signed as
 * the carrier signs it (X-Twilio-Signature with the carrier's auth token). */
struct it_resp *it_post_callback(const char *attempt, const char *form);
/* Calls an absolute URL without a key (the simulator, health endpoints). */
struct it_resp *it_call_url(const char *method, const char *url);
/* The value of one series (its name and labels, as /metrics prints them)
 * on the /metrics of the service whose health URL is in env; 0 when absent. */
long long it_metric(const char *env, const char *series);
/* A connection with channel 1 open to the test broker (DIALER_AMQP_URL),
 * and its close. */
amqp_connection_state_t it_mq_open(void);
void it_mq_close(amqp_connection_state_t conn);
void it_resp_free(struct it_resp *r);
/* The value of a response header (case-insensitive), copied into buf, or NULL. */
const char *it_header(const struct it_resp *r, const char *name, char *buf, size_t len);
/* Asserts status and, for error answers, the {statusCode, message, error} shape. */
void it_expect(const struct it_resp *r, long status);
/* Shortcuts into the JSON body. */
const char *it_str(const struct it_resp *r, const char *field);
long long it_int(const struct it_resp *r, const char *field);

/* Creates an organization (quota_minutes) with a key and one flow. */
void it_org_new(struct it_org *org, long quota_minutes);
/* Runs dialerctl with the given arguments (ending in NULL); returns its
 * stdout (caller frees) and writes the exit code. */
char *it_ctl(int *exit_code, ...) __attribute__((sentinel));

/* A connection to the test database (one per process, reused). */
PGconn *it_db(void);
/* Runs a query with text parameters (ending in NULL) and returns the first
 * column of the first row as a number (-1 when there is no row). */
long long it_db_count(const char *sql, ...) __attribute__((sentinel));

/* A unique E.164 number for this run (a different one every call), never
 * ending in 00; last_digit picks the simulator's outcome. */
void it_phone(char out[20], int last_digit);
/* Polls cond(arg) every 20 ms until true or timeout_ms; returns cond's last value. */
int it_poll(int (*cond)(void *arg), void *arg, int timeout_ms);

/* Extra processes a test runs beside the stack's own. */
/* A free loopback TCP port. */
int it_free_port(void);
/* Polls until something listens on port (up to timeout_ms); true if it does. */
int it_port_up(int port, int timeout_ms);
/* Polls until an API on port answers GET /readyz with 200 (up to
 * timeout_ms); true if it does. */
int it_api_ready(int port, int timeout_ms);
/* Starts build/<name> with env (name, value pairs ending in NULL) added to
 * the test's environment, logging to $STACK_RUNDIR/logs/<name>-<tag>.log. */
pid_t it_spawn(const char *name, const char *tag, const char *const *env);
/* SIGTERM to pid and wait (up to 20 s) until it is gone. */
void it_stop_pid(pid_t pid);
/* The pid of one of the stack's own services (its pid file). */
pid_t it_service_pid(const char *name);
/* Starts whatever of the stack's own services is not running. */
void it_services_start(void);
/* The dialer_worker role's URL on the test database. */
void it_worker_db_url(char *out, size_t len);

#endif
