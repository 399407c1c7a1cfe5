/* /v1/flows: read-only; flows are created by `dialerctl flow create`. */
#include <stdio.h>
#include <stdlib.h>

#include "api.h"

#define FLOW_COLS "id, name, voice_url, iso_utc(created_at)"

static const char *const flow_json[] = {"id:s", "name:s", "voiceUrl:s", "createdAt:s"};

static const char SQL_FLOW_GET[] = "SELECT " FLOW_COLS " FROM flows WHERE id = $1 AND organization_id = $2";
static const char SQL_FLOW_LIST[] =
	"SELECT " FLOW_COLS ", count(*) OVER () FROM flows WHERE organization_id = $1"
	" ORDER BY created_at DESC, id DESC LIMIT $2 OFFSET $3";
static const char SQL_FLOW_COUNT[] = "SELECT count(*) FROM flows WHERE organization_id = $1";

#define NCOLS(a) ((int)DL_ARRAY_LEN(a))

void api_flows_list(struct api_call *c)
{
	char err[256], lim[16], off[24];
	const char *params[3] = {c->org_id, lim, off};
	long page, limit;
	long long total = 0;
	PGresult *r;

	if (!api_parse_paging(dl_http_query(c->req, "page"), dl_http_query(c->req, "limit"), &page, &limit,
			      err, sizeof(err)))
		return api_bad_request(c, err);
	snprintf(lim, sizeof(lim), "%ld", limit);
	snprintf(off, sizeof(off), "%ld", (page - 1) * limit);
	if (api_db(c) == NULL)
		return;
	r = dl_db_exec(c->db, SQL_FLOW_LIST, 3, params, NULL);
	if (r == NULL)
		return api_db_failed(c);
	if (PQntuples(r) > 0) {
		total = atoll(PQgetvalue(r, 0, NCOLS(flow_json)));
	} else if (page > 1) {
		/* Past the last page the window count is gone: count alone. */
		PQclear(r);
		r = dl_db_exec(c->db, SQL_FLOW_COUNT, 1, params, NULL);
		if (r == NULL)
			return api_db_failed(c);
		total = atoll(PQgetvalue(r, 0, 0));
		PQclear(r);
		dl_http_json(c->resp, 200, api_list(json_array(), total, page, limit));
		return;
	}
	dl_http_json(c->resp, 200, api_list(api_rows_json(r, flow_json, NCOLS(flow_json)), total, page, limit));
	PQclear(r);
}

void api_flows_get(struct api_call *c)
{
	const char *params[2] = {c->params[0], c->org_id};
	PGresult *r;

	if (api_db(c) == NULL)
		return;
	r = dl_db_exec(c->db, SQL_FLOW_GET, 2, params, NULL);
	if (r == NULL)
		return api_db_failed(c);
	if (PQntuples(r) == 0)
		dl_http_error(c->resp, 404, "flow %s not found", c->params[0]);
	else
		dl_http_json(c->resp, 200, api_row_json(r, 0, flow_json, NCOLS(flow_json)));
	PQclear(r);
}
