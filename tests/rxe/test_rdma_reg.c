/*
 * Registered memory end to end, 2 ranks (the tests/coll harness): an out-of-place
 * allreduce from a registered mmap'd sendbuf is sent zero-copy (RDMA: the zc_puts counter
 * grows; TCP: it stays 0) and exact; then the contract of include/ibcomm.h: deregister,
 * unmap, map new memory with other values at the same address, register it (before and
 * after writing it): the allreduce is exact, sent from the new pages. Also: in place (never
 * zero-copy), stale, double and foreign handles, a communicator destroyed with live
 * registrations.
 *
 * HX_TRANSPORT=rdma (tests/rxe/rxe-guest-tests sets it): exits 77 without an RDMA device.
 * Otherwise TCP, for the cache semantics. Test names contain "allreduce" so that
 * HX_ONLY=allreduce keeps them.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"
#include "regcache.h"

#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif

#define COUNT (128u * 1024) /* int32: 512 KiB, several chunks */
#define LEN (COUNT * sizeof(int32_t))

static bool rdma;

static int32_t val(int gen, int rank, size_t i)
{
	return (int32_t)(gen * 1000003 + rank * 7919 + (int)(i % 10007));
}

static void fill(int32_t *p, int gen)
{
	for (size_t i = 0; i < COUNT; i++)
		p[i] = val(gen, hx_rank, i);
}

static bool check(const int32_t *out, int gen, const char *what)
{
	for (size_t i = 0; i < COUNT; i++) {
		int32_t want = 0;

		for (int r = 0; r < hx_size; r++)
			want += val(gen, r, i);
		if (out[i] != want) {
			hx_fail("%s: element %zu is %d, expected %d (generation %d)", what, i, out[i], want, gen);
			return false;
		}
	}
	return true;
}

static void *map_at(void *want)
{
	void *p = mmap(want, LEN, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | (want ? MAP_FIXED_NOREPLACE : 0), -1, 0);

	if (p == MAP_FAILED) {
		hx_fail("mmap(%p, %zu): %m", want, (size_t)LEN);
		return NULL;
	}
	if (want && p != want) { /* a kernel without MAP_FIXED_NOREPLACE took it as a hint */
		hx_fail("mmap at %p gave %p: cannot test the same address", want, p);
		munmap(p, LEN);
		return NULL;
	}
	return p;
}

/* One allreduce from src; checks the result and whether it went zero-copy (zc: 1 must, 0
 * must not, -1 may: an algorithm that sends from sendbuf only on some ranks). */
static bool allreduce(ibcomm_t *comm, const int32_t *src, int32_t *out, int gen, int zc, const char *what)
{
	uint64_t zc0 = comm->tp->cnt.zc_puts, d;

	memset(out, 0, LEN);
	if (!hx_ok(comm, ibcomm_allreduce(comm, src, out, COUNT, IBCOMM_INT32, IBCOMM_SUM), what))
		return false;
	if (!check(out, gen, what))
		return false;
	d = comm->tp->cnt.zc_puts - zc0;
	if (zc > 0 && rdma && d == 0)
		hx_fail("%s: no zero-copy put from the registered sendbuf", what);
	if ((zc == 0 || !rdma) && d != 0)
		hx_fail("%s: %llu zero-copy puts where none may be", what, (unsigned long long)d);
	hx_case_done();
	return true;
}

static void job_unmap(ibcomm_t *comm, void *arg)
{
	static const int algos[] = { IBC_ALGO_AUTO, IBC_ALGO_RING, IBC_ALGO_RD, IBC_ALGO_TREE };
	ibcomm_mr_t *mr = NULL;
	int32_t *a, *out;
	void *at;

	(void)arg;
	out = malloc(LEN);
	a = map_at(NULL);
	if (!out || !a)
		goto out;
	at = a;
	fill(a, 1);
	if (!hx_ok(comm, ibcomm_register(comm, a, LEN, &mr), "ibcomm_register"))
		goto out;
	for (size_t k = 0; k < IBC_ARRAY_SIZE(algos); k++) {
		char what[64];

		hx_force_algo(comm, IBC_COLL_ALLREDUCE, algos[k]);
		snprintf(what, sizeof(what), "allreduce (%s) from registered memory", hx_algo_name(algos[k]));
		/* ring and recursive doubling send from sendbuf on every rank */
		if (!allreduce(comm, a, out, 1, algos[k] == IBC_ALGO_RING || algos[k] == IBC_ALGO_RD ? 1 : -1, what))
			goto out;
	}
	hx_force_algo(comm, IBC_COLL_ALLREDUCE, IBC_ALGO_RD);
	/* in place: the call writes the buffer, never zero-copy */
	memcpy(out, a, LEN);
	if (!hx_ok(comm, ibcomm_allreduce(comm, out, out, COUNT, IBCOMM_INT32, IBCOMM_SUM), "in-place allreduce"))
		goto out;
	check(out, 1, "in-place allreduce");

	/*
	 * The contract: deregister, then unmap. New memory with other values mapped at the same
	 * address and registered again is sent zero-copy from its own pages, never from the
	 * pages the first registration pinned.
	 */
	if (!hx_ok(comm, ibcomm_deregister(comm, mr), "ibcomm_deregister before munmap"))
		goto out;
	mr = NULL;
	if (ibc_regcache_find(comm, at, LEN))
		hx_fail("the range is still registered after ibcomm_deregister");
	if (munmap(a, LEN)) {
		hx_fail("munmap: %m");
		a = NULL;
		goto out;
	}
	a = map_at(at);
	if (!a)
		goto out;
	fill(a, 2);
	if (!allreduce(comm, a, out, 2, 0, "allreduce from new memory at a deregistered address"))
		goto out;
	if (!hx_ok(comm, ibcomm_register(comm, a, LEN, &mr), "ibcomm_register of the new memory"))
		goto out;
	if (!allreduce(comm, a, out, 2, 1, "allreduce from re-registered memory"))
		goto out;
	/* once more, registered before its first write: the MR must see the pages the writes land in */
	hx_ok(comm, ibcomm_deregister(comm, mr), "ibcomm_deregister");
	mr = NULL;
	munmap(a, LEN);
	a = map_at(at);
	if (!a)
		goto out;
	if (!hx_ok(comm, ibcomm_register(comm, a, LEN, &mr), "ibcomm_register after deregister and remap"))
		goto out;
	fill(a, 3);
	if (!allreduce(comm, a, out, 3, 1, "allreduce from memory registered again"))
		goto out;
	hx_ok(comm, ibcomm_deregister(comm, mr), "ibcomm_deregister");
	mr = NULL;
	allreduce(comm, a, out, 3, 0, "allreduce after deregistering");
out:
	if (mr)
		hx_ok(comm, ibcomm_deregister(comm, mr), "ibcomm_deregister");
	if (a)
		munmap(a, LEN);
	free(out);
}

static void test_unmap(void)
{
	struct hx_job job = { .name = "registered sendbuf, deregister, munmap and remap", .n = 2, .fn = job_unmap };

	hx_run_job(&job);
}

static void job_handles(ibcomm_t *comm, void *arg)
{
	ibcomm_mr_t *mr = NULL, *mr2 = NULL, *dmr = NULL;
	ibcomm_t *dup = NULL;
	int32_t *a, *out;
	uint64_t zc0;

	(void)arg;
	a = malloc(LEN);
	out = malloc(LEN);
	if (!a || !out)
		goto out;
	fill(a, 5);
	if (!hx_ok(comm, ibcomm_register(comm, a, LEN, &mr), "ibcomm_register") ||
	    !hx_ok(comm, ibcomm_register(comm, a + 1000, 4000, &mr2), "ibcomm_register (inside)"))
		goto out;
	if (!hx_ok(comm, ibcomm_dup(comm, &dup), "ibcomm_dup"))
		goto out;
	/* each communicator has its own registrations */
	if (ibcomm_deregister(dup, mr) != IBCOMM_ERR_INVALID)
		hx_fail("ibcomm_deregister of the parent's handle on the dup did not return IBCOMM_ERR_INVALID");
	if (!hx_ok(dup, ibcomm_register(dup, a, LEN, &dmr), "ibcomm_register on the dup"))
		goto out;
	zc0 = dup->tp->cnt.zc_puts;
	hx_force_algo(dup, IBC_COLL_ALLREDUCE, IBC_ALGO_RD);
	memset(out, 0, LEN);
	if (hx_ok(dup, ibcomm_allreduce(dup, a, out, COUNT, IBCOMM_INT32, IBCOMM_SUM), "allreduce on the dup"))
		check(out, 5, "allreduce on the dup");
	if (rdma && dup->tp->cnt.zc_puts == zc0)
		hx_fail("allreduce on the dup: no zero-copy put");
	/* the dup goes with a live registration: deregistered by ibcomm_destroy */
	hx_ok(NULL, ibcomm_destroy(dup), "ibcomm_destroy of the dup");
	dup = NULL;
	if (ibcomm_deregister(comm, dmr) != IBCOMM_ERR_INVALID)
		hx_fail("the handle of a destroyed communicator was accepted");
	/* the parent's registrations are untouched */
	hx_force_algo(comm, IBC_COLL_ALLREDUCE, IBC_ALGO_RD);
	allreduce(comm, a, out, 5, 1, "allreduce on the parent after destroying the dup");
	hx_ok(comm, ibcomm_deregister(comm, mr), "ibcomm_deregister");
	if (ibcomm_deregister(comm, mr) != IBCOMM_ERR_INVALID)
		hx_fail("a second ibcomm_deregister of one handle did not return IBCOMM_ERR_INVALID");
	mr = NULL;
	/* mr2 stays: the harness destroys comm with it */
	mr2 = NULL;
out:
	if (dup)
		ibcomm_destroy(dup);
	if (mr)
		ibcomm_deregister(comm, mr);
	(void)mr2;
	free(a);
	free(out);
}

static void test_handles(void)
{
	struct hx_job job = { .name = "registration handles", .n = 2, .fn = job_handles };

	hx_run_job(&job);
}

/*
 * Every collective with an out-of-place sendbuf, from registered memory, on 2 and 3 ranks:
 * exact results; over RDMA some rank sent zero-copy (the ranks add their counts in the
 * harness's shared scratch).
 */
#define CC (24u * 1024) /* int32 per block */

static int32_t cval(int r, size_t i)
{
	return (int32_t)(r * 100003 + (int)(i % 9973) + 1);
}

static void job_colls(ibcomm_t *comm, void *arg)
{
	enum { C_REDUCE, C_ALLGATHER, C_REDUCE_SCATTER, C_GATHER, C_SCATTER, C_ALLTOALL, C_N };
	static const char *const names[C_N] = { "reduce", "allgather", "reduce_scatter", "gather", "scatter",
						 "alltoall" };
	int n = hx_size, me = hx_rank, root = n - 1;
	size_t nb = (size_t)n * CC;
	int32_t *in = malloc(nb * sizeof(int32_t)), *out = malloc(nb * sizeof(int32_t));
	ibcomm_mr_t *mr = NULL;

	(void)arg;
	if (!in || !out) {
		hx_fail("out of memory");
		goto out;
	}
	for (size_t i = 0; i < nb; i++)
		in[i] = cval(me, i);
	if (!hx_ok(comm, ibcomm_register(comm, in, nb * sizeof(int32_t), &mr), "ibcomm_register"))
		goto out;
	for (int k = 0; k < C_N; k++) {
		uint64_t zc0 = comm->tp->cnt.zc_puts;
		ibcomm_status_t st = IBCOMM_OK;
		size_t bad = SIZE_MAX, cnt = 0;
		int32_t want = 0;

		memset(out, 0, nb * sizeof(int32_t));
		switch (k) {
		case C_REDUCE:
			st = ibcomm_reduce(comm, in, out, CC, IBCOMM_INT32, IBCOMM_SUM, root);
			cnt = me == root ? CC : 0;
			break;
		case C_ALLGATHER:
			st = ibcomm_allgather(comm, in, out, CC, IBCOMM_INT32);
			cnt = nb;
			break;
		case C_REDUCE_SCATTER:
			st = ibcomm_reduce_scatter(comm, in, out, CC, IBCOMM_INT32, IBCOMM_SUM);
			cnt = CC;
			break;
		case C_GATHER:
			st = ibcomm_gather(comm, in, out, CC, IBCOMM_INT32, root);
			cnt = me == root ? nb : 0;
			break;
		case C_SCATTER:
			st = ibcomm_scatter(comm, in, out, CC, IBCOMM_INT32, root);
			cnt = CC;
			break;
		case C_ALLTOALL:
			st = ibcomm_alltoall(comm, in, out, CC, IBCOMM_INT32);
			cnt = nb;
			break;
		}
		if (!hx_ok(comm, st, names[k]))
			goto out;
		for (size_t i = 0; i < cnt && bad == SIZE_MAX; i++) {
			size_t j = i / CC, o = i % CC;

			switch (k) {
			case C_REDUCE:
				want = 0;
				for (int r = 0; r < n; r++)
					want += cval(r, i);
				break;
			case C_ALLGATHER:
			case C_GATHER:
				want = cval((int)j, o);
				break;
			case C_REDUCE_SCATTER:
				want = 0;
				for (int r = 0; r < n; r++)
					want += cval(r, (size_t)me * CC + i);
				break;
			case C_SCATTER:
				want = cval(root, (size_t)me * CC + i);
				break;
			case C_ALLTOALL:
				want = cval((int)j, (size_t)me * CC + o);
				break;
			}
			if (out[i] != want)
				bad = i;
		}
		if (bad != SIZE_MAX)
			hx_fail("%s on %d ranks: element %zu is %d, expected %d", names[k], n, bad, out[bad], want);
		__atomic_fetch_add(&hx_scratch[k], (int)(comm->tp->cnt.zc_puts - zc0), __ATOMIC_SEQ_CST);
		hx_case_done();
	}
	/* every rank added its count before entering the barrier */
	if (!hx_ok(comm, ibcomm_barrier(comm), "ibcomm_barrier"))
		goto out;
	for (int k = 0; me == 0 && k < C_N; k++) {
		if (rdma && hx_scratch[k] == 0)
			hx_fail("%s on %d ranks from registered memory: no rank sent zero-copy", names[k], n);
		if (!rdma && hx_scratch[k] != 0)
			hx_fail("%s on %d ranks over %s: %d zero-copy puts", names[k], n, ibcomm_transport(comm),
				hx_scratch[k]);
	}
out:
	if (mr)
		hx_ok(comm, ibcomm_deregister(comm, mr), "ibcomm_deregister");
	free(in);
	free(out);
}

static void test_colls(void)
{
	for (int n = 2; n <= 3; n++) {
		struct hx_job job = { .name = "every collective from registered memory", .n = n, .fn = job_colls };

		hx_run_job(&job);
	}
}

/* HX_REG_SPEED=1: times 4 MiB allreduces from registered and unregistered memory (info). */
static void job_speed(ibcomm_t *comm, void *arg)
{
	size_t cnt = 1u << 20, len = cnt * sizeof(int32_t);
	int32_t *in = malloc(len), *out = malloc(len);
	ibcomm_mr_t *mr = NULL;
	double t[2] = { 0, 0 };

	(void)arg;
	if (!in || !out)
		goto out;
	memset(in, 1, len);
	hx_force_algo(comm, IBC_COLL_ALLREDUCE, IBC_ALGO_RING);
	for (int pass = 0; pass < 2; pass++) {
		struct timespec a, b;

		if (pass == 1 && !hx_ok(comm, ibcomm_register(comm, in, len, &mr), "ibcomm_register"))
			goto out;
		hx_ok(comm, ibcomm_allreduce(comm, in, out, cnt, IBCOMM_INT32, IBCOMM_SUM), "warm-up allreduce");
		clock_gettime(CLOCK_MONOTONIC, &a);
		for (int i = 0; i < 5; i++)
			if (!hx_ok(comm, ibcomm_allreduce(comm, in, out, cnt, IBCOMM_INT32, IBCOMM_SUM), "allreduce"))
				goto out;
		clock_gettime(CLOCK_MONOTONIC, &b);
		t[pass] = ((double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9) / 5;
	}
	if (hx_rank == 0)
		printf("\n  4 MiB ring allreduce, %d ranks over %s: %.1f ms unregistered, %.1f ms registered (%llu zero-copy puts)\n",
		       hx_size, ibcomm_transport(comm), t[0] * 1e3, t[1] * 1e3, (unsigned long long)comm->tp->cnt.zc_puts);
out:
	if (mr)
		ibcomm_deregister(comm, mr);
	free(in);
	free(out);
}

static void test_speed(void)
{
	struct hx_job job = { .name = "allreduce speed, registered or not", .n = 2, .fn = job_speed };

	if (!hx_env_long("HX_REG_SPEED", 0)) {
		cm_skip("a measurement: HX_REG_SPEED=1 runs it");
		return;
	}
	hx_run_job(&job);
}

/* HX_TRANSPORT=rdma without a device: skip. A 1-rank communicator on a free port tells. */
static bool rdma_missing(char *why, size_t len)
{
	ibcomm_config_t cfg = IBCOMM_CONFIG_INIT;
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t sl = sizeof(sa);
	ibcomm_t *comm = NULL;
	ibcomm_status_t st;
	char root[64];
	int fd;

	fd = socket(AF_INET, SOCK_STREAM, 0);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) || getsockname(fd, (struct sockaddr *)&sa, &sl)) {
		snprintf(why, len, "no free port: %m");
		if (fd >= 0)
			close(fd);
		return false; /* let the jobs report it */
	}
	close(fd);
	snprintf(root, sizeof(root), "127.0.0.1:%d", ntohs(sa.sin_port));
	cfg.rank = 0;
	cfg.nranks = 1;
	cfg.root = root;
	cfg.transport = "rdma";
	cfg.timeout_ms = 20000;
	st = ibcomm_init(&cfg, &comm);
	if (st == IBCOMM_OK) {
		ibcomm_destroy(comm);
		return false;
	}
	snprintf(why, len, "%s", ibcomm_last_error(NULL));
	return st == IBCOMM_ERR_UNSUPPORTED;
}

int main(int argc, char **argv)
{
	static const struct cm_test tests[] = {
		{ "allreduce from registered memory, deregister, munmap, remap", test_unmap },
		{ "allreduce registration handles, dup, destroy", test_handles },
		{ "allreduce and every collective from registered memory", test_colls },
		{ "allreduce speed (HX_REG_SPEED=1)", test_speed },
	};
	const char *tp = getenv("HX_TRANSPORT");
	char why[512];

	rdma = tp && !strcmp(tp, "rdma");
	if (rdma && rdma_missing(why, sizeof(why)))
		return cm_skip_all("no RDMA transport here: %s", why);
	return CM_MAIN1(argc, argv, "registered memory", tests);
}
