/*
 * What the transport tests share (tests/tp/tp_suite.c): forked ranks over a file-backed fake
 * rendezvous, each with one transport created through its ops table, and the cases every
 * transport must pass (ring order, tags and wrap-around; credits). Each test program names
 * its transport and how a rank sets it up in tp_suite, then calls tp_run_ranks().
 */
#ifndef IBC_TESTS_TP_SUITE_H
#define IBC_TESTS_TP_SUITE_H

#include <stdio.h>

#include "ibc.h"

typedef int (*rank_fn)(struct ibcomm *comm, ibc_tp_t *tp);

struct tp_suite {
	const char *name;             /* "tcp": names the temporary directories */
	const struct ibc_tp_ops *ops; /* the transport under test */
	/* the transport's knobs in comm->set, chunk size and slots (0: its default) included */
	void (*setup)(struct ibcomm *comm, unsigned long chunk, unsigned long slots);
	bool counts_connects; /* cnt.connects is one per peer (itself too) */
};

/* Set by the test program before any tp_run_ranks(). */
extern const struct tp_suite *tp_suite;
/* When set, ranks call fn with tp NULL: fn creates the transport itself (tests of create). */
extern bool tp_fn_creates;
/* The rank's communicator in a forked rank (for CHECK's messages, signal handlers). */
extern struct ibcomm *g_comm;

/* In a rank: fails the rank, saying where and the transport's last error. */
#define CHECK(cond)                                                                                            \
	do {                                                                                                   \
		if (!(cond)) {                                                                                 \
			fprintf(stderr, "rank %d: %s:%d: check failed: %s (last error: %s)\n",                 \
				g_comm ? g_comm->rank : -1, __FILE__, __LINE__, #cond, g_comm ? g_comm->err : ""); \
			return 1;                                                                              \
		}                                                                                              \
	} while (0)

double now_s(void);
/* Removes a flat directory (a fake rendezvous's) and its files. */
void rm_dir(const char *dir);

/*
 * Runs fn in `size` forked ranks with chunk and slots (0: the default); ranks in killed_mask
 * are expected to die of SIGKILL. Returns the number of ranks that did not end as expected
 * within timeout_s (an overrunning rank is killed).
 */
int tp_run_ranks(int size, rank_fn fn, unsigned killed_mask, int timeout_s, unsigned long chunk, unsigned long slots);

/* Every rank to every rank (itself too), both channels, ORDER_N chunks each of patterned
 * lengths and bytes: order, tags and ring wrap-around. Wants 4 KiB chunks and 4 slots. */
int tp_fn_order(struct ibcomm *comm, ibc_tp_t *tp);
/* Two ranks, 2 slots: no free slot gives IBC_AGAIN, release gives the credit back, each
 * channel has its own credits, out of order releases and bad arguments are refused. */
int tp_fn_credit(struct ibcomm *comm, ibc_tp_t *tp);

#endif
