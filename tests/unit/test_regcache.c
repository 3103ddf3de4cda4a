/*
 * Unit tests of lib/regcache.c with a fake transport whose reg()/dereg() count what they
 * are asked: reuse of covering entries and reference counts, partial covers, the contract
 * (deregister, unmap, register memory at the same address again), stale and foreign handles, a failing reg(), destroy with live handles (no leak: ASan).
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <CUnit/Basic.h>

#include "ibc.h"
#include "regcache.h"
#include "../cunit_main.h"

/* ---- the fake transport ---- */
struct fake_tp {
	ibc_tp_t base;
	int regs, deregs, live;
	bool fail_next;
};

static void *fake_reg(ibc_tp_t *tp, void *addr, size_t len, ibcomm_status_t *st)
{
	struct fake_tp *f = (struct fake_tp *)tp;
	uintptr_t *h;

	(void)addr;
	(void)len;
	if (f->fail_next) {
		f->fail_next = false;
		*st = ibc_err(tp->comm, IBCOMM_ERR_NOMEM, "fake reg refused");
		return NULL;
	}
	h = malloc(sizeof(*h)); /* a real allocation: ASan reports any handle never deregistered */
	if (!h) {
		*st = IBCOMM_ERR_NOMEM;
		return NULL;
	}
	*h = (uintptr_t)addr;
	f->regs++;
	f->live++;
	return h;
}

static void fake_dereg(ibc_tp_t *tp, void *h)
{
	struct fake_tp *f = (struct fake_tp *)tp;

	f->deregs++;
	f->live--;
	free(h);
}

static const struct ibc_tp_ops fake_ops = { .name = "fake", .reg = fake_reg, .dereg = fake_dereg };
static const struct ibc_tp_ops noreg_ops = { .name = "noreg" };

struct fake_comm {
	struct ibcomm comm;
	struct fake_tp tp;
};

static struct fake_comm *fake_new(const struct ibc_tp_ops *ops)
{
	struct fake_comm *fc = calloc(1, sizeof(*fc));

	CU_ASSERT_FATAL(fc != NULL);
	fc->comm.size = 1;
	fc->tp.base.ops = ops;
	fc->tp.base.comm = &fc->comm;
	fc->comm.tp = &fc->tp.base;
	return fc;
}

static void fake_free(struct fake_comm *fc)
{
	ibc_regcache_destroy(&fc->comm);
	CU_ASSERT_PTR_NULL(fc->comm.regcache);
	CU_ASSERT_EQUAL(fc->tp.live, 0);
	free(fc);
}

static uintptr_t reg(struct fake_comm *fc, void *p, size_t len)
{
	uintptr_t tok = 0;

	CU_ASSERT_EQUAL(ibc_regcache_add(&fc->comm, p, len, &tok), IBCOMM_OK);
	CU_ASSERT(tok != 0);
	return tok;
}

static ibc_reg_info_t info(struct fake_comm *fc, uintptr_t tok)
{
	ibc_reg_info_t in;

	memset(&in, 0, sizeof(in));
	CU_ASSERT_TRUE(ibc_regcache_info(&fc->comm, tok, &in));
	return in;
}

static char arena[1 << 16];

/* ---- tests ---- */

static void test_reuse_refcount(void)
{
	struct fake_comm *fc = fake_new(&fake_ops);
	uintptr_t a, b, c;
	void *h;

	a = reg(fc, arena, 4096);
	CU_ASSERT_EQUAL(fc->tp.regs, 1);
	b = reg(fc, arena + 100, 200); /* inside: the same entry */
	CU_ASSERT_EQUAL(fc->tp.regs, 1);
	CU_ASSERT(a != b);
	CU_ASSERT_EQUAL(info(fc, a).refs, 2);
	CU_ASSERT_PTR_EQUAL(info(fc, a).handle, info(fc, b).handle);
	c = reg(fc, arena, 4096); /* the same range again */
	CU_ASSERT_EQUAL(fc->tp.regs, 1);
	CU_ASSERT_EQUAL(info(fc, c).refs, 3);

	h = ibc_regcache_find(&fc->comm, arena + 10, 100);
	CU_ASSERT_PTR_NOT_NULL(h);
	CU_ASSERT_PTR_EQUAL(h, info(fc, a).handle);

	CU_ASSERT_EQUAL(ibc_regcache_remove(&fc->comm, a), IBCOMM_OK);
	CU_ASSERT_EQUAL(ibc_regcache_remove(&fc->comm, c), IBCOMM_OK);
	CU_ASSERT_EQUAL(fc->tp.deregs, 0);
	CU_ASSERT_PTR_NOT_NULL(ibc_regcache_find(&fc->comm, arena, 4096));
	CU_ASSERT_EQUAL(ibc_regcache_remove(&fc->comm, b), IBCOMM_OK);
	CU_ASSERT_EQUAL(fc->tp.deregs, 1);
	CU_ASSERT_PTR_NULL(ibc_regcache_find(&fc->comm, arena, 4096));
	CU_ASSERT_EQUAL(ibc_regcache_live(), 0);
	fake_free(fc);
}

static void test_overlap_partial(void)
{
	struct fake_comm *fc = fake_new(&fake_ops);
	uintptr_t a, b, c;

	a = reg(fc, arena, 4096);
	b = reg(fc, arena + 2048, 4096); /* overlaps, not covered: its own entry */
	CU_ASSERT_EQUAL(fc->tp.regs, 2);
	CU_ASSERT_EQUAL(info(fc, a).refs, 1);
	CU_ASSERT_EQUAL(info(fc, b).refs, 1);
	CU_ASSERT_EQUAL(ibc_regcache_live(), 2);
	/* covering lookups: fully inside one entry only */
	CU_ASSERT_PTR_EQUAL(ibc_regcache_find(&fc->comm, arena, 4096), info(fc, a).handle);
	CU_ASSERT_PTR_EQUAL(ibc_regcache_find(&fc->comm, arena + 4096, 2048), info(fc, b).handle);
	CU_ASSERT_PTR_NOT_NULL(ibc_regcache_find(&fc->comm, arena + 3000, 1000));
	CU_ASSERT_PTR_NULL(ibc_regcache_find(&fc->comm, arena, 6144));  /* spans both: no single MR */
	CU_ASSERT_PTR_NULL(ibc_regcache_find(&fc->comm, arena + 6000, 200)); /* runs past b */
	CU_ASSERT_PTR_NULL(ibc_regcache_find(&fc->comm, arena + 8192, 1));
	CU_ASSERT_PTR_NULL(ibc_regcache_find(&fc->comm, arena, 0));
	/* a range inside both: reuses the first that covers it, no new registration */
	c = reg(fc, arena + 3000, 100);
	CU_ASSERT_EQUAL(fc->tp.regs, 2);
	CU_ASSERT_EQUAL(info(fc, c).refs, 2);
	/* len 0: a handle of nothing */
	CU_ASSERT_EQUAL(ibc_regcache_remove(&fc->comm, reg(fc, NULL, 0)), IBCOMM_OK);
	CU_ASSERT_EQUAL(fc->tp.regs, 2);
	CU_ASSERT_EQUAL(ibc_regcache_remove(&fc->comm, a), IBCOMM_OK);
	CU_ASSERT_EQUAL(ibc_regcache_remove(&fc->comm, b), IBCOMM_OK);
	CU_ASSERT_EQUAL(ibc_regcache_remove(&fc->comm, c), IBCOMM_OK);
	CU_ASSERT_EQUAL(fc->tp.deregs, 2);
	fake_free(fc);
}

/*
 * The contract: deregister, then free or unmap. Memory mapped again at the same address
 * and registered again gets a registration of its own (the transport's reg() runs again,
 * never the released entry's handle), and a range registered on two communicators has an
 * entry in each.
 */
static void test_contract_same_address(void)
{
	struct fake_comm *fc = fake_new(&fake_ops), *other = fake_new(&fake_ops);
	long pg = sysconf(_SC_PAGESIZE);
	char *p, *q;
	uintptr_t a, o;

	p = mmap(NULL, 2 * (size_t)pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CU_ASSERT_FATAL(p != MAP_FAILED);
	a = reg(fc, p, 2 * (size_t)pg);
	o = reg(other, p, (size_t)pg);
	CU_ASSERT_EQUAL(fc->tp.regs, 1);
	CU_ASSERT_EQUAL(other->tp.regs, 1);
	CU_ASSERT_EQUAL(ibc_regcache_remove(&fc->comm, a), IBCOMM_OK);
	CU_ASSERT_EQUAL(ibc_regcache_remove(&other->comm, o), IBCOMM_OK);
	CU_ASSERT_EQUAL(fc->tp.deregs, 1);
	CU_ASSERT_EQUAL(other->tp.deregs, 1);
	CU_ASSERT_PTR_NULL(ibc_regcache_find(&fc->comm, p, 1));
	CU_ASSERT_EQUAL(munmap(p, 2 * (size_t)pg), 0);

	q = mmap(p, 2 * (size_t)pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0); /* a hint */
	CU_ASSERT_FATAL(q != MAP_FAILED);
	a = reg(fc, q, 2 * (size_t)pg);
	CU_ASSERT_EQUAL(fc->tp.regs, 2);
	CU_ASSERT_EQUAL(info(fc, a).refs, 1);
	CU_ASSERT_EQUAL(*(uintptr_t *)info(fc, a).handle, (uintptr_t)q); /* the fake's handle records its address */
	CU_ASSERT_EQUAL(ibc_regcache_remove(&fc->comm, a), IBCOMM_OK);
	CU_ASSERT_EQUAL(munmap(q, 2 * (size_t)pg), 0);
	CU_ASSERT_EQUAL(ibc_regcache_live(), 0);
	fake_free(fc);
	fake_free(other);
}

static void test_bad_handles(void)
{
	struct fake_comm *fc = fake_new(&fake_ops), *other = fake_new(&fake_ops);
	uintptr_t a, o;

	/* no cache yet */
	CU_ASSERT_EQUAL(ibc_regcache_remove(&fc->comm, 12345), IBCOMM_ERR_INVALID);
	a = reg(fc, arena, 100);
	o = reg(other, arena, 100);
	CU_ASSERT_EQUAL(ibc_regcache_remove(&fc->comm, o), IBCOMM_ERR_INVALID); /* foreign */
	CU_ASSERT_PTR_NOT_NULL(strstr(fc->comm.err, "not registered on this communicator"));
	CU_ASSERT_EQUAL(ibc_regcache_remove(&fc->comm, (uintptr_t)&fc), IBCOMM_ERR_INVALID); /* a pointer */
	CU_ASSERT_PTR_NOT_NULL(strstr(fc->comm.err, "not a handle from ibcomm_register"));
	CU_ASSERT_EQUAL(ibc_regcache_remove(&fc->comm, a), IBCOMM_OK);
	CU_ASSERT_EQUAL(ibc_regcache_remove(&fc->comm, a), IBCOMM_ERR_INVALID); /* twice */
	CU_ASSERT_EQUAL(fc->tp.deregs, 1);
	CU_ASSERT_FALSE(ibc_regcache_info(&fc->comm, a, &(ibc_reg_info_t){ 0 }));
	fake_free(fc);
	/* a handle of a destroyed communicator's cache is unknown to the others */
	CU_ASSERT_EQUAL(ibc_regcache_remove(&other->comm, o), IBCOMM_OK);
	fake_free(other);
}

static void test_reg_failure(void)
{
	struct fake_comm *fc = fake_new(&fake_ops);
	uintptr_t tok = 7;

	fc->tp.fail_next = true;
	CU_ASSERT_EQUAL(ibc_regcache_add(&fc->comm, arena, 100, &tok), IBCOMM_ERR_NOMEM);
	CU_ASSERT_EQUAL(tok, 7); /* output untouched */
	CU_ASSERT_PTR_NOT_NULL(strstr(fc->comm.err, "fake reg refused"));
	CU_ASSERT_EQUAL(ibc_regcache_live(), 0);
	CU_ASSERT_PTR_NULL(ibc_regcache_find(&fc->comm, arena, 100));
	/* wrap-around */
	CU_ASSERT_EQUAL(ibc_regcache_add(&fc->comm, (void *)(UINTPTR_MAX - 10), 100, &tok), IBCOMM_ERR_INVALID);
	fake_free(fc);
}

static void test_no_reg_op(void)
{
	struct fake_comm *fc = fake_new(&noreg_ops);
	uintptr_t a;

	a = reg(fc, arena, 100);
	CU_ASSERT_EQUAL(info(fc, a).refs, 1);
	CU_ASSERT_PTR_NULL(info(fc, a).handle);
	CU_ASSERT_PTR_NULL(ibc_regcache_find(&fc->comm, arena, 100)); /* nothing to send from */
	CU_ASSERT_EQUAL(ibc_regcache_remove(&fc->comm, a), IBCOMM_OK);
	fake_free(fc);
}

static void test_destroy_live(void)
{
	struct fake_comm *fc = fake_new(&fake_ops);

	for (int i = 0; i < 20; i++)
		reg(fc, arena + 1000 * i, 500 + 100 * i); /* entries and shared ones */
	CU_ASSERT(fc->tp.live > 0);
	CU_ASSERT(ibc_regcache_live() > 0);
	fake_free(fc); /* asserts every handle deregistered */
	CU_ASSERT_EQUAL(ibc_regcache_live(), 0);
}

int main(int argc, char **argv)
{
	static const struct cm_test tests[] = {
		{ "reuse and reference counts", test_reuse_refcount },
		{ "overlapping and partial ranges", test_overlap_partial },
		{ "deregister, unmap, map again, register", test_contract_same_address },
		{ "stale, double and foreign handles", test_bad_handles },
		{ "transport reg failure", test_reg_failure },
		{ "transport without reg", test_no_reg_op },
		{ "destroy with live handles", test_destroy_live },
	};

	return CM_MAIN1(argc, argv, "regcache", tests);
}
