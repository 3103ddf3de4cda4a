/*
 * The launcher ibcomm_run, run as a user would: line prefixes, exit status of the first
 * failing rank, 128+signal, no process left behind, --timeout, the IBCOMM_* variables,
 * signal forwarding, usage errors. Then ibcomm_bench and the example, run by it, with their
 * correctness checks on. Every run is bounded: a launcher still running after
 * PROC_LIMIT_S seconds is killed and the test fails.
 */
#define _GNU_SOURCE /* mkdtemp, usleep */
#include "config.h"

#include <CUnit/Basic.h>

#include "../cunit_main.h"
#include <ctype.h>
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "proc_runner.h"
#include "tool_util.h"

#ifndef IBCOMM_RUN_PATH
#error "IBCOMM_RUN_PATH must name the built ibcomm_run"
#endif

/* Counts the lines of s that are exactly `line`. */
static int test_count_line(const char *s, const char *line)
{
	size_t n = strlen(line);
	int count = 0;

	for (const char *p = s; *p;) {
		const char *nl = strchr(p, '\n');
		size_t len = nl ? (size_t)(nl - p) : strlen(p);

		if (len == n && memcmp(p, line, n) == 0)
			count++;
		if (!nl)
			break;
		p = nl + 1;
	}
	return count;
}

/* Every line of s starts with "[R] " for a rank R < nranks, and s ends with a newline. */
static bool test_all_prefixed(const char *s, int nranks)
{
	size_t len = strlen(s);

	if (len > 0 && s[len - 1] != '\n')
		return false;
	for (const char *p = s; *p;) {
		const char *nl = strchr(p, '\n');
		char *end;
		long r;

		if (*p != '[')
			return false;
		r = strtol(p + 1, &end, 10);
		if (end == p + 1 || r < 0 || r >= nranks || end[0] != ']' || end[1] != ' ')
			return false;
		p = nl + 1;
	}
	return true;
}

/* A process is gone when kill(pid, 0) fails or it is a zombie nobody reaps yet. */
static bool test_pid_gone(pid_t pid)
{
	char path[64], buf[512];
	const char *paren;
	FILE *f;
	size_t n;

	if (kill(pid, 0) < 0 && errno == ESRCH)
		return true;
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	f = fopen(path, "r");
	if (!f)
		return true;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	paren = strrchr(buf, ')');
	return paren && (paren[2] == 'Z' || paren[2] == 'X');
}

/* Waits up to 3 s for every pid listed in the files dir/pid.* to be gone. */
static int test_pids_left(const char *dir, int expected_files)
{
	int left = 0, files = 0;

	for (int i = 0; i < 64; i++) {
		char path[512];
		FILE *f;

		snprintf(path, sizeof(path), "%s/pid.%d", dir, i);
		f = fopen(path, "r");
		if (!f)
			continue;
		files++;
		for (int pid; fscanf(f, "%d", &pid) == 1;) {
			double until = tool_now_s() + 3;

			while (!test_pid_gone(pid) && tool_now_s() < until)
				usleep(20000);
			if (!test_pid_gone(pid)) {
				fprintf(stderr, "test_run: pid %d (from %s) still running\n", pid, path);
				kill(pid, SIGKILL);
				left++;
			}
		}
		fclose(f);
		unlink(path);
	}
	CU_ASSERT_EQUAL(files, expected_files);
	return left;
}

static void test_prefix(void)
{
	char *argv[] = { IBCOMM_RUN_PATH, "-n", "3", "--", "sh", "-c",
			 "echo out$IBCOMM_RANK; echo err$IBCOMM_RANK >&2; echo two$IBCOMM_RANK", NULL };
	struct proc_out o;

	CU_ASSERT_FATAL(proc_run(argv, NULL, &o) == 0);
	CU_ASSERT_EQUAL(o.status, 0);
	CU_ASSERT_EQUAL(test_count_line(o.out, "[0] out0"), 1);
	CU_ASSERT_EQUAL(test_count_line(o.out, "[1] out1"), 1);
	CU_ASSERT_EQUAL(test_count_line(o.out, "[2] out2"), 1);
	CU_ASSERT_EQUAL(test_count_line(o.out, "[2] two2"), 1);
	CU_ASSERT_EQUAL(test_count_line(o.err, "[1] err1"), 1);
	CU_ASSERT_PTR_NULL(strstr(o.out, "err"));
	CU_ASSERT(test_all_prefixed(o.out, 3));
	CU_ASSERT(test_all_prefixed(o.err, 3));
	proc_out_free(&o);
}

static void test_partial_and_long_lines(void)
{
	/* rank 0: a last line with no newline; rank 1: one line of 200000 bytes */
	char *argv[] = { IBCOMM_RUN_PATH, "-n", "2", "--", "sh", "-c",
			 "if [ $IBCOMM_RANK = 0 ]; then printf 'no newline'; "
			 "else head -c 200000 /dev/zero | tr '\\000' x; echo; fi",
			 NULL };
	struct proc_out o;
	size_t xs = 0;

	CU_ASSERT_FATAL(proc_run(argv, NULL, &o) == 0);
	CU_ASSERT_EQUAL(o.status, 0);
	CU_ASSERT_EQUAL(test_count_line(o.out, "[0] no newline"), 1);
	CU_ASSERT(test_all_prefixed(o.out, 2));
	for (const char *p = o.out; *p; p++)
		xs += *p == 'x';
	CU_ASSERT_EQUAL(xs, 200000);
	proc_out_free(&o);
}

static void test_env(void)
{
	char *argv[] = { IBCOMM_RUN_PATH, "-n", "2", "--transport", "tcp", "--", "sh", "-c",
			 "echo \"$IBCOMM_RANK $IBCOMM_SIZE $IBCOMM_ROOT $IBCOMM_JOB_KEY $IBCOMM_TRANSPORT\"",
			 NULL };
	char root[2][128], key[2][128], tp[2][32];
	struct proc_out o;

	unsetenv("IBCOMM_JOB_KEY");
	CU_ASSERT_FATAL(proc_run(argv, NULL, &o) == 0);
	CU_ASSERT_EQUAL(o.status, 0);
	for (int r = 0; r < 2; r++) {
		char want[32];
		const char *line;
		int rank, size, port = 0;

		snprintf(want, sizeof(want), "[%d] %d 2 ", r, r);
		line = strstr(o.out, want);
		CU_ASSERT_PTR_NOT_NULL_FATAL(line);
		CU_ASSERT_EQUAL_FATAL(sscanf(line, "[%*d] %d %d %127s %127s %31s", &rank, &size, root[r], key[r],
					     tp[r]),
				      5);
		CU_ASSERT_EQUAL(rank, r);
		CU_ASSERT_EQUAL(size, 2);
		CU_ASSERT(strncmp(root[r], "127.0.0.1:", 10) == 0);
		port = atoi(root[r] + 10);
		CU_ASSERT(port > 0 && port < 65536);
		CU_ASSERT_EQUAL(strlen(key[r]), 32);
		for (const char *p = key[r]; *p; p++)
			CU_ASSERT(isxdigit((unsigned char)*p));
		CU_ASSERT_STRING_EQUAL(tp[r], "tcp");
	}
	CU_ASSERT_STRING_EQUAL(root[0], root[1]);
	CU_ASSERT_STRING_EQUAL(key[0], key[1]);
	proc_out_free(&o);

	/* a job key already set is kept; a fresh one each run otherwise */
	{
		char *argv2[] = { IBCOMM_RUN_PATH, "-n", "1", "sh", "-c", "echo \"$IBCOMM_JOB_KEY\"", NULL };

		setenv("IBCOMM_JOB_KEY", "my-secret", 1);
		CU_ASSERT_FATAL(proc_run(argv2, NULL, &o) == 0);
		unsetenv("IBCOMM_JOB_KEY");
		CU_ASSERT_EQUAL(o.status, 0);
		CU_ASSERT_EQUAL(test_count_line(o.out, "[0] my-secret"), 1);
		proc_out_free(&o);
		CU_ASSERT_FATAL(proc_run(argv2, NULL, &o) == 0);
		CU_ASSERT_EQUAL(strlen(o.out), 4 + 32 + 1);
		CU_ASSERT(strstr(o.out, key[0]) == NULL);
		proc_out_free(&o);
	}
}

/* The status of the first rank to fail; the others (and what they started) are ended. */
static void test_first_failure(void)
{
	char dir[] = "/tmp/ibcomm_test_run.XXXXXX";
	char script[512];
	char *argv[] = { IBCOMM_RUN_PATH, "-n", "4", "--", "sh", "-c", script, NULL };
	struct proc_out o;

	CU_ASSERT_FATAL(mkdtemp(dir) != NULL);
	/* every rank starts a background sleep and records its pid and its own; rank 2 fails
	 * with status 3 once all have written, rank 3 fails just after it with 5 (must not win) */
	snprintf(script, sizeof(script),
		 "d=%s; sleep 30 & echo \"$! $$\" > $d/tmp.$IBCOMM_RANK && mv $d/tmp.$IBCOMM_RANK $d/pid.$IBCOMM_RANK; "
		 "if [ $IBCOMM_RANK = 2 ]; then while [ $(ls $d | grep -c pid) -lt 4 ]; do sleep 0.05; done; "
		 "touch $d/done2; exit 3; fi; "
		 "if [ $IBCOMM_RANK = 3 ]; then while [ ! -e $d/done2 ]; do sleep 0.05; done; sleep 0.2; exit 5; fi; wait",
		 dir);
	CU_ASSERT_FATAL(proc_run(argv, NULL, &o) == 0);
	CU_ASSERT_EQUAL(o.status, 3);
	CU_ASSERT(o.seconds < 15);
	CU_ASSERT_PTR_NOT_NULL(strstr(o.err, "ibcomm_run: rank 2 exited with status 3"));
	CU_ASSERT_EQUAL(test_pids_left(dir, 4), 0);
	snprintf(script, sizeof(script), "%s/done2", dir);
	unlink(script);
	CU_ASSERT_EQUAL(rmdir(dir), 0);
	proc_out_free(&o);
}

static void test_killed_by_signal(void)
{
	char *argv[] = { IBCOMM_RUN_PATH, "-n", "3", "--", "sh", "-c",
			 "if [ $IBCOMM_RANK = 2 ]; then kill -9 $$; fi; exec sleep 30", NULL };
	struct proc_out o;

	CU_ASSERT_FATAL(proc_run(argv, NULL, &o) == 0);
	CU_ASSERT_EQUAL(o.status, 128 + 9);
	CU_ASSERT(o.seconds < 15);
	CU_ASSERT_PTR_NOT_NULL(strstr(o.err, "ibcomm_run: rank 2 killed by signal 9 (Killed)"));
	proc_out_free(&o);
}

/* A rank that ignores SIGTERM is killed: the launcher still returns, with rank 0's status. */
static void test_ignores_sigterm(void)
{
	char *argv[] = { IBCOMM_RUN_PATH, "-n", "2", "--", "sh", "-c",
			 "if [ $IBCOMM_RANK = 0 ]; then sleep 0.2; exit 7; fi; trap '' TERM; "
			 "while :; do sleep 0.1; done",
			 NULL };
	struct proc_out o;

	CU_ASSERT_FATAL(proc_run(argv, NULL, &o) == 0);
	CU_ASSERT_EQUAL(o.status, 7);
	CU_ASSERT(o.seconds < 15);
	proc_out_free(&o);
}

static void test_timeout(void)
{
	char dir[] = "/tmp/ibcomm_test_run.XXXXXX";
	char script[256];
	char *argv[] = { IBCOMM_RUN_PATH, "-n", "2", "--timeout", "1", "--", "sh", "-c", script, NULL };
	struct rusage before, after;
	double cpu;
	struct proc_out o;

	CU_ASSERT_FATAL(mkdtemp(dir) != NULL);
	snprintf(script, sizeof(script), "echo $$ > %s/pid.$IBCOMM_RANK; exec sleep 30", dir);
	getrusage(RUSAGE_CHILDREN, &before);
	CU_ASSERT_FATAL(proc_run(argv, NULL, &o) == 0);
	getrusage(RUSAGE_CHILDREN, &after);
	CU_ASSERT_EQUAL(o.status, 124);
	CU_ASSERT(o.seconds >= 0.9 && o.seconds < 10);
	/* waiting is blocking, never spinning: the launcher (and sh, sleep) used little CPU */
	cpu = (double)(after.ru_utime.tv_sec - before.ru_utime.tv_sec + after.ru_stime.tv_sec -
		       before.ru_stime.tv_sec) +
	      (double)(after.ru_utime.tv_usec - before.ru_utime.tv_usec + after.ru_stime.tv_usec -
		       before.ru_stime.tv_usec) / 1e6;
	CU_ASSERT(cpu < 0.5);
	CU_ASSERT_PTR_NOT_NULL(strstr(o.err, "timeout"));
	CU_ASSERT_EQUAL(test_pids_left(dir, 2), 0);
	rmdir(dir);
	proc_out_free(&o);
}

static void test_success_and_exec_failure(void)
{
	char *ok[] = { IBCOMM_RUN_PATH, "-n", "4", "true", NULL };
	char *missing[] = { IBCOMM_RUN_PATH, "-n", "2", "--", "/nonexistent/program", NULL };
	struct proc_out o;

	CU_ASSERT_FATAL(proc_run(ok, NULL, &o) == 0);
	CU_ASSERT_EQUAL(o.status, 0);
	CU_ASSERT_EQUAL(o.outlen, 0);
	CU_ASSERT_EQUAL(o.errlen, 0);
	proc_out_free(&o);
	CU_ASSERT_FATAL(proc_run(missing, NULL, &o) == 0);
	CU_ASSERT_EQUAL(o.status, 127);
	CU_ASSERT_PTR_NOT_NULL(strstr(o.err, "cannot run /nonexistent/program"));
	proc_out_free(&o);
}

/* SIGINT to the launcher reaches the ranks, which may handle it. */
static void test_forward_signal(void)
{
	char *argv[] = { IBCOMM_RUN_PATH, "-n", "2", "--timeout", "30", "--", "sh", "-c",
			 "trap 'echo caught$IBCOMM_RANK; exit 5' INT; echo ready; "
			 "while :; do sleep 0.05; done",
			 NULL };
	char *plain[] = { IBCOMM_RUN_PATH, "-n", "2", "--timeout", "30", "--", "sh", "-c",
			  "echo ready; exec sleep 30", NULL };
	struct proc_out o;

	CU_ASSERT_FATAL(proc_run(argv, &(struct proc_opts){ .signal = SIGINT, .signal_lines = 2 }, &o) == 0);
	CU_ASSERT_EQUAL(o.status, 5);
	CU_ASSERT(o.seconds < 15);
	CU_ASSERT_EQUAL(test_count_line(o.out, "[0] caught0"), 1);
	CU_ASSERT_EQUAL(test_count_line(o.out, "[1] caught1"), 1);
	proc_out_free(&o);

	CU_ASSERT_FATAL(proc_run(plain, &(struct proc_opts){ .signal = SIGTERM, .signal_lines = 2 }, &o) == 0);
	CU_ASSERT_EQUAL(o.status, 128 + SIGTERM);
	CU_ASSERT(o.seconds < 15);
	proc_out_free(&o);
}

static void test_usage(void)
{
	char *none[] = { IBCOMM_RUN_PATH, NULL };
	char *noprog[] = { IBCOMM_RUN_PATH, "-n", "2", NULL };
	char *zero[] = { IBCOMM_RUN_PATH, "-n", "0", "true", NULL };
	char *bad_n[] = { IBCOMM_RUN_PATH, "-n", "two", "true", NULL };
	char *bad_timeout[] = { IBCOMM_RUN_PATH, "-n", "1", "--timeout", "-1", "true", NULL };
	char *bad_opt[] = { IBCOMM_RUN_PATH, "--bogus", "-n", "1", "true", NULL };
	char *bad_bind[] = { IBCOMM_RUN_PATH, "-n", "1", "--bind", "socket", "true", NULL };
	char *help[] = { IBCOMM_RUN_PATH, "--help", NULL };
	char **bad[] = { none, noprog, zero, bad_n, bad_timeout, bad_opt, bad_bind };
	struct proc_out o;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		CU_ASSERT_FATAL(proc_run(bad[i], NULL, &o) == 0);
		CU_ASSERT_EQUAL(o.status, 2);
		CU_ASSERT(o.errlen > 0);
		proc_out_free(&o);
	}
	CU_ASSERT_FATAL(proc_run(help, NULL, &o) == 0);
	CU_ASSERT_EQUAL(o.status, 0);
	CU_ASSERT_PTR_NOT_NULL(strstr(o.out, "Usage: ibcomm_run"));
	proc_out_free(&o);
}

/* --bind core: rank 0 on the first CPU the launcher may use, alone; with one CPU more ranks than
 * the launcher has, the last rank is not bound. */
static void test_bind(void)
{
	char ranks[16], first[16], line[64];
	char *argv[] = { IBCOMM_RUN_PATH, "-n", ranks, "--bind", "core", "--", "sh", "-c",
			 "grep Cpus_allowed_list /proc/self/status", NULL };
	cpu_set_t cpus;
	struct proc_out o;
	int n, c0 = -1;

	CU_ASSERT_FATAL(sched_getaffinity(0, sizeof(cpus), &cpus) == 0);
	n = CPU_COUNT(&cpus);
	for (int c = 0; c < CPU_SETSIZE && c0 < 0; c++)
		if (CPU_ISSET(c, &cpus))
			c0 = c;
	snprintf(ranks, sizeof(ranks), "%d", n + 1);
	snprintf(first, sizeof(first), "%d", c0);
	CU_ASSERT_FATAL(proc_run(argv, NULL, &o) == 0);
	CU_ASSERT_EQUAL(o.status, 0);
	snprintf(line, sizeof(line), "[0] Cpus_allowed_list:\t%s", first);
	CU_ASSERT_EQUAL(test_count_line(o.out, line), 1);
	snprintf(line, sizeof(line), "[%d] Cpus_allowed_list:\t%s", n, first);
	if (n > 1) /* unbound: the launcher's whole set, not the first CPU alone */
		CU_ASSERT_EQUAL(test_count_line(o.out, line), 0);
	proc_out_free(&o);
}

/* ---- the benchmark and the example, run by the launcher ---- */

static void test_bench_collectives(void)
{
	static const char *const colls[] = { "allreduce", "broadcast", "reduce",  "allgather",
					     "reduce_scatter", "gather", "scatter", "alltoall" };

	for (size_t i = 0; i < sizeof(colls) / sizeof(colls[0]); i++) {
		char *argv[] = { IBCOMM_RUN_PATH, "-n", "3", "--timeout", "50", "--", IBCOMM_BENCH_PATH,
				 "-b", "8", "-e", "96K", "-f", "8", "-n", "2", "-w", "1", "-c", "1",
				 "-r", "1", "-C", (char *)colls[i], NULL };
		struct proc_out o;

		CU_ASSERT_FATAL(proc_run(argv, NULL, &o) == 0);
		if (o.status != 0)
			fprintf(stderr, "ibcomm_bench -C %s: status %d\n%s%s", colls[i], o.status, o.out, o.err);
		CU_ASSERT_EQUAL(o.status, 0);
		CU_ASSERT_PTR_NOT_NULL(strstr(o.out, "# Out of bounds values : 0 OK"));
		proc_out_free(&o);
	}
}

static void test_bench_types_ops(void)
{
	static const char *const cases[][2] = {
		{ "half", "sum" },   { "bfloat16", "avg" }, { "int8", "prod" },   { "uint8", "max" },
		{ "int64", "min" },  { "double", "prod" },  { "uint32", "avg" },  { "float", "avg" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *argv[] = { IBCOMM_RUN_PATH, "-n", "4", "--timeout", "50", "--", IBCOMM_BENCH_PATH,
				 "-b", "4", "-e", "40000", "-f", "10", "-n", "1", "-w", "0", "-c", "1",
				 "-d", (char *)cases[i][0], "-o", (char *)cases[i][1], "--csv", NULL };
		struct proc_out o;

		CU_ASSERT_FATAL(proc_run(argv, NULL, &o) == 0);
		if (o.status != 0)
			fprintf(stderr, "ibcomm_bench -d %s -o %s: status %d\n%s%s", cases[i][0], cases[i][1],
				o.status, o.out, o.err);
		CU_ASSERT_EQUAL(o.status, 0);
		CU_ASSERT_PTR_NOT_NULL(strstr(o.out, "[0] collective,nranks,size,count,type,redop,root,"));
		proc_out_free(&o);
	}
}

static void test_example(void)
{
	char *argv[] = { IBCOMM_RUN_PATH, "-n", "3", "--timeout", "50", "--", IBCOMM_EXAMPLE_PATH, NULL };
	struct proc_out o;

	CU_ASSERT_FATAL(proc_run(argv, NULL, &o) == 0);
	CU_ASSERT_EQUAL(o.status, 0);
	/* data[i] = rank + i, summed over 3 ranks: 3 + 3i */
	CU_ASSERT_PTR_NOT_NULL(strstr(o.out, "[1] rank 1 of 3: 3 6 9 12 (over "));
	proc_out_free(&o);
}

int main(int argc, char **argv)
{
	static const struct cm_test launcher[] = {
		{ "line prefixes", test_prefix },
		{ "partial and long lines", test_partial_and_long_lines },
		{ "IBCOMM_* variables", test_env },
		{ "first failure, nothing left", test_first_failure },
		{ "rank killed by a signal", test_killed_by_signal },
		{ "rank ignoring SIGTERM", test_ignores_sigterm },
		{ "--timeout", test_timeout },
		{ "success, exec failure", test_success_and_exec_failure },
		{ "signals forwarded", test_forward_signal },
		{ "usage errors", test_usage },
		{ "--bind core", test_bind },
	};
	static const struct cm_test tools[] = {
		{ "every collective, checked", test_bench_collectives },
		{ "datatypes and ops, checked", test_bench_types_ops },
		{ "examples/allreduce", test_example },
	};
	static const struct cm_suite suites[] = {
		CM_SUITE("ibcomm_run", launcher),
		CM_SUITE("ibcomm_bench and the example, under ibcomm_run", tools),
	};

	signal(SIGPIPE, SIG_IGN);
	return cm_main(argc, argv, suites, CM_COUNT(suites));
}
