/* telephony-sim: a Twilio-compatible carrier for local runs and tests. This
 * first cut serves only /healthz and /metrics on sim.port; the Calls API
 * lands with issue 4. */
#include "dl_service.h"
#include "dl_util.h"

#include <stdlib.h>
#include <string.h>

static int sim_run(struct dl_service_ctx *ctx)
{
	while (!ctx->stop)
		dl_sleep_ms(1000, &ctx->stop);
	return 0;
}

static int sim_init(struct dl_service_ctx *ctx)
{
	/* The simulator's listener is its health listener. */
	ctx->cfg.health_port = ctx->cfg.sim_port;
	free(ctx->cfg.http_listen);
	ctx->cfg.http_listen = strdup(ctx->cfg.sim_listen);
	return ctx->cfg.http_listen ? 0 : -1;
}

int main(int argc, char **argv)
{
	static const struct dl_service svc = {
		.name = "telephony-sim",
		.init = sim_init,
		.run = sim_run,
		.health_listener = true,
	};

	return dl_service_main(&svc, argc, argv);
}
