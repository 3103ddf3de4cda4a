/*
 * The collectives with per-rank counts on 1..8 real ranks over loopback: allgatherv and
 * alltoallv with every algorithm forced, every dtype, counts all zero, equal, uneven with
 * zeros, one rank sending everything, and large (many chunks); blocks placed in reverse rank
 * order with gaps; every element on every rank checked, gaps, guards and sendbuf untouched;
 * allgatherv in place. Then counts that disagree between ranks: IBCOMM_ERR_MISMATCH on every
 * rank within bounded time, every rank naming the same pair of ranks and its counts, nothing
 * written, the communicator still usable; and the argument errors.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "harness.h"

#define GAP 3 /* elements between blocks, never written */

enum pattern { PAT_ZERO, PAT_EQUAL, PAT_UNEVEN, PAT_ONE, PAT_LARGE, PAT_COUNT };
static const char *const pat_names[PAT_COUNT] = { "all-zero", "equal", "uneven", "one-sender", "large" };

/* Elements rank s sends to rank j (allgatherv: j is ignored). */
static size_t vcount(bool a2a, enum pattern pat, int n, int s, int j)
{
	switch (pat) {
	case PAT_ZERO:
		return 0;
	case PAT_EQUAL:
		return 5;
	case PAT_UNEVEN:
		if (a2a)
			return (s + j) % 4 == 0 ? 0 : (size_t)(s * 5 + j * 3) % 7 + 1;
		return s % 3 == 1 ? 0 : (size_t)(s * 37 + 5) % 23 + 1;
	case PAT_ONE:
		return s == n / 2 ? 1001 + (a2a ? (size_t)j : 0) : 0;
	case PAT_LARGE:
		return a2a ? 3001 + (size_t)s * 3 + (size_t)j * 11 : 20001 + 7 * (size_t)s;
	case PAT_COUNT:
		break;
	}
	return 0;
}

/* Value of element i of what rank s sends to rank j: exact in every dtype. */
static void put_val(ibcomm_dtype_t dt, int s, int j, size_t i, uint32_t seed, void *dst)
{
	int64_t v = (int64_t)((s * 131 + j * 29 + (int64_t)(i % 4099) * 7 + seed * 17) % 199);

	hx_encode(dt, hx_is_unsigned(dt) ? v : v - 99, dst);
}

/* displs for counts[0..n): blocks in reverse rank order, GAP elements before each; returns the extent. */
static size_t layout(int n, const size_t *counts, size_t *displs)
{
	size_t off = 0;

	for (int j = n - 1; j >= 0; j--) {
		off += GAP;
		displs[j] = off;
		off += counts[j];
	}
	return off + GAP;
}

/* Compares len bytes; on a difference records a failure naming the first differing byte. */
static bool same(const struct hx_case *c, const char *what, const unsigned char *got, const unsigned char *want,
		 size_t len)
{
	char cs[256];

	for (size_t i = 0; i < len; i++) {
		if (got[i] == want[i])
			continue;
		hx_case_str(c, cs, sizeof(cs));
		hx_fail("%s: %s: byte %zu is 0x%02x, expected 0x%02x", cs, what, i, got[i], want[i]);
		return false;
	}
	return true;
}

/* ---- allgatherv ---- */
static bool run_allgatherv(ibcomm_t *comm, const struct hx_case *c, enum pattern pat)
{
	int n = c->n, rank = ibcomm_rank(comm);
	size_t esz = hx_esize(c->dt), counts[HX_MAX_RANKS], displs[HX_MAX_RANKS], ext;
	struct hx_buf sb = { 0 }, rb = { 0 };
	unsigned char *want = NULL, *s;
	bool ok = true;

	for (int j = 0; j < n; j++)
		counts[j] = vcount(false, pat, n, j, 0);
	ext = layout(n, counts, displs) * esz;
	if (!hx_buf_new(&rb, ext) || !hx_buf_new(&sb, counts[rank] * esz) || !(want = malloc(ext))) {
		ok = hx_oom();
		goto out;
	}
	s = c->inplace ? rb.p + displs[rank] * esz : sb.p;
	for (size_t i = 0; i < counts[rank]; i++)
		put_val(c->dt, rank, 0, i, c->seed, s + i * esz);
	memset(want, HX_PAT, ext);
	for (int j = 0; j < n; j++)
		for (size_t i = 0; i < counts[j]; i++)
			put_val(c->dt, j, 0, i, c->seed, want + (displs[j] + i) * esz);
	ok = hx_case_ok(comm, c, ibcomm_allgatherv(comm, s, counts[rank], rb.p, counts, displs, c->dt),
		       "ibcomm_allgatherv");
	if (!ok)
		goto out;
	same(c, "recvbuf (blocks and gaps)", rb.p, want, ext);
	hx_guards(c, "recvbuf", &rb);
	if (!c->inplace)
		same(c, "sendbuf changed", sb.p, want + displs[rank] * esz, counts[rank] * esz);
	hx_guards(c, "sendbuf", &sb);
out:
	free(want);
	hx_buf_free(&sb);
	hx_buf_free(&rb);
	return ok;
}

/* ---- alltoallv ---- */
static bool run_alltoallv(ibcomm_t *comm, const struct hx_case *c, enum pattern pat)
{
	int n = c->n, rank = ibcomm_rank(comm);
	size_t esz = hx_esize(c->dt), sc[HX_MAX_RANKS], sd[HX_MAX_RANKS], rc[HX_MAX_RANKS], rd[HX_MAX_RANKS], sext, rext;
	struct hx_buf sb = { 0 }, rb = { 0 };
	unsigned char *swant = NULL, *rwant = NULL;
	bool ok = true;

	for (int j = 0; j < n; j++) {
		sc[j] = vcount(true, pat, n, rank, j);
		rc[j] = vcount(true, pat, n, j, rank);
	}
	sext = layout(n, sc, sd) * esz;
	rext = layout(n, rc, rd) * esz;
	if (!hx_buf_new(&sb, sext) || !hx_buf_new(&rb, rext) || !(swant = malloc(sext)) || !(rwant = malloc(rext))) {
		ok = hx_oom();
		goto out;
	}
	memset(rwant, HX_PAT, rext);
	for (int j = 0; j < n; j++) {
		for (size_t i = 0; i < sc[j]; i++)
			put_val(c->dt, rank, j, i, c->seed, sb.p + (sd[j] + i) * esz);
		for (size_t i = 0; i < rc[j]; i++)
			put_val(c->dt, j, rank, i, c->seed, rwant + (rd[j] + i) * esz);
	}
	memcpy(swant, sb.p, sext);
	ok = hx_case_ok(comm, c, ibcomm_alltoallv(comm, sb.p, sc, sd, rb.p, rc, rd, c->dt), "ibcomm_alltoallv");
	if (!ok)
		goto out;
	same(c, "recvbuf (blocks and gaps)", rb.p, rwant, rext);
	same(c, "sendbuf changed", sb.p, swant, sext);
	hx_guards(c, "recvbuf", &rb);
	hx_guards(c, "sendbuf", &sb);
out:
	free(swant);
	free(rwant);
	hx_buf_free(&sb);
	hx_buf_free(&rb);
	return ok;
}

struct vjob {
	bool a2a;
	int pmin, pmax; /* patterns */
	int ndt;        /* dtypes: every one (0) or the first ndt of a spread */
};

static void vjob_fn(ibcomm_t *comm, void *arg)
{
	static const int ag_algos[] = { IBC_ALGO_AUTO, IBC_ALGO_RING, IBC_ALGO_LINEAR };
	/* MIXED: pairwise on even ranks, linear on odd ones (alltoallv's algorithms interoperate) */
	enum { MIXED = -1 };
	static const int a2a_algos[] = { IBC_ALGO_AUTO, IBC_ALGO_PAIRWISE, IBC_ALGO_LINEAR, MIXED };
	static const ibcomm_dtype_t spread[] = { IBCOMM_INT32, IBCOMM_FLOAT16, IBCOMM_UINT8, IBCOMM_FLOAT64 };
	const struct vjob *vj = arg;
	int coll = vj->a2a ? IBC_COLL_ALLTOALLV : IBC_COLL_ALLGATHERV;
	const int *algos = vj->a2a ? a2a_algos : ag_algos;
	int ndt = vj->ndt ? vj->ndt : IBCOMM_DTYPE_COUNT;
	uint32_t seed = 1;

	for (int pat = vj->pmin; pat <= vj->pmax; pat++)
		for (int d = 0; d < ndt; d++)
			for (int al = 0; al < (vj->a2a ? 4 : 3); al++)
				for (int ip = 0; ip < (vj->a2a ? 1 : 2); ip++) {
					struct hx_case c = { .label = NULL, .coll = coll, .algo = algos[al],
							     .n = ibcomm_size(comm), .op = HX_NOOP, .root = -1,
							     .inplace = ip, .seed = seed++ };
					char label[64];
					bool ok;

					c.dt = vj->ndt ? spread[d] : (ibcomm_dtype_t)d;
					snprintf(label, sizeof(label), "%s %s algo=%s", vj->a2a ? "alltoallv" : "allgatherv",
						 pat_names[pat], algos[al] == MIXED ? "mixed" : hx_algo_name(algos[al]));
					c.label = label;
					hx_force_algo(comm, coll, algos[al] != MIXED ? algos[al] :
						      ibcomm_rank(comm) % 2 ? IBC_ALGO_LINEAR : IBC_ALGO_PAIRWISE);
					ok = vj->a2a ? run_alltoallv(comm, &c, pat) : run_allgatherv(comm, &c, pat);
					if (!ok)
						return;
					hx_case_done();
				}
	hx_force_algo(comm, coll, IBC_ALGO_AUTO);
}

static void run_n(const char *name, const struct vjob *vj, int nmin, int nmax, const char *const *env)
{
	for (int n = IBC_MAX(nmin, hx_nmin()); n <= IBC_MIN(nmax, hx_nmax()); n++) {
		struct hx_job job = { .name = name, .n = n, .fn = vjob_fn, .arg = (void *)vj, .env = env };

		hx_run_job(&job);
	}
}

static void test_allgatherv(void)
{
	static const struct vjob small = { false, PAT_ZERO, PAT_ONE, 0 }, large = { false, PAT_LARGE, PAT_LARGE, 2 };

	run_n("allgatherv", &small, 1, HX_MAX_RANKS, NULL);
	run_n("allgatherv, large", &large, 1, HX_MAX_RANKS, NULL);
	/* many odd-sized chunks and 2 credits per peer */
	run_n("allgatherv, 1000-byte chunks", &large, 5, 5, hx_small_chunks_env);
}

static void test_alltoallv(void)
{
	static const struct vjob small = { true, PAT_ZERO, PAT_ONE, 0 }, large = { true, PAT_LARGE, PAT_LARGE, 2 };

	run_n("alltoallv", &small, 1, HX_MAX_RANKS, NULL);
	run_n("alltoallv, large", &large, 1, HX_MAX_RANKS, NULL);
	run_n("alltoallv, 1000-byte chunks", &large, 5, 5, hx_small_chunks_env);
}

/* Blocks of several default-size (512 KiB) chunks each, on 3 ranks. */
static void big_fn(ibcomm_t *comm, void *arg)
{
	enum { BIG = 1200 * 1024 + 3 };
	int n = ibcomm_size(comm), rank = ibcomm_rank(comm);
	size_t c1[HX_MAX_RANKS], d1[HX_MAX_RANKS], ext = 0;
	unsigned char *s = malloc(BIG), *r = malloc((size_t)n * BIG + 1);

	(void)arg;
	if (!s || !r) {
		hx_oom();
		goto out;
	}
	for (int j = 0; j < n; j++) {
		c1[j] = BIG - (size_t)j * 1001;
		d1[j] = ext;
		ext += c1[j];
	}
	for (size_t i = 0; i < c1[rank]; i++)
		s[i] = (unsigned char)(i * 7 + (size_t)rank);
	r[ext] = HX_PAT;
	if (hx_ok(comm, ibcomm_allgatherv(comm, s, c1[rank], r, c1, d1, IBCOMM_UINT8), "big ibcomm_allgatherv")) {
		for (int j = 0; j < n; j++)
			for (size_t i = 0; i < c1[j]; i++)
				if (r[d1[j] + i] != (unsigned char)(i * 7 + (size_t)j)) {
					hx_fail("big allgatherv: block %d byte %zu is %u", j, i, r[d1[j] + i]);
					goto out;
				}
		if (r[ext] != HX_PAT)
			hx_fail("big allgatherv: wrote past the last block");
	}
	hx_case_done();
out:
	free(s);
	free(r);
}

static void test_large_chunks(void)
{
	struct hx_job job = { .name = "allgatherv, blocks of several 512 KiB chunks", .n = 3, .fn = big_fn };

	if (hx_nmin() <= 3 && hx_nmax() >= 3)
		hx_run_job(&job);
}

/* ---- counts that disagree ---- */
static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/*
 * Expects IBCOMM_ERR_MISMATCH within 10 s, with `detail` in the message when given, and
 * recvbuf (rlen bytes) untouched.
 */
static void expect_mismatch(ibcomm_t *comm, const char *what, ibcomm_status_t st, double t0, const char *detail,
			    const struct hx_buf *rb)
{
	struct hx_case c = { .label = what, .n = ibcomm_size(comm), .dt = IBCOMM_INT32, .op = HX_NOOP, .root = -1 };
	double took = now_s() - t0;

	if (st != IBCOMM_ERR_MISMATCH)
		hx_fail("%s: returned %d (%s), expected IBCOMM_ERR_MISMATCH: %s", what, (int)st, ibcomm_strerror(st),
			ibcomm_last_error(comm));
	else if (detail && !strstr(ibcomm_last_error(comm), detail))
		hx_fail("%s: the detail '%s' does not say '%s'", what, ibcomm_last_error(comm), detail);
	if (took > 10)
		hx_fail("%s: the mismatch took %.1f s to report", what, took);
	hx_untouched(&c, "recvbuf after a mismatch", rb->p, rb->len);
	hx_guards(&c, "recvbuf after a mismatch", rb);
}

/* A correct call right after: the communicator is still usable. */
static void still_usable(ibcomm_t *comm, const char *what)
{
	int n = ibcomm_size(comm), rank = ibcomm_rank(comm);
	size_t counts[HX_MAX_RANKS], displs[HX_MAX_RANKS];
	int32_t s = 1000 + rank, r[HX_MAX_RANKS];
	char w[128];

	for (int j = 0; j < n; j++) {
		counts[j] = 1;
		displs[j] = (size_t)j;
	}
	snprintf(w, sizeof(w), "allgatherv after %s", what);
	if (!hx_ok(comm, ibcomm_allgatherv(comm, &s, 1, r, counts, displs, IBCOMM_INT32), w))
		return;
	for (int j = 0; j < n; j++)
		if (r[j] != 1000 + j)
			hx_fail("%s: block %d is %d", w, j, (int)r[j]);
}

static void mismatch_fn(ibcomm_t *comm, void *arg)
{
	int n = ibcomm_size(comm), rank = ibcomm_rank(comm), bad = n - 1, k = 0;
	size_t counts[HX_MAX_RANKS], displs[HX_MAX_RANKS], sc[HX_MAX_RANKS], sd[HX_MAX_RANKS], ext;
	int32_t sbuf[64] = { 0 };
	struct hx_buf rb = { 0 };
	char detail[160];
	double t0;

	(void)arg;
	for (int j = 0; j < n; j++)
		counts[j] = (size_t)(3 + j % 4);
	ext = layout(n, counts, displs) + 8; /* room for a few more elements than expected */
	if (!hx_buf_new(&rb, ext * 4)) {
		hx_oom();
		return;
	}

	/* 1. allgatherv: rank `bad` expects one element more from rank k */
	if (rank == bad)
		counts[k]++;
	snprintf(detail, sizeof(detail), "rank %d's sendcount is %zu but rank %d's recvcounts[%d] is %zu (1 pair of "
		 "ranks disagrees)", k, (size_t)(3 + k % 4), bad, k, (size_t)(3 + k % 4) + 1);
	t0 = now_s();
	expect_mismatch(comm, "allgatherv, recvcounts[k] differs on one rank",
			ibcomm_allgatherv(comm, sbuf, (size_t)(3 + rank % 4), rb.p, counts, displs, IBCOMM_INT32), t0,
			detail, &rb);
	if (rank == bad)
		counts[k]--;
	still_usable(comm, "a recvcounts mismatch");
	hx_case_done();

	/* 2. allgatherv: rank k sends 2 elements more than every rank expects (an overrun if unchecked) */
	snprintf(detail, sizeof(detail), "rank %d's sendcount is %zu but rank 0's recvcounts[%d] is %zu (%d pair%s",
		 k, counts[k] + 2, k, counts[k], n, n > 1 ? "s of ranks disagree)" : " of ranks disagrees)");
	t0 = now_s();
	expect_mismatch(comm, "allgatherv, one rank's sendcount too large",
			ibcomm_allgatherv(comm, sbuf, counts[rank] + (rank == k ? 2 : 0), rb.p, counts, displs,
					  IBCOMM_INT32),
			t0, detail, &rb);
	still_usable(comm, "a sendcount mismatch");
	hx_case_done();

	/* 3. alltoallv: rank 0 sends 3 more to rank bad than it expects; 4. rank bad expects nothing from 0 */
	for (int variant = 0; variant < 2; variant++) {
		size_t rc[HX_MAX_RANKS], rd[HX_MAX_RANKS], pair;

		for (int j = 0; j < n; j++) {
			sc[j] = (size_t)(1 + (rank + j) % 3);
			rc[j] = (size_t)(1 + (rank + j) % 3);
		}
		layout(n, sc, sd);
		layout(n, rc, rd);
		pair = (size_t)(1 + bad % 3); /* what 0 sends to bad (and bad expects), before the change */
		if (variant == 0 && rank == 0)
			sc[bad] += 3;
		if (variant == 1 && rank == bad)
			rc[0] = 0;
		snprintf(detail, sizeof(detail), "rank 0's sendcounts[%d] is %zu but rank %d's recvcounts[0] is %zu (1 pair "
			 "of ranks disagrees)", bad, variant == 0 ? pair + 3 : pair, bad, variant == 1 ? (size_t)0 : pair);
		t0 = now_s();
		expect_mismatch(comm, variant ? "alltoallv, recvcounts[0] 0 on one rank" : "alltoallv, sendcounts too large",
				ibcomm_alltoallv(comm, sbuf, sc, sd, rb.p, rc, rd, IBCOMM_INT32), t0,
				detail, &rb);
		still_usable(comm, "an alltoallv mismatch");
		hx_case_done();
	}
	hx_buf_free(&rb);
}

static void test_mismatch(void)
{
	for (int n = hx_nmin(); n <= hx_nmax(); n++) {
		struct hx_job job = { .name = "counts that disagree", .n = n, .fn = mismatch_fn, .timeout_s = 90 };

		hx_run_job(&job);
	}
}

/*
 * Rank 0 calls allgather where the others call allgatherv (same sizes): a mismatch on every
 * rank within bounded time, nothing written. On two ranks the allgather side may have sent
 * data already, so the communicator is not used after (no final barrier).
 */
static void other_coll_fn(ibcomm_t *comm, void *arg)
{
	int n = ibcomm_size(comm), rank = ibcomm_rank(comm);
	size_t counts[HX_MAX_RANKS], displs[HX_MAX_RANKS];
	int32_t sbuf[2] = { rank, rank };
	struct hx_buf rb = { 0 };
	ibcomm_status_t st;
	double t0;

	(void)arg;
	for (int j = 0; j < n; j++) {
		counts[j] = 2;
		displs[j] = 2 * (size_t)j;
	}
	if (!hx_buf_new(&rb, 2 * (size_t)n * 4)) {
		hx_oom();
		return;
	}
	t0 = now_s();
	if (rank == 0)
		st = ibcomm_allgather(comm, sbuf, rb.p, 2, IBCOMM_INT32);
	else
		st = ibcomm_allgatherv(comm, sbuf, 2, rb.p, counts, displs, IBCOMM_INT32);
	expect_mismatch(comm, "allgather against allgatherv", st, t0, n > 2 || rank ? "allgatherv" : NULL, &rb);
	hx_case_done();
	/* no rank leaves (a death the others would see instead) before every rank has its result */
	__atomic_fetch_add((int *)&hx_scratch[0], 1, __ATOMIC_SEQ_CST);
	for (int i = 0; i < 1000 && __atomic_load_n((int *)&hx_scratch[0], __ATOMIC_SEQ_CST) < n; i++) {
		struct timespec ts = { 0, 10 * 1000 * 1000 };

		nanosleep(&ts, NULL);
	}
	hx_buf_free(&rb);
}

static void test_other_coll(void)
{
	for (int n = IBC_MAX(hx_nmin(), 2); n <= IBC_MIN(hx_nmax(), 4); n++) {
		struct hx_job job = { .name = "allgather against allgatherv", .n = n, .fn = other_coll_fn,
				      .no_final_barrier = true, .timeout_s = 60 };

		hx_run_job(&job);
	}
}

/* Argument errors, made by every rank alike (an error on one rank alone leaves the others waiting). */
static void args_fn(ibcomm_t *comm, void *arg)
{
	int n = ibcomm_size(comm);
	size_t counts[HX_MAX_RANKS], displs[HX_MAX_RANKS], huge[HX_MAX_RANKS];
	int32_t buf[2 * HX_MAX_RANKS + 2];
	struct {
		const char *what;
		ibcomm_status_t st;
	} cases[6];

	(void)arg;
	for (int j = 0; j < n; j++) {
		counts[j] = 1;
		displs[j] = (size_t)j;
		huge[j] = SIZE_MAX / 2;
	}
	cases[0].what = "allgatherv recvcounts NULL";
	cases[0].st = ibcomm_allgatherv(comm, buf, 1, buf + n, NULL, displs, IBCOMM_INT32);
	cases[1].what = "allgatherv displs overflowing";
	cases[1].st = ibcomm_allgatherv(comm, buf, 1, buf + n, counts, huge, IBCOMM_INT32);
	cases[2].what = "allgatherv recvbuf NULL";
	cases[2].st = ibcomm_allgatherv(comm, buf, 1, NULL, counts, displs, IBCOMM_INT32);
	cases[3].what = "allgatherv overlapping, not in place";
	/* 2 elements from just before this rank's block: overlapping it, but not in place */
	cases[3].st = ibcomm_allgatherv(comm, buf + 1 + ibcomm_rank(comm), 2, buf + 2, counts, displs, IBCOMM_INT32);
	cases[4].what = "alltoallv sendbuf == recvbuf";
	cases[4].st = ibcomm_alltoallv(comm, buf, counts, displs, buf, counts, displs, IBCOMM_INT32);
	cases[5].what = "alltoallv bad dtype";
	cases[5].st = ibcomm_alltoallv(comm, buf, counts, displs, buf + n, counts, displs, (ibcomm_dtype_t)99);
	for (size_t i = 0; i < IBC_ARRAY_SIZE(cases); i++) {
		if (cases[i].st != IBCOMM_ERR_INVALID)
			hx_fail("%s: returned %d, expected IBCOMM_ERR_INVALID", cases[i].what, (int)cases[i].st);
		hx_case_done();
	}
	/* the NULL check names the vector */
	ibcomm_alltoallv(comm, buf, counts, NULL, buf + n, counts, displs, IBCOMM_INT32);
	if (!strstr(ibcomm_last_error(comm), "sdispls is NULL"))
		hx_fail("alltoallv sdispls NULL: detail '%s'", ibcomm_last_error(comm));
	still_usable(comm, "argument errors");
}

static void test_args(void)
{
	for (int n = IBC_MAX(hx_nmin(), 1); n <= IBC_MIN(hx_nmax(), 3); n++) {
		struct hx_job job = { .name = "argument errors", .n = n, .fn = args_fn };

		hx_run_job(&job);
	}
}

int main(int argc, char **argv)
{
	static const struct cm_test tests[] = {
		{ "allgatherv", test_allgatherv },   { "alltoallv", test_alltoallv }, { "large chunks", test_large_chunks },
		{ "mismatch", test_mismatch },       { "other collective", test_other_coll },
		{ "arguments", test_args },
	};
	return CM_MAIN1(argc, argv, "coll_vcount", tests);
}
