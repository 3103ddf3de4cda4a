/*
 * Call signatures (mismatch detection, sig.c): before a collective's data is used, every rank
 * knows that all ranks made the same call (sequence number, collective, datatype, op, root,
 * count), or the call fails with IBCOMM_ERR_MISMATCH on every rank. coll.c runs it around
 * each call; the transfer engine only sees the hook (algo.h) it rides on.
 */
#ifndef IBC_ALGO_SIG_H
#define IBC_ALGO_SIG_H

#include "algo/algo.h"

#define IBC_SIG_MSG_LEN 50 /* a signature message on the wire */

/* One call's check (coll.c keeps it on its stack for the call). */
struct ibc_sig {
	struct ibc_xhook hook;    /* first member: what the engine is handed */
	struct ibc_coll_args *a;  /* the call (or, for the agreement round, its copy) */
	/*
	 * Two ranks: the signature travels in front of this rank's first chunk to the peer and
	 * the peer's is checked before any of its data is used. out_peer: signature still to
	 * go, in_peer: signature still to check; -1 once done.
	 */
	int out_peer, in_peer;
	/*
	 * More ranks: the signatures are disseminated along the recursive-doubling pattern, in
	 * front of the first (and only) chunk of every message. seen: a mismatch is known
	 * (msg then carries the differing pair).
	 */
	bool fused, seen;
	uint8_t msg[IBC_SIG_MSG_LEN]; /* what this rank sends next */
};

/*
 * Before anything moves, on a communicator of more than one rank, once a->algo is chosen:
 * sets s up for a's call. Either the algorithm's own messages carry the check (a->hook is set
 * to s's hook), or a separate round compares the signatures now. A call that moves nothing
 * (bytes == 0) is fully checked on return.
 */
IBC_HIDDEN ibcomm_status_t ibc_sig_begin(struct ibc_sig *s, struct ibc_coll_args *a, size_t bytes);
/* After the algorithm succeeded: what its messages did not check yet, and any mismatch seen. */
IBC_HIDDEN ibcomm_status_t ibc_sig_end(struct ibc_sig *s);

#endif
