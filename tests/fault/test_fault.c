/*
 * Never hang: faults in real forked ranks (tests/coll/harness.c), over TCP on loopback, or
 * over RDMA with HX_TRANSPORT=rdma (the Soft-RoCE guest of tests/rxe/rxe-run sets it).
 *
 * - kill -9 of rank 2 of 4, and of rank 0 (the rendezvous server), in the middle of a loop of
 *   large allreduces: every survivor returns IBCOMM_ERR_PEER naming the dead rank within 2 s
 *   (RDMA under emulation: 5 s) of the kill (the time is printed per rank), also ranks with no
 *   connection to it, and every later call fails the same way;
 * - kill -9 of ranks 2 and 3 of 4 at once (a lost host's ranks), over the transport and, after
 *   TCP, over shared memory: every survivor's error names both;
 * - a rank that never calls the collective (IBCOMM_TIMEOUT_MS=1000; RDMA: 3000): the others
 *   return IBCOMM_ERR_TIMEOUT within 0.9..3 timeouts, naming the operation, its sequence
 *   number and the rank;
 * - ibcomm_abort() from another thread unblocks a barrier with IBCOMM_ERR_ABORTED;
 * - 1000 (RDMA: 20) init/allreduce/destroy cycles keep file descriptors and memory flat;
 * - ranks waiting 3 s in a barrier use under 10% of a core;
 * - RDMA only: a rank's QP is forced into the error state in the middle of an allreduce (the
 *   transport's test hook IBCOMM_TEST_QP_ERROR_AFTER): that rank's call fails with
 *   IBCOMM_ERR_TRANSPORT or _PEER naming the peer and the QP, no hang, no abort; it then exits
 *   without ibcomm_destroy (an application treating the error as fatal) and every other rank
 *   fails too, naming it and its QP to it.
 * FAULT_* variables override the bounds and sizes (see fault_params()).
 *
 * The killed rank runs in a grandchild of the harness (jobs use no_init) so that the harness,
 * which stops a job when one of its ranks dies, sees only clean exits.
 */
#define _GNU_SOURCE
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

/* Bounds and sizes, per transport (RDMA runs emulated, 20-50x slower): see fault_params(). */
static struct {
	const char *transport;  /* HX_TRANSPORT, else "tcp" */
	bool rdma;
	size_t kill_count;      /* floats per allreduce in the kill loop */
	long kill_bound_ms;     /* kill -> error on every survivor */
	long after_ms;          /* calls after the failure */
	long timeout_ms;        /* IBCOMM_TIMEOUT_MS of the timeout case */
	long abort_bound_ms;    /* ibcomm_abort -> the barrier returns */
	int cycles;             /* init/destroy cycles */
	int job_s;              /* harness job timeout */
} fp;

static void fault_params(void)
{
	const char *tp = getenv("HX_TRANSPORT");

	fp.transport = tp && *tp ? tp : "tcp";
	fp.rdma = strcmp(fp.transport, "rdma") == 0;
	fp.kill_count = (size_t)hx_env_long("FAULT_KILL_COUNT", fp.rdma ? 1 << 18 : 1 << 20); /* 1 / 4 MiB */
	fp.kill_bound_ms = hx_env_long("FAULT_KILL_BOUND_MS", fp.rdma ? 5000 : 2000);
	fp.after_ms = fp.rdma ? 1000 : 100;
	fp.timeout_ms = hx_env_long("FAULT_TIMEOUT_MS", fp.rdma ? 3000 : 1000);
	fp.abort_bound_ms = fp.rdma ? 1000 : 200;
	fp.cycles = (int)hx_env_long("FAULT_CYCLES", fp.rdma ? 20 : 1000);
	fp.job_s = fp.rdma ? 300 : 60;
}

/* Shared by the ranks of a job (and the killed rank's grandchild); zeroed before each job. */
struct fault_shm {
	volatile int64_t kill_ms;          /* when the victim was killed (CLOCK_MONOTONIC) */
	volatile int iters[HX_MAX_RANKS];  /* allreduces completed */
	volatile int64_t lat_ms[HX_MAX_RANKS];
	volatile int reported;             /* survivors done with their checks */
	volatile int cycle;                /* resources: cycles rank 0 has finished */
	volatile int go;                   /* a rank may proceed */
	volatile int64_t fault_ms;         /* QP error case: when the faulty rank's call failed */
	volatile int victim_pid[HX_MAX_RANKS]; /* kill case: each victim's grandchild */
};

static bool running_under_asan(void)
{
#if defined(__SANITIZE_ADDRESS__)
	return true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
	return true;
#endif
#endif
	return false;
}

static struct fault_shm *fs;

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void shm_reset(void)
{
	memset((void *)fs, 0, sizeof(*fs));
}

/* Waits (bounded) until *v >= want; false on timeout. */
static bool wait_for(volatile int *v, int want, int limit_ms)
{
	int64_t end = now_ms() + limit_ms;

	while (__atomic_load_n(v, __ATOMIC_ACQUIRE) < want) {
		if (now_ms() > end)
			return false;
		usleep(1000);
	}
	return true;
}

static void bump(volatile int *v)
{
	__atomic_add_fetch(v, 1, __ATOMIC_RELEASE);
}

static const char *kill_tp; /* the kill case's transport when not fp.transport */

/* ibcomm_init of rank hx_rank in an hx_size-rank job over fp.transport (or kill_tp) at hx_root. */
static ibcomm_t *fault_init(long timeout_ms)
{
	ibcomm_config_t cfg = IBCOMM_CONFIG_INIT;
	ibcomm_t *comm = NULL;
	ibcomm_status_t st;

	cfg.rank = hx_rank;
	cfg.nranks = hx_size;
	cfg.root = hx_root;
	cfg.transport = kill_tp ? kill_tp : fp.transport;
	cfg.timeout_ms = timeout_ms;
	st = ibcomm_init(&cfg, &comm);
	if (st) {
		hx_fail("ibcomm_init returned %d (%s): %s", (int)st, ibcomm_strerror(st), ibcomm_last_error(NULL));
		return NULL;
	}
	return comm;
}

/* ---- kill -9 in the middle of an allreduce loop ---- */

static int victim, victim2 = -1; /* victim2 >= 0: killed with victim, at once */

/* Allreduces until one fails; returns that status (or OK after far too many). */
static ibcomm_status_t allreduce_loop(ibcomm_t *comm, float *buf)
{
	for (int i = 0; i < 100000; i++) {
		ibcomm_status_t st = ibcomm_allreduce(comm, buf, buf, fp.kill_count, IBCOMM_FLOAT32, IBCOMM_MAX);

		if (st)
			return st;
		fs->iters[hx_rank] = i + 1;
	}
	return IBCOMM_OK;
}

static bool names_rank(const char *msg, int r)
{
	char want[32];
	const char *p = msg;

	snprintf(want, sizeof(want), "rank %d", r);
	while ((p = strstr(p, want))) {
		char next = p[strlen(want)];

		if (next < '0' || next > '9')
			return true;
		p++;
	}
	return false;
}

static void kill_fn(ibcomm_t *unused, void *arg)
{
	float *buf = calloc(fp.kill_count, sizeof(float));
	ibcomm_t *comm, *sub = NULL;
	ibcomm_status_t st;
	const char *msg;
	int64_t lat;

	(void)unused;
	(void)arg;
	if (!buf) {
		hx_fail("out of memory");
		return;
	}
	if (hx_rank == victim || hx_rank == victim2) {
		bool split = victim == 2 && victim2 < 0;
		pid_t pid = fork();

		if (pid == 0) { /* the victim: runs until killed */
			comm = fault_init(20000);
			if (comm && split && !ibcomm_split(comm, hx_rank % 2, hx_rank, &sub))
				allreduce_loop(comm, buf);
			else if (comm && !split)
				allreduce_loop(comm, buf);
			_exit(3);
		}
		if (pid < 0) {
			hx_fail("fork: %m");
			free(buf);
			return;
		}
		fs->victim_pid[hx_rank] = pid;
		if (hx_rank == victim) { /* kills them all back to back */
			if (!wait_for(&fs->iters[victim], 3, 20000) || (victim2 >= 0 && !wait_for(&fs->iters[victim2], 3, 20000)))
				hx_fail("a victim never completed 3 allreduces");
			fs->kill_ms = now_ms();
			kill(pid, SIGKILL);
			if (victim2 >= 0)
				kill(fs->victim_pid[victim2], SIGKILL);
		}
		waitpid(pid, NULL, 0);
		free(buf);
		return;
	}
	comm = fault_init(20000);
	if (!comm) {
		free(buf);
		return;
	}
	/* with rank 2 killed: communicators of the even and the odd ranks (notices name world ranks) */
	if (victim == 2 && victim2 < 0 && !hx_ok(comm, ibcomm_split(comm, hx_rank % 2, hx_rank, &sub), "split")) {
		ibcomm_destroy(comm);
		free(buf);
		return;
	}
	st = allreduce_loop(comm, buf);
	lat = now_ms() - fs->kill_ms;
	msg = ibcomm_last_error(comm);
	fs->lat_ms[hx_rank] = lat;
	fprintf(stderr, "    rank %d: %s %lld ms after the kill of rank %d%s over %s (after %d allreduces): %s\n",
		hx_rank, ibcomm_strerror(st), (long long)lat, victim, victim2 >= 0 ? " and 3" : "",
		kill_tp ? kill_tp : fp.transport, fs->iters[hx_rank], msg);
	if (st != IBCOMM_ERR_PEER)
		hx_fail("the allreduce loop returned %d (%s), expected IBCOMM_ERR_PEER: %s", (int)st,
			ibcomm_strerror(st), msg);
	if (!fs->kill_ms || lat > fp.kill_bound_ms)
		hx_fail("the error came %lld ms after the kill (bound %ld ms)", (long long)lat, fp.kill_bound_ms);
	if (!names_rank(msg, victim))
		hx_fail("the error does not name rank %d: %s", victim, msg);
	if (victim2 >= 0 && !names_rank(msg, victim2))
		hx_fail("the error does not name rank %d, killed with rank %d: %s", victim2, victim, msg);
	/* the communicator stays failed, at once */
	{
		int64_t t0 = now_ms();
		ibcomm_status_t st2 = ibcomm_allreduce(comm, buf, buf, 16, IBCOMM_FLOAT32, IBCOMM_SUM);
		ibcomm_status_t st3 = ibcomm_barrier(comm);
		ibcomm_status_t st4 = ibcomm_send(comm, buf, 1, IBCOMM_FLOAT32, (hx_rank + 1) % hx_size, 7);

		if (st2 != IBCOMM_ERR_PEER || st3 != IBCOMM_ERR_PEER || st4 != IBCOMM_ERR_PEER)
			hx_fail("calls after the failure returned %d, %d, %d, expected IBCOMM_ERR_PEER", (int)st2, (int)st3,
				(int)st4);
		if (now_ms() - t0 > fp.after_ms)
			hx_fail("calls after the failure took %lld ms", (long long)(now_ms() - t0));
		if (!names_rank(ibcomm_last_error(comm), victim))
			hx_fail("after the failure, the error does not name rank %d: %s", victim,
				ibcomm_last_error(comm));
	}
	if (sub) {
		int64_t v = 1;

		st = ibcomm_allreduce(sub, &v, &v, 1, IBCOMM_INT64, IBCOMM_SUM);
		msg = ibcomm_last_error(sub);
		if (hx_rank % 2 == 0) { /* {0, 2}: its rank 1 is world rank 2 */
			fprintf(stderr, "    rank %d: in the communicator of the even ranks: %s\n", hx_rank, msg);
			if (st != IBCOMM_ERR_PEER || !strstr(msg, "is world rank 2"))
				hx_fail("allreduce on the split {0, 2} returned %d, expected IBCOMM_ERR_PEER naming world rank "
					"2: %s", (int)st, msg);
		} else if (!hx_ok(sub, st, "allreduce on the split {1, 3} (alive)") || v != 2) {
			hx_fail("allreduce on the split {1, 3} gave %lld", (long long)v);
		}
	}
	/* every survivor reports before anybody destroys (a destroy closes connections) */
	bump(&fs->reported);
	if (!wait_for(&fs->reported, hx_size - 1 - (victim2 >= 0), 10000))
		hx_fail("the other survivors did not report");
	ibcomm_destroy(sub);
	ibcomm_destroy(comm);
	free(buf);
}

/* One line with the fault-to-error times lat_ms[] of ranks 0..n-1 but skip, for the record. */
static void print_times(const char *what, int n, int skip)
{
	char line[256];
	size_t len = 0;
	int64_t worst = 0;

	line[0] = '\0';
	for (int r = 0; r < n && len < sizeof(line); r++) {
		if (r == skip)
			continue;
		len += (size_t)snprintf(line + len, sizeof(line) - len, "%srank %d %lld", len ? ", " : "", r,
					(long long)fs->lat_ms[r]);
		if (fs->lat_ms[r] > worst)
			worst = fs->lat_ms[r];
	}
	fprintf(stderr, "    FAULT-TIME %s over %s: worst %lld ms (%s ms)\n", what, kill_tp ? kill_tp : fp.transport,
		(long long)worst, line);
}

static void kill_test(int v)
{
	struct hx_job job = { .name = "kill -9", .n = 4, .fn = kill_fn, .no_init = true, .timeout_s = fp.job_s };
	char what[64];

	victim = v;
	shm_reset();
	hx_run_job(&job);
	if (victim2 >= 0) /* ranks v and 3 (the last): the times of the others */
		snprintf(what, sizeof(what), "kill -9 ranks %d and %d -> IBCOMM_ERR_PEER", v, victim2);
	else
		snprintf(what, sizeof(what), "kill -9 rank %d -> IBCOMM_ERR_PEER", v);
	print_times(what, victim2 >= 0 ? victim2 : 4, v);
}

static void test_kill_rank2(void)
{
	kill_test(2);
}

static void test_kill_rank0(void)
{
	kill_test(0);
}

/* Ranks 2 and 3 at once: the survivors' errors name both (over TCP: also over shared memory). */
static void test_kill_ranks23(void)
{
	victim2 = 3;
	kill_test(2);
	if (!strcmp(fp.transport, "tcp")) {
		kill_tp = "shm";
		kill_test(2);
		kill_tp = NULL;
	}
	victim2 = -1;
}

/* ---- timeout: a rank never calls the collective ---- */

static void timeout_fn(ibcomm_t *unused, void *arg)
{
	int32_t v[4] = { 1, 2, 3, 4 };
	ibcomm_t *comm = fault_init(fp.timeout_ms);
	ibcomm_status_t st;
	const char *msg;
	int64_t t0, dt;

	(void)unused;
	(void)arg;
	if (!comm)
		return;
	for (int i = 0; i < 2; i++) /* #0 and #1 succeed */
		hx_ok(comm, ibcomm_allreduce(comm, v, v, 4, IBCOMM_INT32, IBCOMM_SUM), "allreduce");
	if (hx_rank == 2) { /* skips allreduce #2 */
		wait_for(&fs->reported, 2, 10000);
		ibcomm_destroy(comm);
		return;
	}
	t0 = now_ms();
	st = ibcomm_allreduce(comm, v, v, 4, IBCOMM_INT32, IBCOMM_SUM);
	dt = now_ms() - t0;
	msg = ibcomm_last_error(comm);
	fprintf(stderr, "    rank %d: %s after %lld ms: %s\n", hx_rank, ibcomm_strerror(st), (long long)dt, msg);
	if (st != IBCOMM_ERR_TIMEOUT)
		hx_fail("allreduce #2 returned %d (%s), expected IBCOMM_ERR_TIMEOUT", (int)st, ibcomm_strerror(st));
	fs->lat_ms[hx_rank] = dt;
	if (dt < fp.timeout_ms * 9 / 10 || dt > fp.timeout_ms * 3)
		hx_fail("the timeout came after %lld ms (IBCOMM_TIMEOUT_MS=%ld)", (long long)dt, fp.timeout_ms);
	if (!strstr(msg, "allreduce #2"))
		hx_fail("the error does not name allreduce #2: %s", msg);
	if (!strstr(msg, "ring") && !strstr(msg, "rd") && !strstr(msg, "tree"))
		hx_fail("the error does not name the algorithm: %s", msg);
	if (!strstr(msg, "like this rank (never entered it, or stuck elsewhere): rank 2"))
		hx_fail("the error does not name rank 2 as the one missing: %s", msg);
	bump(&fs->reported);
	wait_for(&fs->reported, 2, 10000);
	ibcomm_destroy(comm);
}

static void test_timeout(void)
{
	struct hx_job job = { .name = "timeout", .n = 3, .fn = timeout_fn, .no_init = true, .timeout_s = fp.job_s };
	char what[64];

	shm_reset();
	hx_run_job(&job);
	snprintf(what, sizeof(what), "missing rank -> IBCOMM_ERR_TIMEOUT (%ld ms)", fp.timeout_ms);
	print_times(what, 3, 2);
}

/* ---- abort from another thread ---- */

static int64_t abort_ms;

static void *aborter(void *arg)
{
	usleep(300 * 1000);
	abort_ms = now_ms();
	ibcomm_abort(arg);
	return NULL;
}

static void abort_fn(ibcomm_t *unused, void *arg)
{
	ibcomm_t *comm = fault_init(20000);
	pthread_t th;
	ibcomm_status_t st;
	int64_t lat;

	(void)unused;
	(void)arg;
	if (!comm)
		return;
	if (hx_rank == 1) { /* never enters the barrier */
		wait_for(&fs->reported, 1, 10000);
		ibcomm_destroy(comm);
		return;
	}
	if (pthread_create(&th, NULL, aborter, comm)) {
		hx_fail("pthread_create");
		ibcomm_destroy(comm);
		return;
	}
	st = ibcomm_barrier(comm);
	lat = now_ms() - abort_ms;
	pthread_join(th, NULL);
	fs->lat_ms[0] = lat;
	fprintf(stderr, "    rank 0: barrier returned %s %lld ms after ibcomm_abort: %s\n", ibcomm_strerror(st),
		(long long)lat, ibcomm_last_error(comm));
	if (st != IBCOMM_ERR_ABORTED)
		hx_fail("the barrier returned %d (%s), expected IBCOMM_ERR_ABORTED", (int)st, ibcomm_strerror(st));
	if (lat > fp.abort_bound_ms)
		hx_fail("the barrier returned %lld ms after the abort (bound %ld ms)", (long long)lat, fp.abort_bound_ms);
	st = ibcomm_allreduce(comm, &lat, &lat, 1, IBCOMM_INT64, IBCOMM_SUM);
	if (st != IBCOMM_ERR_ABORTED)
		hx_fail("a call after the abort returned %d, expected IBCOMM_ERR_ABORTED", (int)st);
	/*
	 * ibcomm_abort is async-signal-safe, so it leaves errno as it was, even when its wake-up
	 * pipes are full (nobody drains them now) and their writes fail with EAGAIN.
	 */
	for (int i = 0; i < 70000; i++) {
		errno = EDOM;
		ibcomm_abort(comm);
		if (errno != EDOM) {
			hx_fail("ibcomm_abort changed errno to %d (%s) on its call #%d", errno, strerror(errno), i + 2);
			break;
		}
	}
	bump(&fs->reported);
	ibcomm_destroy(comm);
}

static void test_abort(void)
{
	struct hx_job job = { .name = "abort", .n = 2, .fn = abort_fn, .no_init = true, .timeout_s = fp.job_s };

	shm_reset();
	hx_run_job(&job);
	print_times("ibcomm_abort -> IBCOMM_ERR_ABORTED", 1, -1);
}

/* ---- resources ---- */

static long rss_kib(void)
{
	long pages = 0, rss = 0;
	FILE *f = fopen("/proc/self/statm", "r");

	if (!f)
		return -1;
	if (fscanf(f, "%ld %ld", &pages, &rss) != 2)
		rss = -1;
	fclose(f);
	return rss < 0 ? -1 : rss * (sysconf(_SC_PAGESIZE) / 1024);
}

static void cycles_fn(ibcomm_t *unused, void *arg)
{
	int cycles = fp.cycles, warm = cycles >= 100 ? cycles / 20 : cycles / 4;
	int fds0 = 0;
	size_t heap0 = 0;
	long rss0 = 0;
	int64_t t0 = now_ms();

	(void)unused;
	(void)arg;
	for (int k = 0; k < cycles; k++) {
		ibcomm_t *comm;
		int64_t v = hx_rank + 1;

		/* rank 1 starts a cycle once rank 0's server of the previous one is gone */
		if (hx_rank == 1 && !wait_for(&fs->cycle, k, 10000)) {
			hx_fail("cycle %d: rank 0 did not finish the previous cycle", k);
			return;
		}
		if (k == warm) {
			fds0 = hx_count_fds();
			heap0 = mallinfo2().uordblks;
			rss0 = rss_kib();
		}
		comm = fault_init(20000);
		if (!comm) {
			hx_fail("cycle %d: init failed", k);
			return;
		}
		if (!hx_ok(comm, ibcomm_allreduce(comm, &v, &v, 1, IBCOMM_INT64, IBCOMM_SUM), "allreduce") || v != 3)
			hx_fail("cycle %d: allreduce gave %lld", k, (long long)v);
		hx_ok(comm, ibcomm_destroy(comm), "destroy");
		if (hx_rank == 0)
			bump(&fs->cycle);
		if (hx_failures())
			return;
	}
	{
		int fds = hx_count_fds();
		size_t heap = mallinfo2().uordblks;
		long rss = rss_kib();

		fprintf(stderr,
			"    rank %d: %d cycles in %lld ms; after %d warm-up cycles: fds %d -> %d, heap %zu -> %zu bytes, RSS %ld -> %ld KiB\n",
			hx_rank, cycles, (long long)(now_ms() - t0), warm, fds0, fds, heap0, heap, rss0, rss);
		if (fds != fds0)
			hx_fail("open file descriptors went from %d to %d over %d cycles", fds0, fds, cycles - warm);
		/*
		 * Under AddressSanitizer freed memory stays in its quarantine and malloc is not
		 * glibc's: memory is not measurable there, and LeakSanitizer checks leaks instead.
		 */
		if (!running_under_asan()) {
			if (heap > heap0 + 64 * 1024)
				hx_fail("the heap grew from %zu to %zu bytes over %d cycles", heap0, heap, cycles - warm);
			if (rss > rss0 + 4096)
				hx_fail("RSS grew from %ld to %ld KiB over %d cycles", rss0, rss, cycles - warm);
		}
	}
}

static void test_cycles(void)
{
	struct hx_job job = { .name = "init/destroy cycles", .n = 2, .fn = cycles_fn, .no_init = true,
			      .timeout_s = fp.rdma ? fp.job_s : 120 };

	shm_reset();
	hx_run_job(&job);
}

/* ---- CPU while waiting ---- */

static double cpu_s(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
	       ru.ru_stime.tv_usec / 1e6;
}

static void idle_fn(ibcomm_t *comm, void *arg)
{
	double c0, c1;
	int64_t t0, dt;

	(void)arg;
	hx_ok(comm, ibcomm_barrier(comm), "first barrier");
	if (hx_rank == hx_size - 1)
		sleep(3);
	c0 = cpu_s();
	t0 = now_ms();
	hx_ok(comm, ibcomm_barrier(comm), "long barrier");
	dt = now_ms() - t0;
	c1 = cpu_s();
	if (hx_rank == hx_size - 1)
		return;
	fprintf(stderr, "    rank %d: waited %lld ms in the barrier using %.1f ms of CPU (%.2f%% of a core)\n", hx_rank,
		(long long)dt, (c1 - c0) * 1e3, dt ? 100.0 * (c1 - c0) * 1e3 / (double)dt : 0.0);
	if (dt < 2500)
		hx_fail("the barrier returned after %lld ms, before the late rank entered", (long long)dt);
	else if ((c1 - c0) * 1e3 > 0.10 * (double)dt)
		hx_fail("waiting %lld ms used %.1f ms of CPU (over 10%% of a core)", (long long)dt, (c1 - c0) * 1e3);
}

static void test_idle_cpu(void)
{
	struct hx_job job = { .name = "idle barrier", .n = 3, .fn = idle_fn, .timeout_s = fp.job_s };

	hx_run_job(&job);
}

/* ---- RDMA: a QP forced into the error state in the middle of an allreduce ---- */

#define QPERR_RANK 1   /* the rank whose QP fails (not rank 0: its exit would also end the rendezvous) */
#define QPERR_AFTER 60 /* its 60th put: in its third 1 MiB allreduce or so */

static bool names_qp(const char *msg)
{
	return strstr(msg, "QP 0x") != NULL;
}

/* The faulty rank, in a grandchild: fails, checks its error, destroys and stays alive until the others report. */
static void qperr_victim(float *buf)
{
	char after[16];
	ibcomm_t *comm;
	ibcomm_status_t st;
	const char *msg;
	int64_t t0 = 0, dt;
	int i;

	snprintf(after, sizeof(after), "%d", QPERR_AFTER);
	setenv("IBCOMM_TEST_QP_ERROR_AFTER", after, 1);
	comm = fault_init(20000);
	if (!comm)
		_exit(hx_failures() ? 1 : 2);
	for (i = 0, st = IBCOMM_OK; i < 1000 && !st; i++) {
		t0 = now_ms();
		st = ibcomm_allreduce(comm, buf, buf, fp.kill_count, IBCOMM_FLOAT32, IBCOMM_MAX);
	}
	dt = now_ms() - t0;
	fs->fault_ms = now_ms();
	msg = ibcomm_last_error(comm);
	fprintf(stderr, "    rank %d (its QP forced into the error state): %s in allreduce #%d, %lld ms after it began: %s\n",
		hx_rank, ibcomm_strerror(st), i - 1, (long long)dt, msg);
	if (st != IBCOMM_ERR_TRANSPORT && st != IBCOMM_ERR_PEER)
		hx_fail("the faulty rank's allreduce returned %d (%s), expected IBCOMM_ERR_TRANSPORT or _PEER: %s",
			(int)st, ibcomm_strerror(st), msg);
	else if (!names_qp(msg) || !strstr(msg, "peer "))
		hx_fail("the faulty rank's error does not name the peer and the QP: %s", msg);
	st = ibcomm_barrier(comm);
	if (st != IBCOMM_ERR_TRANSPORT && st != IBCOMM_ERR_PEER)
		hx_fail("a call after the failure returned %d, expected the same failure", (int)st);
	/*
	 * The process lives on after destroying its broken communicator: a failed communicator
	 * leaves the rendezvous without a goodbye, so the others hear of it at once (they would
	 * get no RDMA completion from this rank otherwise).
	 */
	if (ibcomm_destroy(comm) != IBCOMM_OK)
		hx_fail("ibcomm_destroy of the failed communicator: %s", ibcomm_last_error(NULL));
	if (!wait_for(&fs->reported, hx_size - 1, 30000))
		hx_fail("the other ranks did not report while the faulty rank stayed alive");
	_exit(hx_failures() ? 1 : 0);
}

static void qperr_fn(ibcomm_t *unused, void *arg)
{
	float *buf;
	ibcomm_t *comm;
	ibcomm_status_t st;
	const char *msg;
	int64_t lat;

	(void)unused;
	(void)arg;
	buf = calloc(fp.kill_count, sizeof(float));
	if (!buf) {
		hx_fail("out of memory");
		return;
	}
	if (hx_rank == QPERR_RANK) {
		int ws = 0;
		pid_t pid = fork();

		if (pid == 0)
			qperr_victim(buf);
		if (pid < 0 || waitpid(pid, &ws, 0) != pid || !WIFEXITED(ws) || WEXITSTATUS(ws) != 0)
			hx_fail("the faulty rank (a grandchild) failed its checks or died (wait status 0x%x)", ws);
		free(buf);
		return;
	}
	comm = fault_init(20000);
	if (!comm) {
		free(buf);
		return;
	}
	st = allreduce_loop(comm, buf);
	lat = fs->fault_ms ? now_ms() - fs->fault_ms : 0; /* 0: it failed first */
	msg = ibcomm_last_error(comm);
	fs->lat_ms[hx_rank] = lat;
	fprintf(stderr, "    rank %d: %s %lld ms after rank %d's call failed (after %d allreduces): %s\n", hx_rank,
		ibcomm_strerror(st), (long long)lat, QPERR_RANK, fs->iters[hx_rank], msg);
	if (st != IBCOMM_ERR_TRANSPORT && st != IBCOMM_ERR_PEER)
		hx_fail("the allreduce loop returned %d (%s), expected IBCOMM_ERR_TRANSPORT or _PEER: %s", (int)st,
			ibcomm_strerror(st), msg);
	else if (!names_rank(msg, QPERR_RANK) || !names_qp(msg))
		hx_fail("the error does not name rank %d and a QP: %s", QPERR_RANK, msg);
	if (lat > fp.kill_bound_ms)
		hx_fail("the error came %lld ms after the faulty rank's (bound %ld ms)", (long long)lat, fp.kill_bound_ms);
	bump(&fs->reported);
	if (!wait_for(&fs->reported, hx_size - 1, 30000))
		hx_fail("the other ranks did not report");
	ibcomm_destroy(comm);
	free(buf);
}

static void test_qp_error(void)
{
	struct hx_job job = { .name = "QP error", .n = 4, .fn = qperr_fn, .no_init = true, .timeout_s = fp.job_s };

	if (!fp.rdma) {
		cm_skip("needs the RDMA transport (HX_TRANSPORT=rdma, in tests/rxe/rxe-run)");
		return;
	}
#ifndef IBCOMM_TEST_HOOKS
	fprintf(stderr, "    skipped: needs the test hook IBCOMM_TEST_QP_ERROR_AFTER (configure --enable-test-hooks)\n");
	return;
#endif
	shm_reset();
	hx_run_job(&job);
	print_times("QP error on rank 1 -> error on the others", 4, QPERR_RANK);
}

int main(int argc, char **argv)
{
	static const struct cm_test tests[] = {
		{ "kill -9 rank 2 of 4 during allreduce", test_kill_rank2 },
		{ "kill -9 rank 0 (rendezvous server) during allreduce", test_kill_rank0 },
		{ "kill -9 ranks 2 and 3 at once: errors name both", test_kill_ranks23 },
		{ "timeout names the op, seq and missing rank", test_timeout },
		{ "abort from another thread unblocks a barrier", test_abort },
		{ "init/destroy cycles (1000; RDMA 20): fds and memory flat", test_cycles },
		{ "waiting in a barrier uses little CPU", test_idle_cpu },
		{ "RDMA: a QP forced into the error state mid-allreduce", test_qp_error },
	};

	fault_params();
	fs = mmap(NULL, sizeof(*fs), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (fs == MAP_FAILED)
		return 99;
	return CM_MAIN1(argc, argv, "fault", tests);
}
