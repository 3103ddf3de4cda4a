/*
 * Collective algorithms, written once against the transport interface (transport.h).
 *
 * Every algorithm is described as a plan: a list of transfers (xops), each one message to or
 * from one peer, cut into chunks of plan->cs bytes. A transfer may depend on another one, chunk
 * by chunk (a ring step forwards chunk c as soon as chunk c of the previous step has been
 * reduced) or as a whole. ibc_plan_run() drives all of them at once without blocking on any
 * single peer: sends are put() without waiting while credits last, chunks are taken as they
 * arrive, and only when nothing can progress does it block in ibc_wait().
 *
 * Messages to (or from) one peer are sent (or taken) in plan order: both sides of a pair
 * describe the same messages in the same order with the same lengths and chunk size.
 */
#ifndef IBC_ALGO_H
#define IBC_ALGO_H

#include "ibc.h"

struct ibc_plan;

/*
 * What rides on a plan's messages without the algorithm knowing (the call signatures,
 * sig.c): the engine hands the hook every chunk it puts and every chunk it takes. NULL in
 * ibc_coll_args: nothing rides.
 */
#define IBC_HOOK_PASS 2        /* put: nothing to add, the engine puts the chunk as it is */
#define IBC_HOOK_USED 2        /* take: the chunk was the hook's alone (no data): release it */
#define IBC_HOOK_DROP 3        /* take: release the chunk and end its message unread */
#define IBC_HOOK_MSG_MAX 4096u /* largest message of a plan whose hook rides on every message */

struct ibc_xhook {
	/*
	 * Chunk c of the nchunks of a message to peer (len bytes at src): puts it itself, with
	 * what rides in front, and returns as ibc_put() (0, IBC_AGAIN, an error < 0); or returns
	 * IBC_HOOK_PASS.
	 */
	int (*put)(struct ibc_xhook *h, int peer, uint32_t c, uint32_t nchunks, const void *src, size_t len);
	/*
	 * Chunk c of a message from peer, just taken: strips what rides in front and returns 0
	 * (ch then describes the data, to check and apply), or IBC_HOOK_USED, IBC_HOOK_DROP, an
	 * error < 0.
	 */
	int (*take)(struct ibc_xhook *h, int peer, uint32_t c, ibc_chunk_t *ch);
	/* Before the plan's first transfer; may block until the call's deadline. */
	ibcomm_status_t (*start)(struct ibc_xhook *h, const struct ibc_plan *p);
	bool every_msg; /* rides on every message: each is one chunk of at most IBC_HOOK_MSG_MAX bytes */
	bool dropped;   /* data was dropped (IBC_HOOK_DROP): the plan's results are not to be used */
};

/* Everything an algorithm needs for one call (filled by coll.c). */
struct ibc_coll_args {
	struct ibcomm *comm;
	ibc_tp_t *tp;
	enum ibc_coll coll;
	enum ibc_algo algo;    /* the algorithm running (for error messages) */
	uint32_t seq;          /* sequence number of this call */
	uint32_t tag;          /* IBC_COLL_TAG(seq, coll): carried by every chunk */
	ibc_deadline_t dl;
	const void *sendbuf;
	void *recvbuf;         /* broadcast: the buffer */
	size_t count;          /* elements: the whole vector (allreduce, reduce, broadcast) or one
				* rank's block (allgather, reduce_scatter, gather, scatter, alltoall) */
	size_t esz;            /* bytes per element */
	ibcomm_dtype_t dtype;
	ibcomm_op_t op;
	ibc_reduce_fn reduce;  /* NULL for collectives that do not reduce */
	int root;
	int rank, size;
	struct ibc_xhook *hook; /* what rides on the messages (the call signatures), or NULL */
	/*
	 * The collectives with per-rank counts (vcoll.c), in elements: allgatherv takes count
	 * (this rank's sendcount), rcounts and rdispls; alltoallv all four. NULL otherwise.
	 */
	const size_t *scounts, *sdispls, *rcounts, *rdispls;
	/*
	 * A group of the communicator's ranks, or an order of all of them: the algorithm's rank i
	 * (its peers, rank, size and root) is the communicator's rank grp[i]; the engine maps
	 * peers as it adds transfers. NULL: the communicator's ranks in rank order.
	 */
	const int *grp;
};

/* The communicator's rank of a's rank i. */
static inline int ibc_grp_rank(const struct ibc_coll_args *a, int i)
{
	return a->grp ? a->grp[i] : i;
}

/*
 * The ring algorithms (and the broadcast chain) run over positions in the host order
 * (hosts.c) when rank order would cross between hosts more than once: v becomes a's copy over
 * that order (blocks stay where the ranks' are: ibc_grp_rank() of a position) and is
 * returned; else a itself.
 */
static inline struct ibc_coll_args *ibc_ring_view(struct ibc_coll_args *a, struct ibc_coll_args *v)
{
	const int *ring = a->comm->hosts.ring;

	if (a->grp || !ring || a->size != a->comm->size)
		return a;
	*v = *a;
	v->grp = ring;
	v->rank = ring[a->size + a->rank];
	v->root = ring[a->size + a->root];
	return v;
}

#define IBC_COLL_TAG(seq, coll) ((((uint32_t)(seq) & 0xffffffu) << 8) | ((uint32_t)(coll) & 0xffu))

typedef ibcomm_status_t (*ibc_algo_fn)(struct ibc_coll_args *a);

/* ---- prim.c: the transfer engine ---- */
enum ibc_xmode {
	IBC_X_SEND,       /* put src[0..len) */
	IBC_X_COPY,       /* dst = incoming */
	IBC_X_REDUCE,     /* dst = local op incoming (local = src, or dst itself when src is NULL) */
	IBC_X_REDUCE_REV  /* dst = incoming op local: the incoming data is the left operand */
};

#define IBC_DEP_ALL ((size_t)-1) /* dep_off: wait for the whole dependency */

struct ibc_xop {
	int peer;
	enum ibc_xmode mode;
	const char *src;
	char *dst;
	size_t len;
	uint32_t nchunks, done; /* a message has at least one chunk, even when empty */
	int dep;                /* index of the transfer this one waits for, or -1 */
	size_t dep_off;         /* chunk [o, e) of this transfer waits until the dependency has
				 * completed its bytes [0, dep_off + e); IBC_DEP_ALL: until it is done */
};

#define IBC_PLAN_SMALL_OPS 8
#define IBC_PLAN_SMALL_RANKS 64

struct ibc_plan {
	struct ibc_coll_args *a;
	size_t cs;              /* chunk size in bytes, a multiple of the element size */
	struct ibc_xop *ops;
	int nops, cap, first;
	uint8_t *blocked;       /* per peer, during one pass: 1 send, 2 recv waits behind an earlier one */
	ibcomm_status_t status; /* first error while building */
	/* small plans (most calls) live here: no allocation per call */
	struct ibc_xop ops_small[IBC_PLAN_SMALL_OPS];
	uint8_t blocked_small[IBC_PLAN_SMALL_RANKS];
};

/* Chunk size for messages of about `bytes`: small enough that a message has several chunks in
 * flight, at most tp->max_chunk, whole elements; the same on every rank for the same inputs. */
IBC_HIDDEN size_t ibc_chunk_size(const ibc_tp_t *tp, size_t bytes, size_t esz);
IBC_HIDDEN void ibc_plan_init(struct ibc_plan *p, struct ibc_coll_args *a, size_t cs);
/* Each returns the transfer's index (for dependencies), or -1 after recording ENOMEM. */
IBC_HIDDEN int ibc_plan_send(struct ibc_plan *p, int peer, const void *src, size_t len, int dep, size_t dep_off);
IBC_HIDDEN int ibc_plan_recv(struct ibc_plan *p, int peer, enum ibc_xmode mode, void *dst, const void *local,
			     size_t len, int dep, size_t dep_off);
IBC_HIDDEN ibcomm_status_t ibc_plan_run(struct ibc_plan *p);
IBC_HIDDEN void ibc_plan_free(struct ibc_plan *p);
/* One pipelined message to (from) peer: a plan of a single transfer, run to completion. */
IBC_HIDDEN ibcomm_status_t ibc_send_buf(struct ibc_coll_args *a, int peer, const void *src, size_t len, size_t cs);
IBC_HIDDEN ibcomm_status_t ibc_recv_buf(struct ibc_coll_args *a, int peer, enum ibc_xmode mode, void *dst,
					const void *local, size_t len, size_t cs);
/*
 * The recursive-doubling exchange pattern of n > 1 ranks (rd.c) over a len-byte vector:
 * `mine` is this rank's contribution, buf (len bytes; may be mine) receives the result. With
 * len 0 it is a pure dissemination (of what the plan's hook carries: the call signatures,
 * sig.c) in which every rank hears from every other. Returns p->status.
 */
IBC_HIDDEN ibcomm_status_t ibc_rd_plan(struct ibc_plan *p, const void *mine, char *buf, size_t len);
/* malloc that records IBCOMM_ERR_NOMEM on a's communicator (0 bytes gives a valid pointer). */
IBC_HIDDEN void *ibc_scratch(struct ibc_coll_args *a, size_t bytes);

/* Binomial tree relative to root: vr = (rank - root) mod n; parent of vr clears its lowest
 * set bit; children of vr are vr + m for powers of two m below vr's lowest set bit. */
static inline int ibc_vrank(int rank, int root, int n)
{
	return (rank - root + n) % n;
}
static inline int ibc_absrank(int vr, int root, int n)
{
	return (vr + root) % n;
}
/* Lowest set bit of vr, or the first power of two >= n for vr == 0: children use m < this. */
static inline int ibc_tree_span(int vr, int n)
{
	int m = 1;

	if (vr)
		return vr & -vr;
	while (m < n)
		m <<= 1;
	return m;
}
/* Ranks in the subtree of vr (itself included). */
static inline int ibc_tree_size(int vr, int n)
{
	int s = ibc_tree_span(vr, n);

	return IBC_MIN(s, n - vr);
}

/* ---- the algorithms (IBCOMM_ALGO names in comments) ---- */
IBC_HIDDEN ibcomm_status_t ibc_allreduce_ring(struct ibc_coll_args *a);      /* ring */
IBC_HIDDEN ibcomm_status_t ibc_allreduce_rd(struct ibc_coll_args *a);        /* rd */
IBC_HIDDEN ibcomm_status_t ibc_allreduce_tree(struct ibc_coll_args *a);      /* tree */
IBC_HIDDEN ibcomm_status_t ibc_broadcast_tree(struct ibc_coll_args *a);      /* tree */
IBC_HIDDEN ibcomm_status_t ibc_broadcast_pipeline(struct ibc_coll_args *a);  /* pipeline */
IBC_HIDDEN ibcomm_status_t ibc_broadcast_rd(struct ibc_coll_args *a);        /* rd */
IBC_HIDDEN ibcomm_status_t ibc_reduce_tree(struct ibc_coll_args *a);         /* tree */
IBC_HIDDEN ibcomm_status_t ibc_reduce_linear(struct ibc_coll_args *a);       /* linear */
IBC_HIDDEN ibcomm_status_t ibc_allgather_ring(struct ibc_coll_args *a);      /* ring */
IBC_HIDDEN ibcomm_status_t ibc_allgather_linear(struct ibc_coll_args *a);    /* linear */
IBC_HIDDEN ibcomm_status_t ibc_allgather_rd(struct ibc_coll_args *a);        /* rd */
IBC_HIDDEN ibcomm_status_t ibc_reduce_scatter_ring(struct ibc_coll_args *a); /* ring */
IBC_HIDDEN ibcomm_status_t ibc_reduce_scatter_linear(struct ibc_coll_args *a); /* linear */
IBC_HIDDEN ibcomm_status_t ibc_gather_tree(struct ibc_coll_args *a);         /* tree */
IBC_HIDDEN ibcomm_status_t ibc_gather_linear(struct ibc_coll_args *a);       /* linear */
IBC_HIDDEN ibcomm_status_t ibc_scatter_tree(struct ibc_coll_args *a);        /* tree */
IBC_HIDDEN ibcomm_status_t ibc_scatter_linear(struct ibc_coll_args *a);      /* linear */
IBC_HIDDEN ibcomm_status_t ibc_alltoall_pairwise(struct ibc_coll_args *a);   /* pairwise */
IBC_HIDDEN ibcomm_status_t ibc_alltoall_linear(struct ibc_coll_args *a);     /* linear */
IBC_HIDDEN ibcomm_status_t ibc_barrier_dissem(struct ibc_coll_args *a);      /* dissem */
IBC_HIDDEN ibcomm_status_t ibc_barrier_tree(struct ibc_coll_args *a);        /* tree */
IBC_HIDDEN ibcomm_status_t ibc_allgatherv_ring(struct ibc_coll_args *a);     /* ring */
IBC_HIDDEN ibcomm_status_t ibc_allgatherv_linear(struct ibc_coll_args *a);   /* linear */
IBC_HIDDEN ibcomm_status_t ibc_alltoallv_pairwise(struct ibc_coll_args *a);  /* pairwise */
IBC_HIDDEN ibcomm_status_t ibc_alltoallv_linear(struct ibc_coll_args *a);    /* linear */
IBC_HIDDEN ibcomm_status_t ibc_allreduce_hier(struct ibc_coll_args *a);      /* hier */
IBC_HIDDEN ibcomm_status_t ibc_broadcast_hier(struct ibc_coll_args *a);      /* hier */

/* ---- hier.c: the groups of the hierarchical algorithms ---- */
struct ibc_hier {
	int *local;        /* this rank's host's ranks, in rank order */
	int nlocal, me_local;
	int local_root;    /* index in local of the host's leader: the root on the root's host, else
			    * the lowest rank */
	int *leaders;      /* one leader per host, hosts in order */
	int nleaders;
	int me_leader;     /* this rank's index in leaders, or -1 */
	int leaders_root;  /* index in leaders of the root (0 without a root) */
};
/*
 * The groups of rank `rank` of n with hosts host_of[] (numbered by lowest rank), for a
 * collective rooted at root (or -1: allreduce); buf holds 2n ints for the two lists.
 */
IBC_HIDDEN void ibc_hier_groups(int n, const int *host_of, int rank, int root, int *buf, struct ibc_hier *h);

/* ---- vcount.c: the counts of the collectives with per-rank counts ---- */
static inline bool ibc_coll_is_v(enum ibc_coll coll)
{
	return coll == IBC_COLL_ALLGATHERV || coll == IBC_COLL_ALLTOALLV;
}
/* Elements this rank sends to rank j, and expects from rank j. */
static inline size_t ibc_vcount_out(const struct ibc_coll_args *a, int j)
{
	return a->coll == IBC_COLL_ALLGATHERV ? a->count : a->scounts[j];
}
static inline size_t ibc_vcount_in(const struct ibc_coll_args *a, int j)
{
	return a->rcounts[j];
}
#define IBC_VCOUNT_HASH_LEN 8
/*
 * This rank's share of the count check: the XOR over the ranks' shares is zero when every
 * (sender, receiver) pair agrees on its count (and nonzero, but for a 2^-64 chance, otherwise).
 * Written little-endian; the XOR is bytewise, so it needs no byte order.
 */
IBC_HIDDEN void ibc_vcount_hash(const struct ibc_coll_args *a, uint8_t out[IBC_VCOUNT_HASH_LEN]);
/* Bytewise XOR, the reduction of the shares above. */
IBC_HIDDEN void ibc_vcount_xor(void *dst, const void *src, size_t n);
/*
 * Once every rank knows the counts disagree: the ranks exchange their counts (one small
 * message each way per pair), then reduce what they found, so that every rank names the
 * same first disagreeing pair and the number of such pairs. Returns IBCOMM_ERR_MISMATCH
 * with that detail, or the error of the exchange.
 */
IBC_HIDDEN ibcomm_status_t ibc_vcount_mismatch(struct ibc_coll_args *a);

/* ---- select.c ---- */
/* True when algo is one of coll's algorithms (IBC_ALGO_AUTO is not). */
IBC_HIDDEN bool ibc_algo_valid(enum ibc_coll coll, enum ibc_algo algo);
/* The automatic choice for a call moving `bytes` (see select.c for what bytes means per
 * collective) among nranks ranks. Never IBC_ALGO_AUTO. */
IBC_HIDDEN enum ibc_algo ibc_algo_auto(enum ibc_coll coll, size_t bytes, int nranks);
/* comm's forced choice (IBCOMM_ALGO) when valid for coll, else ibc_algo_auto(). */
IBC_HIDDEN enum ibc_algo ibc_algo_select(const struct ibcomm *comm, enum ibc_coll coll, size_t bytes);
/* The implementation of (coll, algo), or NULL when algo is not one of coll's. */
IBC_HIDDEN ibc_algo_fn ibc_algo_impl(enum ibc_coll coll, enum ibc_algo algo);

#endif
