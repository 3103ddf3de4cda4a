/*
 * What coll.c (the collectives with one count) shares with vcoll.c (those with per-rank
 * counts): the checks every call makes, the call's arguments, and what a failure does to the
 * communicator.
 */
#ifndef IBC_COLL_H
#define IBC_COLL_H

#include "ibc.h"
#include "algo/algo.h"

/* comm usable (not NULL, failed or aborted) and dtype valid; *esz its size. */
IBC_HIDDEN ibcomm_status_t ibc_coll_check_base(struct ibcomm *comm, const char *fn, ibcomm_dtype_t dtype, size_t *esz);
/* IBCOMM_ERR_INVALID when [send, send+slen) and [recv, recv+rlen) share a byte. */
IBC_HIDDEN ibcomm_status_t ibc_coll_check_overlap(struct ibcomm *comm, const char *fn, const void *send, size_t slen,
						  const void *recv, size_t rlen);
/* a for one call of coll on comm: the next sequence number and tag, the call's deadline. */
IBC_HIDDEN void ibc_coll_args_init(struct ibc_coll_args *a, struct ibcomm *comm, enum ibc_coll coll,
				   const void *sendbuf, void *recvbuf, size_t count, ibcomm_dtype_t dtype, size_t esz);
/* A peer or transport failure makes comm unusable; a timeout names the ranks not in the call. */
IBC_HIDDEN ibcomm_status_t ibc_coll_settle(struct ibc_coll_args *a, ibcomm_status_t st);

#endif
