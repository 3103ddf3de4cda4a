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
 * A small recursive-doubling allreduce, broadcast or allgather (one chunk per message, rd.c)
 * carries the signature message in front of its own data, so the comparison costs no round of
 * its own: it works in a scratch buffer, drops the data of every message once a mismatch is
 * known, and writes recvbuf only when no rank saw one. Every other collective first runs the
 * same pattern with signature-only messages, then its algorithm. Either way each message is one
 * chunk whatever the counts, so the channels stay in step and the communicator remains usable
 * after IBCOMM_ERR_MISMATCH (unless the sequence numbers themselves differ: then every later
 * call reports it too). Two ranks: see pair_check().
 *
 * All of it rides on the transfer engine's hook (struct ibc_xhook, algo.h): the engine hands
 * over each chunk it puts or takes and knows nothing of signatures.
 */
#include <stdio.h>
#include <string.h>

#include "algo/sig.h"
#include "wire.h"

#define SIG_COLL 0xfeu   /* collective byte of a chunk that is only a signature */
#define SIG_FUSED 0x80u  /* collective byte flag: the chunk starts with a signature */
#define SIG_TAG IBC_COLL_TAG(0, SIG_COLL) /* never a data tag: those carry a collective < IBC_COLL_COUNT */
#define SIG_NONE 0xffu   /* op of a collective that does not reduce */
#define SIG_ENTRY_LEN 24
#define SIG_MSG_LEN (2 + 2 * SIG_ENTRY_LEN)
_Static_assert(SIG_MSG_LEN == IBC_SIG_MSG_LEN, "signature length");
_Static_assert(IBC_COLL_COUNT < SIG_FUSED, "collective numbers leave the flag bit free");

static bool bare(uint32_t tag)
{
	return (tag & 0xffu) == SIG_COLL;
}

/* The collective a tag names, for messages (a flagged or unknown byte names the last one). */
static const char *coll_of(uint32_t tag)
{
	return ibc_coll_name((enum ibc_coll)IBC_MIN(tag & 0x7fu, (uint32_t)IBC_COLL_COUNT - 1));
}

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
	/* per-rank counts are compared apart (vcount.c): here they would differ legitimately */
	s->count = a->coll == IBC_COLL_BARRIER || ibc_coll_is_v((enum ibc_coll)a->coll) ? 0 : a->count;
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
	if (ibc_coll_is_v((enum ibc_coll)s->coll)) {
		snprintf(buf, len, "rank %u's %s #%u (%s)", s->rank, ibc_coll_name((enum ibc_coll)s->coll),
			 s->seq & 0xffffffu, ibc_dtype_name((ibcomm_dtype_t)s->dtype));
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
static ibcomm_status_t pair_check(struct ibc_sig *s, int peer, uint32_t tag, const void *data, size_t len)
{
	struct ibc_coll_args *a = s->a;
	struct sig mine, got[2];
	ibcomm_status_t st;
	uint8_t flag;

	if (bare(tag) && len > IBC_SIG_MSG_LEN)
		len = IBC_SIG_MSG_LEN; /* the peer's agreement round carries data behind it (vcount_begin) */
	if (!bare(tag) && (tag >> 8) != (a->tag >> 8))
		st = ibc_err(a->comm, IBCOMM_ERR_MISMATCH, "rank %d: %s #%u: rank %d sent %s #%u data without a call "
			     "signature", a->rank, ibc_coll_name(a->coll), a->seq & 0xffffffu, peer, coll_of(tag), tag >> 8);
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
static ibcomm_status_t pair_take(struct ibc_sig *s)
{
	struct ibc_coll_args *a = s->a;
	ibcomm_status_t st;
	ibc_chunk_t ch;
	int rc;

	if (s->in_peer < 0)
		return IBCOMM_OK;
	rc = ibc_get(a->tp, s->in_peer, IBC_CHAN_COLL, &ch, true, a->dl);
	if (rc)
		return rc == IBCOMM_ERR_TIMEOUT ? sig_timeout(a) : rc;
	s->in_peer = -1;
	if (!bare(ch.tag) && (ch.tag & SIG_FUSED) && ch.len >= IBC_SIG_MSG_LEN) {
		ch.len = IBC_SIG_MSG_LEN; /* data behind it: the peer runs another call (the check says so) */
		ch.tag &= ~SIG_FUSED;
	}
	st = pair_check(s, ch.peer, ch.tag, ch.data, ch.len);
	rc = ibc_release(a->tp, &ch);
	return st ? st : rc;
}

/* Two ranks: this rank's signature as a chunk of its own (the call sends no data first). */
static int pair_send(struct ibc_sig *s, bool wait)
{
	struct ibc_coll_args *a = s->a;
	int rc;

	if (s->out_peer < 0)
		return IBCOMM_OK;
	rc = ibc_put(a->tp, s->out_peer, IBC_CHAN_COLL, SIG_TAG, s->msg, IBC_SIG_MSG_LEN, wait, a->dl);
	if (rc == IBCOMM_OK)
		s->out_peer = -1;
	else if (rc == IBCOMM_ERR_TIMEOUT)
		return sig_timeout(a);
	return rc;
}

/* Puts this rank's signature message and then len bytes of data as one chunk. */
static int put_signed(struct ibc_sig *s, int peer, uint32_t tag, const void *src, size_t len)
{
	struct ibc_coll_args *a = s->a;
	uint8_t buf[IBC_SIG_MSG_LEN + IBC_HOOK_MSG_MAX];

	memcpy(buf, s->msg, IBC_SIG_MSG_LEN);
	if (len)
		memcpy(buf + IBC_SIG_MSG_LEN, src, len);
	return ibc_put(a->tp, peer, IBC_CHAN_COLL, tag, buf, IBC_SIG_MSG_LEN + len, false, a->dl);
}

/* The signature fits in front of a chunk of len bytes. */
static bool fits(const struct ibc_coll_args *a, size_t len)
{
	return len <= IBC_HOOK_MSG_MAX && IBC_SIG_MSG_LEN + len <= a->tp->max_chunk;
}

/* More ranks: from now on s's messages carry `x does not match y`. */
static void set_seen(struct ibc_sig *s, const struct sig *x, const struct sig *y)
{
	ibc_wbuf_t w = ibc_wbuf(s->msg, sizeof(s->msg));

	sig_msg(&w, true, x, y);
	s->seen = true;
}

/* More ranks: takes the signature message in front of a chunk from peer. */
static ibcomm_status_t fold(struct ibc_sig *s, int peer, uint32_t tag, const void *data, size_t len)
{
	struct ibc_coll_args *a = s->a;
	struct sig mine, got[2];
	ibcomm_status_t st;
	uint8_t flag;

	if ((!bare(tag) && !(tag & SIG_FUSED)) || len < IBC_SIG_MSG_LEN)
		return ibc_err(a->comm, IBCOMM_ERR_MISMATCH, "rank %d: %s #%u: rank %d sent %s #%u data without a call "
			       "signature", a->rank, ibc_coll_name(a->coll), a->seq & 0xffffffu, peer, coll_of(tag),
			       tag >> 8);
	if ((st = sig_parse(a, peer, data, IBC_SIG_MSG_LEN, &flag, got)))
		return st;
	if (s->seen)
		return IBCOMM_OK;
	sig_of(a, &mine);
	if (flag)
		set_seen(s, &got[0], &got[1]);
	else if (!sig_equal(&mine, &got[0]))
		set_seen(s, &mine, &got[0]);
	else if ((bare(tag) ? tag : tag & ~SIG_FUSED) != a->tag)
		return ibc_err(a->comm, IBCOMM_ERR_MISMATCH, "rank %d: %s #%u: rank %d made the same call but %s (is "
			       "IBCOMM_ALGO the same on every rank?)", a->rank, ibc_coll_name(a->coll),
			       a->seq & 0xffffffu, peer, bare(tag) ? "sent only its signature where data was due" :
			       "sent data where only its signature was due");
	return IBCOMM_OK;
}

/* ---- the engine's hook ---- */

static int hook_put(struct ibc_xhook *h, int peer, uint32_t c, uint32_t nchunks, const void *src, size_t len)
{
	struct ibc_sig *s = (struct ibc_sig *)h;
	struct ibc_coll_args *a = s->a;
	int rc;

	if (s->fused) {
		/* more ranks: what this rank knows of the signatures, in front of each message */
		if (c)
			return IBC_HOOK_PASS;
		if (nchunks != 1 || !fits(a, len))
			return ibc_err(a->comm, IBCOMM_ERR_INVALID, "rank %d: %s #%u: a message of %u chunks (%zu "
				       "bytes in the first) to rank %d cannot carry the call signature", a->rank,
				       ibc_coll_name(a->coll), a->seq & 0xffffffu, nchunks, len, peer);
		return put_signed(s, peer, bare(a->tag) ? a->tag : a->tag | SIG_FUSED, src, len);
	}
	if (peer != s->out_peer)
		return IBC_HOOK_PASS;
	if (fits(a, len)) {
		/* two ranks: the signature and this first chunk in one frame */
		rc = put_signed(s, peer, a->tag | SIG_FUSED, src, len);
		if (rc == IBCOMM_OK)
			s->out_peer = -1;
		return rc;
	}
	/* two ranks: the signature alone first, then the chunk as it is */
	rc = pair_send(s, false);
	return rc == IBCOMM_OK ? IBC_HOOK_PASS : rc;
}

static int hook_take(struct ibc_xhook *h, int peer, uint32_t c, ibc_chunk_t *ch)
{
	struct ibc_sig *s = (struct ibc_sig *)h;
	ibcomm_status_t st;

	if (s->fused) {
		/* more ranks: the peer's knowledge of the signatures, in front of its message */
		if (c)
			return 0;
		st = fold(s, peer, ch->tag, ch->data, ch->len);
		if (st)
			return st;
		if (s->seen) {
			/* after a mismatch the data is dropped: the plan runs on to tell the others */
			h->dropped = true;
			return IBC_HOOK_DROP;
		}
		ch->data = (char *)ch->data + IBC_SIG_MSG_LEN;
		ch->len -= IBC_SIG_MSG_LEN;
		if (!bare(ch->tag))
			ch->tag &= ~SIG_FUSED;
		return 0;
	}
	if (peer != s->in_peer)
		return 0;
	/* two ranks: the peer's call signature comes first: nothing of its data is used before it */
	bool fused = !bare(ch->tag) && (ch->tag & SIG_FUSED) && ch->len >= IBC_SIG_MSG_LEN;

	s->in_peer = -1;
	st = pair_check(s, peer, fused ? ch->tag & ~SIG_FUSED : ch->tag, ch->data, fused ? IBC_SIG_MSG_LEN : ch->len);
	if (st)
		return st;
	if (!fused)
		return IBC_HOOK_USED;
	ch->data = (char *)ch->data + IBC_SIG_MSG_LEN;
	ch->len -= IBC_SIG_MSG_LEN;
	ch->tag &= ~SIG_FUSED;
	return 0;
}

/* Two ranks: a plan that sends nothing to the peer sends the signature by itself, now. */
static ibcomm_status_t hook_start(struct ibc_xhook *h, const struct ibc_plan *p)
{
	struct ibc_sig *s = (struct ibc_sig *)h;

	if (s->out_peer < 0)
		return IBCOMM_OK;
	for (int i = 0; i < p->nops; i++)
		if (p->ops[i].mode == IBC_X_SEND && p->ops[i].peer == s->out_peer)
			return IBCOMM_OK;
	return pair_send(s, true);
}

static void sig_init(struct ibc_sig *s, struct ibc_coll_args *a, bool fused)
{
	ibc_wbuf_t w = ibc_wbuf(s->msg, sizeof(s->msg));
	struct sig mine;

	memset(s, 0, sizeof(*s));
	s->hook.put = hook_put;
	s->hook.take = hook_take;
	s->hook.start = hook_start;
	s->hook.every_msg = fused;
	s->a = a;
	s->fused = fused;
	s->out_peer = s->in_peer = -1;
	sig_of(a, &mine);
	sig_msg(&w, false, &mine, &mine);
	a->hook = &s->hook;
}

/* More ranks, after the signatures went round: the mismatch s has seen. */
static ibcomm_status_t seen_err(struct ibc_sig *s)
{
	ibc_rbuf_t r = ibc_rbuf(s->msg, sizeof(s->msg));
	struct sig pair[2];

	(void)ibc_r_u8(&r);
	(void)ibc_r_u8(&r);
	sig_get(&r, &pair[0]);
	sig_get(&r, &pair[1]);
	return sig_mismatch(s->a, &pair[0], &pair[1]);
}

/*
 * A small recursive-doubling allreduce, broadcast or allgather over more than two ranks
 * compares the signatures in its own messages (one chunk each, the signature in front).
 */
static bool fusable(const struct ibc_coll_args *a, size_t bytes)
{
	return a->size > 2 &&
	       (a->coll == IBC_COLL_ALLREDUCE || a->coll == IBC_COLL_BROADCAST || a->coll == IBC_COLL_ALLGATHER) &&
	       a->algo == IBC_ALGO_RD && bytes && fits(a, bytes);
}

/*
 * More ranks, before the algorithm: the recursive-doubling pattern with signature-only
 * messages, or with len bytes behind each signature that the pattern reduces with `reduce`
 * (mine: this rank's, out: the result; the per-rank counts' check, vcount.c).
 */
static ibcomm_status_t agree(struct ibc_coll_args *a, const void *mine, void *out, size_t len, ibc_reduce_fn reduce)
{
	struct ibc_coll_args c = *a;
	struct ibc_sig s;
	struct ibc_plan p;
	ibcomm_status_t st;

	if (a->tp->max_chunk < IBC_SIG_MSG_LEN)
		return ibc_err(a->comm, IBCOMM_ERR_INVALID, "rank %d: %s #%u: chunks of %zu bytes cannot carry a call "
			       "signature of %d bytes", a->rank, ibc_coll_name(a->coll), a->seq & 0xffffffu,
			       a->tp->max_chunk, IBC_SIG_MSG_LEN);
	c.tag = SIG_TAG;
	c.esz = 1;
	c.reduce = reduce;
	sig_init(&s, &c, true);
	ibc_plan_init(&p, &c, IBC_MAX(len, 1));
	st = ibc_rd_plan(&p, mine, out, len);
	if (!st)
		st = ibc_plan_run(&p);
	ibc_plan_free(&p);
	if (st == IBCOMM_ERR_TIMEOUT)
		return sig_timeout(a);
	if (st)
		return st;
	return s.seen ? seen_err(&s) : IBCOMM_OK;
}

/*
 * Per-rank counts, on any number of ranks: the shares of the count check (vcount.c) ride
 * behind the signatures and are XOR-reduced on the way; a nonzero result is known to every
 * rank, which then finds out which counts differ.
 */
static ibcomm_status_t vcount_begin(struct ibc_sig *s, struct ibc_coll_args *a)
{
	uint8_t mine[IBC_VCOUNT_HASH_LEN], all[IBC_VCOUNT_HASH_LEN];
	static const uint8_t zero[IBC_VCOUNT_HASH_LEN];
	ibcomm_status_t st;

	sig_init(s, a, false);
	a->hook = NULL;
	ibc_vcount_hash(a, mine);
	st = agree(a, mine, all, sizeof(all), ibc_vcount_xor);
	if (!st && memcmp(all, zero, sizeof(all)))
		st = ibc_vcount_mismatch(a);
	return st;
}

ibcomm_status_t ibc_sig_begin(struct ibc_sig *s, struct ibc_coll_args *a, size_t bytes)
{
	ibcomm_status_t st;

	if (ibc_coll_is_v(a->coll))
		return vcount_begin(s, a);
	if (a->size > 2) {
		if (fusable(a, bytes)) {
			sig_init(s, a, true); /* the algorithm compares the signatures as it runs */
			return IBCOMM_OK;
		}
		sig_init(s, a, false);
		a->hook = NULL; /* nothing rides on the algorithm's messages */
		return agree(a, NULL, NULL, 0, NULL);
	}
	/*
	 * Two ranks: no round trip before the data. The signature goes in front of this rank's
	 * first chunk to the peer (the engine hands it over) and the peer's is checked before any
	 * of its data is used.
	 */
	sig_init(s, a, false);
	s->out_peer = s->in_peer = 1 - a->rank;
	if (bytes)
		return IBCOMM_OK;
	/* the call moves nothing: exchange the signatures now */
	a->hook = NULL;
	st = pair_send(s, true);
	if (!st)
		st = pair_take(s);
	return st;
}

ibcomm_status_t ibc_sig_end(struct ibc_sig *s)
{
	ibcomm_status_t st = pair_take(s);

	if (!st && s->fused && s->seen)
		st = seen_err(s);
	return st;
}
