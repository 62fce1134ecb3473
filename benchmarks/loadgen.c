/* A TCP load generator for the connection benchmarks (benchmarks/bench_connections.py compiles it with the
 * machine's cc at benchmark time). In C, so that the network path and not the sender is what is measured.
 *
 *   loadgen server PORT THREADS          echo server: each thread accepts and answers until the peer closes
 *   loadgen crr IP PORT SECONDS THREADS  new connection per transaction: connect, 1-byte request, 1-byte
 *                                        response, close; prints transactions/s. PORT may be a range LO-HI:
 *                                        the connections go round robin over its ports
 *   loadgen rr IP PORT SECONDS THREADS   one kept-alive connection per thread, 1-byte request/response;
 *                                        prints transactions/s
 * crr also writes to stderr how many connections failed and how many needed a retransmission (TCP_INFO's
 * tcpi_total_retrans: a lost SYN or SYN-ACK shows there, without timing anything).
 * The server prints "ready" once it listens. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static struct sockaddr_in peer;
static int port_lo, port_n = 1;   /* crr: PORT or LO-HI, connections spread round robin over the range */
static int next_thread;
static double deadline;
static int listen_fd;
static long failed, retransmitted;

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void *serve(void *arg)
{
	(void)arg;
	for (;;) {
		int c = accept(listen_fd, NULL, NULL);
		char buf[64];
		ssize_t n;

		if (c < 0)
			continue;
		int one = 1;
		setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		while ((n = recv(c, buf, sizeof(buf), 0)) > 0)
			if (send(c, buf, n, MSG_NOSIGNAL) != n)
				break;
		close(c);
	}
	return NULL;
}

static void *crr(void *arg)
{
	long done = 0;
	char b = 'x';
	struct sockaddr_in to = peer;
	int k = __sync_fetch_and_add(&next_thread, 1);

	while (now() < deadline) {
		int s = socket(AF_INET, SOCK_STREAM, 0);
		int one = 1;
		if (s < 0)
			continue;
		to.sin_port = htons(port_lo + k++ % port_n);
		setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		if (connect(s, (struct sockaddr *)&to, sizeof(to)) == 0 && send(s, &b, 1, MSG_NOSIGNAL) == 1 &&
		    recv(s, &b, 1, 0) == 1) {
			struct tcp_info ti;
			socklen_t len = sizeof(ti);

			done++;
			if (!getsockopt(s, IPPROTO_TCP, TCP_INFO, &ti, &len) && ti.tcpi_total_retrans)
				__sync_fetch_and_add(&retransmitted, 1);
		} else {
			__sync_fetch_and_add(&failed, 1);
		}
		close(s);
	}
	*(long *)arg = done;
	return NULL;
}

static void *rr(void *arg)
{
	long done = 0;
	char b = 'x';
	int s = socket(AF_INET, SOCK_STREAM, 0);
	int one = 1;

	setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(s, (struct sockaddr *)&peer, sizeof(peer)) == 0) {
		while (now() < deadline) {
			if (send(s, &b, 1, MSG_NOSIGNAL) != 1 || recv(s, &b, 1, 0) != 1)
				break;
			done++;
		}
	}
	close(s);
	*(long *)arg = done;
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc == 4 && !strcmp(argv[1], "server")) {
		struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(atoi(argv[2])) };
		int threads = atoi(argv[3]), one = 1;
		pthread_t t;

		listen_fd = socket(AF_INET, SOCK_STREAM, 0);
		setsockopt(listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(listen_fd, (struct sockaddr *)&a, sizeof(a)) || listen(listen_fd, 4096)) {
			perror("listen");
			return 1;
		}
		for (int i = 1; i < threads; i++)
			pthread_create(&t, NULL, serve, NULL);
		printf("ready\n");
		fflush(stdout);
		serve(NULL);
		return 0;
	}
	if (argc == 6 && (!strcmp(argv[1], "crr") || !strcmp(argv[1], "rr"))) {
		int threads = atoi(argv[5]);
		pthread_t t[256];
		long done[256];
		long total = 0;
		double t0, secs = atof(argv[4]);

		if (threads < 1 || threads > 256)
			return 2;
		peer.sin_family = AF_INET;
		char *dash = strchr(argv[3], '-');
		port_lo = atoi(argv[3]);
		if (dash)
			port_n = atoi(dash + 1) - port_lo + 1;
		if (port_lo < 1 || port_n < 1 || port_lo + port_n > 65536)
			return 2;
		peer.sin_port = htons(port_lo);
		inet_pton(AF_INET, argv[2], &peer.sin_addr);
		t0 = now();
		deadline = t0 + secs;
		for (int i = 0; i < threads; i++)
			pthread_create(&t[i], NULL, argv[1][0] == 'c' ? crr : rr, &done[i]);
		for (int i = 0; i < threads; i++) {
			pthread_join(t[i], NULL);
			total += done[i];
		}
		printf("%.1f\n", total / (now() - t0));
		if (argv[1][0] == 'c')
			fprintf(stderr, "connections %ld failed %ld retransmitted %ld\n", total + failed, failed,
				retransmitted);
		return 0;
	}
	fprintf(stderr, "usage: loadgen server PORT THREADS | crr|rr IP PORT SECONDS THREADS\n");
	return 2;
}
