/*
 * ibcomm_ping and the library agree: on the same inputs (IBCOMM_* variables, recorded RDMA
 * device lists with GID tables of more than 16 entries, recorded interface lists), the
 * TCP address and the RDMA device, port and GID ping reports are the ones the transports
 * choose (ibc_tcp_choose_addr, ibc_rdma_choose on the settings ibc_settings_load reads),
 * and they are the expected ones. No device or network needed.
 */
#include <arpa/inet.h>
#include <CUnit/Basic.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ibc.h"
#include "ping_diag.h"
#include "ping_local.h"
#include "rdma_info.h"
#include "tcp_addr.h"

#define ROOT "10.0.0.1:29500"

static const char *const vars[] = { "IBCOMM_DEVICE", "IBCOMM_GID_INDEX", "IBCOMM_IFNAME", "IBCOMM_TRANSPORT",
				    "IBCOMM_RANK", "IBCOMM_SIZE", "IBCOMM_ROOT" };

static void clear_env(void)
{
	for (size_t i = 0; i < IBC_ARRAY_SIZE(vars); i++)
		unsetenv(vars[i]);
}

/* The settings a communicator with rendezvous root reads from the environment. */
static void lib_settings(const char *root, ibc_settings_t *set)
{
	ibcomm_config_t cfg = IBCOMM_CONFIG_INIT;
	char err[IBC_ERRLEN];

	cfg.rank = 0;
	cfg.nranks = 1;
	cfg.root = root;
	CU_ASSERT_EQUAL_FATAL(ibc_settings_load(&cfg, set, err, sizeof(err)), IBCOMM_OK);
}

/* ---- recorded RDMA hosts ---- */

static void gid_set(ibc_ri_port_t *p, int index, int type, const uint8_t gid[16])
{
	ibc_ri_gid_t *g = &p->gids[p->ngids++];

	g->e.index = index;
	g->e.type = type;
	memcpy(g->e.gid, gid, 16);
	snprintf(g->netdev, sizeof(g->netdev), "eth2");
	if (ibc_rdma_gid_is_ipv4(gid))
		g->prefix = 24;
}

static void gid_link_local(ibc_ri_port_t *p, int index, int type)
{
	uint8_t g[16] = { 0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0x02, 0x11, 0x22, 0xff, 0xfe, 0x33, 0x44, (uint8_t)index };

	gid_set(p, index, type, g);
}

static void gid_ipv4(ibc_ri_port_t *p, int index, int type, uint8_t last)
{
	uint8_t g[16] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, last };

	gid_set(p, index, type, g);
}

static void gid_global6(ibc_ri_port_t *p, int index)
{
	uint8_t g[16] = { 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, (uint8_t)index };

	gid_set(p, index, IBC_GID_ROCE_V2, g);
}

static void port_set(ibc_ri_port_t *p, int port, int state, int ll)
{
	memset(p, 0, sizeof(*p));
	p->port = port;
	p->state = state;
	p->link_layer = ll;
	p->active_mtu = p->max_mtu = 3;
	p->gid_tbl_len = 256;
	snprintf(p->netdev, sizeof(p->netdev), "eth2");
}

/*
 * mlx5_0: one port, DOWN. mlx5_1: port 1 ACTIVE RoCE, 40 GIDs: 20 link-local (v1/v2), then
 * RoCEv1 IPv4 at 20, RoCEv2 IPv4 at 21 (the one to use: past the 16 entries a report
 * shows), RoCEv2 global IPv6 22..39; port 2 ACTIVE InfiniBand. rxe0: link-local only.
 */
static ibc_rdma_sys_t *recorded_host(void)
{
	ibc_rdma_sys_t *sys = calloc(1, sizeof(*sys));
	ibc_ri_port_t *p;

	CU_ASSERT_FATAL(sys != NULL);
	sys->built = true;
	sys->ndevs = 3;
	snprintf(sys->devs[0].name, sizeof(sys->devs[0].name), "mlx5_0");
	sys->devs[0].nports = 1;
	port_set(&sys->devs[0].ports[0], 1, IBC_RI_PORT_DOWN, IBC_RDMA_LL_ETH);
	gid_ipv4(&sys->devs[0].ports[0], 1, IBC_GID_ROCE_V2, 9);

	snprintf(sys->devs[1].name, sizeof(sys->devs[1].name), "mlx5_1");
	sys->devs[1].nports = 2;
	p = &sys->devs[1].ports[0];
	port_set(p, 1, IBC_RI_PORT_ACTIVE, IBC_RDMA_LL_ETH);
	for (int i = 0; i < 20; i++)
		gid_link_local(p, i, i % 2 ? IBC_GID_ROCE_V2 : IBC_GID_ROCE_V1);
	gid_ipv4(p, 20, IBC_GID_ROCE_V1, 5);
	gid_ipv4(p, 21, IBC_GID_ROCE_V2, 5);
	for (int i = 22; i < 40; i++)
		gid_global6(p, i);
	p = &sys->devs[1].ports[1];
	port_set(p, 2, IBC_RI_PORT_ACTIVE, IBC_RDMA_LL_IB);
	{
		uint8_t g[16] = { 0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 2, 0xc9, 3, 0, 1, 2, 3 };

		gid_set(p, 0, IBC_GID_IB, g);
	}

	snprintf(sys->devs[2].name, sizeof(sys->devs[2].name), "rxe0");
	sys->devs[2].nports = 1;
	p = &sys->devs[2].ports[0];
	port_set(p, 1, IBC_RI_PORT_ACTIVE, IBC_RDMA_LL_ETH);
	gid_link_local(p, 0, IBC_GID_ROCE_V1);
	gid_link_local(p, 1, IBC_GID_ROCE_V2);
	return sys;
}

/*
 * With IBCOMM_DEVICE=device and IBCOMM_GID_INDEX=gid (NULL: unset), the library's choice
 * and ping's report agree, and are want_st / want_dev:want_port / want_gid. Returns the
 * report's problems (in pl) for further checks.
 */
static void rdma_case(const ibc_rdma_sys_t *sys, const char *device, const char *gid, ibcomm_status_t want_st,
		      const char *want_dev, int want_port, int want_gid, struct ping_problems *pl)
{
	ibc_settings_t lset, pset;
	ibc_rdma_choice_t c;
	struct ping_report r, back;
	static unsigned char wire[PING_REPORT_BYTES];
	char why[400], rwhy[128];
	ibcomm_status_t st;

	clear_env();
	if (device)
		setenv("IBCOMM_DEVICE", device, 1);
	if (gid)
		setenv("IBCOMM_GID_INDEX", gid, 1);
	lib_settings(ROOT, &lset);
	st = ibc_rdma_choose(sys, lset.device, lset.ib_port, lset.gid_index, &c, why, sizeof(why));

	memset(&r, 0, sizeof(r));
	snprintf(r.host, sizeof(r.host), "node7");
	pl->n = pl->dropped = 0;
	ping_settings(ROOT, 0, &pset, pl);
	CU_ASSERT_EQUAL(pl->n, 0);
	ping_rdma_choice(&pset, sys, &r, pl);

	printf("\n    IBCOMM_DEVICE=%s IBCOMM_GID_INDEX=%s: library %d %s:%d gid %d (%s); ping use %d",
	       device ? device : "-", gid ? gid : "-", st, st ? "-" : sys->devs[c.dev].name, c.port, c.gid_index,
	       st ? why : "ok", r.use);
	CU_ASSERT_EQUAL(st, want_st);
	CU_ASSERT_EQUAL(st == IBCOMM_OK, r.use >= 0);
	if (st != IBCOMM_OK || r.use < 0)
		return;
	/* the library's choice is the expected one ... */
	CU_ASSERT_STRING_EQUAL(sys->devs[c.dev].name, want_dev);
	CU_ASSERT_EQUAL(c.port, want_port);
	CU_ASSERT_EQUAL(c.gid_index, want_gid);
	/* ... and what ping reports */
	CU_ASSERT_STRING_EQUAL(r.ports[r.use].dev, sys->devs[c.dev].name);
	CU_ASSERT_EQUAL(r.ports[r.use].port, c.port);
	CU_ASSERT_EQUAL(r.ports[r.use].gid_used, c.gid_index);
	/* the report shows the GID in use, and keeps it through the wire form rank 0 gathers */
	if (c.link_layer == IBC_RDMA_LL_ETH) {
		const struct ping_gid *g = ping_port_gid(&r.ports[r.use], c.gid_index);

		CU_ASSERT_PTR_NOT_NULL(g);
		if (g)
			CU_ASSERT_EQUAL(memcmp(g->e.gid, c.gid, 16), 0);
	}
	CU_ASSERT_TRUE(ping_report_encode(&r, wire, sizeof(wire)));
	CU_ASSERT_TRUE(ping_report_decode(wire, sizeof(wire), &back, rwhy, sizeof(rwhy)));
	CU_ASSERT_EQUAL(back.use, r.use);
	CU_ASSERT_EQUAL(back.ports[back.use].gid_used, c.gid_index);
}

static bool has_problem(const struct ping_problems *pl, const char *what)
{
	for (int i = 0; i < pl->n; i++)
		if (strstr(pl->v[i].what, what))
			return true;
	return false;
}

static void test_rdma_agree(void)
{
	ibc_rdma_sys_t *sys = recorded_host();
	struct ping_problem v[16];
	struct ping_problems pl = { .v = v, .cap = 16 };

	/* automatic: the RoCEv2 IPv4 GID at index 21, the 22nd non-empty entry */
	rdma_case(sys, NULL, NULL, IBCOMM_OK, "mlx5_1", 1, 21, &pl);
	CU_ASSERT_EQUAL(pl.n, 0);
	rdma_case(sys, "mlx5_1", NULL, IBCOMM_OK, "mlx5_1", 1, 21, &pl);
	rdma_case(sys, "mlx5_1:1", NULL, IBCOMM_OK, "mlx5_1", 1, 21, &pl);
	/* InfiniBand port: by LID, GID 0 reported */
	rdma_case(sys, "mlx5_1:2", NULL, IBCOMM_OK, "mlx5_1", 2, 0, &pl);
	/* forced: RoCEv1 where v2 exists (works, diagnosed) */
	rdma_case(sys, NULL, "20", IBCOMM_OK, "mlx5_1", 1, 20, &pl);
	CU_ASSERT_TRUE(has_problem(&pl, "RoCEv1"));
	/* forced link-local past the 16th entry: works on one host, diagnosed */
	rdma_case(sys, NULL, "17", IBCOMM_OK, "mlx5_1", 1, 17, &pl);
	CU_ASSERT_TRUE(has_problem(&pl, "link-local"));
	/* forced global IPv6 at 39 */
	rdma_case(sys, NULL, "39", IBCOMM_OK, "mlx5_1", 1, 39, &pl);
	/* forced: an empty index, and one past the table */
	rdma_case(sys, NULL, "45", IBCOMM_ERR_INVALID, NULL, 0, 0, &pl);
	CU_ASSERT_TRUE(has_problem(&pl, "IBCOMM_GID_INDEX=45"));
	rdma_case(sys, NULL, "300", IBCOMM_ERR_INVALID, NULL, 0, 0, &pl);
	CU_ASSERT_TRUE(has_problem(&pl, "IBCOMM_GID_INDEX=300"));
	/* a device with only link-local GIDs */
	rdma_case(sys, "rxe0", NULL, IBCOMM_ERR_UNSUPPORTED, NULL, 0, 0, &pl);
	CU_ASSERT_TRUE(has_problem(&pl, "link-local"));
	/* a device whose port is down, a port that is not there, a device that is not there */
	rdma_case(sys, "mlx5_0", NULL, IBCOMM_ERR_UNSUPPORTED, NULL, 0, 0, &pl);
	rdma_case(sys, "mlx5_1:3", NULL, IBCOMM_ERR_INVALID, NULL, 0, 0, &pl);
	CU_ASSERT_TRUE(has_problem(&pl, "not there"));
	rdma_case(sys, "nosuch9", NULL, IBCOMM_ERR_INVALID, NULL, 0, 0, &pl);
	CU_ASSERT_TRUE(has_problem(&pl, "IBCOMM_DEVICE=nosuch9: no such RDMA device"));

	/* no device at all */
	sys->ndevs = 0;
	rdma_case(sys, NULL, NULL, IBCOMM_ERR_UNSUPPORTED, NULL, 0, 0, &pl);
	free(sys);
	clear_env();
}

/* ---- recorded interface lists ---- */

struct rec_if {
	struct ifaddrs ifa;
	struct sockaddr_storage addr;
	char name[IF_NAMESIZE];
};

/* Appends an interface with address addr ("" none; IPv4 or IPv6 text) to list[*n], linked. */
static void rec_add(struct rec_if *list, int *n, const char *name, unsigned flags, const char *addr)
{
	struct rec_if *r = &list[*n];

	memset(r, 0, sizeof(*r));
	snprintf(r->name, sizeof(r->name), "%s", name);
	r->ifa.ifa_name = r->name;
	r->ifa.ifa_flags = flags;
	if (addr[0] && strchr(addr, ':')) {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)&r->addr;

		a->sin6_family = AF_INET6;
		CU_ASSERT_EQUAL(inet_pton(AF_INET6, addr, &a->sin6_addr), 1);
		r->ifa.ifa_addr = (struct sockaddr *)a;
	} else if (addr[0]) {
		struct sockaddr_in *a = (struct sockaddr_in *)&r->addr;

		a->sin_family = AF_INET;
		CU_ASSERT_EQUAL(inet_pton(AF_INET, addr, &a->sin_addr), 1);
		r->ifa.ifa_addr = (struct sockaddr *)a;
	}
	if (*n > 0)
		list[*n - 1].ifa.ifa_next = &r->ifa;
	(*n)++;
}

/* ifname (NULL: unset) and root: the library and ping agree, on want_if/want_addr (NULL: an error). */
static void tcp_case(const struct ifaddrs *ifa, const char *ifname, const char *root, const char *want_if,
		     const char *want_addr)
{
	ibc_settings_t lset, pset;
	ibc_tcp_addr_choice_t c;
	struct ping_report r;
	struct ping_problem v[8];
	struct ping_problems pl = { .v = v, .cap = 8 };
	char why[400], addr[64] = "";
	ibcomm_status_t st;
	bool ok;

	clear_env();
	if (ifname)
		setenv("IBCOMM_IFNAME", ifname, 1);
	lib_settings(root, &lset);
	st = ibc_tcp_choose_addr(lset.ifname, lset.root, ifa, &c, why, sizeof(why));
	if (!st)
		inet_ntop(c.ss.ss_family,
			  c.ss.ss_family == AF_INET ? (const void *)&((struct sockaddr_in *)&c.ss)->sin_addr
						    : (const void *)&((struct sockaddr_in6 *)&c.ss)->sin6_addr,
			  addr, sizeof(addr));

	memset(&r, 0, sizeof(r));
	ping_settings(root, 0, &pset, &pl);
	ok = ping_tcp_choice(&pset, ifa, &r, &pl);

	printf("\n    IBCOMM_IFNAME=%s root %s: library %s %s (%s); ping %s %s", ifname ? ifname : "-", root,
	       st ? "-" : c.ifname, addr, st ? why : "ok", r.tcp_if, r.tcp_addr);
	CU_ASSERT_EQUAL(st == IBCOMM_OK, ok);
	if (!want_if) {
		CU_ASSERT_NOT_EQUAL(st, IBCOMM_OK);
		CU_ASSERT_TRUE(pl.n > 0 && strstr(pl.v[0].what, "IBCOMM_IFNAME"));
		return;
	}
	CU_ASSERT_EQUAL(st, IBCOMM_OK);
	CU_ASSERT_STRING_EQUAL(c.ifname, want_if);
	CU_ASSERT_STRING_EQUAL(addr, want_addr);
	CU_ASSERT_STRING_EQUAL(r.tcp_if, c.ifname);
	CU_ASSERT_STRING_EQUAL(r.tcp_addr, addr);
}

static void test_tcp_agree(void)
{
	struct rec_if list[8];
	int n = 0;

	rec_add(list, &n, "lo", IFF_UP | IFF_LOOPBACK, "127.0.0.1");
	rec_add(list, &n, "eth0", IFF_UP, "");
	rec_add(list, &n, "eth1", 0, "192.168.5.5");
	rec_add(list, &n, "ib0", IFF_UP, "fd00::5");
	rec_add(list, &n, "ens3", IFF_UP, "fd00::3");
	rec_add(list, &n, "ens3", IFF_UP, "10.1.2.3");
	rec_add(list, &n, "lo", IFF_UP | IFF_LOOPBACK, "::1");

	tcp_case(&list[0].ifa, NULL, ROOT, "ens3", "10.1.2.3");
	tcp_case(&list[0].ifa, NULL, "127.0.0.1:29500", "lo", "127.0.0.1");
	tcp_case(&list[0].ifa, NULL, "localhost:29500", "lo", "127.0.0.1");
	tcp_case(&list[0].ifa, NULL, "[::1]:29500", "lo", "::1");
	tcp_case(&list[0].ifa, "ens3", "127.0.0.1:29500", "ens3", "10.1.2.3");
	tcp_case(&list[0].ifa, "ib0", ROOT, "ib0", "fd00::5");
	tcp_case(&list[0].ifa, "eth1", ROOT, "eth1", "192.168.5.5");
	tcp_case(&list[0].ifa, "eth0", ROOT, NULL, NULL);
	tcp_case(&list[0].ifa, "nosuch0", ROOT, NULL, NULL);
	/* nothing up but loopback: 127.0.0.1 */
	n = 0;
	rec_add(list, &n, "lo", IFF_UP | IFF_LOOPBACK, "127.0.0.1");
	rec_add(list, &n, "eth1", 0, "192.168.5.5");
	tcp_case(&list[0].ifa, NULL, ROOT, "lo", "127.0.0.1");
	clear_env();
}

int main(void)
{
	CU_pSuite s;
	unsigned failed;

	if (CU_initialize_registry() != CUE_SUCCESS)
		return 99;
	s = CU_add_suite("ping_choice", NULL, NULL);
	if (!s || !CU_add_test(s, "RDMA device, port, GID: ping = library (40-entry GID table)", test_rdma_agree) ||
	    !CU_add_test(s, "TCP interface and address: ping = library", test_tcp_agree)) {
		CU_cleanup_registry();
		return 99;
	}
	CU_basic_set_mode(CU_BRM_VERBOSE);
	CU_basic_run_tests();
	failed = CU_get_number_of_tests_failed() + CU_get_number_of_suites_failed();
	CU_cleanup_registry();
	return failed ? 1 : 0;
}
