/*
 * A rank that finishes a collective and destroys its communicator at once (then exits) must
 * not make the ranks still finishing that same collective fail, nor be reported dead (real
 * jobs of forked ranks on 127.0.0.1, TCP, port 0):
 * - after a barrier the leaver sends to the others, destroys and leaves before they even
 *   receive; they get its data, and it is not reported dead, also when it had aborted and
 *   destroyed a dup of its communicator before (that dup's missing goodbye used to stick to
 *   the whole rank: every call of the others would fail naming it dead); rank 0 (the
 *   rendezvous server) and rank 1 as the leaver, with exit() and with _exit() (rank 0's
 *   lingering server then goes with its process);
 * - a loop of dups, each used by an allreduce and destroyed at once by a leaver while the
 *   others, delayed at random, are still in it (a peer's connection still in the accept
 *   queue when its end-of-file is seen used to be given up on).
 */
#define _GNU_SOURCE
#include <CUnit/Basic.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../cunit_main.h"
#include "ibc.h"
#include "sock.h"
#include "rank_check.h"

#define CHILD_ALARM_S 60
#define NRANKS 3

struct job {
	int leaver;
	bool quick_exit; /* the leaver ends with _exit() (its atexit handlers do not run) */
	int left[2];     /* the leaver -> the others: its destroy has returned */
};

/* Forks the ranks of job j (with its pipe); returns the number that failed. */
static int run_job(rank_fn fn, struct job *j)
{
	int failed;

	g_port = free_port();
	if (g_port < 0 || pipe(j->left))
		return NRANKS;
	failed = run_ranks(NRANKS, CHILD_ALARM_S, fn, j);
	if (failed)
		fprintf(stderr, "  (leaver %d%s)\n", j->leaver, j->quick_exit ? ", _exit" : "");
	close(j->left[0]);
	close(j->left[1]);
	return failed;
}

/*
 * Makes sure every notice the server had to send about what happened before now has arrived:
 * the server answers in order on this rank's connection, and handles a closed connection in
 * the same pass it sees it, so after two round trips any DEAD notice is in.
 */
static void rendezvous_sync(ibcomm_t *comm, int rank)
{
	char key[32], err[IBC_ERRLEN];

	for (int i = 0; i < 2; i++) {
		snprintf(key, sizeof(key), "finish-sync/%d/%d", rank, i);
		if (ibc_boot_put(comm->boot, key, "x", 1, err, sizeof(err))) {
			fprintf(stderr, "rank %d: rendezvous PUT: %s\n", rank, err);
			_exit(1);
		}
	}
	ibc_boot_poll(comm->boot, true);
}

/* ---- a rank sends, destroys and leaves before the others receive ---- */

static void rank_leave(int rank, void *arg)
{
	struct job *j = arg;
	ibcomm_t *comm = init_rank(rank, NRANKS), *dup = NULL;
	int32_t v[64];
	char why[IBC_ERRLEN] = "", b;

	close(j->left[rank == j->leaver ? 0 : 1]);
	/* an aborted dup, destroyed while the communicator lives on: not a goodbye-less end */
	CHECK_OK(comm, ibcomm_dup(comm, &dup));
	CHECK_OK(comm, ibcomm_abort(dup));
	CHECK_OK(NULL, ibcomm_destroy(dup));
	CHECK_OK(comm, ibcomm_barrier(comm));
	if (rank == j->leaver) {
		for (int i = 0; i < 64; i++)
			v[i] = 1000 + i;
		for (int r = 0; r < NRANKS; r++)
			if (r != rank)
				CHECK_OK(comm, ibcomm_send(comm, v, 64, IBCOMM_INT32, r, 7));
		CHECK_OK(NULL, ibcomm_destroy(comm));
		CHECK(write(j->left[1], "ll", NRANKS - 1) == NRANKS - 1); /* a byte for each of the others */
		if (j->quick_exit)
			_exit(0);
		exit(0);
	}
	/* the others are slow: the leaver's destroy has returned before they receive */
	CHECK(read(j->left[0], &b, 1) == 1);
	if (j->leaver != 0 || !j->quick_exit) /* else the server went with rank 0's process */
		rendezvous_sync(comm, rank);
	/* a rank that said goodbye is not dead (every call of the communicator would fail) */
	CHECK(!ibc_boot_dead(comm->boot, j->leaver, why, sizeof(why)));
	memset(v, 0, sizeof(v));
	CHECK_OK(comm, ibcomm_recv(comm, v, 64, IBCOMM_INT32, j->leaver, 7));
	for (int i = 0; i < 64; i++)
		CHECK(v[i] == 1000 + i);
	CHECK_OK(NULL, ibcomm_destroy(comm));
}

static void leave_case(int leaver, bool quick_exit)
{
	struct job j = { .leaver = leaver, .quick_exit = quick_exit };

	CU_ASSERT_EQUAL(run_job(rank_leave, &j), 0);
}

static void test_leave_rank0_exit(void)
{
	leave_case(0, false);
}

static void test_leave_rank0_quick_exit(void)
{
	leave_case(0, true);
}

static void test_leave_rank1_exit(void)
{
	leave_case(1, false);
}

static void test_leave_rank1_quick_exit(void)
{
	leave_case(1, true);
}

/* ---- dups destroyed right after their allreduce ---- */

#define NDUPS 40

static void rank_dups(int rank, void *arg)
{
	const struct job *j = arg;
	ibcomm_t *comm = init_rank(rank, NRANKS);

	srand((unsigned)getpid() ^ (unsigned)time(NULL));
	for (int i = 0; i < NDUPS; i++) {
		ibcomm_t *d = NULL;
		int32_t v = rank + 1, s = 0;

		CHECK_OK(comm, ibcomm_dup(comm, &d));
		/* the others lag behind the leaver by up to 2 ms, as under load */
		if (rank != j->leaver)
			poll(NULL, 0, rand() % 3);
		CHECK_OK(d, ibcomm_allreduce(d, &v, &s, 1, IBCOMM_INT32, IBCOMM_SUM));
		CHECK(s == NRANKS * (NRANKS + 1) / 2);
		CHECK_OK(NULL, ibcomm_destroy(d));
	}
	CHECK_OK(comm, ibcomm_barrier(comm));
	CHECK_OK(NULL, ibcomm_destroy(comm));
}

static void test_dups(void)
{
	for (int leaver = 0; leaver < 2; leaver++) {
		struct job j = { .leaver = leaver };

		CU_ASSERT_EQUAL(run_job(rank_dups, &j), 0);
	}
}

int main(int argc, char **argv)
{
	static const struct cm_test tests[] = {
		{ "rank 0 sends and leaves first (exit)", test_leave_rank0_exit },
		{ "rank 0 sends and leaves first (_exit)", test_leave_rank0_quick_exit },
		{ "rank 1 sends and leaves first (exit)", test_leave_rank1_exit },
		{ "rank 1 sends and leaves first (_exit)", test_leave_rank1_quick_exit },
		{ "dups destroyed right after their allreduce", test_dups },
	};

	signal(SIGPIPE, SIG_IGN);
	return CM_MAIN1(argc, argv, "finishing", tests);
}
