/*
 * The TCP transport's connections (tcp_int.h): the connection list, why a peer is unusable,
 * the receive side of a connection (header, payload, whole frame) and accepting new ones.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "wire.h"
#include "tcp_int.h"

const char *ibc_tcp_chan_name(int chan)
{
	return chan == IBC_CHAN_COLL ? "coll" : chan == IBC_CHAN_P2P ? "p2p" : "?";
}

bool ibc_tcp_aborted(const struct tcp *t)
{
	return atomic_load(&t->comm->aborted) != 0;
}

ibcomm_status_t ibc_tcp_abort_err(struct tcp *t, const char *what)
{
	return ibc_err(t->comm, IBCOMM_ERR_ABORTED, "rank %d: communicator aborted during TCP %s", t->comm->rank,
		       what);
}

/* ---- connection list ---- */

void ibc_tcp_conn_reset(struct tcp_conn *c, enum tcp_conn_kind kind, int peer)
{
	memset(c, 0, offsetof(struct tcp_conn, from));
	c->fd = -1;
	c->kind = kind;
	c->peer = peer;
	c->idx = -1;
}

void ibc_tcp_conn_list(struct tcp *t, struct tcp_conn *c)
{
	c->idx = (int)t->nconns;
	t->conns[t->nconns++] = c;
}

void ibc_tcp_conn_close(struct tcp *t, struct tcp_conn *c)
{
	if (c->idx >= 0) {
		struct tcp_conn *last = t->conns[--t->nconns];

		t->conns[c->idx] = last;
		last->idx = c->idx;
		c->idx = -1;
	}
	if (c->fd >= 0)
		close(c->fd);
	ibc_tcp_conn_reset(c, c->kind, c->peer);
}

void ibc_tcp_pending_free(struct tcp *t, struct tcp_conn *c)
{
	for (unsigned i = 0; i < t->npending; i++) {
		if (t->pending[i] == c) {
			t->pending[i] = t->pending[--t->npending];
			break;
		}
	}
	if (c->fd >= 0)
		close(c->fd);
	free(c);
}

/* Drops a connection that never became a valid in-connection; never fatal for the comm. */
int ibc_tcp_pending_drop(struct tcp *t, struct tcp_conn *c, const char *fmt, ...)
{
	char why[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	ibc_cwarn(t->comm, "rank %d: TCP transport: dropping the connection from %s: %s", t->comm->rank, c->from, why);
	ibc_tcp_pending_free(t, c);
	return TCP_GONE;
}

/* Records why a peer is unusable (the first reason wins). */
void ibc_tcp_peer_mark_dead(struct tcp_peer *p, ibcomm_status_t st, const char *fmt, ...)
{
	va_list ap;

	if (p->dead)
		return;
	p->dead = true;
	p->dead_st = st;
	va_start(ap, fmt);
	vsnprintf(p->why, sizeof(p->why), fmt, ap);
	va_end(ap);
}

#define DEAD_NOTICE_GRACE_MS 500 /* named in ibc_tcp_dead_err()'s message */

ibcomm_status_t ibc_tcp_dead_err(struct tcp *t, int peer, const char *op, int chan)
{
	struct tcp_peer *p = &t->peers[peer];

	/*
	 * A notice of the rendezvous may say more (killed; rank 0, the server): prefer it. It can
	 * trail the socket error by a few milliseconds (a refused connection to a rank just
	 * killed), so wait briefly for it.
	 */
	bool left = false;

	if (p->dead_st == IBCOMM_ERR_PEER && t->comm->boot) {
		uint64_t until = ibc_now_ms() + DEAD_NOTICE_GRACE_MS;

		for (;;) {
			struct pollfd pf = { .fd = ibc_boot_fd(t->comm->boot), .events = POLLIN };
			uint64_t now;

			if (ibc_tcp_notices_check(t, true) == IBCOMM_ERR_PEER)
				return IBCOMM_ERR_PEER;
			now = ibc_now_ms();
			/* the rendezvous is up and reported no death: the peer said goodbye */
			left = now >= until && pf.fd >= 0;
			if (now >= until || pf.fd < 0 || ibc_tcp_aborted(t))
				break;
			poll(&pf, 1, (int)(until - now));
		}
	}
	return ibc_err(t->comm, p->dead_st, "rank %d: peer rank %d %s during %s on channel %s%s", t->comm->rank, peer,
		       p->why, op, ibc_tcp_chan_name(chan),
		       left ? "; the rendezvous reported no death within 500 ms: it most likely left (destroyed its "
			      "communicator) while this rank still needed it" : "");
}

static void mark_notice(void *arg, int r)
{
	ibc_tcp_peer_mark_dead(&((struct tcp *)arg)->peers[r], IBCOMM_ERR_PEER, "died (the rendezvous server reported it)");
}

/*
 * Failure notices of the rendezvous (ibc_notices_poll): every call fails naming the dead, also
 * on ranks that never talked to them. `readable`: the rendezvous connection polled readable.
 */
ibcomm_status_t ibc_tcp_notices_check(struct tcp *t, bool readable)
{
	if (!ibc_notices_poll(t->comm, &t->notes, readable, mark_notice, t))
		return IBCOMM_OK;
	return ibc_err(t->comm, IBCOMM_ERR_PEER, "rank %d: %s", t->comm->rank, t->notes.why);
}

/* A protocol violation: the peer's connections are closed and the peer is unusable. */
ibcomm_status_t ibc_tcp_proto_err(struct tcp *t, struct tcp_conn *c, const char *fmt, ...)
{
	struct tcp_peer *p = &t->peers[c->peer];
	int peer = c->peer;
	char what[200];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	ibc_tcp_peer_mark_dead(p, IBCOMM_ERR_TRANSPORT, "broke the TCP protocol (%s)", what);
	ibc_tcp_conn_close(t, &p->in);
	ibc_tcp_conn_close(t, &p->out);
	return ibc_err(t->comm, IBCOMM_ERR_TRANSPORT, "rank %d: TCP protocol error from peer rank %d: %s",
		       t->comm->rank, peer, what);
}

/* ---- receiving ---- */

static ibcomm_status_t ring_alloc(struct tcp *t, struct tcp_ring *r, int peer, int chan)
{
	size_t bytes = (size_t)t->tp.nslots * t->tp.max_chunk;
	void *mem;

	if (posix_memalign(&mem, 4096, bytes ? bytes : 1))
		goto err_nomem;
	r->len = calloc(2 * (size_t)t->tp.nslots, sizeof(uint32_t));
	if (!r->len)
		goto err_free_mem;
	r->tag = r->len + t->tp.nslots;
	r->mem = mem;
	return IBCOMM_OK;

err_free_mem:
	free(mem);
err_nomem:
	return ibc_err(t->comm, IBCOMM_ERR_NOMEM, "rank %d: no memory for the %zu-byte TCP receive ring of peer rank %d, channel %s",
		       t->comm->rank, bytes, peer, ibc_tcp_chan_name(chan));
}

void ibc_tcp_ring_free(struct tcp_ring *r)
{
	free(r->mem);
	free(r->len);
	memset(r, 0, sizeof(*r));
}

/* The peer closed or reset connection c. */
static int conn_lost(struct tcp *t, struct tcp_conn *c, int err, unsigned *events)
{
	struct tcp_peer *p;

	if (c->kind == CONN_PENDING) {
		if (c->auth == TCP_AUTH_WAIT_PROOF)
			ibc_cwarn(t->comm, "rank %d: TCP transport: the connection from %s (claiming to be rank %d) closed during the job-key authentication: its job key does not match?",
				 t->comm->rank, c->from, c->peer);
		else
			ibc_cinfo(t->comm, "rank %d: TCP connection from %s closed before its hello", t->comm->rank, c->from);
		ibc_tcp_pending_free(t, c);
		return TCP_GONE;
	}
	p = &t->peers[c->peer];
	if (err)
		ibc_tcp_peer_mark_dead(p, IBCOMM_ERR_PEER, "reset its connection (%s: it died or destroyed its communicator)",
				       strerror(err));
	else
		ibc_tcp_peer_mark_dead(p, IBCOMM_ERR_PEER, "closed its connection (it died or destroyed its communicator)");
	ibc_tcp_conn_close(t, c);
	(*events)++;
	return TCP_GONE;
}

/* A whole frame has arrived. */
static int frame_done(struct tcp *t, struct tcp_conn *c, unsigned *events)
{
	struct tcp_ring *r;

	if (c->kind == CONN_PENDING)
		return ibc_tcp_hello_done(t, c, events);
	if (c->kind == CONN_OUT) /* the only frames with a payload there */
		return ibc_tcp_auth_challenge_done(t, c, events);
	r = &t->peers[c->peer].ring[c->chan];
	r->len[c->slot] = c->len;
	r->tag[c->slot] = c->tag;
	r->nfill++;
	(*events)++;
	return IBCOMM_OK;
}

/* A whole header has arrived: check every field and set up the payload. */
static int header_done(struct tcp *t, struct tcp_conn *c, unsigned *events)
{
	struct ibc_tcp_hdr h;
	uint8_t version, type, chan, flags;
	uint32_t tag, len, credits;
	struct tcp_peer *p;
	struct tcp_ring *r;
	ibcomm_status_t st;

	ibc_tcp_hdr_decode(c->hdr, &h);
	if (c->kind == CONN_PENDING || c->auth) {
		/* a handshake frame: HELLO or PROOF from a connector, CHALLENGE or refusal from an acceptor */
		uint8_t want = c->kind == CONN_OUT ? (c->auth == TCP_AUTH_WAIT_CHALLENGE ? IBC_TCP_CHALLENGE : 0) :
			       c->auth == TCP_AUTH_WAIT_PROOF ? IBC_TCP_PROOF : IBC_TCP_HELLO;
		const char *why;

		if (ibc_tcp_hs_check(&h, want, &why)) {
			if (c->kind == CONN_PENDING)
				return ibc_tcp_pending_drop(t, c, "%s (wire version %u, type %u, length %u)", why, h.version,
							    h.type, h.len);
			return ibc_tcp_proto_err(t, c, "%s (type %u, length %u) during the job-key authentication", why, h.type,
						 h.len);
		}
		c->hs_type = h.type;
		c->len = h.len;
		c->dst = c->hello;
		c->want = h.len;
		if (!h.len)
			return frame_done(t, c, events);
		return IBCOMM_OK;
	}
	version = h.version;
	type = h.type;
	chan = h.chan;
	flags = h.flags;
	tag = h.tag;
	len = h.len;
	credits = h.credits;
	p = &t->peers[c->peer];
	if (version != IBC_TCP_VERSION)
		return ibc_tcp_proto_err(t, c, "wire version %u, expected %u", version, IBC_TCP_VERSION);
	if (chan >= IBC_NCHAN || flags)
		return ibc_tcp_proto_err(t, c, "bad channel %u or flags %#x", chan, flags);
	if (c->kind == CONN_OUT) {
		if (type != IBC_TCP_CREDIT || len || tag || !credits ||
		    credits > t->tp.nslots - p->credits[chan])
			return ibc_tcp_proto_err(t, c, "bad frame on a data connection (type %u, length %u, %u credits, %u held)",
						 type, len, credits, p->credits[chan]);
		p->credits[chan] += credits;
		(*events)++;
		return IBCOMM_OK;
	}
	/* A data frame may carry credits for our own data to this peer (piggybacked, see tcp_release). */
	if (type != IBC_TCP_DATA || len > t->tp.max_chunk || credits > t->tp.nslots - p->credits[chan])
		return ibc_tcp_proto_err(t, c, "bad frame (type %u, length %u, %u credits, %u held; largest chunk %zu)", type,
					 len, credits, p->credits[chan], t->tp.max_chunk);
	if (credits) {
		p->credits[chan] += credits;
		(*events)++;
	}
	r = &p->ring[chan];
	if (r->nfill >= t->tp.nslots)
		return ibc_tcp_proto_err(t, c, "data on channel %s without a credit (all %u slots full)", ibc_tcp_chan_name(chan),
					 t->tp.nslots);
	if (!r->mem) {
		st = ring_alloc(t, r, c->peer, chan);
		if (st) {
			ibc_tcp_peer_mark_dead(p, st, "could not be received from (no memory)");
			ibc_tcp_conn_close(t, c);
			return st;
		}
	}
	c->chan = chan;
	c->tag = tag;
	c->len = len;
	c->slot = (r->rel + r->nfill) % t->tp.nslots;
	c->dst = r->mem + (size_t)c->slot * t->tp.max_chunk;
	c->want = len;
	if (!len)
		return frame_done(t, c, events);
	return IBCOMM_OK;
}

/*
 * Reads what c has (never blocks): headers, then payloads straight into their slots. Returns
 * IBCOMM_OK (also when c was closed, dropped or promoted) or a negative status.
 */
ibcomm_status_t ibc_tcp_conn_read(struct tcp *t, struct tcp_conn *c, unsigned *events)
{
	for (;;) {
		size_t asked, got;
		ssize_t n;
		int rc;

		if (c->want) {
			/* The payload, and the next header with it when there is one. */
			struct iovec iov[2] = { { c->dst, c->want }, { c->hdr, IBC_TCP_HDR_LEN } };
			int niov = c->kind == CONN_PENDING || c->auth ? 1 : 2;

			asked = c->want + (niov == 2 ? IBC_TCP_HDR_LEN : 0);
			n = readv(c->fd, iov, niov);
		} else {
			asked = IBC_TCP_HDR_LEN - c->hdr_got;
			n = recv(c->fd, c->hdr + c->hdr_got, asked, 0);
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return IBCOMM_OK;
		if (n <= 0) {
			conn_lost(t, c, n < 0 ? errno : 0, events);
			return IBCOMM_OK;
		}
		got = (size_t)n;
		if (c->want) {
			size_t take = IBC_MIN(got, c->want);

			c->dst += take;
			c->want -= take;
			got -= take;
			if (!c->want) {
				rc = frame_done(t, c, events);
				if (rc)
					return rc < 0 ? rc : IBCOMM_OK;
				c->hdr_got = (unsigned)got;
			}
		} else {
			c->hdr_got += (unsigned)got;
		}
		if (c->hdr_got == IBC_TCP_HDR_LEN) {
			c->hdr_got = 0;
			rc = header_done(t, c, events);
			if (rc)
				return rc < 0 ? rc : IBCOMM_OK;
		}
		if ((size_t)n < asked)
			return IBCOMM_OK; /* drained: poll() tells when there is more */
	}
}

void ibc_tcp_accept_all(struct tcp *t)
{
	for (;;) {
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);
		struct tcp_conn *c, **np;
		char host[INET6_ADDRSTRLEN] = "?";
		int one = 1, fd, port = 0;

		fd = accept4(t->lfd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK)
				ibc_cwarn(t->comm, "rank %d: TCP accept on %s: %m", t->comm->rank, t->addr);
			return;
		}
		if (ss.ss_family == AF_INET) {
			struct sockaddr_in *a = (struct sockaddr_in *)&ss;

			inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host));
			port = ntohs(a->sin_port);
		} else if (ss.ss_family == AF_INET6) {
			struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;

			inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host));
			port = ntohs(a->sin6_port);
		}
		if (t->npending >= TCP_MAX_PENDING) {
			ibc_cwarn(t->comm, "rank %d: TCP transport: refusing the connection from %s:%d: %u connections have not said hello",
				 t->comm->rank, host, port, t->npending);
			close(fd);
			continue;
		}
		if (t->npending == t->cappending) {
			unsigned cap = t->cappending ? 2 * t->cappending : 8;

			np = realloc(t->pending, cap * sizeof(*np));
			if (!np) {
				close(fd);
				continue;
			}
			t->pending = np;
			t->cappending = cap;
		}
		c = calloc(1, sizeof(*c));
		if (!c) {
			close(fd);
			continue;
		}
		ibc_tcp_conn_reset(c, CONN_PENDING, -1);
		c->fd = fd;
		c->hs_deadline = ibc_now_ms() + IBC_AUTH_HANDSHAKE_MS;
		snprintf(c->from, sizeof(c->from), "%s:%d", host, port);
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		t->pending[t->npending++] = c;
		ibc_ctrace(t->comm, "rank %d: TCP accepted a connection from %s", t->comm->rank, c->from);
	}
}
