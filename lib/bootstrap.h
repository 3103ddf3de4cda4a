/*
 * What the communicator, the transports and the algorithms need from the job's bootstrap:
 * publish and look up small values, an all-gather of small blobs among the ranks, liveness
 * (a rank died or left: known at once), cancellation (abort, deadlines), and dropping a
 * communicator's keys once nobody needs them. Nothing else reaches the rendezvous: the rank-0
 * TCP rendezvous (boot_rdv.c) is one implementation; tests substitute their own
 * (tests/fake_rdv.c) through this table.
 *
 * One bootstrap is shared by the communicators of a job (reference counted) and may be used
 * by several threads. Keys are strings of 1..IBC_BOOT_MAX_KEY bytes, values at most
 * IBC_BOOT_MAX_VAL bytes. A communicator's keys start with its id and '/' (its namespace).
 * Ranks are world ranks (the job's). Errors come back as a status and a message in err that
 * names the rank and the key.
 */
#ifndef IBC_BOOTSTRAP_H
#define IBC_BOOTSTRAP_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include "ibcomm.h"
#include "transport.h"

#define IBC_BOOT_MAX_KEY 256u
#define IBC_BOOT_MAX_VAL 65536u

typedef struct ibc_boot ibc_boot_t;
struct ibc_settings;

struct ibc_boot_ops {
	const char *name; /* "rdv", "fake" */
	/* Publishes key = val[0..len) (replacing an older value); returns once it is stored. */
	ibcomm_status_t (*put)(ibc_boot_t *b, const char *key, const void *val, size_t len, char *err, size_t errlen);
	/*
	 * Waits until key exists (or dl passes: IBCOMM_ERR_TIMEOUT); copies at most cap bytes into
	 * val and sets *len (may be NULL) to the value's length. IBCOMM_ERR_ABORTED once *cancel
	 * (may be NULL) is non-zero (interrupt() wakes it); IBCOMM_ERR_PEER or _RENDEZVOUS when
	 * the store itself is gone (rank 0 left or died), with err naming rank 0.
	 */
	ibcomm_status_t (*get)(ibc_boot_t *b, const char *key, void *val, size_t cap, size_t *len, ibc_deadline_t dl,
			       const atomic_int *cancel, char *err, size_t errlen);
	/*
	 * This rank is done with namespace ns ("<id>/"): once nmembers ranks have said so, its keys
	 * are deleted. Never blocks (communicator destroy is not collective); best effort.
	 */
	void (*drop)(ibc_boot_t *b, const char *ns, int nmembers);
	/* Liveness: a descriptor to poll() for notices (POLLIN), or -1 when there is none. */
	int (*fd)(ibc_boot_t *b);
	/* Processes notices without blocking (reads only when `readable`); a counter that grows
	 * whenever a rank is found dead (compare it: cheap). */
	unsigned (*poll)(ibc_boot_t *b, bool readable);
	/* Whether world rank `rank` is known dead (or gone); if so, why names it. */
	bool (*dead)(ibc_boot_t *b, int rank, char *why, size_t whylen);
	/* Cancellation: wakes the threads blocked in get() (they check their cancel flags).
	 * Async-signal-safe. */
	void (*interrupt)(ibc_boot_t *b);
	/* Lifetime: another communicator holds it; drops a hold (`abandon`: a failed or aborted
	 * communicator's: when it is the last hold, this rank leaves without a goodbye, so the
	 * others hear it as dead; before that it changes nothing). */
	void (*ref)(ibc_boot_t *b);
	void (*unref)(ibc_boot_t *b, bool abandon);
};

/* Common head of every bootstrap (first member of the implementation's state). */
struct ibc_boot {
	const struct ibc_boot_ops *ops;
};

/* The rank-0 TCP rendezvous: rank 0 serves it at s->root (or on s->listen_fd); every rank joins. */
ibcomm_status_t ibc_boot_rdv_open(const struct ibc_settings *s, ibc_deadline_t dl, ibc_boot_t **b, char *err,
				  size_t errlen) __attribute__((visibility("hidden")));

/*
 * All-gather of small blobs through put/get: this rank (of n) publishes mine[0..len) under
 * "<ns>/<rank>" and reads every rank's into all[r * stride ..], each at most stride bytes,
 * lens[r] its length. Also a barrier (len 0).
 */
ibcomm_status_t ibc_boot_allgather(ibc_boot_t *b, const char *ns, int rank, int n, const void *mine, size_t len,
				   void *all, size_t stride, size_t *lens, ibc_deadline_t dl, const atomic_int *cancel,
				   char *err, size_t errlen) __attribute__((visibility("hidden")));

static inline ibcomm_status_t ibc_boot_put(ibc_boot_t *b, const char *key, const void *val, size_t len, char *err,
					   size_t errlen)
{
	return b->ops->put(b, key, val, len, err, errlen);
}
static inline ibcomm_status_t ibc_boot_get(ibc_boot_t *b, const char *key, void *val, size_t cap, size_t *len,
					   ibc_deadline_t dl, const atomic_int *cancel, char *err, size_t errlen)
{
	return b->ops->get(b, key, val, cap, len, dl, cancel, err, errlen);
}
static inline int ibc_boot_fd(ibc_boot_t *b)
{
	return b->ops->fd(b);
}
static inline unsigned ibc_boot_poll(ibc_boot_t *b, bool readable)
{
	return b->ops->poll(b, readable);
}
static inline bool ibc_boot_dead(ibc_boot_t *b, int rank, char *why, size_t whylen)
{
	return b->ops->dead(b, rank, why, whylen);
}

#endif
