/* dialerctl: migrate, organizations, API keys, flows, dead letters. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"
#include "dl_log.h"

static void usage(void)
{
	fputs("usage: dialerctl [--config FILE] COMMAND ...\n"
	      "  migrate                                   apply database migrations\n"
	      "  org create --name N [--quota-minutes M]   create an organization and its first API key\n"
	      "  org quota --org ORG --minutes M           set an organization's call-minute quota\n"
	      "  apikey create --org ORG                   create another API key\n"
	      "  apikey revoke --id KEY_ID                 revoke an API key\n"
	      "  flow create --org ORG --name N --voice-url URL\n"
	      "  dlq list|replay|purge [--campaign ID] [--reason R] [--older-than 10m] [--max N]\n"
	      "      [--rate N] [--dry-run] [--all]      the dead-letter queue (dlq --help); a replayed\n"
	      "                                          job still passes the dial fence: no double dial\n"
	      "Settings come from --config, $DIALER_CONFIG and DIALER_<SECTION>_<KEY> (e.g. DIALER_DB_URL).\n",
	      stderr);
}

int main(int argc, char **argv)
{
	const char *path = getenv("DIALER_CONFIG");
	struct dl_config cfg;
	char err[512];
	int i = 1, rc = 2;

	if (i + 1 < argc && !strcmp(argv[i], "--config")) {
		path = argv[i + 1];
		i += 2;
	}
	if (i >= argc || !strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
		usage();
		return i >= argc ? 2 : 0;
	}
	if (path != NULL && !*path)
		path = NULL;
	dl_log_to_stderr();
	dl_log_init("dialerctl", DL_WARN);
	if (dl_config_load(&cfg, path, err, sizeof(err)) < 0) {
		fprintf(stderr, "dialerctl: configuration error: %s\n", err);
		dl_config_free(&cfg);
		return 1;
	}
	if (!strcmp(argv[i], "migrate"))
		rc = ctl_migrate(&cfg, argc - i, argv + i);
	else if (!strcmp(argv[i], "org"))
		rc = ctl_org(&cfg, argc - i, argv + i);
	else if (!strcmp(argv[i], "apikey"))
		rc = ctl_apikey(&cfg, argc - i, argv + i);
	else if (!strcmp(argv[i], "flow"))
		rc = ctl_flow(&cfg, argc - i, argv + i);
	else if (!strcmp(argv[i], "dlq"))
		rc = ctl_dlq(&cfg, argc - i, argv + i);
	else {
		fprintf(stderr, "dialerctl: unknown command %s\n", argv[i]);
		usage();
	}
	dl_config_free(&cfg);
	return rc;
}
