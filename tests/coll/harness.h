/*
 * Multi-rank test harness: the test binary forks one child per rank on loopback, each child
 * creates its communicator and runs a job (many cases), then exits with its number of
 * failures. Also: the value model whose reductions are exact in every datatype, the scalar
 * reference, fp16/bf16 encoders of small integers, guarded buffers and the case enumeration.
 * Prefix hx_.
 */
#ifndef HX_HARNESS_H
#define HX_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <CUnit/CUnit.h>

#include "ibc.h"
#include "ibcomm.h"
#include "../cunit_main.h"

#define HX_MAX_RANKS 8
#define HX_MAX_FAILS_PRINTED 10
#define HX_GUARD 64          /* guard bytes before and after every buffer */
#define HX_PAT 0xA5          /* guard / "unwritten" pattern byte */
#define HX_PERIOD 4099       /* inputs repeat with this (prime) period in the index */
#define HX_MIB (1024 * 1024)

/* Exit codes of a child beyond its failure count (0..100). */
#define HX_EXIT_INIT 101     /* ibcomm_init failed */
#define HX_EXIT_RETRY 102    /* rendezvous port taken: the parent retries with another */
#define HX_EXIT_INTERNAL 103 /* the test itself failed (allocation, ...) */

/* ---- jobs ---- */
typedef void (*hx_job_fn)(ibcomm_t *comm, void *arg);

struct hx_job {
	const char *name;
	int n;             /* ranks */
	hx_job_fn fn;      /* runs in every rank; records failures with hx_fail() */
	void *arg;
	bool use_env;      /* IBCOMM_RANK/SIZE/ROOT + ibcomm_init_env() instead of a config */
	bool no_init;      /* fn gets comm == NULL (init error tests); hx_root holds the address */
	bool no_final_barrier; /* the job leaves comm in a state where ranks may disagree */
	int timeout_s;     /* 0: the default (120 s, or HX_JOB_TIMEOUT_S) */
	const char *const *env; /* NULL-terminated "NAME=VALUE" list set in every rank before init */
};

/* Transport knobs that cut every message into many odd-sized chunks with few credits. */
extern const char *const hx_small_chunks_env[];

/* Runs job in job->n forked ranks and CU_ASSERTs that every rank passed. Returns true if so. */
bool hx_run_job(const struct hx_job *job);

/* In a child: this rank, the job's size, the rendezvous address, a shared scratch area. */
extern int hx_rank, hx_size;
extern char hx_root[64];
extern volatile int *hx_scratch; /* HX_SCRATCH ints shared by the ranks of a job (zeroed) */
#define HX_SCRATCH 256

/* In a child: record one failure (printed, with "[rank r] ", for the first few). */
void hx_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* In a child: count one case run (for the progress line). */
void hx_case_done(void);
int hx_failures(void);
/* Checks st == IBCOMM_OK; otherwise records a failure naming what and the library's detail. */
bool hx_ok(ibcomm_t *comm, ibcomm_status_t st, const char *what);
/* Records a failure "test: out of memory"; returns false. */
bool hx_oom(void);

/* Rank counts to run: 1..8 unless HX_NMIN / HX_NMAX say otherwise. */
int hx_nmin(void);
int hx_nmax(void);
/* Integer from the environment, or def. */
long hx_env_long(const char *name, long def);

/* ---- datatypes and the value model ---- */
extern const char *const hx_dtype_names[IBCOMM_DTYPE_COUNT];
extern const char *const hx_op_names[IBCOMM_OP_COUNT];
const char *hx_algo_name(int algo);
/* This process's open file descriptors (-1 if /proc cannot tell). */
int hx_count_fds(void);
size_t hx_esize(ibcomm_dtype_t dt);
bool hx_is_float(ibcomm_dtype_t dt);
bool hx_is_unsigned(ibcomm_dtype_t dt);

/* Own encoders of integers exactly representable in fp16 (|v| <= 2048) and bf16 (|v| <= 256). */
uint16_t hx_fp16_of_int(int64_t v);
uint16_t hx_bf16_of_int(int64_t v);
double hx_fp16_to_double(uint16_t h);
double hx_bf16_to_double(uint16_t h);
/* Writes the integer value v as one element of dt at dst. */
void hx_encode(ibcomm_dtype_t dt, int64_t v, void *dst);
/* "0x1234 (-3)": bytes and value of one element, for messages. */
void hx_format(ibcomm_dtype_t dt, const void *p, char *buf, size_t len);

#define HX_NOOP (-1) /* data movement: no reduction */

/*
 * The inputs of one case: rank r's element i is in(r, i mod m) with m = min(total, HX_PERIOD),
 * chosen so every reduction (any order, any tree) is exact in dt; ref(i) is the reduction of
 * element i over the n ranks computed with scalar integer arithmetic.
 */
struct hx_data {
	ibcomm_dtype_t dt;
	int op;       /* ibcomm_op_t or HX_NOOP */
	int n;
	size_t m;     /* period of the table */
	size_t esz;
	unsigned char *in;  /* n rows of m encoded elements */
	unsigned char *ref; /* m encoded results (op != HX_NOOP) */
};

bool hx_data_init(struct hx_data *d, ibcomm_dtype_t dt, int op, int n, size_t total, uint32_t seed);
void hx_data_free(struct hx_data *d);
static inline const unsigned char *hx_in_row(const struct hx_data *d, int r)
{
	return d->in + (size_t)r * d->m * d->esz;
}
/* dst[k] = table[(first + k) mod m] for k < cnt. */
void hx_fill(const struct hx_data *d, const unsigned char *table, void *dst, size_t first, size_t cnt);

/* ---- guarded buffers ---- */
struct hx_buf {
	unsigned char *base;
	unsigned char *p;   /* HX_GUARD bytes after base */
	size_t len;         /* bytes usable at p */
};
/* All len + guards bytes set to HX_PAT. */
bool hx_buf_new(struct hx_buf *b, size_t len);
void hx_buf_free(struct hx_buf *b);

/* ---- cases ---- */
struct hx_case {
	const char *label; /* named instead of the collective when set (p2p, split, ...) */
	int coll;          /* enum ibc_coll */
	int algo;          /* enum ibc_algo */
	int n;
	size_t count;      /* the count argument of the call */
	ibcomm_dtype_t dt;
	int op;            /* HX_NOOP for data movement */
	int root;          /* -1 when not rooted */
	bool inplace;
	bool nullbufs;     /* pass NULL where the semantics allow it */
	uint32_t seed;
};
void hx_case_str(const struct hx_case *c, char *buf, size_t len);
/* Checks st == IBCOMM_OK; otherwise records a failure naming c, fn and the library's detail. */
bool hx_case_ok(ibcomm_t *comm, const struct hx_case *c, ibcomm_status_t st, const char *fn);

/* Checks that buf[0..cnt) == table[(first + k) mod m]; records a failure naming c and what. */
bool hx_expect(const struct hx_case *c, const char *what, const struct hx_data *d, const unsigned char *table,
	       const void *buf, size_t first, size_t cnt);
/* Checks that len bytes at p are all HX_PAT (untouched). */
bool hx_untouched(const struct hx_case *c, const char *what, const void *p, size_t len);
/* Checks the guards around b. */
bool hx_guards(const struct hx_case *c, const char *what, const struct hx_buf *b);

/* Forces c->algo for c->coll on this rank (every rank does the same). */
void hx_force_algo(ibcomm_t *comm, int coll, int algo);

/*
 * A collective's cases: the full cross product (dtype x op x algorithm x root x in place) for
 * counts 0, 1, 7, 100, 1000; then 65537 and >= 1 MiB for every dtype with SUM and one other op,
 * every algorithm, one root, in place alternating (HX_LARGE=1: 65537 only; 0: neither). When
 * the plan forces every algorithm of the collective, auto, and hier where ranks do not span
 * hosts (both then run one of the forced algorithms), take one root and in-place mode per
 * count, dtype and op, rotating, and SUM only at the large counts (HX_SHADOWS_FULL=1: the full
 * product for them too). HX_ALLDT_COUNT=k instead: at the one count k only, every dtype
 * (whatever HX_DTYPES says) x op x forced algorithm (auto left out), the root and in place
 * turning from case to case (a cheap all-dtype pass for runs that keep the full product to a
 * few dtypes, tests/hosts). run() returns false to stop the job (the library returned an
 * error: the communicator may be unusable).
 */
struct hx_plan {
	int coll;
	const int *algos;  /* forced algorithms (IBC_ALGO_AUTO included) */
	int nalgos;
	bool has_op;
	bool rooted;
	bool has_inplace;
	bool per_rank;     /* count is per rank (buffers of n x count) */
};
typedef bool (*hx_case_fn)(ibcomm_t *comm, const struct hx_case *c);
void hx_run_plan(ibcomm_t *comm, const struct hx_plan *p, hx_case_fn run);

#endif
