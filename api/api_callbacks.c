/* POST /v1/carrier/status?attemptId=...: the carrier's status callbacks.
 * Authenticated by the carrier's signature (X-Twilio-Signature over the
 * exact callback URL the worker gave and the form parameters), not by an API
 * key. A verified callback becomes one call.status message, published and
 * confirmed before the answer (in the outbox while the broker is not
 * there); duplicates and reordering are the scheduler's to absorb (it is
 * idempotent by attempt and SequenceNumber). While the confirm is awaited
 * the request is set aside (dl_http_defer), so its listener thread goes on
 * with its other connections: a carrier keeps a few dozen connections open
 * and each thread may hold several of them. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api.h"
#include "dl_form.h"
#include "dl_log.h"
#include "dl_metrics.h"
#include "dl_twsig.h"

#define ATTEMPT_ID_MAX 64
#define ANSWERED_BY_MAX 32

static const char *const call_statuses[] = {
	"queued", "initiated", "ringing", "in-progress", "completed", "busy", "no-answer", "failed", "canceled",
};

static void count(const char *result)
{
	char labels[48];

	dl_metrics_register("dialer_carrier_callbacks_total", "counter",
			    "Carrier status callbacks by result (accepted, forged, invalid).");
	snprintf(labels, sizeof(labels), "result=\"%s\"", result);
	dl_metrics_add("dialer_carrier_callbacks_total", labels, 1);
}

/* How an accepted callback left: straight to the broker, or the outbox. */
static void via(const char *how)
{
	char labels[32];

	dl_metrics_register("dialer_carrier_callbacks_relayed_total", "counter",
			    "Accepted carrier callbacks by how they reached the broker (broker: published at once; "
			    "outbox: written to the outbox while the broker was unavailable).");
	snprintf(labels, sizeof(labels), "via=\"%s\"", how);
	dl_metrics_add("dialer_carrier_callbacks_relayed_total", labels, 1);
}

static bool attempt_id_ok(const char *s)
{
	size_t n = s ? strlen(s) : 0;

	if (n == 0 || n > ATTEMPT_ID_MAX)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= '0' && s[i] <= '9') ||
		      s[i] == '_'))
			return false;
	return true;
}

/* "CA" + 32 hex digits. */
static bool call_sid_ok(const char *s)
{
	if (strlen(s) != 34 || s[0] != 'C' || s[1] != 'A')
		return false;
	for (int i = 2; i < 34; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f') || (s[i] >= 'A' && s[i] <= 'F')))
			return false;
	return true;
}

static bool call_status_ok(const char *s)
{
	for (size_t i = 0; i < DL_ARRAY_LEN(call_statuses); i++)
		if (!strcmp(s, call_statuses[i]))
			return true;
	return false;
}

/* A decimal integer >= 0 of at most 9 digits. */
static bool count_ok(const char *s, int *out)
{
	size_t n = strlen(s);
	int v = 0;

	if (n == 0 || n > 9)
		return false;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (s[i] - '0');
	}
	*out = v;
	return true;
}

/* Checks the fields the scheduler uses; writes what is wrong to err. */
static bool fields_ok(const struct dl_form *f, int *seq, int *duration, char *err, size_t errlen)
{
	static const char *const once[] = {"CallSid", "CallStatus", "SequenceNumber", "CallDuration", "AnsweredBy"};
	const char *sid = dl_form_get(f, "CallSid"), *status = dl_form_get(f, "CallStatus");
	const char *sn = dl_form_get(f, "SequenceNumber"), *dur = dl_form_get(f, "CallDuration");
	const char *ab = dl_form_get(f, "AnsweredBy");

	for (size_t i = 0; i < DL_ARRAY_LEN(once); i++) {
		if (dl_form_count(f, once[i]) > 1) {
			snprintf(err, errlen, "%s must be given once", once[i]);
			return false;
		}
	}
	if (sid == NULL || !call_sid_ok(sid)) {
		snprintf(err, errlen, "CallSid must be CA followed by 32 hex digits");
		return false;
	}
	if (status == NULL || !call_status_ok(status)) {
		snprintf(err, errlen, "CallStatus must be one of queued, initiated, ringing, in-progress, completed, "
				      "busy, no-answer, failed, canceled");
		return false;
	}
	if (sn == NULL || !count_ok(sn, seq)) {
		snprintf(err, errlen, "SequenceNumber must be an integer >= 0");
		return false;
	}
	*duration = -1;
	if (dur != NULL && !count_ok(dur, duration)) {
		snprintf(err, errlen, "CallDuration must be an integer >= 0");
		return false;
	}
	if (ab != NULL && (strlen(ab) > ANSWERED_BY_MAX || dl_utf8_len(ab) < 0)) {
		snprintf(err, errlen, "AnsweredBy must be text of at most %d characters", ANSWERED_BY_MAX);
		return false;
	}
	return true;
}

/* Where a callback's message went: straight to the broker, or, without it,
 * one INSERT in the outbox, committed on its own, which the relay
 * publishes. Answers c->resp (204 once it is safe). */
static void relay(struct api_call *c, int published, json_t *msg)
{
	if (published == 0) {
		via("broker");
	} else {
		if (api_db(c) == NULL)
			return;
		if (api_outbox_add(c->db, c->api->cfg->amqp_jobs_exchange, "result", "call.status", msg) < 0) {
			api_db_failed(c);
			return;
		}
		via("outbox");
	}
	count("accepted");
	dl_http_json(c->resp, 204, NULL);
}

/* A callback set aside while its message awaits the broker's confirm. */
struct status_later {
	json_t *msg;
	struct api_pub_msg *m; /* NULL: never handed over */
};

/* Runs on the listener's thread once the confirm came or its time ran out. */
static void status_then(void *ctx, struct dl_http_req *req, struct dl_http_resp *resp, void *arg)
{
	struct status_later *sl = arg;
	struct dl_http_resp gone = {0};
	struct api_call c = {0};

	c.api = ctx;
	c.req = req;
	/* No one to answer: the message is still kept. */
	c.resp = resp ? resp : &gone;
	c.resp->route = "/v1/carrier/status";
	relay(&c, sl->m ? api_publish_result(c.api->pub, sl->m) : -EBUSY, sl->msg);
	dl_db_pool_put(c.api->db, c.db);
	api_log_request(&c);
	free(gone.body);
	json_decref(sl->msg);
	free(sl);
}

void api_carrier_status(struct api_call *c)
{
	const char *attempt = dl_http_query(c->req, "attemptId");
	const char *ctype = dl_http_header(c->req, "Content-Type");
	const char *sig = dl_http_header(c->req, "X-Twilio-Signature");
	struct dl_form f;
	char *url = NULL, err[256];
	const char *ab;
	json_t *msg;
	int seq, duration;

	dl_form_init(&f);
	if (!attempt_id_ok(attempt)) {
		count("invalid");
		api_bad_request(c, "attemptId must be 1 to 64 characters of [A-Za-z0-9_]");
		goto out;
	}
	if (ctype != NULL && strncasecmp(ctype, "application/x-www-form-urlencoded", 33) != 0) {
		count("invalid");
		dl_http_error(c->resp, 415, "Content-Type must be application/x-www-form-urlencoded");
		goto out;
	}
	if (c->req->body_len > DL_FORM_MAX_BYTES) {
		count("invalid");
		dl_http_error(c->resp, 413, "the form is larger than %d bytes", DL_FORM_MAX_BYTES);
		goto out;
	}
	if (dl_form_parse(c->req->body, c->req->body_len, &f) < 0) {
		count("invalid");
		api_bad_request(c, "body is not a valid application/x-www-form-urlencoded form "
				   "(at most 64 fields, valid %-escapes, no NUL)");
		goto out;
	}
	/* The URL the worker gave the carrier; the carrier signed exactly it. */
	if (asprintf(&url, "%s/v1/carrier/status?attemptId=%s", c->api->cfg->api_public_url, attempt) < 0) {
		url = NULL;
		dl_http_error(c->resp, 500, "out of memory");
		goto out;
	}
	if (!dl_twsig_valid(c->api->cfg->carrier_auth_token, url, &f, sig)) {
		count("forged");
		dl_log_kv(DL_WARN, "carrier callback signature rejected", "request_id", c->req->request_id,
			  "attempt_id", attempt, "reason", sig ? "mismatch" : "missing", NULL);
		dl_http_error(c->resp, 403, "%s", sig ? "X-Twilio-Signature does not match this request"
						      : "X-Twilio-Signature header is required");
		goto out;
	}
	if (!fields_ok(&f, &seq, &duration, err, sizeof(err))) {
		count("invalid");
		api_bad_request(c, err);
		goto out;
	}
	ab = dl_form_get(&f, "AnsweredBy");
	msg = json_pack("{s:s, s:s, s:s, s:i, s:o, s:o}", "attemptId", attempt, "callSid", dl_form_get(&f, "CallSid"),
			"callStatus", dl_form_get(&f, "CallStatus"), "sequenceNumber", seq, "callDuration",
			duration >= 0 ? json_integer(duration) : json_null(), "answeredBy",
			ab ? json_string(ab) : json_null());
	if (msg == NULL) {
		dl_http_error(c->resp, 500, "out of memory");
		goto out;
	}
	{
		struct status_later *sl = calloc(1, sizeof(*sl));
		struct dl_http_later *later = NULL;

		if (sl != NULL)
			later = dl_http_defer(c->req, c->api->cfg->api_publish_wait_ms, status_then, sl);
		if (later != NULL) {
			sl->msg = msg;
			c->deferred = true;
			if (api_publish_later(c->api->pub, c->api->cfg->amqp_jobs_exchange, "result", "call.status",
					      msg, later, &sl->m) < 0)
				dl_http_wake(later);
			goto out;
		}
		free(sl);
	}
	/* The listener is stopping: the confirm is waited for here. */
	relay(c, api_publish(c->api->pub, c->api->cfg->amqp_jobs_exchange, "result", "call.status", msg), msg);
	json_decref(msg);
out:
	free(url);
	dl_form_free(&f);
}
