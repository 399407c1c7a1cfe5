/* telephony-sim: a Twilio-compatible carrier for local runs and tests (see
 * sim.h for a call's path). Serves the Calls API, /_sim/calls, /_sim/stats, /healthz and
 * /metrics on sim.listen:sim.port with http.threads threads. */
#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dl_log.h"
#include "sim.h"

static int sim_init(struct dl_service_ctx *ctx)
{
	const struct dl_config *cfg = &ctx->cfg;
	struct sim *s = calloc(1, sizeof(*s));
	char port[16];

	if (s == NULL)
		return -ENOMEM;
	ctx->state = s;
	s->svc = ctx;
	s->cfg = cfg;
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		return -EIO;
	if (asprintf(&s->basic_auth, "%s:%s", cfg->carrier_account_sid, cfg->carrier_auth_token) < 0) {
		s->basic_auth = NULL;
		return -ENOMEM;
	}
	sim_http_metrics_register();
	if (sim_calls_init(s) < 0 || sim_cb_start(s) < 0 || sim_calls_start(s) < 0)
		return -ENOMEM;
	if (dl_httpd_start(cfg, cfg->sim_listen, cfg->sim_port, cfg->http_threads, sim_http_handle, s,
			   &s->httpd) < 0)
		return -EADDRINUSE;
	snprintf(port, sizeof(port), "%d", dl_httpd_port(s->httpd));
	dl_log_kv(DL_INFO, "listening", "listen", cfg->sim_listen, "port", port, NULL);
	return 0;
}

static int sim_run(struct dl_service_ctx *ctx)
{
	while (!ctx->stop)
		dl_sleep_ms(1000, &ctx->stop);
	return 0;
}

/* Stops taking requests, then the timers, then flushes callbacks briefly. */
static void sim_fini(struct dl_service_ctx *ctx)
{
	struct sim *s = ctx->state;

	if (s == NULL)
		return;
	dl_httpd_stop(s->httpd);
	sim_calls_stop(s);
	sim_cb_stop(s);
	sim_calls_fini(s);
	free(s->basic_auth);
	free(s);
	ctx->state = NULL;
	curl_global_cleanup();
}

int main(int argc, char **argv)
{
	static const struct dl_service svc = {
		.name = "telephony-sim",
		.init = sim_init,
		.run = sim_run,
		.fini = sim_fini,
		.health_listener = false,
	};

	return dl_service_main(&svc, argc, argv);
}
