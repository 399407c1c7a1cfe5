#include "dl_http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "dl_log.h"
#include "dl_metrics.h"

/* An open connection as the request deadline sees it. libmicrohttpd's own
 * timeout counts idle time only, so a client trickling a byte at a time
 * would hold its connection forever; the watchdog thread closes (shutdown)
 * a connection whose request is not in by its deadline. */
struct watch {
	struct watch *prev, *next;
	MHD_socket fd;
	int64_t deadline_ms; /* 0 while the request is handled and answered */
	bool cut;
	/* A request answered later (dl_http_defer): its connection is
	 * suspended from `later` being set until woken, once, by dl_http_wake
	 * or, at wake_at, by the watchdog. */
	struct dl_httpd *d;
	struct MHD_Connection *conn;
	bool later, woken;
	int64_t wake_at;
};

struct dl_httpd {
	struct MHD_Daemon *mhd;
	dl_http_handler handler;
	void *ctx;
	size_t max_body;
	int request_timeout_ms;
	int port;
	/* The open connections, for the watchdog; guarded by lock. */
	pthread_mutex_t lock;
	pthread_cond_t wake;
	struct watch *watched;
	int deferred;  /* requests set aside whose `then` has not run */
	bool no_defer; /* stopping: requests are answered at once */
	bool stopping;
	bool watchdog_started;
	pthread_t watchdog;
};

/* Per-request upload state, created on the first call. */
struct upload {
	char *buf;
	size_t len, cap;
	bool too_large;
	bool refused; /* a 413 went out while the body was still coming */
	int64_t started_ms;
	struct dl_httpd *d;
	/* Set by dl_http_defer; run when the connection is resumed. */
	dl_http_then then;
	void *then_arg;
	char request_id[DL_REQUEST_ID_MAX];
	char ip[INET6_ADDRSTRLEN];
};

/* How long a connection that was refused mid-body may keep sending (read and
 * discarded) before it is closed: closing at once, with its data unread,
 * resets the connection and the client may never read its 413. */
#define REFUSED_LINGER_MS 2000

const char *dl_http_reason(int status)
{
	switch (status) {
	case 200: return "OK";
	case 201: return "Created";
	case 202: return "Accepted";
	case 204: return "No Content";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 402: return "Payment Required";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 408: return "Request Timeout";
	case 409: return "Conflict";
	case 411: return "Length Required";
	case 413: return "Payload Too Large";
	case 414: return "URI Too Long";
	case 415: return "Unsupported Media Type";
	case 422: return "Unprocessable Entity";
	case 429: return "Too Many Requests";
	case 500: return "Internal Server Error";
	case 502: return "Bad Gateway";
	case 503: return "Service Unavailable";
	default: return "Error";
	}
}

void dl_http_json(struct dl_http_resp *resp, int status, json_t *body)
{
	free(resp->body);
	resp->body = NULL;
	resp->body_len = 0;
	resp->status = status;
	resp->content_type = "application/json";
	if (body != NULL) {
		resp->body = json_dumps(body, JSON_COMPACT);
		resp->body_len = resp->body ? strlen(resp->body) : 0;
		json_decref(body);
	}
}

void dl_http_json_take(struct dl_http_resp *resp, int status, char *body, size_t len)
{
	free(resp->body);
	resp->status = status;
	resp->content_type = "application/json";
	resp->body = body;
	resp->body_len = body ? len : 0;
}

void dl_http_error(struct dl_http_resp *resp, int status, const char *fmt, ...)
{
	json_t *body;
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	body = json_pack("{s:i, s:s, s:s}", "statusCode", status, "message", msg, "error", dl_http_reason(status));
	/* A message that is not UTF-8 must still get the error's shape. */
	if (body == NULL)
		body = json_pack("{s:i, s:s, s:s}", "statusCode", status, "message", "the request is not valid",
				 "error", dl_http_reason(status));
	dl_http_json(resp, status, body);
}

void dl_http_text(struct dl_http_resp *resp, int status, const char *content_type, const char *text,
		  size_t len)
{
	free(resp->body);
	resp->status = status;
	resp->content_type = content_type;
	resp->body = malloc(len + 1);
	resp->body_len = resp->body ? len : 0;
	if (resp->body) {
		memcpy(resp->body, text, len);
		resp->body[len] = '\0';
	}
}

const char *dl_http_query(struct dl_http_req *req, const char *key)
{
	return MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, key);
}

const char *dl_http_header(struct dl_http_req *req, const char *name)
{
	return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
}

static bool request_id_valid(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n >= DL_REQUEST_ID_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '-' || c == '_' || c == '.'))
			return false;
	}
	return true;
}

static enum MHD_Result send_resp(struct MHD_Connection *conn, struct dl_http_resp *r,
				 const char *request_id)
{
	struct MHD_Response *mr;
	enum MHD_Result ret;

	mr = MHD_create_response_from_buffer(r->body_len, r->body ? r->body : (char *)"",
					     r->body ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
	r->body = NULL;
	if (mr == NULL)
		return MHD_NO;
	if (r->body_len > 0 || r->status != 204)
		MHD_add_response_header(mr, MHD_HTTP_HEADER_CONTENT_TYPE,
					r->content_type ? r->content_type : "application/json");
	if (request_id)
		MHD_add_response_header(mr, "X-Request-Id", request_id);
	if (r->retry_after[0])
		MHD_add_response_header(mr, MHD_HTTP_HEADER_RETRY_AFTER, r->retry_after);
	if (r->location[0])
		MHD_add_response_header(mr, MHD_HTTP_HEADER_LOCATION, r->location);
	ret = MHD_queue_response(conn, (unsigned)r->status, mr);
	MHD_destroy_response(mr);
	return ret;
}

/* The method as a metric label: a client may send any token, so only the
 * standard ones get a series of their own. */
static const char *method_label(const char *method)
{
	static const char *const known[] = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"};

	for (size_t i = 0; i < DL_ARRAY_LEN(known); i++)
		if (!strcmp(method, known[i]))
			return known[i];
	return "other";
}

static void record(const struct dl_http_resp *resp, const char *method, int64_t started_ms)
{
	char labels[384], route[256];
	double secs = (double)(dl_mono_ms() - started_ms) / 1000.0;

	dl_metrics_escape(route, sizeof(route), resp->route ? resp->route : "other");
	snprintf(labels, sizeof(labels), "route=\"%s\",method=\"%s\",status=\"%d\"", route, method_label(method),
		 resp->status);
	dl_metrics_add("dialer_http_requests_total", labels, 1);
	snprintf(labels, sizeof(labels), "route=\"%s\"", route);
	dl_metrics_observe("dialer_http_request_duration_seconds", labels, secs);
}

/* The watch of conn, or NULL when it has none. */
static struct watch *watch_of(struct MHD_Connection *conn)
{
	const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);

	return ci ? ci->socket_context : NULL;
}

/* Moves the request deadline of conn to deadline_ms (0: none). */
static void watch_set(struct dl_httpd *d, struct MHD_Connection *conn, int64_t deadline_ms)
{
	struct watch *w = watch_of(conn);

	if (w == NULL)
		return;
	pthread_mutex_lock(&d->lock);
	w->deadline_ms = deadline_ms;
	pthread_mutex_unlock(&d->lock);
}

static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
			  enum MHD_ConnectionNotificationCode code)
{
	struct dl_httpd *d = cls;
	struct watch *w = *socket_context;

	if (code == MHD_CONNECTION_NOTIFY_STARTED) {
		const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);

		if (ci == NULL || (w = calloc(1, sizeof(*w))) == NULL)
			return; /* unwatched: the idle timeout still applies */
		w->fd = ci->connect_fd;
		w->d = d;
		w->conn = conn;
		w->deadline_ms = dl_mono_ms() + d->request_timeout_ms;
		pthread_mutex_lock(&d->lock);
		w->next = d->watched;
		if (d->watched)
			d->watched->prev = w;
		d->watched = w;
		pthread_mutex_unlock(&d->lock);
		*socket_context = w;
		return;
	}
	/* Closed: libmicrohttpd closes the socket after this returns, so the
	 * watchdog never shuts down a descriptor that was reused. */
	if (w == NULL)
		return;
	pthread_mutex_lock(&d->lock);
	if (w->prev)
		w->prev->next = w->next;
	else
		d->watched = w->next;
	if (w->next)
		w->next->prev = w->prev;
	pthread_mutex_unlock(&d->lock);
	free(w);
	*socket_context = NULL;
}

/* Shuts down every connection past its deadline; the listener then sees the
 * end of the stream and closes it. */
static void *watchdog_loop(void *arg)
{
	struct dl_httpd *d = arg;
	int period_ms = d->request_timeout_ms / 4;

	if (period_ms < 25)
		period_ms = 25;
	if (period_ms > 500)
		period_ms = 500;
	pthread_mutex_lock(&d->lock);
	while (!d->stopping) {
		struct timespec ts;
		int64_t now = dl_mono_ms();
		int cut = 0, nwake = 0;
		struct MHD_Connection *wake[64];

		for (struct watch *w = d->watched; w != NULL; w = w->next) {
			/* A request set aside past its time: back to its thread,
			 * whose `then` finds the work unfinished. */
			if (w->later && !w->woken && now >= w->wake_at && nwake < (int)DL_ARRAY_LEN(wake)) {
				w->woken = true;
				wake[nwake++] = w->conn;
			}
			if (w->cut || w->deadline_ms == 0 || now < w->deadline_ms)
				continue;
			shutdown(w->fd, SHUT_RDWR);
			w->cut = true;
			cut++;
		}
		if (nwake > 0) {
			/* Suspended until resumed, and only this resumes them: the
			 * connections stay while the lock is let go. */
			pthread_mutex_unlock(&d->lock);
			for (int i = 0; i < nwake; i++)
				MHD_resume_connection(wake[i]);
			pthread_mutex_lock(&d->lock);
		}
		if (cut > 0) {
			char n[16];

			dl_metrics_add("dialer_http_request_timeouts_total", "", cut);
			snprintf(n, sizeof(n), "%d", cut);
			dl_log_kv(DL_INFO, "closed connections whose request was not in by its deadline", "connections",
				  n, NULL);
		}
		dl_timespec_in(CLOCK_REALTIME, nwake == DL_ARRAY_LEN(wake) ? 0 : period_ms, &ts);
		pthread_cond_timedwait(&d->wake, &d->lock, &ts);
	}
	pthread_mutex_unlock(&d->lock);
	return NULL;
}

struct dl_http_later *dl_http_defer(struct dl_http_req *req, int wait_ms, dl_http_then then, void *arg)
{
	struct upload *up = req->listener;
	struct dl_httpd *d = up ? up->d : NULL;
	struct watch *w = up ? watch_of(req->conn) : NULL;

	if (w == NULL)
		return NULL;
	pthread_mutex_lock(&d->lock);
	if (d->no_defer) {
		pthread_mutex_unlock(&d->lock);
		return NULL;
	}
	d->deferred++;
	dl_metrics_set("dialer_http_requests_waiting", NULL, d->deferred);
	pthread_mutex_unlock(&d->lock);
	up->then = then;
	up->then_arg = arg;
	/* Suspended before anyone can wake it: resuming a connection that is
	 * not suspended is undefined. */
	MHD_suspend_connection(req->conn);
	pthread_mutex_lock(&d->lock);
	w->later = true;
	w->woken = false;
	w->wake_at = dl_mono_ms() + wait_ms;
	pthread_mutex_unlock(&d->lock);
	return (struct dl_http_later *)w;
}

void dl_http_wake(struct dl_http_later *later)
{
	struct watch *w = (struct watch *)later;
	bool go;

	pthread_mutex_lock(&w->d->lock);
	go = w->later && !w->woken;
	if (go)
		w->woken = true;
	pthread_mutex_unlock(&w->d->lock);
	if (go)
		MHD_resume_connection(w->conn);
}

/* Answers resp on conn's socket while the request body is still coming in,
 * which libmicrohttpd's queue does not allow, and ends the sending side:
 * the client reads a complete answer and the end of the stream. Only the
 * connection's own thread writes to it, and it writes nothing while
 * receiving. */
static void send_refusal(struct MHD_Connection *conn, const struct dl_http_resp *resp, const char *request_id)
{
	const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
	char head[512];
	int n;

	if (ci == NULL)
		return;
	n = snprintf(head, sizeof(head),
		     "HTTP/1.1 %d %s\r\nConnection: close\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
		     "X-Request-Id: %s\r\n\r\n",
		     resp->status, dl_http_reason(resp->status), resp->content_type ? resp->content_type : "application/json",
		     resp->body_len, request_id);
	if (n < 0 || (size_t)n >= sizeof(head))
		return;
	/* A few hundred bytes into an idle send buffer: a short write would mean
	 * the client is gone, and it is closed either way. */
	if (send(ci->connect_fd, head, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT) == n && resp->body_len > 0)
		(void)!send(ci->connect_fd, resp->body, resp->body_len, MSG_NOSIGNAL | MSG_DONTWAIT);
	shutdown(ci->connect_fd, SHUT_WR);
}

/* The request's id: the client's X-Request-Id when it is sane, else a new one. */
static void request_id_of(struct MHD_Connection *conn, char id[DL_REQUEST_ID_MAX])
{
	const char *rid = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Request-Id");
	char r[25];

	if (rid != NULL && request_id_valid(rid)) {
		snprintf(id, DL_REQUEST_ID_MAX, "%s", rid);
		return;
	}
	if (dl_random_alnum(r, 24) < 0)
		snprintf(r, sizeof(r), "unknown");
	snprintf(id, DL_REQUEST_ID_MAX, "req_%s", r);
}

/* The body is over the cap while it is still coming (declared so, or
 * chunked and past it): 413 now rather than when the client stops sending.
 * The rest is read and dropped for a short while, then the connection
 * closed. */
static void refuse_mid_body(struct dl_httpd *d, struct MHD_Connection *conn, struct upload *up, const char *method)
{
	struct dl_http_resp resp;
	char request_id[DL_REQUEST_ID_MAX];
	int64_t linger = d->request_timeout_ms < REFUSED_LINGER_MS ? d->request_timeout_ms : REFUSED_LINGER_MS;

	memset(&resp, 0, sizeof(resp));
	request_id_of(conn, request_id);
	resp.route = "other";
	dl_http_error(&resp, 413, "request body is larger than %zu bytes", d->max_body);
	record(&resp, method, up->started_ms);
	send_refusal(conn, &resp, request_id);
	free(resp.body);
	free(up->buf);
	up->buf = NULL;
	up->len = up->cap = 0;
	up->refused = true;
	watch_set(d, conn, dl_mono_ms() + linger);
}

/* The request as a handler sees it; its id and the client's address are
 * worked out once, so that a `then` sees the same. */
static void req_of(struct dl_http_req *req, struct MHD_Connection *conn, struct upload *up, const char *method,
		   const char *url)
{
	memset(req, 0, sizeof(*req));
	if (up->request_id[0] == '\0') {
		const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);

		request_id_of(conn, up->request_id);
		if (ci && ci->client_addr) {
			const struct sockaddr *sa = ci->client_addr;

			if (sa->sa_family == AF_INET)
				inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, up->ip, sizeof(up->ip));
			else if (sa->sa_family == AF_INET6)
				inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, up->ip,
					  sizeof(up->ip));
		}
	}
	snprintf(req->request_id, sizeof(req->request_id), "%s", up->request_id);
	req->conn = conn;
	req->method = method;
	req->url = url;
	req->client_ip = up->ip;
	req->body = up->buf;
	req->body_len = up->len;
	req->listener = up;
}

/* Runs the `then` of a request set aside (resp NULL: no one to answer),
 * once; the connection is no longer suspended. */
static void run_then(struct dl_httpd *d, struct MHD_Connection *conn, struct upload *up, struct dl_http_req *req,
		     struct dl_http_resp *resp)
{
	dl_http_then then = up->then;
	struct watch *w = watch_of(conn);

	up->then = NULL;
	pthread_mutex_lock(&d->lock);
	if (w != NULL)
		w->later = w->woken = false;
	d->deferred--;
	dl_metrics_set("dialer_http_requests_waiting", NULL, d->deferred);
	pthread_cond_broadcast(&d->wake);
	pthread_mutex_unlock(&d->lock);
	then(d->ctx, req, resp, up->then_arg);
}

/* Sends resp (500 when the handler wrote none), counted in the metrics. */
static enum MHD_Result answer(struct MHD_Connection *conn, struct dl_http_resp *resp, const char *method,
			      const struct upload *up, const char *request_id)
{
	enum MHD_Result ret;

	if (resp->status == 0)
		dl_http_error(resp, 500, "no response");
	record(resp, method, up->started_ms);
	ret = send_resp(conn, resp, request_id);
	free(resp->body);
	return ret;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
				  const char *method, const char *version, const char *upload_data,
				  size_t *upload_size, void **con_cls)
{
	struct dl_httpd *d = cls;
	struct upload *up = *con_cls;
	struct dl_http_req req;
	struct dl_http_resp resp;
	const char *cl;

	(void)version;
	if (up != NULL && up->then != NULL) {
		/* Resumed: the request set aside is answered now. */
		req_of(&req, conn, up, method, url);
		memset(&resp, 0, sizeof(resp));
		run_then(d, conn, up, &req, &resp);
		return answer(conn, &resp, method, up, req.request_id);
	}
	if (up == NULL) {
		up = calloc(1, sizeof(*up));
		if (up == NULL)
			return MHD_NO;
		up->started_ms = dl_mono_ms();
		up->d = d;
		*con_cls = up;
		cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
		/* Refuse a declared oversized body before reading a byte of it.
		 * A client that asked "Expect: 100-continue" sends nothing more
		 * and gets the 413 the usual way; one that is already sending
		 * gets it at once, the body drained as for a chunked one. */
		if (cl == NULL || strtoull(cl, NULL, 10) <= d->max_body)
			return MHD_YES;
		up->too_large = true;
		if (MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_EXPECT) == NULL) {
			refuse_mid_body(d, conn, up, method);
			return MHD_YES;
		}
	}
	if (up->refused) {
		/* Answered already: drop the rest, and close once it ends. */
		if (*upload_size == 0)
			return MHD_NO;
		*upload_size = 0;
		return MHD_YES;
	}
	if (*upload_size > 0) {
		if (up->len + *upload_size > d->max_body) {
			*upload_size = 0;
			refuse_mid_body(d, conn, up, method);
			return MHD_YES;
		}
		if (up->len + *upload_size + 1 > up->cap) {
			size_t cap = (up->len + *upload_size + 1) * 2;
			char *nb;

			if (cap > d->max_body + 1)
				cap = d->max_body + 1;
			nb = realloc(up->buf, cap);
			if (nb == NULL)
				return MHD_NO;
			up->buf = nb;
			up->cap = cap;
		}
		memcpy(up->buf + up->len, upload_data, *upload_size);
		up->len += *upload_size;
		*upload_size = 0;
		return MHD_YES;
	}
	/* The request is in: its deadline no longer runs while it is handled
	 * and answered. */
	watch_set(d, conn, 0);
	memset(&resp, 0, sizeof(resp));
	if (up->too_large) {
		req_of(&req, conn, up, method, url);
		resp.route = "other";
		dl_http_error(&resp, 413, "request body is larger than %zu bytes", d->max_body);
	} else {
		if (up->buf == NULL)
			up->buf = calloc(1, 1);
		if (up->buf == NULL)
			return MHD_NO;
		up->buf[up->len] = '\0';
		req_of(&req, conn, up, method, url);
		d->handler(d->ctx, &req, &resp);
		if (up->then != NULL) {
			/* Set aside (dl_http_defer): answered when resumed. */
			free(resp.body);
			return MHD_YES;
		}
	}
	return answer(conn, &resp, method, up, req.request_id);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
			 enum MHD_RequestTerminationCode toe)
{
	struct dl_httpd *d = cls;
	struct upload *up = *con_cls;

	(void)toe;
	/* A kept-alive connection has until this deadline to send its next
	 * request (its idle timeout may close it sooner). */
	watch_set(d, conn, dl_mono_ms() + d->request_timeout_ms);
	if (up != NULL && up->then != NULL) {
		/* Ended while set aside: its `then` still runs, to free. */
		struct dl_http_req req;

		req_of(&req, conn, up, "", "");
		run_then(d, conn, up, &req, NULL);
	}
	if (up != NULL) {
		free(up->buf);
		free(up);
		*con_cls = NULL;
	}
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
	char buf[512];

	(void)cls;
	vsnprintf(buf, sizeof(buf), fmt, ap);
	buf[strcspn(buf, "\n")] = '\0';
	dl_log_kv(DL_DEBUG, "http listener", "detail", buf, NULL);
}

int dl_httpd_start(const struct dl_config *cfg, const char *listen, int port, int threads,
		   dl_http_handler handler, void *ctx, struct dl_httpd **out)
{
	struct dl_httpd *d = calloc(1, sizeof(*d));
	struct sockaddr_in sa;
	const union MHD_DaemonInfo *info;

	if (d == NULL)
		return -ENOMEM;
	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_port = htons((uint16_t)port);
	if (inet_pton(AF_INET, listen, &sa.sin_addr) != 1) {
		dl_log_kv(DL_ERROR, "http listen address is not an IPv4 address", "listen", listen, NULL);
		free(d);
		return -EINVAL;
	}
	d->handler = handler;
	d->ctx = ctx;
	d->max_body = (size_t)cfg->http_max_body_bytes;
	d->request_timeout_ms = cfg->http_request_timeout_ms;
	pthread_mutex_init(&d->lock, NULL);
	pthread_cond_init(&d->wake, NULL);
	dl_metrics_register("dialer_http_requests_total", "counter", "HTTP requests by route, method and status.");
	dl_metrics_register("dialer_http_request_duration_seconds", "histogram",
			    "HTTP request latency by route.");
	dl_metrics_register("dialer_http_request_timeouts_total", "counter",
			    "Connections closed because their request was not complete by http.request_timeout_ms.");
	dl_metrics_add("dialer_http_request_timeouts_total", "", 0); /* exported before the first */
	dl_metrics_register("dialer_http_requests_waiting", "gauge",
			    "Requests set aside while they wait for other work (a carrier callback for the broker's "
			    "confirm), holding no listener thread.");
	dl_metrics_set("dialer_http_requests_waiting", NULL, 0);
	{
		/* A pool only when asked for more than one thread: libmicrohttpd
		 * warns about a pool of one. */
		struct MHD_OptionItem opts[] = {
			{MHD_OPTION_SOCK_ADDR, 0, &sa},
			{MHD_OPTION_CONNECTION_TIMEOUT, cfg->http_connection_timeout_s, NULL},
			{MHD_OPTION_CONNECTION_LIMIT, cfg->http_max_connections, NULL},
			{MHD_OPTION_PER_IP_CONNECTION_LIMIT, cfg->http_per_ip_connections, NULL},
			{MHD_OPTION_CONNECTION_MEMORY_LIMIT, 65536, NULL},
			{MHD_OPTION_LISTEN_BACKLOG_SIZE, 1024, NULL},
			{MHD_OPTION_NOTIFY_COMPLETED, (intptr_t)on_completed, d},
			{MHD_OPTION_NOTIFY_CONNECTION, (intptr_t)on_connection, d},
			{MHD_OPTION_EXTERNAL_LOGGER, (intptr_t)mhd_log, NULL},
			{threads > 1 ? MHD_OPTION_THREAD_POOL_SIZE : MHD_OPTION_END, threads, NULL},
			{MHD_OPTION_END, 0, NULL},
		};

		d->mhd = MHD_start_daemon(MHD_USE_EPOLL_INTERNAL_THREAD | MHD_USE_ERROR_LOG | MHD_USE_TURBO |
						  MHD_ALLOW_SUSPEND_RESUME,
					  0,
					  NULL, NULL, on_request, d, MHD_OPTION_ARRAY, opts, MHD_OPTION_END);
	}
	if (d->mhd == NULL) {
		dl_log_kv(DL_ERROR, "http listener failed to start", "listen", listen, NULL);
		dl_httpd_stop(d);
		return -EADDRINUSE;
	}
	if (pthread_create(&d->watchdog, NULL, watchdog_loop, d) != 0) {
		dl_log_kv(DL_ERROR, "http listener could not start its request watchdog", "listen", listen, NULL);
		dl_httpd_stop(d);
		return -EAGAIN;
	}
	d->watchdog_started = true;
	info = MHD_get_daemon_info(d->mhd, MHD_DAEMON_INFO_BIND_PORT);
	d->port = info ? info->port : port;
	*out = d;
	return 0;
}

void dl_httpd_stop(struct dl_httpd *d)
{
	if (d == NULL)
		return;
	if (d->watchdog_started) {
		pthread_mutex_lock(&d->lock);
		/* New requests are answered at once; those set aside are woken
		 * by their handlers' work or, at their time, by the watchdog,
		 * and libmicrohttpd must not stop with one still suspended. */
		d->no_defer = true;
		while (d->deferred > 0)
			pthread_cond_wait(&d->wake, &d->lock);
		d->stopping = true;
		pthread_cond_signal(&d->wake);
		pthread_mutex_unlock(&d->lock);
		pthread_join(d->watchdog, NULL);
	}
	if (d->mhd != NULL)
		MHD_stop_daemon(d->mhd);
	pthread_cond_destroy(&d->wake);
	pthread_mutex_destroy(&d->lock);
	free(d);
}

int dl_httpd_port(const struct dl_httpd *d)
{
	return d->port;
}
