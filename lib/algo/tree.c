/*
 * Binomial trees relative to the root (see algo.h for the shape) and the broadcast chain.
 * Every message is chunked, and a node forwards (or reduces and forwards) chunk c as soon
 * as it has it, so large messages stream through the tree.
 */
#include <stdlib.h>
#include <string.h>

#include "algo/algo.h"

/* Broadcast down the binomial tree, the largest subtree first. */
ibcomm_status_t ibc_broadcast_tree(struct ibc_coll_args *a)
{
	int n = a->size, vr = ibc_vrank(a->rank, a->root, n);
	size_t len = a->count * a->esz;
	struct ibc_plan p;
	ibcomm_status_t st;
	int got = -1;

	ibc_plan_init(&p, a, ibc_chunk_size(a->tp, len, a->esz));
	if (vr)
		got = ibc_plan_recv(&p, ibc_absrank(vr & (vr - 1), a->root, n), IBC_X_COPY, a->recvbuf, NULL, len,
				    -1, 0);
	for (int m = ibc_tree_span(vr, n) / 2; m >= 1; m /= 2)
		if (vr + m < n)
			ibc_plan_send(&p, ibc_absrank(vr + m, a->root, n), a->recvbuf, len, got, 0);
	st = ibc_plan_run(&p);
	ibc_plan_free(&p);
	return st;
}

/*
 * Broadcast along the chain root, root+1, ...: each rank forwards chunk c while taking c+1.
 * Over ranks that span hosts, in host order (ibc_ring_view(), as the rings).
 */
ibcomm_status_t ibc_broadcast_pipeline(struct ibc_coll_args *a0)
{
	struct ibc_coll_args v, *a = ibc_ring_view(a0, &v);
	int n = a->size, vr = ibc_vrank(a->rank, a->root, n);
	size_t len = a->count * a->esz;
	struct ibc_plan p;
	ibcomm_status_t st;
	int got = -1;

	ibc_plan_init(&p, a, ibc_chunk_size(a->tp, len, a->esz));
	if (vr)
		got = ibc_plan_recv(&p, ibc_absrank(vr - 1, a->root, n), IBC_X_COPY, a->recvbuf, NULL, len, -1, 0);
	if (vr < n - 1)
		ibc_plan_send(&p, ibc_absrank(vr + 1, a->root, n), a->recvbuf, len, got, 0);
	st = ibc_plan_run(&p);
	ibc_plan_free(&p);
	return st;
}

/*
 * Adds the receives that reduce the children's partial results into acc, in a fixed order
 * (own data, then the children by increasing subtree) so the result is deterministic.
 * Returns the index of the last receive, or -1 for a leaf.
 */
static int reduce_children(struct ibc_plan *p, int vr, int root, void *acc)
{
	int n = p->a->size, last = -1;
	size_t len = p->a->count * p->a->esz;

	for (int m = 1; m < ibc_tree_span(vr, n) && vr + m < n; m *= 2)
		last = ibc_plan_recv(p, ibc_absrank(vr + m, root, n), IBC_X_REDUCE, acc,
				     last < 0 ? p->a->sendbuf : NULL, len, last, 0);
	return last;
}

/* Reduce up the binomial tree; inner non-root ranks accumulate in scratch. */
ibcomm_status_t ibc_reduce_tree(struct ibc_coll_args *a)
{
	int n = a->size, vr = ibc_vrank(a->rank, a->root, n);
	size_t len = a->count * a->esz;
	char *acc = a->recvbuf, *tmp = NULL;
	struct ibc_plan p;
	ibcomm_status_t st;
	int last;

	if (vr && ibc_tree_size(vr, n) > 1 && !(acc = tmp = ibc_scratch(a, len)))
		return IBCOMM_ERR_NOMEM;
	ibc_plan_init(&p, a, ibc_chunk_size(a->tp, len, a->esz));
	last = reduce_children(&p, vr, a->root, acc);
	if (vr)
		ibc_plan_send(&p, ibc_absrank(vr & (vr - 1), a->root, n), last < 0 ? a->sendbuf : acc, len, last, 0);
	st = ibc_plan_run(&p);
	ibc_plan_free(&p);
	free(tmp);
	return st;
}

/* Binomial reduce to rank 0 then binomial broadcast, both streaming, in recvbuf. */
ibcomm_status_t ibc_allreduce_tree(struct ibc_coll_args *a)
{
	int n = a->size, r = a->rank;
	size_t len = a->count * a->esz;
	struct ibc_plan p;
	ibcomm_status_t st;
	int last, down;

	ibc_plan_init(&p, a, ibc_chunk_size(a->tp, len, a->esz));
	last = reduce_children(&p, r, 0, a->recvbuf);
	down = last;
	if (r) {
		int parent = r & (r - 1);
		int up = ibc_plan_send(&p, parent, last < 0 ? a->sendbuf : a->recvbuf, len, last, 0);

		down = ibc_plan_recv(&p, parent, IBC_X_COPY, a->recvbuf, NULL, len, up, 0);
	}
	for (int m = ibc_tree_span(r, n) / 2; m >= 1; m /= 2)
		if (r + m < n)
			ibc_plan_send(&p, r + m, a->recvbuf, len, down, 0);
	st = ibc_plan_run(&p);
	ibc_plan_free(&p);
	return st;
}

/*
 * Gather up the binomial tree. A subtree's blocks are contiguous in relative rank order:
 * inner ranks collect them in scratch (children one after the other) and send them up as
 * one message; the root places them in recvbuf, through scratch for the one subtree whose
 * blocks wrap around the end of recvbuf.
 */
ibcomm_status_t ibc_gather_tree(struct ibc_coll_args *a)
{
	int n = a->size, vr = ibc_vrank(a->rank, a->root, n), nb = ibc_tree_size(vr, n);
	size_t b = a->count * a->esz;
	char *out = a->recvbuf, *tmp = NULL;
	int wrap_start = -1, wrap_blocks = 0, prev = -1;
	struct ibc_plan p;
	ibcomm_status_t st;

	if (nb > 1 && vr && !(tmp = ibc_scratch(a, (size_t)nb * b)))
		return IBCOMM_ERR_NOMEM;
	if (vr && nb > 1)
		memcpy(tmp, a->sendbuf, b);
	if (!vr && a->sendbuf != out + (size_t)a->root * b)
		memcpy(out + (size_t)a->root * b, a->sendbuf, b);
	ibc_plan_init(&p, a, ibc_chunk_size(a->tp, b, a->esz));
	for (int m = 1; m < ibc_tree_span(vr, n) && vr + m < n; m *= 2) {
		int child = ibc_absrank(vr + m, a->root, n), cb = ibc_tree_size(vr + m, n);
		char *dst;

		if (vr) {
			dst = tmp + (size_t)m * b;
		} else if (child + cb <= n) {
			dst = out + (size_t)child * b;
		} else {
			if (!(tmp = ibc_scratch(a, (size_t)cb * b))) {
				ibc_plan_free(&p);
				return IBCOMM_ERR_NOMEM;
			}
			dst = tmp;
			wrap_start = child;
			wrap_blocks = cb;
		}
		prev = ibc_plan_recv(&p, child, IBC_X_COPY, dst, NULL, (size_t)cb * b, vr ? prev : -1, IBC_DEP_ALL);
	}
	if (vr)
		ibc_plan_send(&p, ibc_absrank(vr & (vr - 1), a->root, n), nb > 1 ? tmp : a->sendbuf, (size_t)nb * b,
			      prev, IBC_DEP_ALL);
	st = ibc_plan_run(&p);
	ibc_plan_free(&p);
	if (!st && wrap_start >= 0) {
		size_t head = (size_t)(n - wrap_start) * b;

		memcpy(out + (size_t)wrap_start * b, tmp, head);
		memcpy(out, tmp + head, (size_t)wrap_blocks * b - head);
	}
	free(tmp);
	return st;
}

/*
 * Scatter down the binomial tree: the root sends each child its subtree's blocks (largest
 * subtree first); inner ranks receive their subtree's blocks in scratch and forward the
 * children's parts as they arrive.
 */
ibcomm_status_t ibc_scatter_tree(struct ibc_coll_args *a)
{
	int n = a->size, vr = ibc_vrank(a->rank, a->root, n), nb = ibc_tree_size(vr, n);
	size_t b = a->count * a->esz;
	const char *in = a->sendbuf;
	char *tmp = NULL;
	struct ibc_plan p;
	ibcomm_status_t st;
	int got = -1;

	if (vr && nb > 1 && !(tmp = ibc_scratch(a, (size_t)nb * b)))
		return IBCOMM_ERR_NOMEM;
	ibc_plan_init(&p, a, ibc_chunk_size(a->tp, b, a->esz));
	if (vr)
		got = ibc_plan_recv(&p, ibc_absrank(vr & (vr - 1), a->root, n), IBC_X_COPY, tmp ? tmp : a->recvbuf,
				    NULL, (size_t)nb * b, -1, 0);
	for (int m = ibc_tree_span(vr, n) / 2; m >= 1; m /= 2) {
		int child = ibc_absrank(vr + m, a->root, n), cb;
		const char *src;

		if (vr + m >= n)
			continue;
		cb = ibc_tree_size(vr + m, n);
		if (vr) {
			src = tmp + (size_t)m * b;
		} else if (child + cb <= n) {
			src = in + (size_t)child * b;
		} else { /* blocks child..n-1, 0..: at most one subtree wraps */
			size_t head = (size_t)(n - child) * b;

			if (!(tmp = ibc_scratch(a, (size_t)cb * b))) {
				ibc_plan_free(&p);
				return IBCOMM_ERR_NOMEM;
			}
			memcpy(tmp, in + (size_t)child * b, head);
			memcpy(tmp + head, in, (size_t)cb * b - head);
			src = tmp;
		}
		ibc_plan_send(&p, child, src, (size_t)cb * b, got, vr ? (size_t)m * b : 0);
	}
	if (!vr && a->recvbuf != in + (size_t)a->root * b)
		memcpy(a->recvbuf, in + (size_t)a->root * b, b);
	st = ibc_plan_run(&p);
	ibc_plan_free(&p);
	if (!st && vr && tmp)
		memcpy(a->recvbuf, tmp, b);
	free(tmp);
	return st;
}
