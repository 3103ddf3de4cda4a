/*
 * What the multi-process tests of tests/core share: forking a job's ranks and waiting for them,
 * a forked rank's checks (a failed check prints the rank, the place and the last error, and
 * ends the rank with status 1, which its parent reports), a rank's init over TCP with the
 * rendezvous on a free loopback port, and collectives that connect every pair of ranks.
 */
#ifndef IBCOMM_TEST_RANK_CHECK_H
#define IBCOMM_TEST_RANK_CHECK_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ibcomm.h"
#include "sock.h"

static int g_rank = -1; /* this process's rank; -1 in the parent */
static int g_port;      /* the job's rendezvous port on 127.0.0.1 (free_port() before run_ranks()) */

#define CHECK(cond)                                                                                         \
	do {                                                                                                \
		if (!(cond)) {                                                                              \
			fprintf(stderr, "rank %d: %s:%d: check failed: %s (last error: %s)\n", g_rank,       \
				__FILE__, __LINE__, #cond, ibcomm_last_error(NULL));                        \
			_exit(1);                                                                           \
		}                                                                                           \
	} while (0)
#define CHECK_OK(comm, call)                                                                                \
	do {                                                                                                \
		ibcomm_status_t st_ = (call);                                                               \
		if (st_ != IBCOMM_OK) {                                                                     \
			fprintf(stderr, "rank %d: %s:%d: %s: %s: %s\n", g_rank, __FILE__, __LINE__, #call,   \
				ibcomm_strerror(st_), ibcomm_last_error(comm));                             \
			_exit(1);                                                                           \
		}                                                                                           \
	} while (0)

/* A port of 127.0.0.1 free a moment ago (the job's rank 0 binds it again), or -1. */
static inline int free_port(void)
{
	int fds[1], n = 0, port;
	char why[128];

	if (ibc_sock_listen("127.0.0.1", "0", fds, 1, &n, why, sizeof(why)))
		return -1;
	port = ibc_sock_port(fds[0]);
	close(fds[0]);
	return port;
}

#define RANKS_MAX 16

/* Rank `rank` of an nranks-rank job over TCP with its rendezvous at 127.0.0.1:g_port. */
static inline ibcomm_config_t job_config(int rank, int nranks, char root[64])
{
	ibcomm_config_t cfg = IBCOMM_CONFIG_INIT;

	snprintf(root, 64, "127.0.0.1:%d", g_port);
	cfg.rank = rank;
	cfg.nranks = nranks;
	cfg.root = root;
	cfg.transport = "tcp";
	cfg.timeout_ms = 30000;
	return cfg;
}

/* That rank's communicator (a failed init ends the rank). */
static inline ibcomm_t *init_rank(int rank, int nranks)
{
	char root[64];
	ibcomm_config_t cfg = job_config(rank, nranks, root);
	ibcomm_t *comm = NULL;

	CHECK_OK(NULL, ibcomm_init(&cfg, &comm));
	return comm;
}

/* Collectives that connect every pair of comm's ranks (at most RANKS_MAX), checked exactly. */
static inline void pairwise_collectives(ibcomm_t *comm)
{
	int n = ibcomm_size(comm), rank = ibcomm_rank(comm);
	int32_t in[RANKS_MAX], out[RANKS_MAX], sum = 0;

	CHECK(n <= RANKS_MAX);
	for (int r = 0; r < n; r++) {
		in[r] = 100 * rank + r;
		sum += r + 1;
	}
	CHECK_OK(comm, ibcomm_alltoall(comm, in, out, 1, IBCOMM_INT32));
	for (int r = 0; r < n; r++)
		CHECK(out[r] == 100 * r + rank);
	in[0] = rank + 1;
	CHECK_OK(comm, ibcomm_allreduce(comm, in, out, 1, IBCOMM_INT32, IBCOMM_SUM));
	CHECK(out[0] == sum);
	CHECK_OK(comm, ibcomm_barrier(comm));
}

typedef void (*rank_fn)(int rank, void *arg);

/*
 * Forks nranks (at most RANKS_MAX) ranks, each running fn(rank, arg) with g_rank set and
 * SIGALRM after alarm_s, then exit(0); waits for them all. Returns the number that failed.
 */
static inline int run_ranks(int nranks, unsigned alarm_s, rank_fn fn, void *arg)
{
	pid_t pids[RANKS_MAX];
	int failed = 0, forked = 0;

	fflush(NULL);
	for (; forked < nranks && forked < RANKS_MAX; forked++) {
		pid_t pid = fork();

		if (pid < 0)
			break;
		if (pid == 0) {
			alarm(alarm_s);
			g_rank = forked;
			fn(forked, arg);
			exit(0);
		}
		pids[forked] = pid;
	}
	for (int r = 0; r < forked; r++) {
		int status;

		if (waitpid(pids[r], &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status)) {
			fprintf(stderr, "\n  rank %d failed (status %#x)\n", r, status);
			failed++;
		}
	}
	return failed + nranks - forked;
}

#endif
