/* dl_migrate: applies the versioned SQL migrations linked into the binary. */
#ifndef DL_MIGRATE_H
#define DL_MIGRATE_H

#include <libpq-fe.h>

#include "dl_util.h"

struct dl_migration {
	int version;
	const char *name;
	const char *sql;
};

extern const struct dl_migration dl_migrations[];
extern const int dl_migrations_count;

/* Applies every migration newer than the database's, each in its own
 * transaction, under an advisory lock so concurrent runs wait for each other.
 * Writes how many were applied to *applied. Logs; returns 0 or -EIO. */
int dl_migrate(PGconn *conn, int *applied) DL_WUR;

#endif
