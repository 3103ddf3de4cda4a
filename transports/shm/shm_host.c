/*
 * What identifies this rank's host, for the ranks to exchange at init (lib/hosts.c; never
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

size_t ibc_shm_host_id(const struct ibcomm *comm, char *buf, size_t cap)
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
