/* dialerctl: the operators' command line. Private header. */
#ifndef CTL_H
#define CTL_H

#include <libpq-fe.h>

#include "dl_config.h"

/* Each command parses its own arguments (argv[0] is the command's last word),
 * prints its result as JSON on stdout, its errors on stderr, and returns the
 * process exit code. */
int ctl_migrate(const struct dl_config *cfg, int argc, char **argv);
int ctl_org(const struct dl_config *cfg, int argc, char **argv);
int ctl_apikey(const struct dl_config *cfg, int argc, char **argv);
int ctl_flow(const struct dl_config *cfg, int argc, char **argv);
/* dlq list|replay|purge on the dead-letter queue (ctl_dlq.c); RabbitMQ only. */
int ctl_dlq(const struct dl_config *cfg, int argc, char **argv);

/* Finds "--name value" in argv; NULL when absent. */
const char *ctl_opt(int argc, char **argv, const char *name);
/* Connects to cfg's database, printing the failure; NULL on failure. */
PGconn *ctl_connect(const struct dl_config *cfg);

#endif
