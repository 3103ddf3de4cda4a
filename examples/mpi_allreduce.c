/*
 * An MPI program that bootstraps ibcomm with the MPI it already has: rank 0 makes an id
 * (ibcomm_get_id), MPI_Bcast carries it to the others, every rank calls ibcomm_init_rank.
 * Then ibcomm's allreduce is checked against MPI_Allreduce, element by element.
 *
 *	mpicc.openmpi mpi_allreduce.c -o mpi_allreduce $(pkg-config --cflags --libs ibcomm)
 *	mpirun.openmpi -n 4 ./mpi_allreduce
 *
 * The id holds the job key: broadcast it only inside the job, never print it.
 */
#include <stdio.h>
#include <stdlib.h>

#include <ibcomm.h>
#include <mpi.h>

#define COUNT (1 << 20)

int main(int argc, char **argv)
{
	ibcomm_id_t id;
	ibcomm_t *comm;
	ibcomm_status_t st = IBCOMM_OK;
	int rank, size, wrong = 0, all_wrong;
	float *in, *mine, *ref;

	MPI_Init(&argc, &argv);
	MPI_Comm_rank(MPI_COMM_WORLD, &rank);
	MPI_Comm_size(MPI_COMM_WORLD, &size);

	if (rank == 0)
		st = ibcomm_get_id(&id);
	MPI_Bcast(&st, 1, MPI_INT, 0, MPI_COMM_WORLD); /* everyone stops if rank 0 could not */
	if (st != IBCOMM_OK) {
		if (rank == 0)
			fprintf(stderr, "ibcomm_get_id: %s: %s\n", ibcomm_strerror(st), ibcomm_last_error(NULL));
		MPI_Finalize();
		return 1;
	}
	MPI_Bcast(id.bytes, IBCOMM_ID_BYTES, MPI_BYTE, 0, MPI_COMM_WORLD);
	st = ibcomm_init_rank(&id, rank, size, NULL, &comm);
	if (st != IBCOMM_OK) {
		fprintf(stderr, "rank %d: ibcomm_init_rank: %s: %s\n", rank, ibcomm_strerror(st), ibcomm_last_error(NULL));
		MPI_Abort(MPI_COMM_WORLD, 1);
	}

	in = malloc(COUNT * sizeof(*in));
	mine = malloc(COUNT * sizeof(*mine));
	ref = malloc(COUNT * sizeof(*ref));
	if (!in || !mine || !ref)
		MPI_Abort(MPI_COMM_WORLD, 1);
	for (int i = 0; i < COUNT; i++)
		in[i] = (float)((rank + 1) * (i % 1000)); /* small integers: the sums are exact */
	st = ibcomm_allreduce(comm, in, mine, COUNT, IBCOMM_FLOAT32, IBCOMM_SUM);
	if (st != IBCOMM_OK) {
		fprintf(stderr, "rank %d: ibcomm_allreduce: %s: %s\n", rank, ibcomm_strerror(st), ibcomm_last_error(comm));
		MPI_Abort(MPI_COMM_WORLD, 1);
	}
	MPI_Allreduce(in, ref, COUNT, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
	for (int i = 0; i < COUNT; i++)
		wrong += mine[i] != ref[i];
	MPI_Reduce(&wrong, &all_wrong, 1, MPI_INT, MPI_SUM, 0, MPI_COMM_WORLD);
	if (rank == 0)
		printf("mpi_allreduce: %d ranks, ibcomm over %s: %d elements per rank compared with MPI_Allreduce, %d differ\n",
		       size, ibcomm_transport(comm), COUNT, all_wrong);
	ibcomm_destroy(comm);
	free(in);
	free(mine);
	free(ref);
	MPI_Bcast(&all_wrong, 1, MPI_INT, 0, MPI_COMM_WORLD);
	MPI_Finalize();
	return all_wrong ? 1 : 0;
}
