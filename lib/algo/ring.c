/*
 * Ring algorithms: rank r sends to r+1 and receives from r-1. Step t sends the segment
 * received in step t-1, chunk by chunk as each chunk arrives (no barrier between steps), so
 * every link carries data all the time.
 *
 * When ranks span hosts and a host's ranks are not contiguous in rank order, r is a position
 * in the host order instead (ibc_ring_view(): each host's ranks adjacent, so the ring crosses
 * each host boundary once per direction); the blocks of allgather and reduce_scatter stay
 * where their ranks' are (blk()), the segments of allreduce are the positions'.
 */
#include <stdlib.h>
#include <string.h>

#include "algo/algo.h"

static int mod(int x, int n)
{
	return ((x % n) + n) % n;
}

/* Byte offset of the block of position i (b bytes each). */
static size_t blk(const struct ibc_coll_args *a, int i, size_t b)
{
	return (size_t)ibc_grp_rank(a, i) * b;
}

/* Segment i of an allreduce: count/n elements, the first count%n segments one more. */
static size_t seg_len(const struct ibc_coll_args *a, int i)
{
	return (a->count / (size_t)a->size + ((size_t)i < a->count % (size_t)a->size)) * a->esz;
}

static size_t seg_off(const struct ibc_coll_args *a, int i)
{
	size_t base = a->count / (size_t)a->size, extra = a->count % (size_t)a->size;

	return ((size_t)i * base + IBC_MIN((size_t)i, extra)) * a->esz;
}

/*
 * Allreduce = reduce-scatter + allgather over 2(n-1) steps: step t sends segment r-t and
 * receives segment r-t-1, reducing it during the first n-1 steps (after which rank r holds
 * segment r+1 fully reduced) and copying it afterwards. Segments are count/n elements, the
 * first count%n one larger. Out of place, the local operand is read from sendbuf.
 */
ibcomm_status_t ibc_allreduce_ring(struct ibc_coll_args *a0)
{
	struct ibc_coll_args v, *a = ibc_ring_view(a0, &v);
	int n = a->size, r = a->rank, right = mod(r + 1, n), left = mod(r - 1, n);
	const char *in = a->sendbuf;
	char *buf = a->recvbuf;
	struct ibc_plan p;
	ibcomm_status_t st;

	ibc_plan_init(&p, a, ibc_chunk_size(a->tp, seg_len(a, 0), a->esz));
	/* step t: send index 2t, receive index 2t+1 */
	for (int t = 0; t < 2 * (n - 1); t++) {
		int ss = mod(r - t, n), rs = mod(r - t - 1, n);
		size_t so = seg_off(a, ss), ro = seg_off(a, rs);

		ibc_plan_send(&p, right, (t ? buf : in) + so, seg_len(a, ss), t ? 2 * t - 1 : -1, 0);
		if (t < n - 1)
			ibc_plan_recv(&p, left, IBC_X_REDUCE, buf + ro, in + ro, seg_len(a, rs), -1, 0);
		else /* overwrite segment rs only once this rank sent its partial sum of it */
			ibc_plan_recv(&p, left, IBC_X_COPY, buf + ro, NULL, seg_len(a, rs), 2 * (t - n + 1), 0);
	}
	st = ibc_plan_run(&p);
	ibc_plan_free(&p);
	return st;
}

/*
 * Step t sends block r-t (own block first, straight from sendbuf) and receives block r-t-1.
 * The own block is copied into recvbuf last: nothing is written before the peers' data is
 * known to match (see the signature check of coll.c).
 */
ibcomm_status_t ibc_allgather_ring(struct ibc_coll_args *a0)
{
	struct ibc_coll_args v, *a = ibc_ring_view(a0, &v);
	int n = a->size, r = a->rank, right = mod(r + 1, n), left = mod(r - 1, n);
	size_t b = a->count * a->esz;
	char *out = a->recvbuf;
	struct ibc_plan p;
	ibcomm_status_t st;

	ibc_plan_init(&p, a, ibc_chunk_size(a->tp, b, a->esz));
	for (int t = 0; t < n - 1; t++) {
		const char *src = t ? out + blk(a, mod(r - t, n), b) : (const char *)a->sendbuf;

		ibc_plan_send(&p, right, src, b, t ? 2 * t - 1 : -1, 0);
		ibc_plan_recv(&p, left, IBC_X_COPY, out + blk(a, mod(r - t - 1, n), b), NULL, b, -1, 0);
	}
	st = ibc_plan_run(&p);
	ibc_plan_free(&p);
	if (!st && a->sendbuf != out + blk(a, r, b))
		memcpy(out + blk(a, r, b), a->sendbuf, b);
	return st;
}

/*
 * The reduce-scatter half of the ring, shifted by one so that rank r ends with its block:
 * step t sends block r-t-1 and receives block r-t-2. Partial sums travel through a scratch
 * buffer so that sendbuf is never written (except block r when in place).
 */
ibcomm_status_t ibc_reduce_scatter_ring(struct ibc_coll_args *a0)
{
	struct ibc_coll_args v, *a = ibc_ring_view(a0, &v);
	int n = a->size, r = a->rank, right = mod(r + 1, n), left = mod(r - 1, n);
	size_t b = a->count * a->esz;
	const char *in = a->sendbuf;
	char *tmp = NULL;
	struct ibc_plan p;
	ibcomm_status_t st;

	if (n > 2 && !(tmp = ibc_scratch(a, (size_t)n * b)))
		return IBCOMM_ERR_NOMEM;
	ibc_plan_init(&p, a, ibc_chunk_size(a->tp, b, a->esz));
	for (int t = 0; t < n - 1; t++) {
		size_t ss = blk(a, mod(r - t - 1, n), b), rs = blk(a, mod(r - t - 2, n), b);
		char *dst = t == n - 2 ? (char *)a->recvbuf : tmp + rs;

		ibc_plan_send(&p, right, (t ? tmp : in) + ss, b, t ? 2 * t - 1 : -1, 0);
		ibc_plan_recv(&p, left, IBC_X_REDUCE, dst, in + rs, b, -1, 0);
	}
	st = ibc_plan_run(&p);
	ibc_plan_free(&p);
	free(tmp);
	return st;
}
