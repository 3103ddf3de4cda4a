/*
 * ibcomm_bench's report, all on rank 0: the progress line on a terminal, the table or CSV
 * row of each size, and at the end the --json document and the --plot of busbw by gnuplot.
 */
#define _GNU_SOURCE
#include "config.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ibcomm.h"
#include "bench.h"
#include "tool_util.h"

/* Erases the progress line, if one is shown, so that the next output starts on a clean line. */
void bench_progress_clear(struct bench *b)
{
	if (b->progress_len <= 0)
		return;
	fprintf(b->progress_out, "\r%*s\r", b->progress_len, "");
	fflush(b->progress_out);
	b->progress_len = 0;
}

/* "\r" and the line, padded to cover a longer previous one. */
void bench_progress(struct bench *b, size_t bytes, bool ip)
{
	char line[160];
	double now = tool_now_s(), last = b->progress_last;
	int n;

	if (!b->progress)
		return;
	b->progress_last = now;
	if (b->progress_launched) {
		if (now - last < 0.5)
			return; /* short placements: the table itself shows progress */
		fflush(stdout);
		usleep(20000);
	}
	n = snprintf(line, sizeof(line), "ibcomm_bench: %s %zu B (%d/%d) %s ...", bench_colls[b->kind].name, bytes,
		     b->step, b->steps, ip ? "in-place" : "out-of-place");
	if (n < 0)
		return;
	n = n < (int)sizeof(line) ? n : (int)sizeof(line) - 1;
	if (n < b->progress_len)
		n = b->progress_len;
	fprintf(b->progress_out, "\r%-*s", n, line);
	fflush(b->progress_out);
	b->progress_len = n;
}

void bench_die(struct bench *b, const char *what, ibcomm_status_t st)
{
	bench_progress_clear(b);
	fprintf(stderr, "ibcomm_bench: rank %d: %s failed: %s: %s\n", b->rank, what, ibcomm_strerror(st),
		ibcomm_last_error(b->comm));
	exit(1);
}

void bench_print_header(const struct bench *b)
{
	const struct bench_coll *c = &bench_colls[b->kind];

	printf("# ibcomm_bench: %s, %d ranks, transport %s\n", c->name, b->nranks, b->transport);
	printf("#  minBytes %zu maxBytes %zu step: ", b->min_bytes, b->max_bytes);
	if (b->step_bytes)
		printf("%zu(bytes)", b->step_bytes);
	else
		printf("%g(factor)", b->factor);
	printf(" warmup iters: %d iters: %d validation: %d\n", b->warmup, b->iters, b->check);
	if (b->reg)
		printf("#  send and receive buffers registered (-R 1)\n");
	if (getenv("IBCOMM_ALGO"))
		printf("#  IBCOMM_ALGO=%s\n", getenv("IBCOMM_ALGO"));
	printf("#\n");
	printf("# %10s  %12s  %8s  %6s  %6s  %30s  %30s\n", "", "", "", "", "", "out-of-place   ", "in-place   ");
	printf("# %10s  %12s  %8s  %6s  %6s  %7s  %6s  %6s  %6s  %7s  %6s  %6s  %6s\n", "size", "count", "type",
	       "redop", "root", "time", "algbw", "busbw", "#wrong", "time", "algbw", "busbw", "#wrong");
	printf("# %10s  %12s  %8s  %6s  %6s  %7s  %6s  %6s  %6s  %7s  %6s  %6s  %6s\n", "(B)", "(elements)", "", "",
	       "", "(us)", "(GB/s)", "(GB/s)", "", "(us)", "(GB/s)", "(GB/s)", "");
	fflush(stdout);
}

static const char *bench_redop(const struct bench *b, enum bench_kind kind)
{
	return bench_colls[kind].reducing ? bench_ops[b->op] : "none";
}

static int bench_row_root(const struct bench *b, enum bench_kind kind)
{
	return bench_colls[kind].rooted ? b->root : -1;
}

static void bench_print_row(const struct bench *b, const struct bench_row *row)
{
	const char *name = bench_colls[row->kind].name;
	const char *type = bench_dtypes[b->dtype_index].name;
	const char *redop = bench_redop(b, row->kind);
	int root = bench_row_root(b, row->kind);

	if (!b->csv)
		printf("  %10zu  %12zu  %8s  %6s  %6d", row->bytes, row->count, type, redop, root);
	for (int k = 0; k < 2; k++) {
		const struct bench_result *res = &row->res[k];
		char wrong[24];

		if (!res->done) {
			if (!b->csv)
				printf("  %7s  %6s  %6s  %6s", "N/A", "N/A", "N/A", "N/A");
			continue;
		}
		if (res->wrong < 0)
			snprintf(wrong, sizeof(wrong), b->csv ? "" : "N/A");
		else
			snprintf(wrong, sizeof(wrong), "%lld", (long long)res->wrong);
		if (b->csv)
			printf("%s,%d,%zu,%zu,%s,%s,%d,%s,%.3f,%.4f,%.4f,%s\n", name, b->nranks, row->bytes, row->count,
			       type, redop, root, k ? "in_place" : "out_of_place", res->time_us, row->algbw[k],
			       row->busbw[k], wrong);
		else
			printf(res->time_us < 10000 ? "  %7.2f  %6.2f  %6.2f  %6s" : "  %7.0f  %6.2f  %6.2f  %6s",
			       res->time_us, row->algbw[k], row->busbw[k], wrong);
	}
	if (!b->csv)
		printf("\n");
	fflush(stdout);
}

/* Rank 0 keeps every row, for --json and --plot, and prints it in the table or CSV. */
void bench_record(struct bench *b, size_t bytes, const struct bench_result res[2])
{
	struct bench_row *row;

	if (b->nrows == b->rows_cap) {
		size_t cap = b->rows_cap ? 2 * b->rows_cap : 64;
		struct bench_row *rows = realloc(b->rows, cap * sizeof(*rows));

		if (!rows) {
			bench_progress_clear(b);
			fprintf(stderr, "ibcomm_bench: rank 0: out of memory for %zu result rows\n", cap);
			exit(1);
		}
		b->rows = rows;
		b->rows_cap = cap;
	}
	row = &b->rows[b->nrows++];
	memset(row, 0, sizeof(*row));
	row->kind = b->kind;
	row->bytes = bytes;
	row->count = b->cnt;
	for (int k = 0; k < 2; k++) {
		row->res[k] = res[k];
		if (!res[k].done)
			continue;
		row->algbw[k] = res[k].time_us > 0 ? (double)bytes / 1e3 / res[k].time_us : 0;
		row->busbw[k] = row->algbw[k] * bench_busbw_factor(b->kind, b->nranks);
		b->busbw_sum += row->busbw[k];
		b->busbw_n++;
	}
	bench_progress_clear(b);
	if (!b->json)
		bench_print_row(b, row);
}

/* ---- --json ---- */

static void bench_json_result(FILE *f, const struct bench_row *row, int k)
{
	const struct bench_result *res = &row->res[k];

	if (!res->done) {
		fputs("null", f);
		return;
	}
	fputs("{\"time_us\": ", f);
	tool_json_num(f, "%.3f", res->time_us);
	fputs(", \"algbw_GBps\": ", f);
	tool_json_num(f, "%.6g", row->algbw[k]);
	fputs(", \"busbw_GBps\": ", f);
	tool_json_num(f, "%.6g", row->busbw[k]);
	if (res->wrong < 0)
		fputs(", \"wrong\": null}", f);
	else
		fprintf(f, ", \"wrong\": %lld}", (long long)res->wrong);
}

void bench_print_json(const struct bench *b, FILE *f)
{
	const char *algo = getenv("IBCOMM_ALGO");

	fputs("{\n  \"tool\": \"ibcomm_bench\",\n  \"job\": {\"ranks\": ", f);
	fprintf(f, "%d, \"transport\": ", b->nranks);
	tool_json_str(f, b->transport);
	fputs(", \"collective\": ", f);
	tool_json_str(f, b->coll);
	fprintf(f, ", \"dtype\": \"%s\", \"op\": \"%s\", \"root\": %d, \"iters\": %d, \"warmup\": %d, ",
		bench_dtypes[b->dtype_index].name, bench_ops[b->op], b->root, b->iters, b->warmup);
	fprintf(f, "\"minbytes\": %zu, \"maxbytes\": %zu, ", b->min_bytes, b->max_bytes);
	if (b->step_bytes)
		fprintf(f, "\"stepfactor\": null, \"stepbytes\": %zu, ", b->step_bytes);
	else
		fprintf(f, "\"stepfactor\": %g, \"stepbytes\": null, ", b->factor);
	fprintf(f, "\"check\": %s, \"registered\": %s, \"algo\": ", b->check ? "true" : "false",
		b->reg ? "true" : "false");
	if (algo)
		tool_json_str(f, algo);
	else
		fputs("null", f);
	fputs("},\n  \"rows\": [", f);
	for (size_t i = 0; i < b->nrows; i++) {
		const struct bench_row *row = &b->rows[i];

		fprintf(f, "%s\n    {\"collective\": \"%s\", \"size\": %zu, \"count\": %zu, \"type\": \"%s\", ",
			i ? "," : "", bench_colls[row->kind].name, row->bytes, row->count,
			bench_dtypes[b->dtype_index].name);
		fprintf(f, "\"redop\": \"%s\", \"root\": %d, \"out_of_place\": ", bench_redop(b, row->kind),
			bench_row_root(b, row->kind));
		bench_json_result(f, row, 0);
		fputs(", \"in_place\": ", f);
		bench_json_result(f, row, 1);
		fputc('}', f);
	}
	fprintf(f, "%s],\n  \"wrong_total\": %lld,\n  \"avg_busbw_GBps\": ", b->nrows ? "\n  " : "",
		(long long)b->wrong_total);
	tool_json_num(f, "%.6g", b->busbw_n ? b->busbw_sum / b->busbw_n : 0.0);
	fprintf(f, ",\n  \"ok\": %s\n}\n", b->wrong_total ? "false" : "true");
}

/* ---- --plot: busbw against size, drawn by gnuplot ---- */

/* Finds prog in PATH: 0 and its path in out, or -1. */
static int bench_find_program(const char *prog, char *out, size_t outlen)
{
	const char *path = getenv("PATH");

	if (!path)
		path = "/usr/local/bin:/usr/bin:/bin";
	for (const char *p = path;;) {
		const char *colon = strchr(p, ':');
		size_t len = colon ? (size_t)(colon - p) : strlen(p);
		int n = len ? snprintf(out, outlen, "%.*s/%s", (int)len, p, prog)
			    : snprintf(out, outlen, "./%s", prog); /* an empty entry is the current folder */

		if (n > 0 && (size_t)n < outlen && access(out, X_OK) == 0)
			return 0;
		if (!colon)
			return -1;
		p = colon + 1;
	}
}

/* A gnuplot single-quoted string: '' stands for a quote, nothing else is special. */
static void bench_gp_str(FILE *f, const char *s)
{
	fputc('\'', f);
	for (; *s; s++) {
		if (*s == '\'')
			fputc('\'', f);
		fputc((unsigned char)*s < 0x20 ? '?' : *s, f);
	}
	fputc('\'', f);
}

/* 1024 -> "1K", 3145728 -> "3M", 1000 -> "1000" */
static void bench_size_label(size_t v, char *buf, size_t len)
{
	static const char units[] = "KMG";
	int u = -1;

	while (u < 2 && v && v % 1024 == 0) {
		v /= 1024;
		u++;
	}
	if (u < 0)
		snprintf(buf, len, "%zu", v);
	else
		snprintf(buf, len, "%zu%c", v, units[u]);
}

/* The x range is that of the sizes; ticks at powers of two, at most a dozen. */
static void bench_plot_xaxis(const struct bench *b, FILE *f)
{
	double lo = 0, hi = 0;
	int e0, e1, step;

	for (size_t i = 0; i < b->nrows; i++) {
		double v = (double)b->rows[i].bytes;

		if (v > 0 && (lo == 0 || v < lo))
			lo = v;
		hi = v > hi ? v : hi;
	}
	if (lo == hi) {
		lo /= 2;
		hi *= 2;
	}
	/* a margin, so that the points at the ends and their ticks stay inside the frame */
	fprintf(f, "set xrange [%.17g:%.17g]\nset xtics (", lo / 1.08, hi * 1.08);
	e0 = (int)ceil(log2(lo));
	e1 = (int)floor(log2(hi));
	step = (e1 - e0) / 12 + 1;
	for (int e = e0; e <= e1; e += step) {
		char label[32];

		bench_size_label((size_t)1 << e, label, sizeof(label));
		fprintf(f, "%s'%s' %.17g", e > e0 ? ", " : "", label, ldexp(1, e));
	}
	fputs(")\n", f);
}

static void bench_plot_script(const struct bench *b, FILE *f, int ncurves)
{
	bool first = true;

	fputs("if (strstrt(GPVAL_TERMINALS, 'pngcairo') > 0) { set terminal pngcairo size 1000,600 noenhanced } "
	      "else { set terminal png size 1000,600 noenhanced }\n", f);
	fputs("set output ", f);
	bench_gp_str(f, b->plot_path);
	fputs("\nset title ", f);
	{
		char title[256];

		snprintf(title, sizeof(title), "ibcomm_bench: %s, %d ranks, transport %s, %s%s%s%s", b->coll,
			 b->nranks, b->transport, bench_dtypes[b->dtype_index].name,
			 strcmp(b->coll, "all") == 0 || bench_colls[b->kind].reducing ? ", " : "",
			 strcmp(b->coll, "all") == 0 || bench_colls[b->kind].reducing ? bench_ops[b->op] : "",
			 b->reg ? ", registered buffers" : "");
		bench_gp_str(f, title);
	}
	fputs("\nset xlabel 'size (bytes)'\nset ylabel 'busbw (GB/s)'\nset logscale x 2\nset yrange [0:*]\nset grid\n",
	      f);
	bench_plot_xaxis(b, f);
	fputs(ncurves > 4 ? "set key outside right top\n" : "set key top left\n", f);
	/* one data block per collective: size, busbw out of place, busbw in place */
	for (int k = 0; k < BENCH_KIND_COUNT; k++) {
		bool any = false;

		for (size_t i = 0; i < b->nrows; i++) {
			const struct bench_row *row = &b->rows[i];

			if ((int)row->kind != k || row->bytes == 0)
				continue; /* 0 bytes has no place on a log axis */
			if (!any)
				fprintf(f, "$%s << EOD\n", bench_colls[k].name);
			any = true;
			fprintf(f, "%zu %.6f %.6f\n", row->bytes, row->busbw[0], row->busbw[1]);
		}
		if (any)
			fputs("EOD\n", f);
	}
	fputs("plot", f);
	for (int k = 0; k < BENCH_KIND_COUNT; k++) {
		bool any = false;

		for (size_t i = 0; i < b->nrows && !any; i++)
			any = (int)b->rows[i].kind == k && b->rows[i].bytes > 0;
		for (int ip = 0; any && ip < 2; ip++) {
			if (!(ip ? bench_colls[k].in_place : bench_colls[k].out_of_place))
				continue;
			fprintf(f, "%s $%s using 1:%d with linespoints title '%s %s'", first ? "" : ",",
				bench_colls[k].name, ip + 2, bench_colls[k].name, ip ? "in-place" : "out-of-place");
			first = false;
		}
	}
	fputs("\n", f);
}

/* Rank 0, after the sweep: runs gnuplot on a generated script. 0, or -1 with a message. */
int bench_plot(const struct bench *b)
{
	char gnuplot[4096];
	bool seen[BENCH_KIND_COUNT] = { false };
	int in[2], wst, ncurves = 0;
	pid_t pid;
	FILE *f;

	for (size_t i = 0; i < b->nrows; i++) {
		const struct bench_coll *c = &bench_colls[b->rows[i].kind];

		if (b->rows[i].bytes == 0 || seen[b->rows[i].kind])
			continue;
		seen[b->rows[i].kind] = true;
		ncurves += c->out_of_place + c->in_place;
	}
	if (ncurves == 0) {
		fprintf(stderr, "ibcomm_bench: --plot: no size above 0 bytes to draw; %s not written\n", b->plot_path);
		return -1;
	}
	if (bench_find_program("gnuplot", gnuplot, sizeof(gnuplot)) < 0) {
		fprintf(stderr, "ibcomm_bench: --plot: gnuplot not found on PATH: install it "
				"(apt-get install gnuplot-nox); %s not written\n", b->plot_path);
		return -1;
	}
	if (unlink(b->plot_path) < 0 && errno != ENOENT) {
		fprintf(stderr, "ibcomm_bench: --plot: cannot replace %s: %m\n", b->plot_path);
		return -1;
	}
	if (pipe(in) < 0) {
		fprintf(stderr, "ibcomm_bench: --plot: pipe: %m\n");
		return -1;
	}
	fflush(stdout);
	pid = fork();
	if (pid < 0) {
		fprintf(stderr, "ibcomm_bench: --plot: fork: %m\n");
		close(in[0]);
		close(in[1]);
		return -1;
	}
	if (pid == 0) {
		/* gnuplot's own output goes to stderr: stdout may carry the JSON or CSV */
		dup2(in[0], 0);
		dup2(2, 1);
		close(in[0]);
		close(in[1]);
		execl(gnuplot, "gnuplot", (char *)NULL);
		fprintf(stderr, "ibcomm_bench: --plot: cannot run %s: %m\n", gnuplot);
		_exit(127);
	}
	close(in[0]);
	signal(SIGPIPE, SIG_IGN); /* a gnuplot that dies early must not kill us */
	f = fdopen(in[1], "w");
	if (f) {
		bench_plot_script(b, f, ncurves);
		fclose(f);
	} else {
		close(in[1]);
	}
	while (waitpid(pid, &wst, 0) < 0) {
		if (errno != EINTR) {
			fprintf(stderr, "ibcomm_bench: --plot: waitpid: %m\n");
			return -1;
		}
	}
	if (!WIFEXITED(wst) || WEXITSTATUS(wst) != 0) {
		if (WIFEXITED(wst))
			fprintf(stderr, "ibcomm_bench: --plot: %s exited with status %d; %s not written\n", gnuplot,
				WEXITSTATUS(wst), b->plot_path);
		else
			fprintf(stderr, "ibcomm_bench: --plot: %s killed by signal %d; %s not written\n", gnuplot,
				WTERMSIG(wst), b->plot_path);
		return -1;
	}
	if (!tool_file_is_png(b->plot_path)) {
		fprintf(stderr, "ibcomm_bench: --plot: %s succeeded but %s is missing or not a PNG\n", gnuplot,
			b->plot_path);
		return -1;
	}
	return 0;
}
