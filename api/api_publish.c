/* Carrier callbacks straight to the broker. A callback is answered once
 * RabbitMQ has confirmed its call.status message, with no database write on
 * the way (an outbox row costs an insert, a commit, a NOTIFY to every relay
 * and the relay's claim and delete: four of them for every call placed).
 * Request threads hand their messages to one publisher thread, which owns
 * the connection (never shared across threads), publishes all it holds at
 * once (the call statuses among them as one call.statuses message) and
 * waits for their confirms together. Without the broker (down,
 * blocked, slow to confirm, or too many waiting) the caller writes the
 * message to the outbox as before, so nothing is lost; a message confirmed
 * after its caller gave up on it arrives twice, which the scheduler absorbs
 * (results are idempotent by attempt and sequence). */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api.h"
#include "dl_amqp.h"
#include "dl_log.h"

/* Messages waiting at most; more go to the outbox at once. */
#define PUB_QUEUE_MAX 4096

struct pub_msg {
	const char *exchange, *routing_key, *type;
	char message_id[DL_ID_MAX];
	char *body;
	size_t len;
	int rc;         /* 1 while unsettled, then 0 or -EIO */
	bool taken;     /* the publisher holds it */
	bool abandoned; /* its caller gave up: the publisher frees it */
	pthread_cond_t done; /* signalled when rc is set: only its caller waits on it */
	struct dl_http_later *later; /* or, for a request set aside, woken */
	struct pub_msg *next;
};

struct api_publisher {
	const struct dl_config *cfg;
	pthread_mutex_t mu;
	pthread_cond_t wake;
	struct pub_msg *head, **tail;
	int queued;
	int64_t busy_since; /* monotonic ms the batch in flight was taken, 0 when none */
	bool stop;
	pthread_t thread;
};

static void pub_free(struct pub_msg *m)
{
	pthread_cond_destroy(&m->done);
	free(m->body);
	free(m);
}

/* Publishes the messages from m on that can go as one: call statuses for
 * the same exchange and routing key, up to DL_CALL_STATUSES_MAX, as one
 * call.statuses message (one broker message, one confirm, one delivery for
 * the scheduler); anything else alone. Returns the first message after
 * them in *next; 0 or -EIO. */
static int pub_some(struct dl_amqp *mq, struct pub_msg *m, struct pub_msg **next)
{
	const char *bodies[DL_CALL_STATUSES_MAX];
	size_t lens[DL_CALL_STATUSES_MAX];
	struct pub_msg *end = m;
	int k = 1;

	bodies[0] = m->body;
	lens[0] = m->len;
	while (!strcmp(m->type, "call.status") && end->next != NULL && k < DL_CALL_STATUSES_MAX &&
	       !strcmp(end->next->type, m->type) && !strcmp(end->next->exchange, m->exchange) &&
	       !strcmp(end->next->routing_key, m->routing_key)) {
		end = end->next;
		bodies[k] = end->body;
		lens[k++] = end->len;
	}
	*next = end->next;
	return dl_amqp_publish_batch(mq, m->exchange, m->routing_key, "call.statuses", "statuses", bodies, lens, k,
				     m->message_id, m->type);
}

/* Publishes batch and waits for its confirms: 0 when all were confirmed. */
static int pub_send(struct dl_amqp *mq, struct pub_msg *batch, int64_t *retry_at, int *backoff)
{
	if (!mq->open) {
		if (dl_mono_ms() < *retry_at)
			return -EIO;
		if (dl_amqp_connect(mq) < 0) {
			*retry_at = dl_mono_ms() + *backoff;
			if (*backoff < 5000)
				*backoff *= 2;
			return -EIO;
		}
		*backoff = 100;
	}
	for (struct pub_msg *m = batch, *next; m != NULL; m = next)
		if (pub_some(mq, m, &next) < 0)
			return -EIO;
	return dl_amqp_wait_confirms(mq, mq->cfg->api_publish_wait_ms);
}

static void *pub_thread(void *arg)
{
	struct api_publisher *p = arg;
	struct dl_amqp mq;
	int64_t retry_at = 0;
	int backoff = 100;

	dl_amqp_init(&mq, p->cfg);
	pthread_mutex_lock(&p->mu);
	while (!p->stop || p->head != NULL) {
		struct pub_msg *batch, *next;
		int rc;

		if (p->head == NULL) {
			struct timespec ts;

			dl_timespec_in(CLOCK_REALTIME, 1000, &ts);
			pthread_cond_timedwait(&p->wake, &p->mu, &ts);
			if (p->head == NULL) {
				/* Idle: keep the connection's heartbeats going. */
				pthread_mutex_unlock(&p->mu);
				if (mq.open)
					DL_IGNORE(dl_amqp_poll(&mq, 0));
				pthread_mutex_lock(&p->mu);
				continue;
			}
		}
		batch = p->head;
		p->head = NULL;
		p->tail = &p->head;
		p->queued = 0;
		for (struct pub_msg *m = batch; m != NULL; m = m->next)
			m->taken = true;
		p->busy_since = dl_mono_ms();
		pthread_mutex_unlock(&p->mu);
		rc = pub_send(&mq, batch, &retry_at, &backoff);
		pthread_mutex_lock(&p->mu);
		p->busy_since = 0;
		for (struct pub_msg *m = batch; m != NULL; m = next) {
			next = m->next;
			if (m->abandoned) {
				pub_free(m);
			} else {
				m->rc = rc < 0 ? -EIO : 0;
				/* Under the lock: its request, once woken, settles
				 * it (api_publish_result) only after this. */
				if (m->later != NULL)
					dl_http_wake(m->later);
				else
					pthread_cond_signal(&m->done);
			}
		}
	}
	pthread_mutex_unlock(&p->mu);
	dl_amqp_close(&mq);
	return NULL;
}

int api_publisher_start(const struct dl_config *cfg, struct api_publisher **out)
{
	struct api_publisher *p = calloc(1, sizeof(*p));

	*out = NULL;
	if (p == NULL)
		return -ENOMEM;
	p->cfg = cfg;
	p->tail = &p->head;
	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->wake, NULL);
	if (pthread_create(&p->thread, NULL, pub_thread, p) != 0) {
		free(p);
		return -EAGAIN;
	}
	*out = p;
	return 0;
}

void api_publisher_stop(struct api_publisher *p)
{
	if (p == NULL)
		return;
	pthread_mutex_lock(&p->mu);
	p->stop = true;
	pthread_cond_signal(&p->wake);
	pthread_mutex_unlock(&p->mu);
	pthread_join(p->thread, NULL);
	pthread_mutex_destroy(&p->mu);
	pthread_cond_destroy(&p->wake);
	free(p);
}

/* A message for body (messageId and type added); NULL when out of memory. */
static struct pub_msg *pub_new(const char *exchange, const char *routing_key, const char *type, json_t *body)
{
	struct pub_msg *m = calloc(1, sizeof(*m));
	pthread_condattr_t ca;

	if (m == NULL)
		return NULL;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&m->done, &ca);
	pthread_condattr_destroy(&ca);
	dl_id_new("msg", m->message_id);
	json_object_set_new(body, "messageId", json_string(m->message_id));
	json_object_set_new(body, "type", json_string(type));
	m->body = json_dumps(body, JSON_COMPACT);
	if (m->body == NULL) {
		pub_free(m);
		return NULL;
	}
	m->len = strlen(m->body);
	m->exchange = exchange;
	m->routing_key = routing_key;
	m->type = type;
	m->rc = 1;
	return m;
}

/* Hands m to the publisher; under p->mu. -EBUSY (m left to the caller)
 * when stopping, too many wait, or the broker is stuck on the batch before:
 * then it goes straight to the outbox. */
static int pub_enqueue(struct api_publisher *p, struct pub_msg *m)
{
	if (p->stop || p->queued >= PUB_QUEUE_MAX || (p->busy_since != 0 && dl_mono_ms() - p->busy_since > p->cfg->api_publish_wait_ms))
		return -EBUSY;
	*p->tail = m;
	p->tail = &m->next;
	p->queued++;
	pthread_cond_signal(&p->wake);
	return 0;
}

/* m's outcome, m freed or, still unconfirmed, given up (-ETIMEDOUT: the
 * publisher frees it); under p->mu. */
static int pub_settle(struct api_publisher *p, struct pub_msg *m)
{
	int rc = m->rc;

	if (rc != 1) {
		pub_free(m);
		return rc;
	}
	if (m->taken) {
		m->abandoned = true;
	} else {
		struct pub_msg **pp = &p->head;

		while (*pp != m)
			pp = &(*pp)->next;
		*pp = m->next;
		if (p->tail == &m->next)
			p->tail = pp;
		p->queued--;
		pub_free(m);
	}
	return -ETIMEDOUT;
}

int api_publish(struct api_publisher *p, const char *exchange, const char *routing_key, const char *type,
		json_t *body)
{
	struct pub_msg *m = pub_new(exchange, routing_key, type, body);
	struct timespec until;
	int rc;

	if (m == NULL)
		return -ENOMEM;
	dl_timespec_in(CLOCK_MONOTONIC, p->cfg->api_publish_wait_ms, &until);
	pthread_mutex_lock(&p->mu);
	if (pub_enqueue(p, m) < 0) {
		pthread_mutex_unlock(&p->mu);
		pub_free(m);
		return -EBUSY;
	}
	while (m->rc == 1 && pthread_cond_timedwait(&m->done, &p->mu, &until) != ETIMEDOUT)
		;
	/* No confirm in time: given up (the caller uses the outbox). */
	rc = pub_settle(p, m);
	pthread_mutex_unlock(&p->mu);
	return rc;
}

int api_publish_later(struct api_publisher *p, const char *exchange, const char *routing_key, const char *type,
		      json_t *body, struct dl_http_later *later, struct api_pub_msg **out)
{
	struct pub_msg *m = pub_new(exchange, routing_key, type, body);

	*out = NULL;
	if (m == NULL)
		return -ENOMEM;
	m->later = later;
	pthread_mutex_lock(&p->mu);
	if (pub_enqueue(p, m) < 0) {
		pthread_mutex_unlock(&p->mu);
		pub_free(m);
		return -EBUSY;
	}
	pthread_mutex_unlock(&p->mu);
	*out = (struct api_pub_msg *)m;
	return 0;
}

int api_publish_result(struct api_publisher *p, struct api_pub_msg *msg)
{
	int rc;

	pthread_mutex_lock(&p->mu);
	rc = pub_settle(p, (struct pub_msg *)msg);
	pthread_mutex_unlock(&p->mu);
	return rc;
}
