/* dl_service: the skeleton every Dialer daemon runs in. It owns argv, the
 * configuration, logging, signals (which only set a flag), the health and
 * metrics listener and the drain on SIGTERM, so a daemon's main() is one call. */
#ifndef DL_SERVICE_H
#define DL_SERVICE_H

#include <signal.h>
#include <stdbool.h>

#include "dl_config.h"
#include "dl_http.h"

struct dl_service_ctx {
	struct dl_config cfg;
	volatile int stop; /* set by SIGTERM/SIGINT; loops poll it */
	void *state;       /* the daemon's own */
};

struct dl_service {
	const char *name;
	/* Sets up the daemon; 0 or -errno (then the process exits 1). */
	int (*init)(struct dl_service_ctx *ctx);
	/* Runs until ctx->stop, then drains; returns 0 for a clean exit. */
	int (*run)(struct dl_service_ctx *ctx);
	/* Frees what init made; called after run or a failed init. */
	void (*fini)(struct dl_service_ctx *ctx);
	/* Dependencies usable? NULL means always ready. */
	bool (*ready)(struct dl_service_ctx *ctx, char *why, size_t whylen);
	/* When true the skeleton serves /healthz, /readyz and /metrics on
	 * health.port; the API serves them on its own listener instead. */
	bool health_listener;
};

/* Parses argv (--config FILE, --check-config, --help), loads the
 * configuration and runs svc. Returns the process exit code. */
int dl_service_main(const struct dl_service *svc, int argc, char **argv);
/* Answers /healthz, /readyz and /metrics; false when url is none of them. */
bool dl_service_health(struct dl_service_ctx *ctx, struct dl_http_req *req, struct dl_http_resp *resp);
/* Records that the process is up (build info metric). */
void dl_service_build_info(const char *service);

#endif
