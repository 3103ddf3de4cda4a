/*
 * Segments of the shared-memory transport (layout: shm.h): naming, the static header, and
 * creating and mapping a segment with every check a mapper owes itself before it trusts an
 * offset in a file another process wrote.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "shm.h"
#include "wire.h"

#define ROUND_UP(x, a) (((x) + (a)-1) / (a) * (a))

uint64_t ibc_shm_ring_stride(uint32_t nslots, uint32_t max_chunk)
{
	uint64_t desc = ROUND_UP(sizeof(struct ibc_shm_ring) + 8ull * nslots, IBC_SHM_LINE);
	uint64_t slot = ROUND_UP((uint64_t)max_chunk, IBC_SHM_LINE);

	if (!nslots || !max_chunk || nslots > (1u << 20))
		return 0;
	return ROUND_UP(desc + slot * nslots, IBC_SHM_PAGE);
}

uint64_t ibc_shm_seg_size(uint32_t nranks, uint32_t nslots, uint32_t max_chunk)
{
	uint64_t stride = ibc_shm_ring_stride(nslots, max_chunk), rings = (uint64_t)nranks * IBC_NCHAN;

	if (!stride || !nranks || rings > (UINT64_MAX - IBC_SHM_PAGE) / stride)
		return 0;
	return IBC_SHM_PAGE + rings * stride;
}

uint64_t ibc_shm_slot_off(uint32_t nslots, uint32_t max_chunk, uint32_t slot)
{
	return ROUND_UP(sizeof(struct ibc_shm_ring) + 8ull * nslots, IBC_SHM_LINE) +
	       (uint64_t)slot * ROUND_UP((uint64_t)max_chunk, IBC_SHM_LINE);
}

static uint32_t fnv1a32(const uint8_t *p, size_t n)
{
	uint32_t h = 2166136261u;

	for (size_t i = 0; i < n; i++)
		h = (h ^ p[i]) * 16777619u;
	return h;
}

void ibc_shm_hdr_encode(uint8_t buf[IBC_SHM_HDR_LEN], const struct ibc_shm_hdr *h)
{
	ibc_wbuf_t w = ibc_wbuf(buf, IBC_SHM_HDR_LEN);

	memset(buf, 0, IBC_SHM_HDR_LEN);
	ibc_w_u32(&w, IBC_SHM_MAGIC);
	ibc_w_u16(&w, IBC_SHM_VERSION);
	ibc_w_u16(&w, IBC_SHM_PAGE);
	ibc_w_u64(&w, h->size);
	ibc_w_u32(&w, h->uid);
	ibc_w_u32(&w, h->pid);
	ibc_w_u64(&w, h->pidns);
	ibc_w_u32(&w, h->rank);
	ibc_w_u32(&w, h->nranks);
	ibc_w_u32(&w, h->nslots);
	ibc_w_u32(&w, h->max_chunk);
	ibc_w_u32(&w, h->nchan);
	ibc_w_u64(&w, h->ring_stride);
	ibc_w_u32(&w, fnv1a32(buf, w.len));
}

int ibc_shm_hdr_decode(const uint8_t buf[IBC_SHM_HDR_LEN], struct ibc_shm_hdr *h, const char **why)
{
	ibc_rbuf_t r = ibc_rbuf(buf, IBC_SHM_HDR_LEN);
	uint32_t sum;
	size_t body;

	h->magic = ibc_r_u32(&r);
	h->version = ibc_r_u16(&r);
	h->page = ibc_r_u16(&r);
	h->size = ibc_r_u64(&r);
	h->uid = ibc_r_u32(&r);
	h->pid = ibc_r_u32(&r);
	h->pidns = ibc_r_u64(&r);
	h->rank = ibc_r_u32(&r);
	h->nranks = ibc_r_u32(&r);
	h->nslots = ibc_r_u32(&r);
	h->max_chunk = ibc_r_u32(&r);
	h->nchan = ibc_r_u32(&r);
	h->ring_stride = ibc_r_u64(&r);
	body = r.off;
	sum = ibc_r_u32(&r);
	if (!r.ok) {
		*why = "header shorter than its fields";
		return -1;
	}
	if (h->magic != IBC_SHM_MAGIC) {
		*why = "not an ibcomm segment (bad magic)";
		return -1;
	}
	if (h->version != IBC_SHM_VERSION) {
		*why = "segment of another version of ibcomm";
		return -1;
	}
	if (sum != fnv1a32(buf, body)) {
		*why = "corrupted header (checksum mismatch)";
		return -1;
	}
	if (h->page != IBC_SHM_PAGE || h->nchan != IBC_NCHAN) {
		*why = "header page size or channel count differs from this library's";
		return -1;
	}
	return 0;
}

void ibc_shm_name_prefix(const struct ibcomm *comm, char *name, size_t cap)
{
	uint64_t h = 14695981039346656037ull;
	const char *parts[2] = { comm->set.root, comm->set.job_key };

	for (int i = 0; i < 2; i++) {
		for (const char *p = parts[i]; *p; p++)
			h = (h ^ (uint8_t)*p) * 1099511628211ull;
		h = (h ^ 0xff) * 1099511628211ull;
	}
	snprintf(name, cap, "/ibcomm.%u.%016" PRIx64 ".%.40s.", (unsigned)getuid(), h, comm->id);
}

void ibc_shm_name(const struct ibcomm *comm, int rank, long pid, char *name, size_t cap)
{
	size_t len;

	ibc_shm_name_prefix(comm, name, cap);
	len = strlen(name);
	snprintf(name + len, cap - len, "%d.%ld", rank, pid);
}

uint64_t ibc_shm_ns_inode(const char *ns)
{
	char path[64];
	struct stat st;

	snprintf(path, sizeof(path), "/proc/self/ns/%s", ns);
	return stat(path, &st) ? 0 : (uint64_t)st.st_ino;
}

static int seg_mmap(int fd, const char *name, size_t size, struct ibc_shm_seg *seg, char *why, size_t whylen)
{
	void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);

	if (p == MAP_FAILED) {
		snprintf(why, whylen, "mapping shared-memory segment %s (%zu bytes): %s", name, size, strerror(errno));
		return -1;
	}
	seg->base = p;
	seg->size = size;
	seg->live = (struct ibc_shm_live *)(seg->base + IBC_SHM_HDR_LEN);
	return 0;
}

int ibc_shm_seg_create(const char *name, const struct ibc_shm_hdr *want, struct ibc_shm_seg *seg, char *why,
		       size_t whylen)
{
	uint64_t size = ibc_shm_seg_size(want->nranks, want->nslots, want->max_chunk);
	int fd, e = 0;

	memset(seg, 0, sizeof(*seg));
	if (!size || size > SIZE_MAX / 2) {
		snprintf(why, whylen, "shared-memory segment too large (%u ranks x %u slots x %u bytes)", want->nranks,
			 want->nslots, want->max_chunk);
		return -1;
	}
	fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0) {
		snprintf(why, whylen, "creating shared-memory segment %s: %s", name, strerror(errno));
		return -1;
	}
	/* the space is reserved now: a full /dev/shm is an error here, not a SIGBUS later */
	if (ftruncate(fd, (off_t)size)) {
		e = errno;
		goto err;
	}
	e = posix_fallocate(fd, 0, (off_t)size);
	if (e)
		goto err;
	if (seg_mmap(fd, name, size, seg, why, whylen)) {
		close(fd);
		shm_unlink(name);
		return -1;
	}
	close(fd);
	seg->hdr = *want;
	seg->hdr.magic = IBC_SHM_MAGIC;
	seg->hdr.version = IBC_SHM_VERSION;
	seg->hdr.page = IBC_SHM_PAGE;
	seg->hdr.size = size;
	seg->hdr.nchan = IBC_NCHAN;
	seg->hdr.ring_stride = ibc_shm_ring_stride(want->nslots, want->max_chunk);
	atomic_store(&seg->live->mapped, 1);
	ibc_shm_hdr_encode(seg->base, &seg->hdr);
	return 0;
err:
	snprintf(why, whylen, "reserving %" PRIu64 " bytes for shared-memory segment %s: %s (is /dev/shm full?)", size,
		 name, strerror(e));
	close(fd);
	shm_unlink(name);
	return -1;
}

int ibc_shm_seg_map(const char *name, const struct ibc_shm_hdr *want, struct ibc_shm_seg *seg, char *why,
		    size_t whylen)
{
	uint8_t buf[IBC_SHM_HDR_LEN];
	struct stat st;
	const char *bad;
	uint64_t size;
	ssize_t n;
	int fd;

	memset(seg, 0, sizeof(*seg));
	fd = shm_open(name, O_RDWR | O_CLOEXEC | O_NOFOLLOW, 0);
	if (fd < 0) {
		snprintf(why, whylen, "opening shared-memory segment %s: %s", name, strerror(errno));
		return -1;
	}
	if (fstat(fd, &st)) {
		snprintf(why, whylen, "fstat of shared-memory segment %s: %s", name, strerror(errno));
		goto err;
	}
	if (st.st_uid != getuid() || (st.st_mode & 077)) {
		snprintf(why, whylen,
			 "shared-memory segment %s belongs to uid %u with mode %03o, not to this user (uid %u, mode 600): refusing it",
			 name, (unsigned)st.st_uid, (unsigned)(st.st_mode & 0777), (unsigned)getuid());
		goto err;
	}
	n = st.st_size >= (off_t)IBC_SHM_HDR_LEN ? pread(fd, buf, sizeof(buf), 0) : 0;
	if (n != (ssize_t)sizeof(buf)) {
		snprintf(why, whylen, "shared-memory segment %s is truncated (%lld bytes, no complete header)", name,
			 (long long)st.st_size);
		goto err;
	}
	if (ibc_shm_hdr_decode(buf, &seg->hdr, &bad)) {
		snprintf(why, whylen, "shared-memory segment %s: %s", name, bad);
		goto err;
	}
	if (seg->hdr.uid != getuid()) {
		snprintf(why, whylen, "shared-memory segment %s says it belongs to uid %u, not to this user (uid %u)", name,
			 seg->hdr.uid, (unsigned)getuid());
		goto err;
	}
	if (seg->hdr.rank != want->rank || seg->hdr.nranks != want->nranks || seg->hdr.nslots != want->nslots ||
	    seg->hdr.max_chunk != want->max_chunk) {
		snprintf(why, whylen,
			 "shared-memory segment %s is rank %u of %u with %u slots of %u bytes; expected rank %u of %u with %u slots of %u bytes (do all ranks use the same IBCOMM_SHM_CHUNK and IBCOMM_SHM_SLOTS?)",
			 name, seg->hdr.rank, seg->hdr.nranks, seg->hdr.nslots, seg->hdr.max_chunk, want->rank,
			 want->nranks, want->nslots, want->max_chunk);
		goto err;
	}
	size = ibc_shm_seg_size(want->nranks, want->nslots, want->max_chunk);
	if (seg->hdr.size != size || seg->hdr.ring_stride != ibc_shm_ring_stride(want->nslots, want->max_chunk) ||
	    (uint64_t)st.st_size != size) {
		snprintf(why, whylen,
			 "shared-memory segment %s has the wrong size (file %lld bytes, header %" PRIu64 ", expected %" PRIu64 ")",
			 name, (long long)st.st_size, seg->hdr.size, size);
		goto err;
	}
	if (seg_mmap(fd, name, (size_t)size, seg, why, whylen))
		goto err;
	close(fd);
	return 0;
err:
	close(fd);
	return -1;
}

void ibc_shm_seg_unmap(struct ibc_shm_seg *seg)
{
	if (seg->base)
		munmap(seg->base, seg->size);
	seg->base = NULL;
	seg->live = NULL;
}
