/*
 * The bootstrap through the whole library (real jobs of forked ranks on 127.0.0.1, TCP):
 * - the rendezvous server's key table stays bounded over 1000 dups and splits, each used by
 *   a collective and destroyed (DROP deletes a communicator's keys once all its members are
 *   done); the bootstrap's all-gather;
 * - rank 0's ibcomm_destroy is not collective: it returns while the others wait for it to
 *   return, and its process may then end (_exit): ranks 1..3 go on with collectives on a
 *   sub-communicator without rank 0; what needs the rendezvous (a dup) fails with an error
 *   that names rank 0.
 */
#define _GNU_SOURCE
#include <CUnit/Basic.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ibc.h"
#include "rendezvous.h"
#include "rank_check.h"

#define CHILD_ALARM_S 150



/* Rank 0's rendezvous server: keys stored and namespaces waiting for DROPs. */
static size_t server_keys(ibcomm_t *comm)
{
	return ibc_rdv_srv_keys(ibc_rdv_server(ibc_rdv_of(comm->boot)));
}

/* ---- the key table stays bounded ---- */

#define NCHILDREN 1000
/* comm "0"'s keys (a TCP address per rank) and those of the few children whose DROPs from the
 * other ranks may still be on their way */
#define KEYS_BOUND 48

static void rank_bounded(int rank, void *arg)
{
	const int nranks = 3;
	ibcomm_t *comm = init_rank(rank, nranks);
	size_t most = 0, first = 0;

	(void)arg;
	for (int i = 0; i < NCHILDREN; i++) {
		ibcomm_t *child = NULL;
		int32_t v = 1, s = 0;

		if (i % 10 == 9)
			CHECK_OK(comm, ibcomm_split(comm, rank % 2, -rank, &child));
		else
			CHECK_OK(comm, ibcomm_dup(comm, &child));
		CHECK(child);
		CHECK_OK(child, ibcomm_allreduce(child, &v, &s, 1, IBCOMM_INT32, IBCOMM_SUM));
		CHECK(s == ibcomm_size(child));
		CHECK_OK(NULL, ibcomm_destroy(child));
		if (rank == 0) {
			size_t k = server_keys(comm);

			if (i == 0)
				first = k;
			most = IBC_MAX(most, k);
		}
	}
	CHECK_OK(comm, ibcomm_barrier(comm));
	{ /* the bootstrap's all-gather of small blobs, in comm's namespace (dropped with it) */
		char mine[16], all[3][16], err[IBC_ERRLEN];
		size_t lens[3];

		CHECK(nranks <= 3);
		snprintf(mine, sizeof(mine), "blob of %d", rank);
		if (ibc_boot_allgather(comm->boot, "0/ag", rank, nranks, mine, strlen(mine) + 1, all, sizeof(all[0]),
				       lens, ibc_deadline(10000), &comm->aborted, err, sizeof(err))) {
			fprintf(stderr, "rank %d: all-gather: %s\n", rank, err);
			_exit(1);
		}
		for (int r = 0; r < nranks; r++) {
			snprintf(mine, sizeof(mine), "blob of %d", r);
			CHECK(lens[r] == strlen(mine) + 1 && !strcmp(all[r], mine));
		}
	}
	if (rank == 0) {
		printf("\n    server keys: %zu after the first child, at most %zu over %d children ", first, most,
		       NCHILDREN);
		CHECK(most <= KEYS_BOUND);
	}
	CHECK_OK(NULL, ibcomm_destroy(comm));
}

static void test_keys_bounded(void)
{
	g_port = free_port();
	CU_ASSERT_EQUAL(run_ranks(3, CHILD_ALARM_S, rank_bounded, NULL), 0);
}

/* ---- rank 0 leaves first ---- */

struct leave {
	int ready[2];  /* ranks 1..3 -> rank 0: their sub-communicator is connected */
	int timing[2]; /* rank 0 -> the test: how long its destroy took (ms) */
	int done[2];   /* rank 0 -> ranks 1..3: its destroy returned */
};

static void rank_leave(int rank, void *arg)
{
	const int nranks = 4;
	struct leave *l = arg;
	ibcomm_t *comm = init_rank(rank, nranks), *sub = NULL, *dup = NULL;
	ibcomm_status_t st;
	char b;

	close(l->ready[rank == 0 ? 1 : 0]);
	close(l->done[rank == 0 ? 0 : 1]);
	close(l->timing[0]);
	CHECK_OK(comm, ibcomm_split(comm, rank == 0 ? -1 : 1, rank, &sub));
	if (rank == 0) {
		uint64_t t0;
		uint32_t ms;

		CHECK(!sub);
		for (int i = 1; i < nranks; i++)
			CHECK(read(l->ready[0], &b, 1) == 1);
		t0 = ibc_now_ms();
		CHECK_OK(NULL, ibcomm_destroy(comm)); /* while the others wait for it */
		ms = (uint32_t)(ibc_now_ms() - t0);
		CHECK(write(l->timing[1], &ms, sizeof(ms)) == sizeof(ms));
		for (int i = 1; i < nranks; i++)
			CHECK(write(l->done[1], "d", 1) == 1);
		_exit(0); /* gone: its server with it */
	}
	pairwise_collectives(sub);
	CHECK(write(l->ready[1], "r", 1) == 1);
	CHECK(read(l->done[0], &b, 1) == 1); /* a collective destroy would never return */
	/*
	 * How the others learn that rank 0's process is gone: their connection to the rendezvous
	 * drops (after the BYE rank 0's destroy sent: not a death, rank 0 is not reported dead).
	 */
	for (uint64_t until = ibc_now_ms() + 20000; ibc_boot_fd(comm->boot) >= 0;) {
		struct pollfd pf = { .fd = ibc_boot_fd(comm->boot), .events = POLLIN };

		CHECK(ibc_now_ms() < until);
		ibc_boot_poll(comm->boot, poll(&pf, 1, 10) > 0);
	}
	CHECK(!ibc_boot_dead(comm->boot, 0, (char[8]){ 0 }, 8));
	for (int i = 0; i < 50; i++)
		pairwise_collectives(sub);
	CHECK_OK(sub, ibcomm_barrier(sub));
	/* what needs the rendezvous fails, naming rank 0 */
	st = ibcomm_dup(sub, &dup);
	CHECK(st == IBCOMM_ERR_RENDEZVOUS || st == IBCOMM_ERR_PEER);
	CHECK(strstr(ibcomm_last_error(sub), "rank 0") && strstr(ibcomm_last_error(sub), "has stopped"));
	CHECK_OK(NULL, ibcomm_destroy(sub));
	CHECK_OK(NULL, ibcomm_destroy(comm));
}

static void test_rank0_leaves(void)
{
	struct leave l;
	uint32_t ms = 0;

	g_port = free_port();
	CU_ASSERT_FATAL(pipe(l.ready) == 0 && pipe(l.timing) == 0 && pipe(l.done) == 0);
	CU_ASSERT_EQUAL(run_ranks(4, CHILD_ALARM_S, rank_leave, &l), 0);
	close(l.timing[1]);
	CU_ASSERT_EQUAL(read(l.timing[0], &ms, sizeof(ms)), (ssize_t)sizeof(ms));
	printf("\n    rank 0's ibcomm_destroy took %u ms ", ms);
	close(l.timing[0]);
	close(l.ready[0]);
	close(l.ready[1]);
	close(l.done[0]);
	close(l.done[1]);
}

int main(int argc, char **argv)
{
	static const struct {
		const char *name;
		void (*fn)(void);
	} tests[] = {
		{ "keys stay bounded over 1000 dups and splits", test_keys_bounded },
		{ "rank 0 destroys and leaves first", test_rank0_leaves },
	};
	CU_pSuite s;
	unsigned failed;

	signal(SIGPIPE, SIG_IGN);
	if (CU_initialize_registry() != CUE_SUCCESS)
		return 99;
	s = CU_add_suite("bootstrap", NULL, NULL);
	if (!s)
		return 99;
	for (size_t i = 0; i < IBC_ARRAY_SIZE(tests); i++)
		if ((argc < 2 || strstr(tests[i].name, argv[1])) && !CU_add_test(s, tests[i].name, tests[i].fn))
			return 99;
	CU_basic_set_mode(CU_BRM_VERBOSE);
	CU_basic_run_tests();
	failed = CU_get_number_of_tests_failed() + CU_get_number_of_suites_failed();
	CU_cleanup_registry();
	return failed ? 1 : 0;
}
