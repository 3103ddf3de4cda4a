/*
 * A peer's RC queue pair and its registered region (rdma_int.h): made on first use (NONE ->
 * OPEN: INIT, receives posted), connected with the peer's QP info (RTR, RTS), READY once the
 * connection manager (rdma_cm_ud.c) knows the peer can take writes; and the posting of what
 * travels on it: receives, RDMA writes with immediate, credit writes.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>

#include "rdma_int.h"

/* ---- posting ---- */

int ibc_rdma_post_recvs(struct rdma_tp *t, struct rdma_peer *p)
{
	while (p->rq_posted < t->rq_depth) {
		struct ibv_recv_wr wr = { .wr_id = ((uint64_t)p->rank << 48) | WRID_RECV, .num_sge = 0 }, *bad;
		int rc = ibv_post_recv(p->qp, &wr, &bad);

		if (rc) {
			ibc_err(t->base.comm, IBCOMM_ERR_TRANSPORT, "rank %d: ibv_post_recv to peer %d (QP 0x%x) failed: %s",
				t->base.comm->rank, p->rank, p->qp->qp_num, strerror(rc));
			return ibc_rdma_fail(t, IBCOMM_ERR_TRANSPORT);
		}
		p->rq_posted++;
	}
	return 0;
}

/* Posts one WRITE WITH IMM on p's QP; signals every sig_every WRs. Caller checked sq_room. */
int ibc_rdma_post_write(struct rdma_tp *t, struct rdma_peer *p, struct ibv_sge *sge, int nsge, bool inl,
			uint64_t raddr, uint32_t rkey, uint32_t imm, bool signal, uint64_t *seq_out)
{
	uint64_t seq = p->sq_posted + 1;
	struct ibv_send_wr wr, *bad;
	int rc;

	memset(&wr, 0, sizeof(wr));
	wr.wr_id = ((uint64_t)p->rank << 48) | (seq & WRID_SEQ_MASK);
	wr.sg_list = sge;
	wr.num_sge = nsge;
	wr.opcode = IBV_WR_RDMA_WRITE_WITH_IMM;
	wr.imm_data = htonl(imm);
	wr.wr.rdma.remote_addr = raddr;
	wr.wr.rdma.rkey = rkey;
	if (inl)
		wr.send_flags |= IBV_SEND_INLINE;
	if (signal || seq - p->sq_last_sig >= t->sig_every) {
		wr.send_flags |= IBV_SEND_SIGNALED;
		p->sq_last_sig = seq;
	}
	rc = ibv_post_send(p->qp, &wr, &bad);
	if (rc) {
		ibc_err(t->base.comm, IBCOMM_ERR_TRANSPORT, "rank %d: ibv_post_send (RDMA write) to peer %d on QP 0x%x failed: %s",
			t->base.comm->rank, p->rank, p->qp->qp_num, strerror(rc));
		return ibc_rdma_fail(t, IBCOMM_ERR_TRANSPORT);
	}
	p->sq_posted = seq;
	if (seq_out)
		*seq_out = seq;
	return 0;
}

/*
 * Whether the released count of p's channel chan is worth a credit write: half the ring
 * released since the last one, or any release while the writer may have used all its slots
 * (every chunk it could write arrived). Batching saves a write and a receive completion on
 * each side per chunk; the second rule keeps a writer from waiting for releases it cannot
 * see. A writer stalls only once all its slots are written, those writes complete here, and
 * every completion runs ibc_rdma_progress(), which sends the credits that became due.
 */
static bool credit_due(const struct rdma_tp *t, const struct rdma_peer *p, int chan)
{
	uint64_t unsent = p->released[chan] - p->credit_sent[chan];

	return unsent && (unsent >= t->credit_batch || p->arrived[chan] - p->credit_sent[chan] >= t->base.nslots);
}

/*
 * Sends the released count of p's channel chan back to the writer, if it is due and there is
 * room. With `force` it is sent even when unchanged, signaled (see drain(), rdma.c).
 */
int ibc_rdma_send_credit(struct rdma_tp *t, struct rdma_peer *p, int chan, bool force)
{
	uint8_t *src;
	struct ibv_sge sge;
	ibc_wbuf_t w;

	if ((!force && !credit_due(t, p, chan)) || !sq_room(t, p))
		return 0;
	src = cred_out(t, p->rank) + chan * 8;
	w = ibc_wbuf(src, 8);
	ibc_w_u64(&w, p->released[chan]);
	sge = (struct ibv_sge){ .addr = (uintptr_t)src, .length = 8, .lkey = p->mr->lkey };
	if (ibc_rdma_post_write(t, p, &sge, 1, t->max_inline >= 8, p->remote.credit_addr + (uint64_t)chan * 8,
				    p->remote.credit_rkey, ibc_rdma_imm_credit(chan, p->released[chan]), force, NULL))
		return t->failed;
	p->credit_sent[chan] = p->released[chan];
	return 0;
}

/* ---- QP states: INIT, RTR, RTS ---- */

static ibcomm_status_t create_qp(struct rdma_tp *t, struct rdma_peer *p)
{
	struct ibcomm *comm = t->base.comm;
	struct ibv_qp_init_attr ia;
	struct ibv_qp_attr a;

	memset(&ia, 0, sizeof(ia));
	ia.send_cq = t->cq;
	ia.recv_cq = t->cq;
	ia.qp_type = IBV_QPT_RC;
	ia.cap.max_send_wr = t->sq_depth;
	ia.cap.max_recv_wr = t->rq_depth;
	ia.cap.max_send_sge = 2;
	ia.cap.max_recv_sge = 1;
	ia.cap.max_inline_data = RDMA_WANT_INLINE;
	p->qp = ibv_create_qp(t->pd, &ia);
	if (!p->qp) {
		ia.cap.max_inline_data = 0;
		p->qp = ibv_create_qp(t->pd, &ia);
	}
	if (!p->qp)
		return ibc_err(comm, IBCOMM_ERR_TRANSPORT, "rank %d: ibv_create_qp on %s for peer %d failed: %s", comm->rank,
			       t->devname, p->rank, strerror(errno));
	if (t->max_inline == 0 || ia.cap.max_inline_data < t->max_inline)
		t->max_inline = ia.cap.max_inline_data;
	memset(&a, 0, sizeof(a));
	a.qp_state = IBV_QPS_INIT;
	a.pkey_index = 0;
	a.port_num = (uint8_t)t->port;
	a.qp_access_flags = IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_LOCAL_WRITE;
	if (ibv_modify_qp(p->qp, &a, IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS))
		return ibc_err(comm, IBCOMM_ERR_TRANSPORT, "rank %d: QP 0x%x for peer %d on %s: INIT failed: %s",
			       comm->rank, p->qp->qp_num, p->rank, t->devname, strerror(errno));
	p->psn = (uint32_t)(rand_r(&(unsigned){ (unsigned)getpid() ^ p->qp->qp_num ^ (unsigned)now_ns() }) & 0xffffff);
	return ibc_rdma_post_recvs(t, p) ? t->failed : IBCOMM_OK;
}

/* This rank's QP info for p (sent in connect messages). */
void ibc_rdma_info_fill(struct rdma_tp *t, struct rdma_peer *p, ibc_rdma_info_t *in)
{
	struct ibcomm *comm = t->base.comm;

	memset(in, 0, sizeof(*in));
	in->src = (uint32_t)comm->rank;
	in->dst = (uint32_t)p->rank;
	in->link_layer = (uint8_t)t->link_layer;
	in->mtu = (uint8_t)t->active_mtu;
	in->lid = t->lid;
	in->qpn = p->qp->qp_num;
	in->psn = p->psn;
	memcpy(in->gid, t->gid, 16);
	in->nslots = t->base.nslots;
	in->stride = (uint32_t)t->stride;
	in->max_chunk = (uint32_t)t->base.max_chunk;
	in->ring_addr = (uintptr_t)ring_slot(t, p->rank, 0, 0);
	in->ring_rkey = p->mr->rkey;
	in->credit_addr = (uintptr_t)cred_in(t, p->rank);
	in->credit_rkey = p->mr->rkey;
}

/* Moves p's QP to RTR and RTS with the peer's QP info r (from its connect message). */
ibcomm_status_t ibc_rdma_connect_peer(struct rdma_tp *t, struct rdma_peer *p, const ibc_rdma_info_t *rp)
{
	struct ibcomm *comm = t->base.comm;
	char gs[64];
	ibc_rdma_info_t r = *rp;
	struct ibv_qp_attr a;
	int mask;

	if (r.link_layer != t->link_layer)
		return ibc_err(comm, IBCOMM_ERR_MISMATCH, "rank %d: peer %d is on %s, this rank on %s: cannot connect",
			       comm->rank, p->rank, r.link_layer == IBC_RDMA_LL_IB ? "InfiniBand" : "Ethernet (RoCE)",
			       t->link_layer == IBC_RDMA_LL_IB ? "InfiniBand" : "Ethernet (RoCE)");
	if (r.nslots != t->base.nslots || r.max_chunk != t->base.max_chunk || r.stride < IBC_RDMA_HDR + t->base.max_chunk)
		return ibc_err(comm, IBCOMM_ERR_MISMATCH,
			       "rank %d: peer %d exposes %u slots of %u bytes, this rank %u of %zu (different ibcomm versions or communicator sizes?)",
			       comm->rank, p->rank, r.nslots, r.max_chunk, t->base.nslots, t->base.max_chunk);
	p->remote = r;
	p->path_mtu = ibc_rdma_path_mtu(t->active_mtu, r.mtu);

	memset(&a, 0, sizeof(a));
	a.qp_state = IBV_QPS_RTR;
	a.path_mtu = (enum ibv_mtu)p->path_mtu;
	a.dest_qp_num = r.qpn;
	a.rq_psn = r.psn;
	a.max_dest_rd_atomic = 1;
	a.min_rnr_timer = RDMA_MIN_RNR_TIMER;
	a.ah_attr.port_num = (uint8_t)t->port;
	if (t->link_layer == IBC_RDMA_LL_ETH) {
		a.ah_attr.is_global = 1;
		memcpy(a.ah_attr.grh.dgid.raw, r.gid, 16);
		a.ah_attr.grh.sgid_index = (uint8_t)t->gid_index;
		a.ah_attr.grh.hop_limit = 64;
	} else {
		a.ah_attr.dlid = r.lid;
	}
	mask = IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU | IBV_QP_DEST_QPN | IBV_QP_RQ_PSN | IBV_QP_MAX_DEST_RD_ATOMIC |
	       IBV_QP_MIN_RNR_TIMER;
	if (ibv_modify_qp(p->qp, &a, mask)) {
		ibc_rdma_gid_str(r.gid, gs, sizeof(gs));
		return ibc_err(comm, IBCOMM_ERR_TRANSPORT,
			       "rank %d: QP 0x%x to peer %d (QP 0x%x, GID %s, LID %u, MTU %d) on %s: RTR failed: %s; check the GID (IBCOMM_GID_INDEX=%d here), MTU and routing",
			       comm->rank, p->qp->qp_num, p->rank, r.qpn, gs, r.lid, ibc_rdma_mtu_bytes(p->path_mtu),
			       t->devname, strerror(errno), t->gid_index);
	}
	memset(&a, 0, sizeof(a));
	a.qp_state = IBV_QPS_RTS;
	a.timeout = RDMA_QP_TIMEOUT;
	a.retry_cnt = RDMA_RETRY_CNT;
	a.rnr_retry = RDMA_RNR_RETRY;
	a.sq_psn = p->psn;
	a.max_rd_atomic = 1;
	mask = IBV_QP_STATE | IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT | IBV_QP_RNR_RETRY | IBV_QP_SQ_PSN | IBV_QP_MAX_QP_RD_ATOMIC;
	if (ibv_modify_qp(p->qp, &a, mask))
		return ibc_err(comm, IBCOMM_ERR_TRANSPORT, "rank %d: QP 0x%x to peer %d on %s: RTS failed: %s", comm->rank,
			       p->qp->qp_num, p->rank, t->devname, strerror(errno));
	p->state = PEER_RTR;
	ibc_ctrace(comm, "rank %d: RDMA QP 0x%x connected to peer %d (QP 0x%x), path MTU %d", comm->rank, p->qp->qp_num,
		  p->rank, r.qpn, ibc_rdma_mtu_bytes(p->path_mtu));
	return IBCOMM_OK;
}

/* ---- per-peer regions and QPs ---- */

/* Makes p's region and RC QP (INIT, receives posted): NONE -> OPEN. */
ibcomm_status_t ibc_rdma_peer_open(struct rdma_tp *t, struct rdma_peer *p)
{
	struct ibcomm *comm = t->base.comm;
	char what[64];
	ibcomm_status_t st;

	if (!p->t_start)
		p->t_start = ibc_now_ms();
	snprintf(what, sizeof(what), "the connection to peer %d", p->rank);
	st = ibc_rdma_pin_account(t, t->peer_memlen, what);
	if (st)
		return st;
	p->pinned = t->peer_memlen;
	if (posix_memalign((void **)&p->mem, 4096, t->peer_memlen)) {
		p->mem = NULL;
		return ibc_err(comm, IBCOMM_ERR_NOMEM, "rank %d: cannot allocate %zu bytes of RDMA buffers for peer %d",
			       comm->rank, t->peer_memlen, p->rank);
	}
	p->mr = ibv_reg_mr(t->pd, p->mem, t->peer_memlen, IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE);
	if (!p->mr)
		return ibc_err(comm, IBCOMM_ERR_SYSTEM, "rank %d: ibv_reg_mr of %zu bytes for peer %d on %s failed: %s%s",
			       comm->rank, t->peer_memlen, p->rank, t->devname, strerror(errno),
			       errno == ENOMEM || errno == EPERM ? " (locked-memory limit too low? ulimit -l)" : "");
	p->stage_seq = calloc((size_t)IBC_NCHAN * t->base.nslots, sizeof(*p->stage_seq));
	if (!p->stage_seq)
		return ibc_err(comm, IBCOMM_ERR_NOMEM, "rank %d: out of memory for RDMA peer %d", comm->rank, p->rank);
	st = create_qp(t, p);
	if (st)
		return st;
	t->base.cnt.qps++;
	p->state = PEER_OPEN;
	p->retx_ms = RDMA_RETX_MS;
	p->retx_at = ibc_now_ms() + p->retx_ms;
	t->npending++;
	return IBCOMM_OK;
}

void ibc_rdma_peer_close(struct rdma_tp *t, struct rdma_peer *p)
{
	if (p->qp)
		ibv_destroy_qp(p->qp);
	if (p->ah)
		ibv_destroy_ah(p->ah);
	if (p->mr)
		ibv_dereg_mr(p->mr);
	free(p->mem);
	if (p->pinned)
		atomic_fetch_sub(&t->dev->pinned, p->pinned);
	free(p->stage_seq);
}

void ibc_rdma_peer_ready(struct rdma_tp *t, struct rdma_peer *p)
{
	if (p->connected || p->state != PEER_RTR)
		return;
	p->connected = true;
	t->npending--;
	t->base.cnt.connects++;
	t->woken = true; /* a put that returned IBC_AGAIN may go now */
	ibc_ctrace(t->base.comm, "rank %d: RDMA QP 0x%x to peer %d ready, %llu ms after its first use or message", t->base.comm->rank,
		  p->qp->qp_num, p->rank, (unsigned long long)(ibc_now_ms() - p->t_start));
}

