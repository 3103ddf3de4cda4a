/*
 * Point-to-point and communicators on real ranks over loopback: tagged send/recv out of
 * order, large messages alternating send-first and recv-first, p2p independent of
 * collectives, split (negative colors, reversed keys, ties, nested, singletons), dup
 * (independent traffic), count 0 everywhere, ibcomm_init_env, and the error cases.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "harness.h"

#define QCNT 7

static bool cmp_i32(const char *label, const char *what, const int32_t *got, const int32_t *exp, size_t cnt)
{
	for (size_t i = 0; i < cnt; i++)
		if (got[i] != exp[i]) {
			hx_fail("%s: %s: element %zu of %zu: expected %d got %d", label, what, i, cnt, exp[i], got[i]);
			return false;
		}
	return true;
}

static bool call_ok(ibcomm_t *comm, const char *label, const char *fn, ibcomm_status_t st)
{
	char w[160];

	snprintf(w, sizeof(w), "%s: %s", label, fn);
	return hx_ok(comm, st, w);
}

/* Element i of rank r's contribution in quick_colls (salt tells communicators apart). */
static int32_t qv(int salt, int r, size_t i)
{
	return salt * 100000 + r * 1000 + (int32_t)i + 1;
}

/*
 * Every collective once (count QCNT, int32) on comm, checked: proves a communicator (child,
 * dup, singleton) is fully usable and that its ranks are ordered as it says.
 */
static bool quick_colls(ibcomm_t *comm, const char *label, int salt)
{
	int n = ibcomm_size(comm), me = ibcomm_rank(comm);
	size_t tot = (size_t)n * QCNT;
	int32_t *s = calloc(tot, sizeof(*s)), *r = calloc(tot, sizeof(*r)), *e = calloc(tot, sizeof(*e));
	bool ok = false;

	if (!s || !r || !e) {
		hx_fail("test: out of memory");
		goto out;
	}
	/* allreduce SUM */
	for (size_t i = 0; i < QCNT; i++) {
		s[i] = qv(salt, me, i);
		e[i] = 0;
		for (int k = 0; k < n; k++)
			e[i] += qv(salt, k, i);
	}
	if (!call_ok(comm, label, "ibcomm_allreduce", ibcomm_allreduce(comm, s, r, QCNT, IBCOMM_INT32, IBCOMM_SUM)) ||
	    !cmp_i32(label, "allreduce", r, e, QCNT))
		goto out;
	/* broadcast from the last rank */
	for (size_t i = 0; i < QCNT; i++) {
		r[i] = me == n - 1 ? qv(salt, me, i) : -1;
		e[i] = qv(salt, n - 1, i);
	}
	if (!call_ok(comm, label, "ibcomm_broadcast", ibcomm_broadcast(comm, r, QCNT, IBCOMM_INT32, n - 1)) ||
	    !cmp_i32(label, "broadcast", r, e, QCNT))
		goto out;
	/* reduce MAX to rank 0 */
	if (!call_ok(comm, label, "ibcomm_reduce",
		     ibcomm_reduce(comm, s, me == 0 ? r : NULL, QCNT, IBCOMM_INT32, IBCOMM_MAX, 0)))
		goto out;
	for (size_t i = 0; i < QCNT; i++)
		e[i] = qv(salt, n - 1, i);
	if (me == 0 && !cmp_i32(label, "reduce", r, e, QCNT))
		goto out;
	/* allgather; gather to the last rank */
	for (size_t i = 0; i < tot; i++)
		e[i] = qv(salt, (int)(i / QCNT), i % QCNT);
	if (!call_ok(comm, label, "ibcomm_allgather", ibcomm_allgather(comm, s, r, QCNT, IBCOMM_INT32)) ||
	    !cmp_i32(label, "allgather", r, e, tot))
		goto out;
	memset(r, 0, tot * sizeof(*r));
	if (!call_ok(comm, label, "ibcomm_gather",
		     ibcomm_gather(comm, s, me == n - 1 ? r : NULL, QCNT, IBCOMM_INT32, n - 1)))
		goto out;
	if (me == n - 1 && !cmp_i32(label, "gather", r, e, tot))
		goto out;
	/* reduce_scatter SUM, scatter from rank 0, alltoall: block b of s is row me from b * QCNT */
	for (size_t i = 0; i < tot; i++)
		s[i] = qv(salt, me, i);
	for (size_t i = 0; i < QCNT; i++) {
		e[i] = 0;
		for (int k = 0; k < n; k++)
			e[i] += qv(salt, k, (size_t)me * QCNT + i);
	}
	if (!call_ok(comm, label, "ibcomm_reduce_scatter",
		     ibcomm_reduce_scatter(comm, s, r, QCNT, IBCOMM_INT32, IBCOMM_SUM)) ||
	    !cmp_i32(label, "reduce_scatter", r, e, QCNT))
		goto out;
	for (size_t i = 0; i < QCNT; i++)
		e[i] = qv(salt, 0, (size_t)me * QCNT + i);
	if (!call_ok(comm, label, "ibcomm_scatter", ibcomm_scatter(comm, me == 0 ? s : NULL, r, QCNT, IBCOMM_INT32, 0)) ||
	    !cmp_i32(label, "scatter", r, e, QCNT))
		goto out;
	for (size_t i = 0; i < tot; i++)
		e[i] = qv(salt, (int)(i / QCNT), (size_t)me * QCNT + i % QCNT);
	if (!call_ok(comm, label, "ibcomm_alltoall", ibcomm_alltoall(comm, s, r, QCNT, IBCOMM_INT32)) ||
	    !cmp_i32(label, "alltoall", r, e, tot))
		goto out;
	ok = call_ok(comm, label, "ibcomm_barrier", ibcomm_barrier(comm));
	hx_case_done();
out:
	free(s);
	free(r);
	free(e);
	return ok;
}

/* ---- send/recv ---- */
static void msg_fill(int32_t *buf, size_t cnt, int src, uint32_t tag, int seq)
{
	for (size_t i = 0; i < cnt; i++)
		buf[i] = (int32_t)(src * 1000000 + (int)(tag % 991) * 1000 + seq * 100 + (int)i);
}

/* Receives cnt int32 from peer with tag and checks them against msg_fill(src, tag, seq). */
static bool recv_check(ibcomm_t *comm, int peer, uint32_t tag, size_t cnt, int seq)
{
	int32_t got[64], exp[64];
	char label[96];

	snprintf(label, sizeof(label), "recv from %d tag %u (message %d of that tag)", peer, tag, seq);
	memset(got, 0xA5, sizeof(got));
	if (!call_ok(comm, label, "ibcomm_recv", ibcomm_recv(comm, cnt ? got : NULL, cnt, IBCOMM_INT32, peer, tag)))
		return false;
	msg_fill(exp, cnt, peer, tag, seq);
	if (!cmp_i32(label, "data", got, exp, cnt))
		return false;
	for (size_t i = cnt; i < 64; i++)
		if (got[i] != (int32_t)0xA5A5A5A5) {
			hx_fail("%s: wrote past the %zu received elements (element %zu)", label, cnt, i);
			return false;
		}
	return true;
}

static bool send_msg(ibcomm_t *comm, int peer, uint32_t tag, size_t cnt, int seq)
{
	int32_t buf[64];
	char label[96];

	msg_fill(buf, cnt, hx_rank, tag, seq);
	snprintf(label, sizeof(label), "send to %d tag %u", peer, tag);
	return call_ok(comm, label, "ibcomm_send", ibcomm_send(comm, cnt ? buf : NULL, cnt, IBCOMM_INT32, peer, tag));
}

/* Small messages to the right with several tags, received from the left in another order. */
static bool tags_out_of_order(ibcomm_t *comm)
{
	static const struct {
		uint32_t tag;
		size_t cnt;
		int seq; /* how many earlier messages have this tag */
	} sends[] = { { 3, 50, 0 },  { 1, 10, 0 }, { 7, 20, 0 },          { 2, 0, 0 },
		      { 7, 21, 1 },  { 4000000000u, 5, 0 }, { 0, 1, 0 } },
	  recvs[] = { { 7, 20, 0 },  { 4000000000u, 5, 0 }, { 1, 10, 0 }, { 0, 1, 0 },
		      { 7, 21, 1 },  { 3, 50, 0 },          { 2, 0, 0 } };
	int n = hx_size, right = (hx_rank + 1) % n, left = (hx_rank + n - 1) % n;

	/*
	 * More messages than a transport has slots: a send may wait for the receiver, so even
	 * ranks send first and odd ranks receive first (the receiver sets aside the tags it
	 * does not want yet).
	 */
	for (int step = 0; step < 2; step++) {
		if ((step == 0) == (hx_rank % 2 == 0)) {
			for (size_t i = 0; i < IBC_ARRAY_SIZE(sends); i++)
				if (!send_msg(comm, right, sends[i].tag, sends[i].cnt, sends[i].seq))
					return false;
		} else {
			for (size_t i = 0; i < IBC_ARRAY_SIZE(recvs); i++)
				if (!recv_check(comm, left, recvs[i].tag, recvs[i].cnt, recvs[i].seq))
					return false;
		}
	}
	hx_case_done();
	return true;
}

/*
 * A large message to `to`, another from `from`; send_first chooses the order. Checked with
 * the harness's tables (row = sender).
 */
static bool exchange(ibcomm_t *comm, int to, int from, bool send_first, ibcomm_dtype_t dt, size_t cnt, uint32_t tag,
		     uint32_t seed)
{
	struct hx_case c = { .label = "send/recv", .n = hx_size, .count = cnt, .dt = dt, .op = HX_NOOP, .root = -1,
			     .seed = seed };
	struct hx_buf sb = { 0 }, rb = { 0 };
	struct hx_data d;
	char label[128];
	bool ok = false;

	if (!hx_data_init(&d, dt, HX_NOOP, hx_size, cnt, seed))
		goto oom;
	if (!hx_buf_new(&sb, cnt * d.esz) || !hx_buf_new(&rb, cnt * d.esz))
		goto oom;
	hx_fill(&d, hx_in_row(&d, hx_rank), sb.p, 0, cnt);
	snprintf(label, sizeof(label), "%s exchange count=%zu dtype=%s tag %u (send to %d, recv from %d)",
		 send_first ? "send-first" : "recv-first", cnt, hx_dtype_names[dt], tag, to, from);
	for (int step = 0; step < 2; step++) {
		if ((step == 0) == send_first) {
			if (!call_ok(comm, label, "ibcomm_send", ibcomm_send(comm, sb.p, cnt, dt, to, tag)))
				goto out;
		} else if (!call_ok(comm, label, "ibcomm_recv", ibcomm_recv(comm, rb.p, cnt, dt, from, tag))) {
			goto out;
		}
	}
	c.label = label;
	ok = hx_expect(&c, "received", &d, hx_in_row(&d, from), rb.p, 0, cnt) &&
	     hx_expect(&c, "send buffer changed", &d, hx_in_row(&d, hx_rank), sb.p, 0, cnt) &&
	     hx_guards(&c, "recv buffer", &rb) && hx_guards(&c, "send buffer", &sb);
	hx_case_done();
	goto out;
oom:
	hx_fail("test: out of memory");
out:
	hx_buf_free(&sb);
	hx_buf_free(&rb);
	hx_data_free(&d);
	return ok;
}

static bool large_alternating(ibcomm_t *comm)
{
	static const struct {
		ibcomm_dtype_t dt;
		size_t cnt;
	} sizes[] = {
		{ IBCOMM_INT32, 1024 * 1024 },      /* 4 MiB */
		{ IBCOMM_FLOAT16, 65537 },
		{ IBCOMM_UINT8, 3 * HX_MIB + 1 },
		{ IBCOMM_FLOAT64, 1000 },
	};
	int n = hx_size, me = hx_rank, right = (me + 1) % n, left = (me + n - 1) % n;
	bool even = me % 2 == 0;
	uint32_t seed = 100;

	for (size_t i = 0; i < IBC_ARRAY_SIZE(sizes); i++) {
		/* Ring to the right: even ranks send first, odd ranks receive first. */
		if (!exchange(comm, right, left, even, sizes[i].dt, sizes[i].cnt, 20 + (uint32_t)i, seed++))
			return false;
		/* Ring to the left, the other way round. */
		if (!exchange(comm, left, right, !even, sizes[i].dt, sizes[i].cnt, 30 + (uint32_t)i, seed++))
			return false;
		/* Pairs (0,1), (2,3), ...: the lower sends first. */
		if ((me ^ 1) < n) {
			int partner = me ^ 1;

			if (!exchange(comm, partner, partner, even, sizes[i].dt, sizes[i].cnt, 40 + (uint32_t)i, seed))
				return false;
		}
		seed++;
	}
	return true;
}

/* A small send posted before a collective is received after it: p2p is independent. */
static bool p2p_across_collectives(ibcomm_t *comm)
{
	int n = hx_size, right = (hx_rank + 1) % n, left = (hx_rank + n - 1) % n;

	if (!send_msg(comm, right, 11, 64, 0) || !send_msg(comm, right, 12, 0, 0))
		return false;
	if (!quick_colls(comm, "collectives between a send and its recv", 1))
		return false;
	return recv_check(comm, left, 12, 0, 0) && recv_check(comm, left, 11, 64, 0);
}

static void sendrecv_fn(ibcomm_t *comm, void *arg)
{
	if (tags_out_of_order(comm) && large_alternating(comm))
		p2p_across_collectives(comm);
}

static void test_sendrecv(void)
{
	static const int ns[] = { 2, 3, 4, 8 };

	for (size_t i = 0; i < IBC_ARRAY_SIZE(ns); i++) {
		struct hx_job job = { .name = "sendrecv", .n = ns[i], .fn = sendrecv_fn };

		if (ns[i] >= hx_nmin() && ns[i] <= hx_nmax())
			hx_run_job(&job);
	}
	{
		struct hx_job job = { .name = "sendrecv, 1000-byte chunks", .n = 3, .fn = sendrecv_fn,
				      .env = hx_small_chunks_env };

		if (3 >= hx_nmin() && 3 <= hx_nmax())
			hx_run_job(&job);
	}
}

/* A receive of the wrong count is a mismatch, named. */
static void mismatch_fn(ibcomm_t *comm, void *arg)
{
	int32_t buf[8] = { 1, 2, 3, 4, 5, 6, 7, 8 };
	ibcomm_status_t st;

	if (hx_rank == 0) {
		hx_ok(comm, ibcomm_send(comm, buf, 5, IBCOMM_INT32, 1, 99), "ibcomm_send of 5 elements");
		return;
	}
	st = ibcomm_recv(comm, buf, 6, IBCOMM_INT32, 0, 99);
	if (st != IBCOMM_ERR_MISMATCH)
		hx_fail("ibcomm_recv of 6 elements where 5 were sent returned %d (%s), expected IBCOMM_ERR_MISMATCH",
			(int)st, ibcomm_strerror(st));
	else if (!strcmp(ibcomm_last_error(comm), "no error") || !*ibcomm_last_error(comm))
		hx_fail("ibcomm_recv mismatch: ibcomm_last_error is empty");
	hx_case_done();
}

static void test_recv_mismatch(void)
{
	struct hx_job job = { .name = "recv_mismatch", .n = 2, .fn = mismatch_fn, .no_final_barrier = true };

	hx_run_job(&job);
}

/* ---- split and dup ---- */
static bool check_child(ibcomm_t *child, int old, const char *label, const int *members, int nmem)
{
	int me = -1;
	int32_t *all;
	bool ok;

	for (int i = 0; i < nmem; i++)
		if (members[i] == old)
			me = i;
	if (ibcomm_size(child) != nmem || ibcomm_rank(child) != me) {
		hx_fail("%s: child rank/size %d/%d, expected %d/%d", label, ibcomm_rank(child), ibcomm_size(child), me,
			nmem);
		return false;
	}
	all = calloc((size_t)nmem, sizeof(*all));
	if (!all) {
		hx_fail("test: out of memory");
		return false;
	}
	ok = call_ok(child, label, "ibcomm_allgather of old ranks", ibcomm_allgather(child, &old, all, 1, IBCOMM_INT32));
	for (int i = 0; ok && i < nmem; i++)
		if (all[i] != members[i]) {
			hx_fail("%s: child rank %d is old rank %d, expected old rank %d", label, i, all[i], members[i]);
			ok = false;
		}
	free(all);
	return ok && quick_colls(child, label, 2);
}

/* Members of a split: old ranks with color c sorted by (key, old rank). */
static int members_of(int n, const int *color, const int *key, int c, int *out)
{
	int m = 0;

	for (int r = 0; r < n; r++)
		if (color[r] == c)
			out[m++] = r;
	for (int i = 1; i < m; i++)
		for (int j = i; j > 0 && (key[out[j]] < key[out[j - 1]] ||
					  (key[out[j]] == key[out[j - 1]] && out[j] < out[j - 1]));
		     j--) {
			int t = out[j];
			out[j] = out[j - 1];
			out[j - 1] = t;
		}
	return m;
}

static bool split_case(ibcomm_t *comm, const char *label, const int *color, const int *key, ibcomm_t **out)
{
	int n = ibcomm_size(comm), me = ibcomm_rank(comm), members[HX_MAX_RANKS], m;
	ibcomm_t *child = (ibcomm_t *)(uintptr_t)1;

	if (!call_ok(comm, label, "ibcomm_split", ibcomm_split(comm, color[me], key[me], &child)))
		return false;
	if (color[me] < 0) {
		if (child) {
			hx_fail("%s: negative color gave a communicator (expected NULL)", label);
			return false;
		}
		*out = NULL;
		hx_case_done();
		return true;
	}
	if (!child || child == (ibcomm_t *)(uintptr_t)1) {
		hx_fail("%s: ibcomm_split returned OK without a communicator", label);
		return false;
	}
	*out = child;
	m = members_of(n, color, key, color[me], members);
	if (!check_child(child, me, label, members, m))
		return false;
	hx_case_done();
	return true;
}

static void split_fn(ibcomm_t *comm, void *arg)
{
	static const int colors3[3] = { 5, 0, 1000000 };
	int n = ibcomm_size(comm);
	int color[HX_MAX_RANKS] = { 0 }, key[HX_MAX_RANKS] = { 0 }, color2[HX_MAX_RANKS] = { 0 }, key2[HX_MAX_RANKS] = { 0 };
	ibcomm_t *a = NULL, *b = NULL, *g = NULL, *one = NULL;
	char label[96];

	/* A: three colors, the last rank in none, keys reversing the order. */
	for (int r = 0; r < n; r++) {
		color[r] = r == n - 1 && n > 1 ? -1 : colors3[r % 3];
		key[r] = -r;
	}
	snprintf(label, sizeof(label), "split A (colors r%%3, last rank -1, key -rank) n=%d", n);
	if (!split_case(comm, label, color, key, &a))
		goto out;
	/* B: one color, ties in the key broken by old rank. */
	for (int r = 0; r < n; r++) {
		color2[r] = 3;
		key2[r] = (n - r) / 2;
	}
	snprintf(label, sizeof(label), "split B (one color, key (n-rank)/2) n=%d", n);
	if (!split_case(comm, label, color2, key2, &b))
		goto out;
	/* Nested: split B's child by parity of its rank, keys in order. */
	{
		int nb = ibcomm_size(b), cb[HX_MAX_RANKS] = { 0 }, kb[HX_MAX_RANKS] = { 0 };

		for (int r = 0; r < nb; r++) {
			cb[r] = r % 2;
			kb[r] = 0;
		}
		snprintf(label, sizeof(label), "nested split of B by parity n=%d", n);
		if (!split_case(b, label, cb, kb, &g))
			goto out;
	}
	/* Singletons: every rank its own color: size-1 communicators run every collective. */
	for (int r = 0; r < n; r++) {
		color2[r] = r;
		key2[r] = 0;
	}
	snprintf(label, sizeof(label), "split into singletons n=%d", n);
	if (!split_case(comm, label, color2, key2, &one))
		goto out;
	/* The parent still works after all that. */
	snprintf(label, sizeof(label), "parent after splits n=%d", n);
	quick_colls(comm, label, 3);
out:
	hx_ok(NULL, ibcomm_destroy(one), "ibcomm_destroy(singleton)");
	hx_ok(NULL, ibcomm_destroy(g), "ibcomm_destroy(nested)");
	hx_ok(NULL, ibcomm_destroy(b), "ibcomm_destroy(B)");
	hx_ok(NULL, ibcomm_destroy(a), "ibcomm_destroy(A)");
}

static void test_split(void)
{
	for (int n = hx_nmin(); n <= hx_nmax(); n++) {
		struct hx_job job = { .name = "split", .n = n, .fn = split_fn };

		hx_run_job(&job);
	}
}

/*
 * ---- the host map of split communicators (HX_FAKE_HOSTS: tests/coll/hosts-suite) ----
 * Split by parity with the order reversed: the child's map, derived from the parent's without
 * a new exchange, numbers the child's hosts by their lowest child rank and agrees with the
 * parent's on who shares a host; collectives run on it, hier and the rings forced.
 */
static void split_hosts_fn(ibcomm_t *comm, void *arg)
{
	int n = ibcomm_size(comm), me = ibcomm_rank(comm), next = 0;
	ibcomm_t *c = NULL;

	(void)arg;
	if (!hx_ok(comm, ibcomm_split(comm, me % 2, -me, &c), "ibcomm_split by parity, reversed"))
		return;
	/* child rank i is parent rank p = the i-th of this parity from the top */
	for (int i = 0; i < ibcomm_size(c); i++) {
		int p = n - 1 - ((n - 1 - me % 2) % 2) - 2 * i, h = comm->hosts.host_of[p], want = -1;

		for (int j = 0; j < i && want < 0; j++) {
			int q = n - 1 - ((n - 1 - me % 2) % 2) - 2 * j;

			if (comm->hosts.host_of[q] == h)
				want = c->hosts.host_of[j];
		}
		if (want < 0)
			want = next++;
		if (c->hosts.host_of[i] != want)
			hx_fail("split: child rank %d (parent %d) is on host %d, expected %d", i, p, c->hosts.host_of[i],
				want);
	}
	if (c->hosts.nhosts != next)
		hx_fail("split: %d hosts, expected %d", c->hosts.nhosts, next);
	for (int algo = 0; algo < 2; algo++) {
		hx_force_algo(c, IBC_COLL_ALLREDUCE, algo ? IBC_ALGO_RING : IBC_ALGO_HIER);
		hx_force_algo(c, IBC_COLL_BROADCAST, algo ? IBC_ALGO_PIPELINE : IBC_ALGO_HIER);
		hx_force_algo(c, IBC_COLL_ALLGATHER, IBC_ALGO_RING);
		if (!quick_colls(c, "split on pretended hosts", 21 + algo))
			break;
	}
	hx_ok(NULL, ibcomm_destroy(c), "ibcomm_destroy(split)");
}

static void test_split_hosts(void)
{
	const char *hosts = getenv("HX_FAKE_HOSTS");

	if (!hosts || !*hosts) {
		cm_skip("HX_FAKE_HOSTS unset (tests/coll/hosts-suite sets it)");
		return;
	}
	for (int n = hx_nmin(); n <= hx_nmax(); n++) {
		struct hx_job job = { .name = "split_hosts", .n = n, .fn = split_hosts_fn };

		hx_run_job(&job);
	}
}

static void dup_fn(ibcomm_t *comm, void *arg)
{
	int n = ibcomm_size(comm), me = ibcomm_rank(comm);
	ibcomm_t *d1 = NULL, *d2 = NULL;

	/* A message sent on comm before the dup is received on comm after it. */
	if (n > 1 && me == 0 && !send_msg(comm, 1, 9, 16, 0))
		return;
	if (!hx_ok(comm, ibcomm_dup(comm, &d1), "ibcomm_dup") || !hx_ok(d1, ibcomm_dup(d1, &d2), "ibcomm_dup of a dup"))
		goto out;
	if (ibcomm_rank(d1) != me || ibcomm_size(d1) != n || ibcomm_rank(d2) != me || ibcomm_size(d2) != n) {
		hx_fail("dup: rank/size %d/%d and %d/%d, expected %d/%d", ibcomm_rank(d1), ibcomm_size(d1),
			ibcomm_rank(d2), ibcomm_size(d2), me, n);
		goto out;
	}
	if (n > 1 && me == 1 && !recv_check(comm, 0, 9, 16, 0))
		goto out;
	/* Same peer, same tag on three communicators, received in the opposite order. */
	if (n > 1 && me == 0) {
		if (!send_msg(d1, 1, 5, 3, 1) || !send_msg(comm, 1, 5, 4, 2) || !send_msg(d2, 1, 5, 5, 3))
			goto out;
	} else if (n > 1 && me == 1) {
		if (!recv_check(d2, 0, 5, 5, 3) || !recv_check(comm, 0, 5, 4, 2) || !recv_check(d1, 0, 5, 3, 1))
			goto out;
	}
	/* Collectives interleaved on the three. */
	if (!quick_colls(d1, "dup d1", 4) || !quick_colls(comm, "dup parent", 5) || !quick_colls(d2, "dup d2", 6))
		goto out;
	hx_ok(NULL, ibcomm_destroy(d1), "ibcomm_destroy(d1)");
	d1 = NULL;
	if (quick_colls(d2, "d2 after destroying d1", 7))
		quick_colls(comm, "parent after destroying d1", 8);
out:
	hx_ok(NULL, ibcomm_destroy(d2), "ibcomm_destroy(d2)");
	hx_ok(NULL, ibcomm_destroy(d1), "ibcomm_destroy(d1)");
}

static void test_dup(void)
{
	static const int ns[] = { 1, 2, 3, 5, 8 };

	for (size_t i = 0; i < IBC_ARRAY_SIZE(ns); i++) {
		struct hx_job job = { .name = "dup", .n = ns[i], .fn = dup_fn };

		if (ns[i] >= hx_nmin() && ns[i] <= hx_nmax())
			hx_run_job(&job);
	}
}

/* ---- count 0 everywhere, every algorithm, NULL buffers ---- */
static void zero_fn(ibcomm_t *comm, void *arg)
{
	static const struct {
		int coll;
		int algos[3];
	} plan[] = {
		{ IBC_COLL_ALLREDUCE, { IBC_ALGO_RING, IBC_ALGO_RD, IBC_ALGO_TREE } },
		{ IBC_COLL_BROADCAST, { IBC_ALGO_TREE, IBC_ALGO_PIPELINE } },
		{ IBC_COLL_REDUCE, { IBC_ALGO_TREE, IBC_ALGO_LINEAR } },
		{ IBC_COLL_ALLGATHER, { IBC_ALGO_RING, IBC_ALGO_LINEAR } },
		{ IBC_COLL_REDUCE_SCATTER, { IBC_ALGO_RING, IBC_ALGO_LINEAR } },
		{ IBC_COLL_GATHER, { IBC_ALGO_TREE, IBC_ALGO_LINEAR } },
		{ IBC_COLL_SCATTER, { IBC_ALGO_TREE, IBC_ALGO_LINEAR } },
		{ IBC_COLL_ALLTOALL, { IBC_ALGO_PAIRWISE, IBC_ALGO_LINEAR } },
	};
	int n = ibcomm_size(comm), me = ibcomm_rank(comm);

	for (size_t p = 0; p < IBC_ARRAY_SIZE(plan); p++)
		for (int a = -1; a < 3; a++) {
			int algo = a < 0 ? IBC_ALGO_AUTO : plan[p].algos[a], root = (int)(p % (size_t)n);
			ibcomm_status_t st = IBCOMM_OK;
			char what[96];

			if (algo == IBC_ALGO_AUTO && a >= 0)
				continue;
			hx_force_algo(comm, plan[p].coll, algo);
			switch (plan[p].coll) {
			case IBC_COLL_ALLREDUCE:
				st = ibcomm_allreduce(comm, NULL, NULL, 0, IBCOMM_FLOAT32, IBCOMM_AVG);
				break;
			case IBC_COLL_BROADCAST:
				st = ibcomm_broadcast(comm, NULL, 0, IBCOMM_INT8, root);
				break;
			case IBC_COLL_REDUCE:
				st = ibcomm_reduce(comm, NULL, NULL, 0, IBCOMM_BFLOAT16, IBCOMM_PROD, root);
				break;
			case IBC_COLL_ALLGATHER:
				st = ibcomm_allgather(comm, NULL, NULL, 0, IBCOMM_UINT64);
				break;
			case IBC_COLL_REDUCE_SCATTER:
				st = ibcomm_reduce_scatter(comm, NULL, NULL, 0, IBCOMM_FLOAT16, IBCOMM_MIN);
				break;
			case IBC_COLL_GATHER:
				st = ibcomm_gather(comm, NULL, NULL, 0, IBCOMM_INT32, root);
				break;
			case IBC_COLL_SCATTER:
				st = ibcomm_scatter(comm, NULL, NULL, 0, IBCOMM_UINT32, root);
				break;
			case IBC_COLL_ALLTOALL:
				st = ibcomm_alltoall(comm, NULL, NULL, 0, IBCOMM_FLOAT64);
				break;
			}
			snprintf(what, sizeof(what), "count 0, NULL buffers: collective %zu algo=%s n=%d root=%d", p,
				 hx_algo_name(algo), n, root);
			hx_force_algo(comm, plan[p].coll, IBC_ALGO_AUTO);
			if (!hx_ok(comm, st, what))
				return;
			hx_case_done();
		}
	if (n > 1) {
		int right = (me + 1) % n, left = (me + n - 1) % n;

		if (!hx_ok(comm, ibcomm_send(comm, NULL, 0, IBCOMM_INT8, right, 0), "ibcomm_send of 0 elements, NULL") ||
		    !hx_ok(comm, ibcomm_recv(comm, NULL, 0, IBCOMM_INT8, left, 0), "ibcomm_recv of 0 elements, NULL"))
			return;
		hx_case_done();
	}
}

static void test_count_zero(void)
{
	static const int ns[] = { 1, 2, 3, 8 };

	for (size_t i = 0; i < IBC_ARRAY_SIZE(ns); i++) {
		struct hx_job job = { .name = "count_zero", .n = ns[i], .fn = zero_fn };

		if (ns[i] >= hx_nmin() && ns[i] <= hx_nmax())
			hx_run_job(&job);
	}
}

/* ---- ibcomm_init_env ---- */
static void env_fn(ibcomm_t *comm, void *arg)
{
	const char *want = getenv("IBCOMM_TRANSPORT"); /* the harness set it */

	if (!want || strcasecmp(ibcomm_transport(comm), want))
		hx_fail("ibcomm_transport() = \"%s\" with IBCOMM_TRANSPORT=%s", ibcomm_transport(comm), want ? want : "");
	quick_colls(comm, "communicator from ibcomm_init_env", 9);
}

static void test_init_env(void)
{
	struct hx_job job = { .name = "init_env", .n = 3, .fn = env_fn, .use_env = true };

	if (getenv("IBCOMM_TRANSPORT") && !strcasecmp(getenv("IBCOMM_TRANSPORT"), "auto")) {
		cm_skip("env_fn expects a forced transport, not IBCOMM_TRANSPORT=auto");
		return;
	}
	hx_run_job(&job);
}

/*
 * ---- IBCOMM_TRANSPORT=auto: the ranks agree through the rendezvous ----
 * The harness's ranks share this host, so auto picks shared memory. With the test hook
 * IBCOMM_TEST_HOST (builds with --enable-test-hooks) every rank pretends a host of its own:
 * then all pick the same network transport, "rdma" where the caller says the machine has RDMA
 * (HX_TRANSPORT=rdma, the Soft-RoCE guest), else whatever they agree on (tcp without a
 * device); and TCP when rank 1 names a device that does not exist. IBCOMM_TRANSPORT=shm with
 * rank 1 on "another host" is an error on every rank naming the ranks elsewhere.
 */
enum { AUTO_SAME_HOST, AUTO_HOSTS, AUTO_HOSTS_NO_RDMA, SHM_HOSTS };

static void auto_fn(ibcomm_t *unused, void *arg)
{
	ibcomm_config_t cfg = IBCOMM_CONFIG_INIT;
	int mode = *(const int *)arg;
	const char *hx = getenv("HX_TRANSPORT");
	const char *want = mode == AUTO_SAME_HOST ? "shm" : mode == AUTO_HOSTS_NO_RDMA ? "tcp" : hx && !strcmp(hx, "rdma") ? "rdma" : NULL;
	char host[32];
	ibcomm_t *comm;
	ibcomm_status_t st;
	const char *tp;

	(void)unused;
	if (mode == AUTO_HOSTS_NO_RDMA && hx_rank == 1)
		setenv("IBCOMM_DEVICE", "nosuch0", 1);
	snprintf(host, sizeof(host), "host%d", mode == SHM_HOSTS ? hx_rank == 1 : hx_rank);
	if (mode != AUTO_SAME_HOST)
		setenv("IBCOMM_TEST_HOST", host, 1);
	cfg.rank = hx_rank;
	cfg.nranks = hx_size;
	cfg.root = hx_root;
	cfg.transport = mode == SHM_HOSTS ? "shm" : "auto";
	cfg.timeout_ms = hx_env_long("HX_TIMEOUT_MS", 60000);
	st = ibcomm_init(&cfg, &comm);
	if (mode == SHM_HOSTS) {
		const char *msg = ibcomm_last_error(NULL);
		const char *others = hx_rank == 1 ? "2 ranks (0, 2) are on another host" : "1 rank (1) is on another host";

		if (st != IBCOMM_ERR_INVALID || !strstr(msg, others))
			hx_fail("IBCOMM_TRANSPORT=shm across hosts: ibcomm_init returned %d: '%s' (expected '%s')", (int)st,
				msg, others);
		if (!st)
			ibcomm_destroy(comm);
		/* rank 0 serves the rendezvous: nobody leaves before all have had their answer */
		hx_scratch[16 + hx_rank] = 1;
		for (int r = 0, waited = 0; r < hx_size && waited < 20000; r++)
			while (!hx_scratch[16 + r] && waited++ < 20000)
				usleep(1000);
		hx_case_done();
		return;
	}
	if (!hx_ok(NULL, st, "ibcomm_init with IBCOMM_TRANSPORT=auto"))
		return;
	tp = ibcomm_transport(comm);
	if (want && *want && strcmp(tp, want))
		hx_fail("IBCOMM_TRANSPORT=auto chose %s, expected %s", tp, want);
	hx_scratch[hx_rank] = tp[0]; /* 't', 'r' or 's' */
	if (quick_colls(comm, "communicator with IBCOMM_TRANSPORT=auto", 11)) {
		for (int r = 0; r < hx_size; r++)
			if (hx_scratch[r] != tp[0])
				hx_fail("IBCOMM_TRANSPORT=auto: rank %d chose %s, rank %d chose %c...", hx_rank, tp, r,
					hx_scratch[r]);
	}
	hx_case_done();
	hx_ok(comm, ibcomm_destroy(comm), "ibcomm_destroy");
}

static void test_auto(void)
{
	static int modes[] = { AUTO_SAME_HOST, AUTO_HOSTS, AUTO_HOSTS_NO_RDMA, SHM_HOSTS };
	static const char *const names[] = { "auto", "auto_hosts", "auto_mixed", "shm_hosts" };

	for (size_t i = 0; i < IBC_ARRAY_SIZE(modes); i++) {
		struct hx_job job = { .name = names[i], .n = 3, .fn = auto_fn, .arg = &modes[i], .no_init = true };

#ifndef IBCOMM_TEST_HOOKS
		if (modes[i] != AUTO_SAME_HOST)
			continue; /* IBCOMM_TEST_HOST is a test hook */
#endif
		hx_run_job(&job);
	}
}

/* ---- errors ---- */
static void expect_invalid(ibcomm_t *comm, ibcomm_status_t st, const char *what)
{
	const char *msg = ibcomm_last_error(comm);

	if (st != IBCOMM_ERR_INVALID)
		hx_fail("%s returned %d (%s), expected IBCOMM_ERR_INVALID", what, (int)st, ibcomm_strerror(st));
	else if (!msg || !*msg || !strcmp(msg, "no error"))
		hx_fail("%s: IBCOMM_ERR_INVALID but ibcomm_last_error is empty", what);
	hx_case_done();
}

static void errors_fn(ibcomm_t *comm, void *arg)
{
	int n = ibcomm_size(comm), me = ibcomm_rank(comm);
	int32_t s[16] = { 0 }, r[16 * HX_MAX_RANKS];
	const ibcomm_dtype_t bad_dt[] = { IBCOMM_DTYPE_COUNT, (ibcomm_dtype_t)-1, (ibcomm_dtype_t)1000 };
	const ibcomm_op_t bad_op[] = { IBCOMM_OP_COUNT, (ibcomm_op_t)-1 };
	const int bad_root[] = { -1, n, n + 5 };
	char w[128];

	for (size_t i = 0; i < IBC_ARRAY_SIZE(bad_root); i++) {
		int root = bad_root[i];

		snprintf(w, sizeof(w), "ibcomm_broadcast root=%d n=%d", root, n);
		expect_invalid(comm, ibcomm_broadcast(comm, r, 4, IBCOMM_INT32, root), w);
		snprintf(w, sizeof(w), "ibcomm_reduce root=%d n=%d", root, n);
		expect_invalid(comm, ibcomm_reduce(comm, s, r, 4, IBCOMM_INT32, IBCOMM_SUM, root), w);
		snprintf(w, sizeof(w), "ibcomm_gather root=%d n=%d", root, n);
		expect_invalid(comm, ibcomm_gather(comm, s, r, 4, IBCOMM_INT32, root), w);
		snprintf(w, sizeof(w), "ibcomm_scatter root=%d n=%d", root, n);
		expect_invalid(comm, ibcomm_scatter(comm, s, r, 4, IBCOMM_INT32, root), w);
		snprintf(w, sizeof(w), "ibcomm_send peer=%d n=%d", root, n);
		expect_invalid(comm, ibcomm_send(comm, s, 4, IBCOMM_INT32, root, 0), w);
		snprintf(w, sizeof(w), "ibcomm_recv peer=%d n=%d", root, n);
		expect_invalid(comm, ibcomm_recv(comm, r, 4, IBCOMM_INT32, root, 0), w);
	}
	for (size_t i = 0; i < IBC_ARRAY_SIZE(bad_dt); i++) {
		ibcomm_dtype_t dt = bad_dt[i];

		expect_invalid(comm, ibcomm_allreduce(comm, s, r, 4, dt, IBCOMM_SUM), "ibcomm_allreduce with a bad dtype");
		expect_invalid(comm, ibcomm_broadcast(comm, r, 4, dt, 0), "ibcomm_broadcast with a bad dtype");
		expect_invalid(comm, ibcomm_reduce(comm, s, r, 4, dt, IBCOMM_SUM, 0), "ibcomm_reduce with a bad dtype");
		expect_invalid(comm, ibcomm_allgather(comm, s, r, 4, dt), "ibcomm_allgather with a bad dtype");
		expect_invalid(comm, ibcomm_reduce_scatter(comm, s, r, 1, dt, IBCOMM_SUM),
			       "ibcomm_reduce_scatter with a bad dtype");
		expect_invalid(comm, ibcomm_gather(comm, s, r, 4, dt, 0), "ibcomm_gather with a bad dtype");
		expect_invalid(comm, ibcomm_scatter(comm, s, r, 1, dt, 0), "ibcomm_scatter with a bad dtype");
		expect_invalid(comm, ibcomm_alltoall(comm, s, r, 1, dt), "ibcomm_alltoall with a bad dtype");
		if (n > 1)
			expect_invalid(comm, ibcomm_send(comm, s, 4, dt, (me + 1) % n, 0), "ibcomm_send with a bad dtype");
		if (ibcomm_dtype_size(dt) != 0)
			hx_fail("ibcomm_dtype_size(%d) = %zu, expected 0", (int)dt, ibcomm_dtype_size(dt));
	}
	for (size_t i = 0; i < IBC_ARRAY_SIZE(bad_op); i++) {
		ibcomm_op_t op = bad_op[i];

		expect_invalid(comm, ibcomm_allreduce(comm, s, r, 4, IBCOMM_FLOAT32, op), "ibcomm_allreduce with a bad op");
		expect_invalid(comm, ibcomm_reduce(comm, s, r, 4, IBCOMM_INT8, op, 0), "ibcomm_reduce with a bad op");
		expect_invalid(comm, ibcomm_reduce_scatter(comm, s, r, 1, IBCOMM_UINT64, op),
			       "ibcomm_reduce_scatter with a bad op");
	}
	/* NULL buffers with count > 0 where they are used. */
	expect_invalid(comm, ibcomm_allreduce(comm, NULL, r, 4, IBCOMM_INT32, IBCOMM_SUM), "ibcomm_allreduce sendbuf NULL");
	expect_invalid(comm, ibcomm_allreduce(comm, s, NULL, 4, IBCOMM_INT32, IBCOMM_SUM), "ibcomm_allreduce recvbuf NULL");
	expect_invalid(comm, ibcomm_broadcast(comm, NULL, 4, IBCOMM_INT32, 0), "ibcomm_broadcast buf NULL");
	expect_invalid(comm, ibcomm_reduce(comm, NULL, r, 4, IBCOMM_INT32, IBCOMM_SUM, 0), "ibcomm_reduce sendbuf NULL");
	if (me == 0)
		expect_invalid(comm, ibcomm_reduce(comm, s, NULL, 4, IBCOMM_INT32, IBCOMM_SUM, 0),
			       "ibcomm_reduce recvbuf NULL at the root");
	expect_invalid(comm, ibcomm_allgather(comm, NULL, r, 4, IBCOMM_INT32), "ibcomm_allgather sendbuf NULL");
	expect_invalid(comm, ibcomm_allgather(comm, s, NULL, 4, IBCOMM_INT32), "ibcomm_allgather recvbuf NULL");
	expect_invalid(comm, ibcomm_reduce_scatter(comm, NULL, r, 1, IBCOMM_INT32, IBCOMM_SUM),
		       "ibcomm_reduce_scatter sendbuf NULL");
	expect_invalid(comm, ibcomm_gather(comm, NULL, r, 4, IBCOMM_INT32, 0), "ibcomm_gather sendbuf NULL");
	expect_invalid(comm, ibcomm_scatter(comm, s, NULL, 1, IBCOMM_INT32, 0), "ibcomm_scatter recvbuf NULL");
	if (me == 0)
		expect_invalid(comm, ibcomm_scatter(comm, NULL, r, 1, IBCOMM_INT32, 0), "ibcomm_scatter sendbuf NULL at the root");
	expect_invalid(comm, ibcomm_alltoall(comm, NULL, r, 1, IBCOMM_INT32), "ibcomm_alltoall sendbuf NULL");
	expect_invalid(comm, ibcomm_alltoall(comm, s, NULL, 1, IBCOMM_INT32), "ibcomm_alltoall recvbuf NULL");
	if (n > 1) {
		expect_invalid(comm, ibcomm_send(comm, NULL, 4, IBCOMM_INT32, (me + 1) % n, 0), "ibcomm_send buf NULL");
		expect_invalid(comm, ibcomm_recv(comm, NULL, 4, IBCOMM_INT32, (me + n - 1) % n, 0), "ibcomm_recv buf NULL");
	}
	expect_invalid(comm, ibcomm_split(comm, 0, 0, NULL), "ibcomm_split newcomm NULL");
	expect_invalid(comm, ibcomm_dup(comm, NULL), "ibcomm_dup newcomm NULL");
	/* After argument errors the communicator still works. */
	quick_colls(comm, "communicator after argument errors", 10);
}

static void test_errors(void)
{
	static const int ns[] = { 1, 3 };

	for (size_t i = 0; i < IBC_ARRAY_SIZE(ns); i++) {
		struct hx_job job = { .name = "errors", .n = ns[i], .fn = errors_fn };

		hx_run_job(&job);
	}
}

/* ibcomm_init with bad settings fails at once with INVALID, names why, leaves *comm alone. */
static void init_errors_fn(ibcomm_t *unused, void *arg)
{
	static const struct {
		int rank, nranks;
		const char *root, *transport;
		const char *what;
	} bad[] = {
		{ 2, 2, NULL, "tcp", "rank == nranks" },
		{ 5, 2, NULL, "tcp", "rank > nranks" },
		{ 0, 0, NULL, "tcp", "nranks 0" },
		{ -7, 2, NULL, "tcp", "rank -7" },
		{ 0, 1, "127.0.0.1", "tcp", "root without a port" },
		{ 0, 1, "127.0.0.1:99999", "tcp", "root port 99999" },
		{ 0, 1, NULL, "carrier-pigeon", "transport carrier-pigeon" },
	};
	ibcomm_t *sentinel = (ibcomm_t *)(uintptr_t)0x1234, *comm;

	unsetenv("IBCOMM_RANK");
	unsetenv("IBCOMM_SIZE");
	unsetenv("SLURM_PROCID");
	unsetenv("OMPI_COMM_WORLD_RANK");
	unsetenv("PMI_RANK");
	for (size_t i = 0; i < IBC_ARRAY_SIZE(bad); i++) {
		ibcomm_config_t cfg = IBCOMM_CONFIG_INIT;
		ibcomm_status_t st;
		const char *msg;

		cfg.rank = bad[i].rank;
		cfg.nranks = bad[i].nranks;
		cfg.root = bad[i].root ? bad[i].root : hx_root;
		cfg.transport = bad[i].transport;
		cfg.timeout_ms = 5000;
		comm = sentinel;
		st = ibcomm_init(&cfg, &comm);
		msg = ibcomm_last_error(NULL);
		if (st != IBCOMM_ERR_INVALID)
			hx_fail("ibcomm_init with %s returned %d (%s), expected IBCOMM_ERR_INVALID", bad[i].what, (int)st,
				ibcomm_strerror(st));
		else if (!*msg || !strcmp(msg, "no error"))
			hx_fail("ibcomm_init with %s: ibcomm_last_error(NULL) is empty", bad[i].what);
		if (comm != sentinel) {
			hx_fail("ibcomm_init with %s changed *comm", bad[i].what);
			if (st == IBCOMM_OK)
				ibcomm_destroy(comm);
		}
		hx_case_done();
	}
	{
		ibcomm_config_t cfg = IBCOMM_CONFIG_INIT;

		cfg.rank = 0;
		cfg.nranks = 1;
		cfg.root = hx_root;
		if (ibcomm_init(&cfg, NULL) != IBCOMM_ERR_INVALID)
			hx_fail("ibcomm_init(cfg, NULL) did not return IBCOMM_ERR_INVALID");
	}
	if (ibcomm_rank(NULL) != -1 || ibcomm_size(NULL) != -1)
		hx_fail("ibcomm_rank/size(NULL) = %d/%d, expected -1/-1", ibcomm_rank(NULL), ibcomm_size(NULL));
	if (ibcomm_destroy(NULL) != IBCOMM_OK)
		hx_fail("ibcomm_destroy(NULL) is not IBCOMM_OK");
	if (!ibcomm_transport(NULL))
		hx_fail("ibcomm_transport(NULL) is NULL");
	if (!ibcomm_strerror((ibcomm_status_t)-999) || !ibcomm_last_error(NULL))
		hx_fail("ibcomm_strerror/ibcomm_last_error returned NULL");
	for (int dt = 0; dt < IBCOMM_DTYPE_COUNT; dt++)
		if (ibcomm_dtype_size((ibcomm_dtype_t)dt) != hx_esize((ibcomm_dtype_t)dt))
			hx_fail("ibcomm_dtype_size(%s) = %zu, expected %zu", hx_dtype_names[dt],
				ibcomm_dtype_size((ibcomm_dtype_t)dt), hx_esize((ibcomm_dtype_t)dt));
	hx_case_done();
}

static void test_init_errors(void)
{
	struct hx_job job = { .name = "init_errors", .n = 1, .fn = init_errors_fn, .no_init = true, .timeout_s = 60 };

	hx_run_job(&job);
}

int main(int argc, char **argv)
{
	static const struct cm_test tests[] = {
		{ "sendrecv", test_sendrecv },       { "recv_mismatch", test_recv_mismatch },
		{ "split", test_split },             { "dup", test_dup },
		{ "split_hosts", test_split_hosts },
		{ "count_zero", test_count_zero },   { "init_env", test_init_env },
		{ "errors", test_errors },           { "init_errors", test_init_errors },
		{ "auto", test_auto },
	};
	return CM_MAIN1(argc, argv, "p2p_comm", tests);
}
