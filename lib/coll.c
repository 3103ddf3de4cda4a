/*
 * The public collectives: argument checks, sequence numbers and tags, the size-1 and
 * count-0 cases, the choice of algorithm (algo/select.c) and the final step of AVG.
 */
#include <stdio.h>
#include <string.h>

#include "ibc.h"
#include "algo/algo.h"
#include "algo/sig.h"
#include "regcache.h"

/* Checks shared by every call. */
static ibcomm_status_t check_comm(struct ibcomm *comm, const char *fn)
{
	if (!comm)
		return ibc_err_thread(IBCOMM_ERR_INVALID, "%s: comm is NULL", fn);
	if (comm->failed)
		return comm->failed;
	if (atomic_load(&comm->aborted))
		return ibc_err(comm, IBCOMM_ERR_ABORTED, "%s on rank %d: the communicator was aborted", fn,
			       comm->rank);
	return IBCOMM_OK;
}

static ibcomm_status_t check_dtype(struct ibcomm *comm, const char *fn, ibcomm_dtype_t dtype, size_t *esz)
{
	if (!ibc_dtype_valid(dtype))
		return ibc_err(comm, IBCOMM_ERR_INVALID, "%s on rank %d: dtype %d is not an ibcomm_dtype_t", fn,
			       comm->rank, (int)dtype);
	*esz = ibcomm_dtype_size(dtype);
	return IBCOMM_OK;
}

static ibcomm_status_t check_op(struct ibcomm *comm, const char *fn, ibcomm_dtype_t dtype, ibcomm_op_t op,
				ibc_reduce_fn *kernel)
{
	if (!ibc_op_valid(op))
		return ibc_err(comm, IBCOMM_ERR_INVALID, "%s on rank %d: op %d is not an ibcomm_op_t", fn, comm->rank,
			       (int)op);
	*kernel = ibc_reduce_kernel(dtype, op);
	if (!*kernel)
		return ibc_err(comm, IBCOMM_ERR_INVALID, "%s on rank %d: op %s is not supported on %s", fn,
			       comm->rank, ibc_op_name(op), ibc_dtype_name(dtype));
	return IBCOMM_OK;
}

static ibcomm_status_t check_root(struct ibcomm *comm, const char *fn, int root)
{
	if (root < 0 || root >= comm->size)
		return ibc_err(comm, IBCOMM_ERR_INVALID, "%s on rank %d: root %d is not a rank of this %d-rank "
			       "communicator", fn, comm->rank, root, comm->size);
	return IBCOMM_OK;
}

/* *bytes = count * esz * mult, unless that overflows. */
static ibcomm_status_t check_count(struct ibcomm *comm, const char *fn, const char *what, size_t count, size_t esz,
				   size_t mult, size_t *bytes)
{
	size_t b;

	if (__builtin_mul_overflow(count, esz, &b) || __builtin_mul_overflow(b, mult, &b) || b > PTRDIFF_MAX)
		return ibc_err(comm, IBCOMM_ERR_INVALID, "%s on rank %d: %s %zu is too large (the buffer size "
			       "overflows)", fn, comm->rank, what, count);
	*bytes = b;
	return IBCOMM_OK;
}

static ibcomm_status_t check_buf(struct ibcomm *comm, const char *fn, const char *name, const void *buf,
				 size_t count)
{
	if (!buf && count)
		return ibc_err(comm, IBCOMM_ERR_INVALID, "%s on rank %d: %s is NULL with count %zu", fn, comm->rank,
			       name, count);
	return IBCOMM_OK;
}

/* [a, a+alen) and [b, b+blen) share a byte. */
static bool overlap(const void *a, size_t alen, const void *b, size_t blen)
{
	uintptr_t x = (uintptr_t)a, y = (uintptr_t)b;

	return alen && blen && x < y + blen && y < x + alen;
}

static ibcomm_status_t check_overlap(struct ibcomm *comm, const char *fn, const void *send, size_t slen,
				     const void *recv, size_t rlen)
{
	if (overlap(send, slen, recv, rlen))
		return ibc_err(comm, IBCOMM_ERR_INVALID, "%s on rank %d: sendbuf and recvbuf overlap without being "
			       "the in-place layout", fn, comm->rank);
	return IBCOMM_OK;
}

static void args_init(struct ibc_coll_args *a, struct ibcomm *comm, enum ibc_coll coll, const void *sendbuf,
		      void *recvbuf, size_t count, ibcomm_dtype_t dtype, size_t esz)
{
	memset(a, 0, sizeof(*a));
	a->comm = comm;
	a->tp = comm->tp;
	a->coll = coll;
	a->seq = comm->seq++;
	a->tag = IBC_COLL_TAG(a->seq, coll);
	a->dl = ibc_call_deadline(comm);
	a->sendbuf = sendbuf;
	a->recvbuf = recvbuf;
	a->count = count;
	a->dtype = dtype;
	a->esz = esz;
	a->rank = comm->rank;
	a->size = comm->size;
}

/*
 * After a timeout, finds which ranks are not stuck in the same call: every rank that times
 * out publishes "<id>/stuck/<seq>/<rank>" in the rendezvous and looks for the others' keys
 * for a short grace period. A rank whose key does not come never entered the call (or is
 * stuck elsewhere): the message names it, so the rank to look at is known from any rank's
 * error, not only from its neighbours'.
 */
static void timeout_blame(struct ibc_coll_args *a)
{
	struct ibcomm *comm = a->comm;
	char key[128], err[IBC_ERRLEN], msg[IBC_ERRLEN], list[128] = "";
	static const char prefix[] = "IBCOMM_ERR_TIMEOUT: "; /* ibc_err() adds it again */
	long grace = IBC_MIN(comm->set.timeout_ms / 4, 1000);
	ibc_deadline_t dl;
	int nabsent = 0;

	if (!comm->rdv || a->size > 256 || grace <= 0)
		return;
	snprintf(msg, sizeof(msg), "%s",
		 strncmp(comm->err, prefix, sizeof(prefix) - 1) ? comm->err : comm->err + sizeof(prefix) - 1);
	snprintf(key, sizeof(key), "%s/stuck/%u/%d", comm->id, a->seq, a->rank);
	if (ibc_rdv_put(comm->rdv, key, "1", 1, err, sizeof(err)))
		return;
	dl = ibc_deadline(grace);
	for (int r = 0; r < a->size; r++) {
		ibcomm_status_t st;
		size_t len = strlen(list);

		if (r == a->rank)
			continue;
		snprintf(key, sizeof(key), "%s/stuck/%u/%d", comm->id, a->seq, r);
		st = ibc_rdv_get_cancel(comm->rdv, key, NULL, 0, NULL, dl, &comm->aborted, err, sizeof(err));
		if (st == IBCOMM_OK)
			continue;
		if (st != IBCOMM_ERR_TIMEOUT)
			return;
		if (nabsent < 16)
			snprintf(list + len, sizeof(list) - len, "%s%d", nabsent ? ", " : "", r);
		else if (nabsent == 16)
			snprintf(list + len, sizeof(list) - len, ", ...");
		nabsent++;
	}
	if (nabsent)
		ibc_err(comm, IBCOMM_ERR_TIMEOUT, "%s; not stuck in %s #%u like this rank (never entered it, or stuck "
			"elsewhere): rank %s", msg, ibc_coll_name(a->coll), a->seq & 0xffffffu, list);
	else
		ibc_err(comm, IBCOMM_ERR_TIMEOUT, "%s; every rank is stuck in %s #%u", msg, ibc_coll_name(a->coll),
			a->seq & 0xffffffu);
}

/* A peer or transport failure makes the communicator unusable; a timeout blames somebody. */
static ibcomm_status_t settle(struct ibc_coll_args *a, ibcomm_status_t st)
{
	if (st == IBCOMM_ERR_PEER || st == IBCOMM_ERR_TRANSPORT)
		a->comm->failed = st;
	if (st == IBCOMM_ERR_TIMEOUT)
		timeout_blame(a);
	return st;
}

/* Before anything moves: every rank of a multi-rank communicator checks the call's signature. */
static ibcomm_status_t check_call(struct ibc_coll_args *a, struct ibc_sig *sig, size_t bytes)
{
	if (a->size == 1)
		return IBCOMM_OK;
	a->algo = ibc_algo_select(a->comm, a->coll, bytes); /* named by timeouts */
	return settle(a, ibc_sig_begin(sig, a, bytes));
}

/*
 * Zero-copy source: out of place, the caller's sendbuf is read-only for the whole call, so
 * when it lies in registered memory the transport may send from it in place (put returns
 * before the bytes left) as long as the call waits for those writes before returning. Only
 * the sendbuf bytes qualify, and only when they do not overlap recvbuf (which the call writes).
 */
static bool zc_begin(struct ibc_coll_args *a)
{
	ibc_tp_t *tp = a->tp;
	size_t b = a->count * a->esz, n = (size_t)a->size, slen, rlen;
	void *h;

	if (!tp->ops->flush || !tp->ops->set_zc_source || !a->comm->regcache || !a->sendbuf ||
	    a->sendbuf == a->recvbuf)
		return false;
	switch (a->coll) {
	case IBC_COLL_ALLREDUCE:
	case IBC_COLL_REDUCE:
		slen = b, rlen = b;
		break;
	case IBC_COLL_ALLGATHER:
	case IBC_COLL_GATHER:
		slen = b, rlen = b * n;
		break;
	case IBC_COLL_REDUCE_SCATTER:
	case IBC_COLL_SCATTER:
		slen = b * n, rlen = b;
		break;
	case IBC_COLL_ALLTOALL:
		slen = b * n, rlen = b * n;
		break;
	default:
		return false;
	}
	if (a->recvbuf && overlap(a->sendbuf, slen, a->recvbuf, rlen))
		return false;
	h = ibc_regcache_find(a->comm, a->sendbuf, slen);
	if (!h)
		return false;
	tp->ops->set_zc_source(tp, a->sendbuf, slen, h);
	return true;
}

/* Waits for the zero-copy writes of the call; a failed call keeps its own message. */
static ibcomm_status_t zc_end(struct ibc_coll_args *a, ibcomm_status_t st)
{
	struct ibcomm *comm = a->comm;
	ibc_tp_t *tp = a->tp;
	char saved[IBC_ERRLEN];
	ibcomm_status_t fst;

	if (st)
		memcpy(saved, comm->err, sizeof(saved));
	fst = tp->ops->flush(tp, st ? ibc_deadline(1000) : a->dl);
	if (st)
		memcpy(comm->err, saved, sizeof(saved));
	tp->ops->set_zc_source(tp, NULL, 0, NULL);
	return st ? st : fst;
}

/* Runs the chosen algorithm. */
static ibcomm_status_t run(struct ibc_coll_args *a, struct ibc_sig *sig, size_t bytes)
{
	enum ibc_algo algo = ibc_algo_select(a->comm, a->coll, bytes);
	ibc_algo_fn fn = ibc_algo_impl(a->coll, algo);

	a->algo = algo;
	ibcomm_status_t st;
	bool zc;

	ibc_trace("rank %d: %s #%u, %zu bytes, algorithm %s", a->rank, ibc_coll_name(a->coll), a->seq, bytes,
		  ibc_algo_name(algo));
	zc = zc_begin(a);
	st = fn(a);
	if (!st)
		st = ibc_sig_end(sig);
	if (zc)
		st = zc_end(a, st);
	return settle(a, st);
}

static void local_copy(void *dst, const void *src, size_t bytes)
{
	if (dst != src && bytes)
		memcpy(dst, src, bytes);
}

ibcomm_status_t ibcomm_allreduce(ibcomm_t *comm, const void *sendbuf, void *recvbuf, size_t count,
				 ibcomm_dtype_t dtype, ibcomm_op_t op)
{
	static const char fn[] = "ibcomm_allreduce";
	struct ibc_coll_args a;
	struct ibc_sig sig;
	ibc_reduce_fn kernel;
	size_t esz = 0, bytes = 0;
	ibcomm_status_t st;

	if ((st = check_comm(comm, fn)) || (st = check_dtype(comm, fn, dtype, &esz)) ||
	    (st = check_op(comm, fn, dtype, op, &kernel)) ||
	    (st = check_count(comm, fn, "count", count, esz, 1, &bytes)) ||
	    (st = check_buf(comm, fn, "sendbuf", sendbuf, count)) ||
	    (st = check_buf(comm, fn, "recvbuf", recvbuf, count)))
		return st;
	if (sendbuf != recvbuf && (st = check_overlap(comm, fn, sendbuf, bytes, recvbuf, bytes)))
		return st;
	args_init(&a, comm, IBC_COLL_ALLREDUCE, sendbuf, recvbuf, count, dtype, esz);
	a.op = op;
	a.reduce = kernel;
	if ((st = check_call(&a, &sig, bytes)))
		return st;
	if (!count)
		return IBCOMM_OK;
	if (comm->size == 1)
		local_copy(recvbuf, sendbuf, bytes);
	else if ((st = run(&a, &sig, bytes)))
		return st;
	ibc_reduce_finish(recvbuf, count, dtype, op, comm->size);
	return IBCOMM_OK;
}

ibcomm_status_t ibcomm_broadcast(ibcomm_t *comm, void *buf, size_t count, ibcomm_dtype_t dtype, int root)
{
	static const char fn[] = "ibcomm_broadcast";
	struct ibc_coll_args a;
	struct ibc_sig sig;
	size_t esz = 0, bytes = 0;
	ibcomm_status_t st;

	if ((st = check_comm(comm, fn)) || (st = check_dtype(comm, fn, dtype, &esz)) ||
	    (st = check_root(comm, fn, root)) || (st = check_count(comm, fn, "count", count, esz, 1, &bytes)) ||
	    (st = check_buf(comm, fn, "buf", buf, count)))
		return st;
	args_init(&a, comm, IBC_COLL_BROADCAST, buf, buf, count, dtype, esz);
	a.root = root;
	if ((st = check_call(&a, &sig, bytes)))
		return st;
	if (!count || comm->size == 1)
		return IBCOMM_OK;
	return run(&a, &sig, bytes);
}

ibcomm_status_t ibcomm_reduce(ibcomm_t *comm, const void *sendbuf, void *recvbuf, size_t count,
			      ibcomm_dtype_t dtype, ibcomm_op_t op, int root)
{
	static const char fn[] = "ibcomm_reduce";
	struct ibc_coll_args a;
	struct ibc_sig sig;
	ibc_reduce_fn kernel;
	size_t esz = 0, bytes = 0;
	ibcomm_status_t st;
	bool at_root;

	if ((st = check_comm(comm, fn)) || (st = check_dtype(comm, fn, dtype, &esz)) ||
	    (st = check_op(comm, fn, dtype, op, &kernel)) || (st = check_root(comm, fn, root)) ||
	    (st = check_count(comm, fn, "count", count, esz, 1, &bytes)) ||
	    (st = check_buf(comm, fn, "sendbuf", sendbuf, count)))
		return st;
	at_root = comm->rank == root;
	if (at_root && ((st = check_buf(comm, fn, "recvbuf (at the root)", recvbuf, count)) ||
			(sendbuf != recvbuf && (st = check_overlap(comm, fn, sendbuf, bytes, recvbuf, bytes)))))
		return st;
	args_init(&a, comm, IBC_COLL_REDUCE, sendbuf, at_root ? recvbuf : NULL, count, dtype, esz);
	a.op = op;
	a.reduce = kernel;
	a.root = root;
	if ((st = check_call(&a, &sig, bytes)))
		return st;
	if (!count)
		return IBCOMM_OK;
	if (comm->size == 1)
		local_copy(recvbuf, sendbuf, bytes);
	else if ((st = run(&a, &sig, bytes)))
		return st;
	if (at_root)
		ibc_reduce_finish(recvbuf, count, dtype, op, comm->size);
	return IBCOMM_OK;
}

ibcomm_status_t ibcomm_allgather(ibcomm_t *comm, const void *sendbuf, void *recvbuf, size_t sendcount,
				 ibcomm_dtype_t dtype)
{
	static const char fn[] = "ibcomm_allgather";
	struct ibc_coll_args a;
	struct ibc_sig sig;
	size_t esz = 0, bytes = 0, b;
	ibcomm_status_t st;

	if ((st = check_comm(comm, fn)) || (st = check_dtype(comm, fn, dtype, &esz)) ||
	    (st = check_count(comm, fn, "sendcount", sendcount, esz, (size_t)comm->size, &bytes)) ||
	    (st = check_buf(comm, fn, "sendbuf", sendbuf, sendcount)) ||
	    (st = check_buf(comm, fn, "recvbuf", recvbuf, sendcount)))
		return st;
	b = sendcount * esz;
	if (sendbuf != (char *)recvbuf + (size_t)comm->rank * b &&
	    (st = check_overlap(comm, fn, sendbuf, b, recvbuf, bytes)))
		return st;
	args_init(&a, comm, IBC_COLL_ALLGATHER, sendbuf, recvbuf, sendcount, dtype, esz);
	if ((st = check_call(&a, &sig, bytes)))
		return st;
	if (!sendcount)
		return IBCOMM_OK;
	if (comm->size == 1) {
		local_copy(recvbuf, sendbuf, b);
		return IBCOMM_OK;
	}
	return run(&a, &sig, bytes);
}

ibcomm_status_t ibcomm_reduce_scatter(ibcomm_t *comm, const void *sendbuf, void *recvbuf, size_t recvcount,
				      ibcomm_dtype_t dtype, ibcomm_op_t op)
{
	static const char fn[] = "ibcomm_reduce_scatter";
	struct ibc_coll_args a;
	struct ibc_sig sig;
	ibc_reduce_fn kernel;
	size_t esz = 0, bytes = 0, b;
	ibcomm_status_t st;

	if ((st = check_comm(comm, fn)) || (st = check_dtype(comm, fn, dtype, &esz)) ||
	    (st = check_op(comm, fn, dtype, op, &kernel)) ||
	    (st = check_count(comm, fn, "recvcount", recvcount, esz, (size_t)comm->size, &bytes)) ||
	    (st = check_buf(comm, fn, "sendbuf", sendbuf, recvcount)) ||
	    (st = check_buf(comm, fn, "recvbuf", recvbuf, recvcount)))
		return st;
	b = recvcount * esz;
	if (recvbuf != (const char *)sendbuf + (size_t)comm->rank * b &&
	    (st = check_overlap(comm, fn, sendbuf, bytes, recvbuf, b)))
		return st;
	args_init(&a, comm, IBC_COLL_REDUCE_SCATTER, sendbuf, recvbuf, recvcount, dtype, esz);
	a.op = op;
	a.reduce = kernel;
	if ((st = check_call(&a, &sig, bytes)))
		return st;
	if (!recvcount)
		return IBCOMM_OK;
	if (comm->size == 1)
		local_copy(recvbuf, sendbuf, b);
	else if ((st = run(&a, &sig, bytes)))
		return st;
	ibc_reduce_finish(recvbuf, recvcount, dtype, op, comm->size);
	return IBCOMM_OK;
}

ibcomm_status_t ibcomm_gather(ibcomm_t *comm, const void *sendbuf, void *recvbuf, size_t sendcount,
			      ibcomm_dtype_t dtype, int root)
{
	static const char fn[] = "ibcomm_gather";
	struct ibc_coll_args a;
	struct ibc_sig sig;
	size_t esz = 0, bytes = 0, b;
	ibcomm_status_t st;
	bool at_root;

	if ((st = check_comm(comm, fn)) || (st = check_dtype(comm, fn, dtype, &esz)) ||
	    (st = check_root(comm, fn, root)) ||
	    (st = check_count(comm, fn, "sendcount", sendcount, esz, (size_t)comm->size, &bytes)) ||
	    (st = check_buf(comm, fn, "sendbuf", sendbuf, sendcount)))
		return st;
	b = sendcount * esz;
	at_root = comm->rank == root;
	if (at_root && ((st = check_buf(comm, fn, "recvbuf (at the root)", recvbuf, sendcount)) ||
			(sendbuf != (char *)recvbuf + (size_t)root * b &&
			 (st = check_overlap(comm, fn, sendbuf, b, recvbuf, bytes)))))
		return st;
	args_init(&a, comm, IBC_COLL_GATHER, sendbuf, at_root ? recvbuf : NULL, sendcount, dtype, esz);
	a.root = root;
	if ((st = check_call(&a, &sig, bytes)))
		return st;
	if (!sendcount)
		return IBCOMM_OK;
	if (comm->size == 1) {
		local_copy(recvbuf, sendbuf, b);
		return IBCOMM_OK;
	}
	return run(&a, &sig, bytes);
}

ibcomm_status_t ibcomm_scatter(ibcomm_t *comm, const void *sendbuf, void *recvbuf, size_t recvcount,
			       ibcomm_dtype_t dtype, int root)
{
	static const char fn[] = "ibcomm_scatter";
	struct ibc_coll_args a;
	struct ibc_sig sig;
	size_t esz = 0, bytes = 0, b;
	ibcomm_status_t st;
	bool at_root;

	if ((st = check_comm(comm, fn)) || (st = check_dtype(comm, fn, dtype, &esz)) ||
	    (st = check_root(comm, fn, root)) ||
	    (st = check_count(comm, fn, "recvcount", recvcount, esz, (size_t)comm->size, &bytes)) ||
	    (st = check_buf(comm, fn, "recvbuf", recvbuf, recvcount)))
		return st;
	b = recvcount * esz;
	at_root = comm->rank == root;
	if (at_root && ((st = check_buf(comm, fn, "sendbuf (at the root)", sendbuf, recvcount)) ||
			(recvbuf != (const char *)sendbuf + (size_t)root * b &&
			 (st = check_overlap(comm, fn, sendbuf, bytes, recvbuf, b)))))
		return st;
	args_init(&a, comm, IBC_COLL_SCATTER, at_root ? sendbuf : NULL, recvbuf, recvcount, dtype, esz);
	a.root = root;
	if ((st = check_call(&a, &sig, bytes)))
		return st;
	if (!recvcount)
		return IBCOMM_OK;
	if (comm->size == 1) {
		local_copy(recvbuf, sendbuf, b);
		return IBCOMM_OK;
	}
	return run(&a, &sig, bytes);
}

ibcomm_status_t ibcomm_alltoall(ibcomm_t *comm, const void *sendbuf, void *recvbuf, size_t count,
				ibcomm_dtype_t dtype)
{
	static const char fn[] = "ibcomm_alltoall";
	struct ibc_coll_args a;
	struct ibc_sig sig;
	size_t esz = 0, bytes = 0;
	ibcomm_status_t st;

	if ((st = check_comm(comm, fn)) || (st = check_dtype(comm, fn, dtype, &esz)) ||
	    (st = check_count(comm, fn, "count", count, esz, (size_t)comm->size, &bytes)) ||
	    (st = check_buf(comm, fn, "sendbuf", sendbuf, count)) ||
	    (st = check_buf(comm, fn, "recvbuf", recvbuf, count)))
		return st;
	if (count && sendbuf == recvbuf)
		return ibc_err(comm, IBCOMM_ERR_INVALID, "%s on rank %d: sendbuf == recvbuf, but alltoall is never in "
			       "place", fn, comm->rank);
	if ((st = check_overlap(comm, fn, sendbuf, bytes, recvbuf, bytes)))
		return st;
	args_init(&a, comm, IBC_COLL_ALLTOALL, sendbuf, recvbuf, count, dtype, esz);
	if ((st = check_call(&a, &sig, count * esz)))
		return st;
	if (!count)
		return IBCOMM_OK;
	if (comm->size == 1) {
		local_copy(recvbuf, sendbuf, bytes);
		return IBCOMM_OK;
	}
	return run(&a, &sig, count * esz);
}

ibcomm_status_t ibcomm_barrier(ibcomm_t *comm)
{
	struct ibc_coll_args a;
	struct ibc_sig sig;
	ibcomm_status_t st;

	if ((st = check_comm(comm, "ibcomm_barrier")))
		return st;
	args_init(&a, comm, IBC_COLL_BARRIER, NULL, NULL, 0, IBCOMM_UINT8, 1);
	if ((st = check_call(&a, &sig, 0)))
		return st;
	if (comm->size == 1)
		return IBCOMM_OK;
	return run(&a, &sig, 0);
}
