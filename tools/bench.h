/*
 * ibcomm_bench's parts: the options and main (ibcomm_bench.c), the measurement
 * (bench_measure.c: inputs, the collective calls, their check and timing, the sweep of sizes)
 * and the report (bench_report.c: progress line, table, CSV, --json, --plot).
 */
#ifndef IBCOMM_BENCH_H
#define IBCOMM_BENCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "ibcomm.h"

#define BENCH_PLOT_FAILED 3 /* the exit status when the plot could not be written */

enum bench_kind {
	BENCH_ALLREDUCE,
	BENCH_BROADCAST,
	BENCH_REDUCE,
	BENCH_ALLGATHER,
	BENCH_REDUCE_SCATTER,
	BENCH_GATHER,
	BENCH_SCATTER,
	BENCH_ALLTOALL,
	BENCH_KIND_COUNT
};

/* How a collective's per-rank count follows from size, and what it supports (bench_measure.c). */
struct bench_coll {
	const char *name;
	bool per_rank;  /* each rank's count is size / nranks (else size) */
	bool rooted;
	bool reducing;
	bool out_of_place;
	bool in_place;
};
extern const struct bench_coll bench_colls[BENCH_KIND_COUNT];

/* The datatypes and their names for -d (ibcomm_bench.c). */
struct bench_dtype {
	const char *name; /* as nccl-tests prints it */
	const char *alias[3];
	ibcomm_dtype_t dtype;
};
extern const struct bench_dtype bench_dtypes[];
extern const size_t bench_ndtypes;
extern const char *const bench_ops[IBCOMM_OP_COUNT];

struct bench_result {
	bool done;
	double time_us; /* average per iteration, slowest rank */
	int64_t wrong;  /* over all ranks; -1: not checked */
};

/* One line of the table: a size, out of place ([0]) and in place ([1]). Kept by rank 0. */
struct bench_row {
	enum bench_kind kind;
	size_t bytes, count;
	struct bench_result res[2];
	double algbw[2], busbw[2];
};

struct bench {
	ibcomm_t *comm;
	int rank, nranks;
	char transport[32];
	/* options */
	size_t min_bytes, max_bytes, step_bytes;
	double factor;
	int iters, warmup;
	bool check, csv, json, reg;
	bool overlap;          /* --overlap (bench_overlap.c) */
	const char *json_path; /* --json=FILE; NULL: stdout */
	const char *plot_path;
	const char *coll;      /* as given to -C */
	ibcomm_op_t op;
	int dtype_index;
	ibcomm_dtype_t dtype;
	int root;
	/* the run */
	enum bench_kind kind;
	size_t tsize; /* bytes of one element */
	size_t cnt;   /* per-rank count of the current size */
	char *sbuf, *rbuf;
	ibcomm_mr_t *smr, *rmr;
	int64_t wrong_total;
	double busbw_sum;
	int busbw_n;
	struct bench_row *rows;
	size_t nrows, rows_cap;
	/*
	 * The progress line (rank 0, the table, a terminal): on stderr when it is one; under
	 * ibcomm_run (which pipes the ranks' output and says IBCOMM_RUN_TTY=1 when its own stderr
	 * is a terminal) on /dev/tty, and only once placements take long (a sweep's big sizes),
	 * after a pause that lets the launcher print the previous row first.
	 */
	bool progress;
	FILE *progress_out;
	bool progress_launched;
	double progress_last;  /* when the last placement began */
	int progress_len; /* characters shown now; 0: none */
	int step, steps;  /* placements timed so far, in all */
};

/* bench_measure.c */
double bench_busbw_factor(enum bench_kind kind, int nranks);
int bench_count_sizes(const struct bench *b);
/* Times b->kind over every size, both placements; rank 0 records each row. Collective. */
void bench_run(struct bench *b);

/* bench_overlap.c: the --overlap table (ibcomm_iallreduce behind sleep and compute). Collective. */
void bench_overlap(struct bench *b);

/* bench_report.c */
void bench_progress(struct bench *b, size_t bytes, bool ip);
void bench_progress_clear(struct bench *b);
/* Prints what failed (the progress line erased first) and exits with status 1. */
void bench_die(struct bench *b, const char *what, ibcomm_status_t st);
void bench_print_header(const struct bench *b);
void bench_record(struct bench *b, size_t bytes, const struct bench_result res[2]);
void bench_print_json(const struct bench *b, FILE *f);
int bench_plot(const struct bench *b);

#endif
