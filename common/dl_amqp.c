#include "dl_amqp.h"

#include <amqp_ssl_socket.h>
#include <amqp_tcp_socket.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "dl_log.h"
#include "dl_metrics.h"

#define CHANNEL 1

void dl_amqp_init(struct dl_amqp *mq, const struct dl_config *cfg)
{
	memset(mq, 0, sizeof(*mq));
	mq->cfg = cfg;
	mq->backoff_ms = 100;
}

static int reply_ok(amqp_rpc_reply_t r, const char *what)
{
	char msg[256];

	if (r.reply_type == AMQP_RESPONSE_NORMAL)
		return 0;
	if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION) {
		snprintf(msg, sizeof(msg), "%s", amqp_error_string2(r.library_error));
	} else if (r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
		amqp_connection_close_t *c = r.reply.decoded;

		snprintf(msg, sizeof(msg), "connection closed %u %.*s", c->reply_code,
			 (int)c->reply_text.len, (const char *)c->reply_text.bytes);
	} else if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
		amqp_channel_close_t *c = r.reply.decoded;

		snprintf(msg, sizeof(msg), "channel closed %u %.*s", c->reply_code,
			 (int)c->reply_text.len, (const char *)c->reply_text.bytes);
	} else {
		snprintf(msg, sizeof(msg), "unexpected reply 0x%08x", r.reply.id);
	}
	dl_log_kv(DL_WARN, "amqp call failed", "call", what, "error", msg, NULL);
	return -EIO;
}

static int rpc_ok(struct dl_amqp *mq, const char *what)
{
	return reply_ok(amqp_get_rpc_reply(mq->conn), what);
}

void dl_amqp_close(struct dl_amqp *mq)
{
	if (mq->conn == NULL)
		return;
	if (mq->open) {
		amqp_channel_close(mq->conn, CHANNEL, AMQP_REPLY_SUCCESS);
		amqp_connection_close(mq->conn, AMQP_REPLY_SUCCESS);
	}
	amqp_destroy_connection(mq->conn);
	mq->conn = NULL;
	mq->open = false;
}

/* Marks the connection lost so the next dl_amqp_ensure reconnects. */
static int lost(struct dl_amqp *mq, const char *why)
{
	if (mq->open)
		dl_log_kv(DL_WARN, "amqp connection lost", "error", why, NULL);
	mq->open = false;
	if (mq->conn != NULL) {
		amqp_destroy_connection(mq->conn);
		mq->conn = NULL;
	}
	return -EIO;
}

int dl_amqp_connect(struct dl_amqp *mq)
{
	struct amqp_connection_info info;
	amqp_socket_t *sock;
	struct timeval tv = {5, 0};
	char *url = strdup(mq->cfg->amqp_url);
	int r = -EIO;

	dl_amqp_close(mq);
	if (url == NULL)
		return -ENOMEM;
	amqp_default_connection_info(&info);
	if (amqp_parse_url(url, &info) != AMQP_STATUS_OK) {
		dl_log_kv(DL_ERROR, "amqp url is not valid", NULL);
		goto out;
	}
	mq->conn = amqp_new_connection();
	if (mq->cfg->amqp_tls || info.ssl) {
		sock = amqp_ssl_socket_new(mq->conn);
		if (sock && mq->cfg->amqp_tls_ca_file[0])
			amqp_ssl_socket_set_cacert(sock, mq->cfg->amqp_tls_ca_file);
	} else {
		sock = amqp_tcp_socket_new(mq->conn);
	}
	if (sock == NULL || amqp_socket_open_noblock(sock, info.host, info.port, &tv) != AMQP_STATUS_OK) {
		dl_log_kv(DL_WARN, "amqp connect failed", "host", info.host, NULL);
		goto fail;
	}
	if (reply_ok(amqp_login(mq->conn, info.vhost, 0, 131072, mq->cfg->amqp_heartbeat_s,
				AMQP_SASL_METHOD_PLAIN, info.user, info.password),
		     "login"))
		goto fail;
	amqp_channel_open(mq->conn, CHANNEL);
	if (rpc_ok(mq, "channel.open"))
		goto fail;
	amqp_confirm_select(mq->conn, CHANNEL);
	if (rpc_ok(mq, "confirm.select"))
		goto fail;
	mq->open = true;
	mq->next_tag = 1;
	mq->acked_upto = 0;
	mq->nacked = false;
	if (dl_amqp_declare_topology(mq) < 0)
		goto fail;
	dl_log_kv(DL_INFO, "amqp connected", "host", info.host, NULL);
	r = 0;
	goto out;
fail:
	mq->open = false;
	amqp_destroy_connection(mq->conn);
	mq->conn = NULL;
out:
	free(url);
	return r;
}

int dl_amqp_ensure(struct dl_amqp *mq, volatile const int *stop)
{
	while (!mq->open) {
		unsigned char j;
		int wait;

		if (stop && *stop)
			return -ECANCELED;
		if (dl_amqp_connect(mq) == 0) {
			mq->backoff_ms = 100;
			return 0;
		}
		if (dl_random_bytes(&j, 1) < 0)
			j = 128;
		/* Full jitter over the current step keeps a fleet from reconnecting in step. */
		wait = mq->backoff_ms / 2 + (int)((long)mq->backoff_ms * j / 512);
		dl_sleep_ms(wait, stop);
		if (mq->backoff_ms < 5000)
			mq->backoff_ms *= 2;
	}
	return 0;
}

static amqp_table_entry_t entry_str(const char *k, const char *v)
{
	amqp_table_entry_t e;

	e.key = amqp_cstring_bytes(k);
	e.value.kind = AMQP_FIELD_KIND_UTF8;
	e.value.value.bytes = amqp_cstring_bytes(v);
	return e;
}

static amqp_table_entry_t entry_int(const char *k, int v)
{
	amqp_table_entry_t e;

	e.key = amqp_cstring_bytes(k);
	e.value.kind = AMQP_FIELD_KIND_I32;
	e.value.value.i32 = v;
	return e;
}

static int declare_queue(struct dl_amqp *mq, const char *name, amqp_table_entry_t *args, int nargs)
{
	amqp_table_t t = {nargs, args};

	amqp_queue_declare(mq->conn, CHANNEL, amqp_cstring_bytes(name), 0, 1, 0, 0, t);
	return rpc_ok(mq, name);
}

int dl_amqp_declare_topology(struct dl_amqp *mq)
{
	const struct dl_config *c = mq->cfg;
	amqp_table_entry_t quorum[] = {entry_str("x-queue-type", "quorum")};
	amqp_table_entry_t jobs[] = {
		entry_str("x-queue-type", "quorum"),
		entry_int("x-delivery-limit", c->amqp_delivery_limit),
		entry_str("x-dead-letter-exchange", c->amqp_dead_letter_exchange),
		entry_str("x-dead-letter-strategy", "at-least-once"),
		entry_str("x-overflow", "reject-publish"),
	};
	struct {
		const char *name, *type;
	} exchanges[] = {
		{c->amqp_commands_exchange, "topic"},
		{c->amqp_jobs_exchange, "direct"},
		{c->amqp_dead_letter_exchange, "fanout"},
	};

	for (size_t i = 0; i < DL_ARRAY_LEN(exchanges); i++) {
		amqp_exchange_declare(mq->conn, CHANNEL, amqp_cstring_bytes(exchanges[i].name),
				      amqp_cstring_bytes(exchanges[i].type), 0, 1, 0, 0, amqp_empty_table);
		if (rpc_ok(mq, exchanges[i].name))
			return -EIO;
	}
	if (declare_queue(mq, c->amqp_commands_queue, quorum, 1) ||
	    declare_queue(mq, c->amqp_jobs_queue, jobs, (int)DL_ARRAY_LEN(jobs)) ||
	    declare_queue(mq, c->amqp_results_queue, quorum, 1) ||
	    declare_queue(mq, c->amqp_dead_letter_queue, quorum, 1))
		return -EIO;
	amqp_queue_bind(mq->conn, CHANNEL, amqp_cstring_bytes(c->amqp_commands_queue),
			amqp_cstring_bytes(c->amqp_commands_exchange), amqp_cstring_bytes("campaign.#"),
			amqp_empty_table);
	if (rpc_ok(mq, "bind commands"))
		return -EIO;
	amqp_queue_bind(mq->conn, CHANNEL, amqp_cstring_bytes(c->amqp_jobs_queue),
			amqp_cstring_bytes(c->amqp_jobs_exchange), amqp_cstring_bytes("dial"), amqp_empty_table);
	if (rpc_ok(mq, "bind jobs"))
		return -EIO;
	amqp_queue_bind(mq->conn, CHANNEL, amqp_cstring_bytes(c->amqp_results_queue),
			amqp_cstring_bytes(c->amqp_jobs_exchange), amqp_cstring_bytes("result"),
			amqp_empty_table);
	if (rpc_ok(mq, "bind results"))
		return -EIO;
	amqp_queue_bind(mq->conn, CHANNEL, amqp_cstring_bytes(c->amqp_dead_letter_queue),
			amqp_cstring_bytes(c->amqp_dead_letter_exchange), amqp_cstring_bytes(""),
			amqp_empty_table);
	return rpc_ok(mq, "bind dead letters");
}

int dl_amqp_publish(struct dl_amqp *mq, const char *exchange, const char *routing_key,
		    const char *message_id, const char *type, const void *body, size_t len)
{
	amqp_basic_properties_t props;
	amqp_bytes_t b = {len, (void *)body};
	int r;

	if (!mq->open)
		return -EIO;
	memset(&props, 0, sizeof(props));
	props._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG |
		       AMQP_BASIC_MESSAGE_ID_FLAG | AMQP_BASIC_TIMESTAMP_FLAG;
	props.content_type = amqp_cstring_bytes("application/json");
	props.delivery_mode = AMQP_DELIVERY_PERSISTENT;
	props.message_id = amqp_cstring_bytes(message_id);
	props.timestamp = (uint64_t)(dl_now_ms() / 1000);
	if (type != NULL) {
		props._flags |= AMQP_BASIC_TYPE_FLAG;
		props.type = amqp_cstring_bytes(type);
	}
	r = amqp_basic_publish(mq->conn, CHANNEL, amqp_cstring_bytes(exchange),
			       amqp_cstring_bytes(routing_key), 1, 0, &props, b);
	if (r != AMQP_STATUS_OK)
		return lost(mq, amqp_error_string2(r));
	mq->next_tag++;
	return 0;
}

#define M_BATCH_SIZE "dialer_amqp_batch_size"
static pthread_once_t batch_metric_once = PTHREAD_ONCE_INIT;

/* Once per process, not at every publish. */
static void batch_metric_register(void)
{
	static const double sizes[] = {1, 2, 4, 8, 16, 32, 64, 128};

	dl_metrics_register_histogram(M_BATCH_SIZE,
				      "Members of each batch message sent (n 1: the member alone), by batch type: "
				      "small batches cost the broker and the consumer more a member.",
				      sizes, sizeof(sizes) / sizeof(sizes[0]));
}

int dl_amqp_publish_batch(struct dl_amqp *mq, const char *exchange, const char *routing_key,
			  const char *batch_type, const char *key, const char *const *bodies, const size_t *lens,
			  int n, const char *message_id, const char *type)
{
	char id[DL_ID_MAX];
	size_t len = strlen(batch_type) + strlen(key) + sizeof(id) + 40;
	char *body, *p;
	int r;

	{
		char labels[64];

		pthread_once(&batch_metric_once, batch_metric_register);
		snprintf(labels, sizeof(labels), "type=\"%s\"", batch_type);
		dl_metrics_observe(M_BATCH_SIZE, labels, n);
	}
	if (n == 1)
		return dl_amqp_publish(mq, exchange, routing_key, message_id, type, bodies[0], lens[0]);
	for (int i = 0; i < n; i++)
		len += lens[i] + 1;
	body = malloc(len);
	if (body == NULL)
		return -EIO;
	dl_id_new("msg", id);
	p = body + sprintf(body, "{\"type\":\"%s\",\"messageId\":\"%s\",\"%s\":[", batch_type, id, key);
	for (int i = 0; i < n; i++) {
		memcpy(p, bodies[i], lens[i]);
		p += lens[i];
		*p++ = i == n - 1 ? ']' : ',';
	}
	*p++ = '}';
	r = dl_amqp_publish(mq, exchange, routing_key, id, batch_type, body, (size_t)(p - body));
	free(body);
	return r;
}

/* Handles one frame that is not a delivery: confirms, returns, closes. */
static int handle_frame(struct dl_amqp *mq, amqp_frame_t *f)
{
	if (f->frame_type != AMQP_FRAME_METHOD)
		return 0;
	switch (f->payload.method.id) {
	case AMQP_BASIC_ACK_METHOD: {
		amqp_basic_ack_t *a = f->payload.method.decoded;

		if (a->delivery_tag > mq->acked_upto)
			mq->acked_upto = a->delivery_tag;
		return 0;
	}
	case AMQP_BASIC_NACK_METHOD: {
		amqp_basic_nack_t *n = f->payload.method.decoded;

		mq->nacked = true;
		if (n->delivery_tag > mq->acked_upto)
			mq->acked_upto = n->delivery_tag;
		return 0;
	}
	case AMQP_BASIC_RETURN_METHOD: {
		amqp_message_t m;

		/* An unroutable message: its body follows and must be read off. */
		mq->nacked = true;
		if (amqp_read_message(mq->conn, f->channel, &m, 0).reply_type == AMQP_RESPONSE_NORMAL)
			amqp_destroy_message(&m);
		dl_log_kv(DL_ERROR, "amqp message returned unroutable", NULL);
		return 0;
	}
	case AMQP_CHANNEL_CLOSE_METHOD:
	case AMQP_CONNECTION_CLOSE_METHOD:
		return lost(mq, "closed by broker");
	default:
		return 0;
	}
}

int dl_amqp_wait_confirms(struct dl_amqp *mq, int timeout_ms)
{
	int64_t deadline = dl_mono_ms() + timeout_ms;
	bool bad;

	while (mq->open && mq->acked_upto + 1 < mq->next_tag) {
		amqp_frame_t f;
		int64_t left = deadline - dl_mono_ms();
		struct timeval tv;
		int r;

		if (left <= 0) {
			return lost(mq, "timed out waiting for publisher confirms");
		}
		tv.tv_sec = left / 1000;
		tv.tv_usec = (left % 1000) * 1000;
		r = amqp_simple_wait_frame_noblock(mq->conn, &f, &tv);
		if (r == AMQP_STATUS_TIMEOUT)
			continue;
		if (r != AMQP_STATUS_OK)
			return lost(mq, amqp_error_string2(r));
		if (handle_frame(mq, &f) < 0)
			return -EIO;
	}
	if (!mq->open)
		return -EIO;
	bad = mq->nacked;
	mq->nacked = false;
	amqp_maybe_release_buffers(mq->conn);
	return bad ? -EIO : 0;
}

int dl_amqp_consume(struct dl_amqp *mq, const char *queue, int prefetch)
{
	amqp_basic_qos(mq->conn, CHANNEL, 0, (uint16_t)prefetch, 0);
	if (rpc_ok(mq, "basic.qos"))
		return lost(mq, "basic.qos failed");
	amqp_basic_consume(mq->conn, CHANNEL, amqp_cstring_bytes(queue), amqp_empty_bytes, 0, 0, 0,
			   amqp_empty_table);
	if (rpc_ok(mq, "basic.consume"))
		return lost(mq, "basic.consume failed");
	return 0;
}

int dl_amqp_next(struct dl_amqp *mq, struct dl_amqp_msg *msg, int timeout_ms)
{
	struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
	amqp_rpc_reply_t r;

	msg->have = false;
	if (!mq->open)
		return -EIO;
	amqp_maybe_release_buffers(mq->conn);
	r = amqp_consume_message(mq->conn, &msg->env, &tv, 0);
	if (r.reply_type == AMQP_RESPONSE_NORMAL) {
		msg->have = true;
		return 1;
	}
	if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION && r.library_error == AMQP_STATUS_TIMEOUT)
		return 0;
	if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
	    r.library_error == AMQP_STATUS_UNEXPECTED_STATE) {
		amqp_frame_t f;

		/* A non-delivery frame (ack, return, close) arrived instead. */
		if (amqp_simple_wait_frame_noblock(mq->conn, &f, &tv) != AMQP_STATUS_OK)
			return lost(mq, "frame read failed");
		return handle_frame(mq, &f) < 0 ? -EIO : 0;
	}
	return lost(mq, "consume failed");
}

void dl_amqp_msg_done(struct dl_amqp *mq, struct dl_amqp_msg *msg)
{
	(void)mq;
	if (msg->have)
		amqp_destroy_envelope(&msg->env);
	msg->have = false;
}

int dl_amqp_ack(struct dl_amqp *mq, uint64_t tag)
{
	if (!mq->open || amqp_basic_ack(mq->conn, CHANNEL, tag, 0) != AMQP_STATUS_OK)
		return lost(mq, "ack failed");
	return 0;
}

int dl_amqp_ack_through(struct dl_amqp *mq, uint64_t tag)
{
	if (!mq->open || amqp_basic_ack(mq->conn, CHANNEL, tag, 1) != AMQP_STATUS_OK)
		return lost(mq, "ack failed");
	return 0;
}

int dl_amqp_nack(struct dl_amqp *mq, uint64_t tag, bool requeue)
{
	if (!mq->open || amqp_basic_nack(mq->conn, CHANNEL, tag, 0, requeue) != AMQP_STATUS_OK)
		return lost(mq, "nack failed");
	return 0;
}

int dl_amqp_poll(struct dl_amqp *mq, int timeout_ms)
{
	struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
	amqp_frame_t f;
	int r;

	if (!mq->open)
		return -EIO;
	r = amqp_simple_wait_frame_noblock(mq->conn, &f, &tv);
	if (r == AMQP_STATUS_TIMEOUT)
		return 0;
	if (r != AMQP_STATUS_OK)
		return lost(mq, amqp_error_string2(r));
	return handle_frame(mq, &f);
}
