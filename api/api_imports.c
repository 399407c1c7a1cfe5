/* /v1/imports: bulk contact imports. The request is checked and stored as a
 * PENDING import; api_imports_thread takes imports one at a time, upserts the
 * valid rows set-based (one statement per chunk), records the invalid ones,
 * finishes the import in the same transaction and then calls its webhook.
 *
 * An import is claimed (PROCESSING, claimed_at, attempts + 1) in one
 * statement, then processed in one transaction that holds its row lock, so a
 * PROCESSING import whose row is unlocked and whose claim is a few seconds
 * old belongs to a worker that died: it is claimed again. The final update
 * names the attempt, so a worker that lost its claim changes nothing. */
#include <curl/curl.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "dl_log.h"
#include "dl_metrics.h"

#define IMPORT_MAX_ROWS 10000
#define IMPORT_MAX_ERRORS 1000
/* Rows per upsert statement: 10,000 rows make two statements. */
#define IMPORT_CHUNK 5000
/* Seconds after which an unlocked PROCESSING import is taken again. */
#define IMPORT_STALE_S "15"
/* An import whose processing died this many times is failed. */
#define IMPORT_MAX_ATTEMPTS 3
/* A serialization failure or deadlock is retried this many times. */
#define IMPORT_TX_TRIES 3
#define WEBHOOK_MAX 2048
#define WEBHOOK_TRIES 3
#define WEBHOOK_TIMEOUT_S 5L
/* Longest phoneNumber echoed back in an error entry. */
#define ERROR_PHONE_MAX 64

#define IMPORT_COLS                                                                             \
	"id, status, audience_id, total, processed, created, updated, failed, errors::text AS errors," \
	" " API_ISO_UTC("created_at") " AS created_at_s, " API_ISO_UTC("completed_at") " AS completed_at_s"

static const char *const import_json[] = {
	"id:s", "status:s", "audienceId:s", "total:i", "processed:i", "created:i",
	"updated:i", "failed:i", "errors:j", "createdAt:s", "completedAt:s",
};

static const char SQL_AUDIENCE_EXISTS[] =
	"SELECT 1 FROM audiences WHERE id = $1 AND organization_id = $2";
/* Stores the import and wakes the workers when it commits. */
static const char SQL_IMPORT_INSERT[] =
	"WITH ins AS (INSERT INTO imports (id, organization_id, audience_id, webhook_url, total, payload)"
	" VALUES ($1, $2, $3, $4, $5, $6::jsonb) RETURNING " IMPORT_COLS "),"
	" wake AS (SELECT pg_notify('dialer_imports', ''))"
	" SELECT ins.* FROM ins, wake";
static const char SQL_IMPORT_GET[] =
	"SELECT " IMPORT_COLS " FROM imports WHERE id = $1 AND organization_id = $2";
static const char SQL_IMPORT_CLAIM[] =
	"UPDATE imports SET status = 'PROCESSING', claimed_at = now(), attempts = attempts + 1"
	" WHERE id = (SELECT id FROM imports WHERE status = 'PENDING'"
	"  OR (status = 'PROCESSING' AND claimed_at < now() - make_interval(secs => $1::int))"
	"  ORDER BY created_at LIMIT 1 FOR UPDATE SKIP LOCKED)"
	" RETURNING id, organization_id, audience_id, webhook_url, attempts, total";
/* Holds the import for the whole processing transaction (see the top). */
static const char SQL_IMPORT_LOCK[] =
	"SELECT 1 FROM imports WHERE id = $1 AND attempts = $2 AND status = 'PROCESSING' FOR UPDATE";
/* The rows one by one, so a row that does not read back only fails itself. */
static const char SQL_IMPORT_ROWS[] =
	"SELECT e.v::text FROM imports i CROSS JOIN LATERAL jsonb_array_elements(i.payload)"
	" WITH ORDINALITY AS e(v, n) WHERE i.id = $1 ORDER BY e.n";
/* Keeps the audience from being deleted until the import commits. */
static const char SQL_AUDIENCE_SHARE[] = "SELECT 1 FROM audiences WHERE id = $1 FOR KEY SHARE";
/* Upserts one chunk by phone number and adds it to the audience ($3, may be
 * NULL). A row without name or language keeps the stored one; a row without
 * metadata keys keeps the stored metadata. Answers created, updated. */
static const char SQL_CONTACTS_UPSERT[] =
	"WITH up AS ("
	" INSERT INTO contacts (id, organization_id, phone_number, name, language, metadata)"
	" SELECT r.id, $1, r.\"phoneNumber\", r.name, r.language, coalesce(r.metadata, '{}'::jsonb)"
	" FROM jsonb_to_recordset($2::jsonb)"
	"  AS r(id text, \"phoneNumber\" text, name text, language text, metadata jsonb)"
	" ON CONFLICT (organization_id, phone_number) DO UPDATE SET"
	"  name = coalesce(EXCLUDED.name, contacts.name),"
	"  language = coalesce(EXCLUDED.language, contacts.language),"
	"  metadata = CASE WHEN EXCLUDED.metadata = '{}'::jsonb THEN contacts.metadata"
	"   ELSE EXCLUDED.metadata END,"
	"  updated_at = now()"
	" RETURNING id, (xmax = 0) AS inserted),"
	" member AS (INSERT INTO audience_contacts (audience_id, contact_id)"
	"  SELECT $3, id FROM up WHERE $3::text IS NOT NULL ON CONFLICT DO NOTHING)"
	" SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM up";
static const char SQL_IMPORT_FINISH[] =
	"UPDATE imports SET status = $3, processed = $4, created = $5, updated = $6, failed = $7,"
	" errors = $8::jsonb, payload = NULL, completed_at = now()"
	" WHERE id = $1 AND attempts = $2 AND status = 'PROCESSING' RETURNING " IMPORT_COLS;

#define NCOLS(a) ((int)DL_ARRAY_LEN(a))

/* ------------------------------------------------------------ row rules */

static bool language_valid(const char *s)
{
	size_t n = strlen(s);

	return n >= 1 && n <= 35 &&
	       strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-") == n;
}

bool api_import_row_normalize(json_t *row, json_t **contact_out, char *err, size_t errlen)
{
	json_t *contact = NULL, *meta = NULL, *v;
	const char *key;
	long n;
	bool ok = false;

	if (!json_is_object(row)) {
		snprintf(err, errlen, "row must be an object");
		goto out;
	}
	v = json_object_get(row, "phoneNumber");
	if (v == NULL || json_is_null(v)) {
		snprintf(err, errlen, "phoneNumber is required");
		goto out;
	}
	if (!json_is_string(v) || !dl_phone_valid(json_string_value(v))) {
		snprintf(err, errlen, "phoneNumber must be an E.164 number such as +14155550100");
		goto out;
	}
	contact = json_pack("{s:O, s:n, s:n}", "phoneNumber", v, "name", "language");
	meta = json_object();
	if (contact == NULL || meta == NULL) {
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	v = json_object_get(row, "name");
	if (v != NULL && !json_is_null(v)) {
		n = json_is_string(v) ? dl_utf8_len(json_string_value(v)) : -1;
		if (n < 0 || n > 200) {
			snprintf(err, errlen, "name must be a string of at most 200 characters");
			goto out;
		}
		json_object_set(contact, "name", v);
	}
	v = json_object_get(row, "language");
	if (v != NULL && !json_is_null(v)) {
		if (!json_is_string(v) || !language_valid(json_string_value(v))) {
			snprintf(err, errlen, "language must be 1 to 35 characters of A-Z, a-z, 0-9 and -");
			goto out;
		}
		json_object_set(contact, "language", v);
	}
	json_object_foreach(row, key, v) {
		if (strcmp(key, "phoneNumber") != 0 && strcmp(key, "name") != 0 &&
		    strcmp(key, "language") != 0 && strcmp(key, "metadata") != 0)
			json_object_set(meta, key, v);
	}
	/* An explicit metadata object is merged in; a key given both ways keeps
	 * its top-level value. */
	v = json_object_get(row, "metadata");
	if (v != NULL && !json_is_null(v)) {
		if (!json_is_object(v)) {
			snprintf(err, errlen, "metadata must be an object");
			goto out;
		}
		json_object_update_missing(meta, v);
	}
	if (!api_check_metadata(meta, "metadata", err, errlen))
		goto out;
	json_object_set(contact, "metadata", meta);
	*contact_out = contact;
	contact = NULL;
	ok = true;
out:
	json_decref(contact);
	json_decref(meta);
	return ok;
}

/* ------------------------------------------------------------ handlers */

/* True when url is an absolute http or https URL with a host. */
static bool webhook_url_valid(const char *url)
{
	CURLU *u = curl_url();
	char *scheme = NULL, *host = NULL;
	bool ok = false;

	for (const char *p = url; *p; p++)
		if ((unsigned char)*p <= 0x20 || *p == 0x7f)
			goto out;
	if (u == NULL || curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK)
		goto out;
	ok = (!strcmp(scheme, "http") || !strcmp(scheme, "https")) && *host != '\0';
out:
	curl_free(scheme);
	curl_free(host);
	curl_url_cleanup(u);
	return ok;
}

const struct api_field api_import_fields[API_IMPORT_NFIELDS] = {
	{"contacts", API_F_ARRAY, true, false, 1, IMPORT_MAX_ROWS},
	{"audienceId", API_F_STRING, false, true, 1, 64},
	{"webhookUrl", API_F_STRING, false, true, 1, WEBHOOK_MAX},
};

void api_imports_create(struct api_call *c)
{
	char err[256], id[DL_ID_MAX], total[16], *payload = NULL;
	const char *params[6] = {id, c->org_id, NULL, NULL, total, NULL};
	const char *audience, *webhook;
	PGresult *r = NULL;
	bool exists;

	if (!api_check_fields(c->body, api_import_fields, API_IMPORT_NFIELDS, err, sizeof(err)))
		return api_bad_request(c, err);
	audience = api_str(c->body, "audienceId");
	webhook = api_str(c->body, "webhookUrl");
	if (webhook != NULL && !webhook_url_valid(webhook))
		return api_bad_request(c, "webhookUrl must be an http or https URL");
	if (api_db(c) == NULL)
		return;
	if (audience != NULL) {
		params[0] = audience;
		r = dl_db_exec(c->db, SQL_AUDIENCE_EXISTS, 2, params, NULL);
		if (r == NULL)
			return api_db_failed(c);
		exists = PQntuples(r) == 1;
		PQclear(r);
		r = NULL;
		if (!exists) {
			dl_http_error(c->resp, 400, "audienceId %s does not exist", audience);
			return;
		}
	}
	payload = json_dumps(json_object_get(c->body, "contacts"), JSON_COMPACT);
	if (payload == NULL) {
		dl_http_error(c->resp, 500, "internal error; request id %s", c->req->request_id);
		return;
	}
	dl_id_new("imp", id);
	snprintf(total, sizeof(total), "%zu", json_array_size(json_object_get(c->body, "contacts")));
	params[0] = id;
	params[2] = audience;
	params[3] = webhook;
	params[5] = payload;
	r = dl_db_exec(c->db, SQL_IMPORT_INSERT, 6, params, NULL);
	if (r == NULL) {
		api_db_failed(c);
		goto out;
	}
	dl_http_json(c->resp, 202, api_row_json(r, 0, import_json, NCOLS(import_json)));
	dl_log_kv(DL_INFO, "import accepted", "request_id", c->req->request_id, "import_id", id, "rows",
		  total, NULL);
out:
	PQclear(r);
	free(payload);
}

void api_imports_status(struct api_call *c)
{
	const char *params[2] = {c->params[0], c->org_id};
	PGresult *r;

	if (api_db(c) == NULL)
		return;
	r = dl_db_exec(c->db, SQL_IMPORT_GET, 2, params, NULL);
	if (r == NULL)
		return api_db_failed(c);
	if (PQntuples(r) == 0)
		dl_http_error(c->resp, 404, "import %s not found", c->params[0]);
	else
		dl_http_json(c->resp, 200, api_row_json(r, 0, import_json, NCOLS(import_json)));
	PQclear(r);
}

/* ------------------------------------------------------------ the worker */

/* One claimed import while it is processed. */
struct import_job {
	PGresult *claim; /* owns the strings below */
	const char *id, *org_id, *audience_id, *webhook_url, *attempts;
	long total;
	json_t *valid;  /* normalized contacts, sorted by phone number */
	json_t *errors; /* the first IMPORT_MAX_ERRORS row errors */
	long failed;
	long long created, updated;
};

static void job_error(struct import_job *job, size_t row, json_t *raw, const char *msg)
{
	const char *phone = json_string_value(json_object_get(raw, "phoneNumber"));
	json_t *p = json_null();

	job->failed++;
	if (json_array_size(job->errors) >= IMPORT_MAX_ERRORS)
		return;
	if (phone != NULL) {
		size_t n = strlen(phone);

		/* Cut long values at a character boundary so they stay valid UTF-8. */
		if (n > ERROR_PHONE_MAX) {
			n = ERROR_PHONE_MAX;
			while (n > 0 && ((unsigned char)phone[n] & 0xC0) == 0x80)
				n--;
		}
		p = json_stringn(phone, n);
	}
	json_array_append_new(job->errors,
			      json_pack("{s:I, s:o, s:s}", "row", (json_int_t)row, "phoneNumber", p, "message", msg));
}

static int by_phone(const void *a, const void *b)
{
	return strcmp(json_string_value(json_object_get(*(json_t *const *)a, "phoneNumber")),
		      json_string_value(json_object_get(*(json_t *const *)b, "phoneNumber")));
}

/* Reads and normalizes the stored rows into job->valid and job->errors.
 * Returns 0 or -EIO (database) / -ENOMEM. */
static int job_load(PGconn *db, struct import_job *job)
{
	const char *params[1] = {job->id};
	json_t *seen = json_object(), **sorted = NULL;
	PGresult *r = NULL;
	size_t nvalid = 0;
	int rc = -ENOMEM;

	job->valid = json_array();
	job->errors = json_array();
	if (seen == NULL || job->valid == NULL || job->errors == NULL)
		goto out;
	r = dl_db_exec(db, SQL_IMPORT_ROWS, 1, params, NULL);
	if (r == NULL) {
		rc = -EIO;
		goto out;
	}
	sorted = calloc((size_t)PQntuples(r) + 1, sizeof(*sorted));
	if (sorted == NULL)
		goto out;
	for (int i = 0; i < PQntuples(r); i++) {
		json_t *raw = json_loads(PQgetvalue(r, i, 0), JSON_DECODE_ANY, NULL), *contact = NULL, *first;
		char err[256];

		if (raw == NULL) {
			/* jsonb prints a huge number in full digits, which may not read back. */
			job_error(job, (size_t)i, NULL, "row holds a number out of range");
			continue;
		}
		if (!api_import_row_normalize(raw, &contact, err, sizeof(err))) {
			job_error(job, (size_t)i, raw, err);
		} else if ((first = json_object_get(seen, json_string_value(json_object_get(contact, "phoneNumber")))) !=
			   NULL) {
			snprintf(err, sizeof(err), "phoneNumber repeats row %lld of this import",
				 (long long)json_integer_value(first));
			job_error(job, (size_t)i, raw, err);
			json_decref(contact);
		} else {
			char cid[DL_ID_MAX];

			json_object_set_new(seen, json_string_value(json_object_get(contact, "phoneNumber")),
					    json_integer(i));
			dl_id_new("ct", cid);
			json_object_set_new(contact, "id", json_string(cid));
			sorted[nvalid++] = contact; /* owned by sorted until appended */
		}
		json_decref(raw);
	}
	/* One lock order for every import: two imports sharing numbers do not deadlock. */
	qsort(sorted, nvalid, sizeof(*sorted), by_phone);
	for (size_t i = 0; i < nvalid; i++)
		json_array_append_new(job->valid, sorted[i]);
	nvalid = 0;
	rc = 0;
out:
	for (size_t i = 0; i < nvalid; i++)
		json_decref(sorted[i]);
	free(sorted);
	PQclear(r);
	json_decref(seen);
	return rc;
}

static const char *job_status(const struct import_job *job)
{
	if (job->failed == 0)
		return "COMPLETED";
	return job->created + job->updated > 0 ? "COMPLETED_WITH_ERRORS" : "FAILED";
}

/* Writes the final state; returns the import row (caller clears) or NULL. */
static PGresult *job_finish(PGconn *db, const struct import_job *job, const char *status)
{
	char processed[16], created[24], updated[24], failed[16], *errors;
	const char *params[8] = {job->id, job->attempts, status, processed, created, updated, failed, NULL};
	PGresult *r;

	errors = job->errors ? json_dumps(job->errors, JSON_COMPACT) : strdup("[]");
	if (errors == NULL)
		return NULL;
	snprintf(processed, sizeof(processed), "%ld", job->total);
	snprintf(created, sizeof(created), "%lld", job->created);
	snprintf(updated, sizeof(updated), "%lld", job->updated);
	snprintf(failed, sizeof(failed), "%ld", job->failed);
	params[7] = errors;
	r = dl_db_exec(db, SQL_IMPORT_FINISH, 8, params, NULL);
	free(errors);
	return r;
}

/* Applies the rows and finishes the import in one transaction. Returns the
 * final row (*out, caller clears; NULL when the claim was lost), 0; or
 * -EAGAIN (retry), -EIO (database). */
static int job_apply(PGconn *db, struct import_job *job, PGresult **out)
{
	const char *params[3] = {job->id, job->attempts, NULL};
	const char *audience = job->audience_id;
	char sqlstate[6] = "";
	size_t n = json_array_size(job->valid);
	PGresult *r = NULL;
	json_t *chunk = NULL;
	char *text = NULL;
	int rc = -EIO;

	*out = NULL;
	job->created = job->updated = 0;
	if (dl_db_cmd(db, "BEGIN") < 0)
		goto out;
	r = dl_db_exec(db, SQL_IMPORT_LOCK, 2, params, sqlstate);
	if (r == NULL)
		goto out;
	if (PQntuples(r) == 0) {
		/* Another worker took it over: leave it to that one. */
		rc = 0;
		goto out;
	}
	PQclear(r);
	if (audience != NULL) {
		params[0] = audience;
		r = dl_db_exec(db, SQL_AUDIENCE_SHARE, 1, params, sqlstate);
		if (r == NULL)
			goto out;
		if (PQntuples(r) == 0)
			audience = NULL; /* deleted since: the contacts are still imported */
		PQclear(r);
	}
	r = NULL;
	for (size_t at = 0; at < n; at += IMPORT_CHUNK) {
		chunk = json_array();
		for (size_t i = at; i < n && i < at + IMPORT_CHUNK && chunk; i++)
			json_array_append(chunk, json_array_get(job->valid, i));
		text = chunk ? json_dumps(chunk, JSON_COMPACT) : NULL;
		if (text == NULL) {
			rc = -ENOMEM;
			goto out;
		}
		params[0] = job->org_id;
		params[1] = text;
		params[2] = audience;
		r = dl_db_exec(db, SQL_CONTACTS_UPSERT, 3, params, sqlstate);
		if (r == NULL)
			goto out;
		job->created += atoll(PQgetvalue(r, 0, 0));
		job->updated += atoll(PQgetvalue(r, 0, 1));
		PQclear(r);
		r = NULL;
		free(text);
		text = NULL;
		json_decref(chunk);
		chunk = NULL;
	}
	r = job_finish(db, job, job_status(job));
	if (r == NULL)
		goto out;
	if (PQntuples(r) == 0) {
		rc = 0;
		goto out;
	}
	if (dl_db_cmd(db, "COMMIT") < 0)
		goto out;
	*out = r;
	r = NULL;
	rc = 0;
out:
	if (rc < 0 && dl_db_retryable(sqlstate) && PQstatus(db) == CONNECTION_OK)
		rc = -EAGAIN;
	if (PQtransactionStatus(db) != PQTRANS_IDLE)
		DL_IGNORE(dl_db_cmd(db, "ROLLBACK"));
	PQclear(r);
	free(text);
	json_decref(chunk);
	return rc;
}

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;

static void curl_setup(void)
{
	curl_global_init(CURL_GLOBAL_DEFAULT);
}

static size_t discard(char *ptr, size_t size, size_t nmemb, void *ud)
{
	(void)ptr;
	(void)ud;
	return size * nmemb;
}

/* Aborts a webhook call when the service stops. */
static int stop_progress(void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow)
{
	(void)dltotal;
	(void)dlnow;
	(void)ultotal;
	(void)ulnow;
	return *(volatile int *)ud ? 1 : 0;
}

/* POSTs the finished import to its webhook: best effort, a few tries, logged. */
static void webhook_post(struct api_ctx *api, const char *url, const char *import_id, json_t *import)
{
	volatile int *stop = &api->svc->stop;
	struct curl_slist *hdrs = NULL;
	char *body = json_dumps(import, JSON_COMPACT), code_s[16] = "", tries_s[8];
	CURL *h = NULL;
	CURLcode rc = CURLE_OK;
	long code = 0;
	int tries = 0;

	pthread_once(&curl_once, curl_setup);
	h = curl_easy_init();
	hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
	if (body == NULL || h == NULL || hdrs == NULL) {
		dl_log_kv(DL_WARN, "import webhook not sent", "import_id", import_id, "error", "out of memory",
			  NULL);
		goto out;
	}
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(h, CURLOPT_USERAGENT, "dialer-api");
	curl_easy_setopt(h, CURLOPT_TIMEOUT, WEBHOOK_TIMEOUT_S);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, discard);
	curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, stop_progress);
	curl_easy_setopt(h, CURLOPT_XFERINFODATA, (void *)stop);
	curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
#if LIBCURL_VERSION_NUM >= 0x075500
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
#endif
	while (tries < WEBHOOK_TRIES && !*stop) {
		if (tries > 0)
			dl_sleep_ms(500L * tries, stop);
		tries++;
		code = 0;
		rc = curl_easy_perform(h);
		if (rc == CURLE_OK)
			curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
		if (rc == CURLE_OK && code >= 200 && code < 300)
			break;
	}
	snprintf(code_s, sizeof(code_s), "%ld", code);
	snprintf(tries_s, sizeof(tries_s), "%d", tries);
	/* The URL is not logged: it may carry the receiver's secret. */
	if (rc == CURLE_OK && code >= 200 && code < 300)
		dl_log_kv(DL_INFO, "import webhook sent", "import_id", import_id, "http_status", code_s, "tries",
			  tries_s, NULL);
	else
		dl_log_kv(DL_WARN, "import webhook failed", "import_id", import_id, "http_status", code_s,
			  "error", rc != CURLE_OK ? curl_easy_strerror(rc) : "non-2xx answer", "tries", tries_s,
			  NULL);
out:
	curl_slist_free_all(hdrs);
	curl_easy_cleanup(h);
	free(body);
}

/* Claims one import and processes it. Returns 1 when one was taken, 0 when
 * none is waiting, -EIO on database trouble (the import stays claimed and is
 * taken again once stale). */
static int import_one(struct api_ctx *api, PGconn *db)
{
	const char *params[1] = {IMPORT_STALE_S};
	struct import_job job = {0};
	PGresult *final = NULL;
	json_t *import = NULL;
	const char *status;
	int rc, tries = 0;

	job.claim = dl_db_exec(db, SQL_IMPORT_CLAIM, 1, params, NULL);
	if (job.claim == NULL)
		return -EIO;
	if (PQntuples(job.claim) == 0) {
		rc = 0;
		goto out;
	}
	job.id = PQgetvalue(job.claim, 0, 0);
	job.org_id = PQgetvalue(job.claim, 0, 1);
	job.audience_id = PQgetisnull(job.claim, 0, 2) ? NULL : PQgetvalue(job.claim, 0, 2);
	job.webhook_url = PQgetisnull(job.claim, 0, 3) ? NULL : PQgetvalue(job.claim, 0, 3);
	job.attempts = PQgetvalue(job.claim, 0, 4);
	job.total = atol(PQgetvalue(job.claim, 0, 5));
	rc = 1;
	if (atoi(job.attempts) > IMPORT_MAX_ATTEMPTS) {
		dl_log_kv(DL_ERROR, "import given up: its processing died too often", "import_id", job.id, NULL);
		job.failed = job.total;
		final = job_finish(db, &job, "FAILED");
		goto done;
	}
	if ((rc = job_load(db, &job)) < 0)
		goto out;
	rc = 1;
	do {
		int err = job_apply(db, &job, &final);

		if (err == -EIO && PQstatus(db) != CONNECTION_OK) {
			rc = -EIO;
			goto out;
		}
		if (err == 0)
			break;
		if (err != -EAGAIN || ++tries >= IMPORT_TX_TRIES) {
			/* The rows cannot be stored: the import fails as a whole. */
			dl_log_kv(DL_ERROR, "import failed", "import_id", job.id, NULL);
			job.created = job.updated = 0;
			job.failed = job.total;
			final = job_finish(db, &job, "FAILED");
			break;
		}
	} while (true);
done:
	if (final == NULL || PQntuples(final) == 0)
		goto out;
	import = api_row_json(final, 0, import_json, NCOLS(import_json));
	status = PQgetvalue(final, 0, 1);
	{
		char labels[64], counts[4][24];

		snprintf(labels, sizeof(labels), "status=\"%s\"", status);
		dl_metrics_add("dialer_imports_total", labels, 1);
		dl_metrics_add("dialer_import_rows_total", "", (double)job.total);
		snprintf(counts[0], sizeof(counts[0]), "%ld", job.total);
		snprintf(counts[1], sizeof(counts[1]), "%lld", job.created);
		snprintf(counts[2], sizeof(counts[2]), "%lld", job.updated);
		snprintf(counts[3], sizeof(counts[3]), "%ld", job.failed);
		dl_log_kv(DL_INFO, "import finished", "import_id", job.id, "organization_id", job.org_id,
			  "status", status, "rows", counts[0], "created", counts[1], "updated", counts[2],
			  "failed", counts[3], NULL);
	}
	if (job.webhook_url != NULL && import != NULL)
		webhook_post(api, job.webhook_url, job.id, import);
out:
	json_decref(import);
	json_decref(job.valid);
	json_decref(job.errors);
	PQclear(final);
	PQclear(job.claim);
	return rc;
}

/* Waits up to timeout_ms for a NOTIFY, in short steps so a stop is seen soon. */
static void wait_notify(PGconn *db, volatile int *stop, int timeout_ms)
{
	struct pollfd pfd = {PQsocket(db), POLLIN, 0};
	PGnotify *note;
	bool woken = false;

	/* A notification read along with an earlier result is already queued. */
	PQconsumeInput(db);
	while ((note = PQnotifies(db)) != NULL) {
		PQfreemem(note);
		woken = true;
	}
	for (int waited = 0; !woken && !*stop && waited < timeout_ms; waited += 200) {
		if (poll(&pfd, 1, 200) > 0) {
			PQconsumeInput(db);
			woken = true;
		}
	}
	while ((note = PQnotifies(db)) != NULL)
		PQfreemem(note);
}

void *api_imports_thread(void *arg)
{
	struct api_ctx *api = arg;
	volatile int *stop = &api->svc->stop;
	PGconn *db = NULL;

	dl_metrics_register("dialer_imports_total", "counter", "Imports finished, by final status.");
	dl_metrics_register("dialer_import_rows_total", "counter", "Rows of finished imports.");
	while (!*stop) {
		int n;

		if (db == NULL || PQstatus(db) != CONNECTION_OK) {
			PQfinish(db);
			db = NULL;
			if (dl_db_connect(api->cfg->db_url, api->cfg->db_connect_timeout_s, &db) < 0 ||
			    dl_db_cmd(db, "LISTEN dialer_imports") < 0) {
				PQfinish(db);
				db = NULL;
				dl_sleep_ms(1000, stop);
				continue;
			}
		}
		n = import_one(api, db);
		if (n > 0)
			continue;
		if (n < 0) {
			dl_sleep_ms(500, stop);
			continue;
		}
		/* Woken by a new import, or every second to take over stale ones. */
		wait_notify(db, stop, 1000);
	}
	PQfinish(db);
	return NULL;
}
