/*
 * The TCP transport against its interface (lib/transport.h), with 1 to 3 forked ranks on
 * 127.0.0.1 and a file-backed fake rendezvous. Every rank runs in a child process that the
 * parent kills when it overruns its time. The cases every transport passes are
 * tests/tp/tp_suite.c's.
 */
#define _GNU_SOURCE
#include <CUnit/Basic.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "ibc.h"
#include "tcp.h"
#include "fake_rdv.h"
#include "tp_suite.h"
#include "wire.h"
#include "../cunit_main.h"

static const char *g_root = "127.0.0.1:0"; /* the rendezvous address the ranks are given */

static ibc_deadline_t in_ms(long ms)
{
	return ibc_deadline(ms);
}

/* IBCOMM_TCP_CHUNK / IBCOMM_TCP_SLOTS (0: the default) as config.c would have read them */
static void tcp_setup(struct ibcomm *comm, unsigned long chunk, unsigned long slots)
{
	comm->set.tcp_chunk = chunk;
	comm->set.tcp_slots = slots;
	comm->set.tcp_spin_us = IBC_DEFAULT_TCP_SPIN_US;
	snprintf(comm->set.root, sizeof(comm->set.root), "%s", g_root);
}

/* ---- order and tags (tests/tp/tp_suite.c) ---- */

static void test_order_2(void)
{
	CU_ASSERT_EQUAL(tp_run_ranks(2, tp_fn_order, 0, 60, 4096, 4), 0);
}

static void test_order_ipv6(void)
{
	int fd = socket(AF_INET6, SOCK_STREAM, 0);
	struct sockaddr_in6 a = { .sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT };
	bool have = fd >= 0 && !bind(fd, (struct sockaddr *)&a, sizeof(a));

	if (fd >= 0)
		close(fd);
	if (!have) {
		cm_skip("no IPv6 loopback");
		return;
	}
	g_root = "[::1]:0";
	CU_ASSERT_EQUAL(tp_run_ranks(2, tp_fn_order, 0, 60, 4096, 4), 0);
	g_root = "127.0.0.1:0";
}

static void test_order_3(void)
{
	CU_ASSERT_EQUAL(tp_run_ranks(3, tp_fn_order, 0, 60, 4096, 4), 0);
}

/* ---- credits (tests/tp/tp_suite.c) ---- */

static void test_credit(void)
{
	CU_ASSERT_EQUAL(tp_run_ranks(2, tp_fn_credit, 0, 30, 0, 2), 0);
}

/* ---- large transfers both ways at once, blocking put then get: no deadlock ---- */

#define BIG_BYTES (64u << 20)

static uint64_t word(int src, size_t j)
{
	return ((uint64_t)src << 56) ^ (j * 0x9E3779B97F4A7C15ull);
}

static int fn_bidir(struct ibcomm *comm, ibc_tp_t *tp)
{
	int peer = 1 - comm->rank;
	size_t max = tp->max_chunk, words = max / 8, n = BIG_BYTES / max;
	uint64_t *src = malloc(BIG_BYTES), *dst = malloc(BIG_BYTES);
	ibc_deadline_t dl = in_ms(40000);

	CHECK(src && dst && max == IBC_TCP_DEFAULT_CHUNK);
	for (size_t j = 0; j < BIG_BYTES / 8; j++)
		src[j] = word(comm->rank, j);
	for (size_t i = 0; i < n; i++) {
		ibc_chunk_t c;

		CHECK(ibc_put(tp, peer, IBC_CHAN_COLL, (uint32_t)i, src + i * words, max, true, dl) == IBCOMM_OK);
		CHECK(ibc_get(tp, peer, IBC_CHAN_COLL, &c, true, dl) == IBCOMM_OK);
		CHECK(c.tag == i && c.len == max);
		memcpy(dst + i * words, c.data, max);
		CHECK(ibc_release(tp, &c) == IBCOMM_OK);
	}
	for (size_t j = 0; j < BIG_BYTES / 8; j++)
		CHECK(dst[j] == word(peer, j));
	CHECK(tp->cnt.bytes_put == BIG_BYTES && tp->cnt.bytes_got == BIG_BYTES);
	free(src);
	free(dst);
	return 0;
}

static void test_bidir(void)
{
	CU_ASSERT_EQUAL(tp_run_ranks(2, fn_bidir, 0, 60, 0, 0), 0);
}

/* ---- streaming: several chunks in flight; throughput ---- */

#define STREAM_BYTES (256u << 20)

static int fn_stream(struct ibcomm *comm, ibc_tp_t *tp)
{
	size_t max = tp->max_chunk, n = STREAM_BYTES / max;
	ibc_deadline_t dl = in_ms(40000);
	ibc_chunk_t c;

	if (comm->rank == 0) {
		uint8_t *buf = malloc(max);

		CHECK(buf);
		memset(buf, 0x5a, max);
		CHECK(ibc_put(tp, 1, IBC_CHAN_COLL, 0, buf, 1, true, dl) == IBCOMM_OK);
		CHECK(ibc_get(tp, 1, IBC_CHAN_COLL, &c, true, dl) == IBCOMM_OK); /* ready */
		CHECK(ibc_release(tp, &c) == IBCOMM_OK);
		for (size_t i = 0; i < n; i++) {
			buf[0] = (uint8_t)i;
			CHECK(ibc_put(tp, 1, IBC_CHAN_COLL, (uint32_t)i, buf, max, true, dl) == IBCOMM_OK);
		}
		CHECK(ibc_get(tp, 1, IBC_CHAN_COLL, &c, true, dl) == IBCOMM_OK); /* done */
		CHECK(ibc_release(tp, &c) == IBCOMM_OK);
		printf("\n    rank 0: %u chunks max in flight (of %u), %llu credit waits\n", tp->cnt.max_inflight,
		       tp->nslots, (unsigned long long)tp->cnt.credit_waits);
		CHECK(tp->cnt.max_inflight >= 2 && tp->cnt.max_inflight <= tp->nslots);
		free(buf);
	} else {
		double t0, s;

		CHECK(ibc_get(tp, 0, IBC_CHAN_COLL, &c, true, dl) == IBCOMM_OK);
		CHECK(ibc_release(tp, &c) == IBCOMM_OK);
		CHECK(ibc_put(tp, 0, IBC_CHAN_COLL, 0, NULL, 0, true, dl) == IBCOMM_OK);
		t0 = now_s();
		for (size_t i = 0; i < n; i++) {
			CHECK(ibc_get(tp, 0, IBC_CHAN_COLL, &c, true, dl) == IBCOMM_OK);
			CHECK(c.tag == i && c.len == max && ((uint8_t *)c.data)[0] == (uint8_t)i &&
			      ((uint8_t *)c.data)[max - 1] == 0x5a);
			CHECK(ibc_release(tp, &c) == IBCOMM_OK);
		}
		s = now_s() - t0;
		printf("\n    TCP loopback, one direction: %u MiB in %.3f s = %.2f GB/s (chunk %zu, %u slots)\n",
		       STREAM_BYTES >> 20, s, s > 0 ? STREAM_BYTES / s / 1e9 : 0.0, max, tp->nslots);
		CHECK(ibc_put(tp, 0, IBC_CHAN_COLL, 0, NULL, 0, true, dl) == IBCOMM_OK);
	}
	return 0;
}

static void test_stream(void)
{
	CU_ASSERT_EQUAL(tp_run_ranks(2, fn_stream, 0, 60, 0, 0), 0);
}

/* ---- a killed peer ---- */

static int fn_killed(struct ibcomm *comm, ibc_tp_t *tp)
{
	int victim = comm->size - 1;
	ibc_deadline_t dl = in_ms(10000);
	char msg[64];
	ibc_chunk_t c;

	if (comm->rank == victim) {
		for (int p = 0; p < victim; p++)
			CHECK(ibc_put(tp, p, IBC_CHAN_COLL, 7, "bye", 3, true, dl) == IBCOMM_OK);
		for (int p = 0; p < victim; p++)
			CHECK(ibc_get(tp, p, IBC_CHAN_COLL, &c, true, dl) == IBCOMM_OK);
		kill(getpid(), SIGKILL);
		pause();
	}
	CHECK(ibc_put(tp, victim, IBC_CHAN_COLL, 1, "hi", 2, true, dl) == IBCOMM_OK);
	CHECK(ibc_get(tp, victim, IBC_CHAN_COLL, &c, true, dl) == IBCOMM_OK && c.tag == 7 && c.len == 3);
	CHECK(ibc_release(tp, &c) == IBCOMM_OK);
	CHECK(ibc_get(tp, victim, IBC_CHAN_COLL, &c, true, dl) == IBCOMM_ERR_PEER);
	snprintf(msg, sizeof(msg), "rank %d: peer rank %d closed", comm->rank, victim);
	CHECK(strstr(comm->err, msg));
	CHECK(ibc_get(tp, victim, IBC_CHAN_P2P, &c, false, dl) == IBCOMM_ERR_PEER);
	CHECK(ibc_put(tp, victim, IBC_CHAN_COLL, 2, "hi", 2, true, dl) == IBCOMM_ERR_PEER);
	snprintf(msg, sizeof(msg), "peer rank %d", victim);
	CHECK(strstr(comm->err, msg));
	if (comm->size == 3) {
		/* the others still talk */
		int other = 1 - comm->rank;

		CHECK(ibc_put(tp, other, IBC_CHAN_P2P, 5, "ok", 2, true, dl) == IBCOMM_OK);
		CHECK(ibc_get(tp, other, IBC_CHAN_P2P, &c, true, dl) == IBCOMM_OK && c.tag == 5);
		CHECK(ibc_release(tp, &c) == IBCOMM_OK);
	}
	return 0;
}

static void test_killed_2(void)
{
	CU_ASSERT_EQUAL(tp_run_ranks(2, fn_killed, 1u << 1, 30, 0, 0), 0);
}

static void test_killed_3(void)
{
	CU_ASSERT_EQUAL(tp_run_ranks(3, fn_killed, 1u << 2, 30, 0, 0), 0);
}

/* A writer blocked waiting for credits learns that its reader died. */
static int fn_killed_writer(struct ibcomm *comm, ibc_tp_t *tp)
{
	ibc_deadline_t dl = in_ms(10000);
	static uint8_t buf[IBC_TCP_DEFAULT_CHUNK];
	ibc_chunk_t c;
	int rc;

	if (comm->rank == 1) {
		CHECK(ibc_get(tp, 0, IBC_CHAN_COLL, &c, true, dl) == IBCOMM_OK);
		poll(NULL, 0, 200); /* rank 0 fills the slots and blocks */
		kill(getpid(), SIGKILL);
		pause();
	}
	for (int i = 0; i < 100; i++) {
		rc = ibc_put(tp, 1, IBC_CHAN_COLL, (uint32_t)i, buf, sizeof(buf), true, dl);
		if (rc)
			break;
	}
	CHECK(rc == IBCOMM_ERR_PEER);
	CHECK(strstr(comm->err, "rank 0: peer rank 1"));
	CHECK(ibc_get(tp, 1, IBC_CHAN_COLL, &c, true, dl) == IBCOMM_ERR_PEER);
	return 0;
}

static void test_killed_writer(void)
{
	CU_ASSERT_EQUAL(tp_run_ranks(2, fn_killed_writer, 1u << 1, 30, 0, 0), 0);
}

/* ---- deadlines ---- */

static int fn_deadline(struct ibcomm *comm, ibc_tp_t *tp)
{
	ibc_deadline_t dl = in_ms(10000);
	uint64_t t0, ms;
	ibc_chunk_t c;

	if (comm->rank == 1) {
		CHECK(ibc_get(tp, 0, IBC_CHAN_P2P, &c, true, dl) == IBCOMM_OK);
		return 0;
	}
	t0 = ibc_now_ms();
	CHECK(ibc_get(tp, 1, IBC_CHAN_COLL, &c, true, in_ms(300)) == IBCOMM_ERR_TIMEOUT);
	ms = ibc_now_ms() - t0;
	CHECK(ms >= 290 && ms < 3000);
	CHECK(strstr(comm->err, "rank 0: timed out") && strstr(comm->err, "peer rank 1"));
	CHECK(ibc_wait(tp, in_ms(100)) == IBCOMM_ERR_TIMEOUT);
	for (unsigned i = 0; i < tp->nslots; i++)
		CHECK(ibc_put(tp, 1, IBC_CHAN_COLL, i, "x", 1, true, dl) == IBCOMM_OK);
	t0 = ibc_now_ms();
	CHECK(ibc_put(tp, 1, IBC_CHAN_COLL, 9, "x", 1, true, in_ms(200)) == IBCOMM_ERR_TIMEOUT);
	CHECK(ibc_now_ms() - t0 >= 190);
	CHECK(strstr(comm->err, "rank 0: timed out") && strstr(comm->err, "peer rank 1"));
	CHECK(ibc_put(tp, 1, IBC_CHAN_P2P, 0, "done", 4, true, dl) == IBCOMM_OK);
	return 0;
}

static void test_deadline(void)
{
	CU_ASSERT_EQUAL(tp_run_ranks(2, fn_deadline, 0, 30, 0, 0), 0);
}

/* ---- abort from a signal handler wakes a wait ---- */

static ibc_tp_t *g_tp;

static void on_alarm(int sig)
{
	(void)sig;
	atomic_store(&g_comm->aborted, 1);
	g_tp->ops->interrupt(g_tp);
}

static int fn_abort(struct ibcomm *comm, ibc_tp_t *tp)
{
	struct itimerval it = { .it_value = { .tv_usec = 100000 } };
	ibc_chunk_t c;

	g_tp = tp;
	signal(SIGALRM, on_alarm);
	CHECK(setitimer(ITIMER_REAL, &it, NULL) == 0);
	CHECK(ibc_wait(tp, 0) == IBCOMM_ERR_ABORTED);
	CHECK(ibc_get(tp, 0, IBC_CHAN_COLL, &c, true, 0) == IBCOMM_ERR_ABORTED);
	CHECK(ibc_put(tp, 0, IBC_CHAN_COLL, 0, "x", 1, true, 0) == IBCOMM_ERR_ABORTED);
	return 0;
}

static void test_abort(void)
{
	CU_ASSERT_EQUAL(tp_run_ranks(1, fn_abort, 0, 10, 0, 0), 0);
}

/* ---- garbage connections are dropped without harm ---- */

static int raw_connect(struct ibcomm *comm, int rank)
{
	char key[128], addr[128], host[64], err[128];
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV };
	struct addrinfo *ai;
	struct timeval tv = { .tv_sec = 5 };
	size_t len;
	char *colon;
	int fd;

	snprintf(key, sizeof(key), "%s/tcp/%d", comm->id, rank);
	if (ibc_boot_get(comm->boot, key, addr, sizeof(addr) - 1, &len, in_ms(5000), NULL, err, sizeof(err)))
		return -1;
	addr[IBC_MIN(len, sizeof(addr) - 1)] = '\0';
	colon = strrchr(addr, ':');
	snprintf(host, sizeof(host), "%.*s", (int)(colon - addr), addr);
	if (getaddrinfo(host, colon + 1, &hints, &ai))
		return -1;
	fd = socket(ai->ai_family, SOCK_STREAM, 0);
	if (fd >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen)) {
		close(fd);
		fd = -1;
	}
	freeaddrinfo(ai);
	if (fd >= 0)
		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	return fd;
}

static size_t frame(uint8_t *b, size_t cap, uint8_t version, uint8_t type, uint8_t chan, uint32_t len,
		    uint32_t credits)
{
	ibc_wbuf_t w = ibc_wbuf(b, cap);

	ibc_w_u8(&w, version);
	ibc_w_u8(&w, type);
	ibc_w_u8(&w, chan);
	ibc_w_u8(&w, 0);
	ibc_w_u32(&w, 0);
	ibc_w_u32(&w, len);
	ibc_w_u32(&w, credits);
	return w.len;
}

static size_t hello(uint8_t *b, size_t cap, const char *id, uint32_t rank, uint32_t size, uint32_t chunk)
{
	size_t idlen = strlen(id), n = frame(b, cap, IBC_TCP_VERSION, IBC_TCP_HELLO, 0, 21 + (uint32_t)idlen, 0);
	ibc_wbuf_t w = ibc_wbuf(b + n, cap - n);

	ibc_w_u32(&w, IBC_TCP_MAGIC);
	ibc_w_u32(&w, rank);
	ibc_w_u32(&w, size);
	ibc_w_u32(&w, chunk);
	ibc_w_u32(&w, IBC_TCP_DEFAULT_SLOTS);
	ibc_w_u8(&w, (uint8_t)idlen);
	ibc_w_bytes(&w, id, idlen);
	return n + w.len;
}

/* Sends bytes on a fresh connection to rank and expects the rank to close it. */
static int expect_dropped(struct ibcomm *comm, int rank, const void *bytes, size_t len, bool half_close)
{
	int fd = raw_connect(comm, rank);
	char b[64];
	ssize_t n;

	if (fd < 0)
		return 0;
	if (len && send(fd, bytes, len, MSG_NOSIGNAL) != (ssize_t)len) {
		close(fd);
		return 0;
	}
	if (half_close)
		shutdown(fd, SHUT_WR);
	do
		n = recv(fd, b, sizeof(b), 0);
	while (n > 0);
	close(fd);
	return n == 0 || (n < 0 && errno == ECONNRESET);
}

static int fn_garbage(struct ibcomm *comm, ibc_tp_t *tp)
{
	ibc_deadline_t dl = in_ms(15000);
	static const char http[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
	uint8_t b[256];
	ibc_chunk_t c;
	size_t n;

	if (comm->rank == 1) {
		/* serves everything while it waits */
		CHECK(ibc_get(tp, 0, IBC_CHAN_COLL, &c, true, dl) == IBCOMM_OK && c.tag == 0);
		CHECK(ibc_release(tp, &c) == IBCOMM_OK);
		CHECK(ibc_put(tp, 0, IBC_CHAN_COLL, 1, NULL, 0, true, dl) == IBCOMM_OK);
		CHECK(ibc_get(tp, 0, IBC_CHAN_COLL, &c, true, dl) == IBCOMM_OK && c.tag == 2 && c.len == 5);
		CHECK(!memcmp(c.data, "after", 5));
		CHECK(ibc_release(tp, &c) == IBCOMM_OK);
		CHECK(ibc_put(tp, 0, IBC_CHAN_COLL, 3, "fine", 4, true, dl) == IBCOMM_OK);
		return 0;
	}
	CHECK(ibc_put(tp, 1, IBC_CHAN_COLL, 0, NULL, 0, true, dl) == IBCOMM_OK);
	CHECK(ibc_get(tp, 1, IBC_CHAN_COLL, &c, true, dl) == IBCOMM_OK && c.tag == 1);
	CHECK(ibc_release(tp, &c) == IBCOMM_OK);

	CHECK(expect_dropped(comm, 1, http, sizeof(http) - 1, false));
	CHECK(expect_dropped(comm, 1, NULL, 0, true));
	n = frame(b, sizeof(b), 9, IBC_TCP_HELLO, 0, 30, 0);
	CHECK(expect_dropped(comm, 1, b, n, false));
	n = frame(b, sizeof(b), IBC_TCP_VERSION, IBC_TCP_DATA, 0, 30, 0);
	CHECK(expect_dropped(comm, 1, b, n, false));
	n = frame(b, sizeof(b), IBC_TCP_VERSION, IBC_TCP_HELLO, 0, 100000, 0);
	CHECK(expect_dropped(comm, 1, b, n, false));
	n = hello(b, sizeof(b), "someone-else", 0, 2, IBC_TCP_DEFAULT_CHUNK);
	CHECK(expect_dropped(comm, 1, b, n, false));
	n = hello(b, sizeof(b), comm->id, 5, 2, IBC_TCP_DEFAULT_CHUNK);
	CHECK(expect_dropped(comm, 1, b, n, false));
	n = hello(b, sizeof(b), comm->id, 0, 2, 1000);
	CHECK(expect_dropped(comm, 1, b, n, false));
	n = hello(b, sizeof(b), comm->id, 0, 2, IBC_TCP_DEFAULT_CHUNK); /* rank 0 is connected already */
	CHECK(expect_dropped(comm, 1, b, n, false));
	n = hello(b, sizeof(b), comm->id, 0, 2, IBC_TCP_DEFAULT_CHUNK) - 3; /* cut short */
	CHECK(expect_dropped(comm, 1, b, n, true));

	CHECK(ibc_put(tp, 1, IBC_CHAN_COLL, 2, "after", 5, true, dl) == IBCOMM_OK);
	CHECK(ibc_get(tp, 1, IBC_CHAN_COLL, &c, true, dl) == IBCOMM_OK && c.tag == 3 && c.len == 4);
	CHECK(ibc_release(tp, &c) == IBCOMM_OK);
	return 0;
}

static void test_garbage(void)
{
	CU_ASSERT_EQUAL(tp_run_ranks(2, fn_garbage, 0, 40, 0, 0), 0);
}

/* A connected peer that breaks the protocol is an error naming it; the others carry on. */
static int fn_protocol(struct ibcomm *comm, ibc_tp_t *tp)
{
	ibc_deadline_t dl = in_ms(10000);
	uint8_t b[256];
	ibc_chunk_t c;
	size_t n;
	int fd, rc;

	if (comm->rank == 1) {
		/* rank 0 impersonates rank 1 (which never writes to itself) */
		rc = ibc_get(tp, 1, IBC_CHAN_COLL, &c, true, dl);
		CHECK(rc == IBCOMM_ERR_TRANSPORT);
		CHECK(strstr(comm->err, "rank 1: TCP protocol error from peer rank 1"));
		CHECK(ibc_get(tp, 1, IBC_CHAN_COLL, &c, true, dl) == IBCOMM_ERR_TRANSPORT);
		CHECK(ibc_get(tp, 0, IBC_CHAN_COLL, &c, true, dl) == IBCOMM_OK && c.tag == 4);
		CHECK(ibc_release(tp, &c) == IBCOMM_OK);
		return 0;
	}
	fd = raw_connect(comm, 1);
	CHECK(fd >= 0);
	n = hello(b, sizeof(b), comm->id, 1, 2, IBC_TCP_DEFAULT_CHUNK);
	n += frame(b + n, sizeof(b) - n, IBC_TCP_VERSION, IBC_TCP_DATA, 0, IBC_TCP_DEFAULT_CHUNK + 1, 0);
	CHECK(send(fd, b, n, MSG_NOSIGNAL) == (ssize_t)n);
	CHECK(recv(fd, b, sizeof(b), 0) <= 0);
	close(fd);
	CHECK(ibc_put(tp, 1, IBC_CHAN_COLL, 4, "ok", 2, true, dl) == IBCOMM_OK);
	return 0;
}

static void test_protocol(void)
{
	CU_ASSERT_EQUAL(tp_run_ranks(2, fn_protocol, 0, 30, 0, 0), 0);
}

/* ---- create: bad knobs are errors that name them ---- */

/* 1 when comm's published TCP address starts with prefix. */
static int published(struct ibcomm *comm, const char *prefix)
{
	char key[128], addr[128], err[128];
	size_t len;

	snprintf(key, sizeof(key), "%s/tcp/%d", comm->id, comm->rank);
	if (ibc_boot_get(comm->boot, key, addr, sizeof(addr) - 1, &len, in_ms(1000), NULL, err, sizeof(err)))
		return 0;
	addr[IBC_MIN(len, sizeof(addr) - 1)] = '\0';
	printf("(%s) ", addr);
	return !strncmp(addr, prefix, strlen(prefix)) && strchr(addr, ':');
}

static void test_create_errors(void)
{
	struct ibcomm *comm = calloc(1, sizeof(*comm));
	ibc_tp_t *tp = NULL;
	char dir[] = "/tmp/ibc_test_tcp.XXXXXX";

	CU_ASSERT_FATAL(comm && mkdtemp(dir));
	comm->size = 1;
	snprintf(comm->id, sizeof(comm->id), "c");
	snprintf(comm->set.ifname, sizeof(comm->set.ifname), "nosuchif0");
	CU_ASSERT_EQUAL(ibc_tcp_ops.create(comm, &tp), IBCOMM_ERR_INVALID);
	CU_ASSERT_PTR_NOT_NULL(strstr(comm->err, "nosuchif0"));
	CU_ASSERT_PTR_NULL(tp);

	snprintf(comm->set.ifname, sizeof(comm->set.ifname), "lo");
	/* (bad IBCOMM_TCP_CHUNK/_SLOTS values: tests/core/test_config.c) */

	/* the memory cap: explicit settings over it fail, naming them and the numbers */
	comm->size = 9;
	snprintf(comm->id, sizeof(comm->id), "m");
	comm->set.mem_limit = 64ull << 20;
	comm->set.tcp_chunk = 1ul << 20;
	comm->set.tcp_slots = 8;
	CU_ASSERT_EQUAL(ibc_tcp_ops.create(comm, &tp), IBCOMM_ERR_INVALID);
	CU_ASSERT_PTR_NOT_NULL(strstr(comm->err, "IBCOMM_MEM_LIMIT=67108864"));
	CU_ASSERT_PTR_NOT_NULL(strstr(comm->err, "134217728 bytes"));
	CU_ASSERT_PTR_NOT_NULL(strstr(comm->err, "IBCOMM_TCP_CHUNK"));
	CU_ASSERT_PTR_NULL(tp);
	/* defaults shrink to fit it: 8 peers x 2 channels x 4 slots x 512 KiB = 32 MiB > 16 MiB */
	comm->set.tcp_chunk = comm->set.tcp_slots = 0;
	comm->set.mem_limit = 16ull << 20;
	comm->boot = fake_rdv_new(dir);
	CU_ASSERT_EQUAL_FATAL(ibc_tcp_ops.create(comm, &tp), IBCOMM_OK);
	CU_ASSERT_EQUAL(tp->max_chunk, IBC_TCP_DEFAULT_CHUNK / 2);
	CU_ASSERT_EQUAL(tp->nslots, IBC_TCP_DEFAULT_SLOTS);
	tp->ops->destroy(tp);
	fake_rdv_free(comm->boot);
	comm->boot = NULL;
	comm->size = 1;
	comm->set.mem_limit = 0;
	snprintf(comm->id, sizeof(comm->id), "c");

	/* a real interface: lo */
	comm->boot = fake_rdv_new(dir);
	CU_ASSERT_EQUAL_FATAL(ibc_tcp_ops.create(comm, &tp), IBCOMM_OK);
	CU_ASSERT_EQUAL(tp->max_chunk, IBC_TCP_DEFAULT_CHUNK);
	CU_ASSERT_EQUAL(tp->nslots, IBC_TCP_DEFAULT_SLOTS);
	CU_ASSERT_EQUAL(published(comm, "127.0.0.1:"), 1);
	tp->ops->destroy(tp);

	/* the address follows the rendezvous: loopback IPv6, or a real interface */
	comm->set.ifname[0] = '\0';
	snprintf(comm->set.root, sizeof(comm->set.root), "[::1]:29500");
	if (ibc_tcp_ops.create(comm, &tp) == IBCOMM_OK) {
		CU_ASSERT_EQUAL(published(comm, "[::1]:"), 1);
		tp->ops->destroy(tp);
	} else {
		printf("(no IPv6 loopback: %s) ", comm->err);
	}
	snprintf(comm->set.root, sizeof(comm->set.root), "localhost:29500");
	CU_ASSERT_EQUAL_FATAL(ibc_tcp_ops.create(comm, &tp), IBCOMM_OK);
	CU_ASSERT_EQUAL(published(comm, "127.0.0.1:"), 1);
	tp->ops->destroy(tp);
	snprintf(comm->set.root, sizeof(comm->set.root), "node7:29500");
	CU_ASSERT_EQUAL_FATAL(ibc_tcp_ops.create(comm, &tp), IBCOMM_OK);
	CU_ASSERT_EQUAL(published(comm, ""), 1);
	tp->ops->destroy(tp);
	fake_rdv_free(comm->boot);
	free(comm);
	rm_dir(dir);
}

/* Usage: test_tcp [WORD]: runs only the tests whose name contains WORD ("stream" to measure). */
int main(int argc, char **argv)
{
	static const struct tp_suite tcp = { "tcp", &ibc_tcp_ops, tcp_setup, true };
	static const struct cm_test tests[] = {
		{ "create: addresses, bad knobs", test_create_errors },
		{ "order and tags, 2 ranks", test_order_2 },
		{ "order and tags, 3 ranks", test_order_3 },
		{ "order and tags, 2 ranks, IPv6 loopback", test_order_ipv6 },
		{ "credits", test_credit },
		{ "64 MiB both ways", test_bidir },
		{ "streaming: pipelining, throughput", test_stream },
		{ "killed peer, 2 ranks", test_killed_2 },
		{ "killed peer, 3 ranks", test_killed_3 },
		{ "killed reader of a blocked writer", test_killed_writer },
		{ "deadlines", test_deadline },
		{ "abort", test_abort },
		{ "garbage connections", test_garbage },
		{ "protocol error", test_protocol },
	};

	signal(SIGPIPE, SIG_IGN);
	tp_suite = &tcp;
	return CM_MAIN1(argc, argv, "tcp transport", tests);
}
