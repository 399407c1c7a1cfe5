/* /v1/flows: read-only; flows are created by `dialerctl flow create`. */
#include <stdio.h>
#include <stdlib.h>

#include "api.h"

#define FLOW_COLS "id, name, voice_url, " API_ISO_UTC("created_at")

static const char *const flow_json[] = {"id:s", "name:s", "voiceUrl:s", "createdAt:s"};

static const char SQL_FLOW_GET[] = "SELECT " FLOW_COLS " FROM flows WHERE id = $1 AND organization_id = $2";
static const char SQL_FLOW_LIST[] =
	"SELECT " FLOW_COLS ", count(*) OVER () FROM flows WHERE organization_id = $1"
	" ORDER BY created_at DESC, id DESC LIMIT $2 OFFSET $3";
static const char SQL_FLOW_COUNT[] = "SELECT count(*) FROM flows WHERE organization_id = $1";

#define NCOLS(a) ((int)DL_ARRAY_LEN(a))

void api_flows_list(struct api_call *c)
{
	const char *params[3] = {c->org_id};

	api_respond_page(c, SQL_FLOW_LIST, SQL_FLOW_COUNT, params, 1, flow_json, NCOLS(flow_json));
}

void api_flows_get(struct api_call *c)
{
	api_respond_one(c, SQL_FLOW_GET, flow_json, NCOLS(flow_json), "flow");
}
