/*
 * Data-movement collectives on 1..8 real ranks over loopback: broadcast, allgather, gather,
 * scatter, alltoall, barrier; every algorithm forced, every dtype, every root, in place and
 * not, every element on every rank checked, unused buffers and guards untouched.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "harness.h"

static bool run_broadcast(ibcomm_t *comm, const struct hx_case *c)
{
	int rank = ibcomm_rank(comm);
	struct hx_buf b = { 0 };
	struct hx_data d;
	bool ok = true;

	if (!hx_data_init(&d, c->dt, HX_NOOP, c->n, c->count, c->seed))
		return hx_oom();
	if (!hx_buf_new(&b, c->count * d.esz)) {
		ok = hx_oom();
		goto out;
	}
	if (rank == c->root)
		hx_fill(&d, hx_in_row(&d, c->root), b.p, 0, c->count);
	ok = hx_case_ok(comm, c,
			 ibcomm_broadcast(comm, c->count == 0 && c->nullbufs ? NULL : b.p, c->count, c->dt, c->root),
			 "ibcomm_broadcast");
	if (!ok)
		goto out;
	hx_expect(c, rank == c->root ? "root's buf changed" : "buf", &d, hx_in_row(&d, c->root), b.p, 0, c->count);
	hx_guards(c, "buf", &b);
out:
	hx_buf_free(&b);
	hx_data_free(&d);
	return ok;
}

/* Block s of buf (n blocks of count) holds rank s's row. */
static void expect_blocks(const struct hx_case *c, const char *what, const struct hx_data *d, const unsigned char *buf)
{
	char w[96];

	for (int s = 0; s < c->n; s++) {
		snprintf(w, sizeof(w), "%s block %d", what, s);
		if (!hx_expect(c, w, d, hx_in_row(d, s), buf + (size_t)s * c->count * d->esz, 0, c->count))
			break;
	}
}

static bool run_allgather(ibcomm_t *comm, const struct hx_case *c)
{
	int rank = ibcomm_rank(comm);
	size_t esz = hx_esize(c->dt), cnt = c->count;
	struct hx_buf sb = { 0 }, rb = { 0 };
	struct hx_data d;
	void *s, *r;
	bool ok = true;

	if (!hx_data_init(&d, c->dt, HX_NOOP, c->n, cnt, c->seed))
		return hx_oom();
	if (!hx_buf_new(&rb, cnt * esz * (size_t)c->n) || (!c->inplace && !hx_buf_new(&sb, cnt * esz))) {
		ok = hx_oom();
		goto out;
	}
	r = rb.p;
	s = c->inplace ? rb.p + (size_t)rank * cnt * esz : sb.p;
	hx_fill(&d, hx_in_row(&d, rank), s, 0, cnt);
	if (cnt == 0 && c->nullbufs)
		s = r = NULL;
	ok = hx_case_ok(comm, c, ibcomm_allgather(comm, s, r, cnt, c->dt), "ibcomm_allgather");
	if (!ok)
		goto out;
	expect_blocks(c, "recvbuf", &d, rb.p);
	if (!c->inplace) {
		hx_expect(c, "sendbuf changed", &d, hx_in_row(&d, rank), sb.p, 0, cnt);
		hx_guards(c, "sendbuf", &sb);
	}
	hx_guards(c, "recvbuf", &rb);
out:
	hx_buf_free(&sb);
	hx_buf_free(&rb);
	hx_data_free(&d);
	return ok;
}

static bool run_gather(ibcomm_t *comm, const struct hx_case *c)
{
	int rank = ibcomm_rank(comm);
	bool is_root = rank == c->root, inplace = c->inplace && is_root;
	size_t esz = hx_esize(c->dt), cnt = c->count;
	struct hx_buf sb = { 0 }, rb = { 0 };
	struct hx_data d;
	void *s, *r;
	bool ok = true;

	if (!hx_data_init(&d, c->dt, HX_NOOP, c->n, cnt, c->seed))
		return hx_oom();
	if (!hx_buf_new(&rb, cnt * esz * (size_t)c->n) || (!inplace && !hx_buf_new(&sb, cnt * esz))) {
		ok = hx_oom();
		goto out;
	}
	r = is_root || !c->nullbufs ? rb.p : NULL; /* recvbuf is unused on non-roots */
	s = inplace ? rb.p + (size_t)rank * cnt * esz : sb.p;
	hx_fill(&d, hx_in_row(&d, rank), s, 0, cnt);
	if (cnt == 0 && c->nullbufs)
		s = r = NULL;
	ok = hx_case_ok(comm, c, ibcomm_gather(comm, s, r, cnt, c->dt, c->root), "ibcomm_gather");
	if (!ok)
		goto out;
	if (is_root)
		expect_blocks(c, "root's recvbuf", &d, rb.p);
	else
		hx_untouched(c, "non-root's recvbuf (unused)", rb.p, rb.len);
	if (!inplace) {
		hx_expect(c, "sendbuf changed", &d, hx_in_row(&d, rank), sb.p, 0, cnt);
		hx_guards(c, "sendbuf", &sb);
	}
	hx_guards(c, "recvbuf", &rb);
out:
	hx_buf_free(&sb);
	hx_buf_free(&rb);
	hx_data_free(&d);
	return ok;
}

static bool run_scatter(ibcomm_t *comm, const struct hx_case *c)
{
	int rank = ibcomm_rank(comm);
	bool is_root = rank == c->root, inplace = c->inplace && is_root;
	size_t esz = hx_esize(c->dt), rc = c->count, total = rc * (size_t)c->n;
	struct hx_buf sb = { 0 }, rb = { 0 };
	struct hx_data d;
	void *s, *r;
	bool ok = true;

	if (!hx_data_init(&d, c->dt, HX_NOOP, c->n, total, c->seed))
		return hx_oom();
	if (!hx_buf_new(&sb, total * esz) || (!inplace && !hx_buf_new(&rb, rc * esz))) {
		ok = hx_oom();
		goto out;
	}
	if (is_root)
		hx_fill(&d, hx_in_row(&d, rank), sb.p, 0, total);
	s = is_root || !c->nullbufs ? sb.p : NULL; /* sendbuf is unused on non-roots */
	r = inplace ? sb.p + (size_t)rank * rc * esz : rb.p;
	if (rc == 0 && c->nullbufs)
		s = r = NULL;
	ok = hx_case_ok(comm, c, ibcomm_scatter(comm, s, r, rc, c->dt, c->root), "ibcomm_scatter");
	if (!ok)
		goto out;
	hx_expect(c, inplace ? "root's block of sendbuf (in place)" : "recvbuf", &d, hx_in_row(&d, c->root),
		  inplace ? sb.p + (size_t)rank * rc * esz : rb.p, (size_t)rank * rc, rc);
	if (is_root)
		hx_expect(c, "root's sendbuf changed", &d, hx_in_row(&d, rank), sb.p, 0, total);
	else
		hx_untouched(c, "non-root's sendbuf (unused)", sb.p, sb.len);
	hx_guards(c, "sendbuf", &sb);
	if (!inplace)
		hx_guards(c, "recvbuf", &rb);
out:
	hx_buf_free(&sb);
	hx_buf_free(&rb);
	hx_data_free(&d);
	return ok;
}

static bool run_alltoall(ibcomm_t *comm, const struct hx_case *c)
{
	int rank = ibcomm_rank(comm);
	size_t esz = hx_esize(c->dt), cnt = c->count, total = cnt * (size_t)c->n;
	struct hx_buf sb = { 0 }, rb = { 0 };
	struct hx_data d;
	void *s, *r;
	bool ok = true;
	char w[64];

	if (!hx_data_init(&d, c->dt, HX_NOOP, c->n, total, c->seed))
		return hx_oom();
	if (!hx_buf_new(&sb, total * esz) || !hx_buf_new(&rb, total * esz)) {
		ok = hx_oom();
		goto out;
	}
	/* Block j of rank r's sendbuf is row r from j * cnt: distinct for every (sender, receiver). */
	hx_fill(&d, hx_in_row(&d, rank), sb.p, 0, total);
	s = sb.p;
	r = rb.p;
	if (cnt == 0 && c->nullbufs)
		s = r = NULL;
	ok = hx_case_ok(comm, c, ibcomm_alltoall(comm, s, r, cnt, c->dt), "ibcomm_alltoall");
	if (!ok)
		goto out;
	for (int src = 0; src < c->n; src++) {
		snprintf(w, sizeof(w), "recvbuf block %d", src);
		if (!hx_expect(c, w, &d, hx_in_row(&d, src), rb.p + (size_t)src * cnt * esz, (size_t)rank * cnt, cnt))
			break;
	}
	hx_expect(c, "sendbuf changed", &d, hx_in_row(&d, rank), sb.p, 0, total);
	hx_guards(c, "sendbuf", &sb);
	hx_guards(c, "recvbuf", &rb);
out:
	hx_buf_free(&sb);
	hx_buf_free(&rb);
	hx_data_free(&d);
	return ok;
}

static const int bcast_algos[] = { IBC_ALGO_AUTO, IBC_ALGO_TREE, IBC_ALGO_PIPELINE, IBC_ALGO_RD, IBC_ALGO_HIER };
static const int allgather_algos[] = { IBC_ALGO_AUTO, IBC_ALGO_RING, IBC_ALGO_LINEAR, IBC_ALGO_RD };
static const int tree_linear[] = { IBC_ALGO_AUTO, IBC_ALGO_TREE, IBC_ALGO_LINEAR };
static const int pairwise_linear[] = { IBC_ALGO_AUTO, IBC_ALGO_PAIRWISE, IBC_ALGO_LINEAR };

struct plan_job {
	struct hx_plan plan;
	hx_case_fn run;
};

static void plan_job_fn(ibcomm_t *comm, void *arg)
{
	const struct plan_job *pj = arg;

	hx_run_plan(comm, &pj->plan, pj->run);
}

static void run_all_n(const char *name, const struct plan_job *pj)
{
	for (int n = hx_nmin(); n <= hx_nmax(); n++) {
		struct hx_job job = { .name = name, .n = n, .fn = plan_job_fn, .arg = (void *)pj };

		hx_run_job(&job);
	}
}

/* The same cases (up to 65537) on 5 ranks with 1000-byte chunks and 2 credits per peer. */
static void run_small_chunks(const char *name, const struct plan_job *pj)
{
	struct hx_job job = { .name = name, .n = 5, .fn = plan_job_fn, .arg = (void *)pj, .env = hx_small_chunks_env };

	if (hx_nmin() <= 5 && hx_nmax() >= 5)
		hx_run_job(&job);
}

/* plan fields: coll, algos, nalgos, has_op, rooted, has_inplace, per_rank */
static void test_broadcast(void)
{
	static const struct plan_job pj = {
		{ IBC_COLL_BROADCAST, bcast_algos, IBC_ARRAY_SIZE(bcast_algos), false, true, false, false },
		run_broadcast,
	};
	run_all_n("broadcast", &pj);
	run_small_chunks("broadcast, 1000-byte chunks", &pj);
}

static void test_allgather(void)
{
	static const struct plan_job pj = {
		{ IBC_COLL_ALLGATHER, allgather_algos, IBC_ARRAY_SIZE(allgather_algos), false, false, true, true },
		run_allgather,
	};
	run_all_n("allgather", &pj);
	run_small_chunks("allgather, 1000-byte chunks", &pj);
}

static void test_gather(void)
{
	static const struct plan_job pj = {
		{ IBC_COLL_GATHER, tree_linear, IBC_ARRAY_SIZE(tree_linear), false, true, true, true },
		run_gather,
	};
	run_all_n("gather", &pj);
	run_small_chunks("gather, 1000-byte chunks", &pj);
}

static void test_scatter(void)
{
	static const struct plan_job pj = {
		{ IBC_COLL_SCATTER, tree_linear, IBC_ARRAY_SIZE(tree_linear), false, true, true, true },
		run_scatter,
	};
	run_all_n("scatter", &pj);
	run_small_chunks("scatter, 1000-byte chunks", &pj);
}

static void test_alltoall(void)
{
	static const struct plan_job pj = {
		{ IBC_COLL_ALLTOALL, pairwise_linear, IBC_ARRAY_SIZE(pairwise_linear), false, false, false, true },
		run_alltoall,
	};
	run_all_n("alltoall", &pj);
	run_small_chunks("alltoall, 1000-byte chunks", &pj);
}

/*
 * Barrier: every rank bumps a shared counter, then enters the barrier; after it, the counter
 * must show every rank's bump of this round. One rank (a different one each round) is late.
 */
static void barrier_fn(ibcomm_t *comm, void *arg)
{
	static const int algos[] = { IBC_ALGO_AUTO, IBC_ALGO_DISSEM, IBC_ALGO_TREE };
	int n = ibcomm_size(comm), rank = ibcomm_rank(comm), round = 0;

	for (size_t a = 0; a < IBC_ARRAY_SIZE(algos); a++) {
		hx_force_algo(comm, IBC_COLL_BARRIER, algos[a]);
		for (int k = 0; k < 30; k++, round++) {
			int seen;

			if (k % 5 == 0 && rank == k % n) {
				struct timespec ts = { 0, 3 * 1000 * 1000 };

				nanosleep(&ts, NULL);
			}
			__atomic_fetch_add((int *)&hx_scratch[0], 1, __ATOMIC_SEQ_CST);
			if (!hx_ok(comm, ibcomm_barrier(comm), "ibcomm_barrier"))
				return;
			seen = __atomic_load_n((int *)&hx_scratch[0], __ATOMIC_SEQ_CST);
			/* across hosts (HX_HOSTS=1) the ranks share no scratch memory to count arrivals */
			if (seen < n * (round + 1) && hx_env_long("HX_HOSTS", 0) != 1) {
				hx_fail("barrier algo=%s n=%d round %d: left the barrier having seen %d arrivals, "
					"expected >= %d",
					hx_algo_name(algos[a]), n, k, seen, n * (round + 1));
				return;
			}
			hx_case_done();
		}
	}
	hx_force_algo(comm, IBC_COLL_BARRIER, IBC_ALGO_AUTO);
}

static void test_barrier(void)
{
	for (int n = hx_nmin(); n <= hx_nmax(); n++) {
		struct hx_job job = { .name = "barrier", .n = n, .fn = barrier_fn };

		hx_run_job(&job);
	}
}

int main(int argc, char **argv)
{
	static const struct cm_test tests[] = {
		{ "broadcast", test_broadcast }, { "allgather", test_allgather }, { "gather", test_gather },
		{ "scatter", test_scatter },     { "alltoall", test_alltoall },   { "barrier", test_barrier },
	};
	return CM_MAIN1(argc, argv, "coll_move", tests);
}
