/*
 * Datatypes and reduction kernels: dst[i] = dst[i] op src[i].
 *
 * These loops are on the hot path of every reducing collective, so each one is a plain loop
 * the compiler vectorises, generated once per (type, op) by the macros below. The file is
 * built at -O3 (GCC 12 only vectorises loops of unknown trip count from -O3 on) and every
 * loop is cloned for AVX-512F, AVX2 and baseline x86-64, picked at load time (ifunc), so
 * the library never depends on the build machine's CPU.
 *
 * -DIBC_REDUCE_GENERIC builds only the portable loops (the unit tests use it to check the
 * baseline code path on a CPU that would otherwise dispatch to the AVX ones).
 *
 * Buffers may be misaligned, even for their element type (a user's char buffer + 1): every
 * access goes through a typedef with alignment 1. dst and src must not overlap.
 *
 * Integers: SUM and PROD wrap in two's complement (computed in the unsigned type, so there
 * is no undefined behaviour); AVG accumulates as SUM and ibc_reduce_finish() divides by the
 * number of ranks, truncating toward zero.
 * float16 (IEEE binary16) and bfloat16: each step converts to fp32, operates, and rounds
 * back to nearest even. MIN and MAX return one of the two inputs unchanged.
 * MIN and MAX of floating-point types propagate NaN: if either input is NaN the result is
 * NaN (which NaN is unspecified), so the result does not depend on the reduction order.
 * MIN(-0, +0) returns dst's zero (they compare equal).
 */
#if defined(__GNUC__) && !defined(__clang__) && !defined(__OPTIMIZE_SIZE__)
/* -fno-trapping-math: lets the fp16 conversions compute both sides of their selects, so that
 * their loops vectorise; nothing here reads the floating-point exception flags. */
#pragma GCC optimize("O3", "no-trapping-math")
#endif

#include <string.h>

#include "ibc.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(IBC_REDUCE_GENERIC)
#define IBC_VECTOR __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define IBC_VECTOR
#endif
#define IBC_INLINE static inline __attribute__((always_inline))

/* Element types as stored in buffers: any alignment. */
typedef int8_t ibc_i8_u __attribute__((aligned(1)));
typedef uint8_t ibc_u8_u __attribute__((aligned(1)));
typedef int32_t ibc_i32_u __attribute__((aligned(1)));
typedef uint32_t ibc_u32_u __attribute__((aligned(1)));
typedef int64_t ibc_i64_u __attribute__((aligned(1)));
typedef uint64_t ibc_u64_u __attribute__((aligned(1)));
typedef uint16_t ibc_f16_u __attribute__((aligned(1)));
typedef uint16_t ibc_bf16_u __attribute__((aligned(1)));
typedef float ibc_f32_u __attribute__((aligned(1)));
typedef double ibc_f64_u __attribute__((aligned(1)));

/* ---- fp16 / bf16 conversions: branch-free so that the loops using them vectorise ---- */

IBC_INLINE uint32_t f32_bits(float f)
{
	uint32_t u;

	memcpy(&u, &f, sizeof(u));
	return u;
}

IBC_INLINE float f32_from_bits(uint32_t u)
{
	float f;

	memcpy(&f, &u, sizeof(f));
	return f;
}

/* Exact: every binary16 value is a float. NaN payloads are kept. */
IBC_INLINE float half_to_float(uint16_t h)
{
	uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
	uint32_t em = h & 0x7fffu;
	/* Normal: rebias the exponent by 127 - 15; Inf/NaN: exponent 31 becomes 255. */
	uint32_t normal = (em << 13) + (em >= 0x7c00u ? (uint32_t)(255 - 31) << 23 : (uint32_t)(127 - 15) << 23);
	/* Zero and subnormal: mantissa x 2^-24, exact in fp32. */
	uint32_t sub = f32_bits((float)(int32_t)em * 0x1p-24f);

	return f32_from_bits(sign | (em < 0x400u ? sub : normal));
}

/* Round to nearest even; overflow gives Inf; NaN stays NaN (quiet, top payload bits kept). */
IBC_INLINE uint16_t float_to_half(float f)
{
	uint32_t u = f32_bits(f);
	uint32_t sign = (u >> 16) & 0x8000u;
	uint32_t a = u & 0x7fffffffu;
	/* Normal result: rebias (adding 2^32 - 112 * 2^23 wraps to a subtraction), then round
	 * the 13 dropped bits to nearest even; a carry into the exponent is still right. */
	uint32_t normal = (a + 0xc8000000u + 0xfffu + ((a >> 13) & 1u)) >> 13;
	/* Subnormal result (|f| < 2^-14): adding 0.5 aligns the binary point so that the FPU
	 * rounds to a multiple of 2^-24, in the current (nearest-even) mode. */
	uint32_t sub = f32_bits(f32_from_bits(a) + 0.5f) - 0x3f000000u;
	uint32_t nan = 0x7e00u | ((a >> 13) & 0x3ffu);
	uint32_t r;

	/* 0x477ff000 = 65520, half way between 65504 (the largest half) and 65536: ties go to
	 * the even mantissa, which is Inf. */
	r = a > 0x7f800000u ? nan : a >= 0x477ff000u ? 0x7c00u : a < 0x38800000u ? sub : normal;
	return (uint16_t)(sign | r);
}

/* Exact: bfloat16 is the top half of a float. */
IBC_INLINE float bf16_to_float(uint16_t h)
{
	return f32_from_bits((uint32_t)h << 16);
}

/* Round to nearest even; NaN stays NaN (quiet). */
IBC_INLINE uint16_t float_to_bf16(float f)
{
	uint32_t u = f32_bits(f);
	uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
	uint32_t nan = (u >> 16) | 0x40u;

	return (uint16_t)((u & 0x7fffffffu) > 0x7f800000u ? nan : rounded);
}

float ibc_half_to_float(uint16_t h)
{
	return half_to_float(h);
}

uint16_t ibc_float_to_half(float f)
{
	return float_to_half(f);
}

float ibc_bf16_to_float(uint16_t h)
{
	return bf16_to_float(h);
}

uint16_t ibc_float_to_bf16(float f)
{
	return float_to_bf16(f);
}

/* ---- scalar operations, one set per type ---- */

/* Integers: wrap-around SUM/PROD through the unsigned type UT. */
#define IBC_INT_OPS(tag, T, UT)                                                  \
	IBC_INLINE T tag##_sum(T a, T b) { return (T)((UT)a + (UT)b); }          \
	IBC_INLINE T tag##_prod(T a, T b) { return (T)((UT)a * (UT)b); }         \
	IBC_INLINE T tag##_min(T a, T b) { return b < a ? b : a; }               \
	IBC_INLINE T tag##_max(T a, T b) { return b > a ? b : a; }               \
	/* AVG: WT is a 64-bit type of T's signedness, so / truncates toward zero. */ \
	IBC_INLINE T tag##_div(T a, int n) { return (T)(a / (WT_##tag)n); }

#define WT_i8 int64_t
#define WT_u8 uint64_t
#define WT_i32 int64_t
#define WT_u32 uint64_t
#define WT_i64 int64_t
#define WT_u64 uint64_t

IBC_INT_OPS(i8, int8_t, uint8_t)
IBC_INT_OPS(u8, uint8_t, uint8_t)
IBC_INT_OPS(i32, int32_t, uint32_t)
IBC_INT_OPS(u32, uint32_t, uint32_t)
IBC_INT_OPS(i64, int64_t, uint64_t)
IBC_INT_OPS(u64, uint64_t, uint64_t)

/* float, double: MIN/MAX take b when it wins or is NaN, so a NaN on either side stays. */
#define IBC_FLOAT_OPS(tag, T)                                                     \
	IBC_INLINE T tag##_sum(T a, T b) { return a + b; }                        \
	IBC_INLINE T tag##_prod(T a, T b) { return a * b; }                       \
	IBC_INLINE T tag##_min(T a, T b) { return (b < a || b != b) ? b : a; }    \
	IBC_INLINE T tag##_max(T a, T b) { return (b > a || b != b) ? b : a; }    \
	IBC_INLINE T tag##_div(T a, int n) { return a / (T)n; }

IBC_FLOAT_OPS(f32, float)
IBC_FLOAT_OPS(f64, double)

/* 16-bit floats: compute in fp32, round back; MIN/MAX select an input unchanged. */
#define IBC_HALF_OPS(tag, TO, FROM)                                                              \
	IBC_INLINE uint16_t tag##_sum(uint16_t a, uint16_t b) { return FROM(TO(a) + TO(b)); }    \
	IBC_INLINE uint16_t tag##_prod(uint16_t a, uint16_t b) { return FROM(TO(a) * TO(b)); }   \
	IBC_INLINE uint16_t tag##_min(uint16_t a, uint16_t b)                                    \
	{                                                                                        \
		float fa = TO(a), fb = TO(b);                                                    \
		return (fb < fa || fb != fb) ? b : a;                                            \
	}                                                                                        \
	IBC_INLINE uint16_t tag##_max(uint16_t a, uint16_t b)                                    \
	{                                                                                        \
		float fa = TO(a), fb = TO(b);                                                    \
		return (fb > fa || fb != fb) ? b : a;                                            \
	}                                                                                        \
	IBC_INLINE uint16_t tag##_div(uint16_t a, int n) { return FROM(TO(a) / (float)n); }

IBC_HALF_OPS(f16, half_to_float, float_to_half)
IBC_HALF_OPS(bf16, bf16_to_float, float_to_bf16)

/* ---- the loops ---- */

#define IBC_KERNEL(tag, T, op)                                                                  \
	static IBC_VECTOR void k_##tag##_##op(void *restrict dst, const void *restrict src, size_t count) \
	{                                                                                       \
		ibc_##tag##_u *restrict d = dst;                                                \
		const ibc_##tag##_u *restrict s = src;                                          \
												\
		for (size_t i = 0; i < count; i++)                                              \
			d[i] = tag##_##op(d[i], s[i]);                                          \
	}

/*
 * bfloat16 two at a time: a 32-bit word holds two elements, each converted by a shift or a
 * mask, so the vectorised loop needs no 16-to-32-bit unpacking and packing (twice as fast).
 * The words are read with memcpy (a uint16_t buffer must not be read through uint32_t).
 */
#define IBC_KERNEL_BF16(tag, T, op)                                                             \
	static IBC_VECTOR void k_##tag##_##op(void *restrict dst, const void *restrict src, size_t count) \
	{                                                                                       \
		unsigned char *restrict d = dst;                                                \
		const unsigned char *restrict s = src;                                          \
		size_t i;                                                                       \
												\
		for (i = 0; i < count / 2; i++) {                                               \
			uint32_t a, b, r;                                                       \
												\
			memcpy(&a, d + 4 * i, 4);                                               \
			memcpy(&b, s + 4 * i, 4);                                               \
			r = (uint32_t)bf16_##op((uint16_t)a, (uint16_t)b) |                     \
			    (uint32_t)bf16_##op((uint16_t)(a >> 16), (uint16_t)(b >> 16)) << 16; \
			memcpy(d + 4 * i, &r, 4);                                               \
		}                                                                               \
		if (count & 1)                                                                  \
			((ibc_bf16_u *)dst)[count - 1] = bf16_##op(((ibc_bf16_u *)dst)[count - 1], \
								   ((const ibc_bf16_u *)src)[count - 1]); \
	}
#define IBC_KERNEL_i8 IBC_KERNEL
#define IBC_KERNEL_u8 IBC_KERNEL
#define IBC_KERNEL_i32 IBC_KERNEL
#define IBC_KERNEL_u32 IBC_KERNEL
#define IBC_KERNEL_i64 IBC_KERNEL
#define IBC_KERNEL_u64 IBC_KERNEL
#define IBC_KERNEL_f16 IBC_KERNEL
#define IBC_KERNEL_bf16 IBC_KERNEL_BF16
#define IBC_KERNEL_f32 IBC_KERNEL
#define IBC_KERNEL_f64 IBC_KERNEL

#define IBC_TYPE(tag, T)                                                                        \
	IBC_KERNEL_##tag(tag, T, sum)                                                           \
	IBC_KERNEL_##tag(tag, T, prod)                                                          \
	IBC_KERNEL_##tag(tag, T, min)                                                           \
	IBC_KERNEL_##tag(tag, T, max)                                                           \
	static IBC_VECTOR void avg_##tag(void *restrict buf, size_t count, int n)               \
	{                                                                                       \
		ibc_##tag##_u *restrict d = buf;                                                \
												\
		for (size_t i = 0; i < count; i++)                                              \
			d[i] = tag##_div(d[i], n);                                              \
	}

/*
 * float16 with F16C: the software conversions above cost ~8 instructions per element; the
 * hardware converts 8 at a time. Chosen at run time (ibc_reduce_kernel) when the CPU has AVX2
 * and F16C. Bit-identical to the software path: the same IEEE rounding, and NaN is quieted
 * with its payload kept either way. The tail (< 8 elements) uses the software path.
 */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(IBC_REDUCE_GENERIC)
#include <immintrin.h>
#define IBC_F16C __attribute__((target("avx2,f16c")))

#define IBC_F16C_LOAD(p) _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)(p)))
#define IBC_F16C_STORE(p, v) _mm_storeu_si128((__m128i *)(void *)(p), _mm256_cvtps_ph((v), _MM_FROUND_TO_NEAREST_INT))

/* SUM, PROD: convert, operate, round back. */
#define IBC_F16C_ARITH(op, vop)                                                                 \
	static IBC_F16C void k_f16c_##op(void *restrict dst, const void *restrict src, size_t count) \
	{                                                                                       \
		ibc_f16_u *restrict d = dst;                                                    \
		const ibc_f16_u *restrict s = src;                                              \
		size_t i = 0;                                                                   \
												\
		for (; i + 8 <= count; i += 8)                                                  \
			IBC_F16C_STORE(d + i, vop(IBC_F16C_LOAD(d + i), IBC_F16C_LOAD(s + i))); \
		for (; i < count; i++)                                                          \
			d[i] = f16_##op(d[i], s[i]);                                            \
	}

/* MIN, MAX: take src's element where it wins or is NaN; the 32-bit lane masks are packed
 * to 16-bit lanes and select the original 16-bit values. */
#define IBC_F16C_PICK(op, cmp)                                                                  \
	static IBC_F16C void k_f16c_##op(void *restrict dst, const void *restrict src, size_t count) \
	{                                                                                       \
		ibc_f16_u *restrict d = dst;                                                    \
		const ibc_f16_u *restrict s = src;                                              \
		size_t i = 0;                                                                   \
												\
		for (; i + 8 <= count; i += 8) {                                                \
			__m128i hd = _mm_loadu_si128((const __m128i *)(const void *)(d + i));   \
			__m128i hs = _mm_loadu_si128((const __m128i *)(const void *)(s + i));   \
			__m256 fd = _mm256_cvtph_ps(hd), fs = _mm256_cvtph_ps(hs);              \
			__m256 m = _mm256_or_ps(_mm256_cmp_ps(fs, fd, cmp),                     \
						_mm256_cmp_ps(fs, fs, _CMP_UNORD_Q));           \
			__m256i mi = _mm256_castps_si256(m);                                    \
			__m128i m16 = _mm_packs_epi32(_mm256_castsi256_si128(mi),               \
						      _mm256_extracti128_si256(mi, 1));         \
			_mm_storeu_si128((__m128i *)(void *)(d + i), _mm_blendv_epi8(hd, hs, m16)); \
		}                                                                               \
		for (; i < count; i++)                                                          \
			d[i] = f16_##op(d[i], s[i]);                                            \
	}

IBC_F16C_ARITH(sum, _mm256_add_ps)
IBC_F16C_ARITH(prod, _mm256_mul_ps)
IBC_F16C_PICK(min, _CMP_LT_OQ)
IBC_F16C_PICK(max, _CMP_GT_OQ)

static IBC_F16C void avg_f16c(void *restrict buf, size_t count, int n)
{
	ibc_f16_u *restrict d = buf;
	__m256 vn = _mm256_set1_ps((float)n);
	size_t i = 0;

	for (; i + 8 <= count; i += 8)
		IBC_F16C_STORE(d + i, _mm256_div_ps(IBC_F16C_LOAD(d + i), vn));
	for (; i < count; i++)
		d[i] = f16_div(d[i], n);
}

static bool have_f16c(void)
{
	__builtin_cpu_init();
	return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c");
}
#else
/* Never taken; the names only have to exist. */
#define k_f16c_sum k_f16_sum
#define k_f16c_prod k_f16_prod
#define k_f16c_min k_f16_min
#define k_f16c_max k_f16_max
#define avg_f16c avg_f16
static bool have_f16c(void)
{
	return false;
}
#endif

/* X-macro: dtype enum, tag, C type, name. */
#define IBC_DTYPES(X)                                           \
	X(IBCOMM_INT8, i8, int8_t, "int8")                      \
	X(IBCOMM_UINT8, u8, uint8_t, "uint8")                   \
	X(IBCOMM_INT32, i32, int32_t, "int32")                  \
	X(IBCOMM_UINT32, u32, uint32_t, "uint32")               \
	X(IBCOMM_INT64, i64, int64_t, "int64")                  \
	X(IBCOMM_UINT64, u64, uint64_t, "uint64")               \
	X(IBCOMM_FLOAT16, f16, uint16_t, "float16")             \
	X(IBCOMM_BFLOAT16, bf16, uint16_t, "bfloat16")          \
	X(IBCOMM_FLOAT32, f32, float, "float32")                \
	X(IBCOMM_FLOAT64, f64, double, "float64")

#define IBC_X_TYPE(e, tag, T, name) IBC_TYPE(tag, T)
IBC_DTYPES(IBC_X_TYPE)
#undef IBC_X_TYPE

/* ---- lookup ---- */

bool ibc_dtype_valid(ibcomm_dtype_t dtype)
{
	return (unsigned)dtype < IBCOMM_DTYPE_COUNT;
}

bool ibc_op_valid(ibcomm_op_t op)
{
	return (unsigned)op < IBCOMM_OP_COUNT;
}

size_t ibcomm_dtype_size(ibcomm_dtype_t dtype)
{
	switch (dtype) {
#define IBC_X_SIZE(e, tag, T, name) \
	case e:                     \
		return sizeof(T);
		IBC_DTYPES(IBC_X_SIZE)
#undef IBC_X_SIZE
	default:
		return 0;
	}
}

const char *ibc_dtype_name(ibcomm_dtype_t dtype)
{
	switch (dtype) {
#define IBC_X_NAME(e, tag, T, name) \
	case e:                     \
		return name;
		IBC_DTYPES(IBC_X_NAME)
#undef IBC_X_NAME
	default:
		return "invalid-dtype";
	}
}

const char *ibc_op_name(ibcomm_op_t op)
{
	static const char *const names[IBCOMM_OP_COUNT] = {
		[IBCOMM_SUM] = "sum", [IBCOMM_PROD] = "prod", [IBCOMM_MIN] = "min",
		[IBCOMM_MAX] = "max", [IBCOMM_AVG] = "avg",
	};

	return ibc_op_valid(op) ? names[op] : "invalid-op";
}

ibc_reduce_fn ibc_reduce_kernel(ibcomm_dtype_t dtype, ibcomm_op_t op)
{
	if (dtype == IBCOMM_FLOAT16 && ibc_op_valid(op) && have_f16c()) {
		switch (op) {
		case IBCOMM_SUM:
		case IBCOMM_AVG:
			return k_f16c_sum;
		case IBCOMM_PROD:
			return k_f16c_prod;
		case IBCOMM_MIN:
			return k_f16c_min;
		default:
			return k_f16c_max;
		}
	}
	switch (dtype) {
#define IBC_X_KERNEL(e, tag, T, name)             \
	case e:                                   \
		switch (op) {                     \
		case IBCOMM_SUM:                  \
		case IBCOMM_AVG:                  \
			return k_##tag##_sum;     \
		case IBCOMM_PROD:                 \
			return k_##tag##_prod;    \
		case IBCOMM_MIN:                  \
			return k_##tag##_min;     \
		case IBCOMM_MAX:                  \
			return k_##tag##_max;     \
		default:                          \
			return NULL;              \
		}
		IBC_DTYPES(IBC_X_KERNEL)
#undef IBC_X_KERNEL
	default:
		return NULL;
	}
}

void ibc_reduce_finish(void *buf, size_t count, ibcomm_dtype_t dtype, ibcomm_op_t op, int nranks)
{
	if (op != IBCOMM_AVG || nranks <= 1 || !count || !buf)
		return;
	if (dtype == IBCOMM_FLOAT16 && have_f16c()) {
		avg_f16c(buf, count, nranks);
		return;
	}
	switch (dtype) {
#define IBC_X_FINISH(e, tag, T, name)     \
	case e:                           \
		avg_##tag(buf, count, nranks); \
		break;
		IBC_DTYPES(IBC_X_FINISH)
#undef IBC_X_FINISH
	default:
		break;
	}
}
