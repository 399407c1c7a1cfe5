#include "dl_migrate.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "dl_db.h"
#include "dl_log.h"

/* Any fixed number shared by every dialerctl: serializes concurrent migrations. */
#define MIGRATE_LOCK "7419032"

int dl_migrate(PGconn *conn, int *applied)
{
	PGresult *res = NULL;
	int current, n = 0, r = -EIO;

	if (dl_db_cmd(conn, "CREATE TABLE IF NOT EXISTS schema_migrations ("
			    " version integer PRIMARY KEY, name text NOT NULL,"
			    " applied_at timestamptz NOT NULL DEFAULT now())") < 0 ||
	    dl_db_cmd(conn, "SELECT pg_advisory_lock(" MIGRATE_LOCK ")") < 0)
		return -EIO;
	res = dl_db_exec(conn, "SELECT coalesce(max(version), 0) FROM schema_migrations", 0, NULL, NULL);
	if (res == NULL)
		goto out;
	current = atoi(PQgetvalue(res, 0, 0));
	PQclear(res);
	res = NULL;
	for (int i = 0; i < dl_migrations_count; i++) {
		const struct dl_migration *m = &dl_migrations[i];
		char version[16];
		const char *params[2] = {version, m->name};

		if (m->version <= current)
			continue;
		snprintf(version, sizeof(version), "%d", m->version);
		if (dl_db_cmd(conn, "BEGIN") < 0)
			goto out;
		/* PQexec: a migration is several statements without parameters. */
		res = PQexec(conn, m->sql);
		if (PQresultStatus(res) != PGRES_COMMAND_OK && PQresultStatus(res) != PGRES_TUPLES_OK) {
			dl_log_kv(DL_ERROR, "migration failed", "migration", m->name, "error",
				  PQresultErrorMessage(res), NULL);
			PQclear(res);
			res = NULL;
			DL_IGNORE(dl_db_cmd(conn, "ROLLBACK"));
			goto out;
		}
		PQclear(res);
		res = dl_db_exec(conn, "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", 2,
				 params, NULL);
		if (res == NULL || dl_db_cmd(conn, "COMMIT") < 0) {
			DL_IGNORE(dl_db_cmd(conn, "ROLLBACK"));
			goto out;
		}
		PQclear(res);
		res = NULL;
		dl_log_kv(DL_INFO, "migration applied", "migration", m->name, NULL);
		n++;
	}
	*applied = n;
	r = 0;
out:
	PQclear(res);
	DL_IGNORE(dl_db_cmd(conn, "SELECT pg_advisory_unlock(" MIGRATE_LOCK ")"));
	return r;
}
