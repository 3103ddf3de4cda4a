/*
 * The RDMA transport's completions (rdma_int.h): polling the CQ and handling what completed
 * (data and credits from a peer, its writes done, the connection manager's datagrams), and
 * ibc_rdma_block(), the one place a call waits: it polls briefly, arms the CQ and sleeps on
 * the completion channel, the interrupt pipe and the rendezvous connection (failure
 * notices), so that every wait also answers connect messages (rdma_cm_ud.c). Errors of work
 * completions and dead peers are turned into messages here, and the first one sticks.
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>

#include "rdma_int.h"

/* ---- errors ---- */

static const char *wc_hint(enum ibv_wc_status s)
{
	switch (s) {
	case IBV_WC_RETRY_EXC_ERR:
		return "the peer did not acknowledge: it died, or the path is wrong: check the GID (IBCOMM_GID_INDEX), MTU and routing";
	case IBV_WC_RNR_RETRY_EXC_ERR:
		return "the peer posted no receive in time: it is stuck or dead";
	case IBV_WC_REM_ACCESS_ERR:
	case IBV_WC_REM_INV_REQ_ERR:
		return "the peer rejected the write (address/rkey mismatch: did it restart or destroy its communicator?)";
	case IBV_WC_LOC_PROT_ERR:
	case IBV_WC_LOC_LEN_ERR:
		return "local memory registration problem (memlock limit? ulimit -l)";
	case IBV_WC_WR_FLUSH_ERR:
		return "the queue pair was already in the error state";
	default:
		return "see ibv_wc_status_str in the verbs documentation";
	}
}

/* Records the first failure of the transport (later calls return it again). */
ibcomm_status_t ibc_rdma_fail(struct rdma_tp *t, ibcomm_status_t st)
{
	if (!t->failed)
		t->failed = st;
	return st;
}

static ibcomm_status_t wc_error(struct rdma_tp *t, const struct ibv_wc *wc)
{
	struct ibcomm *comm = t->base.comm;
	int peer = (int)(wc->wr_id >> 48);
	char why[IBC_ERRLEN];
	ibcomm_status_t st;

	if (t->failed)
		return t->failed; /* follow-on (flush) errors: keep the first message */
	st = (wc->status == IBV_WC_RETRY_EXC_ERR || wc->status == IBV_WC_RNR_RETRY_EXC_ERR) ? IBCOMM_ERR_PEER
											      : IBCOMM_ERR_TRANSPORT;
	/* The rendezvous may know why: the peer died (the hint's guesses are then moot); it names
	 * every member known dead (a lost host's other ranks too). */
	if (peer >= 0 && peer < comm->size && peer != comm->rank && ibc_notices_poll(comm, &t->notes, true, NULL, NULL) &&
	    ibc_dead_rank(comm, peer, why, sizeof(why)) == peer) {
		ibc_err(comm, IBCOMM_ERR_PEER, "rank %d: RDMA %s peer %d failed on %s QP 0x%x: %s: %s", comm->rank,
			(wc->wr_id & WRID_RECV) ? "receive from" : "write to", peer, t->devname, wc->qp_num,
			ibv_wc_status_str(wc->status), t->notes.why);
		return ibc_rdma_fail(t, IBCOMM_ERR_PEER);
	}
	ibc_err(comm, st, "rank %d: RDMA %s peer %d failed on %s QP 0x%x: %s (vendor error 0x%x): %s",
		comm->rank, (wc->wr_id & WRID_RECV) ? "receive from" : "write to", peer, t->devname, wc->qp_num,
		ibv_wc_status_str(wc->status), wc->vendor_err, wc_hint(wc->status));
	return ibc_rdma_fail(t, st);
}

/*
 * Failure notices of the rendezvous (ibc_notices_poll): once a member of this communicator is
 * reported dead, every call fails naming every member known dead (the TCP transport does the
 * same), also on ranks that wait for another peer. `readable`: the rendezvous connection
 * polled readable. `op`, `peer` and `chan` (peer < 0: none) say what this rank was doing, for
 * the message.
 */
int ibc_rdma_notices_check(struct rdma_tp *t, bool readable, const char *op, int peer, int chan)
{
	struct ibcomm *comm = t->base.comm;
	struct ibc_notices *n = &t->notes;
	char doing[128], qp[48] = "", gone[32];

	if (!ibc_notices_poll(comm, n, readable, NULL, NULL))
		return 0;
	if (peer >= 0)
		snprintf(doing, sizeof(doing), "%s (peer %d, %s channel)", op, peer, chan_name(chan));
	else
		snprintf(doing, sizeof(doing), "%s", op);
	if (t->peers && t->peers[n->first].qp)
		snprintf(qp, sizeof(qp), ", QP 0x%x to peer %d", t->peers[n->first].qp->qp_num, n->first);
	if (n->ndead == 1)
		snprintf(gone, sizeof(gone), "peer %d is gone: ", n->first);
	else
		gone[0] = '\0'; /* the text starts "ranks 2, 3 are gone: " */
	ibc_err(comm, IBCOMM_ERR_PEER, "rank %d: RDMA %s on %s%s: %s%s", comm->rank, doing, t->devname, qp, gone, n->why);
	return ibc_rdma_fail(t, IBCOMM_ERR_PEER);
}

/* ---- completions ---- */

static int handle_wc(struct rdma_tp *t, const struct ibv_wc *wc)
{
	int peer = (int)(wc->wr_id >> 48);
	struct rdma_peer *p;
	uint32_t imm;
	int chan;

	if ((wc->wr_id >> 48) == WRID_UD)
		return ibc_rdma_ud_wc(t, wc);
	if (wc->status != IBV_WC_SUCCESS)
		return wc_error(t, wc);
	if (peer < 0 || peer >= t->base.comm->size || peer == t->base.comm->rank)
		return 0;
	p = &t->peers[peer];
	if (!(wc->wr_id & WRID_RECV)) {
		uint64_t seq = wc->wr_id & WRID_SEQ_MASK;

		if (seq > p->sq_done)
			p->sq_done = seq;
		return 0;
	}
	p->rq_posted--;
	if (!p->connected)
		ibc_rdma_peer_ready(t, p); /* the peer wrote: it is in RTS, so in RTR */
	if (wc->opcode != IBV_WC_RECV_RDMA_WITH_IMM || !(wc->wc_flags & IBV_WC_WITH_IMM)) {
		ibc_err(t->base.comm, IBCOMM_ERR_TRANSPORT, "rank %d: unexpected completion (opcode %d) from peer %d on QP 0x%x",
			t->base.comm->rank, wc->opcode, peer, wc->qp_num);
		return ibc_rdma_fail(t, IBCOMM_ERR_TRANSPORT);
	}
	imm = ntohl(wc->imm_data);
	chan = ibc_rdma_imm_chan(imm);
	t->woken = true;
	if (ibc_rdma_imm_is_credit(imm)) {
		uint64_t c = ibc_rdma_credit_update(p->credit[chan], ibc_rdma_imm_low(imm));

		if (c > p->put_cnt[chan]) {
			ibc_err(t->base.comm, IBCOMM_ERR_TRANSPORT,
				"rank %d: peer %d returned %" PRIu64 " credits on the %s channel but only %" PRIu64 " chunks were written",
				t->base.comm->rank, peer, c, chan_name(chan), p->put_cnt[chan]);
			return ibc_rdma_fail(t, IBCOMM_ERR_TRANSPORT);
		}
		p->credit[chan] = c;
		return 0;
	}
	if (ibc_rdma_imm_low(imm) != p->arrived[chan] % t->base.nslots ||
	    p->arrived[chan] - p->released[chan] >= t->base.nslots) {
		ibc_err(t->base.comm, IBCOMM_ERR_TRANSPORT,
			"rank %d: peer %d wrote slot %u of the %s channel out of order (expected %" PRIu64 ", %" PRIu64 " unreleased)",
			t->base.comm->rank, peer, ibc_rdma_imm_low(imm), chan_name(chan), p->arrived[chan] % t->base.nslots,
			p->arrived[chan] - p->released[chan]);
		return ibc_rdma_fail(t, IBCOMM_ERR_TRANSPORT);
	}
	p->arrived[chan]++;
	return 0;
}

/* Polls the CQ dry; returns the number of completions handled, or a negative status. */
int ibc_rdma_progress(struct rdma_tp *t)
{
	struct ibv_wc wc[32];
	int total = 0, n;

	if (t->failed)
		return t->failed;
	do {
		n = ibv_poll_cq(t->cq, IBC_ARRAY_SIZE(wc), wc);
		if (n < 0) {
			ibc_err(t->base.comm, IBCOMM_ERR_TRANSPORT, "rank %d: ibv_poll_cq on %s failed", t->base.comm->rank,
				t->devname);
			return ibc_rdma_fail(t, IBCOMM_ERR_TRANSPORT);
		}
		for (int i = 0; i < n; i++) {
			int rc = handle_wc(t, &wc[i]);

			if (rc < 0)
				return rc;
		}
		total += n;
	} while (n == (int)IBC_ARRAY_SIZE(wc));
	if (total) {
		for (int r = 0; r < t->base.comm->size; r++) {
			struct rdma_peer *p = &t->peers[r];

			if (!p->qp)
				continue;
			if (p->rq_posted < t->rq_depth / 2 && ibc_rdma_post_recvs(t, p))
				return t->failed;
			for (int c = 0; c < IBC_NCHAN; c++)
				if (ibc_rdma_send_credit(t, p, c, false))
					return t->failed;
		}
	}
	return total;
}

ibcomm_status_t ibc_rdma_check_abort(struct rdma_tp *t)
{
	struct ibcomm *comm = t->base.comm;

	if (atomic_load(&comm->aborted))
		return ibc_err(comm, IBCOMM_ERR_ABORTED, "rank %d: the communicator was aborted", comm->rank);
	return IBCOMM_OK;
}

/*
 * Makes progress, sleeping until a completion, an interrupt or the deadline. Returns 0 (the
 * caller re-checks its condition), IBCOMM_ERR_TIMEOUT without a message (the caller says what
 * it waited for), or another error with its message.
 */
int ibc_rdma_block(struct rdma_tp *t, ibc_deadline_t dl, const char *op, int peer, int chan)
{
	struct pollfd pfd[4];
	uint64_t spin_end;
	int n, left, retx, rdv_fd = -1;

	if (ibc_rdma_check_abort(t))
		return IBCOMM_ERR_ABORTED;
	retx = ibc_rdma_cm_tick(t); /* resends unanswered connect messages; ms to the next resend */
	/* completions first: what a peer delivered before its death notice came is not lost */
	n = ibc_rdma_progress(t);
	if (n)
		return n < 0 ? n : 0;
	n = ibc_rdma_notices_check(t, false, op, peer, chan);
	if (n)
		return n;
	/*
	 * Poll for a bounded time (IBCOMM_RDMA_SPIN_US) before arming the completion channel: a
	 * completion seen here costs no system call, while the sleep costs a few and a wake-up
	 * (in the emulated guest ib_send_lat -e takes 240-330 us where polling takes 16-18 us). The clock is read every 16 polls; past the first 16 polls each
	 * round yields the CPU, so that ranks sharing cores (and the kernel's Soft-RoCE work)
	 * are not kept off them by a waiting rank.
	 */
	spin_end = now_ns() + (uint64_t)t->base.comm->set.rdma_spin_us * 1000;
	for (unsigned i = 1;; i++) {
		n = ibc_rdma_progress(t);
		if (n)
			return n < 0 ? n : 0;
		if (i % 16 == 0) {
			if (now_ns() >= spin_end || ibc_rdma_check_abort(t))
				break;
			/* wait_fd()'s descriptor (the mix's doorbell): its writer waits for us too */
			if (t->extra_fd >= 0) {
				struct pollfd xf = { .fd = t->extra_fd, .events = POLLIN };

				if (poll(&xf, 1, 0) > 0)
					return 0;
			}
			sched_yield();
		}
	}
	if (!t->cq_armed) {
		if (ibv_req_notify_cq(t->cq, 0)) {
			ibc_err(t->base.comm, IBCOMM_ERR_TRANSPORT, "rank %d: ibv_req_notify_cq on %s failed",
				t->base.comm->rank, t->devname);
			return ibc_rdma_fail(t, IBCOMM_ERR_TRANSPORT);
		}
		t->cq_armed = true;
		n = ibc_rdma_progress(t); /* what completed before arming raises no event */
		if (n)
			return n < 0 ? n : 0;
	}
	left = ibc_deadline_left(dl);
	if (left == 0)
		return IBCOMM_ERR_TIMEOUT;
	if (left < 0 || left > 1000)
		left = 1000;
	if (retx >= 0 && retx < left)
		left = retx;
	pfd[0] = (struct pollfd){ .fd = t->chan->fd, .events = POLLIN };
	pfd[1] = (struct pollfd){ .fd = t->pipefd[0], .events = POLLIN };
	/* the rendezvous connection: failure notices (a dead writer completes nothing here) */
	if (t->base.comm->boot)
		rdv_fd = ibc_boot_fd(t->base.comm->boot);
	pfd[2] = (struct pollfd){ .fd = rdv_fd, .events = POLLIN }; /* fd -1: ignored by poll() */
	pfd[3] = (struct pollfd){ .fd = t->extra_fd, .events = POLLIN }; /* wait_fd()'s, never read here */
	n = poll(pfd, 4, left);
	if (n < 0 && errno != EINTR) {
		ibc_err(t->base.comm, IBCOMM_ERR_SYSTEM, "rank %d: poll on the RDMA completion channel failed: %s",
			t->base.comm->rank, strerror(errno));
		return ibc_rdma_fail(t, IBCOMM_ERR_SYSTEM);
	}
	if (n > 0 && (pfd[0].revents & POLLIN)) {
		struct ibv_cq *cq;
		void *ctx;

		while (ibv_get_cq_event(t->chan, &cq, &ctx) == 0) {
			t->cq_armed = false;
			if (++t->cq_unacked >= 64) {
				ibv_ack_cq_events(t->cq, t->cq_unacked);
				t->cq_unacked = 0;
			}
		}
	}
	if (n > 0 && (pfd[1].revents & POLLIN)) {
		char buf[64];

		while (read(t->pipefd[0], buf, sizeof(buf)) > 0)
			;
		t->woken = true; /* interrupt() ends a wait() (the progress thread: a request was queued) */
	}
	if (ibc_rdma_check_abort(t))
		return IBCOMM_ERR_ABORTED;
	if (n > 0 && pfd[2].revents) {
		n = ibc_rdma_progress(t); /* as above: completions before the notice */
		if (n)
			return n < 0 ? n : 0;
		n = ibc_rdma_notices_check(t, true, op, peer, chan);
		if (n)
			return n;
	}
	if (dl && ibc_now_ms() >= dl)
		return IBCOMM_ERR_TIMEOUT;
	return 0;
}
