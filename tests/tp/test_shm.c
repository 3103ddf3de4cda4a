/*
 * The shared-memory transport against its interface (lib/transport.h) and its segments
 * (transports/shm/shm.h): 1 to 3 forked ranks with a file-backed fake rendezvous (which
 * reports no deaths: a dead peer is found by the transport's own process check), bad segment
 * headers, another user's segment, and /dev/shm left as it was, a kill -9 included. The
 * cases every transport passes are tests/tp/tp_suite.c's.
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
#include <time.h>
#include <unistd.h>

#include "ibc.h"
#include "shm_int.h"
#include "tp_suite.h"
#include "../cunit_main.h"

/*
 * The segments of this test run in /dev/shm, one name per line. Only this run's: make check
 * runs other tests at the same time, whose segments come and go under the same user.
 */
static char g_root[64]; /* this run's rendezvous root, in every rank's segment names */

static void shm_list(char *out, size_t cap)
{
	struct ibcomm probe = { 0 };
	char prefix[128];
	DIR *d = opendir("/dev/shm");
	struct dirent *e;
	size_t len = 0;

	out[0] = '\0';
	snprintf(probe.set.root, sizeof(probe.set.root), "%s", g_root);
	ibc_shm_name_prefix(&probe, prefix, sizeof(prefix)); /* "/ibcomm.<uid>.<hash>.." */
	prefix[strlen(prefix) - 1] = '\0'; /* the id is left out: every comm of this run */
	while (d && (e = readdir(d)))
		if (!strncmp(e->d_name, prefix + 1, strlen(prefix + 1)) &&
		    len + strlen(e->d_name) + 2 < cap)
			len += (size_t)snprintf(out + len, cap - len, "%s\n", e->d_name);
	if (d)
		closedir(d);
}

/* The shared-memory transport with chunk and slots (0: its default), its segments named for the test run. */
static void shm_setup(struct ibcomm *comm, unsigned long chunk, unsigned long slots)
{
	comm->set.shm_chunk = chunk;
	comm->set.shm_slots = slots;
	snprintf(comm->set.root, sizeof(comm->set.root), "%s", g_root);
}

/* ---- order, tags and wrap-around: every rank to every rank (itself too), both channels ---- */

static void test_order(void)
{
	char before[4096], after[4096];

	shm_list(before, sizeof(before));
	CU_ASSERT_EQUAL(tp_run_ranks(1, tp_fn_order, 0, 60, 4096, 4), 0);
	CU_ASSERT_EQUAL(tp_run_ranks(2, tp_fn_order, 0, 60, 4096, 4), 0);
	CU_ASSERT_EQUAL(tp_run_ranks(3, tp_fn_order, 0, 60, 4096, 4), 0);
	shm_list(after, sizeof(after));
	CU_ASSERT_STRING_EQUAL(after, before);
}

/* ---- credits: the ring's free slots ---- */

static void test_credit(void)
{
	CU_ASSERT_EQUAL(tp_run_ranks(2, tp_fn_credit, 0, 60, 4096, 2), 0);
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
	CU_ASSERT_EQUAL(tp_run_ranks(2, fn_idle, 0, 60, 4096, 4), 0);
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
	CU_ASSERT_EQUAL(tp_run_ranks(3, fn_killed, 1u << 2, 60, 4096, 4), 0);
	shm_list(after, sizeof(after));
	CU_ASSERT_STRING_EQUAL(after, before);
}

/* ---- a rank killed inside create, before the others mapped its segment ---- */

/* The pid in the name of rank's segment of comm in /dev/shm, or 0 when there is none yet. */
static long seg_pid(struct ibcomm *comm, int rank)
{
	char prefix[IBC_SHM_NAME_MAX], want[IBC_SHM_NAME_MAX + 16];
	DIR *d = opendir("/dev/shm");
	struct dirent *e;
	long pid = 0;

	ibc_shm_name_prefix(comm, prefix, sizeof(prefix));
	snprintf(want, sizeof(want), "%s%d.", prefix + 1, rank);
	while (d && (e = readdir(d)))
		if (!strncmp(e->d_name, want, strlen(want)))
			pid = atol(e->d_name + strlen(want));
	if (d)
		closedir(d);
	return pid;
}

/* In the victim: SIGKILL as soon as its segment exists (it is inside create then). */
static void *killer(void *arg)
{
	struct ibcomm *comm = arg;

	while (seg_pid(comm, comm->rank) != (long)getpid())
		poll(NULL, 0, 5);
	raise(SIGKILL);
	return NULL;
}

/*
 * Rank 2 is killed inside create, once its segment exists (it then waits for rank 1's, which
 * never comes). Rank 0 waits until rank 2's process is gone, then creates: it waits for rank
 * 1 too (it maps in rank order, so it never maps rank 2's segment) and times out, and its
 * failed create removes the segment rank 2 left.
 */
static int fn_init_killed(struct ibcomm *comm, ibc_tp_t *unused)
{
	pthread_t th;
	ibc_tp_t *tp = NULL;
	long victim = 0;

	(void)unused;
	if (comm->rank == 1)
		return 0;
	if (comm->rank == 2) {
		CHECK(!pthread_create(&th, NULL, killer, comm));
		ibc_shm_ops.create(comm, &tp);
		CHECK(!"rank 2 survived its create");
	}
	for (int i = 0; i < 4000 && (!victim || !ibc_shm_pid_gone((pid_t)victim)); i++) {
		victim = seg_pid(comm, 2);
		poll(NULL, 0, 5);
	}
	CHECK(victim && ibc_shm_pid_gone((pid_t)victim));
	comm->set.timeout_ms = 1000;
	CHECK(ibc_shm_ops.create(comm, &tp) == IBCOMM_ERR_TIMEOUT && !tp);
	CHECK(strstr(comm->err, "segment of rank 1"));
	CHECK(!seg_pid(comm, 2));
	return 0;
}

static void test_init_killed(void)
{
	char before[4096], after[4096];

	shm_list(before, sizeof(before));
	tp_fn_creates = true;
	CU_ASSERT_EQUAL(tp_run_ranks(3, fn_init_killed, 1u << 2, 60, 4096, 4), 0);
	tp_fn_creates = false;
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
	static const struct tp_suite shm = { "shm", &ibc_shm_ops, shm_setup, false };
	static const struct cm_test tests[] = {
		{ "order, tags, wrap-around, 1-3 ranks", test_order },
		{ "credits", test_credit },
		{ "idle CPU, deadline, interrupt", test_idle },
		{ "killed peer, /dev/shm clean", test_killed },
		{ "killed inside create, /dev/shm clean", test_init_killed },
		{ "bad segments", test_bad_segments },
	};

	snprintf(g_root, sizeof(g_root), "test-shm-%ld", (long)getpid());
	tp_suite = &shm;
	return CM_MAIN1(argc, argv, "shm transport", tests);
}
