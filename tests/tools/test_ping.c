/*
 * ibcomm_ping: the diagnoses on recorded GID tables (the cases this host cannot produce),
 * the report's wire form, then the tool itself on loopback: 4 ranks under ibcomm_run,
 * --json, the pair mode with --port 0, an unreachable rendezvous, a nonexistent
 * IBCOMM_IFNAME. Every run is bounded: a process still running after TEST_PING_LIMIT_S
 * seconds is killed and the test fails.
 *
 * With an RDMA device (the Soft-RoCE guest of tests/rxe/rxe-run), the RDMA path and a
 * deliberately broken set-up for each diagnosis that can be produced on one host: the
 * link-local GID (IBCOMM_GID_INDEX=0), memlock too low (run as uid 65534, since root
 * ignores the limit), a nonexistent IBCOMM_DEVICE. Without a device those pass with a note.
 */
#define _GNU_SOURCE
#include "config.h"

#include <CUnit/Basic.h>
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <grp.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ping_diag.h"
#include "../cunit_main.h"

#ifndef IBCOMM_PING_PATH
#error "IBCOMM_PING_PATH must name the built ibcomm_ping"
#endif
#ifndef IBCOMM_RUN_PATH
#error "IBCOMM_RUN_PATH must name the built ibcomm_run"
#endif

#define TEST_PING_LIMIT_S 60

/* ---- recorded tables ---- */

static void gid_v4(struct ping_gid *g, int index, enum ibc_rdma_gid_type type, int a, int b, int c, int d, int prefix)
{
	memset(g, 0, sizeof(*g));
	g->e.index = index;
	g->e.type = type;
	g->e.gid[10] = 0xff;
	g->e.gid[11] = 0xff;
	g->e.gid[12] = (uint8_t)a;
	g->e.gid[13] = (uint8_t)b;
	g->e.gid[14] = (uint8_t)c;
	g->e.gid[15] = (uint8_t)d;
	g->prefix = (uint8_t)prefix;
}

static void gid_ll(struct ping_gid *g, int index, enum ibc_rdma_gid_type type)
{
	static const uint8_t ll[16] = { 0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0x02, 0x16, 0x3e, 0xff, 0xfe, 0x12, 0x34, 0x56 };

	memset(g, 0, sizeof(*g));
	g->e.index = index;
	g->e.type = type;
	memcpy(g->e.gid, ll, 16);
}

static void port_init(struct ping_port *p, const char *dev, int mtu)
{
	memset(p, 0, sizeof(*p));
	snprintf(p->dev, sizeof(p->dev), "%s", dev);
	snprintf(p->netdev, sizeof(p->netdev), "eth0");
	p->port = 1;
	p->state = 4;
	p->link_layer = IBC_RDMA_LL_ETH;
	p->active_mtu = mtu;
	p->max_mtu = 5;
	p->gid_used = -1;
}

static void report_init(struct ping_report *r, int rank, const char *host)
{
	memset(r, 0, sizeof(*r));
	r->rank = rank;
	snprintf(r->host, sizeof(r->host), "%s", host);
	r->rdma_built = true;
	r->ndevs = 1;
	r->nports = 1;
	r->use = 0;
	r->memlock = PING_MEMLOCK_UNLIMITED;
}

#define PL_DECL(name) \
	struct ping_problem name##_v[16]; \
	struct ping_problems name = { .v = name##_v, .cap = 16 }

static void test_gid_link_local_only(void)
{
	struct ping_port p;
	PL_DECL(pl);

	port_init(&p, "rxe0", 3);
	gid_ll(&p.gids[0], 0, IBC_GID_ROCE_V1);
	gid_ll(&p.gids[1], 1, IBC_GID_ROCE_V2);
	p.ngids = 2;
	CU_ASSERT_EQUAL(ping_diag_gids(&p, -1, 0, &pl), 1);
	CU_ASSERT_EQUAL(p.gid_used, -1);
	CU_ASSERT_PTR_NOT_NULL(strstr(pl_v[0].what, "link-local"));
	CU_ASSERT_PTR_NOT_NULL(strstr(pl_v[0].fix, "ip addr add"));
	CU_ASSERT_PTR_NOT_NULL(strstr(pl_v[0].fix, "eth0"));
}

static void test_gid_forced_link_local(void)
{
	struct ping_port p;
	PL_DECL(pl);

	port_init(&p, "rxe0", 3);
	gid_ll(&p.gids[0], 0, IBC_GID_ROCE_V1);
	gid_ll(&p.gids[1], 1, IBC_GID_ROCE_V2);
	gid_v4(&p.gids[2], 2, IBC_GID_ROCE_V1, 10, 77, 0, 2, 24);
	gid_v4(&p.gids[3], 3, IBC_GID_ROCE_V2, 10, 77, 0, 2, 24);
	p.ngids = 4;
	/* IBCOMM_GID_INDEX=0: passes on one host, cannot cross hosts */
	CU_ASSERT_EQUAL(ping_diag_gids(&p, 0, 1, &pl), 1);
	CU_ASSERT_EQUAL(p.gid_used, 0);
	CU_ASSERT_EQUAL(pl_v[0].rank, 1);
	CU_ASSERT_PTR_NOT_NULL(strstr(pl_v[0].what, "IBCOMM_GID_INDEX=0"));
	CU_ASSERT_PTR_NOT_NULL(strstr(pl_v[0].what, "link-local"));
	CU_ASSERT_PTR_NOT_NULL(strstr(pl_v[0].fix, "IBCOMM_GID_INDEX=3"));
	/* automatic: the RoCEv2 IPv4 entry, no problem */
	pl.n = 0;
	CU_ASSERT_EQUAL(ping_diag_gids(&p, -1, 1, &pl), 0);
	CU_ASSERT_EQUAL(p.gid_used, 3);
	/* a forced RoCEv1 entry where v2 exists */
	CU_ASSERT_EQUAL(ping_diag_gids(&p, 2, 1, &pl), 1);
	CU_ASSERT_PTR_NOT_NULL(strstr(pl_v[0].what, "RoCEv1"));
	CU_ASSERT_PTR_NOT_NULL(strstr(pl_v[0].fix, "IBCOMM_GID_INDEX=3"));
	/* a forced index that does not exist */
	pl.n = 0;
	CU_ASSERT_EQUAL(ping_diag_gids(&p, 9, 1, &pl), 1);
	CU_ASSERT_PTR_NOT_NULL(strstr(pl_v[0].what, "does not exist"));
}

static void test_gid_roce_v1_only(void)
{
	struct ping_port p;
	PL_DECL(pl);

	port_init(&p, "mlx4_0", 5);
	gid_ll(&p.gids[0], 0, IBC_GID_ROCE_V1);
	gid_v4(&p.gids[1], 1, IBC_GID_ROCE_V1, 192, 168, 1, 5, 24);
	p.ngids = 2;
	CU_ASSERT_EQUAL(ping_diag_gids(&p, -1, 2, &pl), 1);
	CU_ASSERT_EQUAL(p.gid_used, 1);
	CU_ASSERT_PTR_NOT_NULL(strstr(pl_v[0].what, "only RoCEv1"));
	CU_ASSERT_PTR_NOT_NULL(strstr(pl_v[0].fix, "RoCEv2"));
	CU_ASSERT_PTR_NOT_NULL(strstr(pl_v[0].fix, "mlx4_0"));
}

static void test_gid_good_v2(void)
{
	struct ping_report a, b;
	PL_DECL(pl);

	report_init(&a, 0, "node1");
	report_init(&b, 1, "node2");
	port_init(&a.ports[0], "rxe0", 3);
	port_init(&b.ports[0], "rxe0", 3);
	gid_ll(&a.ports[0].gids[0], 0, IBC_GID_ROCE_V1);
	gid_ll(&a.ports[0].gids[1], 1, IBC_GID_ROCE_V2);
	gid_v4(&a.ports[0].gids[2], 2, IBC_GID_ROCE_V1, 10, 77, 0, 1, 24);
	gid_v4(&a.ports[0].gids[3], 3, IBC_GID_ROCE_V2, 10, 77, 0, 1, 24);
	a.ports[0].ngids = 4;
	b.ports[0] = a.ports[0];
	gid_v4(&b.ports[0].gids[3], 3, IBC_GID_ROCE_V2, 10, 77, 0, 2, 24);
	CU_ASSERT_EQUAL(ping_diag_gids(&a.ports[0], -1, 0, &pl), 0);
	CU_ASSERT_EQUAL(ping_diag_gids(&b.ports[0], -1, 1, &pl), 0);
	CU_ASSERT_EQUAL(a.ports[0].gid_used, 3);
	CU_ASSERT_EQUAL(ping_diag_pair(&a, &b, false, &pl), 0);
	CU_ASSERT_EQUAL(pl.n, 0);
}

static void test_gid_other_subnet(void)
{
	struct ping_report a, b;
	PL_DECL(pl);

	report_init(&a, 0, "node1");
	report_init(&b, 1, "node2");
	port_init(&a.ports[0], "mlx5_0", 3);
	port_init(&b.ports[0], "mlx5_0", 3);
	gid_v4(&a.ports[0].gids[0], 3, IBC_GID_ROCE_V2, 10, 1, 0, 1, 24);
	a.ports[0].ngids = 1;
	gid_v4(&b.ports[0].gids[0], 3, IBC_GID_ROCE_V2, 10, 2, 0, 1, 24);
	b.ports[0].ngids = 1;
	ping_diag_gids(&a.ports[0], -1, 0, &pl);
	ping_diag_gids(&b.ports[0], -1, 1, &pl);
	CU_ASSERT_EQUAL(pl.n, 0);
	CU_ASSERT_EQUAL(ping_diag_pair(&a, &b, false, &pl), 1);
	CU_ASSERT_EQUAL(pl_v[0].rank, 0);
	CU_ASSERT_EQUAL(pl_v[0].peer, 1);
	CU_ASSERT_PTR_NOT_NULL(strstr(pl_v[0].what, "different subnets"));
	CU_ASSERT_PTR_NOT_NULL(strstr(pl_v[0].fix, "10.1.0.0/24"));
	CU_ASSERT_PTR_NOT_NULL(strstr(pl_v[0].fix, "10.2.0.0/24"));
	/* measured over RDMA and it worked: the subnets are routed (an L3 fabric), no problem */
	pl.n = 0;
	CU_ASSERT_EQUAL(ping_diag_pair(&a, &b, true, &pl), 0);

	/* the peer also has an address in our subnet: the fix names its index */
	pl.n = 0;
	gid_v4(&b.ports[0].gids[1], 5, IBC_GID_ROCE_V2, 10, 1, 0, 9, 24);
	b.ports[0].ngids = 2;
	CU_ASSERT_EQUAL(ping_diag_pair(&a, &b, false, &pl), 1);
	CU_ASSERT_PTR_NOT_NULL(strstr(pl_v[0].fix, "IBCOMM_GID_INDEX=5 on rank 1"));
}

static void test_pair_mtu_and_type(void)
{
	struct ping_report a, b;
	PL_DECL(pl);

	report_init(&a, 0, "node1");
	report_init(&b, 3, "node2");
	port_init(&a.ports[0], "rxe0", 5);
	port_init(&b.ports[0], "rxe0", 3);
	gid_v4(&a.ports[0].gids[0], 1, IBC_GID_ROCE_V2, 10, 0, 0, 1, 16);
	a.ports[0].ngids = 1;
	gid_v4(&b.ports[0].gids[0], 0, IBC_GID_ROCE_V1, 10, 0, 0, 2, 16);
	b.ports[0].ngids = 1;
	a.ports[0].gid_used = 1;
	b.ports[0].gid_used = 0;
	CU_ASSERT_EQUAL(ping_diag_pair(&a, &b, false, &pl), 2);
	CU_ASSERT_PTR_NOT_NULL(strstr(pl_v[0].what, "MTU mismatch"));
	CU_ASSERT_PTR_NOT_NULL(strstr(pl_v[0].what, "4096"));
	CU_ASSERT_PTR_NOT_NULL(strstr(pl_v[0].what, "1024"));
	CU_ASSERT_PTR_NOT_NULL(strstr(pl_v[0].fix, "mtu"));
	CU_ASSERT_PTR_NOT_NULL(strstr(pl_v[1].what, "GID type mismatch"));
}

static void test_memlock(void)
{
	PL_DECL(pl);

	CU_ASSERT_EQUAL(ping_diag_memlock(8 << 20, false, true, 2, &pl), 1);
	CU_ASSERT_PTR_NOT_NULL(strstr(pl_v[0].what, "8192 KiB"));
	CU_ASSERT_PTR_NOT_NULL(strstr(pl_v[0].fix, "ulimit -l unlimited"));
	CU_ASSERT_EQUAL(ping_diag_memlock(8 << 20, false, false, 2, &pl), 0); /* no RDMA: irrelevant */
	CU_ASSERT_EQUAL(ping_diag_memlock(8 << 20, true, true, 2, &pl), 0);   /* root */
	CU_ASSERT_EQUAL(ping_diag_memlock(PING_MEMLOCK_UNLIMITED, false, true, 2, &pl), 0);
	CU_ASSERT_EQUAL(ping_diag_memlock(1ull << 30, false, true, 2, &pl), 0);
}

static void test_no_active_port(void)
{
	struct ping_report r;
	PL_DECL(pl);

	report_init(&r, 0, "node1");
	port_init(&r.ports[0], "rxe0", 3);
	r.ports[0].state = 1;
	r.use = -1;
	CU_ASSERT_EQUAL(ping_diag_ports(&r, &pl), 1);
	CU_ASSERT_PTR_NOT_NULL(strstr(pl_v[0].what, "no ACTIVE port"));
	CU_ASSERT_PTR_NOT_NULL(strstr(pl_v[0].what, "DOWN"));
	/* an ACTIVE port that is not used (IBCOMM_DEVICE names another one): not a link problem */
	pl.n = 0;
	r.ports[0].state = PING_PORT_ACTIVE;
	CU_ASSERT_EQUAL(ping_diag_ports(&r, &pl), 0);
	r.ndevs = 0;
	r.nports = 0;
	CU_ASSERT_EQUAL(ping_diag_ports(&r, &pl), 0); /* no device at all is not a problem */
}

static void test_report_wire(void)
{
	static struct ping_report a, b;
	static uint8_t buf[PING_REPORT_BYTES];
	char why[256];

	report_init(&a, 7, "node7");
	snprintf(a.tcp_if, sizeof(a.tcp_if), "eth0");
	snprintf(a.tcp_addr, sizeof(a.tcp_addr), "192.0.2.7");
	a.memlock = 8 << 20;
	port_init(&a.ports[0], "rxe0", 3);
	gid_ll(&a.ports[0].gids[0], 0, IBC_GID_ROCE_V2);
	gid_v4(&a.ports[0].gids[1], 1, IBC_GID_ROCE_V2, 10, 0, 0, 7, 24);
	a.ports[0].ngids = 2;
	a.ports[0].gid_used = 1;
	a.nproblems = 1;
	a.problems[0].rank = 7;
	a.problems[0].peer = -1;
	snprintf(a.problems[0].what, sizeof(a.problems[0].what), "something");
	snprintf(a.problems[0].fix, sizeof(a.problems[0].fix), "do this");
	CU_ASSERT_TRUE(ping_report_encode(&a, buf, sizeof(buf)));
	CU_ASSERT_TRUE(ping_report_decode(buf, sizeof(buf), &b, why, sizeof(why)));
	CU_ASSERT_EQUAL(b.rank, 7);
	CU_ASSERT_STRING_EQUAL(b.host, "node7");
	CU_ASSERT_STRING_EQUAL(b.tcp_addr, "192.0.2.7");
	CU_ASSERT_EQUAL(b.memlock, 8u << 20);
	CU_ASSERT_EQUAL(b.ports[0].ngids, 2);
	CU_ASSERT_EQUAL(memcmp(b.ports[0].gids[1].e.gid, a.ports[0].gids[1].e.gid, 16), 0);
	CU_ASSERT_EQUAL(b.ports[0].gids[1].prefix, 24);
	CU_ASSERT_STRING_EQUAL(b.problems[0].fix, "do this");
	/* corruption is refused, not trusted */
	buf[0] ^= 1;
	CU_ASSERT_FALSE(ping_report_decode(buf, sizeof(buf), &b, why, sizeof(why)));
	buf[0] ^= 1;
	buf[8 + 4] = 200; /* host name length beyond its field */
	CU_ASSERT_FALSE(ping_report_decode(buf, sizeof(buf), &b, why, sizeof(why)));
	CU_ASSERT_FALSE(ping_report_decode(buf, 6, &b, why, sizeof(why)));
}

/* ---- running the tool ---- */

static const char *after(const char *text, const char *mark);
static bool route_row(const char *text, int a, int b, const char *tp);

struct out {
	char *text;
	size_t len;
	int status;
};

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* How a child is started: extra environment, and for the memlock case another user and limit. */
struct how {
	const char *env[4];   /* "NAME=VALUE" */
	bool nobody;          /* drop to uid/gid 65534 (needs root) */
	long memlock_kib;     /* > 0: RLIMIT_MEMLOCK, soft and hard */
	const char *cwd;      /* working directory */
};

static pid_t spawn_how(char *const argv[], const struct how *h, int *fd)
{
	int p[2];
	pid_t pid;

	if (pipe(p))
		return -1;
	pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		dup2(p[1], 1);
		dup2(p[1], 2);
		close(p[0]);
		close(p[1]);
		setpgid(0, 0);
		for (int i = 0; i < 4 && h->env[i]; i++)
			putenv((char *)h->env[i]);
		if (h->cwd && chdir(h->cwd))
			_exit(126);
		if (h->memlock_kib > 0) {
			struct rlimit rl = { (rlim_t)h->memlock_kib << 10, (rlim_t)h->memlock_kib << 10 };

			if (setrlimit(RLIMIT_MEMLOCK, &rl))
				_exit(126);
		}
		if (h->nobody && (setgroups(0, NULL) || setgid(65534) || setuid(65534)))
			_exit(126);
		execv(argv[0], argv);
		_exit(127);
	}
	close(p[1]);
	*fd = p[0];
	return pid;
}

static pid_t spawn(char *const argv[], const char *env_name, const char *env_val, int *fd)
{
	struct how h;
	char *kv = NULL;
	pid_t pid;

	if (env_name && asprintf(&kv, "%s=%s", env_name, env_val) < 0)
		return -1;
	memset(&h, 0, sizeof(h));
	h.env[0] = kv;
	pid = spawn_how(argv, &h, fd);
	free(kv); /* the child has its own copy */
	return pid;
}

/* Reads fd into o until EOF, or until `until` appears when given; false on the time limit. */
static bool collect(int fd, struct out *o, const char *until, double limit)
{
	for (;;) {
		struct pollfd pfd = { fd, POLLIN, 0 };
		double left = limit - now_s();
		char buf[4096];
		ssize_t n;

		if (until && o->text && strstr(o->text, until))
			return true;
		if (left <= 0)
			return false;
		if (poll(&pfd, 1, (int)(left * 1000) + 1) < 0) {
			if (errno == EINTR)
				continue;
			return false;
		}
		if (!pfd.revents)
			continue;
		n = read(fd, buf, sizeof(buf));
		if (n <= 0)
			return !until;
		o->text = realloc(o->text, o->len + (size_t)n + 1);
		if (!o->text)
			abort();
		memcpy(o->text + o->len, buf, (size_t)n);
		o->len += (size_t)n;
		o->text[o->len] = '\0';
	}
}

/* Waits for pid (killing its group at the limit); its exit status, 128+signal when killed. */
static int reap(pid_t pid, double limit)
{
	int st;

	while (waitpid(pid, &st, WNOHANG) == 0) {
		if (now_s() > limit) {
			fprintf(stderr, "test_ping: process %d still running: killing it\n", (int)pid);
			kill(-pid, SIGKILL);
			kill(pid, SIGKILL);
			waitpid(pid, &st, 0);
			return 255;
		}
		usleep(10000);
	}
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static void finish(pid_t pid, int fd, double limit, struct out *o)
{
	collect(fd, o, NULL, limit);
	close(fd);
	o->status = reap(pid, limit);
	if (getenv("TEST_PING_VERBOSE"))
		fprintf(stderr, "--- status %d\n%s", o->status, o->text);
}

static void run(char *const argv[], const char *env_name, const char *env_val, struct out *o)
{
	double limit = now_s() + TEST_PING_LIMIT_S;
	int fd;
	pid_t pid;

	memset(o, 0, sizeof(*o));
	o->text = calloc(1, 1);
	pid = spawn(argv, env_name, env_val, &fd);
	CU_ASSERT_FATAL(pid > 0);
	finish(pid, fd, limit, o);
}

static void run_how(char *const argv[], const struct how *h, struct out *o)
{
	double limit = now_s() + TEST_PING_LIMIT_S;
	int fd;
	pid_t pid;

	memset(o, 0, sizeof(*o));
	o->text = calloc(1, 1);
	pid = spawn_how(argv, h, &fd);
	CU_ASSERT_FATAL(pid > 0);
	finish(pid, fd, limit, o);
}

static void test_run_4_ranks(void)
{
	char *argv[] = { IBCOMM_RUN_PATH, "-n", "4", "-T", "50", "--", IBCOMM_PING_PATH, "-n", "200", "-S", "1M", NULL };
	struct out o;

	run(argv, NULL, NULL, &o);
	CU_ASSERT_EQUAL(o.status, 0);
	CU_ASSERT_PTR_NOT_NULL(strstr(o.text, "[0] ibcomm_ping: 4 ranks"));
	CU_ASSERT_PTR_NOT_NULL(strstr(o.text, "pairs over tcp"));
	CU_ASSERT_PTR_NOT_NULL(strstr(o.text, "median us"));
	/* ring 0-1, 1-2, 2-3, 3-0 and the tree edge 0-2, each measured */
	CU_ASSERT_PTR_NOT_NULL(strstr(o.text, "0 <-> 1 "));
	CU_ASSERT_PTR_NOT_NULL(strstr(o.text, "1 <-> 2 "));
	CU_ASSERT_PTR_NOT_NULL(strstr(o.text, "2 <-> 3 "));
	CU_ASSERT_PTR_NOT_NULL(strstr(o.text, "3 <-> 0 "));
	CU_ASSERT_PTR_NOT_NULL(strstr(o.text, "0 <-> 2 "));
	CU_ASSERT_PTR_NULL(strstr(o.text, "FAILED"));
	CU_ASSERT_PTR_NOT_NULL(strstr(o.text, "ibcomm_ping: OK: 4 ranks, 5 pairs measured, 0 failed"));
	/* one host: every pair over shared memory too, and auto carries every pair on it */
	CU_ASSERT_PTR_NOT_NULL(strstr(after(o.text, "pairs over shm, the pairs on one host"), "0 <-> 2 "));
	CU_ASSERT_PTR_NOT_NULL(strstr(o.text, "transport per pair under IBCOMM_TRANSPORT=auto: shm ("));
	CU_ASSERT(route_row(o.text, 0, 1, "shm"));
	CU_ASSERT(route_row(o.text, 3, 0, "shm"));
	free(o.text);
}

static void test_json(void)
{
	char path[] = "/tmp/test_ping_json.XXXXXX";
	int fd = mkstemp(path);
	char *argv[] = { IBCOMM_RUN_PATH, "-n", "3", "-T", "50", "--", IBCOMM_PING_PATH, "--json", "-n", "100", "-S", "256K",
			 "-o", path, NULL };
	struct out o;
	char json[65536];
	ssize_t n;
	int depth = 0;

	CU_ASSERT_FATAL(fd >= 0);
	run(argv, NULL, NULL, &o);
	CU_ASSERT_EQUAL(o.status, 0);
	n = read(fd, json, sizeof(json) - 1);
	close(fd);
	unlink(path);
	CU_ASSERT_FATAL(n > 0);
	json[n] = '\0';
	CU_ASSERT_EQUAL(json[0], '{');
	CU_ASSERT_EQUAL(json[n - 2], '}');
	for (const char *p = json; *p; p++) {
		if (*p == '"') { /* skip strings */
			for (p++; *p && *p != '"'; p++)
				if (*p == '\\' && p[1])
					p++;
			continue;
		}
		depth += (*p == '{' || *p == '[') - (*p == '}' || *p == ']');
		CU_ASSERT(depth >= 0);
	}
	CU_ASSERT_EQUAL(depth, 0);
	CU_ASSERT_PTR_NOT_NULL(strstr(json, "\"tool\": \"ibcomm_ping\""));
	CU_ASSERT_PTR_NOT_NULL(strstr(json, "\"ok\": true"));
	CU_ASSERT_PTR_NOT_NULL(strstr(json, "\"nranks\": 3"));
	CU_ASSERT_PTR_NOT_NULL(strstr(json, "\"transport\": \"tcp\", \"a\": 0, \"b\": 1, \"ok\": true"));
	CU_ASSERT_PTR_NOT_NULL(strstr(json, "\"lat_median_us\": "));
	CU_ASSERT_PTR_NOT_NULL(strstr(json, "\"lat_p99_us\": "));
	CU_ASSERT_PTR_NOT_NULL(strstr(json, "\"bw_MBps\": "));
	CU_ASSERT_PTR_NOT_NULL(strstr(json, "\"memlock_bytes\": "));
	CU_ASSERT_PTR_NOT_NULL(strstr(json, "\"problems\": []"));
	CU_ASSERT_PTR_NULL(strstr(json, "null, \"lat_min_us\"")); /* every pair measured */
	free(o.text);
}

static void test_pair_mode(void)
{
	char *sargv[] = { IBCOMM_PING_PATH, "--server", "--port", "0", "--bind", "127.0.0.1", "-n", "100", "-S", "256K",
			  "--timeout", "30", NULL };
	double limit = now_s() + TEST_PING_LIMIT_S;
	struct out srv = { 0 }, cli;
	char peer[64], *line;
	int fd, port = 0, sst;
	pid_t pid;

	srv.text = calloc(1, 1);
	pid = spawn(sargv, NULL, NULL, &fd);
	CU_ASSERT_FATAL(pid > 0);
	/* the server prints where it listens before it waits */
	CU_ASSERT(collect(fd, &srv, "(on the other host", limit));
	line = strstr(srv.text, "listening on 127.0.0.1:");
	CU_ASSERT_PTR_NOT_NULL(line);
	if (line)
		port = atoi(line + strlen("listening on 127.0.0.1:"));
	CU_ASSERT(port > 0 && port < 65536);
	if (port > 0) {
		char *cargv[] = { IBCOMM_PING_PATH, peer, "-n", "100", "-S", "256K", "--timeout", "30", NULL };

		snprintf(peer, sizeof(peer), "127.0.0.1:%d", port);
		run(cargv, NULL, NULL, &cli);
		CU_ASSERT_EQUAL(cli.status, 0);
		CU_ASSERT_PTR_NOT_NULL(strstr(cli.text, "0 <-> 1 "));
		CU_ASSERT_PTR_NOT_NULL(strstr(cli.text, "ibcomm_ping: OK: 2 ranks"));
		free(cli.text);
	} else {
		kill(pid, SIGKILL);
	}
	collect(fd, &srv, NULL, limit);
	close(fd);
	sst = reap(pid, limit);
	CU_ASSERT_EQUAL(sst, 0);
	CU_ASSERT_PTR_NOT_NULL(strstr(srv.text, "0 <-> 1 "));
	free(srv.text);
}

static void test_unreachable(void)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t sl = sizeof(sa);
	int s = socket(AF_INET, SOCK_STREAM, 0);
	char root[64], expect[128];
	struct out o;
	double t0;

	/* a port bound but not listening: connections are refused, and nobody else takes it */
	CU_ASSERT_FATAL(s >= 0);
	CU_ASSERT_FATAL(bind(s, (struct sockaddr *)&sa, sizeof(sa)) == 0);
	CU_ASSERT_FATAL(getsockname(s, (struct sockaddr *)&sa, &sl) == 0);
	snprintf(root, sizeof(root), "127.0.0.1:%u", ntohs(sa.sin_port));
	{
		char *argv[] = { IBCOMM_PING_PATH, root, "--timeout", "2", NULL };

		t0 = now_s();
		run(argv, NULL, NULL, &o);
	}
	close(s);
	CU_ASSERT_EQUAL(o.status, 1);
	CU_ASSERT(now_s() - t0 < 20);
	snprintf(expect, sizeof(expect), "rendezvous unreachable at %s", root);
	CU_ASSERT_PTR_NOT_NULL(strstr(o.text, expect));
	CU_ASSERT_PTR_NOT_NULL(strstr(o.text, "Connection refused"));
	CU_ASSERT_PTR_NOT_NULL(strstr(o.text, "fix: nothing listens on 127.0.0.1 port"));
	CU_ASSERT_PTR_NOT_NULL(strstr(o.text, "firewall"));
	free(o.text);
}

/* The rows of the text report's per-pair transport table: "  a <-> b     tp  " must be in it. */
static bool route_row(const char *text, int a, int b, const char *tp)
{
	const char *t = after(text, "transport per pair under IBCOMM_TRANSPORT=auto");
	char pair[32], row[64];

	snprintf(pair, sizeof(pair), "%d <-> %d", a, b);
	snprintf(row, sizeof(row), "  %-11s %-9s ", pair, tp);
	return strstr(t, row) != NULL;
}

#ifdef IBCOMM_TEST_HOOKS
/* The JSON report's per-pair transport entry for a, b. */
static bool route_json(const char *json, int a, int b, const char *tp)
{
	char e[128];

	snprintf(e, sizeof(e), "{\"a\": %d, \"b\": %d, \"transport\": \"%s\", \"measured\": true, \"ok\": true}", a, b, tp);
	return strstr(after(json, "\"pair_transports\": ["), e) != NULL;
}
#endif

/*
 * Ranks pretending to be on hosts A,A,B,B (IBCOMM_TEST_HOST, a test hook): the pairs on one
 * host (0-1, 2-3) go over shared memory, measured through the library's shm transport; the
 * others (1-2, 3-0, 0-2) over tcp, or over rdma where the ranks have a usable RDMA device (the
 * Soft-RoCE guest); in text and in JSON.
 */
static void test_pretended_hosts(void)
{
#ifndef IBCOMM_TEST_HOOKS
	cm_skip("needs the IBCOMM_TEST_HOST hook (configure --enable-test-hooks)");
#else
	static const char wrap[] = "case $IBCOMM_RANK in 0|1) h=A;; *) h=B;; esac; IBCOMM_TEST_HOST=$h exec \"$0\" \"$@\"";
	char path[] = "/tmp/test_ping_hosts.XXXXXX", json[65536];
	char *argv[] = { IBCOMM_RUN_PATH, "-n", "4", "-T", "50", "--", "/bin/sh", "-c", (char *)wrap, IBCOMM_PING_PATH,
			 "-n", "100", "-S", "256K", NULL };
	char *jargv[] = { IBCOMM_RUN_PATH, "-n", "4", "-T", "50", "--", "/bin/sh", "-c", (char *)wrap, IBCOMM_PING_PATH,
			  "--json", "-n", "100", "-S", "256K", "-o", path, NULL };
	const char *shm, *net;
	struct out o;
	ssize_t n;
	int fd;

	run(argv, NULL, NULL, &o);
	net = strstr(o.text, "transport per pair under IBCOMM_TRANSPORT=auto: shm+rdma (") ? "rdma" : "tcp";
	CU_ASSERT_EQUAL(o.status, 0);
	CU_ASSERT_PTR_NOT_NULL(strstr(o.text, "ibcomm_ping: OK: 4 ranks, 5 pairs measured, 0 failed"));
	/* the shared-memory rows: the two pairs on one host, measured, and no other */
	shm = after(o.text, "pairs over shm, the pairs on one host");
	CU_ASSERT_PTR_NOT_NULL(strstr(shm, "0 <-> 1 "));
	CU_ASSERT_PTR_NOT_NULL(strstr(shm, "2 <-> 3 "));
	CU_ASSERT_PTR_NOT_NULL(strstr(after(shm, "2 <-> 3 "), "  ok\n"));
	CU_ASSERT_PTR_NULL(strstr(o.text, "FAILED"));
	CU_ASSERT(strcmp(net, "rdma") == 0 || strstr(o.text, "transport per pair under IBCOMM_TRANSPORT=auto: shm+tcp ("));
	CU_ASSERT(strstr(shm, "1 <-> 2 ") == NULL || strstr(shm, "1 <-> 2 ") > strstr(shm, "transport per pair"));
	CU_ASSERT(route_row(o.text, 0, 1, "shm"));
	CU_ASSERT(route_row(o.text, 2, 3, "shm"));
	CU_ASSERT(route_row(o.text, 1, 2, net));
	CU_ASSERT(route_row(o.text, 3, 0, net));
	CU_ASSERT(route_row(o.text, 0, 2, net));
	free(o.text);

	fd = mkstemp(path);
	CU_ASSERT_FATAL(fd >= 0);
	run(jargv, NULL, NULL, &o);
	CU_ASSERT_EQUAL(o.status, 0);
	n = read(fd, json, sizeof(json) - 1);
	close(fd);
	unlink(path);
	CU_ASSERT_FATAL(n > 0);
	json[n] = '\0';
	CU_ASSERT_PTR_NOT_NULL(strstr(json, strcmp(net, "rdma") ? "\"transports\": [\"tcp\", \"shm\"]"
							   : "\"transports\": [\"tcp\", \"rdma\", \"shm\"]"));
	CU_ASSERT_PTR_NOT_NULL(strstr(json, strcmp(net, "rdma") ? "\"auto_transport\": \"shm+tcp\""
							   : "\"auto_transport\": \"shm+rdma\""));
	CU_ASSERT_PTR_NOT_NULL(strstr(json, "\"transport\": \"shm\", \"a\": 0, \"b\": 1, \"ok\": true"));
	CU_ASSERT_PTR_NOT_NULL(strstr(json, "\"transport\": \"shm\", \"a\": 2, \"b\": 3, \"ok\": true"));
	CU_ASSERT_PTR_NULL(strstr(json, "\"transport\": \"shm\", \"a\": 1, \"b\": 2"));
	CU_ASSERT_PTR_NOT_NULL(strstr(json, "\"rank\": 2, \"host\": "));
	CU_ASSERT_PTR_NOT_NULL(strstr(after(json, "\"rank\": 3, \"host\": "), "\"host_group\": 1"));
	CU_ASSERT(route_json(json, 0, 1, "shm"));
	CU_ASSERT(route_json(json, 2, 3, "shm"));
	CU_ASSERT(route_json(json, 1, 2, net));
	CU_ASSERT(route_json(json, 3, 0, net));
	CU_ASSERT(route_json(json, 0, 2, net));
	free(o.text);
#endif
}

static void test_bad_ifname(void)
{
	char *argv[] = { IBCOMM_RUN_PATH, "-n", "2", "-T", "50", "--", IBCOMM_PING_PATH, NULL };
	struct out o;

	run(argv, "IBCOMM_IFNAME", "nosuch0", &o);
	CU_ASSERT_NOT_EQUAL(o.status, 0);
	CU_ASSERT_PTR_NOT_NULL(strstr(o.text, "IBCOMM_IFNAME=nosuch0: no such network interface"));
	CU_ASSERT_PTR_NOT_NULL(strstr(o.text, "fix: set IBCOMM_IFNAME to one of: "));
	CU_ASSERT_PTR_NOT_NULL(strstr(o.text, " lo"));
	free(o.text);
}

static void test_bad_device(void)
{
	char *argv[] = { IBCOMM_RUN_PATH, "-n", "2", "-T", "50", "--", IBCOMM_PING_PATH, "-n", "50", "-S", "64K", NULL };
	struct out o;

	run(argv, "IBCOMM_DEVICE", "nosuchdev9", &o);
	CU_ASSERT_EQUAL(o.status, 1);
	CU_ASSERT_PTR_NOT_NULL(strstr(o.text, "IBCOMM_DEVICE=nosuchdev9: no such RDMA device"));
	CU_ASSERT_PTR_NOT_NULL(strstr(o.text, "fix: "));
	/* the TCP pairs are still measured */
	CU_ASSERT_PTR_NOT_NULL(strstr(o.text, "0 <-> 1 "));
	free(o.text);
}


/* ---- with an RDMA device (the Soft-RoCE guest): the RDMA path and broken set-ups ---- */

/* The first RDMA device in /sys/class/infiniband into dev; false when there is none. */
static bool rdma_device(char *dev, size_t cap)
{
	DIR *d = opendir("/sys/class/infiniband");
	struct dirent *e;
	bool found = false;

	if (!d)
		return false;
	while (!found && (e = readdir(d)))
		if (e->d_name[0] != '.') {
			snprintf(dev, cap, "%s", e->d_name);
			found = true;
		}
	closedir(d);
	return found;
}

static bool need_rdma(char *dev, size_t cap)
{
	if (rdma_device(dev, cap))
		return true;
	cm_skip("no RDMA device: checked in the Soft-RoCE guest (tests/rxe/rxe-run)");
	return false;
}

/* The text after the first occurrence of mark, or "" (so that strstr on it stays safe). */
static const char *after(const char *text, const char *mark)
{
	const char *p = strstr(text, mark);

	return p ? p + strlen(mark) : "";
}

static void test_rdma_pair(void)
{
	char *argv[] = { IBCOMM_RUN_PATH, "-n", "2", "-T", "50", "--", IBCOMM_PING_PATH, "-n", "100", "-S", "256K", NULL };
	char path[] = "/tmp/test_ping_rdma.XXXXXX", dev[256], json[65536];
	char *jargv[] = { IBCOMM_RUN_PATH, "-n", "2", "-T", "50", "--", IBCOMM_PING_PATH, "--json", "-n", "100", "-S", "256K",
			  "-o", path, NULL };
	struct rlimit rl;
	struct out o;
	bool clean;
	ssize_t n;
	int fd;

	if (!need_rdma(dev, sizeof(dev)))
		return;
	/* a user with a memlock limit is (rightly) told so: the verdict is then not OK */
	clean = geteuid() == 0 || getrlimit(RLIMIT_MEMLOCK, &rl) || rl.rlim_cur == RLIM_INFINITY ||
		rl.rlim_cur >= PING_MEMLOCK_MIN;
	run(argv, NULL, NULL, &o);
	if (clean) {
		CU_ASSERT_EQUAL(o.status, 0);
		CU_ASSERT_PTR_NOT_NULL(strstr(o.text, "ibcomm_ping: OK: 2 ranks, 1 pair measured, 0 failed, 0 problems"));
	}
	CU_ASSERT_PTR_NOT_NULL(strstr(o.text, "[in use]"));
	CU_ASSERT_PTR_NOT_NULL(strstr(o.text, "pairs over tcp"));
	CU_ASSERT_PTR_NOT_NULL(strstr(o.text, "pairs over rdma"));
	/* the RDMA row: measured, ok */
	CU_ASSERT_PTR_NOT_NULL(strstr(after(o.text, "pairs over rdma"), "0 <-> 1 "));
	CU_ASSERT_PTR_NOT_NULL(strstr(after(after(o.text, "pairs over rdma"), "0 <-> 1 "), "  ok\n"));
	CU_ASSERT_PTR_NULL(strstr(o.text, "rdma: not measured"));
	CU_ASSERT_PTR_NULL(strstr(o.text, "FAILED:"));
	free(o.text);

	/* the same in JSON: rdma among the transports, its pair measured */
	fd = mkstemp(path);
	CU_ASSERT_FATAL(fd >= 0);
	run(jargv, NULL, NULL, &o);
	if (clean)
		CU_ASSERT_EQUAL(o.status, 0);
	n = read(fd, json, sizeof(json) - 1);
	close(fd);
	unlink(path);
	CU_ASSERT_FATAL(n > 0);
	json[n] = '\0';
	CU_ASSERT_PTR_NOT_NULL(strstr(json, "\"transports\": [\"tcp\", \"rdma\", \"shm\"]"));
	CU_ASSERT_PTR_NOT_NULL(strstr(json, "\"transport\": \"rdma\", \"a\": 0, \"b\": 1, \"ok\": true"));
	CU_ASSERT_PTR_NOT_NULL(strstr(json, "\"in_use\": true"));
	free(o.text);
}

static void test_rdma_gid_link_local(void)
{
	char *argv[] = { IBCOMM_RUN_PATH, "-n", "2", "-T", "50", "--", IBCOMM_PING_PATH, "-n", "100", "-S", "256K", NULL };
	char dev[256], path[400], gid0[64] = "";
	struct out o;
	FILE *f;

	if (!need_rdma(dev, sizeof(dev)))
		return;
	snprintf(path, sizeof(path), "/sys/class/infiniband/%s/ports/1/gids/0", dev);
	f = fopen(path, "r");
	if (f) {
		if (!fgets(gid0, sizeof(gid0), f))
			gid0[0] = '\0';
		fclose(f);
	}
	if (strncmp(gid0, "fe80:", 5)) {
		cm_skip("GID 0 of %s is not link-local (%s): nothing to break this way", dev, gid0);
		return;
	}
	run(argv, "IBCOMM_GID_INDEX", "0", &o);
	/* documented: a problem found means exit status 1 */
	CU_ASSERT_EQUAL(o.status, 1);
	CU_ASSERT_PTR_NOT_NULL(strstr(o.text, "IBCOMM_GID_INDEX=0 selects fe80:"));
	CU_ASSERT_PTR_NOT_NULL(strstr(o.text, "a link-local GID: not routable across hosts"));
	CU_ASSERT_PTR_NOT_NULL(strstr(o.text, "fix: unset IBCOMM_GID_INDEX (ibcomm then uses index "));
	CU_ASSERT_PTR_NOT_NULL(strstr(o.text, "* 0 "));  /* the table marks the forced entry */
	/* it passes on one host, which is the point of diagnosing it */
	CU_ASSERT_PTR_NOT_NULL(strstr(after(o.text, "pairs over rdma"), "  ok\n"));
	/* the same problem on both ranks: one entry, "ranks 0,1", counted once */
	CU_ASSERT_PTR_NOT_NULL(strstr(o.text, "ranks 0,1: IBCOMM_GID_INDEX=0"));
	CU_ASSERT_PTR_NOT_NULL(strstr(o.text, "problems (1):"));
	CU_ASSERT_PTR_NOT_NULL(strstr(o.text, "ibcomm_ping: FAILED: 2 ranks, 1 pair measured, 0 failed, 1 problem\n"));
	free(o.text);
}

static void test_rdma_memlock(void)
{
	char *argv[] = { IBCOMM_RUN_PATH, "-n", "2", "-T", "50", "--", IBCOMM_PING_PATH, "-n", "100", "-S", "256K", NULL };
	char dir[] = "/tmp/test_ping_nobody.XXXXXX", dev[256];
	struct how h = { .nobody = true, .cwd = dir };
	struct out o;

	if (!need_rdma(dev, sizeof(dev)))
		return;
	if (geteuid() != 0) {
		cm_skip("not root: cannot run ibcomm_ping as another user to test the memlock diagnosis");
		return;
	}
	CU_ASSERT_FATAL(mkdtemp(dir) != NULL);
	CU_ASSERT_FATAL(chmod(dir, 0777) == 0);

	/* 8 MiB (the guest's default; root ignores it, uid 65534 does not): diagnosed, RDMA still works */
	h.memlock_kib = 8192;
	run_how(argv, &h, &o);
	CU_ASSERT_EQUAL(o.status, 1);
	CU_ASSERT_PTR_NOT_NULL(strstr(o.text, "8 MiB"));
	CU_ASSERT_PTR_NOT_NULL(strstr(o.text, "memlock limit is 8192 KiB, below the 64 MiB"));
	CU_ASSERT_PTR_NOT_NULL(strstr(o.text, "fix: raise it: ulimit -l unlimited"));
	CU_ASSERT_PTR_NOT_NULL(strstr(o.text, "limits.conf"));
	CU_ASSERT_PTR_NOT_NULL(strstr(o.text, "pairs over rdma"));
	CU_ASSERT_PTR_NOT_NULL(strstr(o.text, "ibcomm_ping: FAILED: 2 ranks, 1 pair measured, 0 failed"));
	free(o.text);

	/* 256 KiB: the RDMA buffers cannot be registered; the failure points at the limit */
	h.memlock_kib = 256;
	run_how(argv, &h, &o);
	CU_ASSERT_EQUAL(o.status, 1);
	CU_ASSERT_PTR_NOT_NULL(strstr(o.text, "memlock limit is 256 KiB"));
	CU_ASSERT_PTR_NOT_NULL(strstr(o.text, "cannot create an RDMA communicator"));
	CU_ASSERT_PTR_NOT_NULL(strstr(o.text, "ibv_reg_mr"));
	CU_ASSERT_PTR_NOT_NULL(strstr(o.text, "fix: raise the memlock limit: ulimit -l unlimited"));
	CU_ASSERT_PTR_NOT_NULL(strstr(o.text, "rdma: not measured (every rank has a usable port, but the RDMA communicator could not be created"));
	CU_ASSERT_PTR_NULL(strstr(o.text, "pairs over rdma"));
	free(o.text);
	rmdir(dir);
}

static void test_rdma_bad_device(void)
{
	char *argv[] = { IBCOMM_RUN_PATH, "-n", "2", "-T", "50", "--", IBCOMM_PING_PATH, "-n", "100", "-S", "256K", NULL };
	char dev[256], fix[128];
	struct out o;

	if (!need_rdma(dev, sizeof(dev)))
		return;
	run(argv, "IBCOMM_DEVICE", "nosuch0", &o);
	CU_ASSERT_EQUAL(o.status, 1);
	CU_ASSERT_PTR_NOT_NULL(strstr(o.text, "IBCOMM_DEVICE=nosuch0: no such RDMA device on "));
	snprintf(fix, sizeof(fix), "fix: set IBCOMM_DEVICE to one of: ");
	CU_ASSERT_PTR_NOT_NULL(strstr(o.text, fix));
	CU_ASSERT_PTR_NOT_NULL(strstr(after(o.text, fix), dev));
	/* the device's port is ACTIVE: no misleading "no ACTIVE port" */
	CU_ASSERT_PTR_NULL(strstr(o.text, "no ACTIVE port"));
	CU_ASSERT_PTR_NOT_NULL(strstr(o.text, "none usable"));
	CU_ASSERT_PTR_NOT_NULL(strstr(o.text, "rdma: not measured (not every rank has a usable RDMA port"));
	CU_ASSERT_PTR_NOT_NULL(strstr(o.text, "0 <-> 1 ")); /* TCP still measured */
	CU_ASSERT_PTR_NOT_NULL(strstr(o.text, "ibcomm_ping: FAILED: 2 ranks, 1 pair measured, 0 failed, 1 problem\n"));
	free(o.text);
}

int main(int argc, char **argv)
{
	static const struct cm_test unit[] = {
		{ "GID table: link-local only", test_gid_link_local_only },
		{ "GID table: IBCOMM_GID_INDEX on link-local, v1, missing", test_gid_forced_link_local },
		{ "GID table: RoCEv1 only", test_gid_roce_v1_only },
		{ "GID table: good RoCEv2 IPv4", test_gid_good_v2 },
		{ "GID tables: IPv4 on another subnet than the peer", test_gid_other_subnet },
		{ "pair: MTU and GID type mismatch", test_pair_mtu_and_type },
		{ "memlock", test_memlock },
		{ "no active port", test_no_active_port },
		{ "report wire form", test_report_wire },
	};
	static const struct cm_test tool[] = {
		{ "4 ranks under ibcomm_run", test_run_4_ranks },
		{ "--json", test_json },
		{ "pair mode --server --port 0 / HOST:PORT", test_pair_mode },
		{ "unreachable rendezvous", test_unreachable },
		{ "nonexistent IBCOMM_IFNAME", test_bad_ifname },
		{ "nonexistent IBCOMM_DEVICE", test_bad_device },
		{ "hosts A,A,B,B (pretended): shm within a host, tcp across", test_pretended_hosts },
	};
	static const struct cm_test rdma[] = {
		{ "2 ranks over RDMA: rows measured, rdma in use", test_rdma_pair },
		{ "IBCOMM_GID_INDEX=0: link-local GID diagnosed", test_rdma_gid_link_local },
		{ "uid 65534 with memlock 8 MiB / 256 KiB: diagnosed", test_rdma_memlock },
		{ "IBCOMM_DEVICE=nosuch0 with a device present", test_rdma_bad_device },
	};
	static const struct cm_suite suites[] = {
		CM_SUITE("ping_diag", unit),
		CM_SUITE("ibcomm_ping", tool),
		CM_SUITE("ibcomm_ping on an RDMA device", rdma),
	};

	signal(SIGPIPE, SIG_IGN);
	return cm_main(argc, argv, suites, CM_COUNT(suites));
}
