/* Carrier call statuses to Dialer outcomes, and what each outcome means for
 * the contact. No I/O. */
#include <string.h>

#include "scheduler.h"

const char *sched_outcome(const char *call_status, const char *answered_by, long duration, bool was_answered,
			  bool hung_up)
{
	if (!strcmp(call_status, "completed")) {
		if (hung_up)
			return "timeout";
		if (!was_answered && duration <= 0)
			return "no-answer";
		if (answered_by && !strncmp(answered_by, "machine", 7))
			return "voicemail";
		return "answered";
	}
	if (!strcmp(call_status, "busy"))
		return "busy";
	if (!strcmp(call_status, "no-answer"))
		return "no-answer";
	if (!strcmp(call_status, "failed"))
		return "failed";
	if (!strcmp(call_status, "canceled"))
		return hung_up ? "timeout" : "failed";
	return NULL;
}

bool sched_outcome_retryable(const char *outcome)
{
	return !strcmp(outcome, "busy") || !strcmp(outcome, "no-answer") || !strcmp(outcome, "failed");
}

const char *sched_outcome_call_status(const char *outcome)
{
	return !strcmp(outcome, "answered") || !strcmp(outcome, "voicemail") ? "COMPLETED" : "FAILED";
}

long sched_minutes_charged(const char *outcome, long duration)
{
	if (strcmp(outcome, "answered") && strcmp(outcome, "voicemail") && strcmp(outcome, "timeout"))
		return 0;
	if (duration <= 0)
		return 0;
	return (duration + 59) / 60;
}
