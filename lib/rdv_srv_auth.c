/*
 * Rank 0's rendezvous server, before JOIN: the connections that have not joined yet (each
 * has IBC_AUTH_HANDSHAKE_MS to do so) and, with a job key, the AUTH_* handshake (lib/auth.h).
 */
#include <stdio.h>
#include <string.h>

#include "rdv_server.h"
#include "wire.h"

/* Connections that have not joined yet, oldest (earliest deadline) first. */
void rdv_hs_add(struct rdv_server *srv, struct srv_client *c)
{
	c->hs_deadline = ibc_now_ms() + IBC_AUTH_HANDSHAKE_MS;
	c->hs_prev = srv->hs_tail;
	c->hs_next = NULL;
	if (srv->hs_tail)
		srv->hs_tail->hs_next = c;
	else
		srv->hs_head = c;
	srv->hs_tail = c;
}

void rdv_hs_del(struct rdv_server *srv, struct srv_client *c)
{
	if (!c->hs_deadline)
		return;
	if (c->hs_prev)
		c->hs_prev->hs_next = c->hs_next;
	else
		srv->hs_head = c->hs_next;
	if (c->hs_next)
		c->hs_next->hs_prev = c->hs_prev;
	else
		srv->hs_tail = c->hs_prev;
	c->hs_prev = c->hs_next = NULL;
	c->hs_deadline = 0;
}

/* Drops the connections that have neither joined nor been refused within the handshake time. */
void rdv_hs_expire(struct rdv_server *srv)
{
	uint64_t now = ibc_now_ms();
	struct srv_client *c;

	while ((c = srv->hs_head) && c->hs_deadline <= now) {
		rdv_hs_del(srv, c);
		if (!c->dead)
			rdv_srv_drop_client(c, c->close_after_flush ? "it did not read its refusal within the handshake time" :
				       c->auth == SRV_AUTH_NONE ? "it sent no JOIN within the handshake time" :
								  "it did not finish authenticating within the handshake time");
	}
}

/* Milliseconds until the next handshake deadline, -1 for none. */
int rdv_hs_timeout(struct rdv_server *srv)
{
	uint64_t now = ibc_now_ms();

	if (!srv->hs_head)
		return -1;
	return srv->hs_head->hs_deadline <= now ? 0 : (int)(srv->hs_head->hs_deadline - now);
}

/* Refuses a rank whose key does not match: it is told, rank 0's log and timeout say so. */
static void srv_auth_fail(struct rdv_server *srv, struct srv_client *c, uint32_t req, uint32_t rank, const char *text)
{
	pthread_mutex_lock(&srv->lock);
	snprintf(srv->auth_note, sizeof(srv->auth_note), "rank %u (from %s) was refused: %s", rank, c->addr, text);
	pthread_mutex_unlock(&srv->lock);
	rdv_srv_refuse(srv, c, IBC_RDV_AUTH_FAILED, req, text);
}

/* AUTH_HELLO: answer with our nonce and our proof of the key. */
void rdv_srv_auth_hello(struct rdv_server *srv, struct srv_client *c, const struct ibc_rdv_msg *m)
{
	struct ibc_rdv_msg reply = { .type = IBC_RDV_AUTH_CHALLENGE, .req = m->req };
	uint8_t ctx[16], proof[IBC_AUTH_MAC_LEN];
	size_t ctxlen = ibc_rdv_auth_ctx(m->rank, m->size, ctx);

	if (!srv->key[0]) {
		srv_auth_fail(srv, c, m->req, m->rank,
			      "the job key does not match: this rank has a job key (IBCOMM_JOB_KEY) but rank 0 has none");
		return;
	}
	if (c->auth != SRV_AUTH_NONE || c->rank >= 0) {
		rdv_srv_drop_client(c, "AUTH_HELLO sent twice");
		return;
	}
	memcpy(c->nonce_c, m->nonce, IBC_AUTH_NONCE_LEN);
	c->auth_rank = m->rank;
	c->auth_size = m->size;
	if (ibc_auth_nonce(c->nonce_s) ||
	    ibc_auth_proof(srv->key, IBC_AUTH_ACCEPTOR, c->nonce_c, c->nonce_s, ctx, ctxlen, proof)) {
		rdv_srv_error(srv, c, m->req, "rank 0 cannot compute an authentication challenge (no random bytes?)");
		return;
	}
	reply.nonce = c->nonce_s;
	reply.proof = proof;
	c->auth = SRV_AUTH_CHALLENGED;
	rdv_srv_send(srv, c, &reply);
}

/* AUTH_PROOF: the client's proof, over the same nonces. */
void rdv_srv_auth_proof(struct rdv_server *srv, struct srv_client *c, const struct ibc_rdv_msg *m)
{
	struct ibc_rdv_msg reply = { .type = IBC_RDV_AUTH_OK, .req = m->req };
	uint8_t ctx[16];
	size_t ctxlen = ibc_rdv_auth_ctx(c->auth_rank, c->auth_size, ctx);
	char text[160];

	if (c->auth != SRV_AUTH_CHALLENGED) {
		rdv_srv_drop_client(c, "AUTH_PROOF without a challenge");
		return;
	}
	if (!ibc_auth_check(srv->key, IBC_AUTH_CONNECTOR, c->nonce_c, c->nonce_s, ctx, ctxlen, m->proof)) {
		snprintf(text, sizeof(text), "the job key (IBCOMM_JOB_KEY) of rank %u does not match rank 0's",
			 c->auth_rank);
		srv_auth_fail(srv, c, m->req, c->auth_rank, text);
		return;
	}
	c->auth = SRV_AUTH_OK;
	ibc_trace("rendezvous server: %s authenticated as rank %u", c->addr, c->auth_rank);
	rdv_srv_send(srv, c, &reply);
}

/* AUTH_FAILED from a client: our proof did not match its key; it goes away. */
void rdv_srv_auth_rejected(struct rdv_server *srv, struct srv_client *c)
{
	char text[64];

	if (c->auth != SRV_AUTH_CHALLENGED) {
		rdv_srv_drop_client(c, "AUTH_FAILED without a challenge");
		return;
	}
	snprintf(text, sizeof(text), "the job key of rank %u does not match rank 0's", c->auth_rank);
	pthread_mutex_lock(&srv->lock);
	snprintf(srv->auth_note, sizeof(srv->auth_note), "rank %u (from %s) was refused: %s", c->auth_rank,
		 c->addr, text);
	pthread_mutex_unlock(&srv->lock);
	rdv_srv_drop_client(c, text);
}

/*
 * With a job key, a JOIN is admitted only on a connection that proved the key, for the rank
 * and size it authenticated as; it is refused otherwise (the reply is sent here).
 */
bool rdv_srv_authenticate(struct rdv_server *srv, struct srv_client *c, const struct ibc_rdv_msg *m)
{
	if (!srv->key[0])
		return true;
	if (c->auth != SRV_AUTH_OK) {
		srv_auth_fail(srv, c, m->req, m->rank,
			      "the job key does not match: rank 0 requires a job key (IBCOMM_JOB_KEY) and this rank did not authenticate");
		return false;
	}
	if (m->rank != c->auth_rank || m->size != c->auth_size) {
		rdv_srv_drop_client(c, "JOIN as another rank than it authenticated as");
		return false;
	}
	return true;
}

