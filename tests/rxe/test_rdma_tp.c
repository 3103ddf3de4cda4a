/*
 * The RDMA transport alone, through its ops table, with a file-based fake rendezvous:
 * RXE_TP_RANKS processes (default 3) exchange chunks of many sizes both ways on both
 * channels (non-blocking puts/gets + wait), ping-pong with blocking calls, check the
 * counters, a get timeout that names the peer, and an interrupted wait. Lazy connections:
 * a ring whose ranks all first block in a put to their right neighbour connects (no
 * deadlock, no 2 s stall) with QPs to the two neighbours only; a put to a rank that does
 * not answer times out naming it, and connects once the rank calls in. Needs an RDMA device
 * with an active port (Soft-RoCE: tests/rxe/rxe-run); without one it exits 77.
 */
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CUnit/Basic.h>

#include "ibc.h"
#include "algo/rd_sched.h"
#include "fake_rdv.h"
#include "../cunit_main.h"

#define NMSG 150
#define WAIT_MS 60000

static int nranks = 3;
static char rdv_dir[256];

#define FAILF(...)                                                            \
	do {                                                                  \
		fprintf(stderr, "rank %d: FAIL %s:%d: ", rank, __FILE__, __LINE__); \
		fprintf(stderr, __VA_ARGS__);                                 \
		fprintf(stderr, " [%s]\n", comm->err);                        \
		goto out;                                                     \
	} while (0)

static size_t msg_len(size_t max_chunk, int i)
{
	static const size_t lens[] = { 0, 1, 7, 100, 128, 191, 192, 193, 1000, 4096 };
	int k = i % 13;

	if (k < 10)
		return lens[k];
	if (k == 10)
		return max_chunk / 2 + 3;
	if (k == 11)
		return max_chunk - 1;
	return max_chunk;
}

static uint8_t pat(int src, int dst, int chan, int i, size_t b)
{
	return (uint8_t)(src * 31 + dst * 17 + chan * 101 + i * 7 + b * 13 + (b >> 8));
}

static void fill(uint8_t *buf, size_t len, int src, int dst, int chan, int i)
{
	for (size_t b = 0; b < len; b++)
		buf[b] = pat(src, dst, chan, i, b);
}

static bool check(const uint8_t *buf, size_t len, int src, int dst, int chan, int i)
{
	for (size_t b = 0; b < len; b++)
		if (buf[b] != pat(src, dst, chan, i, b))
			return false;
	return true;
}

static void init_comm(struct ibcomm *comm, int rank, int size, const char *id)
{
	const char *dev = getenv("IBCOMM_DEVICE"), *gid = getenv("IBCOMM_GID_INDEX");

	memset(comm, 0, sizeof(*comm));
	comm->rank = rank;
	comm->size = size;
	snprintf(comm->id, sizeof(comm->id), "%s", id);
	comm->set.rank = rank;
	comm->set.nranks = size;
	comm->set.gid_index = gid ? atoi(gid) : -1;
	comm->set.timeout_ms = WAIT_MS;
	comm->set.debug = ibc_log_default();
	if (dev)
		snprintf(comm->set.device, sizeof(comm->set.device), "%s", dev);
	comm->boot = fake_rdv_new(rdv_dir);
}

static int run_rank(int rank)
{
	struct ibcomm comm_s, *comm = &comm_s;
	const struct ibc_tp_ops *ops = &ibc_rdma_ops;
	ibc_tp_t *tp = NULL;
	int size = nranks, ret = 1, rc;
	int sent[64][IBC_NCHAN] = { { 0 } }, got[64][IBC_NCHAN] = { { 0 } };
	uint8_t *buf = NULL;
	uint64_t want_puts = 0, want_bytes = 0;
	ibc_deadline_t dl;
	ibc_chunk_t c;
	char key[64], val[8];
	size_t vlen;

	init_comm(comm, rank, size, "tp");
	rc = ops->create(comm, &tp);
	if (rc)
		FAILF("create: %d", rc);
	buf = malloc(tp->max_chunk);
	if (!buf)
		FAILF("malloc");

	/* Bad arguments. */
	if (ops->put(tp, rank, 0, 0, buf, 1, false, 0) != IBCOMM_ERR_INVALID)
		FAILF("put to self accepted");
	if (ops->put(tp, (rank + 1) % size, 0, 0, buf, tp->max_chunk + 1, false, 0) != IBCOMM_ERR_INVALID)
		FAILF("oversized put accepted");

	/* 1. Everyone to everyone, both channels, non-blocking + wait. */
	dl = ibc_deadline(WAIT_MS);
	for (;;) {
		bool moved = false, done = true;

		for (int p = 0; p < size; p++) {
			if (p == rank)
				continue;
			for (int ch = 0; ch < IBC_NCHAN; ch++) {
				if (sent[p][ch] < NMSG) {
					size_t len = msg_len(tp->max_chunk, sent[p][ch]);

					done = false;
					fill(buf, len, rank, p, ch, sent[p][ch]);
					rc = ops->put(tp, p, ch, 1000u + (uint32_t)sent[p][ch], buf, len, false, dl);
					if (rc < 0)
						FAILF("put #%d to %d chan %d: %d", sent[p][ch], p, ch, rc);
					if (rc == 0) {
						sent[p][ch]++;
						want_puts++;
						want_bytes += len;
						moved = true;
					}
				}
				if (got[p][ch] < NMSG) {
					int i = got[p][ch];

					done = false;
					rc = ops->get(tp, p, ch, &c, false, dl);
					if (rc < 0)
						FAILF("get #%d from %d chan %d: %d", i, p, ch, rc);
					if (rc == 0) {
						if (c.peer != p || c.chan != ch || c.tag != 1000u + (uint32_t)i ||
						    c.len != msg_len(tp->max_chunk, i) || !check(c.data, c.len, p, rank, ch, i))
							FAILF("chunk #%d from %d chan %d: tag %u len %zu: wrong", i, p, ch, c.tag,
							      c.len);
						if (ops->release(tp, &c))
							FAILF("release");
						got[p][ch]++;
						moved = true;
					}
				}
			}
		}
		if (done)
			break;
		if (!moved) {
			rc = ops->wait(tp, dl);
			if (rc)
				FAILF("wait: %d", rc);
		}
	}

	/* 2. Blocking ping-pong between ranks 0 and 1. */
	if (rank < 2) {
		int other = 1 - rank;

		for (int i = 0; i < 40; i++) {
			size_t len = msg_len(tp->max_chunk, i);

			if ((i + rank) % 2 == 0) {
				fill(buf, len, rank, other, 0, i);
				if (ops->put(tp, other, 0, (uint32_t)i, buf, len, true, dl))
					FAILF("pingpong put %d", i);
				want_puts++;
				want_bytes += len;
			} else {
				if (ops->get(tp, other, 0, &c, true, dl))
					FAILF("pingpong get %d", i);
				if (c.tag != (uint32_t)i || c.len != len || !check(c.data, c.len, other, rank, 0, i))
					FAILF("pingpong chunk %d wrong", i);
				if (ops->release(tp, &c))
					FAILF("pingpong release");
			}
		}
	}

	/* 3. Counters. */
	if (tp->cnt.puts != want_puts || tp->cnt.bytes_put != want_bytes || tp->cnt.bytes_put == 0)
		FAILF("counters: puts %llu (want %llu) bytes %llu (want %llu)", (unsigned long long)tp->cnt.puts,
		      (unsigned long long)want_puts, (unsigned long long)tp->cnt.bytes_put,
		      (unsigned long long)want_bytes);
	if (tp->cnt.max_inflight < 1 || tp->cnt.max_inflight > tp->nslots || tp->cnt.connects != (uint32_t)size - 1 ||
	    tp->cnt.qps != (uint32_t)size - 1)
		FAILF("counters: max_inflight %u nslots %u connects %u qps %u", tp->cnt.max_inflight, tp->nslots,
		      tp->cnt.connects, tp->cnt.qps);

	/* 4. A get that times out names the peer. */
	{
		int p = (rank + 1) % size;
		uint64_t t0 = ibc_now_ms();
		char want[32];

		rc = ops->get(tp, p, IBC_CHAN_P2P, &c, true, ibc_deadline(300));
		snprintf(want, sizeof(want), "peer %d", p);
		if (rc != IBCOMM_ERR_TIMEOUT || !strstr(comm->err, want) || ibc_now_ms() - t0 > 5000)
			FAILF("timed get: %d", rc);
	}

	/* 5. An interrupted wait returns ABORTED promptly. */
	{
		uint64_t t0 = ibc_now_ms();

		atomic_store(&comm->aborted, 1);
		ops->interrupt(tp);
		rc = ops->wait(tp, ibc_deadline(10000));
		if (rc != IBCOMM_ERR_ABORTED || ibc_now_ms() - t0 > 3000)
			FAILF("aborted wait: %d after %llu ms", rc, (unsigned long long)(ibc_now_ms() - t0));
		atomic_store(&comm->aborted, 0);
	}

	/* Everyone finished before anyone destroys its QPs. */
	snprintf(key, sizeof(key), "done/%d", rank);
	if (ibc_boot_put(comm->boot, key, "1", 1, comm->err, sizeof(comm->err)))
		FAILF("done put");
	for (int p = 0; p < size; p++) {
		snprintf(key, sizeof(key), "done/%d", p);
		if (ibc_boot_get(comm->boot, key, val, sizeof(val), &vlen, ibc_deadline(WAIT_MS), NULL, comm->err,
				sizeof(comm->err)))
			FAILF("done get %d", p);
	}
	printf("rank %d: ok: %llu puts, %llu bytes, max inflight %u, credit waits %llu\n", rank,
	       (unsigned long long)tp->cnt.puts, (unsigned long long)tp->cnt.bytes_put, tp->cnt.max_inflight,
	       (unsigned long long)tp->cnt.credit_waits);
	ret = 0;
out:
	if (tp)
		ops->destroy(tp);
	free(buf);
	fake_rdv_free(comm->boot);
	return ret;
}

/*
 * Rank 1 connects (one chunk from rank 0) and then destroys its transport; rank 0 then writes to it: the write
 * completes in error (transport retry exceeded) and comes back as IBCOMM_ERR_PEER, with a
 * message naming rank, peer, QP and a hint; never an abort.
 */
static int run_death(int rank)
{
	struct ibcomm comm_s, *comm = &comm_s;
	const struct ibc_tp_ops *ops = &ibc_rdma_ops;
	ibc_tp_t *tp = NULL;
	int ret = 1, rc = 0;
	char val[8];
	size_t vlen;
	ibc_deadline_t dl;

	init_comm(comm, rank, 2, "death");
	rc = ops->create(comm, &tp);
	if (rc)
		FAILF("create: %d", rc);
	dl = ibc_deadline(WAIT_MS);
	if (rank == 0 && ops->put(tp, 1, 0, 7, "x", 1, true, dl))
		FAILF("first put");
	if (rank == 1) {
		ibc_chunk_t c;

		if (ops->get(tp, 0, 0, &c, true, dl) || c.tag != 7 || ops->release(tp, &c))
			FAILF("first get");
		ops->destroy(tp);
		tp = NULL;
		if (ibc_boot_put(comm->boot, "death/gone", "1", 1, comm->err, sizeof(comm->err)))
			FAILF("gone put");
		ret = 0;
		goto out;
	}
	if (ibc_boot_get(comm->boot, "death/gone", val, sizeof(val), &vlen, ibc_deadline(WAIT_MS), NULL, comm->err,
			sizeof(comm->err)))
		FAILF("gone get");
	dl = ibc_deadline(90000);
	for (int i = 1; rc == 0 || rc == IBC_AGAIN; i++) {
		rc = ops->put(tp, 1, 0, (uint32_t)i, val, 1, false, dl);
		if (rc == IBC_AGAIN || (rc == 0 && i >= 2))
			rc = ops->wait(tp, dl);
	}
	if (rc != IBCOMM_ERR_PEER || !strstr(comm->err, "peer 1") || !strstr(comm->err, "QP 0x") ||
	    !strstr(comm->err, "IBCOMM_GID_INDEX"))
		FAILF("a write to a dead peer gave %d", rc);
	printf("rank 0: dead peer reported as: %s\n", comm->err);
	/* sticky */
	if (ops->get(tp, 1, 0, &(ibc_chunk_t){ 0 }, false, 0) != IBCOMM_ERR_PEER)
		FAILF("error not sticky");
	ret = 0;
out:
	if (tp)
		ops->destroy(tp);
	fake_rdv_free(comm->boot);
	return ret;
}

/*
 * Peers of rank r: its recursive-doubling partners (the schedule rd.c runs, which create()
 * connects: rdma.c), then more.
 */
static int peers_of(int r, int n, bool ring, bool set[64])
{
	struct ibc_rd_step step[IBC_RD_MAX_STEPS];
	int nsteps = ibc_rd_schedule(n, r, step), k = 0;

	memset(set, 0, 64 * sizeof(bool));
	for (int i = 0; i < nsteps; i++)
		set[step[i].peer] = true;
	if (ring)
		set[(r + 1) % n] = set[(r + n - 1) % n] = true;
	for (int i = 0; i < n; i++)
		k += set[i];
	return k;
}

/* Every rank first blocks in puts to its right neighbour, then takes from its left one. */
static int run_ring(int rank)
{
	struct ibcomm comm_s, *comm = &comm_s;
	const struct ibc_tp_ops *ops = &ibc_rdma_ops;
	ibc_tp_t *tp = NULL;
	int size = nranks, right = (rank + 1) % size, left = (rank + size - 1) % size, ret = 1, rc;
	bool set[64];
	uint32_t want0 = (uint32_t)peers_of(rank, size, false, set), want_qps = (uint32_t)peers_of(rank, size, true, set);
	uint64_t t0;
	ibc_deadline_t dl;
	ibc_chunk_t c;
	char key[64], val[8];
	size_t vlen;
	uint8_t b[100];

	init_comm(comm, rank, size, "ring");
	/* with a job key: every connect message is signed and checked (rdma.c cm_mac) */
	snprintf(comm->set.job_key, sizeof(comm->set.job_key), "ring-key");
	rc = ops->create(comm, &tp);
	if (rc)
		FAILF("create: %d", rc);
	if (tp->cnt.qps != want0)
		FAILF("%u QPs right after create (want %u: the recursive-doubling partners only)", tp->cnt.qps, want0);
	dl = ibc_deadline(WAIT_MS);
	t0 = ibc_now_ms();
	for (int i = 0; i < 3; i++) {
		fill(b, sizeof(b), rank, right, 0, i);
		rc = ops->put(tp, right, 0, (uint32_t)i, b, sizeof(b), true, dl);
		if (rc)
			FAILF("put %d to %d: %d", i, right, rc);
	}
	for (int i = 0; i < 3; i++) {
		rc = ops->get(tp, left, 0, &c, true, dl);
		if (rc)
			FAILF("get %d from %d: %d", i, left, rc);
		if (c.tag != (uint32_t)i || c.len != sizeof(b) || !check(c.data, c.len, left, rank, 0, i))
			FAILF("chunk %d from %d wrong", i, left);
		if (ops->release(tp, &c))
			FAILF("release");
	}
	if (tp->cnt.qps != want_qps || tp->cnt.connects < (size == 2 ? 1u : 2u) || tp->cnt.connects > want_qps)
		FAILF("%u QPs, %u connected after the ring (want %u: the neighbours and the partners opened at create)",
		      tp->cnt.qps, tp->cnt.connects, want_qps);
	printf("rank %d: ring connected in %llu ms with %u QPs\n", rank, (unsigned long long)(ibc_now_ms() - t0),
	       tp->cnt.qps);
	snprintf(key, sizeof(key), "ring-done/%d", rank);
	if (ibc_boot_put(comm->boot, key, "1", 1, comm->err, sizeof(comm->err)))
		FAILF("done put");
	for (int p = 0; p < size; p++) {
		snprintf(key, sizeof(key), "ring-done/%d", p);
		if (ibc_boot_get(comm->boot, key, val, sizeof(val), &vlen, ibc_deadline(WAIT_MS), NULL, comm->err,
				sizeof(comm->err)))
			FAILF("done get %d", p);
	}
	ret = 0;
out:
	if (tp)
		ops->destroy(tp);
	fake_rdv_free(comm->boot);
	return ret;
}

/*
 * 4 ranks (create connects 0-1, 0-2, 1-3, 2-3): rank 3 makes no call for a while: rank 0's
 * blocking put to it times out naming peer 3 (its connect messages wait unanswered); rank 0
 * tries again, rank 3 then takes the chunk: the connection is made from the messages that
 * waited.
 */
static int run_silent(int rank)
{
	struct ibcomm comm_s, *comm = &comm_s;
	const struct ibc_tp_ops *ops = &ibc_rdma_ops;
	ibc_tp_t *tp = NULL;
	int ret = 1, rc;
	char val[8], key[32];
	size_t vlen;
	uint64_t t0;
	ibc_chunk_t c;

	init_comm(comm, rank, 4, "silent");
	rc = ops->create(comm, &tp);
	if (rc)
		FAILF("create: %d", rc);
	if (rank == 3 && ibc_boot_put(comm->boot, "silent/created", "1", 1, comm->err, sizeof(comm->err)))
		FAILF("created put");
	if (rank == 0) {
		if (tp->cnt.qps != 2)
			FAILF("%u QPs after create, want 2", tp->cnt.qps);
		/* rank 3 out of create() (whose waits answer connect messages) */
		if (ibc_boot_get(comm->boot, "silent/created", val, sizeof(val), &vlen, ibc_deadline(WAIT_MS), NULL, comm->err,
				sizeof(comm->err)))
			FAILF("created get");
		t0 = ibc_now_ms();
		rc = ops->put(tp, 3, IBC_CHAN_P2P, 5, "abc", 3, true, ibc_deadline(1500));
		if (rc != IBCOMM_ERR_TIMEOUT || !strstr(comm->err, "peer 3") || ibc_now_ms() - t0 > 10000)
			FAILF("put to a silent rank: %d after %llu ms", rc, (unsigned long long)(ibc_now_ms() - t0));
		printf("rank 0: silent peer reported as: %s\n", comm->err);
		if (ibc_boot_put(comm->boot, "silent/timedout", "1", 1, comm->err, sizeof(comm->err)))
			FAILF("timedout put");
		rc = ops->put(tp, 3, IBC_CHAN_P2P, 6, "abc", 3, true, ibc_deadline(WAIT_MS));
		if (rc)
			FAILF("put after the timeout: %d", rc);
	} else if (rank == 3) {
		if (ibc_boot_get(comm->boot, "silent/timedout", val, sizeof(val), &vlen, ibc_deadline(WAIT_MS), NULL, comm->err,
				sizeof(comm->err)))
			FAILF("timedout get");
		rc = ops->get(tp, 0, IBC_CHAN_P2P, &c, true, ibc_deadline(WAIT_MS));
		if (rc || c.tag != 6 || c.len != 3 || memcmp(c.data, "abc", 3) || ops->release(tp, &c))
			FAILF("get after the timeout: %d", rc);
	}
	snprintf(key, sizeof(key), "silent/done%d", rank);
	if (ibc_boot_put(comm->boot, key, "1", 1, comm->err, sizeof(comm->err)))
		FAILF("done put");
	for (int p = 0; p < 4; p++) {
		snprintf(key, sizeof(key), "silent/done%d", p);
		if (ibc_boot_get(comm->boot, key, val, sizeof(val), &vlen, ibc_deadline(WAIT_MS), NULL, comm->err,
				sizeof(comm->err)))
			FAILF("done get %d", p);
	}
	ret = 0;
out:
	if (tp)
		ops->destroy(tp);
	fake_rdv_free(comm->boot);
	return ret;
}

/*
 * 2 ranks with different job keys: each drops the other's connect messages, so create()
 * (which connects the one peer) times out instead of connecting to a rank without the key.
 */
static int run_wrong_key(int rank)
{
	struct ibcomm comm_s, *comm = &comm_s;
	ibc_tp_t *tp = NULL;
	int ret = 1, rc;

	init_comm(comm, rank, 2, "wrongkey");
	snprintf(comm->set.job_key, sizeof(comm->set.job_key), "key-%d", rank);
	comm->set.timeout_ms = 4000;
	rc = ibc_rdma_ops.create(comm, &tp);
	if (rc != IBCOMM_ERR_TIMEOUT)
		FAILF("create with a key the peer does not share: %d, want a timeout (%s)", rc, comm->err);
	printf("rank %d: wrong key reported as: %s\n", rank, comm->err);
	ret = 0;
out:
	if (tp)
		ibc_rdma_ops.destroy(tp);
	fake_rdv_free(comm->boot);
	return ret;
}

/* Runs fn in n forked ranks; every rank must exit 0. */
static void run_ranks(int (*fn)(int), int n)
{
	pid_t pids[64];
	int status, failed = 0;

	for (int r = 0; r < n; r++) {
		pids[r] = fork();
		if (pids[r] == 0) {
			alarm(240);
			fflush(stdout);
			_exit(fn(r));
		}
		CU_ASSERT_FATAL(pids[r] > 0);
	}
	for (int r = 0; r < n; r++) {
		if (waitpid(pids[r], &status, 0) != pids[r] || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
			fprintf(stderr, "rank %d: exited with status 0x%x\n", r, status);
			failed++;
			for (int k = 0; k < n; k++)
				kill(pids[k], SIGKILL);
		}
	}
	CU_ASSERT_EQUAL(failed, 0);
}

static void test_ring(void)
{
	run_ranks(run_ring, nranks);
}

static void test_silent(void)
{
	run_ranks(run_silent, 4);
}

static void test_wrong_key(void)
{
	run_ranks(run_wrong_key, 2);
}

static void test_death(void)
{
	pid_t pids[2];
	int status, failed = 0;

	if (getenv("RXE_TP_QUICK")) {
		cm_skip("RXE_TP_QUICK");
		return;
	}
	for (int r = 0; r < 2; r++) {
		pids[r] = fork();
		if (pids[r] == 0) {
			alarm(240);
			_exit(run_death(r));
		}
		CU_ASSERT_FATAL(pids[r] > 0);
	}
	for (int r = 0; r < 2; r++) {
		if (waitpid(pids[r], &status, 0) != pids[r] || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
			fprintf(stderr, "death test rank %d: exited with status 0x%x\n", r, status);
			failed++;
		}
	}
	CU_ASSERT_EQUAL(failed, 0);
}

static void test_exchange(void)
{
	pid_t pids[64];
	int status, failed = 0;

	for (int r = 0; r < nranks; r++) {
		pids[r] = fork();
		if (pids[r] == 0) {
			alarm(240);
			fflush(stdout);
			_exit(run_rank(r));
		}
		CU_ASSERT_FATAL(pids[r] > 0);
	}
	for (int r = 0; r < nranks; r++) {
		if (waitpid(pids[r], &status, 0) != pids[r] || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
			fprintf(stderr, "rank %d: exited with status 0x%x\n", r, status);
			failed++;
			for (int k = 0; k < nranks; k++)
				kill(pids[k], SIGKILL);
		}
	}
	CU_ASSERT_EQUAL(failed, 0);
}

/* A named device that does not exist is INVALID and named in the message. */
static void test_bad_device(void)
{
	struct ibcomm comm;
	ibc_tp_t *tp = NULL;

	init_comm(&comm, 0, 1, "bad");
	snprintf(comm.set.device, sizeof(comm.set.device), "nosuchdev9");
	CU_ASSERT_EQUAL(ibc_rdma_ops.create(&comm, &tp), IBCOMM_ERR_INVALID);
	CU_ASSERT_PTR_NOT_NULL(strstr(comm.err, "nosuchdev9"));
	CU_ASSERT_PTR_NULL(tp);
	fake_rdv_free(comm.boot);
}

static void remove_dir(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	char path[600];

	while (d && (e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		unlink(path);
	}
	if (d)
		closedir(d);
	rmdir(dir);
}

int main(int argc, char **argv)
{
	static const struct cm_test tests[] = {
		{ "bad device name", test_bad_device },
		{ "ranks exchange chunks", test_exchange },
		{ "lazy connections: a ring of blocking puts", test_ring },
		{ "lazy connections: a rank that does not answer", test_silent },
		{ "connect messages: a rank with another job key", test_wrong_key },
		{ "a dead peer is an error, not a hang", test_death },
	};
	struct ibcomm comm;
	ibc_tp_t *tp = NULL;
	const char *n = getenv("RXE_TP_RANKS");
	char tmpl[] = "/tmp/ibc-rdv-XXXXXX";
	int rc;

	if (n)
		nranks = atoi(n);
	if (nranks < 2 || nranks > 64)
		nranks = 3;
	if (!mkdtemp(tmpl)) {
		perror("mkdtemp");
		return CM_EXIT_ERROR;
	}
	snprintf(rdv_dir, sizeof(rdv_dir), "%s", tmpl);

	/* Skip without a usable device. */
	init_comm(&comm, 0, 1, "probe");
	if (ibc_rdma_ops.create(&comm, &tp)) {
		rc = cm_skip_all("%s", comm.err);
		fake_rdv_free(comm.boot);
		remove_dir(rdv_dir);
		return rc;
	}
	ibc_rdma_ops.destroy(tp);
	fake_rdv_free(comm.boot);

	rc = CM_MAIN1(argc, argv, "rdma_transport", tests);
	remove_dir(rdv_dir);
	return rc;
}
