/*
 * ibcomm_bench --overlap: how much of an allreduce a nonblocking call hides behind work.
 *
 * For each size: the blocking allreduce's time (blk); then ibcomm_iallreduce, a sleep of
 * 1.5 x blk standing for accelerator work (the core is free), a fixed amount of CPU compute
 * that takes 0.5 x blk alone (calibrated first), and ibcomm_wait, whose time is what the
 * communication still cost (wait); then the same with CPU compute only (2 x blk of it: the
 * progress thread, and over TCP the kernel's copies, compete with it for the cores, which
 * shows as work taking longer than alone). overlap = (blk + alone - total) / blk, alone being
 * the work's time without communication: 100% when the allreduce cost nothing, 0% when nothing
 * was hidden. Times are the slowest rank's, averaged over -n iterations after -w warm-ups;
 * every result is checked.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench.h"
#include "tool_util.h"

/* Element i of rank r: a small integer, so the float sum is exact. */
static float input(int r, size_t i)
{
	return (float)((r + (int)(i % 61)) % 16);
}

static void fill(struct bench *b)
{
	float *s = (float *)b->sbuf;

	for (size_t i = 0; i < b->cnt; i++)
		s[i] = input(b->rank, i);
	memset(b->rbuf, 0, b->cnt * sizeof(float));
}

static int64_t check(const struct bench *b)
{
	const float *r = (const float *)b->rbuf;
	int64_t wrong = 0;

	for (size_t i = 0; i < b->cnt; i++) {
		float e = 0;

		for (int k = 0; k < b->nranks; k++)
			e += input(k, i);
		wrong += r[i] != e;
	}
	return wrong;
}

static void sleep_s(double s)
{
	struct timespec ts = { (time_t)s, (long)((s - (double)(time_t)s) * 1e9) };

	while (nanosleep(&ts, &ts))
		;
}

static volatile float sink; /* keeps the compute from being optimised away */
static double loops_per_s;  /* of compute(), measured alone (calibrate) */

/* A fixed amount of CPU work: n passes over a small array that stays in cache. */
static void compute(double n)
{
	float acc[256] = { 0 };

	for (double i = 0; i < n; i++)
		for (int k = 0; k < 4096; k++)
			acc[k & 255] = acc[k & 255] * 0.999f + (float)k;
	sink = acc[7];
}

/* How many passes of compute() this rank does per second with nothing else running. */
static void calibrate(void)
{
	double n = 1, t;

	do {
		n *= 2;
		t = tool_now_s();
		compute(n);
		t = tool_now_s() - t;
	} while (t < 0.1);
	loops_per_s = n / t;
}

/* The compute of s seconds (as measured alone): when something else takes the core, it takes longer. */
static void compute_s(double s)
{
	compute(s * loops_per_s);
}

struct ov_time {
	double work, wait, total; /* seconds, slowest rank */
	double alone;             /* the work without the communication: sleep as slept + compute as calibrated */
};

static double slowest(struct bench *b, double t)
{
	ibcomm_status_t st = ibcomm_allreduce(b->comm, &t, &t, 1, IBCOMM_FLOAT64, IBCOMM_MAX);

	if (st)
		bench_die(b, "allreduce of the timings", st);
	return t;
}

/* One timed blocking call (blocking) or iallreduce + sleep + compute + wait; adds wrong elements to *wrong. */
static void one(struct bench *b, bool blocking, double sleep, double cpu, struct ov_time *t, int64_t *wrong)
{
	ibcomm_request_t *req;
	ibcomm_status_t st;
	double t0, t1, t2, slept = 0;

	fill(b);
	st = ibcomm_barrier(b->comm);
	if (st)
		bench_die(b, "barrier", st);
	t0 = tool_now_s();
	if (blocking) {
		st = ibcomm_allreduce(b->comm, b->sbuf, b->rbuf, b->cnt, IBCOMM_FLOAT32, IBCOMM_SUM);
		if (st)
			bench_die(b, "ibcomm_allreduce", st);
		t1 = t0;
	} else {
		st = ibcomm_iallreduce(b->comm, b->sbuf, b->rbuf, b->cnt, IBCOMM_FLOAT32, IBCOMM_SUM, &req);
		if (st)
			bench_die(b, "ibcomm_iallreduce", st);
		if (sleep > 0)
			sleep_s(sleep);
		slept = tool_now_s() - t0;
		compute_s(cpu);
		t1 = tool_now_s();
		st = ibcomm_wait(req);
		if (st)
			bench_die(b, "ibcomm_wait", st);
	}
	t2 = tool_now_s();
	t->work = slowest(b, t1 - t0);
	t->wait = slowest(b, t2 - t1);
	t->total = slowest(b, t2 - t0);
	t->alone = slowest(b, slept + cpu);
	if (b->check)
		*wrong += check(b);
}

/* The average of -n iterations after -w warm-ups. */
static struct ov_time avg(struct bench *b, bool blocking, double sleep, double cpu, int64_t *wrong)
{
	struct ov_time sum = { 0, 0, 0, 0 }, t;

	for (int i = 0; i < b->warmup; i++)
		one(b, blocking, sleep, cpu, &t, wrong);
	for (int i = 0; i < b->iters; i++) {
		one(b, blocking, sleep, cpu, &t, wrong);
		sum.work += t.work, sum.wait += t.wait, sum.total += t.total, sum.alone += t.alone;
	}
	sum.work /= b->iters, sum.wait /= b->iters, sum.total /= b->iters, sum.alone /= b->iters;
	return sum;
}

/* Of blk, what the total hid behind the work (its time alone, not as slowed down by the communication). */
static double overlap_pct(double blk, const struct ov_time *t)
{
	double o = blk > 0 ? 100.0 * (blk + t->alone - t->total) / blk : 0;

	return o < 0 ? 0 : o > 100 ? 100 : o;
}

void bench_overlap(struct bench *b)
{
	int64_t wrong = 0;

	calibrate();
	if (b->rank == 0) {
		printf("# ibcomm_bench --overlap: allreduce float sum, %d ranks, transport %s, %d iterations (%d warm-up)\n",
		       b->nranks, b->transport, b->iters, b->warmup);
		printf("# sleep+cpu: iallreduce, sleep 1.5 x blocking (accelerator work), CPU compute of 0.5 x blocking, wait\n");
		printf("# cpu only:  iallreduce, CPU compute of 2 x blocking, wait (the progress thread and the transport's\n");
		printf("#            copies compete with the compute for the cores: work takes longer than alone)\n");
		printf("# alone: the work's time without communication; overlap = (blocking + alone - total) / blocking\n");
		printf("# times in us, the slowest rank's\n");
		printf("#%11s %10s | %10s %10s %9s %8s %7s | %10s %10s %9s %8s %7s | %5s\n", "size", "blocking", "alone",
		       "work", "wait", "wait/blk", "overlap", "alone", "work", "wait", "wait/blk", "overlap", "wrong");
		printf("#%11s %10s | %10s %10s %9s %8s %7s | %10s %10s %9s %8s %7s | %5s\n", "(B)", "(us)", "sleep+cpu",
		       "", "", "", "(%)", "cpu only", "", "", "", "(%)", "");
	}
	for (size_t bytes = b->min_bytes; bytes <= b->max_bytes;) {
		struct ov_time blk, sc, co;
		int64_t w0 = wrong;

		b->cnt = bytes / sizeof(float);
		blk = avg(b, true, 0, 0, &wrong);
		sc = avg(b, false, 1.5 * blk.total, 0.5 * blk.total, &wrong);
		co = avg(b, false, 0, 2 * blk.total, &wrong);
		w0 = wrong - w0;
		if (ibcomm_allreduce(b->comm, &w0, &w0, 1, IBCOMM_INT64, IBCOMM_SUM))
			bench_die(b, "allreduce of the wrong counts", IBCOMM_ERR_TRANSPORT);
		b->wrong_total += w0;
		if (b->rank == 0) {
			printf("%12zu %10.1f | %10.1f %10.1f %9.1f %8.3f %7.1f | %10.1f %10.1f %9.1f %8.3f %7.1f | %5lld\n",
			       bytes, blk.total * 1e6, sc.alone * 1e6, sc.work * 1e6, sc.wait * 1e6, sc.wait / blk.total,
			       overlap_pct(blk.total, &sc), co.alone * 1e6, co.work * 1e6, co.wait * 1e6,
			       co.wait / blk.total, overlap_pct(blk.total, &co), (long long)w0);
			fflush(stdout);
		}
		if (b->step_bytes ? bytes > b->max_bytes - b->step_bytes : (double)bytes * b->factor > (double)b->max_bytes)
			break;
		bytes = b->step_bytes ? bytes + b->step_bytes : (size_t)((double)bytes * b->factor);
	}
}
