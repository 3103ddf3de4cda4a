/*
 * ibcomm_bench's outputs, run as a user would (under ibcomm_run, or as a lone rank): --json
 * (a valid document with a row per size and nothing else on stdout), --plot (a PNG with
 * gnuplot; without gnuplot, or with one that fails, the table still and exit status 3),
 * -R 1 (registered buffers, results still right), and the progress line (only on a
 * terminal, never with --json or --csv). Every run is bounded: one still running after
 * PROC_LIMIT_S seconds is killed and the test fails.
 */
#define _GNU_SOURCE /* mkdtemp */
#include "config.h"

#include <CUnit/Basic.h>

#include "../cunit_main.h"
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "proc_runner.h"
#include "tool_util.h"

#ifndef IBCOMM_RUN_PATH
#error "IBCOMM_RUN_PATH must name the built ibcomm_run"
#endif
#ifndef IBCOMM_BENCH_PATH
#error "IBCOMM_BENCH_PATH must name the built ibcomm_bench"
#endif

static int test_count(const char *s, const char *what)
{
	int n = 0;

	for (const char *p = strstr(s, what); p; p = strstr(p + 1, what))
		n++;
	return n;
}

/* Rank 0's lines of the launcher's output, without their "[0] "; NULL if another rank wrote. */
static char *test_rank0_text(const char *s)
{
	char *text = calloc(1, strlen(s) + 1), *t = text;

	if (!text)
		abort();
	for (const char *p = s; *p;) {
		const char *nl = strchr(p, '\n');
		size_t len = nl ? (size_t)(nl - p) + 1 : strlen(p);

		if (strncmp(p, "[0] ", 4) != 0) {
			free(text);
			return NULL;
		}
		memcpy(t, p + 4, len - 4);
		t += len - 4;
		p += len;
	}
	return text;
}

/* An object or array at the top, braces balanced outside strings, strings closed. */
static bool test_json_balanced(const char *s)
{
	int depth = 0;

	if (*s != '{')
		return false;
	for (const char *p = s; *p; p++) {
		if (*p == '"') {
			for (p++; *p && *p != '"'; p++)
				if (*p == '\\' && p[1])
					p++;
			if (!*p)
				return false;
			continue;
		}
		depth += (*p == '{' || *p == '[') - (*p == '}' || *p == ']');
		if (depth < 0)
			return false;
		if (depth == 0 && p[1] && strcmp(p + 1, "\n") != 0)
			return false; /* something after the document */
	}
	return depth == 0;
}

static bool test_have_python3(void)
{
	return system("command -v python3 >/dev/null 2>&1") == 0;
}

/*
 * Parses text with Python's json module and checks it: `rows` rows, the sizes `sizes`
 * (comma-separated), every number a number, #wrong 0 where measured, the placements given.
 * 0: good; 1: bad; -1: python3 is missing (the structural checks have to do).
 */
static int test_python_check(const char *text, int rows, const char *sizes, const char *placements)
{
	static const char script[] =
		"import json, sys\n"
		"d = json.load(open(sys.argv[1]))\n"
		"rows, sizes, places = int(sys.argv[2]), [int(x) for x in sys.argv[3].split(',')], sys.argv[4].split(',')\n"
		"num = lambda x: isinstance(x, (int, float)) and not isinstance(x, bool)\n"
		"j = d['job']\n"
		"for k in ('ranks', 'root', 'iters', 'warmup'): assert num(j[k]), k\n"
		"for k in ('transport', 'collective', 'dtype', 'op'): assert isinstance(j[k], str), k\n"
		"assert len(d['rows']) == rows, len(d['rows'])\n"
		"assert [r['size'] for r in d['rows']] == sizes, [r['size'] for r in d['rows']]\n"
		"for r in d['rows']:\n"
		"    assert num(r['count']) and num(r['root']) and isinstance(r['type'], str), r\n"
		"    for p in ('out_of_place', 'in_place'):\n"
		"        if p not in places: assert r[p] is None, r; continue\n"
		"        for k in ('time_us', 'algbw_GBps', 'busbw_GBps'): assert num(r[p][k]), (p, k)\n"
		"        assert r[p]['wrong'] == 0, r\n"
		"assert d['wrong_total'] == 0 and d['ok'] is True and num(d['avg_busbw_GBps'])\n";
	char dir[] = "/tmp/test_bench_py.XXXXXX", json[64], py[64], cmd[512];
	FILE *f;
	int rc;

	if (!test_have_python3()) {
		fprintf(stderr, "test_bench: python3 not found: JSON checked by its structure only\n");
		return -1;
	}
	if (!mkdtemp(dir))
		return 1;
	snprintf(json, sizeof(json), "%s/b.json", dir);
	snprintf(py, sizeof(py), "%s/check.py", dir);
	f = fopen(json, "w");
	if (f) {
		fputs(text, f);
		fclose(f);
	}
	f = fopen(py, "w");
	if (f) {
		fputs(script, f);
		fclose(f);
	}
	snprintf(cmd, sizeof(cmd), "python3 %s %s %d %s %s", py, json, rows, sizes, placements);
	rc = system(cmd);
	if (rc != 0)
		fprintf(stderr, "test_bench: the JSON check failed:\n%s", text);
	unlink(json);
	unlink(py);
	rmdir(dir);
	return rc == 0 ? 0 : 1;
}

/* ---- --json ---- */

static void test_json_stdout(void)
{
	char *argv[] = { IBCOMM_RUN_PATH, "-n", "3", "--timeout", "50", "--", IBCOMM_BENCH_PATH, "-b", "1K", "-e", "64K",
			 "-f", "4", "-n", "2", "-w", "1", "--json", NULL };
	struct proc_out o;
	char *json;

	CU_ASSERT_FATAL(proc_run(argv, NULL, &o) == 0);
	CU_ASSERT_EQUAL(o.status, 0);
	json = test_rank0_text(o.out); /* only rank 0 writes */
	CU_ASSERT_PTR_NOT_NULL_FATAL(json);
	CU_ASSERT(test_json_balanced(json));
	CU_ASSERT_PTR_NULL(strstr(json, "\n#")); /* no table */
	CU_ASSERT_PTR_NOT_NULL(strstr(json, "\"tool\": \"ibcomm_bench\""));
	CU_ASSERT_PTR_NOT_NULL(strstr(json, "\"job\": {\"ranks\": 3, \"transport\": "));
	CU_ASSERT_PTR_NOT_NULL(strstr(json, "\"collective\": \"allreduce\", \"dtype\": \"float\", \"op\": \"sum\""));
	CU_ASSERT_PTR_NOT_NULL(strstr(json, "\"iters\": 2, \"warmup\": 1"));
	CU_ASSERT_EQUAL(test_count(json, "{\"collective\": \"allreduce\", \"size\": "), 4);
	CU_ASSERT_EQUAL(test_count(json, "\"wrong\": 0}"), 8);
	CU_ASSERT_EQUAL(test_count(json, "null"), 2); /* "stepbytes" and "algo" */
	CU_ASSERT_PTR_NOT_NULL(strstr(json, "\"wrong_total\": 0,"));
	CU_ASSERT_PTR_NOT_NULL(strstr(json, "\"ok\": true"));
	CU_ASSERT_NOT_EQUAL(test_python_check(json, 4, "1024,4096,16384,65536", "out_of_place,in_place"), 1);
	free(json);
	proc_out_free(&o);
}

static void test_json_file(void)
{
	char dir[] = "/tmp/test_bench_json.XXXXXX", path[64], opt[80], text[16384];
	char *argv[] = { IBCOMM_RUN_PATH, "-n", "2", "--timeout", "50", "--", IBCOMM_BENCH_PATH, "-C", "broadcast",
			 "-b", "8", "-e", "64", "-f", "8", "-n", "1", "-w", "0", "-r", "1", opt, NULL };
	char *both[] = { IBCOMM_RUN_PATH, "-n", "1", "--", IBCOMM_BENCH_PATH, "--json", "--csv", NULL };
	char *nowhere[] = { IBCOMM_RUN_PATH, "-n", "2", "--timeout", "50", "--", IBCOMM_BENCH_PATH,
			    "--json=/nonexistent/dir/b.json", NULL };
	struct proc_out o;
	FILE *f;
	size_t n;

	CU_ASSERT_FATAL(mkdtemp(dir) != NULL);
	snprintf(path, sizeof(path), "%s/b.json", dir);
	snprintf(opt, sizeof(opt), "--json=%s", path);
	CU_ASSERT_FATAL(proc_run(argv, NULL, &o) == 0);
	CU_ASSERT_EQUAL(o.status, 0);
	CU_ASSERT_EQUAL(o.outlen, 0); /* the document went to the file */
	proc_out_free(&o);
	f = fopen(path, "r");
	CU_ASSERT_PTR_NOT_NULL_FATAL(f);
	n = fread(text, 1, sizeof(text) - 1, f);
	fclose(f);
	text[n] = '\0';
	CU_ASSERT(test_json_balanced(text));
	CU_ASSERT_EQUAL(test_count(text, "{\"collective\": \"broadcast\", \"size\": "), 2);
	/* broadcast has no out-of-place form: null, as the table's N/A */
	CU_ASSERT_EQUAL(test_count(text, "\"root\": 1, \"out_of_place\": null, \"in_place\": {\"time_us\": "), 2);
	CU_ASSERT_NOT_EQUAL(test_python_check(text, 2, "8,64", "in_place"), 1);
	unlink(path);
	rmdir(dir);

	CU_ASSERT_FATAL(proc_run(both, NULL, &o) == 0);
	CU_ASSERT_EQUAL(o.status, 2);
	CU_ASSERT_PTR_NOT_NULL(strstr(o.err, "--json and --csv exclude each other"));
	proc_out_free(&o);
	CU_ASSERT_FATAL(proc_run(nowhere, NULL, &o) == 0);
	CU_ASSERT_EQUAL(o.status, 2);
	CU_ASSERT_PTR_NOT_NULL(strstr(o.err, "[0] ibcomm_bench: --json: cannot write /nonexistent/dir/b.json"));
	proc_out_free(&o);
}

/* ---- --plot ---- */

static void test_plot(void)
{
	char dir[] = "/tmp/test_bench_plot.XXXXXX", png[64];
	char *table[] = { IBCOMM_RUN_PATH, "-n", "2", "--timeout", "50", "--", IBCOMM_BENCH_PATH, "-b", "1K", "-e", "64K",
			  "-f", "4", "-n", "2", "-w", "1", "--plot", png, NULL };
	char *json[] = { IBCOMM_RUN_PATH, "-n", "3", "--timeout", "50", "--", IBCOMM_BENCH_PATH, "-C", "all", "-b", "1K",
			 "-e", "4K", "-n", "1", "-w", "0", "--json", "--plot", png, NULL };
	struct proc_out o;
	char *text;

	if (system("command -v gnuplot >/dev/null 2>&1") != 0) {
		cm_skip("gnuplot not installed: the plot itself is not tested");
		return;
	}
	CU_ASSERT_FATAL(mkdtemp(dir) != NULL);
	snprintf(png, sizeof(png), "%s/busbw.png", dir);
	CU_ASSERT_FATAL(proc_run(table, NULL, &o) == 0);
	CU_ASSERT_EQUAL(o.status, 0);
	CU_ASSERT_PTR_NOT_NULL(strstr(o.out, "[0] # Out of bounds values : 0 OK"));
	CU_ASSERT(tool_file_is_png(png));
	proc_out_free(&o);
	unlink(png);

	/* with --json, gnuplot's own output stays off stdout: the document is intact */
	CU_ASSERT_FATAL(proc_run(json, NULL, &o) == 0);
	CU_ASSERT_EQUAL(o.status, 0);
	CU_ASSERT(tool_file_is_png(png));
	text = test_rank0_text(o.out);
	CU_ASSERT_PTR_NOT_NULL_FATAL(text);
	CU_ASSERT(test_json_balanced(text));
	CU_ASSERT_EQUAL(test_count(text, "\"size\": "), 8 * 3);
	free(text);
	proc_out_free(&o);
	unlink(png);
	rmdir(dir);
}

/* Without gnuplot, or with one that fails: the table still, a message, exit status 3. */
static void test_plot_failures(void)
{
	char dir[] = "/tmp/test_bench_plot.XXXXXX", png[64], path_env[64], fake[80], ls[80];
	char *argv[] = { IBCOMM_RUN_PATH, "-n", "2", "--timeout", "50", "--", IBCOMM_BENCH_PATH, "-b", "1K", "-e", "4K",
			 "-n", "1", "-w", "0", "--plot", png, NULL };
	char *env[] = { path_env, NULL };
	static const char *const fakes[][2] = {
		{ "#!/bin/sh\nexit 4\n", "gnuplot exited with status 4; " },
		{ "#!/bin/sh\nwhile read -r line; do :; done\n", "gnuplot succeeded but " },
	};
	struct proc_out o;
	FILE *f;

	CU_ASSERT_FATAL(mkdtemp(dir) != NULL);
	snprintf(png, sizeof(png), "%s/busbw.png", dir);
	snprintf(path_env, sizeof(path_env), "PATH=%s", dir); /* a folder without gnuplot */
	/* but with ls, which libtool's wrapper of an uninstalled ibcomm_bench runs */
	snprintf(ls, sizeof(ls), "%s/ls", dir);
	CU_ASSERT(symlink(access("/bin/ls", X_OK) == 0 ? "/bin/ls" : "/usr/bin/ls", ls) == 0);
	CU_ASSERT_FATAL(proc_run(argv, &(struct proc_opts){ .env = env }, &o) == 0);
	CU_ASSERT_EQUAL(o.status, 3);
	CU_ASSERT_PTR_NOT_NULL(strstr(o.out, "[0] # Out of bounds values : 0 OK"));
	CU_ASSERT_EQUAL(test_count(o.out, "[0]         4096 "), 1);
	CU_ASSERT_PTR_NOT_NULL(strstr(o.err, "[0] ibcomm_bench: --plot: gnuplot not found on PATH: install it "
					     "(apt-get install gnuplot-nox); "));
	CU_ASSERT_EQUAL(access(png, F_OK), -1);
	/* one line from the ranks: nothing else went missing or complained */
	CU_ASSERT_EQUAL(test_count(o.err, "[0] "), 1);
	CU_ASSERT_EQUAL(test_count(o.err, "[1] "), 0);
	proc_out_free(&o);

	snprintf(fake, sizeof(fake), "%s/gnuplot", dir);
	for (size_t i = 0; i < sizeof(fakes) / sizeof(fakes[0]); i++) {
		f = fopen(fake, "w");
		CU_ASSERT_PTR_NOT_NULL_FATAL(f);
		fputs(fakes[i][0], f);
		fclose(f);
		chmod(fake, 0755);
		CU_ASSERT_FATAL(proc_run(argv, &(struct proc_opts){ .env = env }, &o) == 0);
		CU_ASSERT_EQUAL(o.status, 3);
		CU_ASSERT_PTR_NOT_NULL(strstr(o.out, "[0] # Out of bounds values : 0 OK"));
		CU_ASSERT_PTR_NOT_NULL(strstr(o.err, fakes[i][1]));
		proc_out_free(&o);
	}
	unlink(fake);
	unlink(ls);
	unlink(png);
	rmdir(dir);
}

/* ---- -R ---- */

static void test_register(void)
{
	static const char *const colls[] = { "allreduce", "allgather", "scatter" };
	char *bad[] = { IBCOMM_RUN_PATH, "-n", "1", "--", IBCOMM_BENCH_PATH, "-R", "2", NULL };
	struct proc_out o;

	for (size_t i = 0; i < sizeof(colls) / sizeof(colls[0]); i++) {
		char *argv[] = { IBCOMM_RUN_PATH, "-n", "3", "--timeout", "50", "--", IBCOMM_BENCH_PATH, "-R", "1",
				 "-C", (char *)colls[i], "-b", "96", "-e", "48K", "-f", "8", "-n", "2", "-w", "1", NULL };

		CU_ASSERT_FATAL(proc_run(argv, NULL, &o) == 0);
		if (o.status != 0)
			fprintf(stderr, "ibcomm_bench -R 1 -C %s: status %d\n%s%s", colls[i], o.status, o.out, o.err);
		CU_ASSERT_EQUAL(o.status, 0);
		CU_ASSERT_PTR_NOT_NULL(strstr(o.out, "[0] #  send and receive buffers registered (-R 1)"));
		CU_ASSERT_PTR_NOT_NULL(strstr(o.out, "[0] # Out of bounds values : 0 OK"));
		proc_out_free(&o);
	}
	CU_ASSERT_FATAL(proc_run(bad, NULL, &o) == 0);
	CU_ASSERT_EQUAL(o.status, 2);
	CU_ASSERT_PTR_NOT_NULL(strstr(o.err, "bad value for -R: 2"));
	proc_out_free(&o);
}

/* ---- --overlap ---- */

/* The table of --overlap at small sizes on 2 ranks: one row per size of 12 fields, 0 wrong. */
static void test_overlap(void)
{
	char *argv[] = { IBCOMM_RUN_PATH, "-n", "2", "--timeout", "60", "--", IBCOMM_BENCH_PATH, "--overlap",
			 "-b", "4K", "-e", "256K", "-f", "8", "-n", "2", "-w", "1", NULL };
	char *csv[] = { IBCOMM_RUN_PATH, "-n", "1", "--", IBCOMM_BENCH_PATH, "--overlap", "--csv", NULL };
	static const char *const sizes[] = { "4096", "32768", "262144" };
	struct proc_out o;
	char *text, *line;
	int rows = 0;

	CU_ASSERT_FATAL(proc_run(argv, NULL, &o) == 0);
	if (o.status != 0)
		fprintf(stderr, "ibcomm_bench --overlap: status %d\n%s%s", o.status, o.out, o.err);
	CU_ASSERT_EQUAL(o.status, 0);
	text = test_rank0_text(o.out);
	CU_ASSERT_PTR_NOT_NULL_FATAL(text);
	CU_ASSERT_PTR_NOT_NULL(strstr(text, "# Out of bounds values : 0 OK"));
	CU_ASSERT_PTR_NOT_NULL(strstr(text, "overlap"));
	for (line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
		char size[32], bar[3][2];
		double v[11];
		long long wrong;

		if (line[0] == '#')
			continue;
		/* size blocking | alone work wait wait/blk overlap | alone work wait wait/blk overlap | wrong */
		if (sscanf(line, "%31s %lf %1s %lf %lf %lf %lf %lf %1s %lf %lf %lf %lf %lf %1s %lld", size, &v[0], bar[0],
			   &v[1], &v[2], &v[3], &v[4], &v[5], bar[1], &v[6], &v[7], &v[8], &v[9], &v[10], bar[2],
			   &wrong) != 16 ||
		    rows >= 3 || strcmp(size, sizes[rows]) || wrong != 0 || v[0] <= 0 || v[5] < 0 || v[5] > 100 ||
		    v[10] < 0 || v[10] > 100) {
			fprintf(stderr, "ibcomm_bench --overlap: unexpected row: %s\n", line);
			CU_FAIL("a row of --overlap is not size, blocking | 5 | 5 | wrong");
		}
		rows++;
	}
	CU_ASSERT_EQUAL(rows, 3);
	free(text);
	proc_out_free(&o);
	CU_ASSERT_FATAL(proc_run(csv, NULL, &o) == 0);
	CU_ASSERT_EQUAL(o.status, 2);
	CU_ASSERT_PTR_NOT_NULL(strstr(o.err, "--overlap"));
	proc_out_free(&o);
}

/* ---- the progress line ---- */

/* A port free now on 127.0.0.1, for a lone rank's IBCOMM_ROOT. */
static int test_free_port(void)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM, 0), port = -1;

	if (fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
	    getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
		port = ntohs(sa.sin_port);
	if (fd >= 0)
		close(fd);
	return port;
}

static void test_progress(void)
{
	char *piped[] = { IBCOMM_RUN_PATH, "-n", "2", "--timeout", "50", "--", IBCOMM_BENCH_PATH, "-b", "1K", "-e", "4K",
			  "-n", "1", "-w", "0", NULL };
	char *lone[] = { IBCOMM_BENCH_PATH, "-b", "1K", "-e", "4K", "-n", "1", "-w", "0", NULL, NULL };
	char root[64];
	char *env[] = { "IBCOMM_RANK=0", "IBCOMM_SIZE=1", root, "IBCOMM_JOB_KEY=test_bench", NULL };
	static const char *const quiet[] = { "--json", "--csv" };
	struct proc_out o;
	int port = test_free_port();

	/* under the launcher stderr is a pipe: no progress line */
	CU_ASSERT_FATAL(proc_run(piped, NULL, &o) == 0);
	CU_ASSERT_EQUAL(o.status, 0);
	CU_ASSERT_EQUAL(o.errlen, 0);
	CU_ASSERT_PTR_NULL(strchr(o.out, '\r'));
	proc_out_free(&o);

	CU_ASSERT_FATAL(port > 0);
	snprintf(root, sizeof(root), "IBCOMM_ROOT=127.0.0.1:%d", port);
	/* a lone rank, stderr a pipe: none either */
	CU_ASSERT_FATAL(proc_run(lone, &(struct proc_opts){ .env = env }, &o) == 0);
	CU_ASSERT_EQUAL(o.status, 0);
	CU_ASSERT_EQUAL(o.errlen, 0);
	proc_out_free(&o);

	/* stderr a terminal: "\r"-updated, erased before each row; stdout untouched */
	CU_ASSERT_FATAL(proc_run(lone, &(struct proc_opts){ .env = env, .err_tty = true }, &o) == 0);
	CU_ASSERT_EQUAL(o.status, 0);
	CU_ASSERT_PTR_NOT_NULL(strstr(o.err, "\ribcomm_bench: allreduce 1024 B (1/3) out-of-place ..."));
	CU_ASSERT_PTR_NOT_NULL(strstr(o.err, "\ribcomm_bench: allreduce 4096 B (3/3) in-place ..."));
	CU_ASSERT_EQUAL(test_count(o.err, "\r"), 3 * 4); /* per size: 2 updates, an erasure ("\r", blanks, "\r") */
	CU_ASSERT_PTR_NULL(strchr(o.err, '\n'));
	CU_ASSERT_PTR_NULL(strchr(o.out, '\r'));
	CU_ASSERT_PTR_NOT_NULL(strstr(o.out, "# Out of bounds values : 0 OK"));
	proc_out_free(&o);

	/* a terminal, but --json or --csv: none */
	for (size_t i = 0; i < sizeof(quiet) / sizeof(quiet[0]); i++) {
		lone[9] = (char *)quiet[i];
		CU_ASSERT_FATAL(proc_run(lone, &(struct proc_opts){ .env = env, .err_tty = true }, &o) == 0);
		CU_ASSERT_EQUAL(o.status, 0);
		CU_ASSERT_EQUAL(o.errlen, 0);
		CU_ASSERT(o.outlen > 0);
		proc_out_free(&o);
	}
}

int main(int argc, char **argv)
{
	static const struct cm_test tests[] = {
		{ "--json on stdout", test_json_stdout },
		{ "--json=FILE, usage errors", test_json_file },
		{ "--plot with gnuplot", test_plot },
		{ "--plot without gnuplot, failing gnuplot", test_plot_failures },
		{ "-R 1", test_register },
		{ "progress line only on a terminal", test_progress },
		{ "--overlap", test_overlap },
	};

	signal(SIGPIPE, SIG_IGN);
	return CM_MAIN1(argc, argv, "ibcomm_bench outputs", tests);
}
