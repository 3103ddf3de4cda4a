/*
 * Reducing collectives on 1..8 real ranks over loopback: allreduce, reduce, reduce_scatter,
 * every algorithm forced, every dtype and op, every root, in place and not, checked element
 * by element on every rank against the scalar reference of harness.c; and the pipelining of
 * a large ring allreduce.
 */
#include <stdio.h>
#include <string.h>

#include "harness.h"

static bool run_allreduce(ibcomm_t *comm, const struct hx_case *c)
{
	int rank = ibcomm_rank(comm);
	size_t len = c->count * hx_esize(c->dt);
	struct hx_buf sb = { 0 }, rb = { 0 };
	struct hx_data d;
	void *s, *r;
	bool ok = true;

	if (!hx_data_init(&d, c->dt, c->op, c->n, c->count, c->seed))
		return hx_oom();
	if (!hx_buf_new(&sb, len) || (!c->inplace && !hx_buf_new(&rb, len))) {
		ok = hx_oom();
		goto out;
	}
	hx_fill(&d, hx_in_row(&d, rank), sb.p, 0, c->count);
	s = sb.p;
	r = c->inplace ? sb.p : rb.p;
	if (c->count == 0 && c->nullbufs)
		s = r = NULL;
	ok = hx_case_ok(comm, c, ibcomm_allreduce(comm, s, r, c->count, c->dt, c->op), "ibcomm_allreduce");
	if (!ok)
		goto out;
	hx_expect(c, c->inplace ? "buf (in place)" : "recvbuf", &d, d.ref, c->inplace ? sb.p : rb.p, 0, c->count);
	if (!c->inplace) {
		hx_expect(c, "sendbuf changed", &d, hx_in_row(&d, rank), sb.p, 0, c->count);
		hx_guards(c, "recvbuf", &rb);
	}
	hx_guards(c, "sendbuf", &sb);
out:
	hx_buf_free(&sb);
	hx_buf_free(&rb);
	hx_data_free(&d);
	return ok;
}

static bool run_reduce(ibcomm_t *comm, const struct hx_case *c)
{
	int rank = ibcomm_rank(comm);
	bool is_root = rank == c->root;
	size_t len = c->count * hx_esize(c->dt);
	struct hx_buf sb = { 0 }, rb = { 0 };
	struct hx_data d;
	void *s, *r;
	bool ok = true;

	if (!hx_data_init(&d, c->dt, c->op, c->n, c->count, c->seed))
		return hx_oom();
	if (!hx_buf_new(&sb, len) || (!c->inplace && !hx_buf_new(&rb, len))) {
		ok = hx_oom();
		goto out;
	}
	hx_fill(&d, hx_in_row(&d, rank), sb.p, 0, c->count);
	s = sb.p;
	r = c->inplace ? sb.p : rb.p;
	if (!is_root && !c->inplace && c->nullbufs)
		r = NULL; /* recvbuf is unused on non-roots */
	if (c->count == 0 && c->nullbufs)
		s = r = NULL;
	ok = hx_case_ok(comm, c, ibcomm_reduce(comm, s, r, c->count, c->dt, c->op, c->root), "ibcomm_reduce");
	if (!ok)
		goto out;
	if (is_root)
		hx_expect(c, c->inplace ? "root's buf (in place)" : "root's recvbuf", &d, d.ref,
			  c->inplace ? sb.p : rb.p, 0, c->count);
	else if (c->inplace)
		hx_expect(c, "non-root's buf (in place, unused: must be unchanged)", &d, hx_in_row(&d, rank), sb.p, 0,
			  c->count);
	else
		hx_untouched(c, "non-root's recvbuf (unused)", rb.p, rb.len);
	if (!c->inplace) {
		hx_expect(c, "sendbuf changed", &d, hx_in_row(&d, rank), sb.p, 0, c->count);
		hx_guards(c, "recvbuf", &rb);
	}
	hx_guards(c, "sendbuf", &sb);
out:
	hx_buf_free(&sb);
	hx_buf_free(&rb);
	hx_data_free(&d);
	return ok;
}

static bool run_reduce_scatter(ibcomm_t *comm, const struct hx_case *c)
{
	int rank = ibcomm_rank(comm);
	size_t esz = hx_esize(c->dt), rc = c->count, total = rc * (size_t)c->n;
	struct hx_buf sb = { 0 }, rb = { 0 };
	struct hx_data d;
	void *s, *r;
	bool ok = true;

	if (!hx_data_init(&d, c->dt, c->op, c->n, total, c->seed))
		return hx_oom();
	if (!hx_buf_new(&sb, total * esz) || (!c->inplace && !hx_buf_new(&rb, rc * esz))) {
		ok = hx_oom();
		goto out;
	}
	hx_fill(&d, hx_in_row(&d, rank), sb.p, 0, total);
	s = sb.p;
	r = c->inplace ? sb.p + (size_t)rank * rc * esz : rb.p;
	if (c->count == 0 && c->nullbufs)
		s = r = NULL;
	ok = hx_case_ok(comm, c, ibcomm_reduce_scatter(comm, s, r, rc, c->dt, c->op), "ibcomm_reduce_scatter");
	if (!ok)
		goto out;
	hx_expect(c, c->inplace ? "own block of sendbuf (in place)" : "recvbuf", &d, d.ref,
		  c->inplace ? sb.p + (size_t)rank * rc * esz : rb.p, (size_t)rank * rc, rc);
	if (!c->inplace) {
		hx_expect(c, "sendbuf changed", &d, hx_in_row(&d, rank), sb.p, 0, total);
		hx_guards(c, "recvbuf", &rb);
	}
	hx_guards(c, "sendbuf", &sb);
out:
	hx_buf_free(&sb);
	hx_buf_free(&rb);
	hx_data_free(&d);
	return ok;
}

static const int allreduce_algos[] = { IBC_ALGO_AUTO, IBC_ALGO_RING, IBC_ALGO_RD, IBC_ALGO_TREE, IBC_ALGO_HIER };
static const int reduce_algos[] = { IBC_ALGO_AUTO, IBC_ALGO_TREE, IBC_ALGO_LINEAR };
static const int reduce_scatter_algos[] = { IBC_ALGO_AUTO, IBC_ALGO_RING, IBC_ALGO_LINEAR };

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

/* The same cases (up to 65537) on n ranks with 1000-byte chunks and 2 credits per peer. */
static void run_small_chunks_n(const char *name, const struct plan_job *pj, int n)
{
	struct hx_job job = { .name = name, .n = n, .fn = plan_job_fn, .arg = (void *)pj, .env = hx_small_chunks_env };

	if (hx_nmin() <= n && hx_nmax() >= n)
		hx_run_job(&job);
}

static void run_small_chunks(const char *name, const struct plan_job *pj)
{
	run_small_chunks_n(name, pj, 5);
}

static void test_allreduce(void)
{
	static const struct plan_job pj = {
		{ IBC_COLL_ALLREDUCE, allreduce_algos, IBC_ARRAY_SIZE(allreduce_algos), true, false, true, false },
		run_allreduce,
	};
	run_all_n("allreduce", &pj);
	run_small_chunks("allreduce, 1000-byte chunks", &pj);
	/* two ranks: the call signature rides in front of a first chunk only when both fit */
	run_small_chunks_n("allreduce, 1000-byte chunks", &pj, 2);
}

static void test_reduce(void)
{
	static const struct plan_job pj = {
		{ IBC_COLL_REDUCE, reduce_algos, IBC_ARRAY_SIZE(reduce_algos), true, true, true, false },
		run_reduce,
	};
	run_all_n("reduce", &pj);
	run_small_chunks("reduce, 1000-byte chunks", &pj);
}

static void test_reduce_scatter(void)
{
	static const struct plan_job pj = {
		{ IBC_COLL_REDUCE_SCATTER, reduce_scatter_algos, IBC_ARRAY_SIZE(reduce_scatter_algos), true, false,
		  true, true },
		run_reduce_scatter,
	};
	run_all_n("reduce_scatter", &pj);
	run_small_chunks("reduce_scatter, 1000-byte chunks", &pj);
}

/* An 8 MiB ring allreduce keeps more than one chunk in flight to a peer. */
static void pipeline_fn(ibcomm_t *comm, void *arg)
{
	struct hx_case c = {
		.coll = IBC_COLL_ALLREDUCE,
		.algo = IBC_ALGO_RING,
		.n = ibcomm_size(comm),
		.count = 8 * HX_MIB / 4,
		.dt = IBCOMM_FLOAT32,
		.op = IBCOMM_SUM,
		.root = -1,
		.seed = 12345,
	};
	ibc_tp_counters_t *cnt = &comm->tp->cnt;

	hx_force_algo(comm, c.coll, c.algo);
	if (!run_allreduce(comm, &c))
		return;
	hx_case_done();
	if (hx_rank == 0)
		fprintf(stderr, "  [pipeline] rank 0: puts %llu, bytes %llu, credit waits %llu, max in flight %u, "
				"max chunk %zu, slots %u\n",
			(unsigned long long)cnt->puts, (unsigned long long)cnt->bytes_put,
			(unsigned long long)cnt->credit_waits, cnt->max_inflight, comm->tp->max_chunk, comm->tp->nslots);
	if (cnt->max_inflight < 2)
		hx_fail("pipelining: after an 8 MiB ring allreduce on %d ranks, tp->cnt.max_inflight = %u (want >= 2; "
			"puts %llu, max_chunk %zu, nslots %u)",
			c.n, cnt->max_inflight, (unsigned long long)cnt->puts, comm->tp->max_chunk, comm->tp->nslots);
}

static void test_pipeline(void)
{
	struct hx_job job = { .name = "pipeline", .n = 4, .fn = pipeline_fn };

	hx_run_job(&job);
}

int main(int argc, char **argv)
{
	static const struct cm_test tests[] = {
		{ "allreduce", test_allreduce },
		{ "reduce", test_reduce },
		{ "reduce_scatter", test_reduce_scatter },
		{ "pipeline", test_pipeline },
	};
	return CM_MAIN1(argc, argv, "coll_reduce", tests);
}
