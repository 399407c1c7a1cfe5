/* dl_amqp: one RabbitMQ connection with one channel in confirm mode.
 * Not thread-safe: one struct dl_amqp per thread. Logs failures. */
#ifndef DL_AMQP_H
#define DL_AMQP_H

#include <amqp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dl_config.h"
#include "dl_util.h"

struct dl_amqp {
	amqp_connection_state_t conn;
	bool open;
	uint64_t next_tag;   /* delivery tag the next publish gets */
	uint64_t acked_upto; /* highest tag confirmed */
	bool nacked;         /* a nack or a return arrived since the last wait */
	int backoff_ms;
	const struct dl_config *cfg;
};

/* Message as consumed; body points into the library's buffers until the next
 * call on the connection. */
struct dl_amqp_msg {
	amqp_envelope_t env;
	bool have;
};

void dl_amqp_init(struct dl_amqp *mq, const struct dl_config *cfg);
/* Connects, logs in with heartbeats, opens channel 1 in confirm mode and
 * declares the topology. Returns 0 or -EIO. */
int dl_amqp_connect(struct dl_amqp *mq) DL_WUR;
/* Connects if not connected, retrying with exponential backoff and jitter
 * until success or *stop. Returns 0 when connected, -ECANCELED on stop. */
int dl_amqp_ensure(struct dl_amqp *mq, volatile const int *stop) DL_WUR;
/* Closes the connection; safe to call on a closed one. */
void dl_amqp_close(struct dl_amqp *mq);
/* Declares exchanges and queues every service relies on; 0 or -EIO. */
int dl_amqp_declare_topology(struct dl_amqp *mq) DL_WUR;

/* Carrier call statuses one call.statuses message carries at most: the API
 * puts the callbacks it relays together in one message, the scheduler
 * refuses a larger one. */
#define DL_CALL_STATUSES_MAX 64
/* Job results one job.results message carries at most: a worker puts the
 * results it has confirmed together in one message, the scheduler refuses
 * a larger one. */
#define DL_JOB_RESULTS_MAX 64

/* Publishes a persistent JSON message with mandatory set; does not wait. */
int dl_amqp_publish(struct dl_amqp *mq, const char *exchange, const char *routing_key,
		    const char *message_id, const char *type, const void *body, size_t len) DL_WUR;
/* Publishes the n JSON objects bodies[i] (lens[i] bytes each) as one
 * message of type batch_type, {"type": batch_type, "messageId": a new id,
 * key: [bodies...]}, or bodies[0] alone (as message_id, of type) when n is
 * 1; does not wait. 0 or -EIO. */
int dl_amqp_publish_batch(struct dl_amqp *mq, const char *exchange, const char *routing_key,
			  const char *batch_type, const char *key, const char *const *bodies, const size_t *lens,
			  int n, const char *message_id, const char *type) DL_WUR;
/* Waits until every publish so far is confirmed. 0 when all were acked and
 * routed; -EIO on nack, return, timeout or a lost connection (then the
 * caller republishes: consumers dedupe by message id). */
int dl_amqp_wait_confirms(struct dl_amqp *mq, int timeout_ms) DL_WUR;

/* Starts consuming queue with manual acks and the given prefetch. */
int dl_amqp_consume(struct dl_amqp *mq, const char *queue, int prefetch) DL_WUR;
/* Waits up to timeout_ms for a delivery. Returns 1 with *msg filled, 0 on
 * timeout, -EIO when the connection is lost. Destroy msg with
 * dl_amqp_msg_done. */
int dl_amqp_next(struct dl_amqp *mq, struct dl_amqp_msg *msg, int timeout_ms) DL_WUR;
void dl_amqp_msg_done(struct dl_amqp *mq, struct dl_amqp_msg *msg);
int dl_amqp_ack(struct dl_amqp *mq, uint64_t tag) DL_WUR;
/* Acks every delivery up to and including tag. */
int dl_amqp_ack_through(struct dl_amqp *mq, uint64_t tag) DL_WUR;
int dl_amqp_nack(struct dl_amqp *mq, uint64_t tag, bool requeue) DL_WUR;
/* Services heartbeats and broker frames for up to timeout_ms while idle;
 * 0, or -EIO when the connection is gone. */
int dl_amqp_poll(struct dl_amqp *mq, int timeout_ms) DL_WUR;

#endif
