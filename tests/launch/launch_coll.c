/*
 * The collective suite the launcher tests run under srun, mpirun and mpiexec (no IBCOMM_*
 * variable set: everything comes from the launcher). Every collective (and tagged
 * send/recv in a ring), int32 sum at several counts, every root, every element of every
 * rank checked against a scalar reference computed here. Prints one line per rank:
 *   launch_coll: rank R of N (local rank L), transport T: C checks, F failed
 * and exits 1 when anything failed.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ibcomm.h>

static long checks, fails;

/* the value rank r contributes at index i (small: sums are exact) */
static int32_t val(int r, size_t i)
{
	return (int32_t)((r + 1) * 3 + (int)(i % 101));
}

static void check(const char *what, size_t count, int root, size_t i, int32_t got, int32_t want)
{
	checks++;
	if (got == want)
		return;
	if (fails++ < 10)
		fprintf(stderr, "launch_coll: %s count %zu root %d: element %zu is %d, expected %d\n", what, count,
			root, i, got, want);
}

static int call(ibcomm_status_t st, const char *what)
{
	if (st == IBCOMM_OK)
		return 0;
	fprintf(stderr, "launch_coll: %s: %s: %s\n", what, ibcomm_strerror(st), ibcomm_last_error(NULL));
	fails++;
	return -1;
}

static int32_t sum(int n, size_t i)
{
	return (int32_t)(3 * n * (n + 1) / 2 + n * (int)(i % 101));
}

static void suite(ibcomm_t *comm, size_t count)
{
	int rank = ibcomm_rank(comm), n = ibcomm_size(comm);
	size_t big = count * (size_t)n;
	int32_t *s = malloc(big * sizeof(*s)), *r = malloc(big * sizeof(*r));

	if (!s || !r) {
		fprintf(stderr, "launch_coll: out of memory\n");
		exit(1);
	}
	/* allreduce, out of place and in place */
	for (size_t i = 0; i < count; i++)
		s[i] = val(rank, i);
	if (!call(ibcomm_allreduce(comm, s, r, count, IBCOMM_INT32, IBCOMM_SUM), "allreduce"))
		for (size_t i = 0; i < count; i++)
			check("allreduce", count, -1, i, r[i], sum(n, i));
	if (!call(ibcomm_allreduce(comm, s, s, count, IBCOMM_INT32, IBCOMM_SUM), "allreduce in place"))
		for (size_t i = 0; i < count; i++)
			check("allreduce in place", count, -1, i, s[i], sum(n, i));
	for (int root = 0; root < n; root++) {
		/* broadcast */
		for (size_t i = 0; i < count; i++)
			r[i] = rank == root ? val(root, i) : -1;
		if (!call(ibcomm_broadcast(comm, r, count, IBCOMM_INT32, root), "broadcast"))
			for (size_t i = 0; i < count; i++)
				check("broadcast", count, root, i, r[i], val(root, i));
		/* reduce */
		for (size_t i = 0; i < count; i++)
			s[i] = val(rank, i);
		if (!call(ibcomm_reduce(comm, s, r, count, IBCOMM_INT32, IBCOMM_SUM, root), "reduce") && rank == root)
			for (size_t i = 0; i < count; i++)
				check("reduce", count, root, i, r[i], sum(n, i));
		/* gather */
		if (!call(ibcomm_gather(comm, s, r, count, IBCOMM_INT32, root), "gather") && rank == root)
			for (size_t i = 0; i < big; i++)
				check("gather", count, root, i, r[i], val((int)(i / count), i % count));
		/* scatter: block q of the root's buffer goes to rank q */
		for (size_t i = 0; i < big; i++)
			s[i] = val((int)(i / count), i % count) + 1000 * root;
		if (!call(ibcomm_scatter(comm, s, r, count, IBCOMM_INT32, root), "scatter"))
			for (size_t i = 0; i < count; i++)
				check("scatter", count, root, i, r[i], val(rank, i) + 1000 * root);
	}
	/* allgather */
	for (size_t i = 0; i < count; i++)
		s[i] = val(rank, i);
	if (!call(ibcomm_allgather(comm, s, r, count, IBCOMM_INT32), "allgather"))
		for (size_t i = 0; i < big; i++)
			check("allgather", count, -1, i, r[i], val((int)(i / count), i % count));
	/* reduce_scatter: every rank gives val(rank, i) at global index i; rank q gets block q */
	for (size_t i = 0; i < big; i++)
		s[i] = val(rank, i);
	if (!call(ibcomm_reduce_scatter(comm, s, r, count, IBCOMM_INT32, IBCOMM_SUM), "reduce_scatter"))
		for (size_t i = 0; i < count; i++)
			check("reduce_scatter", count, -1, i, r[i], sum(n, (size_t)rank * count + i));
	/* alltoall: block q from rank p holds 10000 * p + 100 * q + small */
	for (size_t i = 0; i < big; i++)
		s[i] = (int32_t)(10000 * rank + 100 * (int)(i / count) + (int)(i % count % 97));
	if (!call(ibcomm_alltoall(comm, s, r, count, IBCOMM_INT32), "alltoall"))
		for (size_t i = 0; i < big; i++)
			check("alltoall", count, -1, i, r[i],
			      (int32_t)(10000 * (int)(i / count) + 100 * rank + (int)(i % count % 97)));
	/* tagged send/recv around the ring, even ranks send first */
	if (n > 1) {
		int to = (rank + 1) % n, from = (rank + n - 1) % n;

		for (size_t i = 0; i < count; i++)
			s[i] = val(rank, i);
		if (rank % 2 == 0) {
			call(ibcomm_send(comm, s, count, IBCOMM_INT32, to, 7), "send");
			call(ibcomm_recv(comm, r, count, IBCOMM_INT32, from, 7), "recv");
		} else {
			call(ibcomm_recv(comm, r, count, IBCOMM_INT32, from, 7), "recv");
			call(ibcomm_send(comm, s, count, IBCOMM_INT32, to, 7), "send");
		}
		for (size_t i = 0; i < count; i++)
			check("send/recv", count, -1, i, r[i], val(from, i));
	}
	call(ibcomm_barrier(comm), "barrier");
	free(s);
	free(r);
}

int main(void)
{
	static const size_t counts[] = { 1, 7, 1000, 65536 };
	const char *lr = getenv("SLURM_LOCALID") ? getenv("SLURM_LOCALID") :
			 getenv("OMPI_COMM_WORLD_LOCAL_RANK") ? getenv("OMPI_COMM_WORLD_LOCAL_RANK") :
			 getenv("MPI_LOCALRANKID") ? getenv("MPI_LOCALRANKID") : "?";
	ibcomm_t *comm;
	ibcomm_status_t st = ibcomm_init_env(&comm);

	if (st != IBCOMM_OK) {
		fprintf(stderr, "launch_coll: ibcomm_init_env: %s: %s\n", ibcomm_strerror(st), ibcomm_last_error(NULL));
		return 1;
	}
	for (size_t c = 0; c < sizeof(counts) / sizeof(counts[0]); c++)
		suite(comm, counts[c]);
	printf("launch_coll: rank %d of %d (local rank %s), transport %s: %ld checks, %ld failed\n", ibcomm_rank(comm),
	       ibcomm_size(comm), lr, ibcomm_transport(comm), checks, fails);
	if (ibcomm_destroy(comm) != IBCOMM_OK)
		fails++;
	return fails ? 1 : 0;
}
