/*
 * Registration cache and the munmap/mremap hooks: see regcache.h.
 *
 * Locks: `caches_lock` guards the list of every communicator's cache; each cache has its own
 * mutex. Order: caches_lock, then a cache's lock. The transport's reg()/dereg() run with no
 * lock held (verbs may unmap memory of their own, which enters the hooks): a new entry is
 * inserted "pending" first, so an unmap racing with its registration still marks it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "regcache.h"

#define IBC_EXPORT __attribute__((visibility("default")))

/* Tokens: a magic in the top 16 bits, a counter below. */
#define TOKEN_SHIFT (sizeof(uintptr_t) * 8 - 16)
#define TOKEN_MAGIC ((uintptr_t)0x1bc5 << TOKEN_SHIFT)
#define TOKEN_MASK (((uintptr_t)1 << TOKEN_SHIFT) - 1)

struct reg_entry {
	uintptr_t start, end;
	unsigned refs;
	void *h;      /* the transport's handle */
	bool valid;   /* cleared by an unmap of any byte of the range */
	bool pending; /* the transport is registering it */
};

struct reg_handle {
	uintptr_t token;
	struct reg_entry *e; /* NULL for a registration of 0 bytes */
};

struct ibc_regcache {
	pthread_mutex_t lock;
	struct ibc_regcache *next; /* the global list */
	struct reg_entry **ents;   /* sorted by start */
	size_t nents, capents;
	struct reg_handle *hs;
	size_t nhs, caphs;
};

static pthread_mutex_t caches_lock = PTHREAD_MUTEX_INITIALIZER;
static struct ibc_regcache *caches;
static atomic_size_t live; /* entries of all caches */
static atomic_uintptr_t next_token;

size_t ibc_regcache_live(void)
{
	return atomic_load(&live);
}

static uintptr_t new_token(void)
{
	uintptr_t n;

	do
		n = atomic_fetch_add(&next_token, 1) & TOKEN_MASK;
	while (!n);
	return TOKEN_MAGIC | n;
}

static bool grow(void **arr, size_t *cap, size_t need, size_t elem)
{
	size_t ncap = *cap ? *cap * 2 : 8;
	void *p;

	if (need <= *cap)
		return true;
	while (ncap < need)
		ncap *= 2;
	p = realloc(*arr, ncap * elem);
	if (!p)
		return false;
	*arr = p;
	*cap = ncap;
	return true;
}

static struct ibc_regcache *cache_get(struct ibcomm *comm)
{
	struct ibc_regcache *c = comm->regcache;

	if (c)
		return c;
	c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	pthread_mutex_init(&c->lock, NULL);
	pthread_mutex_lock(&caches_lock);
	c->next = caches;
	caches = c;
	pthread_mutex_unlock(&caches_lock);
	comm->regcache = c;
	return c;
}

/* Index of the handle with token in c, or -1. Caller holds c->lock. */
static ptrdiff_t handle_find(const struct ibc_regcache *c, uintptr_t token)
{
	for (size_t i = 0; i < c->nhs; i++)
		if (c->hs[i].token == token)
			return (ptrdiff_t)i;
	return -1;
}

/* The valid, registered entry covering [s, e), or NULL. Caller holds c->lock. */
static struct reg_entry *entry_covering(const struct ibc_regcache *c, uintptr_t s, uintptr_t e)
{
	for (size_t i = 0; i < c->nents && c->ents[i]->start <= s; i++) {
		struct reg_entry *x = c->ents[i];

		if (x->valid && !x->pending && x->end >= e)
			return x;
	}
	return NULL;
}

static void entry_unlink(struct ibc_regcache *c, struct reg_entry *e)
{
	for (size_t i = 0; i < c->nents; i++) {
		if (c->ents[i] != e)
			continue;
		memmove(&c->ents[i], &c->ents[i + 1], (c->nents - i - 1) * sizeof(c->ents[0]));
		c->nents--;
		return;
	}
}

static void entry_release(struct ibcomm *comm, struct reg_entry *e)
{
	ibc_tp_t *tp = comm->tp;

	if (e->h && tp && tp->ops->dereg)
		tp->ops->dereg(tp, e->h);
	free(e);
	atomic_fetch_sub(&live, 1);
}

ibcomm_status_t ibc_regcache_add(struct ibcomm *comm, void *addr, size_t len, uintptr_t *token)
{
	uintptr_t s = (uintptr_t)addr, end;
	struct ibc_regcache *c;
	struct reg_entry *e = NULL;
	ibcomm_status_t st = IBCOMM_OK;
	ibc_tp_t *tp = comm->tp;
	bool fresh = false;
	uintptr_t tok;
	void *h;

	if (__builtin_add_overflow(s, len, &end))
		return ibc_err(comm, IBCOMM_ERR_INVALID, "rank %d: ibcomm_register: [%p, +%zu) wraps around the address space",
			       comm->rank, addr, len);
	c = cache_get(comm);
	if (!c)
		return ibc_err(comm, IBCOMM_ERR_NOMEM, "rank %d: ibcomm_register: out of memory", comm->rank);
	pthread_mutex_lock(&c->lock);
	if (!grow((void **)&c->hs, &c->caphs, c->nhs + 1, sizeof(c->hs[0])) ||
	    !grow((void **)&c->ents, &c->capents, c->nents + 1, sizeof(c->ents[0])))
		goto err_nomem;
	if (len) {
		e = entry_covering(c, s, end);
		if (e) {
			e->refs++;
		} else {
			size_t i = 0;

			e = calloc(1, sizeof(*e));
			if (!e)
				goto err_nomem;
			*e = (struct reg_entry){ .start = s, .end = end, .refs = 1, .valid = true, .pending = true };
			while (i < c->nents && c->ents[i]->start <= s)
				i++;
			memmove(&c->ents[i + 1], &c->ents[i], (c->nents - i) * sizeof(c->ents[0]));
			c->ents[i] = e;
			c->nents++;
			atomic_fetch_add(&live, 1);
			fresh = true;
		}
	}
	tok = new_token();
	c->hs[c->nhs++] = (struct reg_handle){ .token = tok, .e = e };
	if (fresh && (!tp || !tp->ops->reg)) {
		e->pending = false; /* nothing to register (TCP) */
		fresh = false;
	}
	pthread_mutex_unlock(&c->lock);
	if (!fresh)
		goto out;

	h = tp->ops->reg(tp, addr, len, &st);
	pthread_mutex_lock(&c->lock);
	if (!h) {
		ptrdiff_t i = handle_find(c, tok);

		if (i >= 0)
			c->hs[i] = c->hs[--c->nhs];
		entry_unlink(c, e);
		pthread_mutex_unlock(&c->lock);
		free(e);
		atomic_fetch_sub(&live, 1);
		if (!st)
			st = IBCOMM_ERR_TRANSPORT;
		return st;
	}
	e->h = h;
	e->pending = false;
	pthread_mutex_unlock(&c->lock);
out:
	ibc_ctrace(comm, "rank %d: registered [%p, +%zu) as %#lx", comm->rank, addr, len, (unsigned long)tok);
	*token = tok;
	return IBCOMM_OK;

err_nomem:
	pthread_mutex_unlock(&c->lock);
	return ibc_err(comm, IBCOMM_ERR_NOMEM, "rank %d: ibcomm_register: out of memory", comm->rank);
}

ibcomm_status_t ibc_regcache_remove(struct ibcomm *comm, uintptr_t token)
{
	struct ibc_regcache *c = comm->regcache;
	struct reg_entry *e;
	ptrdiff_t i = -1;
	bool last = false;

	if (c) {
		pthread_mutex_lock(&c->lock);
		i = handle_find(c, token);
	}
	if (i < 0) {
		if (c)
			pthread_mutex_unlock(&c->lock);
		if ((token & ~TOKEN_MASK) != TOKEN_MAGIC)
			return ibc_err(comm, IBCOMM_ERR_INVALID, "rank %d: ibcomm_deregister: mr %#lx is not a handle from ibcomm_register",
				       comm->rank, (unsigned long)token);
		return ibc_err(comm, IBCOMM_ERR_INVALID,
			       "rank %d: ibcomm_deregister: mr %#lx is not registered on this communicator (deregistered already, or registered on another communicator)",
			       comm->rank, (unsigned long)token);
	}
	e = c->hs[i].e;
	c->hs[i] = c->hs[--c->nhs];
	if (e && --e->refs == 0) {
		entry_unlink(c, e);
		last = true;
	}
	pthread_mutex_unlock(&c->lock);
	if (last)
		entry_release(comm, e);
	return IBCOMM_OK;
}

void ibc_regcache_destroy(struct ibcomm *comm)
{
	struct ibc_regcache *c = comm->regcache, **pp;

	if (!c)
		return;
	pthread_mutex_lock(&caches_lock);
	for (pp = &caches; *pp; pp = &(*pp)->next) {
		if (*pp == c) {
			*pp = c->next;
			break;
		}
	}
	pthread_mutex_unlock(&caches_lock);
	if (c->nhs)
		ibc_cinfo(comm, "rank %d: %zu registration(s) still live at destroy: deregistered", comm->rank, c->nhs);
	for (size_t i = 0; i < c->nents; i++)
		entry_release(comm, c->ents[i]);
	free(c->ents);
	free(c->hs);
	pthread_mutex_destroy(&c->lock);
	free(c);
	comm->regcache = NULL;
}

void *ibc_regcache_find(struct ibcomm *comm, const void *addr, size_t len)
{
	struct ibc_regcache *c = comm->regcache;
	uintptr_t s = (uintptr_t)addr, end;
	struct reg_entry *e;
	void *h;

	if (!c || !len || __builtin_add_overflow(s, len, &end))
		return NULL;
	pthread_mutex_lock(&c->lock);
	e = entry_covering(c, s, end);
	h = e ? e->h : NULL;
	pthread_mutex_unlock(&c->lock);
	return h;
}

bool ibc_regcache_info(struct ibcomm *comm, uintptr_t token, ibc_reg_info_t *info)
{
	struct ibc_regcache *c = comm->regcache;
	struct reg_entry *e;
	ptrdiff_t i;

	if (!c)
		return false;
	pthread_mutex_lock(&c->lock);
	i = handle_find(c, token);
	if (i >= 0) {
		e = c->hs[i].e;
		if (e)
			*info = (ibc_reg_info_t){ .start = e->start, .end = e->end, .refs = e->refs,
						  .valid = e->valid, .handle = e->h };
		else
			*info = (ibc_reg_info_t){ .valid = true };
	}
	pthread_mutex_unlock(&c->lock);
	return i >= 0;
}

void ibc_regcache_invalidate(const void *addr, size_t len)
{
	uintptr_t s = (uintptr_t)addr, end;

	if (!len || atomic_load(&live) == 0)
		return;
	if (__builtin_add_overflow(s, len, &end))
		end = UINTPTR_MAX;
	pthread_mutex_lock(&caches_lock);
	for (struct ibc_regcache *c = caches; c; c = c->next) {
		pthread_mutex_lock(&c->lock);
		for (size_t i = 0; i < c->nents && c->ents[i]->start < end; i++) {
			struct reg_entry *e = c->ents[i];

			if (e->end > s && e->valid) {
				e->valid = false;
				ibc_trace("registered memory [%#lx, %#lx) unmapped: no longer used for zero-copy",
					  (unsigned long)e->start, (unsigned long)e->end);
			}
		}
		pthread_mutex_unlock(&c->lock);
	}
	pthread_mutex_unlock(&caches_lock);
}

/*
 * The hooks. Exported by libibcomm (lib/libibcomm.map), so a program linked with it calls
 * these; they make the system call themselves (no dlsym). Until something is registered
 * they cost one atomic load. The kernel works on whole pages and refuses a misaligned
 * address (EINVAL, nothing unmapped), so the range marked is the one it would unmap.
 */
static void hook_invalidate(const void *addr, size_t len)
{
	uintptr_t pg;

	if (!len || atomic_load(&live) == 0)
		return;
	pg = (uintptr_t)sysconf(_SC_PAGESIZE);
	if ((uintptr_t)addr & (pg - 1))
		return;
	if (len > SIZE_MAX - (pg - 1))
		len = SIZE_MAX - (pg - 1);
	ibc_regcache_invalidate(addr, (len + pg - 1) & ~(size_t)(pg - 1));
}

IBC_EXPORT int munmap(void *addr, size_t len)
{
	hook_invalidate(addr, len);
	return (int)syscall(SYS_munmap, addr, len);
}

IBC_EXPORT void *mremap(void *old, size_t old_len, size_t new_len, int flags, ...)
{
	void *new_addr = NULL;
	va_list ap;

	if (flags & MREMAP_FIXED) {
		va_start(ap, flags);
		new_addr = va_arg(ap, void *);
		va_end(ap);
	}
	/* The old range moves or shrinks (growing in place is marked too: rare, and harmless). */
	hook_invalidate(old, old_len);
	if (flags & MREMAP_FIXED) /* replaces what was mapped at the target */
		hook_invalidate(new_addr, new_len);
	return (void *)syscall(SYS_mremap, old, old_len, new_len, flags, new_addr);
}
