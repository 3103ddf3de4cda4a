/*
 * The RDMA (verbs) transport: RC queue pairs, RDMA WRITE WITH IMMEDIATE into receiver-owned
 * slot rings, credits returned by small RDMA writes with immediate.
 *
 * Memory: one region per connected peer, allocated and registered when its QP is made:
 *   ring     IBC_NCHAN x nslots slots of `stride` bytes the peer writes into
 *   stage    IBC_NCHAN x nslots send staging slots (slot s stages writes to the peer's
 *            slot s, so it is free again once the write's completion was seen)
 *   cred_in  IBC_NCHAN u64 credit words the peer writes (its released count)
 *   cred_out IBC_NCHAN u64 source of our credit writes
 * A slot holds a 64-byte header (tag, length, sequence; rdma_proto.h) and the payload.
 *
 * Device: the device context and protection domain are opened once per process for a given
 * IBCOMM_DEVICE / port / GID setting and shared, reference counted, by every communicator
 * that asks for the same (ibcomm_split and ibcomm_dup children share their parent's); the
 * bytes they pin are counted once, per device, against the locked-memory limit.
 *
 * Connections are lazy: a communicator makes RC QPs only to the peers its calls talk to, on
 * the first put() or get() naming the peer, through a connection manager over one UD QP
 * per communicator (rdma_cm_ud.c: the protocol, why it cannot deadlock, the job-key MAC).
 * One exception to "on first use": every collective on more than two ranks first compares
 * the call signatures over the recursive-doubling pattern (lib/coll.c, lib/algo/rd_sched.h), so
 * create() connects those log2(n) (+1) partners at once (two ranks: the peer) and waits
 * until they are READY: create() is collective (init, split, dup) and its wait answers
 * connect messages, so it waits only for the partners' own create(); then it ends with a
 * barrier over them (create_barrier()). The first collective then pays neither the QP and
 * registration cost step after step nor the skew of the other ranks' setup (about 1 s on 6
 * emulated ranks, measured).
 *
 * Completions: one CQ with a completion channel. Calls progress by polling; a call that
 * must wait polls briefly, arms the CQ and sleeps in poll() on the channel's fd and a
 * self-pipe (interrupt), bounded by the deadline.
 *
 * Liveness: a writer that dies leaves its reader no completion at all, so the sleep also
 * watches the rendezvous connection for failure notices (ibc.h), as the TCP transport does:
 * once a member of the communicator is reported dead, every call fails with IBCOMM_ERR_PEER
 * naming it.
 *
 * This file holds create, probe, destroy and the ops table. The rest, by what it holds
 * (shared definitions: rdma_int.h):
 *   rdma_ops.c       the data ops: put, get, release, wait, interrupt, reg, dereg, flush,
 *                    the zero-copy source
 *   rdma_progress.c  completions: polling the CQ, sleeping on the completion channel,
 *                    work-completion errors, the rendezvous' failure notices
 *   rdma_qp.c        a peer's RC QP and its region: INIT, RTR, RTS; posting writes,
 *                    receives and credits
 *   rdma_cm_ud.c     the connection manager: its UD QP, connect messages, first use of a peer
 *   rdma_dev.c       the shared device context and PD, pinned-memory accounting, the ring
 *                    geometry
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/resource.h>

#include "algo/rd_sched.h"
#include "rdma_int.h"

/* One token to peer and one from it (the create barrier), on the collective channel. */
static int token(struct rdma_tp *t, int peer, bool send, ibc_deadline_t dl)
{
	ibc_chunk_t c;
	int rc;

	if (send)
		return ibc_rdma_put(&t->base, peer, IBC_CHAN_COLL, UINT32_MAX, "", 0, true, dl);
	rc = ibc_rdma_get(&t->base, peer, IBC_CHAN_COLL, &c, true, dl);
	if (rc)
		return rc;
	if (c.tag != UINT32_MAX || c.len)
		return ibc_err(t->base.comm, IBCOMM_ERR_TRANSPORT, "rank %d: RDMA create: peer %d sent a chunk (tag 0x%x) where the create barrier's token was due",
			       t->base.comm->rank, peer, c.tag);
	return ibc_rdma_release(&t->base, &c);
}

/*
 * A barrier over the recursive-doubling partners, at the end of create(): the ranks leave
 * create() together, as they did when create() connected every peer, so that the first
 * call does not carry the skew of the others' setup (a slow rank's registrations). The
 * tokens are not the caller's traffic: the counters are put back.
 */
static ibcomm_status_t create_barrier(struct rdma_tp *t, const struct ibc_rd_step *step, int nsteps,
				      ibc_deadline_t dl)
{
	ibc_tp_counters_t saved = t->base.cnt;
	int rc = 0;

	for (int i = 0; i < nsteps && !rc; i++) {
		int q = step[i].peer;

		switch (step[i].kind) {
		case IBC_RD_FOLD:
		case IBC_RD_EXCHANGE:
			rc = token(t, q, true, dl);
			if (!rc)
				rc = token(t, q, false, dl);
			break;
		case IBC_RD_ABSORB:
			rc = token(t, q, false, dl);
			break;
		case IBC_RD_RETURN:
			rc = token(t, q, true, dl);
			break;
		}
	}
	saved.qps = t->base.cnt.qps;
	saved.connects = t->base.cnt.connects;
	t->base.cnt = saved;
	return rc < 0 ? rc : IBCOMM_OK;
}

/*
 * Connects the recursive-doubling partners of this rank (lib/algo/rd_sched.h, the schedule
 * lib/algo/rd.c runs: the ranks r >= p2 fold into r - p2, the others exchange with r ^ 2^k),
 * which the signature agreement of every collective on more than two ranks uses first
 * (top): starts them all, then waits until each is READY.
 */
static ibcomm_status_t preopen(struct rdma_tp *t, ibc_deadline_t dl)
{
	struct ibcomm *comm = t->base.comm;
	struct ibc_rd_step step[IBC_RD_MAX_STEPS];
	int n = comm->size, nsteps, rc;
	ibcomm_status_t st = IBCOMM_OK;

	if (n < 2)
		return IBCOMM_OK;
	nsteps = ibc_rd_schedule(n, comm->rank, step);
	for (int i = 0; i < nsteps && !st; i++)
		st = ibc_rdma_peer_start(t, &t->peers[step[i].peer], dl); /* again for a RETURN: no-op */
	for (int q = 0; q < n && !st; q++) {
		struct rdma_peer *p = &t->peers[q];

		while (!st && p->qp && !p->connected) {
			rc = ibc_rdma_block(t, dl, "create (connecting the recursive-doubling partners)", q, IBC_CHAN_COLL);
			if (rc == IBCOMM_ERR_TIMEOUT)
				return ibc_err(comm, IBCOMM_ERR_TIMEOUT,
					       "rank %d: timed out connecting to peer %d over RDMA (%s) at create: its UD QP 0x%x did not answer (did peer %d create this communicator, with RDMA?)",
					       comm->rank, q, t->devname, p->ud_qpn, q);
			if (rc < 0)
				return rc;
		}
	}
	return st ? st : create_barrier(t, step, nsteps, dl);
}

/* True while p may still lack data this rank wrote: not all released, last write not complete. */
static bool data_in_flight(const struct rdma_peer *p)
{
	bool all_released = true;

	for (int c = 0; c < IBC_NCHAN; c++)
		if (p->credit[c] != p->put_cnt[c])
			all_released = false;
	return p->connected && !all_released && p->sq_done < p->last_data_seq;
}

/*
 * Before the QPs go: lets the data writes already posted reach their peers (a put returns
 * before its write executed, and a destroyed QP drops what it still holds, where a TCP close
 * would deliver). Chunks the peer released are known delivered; for the others the last data
 * write must complete, so trailing unsignaled writes get a signaled successor (a credit write
 * the peer ignores). Waits at most RDMA_DRAIN_MS (or the communicator's timeout); not when
 * the transport failed or the communicator was aborted. Credit writes are not waited for:
 * the peer may be gone already, and it needs no credits any more.
 */
static void drain(struct rdma_tp *t)
{
	struct ibcomm *comm = t->base.comm;
	long ms = comm->set.timeout_ms > 0 && comm->set.timeout_ms < RDMA_DRAIN_MS ? comm->set.timeout_ms : RDMA_DRAIN_MS;
	ibc_deadline_t dl = ibc_deadline(ms);
	char saved[IBC_ERRLEN];
	bool pending = true;

	if (t->failed || !t->peers || atomic_load(&comm->aborted))
		return;
	memcpy(saved, comm->err, sizeof(saved)); /* what happens here is no news to the caller */
	while (pending && !t->failed) {
		pending = false;
		for (int r = 0; r < comm->size; r++) {
			struct rdma_peer *p = &t->peers[r];

			if (r == comm->rank || !data_in_flight(p))
				continue;
			pending = true;
			if (p->sq_last_sig < p->last_data_seq && ibc_rdma_send_credit(t, p, 0, true))
				break;
		}
		if (pending && ibc_rdma_block(t, dl, "destroy (waiting for writes in flight)", -1, 0) < 0)
			break;
	}
	if (pending)
		ibc_cinfo(comm, "rank %d: RDMA data writes still unacknowledged at destroy", comm->rank);
	memcpy(comm->err, saved, sizeof(saved));
}

static void rdma_destroy(ibc_tp_t *tp)
{
	struct rdma_tp *t = to_rdma(tp);

	if (!t)
		return;
	drain(t);
	if (t->peers) {
		for (int r = 0; r < tp->comm->size; r++)
			ibc_rdma_peer_close(t, &t->peers[r]);
		free(t->peers);
	}
	if (t->ud_qp)
		ibv_destroy_qp(t->ud_qp);
	if (t->ud_mr)
		ibv_dereg_mr(t->ud_mr);
	free(t->ud_mem);
	if (t->ud_pinned)
		atomic_fetch_sub(&t->dev->pinned, t->ud_pinned);
	if (t->cq) {
		if (t->cq_unacked)
			ibv_ack_cq_events(t->cq, t->cq_unacked);
		ibv_destroy_cq(t->cq);
	}
	if (t->chan)
		ibv_destroy_comp_channel(t->chan);
	if (t->dev) {
		ibc_rdma_dev_release(t->dev);
	} else { /* what ibc_rdma_dev_acquire() opened before it failed */
		if (t->pd)
			ibv_dealloc_pd(t->pd);
		if (t->ctx)
			ibv_close_device(t->ctx);
		if (t->devs)
			ibv_free_device_list(t->devs);
	}
	if (t->pipefd[0] >= 0)
		close(t->pipefd[0]);
	if (t->pipefd[1] >= 0)
		close(t->pipefd[1]);
	free(t);
}

/*
 * Whether this rank could create the transport: an active port, a usable GID and a
 * locked-memory limit that lets it register its buffers. Cheap, waits for nobody: the
 * ranks compare the answers before any of them creates a transport (IBCOMM_TRANSPORT=auto).
 */
static ibcomm_status_t rdma_probe(struct ibcomm *comm)
{
	struct rlimit rl;
	struct rdma_tp *t;
	ibcomm_status_t st;

	t = calloc(1, sizeof(*t));
	if (!t)
		return ibc_err(comm, IBCOMM_ERR_NOMEM, "rank %d: out of memory probing for RDMA", comm->rank);
	t->base.ops = &ibc_rdma_ops;
	t->base.comm = comm;
	t->pipefd[0] = t->pipefd[1] = -1;
	t->extra_fd = -1;
	st = ibc_rdma_dev_acquire(t);
	if (!st)
		st = ibc_rdma_choose_geometry(t);
	if (!st) {
		if (geteuid() != 0 && getrlimit(RLIMIT_MEMLOCK, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
		    rl.rlim_cur < t->memlen)
			st = ibc_err(comm, IBCOMM_ERR_UNSUPPORTED,
				     "rank %d: the locked-memory limit (%llu KiB) is below the %zu KiB the RDMA transport registers on %s (raise it: ulimit -l unlimited, or memlock in /etc/security/limits.conf)",
				     comm->rank, (unsigned long long)rl.rlim_cur / 1024, t->memlen / 1024, t->devname);
	}
	rdma_destroy(&t->base);
	return st;
}

static ibcomm_status_t rdma_create(struct ibcomm *comm, ibc_tp_t **tpp)
{
	struct ibv_device_attr da;
	struct rdma_tp *t;
	ibcomm_status_t st;
	size_t npeers;

	t = calloc(1, sizeof(*t));
	if (!t)
		return ibc_err(comm, IBCOMM_ERR_NOMEM, "rank %d: out of memory creating the RDMA transport", comm->rank);
	t->base.ops = &ibc_rdma_ops;
	t->base.comm = comm;
	t->pipefd[0] = t->pipefd[1] = -1;
	t->extra_fd = -1;
	ibc_notices_init(&t->notes);
	t->test_qp_error_after = comm->set.test_qp_error_after; /* test hook: test_force_qp_error(), rdma_ops.c */
	if (comm->size >= (int)WRID_UD) {
		st = ibc_err(comm, IBCOMM_ERR_UNSUPPORTED, "rank %d: the RDMA transport handles at most %d ranks, not %d",
			     comm->rank, (int)WRID_UD - 1, comm->size);
		goto err_free;
	}
	st = ibc_rdma_dev_acquire(t); /* the parent's (split, dup) or another communicator's, if open */
	if (st)
		goto err_free;
	st = ibc_rdma_choose_geometry(t);
	if (st)
		goto err_free;
	t->peer_memlen = 2 * t->per_peer_ring + 2 * 64;
	npeers = (size_t)(comm->size > 1 ? comm->size - 1 : 1);
	if (ibv_query_device(t->ctx, &da)) {
		st = ibc_err(comm, IBCOMM_ERR_TRANSPORT, "rank %d: ibv_query_device on %s failed", comm->rank, t->devname);
		goto err_free;
	}
	if ((int)t->sq_depth > da.max_qp_wr || (int)t->rq_depth > da.max_qp_wr) {
		st = ibc_err(comm, IBCOMM_ERR_UNSUPPORTED, "rank %d: %s allows %d work requests per queue, %u needed",
			     comm->rank, t->devname, da.max_qp_wr, IBC_MAX(t->sq_depth, t->rq_depth));
		goto err_free;
	}
	t->cqe = (unsigned)IBC_MIN((size_t)da.max_cqe, npeers * (t->sq_depth + t->rq_depth) + RDMA_UD_SQ + RDMA_UD_RQ);

	if (pipe(t->pipefd) || fcntl(t->pipefd[0], F_SETFL, O_NONBLOCK) || fcntl(t->pipefd[1], F_SETFL, O_NONBLOCK) ||
	    fcntl(t->pipefd[0], F_SETFD, FD_CLOEXEC) || fcntl(t->pipefd[1], F_SETFD, FD_CLOEXEC)) {
		st = ibc_err(comm, IBCOMM_ERR_SYSTEM, "rank %d: pipe for the RDMA transport: %s", comm->rank, strerror(errno));
		goto err_free;
	}
	t->chan = ibv_create_comp_channel(t->ctx);
	if (!t->chan || fcntl(t->chan->fd, F_SETFL, fcntl(t->chan->fd, F_GETFL) | O_NONBLOCK)) {
		st = ibc_err(comm, IBCOMM_ERR_TRANSPORT, "rank %d: completion channel on %s: %s", comm->rank, t->devname,
			     strerror(errno));
		goto err_free;
	}
	t->cq = ibv_create_cq(t->ctx, (int)t->cqe, NULL, t->chan, 0);
	if (!t->cq) {
		st = ibc_err(comm, IBCOMM_ERR_TRANSPORT, "rank %d: ibv_create_cq(%u entries) on %s failed: %s", comm->rank,
			     t->cqe, t->devname, strerror(errno));
		goto err_free;
	}
	t->peers = calloc((size_t)comm->size, sizeof(*t->peers));
	if (!t->peers) {
		st = ibc_err(comm, IBCOMM_ERR_NOMEM, "rank %d: out of memory for RDMA peers", comm->rank);
		goto err_free;
	}
	for (int r = 0; r < comm->size; r++)
		t->peers[r].rank = r;
	/* no QP to any peer yet: the first put() or get() naming one connects it (rdma_cm_ud.c) */
	st = ibc_rdma_ud_open(t);
	if (st)
		goto err_free;
	st = preopen(t, ibc_call_deadline(comm));
	if (st)
		goto err_free;
	ibc_cinfo(comm, "rank %d: RDMA transport on %s, GID index %d, MTU %d, %u slots x %zu bytes per peer and channel, connect QP 0x%x",
		 comm->rank, t->devname, t->gid_index, ibc_rdma_mtu_bytes(t->active_mtu), t->base.nslots,
		 t->base.max_chunk, t->ud_qp->qp_num);
	*tpp = &t->base;
	return IBCOMM_OK;

err_free:
	rdma_destroy(&t->base);
	return st;
}

const struct ibc_tp_ops ibc_rdma_ops = {
	.name = "rdma",
	.probe = rdma_probe,
	.create = rdma_create,
	.destroy = rdma_destroy,
	.put = ibc_rdma_put,
	.get = ibc_rdma_get,
	.release = ibc_rdma_release,
	.wait = ibc_rdma_wait,
	.interrupt = ibc_rdma_interrupt,
	.reg = ibc_rdma_reg,
	.dereg = ibc_rdma_dereg,
	.set_zc_source = ibc_rdma_set_zc_source,
	.flush = ibc_rdma_flush,
	.wait_fd = ibc_rdma_wait_fd,
};
