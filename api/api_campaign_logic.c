/* The campaign state machine and the rules of a campaign's settings. No I/O. */
#include <stdio.h>
#include <string.h>

#include "api.h"

static const char *const statuses[] = {"DRAFT", "SCHEDULED", "IN_PROGRESS", "PAUSED", "COMPLETED",
				       "CANCELLED"};

bool api_campaign_status_valid(const char *status)
{
	for (size_t i = 0; i < DL_ARRAY_LEN(statuses); i++)
		if (!strcmp(statuses[i], status))
			return true;
	return false;
}

const char *api_campaign_next_status(const char *status, enum api_action action, bool future_schedule)
{
	switch (action) {
	case API_ACT_START:
		if (!strcmp(status, "DRAFT"))
			return future_schedule ? "SCHEDULED" : "IN_PROGRESS";
		if (!strcmp(status, "SCHEDULED"))
			return "IN_PROGRESS";
		return NULL;
	case API_ACT_PAUSE:
		return !strcmp(status, "IN_PROGRESS") ? "PAUSED" : NULL;
	case API_ACT_RESUME:
		return !strcmp(status, "PAUSED") ? "IN_PROGRESS" : NULL;
	case API_ACT_CANCEL:
		if (!strcmp(status, "DRAFT") || !strcmp(status, "SCHEDULED") ||
		    !strcmp(status, "IN_PROGRESS") || !strcmp(status, "PAUSED"))
			return "CANCELLED";
		return NULL;
	}
	return NULL;
}

static const struct api_field campaign_fields[] = {
	{"name", API_F_STRING, true, false, 1, 200},
	{"flowId", API_F_STRING, true, false, 1, 64},
	{"audienceId", API_F_STRING, true, false, 1, 64},
	{"callsPerMinute", API_F_INT, false, false, 1, 6000},
	{"maxConcurrentCalls", API_F_INT, false, false, 1, 1000},
	{"maxRetries", API_F_INT, false, false, 0, 10},
	{"retryDelayMinutes", API_F_INT, false, false, 0, 1440},
	{"callTimeoutMinutes", API_F_INT, false, false, 1, 60},
	{"scheduledAt", API_F_TIME, false, true, 0, 0},
	{"timezone", API_F_STRING, false, true, 1, 64},
};

bool api_campaign_validate(json_t *body, bool partial, int64_t now_ms, char *err, size_t errlen)
{
	struct api_field fields[DL_ARRAY_LEN(campaign_fields)];
	json_t *sched, *tz;
	int64_t at;

	memcpy(fields, campaign_fields, sizeof(fields));
	if (partial)
		for (size_t i = 0; i < DL_ARRAY_LEN(fields); i++)
			fields[i].required = false;
	if (!api_check_fields(body, fields, (int)DL_ARRAY_LEN(fields), err, errlen))
		return false;
	sched = json_object_get(body, "scheduledAt");
	tz = json_object_get(body, "timezone");
	if (json_is_string(sched)) {
		if (dl_time_parse(json_string_value(sched), &at) < 0 || at <= now_ms) {
			snprintf(err, errlen, "scheduledAt must be in the future");
			return false;
		}
		/* PATCH may set scheduledAt alone when the stored campaign has a
		 * timezone; the handler checks that against the row. */
		if (!partial && !json_is_string(tz)) {
			snprintf(err, errlen, "timezone is required when scheduledAt is set");
			return false;
		}
	}
	if (json_is_string(tz) && !dl_timezone_valid(json_string_value(tz))) {
		snprintf(err, errlen, "timezone must be an IANA time zone name such as Asia/Kolkata");
		return false;
	}
	return true;
}
