/* dialer-worker: places calls. Takes dial, hangup and reconcile jobs from
 * RabbitMQ, fences each dial in Postgres, speaks the carrier's REST API and
 * reports back over RabbitMQ (see worker.h for the files). */
#include <curl/curl.h>

#include "dl_log.h"
#include "dl_service.h"
#include "worker.h"

/* libcurl's global state, then the worker; 0 or -errno. */
static int worker_init(struct dl_service_ctx *ctx)
{
	struct worker *w = NULL;

	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		dl_log_kv(DL_ERROR, "libcurl initialisation failed", NULL);
		return -1;
	}
	if (worker_new(&ctx->cfg, &w) < 0) {
		dl_log_kv(DL_ERROR, "out of memory", NULL);
		return -1;
	}
	ctx->state = w;
	return 0;
}

/* Runs the loop until SIGTERM, then drains; 0 for a clean stop. */
static int worker_svc_run(struct dl_service_ctx *ctx)
{
	return worker_run(ctx->state, &ctx->stop);
}

/* Frees what init made (takes a failed init). */
static void worker_fini(struct dl_service_ctx *ctx)
{
	worker_free(ctx->state);
	ctx->state = NULL;
	curl_global_cleanup();
}

/* /readyz: AMQP connected and the carrier taking our credentials. */
static bool worker_svc_ready(struct dl_service_ctx *ctx, char *why, size_t whylen)
{
	if (ctx->state == NULL) {
		snprintf(why, whylen, "starting");
		return false;
	}
	return worker_ready(ctx->state, why, whylen);
}

int main(int argc, char **argv)
{
	static const struct dl_service svc = {
		.name = "dialer-worker",
		.init = worker_init,
		.run = worker_svc_run,
		.fini = worker_fini,
		.ready = worker_svc_ready,
		.health_listener = true,
	};

	return dl_service_main(&svc, argc, argv);
}
