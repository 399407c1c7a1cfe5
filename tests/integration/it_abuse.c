/* Hostile callers against the real API and the health listeners, on
 * loopback: slow clients (slowloris) trickling headers or a body, cut by the
 * request deadline however steadily they trickle; oversized bodies, declared
 * (413 before a byte is read) and chunked (413 as soon as the cap is passed,
 * the connection then closed); a flood from one address, the rate limits and
 * the per-address connection limit. Through all of it /healthz must keep
 * answering in under a second and the API must keep serving.
 *
 * Besides the stack's API (connection timeout 15 s, request deadline 30 s,
 * 256 connections per address, bulk 10/min) the suite starts a private
 * dialer-api with short limits so that it can wait for them within its time
 * budget: a 2-second idle timeout, a 3-second request deadline, 64
 * connections per address and 60 calls a minute. */
#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "it_lib.h"

#define PRIVATE_TIMEOUT_S 2
#define PRIVATE_DEADLINE_MS 3000
#define PRIVATE_PER_IP 64
#define PRIVATE_RATE 60
#define MAIN_PER_IP 256
#define MAX_BODY (4 * 1024 * 1024)
#define HEALTHZ_MAX_MS 1000

static pid_t private_pid;
static int private_port;

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};

	nanosleep(&ts, NULL);
}

/* The port of a service URL from the environment (http://host:port). */
static int env_port(const char *name)
{
	const char *url = it_env(name), *colon = strrchr(url, ':');

	assert_non_null(colon);
	return atoi(colon + 1);
}

static int main_port(void)
{
	return env_port("DIALER_API_URL");
}

/* ------------------------------------------------------------ raw sockets */

/* A TCP connection from source address from (NULL: any) to 127.0.0.1:port,
 * non-blocking once connected; -1 when the connect fails. */
static int tcp_open(const char *from, int port)
{
	struct sockaddr_in a;
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	assert_true(fd >= 0);
	if (from != NULL) {
		memset(&a, 0, sizeof(a));
		a.sin_family = AF_INET;
		inet_pton(AF_INET, from, &a.sin_addr);
		assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	}
	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_port = htons((uint16_t)port);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
		close(fd);
		return -1;
	}
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	return fd;
}

/* True when the server closed fd (EOF or reset). Data it sent is drained. */
static bool tcp_closed(int fd)
{
	char buf[4096];

	for (;;) {
		ssize_t n = recv(fd, buf, sizeof(buf), 0);

		if (n == 0)
			return true;
		if (n < 0)
			return errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR;
	}
}

/* Sends one byte; false when the connection is gone. */
static bool tcp_byte(int fd, char c)
{
	return send(fd, &c, 1, MSG_NOSIGNAL) == 1 || errno == EAGAIN;
}

/* Reads from fd until the peer closes, the answer's body is complete or
 * timeout_ms pass; returns the bytes read (caller frees). */
static char *tcp_read_answer(int fd, int timeout_ms)
{
	size_t cap = 65536, len = 0;
	char *buf = calloc(1, cap + 1);
	int64_t end = now_ms() + timeout_ms;

	assert_non_null(buf);
	while (now_ms() < end && len < cap) {
		struct pollfd p = {fd, POLLIN, 0};
		ssize_t n;
		const char *body, *cl;

		if (poll(&p, 1, 50) <= 0)
			continue;
		n = recv(fd, buf + len, cap - len, 0);
		if (n <= 0 && errno != EAGAIN)
			break;
		if (n > 0)
			len += (size_t)n;
		buf[len] = '\0';
		body = strstr(buf, "\r\n\r\n");
		cl = strcasestr(buf, "\r\nContent-Length:");
		if (body != NULL && cl != NULL && cl < body && strlen(body + 4) >= (size_t)atol(cl + 17))
			break;
	}
	return buf;
}

/* ------------------------------------------------------------ /healthz */

static size_t discard(char *ptr, size_t size, size_t nmemb, void *ud)
{
	(void)ptr;
	(void)ud;
	return size * nmemb;
}

/* GET /healthz on port from source address from (NULL: any): the time it
 * took in ms, or -1 when it did not answer 200 within 2 s. */
static long healthz_ms(int port, const char *from)
{
	CURL *h = curl_easy_init();
	char url[128], iface[64];
	long status = 0;
	int64_t t0 = now_ms();
	CURLcode rc;

	if (h == NULL)
		return -1;
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/healthz", port);
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 2000L);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, discard);
	if (from != NULL) {
		snprintf(iface, sizeof(iface), "host!%s", from);
		curl_easy_setopt(h, CURLOPT_INTERFACE, iface);
	}
	rc = curl_easy_perform(h);
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
	curl_easy_cleanup(h);
	if (rc != CURLE_OK || status != 200)
		return -1;
	return (long)(now_ms() - t0);
}

/* Asserts /healthz answers within HEALTHZ_MAX_MS; returns the time. */
static long expect_healthz(int port, const char *from, const char *when)
{
	long ms = healthz_ms(port, from);

	if (ms < 0 || ms > HEALTHZ_MAX_MS)
		fail_msg("/healthz on :%d %s: %s", port, when, ms < 0 ? "no 200 answer" : "slower than 1 s");
	return ms;
}

/* A thread that polls /healthz every 50 ms until told to stop, keeping the
 * slowest answer and the failures (cmocka asserts only in the main thread). */
struct prober {
	pthread_t thread;
	int port;
	volatile int stop;
	long probes, failures, slowest_ms;
};

static void *probe_loop(void *arg)
{
	struct prober *p = arg;

	while (!p->stop) {
		long ms = healthz_ms(p->port, NULL);

		p->probes++;
		if (ms < 0 || ms > HEALTHZ_MAX_MS)
			p->failures++;
		if (ms > p->slowest_ms)
			p->slowest_ms = ms;
		sleep_ms(50);
	}
	return NULL;
}

static void prober_start(struct prober *p, int port)
{
	memset(p, 0, sizeof(*p));
	p->port = port;
	assert_int_equal(pthread_create(&p->thread, NULL, probe_loop, p), 0);
}

static void prober_stop(struct prober *p, const char *during)
{
	p->stop = 1;
	pthread_join(p->thread, NULL);
	if (p->probes < 3 || p->failures > 0)
		fail_msg("/healthz during %s: %ld probes, %ld failed or over 1 s (slowest %ld ms)", during, p->probes,
			 p->failures, p->slowest_ms);
}

/* ------------------------------------------------------------ the private API */

static int group_setup(void **state)
{
	char port[16], timeout[16], deadline[16], per_ip[16], rate[16], db[512];
	const char *admin = it_env("DIALER_DB_URL"), *at = strchr(admin, '@');
	const char *env[] = {
		"DIALER_HTTP_PORT", port, "DIALER_DB_URL", db, "DIALER_HTTP_CONNECTION_TIMEOUT_S", timeout,
		"DIALER_HTTP_REQUEST_TIMEOUT_MS", deadline, "DIALER_HTTP_PER_IP_CONNECTIONS", per_ip,
		"DIALER_API_RATE_PER_MIN", rate, NULL,
	};

	(void)state;
	curl_global_init(CURL_GLOBAL_DEFAULT);
	if (at == NULL)
		return -1;
	private_port = it_free_port();
	snprintf(port, sizeof(port), "%d", private_port);
	snprintf(timeout, sizeof(timeout), "%d", PRIVATE_TIMEOUT_S);
	snprintf(deadline, sizeof(deadline), "%d", PRIVATE_DEADLINE_MS);
	snprintf(per_ip, sizeof(per_ip), "%d", PRIVATE_PER_IP);
	snprintf(rate, sizeof(rate), "%d", PRIVATE_RATE);
	/* The API's own least-privileged role, as services.sh gives it. */
	snprintf(db, sizeof(db), "postgresql://dialer_api:dialer_api%s", at);
	private_pid = it_spawn("dialer-api", "abuse", env);
	if (private_pid <= 0 || !it_api_ready(private_port, 20000))
		return -1;
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	if (private_pid > 0)
		it_stop_pid(private_pid);
	return 0;
}

/* ------------------------------------------------------------ slowloris */

#define SLOW_CONNS 50
#define SLOW_TRICKLE_HEAD 20
#define SLOW_TRICKLE_BODY 20
/* How late past its deadline a connection may be closed on a loaded machine. */
#define DEADLINE_SLACK_MS 3000

/* The request a slow client dribbles, a byte at a time (it never ends). */
static const char slow_request[] = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: slowloris\r\n"
				   "X-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
/* The headers of a request whose declared body a slow client dribbles. */
static const char slow_post[] = "POST /v1/audiences HTTP/1.1\r\nHost: 127.0.0.1\r\n"
				"Content-Type: application/json\r\nContent-Length: 4096\r\n\r\n";

/* With a 2 s idle timeout and a 3 s request deadline: 20 clients trickle
 * their headers and 20 their body, a byte every 100 ms (never idle), and 10
 * send one byte and stall. /healthz keeps answering; every one of them is
 * closed by the deadline (the stalled ones by the idle timeout), none before
 * it, none gets an answer. */
static void test_slowloris_closed_by_deadline(void **state)
{
	int fds[SLOW_CONNS], still_open = 0;
	int64_t opened[SLOW_CONNS], closed[SLOW_CONNS], t0, end;
	size_t pos = 1;
	char failure[256] = "";
	long slowest = 0, earliest = -1;
	struct prober p;

	(void)state;
	for (int i = 0; i < SLOW_CONNS; i++) {
		opened[i] = now_ms();
		closed[i] = 0;
		fds[i] = tcp_open(NULL, private_port);
		assert_true(fds[i] >= 0);
		if (i >= SLOW_TRICKLE_HEAD && i < SLOW_TRICKLE_HEAD + SLOW_TRICKLE_BODY)
			assert_int_equal(send(fds[i], slow_post, strlen(slow_post), MSG_NOSIGNAL),
					 (ssize_t)strlen(slow_post));
		else
			assert_true(tcp_byte(fds[i], slow_request[0]));
	}
	prober_start(&p, private_port);
	t0 = now_ms();
	end = t0 + PRIVATE_DEADLINE_MS + DEADLINE_SLACK_MS;
	/* Trickle a byte every 100 ms to every open client until all are closed. */
	do {
		still_open = 0;
		for (int i = 0; i < SLOW_CONNS; i++) {
			bool gone;

			if (closed[i] != 0)
				continue;
			if (i < SLOW_TRICKLE_HEAD)
				gone = !tcp_byte(fds[i], slow_request[pos % (sizeof(slow_request) - 1)]);
			else if (i < SLOW_TRICKLE_HEAD + SLOW_TRICKLE_BODY)
				gone = !tcp_byte(fds[i], ' ');
			else
				gone = false;
			if (gone || tcp_closed(fds[i]))
				closed[i] = now_ms();
			else
				still_open++;
		}
		pos++;
		if (still_open > 0)
			sleep_ms(100);
	} while (still_open > 0 && now_ms() < end);
	prober_stop(&p, "slowloris");
	for (int i = 0; i < SLOW_CONNS; i++) {
		long held = closed[i] ? (long)(closed[i] - opened[i]) : -1;

		close(fds[i]);
		if (held > slowest)
			slowest = held;
		if (i < SLOW_TRICKLE_HEAD + SLOW_TRICKLE_BODY && held >= 0 && (earliest < 0 || held < earliest))
			earliest = held;
		/* A trickling client is never idle: only the deadline may close it. */
		if (!failure[0] && i < SLOW_TRICKLE_HEAD + SLOW_TRICKLE_BODY && held >= 0 &&
		    held < PRIVATE_DEADLINE_MS - 50)
			snprintf(failure, sizeof(failure), "trickling client %d was closed after %ld ms, before its %d ms deadline",
				 i, held, PRIVATE_DEADLINE_MS);
	}
	if (failure[0])
		fail_msg("%s", failure);
	if (still_open > 0)
		fail_msg("%d slow clients still open %d ms after they connected (deadline %d ms)", still_open,
			 PRIVATE_DEADLINE_MS + DEADLINE_SLACK_MS, PRIVATE_DEADLINE_MS);
	print_message("slowloris: %d clients closed after %ld to %ld ms (deadline %d ms); /healthz slowest %ld ms "
		      "over %ld probes\n",
		      SLOW_CONNS, earliest, slowest, PRIVATE_DEADLINE_MS, p.slowest_ms, p.probes);
	expect_healthz(private_port, NULL, "after slowloris");
}

/* A connection whose requests come in on time is not cut by the deadline:
 * four requests 1 s apart over one kept-alive connection of the private API
 * (3 s deadline) are all answered. */
static void test_keepalive_not_cut(void **state)
{
	int fd = tcp_open(NULL, private_port);
	static const char get[] = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";

	(void)state;
	assert_true(fd >= 0);
	for (int i = 0; i < 4; i++) {
		char *answer;

		if (i > 0)
			sleep_ms(1000); /* the pace of the client, not a wait for a result */
		assert_int_equal(send(fd, get, strlen(get), MSG_NOSIGNAL), (ssize_t)strlen(get));
		answer = tcp_read_answer(fd, 2000);
		if (strncmp(answer, "HTTP/1.1 200 ", 13) != 0)
			fail_msg("request %d on a kept-alive connection: %.120s", i + 1, answer);
		free(answer);
	}
	close(fd);
}

/* A listener of the stack (15 s idle timeout, 30 s deadline: too long to
 * wait for): 50 slow clients do not slow its /healthz and are not cut
 * within 2 s; the test closes them itself. */
static void slowloris_held(int port, const char *what)
{
	int fds[SLOW_CONNS], cut = -1;
	struct prober p;
	int64_t end;
	size_t pos = 0;

	for (int i = 0; i < SLOW_CONNS; i++) {
		fds[i] = tcp_open(NULL, port);
		assert_true(fds[i] >= 0);
	}
	prober_start(&p, port);
	end = now_ms() + 2000;
	while (now_ms() < end && cut < 0) {
		for (int i = 0; i < SLOW_CONNS && cut < 0; i++)
			if (!tcp_byte(fds[i], slow_request[pos % (sizeof(slow_request) - 1)]))
				cut = i;
		pos++;
		sleep_ms(100);
	}
	prober_stop(&p, what);
	for (int i = 0; i < SLOW_CONNS; i++)
		close(fds[i]);
	if (cut >= 0)
		fail_msg("%s: slow client %d was cut off within 2 s", what, cut);
	expect_healthz(port, NULL, what);
}

static void test_slowloris_main_api(void **state)
{
	(void)state;
	slowloris_held(main_port(), "slowloris on the stack's API");
}

/* The scheduler's and a worker's health listeners are the same listener. */
static void test_slowloris_health_listeners(void **state)
{
	(void)state;
	slowloris_held(env_port("DIALER_SCHEDULER_HEALTH_URL"), "slowloris on the scheduler's health listener");
	slowloris_held(env_port("DIALER_WORKER_HEALTH_URL"), "slowloris on a worker's health listener");
}

/* ------------------------------------------------------------ oversized bodies */

/* Checks a raw HTTP answer: status and the {statusCode, message, error} body. */
static void expect_raw_error(const char *answer, int status)
{
	char want[32];
	const char *body = strstr(answer, "\r\n\r\n");
	json_t *j;

	snprintf(want, sizeof(want), "HTTP/1.1 %d ", status);
	if (strncmp(answer, want, strlen(want)) != 0 || body == NULL)
		fail_msg("expected %d, got: %.200s", status, answer);
	j = json_loads(body + 4, 0, NULL);
	if (!json_is_object(j) || json_integer_value(json_object_get(j, "statusCode")) != status ||
	    !json_is_string(json_object_get(j, "message")) || !json_is_string(json_object_get(j, "error")))
		fail_msg("error body is not {statusCode, message, error}: %s", body + 4);
	json_decref(j);
}

/* A declared Content-Length over the cap is refused before a byte of the
 * body is sent, on any route. */
static void test_oversized_declared(void **state)
{
	static const char *const paths[] = {"/v1/campaigns", "/v1/contacts/bulk", "/v1/imports/api/bulk",
					    "/v1/carrier/status?attemptId=att_x"};
	struct it_org org;

	(void)state;
	it_org_new(&org, 100);
	for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
		char head[512], *answer;
		int fd = tcp_open(NULL, main_port());
		int64_t t0 = now_ms();

		assert_true(fd >= 0);
		snprintf(head, sizeof(head),
			 "POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nx-api-key: %s\r\nContent-Type: application/json\r\n"
			 "Content-Length: %d\r\n\r\n",
			 paths[i], org.key, 5 * 1024 * 1024);
		assert_int_equal(send(fd, head, strlen(head), MSG_NOSIGNAL), (ssize_t)strlen(head));
		answer = tcp_read_answer(fd, 2000);
		expect_raw_error(answer, 413);
		if (now_ms() - t0 > 1000)
			fail_msg("413 for %s took %lld ms", paths[i], (long long)(now_ms() - t0));
		free(answer);
		close(fd);
	}
	assert_int_equal(it_db_count("SELECT count(*) FROM campaigns WHERE organization_id = $1", org.id, NULL), 0);
	assert_int_equal(it_db_count("SELECT count(*) FROM contacts WHERE organization_id = $1", org.id, NULL), 0);
	assert_int_equal(it_db_count("SELECT count(*) FROM imports WHERE organization_id = $1", org.id, NULL), 0);
}

struct upload {
	size_t left;
	bool started;
};

static size_t upload_read(char *buf, size_t size, size_t nitems, void *ud)
{
	struct upload *u = ud;
	size_t n = size * nitems;

	if (n > u->left)
		n = u->left;
	memset(buf, ' ', n);
	if (!u->started && n > 0) {
		buf[0] = '{';
		u->started = true;
	}
	u->left -= n;
	return n;
}

static size_t collect(char *ptr, size_t size, size_t nmemb, void *ud)
{
	char **body = ud;
	size_t old = *body ? strlen(*body) : 0, n = size * nmemb;
	char *nb = realloc(*body, old + n + 1);

	if (nb == NULL)
		return 0;
	memcpy(nb + old, ptr, n);
	nb[old + n] = '\0';
	*body = nb;
	return n;
}

/* n bytes (caller frees) that begin a JSON object and never end it: '{'
 * and spaces, the body of an oversized request. */
static char *json_head_padded(size_t n)
{
	char *b = malloc(n);

	assert_non_null(b);
	memset(b, ' ', n);
	b[0] = '{';
	return b;
}

/* Sends all of buf on the non-blocking fd within timeout_ms; false when the
 * peer is gone or it took longer. */
static bool tcp_send_all(int fd, const char *buf, size_t len, int timeout_ms)
{
	int64_t end = now_ms() + timeout_ms;

	while (len > 0 && now_ms() < end) {
		struct pollfd pw = {fd, POLLOUT, 0};
		ssize_t n;

		if (poll(&pw, 1, 50) <= 0)
			continue;
		n = send(fd, buf, len, MSG_NOSIGNAL);
		if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
			return false;
		if (n > 0) {
			buf += n;
			len -= (size_t)n;
		}
	}
	return len == 0;
}

/* Polls until the peer has closed fd (EOF or reset), draining what it sent;
 * false when it is still open after timeout_ms. */
static bool tcp_wait_closed(int fd, int timeout_ms)
{
	int64_t end = now_ms() + timeout_ms;

	do {
		struct pollfd pr = {fd, POLLIN, 0};

		if (poll(&pr, 1, 50) > 0 && tcp_closed(fd))
			return true;
	} while (now_ms() < end);
	return false;
}

#define CHUNK (64 * 1024)

/* A chunked body (no Content-Length) that passes the cap and then stalls,
 * the body never finished: the 413 comes at once, not when the client stops,
 * and the connection is closed. */
static void test_oversized_chunked_answered_at_once(void **state)
{
	struct it_org org;
	char head[512], size_line[32], *chunk, *answer;
	size_t sent = 0;
	int fd;
	int64_t stalled;

	(void)state;
	it_org_new(&org, 100);
	chunk = json_head_padded(CHUNK);
	fd = tcp_open(NULL, main_port());
	assert_true(fd >= 0);
	snprintf(head, sizeof(head),
		 "POST /v1/audiences HTTP/1.1\r\nHost: 127.0.0.1\r\nx-api-key: %s\r\n"
		 "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
		 org.key);
	assert_true(tcp_send_all(fd, head, strlen(head), 2000));
	snprintf(size_line, sizeof(size_line), "%x\r\n", CHUNK);
	/* The cap and 256 KiB more; a server that answers early may close its
	 * side before all of it is taken, which is fine. */
	while (sent < (size_t)MAX_BODY + 256 * 1024) {
		if (!tcp_send_all(fd, size_line, strlen(size_line), 5000) || !tcp_send_all(fd, chunk, CHUNK, 5000) ||
		    !tcp_send_all(fd, "\r\n", 2, 5000))
			break;
		sent += CHUNK;
		chunk[0] = ' ';
	}
	free(chunk);
	assert_true(sent > (size_t)MAX_BODY);
	stalled = now_ms();
	/* No last chunk: the client now holds the request open. */
	answer = tcp_read_answer(fd, 3000);
	if (strncmp(answer, "HTTP/1.1 413 ", 13) != 0)
		fail_msg("an oversized chunked body that was never finished got no 413 within %lld ms: %.200s",
			 (long long)(now_ms() - stalled), answer);
	expect_raw_error(answer, 413);
	if (strcasestr(answer, "\r\nConnection: close\r\n") == NULL)
		fail_msg("the 413 does not say Connection: close: %.200s", answer);
	free(answer);
	if (!tcp_wait_closed(fd, 3000))
		fail_msg("the connection is still open 3 s after its 413");
	close(fd);
	assert_int_equal(it_db_count("SELECT count(*) FROM audiences WHERE organization_id = $1", org.id, NULL), 0);
	expect_healthz(main_port(), NULL, "after an oversized chunked body");
}

/* A client that declares a body over the cap and sends it without waiting
 * (no "Expect: 100-continue") is not cut off mid-send: it reads its 413 and
 * then a clean end of the stream, not a reset, for the server takes and
 * drops the body before it closes. Nothing is created. */
static void test_oversized_declared_sent(void **state)
{
	struct it_org org;
	char head[512], *body, *answer, buf[4096];
	int fd;
	ssize_t n;
	int64_t end;
	bool closed = false;

	(void)state;
	it_org_new(&org, 100);
	body = json_head_padded(MAX_BODY + 1);
	fd = tcp_open(NULL, main_port());
	assert_true(fd >= 0);
	snprintf(head, sizeof(head),
		 "POST /v1/audiences HTTP/1.1\r\nHost: 127.0.0.1\r\nx-api-key: %s\r\n"
		 "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n",
		 org.key, MAX_BODY + 1);
	assert_true(tcp_send_all(fd, head, strlen(head), 2000));
	if (!tcp_send_all(fd, body, MAX_BODY + 1, 5000))
		fail_msg("the connection was cut while the declared body was being sent: %s", strerror(errno));
	free(body);
	answer = tcp_read_answer(fd, 3000);
	expect_raw_error(answer, 413);
	free(answer);
	/* then the end of the stream, within the linger */
	end = now_ms() + 3000;
	do {
		struct pollfd p = {fd, POLLIN, 0};

		if (poll(&p, 1, 50) <= 0)
			continue;
		n = recv(fd, buf, sizeof(buf), 0);
		closed = n == 0;
		if (n < 0 && errno != EAGAIN && errno != EINTR)
			fail_msg("the connection was reset after its 413, not closed: %s", strerror(errno));
	} while (!closed && now_ms() < end);
	if (!closed)
		fail_msg("the connection is still open 3 s after its 413 and the whole body");
	close(fd);
	assert_int_equal(it_db_count("SELECT count(*) FROM audiences WHERE organization_id = $1", org.id, NULL), 0);
	expect_healthz(main_port(), NULL, "after an oversized declared body");
}

/* A real client (libcurl) streaming a chunked body over the cap reads its
 * 413 and stops; nothing is created. */
static void test_oversized_chunked(void **state)
{
	struct it_org org;
	struct upload u = {5 * 1024 * 1024 + 7, false};
	struct curl_slist *hdrs = NULL;
	char url[256], key[128], *body = NULL;
	long status = 0;
	CURL *h = curl_easy_init();
	CURLcode rc;
	json_t *j;

	(void)state;
	it_org_new(&org, 100);
	snprintf(url, sizeof(url), "%s/v1/audiences", it_env("DIALER_API_URL"));
	snprintf(key, sizeof(key), "x-api-key: %s", org.key);
	hdrs = curl_slist_append(hdrs, key);
	hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
	hdrs = curl_slist_append(hdrs, "Transfer-Encoding: chunked");
	hdrs = curl_slist_append(hdrs, "Expect:");
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_POST, 1L);
	curl_easy_setopt(h, CURLOPT_READFUNCTION, upload_read);
	curl_easy_setopt(h, CURLOPT_READDATA, &u);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, collect);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, &body);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_TIMEOUT, 20L);
	rc = curl_easy_perform(h);
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
	curl_slist_free_all(hdrs);
	curl_easy_cleanup(h);
	if (rc != CURLE_OK)
		fail_msg("curl: %s (status %ld)", curl_easy_strerror(rc), status);
	assert_int_equal(status, 413);
	j = json_loads(body ? body : "", 0, NULL);
	assert_int_equal(json_integer_value(json_object_get(j, "statusCode")), 413);
	assert_true(json_is_string(json_object_get(j, "message")));
	json_decref(j);
	free(body);
	assert_int_equal(it_db_count("SELECT count(*) FROM audiences WHERE organization_id = $1", org.id, NULL), 0);

	/* At the cap exactly the body is read and handled; one byte more is a 413. */
	{
		char *big = malloc(MAX_BODY + 1);
		const char *json = "{\"name\":\"at the cap\"}";
		struct it_resp *r;

		assert_non_null(big);
		memset(big, ' ', MAX_BODY + 1);
		memcpy(big, json, strlen(json));
		r = it_call_raw("POST", "/v1/audiences", org.key, "application/json", big, MAX_BODY);
		it_expect(r, 201);
		it_resp_free(r);
		r = it_call_raw("POST", "/v1/audiences", org.key, "application/json", big, MAX_BODY + 1);
		it_expect(r, 413);
		it_resp_free(r);
		free(big);
	}
	assert_int_equal(it_db_count("SELECT count(*) FROM audiences WHERE organization_id = $1", org.id, NULL), 1);
}

/* ------------------------------------------------------------ flood */

#define FLOOD_REQUESTS 2000
#define FLOOD_POOL 32

/* 2,000 quick requests over 32 keep-alive connections from one address:
 * every one answered 200, /healthz under a second all along. */
static void test_flood_one_address(void **state)
{
	struct it_org org;
	CURLM *m = curl_multi_init();
	CURL *pool[FLOOD_POOL];
	struct curl_slist *hdrs = NULL;
	char url[256], key[128];
	int sent = 0, done = 0, running = 0, ok = 0, other = 0;
	long connects = 0;
	struct prober p;
	int64_t t0;

	(void)state;
	it_org_new(&org, 100);
	snprintf(url, sizeof(url), "%s/v1/flows?limit=5", it_env("DIALER_API_URL"));
	snprintf(key, sizeof(key), "x-api-key: %s", org.key);
	hdrs = curl_slist_append(hdrs, key);
	curl_multi_setopt(m, CURLMOPT_MAX_HOST_CONNECTIONS, (long)FLOOD_POOL);
	for (int i = 0; i < FLOOD_POOL; i++) {
		pool[i] = curl_easy_init();
		curl_easy_setopt(pool[i], CURLOPT_URL, url);
		curl_easy_setopt(pool[i], CURLOPT_HTTPHEADER, hdrs);
		curl_easy_setopt(pool[i], CURLOPT_WRITEFUNCTION, discard);
		curl_easy_setopt(pool[i], CURLOPT_NOSIGNAL, 1L);
		curl_easy_setopt(pool[i], CURLOPT_TIMEOUT, 20L);
		curl_multi_add_handle(m, pool[i]);
		sent++;
	}
	prober_start(&p, main_port());
	t0 = now_ms();
	while (done < FLOOD_REQUESTS && now_ms() - t0 < 25000) {
		CURLMsg *msg;
		int left;

		curl_multi_perform(m, &running);
		while ((msg = curl_multi_info_read(m, &left)) != NULL) {
			CURL *e = msg->easy_handle;
			long status = 0, n = 0;

			if (msg->msg != CURLMSG_DONE)
				continue;
			curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
			curl_easy_getinfo(e, CURLINFO_NUM_CONNECTS, &n);
			connects += n;
			if (msg->data.result == CURLE_OK && status == 200)
				ok++;
			else
				other++;
			done++;
			curl_multi_remove_handle(m, e);
			if (sent < FLOOD_REQUESTS) {
				curl_multi_add_handle(m, e); /* the same handle: its connection is kept alive */
				sent++;
			}
		}
		curl_multi_poll(m, NULL, 0, 100, NULL);
	}
	prober_stop(&p, "the flood");
	for (int i = 0; i < FLOOD_POOL; i++) {
		curl_multi_remove_handle(m, pool[i]);
		curl_easy_cleanup(pool[i]);
	}
	curl_multi_cleanup(m);
	curl_slist_free_all(hdrs);
	print_message("flood: %d requests in %lld ms over %ld connections; /healthz slowest %ld ms over %ld probes\n",
		      done, (long long)(now_ms() - t0), connects, p.slowest_ms, p.probes);
	if (done != FLOOD_REQUESTS || other != 0)
		fail_msg("flood: %d of %d done, %d not 200", done, FLOOD_REQUESTS, other);
	assert_int_equal(ok, FLOOD_REQUESTS);
	/* Keep-alive held: far fewer connections than requests. */
	assert_true(connects <= 2 * FLOOD_POOL);
	expect_healthz(main_port(), NULL, "after the flood");
}

/* ------------------------------------------------------------ rate limits */

/* Checks a 429: Retry-After of 1 to 60 s and the error shape. */
static void expect_429(const struct it_resp *r)
{
	char buf[32];
	long secs;

	it_expect(r, 429);
	if (it_header(r, "Retry-After", buf, sizeof(buf)) == NULL)
		fail_msg("429 without Retry-After");
	secs = atol(buf);
	if (secs < 1 || secs > 60)
		fail_msg("Retry-After %s", buf);
}

/* The bulk class holds at 10 a minute per key: the 11th is a 429 with
 * Retry-After and creates nothing; another key is not affected. */
static void test_bulk_rate_limit(void **state)
{
	struct it_org org;
	struct it_resp *r;
	int ok = 0, limited = 0;
	char *out, key2[64];
	int code;

	(void)state;
	it_org_new(&org, 100);
	for (int i = 0; i < 12; i++) {
		char phone[20];

		it_phone(phone, 1);
		r = it_callf("POST", "/v1/contacts/bulk", org.key, "{\"contacts\":[{\"phoneNumber\":\"%s\"}]}", phone);
		if (r->status == 200) {
			if (limited > 0)
				fail_msg("a bulk call passed after a 429 within the same second");
			ok++;
		} else {
			expect_429(r);
			limited++;
		}
		it_resp_free(r);
	}
	assert_int_equal(ok, 10);
	assert_int_equal(limited, 2);
	assert_int_equal(it_db_count("SELECT count(*) FROM contacts WHERE organization_id = $1", org.id, NULL), 10);
	/* The default class of the same key is its own bucket. */
	r = it_call("GET", "/v1/contacts", org.key, NULL, NULL);
	it_expect(r, 200);
	it_resp_free(r);
	/* Limits are per key. */
	out = it_ctl(&code, "apikey", "create", "--org", org.id, NULL);
	assert_int_equal(code, 0);
	{
		json_t *j = json_loads(out, 0, NULL);

		snprintf(key2, sizeof(key2), "%s", json_string_value(json_object_get(j, "apiKey")));
		json_decref(j);
	}
	free(out);
	r = it_call("POST", "/v1/contacts/bulk", key2, "{\"contacts\":[{\"phoneNumber\":\"+15550009999\"}]}", NULL);
	it_expect(r, 200);
	it_resp_free(r);
}

/* The default class at 60 a minute (the private API): the 61st quick call
 * is a 429; /healthz is not limited. */
static void test_default_rate_limit(void **state)
{
	struct it_org org;
	char path[128];
	int ok = 0, limited = 0;

	(void)state;
	it_org_new(&org, 100);
	snprintf(path, sizeof(path), "http://127.0.0.1:%d/v1/flows", private_port);
	for (int i = 0; i < PRIVATE_RATE + 5; i++) {
		struct it_resp *r = it_call("GET", path, org.key, NULL, NULL);

		if (r->status == 200) {
			ok++;
		} else {
			expect_429(r);
			limited++;
		}
		it_resp_free(r);
	}
	/* The bucket refills one call a second: a slow run may earn one or two more. */
	if (ok < PRIVATE_RATE || ok > PRIVATE_RATE + 2 || limited < 3)
		fail_msg("%d calls passed and %d were limited at %d a minute", ok, limited, PRIVATE_RATE);
	for (int i = 0; i < 5; i++)
		expect_healthz(private_port, NULL, "with the key rate-limited");
}

/* ------------------------------------------------------------ connections per address */

/* Opens n idle connections to port from 127.0.0.1 and checks that the server
 * closes all but per_ip of them, keeps serving another address meanwhile, and
 * serves this one again once they are closed. */
static void per_ip_limit(int port, int per_ip, int n, pid_t pid)
{
	int *fds = calloc((size_t)n, sizeof(int)), refused = 0, open_count = 0;
	long over_limit_ms, other_ms;
	int64_t deadline;

	assert_non_null(fds);
	for (int i = 0; i < n; i++)
		fds[i] = tcp_open("127.0.0.1", port);
	/* The extra ones are accepted and closed at once. */
	deadline = now_ms() + 1500;
	do {
		sleep_ms(100);
		refused = open_count = 0;
		for (int i = 0; i < n; i++) {
			if (fds[i] >= 0 && tcp_closed(fds[i])) {
				close(fds[i]);
				fds[i] = -1;
			}
			if (fds[i] < 0)
				refused++;
			else
				open_count++;
		}
	} while (refused < n - per_ip && now_ms() < deadline);
	/* This address is full; another one is served at once. */
	over_limit_ms = healthz_ms(port, "127.0.0.1");
	other_ms = healthz_ms(port, "127.0.0.2");
	for (int i = 0; i < n; i++)
		if (fds[i] >= 0)
			close(fds[i]);
	free(fds);
	print_message("per-address limit %d on :%d: %d of %d connections refused\n", per_ip, port, refused, n);
	if (open_count > per_ip || refused < n - per_ip)
		fail_msg("%d connections held from one address (limit %d), %d refused", open_count, per_ip, refused);
	if (over_limit_ms >= 0 && open_count == per_ip)
		fail_msg("a connection over the per-address limit was served");
	if (other_ms < 0 || other_ms > HEALTHZ_MAX_MS)
		fail_msg("/healthz from 127.0.0.2 while 127.0.0.1 held its limit: %ld ms", other_ms);
	/* Closed: the address is served again, and the server is alive. */
	deadline = now_ms() + 3000;
	while (healthz_ms(port, "127.0.0.1") < 0 && now_ms() < deadline)
		sleep_ms(100);
	expect_healthz(port, "127.0.0.1", "after the connections closed");
	assert_int_equal(kill(pid, 0), 0);
}

static void test_per_ip_limit_private(void **state)
{
	(void)state;
	per_ip_limit(private_port, PRIVATE_PER_IP, PRIVATE_PER_IP + 36, private_pid);
}

static void test_per_ip_limit_main(void **state)
{
	(void)state;
	per_ip_limit(main_port(), MAIN_PER_IP, MAIN_PER_IP + 44, it_service_pid("dialer-api"));
	/* And it still does real work. */
	{
		struct it_org org;
		struct it_resp *r;

		it_org_new(&org, 100);
		r = it_call("POST", "/v1/audiences", org.key, "{\"name\":\"after the storm\"}", NULL);
		it_expect(r, 201);
		it_resp_free(r);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_slowloris_closed_by_deadline),
		cmocka_unit_test(test_keepalive_not_cut),
		cmocka_unit_test(test_slowloris_main_api),
		cmocka_unit_test(test_slowloris_health_listeners),
		cmocka_unit_test(test_oversized_declared),
		cmocka_unit_test(test_oversized_declared_sent),
		cmocka_unit_test(test_oversized_chunked_answered_at_once),
		cmocka_unit_test(test_oversized_chunked),
		cmocka_unit_test(test_flood_one_address),
		cmocka_unit_test(test_bulk_rate_limit),
		cmocka_unit_test(test_default_rate_limit),
		cmocka_unit_test(test_per_ip_limit_private),
		cmocka_unit_test(test_per_ip_limit_main),
	};

	return cmocka_run_group_tests_name("abuse", tests, group_setup, group_teardown);
}
