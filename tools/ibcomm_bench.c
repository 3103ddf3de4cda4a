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

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ibcomm.h"

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

/* How a collective's per-rank count follows from size, and what it supports. */
static const struct bench_coll {
	const char *name;
	bool per_rank;  /* each rank's count is size / nranks (else size) */
	bool rooted;
	bool reducing;
	bool out_of_place;
	bool in_place;
} bench_colls[BENCH_KIND_COUNT] = {
	[BENCH_ALLREDUCE] = { "allreduce", false, false, true, true, true },
	[BENCH_BROADCAST] = { "broadcast", false, true, false, false, true },
	[BENCH_REDUCE] = { "reduce", false, true, true, true, true },
	[BENCH_ALLGATHER] = { "allgather", true, false, false, true, true },
	[BENCH_REDUCE_SCATTER] = { "reduce_scatter", true, false, true, true, true },
	[BENCH_GATHER] = { "gather", true, true, false, true, true },
	[BENCH_SCATTER] = { "scatter", true, true, false, true, true },
	[BENCH_ALLTOALL] = { "alltoall", true, false, false, true, false },
};

static const struct {
	const char *name; /* as nccl-tests prints it */
	const char *alias[3];
	ibcomm_dtype_t dtype;
} bench_dtypes[] = {
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

static const char *const bench_ops[IBCOMM_OP_COUNT] = { "sum", "prod", "min", "max", "avg" };

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

static double bench_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Erases the progress line, if one is shown, so that the next output starts on a clean line. */
static void bench_progress_clear(struct bench *b)
{
	if (b->progress_len <= 0)
		return;
	fprintf(b->progress_out, "\r%*s\r", b->progress_len, "");
	fflush(b->progress_out);
	b->progress_len = 0;
}

/* "\r" and the line, padded to cover a longer previous one. */
static void bench_progress(struct bench *b, size_t bytes, bool ip)
{
	char line[160];
	double now = bench_now(), last = b->progress_last;
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

static void bench_die(struct bench *b, const char *what, ibcomm_status_t st)
{
	bench_progress_clear(b);
	fprintf(stderr, "ibcomm_bench: rank %d: %s failed: %s: %s\n", b->rank, what, ibcomm_strerror(st),
		ibcomm_last_error(b->comm));
	exit(1);
}

/* ---- element access: inputs are small integers, exact in every datatype ---- */

static uint16_t bench_f32_to_f16(float f)
{
	uint32_t x, sign, mant, half, rem, halfway;
	int32_t exp;

	memcpy(&x, &f, sizeof(x));
	sign = (x >> 16) & 0x8000;
	mant = x & 0x7fffff;
	if (((x >> 23) & 0xff) == 0xff)
		return (uint16_t)(sign | 0x7c00 | (mant ? 0x200 : 0));
	exp = (int32_t)((x >> 23) & 0xff) - 127 + 15;
	if (exp >= 31)
		return (uint16_t)(sign | 0x7c00);
	if (exp <= 0) {
		int shift = 14 - exp;

		if (exp < -10)
			return (uint16_t)sign;
		mant |= 0x800000;
		half = mant >> shift;
		rem = mant & ((1u << shift) - 1);
		halfway = 1u << (shift - 1);
		if (rem > halfway || (rem == halfway && (half & 1)))
			half++;
		return (uint16_t)(sign | half);
	}
	half = ((uint32_t)exp << 10) | (mant >> 13);
	rem = mant & 0x1fff;
	if (rem > 0x1000 || (rem == 0x1000 && (half & 1)))
		half++; /* a carry into the exponent is right, up to infinity */
	return (uint16_t)(sign | half);
}

static float bench_f16_to_f32(uint16_t h)
{
	uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, mant = h & 0x3ff, x;
	float f;

	if (exp == 0) {
		f = (float)mant / 16777216.0f; /* subnormal: mant x 2^-24 */
		return sign ? -f : f;
	}
	if (exp == 31)
		x = sign | 0x7f800000 | (mant << 13);
	else
		x = sign | ((exp - 15 + 127) << 23) | (mant << 13);
	memcpy(&f, &x, sizeof(f));
	return f;
}

static uint16_t bench_f32_to_bf16(float f)
{
	uint32_t x;

	memcpy(&x, &f, sizeof(x));
	if ((x & 0x7fffffff) > 0x7f800000)
		return (uint16_t)((x >> 16) | 0x40);
	return (uint16_t)((x + 0x7fff + ((x >> 16) & 1)) >> 16);
}

static float bench_bf16_to_f32(uint16_t h)
{
	uint32_t x = (uint32_t)h << 16;
	float f;

	memcpy(&f, &x, sizeof(f));
	return f;
}

static bool bench_is_float(ibcomm_dtype_t dt)
{
	return dt == IBCOMM_FLOAT16 || dt == IBCOMM_BFLOAT16 || dt == IBCOMM_FLOAT32 || dt == IBCOMM_FLOAT64;
}

static void bench_set(void *buf, ibcomm_dtype_t dt, size_t i, int64_t v)
{
	switch (dt) {
	case IBCOMM_INT8: ((int8_t *)buf)[i] = (int8_t)v; break;
	case IBCOMM_UINT8: ((uint8_t *)buf)[i] = (uint8_t)v; break;
	case IBCOMM_INT32: ((int32_t *)buf)[i] = (int32_t)v; break;
	case IBCOMM_UINT32: ((uint32_t *)buf)[i] = (uint32_t)v; break;
	case IBCOMM_INT64: ((int64_t *)buf)[i] = v; break;
	case IBCOMM_UINT64: ((uint64_t *)buf)[i] = (uint64_t)v; break;
	case IBCOMM_FLOAT16: ((uint16_t *)buf)[i] = bench_f32_to_f16((float)v); break;
	case IBCOMM_BFLOAT16: ((uint16_t *)buf)[i] = bench_f32_to_bf16((float)v); break;
	case IBCOMM_FLOAT32: ((float *)buf)[i] = (float)v; break;
	case IBCOMM_FLOAT64: ((double *)buf)[i] = (double)v; break;
	default: break;
	}
}

/* An integer element, its bits as int64 (uint64 too). */
static int64_t bench_get_int(const void *buf, ibcomm_dtype_t dt, size_t i)
{
	switch (dt) {
	case IBCOMM_INT8: return ((const int8_t *)buf)[i];
	case IBCOMM_UINT8: return ((const uint8_t *)buf)[i];
	case IBCOMM_INT32: return ((const int32_t *)buf)[i];
	case IBCOMM_UINT32: return ((const uint32_t *)buf)[i];
	case IBCOMM_INT64: return ((const int64_t *)buf)[i];
	case IBCOMM_UINT64: return (int64_t)((const uint64_t *)buf)[i];
	default: return 0;
	}
}

static double bench_get_float(const void *buf, ibcomm_dtype_t dt, size_t i)
{
	switch (dt) {
	case IBCOMM_FLOAT16: return bench_f16_to_f32(((const uint16_t *)buf)[i]);
	case IBCOMM_BFLOAT16: return bench_bf16_to_f32(((const uint16_t *)buf)[i]);
	case IBCOMM_FLOAT32: return ((const float *)buf)[i];
	case IBCOMM_FLOAT64: return ((const double *)buf)[i];
	default: return 0;
	}
}

/* v rounded to dtype, as the library would store it. */
static double bench_round(ibcomm_dtype_t dt, double v)
{
	switch (dt) {
	case IBCOMM_FLOAT16: return bench_f16_to_f32(bench_f32_to_f16((float)v));
	case IBCOMM_BFLOAT16: return bench_bf16_to_f32(bench_f32_to_bf16((float)v));
	case IBCOMM_FLOAT32: return (float)v;
	default: return v;
	}
}

/* An int64 result wrapped to dtype (two's complement), read back as bench_get_int does. */
static int64_t bench_wrap(ibcomm_dtype_t dt, int64_t v)
{
	char tmp[8];

	bench_set(tmp, dt, 0, v);
	return bench_get_int(tmp, dt, 0);
}

/*
 * Rank r's input element i. Reductions: 0..4 (or 1 and 2 for PROD) so that sums and
 * products of many ranks stay exact even in bfloat16; other collectives: 0..100, varied
 * enough that a block in the wrong place shows.
 */
static int64_t bench_value(const struct bench *b, int r, size_t i)
{
	if (!bench_colls[b->kind].reducing)
		return (int64_t)(((size_t)r * 37 + i * 3) % 101);
	if (b->op == IBCOMM_PROD)
		return ((size_t)r + i) % 4 == 0 ? 2 : 1;
	return (int64_t)(((size_t)r * 7 + i * 3) % 5);
}

/* The reduction over all ranks of element i, compared with got[j]: true when right. */
static bool bench_reduced_ok(const struct bench *b, const void *got, size_t j, size_t i)
{
	ibcomm_dtype_t dt = b->dtype;
	int64_t acc = bench_value(b, 0, i);

	for (int r = 1; r < b->nranks; r++) {
		int64_t v = bench_value(b, r, i);

		switch (b->op) {
		case IBCOMM_PROD: acc *= v; break;
		case IBCOMM_MIN: acc = v < acc ? v : acc; break;
		case IBCOMM_MAX: acc = v > acc ? v : acc; break;
		default: acc += v; break;
		}
	}
	if (!bench_is_float(dt)) {
		if (b->op == IBCOMM_AVG)
			acc /= b->nranks;
		return bench_get_int(got, dt, j) == bench_wrap(dt, acc);
	}
	if (b->op == IBCOMM_AVG) {
		/* the mean needs not be exact: within a few units of the type's last place */
		static const double tol[IBCOMM_DTYPE_COUNT] = {
			[IBCOMM_FLOAT16] = 4e-3, [IBCOMM_BFLOAT16] = 2e-2, [IBCOMM_FLOAT32] = 1e-6,
			[IBCOMM_FLOAT64] = 1e-12,
		};
		double want = (double)acc / b->nranks, have = bench_get_float(got, dt, j);

		return fabs(have - want) <= tol[dt] * fmax(1.0, fabs(want));
	}
	return bench_get_float(got, dt, j) == bench_round(dt, (double)acc);
}

static bool bench_copy_ok(const struct bench *b, const void *got, size_t j, int64_t want)
{
	if (bench_is_float(b->dtype))
		return bench_get_float(got, b->dtype, j) == bench_round(b->dtype, (double)want);
	return bench_get_int(got, b->dtype, j) == bench_wrap(b->dtype, want);
}

static void bench_fill(const struct bench *b, void *buf, int r, size_t n)
{
	for (size_t i = 0; i < n; i++)
		bench_set(buf, b->dtype, i, bench_value(b, r, i));
}

/* Poison: 0xff bytes are NaN in the float types and never an expected integer. */
static void bench_poison(const struct bench *b, void *buf, size_t n)
{
	memset(buf, 0xff, n * b->tsize);
}

/* ---- one collective call, its inputs and its check ---- */

static ibcomm_status_t bench_call(struct bench *b, bool in_place)
{
	size_t cnt = b->cnt, blk = cnt * b->tsize;
	char *s = b->sbuf, *r = b->rbuf;
	ibcomm_t *c = b->comm;
	ibcomm_dtype_t dt = b->dtype;

	switch (b->kind) {
	case BENCH_ALLREDUCE: return ibcomm_allreduce(c, in_place ? r : s, r, cnt, dt, b->op);
	case BENCH_BROADCAST: return ibcomm_broadcast(c, r, cnt, dt, b->root);
	case BENCH_REDUCE: return ibcomm_reduce(c, in_place ? r : s, r, cnt, dt, b->op, b->root);
	case BENCH_ALLGATHER: return ibcomm_allgather(c, in_place ? r + b->rank * blk : s, r, cnt, dt);
	case BENCH_REDUCE_SCATTER:
		return in_place ? ibcomm_reduce_scatter(c, r, r + b->rank * blk, cnt, dt, b->op)
				: ibcomm_reduce_scatter(c, s, r, cnt, dt, b->op);
	case BENCH_GATHER:
		if (in_place && b->rank == b->root)
			return ibcomm_gather(c, r + b->root * blk, r, cnt, dt, b->root);
		return ibcomm_gather(c, s, r, cnt, dt, b->root);
	case BENCH_SCATTER:
		if (in_place && b->rank == b->root)
			return ibcomm_scatter(c, r, r + b->root * blk, cnt, dt, b->root);
		return ibcomm_scatter(c, s, r, cnt, dt, b->root);
	case BENCH_ALLTOALL: return ibcomm_alltoall(c, s, r, cnt, dt);
	default: return IBCOMM_ERR_INVALID;
	}
}

static void bench_prepare(struct bench *b, bool ip)
{
	size_t cnt = b->cnt, n = (size_t)b->nranks, blk = cnt * b->tsize;
	char *s = b->sbuf, *r = b->rbuf;
	bool is_root = b->rank == b->root;

	switch (b->kind) {
	case BENCH_ALLREDUCE:
	case BENCH_REDUCE:
		bench_poison(b, r, cnt);
		bench_fill(b, ip ? r : s, b->rank, cnt);
		break;
	case BENCH_BROADCAST:
		if (is_root)
			bench_fill(b, r, b->rank, cnt);
		else
			bench_poison(b, r, cnt);
		break;
	case BENCH_ALLGATHER:
	case BENCH_GATHER:
		bench_poison(b, r, n * cnt);
		if (ip && (b->kind == BENCH_ALLGATHER || is_root))
			bench_fill(b, r + b->rank * blk, b->rank, cnt);
		else
			bench_fill(b, s, b->rank, cnt);
		break;
	case BENCH_REDUCE_SCATTER:
		bench_poison(b, r, cnt);
		bench_fill(b, ip ? r : s, b->rank, n * cnt);
		break;
	case BENCH_SCATTER:
		bench_poison(b, r, ip && is_root ? n * cnt : cnt);
		if (is_root)
			bench_fill(b, ip ? r : s, b->rank, n * cnt);
		break;
	case BENCH_ALLTOALL:
		bench_poison(b, r, n * cnt);
		bench_fill(b, s, b->rank, n * cnt);
		break;
	default:
		break;
	}
}

/* Counts the wrong elements of this rank's result. */
static int64_t bench_verify(const struct bench *b, bool ip)
{
	size_t cnt = b->cnt, blk = cnt * b->tsize;
	const char *r = b->rbuf;
	bool is_root = b->rank == b->root;
	int64_t wrong = 0;

	switch (b->kind) {
	case BENCH_ALLREDUCE:
	case BENCH_REDUCE:
		if (b->kind == BENCH_REDUCE && !is_root)
			break;
		for (size_t i = 0; i < cnt; i++)
			wrong += !bench_reduced_ok(b, r, i, i);
		break;
	case BENCH_BROADCAST:
		for (size_t i = 0; i < cnt; i++)
			wrong += !bench_copy_ok(b, r, i, bench_value(b, b->root, i));
		break;
	case BENCH_ALLGATHER:
	case BENCH_GATHER:
		if (b->kind == BENCH_GATHER && !is_root)
			break;
		for (int src = 0; src < b->nranks; src++)
			for (size_t i = 0; i < cnt; i++)
				wrong += !bench_copy_ok(b, r, src * cnt + i, bench_value(b, src, i));
		break;
	case BENCH_REDUCE_SCATTER: {
		const char *out = ip ? r + b->rank * blk : r;

		for (size_t i = 0; i < cnt; i++)
			wrong += !bench_reduced_ok(b, out, i, b->rank * cnt + i);
		break;
	}
	case BENCH_SCATTER: {
		const char *out = ip && is_root ? r + b->root * blk : r;

		for (size_t i = 0; i < cnt; i++)
			wrong += !bench_copy_ok(b, out, i, bench_value(b, b->root, b->rank * cnt + i));
		break;
	}
	case BENCH_ALLTOALL:
		for (int src = 0; src < b->nranks; src++)
			for (size_t i = 0; i < cnt; i++)
				wrong += !bench_copy_ok(b, r, src * cnt + i, bench_value(b, src, b->rank * cnt + i));
		break;
	default:
		break;
	}
	return wrong;
}

static double bench_busbw_factor(enum bench_kind kind, int nranks)
{
	double n = nranks;

	switch (kind) {
	case BENCH_ALLREDUCE: return 2 * (n - 1) / n;
	case BENCH_BROADCAST:
	case BENCH_REDUCE: return 1;
	default: return (n - 1) / n;
	}
}

/* One placement of one size: check (if asked), warm up, time. Collective. */
static void bench_measure(struct bench *b, size_t bytes, bool ip, struct bench_result *res)
{
	ibcomm_status_t st;
	double t0, elapsed;
	char what[96];

	if (b->rank == 0)
		bench_progress(b, bytes, ip);
	snprintf(what, sizeof(what), "%s of %zu elements (%s)", bench_colls[b->kind].name, b->cnt,
		 ip ? "in place" : "out of place");
	res->done = true;
	res->wrong = -1;
	if (b->check) {
		bench_prepare(b, ip);
		st = bench_call(b, ip);
		if (st != IBCOMM_OK)
			bench_die(b, what, st);
		res->wrong = bench_verify(b, ip);
		st = ibcomm_allreduce(b->comm, &res->wrong, &res->wrong, 1, IBCOMM_INT64, IBCOMM_SUM);
		if (st != IBCOMM_OK)
			bench_die(b, "allreduce of the error count", st);
	}
	for (int i = 0; i < b->warmup; i++) {
		st = bench_call(b, ip);
		if (st != IBCOMM_OK)
			bench_die(b, what, st);
	}
	st = ibcomm_barrier(b->comm);
	if (st != IBCOMM_OK)
		bench_die(b, "barrier", st);
	t0 = bench_now();
	for (int i = 0; i < b->iters; i++) {
		st = bench_call(b, ip);
		if (st != IBCOMM_OK)
			bench_die(b, what, st);
	}
	elapsed = (bench_now() - t0) / b->iters;
	st = ibcomm_allreduce(b->comm, &elapsed, &elapsed, 1, IBCOMM_FLOAT64, IBCOMM_MAX);
	if (st != IBCOMM_OK)
		bench_die(b, "allreduce of the elapsed time", st);
	res->time_us = elapsed * 1e6;
}

static void bench_print_header(const struct bench *b)
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
static void bench_record(struct bench *b, size_t bytes, const struct bench_result res[2])
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

/* The sizes of one sweep: min_bytes, then by factor or increment, up to max_bytes. */
static bool bench_next_size(const struct bench *b, size_t *size)
{
	size_t next = b->step_bytes ? *size + b->step_bytes : (size_t)((double)*size * b->factor);

	if (next <= *size || next > b->max_bytes)
		return false;
	*size = next;
	return true;
}

static int bench_count_sizes(const struct bench *b)
{
	size_t size = b->min_bytes;
	int n = 1;

	while (bench_next_size(b, &size))
		n++;
	return n;
}

static void bench_run(struct bench *b)
{
	const struct bench_coll *c = &bench_colls[b->kind];
	size_t n = (size_t)b->nranks;

	if (b->rank == 0 && !b->csv && !b->json)
		bench_print_header(b);
	for (size_t size = b->min_bytes;;) {
		struct bench_result res[2] = { { 0 } };
		size_t bytes;

		b->cnt = c->per_rank ? size / (n * b->tsize) : size / b->tsize;
		bytes = b->cnt * b->tsize * (c->per_rank ? n : 1);
		b->step++;
		if (c->out_of_place)
			bench_measure(b, bytes, false, &res[0]);
		if (c->in_place)
			bench_measure(b, bytes, true, &res[1]);
		for (int k = 0; k < 2; k++)
			if (res[k].wrong > 0)
				b->wrong_total += res[k].wrong;
		if (b->rank == 0)
			bench_record(b, bytes, res);
		if (!bench_next_size(b, &size))
			break;
	}
}

/* ---- --json ---- */

static void bench_json_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\')
			fprintf(f, "\\%c", c);
		else if (c < 0x20)
			fprintf(f, "\\u%04x", c);
		else
			fputc(c, f);
	}
	fputc('"', f);
}

static void bench_json_num(FILE *f, const char *fmt, double v)
{
	if (isfinite(v))
		fprintf(f, fmt, v);
	else
		fputs("null", f);
}

static void bench_json_result(FILE *f, const struct bench_row *row, int k)
{
	const struct bench_result *res = &row->res[k];

	if (!res->done) {
		fputs("null", f);
		return;
	}
	fputs("{\"time_us\": ", f);
	bench_json_num(f, "%.3f", res->time_us);
	fputs(", \"algbw_GBps\": ", f);
	bench_json_num(f, "%.6g", row->algbw[k]);
	fputs(", \"busbw_GBps\": ", f);
	bench_json_num(f, "%.6g", row->busbw[k]);
	if (res->wrong < 0)
		fputs(", \"wrong\": null}", f);
	else
		fprintf(f, ", \"wrong\": %lld}", (long long)res->wrong);
}

static void bench_print_json(const struct bench *b, FILE *f)
{
	const char *algo = getenv("IBCOMM_ALGO");

	fputs("{\n  \"tool\": \"ibcomm_bench\",\n  \"job\": {\"ranks\": ", f);
	fprintf(f, "%d, \"transport\": ", b->nranks);
	bench_json_str(f, b->transport);
	fputs(", \"collective\": ", f);
	bench_json_str(f, b->coll);
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
		bench_json_str(f, algo);
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
	bench_json_num(f, "%.6g", b->busbw_n ? b->busbw_sum / b->busbw_n : 0.0);
	fprintf(f, ",\n  \"ok\": %s\n}\n", b->wrong_total ? "false" : "true");
}

/* ---- --plot: busbw against size, drawn by gnuplot ---- */

#define BENCH_PLOT_FAILED 3 /* the exit status when the plot could not be written */

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

/* Whether path starts with the PNG signature. */
static bool bench_is_png(const char *path)
{
	static const unsigned char sig[8] = { 0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n' };
	unsigned char head[8];
	FILE *f = fopen(path, "rb");
	bool ok;

	if (!f)
		return false;
	ok = fread(head, 1, sizeof(head), f) == sizeof(head) && memcmp(head, sig, sizeof(sig)) == 0;
	fclose(f);
	return ok;
}

/* Rank 0, after the sweep: runs gnuplot on a generated script. 0, or -1 with a message. */
static int bench_plot(const struct bench *b)
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
	if (!bench_is_png(b->plot_path)) {
		fprintf(stderr, "ibcomm_bench: --plot: %s succeeded but %s is missing or not a PNG\n", gnuplot,
			b->plot_path);
		return -1;
	}
	return 0;
}

/* "8", "64K", "1M", "2G" (powers of 1024; a trailing B is accepted). */
static int bench_parse_bytes(const char *s, size_t *out)
{
	char *end;
	unsigned long long v;
	unsigned long long mult = 1;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s || s[0] == '-')
		return -1;
	switch (*end) {
	case 'k': case 'K': mult = 1ULL << 10; end++; break;
	case 'm': case 'M': mult = 1ULL << 20; end++; break;
	case 'g': case 'G': mult = 1ULL << 30; end++; break;
	default: break;
	}
	if (*end == 'b' || *end == 'B')
		end++;
	if (*end || (v && mult > SIZE_MAX / v))
		return -1;
	*out = (size_t)(v * mult);
	return 0;
}

static int bench_parse_int(const char *s, int lo, int *out)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < lo || v > 1000000000)
		return -1;
	*out = (int)v;
	return 0;
}

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
		"  -h, --help           this help\n"
		"\n"
		"On a terminal, rank 0 shows the size being timed on stderr (not with --csv, --json).\n"
		"Exit status: 0; 1 when a result was wrong or a call failed; 2 for a usage error;\n"
		"3 when the results are complete but --plot could not write the plot.\n");
}

int main(int argc, char **argv)
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
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct bench b = {
		.min_bytes = 8, .max_bytes = 8 << 20, .factor = 2, .iters = 20, .warmup = 5,
		.check = true, .op = IBCOMM_SUM, .dtype_index = 8, .dtype = IBCOMM_FLOAT32,
	};
	const char *coll = "allreduce";
	ibcomm_status_t st;
	size_t bufsize;
	int opt, check = 1, reg = 0, status = 0;
	FILE *json_out = stdout;
	bool all;

	while ((opt = getopt_long(argc, argv, "b:e:f:i:n:w:c:o:d:r:C:R:h", longopts, NULL)) != -1) {
		bool bad = false;

		switch (opt) {
		case 'b': bad = bench_parse_bytes(optarg, &b.min_bytes) < 0; break;
		case 'e': bad = bench_parse_bytes(optarg, &b.max_bytes) < 0; break;
		case 'i': bad = bench_parse_bytes(optarg, &b.step_bytes) < 0 || b.step_bytes == 0; break;
		case 'f': {
			char *end;

			b.factor = strtod(optarg, &end);
			bad = end == optarg || *end || !(b.factor > 1) || b.factor > 1e6;
			break;
		}
		case 'n': bad = bench_parse_int(optarg, 1, &b.iters) < 0; break;
		case 'w': bad = bench_parse_int(optarg, 0, &b.warmup) < 0; break;
		case 'c':
			bad = bench_parse_int(optarg, 0, &check) < 0 || check > 1;
			b.check = check == 1;
			break;
		case 'r': bad = bench_parse_int(optarg, 0, &b.root) < 0; break;
		case 'o':
			bad = true;
			for (int k = 0; k < IBCOMM_OP_COUNT; k++) {
				if (strcasecmp(optarg, bench_ops[k]) == 0) {
					b.op = (ibcomm_op_t)k;
					bad = false;
				}
			}
			break;
		case 'd':
			bad = true;
			for (int k = 0; k < (int)(sizeof(bench_dtypes) / sizeof(bench_dtypes[0])); k++) {
				bool match = strcasecmp(optarg, bench_dtypes[k].name) == 0;

				for (int a = 0; a < 3 && bench_dtypes[k].alias[a]; a++)
					match = match || strcasecmp(optarg, bench_dtypes[k].alias[a]) == 0;
				if (match) {
					b.dtype_index = k;
					b.dtype = bench_dtypes[k].dtype;
					bad = false;
				}
			}
			break;
		case 'C': coll = optarg; break;
		case 'R':
			bad = bench_parse_int(optarg, 0, &reg) < 0 || reg > 1;
			b.reg = reg == 1;
			break;
		case 'V': b.csv = true; break;
		case 'J':
			b.json = true;
			b.json_path = optarg;
			bad = optarg && !*optarg;
			break;
		case 'P':
			b.plot_path = optarg;
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
	if (b.json && b.csv) {
		fprintf(stderr, "ibcomm_bench: --json and --csv exclude each other\n");
		return 2;
	}
	if (optind < argc) {
		fprintf(stderr, "ibcomm_bench: unexpected argument: %s\n", argv[optind]);
		return 2;
	}
	b.coll = coll;
	all = strcmp(coll, "all") == 0;
	b.kind = BENCH_KIND_COUNT;
	for (int k = 0; k < BENCH_KIND_COUNT; k++)
		if (strcmp(coll, bench_colls[k].name) == 0)
			b.kind = (enum bench_kind)k;
	if (!all && b.kind == BENCH_KIND_COUNT) {
		fprintf(stderr, "ibcomm_bench: unknown collective: %s\n", coll);
		return 2;
	}
	if (b.min_bytes > b.max_bytes) {
		fprintf(stderr, "ibcomm_bench: -b %zu is larger than -e %zu\n", b.min_bytes, b.max_bytes);
		return 2;
	}

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
	b.progress = b.rank == 0 && !b.csv && !b.json;
	if (b.progress && isatty(STDERR_FILENO)) {
		b.progress_out = stderr;
	} else if (b.progress && getenv("IBCOMM_RUN_TTY") && !strcmp(getenv("IBCOMM_RUN_TTY"), "1")) {
		b.progress_out = fopen("/dev/tty", "w");
		b.progress_launched = true;
	}
	b.progress = b.progress_out != NULL;
	b.progress_last = bench_now();
	b.steps = bench_count_sizes(&b) * (all ? BENCH_KIND_COUNT : 1);

	if (b.csv && b.rank == 0)
		printf("collective,nranks,size,count,type,redop,root,placement,time_us,algbw_GBps,busbw_GBps,wrong\n");
	for (int k = 0; k < BENCH_KIND_COUNT; k++) {
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
