/* The result and event messages the scheduler consumes (dial.result,
 * call.status, reconcile.result, hangup.result), parsed and checked without
 * I/O: anything a worker or the callback endpoint may have put on the queue
 * is untrusted input. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "scheduler.h"

/* Copies the string member k of m into buf (SCHED_MSG_STR bytes) and says
 * whether there was one; longer strings count as absent. */
static bool take(json_t *m, const char *k, char *buf)
{
	const char *v = json_string_value(json_object_get(m, k));

	buf[0] = '\0';
	if (v == NULL || strlen(v) >= SCHED_MSG_STR)
		return false;
	memcpy(buf, v, strlen(v) + 1);
	return true;
}

/* A duration given as a string of digits; 0 for anything else. */
static long parse_duration(const char *v)
{
	long d = 0;

	if (*v == '\0' || strlen(v) > 9)
		return 0;
	for (; *v; v++) {
		if (*v < '0' || *v > '9')
			return 0;
		d = d * 10 + (*v - '0');
	}
	return d;
}

bool sched_sid_valid(const char *sid)
{
	if (sid == NULL || strlen(sid) != 34 || sid[0] != 'C' || sid[1] != 'A')
		return false;
	for (int i = 2; i < 34; i++)
		if (!strchr("0123456789abcdefABCDEF", sid[i]))
			return false;
	return true;
}

/* Parses the message object j into *out (written only on success); 0 or
 * -EINVAL. */
static int parse_object(json_t *j, struct sched_message *out)
{
	struct sched_message m;
	char type[SCHED_MSG_STR];
	json_t *v;
	int r = -EINVAL;

	memset(&m, 0, sizeof(m));
	if (!json_is_object(j) || !take(j, "type", type) || !take(j, "attemptId", m.attempt))
		goto out;
	m.has_sid = take(j, "callSid", m.sid);
	m.has_status = take(j, "callStatus", m.status);
	m.has_answered_by = take(j, "answeredBy", m.answered_by);
	/* callDuration in a call.status; duration in the carrier's call
	 * resource that reconcile and hang-up results carry (a string there) */
	v = json_object_get(j, json_object_get(j, "callDuration") ? "callDuration" : "duration");
	if (json_is_integer(v))
		m.duration = (long)json_integer_value(v);
	else if (json_is_string(v))
		m.duration = parse_duration(json_string_value(v));
	if (m.duration < 0 || m.duration > 86400)
		m.duration = 0;
	m.seq = -1;
	if (!strcmp(type, "dial.result")) {
		char outcome[SCHED_MSG_STR], cls[SCHED_MSG_STR];

		if (!take(j, "outcome", outcome))
			goto out;
		if (!strcmp(outcome, "accepted")) {
			if (!sched_sid_valid(m.sid))
				goto out;
			m.kind = SCHED_MSG_ACCEPTED;
		} else if (!strcmp(outcome, "skipped")) {
			m.kind = SCHED_MSG_IGNORE;
		} else if (!strcmp(outcome, "failed") && take(j, "class", cls)) {
			if (!strcmp(cls, "invalid-number"))
				m.kind = SCHED_MSG_INVALID_NUMBER;
			else if (!strcmp(cls, "ambiguous"))
				m.kind = SCHED_MSG_AMBIGUOUS;
			else
				m.kind = SCHED_MSG_REFUSED; /* no call was made: a carrier failure */
		} else {
			goto out;
		}
	} else if (!strcmp(type, "call.status")) {
		v = json_object_get(j, "sequenceNumber");
		if (!sched_sid_valid(m.sid) || !m.has_status || !json_is_integer(v))
			goto out;
		m.kind = SCHED_MSG_STATUS;
		m.seq = (long)json_integer_value(v);
	} else if (!strcmp(type, "reconcile.result")) {
		/* Whether it is complete matters only when the attempt is still
		 * UNKNOWN, which the caller checks first. */
		m.kind = SCHED_MSG_RECONCILE;
		m.found = json_is_true(json_object_get(j, "found"));
	} else if (!strcmp(type, "hangup.result")) {
		m.kind = SCHED_MSG_HANGUP;
		m.ended = json_is_true(json_object_get(j, "ended"));
		m.hung_up = json_is_true(json_object_get(j, "hungUp"));
		if ((m.ended || m.hung_up) && !sched_sid_valid(m.sid))
			goto out;
	} else {
		goto out;
	}
	*out = m;
	r = 0;
out:
	return r;
}

int sched_message_parse(const char *body, size_t len, struct sched_message *out)
{
	json_t *j = json_loadb(body, len, 0, NULL);
	int r = parse_object(j, out);

	json_decref(j);
	return r;
}

/* The messages a batch of type may carry: nothing else rides in it. */
static bool batch_carries(const char *batch, const char *type)
{
	if (!strcmp(batch, "call.statuses"))
		return !strcmp(type, "call.status");
	return !strcmp(type, "dial.result") || !strcmp(type, "reconcile.result") || !strcmp(type, "hangup.result");
}

int sched_messages_parse(const char *body, size_t len, struct sched_message *out, int max)
{
	json_t *j = json_loadb(body, len, 0, NULL), *list, *v;
	const char *type = json_string_value(json_object_get(j, "type"));
	size_t i;
	int r = -EINVAL;

	if (type == NULL || (strcmp(type, "call.statuses") != 0 && strcmp(type, "job.results") != 0)) {
		r = parse_object(j, out) < 0 ? -EINVAL : 1;
		goto out;
	}
	list = json_object_get(j, !strcmp(type, "call.statuses") ? "statuses" : "results");
	if (!json_is_array(list) || json_array_size(list) == 0 || json_array_size(list) > SCHED_STATUSES_MAX ||
	    json_array_size(list) > (size_t)max)
		goto out;
	json_array_foreach(list, i, v) {
		const char *t = json_string_value(json_object_get(v, "type"));

		if (t == NULL || !batch_carries(type, t) || parse_object(v, &out[i]) < 0)
			goto out;
	}
	r = (int)json_array_size(list);
out:
	json_decref(j);
	return r;
}

void sched_subsumed(const struct sched_message *const *m, int n, bool *skip)
{
	for (int i = 0, end; i < n; i = end) {
		long final_seq = -1;

		for (end = i; end < n && !strcmp(m[end]->attempt, m[i]->attempt); end++)
			if (m[end]->kind == SCHED_MSG_STATUS && m[end]->seq > final_seq &&
			    sched_outcome(m[end]->status, NULL, 0, false, false) != NULL)
				final_seq = m[end]->seq;
		for (int k = i; k < end; k++)
			skip[k] = m[k]->kind == SCHED_MSG_STATUS && m[k]->seq >= 0 && m[k]->seq < final_seq &&
				  (!strcmp(m[k]->status, "queued") || !strcmp(m[k]->status, "initiated") ||
				   !strcmp(m[k]->status, "ringing"));
	}
}
