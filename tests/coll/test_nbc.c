/*
 * Nonblocking calls on real ranks over loopback: exact results of each i-collective on 1..5
 * ranks, several requests of different kinds in flight completing in issue order, a blocking
 * call after pending requests, test() polling, request_free, isend/irecv independent of
 * collectives, argument errors from the i-call, a dead peer and timeouts given back by wait
 * with their detail, abort and destroy covering pending requests, and an idle progress thread
 * that costs no CPU.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

#define NCNT 1000

static int32_t val(int r, size_t i, int salt)
{
	return (int32_t)(salt * 10000 + r * 100 + (int)(i % 97) + 1);
}

static bool cmp(const char *what, const int32_t *got, const int32_t *exp, size_t cnt)
{
	for (size_t i = 0; i < cnt; i++)
		if (got[i] != exp[i]) {
			hx_fail("%s: element %zu of %zu: expected %d got %d", what, i, cnt, exp[i], got[i]);
			return false;
		}
	return true;
}

static bool ok(ibcomm_t *comm, ibcomm_status_t st, const char *what)
{
	return hx_ok(comm, st, what);
}

/*
 * All four i-collectives and a ring of isend/irecv issued at once, several times over (salt),
 * waited for in reverse order, then checked against scalar references.
 */
static void results_fn(ibcomm_t *comm, void *arg)
{
	int n = ibcomm_size(comm), me = ibcomm_rank(comm);
	size_t tot = (size_t)n * NCNT;
	enum { ROUNDS = 3, PER = 6 };
	ibcomm_request_t *req[ROUNDS * PER];
	int32_t *s[ROUNDS], *ar[ROUNDS], *bc[ROUNDS], *ag[ROUNDS], *rs[ROUNDS], *rx[ROUNDS];
	int32_t *e = calloc(tot, sizeof(*e));
	int nreq = 0;

	(void)arg;
	for (int k = 0; k < ROUNDS; k++) {
		s[k] = calloc(tot, sizeof(int32_t));
		ar[k] = calloc(NCNT, sizeof(int32_t));
		bc[k] = calloc(NCNT, sizeof(int32_t));
		ag[k] = calloc(tot, sizeof(int32_t));
		rs[k] = calloc(NCNT, sizeof(int32_t));
		rx[k] = calloc(NCNT, sizeof(int32_t));
		for (size_t i = 0; i < tot; i++)
			s[k][i] = val(me, i, k);
		for (size_t i = 0; i < NCNT; i++)
			bc[k][i] = me == k % n ? val(me, i, k + 50) : -1;
	}
	for (int k = 0; k < ROUNDS; k++) {
		int root = k % n, right = (me + 1) % n, left = (me + n - 1) % n;

		if (!ok(comm, ibcomm_irecv(comm, rx[k], NCNT, IBCOMM_INT32, left, (uint32_t)k, &req[nreq++]), "irecv") ||
		    !ok(comm, ibcomm_iallreduce(comm, s[k], ar[k], NCNT, IBCOMM_INT32, IBCOMM_SUM, &req[nreq++]),
			"iallreduce") ||
		    !ok(comm, ibcomm_ibroadcast(comm, bc[k], NCNT, IBCOMM_INT32, root, &req[nreq++]), "ibroadcast") ||
		    !ok(comm, ibcomm_iallgather(comm, s[k], ag[k], NCNT, IBCOMM_INT32, &req[nreq++]), "iallgather") ||
		    !ok(comm, ibcomm_ireduce_scatter(comm, s[k], rs[k], NCNT, IBCOMM_INT32, IBCOMM_MAX, &req[nreq++]),
			"ireduce_scatter") ||
		    !ok(comm, ibcomm_isend(comm, s[k], NCNT, IBCOMM_INT32, right, (uint32_t)k, &req[nreq++]), "isend"))
			return;
	}
	while (nreq > 0) {
		nreq--;
		ok(comm, ibcomm_wait(req[nreq]), "ibcomm_wait");
	}
	for (int k = 0; k < ROUNDS; k++) {
		int left = (me + n - 1) % n;

		for (size_t i = 0; i < NCNT; i++) {
			e[i] = 0;
			for (int r = 0; r < n; r++)
				e[i] += val(r, i, k);
		}
		cmp("iallreduce SUM", ar[k], e, NCNT);
		for (size_t i = 0; i < NCNT; i++)
			e[i] = val(k % n, i, k + 50);
		cmp("ibroadcast", bc[k], e, NCNT);
		for (int r = 0; r < n; r++)
			for (size_t i = 0; i < NCNT; i++)
				e[(size_t)r * NCNT + i] = val(r, i, k);
		cmp("iallgather", ag[k], e, tot);
		for (size_t i = 0; i < NCNT; i++)
			e[i] = val(n - 1, (size_t)me * NCNT + i, k);
		cmp("ireduce_scatter MAX", rs[k], e, NCNT);
		for (size_t i = 0; i < NCNT; i++)
			e[i] = val(left, i, k);
		cmp("irecv", rx[k], e, NCNT);
		free(s[k]), free(ar[k]), free(bc[k]), free(ag[k]), free(rs[k]), free(rx[k]);
		hx_case_done();
	}
	free(e);
}

static void test_results(void)
{
	for (int n = hx_nmin(); n <= 5 && n <= hx_nmax(); n++) {
		struct hx_job job = { .name = "results", .n = n, .fn = results_fn };

		hx_run_job(&job);
	}
}

/*
 * A blocking allreduce issued while iallreduces are pending runs after them: every rank sees
 * the same order, so the results are the ones of their own inputs (salted by position).
 * Then test() polling, request_free of a completed request, and an in-place iallreduce.
 */
static void order_fn(ibcomm_t *comm, void *arg)
{
	int n = ibcomm_size(comm), me = ibcomm_rank(comm);
	int64_t a[4][64], r[4][64];
	ibcomm_request_t *req[3], *q;
	int done = 0, polls = 0;
	ibcomm_status_t st;

	(void)arg;
	for (int k = 0; k < 4; k++)
		for (int i = 0; i < 64; i++)
			a[k][i] = (int64_t)(k + 1) * 1000 + me * 10 + i;
	for (int k = 0; k < 3; k++)
		if (!ok(comm, ibcomm_iallreduce(comm, a[k], r[k], 64, IBCOMM_INT64, IBCOMM_SUM, &req[k]), "iallreduce"))
			return;
	ok(comm, ibcomm_allreduce(comm, a[3], r[3], 64, IBCOMM_INT64, IBCOMM_SUM), "blocking allreduce after pending");
	/* the blocking call ran after them: they are all complete now */
	for (int k = 0; k < 3; k++) {
		st = ibcomm_test(req[k], &done);
		if (st || !done)
			hx_fail("request %d: test after the blocking call: status %d done %d", k, (int)st, done);
		ok(comm, ibcomm_request_free(req[k]), "ibcomm_request_free of a completed request");
	}
	for (int k = 0; k < 4; k++)
		for (int i = 0; i < 64; i++) {
			int64_t e = 0;

			for (int p = 0; p < n; p++)
				e += (int64_t)(k + 1) * 1000 + p * 10 + i;
			if (r[k][i] != e) {
				hx_fail("call %d element %d: expected %lld got %lld", k, i, (long long)e, (long long)r[k][i]);
				return;
			}
		}
	/* test() polling, in place */
	if (!ok(comm, ibcomm_iallreduce(comm, a[0], a[0], 64, IBCOMM_INT64, IBCOMM_MAX, &q), "iallreduce in place"))
		return;
	while (!done || polls == 0) {
		done = 0;
		st = ibcomm_test(q, &done);
		if (st) {
			ok(comm, st, "ibcomm_test");
			return;
		}
		polls++;
		if (!done)
			usleep(100);
	}
	ok(comm, ibcomm_wait(q), "ibcomm_wait after test said done");
	if (a[0][5] != 1000 + (n - 1) * 10 + 5)
		hx_fail("iallreduce MAX in place: %lld", (long long)a[0][5]);
	hx_case_done();
}

static void test_order(void)
{
	for (int n = 2; n <= 4 && n <= hx_nmax(); n++) {
		struct hx_job job = { .name = "order", .n = n, .fn = order_fn };

		hx_run_job(&job);
	}
}

/*
 * isend/irecv are independent of collectives: rank 0 pre-posts a receive that rank 1 answers
 * only after a collective, and neither the collective nor a registration is held up by it.
 */
static void p2p_indep_fn(ibcomm_t *comm, void *arg)
{
	int me = ibcomm_rank(comm);
	int32_t x = me ? 7 : 0, y[16], z[16];
	ibcomm_request_t *rq = NULL, *cq;

	(void)arg;
	for (int i = 0; i < 16; i++)
		y[i] = me + i;
	if (me == 0 && !ok(comm, ibcomm_irecv(comm, &x, 1, IBCOMM_INT32, 1, 42, &rq), "irecv"))
		return;
	/* registration while a receive is pending: done by the progress thread, not held up */
	{
		ibcomm_mr_t *mr;

		if (ok(comm, ibcomm_register(comm, y, sizeof(y), &mr), "register with a receive pending"))
			ok(comm, ibcomm_deregister(comm, mr), "deregister with a receive pending");
	}
	if (!ok(comm, ibcomm_iallreduce(comm, y, z, 16, IBCOMM_INT32, IBCOMM_SUM, &cq), "iallreduce") ||
	    !ok(comm, ibcomm_wait(cq), "wait iallreduce"))
		return;
	if (z[3] != 1 + 2 * 3)
		hx_fail("iallreduce behind a pending irecv: %d", z[3]);
	if (me == 1)
		ok(comm, ibcomm_send(comm, &x, 1, IBCOMM_INT32, 0, 42), "send");
	else if (ok(comm, ibcomm_wait(rq), "wait irecv") && x != 7)
		hx_fail("irecv got %d, expected 7", x);
	/* a receive from itself, posted before its send */
	if (ok(comm, ibcomm_irecv(comm, z, 16, IBCOMM_INT32, me, 9, &rq), "irecv from self")) {
		ok(comm, ibcomm_isend(comm, y, 16, IBCOMM_INT32, me, 9, &cq), "isend to self");
		ok(comm, ibcomm_wait(cq), "wait isend to self");
		if (ok(comm, ibcomm_wait(rq), "wait irecv from self") && z[15] != me + 15)
			hx_fail("irecv from self: %d", z[15]);
	}
	hx_case_done();
}

static void test_p2p_indep(void)
{
	struct hx_job job = { .name = "p2p_indep", .n = 2, .fn = p2p_indep_fn, .env = hx_small_chunks_env };

	hx_run_job(&job);
}

static char sentinel; /* what *req holds before a call that must not change it */

/*
 * The exchange every MPI user writes: isend to the peer, irecv from it, wait for both; with
 * messages far larger than the transport's slots, so both sends stall on credits while both
 * receives are part way through a message.
 */
static void exchange_fn(ibcomm_t *comm, void *arg)
{
	int me = ibcomm_rank(comm), n = ibcomm_size(comm), right = (me + 1) % n, left = (me + n - 1) % n;
	size_t cnt = 50000;
	int32_t *s = malloc(cnt * 2 * sizeof(*s)), *r = calloc(cnt * 2, sizeof(*r));
	ibcomm_request_t *q[4];

	(void)arg;
	if (!s || !r) {
		hx_fail("test: out of memory");
		goto out;
	}
	for (size_t i = 0; i < 2 * cnt; i++)
		s[i] = val(me, i, 3);
	if (!ok(comm, ibcomm_isend(comm, s, cnt, IBCOMM_INT32, right, 1, &q[0]), "isend") ||
	    !ok(comm, ibcomm_isend(comm, s + cnt, cnt, IBCOMM_INT32, left, 2, &q[1]), "isend") ||
	    !ok(comm, ibcomm_irecv(comm, r, cnt, IBCOMM_INT32, left, 1, &q[2]), "irecv") ||
	    !ok(comm, ibcomm_irecv(comm, r + cnt, cnt, IBCOMM_INT32, right, 2, &q[3]), "irecv"))
		goto out;
	for (int k = 0; k < 4; k++)
		ok(comm, ibcomm_wait(q[k]), "wait");
	for (size_t i = 0; i < cnt; i++)
		if (r[i] != val(left, i, 3) || r[cnt + i] != val(right, cnt + i, 3)) {
			hx_fail("exchange: element %zu: %d %d", i, r[i], r[cnt + i]);
			break;
		}
	hx_case_done();
out:
	free(s);
	free(r);
}

static void test_exchange(void)
{
	for (int n = 2; n <= 3 && n <= hx_nmax(); n++) {
		struct hx_job job = { .name = "exchange", .n = n, .fn = exchange_fn, .env = hx_small_chunks_env,
				      .timeout_s = 60 };

		hx_run_job(&job);
	}
}

static void expect_invalid(ibcomm_t *comm, ibcomm_status_t st, ibcomm_request_t *req, const char *what,
			   const char *word)
{
	const char *msg = ibcomm_last_error(comm);
	char fn[32]; /* the i-call's name: the detail names it, not its blocking twin */

	snprintf(fn, sizeof(fn), "%.*s", (int)strcspn(what, "("), what);
	if (st != IBCOMM_ERR_INVALID)
		hx_fail("%s returned %d (%s), expected IBCOMM_ERR_INVALID", what, (int)st, ibcomm_strerror(st));
	else if (!strstr(msg, word))
		hx_fail("%s: the detail '%s' does not name '%s'", what, msg, word);
	else if (!strstr(msg, fn))
		hx_fail("%s: the detail '%s' does not name %s", what, msg, fn);
	if (req != (ibcomm_request_t *)&sentinel)
		hx_fail("%s changed *req", what);
	hx_case_done();
}

static void errors_fn(ibcomm_t *comm, void *arg)
{
	int32_t b[8] = { 0 };
	ibcomm_request_t *req;
	ibcomm_status_t st;

	(void)arg;
#define TRY(call, word)                                                     \
	do {                                                                \
		req = (ibcomm_request_t *)&sentinel;                           \
		st = call;                                                  \
		expect_invalid(comm, st, req, #call, word);                 \
	} while (0)
	TRY(ibcomm_iallreduce(comm, b, b, 8, IBCOMM_INT32, IBCOMM_SUM, NULL), "req");
	TRY(ibcomm_iallreduce(comm, b, b, 8, (ibcomm_dtype_t)99, IBCOMM_SUM, &req), "dtype");
	TRY(ibcomm_iallreduce(comm, b, b, 8, IBCOMM_INT32, (ibcomm_op_t)99, &req), "op");
	TRY(ibcomm_iallreduce(comm, NULL, b, 8, IBCOMM_INT32, IBCOMM_SUM, &req), "NULL");
	TRY(ibcomm_ibroadcast(comm, b, 8, IBCOMM_INT32, 5, &req), "root");
	TRY(ibcomm_iallgather(comm, b, NULL, 8, IBCOMM_INT32, &req), "NULL");
	TRY(ibcomm_ireduce_scatter(comm, b, b + 1, 2, IBCOMM_INT32, IBCOMM_SUM, &req), "overlap");
	TRY(ibcomm_isend(comm, b, 8, IBCOMM_INT32, 2, 0, &req), "peer");
	TRY(ibcomm_irecv(comm, NULL, 8, IBCOMM_INT32, 0, 0, &req), "NULL");
	TRY(ibcomm_irecv(comm, b, 8, IBCOMM_INT32, -1, 0, &req), "peer");
#undef TRY
	if (ibcomm_iallreduce(NULL, b, b, 8, IBCOMM_INT32, IBCOMM_SUM, &req) != IBCOMM_ERR_INVALID ||
	    ibcomm_wait(NULL) != IBCOMM_ERR_INVALID || ibcomm_request_free(NULL) != IBCOMM_ERR_INVALID ||
	    ibcomm_test(NULL, &(int){ 0 }) != IBCOMM_ERR_INVALID)
		hx_fail("a NULL comm or request is not IBCOMM_ERR_INVALID");
	/* request_free of a request in flight: refused, and the request stays usable */
	if (ok(comm, ibcomm_irecv(comm, b, 1, IBCOMM_INT32, 1 - ibcomm_rank(comm), 3, &req), "irecv")) {
		if (ibcomm_request_free(req) != IBCOMM_ERR_INVALID)
			hx_fail("ibcomm_request_free of a request in flight is not IBCOMM_ERR_INVALID");
		ok(comm, ibcomm_send(comm, b, 1, IBCOMM_INT32, 1 - ibcomm_rank(comm), 3), "send");
		ok(comm, ibcomm_wait(req), "wait irecv");
	}
	hx_case_done();
}

static void test_errors(void)
{
	struct hx_job job = { .name = "errors", .n = 2, .fn = errors_fn };

	hx_run_job(&job);
}

/* A communicator of this rank made by hand (no_init jobs), with a deadline, joined by all (a barrier). */
static ibcomm_t *own_comm(long timeout_ms)
{
	ibcomm_config_t cfg = IBCOMM_CONFIG_INIT;
	ibcomm_t *comm = NULL;

	cfg.rank = hx_rank;
	cfg.nranks = hx_size;
	cfg.root = hx_root;
	cfg.transport = getenv("HX_TRANSPORT") && *getenv("HX_TRANSPORT") ? getenv("HX_TRANSPORT") : "tcp";
	cfg.timeout_ms = timeout_ms;
	if (ibcomm_init(&cfg, &comm)) {
		hx_fail("ibcomm_init: %s", ibcomm_last_error(NULL));
		return NULL;
	}
	ok(comm, ibcomm_barrier(comm), "barrier");
	return comm;
}

/* Rank 0's requests that rank 1 will not answer: a receive (tag 5) and an allreduce. */
struct unanswered {
	ibcomm_request_t *rq, *cq;
	int32_t x, y;
};

static bool post_unanswered(ibcomm_t *comm, struct unanswered *u)
{
	u->y = 1;
	return ok(comm, ibcomm_irecv(comm, &u->x, 1, IBCOMM_INT32, 1, 5, &u->rq), "irecv") &&
	       ok(comm, ibcomm_iallreduce(comm, &u->y, &u->y, 1, IBCOMM_INT32, IBCOMM_SUM, &u->cq), "iallreduce");
}

static void expect_status(ibcomm_t *comm, ibcomm_status_t st, ibcomm_status_t want, const char *what,
			  const char *word)
{
	const char *msg = ibcomm_last_error(comm), *tmsg = ibcomm_last_error(NULL);

	if (st != want)
		hx_fail("%s returned %d (%s), expected %s: %s", what, (int)st, ibcomm_strerror(st), ibcomm_strerror(want),
			msg);
	else if (!strstr(msg, word) || !strstr(tmsg, word))
		hx_fail("%s: the detail '%s' (thread's '%s') does not say '%s'", what, msg, tmsg, word);
	hx_case_done();
}

/* The communicator of a rank that dies on purpose, reachable at its _exit: not a leak to valgrind. */
static ibcomm_t *volatile dying;

/*
 * Rank 1 dies (no destroy) once rank 0 has posted a receive from it and an allreduce with it:
 * wait gives back IBCOMM_ERR_PEER naming rank 1.
 */
static void dead_fn(ibcomm_t *unused, void *arg)
{
	ibcomm_t *comm = own_comm(30000);
	struct unanswered u;

	(void)unused, (void)arg;
	if (!comm)
		return;
	if (hx_rank == 1) {
		dying = comm;
		usleep(200 * 1000);
		_exit(0); /* dies: no destroy, no goodbye */
	}
	if (!post_unanswered(comm, &u))
		return;
	expect_status(comm, ibcomm_wait(u.cq), IBCOMM_ERR_PEER, "wait iallreduce, peer dead", "rank 1");
	expect_status(comm, ibcomm_wait(u.rq), IBCOMM_ERR_PEER, "wait irecv, peer dead", "rank 1");
	ibcomm_destroy(comm);
}

static void test_dead_peer(void)
{
	struct hx_job job = { .name = "dead_peer", .n = 2, .fn = dead_fn, .no_init = true, .timeout_s = 60 };

	hx_run_job(&job);
}

/*
 * Deadlines: rank 0's iallreduce that rank 1 never joins, and its irecv that nobody answers,
 * time out (1.5 s) and wait says so with the detail; rank 1 waits for rank 0 to be done.
 */
static void timeout_fn(ibcomm_t *unused, void *arg)
{
	ibcomm_t *comm = own_comm(1500);
	struct unanswered u;

	(void)unused, (void)arg;
	if (!comm)
		return;
	if (hx_rank == 0) {
		if (post_unanswered(comm, &u)) {
			expect_status(comm, ibcomm_wait(u.rq), IBCOMM_ERR_TIMEOUT, "wait irecv", "tag 5 from rank 1");
			expect_status(comm, ibcomm_wait(u.cq), IBCOMM_ERR_TIMEOUT, "wait iallreduce", "allreduce");
		}
		hx_scratch[0] = 1;
	} else {
		while (!hx_scratch[0])
			usleep(10 * 1000);
	}
	ibcomm_destroy(comm);
}

static void test_timeout(void)
{
	struct hx_job job = { .name = "timeout", .n = 2, .fn = timeout_fn, .no_init = true, .timeout_s = 60 };

	hx_run_job(&job);
}

/* CPU time of this process (every thread), in ms. */
static double cpu_ms(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e3 +
	       (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e3;
}

/*
 * Abort covers pending requests; the progress thread sleeps while a receive is pending that
 * never matches; destroy with requests pending fails them and frees them (valgrind: no leak).
 * Each on a dup of the job's communicator (one rendezvous for the job). An aborted
 * communicator makes its process leave the job without a goodbye (rdv_client.c): the others
 * may see rank 0 as dead from then on, so no final barrier.
 */
static void abort_fn(ibcomm_t *comm, void *arg)
{
	ibcomm_request_t *rq, *cq, *q2;
	ibcomm_t *d1, *d2;
	int32_t x, y = 1;
	double c0, used;

	(void)arg;
	if (!ok(comm, ibcomm_dup(comm, &d1), "dup") || !ok(comm, ibcomm_dup(comm, &d2), "dup"))
		return;
	if (hx_rank == 0) {
		/* idle: a receive pending that never matches */
		if (!ok(d1, ibcomm_irecv(d1, &x, 1, IBCOMM_INT32, 1, 5, &rq), "irecv"))
			return;
		usleep(50 * 1000);
		c0 = cpu_ms();
		usleep(300 * 1000);
		used = cpu_ms() - c0;
		if (used > 30 && !hx_env_long("HX_NO_TIMING", 0))
			hx_fail("the progress thread used %.1f ms of CPU in 300 ms with only an unmatched receive pending",
				used);
		/* abort: the pending receive and a collective rank 1 never joins fail with ABORTED */
		if (ok(d1, ibcomm_iallreduce(d1, &y, &y, 1, IBCOMM_INT32, IBCOMM_SUM, &cq), "iallreduce")) {
			usleep(100 * 1000);
			ok(d1, ibcomm_abort(d1), "ibcomm_abort");
			expect_status(d1, ibcomm_wait(cq), IBCOMM_ERR_ABORTED, "wait iallreduce after abort", "abort");
			expect_status(d1, ibcomm_wait(rq), IBCOMM_ERR_ABORTED, "wait irecv after abort", "abort");
		}
		/* destroy with requests pending: a receive, a collective nobody else joins, a completed send */
		if (ok(d2, ibcomm_irecv(d2, &x, 1, IBCOMM_INT32, 1, 6, &rq), "irecv") &&
		    ok(d2, ibcomm_iallreduce(d2, &y, &y, 1, IBCOMM_INT32, IBCOMM_SUM, &cq), "iallreduce") &&
		    ok(d2, ibcomm_isend(d2, &y, 1, IBCOMM_INT32, 0, 1, &q2), "isend to self"))
			usleep(100 * 1000);
		ok(d2, ibcomm_destroy(d2), "ibcomm_destroy with requests pending");
		ok(d1, ibcomm_destroy(d1), "ibcomm_destroy after abort");
		hx_scratch[0] = 1;
	} else {
		while (!hx_scratch[0])
			usleep(10 * 1000);
		ok(d2, ibcomm_destroy(d2), "ibcomm_destroy");
		ok(d1, ibcomm_destroy(d1), "ibcomm_destroy");
	}
	hx_case_done();
}

static void test_abort_destroy(void)
{
	struct hx_job job = { .name = "abort_destroy", .n = 2, .fn = abort_fn, .timeout_s = 60,
			      .no_final_barrier = true };

	hx_run_job(&job);
}

int main(int argc, char **argv)
{
	static const struct cm_test tests[] = {
		{ "results", test_results },     { "order", test_order },     { "p2p_indep", test_p2p_indep },
		{ "exchange", test_exchange },
		{ "errors", test_errors },       { "dead_peer", test_dead_peer }, { "timeout", test_timeout },
		{ "abort_destroy", test_abort_destroy },
	};
	return CM_MAIN1(argc, argv, "nbc", tests);
}
