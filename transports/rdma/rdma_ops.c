/*
 * The RDMA transport's data ops (lib/transport.h; rdma_int.h): put, get, release, wait,
 * interrupt, and registered memory (reg, dereg, the collective's zero-copy source, flush).
 * A put or get naming a peer not yet connected starts the connection (rdma_cm_ud.c).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "rdma_int.h"

/*
 * TEST HOOK (tests/fault only, not a user setting; only in a build configured with
 * --enable-test-hooks): IBCOMM_TEST_QP_ERROR_AFTER=<n>, read by config.c at create, moves the QP of this rank's n-th put into the error state right after posting it,
 * as a fabric fault would. The calls that follow must fail, naming the peer and the QP.
 */
static void test_force_qp_error(struct rdma_tp *t, struct rdma_peer *p)
{
	struct ibv_qp_attr a = { .qp_state = IBV_QPS_ERR };

	ibc_cwarn(t->base.comm, "rank %d: test hook: QP error after %" PRIu64 " puts: QP 0x%x to peer %d forced into the error state",
		 t->base.comm->rank, t->test_qp_error_after, p->qp->qp_num, p->rank);
	if (ibv_modify_qp(p->qp, &a, IBV_QP_STATE))
		ibc_cwarn(t->base.comm, "rank %d: test hook: moving QP 0x%x to the error state failed: %s", t->base.comm->rank,
			 p->qp->qp_num, strerror(errno));
}

/* ---- ops ---- */

static int check_args(struct rdma_tp *t, const char *op, int peer, int chan)
{
	struct ibcomm *comm = t->base.comm;

	if (peer < 0 || peer >= comm->size || peer == comm->rank || chan < 0 || chan >= IBC_NCHAN)
		return ibc_err(comm, IBCOMM_ERR_INVALID, "rank %d: RDMA %s: bad peer %d or channel %d (size %d)", comm->rank,
			       op, peer, chan, comm->size);
	if (t->failed)
		return t->failed;
	if (ibc_rdma_notices_check(t, false, op, peer, chan))
		return t->failed;
	return 0;
}

/* ---- zero-copy from registered user memory ---- */

/*
 * The MR to send [buf, buf+len) from in place: when it lies in the collective's zero-copy
 * source (set_zc_source(): a registered, read-only sendbuf) and is worth more than an inline
 * write. Such writes are signaled and flush() waits for them.
 */
static struct ibv_mr *zc_mr(struct rdma_tp *t, const void *buf, size_t len)
{
	uintptr_t b = (uintptr_t)buf, s = (uintptr_t)t->zc_buf;

	if (!t->zc_handle || len <= RDMA_WANT_INLINE || b < s || b - s > t->zc_len || len > t->zc_len - (b - s))
		return NULL;
	return t->zc_handle;
}

void ibc_rdma_set_zc_source(ibc_tp_t *tp, const void *buf, size_t len, void *handle)
{
	struct rdma_tp *t = to_rdma(tp);

	t->zc_buf = handle ? buf : NULL;
	t->zc_len = handle ? len : 0;
	t->zc_handle = handle;
}

void *ibc_rdma_reg(ibc_tp_t *tp, void *addr, size_t len, ibcomm_status_t *st)
{
	struct rdma_tp *t = to_rdma(tp);
	struct ibcomm *comm = tp->comm;
	struct ibv_mr *mr;

	/*
	 * LOCAL_WRITE makes the kernel fault in real pages (not the shared zero page, which a
	 * later write by the program would replace behind the MR); read-only memory cannot.
	 */
	mr = ibv_reg_mr(t->pd, addr, len, IBV_ACCESS_LOCAL_WRITE);
	if (!mr && (errno == EFAULT || errno == EACCES || errno == EPERM))
		mr = ibv_reg_mr(t->pd, addr, len, 0);
	if (!mr) {
		*st = errno == ENOMEM || errno == EPERM ? IBCOMM_ERR_NOMEM : IBCOMM_ERR_SYSTEM;
		ibc_err(comm, *st, "rank %d: ibcomm_register: ibv_reg_mr of [%p, +%zu) on %s failed: %s%s", comm->rank,
			addr, len, t->devname, strerror(errno),
			errno == ENOMEM || errno == EPERM ? " (locked-memory limit too low? ulimit -l)" : "");
		return NULL;
	}
	ibc_ctrace(comm, "rank %d: registered [%p, +%zu) on %s: lkey 0x%x", comm->rank, addr, len, t->devname, mr->lkey);
	return mr;
}

void ibc_rdma_dereg(ibc_tp_t *tp, void *h)
{
	struct ibv_mr *mr = h;
	int rc;

	rc = ibv_dereg_mr(mr);
	if (rc)
		ibc_cwarn(tp->comm, "rank %d: ibv_dereg_mr of a registration of %s failed: %s", tp->comm->rank,
			 to_rdma(tp)->devname, strerror(rc));
}

/* Waits for the completion of every zero-copy write (they are signaled). */
ibcomm_status_t ibc_rdma_flush(ibc_tp_t *tp, ibc_deadline_t dl)
{
	struct rdma_tp *t = to_rdma(tp);
	struct ibcomm *comm = tp->comm;
	int rc;

	if (!t->peers)
		return IBCOMM_OK;
	for (int r = 0; r < comm->size; r++) {
		struct rdma_peer *p = &t->peers[r];

		while (p->sq_done < p->zc_last_seq) {
			if (t->failed)
				return t->failed;
			rc = ibc_rdma_block(t, dl, "flush (zero-copy writes)", r, IBC_CHAN_COLL);
			if (rc == IBCOMM_ERR_TIMEOUT)
				return ibc_err(comm, IBCOMM_ERR_TIMEOUT,
					       "rank %d: timed out waiting for the zero-copy RDMA writes to peer %d (QP 0x%x) to complete",
					       comm->rank, r, p->qp->qp_num);
			if (rc < 0)
				return rc;
		}
	}
	return IBCOMM_OK;
}

int ibc_rdma_put(ibc_tp_t *tp, int peer, int chan, uint32_t tag, const void *buf, size_t len, bool wait,
		 ibc_deadline_t dl)
{
	struct rdma_tp *t = to_rdma(tp);
	struct ibcomm *comm = tp->comm;
	struct rdma_peer *p;
	uint8_t hdr[IBC_RDMA_HDR];
	struct ibv_sge sge[2];
	uint32_t slot, nslots = tp->nslots;
	uint64_t seq, inflight;
	bool inl, counted = false;
	struct ibv_mr *zc = NULL;
	int rc, nsge;

	rc = check_args(t, "put", peer, chan);
	if (rc)
		return rc;
	if (len > tp->max_chunk)
		return ibc_err(comm, IBCOMM_ERR_INVALID, "rank %d: RDMA put of %zu bytes to peer %d exceeds the chunk size %zu",
			       comm->rank, len, peer, tp->max_chunk);
	p = &t->peers[peer];
	if (!p->connected) {
		rc = ibc_rdma_peer_start(t, p, dl);
		if (rc)
			return rc;
		while (!p->connected) {
			rc = ibc_rdma_progress(t);
			if (rc < 0)
				return rc;
			if (p->connected)
				break;
			if (!wait)
				return IBC_AGAIN; /* wait() returns once it is READY */
			rc = ibc_rdma_block(t, dl, "put (connecting)", peer, chan);
			if (rc == IBCOMM_ERR_TIMEOUT)
				return ibc_err(comm, IBCOMM_ERR_TIMEOUT,
					       "rank %d: timed out connecting to peer %d over RDMA (%s): its UD QP 0x%x did not answer the connect messages (is peer %d still in this communicator, and inside a call of it?)",
					       comm->rank, peer, t->devname, p->ud_qpn, peer);
			if (rc < 0)
				return rc;
		}
	}
	while (p->put_cnt[chan] - p->credit[chan] >= nslots) {
		rc = ibc_rdma_progress(t);
		if (rc < 0)
			return rc;
		if (p->put_cnt[chan] - p->credit[chan] < nslots)
			break;
		if (!counted) {
			tp->cnt.credit_waits++;
			counted = true;
		}
		if (!wait)
			return IBC_AGAIN;
		rc = ibc_rdma_block(t, dl, "put", peer, chan);
		if (rc == IBCOMM_ERR_TIMEOUT)
			return ibc_err(comm, IBCOMM_ERR_TIMEOUT,
				       "rank %d: timed out waiting for peer %d to release a slot of the %s channel (all %u in use): the peer is slow, stuck or dead",
				       comm->rank, peer, chan_name(chan), nslots);
		if (rc < 0)
			return rc;
	}
	slot = (uint32_t)(p->put_cnt[chan] % nslots);
	inl = IBC_RDMA_HDR + len <= t->max_inline;
	/* The staging slot and a send queue entry must be free (their completions seen). */
	while ((!inl && p->sq_done < p->stage_seq[chan * nslots + slot]) || !sq_room(t, p)) {
		rc = ibc_rdma_block(t, dl, "put", peer, chan);
		if (rc == IBCOMM_ERR_TIMEOUT)
			return ibc_err(comm, IBCOMM_ERR_TIMEOUT,
				       "rank %d: timed out waiting for the completion of an RDMA write to peer %d (QP 0x%x)",
				       comm->rank, peer, p->qp->qp_num);
		if (rc < 0)
			return rc;
	}
	if (inl) {
		memset(hdr, 0, sizeof(hdr));
		ibc_rdma_hdr_encode(hdr, tag, (uint32_t)len, (uint32_t)p->put_cnt[chan]);
		sge[0] = (struct ibv_sge){ .addr = (uintptr_t)hdr, .length = IBC_RDMA_HDR, .lkey = p->mr->lkey };
		sge[1] = (struct ibv_sge){ .addr = (uintptr_t)buf, .length = (uint32_t)len, .lkey = p->mr->lkey };
		nsge = len ? 2 : 1;
	} else if ((zc = zc_mr(t, buf, len))) {
		/* the header from the staging slot, the payload straight from the user's memory */
		uint8_t *s = stage_slot(t, peer, chan, slot);

		ibc_rdma_hdr_encode(s, tag, (uint32_t)len, (uint32_t)p->put_cnt[chan]);
		sge[0] = (struct ibv_sge){ .addr = (uintptr_t)s, .length = IBC_RDMA_HDR, .lkey = p->mr->lkey };
		sge[1] = (struct ibv_sge){ .addr = (uintptr_t)buf, .length = (uint32_t)len, .lkey = zc->lkey };
		nsge = 2;
	} else {
		uint8_t *s = stage_slot(t, peer, chan, slot);

		ibc_rdma_hdr_encode(s, tag, (uint32_t)len, (uint32_t)p->put_cnt[chan]);
		memcpy(s + IBC_RDMA_HDR, buf, len);
		sge[0] = (struct ibv_sge){ .addr = (uintptr_t)s, .length = (uint32_t)(IBC_RDMA_HDR + len),
					   .lkey = p->mr->lkey };
		nsge = 1;
	}
	rc = ibc_rdma_post_write(t, p, sge, nsge, inl, p->remote.ring_addr + ((uint64_t)chan * p->remote.nslots + slot) * p->remote.stride,
				 p->remote.ring_rkey, ibc_rdma_imm_data(chan, slot), zc != NULL, &seq);
	if (rc)
		return rc;
	if (zc) {
		p->zc_last_seq = seq;
		tp->cnt.zc_puts++;
	}
	if (!inl)
		p->stage_seq[chan * nslots + slot] = seq;
	p->last_data_seq = seq;
	p->put_cnt[chan]++;
	tp->cnt.puts++;
	tp->cnt.bytes_put += len;
	inflight = p->put_cnt[chan] - p->credit[chan];
	if (inflight > tp->cnt.max_inflight)
		tp->cnt.max_inflight = (uint32_t)inflight;
	if (t->test_qp_error_after && tp->cnt.puts == t->test_qp_error_after)
		test_force_qp_error(t, p);
	rc = ibc_rdma_progress(t);
	return rc < 0 ? rc : 0;
}

int ibc_rdma_get(ibc_tp_t *tp, int peer, int chan, ibc_chunk_t *chunk, bool wait, ibc_deadline_t dl)
{
	struct rdma_tp *t = to_rdma(tp);
	struct ibcomm *comm = tp->comm;
	struct rdma_peer *p;
	uint32_t slot, tag, len, seq;
	uint8_t *s;
	int rc;

	rc = check_args(t, "get", peer, chan);
	if (rc)
		return rc;
	p = &t->peers[peer];
	if (p->state == PEER_NONE) {
		rc = ibc_rdma_peer_start(t, p, dl); /* either side's first use connects the pair */
		if (rc)
			return rc;
	}
	while (p->consumed[chan] == p->arrived[chan]) {
		rc = ibc_rdma_progress(t);
		if (rc < 0)
			return rc;
		if (p->consumed[chan] != p->arrived[chan])
			break;
		if (!wait)
			return IBC_AGAIN;
		rc = ibc_rdma_block(t, dl, "get", peer, chan);
		if (rc == IBCOMM_ERR_TIMEOUT)
			return ibc_err(comm, IBCOMM_ERR_TIMEOUT,
				       "rank %d: timed out waiting for data from peer %d on the %s channel (%" PRIu64 " chunks received so far)",
				       comm->rank, peer, chan_name(chan), p->arrived[chan]);
		if (rc < 0)
			return rc;
	}
	slot = (uint32_t)(p->consumed[chan] % tp->nslots);
	s = ring_slot(t, peer, chan, slot);
	if (!ibc_rdma_hdr_decode(s, &tag, &len, &seq) || len > tp->max_chunk || seq != (uint32_t)p->consumed[chan]) {
		ibc_err(comm, IBCOMM_ERR_TRANSPORT,
			"rank %d: corrupt chunk from peer %d in slot %u of the %s channel (length %u, sequence %u, expected %u)",
			comm->rank, peer, slot, chan_name(chan), len, seq, (uint32_t)p->consumed[chan]);
		return ibc_rdma_fail(t, IBCOMM_ERR_TRANSPORT);
	}
	chunk->data = s + IBC_RDMA_HDR;
	chunk->len = len;
	chunk->tag = tag;
	chunk->peer = peer;
	chunk->chan = chan;
	chunk->slot = slot;
	p->consumed[chan]++;
	tp->cnt.gets++;
	tp->cnt.bytes_got += len;
	return 0;
}

ibcomm_status_t ibc_rdma_release(ibc_tp_t *tp, ibc_chunk_t *c)
{
	struct rdma_tp *t = to_rdma(tp);
	struct ibcomm *comm = tp->comm;
	struct rdma_peer *p;
	int rc;

	rc = check_args(t, "release", c->peer, c->chan);
	if (rc)
		return rc;
	p = &t->peers[c->peer];
	if (p->released[c->chan] == p->consumed[c->chan] || c->slot != p->released[c->chan] % tp->nslots)
		return ibc_err(comm, IBCOMM_ERR_INVALID,
			       "rank %d: release of slot %u from peer %d on the %s channel out of order (next is %" PRIu64 ")",
			       comm->rank, c->slot, c->peer, chan_name(c->chan), p->released[c->chan] % tp->nslots);
	p->released[c->chan]++;
	if (ibc_rdma_send_credit(t, p, c->chan, false))
		return t->failed;
	/* With a full send queue the credit goes out from a later ibc_rdma_progress(). */
	return IBCOMM_OK;
}

/*
 * transport.h's wait_fd (for transports/mix): progress, then one ibc_rdma_block() that also
 * watches fd. A return after the sleep counts as events even when only fd woke it: the
 * completions handled inside are not counted, and a spurious wake is harmless, a missed one
 * not.
 */
int ibc_rdma_wait_fd(ibc_tp_t *tp, int fd, int timeout_ms)
{
	struct rdma_tp *t = to_rdma(tp);
	int rc;

	if (t->failed)
		return t->failed;
	rc = ibc_rdma_check_abort(t);
	if (rc)
		return rc;
	rc = ibc_rdma_progress(t);
	if (rc < 0)
		return rc;
	if (rc > 0 || t->woken) {
		t->woken = false;
		return IBC_WAIT_EVENTS;
	}
	if (timeout_ms == 0)
		return 0;
	t->extra_fd = fd;
	rc = ibc_rdma_block(t, timeout_ms < 0 ? 0 : ibc_deadline(timeout_ms), "wait for data or credits from any peer",
			    -1, 0);
	t->extra_fd = -1;
	if (rc == IBCOMM_ERR_TIMEOUT)
		return 0;
	if (rc < 0)
		return rc;
	t->woken = false;
	return IBC_WAIT_EVENTS;
}

ibcomm_status_t ibc_rdma_wait(ibc_tp_t *tp, ibc_deadline_t dl)
{
	struct rdma_tp *t = to_rdma(tp);
	int rc;

	if (t->failed)
		return t->failed;
	for (;;) {
		rc = ibc_rdma_check_abort(t);
		if (rc)
			return rc;
		rc = ibc_rdma_progress(t);
		if (rc < 0)
			return rc;
		if (t->woken) {
			t->woken = false;
			return IBCOMM_OK;
		}
		rc = ibc_rdma_block(t, dl, "wait for data or credits from any peer", -1, 0);
		if (rc == IBCOMM_ERR_TIMEOUT)
			return ibc_err(tp->comm, IBCOMM_ERR_TIMEOUT, "rank %d: timed out waiting for data or credits from any peer over RDMA (%s)",
				       tp->comm->rank, t->devname);
		if (rc < 0)
			return rc;
	}
}

void ibc_rdma_interrupt(ibc_tp_t *tp)
{
	struct rdma_tp *t = to_rdma(tp);
	int saved = errno; /* async-signal-safe: the interrupted code's errno is left as it was */
	char c = 1;
	ssize_t n;

	n = write(t->pipefd[1], &c, 1); /* a full pipe (EAGAIN) already wakes */
	(void)n;
	errno = saved;
}

