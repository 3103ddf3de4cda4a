/*
 * Recursive doubling allreduce, for small messages: log2(n) exchanges of the whole vector.
 *
 * With n not a power of two, let p2 be the largest power of two below n and extra = n - p2:
 * each even rank r < 2*extra first folds its data into rank r+1 and takes no part in the
 * exchanges, then receives the result from r+1. Every combination is op(lower rank's data,
 * higher rank's data), so both partners of an exchange compute the same bits and every rank
 * ends with a bit-identical result, also in floating point.
 */
#include <string.h>

#include "algo/algo.h"

ibcomm_status_t ibc_allreduce_rd(struct ibc_coll_args *a)
{
	int n = a->size, r = a->rank, p2 = 1, extra, vr, prev = -1;
	size_t len = a->count * a->esz;
	char *buf = a->recvbuf;
	const char *mine = a->sendbuf; /* this rank's partial result: sendbuf until the first reduction */
	struct ibc_plan p;
	ibcomm_status_t st;

	while (p2 * 2 <= n)
		p2 *= 2;
	extra = n - p2;
	/* ranks that fold work in buf from the start; the others write it first by reducing */
	if (r < 2 * extra && a->sendbuf != buf)
		memcpy(buf, a->sendbuf, len);
	if (r < 2 * extra)
		mine = buf;
	ibc_plan_init(&p, a, ibc_chunk_size(a->tp, len, a->esz));
	if (r < 2 * extra && r % 2 == 0) {
		int s = ibc_plan_send(&p, r + 1, buf, len, -1, 0);

		ibc_plan_recv(&p, r + 1, IBC_X_COPY, buf, NULL, len, s, 0);
		goto run;
	}
	if (r < 2 * extra) {
		vr = r / 2;
		prev = ibc_plan_recv(&p, r - 1, IBC_X_REDUCE_REV, buf, NULL, len, -1, 0);
	} else {
		vr = r - extra;
	}
	for (int mask = 1; mask < p2; mask *= 2) {
		int pv = vr ^ mask, peer = pv < extra ? 2 * pv + 1 : pv + extra;
		/* send chunk c once the previous exchange reduced it; reduce into it once sent */
		int s = ibc_plan_send(&p, peer, mine, len, prev, 0);

		prev = ibc_plan_recv(&p, peer, pv < vr ? IBC_X_REDUCE_REV : IBC_X_REDUCE, buf, mine == buf ? NULL : mine,
				     len, s, 0);
		mine = buf;
	}
	if (r < 2 * extra)
		ibc_plan_send(&p, r - 1, buf, len, prev, 0);
run:
	st = ibc_plan_run(&p);
	ibc_plan_free(&p);
	return st;
}
