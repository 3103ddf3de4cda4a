/*
 * Bounded buffering of unexpected point-to-point messages (IBCOMM_P2P_UNEXPECTED_MAX):
 * a sender far ahead of its receiver (all messages arrive, in order, exact, with the
 * receiver's unexpected bytes never over the limit: the sender waits for credits); a
 * message over the limit (the receive that meets it fails with IBCOMM_ERR_NOMEM naming
 * the limit, nothing is dropped, later receives get every message); a send to itself over
 * the limit; and a peer that declares a huge size (no allocation of it).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "harness.h"
#include "wire.h"

#define LIMIT_FLOOD 65536
#define LIMIT_SMALL 16384
#define NMSG 240
#define TAG_A 7u
#define TAG_B 8u
#define TAG_C 9u
#define WINDOW 4 /* B messages the receiver lets pile up (each <= 8000 bytes) */

static size_t msg_count(int i)
{
	return (size_t)((i * 389) % 2000) + 1; /* 1..2000 int32: up to 8000 bytes */
}

static uint32_t msg_tag(int i)
{
	return i % 3 == 2 ? TAG_B : TAG_A;
}

static void msg_fill(int32_t *buf, size_t cnt, int i)
{
	for (size_t k = 0; k < cnt; k++)
		buf[k] = (int32_t)(i * 10007 + (int)k);
}

static bool recv_msg(ibcomm_t *comm, int i)
{
	size_t cnt = msg_count(i);
	int32_t got[2001], exp[2001];
	char what[96];

	memset(got, 0xA5, sizeof(got));
	snprintf(what, sizeof(what), "ibcomm_recv of message %d (tag %u, %zu int32)", i, msg_tag(i), cnt);
	if (!hx_ok(comm, ibcomm_recv(comm, got, cnt, IBCOMM_INT32, 0, msg_tag(i)), what))
		return false;
	msg_fill(exp, cnt, i);
	if (memcmp(got, exp, cnt * sizeof(int32_t))) {
		hx_fail("message %d (tag %u): wrong data", i, msg_tag(i));
		return false;
	}
	if (got[cnt] != (int32_t)0xA5A5A5A5) {
		hx_fail("message %d: written past its %zu elements", i, cnt);
		return false;
	}
	return true;
}

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

/*
 * Rank 0 sends NMSG messages (tags A and B interleaved, 4 to 8000 bytes) and a last C,
 * without waiting; rank 1 starts late, then takes the A messages as they come and the B
 * messages only when WINDOW of them are set aside, so the unexpected bytes go up and down.
 */
static void flood_fn(ibcomm_t *comm, void *arg)
{
	uint64_t now, peak;
	int32_t buf[2001];

	(void)arg;
	if (hx_rank == 0) {
		for (int i = 0; i < NMSG; i++) {
			char what[64];

			msg_fill(buf, msg_count(i), i);
			snprintf(what, sizeof(what), "ibcomm_send of message %d", i);
			if (!hx_ok(comm, ibcomm_send(comm, buf, msg_count(i), IBCOMM_INT32, 1, msg_tag(i)), what))
				break;
		}
		msg_fill(buf, 1, NMSG);
		hx_ok(comm, ibcomm_send(comm, buf, 1, IBCOMM_INT32, 1, TAG_C), "ibcomm_send of the last message");
		hx_case_done();
		return;
	}
	if (hx_rank != 1) {
		hx_case_done();
		return;
	}
	sleep_ms(200); /* the sender runs ahead until it has no credits */
	{
		int next_b = 2, pending_b = 0;
		bool ok = true;

		for (int i = 0; i < NMSG && ok; i++) {
			if (msg_tag(i) == TAG_B) {
				if (++pending_b < WINDOW)
					continue;
				while (ok && next_b <= i) { /* the B messages set aside so far, in order */
					ok = recv_msg(comm, next_b);
					next_b += 3;
				}
				pending_b = 0;
				continue;
			}
			ok = recv_msg(comm, i);
		}
		for (; ok && next_b < NMSG; next_b += 3)
			ok = recv_msg(comm, next_b);
		int32_t last = 0;

		if (ok && hx_ok(comm, ibcomm_recv(comm, &last, 1, IBCOMM_INT32, 0, TAG_C), "ibcomm_recv of the last message") &&
		    last != NMSG * 10007)
			hx_fail("the last message holds %d, expected %d", last, NMSG * 10007);
	}
	ibc_p2p_held(comm, &now, &peak);
	if (now != 0)
		hx_fail("%llu bytes of unexpected messages still held after every receive", (unsigned long long)now);
	if (peak == 0 || peak > LIMIT_FLOOD)
		hx_fail("unexpected bytes peaked at %llu; expected some, at most IBCOMM_P2P_UNEXPECTED_MAX=%d",
			(unsigned long long)peak, LIMIT_FLOOD);
	hx_case_done();
}

static void test_flood(void)
{
	static const char *const env[] = { "IBCOMM_P2P_UNEXPECTED_MAX=65536", "IBCOMM_TCP_CHUNK=4096",
					   "IBCOMM_TCP_SLOTS=2", NULL };
	struct hx_job job = { .name = "p2p flood", .n = 2, .fn = flood_fn, .env = env };

	hx_run_job(&job);
}

/* A message over the limit stays queued; the receive that met it says why; nothing is lost. */
static void over_fn(ibcomm_t *comm, void *arg)
{
	static int32_t big[10000], got[10000];
	uint64_t now, peak;
	int32_t small = 0;
	ibcomm_status_t st;

	(void)arg;
	for (int k = 0; k < 10000; k++)
		big[k] = k * 3 + 1;
	if (hx_rank == 0) {
		small = 42;
		hx_ok(comm, ibcomm_send(comm, big, 10000, IBCOMM_INT32, 1, TAG_A), "ibcomm_send of 40000 bytes");
		hx_ok(comm, ibcomm_send(comm, &small, 1, IBCOMM_INT32, 1, TAG_B), "ibcomm_send of 4 bytes");
		/* to itself: over the limit is refused at once (nobody else could take it) */
		st = ibcomm_send(comm, big, 10000, IBCOMM_INT32, 0, TAG_C);
		if (st != IBCOMM_ERR_NOMEM || !strstr(ibcomm_last_error(comm), "IBCOMM_P2P_UNEXPECTED_MAX=16384"))
			hx_fail("a 40000-byte send to itself over the limit returned %d (%s)", st,
				ibcomm_last_error(comm));
		hx_ok(comm, ibcomm_send(comm, big, 100, IBCOMM_INT32, 0, TAG_C), "ibcomm_send of 400 bytes to itself");
		memset(got, 0, sizeof(got));
		if (hx_ok(comm, ibcomm_recv(comm, got, 100, IBCOMM_INT32, 0, TAG_C), "ibcomm_recv from itself") &&
		    memcmp(got, big, 400))
			hx_fail("the message to itself came back different");
		hx_case_done();
		return;
	}
	st = ibcomm_recv(comm, &small, 1, IBCOMM_INT32, 0, TAG_B);
	if (st != IBCOMM_ERR_NOMEM)
		hx_fail("ibcomm_recv of tag B behind 40000 bytes of tag A returned %d, expected IBCOMM_ERR_NOMEM", st);
	if (!strstr(ibcomm_last_error(comm), "IBCOMM_P2P_UNEXPECTED_MAX=16384") ||
	    !strstr(ibcomm_last_error(comm), "40000 bytes"))
		hx_fail("the error does not name the limit and the size: %s", ibcomm_last_error(comm));
	/* the message was not dropped: both arrive, in order */
	memset(got, 0, sizeof(got));
	if (hx_ok(comm, ibcomm_recv(comm, got, 10000, IBCOMM_INT32, 0, TAG_A), "ibcomm_recv of tag A after the refusal") &&
	    memcmp(got, big, sizeof(big)))
		hx_fail("the 40000-byte message arrived different");
	if (hx_ok(comm, ibcomm_recv(comm, &small, 1, IBCOMM_INT32, 0, TAG_B), "ibcomm_recv of tag B") && small != 42)
		hx_fail("the 4-byte message holds %d, expected 42", small);
	ibc_p2p_held(comm, &now, &peak);
	if (peak != 0)
		hx_fail("%llu bytes were set aside; expected none", (unsigned long long)peak);
	hx_case_done();
}

static void test_over_limit(void)
{
	static const char *const env[] = { "IBCOMM_P2P_UNEXPECTED_MAX=16K", "IBCOMM_TCP_CHUNK=4096", NULL };
	struct hx_job job = { .name = "p2p over the limit", .n = 2, .fn = over_fn, .env = env };

	hx_run_job(&job);
}

/* A peer declares 1 TiB: the receiver allocates nothing and names it. */
static void liar_fn(ibcomm_t *comm, void *arg)
{
	uint64_t now, peak;
	int32_t v = 0;
	ibcomm_status_t st;

	(void)arg;
	if (hx_rank == 0) {
		unsigned char hdr[12 + 8];
		ibc_wbuf_t w = ibc_wbuf(hdr, sizeof(hdr));
		int rc;

		ibc_w_u32(&w, IBC_WIRE_VERSION);
		ibc_w_u64(&w, 1ull << 40);
		ibc_w_bytes(&w, "12345678", 8);
		rc = ibc_put(comm->tp, 1, IBC_CHAN_P2P, TAG_A, hdr, w.len, true, ibc_call_deadline(comm));
		if (rc < 0)
			hx_fail("raw put of the lying header: %d (%s)", rc, ibcomm_last_error(comm));
		hx_case_done();
		return;
	}
	st = ibcomm_recv(comm, &v, 1, IBCOMM_INT32, 0, TAG_B);
	if (st != IBCOMM_ERR_NOMEM || !strstr(ibcomm_last_error(comm), "1099511627776 bytes"))
		hx_fail("ibcomm_recv behind a message declaring 1 TiB returned %d (%s)", st, ibcomm_last_error(comm));
	ibc_p2p_held(comm, &now, &peak);
	if (peak != 0)
		hx_fail("%llu bytes were set aside for a lying peer", (unsigned long long)peak);
	hx_case_done();
}

static void test_liar(void)
{
	struct hx_job job = { .name = "p2p declared size", .n = 2, .fn = liar_fn };

	hx_run_job(&job);
}

int main(void)
{
	static const struct hx_test tests[] = {
		{ "flood", test_flood },
		{ "over_limit", test_over_limit },
		{ "declared_size", test_liar },
	};
	return hx_main("p2p_bound", tests, IBC_ARRAY_SIZE(tests));
}
