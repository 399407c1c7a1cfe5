/* libFuzzer target: the result and event messages the scheduler consumes
 * from dialer.results, one a delivery (sched_message_parse) or many in a
 * call.statuses (sched_messages_parse), and the outcome a carrier status in
 * them leads to (sched_outcome and what follows from it). */
#include <errno.h>

#include "fuzz.h"
#include "scheduler.h"

static void check_str(const char *s, size_t cap, const char *what)
{
	FZ_REQUIRE(memchr(s, '\0', cap) != NULL, "%s not terminated within its cap", what);
}

static void check_outcome(const struct sched_message *m)
{
	static const char *const known[] = {"answered", "voicemail", "no-answer", "busy", "failed", "timeout"};

	for (int answered = 0; answered < 2; answered++) {
		for (int hung_up = 0; hung_up < 2; hung_up++) {
			const char *o = sched_outcome(m->status, m->has_answered_by ? m->answered_by : NULL,
						      m->duration, answered, hung_up);
			bool ok = false;
			long minutes;

			if (o == NULL)
				continue;
			for (size_t i = 0; i < DL_ARRAY_LEN(known); i++)
				ok = ok || !strcmp(o, known[i]);
			FZ_REQUIRE(ok, "status %s gave outcome %s", m->status, o);
			(void)sched_outcome_retryable(o);
			(void)sched_outcome_call_status(o);
			minutes = sched_minutes_charged(o, m->duration);
			FZ_REQUIRE(minutes >= 0 && minutes <= 1440, "%ld minutes charged", minutes);
		}
	}
}

static void check_message(const struct sched_message *m)
{
	check_str(m->attempt, sizeof(m->attempt), "attemptId");
	check_str(m->sid, sizeof(m->sid), "callSid");
	check_str(m->status, sizeof(m->status), "callStatus");
	check_str(m->answered_by, sizeof(m->answered_by), "answeredBy");
	FZ_REQUIRE(m->duration >= 0 && m->duration <= 86400, "callDuration %ld", m->duration);
	switch (m->kind) {
	case SCHED_MSG_ACCEPTED:
		FZ_REQUIRE(sched_sid_valid(m->sid), "accepted with sid %s", m->sid);
		break;
	case SCHED_MSG_STATUS:
		FZ_REQUIRE(sched_sid_valid(m->sid), "status with sid %s", m->sid);
		FZ_REQUIRE(m->has_status, "status without callStatus");
		check_outcome(m);
		break;
	case SCHED_MSG_RECONCILE:
		FZ_REQUIRE(m->seq == -1, "reconcile with a sequence");
		if (m->has_status)
			check_outcome(m);
		break;
	case SCHED_MSG_HANGUP:
		FZ_REQUIRE(m->seq == -1, "hang-up result with a sequence");
		if (m->ended || m->hung_up)
			FZ_REQUIRE(sched_sid_valid(m->sid), "hang-up result with sid %s", m->sid);
		if (m->has_status)
			check_outcome(m);
		break;
	case SCHED_MSG_IGNORE:
	case SCHED_MSG_INVALID_NUMBER:
	case SCHED_MSG_AMBIGUOUS:
	case SCHED_MSG_REFUSED:
		FZ_REQUIRE(m->seq == -1, "a sequence outside call.status");
		break;
	default:
		FZ_REQUIRE(0, "kind %d", (int)m->kind);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct sched_message many[SCHED_STATUSES_MAX];
	struct sched_message m, untouched;
	int n;

	memset(&m, 0x5a, sizeof(m));
	memcpy(&untouched, &m, sizeof(m));
	if (sched_message_parse((const char *)data, size, &m) != 0)
		FZ_REQUIRE(!memcmp(&m, &untouched, sizeof(m)), "output written on failure");
	else
		check_message(&m);
	n = sched_messages_parse((const char *)data, size, many, SCHED_STATUSES_MAX);
	FZ_REQUIRE(n == -EINVAL || (n >= 1 && n <= SCHED_STATUSES_MAX), "%d messages", n);
	for (int i = 0; i < n; i++) {
		/* a call.statuses carries call statuses only */
		FZ_REQUIRE(n == 1 || many[i].kind == SCHED_MSG_STATUS, "kind %d in a call.statuses", (int)many[i].kind);
		check_message(&many[i]);
	}
	return 0;
}
