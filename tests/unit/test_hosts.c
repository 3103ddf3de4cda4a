/*
 * The host map (lib/hosts.c) and the groups of the hierarchical algorithms (lib/algo/hier.c)
 * as pure functions: the ring order keeps each host's ranks together and crosses each host
 * boundary once per direction; a map built from any keys numbers hosts by their lowest rank;
 * the hier groups give every host one leader (the root on the root's host) and, simulated
 * phase by phase, bring every rank's contribution to every rank (allreduce) or the root's
 * data to every rank (broadcast). Prints the ring and the groups of a few layouts.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <CUnit/Basic.h>

#include "ibc.h"
#include "algo/algo.h"
#include "../cunit_main.h"

#define NMAX 16

/* A layout from a string: one letter per rank, the same letter for the same host. */
static int layout(const char *s, int *host_of)
{
	int n = (int)strlen(s), next = 0, map[26];

	memset(map, -1, sizeof(map));
	for (int r = 0; r < n; r++) {
		int c = s[r] - 'A';

		if (map[c] < 0)
			map[c] = next++;
		host_of[r] = map[c];
	}
	return n;
}

static int count_hosts(int n, const int *host_of)
{
	int h = 0;

	for (int r = 0; r < n; r++)
		h = IBC_MAX(h, host_of[r] + 1);
	return h;
}

/* Checks the ring order of one layout; returns its number of host crossings. */
static int check_ring(int n, const int *host_of, int *order)
{
	int seen[NMAX] = { 0 }, cross = 0;

	ibc_hosts_ring(n, host_of, order);
	for (int i = 0; i < n; i++) {
		CU_ASSERT_FATAL(order[i] >= 0 && order[i] < n);
		CU_ASSERT(!seen[order[i]]++);
		if (i && host_of[order[i]] == host_of[order[i - 1]])
			CU_ASSERT(order[i] > order[i - 1]); /* within a host, rank order */
		cross += host_of[order[i]] != host_of[order[(i + 1) % n]];
	}
	return cross;
}

static void print_ring(const char *s)
{
	int host_of[NMAX], order[NMAX], n = layout(s, host_of);

	check_ring(n, host_of, order);
	printf("\n    hosts %s: ring", s);
	for (int i = 0; i < n; i++)
		printf(" %d", order[i]);
}

static void test_ring_examples(void)
{
	static const struct {
		const char *layout;
		int order[8];
	} ex[] = {
		{ "AABB", { 0, 1, 2, 3 } },
		{ "ABAB", { 0, 2, 1, 3 } },
		{ "ABACAC", { 0, 2, 4, 1, 3, 5 } },
		{ "AABA", { 0, 1, 3, 2 } },
		{ "ABCABC", { 0, 3, 1, 4, 2, 5 } },
	};

	for (size_t i = 0; i < CM_COUNT(ex); i++) {
		int host_of[NMAX], order[NMAX], n = layout(ex[i].layout, host_of);

		CU_ASSERT_EQUAL(check_ring(n, host_of, order), count_hosts(n, host_of));
		CU_ASSERT(!memcmp(order, ex[i].order, (size_t)n * sizeof(int)));
		print_ring(ex[i].layout);
	}
}

/* Calls fn on every layout of 1..nmax ranks on up to 3 hosts; returns the sum of its answers. */
static int each_layout(int nmax, int (*fn)(int n, const int *host_of))
{
	int host_of[NMAX], sum = 0;

	for (int n = 1; n <= nmax; n++) {
		int total = 1;

		for (int r = 0; r < n; r++)
			total *= 3;
		for (int code = 0; code < total; code++) {
			char s[NMAX + 1];
			int c = code;

			for (int r = 0; r < n; r++, c /= 3)
				s[r] = (char)('A' + c % 3);
			s[n] = '\0';
			layout(s, host_of);
			sum += fn(n, host_of);
		}
	}
	return sum;
}

static int ring_ok(int n, const int *host_of)
{
	int order[NMAX], h = count_hosts(n, host_of);

	CU_ASSERT_EQUAL(check_ring(n, host_of, order), h > 1 ? h : 0);
	return 1;
}

/* Every layout of up to 7 ranks on up to 3 hosts: one crossing per host boundary and direction. */
static void test_ring_all(void)
{
	printf("\n    %d layouts", each_layout(7, ring_ok));
}

/* ibc_hosts_set on a communicator built by hand: any keys, hosts numbered by lowest rank. */
static void test_map(void)
{
	struct ibcomm *comm = calloc(1, sizeof(*comm));
	int keys[] = { 7, 3, 7, 9, 3, 9 };

	CU_ASSERT_FATAL(comm != NULL);
	comm->size = 6;
	comm->rank = 4;
	CU_ASSERT_EQUAL_FATAL(ibc_hosts_set(comm, keys), IBCOMM_OK);
	CU_ASSERT_EQUAL(comm->hosts.nhosts, 3);
	CU_ASSERT_EQUAL(comm->hosts.host_of[3], 2);
	CU_ASSERT_EQUAL(comm->hosts.host_of[4], 1);
	CU_ASSERT_EQUAL(comm->hosts.local_rank, 1);
	CU_ASSERT_EQUAL(comm->hosts.local_size, 2);
	CU_ASSERT_FATAL(comm->hosts.ring != NULL);
	/* ring 0 2 1 4 3 5; positions after it */
	CU_ASSERT_EQUAL(comm->hosts.ring[1], 2);
	CU_ASSERT_EQUAL(comm->hosts.ring[6 + 4], 3);
	/* a split keeping ranks 0, 2 and 3 (keys: the parent's hosts): contiguous, no reordering */
	comm->size = 3;
	comm->rank = 2;
	CU_ASSERT_EQUAL_FATAL(ibc_hosts_set(comm, (int[]){ 0, 0, 2 }), IBCOMM_OK);
	CU_ASSERT_EQUAL(comm->hosts.nhosts, 2);
	CU_ASSERT_EQUAL(comm->hosts.local_size, 1);
	CU_ASSERT_EQUAL(comm->hosts.local_rank, 0);
	CU_ASSERT(comm->hosts.ring == NULL);
	ibc_hosts_free(&comm->hosts);
	free(comm);
}

/*
 * What auto picks from the layout (select.c): hier for allreduce from 32 KiB below 1 MiB and
 * for broadcast below 256 KiB when ranks span hosts and some host has more than one; never on
 * one host nor with one rank per host.
 */
static void test_auto_choice(void)
{
	struct ibcomm *comm = calloc(1, sizeof(*comm));
	static const struct {
		int n, keys[4];
		bool hier;
	} layouts[] = {
		{ 4, { 0, 1, 0, 1 }, true },  /* 2 + 2 */
		{ 3, { 0, 0, 2 }, true },     /* 2 + 1 */
		{ 4, { 0, 0, 0, 0 }, false }, /* one host */
		{ 3, { 0, 1, 2 }, false },    /* one rank per host */
	};

	CU_ASSERT_FATAL(comm != NULL);
	for (size_t i = 0; i < IBC_ARRAY_SIZE(layouts); i++) {
		bool h = layouts[i].hier;

		comm->size = layouts[i].n;
		CU_ASSERT_EQUAL_FATAL(ibc_hosts_set(comm, layouts[i].keys), IBCOMM_OK);
		CU_ASSERT_NOT_EQUAL(ibc_algo_select(comm, IBC_COLL_ALLREDUCE, 8), IBC_ALGO_HIER);
		CU_ASSERT_EQUAL(ibc_algo_select(comm, IBC_COLL_ALLREDUCE, 64 * 1024) == IBC_ALGO_HIER, h);
		CU_ASSERT_NOT_EQUAL(ibc_algo_select(comm, IBC_COLL_ALLREDUCE, 4 << 20), IBC_ALGO_HIER);
		/* small broadcasts: hier, or rd with the call signatures in its messages */
		CU_ASSERT_EQUAL(ibc_algo_select(comm, IBC_COLL_BROADCAST, 8), h ? IBC_ALGO_HIER : IBC_ALGO_RD);
		CU_ASSERT_EQUAL(ibc_algo_select(comm, IBC_COLL_BROADCAST, 8192), h ? IBC_ALGO_HIER : IBC_ALGO_TREE);
		CU_ASSERT_EQUAL(ibc_algo_select(comm, IBC_COLL_ALLGATHER, 4096), IBC_ALGO_RD);
		CU_ASSERT_EQUAL(ibc_algo_select(comm, IBC_COLL_ALLGATHER, 4100), IBC_ALGO_LINEAR);
		CU_ASSERT_NOT_EQUAL(ibc_algo_select(comm, IBC_COLL_BROADCAST, 1 << 20), IBC_ALGO_HIER);
		CU_ASSERT_NOT_EQUAL(ibc_algo_select(comm, IBC_COLL_ALLGATHER, 64 * 1024), IBC_ALGO_HIER);
	}
	/* two ranks: their signatures ride on the first message already */
	comm->size = 2;
	CU_ASSERT_EQUAL_FATAL(ibc_hosts_set(comm, (int[]){ 0, 0 }), IBCOMM_OK);
	CU_ASSERT_EQUAL(ibc_algo_select(comm, IBC_COLL_BROADCAST, 8), IBC_ALGO_TREE);
	CU_ASSERT_EQUAL(ibc_algo_select(comm, IBC_COLL_ALLGATHER, 8), IBC_ALGO_LINEAR);
	/* a forced algorithm wins over the layout */
	comm->set.algo[IBC_COLL_ALLREDUCE] = IBC_ALGO_RING;
	CU_ASSERT_EQUAL(ibc_algo_select(comm, IBC_COLL_ALLREDUCE, 64 * 1024), IBC_ALGO_RING);
	ibc_hosts_free(&comm->hosts);
	free(comm);
}

/* The map rank 0 publishes: a good one decodes, anything else is an error naming rank 0. */
static void test_map_decode(void)
{
	struct ibcomm *comm = calloc(1, sizeof(*comm));
	uint8_t good[] = { 1, 4, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0 };
	uint8_t bad[sizeof(good)];
	int key[4];

	CU_ASSERT_FATAL(comm != NULL);
	comm->size = 4;
	comm->rank = 2;
	CU_ASSERT_EQUAL(ibc_hosts_map_decode(comm, good, sizeof(good), key), IBCOMM_OK);
	CU_ASSERT(key[0] == 0 && key[1] == 1 && key[2] == 0 && key[3] == 1);
	CU_ASSERT_EQUAL(ibc_hosts_map_decode(comm, good, sizeof(good) - 1, key), IBCOMM_ERR_RENDEZVOUS);
	CU_ASSERT_PTR_NOT_NULL(strstr(comm->err, "host map from rank 0 is malformed"));
	for (size_t i = 0; i < 4; i++) {
		/* version 2; n 5; key[1] = 2 > 1; key[0] = 1 > 0 */
		static const size_t at[] = { 0, 1, 9, 5 };
		static const uint8_t to[] = { 2, 5, 2, 1 };

		memcpy(bad, good, sizeof(good));
		bad[at[i]] = to[i];
		CU_ASSERT_EQUAL(ibc_hosts_map_decode(comm, bad, sizeof(bad), key), IBCOMM_ERR_RENDEZVOUS);
	}
	memcpy(bad, good, sizeof(good));
	bad[17] = 2; /* key[3] = 2, whose own key is 0 */
	CU_ASSERT_EQUAL(ibc_hosts_map_decode(comm, bad, sizeof(bad), key), IBCOMM_ERR_RENDEZVOUS);
	free(comm);
}

/*
 * Simulates hier on one layout and root (-1: allreduce) with bit masks of contributions:
 * every rank computes its own groups; each phase moves masks only along them.
 */
static void check_hier(int n, const int *host_of, int root)
{
	struct ibc_hier h[NMAX];
	int buf[NMAX][2 * NMAX];
	unsigned have[NMAX], all = (1u << n) - 1;

	for (int r = 0; r < n; r++) {
		ibc_hier_groups(n, host_of, r, root, buf[r], &h[r]);
		have[r] = root < 0 || r == root ? 1u << r : 0;
	}
	for (int r = 0; r < n; r++) {
		const struct ibc_hier *g = &h[r];
		int leader = g->local[g->local_root];

		CU_ASSERT_EQUAL(g->local[g->me_local], r);
		CU_ASSERT_EQUAL(g->nleaders, count_hosts(n, host_of));
		CU_ASSERT_EQUAL(g->leaders[host_of[r]], leader); /* the host's leader, the same for all */
		CU_ASSERT_EQUAL(g->me_leader >= 0, r == leader);
		CU_ASSERT_EQUAL(host_of[leader], host_of[r]);
		if (root >= 0) {
			CU_ASSERT_EQUAL(g->leaders[g->leaders_root], root);
		} else {
			CU_ASSERT_EQUAL(leader, g->local[0]);
		}
		for (int i = 0; i < g->nlocal; i++) {
			CU_ASSERT_EQUAL(host_of[g->local[i]], host_of[r]);
			CU_ASSERT(i == 0 || g->local[i] > g->local[i - 1]);
		}
	}
	if (root < 0) /* 1: reduce to the leaders */
		for (int r = 0; r < n; r++)
			if (h[r].me_leader < 0)
				have[h[r].local[h[r].local_root]] |= have[r];
	/* 2: among the leaders (allreduce: every leader gets the union; broadcast: the root's) */
	{
		unsigned u = 0;

		for (int r = 0; r < n; r++)
			if (h[r].me_leader >= 0)
				u |= have[r];
		for (int r = 0; r < n; r++)
			if (h[r].me_leader >= 0)
				have[r] = u;
	}
	/* 3: from the leaders within each host */
	for (int r = 0; r < n; r++)
		if (h[r].me_leader < 0)
			have[r] = have[h[r].local[h[r].local_root]];
	for (int r = 0; r < n; r++)
		CU_ASSERT_EQUAL(have[r], root < 0 ? all : 1u << root);
}

static void print_hier(const char *s, int root)
{
	int host_of[NMAX], buf[2 * NMAX], n = layout(s, host_of);
	struct ibc_hier h;

	printf("\n    hosts %s, %s%.0d: leaders", s, root < 0 ? "allreduce" : "broadcast root ", root < 0 ? 0 : root);
	for (int hh = 0, r = 0; hh < count_hosts(n, host_of); hh++) {
		while (host_of[r] != hh)
			r++;
		ibc_hier_groups(n, host_of, r, root, buf, &h);
		printf("%s %d", hh ? "," : "", h.leaders[hh]);
	}
	printf("; hosts");
	for (int hh = 0, r = 0; hh < count_hosts(n, host_of); hh++) {
		while (host_of[r] != hh)
			r++;
		ibc_hier_groups(n, host_of, r, root, buf, &h);
		printf(" {");
		for (int i = 0; i < h.nlocal; i++)
			printf("%s%d%s", i ? " " : "", h.local[i], i == h.local_root ? "*" : "");
		printf("}");
	}
}

static int hier_ok(int n, const int *host_of)
{
	for (int root = -1; root < n; root++)
		check_hier(n, host_of, root);
	return n + 1;
}

static void test_hier(void)
{
	static const char *const ex[] = { "ABAB", "ABACAC", "AABBBC", "AAAB", "ABCABCAB" };
	int host_of[NMAX], tried = 0;

	for (size_t i = 0; i < CM_COUNT(ex); i++) {
		int n = layout(ex[i], host_of);

		for (int root = -1; root < n; root++) {
			check_hier(n, host_of, root);
			tried++;
		}
	}
	print_hier("ABACAC", -1);
	print_hier("ABACAC", 4);
	print_hier("ABACAC", 5);
	print_hier("AABBBC", 3);
	tried += each_layout(6, hier_ok); /* every layout of up to 6 ranks on up to 3 hosts, every root */
	printf("\n    %d plans", tried);
}

int main(int argc, char **argv)
{
	static const struct cm_test tests[] = {
		{ "ring order: examples", test_ring_examples },
		{ "ring order: every small layout", test_ring_all },
		{ "host map from keys", test_map },
		{ "host map from rank 0: decoding", test_map_decode },
		{ "hier groups", test_hier },
		{ "auto picks hier by layout and size", test_auto_choice },
	};

	return CM_MAIN1(argc, argv, "hosts", tests);
}
