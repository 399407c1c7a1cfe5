/* Integration tests of the Contacts, DNC and Flows APIs against the real
 * server and database: shapes, codes, paging, search, the bulk upsert, and
 * that rejected requests and other organizations change nothing. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "it_lib.h"

static long long contacts_in(const struct it_org *org)
{
	return it_db_count("SELECT count(*) FROM contacts WHERE organization_id = $1", org->id, NULL);
}

static long long dnc_in(const struct it_org *org)
{
	return it_db_count("SELECT count(*) FROM dnc WHERE organization_id = $1", org->id, NULL);
}

/* Asserts an error answer whose message contains piece. */
static void expect_msg(const struct it_resp *r, long status, const char *piece)
{
	const char *msg;

	it_expect(r, status);
	msg = it_str(r, "message");
	if (piece != NULL && (msg == NULL || strstr(msg, piece) == NULL))
		fail_msg("message of %s lacks \"%s\"", r->body, piece);
}

static void expect_time(const char *s)
{
	/* ISO 8601 UTC with milliseconds: 2026-03-10T09:00:00.000Z */
	assert_non_null(s);
	assert_int_equal(strlen(s), 24);
	assert_int_equal(s[10], 'T');
	assert_int_equal(s[19], '.');
	assert_int_equal(s[23], 'Z');
}

/* Sends body (stolen) as JSON. */
static struct it_resp *send_json(const char *method, const char *path, const char *key, json_t *body)
{
	char *text = json_dumps(body, JSON_COMPACT | JSON_ENCODE_ANY);
	struct it_resp *r;

	assert_non_null(text);
	r = it_call(method, path, key, text, NULL);
	free(text);
	json_decref(body);
	return r;
}

/* Creates a contact and returns its id (caller frees). */
static char *contact_new(const struct it_org *org, const char *phone, const char *name)
{
	struct it_resp *r = send_json("POST", "/v1/contacts", org->key,
				      json_pack("{s:s, s:s}", "phoneNumber", phone, "name", name));
	char *id;

	it_expect(r, 201);
	id = strdup(it_str(r, "id"));
	it_resp_free(r);
	return id;
}

static void contact_path(char *out, size_t len, const char *id)
{
	snprintf(out, len, "/v1/contacts/%s", id);
}

/* "/v1/dnc/%2B1555..." for +1555... */
static void dnc_path(char *out, size_t len, const char *phone)
{
	snprintf(out, len, "/v1/dnc/%%2B%s", phone + 1);
}

static bool list_has_id(const struct it_resp *r, const char *field, const char *value)
{
	json_t *data = json_object_get(r->json, "data"), *item;
	size_t i;

	json_array_foreach(data, i, item)
	{
		const char *v = json_string_value(json_object_get(item, field));

		if (v != NULL && !strcmp(v, value))
			return true;
	}
	return false;
}

/* ---------------------------------------------------------------- contacts */

static void test_create_get_shape(void **state)
{
	static const char *const keys[] = {"id", "phoneNumber", "name", "language", "metadata", "createdAt",
					   "updatedAt"};
	struct it_org org;
	struct it_resp *r, *g;
	char phone[20], path[128];
	json_t *meta;

	(void)state;
	it_org_new(&org, 100);
	it_phone(phone, 1);
	r = it_callf("POST", "/v1/contacts", org.key,
		     "{\"phoneNumber\":\"%s\",\"name\":\"Priya Sharma\",\"language\":\"hi-IN\","
		     "\"metadata\":{\"city\":\"Mumbai\",\"tags\":[\"vip\"],\"score\":7}}",
		     phone);
	it_expect(r, 201);
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
		if (json_object_get(r->json, keys[i]) == NULL)
			fail_msg("contact lacks %s: %s", keys[i], r->body);
	assert_int_equal(json_object_size(r->json), sizeof(keys) / sizeof(keys[0]));
	assert_int_equal(strncmp(it_str(r, "id"), "ct_", 3), 0);
	assert_int_equal(strlen(it_str(r, "id")), 3 + 24);
	assert_string_equal(it_str(r, "phoneNumber"), phone);
	assert_string_equal(it_str(r, "name"), "Priya Sharma");
	assert_string_equal(it_str(r, "language"), "hi-IN");
	meta = json_object_get(r->json, "metadata");
	assert_string_equal(json_string_value(json_object_get(meta, "city")), "Mumbai");
	assert_int_equal(json_integer_value(json_object_get(meta, "score")), 7);
	assert_string_equal(json_string_value(json_array_get(json_object_get(meta, "tags"), 0)), "vip");
	expect_time(it_str(r, "createdAt"));
	expect_time(it_str(r, "updatedAt"));

	contact_path(path, sizeof(path), it_str(r, "id"));
	g = it_call("GET", path, org.key, NULL, NULL);
	it_expect(g, 200);
	assert_true(json_equal(g->json, r->json));
	it_resp_free(g);
	it_resp_free(r);

	/* Only the phone number: the rest null or empty. */
	it_phone(phone, 2);
	r = it_callf("POST", "/v1/contacts", org.key, "{\"phoneNumber\":\"%s\"}", phone);
	it_expect(r, 201);
	assert_true(json_is_null(json_object_get(r->json, "name")));
	assert_true(json_is_null(json_object_get(r->json, "language")));
	assert_true(json_is_object(json_object_get(r->json, "metadata")));
	assert_int_equal(json_object_size(json_object_get(r->json, "metadata")), 0);
	it_resp_free(r);

	/* Unknown id. */
	r = it_call("GET", "/v1/contacts/ct_aaaaaaaaaaaaaaaaaaaaaaaa", org.key, NULL, NULL);
	expect_msg(r, 404, "ct_aaaaaaaaaaaaaaaaaaaaaaaa");
	it_resp_free(r);
	assert_int_equal(contacts_in(&org), 2);
}

static void test_list_paging(void **state)
{
	static const struct {
		const char *query;
		long status;
		long page, limit, count, total_pages;
	} cases[] = {
		{"", 200, 1, 20, 3, 1},
		{"?limit=2", 200, 1, 2, 2, 2},
		{"?limit=2&page=2", 200, 2, 2, 1, 2},
		{"?limit=2&page=3", 200, 3, 2, 0, 2},
		{"?limit=100", 200, 1, 100, 3, 1},
		{"?limit=101", 200, 1, 100, 3, 1},
		{"?limit=5000", 200, 1, 100, 3, 1},
		{"?limit=1&page=3", 200, 3, 1, 1, 3},
		{"?limit=0", 400, 0, 0, 0, 0},
		{"?limit=-1", 400, 0, 0, 0, 0},
		{"?limit=abc", 400, 0, 0, 0, 0},
		{"?limit=1.5", 400, 0, 0, 0, 0},
		{"?page=abc", 400, 0, 0, 0, 0},
		{"?page=0", 400, 0, 0, 0, 0},
		{"?page=-2", 400, 0, 0, 0, 0},
	};
	struct it_org org;
	char phone[20], *ids[3];
	struct it_resp *r;

	(void)state;
	it_org_new(&org, 100);
	for (int i = 0; i < 3; i++) {
		char name[32];

		it_phone(phone, i);
		snprintf(name, sizeof(name), "Page %d", i);
		ids[i] = contact_new(&org, phone, name);
	}
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char path[128];

		snprintf(path, sizeof(path), "/v1/contacts%s", cases[i].query);
		r = it_call("GET", path, org.key, NULL, NULL);
		if (r->status != cases[i].status)
			fail_msg("GET %s: expected %ld, got %ld: %s", path, cases[i].status, r->status, r->body);
		it_expect(r, cases[i].status);
		if (cases[i].status == 200) {
			assert_int_equal(it_int(r, "total"), 3);
			assert_int_equal(it_int(r, "page"), cases[i].page);
			assert_int_equal(it_int(r, "limit"), cases[i].limit);
			assert_int_equal(it_int(r, "totalPages"), cases[i].total_pages);
			assert_int_equal(json_array_size(json_object_get(r->json, "data")), cases[i].count);
		} else {
			assert_non_null(strstr(it_str(r, "message"), strstr(path, "page") ? "page" : "limit"));
		}
		it_resp_free(r);
	}
	/* Newest first. */
	r = it_call("GET", "/v1/contacts?limit=1", org.key, NULL, NULL);
	it_expect(r, 200);
	assert_true(list_has_id(r, "id", ids[2]));
	it_resp_free(r);
	r = it_call("GET", "/v1/contacts?limit=1&page=3", org.key, NULL, NULL);
	it_expect(r, 200);
	assert_true(list_has_id(r, "id", ids[0]));
	it_resp_free(r);
	for (int i = 0; i < 3; i++)
		free(ids[i]);
}

static void test_search(void **state)
{
	struct it_org org;
	char p1[20], p2[20], p3[20], path[512], *a, *b, *c;
	struct it_resp *r;
	char *long_search;

	(void)state;
	it_org_new(&org, 100);
	it_phone(p1, 1);
	it_phone(p2, 2);
	it_phone(p3, 3);
	a = contact_new(&org, p1, "Alice Smith");
	b = contact_new(&org, p2, "Bob Smithers");
	c = contact_new(&org, p3, "Chandra Rao");

	/* Name, case-insensitive. */
	r = it_call("GET", "/v1/contacts?search=SMITH", org.key, NULL, NULL);
	it_expect(r, 200);
	assert_int_equal(it_int(r, "total"), 2);
	assert_true(list_has_id(r, "id", a));
	assert_true(list_has_id(r, "id", b));
	assert_false(list_has_id(r, "id", c));
	it_resp_free(r);
	r = it_call("GET", "/v1/contacts?search=chandra%20rao", org.key, NULL, NULL);
	it_expect(r, 200);
	assert_int_equal(it_int(r, "total"), 1);
	assert_true(list_has_id(r, "id", c));
	it_resp_free(r);
	/* Phone, whole (with + encoded) and a piece of it. */
	snprintf(path, sizeof(path), "/v1/contacts?search=%%2B%s", p2 + 1);
	r = it_call("GET", path, org.key, NULL, NULL);
	it_expect(r, 200);
	assert_int_equal(it_int(r, "total"), 1);
	assert_true(list_has_id(r, "id", b));
	it_resp_free(r);
	snprintf(path, sizeof(path), "/v1/contacts?search=%s", p3 + 6);
	r = it_call("GET", path, org.key, NULL, NULL);
	it_expect(r, 200);
	assert_true(list_has_id(r, "id", c));
	it_resp_free(r);
	/* No match; LIKE wildcards are plain text. */
	r = it_call("GET", "/v1/contacts?search=nobody", org.key, NULL, NULL);
	it_expect(r, 200);
	assert_int_equal(it_int(r, "total"), 0);
	assert_int_equal(json_array_size(json_object_get(r->json, "data")), 0);
	it_resp_free(r);
	r = it_call("GET", "/v1/contacts?search=%25", org.key, NULL, NULL);
	it_expect(r, 200);
	assert_int_equal(it_int(r, "total"), 0);
	it_resp_free(r);
	/* Empty search is no filter; over 200 characters is refused. */
	r = it_call("GET", "/v1/contacts?search=", org.key, NULL, NULL);
	it_expect(r, 200);
	assert_int_equal(it_int(r, "total"), 3);
	it_resp_free(r);
	long_search = malloc(202);
	memset(long_search, 'a', 201);
	long_search[201] = '\0';
	snprintf(path, sizeof(path), "/v1/contacts?search=%s", long_search);
	r = it_call("GET", path, org.key, NULL, NULL);
	expect_msg(r, 400, "search");
	it_resp_free(r);
	free(long_search);
	free(a);
	free(b);
	free(c);
}

static void test_patch(void **state)
{
	struct it_org org;
	char p1[20], p2[20], path[128], *id, *other, created[32];
	struct it_resp *r;

	(void)state;
	it_org_new(&org, 100);
	it_phone(p1, 1);
	it_phone(p2, 2);
	r = it_callf("POST", "/v1/contacts", org.key,
		     "{\"phoneNumber\":\"%s\",\"name\":\"Ann\",\"language\":\"en\",\"metadata\":{\"a\":1}}", p1);
	it_expect(r, 201);
	id = strdup(it_str(r, "id"));
	snprintf(created, sizeof(created), "%s", it_str(r, "createdAt"));
	it_resp_free(r);
	other = contact_new(&org, p2, "Other");
	contact_path(path, sizeof(path), id);

	/* A subset changes only what it names. */
	r = it_call("PATCH", path, org.key, "{\"name\":\"Ann Lee\"}", NULL);
	it_expect(r, 200);
	assert_string_equal(it_str(r, "id"), id);
	assert_string_equal(it_str(r, "name"), "Ann Lee");
	assert_string_equal(it_str(r, "phoneNumber"), p1);
	assert_string_equal(it_str(r, "language"), "en");
	assert_int_equal(json_integer_value(json_object_get(json_object_get(r->json, "metadata"), "a")), 1);
	assert_string_equal(it_str(r, "createdAt"), created);
	assert_true(strcmp(it_str(r, "updatedAt"), created) >= 0);
	it_resp_free(r);
	/* null clears; metadata is replaced whole. */
	r = it_call("PATCH", path, org.key, "{\"language\":null,\"metadata\":{\"b\":2}}", NULL);
	it_expect(r, 200);
	assert_true(json_is_null(json_object_get(r->json, "language")));
	assert_string_equal(it_str(r, "name"), "Ann Lee");
	assert_null(json_object_get(json_object_get(r->json, "metadata"), "a"));
	assert_int_equal(json_integer_value(json_object_get(json_object_get(r->json, "metadata"), "b")), 2);
	it_resp_free(r);
	/* The phone number can change, to a free one. */
	it_phone(p1, 3);
	r = it_callf("PATCH", path, org.key, "{\"phoneNumber\":\"%s\"}", p1);
	it_expect(r, 200);
	assert_string_equal(it_str(r, "phoneNumber"), p1);
	it_resp_free(r);
	/* An empty PATCH answers the contact as it is. */
	r = it_call("PATCH", path, org.key, "{}", NULL);
	it_expect(r, 200);
	assert_string_equal(it_str(r, "phoneNumber"), p1);
	it_resp_free(r);

	/* Refused PATCHes change nothing. */
	{
		static const struct {
			const char *body;
			long status;
			const char *msg;
		} bad[] = {
			{"{\"phoneNumber\":\"12345\"}", 400, "phoneNumber"},
			{"{\"phoneNumber\":null}", 400, "phoneNumber"},
			{"{\"name\":42}", 400, "name"},
			{"{\"metadata\":[1]}", 400, "metadata"},
			{"{\"language\":\"en US\"}", 400, "language"},
			{"{\"id\":\"ct_x\"}", 400, "unknown field"},
			{"{\"createdAt\":\"2020-01-01T00:00:00Z\"}", 400, "unknown field"},
			{"[]", 400, "object"},
			{"{\"name\":", 400, "JSON"},
		};
		for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
			r = it_call("PATCH", path, org.key, bad[i].body, NULL);
			expect_msg(r, bad[i].status, bad[i].msg);
			it_resp_free(r);
		}
	}
	/* Taking another contact's number: 409 naming it. */
	r = it_callf("PATCH", path, org.key, "{\"phoneNumber\":\"%s\",\"name\":\"Stolen\"}", p2);
	expect_msg(r, 409, p2);
	it_resp_free(r);
	r = it_call("GET", path, org.key, NULL, NULL);
	it_expect(r, 200);
	assert_string_equal(it_str(r, "phoneNumber"), p1);
	assert_string_equal(it_str(r, "name"), "Ann Lee");
	it_resp_free(r);
	/* Unknown id. */
	r = it_call("PATCH", "/v1/contacts/ct_bbbbbbbbbbbbbbbbbbbbbbbb", org.key, "{\"name\":\"x\"}", NULL);
	it_expect(r, 404);
	it_resp_free(r);
	assert_int_equal(contacts_in(&org), 2);
	free(id);
	free(other);
}

static void test_delete(void **state)
{
	struct it_org org;
	char phone[20], path[128], *id;
	struct it_resp *r;

	(void)state;
	it_org_new(&org, 100);
	it_phone(phone, 1);
	id = contact_new(&org, phone, "Gone Soon");
	contact_path(path, sizeof(path), id);
	r = it_call("DELETE", path, org.key, NULL, NULL);
	it_expect(r, 204);
	assert_int_equal(strlen(r->body), 0);
	it_resp_free(r);
	r = it_call("GET", path, org.key, NULL, NULL);
	it_expect(r, 404);
	it_resp_free(r);
	r = it_call("DELETE", path, org.key, NULL, NULL);
	it_expect(r, 404);
	it_resp_free(r);
	assert_int_equal(contacts_in(&org), 0);
	/* The number is free again. */
	free(id);
	id = contact_new(&org, phone, "Back");
	free(id);
}

static void test_create_invalid(void **state)
{
	static const struct {
		const char *what;
		const char *ctype;
		const char *body;
		long status;
		const char *msg;
	} cases[] = {
		{"no phone", "application/json", "{\"name\":\"A\"}", 400, "phoneNumber is required"},
		{"null phone", "application/json", "{\"phoneNumber\":null}", 400, "phoneNumber"},
		{"7 digits", "application/json", "{\"phoneNumber\":\"+1234567\"}", 400, "E.164"},
		{"16 digits", "application/json", "{\"phoneNumber\":\"+1234567890123456\"}", 400, "E.164"},
		{"leading 0", "application/json", "{\"phoneNumber\":\"+0123456789\"}", 400, "E.164"},
		{"letters", "application/json", "{\"phoneNumber\":\"+1555CALLNOW\"}", 400, "E.164"},
		{"no plus", "application/json", "{\"phoneNumber\":\"15551234567\"}", 400, "E.164"},
		{"phone as number", "application/json", "{\"phoneNumber\":15551234567}", 400, "phoneNumber"},
		{"unknown field", "application/json", "{\"phoneNumber\":\"+15550000001\",\"email\":\"a@b.c\"}", 400,
		 "unknown field \"email\""},
		{"name as number", "application/json", "{\"phoneNumber\":\"+15550000001\",\"name\":1}", 400, "name"},
		{"name as array", "application/json", "{\"phoneNumber\":\"+15550000001\",\"name\":[\"a\"]}", 400,
		 "name"},
		{"language as bool", "application/json", "{\"phoneNumber\":\"+15550000001\",\"language\":true}", 400,
		 "language"},
		{"language chars", "application/json", "{\"phoneNumber\":\"+15550000001\",\"language\":\"en;US\"}",
		 400, "language"},
		{"metadata as string", "application/json",
		 "{\"phoneNumber\":\"+15550000001\",\"metadata\":\"{}\"}", 400, "metadata"},
		{"metadata as array", "application/json", "{\"phoneNumber\":\"+15550000001\",\"metadata\":[]}", 400,
		 "metadata"},
		{"metadata null", "application/json", "{\"phoneNumber\":\"+15550000001\",\"metadata\":null}", 400,
		 "metadata"},
		{"metadata 9 deep", "application/json",
		 "{\"phoneNumber\":\"+15550000001\",\"metadata\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":"
		 "{\"a\":{}}}}}}}}}}",
		 400, "nested deeper than 8"},
		{"malformed JSON", "application/json", "{\"phoneNumber\":", 400, "not valid JSON"},
		{"trailing garbage", "application/json", "{\"phoneNumber\":\"+15550000001\"} x", 400, "JSON"},
		{"duplicate key", "application/json",
		 "{\"phoneNumber\":\"+15550000001\",\"phoneNumber\":\"+15550000002\"}", 400, "JSON"},
		{"array body", "application/json", "[{\"phoneNumber\":\"+15550000001\"}]", 400, "JSON object"},
		{"string body", "application/json", "\"+15550000001\"", 400, "JSON"},
		{"null body", "application/json", "null", 400, "JSON"},
		{"empty body", "application/json", "", 400, "JSON object"},
		{"form body", "application/x-www-form-urlencoded", "phoneNumber=%2B15550000001", 415,
		 "application/json"},
	};
	struct it_org org;
	struct it_resp *r;

	(void)state;
	it_org_new(&org, 100);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		r = it_call_raw("POST", "/v1/contacts", org.key, cases[i].ctype, cases[i].body,
				strlen(cases[i].body));
		if (r->status != cases[i].status)
			fail_msg("case \"%s\": expected %ld, got %ld: %s", cases[i].what, cases[i].status,
				 r->status, r->body);
		expect_msg(r, cases[i].status, cases[i].msg);
		it_resp_free(r);
	}
	/* Limits that need long inputs. */
	{
		char name[202], big[4200];
		json_t *body;

		memset(name, 'n', 201);
		name[201] = '\0';
		r = send_json("POST", "/v1/contacts", org.key,
			      json_pack("{s:s, s:s}", "phoneNumber", "+15550000001", "name", name));
		expect_msg(r, 400, "name must be at most 200 characters");
		it_resp_free(r);
		memset(big, 'x', sizeof(big) - 1);
		big[sizeof(big) - 1] = '\0';
		body = json_pack("{s:s, s:{s:s}}", "phoneNumber", "+15550000001", "metadata", "k", big);
		r = send_json("POST", "/v1/contacts", org.key, body);
		expect_msg(r, 400, "larger than 4096 bytes");
		it_resp_free(r);
	}
	assert_int_equal(contacts_in(&org), 0);
	/* And the limits themselves are accepted: 200 characters (not bytes). */
	{
		char name[601] = "";
		json_t *meta = json_object();

		for (int i = 0; i < 200; i++)
			strcat(name, "\xc3\xa9");
		for (int i = 0; i < 7; i++)
			meta = json_pack("{s:o}", "a", meta);
		r = send_json("POST", "/v1/contacts", org.key,
			      json_pack("{s:s, s:s, s:o}", "phoneNumber", "+15550000001", "name", name, "metadata",
					meta));
		it_expect(r, 201);
		assert_string_equal(it_str(r, "name"), name);
		it_resp_free(r);
	}
	assert_int_equal(contacts_in(&org), 1);
}

static void test_duplicate_phone(void **state)
{
	struct it_org org;
	char phone[20], *id;
	struct it_resp *r;

	(void)state;
	it_org_new(&org, 100);
	it_phone(phone, 4);
	id = contact_new(&org, phone, "First");
	r = it_callf("POST", "/v1/contacts", org.key, "{\"phoneNumber\":\"%s\",\"name\":\"Second\"}", phone);
	expect_msg(r, 409, phone);
	it_resp_free(r);
	assert_int_equal(contacts_in(&org), 1);
	assert_int_equal(it_db_count("SELECT count(*) FROM contacts WHERE id = $1 AND name = 'First'", id, NULL), 1);
	free(id);
}

static void test_isolation(void **state)
{
	struct it_org a, b;
	char phone[20], path[128], *id, *id_b;
	struct it_resp *r;

	(void)state;
	it_org_new(&a, 100);
	it_org_new(&b, 100);
	it_phone(phone, 5);
	id = contact_new(&a, phone, "Org A's");
	contact_path(path, sizeof(path), id);

	r = it_call("GET", path, b.key, NULL, NULL);
	it_expect(r, 404);
	it_resp_free(r);
	r = it_call("PATCH", path, b.key, "{\"name\":\"Hijacked\"}", NULL);
	it_expect(r, 404);
	it_resp_free(r);
	r = it_call("DELETE", path, b.key, NULL, NULL);
	it_expect(r, 404);
	it_resp_free(r);
	r = it_call("GET", "/v1/contacts", b.key, NULL, NULL);
	it_expect(r, 200);
	assert_int_equal(it_int(r, "total"), 0);
	assert_false(list_has_id(r, "id", id));
	it_resp_free(r);
	r = it_call("GET", "/v1/contacts?search=Org", b.key, NULL, NULL);
	it_expect(r, 200);
	assert_int_equal(it_int(r, "total"), 0);
	it_resp_free(r);
	/* A's contact is untouched, and the same number is free in B. */
	r = it_call("GET", path, a.key, NULL, NULL);
	it_expect(r, 200);
	assert_string_equal(it_str(r, "name"), "Org A's");
	it_resp_free(r);
	id_b = contact_new(&b, phone, "Org B's");
	assert_string_not_equal(id, id_b);
	/* B's bulk upsert of that number creates B's own, leaving A's alone. */
	r = it_callf("POST", "/v1/contacts/bulk", b.key, "{\"contacts\":[{\"phoneNumber\":\"%s\",\"name\":\"B2\"}]}",
		     phone);
	it_expect(r, 200);
	assert_int_equal(it_int(r, "updated"), 1);
	it_resp_free(r);
	assert_int_equal(contacts_in(&a), 1);
	assert_int_equal(contacts_in(&b), 1);
	assert_int_equal(it_db_count("SELECT count(*) FROM contacts WHERE id = $1 AND name = 'Org A''s'", id, NULL),
			 1);
	free(id);
	free(id_b);
}

/* ---------------------------------------------------------------- bulk */

static void test_bulk_create_update(void **state)
{
	struct it_org org;
	char p[4][20], *existing;
	struct it_resp *r;
	json_t *data, *item;

	(void)state;
	it_org_new(&org, 100);
	for (int i = 0; i < 4; i++)
		it_phone(p[i], i);
	r = it_callf("POST", "/v1/contacts", org.key,
		     "{\"phoneNumber\":\"%s\",\"name\":\"Old\",\"language\":\"en\",\"metadata\":{\"a\":1}}", p[1]);
	it_expect(r, 201);
	existing = strdup(it_str(r, "id"));
	it_resp_free(r);

	/* New, existing (renamed), new, new: answered in input order. */
	r = it_callf("POST", "/v1/contacts/bulk", org.key,
		     "{\"contacts\":[{\"phoneNumber\":\"%s\",\"name\":\"Zed\"},"
		     "{\"phoneNumber\":\"%s\",\"name\":\"New\"},"
		     "{\"phoneNumber\":\"%s\",\"language\":\"fr\",\"metadata\":{\"k\":\"v\"}},"
		     "{\"phoneNumber\":\"%s\"}]}",
		     p[0], p[1], p[2], p[3]);
	it_expect(r, 200);
	assert_int_equal(it_int(r, "created"), 3);
	assert_int_equal(it_int(r, "updated"), 1);
	data = json_object_get(r->json, "data");
	assert_int_equal(json_array_size(data), 4);
	for (int i = 0; i < 4; i++) {
		item = json_array_get(data, (size_t)i);
		assert_string_equal(json_string_value(json_object_get(item, "phoneNumber")), p[i]);
		assert_int_equal(strncmp(json_string_value(json_object_get(item, "id")), "ct_", 3), 0);
		assert_int_equal(strlen(json_string_value(json_object_get(item, "id"))), 27);
		expect_time(json_string_value(json_object_get(item, "createdAt")));
	}
	item = json_array_get(data, 1);
	assert_string_equal(json_string_value(json_object_get(item, "id")), existing);
	assert_string_equal(json_string_value(json_object_get(item, "name")), "New");
	/* Fields an item leaves out keep their stored values. */
	assert_string_equal(json_string_value(json_object_get(item, "language")), "en");
	assert_int_equal(json_integer_value(json_object_get(json_object_get(item, "metadata"), "a")), 1);
	item = json_array_get(data, 2);
	assert_true(json_is_null(json_object_get(item, "name")));
	assert_string_equal(json_string_value(json_object_get(item, "language")), "fr");
	assert_string_equal(json_string_value(json_object_get(json_object_get(item, "metadata"), "k")), "v");
	item = json_array_get(data, 3);
	assert_int_equal(json_object_size(json_object_get(item, "metadata")), 0);
	it_resp_free(r);
	assert_int_equal(contacts_in(&org), 4);
	assert_int_equal(it_db_count("SELECT count(*) FROM contacts WHERE id = $1 AND name = 'New'", existing, NULL),
			 1);

	/* The same numbers again, in another order: all updates. */
	r = it_callf("POST", "/v1/contacts/bulk", org.key,
		     "{\"contacts\":[{\"phoneNumber\":\"%s\"},{\"phoneNumber\":\"%s\",\"name\":null},"
		     "{\"phoneNumber\":\"%s\"},{\"phoneNumber\":\"%s\"}]}",
		     p[3], p[1], p[2], p[0]);
	it_expect(r, 200);
	assert_int_equal(it_int(r, "created"), 0);
	assert_int_equal(it_int(r, "updated"), 4);
	data = json_object_get(r->json, "data");
	assert_string_equal(json_string_value(json_object_get(json_array_get(data, 0), "phoneNumber")), p[3]);
	assert_string_equal(json_string_value(json_object_get(json_array_get(data, 1), "id")), existing);
	assert_true(json_is_null(json_object_get(json_array_get(data, 1), "name")));
	assert_string_equal(json_string_value(json_object_get(json_array_get(data, 3), "name")), "Zed");
	it_resp_free(r);
	assert_int_equal(contacts_in(&org), 4);
	free(existing);
}

/* {"contacts":[n items]} with fresh numbers. */
static json_t *bulk_body(int n)
{
	json_t *items = json_array();

	for (int i = 0; i < n; i++) {
		char phone[20];

		it_phone(phone, i);
		json_array_append_new(items, json_pack("{s:s, s:s}", "phoneNumber", phone, "name", "Bulk"));
	}
	return json_pack("{s:o}", "contacts", items);
}

static void test_bulk_limits(void **state)
{
	struct it_org org;
	struct it_resp *r;
	json_t *body, *data;

	(void)state;
	it_org_new(&org, 100);
	r = send_json("POST", "/v1/contacts/bulk", org.key, bulk_body(1001));
	expect_msg(r, 400, "contacts must hold 1 to 1000 items");
	it_resp_free(r);
	r = it_call("POST", "/v1/contacts/bulk", org.key, "{\"contacts\":[]}", NULL);
	expect_msg(r, 400, "contacts");
	it_resp_free(r);
	assert_int_equal(contacts_in(&org), 0);

	/* Exactly 1000, in order. */
	body = bulk_body(1000);
	r = send_json("POST", "/v1/contacts/bulk", org.key, json_incref(body));
	it_expect(r, 200);
	assert_int_equal(it_int(r, "created"), 1000);
	assert_int_equal(it_int(r, "updated"), 0);
	data = json_object_get(r->json, "data");
	assert_int_equal(json_array_size(data), 1000);
	for (size_t i = 0; i < 1000; i++) {
		const char *want = json_string_value(
			json_object_get(json_array_get(json_object_get(body, "contacts"), i), "phoneNumber"));
		const char *got = json_string_value(json_object_get(json_array_get(data, i), "phoneNumber"));

		if (strcmp(want, got) != 0)
			fail_msg("data[%zu] is %s, expected %s", i, got, want);
	}
	it_resp_free(r);
	json_decref(body);
	assert_int_equal(contacts_in(&org), 1000);
}

/* tmpl with {NEW} and {OLD} replaced (caller frees). */
static char *fill(const char *tmpl, const char *fresh, const char *old)
{
	char *out = malloc(strlen(tmpl) * 4 + 1), *o = out;

	assert_non_null(out);
	while (*tmpl) {
		if (!strncmp(tmpl, "{NEW}", 5) || !strncmp(tmpl, "{OLD}", 5)) {
			const char *v = tmpl[1] == 'N' ? fresh : old;

			o = stpcpy(o, v);
			tmpl += 5;
		} else {
			*o++ = *tmpl++;
		}
	}
	*o = '\0';
	return out;
}

static void test_bulk_invalid_changes_nothing(void **state)
{
	static const struct {
		const char *what;
		const char *body; /* {NEW}: a fresh number, {OLD}: the stored contact's */
		const char *msg;
	} cases[] = {
		{"bad phone at 2",
		 "{\"contacts\":[{\"phoneNumber\":\"{NEW}\"},{\"phoneNumber\":\"{OLD}\",\"name\":\"Changed\"},"
		 "{\"phoneNumber\":\"555-1234\"}]}",
		 "contacts[2].phoneNumber"},
		{"unknown field at 1",
		 "{\"contacts\":[{\"phoneNumber\":\"{OLD}\",\"name\":\"Changed\"},{\"phoneNumber\":\"{NEW}\",\"x\":1}]}",
		 "contacts[1]: unknown field \"x\""},
		{"wrong type at 0",
		 "{\"contacts\":[{\"phoneNumber\":\"{NEW}\",\"name\":7},{\"phoneNumber\":\"{OLD}\",\"name\":\"Changed\"}]}",
		 "contacts[0].name"},
		{"missing phone at 1",
		 "{\"contacts\":[{\"phoneNumber\":\"{OLD}\",\"name\":\"Changed\"},{\"name\":\"{NEW}\"}]}",
		 "contacts[1].phoneNumber: is required"},
		{"item not an object",
		 "{\"contacts\":[{\"phoneNumber\":\"{NEW}\"},{\"phoneNumber\":\"{OLD}\",\"name\":\"Changed\"},\"x\"]}",
		 "contacts[2]: must be an object"},
		{"metadata too deep at 1",
		 "{\"contacts\":[{\"phoneNumber\":\"{NEW}\"},{\"phoneNumber\":\"{OLD}\",\"name\":\"Changed\","
		 "\"metadata\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":{}}}}}}}}}}]}",
		 "contacts[1].metadata"},
		{"repeated phone",
		 "{\"contacts\":[{\"phoneNumber\":\"{OLD}\",\"name\":\"Changed\"},{\"phoneNumber\":\"{NEW}\"},"
		 "{\"phoneNumber\":\"{OLD}\"}]}",
		 "contacts[2].phoneNumber"},
		{"repeated new phone",
		 "{\"contacts\":[{\"phoneNumber\":\"{NEW}\"},{\"phoneNumber\":\"{OLD}\",\"name\":\"Changed\"},"
		 "{\"phoneNumber\":\"{NEW}\"}]}",
		 "repeated"},
		{"unknown top-level field",
		 "{\"contacts\":[{\"phoneNumber\":\"{NEW}\"},{\"phoneNumber\":\"{OLD}\",\"name\":\"Changed\"}],"
		 "\"audienceId\":\"aud_x\"}",
		 "unknown field"},
		{"contacts not an array", "{\"contacts\":{\"phoneNumber\":\"{OLD}\"}}", "contacts must be an array"},
		{"contacts missing", "{\"items\":[{\"phoneNumber\":\"{NEW}\"}]}", "unknown field \"items\""},
		{"contacts null", "{\"contacts\":null}", "contacts must not be null"},
		{"empty object", "{}", "contacts is required"},
	};
	struct it_org org;
	char old_phone[20], *id;
	struct it_resp *r;

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char fresh[20], *body;

		/* A fresh organization (and key) per case: bulk calls are rate-limited per key. */
		it_org_new(&org, 100);
		it_phone(old_phone, 1);
		id = contact_new(&org, old_phone, "Keep");
		it_phone(fresh, 2);
		body = fill(cases[i].body, fresh, old_phone);
		r = it_call("POST", "/v1/contacts/bulk", org.key, body, NULL);
		if (r->status != 400)
			fail_msg("case \"%s\": expected 400, got %ld: %s", cases[i].what, r->status, r->body);
		expect_msg(r, 400, cases[i].msg);
		it_resp_free(r);
		free(body);
		assert_int_equal(contacts_in(&org), 1);
		assert_int_equal(
			it_db_count("SELECT count(*) FROM contacts WHERE id = $1 AND name = 'Keep'", id, NULL), 1);
		free(id);
	}
	r = it_call("POST", "/v1/contacts/bulk", org.key, "[{\"phoneNumber\":\"+15550000001\"}]", NULL);
	expect_msg(r, 400, "JSON object");
	it_resp_free(r);
	r = it_call("POST", "/v1/contacts/bulk", org.key, "{\"contacts\":[", NULL);
	expect_msg(r, 400, "JSON");
	it_resp_free(r);
	assert_int_equal(contacts_in(&org), 1);
}

/* ---------------------------------------------------------------- DNC */

static void test_dnc(void **state)
{
	struct it_org org;
	char phone[20], other[20], path[128];
	struct it_resp *r;
	json_t *first;

	(void)state;
	it_org_new(&org, 100);
	it_phone(phone, 1);
	it_phone(other, 2);

	r = it_callf("POST", "/v1/dnc", org.key, "{\"phoneNumber\":\"%s\",\"reason\":\"asked on the phone\"}",
		     phone);
	it_expect(r, 201);
	assert_int_equal(json_object_size(r->json), 3);
	assert_string_equal(it_str(r, "phoneNumber"), phone);
	assert_string_equal(it_str(r, "reason"), "asked on the phone");
	expect_time(it_str(r, "createdAt"));
	first = json_incref(r->json);
	it_resp_free(r);
	/* Again: 200 with the entry as first listed. */
	r = it_callf("POST", "/v1/dnc", org.key, "{\"phoneNumber\":\"%s\",\"reason\":\"again\"}", phone);
	it_expect(r, 200);
	assert_true(json_equal(r->json, first));
	it_resp_free(r);
	/* Without a reason. */
	r = it_callf("POST", "/v1/dnc", org.key, "{\"phoneNumber\":\"%s\"}", other);
	it_expect(r, 201);
	assert_true(json_is_null(json_object_get(r->json, "reason")));
	it_resp_free(r);
	assert_int_equal(dnc_in(&org), 2);

	dnc_path(path, sizeof(path), phone);
	r = it_call("GET", path, org.key, NULL, NULL);
	it_expect(r, 200);
	assert_true(json_equal(r->json, first));
	it_resp_free(r);
	r = it_call("GET", "/v1/dnc", org.key, NULL, NULL);
	it_expect(r, 200);
	assert_int_equal(it_int(r, "total"), 2);
	assert_int_equal(it_int(r, "page"), 1);
	assert_int_equal(it_int(r, "limit"), 20);
	assert_int_equal(it_int(r, "totalPages"), 1);
	assert_true(list_has_id(r, "phoneNumber", phone));
	assert_true(list_has_id(r, "phoneNumber", other));
	it_resp_free(r);
	r = it_call("GET", "/v1/dnc?limit=1&page=2", org.key, NULL, NULL);
	it_expect(r, 200);
	assert_int_equal(json_array_size(json_object_get(r->json, "data")), 1);
	assert_int_equal(it_int(r, "totalPages"), 2);
	it_resp_free(r);
	r = it_call("GET", "/v1/dnc?limit=0", org.key, NULL, NULL);
	it_expect(r, 400);
	it_resp_free(r);

	r = it_call("DELETE", path, org.key, NULL, NULL);
	it_expect(r, 204);
	it_resp_free(r);
	r = it_call("GET", path, org.key, NULL, NULL);
	expect_msg(r, 404, phone);
	it_resp_free(r);
	r = it_call("DELETE", path, org.key, NULL, NULL);
	it_expect(r, 404);
	it_resp_free(r);
	assert_int_equal(dnc_in(&org), 1);
	json_decref(first);
}

static void test_dnc_invalid(void **state)
{
	static const struct {
		const char *body;
		const char *msg;
	} bodies[] = {
		{"{}", "phoneNumber is required"},
		{"{\"phoneNumber\":\"+0123456789\"}", "E.164"},
		{"{\"phoneNumber\":\"+1234567\"}", "E.164"},
		{"{\"phoneNumber\":\"5551234567\"}", "E.164"},
		{"{\"phoneNumber\":15551234567}", "phoneNumber"},
		{"{\"phoneNumber\":\"+15550000001\",\"reason\":5}", "reason"},
		{"{\"phoneNumber\":\"+15550000001\",\"note\":\"x\"}", "unknown field"},
		{"[\"+15550000001\"]", "JSON object"},
		{"{\"phoneNumber\":", "JSON"},
	};
	static const char *const paths[] = {
		"/v1/dnc/5551234567", "/v1/dnc/%2B0123456789", "/v1/dnc/abc", "/v1/dnc/%2B1555123456789012",
	};
	struct it_org org;
	struct it_resp *r;

	(void)state;
	it_org_new(&org, 100);
	for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
		r = it_call("POST", "/v1/dnc", org.key, bodies[i].body, NULL);
		expect_msg(r, 400, bodies[i].msg);
		it_resp_free(r);
	}
	{
		char reason[202];

		memset(reason, 'r', 201);
		reason[201] = '\0';
		r = it_callf("POST", "/v1/dnc", org.key, "{\"phoneNumber\":\"+15550000001\",\"reason\":\"%s\"}",
			     reason);
		expect_msg(r, 400, "reason must be at most 200");
		it_resp_free(r);
	}
	for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
		r = it_call("GET", paths[i], org.key, NULL, NULL);
		expect_msg(r, 400, "E.164");
		it_resp_free(r);
		r = it_call("DELETE", paths[i], org.key, NULL, NULL);
		expect_msg(r, 400, "E.164");
		it_resp_free(r);
	}
	assert_int_equal(dnc_in(&org), 0);
}

static void test_dnc_isolation(void **state)
{
	struct it_org a, b;
	char phone[20], path[128];
	struct it_resp *r;

	(void)state;
	it_org_new(&a, 100);
	it_org_new(&b, 100);
	it_phone(phone, 3);
	dnc_path(path, sizeof(path), phone);
	r = it_callf("POST", "/v1/dnc", a.key, "{\"phoneNumber\":\"%s\",\"reason\":\"A\"}", phone);
	it_expect(r, 201);
	it_resp_free(r);

	r = it_call("GET", path, b.key, NULL, NULL);
	it_expect(r, 404);
	it_resp_free(r);
	r = it_call("DELETE", path, b.key, NULL, NULL);
	it_expect(r, 404);
	it_resp_free(r);
	r = it_call("GET", "/v1/dnc", b.key, NULL, NULL);
	it_expect(r, 200);
	assert_int_equal(it_int(r, "total"), 0);
	it_resp_free(r);
	assert_int_equal(dnc_in(&a), 1);
	/* B lists the same number on its own list: a new entry, A's untouched. */
	r = it_callf("POST", "/v1/dnc", b.key, "{\"phoneNumber\":\"%s\",\"reason\":\"B\"}", phone);
	it_expect(r, 201);
	assert_string_equal(it_str(r, "reason"), "B");
	it_resp_free(r);
	r = it_call("DELETE", path, b.key, NULL, NULL);
	it_expect(r, 204);
	it_resp_free(r);
	r = it_call("GET", path, a.key, NULL, NULL);
	it_expect(r, 200);
	assert_string_equal(it_str(r, "reason"), "A");
	it_resp_free(r);
	assert_int_equal(dnc_in(&a), 1);
	assert_int_equal(dnc_in(&b), 0);
}

/* ---------------------------------------------------------------- flows */

static void test_flows(void **state)
{
	struct it_org a, b;
	char path[128];
	struct it_resp *r;
	json_t *item;

	(void)state;
	it_org_new(&a, 100);
	it_org_new(&b, 100);
	r = it_call("GET", "/v1/flows", a.key, NULL, NULL);
	it_expect(r, 200);
	assert_int_equal(it_int(r, "total"), 1);
	assert_int_equal(it_int(r, "page"), 1);
	assert_int_equal(it_int(r, "totalPages"), 1);
	item = json_array_get(json_object_get(r->json, "data"), 0);
	assert_string_equal(json_string_value(json_object_get(item, "id")), a.flow_id);
	it_resp_free(r);

	snprintf(path, sizeof(path), "/v1/flows/%s", a.flow_id);
	r = it_call("GET", path, a.key, NULL, NULL);
	it_expect(r, 200);
	assert_int_equal(json_object_size(r->json), 4);
	assert_string_equal(it_str(r, "id"), a.flow_id);
	assert_int_equal(strncmp(it_str(r, "id"), "flow_", 5), 0);
	assert_string_equal(it_str(r, "name"), "it flow");
	assert_string_equal(it_str(r, "voiceUrl"), "http://127.0.0.1:9/voice.xml");
	expect_time(it_str(r, "createdAt"));
	it_resp_free(r);

	/* Another organization's flow is unknown to B. */
	r = it_call("GET", path, b.key, NULL, NULL);
	expect_msg(r, 404, a.flow_id);
	it_resp_free(r);
	r = it_call("GET", "/v1/flows", b.key, NULL, NULL);
	it_expect(r, 200);
	assert_int_equal(it_int(r, "total"), 1);
	assert_false(list_has_id(r, "id", a.flow_id));
	assert_true(list_has_id(r, "id", b.flow_id));
	it_resp_free(r);
	r = it_call("GET", "/v1/flows/flow_aaaaaaaaaaaaaaaaaaaaaaaa", a.key, NULL, NULL);
	it_expect(r, 404);
	it_resp_free(r);
	r = it_call("GET", "/v1/flows?page=abc", a.key, NULL, NULL);
	it_expect(r, 400);
	it_resp_free(r);
	r = it_call("GET", "/v1/flows?page=2", a.key, NULL, NULL);
	it_expect(r, 200);
	assert_int_equal(it_int(r, "total"), 1);
	assert_int_equal(json_array_size(json_object_get(r->json, "data")), 0);
	it_resp_free(r);
}

static void test_auth(void **state)
{
	static const struct {
		const char *method, *path;
	} routes[] = {
		{"GET", "/v1/contacts"},      {"POST", "/v1/contacts"}, {"POST", "/v1/contacts/bulk"},
		{"GET", "/v1/contacts/ct_x"}, {"GET", "/v1/dnc"},       {"GET", "/v1/dnc/%2B15550000001"},
		{"GET", "/v1/flows"},         {"GET", "/v1/flows/flow_x"},
	};
	struct it_resp *r;

	(void)state;
	for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
		r = it_call(routes[i].method, routes[i].path, NULL, NULL, NULL);
		it_expect(r, 401);
		it_resp_free(r);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_create_get_shape),
		cmocka_unit_test(test_list_paging),
		cmocka_unit_test(test_search),
		cmocka_unit_test(test_patch),
		cmocka_unit_test(test_delete),
		cmocka_unit_test(test_create_invalid),
		cmocka_unit_test(test_duplicate_phone),
		cmocka_unit_test(test_isolation),
		cmocka_unit_test(test_bulk_create_update),
		cmocka_unit_test(test_bulk_limits),
		cmocka_unit_test(test_bulk_invalid_changes_nothing),
		cmocka_unit_test(test_dnc),
		cmocka_unit_test(test_dnc_invalid),
		cmocka_unit_test(test_dnc_isolation),
		cmocka_unit_test(test_flows),
		cmocka_unit_test(test_auth),
	};

	return cmocka_run_group_tests_name("contacts, dnc and flows api", tests, NULL, NULL);
}
