/*
 * The public collectives: argument checks, sequence numbers and tags, the size-1 and
 * count-0 cases, the choice of algorithm (algo/select.c) and the final step of AVG.
 */
#include <stdio.h>
#include <string.h>

#include "ibc.h"
#include "algo/algo.h"
#include "regcache.h"
#include "wire.h"

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
	a->sig_peer = a->sig_out_peer = -1;
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

/*
 * Mismatch detection. The ranks agree on the call's signature (sequence number, collective,
 * datatype, op, root, count) by disseminating it along the recursive-doubling pattern
 * (ibc_rd_plan: with n not a power of two the extra ranks fold into a partner first and hear
 * back from it last), every message led by one fixed-size signature message. A rank that is
 * not yet aware of a mismatch sends its own signature; once it has seen a signature
 * different from its own (or a peer's report of one) it forwards that pair instead. An
 * unflagged message means "every signature that reached me equals this one", and the pattern
 * makes every rank hear from every other, so any difference anywhere reaches every rank
 * within the same call.
 *
 * A small recursive-doubling allreduce (one chunk per message) carries the signature message
 * in front of its own data, so the comparison costs no round of its own: it reduces into a
 * scratch buffer, drops the data of every message once a mismatch is known, and writes
 * recvbuf only when no rank saw one. Every other collective first runs the same pattern with
 * signature-only messages, then its algorithm. Either way each message is one chunk whatever
 * the counts, so the channels stay in step and the communicator remains usable after
 * IBCOMM_ERR_MISMATCH (unless the sequence numbers themselves differ: then every later call
 * reports it too). Two ranks: see sig_check_pair().
 */
#define SIG_TAG IBC_COLL_TAG(0, IBC_SIG_TAG) /* never a data tag: those carry a collective < IBC_COLL_COUNT */
#define SIG_NONE 0xffu                 /* op of a collective that does not reduce */
#define SIG_ENTRY_LEN 24
#define SIG_MSG_LEN (2 + 2 * SIG_ENTRY_LEN)
_Static_assert(SIG_MSG_LEN == IBC_SIG_MSG_LEN, "signature length");

struct sig {
	uint32_t rank, seq;
	uint8_t coll, dtype, op;
	int32_t root; /* -1 when not rooted */
	uint64_t count;
};

static void sig_of(const struct ibc_coll_args *a, struct sig *s)
{
	bool reduces = a->coll == IBC_COLL_ALLREDUCE || a->coll == IBC_COLL_REDUCE ||
		       a->coll == IBC_COLL_REDUCE_SCATTER;
	bool rooted = a->coll == IBC_COLL_BROADCAST || a->coll == IBC_COLL_REDUCE || a->coll == IBC_COLL_GATHER ||
		      a->coll == IBC_COLL_SCATTER;

	s->rank = (uint32_t)a->rank;
	s->seq = a->seq;
	s->coll = (uint8_t)a->coll;
	s->dtype = a->coll == IBC_COLL_BARRIER ? SIG_NONE : (uint8_t)a->dtype;
	s->op = reduces ? (uint8_t)a->op : SIG_NONE;
	s->root = rooted ? a->root : -1;
	s->count = a->coll == IBC_COLL_BARRIER ? 0 : a->count;
}

/* Same call (the ranks may differ). */
static bool sig_equal(const struct sig *x, const struct sig *y)
{
	return x->seq == y->seq && x->coll == y->coll && x->dtype == y->dtype && x->op == y->op &&
	       x->root == y->root && x->count == y->count;
}

static void sig_put(ibc_wbuf_t *w, const struct sig *s)
{
	ibc_w_u32(w, s->rank);
	ibc_w_u32(w, s->seq);
	ibc_w_u8(w, s->coll);
	ibc_w_u8(w, s->dtype);
	ibc_w_u8(w, s->op);
	ibc_w_u8(w, 0);
	ibc_w_u32(w, (uint32_t)s->root);
	ibc_w_u64(w, s->count);
}

static void sig_get(ibc_rbuf_t *r, struct sig *s)
{
	s->rank = ibc_r_u32(r);
	s->seq = ibc_r_u32(r);
	s->coll = ibc_r_u8(r);
	s->dtype = ibc_r_u8(r);
	s->op = ibc_r_u8(r);
	(void)ibc_r_u8(r);
	s->root = (int32_t)ibc_r_u32(r);
	s->count = ibc_r_u64(r);
}

/* "rank 1's allreduce #5 (float32, sum, count 100)" */
static void sig_str(const struct sig *s, char *buf, size_t len)
{
	char root[32] = "", op[24] = "";

	if (s->coll >= IBC_COLL_COUNT) {
		snprintf(buf, len, "rank %u's unknown collective %u #%u", s->rank, s->coll, s->seq & 0xffffffu);
		return;
	}
	if (s->coll == IBC_COLL_BARRIER) {
		snprintf(buf, len, "rank %u's barrier #%u", s->rank, s->seq & 0xffffffu);
		return;
	}
	if (s->op != SIG_NONE)
		snprintf(op, sizeof(op), "%s, ", ibc_op_name((ibcomm_op_t)s->op));
	if (s->root >= 0)
		snprintf(root, sizeof(root), "root %d, ", (int)s->root);
	snprintf(buf, len, "rank %u's %s #%u (%s, %s%scount %llu)", s->rank, ibc_coll_name((enum ibc_coll)s->coll),
		 s->seq & 0xffffffu, ibc_dtype_name((ibcomm_dtype_t)s->dtype), op, root,
		 (unsigned long long)s->count);
}

static ibcomm_status_t sig_mismatch(struct ibc_coll_args *a, const struct sig *x, const struct sig *y)
{
	char sx[160], sy[160];

	sig_str(x, sx, sizeof(sx));
	sig_str(y, sy, sizeof(sy));
	return ibc_err(a->comm, IBCOMM_ERR_MISMATCH, "rank %d: %s does not match %s: the ranks called different "
		       "collectives, counts, datatypes, ops or roots (no receive buffer was written)", a->rank, sx, sy);
}

/* Says that a timeout came while the ranks compared signatures, before any data moved. */
static ibcomm_status_t sig_timeout(struct ibc_coll_args *a)
{
	static const char prefix[] = "IBCOMM_ERR_TIMEOUT: "; /* ibc_err() adds it again */
	struct ibcomm *comm = a->comm;
	char msg[IBC_ERRLEN];

	snprintf(msg, sizeof(msg), "%s",
		 strncmp(comm->err, prefix, sizeof(prefix) - 1) ? comm->err : comm->err + sizeof(prefix) - 1);
	return ibc_err(comm, IBCOMM_ERR_TIMEOUT, "%s (while the ranks compared call signatures, before any data "
		       "moved)", msg);
}

static void sig_msg(ibc_wbuf_t *w, bool flag, const struct sig *x, const struct sig *y)
{
	ibc_w_u8(w, IBC_WIRE_VERSION);
	ibc_w_u8(w, flag);
	sig_put(w, x);
	sig_put(w, y);
}

static ibcomm_status_t sig_parse(struct ibc_coll_args *a, int from, const void *buf, size_t len, uint8_t *flag,
				 struct sig got[2])
{
	ibc_rbuf_t r = ibc_rbuf(buf, len);

	if (ibc_r_u8(&r) != IBC_WIRE_VERSION)
		return ibc_err(a->comm, IBCOMM_ERR_MISMATCH, "rank %d: %s #%u: rank %d sent a call signature of "
			       "another wire version", a->rank, ibc_coll_name(a->coll), a->seq & 0xffffffu, from);
	*flag = ibc_r_u8(&r);
	sig_get(&r, &got[0]);
	sig_get(&r, &got[1]);
	if (!ibc_r_done(&r) || *flag > 1)
		return ibc_err(a->comm, IBCOMM_ERR_MISMATCH, "rank %d: %s #%u: malformed call signature from rank %d",
			       a->rank, ibc_coll_name(a->coll), a->seq & 0xffffffu, from);
	return IBCOMM_OK;
}

/*
 * Two ranks: checks the peer's signature, in front of (or just before) the first chunk of
 * its call; tag is that chunk's. On a mismatch the peer's data may already be on its way,
 * so the communicator is unusable from then on.
 */
static ibcomm_status_t sig_check_pair(struct ibc_coll_args *a, int peer, uint32_t tag, const void *data, size_t len)
{
	struct sig mine, got[2];
	ibcomm_status_t st;
	uint8_t flag;

	if ((tag & 0xffu) != IBC_SIG_TAG && (tag >> 8) != (a->tag >> 8))
		st = ibc_err(a->comm, IBCOMM_ERR_MISMATCH, "rank %d: %s #%u: rank %d sent %s #%u data without a call "
			     "signature", a->rank, ibc_coll_name(a->coll), a->seq & 0xffffffu, peer,
			     ibc_coll_name((enum ibc_coll)IBC_MIN(tag & 0x7fu, (uint32_t)IBC_COLL_COUNT - 1)), tag >> 8);
	else
		st = sig_parse(a, peer, data, len, &flag, got);
	sig_of(a, &mine);
	if (!st && !sig_equal(&mine, &got[0]))
		st = sig_mismatch(a, &mine, &got[0]);
	if (st)
		a->comm->failed = st;
	return st;
}

/* Two ranks: waits for the peer's signature when the call itself took nothing from the peer. */
static ibcomm_status_t sig_take(struct ibc_coll_args *a)
{
	ibcomm_status_t st;
	ibc_chunk_t ch;
	int rc;

	if (a->sig_peer < 0)
		return IBCOMM_OK;
	rc = ibc_get(a->tp, a->sig_peer, IBC_CHAN_COLL, &ch, true, a->dl);
	if (rc)
		return rc == IBCOMM_ERR_TIMEOUT ? sig_timeout(a) : rc;
	a->sig_peer = -1;
	if ((ch.tag & 0xffu) != IBC_SIG_TAG && (ch.tag & IBC_SIG_FUSED) && ch.len >= IBC_SIG_MSG_LEN) {
		ch.len = IBC_SIG_MSG_LEN; /* data behind it: the peer runs another call (the check says so) */
		ch.tag &= ~IBC_SIG_FUSED;
	}
	st = sig_check_pair(a, ch.peer, ch.tag, ch.data, ch.len);
	rc = ibc_release(a->tp, &ch);
	return st ? st : rc;
}

/* Two ranks: this rank's signature as a chunk of its own (the call sends no data first). */
ibcomm_status_t ibc_sig_send(struct ibc_coll_args *a, bool wait)
{
	int rc;

	if (a->sig_out_peer < 0)
		return IBCOMM_OK;
	rc = ibc_put(a->tp, a->sig_out_peer, IBC_CHAN_COLL, SIG_TAG, a->sig_out, IBC_SIG_MSG_LEN, wait, a->dl);
	if (rc == IBCOMM_OK)
		a->sig_out_peer = -1;
	else if (rc == IBCOMM_ERR_TIMEOUT)
		return sig_timeout(a);
	return rc;
}

/* More ranks: from now on a's messages carry `x does not match y`. */
static void sig_set_seen(struct ibc_coll_args *a, const struct sig *x, const struct sig *y)
{
	ibc_wbuf_t w = ibc_wbuf(a->sig_out, sizeof(a->sig_out));

	sig_msg(&w, true, x, y);
	a->sig_seen = true;
}

/* More ranks: takes the signature message in front of a chunk from peer (a->sig_fold). */
static ibcomm_status_t sig_fold(struct ibc_coll_args *a, int peer, uint32_t tag, const void *data, size_t len)
{
	bool bare = (tag & 0xffu) == IBC_SIG_TAG;
	struct sig mine, got[2];
	ibcomm_status_t st;
	uint8_t flag;

	if ((!bare && !(tag & IBC_SIG_FUSED)) || len < IBC_SIG_MSG_LEN)
		return ibc_err(a->comm, IBCOMM_ERR_MISMATCH, "rank %d: %s #%u: rank %d sent %s #%u data without a call "
			       "signature", a->rank, ibc_coll_name(a->coll), a->seq & 0xffffffu, peer,
			       ibc_coll_name((enum ibc_coll)IBC_MIN(tag & 0x7fu, (uint32_t)IBC_COLL_COUNT - 1)),
			       tag >> 8);
	if ((st = sig_parse(a, peer, data, IBC_SIG_MSG_LEN, &flag, got)))
		return st;
	if (a->sig_seen)
		return IBCOMM_OK;
	sig_of(a, &mine);
	if (flag)
		sig_set_seen(a, &got[0], &got[1]);
	else if (!sig_equal(&mine, &got[0]))
		sig_set_seen(a, &mine, &got[0]);
	else if ((bare ? tag : tag & ~IBC_SIG_FUSED) != a->tag)
		return ibc_err(a->comm, IBCOMM_ERR_MISMATCH, "rank %d: %s #%u: rank %d made the same call but %s (is "
			       "IBCOMM_ALGO the same on every rank?)", a->rank, ibc_coll_name(a->coll),
			       a->seq & 0xffffffu, peer, bare ? "sent only its signature where data was due" :
			       "sent data where only its signature was due");
	return IBCOMM_OK;
}

/* More ranks: a's plans carry the signatures from now on (see sig_fold). */
static void sig_fuse_init(struct ibc_coll_args *a)
{
	ibc_wbuf_t w = ibc_wbuf(a->sig_out, sizeof(a->sig_out));
	struct sig mine;

	sig_of(a, &mine);
	sig_msg(&w, false, &mine, &mine);
	a->sig_fuse = true;
	a->sig_seen = false;
	a->sig_fold = sig_fold;
}

/* More ranks, after the signatures went round: the mismatch a has seen. */
static ibcomm_status_t sig_seen_err(struct ibc_coll_args *a)
{
	ibc_rbuf_t r = ibc_rbuf(a->sig_out, sizeof(a->sig_out));
	struct sig pair[2];

	(void)ibc_r_u8(&r);
	(void)ibc_r_u8(&r);
	sig_get(&r, &pair[0]);
	sig_get(&r, &pair[1]);
	return sig_mismatch(a, &pair[0], &pair[1]);
}

/*
 * A small recursive-doubling allreduce over more than two ranks compares the signatures in
 * its own messages (one chunk each, the signature in front).
 */
static bool sig_fusable(const struct ibc_coll_args *a, size_t bytes)
{
	return a->size > 2 && a->coll == IBC_COLL_ALLREDUCE && a->algo == IBC_ALGO_RD && bytes &&
	       bytes <= IBC_SIG_FUSE_MAX && bytes + IBC_SIG_MSG_LEN <= a->tp->max_chunk;
}

static ibcomm_status_t agree(struct ibc_coll_args *a)
{
	struct ibc_coll_args s = *a;
	struct ibc_plan p;
	ibcomm_status_t st;

	if (a->size == 2) {
		/*
		 * Two ranks: no round trip before the data. The signature goes in front of this
		 * rank's first chunk to the peer (the engine sends it) and the peer's is checked
		 * before any of its data is used.
		 */
		ibc_wbuf_t w = ibc_wbuf(a->sig_out, sizeof(a->sig_out));
		struct sig mine;

		sig_of(a, &mine);
		sig_msg(&w, false, &mine, &mine);
		a->sig_out_peer = a->sig_peer = 1 - a->rank;
		a->sig_check = sig_check_pair;
		return IBCOMM_OK;
	}
	if (a->tp->max_chunk < IBC_SIG_MSG_LEN)
		return ibc_err(a->comm, IBCOMM_ERR_INVALID, "rank %d: %s #%u: chunks of %zu bytes cannot carry a call "
			       "signature of %d bytes", a->rank, ibc_coll_name(a->coll), a->seq & 0xffffffu,
			       a->tp->max_chunk, IBC_SIG_MSG_LEN);
	/* the recursive-doubling pattern with messages that are only signatures */
	s.tag = SIG_TAG;
	s.esz = 1;
	s.reduce = NULL;
	sig_fuse_init(&s);
	ibc_plan_init(&p, &s, 1);
	st = ibc_rd_plan(&p, NULL, NULL, 0);
	if (!st)
		st = ibc_plan_run(&p);
	ibc_plan_free(&p);
	if (st == IBCOMM_ERR_TIMEOUT)
		return sig_timeout(a);
	if (st)
		return st;
	return s.sig_seen ? sig_seen_err(&s) : IBCOMM_OK;
}

/* Before anything moves: every rank of a multi-rank communicator checks the call's signature. */
static ibcomm_status_t check_call(struct ibc_coll_args *a, size_t bytes)
{
	if (a->size == 1)
		return IBCOMM_OK;
	ibcomm_status_t st;

	a->algo = ibc_algo_select(a->comm, a->coll, bytes); /* named by timeouts */
	if (sig_fusable(a, bytes)) {
		sig_fuse_init(a); /* the algorithm compares the signatures as it runs */
		return IBCOMM_OK;
	}
	st = agree(a);
	if (!st && !bytes) /* the call moves nothing: exchange the signatures now */
		st = ibc_sig_send(a, true);
	if (!st && !bytes)
		st = sig_take(a);
	return settle(a, st);
}

/*
 * Zero-copy source: out of place, the caller's sendbuf is read-only for the whole call, so
 * when it lies in registered memory the transport may send from it in place (put returns
 * before the bytes left) as long as the call waits for those writes before returning. Only
 * the sendbuf bytes qualify, and only when they do not overlap recvbuf (which the call writes).
 */
static void zc_begin(struct ibc_coll_args *a)
{
	ibc_tp_t *tp = a->tp;
	size_t b = a->count * a->esz, n = (size_t)a->size, slen, rlen;

	if (!tp->ops->flush || !a->comm->regcache || !a->sendbuf || a->sendbuf == a->recvbuf)
		return;
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
		return;
	}
	if (a->recvbuf && overlap(a->sendbuf, slen, a->recvbuf, rlen))
		return;
	tp->zc_handle = ibc_regcache_find(a->comm, a->sendbuf, slen);
	if (tp->zc_handle) {
		tp->zc_buf = a->sendbuf;
		tp->zc_len = slen;
	}
}

/* Waits for the zero-copy writes of the call; a failed call keeps its own message. */
static ibcomm_status_t zc_end(struct ibc_coll_args *a, ibcomm_status_t st)
{
	struct ibcomm *comm = a->comm;
	ibc_tp_t *tp = a->tp;
	char saved[IBC_ERRLEN];
	ibcomm_status_t fst;

	if (!tp->zc_handle)
		return st;
	if (st)
		memcpy(saved, comm->err, sizeof(saved));
	fst = tp->ops->flush(tp, st ? ibc_deadline(1000) : a->dl);
	if (st)
		memcpy(comm->err, saved, sizeof(saved));
	tp->zc_buf = NULL;
	tp->zc_len = 0;
	tp->zc_handle = NULL;
	return st ? st : fst;
}

/* Runs the chosen algorithm. */
static ibcomm_status_t run(struct ibc_coll_args *a, size_t bytes)
{
	enum ibc_algo algo = ibc_algo_select(a->comm, a->coll, bytes);
	ibc_algo_fn fn = ibc_algo_impl(a->coll, algo);

	a->algo = algo;
	ibcomm_status_t st;

	ibc_ctrace(a->comm, "rank %d: %s #%u, %zu bytes, algorithm %s", a->rank, ibc_coll_name(a->coll), a->seq, bytes,
		  ibc_algo_name(algo));
	zc_begin(a);
	st = fn(a);
	if (!st)
		st = sig_take(a);
	if (!st && a->sig_fuse && a->sig_seen)
		st = sig_seen_err(a);
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
	if ((st = check_call(&a, bytes)))
		return st;
	if (!count)
		return IBCOMM_OK;
	if (comm->size == 1)
		local_copy(recvbuf, sendbuf, bytes);
	else if ((st = run(&a, bytes)))
		return st;
	ibc_reduce_finish(recvbuf, count, dtype, op, comm->size);
	return IBCOMM_OK;
}

ibcomm_status_t ibcomm_broadcast(ibcomm_t *comm, void *buf, size_t count, ibcomm_dtype_t dtype, int root)
{
	static const char fn[] = "ibcomm_broadcast";
	struct ibc_coll_args a;
	size_t esz = 0, bytes = 0;
	ibcomm_status_t st;

	if ((st = check_comm(comm, fn)) || (st = check_dtype(comm, fn, dtype, &esz)) ||
	    (st = check_root(comm, fn, root)) || (st = check_count(comm, fn, "count", count, esz, 1, &bytes)) ||
	    (st = check_buf(comm, fn, "buf", buf, count)))
		return st;
	args_init(&a, comm, IBC_COLL_BROADCAST, buf, buf, count, dtype, esz);
	a.root = root;
	if ((st = check_call(&a, bytes)))
		return st;
	if (!count || comm->size == 1)
		return IBCOMM_OK;
	return run(&a, bytes);
}

ibcomm_status_t ibcomm_reduce(ibcomm_t *comm, const void *sendbuf, void *recvbuf, size_t count,
			      ibcomm_dtype_t dtype, ibcomm_op_t op, int root)
{
	static const char fn[] = "ibcomm_reduce";
	struct ibc_coll_args a;
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
	if ((st = check_call(&a, bytes)))
		return st;
	if (!count)
		return IBCOMM_OK;
	if (comm->size == 1)
		local_copy(recvbuf, sendbuf, bytes);
	else if ((st = run(&a, bytes)))
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
	if ((st = check_call(&a, bytes)))
		return st;
	if (!sendcount)
		return IBCOMM_OK;
	if (comm->size == 1) {
		local_copy(recvbuf, sendbuf, b);
		return IBCOMM_OK;
	}
	return run(&a, bytes);
}

ibcomm_status_t ibcomm_reduce_scatter(ibcomm_t *comm, const void *sendbuf, void *recvbuf, size_t recvcount,
				      ibcomm_dtype_t dtype, ibcomm_op_t op)
{
	static const char fn[] = "ibcomm_reduce_scatter";
	struct ibc_coll_args a;
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
	if ((st = check_call(&a, bytes)))
		return st;
	if (!recvcount)
		return IBCOMM_OK;
	if (comm->size == 1)
		local_copy(recvbuf, sendbuf, b);
	else if ((st = run(&a, bytes)))
		return st;
	ibc_reduce_finish(recvbuf, recvcount, dtype, op, comm->size);
	return IBCOMM_OK;
}

ibcomm_status_t ibcomm_gather(ibcomm_t *comm, const void *sendbuf, void *recvbuf, size_t sendcount,
			      ibcomm_dtype_t dtype, int root)
{
	static const char fn[] = "ibcomm_gather";
	struct ibc_coll_args a;
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
	if ((st = check_call(&a, bytes)))
		return st;
	if (!sendcount)
		return IBCOMM_OK;
	if (comm->size == 1) {
		local_copy(recvbuf, sendbuf, b);
		return IBCOMM_OK;
	}
	return run(&a, bytes);
}

ibcomm_status_t ibcomm_scatter(ibcomm_t *comm, const void *sendbuf, void *recvbuf, size_t recvcount,
			       ibcomm_dtype_t dtype, int root)
{
	static const char fn[] = "ibcomm_scatter";
	struct ibc_coll_args a;
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
	if ((st = check_call(&a, bytes)))
		return st;
	if (!recvcount)
		return IBCOMM_OK;
	if (comm->size == 1) {
		local_copy(recvbuf, sendbuf, b);
		return IBCOMM_OK;
	}
	return run(&a, bytes);
}

ibcomm_status_t ibcomm_alltoall(ibcomm_t *comm, const void *sendbuf, void *recvbuf, size_t count,
				ibcomm_dtype_t dtype)
{
	static const char fn[] = "ibcomm_alltoall";
	struct ibc_coll_args a;
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
	if ((st = check_call(&a, count * esz)))
		return st;
	if (!count)
		return IBCOMM_OK;
	if (comm->size == 1) {
		local_copy(recvbuf, sendbuf, bytes);
		return IBCOMM_OK;
	}
	return run(&a, count * esz);
}

ibcomm_status_t ibcomm_barrier(ibcomm_t *comm)
{
	struct ibc_coll_args a;
	ibcomm_status_t st;

	if ((st = check_comm(comm, "ibcomm_barrier")))
		return st;
	args_init(&a, comm, IBC_COLL_BARRIER, NULL, NULL, 0, IBCOMM_UINT8, 1);
	if ((st = check_call(&a, 0)))
		return st;
	if (comm->size == 1)
		return IBCOMM_OK;
	return run(&a, 0);
}
