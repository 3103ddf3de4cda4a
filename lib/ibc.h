/* Internal core of ibcomm: the communicator, errors, logging, deadlines. Prefix ibc_. */
#ifndef IBC_H
#define IBC_H

#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "ibcomm.h"
#include "transport.h"
#include "bootstrap.h"

#define IBC_HIDDEN __attribute__((visibility("hidden")))
#define IBC_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define IBC_MIN(a, b) ((a) < (b) ? (a) : (b))
#define IBC_MAX(a, b) ((a) > (b) ? (a) : (b))
#define IBC_ERRLEN 512

/* ---- settings (config.c) ---- */
enum ibc_tp_kind { IBC_TP_AUTO, IBC_TP_TCP, IBC_TP_RDMA, IBC_TP_SHM };

/* IBCOMM_ALGO: one choice per collective; IBC_ALGO_AUTO lets select.c decide by size. */
enum ibc_coll {
	IBC_COLL_ALLREDUCE,
	IBC_COLL_BROADCAST,
	IBC_COLL_REDUCE,
	IBC_COLL_ALLGATHER,
	IBC_COLL_REDUCE_SCATTER,
	IBC_COLL_GATHER,
	IBC_COLL_SCATTER,
	IBC_COLL_ALLTOALL,
	IBC_COLL_BARRIER,
	IBC_COLL_ALLGATHERV,
	IBC_COLL_ALLTOALLV,
	IBC_COLL_COUNT
};
enum ibc_algo {
	IBC_ALGO_AUTO = 0,
	IBC_ALGO_RING,     /* allreduce, allgather(v), reduce_scatter */
	IBC_ALGO_RD,       /* allreduce: recursive doubling */
	IBC_ALGO_TREE,     /* broadcast, reduce: binomial tree; allreduce: tree reduce + tree broadcast */
	IBC_ALGO_PIPELINE, /* broadcast: pipelined chain */
	IBC_ALGO_LINEAR,   /* gather, scatter, alltoall(v), allgatherv: direct to/from each peer */
	IBC_ALGO_PAIRWISE, /* alltoall(v): pairwise exchange */
	IBC_ALGO_DISSEM,   /* barrier: dissemination */
	IBC_ALGO_HIER,     /* allreduce, broadcast: within hosts, across hosts among leaders (algo/hier.c) */
	IBC_ALGO_COUNT
};

typedef struct ibc_settings {
	int rank, nranks;
	char root[256];         /* host:port of the rendezvous */
	int listen_fd;          /* >= 0: a listening socket rank 0's rendezvous server adopts
				 * instead of binding root (ibcomm_get_id, PMIx publication); -1: none */
	enum ibc_tp_kind transport;
	char device[64];
	int ib_port;            /* 0: first active */
	int gid_index;          /* -1: automatic */
	char ifname[64];
	long timeout_ms;        /* 0: none */
	enum ibc_algo algo[IBC_COLL_COUNT];
	char job_key[256];
	int debug;              /* enum ibc_log_level of this communicator's messages */
	/* transport geometry; 0: the transport's default (which fits mem_limit) */
	unsigned long tcp_chunk, tcp_slots, rdma_chunk, rdma_slots;
	unsigned long tcp_spin_us;
	unsigned long shm_chunk, shm_slots; /* IBCOMM_SHM_CHUNK, IBCOMM_SHM_SLOTS (environment only); 0: default */
	unsigned long rdma_spin_us;         /* IBCOMM_RDMA_SPIN_US (environment only) */
	uint64_t mem_limit;           /* bytes a transport may allocate and pin (IBCOMM_MEM_LIMIT) */
	uint64_t p2p_unexpected_max;  /* bytes of unexpected p2p messages held (IBCOMM_P2P_UNEXPECTED_MAX) */
	uint64_t test_qp_error_after; /* IBCOMM_TEST_QP_ERROR_AFTER (test hook of the RDMA transport); 0 off */
	char test_host[64];           /* IBCOMM_TEST_HOST (test hook): replaces the host name in the host map (hosts.c) */
	unsigned long test_mix_slice_ms; /* IBCOMM_TEST_MIX_SLICE_MS (test hook): the mix's sleep slice; 0: default */
} ibc_settings_t;

/* Defaults and ranges of the knobs above (README's table says the same). */
#define IBC_DEFAULT_MEM_LIMIT (1ull << 30)
#define IBC_MIN_MEM_LIMIT (1ull << 20)
#define IBC_DEFAULT_P2P_UNEXPECTED_MAX (64ull << 20)
#define IBC_DEFAULT_TCP_SPIN_US 50ul
#define IBC_KNOB_TCP_CHUNK_MAX (1ul << 30)
#define IBC_KNOB_TCP_SLOTS_MAX 1024ul
#define IBC_KNOB_SPIN_MAX 1000000ul
#define IBC_DEFAULT_RDMA_SPIN_US 50ul
#define IBC_KNOB_RDMA_CHUNK_MIN 64ul
#define IBC_KNOB_RDMA_CHUNK_MAX (16ul << 20)
#define IBC_KNOB_RDMA_SLOTS_MIN 2ul
#define IBC_KNOB_RDMA_SLOTS_MAX 256ul
#define IBC_KNOB_SHM_CHUNK_MIN 64ul
#define IBC_KNOB_SHM_CHUNK_MAX (1ul << 30)
#define IBC_KNOB_SHM_SLOTS_MAX 1024ul

/* Fills s from cfg (may be NULL) and the environment; on a bad value returns
 * IBCOMM_ERR_INVALID with a message naming the variable and the value in err. */
IBC_HIDDEN ibcomm_status_t ibc_settings_load(const ibcomm_config_t *cfg, ibc_settings_t *s, char *err, size_t errlen);
/* IBCOMM_IFNAME alone ("" when unset), checked as ibc_settings_load checks it, for what runs
 * before a communicator has settings (ibcomm_get_id); cap >= IF_NAMESIZE. */
IBC_HIDDEN ibcomm_status_t ibc_settings_ifname(char *ifname, size_t cap, char *err, size_t errlen);
/*
 * The memory cap at transport create: `bytes` is what transport `tp` ("TCP", "RDMA") would
 * allocate and pin at most, `how` spells the product (e.g. "3 peers x 2 channels x 4 slots x
 * 524288 bytes"). Over ibc_mem_limit(comm) (the cap, or a mix part's share of it): an error
 * naming the settings and the numbers (IBCOMM_ERR_INVALID when `explicit` settings caused it,
 * else IBCOMM_ERR_NOMEM).
 */
static inline uint64_t ibc_mem_limit(const struct ibcomm *comm);
static inline uint64_t ibc_mem_cap(const struct ibcomm *comm);
static inline int ibc_tp_npeers(const struct ibcomm *comm);
IBC_HIDDEN ibcomm_status_t ibc_mem_check(struct ibcomm *comm, const char *tp, uint64_t bytes, const char *how,
					 const char *knobs, bool explicit);
/* Parses an IBCOMM_ALGO string ("ring", "allreduce=rd,broadcast=pipeline", ...). */
IBC_HIDDEN ibcomm_status_t ibc_algo_parse(const char *str, enum ibc_algo algo[IBC_COLL_COUNT], char *err,
					  size_t errlen);
IBC_HIDDEN const char *ibc_algo_name(enum ibc_algo a);
IBC_HIDDEN const char *ibc_coll_name(enum ibc_coll c);

/*
 * ---- logging (log.c) ----
 * A communicator logs at its own level (comm->set.debug: its config's debug field, else
 * IBCOMM_DEBUG): ibc_cwarn/ibc_cinfo/ibc_ctrace(comm, ...). Code without a communicator
 * (the rendezvous, init before the settings are read) logs at the process default,
 * ibc_log_default(): IBCOMM_DEBUG as read once, WARN when unset or bad. Nothing writes a
 * level that another communicator's messages depend on.
 */
enum ibc_log_level { IBC_LOG_ERROR = 0, IBC_LOG_WARN = 1, IBC_LOG_INFO = 2, IBC_LOG_TRACE = 3 };
IBC_HIDDEN int ibc_log_default(void);
/* "WARN", "INFO", "TRACE" (any case) to a level; -1 otherwise. */
IBC_HIDDEN int ibc_log_parse(const char *s);
/* Prints when level <= threshold. */
IBC_HIDDEN void ibc_log_at(int threshold, int level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
#define ibc_log(level, ...) ibc_log_at(ibc_log_default(), level, __VA_ARGS__)
#define ibc_warn(...) ibc_log(IBC_LOG_WARN, __VA_ARGS__)
#define ibc_info(...) do { if (ibc_log_default() >= IBC_LOG_INFO) ibc_log(IBC_LOG_INFO, __VA_ARGS__); } while (0)
#define ibc_trace(...) do { if (ibc_log_default() >= IBC_LOG_TRACE) ibc_log(IBC_LOG_TRACE, __VA_ARGS__); } while (0)
#define ibc_cwarn(comm, ...) ibc_log_at((comm)->set.debug, IBC_LOG_WARN, __VA_ARGS__)
#define ibc_cinfo(comm, ...) \
	do { if ((comm)->set.debug >= IBC_LOG_INFO) ibc_log_at((comm)->set.debug, IBC_LOG_INFO, __VA_ARGS__); } while (0)
#define ibc_ctrace(comm, ...) \
	do { if ((comm)->set.debug >= IBC_LOG_TRACE) ibc_log_at((comm)->set.debug, IBC_LOG_TRACE, __VA_ARGS__); } while (0)

/* ---- time (deadline.c) ---- */
IBC_HIDDEN uint64_t ibc_now_ms(void);
/* Absolute deadline timeout_ms from now; 0 when timeout_ms is 0 (none). */
IBC_HIDDEN ibc_deadline_t ibc_deadline(long timeout_ms);
/* Milliseconds left, for poll(): -1 for none, 0 when passed. */
IBC_HIDDEN int ibc_deadline_left(ibc_deadline_t dl);

/* ---- the communicator (comm.c) ---- */
struct ibc_p2p_msg;
struct ibc_p2p_state;
struct ibc_regcache;
struct ibc_nbc;

/*
 * Which ranks share a host (hosts.c): hosts are numbered by their lowest rank. host_of is
 * NULL on a communicator built by hand (tests): then every rank counts as on one host.
 */
struct ibc_hosts {
	int *host_of;        /* host of each rank */
	int nhosts;
	int local_rank;      /* this rank's index among its host's ranks (by rank) */
	int local_size;      /* ranks on this rank's host */
	int *ring;           /* ring order (ring[i]: the rank at position i) then each rank's position
			      * (ring[n + r]); NULL when rank order already keeps each host's ranks together */
};

struct ibcomm {
	int rank, size;
	char id[64];              /* rendezvous namespace of this communicator ("0", "0.s1.3", ...) */
	ibc_settings_t set;
	ibc_boot_t *boot;         /* the job's bootstrap (bootstrap.h; shared by its communicators) */
	ibc_tp_t *tp;
	uint32_t seq;             /* collective sequence number */
	uint32_t nchildren;       /* split/dup counter, part of children's ids */
	atomic_int aborted;
	ibcomm_status_t failed;   /* sticky: once a peer failed, every call returns this */
	struct ibc_p2p_msg *unexpected; /* p2p messages received before their recv */
	struct ibc_p2p_state *p2p; /* p2p.c: bytes held, high-water mark, held chunks; NULL until needed */
	int *world;               /* world rank of each rank (split communicators); NULL: identity */
	struct ibc_regcache *regcache; /* registered memory (regcache.c); NULL until the first register */
	struct ibc_nbc *nbc;      /* nonblocking requests and their progress thread (nbc.c); NULL until the first */
	struct ibc_hosts hosts;   /* hosts.c */
	/* while the mix (transports/mix) creates one of its parts: the part's share of the memory
	 * cap, what it sizes itself for (the network part: peers; the shared-memory part: rings),
	 * the same on every rank, and the mix's name; 0 / NULL otherwise: the whole cap, every
	 * other rank (ibc_mem_limit, ibc_tp_npeers, ibc_mem_check, shm_create.c) */
	uint64_t part_mem;
	int part_count;
	const char *part_of;
	char err[IBC_ERRLEN];
};

/* ---- the host map (hosts.c) ---- */
/* At init, collective: every rank's host identity through the bootstrap, then the map. */
IBC_HIDDEN ibcomm_status_t ibc_hosts_init(struct ibcomm *comm);
/* The map from key[r] (equal for ranks on the same host, any values), e.g. a parent's host_of. */
IBC_HIDDEN ibcomm_status_t ibc_hosts_set(struct ibcomm *comm, const int *key);
IBC_HIDDEN void ibc_hosts_free(struct ibc_hosts *h);
/* The map rank 0 publishes at init (hosts.c: u8 version, u32 n, n x u32 key) into key[comm->size];
 * malformed: IBCOMM_ERR_RENDEZVOUS naming what. */
IBC_HIDDEN ibcomm_status_t ibc_hosts_map_decode(struct ibcomm *comm, const void *val, size_t len, int *key);
/* How many ranks are on other hosts than this rank; the first of them as "3, 5, 6..." in list. */
IBC_HIDDEN int ibc_hosts_elsewhere(const struct ibcomm *comm, char *list, size_t cap);
/*
 * The ring order of n ranks with hosts host_of[] (numbered by lowest rank): the hosts in
 * their order, each host's ranks in rank order, so that a ring crosses each host boundary
 * once per direction. order[] gets the n ranks.
 */
IBC_HIDDEN void ibc_hosts_ring(int n, const int *host_of, int *order);

/* One look of a spin: tells the CPU (and a sibling hyperthread) that this is a busy wait. */
static inline void ibc_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ __volatile__("yield");
#endif
}

/* The memory cap (a communicator built by hand in a test, with 0, gets the default). */
static inline uint64_t ibc_mem_cap(const struct ibcomm *comm)
{
	return comm->set.mem_limit ? comm->set.mem_limit : IBC_DEFAULT_MEM_LIMIT;
}

/* What the transport being created may allocate and pin: the cap, or a mix part's share of it. */
static inline uint64_t ibc_mem_limit(const struct ibcomm *comm)
{
	return comm->part_mem ? comm->part_mem : ibc_mem_cap(comm);
}

/* The peers the network transport being created sizes its rings for: the other ranks, or
 * as the mix's network part the most ranks on other hosts any rank has. At least 1. */
static inline int ibc_tp_npeers(const struct ibcomm *comm)
{
	if (comm->part_count > 0)
		return comm->part_count;
	return comm->size > 1 ? comm->size - 1 : 1;
}

/* The world rank (the job's, as the rendezvous knows it) of comm's rank r. */
static inline int ibc_world_rank(const struct ibcomm *comm, int r)
{
	return comm->world ? comm->world[r] : r;
}

/*
 * ibcomm_init() with, when listen_fd >= 0, a socket already listening at the rendezvous
 * address for rank 0's server (ibcomm_init_rank). listen_fd is closed on every failure.
 */
IBC_HIDDEN ibcomm_status_t ibc_comm_init(const ibcomm_config_t *cfg, int listen_fd, ibcomm_t **comm);
/* Records an error on comm (and this thread's last error) and returns status. */
IBC_HIDDEN ibcomm_status_t ibc_err(struct ibcomm *comm, ibcomm_status_t status, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* This thread's last error (for calls without a communicator). */
IBC_HIDDEN ibcomm_status_t ibc_err_thread(ibcomm_status_t status, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* Sets comm's last error (when comm) and this thread's to msg, a detail recorded earlier. */
IBC_HIDDEN void ibc_err_set(struct ibcomm *comm, const char *msg);
/* p2p.c: frees the p2p state of comm (its unexpected messages); called by ibcomm_destroy. */
IBC_HIDDEN void ibc_p2p_cleanup(struct ibcomm *comm);
/* p2p.c: bytes of unexpected messages comm holds now and at most so far (tests). */
IBC_HIDDEN void ibc_p2p_held(const struct ibcomm *comm, uint64_t *now, uint64_t *peak);
/* p2p.c: the argument checks of a send or receive (fn names it); *bytes its size. */
IBC_HIDDEN ibcomm_status_t ibc_p2p_check(struct ibcomm *comm, const char *fn, const void *buf, size_t count,
					 ibcomm_dtype_t dtype, int peer, size_t *bytes);
/* p2p.c: one step of a send (IBC_AGAIN: call again) and one try of a receive; see p2p.c. */
IBC_HIDDEN int ibc_p2p_send_step(struct ibcomm *comm, const void *buf, size_t count, ibcomm_dtype_t dtype, int peer,
				 uint32_t tag, ibc_deadline_t dl, bool *started, size_t *off, bool wait);
IBC_HIDDEN int ibc_p2p_recv_try(struct ibcomm *comm, void *buf, size_t count, ibcomm_dtype_t dtype, int peer,
				uint32_t tag, ibc_deadline_t dl, bool wait, const void *owner);
/* p2p.c: the receive `owner` (its try's argument) failed: the rest of a message it was taking is discarded. */
IBC_HIDDEN void ibc_p2p_forget(struct ibcomm *comm, const void *owner);
/*
 * coll.c: a collective's argument checks alone (errors name fn, or the blocking call when NULL),
 * and the whole blocking call without routing.
 */
IBC_HIDDEN ibcomm_status_t ibc_coll_check(struct ibcomm *comm, const char *fn, enum ibc_coll coll,
					  const void *sendbuf, void *recvbuf, size_t count, ibcomm_dtype_t dtype,
					  ibcomm_op_t op, int root);
IBC_HIDDEN ibcomm_status_t ibc_coll_run(struct ibcomm *comm, enum ibc_coll coll, const void *sendbuf, void *recvbuf,
					size_t count, ibcomm_dtype_t dtype, ibcomm_op_t op, int root);
/*
 * nbc.c: nonblocking requests. ibc_nbc_busy: comm has requests pending and the caller is not
 * its progress thread, so a blocking call must queue behind them: ibc_nbc_coll/ibc_nbc_p2p
 * with req NULL queue it and wait; with req, they are the i-calls (fn: the i-call's name). ibc_nbc_destroy: at
 * ibcomm_destroy, fails what is pending (IBCOMM_ERR_ABORTED), stops the thread, frees requests.
 */
IBC_HIDDEN bool ibc_nbc_busy(struct ibcomm *comm);
IBC_HIDDEN ibcomm_status_t ibc_nbc_coll(struct ibcomm *comm, const char *fn, enum ibc_coll coll, const void *sendbuf,
					void *recvbuf, size_t count, ibcomm_dtype_t dtype, ibcomm_op_t op, int root,
					ibcomm_request_t **req);
IBC_HIDDEN ibcomm_status_t ibc_nbc_p2p(struct ibcomm *comm, bool send, void *buf, size_t count,
				       ibcomm_dtype_t dtype, int peer, uint32_t tag, ibcomm_request_t **req);
IBC_HIDDEN void ibc_nbc_destroy(struct ibcomm *comm);
/*
 * nbc.c: fn(comm, arg) where it may touch the transport: here when nothing is pending, else in
 * the progress thread after the pending collectives (what names the caller, for messages).
 */
IBC_HIDDEN ibcomm_status_t ibc_nbc_call(struct ibcomm *comm, const char *what,
					ibcomm_status_t (*fn)(struct ibcomm *comm, void *arg), void *arg);
/* A deadline for one call on comm. */
static inline ibc_deadline_t ibc_call_deadline(const struct ibcomm *comm)
{
	return ibc_deadline(comm->set.timeout_ms);
}

/* The first rank >= from of comm, not this one, the bootstrap knows dead (why names it), or -1. */
static inline int ibc_dead_rank(struct ibcomm *comm, int from, char *why, size_t whylen)
{
	char w_why[160];

	for (int r = from; comm->boot && r < comm->size; r++) {
		int w = ibc_world_rank(comm, r);

		if (r == comm->rank || !ibc_boot_dead(comm->boot, w, w_why, sizeof(w_why)))
			continue;
		if (w != r)
			snprintf(why, whylen, "rank %d of communicator %s is world rank %d: %s", r, comm->id, w, w_why);
		else
			snprintf(why, whylen, "%s", w_why);
		return r;
	}
	return -1;
}

/*
 * ---- failure notices for the transports (notices.c) ----
 * Once a member of a communicator is reported dead, every call of its transport fails naming
 * it, also on ranks that never talked to it; the error names every member known dead then.
 */
struct ibc_notices {
	unsigned gen;         /* ibc_boot_poll() counter last looked at */
	int ndead;            /* members known dead */
	int first;            /* the lowest of them, or -1 */
	char why[IBC_ERRLEN]; /* names them all: "rank 3 died: ...", "ranks 2, 3 are gone: ..." */
};
IBC_HIDDEN void ibc_notices_init(struct ibc_notices *n);
/*
 * Processes the bootstrap's notices (reads only when `readable`: its fd polled readable);
 * when the first deaths appear, waits up to 200 ms for more (the other ranks of a lost host).
 * Calls mark(arg, r) (may be NULL) for each member known dead whenever the set changed.
 * Returns how many members are known dead (0: none).
 */
IBC_HIDDEN int ibc_notices_poll(struct ibcomm *comm, struct ibc_notices *n, bool readable,
				void (*mark)(void *arg, int peer), void *arg);

/* ---- datatypes and reductions (reduce.c) ---- */
/* dst[i] = dst[i] op src[i] for i < count (AVG behaves as SUM here; see ibc_reduce_finish). */
typedef void (*ibc_reduce_fn)(void *dst, const void *src, size_t count);
IBC_HIDDEN ibc_reduce_fn ibc_reduce_kernel(ibcomm_dtype_t dtype, ibcomm_op_t op);
/* Applies the last step of op to a fully reduced buffer: AVG divides by nranks; else nothing. */
IBC_HIDDEN void ibc_reduce_finish(void *buf, size_t count, ibcomm_dtype_t dtype, ibcomm_op_t op, int nranks);
IBC_HIDDEN bool ibc_dtype_valid(ibcomm_dtype_t dtype);
IBC_HIDDEN bool ibc_op_valid(ibcomm_op_t op);
IBC_HIDDEN const char *ibc_dtype_name(ibcomm_dtype_t dtype);
IBC_HIDDEN const char *ibc_op_name(ibcomm_op_t op);
/* fp16/bf16 conversions (round to nearest even). */
IBC_HIDDEN float ibc_half_to_float(uint16_t h);
IBC_HIDDEN uint16_t ibc_float_to_half(float f);
IBC_HIDDEN float ibc_bf16_to_float(uint16_t h);
IBC_HIDDEN uint16_t ibc_float_to_bf16(float f);

#endif
