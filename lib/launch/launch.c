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
	struct sockaddr_storage ss, got;
	socklen_t sl, gl = sizeof(got);
	char host[INET6_ADDRSTRLEN + IF_NAMESIZE + 2];
	ibcomm_status_t st;
	int fd, one = 1;

	st = choose(ifname, &ss, &sl, err, errlen);
	if (st)
		return st;
	if (ss.ss_family == AF_INET) {
		struct sockaddr_in *a = (struct sockaddr_in *)&ss;

		inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host));
		if (any && !(ifname && *ifname)) {
			a->sin_addr.s_addr = htonl(INADDR_ANY);
			strcpy(host, "0.0.0.0");
		}
		a->sin_port = htons((uint16_t)port);
	} else {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
		char scope[IF_NAMESIZE + 1] = "";

		inet_ntop(AF_INET6, &a->sin6_addr, host + 1, sizeof(host) - 1);
		if (a->sin6_scope_id && if_indextoname(a->sin6_scope_id, scope + 1))
			scope[0] = '%';
		host[0] = '[';
		strcat(host, scope);
		strcat(host, "]");
		a->sin6_port = htons((uint16_t)port);
	}
	fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		snprintf(err, errlen, "socket: %s", strerror(errno));
		return IBCOMM_ERR_SYSTEM;
	}
	if (port)
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&ss, sl) || listen(fd, SOMAXCONN) ||
	    getsockname(fd, (struct sockaddr *)&got, &gl)) {
		int e = errno;

		close(fd);
		snprintf(err, errlen, "cannot listen on %s port %d: %s", host, port, strerror(e));
		return e == EADDRINUSE ? IBCOMM_ERR_RENDEZVOUS : IBCOMM_ERR_SYSTEM;
	}
	port = ntohs(got.ss_family == AF_INET ? ((struct sockaddr_in *)&got)->sin_port :
						((struct sockaddr_in6 *)&got)->sin6_port);
	if ((size_t)snprintf(addr, addrlen, "%s:%d", host, port) >= addrlen) {
		close(fd);
		snprintf(err, errlen, "the address %s:%d is too long", host, port);
		return IBCOMM_ERR_INVALID;
	}
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
