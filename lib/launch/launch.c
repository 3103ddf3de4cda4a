/*
 * Which launcher started this process (see launch.h for the order), and the rendezvous
 * address agreed through it.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "launch.h"
#include "sock.h"
#include "tcp_addr.h"

ibcomm_status_t ibc_launch_detect(struct ibc_launch *l, char *err, size_t errlen)
{
	ibcomm_status_t st;

	memset(l, 0, sizeof(*l));
	l->kind = IBC_LAUNCH_NONE;
	l->rank = l->size = l->local_rank = l->local_size = -1;
	if (ibc_launch_env("PMIX_RANK") || ibc_launch_env("PMIX_NAMESPACE")) {
		if (ibc_pmix_present())
			return ibc_pmix_detect(l, err, errlen);
		ibc_info("PMIX_RANK/PMIX_NAMESPACE are set but this ibcomm was built without PMIx (configure --with-pmix): trying the other launchers");
	}
	st = ibc_pmi1_detect(l, err, errlen);
	if (st || l->kind != IBC_LAUNCH_NONE)
		return st;
	return ibc_slurm_detect(l, err, errlen);
}

/* The address to bind: the one the TCP transport takes (lib/tcp_addr.c, shared with ibcomm_ping). */
static ibcomm_status_t choose(const char *ifname, struct sockaddr_storage *ss, socklen_t *sl, char *err,
			      size_t errlen)
{
	ibc_tcp_addr_choice_t c;
	struct ifaddrs *ifa;
	ibcomm_status_t st;

	if (getifaddrs(&ifa)) {
		snprintf(err, errlen, "listing network interfaces: %s", strerror(errno));
		return IBCOMM_ERR_SYSTEM;
	}
	st = ibc_tcp_choose_addr(ifname, NULL, ifa, &c, err, errlen);
	freeifaddrs(ifa);
	if (st)
		return st;
	*ss = c.ss;
	*sl = c.sl;
	return IBCOMM_OK;
}

ibcomm_status_t ibc_launch_listen(const char *ifname, bool any, int port, int *fdp, char *addr, size_t addrlen,
				  char *err, size_t errlen)
{
	struct sockaddr_storage ss;
	socklen_t sl;
	char where[INET6_ADDRSTRLEN + IF_NAMESIZE + 16];
	ibcomm_status_t st;
	int fd;

	st = choose(ifname, &ss, &sl, err, errlen);
	if (st)
		return st;
	if (ss.ss_family == AF_INET) {
		struct sockaddr_in *a = (struct sockaddr_in *)&ss;

		if (any && !(ifname && *ifname))
			a->sin_addr.s_addr = htonl(INADDR_ANY);
		a->sin_port = htons((uint16_t)port);
	} else {
		((struct sockaddr_in6 *)&ss)->sin6_port = htons((uint16_t)port);
	}
	ibc_sock_format((struct sockaddr *)&ss, where, sizeof(where));
	fd = ibc_sock_listen_opt((struct sockaddr *)&ss, sl, port ? IBC_SOCK_REUSEADDR : 0);
	if (fd < 0) {
		int e = errno;

		snprintf(err, errlen, "cannot listen on %s: %s", where, strerror(e));
		return e == EADDRINUSE ? IBCOMM_ERR_RENDEZVOUS : IBCOMM_ERR_SYSTEM;
	}
	if (ibc_sock_bound(fd, where, sizeof(where))) {
		snprintf(err, errlen, "the address of the socket listening on %s: %s", where, strerror(errno));
		close(fd);
		return IBCOMM_ERR_SYSTEM;
	}
	if (strlen(where) >= addrlen) {
		close(fd);
		snprintf(err, errlen, "the address %s is too long", where);
		return IBCOMM_ERR_INVALID;
	}
	strcpy(addr, where);
	*fdp = fd;
	return IBCOMM_OK;
}

ibcomm_status_t ibc_launch_root(const struct ibc_launch *l, const char *ifname, long timeout_ms, char *root,
				size_t rootlen, int *listen_fd, char *err, size_t errlen)
{
	static atomic_uint generation;
	unsigned gen = atomic_fetch_add(&generation, 1);
	char why[IBC_ERRLEN - 128], host[256];
	ibcomm_status_t st;
	int fd = -1, port;

	*listen_fd = -1;
	switch (l->kind) {
	case IBC_LAUNCH_PMIX:
	case IBC_LAUNCH_PMI1:
		if (l->rank == 0) {
			st = ibc_launch_listen(ifname, false, 0, &fd, root, rootlen, why, sizeof(why));
			if (st) {
				snprintf(err, errlen, "%s: rank 0 cannot open the rendezvous port: %s", l->name, why);
				return st;
			}
		}
		st = l->kind == IBC_LAUNCH_PMIX ? ibc_pmix_exchange(l, gen, root, rootlen, timeout_ms, err, errlen) :
						  ibc_pmi1_exchange(l, gen, root, rootlen, timeout_ms, err, errlen);
		if (st) {
			if (fd >= 0)
				close(fd);
			return st;
		}
		break;
	case IBC_LAUNCH_SLURM:
		st = ibc_slurm_root(l, host, sizeof(host), &port, err, errlen);
		if (st)
			return st;
		if (l->rank == 0) {
			char addr[300];

			st = ibc_launch_listen(ifname, true, port, &fd, addr, sizeof(addr), why, sizeof(why));
			if (st) {
				snprintf(err, errlen,
					 "Slurm: rank 0 cannot serve the rendezvous on %s port %d (%s): %s; set IBCOMM_ROOT or run srun --resv-ports",
					 host, port,
					 getenv("SLURM_STEP_RESV_PORTS") ? "the first of SLURM_STEP_RESV_PORTS" :
									   "derived from SLURM_JOB_ID and SLURM_STEP_ID",
					 why);
				return st;
			}
		}
		if (strchr(host, ':'))
			snprintf(root, rootlen, "[%s]:%d", host, port);
		else
			snprintf(root, rootlen, "%s:%d", host, port);
		break;
	default:
		snprintf(err, errlen, "no launcher");
		return IBCOMM_ERR_INVALID;
	}
	ibc_info("rank %d of %d (local rank %d of %d; -1: not given): rendezvous at %s, agreed through %s", l->rank,
		 l->size, l->local_rank, l->local_size, root, l->name);
	*listen_fd = fd;
	return IBCOMM_OK;
}
