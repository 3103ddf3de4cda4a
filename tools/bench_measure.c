/*
 * ibcomm_bench's measurement: the inputs of each collective (small integers, exact in every
 * datatype), the call in either placement, the check of every element on every rank, the
 * timing (the slowest rank's average), and the sweep of sizes.
 */
#define _GNU_SOURCE
#include "config.h"

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "ibcomm.h"
#include "bench.h"
#include "tool_util.h"

const struct bench_coll bench_colls[BENCH_KIND_COUNT] = {
	[BENCH_ALLREDUCE] = { "allreduce", false, false, true, true, true },
	[BENCH_BROADCAST] = { "broadcast", false, true, false, false, true },
	[BENCH_REDUCE] = { "reduce", false, true, true, true, true },
	[BENCH_ALLGATHER] = { "allgather", true, false, false, true, true },
	[BENCH_REDUCE_SCATTER] = { "reduce_scatter", true, false, true, true, true },
	[BENCH_GATHER] = { "gather", true, true, false, true, true },
	[BENCH_SCATTER] = { "scatter", true, true, false, true, true },
	[BENCH_ALLTOALL] = { "alltoall", true, false, false, true, false },
};

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

double bench_busbw_factor(enum bench_kind kind, int nranks)
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
	t0 = tool_now_s();
	for (int i = 0; i < b->iters; i++) {
		st = bench_call(b, ip);
		if (st != IBCOMM_OK)
			bench_die(b, what, st);
	}
	elapsed = (tool_now_s() - t0) / b->iters;
	st = ibcomm_allreduce(b->comm, &elapsed, &elapsed, 1, IBCOMM_FLOAT64, IBCOMM_MAX);
	if (st != IBCOMM_OK)
		bench_die(b, "allreduce of the elapsed time", st);
	res->time_us = elapsed * 1e6;
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

int bench_count_sizes(const struct bench *b)
{
	size_t size = b->min_bytes;
	int n = 1;

	while (bench_next_size(b, &size))
		n++;
	return n;
}

void bench_run(struct bench *b)
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
