/* worker_jobs: parses and validates the jobs the scheduler sends. Everything
 * here is pure: untrusted bytes in, a capped struct or a reason out. */
#include "worker.h"

#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Writes a printf-formatted reason into err; returns -EINVAL. */
__attribute__((format(printf, 3, 4))) static int wk_bad(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (err != NULL && errlen > 0) {
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return -EINVAL;
}

/* Copies string field key of o into out (cap bytes with the NUL). A missing
 * or null field is "" unless required. 0 or -EINVAL with the reason. */
static int wk_get_str(json_t *o, const char *key, bool required, char *out, size_t cap, char *err,
		      size_t errlen)
{
	json_t *v = json_object_get(o, key);
	size_t n;

	if (v == NULL || json_is_null(v)) {
		if (required)
			return wk_bad(err, errlen, "%s is required", key);
		out[0] = '\0';
		return 0;
	}
	if (!json_is_string(v))
		return wk_bad(err, errlen, "%s must be a string", key);
	n = json_string_length(v);
	if (n == 0 && required)
		return wk_bad(err, errlen, "%s must not be empty", key);
	if (n >= cap)
		return wk_bad(err, errlen, "%s is longer than %zu bytes", key, cap - 1);
	if (memchr(json_string_value(v), '\0', n) != NULL)
		return wk_bad(err, errlen, "%s contains a NUL byte", key);
	memcpy(out, json_string_value(v), n);
	out[n] = '\0';
	return 0;
}

/* Reads integer field key of o within [min, max]; a missing or null field is
 * 0 unless required. 0 or -EINVAL with the reason. */
static int wk_get_int(json_t *o, const char *key, bool required, long long min, long long max, long long *out,
		      char *err, size_t errlen)
{
	json_t *v = json_object_get(o, key);

	if (v == NULL || json_is_null(v)) {
		if (required)
			return wk_bad(err, errlen, "%s is required", key);
		*out = 0;
		return 0;
	}
	if (!json_is_integer(v))
		return wk_bad(err, errlen, "%s must be an integer", key);
	if (json_integer_value(v) < min || json_integer_value(v) > max)
		return wk_bad(err, errlen, "%s must be between %lld and %lld", key, min, max);
	*out = json_integer_value(v);
	return 0;
}

/* True when s is an id we can log and pass to SQL as is: [A-Za-z0-9_-]+. */
static bool wk_id_ok(const char *s)
{
	if (!*s)
		return false;
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
		      *s == '_' || *s == '-'))
			return false;
	return true;
}

/* True when s is an absolute http(s) URL of printable ASCII without spaces. */
static bool wk_url_ok(const char *s)
{
	size_t skip;

	if (strncasecmp(s, "http://", 7) == 0)
		skip = 7;
	else if (strncasecmp(s, "https://", 8) == 0)
		skip = 8;
	else
		return false;
	if (s[skip] == '\0' || s[skip] == '/')
		return false;
	for (; *s; s++)
		if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f)
			return false;
	return true;
}

/* True when s is a call sid we can put in a URL path: 2 to 63 of [A-Za-z0-9]. */
static bool wk_sid_ok(const char *s)
{
	size_t n = 0;

	for (; *s; s++, n++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9')))
			return false;
	return n >= 2;
}

/* Fills the dial fields of j from o; 0 or -EINVAL with the reason. */
static int wk_parse_dial(json_t *o, struct worker_job *j, char *err, size_t errlen)
{
	long long v;

	if (wk_get_int(o, "callId", false, 1, INT64_MAX, &j->call_id, err, errlen) < 0 ||
	    wk_get_str(o, "campaignId", false, j->campaign_id, sizeof(j->campaign_id), err, errlen) < 0 ||
	    wk_get_str(o, "organizationId", false, j->organization_id, sizeof(j->organization_id), err,
		       errlen) < 0 ||
	    wk_get_str(o, "to", true, j->to, sizeof(j->to), err, errlen) < 0 ||
	    wk_get_str(o, "from", false, j->from, sizeof(j->from), err, errlen) < 0 ||
	    wk_get_str(o, "voiceUrl", true, j->voice_url, sizeof(j->voice_url), err, errlen) < 0 ||
	    wk_get_str(o, "statusCallback", true, j->status_callback, sizeof(j->status_callback), err,
		       errlen) < 0)
		return -EINVAL;
	if (j->campaign_id[0] && !wk_id_ok(j->campaign_id))
		return wk_bad(err, errlen, "campaignId is not an id");
	if (j->organization_id[0] && !wk_id_ok(j->organization_id))
		return wk_bad(err, errlen, "organizationId is not an id");
	if (!dl_phone_valid(j->to))
		return wk_bad(err, errlen, "to is not an E.164 number");
	if (j->from[0] && !dl_phone_valid(j->from))
		return wk_bad(err, errlen, "from is not an E.164 number");
	if (!wk_url_ok(j->voice_url))
		return wk_bad(err, errlen, "voiceUrl is not an http(s) URL");
	if (!wk_url_ok(j->status_callback))
		return wk_bad(err, errlen, "statusCallback is not an http(s) URL");
	if (wk_get_int(o, "timeLimitSec", true, 1, WK_TIME_LIMIT_MAX, &v, err, errlen) < 0)
		return -EINVAL;
	j->time_limit_sec = (int)v;
	if (wk_get_int(o, "ringTimeoutSec", true, 1, WK_RING_TIMEOUT_MAX, &v, err, errlen) < 0)
		return -EINVAL;
	j->ring_timeout_sec = (int)v;
	return 0;
}

/* Fills the reconcile fields of j from o; 0 or -EINVAL with the reason. */
static int wk_parse_reconcile(json_t *o, struct worker_job *j, char *err, size_t errlen)
{
	char since[64];

	if (wk_get_str(o, "to", true, j->to, sizeof(j->to), err, errlen) < 0 ||
	    wk_get_str(o, "since", true, since, sizeof(since), err, errlen) < 0)
		return -EINVAL;
	if (!dl_phone_valid(j->to))
		return wk_bad(err, errlen, "to is not an E.164 number");
	if (dl_time_parse(since, &j->since_ms) < 0)
		return wk_bad(err, errlen, "since is not an ISO 8601 time");
	return 0;
}

int worker_job_parse(const char *body, size_t len, struct worker_job *out, char *err, size_t errlen)
{
	struct worker_job j;
	json_error_t jerr;
	json_t *o = NULL; /* owned */
	char type[16];
	int r = -EINVAL;

	if (body == NULL || len == 0) {
		r = wk_bad(err, errlen, "empty job");
		goto out;
	}
	if (len > WK_BODY_MAX) {
		wk_bad(err, errlen, "job of %zu bytes is over the %d-byte cap", len, WK_BODY_MAX);
		r = -E2BIG;
		goto out;
	}
	o = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
	if (o == NULL) {
		r = wk_bad(err, errlen, "not JSON: %s", jerr.text);
		goto out;
	}
	if (!json_is_object(o)) {
		r = wk_bad(err, errlen, "not a JSON object");
		goto out;
	}
	memset(&j, 0, sizeof(j));
	if (wk_get_str(o, "type", true, type, sizeof(type), err, errlen) < 0)
		goto out;
	if (!strcmp(type, "dial")) {
		j.type = WORKER_JOB_DIAL;
	} else if (!strcmp(type, "hangup")) {
		j.type = WORKER_JOB_HANGUP;
	} else if (!strcmp(type, "reconcile")) {
		j.type = WORKER_JOB_RECONCILE;
	} else {
		r = wk_bad(err, errlen, "unknown job type");
		goto out;
	}
	if (wk_get_str(o, "messageId", false, j.message_id, sizeof(j.message_id), err, errlen) < 0 ||
	    wk_get_str(o, "attemptId", true, j.attempt_id, sizeof(j.attempt_id), err, errlen) < 0)
		goto out;
	if (j.message_id[0] && !wk_id_ok(j.message_id)) {
		r = wk_bad(err, errlen, "messageId is not an id");
		goto out;
	}
	j.replayed = json_is_true(json_object_get(o, "replayed"));
	if (!wk_id_ok(j.attempt_id)) {
		r = wk_bad(err, errlen, "attemptId is not an id");
		goto out;
	}
	switch (j.type) {
	case WORKER_JOB_DIAL:
		if (wk_parse_dial(o, &j, err, errlen) < 0)
			goto out;
		break;
	case WORKER_JOB_HANGUP:
		if (wk_get_str(o, "callSid", true, j.call_sid, sizeof(j.call_sid), err, errlen) < 0)
			goto out;
		if (!wk_sid_ok(j.call_sid)) {
			r = wk_bad(err, errlen, "callSid is not a call sid");
			goto out;
		}
		break;
	case WORKER_JOB_RECONCILE:
		if (wk_parse_reconcile(o, &j, err, errlen) < 0)
			goto out;
		break;
	}
	*out = j;
	r = 0;
out:
	json_decref(o);
	return r;
}

int worker_held_init(struct worker_held *out, const struct worker_job *job, const char *default_from)
{
	struct worker_held h;

	memset(&h, 0, sizeof(h));
	h.type = job->type;
	memcpy(h.message_id, job->message_id, sizeof(h.message_id));
	memcpy(h.attempt_id, job->attempt_id, sizeof(h.attempt_id));
	memcpy(h.campaign_id, job->campaign_id, sizeof(h.campaign_id));
	memcpy(h.to, job->to, sizeof(h.to));
	memcpy(h.call_sid, job->call_sid, sizeof(h.call_sid));
	h.since_ms = job->since_ms;
	if (job->type == WORKER_JOB_DIAL && (h.form = worker_form_create(job, default_from)) == NULL)
		return -ENOMEM;
	*out = h;
	return 0;
}

void worker_held_clear(struct worker_held *held)
{
	free(held->form);
	memset(held, 0, sizeof(*held));
}

const char *worker_job_type_name(enum worker_job_type type)
{
	switch (type) {
	case WORKER_JOB_DIAL:
		return "dial";
	case WORKER_JOB_HANGUP:
		return "hangup";
	case WORKER_JOB_RECONCILE:
		return "reconcile";
	}
	return "unknown";
}
