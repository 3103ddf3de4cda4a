/*
 * Job-key authentication ("never let strangers in"): the HMAC helpers against RFC 4231, then
 * real jobs of forked ranks on 127.0.0.1 over TCP: a job with a key; a rank with a wrong,
 * missing or unexpected key (told so with IBCOMM_ERR_AUTH, while the others time out naming
 * it); raw connections to the rendezvous and to a rank's data port (garbage, a JOIN or a
 * HELLO without the key, a wrong proof, an idle connection) dropped while the job succeeds.
 */
#define _GNU_SOURCE
#include <CUnit/Basic.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "auth.h"
#include "ibc.h"
#include "rendezvous.h"
#include "tcp.h"
#include "wire.h"
#include "../cunit_main.h"
#include "rank_check.h"

#define NRANKS 3
#define CHILD_ALARM_S 40



/* ======================================================================================= */
/* The helpers                                                                             */
/* ======================================================================================= */

/* RFC 4231, test case 2 (HMAC-SHA-256). */
static void test_hmac_vector(void)
{
	static const uint8_t want[32] = { 0x5b, 0xdc, 0xc1, 0x46, 0xbf, 0x60, 0x75, 0x4e, 0x6a, 0x04, 0x24,
					  0x26, 0x08, 0x95, 0x75, 0xc7, 0x5a, 0x00, 0x3f, 0x08, 0x9d, 0x27,
					  0x39, 0x83, 0x9d, 0xec, 0x58, 0xb9, 0x64, 0xec, 0x38, 0x43 };
	static const char data[] = "what do ya want for nothing?";
	uint8_t mac[IBC_AUTH_MAC_LEN];

	CU_ASSERT_EQUAL_FATAL(ibc_auth_hmac_sha256("Jefe", 4, data, sizeof(data) - 1, mac), 0);
	CU_ASSERT_EQUAL(memcmp(mac, want, sizeof(want)), 0);
}

static void test_proofs(void)
{
	uint8_t nc[IBC_AUTH_NONCE_LEN], na[IBC_AUTH_NONCE_LEN], n2[IBC_AUTH_NONCE_LEN];
	uint8_t pa[IBC_AUTH_MAC_LEN], pc[IBC_AUTH_MAC_LEN], bad[IBC_AUTH_MAC_LEN];
	static const char ctx[] = "tcp 0 1 2";

	CU_ASSERT_EQUAL_FATAL(ibc_auth_nonce(nc), 0);
	CU_ASSERT_EQUAL_FATAL(ibc_auth_nonce(na), 0);
	CU_ASSERT_EQUAL_FATAL(ibc_auth_nonce(n2), 0);
	CU_ASSERT_NOT_EQUAL(memcmp(nc, na, sizeof(nc)), 0); /* fresh every time */
	CU_ASSERT_NOT_EQUAL(memcmp(na, n2, sizeof(na)), 0);

	CU_ASSERT_EQUAL_FATAL(ibc_auth_proof("key", IBC_AUTH_ACCEPTOR, nc, na, ctx, sizeof(ctx), pa), 0);
	CU_ASSERT_EQUAL_FATAL(ibc_auth_proof("key", IBC_AUTH_CONNECTOR, nc, na, ctx, sizeof(ctx), pc), 0);
	CU_ASSERT(ibc_auth_check("key", IBC_AUTH_ACCEPTOR, nc, na, ctx, sizeof(ctx), pa));
	CU_ASSERT(ibc_auth_check("key", IBC_AUTH_CONNECTOR, nc, na, ctx, sizeof(ctx), pc));
	/* a proof cannot be reflected: the roles differ */
	CU_ASSERT_NOT_EQUAL(memcmp(pa, pc, sizeof(pa)), 0);
	CU_ASSERT(!ibc_auth_check("key", IBC_AUTH_CONNECTOR, nc, na, ctx, sizeof(ctx), pa));
	/* another key, other nonces, another context, one flipped bit: refused */
	CU_ASSERT(!ibc_auth_check("kez", IBC_AUTH_ACCEPTOR, nc, na, ctx, sizeof(ctx), pa));
	CU_ASSERT(!ibc_auth_check("key", IBC_AUTH_ACCEPTOR, na, nc, ctx, sizeof(ctx), pa));
	CU_ASSERT(!ibc_auth_check("key", IBC_AUTH_ACCEPTOR, nc, n2, ctx, sizeof(ctx), pa));
	CU_ASSERT(!ibc_auth_check("key", IBC_AUTH_ACCEPTOR, nc, na, ctx, sizeof(ctx) - 1, pa));
	memcpy(bad, pa, sizeof(bad));
	bad[31] ^= 1;
	CU_ASSERT(!ibc_auth_check("key", IBC_AUTH_ACCEPTOR, nc, na, ctx, sizeof(ctx), bad));
	/* no key, no proof */
	CU_ASSERT_NOT_EQUAL(ibc_auth_proof("", IBC_AUTH_ACCEPTOR, nc, na, ctx, sizeof(ctx), bad), 0);
	CU_ASSERT(!ibc_auth_check("", IBC_AUTH_ACCEPTOR, nc, na, ctx, sizeof(ctx), pa));
}

/* ======================================================================================= */
/* Jobs                                                                                    */
/* ======================================================================================= */

/* Rank `rank` of the job, with job key `key` (NULL: none) and timeout_ms. */
static ibcomm_status_t keyed_rank(int rank, const char *key, long timeout_ms, ibcomm_t **comm)
{
	char root[64];
	ibcomm_config_t cfg = job_config(rank, NRANKS, root);

	cfg.timeout_ms = timeout_ms;
	cfg.job_key = key;
	return ibcomm_init(&cfg, comm);
}

/* (1) every rank has the key: the job works */
static void rank_keyed(int rank, void *arg)
{
	ibcomm_t *comm = NULL;

	(void)arg;
	CHECK(keyed_rank(rank, "s3cret job key", 20000, &comm) == IBCOMM_OK);
	pairwise_collectives(comm);
	CHECK(ibcomm_destroy(comm) == IBCOMM_OK);
}

static void test_keyed_job(void)
{
	g_port = free_port();
	CU_ASSERT_EQUAL(run_ranks(NRANKS, CHILD_ALARM_S, rank_keyed, NULL), 0);
}

/* (2) rank 2's key is wrong, missing or unexpected: it is told; ranks 0 and 1 time out naming it */
struct mismatch {
	const char *good, *bad; /* key of ranks 0 and 1, key of rank 2 (NULL: none) */
	const char *says;       /* in rank 2's error */
};

static void rank_mismatch(int rank, void *arg)
{
	const struct mismatch *m = arg;
	ibcomm_t *comm = NULL;
	ibcomm_status_t st;
	uint64_t t0 = ibc_now_ms();
	const char *err;

	if (rank == 2)
		poll(NULL, 0, 200); /* ranks 0 and 1 are there first */
	st = keyed_rank(rank, rank == 2 ? m->bad : m->good, 2500, &comm);
	err = ibcomm_last_error(NULL);
	if (getenv("TEST_VERBOSE"))
		fprintf(stderr, "rank %d: %s: %s\n", rank, ibcomm_strerror(st), err);
	CHECK(comm == NULL);
	if (rank == 2) {
		CHECK(st == IBCOMM_ERR_AUTH);
		CHECK(strstr(err, "job key") && strstr(err, "does not match"));
		CHECK(strstr(err, m->says));
		CHECK(ibc_now_ms() - t0 < 2000); /* told at once, not at the deadline */
	} else if (rank == 0) {
		CHECK(st == IBCOMM_ERR_TIMEOUT);
		CHECK(strstr(err, "missing ranks: 2"));
		CHECK(strstr(err, "rank 2 (from") && strstr(err, "does not match"));
	} else {
		CHECK(st == IBCOMM_ERR_TIMEOUT || st == IBCOMM_ERR_RENDEZVOUS);
		CHECK(strstr(err, "rank 1"));
	}
}

static void test_wrong_key(void)
{
	static const struct mismatch cases[] = {
		{ "right key", "wrong key", "rank 0's" },         /* the client sees the server's proof fail */
		{ "right key", NULL, "did not authenticate" },     /* the server requires a key */
		{ NULL, "a key", "rank 0 has none" },              /* the server has none */
	};

	for (size_t i = 0; i < IBC_ARRAY_SIZE(cases); i++) {
		g_port = free_port();
		CU_ASSERT_EQUAL(run_ranks(NRANKS, CHILD_ALARM_S, rank_mismatch, (void *)&cases[i]), 0);
	}
}

/* (3) strangers ------------------------------------------------------------------------ */

static int tcp_to(const char *host, const char *port)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV };
	struct addrinfo *ai;
	struct timeval tv = { .tv_sec = 8 };
	int fd;

	if (getaddrinfo(host, port, &hints, &ai))
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

static int rdv_connect_retry(void)
{
	char port[16];

	snprintf(port, sizeof(port), "%d", g_port);
	for (int i = 0; i < 200; i++) {
		int fd = tcp_to("127.0.0.1", port);

		if (fd >= 0)
			return fd;
		poll(NULL, 0, 25);
	}
	return -1;
}

/* Reads until the peer closes (or 8 s pass); returns the bytes read, -1 when it stayed open. */
static ssize_t read_to_close(int fd, uint8_t *buf, size_t cap)
{
	size_t got = 0;

	for (;;) {
		uint8_t scratch[256];
		ssize_t n = recv(fd, got < cap ? buf + got : scratch, got < cap ? cap - got : sizeof(scratch), 0);

		if (n == 0 || (n < 0 && errno == ECONNRESET))
			return (ssize_t)got;
		if (n < 0)
			return -1;
		if (got < cap)
			got += (size_t)n;
	}
}

/* The parent, while rank 0 waits for the others: strangers at the rendezvous. */
static void strangers_at_rendezvous(int *idle_fd)
{
	static const char http[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
	uint8_t buf[IBC_RDV_MAX_FRAME > 4096 ? 4096 : IBC_RDV_MAX_FRAME], nonce[IBC_RDV_NONCE_LEN] = { 1, 2, 3 };
	uint8_t junk[IBC_RDV_PROOF_LEN] = { 9 };
	struct ibc_rdv_msg m, out;
	const char *why;
	size_t n, flen;
	ssize_t got;
	int fd;

	/* an idle connection: it must not stall the server, which drops it after a few seconds */
	*idle_fd = rdv_connect_retry();
	CU_ASSERT_FATAL(*idle_fd >= 0);

	/* garbage: dropped without an answer */
	fd = rdv_connect_retry();
	CU_ASSERT_FATAL(fd >= 0);
	CU_ASSERT(send(fd, http, sizeof(http) - 1, MSG_NOSIGNAL) > 0);
	CU_ASSERT_EQUAL(read_to_close(fd, buf, sizeof(buf)), 0);
	close(fd);

	/* a JOIN without the key: AUTH_FAILED, then closed (rank 1 keeps its place) */
	fd = rdv_connect_retry();
	CU_ASSERT_FATAL(fd >= 0);
	m = (struct ibc_rdv_msg){ .type = IBC_RDV_JOIN, .req = 1, .rank = 1, .size = NRANKS };
	n = ibc_rdv_encode(&m, buf, sizeof(buf));
	CU_ASSERT(send(fd, buf, n, MSG_NOSIGNAL) == (ssize_t)n);
	got = read_to_close(fd, buf, sizeof(buf));
	CU_ASSERT(got > 0 && ibc_rdv_decode(buf, (size_t)got, &out, &why) == IBCOMM_OK &&
		  out.type == IBC_RDV_AUTH_FAILED && out.req == 1);
	close(fd);

	/* a HELLO, then a proof without the key: challenged, then AUTH_FAILED and closed */
	fd = rdv_connect_retry();
	CU_ASSERT_FATAL(fd >= 0);
	m = (struct ibc_rdv_msg){ .type = IBC_RDV_AUTH_HELLO, .req = 2, .rank = 2, .size = NRANKS, .nonce = nonce };
	n = ibc_rdv_encode(&m, buf, sizeof(buf));
	CU_ASSERT(send(fd, buf, n, MSG_NOSIGNAL) == (ssize_t)n);
	got = recv(fd, buf, sizeof(buf), 0);
	CU_ASSERT(got == IBC_RDV_HDR_LEN + IBC_RDV_NONCE_LEN + IBC_RDV_PROOF_LEN);
	CU_ASSERT(got > 0 && ibc_rdv_frame_len(buf, (size_t)got, &flen, &why) == IBCOMM_OK &&
		  ibc_rdv_decode(buf, flen, &out, &why) == IBCOMM_OK && out.type == IBC_RDV_AUTH_CHALLENGE);
	m = (struct ibc_rdv_msg){ .type = IBC_RDV_AUTH_PROOF, .req = 3, .proof = junk };
	n = ibc_rdv_encode(&m, buf, sizeof(buf));
	CU_ASSERT(send(fd, buf, n, MSG_NOSIGNAL) == (ssize_t)n);
	got = read_to_close(fd, buf, sizeof(buf));
	CU_ASSERT(got > 0 && ibc_rdv_decode(buf, (size_t)got, &out, &why) == IBCOMM_OK &&
		  out.type == IBC_RDV_AUTH_FAILED);
	close(fd);

	/* a GET before anything: dropped */
	fd = rdv_connect_retry();
	CU_ASSERT_FATAL(fd >= 0);
	m = (struct ibc_rdv_msg){ .type = IBC_RDV_GET, .req = 4, .key = "0/tcp/1", .keylen = 7 };
	n = ibc_rdv_encode(&m, buf, sizeof(buf));
	CU_ASSERT(send(fd, buf, n, MSG_NOSIGNAL) == (ssize_t)n);
	CU_ASSERT_EQUAL(read_to_close(fd, buf, sizeof(buf)), 0);
	close(fd);
}

/* Rank 0: strangers at rank 1's data port, while rank 1 waits in a collective. */
static void strangers_at_data_port(ibcomm_t *comm, int *idle_fd)
{
	static const char http[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
	uint8_t buf[512], nonce[IBC_TCP_NONCE_LEN] = { 7 }, junk[IBC_TCP_PROOF_LEN] = { 8 };
	char addr[128], host[64], err[256];
	struct ibc_tcp_hello h = { .rank = 2, .size = NRANKS, .max_chunk = IBC_TCP_DEFAULT_CHUNK,
				   .nslots = IBC_TCP_DEFAULT_SLOTS, .id = "0", .idlen = 1 };
	struct ibc_tcp_auth a = { .proof = junk };
	struct ibc_tcp_hdr hdr;
	char *colon;
	size_t len, n;
	ssize_t got;
	int fd;

	CHECK(ibc_boot_get(comm->boot, "0/tcp/1", addr, sizeof(addr) - 1, &len, ibc_deadline(5000), NULL, err,
			  sizeof(err)) == IBCOMM_OK);
	addr[IBC_MIN(len, sizeof(addr) - 1)] = '\0';
	colon = strrchr(addr, ':');
	CHECK(colon);
	snprintf(host, sizeof(host), "%.*s", (int)(colon - addr), addr);

	*idle_fd = tcp_to(host, colon + 1);
	CHECK(*idle_fd >= 0);

	/* garbage */
	fd = tcp_to(host, colon + 1);
	CHECK(fd >= 0);
	CHECK(send(fd, http, sizeof(http) - 1, MSG_NOSIGNAL) > 0);
	CHECK(read_to_close(fd, buf, sizeof(buf)) == 0);
	close(fd);

	/* a valid-looking HELLO without the key, as rank 0: refused with AUTH_FAILED */
	h.rank = 0;
	n = ibc_tcp_hello_encode(&h, buf, sizeof(buf));
	CHECK(n > 0);
	fd = tcp_to(host, colon + 1);
	CHECK(fd >= 0);
	CHECK(send(fd, buf, n, MSG_NOSIGNAL) == (ssize_t)n);
	got = read_to_close(fd, buf, sizeof(buf));
	CHECK(got >= (ssize_t)IBC_TCP_HDR_LEN);
	ibc_tcp_hdr_decode(buf, &hdr);
	CHECK(hdr.type == IBC_TCP_AUTH_FAILED && hdr.len == (size_t)got - IBC_TCP_HDR_LEN);
	CHECK(memmem(buf + IBC_TCP_HDR_LEN, hdr.len, "job key", 7));
	close(fd);

	/* a HELLO with a nonce, as rank 2, then a proof made without the key */
	h.rank = 2;
	h.nonce = nonce;
	n = ibc_tcp_hello_encode(&h, buf, sizeof(buf));
	fd = tcp_to(host, colon + 1);
	CHECK(fd >= 0);
	CHECK(send(fd, buf, n, MSG_NOSIGNAL) == (ssize_t)n);
	got = recv(fd, buf, IBC_TCP_HDR_LEN + IBC_TCP_NONCE_LEN + IBC_TCP_PROOF_LEN, MSG_WAITALL);
	CHECK(got == IBC_TCP_HDR_LEN + IBC_TCP_NONCE_LEN + IBC_TCP_PROOF_LEN);
	ibc_tcp_hdr_decode(buf, &hdr);
	CHECK(hdr.type == IBC_TCP_CHALLENGE && hdr.len == IBC_TCP_NONCE_LEN + IBC_TCP_PROOF_LEN);
	n = ibc_tcp_auth_encode(IBC_TCP_PROOF, &a, buf, sizeof(buf));
	CHECK(send(fd, buf, n, MSG_NOSIGNAL) == (ssize_t)n);
	got = read_to_close(fd, buf, sizeof(buf));
	CHECK(got >= (ssize_t)IBC_TCP_HDR_LEN);
	ibc_tcp_hdr_decode(buf, &hdr);
	CHECK(hdr.type == IBC_TCP_AUTH_FAILED);
	close(fd);
}

static void rank_strangers(int rank, void *arg)
{
	ibcomm_t *comm = NULL;
	int idle = -1;
	uint8_t b[64];
	uint64_t t0;

	(void)arg;
	CHECK(keyed_rank(rank, "the key", 20000, &comm) == IBCOMM_OK);
	if (rank == 0)
		strangers_at_data_port(comm, &idle);
	pairwise_collectives(comm);
	/* rank 1, waiting in the barrier for rank 0, drops the idle connection at its deadline */
	if (rank == 0) {
		t0 = ibc_now_ms();
		CHECK(read_to_close(idle, b, sizeof(b)) == 0);
		CHECK(ibc_now_ms() - t0 < IBC_AUTH_HANDSHAKE_MS + 2000);
		close(idle);
	}
	CHECK(ibcomm_barrier(comm) == IBCOMM_OK);
	pairwise_collectives(comm);
	CHECK(ibcomm_destroy(comm) == IBCOMM_OK);
}

static void test_strangers(void)
{
	pid_t pids[NRANKS];
	int failed = 0, idle = -1;
	uint8_t b[64];

	g_port = free_port();
	fflush(NULL);
	for (int r = 0; r < NRANKS; r++) {
		if (r == 1)
			strangers_at_rendezvous(&idle); /* rank 0 serves, ranks 1 and 2 not there yet */
		pids[r] = fork();
		CU_ASSERT_FATAL(pids[r] >= 0);
		if (pids[r] == 0) {
			alarm(CHILD_ALARM_S);
			g_rank = r;
			rank_strangers(r, NULL);
			_exit(0);
		}
	}
	/* the idle rendezvous connection is dropped after the handshake time */
	CU_ASSERT(idle >= 0 && read_to_close(idle, b, sizeof(b)) == 0);
	if (idle >= 0)
		close(idle);
	for (int r = 0; r < NRANKS; r++) {
		int status;

		if (waitpid(pids[r], &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status)) {
			fprintf(stderr, "\n  rank %d failed (status %#x)\n", r, status);
			failed++;
		}
	}
	CU_ASSERT_EQUAL(failed, 0);
}

int main(int argc, char **argv)
{
	static const struct cm_test tests[] = {
		{ "HMAC-SHA256, RFC 4231 case 2", test_hmac_vector },
		{ "proofs and nonces", test_proofs },
		{ "3 ranks with a job key", test_keyed_job },
		{ "a wrong, missing or unexpected key", test_wrong_key },
		{ "strangers are dropped, the job succeeds", test_strangers },
	};

	signal(SIGPIPE, SIG_IGN);
	return CM_MAIN1(argc, argv, "auth", tests);
}
