/*
 * The shared-memory transport's private state, shared by its files:
 *   shm.c         the ops: put, get, release, wait, interrupt; liveness
 *   shm_create.c  geometry, create (segments made, exchanged, mapped, unlinked), destroy
 *   shm_seg.c     segment layout, names, header checks (shm.h)
 */
#ifndef IBC_SHM_INT_H
#define IBC_SHM_INT_H

#include <stdbool.h>
#include <sys/types.h>

#include "shm.h"

struct shm_peer {
	struct ibc_shm_seg seg;       /* the peer's segment (for this rank: a copy of shm.mine) */
	uint64_t head[IBC_NCHAN];     /* chunks this rank put into the peer's ring */
	uint64_t got[IBC_NCHAN];      /* chunks of the peer's ring in our segment handed out by get() */
	uint64_t rel[IBC_NCHAN];      /* of those, released */
	pid_t pid;                    /* the peer's process, when in our pid namespace; else 0 */
	bool dead;
	ibcomm_status_t dead_st;
	char why[160];
};

struct shm {
	ibc_tp_t tp; /* first */
	struct ibcomm *comm;
	struct ibc_shm_seg mine;
	char name[IBC_SHM_NAME_MAX];
	struct shm_peer *peers;
	unsigned seen;     /* our bell's value when wait() last returned */
	struct ibc_notices notes; /* members the rendezvous reported dead */
};

/* ---- shm.c ---- */
IBC_HIDDEN void ibc_shm_bell_ring(struct ibc_shm_live *l);
/* Whether process pid (in our pid namespace) is gone: no such process, or a zombie. */
IBC_HIDDEN bool ibc_shm_pid_gone(pid_t pid);

#endif
