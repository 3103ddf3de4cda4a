/* ibcomm_ping's local report: the library's own choices on this host (see ping_local.h). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "ping_local.h"
#include "rendezvous.h"
#include "tcp_addr.h"

/* Messages are cut to their buffers on purpose: a long host name must not fail the report. */
#pragma GCC diagnostic ignored "-Wformat-truncation"

void ping_settings(const char *root, int rank, ibc_settings_t *set, struct ping_problems *pl)
{
	ibcomm_config_t cfg = IBCOMM_CONFIG_INIT;
	char host[256], port[16], err[IBC_ERRLEN];
	const char *why;

	/* rank and size do not matter here; a root that is not an address is never loopback */
	cfg.rank = 0;
	cfg.nranks = 1;
	cfg.root = root && !ibc_root_parse(root, host, sizeof(host), port, sizeof(port), &why) ? root : "0.0.0.0:1";
	if (ibc_settings_load(&cfg, set, err, sizeof(err)) == IBCOMM_OK)
		return;
	ping_problem_add(pl, rank, -1, "correct the variable or unset it", "%s", err);
	memset(set, 0, sizeof(*set));
	snprintf(set->root, sizeof(set->root), "%s", cfg.root);
	set->gid_index = -1;
	set->transport = IBC_TP_AUTO;
}

bool ping_tcp_choice(const ibc_settings_t *set, const struct ifaddrs *ifa, struct ping_report *r,
		     struct ping_problems *pl)
{
	ibc_tcp_addr_choice_t c;
	char why[400], names[256] = "", fix[320];
	const void *a;

	if (ibc_tcp_choose_addr(set->ifname, set->root, ifa, &c, why, sizeof(why))) {
		for (const struct ifaddrs *i = ifa; i; i = i->ifa_next) {
			if (!strstr(names, i->ifa_name) && strlen(names) + strlen(i->ifa_name) + 2 < sizeof(names)) {
				strcat(names, names[0] ? " " : "");
				strcat(names, i->ifa_name);
			}
		}
		if (strstr(why, "no such interface")) {
			snprintf(fix, sizeof(fix), "set IBCOMM_IFNAME to one of: %s (or unset it)", names);
			ping_problem_add(pl, r->rank, -1, fix, "IBCOMM_IFNAME=%s: no such network interface on %s",
					 set->ifname, r->host);
		} else {
			snprintf(fix, sizeof(fix),
				 "give %s an address (ip addr add ADDR/PREFIX dev %s) or choose another IBCOMM_IFNAME",
				 set->ifname, set->ifname);
			ping_problem_add(pl, r->rank, -1, fix, "%s", why);
		}
		return false;
	}
	snprintf(r->tcp_if, sizeof(r->tcp_if), "%s", c.ifname);
	a = c.ss.ss_family == AF_INET ? (const void *)&((const struct sockaddr_in *)&c.ss)->sin_addr
				      : (const void *)&((const struct sockaddr_in6 *)&c.ss)->sin6_addr;
	inet_ntop(c.ss.ss_family, a, r->tcp_addr, sizeof(r->tcp_addr));
	return true;
}

/* Copies port ip into p for the report: its first GIDs, and always the ones in `keep` (the chosen). */
static void copy_port(struct ping_port *p, const char *dev, const ibc_ri_port_t *ip, const int *keep, int nkeep)
{
	int room;

	memset(p, 0, sizeof(*p));
	snprintf(p->dev, sizeof(p->dev), "%s", dev);
	p->port = ip->port;
	p->state = ip->state;
	p->link_layer = ip->link_layer;
	p->active_mtu = ip->active_mtu;
	p->max_mtu = ip->max_mtu;
	snprintf(p->netdev, sizeof(p->netdev), "%s", ip->netdev);
	p->gid_used = -1;
	/* the report holds PING_MAX_GIDS entries: leave room for the chosen ones past them */
	room = PING_MAX_GIDS;
	for (int k = 0; k < nkeep; k++) {
		bool early = false;

		for (int g = 0; g < ip->ngids && g < PING_MAX_GIDS - nkeep; g++)
			early |= keep[k] >= 0 && ip->gids[g].e.index == keep[k];
		if (keep[k] >= 0 && !early)
			room--;
	}
	for (int g = 0; g < ip->ngids && p->ngids < room; g++) {
		p->gids[p->ngids].e = ip->gids[g].e;
		p->gids[p->ngids].prefix = ip->gids[g].prefix;
		p->ngids++;
	}
	for (int k = 0; k < nkeep; k++) {
		if (keep[k] < 0 || ping_port_gid(p, keep[k]))
			continue;
		for (int g = 0; g < ip->ngids && p->ngids < PING_MAX_GIDS; g++)
			if (ip->gids[g].e.index == keep[k]) {
				p->gids[p->ngids].e = ip->gids[g].e;
				p->gids[p->ngids].prefix = ip->gids[g].prefix;
				p->ngids++;
			}
	}
}

void ping_rdma_choice(const ibc_settings_t *set, const ibc_rdma_sys_t *sys, struct ping_report *r,
		      struct ping_problems *pl)
{
	char names[256] = "", why[400], fix[320];
	ibc_rdma_choice_t used;
	ibcomm_status_t st;
	bool found;

	r->use = -1;
	r->rdma_built = sys->built;
	r->ndevs = sys->ndevs;
	snprintf(r->rdma_note, sizeof(r->rdma_note), "%s", sys->note);
	for (int d = 0; d < sys->ndevs; d++) {
		if (strlen(names) + strlen(sys->devs[d].name) + 2 < sizeof(names)) {
			strcat(names, d ? " " : "");
			strcat(names, sys->devs[d].name);
		}
	}
	/* the library's choice with the settings */
	st = ibc_rdma_choose(sys, set->device, set->ib_port, set->gid_index, &used, why, sizeof(why));
	found = false;
	for (int d = 0; d < sys->ndevs; d++)
		found |= !strcmp(sys->devs[d].name, set->device);
	if (set->device[0] && !found) { /* the library says so too (or that there is no device at all) */
		if (sys->ndevs)
			snprintf(fix, sizeof(fix), "set IBCOMM_DEVICE to one of: %s (or unset it)", names);
		else
			snprintf(fix, sizeof(fix), "unset IBCOMM_DEVICE (this host has no RDMA device)");
		ping_problem_add(pl, r->rank, -1, fix, "IBCOMM_DEVICE=%s: no such RDMA device on %s", set->device,
				 r->host);
	} else if (set->device[0] && set->ib_port && st == IBCOMM_ERR_INVALID && strstr(why, "port ")) {
		ping_problem_add(pl, r->rank, -1, "bring the port up, or name an active one in IBCOMM_DEVICE",
				 "IBCOMM_DEVICE=%s:%d: %s", set->device, set->ib_port, why);
	}
	/* the ports, in the order the transport tries them; each active one's GID as it would choose */
	for (int d = 0; d < sys->ndevs; d++) {
		for (int k = 0; k < sys->devs[d].nports && r->nports < PING_MAX_PORTS; k++) {
			const ibc_ri_port_t *ip = &sys->devs[d].ports[k];
			bool chosen = used.dev == d && used.port_idx == k;
			struct ping_port *p = &r->ports[r->nports];
			ibc_rdma_choice_t pc, pa;
			char pwhy[400] = "", awhy[400];
			int idx = -1, autoidx = -1, keep[2];
			struct ping_problem scratch[4];
			struct ping_problems spl = { .v = scratch, .cap = 4 };
			bool active = ip->state == IBC_RI_PORT_ACTIVE;

			/* this port as the transport would take it when named (device:port) */
			if (active) {
				if (ibc_rdma_choose(sys, sys->devs[d].name, ip->port, set->gid_index, &pc, pwhy,
						    sizeof(pwhy)) == IBCOMM_OK)
					idx = pc.gid_index;
				if (ibc_rdma_choose(sys, sys->devs[d].name, ip->port, -1, &pa, awhy, sizeof(awhy)) ==
				    IBCOMM_OK)
					autoidx = pa.gid_index;
			}
			keep[0] = idx;
			keep[1] = autoidx;
			copy_port(p, sys->devs[d].name, ip, keep, 2);
			if (chosen)
				r->use = r->nports;
			/* problems only for the port in use (others: their GID is shown) */
			if (active)
				ping_diag_gids_chosen(p, set->gid_index, idx, autoidx, pwhy, r->rank, chosen ? pl : &spl);
			r->nports++;
		}
	}
	if (st == IBCOMM_OK && r->use >= 0 && r->ports[r->use].gid_used != used.gid_index)
		r->ports[r->use].gid_used = used.gid_index; /* (cannot differ: same decision) */
	if (st != IBCOMM_OK)
		r->use = -1; /* the transport would refuse: no port is used */
	ping_diag_ports(r, pl);
	if (sys->ndevs > 0 && !sys->built)
		ping_problem_add(pl, r->rank, -1,
				 "install rdma-core's development files (libibverbs-dev librdmacm-dev) and rebuild ibcomm",
				 "this host has RDMA devices (%s) but ibcomm was built without rdma-core", names);
	if (set->transport == IBC_TP_RDMA && r->use < 0 && sys->ndevs == 0)
		ping_problem_add(pl, r->rank, -1, "unset IBCOMM_TRANSPORT (or set it to tcp) on hosts without RDMA",
				 "IBCOMM_TRANSPORT=rdma but %s has no RDMA device", r->host);
}
