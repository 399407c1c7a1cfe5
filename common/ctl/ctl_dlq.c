/* dialerctl dlq: lists, replays and purges the dead-letter queue.
 *
 * A scan takes messages from the head of the queue with basic.get (manual
 * acks), never more than the queue held when the scan began (a passive
 * queue.declare), so it ends even while dead letters keep arriving. Two
 * connections: `src` gets and acks, `pub` publishes and waits for confirms.
 *
 * Every mode, list and --dry-run included, goes once round the whole queue:
 * a message taken (replayed, purged) is acked after its replayed copy is
 * confirmed (purge: at once); every other one is republished to the tail of
 * the same queue, properties and x-death intact, and acked only once the
 * broker has confirmed the copy. One channel publishing to one queue keeps
 * order, and the scan covers every message present at its start, so the
 * messages left come out in their order, and none is ever lost: a crash
 * between a confirm and its ack leaves a duplicate (a duplicate job is
 * refused by the fence), never a gap.
 * Holding the messages and returning them with nack(requeue) at the end
 * would copy nothing, but it does not keep order: RabbitMQ 3.10 returned
 * 300 held messages to a quorum queue shuffled (seen while writing this),
 * and where a quorum queue puts a returned message depends on its version
 * and delivery limit. RabbitMQ 4.0 to 4.2 also count every return toward
 * the delivery limit (20 by default there; past it the dead-letter queue,
 * which has no dead-letter exchange, would drop the message), and a slow
 * --rate would hold messages past the broker's consumer timeout. This scan
 * holds at most DLQ_BATCH messages unacknowledged, and ends with
 * dlq_barrier so that its last acks are applied before it disconnects.
 * New dead letters arriving during a scan end up among the copies; the
 * messages scanned keep their order among themselves. Run one scan at a time.
 */
#include <amqp.h>
#include <errno.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ctl.h"
#include "dl_amqp.h"
#include "dl_util.h"

/* dl_amqp opens channel 1 and does all its work on it. */
#define DLQ_CHANNEL 1
#define DLQ_CONFIRM_MS 30000
#define DLQ_BATCH 64
#define DLQ_SAMPLE 5
/* Bodies larger than this are not parsed: they match no campaign. */
#define DLQ_BODY_MAX (1024 * 1024)
#define DLQ_FIELD_MAX 256
/* How long a released message may take to be counted in the queue again. */
#define DLQ_SETTLE_MS 5000

enum dlq_mode { DLQ_LIST, DLQ_REPLAY, DLQ_PURGE };

struct dlq_opts {
	enum dlq_mode mode;
	const char *campaign, *reason;
	int64_t older_ms; /* -1: no age filter */
	long max;         /* -1: no limit */
	long rate;        /* messages a second; 0: unpaced */
	bool dry_run, all;
};

/* What a dead letter says about itself; strings copied and capped, empty
 * when absent. */
struct dlq_info {
	char message_id[DLQ_FIELD_MAX], type[DLQ_FIELD_MAX];
	char campaign[DLQ_FIELD_MAX], attempt[DLQ_FIELD_MAX];
	char reason[64];
	int64_t count; /* x-death count, -1 unknown */
	int64_t age_s; /* -1 unknown */
};

struct dlq_run {
	const struct dl_config *cfg;
	struct dlq_opts opt;
	struct dl_amqp src, pub;
	uint32_t total; /* messages in the queue when the scan began */
	long scanned, matched, acted;
	uint64_t pending[DLQ_BATCH]; /* src tags whose copies await their confirm */
	size_t npending;
	json_t *sample; /* owned */
	int64_t next_send_ms;
	int64_t progress_ms;
	bool tty, barrier_held;
};

static volatile int dlq_stop;

static void dlq_on_signal(int sig)
{
	(void)sig;
	dlq_stop = 1;
}

static const char dlq_usage_text[] =
	"usage: dialerctl dlq list|replay|purge [options]\n"
	"  list     print the matching dead letters as JSON lines, then a summary\n"
	"  replay   publish each matching job again to the jobs exchange (routing key dial), with its\n"
	"           message id and type, and ack the dead copy once the broker has confirmed it\n"
	"  purge    delete the matching dead letters (with no filter, only with --all)\n"
	"options:\n"
	"  --campaign ID     only jobs whose body has this campaignId\n"
	"  --reason R        only this x-death reason: delivery_limit, rejected, expired, maxlen\n"
	"  --older-than D    only dead letters at least D old: 30s, 10m, 2h, 1d (x-death time,\n"
	"                    else the message timestamp; wall-clock time, not clock.minute_ms)\n"
	"  --max N           list, replay or purge at most N of the matching messages\n"
	"  --rate N          replay (or purge) at most N messages a second\n"
	"  --dry-run         counts and a sample of up to 5 matching messages; takes nothing\n"
	"  --all             purge: delete every message when no filter is given\n"
	"Every command goes once round the queue: each message it does not take is put back at\n"
	"the tail (the copy confirmed before the original is acked), so what stays keeps its\n"
	"order and nothing is lost; list and --dry-run leave the same messages in the same order.\n"
	"Run one at a time. A replayed job still passes the dial fence: the worker's\n"
	"dialer_fence_attempt refuses an attempt already past QUEUED, so a replay never dials a\n"
	"contact twice. Pause the workers' autoscaler first (deploy/README.md).\n"
	"Ctrl-C takes nothing more but finishes the round, keeping the order; a second Ctrl-C\n"
	"aborts: nothing is lost, but the messages already put back then follow the rest.\n"
	"Output: a summary {\"scanned\",\"matched\",\"listed\"|\"replayed\"|\"purged\",\"skipped\"};\n"
	"skipped counts matching messages left in the queue (over --max, or a dry run).\n";

/* Parses "30s", "10m", "2h" or "1d" into milliseconds; 0 or -EINVAL. */
static int dlq_duration(const char *s, int64_t *out)
{
	static const struct {
		const char *unit;
		int64_t ms;
	} units[] = {{"s", 1000}, {"m", 60000}, {"h", 3600000}, {"d", 86400000}};
	char *end;
	long long v;

	if (s[0] < '0' || s[0] > '9')
		return -EINVAL;
	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno || v > 100000000)
		return -EINVAL;
	for (size_t i = 0; i < DL_ARRAY_LEN(units); i++) {
		if (!strcmp(end, units[i].unit)) {
			*out = (int64_t)v * units[i].ms;
			return 0;
		}
	}
	return -EINVAL;
}

/* Parses a whole number in [lo, hi]; 0 or -EINVAL. */
static int dlq_number(const char *s, long lo, long hi, long *out)
{
	char *end;
	long v;

	if (s[0] < '0' || s[0] > '9')
		return -EINVAL;
	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || *end || v < lo || v > hi)
		return -EINVAL;
	*out = v;
	return 0;
}

/* Reads argv (argv[0] "dlq", argv[1] the verb); every option is known, so a
 * misspelt filter is an error rather than a replay of everything. Prints
 * what is wrong; 0 or -EINVAL. */
static int dlq_parse(int argc, char **argv, struct dlq_opts *o)
{
	const char *verb = argc > 1 ? argv[1] : "";

	memset(o, 0, sizeof(*o));
	o->older_ms = -1;
	o->max = -1;
	if (!strcmp(verb, "list"))
		o->mode = DLQ_LIST;
	else if (!strcmp(verb, "replay"))
		o->mode = DLQ_REPLAY;
	else if (!strcmp(verb, "purge"))
		o->mode = DLQ_PURGE;
	else {
		fputs(dlq_usage_text, stderr);
		return -EINVAL;
	}
	for (int i = 2; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		bool takes = strcmp(a, "--dry-run") && strcmp(a, "--all");

		if (takes && v == NULL) {
			fprintf(stderr, "dialerctl: %s needs a value (dialerctl dlq --help)\n", a);
			return -EINVAL;
		}
		if (!strcmp(a, "--dry-run")) {
			o->dry_run = true;
		} else if (!strcmp(a, "--all")) {
			o->all = true;
		} else if (!strcmp(a, "--campaign") && *v && strlen(v) < DLQ_FIELD_MAX) {
			o->campaign = v;
		} else if (!strcmp(a, "--reason") && *v && strlen(v) < 64) {
			o->reason = v;
		} else if (!strcmp(a, "--older-than") && dlq_duration(v, &o->older_ms) == 0) {
		} else if (!strcmp(a, "--max") && dlq_number(v, 1, 100000000, &o->max) == 0) {
		} else if (!strcmp(a, "--rate") && dlq_number(v, 1, 100000, &o->rate) == 0) {
		} else {
			fprintf(stderr, "dialerctl: dlq: bad option %s%s%s (dialerctl dlq --help)\n", a,
				takes ? " " : "", takes ? v : "");
			return -EINVAL;
		}
		i += takes;
	}
	if (o->mode == DLQ_PURGE && !o->dry_run && !o->all && !o->campaign && !o->reason && o->older_ms < 0) {
		fputs("dialerctl: dlq purge without --campaign, --reason or --older-than deletes every "
		      "dead letter: add --all to mean it\n",
		      stderr);
		return -EINVAL;
	}
	return 0;
}

static void dlq_copy(char *out, size_t len, amqp_bytes_t b)
{
	size_t n = b.len < len - 1 ? b.len : len - 1;

	memcpy(out, b.bytes, n);
	out[n] = '\0';
}

static const amqp_field_value_t *dlq_table_get(const amqp_table_t *t, const char *key)
{
	size_t kl = strlen(key);

	for (int i = 0; i < t->num_entries; i++)
		if (t->entries[i].key.len == kl && !memcmp(t->entries[i].key.bytes, key, kl))
			return &t->entries[i].value;
	return NULL;
}

/* True with *out set when v holds an integer or a timestamp. */
static bool dlq_field_int(const amqp_field_value_t *v, int64_t *out)
{
	if (v == NULL)
		return false;
	switch (v->kind) {
	case AMQP_FIELD_KIND_I8: *out = v->value.i8; return true;
	case AMQP_FIELD_KIND_U8: *out = v->value.u8; return true;
	case AMQP_FIELD_KIND_I16: *out = v->value.i16; return true;
	case AMQP_FIELD_KIND_U16: *out = v->value.u16; return true;
	case AMQP_FIELD_KIND_I32: *out = v->value.i32; return true;
	case AMQP_FIELD_KIND_U32: *out = v->value.u32; return true;
	case AMQP_FIELD_KIND_I64: *out = v->value.i64; return true;
	case AMQP_FIELD_KIND_U64:
	case AMQP_FIELD_KIND_TIMESTAMP: *out = (int64_t)v->value.u64; return true;
	default: return false;
	}
}

static void dlq_field_str(const amqp_field_value_t *v, char *out, size_t len)
{
	out[0] = '\0';
	if (v != NULL && (v->kind == AMQP_FIELD_KIND_UTF8 || v->kind == AMQP_FIELD_KIND_BYTES))
		dlq_copy(out, len, v->value.bytes);
}

static void dlq_json_str(json_t *obj, const char *key, char *out, size_t len)
{
	const char *s = json_string_value(json_object_get(obj, key));

	if (s != NULL && out[0] == '\0')
		snprintf(out, len, "%s", s);
}

/* Reads what filters and output need from a dead letter. The x-death entry
 * that counts is the one for the jobs queue (the array is newest first, and
 * a message may have died in several queues), else the newest. */
static void dlq_inspect(const amqp_message_t *m, const char *jobs_queue, int64_t now_s, struct dlq_info *in)
{
	const amqp_basic_properties_t *p = &m->properties;
	const amqp_table_t *entry = NULL;
	bool aged = false;
	int64_t t;

	memset(in, 0, sizeof(*in));
	in->count = -1;
	in->age_s = -1;
	if (p->_flags & AMQP_BASIC_MESSAGE_ID_FLAG)
		dlq_copy(in->message_id, sizeof(in->message_id), p->message_id);
	if (p->_flags & AMQP_BASIC_TYPE_FLAG)
		dlq_copy(in->type, sizeof(in->type), p->type);
	if (p->_flags & AMQP_BASIC_HEADERS_FLAG) {
		const amqp_field_value_t *xd = dlq_table_get(&p->headers, "x-death");

		for (int i = 0; xd && xd->kind == AMQP_FIELD_KIND_ARRAY && i < xd->value.array.num_entries; i++) {
			const amqp_field_value_t *e = &xd->value.array.entries[i];
			char queue[DLQ_FIELD_MAX];

			if (e->kind != AMQP_FIELD_KIND_TABLE)
				continue;
			if (entry == NULL)
				entry = &e->value.table;
			dlq_field_str(dlq_table_get(&e->value.table, "queue"), queue, sizeof(queue));
			if (!strcmp(queue, jobs_queue)) {
				entry = &e->value.table;
				break;
			}
		}
	}
	if (entry != NULL) {
		dlq_field_str(dlq_table_get(entry, "reason"), in->reason, sizeof(in->reason));
		if (dlq_field_int(dlq_table_get(entry, "count"), &t))
			in->count = t;
		if (dlq_field_int(dlq_table_get(entry, "time"), &t)) {
			in->age_s = now_s - t;
			aged = true;
		}
	}
	if (!aged && (p->_flags & AMQP_BASIC_TIMESTAMP_FLAG)) {
		in->age_s = now_s - (int64_t)p->timestamp;
		aged = true;
	}
	if (aged && in->age_s < 0)
		in->age_s = 0; /* a clock ahead of ours */
	if (m->body.len > 0 && m->body.len <= DLQ_BODY_MAX) {
		json_t *body = json_loadb(m->body.bytes, m->body.len, 0, NULL);

		if (json_is_object(body)) {
			dlq_json_str(body, "campaignId", in->campaign, sizeof(in->campaign));
			dlq_json_str(body, "attemptId", in->attempt, sizeof(in->attempt));
			dlq_json_str(body, "messageId", in->message_id, sizeof(in->message_id));
			dlq_json_str(body, "type", in->type, sizeof(in->type));
		}
		json_decref(body);
	}
}

static bool dlq_matches(const struct dlq_opts *o, const struct dlq_info *in)
{
	if (o->campaign && strcmp(o->campaign, in->campaign))
		return false;
	if (o->reason && strcmp(o->reason, in->reason))
		return false;
	if (o->older_ms >= 0 && (in->age_s < 0 || in->age_s * 1000 < o->older_ms))
		return false;
	return true;
}

/* s as a JSON string; null when empty or not valid UTF-8 (a new reference). */
static json_t *dlq_str_or_null(const char *s)
{
	json_t *j = s[0] ? json_string(s) : NULL;

	return j ? j : json_null();
}

/* One message as printed by list and in samples (a new reference). */
static json_t *dlq_info_json(const struct dlq_info *in)
{
	return json_pack("{s:o, s:o, s:o, s:o, s:o, s:o, s:o}", "messageId", dlq_str_or_null(in->message_id),
			 "type", dlq_str_or_null(in->type), "campaignId", dlq_str_or_null(in->campaign),
			 "attemptId", dlq_str_or_null(in->attempt), "reason", dlq_str_or_null(in->reason),
			 "count", in->count >= 0 ? json_integer(in->count) : json_null(), "age",
			 in->age_s >= 0 ? json_integer(in->age_s) : json_null());
}

/* Prints j as one JSON line and drops the reference. */
static void dlq_print(json_t *j)
{
	char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;

	if (s)
		puts(s);
	free(s);
	json_decref(j);
}

static const char *dlq_verb(enum dlq_mode m)
{
	return m == DLQ_LIST ? "listed" : m == DLQ_REPLAY ? "replayed" : "purged";
}

static void dlq_progress(struct dlq_run *r, bool last)
{
	int64_t now = dl_mono_ms();

	if (!r->tty || (!last && now - r->progress_ms < 100))
		return;
	r->progress_ms = now;
	fprintf(stderr, "\r scanned %ld/%u matched %ld %s %ld", r->scanned, r->total, r->matched,
		dlq_verb(r->opt.mode), r->acted);
	if (last)
		fputc('\n', stderr);
}

/* The queue's ready messages now; 0 or -EIO. */
static int dlq_depth(struct dl_amqp *mq, const char *queue, uint32_t *out)
{
	amqp_queue_declare_ok_t *ok = amqp_queue_declare(mq->conn, DLQ_CHANNEL, amqp_cstring_bytes(queue), 1, 0, 0,
							 0, amqp_empty_table);

	if (ok == NULL)
		return -EIO;
	*out = ok->message_count;
	return 0;
}

/* Takes the message at the head of queue, unacknowledged. Returns 1 with *m
 * (the caller destroys it) and *tag, 0 when the queue is empty, -EIO. */
static int dlq_get(struct dl_amqp *src, const char *queue, amqp_message_t *m, uint64_t *tag)
{
	amqp_rpc_reply_t rr;

	amqp_maybe_release_buffers(src->conn);
	rr = amqp_basic_get(src->conn, DLQ_CHANNEL, amqp_cstring_bytes(queue), 0);
	if (rr.reply_type != AMQP_RESPONSE_NORMAL)
		return -EIO;
	if (rr.reply.id == AMQP_BASIC_GET_EMPTY_METHOD)
		return 0;
	*tag = ((amqp_basic_get_ok_t *)rr.reply.decoded)->delivery_tag;
	if (amqp_read_message(src->conn, DLQ_CHANNEL, m, 0).reply_type != AMQP_RESPONSE_NORMAL)
		return -EIO;
	return 1;
}

/* Publishes a copy of m to the tail of queue (default exchange, mandatory,
 * persistent) with its properties and headers, x-death included, less the
 * queue's own delivery counters; does not wait. 0, -ENOMEM or -EIO. */
static int dlq_republish(struct dl_amqp *pub, const char *queue, const amqp_message_t *m)
{
	amqp_basic_properties_t props = m->properties;
	amqp_table_entry_t *kept = NULL;
	int n = 0;

	if ((props._flags & AMQP_BASIC_HEADERS_FLAG) && props.headers.num_entries > 0) {
		kept = calloc((size_t)props.headers.num_entries, sizeof(*kept));
		if (kept == NULL)
			return -ENOMEM;
		for (int i = 0; i < props.headers.num_entries; i++) {
			const amqp_table_entry_t *e = &props.headers.entries[i];

			if ((e->key.len == 16 && !memcmp(e->key.bytes, "x-delivery-count", 16)) ||
			    (e->key.len == 16 && !memcmp(e->key.bytes, "x-acquired-count", 16)))
				continue;
			kept[n++] = *e;
		}
		props.headers.entries = kept;
		props.headers.num_entries = n;
	}
	props._flags |= AMQP_BASIC_DELIVERY_MODE_FLAG;
	props.delivery_mode = AMQP_DELIVERY_PERSISTENT;
	n = amqp_basic_publish(pub->conn, DLQ_CHANNEL, amqp_empty_bytes, amqp_cstring_bytes(queue), 1, 0, &props,
			       m->body);
	free(kept);
	if (n != AMQP_STATUS_OK)
		return -EIO;
	pub->next_tag++;
	return 0;
}

/* Waits for the confirms of every copy published so far, then acks their
 * originals. 0 or -EIO (the originals then stay and return to the queue). */
static int dlq_flush(struct dlq_run *r)
{
	if (r->npending == 0)
		return 0;
	if (dl_amqp_wait_confirms(&r->pub, DLQ_CONFIRM_MS) < 0)
		return -EIO;
	/* Every earlier delivery is settled already, so one ack with multiple
	 * set settles exactly these, in one command to the queue. */
	if (amqp_basic_ack(r->src.conn, DLQ_CHANNEL, r->pending[r->npending - 1], 1) != AMQP_STATUS_OK)
		return -EIO;
	r->npending = 0;
	return 0;
}

/* Sleeps until --rate allows the next replay, flushing first so that no ack
 * waits on the pace. Returns 0 or -EIO. */
static int dlq_pace(struct dlq_run *r)
{
	int64_t now;

	if (r->opt.rate <= 0)
		return 0;
	now = dl_mono_ms();
	if (r->next_send_ms > now) {
		if (dlq_flush(r) < 0)
			return -EIO;
		dl_sleep_ms(r->next_send_ms - dl_mono_ms(), &dlq_stop);
		now = dl_mono_ms();
	}
	r->next_send_ms = (r->next_send_ms > now ? r->next_send_ms : now) + 1000 / r->opt.rate;
	return 0;
}

/* Publishes a dead job again to the jobs exchange, marked "replayed": true
 * in its body (workers count replays; a body that is not a JSON object goes
 * as it was). */
static int dlq_publish_replay(struct dl_amqp *pub, const char *exchange, const char *mid, const char *type,
			      const amqp_message_t *m)
{
	json_t *o = json_loadb(m->body.bytes, m->body.len, 0, NULL);
	char *text = NULL;
	int rc;

	if (json_is_object(o) && json_object_set_new(o, "replayed", json_true()) == 0)
		text = json_dumps(o, JSON_COMPACT);
	if (text != NULL)
		rc = dl_amqp_publish(pub, exchange, "dial", mid, type, text, strlen(text));
	else
		rc = dl_amqp_publish(pub, exchange, "dial", mid, type, m->body.bytes, m->body.len);
	free(text);
	json_decref(o);
	return rc;
}

/* Takes m (list: prints it; replay: publishes it to the jobs exchange;
 * purge: drops it) or puts a copy back at the tail of the queue; its ack
 * waits for the confirms of every copy published so far. 0 or -EIO. */
static int dlq_settle(struct dlq_run *r, const amqp_message_t *m, const struct dlq_info *in, bool take,
		      uint64_t tag)
{
	const struct dl_config *c = r->cfg;
	bool keep = !take || r->opt.mode == DLQ_LIST;
	int rc = 0;

	if (take && r->opt.mode != DLQ_LIST) {
		if (dlq_pace(r) < 0)
			return -EIO;
		/* Interrupted while pacing: this one stays too. */
		take = !dlq_stop;
		keep = !take;
	}
	if (take && r->opt.mode == DLQ_LIST) {
		dlq_print(dlq_info_json(in));
	} else if (take && r->opt.mode == DLQ_REPLAY) {
		char mid[DLQ_FIELD_MAX];

		snprintf(mid, sizeof(mid), "%s", in->message_id);
		if (!mid[0])
			dl_id_new("msg", mid);
		rc = dlq_publish_replay(&r->pub, c->amqp_jobs_exchange, mid, in->type[0] ? in->type : NULL, m);
	}
	if (rc == 0 && keep)
		rc = dlq_republish(&r->pub, c->amqp_dead_letter_queue, m);
	if (rc < 0)
		return rc;
	r->acted += take;
	r->pending[r->npending++] = tag;
	return r->npending == DLQ_BATCH ? dlq_flush(r) : 0;
}

/* Returns once the queue has applied our acks. A quorum queue applies an
 * ack asynchronously, and one sent just before we disconnect can arrive
 * after the queue has seen the channel go and released its message, which
 * then stays twice (RabbitMQ 3.10: about a dozen of a 300-message scan).
 * A basic.get passes through the queue's log after them, so its answer
 * means they are applied. The message it takes, if any, is left unacked
 * (r->barrier_held): released when `src` closes, it goes back to the head,
 * where it was (a nack would send it to the back). 0 or -EIO. */
static int dlq_barrier(struct dlq_run *r)
{
	amqp_message_t m;
	uint64_t tag;
	int rc = dlq_get(&r->src, r->cfg->amqp_dead_letter_queue, &m, &tag);

	if (rc == 1) {
		r->barrier_held = true;
		amqp_destroy_message(&m);
	}
	return rc < 0 ? -EIO : 0;
}

/* Closes `src`, releasing the message dlq_barrier holds, and waits (up to
 * DLQ_SETTLE_MS) until the queue counts it again, so that a scan started
 * right after this one finds it at the head. */
static void dlq_release(struct dlq_run *r)
{
	const char *queue = r->cfg->amqp_dead_letter_queue;
	uint32_t before = 0, now = 0;
	int64_t deadline;

	if (!r->barrier_held || dlq_depth(&r->pub, queue, &before) < 0) {
		dl_amqp_close(&r->src);
		return;
	}
	dl_amqp_close(&r->src);
	deadline = dl_mono_ms() + DLQ_SETTLE_MS;
	while (dlq_depth(&r->pub, queue, &now) == 0 && now <= before && dl_mono_ms() < deadline)
		dl_sleep_ms(5, NULL);
	if (now <= before)
		fprintf(stderr, "dialerctl: the message at the head of %s is not back yet; it will be, shortly\n",
			queue);
}

/* Goes once round the queue: r->total messages, fewer if it runs dry.
 * Interrupted, it takes nothing more but finishes the round, so that order
 * is kept. 0 or -EIO. */
static int dlq_scan(struct dlq_run *r)
{
	const struct dl_config *c = r->cfg;
	int rc = 0;

	while (r->scanned < (long)r->total) {
		amqp_message_t m;
		struct dlq_info in;
		uint64_t tag = 0;
		bool match, take;

		rc = dlq_get(&r->src, c->amqp_dead_letter_queue, &m, &tag);
		if (rc <= 0)
			break;
		r->scanned++;
		dlq_inspect(&m, c->amqp_jobs_queue, dl_now_ms() / 1000, &in);
		match = dlq_matches(&r->opt, &in);
		r->matched += match;
		take = match && !r->opt.dry_run && !dlq_stop && (r->opt.max < 0 || r->acted < r->opt.max);
		if (match && r->opt.dry_run && json_array_size(r->sample) < DLQ_SAMPLE)
			json_array_append_new(r->sample, dlq_info_json(&in));
		rc = dlq_settle(r, &m, &in, take, tag);
		amqp_destroy_message(&m);
		dlq_progress(r, false);
		if (rc < 0)
			break;
	}
	if (rc >= 0)
		rc = dlq_flush(r);
	if (rc >= 0 && r->scanned > 0)
		rc = dlq_barrier(r);
	dlq_progress(r, true);
	return rc < 0 ? -EIO : 0;
}

static void dlq_summary(const struct dlq_run *r)
{
	const struct dlq_opts *o = &r->opt;
	long would = o->max >= 0 && r->matched > o->max ? o->max : r->matched;
	json_t *j = json_pack("{s:I, s:I, s:I, s:I}", "scanned", (json_int_t)r->scanned, "matched",
			      (json_int_t)r->matched, dlq_verb(o->mode), (json_int_t)r->acted, "skipped",
			      (json_int_t)(r->matched - r->acted));

	if (j != NULL && o->dry_run) {
		char key[32];

		snprintf(key, sizeof(key), "would%s",
			 o->mode == DLQ_LIST ? "List" : o->mode == DLQ_REPLAY ? "Replay" : "Purge");
		json_object_set_new(j, "dryRun", json_true());
		json_object_set_new(j, key, json_integer(would));
		json_object_set(j, "sample", r->sample);
	}
	if (j != NULL && dlq_stop)
		json_object_set_new(j, "interrupted", json_true());
	dlq_print(j);
}

int ctl_dlq(const struct dl_config *cfg, int argc, char **argv)
{
	struct dlq_run *r = NULL;
	struct sigaction sa;
	int rc = 1;

	if (argc > 1 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
		fputs(dlq_usage_text, stdout);
		return 0;
	}
	r = calloc(1, sizeof(*r));
	if (r == NULL)
		return 1;
	if (dlq_parse(argc, argv, &r->opt) < 0) {
		rc = 2;
		goto out;
	}
	r->cfg = cfg;
	r->tty = isatty(2);
	r->sample = json_array();
	dl_amqp_init(&r->src, cfg);
	dl_amqp_init(&r->pub, cfg);
	if (r->sample == NULL)
		goto out;
	if (dl_amqp_connect(&r->src) < 0 || dl_amqp_connect(&r->pub) < 0) {
		fprintf(stderr, "dialerctl: cannot connect to RabbitMQ (amqp.url)\n");
		goto out;
	}
	if (dlq_depth(&r->src, cfg->amqp_dead_letter_queue, &r->total) < 0) {
		fprintf(stderr, "dialerctl: cannot read the depth of %s\n", cfg->amqp_dead_letter_queue);
		goto out;
	}
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = dlq_on_signal;
	/* A second signal takes the default action: abort now. */
	sa.sa_flags = (int)SA_RESETHAND;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	if (dlq_scan(r) < 0) {
		fprintf(stderr, "dialerctl: dlq %s stopped by a broker error after %ld of %u messages: none is "
				"lost (unacknowledged ones return to %s), but those already put back now follow the "
				"rest, and one may be there twice\n",
			argv[1], r->scanned, r->total, cfg->amqp_dead_letter_queue);
		dlq_summary(r);
		goto out;
	}
	dlq_release(r);
	dlq_summary(r);
	rc = dlq_stop ? 130 : 0;
out:
	if (r != NULL) {
		dl_amqp_close(&r->src);
		dl_amqp_close(&r->pub);
		json_decref(r->sample);
	}
	free(r);
	return rc;
}
