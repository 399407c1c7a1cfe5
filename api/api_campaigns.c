/* /v1/campaigns: the seed's Campaigns API. The API records intent (status
 * changes and their commands); the scheduler runs campaigns. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "dl_log.h"

#define CAMPAIGN_COLS                                                                          \
	"id, name, status, flow_id, audience_id, calls_per_minute, max_concurrent_calls,"        \
	" max_retries, retry_delay_minutes, call_timeout_minutes, " API_ISO_UTC("scheduled_at") ", timezone," \
	" organization_id, " API_ISO_UTC("created_at") ", " API_ISO_UTC("started_at") ","            \
	" " API_ISO_UTC("completed_at") ", pause_reason"

/* The same columns for api_respond_page and api_respond_one, whose binary
 * results carry timestamps as they are stored: the API writes their text,
 * which spares the database a to_char per timestamp.
 * Keep in step with the trigger of common/sql/0010_campaign_change_notify.sql:
 * a change of one of these columns must be announced as 'l', or the read
 * cache (api_cache.c) would keep serving the list without it. */
#define CAMPAIGN_READ_COLS                                                                     \
	"id, name, status, flow_id, audience_id, calls_per_minute, max_concurrent_calls,"        \
	" max_retries, retry_delay_minutes, call_timeout_minutes, scheduled_at, timezone,"       \
	" organization_id, created_at, started_at, completed_at, pause_reason"

static const char *const campaign_json[] = {
	"id:s", "name:s", "status:s", "flowId:s", "audienceId:s", "callsPerMinute:i",
	"maxConcurrentCalls:i", "maxRetries:i", "retryDelayMinutes:i", "callTimeoutMinutes:i",
	"scheduledAt:s", "timezone:s", "organizationId:s", "createdAt:s", "startedAt:s",
	"completedAt:s", "pauseReason:s",
};

static const char SQL_CAMPAIGN_GET[] =
	"SELECT " CAMPAIGN_READ_COLS " FROM campaigns WHERE id = $1 AND organization_id = $2";
static const char SQL_CAMPAIGN_LOCK[] =
	"SELECT " CAMPAIGN_COLS " FROM campaigns WHERE id = $1 AND organization_id = $2 FOR UPDATE";
/* The total is a scalar subquery rather than count(*) OVER (): the same
 * snapshot, without copying every matching row into a window's store. */
#define CAMPAIGN_FILTER                                                                        \
	" WHERE organization_id = $1 AND ($2::text IS NULL OR status = $2)"                      \
	" AND ($3::text IS NULL OR strpos(lower(name), lower($3)) > 0)"
static const char SQL_CAMPAIGN_LIST[] =
	"SELECT " CAMPAIGN_READ_COLS ", (SELECT count(*) FROM campaigns" CAMPAIGN_FILTER ")"
	" FROM campaigns" CAMPAIGN_FILTER " ORDER BY created_at DESC, id DESC LIMIT $4 OFFSET $5";
static const char SQL_CAMPAIGN_COUNT[] = "SELECT count(*) FROM campaigns" CAMPAIGN_FILTER;
static const char SQL_FLOW_EXISTS[] = "SELECT 1 FROM flows WHERE id = $1 AND organization_id = $2";
static const char SQL_AUDIENCE_EXISTS[] =
	"SELECT 1 FROM audiences WHERE id = $1 AND organization_id = $2";
static const char SQL_CAMPAIGN_INSERT[] =
	"INSERT INTO campaigns (id, organization_id, name, flow_id, audience_id, calls_per_minute,"
	" max_concurrent_calls, max_retries, retry_delay_minutes, call_timeout_minutes, scheduled_at,"
	" timezone) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING " CAMPAIGN_COLS;
static const char SQL_CAMPAIGN_UPDATE[] =
	"UPDATE campaigns SET name = $3, flow_id = $4, audience_id = $5, calls_per_minute = $6,"
	" max_concurrent_calls = $7, max_retries = $8, retry_delay_minutes = $9,"
	" call_timeout_minutes = $10, scheduled_at = $11, timezone = $12"
	" WHERE id = $1 AND organization_id = $2 RETURNING " CAMPAIGN_COLS;
static const char SQL_CAMPAIGN_DELETE[] =
	"DELETE FROM campaigns WHERE id = $1 AND organization_id = $2 AND status = 'DRAFT'";
static const char SQL_CAMPAIGN_STATE[] =
	"SELECT c.status, coalesce(c.scheduled_at > now(), false), o.quota_minutes - o.used_minutes"
	" FROM campaigns c JOIN organizations o ON o.id = c.organization_id"
	" WHERE c.id = $1 AND c.organization_id = $2 FOR UPDATE OF c";
static const char SQL_CAMPAIGN_SET_STATUS[] =
	"UPDATE campaigns SET status = $3,"
	" started_at = CASE WHEN $3 = 'IN_PROGRESS' AND started_at IS NULL THEN now() ELSE started_at END,"
	" completed_at = CASE WHEN $3 = 'CANCELLED' THEN now() ELSE completed_at END,"
	" pause_reason = NULL"
	" WHERE id = $1 AND organization_id = $2 RETURNING " CAMPAIGN_COLS;
static const char SQL_CAMPAIGN_PROGRESS[] =
	"SELECT status, total, pending, queued, in_progress, completed, failed, skipped"
	" FROM campaigns WHERE id = $1 AND organization_id = $2";
/* A call's carrier sid: a live call's is its latest attempt's (the
 * scheduler writes it to the call when the attempt ends). */
#define API_CALL_SID                                                                                        \
	"CASE WHEN status = 'IN_PROGRESS' THEN coalesce((SELECT a.call_sid FROM call_attempts a"                 \
	" WHERE a.call_id = calls.id ORDER BY a.attempt_no DESC LIMIT 1), call_sid) ELSE call_sid END"

/* A page of a campaign's calls in snapshot order, read along the index
 * (campaign_id, id) from the page's start. The campaign is given as a range
 * of one value, not an equality: with `campaign_id = $1` the planner may
 * take ORDER BY id from the primary key instead and filter out other
 * campaigns' calls, which for a campaign holding most of the table looks
 * cheap and read 50,000 rows for a page of 100 (the further the campaign's
 * calls lie in the table, the more). */
static const char SQL_CAMPAIGN_CALLS[] =
	"SELECT " API_CALL_SID ", contact_id, contact_name, phone_number, status, outcome, duration, attempts,"
	" " API_ISO_UTC("started_at") ", " API_ISO_UTC("completed_at") " FROM calls"
	" WHERE campaign_id >= $1 AND campaign_id <= $1 ORDER BY campaign_id, id LIMIT $2 OFFSET $3";

static const char *const call_json[] = {
	"callSid:s", "contactId:s", "contactName:s", "phoneNumber:s", "status:s", "outcome:s",
	"duration:i", "attempts:i", "startedAt:s", "completedAt:s",
};

#define NCOLS(a) ((int)DL_ARRAY_LEN(a))

static void not_found(struct api_call *c)
{
	dl_http_error(c->resp, 404, "campaign %s not found", c->params[0]);
}

static void respond_campaign(struct api_call *c, int status, PGresult *r)
{
	dl_http_json(c->resp, status, api_row_json(r, 0, campaign_json, NCOLS(campaign_json)));
}

void api_campaigns_get(struct api_call *c)
{
	api_respond_one(c, SQL_CAMPAIGN_GET, campaign_json, NCOLS(campaign_json), "campaign");
}

void api_campaigns_list(struct api_call *c)
{
	const char *status = dl_http_query(c->req, "status"), *search = dl_http_query(c->req, "search");
	const char *params[5] = {c->org_id, status, search};

	if (status != NULL && !api_campaign_status_valid(status))
		return api_bad_request(c, "status must be one of DRAFT, SCHEDULED, IN_PROGRESS, PAUSED, "
					  "COMPLETED, CANCELLED");
	if (search != NULL && (dl_utf8_len(search) < 0 || dl_utf8_len(search) > 200))
		return api_bad_request(c, "search must be valid text of at most 200 characters");
	if (search != NULL && !*search)
		params[2] = NULL;
	api_respond_page(c, SQL_CAMPAIGN_LIST, SQL_CAMPAIGN_COUNT, params, 3, campaign_json, NCOLS(campaign_json));
}

/* Checks that flowId and audienceId (when given) exist in the organization. */
static bool refs_exist(struct api_call *c, const char *flow, const char *audience)
{
	const char *params[2] = {NULL, c->org_id};
	PGresult *r;
	bool ok;

	if (flow != NULL) {
		params[0] = flow;
		r = dl_db_exec(c->db, SQL_FLOW_EXISTS, 2, params, NULL);
		if (r == NULL) {
			api_db_failed(c);
			return false;
		}
		ok = PQntuples(r) == 1;
		PQclear(r);
		if (!ok) {
			dl_http_error(c->resp, 400, "flowId %s does not exist", flow);
			return false;
		}
	}
	if (audience != NULL) {
		params[0] = audience;
		r = dl_db_exec(c->db, SQL_AUDIENCE_EXISTS, 2, params, NULL);
		if (r == NULL) {
			api_db_failed(c);
			return false;
		}
		ok = PQntuples(r) == 1;
		PQclear(r);
		if (!ok) {
			dl_http_error(c->resp, 400, "audienceId %s does not exist", audience);
			return false;
		}
	}
	return true;
}

/* Settings of a campaign as statement parameters, merged from a stored row
 * (may be NULL) and a request body. */
struct settings {
	char ints[5][16];
	const char *v[10]; /* name, flow, audience, 5 ints, scheduledAt, timezone */
};

static void merge(struct settings *s, PGresult *row, json_t *body)
{
	static const char *const names[] = {"name", "flowId", "audienceId", "callsPerMinute",
					    "maxConcurrentCalls", "maxRetries", "retryDelayMinutes",
					    "callTimeoutMinutes", "scheduledAt", "timezone"};
	static const int row_col[] = {1, 3, 4, 5, 6, 7, 8, 9, 10, 11};
	static const int defaults[] = {10, 5, 3, 5, 5};

	for (int i = 0; i < 10; i++) {
		json_t *v = json_object_get(body, names[i]);

		if (v != NULL) {
			if (json_is_integer(v)) {
				snprintf(s->ints[i - 3], sizeof(s->ints[0]), "%lld",
					 (long long)json_integer_value(v));
				s->v[i] = s->ints[i - 3];
			} else {
				s->v[i] = json_string_value(v); /* NULL for null */
			}
		} else if (row != NULL) {
			s->v[i] = PQgetisnull(row, 0, row_col[i]) ? NULL : PQgetvalue(row, 0, row_col[i]);
		} else if (i >= 3 && i <= 7) {
			snprintf(s->ints[i - 3], sizeof(s->ints[0]), "%d", defaults[i - 3]);
			s->v[i] = s->ints[i - 3];
		} else {
			s->v[i] = NULL;
		}
	}
}

void api_campaigns_create(struct api_call *c)
{
	char err[256], id[DL_ID_MAX];
	struct settings s;
	const char *params[12];
	PGresult *r;

	if (!api_campaign_validate(c->body, false, dl_now_ms(), err, sizeof(err)))
		return api_bad_request(c, err);
	if (api_db(c) == NULL || !refs_exist(c, api_str(c->body, "flowId"), api_str(c->body, "audienceId")))
		return;
	merge(&s, NULL, c->body);
	dl_id_new("camp", id);
	snprintf(c->changed_campaign, sizeof(c->changed_campaign), "%s", id);
	params[0] = id;
	params[1] = c->org_id;
	memcpy(&params[2], s.v, sizeof(s.v));
	r = dl_db_exec(c->db, SQL_CAMPAIGN_INSERT, 12, params, NULL);
	if (r == NULL)
		return api_db_failed(c);
	respond_campaign(c, 201, r);
	dl_log_kv(DL_INFO, "campaign created", "request_id", c->req->request_id, "campaign_id", id, NULL);
	PQclear(r);
}

void api_campaigns_update(struct api_call *c)
{
	const char *params[12] = {c->params[0], c->org_id};
	char err[256];
	struct settings s;
	PGresult *row = NULL, *r = NULL;

	if (!api_campaign_validate(c->body, true, dl_now_ms(), err, sizeof(err)))
		return api_bad_request(c, err);
	if (api_db(c) == NULL || dl_db_cmd(c->db, "BEGIN") < 0)
		return api_db_failed(c);
	row = dl_db_exec(c->db, SQL_CAMPAIGN_LOCK, 2, params, NULL);
	if (row == NULL) {
		api_db_failed(c);
		goto out;
	}
	if (PQntuples(row) == 0) {
		not_found(c);
		goto out;
	}
	if (strcmp(PQgetvalue(row, 0, 2), "DRAFT") != 0) {
		dl_http_error(c->resp, 409, "campaign %s is %s; it can only be updated in DRAFT", c->params[0],
			      PQgetvalue(row, 0, 2));
		goto out;
	}
	if (!refs_exist(c, api_str(c->body, "flowId"), api_str(c->body, "audienceId")))
		goto out;
	merge(&s, row, c->body);
	if (s.v[8] != NULL && s.v[9] == NULL) {
		api_bad_request(c, "timezone is required when scheduledAt is set");
		goto out;
	}
	memcpy(&params[2], s.v, sizeof(s.v));
	snprintf(c->changed_campaign, sizeof(c->changed_campaign), "%s", c->params[0]);
	r = dl_db_exec(c->db, SQL_CAMPAIGN_UPDATE, 12, params, NULL);
	if (r == NULL || dl_db_cmd(c->db, "COMMIT") < 0) {
		api_db_failed(c);
		goto out;
	}
	respond_campaign(c, 200, r);
out:
	PQclear(row);
	PQclear(r);
}

void api_campaigns_delete(struct api_call *c)
{
	const char *params[2] = {c->params[0], c->org_id};
	PGresult *r;

	if (api_db(c) == NULL)
		return;
	snprintf(c->changed_campaign, sizeof(c->changed_campaign), "%s", c->params[0]);
	r = dl_db_exec(c->db, SQL_CAMPAIGN_DELETE, 2, params, NULL);
	if (r == NULL)
		return api_db_failed(c);
	if (strcmp(PQcmdTuples(r), "1") == 0) {
		dl_http_json(c->resp, 204, NULL);
		PQclear(r);
		return;
	}
	PQclear(r);
	r = dl_db_exec(c->db, SQL_CAMPAIGN_GET, 2, params, NULL);
	if (r == NULL)
		return api_db_failed(c);
	if (PQntuples(r) == 0)
		not_found(c);
	else
		dl_http_error(c->resp, 409, "campaign %s is %s; only a DRAFT campaign can be deleted",
			      c->params[0], PQgetvalue(r, 0, 2));
	PQclear(r);
}

static const char *const action_names[] = {"start", "pause", "resume", "cancel"};
static const char *const action_events[] = {"campaign.started", "campaign.paused", "campaign.resumed",
					    "campaign.cancelled"};

/* Applies action in one transaction with its command in the outbox. */
static void transition(struct api_call *c, enum api_action action)
{
	const char *params[3] = {c->params[0], c->org_id, NULL};
	const char *next, *status;
	PGresult *st = NULL, *r = NULL;
	json_t *cmd;

	if (api_db(c) == NULL || api_tx_begin(c) < 0)
		return api_db_failed(c);
	st = dl_db_exec(c->db, SQL_CAMPAIGN_STATE, 2, params, NULL);
	if (st == NULL) {
		api_db_failed(c);
		goto out;
	}
	if (PQntuples(st) == 0) {
		not_found(c);
		goto out;
	}
	status = PQgetvalue(st, 0, 0);
	next = api_campaign_next_status(status, action, PQgetvalue(st, 0, 1)[0] == 't');
	if (next == NULL) {
		dl_http_error(c->resp, 409, "cannot %s campaign %s: it is %s", action_names[action],
			      c->params[0], status);
		goto out;
	}
	if ((action == API_ACT_START || action == API_ACT_RESUME) && atoll(PQgetvalue(st, 0, 2)) <= 0) {
		dl_http_error(c->resp, 402, "organization has no call minutes left");
		goto out;
	}
	params[2] = next;
	snprintf(c->changed_campaign, sizeof(c->changed_campaign), "%s", c->params[0]);
	r = dl_db_exec(c->db, SQL_CAMPAIGN_SET_STATUS, 3, params, NULL);
	if (r == NULL) {
		api_db_failed(c);
		goto out;
	}
	cmd = json_pack("{s:s, s:s, s:s, s:s, s:s}", "campaignId", c->params[0], "organizationId",
			c->org_id, "status", next, "previousStatus", status, "requestId",
			c->req->request_id);
	if (cmd == NULL ||
	    api_outbox_add(c->db, c->api->cfg->amqp_commands_exchange, action_events[action],
			   action_events[action], cmd) < 0 ||
	    api_tx_commit(c) < 0) {
		json_decref(cmd);
		api_db_failed(c);
		goto out;
	}
	json_decref(cmd);
	dl_log_kv(DL_INFO, "campaign status changed", "request_id", c->req->request_id, "campaign_id",
		  c->params[0], "from", status, "to", next, NULL);
	if (action == API_ACT_START)
		respond_campaign(c, 200, r);
	else
		dl_http_json(c->resp, 200, json_pack("{s:s}", "status", next));
out:
	PQclear(st);
	PQclear(r);
}

void api_campaigns_start(struct api_call *c)
{
	transition(c, API_ACT_START);
}

void api_campaigns_pause(struct api_call *c)
{
	transition(c, API_ACT_PAUSE);
}

void api_campaigns_resume(struct api_call *c)
{
	transition(c, API_ACT_RESUME);
}

void api_campaigns_cancel(struct api_call *c)
{
	transition(c, API_ACT_CANCEL);
}

void api_campaigns_progress(struct api_call *c)
{
	static const char *const names[] = {"total", "pending", "queued", "inProgress", "completed", "failed",
					    "skipped"};
	const char *params[2] = {c->params[0], c->org_id};
	long long n[7], done;
	struct dl_jw w;
	char *body;
	size_t len;
	PGresult *r;

	if (api_db(c) == NULL)
		return;
	r = dl_db_exec_prepared_bin(c->db, SQL_CAMPAIGN_PROGRESS, 2, params, NULL);
	if (r == NULL)
		return api_db_failed(c);
	if (PQntuples(r) == 0) {
		PQclear(r);
		return not_found(c);
	}
	for (int i = 0; i < 7; i++) {
		if (dl_db_bin_int(r, 0, i + 1, &n[i]) < 0) {
			PQclear(r);
			dl_log_kv(DL_ERROR, "campaign progress counters are not integers", "request_id",
				  c->req->request_id, "campaign_id", c->params[0], NULL);
			return dl_http_error(c->resp, 500, "internal error; request id %s", c->req->request_id);
		}
	}
	done = n[4] + n[5] + n[6];
	dl_jw_init(&w, 256);
	dl_jw_open(&w, '{');
	dl_jw_key(&w, "status", 6);
	dl_jw_str(&w, PQgetvalue(r, 0, 0), (size_t)PQgetlength(r, 0, 0));
	for (int i = 0; i < 7; i++) {
		dl_jw_key(&w, names[i], strlen(names[i]));
		dl_jw_int(&w, n[i]);
	}
	dl_jw_key(&w, "percentComplete", 15);
	dl_jw_int(&w, n[0] > 0 ? done * 100 / n[0] : 0);
	dl_jw_close(&w, '}');
	PQclear(r);
	body = dl_jw_take(&w, &len);
	if (body == NULL)
		return dl_http_error(c->resp, 500, "out of memory");
	dl_http_json_take(c->resp, 200, body, len);
}

void api_campaigns_calls(struct api_call *c)
{
	const char *params[3] = {c->params[0], c->org_id, NULL};
	char err[256], lim[16], off[24];
	long page, limit;
	long long total;
	PGresult *r;

	if (!api_parse_paging(dl_http_query(c->req, "page"), dl_http_query(c->req, "limit"), &page, &limit,
			      err, sizeof(err)))
		return api_bad_request(c, err);
	if (api_db(c) == NULL)
		return;
	r = dl_db_exec_prepared(c->db, SQL_CAMPAIGN_PROGRESS, 2, params, NULL);
	if (r == NULL)
		return api_db_failed(c);
	if (PQntuples(r) == 0) {
		PQclear(r);
		return not_found(c);
	}
	total = atoll(PQgetvalue(r, 0, 1));
	PQclear(r);
	snprintf(lim, sizeof(lim), "%ld", limit);
	snprintf(off, sizeof(off), "%ld", (page - 1) * limit);
	params[1] = lim;
	params[2] = off;
	r = dl_db_exec_prepared(c->db, SQL_CAMPAIGN_CALLS, 3, params, NULL);
	if (r == NULL)
		return api_db_failed(c);
	dl_http_json(c->resp, 200, api_list(api_rows_json(r, call_json, NCOLS(call_json)), total, page, limit));
	PQclear(r);
}
