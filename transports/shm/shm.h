/*
 * The shared-memory transport's segment layout (internal; tests include it to craft and
 * corrupt segments).
 *
 * Every rank of a communicator owns one segment in /dev/shm, named
 *   /ibcomm.<uid>.<job>.<comm id>.<rank>.<pid>
 * (<job>: 16 hex digits hashing the rendezvous address and the job key), created O_EXCL with
 * mode 0600 and published through the bootstrap under "<comm id>/shm/<rank>". It holds the
 * rings the other ranks (and the owner itself) write into:
 *
 *   [0, 4096)      header page
 *     0   the static header, little-endian (wire.h), IBC_SHM_HDR_LEN bytes:
 *         u32 magic, u16 version, u16 header page size, u64 segment size, u32 owner uid,
 *         u32 owner pid, u64 owner pid namespace inode, u32 rank, u32 nranks, u32 nslots,
 *         u32 max_chunk, u32 nchan, u64 ring stride, u32 checksum (FNV-1a of the bytes before)
 *     64  atomic u32 mapped: ranks that mapped the segment (the owner included); the rank
 *         whose mapping makes it nranks unlinks the name
 *     128 atomic u32 bell (the owner's futex word: bumped by every put into the segment and
 *         by every release of a slot the owner wrote), atomic u32 sleeping (the owner
 *         announced it sleeps: 1 on the bell, and only then do others FUTEX_WAKE it; 2 in
 *         poll() on its doorbell FIFO (mix), and only then do others write a byte into it)
 *     (rank and nranks count the ranks the segment serves: every rank of the communicator, or
 *     under the mix only those of the owner's host, in rank order; a writer's ring is its index)
 *   [4096 + (writer * nchan + chan) * ring stride, ...)   one ring per writer and channel:
 *     0   atomic u64 head (chunks the writer put; written by the writer only)
 *     64  atomic u64 tail (chunks the owner released; written by the owner only)
 *     128 nslots descriptors {u32 len, u32 tag} (written by the writer before head moves)
 *     then nslots slots of max_chunk bytes (each rounded up to 64)
 *
 * The atomic words are in the host's byte order (a segment never leaves its host). A writer
 * holds nslots - (head - tail) credits. The mapper checks everything in the static header
 * against the file (fstat: owner, mode, size) and against its own geometry before it trusts a
 * single offset; a peer's head is checked (head - released <= nslots, len <= max_chunk) at
 * every read.
 */
#ifndef IBC_SHM_H
#define IBC_SHM_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "ibc.h"

#define IBC_SHM_MAGIC 0x53434249u /* "IBCS" */
#define IBC_SHM_VERSION 1
#define IBC_SHM_PAGE 4096u
#define IBC_SHM_HDR_LEN 64u
#define IBC_SHM_LINE 64u
#define IBC_SHM_DEFAULT_CHUNK (256u * 1024u)
#define IBC_SHM_DEFAULT_SLOTS 4u
#define IBC_SHM_SPIN_US 50u     /* how long a waiter polls its bell before it sleeps */
#define IBC_SHM_SLICE_MS 100u   /* a sleeper looks at liveness this often */
#define IBC_SHM_NAME_MAX 128u

/* The static header, decoded. */
struct ibc_shm_hdr {
	uint32_t magic;
	uint16_t version, page;
	uint64_t size;
	uint32_t uid, pid;
	uint64_t pidns;
	uint32_t rank, nranks, nslots, max_chunk, nchan;
	uint64_t ring_stride;
};

/* The owner's live words in the header page. */
struct ibc_shm_live {
	_Alignas(64) atomic_uint mapped;
	_Alignas(64) atomic_uint bell;
	atomic_uint sleeping;
};

/* A ring's control block; descriptors and slots follow. */
struct ibc_shm_ring {
	_Alignas(64) _Atomic uint64_t head;
	_Alignas(64) _Atomic uint64_t tail;
	struct {
		uint32_t len, tag;
	} desc[];
};
_Static_assert(sizeof(struct ibc_shm_ring) == 128, "descriptors start at byte 128 of a ring");

/* ---- shm_seg.c ---- */

/* Bytes of one ring and of a whole segment for this geometry (0 when it overflows). */
IBC_HIDDEN uint64_t ibc_shm_ring_stride(uint32_t nslots, uint32_t max_chunk);
IBC_HIDDEN uint64_t ibc_shm_seg_size(uint32_t nranks, uint32_t nslots, uint32_t max_chunk);
/* Offset of slot `slot`'s bytes in a ring. */
IBC_HIDDEN uint64_t ibc_shm_slot_off(uint32_t nslots, uint32_t max_chunk, uint32_t slot);

IBC_HIDDEN void ibc_shm_hdr_encode(uint8_t buf[IBC_SHM_HDR_LEN], const struct ibc_shm_hdr *h);
/* Decodes and checks magic, version, checksum. 0, or -1 with a static reason in *why. */
IBC_HIDDEN int ibc_shm_hdr_decode(const uint8_t buf[IBC_SHM_HDR_LEN], struct ibc_shm_hdr *h, const char **why);

/* The segment name of comm's rank for process pid (NUL-terminated, < IBC_SHM_NAME_MAX), and
 * what the names of all comm's segments start with ("/ibcomm.<uid>.<job>.<comm id>."). */
IBC_HIDDEN void ibc_shm_name_prefix(const struct ibcomm *comm, char *name, size_t cap);
IBC_HIDDEN void ibc_shm_name(const struct ibcomm *comm, int rank, long pid, char *name, size_t cap);

/* Inode of /proc/self/ns/<ns> ("pid", "ipc"), 0 when unknown. */
IBC_HIDDEN uint64_t ibc_shm_ns_inode(const char *ns);

/*
 * A mapped segment. create: a new one of this geometry (O_EXCL, 0600, space reserved).
 * map: an existing one, checked against `want` (rank, nranks, nslots, max_chunk, nchan) and
 * this process's uid. Both return 0, or -1 with the reason in why (naming the segment).
 */
struct ibc_shm_seg {
	uint8_t *base;
	size_t size;
	struct ibc_shm_live *live;
	struct ibc_shm_hdr hdr;
};
IBC_HIDDEN int ibc_shm_seg_create(const char *name, const struct ibc_shm_hdr *want, struct ibc_shm_seg *seg, char *why,
				  size_t whylen);
IBC_HIDDEN int ibc_shm_seg_map(const char *name, const struct ibc_shm_hdr *want, struct ibc_shm_seg *seg, char *why,
			       size_t whylen);
IBC_HIDDEN void ibc_shm_seg_unmap(struct ibc_shm_seg *seg);

/*
 * ---- for the per-peer composite (transports/mix/mix.c) ----
 * create_host: the transport for the ranks of this rank's host only (comm->hosts): segments
 * with one ring per such rank (header rank and nranks count them, in rank order), and a
 * doorbell per rank: a FIFO "/dev/shm<segment name>.bell" of mode 0600, created and unlinked
 * with the segment, opened O_RDWR by the owner and by every mapper (so no write to it ever
 * raises SIGPIPE), into which a ringer writes a byte when the owner sleeps in poll()
 * (sleeping == 2) rather than on the futex.
 * moved: whether our bell moved since the last look (and remembers it).
 * sleep_begin: announces a sleep on the doorbell; the FIFO's descriptor to poll, or -1 when
 * the bell already moved (or the communicator was aborted): do not sleep. sleep_end: ends it
 * (call it after every sleep_begin) and drains the FIFO.
 * liveness: bootstrap notices (an error) and peers whose process is gone (*news).
 */
IBC_HIDDEN ibcomm_status_t ibc_shm_create_host(struct ibcomm *comm, ibc_tp_t **tpp);
/* The chunk and slots create_host would choose for a segment of `ranks` rings, without
 * creating anything (the mix of a rank alone on its host, which has no shared-memory part). */
IBC_HIDDEN ibcomm_status_t ibc_shm_geometry(struct ibcomm *comm, uint32_t ranks, unsigned long *chunk,
					    unsigned long *nslots);
IBC_HIDDEN bool ibc_shm_moved(ibc_tp_t *tp);
IBC_HIDDEN int ibc_shm_sleep_begin(ibc_tp_t *tp);
IBC_HIDDEN void ibc_shm_sleep_end(ibc_tp_t *tp);
IBC_HIDDEN ibcomm_status_t ibc_shm_liveness(ibc_tp_t *tp, bool *news);

static inline struct ibc_shm_ring *ibc_shm_ring(const struct ibc_shm_seg *s, int writer, int chan)
{
	return (struct ibc_shm_ring *)(s->base + IBC_SHM_PAGE +
				       ((uint64_t)writer * s->hdr.nchan + (uint64_t)chan) * s->hdr.ring_stride);
}

#endif
