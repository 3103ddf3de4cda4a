/*
 * The public collectives with per-rank counts, ibcomm_allgatherv and ibcomm_alltoallv: their
 * argument checks (a count vector and its displacements describe where each block lies),
 * then the path every collective takes (coll.h): the signature round, which here also checks
 * that every pair of ranks agrees on its counts (algo/vcount.c), then the algorithm
 * (algo/vcoll.c).
 */
#include <string.h>

#include "ibc.h"
#include "coll.h"
#include "algo/algo.h"
#include "algo/sig.h"

/*
 * counts[j] elements at displs[j] for each rank j: both vectors given, every block's end in
 * bytes representable; *extent = the bytes from buf to the end of the farthest block.
 */
static ibcomm_status_t check_blocks(struct ibcomm *comm, const char *fn, const char *cname, const size_t *counts,
				    const char *dname, const size_t *displs, size_t esz, size_t *extent)
{
	size_t most = 0;

	if (!counts || !displs)
		return ibc_err(comm, IBCOMM_ERR_INVALID, "%s on rank %d: %s is NULL", fn, comm->rank,
			       counts ? dname : cname);
	for (int j = 0; j < comm->size; j++) {
		size_t end;

		if (!counts[j])
			continue;
		if (__builtin_add_overflow(displs[j], counts[j], &end) || __builtin_mul_overflow(end, esz, &end) ||
		    end > PTRDIFF_MAX)
			return ibc_err(comm, IBCOMM_ERR_INVALID, "%s on rank %d: %s[%d] %zu + %s[%d] %zu elements is too "
				       "large (the buffer size overflows)", fn, comm->rank, dname, j, displs[j], cname, j,
				       counts[j]);
		most = IBC_MAX(most, end);
	}
	*extent = most;
	return IBCOMM_OK;
}

static ibcomm_status_t check_buf(struct ibcomm *comm, const char *fn, const char *name, const void *buf, size_t len)
{
	if (!buf && len)
		return ibc_err(comm, IBCOMM_ERR_INVALID, "%s on rank %d: %s is NULL with %zu bytes to %s", fn,
			       comm->rank, name, len, strcmp(name, "sendbuf") ? "receive" : "send");
	return IBCOMM_OK;
}

/* x + y, or SIZE_MAX (the sizes only choose an algorithm) */
static size_t add_sat(size_t x, size_t y)
{
	return __builtin_add_overflow(x, y, &x) ? SIZE_MAX : x;
}

/*
 * After the checks: the signature and count round, then the algorithm. `moves`: this call
 * moves data on some rank (the same answer on every rank when the counts agree).
 */
static ibcomm_status_t vcoll_run(struct ibc_coll_args *a, size_t sel_bytes, bool moves)
{
	struct ibcomm *comm = a->comm;
	uint8_t h[IBC_VCOUNT_HASH_LEN];
	static const uint8_t zero[IBC_VCOUNT_HASH_LEN];
	struct ibc_sig sig;
	ibcomm_status_t st;

	if (a->size == 1) {
		/* the only pair is this rank with itself */
		ibc_vcount_hash(a, h);
		return memcmp(h, zero, sizeof(h)) ? ibc_vcount_mismatch(a) : IBCOMM_OK;
	}
	a->algo = ibc_algo_select(comm, a->coll, sel_bytes);
	if ((st = ibc_coll_settle(a, ibc_sig_begin(&sig, a, sel_bytes))) || !moves)
		return st;
	ibc_ctrace(comm, "rank %d: %s #%u, %zu bytes, algorithm %s", a->rank, ibc_coll_name(a->coll), a->seq, sel_bytes,
		   ibc_algo_name(a->algo));
	st = ibc_algo_impl(a->coll, a->algo)(a);
	if (!st)
		st = ibc_sig_end(&sig);
	return ibc_coll_settle(a, st);
}

/*
 * One checked call, run where it may touch the transport (ibc_nbc_call: at once, or behind
 * the communicator's pending nonblocking requests; the sequence number is taken there).
 */
struct vcall {
	enum ibc_coll coll;
	const void *sendbuf;
	void *recvbuf;
	size_t sendcount, esz;
	ibcomm_dtype_t dtype;
	const size_t *scounts, *sdispls, *rcounts, *rdispls;
	size_t sel_bytes;
	bool moves;
};

/* One rank: its own block, from sendbuf to recvbuf unless in place. */
static void vcall_self(const struct vcall *v)
{
	size_t len = v->coll == IBC_COLL_ALLGATHERV ? v->sendcount * v->esz : v->scounts[0] * v->esz;
	const char *src = v->coll == IBC_COLL_ALLGATHERV ? v->sendbuf : (const char *)v->sendbuf + v->sdispls[0] * v->esz;
	char *dst;

	if (!len)
		return;
	dst = (char *)v->recvbuf + v->rdispls[0] * v->esz;
	if (dst != src)
		memcpy(dst, src, len);
}

static ibcomm_status_t vcall_run(struct ibcomm *comm, void *arg)
{
	const struct vcall *v = arg;
	struct ibc_coll_args a;
	ibcomm_status_t st;

	ibc_coll_args_init(&a, comm, v->coll, v->sendbuf, v->recvbuf, v->sendcount, v->dtype, v->esz);
	a.scounts = v->scounts;
	a.sdispls = v->sdispls;
	a.rcounts = v->rcounts;
	a.rdispls = v->rdispls;
	st = vcoll_run(&a, v->sel_bytes, v->moves);
	if (!st && comm->size == 1)
		vcall_self(v);
	return st;
}

ibcomm_status_t ibcomm_allgatherv(ibcomm_t *comm, const void *sendbuf, size_t sendcount, void *recvbuf,
				  const size_t *recvcounts, const size_t *displs, ibcomm_dtype_t dtype)
{
	static const char fn[] = "ibcomm_allgatherv";
	size_t esz, sbytes, extent, total = 0;
	ibcomm_status_t st;

	if ((st = ibc_coll_check_base(comm, fn, dtype, &esz)))
		return st;
	if (__builtin_mul_overflow(sendcount, esz, &sbytes) || sbytes > PTRDIFF_MAX)
		return ibc_err(comm, IBCOMM_ERR_INVALID, "%s on rank %d: sendcount %zu is too large (the buffer size "
			       "overflows)", fn, comm->rank, sendcount);
	if ((st = check_blocks(comm, fn, "recvcounts", recvcounts, "displs", displs, esz, &extent)) ||
	    (st = check_buf(comm, fn, "sendbuf", sendbuf, sbytes)) || (st = check_buf(comm, fn, "recvbuf", recvbuf, extent)))
		return st;
	/* in place (as allgather) when sendbuf is this rank's block of recvbuf */
	if (!recvbuf || sendbuf != (const char *)recvbuf + displs[comm->rank] * esz) {
		if ((st = ibc_coll_check_overlap(comm, fn, sendbuf, sbytes, recvbuf, extent)))
			return st;
	}
	for (int j = 0; j < comm->size; j++)
		total = add_sat(total, recvcounts[j] * esz); /* each block ends below PTRDIFF_MAX */
	return ibc_nbc_call(comm, fn, vcall_run,
			    &(struct vcall){ .coll = IBC_COLL_ALLGATHERV, .sendbuf = sendbuf, .recvbuf = recvbuf,
					     .sendcount = sendcount, .esz = esz, .dtype = dtype, .rcounts = recvcounts,
					     .rdispls = displs, .sel_bytes = total, .moves = total != 0 });
}

ibcomm_status_t ibcomm_alltoallv(ibcomm_t *comm, const void *sendbuf, const size_t *sendcounts, const size_t *sdispls,
				 void *recvbuf, const size_t *recvcounts, const size_t *rdispls, ibcomm_dtype_t dtype)
{
	static const char fn[] = "ibcomm_alltoallv";
	size_t esz, sext, rext, sall = 0, rall = 0;
	ibcomm_status_t st;

	if ((st = ibc_coll_check_base(comm, fn, dtype, &esz)))
		return st;
	if ((st = check_blocks(comm, fn, "sendcounts", sendcounts, "sdispls", sdispls, esz, &sext)) ||
	    (st = check_blocks(comm, fn, "recvcounts", recvcounts, "rdispls", rdispls, esz, &rext)) ||
	    (st = check_buf(comm, fn, "sendbuf", sendbuf, sext)) || (st = check_buf(comm, fn, "recvbuf", recvbuf, rext)))
		return st;
	if (sendbuf && sendbuf == recvbuf && sext && rext)
		return ibc_err(comm, IBCOMM_ERR_INVALID, "%s on rank %d: sendbuf == recvbuf, but alltoallv is never in "
			       "place", fn, comm->rank);
	if ((st = ibc_coll_check_overlap(comm, fn, sendbuf, sext, recvbuf, rext)))
		return st;
	for (int j = 0; j < comm->size; j++) {
		sall = add_sat(sall, sendcounts[j] * esz);
		rall = add_sat(rall, recvcounts[j] * esz);
	}
	/* every rank runs its (maybe empty) plan: a rank cannot know that the others move nothing */
	return ibc_nbc_call(comm, fn, vcall_run,
			    &(struct vcall){ .coll = IBC_COLL_ALLTOALLV, .sendbuf = sendbuf, .recvbuf = recvbuf,
					     .esz = esz, .dtype = dtype, .scounts = sendcounts, .sdispls = sdispls,
					     .rcounts = recvcounts, .rdispls = rdispls,
					     .sel_bytes = IBC_MAX(sall, rall) / (size_t)comm->size, .moves = true });
}
