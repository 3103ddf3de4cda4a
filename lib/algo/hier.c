/*
 * Hierarchical allreduce and broadcast (IBCOMM_ALGO "hier"), for ranks that span hosts with
 * more than one rank on some host (the host map, hosts.c). Each host has a leader; the phases
 * are the existing algorithms run on groups of ranks (ibc_coll_args.grp), one plan after the
 * other:
 *
 *   allreduce  1. within each host, reduce to the leader (its lowest rank; tree)
 *              2. among the leaders, allreduce in place (rd, ring or tree by size, as auto
 *                 picks for that many ranks)
 *              3. within each host, broadcast from the leader (tree or pipeline by size)
 *   broadcast  1. among the leaders, broadcast from the root (the leader of its host; the
 *                 other hosts' leaders are their lowest ranks)
 *              2. within each host, broadcast from the leader
 *
 * So the data crosses the network only between leaders, and each host's ranks talk through
 * whatever the transport uses within a host. Each phase's peers are either all on this
 * rank's host or all leaders of other hosts, and both sides of every pair run the phases in
 * the same order: messages between a pair keep their order. With one host, or one rank per
 * host, there is no hierarchy: the flat automatic choice runs.
 */
#include <stdlib.h>
#include <string.h>

#include "algo/algo.h"

void ibc_hier_groups(int n, const int *host_of, int rank, int root, int *buf, struct ibc_hier *h)
{
	int me = host_of[rank], root_host = root >= 0 ? host_of[root] : -1;

	memset(h, 0, sizeof(*h));
	h->local = buf;
	h->leaders = buf + n;
	h->me_leader = -1;
	for (int r = 0; r < n; r++) {
		int host = host_of[r];

		if (host == me) {
			if (r == rank)
				h->me_local = h->nlocal;
			if (host == root_host ? r == root : !h->nlocal)
				h->local_root = h->nlocal;
			h->local[h->nlocal++] = r;
		}
		/* hosts are numbered by their lowest rank: host h first appears as h == nleaders */
		if (host == h->nleaders)
			h->leaders[h->nleaders++] = host == root_host ? root : r;
	}
	for (int i = 0; i < h->nleaders; i++) {
		if (h->leaders[i] == rank)
			h->me_leader = i;
		if (root >= 0 && h->leaders[i] == root)
			h->leaders_root = i;
	}
}

/*
 * Runs coll's automatic algorithm on group grp (m ranks, this one is index me, root index
 * root); messages still name the call's collective and hier.
 */
static ibcomm_status_t run_group(const struct ibc_coll_args *a, enum ibc_coll coll, const int *grp, int m, int me,
				 int root, const void *sendbuf)
{
	struct ibc_coll_args g = *a;
	size_t bytes = a->count * a->esz;

	g.grp = grp;
	g.size = m;
	g.rank = me;
	g.root = root;
	g.sendbuf = sendbuf;
	return ibc_algo_impl(coll, ibc_algo_auto(coll, bytes, m))(&g);
}

/* The flat automatic choice, or else the groups of this call (buf: to free). */
static ibcomm_status_t groups(struct ibc_coll_args *a, int root, int **buf, struct ibc_hier *h)
{
	const struct ibc_hosts *hosts = &a->comm->hosts;

	*buf = NULL;
	if (a->grp || !hosts->host_of || hosts->nhosts == 1 || hosts->nhosts == a->size)
		return ibc_algo_impl(a->coll, ibc_algo_auto(a->coll, a->count * a->esz, a->size))(a);
	if (!(*buf = ibc_scratch(a, 2 * (size_t)a->size * sizeof(int))))
		return IBCOMM_ERR_NOMEM;
	ibc_hier_groups(a->size, hosts->host_of, a->rank, root, *buf, h);
	return IBCOMM_OK;
}

ibcomm_status_t ibc_allreduce_hier(struct ibc_coll_args *a)
{
	int *buf;
	struct ibc_hier h;
	ibcomm_status_t st = groups(a, -1, &buf, &h);

	if (st || !buf)
		return st;
	if (h.nlocal > 1)
		st = run_group(a, IBC_COLL_REDUCE, h.local, h.nlocal, h.me_local, h.local_root, a->sendbuf);
	else if (a->sendbuf != a->recvbuf)
		memcpy(a->recvbuf, a->sendbuf, a->count * a->esz);
	if (!st && h.me_leader >= 0 && h.nleaders > 1)
		st = run_group(a, IBC_COLL_ALLREDUCE, h.leaders, h.nleaders, h.me_leader, 0, a->recvbuf);
	if (!st && h.nlocal > 1)
		st = run_group(a, IBC_COLL_BROADCAST, h.local, h.nlocal, h.me_local, h.local_root, a->recvbuf);
	free(buf);
	return st;
}

ibcomm_status_t ibc_broadcast_hier(struct ibc_coll_args *a)
{
	int *buf;
	struct ibc_hier h;
	ibcomm_status_t st = groups(a, a->root, &buf, &h);

	if (st || !buf)
		return st;
	if (h.me_leader >= 0 && h.nleaders > 1)
		st = run_group(a, IBC_COLL_BROADCAST, h.leaders, h.nleaders, h.me_leader, h.leaders_root, a->recvbuf);
	if (!st && h.nlocal > 1)
		st = run_group(a, IBC_COLL_BROADCAST, h.local, h.nlocal, h.me_local, h.local_root, a->recvbuf);
	free(buf);
	return st;
}
