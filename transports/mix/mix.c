/*
 * The per-peer composite transport ("mix"): lib/transport.h over two transports, shared
 * memory for the peers on this rank's host (and this rank itself) and a network transport
 * (TCP or RDMA) for the peers on other hosts. IBCOMM_TRANSPORT=auto picks it when the ranks
 * span several hosts and some host has more than one (lib/comm.c); ibcomm_transport() then
 * says "shm+tcp" or "shm+rdma".
 *
 * Parts. The shared-memory part (ibc_shm_create_host, transports/shm/shm.h) maps the
 * segments of this host's ranks only and rings one ring per such rank; the network part
 * connects lazily, so it only ever talks to the peers put() routes to it. Routing is by the
 * communicator's host map (lib/hosts.c), which every rank derived from the same exchange: both
 * ends of a pair route it to the same part. put, get and release go to the peer's part; reg,
 * dereg, set_zc_source and flush go to the network part (shared-memory puts always copy). A
 * split or dup whose ranks all share a host gets plain shared memory, one whose ranks are each
 * alone on their host the plain network transport (mix_create).
 *
 * Memory. IBCOMM_MEM_LIMIT caps the mix as a whole. Each part is sized for a count the
 * same on every rank: the shared-memory part for Lmax rings (the ranks of the largest host),
 * the network part for Rmax peers (size - the ranks of the smallest host: the most ranks on
 * other hosts any rank has; never this host's, which it does not talk to). The shared-memory
 * part gets cap x Lmax / (Lmax + Rmax), the network part the rest, and each sizes itself
 * within its share as it would within the whole cap alone (shrinking its default chunk, then
 * slots; failing, naming the settings and the share, when explicit settings do not fit).
 * Since every rank computes the same, the parts' chunks and slots, and so tp->max_chunk, are
 * the same on every host, and what a rank allocates (its own L <= Lmax rings, R <= Rmax
 * peers) stays within the cap.
 *
 * Chunks. tp->max_chunk and tp->nslots are the smaller of the parts' (shm 256 KiB and 4 slots,
 * TCP 512 KiB and 4 by default: 256 KiB). The algorithms cut every message by tp->max_chunk
 * and both ends of a pair must cut it alike, so one size for the whole communicator is the
 * simple correct choice; a per-peer size would save TCP frames on cross-host pairs only
 * (their cost is per byte, not per frame, above a few KiB).
 *
 * Waiting without spinning (wait(), and put/get with `wait`, which call the parts with
 * wait = false and block here between tries, so that a rank waiting for one part keeps
 * serving the other: a TCP writer whose socket is full needs its reader to read):
 *  1. MIX_LOOKS cheap looks at our shared-memory bell (no system call), then one look at the
 *     network part (wait_fd with timeout 0);
 *  2. then sleeps, in slices of IBC_SHM_SLICE_MS (liveness of this host's peers between them),
 *     in the network part's own wait (wait_fd) over its descriptors plus this rank's doorbell,
 *     a FIFO in /dev/shm that the shared-memory writers write a byte into when we sleep. That
 *     wait spins first as the network transport does alone (TCP: poll() with timeout 0 and a
 *     yield, for IBCOMM_TCP_SPIN_US; RDMA: polling the CQ for IBCOMM_RDMA_SPIN_US, with a
 *     poll() of the doorbell every 16 rounds), and the doorbell is among what it watches, so one
 *     bounded spin serves both parts. A first version spun on the bell for
 *     IBC_SHM_SPIN_US before that: twice the spinning, and 8-byte allreduces on 2 pretended
 *     hosts x 2 ranks on this 2-core machine took twice as long as over TCP alone (the spinning
 *     ranks held the cores their peers needed); now they take about as long or less.
 * No wake-up is lost: before sleeping we store sleeping = 2 in our segment and then load the
 * bell; a writer (put, release, interrupt) adds to the bell and then loads sleeping; both are
 * sequentially consistent, so either we see the bell moved (and do not sleep) or the writer
 * sees sleeping = 2 and writes the FIFO, whose byte stays until read: poll() returns at once
 * even when the byte came before it started. After the sleep we store sleeping = 0 and drain
 * the FIFO; a byte written after the drain costs one extra look at the bell later, never a
 * missed arrival (its bell increment happened before it). A FIFO wake with an unmoved bell is
 * not reported as an arrival: the sleep resumes. Network traffic costs what it costs in its
 * transport; shared-memory traffic, when the receiver has to wait past MIX_LOOKS, a write()
 * by the writer and a poll() by the receiver more than in the shm transport alone (which
 * spins on memory): the price of never spinning on two things at once.
 *
 * A rank alone on its host (a rank without a writable /dev/shm always is) has no
 * shared-memory part: every peer goes over the network, and it waits in the network part's own
 * wait; its chunks are still the smaller of the network part's and those the shared-memory
 * part would have (the same geometry on every rank: Memory, above).
 *
 * Dead peers: the network part polls the rendezvous connection (failure notices, every rank)
 * in its sleep; the shared-memory part checks the notices at every call and, between slices,
 * whether this host's peers' processes still exist. Counters (tp->cnt) are the sums of the
 * parts' (max_inflight: the larger); ibc_tp_part() gives the part that carries a peer.
 */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>

#include "ibc.h"
#include "../shm/shm.h"

#define MIX_LOOKS 64 /* cheap looks at the bell before anything costs a system call */

struct mix {
	ibc_tp_t tp; /* first */
	ibc_tp_t *shm; /* this host's peers and this rank */
	ibc_tp_t *net; /* the other hosts' */
	unsigned char *local; /* per rank: on this host */
};

static ibc_tp_t *part(const struct mix *m, int peer)
{
	return m->shm && peer >= 0 && peer < m->tp.comm->size && m->local[peer] ? m->shm : m->net;
}

static bool is_mix(const ibc_tp_t *tp)
{
	return tp->ops == &ibc_mix_tcp_ops || tp->ops == &ibc_mix_rdma_ops;
}

const ibc_tp_t *ibc_tp_part(const ibc_tp_t *tp, int peer)
{
	return tp && is_mix(tp) ? part((const struct mix *)tp, peer) : tp;
}

static const char *chan_name(int chan)
{
	return chan == IBC_CHAN_COLL ? "coll" : "p2p";
}

static void sum_counters(struct mix *m)
{
	static const ibc_tp_counters_t none;
	const ibc_tp_counters_t *a = m->shm ? &m->shm->cnt : &none, *b = &m->net->cnt;
	ibc_tp_counters_t *c = &m->tp.cnt;

	c->puts = a->puts + b->puts;
	c->bytes_put = a->bytes_put + b->bytes_put;
	c->gets = a->gets + b->gets;
	c->bytes_got = a->bytes_got + b->bytes_got;
	c->credit_waits = a->credit_waits + b->credit_waits;
	c->max_inflight = IBC_MAX(a->max_inflight, b->max_inflight);
	c->connects = a->connects + b->connects;
	c->zc_puts = a->zc_puts + b->zc_puts;
	c->qps = a->qps + b->qps;
}

static bool aborted(const struct mix *m)
{
	return atomic_load(&m->tp.comm->aborted) != 0;
}

static ibcomm_status_t abort_err(struct mix *m, const char *what)
{
	return ibc_err(m->tp.comm, IBCOMM_ERR_ABORTED, "rank %d: %s %s interrupted: the communicator was aborted",
		       m->tp.comm->rank, m->tp.ops->name, what);
}

/*
 * Waits until something arrives on either part, a peer of this host is found gone, or dl
 * passes (IBCOMM_ERR_TIMEOUT, message left to the caller). The header says how and why no
 * wake-up is lost.
 */
static ibcomm_status_t block(struct mix *m, ibc_deadline_t dl)
{
	ibc_tp_t *net = m->net;
	ibcomm_status_t st;
	int rc;

	if (!m->shm) /* alone on this host: the network part's own wait */
		return net->ops->wait(net, dl);
	/* a few cheap looks at the bell, one at the network; the network part's own spin (poll()
	 * with timeout 0 and a yield, IBCOMM_TCP_SPIN_US) then watches both, the doorbell included */
	for (unsigned i = 0; i < MIX_LOOKS; i++) {
		if (ibc_shm_moved(m->shm))
			return IBCOMM_OK;
		ibc_cpu_relax();
	}
	if (aborted(m))
		return abort_err(m, "wait");
	rc = net->ops->wait_fd(net, -1, 0);
	if (rc < 0)
		return rc;
	if (rc)
		return IBCOMM_OK;
	for (;;) {
		int left = ibc_deadline_left(dl), fd;
		int slice = m->tp.comm->set.test_mix_slice_ms ? (int)m->tp.comm->set.test_mix_slice_ms : (int)IBC_SHM_SLICE_MS;
		bool news;

		if (left == 0)
			return IBCOMM_ERR_TIMEOUT;
		if (left > 0 && left < slice)
			slice = left;
		fd = ibc_shm_sleep_begin(m->shm);
		rc = fd >= 0 ? net->ops->wait_fd(net, fd, slice) : 0;
		ibc_shm_sleep_end(m->shm);
		if (rc < 0)
			return rc;
		if (ibc_shm_moved(m->shm) || rc == IBC_WAIT_EVENTS)
			return IBCOMM_OK;
		if (aborted(m))
			return abort_err(m, "wait");
		st = ibc_shm_liveness(m->shm, &news);
		if (st)
			return st;
		if (news) /* the callers retry and fail on that peer */
			return IBCOMM_OK;
	}
}

static int mix_put(ibc_tp_t *tp, int peer, int chan, uint32_t tag, const void *buf, size_t len, bool wait,
		   ibc_deadline_t dl)
{
	struct mix *m = (struct mix *)tp;
	ibc_tp_t *p = part(m, peer);
	uint64_t waits0 = p->cnt.credit_waits;
	ibcomm_status_t st;
	int rc;

	for (;;) {
		rc = p->ops->put(p, peer, chan, tag, buf, len, false, dl);
		if (rc != IBC_AGAIN)
			break;
		p->cnt.credit_waits = waits0 + 1; /* one put that found no slot, however many tries */
		if (!wait)
			break;
		st = block(m, dl);
		if (st == IBCOMM_ERR_TIMEOUT)
			st = ibc_err(tp->comm, st,
				     "rank %d: timed out waiting for peer rank %d to free a slot on channel %s (it has not consumed the %u chunks already sent; %s)",
				     tp->comm->rank, peer, chan_name(chan), p->nslots, p == m->shm ? "shared memory" : p->ops->name);
		if (st) {
			rc = st;
			break;
		}
	}
	sum_counters(m);
	return rc;
}

static int mix_get(ibc_tp_t *tp, int peer, int chan, ibc_chunk_t *chunk, bool wait, ibc_deadline_t dl)
{
	struct mix *m = (struct mix *)tp;
	ibc_tp_t *p = part(m, peer);
	ibcomm_status_t st;
	int rc;

	for (;;) {
		rc = p->ops->get(p, peer, chan, chunk, false, dl);
		if (rc != IBC_AGAIN || !wait)
			break;
		st = block(m, dl);
		if (st == IBCOMM_ERR_TIMEOUT)
			st = ibc_err(tp->comm, st, "rank %d: timed out waiting for data from peer rank %d on channel %s (%s)",
				     tp->comm->rank, peer, chan_name(chan), p == m->shm ? "shared memory" : p->ops->name);
		if (st) {
			rc = st;
			break;
		}
	}
	if (rc == IBCOMM_OK)
		sum_counters(m);
	return rc;
}

static ibcomm_status_t mix_release(ibc_tp_t *tp, ibc_chunk_t *c)
{
	struct mix *m = (struct mix *)tp;
	ibc_tp_t *p;

	if (!c)
		return ibc_err(tp->comm, IBCOMM_ERR_INVALID, "rank %d: %s release of a bad chunk", tp->comm->rank,
			       tp->ops->name);
	p = part(m, c->peer);
	return p->ops->release(p, c);
}

static ibcomm_status_t mix_wait(ibc_tp_t *tp, ibc_deadline_t dl)
{
	struct mix *m = (struct mix *)tp;
	ibcomm_status_t st = block(m, dl);

	if (st == IBCOMM_ERR_TIMEOUT)
		return ibc_err(tp->comm, st, "rank %d: timed out waiting for data or credits from any peer (%s)", tp->comm->rank,
			       tp->ops->name);
	return st;
}

/* Async-signal-safe: both parts' interrupts are. */
static void mix_interrupt(ibc_tp_t *tp)
{
	struct mix *m = (struct mix *)tp;

	if (m->shm)
		m->shm->ops->interrupt(m->shm);
	m->net->ops->interrupt(m->net);
}

static void *mix_reg(ibc_tp_t *tp, void *addr, size_t len, ibcomm_status_t *st)
{
	ibc_tp_t *net = ((struct mix *)tp)->net;

	return net->ops->reg(net, addr, len, st);
}

static void mix_dereg(ibc_tp_t *tp, void *h)
{
	ibc_tp_t *net = ((struct mix *)tp)->net;

	net->ops->dereg(net, h);
}

static void mix_set_zc_source(ibc_tp_t *tp, const void *buf, size_t len, void *handle)
{
	ibc_tp_t *net = ((struct mix *)tp)->net;

	net->ops->set_zc_source(net, buf, len, handle);
}

static ibcomm_status_t mix_flush(ibc_tp_t *tp, ibc_deadline_t dl)
{
	ibc_tp_t *net = ((struct mix *)tp)->net;

	return net->ops->flush(net, dl);
}

static void mix_destroy(ibc_tp_t *tp)
{
	struct mix *m = (struct mix *)tp;

	if (!tp)
		return;
	if (m->shm)
		m->shm->ops->destroy(m->shm);
	if (m->net)
		m->net->ops->destroy(m->net);
	free(m->local);
	free(m);
}

/* self: the mix's ops (its name, the forwarders); net_ops: the network part's. */
static ibcomm_status_t mix_create(struct ibcomm *comm, const struct ibc_tp_ops *self, const struct ibc_tp_ops *net_ops,
				  ibc_tp_t **tpp)
{
	const struct ibc_hosts *h = &comm->hosts;
	uint64_t cap, shm_share;
	unsigned long shm_chunk, shm_slots;
	int lmin = comm->size, lmax = 0, rmax;
	ibcomm_status_t st;
	struct mix *m;

	/* a split or dup of a mix may need one part only (every rank derives the same) */
	if (!h->host_of || h->nhosts == comm->size)
		return net_ops->create(comm, tpp);
	if (h->nhosts == 1)
		return ibc_shm_ops.create(comm, tpp);
	if (!net_ops->wait_fd)
		return ibc_err(comm, IBCOMM_ERR_UNSUPPORTED, "rank %d: the %s transport cannot serve as the network part of %s",
			       comm->rank, net_ops->name, self->name);
	m = calloc(1, sizeof(*m));
	if (!m || !(m->local = calloc((size_t)comm->size, 1))) {
		free(m);
		return ibc_err(comm, IBCOMM_ERR_NOMEM, "rank %d: no memory for the %s transport", comm->rank, self->name);
	}
	for (int r = 0; r < comm->size; r++)
		m->local[r] = h->host_of[r] == h->host_of[comm->rank];
	m->tp.ops = self;
	m->tp.comm = comm;
	/* the cap is the mix's: each part gets a share, in proportion to what it is sized for
	 * (shared memory: a segment with a ring per rank of the largest host; the network: rings
	 * for the most ranks on other hosts any rank has, never for this host's). Every rank
	 * sizes each part alike, whatever its host: the algorithms cut messages by tp->max_chunk,
	 * the same at both ends of a pair. */
	for (int r = 0; r < comm->size; r++) {
		int n = 0;

		for (int q = 0; q < comm->size; q++)
			n += h->host_of[q] == h->host_of[r];
		lmin = IBC_MIN(lmin, n);
		lmax = IBC_MAX(lmax, n);
	}
	rmax = comm->size - lmin;
	cap = ibc_mem_cap(comm);
	shm_share = cap / (uint64_t)(lmax + rmax) * (uint64_t)lmax +
		    cap % (uint64_t)(lmax + rmax) * (uint64_t)lmax / (uint64_t)(lmax + rmax);
	comm->part_of = self->name;
	/* the network part first: it only publishes its address, the shared-memory part waits for
	 * this host's ranks */
	comm->part_mem = cap - shm_share;
	comm->part_count = rmax;
	comm->err[0] = '\0';
	st = net_ops->create(comm, &m->net);
	if (st) {
		if (!comm->err[0])
			ibc_err(comm, st, "rank %d: cannot create the %s part of %s", comm->rank, net_ops->name, self->name);
		goto err;
	}
	comm->part_mem = shm_share;
	comm->part_count = lmax;
	if (h->local_size > 1) {
		st = ibc_shm_create_host(comm, &m->shm);
		if (st)
			goto err;
		shm_chunk = m->shm->max_chunk;
		shm_slots = m->shm->nslots;
	} else {
		/* alone on this host (maybe without a writable /dev/shm: then it is a host of its
		 * own): no shared-memory part, every peer over the network; the chunks the other
		 * ranks cut by (the shared-memory geometry they all come to) all the same */
		st = ibc_shm_geometry(comm, 1, &shm_chunk, &shm_slots);
		if (st)
			goto err;
	}
	comm->part_mem = 0;
	comm->part_count = 0;
	comm->part_of = NULL;
	m->tp.max_chunk = IBC_MIN(shm_chunk, m->net->max_chunk);
	m->tp.nslots = (unsigned)IBC_MIN(shm_slots, m->net->nslots);
	ibc_cinfo(comm, "rank %d: transport %s: shared memory to the %d ranks of this host, %s to the %d others (chunks of %zu bytes, %u slots)",
		  comm->rank, self->name, h->local_size, net_ops->name, comm->size - h->local_size, m->tp.max_chunk,
		  m->tp.nslots);
	*tpp = &m->tp;
	return IBCOMM_OK;
err:
	comm->part_mem = 0;
	comm->part_count = 0;
	comm->part_of = NULL;
	mix_destroy(&m->tp);
	return st;
}

static ibcomm_status_t mix_tcp_create(struct ibcomm *comm, ibc_tp_t **tpp)
{
	return mix_create(comm, &ibc_mix_tcp_ops, &ibc_tcp_ops, tpp);
}

static ibcomm_status_t mix_rdma_create(struct ibcomm *comm, ibc_tp_t **tpp)
{
	return mix_create(comm, &ibc_mix_rdma_ops, &ibc_rdma_ops, tpp);
}

const struct ibc_tp_ops ibc_mix_tcp_ops = {
	.name = "shm+tcp",
	.create = mix_tcp_create,
	.destroy = mix_destroy,
	.put = mix_put,
	.get = mix_get,
	.release = mix_release,
	.wait = mix_wait,
	.interrupt = mix_interrupt,
};

const struct ibc_tp_ops ibc_mix_rdma_ops = {
	.name = "shm+rdma",
	.create = mix_rdma_create,
	.destroy = mix_destroy,
	.put = mix_put,
	.get = mix_get,
	.release = mix_release,
	.wait = mix_wait,
	.interrupt = mix_interrupt,
	.reg = mix_reg,
	.dereg = mix_dereg,
	.set_zc_source = mix_set_zc_source,
	.flush = mix_flush,
};
