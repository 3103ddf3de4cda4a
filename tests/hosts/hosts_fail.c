/*
 * hosts_fail: one rank of a job spread over hosts (IBCOMM_RANK/SIZE/ROOT) that runs 64 MiB
 * float allreduces back to back, checks every element of every result, and prints what it
 * sees with this host's clock, so that tests/hosts can kill a host, a link or a rank in the
 * middle of a call and measure how long the survivors take to return an error, and that the
 * error names the lost ranks. A wrong result is the one unforgivable outcome: it is reported
 * as WRONG and exits 3.
 *
 *   hosts_fail [-m MIB] [-n CALLS]
 *
 * Lines (stdout, flushed): "HF ready rank R host H t=T", "HF begin i t=T", "HF ok i t=T s=D",
 * "HF error i t=T s=D status=S: DETAIL", "HF WRONG i ...". Exit: 0 all calls correct, 1 an
 * error was returned, 2 usage or setup, 3 a wrong result.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ibcomm.h"

static double wall(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Element i of rank r: small integers, so the float sum is exact in any order. */
static float input(int r, size_t i)
{
	return (float)((r + 1) * (int)(i % 61 + 1));
}

int main(int argc, char **argv)
{
	long mib = 64, calls = 1000;
	ibcomm_t *comm = NULL;
	ibcomm_status_t st;
	char host[64] = "?";
	int opt;

	while ((opt = getopt(argc, argv, "m:n:")) != -1) {
		if (opt == 'm')
			mib = atol(optarg);
		else if (opt == 'n')
			calls = atol(optarg);
		else
			return 2;
	}
	if (mib < 1 || mib > 1024 || calls < 1) {
		fprintf(stderr, "hosts_fail: bad -m or -n\n");
		return 2;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	gethostname(host, sizeof(host) - 1);
	st = ibcomm_init_env(&comm);
	if (st != IBCOMM_OK) {
		printf("HF init-error t=%.3f status=%d: %s\n", wall(), (int)st, ibcomm_last_error(NULL));
		return 1;
	}
	int rank = ibcomm_rank(comm), n = ibcomm_size(comm);
	size_t count = (size_t)mib * 1024 * 1024 / sizeof(float);
	float *send = malloc(count * sizeof(float)), *recv = malloc(count * sizeof(float));
	int code = 0;

	if (!send || !recv) {
		fprintf(stderr, "hosts_fail: out of memory\n");
		return 2;
	}
	for (size_t i = 0; i < count; i++)
		send[i] = input(rank, i);
	printf("HF ready rank %d of %d host %s transport %s t=%.3f\n", rank, n, host, ibcomm_transport(comm), wall());
	for (long c = 0; c < calls && code == 0; c++) {
		double t0 = wall();

		memset(recv, 0xff, count * sizeof(float));
		printf("HF begin %ld t=%.3f\n", c, t0);
		st = ibcomm_allreduce(comm, send, recv, count, IBCOMM_FLOAT32, IBCOMM_SUM);
		double t1 = wall();

		if (st != IBCOMM_OK) {
			printf("HF error %ld t=%.3f s=%.3f status=%d (%s): %s\n", c, t1, t1 - t0, (int)st, ibcomm_strerror(st),
			       ibcomm_last_error(comm));
			code = 1;
			break;
		}
		for (size_t i = 0; i < count; i++) {
			float want = (float)(n * (n + 1) / 2 * (int)(i % 61 + 1));

			if (recv[i] != want) {
				printf("HF WRONG %ld element %zu = %g, expected %g\n", c, i, (double)recv[i], (double)want);
				code = 3;
				break;
			}
		}
		if (code == 0)
			printf("HF ok %ld t=%.3f s=%.3f\n", c, t1, t1 - t0);
	}
	st = ibcomm_destroy(comm);
	printf("HF destroy t=%.3f status=%d\n", wall(), (int)st);
	free(send);
	free(recv);
	return code;
}
