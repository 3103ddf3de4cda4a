/*
 * Registration cache: the memory a communicator registered (ibcomm_register), per
 * communicator, with a reference count per range and the transport's handle.
 *
 * A user handle (ibcomm_mr_t *) is a token, never a pointer: a magic and a process-wide
 * counter. It is looked up in the communicator's cache, so a stale or foreign handle is
 * reported (IBCOMM_ERR_INVALID), never dereferenced.
 *
 * Memory freed or unmapped while registered is the caller's error (the contract in
 * include/ibcomm.h: deregister first). The cache does not watch the address space: an entry
 * lives from ibcomm_register to the last ibcomm_deregister of it (or ibcomm_destroy).
 */
#ifndef IBC_REGCACHE_H
#define IBC_REGCACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ibc.h"

/* What a handle refers to (tests, diagnostics). */
typedef struct ibc_reg_info {
	uintptr_t start, end; /* the entry's range (the first registration that made it) */
	unsigned refs;        /* handles sharing the entry */
	void *handle;         /* the transport's (NULL: a transport without reg) */
} ibc_reg_info_t;

/*
 * Registers [addr, addr+len) on comm: reuses a valid entry covering the range (one more
 * reference) or makes a new one (the transport's reg(), if it has one). *token is the user's
 * handle. len 0 gives a handle of nothing.
 */
IBC_HIDDEN ibcomm_status_t ibc_regcache_add(struct ibcomm *comm, void *addr, size_t len, uintptr_t *token);
/* Drops token's reference; the last one deregisters the entry. Unknown: IBCOMM_ERR_INVALID. */
IBC_HIDDEN ibcomm_status_t ibc_regcache_remove(struct ibcomm *comm, uintptr_t token);
/* Deregisters everything comm still holds and frees its cache (ibcomm_destroy). */
IBC_HIDDEN void ibc_regcache_destroy(struct ibcomm *comm);
/* The transport handle of an entry of comm covering [addr, addr+len), or NULL. */
IBC_HIDDEN void *ibc_regcache_find(struct ibcomm *comm, const void *addr, size_t len);
/* Fills *info for token; false when comm holds no such handle. */
IBC_HIDDEN bool ibc_regcache_info(struct ibcomm *comm, uintptr_t token, ibc_reg_info_t *info);
/* Entries alive in the process, all communicators (tests: nothing is left behind). */
IBC_HIDDEN size_t ibc_regcache_live(void);

#endif
