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
	int ring;                     /* index of the peer's ring in a segment; -1: not served here */
	int bell_fd;                  /* the peer's doorbell (mix only), opened O_RDWR; else -1 */
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
	int bell_fd;       /* our doorbell FIFO (mix only), O_RDWR; else -1 */
	char bell_path[IBC_SHM_NAME_MAX + 16];
	struct ibc_notices notes; /* members the rendezvous reported dead */
};

/* ---- shm.c ---- */
/* Bumps the bell of l's owner and wakes it: FUTEX_WAKE, or a byte into its doorbell bell_fd
 * (-1: none) when it sleeps in a mix wait (sleeping == SHM_SLEEP_FD). */
IBC_HIDDEN void ibc_shm_bell_ring(struct ibc_shm_live *l, int bell_fd);
#define SHM_SLEEP_FUTEX 1u
#define SHM_SLEEP_FD 2u
/* Whether process pid (in our pid namespace) is gone: no such process, or a zombie. */
IBC_HIDDEN bool ibc_shm_pid_gone(pid_t pid);

#endif
