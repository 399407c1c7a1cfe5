/* /v1/contacts: an organization's contacts, unique by phone number, and the
 * set-based bulk upsert. api_contact_validate is shared with the import
 * processor. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "dl_log.h"

#define CONTACT_COLS \
	"id, phone_number, name, language, metadata, " API_ISO_UTC("created_at") ", " API_ISO_UTC("updated_at")

static const char *const contact_json[] = {
	"id:s", "phoneNumber:s", "name:s", "language:s", "metadata:j", "createdAt:s", "updatedAt:s",
};

static const char SQL_CONTACT_GET[] =
	"SELECT " CONTACT_COLS " FROM contacts WHERE id = $1 AND organization_id = $2";
static const char SQL_CONTACT_LIST[] =
	"SELECT " CONTACT_COLS ", count(*) OVER () FROM contacts WHERE organization_id = $1"
	" AND ($2::text IS NULL OR strpos(lower(coalesce(name, '')), lower($2)) > 0"
	" OR strpos(phone_number, $2) > 0)"
	" ORDER BY created_at DESC, id DESC LIMIT $3 OFFSET $4";
static const char SQL_CONTACT_COUNT[] =
	"SELECT count(*) FROM contacts WHERE organization_id = $1"
	" AND ($2::text IS NULL OR strpos(lower(coalesce(name, '')), lower($2)) > 0"
	" OR strpos(phone_number, $2) > 0)";
static const char SQL_CONTACT_INSERT[] =
	"INSERT INTO contacts (id, organization_id, phone_number, name, language, metadata)"
	" VALUES ($1, $2, $3, $4, $5, coalesce($6::jsonb, '{}')) RETURNING " CONTACT_COLS;
/* $4 and $6 say whether name and language were given (null included). */
static const char SQL_CONTACT_UPDATE[] =
	"UPDATE contacts SET phone_number = coalesce($3, phone_number),"
	" name = CASE WHEN $4::boolean THEN $5 ELSE name END,"
	" language = CASE WHEN $6::boolean THEN $7 ELSE language END,"
	" metadata = coalesce($8::jsonb, metadata), updated_at = now()"
	" WHERE id = $1 AND organization_id = $2 RETURNING " CONTACT_COLS;
static const char SQL_CONTACT_DELETE[] = "DELETE FROM contacts WHERE id = $1 AND organization_id = $2";
/* Bulk upsert in one statement: $1 organization, $2 the validated items (a
 * JSON array), $3 fresh ids, one per item. Existing numbers are updated with
 * the fields the item gives; the others are inserted. A number inserted
 * concurrently makes the INSERT fail with a unique violation: the caller
 * retries, and the next snapshot sees that row as existing. */
static const char SQL_CONTACT_BULK[] =
	"WITH input AS ("
	"  SELECT e.ord, e.item->>'phoneNumber' AS phone, e.item, e.id"
	"  FROM ROWS FROM (jsonb_array_elements($2::jsonb), unnest($3::text[])) WITH ORDINALITY"
	"       AS e(item, id, ord)"
	"), upd AS ("
	"  UPDATE contacts c SET"
	"   name = CASE WHEN i.item ? 'name' THEN i.item->>'name' ELSE c.name END,"
	"   language = CASE WHEN i.item ? 'language' THEN i.item->>'language' ELSE c.language END,"
	"   metadata = CASE WHEN i.item ? 'metadata' THEN i.item->'metadata' ELSE c.metadata END,"
	"   updated_at = now()"
	"  FROM input i WHERE c.organization_id = $1 AND c.phone_number = i.phone"
	"  RETURNING c.id, c.phone_number, c.name, c.language, c.metadata, c.created_at, c.updated_at"
	"), ins AS ("
	"  INSERT INTO contacts (id, organization_id, phone_number, name, language, metadata)"
	"  SELECT i.id, $1, i.phone, i.item->>'name', i.item->>'language',"
	"         coalesce(i.item->'metadata', '{}')"
	"  FROM input i WHERE NOT EXISTS (SELECT 1 FROM upd u WHERE u.phone_number = i.phone)"
	"  ORDER BY i.ord"
	"  RETURNING id, phone_number, name, language, metadata, created_at, updated_at"
	"), res AS ("
	"  SELECT *, false AS inserted FROM upd UNION ALL SELECT *, true FROM ins"
	")"
	" SELECT r.id, r.phone_number, r.name, r.language, r.metadata, " API_ISO_UTC("r.created_at") ","
	" " API_ISO_UTC("r.updated_at") ", r.inserted"
	" FROM input i JOIN res r ON r.phone_number = i.phone ORDER BY i.ord";

#define NCOLS(a) ((int)DL_ARRAY_LEN(a))
#define BULK_MAX 1000
#define BULK_TRIES 3

/* ---------------------------------------------------------------- validation */

static const struct api_field contact_fields[] = {
	{"phoneNumber", API_F_STRING, true, false, 1, 16},
	{"name", API_F_STRING, false, true, 0, 200},
	{"language", API_F_STRING, false, true, 1, 35},
	{"metadata", API_F_OBJECT, false, false, 0, 0},
};

static bool is_contact_field(const char *key)
{
	for (size_t i = 0; i < DL_ARRAY_LEN(contact_fields); i++)
		if (!strcmp(contact_fields[i].name, key))
			return true;
	return false;
}

static bool language_valid(const char *s)
{
	for (; *s; s++)
		if (!((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') ||
		      *s == '-'))
			return false;
	return true;
}

/* Checks one present, non-null value of field f; label names it in messages. */
static bool check_value(json_t *v, const struct api_field *f, const char *label, char *err, size_t errlen)
{
	const char *s;
	long n;

	if (f->type == API_F_OBJECT) {
		if (!json_is_object(v)) {
			snprintf(err, errlen, "%s must be an object", label);
			return false;
		}
		return api_check_metadata(v, label, err, errlen);
	}
	if (!json_is_string(v)) {
		snprintf(err, errlen, "%s must be a string%s", label, f->nullable ? " or null" : "");
		return false;
	}
	s = json_string_value(v);
	n = dl_utf8_len(s);
	if (n < 0 || strlen(s) != json_string_length(v)) {
		snprintf(err, errlen, "%s must be valid text without NUL characters", label);
		return false;
	}
	if (!strcmp(f->name, "phoneNumber")) {
		if (n > f->max || !dl_phone_valid(s)) {
			snprintf(err, errlen,
				 "%s must be an E.164 number: + then 8 to 15 digits, the first not 0", label);
			return false;
		}
		return true;
	}
	if (n < f->min || n > f->max) {
		if (f->min > 0)
			snprintf(err, errlen, "%s must be %ld to %ld characters long", label, f->min, f->max);
		else
			snprintf(err, errlen, "%s must be at most %ld characters long", label, f->max);
		return false;
	}
	if (!strcmp(f->name, "language") && !language_valid(s)) {
		snprintf(err, errlen, "%s must be a language tag of letters, digits and '-' such as en-US",
			 label);
		return false;
	}
	return true;
}

bool api_contact_validate(json_t *obj, bool partial, const char *prefix, char *err, size_t errlen)
{
	bool named = prefix != NULL && *prefix;
	const char *key;
	json_t *v;

	if (!json_is_object(obj)) {
		if (named)
			snprintf(err, errlen, "%s: must be an object", prefix);
		else
			snprintf(err, errlen, "request body must be a JSON object");
		return false;
	}
	json_object_foreach(obj, key, v) {
		char shown[65];

		if (is_contact_field(key))
			continue;
		/* Echo at most a short, printable piece of the unknown name, cut
		 * between characters so the message stays UTF-8. */
		snprintf(shown, sizeof(shown), "%s", key);
		dl_utf8_trim(shown);
		for (char *p = shown; *p; p++)
			if ((unsigned char)*p < 0x20 || *p == '"' || *p == '\\')
				*p = '?';
		snprintf(err, errlen, "%s%sunknown field \"%s\"", named ? prefix : "", named ? ": " : "", shown);
		return false;
	}
	for (size_t i = 0; i < DL_ARRAY_LEN(contact_fields); i++) {
		const struct api_field *f = &contact_fields[i];
		char label[96];

		/* "phoneNumber", or "contacts[3].phoneNumber:" inside a list. */
		if (named)
			snprintf(label, sizeof(label), "%s.%s:", prefix, f->name);
		else
			snprintf(label, sizeof(label), "%s", f->name);
		v = json_object_get(obj, f->name);
		if (v == NULL) {
			if (f->required && !partial) {
				snprintf(err, errlen, "%s is required", label);
				return false;
			}
			continue;
		}
		if (json_is_null(v)) {
			if (f->nullable)
				continue;
			snprintf(err, errlen, "%s must not be null", label);
			return false;
		}
		if (!check_value(v, f, label, err, errlen))
			return false;
	}
	return true;
}

/* ---------------------------------------------------------------- handlers */

static void not_found(struct api_call *c)
{
	dl_http_error(c->resp, 404, "contact %s not found", c->params[0]);
}

static void duplicate(struct api_call *c, const char *phone)
{
	dl_http_error(c->resp, 409, "a contact with phoneNumber %s already exists", phone);
}

static void respond_contact(struct api_call *c, int status, PGresult *r)
{
	dl_http_json(c->resp, status, api_row_json(r, 0, contact_json, NCOLS(contact_json)));
}

void api_contacts_get(struct api_call *c)
{
	api_respond_one(c, SQL_CONTACT_GET, contact_json, NCOLS(contact_json), "contact");
}

void api_contacts_list(struct api_call *c)
{
	const char *search = dl_http_query(c->req, "search");
	const char *params[4] = {c->org_id, search};

	if (search != NULL && (dl_utf8_len(search) < 0 || dl_utf8_len(search) > 200))
		return api_bad_request(c, "search must be valid text of at most 200 characters");
	if (search != NULL && !*search)
		params[1] = NULL;
	api_respond_page(c, SQL_CONTACT_LIST, SQL_CONTACT_COUNT, params, 2, contact_json, NCOLS(contact_json));
}

void api_contacts_create(struct api_call *c)
{
	char err[256], id[DL_ID_MAX], state[6];
	const char *params[6];
	json_t *meta = json_object_get(c->body, "metadata");
	char *meta_text = NULL; /* owned */
	PGresult *r = NULL;

	if (!api_contact_validate(c->body, false, NULL, err, sizeof(err))) {
		api_bad_request(c, err);
		goto out;
	}
	if (meta != NULL && (meta_text = json_dumps(meta, JSON_COMPACT)) == NULL) {
		dl_http_error(c->resp, 500, "internal error; request id %s", c->req->request_id);
		goto out;
	}
	if (api_db(c) == NULL)
		goto out;
	dl_id_new("ct", id);
	params[0] = id;
	params[1] = c->org_id;
	params[2] = api_str(c->body, "phoneNumber");
	params[3] = api_str(c->body, "name");
	params[4] = api_str(c->body, "language");
	params[5] = meta_text;
	r = dl_db_exec(c->db, SQL_CONTACT_INSERT, 6, params, state);
	if (r == NULL) {
		if (api_is_unique_violation(state))
			duplicate(c, params[2]);
		else
			api_db_failed(c);
		goto out;
	}
	respond_contact(c, 201, r);
out:
	PQclear(r);
	free(meta_text);
}

void api_contacts_update(struct api_call *c)
{
	char err[256], state[6];
	const char *params[8] = {c->params[0], c->org_id};
	json_t *meta = json_object_get(c->body, "metadata");
	char *meta_text = NULL; /* owned */
	PGresult *r = NULL;

	if (!api_contact_validate(c->body, true, NULL, err, sizeof(err))) {
		api_bad_request(c, err);
		goto out;
	}
	if (meta != NULL && (meta_text = json_dumps(meta, JSON_COMPACT)) == NULL) {
		dl_http_error(c->resp, 500, "internal error; request id %s", c->req->request_id);
		goto out;
	}
	if (api_db(c) == NULL)
		goto out;
	params[2] = api_str(c->body, "phoneNumber");
	params[3] = json_object_get(c->body, "name") != NULL ? "t" : "f";
	params[4] = api_str(c->body, "name");
	params[5] = json_object_get(c->body, "language") != NULL ? "t" : "f";
	params[6] = api_str(c->body, "language");
	params[7] = meta_text;
	r = dl_db_exec(c->db, SQL_CONTACT_UPDATE, 8, params, state);
	if (r == NULL) {
		if (api_is_unique_violation(state))
			duplicate(c, params[2]);
		else
			api_db_failed(c);
		goto out;
	}
	if (PQntuples(r) == 0)
		not_found(c);
	else
		respond_contact(c, 200, r);
out:
	PQclear(r);
	free(meta_text);
}

void api_contacts_delete(struct api_call *c)
{
	const char *params[2] = {c->params[0], c->org_id};
	PGresult *r;

	if (api_db(c) == NULL)
		return;
	r = dl_db_exec(c->db, SQL_CONTACT_DELETE, 2, params, NULL);
	if (r == NULL)
		return api_db_failed(c);
	if (strcmp(PQcmdTuples(r), "1") == 0)
		dl_http_json(c->resp, 204, NULL);
	else
		not_found(c);
	PQclear(r);
}

/* ---------------------------------------------------------------- bulk */

static const struct api_field bulk_fields[] = {
	{"contacts", API_F_ARRAY, true, false, 1, BULK_MAX},
};

struct phone_ref {
	const char *phone;
	size_t index;
};

static int phone_ref_cmp(const void *a, const void *b)
{
	const struct phone_ref *x = a, *y = b;
	int d = strcmp(x->phone, y->phone);

	if (d != 0)
		return d;
	return x->index < y->index ? -1 : x->index > y->index;
}

/* Validates every item; false with err naming the first bad index, or the
 * first repeated phone number. */
static bool bulk_validate(json_t *items, char *err, size_t errlen)
{
	size_t n = json_array_size(items), i, dup = n, first = 0;
	struct phone_ref refs[BULK_MAX];
	char prefix[32];
	json_t *item;

	json_array_foreach(items, i, item) {
		snprintf(prefix, sizeof(prefix), "contacts[%zu]", i);
		if (!api_contact_validate(item, false, prefix, err, errlen))
			return false;
		refs[i].phone = api_str(item, "phoneNumber");
		refs[i].index = i;
	}
	qsort(refs, n, sizeof(refs[0]), phone_ref_cmp);
	/* Report the repetition that comes first in the request. */
	for (i = 1; i < n; i++)
		if (!strcmp(refs[i].phone, refs[i - 1].phone) && refs[i].index < dup) {
			dup = refs[i].index;
			first = refs[i - 1].index;
		}
	if (dup < n) {
		snprintf(err, errlen,
			 "contacts[%zu].phoneNumber: %s is repeated (also at contacts[%zu]); each number may "
			 "appear once",
			 dup, api_str(json_array_get(items, dup), "phoneNumber"), first);
		return false;
	}
	return true;
}

/* A Postgres array literal of n fresh contact ids (caller frees). */
static char *new_ids(size_t n)
{
	char *out = malloc(n * DL_ID_MAX + 3), *p;
	char id[DL_ID_MAX];

	if (out == NULL)
		return NULL;
	p = out;
	*p++ = '{';
	for (size_t i = 0; i < n; i++) {
		size_t len;

		dl_id_new("ct", id);
		len = strlen(id);
		if (i > 0)
			*p++ = ',';
		memcpy(p, id, len); /* [a-z0-9_]: needs no quoting */
		p += len;
	}
	*p++ = '}';
	*p = '\0';
	return out;
}

void api_contacts_bulk(struct api_call *c)
{
	char err[320], state[6], count[2][24];
	json_t *items = json_object_get(c->body, "contacts");
	char *items_text = NULL, *ids = NULL; /* owned */
	const char *params[3] = {c->org_id, NULL, NULL};
	json_t *data = NULL;
	long long created = 0, updated = 0;
	size_t n;
	PGresult *r = NULL;

	if (!api_check_fields(c->body, bulk_fields, NCOLS(bulk_fields), err, sizeof(err)) ||
	    !bulk_validate(items, err, sizeof(err))) {
		api_bad_request(c, err);
		goto out;
	}
	n = json_array_size(items);
	items_text = json_dumps(items, JSON_COMPACT);
	ids = new_ids(n);
	if (items_text == NULL || ids == NULL) {
		dl_http_error(c->resp, 500, "internal error; request id %s", c->req->request_id);
		goto out;
	}
	params[1] = items_text;
	params[2] = ids;
	if (api_db(c) == NULL)
		goto out;
	for (int attempt = 1;; attempt++) {
		r = dl_db_exec(c->db, SQL_CONTACT_BULK, 3, params, state);
		if (r != NULL)
			break;
		if (attempt < BULK_TRIES && (api_is_unique_violation(state) || dl_db_retryable(state)))
			continue;
		if (api_is_unique_violation(state))
			dl_http_error(c->resp, 409,
				      "another request is writing the same phone numbers; retry this one");
		else
			api_db_failed(c);
		goto out;
	}
	if ((size_t)PQntuples(r) != n) {
		/* Every item is either updated or inserted: anything else is a bug. */
		dl_log_kv(DL_ERROR, "bulk upsert returned a wrong row count", "request_id", c->req->request_id,
			  NULL);
		dl_http_error(c->resp, 500, "internal error; request id %s", c->req->request_id);
		goto out;
	}
	data = json_array();
	if (data == NULL) {
		dl_http_error(c->resp, 500, "internal error; request id %s", c->req->request_id);
		goto out;
	}
	for (int i = 0; i < PQntuples(r); i++) {
		if (PQgetvalue(r, i, NCOLS(contact_json))[0] == 't')
			created++;
		else
			updated++;
		json_array_append_new(data, api_row_json(r, i, contact_json, NCOLS(contact_json)));
	}
	snprintf(count[0], sizeof(count[0]), "%lld", created);
	snprintf(count[1], sizeof(count[1]), "%lld", updated);
	dl_log_kv(DL_INFO, "contacts upserted", "request_id", c->req->request_id, "created", count[0],
		  "updated", count[1], NULL);
	/* json_pack's "o" steals data, also when packing fails. */
	dl_http_json(c->resp, 200,
		     json_pack("{s:I, s:I, s:o}", "created", (json_int_t)created, "updated",
			       (json_int_t)updated, "data", data));
	data = NULL;
out:
	json_decref(data);
	PQclear(r);
	free(items_text);
	free(ids);
}
