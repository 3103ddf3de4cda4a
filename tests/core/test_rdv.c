/*
 * The rendezvous: message encoding and decoding (round trips; truncated, oversized,
 * wrong-version and garbage input rejected), then real jobs of forked processes on
 * 127.0.0.1: ranks started in shuffled order, PUT/GET across ranks, a GET waiting for a
 * later PUT, GET deadlines and stale replies, two threads sharing a client, a garbage
 * sending connection, and size or rank mismatches.
 */
#define _GNU_SOURCE
#include <CUnit/Basic.h>
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ibc.h"
#include "rdv_store.h"
#include "rendezvous.h"
#include "wire.h"
#include "../cunit_main.h"

#define EXIT_PORT_TAKEN 42
#define CHILD_ALARM_S 30

static uint8_t frame[IBC_RDV_MAX_FRAME + 64];

/* ======================================================================================= */
/* Messages                                                                                */
/* ======================================================================================= */

static void test_roundtrip(void)
{
	static uint8_t big[IBC_RDV_MAX_VAL];
	struct ibc_rdv_msg in, out;
	char key[IBC_RDV_MAX_KEY];
	const char *why;
	size_t n, fl;

	for (size_t i = 0; i < sizeof(big); i++)
		big[i] = (uint8_t)(i * 7);
	memset(key, 'k', sizeof(key));

	in = (struct ibc_rdv_msg){ .type = IBC_RDV_JOIN, .req = 7, .rank = 3, .size = 4 };
	n = ibc_rdv_encode(&in, frame, sizeof(frame));
	CU_ASSERT_EQUAL_FATAL(n, IBC_RDV_HDR_LEN + 8);
	CU_ASSERT_EQUAL(ibc_rdv_frame_len(frame, n, &fl, &why), IBCOMM_OK);
	CU_ASSERT_EQUAL(fl, n);
	CU_ASSERT_EQUAL_FATAL(ibc_rdv_decode(frame, n, &out, &why), IBCOMM_OK);
	CU_ASSERT_EQUAL(out.type, IBC_RDV_JOIN);
	CU_ASSERT_EQUAL(out.req, 7);
	CU_ASSERT_EQUAL(out.rank, 3);
	CU_ASSERT_EQUAL(out.size, 4);
	/* little-endian on the wire, whatever the host */
	CU_ASSERT_EQUAL(frame[0], 'I');
	CU_ASSERT_EQUAL(frame[3], 'R');
	CU_ASSERT_EQUAL(frame[4], IBC_RDV_VERSION);
	CU_ASSERT_EQUAL(frame[8], 7);
	CU_ASSERT_EQUAL(frame[12], 8);
	CU_ASSERT_EQUAL(frame[16], 3);

	in = (struct ibc_rdv_msg){ .type = IBC_RDV_JOINED, .req = 0xfffffffe, .size = 1 };
	n = ibc_rdv_encode(&in, frame, sizeof(frame));
	CU_ASSERT_EQUAL_FATAL(ibc_rdv_decode(frame, n, &out, &why), IBCOMM_OK);
	CU_ASSERT_EQUAL(out.req, 0xfffffffe);
	CU_ASSERT_EQUAL(out.size, 1);

	/* the largest PUT */
	in = (struct ibc_rdv_msg){ .type = IBC_RDV_PUT, .req = 1, .key = key, .keylen = sizeof(key), .val = big,
				   .vallen = sizeof(big) };
	n = ibc_rdv_encode(&in, frame, sizeof(frame));
	CU_ASSERT_EQUAL_FATAL(n, IBC_RDV_MAX_FRAME);
	CU_ASSERT_EQUAL_FATAL(ibc_rdv_decode(frame, n, &out, &why), IBCOMM_OK);
	CU_ASSERT_EQUAL(out.keylen, sizeof(key));
	CU_ASSERT_EQUAL(memcmp(out.key, key, sizeof(key)), 0);
	CU_ASSERT_EQUAL(out.vallen, sizeof(big));
	CU_ASSERT_EQUAL(memcmp(out.val, big, sizeof(big)), 0);

	in = (struct ibc_rdv_msg){ .type = IBC_RDV_PUT, .req = 2, .key = "a", .keylen = 1, .vallen = 0 };
	n = ibc_rdv_encode(&in, frame, sizeof(frame));
	CU_ASSERT_EQUAL_FATAL(ibc_rdv_decode(frame, n, &out, &why), IBCOMM_OK);
	CU_ASSERT_EQUAL(out.vallen, 0);

	in = (struct ibc_rdv_msg){ .type = IBC_RDV_GET, .req = 3, .key = "0/addr/12", .keylen = 9 };
	n = ibc_rdv_encode(&in, frame, sizeof(frame));
	CU_ASSERT_EQUAL_FATAL(ibc_rdv_decode(frame, n, &out, &why), IBCOMM_OK);
	CU_ASSERT_EQUAL(out.type, IBC_RDV_GET);
	CU_ASSERT_EQUAL(out.keylen, 9);
	CU_ASSERT_EQUAL(memcmp(out.key, "0/addr/12", 9), 0);

	in = (struct ibc_rdv_msg){ .type = IBC_RDV_VALUE, .req = 4, .val = "xyz", .vallen = 3 };
	n = ibc_rdv_encode(&in, frame, sizeof(frame));
	CU_ASSERT_EQUAL_FATAL(ibc_rdv_decode(frame, n, &out, &why), IBCOMM_OK);
	CU_ASSERT_EQUAL(out.vallen, 3);
	CU_ASSERT_EQUAL(memcmp(out.val, "xyz", 3), 0);

	in = (struct ibc_rdv_msg){ .type = IBC_RDV_PUT_OK, .req = 5 };
	n = ibc_rdv_encode(&in, frame, sizeof(frame));
	CU_ASSERT_EQUAL(n, IBC_RDV_HDR_LEN);
	CU_ASSERT_EQUAL_FATAL(ibc_rdv_decode(frame, n, &out, &why), IBCOMM_OK);
	CU_ASSERT_EQUAL(out.type, IBC_RDV_PUT_OK);

	in = (struct ibc_rdv_msg){ .type = IBC_RDV_ERROR, .req = 6, .text = "duplicate rank 1", .textlen = 16 };
	n = ibc_rdv_encode(&in, frame, sizeof(frame));
	CU_ASSERT_EQUAL_FATAL(ibc_rdv_decode(frame, n, &out, &why), IBCOMM_OK);
	CU_ASSERT_EQUAL(out.textlen, 16);
	CU_ASSERT_EQUAL(memcmp(out.text, "duplicate rank 1", 16), 0);

	in = (struct ibc_rdv_msg){ .type = IBC_RDV_DROP, .key = "0.3.1/", .keylen = 6, .size = 5 };
	n = ibc_rdv_encode(&in, frame, sizeof(frame));
	CU_ASSERT_EQUAL(n, IBC_RDV_HDR_LEN + 2 + 6 + 4);
	CU_ASSERT_EQUAL_FATAL(ibc_rdv_decode(frame, n, &out, &why), IBCOMM_OK);
	CU_ASSERT_EQUAL(out.type, IBC_RDV_DROP);
	CU_ASSERT_EQUAL(out.size, 5);
	CU_ASSERT(out.keylen == 6 && !memcmp(out.key, "0.3.1/", 6));
	in.size = 0; /* a namespace of nobody */
	CU_ASSERT_EQUAL(ibc_rdv_encode(&in, frame, sizeof(frame)), 0);
}

static void store_release(void *owner);

/* The server's table: a namespace goes at its count-th DROP, but not the keys GETs wait for. */
static void test_store_drop(void)
{
	struct rdv_store st;
	struct rdv_entry *e;
	struct rdv_waiter *w = calloc(1, sizeof(*w));
	int released = 0;

	CU_ASSERT_FATAL(rdv_store_init(&st, 4) == 0 && w);
	for (int i = 0; i < 200; i++) { /* past a few table growths */
		char k[32];

		snprintf(k, sizeof(k), "%s/tcp/%d", i % 2 ? "0.1.0" : "0.1.0.2.0", i);
		e = rdv_store_lookup(&st, k, strlen(k), true);
		CU_ASSERT_FATAL(e != NULL);
		e->has_val = true;
	}
	e = rdv_store_lookup(&st, "0.1.0/wait", 10, true); /* a parked GET */
	w->owner = &released;
	e->waiters = w;
	CU_ASSERT_EQUAL(st.nentries, 201);
	CU_ASSERT_EQUAL(rdv_store_drop(&st, "0.1.0/", 6, 2), 0);
	CU_ASSERT_EQUAL(st.ndrops, 1);
	CU_ASSERT_EQUAL(rdv_store_drop(&st, "0.1.0/", 6, 2), 100);
	CU_ASSERT_EQUAL(st.ndrops, 0);
	CU_ASSERT_EQUAL(st.nentries, 101);
	CU_ASSERT_PTR_NOT_NULL(rdv_store_lookup(&st, "0.1.0/wait", 10, false));
	CU_ASSERT_PTR_NOT_NULL(rdv_store_lookup(&st, "0.1.0.2.0/tcp/0", 15, false));
	CU_ASSERT_EQUAL(rdv_store_drop(&st, "0.1.0.2.0/", 10, 1), 100);
	rdv_store_free(&st, store_release);
	CU_ASSERT_EQUAL(released, 1);
}

static void store_release(void *owner)
{
	(*(int *)owner)++;
}

static void test_encode_limits(void)
{
	static uint8_t big[IBC_RDV_MAX_VAL + 1];
	char key[IBC_RDV_MAX_KEY + 1];
	struct ibc_rdv_msg m;

	memset(key, 'k', sizeof(key));
	m = (struct ibc_rdv_msg){ .type = IBC_RDV_PUT, .key = key, .keylen = sizeof(key), .val = "v", .vallen = 1 };
	CU_ASSERT_EQUAL(ibc_rdv_encode(&m, frame, sizeof(frame)), 0);
	m.keylen = 0;
	CU_ASSERT_EQUAL(ibc_rdv_encode(&m, frame, sizeof(frame)), 0);
	m = (struct ibc_rdv_msg){ .type = IBC_RDV_PUT, .key = "k", .keylen = 1, .val = big, .vallen = sizeof(big) };
	CU_ASSERT_EQUAL(ibc_rdv_encode(&m, frame, sizeof(frame)), 0);
	m = (struct ibc_rdv_msg){ .type = IBC_RDV_GET, .key = "a\0b", .keylen = 3 };
	CU_ASSERT_EQUAL(ibc_rdv_encode(&m, frame, sizeof(frame)), 0);
	m = (struct ibc_rdv_msg){ .type = IBC_RDV_JOIN, .rank = 4, .size = 4 };
	CU_ASSERT_EQUAL(ibc_rdv_encode(&m, frame, sizeof(frame)), 0);
	m = (struct ibc_rdv_msg){ .type = 99 };
	CU_ASSERT_EQUAL(ibc_rdv_encode(&m, frame, sizeof(frame)), 0);
	/* does not fit */
	m = (struct ibc_rdv_msg){ .type = IBC_RDV_GET, .key = "abc", .keylen = 3 };
	CU_ASSERT_EQUAL(ibc_rdv_encode(&m, frame, IBC_RDV_HDR_LEN + 4), 0);
	CU_ASSERT_EQUAL(ibc_rdv_encode(&m, frame, IBC_RDV_HDR_LEN + 5), IBC_RDV_HDR_LEN + 5);
}

/* A frame with an arbitrary header and body. */
static size_t raw_frame(uint32_t magic, uint8_t version, uint8_t type, uint16_t flags, uint32_t len,
			const void *body, size_t bodylen)
{
	ibc_wbuf_t w = ibc_wbuf(frame, sizeof(frame));

	ibc_w_u32(&w, magic);
	ibc_w_u8(&w, version);
	ibc_w_u8(&w, type);
	ibc_w_u16(&w, flags);
	ibc_w_u32(&w, 1);
	ibc_w_u32(&w, len);
	ibc_w_bytes(&w, body, bodylen);
	return w.len;
}

static void expect_reject(size_t n, const char *what)
{
	struct ibc_rdv_msg m;
	const char *why = NULL;

	CU_ASSERT_EQUAL(ibc_rdv_decode(frame, n, &m, &why), IBCOMM_ERR_INVALID);
	CU_ASSERT_PTR_NOT_NULL(why);
	if (why && getenv("TEST_VERBOSE"))
		fprintf(stderr, "%s: %s\n", what, why);
}

static void test_reject(void)
{
	struct ibc_rdv_msg m = { .type = IBC_RDV_PUT, .key = "key", .keylen = 3, .val = "value", .vallen = 5 };
	uint8_t body[512];
	ibc_wbuf_t w;
	const char *why;
	size_t n, fl;

	/* every truncation of a valid frame */
	n = ibc_rdv_encode(&m, frame, sizeof(frame));
	CU_ASSERT_FATAL(n > 0);
	for (size_t k = 0; k < n; k++) {
		struct ibc_rdv_msg out;

		CU_ASSERT_EQUAL(ibc_rdv_decode(frame, k, &out, &why), IBCOMM_ERR_INVALID);
	}
	CU_ASSERT_EQUAL(ibc_rdv_frame_len(frame, IBC_RDV_HDR_LEN - 1, &fl, &why), IBC_AGAIN);
	/* trailing bytes */
	frame[n] = 0;
	expect_reject(n + 1, "trailing");

	/* header fields */
	n = raw_frame(0x12345678, IBC_RDV_VERSION, IBC_RDV_PUT_OK, 0, 0, NULL, 0);
	expect_reject(n, "magic");
	n = raw_frame(IBC_RDV_MAGIC, IBC_RDV_VERSION + 1, IBC_RDV_PUT_OK, 0, 0, NULL, 0);
	expect_reject(n, "version");
	CU_ASSERT_EQUAL(ibc_rdv_frame_len(frame, n, &fl, &why), IBCOMM_ERR_INVALID);
	CU_ASSERT_PTR_NOT_NULL(strstr(why, "version"));
	n = raw_frame(IBC_RDV_MAGIC, 0, IBC_RDV_PUT_OK, 0, 0, NULL, 0);
	expect_reject(n, "version 0");
	n = raw_frame(IBC_RDV_MAGIC, IBC_RDV_VERSION, 0, 0, 0, NULL, 0);
	expect_reject(n, "type 0");
	n = raw_frame(IBC_RDV_MAGIC, IBC_RDV_VERSION, IBC_RDV_ERROR + 1, 0, 0, NULL, 0);
	expect_reject(n, "type 8");
	n = raw_frame(IBC_RDV_MAGIC, IBC_RDV_VERSION, IBC_RDV_PUT_OK, 1, 0, NULL, 0);
	expect_reject(n, "flags");
	/* oversized body length: rejected from the header alone */
	n = raw_frame(IBC_RDV_MAGIC, IBC_RDV_VERSION, IBC_RDV_PUT, 0, IBC_RDV_MAX_BODY + 1, NULL, 0);
	CU_ASSERT_EQUAL(ibc_rdv_frame_len(frame, n, &fl, &why), IBCOMM_ERR_INVALID);
	n = raw_frame(IBC_RDV_MAGIC, IBC_RDV_VERSION, IBC_RDV_PUT, 0, 0xffffffff, NULL, 0);
	CU_ASSERT_EQUAL(ibc_rdv_frame_len(frame, n, &fl, &why), IBCOMM_ERR_INVALID);
	/* the header's length disagrees with the body */
	n = raw_frame(IBC_RDV_MAGIC, IBC_RDV_VERSION, IBC_RDV_PUT_OK, 0, 4, "abcd", 4);
	expect_reject(n, "PUT_OK with a body");

	/* body fields */
	w = ibc_wbuf(body, sizeof(body));
	ibc_w_u16(&w, IBC_RDV_MAX_KEY + 1); /* key too long */
	for (unsigned i = 0; i < IBC_RDV_MAX_KEY + 1; i++)
		ibc_w_u8(&w, 'k');
	n = raw_frame(IBC_RDV_MAGIC, IBC_RDV_VERSION, IBC_RDV_GET, 0, (uint32_t)w.len, body, w.len);
	expect_reject(n, "long key");
	w = ibc_wbuf(body, sizeof(body));
	ibc_w_u16(&w, 0); /* empty key */
	n = raw_frame(IBC_RDV_MAGIC, IBC_RDV_VERSION, IBC_RDV_GET, 0, (uint32_t)w.len, body, w.len);
	expect_reject(n, "empty key");
	w = ibc_wbuf(body, sizeof(body));
	ibc_w_u16(&w, 3);
	ibc_w_bytes(&w, "a\0b", 3);
	n = raw_frame(IBC_RDV_MAGIC, IBC_RDV_VERSION, IBC_RDV_GET, 0, (uint32_t)w.len, body, w.len);
	expect_reject(n, "NUL in key");
	w = ibc_wbuf(body, sizeof(body));
	ibc_w_u16(&w, 10); /* key length beyond the body */
	ibc_w_bytes(&w, "abc", 3);
	n = raw_frame(IBC_RDV_MAGIC, IBC_RDV_VERSION, IBC_RDV_GET, 0, (uint32_t)w.len, body, w.len);
	expect_reject(n, "key beyond body");
	w = ibc_wbuf(body, sizeof(body));
	ibc_w_u16(&w, 1);
	ibc_w_u8(&w, 'k');
	ibc_w_u32(&w, IBC_RDV_MAX_VAL + 1); /* value too long */
	n = raw_frame(IBC_RDV_MAGIC, IBC_RDV_VERSION, IBC_RDV_PUT, 0, (uint32_t)w.len, body, w.len);
	expect_reject(n, "long value");
	w = ibc_wbuf(body, sizeof(body));
	ibc_w_u32(&w, 100); /* value length beyond the body */
	ibc_w_bytes(&w, "xx", 2);
	n = raw_frame(IBC_RDV_MAGIC, IBC_RDV_VERSION, IBC_RDV_VALUE, 0, (uint32_t)w.len, body, w.len);
	expect_reject(n, "value beyond body");
	w = ibc_wbuf(body, sizeof(body));
	ibc_w_u32(&w, 5); /* rank 5 of 4 */
	ibc_w_u32(&w, 4);
	n = raw_frame(IBC_RDV_MAGIC, IBC_RDV_VERSION, IBC_RDV_JOIN, 0, (uint32_t)w.len, body, w.len);
	expect_reject(n, "rank >= size");
	w = ibc_wbuf(body, sizeof(body));
	ibc_w_u32(&w, 0);
	ibc_w_u32(&w, 0); /* size 0 */
	n = raw_frame(IBC_RDV_MAGIC, IBC_RDV_VERSION, IBC_RDV_JOIN, 0, (uint32_t)w.len, body, w.len);
	expect_reject(n, "size 0");
	w = ibc_wbuf(body, sizeof(body));
	ibc_w_u32(&w, 0); /* JOIN with half a body */
	n = raw_frame(IBC_RDV_MAGIC, IBC_RDV_VERSION, IBC_RDV_JOIN, 0, (uint32_t)w.len, body, w.len);
	expect_reject(n, "short JOIN");
	w = ibc_wbuf(body, sizeof(body));
	ibc_w_u16(&w, IBC_RDV_MAX_TEXT + 1);
	n = raw_frame(IBC_RDV_MAGIC, IBC_RDV_VERSION, IBC_RDV_ERROR, 0, (uint32_t)w.len, body, w.len);
	expect_reject(n, "long text");
}

/* Random bytes and random corruptions of valid frames: rejected or decoded, never a crash. */
static void test_garbage(void)
{
	struct ibc_rdv_msg m = { .type = IBC_RDV_PUT, .key = "0/tcp/3", .keylen = 7, .val = "1.2.3.4:5", .vallen = 9 };
	uint32_t seed = 12345;
	size_t n0, fl;
	const char *why;
	int accepted = 0;

	for (int iter = 0; iter < 20000; iter++) {
		struct ibc_rdv_msg out;
		size_t n;

		seed = seed * 1103515245u + 12345u;
		if (iter % 2) {
			n = (seed >> 8) % 64;
			for (size_t i = 0; i < n; i++) {
				seed = seed * 1103515245u + 12345u;
				frame[i] = (uint8_t)(seed >> 16);
			}
			CU_ASSERT_EQUAL(ibc_rdv_decode(frame, n, &out, &why), IBCOMM_ERR_INVALID);
		} else {
			n0 = ibc_rdv_encode(&m, frame, sizeof(frame));
			n = n0;
			for (int k = 0; k < 1 + (int)((seed >> 4) % 3); k++) {
				seed = seed * 1103515245u + 12345u;
				frame[(seed >> 8) % n0] ^= (uint8_t)(1u << ((seed >> 20) % 8));
			}
			if (ibc_rdv_decode(frame, n, &out, &why) == IBCOMM_OK) {
				accepted++;
				/* whatever was accepted lies inside the buffer */
				if (out.key)
					CU_ASSERT((const uint8_t *)out.key + out.keylen <= frame + n);
				if (out.val)
					CU_ASSERT((const uint8_t *)out.val + out.vallen <= frame + n);
			}
			(void)ibc_rdv_frame_len(frame, n, &fl, &why);
		}
	}
	/* flips inside the key or value bytes are legitimately accepted */
	CU_ASSERT(accepted > 0);
}

/* ======================================================================================= */
/* Real jobs                                                                               */
/* ======================================================================================= */

static int free_port(void)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t sl = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM, 0), port;

	if (fd < 0)
		return -1;
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) || getsockname(fd, (struct sockaddr *)&sa, &sl)) {
		close(fd);
		return -1;
	}
	port = ntohs(sa.sin_port);
	close(fd);
	return port;
}

static void settings(ibc_settings_t *s, int rank, int size, int port, long timeout_ms)
{
	memset(s, 0, sizeof(*s));
	s->rank = rank;
	s->nranks = size;
	snprintf(s->root, sizeof(s->root), "127.0.0.1:%d", port);
	s->gid_index = -1;
	s->listen_fd = -1;
	s->timeout_ms = timeout_ms;
	s->listen_fd = -1;
}

static int g_rank, g_port;

#define CHECK(cond)                                                                                       \
	do {                                                                                              \
		if (!(cond)) {                                                                            \
			fprintf(stderr, "rank %d: %s:%d: check failed: %s\n", g_rank, __FILE__, __LINE__, \
				#cond);                                                                   \
			_exit(1);                                                                         \
		}                                                                                         \
	} while (0)

#define CHECK_OK(st, err)                                                                                    \
	do {                                                                                                 \
		ibcomm_status_t st_ = (st);                                                                  \
		if (st_ != IBCOMM_OK) {                                                                      \
			fprintf(stderr, "rank %d: %s:%d: %s failed: %s: %s\n", g_rank, __FILE__, __LINE__, #st, \
				ibcomm_strerror(st_), err);                                                  \
			_exit(1);                                                                            \
		}                                                                                            \
	} while (0)

/* A check whose failure shows the error message. */
#define CHECK_ERR(cond, err)                                                                         \
	do {                                                                                         \
		if (!(cond)) {                                                                       \
			fprintf(stderr, "rank %d: %s:%d: check failed: %s; the error was: %s\n", g_rank, \
				__FILE__, __LINE__, #cond, err);                                     \
			_exit(1);                                                                    \
		}                                                                                    \
	} while (0)

static void msleep(int ms)
{
	poll(NULL, 0, ms);
}

static void put_str(struct ibc_rdv *rdv, const char *key, const char *val)
{
	char err[IBC_ERRLEN];

	CHECK_OK(ibc_rdv_put(rdv, key, val, strlen(val) + 1, err, sizeof(err)), err);
}

static void get_str(struct ibc_rdv *rdv, const char *key, char *val, size_t cap)
{
	char err[IBC_ERRLEN];
	size_t len = 0;

	CHECK_OK(ibc_rdv_get(rdv, key, val, cap, &len, ibc_deadline(10000), err, sizeof(err)), err);
	CHECK(len <= cap && len > 0 && val[len - 1] == '\0');
}

/* Opens the rendezvous as rank/size; a taken port makes rank 0 exit with EXIT_PORT_TAKEN. */
static struct ibc_rdv *child_open(int rank, int size, long timeout_ms)
{
	ibc_settings_t s;
	struct ibc_rdv *rdv = NULL;
	char err[IBC_ERRLEN];
	ibcomm_status_t st;

	settings(&s, rank, size, g_port, timeout_ms);
	st = ibc_rdv_open(&s, ibc_deadline(timeout_ms), &rdv, err, sizeof(err));
	if (st == IBCOMM_ERR_RENDEZVOUS && strstr(err, "taken"))
		_exit(EXIT_PORT_TAKEN);
	CHECK_OK(st, err);
	return rdv;
}

/* Sends junk on a raw connection and expects the server to close it. */
static void send_junk(const void *junk, size_t len)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)g_port),
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	struct pollfd pfd;
	char buf[256];
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	ssize_t n;

	CHECK(fd >= 0);
	CHECK(connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0);
	CHECK(send(fd, junk, len, MSG_NOSIGNAL) == (ssize_t)len);
	pfd = (struct pollfd){ .fd = fd, .events = POLLIN };
	CHECK(poll(&pfd, 1, 5000) == 1);
	n = recv(fd, buf, sizeof(buf), 0);
	CHECK(n == 0 || (n < 0 && errno == ECONNRESET)); /* dropped, nothing answered */
	close(fd);
}

struct mt_arg {
	struct ibc_rdv *rdv;
	char val[64];
};

static void *mt_getter(void *p)
{
	struct mt_arg *a = p;

	get_str(a->rdv, "mt-x", a->val, sizeof(a->val)); /* parked until rank 2 publishes it */
	return NULL;
}

static void job_main(int rank, int size)
{
	static uint8_t big[IBC_RDV_MAX_VAL], got[IBC_RDV_MAX_VAL];
	struct ibc_rdv *rdv;
	char key[64], val[64], want[64], err[IBC_ERRLEN];
	uint64_t t0;
	size_t len;

	rdv = child_open(rank, size, 20000);
	for (size_t i = 0; i < sizeof(big); i++)
		big[i] = (uint8_t)(i * 13 + 1);

	/* PUT/GET across ranks */
	snprintf(key, sizeof(key), "k%d", rank);
	snprintf(val, sizeof(val), "value of rank %d", rank);
	put_str(rdv, key, val);
	if (rank == 1)
		CHECK_OK(ibc_rdv_put(rdv, "big", big, sizeof(big), err, sizeof(err)), err);
	for (int r = 0; r < size; r++) {
		snprintf(key, sizeof(key), "k%d", r);
		snprintf(want, sizeof(want), "value of rank %d", r);
		get_str(rdv, key, val, sizeof(val));
		CHECK(!strcmp(val, want));
	}
	if (rank == 0) {
		CHECK_OK(ibc_rdv_get(rdv, "big", got, sizeof(got), &len, ibc_deadline(10000), err, sizeof(err)), err);
		CHECK(len == sizeof(big) && !memcmp(got, big, len));
		/* a smaller buffer gets the beginning and the full length */
		memset(got, 0, 16);
		CHECK_OK(ibc_rdv_get(rdv, "big", got, 16, &len, ibc_deadline(10000), err, sizeof(err)), err);
		CHECK(len == sizeof(big) && !memcmp(got, big, 16));
	}

	/* a GET waits for a later PUT */
	if (rank == 1) {
		t0 = ibc_now_ms();
		get_str(rdv, "late", val, sizeof(val));
		CHECK(!strcmp(val, "published late"));
		CHECK(ibc_now_ms() - t0 >= 150);
	} else if (rank == 2) {
		msleep(400);
		put_str(rdv, "late", "published late");
	}

	/* a GET deadline; the reply that comes after it is discarded */
	if (rank == 3) {
		t0 = ibc_now_ms();
		CHECK(ibc_rdv_get(rdv, "stale", val, sizeof(val), &len, ibc_deadline(200), err, sizeof(err)) ==
		      IBCOMM_ERR_TIMEOUT);
		CHECK(ibc_now_ms() - t0 >= 150 && ibc_now_ms() - t0 < 5000);
		CHECK(strstr(err, "stale") && strstr(err, "rank 3"));
		put_str(rdv, "r3 timed out", "yes");
		get_str(rdv, "go", val, sizeof(val)); /* the stale VALUE arrives first */
		CHECK(!strcmp(val, "GO"));
		get_str(rdv, "stale", val, sizeof(val));
		CHECK(!strcmp(val, "STALE"));
	} else if (rank == 0) {
		get_str(rdv, "r3 timed out", val, sizeof(val));
		put_str(rdv, "stale", "STALE");
		put_str(rdv, "go", "GO");
	}

	/* two threads share a client: one parked in a GET does not block the other */
	if (rank == 1) {
		struct mt_arg a = { .rdv = rdv };
		pthread_t th;

		CHECK(pthread_create(&th, NULL, mt_getter, &a) == 0);
		msleep(50);
		put_str(rdv, "mt-y", "from the second thread");
		get_str(rdv, "k0", val, sizeof(val));
		CHECK(!strcmp(val, "value of rank 0"));
		pthread_join(th, NULL);
		CHECK(!strcmp(a.val, "after mt-y"));
	} else if (rank == 2) {
		get_str(rdv, "mt-y", val, sizeof(val));
		put_str(rdv, "mt-x", "after mt-y");
	}

	/* connections sending garbage are dropped and do not disturb the job */
	if (rank == 2) {
		static const char http[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
		struct ibc_rdv_msg m = { .type = IBC_RDV_GET, .key = "k0", .keylen = 2 };
		uint8_t buf[64];
		size_t n;
		ibc_wbuf_t w;

		send_junk(http, sizeof(http) - 1);
		w = ibc_wbuf(buf, sizeof(buf)); /* a valid header announcing a huge body */
		ibc_w_u32(&w, IBC_RDV_MAGIC);
		ibc_w_u8(&w, IBC_RDV_VERSION);
		ibc_w_u8(&w, IBC_RDV_PUT);
		ibc_w_u16(&w, 0);
		ibc_w_u32(&w, 1);
		ibc_w_u32(&w, 0x7fffffff);
		send_junk(buf, w.len);
		n = ibc_rdv_encode(&m, buf, sizeof(buf)); /* a GET before any JOIN */
		send_junk(buf, n);
		m = (struct ibc_rdv_msg){ .type = IBC_RDV_JOIN, .rank = 1, .size = 4 }; /* rank 1 again */
		n = ibc_rdv_encode(&m, buf, sizeof(buf));
		{
			struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)g_port),
						  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
			struct ibc_rdv_msg out;
			struct pollfd pfd;
			uint8_t in[IBC_RDV_HDR_LEN + 2 + IBC_RDV_MAX_TEXT];
			ssize_t got_n = 0, k;
			int fd = socket(AF_INET, SOCK_STREAM, 0);
			const char *why;

			CHECK(connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0);
			CHECK(send(fd, buf, n, MSG_NOSIGNAL) == (ssize_t)n);
			pfd = (struct pollfd){ .fd = fd, .events = POLLIN };
			while (poll(&pfd, 1, 5000) == 1 && (k = recv(fd, in + got_n, sizeof(in) - (size_t)got_n, 0)) > 0)
				got_n += k;
			CHECK(ibc_rdv_decode(in, (size_t)got_n, &out, &why) == IBCOMM_OK);
			CHECK(out.type == IBC_RDV_ERROR);
			CHECK(memmem(out.text, out.textlen, "already joined", 14));
			close(fd);
		}
	}

	/* everybody is still there */
	snprintf(key, sizeof(key), "done%d", rank);
	put_str(rdv, key, "done");
	for (int r = 0; r < size; r++) {
		snprintf(key, sizeof(key), "done%d", r);
		get_str(rdv, key, val, sizeof(val));
	}
	ibc_rdv_ref(rdv); /* a second communicator of the job */
	ibc_rdv_unref(rdv);
	snprintf(key, sizeof(key), "after unref %d", rank);
	put_str(rdv, key, "still open");
	ibc_rdv_unref(rdv); /* rank 0: returns at once; the exit waits until the others are gone */
}

/* Size mismatch: rank 1 claims 3 ranks, rank 0 serves 2. */
static void job_size_mismatch(int rank, int size __attribute__((unused)))
{
	ibc_settings_t s;
	struct ibc_rdv *rdv = NULL;
	char err[IBC_ERRLEN];
	ibcomm_status_t st;

	settings(&s, rank, rank == 1 ? 3 : 2, g_port, 1500);
	st = ibc_rdv_open(&s, ibc_deadline(1500), &rdv, err, sizeof(err));
	if (rank == 0 && st == IBCOMM_ERR_RENDEZVOUS && strstr(err, "taken"))
		_exit(EXIT_PORT_TAKEN);
	if (rank == 1) {
		CHECK_ERR(st == IBCOMM_ERR_RENDEZVOUS, err);
		CHECK_ERR(strstr(err, "3 ranks") && strstr(err, "serves 2"), err);
	} else {
		CHECK_ERR(st == IBCOMM_ERR_TIMEOUT, err);
		CHECK_ERR(strstr(err, "missing ranks: 1"), err);
	}
	CHECK(rdv == NULL);
}

/* Two processes claim rank 1 of 3; rank 2 never comes. */
static void job_dup_rank(int rank, int size __attribute__((unused)))
{
	ibc_settings_t s;
	struct ibc_rdv *rdv = NULL;
	char err[IBC_ERRLEN];
	ibcomm_status_t st;
	int as_rank = rank == 2 ? 1 : rank; /* process 2 is the second rank 1 */

	/* late enough that the real rank 1 has joined (its connect backoff reaches 630 ms) */
	if (rank == 2)
		msleep(1000);
	/* rank 1 waits longest, so that rank 0 gives up while rank 1 is still joined */
	settings(&s, as_rank, 3, g_port, rank == 2 ? 1500 : rank == 1 ? 5000 : 2500);
	st = ibc_rdv_open(&s, ibc_deadline(s.timeout_ms), &rdv, err, sizeof(err));
	if (rank == 0 && st == IBCOMM_ERR_RENDEZVOUS && strstr(err, "taken"))
		_exit(EXIT_PORT_TAKEN);
	if (rank == 2) {
		CHECK_ERR(st == IBCOMM_ERR_RENDEZVOUS, err);
		CHECK_ERR(strstr(err, "rank 1 has already joined"), err);
	} else if (rank == 0) {
		CHECK_ERR(st == IBCOMM_ERR_TIMEOUT, err);
		CHECK_ERR(strstr(err, "missing ranks: 2"), err);
	} else {
		/* rank 0 gives up first and its server goes with it */
		CHECK_ERR(st == IBCOMM_ERR_TIMEOUT || st == IBCOMM_ERR_RENDEZVOUS, err);
	}
}

typedef void (*job_fn)(int rank, int size);

/*
 * Runs fn in `size` forked processes, forked in `order` with start delays; retries with
 * another port when rank 0 finds its port taken. Returns the number of failed processes.
 */
static int run_job(job_fn fn, int size, const int *order, const int *delay_ms)
{
	for (int attempt = 0; attempt < 5; attempt++) {
		pid_t pids[16];
		int failed = 0, taken = 0;

		g_port = free_port();
		if (g_port <= 0)
			return size;
		fflush(NULL);
		for (int i = 0; i < size; i++) {
			int r = order[i];
			pid_t pid = fork();

			if (pid < 0)
				return size;
			if (pid == 0) {
				alarm(CHILD_ALARM_S); /* a hung child dies */
				g_rank = r;
				msleep(delay_ms[r]);
				fn(r, size);
				exit(0); /* a normal exit: rank 0's waits for its server's last clients */
			}
			pids[r] = pid;
		}
		for (int r = 0; r < size; r++) {
			int status;

			if (waitpid(pids[r], &status, 0) < 0) {
				failed++;
				continue;
			}
			if (WIFEXITED(status) && WEXITSTATUS(status) == EXIT_PORT_TAKEN) {
				taken = 1;
				for (int q = 0; q < size; q++)
					if (q != r)
						kill(pids[q], SIGKILL);
			} else if (!WIFEXITED(status) || WEXITSTATUS(status)) {
				fprintf(stderr, "\n  rank %d: %s %d\n", r, WIFEXITED(status) ? "exit" : "signal",
					WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
				failed++;
			}
		}
		if (!taken)
			return failed;
	}
	return size;
}

static void test_job(void)
{
	static const int order[] = { 3, 1, 0, 2 };
	static const int delay[] = { 300, 0, 150, 50 }; /* rank 0 (the server) comes late */

	CU_ASSERT_EQUAL(run_job(job_main, 4, order, delay), 0);
}

static void test_size_mismatch(void)
{
	static const int order[] = { 1, 0 };
	static const int delay[] = { 100, 0 };

	CU_ASSERT_EQUAL(run_job(job_size_mismatch, 2, order, delay), 0);
}

static void test_dup_rank(void)
{
	static const int order[] = { 0, 1, 2 };
	static const int delay[] = { 0, 0, 0 };

	CU_ASSERT_EQUAL(run_job(job_dup_rank, 3, order, delay), 0);
}

/* In this process: a job of one, the port-taken error, an unreachable server. */
static void test_single(void)
{
	ibc_settings_t s;
	struct ibc_rdv *rdv = NULL;
	char err[IBC_ERRLEN], key[IBC_RDV_MAX_KEY + 2], val[32];
	static uint8_t big[IBC_RDV_MAX_VAL + 1];
	ibcomm_status_t st;
	size_t len;

	for (int attempt = 0; attempt < 5; attempt++) {
		settings(&s, 0, 1, free_port(), 5000);
		st = ibc_rdv_open(&s, ibc_deadline(5000), &rdv, err, sizeof(err));
		if (!(st == IBCOMM_ERR_RENDEZVOUS && strstr(err, "taken")))
			break;
	}
	CU_ASSERT_EQUAL_FATAL(st, IBCOMM_OK);
	CU_ASSERT_EQUAL(ibc_rdv_put(rdv, "a", "1", 2, err, sizeof(err)), IBCOMM_OK);
	CU_ASSERT_EQUAL(ibc_rdv_put(rdv, "a", "22", 3, err, sizeof(err)), IBCOMM_OK); /* replaces */
	CU_ASSERT_EQUAL(ibc_rdv_get(rdv, "a", val, sizeof(val), &len, ibc_deadline(1000), err, sizeof(err)),
			IBCOMM_OK);
	CU_ASSERT_EQUAL(len, 3);
	CU_ASSERT_STRING_EQUAL(val, "22");
	CU_ASSERT_EQUAL(ibc_rdv_put(rdv, "empty", NULL, 0, err, sizeof(err)), IBCOMM_OK);
	CU_ASSERT_EQUAL(ibc_rdv_get(rdv, "empty", NULL, 0, &len, ibc_deadline(1000), err, sizeof(err)), IBCOMM_OK);
	CU_ASSERT_EQUAL(len, 0);
	CU_ASSERT_EQUAL(ibc_rdv_get(rdv, "none", val, sizeof(val), &len, ibc_deadline(100), err, sizeof(err)),
			IBCOMM_ERR_TIMEOUT);
	memset(key, 'k', sizeof(key) - 1);
	key[sizeof(key) - 1] = '\0';
	CU_ASSERT_EQUAL(ibc_rdv_put(rdv, key, "v", 1, err, sizeof(err)), IBCOMM_ERR_INVALID);
	CU_ASSERT_EQUAL(ibc_rdv_put(rdv, "", "v", 1, err, sizeof(err)), IBCOMM_ERR_INVALID);
	CU_ASSERT_EQUAL(ibc_rdv_put(rdv, "b", big, sizeof(big), err, sizeof(err)), IBCOMM_ERR_INVALID);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "65536"));
	key[IBC_RDV_MAX_KEY] = '\0'; /* the longest key */
	CU_ASSERT_EQUAL(ibc_rdv_put(rdv, key, big, IBC_RDV_MAX_VAL, err, sizeof(err)), IBCOMM_OK);
	ibc_rdv_ref(rdv);
	ibc_rdv_unref(rdv);
	CU_ASSERT_EQUAL(ibc_rdv_get(rdv, "a", val, sizeof(val), &len, ibc_deadline(1000), err, sizeof(err)),
			IBCOMM_OK);
	ibc_rdv_unref(rdv);
}

/* Rank 0's server on a socket handed to it (ibcomm_get_id, a launcher's port-0 address). */
static void test_adopt(void)
{
	int fd = -1, n = 0;
	struct ibc_rdv *rdv = NULL;
	char err[IBC_ERRLEN], val[8];
	ibc_settings_t s;
	size_t len = 0;

	CU_ASSERT_EQUAL_FATAL(ibc_sock_listen("127.0.0.1", "0", &fd, 1, &n, err, sizeof(err)), IBCOMM_OK);
	settings(&s, 0, 1, 1, 5000);
	CU_ASSERT_EQUAL_FATAL(ibc_sock_bound(fd, s.root, sizeof(s.root)), 0);
	CU_ASSERT(strncmp(s.root, "127.0.0.1:", 10) == 0 && ibc_sock_port(fd) > 0);
	s.listen_fd = fd;
	CU_ASSERT_EQUAL_FATAL(ibc_rdv_open(&s, ibc_deadline(5000), &rdv, err, sizeof(err)), IBCOMM_OK);
	CU_ASSERT_EQUAL(ibc_rdv_put(rdv, "k", "v", 2, err, sizeof(err)), IBCOMM_OK);
	CU_ASSERT_EQUAL(ibc_rdv_get(rdv, "k", val, sizeof(val), &len, ibc_deadline(1000), err, sizeof(err)),
			IBCOMM_OK);
	CU_ASSERT_EQUAL(len, 2);
	ibc_rdv_unref(rdv); /* the server closes the socket it adopted */
	CU_ASSERT(fcntl(fd, F_GETFD) < 0);

	/* a socket that is not listening is refused, saying so */
	fd = socket(AF_INET, SOCK_STREAM, 0);
	settings(&s, 0, 1, 1, 300);
	s.listen_fd = fd;
	CU_ASSERT_EQUAL(ibc_rdv_open(&s, ibc_deadline(300), &rdv, err, sizeof(err)), IBCOMM_ERR_INVALID);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "not a listening"));
	close(fd);
}

/* DROP through a real server: the namespace's keys go, the others stay. */
static void test_drop(void)
{
	ibc_settings_t s;
	struct ibc_rdv *rdv = NULL;
	struct rdv_server *srv;
	char err[IBC_ERRLEN], val[8];
	ibcomm_status_t st;
	uint64_t until;

	for (int attempt = 0; attempt < 5; attempt++) {
		settings(&s, 0, 1, free_port(), 5000);
		st = ibc_rdv_open(&s, ibc_deadline(5000), &rdv, err, sizeof(err));
		if (!(st == IBCOMM_ERR_RENDEZVOUS && strstr(err, "taken")))
			break;
	}
	CU_ASSERT_EQUAL_FATAL(st, IBCOMM_OK);
	srv = ibc_rdv_server(rdv);
	CU_ASSERT_EQUAL(ibc_rdv_put(rdv, "7/a", "1", 1, err, sizeof(err)), IBCOMM_OK);
	CU_ASSERT_EQUAL(ibc_rdv_put(rdv, "7/b", "1", 1, err, sizeof(err)), IBCOMM_OK);
	CU_ASSERT_EQUAL(ibc_rdv_put(rdv, "7.1/a", "1", 1, err, sizeof(err)), IBCOMM_OK);
	CU_ASSERT_EQUAL(ibc_rdv_srv_keys(srv), 3);
	ibc_rdv_drop(rdv, "7/", 1);
	for (until = ibc_now_ms() + 5000; ibc_rdv_srv_keys(srv) != 1 && ibc_now_ms() < until;)
		poll(NULL, 0, 1);
	CU_ASSERT_EQUAL(ibc_rdv_srv_keys(srv), 1);
	CU_ASSERT_EQUAL(ibc_rdv_get(rdv, "7.1/a", val, sizeof(val), NULL, ibc_deadline(1000), err, sizeof(err)),
			IBCOMM_OK);
	CU_ASSERT_EQUAL(ibc_rdv_get(rdv, "7/a", val, sizeof(val), NULL, ibc_deadline(50), err, sizeof(err)),
			IBCOMM_ERR_TIMEOUT);
	ibc_rdv_unref(rdv);
}

/* IPv6 loopback, "[::1]:port", when the machine has it. */
static void test_ipv6(void)
{
	struct sockaddr_in6 sa = { .sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT };
	socklen_t sl = sizeof(sa);
	int fd = socket(AF_INET6, SOCK_STREAM, 0);
	struct ibc_rdv *rdv = NULL;
	char err[IBC_ERRLEN], val[8];
	ibc_settings_t s;
	size_t len;

	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) || getsockname(fd, (struct sockaddr *)&sa, &sl)) {
		cm_skip("no IPv6 loopback");
		if (fd >= 0)
			close(fd);
		return;
	}
	close(fd);
	settings(&s, 0, 1, 0, 5000);
	snprintf(s.root, sizeof(s.root), "[::1]:%d", ntohs(sa.sin6_port));
	CU_ASSERT_EQUAL_FATAL(ibc_rdv_open(&s, ibc_deadline(5000), &rdv, err, sizeof(err)), IBCOMM_OK);
	CU_ASSERT_EQUAL(ibc_rdv_put(rdv, "v6", "yes", 4, err, sizeof(err)), IBCOMM_OK);
	CU_ASSERT_EQUAL(ibc_rdv_get(rdv, "v6", val, sizeof(val), &len, ibc_deadline(1000), err, sizeof(err)),
			IBCOMM_OK);
	CU_ASSERT_STRING_EQUAL(val, "yes");
	ibc_rdv_unref(rdv);
}

static void test_port_taken(void)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t sl = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct ibc_rdv *rdv = NULL;
	char err[IBC_ERRLEN];
	ibc_settings_t s;

	CU_ASSERT_FATAL(fd >= 0);
	CU_ASSERT_FATAL(bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0);
	CU_ASSERT_FATAL(listen(fd, 1) == 0);
	CU_ASSERT_FATAL(getsockname(fd, (struct sockaddr *)&sa, &sl) == 0);
	settings(&s, 0, 2, ntohs(sa.sin_port), 2000);
	CU_ASSERT_EQUAL(ibc_rdv_open(&s, ibc_deadline(2000), &rdv, err, sizeof(err)), IBCOMM_ERR_RENDEZVOUS);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "taken"));
	CU_ASSERT_PTR_NULL(rdv);
	close(fd);
}

static void test_unreachable(void)
{
	struct ibc_rdv *rdv = NULL;
	char err[IBC_ERRLEN];
	ibc_settings_t s;
	uint64_t t0 = ibc_now_ms();

	settings(&s, 1, 2, free_port(), 300);
	CU_ASSERT_EQUAL(ibc_rdv_open(&s, ibc_deadline(300), &rdv, err, sizeof(err)), IBCOMM_ERR_RENDEZVOUS);
	CU_ASSERT(ibc_now_ms() - t0 >= 250 && ibc_now_ms() - t0 < 3000);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "could not reach"));
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "rank 1"));
	CU_ASSERT_PTR_NULL(rdv);

	settings(&s, 1, 2, 80, 300);
	snprintf(s.root, sizeof(s.root), "no-such-host.invalid:80");
	CU_ASSERT_EQUAL(ibc_rdv_open(&s, ibc_deadline(300), &rdv, err, sizeof(err)), IBCOMM_ERR_RENDEZVOUS);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "no-such-host.invalid"));
}

int main(int argc, char **argv)
{
	static const struct cm_test tests[] = {
		{ "encode/decode round trips", test_roundtrip },
		{ "encode limits", test_encode_limits },
		{ "truncated, oversized, wrong version rejected", test_reject },
		{ "garbage rejected", test_garbage },
		{ "job of one", test_single },
		{ "key table: DROP", test_store_drop },
		{ "adopted listening socket", test_adopt },
		{ "DROP through the server", test_drop },
		{ "IPv6", test_ipv6 },
		{ "port taken", test_port_taken },
		{ "unreachable", test_unreachable },
		{ "4 ranks in shuffled order", test_job },
		{ "size mismatch", test_size_mismatch },
		{ "duplicate rank", test_dup_rank },
	};

	signal(SIGPIPE, SIG_IGN);
	return CM_MAIN1(argc, argv, "rendezvous", tests);
}
