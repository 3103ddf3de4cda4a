/*
 * The small interface every transport implements, shaped by RDMA semantics.
 *
 * Each receiver exposes, per peer and per channel, a ring of `nslots` registered slots of
 * `max_chunk` bytes. A writer puts a chunk (at most max_chunk bytes) into the next free slot
 * of the peer (RDMA: WRITE WITH IMMEDIATE; TCP: a frame the receiver reads into the slot) and
 * the receiver is told (tag, length). The receiver takes chunks in order with get(), uses the
 * bytes in place, and release()s the slot, which returns one credit to the writer: a writer
 * never has more than nslots chunks outstanding per peer and channel, so it never overwrites
 * data not yet consumed.
 *
 * Connections are made lazily by the first put() to a peer. Everything that may block takes
 * an absolute deadline (ibc_deadline_t, 0 = none) and returns IBCOMM_ERR_TIMEOUT when it
 * passes. Errors name the peer in the communicator's last error. Verbs and socket types never
 * appear here.
 */
#ifndef IBC_TRANSPORT_H
#define IBC_TRANSPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ibcomm.h"

struct ibcomm;
typedef uint64_t ibc_deadline_t; /* CLOCK_MONOTONIC in ms; 0 = no deadline */

/* Positive "not now" answer of the non-blocking calls; never returned to users. */
#define IBC_AGAIN 1

enum ibc_chan {
	IBC_CHAN_COLL = 0, /* collectives: both sides run the same algorithm, in order */
	IBC_CHAN_P2P = 1,  /* tagged send/recv, independent of collectives */
	IBC_NCHAN = 2
};

typedef struct ibc_chunk {
	void *data;  /* the chunk in the receiver's slot; valid until release() */
	size_t len;
	uint32_t tag;
	int peer;
	int chan;
	uint32_t slot; /* transport's own */
} ibc_chunk_t;

/* Counters every transport keeps (tests and ibcomm_ping read them). */
typedef struct ibc_tp_counters {
	uint64_t puts;          /* chunks written */
	uint64_t bytes_put;     /* payload bytes written into peers' slots */
	uint64_t gets;          /* chunks received */
	uint64_t bytes_got;
	uint64_t credit_waits;  /* puts that found no free slot */
	uint32_t max_inflight;  /* most chunks outstanding (written, not yet released) to one peer+chan */
	uint32_t connects;      /* connections this rank opened */
	uint64_t zc_puts;       /* puts sent straight from registered user memory (no staging copy) */
	uint32_t qps;           /* RDMA: RC queue pairs made (one per peer talked to, lazily); TCP: 0 */
} ibc_tp_counters_t;

typedef struct ibc_tp ibc_tp_t;

struct ibc_tp_ops {
	const char *name; /* "tcp", "rdma" */
	/*
	 * Optional: whether create() can work on this rank (device, limits), without waiting for
	 * any other rank; on failure comm's last error says why. IBCOMM_TRANSPORT=auto asks it.
	 */
	ibcomm_status_t (*probe)(struct ibcomm *comm);
	/* Creates comm's transport and publishes its address through comm's rendezvous. */
	ibcomm_status_t (*create)(struct ibcomm *comm, ibc_tp_t **tp);
	void (*destroy)(ibc_tp_t *tp);
	/*
	 * Writes buf[0..len) (len <= max_chunk, may be 0) into the next free slot of peer's
	 * channel chan with tag. Returns once buf may be reused. With no free slot: waits for
	 * a credit when `wait`, else returns IBC_AGAIN.
	 */
	int (*put)(ibc_tp_t *tp, int peer, int chan, uint32_t tag, const void *buf, size_t len, bool wait,
		   ibc_deadline_t deadline);
	/* The next chunk from peer on chan, in order. Nothing yet: waits when `wait`, else IBC_AGAIN. */
	int (*get)(ibc_tp_t *tp, int peer, int chan, ibc_chunk_t *chunk, bool wait, ibc_deadline_t deadline);
	/* Gives c's slot back to its writer (one credit). Chunks of a peer+chan are released in order. */
	ibcomm_status_t (*release)(ibc_tp_t *tp, ibc_chunk_t *c);
	/*
	 * Blocks until something arrives (a chunk or a credit, from any peer) or the deadline
	 * passes (IBCOMM_ERR_TIMEOUT) or the communicator is aborted; never busy-spins.
	 */
	ibcomm_status_t (*wait)(ibc_tp_t *tp, ibc_deadline_t deadline);
	/* Wakes a wait() from another thread or a signal handler (ibcomm_abort). Async-signal-safe. */
	void (*interrupt)(ibc_tp_t *tp);
	/*
	 * Optional (NULL: nothing to do, e.g. TCP). reg() registers [addr, addr+len) for
	 * zero-copy and returns the transport's handle, or NULL with *st set and the reason in
	 * the communicator's last error. dereg() releases a handle reg() returned; no write
	 * from it may be in flight (flush() saw to that).
	 */
	void *(*reg)(ibc_tp_t *tp, void *addr, size_t len, ibcomm_status_t *st);
	void (*dereg)(ibc_tp_t *tp, void *h);
	/*
	 * Optional, with flush (NULL: puts always copy). set_zc_source() names the zero-copy
	 * source of the collective in progress: the caller's sendbuf bytes [buf, buf+len), which
	 * nobody writes during the call, and the reg() handle of a valid registration covering
	 * them. A put whose buf lies inside may send from it in place and return before the bytes
	 * left. flush() waits until every such put has completed, so that the caller's buffer may
	 * change again; then set_zc_source(tp, NULL, 0, NULL) ends the call's source.
	 */
	void (*set_zc_source)(ibc_tp_t *tp, const void *buf, size_t len, void *handle);
	ibcomm_status_t (*flush)(ibc_tp_t *tp, ibc_deadline_t deadline);
	/*
	 * Optional: what a network transport needs to serve as the other half of the per-peer
	 * composite (transports/mix/mix.c). One round of wait() that also watches fd (POLLIN;
	 * -1: none; never read here), for at most timeout_ms (0: only services what is ready, no
	 * spinning; -1: no limit). Returns IBC_WAIT_EVENTS when something arrived (a chunk, a
	 * credit, a wake), IBC_WAIT_FD when only fd became readable, 0 when nothing did, or an
	 * error (with its message: a dead peer, an abort).
	 */
	int (*wait_fd)(ibc_tp_t *tp, int fd, int timeout_ms);
};
#define IBC_WAIT_EVENTS 1
#define IBC_WAIT_FD 2

/* Common head of every transport's state (first member of the transport's own struct). */
struct ibc_tp {
	const struct ibc_tp_ops *ops;
	struct ibcomm *comm;
	size_t max_chunk;  /* largest put */
	unsigned nslots;   /* slots per peer and channel */
	ibc_tp_counters_t cnt;
};

extern const struct ibc_tp_ops ibc_tcp_ops;
extern const struct ibc_tp_ops ibc_shm_ops; /* shared memory, for ranks on one host */
/*
 * shm_host.c: this process's host identity, "<host name>|<boot id>|<ipc namespace inode>",
 * with "|no-shm|<pid>" after it when this rank cannot create files in /dev/shm
 * (IBCOMM_TEST_HOST replaces the host name): ranks with equal ones share a host and can map
 * each other's segments (lib/hosts.c exchanges them). Returns its length.
 */
size_t ibc_shm_host_id(const struct ibcomm *comm, char *buf, size_t cap) __attribute__((visibility("hidden")));
extern const struct ibc_tp_ops ibc_rdma_ops; /* the RDMA transport, or a stub whose create() says why not */
/*
 * The per-peer composite (transports/mix/mix.c): shared memory for the peers on this host,
 * the named network transport for the others; "shm+tcp", "shm+rdma".
 */
extern const struct ibc_tp_ops ibc_mix_tcp_ops;
extern const struct ibc_tp_ops ibc_mix_rdma_ops;
/* The part of a transport that carries peer's traffic: tp itself unless tp is a mix. */
const ibc_tp_t *ibc_tp_part(const ibc_tp_t *tp, int peer) __attribute__((visibility("hidden")));

/* Convenience wrappers used by the algorithms. */
static inline int ibc_put(ibc_tp_t *tp, int peer, int chan, uint32_t tag, const void *buf, size_t len, bool wait,
			  ibc_deadline_t dl)
{
	return tp->ops->put(tp, peer, chan, tag, buf, len, wait, dl);
}
static inline int ibc_get(ibc_tp_t *tp, int peer, int chan, ibc_chunk_t *c, bool wait, ibc_deadline_t dl)
{
	return tp->ops->get(tp, peer, chan, c, wait, dl);
}
static inline ibcomm_status_t ibc_release(ibc_tp_t *tp, ibc_chunk_t *c)
{
	return tp->ops->release(tp, c);
}
static inline ibcomm_status_t ibc_wait(ibc_tp_t *tp, ibc_deadline_t dl)
{
	return tp->ops->wait(tp, dl);
}

#endif
