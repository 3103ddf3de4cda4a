/*
 * Launchers and the embedding id, in one process (forked children where a rank or a
 * process-wide state is needed): Slurm hostlists, the Slurm port, the PMI-1 and id
 * decoders, ibcomm_get_id/ibcomm_init_rank, and bad launcher input: a PMI_FD that answers
 * garbage or nothing, a PMIx that is not there, a nodelist that does not parse, a Slurm
 * port that is taken, malformed launcher variables. Each must be a clear error naming the
 * launcher and the variable, within the init deadline, never a hang.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CUnit/Basic.h>

#include "ibc.h"
#include "id.h"
#include "launch/launch.h"
#include "../cunit_main.h"

/* every variable a launcher or ibcomm reads: cleared before each case */
static const char *const vars[] = {
	"IBCOMM_RANK", "IBCOMM_SIZE", "IBCOMM_ROOT", "IBCOMM_TRANSPORT", "IBCOMM_IFNAME", "IBCOMM_TIMEOUT_MS",
	"IBCOMM_JOB_KEY", "IBCOMM_DEBUG", "IBCOMM_ALGO", "IBCOMM_DEVICE", "IBCOMM_GID_INDEX",
	"PMIX_RANK", "PMIX_NAMESPACE", "PMI_FD", "PMI_RANK", "PMI_SIZE", "SLURM_PROCID", "SLURM_NTASKS",
	"SLURM_STEP_NUM_TASKS", "SLURM_STEP_NODELIST", "SLURM_JOB_ID", "SLURM_STEP_ID", "SLURM_STEP_RESV_PORTS",
	"SLURM_LOCALID", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE",
};

static void clear_env(void)
{
	for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++)
		unsetenv(vars[i]);
	setenv("IBCOMM_TRANSPORT", "tcp", 1);
}

/* ---- hostlists ---- */

static void expect_hosts(const char *list, const char *const *want, size_t n)
{
	char why[160], **h = NULL;
	size_t got = 0;

	CU_ASSERT_EQUAL_FATAL(ibc_hostlist_expand(list, &h, &got, why, sizeof(why)), IBCOMM_OK);
	CU_ASSERT_EQUAL(got, n);
	for (size_t i = 0; i < n && i < got; i++) {
		if (strcmp(h[i], want[i]))
			fprintf(stderr, "%s: host %zu is %s, expected %s\n", list, i, h[i], want[i]);
		CU_ASSERT_STRING_EQUAL(h[i], want[i]);
	}
	ibc_hostlist_free(h, got);
}

static void expect_bad_hosts(const char *list, const char *reason)
{
	char why[160] = "", **h = NULL;
	size_t n = 0;

	CU_ASSERT_EQUAL(ibc_hostlist_expand(list, &h, &n, why, sizeof(why)), IBCOMM_ERR_INVALID);
	if (!strstr(why, reason))
		fprintf(stderr, "'%s': reason '%s', expected '%s'\n", list, why, reason);
	CU_ASSERT_PTR_NOT_NULL(strstr(why, reason));
}

static void test_hostlist(void)
{
	static const char *const a[] = { "node01", "node02", "node03", "node04", "node07" };
	static const char *const b[] = { "login1" };
	static const char *const c[] = { "n08", "n09", "n10", "x", "r1-n3", "r1-n4", "r2-n3", "r2-n4" };
	static const char *const d[] = { "gpu1.example.org", "gpu2.example.org" };

	expect_hosts("node[01-04,07]", a, 5);
	expect_hosts("login1", b, 1);
	expect_hosts("n[08-10],x,r[1-2]-n[3-4]", c, 8);
	expect_hosts("gpu[1-2].example.org", d, 2);
	expect_bad_hosts("", "empty");
	expect_bad_hosts("node[1-", "without ']'");
	expect_bad_hosts("node[3-1]", "below its start");
	expect_bad_hosts("node]", "']' without '['");
	expect_bad_hosts("a,,b", "empty host expression");
	expect_bad_hosts("no de", "not a letter");
	expect_bad_hosts("n[]", "empty brackets");
	expect_bad_hosts("n[1,]", "empty range");
	expect_bad_hosts("n[a]", "number was expected");
	expect_bad_hosts("n[1-2[3]]", "nested");
	expect_bad_hosts("n[0-99999999]", "more than");
}

/* ---- Slurm port ---- */

static void test_slurm_port(void)
{
	char err[256];
	int p, q;

	CU_ASSERT_EQUAL(ibc_slurm_port("1234", "0", NULL, &p, err, sizeof(err)), IBCOMM_OK);
	CU_ASSERT(p >= IBC_SLURM_PORT_BASE && p < IBC_SLURM_PORT_BASE + IBC_SLURM_PORT_SPAN);
	CU_ASSERT_EQUAL(ibc_slurm_port("1234", "1", NULL, &q, err, sizeof(err)), IBCOMM_OK);
	CU_ASSERT_NOT_EQUAL(p, q); /* two steps of one job */
	CU_ASSERT_EQUAL(ibc_slurm_port("1234", "4294967291", NULL, &q, err, sizeof(err)), IBCOMM_OK); /* batch step */
	CU_ASSERT_EQUAL(ibc_slurm_port("1", "0", "12000-12010", &p, err, sizeof(err)), IBCOMM_OK);
	CU_ASSERT_EQUAL(p, 12000);
	CU_ASSERT_EQUAL(ibc_slurm_port("1", "0", "12005,12009", &p, err, sizeof(err)), IBCOMM_OK);
	CU_ASSERT_EQUAL(p, 12005);
	CU_ASSERT_EQUAL(ibc_slurm_port("1", "0", "ports", &p, err, sizeof(err)), IBCOMM_ERR_INVALID);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "SLURM_STEP_RESV_PORTS='ports'"));
	CU_ASSERT_EQUAL(ibc_slurm_port("1", "0", "70000", &p, err, sizeof(err)), IBCOMM_ERR_INVALID);
	CU_ASSERT_EQUAL(ibc_slurm_port("12x", "0", NULL, &p, err, sizeof(err)), IBCOMM_ERR_INVALID);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "SLURM_JOB_ID='12x'"));
	CU_ASSERT_EQUAL(ibc_slurm_port("12", NULL, NULL, &p, err, sizeof(err)), IBCOMM_ERR_INVALID);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "SLURM_STEP_ID"));
}

/* ---- PMI-1 decoder ---- */

static void test_pmi1_decode(void)
{
	static const char *const bad[] = { "", "cmd", "=x", "cmd= rc=0", "rc=0 cmd=x", "cmd=x rc", "cmd=x =1",
					   "cmd=x\t", "cmd=x \x80" };
	struct ibc_pmi1_msg m;
	const char *why;
	char v[64];
	const char *line = "cmd=get_result rc=0 msg=success value=10.0.0.1:4242";

	CU_ASSERT_EQUAL_FATAL(ibc_pmi1_decode(line, strlen(line), &m, &why), IBCOMM_OK);
	CU_ASSERT_EQUAL(m.npairs, 4);
	CU_ASSERT(ibc_pmi1_get(&m, "value", v, sizeof(v)) && !strcmp(v, "10.0.0.1:4242"));
	CU_ASSERT(ibc_pmi1_get(&m, "rc", v, sizeof(v)) && !strcmp(v, "0"));
	CU_ASSERT_FALSE(ibc_pmi1_get(&m, "nope", v, sizeof(v)));
	CU_ASSERT_FALSE(ibc_pmi1_get(&m, "value", v, 5)); /* too long for the caller: not truncated */
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		why = NULL;
		CU_ASSERT_EQUAL(ibc_pmi1_decode(bad[i], strlen(bad[i]), &m, &why), IBCOMM_ERR_INVALID);
		CU_ASSERT_PTR_NOT_NULL(why);
	}
	{
		char many[400] = "cmd=x";

		for (int i = 0; i < IBC_PMI1_MAX_PAIRS; i++)
			strcat(many, " a=b");
		CU_ASSERT_EQUAL(ibc_pmi1_decode(many, strlen(many), &m, &why), IBCOMM_ERR_INVALID);
	}
}

/* ---- id ---- */

static void test_id_codec(void)
{
	struct ibc_id d = { .family = 4, .port = 4242, .addr = { 10, 0, 0, 1 }, .pid = 77 }, e;
	ibcomm_id_t id, bad;
	const char *why;
	char root[64];

	memset(d.key, 0x5a, sizeof(d.key));
	ibc_id_encode(&d, &id);
	CU_ASSERT_EQUAL_FATAL(ibc_id_decode(&id, &e, &why), IBCOMM_OK);
	CU_ASSERT_EQUAL(memcmp(&d, &e, sizeof(d)), 0);
	ibc_id_root(&e, root, sizeof(root));
	CU_ASSERT_STRING_EQUAL(root, "10.0.0.1:4242");
	/* every single-bit flip is caught (magic, version, checksum, or a field check) */
	for (int i = 0; i < IBCOMM_ID_BYTES * 8; i++) {
		bad = id;
		bad.bytes[i / 8] ^= (unsigned char)(1u << (i % 8));
		CU_ASSERT_EQUAL(ibc_id_decode(&bad, &e, &why), IBCOMM_ERR_INVALID);
	}
	memset(&bad, 0, sizeof(bad));
	CU_ASSERT_EQUAL(ibc_id_decode(&bad, &e, &why), IBCOMM_ERR_INVALID);
	CU_ASSERT_PTR_NOT_NULL(strstr(why, "not an ibcomm id"));
	d.family = 6;
	memcpy(d.addr, (uint8_t[16]){ [15] = 1 }, 16);
	ibc_id_encode(&d, &id);
	CU_ASSERT_EQUAL_FATAL(ibc_id_decode(&id, &e, &why), IBCOMM_OK);
	ibc_id_root(&e, root, sizeof(root));
	CU_ASSERT_STRING_EQUAL(root, "[::1]:4242");
}

/* A child: ibcomm_init_rank as `rank` of n with id, an allreduce, exit 0 when right. */
static int child_rank(const ibcomm_id_t *id, int rank, int n)
{
	ibcomm_t *comm;
	int32_t v = rank + 1;
	ibcomm_status_t st = ibcomm_init_rank(id, rank, n, NULL, &comm);

	if (st) {
		fprintf(stderr, "rank %d: ibcomm_init_rank: %s\n", rank, ibcomm_last_error(NULL));
		return 1;
	}
	st = ibcomm_allreduce(comm, &v, &v, 1, IBCOMM_INT32, IBCOMM_SUM);
	ibcomm_destroy(comm);
	return st || v != n * (n + 1) / 2 ? 2 : 0;
}

static void test_get_id(void)
{
	ibcomm_config_t cfg = IBCOMM_CONFIG_INIT;
	ibcomm_id_t id, forged;
	struct ibc_id d;
	ibcomm_t *comm = NULL;
	const char *why;
	pid_t pids[2];
	int status;

	clear_env();
	setenv("IBCOMM_TIMEOUT_MS", "20000", 1);
	setenv("IBCOMM_JOB_KEY", "not the id's key", 1); /* the id's key wins */
	CU_ASSERT_EQUAL_FATAL(ibcomm_get_id(&id), IBCOMM_OK);
	CU_ASSERT_EQUAL_FATAL(ibc_id_decode(&id, &d, &why), IBCOMM_OK);
	CU_ASSERT_EQUAL(d.pid, (uint32_t)getpid());

	/* a forked child is not the creator: it cannot be rank 0 */
	pids[0] = fork();
	if (pids[0] == 0) {
		ibcomm_status_t st = ibcomm_init_rank(&id, 0, 2, NULL, &comm);

		_exit(st == IBCOMM_ERR_INVALID && strstr(ibcomm_last_error(NULL), "ibcomm_get_id") ? 0 : 1);
	}
	CU_ASSERT(waitpid(pids[0], &status, 0) == pids[0] && WIFEXITED(status) && WEXITSTATUS(status) == 0);

	/* arguments that disagree */
	CU_ASSERT_EQUAL(ibcomm_init_rank(&id, 2, 2, NULL, &comm), IBCOMM_ERR_INVALID);
	cfg.rank = 1;
	CU_ASSERT_EQUAL(ibcomm_init_rank(&id, 0, 3, &cfg, &comm), IBCOMM_ERR_INVALID);
	CU_ASSERT_PTR_NOT_NULL(strstr(ibcomm_last_error(NULL), "ibcomm_config_t.rank=1"));
	cfg.rank = -1;
	cfg.root = "127.0.0.1:1";
	CU_ASSERT_EQUAL(ibcomm_init_rank(&id, 0, 3, &cfg, &comm), IBCOMM_ERR_INVALID);
	CU_ASSERT_PTR_NOT_NULL(strstr(ibcomm_last_error(NULL), "ibcomm_config_t.root"));
	forged = id;
	forged.bytes[30] ^= 1;
	CU_ASSERT_EQUAL(ibcomm_init_rank(&forged, 1, 3, NULL, &comm), IBCOMM_ERR_INVALID);
	CU_ASSERT_PTR_NOT_NULL(strstr(ibcomm_last_error(NULL), "checksum"));
	CU_ASSERT_PTR_NULL(comm);

	/* 3 ranks: this process is rank 0, two children the others */
	for (int r = 1; r <= 2; r++) {
		pids[r - 1] = fork();
		if (pids[r - 1] == 0) {
			alarm(60);
			_exit(child_rank(&id, r, 3));
		}
	}
	CU_ASSERT_EQUAL(child_rank(&id, 0, 3), 0);
	for (int r = 1; r <= 2; r++)
		CU_ASSERT(waitpid(pids[r - 1], &status, 0) == pids[r - 1] && WIFEXITED(status) &&
			  WEXITSTATUS(status) == 0);

	/* an id is good for one communicator */
	CU_ASSERT_EQUAL(ibcomm_init_rank(&id, 0, 1, NULL, &comm), IBCOMM_ERR_INVALID);
	CU_ASSERT_PTR_NOT_NULL(strstr(ibcomm_last_error(NULL), "already used"));

	/* an id of another process (same layout, a key this process never made) */
	memset(d.key, 1, sizeof(d.key));
	d.pid = (uint32_t)getpid() + 1;
	ibc_id_encode(&d, &forged);
	CU_ASSERT_EQUAL(ibcomm_init_rank(&forged, 0, 1, NULL, &comm), IBCOMM_ERR_INVALID);
	CU_ASSERT_PTR_NOT_NULL(strstr(ibcomm_last_error(NULL), "must be the process that called ibcomm_get_id"));

	/* a fresh id, one rank, with a config whose rank, size and root agree */
	CU_ASSERT_EQUAL_FATAL(ibcomm_get_id(&id), IBCOMM_OK);
	{
		char root[64];

		ibc_id_decode(&id, &d, &why);
		ibc_id_root(&d, root, sizeof(root));
		cfg.rank = 0;
		cfg.nranks = 1;
		cfg.root = root;
		CU_ASSERT_EQUAL(ibcomm_init_rank(&id, 0, 1, &cfg, &comm), IBCOMM_OK);
		ibcomm_destroy(comm);
	}
	clear_env();
}

/* ---- bad launcher input through ibcomm_init_env, in a child (PMIx state is per process) ---- */

struct bad_case {
	const char *name;
	const char *const *env;   /* NAME=VALUE ... NULL */
	int pmi_mode;             /* PMI_FD: 0 none, 1 garbage, 2 silence, 3 closes, 4 a wrong reply */
	bool taken_resv_port;     /* SLURM_STEP_RESV_PORTS = a port this test holds */
	ibcomm_status_t want;
	const char *const *words; /* each must be in the error */
};

/* The launcher side of PMI_FD: answers the first request as mode says. */
static void fake_pmi(int fd, int mode)
{
	char buf[512];

	if (read(fd, buf, sizeof(buf)) <= 0)
		_exit(0);
	if (mode == 1) {
		static const char garbage[] = "\x01\x02 HTTP/1.1 400 Bad Request\r\n";

		(void)!write(fd, garbage, sizeof(garbage) - 1);
	} else if (mode == 2) {
		sleep(30);
	} else if (mode == 4) {
		(void)!write(fd, "cmd=barrier_out\n", 16);
	}
	if (mode != 2)
		sleep(5); /* keep the connection open (but for mode 3) until the child is done */
	_exit(0);
}

static void run_bad(const struct bad_case *c)
{
	int sv[2] = { -1, -1 }, status, hold = -1;
	pid_t pmi = -1, pid;
	uint64_t t0 = ibc_now_ms();
	int pipefd[2];

	CU_ASSERT_FATAL(pipe(pipefd) == 0);
	if (c->taken_resv_port) {
		struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_ANY) };
		socklen_t sl = sizeof(sa);

		hold = socket(AF_INET, SOCK_STREAM, 0);
		CU_ASSERT_FATAL(hold >= 0 && !bind(hold, (struct sockaddr *)&sa, sl) && !listen(hold, 1) &&
				!getsockname(hold, (struct sockaddr *)&sa, &sl));
		{
			char v[16];

			snprintf(v, sizeof(v), "%u-%u", ntohs(sa.sin_port), ntohs(sa.sin_port) + 2);
			setenv("SLURM_STEP_RESV_PORTS", v, 1);
		}
	}
	if (c->pmi_mode) {
		CU_ASSERT_FATAL(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
		pmi = fork();
		if (pmi == 0) {
			close(sv[0]);
			if (c->pmi_mode == 3)
				_exit(0);
			fake_pmi(sv[1], c->pmi_mode);
		}
		close(sv[1]);
	}
	pid = fork();
	if (pid == 0) {
		char err[IBC_ERRLEN], num[16];
		ibcomm_t *comm = NULL;
		ibcomm_status_t st;

		close(pipefd[0]);
		alarm(20);
		for (const char *const *e = c->env; e && *e; e++) {
			char name[64];
			const char *eq = strchr(*e, '=');

			snprintf(name, sizeof(name), "%.*s", (int)(eq - *e), *e);
			setenv(name, eq + 1, 1);
		}
		if (c->pmi_mode) {
			snprintf(num, sizeof(num), "%d", sv[0]);
			setenv("PMI_FD", num, 1);
		}
		st = ibcomm_init_env(&comm);
		snprintf(err, sizeof(err), "%d %s", (int)st, ibcomm_last_error(NULL));
		(void)!write(pipefd[1], err, strlen(err));
		_exit(0);
	}
	close(pipefd[1]);
	if (sv[0] >= 0)
		close(sv[0]);
	{
		char out[IBC_ERRLEN + 16] = "";
		ssize_t n = read(pipefd[0], out, sizeof(out) - 1);
		int st;

		close(pipefd[0]);
		waitpid(pid, &status, 0);
		out[n > 0 ? n : 0] = '\0';
		printf("\n  %s: %llu ms: %s", c->name, (unsigned long long)(ibc_now_ms() - t0), out);
		CU_ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 0); /* not killed by the alarm */
		CU_ASSERT_EQUAL(sscanf(out, "%d", &st), 1);
		CU_ASSERT_EQUAL(st, (int)c->want);
		for (const char *const *w = c->words; w && *w; w++) {
			if (!strstr(out, *w))
				fprintf(stderr, "\n  %s: '%s' is not in the error\n", c->name, *w);
			CU_ASSERT_PTR_NOT_NULL(strstr(out, *w));
		}
		CU_ASSERT(ibc_now_ms() - t0 < 10000); /* the deadline below is 1.5 s */
	}
	if (pmi > 0) {
		kill(pmi, SIGKILL);
		waitpid(pmi, &status, 0);
	}
	if (hold >= 0)
		close(hold);
	unsetenv("SLURM_STEP_RESV_PORTS");
}

#define L(...) ((const char *const[]){ __VA_ARGS__, NULL })

static void test_bad_input(void)
{
	char host[256], nl[300];
	const struct bad_case cases[] = {
		{ "PMI_FD answers garbage", L("PMI_RANK=0", "PMI_SIZE=2"), 1, false, IBCOMM_ERR_RENDEZVOUS,
		  L("PMI-1", "PMI_FD", "not printable") },
		{ "PMI_FD silent", L("PMI_RANK=1", "PMI_SIZE=2"), 2, false, IBCOMM_ERR_TIMEOUT,
		  L("PMI-1", "PMI_FD", "timed out") },
		{ "PMI_FD closed", L("PMI_RANK=1", "PMI_SIZE=2"), 3, false, IBCOMM_ERR_RENDEZVOUS,
		  L("PMI-1", "launcher at PMI_FD=") },
		{ "PMI_FD wrong reply", L("PMI_RANK=1", "PMI_SIZE=2"), 4, false, IBCOMM_ERR_RENDEZVOUS,
		  L("PMI-1", "PMI_FD", "cmd=barrier_out where cmd=response_to_init") },
		{ "PMI_FD not a number", L("PMI_FD=three", "PMI_RANK=0", "PMI_SIZE=2"), 0, false, IBCOMM_ERR_INVALID,
		  L("PMI-1", "PMI_FD='three'") },
		{ "PMI_RANK too big", L("PMI_FD=1", "PMI_RANK=2", "PMI_SIZE=2"), 0, false, IBCOMM_ERR_INVALID,
		  L("PMI_RANK=2", "PMI_SIZE=2") },
		{ "PMI_FD without PMI_SIZE", L("PMI_FD=1", "PMI_RANK=0"), 0, false, IBCOMM_ERR_INVALID,
		  L("PMI-1", "PMI_SIZE") },
		{ "PMIx not there", L("PMIX_RANK=0", "PMIX_NAMESPACE=nobody-here"), 0, false,
		  ibc_pmix_present() ? IBCOMM_ERR_RENDEZVOUS : IBCOMM_ERR_INVALID, L("PMIX_RANK") },
		{ "nodelist that does not parse",
		  L("SLURM_PROCID=0", "SLURM_NTASKS=2", "SLURM_STEP_NODELIST=node[01-", "SLURM_JOB_ID=7", "SLURM_STEP_ID=0"),
		  0, false, IBCOMM_ERR_INVALID, L("Slurm", "SLURM_STEP_NODELIST='node[01-'", "without ']'") },
		{ "SLURM_PROCID not a number",
		  L("SLURM_PROCID=zero", "SLURM_NTASKS=2", "SLURM_STEP_NODELIST=n1", "SLURM_JOB_ID=7", "SLURM_STEP_ID=0"),
		  0, false, IBCOMM_ERR_INVALID, L("Slurm", "SLURM_PROCID='zero'") },
		{ "SLURM_JOB_ID not a number",
		  L("SLURM_PROCID=1", "SLURM_NTASKS=2", "SLURM_STEP_NODELIST=n1", "SLURM_JOB_ID=7x", "SLURM_STEP_ID=0"),
		  0, false, IBCOMM_ERR_INVALID, L("Slurm", "SLURM_JOB_ID='7x'") },
		{ "rank 0 not on the first host",
		  L("SLURM_PROCID=0", "SLURM_NTASKS=2", "SLURM_STEP_NODELIST=elsewhere[1-2]", "SLURM_JOB_ID=7",
		    "SLURM_STEP_ID=0"),
		  0, false, IBCOMM_ERR_RENDEZVOUS, L("Slurm", "not on 'elsewhere1'", "SLURM_STEP_NODELIST") },
		{ "Slurm port taken", L("SLURM_PROCID=0", "SLURM_NTASKS=2", nl, "SLURM_JOB_ID=7", "SLURM_STEP_ID=0"), 0,
		  true, IBCOMM_ERR_RENDEZVOUS, L("Slurm", "SLURM_STEP_RESV_PORTS", "Address already in use") },
	};

	clear_env();
	setenv("IBCOMM_TIMEOUT_MS", "1500", 1);
	gethostname(host, sizeof(host));
	host[strcspn(host, ".")] = '\0';
	snprintf(nl, sizeof(nl), "SLURM_STEP_NODELIST=%s", host);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		run_bad(&cases[i]);
	printf("\n");
	clear_env();
}

int main(int argc, char **argv)
{
	static const struct cm_test tests[] = {
		{ "Slurm hostlists", test_hostlist },
		{ "Slurm port", test_slurm_port },
		{ "PMI-1 decoder", test_pmi1_decode },
		{ "id codec", test_id_codec },
		{ "ibcomm_get_id, ibcomm_init_rank", test_get_id },
		{ "bad launcher input", test_bad_input },
	};

	signal(SIGPIPE, SIG_IGN);
	return CM_MAIN1(argc, argv, "launch", tests);
}
