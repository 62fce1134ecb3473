/* Keep-alive HTTP/1.1 load for benchmarks/bench_l7.py (compiled there with the machine's cc). In C on both ends,
 * so that what the benchmark sees is the path between them (datapath, and HAProxy when the port has L7 rules),
 * not a Python client and server sharing one interpreter.
 *
 *   httpload server PORT           thread per connection; every request (headers only) gets the same
 *                                  200 with a small JSON body, kept alive; prints "ready" once it listens
 *   httpload client IP PORT SECONDS CONNS PATH
 *                                  CONNS kept-alive connections, one thread each, one request in flight per
 *                                  connection (GET PATH, Host: deathstar); prints
 *                                  "requests N errors E rps R p50_us P p99_us Q"
 * A response other than 200, or a closed connection, counts as an error (the connection is opened again). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_SAMPLES 4000000

static const char RESPONSE[] = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 16\r\n\r\n"
			       "{\"status\":\"ok\"}\n";
static struct sockaddr_in peer;
static double deadline;
static char request[512];
static int listen_fd;

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void *serve(void *arg)
{
	int c = (int)(long)arg;
	char buf[16384];
	size_t have = 0;
	ssize_t n;

	while ((n = recv(c, buf + have, sizeof(buf) - have - 1, 0)) > 0) {
		char *end;
		have += n;
		buf[have] = 0;
		while ((end = strstr(buf, "\r\n\r\n")) != NULL) {     /* one response per complete request head */
			size_t used = end + 4 - buf;
			if (send(c, RESPONSE, sizeof(RESPONSE) - 1, MSG_NOSIGNAL) != sizeof(RESPONSE) - 1)
				goto out;
			memmove(buf, buf + used, have - used);
			have -= used;
			buf[have] = 0;
		}
		if (have >= sizeof(buf) - 1)
			break;
	}
out:
	close(c);
	return NULL;
}

static void *acceptor(void *arg)
{
	(void)arg;
	for (;;) {
		int c = accept(listen_fd, NULL, NULL);
		int one = 1;
		pthread_t t;

		if (c < 0)
			continue;
		setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		pthread_create(&t, NULL, serve, (void *)(long)c);
		pthread_detach(t);
	}
	return NULL;
}

struct worker {
	pthread_t t;
	long done, errors, n;
	float *lat_us;
};

static int dial(void)
{
	int s = socket(AF_INET, SOCK_STREAM, 0);
	int one = 1;

	setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(s, (struct sockaddr *)&peer, sizeof(peer)) < 0) {
		close(s);
		return -1;
	}
	return s;
}

/* one response: the head, then Content-Length bytes of body; returns the status, -1 on a closed connection */
static int read_response(int s, char *buf, size_t size)
{
	size_t have = 0;
	char *end = NULL, *cl;
	long body = 0;
	ssize_t n;

	for (;;) {
		n = recv(s, buf + have, size - have - 1, 0);
		if (n <= 0)
			return -1;
		have += n;
		buf[have] = 0;
		if (!end && (end = strstr(buf, "\r\n\r\n")) != NULL) {
			cl = strcasestr(buf, "\r\ncontent-length:");
			body = cl && cl < end ? strtol(cl + 17, NULL, 10) : 0;
		}
		if (end && have >= (size_t)(end + 4 - buf) + body)
			return atoi(buf + 9);
		if (have >= size - 1)
			return -1;
	}
}

static void *client(void *arg)
{
	struct worker *w = arg;
	size_t len = strlen(request);
	char buf[65536];
	int s = dial();

	while (now() < deadline) {
		double t0;
		int status;

		if (s < 0) {
			w->errors++;
			usleep(1000);
			s = dial();
			continue;
		}
		t0 = now();
		if (send(s, request, len, MSG_NOSIGNAL) != (ssize_t)len)
			status = -1;
		else
			status = read_response(s, buf, sizeof(buf));
		if (status != 200) {
			w->errors++;
			close(s);
			s = dial();
			continue;
		}
		w->done++;
		if (w->n < MAX_SAMPLES)
			w->lat_us[w->n++] = (float)((now() - t0) * 1e6);
	}
	if (s >= 0)
		close(s);
	return NULL;
}

static int cmp(const void *a, const void *b)
{
	float x = *(const float *)a, y = *(const float *)b;
	return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
	if (argc == 3 && !strcmp(argv[1], "server")) {
		struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
		int one = 1;
		pthread_t t;

		listen_fd = socket(AF_INET, SOCK_STREAM, 0);
		setsockopt(listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(listen_fd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(listen_fd, 1024) < 0) {
			perror("listen");
			return 1;
		}
		pthread_create(&t, NULL, acceptor, NULL);
		printf("ready\n");
		fflush(stdout);
		pthread_join(t, NULL);
		return 0;
	}
	if (argc == 7 && !strcmp(argv[1], "client")) {
		int conns = atoi(argv[5]);
		double secs = atof(argv[4]);
		struct worker *w = calloc(conns, sizeof(*w));
		long done = 0, errors = 0, n = 0;
		float *all;

		peer.sin_family = AF_INET;
		peer.sin_port = htons(atoi(argv[3]));
		inet_pton(AF_INET, argv[2], &peer.sin_addr);
		snprintf(request, sizeof(request), "GET %s HTTP/1.1\r\nHost: deathstar\r\nUser-Agent: httpload\r\n\r\n",
			 argv[6]);
		deadline = now() + secs;
		for (int i = 0; i < conns; i++) {
			w[i].lat_us = malloc(sizeof(float) * MAX_SAMPLES);
			pthread_create(&w[i].t, NULL, client, &w[i]);
		}
		for (int i = 0; i < conns; i++) {
			pthread_join(w[i].t, NULL);
			done += w[i].done;
			errors += w[i].errors;
			n += w[i].n;
		}
		all = malloc(sizeof(float) * (n ? n : 1));
		n = 0;
		for (int i = 0; i < conns; i++) {
			memcpy(all + n, w[i].lat_us, sizeof(float) * w[i].n);
			n += w[i].n;
		}
		qsort(all, n, sizeof(float), cmp);
		printf("requests %ld errors %ld rps %.0f p50_us %.1f p99_us %.1f\n", done, errors, done / secs,
		       n ? all[n / 2] : 0.0, n ? all[(long)(n * 0.99)] : 0.0);
		return 0;
	}
	fprintf(stderr, "usage: httpload server PORT | client IP PORT SECONDS CONNS PATH\n");
	return 2;
}
