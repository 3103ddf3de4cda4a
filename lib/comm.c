/*
 * The communicator's life cycle: init (settings, rendezvous, transport), split and dup
 * (collective over the parent), abort, destroy; memory registration handles.
 *
 * Every communicator of a job shares one bootstrap (bootstrap.h, reference counted). A
 * communicator's id names its keys in the bootstrap: "0" for the first, then
 * "<parent id>.<n>.<color>" for the n-th split or dup of the parent, so the ranks of a child
 * agree on its id without talking.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ibc.h"
#include "regcache.h"

/* Creates comm's transport with ops; on failure comm->err says why. */
static ibcomm_status_t tp_create(struct ibcomm *comm, const struct ibc_tp_ops *ops)
{
	ibc_tp_t *tp = NULL;
	ibcomm_status_t st;

	comm->err[0] = '\0';
	st = ops->create(comm, &tp);
	if (st) {
		if (!comm->err[0])
			ibc_err(comm, st, "rank %d: cannot create the %s transport", comm->rank, ops->name);
		return st;
	}
	comm->tp = tp;
	return IBCOMM_OK;
}

/*
 * IBCOMM_TRANSPORT=auto: every rank probes for a usable RDMA device and posts the answer
 * (a byte, then why not) to the rendezvous; all ranks read all answers, so they all pick
 * RDMA, or all TCP, and say why. Returns the first rank that cannot use RDMA, or -1.
 */
static ibcomm_status_t agree_rdma(struct ibcomm *comm, int *first_bad, char *why, size_t whylen)
{
	ibc_deadline_t dl = ibc_deadline(comm->set.timeout_ms);
	char key[sizeof(comm->id) + 32], val[IBC_ERRLEN + 1], err[IBC_ERRLEN];
	ibcomm_status_t st;
	size_t len;

	comm->err[0] = '\0';
	st = ibc_rdma_ops.probe(comm);
	val[0] = st == IBCOMM_OK ? '1' : '0';
	len = 1 + strlen(strcpy(val + 1, comm->err));
	if (st == IBCOMM_ERR_INVALID) /* a setting names something that is not there */
		ibc_cwarn(comm, "rank %d: IBCOMM_TRANSPORT=auto: cannot use RDMA as configured: %s", comm->rank, comm->err);
	comm->err[0] = '\0';
	snprintf(key, sizeof(key), "%s/tp-auto/%d", comm->id, comm->rank);
	st = ibc_boot_put(comm->boot, key, val, len, err, sizeof(err));
	if (st)
		return ibc_err(comm, st, "rank %d: IBCOMM_TRANSPORT=auto: %s", comm->rank, err);
	*first_bad = -1;
	for (int r = 0; r < comm->size; r++) {
		snprintf(key, sizeof(key), "%s/tp-auto/%d", comm->id, r);
		st = ibc_boot_get(comm->boot, key, val, sizeof(val) - 1, &len, dl, NULL, err, sizeof(err));
		if (st)
			return ibc_err(comm, st, "rank %d: IBCOMM_TRANSPORT=auto: waiting for rank %d's answer: %s",
				       comm->rank, r, err);
		val[len] = '\0';
		if (len < 1 || (val[0] != '0' && val[0] != '1'))
			return ibc_err(comm, IBCOMM_ERR_RENDEZVOUS,
				       "rank %d: IBCOMM_TRANSPORT=auto: malformed answer from rank %d", comm->rank, r);
		if (val[0] == '0' && *first_bad < 0) {
			*first_bad = r;
			snprintf(why, whylen, "%s", len > 1 ? val + 1 : "no reason given");
		}
	}
	return IBCOMM_OK;
}

static ibcomm_status_t comm_transport(struct ibcomm *comm)
{
	char why[IBC_ERRLEN], others[200];
	ibcomm_status_t st;
	int bad = -1, nother;
	bool mix;

	switch (comm->set.transport) {
	case IBC_TP_TCP:
		return tp_create(comm, &ibc_tcp_ops);
	case IBC_TP_RDMA:
		return tp_create(comm, &ibc_rdma_ops);
	case IBC_TP_SHM:
	case IBC_TP_AUTO:
		break;
	}
	/* shared memory when every rank is on this host (the host map: what the ranks exchanged) */
	nother = ibc_hosts_elsewhere(comm, others, sizeof(others));
	if (comm->set.transport == IBC_TP_SHM && nother) {
		/* every rank fails alike; none leaves (rank 0 takes the rendezvous along) before all have
		 * read every identity: the barrier's own answer does not matter */
		char ns[sizeof(comm->id) + 16];

		snprintf(ns, sizeof(ns), "%s/host-read", comm->id);
		(void)ibc_boot_allgather(comm->boot, ns, comm->rank, comm->size, "", 0, NULL, 0, NULL,
				   ibc_deadline(comm->set.timeout_ms), &comm->aborted, why, sizeof(why));
		return ibc_err(comm, IBCOMM_ERR_INVALID,
			       "rank %d: IBCOMM_TRANSPORT=shm needs every rank on one host, but %d rank%s (%s) %s on another host (host name, boot id or IPC namespace differ, or /dev/shm is not writable there)",
			       comm->rank, nother, nother == 1 ? "" : "s", others, nother == 1 ? "is" : "are");
	}
	if (!nother) {
		if (comm->set.transport == IBC_TP_AUTO)
			ibc_cinfo(comm, "rank %d: IBCOMM_TRANSPORT=auto: every rank is on this host: using shared memory",
				  comm->rank);
		return tp_create(comm, &ibc_shm_ops);
	}
	st = agree_rdma(comm, &bad, why, sizeof(why));
	if (st)
		return st;
	/* some host has several ranks: shared memory among them, the network between hosts */
	mix = comm->hosts.nhosts < comm->size;
	if (bad < 0) {
		ibc_cinfo(comm, "rank %d: IBCOMM_TRANSPORT=auto: every rank has a usable RDMA device: using RDMA%s", comm->rank,
			  mix ? " between hosts, shared memory within them" : "");
		return tp_create(comm, mix ? &ibc_mix_rdma_ops : &ibc_rdma_ops);
	}
	ibc_cinfo(comm, "rank %d: IBCOMM_TRANSPORT=auto: using TCP%s: %s%s", comm->rank,
		  mix ? " between hosts, shared memory within them" : "", bad == comm->rank ? "" : "another rank cannot use RDMA: ",
		  why);
	return tp_create(comm, mix ? &ibc_mix_tcp_ops : &ibc_tcp_ops);
}

/*
 * Drops comm's hold on the bootstrap, and its keys once every member is done with them; a
 * broken job does not wait for its other ranks. Never waits for another rank.
 */
static void comm_release_boot(struct ibcomm *comm)
{
	char ns[sizeof(comm->id) + 1];
	bool broken = atomic_load(&comm->aborted) || comm->failed;

	snprintf(ns, sizeof(ns), "%s/", comm->id);
	if (!broken)
		comm->boot->ops->drop(comm->boot, ns, comm->size);
	comm->boot->ops->unref(comm->boot, broken);
}

ibcomm_status_t ibcomm_init(const ibcomm_config_t *cfg, ibcomm_t **comm)
{
	return ibc_comm_init(cfg, -1, comm);
}

ibcomm_status_t ibc_comm_init(const ibcomm_config_t *cfg, int listen_fd, ibcomm_t **comm)
{
	char err[IBC_ERRLEN];
	struct ibcomm *c;
	ibcomm_status_t st;

	if (!comm) {
		st = ibc_err_thread(IBCOMM_ERR_INVALID, "ibcomm_init: the output argument comm is NULL");
		goto err_close;
	}
	c = calloc(1, sizeof(*c));
	if (!c) {
		st = ibc_err_thread(IBCOMM_ERR_NOMEM, "ibcomm_init: out of memory");
		goto err_close;
	}
	atomic_init(&c->aborted, 0);

	st = ibc_settings_load(cfg, &c->set, err, sizeof(err));
	if (st) {
		ibc_err_thread(st, "ibcomm_init: %s", err);
		free(c);
		goto err_close;
	}
	if (listen_fd >= 0) {
		c->set.listen_fd = listen_fd;
		listen_fd = -1;
	}
	c->rank = c->set.rank;
	c->size = c->set.nranks;
	snprintf(c->id, sizeof(c->id), "0");

	st = ibc_boot_rdv_open(&c->set, ibc_deadline(c->set.timeout_ms), &c->boot, err, sizeof(err));
	c->set.listen_fd = -1; /* the rendezvous server's now (split and dup copy the settings) */
	if (st) {
		ibc_err_thread(st, "ibcomm_init: %s", err);
		goto err_free;
	}
	st = ibc_hosts_init(c);
	if (!st)
		st = comm_transport(c);
	if (st)
		goto err_rdv;
	ibc_cinfo(c, "rank %d of %d: communicator ready (transport %s, rendezvous %s)", c->rank, c->size,
		 c->tp->ops->name, c->set.root);
	*comm = c;
	return IBCOMM_OK;

err_rdv:
	c->boot->ops->unref(c->boot, true);
err_free:
	ibc_hosts_free(&c->hosts);
	free(c);
	return st;
err_close:
	if (listen_fd >= 0)
		close(listen_fd);
	return st;
}

ibcomm_status_t ibcomm_init_env(ibcomm_t **comm)
{
	return ibcomm_init(NULL, comm);
}

int ibcomm_rank(const ibcomm_t *comm)
{
	return comm ? comm->rank : -1;
}

int ibcomm_size(const ibcomm_t *comm)
{
	return comm ? comm->size : -1;
}

const char *ibcomm_transport(const ibcomm_t *comm)
{
	return comm && comm->tp ? comm->tp->ops->name : "none";
}

ibcomm_status_t ibcomm_abort(ibcomm_t *comm)
{
	if (!comm)
		return ibc_err_thread(IBCOMM_ERR_INVALID, "ibcomm_abort: comm is NULL");
	atomic_store(&comm->aborted, 1);
	if (comm->tp && comm->tp->ops->interrupt)
		comm->tp->ops->interrupt(comm->tp);
	if (comm->boot) /* a call blocked in the bootstrap (a lazy connect looking up an address) */
		comm->boot->ops->interrupt(comm->boot);
	return IBCOMM_OK;
}

ibcomm_status_t ibcomm_destroy(ibcomm_t *comm)
{
	if (!comm)
		return IBCOMM_OK;
	ibc_nbc_destroy(comm); /* pending requests fail, the progress thread stops: the transport is ours */
	ibc_regcache_destroy(comm); /* the transport's registrations go before the transport */
	if (comm->tp)
		comm->tp->ops->destroy(comm->tp);
	ibc_p2p_cleanup(comm);
	if (comm->boot)
		comm_release_boot(comm);
	free(comm->world);
	ibc_hosts_free(&comm->hosts);
	free(comm);
	return IBCOMM_OK;
}

ibcomm_status_t ibcomm_split(ibcomm_t *comm, int color, int key, ibcomm_t **newcomm)
{
	int32_t mine[2] = { color < 0 ? -1 : color, key };
	int32_t *all;
	int *world, *host_key;
	struct ibcomm *c;
	ibcomm_status_t st;
	uint32_t idx;
	int newrank = 0, newsize = 0, n;

	if (!comm)
		return ibc_err_thread(IBCOMM_ERR_INVALID, "ibcomm_split: comm is NULL");
	if (!newcomm)
		return ibc_err(comm, IBCOMM_ERR_INVALID, "rank %d: ibcomm_split: newcomm is NULL", comm->rank);
	all = malloc((size_t)comm->size * sizeof(mine));
	if (!all)
		return ibc_err(comm, IBCOMM_ERR_NOMEM, "rank %d: ibcomm_split: out of memory for %d ranks", comm->rank,
			       comm->size);
	/* every rank, color < 0 included, learns every (color, key) */
	st = ibcomm_allgather(comm, mine, all, 2, IBCOMM_INT32);
	if (st)
		goto err_free;
	idx = comm->nchildren++;
	if (color < 0) {
		free(all);
		*newcomm = NULL;
		return IBCOMM_OK;
	}
	for (int r = 0; r < comm->size; r++) {
		int32_t kr = all[2 * r + 1];

		if (all[2 * r] != color)
			continue;
		newsize++;
		if (kr < key || (kr == key && r < comm->rank))
			newrank++;
	}
	/* the world rank of every member, in the child's order: failure notices name world ranks;
	 * and its host in the parent's map, from which the child's map follows without talking */
	world = malloc((size_t)newsize * sizeof(*world));
	host_key = malloc((size_t)newsize * sizeof(*host_key));
	if (!world || !host_key) {
		free(world);
		free(host_key);
		st = ibc_err(comm, IBCOMM_ERR_NOMEM, "rank %d: ibcomm_split: out of memory", comm->rank);
		goto err_free;
	}
	for (int r = 0; r < comm->size; r++) {
		int32_t kr = all[2 * r + 1];
		int nr = 0;

		if (all[2 * r] != color)
			continue;
		for (int q = 0; q < comm->size; q++)
			if (all[2 * q] == color && (all[2 * q + 1] < kr || (all[2 * q + 1] == kr && q < r)))
				nr++;
		world[nr] = ibc_world_rank(comm, r);
		host_key[nr] = comm->hosts.host_of ? comm->hosts.host_of[r] : 0;
	}
	free(all);

	c = calloc(1, sizeof(*c));
	if (!c) {
		free(world);
		free(host_key);
		return ibc_err(comm, IBCOMM_ERR_NOMEM, "rank %d: ibcomm_split: out of memory", comm->rank);
	}
	c->world = world;
	atomic_init(&c->aborted, 0);
	c->set = comm->set;
	c->set.rank = c->rank = newrank;
	c->set.nranks = c->size = newsize;
	n = snprintf(c->id, sizeof(c->id), "%s.%u.%d", comm->id, idx, color);
	if (n < 0 || (size_t)n >= sizeof(c->id)) {
		st = ibc_err(comm, IBCOMM_ERR_INVALID,
			     "rank %d: ibcomm_split: communicators nested too deeply (the id of the child of '%s' exceeds %zu bytes)",
			     comm->rank, comm->id, sizeof(c->id) - 1);
		goto err_child;
	}
	st = ibc_hosts_set(c, host_key);
	if (st) {
		memcpy(comm->err, c->err, sizeof(comm->err));
		goto err_child;
	}
	c->boot = comm->boot;
	c->boot->ops->ref(c->boot);
	/* the parent's transport kind: the ranks already agree on it */
	st = tp_create(c, comm->tp->ops);
	if (st) {
		memcpy(comm->err, c->err, sizeof(comm->err));
		goto err_rdv;
	}
	ibc_ctrace(comm, "rank %d: split color %d key %d: rank %d of %d in communicator %s", comm->rank, color, key,
		  c->rank, c->size, c->id);
	free(host_key);
	*newcomm = c;
	return IBCOMM_OK;

err_rdv:
	c->boot->ops->unref(c->boot, false);
err_child:
	free(host_key);
	free(c->world);
	ibc_hosts_free(&c->hosts);
	free(c);
	return st;
err_free:
	free(all);
	return st;
}

ibcomm_status_t ibcomm_dup(ibcomm_t *comm, ibcomm_t **newcomm)
{
	if (!comm)
		return ibc_err_thread(IBCOMM_ERR_INVALID, "ibcomm_dup: comm is NULL");
	return ibcomm_split(comm, 0, comm->rank, newcomm);
}

/* A handle is a token of comm's registration cache (regcache.c), never dereferenced. */
struct reg_args {
	void *buf;
	size_t len;
	uintptr_t token;
};

/* Registration changes the transport's state: with requests pending, the progress thread does it (nbc.c). */
static ibcomm_status_t reg_add(struct ibcomm *comm, void *arg)
{
	struct reg_args *r = arg;

	return ibc_regcache_add(comm, r->buf, r->len, &r->token);
}

static ibcomm_status_t reg_remove(struct ibcomm *comm, void *arg)
{
	return ibc_regcache_remove(comm, ((struct reg_args *)arg)->token);
}

ibcomm_status_t ibcomm_register(ibcomm_t *comm, void *buf, size_t len, ibcomm_mr_t **mr)
{
	struct reg_args r = { buf, len, 0 };
	ibcomm_status_t st;

	if (!comm)
		return ibc_err_thread(IBCOMM_ERR_INVALID, "ibcomm_register: comm is NULL");
	if (!mr)
		return ibc_err(comm, IBCOMM_ERR_INVALID, "rank %d: ibcomm_register: mr (the output argument) is NULL",
			       comm->rank);
	if (!buf && len)
		return ibc_err(comm, IBCOMM_ERR_INVALID, "rank %d: ibcomm_register: buf is NULL with len %zu",
			       comm->rank, len);
	st = ibc_nbc_call(comm, "ibcomm_register", reg_add, &r);
	if (st)
		return st;
	*mr = (ibcomm_mr_t *)r.token;
	return IBCOMM_OK;
}

ibcomm_status_t ibcomm_deregister(ibcomm_t *comm, ibcomm_mr_t *mr)
{
	struct reg_args r = { NULL, 0, (uintptr_t)mr };

	if (!comm)
		return ibc_err_thread(IBCOMM_ERR_INVALID, "ibcomm_deregister: comm is NULL");
	if (!mr)
		return ibc_err(comm, IBCOMM_ERR_INVALID, "rank %d: ibcomm_deregister: mr is NULL", comm->rank);
	return ibc_nbc_call(comm, "ibcomm_deregister", reg_remove, &r);
}
