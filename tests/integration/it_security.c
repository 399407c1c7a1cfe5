/* Hostile input and hostile callers on every endpoint of the real API:
 * malformed, wrong-typed, oversized, deeply nested (to 100,000 levels) and
 * non-UTF-8 bodies, queries and headers get the right 4xx with the error shape and change nothing; valid
 * multi-byte text round-trips; SQL injection in every string field, query
 * parameter and path id changes nothing and leaks nothing; another
 * organization's ids are a 404 on every route and never show in a list; API
 * keys are stored hashed, refused within 1 s of their revocation and never
 * logged. */
#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "dl_util.h"
#include "it_lib.h"

#define BULK_PER_KEY 9 /* the bulk class allows 10 a minute per key */
#define KEY_TTL_MS 1000  /* a revoked key is refused at the latest this long after */

/* ------------------------------------------------------------ helpers */

/* The first column of the first row as text (caller frees; "" for none or NULL). */
static char *db_text(const char *sql, const char *p1)
{
	const char *params[1] = {p1};
	PGresult *r = PQexecParams(it_db(), sql, p1 ? 1 : 0, NULL, params, NULL, NULL, 0);
	char *out;

	if (PQresultStatus(r) != PGRES_TUPLES_OK)
		fail_msg("query failed: %s: %s", sql, PQresultErrorMessage(r));
	out = strdup(PQntuples(r) > 0 && !PQgetisnull(r, 0, 0) ? PQgetvalue(r, 0, 0) : "");
	PQclear(r);
	return out;
}

/* A digest of every row an organization owns (its keys aside: tests make
 * keys): equal digests mean nothing of it changed. */
static char *fingerprint(const char *org)
{
	static const char sql[] =
		"SELECT md5(concat_ws('|',"
		" (SELECT t::text FROM organizations t WHERE id = $1),"
		" (SELECT string_agg(t::text, ',' ORDER BY t.id) FROM campaigns t WHERE organization_id = $1),"
		" (SELECT string_agg(t::text, ',' ORDER BY t.id) FROM contacts t WHERE organization_id = $1),"
		" (SELECT string_agg(t::text, ',' ORDER BY t.id) FROM audiences t WHERE organization_id = $1),"
		" (SELECT string_agg(ac::text, ',' ORDER BY ac.audience_id, ac.contact_id)"
		"   FROM audience_contacts ac JOIN audiences a ON a.id = ac.audience_id WHERE a.organization_id = $1),"
		" (SELECT string_agg(t::text, ',' ORDER BY t.id) FROM imports t WHERE organization_id = $1),"
		" (SELECT string_agg(t::text, ',' ORDER BY t.phone_number) FROM dnc t WHERE organization_id = $1),"
		" (SELECT string_agg(t::text, ',' ORDER BY t.id) FROM flows t WHERE organization_id = $1),"
		" (SELECT string_agg(t::text, ',' ORDER BY t.id) FROM calls t"
		"   JOIN campaigns c ON c.id = t.campaign_id WHERE c.organization_id = $1),"
		" (SELECT string_agg(t::text, ',' ORDER BY t.idem_key) FROM idempotency_keys t"
		"   WHERE organization_id = $1)))";

	return db_text(sql, org);
}

/* n copies of unit joined by sep (caller frees). */
static char *rep(const char *unit, int n, const char *sep)
{
	size_t ul = strlen(unit), sl = strlen(sep);
	char *out = malloc((ul + sl) * (size_t)n + 1), *p = out;

	assert_non_null(out);
	for (int i = 0; i < n; i++) {
		if (i > 0) {
			memcpy(p, sep, sl);
			p += sl;
		}
		memcpy(p, unit, ul);
		p += ul;
	}
	*p = '\0';
	return out;
}

/* tmpl with its "%s" (if any) replaced by value (caller frees). */
static char *subst(const char *tmpl, const char *value)
{
	const char *at = strstr(tmpl, "%s");
	char *out = NULL;

	if (at == NULL) {
		out = strdup(tmpl);
		assert_non_null(out);
		return out;
	}
	if (asprintf(&out, "%.*s%s%s", (int)(at - tmpl), tmpl, value, at + 2) < 0)
		fail_msg("out of memory");
	return out;
}

/* Writes tmpl with its "%s" replaced by value into out. */
static void subst_to(char *out, size_t len, const char *tmpl, const char *value)
{
	char *s = subst(tmpl, value);

	snprintf(out, len, "%s", s);
	free(s);
}

/* fmt with its one %s replaced by n copies of unit (caller frees). */
static char *fill(const char *fmt, const char *unit, int n, const char *sep)
{
	char *r = rep(unit, n, sep), *out = subst(fmt, r);

	free(r);
	return out;
}

/* s percent-encoded for a URL path segment or query value (caller frees). */
static char *url_escape(const char *s)
{
	static const char hex[] = "0123456789ABCDEF";
	char *out = malloc(strlen(s) * 3 + 1), *p = out;

	assert_non_null(out);
	for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
		if ((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') || *c == '-' ||
		    *c == '_' || *c == '.' || *c == '~') {
			*p++ = (char)*c;
		} else {
			*p++ = '%';
			*p++ = hex[*c >> 4];
			*p++ = hex[*c & 15];
		}
	}
	*p = '\0';
	return out;
}

/* A JSON body from a json_pack format (caller frees). */
static char *jbody(const char *fmt, ...)
{
	va_list ap;
	json_t *j;
	char *s;

	va_start(ap, fmt);
	j = json_vpack_ex(NULL, 0, fmt, ap);
	va_end(ap);
	assert_non_null(j);
	s = json_dumps(j, JSON_COMPACT);
	json_decref(j);
	assert_non_null(s);
	return s;
}

/* A new API key of org (the bulk class is limited per key). */
static void new_key(const char *org, char key[64], char id[64])
{
	char *out;
	json_t *j;
	int code;

	out = it_ctl(&code, "apikey", "create", "--org", org, NULL);
	assert_int_equal(code, 0);
	j = json_loads(out, 0, NULL);
	assert_non_null(j);
	snprintf(key, 64, "%s", json_string_value(json_object_get(j, "apiKey")));
	if (id != NULL)
		snprintf(id, 64, "%s", json_string_value(json_object_get(j, "apiKeyId")));
	json_decref(j);
	free(out);
}

/* Keys for an organization's bulk calls: a fresh one every BULK_PER_KEY calls. */
struct keyring {
	const struct it_org *org;
	char key[64];
	int uses;
};

static const char *key_for(struct keyring *k, bool bulk)
{
	if (!bulk)
		return k->org->key;
	if (k->key[0] == '\0' || k->uses >= BULK_PER_KEY) {
		new_key(k->org->id, k->key, NULL);
		k->uses = 0;
	}
	k->uses++;
	return k->key;
}

/* An organization with one of everything: an audience holding a contact, a
 * DRAFT campaign on it with one call row, a do-not-call entry, and (when
 * asked) a finished import. */
struct world {
	struct it_org org;
	char audience[64], contact[64], campaign[64], phone[20], dnc_phone[20], import_id[64];
};

static int import_done(void *arg)
{
	struct world *w = arg;
	char path[128];
	struct it_resp *r;
	int done;

	snprintf(path, sizeof(path), "/v1/imports/%s/status", w->import_id);
	r = it_call("GET", path, w->org.key, NULL, NULL);
	done = r->status == 200 && it_str(r, "status") && strncmp(it_str(r, "status"), "COMPLETED", 9) == 0;
	it_resp_free(r);
	return done;
}

static void world_new(struct world *w, bool with_import)
{
	struct it_resp *r;
	char path[160];

	memset(w, 0, sizeof(*w));
	it_org_new(&w->org, 100);
	r = it_call("POST", "/v1/audiences", w->org.key, "{\"name\":\"World\"}", NULL);
	it_expect(r, 201);
	snprintf(w->audience, sizeof(w->audience), "%s", it_str(r, "id"));
	it_resp_free(r);
	it_phone(w->phone, 1);
	r = it_callf("POST", "/v1/contacts", w->org.key, "{\"phoneNumber\":\"%s\",\"name\":\"Resident\"}", w->phone);
	it_expect(r, 201);
	snprintf(w->contact, sizeof(w->contact), "%s", it_str(r, "id"));
	it_resp_free(r);
	snprintf(path, sizeof(path), "/v1/audiences/%s/contacts", w->audience);
	r = it_callf("POST", path, w->org.key, "{\"contactIds\":[\"%s\"]}", w->contact);
	it_expect(r, 200);
	it_resp_free(r);
	r = it_callf("POST", "/v1/campaigns", w->org.key, "{\"name\":\"World campaign\",\"flowId\":\"%s\",\"audienceId\":\"%s\"}",
		     w->org.flow_id, w->audience);
	it_expect(r, 201);
	snprintf(w->campaign, sizeof(w->campaign), "%s", it_str(r, "id"));
	it_resp_free(r);
	/* A call row as the scheduler writes it, so /calls has something to leak. */
	assert_int_not_equal(it_db_count("WITH c AS (INSERT INTO calls (campaign_id, contact_id, contact_name,"
					 " phone_number, status) VALUES ($1, $2, 'Resident', $3, 'PENDING')"
					 " RETURNING 1) UPDATE campaigns SET total = 1, pending = 1"
					 " WHERE id = $1 AND EXISTS (SELECT 1 FROM c) RETURNING 1",
					 w->campaign, w->contact, w->phone, NULL),
			 -1);
	it_phone(w->dnc_phone, 2);
	r = it_callf("POST", "/v1/dnc", w->org.key, "{\"phoneNumber\":\"%s\",\"reason\":\"asked\"}", w->dnc_phone);
	it_expect(r, 201);
	it_resp_free(r);
	if (with_import) {
		char phone[20];

		it_phone(phone, 3);
		r = it_callf("POST", "/v1/imports/api/bulk", w->org.key,
			     "{\"contacts\":[{\"phoneNumber\":\"%s\",\"name\":\"Imported\"}]}", phone);
		it_expect(r, 202);
		snprintf(w->import_id, sizeof(w->import_id), "%s", it_str(r, "id"));
		it_resp_free(r);
		if (!it_poll(import_done, w, 20000))
			fail_msg("import %s did not finish", w->import_id);
	}
}

/* ------------------------------------------------------------ bad bodies */

static void expect_status(const char *method, const char *path, const char *key, long status);

struct endpoint {
	const char *method;
	const char *path; /* %s: the world's id of kind id */
	char id;          /* 'c'ampaign, 'n' contact, 'a'udience, 0 none */
	bool bulk;
	const char *wrong_type;
	/* A body whose one field is too long or has too many items: fmt with
	 * %s replaced by n units joined by sep. */
	const char *over_fmt, *over_unit, *over_sep;
	int over_n;
};

static const struct endpoint body_endpoints[] = {
	{"POST", "/v1/campaigns", 0, false, "{\"name\":\"n\",\"flowId\":\"f\",\"audienceId\":\"a\",\"maxRetries\":\"3\"}",
	 "{\"name\":\"%s\",\"flowId\":\"f\",\"audienceId\":\"a\"}", "\xc3\xa9", "", 201},
	{"PATCH", "/v1/campaigns/%s", 'c', false, "{\"callsPerMinute\":10.5}", "{\"timezone\":\"%s\"}", "a", "", 65},
	{"POST", "/v1/contacts", 0, false, "{\"phoneNumber\":14155550100}",
	 "{\"phoneNumber\":\"+14155550123\",\"name\":\"%s\"}", "\xe6\x97\xa5", "", 201},
	{"PATCH", "/v1/contacts/%s", 'n', false, "{\"metadata\":[1]}", "{\"language\":\"%s\"}", "a", "", 36},
	{"POST", "/v1/contacts/bulk", 0, true, "{\"contacts\":{\"phoneNumber\":\"+14155550100\"}}", "{\"contacts\":[%s]}",
	 "{\"phoneNumber\":\"+14155550100\"}", ",", 1001},
	{"POST", "/v1/audiences", 0, false, "{\"name\":[\"x\"]}", "{\"name\":\"n\",\"description\":\"%s\"}",
	 "\xd0\xb6", "", 1001},
	{"PATCH", "/v1/audiences/%s", 'a', false, "{\"description\":5}", "{\"name\":\"%s\"}", "x", "", 201},
	{"POST", "/v1/audiences/%s/contacts", 'a', false, "{\"contactIds\":\"ct_x\"}", "{\"contactIds\":[%s]}",
	 "\"ct_x\"", ",", 1001},
	{"DELETE", "/v1/audiences/%s/contacts", 'a', false, "{\"contactIds\":[1]}", "{\"contactIds\":[\"%s\"]}", "c",
	 "", 65},
	{"POST", "/v1/imports/api/bulk", 0, true, "{\"contacts\":\"x\"}", "{\"contacts\":[%s]}", "{}", ",", 10001},
	{"POST", "/v1/dnc", 0, false, "{\"phoneNumber\":true}", "{\"phoneNumber\":\"+14155550100\",\"reason\":\"%s\"}",
	 "r", "", 201},
};

static void endpoint_path(const struct endpoint *e, const struct world *w, char *out, size_t len)
{
	const char *id = e->id == 'c' ? w->campaign : e->id == 'n' ? w->contact : e->id == 'a' ? w->audience : "";

	subst_to(out, len, e->path, id);
}

/* Declares a body of len bytes to method path and reads the answer without
 * sending it: a body over the cap is refused from its Content-Length alone
 * (sending it would race the server closing the connection). Returns the
 * answer's status with the error shape checked. */
static long declare_body(const char *method, const char *path, const char *key, size_t len)
{
	const char *url = it_env("DIALER_API_URL"), *colon = strrchr(url, ':');
	struct sockaddr_in a;
	struct timeval tv = {5, 0};
	char head[1024], answer[4096];
	size_t got = 0;
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	long status = 0;
	const char *body;
	json_t *j;

	assert_true(fd >= 0 && colon != NULL);
	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_port = htons((uint16_t)atoi(colon + 1));
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	snprintf(head, sizeof(head),
		 "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nx-api-key: %s\r\nContent-Type: application/json\r\n"
		 "Content-Length: %zu\r\n\r\n",
		 method, path, key, len);
	assert_int_equal(send(fd, head, strlen(head), MSG_NOSIGNAL), (ssize_t)strlen(head));
	for (;;) {
		ssize_t n = recv(fd, answer + got, sizeof(answer) - 1 - got, 0);

		if (n <= 0)
			break;
		got += (size_t)n;
		answer[got] = '\0';
		body = strstr(answer, "\r\n\r\n");
		if (body != NULL && strchr(body, '}') != NULL)
			break;
	}
	close(fd);
	answer[got] = '\0';
	body = strstr(answer, "\r\n\r\n");
	if (sscanf(answer, "HTTP/1.1 %ld", &status) != 1 || body == NULL)
		fail_msg("%s %s declaring %zu bytes: no answer: %.200s", method, path, len, answer);
	j = json_loads(body + 4, 0, NULL);
	if (json_integer_value(json_object_get(j, "statusCode")) != status ||
	    !json_is_string(json_object_get(j, "message")) || !json_is_string(json_object_get(j, "error")))
		fail_msg("error body is not {statusCode, message, error}: %s", body + 4);
	json_decref(j);
	return status;
}

/* Fails with context unless r is an error answer of status with the
 * {statusCode, message, error} body (an error message that cannot be
 * encoded as JSON leaves the body empty). */
static void expect_error(const struct it_resp *r, long status, const char *method, const char *path,
			 const char *what)
{
	if (r->status != status)
		fail_msg("%s %s, %s: expected %ld, got %ld: %.300s", method, path, what, status, r->status, r->body);
	if (json_integer_value(json_object_get(r->json, "statusCode")) != status ||
	    !json_is_string(json_object_get(r->json, "message")) || !json_is_string(json_object_get(r->json, "error")))
		fail_msg("%s %s, %s: %ld without the error body {statusCode, message, error}: \"%.300s\"", method,
			 path, what, status, r->body);
}

/* Sends body to e and expects status with the error shape. */
static void expect_refused(const struct endpoint *e, const char *path, struct keyring *k, const char *ctype,
			   const char *body, size_t len, long status, const char *what)
{
	struct it_resp *r = it_call_raw(e->method, path, key_for(k, e->bulk && status != 413), ctype, body, len);

	expect_error(r, status, e->method, path, what);
	it_resp_free(r);
}

/* Every endpoint that takes a body: malformed, not an object, duplicate and
 * unknown keys, wrong types, oversized fields and bodies, 10,000 nested
 * arrays, non-UTF-8 text, NUL, the wrong content type. Right 4xx each time;
 * the organization's rows unchanged. */
static void test_bad_bodies_every_endpoint(void **state)
{
	struct world w;
	struct keyring k;
	char *deep_arrays, *deep_objects, *before;
	const size_t big_len = 5 * 1024 * 1024;
	static const struct {
		const char *body;
		const char *what;
	} generic[] = {
		{"{\"name\":", "truncated JSON"},
		{"", "empty body"},
		{"{,}", "malformed JSON"},
		{"[]", "an array"},
		{"\"text\"", "a string"},
		{"42", "a number"},
		{"null", "null"},
		{"{\"a\":1,\"a\":2}", "duplicate keys"},
		{"{\"zzz\":1}", "an unknown field"},
		{"{\"name\":\"\xff\xfe\"}", "invalid UTF-8"},
		{"{\"name\":\"\xc0\xaf\"}", "overlong UTF-8"},
		{"{\"name\":\"\xed\xa0\x80\"}", "an encoded surrogate"},
		{"{\"name\":\"\\ud800\"}", "a lone surrogate escape"},
		{"{\"name\":\"a\\u0000b\"}", "a NUL"},
		{"{\"x\":1e999}", "a number out of range"},
		{"{\"name\":\"x\"}\xff", "trailing bytes"},
	};

	(void)state;
	world_new(&w, false);
	k.org = &w.org;
	k.key[0] = '\0';
	k.uses = 0;
	{
		char *open = rep("[", 10000, ""), *shut = rep("]", 10000, "");

		if (asprintf(&deep_arrays, "{\"x\":%s%s}", open, shut) < 0)
			fail_msg("out of memory");
		free(open);
		free(shut);
		open = rep("{\"a\":", 3000, "");
		shut = rep("}", 3000, "");
		if (asprintf(&deep_objects, "{\"x\":%s1%s}", open, shut) < 0)
			fail_msg("out of memory");
		free(open);
		free(shut);
	}
	for (size_t i = 0; i < sizeof(body_endpoints) / sizeof(body_endpoints[0]); i++) {
		const struct endpoint *e = &body_endpoints[i];
		char path[256], *over, *after;

		endpoint_path(e, &w, path, sizeof(path));
		before = fingerprint(w.org.id);
		for (size_t g = 0; g < sizeof(generic) / sizeof(generic[0]); g++)
			expect_refused(e, path, &k, "application/json", generic[g].body, strlen(generic[g].body), 400,
				       generic[g].what);
		expect_refused(e, path, &k, "application/json", deep_arrays, strlen(deep_arrays), 400,
			       "10,000 nested arrays");
		expect_refused(e, path, &k, "application/json", deep_objects, strlen(deep_objects), 400,
			       "3,000 nested objects");
		expect_refused(e, path, &k, "application/json", e->wrong_type, strlen(e->wrong_type), 400, "a wrong type");
		over = fill(e->over_fmt, e->over_unit, e->over_n, e->over_sep);
		expect_refused(e, path, &k, "application/json", over, strlen(over), 400, "an oversized field");
		free(over);
		expect_refused(e, path, &k, "text/plain", "{}", 2, 415, "text/plain");
		expect_refused(e, path, &k, "application/x-www-form-urlencoded", "name=x", 6, 415, "a form");
		if (declare_body(e->method, path, w.org.key, big_len) != 413)
			fail_msg("%s %s: a 5 MiB body was not refused with 413", e->method, e->path);
		after = fingerprint(w.org.id);
		if (strcmp(before, after) != 0)
			fail_msg("%s %s: refused requests changed the organization's rows", e->method, e->path);
		free(before);
		free(after);
	}
	/* Metadata: too large and too deep. */
	{
		static const struct endpoint contacts = {"POST", "/v1/contacts", 0, false, NULL, NULL, NULL, NULL, 0};
		char *meta = fill("{\"phoneNumber\":\"+14155550124\",\"metadata\":{\"k\":\"%s\"}}", "x", 5000, "");
		char *deep = fill("{\"phoneNumber\":\"+14155550124\",\"metadata\":%s1}}}}}}}}}}", "{\"a\":", 9, "");

		before = fingerprint(w.org.id);
		expect_refused(&contacts, "/v1/contacts", &k, "application/json", meta, strlen(meta), 400,
			       "metadata over 4096 bytes");
		expect_refused(&contacts, "/v1/contacts", &k, "application/json", deep, strlen(deep), 400,
			       "metadata 9 levels deep");
		free(meta);
		free(deep);
		{
			char *after = fingerprint(w.org.id);

			assert_string_equal(before, after);
			free(after);
		}
		free(before);
	}
	free(deep_arrays);
	free(deep_objects);
}

/* Nesting as deep as a body under the cap allows, at the top level and
 * unclosed, on every endpoint that takes a body: the parser's depth limit
 * answers 400 (never a crash or a stack overflow), nothing changes, and the
 * API is the same process afterwards. */
static void test_deep_nesting_every_endpoint(void **state)
{
	struct world w;
	struct keyring k;
	pid_t api = it_service_pid("dialer-api");
	struct {
		char *body;
		const char *what;
	} deep[5];
	size_t n = 0;

	(void)state;
	world_new(&w, false);
	k.org = &w.org;
	k.key[0] = '\0';
	k.uses = 0;
	{
		char *open = rep("[", 100000, ""), *shut = rep("]", 100000, "");

		if (asprintf(&deep[n].body, "%s%s", open, shut) < 0)
			fail_msg("out of memory");
		deep[n++].what = "100,000 nested arrays at the top";
		deep[n].body = open;
		deep[n++].what = "100,000 unclosed arrays";
		free(shut);
		open = rep("{\"a\":", 50000, "");
		shut = rep("}", 50000, "");
		if (asprintf(&deep[n].body, "%s1%s", open, shut) < 0)
			fail_msg("out of memory");
		deep[n++].what = "50,000 nested objects at the top";
		free(shut);
		deep[n].body = open;
		deep[n++].what = "50,000 unclosed objects";
		deep[n].body = fill("{\"contacts\":[{\"phoneNumber\":\"+14155550100\",\"metadata\":%s1}]}",
				    "{\"a\":[", 20000, "");
		deep[n++].what = "20,000 levels inside a valid prefix";
	}
	for (size_t i = 0; i < sizeof(body_endpoints) / sizeof(body_endpoints[0]); i++) {
		const struct endpoint *e = &body_endpoints[i];
		char path[256], *before, *after;

		endpoint_path(e, &w, path, sizeof(path));
		before = fingerprint(w.org.id);
		for (size_t d = 0; d < n; d++)
			expect_refused(e, path, &k, "application/json", deep[d].body, strlen(deep[d].body), 400,
				       deep[d].what);
		after = fingerprint(w.org.id);
		if (strcmp(before, after) != 0)
			fail_msg("%s %s: deeply nested bodies changed the organization's rows", e->method, e->path);
		free(before);
		free(after);
	}
	for (size_t d = 0; d < n; d++)
		free(deep[d].body);
	assert_int_equal(it_service_pid("dialer-api"), api);
	{
		struct it_resp *r = it_call("GET", "/healthz", NULL, NULL, NULL);

		it_expect(r, 200);
		it_resp_free(r);
	}
}

/* Hostile headers and query strings: a key that is huge, not UTF-8 or
 * otherwise not a key is a 401; a request id that is huge or not an id is
 * replaced; NUL, overlong and multi-byte paging arguments are a 400; a query
 * string of 100 KB is refused with a 4xx. The API keeps serving. */
static void test_hostile_headers_and_queries(void **state)
{
	struct world w;
	struct it_resp *r;
	char *huge = rep("k", 10000, ""), *hdr = NULL, *before, *after;
	static const char *const bad_keys[] = {"\xff\xfe\xfd", "dk_%00", "dk_ \t"};
	static const char *const bad_queries[] = {
		"/v1/contacts?page=%00", "/v1/contacts?page=%C0%80", "/v1/contacts?limit=%E6%97%A5",
		"/v1/campaigns?status=%00", "/v1/dnc?limit=%EF%BC%91", "/v1/flows?page=%F0%9F%98%80",
	};

	(void)state;
	world_new(&w, false);
	before = fingerprint(w.org.id);
	r = it_call("GET", "/v1/campaigns", huge, NULL, NULL);
	expect_error(r, 401, "GET", "/v1/campaigns", "a 10,000-character key");
	it_resp_free(r);
	for (size_t i = 0; i < DL_ARRAY_LEN(bad_keys); i++) {
		r = it_call("GET", "/v1/campaigns", bad_keys[i], NULL, NULL);
		expect_error(r, 401, "GET", "/v1/campaigns", "a key that is not a key");
		it_resp_free(r);
	}
	if (asprintf(&hdr, "X-Request-Id: %s", huge) < 0)
		fail_msg("out of memory");
	r = it_call("GET", "/v1/flows", w.org.key, NULL, hdr, NULL);
	it_expect(r, 200);
	{
		char id[256];

		if (it_header(r, "X-Request-Id", id, sizeof(id)) == NULL || strncmp(id, "req_", 4) != 0)
			fail_msg("a 10,000-character request id was not replaced");
	}
	it_resp_free(r);
	free(hdr);
	r = it_call("GET", "/v1/flows", w.org.key, NULL, "X-Request-Id: a\"b<script>", NULL);
	it_expect(r, 200);
	{
		char id[256];

		if (it_header(r, "X-Request-Id", id, sizeof(id)) == NULL || strncmp(id, "req_", 4) != 0)
			fail_msg("a request id with quotes was echoed: %s", id);
	}
	it_resp_free(r);
	for (size_t i = 0; i < DL_ARRAY_LEN(bad_queries); i++)
		expect_status("GET", bad_queries[i], w.org.key, 400);
	{
		char *q = NULL, *long_q = rep("a", 100000, "");

		if (asprintf(&q, "/v1/contacts?search=%s", long_q) < 0)
			fail_msg("out of memory");
		r = it_call("GET", q, w.org.key, NULL, NULL);
		if (r->status < 400 || r->status > 431)
			fail_msg("a 100 KB query string: %ld", r->status);
		it_resp_free(r);
		free(q);
		free(long_q);
	}
	after = fingerprint(w.org.id);
	assert_string_equal(before, after);
	free(before);
	free(after);
	free(huge);
	r = it_call("GET", "/healthz", NULL, NULL, NULL);
	it_expect(r, 200);
	it_resp_free(r);
}

/* The carrier callback (form body, signature instead of a key). */
static void test_bad_callbacks(void **state)
{
	struct it_resp *r;
	char *big = fill("%s", "a", 70000, "");
	const char *path = "/v1/carrier/status?attemptId=att_sec_x";
	long long before = it_db_count("SELECT count(*) FROM outbox WHERE body->>'attemptId' = 'att_sec_x'", NULL);

	(void)state;
	r = it_call_raw("POST", path, NULL, "application/json", "{}", 2);
	it_expect(r, 415);
	it_resp_free(r);
	r = it_call_raw("POST", path, NULL, "application/x-www-form-urlencoded", big, strlen(big));
	it_expect(r, 413);
	it_resp_free(r);
	r = it_call_raw("POST", path, NULL, "application/x-www-form-urlencoded", "a=%zz&=1", 8);
	it_expect(r, 400);
	it_resp_free(r);
	r = it_call_raw("POST", "/v1/carrier/status?attemptId=x'%20OR%20'1'='1", NULL,
			"application/x-www-form-urlencoded", "CallStatus=completed", 20);
	it_expect(r, 400);
	it_resp_free(r);
	/* Well-formed but unsigned, or signed with something else: refused. */
	{
		const char *form = "CallSid=CA0123456789abcdef0123456789abcdef&CallStatus=completed&SequenceNumber=1";

		r = it_call_raw("POST", path, NULL, "application/x-www-form-urlencoded", form, strlen(form));
	}
	it_expect(r, 403);
	it_resp_free(r);
	r = it_call("POST", path, NULL, NULL, "Content-Type: application/x-www-form-urlencoded",
		    "X-Twilio-Signature: AAAAAAAAAAAAAAAAAAAAAAAAAAA=", NULL);
	assert_true(r->status == 403 || r->status == 400);
	it_resp_free(r);
	assert_int_equal(it_db_count("SELECT count(*) FROM outbox WHERE body->>'attemptId' = 'att_sec_x'", NULL),
			 before);
	free(big);
}

/* ------------------------------------------------------------ bad queries */

static void expect_status(const char *method, const char *path, const char *key, long status)
{
	struct it_resp *r = it_call(method, path, key, NULL, NULL);

	if (status >= 400)
		expect_error(r, status, method, path, "the query");
	else
		it_expect(r, status);
	it_resp_free(r);
}

/* Paging, search and status on every list; path ids too long for a route. */
static void test_bad_queries_every_list(void **state)
{
	static const char *const bad_paging[] = {
		"page=0", "page=-1", "page=abc", "page=1e3", "page=99999999999999999999", "page=%FF",
		"page=", "limit=0", "limit=-5", "limit=abc", "limit=%FF", "limit=", "limit=1.5",
	};
	struct world w;
	char lists[7][160], path[4096], *before, *after;
	char *long_search, *unicode_search, *long_id;

	(void)state;
	world_new(&w, false);
	snprintf(lists[0], sizeof(lists[0]), "/v1/campaigns");
	snprintf(lists[1], sizeof(lists[1]), "/v1/contacts");
	snprintf(lists[2], sizeof(lists[2]), "/v1/audiences");
	snprintf(lists[3], sizeof(lists[3]), "/v1/flows");
	snprintf(lists[4], sizeof(lists[4]), "/v1/dnc");
	snprintf(lists[5], sizeof(lists[5]), "/v1/audiences/%s/contacts", w.audience);
	snprintf(lists[6], sizeof(lists[6]), "/v1/campaigns/%s/calls", w.campaign);
	before = fingerprint(w.org.id);
	for (int l = 0; l < 7; l++) {
		struct it_resp *r;

		for (size_t i = 0; i < sizeof(bad_paging) / sizeof(bad_paging[0]); i++) {
			snprintf(path, sizeof(path), "%.159s?%s", lists[l], bad_paging[i]);
			expect_status("GET", path, w.org.key, 400);
		}
		snprintf(path, sizeof(path), "%.159s?limit=1000&page=1", lists[l]);
		r = it_call("GET", path, w.org.key, NULL, NULL);
		it_expect(r, 200);
		assert_int_equal(it_int(r, "limit"), 100);
		it_resp_free(r);
	}
	/* search: at most 200 characters of valid text; characters, not bytes. */
	long_search = rep("a", 201, "");
	unicode_search = rep("%E6%97%A5", 200, "");
	for (int l = 0; l < 2; l++) {
		snprintf(path, sizeof(path), "%.159s?search=%s", lists[l], long_search);
		expect_status("GET", path, w.org.key, 400);
		snprintf(path, sizeof(path), "%.159s?search=%%FF%%FE", lists[l]);
		expect_status("GET", path, w.org.key, 400);
		snprintf(path, sizeof(path), "%.159s?search=%%C3", lists[l]);
		expect_status("GET", path, w.org.key, 400);
		{
			char *p = NULL;

			if (asprintf(&p, "%.159s?search=%s", lists[l], unicode_search) < 0)
				fail_msg("out of memory");
			expect_status("GET", p, w.org.key, 200);
			free(p);
		}
	}
	expect_status("GET", "/v1/campaigns?status=RUNNING", w.org.key, 400);
	expect_status("GET", "/v1/campaigns?status=draft", w.org.key, 400);
	expect_status("GET", "/v1/campaigns?status=%FF", w.org.key, 400);
	/* An id longer than any id matches no route: 404 with the shape. */
	long_id = rep("x", 200, "");
	snprintf(path, sizeof(path), "/v1/campaigns/camp_%s", long_id);
	expect_status("GET", path, w.org.key, 404);
	snprintf(path, sizeof(path), "/v1/contacts/ct_%s", long_id);
	expect_status("DELETE", path, w.org.key, 404);
	after = fingerprint(w.org.id);
	assert_string_equal(before, after);
	free(before);
	free(after);
	free(long_search);
	free(unicode_search);
	free(long_id);
}

/* ------------------------------------------------------------ unicode */

static const char *const unicode_names[] = {
	"\xd0\x9a\xd0\xb0\xd0\xbc\xd0\xbf\xd0\xb0\xd0\xbd\xd0\xb8\xd1\x8f \xc2\xab\xd0\x92\xd0\xb5\xd1\x81\xd0\xbd\xd0\xb0\xc2\xbb", /* Кампания «Весна» */
	"\xe0\xa4\xae\xe0\xa5\x81\xe0\xa4\x82\xe0\xa4\xac\xe0\xa4\x88 \xe0\xa4\x95\xe0\xa5\x89\xe0\xa4\xb2",                     /* मुंबई कॉल */
	"\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e\xe3\x81\xae\xe5\x90\x8d\xe5\x89\x8d",                                         /* 日本語の名前 */
	"emoji \xf0\x9f\x98\x80\xf0\x9f\x93\x9e and \xc3\xb1 \xe2\x80\x94 \"quoted\" \\ back",                               /* 😀📞 ñ — */
	"\xd8\xa7\xd9\x84\xd8\xb9\xd8\xb1\xd8\xa8\xd9\x8a\xd8\xa9 \xe2\x80\x8f\xd7\xa2\xd7\x91\xd7\xa8\xd7\x99\xd7\xaa",         /* العربية ‏עברית */
};

/* Valid multi-byte text is accepted and read back byte for byte, counted in
 * characters; \u escapes (surrogate pairs included) decode to the same. */
static void test_unicode_round_trip(void **state)
{
	struct world w;
	struct it_resp *r;
	char path[256];

	(void)state;
	world_new(&w, false);
	for (size_t i = 0; i < sizeof(unicode_names) / sizeof(unicode_names[0]); i++) {
		const char *name = unicode_names[i];
		char *body, phone[20], id[64];

		/* A campaign. */
		body = jbody("{s:s, s:s, s:s}", "name", name, "flowId", w.org.flow_id, "audienceId", w.audience);
		r = it_call("POST", "/v1/campaigns", w.org.key, body, NULL);
		free(body);
		it_expect(r, 201);
		assert_string_equal(it_str(r, "name"), name);
		snprintf(path, sizeof(path), "/v1/campaigns/%s", it_str(r, "id"));
		it_resp_free(r);
		r = it_call("GET", path, w.org.key, NULL, NULL);
		it_expect(r, 200);
		assert_string_equal(it_str(r, "name"), name);
		it_resp_free(r);
		/* An audience. */
		body = jbody("{s:s, s:s}", "name", name, "description", name);
		r = it_call("POST", "/v1/audiences", w.org.key, body, NULL);
		free(body);
		it_expect(r, 201);
		assert_string_equal(it_str(r, "name"), name);
		assert_string_equal(it_str(r, "description"), name);
		it_resp_free(r);
		/* A contact, with the text as a metadata key and value too. */
		it_phone(phone, 4);
		body = jbody("{s:s, s:s, s:{s:s}}", "phoneNumber", phone, "name", name, "metadata", name, name);
		r = it_call("POST", "/v1/contacts", w.org.key, body, NULL);
		free(body);
		it_expect(r, 201);
		snprintf(id, sizeof(id), "%s", it_str(r, "id"));
		it_resp_free(r);
		snprintf(path, sizeof(path), "/v1/contacts/%s", id);
		r = it_call("GET", path, w.org.key, NULL, NULL);
		it_expect(r, 200);
		assert_string_equal(it_str(r, "name"), name);
		assert_string_equal(json_string_value(json_object_get(json_object_get(r->json, "metadata"), name)), name);
		it_resp_free(r);
		/* A do-not-call reason. */
		it_phone(phone, 5);
		body = jbody("{s:s, s:s}", "phoneNumber", phone, "reason", name);
		r = it_call("POST", "/v1/dnc", w.org.key, body, NULL);
		free(body);
		it_expect(r, 201);
		assert_string_equal(it_str(r, "reason"), name);
		it_resp_free(r);
	}
	/* Escapes decode to the same text: "ñ😀" as \u00f1\ud83d\ude00. */
	r = it_call("POST", "/v1/audiences", w.org.key, "{\"name\":\"\\u00f1\\ud83d\\ude00\"}", NULL);
	it_expect(r, 201);
	assert_string_equal(it_str(r, "name"), "\xc3\xb1\xf0\x9f\x98\x80");
	it_resp_free(r);
	/* Search finds multi-byte text. */
	r = it_call("GET", "/v1/campaigns?search=%E6%97%A5%E6%9C%AC", w.org.key, NULL, NULL);
	it_expect(r, 200);
	assert_int_equal(it_int(r, "total"), 1);
	it_resp_free(r);
	/* Lengths count characters: 200 three-byte characters fit a 200 limit, 201 do not. */
	{
		char *ok = fill("{\"name\":\"%s\"}", "\xe6\x97\xa5", 200, "");
		char *over = fill("{\"name\":\"%s\"}", "\xe6\x97\xa5", 201, "");
		char *emoji = fill("{\"name\":\"%s\"}", "\xf0\x9f\x98\x80", 200, "");

		r = it_call("POST", "/v1/audiences", w.org.key, ok, NULL);
		it_expect(r, 201);
		assert_int_equal(dl_utf8_len(it_str(r, "name")), 200);
		it_resp_free(r);
		r = it_call("POST", "/v1/audiences", w.org.key, emoji, NULL);
		it_expect(r, 201);
		it_resp_free(r);
		r = it_call("POST", "/v1/audiences", w.org.key, over, NULL);
		it_expect(r, 400);
		it_resp_free(r);
		free(ok);
		free(over);
		free(emoji);
	}
}

/* ------------------------------------------------------------ SQL injection */

static const char *const injections[] = {
	"x' OR '1'='1",
	"x'; DROP TABLE campaigns; --",
	"%' OR 1=1 --",
	"'); DELETE FROM contacts; --",
	"\" OR \"\"=\"",
	"x' UNION SELECT id, key_hash FROM api_keys --",
	"1; SELECT pg_sleep(3) --",
	"$1",
	"x')) OR 1=1 /*",
	"\\'; TRUNCATE dnc; --",
	"camp_x' OR organization_id <> '",
};

/* Every path id of a route with an id, for ids of the world's kind. */
static const struct {
	const char *method;
	const char *fmt;
	const char *body;
} id_routes[] = {
	{"GET", "/v1/campaigns/%s", NULL},
	{"PATCH", "/v1/campaigns/%s", "{\"name\":\"renamed\"}"},
	{"DELETE", "/v1/campaigns/%s", NULL},
	{"POST", "/v1/campaigns/%s/start", NULL},
	{"POST", "/v1/campaigns/%s/pause", NULL},
	{"POST", "/v1/campaigns/%s/resume", NULL},
	{"POST", "/v1/campaigns/%s/cancel", NULL},
	{"GET", "/v1/campaigns/%s/progress", NULL},
	{"GET", "/v1/campaigns/%s/calls", NULL},
	{"GET", "/v1/contacts/%s", NULL},
	{"PATCH", "/v1/contacts/%s", "{\"name\":\"renamed\"}"},
	{"DELETE", "/v1/contacts/%s", NULL},
	{"GET", "/v1/audiences/%s", NULL},
	{"PATCH", "/v1/audiences/%s", "{\"name\":\"renamed\"}"},
	{"DELETE", "/v1/audiences/%s", NULL},
	{"GET", "/v1/audiences/%s/contacts", NULL},
	{"POST", "/v1/audiences/%s/contacts", "{\"contactIds\":[\"ct_x\"]}"},
	{"DELETE", "/v1/audiences/%s/contacts", "{\"contactIds\":[\"ct_x\"]}"},
	{"GET", "/v1/imports/%s/status", NULL},
	{"GET", "/v1/flows/%s", NULL},
};

/* True when text shows any of the victim's ids, numbers or names. */
static bool leaks(const char *text, const struct world *v)
{
	const char *secrets[] = {v->org.id, v->audience, v->contact, v->campaign, v->phone, v->dnc_phone,
				 v->org.flow_id, v->import_id, "Resident", "World campaign"};

	for (size_t i = 0; i < sizeof(secrets) / sizeof(secrets[0]); i++)
		if (secrets[i][0] && strstr(text, secrets[i]) != NULL)
			return true;
	return false;
}

/* Injection attempts in every string field (stored literally), every query
 * parameter and every path id (404, or 400 for a phone number) change
 * nothing and leak nothing of another organization. */
static void test_sql_injection(void **state)
{
	struct world victim, attacker;
	char *victim_before, *victim_after, path[1024];
	long long orgs_before, keys_before;

	(void)state;
	world_new(&victim, true);
	world_new(&attacker, false);
	victim_before = fingerprint(victim.org.id);
	orgs_before = it_db_count("SELECT count(*) FROM organizations", NULL);
	keys_before = it_db_count("SELECT count(*) FROM api_keys WHERE organization_id <> $1", attacker.org.id, NULL);
	for (size_t i = 0; i < sizeof(injections) / sizeof(injections[0]); i++) {
		const char *s = injections[i];
		char *e = url_escape(s), *body, phone[20], id[64];
		struct it_resp *r;
		struct timespec t0, t1;

		/* String fields keep the text as it is. */
		body = jbody("{s:s, s:s, s:s}", "name", s, "flowId", attacker.org.flow_id, "audienceId", attacker.audience);
		r = it_call("POST", "/v1/campaigns", attacker.org.key, body, NULL);
		free(body);
		it_expect(r, 201);
		assert_string_equal(it_str(r, "name"), s);
		snprintf(id, sizeof(id), "%s", it_str(r, "id"));
		it_resp_free(r);
		assert_int_equal(it_db_count("SELECT count(*) FROM campaigns WHERE id = $1 AND name = $2", id, s, NULL), 1);
		body = jbody("{s:s}", "name", s);
		snprintf(path, sizeof(path), "/v1/campaigns/%s", id);
		r = it_call("PATCH", path, attacker.org.key, body, NULL);
		free(body);
		it_expect(r, 200);
		assert_string_equal(it_str(r, "name"), s);
		it_resp_free(r);
		body = jbody("{s:s, s:s}", "name", s, "description", s);
		r = it_call("POST", "/v1/audiences", attacker.org.key, body, NULL);
		free(body);
		it_expect(r, 201);
		assert_string_equal(it_str(r, "description"), s);
		it_resp_free(r);
		it_phone(phone, 6);
		body = jbody("{s:s, s:s, s:{s:s}}", "phoneNumber", phone, "name", s, "metadata", s, s);
		r = it_call("POST", "/v1/contacts", attacker.org.key, body, NULL);
		free(body);
		it_expect(r, 201);
		assert_string_equal(it_str(r, "name"), s);
		assert_string_equal(json_string_value(json_object_get(json_object_get(r->json, "metadata"), s)), s);
		it_resp_free(r);
		it_phone(phone, 7);
		body = jbody("{s:s, s:s}", "phoneNumber", phone, "reason", s);
		r = it_call("POST", "/v1/dnc", attacker.org.key, body, NULL);
		free(body);
		it_expect(r, 201);
		assert_string_equal(it_str(r, "reason"), s);
		it_resp_free(r);
		/* Fields with a shape refuse it. */
		body = jbody("{s:s, s:s}", "phoneNumber", "+14155550177", "language", s);
		r = it_call("POST", "/v1/contacts", attacker.org.key, body, NULL);
		free(body);
		it_expect(r, 400);
		it_resp_free(r);
		body = jbody("{s:s}", "phoneNumber", s);
		r = it_call("POST", "/v1/dnc", attacker.org.key, body, NULL);
		free(body);
		it_expect(r, 400);
		it_resp_free(r);
		body = jbody("{s:[s]}", "contactIds", s);
		snprintf(path, sizeof(path), "/v1/audiences/%s/contacts", attacker.audience);
		r = it_call("POST", path, attacker.org.key, body, NULL);
		free(body);
		it_expect(r, 400);
		it_resp_free(r);
		body = jbody("{s:s, s:s, s:s}", "name", "n", "flowId", s, "audienceId", s);
		r = it_call("POST", "/v1/campaigns", attacker.org.key, body, NULL);
		free(body);
		it_expect(r, 400);
		it_resp_free(r);

		/* Query parameters: search matches text, status and paging refuse. */
		clock_gettime(CLOCK_MONOTONIC, &t0);
		snprintf(path, sizeof(path), "/v1/campaigns?search=%s", e);
		r = it_call("GET", path, attacker.org.key, NULL, NULL);
		it_expect(r, 200);
		if (leaks(r->body, &victim))
			fail_msg("campaigns?search=%s leaked the other organization: %s", s, r->body);
		{
			json_t *row;
			size_t n;

			json_array_foreach(json_object_get(r->json, "data"), n, row)
				assert_string_equal(json_string_value(json_object_get(row, "organizationId")),
						    attacker.org.id);
		}
		it_resp_free(r);
		clock_gettime(CLOCK_MONOTONIC, &t1);
		if (t1.tv_sec - t0.tv_sec > 2)
			fail_msg("search=%s took %ld s", s, (long)(t1.tv_sec - t0.tv_sec));
		snprintf(path, sizeof(path), "/v1/contacts?search=%s", e);
		r = it_call("GET", path, attacker.org.key, NULL, NULL);
		it_expect(r, 200);
		if (leaks(r->body, &victim))
			fail_msg("contacts?search=%s leaked the other organization: %s", s, r->body);
		it_resp_free(r);
		snprintf(path, sizeof(path), "/v1/campaigns?status=%s", e);
		expect_status("GET", path, attacker.org.key, 400);
		snprintf(path, sizeof(path), "/v1/contacts?page=%s", e);
		expect_status("GET", path, attacker.org.key, 400);
		snprintf(path, sizeof(path), "/v1/dnc?limit=%s", e);
		expect_status("GET", path, attacker.org.key, 400);

		/* Path ids: nothing there. */
		for (size_t j = 0; j < sizeof(id_routes) / sizeof(id_routes[0]); j++) {
			subst_to(path, sizeof(path), id_routes[j].fmt, e);
			r = it_call(id_routes[j].method, path, attacker.org.key, id_routes[j].body, NULL);
			if (r->status != 404)
				fail_msg("%s %s: expected 404, got %ld: %.300s", id_routes[j].method, path, r->status,
					 r->body);
			it_expect(r, 404);
			if (leaks(r->body, &victim))
				fail_msg("%s %s leaked the other organization: %s", id_routes[j].method, path, r->body);
			it_resp_free(r);
		}
		/* Not a number: 400 (404 when a decoded '/' leaves no route). */
		snprintf(path, sizeof(path), "/v1/dnc/%s", e);
		for (int d = 0; d < 2; d++) {
			r = it_call(d ? "DELETE" : "GET", path, attacker.org.key, NULL, NULL);
			if (r->status != 400 && r->status != 404)
				fail_msg("%s %s: %ld %.300s", d ? "DELETE" : "GET", path, r->status, r->body);
			it_expect(r, r->status);
			it_resp_free(r);
		}
		free(e);
	}
	/* The set-based writers (bulk upsert, import processor) store them literally too. */
	{
		struct keyring k = {&attacker.org, "", 0};
		json_t *bulk = json_array(), *rows = json_array();
		char *body;
		struct it_resp *r;
		struct world wait = attacker;

		for (size_t i = 0; i < sizeof(injections) / sizeof(injections[0]); i++) {
			char phone[20];

			it_phone(phone, 8);
			json_array_append_new(bulk, json_pack("{s:s, s:s, s:{s:s}}", "phoneNumber", phone, "name",
							      injections[i], "metadata", "note", injections[i]));
			it_phone(phone, 9);
			json_array_append_new(rows, json_pack("{s:s, s:s, s:s}", "phoneNumber", phone, "name",
							      injections[i], "city", injections[i]));
		}
		body = jbody("{s:o}", "contacts", bulk);
		r = it_call("POST", "/v1/contacts/bulk", key_for(&k, true), body, NULL);
		free(body);
		it_expect(r, 200);
		assert_int_equal(it_int(r, "created"), (long long)(sizeof(injections) / sizeof(injections[0])));
		it_resp_free(r);
		body = jbody("{s:o, s:s}", "contacts", rows, "audienceId", attacker.audience);
		r = it_call("POST", "/v1/imports/api/bulk", key_for(&k, true), body, NULL);
		free(body);
		it_expect(r, 202);
		snprintf(wait.import_id, sizeof(wait.import_id), "%s", it_str(r, "id"));
		it_resp_free(r);
		if (!it_poll(import_done, &wait, 20000))
			fail_msg("import %s did not finish", wait.import_id);
		for (size_t i = 0; i < sizeof(injections) / sizeof(injections[0]); i++)
			if (it_db_count("SELECT count(*) FROM contacts WHERE organization_id = $1 AND name = $2"
					" AND (metadata->>'note' = $2 OR metadata->>'city' = $2)",
					attacker.org.id, injections[i], NULL) != 2)
				fail_msg("bulk or import did not store %s literally", injections[i]);
	}
	/* An Idempotency-Key is a string field too. */
	{
		char *body = jbody("{s:s, s:s, s:s}", "name", "idem", "flowId", attacker.org.flow_id, "audienceId",
				   attacker.audience);
		struct it_resp *a, *b;

		a = it_call("POST", "/v1/campaigns", attacker.org.key, body, "Idempotency-Key: k';DROP/**/TABLE/**/campaigns;--", NULL);
		it_expect(a, 201);
		b = it_call("POST", "/v1/campaigns", attacker.org.key, body, "Idempotency-Key: k';DROP/**/TABLE/**/campaigns;--", NULL);
		it_expect(b, 201);
		assert_string_equal(a->body, b->body);
		it_resp_free(a);
		it_resp_free(b);
		free(body);
		assert_int_equal(it_db_count("SELECT count(*) FROM idempotency_keys WHERE idem_key = $1"
					     " AND organization_id = $2",
					     "k';DROP/**/TABLE/**/campaigns;--", attacker.org.id, NULL),
				 1);
	}
	/* Nothing of the victim changed, nothing was dropped or added elsewhere. */
	victim_after = fingerprint(victim.org.id);
	assert_string_equal(victim_before, victim_after);
	assert_int_equal(it_db_count("SELECT count(*) FROM organizations", NULL), orgs_before);
	assert_int_equal(it_db_count("SELECT count(*) FROM api_keys WHERE organization_id <> $1", attacker.org.id, NULL),
			 keys_before);
	{
		static const char *const tables[] = {"campaigns", "contacts", "audiences", "dnc", "imports", "api_keys",
						     "calls", "flows", "organizations"};

		for (size_t i = 0; i < sizeof(tables) / sizeof(tables[0]); i++) {
			char *t = db_text("SELECT to_regclass($1)::text", tables[i]);

			if (strcmp(t, tables[i]) != 0)
				fail_msg("table %s is gone", tables[i]);
			free(t);
		}
	}
	free(victim_before);
	free(victim_after);
}

/* ------------------------------------------------------------ cross-organization */

/* Another organization's ids are a 404 on every route with an id, its
 * numbers a 404 on the do-not-call routes, and no list shows any of it. */
static void test_cross_org_every_route(void **state)
{
	struct world a, b;
	char *a_before, *a_after, path[512];
	struct it_resp *r;

	(void)state;
	world_new(&a, true);
	world_new(&b, true);
	a_before = fingerprint(a.org.id);
	for (size_t j = 0; j < sizeof(id_routes) / sizeof(id_routes[0]); j++) {
		const char *fmt = id_routes[j].fmt;
		const char *id = strstr(fmt, "/campaigns/") ? a.campaign
				 : strstr(fmt, "/contacts/") ? a.contact
				 : strstr(fmt, "/audiences/") ? a.audience
				 : strstr(fmt, "/imports/") ? a.import_id
								: a.org.flow_id;
		char body[256];
		const char *b_body = id_routes[j].body;

		/* Bodies that would succeed on B's own resources. */
		if (strstr(fmt, "/audiences/%s/contacts") && b_body != NULL) {
			snprintf(body, sizeof(body), "{\"contactIds\":[\"%s\"]}",
				 !strcmp(id_routes[j].method, "POST") ? b.contact : a.contact);
			b_body = body;
		}
		subst_to(path, sizeof(path), fmt, id);
		r = it_call(id_routes[j].method, path, b.org.key, b_body, NULL);
		if (r->status != 404)
			fail_msg("%s %s with another organization's key: %ld %.300s", id_routes[j].method, path,
				 r->status, r->body);
		it_expect(r, 404);
		it_resp_free(r);
	}
	/* The do-not-call list is keyed by number: A's number is not on B's list. */
	{
		char *e = url_escape(a.dnc_phone);

		snprintf(path, sizeof(path), "/v1/dnc/%s", e);
		expect_status("GET", path, b.org.key, 404);
		expect_status("DELETE", path, b.org.key, 404);
		/* B listing the same number makes B's own entry; A's stays as it was. */
		r = it_callf("POST", "/v1/dnc", b.org.key, "{\"phoneNumber\":\"%s\",\"reason\":\"b's\"}", a.dnc_phone);
		it_expect(r, 201);
		assert_string_equal(it_str(r, "reason"), "b's");
		it_resp_free(r);
		r = it_call("GET", path, a.org.key, NULL, NULL);
		it_expect(r, 200);
		assert_string_equal(it_str(r, "reason"), "asked");
		it_resp_free(r);
		expect_status("DELETE", path, b.org.key, 204);
		r = it_call("GET", path, a.org.key, NULL, NULL);
		it_expect(r, 200);
		it_resp_free(r);
		free(e);
	}
	/* References across organizations are refused. */
	r = it_callf("POST", "/v1/campaigns", b.org.key, "{\"name\":\"x\",\"flowId\":\"%s\",\"audienceId\":\"%s\"}",
		     a.org.flow_id, b.audience);
	it_expect(r, 400);
	it_resp_free(r);
	snprintf(path, sizeof(path), "/v1/campaigns/%s", b.campaign);
	r = it_callf("PATCH", path, b.org.key, "{\"audienceId\":\"%s\"}", a.audience);
	it_expect(r, 400);
	it_resp_free(r);
	snprintf(path, sizeof(path), "/v1/audiences/%s/contacts", b.audience);
	r = it_callf("POST", path, b.org.key, "{\"contactIds\":[\"%s\"]}", a.contact);
	it_expect(r, 400);
	it_resp_free(r);
	r = it_callf("POST", "/v1/imports/api/bulk", b.org.key,
		     "{\"audienceId\":\"%s\",\"contacts\":[{\"phoneNumber\":\"+14155550100\"}]}", a.audience);
	it_expect(r, 400);
	it_resp_free(r);
	/* B's lists, searched for A's things too, never show them. */
	{
		char lists[12][256];
		int n = 0;
		char *e = url_escape(a.phone);

		snprintf(lists[n++], 256, "/v1/campaigns?limit=100");
		snprintf(lists[n++], 256, "/v1/campaigns?search=World");
		snprintf(lists[n++], 256, "/v1/contacts?limit=100");
		snprintf(lists[n++], 256, "/v1/contacts?search=%s", e);
		snprintf(lists[n++], 256, "/v1/contacts?search=Resident");
		snprintf(lists[n++], 256, "/v1/audiences?limit=100");
		snprintf(lists[n++], 256, "/v1/flows?limit=100");
		snprintf(lists[n++], 256, "/v1/dnc?limit=100");
		snprintf(lists[n++], 256, "/v1/audiences/%s/contacts?limit=100", b.audience);
		snprintf(lists[n++], 256, "/v1/campaigns/%s/calls?limit=100", b.campaign);
		snprintf(lists[n++], 256, "/v1/campaigns?page=2&limit=1");
		free(e);
		for (int i = 0; i < n; i++) {
			/* B's own rows carry the same names ("World", "Resident"): look for A's ids and numbers. */
			const char *secrets[] = {a.org.id, a.audience, a.contact, a.campaign, a.phone, a.dnc_phone,
						 a.org.flow_id, a.import_id};

			r = it_call("GET", lists[i], b.org.key, NULL, NULL);
			it_expect(r, 200);
			for (size_t s = 0; s < sizeof(secrets) / sizeof(secrets[0]); s++)
				if (strstr(r->body, secrets[s]) != NULL)
					fail_msg("GET %s as another organization shows %s: %s", lists[i], secrets[s],
						 r->body);
			it_resp_free(r);
		}
	}
	/* A's progress, calls and import status are A's. */
	snprintf(path, sizeof(path), "/v1/campaigns/%s/calls", a.campaign);
	r = it_call("GET", path, a.org.key, NULL, NULL);
	it_expect(r, 200);
	assert_int_equal(it_int(r, "total"), 1);
	it_resp_free(r);
	snprintf(path, sizeof(path), "/v1/imports/%s/status", a.import_id);
	expect_status("GET", path, a.org.key, 200);
	a_after = fingerprint(a.org.id);
	assert_string_equal(a_before, a_after);
	free(a_before);
	free(a_after);
}

/* ------------------------------------------------------------ API keys */

/* Every file under dir (recursively) that contains needle, into found. */
static void grep_dir(const char *dir, const char *needle, char *found, size_t len)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	size_t nl = strlen(needle);

	if (d == NULL)
		return;
	while ((de = readdir(d)) != NULL) {
		char path[1024];
		struct stat st;

		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		if (lstat(path, &st) != 0)
			continue;
		if (S_ISDIR(st.st_mode)) {
			grep_dir(path, needle, found, len);
		} else if (S_ISREG(st.st_mode)) {
			FILE *f = fopen(path, "rb");
			char *buf;
			size_t n;

			if (f == NULL)
				continue;
			buf = malloc((size_t)st.st_size + 1);
			assert_non_null(buf);
			n = fread(buf, 1, (size_t)st.st_size, f);
			fclose(f);
			if (n >= nl && memmem(buf, n, needle, nl) != NULL)
				snprintf(found + strlen(found), len - strlen(found), " %s", path);
			free(buf);
		}
	}
	closedir(d);
}

/* The logs of every process of the stack: the services', Postgres' and RabbitMQ's. */
static void expect_not_logged(const char *needle, const char *what)
{
	static const char *const dirs[] = {"logs", "pg/log", "mq/log"};
	char found[4096] = "";

	for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
		char dir[512];

		snprintf(dir, sizeof(dir), "%s/%s", it_env("STACK_RUNDIR"), dirs[i]);
		grep_dir(dir, needle, found, sizeof(found));
	}
	if (found[0])
		fail_msg("%s appears in:%s", what, found);
}

/* Keys: stored as their SHA-256 only; a revoked key is refused within 1 s;
 * no key (right, wrong or revoked) shows in any log. */
static void test_api_keys(void **state)
{
	struct world w;
	char key2[64], key2_id[64], wrong[64], rid[96], hdr[128], hash[65], path[256];
	struct it_resp *r;

	(void)state;
	world_new(&w, false);
	snprintf(rid, sizeof(rid), "it-sec-keys-%d-%ld", (int)getpid(), (long)time(NULL));
	snprintf(hdr, sizeof(hdr), "X-Request-Id: %s", rid);
	/* Stored hashed. */
	{
		char *stored = db_text("SELECT key_hash FROM api_keys WHERE organization_id = $1", w.org.id);

		dl_sha256_hex(w.org.key, strlen(w.org.key), hash);
		assert_string_not_equal(stored, w.org.key);
		assert_string_equal(stored, hash);
		free(stored);
		assert_int_equal(it_db_count("SELECT count(*) FROM api_keys k WHERE strpos(k::text, $1) > 0", w.org.key,
					     NULL),
				 0);
		assert_int_equal(it_db_count("SELECT count(*) FROM api_keys WHERE organization_id = $1"
					     " AND length(key_prefix) > 12",
					     w.org.id, NULL),
				 0);
	}
	/* Requests of every outcome with the key: 200, 201, 400, 404, 409, 405. */
	r = it_call("GET", "/v1/campaigns", w.org.key, NULL, hdr, NULL);
	it_expect(r, 200);
	it_resp_free(r);
	r = it_call("POST", "/v1/audiences", w.org.key, "{\"name\":\"logged?\"}", hdr, NULL);
	it_expect(r, 201);
	it_resp_free(r);
	r = it_call("POST", "/v1/audiences", w.org.key, "{\"nope\":1}", hdr, NULL);
	it_expect(r, 400);
	it_resp_free(r);
	r = it_call("GET", "/v1/campaigns/camp_nope", w.org.key, NULL, hdr, NULL);
	it_expect(r, 404);
	it_resp_free(r);
	snprintf(path, sizeof(path), "/v1/campaigns/%s/pause", w.campaign);
	r = it_call("POST", path, w.org.key, NULL, hdr, NULL);
	it_expect(r, 409);
	it_resp_free(r);
	r = it_call("PUT", "/v1/campaigns", w.org.key, NULL, hdr, NULL);
	it_expect(r, 405);
	it_resp_free(r);
	/* A key in the query string is not the API's way, and not logged either. */
	snprintf(path, sizeof(path), "/v1/flows?x-api-key=%s&api_key=%s", w.org.key, w.org.key);
	r = it_call("GET", path, w.org.key, NULL, hdr, NULL);
	it_expect(r, 200);
	it_resp_free(r);
	/* A database error on the request's path (an id that is not text). */
	r = it_call("GET", "/v1/flows/%FF", w.org.key, NULL, hdr, NULL);
	it_resp_free(r);
	/* Wrong keys: near misses and strangers. */
	snprintf(wrong, sizeof(wrong), "%.*s%c", (int)strlen(w.org.key) - 1, w.org.key,
		 w.org.key[strlen(w.org.key) - 1] == 'Z' ? 'Y' : 'Z');
	r = it_call("GET", "/v1/campaigns", wrong, NULL, hdr, NULL);
	it_expect(r, 401);
	it_resp_free(r);
	r = it_call("GET", "/v1/campaigns", NULL, NULL, hdr, "X-API-KEY: sk_live_itsecwrongkey0000000000000000", NULL);
	it_expect(r, 401);
	it_resp_free(r);
	/* Revocation takes effect within the API's key TTL (1 s), even for a
	 * key it has just accepted; the organization's other key keeps working. */
	new_key(w.org.id, key2, key2_id);
	r = it_call("GET", "/v1/flows", key2, NULL, hdr, NULL);
	it_expect(r, 200);
	it_resp_free(r);
	{
		int code;
		char *out = it_ctl(&code, "apikey", "revoke", "--id", key2_id, NULL);
		int64_t revoked = dl_mono_ms(), sent;
		long status;

		assert_int_equal(code, 0);
		free(out);
		do {
			sent = dl_mono_ms();
			r = it_call("GET", "/v1/flows", key2, NULL, hdr, NULL);
			status = r->status;
			it_resp_free(r);
			if (status != 401 && sent > revoked + KEY_TTL_MS)
				fail_msg("a key revoked %lld ms ago was still accepted (%ld)", (long long)(sent - revoked),
					 status);
			if (status != 401)
				usleep(20000);
		} while (status != 401);
	}
	r = it_call("POST", "/v1/audiences", key2, "{\"name\":\"after revoke\"}", hdr, NULL);
	it_expect(r, 401);
	it_resp_free(r);
	r = it_call("GET", "/v1/flows", w.org.key, NULL, hdr, NULL);
	it_expect(r, 200);
	it_resp_free(r);
	assert_int_equal(it_db_count("SELECT count(*) FROM audiences WHERE organization_id = $1 AND name = 'after revoke'",
				     w.org.id, NULL),
			 0);
	/* The requests were logged (by their id), the keys were not. */
	{
		char found[4096] = "", dir[512];

		snprintf(dir, sizeof(dir), "%s/logs", it_env("STACK_RUNDIR"));
		grep_dir(dir, rid, found, sizeof(found));
		if (!found[0])
			fail_msg("the requests of this test are not in the API's log (looked for %s)", rid);
	}
	expect_not_logged(w.org.key, "the API key");
	expect_not_logged(key2, "the revoked API key");
	expect_not_logged(wrong, "a wrong API key");
	expect_not_logged("sk_live_itsecwrongkey0000000000000000", "a stranger's API key");
	/* The secret part alone neither. */
	expect_not_logged(w.org.key + 8, "the API key's secret");
}

/* ------------------------------------------------------------ error bodies */

/* Errors that echo what the client sent stay well-formed JSON, whatever
 * the bytes: a long unknown field name cut inside a multi-byte character,
 * an unknown path of multi-byte characters cut at the message's length. */
static void test_error_bodies_always_json(void **state)
{
	struct world w;
	struct keyring k;
	char *name = fill("%s\xc3\xa9", "a", 63, ""), *body, *path;

	(void)state;
	world_new(&w, false);
	k.org = &w.org;
	k.key[0] = '\0';
	k.uses = 0;
	/* The unknown name is echoed up to 64 bytes: here the 64th is half of "é". */
	if (asprintf(&body, "{\"name\":\"x\",\"%s\":1}", name) < 0)
		fail_msg("out of memory");
	for (size_t i = 0; i < sizeof(body_endpoints) / sizeof(body_endpoints[0]); i++) {
		const struct endpoint *e = &body_endpoints[i];
		char p[256];
		struct it_resp *r;

		endpoint_path(e, &w, p, sizeof(p));
		r = it_call_raw(e->method, p, key_for(&k, e->bulk), "application/json", body, strlen(body));
		expect_error(r, 400, e->method, p, "an unknown field whose echo is cut inside a character");
		/* Still the message that names the field, not a generic one. */
		if (strstr(it_str(r, "message"), "unknown field") == NULL)
			fail_msg("%s %s: the message lost the field: %s", e->method, p, r->body);
		it_resp_free(r);
	}
	free(body);
	if (asprintf(&body, "{\"contacts\":[{\"phoneNumber\":\"+14155550100\",\"%s\":1}]}", name) < 0)
		fail_msg("out of memory");
	expect_refused(&body_endpoints[4], "/v1/contacts/bulk", &k, "application/json", body, strlen(body), 400,
		       "a bulk item's unknown field cut inside a character");
	free(body);
	/* 404 messages name the path; long multi-byte paths of either parity. */
	for (int odd = 0; odd < 2; odd++) {
		char *chars = rep("%C3%A9", 300, "");

		if (asprintf(&path, "/v1/%s%s", odd ? "x" : "xx", chars) < 0)
			fail_msg("out of memory");
		expect_status("GET", path, w.org.key, 404);
		expect_status("PUT", "/v1/campaigns", w.org.key, 405);
		free(path);
		free(chars);
	}
	/* An unknown path with bytes that are not UTF-8. */
	expect_status("GET", "/v1/nothing/%FF", w.org.key, 404);
	expect_status("PUT", "/v1/campaigns/%FF", w.org.key, 405);
	free(name);
}

/* Ids in paths that are not UTF-8 (or not ids at all) are unknown ids: 404,
 * not a database error. */
static void test_path_ids_not_utf8(void **state)
{
	static const char *const ids[] = {"%FF", "camp_%C3", "%ED%A0%80", "%C0%AF"};
	struct world w;
	char path[256];

	(void)state;
	world_new(&w, false);
	for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) {
		for (size_t j = 0; j < sizeof(id_routes) / sizeof(id_routes[0]); j++) {
			struct it_resp *r;

			subst_to(path, sizeof(path), id_routes[j].fmt, ids[i]);
			r = it_call(id_routes[j].method, path, w.org.key, id_routes[j].body, NULL);
			expect_error(r, 404, id_routes[j].method, path, "an id that is not UTF-8");
			it_resp_free(r);
		}
		/* Not a phone number (400), or nothing of that name (404). */
		snprintf(path, sizeof(path), "/v1/dnc/%s", ids[i]);
		{
			struct it_resp *r = it_call("GET", path, w.org.key, NULL, NULL);

			expect_error(r, r->status == 404 ? 404 : 400, "GET", path, "a number that is not UTF-8");
			it_resp_free(r);
		}
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_bad_bodies_every_endpoint),
		cmocka_unit_test(test_deep_nesting_every_endpoint),
		cmocka_unit_test(test_hostile_headers_and_queries),
		cmocka_unit_test(test_bad_callbacks),
		cmocka_unit_test(test_bad_queries_every_list),
		cmocka_unit_test(test_unicode_round_trip),
		cmocka_unit_test(test_sql_injection),
		cmocka_unit_test(test_cross_org_every_route),
		cmocka_unit_test(test_api_keys),
		cmocka_unit_test(test_error_bodies_always_json),
		cmocka_unit_test(test_path_ids_not_utf8),
	};

	return cmocka_run_group_tests_name("security", tests, NULL, NULL);
}
