/* dialer-api: private header shared by the API's modules.
 * A request's path: api_server.c (listener, auth, rate limit, body) →
 * api_router.c (route table) → api_<resource>.c (handler) → api_sql.c. */
#ifndef API_H
#define API_H

#include <jansson.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <stdbool.h>

#include "dl_config.h"
#include "dl_db.h"
#include "dl_http.h"
#include "dl_jw.h"
#include "dl_outbox.h"
#include "dl_service.h"
#include "dl_util.h"

enum api_rate_class { API_RATE_DEFAULT = 0, API_RATE_BULK = 1, API_RATE_NONE = 2 };

struct api_ratelimit;
struct api_keycache;
struct api_publisher;
struct api_cache;

/* How long a verified API key is trusted without asking the database again:
 * a revoked key is refused at the latest this long after its revocation. */
#define API_KEY_CACHE_TTL_MS 1000

struct api_ctx {
	struct dl_service_ctx *svc;
	const struct dl_config *cfg;
	struct dl_db_pool *db;
	struct dl_httpd *httpd;
	struct api_ratelimit *rl;
	struct api_keycache *keys;
	char *openapi;
	size_t openapi_len;
	pthread_t outbox_thread;
	bool outbox_started;
	struct api_publisher *pub; /* carrier callbacks to the broker */
	pthread_t *import_threads;
	int import_threads_started;
	struct api_cache *cache; /* NULL when api.read_cache_entries is 0 */
	pthread_t cache_thread;
	bool cache_started;
};

/* A timestamptz column as the API's ISO 8601 UTC text: the database's
 * iso_utc() written out, because a call of that SQL function is not inlined
 * (declared IMMUTABLE over the STABLE to_char) and cost a campaign list a
 * third of its database time. */
#define API_ISO_UTC(col) "to_char((" col ") AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"

#define API_MAX_PARAMS 4

/* One request as a handler sees it. */
struct api_call {
	struct api_ctx *api;
	struct dl_http_req *req;
	struct dl_http_resp *resp;
	const char *params[API_MAX_PARAMS]; /* path parameters, in order */
	char param_buf[1024];
	char org_id[DL_ID_MAX];
	char key_id[DL_ID_MAX];
	PGconn *db;  /* borrowed for the request by api_db() */
	json_t *body; /* the parsed JSON object, or NULL when the body was empty */
	bool outer_txn; /* the request runs in a transaction opened for its Idempotency-Key */
	/* A campaign of org_id the handler wrote (or may have written): the
	 * read cache drops it once the request's transaction is over. */
	char changed_campaign[DL_ID_MAX];
	bool deferred; /* set aside (dl_http_defer): its `then` answers and logs it */
};

typedef void (*api_handler)(struct api_call *c);

/* The request's log line, with its answer's status. */
void api_log_request(const struct api_call *c);

/* The reads the read cache (api_cache.c) answers. */
enum api_cache_route { API_CACHE_NONE = 0, API_CACHE_LIST, API_CACHE_GET, API_CACHE_PROGRESS };

struct api_route {
	const char *method;
	const char *pattern; /* "/v1/campaigns/:id/start" */
	api_handler fn;
	enum api_rate_class rate;
	bool body;           /* expects a JSON object body */
	bool public_route;   /* no API key (carrier callbacks) */
	bool idempotent;     /* honours an Idempotency-Key header */
	enum api_cache_route cache; /* answered through the read cache */
};

/* api_router.c: the route table and matching. */
extern const struct api_route api_routes[];
extern const int api_routes_count;
/* Finds the route for method and path. Returns the route, or NULL with
 * *path_known set when the path exists under another method (405).
 * Path parameters are copied into buf and pointed to by params. */
const struct api_route *api_route_match(const char *method, const char *path, const char **params,
					char *buf, size_t buflen, bool *path_known);

/* api_server.c */
/* Borrows the request's database connection; NULL after answering 503. */
PGconn *api_db(struct api_call *c);
/* Answers 500 for a failed statement, or 503 when the database is gone. */
void api_db_failed(struct api_call *c);
/* BEGIN and COMMIT for a handler's transaction; inside the transaction of
 * an Idempotency-Key they do nothing (the key's commit is the handler's). */
int api_tx_begin(struct api_call *c) DL_WUR;
int api_tx_commit(struct api_call *c) DL_WUR;

/* api_cache.c: the read cache of the campaign reads, kept valid by the
 * database's NOTIFY of every campaign change (see the top of the file). */
#define API_CACHE_KEY_MAX 1024
struct api_cache_limits {
	int entries;      /* answers kept, > 0 */
	int max_age_ms;   /* never served older than this */
	size_t max_body;  /* a larger answer is not kept */
	size_t max_bytes; /* all answers together, keys included */
	int max_deps;     /* invalidations remembered; past it, everything is dropped */
};
struct api_cache_blob;
/* A new, empty cache that serves nothing until api_cache_set_listening.
 * 0, -EINVAL or -ENOMEM. */
int api_cache_new(const struct api_cache_limits *lim, struct api_cache **out) DL_WUR;
/* Takes NULL. */
void api_cache_free(struct api_cache *c);
/* Whether changes are being heard. Serving stops while they are not; on
 * true, everything kept before is dropped. */
void api_cache_set_listening(struct api_cache *c, bool on);
/* A change of campaign of org: its get and progress answers are dropped,
 * and with listed its organization's lists too. Takes a NULL cache. */
void api_cache_changed(struct api_cache *c, const char *org, const char *campaign, bool listed);
/* Applies a dialer_campaigns payload "<org> <campaign> <l|p>"; 0, or
 * -EINVAL for one it cannot read (then everything kept is dropped). */
int api_cache_notify(struct api_cache *c, const char *payload) DL_WUR;
/* True with *hit (a reference, see api_cache_blob_release) when key's answer
 * may be served at now_ms. Otherwise false, and *token is what a read that
 * starts now passes to api_cache_put (0: it will not be kept). */
bool api_cache_get(struct api_cache *c, const char *key, int64_t now_ms, struct api_cache_blob **hit,
		   uint64_t *token);
/* Keeps body as key's answer, read under token at read_ms, depending on dep
 * ("o:<org>" or "c:<campaign>"), unless a change of dep was heard since the
 * token was taken. Copies body. */
void api_cache_put(struct api_cache *c, const char *key, const char *dep, uint64_t token, int64_t read_ms,
		   const char *body, size_t len);
const char *api_cache_blob_data(const struct api_cache_blob *b, size_t *len);
void api_cache_blob_release(struct api_cache_blob *b);
/* How many answers are kept, and their bytes. */
void api_cache_stats(struct api_cache *c, int *entries, size_t *bytes);
void api_cache_metrics_register(void);
/* Answers c (a GET of route, authenticated and within its rate) from the
 * cache, or runs the handler and keeps its 200 answer. */
void api_cache_serve(struct api_call *c, const struct api_route *route);
/* The listener: LISTEN dialer_campaigns on a connection of its own, with
 * reconnects; arg is the struct api_ctx. */
void *api_cache_thread(void *arg);

/* api_ratelimit.c: token buckets per key and class. */
int api_ratelimit_new(int per_min_default, int per_min_bulk, struct api_ratelimit **out) DL_WUR;
void api_ratelimit_free(struct api_ratelimit *rl);
/* True when key may make one more call of class at now_ms; otherwise false
 * and *retry_after_s says when the next one will be allowed. */
bool api_ratelimit_take(struct api_ratelimit *rl, const char *key, enum api_rate_class cls,
			int64_t now_ms, int *retry_after_s);

/* api_keycache.c: recently verified API keys, by the hex SHA-256 of the key.
 * A ttl_ms <= 0 holds nothing. */
int api_keycache_new(int ttl_ms, struct api_keycache **out) DL_WUR;
void api_keycache_free(struct api_keycache *kc);
/* True, with org and key_id written, when hash was verified less than the
 * TTL before now_ms. */
bool api_keycache_get(struct api_keycache *kc, const char *hash, int64_t now_ms, char org[DL_ID_MAX],
		      char key_id[DL_ID_MAX]);
/* Records that the database accepted hash for org and key_id in a lookup
 * that began at looked_up_ms (the TTL counts from there, so a revocation
 * committed during the lookup is still honoured within the TTL). */
void api_keycache_put(struct api_keycache *kc, const char *hash, const char *org, const char *key_id,
		      int64_t looked_up_ms);

/* api_valid.c: request validation, no I/O. Each check writes a message that
 * names the field and says what is wrong, and returns false. */
enum api_ftype { API_F_STRING, API_F_INT, API_F_OBJECT, API_F_ARRAY, API_F_TIME, API_F_BOOL };
struct api_field {
	const char *name;
	enum api_ftype type;
	bool required;
	bool nullable;
	long min, max; /* ints: range; strings: length in characters; arrays: items */
};
/* The tables of the bodies that api_check_fields alone checks (the handlers
 * and the fuzzers use the same ones). */
#define API_AUDIENCE_NFIELDS 2
#define API_CONTACT_IDS_NFIELDS 1
#define API_DNC_NFIELDS 2
#define API_IMPORT_NFIELDS 3
extern const struct api_field api_audience_fields[API_AUDIENCE_NFIELDS];
extern const struct api_field api_audience_patch_fields[API_AUDIENCE_NFIELDS];
extern const struct api_field api_contact_ids_fields[API_CONTACT_IDS_NFIELDS];
extern const struct api_field api_dnc_fields[API_DNC_NFIELDS];
extern const struct api_field api_import_fields[API_IMPORT_NFIELDS];
/* Checks body against fields: object, no unknown fields, types, ranges. */
bool api_check_fields(json_t *body, const struct api_field *fields, int nfields, char *err, size_t errlen);
/* Parses page and limit query values (NULL for absent) per the API:
 * page >= 1 (default 1), limit 1..100 (default 20, above 100 capped). */
bool api_parse_paging(const char *page, const char *limit, long *page_out, long *limit_out, char *err,
		      size_t errlen);
/* Checks a metadata object: object, serialized <= 4096 bytes, depth <= 8. */
bool api_check_metadata(json_t *meta, const char *field, char *err, size_t errlen);
/* Answers 400 with msg. */
void api_bad_request(struct api_call *c, const char *msg);
/* Reads a JSON string/int/time field already validated by api_check_fields. */
const char *api_str(json_t *body, const char *name);
/* The list envelope {data, total, page, limit, totalPages}; steals data. */
json_t *api_list(json_t *data, long long total, long page, long limit);

/* api_json.c: result rows to JSON. A column spec is "jsonName:t" with t
 * s (text or null), i (integer or null), j (JSON text), b (boolean). */
json_t *api_row_json(PGresult *r, int row, const char *const *cols, int ncols);
/* Writes row of r, a binary result (dl_db_exec_prepared_bin), as an object by
 * the same specs; timestamptz columns become api_row_json's ISO text. 0, or
 * -EPROTO for a column of a type it does not know, -E2BIG past 64 columns,
 * -ENOMEM. */
int api_row_write(struct dl_jw *w, const PGresult *r, int row, const char *const *cols, int ncols) DL_WUR;
/* All rows of r as an array of objects. */
json_t *api_rows_json(PGresult *r, const char *const *cols, int ncols);
/* Answers a page of a list: sql_list takes params[0..n-1], then the limit
 * and the offset as $n+1 and $n+2, and returns cols plus the count of all
 * matching rows last (`count(*) OVER ()` or a scalar subquery); it runs with
 * binary results (see api_row_write for the types). sql_count takes
 * params[0..n-1] (past the last page). params must have room for n + 2.
 * Parses page and limit itself (400 when bad). */
void api_respond_page(struct api_call *c, const char *sql_list, const char *sql_count, const char **params, int n,
		      const char *const *cols, int ncols);
/* Answers the row sql (params: the path id, the organization) returns as
 * JSON (a binary result, as for api_respond_page), or 404 "<what> <id> not found". */
void api_respond_one(struct api_call *c, const char *sql, const char *const *cols, int ncols, const char *what);
/* True when the SQLSTATE is a unique violation. */
bool api_is_unique_violation(const char *sqlstate);

/* api_campaign_logic.c: the campaign state machine, no I/O. */
enum api_action { API_ACT_START, API_ACT_PAUSE, API_ACT_RESUME, API_ACT_CANCEL };
/* Returns the status action leads to from status, or NULL when the
 * transition is not allowed (409). future_schedule: scheduledAt is set and
 * after now. */
const char *api_campaign_next_status(const char *status, enum api_action action, bool future_schedule);
bool api_campaign_status_valid(const char *status);
/* Validates a create (partial=false) or PATCH (partial=true) body; now_ms
 * checks that scheduledAt is in the future. */
bool api_campaign_validate(json_t *body, bool partial, int64_t now_ms, char *err, size_t errlen);

/* Commands go out through the outbox (common/dl_outbox.h). */
#define api_outbox_add dl_outbox_add

/* api_publish.c: messages straight to the broker, confirmed. */
int api_publisher_start(const struct dl_config *cfg, struct api_publisher **out) DL_WUR;
/* Stops after the messages handed over are settled. */
void api_publisher_stop(struct api_publisher *p);
/* Publishes body (messageId and type added) and waits for its confirm: 0
 * once confirmed; -EBUSY, -ETIMEDOUT, -EIO or -ENOMEM when it was not (the
 * caller then writes it to the outbox; it may still arrive, as a
 * duplicate). */
int api_publish(struct api_publisher *p, const char *exchange, const char *routing_key, const char *type,
		json_t *body) DL_WUR;
/* The same for a request set aside (dl_http_defer): hands body over and
 * returns, and the publisher wakes `later` once the message is settled.
 * The request's `then` takes the outcome with api_publish_result (which
 * frees *out), woken or not. 0, or -EBUSY or -ENOMEM (nothing handed
 * over, *out NULL: the caller wakes `later` itself). */
struct api_pub_msg;
int api_publish_later(struct api_publisher *p, const char *exchange, const char *routing_key, const char *type,
		      json_t *body, struct dl_http_later *later, struct api_pub_msg **out) DL_WUR;
/* What became of msg: 0 once confirmed; -ETIMEDOUT while still unconfirmed
 * (given up: it may still arrive, as a duplicate), or -EIO. */
int api_publish_result(struct api_publisher *p, struct api_pub_msg *msg) DL_WUR;

/* Resource handlers, one file each. */
void api_campaigns_list(struct api_call *c);
void api_campaigns_get(struct api_call *c);
void api_campaigns_create(struct api_call *c);
void api_campaigns_update(struct api_call *c);
void api_campaigns_delete(struct api_call *c);
void api_campaigns_start(struct api_call *c);
void api_campaigns_pause(struct api_call *c);
void api_campaigns_resume(struct api_call *c);
void api_campaigns_cancel(struct api_call *c);
void api_campaigns_progress(struct api_call *c);
void api_campaigns_calls(struct api_call *c);

/* api_contacts.c */
/* Validates one contact object: a create (partial=false: phoneNumber required)
 * or a PATCH (partial=true). prefix names obj in messages ("contacts[3]" gives
 * "contacts[3].phoneNumber: must be ..."); NULL or "" for a request body.
 * Returns false with err set. No I/O. */
bool api_contact_validate(json_t *obj, bool partial, const char *prefix, char *err, size_t errlen);

void api_contacts_list(struct api_call *c);
void api_contacts_get(struct api_call *c);
void api_contacts_create(struct api_call *c);
void api_contacts_update(struct api_call *c);
void api_contacts_delete(struct api_call *c);
void api_contacts_bulk(struct api_call *c);

void api_audiences_list(struct api_call *c);
void api_audiences_get(struct api_call *c);
void api_audiences_create(struct api_call *c);
void api_audiences_update(struct api_call *c);
void api_audiences_delete(struct api_call *c);
void api_audiences_add_contacts(struct api_call *c);
void api_audiences_remove_contacts(struct api_call *c);
void api_audiences_list_contacts(struct api_call *c);

void api_imports_create(struct api_call *c);
void api_imports_status(struct api_call *c);
/* The import processor: takes PENDING imports and applies them. */
void *api_imports_thread(void *arg);
/* api_imports.c */
/* Checks one import row: phoneNumber (required, E.164), name (string <= 200
 * or null), language (1-35 of [A-Za-z0-9-] or null); every other key, and
 * the keys of a "metadata" object, become metadata (<= 4096 bytes, depth
 * <= 8). On success *contact_out is a new {phoneNumber, name, language,
 * metadata} (caller owns) and true; else err says why and false. No I/O. */
bool api_import_row_normalize(json_t *row, json_t **contact_out, char *err, size_t errlen);

void api_flows_list(struct api_call *c);
void api_flows_get(struct api_call *c);

/* api_callbacks.c: the carrier's status callbacks (signature, not API key). */
void api_carrier_status(struct api_call *c);

void api_dnc_list(struct api_call *c);
void api_dnc_get(struct api_call *c);
void api_dnc_add(struct api_call *c);
void api_dnc_remove(struct api_call *c);

#endif
