/* Request validation shared by every resource. No I/O. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"

static const char *type_name(enum api_ftype t)
{
	switch (t) {
	case API_F_STRING: return "a string";
	case API_F_INT: return "an integer";
	case API_F_OBJECT: return "an object";
	case API_F_ARRAY: return "an array";
	case API_F_TIME: return "an ISO 8601 date-time string";
	case API_F_BOOL: return "a boolean";
	}
	return "a value";
}

static bool check_one(json_t *v, const struct api_field *f, char *err, size_t errlen)
{
	switch (f->type) {
	case API_F_STRING: {
		long n;

		if (!json_is_string(v))
			break;
		n = dl_utf8_len(json_string_value(v));
		if (n < 0 || strlen(json_string_value(v)) != json_string_length(v)) {
			snprintf(err, errlen, "%s must be valid text without NUL characters", f->name);
			return false;
		}
		if (n < f->min || n > f->max) {
			if (f->min > 0)
				snprintf(err, errlen, "%s must be %ld to %ld characters long", f->name, f->min, f->max);
			else
				snprintf(err, errlen, "%s must be at most %ld characters long", f->name, f->max);
			return false;
		}
		return true;
	}
	case API_F_INT:
		if (!json_is_integer(v))
			break;
		if (json_integer_value(v) < f->min || json_integer_value(v) > f->max) {
			snprintf(err, errlen, "%s must be an integer from %ld to %ld", f->name, f->min, f->max);
			return false;
		}
		return true;
	case API_F_OBJECT:
		if (!json_is_object(v))
			break;
		return true;
	case API_F_ARRAY:
		if (!json_is_array(v))
			break;
		if ((long)json_array_size(v) < f->min || (long)json_array_size(v) > f->max) {
			snprintf(err, errlen, "%s must hold %ld to %ld items", f->name, f->min, f->max);
			return false;
		}
		return true;
	case API_F_TIME: {
		int64_t ms;

		if (!json_is_string(v))
			break;
		if (json_string_length(v) > 64 || dl_time_parse(json_string_value(v), &ms) < 0) {
			snprintf(err, errlen, "%s must be an ISO 8601 date-time such as 2026-03-15T09:00:00Z",
				 f->name);
			return false;
		}
		return true;
	}
	case API_F_BOOL:
		if (!json_is_boolean(v))
			break;
		return true;
	}
	snprintf(err, errlen, "%s must be %s%s", f->name, type_name(f->type), f->nullable ? " or null" : "");
	return false;
}

bool api_check_fields(json_t *body, const struct api_field *fields, int nfields, char *err, size_t errlen)
{
	const char *key;
	json_t *v;

	if (!json_is_object(body)) {
		snprintf(err, errlen, "request body must be a JSON object");
		return false;
	}
	json_object_foreach(body, key, v) {
		bool known = false;

		for (int i = 0; i < nfields; i++)
			if (!strcmp(fields[i].name, key))
				known = true;
		if (!known) {
			char shown[65];

			/* Echo at most a short, printable piece of the unknown name,
			 * cut on a character boundary so the message stays UTF-8. */
			snprintf(shown, sizeof(shown), "%s", key);
			dl_utf8_trim(shown);
			for (char *p = shown; *p; p++)
				if ((unsigned char)*p < 0x20 || *p == '"' || *p == '\\')
					*p = '?';
			snprintf(err, errlen, "unknown field \"%s\"", shown);
			return false;
		}
	}
	for (int i = 0; i < nfields; i++) {
		v = json_object_get(body, fields[i].name);
		if (v == NULL) {
			if (fields[i].required) {
				snprintf(err, errlen, "%s is required", fields[i].name);
				return false;
			}
			continue;
		}
		if (json_is_null(v)) {
			if (fields[i].nullable && !fields[i].required)
				continue;
			snprintf(err, errlen, "%s must not be null", fields[i].name);
			return false;
		}
		if (!check_one(v, &fields[i], err, errlen))
			return false;
	}
	return true;
}

static bool parse_int(const char *s, long *out)
{
	char *end;
	long v;

	if (s == NULL || *s == '\0' || strlen(s) > 18)
		return false;
	for (const char *p = s; *p; p++)
		if ((*p < '0' || *p > '9') && !(p == s && *p == '-'))
			return false;
	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || *end)
		return false;
	*out = v;
	return true;
}

bool api_parse_paging(const char *page, const char *limit, long *page_out, long *limit_out, char *err,
		      size_t errlen)
{
	long p = 1, l = 20;

	if (page != NULL && (!parse_int(page, &p) || p < 1 || p > 10000000)) {
		snprintf(err, errlen, "page must be an integer from 1");
		return false;
	}
	if (limit != NULL && (!parse_int(limit, &l) || l < 1)) {
		snprintf(err, errlen, "limit must be an integer from 1 to 100");
		return false;
	}
	if (l > 100)
		l = 100;
	*page_out = p;
	*limit_out = l;
	return true;
}

static int depth(json_t *v)
{
	int d = 0;

	if (json_is_object(v)) {
		const char *k;
		json_t *x;

		json_object_foreach(v, k, x) {
			int e = depth(x);
			if (e > d)
				d = e;
		}
		return d + 1;
	}
	if (json_is_array(v)) {
		size_t i;
		json_t *x;

		json_array_foreach(v, i, x) {
			int e = depth(x);
			if (e > d)
				d = e;
		}
		return d + 1;
	}
	return 0;
}

bool api_check_metadata(json_t *meta, const char *field, char *err, size_t errlen)
{
	size_t size;

	if (!json_is_object(meta)) {
		snprintf(err, errlen, "%s must be an object", field);
		return false;
	}
	if (depth(meta) > 8) {
		snprintf(err, errlen, "%s is nested deeper than 8 levels", field);
		return false;
	}
	size = json_dumpb(meta, NULL, 0, JSON_COMPACT);
	if (size > 4096) {
		snprintf(err, errlen, "%s is larger than 4096 bytes", field);
		return false;
	}
	return true;
}

void api_bad_request(struct api_call *c, const char *msg)
{
	dl_http_error(c->resp, 400, "%s", msg);
}

const char *api_str(json_t *body, const char *name)
{
	return json_string_value(json_object_get(body, name));
}

json_t *api_list(json_t *data, long long total, long page, long limit)
{
	return json_pack("{s:o, s:I, s:i, s:i, s:I}", "data", data, "total", (json_int_t)total, "page",
			 (int)page, "limit", (int)limit, "totalPages",
			 (json_int_t)((total + limit - 1) / limit));
}
