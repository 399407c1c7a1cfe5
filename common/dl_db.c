#include "dl_db.h"

#include <libpq-events.h>

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dl_log.h"

struct dl_db_pool {
	char *url;
	int timeout_s;
	int size;
	int nfree;
	int nopen;
	PGconn **free_list;
	pthread_mutex_t lock;
	pthread_cond_t cond;
};

static void notice_quiet(void *arg, const char *msg)
{
	(void)arg;
	(void)msg;
}

/* The statements prepared on one connection (dl_db_exec_prepared), held as
 * libpq instance data so that they follow the connection: forgotten when it
 * is reset (the server forgot them too), freed with it. */
#define DL_DB_PREPARED_MAX 64

struct prepared {
	uint64_t hash;
	const char *sql; /* the caller's static text */
	bool stale;      /* the server's copy must be deallocated first */
};

struct prepared_set {
	int n;
	struct prepared s[DL_DB_PREPARED_MAX];
};

static const char EVENT_NAME[] = "dl_db";

static int prepared_event(PGEventId id, void *info, void *arg)
{
	(void)arg;
	if (id == PGEVT_REGISTER) {
		PGEventRegister *e = info;
		struct prepared_set *set = calloc(1, sizeof(*set));

		return set != NULL && PQsetInstanceData(e->conn, prepared_event, set);
	}
	if (id == PGEVT_CONNRESET) {
		struct prepared_set *set = PQinstanceData(((PGEventConnReset *)info)->conn, prepared_event);

		if (set != NULL)
			set->n = 0;
	} else if (id == PGEVT_CONNDESTROY) {
		free(PQinstanceData(((PGEventConnDestroy *)info)->conn, prepared_event));
	}
	return 1;
}

/* Opens a connection; keys and vals end in NULL, with "connect_timeout"
 * second (its value is written here). */
static int connect_with(const char *const *keys, const char **vals, int timeout_s, PGconn **out)
{
	char tmo[16];
	PGconn *conn;

	snprintf(tmo, sizeof(tmo), "%d", timeout_s);
	vals[1] = tmo;
	conn = PQconnectdbParams(keys, vals, 1);
	if (conn == NULL || PQstatus(conn) != CONNECTION_OK) {
		char msg[512];

		snprintf(msg, sizeof(msg), "%s", conn ? PQerrorMessage(conn) : "out of memory");
		msg[strcspn(msg, "\n")] = '\0';
		dl_log_kv(DL_WARN, "database connect failed", "error", msg, NULL);
		PQfinish(conn);
		return -EIO;
	}
	PQsetNoticeProcessor(conn, notice_quiet, NULL);
	/* Without it the connection only prepares nothing (dl_db_exec_prepared
	 * then runs statements unprepared). */
	DL_IGNORE(PQregisterEventProc(conn, prepared_event, EVENT_NAME, NULL));
	*out = conn;
	return 0;
}

int dl_db_connect(const char *url, int timeout_s, PGconn **out)
{
	const char *const keys[] = {"dbname", "connect_timeout", "application_name", NULL};
	const char *vals[] = {url, NULL, "dialer", NULL};

	return connect_with(keys, vals, timeout_s, out);
}

int dl_db_connect_named(const char *url, int timeout_s, const char *app, PGconn **out)
{
	const char *const keys[] = {"dbname", "connect_timeout", "application_name", "keepalives",
				    "keepalives_idle", "keepalives_interval", "keepalives_count", NULL};
	const char *vals[] = {url, NULL, app, "1", "5", "2", "3", NULL};

	return connect_with(keys, vals, timeout_s, out);
}

int dl_db_pool_new(const char *url, int size, int timeout_s, struct dl_db_pool **out)
{
	struct dl_db_pool *p = calloc(1, sizeof(*p));

	if (p == NULL)
		return -ENOMEM;
	p->url = strdup(url);
	p->free_list = calloc((size_t)size, sizeof(PGconn *));
	if (p->url == NULL || p->free_list == NULL) {
		free(p->url);
		free(p->free_list);
		free(p);
		return -ENOMEM;
	}
	p->size = size;
	p->timeout_s = timeout_s;
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->cond, NULL);
	*out = p;
	return 0;
}

void dl_db_pool_free(struct dl_db_pool *pool)
{
	if (pool == NULL)
		return;
	for (int i = 0; i < pool->nfree; i++)
		PQfinish(pool->free_list[i]);
	pthread_mutex_destroy(&pool->lock);
	pthread_cond_destroy(&pool->cond);
	free(pool->free_list);
	free(pool->url);
	free(pool);
}

PGconn *dl_db_pool_get(struct dl_db_pool *pool, int wait_ms)
{
	struct timespec deadline;
	PGconn *conn = NULL;
	bool open_new = false;

	dl_timespec_in(CLOCK_REALTIME, wait_ms, &deadline);
	pthread_mutex_lock(&pool->lock);
	while (pool->nfree == 0 && pool->nopen >= pool->size) {
		if (pthread_cond_timedwait(&pool->cond, &pool->lock, &deadline) == ETIMEDOUT)
			break;
	}
	if (pool->nfree > 0) {
		conn = pool->free_list[--pool->nfree];
	} else if (pool->nopen < pool->size) {
		pool->nopen++;
		open_new = true;
	}
	pthread_mutex_unlock(&pool->lock);
	if (conn != NULL && PQstatus(conn) != CONNECTION_OK) {
		PQreset(conn);
		if (PQstatus(conn) != CONNECTION_OK) {
			PQfinish(conn);
			conn = NULL;
			open_new = true;
		}
	}
	if (open_new && dl_db_connect(pool->url, pool->timeout_s, &conn) < 0) {
		pthread_mutex_lock(&pool->lock);
		pool->nopen--;
		pthread_cond_signal(&pool->cond);
		pthread_mutex_unlock(&pool->lock);
		return NULL;
	}
	if (conn == NULL)
		dl_log_kv(DL_WARN, "database pool exhausted", NULL);
	return conn;
}

void dl_db_pool_put(struct dl_db_pool *pool, PGconn *conn)
{
	if (conn == NULL)
		return;
	if (PQstatus(conn) != CONNECTION_OK) {
		PQfinish(conn);
		conn = NULL;
	} else if (PQtransactionStatus(conn) != PQTRANS_IDLE) {
		PGresult *r = PQexec(conn, "ROLLBACK");

		PQclear(r);
		if (PQtransactionStatus(conn) != PQTRANS_IDLE) {
			PQfinish(conn);
			conn = NULL;
		}
	}
	pthread_mutex_lock(&pool->lock);
	if (conn != NULL)
		pool->free_list[pool->nfree++] = conn;
	else
		pool->nopen--;
	pthread_cond_signal(&pool->cond);
	pthread_mutex_unlock(&pool->lock);
}

bool dl_db_pool_ping(struct dl_db_pool *pool)
{
	PGconn *conn = dl_db_pool_get(pool, 1000);
	PGresult *r;
	bool ok;

	if (conn == NULL)
		return false;
	r = PQexec(conn, "SELECT 1");
	ok = PQresultStatus(r) == PGRES_TUPLES_OK;
	PQclear(r);
	dl_db_pool_put(pool, conn);
	return ok;
}

/* Returns r when it succeeded, else clears it, logs (see dl_db_exec) and
 * returns NULL. */
static PGresult *checked(PGconn *conn, PGresult *r, const char *sql, char sqlstate[6])
{
	ExecStatusType st = PQresultStatus(r);
	const char *state;

	if (sqlstate)
		sqlstate[0] = '\0';
	if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK)
		return r;
	state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
	if (sqlstate)
		snprintf(sqlstate, 6, "%s", state ? state : "08000");
	/* A caller that asks for the SQLSTATE handles constraint violations
	 * (a 409, say): those are not logged. Anything else is. */
	if (state == NULL || sqlstate == NULL || strncmp(state, "23", 2) != 0) {
		char msg[512], what[64];

		snprintf(msg, sizeof(msg), "%s", PQerrorMessage(conn));
		msg[strcspn(msg, "\n")] = '\0';
		snprintf(what, sizeof(what), "%s", sql);
		dl_log_kv(DL_ERROR, "database statement failed", "error", msg, "sqlstate",
			  state ? state : "", "sql", what, NULL);
	}
	PQclear(r);
	return NULL;
}

PGresult *dl_db_exec(PGconn *conn, const char *sql, int nparams, const char *const *params,
		     char sqlstate[6])
{
	return checked(conn, PQexecParams(conn, sql, nparams, NULL, params, NULL, NULL, 0), sql, sqlstate);
}

static uint64_t sql_hash(const char *s)
{
	uint64_t h = 14695981039346656037ull;

	while (*s)
		h = (h ^ (unsigned char)*s++) * 1099511628211ull;
	return h;
}

/* The statement sql among those prepared on a connection (NULL when it is
 * not), and the name it has or will have there. */
static struct prepared *prepared_find(struct prepared_set *set, const char *sql, char name[24])
{
	uint64_t h = sql_hash(sql);

	snprintf(name, 24, "dl_%016llx", (unsigned long long)h);
	for (int i = 0; set != NULL && i < set->n; i++)
		if (set->s[i].hash == h && (set->s[i].sql == sql || !strcmp(set->s[i].sql, sql)))
			return &set->s[i];
	return NULL;
}

/* The statement sql prepared on conn (named name), preparing it first when it
 * is not: *out is NULL when it runs unprepared (no room, or a connection
 * without the event). 0, or -EIO when preparing failed (logged). */
static int ensure_prepared(PGconn *conn, const char *sql, int nparams, char name[24], struct prepared **out,
			   char sqlstate[6])
{
	struct prepared_set *set = PQinstanceData(conn, prepared_event);
	struct prepared *p;
	PGresult *r;

	*out = NULL;
	if (set == NULL)
		return 0;
	p = prepared_find(set, sql, name);
	if (p == NULL || p->stale) {
		if (p == NULL && set->n == DL_DB_PREPARED_MAX)
			return 0;
		if (p != NULL) {
			char dealloc[40];

			snprintf(dealloc, sizeof(dealloc), "DEALLOCATE %s", name);
			if (dl_db_cmd(conn, dealloc) < 0) {
				if (sqlstate)
					snprintf(sqlstate, 6, "08000");
				return -EIO;
			}
		}
		r = checked(conn, PQprepare(conn, name, sql, nparams, NULL), sql, sqlstate);
		if (r == NULL)
			return -EIO;
		PQclear(r);
		if (p == NULL)
			p = &set->s[set->n++];
		p->hash = sql_hash(sql);
		p->sql = sql;
		p->stale = false;
	}
	*out = p;
	return 0;
}

static PGresult *exec_prepared(PGconn *conn, const char *sql, int nparams, const char *const *params,
				int result_format, char sqlstate[6])
{
	struct prepared_set *set = PQinstanceData(conn, prepared_event);
	struct prepared *p;
	const char *state;
	char name[24];
	PGresult *r;

	if (ensure_prepared(conn, sql, nparams, name, &p, sqlstate) < 0)
		return NULL;
	if (p == NULL)
		return checked(conn, PQexecParams(conn, sql, nparams, NULL, params, NULL, NULL, result_format), sql,
			       sqlstate);
	r = PQexecPrepared(conn, name, nparams, params, NULL, NULL, result_format);
	state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
	if (state != NULL && !strcmp(state, "26000")) {
		/* The server lost it: prepare it afresh next time. */
		*p = set->s[--set->n];
	} else if (state != NULL && !strcmp(state, "0A000")) {
		/* A migration changed what it returns: replace it next time. */
		p->stale = true;
	}
	return checked(conn, r, sql, sqlstate);
}

PGresult *dl_db_exec_prepared(PGconn *conn, const char *sql, int nparams, const char *const *params,
			      char sqlstate[6])
{
	return exec_prepared(conn, sql, nparams, params, 0, sqlstate);
}

PGresult *dl_db_exec_prepared_bin(PGconn *conn, const char *sql, int nparams, const char *const *params,
				  char sqlstate[6])
{
	return exec_prepared(conn, sql, nparams, params, 1, sqlstate);
}

int dl_db_prepare(PGconn *conn, const char *sql, int nparams)
{
	struct prepared *p;
	char name[24];

	if (PQpipelineStatus(conn) != PQ_PIPELINE_OFF)
		return -EINVAL;
	return ensure_prepared(conn, sql, nparams, name, &p, NULL);
}

int dl_db_pipe_begin(PGconn *conn)
{
	if (!PQenterPipelineMode(conn))
		return -EIO;
	return 0;
}

int dl_db_pipe_send(PGconn *conn, const char *sql, int nparams, const char *const *params)
{
	char name[24];
	struct prepared *p = prepared_find(PQinstanceData(conn, prepared_event), sql, name);
	int ok;

	if (p != NULL && !p->stale)
		ok = PQsendQueryPrepared(conn, name, nparams, params, NULL, NULL, 0);
	else
		ok = PQsendQueryParams(conn, sql, nparams, NULL, params, NULL, NULL, 0);
	return ok ? 0 : -EIO;
}

int dl_db_pipe_sync(PGconn *conn)
{
	return PQpipelineSync(conn) ? 0 : -EIO;
}

PGresult *dl_db_pipe_result(PGconn *conn, const char *sql)
{
	PGresult *r = PQgetResult(conn), *end;

	if (r == NULL)
		return NULL;
	if (PQresultStatus(r) == PGRES_PIPELINE_ABORTED) {
		PQclear(r); /* an earlier statement failed (logged) */
		r = NULL;
	} else if (PQresultStatus(r) == PGRES_PIPELINE_SYNC) {
		PQclear(r); /* fewer results than statements: the caller's mistake */
		return NULL;
	} else {
		r = checked(conn, r, sql, NULL);
	}
	/* a statement's results end with a NULL */
	end = PQgetResult(conn);
	if (end != NULL) {
		PQclear(end);
		PQclear(r);
		return NULL;
	}
	return r;
}

int dl_db_pipe_synced(PGconn *conn)
{
	PGresult *r = PQgetResult(conn);
	bool sync = PQresultStatus(r) == PGRES_PIPELINE_SYNC;

	PQclear(r);
	return sync ? 0 : -EIO;
}

int dl_db_pipe_end(PGconn *conn, int results_left)
{
	/* results_left statements' results (each ended by a NULL), then the sync */
	for (int i = 0; i <= results_left * 2 + 1 && PQstatus(conn) == CONNECTION_OK; i++) {
		PGresult *r = PQgetResult(conn);
		bool sync = PQresultStatus(r) == PGRES_PIPELINE_SYNC;

		PQclear(r);
		if (sync)
			break;
	}
	return PQexitPipelineMode(conn) ? 0 : -EIO;
}

int dl_db_bin_int(const PGresult *r, int row, int col, long long *out)
{
	const unsigned char *v = (const unsigned char *)PQgetvalue(r, row, col);
	int len = PQgetlength(r, row, col);
	uint64_t u = 0;

	if (len != 2 && len != 4 && len != 8)
		return -EPROTO;
	for (int i = 0; i < len; i++)
		u = u << 8 | v[i];
	/* Sign-extend the network-order two's complement of len bytes. */
	if (len < 8 && (u >> (len * 8 - 1)) & 1)
		u |= ~0ULL << (len * 8);
	*out = (long long)u;
	return 0;
}

int dl_db_cmd(PGconn *conn, const char *sql)
{
	PGresult *r = dl_db_exec(conn, sql, 0, NULL, NULL);

	if (r == NULL)
		return -EIO;
	PQclear(r);
	return 0;
}

bool dl_db_retryable(const char *sqlstate)
{
	return !strcmp(sqlstate, "40001") || !strcmp(sqlstate, "40P01") ||
	       !strncmp(sqlstate, "08", 2) || !strcmp(sqlstate, "57P01");
}
