/* /v1/audiences: named groups of an organization's contacts. Membership is
 * changed set-based (one statement per request) and contactCount is the
 * column the audience_contacts triggers keep, never a count(*). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "dl_log.h"

#define AUDIENCE_COLS \
	"id, name, description, contact_count, " API_ISO_UTC("created_at") ", " API_ISO_UTC("updated_at")
#define MEMBER_COLS                                                                    \
	"c.id, c.phone_number, c.name, c.language, c.metadata::text, " API_ISO_UTC("c.created_at") "," \
	" " API_ISO_UTC("c.updated_at")
/* Contact ids are "ct_" and 24 chars; anything much longer is not one. */
#define CONTACT_ID_MAX 64

static const char *const audience_json[] = {
	"id:s", "name:s", "description:s", "contactCount:i", "createdAt:s", "updatedAt:s",
};
static const char *const contact_json[] = {
	"id:s", "phoneNumber:s", "name:s", "language:s", "metadata:j", "createdAt:s", "updatedAt:s",
};

static const char SQL_AUDIENCE_GET[] =
	"SELECT " AUDIENCE_COLS " FROM audiences WHERE id = $1 AND organization_id = $2";
static const char SQL_AUDIENCE_LIST[] =
	"SELECT " AUDIENCE_COLS ", count(*) OVER () FROM audiences WHERE organization_id = $1"
	" ORDER BY created_at DESC, id DESC LIMIT $2 OFFSET $3";
static const char SQL_AUDIENCE_COUNT[] = "SELECT count(*) FROM audiences WHERE organization_id = $1";
static const char SQL_AUDIENCE_INSERT[] =
	"INSERT INTO audiences (id, organization_id, name, description) VALUES ($1, $2, $3, $4)"
	" RETURNING " AUDIENCE_COLS;
/* $4 says whether description was given at all (null clears it). */
static const char SQL_AUDIENCE_UPDATE[] =
	"UPDATE audiences SET name = coalesce($3, name),"
	" description = CASE WHEN $4::boolean THEN $5 ELSE description END, updated_at = now()"
	" WHERE id = $1 AND organization_id = $2 RETURNING " AUDIENCE_COLS;
/* campaigns.audience_id has no ON DELETE: an audience any campaign refers to
 * (even a finished one, whose records keep the reference) stays. */
static const char SQL_AUDIENCE_DELETE[] =
	"DELETE FROM audiences a WHERE a.id = $1 AND a.organization_id = $2"
	" AND NOT EXISTS (SELECT 1 FROM campaigns c WHERE c.organization_id = $2 AND c.audience_id = a.id)";
/* Why a delete did not happen: no audience (no row), or the campaign to name
 * (a live one first). */
static const char SQL_AUDIENCE_USER[] =
	"SELECT c.id, c.status FROM audiences a LEFT JOIN LATERAL"
	" (SELECT id, status FROM campaigns WHERE organization_id = $2 AND audience_id = a.id"
	"  ORDER BY status IN ('COMPLETED', 'CANCELLED'), created_at DESC LIMIT 1) c ON true"
	" WHERE a.id = $1 AND a.organization_id = $2";
/* Locks the audience against a concurrent delete while its members change. */
static const char SQL_AUDIENCE_LOCK[] =
	"SELECT 1 FROM audiences WHERE id = $1 AND organization_id = $2 FOR NO KEY UPDATE";
static const char SQL_CONTACT_FIRST_UNKNOWN[] =
	"SELECT u.n - 1, u.id FROM unnest($1::text[]) WITH ORDINALITY AS u(id, n)"
	" WHERE NOT EXISTS (SELECT 1 FROM contacts c WHERE c.id = u.id AND c.organization_id = $2)"
	" ORDER BY u.n LIMIT 1";
static const char SQL_MEMBERS_ADD[] =
	"INSERT INTO audience_contacts (audience_id, contact_id)"
	" SELECT DISTINCT $1, u.id FROM unnest($2::text[]) AS u(id) ON CONFLICT DO NOTHING";
static const char SQL_MEMBERS_REMOVE[] =
	"DELETE FROM audience_contacts WHERE audience_id = $1 AND contact_id = ANY ($2::text[])";
static const char SQL_AUDIENCE_CONTACT_COUNT[] = "SELECT contact_count FROM audiences WHERE id = $1";
static const char SQL_AUDIENCE_TOTAL[] =
	"SELECT contact_count FROM audiences WHERE id = $1 AND organization_id = $2";
static const char SQL_MEMBERS_LIST[] =
	"SELECT " MEMBER_COLS " FROM audience_contacts ac JOIN contacts c ON c.id = ac.contact_id"
	" WHERE ac.audience_id = $1 ORDER BY ac.added_at, ac.contact_id LIMIT $2 OFFSET $3";

#define NCOLS(a) ((int)DL_ARRAY_LEN(a))

static void not_found(struct api_call *c)
{
	dl_http_error(c->resp, 404, "audience %s not found", c->params[0]);
}

static void respond_audience(struct api_call *c, int status, PGresult *r)
{
	dl_http_json(c->resp, status, api_row_json(r, 0, audience_json, NCOLS(audience_json)));
}

void api_audiences_get(struct api_call *c)
{
	api_respond_one(c, SQL_AUDIENCE_GET, audience_json, NCOLS(audience_json), "audience");
}

void api_audiences_list(struct api_call *c)
{
	const char *params[3] = {c->org_id};

	api_respond_page(c, SQL_AUDIENCE_LIST, SQL_AUDIENCE_COUNT, params, 1, audience_json, NCOLS(audience_json));
}

const struct api_field api_audience_fields[API_AUDIENCE_NFIELDS] = {
	{"name", API_F_STRING, true, false, 1, 200},
	{"description", API_F_STRING, false, true, 0, 1000},
};
/* In a PATCH every field is optional; name still may not be null. */
const struct api_field api_audience_patch_fields[API_AUDIENCE_NFIELDS] = {
	{"name", API_F_STRING, false, false, 1, 200},
	{"description", API_F_STRING, false, true, 0, 1000},
};
const struct api_field api_contact_ids_fields[API_CONTACT_IDS_NFIELDS] = {
	{"contactIds", API_F_ARRAY, true, false, 1, 1000},
};

void api_audiences_create(struct api_call *c)
{
	char err[256], id[DL_ID_MAX];
	const char *params[4] = {id, c->org_id, NULL, NULL};
	PGresult *r;

	if (!api_check_fields(c->body, api_audience_fields, API_AUDIENCE_NFIELDS, err, sizeof(err)))
		return api_bad_request(c, err);
	if (api_db(c) == NULL)
		return;
	dl_id_new("aud", id);
	params[2] = api_str(c->body, "name");
	params[3] = api_str(c->body, "description"); /* NULL when absent or null */
	r = dl_db_exec(c->db, SQL_AUDIENCE_INSERT, 4, params, NULL);
	if (r == NULL)
		return api_db_failed(c);
	respond_audience(c, 201, r);
	dl_log_kv(DL_INFO, "audience created", "request_id", c->req->request_id, "audience_id", id, NULL);
	PQclear(r);
}

void api_audiences_update(struct api_call *c)
{
	char err[256];
	const char *params[5] = {c->params[0], c->org_id, NULL, NULL, NULL};
	PGresult *r;

	if (!api_check_fields(c->body, api_audience_patch_fields, API_AUDIENCE_NFIELDS, err, sizeof(err)))
		return api_bad_request(c, err);
	params[2] = api_str(c->body, "name");
	params[3] = json_object_get(c->body, "description") != NULL ? "true" : "false";
	params[4] = api_str(c->body, "description");
	if (api_db(c) == NULL)
		return;
	r = dl_db_exec(c->db, SQL_AUDIENCE_UPDATE, 5, params, NULL);
	if (r == NULL)
		return api_db_failed(c);
	if (PQntuples(r) == 0)
		not_found(c);
	else
		respond_audience(c, 200, r);
	PQclear(r);
}

void api_audiences_delete(struct api_call *c)
{
	const char *params[2] = {c->params[0], c->org_id};
	char sqlstate[6];
	PGresult *r;

	if (api_db(c) == NULL)
		return;
	r = dl_db_exec(c->db, SQL_AUDIENCE_DELETE, 2, params, sqlstate);
	if (r == NULL && strcmp(sqlstate, "23503") != 0)
		return api_db_failed(c);
	if (r != NULL && strcmp(PQcmdTuples(r), "1") == 0) {
		PQclear(r);
		dl_log_kv(DL_INFO, "audience deleted", "request_id", c->req->request_id, "audience_id",
			  c->params[0], NULL);
		return dl_http_json(c->resp, 204, NULL);
	}
	PQclear(r);
	/* Not there, or in use (a campaign made meanwhile shows as a foreign-key violation). */
	r = dl_db_exec(c->db, SQL_AUDIENCE_USER, 2, params, NULL);
	if (r == NULL)
		return api_db_failed(c);
	if (PQntuples(r) == 0)
		not_found(c);
	else if (PQgetisnull(r, 0, 0))
		dl_http_error(c->resp, 409, "audience %s changed while being deleted; try again", c->params[0]);
	else
		dl_http_error(c->resp, 409,
			      "audience %s is used by campaign %s (%s); an audience a campaign refers to "
			      "cannot be deleted",
			      c->params[0], PQgetvalue(r, 0, 0), PQgetvalue(r, 0, 1));
	PQclear(r);
}

/* Checks the body {contactIds: [1..1000 contact ids]} and writes the ids as
 * a text[] literal for unnest (caller frees *out). Answers 400 itself. */
static bool contact_ids(struct api_call *c, char **out)
{
	char err[256], *lit = NULL;
	size_t litlen = 0;
	json_t *ids, *v;
	size_t i;
	FILE *f;

	if (!api_check_fields(c->body, api_contact_ids_fields, API_CONTACT_IDS_NFIELDS, err, sizeof(err))) {
		api_bad_request(c, err);
		return false;
	}
	ids = json_object_get(c->body, "contactIds");
	json_array_foreach(ids, i, v) {
		const char *s = json_string_value(v);
		size_t n = s ? strlen(s) : 0;

		/* Ids are [A-Za-z0-9_-]: they need no escaping in the literal and are safe to echo. */
		if (n == 0 || n > CONTACT_ID_MAX || strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
							   "0123456789_-") != n) {
			dl_http_error(c->resp, 400, "contactIds[%zu] must be a contact id such as ct_...", i);
			return false;
		}
	}
	f = open_memstream(&lit, &litlen);
	if (f == NULL) {
		dl_http_error(c->resp, 500, "internal error; request id %s", c->req->request_id);
		return false;
	}
	fputc('{', f);
	json_array_foreach(ids, i, v)
		fprintf(f, "%s\"%s\"", i ? "," : "", json_string_value(v));
	fputc('}', f);
	if (fclose(f) != 0) {
		free(lit);
		dl_http_error(c->resp, 500, "internal error; request id %s", c->req->request_id);
		return false;
	}
	*out = lit;
	return true;
}

/* Runs a membership change: locks the audience, runs change (which answers
 * errors itself and returns the rows it changed, or -1), then answers
 * {<what>: N, contactCount} from the counter the triggers keep. */
static void change_members(struct api_call *c, const char *what,
			   long long (*change)(struct api_call *c, const char *ids))
{
	const char *params[2] = {c->params[0], c->org_id};
	char *ids = NULL;
	long long n;
	PGresult *r = NULL;

	if (!contact_ids(c, &ids))
		return;
	if (api_db(c) == NULL)
		goto out;
	if (dl_db_cmd(c->db, "BEGIN") < 0) {
		api_db_failed(c);
		goto out;
	}
	r = dl_db_exec(c->db, SQL_AUDIENCE_LOCK, 2, params, NULL);
	if (r == NULL) {
		api_db_failed(c);
		goto out;
	}
	if (PQntuples(r) == 0) {
		not_found(c);
		goto out;
	}
	PQclear(r);
	r = NULL;
	n = change(c, ids);
	if (n < 0)
		goto out;
	r = dl_db_exec(c->db, SQL_AUDIENCE_CONTACT_COUNT, 1, params, NULL);
	if (r == NULL || dl_db_cmd(c->db, "COMMIT") < 0) {
		api_db_failed(c);
		goto out;
	}
	dl_http_json(c->resp, 200,
		     json_pack("{s:I, s:I}", what, (json_int_t)n, "contactCount",
			       (json_int_t)atoll(PQgetvalue(r, 0, 0))));
out:
	/* A transaction left open is rolled back when the connection goes back to the pool. */
	PQclear(r);
	free(ids);
}

/* Adds ids unless one is not a contact of the organization (400, nothing added). */
static long long add_members(struct api_call *c, const char *ids)
{
	const char *params[2] = {ids, c->org_id};
	char sqlstate[6];
	long long n;
	PGresult *r;

	r = dl_db_exec(c->db, SQL_CONTACT_FIRST_UNKNOWN, 2, params, NULL);
	if (r == NULL) {
		api_db_failed(c);
		return -1;
	}
	if (PQntuples(r) > 0) {
		dl_http_error(c->resp, 400, "contactIds[%s]: contact %s does not exist", PQgetvalue(r, 0, 0),
			      PQgetvalue(r, 0, 1));
		PQclear(r);
		return -1;
	}
	PQclear(r);
	params[0] = c->params[0];
	params[1] = ids;
	r = dl_db_exec(c->db, SQL_MEMBERS_ADD, 2, params, sqlstate);
	if (r == NULL) {
		/* A contact deleted between the check and the insert. */
		if (!strcmp(sqlstate, "23503"))
			dl_http_error(c->resp, 409, "a contact was deleted while being added; try again");
		else
			api_db_failed(c);
		return -1;
	}
	n = atoll(PQcmdTuples(r));
	PQclear(r);
	return n;
}

static long long remove_members(struct api_call *c, const char *ids)
{
	const char *params[2] = {c->params[0], ids};
	long long n;
	PGresult *r;

	r = dl_db_exec(c->db, SQL_MEMBERS_REMOVE, 2, params, NULL);
	if (r == NULL) {
		api_db_failed(c);
		return -1;
	}
	n = atoll(PQcmdTuples(r));
	PQclear(r);
	return n;
}

void api_audiences_add_contacts(struct api_call *c)
{
	change_members(c, "added", add_members);
}

void api_audiences_remove_contacts(struct api_call *c)
{
	change_members(c, "removed", remove_members);
}

void api_audiences_list_contacts(struct api_call *c)
{
	char err[256], lim[16], off[24];
	const char *params[3] = {c->params[0], c->org_id, NULL};
	long page, limit;
	long long total;
	PGresult *r;

	if (!api_parse_paging(dl_http_query(c->req, "page"), dl_http_query(c->req, "limit"), &page, &limit,
			      err, sizeof(err)))
		return api_bad_request(c, err);
	if (api_db(c) == NULL)
		return;
	/* The total is the kept counter: no count over a large audience. */
	r = dl_db_exec(c->db, SQL_AUDIENCE_TOTAL, 2, params, NULL);
	if (r == NULL)
		return api_db_failed(c);
	if (PQntuples(r) == 0) {
		PQclear(r);
		return not_found(c);
	}
	total = atoll(PQgetvalue(r, 0, 0));
	PQclear(r);
	snprintf(lim, sizeof(lim), "%ld", limit);
	snprintf(off, sizeof(off), "%ld", (page - 1) * limit);
	params[1] = lim;
	params[2] = off;
	r = dl_db_exec(c->db, SQL_MEMBERS_LIST, 3, params, NULL);
	if (r == NULL)
		return api_db_failed(c);
	dl_http_json(c->resp, 200,
		     api_list(api_rows_json(r, contact_json, NCOLS(contact_json)), total, page, limit));
	PQclear(r);
}
