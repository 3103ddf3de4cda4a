/* Barriers: exchanges of empty messages. */
#include "algo/algo.h"

/*
 * Dissemination: in round k, rank r signals r+2^k and waits for r-2^k; ceil(log2 n) rounds.
 * A round's signal leaves only once every earlier round's signal has arrived (rounds are
 * taken in order), so it carries the knowledge of 2^(k+1) arrivals.
 */
ibcomm_status_t ibc_barrier_dissem(struct ibc_coll_args *a)
{
	int n = a->size, r = a->rank, prev = -1;
	struct ibc_plan p;
	ibcomm_status_t st;

	ibc_plan_init(&p, a, 1);
	for (int d = 1; d < n; d *= 2) {
		ibc_plan_send(&p, (r + d) % n, NULL, 0, prev, IBC_DEP_ALL);
		prev = ibc_plan_recv(&p, (r - d + n) % n, IBC_X_COPY, NULL, NULL, 0, prev, IBC_DEP_ALL);
	}
	st = ibc_plan_run(&p);
	ibc_plan_free(&p);
	return st;
}

/* Empty messages gathered up the binomial tree to rank 0, then broadcast back down. */
ibcomm_status_t ibc_barrier_tree(struct ibc_coll_args *a)
{
	int n = a->size, r = a->rank, prev = -1;
	struct ibc_plan p;
	ibcomm_status_t st;

	ibc_plan_init(&p, a, 1);
	for (int m = 1; m < ibc_tree_span(r, n) && r + m < n; m *= 2)
		prev = ibc_plan_recv(&p, r + m, IBC_X_COPY, NULL, NULL, 0, prev, IBC_DEP_ALL);
	if (r) {
		int up = ibc_plan_send(&p, r & (r - 1), NULL, 0, prev, IBC_DEP_ALL);

		prev = ibc_plan_recv(&p, r & (r - 1), IBC_X_COPY, NULL, NULL, 0, up, IBC_DEP_ALL);
	}
	for (int m = ibc_tree_span(r, n) / 2; m >= 1; m /= 2)
		if (r + m < n)
			ibc_plan_send(&p, r + m, NULL, 0, prev, IBC_DEP_ALL);
	st = ibc_plan_run(&p);
	ibc_plan_free(&p);
	return st;
}
