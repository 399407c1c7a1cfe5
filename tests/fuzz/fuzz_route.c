/* libFuzzer target: a request line's routing and its paging query. The input
 * is "METHOD\nPATH\nPAGE\nLIMIT" (missing parts are absent values): the path
 * goes through api_route_match, page and limit through api_parse_paging. */
#include "api.h"
#include "fuzz.h"

#define NPARTS 4

static void check_route(const char *method, const char *path)
{
	const char *params[API_MAX_PARAMS] = {NULL};
	char buf[1024];
	bool known = true;
	const struct api_route *r;
	size_t used = 0;

	memset(buf, 0x5a, sizeof(buf));
	r = api_route_match(method, path, params, buf, sizeof(buf), &known);
	if (r == NULL)
		return;
	FZ_REQUIRE(!strcmp(r->method, method), "route %s %s for method %s", r->method, r->pattern, method);
	/* Every parameter of the pattern is set, inside buf, terminated, without '/'. */
	for (const char *p = r->pattern; (p = strchr(p, ':')) != NULL; p++) {
		const char *v;
		size_t n;

		FZ_REQUIRE(used < API_MAX_PARAMS, "too many parameters in %s", r->pattern);
		v = params[used++];
		FZ_REQUIRE(v != NULL && v >= buf && v < buf + sizeof(buf), "parameter outside the buffer");
		n = strnlen(v, (size_t)(buf + sizeof(buf) - v));
		FZ_REQUIRE(v + n < buf + sizeof(buf), "parameter not terminated in the buffer");
		FZ_REQUIRE(n >= 1 && n <= 128 && memchr(v, '/', n) == NULL, "parameter \"%s\" of %zu bytes", v, n);
	}
}

static void check_paging(const char *page, const char *limit)
{
	long p = -7, l = -7;
	char err[256];

	memset(err, 0, sizeof(err));
	if (!api_parse_paging(page, limit, &p, &l, err, sizeof(err))) {
		FZ_REQUIRE(p == -7 && l == -7, "outputs written on failure");
		fz_check_message(err, sizeof(err));
		return;
	}
	FZ_REQUIRE(p >= 1 && p <= 10000000, "page %ld", p);
	FZ_REQUIRE(l >= 1 && l <= 100, "limit %ld", l);
	/* The offset the handlers compute must not overflow. */
	FZ_REQUIRE((p - 1) * l <= 1000000000L, "offset overflow");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *in = fz_cstr(data, size), *parts[NPARTS] = {NULL}, *p = in;
	int n = 0;

	while (n < NPARTS && p != NULL) {
		parts[n++] = p;
		p = strchr(p, '\n');
		if (p != NULL)
			*p++ = '\0';
	}
	if (parts[0] != NULL && parts[1] != NULL)
		check_route(parts[0], parts[1]);
	else if (parts[0] != NULL)
		check_route("GET", parts[0]);
	check_paging(parts[2], parts[3]);
	free(in);
	return 0;
}
