/* /v1/dnc: an organization's do-not-call list, keyed by phone number. The
 * scheduler skips listed numbers when it snapshots an audience. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"

#define DNC_COLS "phone_number, reason, " API_ISO_UTC("created_at")

static const char *const dnc_json[] = {"phoneNumber:s", "reason:s", "createdAt:s"};

static const char SQL_DNC_GET[] =
	"SELECT " DNC_COLS " FROM dnc WHERE organization_id = $1 AND phone_number = $2";
static const char SQL_DNC_LIST[] =
	"SELECT " DNC_COLS ", count(*) OVER () FROM dnc WHERE organization_id = $1"
	" ORDER BY created_at DESC, phone_number LIMIT $2 OFFSET $3";
static const char SQL_DNC_COUNT[] = "SELECT count(*) FROM dnc WHERE organization_id = $1";
static const char SQL_DNC_INSERT[] =
	"INSERT INTO dnc (organization_id, phone_number, reason) VALUES ($1, $2, $3)"
	" ON CONFLICT (organization_id, phone_number) DO NOTHING RETURNING " DNC_COLS;
static const char SQL_DNC_DELETE[] = "DELETE FROM dnc WHERE organization_id = $1 AND phone_number = $2";

#define NCOLS(a) ((int)DL_ARRAY_LEN(a))
/* An add that finds the number listed and then gone again tries again. */
#define DNC_ADD_TRIES 3

const struct api_field api_dnc_fields[API_DNC_NFIELDS] = {
	{"phoneNumber", API_F_STRING, true, false, 1, 16},
	{"reason", API_F_STRING, false, true, 0, 200},
};

static const char PHONE_RULE[] = "an E.164 number: + then 8 to 15 digits, the first not 0";

/* Checks the path's phone number; answers 400 itself. */
static bool path_phone(struct api_call *c)
{
	if (dl_phone_valid(c->params[0]))
		return true;
	dl_http_error(c->resp, 400, "the phone number in the path must be %s (write + as %%2B)", PHONE_RULE);
	return false;
}

static void not_listed(struct api_call *c, const char *phone)
{
	dl_http_error(c->resp, 404, "%s is not on the do-not-call list", phone);
}

void api_dnc_list(struct api_call *c)
{
	const char *params[3] = {c->org_id};

	api_respond_page(c, SQL_DNC_LIST, SQL_DNC_COUNT, params, 1, dnc_json, NCOLS(dnc_json));
}

void api_dnc_get(struct api_call *c)
{
	const char *params[2] = {c->org_id, c->params[0]};
	PGresult *r;

	if (!path_phone(c) || api_db(c) == NULL)
		return;
	r = dl_db_exec(c->db, SQL_DNC_GET, 2, params, NULL);
	if (r == NULL)
		return api_db_failed(c);
	if (PQntuples(r) == 0)
		not_listed(c, c->params[0]);
	else
		dl_http_json(c->resp, 200, api_row_json(r, 0, dnc_json, NCOLS(dnc_json)));
	PQclear(r);
}

void api_dnc_add(struct api_call *c)
{
	char err[256];
	const char *params[3] = {c->org_id, NULL, NULL};
	PGresult *r = NULL;

	if (!api_check_fields(c->body, api_dnc_fields, API_DNC_NFIELDS, err, sizeof(err)))
		return api_bad_request(c, err);
	params[1] = api_str(c->body, "phoneNumber");
	params[2] = api_str(c->body, "reason");
	if (!dl_phone_valid(params[1])) {
		dl_http_error(c->resp, 400, "phoneNumber must be %s", PHONE_RULE);
		return;
	}
	if (api_db(c) == NULL)
		return;
	for (int attempt = 1; attempt <= DNC_ADD_TRIES; attempt++) {
		r = dl_db_exec(c->db, SQL_DNC_INSERT, 3, params, NULL);
		if (r == NULL) {
			api_db_failed(c);
			goto out;
		}
		if (PQntuples(r) == 1) {
			dl_http_json(c->resp, 201, api_row_json(r, 0, dnc_json, NCOLS(dnc_json)));
			goto out;
		}
		/* Already listed: answer the entry as it stands. */
		PQclear(r);
		r = dl_db_exec(c->db, SQL_DNC_GET, 2, params, NULL);
		if (r == NULL) {
			api_db_failed(c);
			goto out;
		}
		if (PQntuples(r) == 1) {
			dl_http_json(c->resp, 200, api_row_json(r, 0, dnc_json, NCOLS(dnc_json)));
			goto out;
		}
		PQclear(r);
		r = NULL;
	}
	dl_http_error(c->resp, 409, "%s is being added and removed concurrently; retry", params[1]);
out:
	PQclear(r);
}

void api_dnc_remove(struct api_call *c)
{
	const char *params[2] = {c->org_id, c->params[0]};
	PGresult *r;

	if (!path_phone(c) || api_db(c) == NULL)
		return;
	r = dl_db_exec(c->db, SQL_DNC_DELETE, 2, params, NULL);
	if (r == NULL)
		return api_db_failed(c);
	if (strcmp(PQcmdTuples(r), "1") == 0)
		dl_http_json(c->resp, 204, NULL);
	else
		not_listed(c, c->params[0]);
	PQclear(r);
}
