/*
 * The recursive-doubling schedule: which ranks talk, in which order. rd.c's allreduce runs
 * it (and through it the signature agreement of every collective on more than two ranks,
 * sig.c), and the RDMA transport connects those partners and synchronises over them at
 * create (transports/rdma/rdma.c), so that the two can never disagree. Header-only: the
 * transports use it without linking the algorithms.
 *
 * With p2 the largest power of two <= n: a rank r >= p2 folds into r - p2 (FOLD: sends its
 * data, then takes the result back) and does nothing else. A rank r < p2 first takes the
 * data of r + p2 when that rank exists (ABSORB), then exchanges with r ^ 1, r ^ 2, ...,
 * r ^ (p2 / 2) (EXCHANGE: sends, then takes), and last gives the result to r + p2 (RETURN).
 */
#ifndef IBC_RD_SCHED_H
#define IBC_RD_SCHED_H

enum ibc_rd_kind { IBC_RD_FOLD, IBC_RD_ABSORB, IBC_RD_EXCHANGE, IBC_RD_RETURN };

struct ibc_rd_step {
	enum ibc_rd_kind kind;
	int peer;
};

/* an ABSORB, an EXCHANGE per bit below p2 (p2 <= 2^30 in an int), a RETURN */
#define IBC_RD_MAX_STEPS 32

/* Fills step[] with the schedule of rank r of n (0 <= r < n); returns the number of steps. */
static inline int ibc_rd_schedule(int n, int r, struct ibc_rd_step step[IBC_RD_MAX_STEPS])
{
	int p2 = 1, k = 0;

	while (p2 <= n / 2)
		p2 *= 2;
	if (r >= p2) {
		step[k++] = (struct ibc_rd_step){ IBC_RD_FOLD, r - p2 };
		return k;
	}
	if (r + p2 < n)
		step[k++] = (struct ibc_rd_step){ IBC_RD_ABSORB, r + p2 };
	for (int mask = 1; mask < p2; mask *= 2)
		step[k++] = (struct ibc_rd_step){ IBC_RD_EXCHANGE, r ^ mask };
	if (r + p2 < n)
		step[k++] = (struct ibc_rd_step){ IBC_RD_RETURN, r + p2 };
	return k;
}

#endif
