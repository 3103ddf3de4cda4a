/*
 * Which algorithm runs a collective: the one IBCOMM_ALGO forces for it, else by size.
 *
 * `bytes` is the vector for allreduce, broadcast and reduce; the whole gathered or scattered
 * buffer (nranks x block) for allgather, reduce_scatter, gather and scatter, and the sum of
 * recvcounts for allgatherv (the same on every rank); one block (to one peer) for alltoall,
 * and the mean block of this rank for alltoallv (whose algorithms interoperate: each rank may
 * choose its own). Automatic choices:
 *
 *   allreduce       rd below 32 KiB (log2 n latency-bound exchanges); ring above (bandwidth
 *                   optimal), except tree when more than 32 ranks would cut it in segments
 *                   under 4 KiB; over TCP with 4 or 8 ranks rd below 512 KiB (tcp_rd)
 *   broadcast       rd up to 4 KiB on more than two ranks (its messages carry the call
 *                   signatures, which the tree would pay as a round of its own); tree below
 *                   256 KiB; pipeline (chain) above
 *   reduce          tree (pipelined binomial; linear funnels everything through the root)
 *   allgather       rd up to 4 KiB in all on more than two ranks (the signatures ride on
 *                   its messages, as broadcast's); linear below 64 KiB (one round); ring above
 *   allgatherv      linear below 64 KiB in all; ring above
 *   reduce_scatter  linear below 64 KiB in all; ring above
 *   gather, scatter tree below 256 KiB in all; linear above (the root's link carries every
 *                   byte either way, linear without the store and forward)
 *   alltoall(v)     linear below 16 KiB per block (all at once); pairwise above
 *   barrier         dissem
 *
 * When ranks span hosts (the host map, hosts.c) and some host has more than one rank:
 *
 *   allreduce       hier from 32 KiB below 1 MiB: log2(hosts) network rounds among the
 *                   leaders instead of 2(n-1) ring steps; rd stays below (its messages carry
 *                   the call signatures, which hier would pay as a round of its own over all
 *                   ranks), the ring above (streams without hier's phase boundaries; it runs
 *                   in host order, crossing each host boundary once per direction)
 *   broadcast       hier below 256 KiB (the data crosses the network once per other host);
 *                   the pipeline above, its chain in host order
 *
 * and the rings of allgather(v) and reduce_scatter run in host order too (ring.c).
 */
#include "algo/algo.h"

#define KiB ((size_t)1024)

struct algo_entry {
	enum ibc_coll coll;
	enum ibc_algo algo;
	ibc_algo_fn fn;
};

static const struct algo_entry algos[] = {
	{ IBC_COLL_ALLREDUCE, IBC_ALGO_RING, ibc_allreduce_ring },
	{ IBC_COLL_ALLREDUCE, IBC_ALGO_RD, ibc_allreduce_rd },
	{ IBC_COLL_ALLREDUCE, IBC_ALGO_TREE, ibc_allreduce_tree },
	{ IBC_COLL_BROADCAST, IBC_ALGO_TREE, ibc_broadcast_tree },
	{ IBC_COLL_BROADCAST, IBC_ALGO_PIPELINE, ibc_broadcast_pipeline },
	{ IBC_COLL_BROADCAST, IBC_ALGO_RD, ibc_broadcast_rd },
	{ IBC_COLL_REDUCE, IBC_ALGO_TREE, ibc_reduce_tree },
	{ IBC_COLL_REDUCE, IBC_ALGO_LINEAR, ibc_reduce_linear },
	{ IBC_COLL_ALLGATHER, IBC_ALGO_RING, ibc_allgather_ring },
	{ IBC_COLL_ALLGATHER, IBC_ALGO_LINEAR, ibc_allgather_linear },
	{ IBC_COLL_ALLGATHER, IBC_ALGO_RD, ibc_allgather_rd },
	{ IBC_COLL_REDUCE_SCATTER, IBC_ALGO_RING, ibc_reduce_scatter_ring },
	{ IBC_COLL_REDUCE_SCATTER, IBC_ALGO_LINEAR, ibc_reduce_scatter_linear },
	{ IBC_COLL_GATHER, IBC_ALGO_TREE, ibc_gather_tree },
	{ IBC_COLL_GATHER, IBC_ALGO_LINEAR, ibc_gather_linear },
	{ IBC_COLL_SCATTER, IBC_ALGO_TREE, ibc_scatter_tree },
	{ IBC_COLL_SCATTER, IBC_ALGO_LINEAR, ibc_scatter_linear },
	{ IBC_COLL_ALLTOALL, IBC_ALGO_PAIRWISE, ibc_alltoall_pairwise },
	{ IBC_COLL_ALLTOALL, IBC_ALGO_LINEAR, ibc_alltoall_linear },
	{ IBC_COLL_BARRIER, IBC_ALGO_DISSEM, ibc_barrier_dissem },
	{ IBC_COLL_BARRIER, IBC_ALGO_TREE, ibc_barrier_tree },
	{ IBC_COLL_ALLGATHERV, IBC_ALGO_RING, ibc_allgatherv_ring },
	{ IBC_COLL_ALLGATHERV, IBC_ALGO_LINEAR, ibc_allgatherv_linear },
	{ IBC_COLL_ALLTOALLV, IBC_ALGO_PAIRWISE, ibc_alltoallv_pairwise },
	{ IBC_COLL_ALLTOALLV, IBC_ALGO_LINEAR, ibc_alltoallv_linear },
	{ IBC_COLL_ALLREDUCE, IBC_ALGO_HIER, ibc_allreduce_hier },
	{ IBC_COLL_BROADCAST, IBC_ALGO_HIER, ibc_broadcast_hier },
};

ibc_algo_fn ibc_algo_impl(enum ibc_coll coll, enum ibc_algo algo)
{
	for (size_t i = 0; i < IBC_ARRAY_SIZE(algos); i++)
		if (algos[i].coll == coll && algos[i].algo == algo)
			return algos[i].fn;
	return NULL;
}

bool ibc_algo_valid(enum ibc_coll coll, enum ibc_algo algo)
{
	return ibc_algo_impl(coll, algo) != NULL;
}

enum ibc_algo ibc_algo_auto(enum ibc_coll coll, size_t bytes, int nranks)
{
	size_t n = nranks > 0 ? (size_t)nranks : 1;
	/* rd's messages carry the call signatures (sig.c) where a tree or linear pays a round */
	bool carries_sig = n > 2 && bytes && bytes <= IBC_HOOK_MSG_MAX;

	switch (coll) {
	case IBC_COLL_ALLREDUCE:
		if (bytes < 32 * KiB)
			return IBC_ALGO_RD;
		return n > 32 && bytes / n < 4 * KiB ? IBC_ALGO_TREE : IBC_ALGO_RING;
	case IBC_COLL_BROADCAST:
		if (carries_sig)
			return IBC_ALGO_RD;
		return bytes < 256 * KiB ? IBC_ALGO_TREE : IBC_ALGO_PIPELINE;
	case IBC_COLL_ALLGATHER:
		if (carries_sig)
			return IBC_ALGO_RD;
		return bytes < 64 * KiB ? IBC_ALGO_LINEAR : IBC_ALGO_RING;
	case IBC_COLL_REDUCE:
		return IBC_ALGO_TREE;
	case IBC_COLL_REDUCE_SCATTER:
	case IBC_COLL_ALLGATHERV:
		return bytes < 64 * KiB ? IBC_ALGO_LINEAR : IBC_ALGO_RING;
	case IBC_COLL_GATHER:
	case IBC_COLL_SCATTER:
		return bytes < 256 * KiB ? IBC_ALGO_TREE : IBC_ALGO_LINEAR;
	case IBC_COLL_ALLTOALL:
	case IBC_COLL_ALLTOALLV:
		return bytes < 16 * KiB ? IBC_ALGO_LINEAR : IBC_ALGO_PAIRWISE;
	case IBC_COLL_BARRIER:
	case IBC_COLL_COUNT:
		break;
	}
	return IBC_ALGO_DISSEM;
}

/* Ranks span hosts and some host has more than one of them. */
static bool hier_layout(const struct ibcomm *comm)
{
	const struct ibc_hosts *h = &comm->hosts;

	return h->host_of && h->nhosts > 1 && h->nhosts < comm->size;
}

/*
 * Allreduce over TCP: a step costs tens of microseconds (a loopback round trip is about 13 us
 * idle, far more with ranks sharing cores), so recursive doubling's log2(n) whole-vector steps
 * beat the ring's 2(n-1) steps of 1/n up to about 8 x step latency x bandwidth. With n a power
 * of two (no fold steps) up to 8 ranks: rd below 512 KiB (4 ranks, this 2-core machine under
 * load: 32 KiB 1.0 ms vs 1.5 ms for the ring, 256 KiB 1.8 vs 3.0 ms, 512 KiB 2.9 vs 5.1 ms).
 */
#define TCP_RD_MAX (512 * KiB)

static bool tcp_rd(const struct ibcomm *comm, enum ibc_coll coll, size_t bytes)
{
	int n = comm->size;

	return coll == IBC_COLL_ALLREDUCE && comm->tp && comm->tp->ops == &ibc_tcp_ops && n > 2 && n <= 8 &&
	       !(n & (n - 1)) && bytes < TCP_RD_MAX;
}

enum ibc_algo ibc_algo_select(const struct ibcomm *comm, enum ibc_coll coll, size_t bytes)
{
	enum ibc_algo forced = comm->set.algo[coll];

	if (forced != IBC_ALGO_AUTO && ibc_algo_valid(coll, forced))
		return forced;
	if (hier_layout(comm) && ((coll == IBC_COLL_ALLREDUCE && bytes >= 32 * KiB && bytes < 1024 * KiB) ||
				  (coll == IBC_COLL_BROADCAST && bytes < 256 * KiB)))
		return IBC_ALGO_HIER;
	if (tcp_rd(comm, coll, bytes))
		return IBC_ALGO_RD;
	return ibc_algo_auto(coll, bytes, comm->size);
}
