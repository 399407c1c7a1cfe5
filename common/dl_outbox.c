/* The outbox: commands are inserted in the transaction of the state change
 * that causes them, and this relay publishes them to RabbitMQ with publisher
 * confirms, deleting each row only after the broker confirmed it. A crash
 * between confirm and delete republishes: consumers dedupe by message id. */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dl_outbox.h"

#include "dl_amqp.h"
#include "dl_db.h"
#include "dl_log.h"
#include "dl_metrics.h"

static const char SQL_OUTBOX_INSERT[] =
	"INSERT INTO outbox (exchange, routing_key, message_id, message_type, body)"
	" VALUES ($1, $2, $3, $4, $5)";
static const char SQL_OUTBOX_CLAIM[] =
	"SELECT id, exchange, routing_key, message_id, message_type, body::text FROM outbox"
	" ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED";
static const char SQL_OUTBOX_DELETE[] = "DELETE FROM outbox WHERE id = ANY($1::bigint[])";
static const char SQL_OUTBOX_LAG[] =
	"SELECT coalesce(extract(epoch FROM now() - min(created_at)), 0) FROM outbox";

int dl_outbox_add(PGconn *db, const char *exchange, const char *routing_key, const char *type,
		   json_t *body)
{
	char id[DL_ID_MAX], *text;
	const char *params[5];
	PGresult *r;

	dl_id_new("msg", id);
	json_object_set_new(body, "messageId", json_string(id));
	json_object_set_new(body, "type", json_string(type));
	text = json_dumps(body, JSON_COMPACT);
	if (text == NULL)
		return -ENOMEM;
	params[0] = exchange;
	params[1] = routing_key;
	params[2] = id;
	params[3] = type;
	params[4] = text;
	r = dl_db_exec_prepared(db, SQL_OUTBOX_INSERT, 5, params, NULL);
	free(text);
	if (r == NULL)
		return -EIO;
	PQclear(r);
	return 0;
}

/* Counts the published rows of claim (column 4: the message type) by type.
 * Types are written by our own code (dial, hangup, reconcile, call.status,
 * campaign.*), so the label stays low-cardinality. */
static void count_published(PGresult *claim)
{
	char labels[96], type[64];

	for (int i = 0; i < PQntuples(claim); i++) {
		snprintf(labels, sizeof(labels), "type=\"%s\"",
			 dl_metrics_escape(type, sizeof(type), PQgetvalue(claim, i, 4)));
		dl_metrics_add("dialer_outbox_published_total", labels, 1);
	}
}

/* Publishes one batch; returns rows published, 0 when none, -EIO on failure. */
static int relay_batch(const struct dl_config *cfg, PGconn *db, struct dl_amqp *mq)
{
	char batch[16], *ids = NULL;
	const char *params[1] = {batch};
	PGresult *r = NULL, *del = NULL;
	size_t idlen = 0;
	FILE *idf;
	int n, rc = -EIO;

	snprintf(batch, sizeof(batch), "%d", cfg->api_outbox_batch);
	if (dl_db_cmd(db, "BEGIN") < 0)
		return -EIO;
	r = dl_db_exec(db, SQL_OUTBOX_CLAIM, 1, params, NULL);
	if (r == NULL)
		goto out;
	n = PQntuples(r);
	if (n == 0) {
		rc = 0;
		goto out;
	}
	for (int i = 0; i < n; i++) {
		const char *body = PQgetvalue(r, i, 5);

		if (dl_amqp_publish(mq, PQgetvalue(r, i, 1), PQgetvalue(r, i, 2), PQgetvalue(r, i, 3),
				    PQgetvalue(r, i, 4), body, strlen(body)) < 0)
			goto out;
	}
	if (dl_amqp_wait_confirms(mq, 10000) < 0)
		goto out;
	idf = open_memstream(&ids, &idlen);
	if (idf == NULL)
		goto out;
	fputc('{', idf);
	for (int i = 0; i < n; i++)
		fprintf(idf, "%s%s", i ? "," : "", PQgetvalue(r, i, 0));
	fputc('}', idf);
	fclose(idf);
	params[0] = ids;
	del = dl_db_exec(db, SQL_OUTBOX_DELETE, 1, params, NULL);
	if (del == NULL || dl_db_cmd(db, "COMMIT") < 0)
		goto out;
	count_published(r);
	rc = n;
out:
	PQclear(del);
	PQclear(r);
	free(ids);
	if (PQtransactionStatus(db) != PQTRANS_IDLE)
		DL_IGNORE(dl_db_cmd(db, rc == 0 ? "COMMIT" : "ROLLBACK"));
	return rc;
}

/* Waits for a NOTIFY on the outbox channel, servicing AMQP heartbeats. */
static void wait_notify(PGconn *db, struct dl_amqp *mq, int timeout_ms)
{
	struct pollfd pfd = {PQsocket(db), POLLIN, 0};
	PGnotify *note;

	if (poll(&pfd, 1, timeout_ms) > 0)
		PQconsumeInput(db);
	while ((note = PQnotifies(db)) != NULL)
		PQfreemem(note);
	if (mq->open)
		DL_IGNORE(dl_amqp_poll(mq, 0));
}

static void update_lag(PGconn *db)
{
	PGresult *r = dl_db_exec(db, SQL_OUTBOX_LAG, 0, NULL, NULL);

	if (r != NULL) {
		dl_metrics_set("dialer_outbox_lag_seconds", "", atof(PQgetvalue(r, 0, 0)));
		PQclear(r);
	}
}

void *dl_outbox_relay(void *arg)
{
	struct dl_service_ctx *ctx = arg;
	const struct dl_config *cfg = &ctx->cfg;
	volatile int *stop = &ctx->stop;
	struct dl_amqp mq;
	PGconn *db = NULL;
	int64_t next_lag = 0;

	dl_metrics_register("dialer_outbox_published_total", "counter",
			    "Outbox messages published with a broker confirm, by message type.");
	dl_metrics_register("dialer_outbox_lag_seconds", "gauge", "Age of the oldest unpublished outbox message.");
	dl_amqp_init(&mq, cfg);
	for (;;) {
		int n;

		if (db == NULL || PQstatus(db) != CONNECTION_OK) {
			PQfinish(db);
			db = NULL;
			if (dl_db_connect(cfg->db_url, cfg->db_connect_timeout_s, &db) < 0 ||
			    dl_db_cmd(db, "LISTEN dialer_outbox") < 0) {
				PQfinish(db);
				db = NULL;
				if (*stop)
					break;
				dl_sleep_ms(1000, stop);
				continue;
			}
		}
		if (dl_amqp_ensure(&mq, stop) < 0)
			break;
		n = relay_batch(cfg, db, &mq);
		if (dl_mono_ms() >= next_lag) {
			update_lag(db);
			next_lag = dl_mono_ms() + 5000;
		}
		if (n > 0)
			continue;
		if (n < 0) {
			/* Broker or database trouble: back off, reconnect, try again. */
			dl_sleep_ms(500, NULL);
			continue;
		}
		if (*stop)
			break;
		wait_notify(db, &mq, 1000);
	}
	dl_amqp_close(&mq);
	PQfinish(db);
	return NULL;
}
