/* worker_loop: a job's path through the worker, all in one thread.
 *
 *   delivery -> parse (poison: nack, dead-lettered) -> fence in Postgres
 *   (dial only) -> carrier request (curl multi) -> result published on the
 *   publishing connection -> confirmed -> job acked on the consuming one.
 *
 * Two AMQP connections: waiting for publisher confirms reads frames, and on
 * the consuming connection those frames would include deliveries that the
 * confirm wait would drop. A job is never acked before its result is
 * confirmed, and never held longer than its carrier request (seconds). */
#include "worker.h"

#include <errno.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#include "dl_amqp.h"
#include "dl_db.h"
#include "dl_log.h"
#include "dl_metrics.h"

#define CHANNEL 1
/* Longest the loop sleeps when nothing is due. */
#define WK_TICK_MS 200
/* A fence the database does not answer within this is abandoned (never dialed). */
#define WK_FENCE_TIMEOUT_MS 5000
/* A job waiting this long for an unreachable database goes back to the queue. */
#define WK_FENCE_HOLD_MS 30000
/* Attempts fenced in one round trip, at most. */
#define WK_FENCE_BATCH 100
/* Longest wait for publisher confirms of one batch. */
#define WK_CONFIRM_TIMEOUT_MS 5000
/* While the carrier refuses our credentials, probe it this often. */
#define WK_PROBE_MS 10000
/* Drain: what is still unsettled this long after the request timeout is given up. */
#define WK_DRAIN_EXTRA_MS 5000

#define M_CONSUMED "dialer_worker_jobs_consumed_total"
#define M_REPLAYED "dialer_worker_jobs_replayed_total"
#define M_RESULTS "dialer_worker_dial_results_total"
#define M_LATENCY "dialer_worker_dial_latency_seconds"
#define M_IN_FLIGHT "dialer_worker_in_flight"
#define M_429 "dialer_worker_carrier_429_total"
#define M_DEAD "dialer_worker_jobs_dead_lettered_total"
#define M_CARRIER_OK "dialer_worker_carrier_authorized"
#define M_AMQP_UP "dialer_worker_amqp_connected"

enum wk_state {
	WK_FENCE, /* dial waiting for its fence */
	WK_FENCING, /* dial whose fence is in the database now */
	WK_READY, /* to be sent now (hangup, reconcile, a fenced dial) */
	WK_RETRY, /* waiting to resend after a 429 or an unreachable carrier */
	WK_HTTP,  /* request in flight */
	WK_DONE,  /* settled: result (if any) to publish and confirm, then ack/nack */
};

enum wk_settle { WK_ACK, WK_REQUEUE, WK_DROP };

struct wk_task {
	struct wk_task *next;
	struct worker_held job;  /* owned */
	uint64_t tag;            /* delivery tag on the consuming connection... */
	unsigned gen;            /* ...of this generation */
	enum wk_state state;
	int64_t received_ms;     /* monotonic */
	int64_t retry_at_ms;     /* monotonic, WK_RETRY */
	int64_t dial_started_ms; /* monotonic, first create sent; 0 before */
	int retries;
	bool fetched;            /* hangup: the call was asked for, and is still live */
	struct worker_http http;
	enum wk_settle settle;
	char *result;            /* JSON to publish before the ack, or NULL; owned */
	const char *result_type;
	char result_id[DL_ID_MAX];
	bool published;          /* on the publishing connection, awaiting confirm */
};

struct worker {
	const struct dl_config *cfg;
	char id[160];                /* hostname:pid, written by the fence */
	struct dl_amqp in, out;      /* consuming, publishing */
	unsigned in_gen;             /* bumped on every consuming connection */
	bool consuming;
	char ctag[200];
	int64_t in_retry_at, out_retry_at, publish_at, out_polled_at;
	int in_backoff, out_backoff;
	PGconn *db;
	int64_t db_retry_at;
	int db_backoff;
	/* The fence in the database (the loop goes on meanwhile): its dials,
	 * WK_FENCING, and when it is given up. */
	struct wk_task *fencing[WK_FENCE_BATCH];
	int nfencing;
	int64_t fence_deadline;
	struct worker_carrier carrier;
	struct wk_task *tasks;       /* in arrival order */
	int ntasks;
	bool draining;
	int64_t drain_deadline;
	bool unauthorized;
	int64_t probe_at;
	struct worker_http probe;
	bool probing;
	atomic_bool amqp_up;
	atomic_bool carrier_ok;
};

/* A random 32-bit value for jitter (weak fallback when the kernel says no). */
static uint32_t wk_rand(void)
{
	uint32_t v;

	if (dl_random_bytes(&v, sizeof(v)) < 0)
		v = (uint32_t)dl_mono_ms() * 2654435761u;
	return v;
}

/* s, or NULL when empty (dl_log_kv then leaves the field out). */
static const char *wk_opt(const char *s)
{
	return s[0] ? s : NULL;
}

/* Readiness inputs: the atomics /readyz reads, and their gauges (set on
 * change only, as the loop calls these every turn). */
static void wk_carrier_ok(struct worker *w, bool ok)
{
	if (atomic_exchange(&w->carrier_ok, ok) != ok)
		dl_metrics_set(M_CARRIER_OK, NULL, ok ? 1 : 0);
}

static void wk_amqp_up(struct worker *w, bool up)
{
	if (atomic_exchange(&w->amqp_up, up) != up)
		dl_metrics_set(M_AMQP_UP, NULL, up ? 1 : 0);
}

static void wk_metric_result(const char *outcome)
{
	char labels[64];

	snprintf(labels, sizeof(labels), "outcome=\"%s\"", outcome);
	dl_metrics_add(M_RESULTS, labels, 1);
}

/* Fault tests only (worker.crash_at): dies at the named step of a dial
 * exactly as a SIGKILL would, leaving the job unacked and nothing flushed. */
static const char *wk_crash_at = "";

static void wk_crash_point(const char *step)
{
	if (!strcmp(wk_crash_at, step)) {
		dl_log_kv(DL_WARN, "worker.crash_at: dying here", "step", step, NULL);
		_exit(137);
	}
}

int worker_new(const struct dl_config *cfg, struct worker **out)
{
	struct worker *w = calloc(1, sizeof(*w));
	char host[128] = "";

	if (w == NULL)
		return -ENOMEM;
	w->cfg = cfg;
	wk_crash_at = cfg->worker_crash_at;
	if (gethostname(host, sizeof(host) - 1) < 0 || !host[0])
		snprintf(host, sizeof(host), "unknown");
	snprintf(w->id, sizeof(w->id), "%s:%d", host, (int)getpid());
	dl_amqp_init(&w->in, cfg);
	dl_amqp_init(&w->out, cfg);
	w->in_backoff = w->out_backoff = 100;
	w->db_backoff = 100;
	if (worker_carrier_init(&w->carrier, cfg) < 0) {
		free(w);
		return -ENOMEM;
	}
	dl_metrics_register(M_CONSUMED, "counter", "Jobs taken from the queue, by type.");
	dl_metrics_register(M_REPLAYED, "counter", "Jobs taken that dialerctl dlq replayed from the dead-letter queue.");
	dl_metrics_register(M_RESULTS, "counter", "Dial jobs settled, by outcome.");
	dl_metrics_register(M_LATENCY, "histogram",
			    "Seconds from the first create sent to the carrier's final answer (429 resends included).");
	dl_metrics_register(M_IN_FLIGHT, "gauge", "Jobs taken and not yet acked.");
	dl_metrics_register(M_429, "counter", "Creates the carrier answered 429.");
	dl_metrics_register(M_DEAD, "counter",
			    "Jobs nacked without requeue, so dead-lettered, by reason (invalid: unparsable; fence: "
			    "an unexpected fence verdict).");
	dl_metrics_register(M_CARRIER_OK, "gauge", "1 while the carrier accepts our credentials (0 after a 401).");
	dl_metrics_register(M_AMQP_UP, "gauge", "1 while both RabbitMQ connections are open.");
	dl_metrics_set(M_IN_FLIGHT, NULL, 0);
	dl_metrics_add(M_429, NULL, 0);
	dl_metrics_add(M_DEAD, "reason=\"invalid\"", 0);
	dl_metrics_add(M_DEAD, "reason=\"fence\"", 0);
	dl_metrics_set(M_AMQP_UP, NULL, 0);
	wk_carrier_ok(w, true);
	*out = w;
	return 0;
}

/* Frees a task that is off the list, aborting its request. */
static void wk_task_free(struct worker *w, struct wk_task *t)
{
	worker_http_reset(&w->carrier, &t->http);
	worker_held_clear(&t->job);
	free(t->result);
	free(t);
}

void worker_free(struct worker *w)
{
	if (w == NULL)
		return;
	while (w->tasks != NULL) {
		struct wk_task *t = w->tasks;

		w->tasks = t->next;
		wk_task_free(w, t);
	}
	worker_http_reset(&w->carrier, &w->probe);
	worker_carrier_fini(&w->carrier);
	dl_amqp_close(&w->in);
	dl_amqp_close(&w->out);
	PQfinish(w->db);
	free(w);
}

bool worker_ready(struct worker *w, char *why, size_t whylen)
{
	if (!atomic_load(&w->amqp_up)) {
		snprintf(why, whylen, "amqp not connected");
		return false;
	}
	if (!atomic_load(&w->carrier_ok)) {
		snprintf(why, whylen, "carrier refuses our credentials (401)");
		return false;
	}
	return true;
}

/* Marks the consuming connection lost: its deliveries go back to the queue
 * on the broker's side, so their tags are void from now on. */
static void wk_in_lost(struct worker *w)
{
	w->in.open = false;
	dl_amqp_close(&w->in);
	w->consuming = false;
}

/* Connects mq unless it is up or its next try is not due; 0 when up. */
static int wk_link(struct dl_amqp *mq, int64_t *retry_at, int *backoff)
{
	int64_t now = dl_mono_ms();

	if (mq->open)
		return 0;
	if (now < *retry_at)
		return -EAGAIN;
	if (dl_amqp_connect(mq) == 0) {
		*backoff = 100;
		return 0;
	}
	*retry_at = now + *backoff / 2 + (int64_t)(wk_rand() % (uint32_t)(*backoff / 2 + 1));
	if (*backoff < 5000)
		*backoff *= 2;
	return -EIO;
}

/* Starts consuming the jobs queue with our own consumer tag (so it can be
 * cancelled) and prefetch = max_in_flight. 0 or -EIO (connection dropped). */
static int wk_consume(struct worker *w)
{
	int prefetch = w->cfg->worker_max_in_flight > 65535 ? 65535 : w->cfg->worker_max_in_flight;
	amqp_connection_state_t conn = w->in.conn;

	snprintf(w->ctag, sizeof(w->ctag), "dialer-worker:%s:%u", w->id, w->in_gen);
	amqp_basic_qos(conn, CHANNEL, 0, (uint16_t)prefetch, 0);
	if (amqp_get_rpc_reply(conn).reply_type != AMQP_RESPONSE_NORMAL)
		goto fail;
	amqp_basic_consume(conn, CHANNEL, amqp_cstring_bytes(w->cfg->amqp_jobs_queue), amqp_cstring_bytes(w->ctag),
			   0, 0, 0, amqp_empty_table);
	if (amqp_get_rpc_reply(conn).reply_type != AMQP_RESPONSE_NORMAL)
		goto fail;
	w->consuming = true;
	dl_log_kv(DL_INFO, "consuming jobs", "queue", w->cfg->amqp_jobs_queue, "worker", w->id, NULL);
	return 0;
fail:
	dl_log_kv(DL_WARN, "could not start consuming jobs", "queue", w->cfg->amqp_jobs_queue, NULL);
	wk_in_lost(w);
	return -EIO;
}

/* Stops new deliveries. Deliveries already on their way are queued by the
 * library during the RPC and answered later (requeued). */
static void wk_cancel(struct worker *w)
{
	if (!w->consuming || !w->in.open)
		return;
	amqp_basic_cancel(w->in.conn, CHANNEL, amqp_cstring_bytes(w->ctag));
	if (amqp_get_rpc_reply(w->in.conn).reply_type != AMQP_RESPONSE_NORMAL) {
		dl_log_kv(DL_WARN, "could not cancel the consumer; closing its connection", NULL);
		wk_in_lost(w);
		return;
	}
	w->consuming = false;
	dl_log_kv(DL_INFO, "stopped consuming jobs", NULL);
}

/* Acks or nacks t's delivery, when its connection is still the one it came
 * on (otherwise the broker has already put it back). */
static void wk_settle(struct worker *w, struct wk_task *t)
{
	int r = 0;

	if (t->gen != w->in_gen || !w->in.open)
		return;
	if (t->settle == WK_ACK)
		r = dl_amqp_ack(&w->in, t->tag);
	else
		r = dl_amqp_nack(&w->in, t->tag, t->settle == WK_REQUEUE);
	if (r < 0)
		wk_in_lost(w);
	else if (t->settle == WK_DROP)
		dl_metrics_add(M_DEAD, "reason=\"fence\"", 1);
}

/* Sets t's result: body (stolen) gets type, messageId and attemptId. The task
 * is then done and acked once the result is confirmed. */
static void wk_result(struct wk_task *t, const char *type, json_t *body)
{
	dl_id_new("msg", t->result_id);
	t->result_type = type;
	t->state = WK_DONE;
	t->settle = WK_ACK;
	free(t->result);
	t->result = NULL;
	if (body != NULL && json_object_set_new(body, "type", json_string(type)) == 0 &&
	    json_object_set_new(body, "messageId", json_string(t->result_id)) == 0 &&
	    json_object_set_new(body, "attemptId", json_string(t->job.attempt_id)) == 0)
		t->result = json_dumps(body, JSON_COMPACT);
	json_decref(body);
	if (t->result == NULL) {
		/* Out of memory: the redelivery is refused by the fence and the
		 * scheduler reconciles the attempt. */
		dl_log_kv(DL_ERROR, "could not build a result; requeueing the job", "attemptId", t->job.attempt_id,
			  NULL);
		t->settle = WK_REQUEUE;
	}
}

/* Finishes t without a result: ack (or nack) only. */
static void wk_finish(struct wk_task *t, enum wk_settle settle)
{
	free(t->result);
	t->result = NULL;
	t->state = WK_DONE;
	t->settle = settle;
}

/* A dial's failed result, with its class and detail. */
static void wk_dial_failed(struct wk_task *t, const char *cls, const char *detail)
{
	wk_metric_result(cls);
	dl_log_kv(DL_INFO, "dial failed", "attemptId", t->job.attempt_id, "campaignId", wk_opt(t->job.campaign_id),
		  "class", cls, "detail", detail, NULL);
	wk_result(t, "dial.result", json_pack("{s:s, s:s, s:s}", "outcome", "failed", "class", cls, "detail", detail));
}

/* The carrier refused our credentials: stop taking jobs until a probe passes. */
static void wk_unauthorized(struct worker *w)
{
	if (w->unauthorized)
		return;
	w->unauthorized = true;
	wk_carrier_ok(w, false);
	w->probe_at = dl_mono_ms() + WK_PROBE_MS;
	dl_log_kv(DL_ERROR, "carrier refuses our credentials (401); not taking jobs until it accepts them",
		  "worker", w->id, NULL);
	wk_cancel(w);
	/* Unfenced jobs go back to the queue for a worker that can dial. */
	for (struct wk_task *t = w->tasks; t; t = t->next)
		if (t->state == WK_FENCE || (t->state == WK_READY && t->job.type != WORKER_JOB_DIAL))
			wk_finish(t, WK_REQUEUE);
}

/* Takes one delivery: poison is dead-lettered, the rest becomes a task. */
static void wk_take_one(struct worker *w, struct dl_amqp_msg *msg)
{
	amqp_envelope_t *env = &msg->env;
	struct worker_job job;
	struct wk_task *t, **pp;
	char err[256], labels[64], mid[WK_ID_LEN] = "";

	if (env->message.properties._flags & AMQP_BASIC_MESSAGE_ID_FLAG)
		snprintf(mid, sizeof(mid), "%.*s", (int)env->message.properties.message_id.len,
			 (const char *)env->message.properties.message_id.bytes);
	if (worker_job_parse(env->message.body.bytes, env->message.body.len, &job, err, sizeof(err)) < 0) {
		dl_metrics_add(M_CONSUMED, "type=\"invalid\"", 1);
		dl_log_kv(DL_WARN, "poison job dead-lettered", "messageId", wk_opt(mid), "error", err, NULL);
		if (dl_amqp_nack(&w->in, env->delivery_tag, false) < 0)
			wk_in_lost(w);
		else
			dl_metrics_add(M_DEAD, "reason=\"invalid\"", 1);
		return;
	}
	snprintf(labels, sizeof(labels), "type=\"%s\"", worker_job_type_name(job.type));
	dl_metrics_add(M_CONSUMED, labels, 1);
	if (job.replayed)
		dl_metrics_add(M_REPLAYED, "", 1);
	if (job.type == WORKER_JOB_DIAL)
		wk_crash_point("after-take");
	if (w->draining || w->unauthorized) {
		/* Prefetched but not started: another worker (or our restart) takes it. */
		if (dl_amqp_nack(&w->in, env->delivery_tag, true) < 0)
			wk_in_lost(w);
		return;
	}
	t = calloc(1, sizeof(*t));
	if (t == NULL || worker_held_init(&t->job, &job, w->cfg->carrier_from) < 0) {
		/* Out of memory before the fence: another try, here or elsewhere, is safe. */
		free(t);
		if (dl_amqp_nack(&w->in, env->delivery_tag, true) < 0)
			wk_in_lost(w);
		return;
	}
	if (!t->job.message_id[0])
		snprintf(t->job.message_id, sizeof(t->job.message_id), "%s", mid);
	t->tag = env->delivery_tag;
	t->gen = w->in_gen;
	t->received_ms = dl_mono_ms();
	t->state = job.type == WORKER_JOB_DIAL ? WK_FENCE : WK_READY;
	t->http.owner = t;
	for (pp = &w->tasks; *pp; pp = &(*pp)->next)
		;
	*pp = t;
	w->ntasks++;
	dl_log_kv(DL_DEBUG, "job taken", "type", worker_job_type_name(job.type), "attemptId", job.attempt_id,
		  "messageId", wk_opt(t->job.message_id), NULL);
}

/* Takes every delivery already here, without waiting. */
static void wk_take(struct worker *w)
{
	for (int i = 0; i < 1024 && w->in.open; i++) {
		struct dl_amqp_msg msg = {0};
		int r = dl_amqp_next(&w->in, &msg, 0);

		if (r < 0) {
			wk_in_lost(w);
			break;
		}
		if (r == 0) {
			/* A non-delivery frame was handled; more may be buffered. */
			if (amqp_data_in_buffer(w->in.conn) || amqp_frames_enqueued(w->in.conn))
				continue;
			break;
		}
		wk_take_one(w, &msg);
		dl_amqp_msg_done(&w->in, &msg);
	}
}

/* Opens the fence connection unless it is up or its next try is not due. */
static int wk_db(struct worker *w)
{
	const char *url = w->cfg->worker_db_url[0] ? w->cfg->worker_db_url : w->cfg->db_url;
	int64_t now = dl_mono_ms();

	if (w->db != NULL && PQstatus(w->db) == CONNECTION_OK)
		return 0;
	PQfinish(w->db);
	w->db = NULL;
	if (now < w->db_retry_at)
		return -EAGAIN;
	if (dl_db_connect(url, w->cfg->db_connect_timeout_s, &w->db) == 0) {
		w->db_backoff = 100;
		return 0;
	}
	w->db_retry_at = now + w->db_backoff / 2 + (int64_t)(wk_rand() % (uint32_t)(w->db_backoff / 2 + 1));
	if (w->db_backoff < 5000)
		w->db_backoff *= 2;
	return -EIO;
}

/* A fence without verdicts: its dials wait for the next one, after a
 * backoff. One that got no answer (lost) drops the connection, its query
 * with it; it may still commit: the attempts are then DIALING without a
 * call, which the scheduler reconciles; the next fence calls them
 * duplicates, and we never dial them. One answered with an error leaves the
 * connection usable. */
static void wk_fence_failed(struct worker *w, const char *why, bool lost)
{
	char line[256];

	snprintf(line, sizeof(line), "%s", why);
	line[strcspn(line, "\n")] = '\0';
	dl_log_kv(DL_WARN, "fence failed", "error", line, NULL);
	if (lost) {
		PQfinish(w->db);
		w->db = NULL;
	}
	w->db_retry_at = dl_mono_ms() + w->db_backoff;
	if (w->db_backoff < 5000)
		w->db_backoff *= 2;
	for (int i = 0; i < w->nfencing; i++)
		w->fencing[i]->state = WK_FENCE;
	w->nfencing = 0;
}

/* Sends the fence of the n dials of batch (attempt ids of [A-Za-z0-9_-],
 * each once) and returns at once: its answer is read by wk_fence_read. The
 * answer is rows of (attempt, verdict: 'dial', 'duplicate', 'expired',
 * 'paused', 'cancelled'). False when it could not be sent (then none is
 * dialed). */
static bool wk_fence_send(struct worker *w, struct wk_task *const *batch, int n)
{
	const char *params[2];
	char *ids, *p;

	if (wk_db(w) < 0)
		return false;
	/* {"a","b",...}: the ids need no escaping. */
	ids = malloc((size_t)n * (WK_ID_LEN + 3) + 3);
	if (ids == NULL)
		return false;
	p = ids;
	*p++ = '{';
	for (int i = 0; i < n; i++)
		p += sprintf(p, "%s\"%s\"", i ? "," : "", batch[i]->job.attempt_id);
	*p++ = '}';
	*p = '\0';
	params[0] = ids;
	params[1] = w->id;
	if (!PQsendQueryParams(w->db, "SELECT attempt_id, verdict FROM dialer_fence_attempts($1::text[], $2)", 2,
			       NULL, params, NULL, NULL, 0)) {
		free(ids);
		wk_fence_failed(w, PQerrorMessage(w->db), true);
		return false;
	}
	free(ids);
	for (int i = 0; i < n; i++) {
		batch[i]->state = WK_FENCING;
		w->fencing[i] = batch[i];
	}
	w->nfencing = n;
	w->fence_deadline = dl_mono_ms() + WK_FENCE_TIMEOUT_MS;
	return true;
}

/* Acts on the fence's verdict for t. */
static void wk_verdict(struct wk_task *t, const char *verdict)
{
	if (!strcmp(verdict, "dial")) {
		wk_crash_point("after-fence");
		t->state = WK_READY;
	} else if (!strcmp(verdict, "duplicate")) {
		/* Dialed (or finished) already, by us or another worker: nothing to say. */
		wk_metric_result("duplicate");
		dl_log_kv(DL_INFO, "dial skipped: already fenced", "attemptId", t->job.attempt_id, NULL);
		wk_finish(t, WK_ACK);
	} else if (!strcmp(verdict, "expired")) {
		/* Held back past its dial deadline (broker down, no worker): the
		 * fence released the call, which the scheduler dials again at a
		 * new paced slot. Dialing it now would break the pace. */
		wk_metric_result("expired");
		dl_log_kv(DL_INFO, "dial skipped: past its dial deadline", "attemptId", t->job.attempt_id,
			  "campaignId", wk_opt(t->job.campaign_id), NULL);
		wk_result(t, "dial.result", json_pack("{s:s, s:s}", "outcome", "skipped", "reason", verdict));
	} else if (!strcmp(verdict, "paused") || !strcmp(verdict, "cancelled")) {
		/* The fence has released the call already; the scheduler may ignore this. */
		wk_metric_result(verdict);
		dl_log_kv(DL_INFO, "dial skipped: campaign not running", "attemptId", t->job.attempt_id, "campaignId",
			  wk_opt(t->job.campaign_id), "reason", verdict, NULL);
		wk_result(t, "dial.result", json_pack("{s:s, s:s}", "outcome", "skipped", "reason", verdict));
	} else {
		dl_log_kv(DL_ERROR, "fence gave an unknown verdict; job dead-lettered", "attemptId", t->job.attempt_id,
			  "verdict", verdict, NULL);
		wk_finish(t, WK_DROP);
	}
}

/* Reads what has come of the fence in the database, without waiting:
 * acts on its verdicts once it is all in. False while it is still out
 * (or it was just lost). */
static bool wk_fence_read(struct worker *w)
{
	PGresult *res, *extra;
	char why[256];

	if (!PQconsumeInput(w->db)) {
		wk_fence_failed(w, PQerrorMessage(w->db), true);
		return false;
	}
	if (PQisBusy(w->db)) {
		if (dl_mono_ms() >= w->fence_deadline) {
			snprintf(why, sizeof(why), "no answer within %d ms", WK_FENCE_TIMEOUT_MS);
			wk_fence_failed(w, why, true);
		}
		return false;
	}
	res = PQgetResult(w->db);
	if (PQresultStatus(res) != PGRES_TUPLES_OK || PQnfields(res) != 2) {
		snprintf(why, sizeof(why), "%s", res ? PQresultErrorMessage(res) : PQerrorMessage(w->db));
		PQclear(res);
		/* Read off what remains so the connection is reusable. */
		while ((extra = PQgetResult(w->db)) != NULL)
			PQclear(extra);
		wk_fence_failed(w, why, false);
		return false;
	}
	while ((extra = PQgetResult(w->db)) != NULL)
		PQclear(extra);
	w->db_backoff = 100;
	for (int i = 0; i < w->nfencing; i++) {
		struct wk_task *t = w->fencing[i];
		const char *verdict = NULL;

		for (int k = 0; k < PQntuples(res) && verdict == NULL; k++)
			if (!strcmp(PQgetvalue(res, k, 0), t->job.attempt_id) && !PQgetisnull(res, k, 1))
				verdict = PQgetvalue(res, k, 1);
		/* Not in the answer: refused, as an unknown verdict is. */
		wk_verdict(t, verdict != NULL ? verdict : "");
	}
	PQclear(res);
	w->nfencing = 0;
	return true;
}

/* Fences the waiting dials, WK_FENCE_BATCH at a time in arrival order, one
 * fence in the database at a time: the loop sends it and goes on with its
 * other work (requests, results), and acts on the verdicts when they come.
 * A second job of an attempt already in a fence waits for the next one
 * (where it is a duplicate). A dial that waited too long for an
 * unreachable database goes back to the queue. */
static void wk_fences(struct worker *w)
{
	struct wk_task *batch[WK_FENCE_BATCH];
	int64_t now = dl_mono_ms();
	int n = 0;

	if (w->nfencing > 0 && !wk_fence_read(w) && w->nfencing > 0)
		return; /* still out */
	for (struct wk_task *t = w->tasks; t != NULL && n < WK_FENCE_BATCH; t = t->next) {
		bool again = false;

		if (t->state != WK_FENCE)
			continue;
		for (int i = 0; i < n && !again; i++)
			again = !strcmp(batch[i]->job.attempt_id, t->job.attempt_id);
		if (!again)
			batch[n++] = t;
	}
	if (n == 0 || (now >= w->db_retry_at && wk_fence_send(w, batch, n)))
		return;
	for (struct wk_task *t = w->tasks; t != NULL; t = t->next)
		if (t->state == WK_FENCE && now - t->received_ms >= WK_FENCE_HOLD_MS) {
			dl_log_kv(DL_WARN, "database unreachable; job requeued", "attemptId", t->job.attempt_id, NULL);
			wk_finish(t, WK_REQUEUE);
		}
}

/* Sends t's request (a create, hang-up or list). */
static void wk_send(struct worker *w, struct wk_task *t)
{
	static const enum worker_req kinds[] = {
		[WORKER_JOB_DIAL] = WORKER_REQ_CREATE,
		[WORKER_JOB_HANGUP] = WORKER_REQ_HANGUP,
		[WORKER_JOB_RECONCILE] = WORKER_REQ_LIST,
	};

	enum worker_req kind = kinds[t->job.type];

	/* A hang-up first asks whether the call is still live. */
	if (t->job.type == WORKER_JOB_HANGUP && !t->fetched)
		kind = WORKER_REQ_FETCH;
	if (worker_carrier_start(&w->carrier, &t->http, kind, &t->job) < 0) {
		/* Nothing left the process: a fenced dial fails cleanly, the rest is retried. */
		dl_log_kv(DL_ERROR, "could not start a carrier request", "attemptId", t->job.attempt_id, NULL);
		if (t->job.type == WORKER_JOB_DIAL)
			wk_dial_failed(t, "rejected", "worker could not build the request");
		else
			wk_finish(t, WK_REQUEUE);
		return;
	}
	if (t->job.type == WORKER_JOB_DIAL && t->dial_started_ms == 0)
		t->dial_started_ms = t->http.started_ms;
	t->state = WK_HTTP;
}

/* Sends what is ready and what is due for a resend. */
static void wk_sends(struct worker *w)
{
	int64_t now = dl_mono_ms();

	for (struct wk_task *t = w->tasks; t; t = t->next)
		if (t->state == WK_READY || (t->state == WK_RETRY && now >= t->retry_at_ms))
			wk_send(w, t);
}

/* Schedules a resend of t after a refusal that created nothing; false when
 * the budget is spent or the worker is stopping. */
static bool wk_retry(struct worker *w, struct wk_task *t)
{
	int delay;

	if (w->draining || t->retries >= w->cfg->worker_max_429_retries)
		return false;
	delay = worker_backoff_ms(t->retries, wk_rand());
	if (t->http.retry_after_s > 0 && t->http.retry_after_s * 1000 > delay)
		delay = t->http.retry_after_s > 30 ? 30000 : (int)t->http.retry_after_s * 1000;
	t->retries++;
	t->retry_at_ms = dl_mono_ms() + delay;
	t->state = WK_RETRY;
	return true;
}

/* Reads a create's answer into t's result. */
static void wk_dial_answer(struct worker *w, struct wk_task *t)
{
	struct worker_http *h = &t->http;
	char detail[256], sid[WK_SID_LEN];
	enum worker_class cls;

	if (h->rc != CURLE_OK && !h->sent) {
		/* Never reached the carrier: as safe to resend as a 429. */
		if (wk_retry(w, t))
			return;
		snprintf(detail, sizeof(detail), "carrier unreachable: %.200s", h->error);
		dl_utf8_trim(detail);
		wk_dial_failed(t, "rejected", detail);
		goto out;
	}
	cls = worker_classify(h->rc == CURLE_OK ? h->status : 0, h->body);
	switch (cls) {
	case WORKER_ACCEPTED:
		wk_crash_point("after-create");
		DL_IGNORE(worker_answer_sid(h->body, sid, sizeof(sid)));
		wk_metric_result("accepted");
		dl_log_kv(DL_INFO, "dial accepted", "attemptId", t->job.attempt_id, "campaignId",
			  wk_opt(t->job.campaign_id), "callSid", sid, NULL);
		wk_result(t, "dial.result", json_pack("{s:s, s:s}", "outcome", "accepted", "callSid", sid));
		break;
	case WORKER_RATE_LIMITED:
		/* The fence is ours and a 429 created nothing: resending is safe. */
		dl_metrics_add(M_429, NULL, 1);
		if (wk_retry(w, t))
			return;
		snprintf(detail, sizeof(detail), "carrier 429 after %d resends%s", t->retries,
			 w->draining ? " (worker stopping)" : "");
		wk_dial_failed(t, "rejected", detail);
		break;
	case WORKER_UNAUTHORIZED:
		/* No call was created, and a redelivery would be refused by the
		 * fence: report it now as a refusal. */
		wk_dial_failed(t, "rejected", "carrier 401");
		wk_unauthorized(w);
		break;
	case WORKER_INVALID_NUMBER:
		worker_answer_detail(h->status, h->body, detail, sizeof(detail));
		wk_dial_failed(t, "invalid-number", detail);
		break;
	case WORKER_REJECTED:
		worker_answer_detail(h->status, h->body, detail, sizeof(detail));
		wk_dial_failed(t, "rejected", detail);
		break;
	case WORKER_AMBIGUOUS:
		if (h->rc != CURLE_OK)
			snprintf(detail, sizeof(detail), "no answer from the carrier: %.200s", h->error);
		else
			worker_answer_detail(h->status, h->body, detail, sizeof(detail));
		wk_dial_failed(t, "ambiguous", detail);
		break;
	}
out:
	dl_metrics_observe(M_LATENCY, NULL, (double)(dl_mono_ms() - t->dial_started_ms) / 1000.0);
}

/* The call's state as a result carries it: callStatus, duration, answeredBy. */
static json_t *wk_call_state(json_t *body, const struct worker_found *f)
{
	if (body == NULL)
		return NULL;
	if (json_object_set_new(body, "callStatus", json_string(f->status)) < 0 ||
	    json_object_set_new(body, "duration", f->duration >= 0 ? json_integer(f->duration) : json_null()) < 0 ||
	    json_object_set_new(body, "answeredBy", f->answered_by[0] ? json_string(f->answered_by) : json_null()) < 0) {
		json_decref(body);
		return NULL;
	}
	return body;
}

/* A hang-up's result for a call that had ended before we hung it up: the
 * scheduler records its real outcome, not a timeout. */
static void wk_hangup_ended(struct wk_task *t, const struct worker_found *f, const char *how)
{
	dl_log_kv(DL_INFO, "hangup not needed: the call had ended", "attemptId", t->job.attempt_id, "callSid",
		  t->job.call_sid, "callStatus", f->status, "seen", how, NULL);
	wk_result(t, "hangup.result",
		  wk_call_state(json_pack("{s:s, s:b, s:b, s:b}", "callSid", t->job.call_sid, "ok", 1, "ended", 1,
					  "hungUp", 0),
				f));
}

/* Reads the answer to a hang-up's first question: is the call still live? */
static void wk_fetch_answer(struct worker *w, struct wk_task *t)
{
	struct worker_http *h = &t->http;
	struct worker_found f;

	if (h->rc == CURLE_OK && h->status == 401) {
		wk_unauthorized(w);
		wk_finish(t, WK_REQUEUE);
		return;
	}
	if (h->rc == CURLE_OK && h->status == 200 && worker_call_parse(h->body, &f) == 0 &&
	    !strcmp(f.sid, t->job.call_sid) && worker_status_ended(f.status)) {
		wk_hangup_ended(t, &f, "fetch");
		return;
	}
	if (((h->rc == CURLE_OK && (h->status == 429 || h->status >= 500)) || h->rc != CURLE_OK) && wk_retry(w, t))
		return;
	/* Live (or the carrier would not say): hang it up. */
	t->fetched = true;
	t->retries = 0;
	t->state = WK_READY;
}

/* Reads a hang-up's answer into t's result. */
static void wk_hangup_answer(struct worker *w, struct wk_task *t)
{
	struct worker_http *h = &t->http;
	struct worker_found f;
	char detail[256];
	bool ok = h->rc == CURLE_OK && h->status >= 200 && h->status < 300;

	if (h->rc == CURLE_OK && h->status == 401) {
		wk_unauthorized(w);
		wk_finish(t, WK_REQUEUE);
		return;
	}
	if (((h->rc == CURLE_OK && (h->status == 429 || h->status >= 500)) || h->rc != CURLE_OK) && wk_retry(w, t))
		return;
	if (h->rc != CURLE_OK)
		snprintf(detail, sizeof(detail), "no answer from the carrier: %.200s", h->error);
	else
		worker_answer_detail(h->status, h->body, detail, sizeof(detail));
	if (ok && worker_call_parse(h->body, &f) == 0 && worker_status_ended(f.status)) {
		/* A hang-up ends a call completed (answered) or canceled (ringing);
		 * any other end is the carrier's own, from before ours. */
		if (strcmp(f.status, "completed") && strcmp(f.status, "canceled")) {
			wk_hangup_ended(t, &f, "hangup");
			return;
		}
		dl_log_kv(DL_INFO, "hangup done", "attemptId", t->job.attempt_id, "callSid", t->job.call_sid, NULL);
		wk_result(t, "hangup.result",
			  wk_call_state(json_pack("{s:s, s:b, s:b, s:b}", "callSid", t->job.call_sid, "ok", 1, "ended",
						  0, "hungUp", 1),
					&f));
		return;
	}
	if (ok) {
		dl_log_kv(DL_INFO, "hangup done", "attemptId", t->job.attempt_id, "callSid", t->job.call_sid, NULL);
		wk_result(t, "hangup.result",
			  json_pack("{s:s, s:b, s:b, s:b}", "callSid", t->job.call_sid, "ok", 1, "ended", 0, "hungUp", 1));
		return;
	}
	dl_log_kv(DL_WARN, "hangup failed", "attemptId", t->job.attempt_id, "callSid", t->job.call_sid, "detail",
		  detail, NULL);
	wk_result(t, "hangup.result",
		  json_pack("{s:s, s:b, s:s}", "callSid", t->job.call_sid, "ok", 0, "detail", detail));
}

/* Reads a list's answer into t's result: the newest call to the number. */
static void wk_reconcile_answer(struct worker *w, struct wk_task *t)
{
	struct worker_http *h = &t->http;
	struct worker_found f;
	char detail[256];
	json_t *body;

	if (h->rc == CURLE_OK && h->status == 401) {
		wk_unauthorized(w);
		wk_finish(t, WK_REQUEUE);
		return;
	}
	if (h->rc != CURLE_OK || h->status != 200 || worker_reconcile_pick(h->body, &f) < 0) {
		/* "Not found" would let the scheduler redial: without a readable
		 * list there is no answer, only another try (here for what may
		 * pass, then from the queue until its delivery limit). */
		bool refused = h->rc == CURLE_OK && h->status >= 400 && h->status < 500 && h->status != 429;

		if (!refused && wk_retry(w, t))
			return;
		if (h->rc != CURLE_OK)
			snprintf(detail, sizeof(detail), "no answer from the carrier: %.200s", h->error);
		else
			worker_answer_detail(h->status, h->body, detail, sizeof(detail));
		dl_log_kv(DL_WARN, "reconcile failed; job requeued", "attemptId", t->job.attempt_id, "error", detail,
			  NULL);
		wk_finish(t, WK_REQUEUE);
		return;
	}
	dl_log_kv(DL_INFO, "reconciled", "attemptId", t->job.attempt_id, "found", f.found ? "true" : "false",
		  "callSid", f.found ? f.sid : NULL, "callStatus", f.found ? f.status : NULL, NULL);
	if (f.found)
		body = json_pack("{s:b, s:s, s:s, s:o, s:o}", "found", 1, "callSid", f.sid, "callStatus", f.status,
				 "duration", f.duration >= 0 ? json_integer(f.duration) : json_null(), "answeredBy",
				 f.answered_by[0] ? json_string(f.answered_by) : json_null());
	else
		body = json_pack("{s:b, s:n, s:n, s:n}", "found", 0, "callSid", "callStatus", "duration");
	wk_result(t, "reconcile.result", body);
}

/* The probe's answer: any 2xx means the carrier takes our credentials again. */
static void wk_probe_answer(struct worker *w)
{
	struct worker_http *h = &w->probe;

	w->probing = false;
	if (h->rc == CURLE_OK && h->status >= 200 && h->status < 300) {
		w->unauthorized = false;
		wk_carrier_ok(w, true);
		dl_log_kv(DL_INFO, "carrier accepts our credentials again; taking jobs", NULL);
	} else {
		w->probe_at = dl_mono_ms() + WK_PROBE_MS;
	}
	worker_http_reset(&w->carrier, h);
}

/* Reads every finished request. */
static void wk_answers(struct worker *w)
{
	struct worker_http *h;

	while ((h = worker_carrier_next_done(&w->carrier)) != NULL) {
		struct wk_task *t = h->owner;

		if (h == &w->probe) {
			wk_probe_answer(w);
			continue;
		}
		switch (t->job.type) {
		case WORKER_JOB_DIAL:
			wk_dial_answer(w, t);
			break;
		case WORKER_JOB_HANGUP:
			if (h->kind == WORKER_REQ_FETCH)
				wk_fetch_answer(w, t);
			else
				wk_hangup_answer(w, t);
			break;
		case WORKER_JOB_RECONCILE:
			wk_reconcile_answer(w, t);
			break;
		}
	}
}

/* Unlinks and frees every task whose delivery is settled. */
static void wk_reap(struct worker *w, bool (*gone)(const struct wk_task *t))
{
	struct wk_task **pp = &w->tasks;

	while (*pp != NULL) {
		struct wk_task *t = *pp;

		if (gone(t)) {
			*pp = t->next;
			w->ntasks--;
			wk_task_free(w, t);
		} else {
			pp = &t->next;
		}
	}
}

static bool wk_done_quiet(const struct wk_task *t)
{
	return t->state == WK_DONE && t->result == NULL;
}

static bool wk_done_confirmed(const struct wk_task *t)
{
	return t->state == WK_DONE && t->result != NULL && t->published;
}

/* Publishes the results of finished tasks, up to DL_JOB_RESULTS_MAX of
 * them as one job.results message, waits for their confirms, then acks
 * their jobs; tasks without a result are settled at once. A failed batch
 * is published again (the scheduler applies a result once however often
 * it comes). */
static void wk_flush(struct worker *w)
{
	bool any = false, fail = false;
	int64_t now = dl_mono_ms();

	for (struct wk_task *t = w->tasks; t; t = t->next) {
		if (wk_done_quiet(t))
			wk_settle(w, t);
		else if (t->state == WK_DONE)
			any = true;
	}
	wk_reap(w, wk_done_quiet);
	if (!any || now < w->publish_at || wk_link(&w->out, &w->out_retry_at, &w->out_backoff) < 0)
		return;
	for (struct wk_task *t = w->tasks; t && !fail;) {
		struct wk_task *batch[DL_JOB_RESULTS_MAX];
		const char *bodies[DL_JOB_RESULTS_MAX];
		size_t lens[DL_JOB_RESULTS_MAX];
		int n = 0;

		for (; t && n < DL_JOB_RESULTS_MAX; t = t->next) {
			if (t->state != WK_DONE || t->result == NULL || t->published)
				continue;
			batch[n] = t;
			bodies[n] = t->result;
			lens[n++] = strlen(t->result);
		}
		if (n == 0)
			break;
		if (dl_amqp_publish_batch(&w->out, w->cfg->amqp_jobs_exchange, "result", "job.results", "results",
					  bodies, lens, n, batch[0]->result_id, batch[0]->result_type) < 0) {
			fail = true;
			break;
		}
		for (int i = 0; i < n; i++)
			batch[i]->published = true;
	}
	if (!fail && dl_amqp_wait_confirms(&w->out, WK_CONFIRM_TIMEOUT_MS) < 0)
		fail = true;
	if (fail) {
		for (struct wk_task *t = w->tasks; t; t = t->next)
			t->published = false;
		w->publish_at = now + 500;
		dl_log_kv(DL_WARN, "results not confirmed; publishing them again", NULL);
		return;
	}
	w->out_polled_at = dl_mono_ms();
	wk_crash_point("before-ack");
	for (struct wk_task *t = w->tasks; t; t = t->next)
		if (wk_done_confirmed(t))
			wk_settle(w, t);
	wk_reap(w, wk_done_confirmed);
}

/* True for a task of an old consuming connection that nobody needs: its
 * job is back in the queue and it holds no fence (or its fence is not
 * taken yet), so it can go without a word. */
static bool wk_orphan(const struct worker *w, const struct wk_task *t)
{
	if (t->gen == w->in_gen)
		return false;
	if (t->state == WK_FENCE)
		return true;
	return t->job.type != WORKER_JOB_DIAL && (t->state == WK_READY || t->state == WK_RETRY);
}

/* Keeps both connections up (the consuming one only while taking jobs),
 * consumes when allowed, and services the idle publisher's heartbeats. */
static void wk_links(struct worker *w)
{
	struct timeval tv = {5, 0};

	if (!w->in.open && !w->draining && wk_link(&w->in, &w->in_retry_at, &w->in_backoff) == 0) {
		w->in_gen++;
		w->consuming = false;
		/* RPCs (qos, consume, cancel) never block the loop for long on a dead peer. */
		DL_IGNORE(amqp_set_rpc_timeout(w->in.conn, &tv));
		for (struct wk_task *t = w->tasks; t; t = t->next)
			if (wk_orphan(w, t))
				wk_finish(t, WK_ACK);
	}
	if (w->in.open && !w->consuming && !w->draining && !w->unauthorized)
		DL_IGNORE(wk_consume(w));
	if (!w->out.open && wk_link(&w->out, &w->out_retry_at, &w->out_backoff) == 0)
		DL_IGNORE(amqp_set_rpc_timeout(w->out.conn, &tv));
	if (w->out.open && dl_mono_ms() - w->out_polled_at >= 1000) {
		/* An idle publisher still owes the broker heartbeats. */
		w->out_polled_at = dl_mono_ms();
		DL_IGNORE(dl_amqp_poll(&w->out, 0));
	}
	wk_amqp_up(w, w->in.open && w->out.open);
}

/* Starts the credentials probe when due. */
static void wk_maybe_probe(struct worker *w)
{
	if (!w->unauthorized || w->probing || w->draining || dl_mono_ms() < w->probe_at)
		return;
	w->probe.owner = NULL;
	if (worker_carrier_start(&w->carrier, &w->probe, WORKER_REQ_PROBE, NULL) == 0)
		w->probing = true;
	else
		w->probe_at = dl_mono_ms() + WK_PROBE_MS;
}

/* Stop taking jobs; requeue the unstarted, give up the resends. */
static void wk_begin_drain(struct worker *w)
{
	char n[16];

	w->draining = true;
	w->drain_deadline = dl_mono_ms() + w->cfg->worker_request_timeout_ms + WK_DRAIN_EXTRA_MS;
	snprintf(n, sizeof(n), "%d", w->ntasks);
	dl_log_kv(DL_INFO, "draining", "in_flight", n, NULL);
	wk_cancel(w);
	if (w->probing) {
		worker_http_reset(&w->carrier, &w->probe);
		w->probing = false;
	}
	for (struct wk_task *t = w->tasks; t; t = t->next) {
		if (t->state == WK_FENCE || (t->job.type != WORKER_JOB_DIAL &&
					     (t->state == WK_READY || t->state == WK_RETRY))) {
			wk_finish(t, WK_REQUEUE);
		} else if (t->state == WK_RETRY) {
			/* Fenced: a requeue would be refused, so report the refusal now. */
			char detail[96];

			snprintf(detail, sizeof(detail), "carrier 429 after %d resends (worker stopping)", t->retries);
			wk_dial_failed(t, "rejected", detail);
		}
	}
}

/* How long the loop may sleep: until the next due thing, at most a tick. */
static int wk_wait_ms(struct worker *w)
{
	int64_t now = dl_mono_ms(), wait = WK_TICK_MS;
	/* Results can go out once the publisher is up (or due to reconnect). */
	int64_t publish_due = w->publish_at;

	if (!w->out.open && w->out_retry_at > publish_due)
		publish_due = w->out_retry_at;
	for (struct wk_task *t = w->tasks; t; t = t->next) {
		int64_t due = WK_TICK_MS + now;

		if (t->state == WK_READY)
			due = now;
		else if (t->state == WK_FENCE)
			due = w->nfencing > 0 ? w->fence_deadline : w->db_retry_at;
		else if (t->state == WK_FENCING)
			due = w->fence_deadline;
		else if (t->state == WK_RETRY)
			due = t->retry_at_ms;
		else if (t->state == WK_DONE)
			due = publish_due;
		if (due - now < wait)
			wait = due - now;
	}
	if (w->unauthorized && !w->probing && w->probe_at - now < wait)
		wait = w->probe_at - now;
	if (w->in.open && (amqp_data_in_buffer(w->in.conn) || amqp_frames_enqueued(w->in.conn)))
		wait = 0;
	return wait < 0 ? 0 : (int)wait;
}

int worker_run(struct worker *w, volatile int *stop)
{
	dl_log_kv(DL_INFO, "worker running", "worker", w->id, "carrier", w->cfg->carrier_base_url, NULL);
	for (;;) {
		int fds[2];

		if (*stop && !w->draining)
			wk_begin_drain(w);
		if (w->draining && w->ntasks == 0)
			break;
		if (w->draining && dl_mono_ms() >= w->drain_deadline) {
			char n[16];

			snprintf(n, sizeof(n), "%d", w->ntasks);
			dl_log_kv(DL_ERROR, "drain deadline passed; jobs left unsettled (the broker requeues them)",
				  "jobs", n, NULL);
			break;
		}
		wk_links(w);
		if (w->in.open)
			wk_take(w);
		wk_fences(w);
		wk_maybe_probe(w);
		wk_sends(w);
		fds[0] = w->in.open ? amqp_get_sockfd(w->in.conn) : -1;
		fds[1] = w->nfencing > 0 ? PQsocket(w->db) : -1;
		if (worker_carrier_wait(&w->carrier, fds, 2, wk_wait_ms(w)) < 0) {
			dl_log_kv(DL_ERROR, "carrier multi handle failed", NULL);
			dl_sleep_ms(WK_TICK_MS, NULL);
		}
		wk_answers(w);
		wk_flush(w);
		dl_metrics_set(M_IN_FLIGHT, NULL, w->ntasks);
	}
	wk_cancel(w);
	dl_amqp_close(&w->in);
	dl_amqp_close(&w->out);
	wk_amqp_up(w, false);
	dl_metrics_set(M_IN_FLIGHT, NULL, w->ntasks);
	return 0;
}
