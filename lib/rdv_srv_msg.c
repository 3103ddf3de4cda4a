/*
 * Rank 0's rendezvous server (rdv_server.h): the handlers of the messages a joined (or
 * joining) client sends (JOIN, PUT, GET, DROP, LEAVE; the AUTH_* ones go to rdv_srv_auth.c),
 * and the refusals and errors it answers with.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rdv_server.h"

/* Answers with an ERROR or AUTH_FAILED text and closes the connection once it is sent. */
void rdv_srv_refuse(struct rdv_server *srv, struct srv_client *c, uint8_t type, uint32_t req, const char *text)
{
	struct ibc_rdv_msg m = { .type = type, .req = req, .text = text, .textlen = strlen(text) };

	if (m.textlen > IBC_RDV_MAX_TEXT)
		m.textlen = IBC_RDV_MAX_TEXT;
	if (type == IBC_RDV_AUTH_FAILED)
		ibc_warn("rendezvous server: refusing %s: %s", c->addr, text);
	else
		ibc_info("rendezvous server: refusing %s: %s", c->addr, text);
	rdv_srv_send(srv, c, &m);
	c->close_after_flush = true;
	if (!c->out_len)
		c->dead = true;
}

void rdv_srv_error(struct rdv_server *srv, struct srv_client *c, uint32_t req, const char *text)
{
	rdv_srv_refuse(srv, c, IBC_RDV_ERROR, req, text);
}

static void srv_join(struct rdv_server *srv, struct srv_client *c, const struct ibc_rdv_msg *m)
{
	struct ibc_rdv_msg reply = { .type = IBC_RDV_JOINED, .size = (uint32_t)srv->size };
	char text[IBC_ERRLEN];

	if (c->rank >= 0) {
		rdv_srv_drop_client(c, "JOIN sent twice");
		return;
	}
	if (!rdv_srv_authenticate(srv, c, m))
		return;
	if ((int)m->size != srv->size) {
		snprintf(text, sizeof(text),
			 "rank %u says the job has %u ranks but rank 0 serves %d at %s: IBCOMM_SIZE (or the launcher's size) differs between ranks",
			 m->rank, m->size, srv->size, srv->root);
		rdv_srv_error(srv, c, m->req, text);
		return;
	}
	pthread_mutex_lock(&srv->lock);
	if (srv->joined[m->rank]) {
		pthread_mutex_unlock(&srv->lock);
		snprintf(text, sizeof(text),
			 "rank %u has already joined (from %s): two processes were given the same rank", m->rank,
			 srv->joined[m->rank]->addr);
		rdv_srv_error(srv, c, m->req, text);
		return;
	}
	srv->joined[m->rank] = c;
	srv->njoined++;
	srv->gone[m->rank] = SRV_GONE_NO;
	c->rank = (int)m->rank;
	c->join_req = m->req;
	rdv_hs_del(srv, c);
	ibc_trace("rendezvous server: rank %u joined from %s (%d of %d)", m->rank, c->addr, srv->njoined, srv->size);
	if (srv->all_joined) { /* a rank coming back after everybody had joined */
		pthread_mutex_unlock(&srv->lock);
		reply.req = m->req;
		rdv_srv_send(srv, c, &reply);
		return;
	}
	if (srv->njoined < srv->size) {
		pthread_mutex_unlock(&srv->lock);
		return;
	}
	srv->all_joined = true;
	pthread_mutex_unlock(&srv->lock);
	ibc_info("rendezvous server: all %d ranks have joined at %s", srv->size, srv->root);
	for (int r = 0; r < srv->size; r++) {
		reply.req = srv->joined[r]->join_req;
		rdv_srv_send(srv, srv->joined[r], &reply);
	}
}

static void srv_put(struct rdv_server *srv, struct srv_client *c, const struct ibc_rdv_msg *m)
{
	struct ibc_rdv_msg reply = { .type = IBC_RDV_PUT_OK, .req = m->req };
	struct rdv_entry *e = rdv_store_lookup(&srv->store, m->key, m->keylen, true);
	struct rdv_waiter *w;
	uint8_t *v;

	if (!e) {
		rdv_srv_error(srv, c, m->req, "the rendezvous server (rank 0) is out of memory");
		return;
	}
	v = malloc(m->vallen ? m->vallen : 1);
	if (!v) {
		rdv_srv_error(srv, c, m->req, "the rendezvous server (rank 0) is out of memory");
		return;
	}
	memcpy(v, m->val, m->vallen);
	free(e->val);
	e->val = v;
	e->vallen = m->vallen;
	e->has_val = true;
	rdv_srv_count(srv);

	while ((w = e->waiters)) {
		struct ibc_rdv_msg value = { .type = IBC_RDV_VALUE, .req = w->req, .val = e->val, .vallen = e->vallen };

		e->waiters = w->next;
		rdv_srv_send(srv, w->owner, &value);
		rdv_srv_client_put_ref(w->owner);
		free(w);
	}
	rdv_srv_send(srv, c, &reply);
}

static void srv_get(struct rdv_server *srv, struct srv_client *c, const struct ibc_rdv_msg *m)
{
	struct rdv_entry *e = rdv_store_lookup(&srv->store, m->key, m->keylen, true);
	struct rdv_waiter *w;

	if (!e) {
		rdv_srv_error(srv, c, m->req, "the rendezvous server (rank 0) is out of memory");
		return;
	}
	rdv_srv_count(srv);
	if (e->has_val) {
		struct ibc_rdv_msg value = { .type = IBC_RDV_VALUE, .req = m->req, .val = e->val, .vallen = e->vallen };

		rdv_srv_send(srv, c, &value);
		return;
	}
	w = malloc(sizeof(*w));
	if (!w) {
		rdv_srv_error(srv, c, m->req, "the rendezvous server (rank 0) is out of memory");
		return;
	}
	w->owner = c;
	w->req = m->req;
	w->next = e->waiters;
	e->waiters = w;
	c->refs++;
}

/*
 * Rank 0 has destroyed its communicators: from now on this server may go with its process at
 * any moment. BYE tells the others so, before it happens: its going is then not a death of
 * rank 0 (collectives still finishing with rank 0's data go on), only the end of the
 * rendezvous.
 */
static void srv_owner_left(struct rdv_server *srv)
{
	struct ibc_rdv_msg bye = { .type = IBC_RDV_BYE };

	for (int i = 0; i < srv->nclients; i++)
		if (srv->clients[i]->rank > 0 && !srv->clients[i]->left)
			rdv_srv_send(srv, srv->clients[i], &bye);
}

void rdv_srv_handle(struct rdv_server *srv, struct srv_client *c, const struct ibc_rdv_msg *m)
{
	size_t deleted;

	switch (m->type) {
	case IBC_RDV_JOIN:
		srv_join(srv, c, m);
		break;
	case IBC_RDV_PUT:
	case IBC_RDV_GET:
		if (c->rank < 0) {
			rdv_srv_drop_client(c, m->type == IBC_RDV_PUT ? "PUT before JOIN" : "GET before JOIN");
			return;
		}
		if (m->type == IBC_RDV_PUT)
			srv_put(srv, c, m);
		else
			srv_get(srv, c, m);
		break;
	case IBC_RDV_DROP:
		if (c->rank < 0) {
			rdv_srv_drop_client(c, "DROP before JOIN");
			return;
		}
		if (m->size > (uint32_t)srv->size) {
			rdv_srv_drop_client(c, "DROP for more members than the job has ranks");
			return;
		}
		deleted = rdv_store_drop(&srv->store, m->key, m->keylen, m->size);
		rdv_srv_count(srv);
		ibc_trace("rendezvous server: rank %d drops %.*s (%zu keys deleted)", c->rank, (int)m->keylen, m->key,
			  deleted);
		break;
	case IBC_RDV_LEAVE:
		c->left = true;
		ibc_trace("rendezvous server: %s (rank %d) leaves", c->addr, c->rank);
		if (c->rank == 0)
			srv_owner_left(srv);
		break;
	case IBC_RDV_AUTH_HELLO:
		rdv_srv_auth_hello(srv, c, m);
		break;
	case IBC_RDV_AUTH_PROOF:
		rdv_srv_auth_proof(srv, c, m);
		break;
	case IBC_RDV_AUTH_FAILED:
		rdv_srv_auth_rejected(srv, c);
		break;
	default:
		rdv_srv_drop_client(c, "sent a message only the server sends");
		break;
	}
}
