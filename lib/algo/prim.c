/*
 * The transfer engine every algorithm runs on (see algo.h): a plan of messages, each cut in
 * chunks, driven concurrently with non-blocking put()/get() and ibc_wait() when stuck.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "algo/algo.h"

/*
 * Below twice this a message goes in one chunk: each chunk costs a fixed overhead (about
 * 20 us on TCP loopback, a few us on RDMA), so splitting small messages only adds latency.
 */
#define IBC_MIN_CHUNK (32 * 1024)

size_t ibc_chunk_size(const ibc_tp_t *tp, size_t bytes, size_t esz)
{
	size_t cs = bytes / 2; /* at least two chunks in flight, one being reduced */

	if (cs < IBC_MIN_CHUNK)
		cs = IBC_MIN_CHUNK;
	if (cs > tp->max_chunk)
		cs = tp->max_chunk;
	cs -= cs % esz;
	return cs ? cs : esz;
}

void *ibc_scratch(struct ibc_coll_args *a, size_t bytes)
{
	void *p = malloc(bytes ? bytes : 1);

	if (!p)
		ibc_err(a->comm, IBCOMM_ERR_NOMEM, "rank %d: %s: cannot allocate %zu bytes of scratch",
			ibc_grp_rank(a, a->rank), ibc_coll_name(a->coll), bytes);
	return p;
}

/* Entries of the per-peer table: peers are the communicator's ranks (a group maps to them). */
static int npeers(const struct ibc_coll_args *a)
{
	return a->grp ? a->comm->size : a->size;
}

void ibc_plan_init(struct ibc_plan *p, struct ibc_coll_args *a, size_t cs)
{
	memset(p, 0, sizeof(*p));
	p->a = a;
	p->cs = cs;
	p->ops = p->ops_small;
	p->cap = IBC_PLAN_SMALL_OPS;
	p->blocked = npeers(a) <= IBC_PLAN_SMALL_RANKS ? p->blocked_small : calloc((size_t)npeers(a), 1);
	if (!p->blocked)
		p->status = ibc_err(a->comm, IBCOMM_ERR_NOMEM, "rank %d: %s: cannot allocate a plan",
				    ibc_grp_rank(a, a->rank), ibc_coll_name(a->coll));
}

void ibc_plan_free(struct ibc_plan *p)
{
	if (p->ops != p->ops_small)
		free(p->ops);
	if (p->blocked != p->blocked_small)
		free(p->blocked);
	p->ops = NULL;
	p->blocked = NULL;
}

static int plan_add(struct ibc_plan *p, int peer, enum ibc_xmode mode, const void *src, void *dst, size_t len,
		    int dep, size_t dep_off)
{
	struct ibc_xop *op;

	if (p->status)
		return -1;
	if (p->nops == p->cap) {
		int cap = 2 * p->cap;
		struct ibc_xop *ops = realloc(p->ops == p->ops_small ? NULL : p->ops, (size_t)cap * sizeof(*ops));

		if (!ops) {
			p->status = ibc_err(p->a->comm, IBCOMM_ERR_NOMEM, "rank %d: %s: cannot allocate a plan",
					    ibc_grp_rank(p->a, p->a->rank), ibc_coll_name(p->a->coll));
			return -1;
		}
		if (p->ops == p->ops_small)
			memcpy(ops, p->ops_small, sizeof(p->ops_small));
		p->ops = ops;
		p->cap = cap;
	}
	op = &p->ops[p->nops];
	op->peer = ibc_grp_rank(p->a, peer);
	op->mode = mode;
	op->src = src;
	op->dst = dst;
	op->len = len;
	op->nchunks = len ? (uint32_t)((len + p->cs - 1) / p->cs) : 1;
	op->done = 0;
	op->dep = dep;
	op->dep_off = dep_off;
	return p->nops++;
}

int ibc_plan_send(struct ibc_plan *p, int peer, const void *src, size_t len, int dep, size_t dep_off)
{
	return plan_add(p, peer, IBC_X_SEND, src, NULL, len, dep, dep_off);
}

int ibc_plan_recv(struct ibc_plan *p, int peer, enum ibc_xmode mode, void *dst, const void *local, size_t len,
		  int dep, size_t dep_off)
{
	return plan_add(p, peer, mode, local, dst, len, dep, dep_off);
}

static size_t chunk_len(const struct ibc_plan *p, const struct ibc_xop *op, uint32_t c)
{
	size_t off = (size_t)c * p->cs;

	return IBC_MIN(p->cs, op->len - off);
}

/* Bytes of op completed, in order. */
static size_t op_progress(const struct ibc_plan *p, const struct ibc_xop *op)
{
	return op->done == op->nchunks ? op->len : (size_t)op->done * p->cs;
}

static bool chunk_ready(const struct ibc_plan *p, const struct ibc_xop *op, uint32_t c)
{
	const struct ibc_xop *d;

	if (op->dep < 0)
		return true;
	d = &p->ops[op->dep];
	if (op->dep_off == IBC_DEP_ALL)
		return d->done == d->nchunks;
	return op_progress(p, d) >= op->dep_off + (size_t)c * p->cs + chunk_len(p, op, c);
}

static const char *coll_of_tag(uint32_t tag)
{
	return (tag & 0xff) < IBC_COLL_COUNT ? ibc_coll_name((enum ibc_coll)(tag & 0xff)) : "an unknown operation";
}

/* Checks a received chunk against what op expects next. */
static ibcomm_status_t check_chunk(struct ibc_plan *p, const struct ibc_xop *op, const ibc_chunk_t *ch)
{
	struct ibc_coll_args *a = p->a;
	size_t want = chunk_len(p, op, op->done);

	if (ch->tag != a->tag)
		return ibc_err(a->comm, IBCOMM_ERR_MISMATCH,
			       "rank %d expected %s #%u from rank %d but received %s #%u: the ranks called "
			       "different collectives or a different number of them",
			       ibc_grp_rank(a, a->rank), ibc_coll_name(a->coll), a->seq & 0xffffffu, op->peer,
			       coll_of_tag(ch->tag), ch->tag >> 8);
	if (ch->len != want)
		return ibc_err(a->comm, IBCOMM_ERR_MISMATCH,
			       "rank %d, %s #%u: chunk %u of %u from rank %d has %zu bytes, expected %zu: the ranks "
			       "passed different counts or datatypes",
			       ibc_grp_rank(a, a->rank), ibc_coll_name(a->coll), a->seq & 0xffffffu, op->done,
			       op->nchunks, op->peer, ch->len, want);
	return IBCOMM_OK;
}

/* Places one received chunk according to op's mode. */
static void apply_chunk(struct ibc_plan *p, const struct ibc_xop *op, void *data, size_t len)
{
	size_t off = (size_t)op->done * p->cs;
	size_t n = len / p->a->esz;
	char *dst;
	const char *local;

	if (!len)
		return;
	dst = op->dst + off;
	local = op->src ? op->src + off : dst;
	switch (op->mode) {
	case IBC_X_COPY:
		memcpy(dst, data, len);
		break;
	case IBC_X_REDUCE:
		if (local != dst)
			memcpy(dst, local, len);
		p->a->reduce(dst, data, n);
		break;
	case IBC_X_REDUCE_REV:
		/* the slot is ours until release(): reduce there, incoming data on the left */
		p->a->reduce(data, local, n);
		memcpy(dst, data, len);
		break;
	case IBC_X_SEND:
		break;
	}
}

/* Sends what op may send now. Returns <0 on error, else whether anything went out. */
static int progress_send(struct ibc_plan *p, struct ibc_xop *op)
{
	struct ibc_coll_args *a = p->a;
	int moved = 0;

	while (op->done < op->nchunks && chunk_ready(p, op, op->done)) {
		size_t off = (size_t)op->done * p->cs, len = chunk_len(p, op, op->done);
		const char *src = op->src ? op->src + off : "";
		int rc = IBC_HOOK_PASS;

		if (a->hook)
			rc = a->hook->put(a->hook, op->peer, op->done, op->nchunks, src, len);
		if (rc == IBC_HOOK_PASS)
			rc = ibc_put(a->tp, op->peer, IBC_CHAN_COLL, a->tag, src, len, false, a->dl);
		if (rc == IBC_AGAIN)
			break;
		if (rc < 0)
			return rc;
		op->done++;
		moved = 1;
	}
	return moved;
}

/* Takes what op may take now. Returns <0 on error, else whether anything came in. */
static int progress_recv(struct ibc_plan *p, struct ibc_xop *op)
{
	struct ibc_coll_args *a = p->a;
	int moved = 0;

	while (op->done < op->nchunks && chunk_ready(p, op, op->done)) {
		ibc_chunk_t ch;
		ibcomm_status_t st;
		int hr, rc = ibc_get(a->tp, op->peer, IBC_CHAN_COLL, &ch, false, a->dl);

		if (rc == IBC_AGAIN)
			break;
		if (rc < 0)
			return rc;
		if (a->hook && (hr = a->hook->take(a->hook, op->peer, op->done, &ch))) {
			/* the hook's alone, or a message whose data is not to be used */
			rc = ibc_release(a->tp, &ch);
			if (hr < 0)
				return hr;
			if (rc < 0)
				return rc;
			if (hr == IBC_HOOK_DROP)
				op->done = op->nchunks;
			moved = 1;
			continue;
		}
		st = check_chunk(p, op, &ch);
		if (!st)
			apply_chunk(p, op, ch.data, ch.len);
		rc = ibc_release(a->tp, &ch);
		if (st)
			return st;
		if (rc < 0)
			return rc;
		op->done++;
		moved = 1;
	}
	return moved;
}

/* Appends ", r" (or "r" first) to list, up to a dozen ranks then "...". */
static void list_rank(char *list, size_t cap, int *count, int r)
{
	size_t len = strlen(list);

	if (*count < 12)
		snprintf(list + len, cap - len, "%s%d", *count ? ", " : "", r);
	else if (*count == 12)
		snprintf(list + len, cap - len, ", ...");
	(*count)++;
}

/*
 * A stuck plan timed out: names the operation (collective, sequence number, algorithm), the
 * first message it waits for and every peer it still waits for (data to arrive, or credits to
 * send), so a timeout blames somebody.
 */
static ibcomm_status_t plan_timeout(struct ibc_plan *p)
{
	struct ibc_coll_args *a = p->a;
	const struct ibc_xop *stuck = NULL;
	char from[128] = "", to[128] = "", algo[48];
	int nfrom = 0, nto = 0, stuck_i = -1;

	snprintf(algo, sizeof(algo), "algorithm %s, %d ranks", ibc_algo_name(a->algo), a->size);
	memset(p->blocked, 0, (size_t)npeers(a));
	for (int i = p->first; i < p->nops; i++) {
		const struct ibc_xop *op = &p->ops[i];
		uint8_t bit = op->mode == IBC_X_SEND ? 1 : 2;

		if (op->done == op->nchunks || !chunk_ready(p, op, op->done))
			continue;
		if (!stuck || (stuck->mode == IBC_X_SEND && op->mode != IBC_X_SEND)) {
			stuck = op;
			stuck_i = i;
		}
		if (p->blocked[op->peer] & bit)
			continue;
		p->blocked[op->peer] |= bit;
		if (op->mode == IBC_X_SEND)
			list_rank(to, sizeof(to), &nto, op->peer);
		else
			list_rank(from, sizeof(from), &nfrom, op->peer);
	}
	if (!stuck)
		return ibc_err(a->comm, IBCOMM_ERR_TIMEOUT, "rank %d: %s #%u (%s) timed out after %ld ms",
			       ibc_grp_rank(a, a->rank), ibc_coll_name(a->coll), a->seq & 0xffffffu, algo,
			       a->comm->set.timeout_ms);
	return ibc_err(a->comm, IBCOMM_ERR_TIMEOUT,
		       "rank %d: %s #%u (%s) timed out after %ld ms at step %d of %d (%s rank %d, chunk %u of %u, "
		       "%zu bytes)%s%s%s%s%s%s; is that rank alive and in the same collective?",
		       ibc_grp_rank(a, a->rank), ibc_coll_name(a->coll), a->seq & 0xffffffu, algo, a->comm->set.timeout_ms,
		       stuck_i + 1, p->nops, stuck->mode == IBC_X_SEND ? "sending to" : "receiving from", stuck->peer,
		       stuck->done + 1, stuck->nchunks, stuck->len, nfrom ? "; waiting for data from rank " : "", from,
		       nto ? "; waiting for credits to send to rank " : "", to,
		       nfrom + nto > 1 ? " (all still missing)" : "", "");
}

ibcomm_status_t ibc_plan_run(struct ibc_plan *p)
{
	struct ibc_coll_args *a = p->a;

	if (p->status)
		return p->status;
	if (a->hook) {
		ibcomm_status_t st = a->hook->start(a->hook, p);

		if (st)
			return st;
	}
	for (;;) {
		bool moved = false;

		memset(p->blocked, 0, (size_t)npeers(a));
		while (p->first < p->nops && p->ops[p->first].done == p->ops[p->first].nchunks)
			p->first++;
		if (p->first == p->nops)
			return IBCOMM_OK;
		for (int i = p->first; i < p->nops; i++) {
			struct ibc_xop *op = &p->ops[i];
			uint8_t bit = op->mode == IBC_X_SEND ? 1 : 2;
			int rc;

			if (op->done == op->nchunks || (p->blocked[op->peer] & bit))
				continue;
			rc = op->mode == IBC_X_SEND ? progress_send(p, op) : progress_recv(p, op);
			if (rc < 0)
				return rc;
			moved |= rc > 0;
			/* later messages of this peer and direction wait behind this one */
			if (op->done < op->nchunks)
				p->blocked[op->peer] |= bit;
		}
		if (moved)
			continue;
		if (atomic_load(&a->comm->aborted))
			return ibc_err(a->comm, IBCOMM_ERR_ABORTED, "rank %d: %s #%u: the communicator was aborted",
				       ibc_grp_rank(a, a->rank), ibc_coll_name(a->coll), a->seq & 0xffffffu);
		ibcomm_status_t st = ibc_wait(a->tp, a->dl);

		if (st == IBCOMM_ERR_TIMEOUT)
			return plan_timeout(p);
		if (st < 0)
			return st;
	}
}

ibcomm_status_t ibc_send_buf(struct ibc_coll_args *a, int peer, const void *src, size_t len, size_t cs)
{
	struct ibc_plan p;
	ibcomm_status_t st;

	ibc_plan_init(&p, a, cs);
	ibc_plan_send(&p, peer, src, len, -1, 0);
	st = ibc_plan_run(&p);
	ibc_plan_free(&p);
	return st;
}

ibcomm_status_t ibc_recv_buf(struct ibc_coll_args *a, int peer, enum ibc_xmode mode, void *dst, const void *local,
			     size_t len, size_t cs)
{
	struct ibc_plan p;
	ibcomm_status_t st;

	ibc_plan_init(&p, a, cs);
	ibc_plan_recv(&p, peer, mode, dst, local, len, -1, 0);
	st = ibc_plan_run(&p);
	ibc_plan_free(&p);
	return st;
}
