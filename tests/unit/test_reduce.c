/*
 * Unit tests of lib/reduce.c: every datatype x op against plain scalar references written
 * here (never the library's kernels), with odd counts and misaligned buffers; integer
 * wrap-around; AVG and its truncation toward zero; the float16/bfloat16 conversions on every
 * 16-bit pattern and on every tie between two neighbours (round to nearest even).
 */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <CUnit/Basic.h>

#include "ibc.h"
#include "../cunit_main.h"

static const size_t counts[] = { 0, 1, 7, 33, 1001 };
/* Byte offsets of dst and src from an aligned base: aligned, one element off, odd bytes. */
static const size_t offsets[][2] = { { 0, 0 }, { 1, 0 }, { 0, 3 }, { 8, 2 }, { 7, 5 } };

/* ---- deterministic random numbers ---- */
static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rnd(void)
{
	/* xorshift64* */
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 0x2545f4914f6cdd1dull;
}

/* ---- reference conversions: arithmetic, not bit tricks ---- */
static uint32_t fbits(float f)
{
	uint32_t u;

	memcpy(&u, &f, 4);
	return u;
}

static float bitsf(uint32_t u)
{
	float f;

	memcpy(&f, &u, 4);
	return f;
}

/* A 16-bit float format: exponent bits, mantissa bits. */
struct fmt16 {
	int ebits, mbits;
};
static const struct fmt16 fp16 = { 5, 10 }, bf16 = { 8, 7 };

static double ref_to_double(struct fmt16 f, uint16_t h)
{
	int emax = (1 << f.ebits) - 1, bias = emax / 2;
	int e = (h >> f.mbits) & emax;
	int m = h & ((1 << f.mbits) - 1);
	double sign = (h & 0x8000) ? -1.0 : 1.0;

	if (e == emax)
		return m ? NAN : sign * INFINITY;
	if (e == 0)
		return sign * ldexp(m, 1 - bias - f.mbits);
	return sign * ldexp(m + (1 << f.mbits), e - bias - f.mbits);
}

/* Magnitude of the positive pattern p, where the first pattern past the largest finite one
 * counts as the next power of two (the value it would have without the Inf encoding). */
static double ref_mag(struct fmt16 f, uint16_t p)
{
	uint16_t inf = (uint16_t)(((1 << f.ebits) - 1) << f.mbits);

	if (p == inf)
		return 2 * ref_to_double(f, (uint16_t)(inf - (1 << f.mbits)));
	return ref_to_double(f, p);
}

/* Round x (float, not NaN) to the format: nearest, ties to the even pattern. Binary search
 * over the positive patterns, which are ordered like their values. */
static uint16_t ref_from_float(struct fmt16 f, float x)
{
	uint16_t inf = (uint16_t)(((1 << f.ebits) - 1) << f.mbits);
	uint16_t sign = signbit(x) ? 0x8000 : 0;
	double a = fabs((double)x);
	unsigned lo = 0, hi = inf; /* ref_mag(lo) <= a < ref_mag(hi), or a >= ref_mag(inf) */
	double dlo, dhi;

	if (a >= ref_mag(f, inf))
		return sign | inf;
	while (hi - lo > 1) {
		unsigned mid = (lo + hi) / 2;

		if (ref_mag(f, (uint16_t)mid) <= a)
			lo = mid;
		else
			hi = mid;
	}
	dlo = a - ref_mag(f, (uint16_t)lo);
	dhi = ref_mag(f, (uint16_t)hi) - a;
	if (dlo < dhi || (dlo == dhi && !(lo & 1)))
		return (uint16_t)(sign | lo);
	return (uint16_t)(sign | hi);
}

static bool is_nan16(struct fmt16 f, uint16_t h)
{
	uint16_t inf = (uint16_t)(((1 << f.ebits) - 1) << f.mbits);

	return (h & inf) == inf && (h & ((1 << f.mbits) - 1));
}

/* ---- conversions ---- */

static void check_roundtrip(struct fmt16 f, float (*to)(uint16_t), uint16_t (*from)(float))
{
	unsigned bad = 0;

	for (uint32_t h = 0; h <= 0xffff; h++) {
		float x = to((uint16_t)h);
		double ref = ref_to_double(f, (uint16_t)h);
		uint16_t back = from(x);

		if (is_nan16(f, (uint16_t)h)) {
			/* NaN stays NaN, with its sign. */
			if (!isnan(x) || !is_nan16(f, back) || (back & 0x8000) != (h & 0x8000))
				bad++;
			continue;
		}
		if ((double)x != ref || !signbit(x) != !signbit(ref) || back != h) {
			if (bad++ < 5)
				fprintf(stderr, "\n  %04x: %a (want %a) back %04x", h, (double)x, ref, back);
		}
	}
	CU_ASSERT_EQUAL(bad, 0);
}

/* Every tie between two neighbouring finite values, and the floats just around it. */
static void check_ties(struct fmt16 f, uint16_t (*from)(float))
{
	uint16_t inf = (uint16_t)(((1 << f.ebits) - 1) << f.mbits);
	unsigned bad = 0;

	for (uint32_t s = 0; s <= 0x8000; s += 0x8000) {
		for (uint32_t p = 0; p < inf; p++) {
			float mid = (float)((ref_mag(f, (uint16_t)p) + ref_mag(f, (uint16_t)(p + 1))) / 2);
			uint16_t even = (p & 1) ? (uint16_t)(p + 1) : (uint16_t)p;

			if (s)
				mid = -mid;
			if ((double)fabsf(mid) * 2 != ref_mag(f, (uint16_t)p) + ref_mag(f, (uint16_t)(p + 1)))
				bad++; /* the tie must be exact in float for this test to mean anything */
			if (from(mid) != (s | even))
				bad++;
			if (from(nextafterf(mid, 0)) != (s | p))
				bad++;
			if (from(nextafterf(mid, s ? -INFINITY : INFINITY)) != (s | (p + 1)))
				bad++;
		}
	}
	CU_ASSERT_EQUAL(bad, 0);
}

static void check_random_floats(struct fmt16 f, uint16_t (*from)(float))
{
	unsigned bad = 0;

	for (int i = 0; i < 200000; i++) {
		uint32_t u = (uint32_t)rnd();
		float x;

		/* Bias toward the format's range: squeeze the exponent half of the time. */
		if (i & 1)
			u = (u & 0x807fffffu) | ((uint32_t)(100 + (rnd() % 60)) << 23);
		x = bitsf(u);
		if (isnan(x))
			continue;
		if (from(x) != ref_from_float(f, x))
			bad++;
	}
	CU_ASSERT_EQUAL(bad, 0);
}

static void test_half_roundtrip(void)
{
	check_roundtrip(fp16, ibc_half_to_float, ibc_float_to_half);
}

static void test_bf16_roundtrip(void)
{
	check_roundtrip(bf16, ibc_bf16_to_float, ibc_float_to_bf16);
}

static void test_half_rounding(void)
{
	check_ties(fp16, ibc_float_to_half);
	check_random_floats(fp16, ibc_float_to_half);

	/* Chosen values. */
	CU_ASSERT_EQUAL(ibc_float_to_half(1.0f), 0x3c00);
	CU_ASSERT_EQUAL(ibc_float_to_half(1.0f + 0x1p-11f), 0x3c00); /* tie, down to even */
	CU_ASSERT_EQUAL(ibc_float_to_half(1.0f + 3 * 0x1p-11f), 0x3c02); /* tie, up to even */
	CU_ASSERT_EQUAL(ibc_float_to_half(1.0f + 0x1p-11f + 0x1p-20f), 0x3c01);
	CU_ASSERT_EQUAL(ibc_float_to_half(-2.0f), 0xc000);
	CU_ASSERT_EQUAL(ibc_float_to_half(-0.0f), 0x8000);
	CU_ASSERT_EQUAL(ibc_float_to_half(65504.0f), 0x7bff);
	CU_ASSERT_EQUAL(ibc_float_to_half(65519.0f), 0x7bff);
	CU_ASSERT_EQUAL(ibc_float_to_half(65520.0f), 0x7c00); /* tie, to the even Inf */
	CU_ASSERT_EQUAL(ibc_float_to_half(-1e6f), 0xfc00);
	CU_ASSERT_EQUAL(ibc_float_to_half(INFINITY), 0x7c00);
	CU_ASSERT_EQUAL(ibc_float_to_half(FLT_MAX), 0x7c00);
	CU_ASSERT_EQUAL(ibc_float_to_half(0x1p-24f), 0x0001); /* smallest subnormal */
	CU_ASSERT_EQUAL(ibc_float_to_half(0x1p-25f), 0x0000); /* tie, to even zero */
	CU_ASSERT_EQUAL(ibc_float_to_half(0x1p-25f + 0x1p-40f), 0x0001);
	CU_ASSERT_EQUAL(ibc_float_to_half(3 * 0x1p-25f), 0x0002); /* tie, up to even */
	CU_ASSERT_EQUAL(ibc_float_to_half(0x1p-14f - 0x1p-25f), 0x0400); /* tie into the normals */
	CU_ASSERT_EQUAL(ibc_float_to_half(0x1p-14f), 0x0400);
	CU_ASSERT_EQUAL(ibc_float_to_half(1e-30f), 0x0000);
	CU_ASSERT_EQUAL(ibc_float_to_half(bitsf(0x00000001)), 0x0000); /* float subnormal */
	CU_ASSERT_EQUAL(ibc_float_to_half(-1e-30f), 0x8000);
	CU_ASSERT_EQUAL(ibc_half_to_float(0x0001), 0x1p-24f);
	CU_ASSERT_EQUAL(ibc_half_to_float(0x03ff), 0x3ffp-24f);
	CU_ASSERT_EQUAL(ibc_half_to_float(0x7bff), 65504.0f);
	CU_ASSERT_EQUAL(ibc_half_to_float(0xfc00), -INFINITY);
	/* A NaN whose payload is only in the bits fp16 drops must not become Inf. */
	CU_ASSERT_TRUE(is_nan16(fp16, ibc_float_to_half(bitsf(0x7f800001))));
	CU_ASSERT_TRUE(is_nan16(fp16, ibc_float_to_half(bitsf(0xffc00000))));
	CU_ASSERT_TRUE(is_nan16(fp16, ibc_float_to_half(NAN)));
	CU_ASSERT_TRUE(isnan(ibc_half_to_float(0x7c01)));
	CU_ASSERT_TRUE(isnan(ibc_half_to_float(0xfe00)));
}

static void test_bf16_rounding(void)
{
	check_ties(bf16, ibc_float_to_bf16);
	check_random_floats(bf16, ibc_float_to_bf16);

	CU_ASSERT_EQUAL(ibc_float_to_bf16(1.0f), 0x3f80);
	CU_ASSERT_EQUAL(ibc_float_to_bf16(1.0f + 0x1p-8f), 0x3f80); /* tie, down to even */
	CU_ASSERT_EQUAL(ibc_float_to_bf16(1.0f + 3 * 0x1p-8f), 0x3f82); /* tie, up to even */
	CU_ASSERT_EQUAL(ibc_float_to_bf16(1.0f + 0x1p-8f + 0x1p-20f), 0x3f81);
	CU_ASSERT_EQUAL(ibc_float_to_bf16(-0.0f), 0x8000);
	CU_ASSERT_EQUAL(ibc_float_to_bf16(FLT_MAX), 0x7f80); /* rounds up to Inf */
	CU_ASSERT_EQUAL(ibc_float_to_bf16(-INFINITY), 0xff80);
	CU_ASSERT_EQUAL(ibc_float_to_bf16(bitsf(0x00008000)), 0x0000); /* subnormal tie, to even */
	CU_ASSERT_EQUAL(ibc_float_to_bf16(bitsf(0x00018000)), 0x0002); /* subnormal tie, up */
	CU_ASSERT_EQUAL(ibc_float_to_bf16(bitsf(0x00008001)), 0x0001);
	CU_ASSERT_EQUAL(ibc_bf16_to_float(0x0001), bitsf(0x00010000));
	CU_ASSERT_TRUE(is_nan16(bf16, ibc_float_to_bf16(bitsf(0x7f800001))));
	CU_ASSERT_TRUE(is_nan16(bf16, ibc_float_to_bf16(bitsf(0xffffffff))));
	CU_ASSERT_TRUE(isnan(ibc_bf16_to_float(0x7f81)));
}

/* ---- reference reductions, one element at a time ---- */

static bool dtype_signed(ibcomm_dtype_t dt)
{
	return dt == IBCOMM_INT8 || dt == IBCOMM_INT32 || dt == IBCOMM_INT64;
}

static bool dtype_int(ibcomm_dtype_t dt)
{
	return dt <= IBCOMM_UINT64;
}

/* An integer element as its raw unsigned bits, and sign-extended. */
static uint64_t load_u(const void *p, size_t size)
{
	uint8_t u8;
	uint32_t u32;
	uint64_t u64;

	switch (size) {
	case 1: memcpy(&u8, p, 1); return u8;
	case 4: memcpy(&u32, p, 4); return u32;
	default: memcpy(&u64, p, 8); return u64;
	}
}

static int64_t load_s(const void *p, size_t size)
{
	int8_t s8;
	int32_t s32;
	int64_t s64;

	switch (size) {
	case 1: memcpy(&s8, p, 1); return s8;
	case 4: memcpy(&s32, p, 4); return s32;
	default: memcpy(&s64, p, 8); return s64;
	}
}

/* Stores the low 8 x size bits of v (a 16-bit element takes size 2). */
static void store_u(void *p, size_t size, uint64_t v)
{
	uint8_t u8 = (uint8_t)v;
	uint16_t u16 = (uint16_t)v;
	uint32_t u32 = (uint32_t)v;

	switch (size) {
	case 1: memcpy(p, &u8, 1); break;
	case 2: memcpy(p, &u16, 2); break;
	case 4: memcpy(p, &u32, 4); break;
	default: memcpy(p, &v, 8); break;
	}
}

/* r = a op b for one element; AVG accumulates as SUM. */
static void ref_op(ibcomm_dtype_t dt, ibcomm_op_t op, void *r, const void *a, const void *b)
{
	size_t size = ibcomm_dtype_size(dt);

	if (op == IBCOMM_AVG)
		op = IBCOMM_SUM;
	if (dtype_int(dt)) {
		uint64_t ua = load_u(a, size), ub = load_u(b, size), v = 0;
		bool lt; /* b < a */

		if (dtype_signed(dt))
			lt = load_s(b, size) < load_s(a, size);
		else
			lt = ub < ua;
		switch (op) {
		case IBCOMM_SUM: v = ua + ub; break; /* the low bits are the two's complement result */
		case IBCOMM_PROD: v = ua * ub; break;
		case IBCOMM_MIN: v = lt ? ub : ua; break;
		default: v = lt ? ua : ub; break;
		}
		store_u(r, size, v);
		return;
	}
	if (dt == IBCOMM_FLOAT32 || dt == IBCOMM_FLOAT64) {
		double x, y, z;

		if (dt == IBCOMM_FLOAT32) {
			float fx, fy;

			memcpy(&fx, a, 4);
			memcpy(&fy, b, 4);
			x = fx, y = fy;
		} else {
			memcpy(&x, a, 8);
			memcpy(&y, b, 8);
		}
		switch (op) {
		case IBCOMM_SUM: z = dt == IBCOMM_FLOAT32 ? (float)x + (float)y : x + y; break;
		case IBCOMM_PROD: z = dt == IBCOMM_FLOAT32 ? (float)x * (float)y : x * y; break;
		case IBCOMM_MIN: z = (isnan(x) || isnan(y)) ? NAN : y < x ? y : x; break;
		default: z = (isnan(x) || isnan(y)) ? NAN : y > x ? y : x; break;
		}
		if (dt == IBCOMM_FLOAT32) {
			float fz = (float)z;

			memcpy(r, &fz, 4);
		} else {
			memcpy(r, &z, 8);
		}
		return;
	}
	/* float16, bfloat16: in fp32, rounded back; MIN/MAX pick an input. */
	struct fmt16 f = dt == IBCOMM_FLOAT16 ? fp16 : bf16;
	uint16_t ha, hb, hr;
	float x, y;

	memcpy(&ha, a, 2);
	memcpy(&hb, b, 2);
	x = (float)ref_to_double(f, ha);
	y = (float)ref_to_double(f, hb);
	switch (op) {
	case IBCOMM_SUM: hr = isnan(x + y) ? 0x7fff : ref_from_float(f, x + y); break;
	case IBCOMM_PROD: hr = isnan(x * y) ? 0x7fff : ref_from_float(f, x * y); break;
	case IBCOMM_MIN: hr = (isnan(x) || isnan(y)) ? 0x7fff : y < x ? hb : ha; break;
	default: hr = (isnan(x) || isnan(y)) ? 0x7fff : y > x ? hb : ha; break;
	}
	memcpy(r, &hr, 2);
}

/* Same element? NaN matches any NaN; otherwise the bits must be equal. */
static bool same(ibcomm_dtype_t dt, const void *x, const void *y)
{
	size_t size = ibcomm_dtype_size(dt);

	switch (dt) {
	case IBCOMM_FLOAT16:
	case IBCOMM_BFLOAT16: {
		struct fmt16 f = dt == IBCOMM_FLOAT16 ? fp16 : bf16;
		uint16_t a, b;

		memcpy(&a, x, 2);
		memcpy(&b, y, 2);
		if (is_nan16(f, a) || is_nan16(f, b))
			return is_nan16(f, a) && is_nan16(f, b);
		return a == b;
	}
	case IBCOMM_FLOAT32: {
		float a, b;

		memcpy(&a, x, 4);
		memcpy(&b, y, 4);
		if (isnan(a) || isnan(b))
			return isnan(a) && isnan(b);
		break;
	}
	case IBCOMM_FLOAT64: {
		double a, b;

		memcpy(&a, x, 8);
		memcpy(&b, y, 8);
		if (isnan(a) || isnan(b))
			return isnan(a) && isnan(b);
		break;
	}
	default:
		break;
	}
	return memcmp(x, y, size) == 0;
}

/* Random elements; floats finite (NaN and Inf are tested on purpose elsewhere). */
static void fill(ibcomm_dtype_t dt, void *buf, size_t count)
{
	uint8_t *p = buf;
	size_t size = ibcomm_dtype_size(dt);

	for (size_t i = 0; i < count; i++, p += size) {
		uint64_t v = rnd();

		switch (dt) {
		case IBCOMM_FLOAT16:
			if ((v & 0x7c00) == 0x7c00)
				v &= ~0x4000ull;
			break;
		case IBCOMM_BFLOAT16:
			if ((v & 0x7f80) == 0x7f80)
				v &= ~0x4000ull;
			break;
		case IBCOMM_FLOAT32:
			/* Half the time, exponents near 1 so that sums are not all one operand. */
			if (v & (1ull << 40))
				v = (v & 0x807fffffull) | ((uint64_t)(120 + (v >> 56) % 16) << 23);
			else if ((v & 0x7f800000) == 0x7f800000)
				v &= ~0x40000000ull;
			break;
		case IBCOMM_FLOAT64:
			if (v & (1ull << 40))
				v = (v & 0x800fffffffffffffull) | ((uint64_t)(1016 + (v >> 56) % 16) << 52);
			else if ((v & 0x7ff0000000000000ull) == 0x7ff0000000000000ull)
				v &= ~0x4000000000000000ull;
			break;
		default:
			/* Integers: small values a third of the time, for MIN/MAX ties and AVG. */
			if (v % 3 == 0)
				v = (uint64_t)((int64_t)(v >> 32) % 7 - 3);
			break;
		}
		store_u(p, size, v);
	}
}

static void check_kernel(ibcomm_dtype_t dt, ibcomm_op_t op)
{
	ibc_reduce_fn fn = ibc_reduce_kernel(dt, op);
	size_t size = ibcomm_dtype_size(dt);
	char where[128];

	CU_ASSERT_PTR_NOT_NULL_FATAL(fn);
	for (size_t c = 0; c < IBC_ARRAY_SIZE(counts); c++) {
		for (size_t o = 0; o < IBC_ARRAY_SIZE(offsets); o++) {
			size_t count = counts[c], len = (count + 2) * size + 16;
			uint8_t *dbuf = malloc(len), *sbuf = malloc(len), *d0 = malloc(len), *s0 = malloc(len);
			uint8_t *want = malloc(len);
			uint8_t *d = dbuf + offsets[o][0], *s = sbuf + offsets[o][1];
			unsigned bad = 0;

			CU_ASSERT_FATAL(dbuf && sbuf && d0 && s0 && want);
			fill(dt, dbuf, len / size);
			fill(dt, sbuf, len / size);
			memcpy(d0, dbuf, len);
			memcpy(s0, sbuf, len);
			for (size_t i = 0; i < count; i++)
				ref_op(dt, op, want + i * size, d + i * size, s + i * size);
			fn(d, s, count);
			for (size_t i = 0; i < count; i++)
				if (!same(dt, d + i * size, want + i * size))
					bad++;
			snprintf(where, sizeof(where), "%s %s count %zu offsets %zu/%zu: %u wrong", ibc_dtype_name(dt),
				 ibc_op_name(op), count, offsets[o][0], offsets[o][1], bad);
			CU_ASSERT_EQUAL(bad, 0);
			if (bad)
				fprintf(stderr, "\n  %s\n", where);
			/* Nothing outside [d, d + count) written, src untouched. */
			CU_ASSERT_EQUAL(memcmp(dbuf, d0, offsets[o][0]), 0);
			CU_ASSERT_EQUAL(memcmp(d + count * size, d0 + offsets[o][0] + count * size,
					       len - offsets[o][0] - count * size), 0);
			CU_ASSERT_EQUAL(memcmp(sbuf, s0, len), 0);
			free(dbuf);
			free(sbuf);
			free(d0);
			free(s0);
			free(want);
		}
	}
}

#define KERNEL_TEST(fn, dt)                                  \
	static void fn(void)                                 \
	{                                                    \
		for (int op = 0; op < IBCOMM_OP_COUNT; op++) \
			check_kernel(dt, (ibcomm_op_t)op);   \
	}
KERNEL_TEST(test_kernels_int8, IBCOMM_INT8)
KERNEL_TEST(test_kernels_uint8, IBCOMM_UINT8)
KERNEL_TEST(test_kernels_int32, IBCOMM_INT32)
KERNEL_TEST(test_kernels_uint32, IBCOMM_UINT32)
KERNEL_TEST(test_kernels_int64, IBCOMM_INT64)
KERNEL_TEST(test_kernels_uint64, IBCOMM_UINT64)
KERNEL_TEST(test_kernels_float16, IBCOMM_FLOAT16)
KERNEL_TEST(test_kernels_bfloat16, IBCOMM_BFLOAT16)
KERNEL_TEST(test_kernels_float32, IBCOMM_FLOAT32)
KERNEL_TEST(test_kernels_float64, IBCOMM_FLOAT64)

/* ---- chosen values ---- */

#define REDUCE1(T, dt, op, a, b)                                         \
	({                                                               \
		T x_ = (a), y_ = (b);                                    \
		ibc_reduce_kernel(dt, op)(&x_, &y_, 1);                  \
		x_;                                                      \
	})

static void test_wrap(void)
{
	CU_ASSERT_EQUAL(REDUCE1(int8_t, IBCOMM_INT8, IBCOMM_SUM, 127, 1), -128);
	CU_ASSERT_EQUAL(REDUCE1(int8_t, IBCOMM_INT8, IBCOMM_SUM, -128, -1), 127);
	CU_ASSERT_EQUAL(REDUCE1(int8_t, IBCOMM_INT8, IBCOMM_PROD, 16, 16), 0);
	CU_ASSERT_EQUAL(REDUCE1(int8_t, IBCOMM_INT8, IBCOMM_PROD, -128, -1), -128);
	CU_ASSERT_EQUAL(REDUCE1(int8_t, IBCOMM_INT8, IBCOMM_PROD, -1, -1), 1);
	CU_ASSERT_EQUAL(REDUCE1(uint8_t, IBCOMM_UINT8, IBCOMM_SUM, 200, 100), 44);
	CU_ASSERT_EQUAL(REDUCE1(uint8_t, IBCOMM_UINT8, IBCOMM_PROD, 255, 255), 1);
	CU_ASSERT_EQUAL(REDUCE1(int32_t, IBCOMM_INT32, IBCOMM_SUM, INT32_MAX, 1), INT32_MIN);
	CU_ASSERT_EQUAL(REDUCE1(int32_t, IBCOMM_INT32, IBCOMM_PROD, 65536, 65536), 0);
	CU_ASSERT_EQUAL(REDUCE1(int32_t, IBCOMM_INT32, IBCOMM_PROD, INT32_MIN, -1), INT32_MIN);
	CU_ASSERT_EQUAL(REDUCE1(int32_t, IBCOMM_INT32, IBCOMM_PROD, 46341, 46341), -2147479015);
	CU_ASSERT_EQUAL(REDUCE1(uint32_t, IBCOMM_UINT32, IBCOMM_SUM, UINT32_MAX, 2), 1u);
	CU_ASSERT_EQUAL(REDUCE1(uint32_t, IBCOMM_UINT32, IBCOMM_PROD, UINT32_MAX, UINT32_MAX), 1u);
	CU_ASSERT_EQUAL(REDUCE1(int64_t, IBCOMM_INT64, IBCOMM_SUM, INT64_MAX, 1), INT64_MIN);
	CU_ASSERT_EQUAL(REDUCE1(int64_t, IBCOMM_INT64, IBCOMM_PROD, INT64_MIN, -1), INT64_MIN);
	CU_ASSERT_EQUAL(REDUCE1(int64_t, IBCOMM_INT64, IBCOMM_PROD, (1ll << 32) + 1, (1ll << 32) + 1),
			(1ll << 33) + 1);
	CU_ASSERT_EQUAL(REDUCE1(uint64_t, IBCOMM_UINT64, IBCOMM_SUM, UINT64_MAX, UINT64_MAX), UINT64_MAX - 1);
	CU_ASSERT_EQUAL(REDUCE1(uint64_t, IBCOMM_UINT64, IBCOMM_PROD, UINT64_MAX, UINT64_MAX), 1u);
	/* AVG accumulates like SUM, wrap included. */
	CU_ASSERT_EQUAL(REDUCE1(int8_t, IBCOMM_INT8, IBCOMM_AVG, 127, 1), -128);
	/* MIN/MAX honour the signedness. */
	CU_ASSERT_EQUAL(REDUCE1(int8_t, IBCOMM_INT8, IBCOMM_MIN, -1, 1), -1);
	CU_ASSERT_EQUAL(REDUCE1(uint8_t, IBCOMM_UINT8, IBCOMM_MIN, 255, 1), 1);
	CU_ASSERT_EQUAL(REDUCE1(int64_t, IBCOMM_INT64, IBCOMM_MAX, INT64_MIN, -1), -1);
	CU_ASSERT_EQUAL(REDUCE1(uint64_t, IBCOMM_UINT64, IBCOMM_MAX, UINT64_MAX, 1), UINT64_MAX);
}

/* NaN in either operand gives NaN, MIN and MAX included, for every float type and both code
 * paths (16 elements: the vector loop; the 17th: the scalar tail). */
static void test_nan(void)
{
	static const ibcomm_dtype_t dts[] = { IBCOMM_FLOAT16, IBCOMM_BFLOAT16, IBCOMM_FLOAT32, IBCOMM_FLOAT64 };

	for (size_t t = 0; t < IBC_ARRAY_SIZE(dts); t++) {
		ibcomm_dtype_t dt = dts[t];
		size_t size = ibcomm_dtype_size(dt);
		uint64_t qnan, one;

		switch (dt) {
		case IBCOMM_FLOAT16: qnan = 0x7e00, one = 0x3c00; break;
		case IBCOMM_BFLOAT16: qnan = 0x7fc0, one = 0x3f80; break;
		case IBCOMM_FLOAT32: qnan = fbits(NAN), one = fbits(1.0f); break;
		default: qnan = 0x7ff8000000000000ull, one = 0x3ff0000000000000ull; break;
		}
		for (int op = 0; op < IBCOMM_OP_COUNT; op++) {
			uint8_t d[17 * 8], s[17 * 8], want[8];
			unsigned bad = 0;

			/* even i: dst NaN, src 1; odd i: dst 1, src NaN */
			for (size_t i = 0; i < 17; i++) {
				store_u(d + i * size, size, (i & 1) ? one : qnan);
				store_u(s + i * size, size, (i & 1) ? qnan : one);
			}
			store_u(want, size, qnan);
			ibc_reduce_kernel(dt, (ibcomm_op_t)op)(d, s, 17);
			for (size_t i = 0; i < 17; i++)
				if (!same(dt, d + i * size, want))
					bad++;
			CU_ASSERT_EQUAL(bad, 0);
			if (bad)
				fprintf(stderr, "\n  %s %s: %u not NaN\n", ibc_dtype_name(dt), ibc_op_name((ibcomm_op_t)op),
					bad);
		}
	}
	/* Inf + -Inf */
	float fi = INFINITY, fm = -INFINITY;
	uint16_t hi[9], hm[9];

	ibc_reduce_kernel(IBCOMM_FLOAT32, IBCOMM_SUM)(&fi, &fm, 1);
	CU_ASSERT_TRUE(isnan(fi));
	for (int i = 0; i < 9; i++)
		hi[i] = 0x7c00, hm[i] = 0xfc00;
	ibc_reduce_kernel(IBCOMM_FLOAT16, IBCOMM_SUM)(hi, hm, 9);
	CU_ASSERT_TRUE(is_nan16(fp16, hi[0]) && is_nan16(fp16, hi[8]));
}

/* ---- AVG: ibc_reduce_finish ---- */

static void test_avg_trunc(void)
{
	int32_t i32[] = { -7, 7, -1, -5, INT32_MIN, INT32_MAX, 0 };
	int32_t i32_2[] = { -3, 3, 0, -2, INT32_MIN / 2, INT32_MAX / 2, 0 };
	int8_t i8[] = { -128, 127, -5, 5, -2 };
	int8_t i8_3[] = { -42, 42, -1, 1, 0 };
	int64_t i64[] = { -9, INT64_MIN, INT64_MAX, -3 };
	int64_t i64_4[] = { -2, INT64_MIN / 4, INT64_MAX / 4, 0 };
	uint64_t u64[] = { UINT64_MAX, 7 };
	float f32[] = { -7.0f, 1.0f };
	uint16_t f16[] = { 0xc700 /* -7 */, 0x3c00 /* 1 */ };
	int8_t avg_i8[300];

	ibc_reduce_finish(i32, IBC_ARRAY_SIZE(i32), IBCOMM_INT32, IBCOMM_AVG, 2);
	CU_ASSERT_EQUAL(memcmp(i32, i32_2, sizeof(i32)), 0);
	ibc_reduce_finish(i8, IBC_ARRAY_SIZE(i8), IBCOMM_INT8, IBCOMM_AVG, 3);
	CU_ASSERT_EQUAL(memcmp(i8, i8_3, sizeof(i8)), 0);
	ibc_reduce_finish(i64, IBC_ARRAY_SIZE(i64), IBCOMM_INT64, IBCOMM_AVG, 4);
	CU_ASSERT_EQUAL(memcmp(i64, i64_4, sizeof(i64)), 0);
	ibc_reduce_finish(u64, IBC_ARRAY_SIZE(u64), IBCOMM_UINT64, IBCOMM_AVG, 2);
	CU_ASSERT_EQUAL(u64[0], UINT64_MAX / 2);
	CU_ASSERT_EQUAL(u64[1], 3);
	ibc_reduce_finish(f32, 2, IBCOMM_FLOAT32, IBCOMM_AVG, 2);
	CU_ASSERT_EQUAL(f32[0], -3.5f);
	CU_ASSERT_EQUAL(f32[1], 0.5f);
	ibc_reduce_finish(f16, 2, IBCOMM_FLOAT16, IBCOMM_AVG, 2);
	CU_ASSERT_EQUAL(f16[0], 0xc300); /* -3.5 */
	CU_ASSERT_EQUAL(f16[1], 0x3800); /* 0.5 */
	/* More ranks than int8 can count. */
	for (int i = 0; i < 300; i++)
		avg_i8[i] = (int8_t)(i - 150 < -128 ? -128 : i - 150 > 127 ? 127 : i - 150);
	ibc_reduce_finish(avg_i8, 300, IBCOMM_INT8, IBCOMM_AVG, 200);
	CU_ASSERT_EQUAL(avg_i8[0], 0);
	/* Other ops, one rank, empty buffers: nothing happens. */
	int32_t keep[] = { -7, 9 };
	ibc_reduce_finish(keep, 2, IBCOMM_INT32, IBCOMM_SUM, 4);
	ibc_reduce_finish(keep, 2, IBCOMM_INT32, IBCOMM_MAX, 4);
	ibc_reduce_finish(keep, 2, IBCOMM_INT32, IBCOMM_AVG, 1);
	ibc_reduce_finish(keep, 0, IBCOMM_INT32, IBCOMM_AVG, 4);
	ibc_reduce_finish(NULL, 0, IBCOMM_INT32, IBCOMM_AVG, 4);
	CU_ASSERT_TRUE(keep[0] == -7 && keep[1] == 9);
}

/* Three ranks' buffers averaged as an allreduce would: two AVG steps, then finish. */
static void check_avg(ibcomm_dtype_t dt)
{
	ibc_reduce_fn fn = ibc_reduce_kernel(dt, IBCOMM_AVG);
	size_t size = ibcomm_dtype_size(dt);

	for (size_t c = 0; c < IBC_ARRAY_SIZE(counts); c++) {
		size_t count = counts[c];
		uint8_t *r[3], *acc = malloc(count * size + 1), *want = malloc(count * size + 1);
		unsigned bad = 0;

		for (int k = 0; k < 3; k++) {
			r[k] = malloc(count * size + 1);
			fill(dt, r[k], count);
		}
		memcpy(acc, r[0], count * size);
		memcpy(want, r[0], count * size);
		for (int k = 1; k < 3; k++) {
			fn(acc, r[k], count);
			for (size_t i = 0; i < count; i++)
				ref_op(dt, IBCOMM_SUM, want + i * size, want + i * size, r[k] + i * size);
		}
		ibc_reduce_finish(acc, count, dt, IBCOMM_AVG, 3);
		for (size_t i = 0; i < count; i++) {
			uint8_t *e = want + i * size;

			if (dtype_int(dt) && dtype_signed(dt)) {
				store_u(e, size, (uint64_t)(load_s(e, size) / 3)); /* C truncates toward zero */
			} else if (dtype_int(dt)) {
				store_u(e, size, load_u(e, size) / 3);
			} else if (dt == IBCOMM_FLOAT32) {
				float v;

				memcpy(&v, e, 4);
				v /= 3.0f;
				memcpy(e, &v, 4);
			} else if (dt == IBCOMM_FLOAT64) {
				double v;

				memcpy(&v, e, 8);
				v /= 3.0;
				memcpy(e, &v, 8);
			} else {
				struct fmt16 f = dt == IBCOMM_FLOAT16 ? fp16 : bf16;
				uint16_t h;
				float v;

				memcpy(&h, e, 2);
				v = (float)ref_to_double(f, h) / 3.0f;
				h = isnan(v) ? 0x7fff : ref_from_float(f, v);
				memcpy(e, &h, 2);
			}
			if (!same(dt, acc + i * size, e))
				bad++;
		}
		CU_ASSERT_EQUAL(bad, 0);
		if (bad)
			fprintf(stderr, "\n  avg %s count %zu: %u wrong\n", ibc_dtype_name(dt), count, bad);
		for (int k = 0; k < 3; k++)
			free(r[k]);
		free(acc);
		free(want);
	}
}

static void test_avg_all(void)
{
	for (int dt = 0; dt < IBCOMM_DTYPE_COUNT; dt++)
		check_avg((ibcomm_dtype_t)dt);
}

/* ---- names, sizes, validity ---- */

static void test_names(void)
{
	static const char *const dnames[] = { "int8",    "uint8",    "int32",   "uint32",  "int64",
					      "uint64",  "float16",  "bfloat16", "float32", "float64" };
	static const size_t sizes[] = { 1, 1, 4, 4, 8, 8, 2, 2, 4, 8 };
	static const char *const onames[] = { "sum", "prod", "min", "max", "avg" };

	for (int dt = 0; dt < IBCOMM_DTYPE_COUNT; dt++) {
		CU_ASSERT_TRUE(ibc_dtype_valid((ibcomm_dtype_t)dt));
		CU_ASSERT_STRING_EQUAL(ibc_dtype_name((ibcomm_dtype_t)dt), dnames[dt]);
		CU_ASSERT_EQUAL(ibcomm_dtype_size((ibcomm_dtype_t)dt), sizes[dt]);
		for (int op = 0; op < IBCOMM_OP_COUNT; op++)
			CU_ASSERT_PTR_NOT_NULL(ibc_reduce_kernel((ibcomm_dtype_t)dt, (ibcomm_op_t)op));
		CU_ASSERT_PTR_NULL(ibc_reduce_kernel((ibcomm_dtype_t)dt, IBCOMM_OP_COUNT));
		CU_ASSERT_PTR_NULL(ibc_reduce_kernel((ibcomm_dtype_t)dt, (ibcomm_op_t)-1));
	}
	for (int op = 0; op < IBCOMM_OP_COUNT; op++) {
		CU_ASSERT_TRUE(ibc_op_valid((ibcomm_op_t)op));
		CU_ASSERT_STRING_EQUAL(ibc_op_name((ibcomm_op_t)op), onames[op]);
	}
	CU_ASSERT_FALSE(ibc_dtype_valid(IBCOMM_DTYPE_COUNT));
	CU_ASSERT_FALSE(ibc_dtype_valid((ibcomm_dtype_t)-1));
	CU_ASSERT_FALSE(ibc_op_valid(IBCOMM_OP_COUNT));
	CU_ASSERT_FALSE(ibc_op_valid((ibcomm_op_t)-1));
	CU_ASSERT_EQUAL(ibcomm_dtype_size(IBCOMM_DTYPE_COUNT), 0);
	CU_ASSERT_EQUAL(ibcomm_dtype_size((ibcomm_dtype_t)-1), 0);
	CU_ASSERT_PTR_NOT_NULL(ibc_dtype_name(IBCOMM_DTYPE_COUNT));
	CU_ASSERT_PTR_NOT_NULL(ibc_op_name((ibcomm_op_t)99));
	CU_ASSERT_PTR_NULL(ibc_reduce_kernel(IBCOMM_DTYPE_COUNT, IBCOMM_SUM));
	CU_ASSERT_PTR_NULL(ibc_reduce_kernel((ibcomm_dtype_t)-1, IBCOMM_SUM));
	/* AVG accumulates with the SUM kernel. */
	for (int dt = 0; dt < IBCOMM_DTYPE_COUNT; dt++)
		CU_ASSERT_PTR_EQUAL(ibc_reduce_kernel((ibcomm_dtype_t)dt, IBCOMM_AVG),
				    ibc_reduce_kernel((ibcomm_dtype_t)dt, IBCOMM_SUM));
}

int main(int argc, char **argv)
{
	static const struct cm_test tests[] = {
		{ "fp16 round trip of every pattern", test_half_roundtrip },
		{ "bf16 round trip of every pattern", test_bf16_roundtrip },
		{ "fp16 rounding to nearest even", test_half_rounding },
		{ "bf16 rounding to nearest even", test_bf16_rounding },
		{ "kernels int8", test_kernels_int8 },
		{ "kernels uint8", test_kernels_uint8 },
		{ "kernels int32", test_kernels_int32 },
		{ "kernels uint32", test_kernels_uint32 },
		{ "kernels int64", test_kernels_int64 },
		{ "kernels uint64", test_kernels_uint64 },
		{ "kernels float16", test_kernels_float16 },
		{ "kernels bfloat16", test_kernels_bfloat16 },
		{ "kernels float32", test_kernels_float32 },
		{ "kernels float64", test_kernels_float64 },
		{ "integer wrap-around", test_wrap },
		{ "NaN propagation", test_nan },
		{ "AVG truncation and finish", test_avg_trunc },
		{ "AVG of three ranks, every dtype", test_avg_all },
		{ "names, sizes, validity", test_names },
	};

	return CM_MAIN1(argc, argv, "reduce", tests);
}
