/* Result rows to JSON objects, by a column spec. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"

json_t *api_row_json(PGresult *r, int row, const char *const *cols, int ncols)
{
	json_t *o = json_object();

	for (int i = 0; i < ncols && o; i++) {
		const char *spec = cols[i], *colon = strrchr(spec, ':');
		char name[64];
		json_t *v;
		size_t n = colon ? (size_t)(colon - spec) : strlen(spec);
		char t = colon ? colon[1] : 's';

		if (n >= sizeof(name))
			n = sizeof(name) - 1;
		memcpy(name, spec, n);
		name[n] = '\0';
		if (PQgetisnull(r, row, i)) {
			v = json_null();
		} else {
			const char *text = PQgetvalue(r, row, i);

			switch (t) {
			case 'i':
				v = json_integer(strtoll(text, NULL, 10));
				break;
			case 'b':
				v = json_boolean(text[0] == 't');
				break;
			case 'j':
				v = json_loads(text, JSON_DECODE_ANY, NULL);
				if (v == NULL)
					v = json_null();
				break;
			default:
				v = json_string(text);
			}
		}
		json_object_set_new(o, name, v);
	}
	return o;
}

json_t *api_rows_json(PGresult *r, const char *const *cols, int ncols)
{
	json_t *a = json_array();

	for (int i = 0; i < PQntuples(r) && a; i++)
		json_array_append_new(a, api_row_json(r, i, cols, ncols));
	return a;
}

bool api_is_unique_violation(const char *sqlstate)
{
	return strcmp(sqlstate, "23505") == 0;
}

void api_respond_page(struct api_call *c, const char *sql_list, const char *sql_count, const char **params, int n,
		      const char *const *cols, int ncols)
{
	char err[256], lim[16], off[24];
	long page, limit;
	long long total = 0;
	PGresult *r;

	if (!api_parse_paging(dl_http_query(c->req, "page"), dl_http_query(c->req, "limit"), &page, &limit, err,
			      sizeof(err)))
		return api_bad_request(c, err);
	snprintf(lim, sizeof(lim), "%ld", limit);
	snprintf(off, sizeof(off), "%ld", (page - 1) * limit);
	params[n] = lim;
	params[n + 1] = off;
	if (api_db(c) == NULL)
		return;
	r = dl_db_exec_prepared(c->db, sql_list, n + 2, params, NULL);
	if (r == NULL)
		return api_db_failed(c);
	if (PQntuples(r) > 0) {
		total = atoll(PQgetvalue(r, 0, ncols));
	} else if (page > 1) {
		/* Past the last page the window count is gone: count alone. */
		PQclear(r);
		r = dl_db_exec(c->db, sql_count, n, params, NULL);
		if (r == NULL)
			return api_db_failed(c);
		total = atoll(PQgetvalue(r, 0, 0));
		PQclear(r);
		dl_http_json(c->resp, 200, api_list(json_array(), total, page, limit));
		return;
	}
	dl_http_json(c->resp, 200, api_list(api_rows_json(r, cols, ncols), total, page, limit));
	PQclear(r);
}

void api_respond_one(struct api_call *c, const char *sql, const char *const *cols, int ncols, const char *what)
{
	const char *params[2] = {c->params[0], c->org_id};
	PGresult *r;

	if (api_db(c) == NULL)
		return;
	r = dl_db_exec_prepared(c->db, sql, 2, params, NULL);
	if (r == NULL)
		return api_db_failed(c);
	if (PQntuples(r) == 0)
		dl_http_error(c->resp, 404, "%s %s not found", what, c->params[0]);
	else
		dl_http_json(c->resp, 200, api_row_json(r, 0, cols, ncols));
	PQclear(r);
}
