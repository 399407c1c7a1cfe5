/* mq_floor: the broker floor for `make bench`, and the queue probes the
 * bench uses. librabbitmq 0.11, one connection, channel 1.
 *
 *   mq_floor floor URL N SIZE WINDOW
 *       declares a fresh quorum queue bench.floor, publishes N persistent
 *       messages of SIZE bytes with publisher confirms, at most WINDOW
 *       unconfirmed at a time, then consumes them all with prefetch WINDOW
 *       and one basic.ack per message, and prints
 *       "publish_per_s=X consume_per_s=Y"; deletes the queue.
 *   mq_floor count URL QUEUE          prints the queue's ready messages
 *   mq_floor watch URL QUEUE TARGET TIMEOUT_MS
 *       polls the queue (passive declare, every 10 ms) and prints
 *       "MS COUNT" (ms since the epoch) whenever the count changes, until
 *       COUNT >= TARGET or the timeout; exit 0 if reached, 1 if not.
 *   mq_floor purge URL QUEUE          purges the queue
 */
#include <amqp.h>
#include <amqp_tcp_socket.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#define CH 1

static double mono_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static long long epoch_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void die_reply(amqp_rpc_reply_t r, const char *what)
{
	if (r.reply_type == AMQP_RESPONSE_NORMAL)
		return;
	if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION)
		fprintf(stderr, "mq_floor: %s: %s\n", what, amqp_error_string2(r.library_error));
	else
		fprintf(stderr, "mq_floor: %s: server error 0x%08x\n", what, r.reply.id);
	exit(2);
}

static amqp_connection_state_t connect_url(const char *url_in)
{
	struct amqp_connection_info info;
	char *url = strdup(url_in);
	amqp_connection_state_t c = amqp_new_connection();
	amqp_socket_t *s = amqp_tcp_socket_new(c);

	if (url == NULL || amqp_parse_url(url, &info) != AMQP_STATUS_OK) {
		fprintf(stderr, "mq_floor: bad url\n");
		exit(2);
	}
	if (s == NULL || amqp_socket_open(s, info.host, info.port) != AMQP_STATUS_OK) {
		fprintf(stderr, "mq_floor: cannot connect to %s:%d\n", info.host, info.port);
		exit(2);
	}
	die_reply(amqp_login(c, info.vhost, 0, 131072, 0, AMQP_SASL_METHOD_PLAIN, info.user, info.password),
		  "login");
	amqp_channel_open(c, CH);
	die_reply(amqp_get_rpc_reply(c), "channel.open");
	free(url);
	return c;
}

/* Ready messages of queue, by a passive declare. */
static long queue_count(amqp_connection_state_t c, const char *queue)
{
	amqp_queue_declare_ok_t *ok =
		amqp_queue_declare(c, CH, amqp_cstring_bytes(queue), 1, 0, 0, 0, amqp_empty_table);

	die_reply(amqp_get_rpc_reply(c), "queue.declare passive");
	return ok ? (long)ok->message_count : -1;
}

static int floor_run(amqp_connection_state_t c, long n, size_t size, int window)
{
	const char *q = "bench.floor";
	amqp_table_entry_t qa[1];
	amqp_table_t args = {1, qa};
	amqp_basic_properties_t props;
	char *body = malloc(size);
	uint64_t next_tag = 1, acked = 0;
	long consumed = 0, sent = 0;
	double t0, t_pub, t_con;

	if (body == NULL)
		return 2;
	for (size_t i = 0; i < size; i++)
		body[i] = (char)('a' + i % 26);
	qa[0].key = amqp_cstring_bytes("x-queue-type");
	qa[0].value.kind = AMQP_FIELD_KIND_UTF8;
	qa[0].value.value.bytes = amqp_cstring_bytes("quorum");
	amqp_queue_delete(c, CH, amqp_cstring_bytes(q), 0, 0);
	die_reply(amqp_get_rpc_reply(c), "queue.delete");
	amqp_queue_declare(c, CH, amqp_cstring_bytes(q), 0, 1, 0, 0, args);
	die_reply(amqp_get_rpc_reply(c), "queue.declare");
	amqp_confirm_select(c, CH);
	die_reply(amqp_get_rpc_reply(c), "confirm.select");

	memset(&props, 0, sizeof(props));
	props._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_MESSAGE_ID_FLAG;
	props.content_type = amqp_cstring_bytes("application/json");
	props.delivery_mode = AMQP_DELIVERY_PERSISTENT;

	/* Publish with at most `window` unconfirmed messages. */
	t0 = mono_s();
	while (acked < (uint64_t)n) {
		while (sent < n && next_tag - 1 - acked < (uint64_t)window) {
			char mid[32];
			amqp_bytes_t b = {size, body};

			snprintf(mid, sizeof(mid), "floor_%ld", sent);
			props.message_id = amqp_cstring_bytes(mid);
			if (amqp_basic_publish(c, CH, amqp_empty_bytes, amqp_cstring_bytes(q), 1, 0, &props, b) !=
			    AMQP_STATUS_OK) {
				fprintf(stderr, "mq_floor: publish failed\n");
				return 2;
			}
			sent++;
			next_tag++;
		}
		{
			amqp_frame_t f;
			struct timeval tv = {10, 0};
			int r = amqp_simple_wait_frame_noblock(c, &f, &tv);

			if (r != AMQP_STATUS_OK) {
				fprintf(stderr, "mq_floor: waiting for confirms: %s\n", amqp_error_string2(r));
				return 2;
			}
			if (f.frame_type != AMQP_FRAME_METHOD)
				continue;
			if (f.payload.method.id == AMQP_BASIC_ACK_METHOD) {
				amqp_basic_ack_t *a = f.payload.method.decoded;

				if (a->delivery_tag > acked)
					acked = a->delivery_tag;
			} else if (f.payload.method.id == AMQP_BASIC_NACK_METHOD) {
				fprintf(stderr, "mq_floor: broker nacked a publish\n");
				return 2;
			} else if (f.payload.method.id == AMQP_CHANNEL_CLOSE_METHOD ||
				   f.payload.method.id == AMQP_CONNECTION_CLOSE_METHOD) {
				fprintf(stderr, "mq_floor: closed by broker\n");
				return 2;
			}
		}
		amqp_maybe_release_buffers(c);
	}
	t_pub = mono_s() - t0;

	/* Consume them all, one ack per message, prefetch = window. */
	amqp_basic_qos(c, CH, 0, (uint16_t)window, 0);
	die_reply(amqp_get_rpc_reply(c), "basic.qos");
	amqp_basic_consume(c, CH, amqp_cstring_bytes(q), amqp_empty_bytes, 0, 0, 0, amqp_empty_table);
	die_reply(amqp_get_rpc_reply(c), "basic.consume");
	t0 = mono_s();
	while (consumed < n) {
		amqp_envelope_t env;
		struct timeval tv = {10, 0};
		amqp_rpc_reply_t r;

		amqp_maybe_release_buffers(c);
		r = amqp_consume_message(c, &env, &tv, 0);
		if (r.reply_type != AMQP_RESPONSE_NORMAL) {
			if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
			    r.library_error == AMQP_STATUS_UNEXPECTED_STATE) {
				amqp_frame_t f;

				/* a late confirm or other non-delivery frame */
				if (amqp_simple_wait_frame_noblock(c, &f, &tv) == AMQP_STATUS_OK)
					continue;
			}
			fprintf(stderr, "mq_floor: consume failed after %ld\n", consumed);
			return 2;
		}
		if (amqp_basic_ack(c, CH, env.delivery_tag, 0) != AMQP_STATUS_OK) {
			fprintf(stderr, "mq_floor: ack failed\n");
			return 2;
		}
		amqp_destroy_envelope(&env);
		consumed++;
	}
	t_con = mono_s() - t0;
	amqp_queue_delete(c, CH, amqp_cstring_bytes(q), 0, 0);
	amqp_get_rpc_reply(c);
	printf("publish_per_s=%.0f consume_per_s=%.0f publish_s=%.3f consume_s=%.3f n=%ld size=%zu window=%d\n",
	       (double)n / t_pub, (double)n / t_con, t_pub, t_con, n, size, window);
	free(body);
	return 0;
}

int main(int argc, char **argv)
{
	amqp_connection_state_t c;
	int rc = 0;

	if (argc < 4) {
		fprintf(stderr, "usage: mq_floor floor URL N SIZE WINDOW | count URL QUEUE | "
				"watch URL QUEUE TARGET TIMEOUT_MS | purge URL QUEUE\n");
		return 2;
	}
	c = connect_url(argv[2]);
	if (!strcmp(argv[1], "floor") && argc == 6) {
		rc = floor_run(c, atol(argv[3]), (size_t)atol(argv[4]), atoi(argv[5]));
	} else if (!strcmp(argv[1], "count")) {
		printf("%ld\n", queue_count(c, argv[3]));
	} else if (!strcmp(argv[1], "watch") && argc == 6) {
		long target = atol(argv[4]), last = -1;
		double deadline = mono_s() + atof(argv[5]) / 1000.0;
		struct timespec step = {0, 10 * 1000000L};

		rc = 1;
		while (mono_s() < deadline) {
			long n = queue_count(c, argv[3]);

			if (n != last) {
				printf("%lld %ld\n", epoch_ms(), n);
				fflush(stdout);
				last = n;
			}
			if (n >= target) {
				rc = 0;
				break;
			}
			nanosleep(&step, NULL);
		}
	} else if (!strcmp(argv[1], "purge")) {
		amqp_queue_purge_ok_t *ok = amqp_queue_purge(c, CH, amqp_cstring_bytes(argv[3]));

		die_reply(amqp_get_rpc_reply(c), "queue.purge");
		printf("%u\n", ok ? ok->message_count : 0);
	} else {
		fprintf(stderr, "mq_floor: unknown command or arguments\n");
		rc = 2;
	}
	amqp_channel_close(c, CH, AMQP_REPLY_SUCCESS);
	amqp_connection_close(c, AMQP_REPLY_SUCCESS);
	amqp_destroy_connection(c);
	return rc;
}
