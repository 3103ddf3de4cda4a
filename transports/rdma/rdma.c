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
 * the first put() or get() naming the peer. Every QP must be in RTR before its peer writes
 * to it, and the old lazy design (publish the QP info in the rendezvous on first use, then
 * block in the rendezvous for the peer's) deadlocked: in a ring where every rank first
 * writes to its right neighbour, every rank blocked waiting for a peer that was itself
 * blocked, and nobody answered. That is why QPs were made eagerly, to every peer, at create.
 * The protocol now (the connection manager, "CM"):
 *   - create() makes one UD QP on the communicator's CQ and publishes its address under
 *     "<comm id>/rdma/ud/<rank>" before it connects to anybody (see the end).
 *   - The first put()/get() naming peer p with no QP for p ("NONE") reads p's UD address
 *     (the only rendezvous wait: for p's create() to have published it), makes the RC QP
 *     and p's region (INIT, receives posted: "OPEN") and sends p a connect message
 *     (rdma_proto.h): its QP info, flags 0.
 *   - Every wait of the transport (block(): put, get, wait, flush, drain) polls the CQ, so
 *     connect messages from any peer are answered whatever the rank is waiting for, as the
 *     TCP transport's waits keep accepting connections. A rank that gets a connect message
 *     makes its own QP for the sender if it has none, moves it to RTR and RTS with the
 *     sender's info ("RTR") and, unless the message says READY, answers with its own info
 *     and HAVE_YOURS (it is in RTR, connected to the sender's QP).
 *   - A rank is "READY" with p (may write to p) once p said HAVE_YOURS naming its QP, or
 *     once anything arrived from p on the RC QP (p is in RTS, so in RTR). Every answer
 *     carries HAVE_YOURS, so any message without READY is answered at most once: the
 *     exchange ends (REQ, REP, RTU; 4-6 messages when both open at once: each side has one
 *     QP per pair, so simultaneous opens simply pair up).
 *   - UD may drop a datagram: while a QP is not READY, block() resends its connect message
 *     (RDMA_RETX_MS, doubling up to RDMA_RETX_MAX_MS); duplicates are harmless.
 * With a job key (IBCOMM_JOB_KEY), every connect message carries an HMAC under it (cm_mac()),
 * and one without a valid MAC is dropped: a host without the key cannot make a rank connect
 * a QP to it. There is no nonce: a message captured on the fabric can be replayed, but it
 * only repeats what its sender said (the receiver ignores it once connected to another QP).
 * No wait depends on a rank doing anything but being inside some call of the communicator,
 * which a blocked put already needed (its data must be taken by a get): no new deadlock.
 * A put that may not wait returns IBC_AGAIN until READY; wait() returns when it is.
 * One exception to "on first use": every collective on more than two ranks first compares
 * the call signatures over the recursive-doubling pattern (lib/coll.c, lib/algo/rd.c), so
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
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <sys/resource.h>

#include <infiniband/verbs.h>

#include "auth.h"
#include "ibc.h"
#include "rdma_proto.h"
#include "rdma_info.h"

#define RDMA_NSLOTS 8
#define RDMA_MAX_CHUNK (64u * 1024)
#define RDMA_MIN_CHUNK (4u * 1024)
#define RDMA_MEM_BUDGET (64ull << 20) /* rings + staging of one communicator */
#define RDMA_WANT_INLINE 256
#define RDMA_SPIN_NS 5000              /* poll this long before sleeping */
#define RDMA_QP_TIMEOUT 19             /* 4.096 us * 2^19 = 2.1 s per try */
/* Not 7: rxe treats retry_cnt 7 as "retry forever" (rxe_comp.c decrements only when != 7),
 * and a write to a dead peer would then never complete. 6: about 15 s to give up. */
#define RDMA_RETRY_CNT 6
#define RDMA_RNR_RETRY 7               /* 7 = retry forever */
#define RDMA_MIN_RNR_TIMER 12
#define RDMA_DRAIN_MS 10000            /* destroy waits this long for writes in flight */

#define RDMA_UD_RQ 128                /* connect messages waiting to be read */
#define RDMA_UD_SQ 16
#define RDMA_UD_BUF 256               /* >= IBC_RDMA_CM_MAX */
#define RDMA_UD_GRH 40                /* in front of every UD receive */
#define RDMA_RETX_MS 100              /* first resend of an unanswered connect message */
#define RDMA_RETX_MAX_MS 1000

#define WRID_RECV (1ull << 47)
#define WRID_SEQ_MASK (WRID_RECV - 1)
#define WRID_UD 0xffffull             /* peer field (bits 48-63) of the UD QP's work requests */

enum { PEER_NONE, PEER_OPEN, PEER_RTR }; /* READY is `connected` (see the top) */

struct rdma_peer {
	int rank;
	struct ibv_qp *qp;
	bool connected;                /* READY: this rank may write to the peer */
	int state;                     /* PEER_*: how far the connection got */
	uint8_t *mem;                  /* ring | stage | cred_in | cred_out (top), from the QP on */
	struct ibv_mr *mr;
	size_t pinned;                 /* bytes of mem counted in the device's pinned total */
	struct ibv_ah *ah;             /* the peer's UD QP, for connect messages */
	uint32_t ud_qpn;
	uint64_t retx_at;              /* ibc_now_ms() of the next resend of the connect message */
	unsigned retx_ms;
	uint64_t t_start;              /* ibc_now_ms() of the first use (for the trace) */
	uint32_t psn;
	ibc_rdma_info_t remote;
	int path_mtu;
	/* writer side */
	uint64_t put_cnt[IBC_NCHAN];   /* chunks written */
	uint64_t credit[IBC_NCHAN];    /* the peer's released count */
	uint64_t *stage_seq;           /* [chan * nslots + slot]: WR sequence of its last write */
	uint64_t sq_posted, sq_done, sq_last_sig;
	uint64_t last_data_seq;        /* WR sequence of the last data write */
	/* receiver side */
	uint64_t arrived[IBC_NCHAN], consumed[IBC_NCHAN], released[IBC_NCHAN], credit_sent[IBC_NCHAN];
	unsigned rq_posted;
	uint64_t zc_last_seq;          /* WR sequence of the last zero-copy write (signaled) */
};

/* A device context and PD shared by the communicators of a process (see the top). */
struct rdma_dev {
	struct rdma_dev *next;
	pid_t pid;                     /* a forked child never uses its parent's contexts */
	int refs;                      /* under devs_lock */
	char want_dev[64];             /* the settings it was opened for */
	int want_port, want_gid;
	struct ibv_device **devs;
	struct ibv_context *ctx;
	struct ibv_pd *pd;
	char devname[64];
	int port, link_layer, gid_index, active_mtu;
	uint16_t lid;
	uint8_t gid[16];
	atomic_size_t pinned;          /* bytes registered for transports, all communicators */
};

struct rdma_tp {
	ibc_tp_t base;
	struct rdma_dev *dev;          /* shared; NULL while open_device() results are t's own */
	struct ibv_device **devs;      /* before dev exists (probe errors) */
	struct ibv_context *ctx;       /* dev's */
	struct ibv_pd *pd;             /* dev's */
	struct ibv_comp_channel *chan;
	struct ibv_cq *cq;
	size_t memlen;                 /* every peer's region together: what probe() checks */
	size_t peer_memlen;            /* one peer's region */
	/* connection manager (top) */
	struct ibv_qp *ud_qp;
	uint8_t *ud_mem;               /* RDMA_UD_RQ receive buffers, then RDMA_UD_SQ send buffers */
	struct ibv_mr *ud_mr;
	size_t ud_pinned;
	uint64_t ud_posted, ud_done;
	unsigned npending;             /* peers with a QP, not yet READY */
	char devname[64];
	int port;
	int link_layer;                /* IBC_RDMA_LL_* */
	uint16_t lid;
	int gid_index;
	uint8_t gid[16];
	int active_mtu;
	unsigned max_inline, sig_every, sq_depth, rq_depth, cqe;
	size_t stride;
	size_t off_stage, off_cred_in, off_cred_out, per_peer_ring;
	struct rdma_peer *peers;       /* indexed by rank; peers[self] unused */
	int pipefd[2];
	unsigned cq_unacked;
	bool cq_armed;
	bool woken;                    /* something arrived since the last wait() */
	ibcomm_status_t failed;        /* sticky first error */
	unsigned dead_gen;             /* ibc_boot_poll() counter last looked at */
	int dead_peer;                 /* first member the rendezvous reported dead, or -1 */
	char dead_why[320];
	uint64_t test_qp_error_after;  /* test hook, see test_force_qp_error(); 0: off */
	const void *zc_buf;            /* zero-copy source of the collective (set_zc_source) */
	size_t zc_len;
	struct ibv_mr *zc_handle;      /* its registration, NULL: none */
};

static inline struct rdma_tp *to_rdma(ibc_tp_t *tp)
{
	return (struct rdma_tp *)tp;
}

static inline uint8_t *ring_slot(struct rdma_tp *t, int peer, int chan, uint32_t slot)
{
	return t->peers[peer].mem + ((size_t)chan * t->base.nslots + slot) * t->stride;
}

static inline uint8_t *stage_slot(struct rdma_tp *t, int peer, int chan, uint32_t slot)
{
	return t->peers[peer].mem + t->per_peer_ring + ((size_t)chan * t->base.nslots + slot) * t->stride;
}

static inline uint64_t *cred_in(struct rdma_tp *t, int peer)
{
	return (uint64_t *)(t->peers[peer].mem + 2 * t->per_peer_ring);
}

static inline uint8_t *cred_out(struct rdma_tp *t, int peer)
{
	return t->peers[peer].mem + 2 * t->per_peer_ring + 64;
}

static const char *chan_name(int chan)
{
	return chan == IBC_CHAN_P2P ? "p2p" : "collective";
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

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
static ibcomm_status_t fail(struct rdma_tp *t, ibcomm_status_t st)
{
	if (!t->failed)
		t->failed = st;
	return st;
}

static ibcomm_status_t wc_error(struct rdma_tp *t, const struct ibv_wc *wc)
{
	struct ibcomm *comm = t->base.comm;
	int peer = (int)(wc->wr_id >> 48);
	char why[160];
	ibcomm_status_t st;

	if (t->failed)
		return t->failed; /* follow-on (flush) errors: keep the first message */
	st = (wc->status == IBV_WC_RETRY_EXC_ERR || wc->status == IBV_WC_RNR_RETRY_EXC_ERR) ? IBCOMM_ERR_PEER
											      : IBCOMM_ERR_TRANSPORT;
	/* The rendezvous may know why: the peer died (the hint's guesses are then moot). */
	if (comm->boot && peer >= 0 && peer < comm->size && peer != comm->rank) {
		ibc_boot_poll(comm->boot, true);
		if (ibc_boot_dead(comm->boot, ibc_world_rank(comm, peer), why, sizeof(why))) {
			ibc_err(comm, IBCOMM_ERR_PEER, "rank %d: RDMA %s peer %d failed on %s QP 0x%x: %s: %s",
				comm->rank, (wc->wr_id & WRID_RECV) ? "receive from" : "write to", peer, t->devname,
				wc->qp_num, ibv_wc_status_str(wc->status), why);
			return fail(t, IBCOMM_ERR_PEER);
		}
	}
	ibc_err(comm, st, "rank %d: RDMA %s peer %d failed on %s QP 0x%x: %s (vendor error 0x%x): %s",
		comm->rank, (wc->wr_id & WRID_RECV) ? "receive from" : "write to", peer, t->devname, wc->qp_num,
		ibv_wc_status_str(wc->status), wc->vendor_err, wc_hint(wc->status));
	return fail(t, st);
}

/*
 * Failure notices of the rendezvous (ibc.h): once a member of this communicator is reported
 * dead, every call fails naming it (the TCP transport does the same), also on ranks that wait
 * for another peer. `readable`: the rendezvous connection polled readable. `op`, `peer` and
 * `chan` (peer < 0: none) say what this rank was doing, for the message.
 */
static int notices_check(struct rdma_tp *t, bool readable, const char *op, int peer, int chan)
{
	struct ibcomm *comm = t->base.comm;
	char doing[128], qp[48] = "";
	unsigned gen;

	if (t->dead_peer < 0) {
		if (!comm->boot)
			return 0;
		gen = ibc_boot_poll(comm->boot, readable);
		if (gen == t->dead_gen)
			return 0;
		t->dead_gen = gen;
		t->dead_peer = ibc_dead_rank(comm, 0, t->dead_why, sizeof(t->dead_why));
		if (t->dead_peer < 0)
			return 0;
	}
	if (peer >= 0)
		snprintf(doing, sizeof(doing), "%s (peer %d, %s channel)", op, peer, chan_name(chan));
	else
		snprintf(doing, sizeof(doing), "%s", op);
	if (t->peers && t->peers[t->dead_peer].qp)
		snprintf(qp, sizeof(qp), ", QP 0x%x to peer %d", t->peers[t->dead_peer].qp->qp_num, t->dead_peer);
	ibc_err(comm, IBCOMM_ERR_PEER, "rank %d: RDMA %s on %s%s: peer %d is gone: %s", comm->rank, doing, t->devname,
		qp, t->dead_peer, t->dead_why);
	return fail(t, IBCOMM_ERR_PEER);
}

/* ---- posting ---- */

static int post_recvs(struct rdma_tp *t, struct rdma_peer *p)
{
	while (p->rq_posted < t->rq_depth) {
		struct ibv_recv_wr wr = { .wr_id = ((uint64_t)p->rank << 48) | WRID_RECV, .num_sge = 0 }, *bad;
		int rc = ibv_post_recv(p->qp, &wr, &bad);

		if (rc) {
			ibc_err(t->base.comm, IBCOMM_ERR_TRANSPORT, "rank %d: ibv_post_recv to peer %d (QP 0x%x) failed: %s",
				t->base.comm->rank, p->rank, p->qp->qp_num, strerror(rc));
			return fail(t, IBCOMM_ERR_TRANSPORT);
		}
		p->rq_posted++;
	}
	return 0;
}

static bool sq_room(const struct rdma_tp *t, const struct rdma_peer *p)
{
	return p->sq_posted - p->sq_done < t->sq_depth;
}

/* Posts one WRITE WITH IMM on p's QP; signals every sig_every WRs. Caller checked sq_room. */
static int post_write(struct rdma_tp *t, struct rdma_peer *p, struct ibv_sge *sge, int nsge, bool inl,
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
		return fail(t, IBCOMM_ERR_TRANSPORT);
	}
	p->sq_posted = seq;
	if (seq_out)
		*seq_out = seq;
	return 0;
}

/*
 * Sends the released count of p's channel chan back to the writer, if there is room. With
 * `force` it is sent even when unchanged, signaled (see drain()).
 */
static int send_credit(struct rdma_tp *t, struct rdma_peer *p, int chan, bool force)
{
	uint8_t *src;
	struct ibv_sge sge;
	ibc_wbuf_t w;

	if ((!force && p->credit_sent[chan] == p->released[chan]) || !sq_room(t, p))
		return 0;
	src = cred_out(t, p->rank) + chan * 8;
	w = ibc_wbuf(src, 8);
	ibc_w_u64(&w, p->released[chan]);
	sge = (struct ibv_sge){ .addr = (uintptr_t)src, .length = 8, .lkey = p->mr->lkey };
	if (post_write(t, p, &sge, 1, t->max_inline >= 8, p->remote.credit_addr + (uint64_t)chan * 8,
		       p->remote.credit_rkey, ibc_rdma_imm_credit(chan, p->released[chan]), force, NULL))
		return t->failed;
	p->credit_sent[chan] = p->released[chan];
	return 0;
}

/* ---- completions ---- */

/* the connection manager (after the setup functions it uses) */
static int ud_wc(struct rdma_tp *t, const struct ibv_wc *wc);
static int cm_tick(struct rdma_tp *t);
static void peer_ready(struct rdma_tp *t, struct rdma_peer *p);
static ibcomm_status_t peer_start(struct rdma_tp *t, struct rdma_peer *p, ibc_deadline_t dl);

static int handle_wc(struct rdma_tp *t, const struct ibv_wc *wc)
{
	int peer = (int)(wc->wr_id >> 48);
	struct rdma_peer *p;
	uint32_t imm;
	int chan;

	if ((wc->wr_id >> 48) == WRID_UD)
		return ud_wc(t, wc);
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
		peer_ready(t, p); /* the peer wrote: it is in RTS, so in RTR */
	if (wc->opcode != IBV_WC_RECV_RDMA_WITH_IMM || !(wc->wc_flags & IBV_WC_WITH_IMM)) {
		ibc_err(t->base.comm, IBCOMM_ERR_TRANSPORT, "rank %d: unexpected completion (opcode %d) from peer %d on QP 0x%x",
			t->base.comm->rank, wc->opcode, peer, wc->qp_num);
		return fail(t, IBCOMM_ERR_TRANSPORT);
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
			return fail(t, IBCOMM_ERR_TRANSPORT);
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
		return fail(t, IBCOMM_ERR_TRANSPORT);
	}
	p->arrived[chan]++;
	return 0;
}

/* Polls the CQ dry; returns the number of completions handled, or a negative status. */
static int progress(struct rdma_tp *t)
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
			return fail(t, IBCOMM_ERR_TRANSPORT);
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
			if (p->rq_posted < t->rq_depth / 2 && post_recvs(t, p))
				return t->failed;
			for (int c = 0; c < IBC_NCHAN; c++)
				if (send_credit(t, p, c, false))
					return t->failed;
		}
	}
	return total;
}

static ibcomm_status_t check_abort(struct rdma_tp *t)
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
static int block(struct rdma_tp *t, ibc_deadline_t dl, const char *op, int peer, int chan)
{
	struct pollfd pfd[3];
	uint64_t spin_end;
	int n, left, retx, rdv_fd = -1;

	if (check_abort(t))
		return IBCOMM_ERR_ABORTED;
	retx = cm_tick(t); /* resends unanswered connect messages; ms to the next resend */
	n = notices_check(t, false, op, peer, chan);
	if (n)
		return n;
	n = progress(t);
	if (n)
		return n < 0 ? n : 0;
	spin_end = now_ns() + RDMA_SPIN_NS;
	do {
		n = progress(t);
		if (n)
			return n < 0 ? n : 0;
	} while (now_ns() < spin_end);
	if (!t->cq_armed) {
		if (ibv_req_notify_cq(t->cq, 0)) {
			ibc_err(t->base.comm, IBCOMM_ERR_TRANSPORT, "rank %d: ibv_req_notify_cq on %s failed",
				t->base.comm->rank, t->devname);
			return fail(t, IBCOMM_ERR_TRANSPORT);
		}
		t->cq_armed = true;
		n = progress(t); /* what completed before arming raises no event */
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
	n = poll(pfd, 3, left);
	if (n < 0 && errno != EINTR) {
		ibc_err(t->base.comm, IBCOMM_ERR_SYSTEM, "rank %d: poll on the RDMA completion channel failed: %s",
			t->base.comm->rank, strerror(errno));
		return fail(t, IBCOMM_ERR_SYSTEM);
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
	}
	if (check_abort(t))
		return IBCOMM_ERR_ABORTED;
	if (n > 0 && pfd[2].revents) {
		n = notices_check(t, true, op, peer, chan);
		if (n)
			return n;
	}
	if (dl && ibc_now_ms() >= dl)
		return IBCOMM_ERR_TIMEOUT;
	return 0;
}

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
	if (notices_check(t, false, op, peer, chan))
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

static void rdma_set_zc_source(ibc_tp_t *tp, const void *buf, size_t len, void *handle)
{
	struct rdma_tp *t = to_rdma(tp);

	t->zc_buf = handle ? buf : NULL;
	t->zc_len = handle ? len : 0;
	t->zc_handle = handle;
}

static void *rdma_reg(ibc_tp_t *tp, void *addr, size_t len, ibcomm_status_t *st)
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

static void rdma_dereg(ibc_tp_t *tp, void *h)
{
	struct ibv_mr *mr = h;
	int rc;

	rc = ibv_dereg_mr(mr);
	if (rc)
		ibc_cwarn(tp->comm, "rank %d: ibv_dereg_mr of a registration of %s failed: %s", tp->comm->rank,
			 to_rdma(tp)->devname, strerror(rc));
}

/* Waits for the completion of every zero-copy write (they are signaled). */
static ibcomm_status_t rdma_flush(ibc_tp_t *tp, ibc_deadline_t dl)
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
			rc = block(t, dl, "flush (zero-copy writes)", r, IBC_CHAN_COLL);
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

static int rdma_put(ibc_tp_t *tp, int peer, int chan, uint32_t tag, const void *buf, size_t len, bool wait,
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
		rc = peer_start(t, p, dl);
		if (rc)
			return rc;
		while (!p->connected) {
			rc = progress(t);
			if (rc < 0)
				return rc;
			if (p->connected)
				break;
			if (!wait)
				return IBC_AGAIN; /* wait() returns once it is READY */
			rc = block(t, dl, "put (connecting)", peer, chan);
			if (rc == IBCOMM_ERR_TIMEOUT)
				return ibc_err(comm, IBCOMM_ERR_TIMEOUT,
					       "rank %d: timed out connecting to peer %d over RDMA (%s): its UD QP 0x%x did not answer the connect messages (is peer %d still in this communicator, and inside a call of it?)",
					       comm->rank, peer, t->devname, p->ud_qpn, peer);
			if (rc < 0)
				return rc;
		}
	}
	while (p->put_cnt[chan] - p->credit[chan] >= nslots) {
		rc = progress(t);
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
		rc = block(t, dl, "put", peer, chan);
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
		rc = block(t, dl, "put", peer, chan);
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
	rc = post_write(t, p, sge, nsge, inl, p->remote.ring_addr + ((uint64_t)chan * p->remote.nslots + slot) * p->remote.stride,
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
	rc = progress(t);
	return rc < 0 ? rc : 0;
}

static int rdma_get(ibc_tp_t *tp, int peer, int chan, ibc_chunk_t *chunk, bool wait, ibc_deadline_t dl)
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
		rc = peer_start(t, p, dl); /* either side's first use connects the pair */
		if (rc)
			return rc;
	}
	while (p->consumed[chan] == p->arrived[chan]) {
		rc = progress(t);
		if (rc < 0)
			return rc;
		if (p->consumed[chan] != p->arrived[chan])
			break;
		if (!wait)
			return IBC_AGAIN;
		rc = block(t, dl, "get", peer, chan);
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
		return fail(t, IBCOMM_ERR_TRANSPORT);
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

static ibcomm_status_t rdma_release(ibc_tp_t *tp, ibc_chunk_t *c)
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
	if (send_credit(t, p, c->chan, false))
		return t->failed;
	/* With a full send queue the credit goes out from a later progress(). */
	return IBCOMM_OK;
}

static ibcomm_status_t rdma_wait(ibc_tp_t *tp, ibc_deadline_t dl)
{
	struct rdma_tp *t = to_rdma(tp);
	int rc;

	if (t->failed)
		return t->failed;
	for (;;) {
		rc = check_abort(t);
		if (rc)
			return rc;
		rc = progress(t);
		if (rc < 0)
			return rc;
		if (t->woken) {
			t->woken = false;
			return IBCOMM_OK;
		}
		rc = block(t, dl, "wait for data or credits from any peer", -1, 0);
		if (rc == IBCOMM_ERR_TIMEOUT)
			return ibc_err(tp->comm, IBCOMM_ERR_TIMEOUT, "rank %d: timed out waiting for data or credits from any peer over RDMA (%s)",
				       tp->comm->rank, t->devname);
		if (rc < 0)
			return rc;
	}
}

static void rdma_interrupt(ibc_tp_t *tp)
{
	struct rdma_tp *t = to_rdma(tp);
	int saved = errno; /* async-signal-safe: the interrupted code's errno is left as it was */
	char c = 1;
	ssize_t n;

	n = write(t->pipefd[1], &c, 1); /* a full pipe (EAGAIN) already wakes */
	(void)n;
	errno = saved;
}

/* ---- setup ---- */

/*
 * Opens the device and port the RDMA transport uses: ibc_rdma_choose (rdma_choice.c) decides
 * on the host as ibc_rdma_info_query reads it, the same decision ibcomm_ping reports. On
 * Ethernet (RoCE) it also sets the GID (t->gid_index, t->gid).
 */
static ibcomm_status_t open_device(struct rdma_tp *t, struct ibv_port_attr *pa)
{
	struct ibcomm *comm = t->base.comm;
	ibc_rdma_sys_t *sys = calloc(1, sizeof(*sys));
	ibc_rdma_choice_t c;
	const char *name;
	char why[400];
	ibcomm_status_t st;
	int n = 0;

	if (!sys)
		return ibc_err(comm, IBCOMM_ERR_NOMEM, "rank %d: out of memory listing RDMA devices", comm->rank);
	ibc_rdma_info_query(sys, comm->set.gid_index);
	st = ibc_rdma_choose(sys, comm->set.device, comm->set.ib_port, comm->set.gid_index, &c, why, sizeof(why));
	if (st) {
		free(sys);
		return ibc_err(comm, st, "rank %d: %s", comm->rank, why);
	}
	name = sys->devs[c.dev].name;
	t->devs = ibv_get_device_list(&n);
	for (int i = 0; t->devs && i < n && !t->ctx; i++)
		if (!strcmp(ibv_get_device_name(t->devs[i]), name))
			t->ctx = ibv_open_device(t->devs[i]);
	if (!t->ctx) {
		st = ibc_err(comm, IBCOMM_ERR_SYSTEM, "rank %d: cannot open RDMA device %s: %s", comm->rank, name,
			     strerror(errno ? errno : ENODEV));
		free(sys);
		return st;
	}
	if (ibv_query_port(t->ctx, (uint8_t)c.port, pa) || pa->state != IBV_PORT_ACTIVE) {
		st = ibc_err(comm, IBCOMM_ERR_UNSUPPORTED, "rank %d: port %d of RDMA device %s went down", comm->rank,
			     c.port, name);
		free(sys);
		return st;
	}
	t->port = c.port;
	snprintf(t->devname, sizeof(t->devname), "%s:%d", name, t->port);
	if (c.link_layer == IBC_RDMA_LL_ETH) {
		t->gid_index = c.gid_index;
		memcpy(t->gid, c.gid, 16);
	}
	free(sys);
	return IBCOMM_OK;
}

/*
 * Sizes the rings: RDMA_NSLOTS x RDMA_MAX_CHUNK, smaller chunks for large communicators
 * (within RDMA_MEM_BUDGET and IBCOMM_MEM_LIMIT); IBCOMM_RDMA_CHUNK / IBCOMM_RDMA_SLOTS
 * (tuning, tests) set them as given, and fail when over IBCOMM_MEM_LIMIT.
 */
static ibcomm_status_t choose_geometry(struct rdma_tp *t)
{
	struct ibcomm *comm = t->base.comm;
	size_t npeers = (size_t)(comm->size > 1 ? comm->size - 1 : 1);
	unsigned long chunk, nslots, dflt_chunk = RDMA_MAX_CHUNK, dflt_slots = RDMA_NSLOTS;
	uint64_t budget = IBC_MIN(RDMA_MEM_BUDGET, ibc_mem_limit(comm));
	char how[200];
	ibcomm_status_t st;

	while (dflt_chunk > RDMA_MIN_CHUNK &&
	       npeers * 2 * IBC_NCHAN * dflt_slots * (dflt_chunk + IBC_RDMA_HDR) > budget)
		dflt_chunk /= 2;
	while (dflt_slots > 2 && npeers * 2 * IBC_NCHAN * dflt_slots * (dflt_chunk + IBC_RDMA_HDR) > budget)
		dflt_slots /= 2;
	/* IBCOMM_RDMA_CHUNK / IBCOMM_RDMA_SLOTS: read and checked by config.c */
	chunk = comm->set.rdma_chunk ? comm->set.rdma_chunk : dflt_chunk;
	nslots = comm->set.rdma_slots ? comm->set.rdma_slots : dflt_slots;
	chunk = (chunk + 63) & ~63ul; /* slots stay 64-byte aligned */
	/* rings and staging (one of each per peer), and the credit words: all registered (pinned).
	 * Regions are made lazily, per peer talked to: this is the worst case, every peer connected. */
	snprintf(how, sizeof(how), "%zu peers x 2 (rings, staging) x %d channels x %lu slots x %lu bytes, + credits",
		 npeers, IBC_NCHAN, nslots, chunk + IBC_RDMA_HDR);
	st = ibc_mem_check(comm, "RDMA", 2 * npeers * IBC_NCHAN * nslots * (chunk + IBC_RDMA_HDR) + 2 * npeers * 64,
			   how, "IBCOMM_RDMA_CHUNK or IBCOMM_RDMA_SLOTS", comm->set.rdma_chunk || comm->set.rdma_slots);
	if (st)
		return st;
	t->base.max_chunk = chunk;
	t->base.nslots = (unsigned)nslots;
	t->stride = chunk + IBC_RDMA_HDR;
	t->per_peer_ring = (size_t)IBC_NCHAN * nslots * t->stride;
	t->off_stage = npeers * t->per_peer_ring;
	t->off_cred_in = 2 * t->off_stage;
	t->off_cred_out = t->off_cred_in + npeers * 64;
	t->memlen = t->off_cred_out + npeers * 64;
	t->sig_every = nslots / 2 ? nslots / 2 : 1; /* <= nslots: see put() staging reuse */
	t->sq_depth = 4 * nslots + 2 * t->sig_every;
	t->rq_depth = 4 * nslots + 8;
	return IBCOMM_OK;
}

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
	return post_recvs(t, p) ? t->failed : IBCOMM_OK;
}

/* This rank's QP info for p (sent in connect messages). */
static void info_fill(struct rdma_tp *t, struct rdma_peer *p, ibc_rdma_info_t *in)
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
static ibcomm_status_t connect_peer(struct rdma_tp *t, struct rdma_peer *p, const ibc_rdma_info_t *rp)
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

/* ---- the shared device (top) ---- */

static pthread_mutex_t devs_lock = PTHREAD_MUTEX_INITIALIZER;
static struct rdma_dev *devs_open; /* under devs_lock */

static void dev_copy(struct rdma_tp *t, const struct rdma_dev *d)
{
	t->dev = (struct rdma_dev *)d;
	t->ctx = d->ctx;
	t->pd = d->pd;
	snprintf(t->devname, sizeof(t->devname), "%s", d->devname);
	t->port = d->port;
	t->link_layer = d->link_layer;
	t->lid = d->lid;
	t->gid_index = d->gid_index;
	memcpy(t->gid, d->gid, 16);
	t->active_mtu = d->active_mtu;
}

/*
 * Takes a reference on the process's open device for comm's settings (IBCOMM_DEVICE, port,
 * GID index), opening it (device, port, GID, PD) when there is none.
 */
static ibcomm_status_t dev_acquire(struct rdma_tp *t)
{
	struct ibcomm *comm = t->base.comm;
	struct ibv_port_attr pa;
	struct rdma_dev *d;
	ibcomm_status_t st;

	pthread_mutex_lock(&devs_lock);
	for (d = devs_open; d; d = d->next)
		if (d->pid == getpid() && strcmp(d->want_dev, comm->set.device) == 0 &&
		    d->want_port == comm->set.ib_port && d->want_gid == comm->set.gid_index)
			break;
	if (d) {
		d->refs++;
		pthread_mutex_unlock(&devs_lock);
		dev_copy(t, d);
		return IBCOMM_OK;
	}
	st = open_device(t, &pa);
	if (st)
		goto out;
	t->link_layer = pa.link_layer == IBV_LINK_LAYER_INFINIBAND ? IBC_RDMA_LL_IB : IBC_RDMA_LL_ETH;
	t->lid = pa.lid;
	t->active_mtu = pa.active_mtu;
	if (t->link_layer != IBC_RDMA_LL_ETH) { /* RoCE: open_device chose the GID */
		union ibv_gid g;

		/* InfiniBand: addressed by LID, no GRH; the GID is only reported. */
		t->gid_index = comm->set.gid_index >= 0 ? comm->set.gid_index : 0;
		if (ibv_query_gid(t->ctx, (uint8_t)t->port, t->gid_index, &g) == 0)
			memcpy(t->gid, g.raw, 16);
	}
	t->pd = ibv_alloc_pd(t->ctx);
	if (!t->pd) {
		st = ibc_err(comm, IBCOMM_ERR_TRANSPORT, "rank %d: ibv_alloc_pd on %s failed: %s", comm->rank, t->devname,
			     strerror(errno));
		goto out;
	}
	d = calloc(1, sizeof(*d));
	if (!d) {
		st = ibc_err(comm, IBCOMM_ERR_NOMEM, "rank %d: out of memory opening %s", comm->rank, t->devname);
		goto out;
	}
	d->pid = getpid();
	d->refs = 1;
	snprintf(d->want_dev, sizeof(d->want_dev), "%s", comm->set.device);
	d->want_port = comm->set.ib_port;
	d->want_gid = comm->set.gid_index;
	d->devs = t->devs;
	d->ctx = t->ctx;
	d->pd = t->pd;
	snprintf(d->devname, sizeof(d->devname), "%s", t->devname);
	d->port = t->port;
	d->link_layer = t->link_layer;
	d->lid = t->lid;
	d->gid_index = t->gid_index;
	memcpy(d->gid, t->gid, 16);
	d->active_mtu = t->active_mtu;
	atomic_init(&d->pinned, 0);
	d->next = devs_open;
	devs_open = d;
	t->devs = NULL; /* d owns them now */
	t->dev = d;
out:
	pthread_mutex_unlock(&devs_lock);
	return st;
}

static void dev_release(struct rdma_dev *d)
{
	struct rdma_dev **pp;

	pthread_mutex_lock(&devs_lock);
	if (--d->refs > 0) {
		pthread_mutex_unlock(&devs_lock);
		return;
	}
	for (pp = &devs_open; *pp; pp = &(*pp)->next)
		if (*pp == d) {
			*pp = d->next;
			break;
		}
	pthread_mutex_unlock(&devs_lock);
	ibv_dealloc_pd(d->pd);
	ibv_close_device(d->ctx);
	ibv_free_device_list(d->devs);
	free(d);
}

/*
 * Counts bytes this transport is about to pin in the device's total (every communicator on
 * it), refused with a clear message when the total would pass the locked-memory limit.
 */
static ibcomm_status_t pin_account(struct rdma_tp *t, size_t bytes, const char *what)
{
	struct ibcomm *comm = t->base.comm;
	size_t before = atomic_fetch_add(&t->dev->pinned, bytes);
	struct rlimit rl;

	if (geteuid() != 0 && getrlimit(RLIMIT_MEMLOCK, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
	    before + bytes > rl.rlim_cur) {
		atomic_fetch_sub(&t->dev->pinned, bytes);
		return ibc_err(comm, IBCOMM_ERR_NOMEM,
			       "rank %d: %s needs %zu KiB of locked memory on %s, where the communicators of this process already pin %zu KiB, and the limit is %llu KiB (raise it: ulimit -l unlimited, or memlock in /etc/security/limits.conf)",
			       comm->rank, what, bytes / 1024, t->devname, before / 1024,
			       (unsigned long long)rl.rlim_cur / 1024);
	}
	return IBCOMM_OK;
}

/* ---- per-peer QPs and the connection manager (top) ---- */

/* Makes p's region and RC QP (INIT, receives posted): NONE -> OPEN. */
static ibcomm_status_t peer_open(struct rdma_tp *t, struct rdma_peer *p)
{
	struct ibcomm *comm = t->base.comm;
	char what[64];
	ibcomm_status_t st;

	if (!p->t_start)
		p->t_start = ibc_now_ms();
	snprintf(what, sizeof(what), "the connection to peer %d", p->rank);
	st = pin_account(t, t->peer_memlen, what);
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

static void peer_close(struct rdma_tp *t, struct rdma_peer *p)
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

static void peer_ready(struct rdma_tp *t, struct rdma_peer *p)
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
	info_fill(t, p, &m.info);
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
static int cm_tick(struct rdma_tp *t)
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

/* A connect message from the UD QP (sender's UD QP src_qp): see the protocol at the top. */
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
			return fail(t, st);
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
		st = peer_open(t, p);
		if (st)
			return fail(t, st);
	}
	if (p->state == PEER_OPEN) {
		st = connect_peer(t, p, &m.info);
		if (st)
			return fail(t, st);
	} else if (m.info.qpn != p->remote.qpn) {
		ibc_cinfo(comm, "rank %d: ignoring an RDMA connect message from peer %d for its QP 0x%x (connected to 0x%x)",
			 comm->rank, p->rank, m.info.qpn, p->remote.qpn);
		return 0;
	}
	if ((m.flags & IBC_RDMA_CM_HAVE_YOURS) && m.paired_qpn == p->qp->qp_num)
		peer_ready(t, p);
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
		return fail(t, IBCOMM_ERR_TRANSPORT);
	}
	return 0;
}

/* A completion of the UD QP. A lost or failed connect message only delays: never fatal. */
static int ud_wc(struct rdma_tp *t, const struct ibv_wc *wc)
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
static ibcomm_status_t peer_start(struct rdma_tp *t, struct rdma_peer *p, ibc_deadline_t dl)
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
		if (progress(t) < 0)
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
	st = peer_open(t, p);
	if (st)
		return st;
	cm_send(t, p);
	ibc_ctrace(comm, "rank %d: RDMA connect to peer %d: its address in %llu ms, QP and %zu KiB registered in %llu ms",
		  comm->rank, p->rank, (unsigned long long)(t_addr - p->t_start), t->peer_memlen / 1024,
		  (unsigned long long)(ibc_now_ms() - t_addr));
	return IBCOMM_OK;
}

/* One token to peer and one from it (the create barrier), on the collective channel. */
static int token(struct rdma_tp *t, int peer, bool send, ibc_deadline_t dl)
{
	ibc_chunk_t c;
	int rc;

	if (send)
		return rdma_put(&t->base, peer, IBC_CHAN_COLL, UINT32_MAX, "", 0, true, dl);
	rc = rdma_get(&t->base, peer, IBC_CHAN_COLL, &c, true, dl);
	if (rc)
		return rc;
	if (c.tag != UINT32_MAX || c.len)
		return ibc_err(t->base.comm, IBCOMM_ERR_TRANSPORT, "rank %d: RDMA create: peer %d sent a chunk (tag 0x%x) where the create barrier's token was due",
			       t->base.comm->rank, peer, c.tag);
	return rdma_release(&t->base, &c);
}

/*
 * A barrier over the recursive-doubling partners, at the end of create(): the ranks leave
 * create() together, as they did when create() connected every peer, so that the first
 * call does not carry the skew of the others' setup (a slow rank's registrations). The
 * tokens are not the caller's traffic: the counters are put back.
 */
static ibcomm_status_t create_barrier(struct rdma_tp *t, int p2, ibc_deadline_t dl)
{
	int n = t->base.comm->size, r = t->base.comm->rank, rc = 0;
	ibc_tp_counters_t saved = t->base.cnt;

	if (r >= p2) {
		rc = token(t, r - p2, true, dl);
		if (!rc)
			rc = token(t, r - p2, false, dl);
	} else {
		if (r + p2 < n)
			rc = token(t, r + p2, false, dl);
		for (int mask = 1; mask < p2 && !rc; mask *= 2) {
			rc = token(t, r ^ mask, true, dl);
			if (!rc)
				rc = token(t, r ^ mask, false, dl);
		}
		if (!rc && r + p2 < n)
			rc = token(t, r + p2, true, dl);
	}
	saved.qps = t->base.cnt.qps;
	saved.connects = t->base.cnt.connects;
	t->base.cnt = saved;
	return rc < 0 ? rc : IBCOMM_OK;
}

/*
 * Connects the recursive-doubling partners of this rank (lib/algo/rd.c: the ranks r >= p2
 * fold into r - p2, the others exchange with r ^ 2^k), which the signature agreement of
 * every collective on more than two ranks uses first (top): starts them all, then waits
 * until each is READY.
 */
static ibcomm_status_t preopen(struct rdma_tp *t, ibc_deadline_t dl)
{
	struct ibcomm *comm = t->base.comm;
	int n = comm->size, r = comm->rank, p2 = 1, rc;
	ibcomm_status_t st = IBCOMM_OK;

	if (n < 2)
		return IBCOMM_OK;
	while (p2 * 2 <= n)
		p2 *= 2;
	if (r >= p2)
		st = peer_start(t, &t->peers[r - p2], dl);
	if (r < p2 && r + p2 < n)
		st = peer_start(t, &t->peers[r + p2], dl);
	for (int mask = 1; r < p2 && mask < p2 && !st; mask *= 2)
		st = peer_start(t, &t->peers[r ^ mask], dl);
	for (int q = 0; q < n && !st; q++) {
		struct rdma_peer *p = &t->peers[q];

		while (!st && p->qp && !p->connected) {
			rc = block(t, dl, "create (connecting the recursive-doubling partners)", q, IBC_CHAN_COLL);
			if (rc == IBCOMM_ERR_TIMEOUT)
				return ibc_err(comm, IBCOMM_ERR_TIMEOUT,
					       "rank %d: timed out connecting to peer %d over RDMA (%s) at create: its UD QP 0x%x did not answer (did peer %d create this communicator, with RDMA?)",
					       comm->rank, q, t->devname, p->ud_qpn, q);
			if (rc < 0)
				return rc;
		}
	}
	return st ? st : create_barrier(t, p2, dl);
}

/* The UD QP of the connection manager, its buffers, and its address in the rendezvous. */
static ibcomm_status_t ud_open(struct rdma_tp *t)
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

	st = pin_account(t, len, "the RDMA connect QP");
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
			if (p->sq_last_sig < p->last_data_seq && send_credit(t, p, 0, true))
				break;
		}
		if (pending && block(t, dl, "destroy (waiting for writes in flight)", -1, 0) < 0)
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
			peer_close(t, &t->peers[r]);
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
		dev_release(t->dev);
	} else { /* what dev_acquire() opened before it failed */
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
	st = dev_acquire(t);
	if (!st)
		st = choose_geometry(t);
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
	t->dead_peer = -1;
	t->test_qp_error_after = comm->set.test_qp_error_after; /* test hook: test_force_qp_error() */
	if (comm->size >= (int)WRID_UD) {
		st = ibc_err(comm, IBCOMM_ERR_UNSUPPORTED, "rank %d: the RDMA transport handles at most %d ranks, not %d",
			     comm->rank, (int)WRID_UD - 1, comm->size);
		goto err_free;
	}
	st = dev_acquire(t); /* the parent's (split, dup) or another communicator's, if open */
	if (st)
		goto err_free;
	st = choose_geometry(t);
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
	/* no QP to any peer yet: the first put() or get() naming one connects it (top) */
	st = ud_open(t);
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
	.put = rdma_put,
	.get = rdma_get,
	.release = rdma_release,
	.wait = rdma_wait,
	.interrupt = rdma_interrupt,
	.reg = rdma_reg,
	.dereg = rdma_dereg,
	.set_zc_source = rdma_set_zc_source,
	.flush = rdma_flush,
};
