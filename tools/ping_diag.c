/* ibcomm_ping: the report's wire form and the diagnoses (pure functions). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ping_diag.h"
#include "wire.h"

#define PING_REPORT_MAGIC 0x474e4950u /* "PING" */
#define PING_REPORT_VERSION 1

void ping_problem_add(struct ping_problems *pl, int rank, int peer, const char *fix, const char *fmt, ...)
{
	struct ping_problem *p;
	va_list ap;

	if (pl->n >= pl->cap) {
		pl->dropped++;
		return;
	}
	p = &pl->v[pl->n++];
	p->rank = rank;
	p->peer = peer;
	va_start(ap, fmt);
	vsnprintf(p->what, sizeof(p->what), fmt, ap);
	va_end(ap);
	snprintf(p->fix, sizeof(p->fix), "%s", fix);
}

const char *ping_gid_type_str(int type)
{
	switch (type) {
	case IBC_GID_ROCE_V2: return "RoCEv2";
	case IBC_GID_ROCE_V1: return "RoCEv1";
	case IBC_GID_IB: return "IB";
	default: return "?";
	}
}

const char *ping_port_state_str(int state)
{
	static const char *const names[] = { "NOP", "DOWN", "INIT", "ARMED", "ACTIVE", "ACTIVE_DEFER" };

	return state >= 0 && state < 6 ? names[state] : "UNKNOWN";
}

const char *ping_gid_family_str(const uint8_t gid[16])
{
	if (ibc_rdma_gid_is_ipv4(gid))
		return "IPv4";
	if (ibc_rdma_gid_is_link_local(gid))
		return "link-local";
	return "IPv6";
}

const struct ping_gid *ping_port_gid(const struct ping_port *p, int idx)
{
	for (int i = 0; p && i < p->ngids; i++)
		if (p->gids[i].e.index == idx)
			return &p->gids[i];
	return NULL;
}

const struct ping_port *ping_used_port(const struct ping_report *r)
{
	return r->use >= 0 && r->use < r->nports ? &r->ports[r->use] : NULL;
}

static int choose(const struct ping_port *p, int forced, char *why, size_t whylen)
{
	ibc_rdma_gid_entry_t tab[PING_MAX_GIDS];

	for (int i = 0; i < p->ngids; i++)
		tab[i] = p->gids[i].e;
	return ibc_rdma_choose_gid(tab, p->ngids, forced, why, whylen);
}

/* The first RoCEv2 entry, preferring IPv4-mapped; -1 when none. */
static int first_v2(const struct ping_port *p)
{
	int any = -1;

	for (int i = 0; i < p->ngids; i++) {
		const struct ping_gid *g = &p->gids[i];

		if (g->e.type != IBC_GID_ROCE_V2 || ibc_rdma_gid_is_link_local(g->e.gid) ||
		    ibc_rdma_gid_is_zero(g->e.gid))
			continue;
		if (ibc_rdma_gid_is_ipv4(g->e.gid))
			return g->e.index;
		if (any < 0)
			any = g->e.index;
	}
	return any;
}

static const char *netdev_or(const struct ping_port *p)
{
	return p->netdev[0] ? p->netdev : "NETDEV";
}

int ping_diag_gids(struct ping_port *p, int forced, int rank, struct ping_problems *pl)
{
	char why[256];
	int autoidx, idx;

	if (p->link_layer != IBC_RDMA_LL_ETH)
		return ping_diag_gids_chosen(p, forced, forced >= 0 ? forced : 0, 0, "", rank, pl);
	autoidx = choose(p, -1, why, sizeof(why));
	idx = choose(p, forced, why, sizeof(why));
	return ping_diag_gids_chosen(p, forced, idx, autoidx, why, rank, pl);
}

int ping_diag_gids_chosen(struct ping_port *p, int forced, int idx, int autoidx, const char *why, int rank,
			  struct ping_problems *pl)
{
	int before = pl->n + pl->dropped;
	char gs[64], fix[320];
	const struct ping_gid *g;

	p->gid_used = -1;
	if (p->link_layer != IBC_RDMA_LL_ETH) {
		/* InfiniBand: addressed by LID inside the subnet; GID 0 is the port GID */
		p->gid_used = idx;
		return 0;
	}
	if (p->ngids == 0) {
		snprintf(fix, sizeof(fix), "give %s an IP address (ip addr add ADDR/PREFIX dev %s): RoCE derives its GIDs from it",
			 netdev_or(p), netdev_or(p));
		ping_problem_add(pl, rank, -1, fix, "%s:%d has an empty GID table: RoCE cannot address this port",
				 p->dev, p->port);
		return pl->n + pl->dropped - before;
	}
	if (idx < 0) {
		if (forced >= 0) {
			if (autoidx >= 0)
				snprintf(fix, sizeof(fix), "unset IBCOMM_GID_INDEX (ibcomm then uses index %d) or set IBCOMM_GID_INDEX=%d",
					 autoidx, autoidx);
			else
				snprintf(fix, sizeof(fix), "give %s an IPv4 address (ip addr add ADDR/PREFIX dev %s) and unset IBCOMM_GID_INDEX",
					 netdev_or(p), netdev_or(p));
			ping_problem_add(pl, rank, -1, fix, "IBCOMM_GID_INDEX=%d on %s:%d: %s", forced, p->dev, p->port, why);
		} else {
			snprintf(fix, sizeof(fix),
				 "give %s an IPv4 address (ip addr add ADDR/PREFIX dev %s): RoCE then adds a routable RoCEv2 GID",
				 netdev_or(p), netdev_or(p));
			ping_problem_add(pl, rank, -1, fix,
					 "%s:%d has only link-local fe80:: or empty GIDs: none can reach another host", p->dev,
					 p->port);
		}
		return pl->n + pl->dropped - before;
	}
	p->gid_used = idx;
	g = ping_port_gid(p, idx);
	if (!g)
		return pl->n + pl->dropped - before;
	ibc_rdma_gid_str(g->e.gid, gs, sizeof(gs));
	if (ibc_rdma_gid_is_link_local(g->e.gid)) {
		if (autoidx >= 0)
			snprintf(fix, sizeof(fix), "unset IBCOMM_GID_INDEX (ibcomm then uses index %d) or set IBCOMM_GID_INDEX=%d",
				 autoidx, autoidx);
		else
			snprintf(fix, sizeof(fix), "give %s an IPv4 address (ip addr add ADDR/PREFIX dev %s) and unset IBCOMM_GID_INDEX",
				 netdev_or(p), netdev_or(p));
		ping_problem_add(pl, rank, -1, fix,
				 "IBCOMM_GID_INDEX=%d selects %s on %s:%d, a link-local GID: not routable across hosts (a single-host test still passes)",
				 idx, gs, p->dev, p->port);
	} else if (g->e.type == IBC_GID_ROCE_V1) {
		int v2 = first_v2(p);

		if (v2 >= 0) {
			snprintf(fix, sizeof(fix), "set IBCOMM_GID_INDEX=%d (RoCEv2) or unset it", v2);
			ping_problem_add(pl, rank, -1, fix,
					 "GID index %d (%s) on %s:%d is RoCEv1 where RoCEv2 is available: RoCEv1 is not routable and cannot talk to RoCEv2 peers",
					 idx, gs, p->dev, p->port);
		} else {
			snprintf(fix, sizeof(fix),
				 "enable RoCEv2 on %s (mlx5: cma_roce_mode -d %s -p %d -m 2; see /sys/class/infiniband/%s/ports/%d/gid_attrs/types)",
				 p->dev, p->dev, p->port, p->dev, p->port);
			ping_problem_add(pl, rank, -1, fix,
					 "%s:%d has only RoCEv1 GIDs (uses index %d, %s): RoCEv1 is not routable and cannot talk to RoCEv2 peers (a single-host test still passes)",
					 p->dev, p->port, idx, gs);
		}
	}
	return pl->n + pl->dropped - before;
}

int ping_diag_ports(const struct ping_report *r, struct ping_problems *pl)
{
	int before = pl->n + pl->dropped;
	char states[256] = "", fix[320];
	size_t off = 0;

	if (r->ndevs == 0 || !r->rdma_built || r->use >= 0)
		return 0;
	/* an ACTIVE port not chosen: IBCOMM_DEVICE or the GID table says why, not the link */
	for (int i = 0; i < r->nports; i++)
		if (r->ports[i].state == PING_PORT_ACTIVE)
			return 0;
	for (int i = 0; i < r->nports && off < sizeof(states); i++) {
		int w = snprintf(states + off, sizeof(states) - off, "%s%s:%d %s", i ? ", " : "", r->ports[i].dev,
				 r->ports[i].port, ping_port_state_str(r->ports[i].state));
		if (w < 0)
			break;
		off += (size_t)w;
	}
	snprintf(fix, sizeof(fix),
		 "bring the link up (ibstat / ip link set dev %s up; IB: is a subnet manager running?), or use IBCOMM_TRANSPORT=tcp",
		 r->nports > 0 && r->ports[0].netdev[0] ? r->ports[0].netdev : "NETDEV");
	ping_problem_add(pl, r->rank, -1, fix, "%d RDMA device(s) but no ACTIVE port (%s)", r->ndevs,
			 states[0] ? states : "no ports");
	return pl->n + pl->dropped - before;
}

int ping_diag_memlock(uint64_t memlock, bool privileged, bool has_rdma, int rank, struct ping_problems *pl)
{
	if (!has_rdma || privileged || memlock == PING_MEMLOCK_UNLIMITED || memlock >= PING_MEMLOCK_MIN)
		return 0;
	ping_problem_add(pl, rank, -1,
			 "raise it: ulimit -l unlimited in the job script, '* - memlock unlimited' in /etc/security/limits.conf, or LimitMEMLOCK=infinity for a systemd service",
			 "memlock limit is %llu KiB, below the %llu MiB one RDMA communicator may pin (about 2 MiB per peer): larger jobs fail in ibv_reg_mr with 'Cannot allocate memory'",
			 (unsigned long long)(memlock >> 10), PING_MEMLOCK_MIN >> 20);
	return 1;
}

static uint32_t ipv4_of(const uint8_t gid[16])
{
	return (uint32_t)gid[12] << 24 | (uint32_t)gid[13] << 16 | (uint32_t)gid[14] << 8 | gid[15];
}

static uint32_t mask_of(int prefix)
{
	return prefix <= 0 ? 0 : prefix >= 32 ? 0xffffffffu : ~(0xffffffffu >> prefix);
}

/* A RoCEv2 IPv4 GID of p in the subnet net/prefix; -1 when none. */
static int gid_in_subnet(const struct ping_port *p, uint32_t net, int prefix)
{
	for (int i = 0; i < p->ngids; i++) {
		const struct ping_gid *g = &p->gids[i];

		if (ibc_rdma_gid_is_ipv4(g->e.gid) && g->e.type == IBC_GID_ROCE_V2 &&
		    (ipv4_of(g->e.gid) & mask_of(prefix)) == net)
			return g->e.index;
	}
	return -1;
}

int ping_diag_pair(const struct ping_report *a, const struct ping_report *b, bool rdma_ok, struct ping_problems *pl)
{
	const struct ping_port *pa = ping_used_port(a), *pb = ping_used_port(b);
	const struct ping_gid *ga, *gb;
	int before = pl->n + pl->dropped;
	char fix[320], sa[64], sb[64];

	if (!pa || !pb)
		return 0;
	if (pa->link_layer != pb->link_layer) {
		ping_problem_add(pl, a->rank, b->rank,
				 "use ports on the same fabric on both ranks (IBCOMM_DEVICE=dev:port)",
				 "rank %d uses %s:%d (%s) and rank %d %s:%d (%s): InfiniBand and Ethernet ports cannot talk",
				 a->rank, pa->dev, pa->port, pa->link_layer == IBC_RDMA_LL_IB ? "InfiniBand" : "Ethernet",
				 b->rank, pb->dev, pb->port, pb->link_layer == IBC_RDMA_LL_IB ? "InfiniBand" : "Ethernet");
		return pl->n + pl->dropped - before;
	}
	if (pa->active_mtu != pb->active_mtu && ibc_rdma_mtu_valid(pa->active_mtu) && ibc_rdma_mtu_valid(pb->active_mtu)) {
		snprintf(fix, sizeof(fix),
			 pa->link_layer == IBC_RDMA_LL_ETH ?
				 "set the same MTU on both netdevs (ip link set dev %s mtu N on rank %d's host, dev %s on rank %d's)" :
				 "set the same MTU on both ports (subnet manager partition MTU / HCA settings; %s rank %d, %s rank %d)",
			 netdev_or(pa), a->rank, netdev_or(pb), b->rank);
		ping_problem_add(pl, a->rank, b->rank, fix,
				 "MTU mismatch: rank %d's %s:%d has active MTU %d, rank %d's %s:%d has %d: the path runs at %d",
				 a->rank, pa->dev, pa->port, ibc_rdma_mtu_bytes(pa->active_mtu), b->rank, pb->dev, pb->port,
				 ibc_rdma_mtu_bytes(pb->active_mtu),
				 ibc_rdma_mtu_bytes(ibc_rdma_path_mtu(pa->active_mtu, pb->active_mtu)));
	}
	if (pa->link_layer != IBC_RDMA_LL_ETH)
		return pl->n + pl->dropped - before;
	ga = ping_port_gid(pa, pa->gid_used);
	gb = ping_port_gid(pb, pb->gid_used);
	if (!ga || !gb)
		return pl->n + pl->dropped - before;
	ibc_rdma_gid_str(ga->e.gid, sa, sizeof(sa));
	ibc_rdma_gid_str(gb->e.gid, sb, sizeof(sb));
	if (ga->e.type != gb->e.type) {
		int v2 = ga->e.type == IBC_GID_ROCE_V2 ? first_v2(pb) : first_v2(pa);
		int other = ga->e.type == IBC_GID_ROCE_V2 ? b->rank : a->rank;

		if (v2 >= 0)
			snprintf(fix, sizeof(fix), "use RoCEv2 on both: IBCOMM_GID_INDEX=%d on rank %d", v2, other);
		else
			snprintf(fix, sizeof(fix), "enable RoCEv2 on rank %d's device so that both use RoCEv2", other);
		ping_problem_add(pl, a->rank, b->rank, fix,
				 "GID type mismatch: rank %d uses %s %s, rank %d uses %s %s: they cannot connect", a->rank,
				 ping_gid_type_str(ga->e.type), sa, b->rank, ping_gid_type_str(gb->e.type), sb);
	}
	if (ibc_rdma_gid_is_ipv4(ga->e.gid) && ibc_rdma_gid_is_ipv4(gb->e.gid)) {
		int prefix = ga->prefix && gb->prefix ? (ga->prefix < gb->prefix ? ga->prefix : gb->prefix) : ga->prefix ? ga->prefix : gb->prefix;
		uint32_t na = ipv4_of(ga->e.gid) & mask_of(prefix), nb = ipv4_of(gb->e.gid) & mask_of(prefix);

		if (prefix > 0 && na != nb && !(rdma_ok && ga->e.type == IBC_GID_ROCE_V2)) {
			int alt = gid_in_subnet(pb, na, prefix);

			if (alt >= 0)
				snprintf(fix, sizeof(fix), "set IBCOMM_GID_INDEX=%d on rank %d (a RoCEv2 GID in rank %d's subnet)",
					 alt, b->rank, a->rank);
			else
				snprintf(fix, sizeof(fix),
					 "put both RoCE netdevs in one IP subnet, or make sure %u.%u.%u.%u/%d and %u.%u.%u.%u/%d are routed to each other",
					 na >> 24, (na >> 16) & 255, (na >> 8) & 255, na & 255, prefix, nb >> 24, (nb >> 16) & 255,
					 (nb >> 8) & 255, nb & 255, prefix);
			ping_problem_add(pl, a->rank, b->rank, fix,
					 "rank %d's GID %s/%d and rank %d's GID %s are on different subnets: %s",
					 a->rank, sa, prefix, b->rank, sb,
					 ga->e.type == IBC_GID_ROCE_V1 ? "RoCEv1 cannot cross a router" :
									 "RoCEv2 then needs an IP route between them");
		}
	}
	return pl->n + pl->dropped - before;
}

/* ---- wire form ---- */

static void w_str(ibc_wbuf_t *w, const char *s)
{
	size_t n = strnlen(s, 0xffff);

	ibc_w_u16(w, (uint16_t)n);
	ibc_w_bytes(w, s, n);
}

static void r_str(ibc_rbuf_t *r, char *dst, size_t cap)
{
	uint16_t n = ibc_r_u16(r);
	const uint8_t *b = ibc_r_bytes(r, n);

	dst[0] = '\0';
	if (!b)
		return;
	if (n >= cap || memchr(b, 0, n)) {
		r->ok = false;
		return;
	}
	memcpy(dst, b, n);
	dst[n] = '\0';
}

static void w_i32(ibc_wbuf_t *w, int v)
{
	ibc_w_u32(w, (uint32_t)v);
}

static int r_i32(ibc_rbuf_t *r)
{
	return (int)ibc_r_u32(r);
}

bool ping_report_encode(const struct ping_report *r, void *buf, size_t cap)
{
	ibc_wbuf_t w;

	if (cap < 8)
		return false;
	memset(buf, 0, cap);
	w = ibc_wbuf((uint8_t *)buf + 8, cap - 8);
	w_i32(&w, r->rank);
	w_str(&w, r->host);
	w_str(&w, r->tcp_if);
	w_str(&w, r->tcp_addr);
	ibc_w_u64(&w, r->memlock);
	ibc_w_u8(&w, r->privileged);
	ibc_w_u8(&w, r->rdma_built);
	w_i32(&w, r->ndevs);
	w_i32(&w, r->use);
	w_str(&w, r->rdma_note);
	w_i32(&w, r->nports);
	for (int i = 0; i < r->nports && i < PING_MAX_PORTS; i++) {
		const struct ping_port *p = &r->ports[i];

		w_str(&w, p->dev);
		w_i32(&w, p->port);
		w_i32(&w, p->state);
		w_i32(&w, p->link_layer);
		w_i32(&w, p->active_mtu);
		w_i32(&w, p->max_mtu);
		w_str(&w, p->netdev);
		w_i32(&w, p->gid_used);
		w_i32(&w, p->ngids);
		for (int k = 0; k < p->ngids && k < PING_MAX_GIDS; k++) {
			w_i32(&w, p->gids[k].e.index);
			ibc_w_bytes(&w, p->gids[k].e.gid, 16);
			ibc_w_u8(&w, (uint8_t)p->gids[k].e.type);
			ibc_w_u8(&w, p->gids[k].prefix);
		}
	}
	w_i32(&w, r->nproblems);
	for (int i = 0; i < r->nproblems && i < PING_MAX_PROBLEMS; i++) {
		w_i32(&w, r->problems[i].rank);
		w_i32(&w, r->problems[i].peer);
		w_str(&w, r->problems[i].what);
		w_str(&w, r->problems[i].fix);
	}
	if (!w.ok)
		return false;
	/* header: u32 magic, u8 version, u8 reserved, u16 body length; then the body, zero padded */
	{
		ibc_wbuf_t h = ibc_wbuf(buf, 8);

		ibc_w_u32(&h, PING_REPORT_MAGIC);
		ibc_w_u8(&h, PING_REPORT_VERSION);
		ibc_w_u8(&h, 0);
		ibc_w_u16(&h, (uint16_t)w.len);
		return h.ok && w.len <= 0xffff;
	}
}

bool ping_report_decode(const void *buf, size_t len, struct ping_report *out, char *why, size_t whylen)
{
	ibc_rbuf_t h = ibc_rbuf(buf, len), r;
	struct ping_report *x;
	uint32_t magic;
	uint8_t version;
	uint16_t blen;
	bool ok;

	magic = ibc_r_u32(&h);
	version = ibc_r_u8(&h);
	(void)ibc_r_u8(&h);
	blen = ibc_r_u16(&h);
	if (!h.ok || magic != PING_REPORT_MAGIC || version != PING_REPORT_VERSION || (size_t)blen > len - 8) {
		snprintf(why, whylen, "not an ibcomm_ping report of version %d (%zu bytes, magic 0x%08x, version %u)",
			 PING_REPORT_VERSION, len, magic, version);
		return false;
	}
	x = calloc(1, sizeof(*x));
	if (!x) {
		snprintf(why, whylen, "out of memory");
		return false;
	}
	r = ibc_rbuf((const uint8_t *)buf + 8, blen);
	x->rank = r_i32(&r);
	r_str(&r, x->host, sizeof(x->host));
	r_str(&r, x->tcp_if, sizeof(x->tcp_if));
	r_str(&r, x->tcp_addr, sizeof(x->tcp_addr));
	x->memlock = ibc_r_u64(&r);
	x->privileged = ibc_r_u8(&r) != 0;
	x->rdma_built = ibc_r_u8(&r) != 0;
	x->ndevs = r_i32(&r);
	x->use = r_i32(&r);
	r_str(&r, x->rdma_note, sizeof(x->rdma_note));
	x->nports = r_i32(&r);
	if (x->nports < 0 || x->nports > PING_MAX_PORTS || x->use < -1 || x->use >= (x->nports > 0 ? x->nports : 1))
		r.ok = false;
	for (int i = 0; r.ok && i < x->nports; i++) {
		struct ping_port *p = &x->ports[i];

		r_str(&r, p->dev, sizeof(p->dev));
		p->port = r_i32(&r);
		p->state = r_i32(&r);
		p->link_layer = r_i32(&r);
		p->active_mtu = r_i32(&r);
		p->max_mtu = r_i32(&r);
		r_str(&r, p->netdev, sizeof(p->netdev));
		p->gid_used = r_i32(&r);
		p->ngids = r_i32(&r);
		if (p->ngids < 0 || p->ngids > PING_MAX_GIDS)
			r.ok = false;
		for (int k = 0; r.ok && k < p->ngids; k++) {
			const uint8_t *g;

			p->gids[k].e.index = r_i32(&r);
			g = ibc_r_bytes(&r, 16);
			if (g)
				memcpy(p->gids[k].e.gid, g, 16);
			p->gids[k].e.type = (enum ibc_rdma_gid_type)ibc_r_u8(&r);
			p->gids[k].prefix = ibc_r_u8(&r);
			if (p->gids[k].e.type > IBC_GID_ROCE_V2 || p->gids[k].prefix > 32)
				r.ok = false;
		}
	}
	x->nproblems = r_i32(&r);
	if (x->nproblems < 0 || x->nproblems > PING_MAX_PROBLEMS)
		r.ok = false;
	for (int i = 0; r.ok && i < x->nproblems; i++) {
		x->problems[i].rank = r_i32(&r);
		x->problems[i].peer = r_i32(&r);
		r_str(&r, x->problems[i].what, sizeof(x->problems[i].what));
		r_str(&r, x->problems[i].fix, sizeof(x->problems[i].fix));
	}
	ok = ibc_r_done(&r);
	if (!ok)
		snprintf(why, whylen, "ibcomm_ping report: %s or out-of-range field", r.ok ? "trailing bytes" : "truncated");
	else
		*out = *x;
	free(x);
	return ok;
}
