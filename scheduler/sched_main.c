/* dialer-scheduler: runs campaigns. This first cut is the service skeleton
 * only (health, metrics, drain); campaign execution lands with issue 3. */
#include "dl_service.h"
#include "dl_util.h"

static int sched_run(struct dl_service_ctx *ctx)
{
	while (!ctx->stop)
		dl_sleep_ms(1000, &ctx->stop);
	return 0;
}

int main(int argc, char **argv)
{
	static const struct dl_service svc = {
		.name = "dialer-scheduler",
		.run = sched_run,
		.health_listener = true,
	};

	return dl_service_main(&svc, argc, argv);
}
