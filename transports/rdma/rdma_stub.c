/*
 * Built instead of rdma.c and its companions (rdma_int.h) when rdma-core is absent (or before
 * the RDMA transport exists).
 */
#include "ibc.h"

static ibcomm_status_t rdma_stub_create(struct ibcomm *comm, ibc_tp_t **tp)
{
	return ibc_err(comm, IBCOMM_ERR_UNSUPPORTED,
		       "rank %d: the RDMA transport is not built into this libibcomm (rdma-core was not found at build time); use IBCOMM_TRANSPORT=tcp",
		       comm->rank);
}

static ibcomm_status_t rdma_stub_probe(struct ibcomm *comm)
{
	return rdma_stub_create(comm, NULL);
}

const struct ibc_tp_ops ibc_rdma_ops = {
	.name = "rdma",
	.probe = rdma_stub_probe,
	.create = rdma_stub_create,
};
