/* Settings: every IBCOMM_* variable's good and bad values, launcher fallbacks, the config
 * struct's precedence and growth, and IBCOMM_ALGO parsing. */
#include <CUnit/Basic.h>
#include <net/if.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ibc.h"
#include "sock.h"
#include "../cunit_main.h"

static const char *const all_vars[] = {
	"IBCOMM_RANK",	    "IBCOMM_SIZE",	    "IBCOMM_ROOT",	    "IBCOMM_TRANSPORT", "IBCOMM_DEVICE",
	"IBCOMM_GID_INDEX", "IBCOMM_IFNAME",	    "IBCOMM_TIMEOUT_MS",    "IBCOMM_ALGO",	"IBCOMM_JOB_KEY",
	"IBCOMM_DEBUG",	    "SLURM_PROCID",	    "SLURM_NTASKS",	    "OMPI_COMM_WORLD_RANK",
	"OMPI_COMM_WORLD_SIZE", "PMI_RANK",	    "PMI_SIZE", "IBCOMM_TCP_CHUNK", "IBCOMM_TCP_SLOTS",
	"IBCOMM_TCP_SPIN_US", "IBCOMM_RDMA_CHUNK", "IBCOMM_RDMA_SLOTS", "IBCOMM_MEM_LIMIT",
	"IBCOMM_P2P_UNEXPECTED_MAX", "IBCOMM_TEST_QP_ERROR_AFTER", "IBCOMM_SHM_CHUNK", "IBCOMM_SHM_SLOTS",
	"IBCOMM_TEST_HOST", "IBCOMM_RDMA_SPIN_US",
};

static char err[IBC_ERRLEN];
static ibc_settings_t set;

/* A clean environment with a valid minimal job: rank 0 of 1 at 127.0.0.1:5000. */
static void base_env(void)
{
	for (size_t i = 0; i < IBC_ARRAY_SIZE(all_vars); i++)
		unsetenv(all_vars[i]);
	setenv("IBCOMM_RANK", "0", 1);
	setenv("IBCOMM_SIZE", "1", 1);
	setenv("IBCOMM_ROOT", "127.0.0.1:5000", 1);
}

static ibcomm_status_t load(void)
{
	memset(&set, 0xa5, sizeof(set));
	err[0] = '\0';
	return ibc_settings_load(NULL, &set, err, sizeof(err));
}

/* var=val must be rejected with a message naming var and val. */
static void expect_bad(const char *var, const char *val)
{
	ibc_settings_t before;
	ibcomm_status_t st;

	setenv(var, val, 1);
	memset(&set, 0xa5, sizeof(set));
	memcpy(&before, &set, sizeof(set));
	err[0] = '\0';
	st = ibc_settings_load(NULL, &set, err, sizeof(err));
	CU_ASSERT_EQUAL(st, IBCOMM_ERR_INVALID);
	if (st != IBCOMM_ERR_INVALID)
		fprintf(stderr, "\n  %s='%s' was accepted\n", var, val);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, var));
	if (strlen(val) < 30)
		CU_ASSERT_PTR_NOT_NULL(strstr(err, val));
	if (!strstr(err, var))
		fprintf(stderr, "\n  message for %s='%s' does not name it: %s\n", var, val, err);
	/* the output is untouched on error */
	CU_ASSERT_EQUAL(memcmp(&before, &set, sizeof(set)), 0);
}

static void expect_good(const char *var, const char *val)
{
	ibcomm_status_t st;

	setenv(var, val, 1);
	st = load();
	CU_ASSERT_EQUAL(st, IBCOMM_OK);
	if (st)
		fprintf(stderr, "\n  %s='%s' was refused: %s\n", var, val, err);
}

static void test_defaults(void)
{
	base_env();
	CU_ASSERT_EQUAL_FATAL(load(), IBCOMM_OK);
	CU_ASSERT_EQUAL(set.rank, 0);
	CU_ASSERT_EQUAL(set.nranks, 1);
	CU_ASSERT_STRING_EQUAL(set.root, "127.0.0.1:5000");
	CU_ASSERT_EQUAL(set.transport, IBC_TP_AUTO);
	CU_ASSERT_STRING_EQUAL(set.device, "");
	CU_ASSERT_EQUAL(set.ib_port, 0);
	CU_ASSERT_EQUAL(set.gid_index, -1);
	CU_ASSERT_STRING_EQUAL(set.ifname, "");
	CU_ASSERT_EQUAL(set.timeout_ms, IBCOMM_DEFAULT_TIMEOUT_MS);
	for (int c = 0; c < IBC_COLL_COUNT; c++)
		CU_ASSERT_EQUAL(set.algo[c], IBC_ALGO_AUTO);
	CU_ASSERT_STRING_EQUAL(set.job_key, "");
	CU_ASSERT_EQUAL(set.debug, IBC_LOG_WARN);
	CU_ASSERT_EQUAL(set.tcp_chunk, 0);
	CU_ASSERT_EQUAL(set.tcp_slots, 0);
	CU_ASSERT_EQUAL(set.tcp_spin_us, IBC_DEFAULT_TCP_SPIN_US);
	CU_ASSERT_EQUAL(set.rdma_spin_us, IBC_DEFAULT_RDMA_SPIN_US);
	CU_ASSERT_EQUAL(set.rdma_chunk, 0);
	CU_ASSERT_EQUAL(set.rdma_slots, 0);
	CU_ASSERT_EQUAL(set.mem_limit, IBC_DEFAULT_MEM_LIMIT);
	CU_ASSERT_EQUAL(set.p2p_unexpected_max, IBC_DEFAULT_P2P_UNEXPECTED_MAX);
	CU_ASSERT_EQUAL(set.test_qp_error_after, 0);
}

static void test_rank_size(void)
{
	base_env();
	setenv("IBCOMM_SIZE", "8", 1);
	expect_good("IBCOMM_RANK", "7");
	CU_ASSERT_EQUAL(set.rank, 7);
	CU_ASSERT_EQUAL(set.nranks, 8);
	expect_good("IBCOMM_RANK", "+3");
	CU_ASSERT_EQUAL(set.rank, 3);

	expect_bad("IBCOMM_RANK", "x");
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "IBCOMM_RANK='x' is not a number"));
	expect_bad("IBCOMM_RANK", "-1");
	expect_bad("IBCOMM_RANK", "3x");
	expect_bad("IBCOMM_RANK", " 3");
	expect_bad("IBCOMM_RANK", "0x3");
	expect_bad("IBCOMM_RANK", "99999999999999999999");
	expect_bad("IBCOMM_RANK", "8"); /* rank >= size */
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "IBCOMM_SIZE"));
	setenv("IBCOMM_RANK", "0", 1);

	expect_bad("IBCOMM_SIZE", "0");
	expect_bad("IBCOMM_SIZE", "-4");
	expect_bad("IBCOMM_SIZE", "four");
	expect_bad("IBCOMM_SIZE", "4.0");
	expect_bad("IBCOMM_SIZE", "3000000000");
	expect_good("IBCOMM_SIZE", "1");

	/* nothing at all: the message says what to set */
	base_env();
	unsetenv("IBCOMM_RANK");
	CU_ASSERT_EQUAL(load(), IBCOMM_ERR_INVALID);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "IBCOMM_RANK"));
	base_env();
	unsetenv("IBCOMM_SIZE");
	CU_ASSERT_EQUAL(load(), IBCOMM_ERR_INVALID);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "IBCOMM_SIZE"));
}

static void test_launchers(void)
{
	/* Slurm */
	base_env();
	unsetenv("IBCOMM_RANK");
	unsetenv("IBCOMM_SIZE");
	setenv("SLURM_PROCID", "2", 1);
	setenv("SLURM_NTASKS", "4", 1);
	CU_ASSERT_EQUAL_FATAL(load(), IBCOMM_OK);
	CU_ASSERT_EQUAL(set.rank, 2);
	CU_ASSERT_EQUAL(set.nranks, 4);

	/* IBCOMM_* win over the launcher */
	setenv("IBCOMM_RANK", "1", 1);
	CU_ASSERT_EQUAL_FATAL(load(), IBCOMM_OK);
	CU_ASSERT_EQUAL(set.rank, 1);
	CU_ASSERT_EQUAL(set.nranks, 4);
	unsetenv("IBCOMM_RANK");

	/* bad launcher values are named */
	setenv("SLURM_PROCID", "abc", 1);
	CU_ASSERT_EQUAL(load(), IBCOMM_ERR_INVALID);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "SLURM_PROCID='abc'"));
	setenv("SLURM_PROCID", "4", 1);
	CU_ASSERT_EQUAL(load(), IBCOMM_ERR_INVALID);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "SLURM_PROCID"));
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "SLURM_NTASKS"));
	unsetenv("SLURM_PROCID");
	unsetenv("SLURM_NTASKS");

	/* Open MPI */
	setenv("OMPI_COMM_WORLD_RANK", "5", 1);
	setenv("OMPI_COMM_WORLD_SIZE", "6", 1);
	CU_ASSERT_EQUAL_FATAL(load(), IBCOMM_OK);
	CU_ASSERT_EQUAL(set.rank, 5);
	CU_ASSERT_EQUAL(set.nranks, 6);
	setenv("OMPI_COMM_WORLD_SIZE", "0", 1);
	CU_ASSERT_EQUAL(load(), IBCOMM_ERR_INVALID);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "OMPI_COMM_WORLD_SIZE='0'"));
	unsetenv("OMPI_COMM_WORLD_RANK");
	unsetenv("OMPI_COMM_WORLD_SIZE");

	/* PMI / Hydra */
	setenv("PMI_RANK", "0", 1);
	setenv("PMI_SIZE", "3", 1);
	CU_ASSERT_EQUAL_FATAL(load(), IBCOMM_OK);
	CU_ASSERT_EQUAL(set.rank, 0);
	CU_ASSERT_EQUAL(set.nranks, 3);

	/* mpirun inside a Slurm allocation: the processes' own launcher wins */
	setenv("SLURM_PROCID", "0", 1);
	setenv("SLURM_NTASKS", "1", 1);
	setenv("PMI_RANK", "2", 1);
	CU_ASSERT_EQUAL_FATAL(load(), IBCOMM_OK);
	CU_ASSERT_EQUAL(set.rank, 2);
	CU_ASSERT_EQUAL(set.nranks, 3);

	/* an incomplete pair is not used */
	base_env();
	unsetenv("IBCOMM_RANK");
	unsetenv("IBCOMM_SIZE");
	setenv("PMI_RANK", "1", 1);
	CU_ASSERT_EQUAL(load(), IBCOMM_ERR_INVALID);
}

static void test_root(void)
{
	const char *good[] = { "127.0.0.1:1",	 "node0:29500",	      "node-0.cluster.local:65535",
			       "[::1]:5000",	 "[fe80::1%eth0]:80", "[2001:db8::7]:29500",
			       "localhost:80" };
	const char *bad[] = { "127.0.0.1",    "127.0.0.1:0",	"127.0.0.1:65536", "127.0.0.1:-1",
			      "127.0.0.1:x",  "127.0.0.1:80x",	":80",		   "::1:5000",
			      "[::1]5000",    "[::1",		"[]:80",	   "[127.0.0.1]:80",
			      "host name:80", "host:",		"host:99999999999999999999" };
	char longroot[400];

	base_env();
	for (size_t i = 0; i < IBC_ARRAY_SIZE(good); i++) {
		expect_good("IBCOMM_ROOT", good[i]);
		CU_ASSERT_STRING_EQUAL(set.root, good[i]);
	}
	for (size_t i = 0; i < IBC_ARRAY_SIZE(bad); i++)
		expect_bad("IBCOMM_ROOT", bad[i]);
	memset(longroot, 'a', sizeof(longroot));
	strcpy(longroot + sizeof(longroot) - 6, ":8000");
	expect_bad("IBCOMM_ROOT", longroot);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "too long"));

	base_env();
	unsetenv("IBCOMM_ROOT");
	CU_ASSERT_EQUAL(load(), IBCOMM_ERR_INVALID);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "IBCOMM_ROOT"));
}

static void test_root_parse(void)
{
	char host[256], port[8];
	const char *why;

	CU_ASSERT_EQUAL(ibc_root_parse("[::1]:29500", host, sizeof(host), port, sizeof(port), &why), 0);
	CU_ASSERT_STRING_EQUAL(host, "::1");
	CU_ASSERT_STRING_EQUAL(port, "29500");
	CU_ASSERT_EQUAL(ibc_root_parse("n1:007", host, sizeof(host), port, sizeof(port), &why), 0);
	CU_ASSERT_STRING_EQUAL(host, "n1");
	CU_ASSERT_STRING_EQUAL(port, "7");
	CU_ASSERT_EQUAL(ibc_root_parse("abcdef:1", host, 4, port, sizeof(port), &why), -1);
}

static void test_transport_device(void)
{
	base_env();
	expect_good("IBCOMM_TRANSPORT", "tcp");
	CU_ASSERT_EQUAL(set.transport, IBC_TP_TCP);
	expect_good("IBCOMM_TRANSPORT", "rdma");
	CU_ASSERT_EQUAL(set.transport, IBC_TP_RDMA);
	expect_good("IBCOMM_TRANSPORT", "auto");
	CU_ASSERT_EQUAL(set.transport, IBC_TP_AUTO);
	expect_good("IBCOMM_TRANSPORT", "TCP");
	CU_ASSERT_EQUAL(set.transport, IBC_TP_TCP);
	expect_good("IBCOMM_TRANSPORT", "shm");
	CU_ASSERT_EQUAL(set.transport, IBC_TP_SHM);
	expect_bad("IBCOMM_TRANSPORT", "ib");
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "auto, rdma, shm, tcp"));
	expect_bad("IBCOMM_TRANSPORT", "tcp ");
	unsetenv("IBCOMM_TRANSPORT");

	expect_good("IBCOMM_DEVICE", "mlx5_0");
	CU_ASSERT_STRING_EQUAL(set.device, "mlx5_0");
	CU_ASSERT_EQUAL(set.ib_port, 0);
	expect_good("IBCOMM_DEVICE", "rxe0:1");
	CU_ASSERT_STRING_EQUAL(set.device, "rxe0");
	CU_ASSERT_EQUAL(set.ib_port, 1);
	expect_bad("IBCOMM_DEVICE", "mlx5_0:0");
	expect_bad("IBCOMM_DEVICE", "mlx5_0:x");
	expect_bad("IBCOMM_DEVICE", "mlx5_0:");
	expect_bad("IBCOMM_DEVICE", "mlx5_0:1:2");
	expect_bad("IBCOMM_DEVICE", ":1");
	expect_bad("IBCOMM_DEVICE", "a_device_name_that_is_much_longer_than_any_real_device_name_could_be");
	unsetenv("IBCOMM_DEVICE");

	expect_good("IBCOMM_GID_INDEX", "0");
	CU_ASSERT_EQUAL(set.gid_index, 0);
	expect_good("IBCOMM_GID_INDEX", "3");
	CU_ASSERT_EQUAL(set.gid_index, 3);
	expect_bad("IBCOMM_GID_INDEX", "-1");
	expect_bad("IBCOMM_GID_INDEX", "three");
	expect_bad("IBCOMM_GID_INDEX", "3 ");
	unsetenv("IBCOMM_GID_INDEX");

	expect_good("IBCOMM_IFNAME", "eth0");
	CU_ASSERT_STRING_EQUAL(set.ifname, "eth0");
	expect_bad("IBCOMM_IFNAME", "an_interface_name_too_long");
	/* the same rules when read alone (ibcomm_get_id) */
	{
		char ifname[IF_NAMESIZE] = "x";

		CU_ASSERT_EQUAL(ibc_settings_ifname(ifname, sizeof(ifname), err, sizeof(err)), IBCOMM_ERR_INVALID);
		CU_ASSERT_PTR_NOT_NULL(strstr(err, "IBCOMM_IFNAME='an_interface_name_too_long' is too long"));
		setenv("IBCOMM_IFNAME", "eth0", 1);
		CU_ASSERT_EQUAL(ibc_settings_ifname(ifname, sizeof(ifname), err, sizeof(err)), IBCOMM_OK);
		CU_ASSERT_STRING_EQUAL(ifname, "eth0");
		unsetenv("IBCOMM_IFNAME");
		CU_ASSERT_EQUAL(ibc_settings_ifname(ifname, sizeof(ifname), err, sizeof(err)), IBCOMM_OK);
		CU_ASSERT_STRING_EQUAL(ifname, "");
	}
}

static void test_timeout_debug_key(void)
{
	char longkey[300];

	base_env();
	expect_good("IBCOMM_TIMEOUT_MS", "0");
	CU_ASSERT_EQUAL(set.timeout_ms, 0);
	expect_good("IBCOMM_TIMEOUT_MS", "2500");
	CU_ASSERT_EQUAL(set.timeout_ms, 2500);
	expect_bad("IBCOMM_TIMEOUT_MS", "-5");
	expect_bad("IBCOMM_TIMEOUT_MS", "10s");
	expect_bad("IBCOMM_TIMEOUT_MS", "1e3");
	unsetenv("IBCOMM_TIMEOUT_MS");

	{
		int dflt = ibc_log_default();

		expect_good("IBCOMM_DEBUG", "INFO");
		CU_ASSERT_EQUAL(set.debug, IBC_LOG_INFO);
		expect_good("IBCOMM_DEBUG", "trace");
		CU_ASSERT_EQUAL(set.debug, IBC_LOG_TRACE);
		expect_good("IBCOMM_DEBUG", "WARN");
		CU_ASSERT_EQUAL(set.debug, IBC_LOG_WARN);
		expect_bad("IBCOMM_DEBUG", "LOUD");
		/* loading settings never changes the level of other communicators' messages */
		CU_ASSERT_EQUAL(ibc_log_default(), dflt);
		unsetenv("IBCOMM_DEBUG");
	}

	expect_good("IBCOMM_JOB_KEY", "s3cret");
	CU_ASSERT_STRING_EQUAL(set.job_key, "s3cret");
	memset(longkey, 'k', sizeof(longkey) - 1);
	longkey[sizeof(longkey) - 1] = '\0';
	setenv("IBCOMM_JOB_KEY", longkey, 1);
	CU_ASSERT_EQUAL(load(), IBCOMM_ERR_INVALID);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "IBCOMM_JOB_KEY"));
	CU_ASSERT_PTR_NULL(strstr(err, "kkkk")); /* a secret is never echoed */
	unsetenv("IBCOMM_JOB_KEY");
}

static void test_config_struct(void)
{
	ibcomm_config_t cfg = IBCOMM_CONFIG_INIT;
	ibcomm_status_t st;

	base_env();
	setenv("IBCOMM_SIZE", "4", 1);
	setenv("IBCOMM_TRANSPORT", "rdma", 1);
	setenv("IBCOMM_TIMEOUT_MS", "100", 1);

	/* unset fields come from the environment */
	CU_ASSERT_EQUAL_FATAL(ibc_settings_load(&cfg, &set, err, sizeof(err)), IBCOMM_OK);
	CU_ASSERT_EQUAL(set.nranks, 4);
	CU_ASSERT_EQUAL(set.transport, IBC_TP_RDMA);
	CU_ASSERT_EQUAL(set.timeout_ms, 100);

	/* set fields win */
	cfg.rank = 2;
	cfg.nranks = 3;
	cfg.root = "[::1]:7000";
	cfg.transport = "tcp";
	cfg.device = "mlx5_1:2";
	cfg.gid_index = 1;
	cfg.ifname = "lo";
	cfg.timeout_ms = 0;
	cfg.algo = "allreduce=rd";
	cfg.job_key = "k";
	st = ibc_settings_load(&cfg, &set, err, sizeof(err));
	CU_ASSERT_EQUAL_FATAL(st, IBCOMM_OK);
	CU_ASSERT_EQUAL(set.rank, 2);
	CU_ASSERT_EQUAL(set.nranks, 3);
	CU_ASSERT_STRING_EQUAL(set.root, "[::1]:7000");
	CU_ASSERT_EQUAL(set.transport, IBC_TP_TCP);
	CU_ASSERT_STRING_EQUAL(set.device, "mlx5_1");
	CU_ASSERT_EQUAL(set.ib_port, 2);
	CU_ASSERT_EQUAL(set.gid_index, 1);
	CU_ASSERT_STRING_EQUAL(set.ifname, "lo");
	CU_ASSERT_EQUAL(set.timeout_ms, 0);
	CU_ASSERT_EQUAL(set.algo[IBC_COLL_ALLREDUCE], IBC_ALGO_RD);
	CU_ASSERT_STRING_EQUAL(set.job_key, "k");

	/* bad fields are named */
	cfg.rank = 3;
	CU_ASSERT_EQUAL(ibc_settings_load(&cfg, &set, err, sizeof(err)), IBCOMM_ERR_INVALID);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "rank"));
	cfg.rank = 0;
	cfg.transport = "udp";
	CU_ASSERT_EQUAL(ibc_settings_load(&cfg, &set, err, sizeof(err)), IBCOMM_ERR_INVALID);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "udp"));
	cfg.transport = NULL;
	cfg.root = "nowhere";
	CU_ASSERT_EQUAL(ibc_settings_load(&cfg, &set, err, sizeof(err)), IBCOMM_ERR_INVALID);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "nowhere"));

	/* an older caller's smaller struct: the fields it does not know come from the environment */
	{
		/* allocated at the old size: reading past it is caught by ASan/valgrind */
		size_t old = offsetof(ibcomm_config_t, transport);
		ibcomm_config_t *small = malloc(old);

		CU_ASSERT_FATAL(small != NULL);
		cfg = (ibcomm_config_t)IBCOMM_CONFIG_INIT;
		cfg.size = old;
		cfg.rank = 1;
		memcpy(small, &cfg, old);
		CU_ASSERT_EQUAL(ibc_settings_load(small, &set, err, sizeof(err)), IBCOMM_OK);
		CU_ASSERT_EQUAL(set.rank, 1);
		CU_ASSERT_EQUAL(set.transport, IBC_TP_RDMA);
		free(small);
	}
	cfg.size = 0;
	CU_ASSERT_EQUAL(ibc_settings_load(&cfg, &set, err, sizeof(err)), IBCOMM_ERR_INVALID);
}

/* The transport knobs, the memory cap and the p2p bound: environment, config, errors. */
static void test_knobs(void)
{
	ibcomm_config_t cfg = IBCOMM_CONFIG_INIT;

	base_env();
	expect_good("IBCOMM_TCP_CHUNK", "65536");
	CU_ASSERT_EQUAL(set.tcp_chunk, 65536);
	expect_good("IBCOMM_TCP_CHUNK", "64K");
	CU_ASSERT_EQUAL(set.tcp_chunk, 65536);
	expect_bad("IBCOMM_TCP_CHUNK", "0");
	expect_bad("IBCOMM_TCP_CHUNK", "2G");
	expect_bad("IBCOMM_TCP_CHUNK", "64KB");
	expect_bad("IBCOMM_TCP_CHUNK", "-1");
	unsetenv("IBCOMM_TCP_CHUNK");
	expect_good("IBCOMM_TCP_SLOTS", "16");
	CU_ASSERT_EQUAL(set.tcp_slots, 16);
	expect_bad("IBCOMM_TCP_SLOTS", "0");
	expect_bad("IBCOMM_TCP_SLOTS", "1025");
	unsetenv("IBCOMM_TCP_SLOTS");
	expect_good("IBCOMM_SHM_CHUNK", "64K");
	CU_ASSERT_EQUAL(set.shm_chunk, 65536);
	expect_bad("IBCOMM_SHM_CHUNK", "63");
	unsetenv("IBCOMM_SHM_CHUNK");
	expect_good("IBCOMM_SHM_SLOTS", "8");
	CU_ASSERT_EQUAL(set.shm_slots, 8);
	expect_bad("IBCOMM_SHM_SLOTS", "0");
	unsetenv("IBCOMM_SHM_SLOTS");
	expect_good("IBCOMM_TCP_SPIN_US", "0");
	CU_ASSERT_EQUAL(set.tcp_spin_us, 0);
	expect_bad("IBCOMM_TCP_SPIN_US", "fast");
	expect_bad("IBCOMM_TCP_SPIN_US", "1000001");
	unsetenv("IBCOMM_TCP_SPIN_US");
	expect_good("IBCOMM_RDMA_SPIN_US", "0");
	CU_ASSERT_EQUAL(set.rdma_spin_us, 0);
	expect_good("IBCOMM_RDMA_SPIN_US", "1000000");
	CU_ASSERT_EQUAL(set.rdma_spin_us, 1000000);
	expect_bad("IBCOMM_RDMA_SPIN_US", "-1");
	expect_bad("IBCOMM_RDMA_SPIN_US", "1000001");
	unsetenv("IBCOMM_RDMA_SPIN_US");
	expect_good("IBCOMM_RDMA_CHUNK", "1M");
	CU_ASSERT_EQUAL(set.rdma_chunk, 1u << 20);
	expect_bad("IBCOMM_RDMA_CHUNK", "32");
	expect_bad("IBCOMM_RDMA_CHUNK", "32M");
	unsetenv("IBCOMM_RDMA_CHUNK");
	expect_good("IBCOMM_RDMA_SLOTS", "2");
	CU_ASSERT_EQUAL(set.rdma_slots, 2);
	expect_bad("IBCOMM_RDMA_SLOTS", "1");
	expect_bad("IBCOMM_RDMA_SLOTS", "257");
	unsetenv("IBCOMM_RDMA_SLOTS");
	expect_good("IBCOMM_MEM_LIMIT", "2G");
	CU_ASSERT_EQUAL(set.mem_limit, 2ull << 30);
	expect_bad("IBCOMM_MEM_LIMIT", "1000");
	expect_bad("IBCOMM_MEM_LIMIT", "99999999999999999999");
	unsetenv("IBCOMM_MEM_LIMIT");
	expect_good("IBCOMM_P2P_UNEXPECTED_MAX", "0");
	CU_ASSERT_EQUAL(set.p2p_unexpected_max, 0);
	expect_good("IBCOMM_P2P_UNEXPECTED_MAX", "4M");
	CU_ASSERT_EQUAL(set.p2p_unexpected_max, 4u << 20);
	expect_bad("IBCOMM_P2P_UNEXPECTED_MAX", "lots");
	/* the bound counts against the cap */
	setenv("IBCOMM_MEM_LIMIT", "8M", 1);
	expect_bad("IBCOMM_P2P_UNEXPECTED_MAX", "16777216");
	unsetenv("IBCOMM_MEM_LIMIT");
	unsetenv("IBCOMM_P2P_UNEXPECTED_MAX");
#ifdef IBCOMM_TEST_HOOKS
	expect_good("IBCOMM_TEST_QP_ERROR_AFTER", "7");
	CU_ASSERT_EQUAL(set.test_qp_error_after, 7);
	expect_bad("IBCOMM_TEST_QP_ERROR_AFTER", "x");
#else
	/* a build without --enable-test-hooks never reads the hook */
	expect_good("IBCOMM_TEST_QP_ERROR_AFTER", "x");
	CU_ASSERT_EQUAL(set.test_qp_error_after, 0);
#endif
	unsetenv("IBCOMM_TEST_QP_ERROR_AFTER");

	/* config fields win over the environment, -1 leaves it, bad values are named */
	setenv("IBCOMM_TCP_CHUNK", "4096", 1);
	setenv("IBCOMM_DEBUG", "TRACE", 1);
	CU_ASSERT_EQUAL_FATAL(ibc_settings_load(&cfg, &set, err, sizeof(err)), IBCOMM_OK);
	CU_ASSERT_EQUAL(set.tcp_chunk, 4096);
	CU_ASSERT_EQUAL(set.debug, IBC_LOG_TRACE);
	cfg.debug = "info";
	cfg.tcp_chunk = 8192;
	cfg.tcp_slots = 3;
	cfg.tcp_spin_us = 0;
	cfg.rdma_chunk = 128;
	cfg.rdma_slots = 4;
	cfg.mem_limit = 64 << 20;
	cfg.p2p_unexpected_max = 1 << 20;
	CU_ASSERT_EQUAL_FATAL(ibc_settings_load(&cfg, &set, err, sizeof(err)), IBCOMM_OK);
	CU_ASSERT_EQUAL(set.debug, IBC_LOG_INFO);
	CU_ASSERT_EQUAL(set.tcp_chunk, 8192);
	CU_ASSERT_EQUAL(set.tcp_slots, 3);
	CU_ASSERT_EQUAL(set.tcp_spin_us, 0);
	CU_ASSERT_EQUAL(set.rdma_chunk, 128);
	CU_ASSERT_EQUAL(set.rdma_slots, 4);
	CU_ASSERT_EQUAL(set.mem_limit, 64u << 20);
	CU_ASSERT_EQUAL(set.p2p_unexpected_max, 1u << 20);
	unsetenv("IBCOMM_TCP_CHUNK");
	unsetenv("IBCOMM_DEBUG");
	cfg.tcp_slots = -2;
	CU_ASSERT_EQUAL(ibc_settings_load(&cfg, &set, err, sizeof(err)), IBCOMM_ERR_INVALID);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "ibcomm_config_t.tcp_slots"));
	cfg.tcp_slots = -1;
	cfg.rdma_chunk = 1;
	CU_ASSERT_EQUAL(ibc_settings_load(&cfg, &set, err, sizeof(err)), IBCOMM_ERR_INVALID);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "ibcomm_config_t.rdma_chunk"));
	cfg.rdma_chunk = -1;
	cfg.debug = "loud";
	CU_ASSERT_EQUAL(ibc_settings_load(&cfg, &set, err, sizeof(err)), IBCOMM_ERR_INVALID);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "ibcomm_config_t.debug"));
}

/* Each communicator logs at its own level: one at INFO does not make another one talk. */
static void test_log_per_comm(void)
{
	struct ibcomm *loud = calloc(1, sizeof(*loud)), *quiet = calloc(1, sizeof(*quiet));
	char line[256], all[1024] = "";
	FILE *f = tmpfile();
	int saved = dup(2);

	CU_ASSERT_FATAL(loud && quiet && f && saved >= 0);
	loud->set.debug = IBC_LOG_INFO;
	quiet->set.debug = IBC_LOG_WARN;
	fflush(stderr);
	dup2(fileno(f), 2);
	ibc_cinfo(loud, "info from the loud communicator");
	ibc_cinfo(quiet, "info from the quiet communicator");
	ibc_ctrace(loud, "trace from the loud communicator");
	ibc_cwarn(quiet, "warning from the quiet communicator");
	fflush(stderr);
	dup2(saved, 2);
	close(saved);
	rewind(f);
	while (fgets(line, sizeof(line), f))
		strncat(all, line, sizeof(all) - strlen(all) - 1);
	fclose(f);
	CU_ASSERT_TRUE(strstr(all, "INFO") && strstr(all, "info from the loud communicator"));
	CU_ASSERT_PTR_NULL(strstr(all, "info from the quiet communicator"));
	CU_ASSERT_PTR_NULL(strstr(all, "trace from the loud communicator"));
	CU_ASSERT_PTR_NOT_NULL(strstr(all, "warning from the quiet communicator"));
	free(loud);
	free(quiet);
}

/* ---- IBCOMM_ALGO ---- */

static ibcomm_status_t algo(const char *s, enum ibc_algo out[IBC_COLL_COUNT])
{
	for (int c = 0; c < IBC_COLL_COUNT; c++)
		out[c] = (enum ibc_algo)99;
	err[0] = '\0';
	return ibc_algo_parse(s, out, err, sizeof(err));
}

static void test_algo_valid(void)
{
	/* every (collective, algorithm) the algorithm code implements */
	static const struct {
		enum ibc_coll c;
		const char *names;
	} table[] = {
		{ IBC_COLL_ALLREDUCE, "ring rd tree hier auto" }, { IBC_COLL_BROADCAST, "tree pipeline rd hier auto" },
		{ IBC_COLL_REDUCE, "tree linear auto" },	      { IBC_COLL_ALLGATHER, "ring linear rd auto" },
		{ IBC_COLL_REDUCE_SCATTER, "ring linear auto" }, { IBC_COLL_GATHER, "tree linear auto" },
		{ IBC_COLL_SCATTER, "tree linear auto" },	      { IBC_COLL_ALLTOALL, "pairwise linear auto" },
		{ IBC_COLL_BARRIER, "dissem tree auto" },
	};
	static const char *const every[] = { "auto", "ring", "rd", "tree", "pipeline", "linear", "pairwise", "dissem",
					     "hier" };
	enum ibc_algo out[IBC_COLL_COUNT];
	char s[128];

	for (size_t i = 0; i < IBC_ARRAY_SIZE(table); i++) {
		for (size_t a = 0; a < IBC_ARRAY_SIZE(every); a++) {
			bool valid = false;
			const char *p = table[i].names;

			/* whole-word match in the list */
			for (const char *q = strstr(p, every[a]); q; q = strstr(q + 1, every[a]))
				if ((q == p || q[-1] == ' ') &&
				    (q[strlen(every[a])] == ' ' || q[strlen(every[a])] == '\0'))
					valid = true;
			snprintf(s, sizeof(s), "%s=%s", ibc_coll_name(table[i].c), every[a]);
			if (valid) {
				CU_ASSERT_EQUAL(algo(s, out), IBCOMM_OK);
				CU_ASSERT_STRING_EQUAL(ibc_algo_name(out[table[i].c]), every[a]);
				for (int c = 0; c < IBC_COLL_COUNT; c++)
					if (c != (int)table[i].c)
						CU_ASSERT_EQUAL(out[c], IBC_ALGO_AUTO);
			} else {
				CU_ASSERT_EQUAL(algo(s, out), IBCOMM_ERR_INVALID);
				CU_ASSERT_PTR_NOT_NULL(strstr(err, every[a]));
				CU_ASSERT_PTR_NOT_NULL(strstr(err, ibc_coll_name(table[i].c)));
				/* the message lists the valid values */
				CU_ASSERT_PTR_NOT_NULL(strstr(err, "valid:"));
				CU_ASSERT_EQUAL(out[0], (enum ibc_algo)99); /* untouched */
			}
		}
	}

	CU_ASSERT_EQUAL(algo("allreduce=rd,broadcast=pipeline,alltoall=pairwise,barrier=dissem", out), IBCOMM_OK);
	CU_ASSERT_EQUAL(out[IBC_COLL_ALLREDUCE], IBC_ALGO_RD);
	CU_ASSERT_EQUAL(out[IBC_COLL_BROADCAST], IBC_ALGO_PIPELINE);
	CU_ASSERT_EQUAL(out[IBC_COLL_ALLTOALL], IBC_ALGO_PAIRWISE);
	CU_ASSERT_EQUAL(out[IBC_COLL_BARRIER], IBC_ALGO_DISSEM);
	CU_ASSERT_EQUAL(out[IBC_COLL_GATHER], IBC_ALGO_AUTO);
	CU_ASSERT_EQUAL(algo(" allreduce = Ring , reduce_scatter=linear", out), IBCOMM_OK);
	CU_ASSERT_EQUAL(out[IBC_COLL_ALLREDUCE], IBC_ALGO_RING);
	CU_ASSERT_EQUAL(out[IBC_COLL_REDUCE_SCATTER], IBC_ALGO_LINEAR);
	CU_ASSERT_EQUAL(algo("allreduce=hier,broadcast=hier", out), IBCOMM_OK);
	CU_ASSERT_EQUAL(out[IBC_COLL_ALLREDUCE], IBC_ALGO_HIER);
	CU_ASSERT_EQUAL(out[IBC_COLL_BROADCAST], IBC_ALGO_HIER);
	CU_ASSERT_EQUAL(out[IBC_COLL_REDUCE], IBC_ALGO_AUTO);
	CU_ASSERT_EQUAL(algo("", out), IBCOMM_OK);
	CU_ASSERT_EQUAL(out[IBC_COLL_BARRIER], IBC_ALGO_AUTO);
	CU_ASSERT_EQUAL(algo(NULL, out), IBCOMM_OK);
	CU_ASSERT_EQUAL(out[IBC_COLL_ALLREDUCE], IBC_ALGO_AUTO);
}

static void test_algo_bare(void)
{
	enum ibc_algo out[IBC_COLL_COUNT];

	CU_ASSERT_EQUAL_FATAL(algo("ring", out), IBCOMM_OK);
	CU_ASSERT_EQUAL(out[IBC_COLL_ALLREDUCE], IBC_ALGO_RING);
	CU_ASSERT_EQUAL(out[IBC_COLL_ALLGATHER], IBC_ALGO_RING);
	CU_ASSERT_EQUAL(out[IBC_COLL_REDUCE_SCATTER], IBC_ALGO_RING);
	CU_ASSERT_EQUAL(out[IBC_COLL_BROADCAST], IBC_ALGO_AUTO);
	CU_ASSERT_EQUAL(out[IBC_COLL_BARRIER], IBC_ALGO_AUTO);

	CU_ASSERT_EQUAL_FATAL(algo("tree", out), IBCOMM_OK);
	CU_ASSERT_EQUAL(out[IBC_COLL_ALLREDUCE], IBC_ALGO_TREE);
	CU_ASSERT_EQUAL(out[IBC_COLL_BROADCAST], IBC_ALGO_TREE);
	CU_ASSERT_EQUAL(out[IBC_COLL_REDUCE], IBC_ALGO_TREE);
	CU_ASSERT_EQUAL(out[IBC_COLL_GATHER], IBC_ALGO_TREE);
	CU_ASSERT_EQUAL(out[IBC_COLL_SCATTER], IBC_ALGO_TREE);
	CU_ASSERT_EQUAL(out[IBC_COLL_BARRIER], IBC_ALGO_TREE);
	CU_ASSERT_EQUAL(out[IBC_COLL_ALLGATHER], IBC_ALGO_AUTO);
	CU_ASSERT_EQUAL(out[IBC_COLL_ALLTOALL], IBC_ALGO_AUTO);

	CU_ASSERT_EQUAL_FATAL(algo("linear", out), IBCOMM_OK);
	CU_ASSERT_EQUAL(out[IBC_COLL_ALLREDUCE], IBC_ALGO_AUTO);
	CU_ASSERT_EQUAL(out[IBC_COLL_ALLTOALL], IBC_ALGO_LINEAR);
	CU_ASSERT_EQUAL(out[IBC_COLL_GATHER], IBC_ALGO_LINEAR);
	CU_ASSERT_EQUAL(out[IBC_COLL_BROADCAST], IBC_ALGO_AUTO);

	CU_ASSERT_EQUAL_FATAL(algo("rd", out), IBCOMM_OK);
	CU_ASSERT_EQUAL(out[IBC_COLL_ALLREDUCE], IBC_ALGO_RD);
	CU_ASSERT_EQUAL(out[IBC_COLL_BROADCAST], IBC_ALGO_RD);
	CU_ASSERT_EQUAL(out[IBC_COLL_ALLGATHER], IBC_ALGO_RD);
	CU_ASSERT_EQUAL(out[IBC_COLL_GATHER], IBC_ALGO_AUTO);

	CU_ASSERT_EQUAL_FATAL(algo("pipeline", out), IBCOMM_OK);
	CU_ASSERT_EQUAL(out[IBC_COLL_BROADCAST], IBC_ALGO_PIPELINE);
	CU_ASSERT_EQUAL_FATAL(algo("pairwise", out), IBCOMM_OK);
	CU_ASSERT_EQUAL(out[IBC_COLL_ALLTOALL], IBC_ALGO_PAIRWISE);
	CU_ASSERT_EQUAL_FATAL(algo("dissem", out), IBCOMM_OK);
	CU_ASSERT_EQUAL(out[IBC_COLL_BARRIER], IBC_ALGO_DISSEM);
	CU_ASSERT_EQUAL_FATAL(algo("auto", out), IBCOMM_OK);
	for (int c = 0; c < IBC_COLL_COUNT; c++)
		CU_ASSERT_EQUAL(out[c], IBC_ALGO_AUTO);
}

static void test_algo_invalid(void)
{
	enum ibc_algo out[IBC_COLL_COUNT];

	CU_ASSERT_EQUAL(algo("fastest", out), IBCOMM_ERR_INVALID);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "fastest"));
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "pairwise")); /* lists the values */
	CU_ASSERT_EQUAL(algo("allreduce=pipeline", out), IBCOMM_ERR_INVALID);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "ring, rd, tree"));
	CU_ASSERT_EQUAL(algo("allreduse=ring", out), IBCOMM_ERR_INVALID);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "allreduse"));
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "reduce_scatter")); /* lists the collectives */
	CU_ASSERT_EQUAL(algo("allreduce=", out), IBCOMM_ERR_INVALID);
	CU_ASSERT_EQUAL(algo("=ring", out), IBCOMM_ERR_INVALID);
	CU_ASSERT_EQUAL(algo("allreduce=ring,", out), IBCOMM_ERR_INVALID);
	CU_ASSERT_EQUAL(algo("allreduce=ring,,broadcast=tree", out), IBCOMM_ERR_INVALID);
	CU_ASSERT_EQUAL(algo("allreduce=ring,tree", out), IBCOMM_ERR_INVALID);
	CU_ASSERT_EQUAL(algo("allreduce=ring,allreduce=rd", out), IBCOMM_ERR_INVALID);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "twice"));
	CU_ASSERT_EQUAL(algo("allreduce=ring=rd", out), IBCOMM_ERR_INVALID);
	CU_ASSERT_EQUAL(out[0], (enum ibc_algo)99);

	/* through the environment: the variable is named */
	base_env();
	expect_bad("IBCOMM_ALGO", "broadcast=ring");
	expect_bad("IBCOMM_ALGO", "nope");
	expect_good("IBCOMM_ALGO", "alltoall=pairwise");
	CU_ASSERT_EQUAL(set.algo[IBC_COLL_ALLTOALL], IBC_ALGO_PAIRWISE);
}

static void test_names(void)
{
	CU_ASSERT_STRING_EQUAL(ibc_coll_name(IBC_COLL_REDUCE_SCATTER), "reduce_scatter");
	CU_ASSERT_STRING_EQUAL(ibc_coll_name(IBC_COLL_BARRIER), "barrier");
	CU_ASSERT_STRING_EQUAL(ibc_algo_name(IBC_ALGO_DISSEM), "dissem");
	CU_ASSERT_STRING_EQUAL(ibc_algo_name(IBC_ALGO_AUTO), "auto");
	CU_ASSERT_STRING_EQUAL(ibc_algo_name((enum ibc_algo)77), "?");
	CU_ASSERT_STRING_EQUAL(ibc_coll_name((enum ibc_coll)77), "?");
}

int main(int argc, char **argv)
{
	static const struct cm_test tests[] = {
		{ "defaults", test_defaults },
		{ "rank and size", test_rank_size },
		{ "launcher fallbacks", test_launchers },
		{ "IBCOMM_ROOT", test_root },
		{ "root parsing", test_root_parse },
		{ "transport, device, gid, ifname", test_transport_device },
		{ "timeout, debug, job key", test_timeout_debug_key },
		{ "config struct", test_config_struct },
		{ "transport knobs, memory cap, p2p bound", test_knobs },
		{ "log level per communicator", test_log_per_comm },
		{ "IBCOMM_ALGO per collective", test_algo_valid },
		{ "IBCOMM_ALGO bare values", test_algo_bare },
		{ "IBCOMM_ALGO errors", test_algo_invalid },
		{ "names", test_names },
	};

	return CM_MAIN1(argc, argv, "config", tests);
}
