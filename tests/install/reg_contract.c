/*
 * A user's program, built against the installed library with pkg-config (never the build
 * tree's internals): the registration contract of ibcomm.h kept over several generations
 * of buffers. Each generation allocates a send and a receive buffer (malloc, whose large
 * blocks glibc's free() unmaps, or mmap; the even generations' send buffer is always at the
 * same address, its pages replaced by mmap(MAP_FIXED) in between), registers them (and a range inside the send buffer, which shares its
 * registration), runs an out-of-place allreduce and an allgather from the registered
 * memory, checks every element exactly, then deregisters and only then frees. Also: a
 * handle deregistered twice is IBCOMM_ERR_INVALID, ibcomm_version() is the headers' code,
 * and ibcomm_destroy() with a registration still live succeeds.
 *
 *   ibcomm_run -n 3 --transport tcp -- ./reg_contract
 */
#define _GNU_SOURCE
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include <ibcomm.h>

#define COUNT (96u * 1024) /* int32: 384 KiB, above glibc's mmap threshold */
#define LEN (COUNT * sizeof(int32_t))
#define GENS 6

static int rank, size, failures;

#define FAIL(...)                                         \
	do {                                              \
		fprintf(stderr, "rank %d: FAIL: ", rank); \
		fprintf(stderr, __VA_ARGS__);             \
		fputc('\n', stderr);                      \
		failures++;                               \
	} while (0)

static int32_t val(int gen, int r, size_t i)
{
	return (int32_t)(gen * 100000 + r * 1009 + (int)(i % 997));
}

static bool ok(ibcomm_t *comm, ibcomm_status_t st, const char *what)
{
	if (st == IBCOMM_OK)
		return true;
	FAIL("%s: %s: %s", what, ibcomm_strerror(st), ibcomm_last_error(comm));
	return false;
}

/*
 * A buffer of COUNT int32: malloc'd (odd generations) or mapped (even ones): at `at` when
 * given, whose pages the previous even generation replaced (see put), else anywhere.
 */
static int32_t *get(int gen, void *at, bool *mapped)
{
	void *p;

	*mapped = gen % 2 == 0;
	if (!*mapped)
		return malloc(LEN);
	if (at)
		return at;
	p = mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED) {
		FAIL("mmap of %zu bytes: %m", LEN);
		return NULL;
	}
	return p;
}

/*
 * After deregistering: free, unmap, or (keep) replace the pages of a mapping with new ones
 * at the same address, mmap(MAP_FIXED) over it, which leaves no window in which something
 * else could take the address. Returns p when kept.
 */
static void *put(int32_t *p, bool mapped, bool keep)
{
	void *q;

	if (!mapped) {
		free(p);
		return NULL;
	}
	if (!keep) {
		munmap(p, LEN);
		return NULL;
	}
	q = mmap(p, LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
	if (q == MAP_FAILED) {
		FAIL("mmap(MAP_FIXED) over %p: %m", (void *)p);
		munmap(p, LEN);
		return NULL;
	}
	return q;
}

/*
 * One generation; *at: the send buffer of the even generations, the same address each time
 * with new pages (NULL: map one; set to it, and back to NULL once unmapped).
 */
static bool generation(ibcomm_t *comm, int gen, void **at)
{
	ibcomm_mr_t *ms = NULL, *mr = NULL, *msub = NULL;
	bool smapped, rmapped, good = false;
	int32_t *s, *r;
	size_t gcount = COUNT / (size_t)size, bad = 0;

	s = get(gen, *at, &smapped);
	r = get(gen, NULL, &rmapped);
	if (!s || !r)
		goto out;
	/* registered before the first write: the registration must see the pages written later */
	if (!ok(comm, ibcomm_register(comm, s, LEN, &ms), "ibcomm_register(send)") ||
	    !ok(comm, ibcomm_register(comm, r, LEN, &mr), "ibcomm_register(recv)") ||
	    !ok(comm, ibcomm_register(comm, s + 10, 1000 * sizeof(int32_t), &msub), "ibcomm_register(inside send)"))
		goto out;
	for (size_t i = 0; i < COUNT; i++) {
		s[i] = val(gen, rank, i);
		r[i] = -1;
	}
	if (!ok(comm, ibcomm_allreduce(comm, s, r, COUNT, IBCOMM_INT32, IBCOMM_SUM), "ibcomm_allreduce"))
		goto out;
	for (size_t i = 0; i < COUNT; i++) {
		int32_t want = 0;

		for (int k = 0; k < size; k++)
			want += val(gen, k, i);
		if (r[i] != want && bad++ < 3)
			FAIL("generation %d: allreduce element %zu is %d, expected %d", gen, i, r[i], want);
	}
	/* allgather: this rank's block of the registered send buffer into the registered recv buffer */
	memset(r, 0xff, LEN);
	if (!ok(comm, ibcomm_allgather(comm, s + (size_t)rank * gcount, r, gcount, IBCOMM_INT32), "ibcomm_allgather"))
		goto out;
	for (size_t i = 0; i < gcount * (size_t)size; i++) {
		int32_t want = val(gen, (int)(i / gcount), i);

		if (r[i] != want && bad++ < 3)
			FAIL("generation %d: allgather element %zu is %d, expected %d", gen, i, r[i], want);
	}
	good = bad == 0;
out:
	/* the contract: deregister, then free */
	if (msub)
		ok(comm, ibcomm_deregister(comm, msub), "ibcomm_deregister(inside send)");
	if (ms)
		ok(comm, ibcomm_deregister(comm, ms), "ibcomm_deregister(send)");
	if (mr)
		ok(comm, ibcomm_deregister(comm, mr), "ibcomm_deregister(recv)");
	if (ms && ibcomm_deregister(comm, ms) != IBCOMM_ERR_INVALID)
		FAIL("a handle deregistered twice is not IBCOMM_ERR_INVALID");
	if (s) {
		void *kept = put(s, smapped, smapped && gen + 2 <= GENS);

		if (smapped)
			*at = kept;
	}
	if (r)
		put(r, rmapped, false);
	return good;
}

int main(void)
{
	static int32_t tail[1024];
	ibcomm_mr_t *live = NULL;
	void *at = NULL;
	int passed = 0;
	ibcomm_t *comm;
	ibcomm_status_t st;

	st = ibcomm_init_env(&comm);
	if (st != IBCOMM_OK) {
		fprintf(stderr, "ibcomm_init_env: %s: %s\n", ibcomm_strerror(st), ibcomm_last_error(NULL));
		return 1;
	}
	rank = ibcomm_rank(comm);
	size = ibcomm_size(comm);
	if (ibcomm_version() != IBCOMM_VERSION_CODE)
		FAIL("ibcomm_version() is %d, the headers' IBCOMM_VERSION_CODE %d", ibcomm_version(), IBCOMM_VERSION_CODE);
	/* generations 2, 4, 6 send from one address, its pages replaced in between */
	for (int gen = 1; gen <= GENS; gen++)
		passed += generation(comm, gen, &at);
	/* destroy deregisters what is left */
	ok(comm, ibcomm_register(comm, tail, sizeof(tail), &live), "ibcomm_register(static)");
	ok(NULL, ibcomm_destroy(comm), "ibcomm_destroy with a live registration");
	printf("rank %d of %d: %d of %d generations exact (generations 2, 4, 6 sent from new pages at one address)\n",
	       rank, size, passed, GENS);
	return failures || passed != GENS ? 1 : 0;
}
