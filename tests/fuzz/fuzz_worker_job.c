/* libFuzzer target: the AMQP messages a worker takes (worker_job_parse) and
 * the carrier answers it reads (worker_classify, worker_answer_sid,
 * worker_answer_detail, worker_reconcile_pick), all on the same bytes. */
#include "worker.h"
#include "fuzz.h"

static void check_str(const char *s, size_t cap, const char *what)
{
	FZ_REQUIRE(memchr(s, '\0', cap) != NULL, "%s not terminated within its cap", what);
}

static void check_job(const struct worker_job *j)
{
	check_str(j->message_id, sizeof(j->message_id), "messageId");
	check_str(j->attempt_id, sizeof(j->attempt_id), "attemptId");
	FZ_REQUIRE(j->attempt_id[0] != '\0', "empty attemptId accepted");
	switch (j->type) {
	case WORKER_JOB_DIAL: {
		char *form;

		check_str(j->campaign_id, sizeof(j->campaign_id), "campaignId");
		check_str(j->voice_url, sizeof(j->voice_url), "voiceUrl");
		check_str(j->status_callback, sizeof(j->status_callback), "statusCallback");
		FZ_REQUIRE(dl_phone_valid(j->to), "to %s accepted", j->to);
		FZ_REQUIRE(j->from[0] == '\0' || dl_phone_valid(j->from), "from %s accepted", j->from);
		FZ_REQUIRE(j->time_limit_sec >= 1 && j->time_limit_sec <= WK_TIME_LIMIT_MAX, "timeLimitSec");
		FZ_REQUIRE(j->ring_timeout_sec >= 1 && j->ring_timeout_sec <= WK_RING_TIMEOUT_MAX, "ringTimeoutSec");
		form = worker_form_create(j, "+15550000000");
		FZ_REQUIRE(form != NULL, "create form failed");
		free(form);
		break;
	}
	case WORKER_JOB_HANGUP:
		check_str(j->call_sid, sizeof(j->call_sid), "callSid");
		FZ_REQUIRE(strlen(j->call_sid) >= 2, "short callSid accepted");
		break;
	case WORKER_JOB_RECONCILE:
		FZ_REQUIRE(dl_phone_valid(j->to), "to %s accepted", j->to);
		break;
	}
	(void)worker_job_type_name(j->type);
}

static void check_answer(const char *body)
{
	static const long statuses[] = {0, 200, 201, 400, 401, 404, 429, 500, 503};
	struct worker_found found;
	char sid[WK_SID_LEN], detail[256];

	for (size_t i = 0; i < DL_ARRAY_LEN(statuses); i++)
		(void)worker_class_name(worker_classify(statuses[i], body));
	if (worker_answer_sid(body, sid, sizeof(sid)) == 0)
		FZ_REQUIRE(strlen(sid) < sizeof(sid) && !strncmp(sid, "CA", 2), "sid %s", sid);
	memset(detail, 0, sizeof(detail));
	worker_answer_detail(400, body, detail, sizeof(detail));
	/* The detail goes into the dial's result message (json_pack "s"). */
	{
		json_t *s = json_string(detail);

		FZ_REQUIRE(s != NULL, "detail \"%s\" is not valid UTF-8: the result cannot be built", detail);
		json_decref(s);
	}
	memset(&found, 0x5a, sizeof(found));
	if (worker_reconcile_pick(body, &found) == 0 && found.found) {
		FZ_REQUIRE(memchr(found.sid, '\0', sizeof(found.sid)) != NULL, "sid not terminated");
		FZ_REQUIRE(memchr(found.status, '\0', sizeof(found.status)) != NULL, "status not terminated");
		FZ_REQUIRE(found.duration >= -1, "duration %ld", found.duration);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct worker_job job;
	char err[256], *body;

	memset(err, 0, sizeof(err));
	if (worker_job_parse((const char *)data, size, &job, err, sizeof(err)) == 0)
		check_job(&job);
	else
		FZ_REQUIRE(err[0] != '\0' && memchr(err, '\0', sizeof(err)) != NULL, "no reason given");
	body = fz_cstr(data, size);
	check_answer(body);
	free(body);
	return 0;
}
