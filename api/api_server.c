/* The API service: its listener, and what every request goes through before
 * its handler: health routes, routing, the API key, the rate limit and the
 * JSON body. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "dl_log.h"
#include "dl_metrics.h"

extern const char api_openapi_yaml[], api_openapi_yaml_end[];

/* The read cache's fixed limits: a page of 100 campaigns (some 500 bytes
 * each) fits; invalidations remembered, four per answer kept, within bounds
 * (past them the cache is emptied at once, see api_cache.c). */
#define API_CACHE_MAX_BODY (64 * 1024)
#define API_CACHE_MAX_BYTES ((size_t)32 * 1024 * 1024)
#define API_CACHE_MIN_DEPS 4096
#define API_CACHE_MAX_DEPS 262144

static const char SQL_KEY_LOOKUP[] =
	"SELECT organization_id, id, key_hash FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL";
static const char SQL_IDEM_CLAIM[] =
	"INSERT INTO idempotency_keys (organization_id, idem_key, request_hash) VALUES ($1, $2, $3)"
	" ON CONFLICT DO NOTHING RETURNING 1";
static const char SQL_IDEM_GET[] =
	"SELECT request_hash, status, response FROM idempotency_keys"
	" WHERE organization_id = $1 AND idem_key = $2 AND created_at > now() - interval '24 hours'";
static const char SQL_IDEM_STORE[] =
	"UPDATE idempotency_keys SET status = $3, response = $4 WHERE organization_id = $1 AND idem_key = $2";
static const char SQL_IDEM_EXPIRE[] =
	"DELETE FROM idempotency_keys WHERE created_at < now() - interval '24 hours'";

PGconn *api_db(struct api_call *c)
{
	if (c->db == NULL) {
		c->db = dl_db_pool_get(c->api->db, 5000);
		if (c->db == NULL)
			dl_http_error(c->resp, 503, "the database is unavailable; try again");
	}
	return c->db;
}

int api_tx_begin(struct api_call *c)
{
	return c->outer_txn ? 0 : dl_db_cmd(c->db, "BEGIN");
}

int api_tx_commit(struct api_call *c)
{
	return c->outer_txn ? 0 : dl_db_cmd(c->db, "COMMIT");
}

void api_db_failed(struct api_call *c)
{
	if (c->db != NULL && PQstatus(c->db) != CONNECTION_OK)
		dl_http_error(c->resp, 503, "the database is unavailable; try again");
	else
		dl_http_error(c->resp, 500, "internal error; request id %s", c->req->request_id);
}

/* Resolves the x-api-key header to an organization, from the keys verified
 * within API_KEY_CACHE_TTL_MS or else the database; answers 401 itself. */
static bool authenticate(struct api_call *c)
{
	const char *key = dl_http_header(c->req, "x-api-key");
	char hash[65];
	const char *params[1] = {hash};
	PGresult *r;
	int64_t now_ms;
	size_t n;

	n = key ? strlen(key) : 0;
	if (n < 12 || n > 128 || strncmp(key, "sk_live_", 8) != 0) {
		dl_http_error(c->resp, 401, "missing or invalid API key (x-api-key header)");
		return false;
	}
	/* Only the hash is looked up: the key itself is never stored or logged. */
	dl_sha256_hex(key, n, hash);
	now_ms = dl_mono_ms();
	if (api_keycache_get(c->api->keys, hash, now_ms, c->org_id, c->key_id))
		return true;
	if (api_db(c) == NULL)
		return false;
	r = dl_db_exec_prepared(c->db, SQL_KEY_LOOKUP, 1, params, NULL);
	if (r == NULL) {
		api_db_failed(c);
		return false;
	}
	/* The index finds the row; the stored hash is still compared in
	 * constant time so no comparison's timing depends on the key. */
	if (PQntuples(r) != 1 || PQgetlength(r, 0, 2) != 64 || !dl_ct_equal(PQgetvalue(r, 0, 2), hash, 64)) {
		PQclear(r);
		dl_http_error(c->resp, 401, "missing or invalid API key (x-api-key header)");
		return false;
	}
	snprintf(c->org_id, sizeof(c->org_id), "%s", PQgetvalue(r, 0, 0));
	snprintf(c->key_id, sizeof(c->key_id), "%s", PQgetvalue(r, 0, 1));
	PQclear(r);
	api_keycache_put(c->api->keys, hash, c->org_id, c->key_id, now_ms);
	return true;
}

static bool parse_body(struct api_call *c)
{
	const char *ct = dl_http_header(c->req, "Content-Type");
	json_error_t jerr;

	if (ct != NULL && strncasecmp(ct, "application/json", 16) != 0) {
		dl_http_error(c->resp, 415, "Content-Type must be application/json");
		return false;
	}
	if (c->req->body_len == 0) {
		dl_http_error(c->resp, 400, "request body must be a JSON object");
		return false;
	}
	c->body = json_loadb(c->req->body, c->req->body_len, JSON_REJECT_DUPLICATES, &jerr);
	if (c->body == NULL) {
		dl_http_error(c->resp, 400, "request body is not valid JSON: %s (line %d, column %d)", jerr.text,
			      jerr.line, jerr.column);
		return false;
	}
	if (!json_is_object(c->body)) {
		dl_http_error(c->resp, 400, "request body must be a JSON object");
		return false;
	}
	return true;
}

/* True when an Idempotency-Key is 1 to 255 printable ASCII characters
 * (spaces included). */
static bool idem_key_valid(const char *k)
{
	size_t n = strlen(k);

	if (n == 0 || n > 255)
		return false;
	for (size_t i = 0; i < n; i++)
		if (k[i] < 0x20 || k[i] > 0x7e)
			return false;
	return true;
}

/* Runs route under the request's Idempotency-Key: the key is claimed in a
 * transaction that the handler's work and its stored answer share, so a
 * key either did everything once or nothing. A repeat with the same request
 * gets the first answer back; with another request, 422; while the first
 * is still running, 409. A 5xx is not stored: the client may try again. */
static void run_idempotent(struct api_call *c, const struct api_route *route, const char *key)
{
	static unsigned long calls;
	char hash[65];
	const char *params[4] = {c->org_id, key, hash, NULL};
	PGresult *r = NULL;
	size_t n = strlen(c->req->method) + strlen(c->req->url) + c->req->body_len + 2;
	char *material = malloc(n + 1);

	if (material == NULL) {
		dl_http_error(c->resp, 500, "out of memory");
		return;
	}
	snprintf(material, n + 1, "%s %s\n", c->req->method, c->req->url);
	memcpy(material + strlen(material), c->req->body, c->req->body_len);
	dl_sha256_hex(material, strlen(c->req->method) + strlen(c->req->url) + 2 + c->req->body_len, hash);
	free(material);
	if (api_db(c) == NULL)
		return;
	if (++calls % 10000 == 0)
		DL_IGNORE(dl_db_cmd(c->db, SQL_IDEM_EXPIRE));
	if (dl_db_cmd(c->db, "BEGIN") < 0)
		return api_db_failed(c);
	r = dl_db_exec(c->db, SQL_IDEM_CLAIM, 3, params, NULL);
	if (r == NULL)
		goto failed;
	if (PQntuples(r) == 0) {
		/* Seen before (the insert waited for that request to commit). */
		PQclear(r);
		DL_IGNORE(dl_db_cmd(c->db, "ROLLBACK"));
		r = dl_db_exec(c->db, SQL_IDEM_GET, 2, params, NULL);
		if (r == NULL)
			return api_db_failed(c);
		if (PQntuples(r) == 0)
			dl_http_error(c->resp, 409, "Idempotency-Key %s expired; use a new key", key);
		else if (strcmp(PQgetvalue(r, 0, 0), hash) != 0)
			dl_http_error(c->resp, 422, "Idempotency-Key %s was used with a different request", key);
		else if (PQgetisnull(r, 0, 1))
			dl_http_error(c->resp, 409, "a request with Idempotency-Key %s is still in progress", key);
		else
			dl_http_text(c->resp, atoi(PQgetvalue(r, 0, 1)), "application/json", PQgetvalue(r, 0, 2),
				     (size_t)PQgetlength(r, 0, 2));
		PQclear(r);
		return;
	}
	PQclear(r);
	c->outer_txn = true;
	route->fn(c);
	c->outer_txn = false;
	if (c->resp->status >= 500 || PQtransactionStatus(c->db) != PQTRANS_INTRANS) {
		/* Failed, or a statement aborted the transaction: nothing happened. */
		DL_IGNORE(dl_db_cmd(c->db, "ROLLBACK"));
		return;
	}
	{
		char status[8];

		snprintf(status, sizeof(status), "%d", c->resp->status);
		params[2] = status;
		params[3] = c->resp->body ? c->resp->body : "";
		r = dl_db_exec(c->db, SQL_IDEM_STORE, 4, params, NULL);
		if (r == NULL || dl_db_cmd(c->db, "COMMIT") < 0)
			goto failed;
		PQclear(r);
	}
	return;
failed:
	PQclear(r);
	DL_IGNORE(dl_db_cmd(c->db, "ROLLBACK"));
	api_db_failed(c);
}

void api_log_request(const struct api_call *c)
{
	char status[8];

	snprintf(status, sizeof(status), "%d", c->resp->status);
	dl_log_kv(c->resp->status >= 500 ? DL_WARN : DL_INFO, "request", "request_id", c->req->request_id, "method",
		  c->req->method, "path", c->req->url, "status", status, "organization_id",
		  c->org_id[0] ? c->org_id : NULL, NULL);
}

static void handle(void *ctx, struct dl_http_req *req, struct dl_http_resp *resp)
{
	struct api_ctx *api = ctx;
	struct api_call c;
	const struct api_route *route;
	bool path_known;
	int retry;

	if (dl_service_health(api->svc, req, resp))
		return;
	if (!strcmp(req->url, "/openapi.yaml") && !strcmp(req->method, "GET")) {
		resp->route = "/openapi.yaml";
		dl_http_text(resp, 200, "application/yaml", api_openapi_yaml,
			     (size_t)(api_openapi_yaml_end - api_openapi_yaml));
		return;
	}
	memset(&c, 0, sizeof(c));
	c.api = api;
	c.req = req;
	c.resp = resp;
	route = api_route_match(req->method, req->url, c.params, c.param_buf, sizeof(c.param_buf),
				&path_known);
	if (route == NULL) {
		resp->route = "other";
		if (path_known)
			dl_http_error(resp, 405, "method %s is not allowed on %s", req->method, req->url);
		else
			dl_http_error(resp, 404, "no route for %s %s", req->method, req->url);
		goto log;
	}
	resp->route = route->pattern;
	/* Ids are ASCII: a path id that is not even UTF-8 names nothing (and
	 * must not reach the database, which would refuse the bytes). A phone
	 * number in the path is validated by its handler (400). */
	for (int i = 0; i < API_MAX_PARAMS && c.params[i] && !strstr(route->pattern, ":phone"); i++) {
		if (dl_utf8_len(c.params[i]) < 0) {
			dl_http_error(resp, 404, "no such resource");
			goto log;
		}
	}
	if (!route->public_route) {
		if (!authenticate(&c))
			goto out;
		if (!api_ratelimit_take(api->rl, c.key_id, route->rate, dl_mono_ms(), &retry)) {
			snprintf(resp->retry_after, sizeof(resp->retry_after), "%d", retry);
			dl_http_error(resp, 429, "rate limit exceeded for this API key; retry in %d s", retry);
			goto out;
		}
	}
	if (route->body && !parse_body(&c))
		goto out;
	{
		const char *key = route->idempotent ? dl_http_header(req, "Idempotency-Key") : NULL;

		if (key != NULL && !idem_key_valid(key))
			dl_http_error(resp, 400, "Idempotency-Key must be 1 to 255 printable ASCII characters");
		else if (key != NULL)
			run_idempotent(&c, route, key);
		else if (route->cache != API_CACHE_NONE)
			api_cache_serve(&c, route);
		else
			route->fn(&c);
	}
	/* After the commit (the Idempotency-Key's one included) and before the
	 * answer: this client's next read sees its write without waiting for
	 * the NOTIFY. */
	if (c.changed_campaign[0])
		api_cache_changed(api->cache, c.org_id, c.changed_campaign, true);
out:
	json_decref(c.body);
	dl_db_pool_put(api->db, c.db);
log:
	/* A request set aside is logged once answered. */
	if (!c.deferred)
		api_log_request(&c);
}

static int api_init(struct dl_service_ctx *svc)
{
	struct api_ctx *api = calloc(1, sizeof(*api));
	const struct dl_config *cfg = &svc->cfg;

	if (api == NULL)
		return -ENOMEM;
	svc->state = api;
	api->svc = svc;
	api->cfg = cfg;
	if (dl_db_pool_new(cfg->db_url, cfg->db_pool_size, cfg->db_connect_timeout_s, &api->db) < 0 ||
	    api_ratelimit_new(cfg->api_rate_per_min, cfg->api_bulk_rate_per_min, &api->rl) < 0 ||
	    api_keycache_new(API_KEY_CACHE_TTL_MS, &api->keys) < 0)
		return -ENOMEM;
	if (pthread_create(&api->outbox_thread, NULL, dl_outbox_relay, svc) != 0)
		return -EAGAIN;
	api->outbox_started = true;
	if (api_publisher_start(cfg, &api->pub) < 0)
		return -EAGAIN;
	api->import_threads = calloc((size_t)cfg->api_import_threads, sizeof(pthread_t));
	if (api->import_threads == NULL)
		return -ENOMEM;
	for (int i = 0; i < cfg->api_import_threads; i++) {
		if (pthread_create(&api->import_threads[i], NULL, api_imports_thread, api) != 0)
			return -EAGAIN;
		api->import_threads_started++;
	}
	if (cfg->api_read_cache_entries > 0) {
		struct api_cache_limits lim = {
			.entries = cfg->api_read_cache_entries,
			.max_age_ms = cfg->api_read_cache_max_age_ms,
			.max_body = API_CACHE_MAX_BODY,
			.max_bytes = API_CACHE_MAX_BYTES,
			.max_deps = cfg->api_read_cache_entries < API_CACHE_MIN_DEPS / 4   ? API_CACHE_MIN_DEPS
				    : cfg->api_read_cache_entries > API_CACHE_MAX_DEPS / 4 ? API_CACHE_MAX_DEPS
											   : cfg->api_read_cache_entries * 4,
		};

		api_cache_metrics_register();
		if (api_cache_new(&lim, &api->cache) < 0)
			return -ENOMEM;
		if (pthread_create(&api->cache_thread, NULL, api_cache_thread, api) != 0)
			return -EAGAIN;
		api->cache_started = true;
	}
	if (dl_httpd_start(cfg, cfg->http_listen, cfg->http_port, cfg->http_threads, handle, api,
			   &api->httpd) < 0)
		return -EADDRINUSE;
	{
		char port[16];

		snprintf(port, sizeof(port), "%d", dl_httpd_port(api->httpd));
		dl_log_kv(DL_INFO, "listening", "listen", cfg->http_listen, "port", port, NULL);
	}
	return 0;
}

static int api_run(struct dl_service_ctx *svc)
{
	while (!svc->stop)
		dl_sleep_ms(1000, &svc->stop);
	return 0;
}

static void api_fini(struct dl_service_ctx *svc)
{
	struct api_ctx *api = svc->state;

	if (api == NULL)
		return;
	/* Stop taking requests and finish those in flight, then the threads. */
	dl_httpd_stop(api->httpd);
	api_publisher_stop(api->pub);
	svc->stop = 1;
	if (api->outbox_started)
		pthread_join(api->outbox_thread, NULL);
	for (int i = 0; i < api->import_threads_started; i++)
		pthread_join(api->import_threads[i], NULL);
	if (api->cache_started)
		pthread_join(api->cache_thread, NULL);
	api_cache_free(api->cache);
	free(api->import_threads);
	api_ratelimit_free(api->rl);
	api_keycache_free(api->keys);
	dl_db_pool_free(api->db);
	free(api);
	svc->state = NULL;
}

static bool api_ready(struct dl_service_ctx *svc, char *why, size_t whylen)
{
	struct api_ctx *api = svc->state;

	if (api == NULL || !dl_db_pool_ping(api->db)) {
		snprintf(why, whylen, "database unreachable");
		return false;
	}
	return true;
}

const struct dl_service api_service = {
	.name = "dialer-api",
	.init = api_init,
	.run = api_run,
	.fini = api_fini,
	.ready = api_ready,
	.health_listener = false,
};
