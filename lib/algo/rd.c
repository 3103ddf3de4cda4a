/*
 * Recursive doubling allreduce, for small messages: log2(n) exchanges of the whole vector;
 * and the small broadcast along the same pattern.
 *
 * With n not a power of two, let p2 be the largest power of two below n: each rank r >= p2
 * first folds its data into rank r - p2 and takes no part in the exchanges, then receives
 * the result from r - p2 (the schedule is rd_sched.h's, shared with the RDMA transport).
 * Every combination is op(lower rank's data, higher rank's data), so both partners of an
 * exchange compute the same bits and every rank ends with a bit-identical result, also in
 * floating point.
 *
 * With more than two ranks and a small vector the call signatures ride in front of each
 * message (a hook with every_msg, see sig.c): the rounds compare them as they reduce, so the
 * result is built in a scratch buffer and reaches recvbuf only when no data was dropped.
 */
#include <stdlib.h>
#include <string.h>

#include "algo/algo.h"
#include "algo/rd_sched.h"

ibcomm_status_t ibc_rd_plan(struct ibc_plan *p, const void *src, char *buf, size_t len)
{
	struct ibc_coll_args *a = p->a;
	struct ibc_rd_step step[IBC_RD_MAX_STEPS];
	int nsteps = ibc_rd_schedule(a->size, a->rank, step), prev = -1, s;
	/* chunk by chunk; a pure signature exchange (no chunk has bytes) waits for whole messages */
	size_t dep_off = len ? 0 : IBC_DEP_ALL;
	const char *mine = src; /* this rank's partial result: src until the first reduction */

	for (int i = 0; i < nsteps; i++) {
		int peer = step[i].peer;

		switch (step[i].kind) {
		case IBC_RD_FOLD:
			s = ibc_plan_send(p, peer, src, len, -1, 0);
			ibc_plan_recv(p, peer, IBC_X_COPY, buf, NULL, len, s, dep_off);
			break;
		case IBC_RD_ABSORB:
			prev = ibc_plan_recv(p, peer, IBC_X_REDUCE, buf, mine == buf ? NULL : mine, len, -1, 0);
			mine = buf;
			break;
		case IBC_RD_EXCHANGE:
			/* send chunk c once the previous exchange reduced it; reduce into it once sent */
			s = ibc_plan_send(p, peer, mine, len, prev, dep_off);
			prev = ibc_plan_recv(p, peer, peer < a->rank ? IBC_X_REDUCE_REV : IBC_X_REDUCE, buf,
					     mine == buf ? NULL : mine, len, s, dep_off);
			mine = buf;
			break;
		case IBC_RD_RETURN:
			ibc_plan_send(p, peer, buf, len, prev, dep_off);
			break;
		}
	}
	return p->status;
}

ibcomm_status_t ibc_allreduce_rd(struct ibc_coll_args *a)
{
	size_t len = a->count * a->esz;
	char tmp[IBC_HOOK_MSG_MAX];
	char *buf = a->recvbuf;
	bool every_msg = a->hook && a->hook->every_msg;
	struct ibc_plan p;
	ibcomm_status_t st;

	if (every_msg) {
		/* such a hook rides only on messages of one chunk that fit here */
		if (len > sizeof(tmp))
			return ibc_err(a->comm, IBCOMM_ERR_INVALID, "rank %d: %s #%u: %zu bytes to reduce with fused "
				       "signatures", a->rank, ibc_coll_name(a->coll), a->seq & 0xffffffu, len);
		buf = memset(tmp, 0, len); /* after a mismatch the rounds drop data: never send stack bytes */
	}
	ibc_plan_init(&p, a, ibc_chunk_size(a->tp, len, a->esz));
	st = ibc_rd_plan(&p, a->sendbuf, buf, len);
	if (!st)
		st = ibc_plan_run(&p);
	ibc_plan_free(&p);
	if (!st && every_msg && !a->hook->dropped)
		memcpy(a->recvbuf, tmp, len);
	return st;
}

/*
 * Broadcast along the recursive-doubling pattern: the root's vector spreads where allreduce
 * reduces. Which ranks hold it before each step is known to all: with p2 as above and root'
 * the root's place among the first p2 ranks (root - p2 when the root folds into it), after
 * the exchanges over the bits in `done` exactly the ranks r with (r ^ root') & ~done == 0
 * hold it, so in each step at most one partner has it to send. Worth it with more than two
 * ranks when the call signatures ride in front of every message (sig.c): the messages of
 * partners without data then carry the signatures alone, and the comparison costs no round
 * of its own (a tree needs it first). Without such a hook only the data moves.
 */
ibcomm_status_t ibc_broadcast_rd(struct ibc_coll_args *a)
{
	struct ibc_rd_step step[IBC_RD_MAX_STEPS];
	int nsteps = ibc_rd_schedule(a->size, a->rank, step), p2 = 1, rp, prev = -1;
	size_t len = a->count * a->esz;
	bool every_msg = a->hook && a->hook->every_msg, have = a->rank == a->root;
	char tmp[IBC_HOOK_MSG_MAX], *buf = a->recvbuf;
	unsigned done = 0;
	struct ibc_plan p;
	ibcomm_status_t st;

	while (p2 <= a->size / 2)
		p2 *= 2;
	rp = a->root >= p2 ? a->root - p2 : a->root;
	if (every_msg) {
		if (len > sizeof(tmp))
			return ibc_err(a->comm, IBCOMM_ERR_INVALID, "rank %d: %s #%u: %zu bytes to broadcast with fused "
				       "signatures", a->rank, ibc_coll_name(a->coll), a->seq & 0xffffffu, len);
		if (!have) /* recvbuf is written only once every signature matched; zeros as for allreduce */
			buf = memset(tmp, 0, len);
	}
	ibc_plan_init(&p, a, ibc_chunk_size(a->tp, len, a->esz));
	for (int i = 0; i < nsteps; i++) {
		int peer = step[i].peer;
		bool give, take; /* this rank sends the vector, takes it */

		switch (step[i].kind) {
		case IBC_RD_FOLD: /* the root's data in first, or the result back */
			give = have;
			take = !have;
			break;
		case IBC_RD_ABSORB:
			give = false;
			take = peer == a->root;
			break;
		case IBC_RD_EXCHANGE:
			give = !(((unsigned)a->rank ^ (unsigned)rp) & ~done);
			take = !(((unsigned)peer ^ (unsigned)rp) & ~done);
			done |= (unsigned)a->rank ^ (unsigned)peer;
			break;
		default: /* IBC_RD_RETURN */
			give = peer != a->root;
			take = false;
			break;
		}
		if (step[i].kind != IBC_RD_ABSORB && (give || every_msg))
			ibc_plan_send(&p, peer, buf, give ? len : 0, prev, every_msg ? IBC_DEP_ALL : 0);
		/* with signatures every message waits for all before it: what this rank knows goes on */
		if (step[i].kind != IBC_RD_RETURN && (take || every_msg))
			prev = ibc_plan_recv(&p, peer, IBC_X_COPY, buf, NULL, take ? len : 0, every_msg ? prev : -1,
					     IBC_DEP_ALL);
		have |= take;
	}
	st = p.status ? p.status : ibc_plan_run(&p);
	ibc_plan_free(&p);
	if (!st && every_msg && buf == tmp && !a->hook->dropped)
		memcpy(a->recvbuf, tmp, len);
	return st;
}

/*
 * Allgather along the recursive-doubling pattern: each exchange doubles the blocks a rank
 * holds, and the call signatures ride in front of every message as in broadcast. The blocks
 * gather in scratch in the pattern's order: unit g (g < p2) is block g, then block g + p2
 * when that rank exists, so the units an aligned group of ranks holds form one range, sent as
 * one message. recvbuf is written from it at the end (with signatures: only if they matched).
 */
static size_t unit_off(int g, int n, int p2, size_t b)
{
	return ((size_t)g + (size_t)IBC_MIN(g, n - p2)) * b;
}

ibcomm_status_t ibc_allgather_rd(struct ibc_coll_args *a)
{
	struct ibc_rd_step step[IBC_RD_MAX_STEPS];
	int n = a->size, r = a->rank, nsteps = ibc_rd_schedule(n, r, step), p2 = 1, prev = -1, s = -1;
	size_t b = a->count * a->esz, all = (size_t)n * b;
	char small[IBC_HOOK_MSG_MAX], *tmp = all <= sizeof(small) ? small : ibc_scratch(a, all);
	struct ibc_plan p;
	ibcomm_status_t st;

	if (!tmp)
		return IBCOMM_ERR_NOMEM;
	while (p2 <= n / 2)
		p2 *= 2;
	if (a->hook && a->hook->every_msg)
		memset(tmp, 0, all); /* as for allreduce: what a dropped message left out is sent on */
	memcpy(tmp + (r < p2 ? unit_off(r, n, p2, b) : unit_off(r - p2, n, p2, b) + b), a->sendbuf, b);
	ibc_plan_init(&p, a, ibc_chunk_size(a->tp, all, a->esz));
	/* every message waits for all before it: it carries what they brought */
	for (int i = 0; i < nsteps; i++) {
		int peer = step[i].peer, m = r ^ peer, lo = r & ~(m - 1), plo = peer & ~(m - 1);

		switch (step[i].kind) {
		case IBC_RD_FOLD: /* own block in, every block back */
			s = ibc_plan_send(&p, peer, tmp + unit_off(peer, n, p2, b) + b, b, -1, 0);
			prev = ibc_plan_recv(&p, peer, IBC_X_COPY, tmp, NULL, all, s, IBC_DEP_ALL);
			break;
		case IBC_RD_ABSORB:
			prev = ibc_plan_recv(&p, peer, IBC_X_COPY, tmp + unit_off(r, n, p2, b) + b, NULL, b, -1, 0);
			break;
		case IBC_RD_EXCHANGE: /* units [lo, lo + m) out, [plo, plo + m) in */
			ibc_plan_send(&p, peer, tmp + unit_off(lo, n, p2, b),
				      unit_off(lo + m, n, p2, b) - unit_off(lo, n, p2, b), prev, IBC_DEP_ALL);
			prev = ibc_plan_recv(&p, peer, IBC_X_COPY, tmp + unit_off(plo, n, p2, b), NULL,
					     unit_off(plo + m, n, p2, b) - unit_off(plo, n, p2, b), prev, IBC_DEP_ALL);
			break;
		case IBC_RD_RETURN:
			ibc_plan_send(&p, peer, tmp, all, prev, IBC_DEP_ALL);
			break;
		}
	}
	st = p.status ? p.status : ibc_plan_run(&p);
	ibc_plan_free(&p);
	if (!st && !(a->hook && a->hook->every_msg && a->hook->dropped))
		for (int j = 0; j < n; j++)
			memcpy((char *)a->recvbuf + (size_t)j * b,
			       tmp + (j < p2 ? unit_off(j, n, p2, b) : unit_off(j - p2, n, p2, b) + b), b);
	if (tmp != small)
		free(tmp);
	return st;
}
