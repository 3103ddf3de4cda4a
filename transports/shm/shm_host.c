/*
 * Which ranks share this rank's host, from what the ranks exchange at init (never from
 * launcher variables): the host name, the kernel's boot id and the IPC namespace. Two ranks
 * with the same three can map each other's segments in /dev/shm (same kernel, same IPC
 * namespace; /dev/shm of one mount namespace is assumed, as every launcher gives it). Whether
 * this rank can create files in /dev/shm is part of the identity, so that ranks without it
 * (a minimal container) count as elsewhere and auto picks the network for all, consistently.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "shm_int.h"

#define HOST_ID_MAX 400

/* "<host name>|<boot id>|<ipc namespace inode>|<shm usable>" of this process. */
static size_t host_id(const struct ibcomm *comm, char *buf, size_t cap)
{
	char host[256] = "", boot[64] = "";
	int fd = open("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC);
	int n;

	if (comm->set.test_host[0]) /* IBCOMM_TEST_HOST, a test hook */
		snprintf(host, sizeof(host), "%s", comm->set.test_host);
	else if (gethostname(host, sizeof(host) - 1))
		host[0] = '\0';
	if (fd >= 0) {
		ssize_t k = read(fd, boot, sizeof(boot) - 1);

		boot[k > 0 ? k : 0] = '\0';
		boot[strcspn(boot, "\n")] = '\0';
		close(fd);
	}
	n = snprintf(buf, cap, "%s|%s|%" PRIu64 "|%d", host, boot, ibc_shm_ns_inode("ipc"),
		     !access("/dev/shm", W_OK | X_OK));
	return n < 0 ? 0 : IBC_MIN((size_t)n, cap - 1);
}

ibcomm_status_t ibc_shm_same_host(struct ibcomm *comm, int *nother, char *others, size_t otherslen)
{
	ibc_deadline_t dl = ibc_deadline(comm->set.timeout_ms);
	char key[sizeof(comm->id) + 32], mine[HOST_ID_MAX], theirs[HOST_ID_MAX], err[IBC_ERRLEN];
	size_t len = host_id(comm, mine, sizeof(mine)), tlen, olen = 0;
	ibcomm_status_t st;
	bool dots = false; /* the list is full: "..." said so */

	*nother = 0;
	others[0] = '\0';
	snprintf(key, sizeof(key), "%s/host/%d", comm->id, comm->rank);
	st = ibc_boot_put(comm->boot, key, mine, len, err, sizeof(err));
	if (st)
		return ibc_err(comm, st, "rank %d: publishing this host's identity: %s", comm->rank, err);
	for (int r = 0; r < comm->size; r++) {
		if (r == comm->rank)
			continue;
		snprintf(key, sizeof(key), "%s/host/%d", comm->id, r);
		st = ibc_boot_get(comm->boot, key, theirs, sizeof(theirs), &tlen, dl, &comm->aborted, err, sizeof(err));
		if (st)
			return ibc_err(comm, st, "rank %d: waiting for rank %d's host identity: %s", comm->rank, r, err);
		if (tlen == len && !memcmp(theirs, mine, len))
			continue;
		if (olen + 20 < otherslen)
			olen += (size_t)snprintf(others + olen, otherslen - olen, "%s%d", *nother ? ", " : "", r);
		else if (!dots && olen + 4 < otherslen) {
			olen += (size_t)snprintf(others + olen, otherslen - olen, "...");
			dots = true;
		}
		(*nother)++;
	}
	return IBCOMM_OK;
}
