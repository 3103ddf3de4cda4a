/*
 * ibcomm_bench: times one collective over a range of sizes, nccl-tests style.
 *
 *   ibcomm_run -n 4 -- ibcomm_bench -b 8 -e 128M -f 2 [-C allreduce] [-d float] [-o sum]
 *
 * Flags mean what they mean in nccl-tests: -b/-e smallest/largest size in bytes (K, M, G
 * suffixes), -f multiplication factor between sizes (or -i increment), -n timed iterations,
 * -w warm-up iterations, -c check results, -o reduction, -d datatype, -r root. -C picks the
 * collective (nccl-tests has one program per collective). --csv prints comma-separated rows.
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
#include <getopt.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

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

struct bench {
	ibcomm_t *comm;
	int rank, nranks;
	/* options */
	size_t min_bytes, max_bytes, step_bytes;
	double factor;
	int iters, warmup;
	bool check, csv;
	ibcomm_op_t op;
	int dtype_index;
	ibcomm_dtype_t dtype;
	int root;
	/* the run */
	enum bench_kind kind;
	size_t tsize; /* bytes of one element */
	size_t cnt;   /* per-rank count of the current size */
	char *sbuf, *rbuf;
	int64_t wrong_total;
	double busbw_sum;
	int busbw_n;
};

static double bench_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void bench_die(struct bench *b, const char *what, ibcomm_status_t st)
{
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

static double bench_busbw_factor(const struct bench *b)
{
	double n = b->nranks;

	switch (b->kind) {
	case BENCH_ALLREDUCE: return 2 * (n - 1) / n;
	case BENCH_BROADCAST:
	case BENCH_REDUCE: return 1;
	default: return (n - 1) / n;
	}
}

struct bench_result {
	bool done;
	double time_us; /* average per iteration, slowest rank */
	int64_t wrong;  /* over all ranks; -1: not checked */
};

/* One placement of one size: check (if asked), warm up, time. Collective. */
static void bench_measure(struct bench *b, bool ip, struct bench_result *res)
{
	ibcomm_status_t st;
	double t0, elapsed;
	char what[96];

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

	if (b->csv)
		return;
	printf("# ibcomm_bench: %s, %d ranks, transport %s\n", c->name, b->nranks, ibcomm_transport(b->comm));
	printf("#  minBytes %zu maxBytes %zu step: ", b->min_bytes, b->max_bytes);
	if (b->step_bytes)
		printf("%zu(bytes)", b->step_bytes);
	else
		printf("%g(factor)", b->factor);
	printf(" warmup iters: %d iters: %d validation: %d\n", b->warmup, b->iters, b->check);
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

static void bench_print_row(struct bench *b, size_t bytes, const struct bench_result res[2])
{
	const struct bench_coll *c = &bench_colls[b->kind];
	const char *type = bench_dtypes[b->dtype_index].name;
	const char *redop = c->reducing ? bench_ops[b->op] : "none";
	int root = c->rooted ? b->root : -1;

	if (!b->csv)
		printf("  %10zu  %12zu  %8s  %6s  %6d", bytes, b->cnt, type, redop, root);
	for (int k = 0; k < 2; k++) {
		double algbw, busbw;
		char wrong[24];

		if (!res[k].done) {
			if (!b->csv)
				printf("  %7s  %6s  %6s  %6s", "N/A", "N/A", "N/A", "N/A");
			continue;
		}
		algbw = res[k].time_us > 0 ? (double)bytes / 1e3 / res[k].time_us : 0;
		busbw = algbw * bench_busbw_factor(b);
		b->busbw_sum += busbw;
		b->busbw_n++;
		if (res[k].wrong < 0)
			snprintf(wrong, sizeof(wrong), b->csv ? "" : "N/A");
		else
			snprintf(wrong, sizeof(wrong), "%lld", (long long)res[k].wrong);
		if (b->csv)
			printf("%s,%d,%zu,%zu,%s,%s,%d,%s,%.3f,%.4f,%.4f,%s\n", c->name, b->nranks, bytes, b->cnt,
			       type, redop, root, k ? "in_place" : "out_of_place", res[k].time_us, algbw, busbw,
			       wrong);
		else
			printf(res[k].time_us < 10000 ? "  %7.2f  %6.2f  %6.2f  %6s" : "  %7.0f  %6.2f  %6.2f  %6s",
			       res[k].time_us, algbw, busbw, wrong);
	}
	if (!b->csv)
		printf("\n");
	fflush(stdout);
}

static void bench_run(struct bench *b)
{
	const struct bench_coll *c = &bench_colls[b->kind];
	size_t n = (size_t)b->nranks;

	if (b->rank == 0)
		bench_print_header(b);
	for (size_t size = b->min_bytes; size <= b->max_bytes;) {
		struct bench_result res[2] = { { 0 } };
		size_t next;

		b->cnt = c->per_rank ? size / (n * b->tsize) : size / b->tsize;
		if (c->out_of_place)
			bench_measure(b, false, &res[0]);
		if (c->in_place)
			bench_measure(b, true, &res[1]);
		for (int k = 0; k < 2; k++)
			if (res[k].wrong > 0)
				b->wrong_total += res[k].wrong;
		if (b->rank == 0)
			bench_print_row(b, b->cnt * b->tsize * (c->per_rank ? n : 1), res);
		next = b->step_bytes ? size + b->step_bytes : (size_t)((double)size * b->factor);
		if (next <= size)
			break;
		size = next;
	}
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
		"      --csv            comma-separated rows instead of the table\n"
		"  -h, --help           this help\n"
		"\n"
		"Exit status: 0, or 1 when a result was wrong or a call failed.\n");
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
		{ "csv", no_argument, NULL, 'V' },
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
	int opt, check = 1;
	bool all;

	while ((opt = getopt_long(argc, argv, "b:e:f:i:n:w:c:o:d:r:C:h", longopts, NULL)) != -1) {
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
		case 'V': b.csv = true; break;
		case 'h': bench_usage(stdout); return 0;
		default: bench_usage(stderr); return 2;
		}
		if (bad) {
			fprintf(stderr, "ibcomm_bench: bad value for -%c: %s\n", opt, optarg);
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "ibcomm_bench: unexpected argument: %s\n", argv[optind]);
		return 2;
	}
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
	if (b.root >= b.nranks) {
		fprintf(stderr, "ibcomm_bench: -r %d: the root must be below %d\n", b.root, b.nranks);
		ibcomm_destroy(b.comm);
		return 2;
	}
	b.tsize = ibcomm_dtype_size(b.dtype);
	bufsize = b.max_bytes > b.tsize * (size_t)b.nranks ? b.max_bytes : b.tsize * (size_t)b.nranks;
	if (posix_memalign((void **)&b.sbuf, 4096, bufsize) || posix_memalign((void **)&b.rbuf, 4096, bufsize)) {
		fprintf(stderr, "ibcomm_bench: rank %d: cannot allocate 2 x %zu bytes\n", b.rank, bufsize);
		return 1;
	}
	memset(b.sbuf, 0, bufsize);
	memset(b.rbuf, 0, bufsize);

	if (b.csv && b.rank == 0)
		printf("collective,nranks,size,count,type,redop,root,placement,time_us,algbw_GBps,busbw_GBps,wrong\n");
	for (int k = 0; k < BENCH_KIND_COUNT; k++) {
		if (!all && k != (int)b.kind)
			continue;
		b.kind = (enum bench_kind)k;
		bench_run(&b);
		if (all && !b.csv && b.rank == 0)
			printf("#\n");
	}
	if (b.rank == 0 && !b.csv) {
		printf("# Out of bounds values : %lld %s\n", (long long)b.wrong_total, b.wrong_total ? "FAILED" : "OK");
		printf("# Avg bus bandwidth    : %g\n", b.busbw_n ? b.busbw_sum / b.busbw_n : 0.0);
		printf("#\n");
	}
	st = ibcomm_destroy(b.comm);
	free(b.sbuf);
	free(b.rbuf);
	if (st != IBCOMM_OK) {
		fprintf(stderr, "ibcomm_bench: rank %d: ibcomm_destroy failed: %s\n", b.rank, ibcomm_strerror(st));
		return 1;
	}
	if (b.wrong_total > 0 && b.rank == 0)
		fprintf(stderr, "ibcomm_bench: %lld wrong elements\n", (long long)b.wrong_total);
	return b.wrong_total > 0 ? 1 : 0;
}
