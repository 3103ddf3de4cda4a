/*
 * The RDMA transport's choice of device, port and GID on a description of the host
 * (rdma_info.h): plain data in, so the transport, ibcomm_ping and the tests (recorded GID
 * tables) run the same decision. Built with or without rdma-core.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "rdma_info.h"

static void list_devices(const ibc_rdma_sys_t *sys, char *buf, size_t cap)
{
	size_t off = 0;

	buf[0] = '\0';
	for (int d = 0; d < sys->ndevs; d++) {
		int w = snprintf(buf + off, cap - off, "%s%s", d ? " " : "", sys->devs[d].name);

		if (w < 0 || (size_t)w >= cap - off)
			break;
		off += (size_t)w;
	}
}

/* The GID of the chosen port: InfiniBand by LID (GID gid_index or 0, only reported); RoCE from the table. */
static ibcomm_status_t choose_gid(const ibc_rdma_sys_t *sys, const ibc_ri_port_t *p, int forced,
				  ibc_rdma_choice_t *c, char *why, size_t whylen)
{
	const char *dev = sys->devs[c->dev].name;
	ibc_rdma_gid_entry_t tab[IBC_RI_MAX_GIDS];
	char r[200];
	int idx;

	if (p->link_layer != IBC_RDMA_LL_ETH) {
		c->gid_index = forced >= 0 ? forced : 0;
		for (int i = 0; i < p->ngids; i++)
			if (p->gids[i].e.index == c->gid_index)
				memcpy(c->gid, p->gids[i].e.gid, 16);
		return IBCOMM_OK;
	}
	if (forced >= p->gid_tbl_len) {
		snprintf(why, whylen, "IBCOMM_GID_INDEX=%d but %s:%d has %d GID entries", forced, dev, p->port,
			 p->gid_tbl_len);
		return IBCOMM_ERR_INVALID;
	}
	for (int i = 0; i < p->ngids; i++)
		tab[i] = p->gids[i].e;
	idx = ibc_rdma_choose_gid(tab, p->ngids, forced, r, sizeof(r));
	if (idx < 0 && forced >= 0) {
		/* the table holds the non-empty entries only: an index below its length is empty */
		snprintf(why, whylen, "%s:%d: GID index %d is empty", dev, p->port, forced);
		return IBCOMM_ERR_INVALID;
	}
	if (idx < 0) {
		snprintf(why, whylen, "%s:%d: %s", dev, p->port, r);
		return IBCOMM_ERR_UNSUPPORTED;
	}
	c->gid_index = idx;
	for (int i = 0; i < p->ngids; i++)
		if (tab[i].index == idx)
			memcpy(c->gid, tab[i].gid, 16);
	return IBCOMM_OK;
}

ibcomm_status_t ibc_rdma_choose(const ibc_rdma_sys_t *sys, const char *device, int ib_port, int gid_index,
				ibc_rdma_choice_t *c, char *why, size_t whylen)
{
	const char *want = device && device[0] ? device : NULL;
	char names[256];

	memset(c, 0, sizeof(*c));
	c->dev = c->port_idx = c->gid_index = -1;
	if (!sys->ndevs) {
		snprintf(why, whylen,
			 "no RDMA device found (%s); for Soft-RoCE: modprobe rdma_rxe; rdma link add rxe0 type rxe netdev IFACE",
			 sys->note[0] ? sys->note : "none listed");
		return IBCOMM_ERR_UNSUPPORTED;
	}
	list_devices(sys, names, sizeof(names));
	for (int d = 0; d < sys->ndevs; d++) {
		const ibc_ri_dev_t *dv = &sys->devs[d];
		int k = -1;

		if (want && strcmp(want, dv->name))
			continue;
		if (dv->open_errno) {
			if (!want)
				continue;
			snprintf(why, whylen, "cannot open RDMA device %s: %s", dv->name, strerror(dv->open_errno));
			return IBCOMM_ERR_SYSTEM;
		}
		if (ib_port > 0) {
			for (int i = 0; i < dv->nports; i++)
				if (dv->ports[i].port == ib_port)
					k = i;
			if (k < 0 || dv->ports[k].state != IBC_RI_PORT_ACTIVE) {
				snprintf(why, whylen, "port %d of RDMA device %s is %s", ib_port, dv->name,
					 k < 0 ? "not there" : "not active");
				return IBCOMM_ERR_INVALID;
			}
		} else {
			for (int i = 0; i < dv->nports && k < 0; i++)
				if (dv->ports[i].state == IBC_RI_PORT_ACTIVE)
					k = i;
		}
		if (k >= 0) {
			c->dev = d;
			c->port_idx = k;
			c->port = dv->ports[k].port;
			c->link_layer = dv->ports[k].link_layer;
			return choose_gid(sys, &dv->ports[k], gid_index, c, why, whylen);
		}
		if (want) {
			snprintf(why, whylen, "RDMA device %s has no active port", dv->name);
			return IBCOMM_ERR_UNSUPPORTED;
		}
	}
	if (want) {
		snprintf(why, whylen, "IBCOMM_DEVICE=%s: no such RDMA device (found: %s)", want, names);
		return IBCOMM_ERR_INVALID;
	}
	snprintf(why, whylen, "no RDMA device has an active port (found: %s)", names);
	return IBCOMM_ERR_UNSUPPORTED;
}
