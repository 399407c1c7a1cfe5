/* Integration tests of the Audiences and Imports APIs against the real
 * server and database: shapes, membership counts, isolation between
 * organizations, and imports processed by the API's worker thread. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "it_lib.h"

/* ------------------------------------------------------------ helpers */

static char *new_audience(const struct it_org *org, const char *name)
{
	struct it_resp *r = it_callf("POST", "/v1/audiences", org->key, "{\"name\":\"%s\"}", name);
	char *id;

	it_expect(r, 201);
	id = strdup(it_str(r, "id"));
	it_resp_free(r);
	return id;
}

static char *new_contact(const struct it_org *org)
{
	struct it_resp *r;
	char phone[20], *id;

	it_phone(phone, 1);
	r = it_callf("POST", "/v1/contacts", org->key, "{\"phoneNumber\":\"%s\",\"name\":\"N %s\"}", phone, phone);
	it_expect(r, 201);
	id = strdup(it_str(r, "id"));
	it_resp_free(r);
	return id;
}

/* POST or DELETE /v1/audiences/:id/contacts with a raw contactIds list. */
static struct it_resp *members(const struct it_org *org, const char *method, const char *audience,
			       const char *ids)
{
	char path[160];

	snprintf(path, sizeof(path), "/v1/audiences/%s/contacts", audience);
	return it_callf(method, path, org->key, "{\"contactIds\":[%s]}", ids);
}

static long long stored_members(const char *audience)
{
	return it_db_count("SELECT count(*) FROM audience_contacts WHERE audience_id = $1", audience, NULL);
}

static long long contact_count(const struct it_org *org, const char *audience)
{
	char path[160];
	struct it_resp *r;
	long long n;

	snprintf(path, sizeof(path), "/v1/audiences/%s", audience);
	r = it_call("GET", path, org->key, NULL, NULL);
	it_expect(r, 200);
	n = it_int(r, "contactCount");
	it_resp_free(r);
	return n;
}

static void expect_message(const struct it_resp *r, const char *part)
{
	const char *msg = it_str(r, "message");

	if (msg == NULL || strstr(msg, part) == NULL)
		fail_msg("message lacks \"%s\": %s", part, r->body);
}

static void expect_iso_time(json_t *v)
{
	const char *s = json_string_value(v);

	if (s == NULL || strlen(s) != 24 || s[10] != 'T' || s[19] != '.' || s[23] != 'Z')
		fail_msg("not an ISO 8601 UTC time with milliseconds: %s", s ? s : "(not a string)");
}

/* ------------------------------------------------------------ audiences */

static void test_audience_crud(void **state)
{
	static const char *const keys[] = {"id", "name", "description", "contactCount", "createdAt", "updatedAt"};
	struct it_org org;
	struct it_resp *r;
	char path[160], *a, *b;

	(void)state;
	it_org_new(&org, 100);
	r = it_call("POST", "/v1/audiences", org.key, "{\"name\":\"Pune leads\"}", NULL);
	it_expect(r, 201);
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
		if (json_object_get(r->json, keys[i]) == NULL)
			fail_msg("audience lacks %s: %s", keys[i], r->body);
	assert_int_equal(json_object_size(r->json), 6);
	assert_int_equal(strncmp(it_str(r, "id"), "aud_", 4), 0);
	assert_int_equal(strlen(it_str(r, "id")), 4 + 24);
	assert_string_equal(it_str(r, "name"), "Pune leads");
	assert_true(json_is_null(json_object_get(r->json, "description")));
	assert_int_equal(it_int(r, "contactCount"), 0);
	expect_iso_time(json_object_get(r->json, "createdAt"));
	expect_iso_time(json_object_get(r->json, "updatedAt"));
	a = strdup(it_str(r, "id"));
	it_resp_free(r);

	r = it_call("POST", "/v1/audiences", org.key, "{\"name\":\"Delhi\",\"description\":\"Walk-ins, March\"}",
		    NULL);
	it_expect(r, 201);
	assert_string_equal(it_str(r, "description"), "Walk-ins, March");
	b = strdup(it_str(r, "id"));
	it_resp_free(r);

	snprintf(path, sizeof(path), "/v1/audiences/%s", a);
	r = it_call("GET", path, org.key, NULL, NULL);
	it_expect(r, 200);
	assert_string_equal(it_str(r, "id"), a);
	assert_string_equal(it_str(r, "name"), "Pune leads");
	it_resp_free(r);

	/* Lists: newest first, paged. */
	r = it_call("GET", "/v1/audiences", org.key, NULL, NULL);
	it_expect(r, 200);
	assert_int_equal(it_int(r, "total"), 2);
	assert_int_equal(it_int(r, "page"), 1);
	assert_int_equal(it_int(r, "limit"), 20);
	assert_int_equal(it_int(r, "totalPages"), 1);
	assert_int_equal(json_array_size(json_object_get(r->json, "data")), 2);
	assert_string_equal(json_string_value(json_object_get(json_array_get(json_object_get(r->json, "data"), 0), "id")),
			    b);
	it_resp_free(r);
	r = it_call("GET", "/v1/audiences?limit=1&page=2", org.key, NULL, NULL);
	it_expect(r, 200);
	assert_int_equal(it_int(r, "total"), 2);
	assert_int_equal(it_int(r, "totalPages"), 2);
	assert_int_equal(json_array_size(json_object_get(r->json, "data")), 1);
	assert_string_equal(json_string_value(json_object_get(json_array_get(json_object_get(r->json, "data"), 0), "id")),
			    a);
	it_resp_free(r);
	r = it_call("GET", "/v1/audiences?page=3&limit=1", org.key, NULL, NULL);
	it_expect(r, 200);
	assert_int_equal(it_int(r, "total"), 2);
	assert_int_equal(json_array_size(json_object_get(r->json, "data")), 0);
	it_resp_free(r);
	r = it_call("GET", "/v1/audiences?limit=0", org.key, NULL, NULL);
	it_expect(r, 400);
	it_resp_free(r);

	/* PATCH: a subset; description may be cleared with null. */
	r = it_call("PATCH", path, org.key, "{\"description\":\"Pune, all of March\"}", NULL);
	it_expect(r, 200);
	assert_string_equal(it_str(r, "name"), "Pune leads");
	assert_string_equal(it_str(r, "description"), "Pune, all of March");
	it_resp_free(r);
	r = it_call("PATCH", path, org.key, "{\"name\":\"Pune\"}", NULL);
	it_expect(r, 200);
	assert_string_equal(it_str(r, "name"), "Pune");
	assert_string_equal(it_str(r, "description"), "Pune, all of March");
	it_resp_free(r);
	r = it_call("PATCH", path, org.key, "{\"description\":null}", NULL);
	it_expect(r, 200);
	assert_true(json_is_null(json_object_get(r->json, "description")));
	assert_string_equal(it_str(r, "name"), "Pune");
	it_resp_free(r);
	r = it_call("PATCH", path, org.key, "{\"name\":null}", NULL);
	it_expect(r, 400);
	it_resp_free(r);
	r = it_call("PATCH", "/v1/audiences/aud_doesnotexist000000000000", org.key, "{\"name\":\"x\"}", NULL);
	it_expect(r, 404);
	it_resp_free(r);

	/* DELETE: 204 once, then 404. */
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
	free(a);
	free(b);
}

static void test_audience_invalid(void **state)
{
	static const struct {
		const char *body;
		const char *msg;
	} cases[] = {
		{"{}", "name is required"},
		{"{\"name\":\"\"}", "name must be 1 to 200"},
		{"{\"name\":null}", "name must not be null"},
		{"{\"name\":7}", "name must be a string"},
		{"{\"name\":\"a\",\"description\":5}", "description must be a string"},
		{"{\"name\":\"a\",\"contactCount\":5}", "unknown field"},
		{"[]", "JSON object"},
	};
	struct it_org org;
	struct it_resp *r;
	char *longname, *longdesc;

	(void)state;
	it_org_new(&org, 100);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		r = it_call("POST", "/v1/audiences", org.key, cases[i].body, NULL);
		it_expect(r, 400);
		expect_message(r, cases[i].msg);
		it_resp_free(r);
	}
	longname = calloc(1, 202);
	longdesc = calloc(1, 1002);
	memset(longname, 'n', 201);
	memset(longdesc, 'd', 1001);
	r = it_callf("POST", "/v1/audiences", org.key, "{\"name\":\"%s\"}", longname);
	it_expect(r, 400);
	it_resp_free(r);
	r = it_callf("POST", "/v1/audiences", org.key, "{\"name\":\"a\",\"description\":\"%s\"}", longdesc);
	it_expect(r, 400);
	it_resp_free(r);
	/* The limits themselves are allowed. */
	longname[200] = '\0';
	longdesc[1000] = '\0';
	r = it_callf("POST", "/v1/audiences", org.key, "{\"name\":\"%s\",\"description\":\"%s\"}", longname, longdesc);
	it_expect(r, 201);
	it_resp_free(r);
	assert_int_equal(it_db_count("SELECT count(*) FROM audiences WHERE organization_id = $1", org.id, NULL), 1);
	free(longname);
	free(longdesc);
}

static void test_members_count(void **state)
{
	struct it_org org;
	struct it_resp *r;
	char *aud, *c1, *c2, *c3, ids[256];

	(void)state;
	it_org_new(&org, 100);
	aud = new_audience(&org, "Members");
	c1 = new_contact(&org);
	c2 = new_contact(&org);
	c3 = new_contact(&org);

	snprintf(ids, sizeof(ids), "\"%s\",\"%s\"", c1, c2);
	r = members(&org, "POST", aud, ids);
	it_expect(r, 200);
	assert_int_equal(it_int(r, "added"), 2);
	assert_int_equal(it_int(r, "contactCount"), 2);
	assert_int_equal(json_object_size(r->json), 2);
	it_resp_free(r);

	/* The same id twice, and one already there, count once. */
	snprintf(ids, sizeof(ids), "\"%s\",\"%s\",\"%s\",\"%s\"", c1, c3, c3, c2);
	r = members(&org, "POST", aud, ids);
	it_expect(r, 200);
	assert_int_equal(it_int(r, "added"), 1);
	assert_int_equal(it_int(r, "contactCount"), 3);
	it_resp_free(r);
	assert_int_equal(contact_count(&org, aud), 3);
	assert_int_equal(stored_members(aud), 3);

	/* Removing: unknown and absent ids are no-ops. */
	snprintf(ids, sizeof(ids), "\"%s\",\"ct_notamember0000000000000\"", c1);
	r = members(&org, "DELETE", aud, ids);
	it_expect(r, 200);
	assert_int_equal(it_int(r, "removed"), 1);
	assert_int_equal(it_int(r, "contactCount"), 2);
	it_resp_free(r);
	snprintf(ids, sizeof(ids), "\"%s\"", c1);
	r = members(&org, "DELETE", aud, ids);
	it_expect(r, 200);
	assert_int_equal(it_int(r, "removed"), 0);
	assert_int_equal(it_int(r, "contactCount"), 2);
	it_resp_free(r);
	assert_int_equal(contact_count(&org, aud), 2);
	assert_int_equal(stored_members(aud), 2);

	/* A deleted contact leaves the audience and its count. */
	{
		char path[160];

		snprintf(path, sizeof(path), "/v1/contacts/%s", c2);
		r = it_call("DELETE", path, org.key, NULL, NULL);
		it_expect(r, 204);
		it_resp_free(r);
	}
	assert_int_equal(contact_count(&org, aud), 1);
	assert_int_equal(stored_members(aud), 1);

	/* Unknown audience. */
	r = members(&org, "POST", "aud_doesnotexist000000000000", ids);
	it_expect(r, 404);
	it_resp_free(r);
	r = members(&org, "DELETE", "aud_doesnotexist000000000000", ids);
	it_expect(r, 404);
	it_resp_free(r);
	free(aud);
	free(c1);
	free(c2);
	free(c3);
}

static void test_members_invalid(void **state)
{
	struct it_org org, other;
	struct it_resp *r;
	char *aud, *c1, *foreign, ids[256], *many;
	char path[160];
	size_t len = 0;

	(void)state;
	it_org_new(&org, 100);
	it_org_new(&other, 100);
	aud = new_audience(&org, "Strict");
	c1 = new_contact(&org);
	foreign = new_contact(&other);

	/* One unknown id: 400 naming it, and the valid one is not added either. */
	snprintf(ids, sizeof(ids), "\"%s\",\"ct_doesnotexist00000000000\"", c1);
	r = members(&org, "POST", aud, ids);
	it_expect(r, 400);
	expect_message(r, "ct_doesnotexist00000000000");
	expect_message(r, "contactIds[1]");
	it_resp_free(r);
	assert_int_equal(stored_members(aud), 0);
	assert_int_equal(contact_count(&org, aud), 0);

	/* Another organization's contact is unknown here. */
	snprintf(ids, sizeof(ids), "\"%s\",\"%s\"", c1, foreign);
	r = members(&org, "POST", aud, ids);
	it_expect(r, 400);
	expect_message(r, foreign);
	it_resp_free(r);
	assert_int_equal(stored_members(aud), 0);

	/* Bodies. */
	{
		static const char *const bodies[] = {
			"{\"contactIds\":[]}", "{\"contactIds\":\"ct_x\"}", "{\"contactIds\":[5]}",
			"{\"contactIds\":[\"\"]}", "{\"contactIds\":[\"ct x\"]}", "{}", "{\"contactIds\":null}",
			"{\"contactIds\":[\"ct_a\"],\"extra\":1}",
		};
		snprintf(path, sizeof(path), "/v1/audiences/%s/contacts", aud);
		for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
			r = it_call("POST", path, org.key, bodies[i], NULL);
			it_expect(r, 400);
			it_resp_free(r);
			r = it_call("DELETE", path, org.key, bodies[i], NULL);
			it_expect(r, 400);
			it_resp_free(r);
		}
	}
	/* 1001 ids is over the cap. */
	many = malloc(1001 * 32);
	for (int i = 0; i < 1001; i++)
		len += (size_t)sprintf(many + len, "%s\"%s\"", i ? "," : "", c1);
	r = members(&org, "POST", aud, many);
	it_expect(r, 400);
	expect_message(r, "contactIds");
	it_resp_free(r);
	/* 1000 is fine (all the same contact: it is added once). */
	many[len - strlen(c1) - 3] = '\0';
	r = members(&org, "POST", aud, many);
	it_expect(r, 200);
	assert_int_equal(it_int(r, "added"), 1);
	assert_int_equal(it_int(r, "contactCount"), 1);
	it_resp_free(r);
	free(many);
	free(aud);
	free(c1);
	free(foreign);
}

static void test_list_contacts(void **state)
{
	static const char *const keys[] = {"id", "phoneNumber", "name", "language", "metadata", "createdAt", "updatedAt"};
	struct it_org org;
	struct it_resp *r;
	char *aud, *c[5], ids[512], path[200];
	json_t *seen = json_object();

	(void)state;
	it_org_new(&org, 100);
	aud = new_audience(&org, "Paged");
	for (int i = 0; i < 5; i++)
		c[i] = new_contact(&org);
	snprintf(ids, sizeof(ids), "\"%s\",\"%s\"", c[0], c[1]);
	r = members(&org, "POST", aud, ids);
	it_expect(r, 200);
	it_resp_free(r);
	snprintf(ids, sizeof(ids), "\"%s\",\"%s\",\"%s\"", c[2], c[3], c[4]);
	r = members(&org, "POST", aud, ids);
	it_expect(r, 200);
	it_resp_free(r);

	for (int page = 1; page <= 4; page++) {
		json_t *data, *item;
		size_t i;

		snprintf(path, sizeof(path), "/v1/audiences/%s/contacts?limit=2&page=%d", aud, page);
		r = it_call("GET", path, org.key, NULL, NULL);
		it_expect(r, 200);
		assert_int_equal(it_int(r, "total"), 5);
		assert_int_equal(it_int(r, "page"), page);
		assert_int_equal(it_int(r, "limit"), 2);
		assert_int_equal(it_int(r, "totalPages"), 3);
		data = json_object_get(r->json, "data");
		assert_int_equal(json_array_size(data), page < 3 ? 2 : page == 3 ? 1 : 0);
		json_array_foreach(data, i, item) {
			for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++)
				if (json_object_get(item, keys[k]) == NULL)
					fail_msg("contact lacks %s: %s", keys[k], r->body);
			assert_int_equal(json_object_size(item), 7);
			assert_true(json_is_object(json_object_get(item, "metadata")));
			assert_int_equal(strncmp(json_string_value(json_object_get(item, "id")), "ct_", 3), 0);
			expect_iso_time(json_object_get(item, "createdAt"));
			if (json_object_get(seen, json_string_value(json_object_get(item, "id"))) != NULL)
				fail_msg("contact listed twice across pages: %s", r->body);
			json_object_set_new(seen, json_string_value(json_object_get(item, "id")), json_true());
		}
		it_resp_free(r);
	}
	/* Every member exactly once, in the order they were added (first batch first). */
	assert_int_equal(json_object_size(seen), 5);
	for (int i = 0; i < 5; i++)
		assert_non_null(json_object_get(seen, c[i]));
	snprintf(path, sizeof(path), "/v1/audiences/%s/contacts?limit=2", aud);
	r = it_call("GET", path, org.key, NULL, NULL);
	it_expect(r, 200);
	{
		const char *first = json_string_value(json_object_get(json_array_get(json_object_get(r->json, "data"), 0), "id"));
		const char *second = json_string_value(json_object_get(json_array_get(json_object_get(r->json, "data"), 1), "id"));

		assert_true((!strcmp(first, c[0]) && !strcmp(second, c[1])) ||
			    (!strcmp(first, c[1]) && !strcmp(second, c[0])));
	}
	it_resp_free(r);
	snprintf(path, sizeof(path), "/v1/audiences/%s/contacts?limit=abc", aud);
	r = it_call("GET", path, org.key, NULL, NULL);
	it_expect(r, 400);
	it_resp_free(r);
	r = it_call("GET", "/v1/audiences/aud_doesnotexist000000000000/contacts", org.key, NULL, NULL);
	it_expect(r, 404);
	it_resp_free(r);
	json_decref(seen);
	for (int i = 0; i < 5; i++)
		free(c[i]);
	free(aud);
}

static void test_delete_in_use(void **state)
{
	struct it_org org;
	struct it_resp *r;
	char *aud, *spare, *camp, path[160], cpath[160];

	(void)state;
	it_org_new(&org, 100);
	aud = new_audience(&org, "Used");
	spare = new_audience(&org, "Spare");
	r = it_callf("POST", "/v1/campaigns", org.key, "{\"name\":\"Uses it\",\"flowId\":\"%s\",\"audienceId\":\"%s\"}",
		     org.flow_id, aud);
	it_expect(r, 201);
	camp = strdup(it_str(r, "id"));
	it_resp_free(r);

	snprintf(path, sizeof(path), "/v1/audiences/%s", aud);
	r = it_call("DELETE", path, org.key, NULL, NULL);
	it_expect(r, 409);
	expect_message(r, camp);
	it_resp_free(r);
	assert_int_equal(it_db_count("SELECT count(*) FROM audiences WHERE id = $1", aud, NULL), 1);

	/* A finished campaign keeps its audience too: it still refers to it. */
	snprintf(cpath, sizeof(cpath), "/v1/campaigns/%s/cancel", camp);
	r = it_call("POST", cpath, org.key, NULL, NULL);
	it_expect(r, 200);
	it_resp_free(r);
	r = it_call("DELETE", path, org.key, NULL, NULL);
	it_expect(r, 409);
	expect_message(r, "CANCELLED");
	it_resp_free(r);

	/* Once no campaign refers to it, it goes. */
	r = it_callf("POST", "/v1/campaigns", org.key, "{\"name\":\"Draft\",\"flowId\":\"%s\",\"audienceId\":\"%s\"}",
		     org.flow_id, spare);
	it_expect(r, 201);
	snprintf(cpath, sizeof(cpath), "/v1/campaigns/%s", it_str(r, "id"));
	it_resp_free(r);
	snprintf(path, sizeof(path), "/v1/audiences/%s", spare);
	r = it_call("DELETE", path, org.key, NULL, NULL);
	it_expect(r, 409);
	expect_message(r, "DRAFT");
	it_resp_free(r);
	r = it_call("DELETE", cpath, org.key, NULL, NULL);
	it_expect(r, 204);
	it_resp_free(r);
	r = it_call("DELETE", path, org.key, NULL, NULL);
	it_expect(r, 204);
	it_resp_free(r);
	free(aud);
	free(spare);
	free(camp);
}

static void test_audience_isolation(void **state)
{
	static const struct {
		const char *method;
		const char *suffix;
		const char *body;
	} routes[] = {
		{"GET", "", NULL},
		{"PATCH", "", "{\"name\":\"mine now\"}"},
		{"DELETE", "", NULL},
		{"GET", "/contacts", NULL},
		{"POST", "/contacts", "IDS"},
		{"DELETE", "/contacts", "IDS"},
	};
	struct it_org a, b;
	struct it_resp *r;
	char *aud, *ca, *cb, path[200], ids[128];

	(void)state;
	it_org_new(&a, 100);
	it_org_new(&b, 100);
	aud = new_audience(&a, "A's");
	ca = new_contact(&a);
	cb = new_contact(&b);
	snprintf(ids, sizeof(ids), "\"%s\"", ca);
	r = members(&a, "POST", aud, ids);
	it_expect(r, 200);
	it_resp_free(r);

	for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
		/* B uses its own contact and A's: neither may reach A's audience. */
		for (int who = 0; who < 2; who++) {
			char body[160];

			snprintf(path, sizeof(path), "/v1/audiences/%s%s", aud, routes[i].suffix);
			if (routes[i].body != NULL && !strcmp(routes[i].body, "IDS"))
				snprintf(body, sizeof(body), "{\"contactIds\":[\"%s\"]}", who ? ca : cb);
			else
				snprintf(body, sizeof(body), "%s", routes[i].body ? routes[i].body : "");
			r = it_call(routes[i].method, path, b.key, routes[i].body ? body : NULL, NULL);
			if (r->status != 404)
				fail_msg("%s %s by another organization: %ld %s", routes[i].method, path, r->status,
					 r->body);
			it_expect(r, 404);
			it_resp_free(r);
		}
	}
	r = it_call("GET", "/v1/audiences", b.key, NULL, NULL);
	it_expect(r, 200);
	assert_int_equal(it_int(r, "total"), 0);
	it_resp_free(r);
	/* A's audience is as it was. */
	snprintf(path, sizeof(path), "/v1/audiences/%s", aud);
	r = it_call("GET", path, a.key, NULL, NULL);
	it_expect(r, 200);
	assert_string_equal(it_str(r, "name"), "A's");
	assert_int_equal(it_int(r, "contactCount"), 1);
	it_resp_free(r);
	assert_int_equal(stored_members(aud), 1);
	/* Without a key: 401. */
	r = it_call("GET", path, NULL, NULL, NULL);
	it_expect(r, 401);
	it_resp_free(r);
	free(aud);
	free(ca);
	free(cb);
}

/* ------------------------------------------------------------ imports */

struct import_wait {
	const char *key;
	const char *id;
	struct it_resp *last; /* the final status answer */
};

static int import_done(void *arg)
{
	struct import_wait *w = arg;
	char path[160];
	const char *status;

	snprintf(path, sizeof(path), "/v1/imports/%s/status", w->id);
	it_resp_free(w->last);
	w->last = it_call("GET", path, w->key, NULL, NULL);
	it_expect(w->last, 200);
	status = it_str(w->last, "status");
	return status != NULL && strcmp(status, "PENDING") != 0 && strcmp(status, "PROCESSING") != 0;
}

/* Polls an import until it is finished; returns its final state (caller frees). */
static struct it_resp *import_wait(const struct it_org *org, const char *id, int timeout_ms)
{
	struct import_wait w = {org->key, id, NULL};

	if (!it_poll(import_done, &w, timeout_ms))
		fail_msg("import %s not finished after %d ms: %s", id, timeout_ms, w.last ? w.last->body : "");
	return w.last;
}

/* Starts an import of body; returns its id (caller frees). */
static char *import_start(const struct it_org *org, const char *body)
{
	struct it_resp *r = it_call("POST", "/v1/imports/api/bulk", org->key, body, NULL);
	char *id;

	it_expect(r, 202);
	id = strdup(it_str(r, "id"));
	it_resp_free(r);
	return id;
}

static json_t *error_for_row(const struct it_resp *r, long long row)
{
	size_t i;
	json_t *e;

	json_array_foreach(json_object_get(r->json, "errors"), i, e)
		if (json_integer_value(json_object_get(e, "row")) == row)
			return e;
	return NULL;
}

/* The contact with phone, read through the API. */
static struct it_resp *contact_by_phone(const struct it_org *org, const char *phone)
{
	char path[200];
	struct it_resp *r;
	json_t *first;

	snprintf(path, sizeof(path), "/v1/contacts?search=%%2B%s", phone + 1);
	r = it_call("GET", path, org->key, NULL, NULL);
	it_expect(r, 200);
	assert_int_equal(it_int(r, "total"), 1);
	first = json_array_get(json_object_get(r->json, "data"), 0);
	snprintf(path, sizeof(path), "/v1/contacts/%s", json_string_value(json_object_get(first, "id")));
	it_resp_free(r);
	r = it_call("GET", path, org->key, NULL, NULL);
	it_expect(r, 200);
	return r;
}

static void test_import_completed(void **state)
{
	static const char *const keys[] = {"id", "status", "audienceId", "total", "processed", "created",
					   "updated", "failed", "errors", "createdAt", "completedAt"};
	struct it_org org;
	struct it_resp *r;
	char p[3][20], body[1024], *id;

	(void)state;
	it_org_new(&org, 100);
	for (int i = 0; i < 3; i++)
		it_phone(p[i], i);
	snprintf(body, sizeof(body),
		 "{\"contacts\":[{\"phoneNumber\":\"%s\",\"name\":\"Asha\",\"language\":\"hi-IN\"},"
		 "{\"phoneNumber\":\"%s\"},{\"phoneNumber\":\"%s\",\"name\":\"Ravi\"}]}",
		 p[0], p[1], p[2]);
	r = it_call("POST", "/v1/imports/api/bulk", org.key, body, NULL);
	it_expect(r, 202);
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
		if (json_object_get(r->json, keys[i]) == NULL)
			fail_msg("import lacks %s: %s", keys[i], r->body);
	assert_int_equal(json_object_size(r->json), 11);
	assert_int_equal(strncmp(it_str(r, "id"), "imp_", 4), 0);
	assert_string_equal(it_str(r, "status"), "PENDING");
	assert_true(json_is_null(json_object_get(r->json, "audienceId")));
	assert_int_equal(it_int(r, "total"), 3);
	assert_int_equal(it_int(r, "processed"), 0);
	assert_int_equal(it_int(r, "created"), 0);
	assert_int_equal(it_int(r, "failed"), 0);
	assert_int_equal(json_array_size(json_object_get(r->json, "errors")), 0);
	assert_true(json_is_array(json_object_get(r->json, "errors")));
	expect_iso_time(json_object_get(r->json, "createdAt"));
	assert_true(json_is_null(json_object_get(r->json, "completedAt")));
	id = strdup(it_str(r, "id"));
	it_resp_free(r);

	r = import_wait(&org, id, 20000);
	assert_string_equal(it_str(r, "status"), "COMPLETED");
	assert_int_equal(it_int(r, "total"), 3);
	assert_int_equal(it_int(r, "processed"), 3);
	assert_int_equal(it_int(r, "created"), 3);
	assert_int_equal(it_int(r, "updated"), 0);
	assert_int_equal(it_int(r, "failed"), 0);
	assert_int_equal(json_array_size(json_object_get(r->json, "errors")), 0);
	expect_iso_time(json_object_get(r->json, "completedAt"));
	it_resp_free(r);
	assert_int_equal(it_db_count("SELECT count(*) FROM contacts WHERE organization_id = $1", org.id, NULL), 3);
	/* The rows are not kept once applied. */
	assert_int_equal(it_db_count("SELECT count(*) FROM imports WHERE id = $1 AND payload IS NULL", id, NULL), 1);
	r = contact_by_phone(&org, p[0]);
	assert_string_equal(it_str(r, "name"), "Asha");
	assert_string_equal(it_str(r, "language"), "hi-IN");
	it_resp_free(r);
	free(id);

	/* The same numbers again: updated, not duplicated; a missing name keeps the stored one. */
	snprintf(body, sizeof(body),
		 "{\"contacts\":[{\"phoneNumber\":\"%s\",\"name\":\"Asha K\"},{\"phoneNumber\":\"%s\"}]}", p[0], p[2]);
	id = import_start(&org, body);
	r = import_wait(&org, id, 20000);
	assert_string_equal(it_str(r, "status"), "COMPLETED");
	assert_int_equal(it_int(r, "created"), 0);
	assert_int_equal(it_int(r, "updated"), 2);
	it_resp_free(r);
	assert_int_equal(it_db_count("SELECT count(*) FROM contacts WHERE organization_id = $1", org.id, NULL), 3);
	r = contact_by_phone(&org, p[0]);
	assert_string_equal(it_str(r, "name"), "Asha K");
	assert_string_equal(it_str(r, "language"), "hi-IN");
	it_resp_free(r);
	r = contact_by_phone(&org, p[2]);
	assert_string_equal(it_str(r, "name"), "Ravi");
	it_resp_free(r);
	free(id);
}

static void test_import_row_errors(void **state)
{
	struct it_org org;
	struct it_resp *r;
	char p[2][20], body[2048], *id;
	json_t *e;

	(void)state;
	it_org_new(&org, 100);
	it_phone(p[0], 1);
	it_phone(p[1], 2);
	snprintf(body, sizeof(body),
		 "{\"contacts\":["
		 "{\"phoneNumber\":\"%s\"},"                       /* 0 ok */
		 "{\"phoneNumber\":\"555-0100\"},"                 /* 1 not E.164 */
		 "{\"name\":\"No Phone\"},"                        /* 2 no phone */
		 "{\"phoneNumber\":\"%s\",\"language\":\"en\"},"   /* 3 ok */
		 "{\"phoneNumber\":\"%s\",\"name\":\"Again\"},"    /* 4 repeats row 0 */
		 "{\"phoneNumber\":\"+14155550199\",\"language\":\"en_US\"}," /* 5 bad language */
		 "\"just text\","                                   /* 6 not an object */
		 "{\"phoneNumber\":\"+14155550198\",\"metadata\":7}" /* 7 bad metadata */
		 "]}",
		 p[0], p[1], p[0]);
	id = import_start(&org, body);
	r = import_wait(&org, id, 20000);
	assert_string_equal(it_str(r, "status"), "COMPLETED_WITH_ERRORS");
	assert_int_equal(it_int(r, "total"), 8);
	assert_int_equal(it_int(r, "processed"), 8);
	assert_int_equal(it_int(r, "created"), 2);
	assert_int_equal(it_int(r, "updated"), 0);
	assert_int_equal(it_int(r, "failed"), 6);
	assert_int_equal(json_array_size(json_object_get(r->json, "errors")), 6);
	assert_null(error_for_row(r, 0));
	assert_null(error_for_row(r, 3));
	e = error_for_row(r, 1);
	assert_non_null(e);
	assert_string_equal(json_string_value(json_object_get(e, "phoneNumber")), "555-0100");
	assert_non_null(strstr(json_string_value(json_object_get(e, "message")), "phoneNumber"));
	e = error_for_row(r, 2);
	assert_non_null(e);
	assert_true(json_is_null(json_object_get(e, "phoneNumber")));
	assert_non_null(strstr(json_string_value(json_object_get(e, "message")), "phoneNumber is required"));
	e = error_for_row(r, 4);
	assert_non_null(e);
	assert_string_equal(json_string_value(json_object_get(e, "phoneNumber")), p[0]);
	assert_non_null(strstr(json_string_value(json_object_get(e, "message")), "row 0"));
	e = error_for_row(r, 5);
	assert_non_null(e);
	assert_non_null(strstr(json_string_value(json_object_get(e, "message")), "language"));
	assert_non_null(error_for_row(r, 6));
	e = error_for_row(r, 7);
	assert_non_null(e);
	assert_non_null(strstr(json_string_value(json_object_get(e, "message")), "metadata"));
	it_resp_free(r);
	free(id);
	assert_int_equal(it_db_count("SELECT count(*) FROM contacts WHERE organization_id = $1", org.id, NULL), 2);

	/* Nothing valid at all: FAILED. */
	id = import_start(&org, "{\"contacts\":[{\"phoneNumber\":\"0\"},{\"phoneNumber\":null}]}");
	r = import_wait(&org, id, 20000);
	assert_string_equal(it_str(r, "status"), "FAILED");
	assert_int_equal(it_int(r, "failed"), 2);
	assert_int_equal(it_int(r, "created") + it_int(r, "updated"), 0);
	assert_int_equal(json_array_size(json_object_get(r->json, "errors")), 2);
	expect_iso_time(json_object_get(r->json, "completedAt"));
	it_resp_free(r);
	free(id);
}

static void test_import_metadata(void **state)
{
	struct it_org org;
	struct it_resp *r;
	char phone[20], body[1024], *id;
	json_t *meta;

	(void)state;
	it_org_new(&org, 100);
	it_phone(phone, 3);
	snprintf(body, sizeof(body),
		 "{\"contacts\":[{\"phoneNumber\":\"%s\",\"name\":\"Meta\",\"city\":\"Pune\",\"age\":41,"
		 "\"vip\":true,\"tags\":[\"a\",\"b\"],\"metadata\":{\"source\":\"fair\"}}]}",
		 phone);
	id = import_start(&org, body);
	r = import_wait(&org, id, 20000);
	assert_string_equal(it_str(r, "status"), "COMPLETED");
	it_resp_free(r);
	free(id);
	r = contact_by_phone(&org, phone);
	assert_string_equal(it_str(r, "name"), "Meta");
	meta = json_object_get(r->json, "metadata");
	assert_int_equal(json_object_size(meta), 5);
	assert_string_equal(json_string_value(json_object_get(meta, "city")), "Pune");
	assert_int_equal(json_integer_value(json_object_get(meta, "age")), 41);
	assert_true(json_is_true(json_object_get(meta, "vip")));
	assert_int_equal(json_array_size(json_object_get(meta, "tags")), 2);
	assert_string_equal(json_string_value(json_object_get(meta, "source")), "fair");
	assert_null(json_object_get(meta, "name"));
	assert_null(json_object_get(meta, "phoneNumber"));
	it_resp_free(r);
}

static void test_import_audience(void **state)
{
	struct it_org org;
	struct it_resp *r;
	char p[3][20], body[1024], *aud, *id, path[200];

	(void)state;
	it_org_new(&org, 100);
	aud = new_audience(&org, "Imported");
	for (int i = 0; i < 3; i++)
		it_phone(p[i], 4);
	snprintf(body, sizeof(body),
		 "{\"audienceId\":\"%s\",\"contacts\":[{\"phoneNumber\":\"%s\"},{\"phoneNumber\":\"%s\"},"
		 "{\"phoneNumber\":\"%s\"},{\"phoneNumber\":\"bad\"}]}",
		 aud, p[0], p[1], p[2]);
	r = it_call("POST", "/v1/imports/api/bulk", org.key, body, NULL);
	it_expect(r, 202);
	assert_string_equal(it_str(r, "audienceId"), aud);
	id = strdup(it_str(r, "id"));
	it_resp_free(r);
	r = import_wait(&org, id, 20000);
	assert_string_equal(it_str(r, "status"), "COMPLETED_WITH_ERRORS");
	assert_string_equal(it_str(r, "audienceId"), aud);
	assert_int_equal(it_int(r, "created"), 3);
	it_resp_free(r);
	free(id);
	assert_int_equal(contact_count(&org, aud), 3);
	assert_int_equal(stored_members(aud), 3);
	snprintf(path, sizeof(path), "/v1/audiences/%s/contacts", aud);
	r = it_call("GET", path, org.key, NULL, NULL);
	it_expect(r, 200);
	assert_int_equal(it_int(r, "total"), 3);
	assert_int_equal(json_array_size(json_object_get(r->json, "data")), 3);
	it_resp_free(r);

	/* Importing members again adds nothing twice. */
	snprintf(body, sizeof(body), "{\"audienceId\":\"%s\",\"contacts\":[{\"phoneNumber\":\"%s\"}]}", aud, p[0]);
	id = import_start(&org, body);
	r = import_wait(&org, id, 20000);
	assert_string_equal(it_str(r, "status"), "COMPLETED");
	assert_int_equal(it_int(r, "updated"), 1);
	it_resp_free(r);
	free(id);
	assert_int_equal(contact_count(&org, aud), 3);
	free(aud);
}

/* Builds {"contacts":[n rows]} with fresh numbers (caller frees). */
static char *rows_body(int n, const char *extra)
{
	size_t cap = (size_t)n * 64 + 256, len = 0;
	char *b = malloc(cap), phone[20];

	assert_non_null(b);
	len += (size_t)snprintf(b, cap, "{%s\"contacts\":[", extra);
	for (int i = 0; i < n; i++) {
		it_phone(phone, i % 10);
		len += (size_t)snprintf(b + len, cap - len, "%s{\"phoneNumber\":\"%s\",\"row\":%d}", i ? "," : "",
					phone, i);
	}
	snprintf(b + len, cap - len, "]}");
	return b;
}

static void test_import_invalid(void **state)
{
	struct it_org org, other;
	struct it_resp *r;
	char *body, *foreign, big[2100];

	(void)state;
	/* Two keys: each takes at most the bulk class's 10 calls a minute. */
	it_org_new(&org, 100);
	it_org_new(&other, 100);
	foreign = new_audience(&other, "Theirs");

	body = rows_body(10001, "");
	r = it_call("POST", "/v1/imports/api/bulk", org.key, body, NULL);
	it_expect(r, 400);
	expect_message(r, "contacts");
	it_resp_free(r);
	free(body);
	{
		static const char *const bodies[] = {
			"{\"contacts\":[]}",
			"{\"contacts\":{\"phoneNumber\":\"+14155550100\"}}",
			"{}",
			"{\"contacts\":[{\"phoneNumber\":\"+14155550100\"}],\"dryRun\":true}",
			"{\"contacts\":[{\"phoneNumber\":\"+14155550100\"}],\"audienceId\":\"aud_doesnotexist000000000000\"}",
		};
		for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
			r = it_call("POST", "/v1/imports/api/bulk", org.key, bodies[i], NULL);
			it_expect(r, 400);
			it_resp_free(r);
		}
	}
	r = it_callf("POST", "/v1/imports/api/bulk", other.key,
		     "{\"contacts\":[{\"phoneNumber\":\"+14155550100\"}],\"audienceId\":\"%s\"}", foreign);
	it_expect(r, 202);
	it_resp_free(r);
	r = it_callf("POST", "/v1/imports/api/bulk", org.key,
		     "{\"contacts\":[{\"phoneNumber\":\"+14155550100\"}],\"audienceId\":\"%s\"}", foreign);
	it_expect(r, 400);
	expect_message(r, "audienceId");
	it_resp_free(r);
	{
		static const char *const urls[] = {"ftp://example.com/hook", "example.com/hook", "http://", "http:// x"};

		for (size_t i = 0; i < sizeof(urls) / sizeof(urls[0]); i++) {
			r = it_callf("POST", "/v1/imports/api/bulk", other.key,
				     "{\"contacts\":[{\"phoneNumber\":\"+14155550100\"}],\"webhookUrl\":\"%s\"}", urls[i]);
			it_expect(r, 400);
			expect_message(r, "webhookUrl");
			it_resp_free(r);
		}
	}
	memcpy(big, "http://example.com/", 19);
	memset(big + 19, 'a', 2049 - 19);
	big[2049] = '\0';
	r = it_callf("POST", "/v1/imports/api/bulk", other.key,
		     "{\"contacts\":[{\"phoneNumber\":\"+14155550100\"}],\"webhookUrl\":\"%s\"}", big);
	it_expect(r, 400);
	it_resp_free(r);
	/* Nothing was stored for the refused requests. */
	assert_int_equal(it_db_count("SELECT count(*) FROM imports WHERE organization_id = $1", org.id, NULL), 0);
	assert_int_equal(it_db_count("SELECT count(*) FROM imports WHERE organization_id = $1", other.id, NULL), 1);
	free(foreign);
}

static void test_import_isolation(void **state)
{
	struct it_org a, b;
	struct it_resp *r;
	char *id, path[160];

	(void)state;
	it_org_new(&a, 100);
	it_org_new(&b, 100);
	id = import_start(&a, "{\"contacts\":[{\"phoneNumber\":\"+14155550100\"}]}");
	snprintf(path, sizeof(path), "/v1/imports/%s/status", id);
	r = it_call("GET", path, b.key, NULL, NULL);
	it_expect(r, 404);
	it_resp_free(r);
	r = it_call("GET", "/v1/imports/imp_doesnotexist000000000000/status", a.key, NULL, NULL);
	it_expect(r, 404);
	it_resp_free(r);
	r = import_wait(&a, id, 20000);
	assert_string_equal(it_str(r, "status"), "COMPLETED");
	it_resp_free(r);
	/* B's import of the same number makes B's own contact. */
	free(id);
	id = import_start(&b, "{\"contacts\":[{\"phoneNumber\":\"+14155550100\"}]}");
	r = import_wait(&b, id, 20000);
	assert_int_equal(it_int(r, "created"), 1);
	it_resp_free(r);
	assert_int_equal(it_db_count("SELECT count(*) FROM contacts WHERE organization_id = $1", a.id, NULL), 1);
	free(id);
}

static void test_import_rate_limit(void **state)
{
	const char *env = getenv("DIALER_API_BULK_RATE_PER_MIN");
	int limit = env && *env ? atoi(env) : 10;
	struct it_org org;
	struct it_resp *r;
	char retry[16];

	(void)state;
	if (limit > 100)
		skip();
	it_org_new(&org, 100);
	for (int i = 0; i < limit; i++) {
		r = it_call("POST", "/v1/imports/api/bulk", org.key, "{\"contacts\":[{\"phoneNumber\":\"+14155550101\"}]}",
			    NULL);
		it_expect(r, 202);
		it_resp_free(r);
	}
	r = it_call("POST", "/v1/imports/api/bulk", org.key, "{\"contacts\":[{\"phoneNumber\":\"+14155550101\"}]}", NULL);
	it_expect(r, 429);
	if (it_header(r, "Retry-After", retry, sizeof(retry)) == NULL)
		fail_msg("429 without Retry-After: %s", r->headers);
	assert_true(atoi(retry) >= 1 && atoi(retry) <= 60);
	it_resp_free(r);
	/* Only the bulk class is spent: the key still reads. */
	r = it_call("GET", "/v1/audiences", org.key, NULL, NULL);
	it_expect(r, 200);
	it_resp_free(r);
	assert_int_equal(it_db_count("SELECT count(*) FROM imports WHERE organization_id = $1", org.id, NULL), limit);
}

static void test_import_max_rows(void **state)
{
	struct it_org org;
	struct it_resp *r;
	char *body, *id;
	struct timespec t0, t1;
	double secs;

	(void)state;
	it_org_new(&org, 100);
	body = rows_body(10000, "");
	clock_gettime(CLOCK_MONOTONIC, &t0);
	id = import_start(&org, body);
	r = import_wait(&org, id, 60000);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	print_message("import of 10000 rows finished in %.3f s\n", secs);
	assert_string_equal(it_str(r, "status"), "COMPLETED");
	assert_int_equal(it_int(r, "created"), 10000);
	assert_int_equal(it_int(r, "processed"), 10000);
	it_resp_free(r);
	assert_int_equal(it_db_count("SELECT count(*) FROM contacts WHERE organization_id = $1", org.id, NULL), 10000);
	free(body);
	free(id);
}

/* An import left PROCESSING by a worker that died is taken over. */
static void test_import_takeover(void **state)
{
	struct it_org org;
	struct it_resp *r;
	char id[64], phone[20], payload[128];
	const char *params[3] = {id, NULL, payload};
	PGresult *res;

	(void)state;
	it_org_new(&org, 100);
	it_phone(phone, 5);
	snprintf(id, sizeof(id), "imp_ittakeover%010ld", (long)(random() % 10000000000L));
	snprintf(payload, sizeof(payload), "[{\"phoneNumber\":\"%s\",\"name\":\"Orphan\"}]", phone);
	params[1] = org.id;
	res = PQexecParams(it_db(),
			   "INSERT INTO imports (id, organization_id, status, total, payload, claimed_at, attempts)"
			   " VALUES ($1, $2, 'PROCESSING', 1, $3::jsonb, now() - interval '10 minutes', 1)",
			   3, NULL, params, NULL, NULL, 0);
	if (PQresultStatus(res) != PGRES_COMMAND_OK)
		fail_msg("insert failed: %s", PQresultErrorMessage(res));
	PQclear(res);
	r = import_wait(&org, id, 20000);
	assert_string_equal(it_str(r, "status"), "COMPLETED");
	assert_int_equal(it_int(r, "created"), 1);
	it_resp_free(r);
	r = contact_by_phone(&org, phone);
	assert_string_equal(it_str(r, "name"), "Orphan");
	it_resp_free(r);
}

/* ------------------------------------------------------------ webhook */

/* A webhook receiver served from the test's own polling (no thread): it
 * answers the first request 500 and the others 204, keeping the last body. */
struct receiver {
	int fd; /* non-blocking listener */
	int port;
	int requests;
	char body[8192];
};

/* Serves the connections waiting on the listener, each to its end. */
static void receiver_serve(struct receiver *rv)
{
	int c;

	while ((c = accept(rv->fd, NULL, NULL)) >= 0) {
		struct timeval tmo = {5, 0};
		char buf[16384];
		size_t len = 0;
		ssize_t got;
		const char *end, *answer;

		buf[0] = '\0';
		setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tmo, sizeof(tmo));
		while (len < sizeof(buf) - 1 && (got = read(c, buf + len, sizeof(buf) - 1 - len)) > 0) {
			const char *cl;

			len += (size_t)got;
			buf[len] = '\0';
			end = strstr(buf, "\r\n\r\n");
			if (end == NULL)
				continue;
			cl = strcasestr(buf, "Content-Length:");
			if ((long)(len - (size_t)(end + 4 - buf)) >= (cl ? atol(cl + 15) : 0))
				break;
		}
		rv->requests++;
		end = strstr(buf, "\r\n\r\n");
		if (end != NULL && !strncmp(buf, "POST ", 5))
			snprintf(rv->body, sizeof(rv->body), "%s", end + 4);
		answer = rv->requests == 1
				 ? "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
				 : "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n";
		if (write(c, answer, strlen(answer)) < 0) {
			/* the sender tries again */
		}
		close(c);
	}
}

static int receiver_got_two(void *arg)
{
	struct receiver *rv = arg;

	receiver_serve(rv);
	return rv->requests >= 2;
}

static void test_import_webhook(void **state)
{
	struct receiver rv = {.fd = -1};
	struct sockaddr_in sa = {0};
	socklen_t salen = sizeof(sa);
	struct it_org org;
	struct it_resp *r;
	char body[512], *id;
	json_t *got;

	(void)state;
	rv.fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	assert_true(rv.fd >= 0);
	sa.sin_family = AF_INET;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(rv.fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(rv.fd, 8), 0);
	assert_int_equal(getsockname(rv.fd, (struct sockaddr *)&sa, &salen), 0);
	rv.port = ntohs(sa.sin_port);

	it_org_new(&org, 100);
	snprintf(body, sizeof(body),
		 "{\"contacts\":[{\"phoneNumber\":\"+14155550102\"}],\"webhookUrl\":\"http://127.0.0.1:%d/hooks/import\"}",
		 rv.port);
	id = import_start(&org, body);
	/* The first call is answered 500: the import is sent again. */
	if (!it_poll(receiver_got_two, &rv, 20000))
		fail_msg("webhook called %d times, expected 2", rv.requests);
	got = json_loads(rv.body, 0, NULL);
	if (got == NULL)
		fail_msg("webhook body is not JSON: %s", rv.body);
	assert_string_equal(json_string_value(json_object_get(got, "id")), id);
	assert_string_equal(json_string_value(json_object_get(got, "status")), "COMPLETED");
	assert_int_equal(json_integer_value(json_object_get(got, "created")), 1);
	assert_true(json_is_string(json_object_get(got, "completedAt")));
	json_decref(got);
	r = import_wait(&org, id, 20000);
	assert_string_equal(it_str(r, "status"), "COMPLETED");
	it_resp_free(r);
	close(rv.fd);
	free(id);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_audience_crud),
		cmocka_unit_test(test_audience_invalid),
		cmocka_unit_test(test_members_count),
		cmocka_unit_test(test_members_invalid),
		cmocka_unit_test(test_list_contacts),
		cmocka_unit_test(test_delete_in_use),
		cmocka_unit_test(test_audience_isolation),
		cmocka_unit_test(test_import_completed),
		cmocka_unit_test(test_import_row_errors),
		cmocka_unit_test(test_import_metadata),
		cmocka_unit_test(test_import_audience),
		cmocka_unit_test(test_import_invalid),
		cmocka_unit_test(test_import_isolation),
		cmocka_unit_test(test_import_rate_limit),
		cmocka_unit_test(test_import_max_rows),
		cmocka_unit_test(test_import_takeover),
		cmocka_unit_test(test_import_webhook),
	};

	srandom((unsigned)time(NULL) ^ (unsigned)getpid());
	return cmocka_run_group_tests_name("audiences and imports api", tests, NULL, NULL);
}
