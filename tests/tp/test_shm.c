/*
 * The shared-memory transport against its interface (lib/transport.h) and its segments
 * (transports/shm/shm.h): 1 to 3 forked ranks with a file-backed fake rendezvous (which
 * reports no deaths: a dead peer is found by the transport's own process check), bad segment
 * headers, another user's segment, and /dev/shm left as it was, a kill -9 included.
 */
#define _GNU_SOURCE
#include <CUnit/Basic.h>
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ibc.h"
#include "shm.h"
#include "fake_rdv.h"
#include "../cunit_main.h"

typedef int (*rank_fn)(struct ibcomm *comm, ibc_tp_t *tp);

static struct ibcomm *g_comm;
static unsigned g_run;
static char g_dir[256];

#define CHECK(cond)                                                                                        \
	do {                                                                                               \
		if (!(cond)) {                                                                             \
			fprintf(stderr, "rank %d: %s:%d: check failed: %s (last error: %s)\n",             \
				g_comm ? g_comm->rank : -1, __FILE__, __LINE__, #cond, g_comm ? g_comm->err : ""); \
			return 1;                                                                          \
		}                                                                                          \
	} while (0)

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Names of this user's ibcomm segments in /dev/shm, one per line, sorted enough to compare. */
static void shm_list(char *out, size_t cap)
{
	char prefix[32];
	DIR *d = opendir("/dev/shm");
	struct dirent *e;
	size_t len = 0;

	out[0] = '\0';
	snprintf(prefix, sizeof(prefix), "ibcomm.%u.", (unsigned)getuid());
	while (d && (e = readdir(d)))
		if (!strncmp(e->d_name, prefix, strlen(prefix)) && len + strlen(e->d_name) + 2 < cap)
			len += (size_t)snprintf(out + len, cap - len, "%s\n", e->d_name);
	if (d)
		closedir(d);
}

static int child(int rank, int size, rank_fn fn, unsigned long chunk, unsigned long slots)
{
	struct ibcomm *comm = calloc(1, sizeof(*comm));
	ibc_tp_t *tp = NULL;
	int rc;

	if (!comm)
		return 99;
	comm->set.shm_chunk = chunk;
	comm->set.shm_slots = slots;
	comm->rank = comm->set.rank = rank;
	comm->size = comm->set.nranks = size;
	snprintf(comm->id, sizeof(comm->id), "t%u", g_run);
	snprintf(comm->set.root, sizeof(comm->set.root), "test-shm-%ld", (long)getppid());
	comm->set.timeout_ms = 20000;
	comm->boot = fake_rdv_new(g_dir);
	g_comm = comm;
	if (ibc_shm_ops.create(comm, &tp)) {
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

/* Runs fn in `size` forked ranks (those in killed_mask must die of SIGKILL); the bad count. */
static int run_ranks(int size, rank_fn fn, unsigned killed_mask, unsigned long chunk, unsigned long slots)
{
	pid_t pids[8];
	int bad = 0;
	char cmd[300];

	g_run++;
	snprintf(g_dir, sizeof(g_dir), "/tmp/ibc_test_shm.XXXXXX");
	if (!mkdtemp(g_dir))
		return size;
	fflush(NULL);
	for (int r = 0; r < size; r++) {
		pids[r] = fork();
		if (pids[r] == 0) {
			alarm(60); /* never hang */
			_exit(child(r, size, fn, chunk, slots));
		}
	}
	for (int r = 0; r < size; r++) {
		int st;

		if (pids[r] < 0 || waitpid(pids[r], &st, 0) != pids[r]) {
			bad++;
			continue;
		}
		if (killed_mask & (1u << r) ? !WIFSIGNALED(st) || WTERMSIG(st) != SIGKILL : !WIFEXITED(st) || WEXITSTATUS(st)) {
			fprintf(stderr, "rank %d ended with status %#x\n", r, st);
			bad++;
		}
	}
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", g_dir);
	if (system(cmd))
		bad++;
	return bad;
}

/* ---- order, tags and wrap-around: every rank to every rank (itself too), both channels ---- */

#define ORDER_N 300u

static size_t pat_len(int src, int chan, unsigned i, size_t max)
{
	return i % 17 == 3 ? 0 : i % 13 == 5 ? max : (i * 977u + (unsigned)src * 31u + (unsigned)chan * 7u) % (max + 1);
}

static uint8_t pat_byte(int src, int dst, int chan, unsigned i, size_t k)
{
	return (uint8_t)(src * 73 + dst * 37 + chan * 11 + i * 13 + k * 7 + (k >> 8));
}

static int fn_order(struct ibcomm *comm, ibc_tp_t *tp)
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

					for (size_t k = 0; k < len; k++)
						buf[k] = pat_byte(comm->rank, p, ch, i, k);
					rc = ibc_put(tp, p, ch, i + 1000u * (unsigned)ch, buf, len, false, dl);
					if (rc == IBC_AGAIN)
						break;
					CHECK(rc == IBCOMM_OK);
					sent[p][ch]++;
					moved = true;
				}
				while (got[p][ch] < ORDER_N) {
					unsigned i = got[p][ch];
					ibc_chunk_t c;
					int rc = ibc_get(tp, p, ch, &c, false, dl);

					if (rc == IBC_AGAIN)
						break;
					CHECK(rc == IBCOMM_OK);
					CHECK(c.len == pat_len(p, ch, i, max) && c.tag == i + 1000u * (unsigned)ch && c.peer == p &&
					      c.chan == ch);
					for (size_t k = 0; k < c.len; k++)
						CHECK(((uint8_t *)c.data)[k] == pat_byte(p, comm->rank, ch, i, k));
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
	CHECK(tp->cnt.max_inflight >= 1 && tp->cnt.max_inflight <= tp->nslots);
	free(buf);
	return 0;
}

static void test_order(void)
{
	char before[4096], after[4096];

	shm_list(before, sizeof(before));
	CU_ASSERT_EQUAL(run_ranks(1, fn_order, 0, 4096, 4), 0);
	CU_ASSERT_EQUAL(run_ranks(2, fn_order, 0, 4096, 4), 0);
	CU_ASSERT_EQUAL(run_ranks(3, fn_order, 0, 4096, 4), 0);
	shm_list(after, sizeof(after));
	CU_ASSERT_STRING_EQUAL(after, before);
}

/* ---- credits: the ring's free slots ---- */

static int fn_credit(struct ibcomm *comm, ibc_tp_t *tp)
{
	ibc_deadline_t dl = ibc_deadline(10000);
	char x[8] = "chunk";
	ibc_chunk_t c[3], go;

	if (comm->rank == 0) {
		CHECK(ibc_put(tp, 1, IBC_CHAN_COLL, 1, x, 5, false, dl) == IBCOMM_OK);
		CHECK(ibc_put(tp, 1, IBC_CHAN_COLL, 2, x, 5, false, dl) == IBCOMM_OK);
		CHECK(ibc_put(tp, 1, IBC_CHAN_COLL, 3, x, 5, false, dl) == IBC_AGAIN);
		CHECK(tp->cnt.credit_waits == 1 && tp->cnt.max_inflight == 2);
		CHECK(ibc_put(tp, 1, IBC_CHAN_P2P, 9, "go", 2, false, dl) == IBCOMM_OK); /* its own credits */
		CHECK(ibc_put(tp, 1, IBC_CHAN_COLL, 3, x, 5, true, dl) == IBCOMM_OK);   /* waits for a release */
		CHECK(ibc_put(tp, 1, IBC_CHAN_COLL, 4, x, (size_t)tp->max_chunk + 1, true, dl) == IBCOMM_ERR_INVALID);
		CHECK(ibc_get(tp, 1, IBC_CHAN_P2P, &go, true, dl) == IBCOMM_OK && go.tag == 10);
		CHECK(ibc_release(tp, &go) == IBCOMM_OK);
		return 0;
	}
	CHECK(ibc_get(tp, 0, IBC_CHAN_COLL, &c[0], true, dl) == IBCOMM_OK && c[0].tag == 1);
	CHECK(ibc_get(tp, 0, IBC_CHAN_COLL, &c[1], true, dl) == IBCOMM_OK && c[1].tag == 2);
	CHECK(ibc_get(tp, 0, IBC_CHAN_COLL, &c[2], false, dl) == IBC_AGAIN);
	CHECK(ibc_get(tp, 0, IBC_CHAN_P2P, &go, true, dl) == IBCOMM_OK && go.tag == 9 && go.len == 2);
	CHECK(!memcmp(go.data, "go", 2) && ibc_release(tp, &go) == IBCOMM_OK);
	CHECK(ibc_release(tp, &c[1]) == IBCOMM_ERR_INVALID); /* out of order */
	poll(NULL, 0, 100);                                  /* rank 0 is blocked in put */
	CHECK(ibc_release(tp, &c[0]) == IBCOMM_OK && ibc_release(tp, &c[1]) == IBCOMM_OK);
	CHECK(ibc_get(tp, 0, IBC_CHAN_COLL, &c[2], true, dl) == IBCOMM_OK && c[2].tag == 3 && c[2].len == 5);
	CHECK(!memcmp(c[2].data, "chunk", 5) && ibc_release(tp, &c[2]) == IBCOMM_OK);
	CHECK(ibc_put(tp, 0, IBC_CHAN_P2P, 10, NULL, 0, true, dl) == IBCOMM_OK);
	return 0;
}

static void test_credit(void)
{
	CU_ASSERT_EQUAL(run_ranks(2, fn_credit, 0, 4096, 2), 0);
}

/* ---- waiting: no CPU while idle; a deadline; interrupt() from another thread ---- */

static void *interrupter(void *arg)
{
	struct ibcomm *comm = arg;

	poll(NULL, 0, 300);
	atomic_store(&comm->aborted, 1);
	comm->tp->ops->interrupt(comm->tp);
	return NULL;
}

static int fn_idle(struct ibcomm *comm, ibc_tp_t *tp)
{
	ibc_chunk_t c;
	struct timespec cpu;
	pthread_t th;
	double t0;

	if (comm->rank == 0) {
		poll(NULL, 0, 1500);
		CHECK(ibc_put(tp, 1, IBC_CHAN_COLL, 7, "late", 4, true, ibc_deadline(5000)) == IBCOMM_OK);
		/* stays until rank 1 is done (a peer gone is an error, not a timeout) */
		CHECK(ibc_get(tp, 1, IBC_CHAN_COLL, &c, true, ibc_deadline(20000)) == IBCOMM_OK && c.tag == 8);
		return 0;
	}
	CHECK(ibc_get(tp, 0, IBC_CHAN_COLL, &c, true, ibc_deadline(5000)) == IBCOMM_OK && c.tag == 7);
	CHECK(ibc_release(tp, &c) == IBCOMM_OK);
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &cpu);
	fprintf(stderr, "rank 1: %.3f s of CPU over a 1.5 s wait\n", (double)cpu.tv_sec + (double)cpu.tv_nsec / 1e9);
	CHECK((double)cpu.tv_sec + (double)cpu.tv_nsec / 1e9 < 0.15);
	/* a deadline */
	t0 = now_s();
	CHECK(ibc_get(tp, 0, IBC_CHAN_COLL, &c, true, ibc_deadline(300)) == IBCOMM_ERR_TIMEOUT);
	CHECK(now_s() - t0 > 0.25 && now_s() - t0 < 2 && strstr(comm->err, "peer rank 0"));
	/* interrupt() */
	CHECK(!pthread_create(&th, NULL, interrupter, comm));
	t0 = now_s();
	CHECK(ibc_wait(tp, ibc_deadline(10000)) == IBCOMM_OK || atomic_load(&comm->aborted));
	CHECK(ibc_get(tp, 0, IBC_CHAN_COLL, &c, true, ibc_deadline(10000)) == IBCOMM_ERR_ABORTED);
	CHECK(now_s() - t0 < 2);
	pthread_join(th, NULL);
	atomic_store(&comm->aborted, 0);
	CHECK(ibc_put(tp, 0, IBC_CHAN_COLL, 8, "bye", 3, true, ibc_deadline(5000)) == IBCOMM_OK);
	return 0;
}

static void test_idle(void)
{
	CU_ASSERT_EQUAL(run_ranks(2, fn_idle, 0, 4096, 4), 0);
}

/* ---- a peer killed with SIGKILL: seen within 1 s, named; nothing left in /dev/shm ---- */

static int fn_killed(struct ibcomm *comm, ibc_tp_t *tp)
{
	ibc_chunk_t c;
	double t0;
	int rc;

	if (comm->rank == comm->size - 1) {
		poll(NULL, 0, 200);
		raise(SIGKILL);
	}
	t0 = now_s();
	/* waits for data from the victim (a writer to it may also block: the victim reads nothing) */
	rc = ibc_get(tp, comm->size - 1, IBC_CHAN_COLL, &c, true, ibc_deadline(10000));
	fprintf(stderr, "rank %d: dead peer seen after %.3f s: %s\n", comm->rank, now_s() - t0, comm->err);
	CHECK(rc == IBCOMM_ERR_PEER && now_s() - t0 < 1.2);
	CHECK(strstr(comm->err, "peer rank 2") && strstr(comm->err, "gone"));
	CHECK(ibc_put(tp, comm->size - 1, IBC_CHAN_COLL, 1, "x", 1, true, ibc_deadline(1000)) == IBCOMM_ERR_PEER);
	return 0;
}

static void test_killed(void)
{
	char before[4096], after[4096];

	shm_list(before, sizeof(before));
	CU_ASSERT_EQUAL(run_ranks(3, fn_killed, 1u << 2, 4096, 4), 0);
	shm_list(after, sizeof(after));
	CU_ASSERT_STRING_EQUAL(after, before);
}

/* ---- bad segments: every one an error naming it, never a crash ---- */

static const char *map_err(const char *name, const struct ibc_shm_hdr *want)
{
	static char why[400];
	struct ibc_shm_seg seg;

	if (!ibc_shm_seg_map(name, want, &seg, why, sizeof(why))) {
		ibc_shm_seg_unmap(&seg);
		return NULL;
	}
	return why;
}

static void test_bad_segments(void)
{
	struct ibc_shm_hdr want = { .uid = (uint32_t)getuid(), .pid = (uint32_t)getpid(), .rank = 1, .nranks = 2,
				    .nslots = 4, .max_chunk = 4096 };
	struct ibc_shm_seg seg, seg2;
	char name[64], why[400], path[80];
	const char *e;
	uint8_t hdr[IBC_SHM_HDR_LEN];
	int fd;

	snprintf(name, sizeof(name), "/ibcomm.%u.test-bad.%ld", (unsigned)getuid(), (long)getpid());
	snprintf(path, sizeof(path), "/dev/shm%s", name);
	CU_ASSERT_FATAL(ibc_shm_seg_create(name, &want, &seg, why, sizeof(why)) == 0);
	CU_ASSERT(ibc_shm_seg_create(name, &want, &seg2, why, sizeof(why)) != 0 && strstr(why, "exists")); /* O_EXCL */
	memcpy(hdr, seg.base, sizeof(hdr));
	CU_ASSERT_PTR_NULL(map_err(name, &want));
	want.rank = 0;
	e = map_err(name, &want);
	CU_ASSERT(e && strstr(e, "expected rank 0 of 2"));
	want.rank = 1;
	seg.base[20] ^= 1; /* the owner uid, under the checksum */
	e = map_err(name, &want);
	CU_ASSERT(e && strstr(e, "corrupted header") && strstr(e, name));
	memcpy(seg.base, hdr, sizeof(hdr));
	seg.base[0] = 'X';
	e = map_err(name, &want);
	CU_ASSERT(e && strstr(e, "bad magic"));
	memcpy(seg.base, hdr, sizeof(hdr));
	fd = open(path, O_RDWR);
	CU_ASSERT_FATAL(fd >= 0);
	CU_ASSERT(!ftruncate(fd, (off_t)seg.size + 4096));
	e = map_err(name, &want);
	CU_ASSERT(e && strstr(e, "wrong size"));
	CU_ASSERT(!ftruncate(fd, 10));
	ibc_shm_seg_unmap(&seg); /* its pages past the end would fault now */
	e = map_err(name, &want);
	CU_ASSERT(e && strstr(e, "truncated"));
	CU_ASSERT(!ftruncate(fd, 0));
	e = map_err(name, &want);
	CU_ASSERT(e && strstr(e, "truncated"));
	CU_ASSERT(!fchmod(fd, 0644));
	e = map_err(name, &want);
	CU_ASSERT(e && strstr(e, "mode 644"));
	CU_ASSERT(!fchmod(fd, 0600));
	if (getuid() == 0) { /* another user's segment of the same name */
		CU_ASSERT(!fchown(fd, 12345, 12345));
		e = map_err(name, &want);
		CU_ASSERT(e && strstr(e, "belongs to uid 12345"));
	}
	close(fd);
	shm_unlink(name);
	e = map_err(name, &want);
	CU_ASSERT(e && strstr(e, "No such file"));
	/* a header decoded from garbage */
	{
		struct ibc_shm_hdr h;
		const char *bad;

		memset(hdr, 0xa5, sizeof(hdr));
		CU_ASSERT(ibc_shm_hdr_decode(hdr, &h, &bad) == -1 && strstr(bad, "magic"));
	}
}

int main(int argc, char **argv)
{
	static const struct cm_test tests[] = {
		{ "order, tags, wrap-around, 1-3 ranks", test_order },
		{ "credits", test_credit },
		{ "idle CPU, deadline, interrupt", test_idle },
		{ "killed peer, /dev/shm clean", test_killed },
		{ "bad segments", test_bad_segments },
	};

	return CM_MAIN1(argc, argv, "shm transport", tests);
}
