/* Multi-rank test harness: see harness.h. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "algo/algo.h"
#include "harness.h"

/* The transport the jobs run on: HX_TRANSPORT (the Soft-RoCE harness sets rdma), else tcp. */
static const char *cfg_transport(void)
{
	const char *tp = getenv("HX_TRANSPORT");

	return tp && *tp ? tp : "tcp";
}

/* What ibcomm_transport() must say: HX_EXPECT_TRANSPORT (for HX_TRANSPORT=auto), else the forced one. */
static const char *expect_transport(void)
{
	const char *tp = getenv("HX_EXPECT_TRANSPORT");

	return tp && *tp ? tp : cfg_transport();
}

int hx_rank = -1, hx_size;

/*
 * HX_FAKE_HOSTS="A,B,A,B" (builds with --enable-test-hooks): rank r pretends to run on host
 * number r modulo the list's length (IBCOMM_TEST_HOST), so one machine tests the host-aware
 * algorithms (tests/coll/hosts-suite).
 */
static bool fake_host_name(int rank, char host[64])
{
	const char *list = getenv("HX_FAKE_HOSTS");
	int n = 1;
	size_t len;

	if (!list || !*list)
		return false;
	for (const char *c = list; *c; c++)
		n += *c == ',';
	for (int k = rank % n; k > 0; k--)
		list = strchr(list, ',') + 1;
	len = strcspn(list, ",");
	len = len < 63 ? len : 63;
	memcpy(host, list, len);
	host[len] = '\0';
	return true;
}

static void fake_host(int rank)
{
	char host[64];

	if (fake_host_name(rank, host))
		setenv("IBCOMM_TEST_HOST", host, 1);
}

/* The pretended hosts took effect: two ranks share a host in comm's map exactly when their names match. */
static void check_fake_hosts(ibcomm_t *comm)
{
	const int *host_of = comm->hosts.host_of;
	char a[64], b[64];

	if (!fake_host_name(0, a))
		return;
	if (!host_of) {
		hx_fail("HX_FAKE_HOSTS is set but the communicator has no host map");
		return;
	}
	for (int q = 1; q < comm->size; q++)
		for (int r = 0; r < q; r++) {
			fake_host_name(q, a);
			fake_host_name(r, b);
			if ((host_of[q] == host_of[r]) != !strcmp(a, b))
				hx_fail("HX_FAKE_HOSTS: ranks %d (%s) and %d (%s) are %s in the host map", q, a, r, b,
					host_of[q] == host_of[r] ? "on one host" : "on different hosts");
		}
}

const char *const hx_small_chunks_env[] = { "IBCOMM_TCP_CHUNK=1000", "IBCOMM_TCP_SLOTS=2", "IBCOMM_SHM_CHUNK=1000",
						 "IBCOMM_SHM_SLOTS=2", "HX_LARGE=1", NULL };
char hx_root[64];
volatile int *hx_scratch;

/* Shared between the parent and the ranks of a job. */
struct hx_shm {
	volatile int cases[HX_MAX_RANKS];
	volatile int fails[HX_MAX_RANKS];
	volatile int scratch[HX_SCRATCH];
};
static struct hx_shm *shm;
static int nfails, nprinted;

long hx_env_long(const char *name, long def)
{
	const char *s = getenv(name);
	char *end;
	long v;

	if (!s || !*s)
		return def;
	v = strtol(s, &end, 10);
	return *end ? def : v;
}

int hx_nmin(void)
{
	long v = hx_env_long("HX_NMIN", 1);
	return v < 1 ? 1 : v > HX_MAX_RANKS ? HX_MAX_RANKS : (int)v;
}

int hx_nmax(void)
{
	long v = hx_env_long("HX_NMAX", HX_MAX_RANKS);
	return v < 1 ? 1 : v > HX_MAX_RANKS ? HX_MAX_RANKS : (int)v;
}

void hx_fail(const char *fmt, ...)
{
	char line[1024];
	va_list ap;
	int k;

	nfails++;
	if (shm && hx_rank >= 0)
		shm->fails[hx_rank] = nfails;
	if (nprinted >= HX_MAX_FAILS_PRINTED)
		return;
	nprinted++;
	/* One write per line: the ranks print concurrently. */
	k = snprintf(line, sizeof(line), "[rank %d] FAIL: ", hx_rank);
	va_start(ap, fmt);
	k += vsnprintf(line + k, sizeof(line) - (size_t)k - 1, fmt, ap);
	va_end(ap);
	if (k > (int)sizeof(line) - 2)
		k = (int)sizeof(line) - 2;
	line[k++] = '\n';
	if (nprinted == HX_MAX_FAILS_PRINTED)
		k += snprintf(line + k, sizeof(line) - (size_t)k, "[rank %d] (further failures not printed)\n",
			      hx_rank);
	fflush(stderr);
	if (write(STDERR_FILENO, line, (size_t)IBC_MIN(k, (int)sizeof(line) - 1)) < 0)
		return;
}

void hx_case_done(void)
{
	if (shm && hx_rank >= 0)
		shm->cases[hx_rank]++;
}

int hx_failures(void)
{
	return nfails;
}

bool hx_ok(ibcomm_t *comm, ibcomm_status_t st, const char *what)
{
	if (st == IBCOMM_OK)
		return true;
	hx_fail("%s returned %d (%s): %s", what, (int)st, ibcomm_strerror(st), ibcomm_last_error(comm));
	return false;
}

bool hx_oom(void)
{
	hx_fail("test: out of memory");
	return false;
}

/* ---- processes ---- */
static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A free port on 127.0.0.1: bind port 0, read it, release it. */
static int pick_port(void)
{
	struct sockaddr_in sa;
	socklen_t sl = sizeof(sa);
	int fd, port = -1;

	fd = socket(AF_INET, SOCK_STREAM, 0);
	if (fd < 0)
		return -1;
	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
	    getsockname(fd, (struct sockaddr *)&sa, &sl) == 0)
		port = ntohs(sa.sin_port);
	close(fd);
	return port;
}

static void child_main(const struct hx_job *job, int rank, const sigset_t *oldmask)
{
	ibcomm_t *comm = NULL;
	ibcomm_status_t st;
	char buf[32];

	sigprocmask(SIG_SETMASK, oldmask, NULL);
	hx_rank = rank;
	hx_size = job->n;
	hx_scratch = shm->scratch;
	nfails = 0;
	nprinted = 0;
	for (const char *const *e = job->env; e && *e; e++) {
		char name[64];
		const char *eq = strchr(*e, '=');

		if (!eq || (size_t)(eq - *e) >= sizeof(name))
			continue;
		memcpy(name, *e, (size_t)(eq - *e));
		name[eq - *e] = '\0';
		setenv(name, eq + 1, 1);
	}
	fake_host(rank);
	if (!job->no_init) {
		if (job->use_env) {
			snprintf(buf, sizeof(buf), "%d", rank);
			setenv("IBCOMM_RANK", buf, 1);
			snprintf(buf, sizeof(buf), "%d", job->n);
			setenv("IBCOMM_SIZE", buf, 1);
			setenv("IBCOMM_ROOT", hx_root, 1);
			if (!getenv("IBCOMM_TIMEOUT_MS"))
				setenv("IBCOMM_TIMEOUT_MS", "60000", 1);
			if (!getenv("IBCOMM_TRANSPORT"))
				setenv("IBCOMM_TRANSPORT", cfg_transport(), 1);
			st = ibcomm_init_env(&comm);
		} else {
			ibcomm_config_t cfg = IBCOMM_CONFIG_INIT;

			cfg.rank = rank;
			cfg.nranks = job->n;
			cfg.root = hx_root;
			cfg.transport = cfg_transport();
			cfg.timeout_ms = hx_env_long("HX_TIMEOUT_MS", 60000);
			st = ibcomm_init(&cfg, &comm);
		}
		if (st != IBCOMM_OK) {
			const char *msg = ibcomm_last_error(NULL);

			if (st == IBCOMM_ERR_RENDEZVOUS &&
			    (strstr(msg, "EADDRINUSE") || strstr(msg, "in use") || strstr(msg, strerror(EADDRINUSE))))
				_exit(HX_EXIT_RETRY);
			fprintf(stderr, "[rank %d] FAIL: ibcomm_init (n=%d, root %s) returned %d (%s): %s\n", rank,
				job->n, hx_root, (int)st, ibcomm_strerror(st), msg);
			_exit(HX_EXIT_INIT);
		}
		if (ibcomm_rank(comm) != rank || ibcomm_size(comm) != job->n)
			hx_fail("ibcomm_rank/size = %d/%d, expected %d/%d", ibcomm_rank(comm), ibcomm_size(comm),
				rank, job->n);
		if (strcmp(ibcomm_transport(comm), expect_transport()))
			hx_fail("ibcomm_transport() = %s, expected %s", ibcomm_transport(comm), expect_transport());
	}
	if (comm)
		check_fake_hosts(comm);
	job->fn(comm, job->arg);
	if (comm) {
		/* Quiesce before tearing down (rank 0 serves the rendezvous). */
		if (!job->no_final_barrier && !comm->failed && !atomic_load(&comm->aborted)) {
			hx_force_algo(comm, IBC_COLL_BARRIER, IBC_ALGO_AUTO);
			hx_ok(comm, ibcomm_barrier(comm), "final ibcomm_barrier");
			/* the payload really went through the transport asked for (RDMA: by RDMA WRITE) */
			if (job->n > 1 && !comm->tp->cnt.puts)
				hx_fail("the %s transport counted no chunk written", ibcomm_transport(comm));
			if (hx_env_long("HX_HOSTS", 0) == 1) {
				char host[64] = "?";

				gethostname(host, sizeof(host) - 1);
				fprintf(stderr, "  [%s] rank %d on %s: %s transport wrote %llu chunks, %llu bytes\n", job->name,
					rank, host, ibcomm_transport(comm), (unsigned long long)comm->tp->cnt.puts,
					(unsigned long long)comm->tp->cnt.bytes_put);
			}
		}
		hx_ok(NULL, ibcomm_destroy(comm), "ibcomm_destroy");
	}
	fflush(stdout);
	fflush(stderr);
	/* exit, not _exit: as in a program returning from main, rank 0's rendezvous server serves
	 * on (the library's exit handler) until the others, maybe still in the final barrier and
	 * looking up a peer's address through it, have left */
	exit(nfails > 100 ? 100 : nfails);
}

static void kill_all(const pid_t *pids, const bool *done, int n)
{
	for (int i = 0; i < n; i++)
		if (pids[i] > 0 && !done[i])
			kill(pids[i], SIGKILL);
}

/* One attempt: returns the number of failed ranks, or -1 to retry with another port. */
static int run_once(const struct hx_job *job, int timeout_s, char *why, size_t whylen)
{
	pid_t pids[HX_MAX_RANKS] = { 0 };
	bool done[HX_MAX_RANKS] = { false };
	int status[HX_MAX_RANKS] = { 0 };
	sigset_t chld, old;
	int alive = 0, bad = 0, port;
	bool retry = false, timed_out = false;
	double deadline;

	port = pick_port();
	if (port <= 0) {
		snprintf(why, whylen, "no free port: %s", strerror(errno));
		return job->n;
	}
	snprintf(hx_root, sizeof(hx_root), "127.0.0.1:%d", port);
	memset((void *)shm, 0, sizeof(*shm));

	sigemptyset(&chld);
	sigaddset(&chld, SIGCHLD);
	sigprocmask(SIG_BLOCK, &chld, &old);
	fflush(NULL);
	for (int r = 0; r < job->n; r++) {
		pid_t pid = fork();

		if (pid == 0)
			child_main(job, r, &old);
		if (pid < 0) {
			snprintf(why, whylen, "fork: %s", strerror(errno));
			kill_all(pids, done, r);
			for (int i = 0; i < r; i++)
				waitpid(pids[i], NULL, 0);
			sigprocmask(SIG_SETMASK, &old, NULL);
			return job->n;
		}
		pids[r] = pid;
		alive++;
	}

	deadline = now_s() + timeout_s;
	while (alive > 0) {
		struct timespec ts;
		double left;

		for (int r = 0; r < job->n; r++) {
			int ws;

			if (done[r] || waitpid(pids[r], &ws, WNOHANG) != pids[r])
				continue;
			done[r] = true;
			status[r] = ws;
			alive--;
			/* A rank that could not start or crashed: the others cannot finish. */
			if (!WIFEXITED(ws) || WEXITSTATUS(ws) > 100) {
				if (WIFEXITED(ws) && WEXITSTATUS(ws) == HX_EXIT_RETRY)
					retry = true;
				kill_all(pids, done, job->n);
			}
		}
		if (alive == 0)
			break;
		left = deadline - now_s();
		if (left <= 0) {
			if (!timed_out) {
				timed_out = true;
				kill_all(pids, done, job->n);
				deadline = now_s() + 30;
				continue;
			}
			break; /* unkillable: give up */
		}
		ts.tv_sec = left > 1 ? 1 : 0;
		ts.tv_nsec = left > 1 ? 0 : (long)(left * 1e9);
		sigtimedwait(&chld, NULL, &ts);
	}
	/* Consume a pending SIGCHLD before unblocking (default action is ignore anyway). */
	sigprocmask(SIG_SETMASK, &old, NULL);

	if (retry && !timed_out)
		return -1;
	why[0] = '\0';
	for (int r = 0; r < job->n; r++) {
		char one[96];
		int ws = status[r];

		if (!done[r])
			snprintf(one, sizeof(one), " rank %d: still running after SIGKILL;", r);
		else if (WIFSIGNALED(ws))
			snprintf(one, sizeof(one), " rank %d: killed by signal %d%s;", r, WTERMSIG(ws),
				 timed_out && WTERMSIG(ws) == SIGKILL ? " (job timed out)" : "");
		else if (WEXITSTATUS(ws) == HX_EXIT_INIT)
			snprintf(one, sizeof(one), " rank %d: ibcomm_init failed;", r);
		else if (WEXITSTATUS(ws) == HX_EXIT_RETRY)
			snprintf(one, sizeof(one), " rank %d: rendezvous port in use;", r);
		else if (WEXITSTATUS(ws) == HX_EXIT_INTERNAL)
			snprintf(one, sizeof(one), " rank %d: test error;", r);
		else if (WEXITSTATUS(ws) != 0)
			snprintf(one, sizeof(one), " rank %d: %d failures;", r, shm->fails[r]);
		else
			continue;
		bad++;
		if (strlen(why) + strlen(one) < whylen)
			strcat(why, one);
	}
	if (timed_out)
		fprintf(stderr, "  [%s] n=%d: TIMEOUT after %d s: killed every rank\n", job->name, job->n,
			timeout_s);
	return bad;
}

/*
 * Across hosts (HX_HOSTS=1, tests/hosts): this process is the one rank IBCOMM_RANK of a job of
 * IBCOMM_SIZE ranks whose other ranks run the same program on other hosts; IBCOMM_ROOT=host:port
 * is rank 0's address. Only the jobs of that size run (every rank meets the same ones, in
 * order); job k rendezvouses on port + k, so a rank never joins the previous job's server.
 * The ranks share no memory: hx_scratch is this rank's own. Returns the failed-rank count
 * (0 or 1), or -2 when the job is not run here.
 */
static int run_hosts(const struct hx_job *job, int timeout_s, char *why, size_t whylen)
{
	static int seq;
	long rank = hx_env_long("IBCOMM_RANK", -1), size = hx_env_long("IBCOMM_SIZE", -1);
	const char *root = getenv("IBCOMM_ROOT"), *colon = root ? strrchr(root, ':') : NULL;
	sigset_t chld, old;
	double deadline;
	pid_t pid;
	int ws = 0;
	bool finished = false;

	if (rank < 0 || rank >= size || !colon || colon - root >= (long)sizeof(hx_root) - 8) {
		snprintf(why, whylen, " HX_HOSTS=1 needs IBCOMM_RANK, IBCOMM_SIZE and IBCOMM_ROOT=host:port");
		return 1;
	}
	if (job->n != size || job->no_init)
		return -2;
	snprintf(hx_root, sizeof(hx_root), "%.*s:%ld", (int)(colon - root), root, atol(colon + 1) + seq++ % 1000);
	memset((void *)shm, 0, sizeof(*shm));
	sigemptyset(&chld);
	sigaddset(&chld, SIGCHLD);
	sigprocmask(SIG_BLOCK, &chld, &old);
	fflush(NULL);
	pid = fork();
	if (pid == 0)
		child_main(job, (int)rank, &old);
	if (pid < 0) {
		sigprocmask(SIG_SETMASK, &old, NULL);
		snprintf(why, whylen, " fork: %s", strerror(errno));
		return 1;
	}
	deadline = now_s() + timeout_s;
	while (!finished) {
		struct timespec ts = { 1, 0 };

		if (waitpid(pid, &ws, WNOHANG) == pid) {
			finished = true;
			break;
		}
		if (now_s() > deadline) {
			kill(pid, SIGKILL);
			waitpid(pid, &ws, 0);
			snprintf(why, whylen, " rank %ld: TIMEOUT after %d s: killed", rank, timeout_s);
			sigprocmask(SIG_SETMASK, &old, NULL);
			return 1;
		}
		sigtimedwait(&chld, NULL, &ts);
	}
	sigprocmask(SIG_SETMASK, &old, NULL);
	if (WIFEXITED(ws) && WEXITSTATUS(ws) == 0)
		return 0;
	if (WIFSIGNALED(ws))
		snprintf(why, whylen, " rank %ld: killed by signal %d", rank, WTERMSIG(ws));
	else
		snprintf(why, whylen, " rank %ld: exit %d (%d failures; 101: init failed)", rank, WEXITSTATUS(ws),
			 shm->fails[rank < HX_MAX_RANKS ? rank : 0]);
	return 1;
}

bool hx_run_job(const struct hx_job *job)
{
	int timeout_s = job->timeout_s ? job->timeout_s : (int)hx_env_long("HX_JOB_TIMEOUT_S", 120);
	char why[1024] = "";
	double t0 = now_s();
	int bad = -1, cases = 0;

	if (job->n < 1 || job->n > HX_MAX_RANKS) {
		CU_FAIL("bad rank count");
		return false;
	}
	if (!shm) {
		shm = mmap(NULL, sizeof(*shm), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
		if (shm == MAP_FAILED) {
			shm = NULL;
			CU_FAIL("mmap");
			return false;
		}
	}
	if (hx_env_long("HX_HOSTS", 0) == 1) {
		bad = run_hosts(job, timeout_s, why, sizeof(why));
		if (bad == -2)
			return true; /* another size: not this job's hosts */
		for (int r = 0; r < HX_MAX_RANKS; r++)
			cases = shm->cases[r] > cases ? shm->cases[r] : cases;
		fprintf(stderr, "  [%s] n=%d across hosts, rank %s: %d cases, %.1f s%s%s\n", job->name, job->n,
			getenv("IBCOMM_RANK"), cases, now_s() - t0, bad ? ": FAILED:" : "", why);
		CU_ASSERT_EQUAL(bad, 0);
		return bad == 0;
	}
	int attempt;

	for (attempt = 0; attempt < 5 && bad < 0; attempt++)
		bad = run_once(job, timeout_s, why, sizeof(why));
	if (bad < 0) {
		bad = job->n;
		snprintf(why, sizeof(why), " rendezvous port in use 5 times");
	}
	for (int r = 0; r < job->n; r++)
		cases = shm->cases[r] > cases ? shm->cases[r] : cases;
	fprintf(stderr, "  [%s] n=%d: %d cases, %.1f s%s%s%s\n", job->name, job->n, cases, now_s() - t0,
		attempt > 1 ? " (rendezvous port was taken: retried)" : "", bad ? ": FAILED:" : "", why);
	CU_ASSERT_EQUAL(bad, 0);
	return bad == 0;
}

/* ---- datatypes ---- */
const char *const hx_dtype_names[IBCOMM_DTYPE_COUNT] = {
	"int8", "uint8", "int32", "uint32", "int64", "uint64", "fp16", "bf16", "fp32", "fp64",
};
const char *const hx_op_names[IBCOMM_OP_COUNT] = { "sum", "prod", "min", "max", "avg" };

const char *hx_algo_name(int algo)
{
	static const char *const names[IBC_ALGO_COUNT] = {
		[IBC_ALGO_AUTO] = "auto",         [IBC_ALGO_RING] = "ring",
		[IBC_ALGO_RD] = "rd",             [IBC_ALGO_TREE] = "tree",
		[IBC_ALGO_PIPELINE] = "pipeline", [IBC_ALGO_LINEAR] = "linear",
		[IBC_ALGO_PAIRWISE] = "pairwise", [IBC_ALGO_DISSEM] = "dissem",
		[IBC_ALGO_HIER] = "hier",
	};
	return algo >= 0 && algo < IBC_ALGO_COUNT && names[algo] ? names[algo] : "?";
}

static const char *coll_name(int coll)
{
	static const char *const names[IBC_COLL_COUNT] = {
		"allreduce", "broadcast", "reduce", "allgather", "reduce_scatter",
		"gather", "scatter", "alltoall", "barrier", "allgatherv", "alltoallv",
	};
	return coll >= 0 && coll < IBC_COLL_COUNT ? names[coll] : "?";
}

/* This process's open file descriptors (-1 if /proc cannot tell). */
int hx_count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int n = 0;

	if (!d)
		return -1;
	while ((e = readdir(d)))
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n - 1; /* the directory's own */
}

size_t hx_esize(ibcomm_dtype_t dt)
{
	static const size_t sz[IBCOMM_DTYPE_COUNT] = { 1, 1, 4, 4, 8, 8, 2, 2, 4, 8 };
	return (int)dt >= 0 && dt < IBCOMM_DTYPE_COUNT ? sz[dt] : 0;
}

bool hx_is_float(ibcomm_dtype_t dt)
{
	return dt >= IBCOMM_FLOAT16;
}

bool hx_is_unsigned(ibcomm_dtype_t dt)
{
	return dt == IBCOMM_UINT8 || dt == IBCOMM_UINT32 || dt == IBCOMM_UINT64;
}

/* Sign, exponent and mantissa bits of the integer v for a binary format (exact or abort). */
static uint16_t small_float_bits(int64_t v, int ebias, int mbits, const char *fmt)
{
	uint16_t sign = v < 0 ? 0x8000 : 0;
	uint64_t m = v < 0 ? -(uint64_t)v : (uint64_t)v;
	int e;

	if (m == 0)
		return sign;
	e = 63 - __builtin_clzll(m);
	if (e > mbits && (m & ((1ULL << (e - mbits)) - 1))) {
		fprintf(stderr, "[rank %d] test bug: %lld not exact in %s\n", hx_rank, (long long)v, fmt);
		_exit(HX_EXIT_INTERNAL);
	}
	m = e <= mbits ? m << (mbits - e) : m >> (e - mbits);
	return (uint16_t)(sign | (uint16_t)((e + ebias) << mbits) | (uint16_t)(m & ((1u << mbits) - 1)));
}

uint16_t hx_fp16_of_int(int64_t v)
{
	return small_float_bits(v, 15, 10, "fp16");
}

uint16_t hx_bf16_of_int(int64_t v)
{
	return small_float_bits(v, 127, 7, "bf16");
}

static double small_float_value(uint16_t h, int ebits, int mbits)
{
	int bias = (1 << (ebits - 1)) - 1;
	int e = (h >> mbits) & ((1 << ebits) - 1);
	double m = h & ((1u << mbits) - 1);
	double v;

	if (e == (1 << ebits) - 1)
		v = m ? __builtin_nan("") : __builtin_inf();
	else if (e == 0)
		v = __builtin_ldexp(m, 1 - bias - mbits);
	else
		v = __builtin_ldexp(m + (double)(1u << mbits), e - bias - mbits);
	return h & 0x8000 ? -v : v;
}

double hx_fp16_to_double(uint16_t h)
{
	return small_float_value(h, 5, 10);
}

double hx_bf16_to_double(uint16_t h)
{
	return small_float_value(h, 8, 7);
}

void hx_encode(ibcomm_dtype_t dt, int64_t v, void *dst)
{
	switch (dt) {
	case IBCOMM_INT8:
	case IBCOMM_UINT8: {
		uint8_t x = (uint8_t)v;
		memcpy(dst, &x, 1);
		break;
	}
	case IBCOMM_INT32:
	case IBCOMM_UINT32: {
		uint32_t x = (uint32_t)v;
		memcpy(dst, &x, 4);
		break;
	}
	case IBCOMM_INT64:
	case IBCOMM_UINT64:
		memcpy(dst, &v, 8);
		break;
	case IBCOMM_FLOAT16: {
		uint16_t x = hx_fp16_of_int(v);
		memcpy(dst, &x, 2);
		break;
	}
	case IBCOMM_BFLOAT16: {
		uint16_t x = hx_bf16_of_int(v);
		memcpy(dst, &x, 2);
		break;
	}
	case IBCOMM_FLOAT32: {
		float x = (float)v;
		memcpy(dst, &x, 4);
		break;
	}
	case IBCOMM_FLOAT64: {
		double x = (double)v;
		memcpy(dst, &x, 8);
		break;
	}
	default:
		break;
	}
}

void hx_format(ibcomm_dtype_t dt, const void *p, char *buf, size_t len)
{
	const unsigned char *b = p;
	size_t esz = hx_esize(dt), n = 0;
	uint64_t u = 0;

	n += snprintf(buf + n, len - n, "0x");
	for (size_t i = esz; i-- > 0 && n < len;)
		n += snprintf(buf + n, len - n, "%02x", b[i]);
	memcpy(&u, p, esz);
	if (n >= len)
		return;
	switch (dt) {
	case IBCOMM_INT8:
		snprintf(buf + n, len - n, " (%d)", (int)(int8_t)u);
		break;
	case IBCOMM_INT32:
		snprintf(buf + n, len - n, " (%d)", (int)(int32_t)u);
		break;
	case IBCOMM_INT64:
		snprintf(buf + n, len - n, " (%lld)", (long long)(int64_t)u);
		break;
	case IBCOMM_UINT8:
	case IBCOMM_UINT32:
	case IBCOMM_UINT64:
		snprintf(buf + n, len - n, " (%llu)", (unsigned long long)u);
		break;
	case IBCOMM_FLOAT16:
		snprintf(buf + n, len - n, " (%g)", hx_fp16_to_double((uint16_t)u));
		break;
	case IBCOMM_BFLOAT16:
		snprintf(buf + n, len - n, " (%g)", hx_bf16_to_double((uint16_t)u));
		break;
	case IBCOMM_FLOAT32: {
		float f;
		memcpy(&f, p, 4);
		snprintf(buf + n, len - n, " (%g)", (double)f);
		break;
	}
	case IBCOMM_FLOAT64: {
		double f;
		memcpy(&f, p, 8);
		snprintf(buf + n, len - n, " (%g)", f);
		break;
	}
	default:
		break;
	}
}

/* ---- the value model ---- */
static uint64_t mix(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdULL;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ULL;
	x ^= x >> 33;
	return x;
}

/* v truncated to dt's width, sign- or zero-extended (integers); unchanged for floats. */
static int64_t canon(ibcomm_dtype_t dt, uint64_t v)
{
	switch (dt) {
	case IBCOMM_INT8:
		return (int8_t)v;
	case IBCOMM_UINT8:
		return (uint8_t)v;
	case IBCOMM_INT32:
		return (int32_t)v;
	case IBCOMM_UINT32:
		return (uint32_t)v;
	default:
		return (int64_t)v;
	}
}

/*
 * Rank r's element j. Integers: SUM, PROD (odd), MIN, MAX and data movement take full-width
 * values (SUM and PROD wrap, MIN/MAX see the sign bit); AVG takes small values whose sum does
 * not overflow (signed ones negative too: truncation toward zero). Floats: small integers so
 * every partial sum/product stays exact in bf16 (|x| <= 256) with 8 ranks.
 */
static int64_t value(ibcomm_dtype_t dt, int op, int r, size_t j, uint32_t seed)
{
	uint64_t h = mix(((uint64_t)seed << 40) ^ ((uint64_t)r << 32) ^ (uint64_t)j ^ 0x5bd1e995ULL);

	if (!hx_is_float(dt)) {
		if (op == IBCOMM_AVG)
			return hx_is_unsigned(dt) ? (int64_t)(h % 31) : (int64_t)(h % 31) - 15;
		return canon(dt, op == IBCOMM_PROD ? h | 1 : h);
	}
	switch (op) {
	case IBCOMM_SUM:
	case IBCOMM_AVG:
		return (int64_t)(h % 17) - 8;
	case IBCOMM_PROD: /* |product| <= 8: +-1 everywhere, 2 only on ranks 0..2 */
		return (h & 1 ? -1 : 1) * (r < 3 && (h & 2) ? 2 : 1);
	case IBCOMM_MIN:
	case IBCOMM_MAX:
		return (int64_t)(h % 201) - 100;
	default: /* data movement: as many distinct values as the format holds exactly */
		switch (dt) {
		case IBCOMM_FLOAT16:
			return (int64_t)(h % 4095) - 2047;
		case IBCOMM_BFLOAT16:
			return (int64_t)(h % 511) - 255;
		case IBCOMM_FLOAT32:
			return (int64_t)(int32_t)(uint32_t)h >> 8;
		default:
			return (int64_t)h >> 11;
		}
	}
}

/* The scalar reference: op over vals[0..n) (canonical values of dt). */
static int64_t reference(ibcomm_dtype_t dt, int op, const int64_t *vals, int n)
{
	bool uns = hx_is_unsigned(dt);
	uint64_t acc = (uint64_t)vals[0];

	for (int r = 1; r < n; r++) {
		uint64_t x = (uint64_t)vals[r];

		switch (op) {
		case IBCOMM_SUM:
		case IBCOMM_AVG:
			acc += x;
			break;
		case IBCOMM_PROD:
			acc *= x;
			break;
		case IBCOMM_MIN:
			if (uns ? x < acc : (int64_t)x < (int64_t)acc)
				acc = x;
			break;
		case IBCOMM_MAX:
			if (uns ? x > acc : (int64_t)x > (int64_t)acc)
				acc = x;
			break;
		}
	}
	if (op == IBCOMM_AVG)
		return uns ? (int64_t)(acc / (uint64_t)n) : (int64_t)acc / n; /* C: toward zero */
	return canon(dt, acc);
}

bool hx_data_init(struct hx_data *d, ibcomm_dtype_t dt, int op, int n, size_t total, uint32_t seed)
{
	int64_t *vals;
	size_t m = total < HX_PERIOD ? total : HX_PERIOD;

	if (m == 0)
		m = 1;
	memset(d, 0, sizeof(*d));
	d->dt = dt;
	d->op = op;
	d->n = n;
	d->m = m;
	d->esz = hx_esize(dt);
	vals = malloc(sizeof(*vals) * (size_t)n * m);
	d->in = malloc((size_t)n * m * d->esz);
	d->ref = malloc(m * d->esz);
	if (!vals || !d->in || !d->ref) {
		free(vals);
		hx_data_free(d);
		return false;
	}
	for (int r = 0; r < n; r++)
		for (size_t j = 0; j < m; j++)
			vals[(size_t)r * m + j] = value(dt, op, r, j, seed);
	if (op == IBCOMM_AVG && hx_is_float(dt)) {
		/* Make the sum a multiple of n so the average is exact: adjust the last rank. */
		for (size_t j = 0; j < m; j++) {
			int64_t s = 0;

			for (int r = 0; r < n; r++)
				s += vals[(size_t)r * m + j];
			vals[(size_t)(n - 1) * m + j] -= ((s % n) + n) % n;
		}
	}
	for (int r = 0; r < n; r++)
		for (size_t j = 0; j < m; j++)
			hx_encode(dt, vals[(size_t)r * m + j], d->in + ((size_t)r * m + j) * d->esz);
	if (op != HX_NOOP) {
		int64_t col[HX_MAX_RANKS];

		for (size_t j = 0; j < m; j++) {
			for (int r = 0; r < n; r++)
				col[r] = vals[(size_t)r * m + j];
			hx_encode(dt, reference(dt, op, col, n), d->ref + j * d->esz);
		}
	}
	free(vals);
	return true;
}

void hx_data_free(struct hx_data *d)
{
	free(d->in);
	free(d->ref);
	d->in = d->ref = NULL;
}

void hx_fill(const struct hx_data *d, const unsigned char *table, void *dst, size_t first, size_t cnt)
{
	unsigned char *out = dst;
	size_t j = first % d->m;

	while (cnt > 0) {
		size_t run = IBC_MIN(cnt, d->m - j);

		memcpy(out, table + j * d->esz, run * d->esz);
		out += run * d->esz;
		cnt -= run;
		j = 0;
	}
}

/* ---- buffers and checks ---- */
bool hx_buf_new(struct hx_buf *b, size_t len)
{
	b->base = malloc(len + 2 * HX_GUARD);
	if (!b->base) {
		b->p = NULL;
		return false;
	}
	memset(b->base, HX_PAT, len + 2 * HX_GUARD);
	b->p = b->base + HX_GUARD;
	b->len = len;
	return true;
}

void hx_buf_free(struct hx_buf *b)
{
	free(b->base);
	b->base = b->p = NULL;
}

void hx_case_str(const struct hx_case *c, char *buf, size_t len)
{
	int k;

	if (c->label)
		k = snprintf(buf, len, "%s n=%d count=%zu dtype=%s", c->label, c->n, c->count, hx_dtype_names[c->dt]);
	else
		k = snprintf(buf, len, "%s algo=%s n=%d count=%zu dtype=%s", coll_name(c->coll), hx_algo_name(c->algo),
			     c->n, c->count, hx_dtype_names[c->dt]);

	if (k < 0 || (size_t)k >= len)
		return;
	if (c->op != HX_NOOP)
		k += snprintf(buf + k, len - k, " op=%s", hx_op_names[c->op]);
	if ((size_t)k < len && c->root >= 0)
		k += snprintf(buf + k, len - k, " root=%d", c->root);
	if ((size_t)k < len)
		snprintf(buf + k, len - k, " %s%s seed=%u", c->inplace ? "in-place" : "out-of-place",
			 c->nullbufs ? " null-unused" : "", c->seed);
}

bool hx_case_ok(ibcomm_t *comm, const struct hx_case *c, ibcomm_status_t st, const char *fn)
{
	char cs[256];

	if (st == IBCOMM_OK)
		return true;
	hx_case_str(c, cs, sizeof(cs));
	hx_fail("%s: %s returned %d (%s): %s", cs, fn, (int)st, ibcomm_strerror(st), ibcomm_last_error(comm));
	return false;
}

bool hx_expect(const struct hx_case *c, const char *what, const struct hx_data *d, const unsigned char *table,
	       const void *buf, size_t first, size_t cnt)
{
	const unsigned char *p = buf;
	size_t j = first % d->m, done = 0, bad_at = 0, nbad = 0;

	while (done < cnt) {
		size_t run = IBC_MIN(cnt - done, d->m - j);

		if (memcmp(p + done * d->esz, table + j * d->esz, run * d->esz)) {
			for (size_t k = 0; k < run; k++)
				if (memcmp(p + (done + k) * d->esz, table + (j + k) * d->esz, d->esz)) {
					if (!nbad)
						bad_at = done + k;
					nbad++;
				}
		}
		done += run;
		j = 0;
	}
	if (nbad) {
		char cs[256], e[64], g[64];

		hx_case_str(c, cs, sizeof(cs));
		hx_format(d->dt, table + ((first + bad_at) % d->m) * d->esz, e, sizeof(e));
		hx_format(d->dt, p + bad_at * d->esz, g, sizeof(g));
		hx_fail("%s: %s: %zu of %zu elements wrong, first at index %zu: expected %s got %s", cs, what, nbad,
			cnt, bad_at, e, g);
		return false;
	}
	return true;
}

bool hx_untouched(const struct hx_case *c, const char *what, const void *p, size_t len)
{
	const unsigned char *b = p;

	for (size_t i = 0; i < len; i++)
		if (b[i] != HX_PAT) {
			char cs[256];

			hx_case_str(c, cs, sizeof(cs));
			hx_fail("%s: %s: byte %zu of %zu was written (0x%02x)", cs, what, i, len, b[i]);
			return false;
		}
	return true;
}

bool hx_guards(const struct hx_case *c, const char *what, const struct hx_buf *b)
{
	char w[96];

	if (!b->base)
		return true;
	snprintf(w, sizeof(w), "%s: guard before the buffer", what);
	if (!hx_untouched(c, w, b->base, HX_GUARD))
		return false;
	snprintf(w, sizeof(w), "%s: guard after the buffer", what);
	return hx_untouched(c, w, b->p + b->len, HX_GUARD);
}

void hx_force_algo(ibcomm_t *comm, int coll, int algo)
{
	comm->set.algo[coll] = (enum ibc_algo)algo;
}

/* ---- case enumeration ---- */
static const size_t small_counts[] = { 0, 1, 7, 100, 1000 };
#define NSMALL (sizeof(small_counts) / sizeof(small_counts[0]))

static bool one_case(ibcomm_t *comm, hx_case_fn run, struct hx_case *c)
{
	static uint32_t seed;
	bool ok;

	c->seed = ++seed;
	c->nullbufs = c->seed & 1;
	hx_force_algo(comm, c->coll, c->algo);
	ok = run(comm, c);
	hx_case_done();
	return ok;
}

/* The plan forces every algorithm that coll has (besides auto). */
static bool plan_forces_all(const struct hx_plan *p)
{
	for (int algo = IBC_ALGO_AUTO + 1; algo < IBC_ALGO_COUNT; algo++) {
		bool forced = false;

		if (!ibc_algo_valid((enum ibc_coll)p->coll, (enum ibc_algo)algo))
			continue;
		for (int a = 0; a < p->nalgos; a++)
			forced |= p->algos[a] == algo;
		if (!forced)
			return false;
	}
	return true;
}

/*
 * Whether algo, on this communicator, only runs what another algorithm of a plan that forces
 * them all runs: auto runs the algorithm it selects (lib/algo/select.c), hier on ranks that do
 * not span hosts with more than one rank on some host runs the flat automatic choice
 * (lib/algo/hier.c). Such a shadow takes every count, dtype and op but one root and in-place
 * mode each (rotating through all of them), and SUM only at the large counts: the same code on
 * the other combinations is checked under the forced algorithm it picks.
 */
static bool shadow_algo(ibcomm_t *comm, const struct hx_plan *p, int algo, bool forces_all)
{
	const struct ibc_hosts *h = &comm->hosts;

	if (!forces_all || hx_env_long("HX_SHADOWS_FULL", 0) == 1)
		return false;
	if (algo == IBC_ALGO_AUTO)
		return true;
	return algo == IBC_ALGO_HIER && (!h->host_of || h->nhosts == 1 || h->nhosts == comm->size) &&
	       ibc_algo_valid((enum ibc_coll)p->coll, IBC_ALGO_HIER);
}

void hx_run_plan(ibcomm_t *comm, const struct hx_plan *p, hx_case_fn run)
{
	int n = ibcomm_size(comm);
	long alldt = hx_env_long("HX_ALLDT_COUNT", -1);
	size_t one = alldt >= 0 ? (size_t)alldt : 0;
	const size_t *counts = alldt >= 0 ? &one : small_counts;
	size_t ncounts = alldt >= 0 ? 1 : NSMALL;
	int nops = p->has_op ? IBCOMM_OP_COUNT : 1;
	int nroots = p->rooted && alldt < 0 ? n : 1;
	int ninp = p->has_inplace && alldt < 0 ? 2 : 1;
	int dtmax = alldt >= 0 ? IBCOMM_DTYPE_COUNT : (int)hx_env_long("HX_DTYPES", IBCOMM_DTYPE_COUNT);
	long nlarge = alldt >= 0 ? 0 : hx_env_long("HX_LARGE", 2);
	bool forces_all = plan_forces_all(p);
	int combo = 0; /* the (root, in-place) combination a shadow algorithm takes next */
	struct hx_case c;

	memset(&c, 0, sizeof(c));
	c.coll = p->coll;
	c.n = n;
	/*
	 * Small counts: the full cross product (shadow algorithms: one root and in-place mode
	 * each). HX_ALLDT_COUNT=k instead: the one count k, every dtype (HX_DTYPES ignored), op and
	 * forced algorithm (not auto, which only picks one of them), no large counts; the root and
	 * in place turn with the dtype x op and the algorithm (over the 50 dtype x op pairs each
	 * algorithm meets every root, in place and not).
	 */
	for (size_t ci = 0; ci < ncounts; ci++)
		for (int dt = 0; dt < dtmax; dt++)
			for (int op = 0; op < nops; op++, combo++)
				for (int a = 0; a < p->nalgos; a++)
					for (int root = 0; root < nroots; root++)
						for (int inp = 0; inp < ninp; inp++) {
							int j = dt * nops + op; /* HX_ALLDT_COUNT: turns root, in place */

							if (alldt >= 0 && p->algos[a] == IBC_ALGO_AUTO && p->nalgos > 1)
								continue;
							if (shadow_algo(comm, p, p->algos[a], forces_all) &&
							    root * ninp + inp != combo % (nroots * ninp))
								continue;
							c.count = counts[ci];
							c.dt = (ibcomm_dtype_t)dt;
							c.op = p->has_op ? op : HX_NOOP;
							c.algo = p->algos[a];
							c.root = !p->rooted ? -1 : alldt < 0 ? root : (j + a) % n;
							c.inplace = alldt < 0 ? inp : p->has_inplace && (j / n + a) % 2;
							if (!one_case(comm, run, &c))
								goto out;
						}
	/* 65537 and >= 1 MiB of data: every dtype, SUM and one other op, every algorithm. */
	for (int ci = 0; ci < nlarge && ci < 2; ci++)
		for (int dt = 0; dt < dtmax; dt++) {
			size_t esz = hx_esize((ibcomm_dtype_t)dt);
			size_t big = p->per_rank ? (HX_MIB / esz + (size_t)n - 1) / (size_t)n + 3 : HX_MIB / esz + 3;
			int ops[2] = { IBCOMM_SUM, 1 + (dt + ci) % 4 };

			for (int oi = 0; oi < (p->has_op ? 2 : 1); oi++)
				for (int a = 0; a < p->nalgos; a++) {
					if (oi > 0 && (p->algos[a] == IBC_ALGO_AUTO ||
						       shadow_algo(comm, p, p->algos[a], forces_all)))
						continue;
					c.count = ci == 0 ? 65537 : big;
					c.dt = (ibcomm_dtype_t)dt;
					c.op = p->has_op ? ops[oi] : HX_NOOP;
					c.algo = p->algos[a];
					c.root = p->rooted ? (dt * 3 + a + ci) % n : -1;
					c.inplace = p->has_inplace && (dt + oi + a) % 2;
					if (!one_case(comm, run, &c))
						goto out;
				}
		}
out:
	hx_force_algo(comm, p->coll, IBC_ALGO_AUTO);
}
