/*
 * The RDMA device (rdma_int.h): opened once per process for a setting of IBCOMM_DEVICE,
 * port and GID (the choice is rdma_choice.c's, the same ibcomm_ping reports), its context
 * and protection domain shared, reference counted, by every communicator that asks for the
 * same; the memory they pin counted once per device against the locked-memory limit; and
 * the ring geometry (chunk, slots, queue depths) within the memory budget.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/resource.h>

#include "rdma_info.h"
#include "rdma_int.h"

/* ---- opening the device, the ring geometry ---- */

/*
 * Opens the device and port the RDMA transport uses: ibc_rdma_choose (rdma_choice.c) decides
 * on the host as ibc_rdma_info_query reads it, the same decision ibcomm_ping reports. On
 * Ethernet (RoCE) it also sets the GID (t->gid_index, t->gid).
 */
static ibcomm_status_t open_device(struct rdma_tp *t, struct ibv_port_attr *pa)
{
	struct ibcomm *comm = t->base.comm;
	ibc_rdma_sys_t *sys = calloc(1, sizeof(*sys));
	ibc_rdma_choice_t c;
	const char *name;
	char why[400];
	ibcomm_status_t st;
	int n = 0;

	if (!sys)
		return ibc_err(comm, IBCOMM_ERR_NOMEM, "rank %d: out of memory listing RDMA devices", comm->rank);
	ibc_rdma_info_query(sys, comm->set.gid_index);
	st = ibc_rdma_choose(sys, comm->set.device, comm->set.ib_port, comm->set.gid_index, &c, why, sizeof(why));
	if (st) {
		free(sys);
		return ibc_err(comm, st, "rank %d: %s", comm->rank, why);
	}
	name = sys->devs[c.dev].name;
	t->devs = ibv_get_device_list(&n);
	for (int i = 0; t->devs && i < n && !t->ctx; i++)
		if (!strcmp(ibv_get_device_name(t->devs[i]), name))
			t->ctx = ibv_open_device(t->devs[i]);
	if (!t->ctx) {
		st = ibc_err(comm, IBCOMM_ERR_SYSTEM, "rank %d: cannot open RDMA device %s: %s", comm->rank, name,
			     strerror(errno ? errno : ENODEV));
		free(sys);
		return st;
	}
	if (ibv_query_port(t->ctx, (uint8_t)c.port, pa) || pa->state != IBV_PORT_ACTIVE) {
		st = ibc_err(comm, IBCOMM_ERR_UNSUPPORTED, "rank %d: port %d of RDMA device %s went down", comm->rank,
			     c.port, name);
		free(sys);
		return st;
	}
	t->port = c.port;
	snprintf(t->devname, sizeof(t->devname), "%s:%d", name, t->port);
	if (c.link_layer == IBC_RDMA_LL_ETH) {
		t->gid_index = c.gid_index;
		memcpy(t->gid, c.gid, 16);
	}
	free(sys);
	return IBCOMM_OK;
}

/*
 * Sizes the rings: RDMA_NSLOTS x RDMA_MAX_CHUNK, smaller chunks for large communicators
 * (within RDMA_MEM_BUDGET and IBCOMM_MEM_LIMIT, or a mix part's share of it); IBCOMM_RDMA_CHUNK /
 * IBCOMM_RDMA_SLOTS (tuning, tests) set them as given, and fail when over it. Peer memory is
 * registered per peer talked to: a mix's network part counts the other hosts' ranks only.
 */
ibcomm_status_t ibc_rdma_choose_geometry(struct rdma_tp *t)
{
	struct ibcomm *comm = t->base.comm;
	size_t npeers = (size_t)ibc_tp_npeers(comm); /* a mix's network part: the other hosts' ranks */
	unsigned long chunk, nslots, dflt_chunk = RDMA_MAX_CHUNK, dflt_slots = RDMA_NSLOTS;
	uint64_t budget = IBC_MIN(RDMA_MEM_BUDGET, ibc_mem_limit(comm));
	char how[200];
	ibcomm_status_t st;

	while (dflt_chunk > RDMA_MIN_CHUNK &&
	       npeers * 2 * IBC_NCHAN * dflt_slots * (dflt_chunk + IBC_RDMA_HDR) > budget)
		dflt_chunk /= 2;
	while (dflt_slots > 2 && npeers * 2 * IBC_NCHAN * dflt_slots * (dflt_chunk + IBC_RDMA_HDR) > budget)
		dflt_slots /= 2;
	/* IBCOMM_RDMA_CHUNK / IBCOMM_RDMA_SLOTS: read and checked by config.c */
	chunk = comm->set.rdma_chunk ? comm->set.rdma_chunk : dflt_chunk;
	nslots = comm->set.rdma_slots ? comm->set.rdma_slots : dflt_slots;
	chunk = (chunk + 63) & ~63ul; /* slots stay 64-byte aligned */
	/* rings and staging (one of each per peer), and the credit words: all registered (pinned).
	 * Regions are made lazily, per peer talked to: this is the worst case, every peer connected. */
	snprintf(how, sizeof(how), "%zu peers x 2 (rings, staging) x %d channels x %lu slots x %lu bytes, + credits",
		 npeers, IBC_NCHAN, nslots, chunk + IBC_RDMA_HDR);
	st = ibc_mem_check(comm, "RDMA", 2 * npeers * IBC_NCHAN * nslots * (chunk + IBC_RDMA_HDR) + 2 * npeers * 64,
			   how, "IBCOMM_RDMA_CHUNK or IBCOMM_RDMA_SLOTS", comm->set.rdma_chunk || comm->set.rdma_slots);
	if (st)
		return st;
	t->base.max_chunk = chunk;
	t->base.nslots = (unsigned)nslots;
	t->stride = chunk + IBC_RDMA_HDR;
	t->per_peer_ring = (size_t)IBC_NCHAN * nslots * t->stride;
	t->off_stage = npeers * t->per_peer_ring;
	t->off_cred_in = 2 * t->off_stage;
	t->off_cred_out = t->off_cred_in + npeers * 64;
	t->memlen = t->off_cred_out + npeers * 64;
	t->sig_every = nslots / 2 ? nslots / 2 : 1; /* <= nslots: see ibc_rdma_put() staging reuse */
	t->credit_batch = nslots / 2 ? nslots / 2 : 1;
	t->sq_depth = 4 * nslots + 2 * t->sig_every;
	t->rq_depth = 4 * nslots + 8;
	return IBCOMM_OK;
}

/* ---- the shared device (rdma.c, top) ---- */

static pthread_mutex_t devs_lock = PTHREAD_MUTEX_INITIALIZER;
static struct rdma_dev *devs_open; /* under devs_lock */

static void dev_copy(struct rdma_tp *t, const struct rdma_dev *d)
{
	t->dev = (struct rdma_dev *)d;
	t->ctx = d->ctx;
	t->pd = d->pd;
	snprintf(t->devname, sizeof(t->devname), "%s", d->devname);
	t->port = d->port;
	t->link_layer = d->link_layer;
	t->lid = d->lid;
	t->gid_index = d->gid_index;
	memcpy(t->gid, d->gid, 16);
	t->active_mtu = d->active_mtu;
}

/*
 * Takes a reference on the process's open device for comm's settings (IBCOMM_DEVICE, port,
 * GID index), opening it (device, port, GID, PD) when there is none.
 */
ibcomm_status_t ibc_rdma_dev_acquire(struct rdma_tp *t)
{
	struct ibcomm *comm = t->base.comm;
	struct ibv_port_attr pa;
	struct rdma_dev *d;
	ibcomm_status_t st;

	pthread_mutex_lock(&devs_lock);
	for (d = devs_open; d; d = d->next)
		if (d->pid == getpid() && strcmp(d->want_dev, comm->set.device) == 0 &&
		    d->want_port == comm->set.ib_port && d->want_gid == comm->set.gid_index)
			break;
	if (d) {
		d->refs++;
		pthread_mutex_unlock(&devs_lock);
		dev_copy(t, d);
		return IBCOMM_OK;
	}
	st = open_device(t, &pa);
	if (st)
		goto out;
	t->link_layer = pa.link_layer == IBV_LINK_LAYER_INFINIBAND ? IBC_RDMA_LL_IB : IBC_RDMA_LL_ETH;
	t->lid = pa.lid;
	t->active_mtu = pa.active_mtu;
	if (t->link_layer != IBC_RDMA_LL_ETH) { /* RoCE: open_device chose the GID */
		union ibv_gid g;

		/* InfiniBand: addressed by LID, no GRH; the GID is only reported. */
		t->gid_index = comm->set.gid_index >= 0 ? comm->set.gid_index : 0;
		if (ibv_query_gid(t->ctx, (uint8_t)t->port, t->gid_index, &g) == 0)
			memcpy(t->gid, g.raw, 16);
	}
	t->pd = ibv_alloc_pd(t->ctx);
	if (!t->pd) {
		st = ibc_err(comm, IBCOMM_ERR_TRANSPORT, "rank %d: ibv_alloc_pd on %s failed: %s", comm->rank, t->devname,
			     strerror(errno));
		goto out;
	}
	d = calloc(1, sizeof(*d));
	if (!d) {
		st = ibc_err(comm, IBCOMM_ERR_NOMEM, "rank %d: out of memory opening %s", comm->rank, t->devname);
		goto out;
	}
	d->pid = getpid();
	d->refs = 1;
	snprintf(d->want_dev, sizeof(d->want_dev), "%s", comm->set.device);
	d->want_port = comm->set.ib_port;
	d->want_gid = comm->set.gid_index;
	d->devs = t->devs;
	d->ctx = t->ctx;
	d->pd = t->pd;
	snprintf(d->devname, sizeof(d->devname), "%s", t->devname);
	d->port = t->port;
	d->link_layer = t->link_layer;
	d->lid = t->lid;
	d->gid_index = t->gid_index;
	memcpy(d->gid, t->gid, 16);
	d->active_mtu = t->active_mtu;
	atomic_init(&d->pinned, 0);
	d->next = devs_open;
	devs_open = d;
	t->devs = NULL; /* d owns them now */
	t->dev = d;
out:
	pthread_mutex_unlock(&devs_lock);
	return st;
}

void ibc_rdma_dev_release(struct rdma_dev *d)
{
	struct rdma_dev **pp;

	pthread_mutex_lock(&devs_lock);
	if (--d->refs > 0) {
		pthread_mutex_unlock(&devs_lock);
		return;
	}
	for (pp = &devs_open; *pp; pp = &(*pp)->next)
		if (*pp == d) {
			*pp = d->next;
			break;
		}
	pthread_mutex_unlock(&devs_lock);
	ibv_dealloc_pd(d->pd);
	ibv_close_device(d->ctx);
	ibv_free_device_list(d->devs);
	free(d);
}

/*
 * Counts bytes this transport is about to pin in the device's total (every communicator on
 * it), refused with a clear message when the total would pass the locked-memory limit.
 */
ibcomm_status_t ibc_rdma_pin_account(struct rdma_tp *t, size_t bytes, const char *what)
{
	struct ibcomm *comm = t->base.comm;
	size_t before = atomic_fetch_add(&t->dev->pinned, bytes);
	struct rlimit rl;

	if (geteuid() != 0 && getrlimit(RLIMIT_MEMLOCK, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
	    before + bytes > rl.rlim_cur) {
		atomic_fetch_sub(&t->dev->pinned, bytes);
		return ibc_err(comm, IBCOMM_ERR_NOMEM,
			       "rank %d: %s needs %zu KiB of locked memory on %s, where the communicators of this process already pin %zu KiB, and the limit is %llu KiB (raise it: ulimit -l unlimited, or memlock in /etc/security/limits.conf)",
			       comm->rank, what, bytes / 1024, t->devname, before / 1024,
			       (unsigned long long)rl.rlim_cur / 1024);
	}
	return IBCOMM_OK;
}

