/*
 * Creating and destroying the shared-memory transport.
 *
 * create: every rank makes its segment (shm.h), publishes its name under
 * "<comm id>/shm/<rank>", then maps every other rank's segment, checking it, and adds itself
 * to that segment's mapped count; the rank whose mapping completes the count unlinks the
 * name. A barrier through the bootstrap ("<comm id>/shm-mapped") follows, after which each
 * owner unlinks its own name too (normally gone already): once create returns on any rank,
 * nothing of the communicator is left in /dev/shm, and a rank killed later (kill -9 included)
 * leaves nothing behind. A rank that fails in create unlinks its own name, and the names of
 * this communicator's segments whose owner is gone (unlink_orphans): a rank killed inside
 * create, before every other rank mapped its segment, makes the others fail in create (they
 * wait for it), so they remove what it left. The mappings stay until destroy.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "shm_int.h"

IBC_HIDDEN ibcomm_status_t ibc_shm_create(struct ibcomm *comm, ibc_tp_t **tpp);
IBC_HIDDEN void ibc_shm_destroy(ibc_tp_t *tp);

/*
 * Chunk and slots from IBCOMM_SHM_CHUNK / IBCOMM_SHM_SLOTS, within the memory cap: this
 * rank's segment holds ranks x channels x slots x chunk bytes, reserved at create. Defaults
 * shrink to fit (chunk down to 4 KiB, then slots); explicit settings fail when over the cap.
 * As the mix's part: within its share, for the ranks of the largest host (comm->part_count),
 * so that every rank of the mix, whatever its host, comes to the same geometry.
 */
static ibcomm_status_t geometry(struct ibcomm *comm, uint32_t ranks, unsigned long *chunk, unsigned long *nslots)
{
	unsigned long c = comm->set.shm_chunk ? comm->set.shm_chunk : IBC_SHM_DEFAULT_CHUNK;
	unsigned long n = comm->set.shm_slots ? comm->set.shm_slots : IBC_SHM_DEFAULT_SLOTS;
	char how[160];

	if (comm->part_count > 0 && (uint32_t)comm->part_count > ranks)
		ranks = (uint32_t)comm->part_count;
	while (!comm->set.shm_chunk && c > 4096 && ibc_shm_seg_size(ranks, (uint32_t)n, (uint32_t)c) > ibc_mem_limit(comm))
		c /= 2;
	while (!comm->set.shm_slots && n > 1 && ibc_shm_seg_size(ranks, (uint32_t)n, (uint32_t)c) > ibc_mem_limit(comm))
		n /= 2;
	snprintf(how, sizeof(how), "%u ranks x %d channels x %lu slots x %lu-byte chunks", ranks, IBC_NCHAN, n, c);
	*chunk = c;
	*nslots = n;
	return ibc_mem_check(comm, "shared-memory", ibc_shm_seg_size(ranks, (uint32_t)n, (uint32_t)c), how,
			     "IBCOMM_SHM_CHUNK or IBCOMM_SHM_SLOTS", comm->set.shm_chunk || comm->set.shm_slots);
}

/* A name published by another rank: "/" then at most NAME_MAX - 1 bytes, no other '/'. */
static bool name_ok(const char *name, size_t len)
{
	if (len < 2 || len >= IBC_SHM_NAME_MAX || name[0] != '/')
		return false;
	for (size_t i = 1; i < len; i++)
		if (name[i] == '/' || name[i] == '\0')
			return false;
	return true;
}

/* The doorbell FIFO of segment `name` (mix only): "/dev/shm<name>.bell". */
static void bell_path(const char *name, char *path, size_t cap)
{
	snprintf(path, cap, "/dev/shm%s.bell", name);
}

/* Opens rank r's doorbell (O_RDWR: see shm.h), checking it is a FIFO of this user. */
static ibcomm_status_t open_bell(struct shm *s, int r, const char *name)
{
	char path[IBC_SHM_NAME_MAX + 16];
	struct stat st;
	int fd;

	bell_path(name, path, sizeof(path));
	fd = open(path, O_RDWR | O_NONBLOCK | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return ibc_err(s->comm, IBCOMM_ERR_TRANSPORT, "rank %d: shared-memory transport: opening rank %d's doorbell %s: %m",
			       s->comm->rank, r, path);
	if (fstat(fd, &st) || !S_ISFIFO(st.st_mode) || st.st_uid != getuid()) {
		close(fd);
		return ibc_err(s->comm, IBCOMM_ERR_TRANSPORT,
			       "rank %d: shared-memory transport: rank %d's doorbell %s is not a FIFO of this user", s->comm->rank,
			       r, path);
	}
	s->peers[r].bell_fd = fd;
	return IBCOMM_OK;
}

/* Maps rank r's segment (its name from the bootstrap) into s->peers[r]. */
static ibcomm_status_t map_peer(struct shm *s, int r, unsigned nmap, uint64_t pidns, ibc_deadline_t dl)
{
	struct ibcomm *comm = s->comm;
	struct shm_peer *p = &s->peers[r];
	struct ibc_shm_hdr want = s->mine.hdr;
	char key[sizeof(comm->id) + 32], name[IBC_SHM_NAME_MAX], why[400];
	ibcomm_status_t st;
	size_t len;

	snprintf(key, sizeof(key), "%s/shm/%d", comm->id, r);
	st = ibc_boot_get(comm->boot, key, name, sizeof(name) - 1, &len, dl, &comm->aborted, why, sizeof(why));
	if (st)
		return ibc_err(comm, st, "rank %d: waiting for the shared-memory segment of rank %d: %s", comm->rank, r, why);
	if (len >= sizeof(name) || !name_ok(name, len))
		return ibc_err(comm, IBCOMM_ERR_RENDEZVOUS, "rank %d: rank %d published a malformed shared-memory segment name",
			       comm->rank, r);
	name[len] = '\0';
	want.rank = (uint32_t)p->ring;
	if (ibc_shm_seg_map(name, &want, &p->seg, why, sizeof(why)))
		return ibc_err(comm, IBCOMM_ERR_TRANSPORT, "rank %d: shared-memory transport, rank %d's segment: %s",
			       comm->rank, r, why);
	if (pidns && p->seg.hdr.pidns == pidns)
		p->pid = (pid_t)p->seg.hdr.pid;
	/* the doorbell before the count: whoever completes the count unlinks both names */
	if (s->bell_fd >= 0 && (st = open_bell(s, r, name)))
		return st;
	if (atomic_fetch_add(&p->seg.live->mapped, 1) + 1 == nmap) { /* every rank has it now */
		if (s->bell_fd >= 0) {
			char path[IBC_SHM_NAME_MAX + 16];

			bell_path(name, path, sizeof(path));
			unlink(path); /* the doorbell first: a segment's name outlives its doorbell's */
		}
		shm_unlink(name);
	}
	return IBCOMM_OK;
}

/*
 * Whether the segment `name` (of this user) belongs to a process that is gone: its
 * header names a pid of our pid namespace that no longer runs, or it has no complete header
 * (its owner was killed while creating it; one still creating it fails at the barrier anyway).
 */
static bool owner_gone(const char *name, uint64_t pidns)
{
	uint8_t buf[IBC_SHM_HDR_LEN];
	struct ibc_shm_hdr h;
	const char *bad;
	struct stat st;
	bool gone = false;
	int fd;

	fd = shm_open(name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW, 0);
	if (fd < 0)
		return false;
	if (!fstat(fd, &st) && st.st_uid == getuid()) {
		if (pread(fd, buf, sizeof(buf), 0) != (ssize_t)sizeof(buf) || ibc_shm_hdr_decode(buf, &h, &bad))
			gone = true;
		else
			gone = pidns && h.pidns == pidns && ibc_shm_pid_gone((pid_t)h.pid);
	}
	close(fd);
	return gone;
}

/*
 * After create failed on this rank the communicator cannot come up (every rank waits for all
 * in "shm-mapped"): the names of its segments whose owners are gone are removed, so that a
 * rank killed inside create leaves nothing in /dev/shm. Live owners' names stay (a rank still
 * mapping them fails on what really went wrong, not on a missing name).
 */
static void unlink_orphans(struct shm *s, uint64_t pidns)
{
	char prefix[IBC_SHM_NAME_MAX], name[NAME_MAX + 2];
	struct ibcomm *comm = s->comm;
	DIR *d = opendir("/dev/shm");
	struct dirent *e;
	size_t plen;

	if (!d)
		return;
	ibc_shm_name_prefix(comm, prefix, sizeof(prefix));
	plen = strlen(prefix) - 1; /* without the leading '/' */
	while ((e = readdir(d))) {
		int rank, end = 0;
		long pid;

		if (strncmp(e->d_name, prefix + 1, plen) ||
		    sscanf(e->d_name + plen, "%d.%ld%n", &rank, &pid, &end) != 2 || e->d_name[plen + (size_t)end] ||
		    rank < 0 || rank >= comm->size || rank == comm->rank)
			continue;
		name[0] = '/';
		memcpy(name + 1, e->d_name, strnlen(e->d_name, NAME_MAX) + 1);
		if (!owner_gone(name, pidns))
			continue;
		{
			char path[IBC_SHM_NAME_MAX + 16];

			bell_path(name, path, sizeof(path));
			unlink(path); /* its doorbell, if it made one (mix) */
		}
		if (!shm_unlink(name))
			ibc_cinfo(comm, "rank %d: removed %s, the shared-memory segment rank %d left (its process %ld is gone)",
				  comm->rank, name, rank, pid);
	}
	closedir(d);
}

static void shm_free(struct shm *s)
{
	for (int r = 0; s->peers && r < s->comm->size; r++) {
		if (s->peers[r].bell_fd >= 0 && s->peers[r].bell_fd != s->bell_fd)
			close(s->peers[r].bell_fd);
		if (r != s->comm->rank)
			ibc_shm_seg_unmap(&s->peers[r].seg);
	}
	ibc_shm_seg_unmap(&s->mine);
	if (s->bell_path[0])
		unlink(s->bell_path); /* normally gone already */
	if (s->bell_fd >= 0)
		close(s->bell_fd);
	if (s->name[0])
		shm_unlink(s->name); /* normally gone already */
	free(s->peers);
	free(s);
}

/*
 * The transport for every rank of comm (host_only false), or for the ranks on this rank's
 * host only (the mix's part; with doorbells, shm.h).
 */
static ibcomm_status_t shm_create(struct ibcomm *comm, bool host_only, ibc_tp_t **tpp)
{
	ibc_deadline_t dl = ibc_deadline(comm->set.timeout_ms);
	struct ibc_shm_hdr want = { 0 };
	unsigned long chunk, nslots;
	char key[sizeof(comm->id) + 48], why[400];
	uint64_t pidns = ibc_shm_ns_inode("pid");
	const int *host_of = comm->hosts.host_of;
	ibcomm_status_t st;
	struct shm *s;
	int nmap = 0;

	if (comm->size < 1 || comm->rank < 0 || comm->rank >= comm->size || (host_only && !host_of))
		return ibc_err(comm, IBCOMM_ERR_INVALID, "shared-memory transport: rank %d of %d%s", comm->rank, comm->size,
			       host_only && !host_of ? " without a host map" : "");
	for (int r = 0; r < comm->size; r++)
		nmap += !host_only || host_of[r] == host_of[comm->rank];
	st = geometry(comm, (uint32_t)nmap, &chunk, &nslots);
	if (st)
		return st;
	s = calloc(1, sizeof(*s));
	if (!s)
		return ibc_err(comm, IBCOMM_ERR_NOMEM, "rank %d: no memory for the shared-memory transport", comm->rank);
	s->tp.ops = &ibc_shm_ops;
	s->tp.comm = comm;
	s->tp.max_chunk = chunk;
	s->tp.nslots = (unsigned)nslots;
	s->comm = comm;
	ibc_notices_init(&s->notes);
	s->bell_fd = -1;
	s->peers = calloc((size_t)comm->size, sizeof(*s->peers));
	if (!s->peers) {
		free(s);
		return ibc_err(comm, IBCOMM_ERR_NOMEM, "rank %d: no memory for the shared-memory transport", comm->rank);
	}
	for (int r = 0, k = 0; r < comm->size; r++) {
		bool served = !host_only || host_of[r] == host_of[comm->rank];

		s->peers[r].ring = served ? k++ : -1;
		s->peers[r].bell_fd = -1;
	}

	want.uid = (uint32_t)getuid();
	want.pid = (uint32_t)getpid();
	want.pidns = pidns;
	want.rank = (uint32_t)s->peers[comm->rank].ring;
	want.nranks = (uint32_t)nmap;
	want.nslots = (uint32_t)nslots;
	want.max_chunk = (uint32_t)chunk;
	ibc_shm_name(comm, comm->rank, (long)getpid(), s->name, sizeof(s->name));
	if (ibc_shm_seg_create(s->name, &want, &s->mine, why, sizeof(why))) {
		s->name[0] = '\0'; /* not ours to unlink */
		st = ibc_err(comm, IBCOMM_ERR_SYSTEM, "rank %d: shared-memory transport: %s", comm->rank, why);
		goto err;
	}
	s->peers[comm->rank].seg = s->mine;
	if (host_only) {
		bell_path(s->name, s->bell_path, sizeof(s->bell_path));
		if (mkfifo(s->bell_path, 0600)) {
			st = ibc_err(comm, IBCOMM_ERR_SYSTEM, "rank %d: shared-memory transport: mkfifo %s: %m", comm->rank,
				     s->bell_path);
			s->bell_path[0] = '\0'; /* not ours to unlink */
			goto err;
		}
		s->bell_fd = open(s->bell_path, O_RDWR | O_NONBLOCK | O_CLOEXEC | O_NOFOLLOW);
		if (s->bell_fd < 0) {
			st = ibc_err(comm, IBCOMM_ERR_SYSTEM, "rank %d: shared-memory transport: opening %s: %m", comm->rank,
				     s->bell_path);
			goto err;
		}
		s->peers[comm->rank].bell_fd = s->bell_fd;
	}
	if (nmap == 1) {
		if (s->bell_path[0])
			unlink(s->bell_path);
		shm_unlink(s->name);
	}

	snprintf(key, sizeof(key), "%s/shm/%d", comm->id, comm->rank);
	st = ibc_boot_put(comm->boot, key, s->name, strlen(s->name), why, sizeof(why));
	if (st) {
		st = ibc_err(comm, st, "rank %d: publishing the shared-memory segment %s: %s", comm->rank, s->name, why);
		goto err;
	}
	for (int r = 0; r < comm->size; r++) {
		if (r == comm->rank || s->peers[r].ring < 0)
			continue;
		st = map_peer(s, r, (unsigned)nmap, pidns, dl);
		if (st)
			goto err;
	}
	/* everyone mapped everything: no name needs to stay (a peer may destroy before we map it);
	 * with host_only, the barrier of this host's ranks (hosts are numbered by their lowest rank) */
	if (host_only)
		snprintf(key, sizeof(key), "%s/shm-mapped/%d", comm->id, host_of[comm->rank]);
	else
		snprintf(key, sizeof(key), "%s/shm-mapped", comm->id);
	st = ibc_boot_allgather(comm->boot, key, s->peers[comm->rank].ring, nmap, "", 0, NULL, 0, NULL, dl, &comm->aborted,
				why, sizeof(why));
	if (st) {
		st = ibc_err(comm, st, "rank %d: shared-memory transport: waiting for every rank to map the segments: %s",
			     comm->rank, why);
		goto err;
	}
	if (s->bell_path[0])
		unlink(s->bell_path);
	s->bell_path[0] = '\0';
	shm_unlink(s->name);
	ibc_cinfo(comm, "rank %d: shared-memory transport: segment %s of %zu bytes (%u slots of %zu bytes per peer and channel)",
		  comm->rank, s->name, s->mine.size, s->tp.nslots, s->tp.max_chunk);
	*tpp = &s->tp;
	return IBCOMM_OK;
err:
	unlink_orphans(s, pidns);
	shm_free(s);
	return st;
}

ibcomm_status_t ibc_shm_create(struct ibcomm *comm, ibc_tp_t **tpp)
{
	return shm_create(comm, false, tpp);
}

ibcomm_status_t ibc_shm_create_host(struct ibcomm *comm, ibc_tp_t **tpp)
{
	return shm_create(comm, true, tpp);
}

ibcomm_status_t ibc_shm_geometry(struct ibcomm *comm, uint32_t ranks, unsigned long *chunk, unsigned long *nslots)
{
	return geometry(comm, ranks, chunk, nslots);
}

void ibc_shm_destroy(ibc_tp_t *tp)
{
	if (tp)
		shm_free((struct shm *)tp);
}
