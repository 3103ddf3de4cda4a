/*
 * The TCP transport: lib/transport.h over non-blocking sockets.
 *
 * Each communicator listens on one socket and publishes "host:port" under
 * "<comm id>/tcp/<rank>". Connections are made lazily by the first put() to a peer and carry
 * data one way only: from the rank that connected to the rank that accepted; the acceptor
 * returns CREDIT frames on the same socket. Two ranks that write to each other therefore use
 * two sockets, one per direction, and never race to connect.
 *
 * The receiver keeps, per peer and channel, a ring of nslots slots of max_chunk bytes; a DATA
 * payload is read directly into the next free slot. The writer holds one credit per free slot
 * of the receiver and never sends without one. While a writer waits for its socket to drain,
 * it keeps reading every readable socket, so two ranks writing to each other never deadlock.
 *
 * This file holds the ops; the connections, the job-key handshake and the progress loop are
 * in tcp_conn.c, tcp_auth.c and tcp_progress.c (shared definitions: tcp_int.h).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>
#include <linux/sockios.h>

#include "sock.h"
#include "wire.h"
#include "tcp_addr.h"
#include "tcp_int.h"

/* ---- the ops ---- */

static int tcp_put(ibc_tp_t *tp, int peer, int chan, uint32_t tag, const void *buf, size_t len, bool wait,
		   ibc_deadline_t dl)
{
	struct tcp *t = (struct tcp *)tp;
	struct tcp_peer *p;
	uint8_t hdr[IBC_TCP_HDR_LEN];
	ibc_wbuf_t w;
	ibcomm_status_t st;
	unsigned events, inflight;

	if (peer < 0 || peer >= t->comm->size || chan < 0 || chan >= IBC_NCHAN || len > tp->max_chunk ||
	    (len && !buf))
		return ibc_err(t->comm, IBCOMM_ERR_INVALID,
			       "rank %d: bad TCP put (peer %d, channel %d, %zu bytes; largest chunk %zu)", t->comm->rank,
			       peer, chan, len, tp->max_chunk);
	if (ibc_tcp_aborted(t))
		return ibc_tcp_abort_err(t, "put");
	st = ibc_tcp_notices_check(t, false);
	if (st)
		return st;
	p = &t->peers[peer];
	if (p->dead)
		return ibc_tcp_dead_err(t, peer, "put", chan);
	if (p->out.fd < 0) {
		st = ibc_tcp_connect(t, peer, chan, dl);
		if (st)
			return st;
	}
	if (!p->credits[chan]) {
		tp->cnt.credit_waits++;
		st = ibc_tcp_conn_read(t, &p->out, &events);
		if (st)
			return st;
		while (!p->credits[chan]) {
			if (p->dead)
				return ibc_tcp_dead_err(t, peer, "put", chan);
			if (!wait)
				return IBC_AGAIN;
			st = ibc_tcp_progress(t, NULL, ibc_deadline_left(dl), &events);
			if (st)
				return st;
			if (!events && ibc_deadline_left(dl) == 0)
				return ibc_err(t->comm, IBCOMM_ERR_TIMEOUT,
					       "rank %d: timed out waiting for peer rank %d to free a slot on channel %s (it has not consumed the %u chunks already sent)",
					       t->comm->rank, peer, ibc_tcp_chan_name(chan), tp->nslots);
		}
	}

	w = ibc_wbuf(hdr, sizeof(hdr));
	ibc_w_u8(&w, IBC_TCP_VERSION);
	ibc_w_u8(&w, IBC_TCP_DATA);
	ibc_w_u8(&w, (uint8_t)chan);
	ibc_w_u8(&w, 0);
	ibc_w_u32(&w, tag);
	ibc_w_u32(&w, (uint32_t)len);
	/* Taken before sending: ibc_tcp_send_frame() may flush credits while the socket is full. */
	ibc_w_u32(&w, p->owed[chan]);
	p->owed[chan] = 0;
	st = ibc_tcp_send_frame(t, peer, chan, hdr, buf, len, dl, "put");
	if (st)
		return st;
	p->credits[chan]--;
	inflight = tp->nslots - p->credits[chan];
	if (inflight > tp->cnt.max_inflight)
		tp->cnt.max_inflight = inflight;
	tp->cnt.puts++;
	tp->cnt.bytes_put += len;
	return IBCOMM_OK;
}

static int tcp_get(ibc_tp_t *tp, int peer, int chan, ibc_chunk_t *chunk, bool wait, ibc_deadline_t dl)
{
	struct tcp *t = (struct tcp *)tp;
	struct tcp_peer *p;
	struct tcp_ring *r;
	ibcomm_status_t st;
	unsigned events;
	bool tried = false, drained = false;

	if (peer < 0 || peer >= t->comm->size || chan < 0 || chan >= IBC_NCHAN || !chunk)
		return ibc_err(t->comm, IBCOMM_ERR_INVALID, "rank %d: bad TCP get (peer %d, channel %d)",
			       t->comm->rank, peer, chan);
	st = ibc_tcp_notices_check(t, false);
	if (st)
		return st;
	p = &t->peers[peer];
	r = &p->ring[chan];
	for (;;) {
		if (ibc_tcp_aborted(t))
			return ibc_tcp_abort_err(t, "get");
		if (r->ngot < r->nfill) {
			unsigned slot = (r->rel + r->ngot) % tp->nslots;

			r->ngot++;
			chunk->data = r->mem + (size_t)slot * tp->max_chunk;
			chunk->len = r->len[slot];
			chunk->tag = r->tag[slot];
			chunk->peer = peer;
			chunk->chan = chan;
			chunk->slot = slot;
			tp->cnt.gets++;
			tp->cnt.bytes_got += chunk->len;
			return IBCOMM_OK;
		}
		/* Data may still be in the socket of a peer that is gone: read it all first. */
		if (p->dead && p->in.fd < 0) {
			/*
			 * Its connection may not be accepted yet (its death was seen on our own
			 * connection to it): take in what is already here before giving up. A
			 * peer that wrote and then destroyed its communicator left its connection
			 * in our accept queue: one pass accepts it, the next reads its hello and
			 * data (the accept counts as an event), and so on while anything moves.
			 */
			if (!p->had_in && !drained) {
				drained = true;
				do {
					st = ibc_tcp_progress(t, NULL, 0, &events);
					if (st)
						return st;
				} while (events && !p->had_in);
				continue;
			}
			return ibc_tcp_dead_err(t, peer, "get", chan);
		}
		if (!tried && p->in.fd >= 0) {
			tried = true;
			st = ibc_tcp_conn_read(t, &p->in, &events);
			if (st)
				return st;
			continue;
		}
		if (!wait)
			return IBC_AGAIN;
		st = ibc_tcp_progress(t, NULL, ibc_deadline_left(dl), &events);
		if (st)
			return st;
		if (!events && ibc_deadline_left(dl) == 0)
			return ibc_err(t->comm, IBCOMM_ERR_TIMEOUT,
				       "rank %d: timed out waiting for data from peer rank %d on channel %s%s", t->comm->rank,
				       peer, ibc_tcp_chan_name(chan), p->had_in ? "" : " (it never connected)");
	}
}

static ibcomm_status_t tcp_release(ibc_tp_t *tp, ibc_chunk_t *c)
{
	struct tcp *t = (struct tcp *)tp;
	struct tcp_peer *p;
	struct tcp_ring *r;

	if (!c || c->peer < 0 || c->peer >= t->comm->size || c->chan < 0 || c->chan >= IBC_NCHAN)
		return ibc_err(t->comm, IBCOMM_ERR_INVALID, "rank %d: TCP release of a bad chunk", t->comm->rank);
	p = &t->peers[c->peer];
	r = &p->ring[c->chan];
	if (!r->ngot || c->slot != r->rel)
		return ibc_err(t->comm, IBCOMM_ERR_INVALID,
			       "rank %d: TCP release of slot %u from peer rank %d on channel %s out of order (oldest is %u)",
			       t->comm->rank, c->slot, c->peer, ibc_tcp_chan_name(c->chan), r->rel);
	r->rel = (r->rel + 1) % tp->nslots;
	r->nfill--;
	r->ngot--;
	p->owed[c->chan]++;
	/*
	 * When we also write to this peer, hold credits back so they ride on our next data frame
	 * instead of costing a frame of their own: all of them while nothing more from the peer
	 * is waiting here (request-reply traffic), half the slots while it streams. ibc_tcp_progress()
	 * sends them before it blocks, so a writer waiting for them is never stuck.
	 */
	if (p->out.fd < 0 || p->owed[c->chan] >= tp->nslots ||
	    (r->nfill && p->owed[c->chan] >= IBC_MAX(1u, tp->nslots / 2)))
		ibc_tcp_credits_flush(t, p);
	return IBCOMM_OK;
}

static ibcomm_status_t tcp_wait(ibc_tp_t *tp, ibc_deadline_t dl)
{
	struct tcp *t = (struct tcp *)tp;

	for (;;) {
		unsigned events;
		ibcomm_status_t st = ibc_tcp_progress(t, NULL, ibc_deadline_left(dl), &events);

		if (st)
			return st;
		if (events)
			return IBCOMM_OK;
		if (ibc_deadline_left(dl) == 0)
			return ibc_err(t->comm, IBCOMM_ERR_TIMEOUT,
				       "rank %d: timed out waiting for data or credits from any peer (TCP)", t->comm->rank);
	}
}

static int tcp_wait_fd(ibc_tp_t *tp, int fd, int timeout_ms)
{
	struct tcp *t = (struct tcp *)tp;
	unsigned events;
	ibcomm_status_t st;

	t->extra_fd = fd;
	st = ibc_tcp_progress(t, NULL, timeout_ms, &events);
	t->extra_fd = -1;
	if (st)
		return st;
	return events ? IBC_WAIT_EVENTS : t->extra_ready ? IBC_WAIT_FD : 0;
}

static void tcp_interrupt(ibc_tp_t *tp)
{
	struct tcp *t = (struct tcp *)tp;
	int saved = errno;
	char b = 1;
	ssize_t n = write(t->pipe[1], &b, 1);

	(void)n;
	errno = saved;
}

/*
 * Closes an out-connection so that what was sent still arrives: waits (bounded) until the
 * peer has acknowledged every byte, and reads pending credits first, since closing a socket
 * with unread data makes the kernel reset the connection and drop what it has not sent.
 */
static void out_close_gently(struct tcp *t, struct tcp_conn *c, uint64_t until)
{
	char scratch[256];
	int queued;

	while (!ibc_tcp_aborted(t) && ibc_now_ms() < until && !ioctl(c->fd, SIOCOUTQ, &queued) && queued > 0) {
		struct pollfd pfd = { .fd = c->fd, .events = POLLIN };

		if (poll(&pfd, 1, 1) > 0 && recv(c->fd, scratch, sizeof(scratch), MSG_DONTWAIT) == 0)
			break;
	}
	while (recv(c->fd, scratch, sizeof(scratch), MSG_DONTWAIT) > 0)
		;
	ibc_tcp_conn_close(t, c);
}

static void tcp_destroy(ibc_tp_t *tp)
{
	struct tcp *t = (struct tcp *)tp;
	uint64_t until = ibc_now_ms() + TCP_LINGER_MS;

	if (!tp)
		return;
	for (int i = 0; i < t->comm->size; i++) {
		struct tcp_peer *p = &t->peers[i];

		if (p->out.fd >= 0)
			out_close_gently(t, &p->out, until);
		ibc_tcp_conn_close(t, &p->in);
		for (int ch = 0; ch < IBC_NCHAN; ch++)
			ibc_tcp_ring_free(&p->ring[ch]);
	}
	while (t->npending)
		ibc_tcp_pending_free(t, t->pending[0]);
	free(t->pending);
	free(t->pfd);
	free(t->pcon);
	free(t->conns);
	free(t->peers);
	close(t->lfd);
	close(t->pipe[0]);
	close(t->pipe[1]);
	free(t);
}

/* ---- create: choose an address, listen, publish ---- */

/* The address to listen on (port 0): ibc_tcp_choose_addr (tcp_addr.c), which ibcomm_ping shares. */
static ibcomm_status_t choose_addr(struct ibcomm *comm, struct sockaddr_storage *ss, socklen_t *sl)
{
	ibc_tcp_addr_choice_t c;
	struct ifaddrs *ifa;
	char why[400];
	ibcomm_status_t st;

	if (getifaddrs(&ifa))
		return ibc_err(comm, IBCOMM_ERR_SYSTEM, "rank %d: listing network interfaces: %m", comm->rank);
	st = ibc_tcp_choose_addr(comm->set.ifname, comm->set.root, ifa, &c, why, sizeof(why));
	freeifaddrs(ifa);
	if (st)
		return ibc_err(comm, st, "rank %d: %s", comm->rank, why);
	if (c.fallback)
		ibc_cinfo(comm, "rank %d: no network interface is up besides loopback: the TCP transport listens on 127.0.0.1",
			  comm->rank);
	*ss = c.ss;
	*sl = c.sl;
	return IBCOMM_OK;
}

/*
 * Chunk and slots from the settings (config.c reads IBCOMM_TCP_CHUNK/_SLOTS), within the
 * memory cap: the receive rings, allocated as peers write, hold at most peers x channels x
 * slots x chunk bytes. Defaults shrink to fit (chunk down to 4 KiB, then slots); settings
 * given explicitly are kept, and fail when over the cap. As the network part of a mix, the
 * peers are the ranks on other hosts (the only ones it talks to) and the cap is its share.
 */
static ibcomm_status_t tcp_geometry(struct ibcomm *comm, unsigned long *chunk, unsigned long *nslots)
{
	uint64_t peers = (uint64_t)ibc_tp_npeers(comm), total;
	unsigned long c = comm->set.tcp_chunk ? comm->set.tcp_chunk : IBC_TCP_DEFAULT_CHUNK;
	unsigned long n = comm->set.tcp_slots ? comm->set.tcp_slots : IBC_TCP_DEFAULT_SLOTS;
	char how[160];

#define TCP_RINGS(c, n) (peers * IBC_NCHAN * (uint64_t)(n) * (uint64_t)(c))
	while (!comm->set.tcp_chunk && c > 4096 && TCP_RINGS(c, n) > ibc_mem_limit(comm))
		c /= 2;
	while (!comm->set.tcp_slots && n > 1 && TCP_RINGS(c, n) > ibc_mem_limit(comm))
		n /= 2;
	total = TCP_RINGS(c, n);
#undef TCP_RINGS
	snprintf(how, sizeof(how), "%llu peers x %d channels x %lu slots x %lu-byte chunks", (unsigned long long)peers,
		 IBC_NCHAN, n, c);
	*chunk = c;
	*nslots = n;
	return ibc_mem_check(comm, "TCP", total, how, "IBCOMM_TCP_CHUNK or IBCOMM_TCP_SLOTS",
			     comm->set.tcp_chunk || comm->set.tcp_slots);
}

static ibcomm_status_t tcp_create(struct ibcomm *comm, ibc_tp_t **tpp)
{
	struct sockaddr_storage ss;
	socklen_t sl = 0;
	unsigned long chunk, nslots, spin;
	char key[128], err[256] = "";
	ibcomm_status_t st;
	struct tcp *t;

	if (comm->size < 1 || comm->rank < 0 || comm->rank >= comm->size)
		return ibc_err(comm, IBCOMM_ERR_INVALID, "TCP transport: rank %d of %d", comm->rank, comm->size);
	st = tcp_geometry(comm, &chunk, &nslots);
	if (st)
		return st;
	spin = comm->set.tcp_spin_us;

	t = calloc(1, sizeof(*t));
	if (!t)
		return ibc_err(comm, IBCOMM_ERR_NOMEM, "rank %d: no memory for the TCP transport", comm->rank);
	t->tp.ops = &ibc_tcp_ops;
	t->tp.comm = comm;
	t->tp.max_chunk = chunk;
	t->tp.nslots = (unsigned)nslots;
	t->spin_us = (unsigned)spin;
	t->extra_fd = -1;
	ibc_notices_init(&t->notes);
	t->comm = comm;
	t->peers = calloc((size_t)comm->size, sizeof(*t->peers));
	if (!t->peers)
		goto err_nomem;
	t->conns = calloc(2 * (size_t)comm->size, sizeof(*t->conns));
	if (!t->conns) {
		free(t->peers);
		goto err_nomem;
	}
	for (int i = 0; i < comm->size; i++) {
		struct tcp_peer *p = &t->peers[i];

		ibc_tcp_conn_reset(&p->in, CONN_IN, i);
		ibc_tcp_conn_reset(&p->out, CONN_OUT, i);
		for (int ch = 0; ch < IBC_NCHAN; ch++)
			p->credits[ch] = t->tp.nslots;
	}
	if (pipe2(t->pipe, O_NONBLOCK | O_CLOEXEC)) {
		st = ibc_err(comm, IBCOMM_ERR_SYSTEM, "rank %d: TCP transport: pipe: %m", comm->rank);
		goto err_free_conns;
	}

	st = choose_addr(comm, &ss, &sl);
	if (st)
		goto err_close_pipe;
	ibc_sock_format((struct sockaddr *)&ss, t->addr, sizeof(t->addr));
	t->lfd = ibc_sock_listen_addr((struct sockaddr *)&ss, sl);
	if (t->lfd < 0) {
		st = ibc_err(comm, IBCOMM_ERR_SYSTEM, "rank %d: TCP transport: listening on %s: %m", comm->rank, t->addr);
		goto err_close_pipe;
	}
	if (ibc_sock_bound(t->lfd, t->addr, sizeof(t->addr))) {
		st = ibc_err(comm, IBCOMM_ERR_SYSTEM, "rank %d: TCP transport: getsockname: %m", comm->rank);
		goto err_close_listen;
	}

	snprintf(key, sizeof(key), "%s/tcp/%d", comm->id, comm->rank);
	st = ibc_boot_put(comm->boot, key, t->addr, strlen(t->addr), err, sizeof(err));
	if (st) {
		st = ibc_err(comm, st, "rank %d: publishing the TCP address %s: %s", comm->rank, t->addr, err);
		goto err_close_listen;
	}
	ibc_cinfo(comm, "rank %d: TCP transport listening on %s (%u slots of %zu bytes per peer and channel)", comm->rank,
		 t->addr, t->tp.nslots, t->tp.max_chunk);
	*tpp = &t->tp;
	return IBCOMM_OK;

err_close_listen:
	close(t->lfd);
err_close_pipe:
	close(t->pipe[0]);
	close(t->pipe[1]);
err_free_conns:
	free(t->conns);
	free(t->peers);
	free(t);
	return st;

err_nomem:
	free(t);
	return ibc_err(comm, IBCOMM_ERR_NOMEM, "rank %d: no memory for the TCP transport", comm->rank);
}

const struct ibc_tp_ops ibc_tcp_ops = {
	.name = "tcp",
	.create = tcp_create,
	.destroy = tcp_destroy,
	.put = tcp_put,
	.get = tcp_get,
	.release = tcp_release,
	.wait = tcp_wait,
	.interrupt = tcp_interrupt,
	.wait_fd = tcp_wait_fd,
};
