/*
 * ibcomm_ping: the pairs, their measurement (set-up, latency, bandwidth) over TCP, then over
 * RDMA, then over shared memory for the pairs on one host; and the transport that
 * IBCOMM_TRANSPORT=auto gives each pair.
 */
#define _GNU_SOURCE
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ibc.h"
#include "ping.h"
#include "tool_util.h"
#include "wire.h"

/* Messages are cut to their buffers on purpose: a long host name must not fail the report. */
#pragma GCC diagnostic ignored "-Wformat-truncation"

/* ---- measurements ---- */

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static void pair_fail(ibcomm_t *m, struct pair_result *res, const char *step)
{
	res->ok = false;
	snprintf(res->err, sizeof(res->err), "%s: %s", step, ibcomm_last_error(m));
}

/* Rank a drives, rank b answers; a's result is the pair's. */
static void measure_pair(ibcomm_t *m, const struct opts *o, int a, int b, double *rtt, void *big,
			 struct pair_result *res)
{
	int me = ibcomm_rank(m), peer = me == a ? b : a;
	uint8_t small[8] = { 0 };
	double t0;

	memset(res, 0, sizeof(*res));
	res->a = a;
	res->b = b;
	res->ok = true;
	if (me == a) {
		t0 = tool_now_s();
		if (ibcomm_send(m, small, 1, IBCOMM_UINT8, peer, TAG_SETUP) ||
		    ibcomm_recv(m, small, 1, IBCOMM_UINT8, peer, TAG_SETUP))
			return pair_fail(m, res, "set-up round trip");
		res->setup_ms = (tool_now_s() - t0) * 1e3;
		for (int i = -10; i < o->iters; i++) {
			t0 = tool_now_s();
			if (ibcomm_send(m, small, 8, IBCOMM_UINT8, peer, TAG_LAT) ||
			    ibcomm_recv(m, small, 8, IBCOMM_UINT8, peer, TAG_LAT))
				return pair_fail(m, res, "latency round trip");
			if (i >= 0)
				rtt[i] = (tool_now_s() - t0) * 1e6;
		}
		qsort(rtt, (size_t)o->iters, sizeof(*rtt), cmp_double);
		res->min_us = rtt[0];
		res->med_us = rtt[o->iters / 2];
		res->p99_us = rtt[(int)ceil(0.99 * o->iters) - 1];
		t0 = tool_now_s();
		for (int i = 0; i < o->bw_iters; i++)
			if (ibcomm_send(m, big, o->size, IBCOMM_UINT8, peer, TAG_BW))
				return pair_fail(m, res, "bandwidth send");
		if (ibcomm_recv(m, small, 1, IBCOMM_UINT8, peer, TAG_ACK))
			return pair_fail(m, res, "bandwidth acknowledgement");
		res->bw_MBps = (double)o->size * o->bw_iters / (tool_now_s() - t0) / 1e6;
		return;
	}
	if (ibcomm_recv(m, small, 1, IBCOMM_UINT8, peer, TAG_SETUP) ||
	    ibcomm_send(m, small, 1, IBCOMM_UINT8, peer, TAG_SETUP))
		return pair_fail(m, res, "set-up round trip");
	for (int i = -10; i < o->iters; i++)
		if (ibcomm_recv(m, small, 8, IBCOMM_UINT8, peer, TAG_LAT) ||
		    ibcomm_send(m, small, 8, IBCOMM_UINT8, peer, TAG_LAT))
			return pair_fail(m, res, "latency round trip");
	for (int i = 0; i < o->bw_iters; i++)
		if (ibcomm_recv(m, big, o->size, IBCOMM_UINT8, peer, TAG_BW))
			return pair_fail(m, res, "bandwidth receive");
	if (ibcomm_send(m, small, 1, IBCOMM_UINT8, peer, TAG_ACK))
		return pair_fail(m, res, "bandwidth acknowledgement");
}

static size_t result_encode(const struct pair_result *r, uint8_t *buf)
{
	ibc_wbuf_t w = ibc_wbuf(buf, PING_RESULT_BYTES);
	double v[5] = { r->setup_ms, r->min_us, r->med_us, r->p99_us, r->bw_MBps };
	size_t n = strnlen(r->err, sizeof(r->err) - 1);

	memset(buf, 0, PING_RESULT_BYTES);
	ibc_w_u32(&w, (uint32_t)r->a);
	ibc_w_u32(&w, (uint32_t)r->b);
	ibc_w_u8(&w, r->ok);
	for (int i = 0; i < 5; i++) {
		uint64_t u;

		memcpy(&u, &v[i], 8);
		ibc_w_u64(&w, u);
	}
	ibc_w_u16(&w, (uint16_t)n);
	ibc_w_bytes(&w, r->err, n);
	return w.ok ? PING_RESULT_BYTES : 0;
}

static bool result_decode(const uint8_t *buf, struct pair_result *r)
{
	ibc_rbuf_t rb = ibc_rbuf(buf, PING_RESULT_BYTES);
	double v[5];
	const uint8_t *s;
	uint16_t n;

	memset(r, 0, sizeof(*r));
	r->a = (int)ibc_r_u32(&rb);
	r->b = (int)ibc_r_u32(&rb);
	r->ok = ibc_r_u8(&rb) != 0;
	for (int i = 0; i < 5; i++) {
		uint64_t u = ibc_r_u64(&rb);

		memcpy(&v[i], &u, 8);
	}
	n = ibc_r_u16(&rb);
	if (n >= sizeof(r->err))
		return false;
	s = ibc_r_bytes(&rb, n);
	if (!rb.ok || !s)
		return false;
	memcpy(r->err, s, n);
	r->err[n] = '\0';
	r->setup_ms = v[0];
	r->min_us = v[1];
	r->med_us = v[2];
	r->p99_us = v[3];
	r->bw_MBps = v[4];
	return true;
}

/*
 * Measures every pair (every pair with only[i], when only is given) on m, one after the
 * other, with the control communicator keeping the ranks in step (an allgather of "my m has
 * failed" flags before each pair, starting from `broken`: this rank has no m) and carrying the
 * results of the pairs a rank drives to rank 0. mrank[r]: rank r's rank in m (NULL: the
 * same). This is the side of ranks other than 0; returns an error only when the control
 * communicator itself fails.
 */
static ibcomm_status_t measure_all(struct job *j, ibcomm_t *m, const bool *only, const int *mrank, int32_t broken)
{
	int32_t *flags = calloc((size_t)j->size, sizeof(*flags));
	double *rtt = malloc((size_t)j->o.iters * sizeof(*rtt));
	void *big = calloc(1, j->o.size);
	uint8_t rbuf[PING_RESULT_BYTES];
	ibcomm_status_t st = IBCOMM_OK;

	if (!flags || !rtt || !big) {
		fprintf(stderr, "ibcomm_ping: rank %d: out of memory\n", j->rank);
		st = IBCOMM_ERR_NOMEM;
		goto out;
	}
	for (int i = 0; i < j->npairs; i++) {
		int a = j->pairs[i].a, b = j->pairs[i].b;
		struct pair_result mine;

		if (only && !only[i])
			continue;
		st = ibcomm_allgather(j->ctl, &broken, flags, 1, IBCOMM_INT32);
		if (st)
			goto out;
		if (flags[a] || flags[b] || (j->rank != a && j->rank != b))
			continue;
		measure_pair(m, &j->o, mrank ? mrank[a] : a, mrank ? mrank[b] : b, rtt, big, &mine);
		mine.a = a;
		mine.b = b;
		if (!mine.ok)
			broken = 1;
		if (j->rank != a)
			continue;
		result_encode(&mine, rbuf);
		st = ibcomm_send(j->ctl, rbuf, PING_RESULT_BYTES, IBCOMM_UINT8, 0, TAG_ACK + 1);
		if (st)
			goto out;
	}
out:
	free(big);
	free(rtt);
	free(flags);
	return st;
}

/* Rank 0's side of measure_all: receives the results of pairs driven by other ranks. */
static ibcomm_status_t measure_all_root(struct job *j, ibcomm_t *m, const char *tp, struct pair_result *res,
					const bool *only, const int *mrank, int32_t broken)
{
	int32_t *flags = calloc((size_t)j->size, sizeof(*flags));
	double *rtt = malloc((size_t)j->o.iters * sizeof(*rtt));
	void *big = calloc(1, j->o.size);
	uint8_t rbuf[PING_RESULT_BYTES];
	ibcomm_status_t st = IBCOMM_OK;

	if (!flags || !rtt || !big) {
		fprintf(stderr, "ibcomm_ping: rank 0: out of memory\n");
		st = IBCOMM_ERR_NOMEM;
		goto out;
	}
	for (int i = 0; i < j->npairs; i++) {
		int a = j->pairs[i].a, b = j->pairs[i].b;

		memset(&res[i], 0, sizeof(res[i]));
		res[i].a = a;
		res[i].b = b;
		if (only && !only[i]) {
			res[i].skipped = true;
			snprintf(res[i].err, sizeof(res[i].err), "not a pair for %s", tp);
			continue;
		}
		st = ibcomm_allgather(j->ctl, &broken, flags, 1, IBCOMM_INT32);
		if (st)
			goto out;
		if (flags[a] || flags[b]) {
			res[i].skipped = true;
			snprintf(res[i].err, sizeof(res[i].err), "the %s communicator of rank %d failed earlier", tp,
				 flags[a] ? a : b);
			continue;
		}
		if (a == 0 || b == 0) {
			measure_pair(m, &j->o, mrank ? mrank[a] : a, mrank ? mrank[b] : b, rtt, big, &res[i]);
			res[i].a = a;
			res[i].b = b;
			if (!res[i].ok)
				broken = 1;
			if (a == 0)
				continue;
			/* b == 0: the result comes from a */
		}
		st = ibcomm_recv(j->ctl, rbuf, PING_RESULT_BYTES, IBCOMM_UINT8, a, TAG_ACK + 1);
		if (st)
			goto out;
		if (!result_decode(rbuf, &res[i])) {
			res[i].ok = false;
			snprintf(res[i].err, sizeof(res[i].err), "rank %d sent a malformed result", a);
		}
		res[i].a = a;
		res[i].b = b;
	}
out:
	free(big);
	free(rtt);
	free(flags);
	return st;
}

ibcomm_status_t measure(struct job *j, ibcomm_t *m, const char *tp, struct pair_result *res, const bool *only,
			const int *mrank, bool broken)
{
	return j->rank == 0 ? measure_all_root(j, m, tp, res, only, mrank, broken) : measure_all(j, m, only, mrank, broken);
}

/* ---- pairs ---- */

static void add_pair(struct job *j, int a, int b)
{
	if (a == b)
		return;
	for (int i = 0; i < j->npairs; i++)
		if ((j->pairs[i].a == a && j->pairs[i].b == b) || (j->pairs[i].a == b && j->pairs[i].b == a))
			return;
	j->pairs[j->npairs++] = (struct pair){ a, b };
}

/* Ring neighbours, binomial-tree edges, and a sample: the same list on every rank. */
bool make_pairs(struct job *j)
{
	int n = j->size;
	uint64_t x = j->o.seed * 2654435761u + 88172645463325252ull;

	j->pairs = calloc((size_t)(2 * n + j->o.sample + 1), sizeof(*j->pairs));
	if (!j->pairs)
		return false;
	if (n < 2)
		return true;
	for (int r = 0; r < n; r++)
		add_pair(j, r, (r + 1) % n);
	for (int r = 1; r < n; r++)
		add_pair(j, r & (r - 1), r);
	if (n > 8) {
		for (int k = 0, tries = 0; k < j->o.sample && tries < 100 * j->o.sample; tries++) {
			int before = j->npairs, a, b;

			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
			a = (int)(x % (uint64_t)n);
			b = (int)((x >> 32) % (uint64_t)n);
			add_pair(j, a, b);
			k += j->npairs > before;
		}
	}
	return true;
}

/* ---- the RDMA phase ---- */

/* The one-line fix for an RDMA communicator that could not be created, from its error. */
static const char *rdma_init_fix(const char *err, const struct ping_report *r)
{
	if (strstr(err, "locked-memory") || strstr(err, "memlock") ||
	    (strstr(err, "ibv_reg_mr") && strstr(err, "Cannot allocate memory")))
		return r->memlock != PING_MEMLOCK_UNLIMITED && !r->privileged ?
			       "raise the memlock limit: ulimit -l unlimited in the job script, '* - memlock unlimited' in /etc/security/limits.conf, or LimitMEMLOCK=infinity for a systemd service" :
			       "the memory could not be pinned: check the memlock limit of the job (ulimit -l) and free memory";
	if (strstr(err, "cannot open RDMA device") && strstr(err, "Permission denied"))
		return "give the user access to /dev/infiniband/uverbs* (udev rule MODE=\"0666\" or the rdma group)";
	return "the message names the cause; IBCOMM_DEBUG=INFO IBCOMM_TRANSPORT=rdma shows more";
}

void rdma_phase(struct job *j)
{
	ibcomm_config_t cfg = IBCOMM_CONFIG_INIT;
	char host[256] = "", root[300], err[PING_ERR_BYTES] = "";
	char *errs = NULL;
	int32_t port = 0, ok, *oks = NULL;
	int dummy = 0;
	ibcomm_t *m = NULL;
	ibcomm_status_t st;

	split_hostport(j->root, host, sizeof(host), &dummy);
	if (j->rank == 0)
		port = free_port(host);
	if (ibcomm_broadcast(j->ctl, &port, 1, IBCOMM_INT32, 0))
		return;
	if (port <= 0) {
		if (j->rank == 0)
			ping_problem_add(&j->pl, 0, -1, "check that rank 0 may bind TCP ports on its rendezvous address",
					 "no free TCP port on %s for the RDMA communicator's rendezvous", host);
		return;
	}
	join_hostport(host, port, root, sizeof(root));
	cfg.rank = j->rank;
	cfg.nranks = j->size;
	cfg.root = root;
	cfg.transport = "rdma";
	cfg.timeout_ms = j->o.timeout_ms;
	st = ibcomm_init(&cfg, &m);
	if (st)
		snprintf(err, sizeof(err), "%s", ibcomm_last_error(NULL));
	else if (strcmp(ibcomm_transport(m), "rdma"))
		snprintf(err, sizeof(err), "rank %d: asked for rdma, got %s", j->rank, ibcomm_transport(m));
	ok = !err[0];
	oks = calloc((size_t)j->size, sizeof(*oks));
	errs = j->rank == 0 ? calloc((size_t)j->size, PING_ERR_BYTES) : NULL;
	if (!oks || (j->rank == 0 && !errs))
		goto out;
	if (ibcomm_allgather(j->ctl, &ok, oks, 1, IBCOMM_INT32))
		goto out;
	if (ibcomm_gather(j->ctl, err, errs, PING_ERR_BYTES, IBCOMM_UINT8, 0))
		goto out;
	for (int r = 0; r < j->size; r++) {
		if (oks[r])
			continue;
		j->rdma_init_failed = true;
		if (j->rank == 0) {
			const char *e = errs + (size_t)r * PING_ERR_BYTES;

			errs[(size_t)r * PING_ERR_BYTES + PING_ERR_BYTES - 1] = '\0';
			ping_problem_add(&j->pl, r, -1, rdma_init_fix(e, &j->all[r]), "cannot create an RDMA communicator: %s",
					 e);
		}
		goto out; /* every rank sees the same flags */
	}
	j->rdma_tried = true;
	if (measure(j, m, "rdma", j->rdma, NULL, NULL, false))
		goto out;
	if (j->rank == 0) {
		for (int i = 0; i < j->npairs; i++) {
			if (j->rdma[i].ok || !j->tcp[i].ok)
				continue;
			ping_problem_add(&j->pl, j->rdma[i].a, j->rdma[i].b,
					 "check that both use RoCEv2 GIDs in one subnet (above), that UDP port 4791 is open between the hosts, and IBCOMM_DEBUG=INFO",
					 "reachable over TCP but not over RDMA: %s", j->rdma[i].err);
		}
	}
out:
	ibcomm_destroy(m);
	free(oks);
	free(errs);
}

/* ---- shared memory within a host, and the transport auto gives each pair ---- */

/* Whether ranks a and b share a host in the library's host map (that of the control communicator). */
bool same_host(const struct job *j, int a, int b)
{
	return j->host_of && j->host_of[a] == j->host_of[b];
}

#define PING_ID_MSG (1 + IBCOMM_ID_BYTES) /* u8 "made", then the id */

/*
 * Shared memory for the pairs on one host, as IBCOMM_TRANSPORT=auto carries them: a
 * communicator per host over the library's shared-memory transport (the host's lowest rank
 * makes an id with ibcomm_get_id, the control communicator carries it to the host's other
 * ranks, and they all join with ibcomm_init_rank and transport "shm"), then the measurement of
 * TCP and RDMA for those pairs only. A rank alone on its host takes no part (a rank without a
 * writable /dev/shm is one: the library makes it a host of its own), and its pairs stay on
 * the network. A rank whose communicator fails skips its pairs; the failure is a problem.
 */
void shm_phase(struct job *j)
{
	ibcomm_config_t cfg = IBCOMM_CONFIG_INIT;
	uint8_t mine[PING_ID_MSG] = { 0 }, *ids = NULL;
	char err[PING_ERR_BYTES] = "", *errs = NULL;
	int32_t ok, *oks = NULL;
	int *mrank = NULL, lsize = 0, leader = -1;
	bool *only = NULL;
	ibcomm_t *m = NULL;

	only = calloc((size_t)j->npairs + 1, sizeof(*only));
	mrank = calloc((size_t)j->size, sizeof(*mrank));
	oks = calloc((size_t)j->size, sizeof(*oks));
	ids = calloc((size_t)j->size, PING_ID_MSG);
	errs = j->rank == 0 ? calloc((size_t)j->size, PING_ERR_BYTES) : NULL;
	if (!only || !mrank || !oks || !ids || (j->rank == 0 && !errs)) {
		fprintf(stderr, "ibcomm_ping: rank %d: out of memory for the shared-memory phase\n", j->rank);
		goto out;
	}
	/* each rank's rank in its host's communicator: its place among its host's ranks */
	for (int r = 0; r < j->size; r++) {
		for (int q = 0; q < r; q++)
			mrank[r] += same_host(j, q, r);
		if (same_host(j, r, j->rank)) {
			lsize++;
			if (leader < 0)
				leader = r;
		}
	}
	for (int i = 0; i < j->npairs; i++)
		only[i] = same_host(j, j->pairs[i].a, j->pairs[i].b);
	if (j->rank == leader && lsize >= 2) {
		ibcomm_id_t id;

		if (ibcomm_get_id(&id) == IBCOMM_OK) {
			mine[0] = 1;
			memcpy(mine + 1, id.bytes, IBCOMM_ID_BYTES);
		} else {
			snprintf(err, sizeof(err), "rank %d: ibcomm_get_id for this host's ranks: %s", j->rank,
				 ibcomm_last_error(NULL));
		}
	}
	if (ibcomm_allgather(j->ctl, mine, ids, PING_ID_MSG, IBCOMM_UINT8))
		goto out;
	if (lsize >= 2 && !err[0]) {
		const uint8_t *lid = ids + (size_t)leader * PING_ID_MSG;

		if (!lid[0]) {
			snprintf(err, sizeof(err), "rank %d: rank %d (this host's first) made no id for this host's ranks",
				 j->rank, leader);
		} else {
			ibcomm_id_t id;

			memcpy(id.bytes, lid + 1, IBCOMM_ID_BYTES);
			cfg.transport = "shm";
			cfg.timeout_ms = j->o.timeout_ms;
			if (ibcomm_init_rank(&id, mrank[j->rank], lsize, &cfg, &m))
				snprintf(err, sizeof(err), "%s", ibcomm_last_error(NULL));
			else if (strcmp(ibcomm_transport(m), "shm"))
				snprintf(err, sizeof(err), "rank %d: asked for shm, got %s", j->rank, ibcomm_transport(m));
		}
	}
	ok = !err[0];
	if (ibcomm_allgather(j->ctl, &ok, oks, 1, IBCOMM_INT32))
		goto out;
	if (ibcomm_gather(j->ctl, err, errs, PING_ERR_BYTES, IBCOMM_UINT8, 0))
		goto out;
	for (int r = 0; j->rank == 0 && r < j->size; r++) {
		char *e = errs + (size_t)r * PING_ERR_BYTES;

		if (oks[r])
			continue;
		e[PING_ERR_BYTES - 1] = '\0';
		ping_problem_add(&j->pl, r, -1,
				 "check that /dev/shm is writable and has room (df /dev/shm); IBCOMM_DEBUG=INFO IBCOMM_TRANSPORT=shm shows more",
				 "cannot create a shared-memory communicator with the ranks of its host: %s", e);
	}
	j->shm_tried = true;
	if (measure(j, m, "shm", j->shm, only, mrank, lsize >= 2 && !m))
		goto out;
	for (int i = 0; j->rank == 0 && i < j->npairs; i++) {
		if (!only[i] || j->shm[i].ok || j->shm[i].skipped)
			continue;
		ping_problem_add(&j->pl, j->shm[i].a, j->shm[i].b,
				 "the message names the cause; IBCOMM_DEBUG=INFO IBCOMM_TRANSPORT=shm shows more",
				 "on one host, but shared memory between them failed: %s", j->shm[i].err);
	}
out:
	ibcomm_destroy(m);
	free(only);
	free(mrank);
	free(oks);
	free(ids);
	free(errs);
}

/*
 * Rank 0: the transport IBCOMM_TRANSPORT=auto carries each pair on (lib/comm.c): shared
 * memory between ranks of one host; between hosts RDMA when every rank has a usable RDMA
 * port (as the library's own probe finds it, ping_local.c), else TCP. And what
 * ibcomm_transport() says then: "shm" (one host), the network's name (one rank per host), or
 * "shm+" and the network's name.
 */
void auto_routes(struct job *j)
{
	const char *net = "rdma";
	bool all_one = true, all_alone = true;

	for (int r = 0; r < j->size; r++) {
		if (!j->all[r].rdma_built || j->all[r].use < 0)
			net = "tcp";
		all_one &= same_host(j, 0, r);
		for (int q = 0; q < r; q++)
			all_alone &= !same_host(j, q, r);
	}
	for (int i = 0; i < j->npairs; i++)
		j->route[i] = same_host(j, j->pairs[i].a, j->pairs[i].b) ? "shm" : net;
	if (all_one)
		snprintf(j->auto_tp, sizeof(j->auto_tp), "shm");
	else if (all_alone)
		snprintf(j->auto_tp, sizeof(j->auto_tp), "%s", net);
	else
		snprintf(j->auto_tp, sizeof(j->auto_tp), "shm+%s", net);
}
