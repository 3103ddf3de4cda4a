/* Alltoall: block j of sendbuf goes to rank j, into block r of its recvbuf. */
#include <string.h>

#include "algo/algo.h"

static void own_block(struct ibc_coll_args *a, size_t b)
{
	memcpy((char *)a->recvbuf + (size_t)a->rank * b, (const char *)a->sendbuf + (size_t)a->rank * b, b);
}

/*
 * Step k sends to r+k and receives from r-k; a step's send starts once the previous step's
 * receive is complete, so each rank exchanges with one pair of peers at a time.
 */
ibcomm_status_t ibc_alltoall_pairwise(struct ibc_coll_args *a)
{
	int n = a->size, r = a->rank, prev = -1;
	size_t b = a->count * a->esz;
	struct ibc_plan p;
	ibcomm_status_t st;

	own_block(a, b);
	ibc_plan_init(&p, a, ibc_chunk_size(a->tp, b, a->esz));
	for (int k = 1; k < n; k++) {
		int to = (r + k) % n, from = (r - k + n) % n;

		ibc_plan_send(&p, to, (const char *)a->sendbuf + (size_t)to * b, b, prev, IBC_DEP_ALL);
		prev = ibc_plan_recv(&p, from, IBC_X_COPY, (char *)a->recvbuf + (size_t)from * b, NULL, b, -1, 0);
	}
	st = ibc_plan_run(&p);
	ibc_plan_free(&p);
	return st;
}

/* Every send and receive posted at once; the engine drains whatever arrives. */
ibcomm_status_t ibc_alltoall_linear(struct ibc_coll_args *a)
{
	int n = a->size, r = a->rank;
	size_t b = a->count * a->esz;
	struct ibc_plan p;
	ibcomm_status_t st;

	own_block(a, b);
	ibc_plan_init(&p, a, ibc_chunk_size(a->tp, b, a->esz));
	for (int k = 1; k < n; k++) {
		int to = (r + k) % n, from = (r - k + n) % n;

		ibc_plan_send(&p, to, (const char *)a->sendbuf + (size_t)to * b, b, -1, 0);
		ibc_plan_recv(&p, from, IBC_X_COPY, (char *)a->recvbuf + (size_t)from * b, NULL, b, -1, 0);
	}
	st = ibc_plan_run(&p);
	ibc_plan_free(&p);
	return st;
}
