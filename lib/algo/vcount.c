/*
 * Count agreement of the collectives with per-rank counts. Each (sender, receiver) pair has
 * two views of its count: what the sender sends (allgatherv: its sendcount; alltoallv:
 * scounts[receiver]) and what the receiver expects (rcounts[sender]). Every rank hashes its
 * own views, keyed by (sender, receiver): the sender's and the receiver's hashes of a pair
 * cancel in an XOR when the views agree. The shares are XOR-reduced in the signature round
 * (sig.c) that precedes every call, so the check costs no round of its own and every rank
 * learns the same verdict before any data moves. Only when the XOR is not zero do the ranks
 * exchange their counts, so that every rank names the same pair that disagrees, with its
 * counts.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "algo/algo.h"
#include "wire.h"

#define VC_MSG_LEN 9  /* the exchange: version, then what the sender sends to the receiver */
#define VC_REC_LEN 32 /* a disagreement: sender, receiver (u32), sent, expected, pairs (u64) */
#define VC_NONE 0xffffffffu

static uint64_t mix(uint64_t x)
{
	/* splitmix64's finaliser */
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

static uint64_t pair_hash(int from, int to, size_t count)
{
	return mix(mix(((uint64_t)(uint32_t)from << 32) | (uint32_t)to) ^ (uint64_t)count);
}

void ibc_vcount_hash(const struct ibc_coll_args *a, uint8_t out[IBC_VCOUNT_HASH_LEN])
{
	ibc_wbuf_t w = ibc_wbuf(out, IBC_VCOUNT_HASH_LEN);
	uint64_t h = 0;

	for (int j = 0; j < a->size; j++)
		h ^= pair_hash(a->rank, j, ibc_vcount_out(a, j)) ^ pair_hash(j, a->rank, ibc_vcount_in(a, j));
	ibc_w_u64(&w, h);
}

void ibc_vcount_xor(void *dst, const void *src, size_t n)
{
	uint8_t *d = dst;
	const uint8_t *s = src;

	for (size_t i = 0; i < n; i++)
		d[i] ^= s[i];
}

/* "rank 2's sendcounts[3] is 5 but rank 3's recvcounts[2] is 7" */
static void pair_str(const struct ibc_coll_args *a, int from, int to, uint64_t sent, uint64_t want, char *buf,
		     size_t len)
{
	if (a->coll == IBC_COLL_ALLGATHERV)
		snprintf(buf, len, "rank %d's sendcount is %llu but rank %d's recvcounts[%d] is %llu", from,
			 (unsigned long long)sent, to, from, (unsigned long long)want);
	else
		snprintf(buf, len, "rank %d's sendcounts[%d] is %llu but rank %d's recvcounts[%d] is %llu", from, to,
			 (unsigned long long)sent, to, from, (unsigned long long)want);
}

struct vc_rec {
	uint32_t from, to;       /* VC_NONE: no disagreement */
	uint64_t sent, want, npairs;
};

static void rec_put(uint8_t *buf, const struct vc_rec *x)
{
	ibc_wbuf_t w = ibc_wbuf(buf, VC_REC_LEN);

	ibc_w_u32(&w, x->from);
	ibc_w_u32(&w, x->to);
	ibc_w_u64(&w, x->sent);
	ibc_w_u64(&w, x->want);
	ibc_w_u64(&w, x->npairs);
}

static void rec_get(const uint8_t *buf, struct vc_rec *x)
{
	ibc_rbuf_t r = ibc_rbuf(buf, VC_REC_LEN);

	x->from = ibc_r_u32(&r);
	x->to = ibc_r_u32(&r);
	x->sent = ibc_r_u64(&r);
	x->want = ibc_r_u64(&r);
	x->npairs = ibc_r_u64(&r);
}

/*
 * The reduction of the records (n of them, VC_REC_LEN bytes each): the first disagreeing pair
 * in (sender, receiver) order, and the number of pairs that disagree. Commutative and
 * associative, so every rank ends with the same record.
 */
static void rec_reduce(void *dst, const void *src, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		uint8_t *d = (uint8_t *)dst + i * VC_REC_LEN;
		struct vc_rec x, y;

		rec_get(d, &x);
		rec_get((const uint8_t *)src + i * VC_REC_LEN, &y);
		x.npairs += y.npairs;
		if (y.from < x.from || (y.from == x.from && y.to < x.to)) {
			x.from = y.from;
			x.to = y.to;
			x.sent = y.sent;
			x.want = y.want;
		}
		rec_put(d, &x);
	}
}

/*
 * Every rank sends each peer what it sends it; each receiver compares with what it expects
 * and keeps its first disagreement; a recursive-doubling reduction of those tells every rank
 * the first pair of all and how many pairs disagree.
 */
ibcomm_status_t ibc_vcount_mismatch(struct ibc_coll_args *a)
{
	int n = a->size, r = a->rank;
	struct ibc_coll_args c = *a;
	struct vc_rec mine = { VC_NONE, VC_NONE, 0, 0, 0 }, all;
	uint8_t *out, *in, rec[VC_REC_LEN], res[VC_REC_LEN];
	char first[200];
	struct ibc_plan p;
	ibcomm_status_t st;

	out = ibc_scratch(a, 2 * (size_t)n * VC_MSG_LEN);
	if (!out)
		return IBCOMM_ERR_NOMEM;
	in = out + (size_t)n * VC_MSG_LEN;
	c.hook = NULL;
	c.esz = 1;
	c.reduce = NULL;
	for (int j = 0; j < n; j++) {
		ibc_wbuf_t w = ibc_wbuf(out + (size_t)j * VC_MSG_LEN, VC_MSG_LEN);

		ibc_w_u8(&w, IBC_WIRE_VERSION);
		ibc_w_u64(&w, ibc_vcount_out(a, j));
	}
	memcpy(in + (size_t)r * VC_MSG_LEN, out + (size_t)r * VC_MSG_LEN, VC_MSG_LEN);
	ibc_plan_init(&p, &c, VC_MSG_LEN);
	for (int k = 1; k < n; k++) {
		int to = (r + k) % n, from = (r - k + n) % n;

		ibc_plan_send(&p, to, out + (size_t)to * VC_MSG_LEN, VC_MSG_LEN, -1, 0);
		ibc_plan_recv(&p, from, IBC_X_COPY, in + (size_t)from * VC_MSG_LEN, NULL, VC_MSG_LEN, -1, 0);
	}
	st = ibc_plan_run(&p);
	ibc_plan_free(&p);
	for (int j = 0; !st && j < n; j++) {
		ibc_rbuf_t rb = ibc_rbuf(in + (size_t)j * VC_MSG_LEN, VC_MSG_LEN);
		uint64_t sent;

		if (ibc_r_u8(&rb) != IBC_WIRE_VERSION) {
			st = ibc_err(a->comm, IBCOMM_ERR_MISMATCH, "rank %d: %s #%u: rank %d sent its counts in another "
				     "wire version", r, ibc_coll_name(a->coll), a->seq & 0xffffffu, j);
			break;
		}
		sent = ibc_r_u64(&rb);
		if (sent == ibc_vcount_in(a, j))
			continue;
		if (!mine.npairs++) {
			mine.from = (uint32_t)j;
			mine.to = (uint32_t)r;
			mine.sent = sent;
			mine.want = ibc_vcount_in(a, j);
		}
	}
	free(out);
	if (st)
		return st;
	/* what every rank found, to every rank */
	rec_put(rec, &mine);
	memcpy(res, rec, sizeof(res)); /* one rank: its own is the result */
	c.esz = VC_REC_LEN;
	c.reduce = rec_reduce;
	ibc_plan_init(&p, &c, VC_REC_LEN);
	st = ibc_rd_plan(&p, rec, (char *)res, VC_REC_LEN);
	if (!st)
		st = ibc_plan_run(&p);
	ibc_plan_free(&p);
	if (st)
		return st;
	rec_get(res, &all);
	if (all.from == VC_NONE || all.to == VC_NONE || all.from >= (uint32_t)n || all.to >= (uint32_t)n)
		return ibc_err(a->comm, IBCOMM_ERR_MISMATCH, "rank %d: %s #%u: the ranks' counts do not agree, but no "
			       "pair of ranks was found to differ: no receive buffer was written", r,
			       ibc_coll_name(a->coll), a->seq & 0xffffffu);
	pair_str(a, (int)all.from, (int)all.to, all.sent, all.want, first, sizeof(first));
	return ibc_err(a->comm, IBCOMM_ERR_MISMATCH, "rank %d: %s #%u: %s (%llu pair%s of ranks disagree%s); every "
		       "rank's counts must match what its peers send (no receive buffer was written)", r,
		       ibc_coll_name(a->coll), a->seq & 0xffffffu, first, (unsigned long long)all.npairs,
		       all.npairs == 1 ? "" : "s", all.npairs == 1 ? "s" : "");
}
