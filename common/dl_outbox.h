/* dl_outbox: messages committed with the state change that causes them, and
 * the relay that publishes them. Any process may run a relay: rows are
 * claimed with SKIP LOCKED, so relays share the work. */
#ifndef DL_OUTBOX_H
#define DL_OUTBOX_H

#include <jansson.h>
#include <libpq-fe.h>

#include "dl_service.h"
#include "dl_util.h"

/* Adds a message to the outbox inside the caller's transaction; sets the
 * body's "messageId" and "type". Logs failures; 0 or -EIO. */
int dl_outbox_add(PGconn *db, const char *exchange, const char *routing_key, const char *type,
		  json_t *body) DL_WUR;
/* Thread body (arg: struct dl_service_ctx *): publishes outbox rows with
 * confirms and deletes them, until ctx->stop. */
void *dl_outbox_relay(void *arg);

#endif
