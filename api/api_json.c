/* Result rows to JSON objects, by a column spec. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "dl_log.h"

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

/* The type OIDs of the columns a binary result may hold (pg_type.dat). */
enum {
	OID_BOOL = 16,
	OID_NAME = 19,
	OID_INT8 = 20,
	OID_INT2 = 21,
	OID_INT4 = 23,
	OID_TEXT = 25,
	OID_JSON = 114,
	OID_BPCHAR = 1042,
	OID_VARCHAR = 1043,
	OID_TIMESTAMPTZ = 1184,
	OID_JSONB = 3802,
};

/* JSON text from the database, as api_row_json gives it: parsed and dumped
 * compact (the database's spacing dropped), null when it does not parse. */
static int write_json_text(struct dl_jw *w, const char *text, size_t len)
{
	json_t *v = json_loadb(text, len, JSON_DECODE_ANY, NULL);
	char *out;

	if (v == NULL) {
		dl_jw_null(w);
		return 0;
	}
	out = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
	json_decref(v);
	if (out == NULL)
		return -ENOMEM;
	dl_jw_raw(w, out, strlen(out));
	free(out);
	return 0;
}

/* One column of a binary result as the JSON type t of its spec. */
static int write_value(struct dl_jw *w, const PGresult *r, int row, int col, char t)
{
	const char *v = PQgetvalue(r, row, col); /* NUL-terminated by libpq, binary too */
	size_t len = (size_t)PQgetlength(r, row, col);
	long long n;

	if (PQgetisnull(r, row, col)) {
		dl_jw_null(w);
		return 0;
	}
	switch (PQftype(r, col)) {
	case OID_INT2:
	case OID_INT4:
	case OID_INT8:
		if (dl_db_bin_int(r, row, col, &n) < 0 || (t != 'i' && t != 's'))
			return -EPROTO;
		if (t == 'i') {
			dl_jw_int(w, n);
		} else {
			char digits[24];

			dl_jw_str(w, digits, (size_t)snprintf(digits, sizeof(digits), "%lld", n));
		}
		return 0;
	case OID_BOOL:
		if (len != 1 || (t != 'b' && t != 's'))
			return -EPROTO;
		if (t == 'b')
			dl_jw_bool(w, v[0] != 0);
		else
			dl_jw_str(w, v[0] ? "t" : "f", 1);
		return 0;
	case OID_TIMESTAMPTZ: {
		uint64_t us = 0;

		if (len != 8 || t != 's')
			return -EPROTO;
		for (size_t i = 0; i < 8; i++)
			us = us << 8 | (unsigned char)v[i];
		dl_jw_pg_time(w, (int64_t)us);
		return 0;
	}
	case OID_JSONB:
		/* A version byte (1) before the text. */
		if (len < 1 || v[0] != 1)
			return -EPROTO;
		v++;
		len--;
		/* fall through */
	case OID_JSON:
	case OID_TEXT:
	case OID_VARCHAR:
	case OID_BPCHAR:
	case OID_NAME:
		switch (t) {
		case 'i': dl_jw_int(w, strtoll(v, NULL, 10)); return 0;
		case 'b': dl_jw_bool(w, v[0] == 't'); return 0;
		case 'j': return write_json_text(w, v, len);
		default: dl_jw_str(w, v, len); return 0;
		}
	default:
		return -EPROTO;
	}
}

/* A column spec taken apart once per answer, not once per row. */
struct colspec {
	const char *name;
	size_t name_len;
	char type;
};

#define API_COLS_MAX 64

static int parse_specs(const char *const *cols, int ncols, struct colspec *out)
{
	if (ncols > API_COLS_MAX)
		return -E2BIG;
	for (int i = 0; i < ncols; i++) {
		const char *colon = strrchr(cols[i], ':');

		out[i].name = cols[i];
		out[i].name_len = colon ? (size_t)(colon - cols[i]) : strlen(cols[i]);
		out[i].type = colon ? colon[1] : 's';
	}
	return 0;
}

static int write_row(struct dl_jw *w, const PGresult *r, int row, const struct colspec *spec, int ncols)
{
	dl_jw_open(w, '{');
	for (int i = 0; i < ncols; i++) {
		int rc;

		dl_jw_key(w, spec[i].name, spec[i].name_len);
		rc = write_value(w, r, row, i, spec[i].type);
		if (rc < 0)
			return rc;
	}
	dl_jw_close(w, '}');
	return 0;
}

int api_row_write(struct dl_jw *w, const PGresult *r, int row, const char *const *cols, int ncols)
{
	struct colspec spec[API_COLS_MAX];
	int rc = parse_specs(cols, ncols, spec);

	return rc < 0 ? rc : write_row(w, r, row, spec, ncols);
}

/* Answers 500 for a result api_row_write could not write. */
static void write_failed(struct api_call *c, int rc)
{
	if (rc != -ENOMEM)
		dl_log_kv(DL_ERROR, "a result does not fit its column specs (type or count)", "request_id",
			  c->req->request_id, "path", c->req->url, NULL);
	dl_http_error(c->resp, 500, "internal error; request id %s", c->req->request_id);
}

/* Answers the list envelope (api_list's) around the rows of binary r. */
static void respond_rows(struct api_call *c, const PGresult *r, const char *const *cols, int ncols, long long total,
			 long page, long limit)
{
	struct colspec spec[API_COLS_MAX];
	struct dl_jw w;
	char *body;
	size_t len;
	int rc = parse_specs(cols, ncols, spec);

	if (rc < 0)
		return write_failed(c, rc);
	dl_jw_init(&w, 256 + (size_t)PQntuples(r) * (size_t)ncols * 40);
	dl_jw_open(&w, '{');
	dl_jw_key(&w, "data", 4);
	dl_jw_open(&w, '[');
	for (int i = 0; i < PQntuples(r) && rc == 0; i++)
		rc = write_row(&w, r, i, spec, ncols);
	if (rc < 0) {
		dl_jw_free(&w);
		return write_failed(c, rc);
	}
	dl_jw_close(&w, ']');
	dl_jw_key(&w, "total", 5);
	dl_jw_int(&w, total);
	dl_jw_key(&w, "page", 4);
	dl_jw_int(&w, (int)page);
	dl_jw_key(&w, "limit", 5);
	dl_jw_int(&w, (int)limit);
	dl_jw_key(&w, "totalPages", 10);
	dl_jw_int(&w, (total + limit - 1) / limit);
	dl_jw_close(&w, '}');
	body = dl_jw_take(&w, &len);
	if (body == NULL)
		return dl_http_error(c->resp, 500, "out of memory");
	dl_http_json_take(c->resp, 200, body, len);
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
	r = dl_db_exec_prepared_bin(c->db, sql_list, n + 2, params, NULL);
	if (r == NULL)
		return api_db_failed(c);
	if (PQntuples(r) > 0) {
		if (PQnfields(r) != ncols + 1 || PQgetisnull(r, 0, ncols) ||
		    dl_db_bin_int(r, 0, ncols, &total) < 0) {
			PQclear(r);
			return write_failed(c, -EPROTO);
		}
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
	respond_rows(c, r, cols, ncols, total, page, limit);
	PQclear(r);
}

void api_respond_one(struct api_call *c, const char *sql, const char *const *cols, int ncols, const char *what)
{
	const char *params[2] = {c->params[0], c->org_id};
	PGresult *r;
	struct dl_jw w;
	char *body;
	size_t len;
	int rc;

	if (api_db(c) == NULL)
		return;
	r = dl_db_exec_prepared_bin(c->db, sql, 2, params, NULL);
	if (r == NULL)
		return api_db_failed(c);
	if (PQntuples(r) == 0) {
		dl_http_error(c->resp, 404, "%s %s not found", what, c->params[0]);
		PQclear(r);
		return;
	}
	dl_jw_init(&w, 128 + (size_t)ncols * 40);
	rc = api_row_write(&w, r, 0, cols, ncols);
	PQclear(r);
	if (rc < 0) {
		dl_jw_free(&w);
		return write_failed(c, rc);
	}
	body = dl_jw_take(&w, &len);
	if (body == NULL)
		return dl_http_error(c->resp, 500, "out of memory");
	dl_http_json_take(c->resp, 200, body, len);
}
