/* dialer-scheduler: runs campaigns. One replica leads (a lease in
 * Postgres) and dispatches; every replica applies results. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dl_db.h"
#include "dl_log.h"
#include "dl_metrics.h"
#include "dl_outbox.h"
#include "sched_metrics.h"
#include "scheduler.h"

static struct sched_ctx sched;
static pthread_t relay_thread, commands_thread, snapshot_thread;
static pthread_t results_threads[SCHED_RESULTS_CONSUMERS_MAX];
static int results_started;
static int threads_started;

int sched_db_connect(struct sched_ctx *s, PGconn **out)
{
	char sql[128];
	PGconn *db = NULL;

	if (dl_db_connect(s->cfg->db_url, s->cfg->db_connect_timeout_s, &db) < 0)
		return -EIO;
	snprintf(sql, sizeof(sql), "SET idle_in_transaction_session_timeout = %d",
		 s->cfg->scheduler_lease_s * 1000 / 3);
	if (dl_db_cmd(db, sql) < 0 || dl_db_cmd(db, "SET lock_timeout = '2s'") < 0) {
		PQfinish(db);
		return -EIO;
	}
	*out = db;
	return 0;
}

static int sched_init(struct dl_service_ctx *svc)
{
	char host[64] = "scheduler";

	sched.svc = svc;
	sched.cfg = &svc->cfg;
	gethostname(host, sizeof(host) - 1);
	snprintf(sched.holder, sizeof(sched.holder), "%s:%d", host, (int)getpid());
	dl_metrics_register("dialer_scheduler_leader", "gauge", "1 while this replica leads.");
	dl_metrics_register("dialer_scheduler_dials_dispatched_total", "counter", "Dial jobs created.");
	dl_metrics_register("dialer_calls_total", "counter", "Calls ended, by outcome.");
	dl_metrics_register("dialer_scheduler_results_invalid_total", "counter", "Result messages dropped as invalid.");
	dl_metrics_register("dialer_scheduler_results_shares_total", "counter",
			    "Shares of result batches applied, by how: pipelined (three round trips), one_transaction "
			    "(a statement at a time), one_by_one (a message a transaction, after a share failed).");
	svc->state = &sched;
	if (pthread_create(&relay_thread, NULL, dl_outbox_relay, svc) != 0)
		return -EAGAIN;
	threads_started = 1;
	/* One consumer of results; it applies each batch on
	 * scheduler.results_consumers threads of its own. */
	for (; results_started < 1; results_started++)
		if (pthread_create(&results_threads[results_started], NULL, sched_results_thread, &sched) != 0)
			return -EAGAIN;
	threads_started = 2;
	if (pthread_create(&commands_thread, NULL, sched_commands_thread, &sched) != 0)
		return -EAGAIN;
	threads_started = 3;
	if (pthread_create(&snapshot_thread, NULL, sched_snapshot_thread, &sched) != 0)
		return -EAGAIN;
	threads_started = 4;
	return 0;
}

static int sched_run(struct dl_service_ctx *svc)
{
	PGconn *db = NULL;
	int64_t next_sweep = 0;

	while (!svc->stop) {
		if (db == NULL || PQstatus(db) != CONNECTION_OK) {
			PQfinish(db);
			db = NULL;
			sched.leading = 0;
			if (sched_db_connect(&sched, &db) < 0) {
				dl_sleep_ms(1000, &svc->stop);
				continue;
			}
		}
		sched.dispatch_more = false;
		if (sched_lease_tick(&sched, db)) {
			if (sched.wake || dl_mono_ms() >= next_sweep) {
				sched.wake = 0;
				DL_IGNORE(sched_sweep(&sched, db));
				next_sweep = dl_mono_ms() + 250;
			}
			DL_IGNORE(sched_dispatch(&sched, db));
		}
		sched_metrics_refresh(&sched, db);
		if (sched.dispatch_more)
			continue;
		for (int waited = 0; waited < svc->cfg.scheduler_tick_ms && !sched.wake && !svc->stop; waited += 5)
			dl_sleep_ms(5, NULL);
	}
	if (db != NULL && PQstatus(db) == CONNECTION_OK)
		sched_lease_release(&sched, db);
	PQfinish(db);
	return 0;
}

static void sched_fini(struct dl_service_ctx *svc)
{
	svc->stop = 1;
	if (threads_started > 0)
		pthread_join(relay_thread, NULL);
	for (int i = 0; i < results_started; i++)
		pthread_join(results_threads[i], NULL);
	if (threads_started > 2)
		pthread_join(commands_thread, NULL);
	if (threads_started > 3)
		pthread_join(snapshot_thread, NULL);
}

static bool sched_ready(struct dl_service_ctx *svc, char *why, size_t whylen)
{
	PGconn *db = NULL;

	if (dl_db_connect(svc->cfg.db_url, 2, &db) < 0) {
		snprintf(why, whylen, "database unreachable");
		return false;
	}
	PQfinish(db);
	return true;
}

int main(int argc, char **argv)
{
	static const struct dl_service svc = {
		.name = "dialer-scheduler",
		.init = sched_init,
		.run = sched_run,
		.fini = sched_fini,
		.ready = sched_ready,
		.health_listener = true,
	};

	return dl_service_main(&svc, argc, argv);
}
