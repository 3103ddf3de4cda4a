/*
 * Mismatch detection: with 2, 3, 4 and 6 ranks over TCP on loopback (or over RDMA with
 * HX_TRANSPORT=rdma, in the Soft-RoCE guest of tests/rxe/rxe-run), one rank (the last) calls
 * with a different count, datatype, op, root or collective (or count 0 where the others pass
 * 100, or a barrier where the others allreduce). Every rank must return IBCOMM_ERR_MISMATCH
 * within 1 s, with both ranks' signatures in its message, every receive buffer untouched
 * (guard pattern over the whole buffer and its guards), and the next, matching, allreduce on
 * the same communicator must succeed (more than two ranks; two ranks: it fails too). With more
 * than two ranks a small allreduce carries the signatures in front of its own data (recursive
 * doubling), every other call compares them first: the cases mix both. IBCOMM timeouts are 5 s (RDMA: 20 s, for the setup of
 * its queue pairs under emulation), so a hang fails quickly. Every rank prints its slowest
 * report ("MISMATCH-TIME").
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "harness.h"

#define MM_MAX_COUNT 1500
#define MM_BOUND_MS 1000

/* One side's call. */
struct mm_call {
	int coll; /* enum ibc_coll: allreduce, broadcast, reduce, allgather or barrier */
	size_t count;
	ibcomm_dtype_t dt;
	ibcomm_op_t op;
	int root;
	const char *want; /* in every rank's message: this call's signature */
};

struct mm_case {
	const char *name;
	struct mm_call normal, odd; /* odd: the last rank's call */
};

static const struct mm_case mm_cases[] = {
	{ "count",
	  { IBC_COLL_ALLREDUCE, 100, IBCOMM_FLOAT32, IBCOMM_SUM, 0, "allreduce #" },
	  { IBC_COLL_ALLREDUCE, 200, IBCOMM_FLOAT32, IBCOMM_SUM, 0, "(float32, sum, count 200)" } },
	{ "datatype of the same size",
	  { IBC_COLL_ALLREDUCE, 100, IBCOMM_FLOAT32, IBCOMM_SUM, 0, "(float32, sum, count 100)" },
	  { IBC_COLL_ALLREDUCE, 100, IBCOMM_INT32, IBCOMM_SUM, 0, "(int32, sum, count 100)" } },
	{ "op",
	  { IBC_COLL_ALLREDUCE, 100, IBCOMM_FLOAT32, IBCOMM_SUM, 0, "(float32, sum, count 100)" },
	  { IBC_COLL_ALLREDUCE, 100, IBCOMM_FLOAT32, IBCOMM_MAX, 0, "(float32, max, count 100)" } },
	{ "root",
	  { IBC_COLL_BROADCAST, 100, IBCOMM_FLOAT32, IBCOMM_SUM, 0, "broadcast #" },
	  { IBC_COLL_BROADCAST, 100, IBCOMM_FLOAT32, IBCOMM_SUM, 1, "(float32, root 1, count 100)" } },
	{ "reduce root",
	  { IBC_COLL_REDUCE, 100, IBCOMM_INT64, IBCOMM_SUM, 0, "(int64, sum, root 0, count 100)" },
	  { IBC_COLL_REDUCE, 100, IBCOMM_INT64, IBCOMM_SUM, 1, "(int64, sum, root 1, count 100)" } },
	{ "collective",
	  { IBC_COLL_ALLREDUCE, 100, IBCOMM_FLOAT32, IBCOMM_SUM, 0, "(float32, sum, count 100)" },
	  { IBC_COLL_BROADCAST, 100, IBCOMM_FLOAT32, IBCOMM_SUM, 0, "(float32, root 0, count 100)" } },
	{ "count 0 against 100",
	  { IBC_COLL_ALLGATHER, 100, IBCOMM_FLOAT32, IBCOMM_SUM, 0, "(float32, count 100)" },
	  { IBC_COLL_ALLGATHER, 0, IBCOMM_FLOAT32, IBCOMM_SUM, 0, "(float32, count 0)" } },
	/* more ranks: a small allreduce or broadcast carries the signatures in its own messages,
	 * a larger one compares them first: the two must still meet */
	{ "count beyond the fused size",
	  { IBC_COLL_ALLREDUCE, 100, IBCOMM_FLOAT32, IBCOMM_SUM, 0, "(float32, sum, count 100)" },
	  { IBC_COLL_ALLREDUCE, 1500, IBCOMM_FLOAT32, IBCOMM_SUM, 0, "(float32, sum, count 1500)" } },
	{ "broadcast count beyond the fused size",
	  { IBC_COLL_BROADCAST, 100, IBCOMM_FLOAT32, IBCOMM_SUM, 1, "(float32, root 1, count 100)" },
	  { IBC_COLL_BROADCAST, 1500, IBCOMM_FLOAT32, IBCOMM_SUM, 1, "(float32, root 1, count 1500)" } },
	{ "allgather fused count 10 against 11",
	  { IBC_COLL_ALLGATHER, 10, IBCOMM_INT32, IBCOMM_SUM, 0, "(int32, count 10)" },
	  { IBC_COLL_ALLGATHER, 11, IBCOMM_INT32, IBCOMM_SUM, 0, "(int32, count 11)" } },
	{ "fused count 1 against 2",
	  { IBC_COLL_ALLREDUCE, 2, IBCOMM_FLOAT64, IBCOMM_MIN, 0, "(float64, min, count 2)" },
	  { IBC_COLL_ALLREDUCE, 1, IBCOMM_FLOAT64, IBCOMM_MIN, 0, "(float64, min, count 1)" } },
	{ "barrier against allreduce",
	  { IBC_COLL_ALLREDUCE, 1, IBCOMM_FLOAT64, IBCOMM_SUM, 0, "allreduce #" },
	  { IBC_COLL_BARRIER, 0, IBCOMM_FLOAT64, IBCOMM_SUM, 0, "'s barrier #" } },
};

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static ibcomm_status_t mm_call(ibcomm_t *comm, const struct mm_call *c, const void *send, void *recv)
{
	switch (c->coll) {
	case IBC_COLL_ALLREDUCE:
		return ibcomm_allreduce(comm, send, recv, c->count, c->dt, c->op);
	case IBC_COLL_BROADCAST:
		return ibcomm_broadcast(comm, recv, c->count, c->dt, c->root);
	case IBC_COLL_REDUCE:
		return ibcomm_reduce(comm, send, recv, c->count, c->dt, c->op, c->root);
	case IBC_COLL_ALLGATHER:
		return ibcomm_allgather(comm, send, recv, c->count, c->dt);
	default:
		return ibcomm_barrier(comm);
	}
}

static bool all_pat(const unsigned char *p, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (p[i] != HX_PAT)
			return false;
	return true;
}

static void mm_fn(ibcomm_t *world, void *arg)
{
	int odd_rank = hx_size - 1;
	unsigned char send[MM_MAX_COUNT * 8];
	char own[32];
	int64_t worst = -1;
	const char *worst_case = "none";

	(void)arg;
	memset(send, 1, sizeof(send));
	snprintf(own, sizeof(own), "rank %d's ", odd_rank);
	for (size_t i = 0; i < IBC_ARRAY_SIZE(mm_cases); i++) {
		const struct mm_case *mc = &mm_cases[i];
		const struct mm_call *c = hx_rank == odd_rank ? &mc->odd : &mc->normal;
		struct hx_buf rb;
		ibcomm_status_t st;
		int64_t t0, dt;
		const char *msg;
		int32_t one = 1, sum = 0;
		ibcomm_t *comm;

		/* each case on a fresh communicator: with two ranks a mismatch leaves it unusable */
		st = ibcomm_dup(world, &comm);
		if (!hx_ok(world, st, "ibcomm_dup"))
			return;
		if (!hx_buf_new(&rb, (size_t)MM_MAX_COUNT * 8 * HX_MAX_RANKS)) {
			hx_fail("%s: out of memory", mc->name);
			ibcomm_destroy(comm);
			return;
		}
		t0 = now_ms();
		st = mm_call(comm, c, send, rb.p);
		dt = now_ms() - t0;
		msg = ibcomm_last_error(comm);
		if (hx_rank == 0)
			fprintf(stderr, "    n=%d %s: rank 0 got %s after %lld ms: %s\n", hx_size, mc->name,
				ibcomm_strerror(st), (long long)dt, msg);
		if (st != IBCOMM_ERR_MISMATCH)
			hx_fail("%s: returned %d (%s), expected IBCOMM_ERR_MISMATCH: %s", mc->name, (int)st,
				ibcomm_strerror(st), msg);
		else if (!strstr(msg, mc->normal.want) || !strstr(msg, mc->odd.want) || !strstr(msg, own) ||
			 !strstr(msg, "does not match"))
			hx_fail("%s: the message lacks a signature (want \"%s\", \"%s\" and \"%s\"): %s", mc->name,
				mc->normal.want, mc->odd.want, own, msg);
		if (dt > worst) {
			worst = dt;
			worst_case = mc->name;
		}
		if (dt > MM_BOUND_MS)
			hx_fail("%s: took %lld ms (bound %d)", mc->name, (long long)dt, MM_BOUND_MS);
		if (!all_pat(rb.base, rb.len + 2 * HX_GUARD))
			hx_fail("%s: the receive buffer was written", mc->name);
		hx_buf_free(&rb);
		/*
		 * More ranks: the communicator stays usable (the signatures were compared before
		 * any data was sent). Two ranks: the signature travels just ahead of the data, so
		 * the communicator fails every later call with the same error, at once.
		 */
		st = ibcomm_allreduce(comm, &one, &sum, 1, IBCOMM_INT32, IBCOMM_SUM);
		if (hx_size == 2 && st != IBCOMM_ERR_MISMATCH)
			hx_fail("%s: a call after the mismatch returned %d, expected IBCOMM_ERR_MISMATCH", mc->name,
				(int)st);
		if (hx_size != 2 && !hx_ok(comm, st, "the matching allreduce after a mismatch")) {
			ibcomm_destroy(comm);
			return;
		}
		if (hx_size != 2 && sum != hx_size)
			hx_fail("%s: the matching allreduce after it gave %d, expected %d", mc->name, (int)sum,
				hx_size);
		ibcomm_destroy(comm);
		sum = 0;
		st = ibcomm_allreduce(world, &one, &sum, 1, IBCOMM_INT32, IBCOMM_SUM);
		if (!hx_ok(world, st, "an allreduce on the parent communicator"))
			return;
		if (sum != hx_size)
			hx_fail("%s: the matching allreduce after it gave %d, expected %d", mc->name, (int)sum,
				hx_size);
		hx_case_done();
	}
	fprintf(stderr, "    MISMATCH-TIME n=%d rank %d over %s: slowest report %lld ms (%s)\n", hx_size, hx_rank,
		ibcomm_transport(world), (long long)worst, worst_case);
}

static const char *const mm_env[] = { "HX_TIMEOUT_MS=5000", NULL };
static const char *const mm_env_rdma[] = { "HX_TIMEOUT_MS=20000", NULL };

static void run_n(int n)
{
	const char *tp = getenv("HX_TRANSPORT");
	bool rdma = tp && strcmp(tp, "rdma") == 0;
	struct hx_job job = { .name = "mismatch", .n = n, .fn = mm_fn, .timeout_s = rdma ? 300 : 60,
			      .env = rdma ? mm_env_rdma : mm_env };

	hx_run_job(&job);
}

static void test_2(void)
{
	run_n(2);
}

static void test_3(void)
{
	run_n(3);
}

static void test_4(void)
{
	run_n(4);
}

static void test_6(void)
{
	run_n(6);
}

int main(int argc, char **argv)
{
	static const struct cm_test tests[] = {
		{ "mismatches on 2 ranks", test_2 },
		{ "mismatches on 3 ranks", test_3 },
		{ "mismatches on 4 ranks", test_4 },
		{ "mismatches on 6 ranks", test_6 },
	};

	return CM_MAIN1(argc, argv, "mismatch", tests);
}
