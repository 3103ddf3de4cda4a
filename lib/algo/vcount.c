/*
 * Count agreement of the collectives with per-rank counts. Each (sender, receiver) pair has
 * two views of its count: what the sender sends (allgatherv: its sendcount; alltoallv:
 * scounts[receiver]) and what the receiver expects (rcounts[sender]). Every rank hashes its
 * own views, keyed by (sender, receiver): the sender's and the receiver's hashes of a pair
 * cancel in an XOR when the views agree. The shares are XOR-reduced in the signature round
 * (sig.c) that precedes every call, so the check costs no round of its own and every rank
 * learns the same verdict before any data moves. Only when the XOR is not zero do the ranks
 * exchange their counts, to say which pair disagrees and with what counts.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "algo/algo.h"
#include "wire.h"

#define VC_MSG_LEN 17 /* version, then what the sender sends to the peer and expects from it */

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

/* Rank j's message of the exchange: what j sends to this rank and expects from it. */
static ibcomm_status_t parse(struct ibc_coll_args *a, int j, const uint8_t *msg, uint64_t *sent, uint64_t *want)
{
	ibc_rbuf_t r = ibc_rbuf(msg, VC_MSG_LEN);

	if (ibc_r_u8(&r) != IBC_WIRE_VERSION)
		return ibc_err(a->comm, IBCOMM_ERR_MISMATCH, "rank %d: %s #%u: rank %d sent its counts in another wire "
			       "version", a->rank, ibc_coll_name(a->coll), a->seq & 0xffffffu, j);
	*sent = ibc_r_u64(&r);
	*want = ibc_r_u64(&r);
	return IBCOMM_OK;
}

ibcomm_status_t ibc_vcount_mismatch(struct ibc_coll_args *a)
{
	int n = a->size, r = a->rank, nbad = 0;
	struct ibc_coll_args c = *a;
	uint8_t *mine, *theirs;
	char first[200] = "";
	struct ibc_plan p;
	ibcomm_status_t st;

	mine = ibc_scratch(a, 2 * (size_t)n * VC_MSG_LEN);
	if (!mine)
		return IBCOMM_ERR_NOMEM;
	theirs = mine + (size_t)n * VC_MSG_LEN;
	c.hook = NULL;
	c.esz = 1;
	ibc_plan_init(&p, &c, VC_MSG_LEN);
	for (int j = 0; j < n; j++) {
		ibc_wbuf_t w = ibc_wbuf(mine + (size_t)j * VC_MSG_LEN, VC_MSG_LEN);

		ibc_w_u8(&w, IBC_WIRE_VERSION);
		ibc_w_u64(&w, ibc_vcount_out(a, j));
		ibc_w_u64(&w, ibc_vcount_in(a, j));
	}
	memcpy(theirs + (size_t)r * VC_MSG_LEN, mine + (size_t)r * VC_MSG_LEN, VC_MSG_LEN);
	for (int k = 1; k < n; k++) {
		int to = (r + k) % n, from = (r - k + n) % n;

		ibc_plan_send(&p, to, mine + (size_t)to * VC_MSG_LEN, VC_MSG_LEN, -1, 0);
		ibc_plan_recv(&p, from, IBC_X_COPY, theirs + (size_t)from * VC_MSG_LEN, NULL, VC_MSG_LEN, -1, 0);
	}
	st = ibc_plan_run(&p);
	ibc_plan_free(&p);
	/* every pair this rank is part of, as receiver then as sender */
	for (int j = 0; !st && j < n; j++) {
		uint64_t sent = 0, want = 0;

		if ((st = parse(a, j, theirs + (size_t)j * VC_MSG_LEN, &sent, &want)))
			break;
		for (int dir = 0; dir < 2; dir++) {
			int from = dir ? r : j, to = dir ? j : r;
			uint64_t out = dir ? ibc_vcount_out(a, j) : sent, in = dir ? want : ibc_vcount_in(a, j);

			if (out == in || (dir && j == r))
				continue;
			if (!nbad++)
				pair_str(a, from, to, out, in, first, sizeof(first));
		}
	}
	free(mine);
	if (st)
		return st;
	if (!nbad)
		return ibc_err(a->comm, IBCOMM_ERR_MISMATCH, "rank %d: %s #%u: the counts of other ranks disagree (this "
			       "rank's agree with every peer's): no receive buffer was written", r,
			       ibc_coll_name(a->coll), a->seq & 0xffffffu);
	return ibc_err(a->comm, IBCOMM_ERR_MISMATCH, "rank %d: %s #%u: %s%s; every rank's counts must match what "
		       "its peers send (no receive buffer was written)", r, ibc_coll_name(a->coll), a->seq & 0xffffffu,
		       first, nbad > 1 ? " (and more pairs of this rank)" : "");
}
