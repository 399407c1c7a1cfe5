/* dl_db: libpq helpers and a small blocking connection pool. Logs failures. */
#ifndef DL_DB_H
#define DL_DB_H

#include <libpq-fe.h>
#include <stdbool.h>

#include "dl_util.h"

struct dl_db_pool;

/* Opens a connection to url (a libpq URI), with connect_timeout; 0 or -EIO. */
int dl_db_connect(const char *url, int timeout_s, PGconn **out) DL_WUR;
/* dl_db_connect for a connection that lives long and mostly waits (a
 * LISTEN): application_name app, and TCP keepalives that notice a peer gone
 * silent within about 11 s. 0 or -EIO (logged). */
int dl_db_connect_named(const char *url, int timeout_s, const char *app, PGconn **out) DL_WUR;
/* Creates a pool of size lazily-opened connections. */
int dl_db_pool_new(const char *url, int size, int timeout_s, struct dl_db_pool **out) DL_WUR;
/* Closes every connection; takes NULL. */
void dl_db_pool_free(struct dl_db_pool *pool);
/* Borrows a connection, waiting up to wait_ms; reconnects one that went bad.
 * Returns NULL when none could be had (logged). */
PGconn *dl_db_pool_get(struct dl_db_pool *pool, int wait_ms);
/* Returns a borrowed connection; a connection left inside a transaction or bad
 * is reset so the next user gets a clean one. */
void dl_db_pool_put(struct dl_db_pool *pool, PGconn *conn);
/* True when one connection of the pool answers "SELECT 1". */
bool dl_db_pool_ping(struct dl_db_pool *pool);

/* PQexecParams with text parameters; returns the result (caller clears it)
 * or NULL, logging the error with sql's first words, when the status is not
 * PGRES_COMMAND_OK or PGRES_TUPLES_OK. If sqlstate is not NULL it receives the
 * SQLSTATE of a failure (6 bytes) or "" on success, and constraint
 * violations (class 23), which the caller then handles, are not logged. */
PGresult *dl_db_exec(PGconn *conn, const char *sql, int nparams, const char *const *params,
		     char sqlstate[6]);
/* dl_db_exec for a hot statement: prepared on the connection the first time
 * (named after a hash of sql, which must outlive the connection: a static
 * string), then only bound and executed, so the server neither parses nor
 * plans it again. Same results, logging and sqlstate as dl_db_exec. */
PGresult *dl_db_exec_prepared(PGconn *conn, const char *sql, int nparams, const char *const *params,
			      char sqlstate[6]);
/* dl_db_exec_prepared with every result column in binary format: what the
 * server sends as it stores it (no text conversion on either side). */
PGresult *dl_db_exec_prepared_bin(PGconn *conn, const char *sql, int nparams, const char *const *params,
				  char sqlstate[6]);
/* Pipelines: statements sent one after the other without waiting, their
 * results read in order after one sync, one round trip for all. The
 * statements must be prepared before the pipeline begins (dl_db_prepare;
 * unprepared ones are parsed by the server each time). Results are small and
 * few (the connection blocks: what the server sends must fit its socket
 * buffers until the sync). */
/* Prepares sql on conn for dl_db_pipe_send, as dl_db_exec_prepared would;
 * 0, -EIO (logged), or -EINVAL inside a pipeline. */
int dl_db_prepare(PGconn *conn, const char *sql, int nparams) DL_WUR;
/* Enters pipeline mode (the connection must be idle); 0 or -EIO. */
int dl_db_pipe_begin(PGconn *conn) DL_WUR;
/* Queues a statement with text parameters and text results; 0 or -EIO. */
int dl_db_pipe_send(PGconn *conn, const char *sql, int nparams, const char *const *params) DL_WUR;
/* Ends the statements queued so far with a sync and sends them; 0 or -EIO. */
int dl_db_pipe_sync(PGconn *conn) DL_WUR;
/* The next statement's result (caller clears it), or NULL when it failed
 * (logged with sql's first words, as dl_db_exec does) or was skipped because
 * an earlier one in the pipeline failed. */
PGresult *dl_db_pipe_result(PGconn *conn, const char *sql);
/* Reads the sync that follows the last statement's result; 0, or -EIO
 * when what came was not it. */
int dl_db_pipe_synced(PGconn *conn) DL_WUR;
/* Reads what is left up to and including the sync (results_left statements'
 * results at most) and leaves pipeline mode; 0 or -EIO. */
int dl_db_pipe_end(PGconn *conn, int results_left);
/* The value of a binary smallint, integer or bigint column (not NULL);
 * 0, or -EPROTO when the value is not 2, 4 or 8 bytes long. */
int dl_db_bin_int(const PGresult *r, int row, int col, long long *out) DL_WUR;
/* Runs a statement that returns no rows; 0 or -EIO. */
int dl_db_cmd(PGconn *conn, const char *sql) DL_WUR;
/* True when the SQLSTATE means a retryable failure (serialization, deadlock,
 * connection). */
bool dl_db_retryable(const char *sqlstate);

#endif
