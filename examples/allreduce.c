/*
 * The smallest ibcomm program: every rank contributes four floats, every rank gets their
 * sum. Run it with the launcher:
 *
 *   ibcomm_run -n 3 -- ./examples/allreduce
 *
 * or under Slurm, Open MPI or Hydra (the rendezvous address is still needed):
 *
 *   IBCOMM_ROOT=node01:29500 srun -n 8 ./examples/allreduce
 */
#include <stdio.h>

#include <ibcomm.h>

int main(void)
{
	float data[4];
	ibcomm_t *comm;
	ibcomm_status_t st;
	int rank, size;

	/* rank, size and the rendezvous come from the environment (IBCOMM_RANK, ...) */
	st = ibcomm_init_env(&comm);
	if (st != IBCOMM_OK) {
		/* no communicator yet: the detail is this thread's last error */
		fprintf(stderr, "ibcomm_init_env: %s: %s\n", ibcomm_strerror(st), ibcomm_last_error(NULL));
		return 1;
	}
	rank = ibcomm_rank(comm);
	size = ibcomm_size(comm);

	for (int i = 0; i < 4; i++)
		data[i] = (float)(rank + i);

	/* in place: sendbuf == recvbuf */
	st = ibcomm_allreduce(comm, data, data, 4, IBCOMM_FLOAT32, IBCOMM_SUM);
	if (st != IBCOMM_OK) {
		fprintf(stderr, "rank %d: ibcomm_allreduce: %s: %s\n", rank, ibcomm_strerror(st),
			ibcomm_last_error(comm));
		ibcomm_destroy(comm);
		return 1;
	}

	/* data[i] is now sum over ranks of (rank + i) = size(size-1)/2 + size*i */
	printf("rank %d of %d: %g %g %g %g (over %s)\n", rank, size, data[0], data[1], data[2], data[3],
	       ibcomm_transport(comm));

	st = ibcomm_destroy(comm);
	if (st != IBCOMM_OK) {
		fprintf(stderr, "rank %d: ibcomm_destroy: %s\n", rank, ibcomm_strerror(st));
		return 1;
	}
	return 0;
}
