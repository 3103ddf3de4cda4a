/*
 * The TCP transport's progress (tcp_int.h): returning credits, one poll() over every socket,
 * writing a frame while serving the others, and opening a data connection.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "sock.h"
#include "wire.h"
#include "tcp_int.h"

/* ---- sending credits ---- */

/* Sends the credits owed to p (never blocks; what does not fit is sent when the socket drains). */
void ibc_tcp_credits_flush(struct tcp *t, struct tcp_peer *p)
{
	struct tcp_conn *c = &p->in;

	while (c->fd >= 0 && !c->wbroken) {
		ssize_t n;

		if (c->ooff == c->olen) {
			ibc_wbuf_t w = ibc_wbuf(c->obuf, sizeof(c->obuf));

			for (int ch = 0; ch < IBC_NCHAN; ch++) {
				if (!p->owed[ch])
					continue;
				ibc_w_u8(&w, IBC_TCP_VERSION);
				ibc_w_u8(&w, IBC_TCP_CREDIT);
				ibc_w_u8(&w, (uint8_t)ch);
				ibc_w_u8(&w, 0);
				ibc_w_u32(&w, 0);
				ibc_w_u32(&w, 0);
				ibc_w_u32(&w, p->owed[ch]);
				p->owed[ch] = 0;
			}
			c->olen = (unsigned)w.len;
			c->ooff = 0;
			if (!c->olen)
				return;
		}
		n = send(c->fd, c->obuf + c->ooff, c->olen - c->ooff, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		if (n < 0) {
			/* The peer stopped reading; what it sent before is still to be read. */
			ibc_tcp_peer_mark_dead(p, IBCOMM_ERR_PEER, "closed its connection (%s: it died or destroyed its communicator)",
					       strerror(errno));
			c->wbroken = true;
			return;
		}
		c->ooff += (unsigned)n;
	}
}

/* ---- progress: one poll() over everything ---- */

static ibcomm_status_t pfd_reserve(struct tcp *t, unsigned n)
{
	struct pollfd *pfd;
	struct tcp_conn **pcon;

	if (n <= t->cappfd)
		return IBCOMM_OK;
	n = IBC_MAX(n, 2 * t->cappfd);
	pfd = realloc(t->pfd, n * sizeof(*pfd));
	if (!pfd)
		goto err_nomem;
	t->pfd = pfd;
	pcon = realloc(t->pcon, n * sizeof(*pcon));
	if (!pcon)
		goto err_nomem;
	t->pcon = pcon;
	t->cappfd = n;
	return IBCOMM_OK;

err_nomem:
	return ibc_err(t->comm, IBCOMM_ERR_NOMEM, "rank %d: no memory for the TCP poll set", t->comm->rank);
}

/*
 * Waits (at most timeout ms, -1 for ever) for any socket to be readable, or wout to be
 * writable, and services what is ready. *events counts what happened (chunks, credits,
 * connections, closes, wakes).
 */
static uint64_t now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* timeout (ms, -1: none) shortened to the earliest handshake deadline of a pending connection. */
static int pending_timeout(const struct tcp *t, int timeout)
{
	uint64_t now = ibc_now_ms();

	for (unsigned i = 0; i < t->npending && timeout != 0; i++) {
		uint64_t dl = t->pending[i]->hs_deadline;
		int left = dl <= now ? 0 : (int)IBC_MIN(dl - now, (uint64_t)INT32_MAX);

		if (timeout < 0 || left < timeout)
			timeout = left;
	}
	return timeout;
}

/* Drops the pending connections that are idle or slow past their handshake deadline. */
static void pending_expire(struct tcp *t)
{
	uint64_t now = ibc_now_ms();

	for (unsigned i = t->npending; i-- > 0;) {
		struct tcp_conn *c = t->pending[i];

		if (c->hs_deadline <= now)
			ibc_tcp_pending_drop(t, c, "no %s within %d ms", c->auth == TCP_AUTH_WAIT_PROOF ? "job-key proof" : "hello",
					     IBC_AUTH_HANDSHAKE_MS);
	}
}

ibcomm_status_t ibc_tcp_progress(struct tcp *t, struct tcp_conn *wout, int timeout, unsigned *events)
{
	unsigned n = 0, rdv_idx;
	bool rdv_ready = false;
	ibcomm_status_t st;
	int rc, rdv_fd;

	*events = 0;
	if (ibc_tcp_aborted(t))
		return ibc_tcp_abort_err(t, "wait");
	/* Before blocking, return every credit held back for piggybacking (tcp_release). */
	if (timeout != 0)
		for (int i = 0; i < t->comm->size; i++)
			if (t->peers[i].owed[IBC_CHAN_COLL] || t->peers[i].owed[IBC_CHAN_P2P])
				ibc_tcp_credits_flush(t, &t->peers[i]);
	st = ibc_tcp_notices_check(t, false);
	if (st)
		return st;
	st = pfd_reserve(t, 4 + t->nconns + t->npending);
	if (st)
		return st;
	t->extra_ready = false;
	t->pfd[n] = (struct pollfd){ .fd = t->pipe[0], .events = POLLIN };
	t->pcon[n++] = NULL;
	t->pfd[n] = (struct pollfd){ .fd = t->lfd, .events = POLLIN };
	t->pcon[n++] = NULL;
	/* wait_fd()'s descriptor (fd -1: ignored by poll()), third */
	t->pfd[n] = (struct pollfd){ .fd = t->extra_fd, .events = POLLIN };
	t->pcon[n++] = NULL;
	for (unsigned i = 0; i < t->nconns; i++) {
		struct tcp_conn *c = t->conns[i];
		short ev = POLLIN;

		if (c == wout || (c->ooff < c->olen && !c->wbroken))
			ev |= POLLOUT;
		t->pfd[n] = (struct pollfd){ .fd = c->fd, .events = ev };
		t->pcon[n++] = c;
	}
	for (unsigned i = 0; i < t->npending; i++) {
		t->pfd[n] = (struct pollfd){ .fd = t->pending[i]->fd, .events = POLLIN };
		t->pcon[n++] = t->pending[i];
	}
	/* the rendezvous connection, last: failure notices about ranks this one never talks to */
	rdv_idx = n;
	if (t->comm->boot && (rdv_fd = ibc_boot_fd(t->comm->boot)) >= 0) {
		t->pfd[n] = (struct pollfd){ .fd = rdv_fd, .events = POLLIN };
		t->pcon[n++] = NULL;
	}

	/* idle or slow connections in their handshake never hold a rank: they expire */
	if (t->npending)
		timeout = pending_timeout(t, timeout);
	rc = 0;
	if (timeout != 0 && t->spin_us) {
		/*
		 * Spin briefly before sleeping: a reply often comes within microseconds. Each
		 * empty look yields the core: with more ranks than cores the rank that must
		 * send is often waiting for this one's core (without others it returns at once).
		 */
		uint64_t end = now_us() + t->spin_us;

		for (;;) {
			rc = poll(t->pfd, n, 0);
			if (rc != 0 || now_us() >= end)
				break;
			sched_yield();
		}
	}
	if (rc == 0)
		rc = poll(t->pfd, n, timeout);
	if (rc < 0 && errno != EINTR)
		return ibc_err(t->comm, IBCOMM_ERR_SYSTEM, "rank %d: poll in the TCP transport: %m", t->comm->rank);
	if (ibc_tcp_aborted(t))
		return ibc_tcp_abort_err(t, "wait");
	if (rc <= 0) {
		if (t->npending)
			pending_expire(t);
		return IBCOMM_OK;
	}

	for (unsigned i = 0; i < n; i++) {
		struct pollfd *pf = &t->pfd[i];
		struct tcp_conn *c = t->pcon[i];

		if (!pf->revents)
			continue;
		if (i == 0) {
			char buf[64];

			while (read(t->pipe[0], buf, sizeof(buf)) > 0)
				;
			(*events)++;
			continue;
		}
		if (i == 1) {
			unsigned npending = t->npending;

			ibc_tcp_accept_all(t);
			/* an accepted connection is progress: its hello (and data) is read next pass */
			if (t->npending != npending)
				(*events)++;
			continue;
		}
		if (i == 2) {
			t->extra_ready = true;
			continue;
		}
		if (i == rdv_idx) {
			rdv_ready = true;
			continue;
		}
		/* Closed or replaced earlier in this pass (pending ones are only freed by themselves). */
		if (c->fd != pf->fd)
			continue;
		if (c->kind == CONN_IN && (pf->revents & POLLOUT))
			ibc_tcp_credits_flush(t, &t->peers[c->peer]);
		if (c == wout && (pf->revents & (POLLOUT | POLLERR | POLLHUP)))
			(*events)++;
		if (pf->revents & (POLLIN | POLLERR | POLLHUP)) {
			st = ibc_tcp_conn_read(t, c, events);
			if (st)
				return st;
		}
	}
	if (t->npending)
		pending_expire(t);
	if (rdv_ready)
		return ibc_tcp_notices_check(t, true);
	return IBCOMM_OK;
}

/* ---- sending data ---- */

/*
 * Writes a whole frame on p's out-connection; while the socket is full, services every other
 * socket. A frame cut short (timeout, abort) leaves the connection unusable.
 */
ibcomm_status_t ibc_tcp_send_frame(struct tcp *t, int peer, int chan, const uint8_t *hdr, const void *buf, size_t len,
					  ibc_deadline_t dl, const char *op)
{
	struct tcp_peer *p = &t->peers[peer];
	struct tcp_conn *c = &p->out;
	struct iovec iov[2] = { { (void *)hdr, IBC_TCP_HDR_LEN }, { (void *)buf, len } };
	struct msghdr msg = { .msg_iov = iov, .msg_iovlen = len ? 2 : 1 };
	size_t left = IBC_TCP_HDR_LEN + len;
	ibcomm_status_t st;
	unsigned events;

	for (;;) {
		ssize_t n;

		/* Progress (here or before the call) may have learnt that the peer died. */
		if (p->dead)
			return ibc_tcp_dead_err(t, peer, op, chan);
		if (c->fd < 0)
			return ibc_err(t->comm, IBCOMM_ERR_PEER, "rank %d: the connection to peer rank %d is closed (%s on channel %s)",
				       t->comm->rank, peer, op, ibc_tcp_chan_name(chan));
		n = sendmsg(c->fd, &msg, MSG_NOSIGNAL);

		if (n > 0) {
			size_t done = (size_t)n;

			left -= done;
			if (!left)
				return IBCOMM_OK;
			while (done >= msg.msg_iov->iov_len) {
				done -= msg.msg_iov->iov_len;
				msg.msg_iov++;
				msg.msg_iovlen--;
			}
			msg.msg_iov->iov_base = (uint8_t *)msg.msg_iov->iov_base + done;
			msg.msg_iov->iov_len -= done;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
			int err = errno;

			if (err == EPIPE || err == ECONNRESET) {
				ibc_tcp_peer_mark_dead(p, IBCOMM_ERR_PEER,
						       "closed its connection (%s: it died or destroyed its communicator)",
						       strerror(err));
				ibc_tcp_conn_close(t, c);
				return ibc_tcp_dead_err(t, peer, op, chan);
			}
			ibc_tcp_peer_mark_dead(p, IBCOMM_ERR_TRANSPORT, "could not be written to (%s)", strerror(err));
			ibc_tcp_conn_close(t, c);
			return ibc_err(t->comm, IBCOMM_ERR_TRANSPORT, "rank %d: sending to peer rank %d (%s) during %s: %s",
				       t->comm->rank, peer, ibc_tcp_chan_name(chan), op, strerror(err));
		}
		/* The socket is full: wait for room while reading everything else. */
		st = ibc_tcp_progress(t, c, ibc_deadline_left(dl), &events);
		if (st == IBCOMM_OK && c->fd < 0)
			return ibc_tcp_dead_err(t, peer, op, chan);
		if (st == IBCOMM_OK && !events && ibc_deadline_left(dl) == 0)
			st = ibc_err(t->comm, IBCOMM_ERR_TIMEOUT,
				     "rank %d: timed out sending %zu bytes to peer rank %d on channel %s during %s (it does not read)",
				     t->comm->rank, IBC_TCP_HDR_LEN + len, peer, ibc_tcp_chan_name(chan), op);
		if (st) {
			if (left != IBC_TCP_HDR_LEN + len && c->fd >= 0) {
				ibc_tcp_peer_mark_dead(p, st, "has a half-written frame (a %s was interrupted)", op);
				ibc_tcp_conn_close(t, c);
			}
			return st;
		}
	}
}

/* Opens the data connection to peer and sends HELLO (and, with a job key, authenticates). */
ibcomm_status_t ibc_tcp_connect(struct tcp *t, int peer, int chan, ibc_deadline_t dl)
{
	struct ibcomm *comm = t->comm;
	struct tcp_peer *p = &t->peers[peer];
	char key[128], addr[128], host[INET6_ADDRSTRLEN + 32], port[16], err[256];
	uint8_t frame[IBC_TCP_HDR_LEN + IBC_TCP_HELLO_MAX];
	const char *why;
	size_t alen = 0, idlen = strlen(comm->id), n;
	struct ibc_tcp_hello hello = { .rank = (uint32_t)comm->rank, .size = (uint32_t)comm->size,
				       .max_chunk = (uint32_t)t->tp.max_chunk, .nslots = t->tp.nslots,
				       .id = comm->id, .idlen = (uint8_t)idlen };
	ibcomm_status_t st;
	int fd;

	if (idlen > UINT8_MAX)
		return ibc_err(comm, IBCOMM_ERR_INVALID, "rank %d: communicator id \"%s\" too long for the TCP hello",
			       comm->rank, comm->id);
	if (comm->set.job_key[0]) {
		if (ibc_auth_nonce(p->out.nonce))
			return ibc_err(comm, IBCOMM_ERR_SYSTEM, "rank %d: no random bytes for the job-key authentication: %m",
				       comm->rank);
		hello.nonce = p->out.nonce;
	}
	n = ibc_tcp_hello_encode(&hello, frame, sizeof(frame));
	if (!n)
		return ibc_err(comm, IBCOMM_ERR_INVALID, "rank %d: communicator id \"%s\" too long for the TCP hello",
			       comm->rank, comm->id);

	snprintf(key, sizeof(key), "%s/tcp/%d", comm->id, peer);
	err[0] = '\0';
	st = ibc_boot_get(comm->boot, key, addr, sizeof(addr) - 1, &alen, dl, &comm->aborted, err, sizeof(err));
	if (st)
		return ibc_err(comm, st, "rank %d: looking up the TCP address of peer rank %d (key %s): %s", comm->rank,
			       peer, key, err);
	addr[IBC_MIN(alen, sizeof(addr) - 1)] = '\0';
	if (ibc_root_parse(addr, host, sizeof(host), port, sizeof(port), &why))
		return ibc_err(comm, IBCOMM_ERR_RENDEZVOUS, "rank %d: peer rank %d published a bad TCP address \"%s\": %s",
			       comm->rank, peer, addr, why);
	why = NULL;
	fd = ibc_sock_connect(host, port, true, dl, t->pipe[0], &comm->aborted, &why);
	if (fd < 0 && why)
		return ibc_err(comm, IBCOMM_ERR_RENDEZVOUS, "rank %d: peer rank %d published a bad TCP address \"%s\": %s",
			       comm->rank, peer, addr, why);
	if (fd < 0 && errno == ECANCELED)
		return ibc_tcp_abort_err(t, "connect");
	if (fd < 0 && errno == ETIMEDOUT && ibc_deadline_left(dl) == 0)
		return ibc_err(comm, IBCOMM_ERR_TIMEOUT, "rank %d: timed out connecting to peer rank %d at %s", comm->rank,
			       peer, addr);
	if (fd < 0) {
		ibc_tcp_peer_mark_dead(p, IBCOMM_ERR_PEER, "could not be connected to at %s (%s: is it still running?)", addr,
				       strerror(errno));
		return ibc_tcp_dead_err(t, peer, "connect", chan);
	}

	p->out.fd = fd;
	ibc_tcp_conn_list(t, &p->out);
	t->tp.cnt.connects++;
	ibc_cinfo(comm, "rank %d: TCP connected to peer rank %d at %s", comm->rank, peer, addr);

	st = ibc_tcp_send_frame(t, peer, chan, frame, frame + IBC_TCP_HDR_LEN, n - IBC_TCP_HDR_LEN, dl, "connect");
	if (st || !hello.nonce)
		return st;
	return ibc_tcp_connect_auth(t, peer, chan, dl);
}
