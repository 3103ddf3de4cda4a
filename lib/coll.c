/*
 * The public collectives: one path for all nine (coll_call), driven by a description of each
 * (coll_descs: rooted or not, which buffers and whose, their sizes, the in-place rule):
 * argument checks, sequence numbers and tags, the call-signature check (algo/sig.c), the
 * size-1 and count-0 cases, the choice of algorithm (algo/select.c), zero-copy sends from
 * registered memory, and the final step of AVG.
 */
#include <stdio.h>
#include <string.h>

#include "ibc.h"
#include "algo/algo.h"
#include "algo/sig.h"
#include "coll.h"
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

	if (!comm->boot || a->size > 256 || grace <= 0)
		return;
	snprintf(msg, sizeof(msg), "%s",
		 strncmp(comm->err, prefix, sizeof(prefix) - 1) ? comm->err : comm->err + sizeof(prefix) - 1);
	snprintf(key, sizeof(key), "%s/stuck/%u/%d", comm->id, a->seq, a->rank);
	if (ibc_boot_put(comm->boot, key, "1", 1, err, sizeof(err)))
		return;
	dl = ibc_deadline(grace);
	for (int r = 0; r < a->size; r++) {
		ibcomm_status_t st;
		size_t len = strlen(list);

		if (r == a->rank)
			continue;
		snprintf(key, sizeof(key), "%s/stuck/%u/%d", comm->id, a->seq, r);
		st = ibc_boot_get(comm->boot, key, NULL, 0, NULL, dl, &comm->aborted, err, sizeof(err));
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

/* What the collectives with per-rank counts share with these (vcoll.c, through coll.h). */
ibcomm_status_t ibc_coll_check_base(struct ibcomm *comm, const char *fn, ibcomm_dtype_t dtype, size_t *esz)
{
	ibcomm_status_t st = check_comm(comm, fn);

	return st ? st : check_dtype(comm, fn, dtype, esz);
}

ibcomm_status_t ibc_coll_check_overlap(struct ibcomm *comm, const char *fn, const void *send, size_t slen,
				       const void *recv, size_t rlen)
{
	return check_overlap(comm, fn, send, slen, recv, rlen);
}

void ibc_coll_args_init(struct ibc_coll_args *a, struct ibcomm *comm, enum ibc_coll coll, const void *sendbuf,
			void *recvbuf, size_t count, ibcomm_dtype_t dtype, size_t esz)
{
	args_init(a, comm, coll, sendbuf, recvbuf, count, dtype, esz);
}

ibcomm_status_t ibc_coll_settle(struct ibc_coll_args *a, ibcomm_status_t st)
{
	return settle(a, st);
}

/*
 * What tells the collectives apart at the entry points: one description each, and one path
 * (coll_call) that checks the arguments, handles the trivial cases and runs the algorithm.
 */
enum coll_user {
	USE_NONE, /* no such buffer */
	USE_ALL,  /* every rank's */
	USE_ROOT  /* only the root's: the others may pass NULL, and it is not looked at */
};
enum coll_inplace {
	INPLACE_NONE,       /* one buffer (broadcast) or none (barrier) */
	INPLACE_SAME,       /* in place when sendbuf == recvbuf */
	INPLACE_SEND_BLOCK, /* in place when sendbuf is this rank's block of recvbuf */
	INPLACE_RECV_BLOCK, /* in place when recvbuf is this rank's block of sendbuf */
	INPLACE_NEVER       /* sendbuf == recvbuf is an error */
};

struct coll_desc {
	const char *fn;         /* the public name, for messages */
	enum ibc_coll coll;
	bool reduces;           /* takes an op; recvbuf gets the final step of AVG */
	bool rooted;
	bool data;              /* has buffers, a count and a datatype (all but barrier) */
	const char *count_name; /* what the count is called in the prototype */
	enum coll_user send, recv;
	const char *send_name, *recv_name;
	/*
	 * The buffers' sizes in count-element blocks: one, or one per rank. sel_per_rank: the
	 * same for the bytes that choose the algorithm (algo/select.c).
	 */
	bool send_per_rank, recv_per_rank, sel_per_rank;
	enum coll_inplace inplace;
};

static const struct coll_desc coll_descs[IBC_COLL_COUNT] = {
	[IBC_COLL_ALLREDUCE] = { .fn = "ibcomm_allreduce", .coll = IBC_COLL_ALLREDUCE, .reduces = true, .data = true,
				 .count_name = "count", .send = USE_ALL, .recv = USE_ALL, .send_name = "sendbuf",
				 .recv_name = "recvbuf", .inplace = INPLACE_SAME },
	[IBC_COLL_BROADCAST] = { .fn = "ibcomm_broadcast", .coll = IBC_COLL_BROADCAST, .rooted = true, .data = true,
				 .count_name = "count", .send = USE_NONE, .recv = USE_ALL, .recv_name = "buf",
				 .inplace = INPLACE_NONE },
	[IBC_COLL_REDUCE] = { .fn = "ibcomm_reduce", .coll = IBC_COLL_REDUCE, .reduces = true, .rooted = true,
			      .data = true, .count_name = "count", .send = USE_ALL, .recv = USE_ROOT,
			      .send_name = "sendbuf", .recv_name = "recvbuf", .inplace = INPLACE_SAME },
	[IBC_COLL_ALLGATHER] = { .fn = "ibcomm_allgather", .coll = IBC_COLL_ALLGATHER, .data = true,
				 .count_name = "sendcount", .send = USE_ALL, .recv = USE_ALL, .send_name = "sendbuf",
				 .recv_name = "recvbuf", .recv_per_rank = true, .sel_per_rank = true,
				 .inplace = INPLACE_SEND_BLOCK },
	[IBC_COLL_REDUCE_SCATTER] = { .fn = "ibcomm_reduce_scatter", .coll = IBC_COLL_REDUCE_SCATTER, .reduces = true,
				      .data = true, .count_name = "recvcount", .send = USE_ALL, .recv = USE_ALL,
				      .send_name = "sendbuf", .recv_name = "recvbuf", .send_per_rank = true,
				      .sel_per_rank = true, .inplace = INPLACE_RECV_BLOCK },
	[IBC_COLL_GATHER] = { .fn = "ibcomm_gather", .coll = IBC_COLL_GATHER, .rooted = true, .data = true,
			      .count_name = "sendcount", .send = USE_ALL, .recv = USE_ROOT, .send_name = "sendbuf",
			      .recv_name = "recvbuf", .recv_per_rank = true, .sel_per_rank = true,
			      .inplace = INPLACE_SEND_BLOCK },
	[IBC_COLL_SCATTER] = { .fn = "ibcomm_scatter", .coll = IBC_COLL_SCATTER, .rooted = true, .data = true,
			       .count_name = "recvcount", .send = USE_ROOT, .recv = USE_ALL, .send_name = "sendbuf",
			       .recv_name = "recvbuf", .send_per_rank = true, .sel_per_rank = true,
			       .inplace = INPLACE_RECV_BLOCK },
	/* alltoall chooses by the bytes to each peer */
	[IBC_COLL_ALLTOALL] = { .fn = "ibcomm_alltoall", .coll = IBC_COLL_ALLTOALL, .data = true, .count_name = "count",
				.send = USE_ALL, .recv = USE_ALL, .send_name = "sendbuf", .recv_name = "recvbuf",
				.send_per_rank = true, .recv_per_rank = true, .inplace = INPLACE_NEVER },
	[IBC_COLL_BARRIER] = { .fn = "ibcomm_barrier", .coll = IBC_COLL_BARRIER, .send = USE_NONE, .recv = USE_NONE,
			       .inplace = INPLACE_NONE },
};

/* One call: its description, the algorithm's arguments, the signature check, the sizes. */
struct coll_call {
	const struct coll_desc *d;
	struct ibc_coll_args a;
	struct ibc_sig sig;
	size_t sbytes, rbytes; /* this rank's buffers (0 when it does not use one) */
	size_t bytes;          /* what chooses the algorithm */
};

/*
 * Zero-copy source: out of place, the caller's sendbuf is read-only for the whole call, so
 * when it lies in registered memory the transport may send from it in place (put returns
 * before the bytes left) as long as the call waits for those writes before returning. Only
 * the sendbuf bytes qualify, and only when they do not overlap recvbuf (which the call writes).
 */
static bool zc_begin(struct coll_call *c)
{
	struct ibc_coll_args *a = &c->a;
	ibc_tp_t *tp = a->tp;
	void *h;

	if (!tp->ops->flush || !tp->ops->set_zc_source || !a->comm->regcache || c->d->send == USE_NONE ||
	    !a->sendbuf || a->sendbuf == a->recvbuf)
		return false;
	if (a->recvbuf && overlap(a->sendbuf, c->sbytes, a->recvbuf, c->rbytes))
		return false;
	h = ibc_regcache_find(a->comm, a->sendbuf, c->sbytes);
	if (!h)
		return false;
	tp->ops->set_zc_source(tp, a->sendbuf, c->sbytes, h);
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

/* Runs the chosen algorithm (a->algo), then completes the signature check. */
static ibcomm_status_t run(struct coll_call *c)
{
	struct ibc_coll_args *a = &c->a;
	ibc_algo_fn fn = ibc_algo_impl(a->coll, a->algo);
	ibcomm_status_t st;
	bool zc;

	ibc_ctrace(a->comm, "rank %d: %s #%u, %zu bytes, algorithm %s", a->rank, ibc_coll_name(a->coll), a->seq, c->bytes,
		  ibc_algo_name(a->algo));
	zc = zc_begin(c);
	st = fn(a);
	if (!st)
		st = ibc_sig_end(&c->sig);
	if (zc)
		st = zc_end(a, st);
	return settle(a, st);
}

/* Checks a buffer the calling rank uses: not NULL unless the count is 0. */
static ibcomm_status_t check_use(struct ibcomm *comm, const struct coll_desc *d, enum coll_user use,
				 const char *name, const void *buf, size_t count)
{
	char what[48];

	if (use != USE_ROOT)
		return check_buf(comm, d->fn, name, buf, count);
	snprintf(what, sizeof(what), "%s (at the root)", name);
	return check_buf(comm, d->fn, what, buf, count);
}

/* The in-place layout of d, or else buffers that do not share a byte. */
static ibcomm_status_t check_layout(struct ibcomm *comm, const struct coll_call *c, const void *sendbuf,
				    const void *recvbuf, size_t count, size_t esz)
{
	const struct coll_desc *d = c->d;
	size_t b = count * esz * (size_t)comm->rank; /* offset of this rank's block */

	switch (d->inplace) {
	case INPLACE_NONE:
		return IBCOMM_OK;
	case INPLACE_SAME:
		if (sendbuf == recvbuf)
			return IBCOMM_OK;
		break;
	case INPLACE_SEND_BLOCK:
		if (sendbuf == (const char *)recvbuf + b)
			return IBCOMM_OK;
		break;
	case INPLACE_RECV_BLOCK:
		if (recvbuf == (const char *)sendbuf + b)
			return IBCOMM_OK;
		break;
	case INPLACE_NEVER:
		if (count && sendbuf == recvbuf)
			return ibc_err(comm, IBCOMM_ERR_INVALID, "%s on rank %d: sendbuf == recvbuf, but %s is never "
				       "in place", d->fn, comm->rank, ibc_coll_name(d->coll));
		break;
	}
	return check_overlap(comm, d->fn, sendbuf, c->sbytes, recvbuf, c->rbytes);
}

/* What the checks of a call found, for running it. */
struct coll_checked {
	ibc_reduce_fn kernel;
	size_t esz;
	size_t count;
	ibcomm_dtype_t dtype;
	bool my_send, my_recv;
};

/*
 * Every collective: checks the arguments in the order of the prototype's concerns
 * (communicator, datatype, op, root, count, the buffers this rank uses, their layout), agrees
 * on the call with the other ranks, then moves the data: a local copy on one rank, else the
 * algorithm; reductions end with the final step of AVG. A buffer this rank does not use is
 * neither checked nor passed on.
 */
static ibcomm_status_t coll_check(struct ibcomm *comm, const struct coll_desc *d, struct coll_call *cp,
				  struct coll_checked *k, const void *sendbuf, void *recvbuf, size_t count,
				  ibcomm_dtype_t dtype, ibcomm_op_t op, int root)
{
	struct coll_call c = *cp;
	ibc_reduce_fn kernel = NULL;
	size_t esz = 1, blocks, total = 0;
	bool my_send, my_recv;
	ibcomm_status_t st;

	if ((st = check_comm(comm, d->fn)))
		return st;
	if (d->data) {
		blocks = d->send_per_rank || d->recv_per_rank ? (size_t)comm->size : 1;
		if ((st = check_dtype(comm, d->fn, dtype, &esz)) ||
		    (d->reduces && (st = check_op(comm, d->fn, dtype, op, &kernel))) ||
		    (d->rooted && (st = check_root(comm, d->fn, root))) ||
		    (st = check_count(comm, d->fn, d->count_name, count, esz, blocks, &total)))
			return st;
	} else {
		count = 0, dtype = IBCOMM_UINT8;
	}
	/* which buffers are this rank's, and their sizes (no overflow: total is the largest) */
	my_send = d->send == USE_ALL || (d->send == USE_ROOT && comm->rank == root);
	my_recv = d->recv == USE_ALL || (d->recv == USE_ROOT && comm->rank == root);
	if (my_send)
		c.sbytes = count * esz * (d->send_per_rank ? (size_t)comm->size : 1);
	if (my_recv)
		c.rbytes = count * esz * (d->recv_per_rank ? (size_t)comm->size : 1);
	c.bytes = count * esz * (d->sel_per_rank ? (size_t)comm->size : 1);
	if ((d->send == USE_ALL && (st = check_use(comm, d, d->send, d->send_name, sendbuf, count))) ||
	    (d->recv == USE_ALL && (st = check_use(comm, d, d->recv, d->recv_name, recvbuf, count))) ||
	    (d->send == USE_ROOT && my_send && (st = check_use(comm, d, d->send, d->send_name, sendbuf, count))) ||
	    (d->recv == USE_ROOT && my_recv && (st = check_use(comm, d, d->recv, d->recv_name, recvbuf, count))) ||
	    (my_send && my_recv && (st = check_layout(comm, &c, sendbuf, recvbuf, count, esz))))
		return st;
	*cp = c;
	*k = (struct coll_checked){ .kernel = kernel, .esz = esz, .count = count, .dtype = dtype, .my_send = my_send,
				    .my_recv = my_recv };
	return IBCOMM_OK;
}

/* The checks of a call alone (a nonblocking call makes them before it is queued: lib/nbc.c). */
ibcomm_status_t ibc_coll_check(struct ibcomm *comm, const char *fn, enum ibc_coll coll, const void *sendbuf,
			       void *recvbuf, size_t count, ibcomm_dtype_t dtype, ibcomm_op_t op, int root)
{
	struct coll_desc d = coll_descs[coll];
	struct coll_call c = { .d = &d };
	struct coll_checked k;

	if (fn)
		d.fn = fn;
	return coll_check(comm, c.d, &c, &k, sendbuf, recvbuf, count, dtype, op, root);
}

ibcomm_status_t ibc_coll_run(struct ibcomm *comm, enum ibc_coll coll, const void *sendbuf, void *recvbuf,
			     size_t count, ibcomm_dtype_t dtype, ibcomm_op_t op, int root)
{
	const struct coll_desc *d = &coll_descs[coll];
	struct coll_call c = { .d = d };
	struct ibc_coll_args *a = &c.a;
	struct coll_checked k;
	ibc_reduce_fn kernel;
	size_t esz;
	bool my_send, my_recv;
	ibcomm_status_t st;

	if ((st = coll_check(comm, d, &c, &k, sendbuf, recvbuf, count, dtype, op, root)))
		return st;
	kernel = k.kernel, esz = k.esz, count = k.count, dtype = k.dtype, my_send = k.my_send, my_recv = k.my_recv;
	args_init(a, comm, coll, d->send == USE_NONE ? recvbuf /* broadcast: the one buffer */ : my_send ? sendbuf : NULL,
		  my_recv ? recvbuf : NULL, count, dtype, esz);
	a->op = d->reduces ? op : IBCOMM_SUM;
	a->reduce = kernel;
	a->root = d->rooted ? root : 0;
	if (comm->size > 1) {
		/* before anything moves: every rank checks the call's signature */
		a->algo = ibc_algo_select(comm, coll, c.bytes);
		if ((st = settle(a, ibc_sig_begin(&c.sig, a, c.bytes))))
			return st;
	}
	if (d->data && !count)
		return IBCOMM_OK;
	if (comm->size > 1)
		st = run(&c);
	else if (my_send && my_recv && sendbuf != recvbuf)
		memcpy(recvbuf, sendbuf, IBC_MIN(c.sbytes, c.rbytes));
	if (!st && d->reduces && my_recv)
		ibc_reduce_finish(recvbuf, count, dtype, op, comm->size);
	return st;
}

/*
 * A blocking call: while nonblocking requests are pending on comm it runs after them, in the
 * progress thread (lib/nbc.c); else here.
 */
static ibcomm_status_t coll_call(struct ibcomm *comm, enum ibc_coll coll, const void *sendbuf, void *recvbuf,
				 size_t count, ibcomm_dtype_t dtype, ibcomm_op_t op, int root)
{
	if (comm && ibc_nbc_busy(comm))
		return ibc_nbc_coll(comm, NULL, coll, sendbuf, recvbuf, count, dtype, op, root, NULL);
	return ibc_coll_run(comm, coll, sendbuf, recvbuf, count, dtype, op, root);
}

ibcomm_status_t ibcomm_allreduce(ibcomm_t *comm, const void *sendbuf, void *recvbuf, size_t count,
				 ibcomm_dtype_t dtype, ibcomm_op_t op)
{
	return coll_call(comm, IBC_COLL_ALLREDUCE, sendbuf, recvbuf, count, dtype, op, -1);
}

ibcomm_status_t ibcomm_broadcast(ibcomm_t *comm, void *buf, size_t count, ibcomm_dtype_t dtype, int root)
{
	return coll_call(comm, IBC_COLL_BROADCAST, NULL, buf, count, dtype, IBCOMM_SUM, root);
}

ibcomm_status_t ibcomm_reduce(ibcomm_t *comm, const void *sendbuf, void *recvbuf, size_t count,
			      ibcomm_dtype_t dtype, ibcomm_op_t op, int root)
{
	return coll_call(comm, IBC_COLL_REDUCE, sendbuf, recvbuf, count, dtype, op, root);
}

ibcomm_status_t ibcomm_allgather(ibcomm_t *comm, const void *sendbuf, void *recvbuf, size_t sendcount,
				 ibcomm_dtype_t dtype)
{
	return coll_call(comm, IBC_COLL_ALLGATHER, sendbuf, recvbuf, sendcount, dtype, IBCOMM_SUM, -1);
}

ibcomm_status_t ibcomm_reduce_scatter(ibcomm_t *comm, const void *sendbuf, void *recvbuf, size_t recvcount,
				      ibcomm_dtype_t dtype, ibcomm_op_t op)
{
	return coll_call(comm, IBC_COLL_REDUCE_SCATTER, sendbuf, recvbuf, recvcount, dtype, op, -1);
}

ibcomm_status_t ibcomm_gather(ibcomm_t *comm, const void *sendbuf, void *recvbuf, size_t sendcount,
			      ibcomm_dtype_t dtype, int root)
{
	return coll_call(comm, IBC_COLL_GATHER, sendbuf, recvbuf, sendcount, dtype, IBCOMM_SUM, root);
}

ibcomm_status_t ibcomm_scatter(ibcomm_t *comm, const void *sendbuf, void *recvbuf, size_t recvcount,
			       ibcomm_dtype_t dtype, int root)
{
	return coll_call(comm, IBC_COLL_SCATTER, sendbuf, recvbuf, recvcount, dtype, IBCOMM_SUM, root);
}

ibcomm_status_t ibcomm_alltoall(ibcomm_t *comm, const void *sendbuf, void *recvbuf, size_t count,
				ibcomm_dtype_t dtype)
{
	return coll_call(comm, IBC_COLL_ALLTOALL, sendbuf, recvbuf, count, dtype, IBCOMM_SUM, -1);
}

ibcomm_status_t ibcomm_barrier(ibcomm_t *comm)
{
	return coll_call(comm, IBC_COLL_BARRIER, NULL, NULL, 0, IBCOMM_UINT8, IBCOMM_SUM, -1);
}
