/*
 * ibcomm_bench: times one collective over a range of sizes, nccl-tests style.
 *
 *   ibcomm_run -n 4 -- ibcomm_bench -b 8 -e 128M -f 2 [-C allreduce] [-d float] [-o sum]
 *
 * Flags mean what they mean in nccl-tests: -b/-e smallest/largest size in bytes (K, M, G
 * suffixes), -f multiplication factor between sizes (or -i increment), -n timed iterations,
 * -w warm-up iterations, -c check results, -o reduction, -d datatype, -r root, -R register the
 * buffers. -C picks the collective (nccl-tests has one program per collective). --csv prints
 * comma-separated rows, --json one JSON document; --plot draws busbw against size with gnuplot.
 * On a terminal, rank 0 shows on stderr which size it is timing.
 *
 * "size" is the total bytes of the operation as nccl-tests counts it: for allgather, gather,
 * reduce_scatter, scatter and alltoall each rank contributes (or receives) size/nranks.
 * time is the average per iteration, the slowest rank's; algbw = size / time; busbw =
 * algbw x the collective's factor (allreduce 2(n-1)/n; allgather, reduce_scatter, gather,
 * scatter and alltoall (n-1)/n; broadcast and reduce 1): the bandwidth a link needs,
 * comparable across collectives and rank counts. The check uses small-integer inputs whose
 * results are exact in every datatype and compares every element on every rank.
 */
#define _GNU_SOURCE
#include "config.h"

#include <getopt.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "ibcomm.h"
#include "bench.h"
#include "tool_util.h"

#define BENCH_INT_MAX 1000000000 /* the largest -n, -w, -r */

const struct bench_dtype bench_dtypes[] = {
	{ "int8", { "char" }, IBCOMM_INT8 },
	{ "uint8", { NULL }, IBCOMM_UINT8 },
	{ "int32", { "int" }, IBCOMM_INT32 },
	{ "uint32", { NULL }, IBCOMM_UINT32 },
	{ "int64", { NULL }, IBCOMM_INT64 },
	{ "uint64", { NULL }, IBCOMM_UINT64 },
	{ "half", { "float16", "fp16" }, IBCOMM_FLOAT16 },
	{ "bfloat16", { "bf16" }, IBCOMM_BFLOAT16 },
	{ "float", { "float32", "fp32" }, IBCOMM_FLOAT32 },
	{ "double", { "float64", "fp64" }, IBCOMM_FLOAT64 },
};
const size_t bench_ndtypes = sizeof(bench_dtypes) / sizeof(bench_dtypes[0]);

const char *const bench_ops[IBCOMM_OP_COUNT] = { "sum", "prod", "min", "max", "avg" };

static void bench_usage(FILE *f)
{
	fprintf(f,
		"Usage: ibcomm_run -n N -- ibcomm_bench [options]\n"
		"Times a collective over a range of sizes (nccl-tests flags and columns).\n"
		"\n"
		"  -b, --minbytes B     smallest size (default 8; K, M, G suffixes)\n"
		"  -e, --maxbytes B     largest size (default 8M)\n"
		"  -f, --stepfactor F   multiply the size by F (default 2)\n"
		"  -i, --stepbytes B    or add B to it\n"
		"  -n, --iters N        timed iterations per size (default 20)\n"
		"  -w, --warmup_iters N untimed iterations before (default 5)\n"
		"  -c, --check 0|1      check every result (default 1)\n"
		"  -o, --op OP          sum, prod, min, max, avg (default sum)\n"
		"  -d, --datatype T     int8 uint8 int32 uint32 int64 uint64 half bfloat16 float double\n"
		"                       (default float)\n"
		"  -r, --root R         root of broadcast, reduce, gather, scatter (default 0)\n"
		"  -C, --collective C   allreduce (default), broadcast, reduce, allgather,\n"
		"                       reduce_scatter, gather, scatter, alltoall, or all\n"
		"  -R, --local_register 0|1  register the send and receive buffers (default 0)\n"
		"      --csv            comma-separated rows instead of the table\n"
		"      --json[=FILE]    one JSON document instead of the table (on stdout, or in FILE)\n"
		"      --plot FILE.png  draw busbw against size with gnuplot\n"
		"      --overlap        allreduce hidden behind work by ibcomm_iallreduce: blocking time,\n"
		"                       then iallreduce + sleep + CPU compute + wait, and CPU compute only\n"
		"                       (defaults then: -b 1M -e 64M -n 5 -w 1)\n"
		"  -h, --help           this help\n"
		"\n"
		"On a terminal, rank 0 shows the size being timed on stderr (not with --csv, --json).\n"
		"Exit status: 0; 1 when a result was wrong or a call failed; 2 for a usage error;\n"
		"3 when the results are complete but --plot could not write the plot.\n");
}

/* Reads the options into b (its defaults set): -1 to go on, else the exit status. */
static int bench_options(int argc, char **argv, struct bench *b, bool *all)
{
	static const struct option longopts[] = {
		{ "minbytes", required_argument, NULL, 'b' },
		{ "maxbytes", required_argument, NULL, 'e' },
		{ "stepfactor", required_argument, NULL, 'f' },
		{ "stepbytes", required_argument, NULL, 'i' },
		{ "iters", required_argument, NULL, 'n' },
		{ "warmup_iters", required_argument, NULL, 'w' },
		{ "check", required_argument, NULL, 'c' },
		{ "op", required_argument, NULL, 'o' },
		{ "datatype", required_argument, NULL, 'd' },
		{ "root", required_argument, NULL, 'r' },
		{ "collective", required_argument, NULL, 'C' },
		{ "local_register", required_argument, NULL, 'R' },
		{ "csv", no_argument, NULL, 'V' },
		{ "json", optional_argument, NULL, 'J' },
		{ "plot", required_argument, NULL, 'P' },
		{ "overlap", no_argument, NULL, 'O' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *coll = "allreduce";
	int opt, check = 1, reg = 0;
	bool set_b = false, set_e = false, set_n = false, set_w = false;

	while ((opt = getopt_long(argc, argv, "b:e:f:i:n:w:c:o:d:r:C:R:h", longopts, NULL)) != -1) {
		bool bad = false;

		switch (opt) {
		case 'b': bad = !tool_parse_size(optarg, &b->min_bytes), set_b = true; break;
		case 'e': bad = !tool_parse_size(optarg, &b->max_bytes), set_e = true; break;
		case 'i': bad = !tool_parse_size(optarg, &b->step_bytes) || b->step_bytes == 0; break;
		case 'f': {
			char *end;

			b->factor = strtod(optarg, &end);
			bad = end == optarg || *end || !(b->factor > 1) || b->factor > 1e6;
			break;
		}
		case 'n': bad = !tool_parse_int(optarg, 1, BENCH_INT_MAX, &b->iters), set_n = true; break;
		case 'w': bad = !tool_parse_int(optarg, 0, BENCH_INT_MAX, &b->warmup), set_w = true; break;
		case 'O': b->overlap = true; break;
		case 'c':
			bad = !tool_parse_int(optarg, 0, 1, &check);
			b->check = check == 1;
			break;
		case 'r': bad = !tool_parse_int(optarg, 0, BENCH_INT_MAX, &b->root); break;
		case 'o':
			bad = true;
			for (int k = 0; k < IBCOMM_OP_COUNT; k++) {
				if (strcasecmp(optarg, bench_ops[k]) == 0) {
					b->op = (ibcomm_op_t)k;
					bad = false;
				}
			}
			break;
		case 'd':
			bad = true;
			for (int k = 0; k < (int)bench_ndtypes; k++) {
				bool match = strcasecmp(optarg, bench_dtypes[k].name) == 0;

				for (int a = 0; a < 3 && bench_dtypes[k].alias[a]; a++)
					match = match || strcasecmp(optarg, bench_dtypes[k].alias[a]) == 0;
				if (match) {
					b->dtype_index = k;
					b->dtype = bench_dtypes[k].dtype;
					bad = false;
				}
			}
			break;
		case 'C': coll = optarg; break;
		case 'R':
			bad = !tool_parse_int(optarg, 0, 1, &reg);
			b->reg = reg == 1;
			break;
		case 'V': b->csv = true; break;
		case 'J':
			b->json = true;
			b->json_path = optarg;
			bad = optarg && !*optarg;
			break;
		case 'P':
			b->plot_path = optarg;
			bad = !*optarg;
			for (const char *p = optarg; *p; p++)
				bad = bad || (unsigned char)*p < 0x20;
			break;
		case 'h': bench_usage(stdout); return 0;
		default: bench_usage(stderr); return 2;
		}
		if (bad) {
			if (opt == 'J' || opt == 'P')
				fprintf(stderr, "ibcomm_bench: bad file name for --%s: '%s'\n", opt == 'J' ? "json" : "plot",
					optarg);
			else
				fprintf(stderr, "ibcomm_bench: bad value for -%c: %s\n", opt, optarg);
			return 2;
		}
	}
	if (b->json && b->csv) {
		fprintf(stderr, "ibcomm_bench: --json and --csv exclude each other\n");
		return 2;
	}
	if (b->overlap && (b->json || b->csv || b->plot_path)) {
		fprintf(stderr, "ibcomm_bench: --overlap prints its own table (no --json, --csv, --plot)\n");
		return 2;
	}
	if (b->overlap) {
		b->min_bytes = set_b ? b->min_bytes : 1 << 20;
		b->max_bytes = set_e ? b->max_bytes : 64 << 20;
		b->iters = set_n ? b->iters : 5;
		b->warmup = set_w ? b->warmup : 1;
	}
	if (optind < argc) {
		fprintf(stderr, "ibcomm_bench: unexpected argument: %s\n", argv[optind]);
		return 2;
	}
	b->coll = coll;
	*all = strcmp(coll, "all") == 0;
	b->kind = BENCH_KIND_COUNT;
	for (int k = 0; k < BENCH_KIND_COUNT; k++)
		if (strcmp(coll, bench_colls[k].name) == 0)
			b->kind = (enum bench_kind)k;
	if (!*all && b->kind == BENCH_KIND_COUNT) {
		fprintf(stderr, "ibcomm_bench: unknown collective: %s\n", coll);
		return 2;
	}
	if (b->min_bytes > b->max_bytes) {
		fprintf(stderr, "ibcomm_bench: -b %zu is larger than -e %zu\n", b->min_bytes, b->max_bytes);
		return 2;
	}
	return -1;
}

int main(int argc, char **argv)
{
	struct bench b = {
		.min_bytes = 8, .max_bytes = 8 << 20, .factor = 2, .iters = 20, .warmup = 5,
		.check = true, .op = IBCOMM_SUM, .dtype_index = 8, .dtype = IBCOMM_FLOAT32,
	};
	FILE *json_out = stdout;
	ibcomm_status_t st;
	size_t bufsize;
	bool all;
	int status = bench_options(argc, argv, &b, &all);

	if (status >= 0)
		return status;
	status = 0;
	st = ibcomm_init_env(&b.comm);
	if (st != IBCOMM_OK) {
		fprintf(stderr, "ibcomm_bench: ibcomm_init_env failed: %s: %s\n", ibcomm_strerror(st),
			ibcomm_last_error(NULL));
		fprintf(stderr, "ibcomm_bench: run it with ibcomm_run -n N -- ibcomm_bench ...\n");
		return 1;
	}
	b.rank = ibcomm_rank(b.comm);
	b.nranks = ibcomm_size(b.comm);
	snprintf(b.transport, sizeof(b.transport), "%s", ibcomm_transport(b.comm));
	if (b.root >= b.nranks) {
		fprintf(stderr, "ibcomm_bench: -r %d: the root must be below %d\n", b.root, b.nranks);
		ibcomm_destroy(b.comm);
		return 2;
	}
	if (b.json_path) {
		/* rank 0 opens FILE now; every rank learns whether it could, and all stop if not */
		int64_t cannot = 0;

		if (b.rank == 0) {
			json_out = fopen(b.json_path, "w");
			if (!json_out) {
				fprintf(stderr, "ibcomm_bench: --json: cannot write %s: %m\n", b.json_path);
				cannot = 1;
			}
		}
		st = ibcomm_allreduce(b.comm, &cannot, &cannot, 1, IBCOMM_INT64, IBCOMM_MAX);
		if (st != IBCOMM_OK)
			bench_die(&b, "allreduce of the --json check", st);
		if (cannot) {
			ibcomm_destroy(b.comm);
			return 2;
		}
	}
	b.tsize = ibcomm_dtype_size(b.dtype);
	bufsize = b.max_bytes > b.tsize * (size_t)b.nranks ? b.max_bytes : b.tsize * (size_t)b.nranks;
	if (posix_memalign((void **)&b.sbuf, 4096, bufsize) || posix_memalign((void **)&b.rbuf, 4096, bufsize)) {
		fprintf(stderr, "ibcomm_bench: rank %d: cannot allocate 2 x %zu bytes\n", b.rank, bufsize);
		free(b.sbuf);
		ibcomm_destroy(b.comm);
		return 1;
	}
	memset(b.sbuf, 0, bufsize);
	memset(b.rbuf, 0, bufsize);
	if (b.reg) {
		st = ibcomm_register(b.comm, b.sbuf, bufsize, &b.smr);
		if (st != IBCOMM_OK)
			bench_die(&b, "ibcomm_register of the send buffer", st);
		st = ibcomm_register(b.comm, b.rbuf, bufsize, &b.rmr);
		if (st != IBCOMM_OK)
			bench_die(&b, "ibcomm_register of the receive buffer", st);
	}
	b.progress = b.rank == 0 && !b.csv && !b.json && !b.overlap;
	if (b.progress && isatty(STDERR_FILENO)) {
		b.progress_out = stderr;
	} else if (b.progress && getenv("IBCOMM_RUN_TTY") && !strcmp(getenv("IBCOMM_RUN_TTY"), "1")) {
		b.progress_out = fopen("/dev/tty", "w");
		b.progress_launched = true;
	}
	b.progress = b.progress_out != NULL;
	b.progress_last = tool_now_s();
	b.steps = bench_count_sizes(&b) * (all ? BENCH_KIND_COUNT : 1);

	if (b.csv && b.rank == 0)
		printf("collective,nranks,size,count,type,redop,root,placement,time_us,algbw_GBps,busbw_GBps,wrong\n");
	if (b.overlap)
		bench_overlap(&b);
	for (int k = 0; k < BENCH_KIND_COUNT && !b.overlap; k++) {
		if (!all && k != (int)b.kind)
			continue;
		b.kind = (enum bench_kind)k;
		bench_run(&b);
		if (all && !b.csv && !b.json && b.rank == 0)
			printf("#\n");
	}
	if (b.rank == 0 && b.json) {
		bench_print_json(&b, json_out);
		if (fflush(json_out) != 0 || ferror(json_out)) {
			fprintf(stderr, "ibcomm_bench: --json: cannot write %s: %m\n", b.json_path ? b.json_path : "stdout");
			status = 1;
		}
		if (json_out != stdout)
			fclose(json_out);
	} else if (b.rank == 0 && !b.csv) {
		printf("# Out of bounds values : %lld %s\n", (long long)b.wrong_total, b.wrong_total ? "FAILED" : "OK");
		if (!b.overlap)
			printf("# Avg bus bandwidth    : %g\n", b.busbw_n ? b.busbw_sum / b.busbw_n : 0.0);
		printf("#\n");
	}
	fflush(stdout);
	if (b.rmr) {
		st = ibcomm_deregister(b.comm, b.rmr);
		if (st != IBCOMM_OK)
			bench_die(&b, "ibcomm_deregister of the receive buffer", st);
	}
	if (b.smr) {
		st = ibcomm_deregister(b.comm, b.smr);
		if (st != IBCOMM_OK)
			bench_die(&b, "ibcomm_deregister of the send buffer", st);
	}
	if (b.progress_launched)
		fclose(b.progress_out);
	st = ibcomm_destroy(b.comm);
	free(b.sbuf);
	free(b.rbuf);
	if (st != IBCOMM_OK) {
		fprintf(stderr, "ibcomm_bench: rank %d: ibcomm_destroy failed: %s\n", b.rank, ibcomm_strerror(st));
		free(b.rows);
		return 1;
	}
	/* after the communicator is gone: the other ranks need not wait for gnuplot */
	if (b.rank == 0 && b.plot_path && bench_plot(&b) < 0 && status == 0)
		status = BENCH_PLOT_FAILED;
	free(b.rows);
	if (b.wrong_total > 0 && b.rank == 0)
		fprintf(stderr, "ibcomm_bench: %lld wrong elements\n", (long long)b.wrong_total);
	return b.wrong_total > 0 ? 1 : status;
}
