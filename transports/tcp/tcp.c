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
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>
#include <linux/sockios.h>

#include "auth.h"
#include "ibc.h"
#include "wire.h"
#include "tcp.h"
#include "tcp_addr.h"

_Static_assert(IBC_TCP_NONCE_LEN == IBC_AUTH_NONCE_LEN && IBC_TCP_PROOF_LEN == IBC_AUTH_MAC_LEN,
	       "TCP auth fields follow lib/auth.h");

/* Internal answer of the connection helpers: the connection is gone (closed or promoted). */
#define TCP_GONE 2
#define TCP_MAX_PENDING 256
#define TCP_LINGER_MS 2000

struct tcp_ring {
	uint8_t *mem;   /* nslots * max_chunk, allocated on the channel's first DATA */
	uint32_t *len;  /* per slot */
	uint32_t *tag;  /* per slot */
	unsigned rel;   /* oldest slot not yet released */
	unsigned nfill; /* filled slots, handed out or not */
	unsigned ngot;  /* of those, handed out by get() */
};

enum tcp_conn_kind { CONN_PENDING, CONN_IN, CONN_OUT };

struct tcp_conn {
	int fd;
	enum tcp_conn_kind kind;
	int peer;
	int idx; /* position in tcp->conns, -1 when not listed */
	/* receive state: a header, then `want` payload bytes into dst */
	uint8_t hdr[IBC_TCP_HDR_LEN];
	unsigned hdr_got;
	uint8_t *dst;
	size_t want;
	uint8_t chan;
	uint32_t tag, len;
	unsigned slot;
	/* credit frames not yet fully written (in-connections) */
	uint8_t obuf[IBC_NCHAN * IBC_TCP_HDR_LEN];
	unsigned olen, ooff;
	bool wbroken; /* the peer no longer reads: stop sending credits */
	/* job-key handshake (lib/auth.h; tcp.h), pending and out-connections */
	uint8_t auth;                      /* TCP_AUTH_* */
	uint8_t hs_type;                   /* type of the handshake frame being received */
	uint8_t nonce[IBC_AUTH_NONCE_LEN];  /* ours */
	uint8_t pnonce[IBC_AUTH_NONCE_LEN]; /* the other end's */
	/* pending connections only */
	char from[INET6_ADDRSTRLEN + 16];
	uint8_t hello[IBC_TCP_HELLO_MAX];  /* also the payload of the other handshake frames */
	uint64_t hs_deadline;              /* not through the handshake by then: dropped */
};

/*
 * Handshake states. Pending (accepted) connection: NONE until the HELLO, then WAIT_PROOF
 * when the job has a key. Out-connection: WAIT_CHALLENGE after the HELLO, SEND_PROOF once
 * the acceptor's proof checked out, NONE when done.
 */
enum { TCP_AUTH_NONE, TCP_AUTH_WAIT_CHALLENGE, TCP_AUTH_SEND_PROOF, TCP_AUTH_WAIT_PROOF };

struct tcp_peer {
	struct tcp_conn out; /* data to the peer, credits from it */
	struct tcp_conn in;  /* data from the peer, credits to it */
	bool had_in;         /* an in-connection was accepted once (no second one) */
	unsigned credits[IBC_NCHAN];
	unsigned owed[IBC_NCHAN]; /* credits not yet sent back */
	struct tcp_ring ring[IBC_NCHAN];
	bool dead;
	ibcomm_status_t dead_st;
	char why[160];
};

struct tcp {
	ibc_tp_t tp; /* first */
	struct ibcomm *comm;
	int lfd;
	int pipe[2]; /* self-pipe written by interrupt() */
	char addr[INET6_ADDRSTRLEN + 24];
	struct tcp_peer *peers;
	struct tcp_conn **conns; /* established connections, for poll() */
	unsigned nconns;
	struct tcp_conn **pending; /* accepted, HELLO not yet validated */
	unsigned npending, cappending;
	struct pollfd *pfd; /* poll set and the connection of each entry */
	struct tcp_conn **pcon;
	unsigned cappfd;
	unsigned spin_us; /* how long progress() polls without sleeping before it blocks */
	unsigned dead_gen; /* ibc_rdv_poll() counter last looked at */
	int dead_peer;     /* first member the rendezvous reported dead, or -1 */
	char dead_why[320];
};

static const char *chan_name(int chan)
{
	return chan == IBC_CHAN_COLL ? "coll" : chan == IBC_CHAN_P2P ? "p2p" : "?";
}

static bool aborted(const struct tcp *t)
{
	return atomic_load(&t->comm->aborted) != 0;
}

static ibcomm_status_t abort_err(struct tcp *t, const char *what)
{
	return ibc_err(t->comm, IBCOMM_ERR_ABORTED, "rank %d: communicator aborted during TCP %s", t->comm->rank,
		       what);
}

/* ---- connection list ---- */

static void conn_reset(struct tcp_conn *c, enum tcp_conn_kind kind, int peer)
{
	memset(c, 0, offsetof(struct tcp_conn, from));
	c->fd = -1;
	c->kind = kind;
	c->peer = peer;
	c->idx = -1;
}

static void conn_list(struct tcp *t, struct tcp_conn *c)
{
	c->idx = (int)t->nconns;
	t->conns[t->nconns++] = c;
}

static void conn_close(struct tcp *t, struct tcp_conn *c)
{
	if (c->idx >= 0) {
		struct tcp_conn *last = t->conns[--t->nconns];

		t->conns[c->idx] = last;
		last->idx = c->idx;
		c->idx = -1;
	}
	if (c->fd >= 0)
		close(c->fd);
	conn_reset(c, c->kind, c->peer);
}

static void pending_free(struct tcp *t, struct tcp_conn *c)
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
static int pending_drop(struct tcp *t, struct tcp_conn *c, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int pending_drop(struct tcp *t, struct tcp_conn *c, const char *fmt, ...)
{
	char why[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	ibc_cwarn(t->comm, "rank %d: TCP transport: dropping the connection from %s: %s", t->comm->rank, c->from, why);
	pending_free(t, c);
	return TCP_GONE;
}

/* Records why a peer is unusable (the first reason wins). */
static void peer_mark_dead(struct tcp_peer *p, ibcomm_status_t st, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void peer_mark_dead(struct tcp_peer *p, ibcomm_status_t st, const char *fmt, ...)
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

static ibcomm_status_t notices_check(struct tcp *t, bool readable);

#define DEAD_NOTICE_GRACE_MS 500

static ibcomm_status_t dead_err(struct tcp *t, int peer, const char *op, int chan)
{
	struct tcp_peer *p = &t->peers[peer];

	/*
	 * A notice of the rendezvous may say more (killed; rank 0, the server): prefer it. It can
	 * trail the socket error by a few milliseconds (a refused connection to a rank just
	 * killed), so wait briefly for it.
	 */
	if (p->dead_st == IBCOMM_ERR_PEER && t->comm->rdv) {
		uint64_t until = ibc_now_ms() + DEAD_NOTICE_GRACE_MS;

		for (;;) {
			struct pollfd pf = { .fd = ibc_rdv_fd(t->comm->rdv), .events = POLLIN };
			uint64_t now;

			if (notices_check(t, true) == IBCOMM_ERR_PEER)
				return IBCOMM_ERR_PEER;
			now = ibc_now_ms();
			if (now >= until || pf.fd < 0 || aborted(t))
				break;
			poll(&pf, 1, (int)(until - now));
		}
	}
	return ibc_err(t->comm, p->dead_st, "rank %d: peer rank %d %s during %s on channel %s", t->comm->rank, peer,
		       p->why, op, chan_name(chan));
}

/*
 * Failure notices of the rendezvous (ibc.h): once a member of this communicator is reported
 * dead, every call fails naming it, also on ranks that never talked to it. `readable`: the
 * rendezvous connection polled readable.
 */
static ibcomm_status_t notices_check(struct tcp *t, bool readable)
{
	struct ibcomm *comm = t->comm;
	char why[sizeof(t->dead_why)];
	unsigned gen;

	if (t->dead_peer < 0) {
		if (!comm->rdv)
			return IBCOMM_OK;
		gen = ibc_rdv_poll(comm->rdv, readable);
		if (gen == t->dead_gen)
			return IBCOMM_OK;
		t->dead_gen = gen;
		for (int r = ibc_dead_rank(comm, 0, why, sizeof(why)); r >= 0; r = ibc_dead_rank(comm, r + 1, why, sizeof(why))) {
			peer_mark_dead(&t->peers[r], IBCOMM_ERR_PEER, "died (the rendezvous server reported it)");
			if (t->dead_peer >= 0)
				continue;
			t->dead_peer = r;
			snprintf(t->dead_why, sizeof(t->dead_why), "%s", why);
		}
		if (t->dead_peer < 0)
			return IBCOMM_OK;
	}
	return ibc_err(comm, IBCOMM_ERR_PEER, "rank %d: %s", comm->rank, t->dead_why);
}

/* A protocol violation: the peer's connections are closed and the peer is unusable. */
static ibcomm_status_t proto_err(struct tcp *t, struct tcp_conn *c, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static ibcomm_status_t proto_err(struct tcp *t, struct tcp_conn *c, const char *fmt, ...)
{
	struct tcp_peer *p = &t->peers[c->peer];
	int peer = c->peer;
	char what[200];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	peer_mark_dead(p, IBCOMM_ERR_TRANSPORT, "broke the TCP protocol (%s)", what);
	conn_close(t, &p->in);
	conn_close(t, &p->out);
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
		       t->comm->rank, bytes, peer, chan_name(chan));
}

static void ring_free(struct tcp_ring *r)
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
		pending_free(t, c);
		return TCP_GONE;
	}
	p = &t->peers[c->peer];
	if (err)
		peer_mark_dead(p, IBCOMM_ERR_PEER, "reset its connection (%s: it died or destroyed its communicator)",
			       strerror(err));
	else
		peer_mark_dead(p, IBCOMM_ERR_PEER, "closed its connection (it died or destroyed its communicator)");
	conn_close(t, c);
	(*events)++;
	return TCP_GONE;
}

/* ---- job-key authentication of data connections (lib/auth.h, tcp.h) ---- */

/* What the proofs of a connection from `connector` to `acceptor` are bound to. */
static size_t auth_ctx(const struct tcp *t, int connector, int acceptor, uint8_t ctx[IBC_AUTH_CTX_MAX])
{
	ibc_wbuf_t w = ibc_wbuf(ctx, IBC_AUTH_CTX_MAX);
	size_t idlen = strlen(t->comm->id);

	ibc_w_bytes(&w, "tcp", 3);
	ibc_w_u8(&w, (uint8_t)idlen);
	ibc_w_bytes(&w, t->comm->id, idlen);
	ibc_w_u32(&w, (uint32_t)connector);
	ibc_w_u32(&w, (uint32_t)acceptor);
	ibc_w_u32(&w, (uint32_t)t->comm->size);
	return w.ok ? w.len : 0;
}

/* Refuses a pending connection for its key: tells it (best effort), then drops it (logged). */
static int auth_refuse(struct tcp *t, struct tcp_conn *c, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int auth_refuse(struct tcp *t, struct tcp_conn *c, const char *fmt, ...)
{
	uint8_t frame[IBC_TCP_HDR_LEN + IBC_TCP_TEXT_MAX];
	char text[IBC_TCP_TEXT_MAX + 1];
	struct ibc_tcp_auth a = { .text = text };
	va_list ap;
	size_t n;

	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	a.textlen = strlen(text);
	n = ibc_tcp_auth_encode(IBC_TCP_AUTH_FAILED, &a, frame, sizeof(frame));
	if (n && send(c->fd, frame, n, MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
		ibc_ctrace(t->comm, "rank %d: could not tell %s why it is refused: %m", t->comm->rank, c->from);
	return pending_drop(t, c, "%s", text);
}

/* The acceptor's half after a HELLO with a nonce: send our nonce and our proof. */
static int auth_challenge(struct tcp *t, struct tcp_conn *c, const struct ibc_tcp_hello *h)
{
	struct ibcomm *comm = t->comm;
	uint8_t ctx[IBC_AUTH_CTX_MAX], proof[IBC_AUTH_MAC_LEN], frame[IBC_TCP_HDR_LEN + 2 * IBC_AUTH_MAC_LEN];
	struct ibc_tcp_auth a = { .nonce = c->nonce, .proof = proof };
	size_t ctxlen, n;

	if (!comm->set.job_key[0])
		return auth_refuse(t, c, "the job key does not match: rank %u has a job key (IBCOMM_JOB_KEY), rank %d has none",
				   h->rank, comm->rank);
	if (!h->nonce)
		return auth_refuse(t, c, "the job key does not match: rank %d requires the job key (IBCOMM_JOB_KEY), rank %u has none",
				   comm->rank, h->rank);
	memcpy(c->pnonce, h->nonce, IBC_AUTH_NONCE_LEN);
	c->peer = (int)h->rank; /* claimed, not yet proven */
	ctxlen = auth_ctx(t, c->peer, comm->rank, ctx);
	if (!ctxlen || ibc_auth_nonce(c->nonce) ||
	    ibc_auth_proof(comm->set.job_key, IBC_AUTH_ACCEPTOR, c->pnonce, c->nonce, ctx, ctxlen, proof))
		return pending_drop(t, c, "cannot compute an authentication challenge");
	n = ibc_tcp_auth_encode(IBC_TCP_CHALLENGE, &a, frame, sizeof(frame));
	/* a fresh socket has room for these few bytes; a client that does not read is dropped */
	if (!n || send(c->fd, frame, n, MSG_NOSIGNAL | MSG_DONTWAIT) != (ssize_t)n)
		return pending_drop(t, c, "cannot send the authentication challenge");
	c->auth = TCP_AUTH_WAIT_PROOF;
	return IBCOMM_OK;
}

/* Promote: the pending connection becomes the in-connection of rank. */
static int pending_promote(struct tcp *t, struct tcp_conn *c, int rank, unsigned *events)
{
	struct tcp_peer *p = &t->peers[rank];

	if (p->had_in)
		return pending_drop(t, c, "rank %d is already connected", rank);
	p->in.fd = c->fd;
	p->in.kind = CONN_IN;
	p->in.peer = rank;
	p->had_in = true;
	conn_list(t, &p->in);
	c->fd = -1;
	ibc_cinfo(t->comm, "rank %d: TCP connection from peer rank %d (%s)%s", t->comm->rank, rank, c->from,
		 c->auth == TCP_AUTH_WAIT_PROOF ? ", authenticated" : "");
	pending_free(t, c);
	(*events)++;
	return TCP_GONE;
}

/* The acceptor's check of the connector's PROOF. */
static int auth_proof_done(struct tcp *t, struct tcp_conn *c, unsigned *events)
{
	uint8_t ctx[IBC_AUTH_CTX_MAX];
	struct ibc_tcp_auth a;
	const char *why;
	size_t ctxlen;

	if (ibc_tcp_auth_decode(IBC_TCP_PROOF, c->hello, c->len, &a, &why))
		return pending_drop(t, c, "%s", why);
	ctxlen = auth_ctx(t, c->peer, t->comm->rank, ctx);
	if (!ibc_auth_check(t->comm->set.job_key, IBC_AUTH_CONNECTOR, c->pnonce, c->nonce, ctx, ctxlen, a.proof))
		return auth_refuse(t, c, "the job key (IBCOMM_JOB_KEY) of the connection claiming to be rank %d does not match",
				   c->peer);
	return pending_promote(t, c, c->peer, events);
}

/* The connector's check of the acceptor's CHALLENGE (or its refusal). */
static int auth_challenge_done(struct tcp *t, struct tcp_conn *c, unsigned *events)
{
	struct tcp_peer *p = &t->peers[c->peer];
	uint8_t ctx[IBC_AUTH_CTX_MAX];
	struct ibc_tcp_auth a;
	const char *why;
	size_t ctxlen;

	(*events)++;
	if (ibc_tcp_auth_decode(c->hs_type, c->hello, c->len, &a, &why))
		return proto_err(t, c, "%s", why);
	if (c->hs_type == IBC_TCP_AUTH_FAILED) {
		peer_mark_dead(p, IBCOMM_ERR_AUTH, "refused this rank's TCP connection (%.*s)", (int)a.textlen, a.text);
		conn_close(t, c);
		return TCP_GONE;
	}
	ctxlen = auth_ctx(t, t->comm->rank, c->peer, ctx);
	if (!ibc_auth_check(t->comm->set.job_key, IBC_AUTH_ACCEPTOR, c->nonce, a.nonce, ctx, ctxlen, a.proof)) {
		peer_mark_dead(p, IBCOMM_ERR_AUTH,
			       "did not prove the job key at its TCP address (the job key does not match, or another process listens there)");
		conn_close(t, c);
		return TCP_GONE;
	}
	memcpy(c->pnonce, a.nonce, IBC_AUTH_NONCE_LEN);
	c->auth = TCP_AUTH_SEND_PROOF;
	return IBCOMM_OK;
}

static int hello_done(struct tcp *t, struct tcp_conn *c, unsigned *events)
{
	struct ibcomm *comm = t->comm;
	struct ibc_tcp_hello h;
	const char *why;

	if (c->auth == TCP_AUTH_WAIT_PROOF)
		return auth_proof_done(t, c, events);
	if (ibc_tcp_hello_decode(c->hello, c->len, &h, &why))
		return pending_drop(t, c, "%s", why);
	if (h.idlen != strlen(comm->id) || memcmp(h.id, comm->id, h.idlen))
		return pending_drop(t, c, "hello for communicator \"%.*s\", this is \"%s\"", (int)h.idlen, h.id,
				    comm->id);
	if (h.size != (uint32_t)comm->size)
		return pending_drop(t, c, "hello from rank %u of %u, this communicator has %d ranks", h.rank, h.size,
				    comm->size);
	if (h.max_chunk != t->tp.max_chunk || h.nslots != t->tp.nslots)
		return pending_drop(t, c, "peer rank %u uses %u slots of %u bytes, this rank %u of %zu (IBCOMM_TCP_*)",
				    h.rank, h.nslots, h.max_chunk, t->tp.nslots, t->tp.max_chunk);
	if (t->peers[h.rank].had_in)
		return pending_drop(t, c, "rank %u is already connected", h.rank);
	if (comm->set.job_key[0] || h.nonce)
		return auth_challenge(t, c, &h);
	return pending_promote(t, c, (int)h.rank, events);
}

/* A whole frame has arrived. */
static int frame_done(struct tcp *t, struct tcp_conn *c, unsigned *events)
{
	struct tcp_ring *r;

	if (c->kind == CONN_PENDING)
		return hello_done(t, c, events);
	if (c->kind == CONN_OUT) /* the only frames with a payload there */
		return auth_challenge_done(t, c, events);
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
				return pending_drop(t, c, "%s (wire version %u, type %u, length %u)", why, h.version,
						    h.type, h.len);
			return proto_err(t, c, "%s (type %u, length %u) during the job-key authentication", why, h.type,
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
		return proto_err(t, c, "wire version %u, expected %u", version, IBC_TCP_VERSION);
	if (chan >= IBC_NCHAN || flags)
		return proto_err(t, c, "bad channel %u or flags %#x", chan, flags);
	if (c->kind == CONN_OUT) {
		if (type != IBC_TCP_CREDIT || len || tag || !credits ||
		    credits > t->tp.nslots - p->credits[chan])
			return proto_err(t, c, "bad frame on a data connection (type %u, length %u, %u credits, %u held)",
					 type, len, credits, p->credits[chan]);
		p->credits[chan] += credits;
		(*events)++;
		return IBCOMM_OK;
	}
	/* A data frame may carry credits for our own data to this peer (piggybacked, see tcp_release). */
	if (type != IBC_TCP_DATA || len > t->tp.max_chunk || credits > t->tp.nslots - p->credits[chan])
		return proto_err(t, c, "bad frame (type %u, length %u, %u credits, %u held; largest chunk %zu)", type,
				 len, credits, p->credits[chan], t->tp.max_chunk);
	if (credits) {
		p->credits[chan] += credits;
		(*events)++;
	}
	r = &p->ring[chan];
	if (r->nfill >= t->tp.nslots)
		return proto_err(t, c, "data on channel %s without a credit (all %u slots full)", chan_name(chan),
				 t->tp.nslots);
	if (!r->mem) {
		st = ring_alloc(t, r, c->peer, chan);
		if (st) {
			peer_mark_dead(p, st, "could not be received from (no memory)");
			conn_close(t, c);
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
static ibcomm_status_t conn_read(struct tcp *t, struct tcp_conn *c, unsigned *events)
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

static void accept_all(struct tcp *t)
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
		conn_reset(c, CONN_PENDING, -1);
		c->fd = fd;
		c->hs_deadline = ibc_now_ms() + IBC_AUTH_HANDSHAKE_MS;
		snprintf(c->from, sizeof(c->from), "%s:%d", host, port);
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		t->pending[t->npending++] = c;
		ibc_ctrace(t->comm, "rank %d: TCP accepted a connection from %s", t->comm->rank, c->from);
	}
}

/* ---- sending credits ---- */

/* Sends the credits owed to p (never blocks; what does not fit is sent when the socket drains). */
static void credits_flush(struct tcp *t, struct tcp_peer *p)
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
			peer_mark_dead(p, IBCOMM_ERR_PEER, "closed its connection (%s: it died or destroyed its communicator)",
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
			pending_drop(t, c, "no %s within %d ms", c->auth == TCP_AUTH_WAIT_PROOF ? "job-key proof" : "hello",
				     IBC_AUTH_HANDSHAKE_MS);
	}
}

static ibcomm_status_t progress(struct tcp *t, struct tcp_conn *wout, int timeout, unsigned *events)
{
	unsigned n = 0, rdv_idx;
	bool rdv_ready = false;
	ibcomm_status_t st;
	int rc, rdv_fd;

	*events = 0;
	if (aborted(t))
		return abort_err(t, "wait");
	/* Before blocking, return every credit held back for piggybacking (tcp_release). */
	if (timeout != 0)
		for (int i = 0; i < t->comm->size; i++)
			if (t->peers[i].owed[IBC_CHAN_COLL] || t->peers[i].owed[IBC_CHAN_P2P])
				credits_flush(t, &t->peers[i]);
	st = notices_check(t, false);
	if (st)
		return st;
	st = pfd_reserve(t, 3 + t->nconns + t->npending);
	if (st)
		return st;
	t->pfd[n] = (struct pollfd){ .fd = t->pipe[0], .events = POLLIN };
	t->pcon[n++] = NULL;
	t->pfd[n] = (struct pollfd){ .fd = t->lfd, .events = POLLIN };
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
	if (t->comm->rdv && (rdv_fd = ibc_rdv_fd(t->comm->rdv)) >= 0) {
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
	if (aborted(t))
		return abort_err(t, "wait");
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
			accept_all(t);
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
			credits_flush(t, &t->peers[c->peer]);
		if (c == wout && (pf->revents & (POLLOUT | POLLERR | POLLHUP)))
			(*events)++;
		if (pf->revents & (POLLIN | POLLERR | POLLHUP)) {
			st = conn_read(t, c, events);
			if (st)
				return st;
		}
	}
	if (t->npending)
		pending_expire(t);
	if (rdv_ready)
		return notices_check(t, true);
	return IBCOMM_OK;
}

/* ---- sending data ---- */

/*
 * Writes a whole frame on p's out-connection; while the socket is full, services every other
 * socket. A frame cut short (timeout, abort) leaves the connection unusable.
 */
static ibcomm_status_t send_frame(struct tcp *t, int peer, int chan, const uint8_t *hdr, const void *buf, size_t len,
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
			return dead_err(t, peer, op, chan);
		if (c->fd < 0)
			return ibc_err(t->comm, IBCOMM_ERR_PEER, "rank %d: the connection to peer rank %d is closed (%s on channel %s)",
				       t->comm->rank, peer, op, chan_name(chan));
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
				peer_mark_dead(p, IBCOMM_ERR_PEER,
					       "closed its connection (%s: it died or destroyed its communicator)",
					       strerror(err));
				conn_close(t, c);
				return dead_err(t, peer, op, chan);
			}
			peer_mark_dead(p, IBCOMM_ERR_TRANSPORT, "could not be written to (%s)", strerror(err));
			conn_close(t, c);
			return ibc_err(t->comm, IBCOMM_ERR_TRANSPORT, "rank %d: sending to peer rank %d (%s) during %s: %s",
				       t->comm->rank, peer, chan_name(chan), op, strerror(err));
		}
		/* The socket is full: wait for room while reading everything else. */
		st = progress(t, c, ibc_deadline_left(dl), &events);
		if (st == IBCOMM_OK && c->fd < 0)
			return dead_err(t, peer, op, chan);
		if (st == IBCOMM_OK && !events && ibc_deadline_left(dl) == 0)
			st = ibc_err(t->comm, IBCOMM_ERR_TIMEOUT,
				     "rank %d: timed out sending %zu bytes to peer rank %d on channel %s during %s (it does not read)",
				     t->comm->rank, IBC_TCP_HDR_LEN + len, peer, chan_name(chan), op);
		if (st) {
			if (left != IBC_TCP_HDR_LEN + len && c->fd >= 0) {
				peer_mark_dead(p, st, "has a half-written frame (a %s was interrupted)", op);
				conn_close(t, c);
			}
			return st;
		}
	}
}

static ibcomm_status_t parse_hostport(const char *s, char *host, size_t hostcap, char *port, size_t portcap)
{
	const char *colon, *h = s;
	size_t hl;

	if (*s == '[') {
		const char *end = strchr(s, ']');

		if (!end || end[1] != ':')
			return IBCOMM_ERR_INVALID;
		h = s + 1;
		hl = (size_t)(end - h);
		colon = end + 1;
	} else {
		colon = strrchr(s, ':');
		if (!colon)
			return IBCOMM_ERR_INVALID;
		hl = (size_t)(colon - s);
	}
	if (!hl || hl >= hostcap || !colon[1] || strlen(colon + 1) >= portcap)
		return IBCOMM_ERR_INVALID;
	memcpy(host, h, hl);
	host[hl] = '\0';
	strcpy(port, colon + 1);
	return IBCOMM_OK;
}

/* Blocks (deadline, abort) until fd's non-blocking connect completes; returns 0 or an errno. */
static int connect_wait(struct tcp *t, int fd, ibc_deadline_t dl)
{
	for (;;) {
		struct pollfd pfd[2] = { { .fd = fd, .events = POLLOUT }, { .fd = t->pipe[0], .events = POLLIN } };
		int rc, err = 0;
		socklen_t sl = sizeof(err);

		if (aborted(t))
			return ECANCELED;
		rc = poll(pfd, 2, ibc_deadline_left(dl));
		if (rc < 0 && errno != EINTR)
			return errno;
		if (pfd[1].revents) {
			char buf[64];

			while (read(t->pipe[0], buf, sizeof(buf)) > 0)
				;
			continue;
		}
		if (rc > 0 && pfd[0].revents) {
			if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &sl))
				return errno;
			return err;
		}
		if (rc == 0 && ibc_deadline_left(dl) == 0)
			return ETIMEDOUT;
	}
}

/*
 * The connector's half of the job-key handshake, after its HELLO: waits (serving every other
 * socket, so that two ranks connecting to each other both progress) for the acceptor's
 * proof, checks it, sends ours. On failure the connection is closed and the peer unusable.
 */
static ibcomm_status_t connect_auth(struct tcp *t, int peer, int chan, ibc_deadline_t dl)
{
	struct tcp_peer *p = &t->peers[peer];
	struct tcp_conn *c = &p->out;
	uint8_t ctx[IBC_AUTH_CTX_MAX], proof[IBC_AUTH_MAC_LEN], frame[IBC_TCP_HDR_LEN + IBC_AUTH_MAC_LEN];
	struct ibc_tcp_auth a = { .proof = proof };
	ibcomm_status_t st = IBCOMM_OK;
	unsigned events;
	size_t ctxlen, n;

	c->auth = TCP_AUTH_WAIT_CHALLENGE;
	while (c->fd >= 0 && c->auth == TCP_AUTH_WAIT_CHALLENGE) {
		st = progress(t, NULL, ibc_deadline_left(dl), &events);
		if (st)
			goto err_close;
		if (c->fd >= 0 && c->auth == TCP_AUTH_WAIT_CHALLENGE && !events && ibc_deadline_left(dl) == 0) {
			st = ibc_err(t->comm, IBCOMM_ERR_TIMEOUT,
				     "rank %d: timed out waiting for peer rank %d to answer the job-key authentication of its TCP connection",
				     t->comm->rank, peer);
			goto err_close;
		}
	}
	if (c->fd < 0) /* refused, a wrong proof, or closed: p->why says which */
		return dead_err(t, peer, "connect", chan);
	ctxlen = auth_ctx(t, t->comm->rank, peer, ctx);
	if (ibc_auth_proof(t->comm->set.job_key, IBC_AUTH_CONNECTOR, c->nonce, c->pnonce, ctx, ctxlen, proof)) {
		st = ibc_err(t->comm, IBCOMM_ERR_SYSTEM, "rank %d: cannot compute the job-key proof (OpenSSL HMAC failed)",
			     t->comm->rank);
		goto err_close;
	}
	n = ibc_tcp_auth_encode(IBC_TCP_PROOF, &a, frame, sizeof(frame));
	c->auth = TCP_AUTH_NONE;
	st = send_frame(t, peer, chan, frame, frame + IBC_TCP_HDR_LEN, n - IBC_TCP_HDR_LEN, dl, "connect");
	if (st)
		goto err_close;
	return IBCOMM_OK;

err_close:
	if (c->fd >= 0) {
		peer_mark_dead(p, st, "could not be authenticated to (%s)", ibcomm_strerror(st));
		conn_close(t, c);
	}
	return st;
}

/* Opens the data connection to peer and sends HELLO (and, with a job key, authenticates). */
static ibcomm_status_t tcp_connect(struct tcp *t, int peer, int chan, ibc_deadline_t dl)
{
	struct ibcomm *comm = t->comm;
	struct tcp_peer *p = &t->peers[peer];
	char key[128], addr[128], host[INET6_ADDRSTRLEN + 32], port[16], err[256];
	uint8_t frame[IBC_TCP_HDR_LEN + IBC_TCP_HELLO_MAX];
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV };
	struct addrinfo *ai;
	size_t alen = 0, idlen = strlen(comm->id), n;
	struct ibc_tcp_hello hello = { .rank = (uint32_t)comm->rank, .size = (uint32_t)comm->size,
				       .max_chunk = (uint32_t)t->tp.max_chunk, .nslots = t->tp.nslots,
				       .id = comm->id, .idlen = (uint8_t)idlen };
	ibcomm_status_t st;
	int fd, rc, one = 1;

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
	st = ibc_rdv_get_cancel(comm->rdv, key, addr, sizeof(addr) - 1, &alen, dl, &comm->aborted, err, sizeof(err));
	if (st)
		return ibc_err(comm, st, "rank %d: looking up the TCP address of peer rank %d (key %s): %s", comm->rank,
			       peer, key, err);
	addr[IBC_MIN(alen, sizeof(addr) - 1)] = '\0';
	if (parse_hostport(addr, host, sizeof(host), port, sizeof(port)))
		return ibc_err(comm, IBCOMM_ERR_RENDEZVOUS, "rank %d: peer rank %d published a bad TCP address \"%s\"",
			       comm->rank, peer, addr);
	rc = getaddrinfo(host, port, &hints, &ai);
	if (rc)
		return ibc_err(comm, IBCOMM_ERR_RENDEZVOUS, "rank %d: peer rank %d published a bad TCP address \"%s\": %s",
			       comm->rank, peer, addr, gai_strerror(rc));

	fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		st = ibc_err(comm, IBCOMM_ERR_SYSTEM, "rank %d: socket for peer rank %d: %m", comm->rank, peer);
		goto err_free_ai;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	rc = connect(fd, ai->ai_addr, ai->ai_addrlen) ? errno : 0;
	if (rc == EINPROGRESS || rc == EINTR)
		rc = connect_wait(t, fd, dl);
	if (rc == ECANCELED) {
		st = abort_err(t, "connect");
		goto err_close;
	}
	if (rc == ETIMEDOUT && ibc_deadline_left(dl) == 0) {
		st = ibc_err(comm, IBCOMM_ERR_TIMEOUT, "rank %d: timed out connecting to peer rank %d at %s", comm->rank,
			     peer, addr);
		goto err_close;
	}
	if (rc) {
		peer_mark_dead(p, IBCOMM_ERR_PEER, "could not be connected to at %s (%s: is it still running?)", addr,
			       strerror(rc));
		st = dead_err(t, peer, "connect", chan);
		goto err_close;
	}
	freeaddrinfo(ai);

	p->out.fd = fd;
	conn_list(t, &p->out);
	t->tp.cnt.connects++;
	ibc_cinfo(comm, "rank %d: TCP connected to peer rank %d at %s", comm->rank, peer, addr);

	st = send_frame(t, peer, chan, frame, frame + IBC_TCP_HDR_LEN, n - IBC_TCP_HDR_LEN, dl, "connect");
	if (st || !hello.nonce)
		return st;
	return connect_auth(t, peer, chan, dl);

err_close:
	close(fd);
err_free_ai:
	freeaddrinfo(ai);
	return st;
}

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
	if (aborted(t))
		return abort_err(t, "put");
	st = notices_check(t, false);
	if (st)
		return st;
	p = &t->peers[peer];
	if (p->dead)
		return dead_err(t, peer, "put", chan);
	if (p->out.fd < 0) {
		st = tcp_connect(t, peer, chan, dl);
		if (st)
			return st;
	}
	if (!p->credits[chan]) {
		tp->cnt.credit_waits++;
		st = conn_read(t, &p->out, &events);
		if (st)
			return st;
		while (!p->credits[chan]) {
			if (p->dead)
				return dead_err(t, peer, "put", chan);
			if (!wait)
				return IBC_AGAIN;
			st = progress(t, NULL, ibc_deadline_left(dl), &events);
			if (st)
				return st;
			if (!events && ibc_deadline_left(dl) == 0)
				return ibc_err(t->comm, IBCOMM_ERR_TIMEOUT,
					       "rank %d: timed out waiting for peer rank %d to free a slot on channel %s (it has not consumed the %u chunks already sent)",
					       t->comm->rank, peer, chan_name(chan), tp->nslots);
		}
	}

	w = ibc_wbuf(hdr, sizeof(hdr));
	ibc_w_u8(&w, IBC_TCP_VERSION);
	ibc_w_u8(&w, IBC_TCP_DATA);
	ibc_w_u8(&w, (uint8_t)chan);
	ibc_w_u8(&w, 0);
	ibc_w_u32(&w, tag);
	ibc_w_u32(&w, (uint32_t)len);
	/* Taken before sending: send_frame() may flush credits while the socket is full. */
	ibc_w_u32(&w, p->owed[chan]);
	p->owed[chan] = 0;
	st = send_frame(t, peer, chan, hdr, buf, len, dl, "put");
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
	st = notices_check(t, false);
	if (st)
		return st;
	p = &t->peers[peer];
	r = &p->ring[chan];
	for (;;) {
		if (aborted(t))
			return abort_err(t, "get");
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
			 * connection to it): take in what is already here before giving up.
			 */
			if (!p->had_in && !drained) {
				drained = true;
				do {
					st = progress(t, NULL, 0, &events);
					if (st)
						return st;
				} while (events && !p->had_in);
				continue;
			}
			return dead_err(t, peer, "get", chan);
		}
		if (!tried && p->in.fd >= 0) {
			tried = true;
			st = conn_read(t, &p->in, &events);
			if (st)
				return st;
			continue;
		}
		if (!wait)
			return IBC_AGAIN;
		st = progress(t, NULL, ibc_deadline_left(dl), &events);
		if (st)
			return st;
		if (!events && ibc_deadline_left(dl) == 0)
			return ibc_err(t->comm, IBCOMM_ERR_TIMEOUT,
				       "rank %d: timed out waiting for data from peer rank %d on channel %s%s", t->comm->rank,
				       peer, chan_name(chan), p->had_in ? "" : " (it never connected)");
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
			       t->comm->rank, c->slot, c->peer, chan_name(c->chan), r->rel);
	r->rel = (r->rel + 1) % tp->nslots;
	r->nfill--;
	r->ngot--;
	p->owed[c->chan]++;
	/*
	 * When we also write to this peer, hold credits back so they ride on our next data frame
	 * instead of costing a frame of their own: all of them while nothing more from the peer
	 * is waiting here (request-reply traffic), half the slots while it streams. progress()
	 * sends them before it blocks, so a writer waiting for them is never stuck.
	 */
	if (p->out.fd < 0 || p->owed[c->chan] >= tp->nslots ||
	    (r->nfill && p->owed[c->chan] >= IBC_MAX(1u, tp->nslots / 2)))
		credits_flush(t, p);
	return IBCOMM_OK;
}

static ibcomm_status_t tcp_wait(ibc_tp_t *tp, ibc_deadline_t dl)
{
	struct tcp *t = (struct tcp *)tp;

	for (;;) {
		unsigned events;
		ibcomm_status_t st = progress(t, NULL, ibc_deadline_left(dl), &events);

		if (st)
			return st;
		if (events)
			return IBCOMM_OK;
		if (ibc_deadline_left(dl) == 0)
			return ibc_err(t->comm, IBCOMM_ERR_TIMEOUT,
				       "rank %d: timed out waiting for data or credits from any peer (TCP)", t->comm->rank);
	}
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

	while (!aborted(t) && ibc_now_ms() < until && !ioctl(c->fd, SIOCOUTQ, &queued) && queued > 0) {
		struct pollfd pfd = { .fd = c->fd, .events = POLLIN };

		if (poll(&pfd, 1, 1) > 0 && recv(c->fd, scratch, sizeof(scratch), MSG_DONTWAIT) == 0)
			break;
	}
	while (recv(c->fd, scratch, sizeof(scratch), MSG_DONTWAIT) > 0)
		;
	conn_close(t, c);
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
		conn_close(t, &p->in);
		for (int ch = 0; ch < IBC_NCHAN; ch++)
			ring_free(&p->ring[ch]);
	}
	while (t->npending)
		pending_free(t, t->pending[0]);
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

/* Formats the bound address as "host:port" or "[v6]:port" (with %scope when link-local). */
static void format_addr(const struct sockaddr_storage *ss, char *buf, size_t cap)
{
	char host[INET6_ADDRSTRLEN], scope[IF_NAMESIZE + 1] = "";

	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *a = (const struct sockaddr_in *)ss;

		inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host));
		snprintf(buf, cap, "%s:%u", host, ntohs(a->sin_port));
	} else {
		const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;

		inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host));
		if (a->sin6_scope_id && if_indextoname(a->sin6_scope_id, scope + 1))
			scope[0] = '%';
		snprintf(buf, cap, "[%s%s]:%u", host, scope, ntohs(a->sin6_port));
	}
}

/*
 * Chunk and slots from the settings (config.c reads IBCOMM_TCP_CHUNK/_SLOTS), within the
 * memory cap: the receive rings, allocated as peers write, hold at most peers x channels x
 * slots x chunk bytes. Defaults shrink to fit (chunk down to 4 KiB, then slots); settings
 * given explicitly are kept, and fail when over the cap.
 */
static ibcomm_status_t tcp_geometry(struct ibcomm *comm, unsigned long *chunk, unsigned long *nslots)
{
	uint64_t peers = (uint64_t)(comm->size > 1 ? comm->size - 1 : 1), total;
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
	socklen_t sl;
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
	t->dead_peer = -1;
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

		conn_reset(&p->in, CONN_IN, i);
		conn_reset(&p->out, CONN_OUT, i);
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
	t->lfd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (t->lfd < 0) {
		st = ibc_err(comm, IBCOMM_ERR_SYSTEM, "rank %d: TCP transport: socket: %m", comm->rank);
		goto err_close_pipe;
	}
	format_addr(&ss, t->addr, sizeof(t->addr));
	if (bind(t->lfd, (struct sockaddr *)&ss, sl) || listen(t->lfd, SOMAXCONN)) {
		st = ibc_err(comm, IBCOMM_ERR_SYSTEM, "rank %d: TCP transport: listening on %s: %m", comm->rank, t->addr);
		goto err_close_listen;
	}
	sl = sizeof(ss);
	if (getsockname(t->lfd, (struct sockaddr *)&ss, &sl)) {
		st = ibc_err(comm, IBCOMM_ERR_SYSTEM, "rank %d: TCP transport: getsockname: %m", comm->rank);
		goto err_close_listen;
	}
	format_addr(&ss, t->addr, sizeof(t->addr));

	snprintf(key, sizeof(key), "%s/tcp/%d", comm->id, comm->rank);
	st = ibc_rdv_put(comm->rdv, key, t->addr, strlen(t->addr), err, sizeof(err));
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
};
