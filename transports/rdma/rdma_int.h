/*
 * The RDMA transport's private definitions, shared by its files (not installed; tests do not
 * include it):
 *   rdma.c          create, probe, destroy, the ops table; the overview of the transport
 *   rdma_ops.c      the data ops: put, get, release, wait, interrupt, reg, dereg, flush,
 *                   set_zc_source
 *   rdma_progress.c completions: CQ polling, the completion channel and sleeping (block),
 *                   work-completion errors, failure notices of the rendezvous
 *   rdma_qp.c       a peer's RC QP and region: INIT, RTR, RTS; posting writes, receives, credits
 *   rdma_cm_ud.c    the connection manager (UD QP, connect messages, job-key MAC): its protocol
 *   rdma_dev.c      the device shared by the communicators of a process, pinned-memory
 *                   accounting, the ring geometry
 * The wire formats are in rdma_proto.h; the choice of device, port and GID in rdma_choice.c.
 */
#ifndef IBC_RDMA_INT_H
#define IBC_RDMA_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include <infiniband/verbs.h>

#include "ibc.h"
#include "rdma_proto.h"

#define RDMA_NSLOTS 8
#define RDMA_MAX_CHUNK (64u * 1024)
#define RDMA_MIN_CHUNK (4u * 1024)
#define RDMA_MEM_BUDGET (64ull << 20) /* rings + staging of one communicator */
#define RDMA_WANT_INLINE 256
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

enum { PEER_NONE, PEER_OPEN, PEER_RTR }; /* READY is `connected` (rdma_cm_ud.c) */

struct rdma_peer {
	int rank;
	struct ibv_qp *qp;
	bool connected;                /* READY: this rank may write to the peer */
	int state;                     /* PEER_*: how far the connection got */
	uint8_t *mem;                  /* ring | stage | cred_in | cred_out (rdma.c, top), from the QP on */
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

/* A device context and PD shared by the communicators of a process (rdma.c, top; rdma_dev.c). */
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
	struct rdma_dev *dev;          /* shared; NULL while open_device() results (rdma_dev.c) are t's own */
	struct ibv_device **devs;      /* before dev exists (probe errors) */
	struct ibv_context *ctx;       /* dev's */
	struct ibv_pd *pd;             /* dev's */
	struct ibv_comp_channel *chan;
	struct ibv_cq *cq;
	size_t memlen;                 /* every peer's region together: what probe() checks */
	size_t peer_memlen;            /* one peer's region */
	/* connection manager (rdma_cm_ud.c) */
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
	unsigned credit_batch;         /* releases per credit write (rdma_qp.c, credit_due()) */
	size_t stride;
	size_t off_stage, off_cred_in, off_cred_out, per_peer_ring;
	struct rdma_peer *peers;       /* indexed by rank; peers[self] unused */
	int pipefd[2];
	unsigned cq_unacked;
	bool cq_armed;
	bool woken;                    /* something arrived since the last wait() */
	int extra_fd;                  /* wait_fd(): also polled by ibc_rdma_block (never read); -1: none */
	ibcomm_status_t failed;        /* sticky first error */
	struct ibc_notices notes;      /* members the rendezvous reported dead */
	uint64_t test_qp_error_after;  /* test hook, see test_force_qp_error() (rdma_ops.c); 0: off */
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

static inline const char *chan_name(int chan)
{
	return chan == IBC_CHAN_P2P ? "p2p" : "collective";
}

static inline uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline bool sq_room(const struct rdma_tp *t, const struct rdma_peer *p)
{
	return p->sq_posted - p->sq_done < t->sq_depth;
}

/* ---- rdma_progress.c ---- */

IBC_HIDDEN ibcomm_status_t ibc_rdma_fail(struct rdma_tp *t, ibcomm_status_t st);
IBC_HIDDEN int ibc_rdma_notices_check(struct rdma_tp *t, bool readable, const char *op, int peer, int chan);
IBC_HIDDEN int ibc_rdma_progress(struct rdma_tp *t);
IBC_HIDDEN ibcomm_status_t ibc_rdma_check_abort(struct rdma_tp *t);
IBC_HIDDEN int ibc_rdma_block(struct rdma_tp *t, ibc_deadline_t dl, const char *op, int peer, int chan);

/* ---- rdma_qp.c ---- */

IBC_HIDDEN int ibc_rdma_post_recvs(struct rdma_tp *t, struct rdma_peer *p);
IBC_HIDDEN int ibc_rdma_post_write(struct rdma_tp *t, struct rdma_peer *p, struct ibv_sge *sge, int nsge, bool inl,
				   uint64_t raddr, uint32_t rkey, uint32_t imm, bool signal, uint64_t *seq_out);
IBC_HIDDEN int ibc_rdma_send_credit(struct rdma_tp *t, struct rdma_peer *p, int chan, bool force);
IBC_HIDDEN void ibc_rdma_info_fill(struct rdma_tp *t, struct rdma_peer *p, ibc_rdma_info_t *in);
IBC_HIDDEN ibcomm_status_t ibc_rdma_connect_peer(struct rdma_tp *t, struct rdma_peer *p, const ibc_rdma_info_t *rp);
IBC_HIDDEN ibcomm_status_t ibc_rdma_peer_open(struct rdma_tp *t, struct rdma_peer *p);
IBC_HIDDEN void ibc_rdma_peer_close(struct rdma_tp *t, struct rdma_peer *p);
IBC_HIDDEN void ibc_rdma_peer_ready(struct rdma_tp *t, struct rdma_peer *p);

/* ---- rdma_cm_ud.c ---- */

IBC_HIDDEN int ibc_rdma_ud_wc(struct rdma_tp *t, const struct ibv_wc *wc);
IBC_HIDDEN int ibc_rdma_cm_tick(struct rdma_tp *t);
IBC_HIDDEN ibcomm_status_t ibc_rdma_peer_start(struct rdma_tp *t, struct rdma_peer *p, ibc_deadline_t dl);
IBC_HIDDEN ibcomm_status_t ibc_rdma_ud_open(struct rdma_tp *t);

/* ---- rdma_dev.c ---- */

IBC_HIDDEN ibcomm_status_t ibc_rdma_dev_acquire(struct rdma_tp *t);
IBC_HIDDEN void ibc_rdma_dev_release(struct rdma_dev *d);
IBC_HIDDEN ibcomm_status_t ibc_rdma_pin_account(struct rdma_tp *t, size_t bytes, const char *what);
IBC_HIDDEN ibcomm_status_t ibc_rdma_choose_geometry(struct rdma_tp *t);

/* ---- rdma_ops.c ---- */

IBC_HIDDEN int ibc_rdma_put(ibc_tp_t *tp, int peer, int chan, uint32_t tag, const void *buf, size_t len, bool wait,
			    ibc_deadline_t dl);
IBC_HIDDEN int ibc_rdma_get(ibc_tp_t *tp, int peer, int chan, ibc_chunk_t *chunk, bool wait, ibc_deadline_t dl);
IBC_HIDDEN ibcomm_status_t ibc_rdma_release(ibc_tp_t *tp, ibc_chunk_t *c);
IBC_HIDDEN ibcomm_status_t ibc_rdma_wait(ibc_tp_t *tp, ibc_deadline_t dl);
IBC_HIDDEN void ibc_rdma_interrupt(ibc_tp_t *tp);
IBC_HIDDEN int ibc_rdma_wait_fd(ibc_tp_t *tp, int fd, int timeout_ms);
IBC_HIDDEN void *ibc_rdma_reg(ibc_tp_t *tp, void *addr, size_t len, ibcomm_status_t *st);
IBC_HIDDEN void ibc_rdma_dereg(ibc_tp_t *tp, void *h);
IBC_HIDDEN ibcomm_status_t ibc_rdma_flush(ibc_tp_t *tp, ibc_deadline_t dl);
IBC_HIDDEN void ibc_rdma_set_zc_source(ibc_tp_t *tp, const void *buf, size_t len, void *handle);

#endif
