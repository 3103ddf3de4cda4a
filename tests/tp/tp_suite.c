/*
 * The transport tests' common part (tp_suite.h): forked ranks, each with the transport of
 * tp_suite over a file-backed fake rendezvous, and the cases every transport must pass.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tp_suite.h"
#include "fake_rdv.h"

const struct tp_suite *tp_suite;
struct ibcomm *g_comm;
bool tp_fn_creates;
static unsigned g_run;
static char g_dir[256];

double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void rm_dir(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	char path[600];

	if (!d)
		return;
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.' && (!e->d_name[1] || (e->d_name[1] == '.' && !e->d_name[2])))
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		unlink(path);
	}
	closedir(d);
	rmdir(dir);
}

static int child(int rank, int size, rank_fn fn, unsigned long chunk, unsigned long slots)
{
	struct ibcomm *comm = calloc(1, sizeof(*comm));
	ibc_tp_t *tp = NULL;
	int rc;

	if (!comm)
		return 99;
	tp_suite->setup(comm, chunk, slots);
	comm->rank = comm->set.rank = rank;
	comm->size = comm->set.nranks = size;
	snprintf(comm->id, sizeof(comm->id), "t%u", g_run);
	comm->set.timeout_ms = 20000;
	comm->boot = fake_rdv_new(g_dir);
	g_comm = comm;
	if (tp_fn_creates) {
		rc = fn(comm, NULL);
		fake_rdv_free(comm->boot);
		free(comm);
		return rc;
	}
	if (tp_suite->ops->create(comm, &tp)) {
		fprintf(stderr, "rank %d: create: %s\n", rank, comm->err);
		return 98;
	}
	comm->tp = tp;
	rc = fn(comm, tp);
	tp->ops->destroy(tp);
	fake_rdv_free(comm->boot);
	free(comm);
	return rc;
}

int tp_run_ranks(int size, rank_fn fn, unsigned killed_mask, int timeout_s, unsigned long chunk, unsigned long slots)
{
	pid_t pids[8];
	int status[8], bad = 0, left = size;
	uint64_t until;

	g_run++;
	snprintf(g_dir, sizeof(g_dir), "/tmp/ibc_test_%s.XXXXXX", tp_suite->name);
	if (!mkdtemp(g_dir))
		return size;
	fflush(NULL);
	for (int r = 0; r < size; r++) {
		pids[r] = fork();
		if (pids[r] == 0)
			_exit(child(r, size, fn, chunk, slots));
		status[r] = -1;
	}
	until = ibc_now_ms() + (uint64_t)timeout_s * 1000;
	while (left && ibc_now_ms() < until) {
		for (int r = 0; r < size; r++) {
			if (status[r] != -1 || pids[r] < 0)
				continue;
			if (waitpid(pids[r], &status[r], WNOHANG) == pids[r])
				left--;
			else
				status[r] = -1;
		}
		if (left)
			poll(NULL, 0, 10);
	}
	for (int r = 0; r < size; r++) {
		if (pids[r] < 0) {
			bad++;
			continue;
		}
		if (status[r] == -1) {
			fprintf(stderr, "rank %d overran %d s: killed\n", r, timeout_s);
			kill(pids[r], SIGKILL);
			waitpid(pids[r], &status[r], 0);
			bad++;
			continue;
		}
		if (killed_mask & (1u << r)) {
			if (!WIFSIGNALED(status[r]) || WTERMSIG(status[r]) != SIGKILL) {
				fprintf(stderr, "rank %d should have been killed (status %#x)\n", r, status[r]);
				bad++;
			}
		} else if (!WIFEXITED(status[r]) || WEXITSTATUS(status[r])) {
			fprintf(stderr, "rank %d failed (status %#x)\n", r, status[r]);
			bad++;
		}
	}
	rm_dir(g_dir);
	return bad;
}

/* ---- data patterns ---- */

static size_t pat_len(int src, int chan, unsigned i, size_t max)
{
	if (i % 17 == 3)
		return 0;
	if (i % 13 == 5)
		return max;
	return (i * 977u + (unsigned)src * 31u + (unsigned)chan * 7u) % (max + 1);
}

static uint8_t pat_byte(int src, int dst, int chan, unsigned i, size_t k)
{
	return (uint8_t)(src * 73 + dst * 37 + chan * 11 + i * 13 + k * 7 + (k >> 8));
}

static void pat_fill(uint8_t *buf, int src, int dst, int chan, unsigned i, size_t len)
{
	for (size_t k = 0; k < len; k++)
		buf[k] = pat_byte(src, dst, chan, i, k);
}

static int pat_check(const ibc_chunk_t *c, int src, int dst, int chan, unsigned i, size_t max)
{
	const uint8_t *p = c->data;

	if (c->len != pat_len(src, chan, i, max) || c->tag != i + 1000u * (unsigned)chan || c->peer != src ||
	    c->chan != chan)
		return 0;
	for (size_t k = 0; k < c->len; k++)
		if (p[k] != pat_byte(src, dst, chan, i, k))
			return 0;
	return 1;
}

/* ---- order, tags and wrap-around: every rank sends to every rank (itself too) on both channels ---- */

#define ORDER_N 300u

int tp_fn_order(struct ibcomm *comm, ibc_tp_t *tp)
{
	unsigned sent[3][IBC_NCHAN] = { { 0 } }, got[3][IBC_NCHAN] = { { 0 } };
	size_t max = tp->max_chunk;
	uint8_t *buf = malloc(max);
	ibc_deadline_t dl = ibc_deadline(20000);
	bool done = false;

	CHECK(buf && max == 4096 && tp->nslots == 4);
	while (!done) {
		bool moved = false;

		done = true;
		for (int p = 0; p < comm->size; p++) {
			for (int ch = 0; ch < IBC_NCHAN; ch++) {
				while (sent[p][ch] < ORDER_N) {
					unsigned i = sent[p][ch];
					size_t len = pat_len(comm->rank, ch, i, max);
					int rc;

					pat_fill(buf, comm->rank, p, ch, i, len);
					rc = ibc_put(tp, p, ch, i + 1000u * (unsigned)ch, buf, len, false, dl);
					if (rc == IBC_AGAIN)
						break;
					CHECK(rc == IBCOMM_OK);
					sent[p][ch]++;
					moved = true;
				}
				while (got[p][ch] < ORDER_N) {
					ibc_chunk_t c;
					int rc = ibc_get(tp, p, ch, &c, false, dl);

					if (rc == IBC_AGAIN)
						break;
					CHECK(rc == IBCOMM_OK);
					CHECK(pat_check(&c, p, comm->rank, ch, got[p][ch], max));
					CHECK(ibc_release(tp, &c) == IBCOMM_OK);
					got[p][ch]++;
					moved = true;
				}
				if (sent[p][ch] < ORDER_N || got[p][ch] < ORDER_N)
					done = false;
			}
		}
		if (!done && !moved)
			CHECK(ibc_wait(tp, dl) == IBCOMM_OK);
	}
	CHECK(tp->cnt.puts == (uint64_t)ORDER_N * IBC_NCHAN * (unsigned)comm->size);
	CHECK(tp->cnt.gets == tp->cnt.puts);
	CHECK(!tp_suite->counts_connects || tp->cnt.connects == (uint32_t)comm->size);
	CHECK(tp->cnt.max_inflight >= 1 && tp->cnt.max_inflight <= tp->nslots);
	free(buf);
	return 0;
}

/* ---- credits: no free slot gives IBC_AGAIN; release gives the credit back ---- */

int tp_fn_credit(struct ibcomm *comm, ibc_tp_t *tp)
{
	ibc_deadline_t dl = ibc_deadline(10000);
	char x[8] = "chunk";
	ibc_chunk_t c[3], go;

	if (comm->rank == 0) {
		CHECK(ibc_put(tp, 1, IBC_CHAN_COLL, 1, x, 5, false, dl) == IBCOMM_OK);
		CHECK(ibc_put(tp, 1, IBC_CHAN_COLL, 2, x, 5, false, dl) == IBCOMM_OK);
		CHECK(ibc_put(tp, 1, IBC_CHAN_COLL, 3, x, 5, false, dl) == IBC_AGAIN);
		CHECK(tp->cnt.credit_waits == 1 && tp->cnt.max_inflight == 2);
		/* the other channel has its own credits */
		CHECK(ibc_put(tp, 1, IBC_CHAN_P2P, 9, "go", 2, false, dl) == IBCOMM_OK);
		/* blocks until rank 1 releases */
		CHECK(ibc_put(tp, 1, IBC_CHAN_COLL, 3, x, 5, true, dl) == IBCOMM_OK);
		CHECK(tp->cnt.puts == 4);
		CHECK(ibc_get(tp, 1, IBC_CHAN_P2P, &go, true, dl) == IBCOMM_OK && go.tag == 10);
		CHECK(ibc_release(tp, &go) == IBCOMM_OK);
		return 0;
	}
	CHECK(ibc_get(tp, 0, IBC_CHAN_COLL, &c[0], true, dl) == IBCOMM_OK && c[0].tag == 1);
	CHECK(ibc_get(tp, 0, IBC_CHAN_COLL, &c[1], true, dl) == IBCOMM_OK && c[1].tag == 2);
	CHECK(ibc_get(tp, 0, IBC_CHAN_COLL, &c[2], false, dl) == IBC_AGAIN);
	CHECK(ibc_get(tp, 0, IBC_CHAN_P2P, &go, true, dl) == IBCOMM_OK && go.tag == 9 && go.len == 2);
	CHECK(!memcmp(go.data, "go", 2));
	CHECK(ibc_release(tp, &go) == IBCOMM_OK);
	/* out of order release is refused */
	CHECK(ibc_release(tp, &c[1]) == IBCOMM_ERR_INVALID);
	poll(NULL, 0, 100); /* rank 0 is blocked in put */
	CHECK(ibc_release(tp, &c[0]) == IBCOMM_OK);
	CHECK(ibc_release(tp, &c[1]) == IBCOMM_OK);
	CHECK(ibc_get(tp, 0, IBC_CHAN_COLL, &c[2], true, dl) == IBCOMM_OK && c[2].tag == 3 && c[2].len == 5);
	CHECK(!memcmp(c[2].data, "chunk", 5));
	CHECK(ibc_release(tp, &c[2]) == IBCOMM_OK);
	CHECK(ibc_put(tp, 0, IBC_CHAN_P2P, 10, NULL, 0, true, dl) == IBCOMM_OK);
	/* bad arguments */
	CHECK(ibc_put(tp, 0, IBC_CHAN_COLL, 0, x, tp->max_chunk + 1, true, dl) == IBCOMM_ERR_INVALID);
	CHECK(ibc_put(tp, 2, IBC_CHAN_COLL, 0, x, 1, true, dl) == IBCOMM_ERR_INVALID);
	CHECK(ibc_get(tp, 0, IBC_NCHAN, &go, true, dl) == IBCOMM_ERR_INVALID);
	return 0;
}
