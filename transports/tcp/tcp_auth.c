/*
 * The TCP transport's job-key handshake (lib/auth.h; the frames in tcp.h): the acceptor's
 * checks of a HELLO and a PROOF, the connector's check of a CHALLENGE and its PROOF.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "wire.h"
#include "tcp_int.h"

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
	return ibc_tcp_pending_drop(t, c, "%s", text);
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
		return ibc_tcp_pending_drop(t, c, "cannot compute an authentication challenge");
	n = ibc_tcp_auth_encode(IBC_TCP_CHALLENGE, &a, frame, sizeof(frame));
	/* a fresh socket has room for these few bytes; a client that does not read is dropped */
	if (!n || send(c->fd, frame, n, MSG_NOSIGNAL | MSG_DONTWAIT) != (ssize_t)n)
		return ibc_tcp_pending_drop(t, c, "cannot send the authentication challenge");
	c->auth = TCP_AUTH_WAIT_PROOF;
	return IBCOMM_OK;
}

/* Promote: the pending connection becomes the in-connection of rank. */
static int pending_promote(struct tcp *t, struct tcp_conn *c, int rank, unsigned *events)
{
	struct tcp_peer *p = &t->peers[rank];

	if (p->had_in)
		return ibc_tcp_pending_drop(t, c, "rank %d is already connected", rank);
	p->in.fd = c->fd;
	p->in.kind = CONN_IN;
	p->in.peer = rank;
	p->had_in = true;
	ibc_tcp_conn_list(t, &p->in);
	c->fd = -1;
	ibc_cinfo(t->comm, "rank %d: TCP connection from peer rank %d (%s)%s", t->comm->rank, rank, c->from,
		 c->auth == TCP_AUTH_WAIT_PROOF ? ", authenticated" : "");
	ibc_tcp_pending_free(t, c);
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
		return ibc_tcp_pending_drop(t, c, "%s", why);
	ctxlen = auth_ctx(t, c->peer, t->comm->rank, ctx);
	if (!ibc_auth_check(t->comm->set.job_key, IBC_AUTH_CONNECTOR, c->pnonce, c->nonce, ctx, ctxlen, a.proof))
		return auth_refuse(t, c, "the job key (IBCOMM_JOB_KEY) of the connection claiming to be rank %d does not match",
				   c->peer);
	return pending_promote(t, c, c->peer, events);
}

/* The connector's check of the acceptor's CHALLENGE (or its refusal). */
int ibc_tcp_auth_challenge_done(struct tcp *t, struct tcp_conn *c, unsigned *events)
{
	struct tcp_peer *p = &t->peers[c->peer];
	uint8_t ctx[IBC_AUTH_CTX_MAX];
	struct ibc_tcp_auth a;
	const char *why;
	size_t ctxlen;

	(*events)++;
	if (ibc_tcp_auth_decode(c->hs_type, c->hello, c->len, &a, &why))
		return ibc_tcp_proto_err(t, c, "%s", why);
	if (c->hs_type == IBC_TCP_AUTH_FAILED) {
		ibc_tcp_peer_mark_dead(p, IBCOMM_ERR_AUTH, "refused this rank's TCP connection (%.*s)", (int)a.textlen, a.text);
		ibc_tcp_conn_close(t, c);
		return TCP_GONE;
	}
	ctxlen = auth_ctx(t, t->comm->rank, c->peer, ctx);
	if (!ibc_auth_check(t->comm->set.job_key, IBC_AUTH_ACCEPTOR, c->nonce, a.nonce, ctx, ctxlen, a.proof)) {
		ibc_tcp_peer_mark_dead(p, IBCOMM_ERR_AUTH,
				       "did not prove the job key at its TCP address (the job key does not match, or another process listens there)");
		ibc_tcp_conn_close(t, c);
		return TCP_GONE;
	}
	memcpy(c->pnonce, a.nonce, IBC_AUTH_NONCE_LEN);
	c->auth = TCP_AUTH_SEND_PROOF;
	return IBCOMM_OK;
}

int ibc_tcp_hello_done(struct tcp *t, struct tcp_conn *c, unsigned *events)
{
	struct ibcomm *comm = t->comm;
	struct ibc_tcp_hello h;
	const char *why;

	if (c->auth == TCP_AUTH_WAIT_PROOF)
		return auth_proof_done(t, c, events);
	if (ibc_tcp_hello_decode(c->hello, c->len, &h, &why))
		return ibc_tcp_pending_drop(t, c, "%s", why);
	if (h.idlen != strlen(comm->id) || memcmp(h.id, comm->id, h.idlen))
		return ibc_tcp_pending_drop(t, c, "hello for communicator \"%.*s\", this is \"%s\"", (int)h.idlen, h.id,
					    comm->id);
	if (h.size != (uint32_t)comm->size)
		return ibc_tcp_pending_drop(t, c, "hello from rank %u of %u, this communicator has %d ranks", h.rank, h.size,
					    comm->size);
	if (h.max_chunk != t->tp.max_chunk || h.nslots != t->tp.nslots)
		return ibc_tcp_pending_drop(t, c, "peer rank %u uses %u slots of %u bytes, this rank %u of %zu (IBCOMM_TCP_*)",
					    h.rank, h.nslots, h.max_chunk, t->tp.nslots, t->tp.max_chunk);
	if (t->peers[h.rank].had_in)
		return ibc_tcp_pending_drop(t, c, "rank %u is already connected", h.rank);
	if (comm->set.job_key[0] || h.nonce)
		return auth_challenge(t, c, &h);
	return pending_promote(t, c, (int)h.rank, events);
}

/*
 * The connector's half of the job-key handshake, after its HELLO: waits (serving every other
 * socket, so that two ranks connecting to each other both progress) for the acceptor's
 * proof, checks it, sends ours. On failure the connection is closed and the peer unusable.
 */
ibcomm_status_t ibc_tcp_connect_auth(struct tcp *t, int peer, int chan, ibc_deadline_t dl)
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
		st = ibc_tcp_progress(t, NULL, ibc_deadline_left(dl), &events);
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
		return ibc_tcp_dead_err(t, peer, "connect", chan);
	ctxlen = auth_ctx(t, t->comm->rank, peer, ctx);
	if (ibc_auth_proof(t->comm->set.job_key, IBC_AUTH_CONNECTOR, c->nonce, c->pnonce, ctx, ctxlen, proof)) {
		st = ibc_err(t->comm, IBCOMM_ERR_SYSTEM, "rank %d: cannot compute the job-key proof (OpenSSL HMAC failed)",
			     t->comm->rank);
		goto err_close;
	}
	n = ibc_tcp_auth_encode(IBC_TCP_PROOF, &a, frame, sizeof(frame));
	c->auth = TCP_AUTH_NONE;
	st = ibc_tcp_send_frame(t, peer, chan, frame, frame + IBC_TCP_HDR_LEN, n - IBC_TCP_HDR_LEN, dl, "connect");
	if (st)
		goto err_close;
	return IBCOMM_OK;

err_close:
	if (c->fd >= 0) {
		ibc_tcp_peer_mark_dead(p, st, "could not be authenticated to (%s)", ibcomm_strerror(st));
		ibc_tcp_conn_close(t, c);
	}
	return st;
}
