/*
 * Device, port and GID-table enumeration through libibverbs and /sys/class/infiniband (GID
 * types and netdevs): what the RDMA transport chooses from (ibc_rdma_choose) and what
 * ibcomm_ping reports.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include <infiniband/verbs.h>

#include "rdma_info.h"

/* Reads the first line of path into buf without its newline; false when unreadable. */
static bool ri_read_line(const char *path, char *buf, size_t cap)
{
	FILE *f = fopen(path, "r");
	bool ok;

	if (!f)
		return false;
	ok = fgets(buf, (int)cap, f) != NULL;
	fclose(f);
	if (ok)
		buf[strcspn(buf, "\n")] = '\0';
	return ok;
}

static int ri_popcount32(uint32_t v)
{
	return __builtin_popcount(v);
}

/* The prefix length of IPv4 address a (network order) on netdev, from getifaddrs; 0 unknown. */
static uint8_t ri_ipv4_prefix(struct ifaddrs *ifa, const char *netdev, const uint8_t a[4])
{
	for (struct ifaddrs *i = ifa; i; i = i->ifa_next) {
		const struct sockaddr_in *sa = (const struct sockaddr_in *)i->ifa_addr;
		const struct sockaddr_in *nm = (const struct sockaddr_in *)i->ifa_netmask;

		if (!sa || sa->sin_family != AF_INET || !nm)
			continue;
		if (netdev[0] && strcmp(i->ifa_name, netdev))
			continue;
		if (memcmp(&sa->sin_addr.s_addr, a, 4))
			continue;
		return (uint8_t)ri_popcount32(nm->sin_addr.s_addr);
	}
	return 0;
}

static void ri_port(struct ibv_context *ctx, int port, ibc_ri_port_t *p, struct ifaddrs *ifa, int forced)
{
	struct ibv_port_attr pa;
	bool eth;
	int empty_run = 0;

	memset(p, 0, sizeof(*p));
	p->port = port;
	if (ibv_query_port(ctx, (uint8_t)port, &pa))
		return;
	eth = pa.link_layer == IBV_LINK_LAYER_ETHERNET;
	p->state = pa.state;
	p->link_layer = eth ? IBC_RDMA_LL_ETH : IBC_RDMA_LL_IB;
	p->active_mtu = pa.active_mtu;
	p->max_mtu = pa.max_mtu;
	p->lid = pa.lid;
	p->gid_tbl_len = pa.gid_tbl_len;
	for (int i = 0; i < pa.gid_tbl_len && p->ngids < IBC_RI_MAX_GIDS; i++) {
		ibc_ri_gid_t *g = &p->gids[p->ngids];
		union ibv_gid raw;
		char path[512], line[64];

		/* tables can hold hundreds of empty entries (but read up to a forced index) */
		if (empty_run >= IBC_RI_EMPTY_RUN && i > forced)
			break;
		if (ibv_query_gid(ctx, (uint8_t)port, i, &raw) || ibc_rdma_gid_is_zero(raw.raw)) {
			empty_run++;
			continue;
		}
		empty_run = 0;
		memset(g, 0, sizeof(*g));
		g->e.index = i;
		memcpy(g->e.gid, raw.raw, 16);
		snprintf(path, sizeof(path), "%s/ports/%d/gid_attrs/types/%d", ctx->device->ibdev_path, port, i);
		if (ri_read_line(path, line, sizeof(line)))
			g->e.type = ibc_rdma_gid_type_parse(line, eth);
		else
			g->e.type = eth ? IBC_GID_ROCE_V2 : IBC_GID_IB; /* no sysfs types: old kernel */
		snprintf(path, sizeof(path), "%s/ports/%d/gid_attrs/ndevs/%d", ctx->device->ibdev_path, port, i);
		if (ri_read_line(path, line, sizeof(line)))
			snprintf(g->netdev, sizeof(g->netdev), "%.31s", line);
		if (g->netdev[0] && !p->netdev[0])
			memcpy(p->netdev, g->netdev, sizeof(p->netdev));
		if (ibc_rdma_gid_is_ipv4(g->e.gid))
			g->prefix = ri_ipv4_prefix(ifa, g->netdev, g->e.gid + 12);
		p->ngids++;
	}
}

ibcomm_status_t ibc_rdma_info_query(ibc_rdma_sys_t *sys, int gid_index)
{
	struct ibv_device **devs;
	struct ifaddrs *ifa = NULL;
	int n = 0;

	if (!sys)
		return IBCOMM_ERR_INVALID;
	memset(sys, 0, sizeof(*sys));
	sys->built = true;
	devs = ibv_get_device_list(&n);
	if (!devs) {
		snprintf(sys->note, sizeof(sys->note), "no RDMA device (ibv_get_device_list: %s)", strerror(errno));
		return IBCOMM_OK;
	}
	if (n == 0) {
		snprintf(sys->note, sizeof(sys->note), "no RDMA device (nothing in /sys/class/infiniband)");
		ibv_free_device_list(devs);
		return IBCOMM_OK;
	}
	if (getifaddrs(&ifa))
		ifa = NULL;
	for (int i = 0; i < n && sys->ndevs < IBC_RI_MAX_DEVS; i++) {
		ibc_ri_dev_t *d = &sys->devs[sys->ndevs];
		struct ibv_device_attr da;
		struct ibv_context *ctx;

		memset(d, 0, sizeof(*d));
		snprintf(d->name, sizeof(d->name), "%s", ibv_get_device_name(devs[i]));
		ctx = ibv_open_device(devs[i]);
		if (!ctx) {
			d->open_errno = errno ? errno : EIO;
			snprintf(sys->note, sizeof(sys->note), "cannot open %s: %s", d->name, strerror(d->open_errno));
			sys->ndevs++;
			continue;
		}
		if (ibv_query_device(ctx, &da) == 0)
			for (int port = 1; port <= da.phys_port_cnt && d->nports < IBC_RI_MAX_PORTS; port++)
				ri_port(ctx, port, &d->ports[d->nports++], ifa, gid_index);
		ibv_close_device(ctx);
		sys->ndevs++;
	}
	if (n > IBC_RI_MAX_DEVS)
		snprintf(sys->note, sizeof(sys->note), "%d RDMA devices; only the first %d are shown", n,
			 IBC_RI_MAX_DEVS);
	if (ifa)
		freeifaddrs(ifa);
	ibv_free_device_list(devs);
	return IBCOMM_OK;
}
