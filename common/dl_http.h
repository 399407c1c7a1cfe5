/* dl_http: the HTTP listener every service uses (libmicrohttpd, epoll, a
 * thread pool, an idle timeout and a request deadline, connection and per-IP
 * limits, a body cap answered 413 as soon as it is crossed). The handler is
 * called once per request with the whole body read. */
#ifndef DL_HTTP_H
#define DL_HTTP_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "dl_config.h"
#include "dl_util.h"

#define DL_REQUEST_ID_MAX 129

struct dl_http_req {
	void *conn; /* struct MHD_Connection */
	const char *method;
	const char *url;
	char *body; /* NUL-terminated, owned by the listener */
	size_t body_len;
	char request_id[DL_REQUEST_ID_MAX];
	const char *client_ip;
	void *listener; /* the listener's state of the request */
};

struct dl_http_resp {
	int status;
	char *body;               /* malloc'd, owned by the response */
	size_t body_len;
	const char *content_type; /* static string */
	const char *route;        /* static label for metrics, e.g. "/v1/campaigns/:id" */
	char retry_after[16];     /* set for 429 */
	char location[256];
};

typedef void (*dl_http_handler)(void *ctx, struct dl_http_req *req, struct dl_http_resp *resp);

struct dl_httpd;

/* Starts listening on listen:port (port 0 picks a free one). */
int dl_httpd_start(const struct dl_config *cfg, const char *listen, int port, int threads,
		   dl_http_handler handler, void *ctx, struct dl_httpd **out) DL_WUR;
/* Stops accepting, waits for requests in flight, frees; takes NULL. */
void dl_httpd_stop(struct dl_httpd *d);
/* The bound port. */
int dl_httpd_port(const struct dl_httpd *d);

/* Answering later. A handler that waits for another thread (a broker's
 * confirm, say) calls dl_http_defer and returns without an answer: the
 * connection is set aside, and its listener thread serves its other
 * connections meanwhile. dl_http_wake, from any thread and at most once,
 * brings it back, and `then` runs on the listener's thread with the same
 * request to write the answer. If nothing wakes it within wait_ms, the
 * listener does (then finds its work unfinished). `then` runs exactly once;
 * resp is NULL when there is no one left to answer. dl_http_defer returns
 * NULL when the request cannot wait (the listener is stopping): the handler
 * then answers at once. */
struct dl_http_later;
typedef void (*dl_http_then)(void *ctx, struct dl_http_req *req, struct dl_http_resp *resp, void *arg);
struct dl_http_later *dl_http_defer(struct dl_http_req *req, int wait_ms, dl_http_then then, void *arg);
void dl_http_wake(struct dl_http_later *later);

/* Value of a query argument or header, or NULL. */
const char *dl_http_query(struct dl_http_req *req, const char *key);
const char *dl_http_header(struct dl_http_req *req, const char *name);

/* Sets a JSON body (steals the reference to body; NULL gives no body). */
void dl_http_json(struct dl_http_resp *resp, int status, json_t *body);
/* Sets a JSON body already written: takes body (malloc'd, len bytes). */
void dl_http_json_take(struct dl_http_resp *resp, int status, char *body, size_t len);
/* Sets {"statusCode", "message", "error"} for status. */
void dl_http_error(struct dl_http_resp *resp, int status, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Sets a body of another type (copied). */
void dl_http_text(struct dl_http_resp *resp, int status, const char *content_type, const char *text,
		  size_t len);
/* The standard reason phrase of an HTTP status. */
const char *dl_http_reason(int status);

#endif
