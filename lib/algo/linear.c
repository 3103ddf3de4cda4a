/*
 * Linear algorithms: every rank talks to the ranks it needs directly, all transfers at once
 * (the engine interleaves them and never blocks on one peer). Reductions take the
 * contributions in rank order, chunk by chunk, so results are deterministic.
 */
#include <string.h>

#include "algo/algo.h"

/* Root reduces its own data, then every other rank's, in rank order. */
ibcomm_status_t ibc_reduce_linear(struct ibc_coll_args *a)
{
	size_t len = a->count * a->esz, cs = ibc_chunk_size(a->tp, len, a->esz);
	struct ibc_plan p;
	ibcomm_status_t st;
	int prev = -1;

	if (a->rank != a->root)
		return ibc_send_buf(a, a->root, a->sendbuf, len, cs);
	ibc_plan_init(&p, a, cs);
	for (int j = 0; j < a->size; j++)
		if (j != a->root)
			prev = ibc_plan_recv(&p, j, IBC_X_REDUCE, a->recvbuf, prev < 0 ? a->sendbuf : NULL, len, prev,
					     0);
	st = ibc_plan_run(&p);
	ibc_plan_free(&p);
	return st;
}

/* Everyone sends its block to everyone (rank r+k first at step k). */
ibcomm_status_t ibc_allgather_linear(struct ibc_coll_args *a)
{
	int n = a->size, r = a->rank;
	size_t b = a->count * a->esz;
	char *out = a->recvbuf, *own = out + (size_t)r * b;
	struct ibc_plan p;
	ibcomm_status_t st;

	ibc_plan_init(&p, a, ibc_chunk_size(a->tp, b, a->esz));
	for (int k = 1; k < n; k++) {
		int from = (r - k + n) % n;

		ibc_plan_send(&p, (r + k) % n, a->sendbuf, b, -1, 0);
		ibc_plan_recv(&p, from, IBC_X_COPY, out + (size_t)from * b, NULL, b, -1, 0);
	}
	st = ibc_plan_run(&p);
	ibc_plan_free(&p);
	/* own block last: nothing is written before the peers' data is known to match */
	if (!st && a->sendbuf != own)
		memcpy(own, a->sendbuf, b);
	return st;
}

/* Rank j receives block j from everyone and reduces it (own block first, then rank order). */
ibcomm_status_t ibc_reduce_scatter_linear(struct ibc_coll_args *a)
{
	int n = a->size, r = a->rank, prev = -1;
	size_t b = a->count * a->esz;
	const char *in = a->sendbuf;
	struct ibc_plan p;
	ibcomm_status_t st;

	ibc_plan_init(&p, a, ibc_chunk_size(a->tp, b, a->esz));
	for (int k = 1; k < n; k++) {
		int to = (r + k) % n;

		ibc_plan_send(&p, to, in + (size_t)to * b, b, -1, 0);
	}
	for (int j = 0; j < n; j++)
		if (j != r)
			prev = ibc_plan_recv(&p, j, IBC_X_REDUCE, a->recvbuf, prev < 0 ? in + (size_t)r * b : NULL, b,
					     prev, 0);
	st = ibc_plan_run(&p);
	ibc_plan_free(&p);
	return st;
}

/* The root receives every block directly. */
ibcomm_status_t ibc_gather_linear(struct ibc_coll_args *a)
{
	size_t b = a->count * a->esz, cs = ibc_chunk_size(a->tp, b, a->esz);
	char *out = a->recvbuf;
	struct ibc_plan p;
	ibcomm_status_t st;

	if (a->rank != a->root)
		return ibc_send_buf(a, a->root, a->sendbuf, b, cs);
	if (a->sendbuf != out + (size_t)a->root * b)
		memcpy(out + (size_t)a->root * b, a->sendbuf, b);
	ibc_plan_init(&p, a, cs);
	for (int k = 1; k < a->size; k++) {
		int j = (a->root + k) % a->size;

		ibc_plan_recv(&p, j, IBC_X_COPY, out + (size_t)j * b, NULL, b, -1, 0);
	}
	st = ibc_plan_run(&p);
	ibc_plan_free(&p);
	return st;
}

/* The root sends every block directly. */
ibcomm_status_t ibc_scatter_linear(struct ibc_coll_args *a)
{
	size_t b = a->count * a->esz, cs = ibc_chunk_size(a->tp, b, a->esz);
	const char *in = a->sendbuf;
	struct ibc_plan p;
	ibcomm_status_t st;

	if (a->rank != a->root)
		return ibc_recv_buf(a, a->root, IBC_X_COPY, a->recvbuf, NULL, b, cs);
	if (a->recvbuf != in + (size_t)a->root * b)
		memcpy(a->recvbuf, in + (size_t)a->root * b, b);
	ibc_plan_init(&p, a, cs);
	for (int k = 1; k < a->size; k++) {
		int j = (a->root + k) % a->size;

		ibc_plan_send(&p, j, in + (size_t)j * b, b, -1, 0);
	}
	st = ibc_plan_run(&p);
	ibc_plan_free(&p);
	return st;
}
