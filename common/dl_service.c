#include "dl_service.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dl_log.h"
#include "dl_metrics.h"

#ifndef DIALER_VERSION
#define DIALER_VERSION "dev"
#endif

static struct dl_service_ctx *the_ctx;
static const struct dl_service *the_svc;

static void on_signal(int sig)
{
	(void)sig;
	if (the_ctx)
		the_ctx->stop = 1;
}

void dl_service_build_info(const char *service)
{
	char labels[256], svc[64], version[96];

	dl_metrics_register("dialer_build_info", "gauge", "Build information; always 1.");
	snprintf(labels, sizeof(labels), "service=\"%s\",version=\"%s\"", dl_metrics_escape(svc, sizeof(svc), service),
		 dl_metrics_escape(version, sizeof(version), DIALER_VERSION));
	dl_metrics_set("dialer_build_info", labels, 1);
}

bool dl_service_health(struct dl_service_ctx *ctx, struct dl_http_req *req, struct dl_http_resp *resp)
{
	char why[256] = "";

	if (strcmp(req->method, "GET") != 0 && strcmp(req->method, "HEAD") != 0)
		return false;
	if (!strcmp(req->url, "/healthz")) {
		resp->route = "/healthz";
		dl_http_json(resp, 200, json_pack("{s:s}", "status", "ok"));
		return true;
	}
	if (!strcmp(req->url, "/readyz")) {
		resp->route = "/readyz";
		if (ctx->stop)
			snprintf(why, sizeof(why), "draining");
		else if (the_svc && the_svc->ready && !the_svc->ready(ctx, why, sizeof(why)))
			;
		else
			why[0] = '\0';
		if (why[0])
			dl_http_json(resp, 503, json_pack("{s:s, s:s}", "status", "not ready", "reason", why));
		else
			dl_http_json(resp, 200, json_pack("{s:s}", "status", "ready"));
		return true;
	}
	if (!strcmp(req->url, "/metrics")) {
		char *text = dl_metrics_render();

		resp->route = "/metrics";
		dl_http_text(resp, 200, "text/plain; version=0.0.4; charset=utf-8", text ? text : "",
			     text ? strlen(text) : 0);
		free(text);
		return true;
	}
	return false;
}

static void health_handler(void *c, struct dl_http_req *req, struct dl_http_resp *resp)
{
	if (!dl_service_health(c, req, resp)) {
		resp->route = "other";
		dl_http_error(resp, 404, "no route for %s %s", req->method, req->url);
	}
}

static void usage(const char *name)
{
	printf("usage: %s [--config FILE] [--check-config]\n"
	       "  --config FILE    libconfig file (default: $DIALER_CONFIG, else built-in defaults)\n"
	       "  --check-config   validate the configuration, print it (secrets masked), exit\n"
	       "Every setting can be overridden by DIALER_<SECTION>_<KEY>, e.g. DIALER_DB_URL.\n",
	       name);
}

int dl_service_main(const struct dl_service *svc, int argc, char **argv)
{
	static struct dl_service_ctx ctx;
	const char *path = getenv("DIALER_CONFIG");
	bool check = false;
	struct dl_httpd *health = NULL;
	enum dl_log_level level;
	struct sigaction sa;
	char err[512];
	int rc = 1;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--config") && i + 1 < argc) {
			path = argv[++i];
		} else if (!strcmp(argv[i], "--check-config")) {
			check = true;
		} else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
			usage(svc->name);
			return 0;
		} else {
			fprintf(stderr, "%s: unknown argument %s\n", svc->name, argv[i]);
			usage(svc->name);
			return 2;
		}
	}
	if (path != NULL && !*path)
		path = NULL;
	if (dl_config_load(&ctx.cfg, path, err, sizeof(err)) < 0) {
		fprintf(stderr, "%s: configuration error: %s\n", svc->name, err);
		dl_config_free(&ctx.cfg);
		return 1;
	}
	if (dl_log_level_parse(ctx.cfg.log_level, &level) < 0) {
		fprintf(stderr, "%s: configuration error: log.level must be debug, info, warn or error\n",
			svc->name);
		dl_config_free(&ctx.cfg);
		return 1;
	}
	if (check) {
		dl_config_print(&ctx.cfg, stdout);
		dl_config_free(&ctx.cfg);
		return 0;
	}
	dl_log_init(svc->name, level);
	dl_service_build_info(svc->name);
	the_ctx = &ctx;
	the_svc = svc;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	if (svc->init && svc->init(&ctx) < 0) {
		dl_log_kv(DL_ERROR, "startup failed", NULL);
		goto out;
	}
	if (svc->health_listener &&
	    dl_httpd_start(&ctx.cfg, ctx.cfg.http_listen, ctx.cfg.health_port, 1, health_handler, &ctx,
			   &health) < 0)
		goto out;
	dl_log_kv(DL_INFO, "started", NULL);
	rc = svc->run(&ctx) == 0 ? 0 : 1;
	dl_log_kv(DL_INFO, rc == 0 ? "stopped" : "stopped with an error", NULL);
out:
	dl_httpd_stop(health);
	if (svc->fini)
		svc->fini(&ctx);
	dl_config_free(&ctx.cfg);
	return rc;
}
