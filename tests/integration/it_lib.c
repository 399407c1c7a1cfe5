#include "it_lib.h"

#include "dl_form.h"
#include "dl_twsig.h"

#include <amqp_tcp_socket.h>
#include <arpa/inet.h>
#include <curl/curl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

const char *it_env(const char *name)
{
	const char *v = getenv(name);

	if (v == NULL || !*v)
		fail_msg("environment variable %s is not set (run the suites through make test)", name);
	return v;
}

struct buf {
	char *p;
	size_t n;
};

static size_t on_data(char *ptr, size_t size, size_t nmemb, void *ud)
{
	struct buf *b = ud;
	size_t n = size * nmemb;
	char *np = realloc(b->p, b->n + n + 1);

	if (np == NULL)
		return 0;
	memcpy(np + b->n, ptr, n);
	b->n += n;
	np[b->n] = '\0';
	b->p = np;
	return n;
}

static struct it_resp *perform_any(const char *method, const char *path, const char *key, const char *ctype,
				   const void *body, size_t len, va_list *extra, const char *const *list);

static struct it_resp *perform(const char *method, const char *path, const char *key, const char *ctype,
			       const void *body, size_t len, va_list *extra)
{
	return perform_any(method, path, key, ctype, body, len, extra, NULL);
}

static struct it_resp *perform_headers(const char *method, const char *path, const char *key, const char *ctype,
				       const void *body, size_t len, const char *const *list)
{
	return perform_any(method, path, key, ctype, body, len, NULL, list);
}

static struct it_resp *perform_any(const char *method, const char *path, const char *key, const char *ctype,
				   const void *body, size_t len, va_list *extra, const char *const *list)
{
	CURL *h = curl_easy_init();
	struct curl_slist *hdrs = NULL;
	struct buf data = {calloc(1, 1), 0}, head = {calloc(1, 1), 0};
	struct it_resp *r = calloc(1, sizeof(*r));
	char url[4096], line[512];
	CURLcode rc;

	assert_non_null(h);
	assert_non_null(r);
	if (!strncmp(path, "http://", 7) || !strncmp(path, "https://", 8))
		snprintf(url, sizeof(url), "%s", path);
	else
		snprintf(url, sizeof(url), "%s%s", it_env("DIALER_API_URL"), path);
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_TIMEOUT, 30L);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, &data);
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_data);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, &head);
	if (key != NULL) {
		snprintf(line, sizeof(line), "x-api-key: %s", key);
		hdrs = curl_slist_append(hdrs, line);
	}
	if (ctype != NULL) {
		snprintf(line, sizeof(line), "Content-Type: %s", ctype);
		hdrs = curl_slist_append(hdrs, line);
	}
	hdrs = curl_slist_append(hdrs, "Expect:");
	if (extra != NULL) {
		const char *hline;

		while ((hline = va_arg(*extra, const char *)) != NULL)
			hdrs = curl_slist_append(hdrs, hline);
	}
	for (int i = 0; list && list[i]; i++)
		hdrs = curl_slist_append(hdrs, list[i]);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
	if (body != NULL) {
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
		curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
	}
	if (!strcmp(method, "HEAD"))
		curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
	rc = curl_easy_perform(h);
	if (rc != CURLE_OK)
		fail_msg("%s %s failed: %s", method, path, curl_easy_strerror(rc));
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r->status);
	r->body = data.p;
	r->headers = head.p;
	r->json = json_loads(r->body, JSON_DECODE_ANY, NULL);
	curl_slist_free_all(hdrs);
	curl_easy_cleanup(h);
	return r;
}

struct it_resp *it_call(const char *method, const char *path, const char *key, const char *body, ...)
{
	struct it_resp *r;
	va_list ap;

	va_start(ap, body);
	r = perform(method, path, key, body ? "application/json" : NULL, body, body ? strlen(body) : 0, &ap);
	va_end(ap);
	return r;
}

struct it_resp *it_callf(const char *method, const char *path, const char *key, const char *fmt, ...)
{
	struct it_resp *r;
	char *body = NULL;
	va_list ap;

	va_start(ap, fmt);
	if (vasprintf(&body, fmt, ap) < 0)
		fail_msg("out of memory");
	va_end(ap);
	r = perform(method, path, key, "application/json", body, strlen(body), NULL);
	free(body);
	return r;
}

struct it_resp *it_call_raw(const char *method, const char *path, const char *key, const char *ctype,
			    const void *body, size_t len)
{
	return perform(method, path, key, ctype, body, len, NULL);
}

struct it_resp *it_post_callback(const char *attempt, const char *form)
{
	const char *token = getenv("DIALER_CARRIER_AUTH_TOKEN");
	char path[256], url[1024], sig[DL_TWSIG_LEN], header[DL_TWSIG_LEN + 32];
	const char *extra[] = {header, NULL};
	struct dl_form f;
	struct it_resp *r;

	snprintf(path, sizeof(path), "/v1/carrier/status?attemptId=%s", attempt);
	snprintf(url, sizeof(url), "%s%s", it_env("DIALER_API_URL"), path);
	assert_int_equal(dl_form_parse(form, strlen(form), &f), 0);
	assert_int_equal(dl_twsig_compute(token && *token ? token : "dialer-local-auth-token", url, &f, sig), 0);
	dl_form_free(&f);
	snprintf(header, sizeof(header), "X-Twilio-Signature: %s", sig);
	r = perform_headers("POST", path, NULL, "application/x-www-form-urlencoded", form, strlen(form), extra);
	return r;
}

struct it_resp *it_call_url(const char *method, const char *url)
{
	return perform(method, url, NULL, NULL, NULL, 0, NULL);
}

void it_resp_free(struct it_resp *r)
{
	if (r == NULL)
		return;
	json_decref(r->json);
	free(r->body);
	free(r->headers);
	free(r);
}

const char *it_header(const struct it_resp *r, const char *name, char *buf, size_t len)
{
	size_t n = strlen(name);

	for (const char *p = r->headers; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) {
		if (strncasecmp(p, name, n) == 0 && p[n] == ':') {
			const char *v = p + n + 1;
			size_t vl;

			while (*v == ' ')
				v++;
			vl = strcspn(v, "\r\n");
			if (vl >= len)
				vl = len - 1;
			memcpy(buf, v, vl);
			buf[vl] = '\0';
			return buf;
		}
	}
	return NULL;
}

long long it_metric(const char *env, const char *series)
{
	char url[512], key[256];
	struct it_resp *r;
	const char *line;
	long long n = 0;

	snprintf(url, sizeof(url), "%s/metrics", it_env(env));
	snprintf(key, sizeof(key), "\n%s ", series);
	r = it_call_url("GET", url);
	line = strstr(r->body, key);
	if (line)
		n = atoll(line + strlen(key));
	it_resp_free(r);
	return n;
}

amqp_connection_state_t it_mq_open(void)
{
	struct amqp_connection_info info;
	char *url = strdup(it_env("DIALER_AMQP_URL"));
	amqp_connection_state_t conn = amqp_new_connection();
	amqp_socket_t *sock = amqp_tcp_socket_new(conn);

	assert_int_equal(amqp_parse_url(url, &info), AMQP_STATUS_OK);
	assert_int_equal(amqp_socket_open(sock, info.host, info.port), AMQP_STATUS_OK);
	assert_int_equal(amqp_login(conn, info.vhost, 0, 131072, 0, AMQP_SASL_METHOD_PLAIN, info.user,
				    info.password).reply_type,
			 AMQP_RESPONSE_NORMAL);
	amqp_channel_open(conn, 1);
	assert_int_equal(amqp_get_rpc_reply(conn).reply_type, AMQP_RESPONSE_NORMAL);
	free(url);
	return conn;
}

void it_mq_close(amqp_connection_state_t conn)
{
	amqp_channel_close(conn, 1, AMQP_REPLY_SUCCESS);
	amqp_connection_close(conn, AMQP_REPLY_SUCCESS);
	amqp_destroy_connection(conn);
}

void it_expect(const struct it_resp *r, long status)
{
	if (r->status != status)
		fail_msg("expected HTTP %ld, got %ld: %s", status, r->status, r->body);
	if (status >= 400) {
		json_t *sc = json_object_get(r->json, "statusCode");

		if (!json_is_integer(sc) || json_integer_value(sc) != status ||
		    !json_is_string(json_object_get(r->json, "message")) ||
		    !json_is_string(json_object_get(r->json, "error")))
			fail_msg("error body is not {statusCode, message, error}: %s", r->body);
	}
}

const char *it_str(const struct it_resp *r, const char *field)
{
	return json_string_value(json_object_get(r->json, field));
}

long long it_int(const struct it_resp *r, const char *field)
{
	json_t *v = json_object_get(r->json, field);

	if (!json_is_integer(v))
		fail_msg("field %s is not an integer in %s", field, r->body);
	return json_integer_value(v);
}

char *it_ctl(int *exit_code, ...)
{
	const char *argv[32];
	int n = 0, pipefd[2], status;
	struct buf out = {calloc(1, 1), 0};
	char chunk[4096];
	ssize_t got;
	pid_t pid;
	va_list ap;

	argv[n++] = it_env("DIALER_CTL");
	va_start(ap, exit_code);
	while (n < 31 && (argv[n] = va_arg(ap, const char *)) != NULL)
		n++;
	va_end(ap);
	argv[n] = NULL;
	assert_int_equal(pipe(pipefd), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		dup2(pipefd[1], 1);
		close(pipefd[0]);
		close(pipefd[1]);
		execv(argv[0], (char *const *)argv);
		_exit(127);
	}
	close(pipefd[1]);
	while ((got = read(pipefd[0], chunk, sizeof(chunk))) > 0)
		on_data(chunk, 1, (size_t)got, &out);
	close(pipefd[0]);
	waitpid(pid, &status, 0);
	*exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128;
	return out.p;
}

void it_org_new(struct it_org *org, long quota_minutes)
{
	char quota[32], name[64], *out;
	json_t *j;
	int code;

	snprintf(quota, sizeof(quota), "%ld", quota_minutes);
	snprintf(name, sizeof(name), "it-org-%d-%ld", (int)getpid(), (long)random());
	out = it_ctl(&code, "org", "create", "--name", name, "--quota-minutes", quota, NULL);
	assert_int_equal(code, 0);
	j = json_loads(out, 0, NULL);
	assert_non_null(j);
	snprintf(org->id, sizeof(org->id), "%s", json_string_value(json_object_get(j, "organizationId")));
	snprintf(org->key, sizeof(org->key), "%s", json_string_value(json_object_get(j, "apiKey")));
	json_decref(j);
	free(out);
	out = it_ctl(&code, "flow", "create", "--org", org->id, "--name", "it flow", "--voice-url",
		     "http://127.0.0.1:9/voice.xml", NULL);
	assert_int_equal(code, 0);
	j = json_loads(out, 0, NULL);
	assert_non_null(j);
	snprintf(org->flow_id, sizeof(org->flow_id), "%s", json_string_value(json_object_get(j, "id")));
	json_decref(j);
	free(out);
}

PGconn *it_db(void)
{
	static PGconn *conn;

	if (conn == NULL || PQstatus(conn) != CONNECTION_OK) {
		PQfinish(conn);
		conn = PQconnectdb(it_env("DIALER_DB_URL"));
		if (PQstatus(conn) != CONNECTION_OK)
			fail_msg("cannot connect to the test database: %s", PQerrorMessage(conn));
	}
	return conn;
}

long long it_db_count(const char *sql, ...)
{
	const char *params[16];
	int n = 0;
	long long v = -1;
	PGresult *r;
	va_list ap;

	va_start(ap, sql);
	while (n < 16 && (params[n] = va_arg(ap, const char *)) != NULL)
		n++;
	va_end(ap);
	r = PQexecParams(it_db(), sql, n, NULL, params, NULL, NULL, 0);
	if (PQresultStatus(r) != PGRES_TUPLES_OK)
		fail_msg("query failed: %s: %s", sql, PQresultErrorMessage(r));
	if (PQntuples(r) > 0)
		v = atoll(PQgetvalue(r, 0, 0));
	PQclear(r);
	return v;
}

void it_phone(char out[20], int last_digit)
{
	static unsigned counter;
	static unsigned base;

	if (base == 0)
		base = (unsigned)(time(NULL) % 100000) * 100 + (unsigned)(getpid() % 100);
	counter++;
	/* +1 555, 7 digits from this run and call, a 5 so that the number never
	 * ends in 00 (the simulator's invalid number), then the chosen digit. */
	snprintf(out, 20, "+1555%04u%03u5%d", (base + counter / 1000) % 10000, counter % 1000, last_digit % 10);
}

int it_poll(int (*cond)(void *arg), void *arg, int timeout_ms)
{
	struct timespec step = {0, 20 * 1000000L};
	int waited = 0, v;

	while (!(v = cond(arg)) && waited < timeout_ms) {
		nanosleep(&step, NULL);
		waited += 20;
	}
	return v;
}

int it_free_port(void)
{
	struct sockaddr_in a;
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0), port;

	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
	port = ntohs(a.sin_port);
	close(fd);
	return port;
}

static int port_listens(void *arg)
{
	struct sockaddr_in a;
	int fd = socket(AF_INET, SOCK_STREAM, 0), ok;

	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_port = htons((uint16_t)*(int *)arg);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ok = connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
	close(fd);
	return ok;
}

int it_port_up(int port, int timeout_ms)
{
	return it_poll(port_listens, &port, timeout_ms);
}

static int api_ready(void *arg)
{
	int port = *(int *)arg;
	char url[128];
	struct it_resp *r;
	int ok;

	if (!it_port_up(port, 20))
		return 0;
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/readyz", port);
	r = it_call_url("GET", url);
	ok = r->status == 200;
	it_resp_free(r);
	return ok;
}

int it_api_ready(int port, int timeout_ms)
{
	return it_poll(api_ready, &port, timeout_ms);
}

pid_t it_spawn(const char *name, const char *tag, const char *const *env)
{
	const char *ctl = it_env("DIALER_CTL");
	char log[512], bin[512];
	pid_t pid;

	snprintf(log, sizeof(log), "%s/logs/%s-%s.log", it_env("STACK_RUNDIR"), name, tag);
	snprintf(bin, sizeof(bin), "%.*s/%s", (int)(strrchr(ctl, '/') - ctl), ctl, name);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		FILE *f = freopen(log, "a", stdout);

		(void)f;
		dup2(1, 2);
		for (int i = 0; env && env[i]; i += 2)
			setenv(env[i], env[i + 1], 1);
		execl(bin, bin, (char *)NULL);
		_exit(127);
	}
	return pid;
}

void it_stop_pid(pid_t pid)
{
	struct timespec ts = {0, 20000000};

	kill(pid, SIGTERM);
	for (int i = 0; i < 1000 && kill(pid, 0) == 0; i++) {
		waitpid(pid, NULL, WNOHANG);
		nanosleep(&ts, NULL);
	}
	assert_int_not_equal(kill(pid, 0), 0);
}

pid_t it_service_pid(const char *name)
{
	char path[512];
	FILE *f;
	int pid = 0;

	snprintf(path, sizeof(path), "%s/pids/%s.pid", it_env("STACK_RUNDIR"), name);
	f = fopen(path, "r");
	assert_non_null(f);
	assert_int_equal(fscanf(f, "%d", &pid), 1);
	fclose(f);
	return pid;
}

void it_services_start(void)
{
	const char *stack = it_env("DIALER_STACK");
	char cmd[1024];

	snprintf(cmd, sizeof(cmd), "bash %.*s/services.sh start %s >/dev/null", (int)(strrchr(stack, '/') - stack),
		 stack, it_env("STACK_RUNDIR"));
	assert_int_equal(system(cmd), 0);
}

void it_worker_db_url(char *out, size_t len)
{
	const char *db = it_env("DIALER_DB_URL"), *at = strchr(db, '@');

	assert_non_null(at);
	snprintf(out, len, "postgresql://dialer_worker:dialer_worker%s", at);
}
