/*
 * ibcomm: collective communication between the processes of a distributed job,
 * over InfiniBand/RoCE (RDMA) or TCP.
 *
 * Every function returns an ibcomm_status_t unless stated otherwise: IBCOMM_OK (0) on
 * success, a negative IBCOMM_ERR_* on failure. After a failure, ibcomm_last_error(comm)
 * gives the detail (which rank, which peer, which operation, a hint).
 *
 * Counts are in elements, never bytes. A communicator is used by one thread at a time;
 * ibcomm_abort() is the exception.
 */
#ifndef IBCOMM_H
#define IBCOMM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(IBCOMM_BUILDING_LIB)
#define IBCOMM_API __attribute__((visibility("default")))
#else
#define IBCOMM_API
#endif

#define IBCOMM_VERSION_MAJOR 0
#define IBCOMM_VERSION_MINOR 1

typedef struct ibcomm ibcomm_t;
typedef struct ibcomm_mr ibcomm_mr_t;

/* X-macro: one table gives the enum and ibcomm_strerror(). */
#define IBCOMM_STATUS_TABLE(X)                                                         \
	X(IBCOMM_OK, 0, "success")                                                     \
	X(IBCOMM_ERR_INVALID, -1, "invalid argument")                                  \
	X(IBCOMM_ERR_NOMEM, -2, "out of memory")                                       \
	X(IBCOMM_ERR_TIMEOUT, -3, "timed out")                                         \
	X(IBCOMM_ERR_PEER, -4, "a peer died or closed its connection")                 \
	X(IBCOMM_ERR_TRANSPORT, -5, "transport error")                                 \
	X(IBCOMM_ERR_RENDEZVOUS, -6, "rendezvous failed")                              \
	X(IBCOMM_ERR_AUTH, -7, "authentication failed")                                \
	X(IBCOMM_ERR_MISMATCH, -8, "ranks called different collectives or sizes")      \
	X(IBCOMM_ERR_ABORTED, -9, "communicator aborted")                              \
	X(IBCOMM_ERR_UNSUPPORTED, -10, "unsupported")                                  \
	X(IBCOMM_ERR_SYSTEM, -11, "system error")

typedef enum {
#define IBCOMM_X_ENUM(name, value, text) name = value,
	IBCOMM_STATUS_TABLE(IBCOMM_X_ENUM)
#undef IBCOMM_X_ENUM
} ibcomm_status_t;

typedef enum {
	IBCOMM_INT8,
	IBCOMM_UINT8,
	IBCOMM_INT32,
	IBCOMM_UINT32,
	IBCOMM_INT64,
	IBCOMM_UINT64,
	IBCOMM_FLOAT16, /* IEEE 754 binary16; reduced in fp32 */
	IBCOMM_BFLOAT16, /* bfloat16; reduced in fp32 */
	IBCOMM_FLOAT32,
	IBCOMM_FLOAT64,
	IBCOMM_DTYPE_COUNT
} ibcomm_dtype_t;

/* Integer SUM and PROD wrap (two's complement); AVG on integers truncates toward zero. */
typedef enum { IBCOMM_SUM, IBCOMM_PROD, IBCOMM_MIN, IBCOMM_MAX, IBCOMM_AVG, IBCOMM_OP_COUNT } ibcomm_op_t;

/*
 * Configuration of ibcomm_init(). Start from IBCOMM_CONFIG_INIT (or ibcomm_config_init())
 * and set what you need; NULL strings and negative numbers mean "take it from the
 * environment, else the default". The struct can grow: `size` tells the library which
 * fields the caller knows about.
 */
typedef struct ibcomm_config {
	size_t size;          /* sizeof(ibcomm_config_t) as the caller compiled it */
	int rank;             /* this process's rank, 0 <= rank < nranks */
	int nranks;           /* number of ranks in the job */
	const char *root;     /* rendezvous "host:port", "ipv4:port" or "[ipv6]:port" */
	const char *transport; /* "auto", "rdma" or "tcp" */
	const char *device;   /* RDMA device[:port] */
	int gid_index;        /* RDMA GID index; -1: automatic (RoCEv2 IPv4-mapped) */
	const char *ifname;   /* network interface for the TCP transport */
	long timeout_ms;      /* deadline of each blocking call; 0: none; -1: default */
	const char *algo;     /* IBCOMM_ALGO: algorithm overrides, see README */
	const char *job_key;  /* shared secret; NULL or "": no authentication */
	/* Added in 0.1 (after job_key; the size field tells which a caller has). Strings NULL and
	 * numbers -1: take IBCOMM_<NAME> from the environment, else the default (see README). */
	const char *debug;          /* IBCOMM_DEBUG: "WARN", "INFO" or "TRACE" */
	long tcp_chunk;             /* IBCOMM_TCP_CHUNK: TCP chunk bytes */
	long tcp_slots;             /* IBCOMM_TCP_SLOTS: TCP receive slots per peer and channel */
	long tcp_spin_us;           /* IBCOMM_TCP_SPIN_US: polling before sleeping, microseconds */
	long rdma_chunk;            /* IBCOMM_RDMA_CHUNK: RDMA chunk bytes */
	long rdma_slots;            /* IBCOMM_RDMA_SLOTS: RDMA slots per peer and channel */
	int64_t mem_limit;          /* IBCOMM_MEM_LIMIT: bytes a transport may allocate and pin */
	int64_t p2p_unexpected_max; /* IBCOMM_P2P_UNEXPECTED_MAX: bytes of unexpected messages held */
} ibcomm_config_t;

#define IBCOMM_CONFIG_INIT                                                                          \
	{                                                                                           \
		sizeof(ibcomm_config_t), -1, -1, NULL, NULL, NULL, -1, NULL, -1, NULL, NULL, NULL, -1, \
			-1, -1, -1, -1, -1, -1                                                      \
	}

/* Default of timeout_ms / IBCOMM_TIMEOUT_MS: five minutes, enough for an emulated fabric. */
#define IBCOMM_DEFAULT_TIMEOUT_MS 300000L

/*
 * Creates the communicator of this process: rank 0 serves the rendezvous at cfg->root;
 * every rank registers there and waits (retrying with backoff) until all ranks have joined
 * or the deadline passes. Fields left unset are taken from the environment (see
 * ibcomm_init_env). Errors: _INVALID (bad rank, size, address or setting), _RENDEZVOUS
 * (the rendezvous could not be reached or served), _TIMEOUT, _AUTH, _TRANSPORT, _NOMEM.
 * On error *comm is untouched and ibcomm_last_error(NULL) names what went wrong.
 */
IBCOMM_API ibcomm_status_t ibcomm_init(const ibcomm_config_t *cfg, ibcomm_t **comm);

/*
 * ibcomm_init() with every setting from the environment: IBCOMM_RANK, IBCOMM_SIZE,
 * IBCOMM_ROOT, or else from the launcher that started the process (PMIx, PMI-1 over PMI_FD,
 * Slurm's SLURM_* variables: see README "Running on a cluster");
 * IBCOMM_TRANSPORT, IBCOMM_DEVICE, IBCOMM_GID_INDEX, IBCOMM_IFNAME, IBCOMM_TIMEOUT_MS,
 * IBCOMM_ALGO, IBCOMM_JOB_KEY, IBCOMM_DEBUG, IBCOMM_TCP_CHUNK, IBCOMM_TCP_SLOTS,
 * IBCOMM_TCP_SPIN_US, IBCOMM_RDMA_CHUNK, IBCOMM_RDMA_SLOTS, IBCOMM_MEM_LIMIT,
 * IBCOMM_P2P_UNEXPECTED_MAX (the README's table gives each default).
 */
IBCOMM_API ibcomm_status_t ibcomm_init_env(ibcomm_t **comm);

/*
 * Embedding: the caller passes an id to its ranks over its own channel (MPI_Bcast, a file, a
 * key-value store), as with NCCL's ncclUniqueId.
 *
 * ibcomm_get_id() is called once, by the process that will be rank 0, before
 * ibcomm_init_rank(): it opens the rendezvous port (a listening socket kept open until that
 * process's ibcomm_init_rank, so no other process can take the port; on the interface
 * IBCOMM_IFNAME names, else the first IPv4 address of an interface that is up) and draws a
 * fresh random job key, so the job is authenticated without anybody choosing a key.
 *
 * THE ID IS A SECRET: it holds the job key. Whoever reads it can join the job; send it only
 * over channels the job trusts, and do not log it.
 *
 * ibcomm_init_rank() creates the communicator of rank `rank` of `nranks` from the id. cfg may
 * be NULL (every other setting from the environment, as ibcomm_init_env); its rank, nranks and
 * root fields, when set, must agree with the arguments and the id; its job_key is ignored
 * (the id's is used). Errors: _INVALID for a malformed or foreign id (the reason in
 * ibcomm_last_error(NULL)), for arguments that disagree, for an id already used for a
 * communicator by its creator or given as rank 0 to a process other than its creator; then
 * as ibcomm_init(). See man ibcomm_get_id(3).
 */
#define IBCOMM_ID_BYTES 128
typedef struct {
	unsigned char bytes[IBCOMM_ID_BYTES];
} ibcomm_id_t;
IBCOMM_API ibcomm_status_t ibcomm_get_id(ibcomm_id_t *id);
IBCOMM_API ibcomm_status_t ibcomm_init_rank(const ibcomm_id_t *id, int rank, int nranks, const ibcomm_config_t *cfg,
					    ibcomm_t **comm);

/* Rank and size of the communicator; -1 when comm is NULL. */
IBCOMM_API int ibcomm_rank(const ibcomm_t *comm);
IBCOMM_API int ibcomm_size(const ibcomm_t *comm);

/* "rdma" or "tcp": the transport this communicator really uses. Never NULL. */
IBCOMM_API const char *ibcomm_transport(const ibcomm_t *comm);

/* Frees the communicator and everything it holds; not collective. NULL is accepted. */
IBCOMM_API ibcomm_status_t ibcomm_destroy(ibcomm_t *comm);

/*
 * Makes calls in progress on comm return IBCOMM_ERR_ABORTED, and every later call too.
 * May be called from any thread. The communicator must still be destroyed.
 */
IBCOMM_API ibcomm_status_t ibcomm_abort(ibcomm_t *comm);

/*
 * Collective: ranks passing the same color form a new communicator, ranked by (key, old
 * rank). A negative color means "in none": *newcomm is set to NULL.
 */
IBCOMM_API ibcomm_status_t ibcomm_split(ibcomm_t *comm, int color, int key, ibcomm_t **newcomm);

/* Collective: a new communicator with the same ranks, whose traffic is independent. */
IBCOMM_API ibcomm_status_t ibcomm_dup(ibcomm_t *comm, ibcomm_t **newcomm);

/*
 * Registers [buf, buf+len) for use in collectives (RDMA: pinned and keyed once instead of
 * per call; an out-of-place call whose sendbuf lies inside is sent without a copy).
 * Optional: unregistered buffers work too. A range inside one already registered on comm
 * shares it (reference counted). *mr belongs to comm: ibcomm_destroy(comm) deregisters what
 * is left; a handle that is not comm's (deregistered, another communicator's) is
 * IBCOMM_ERR_INVALID.
 *
 * Deregister before freeing or unmapping the memory. A safety net: libibcomm's munmap()
 * and mremap() (the program's calls bind to them) mark an unmapped registration unusable,
 * so new memory at the same address is never sent from the old pages; its handle must
 * still be deregistered. free() of heap memory is not seen.
 */
IBCOMM_API ibcomm_status_t ibcomm_register(ibcomm_t *comm, void *buf, size_t len, ibcomm_mr_t **mr);
IBCOMM_API ibcomm_status_t ibcomm_deregister(ibcomm_t *comm, ibcomm_mr_t *mr);

/*
 * recvbuf[i] = op over all ranks of sendbuf[i], on every rank. In place when
 * sendbuf == recvbuf. Errors: _INVALID (NULL buffer with count > 0, bad dtype or op,
 * partially overlapping buffers), and the communication errors.
 */
IBCOMM_API ibcomm_status_t ibcomm_allreduce(ibcomm_t *comm, const void *sendbuf, void *recvbuf, size_t count,
					    ibcomm_dtype_t dtype, ibcomm_op_t op);

/* Copies root's buf into buf on every other rank. */
IBCOMM_API ibcomm_status_t ibcomm_broadcast(ibcomm_t *comm, void *buf, size_t count, ibcomm_dtype_t dtype,
					    int root);

/* As allreduce, but only root receives; recvbuf of other ranks is unused (may be NULL). */
IBCOMM_API ibcomm_status_t ibcomm_reduce(ibcomm_t *comm, const void *sendbuf, void *recvbuf, size_t count,
					 ibcomm_dtype_t dtype, ibcomm_op_t op, int root);

/*
 * recvbuf (size x sendcount elements) receives every rank's sendbuf, in rank order. In place
 * when sendbuf is this rank's block of recvbuf.
 */
IBCOMM_API ibcomm_status_t ibcomm_allgather(ibcomm_t *comm, const void *sendbuf, void *recvbuf, size_t sendcount,
					    ibcomm_dtype_t dtype);

/*
 * sendbuf holds size x recvcount elements; rank r receives block r of the reduction. In
 * place when recvbuf is this rank's block of sendbuf.
 */
IBCOMM_API ibcomm_status_t ibcomm_reduce_scatter(ibcomm_t *comm, const void *sendbuf, void *recvbuf,
						 size_t recvcount, ibcomm_dtype_t dtype, ibcomm_op_t op);

/*
 * root's recvbuf (size x sendcount) receives every rank's sendbuf in rank order; recvbuf is
 * unused elsewhere. In place at the root when sendbuf is the root's block of recvbuf.
 */
IBCOMM_API ibcomm_status_t ibcomm_gather(ibcomm_t *comm, const void *sendbuf, void *recvbuf, size_t sendcount,
					 ibcomm_dtype_t dtype, int root);

/*
 * root's sendbuf (size x recvcount) is cut in blocks; rank r receives block r. sendbuf is
 * unused on other ranks. In place at the root when recvbuf is the root's block of sendbuf.
 */
IBCOMM_API ibcomm_status_t ibcomm_scatter(ibcomm_t *comm, const void *sendbuf, void *recvbuf, size_t recvcount,
					  ibcomm_dtype_t dtype, int root);

/* Block j of sendbuf goes to rank j, into block i of its recvbuf (i the sender). Never in place. */
IBCOMM_API ibcomm_status_t ibcomm_alltoall(ibcomm_t *comm, const void *sendbuf, void *recvbuf, size_t count,
					   ibcomm_dtype_t dtype);

/* Returns when every rank has entered the barrier. */
IBCOMM_API ibcomm_status_t ibcomm_barrier(ibcomm_t *comm);

/*
 * Tagged point-to-point, matched by (peer, tag) in order, independent of collective
 * traffic. A send may return before the matching recv is posted. The received message must
 * have exactly `count` elements (else _MISMATCH).
 */
IBCOMM_API ibcomm_status_t ibcomm_send(ibcomm_t *comm, const void *buf, size_t count, ibcomm_dtype_t dtype,
				       int peer, uint32_t tag);
IBCOMM_API ibcomm_status_t ibcomm_recv(ibcomm_t *comm, void *buf, size_t count, ibcomm_dtype_t dtype, int peer,
				       uint32_t tag);

/* A static description of status; never NULL. */
IBCOMM_API const char *ibcomm_strerror(ibcomm_status_t status);

/* The detail of comm's last error; with NULL, of this thread's last error. Never NULL. */
IBCOMM_API const char *ibcomm_last_error(const ibcomm_t *comm);

/* Size in bytes of one element of dtype; 0 for an invalid dtype. */
IBCOMM_API size_t ibcomm_dtype_size(ibcomm_dtype_t dtype);

#ifdef __cplusplus
}
#endif
#endif /* IBCOMM_H */
