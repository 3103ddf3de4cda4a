/*
 * The collectives with per-rank counts: allgatherv (ring, linear) and alltoallv (pairwise,
 * linear). They run only after every rank has checked that the counts agree (vcount.c), so
 * both sides of a pair describe each message with the same length: the engine's own length
 * check (a chunk longer or shorter than expected is IBCOMM_ERR_MISMATCH) stays as the last
 * guard, and nothing is ever written outside the block a rank's own counts give.
 */
#include <string.h>

#include "algo/algo.h"

static int mod(int x, int n)
{
	return ((x % n) + n) % n;
}

/*
 * ---- allgatherv: block j (rcounts[j] elements) lands at rdispls[j] on every rank ----
 * (the ring may run over positions in host order, ring.c: j is then rank ibc_grp_rank(a, j))
 */

static size_t blk_len(const struct ibc_coll_args *a, int j)
{
	return a->rcounts[ibc_grp_rank(a, j)] * a->esz;
}

static char *blk(const struct ibc_coll_args *a, int j)
{
	return (char *)a->recvbuf + a->rdispls[ibc_grp_rank(a, j)] * a->esz;
}

/* One chunk size for every block: the same on every rank, as the counts are. */
static size_t allgatherv_cs(const struct ibc_coll_args *a)
{
	size_t most = 0;

	for (int j = 0; j < a->size; j++)
		most = IBC_MAX(most, blk_len(a, j));
	return ibc_chunk_size(a->tp, most, a->esz);
}

/* Own block last, unless in place: nothing lands in recvbuf before the algorithm succeeded. */
static void allgatherv_own(const struct ibc_coll_args *a)
{
	if (a->sendbuf != blk(a, a->rank) && blk_len(a, a->rank))
		memcpy(blk(a, a->rank), a->sendbuf, blk_len(a, a->rank));
}

/*
 * Step t sends block r-t (own block first, from sendbuf) and receives block r-t-1, forwarding
 * each chunk as soon as it arrived (as allgather's ring); an empty block is one empty chunk.
 */
ibcomm_status_t ibc_allgatherv_ring(struct ibc_coll_args *a0)
{
	struct ibc_coll_args v, *a = ibc_ring_view(a0, &v);
	int n = a->size, r = a->rank, right = mod(r + 1, n), left = mod(r - 1, n);
	struct ibc_plan p;
	ibcomm_status_t st;

	ibc_plan_init(&p, a, allgatherv_cs(a));
	for (int t = 0; t < n - 1; t++) {
		int sb = mod(r - t, n), rb = mod(r - t - 1, n);

		ibc_plan_send(&p, right, t ? blk(a, sb) : (const char *)a->sendbuf, blk_len(a, sb), t ? 2 * t - 1 : -1,
			      0);
		ibc_plan_recv(&p, left, IBC_X_COPY, blk(a, rb), NULL, blk_len(a, rb), -1, 0);
	}
	st = ibc_plan_run(&p);
	ibc_plan_free(&p);
	if (!st)
		allgatherv_own(a);
	return st;
}

/* Everyone sends its block to everyone (rank r+k first at step k). */
ibcomm_status_t ibc_allgatherv_linear(struct ibc_coll_args *a)
{
	int n = a->size, r = a->rank;
	struct ibc_plan p;
	ibcomm_status_t st;

	ibc_plan_init(&p, a, allgatherv_cs(a));
	for (int k = 1; k < n; k++) {
		int from = mod(r - k, n);

		ibc_plan_send(&p, mod(r + k, n), a->sendbuf, blk_len(a, r), -1, 0);
		ibc_plan_recv(&p, from, IBC_X_COPY, blk(a, from), NULL, blk_len(a, from), -1, 0);
	}
	st = ibc_plan_run(&p);
	ibc_plan_free(&p);
	if (!st)
		allgatherv_own(a);
	return st;
}

/*
 * ---- alltoallv: scounts[j] elements at sdispls[j] go to rank j, into its rdispls[r] ----
 *
 * A pair that exchanges nothing sends no message at all (both sides know it from their own,
 * agreed, counts), so a sparse pattern costs only what it moves. Each pair carries at most
 * one message each way, so pairwise and linear interoperate: the choice is each rank's own.
 * The chunk size is the transport's largest, whatever the counts, so that it is the same on
 * both sides of every pair.
 */
static const char *sblk(const struct ibc_coll_args *a, int j)
{
	return (const char *)a->sendbuf + a->sdispls[j] * a->esz;
}

static char *rblk(const struct ibc_coll_args *a, int j)
{
	return (char *)a->recvbuf + a->rdispls[j] * a->esz;
}

static void alltoallv_own(const struct ibc_coll_args *a)
{
	size_t len = a->scounts[a->rank] * a->esz;

	if (len)
		memcpy(rblk(a, a->rank), sblk(a, a->rank), len);
}

/* pairwise: each step's send waits for the previous step's receive (one pair of peers at a time). */
static ibcomm_status_t alltoallv(struct ibc_coll_args *a, bool pairwise)
{
	int n = a->size, r = a->rank, prev = -1;
	struct ibc_plan p;
	ibcomm_status_t st;

	alltoallv_own(a);
	ibc_plan_init(&p, a, ibc_chunk_size(a->tp, 2 * a->tp->max_chunk, a->esz));
	for (int k = 1; k < n; k++) {
		int to = mod(r + k, n), from = mod(r - k, n);

		if (a->scounts[to])
			ibc_plan_send(&p, to, sblk(a, to), a->scounts[to] * a->esz, pairwise ? prev : -1, IBC_DEP_ALL);
		if (a->rcounts[from])
			prev = ibc_plan_recv(&p, from, IBC_X_COPY, rblk(a, from), NULL, a->rcounts[from] * a->esz, -1,
					     0);
	}
	st = ibc_plan_run(&p);
	ibc_plan_free(&p);
	return st;
}

ibcomm_status_t ibc_alltoallv_pairwise(struct ibc_coll_args *a)
{
	return alltoallv(a, true);
}

ibcomm_status_t ibc_alltoallv_linear(struct ibc_coll_args *a)
{
	return alltoallv(a, false);
}
