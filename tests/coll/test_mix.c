/*
 * The per-peer composite transport (transports/mix/mix.c) on ranks pretending to be on two
 * hosts (HX_FAKE_HOSTS=A,B,A,B: ranks 0 and 2 on A, 1 and 3 on B) under IBCOMM_TRANSPORT=auto:
 * ibcomm_transport() says "shm+tcp"; each peer's part is shm on its host, tcp across; the
 * counters put every same-host byte on shm and every cross-host byte on tcp, exactly; a
 * receiver asleep in a blocking get is woken by a shared-memory writer (the doorbell) and by
 * a TCP one, with sleep slices longer than the deadline (IBCOMM_TEST_MIX_SLICE_MS), so a lost
 * wake-up fails instead of costing one slice; ibcomm_abort ends a wait for a same-host peer; split and dup pick by layout
 * (one host: shm; one rank per host: tcp; else shm+tcp) and dup/destroy cycles leak no
 * descriptor; under a small IBCOMM_MEM_LIMIT the two parts together stay within it (each its
 * share, TCP's rings counted for the other host's ranks only), and explicit settings over a
 * part's share fail naming IBCOMM_MEM_LIMIT and the setting; a rank alone on its host has no
 * shared-memory part. The collective suites themselves
 * run over shm+tcp in tests/coll/hosts-suite.
 * Needs the IBCOMM_TEST_HOST hook (--enable-test-hooks).
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "../../transports/shm/shm.h"

#define N 4
#define SLEEP_US 300000 /* longer than the mix's spin and than a sleep slice */

static bool same_host(int a, int b)
{
	return a % 2 == b % 2;
}

/* Bytes rank `from` puts to rank `to` (all different, none a multiple of another's). */
static size_t len_of(int from, int to)
{
	return 1000 + 100 * (size_t)from + 7 * (size_t)to;
}

static unsigned char byte_of(int from, int to, size_t i)
{
	return (unsigned char)(from * 31 + to * 7 + i * 13);
}

static void counters_fn(ibcomm_t *comm, void *arg)
{
	ibc_tp_t *tp = comm->tp;
	ibc_deadline_t dl = ibc_deadline(30000);
	uint64_t want_shm = 0, want_tcp = 0, got_shm = 0, got_tcp = 0;
	const ibc_tp_t *shm = NULL, *tcp = NULL;
	unsigned char buf[2000];
	int me = hx_rank;

	(void)arg;
	if (strcmp(ibcomm_transport(comm), "shm+tcp")) {
		hx_fail("ibcomm_transport() = %s, want shm+tcp", ibcomm_transport(comm));
		return;
	}
	for (int q = 0; q < N; q++) {
		const ibc_tp_t *p = ibc_tp_part(tp, q);
		const char *want = same_host(me, q) ? "shm" : "tcp";

		if (!p || strcmp(p->ops->name, want))
			hx_fail("peer %d is carried by %s, want %s", q, p ? p->ops->name : "nothing", want);
		else if (same_host(me, q))
			shm = p;
		else
			tcp = p;
	}
	if (!shm || !tcp || hx_failures())
		return;
	if (tp->max_chunk != IBC_MIN(shm->max_chunk, tcp->max_chunk) || tp->nslots != IBC_MIN(shm->nslots, tcp->nslots))
		hx_fail("max_chunk %zu, nslots %u: want the smaller of shm's (%zu, %u) and tcp's (%zu, %u)", tp->max_chunk,
			tp->nslots, shm->max_chunk, shm->nslots, tcp->max_chunk, tcp->nslots);
	/* one chunk to every peer, then one from every peer (one credit each: puts never block) */
	for (int q = 0; q < N; q++) {
		if (q == me)
			continue;
		for (size_t i = 0; i < len_of(me, q); i++)
			buf[i] = byte_of(me, q, i);
		if (!hx_ok(comm, ibc_put(tp, q, IBC_CHAN_COLL, 100u + (unsigned)me, buf, len_of(me, q), true, dl), "put"))
			return;
		*(same_host(me, q) ? &want_shm : &want_tcp) += len_of(me, q);
	}
	for (int q = 0; q < N; q++) {
		ibc_chunk_t c;
		size_t bad = 0;

		if (q == me)
			continue;
		if (!hx_ok(comm, ibc_get(tp, q, IBC_CHAN_COLL, &c, true, dl), "get"))
			return;
		for (size_t i = 0; i < c.len; i++)
			bad += ((unsigned char *)c.data)[i] != byte_of(q, me, i);
		if (c.len != len_of(q, me) || c.tag != 100u + (unsigned)q || c.peer != q || bad)
			hx_fail("from rank %d: %zu bytes tag %u (want %zu, tag %u), %zu bytes wrong", q, c.len, c.tag,
				len_of(q, me), 100u + (unsigned)q, bad);
		*(same_host(me, q) ? &got_shm : &got_tcp) += c.len;
		if (!hx_ok(comm, ibc_release(tp, &c), "release"))
			return;
	}
	if (shm->cnt.bytes_put != want_shm || tcp->cnt.bytes_put != want_tcp || shm->cnt.bytes_got != got_shm ||
	    tcp->cnt.bytes_got != got_tcp || shm->cnt.puts != 1 || tcp->cnt.puts != 2)
		hx_fail("counters: shm put %llu bytes in %llu chunks (want %llu in 1), got %llu (want %llu); tcp put %llu in %llu (want %llu in 2), got %llu (want %llu)",
			(unsigned long long)shm->cnt.bytes_put, (unsigned long long)shm->cnt.puts,
			(unsigned long long)want_shm, (unsigned long long)shm->cnt.bytes_got, (unsigned long long)got_shm,
			(unsigned long long)tcp->cnt.bytes_put, (unsigned long long)tcp->cnt.puts,
			(unsigned long long)want_tcp, (unsigned long long)tcp->cnt.bytes_got, (unsigned long long)got_tcp);
	if (tp->cnt.bytes_put != want_shm + want_tcp || tp->cnt.puts != 3 || tp->cnt.bytes_got != got_shm + got_tcp ||
	    tp->cnt.gets != 3)
		hx_fail("the mix's counters are not the sums: put %llu bytes in %llu chunks, got %llu in %llu",
			(unsigned long long)tp->cnt.bytes_put, (unsigned long long)tp->cnt.puts,
			(unsigned long long)tp->cnt.bytes_got, (unsigned long long)tp->cnt.gets);
	if (tcp->cnt.connects != 2 || shm->cnt.connects != 0)
		hx_fail("connections: tcp %u (want 2: the other host's ranks), shm %u (want 0)", tcp->cnt.connects,
			shm->cnt.connects);

	/* a sleeping receiver: rank 0 waits for rank 2 (shm, the doorbell), then for rank 1 (tcp),
	 * which starts only then (hx_scratch[1]): nothing else can wake rank 0 in the first wait */
	if (me == 2 || me == 1) {
		while (me == 1 && !hx_scratch[1])
			usleep(1000);
		usleep(SLEEP_US);
		buf[0] = (unsigned char)me;
		hx_ok(comm, ibc_put(tp, 0, IBC_CHAN_COLL, 7, buf, 1, true, dl), "late put");
	} else if (me == 0) {
		for (int k = 0; k < 2; k++) {
			int from = k ? 1 : 2;
			ibc_chunk_t c;

			if (!hx_ok(comm, ibc_get(tp, from, IBC_CHAN_COLL, &c, true, dl), "get of a late put"))
				return;
			if (c.len != 1 || ((unsigned char *)c.data)[0] != from || c.tag != 7)
				hx_fail("late chunk from rank %d: %zu bytes, tag %u", from, c.len, c.tag);
			hx_ok(comm, ibc_release(tp, &c), "release");
			hx_scratch[1] = 1;
		}
	}
	hx_case_done();
}

static void test_counters(void)
{
	/* only the doorbell can wake the sleeping receivers before their deadline */
	static const char *const env[] = { "IBCOMM_TEST_MIX_SLICE_MS=600000", NULL };
	struct hx_job job = { .name = "mix counters", .n = N, .fn = counters_fn, .env = env };

	hx_run_job(&job);
}

static void *abort_later(void *arg)
{
	usleep(SLEEP_US);
	ibcomm_abort(arg);
	return NULL;
}

/* Rank 0 waits for data rank 2 (same host) never sends; another thread aborts. */
static void abort_fn(ibcomm_t *comm, void *arg)
{
	pthread_t th;
	ibc_chunk_t c;
	int st;

	(void)arg;
	if (hx_rank != 0) {
		while (!hx_scratch[0])
			usleep(10000);
		return;
	}
	if (pthread_create(&th, NULL, abort_later, comm)) {
		hx_fail("pthread_create");
		hx_scratch[0] = 1;
		return;
	}
	st = ibc_get(comm->tp, 2, IBC_CHAN_COLL, &c, true, ibc_deadline(20000));
	pthread_join(th, NULL);
	if (st != IBCOMM_ERR_ABORTED)
		hx_fail("a get from a same-host peer returned %d (%s) after ibcomm_abort, want IBCOMM_ERR_ABORTED: %s", st,
			ibcomm_strerror(st), ibcomm_last_error(comm));
	hx_scratch[0] = 1;
	hx_case_done();
}

static void test_abort(void)
{
	struct hx_job job = { .name = "mix abort", .n = N, .fn = abort_fn, .no_final_barrier = true };

	hx_run_job(&job);
}

/* split and dup pick by layout; dup/destroy cycles leave the descriptor count flat. */
static void layout_fn(ibcomm_t *comm, void *arg)
{
	static const struct {
		int color; /* -1: dup */
		const char *want;
	} cases[] = { { 0, "shm" }, { 1, "tcp" }, { -1, "shm+tcp" } };
	int fds0 = -1;

	(void)arg;
	for (size_t k = 0; k < CM_COUNT(cases); k++) {
		int color = cases[k].color == 0 ? hx_rank % 2 : hx_rank / 2; /* by host; one rank per host */
		ibcomm_t *c = NULL;
		int32_t v = 1;

		if (!hx_ok(comm, cases[k].color < 0 ? ibcomm_dup(comm, &c) : ibcomm_split(comm, color, 0, &c), "split/dup"))
			return;
		if (strcmp(ibcomm_transport(c), cases[k].want))
			hx_fail("a %s of %d ranks uses %s, want %s", cases[k].color < 0 ? "dup" : "split", ibcomm_size(c),
				ibcomm_transport(c), cases[k].want);
		if (hx_ok(c, ibcomm_allreduce(c, &v, &v, 1, IBCOMM_INT32, IBCOMM_SUM), "allreduce") && v != ibcomm_size(c))
			hx_fail("allreduce over %s gave %d, want %d", ibcomm_transport(c), v, ibcomm_size(c));
		ibcomm_destroy(c);
	}
	for (int i = 0; i < 60; i++) {
		ibcomm_t *c = NULL;
		int32_t v = 1;

		if (i == 10)
			fds0 = hx_count_fds();
		if (!hx_ok(comm, ibcomm_dup(comm, &c), "dup"))
			return;
		hx_ok(c, ibcomm_allreduce(c, &v, &v, 1, IBCOMM_INT32, IBCOMM_SUM), "allreduce");
		ibcomm_destroy(c);
	}
	if (hx_count_fds() != fds0)
		hx_fail("descriptors: %d after 10 dup/destroy cycles, %d after 60", fds0, hx_count_fds());
	hx_case_done();
}

static void test_layout(void)
{
	struct hx_job job = { .name = "mix layout", .n = N, .fn = layout_fn };

	hx_run_job(&job);
}

#define MEM_CAP (1u << 20) /* IBCOMM_MEM_LIMIT of most cap tests: the smallest allowed */

/* What the mix's parts may allocate at most, from their geometry: this host's segment and
 * TCP's receive rings for the other hosts' ranks; both within IBCOMM_MEM_LIMIT together. The
 * mix's chunk and slots and TCP's are the same on every rank (the algorithms cut alike at
 * both ends of a pair). */
static void memcap_fn(ibcomm_t *comm, void *arg)
{
	const int *host_of = comm->hosts.host_of;
	const ibc_tp_t *shm = ibc_tp_part(comm->tp, hx_rank), *tcp = NULL;
	uint64_t shm_bytes, tcp_bytes, geo[4], all[4 * HX_MAX_RANKS];
	unsigned char *buf;
	int local = 0, n = hx_size;

	(void)arg;
	for (int q = 0; q < n; q++) {
		local += host_of[q] == host_of[hx_rank];
		if (host_of[q] != host_of[hx_rank])
			tcp = ibc_tp_part(comm->tp, q);
	}
	/* a rank alone on its host has no shared-memory part: itself is on the network part too */
	if (strcmp(ibcomm_transport(comm), "shm+tcp") || !tcp || strcmp(shm->ops->name, local > 1 ? "shm" : "tcp") ||
	    strcmp(tcp->ops->name, "tcp")) {
		hx_fail("transport %s, parts %s (itself, %d on its host) and %s: want shm+tcp, %s and tcp",
			ibcomm_transport(comm), shm->ops->name, local, tcp ? tcp->ops->name : "none", local > 1 ? "shm" : "tcp");
		return;
	}
	shm_bytes = local > 1 ? ibc_shm_seg_size((uint32_t)local, shm->nslots, (uint32_t)shm->max_chunk) : 0;
	tcp_bytes = (uint64_t)(n - local) * IBC_NCHAN * tcp->nslots * tcp->max_chunk;
	if (comm->set.mem_limit < MEM_CAP || comm->set.mem_limit > 4 * MEM_CAP)
		hx_fail("IBCOMM_MEM_LIMIT is %llu: the test sets 1 to 4 MiB", (unsigned long long)comm->set.mem_limit);
	if ((local > 1 && !shm_bytes) || shm_bytes + tcp_bytes > comm->set.mem_limit)
		hx_fail("the mix may allocate %llu bytes (shm segment %llu: %d ranks x %d channels x %u slots x %zu; tcp rings %llu: %d peers x %d channels x %u slots x %zu), over IBCOMM_MEM_LIMIT=%llu",
			(unsigned long long)(shm_bytes + tcp_bytes), (unsigned long long)shm_bytes, local, IBC_NCHAN,
			shm->nslots, shm->max_chunk, (unsigned long long)tcp_bytes, n - local, IBC_NCHAN, tcp->nslots,
			tcp->max_chunk, (unsigned long long)comm->set.mem_limit);
	/* the cap shrank the defaults (else this test checks nothing) */
	if ((local > 1 && shm->max_chunk >= IBC_SHM_DEFAULT_CHUNK) || tcp->max_chunk >= 512u * 1024)
		hx_fail("chunks of %zu (shm) and %zu (tcp) bytes: a cap of %llu should have shrunk the defaults",
			shm->max_chunk, tcp->max_chunk, (unsigned long long)comm->set.mem_limit);
	/* what the algorithms cut by, and the network part's rings: the same on every rank */
	geo[0] = comm->tp->max_chunk;
	geo[1] = comm->tp->nslots;
	geo[2] = tcp->max_chunk;
	geo[3] = tcp->nslots;
	if (hx_ok(comm, ibcomm_allgather(comm, geo, all, 4, IBCOMM_UINT64), "allgather of the geometry"))
		for (int r = 0; r < n; r++)
			if (memcmp(all + 4 * r, geo, sizeof(geo)))
				hx_fail("rank %d: mix %llu slots x %llu, tcp %llu x %llu; this rank: mix %llu x %llu, tcp %llu x %llu",
					r, (unsigned long long)all[4 * r + 1], (unsigned long long)all[4 * r],
					(unsigned long long)all[4 * r + 3], (unsigned long long)all[4 * r + 2],
					(unsigned long long)geo[1], (unsigned long long)geo[0], (unsigned long long)geo[3],
					(unsigned long long)geo[2]);
	/* and traffic flows */
	buf = malloc(MEM_CAP);
	if (!buf) {
		hx_oom();
		return;
	}
	for (size_t i = 0; i < MEM_CAP / 4; i++)
		((int32_t *)buf)[i] = (int32_t)(i % 1000) + hx_rank;
	if (hx_ok(comm, ibcomm_allreduce(comm, buf, buf, MEM_CAP / 4, IBCOMM_INT32, IBCOMM_SUM), "allreduce of 1 MiB"))
		for (size_t i = 0; i < MEM_CAP / 4; i++)
			if (((int32_t *)buf)[i] != n * (int32_t)(i % 1000) + n * (n - 1) / 2) {
				hx_fail("allreduce: element %zu is %d, want %d", i, ((int32_t *)buf)[i],
					n * (int32_t)(i % 1000) + n * (n - 1) / 2);
				break;
			}
	free(buf);
	hx_case_done();
}

static void test_memcap(void)
{
	/* 2 + 2 ranks, then hosts of 3, 1 and 2 ranks (unequal: each part sized alike everywhere) */
	static const char *const env[] = { "IBCOMM_MEM_LIMIT=1048576", "IBCOMM_P2P_UNEXPECTED_MAX=65536", NULL };
	static const char *const env3[] = { "IBCOMM_MEM_LIMIT=1048576", "IBCOMM_P2P_UNEXPECTED_MAX=65536",
					    "HX_FAKE_HOSTS=A,A,B,A,C,C", NULL };
	/* 3 + 1 at caps where sizing each part for this host's own ranks gave hosts different
	 * chunks (the first as the parts each took the whole cap, the second as they split it by
	 * this host's ranks): a collective then failed with IBCOMM_ERR_MISMATCH and hung */
	static const char *const env31a[] = { "IBCOMM_MEM_LIMIT=1576960", "IBCOMM_P2P_UNEXPECTED_MAX=65536",
					      "HX_FAKE_HOSTS=A,A,A,B", NULL };
	static const char *const env31b[] = { "IBCOMM_MEM_LIMIT=2142208", "IBCOMM_P2P_UNEXPECTED_MAX=65536",
					      "HX_FAKE_HOSTS=A,A,A,B", NULL };
	struct hx_job job = { .name = "mix memory cap", .n = N, .fn = memcap_fn, .env = env };
	struct hx_job job3 = { .name = "mix memory cap, hosts A,A,B,A,C,C", .n = 6, .fn = memcap_fn, .env = env3 };
	struct hx_job job31a = { .name = "mix memory cap 1576960, hosts A,A,A,B", .n = 4, .fn = memcap_fn, .env = env31a,
				 .timeout_s = 60 };
	struct hx_job job31b = { .name = "mix memory cap 2142208, hosts A,A,A,B", .n = 4, .fn = memcap_fn, .env = env31b,
				 .timeout_s = 60 };

	hx_run_job(&job);
	hx_run_job(&job3);
	hx_run_job(&job31a);
	hx_run_job(&job31b);
}

/* TCP chunks that fit the whole cap for 3 peers (3 x 2 x 160 KiB) but not the network part's
 * half of it for its 2 (2 x 2 x 160 KiB > 512 KiB): init fails, naming the cap and the setting. */
static void memcap_err_fn(ibcomm_t *comm, void *arg)
{
	ibcomm_config_t cfg = IBCOMM_CONFIG_INIT;
	ibcomm_status_t st;
	const char *msg;

	(void)comm;
	(void)arg;
	cfg.rank = hx_rank;
	cfg.nranks = hx_size;
	cfg.root = hx_root;
	cfg.transport = "auto";
	cfg.timeout_ms = 60000;
	st = ibcomm_init(&cfg, &comm);
	if (st == IBCOMM_OK) {
		hx_fail("init succeeded over the network part's share of IBCOMM_MEM_LIMIT (transport %s)",
			ibcomm_transport(comm));
		ibcomm_destroy(comm);
		return;
	}
	msg = ibcomm_last_error(NULL);
	/* rank 0 always fails on the cap; another rank may see rank 0's rendezvous go first */
	if ((hx_rank == 0 || st == IBCOMM_ERR_INVALID) &&
	    (st != IBCOMM_ERR_INVALID || !strstr(msg, "IBCOMM_MEM_LIMIT=1048576") || !strstr(msg, "IBCOMM_TCP_CHUNK") ||
	     !strstr(msg, "share") || !strstr(msg, "shm+tcp")))
		hx_fail("init returned %d (%s): %s; want IBCOMM_ERR_INVALID naming IBCOMM_MEM_LIMIT=1048576, the share of shm+tcp and IBCOMM_TCP_CHUNK",
			st, ibcomm_strerror(st), msg);
	hx_case_done();
}

static void test_memcap_err(void)
{
	static const char *const env[] = { "IBCOMM_MEM_LIMIT=1048576", "IBCOMM_P2P_UNEXPECTED_MAX=65536", "IBCOMM_TCP_CHUNK=163840", "IBCOMM_TCP_SLOTS=1",
					   "IBCOMM_TRANSPORT=auto", NULL };
	struct hx_job job = { .name = "mix memory cap error", .n = N, .fn = memcap_err_fn, .env = env, .no_init = true };

	hx_run_job(&job);
}

int main(int argc, char **argv)
{
	static const struct cm_test tests[] = {
		{ "counters: same-host bytes on shm, cross-host on tcp; sleeping receivers woken", test_counters },
		{ "abort ends a wait for a same-host peer", test_abort },
		{ "split and dup pick by layout; dup cycles leak no descriptor", test_layout },
		{ "IBCOMM_MEM_LIMIT=1M caps both parts together, sized alike on every host", test_memcap },
		{ "explicit TCP chunks over the network part's share: an error naming the cap", test_memcap_err },
	};

	setenv("HX_FAKE_HOSTS", "A,B", 1);
	setenv("HX_TRANSPORT", "auto", 1);
	setenv("HX_EXPECT_TRANSPORT", "shm+tcp", 1);
	return CM_MAIN1(argc, argv, "mix", tests);
}
