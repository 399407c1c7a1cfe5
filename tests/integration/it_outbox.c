/* Integration tests of commands: a campaign's state change and its command
 * commit together, the relay publishes it to RabbitMQ with confirms, and a
 * command committed while the broker is down is delivered once it is back. */
#include <amqp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#include "dl_util.h"
#include "it_lib.h"

static char queue[64];

/* A durable queue of this test bound to every campaign command: it survives
 * a broker restart, like the scheduler's own queue. */
static int setup(void **state)
{
	amqp_connection_state_t conn = it_mq_open();

	(void)state;
	snprintf(queue, sizeof(queue), "it.commands.%d", (int)getpid());
	amqp_queue_declare(conn, 1, amqp_cstring_bytes(queue), 0, 1, 0, 0, amqp_empty_table);
	assert_int_equal(amqp_get_rpc_reply(conn).reply_type, AMQP_RESPONSE_NORMAL);
	amqp_queue_bind(conn, 1, amqp_cstring_bytes(queue), amqp_cstring_bytes("dialer.commands"),
			amqp_cstring_bytes("campaign.#"), amqp_empty_table);
	assert_int_equal(amqp_get_rpc_reply(conn).reply_type, AMQP_RESPONSE_NORMAL);
	it_mq_close(conn);
	return 0;
}

static int teardown(void **state)
{
	amqp_connection_state_t conn = it_mq_open();

	(void)state;
	amqp_queue_delete(conn, 1, amqp_cstring_bytes(queue), 0, 0);
	it_mq_close(conn);
	return 0;
}

/* Takes every message now in the test queue whose campaignId is id (up to
 * max, waiting up to wait_ms for the first) and returns how many; their
 * types are written to types. */
static int drain(const char *id, char types[][32], int max, int wait_ms)
{
	amqp_connection_state_t conn = it_mq_open();
	int found = 0;

	amqp_basic_consume(conn, 1, amqp_cstring_bytes(queue), amqp_empty_bytes, 0, 1, 0, amqp_empty_table);
	assert_int_equal(amqp_get_rpc_reply(conn).reply_type, AMQP_RESPONSE_NORMAL);
	for (;;) {
		amqp_envelope_t env;
		/* After a first message, a short quiet spell means the queue is drained. */
		int ms = found ? 300 : wait_ms;
		struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
		amqp_rpc_reply_t rr;
		json_t *body;

		amqp_maybe_release_buffers(conn);
		rr = amqp_consume_message(conn, &env, &tv, 0);
		if (rr.reply_type != AMQP_RESPONSE_NORMAL)
			break;
		body = json_loadb(env.message.body.bytes, env.message.body.len, 0, NULL);
		assert_non_null(body);
		/* Persistent, typed, identified: what consumers rely on. */
		assert_int_equal(env.message.properties.delivery_mode, 2);
		assert_true(env.message.properties._flags & AMQP_BASIC_MESSAGE_ID_FLAG);
		if (!strcmp(json_string_value(json_object_get(body, "campaignId")), id)) {
			if (found < max)
				snprintf(types[found], 32, "%s", json_string_value(json_object_get(body, "type")));
			found++;
		}
		json_decref(body);
		amqp_destroy_envelope(&env);
	}
	it_mq_close(conn);
	return found;
}

static char *new_campaign(struct it_org *org)
{
	struct it_resp *r = it_call("POST", "/v1/audiences", org->key, "{\"name\":\"A\"}", NULL);
	char *id;

	it_expect(r, 201);
	{
		/* One contact, whose call rings for seconds: the campaign cannot
		 * complete between the commands the tests send. */
		char phone[20], path[128];
		struct it_resp *ct, *add;

		it_phone(phone, 1);
		ct = it_callf("POST", "/v1/contacts", org->key, "{\"phoneNumber\":\"%s\"}", phone);
		it_expect(ct, 201);
		snprintf(path, sizeof(path), "/v1/audiences/%s/contacts", it_str(r, "id"));
		add = it_callf("POST", path, org->key, "{\"contactIds\":[\"%s\"]}", it_str(ct, "id"));
		it_expect(add, 200);
		it_resp_free(add);
		it_resp_free(ct);
	}
	{
		struct it_resp *c = it_callf("POST", "/v1/campaigns", org->key,
					     "{\"name\":\"Cmd\",\"flowId\":\"%s\",\"audienceId\":\"%s\"}", org->flow_id,
					     it_str(r, "id"));
		it_expect(c, 201);
		id = strdup(it_str(c, "id"));
		it_resp_free(c);
	}
	it_resp_free(r);
	return id;
}

static struct it_resp *act(struct it_org *org, const char *id, const char *action)
{
	char path[256];

	snprintf(path, sizeof(path), "/v1/campaigns/%s/%s", id, action);
	return it_call("POST", path, org->key, NULL, NULL);
}

static void test_commands_follow_commits(void **state)
{
	struct it_org org;
	struct it_resp *r;
	char types[8][32], *id;
	int n;

	(void)state;
	it_org_new(&org, 100);
	id = new_campaign(&org);
	r = act(&org, id, "start");
	it_expect(r, 200);
	it_resp_free(r);
	r = act(&org, id, "pause");
	it_expect(r, 200);
	it_resp_free(r);
	/* Refused transitions commit nothing and publish nothing. */
	r = act(&org, id, "pause");
	it_expect(r, 409);
	it_resp_free(r);
	r = act(&org, id, "resume");
	it_expect(r, 200);
	it_resp_free(r);
	r = act(&org, id, "cancel");
	it_expect(r, 200);
	it_resp_free(r);
	/* Each committed change is published once. Relays (the API's and the
	 * scheduler's, each replica's) share the outbox row by row, so two
	 * commands a few milliseconds apart can reach the broker in either
	 * order: consumers act on the campaign's row, not on the order. */
	n = drain(id, types, 8, 10000);
	assert_int_equal(n, 4);
	{
		static const char *const want[] = {"campaign.started", "campaign.paused", "campaign.resumed",
						   "campaign.cancelled"};

		for (size_t k = 0; k < DL_ARRAY_LEN(want); k++) {
			int seen = 0;

			for (int i = 0; i < n; i++)
				seen += !strcmp(types[i], want[k]);
			if (seen != 1)
				fail_msg("%s published %d times", want[k], seen);
		}
	}
	/* Published rows leave the outbox. */
	assert_int_equal(it_db_count("SELECT count(*) FROM outbox WHERE body->>'campaignId' = $1", id, NULL), 0);
	free(id);
}

static int outbox_empty_for(void *arg)
{
	return it_db_count("SELECT count(*) FROM outbox WHERE body->>'campaignId' = $1", (const char *)arg,
			   NULL) == 0;
}

static void run_stack(const char *verb)
{
	char cmd[1024];

	snprintf(cmd, sizeof(cmd), "bash %s %s %s >/dev/null", it_env("DIALER_STACK"), verb,
		 it_env("STACK_RUNDIR"));
	assert_int_equal(system(cmd), 0);
}

static void test_command_survives_broker_outage(void **state)
{
	struct it_org org;
	struct it_resp *r;
	char types[4][32], *id;

	(void)state;
	it_org_new(&org, 100);
	id = new_campaign(&org);
	run_stack("stop-broker");
	/* The state change commits while the broker is down... */
	r = act(&org, id, "start");
	it_expect(r, 200);
	it_resp_free(r);
	assert_int_equal(it_db_count("SELECT count(*) FROM outbox WHERE body->>'campaignId' = $1", id, NULL), 1);
	run_stack("start-broker");
	/* ...and its command is published once the broker is back. */
	assert_true(it_poll(outbox_empty_for, id, 60000));
	assert_int_equal(drain(id, types, 4, 10000), 1);
	assert_string_equal(types[0], "campaign.started");
	free(id);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_commands_follow_commits),
		cmocka_unit_test(test_command_survives_broker_outage),
	};

	return cmocka_run_group_tests_name("commands outbox", tests, setup, teardown);
}
