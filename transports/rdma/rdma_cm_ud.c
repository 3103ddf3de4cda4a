/*
 * The RDMA transport's connection manager (rdma_int.h; overview in rdma.c): one UD QP per
 * communicator carries the connect messages that make RC QPs on first use, as follows.
 *
 * Every QP must be in RTR before its peer writes to it, and the old lazy design (publish the
 * QP info in the rendezvous on first use, then block in the rendezvous for the peer's)
 * deadlocked: in a ring where every rank first writes to its right neighbour, every rank
 * blocked waiting for a peer that was itself blocked, and nobody answered. That is why QPs
 * were made eagerly, to every peer, at create.
 * The protocol now (the connection manager, "CM"):
 *   - create() makes one UD QP on the communicator's CQ and publishes its address under
 *     "<comm id>/rdma/ud/<rank>" before it connects to anybody (ibc_rdma_ud_open()).
 *   - The first put()/get() naming peer p with no QP for p ("NONE") reads p's UD address
 *     (the only rendezvous wait: for p's create() to have published it), makes the RC QP
 *     and p's region (INIT, receives posted: "OPEN") and sends p a connect message
 *     (rdma_proto.h): its QP info, flags 0.
 *   - Every wait of the transport (ibc_rdma_block(): put, get, wait, flush, drain) polls the
 *     CQ, so connect messages from any peer are answered whatever the rank is waiting for, as
 *     the TCP transport's waits keep accepting connections. A rank that gets a connect message
 *     makes its own QP for the sender if it has none, moves it to RTR and RTS with the
 *     sender's info ("RTR") and, unless the message says READY, answers with its own info
 *     and HAVE_YOURS (it is in RTR, connected to the sender's QP).
 *   - A rank is "READY" with p (may write to p) once p said HAVE_YOURS naming its QP, or
 *     once anything arrived from p on the RC QP (p is in RTS, so in RTR). Every answer
 *     carries HAVE_YOURS, so any message without READY is answered at most once: the
 *     exchange ends (REQ, REP, RTU; 4-6 messages when both open at once: each side has one
 *     QP per pair, so simultaneous opens simply pair up).
 *   - UD may drop a datagram: while a QP is not READY, ibc_rdma_block() resends its connect
 *     message (RDMA_RETX_MS, doubling up to RDMA_RETX_MAX_MS); duplicates are harmless.
 * With a job key (IBCOMM_JOB_KEY), every connect message carries an HMAC under it (cm_mac()),
 * and one without a valid MAC is dropped: a host without the key cannot make a rank connect
 * a QP to it. There is no nonce: a message captured on the fabric can be replayed, but it
 * only repeats what its sender said (the receiver ignores it once connected to another QP).
 * No wait depends on a rank doing anything but being inside some call of the communicator,
 * which a blocked put already needed (its data must be taken by a get): no new deadlock.
 * A put that may not wait returns IBC_AGAIN until READY; wait() returns when it is.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "rdma_int.h"

/* An address handle for the UD QP of p (link layer, LID, GID of its port). */
static ibcomm_status_t make_ah(struct rdma_tp *t, struct rdma_peer *p, int link_layer, uint16_t lid,
			       const uint8_t gid[16], uint32_t ud_qpn)
{
	struct ibcomm *comm = t->base.comm;
	struct ibv_ah_attr aa;
	char gs[64];

	if (link_layer != t->link_layer)
		return ibc_err(comm, IBCOMM_ERR_MISMATCH, "rank %d: peer %d is on %s, this rank on %s: cannot connect",
			       comm->rank, p->rank, link_layer == IBC_RDMA_LL_IB ? "InfiniBand" : "Ethernet (RoCE)",
			       t->link_layer == IBC_RDMA_LL_IB ? "InfiniBand" : "Ethernet (RoCE)");
	memset(&aa, 0, sizeof(aa));
	aa.port_num = (uint8_t)t->port;
	if (t->link_layer == IBC_RDMA_LL_ETH) {
		aa.is_global = 1;
		memcpy(aa.grh.dgid.raw, gid, 16);
		aa.grh.sgid_index = (uint8_t)t->gid_index;
		aa.grh.hop_limit = 64;
	} else {
		aa.dlid = lid;
	}
	p->ah = ibv_create_ah(t->pd, &aa);
	if (!p->ah) {
		ibc_rdma_gid_str(gid, gs, sizeof(gs));
		return ibc_err(comm, IBCOMM_ERR_TRANSPORT,
			       "rank %d: ibv_create_ah for peer %d (GID %s, LID %u) on %s failed: %s; check the GID (IBCOMM_GID_INDEX=%d here) and routing",
			       comm->rank, p->rank, gs, lid, t->devname, strerror(errno), t->gid_index);
	}
	p->ud_qpn = ud_qpn;
	return IBCOMM_OK;
}

/*
 * The connect message's MAC: HMAC-SHA256 under the job key of "ibcomm-rdma-cm-1" and the
 * message's len first bytes (everything but the MAC). 0 or -1.
 */
static int cm_mac(struct ibcomm *comm, const uint8_t *msg, size_t len, uint8_t mac[IBC_RDMA_CM_MAC_LEN])
{
	static const char label[] = "ibcomm-rdma-cm-1";
	uint8_t data[sizeof(label) + RDMA_UD_BUF];

	if (len > RDMA_UD_BUF)
		return -1;
	memcpy(data, label, sizeof(label));
	memcpy(data + sizeof(label), msg, len);
	return ibc_auth_hmac_sha256(comm->set.job_key, strlen(comm->set.job_key), data, sizeof(label) + len, mac);
}

/* Sends p this rank's connect message; a full send queue or an error is left to the resend. */
static void cm_send(struct rdma_tp *t, struct rdma_peer *p)
{
	struct ibcomm *comm = t->base.comm;
	struct ibv_send_wr wr, *bad;
	struct ibv_sge sge;
	ibc_rdma_cm_t m;
	uint8_t *buf;
	size_t len;
	int rc;

	if (!p->ah || !p->qp || t->ud_posted - t->ud_done >= RDMA_UD_SQ)
		return;
	memset(&m, 0, sizeof(m));
	m.flags = (p->state >= PEER_RTR ? IBC_RDMA_CM_HAVE_YOURS : 0) | (p->connected ? IBC_RDMA_CM_READY : 0) |
		  (comm->set.job_key[0] ? IBC_RDMA_CM_MAC : 0);
	snprintf(m.id, sizeof(m.id), "%s", comm->id);
	m.paired_qpn = p->state >= PEER_RTR ? p->remote.qpn : 0;
	ibc_rdma_info_fill(t, p, &m.info);
	buf = t->ud_mem + RDMA_UD_RQ * (RDMA_UD_GRH + RDMA_UD_BUF) + (t->ud_posted % RDMA_UD_SQ) * RDMA_UD_BUF;
	len = ibc_rdma_cm_encode(&m, buf, RDMA_UD_BUF);
	if (len && (m.flags & IBC_RDMA_CM_MAC) &&
	    cm_mac(comm, buf, len - IBC_RDMA_CM_MAC_LEN, buf + len - IBC_RDMA_CM_MAC_LEN))
		len = 0;
	if (!len) {
		ibc_cwarn(comm, "rank %d: the RDMA connect message for peer %d does not encode", comm->rank, p->rank);
		return;
	}
	sge = (struct ibv_sge){ .addr = (uintptr_t)buf, .length = (uint32_t)len, .lkey = t->ud_mr->lkey };
	memset(&wr, 0, sizeof(wr));
	wr.wr_id = (WRID_UD << 48) | ((t->ud_posted + 1) & WRID_SEQ_MASK);
	wr.sg_list = &sge;
	wr.num_sge = 1;
	wr.opcode = IBV_WR_SEND;
	wr.send_flags = IBV_SEND_SIGNALED;
	wr.wr.ud.ah = p->ah;
	wr.wr.ud.remote_qpn = p->ud_qpn;
	wr.wr.ud.remote_qkey = IBC_RDMA_QKEY;
	rc = ibv_post_send(t->ud_qp, &wr, &bad);
	if (rc) {
		ibc_cinfo(comm, "rank %d: posting the RDMA connect message to peer %d failed: %s", comm->rank, p->rank,
			 strerror(rc));
		return;
	}
	t->ud_posted++;
	ibc_ctrace(comm, "rank %d: RDMA connect message to peer %d (flags %u)", comm->rank, p->rank, m.flags);
}

/* Resends the connect message of every peer not READY whose time came; ms to the next, or -1. */
int ibc_rdma_cm_tick(struct rdma_tp *t)
{
	uint64_t now, next = 0;

	if (!t->npending || !t->peers)
		return -1;
	now = ibc_now_ms();
	for (int r = 0; r < t->base.comm->size; r++) {
		struct rdma_peer *p = &t->peers[r];

		if (!p->qp || p->connected)
			continue;
		if (p->retx_at <= now) {
			cm_send(t, p);
			p->retx_ms = IBC_MIN(2 * p->retx_ms, RDMA_RETX_MAX_MS);
			p->retx_at = now + p->retx_ms;
		}
		if (!next || p->retx_at < next)
			next = p->retx_at;
	}
	return next ? (int)(next - now) : -1;
}

/* Whether a decoded connect message of len bytes in buf carries the MAC the job key asks for. */
static bool cm_authentic(struct ibcomm *comm, const uint8_t *buf, size_t len, const ibc_rdma_cm_t *m)
{
	uint8_t mac[IBC_RDMA_CM_MAC_LEN], diff = 0;

	if (!comm->set.job_key[0])
		return !(m->flags & IBC_RDMA_CM_MAC);
	if (!(m->flags & IBC_RDMA_CM_MAC) || len < IBC_RDMA_CM_MAC_LEN ||
	    cm_mac(comm, buf, len - IBC_RDMA_CM_MAC_LEN, mac))
		return false;
	for (unsigned i = 0; i < IBC_RDMA_CM_MAC_LEN; i++) /* constant time */
		diff |= (uint8_t)(mac[i] ^ m->mac[i]);
	return diff == 0;
}

/* A connect message from the UD QP (sender's UD QP src_qp): see the protocol at the top of this file. */
static int cm_recv(struct rdma_tp *t, const uint8_t *buf, size_t len, uint32_t src_qp)
{
	struct ibcomm *comm = t->base.comm;
	struct rdma_peer *p;
	ibc_rdma_cm_t m;
	ibcomm_status_t st;
	char why[160];

	if (!ibc_rdma_cm_decode(buf, len, &m, why, sizeof(why))) {
		ibc_cwarn(comm, "rank %d: dropping a bad RDMA connect message (%zu bytes) on %s: %s", comm->rank, len, t->devname,
			 why);
		return 0;
	}
	if (!cm_authentic(comm, buf, len, &m)) {
		ibc_cwarn(comm, "rank %d: dropping an RDMA connect message claiming to be from peer %u: %s", comm->rank,
			  m.info.src,
			  !comm->set.job_key[0] ? "it is signed with a job key, and this rank has none (IBCOMM_JOB_KEY)"
			  : (m.flags & IBC_RDMA_CM_MAC) ? "its job-key MAC is wrong (a different IBCOMM_JOB_KEY?)"
							  : "it is not signed with the job key (IBCOMM_JOB_KEY unset there?)");
		return 0;
	}
	if (strcmp(m.id, comm->id) != 0 || m.info.dst != (uint32_t)comm->rank || m.info.src >= (uint32_t)comm->size ||
	    m.info.src == (uint32_t)comm->rank) {
		ibc_cwarn(comm, "rank %d: dropping an RDMA connect message from %u for %u of communicator %s (this is %d of %s)",
			 comm->rank, m.info.src, m.info.dst, m.id, comm->rank, comm->id);
		return 0;
	}
	p = &t->peers[m.info.src];
	if (!p->ah) {
		st = make_ah(t, p, m.info.link_layer, m.info.lid, m.info.gid, src_qp);
		if (st)
			return ibc_rdma_fail(t, st);
	}
	if (src_qp != p->ud_qpn) {
		/* the peer has one UD QP (the one it published, or the first that spoke for it) */
		ibc_cwarn(comm, "rank %d: dropping an RDMA connect message claiming to be from peer %d: it came from UD QP 0x%x, not 0x%x",
			 comm->rank, p->rank, src_qp, p->ud_qpn);
		return 0;
	}
	if (p->state == PEER_NONE) {
		if (m.flags & IBC_RDMA_CM_HAVE_YOURS)
			return 0; /* names a QP of this rank that does not exist: stale */
		st = ibc_rdma_peer_open(t, p);
		if (st)
			return ibc_rdma_fail(t, st);
	}
	if (p->state == PEER_OPEN) {
		st = ibc_rdma_connect_peer(t, p, &m.info);
		if (st)
			return ibc_rdma_fail(t, st);
	} else if (m.info.qpn != p->remote.qpn) {
		ibc_cinfo(comm, "rank %d: ignoring an RDMA connect message from peer %d for its QP 0x%x (connected to 0x%x)",
			 comm->rank, p->rank, m.info.qpn, p->remote.qpn);
		return 0;
	}
	if ((m.flags & IBC_RDMA_CM_HAVE_YOURS) && m.paired_qpn == p->qp->qp_num)
		ibc_rdma_peer_ready(t, p);
	if (!(m.flags & IBC_RDMA_CM_READY))
		cm_send(t, p); /* the peer does not know this rank is in RTR yet */
	return 0;
}

static int ud_post_recv(struct rdma_tp *t, unsigned i)
{
	struct ibv_sge sge = { .addr = (uintptr_t)(t->ud_mem + (size_t)i * (RDMA_UD_GRH + RDMA_UD_BUF)),
			       .length = RDMA_UD_GRH + RDMA_UD_BUF, .lkey = t->ud_mr->lkey };
	struct ibv_recv_wr wr = { .wr_id = (WRID_UD << 48) | WRID_RECV | i, .sg_list = &sge, .num_sge = 1 }, *bad;
	int rc = ibv_post_recv(t->ud_qp, &wr, &bad);

	if (rc) {
		ibc_err(t->base.comm, IBCOMM_ERR_TRANSPORT, "rank %d: ibv_post_recv on the RDMA connect QP 0x%x failed: %s",
			t->base.comm->rank, t->ud_qp->qp_num, strerror(rc));
		return ibc_rdma_fail(t, IBCOMM_ERR_TRANSPORT);
	}
	return 0;
}

/* A completion of the UD QP. A lost or failed connect message only delays: never fatal. */
int ibc_rdma_ud_wc(struct rdma_tp *t, const struct ibv_wc *wc)
{
	unsigned i = (unsigned)(wc->wr_id & 0xffff);
	int rc = 0;

	if (!(wc->wr_id & WRID_RECV)) {
		t->ud_done++; /* every send is signaled; they complete in order */
		if (wc->status != IBV_WC_SUCCESS)
			ibc_cinfo(t->base.comm, "rank %d: an RDMA connect message failed: %s", t->base.comm->rank,
				 ibv_wc_status_str(wc->status));
		return 0;
	}
	if (wc->status == IBV_WC_WR_FLUSH_ERR || i >= RDMA_UD_RQ)
		return 0;
	if (wc->status == IBV_WC_SUCCESS && wc->byte_len > RDMA_UD_GRH && wc->byte_len <= RDMA_UD_GRH + RDMA_UD_BUF)
		rc = cm_recv(t, t->ud_mem + (size_t)i * (RDMA_UD_GRH + RDMA_UD_BUF) + RDMA_UD_GRH,
			     wc->byte_len - RDMA_UD_GRH, wc->src_qp);
	else
		ibc_cinfo(t->base.comm, "rank %d: RDMA connect QP: receive %s, %u bytes", t->base.comm->rank,
			 ibv_wc_status_str(wc->status), wc->byte_len);
	if (rc < 0)
		return rc;
	return ud_post_recv(t, i);
}

/*
 * The first use of p by this rank: reads p's UD address (it is there once p's create()
 * returned), makes the QP, sends the connect message. Nothing when p's QP exists.
 */
ibcomm_status_t ibc_rdma_peer_start(struct rdma_tp *t, struct rdma_peer *p, ibc_deadline_t dl)
{
	struct ibcomm *comm = t->base.comm;
	uint8_t buf[IBC_RDMA_UD_MAX + 1];
	char key[160], err[256], why[160];
	ibc_rdma_ud_addr_t a;
	ibcomm_status_t st;
	uint64_t t_addr;
	size_t len = 0;

	if (p->state != PEER_NONE)
		return IBCOMM_OK;
	p->t_start = ibc_now_ms();
	if (!p->ah) {
		/* the peer may have asked first: then its message has all this rank needs */
		if (ibc_rdma_progress(t) < 0)
			return t->failed;
		if (p->state != PEER_NONE)
			return IBCOMM_OK;
	}
	if (!p->ah) {
		snprintf(key, sizeof(key), "%s/rdma/ud/%d", comm->id, p->rank);
		st = ibc_boot_get(comm->boot, key, buf, sizeof(buf), &len, dl, &comm->aborted, err, sizeof(err));
		if (st)
			return ibc_err(comm, st,
				       "rank %d: waiting for the RDMA address of peer %d (key %s): %s (does peer %d use RDMA too?)",
				       comm->rank, p->rank, key, err, p->rank);
		if (len > sizeof(buf))
			len = sizeof(buf); /* too long: decode says so */
		if (!ibc_rdma_ud_decode(buf, len, &a, why, sizeof(why)))
			return ibc_err(comm, IBCOMM_ERR_RENDEZVOUS, "rank %d: bad RDMA address of peer %d: %s", comm->rank,
				       p->rank, why);
		if (a.rank != (uint32_t)p->rank)
			return ibc_err(comm, IBCOMM_ERR_RENDEZVOUS, "rank %d: the RDMA address under key %s is rank %u's",
				       comm->rank, key, a.rank);
		st = make_ah(t, p, a.link_layer, a.lid, a.gid, a.qpn);
		if (st)
			return st;
	}
	t_addr = ibc_now_ms();
	st = ibc_rdma_peer_open(t, p);
	if (st)
		return st;
	cm_send(t, p);
	ibc_ctrace(comm, "rank %d: RDMA connect to peer %d: its address in %llu ms, QP and %zu KiB registered in %llu ms",
		  comm->rank, p->rank, (unsigned long long)(t_addr - p->t_start), t->peer_memlen / 1024,
		  (unsigned long long)(ibc_now_ms() - t_addr));
	return IBCOMM_OK;
}

/* The UD QP of the connection manager, its buffers, and its address in the rendezvous. */
ibcomm_status_t ibc_rdma_ud_open(struct rdma_tp *t)
{
	struct ibcomm *comm = t->base.comm;
	size_t len = RDMA_UD_RQ * (RDMA_UD_GRH + RDMA_UD_BUF) + RDMA_UD_SQ * RDMA_UD_BUF;
	struct ibv_qp_init_attr ia;
	struct ibv_qp_attr a;
	ibc_rdma_ud_addr_t ad;
	uint8_t enc[IBC_RDMA_UD_MAX];
	char key[160], err[256];
	ibcomm_status_t st;
	size_t n;

	st = ibc_rdma_pin_account(t, len, "the RDMA connect QP");
	if (st)
		return st;
	t->ud_pinned = len;
	if (posix_memalign((void **)&t->ud_mem, 4096, len)) {
		t->ud_mem = NULL;
		return ibc_err(comm, IBCOMM_ERR_NOMEM, "rank %d: out of memory for the RDMA connect QP", comm->rank);
	}
	memset(t->ud_mem, 0, len);
	t->ud_mr = ibv_reg_mr(t->pd, t->ud_mem, len, IBV_ACCESS_LOCAL_WRITE);
	if (!t->ud_mr)
		return ibc_err(comm, IBCOMM_ERR_SYSTEM, "rank %d: ibv_reg_mr of %zu bytes on %s failed: %s%s", comm->rank, len,
			       t->devname, strerror(errno),
			       errno == ENOMEM || errno == EPERM ? " (locked-memory limit too low? ulimit -l)" : "");
	memset(&ia, 0, sizeof(ia));
	ia.send_cq = t->cq;
	ia.recv_cq = t->cq;
	ia.qp_type = IBV_QPT_UD;
	ia.cap.max_send_wr = RDMA_UD_SQ;
	ia.cap.max_recv_wr = RDMA_UD_RQ;
	ia.cap.max_send_sge = 1;
	ia.cap.max_recv_sge = 1;
	t->ud_qp = ibv_create_qp(t->pd, &ia);
	if (!t->ud_qp)
		return ibc_err(comm, IBCOMM_ERR_TRANSPORT, "rank %d: ibv_create_qp (UD, for connections) on %s failed: %s",
			       comm->rank, t->devname, strerror(errno));
	memset(&a, 0, sizeof(a));
	a.qp_state = IBV_QPS_INIT;
	a.port_num = (uint8_t)t->port;
	a.qkey = IBC_RDMA_QKEY;
	if (ibv_modify_qp(t->ud_qp, &a, IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_QKEY))
		goto err_modify;
	memset(&a, 0, sizeof(a));
	a.qp_state = IBV_QPS_RTR;
	if (ibv_modify_qp(t->ud_qp, &a, IBV_QP_STATE))
		goto err_modify;
	memset(&a, 0, sizeof(a));
	a.qp_state = IBV_QPS_RTS;
	a.sq_psn = 0;
	if (ibv_modify_qp(t->ud_qp, &a, IBV_QP_STATE | IBV_QP_SQ_PSN))
		goto err_modify;
	for (unsigned i = 0; i < RDMA_UD_RQ; i++)
		if (ud_post_recv(t, i))
			return t->failed;
	memset(&ad, 0, sizeof(ad));
	ad.rank = (uint32_t)comm->rank;
	ad.link_layer = (uint8_t)t->link_layer;
	ad.lid = t->lid;
	ad.qpn = t->ud_qp->qp_num;
	memcpy(ad.gid, t->gid, 16);
	n = ibc_rdma_ud_encode(&ad, enc, sizeof(enc));
	snprintf(key, sizeof(key), "%s/rdma/ud/%d", comm->id, comm->rank);
	if (ibc_boot_put(comm->boot, key, enc, n, err, sizeof(err)))
		return ibc_err(comm, IBCOMM_ERR_RENDEZVOUS, "rank %d: publishing the RDMA address: %s", comm->rank, err);
	return IBCOMM_OK;

err_modify:
	return ibc_err(comm, IBCOMM_ERR_TRANSPORT, "rank %d: the UD QP 0x%x (for connections) on %s: %s", comm->rank,
		       t->ud_qp->qp_num, t->devname, strerror(errno));
}

