/*
 * What the multi-process tests of tests/core share: a forked rank's checks (a failed check
 * prints the rank, the place and the last error, and ends the rank with status 1, which its
 * parent reports) and a free loopback port for a job's rendezvous. The including file defines
 * `static int g_rank`.
 */
#ifndef IBCOMM_TEST_RANK_CHECK_H
#define IBCOMM_TEST_RANK_CHECK_H

#include <stdio.h>
#include <unistd.h>

#include "ibcomm.h"
#include "sock.h"

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

#endif
