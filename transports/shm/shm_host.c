/*
 * What identifies this rank's host, for the ranks to exchange at init (lib/hosts.c; never
 * launcher variables): the host name, the kernel's boot id and the IPC namespace. Two ranks
 * with the same three can map each other's segments in /dev/shm (same kernel, same IPC
 * namespace; /dev/shm of one mount namespace is assumed, as every launcher gives it). A rank
 * that cannot create files in /dev/shm (a minimal container) is a host of its own (its pid
 * joins the identity): auto reaches it over the network, and the ranks beside it too.
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
	if (!access("/dev/shm", W_OK | X_OK))
		n = snprintf(buf, cap, "%s|%s|%" PRIu64, host, boot, ibc_shm_ns_inode("ipc"));
	else /* a host of its own: nobody maps its segments (it could not make them) */
		n = snprintf(buf, cap, "%s|%s|%" PRIu64 "|no-shm|%ld", host, boot, ibc_shm_ns_inode("ipc"),
			     (long)getpid());
	return n < 0 ? 0 : IBC_MIN((size_t)n, cap - 1);
}
