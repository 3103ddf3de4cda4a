/*
 * Rank 0's rendezvous server: one thread polling the listening sockets, the clients and a
 * wake pipe, with buffered non-blocking I/O per client; O(1) work per message (rdv_store.c),
 * so rank 0's work is linear in the number of ranks. A client that sends garbage is dropped
 * and logged, never trusted.
 *
 * Rank 0's destroy is not collective: when its last communicator goes, the server stops if
 * the other ranks have left within SRV_STOP_WAIT_MS; else it lives on in the background
 * (nobody waits for it) while the process runs, so that they can still look up addresses,
 * until they have all gone or IBCOMM_TIMEOUT_MS passes (then BYE to those left). A normal
 * exit of the process waits for that; _exit, a signal or a crash takes the server away at
 * once (the others hear rank 0 died). A failed or aborted rank 0 stops it at once (BYE).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "rdv_server.h"

static void client_put_ref(struct srv_client *c)
{
	if (--c->refs == 0) {
		free(c->in);
		free(c->out);
		free(c);
	}
}

/* Publishes the size of the key table (before any reply, so that a client sees it current). */
static void srv_count(struct rdv_server *srv)
{
	atomic_store(&srv->nkeys, srv->store.nentries + srv->store.ndrops);
}

static void release_owner(void *owner)
{
	client_put_ref(owner);
}

void rdv_srv_drop_client(struct srv_client *c, const char *why)
{
	char who[32] = "";

	if (c->rank >= 0)
		snprintf(who, sizeof(who), " (rank %d)", c->rank);
	if (!c->dead && why)
		ibc_warn("rendezvous server: dropping the connection from %s%s: %s", c->addr, who, why);
	c->dead = true;
}

static void client_flush(struct rdv_server *srv, struct srv_client *c)
{
	while (c->out_off < c->out_len) {
		ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				break;
			c->dead = true; /* the peer went away; its reads will tell */
			return;
		}
		c->out_off += (size_t)n;
	}
	if (c->out_off == c->out_len) {
		c->out_off = c->out_len = 0;
		if (c->close_after_flush)
			c->dead = true;
	}
	srv->pfds[PFD_CLIENT0(srv) + c->idx].events = POLLIN | (c->out_len ? POLLOUT : 0);
}

void rdv_srv_send(struct rdv_server *srv, struct srv_client *c, const struct ibc_rdv_msg *m)
{
	size_t n;

	if (c->dead || c->fd < 0)
		return;
	n = ibc_rdv_encode(m, srv->scratch, IBC_RDV_MAX_FRAME);
	if (!n) {
		ibc_warn("rendezvous server: cannot encode a message of type %d", m->type);
		return;
	}
	if (c->out_off && c->out_len + n > c->out_cap) {
		memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
		c->out_len -= c->out_off;
		c->out_off = 0;
	}
	if (c->out_len + n > c->out_cap) {
		size_t cap = c->out_cap ? c->out_cap : 4096;
		uint8_t *p;

		while (cap < c->out_len + n)
			cap *= 2;
		p = realloc(c->out, cap);
		if (!p) {
			rdv_srv_drop_client(c, "out of memory for its replies");
			return;
		}
		c->out = p;
		c->out_cap = cap;
	}
	memcpy(c->out + c->out_len, srv->scratch, n);
	c->out_len += n;
	client_flush(srv, c);
}

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
	srv_count(srv);

	while ((w = e->waiters)) {
		struct ibc_rdv_msg value = { .type = IBC_RDV_VALUE, .req = w->req, .val = e->val, .vallen = e->vallen };

		e->waiters = w->next;
		rdv_srv_send(srv, w->owner, &value);
		client_put_ref(w->owner);
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
	srv_count(srv);
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

static void srv_handle(struct rdv_server *srv, struct srv_client *c, const struct ibc_rdv_msg *m)
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
		srv_count(srv);
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

static void client_read(struct rdv_server *srv, struct srv_client *c)
{
	size_t off = 0;

	for (int rounds = 0; rounds < 16 && !c->dead; rounds++) {
		ssize_t n;

		if (c->in_len == c->in_cap) {
			size_t cap = c->in_cap ? c->in_cap * 2 : SRV_IN_INIT;
			uint8_t *p;

			if (cap > IBC_RDV_MAX_FRAME)
				cap = IBC_RDV_MAX_FRAME;
			if (cap <= c->in_cap) { /* cannot happen: frames are bounded by the header check */
				rdv_srv_drop_client(c, "message too large");
				return;
			}
			p = realloc(c->in, cap);
			if (!p) {
				rdv_srv_drop_client(c, "out of memory for its requests");
				return;
			}
			c->in = p;
			c->in_cap = cap;
		}
		n = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, 0);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				break;
			c->dead = true;
			break;
		}
		if (n == 0) {
			if (c->in_len)
				rdv_srv_drop_client(c, "closed in the middle of a message");
			c->dead = true;
			break;
		}
		c->in_len += (size_t)n;

		/* every complete frame */
		for (;;) {
			struct ibc_rdv_msg m;
			const char *why = NULL;
			size_t flen;
			int rc;

			if (c->dead || c->close_after_flush)
				break;
			rc = ibc_rdv_frame_len(c->in + off, c->in_len - off, &flen, &why);
			if (rc == IBC_AGAIN)
				break;
			if (rc) {
				rdv_srv_drop_client(c, why);
				return;
			}
			if (c->in_len - off < flen)
				break;
			if (ibc_rdv_decode(c->in + off, flen, &m, &why)) {
				rdv_srv_drop_client(c, why);
				return;
			}
			srv_handle(srv, c, &m);
			off += flen;
		}
		if (off) {
			memmove(c->in, c->in + off, c->in_len - off);
			c->in_len -= off;
			off = 0;
		}
	}
}

static void srv_add_client(struct rdv_server *srv, int fd, const struct sockaddr *sa, socklen_t salen)
{
	struct srv_client *c;
	char host[NI_MAXHOST], port[NI_MAXSERV];
	int one = 1;

	if (srv->nclients == srv->cap) {
		int cap = srv->cap ? srv->cap * 2 : 16;
		struct srv_client **cl = realloc(srv->clients, (size_t)cap * sizeof(*cl));
		struct pollfd *pf;

		if (!cl)
			goto err_close;
		srv->clients = cl;
		pf = realloc(srv->pfds, (size_t)(PFD_CLIENT0(srv) + cap) * sizeof(*pf));
		if (!pf)
			goto err_close;
		srv->pfds = pf;
		srv->cap = cap;
	}
	c = calloc(1, sizeof(*c));
	if (!c)
		goto err_close;
	c->fd = fd;
	c->rank = -1;
	c->refs = 1;
	if (getnameinfo(sa, salen, host, sizeof(host), port, sizeof(port), NI_NUMERICHOST | NI_NUMERICSERV))
		snprintf(c->addr, sizeof(c->addr), "?");
	else
		snprintf(c->addr, sizeof(c->addr), sa->sa_family == AF_INET6 ? "[%s]:%s" : "%s:%s", host, port);
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	c->idx = srv->nclients++;
	srv->clients[c->idx] = c;
	srv->pfds[PFD_CLIENT0(srv) + c->idx] = (struct pollfd){ .fd = fd, .events = POLLIN };
	rdv_hs_add(srv, c);
	ibc_trace("rendezvous server: connection from %s", c->addr);
	return;

err_close:
	ibc_warn("rendezvous server: out of memory: refusing a connection");
	close(fd);
}

/*
 * A joined rank's connection dropped without LEAVE (killed, crashed, or exited without
 * destroying its communicator): tells every other rank, so that ranks with no connection of
 * their own to it stop waiting for it.
 */
static void srv_announce_death(struct rdv_server *srv, struct srv_client *dead)
{
	struct ibc_rdv_msg m = { .type = IBC_RDV_DEAD, .rank = (uint32_t)dead->rank };

	ibc_warn("rendezvous server: rank %d (%s) dropped its connection without leaving: it died; telling the other ranks",
		 dead->rank, dead->addr);
	for (int i = 0; i < srv->nclients; i++) {
		struct srv_client *c = srv->clients[i];

		if (c != dead && c->rank >= 0 && !c->left)
			rdv_srv_send(srv, c, &m);
	}
}

static void srv_remove_client(struct rdv_server *srv, struct srv_client *c)
{
	int last = srv->nclients - 1;

	if (c->rank >= 0) {
		bool died = false;

		pthread_mutex_lock(&srv->lock);
		if (srv->joined[c->rank] == c) {
			srv->joined[c->rank] = NULL;
			srv->njoined--;
			died = srv->all_joined && !c->left && !srv->closing;
			/* gave up waiting (its own deadline) or died: not a rank that never came */
			if (!srv->all_joined)
				srv->gone[c->rank] = c->left ? SRV_GONE_LEFT : SRV_GONE_DROPPED;
		}
		pthread_mutex_unlock(&srv->lock);
		ibc_trace("rendezvous server: rank %d (%s) closed its connection", c->rank, c->addr);
		if (died)
			srv_announce_death(srv, c);
	}
	rdv_hs_del(srv, c);
	close(c->fd);
	c->fd = -1;
	if (c->idx != last) {
		srv->clients[c->idx] = srv->clients[last];
		srv->clients[c->idx]->idx = c->idx;
		srv->pfds[PFD_CLIENT0(srv) + c->idx] = srv->pfds[PFD_CLIENT0(srv) + last];
	}
	srv->nclients--;
	client_put_ref(c);
	if (srv->accept_paused) {
		srv->accept_paused = false;
		for (int i = 0; i < srv->nlisten; i++)
			srv->pfds[1 + i].events = POLLIN;
	}
}

static void srv_accept(struct rdv_server *srv, int lfd)
{
	for (;;) {
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);
		int fd = accept4(lfd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
				ibc_warn("rendezvous server: cannot accept a connection: %m (raise `ulimit -n`)");
				srv->accept_paused = true;
				for (int i = 0; i < srv->nlisten; i++)
					srv->pfds[1 + i].events = 0;
			}
			return;
		}
		srv_add_client(srv, fd, (struct sockaddr *)&ss, sl);
	}
}

/* Appends to buf[*off..len) like snprintf, never past the end. */
static void buf_add(char *buf, size_t len, size_t *off, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void buf_add(char *buf, size_t len, size_t *off, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (*off >= len)
		return;
	va_start(ap, fmt);
	n = vsnprintf(buf + *off, len - *off, fmt, ap);
	va_end(ap);
	if (n > 0)
		*off = IBC_MIN(*off + (size_t)n, len);
}

/* Lists up to 8 ranks of one kind (never joined, or joined and gone) for srv_missing(). */
static void srv_list_ranks(struct rdv_server *srv, bool gone, char *buf, size_t len, size_t *off)
{
	int shown = 0, count = 0;

	for (int r = 0; r < srv->size; r++) {
		if (srv->joined[r] || (srv->gone[r] != SRV_GONE_NO) != gone)
			continue;
		if (count++ >= 8)
			continue;
		buf_add(buf, len, off, "%s%d", shown ? ", " : "", r);
		if (gone)
			buf_add(buf, len, off, srv->gone[r] == SRV_GONE_LEFT ? " (left: it gave up waiting)" :
									    " (its connection dropped: killed or crashed)");
		shown++;
	}
	if (count > shown)
		buf_add(buf, len, off, " and %d more", count - shown);
}

/*
 * For rank 0's timeout message: the ranks that never joined (up to 8), then those that had
 * joined but went away before the others came. A rank whose own deadline passed a moment
 * before rank 0's has left by the time rank 0 gives up: it is named apart, not as missing.
 */
void ibc_rdv_srv_missing(struct rdv_server *srv, char *buf, size_t len)
{
	size_t off = 0;
	int never = 0, gone = 0;

	buf[0] = '\0';
	pthread_mutex_lock(&srv->lock);
	for (int r = 0; r < srv->size; r++) {
		if (!srv->joined[r] && srv->gone[r] == SRV_GONE_NO)
			never++;
		else if (!srv->joined[r])
			gone++;
	}
	if (never) {
		srv_list_ranks(srv, false, buf, len, &off);
		if (srv->auth_note[0])
			buf_add(buf, len, &off, " (%s)", srv->auth_note);
		if (gone)
			buf_add(buf, len, &off, "; joined, then went away before the others came: ");
	}
	if (gone)
		srv_list_ranks(srv, true, buf, len, &off);
	if (!never && srv->auth_note[0])
		buf_add(buf, len, &off, " (%s)", srv->auth_note);
	pthread_mutex_unlock(&srv->lock);
}

static void srv_end_detached(struct rdv_server *srv);

static void *srv_main(void *arg)
{
	struct rdv_server *srv = arg;
	bool stopping = false;
	ibc_deadline_t linger = 0;
	uint64_t next_note = 0;

	for (;;) {
		int timeout = -1, n;

		if (stopping) {
			if (srv->njoined == 0 || atomic_load(&srv->stop) == 2)
				break;
			if (linger && ibc_deadline_left(linger) == 0) {
				int first = -1;

				for (int r = 0; r < srv->size && first < 0; r++)
					if (srv->joined[r])
						first = r;
				ibc_warn("rendezvous server: stopping after %ld ms with %d ranks still connected (rank %d among them): they may fail if they still need the rendezvous",
					 srv->linger_ms, srv->njoined, first);
				break;
			}
			if (ibc_now_ms() >= next_note) {
				if (next_note)
					ibc_warn("rank 0 is waiting for %d ranks to destroy their communicators before it stops the rendezvous server",
						 srv->njoined);
				next_note = ibc_now_ms() + 10000;
			}
			timeout = 10000;
			if (linger)
				timeout = IBC_MIN(timeout, ibc_deadline_left(linger));
		}
		if (srv->hs_head) { /* wake up for the next handshake deadline */
			int hs = rdv_hs_timeout(srv);

			timeout = timeout < 0 ? hs : IBC_MIN(timeout, hs);
		}
		n = poll(srv->pfds, (nfds_t)(PFD_CLIENT0(srv) + srv->nclients), timeout);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			ibc_warn("rendezvous server: poll failed: %m; the server stops");
			break;
		}
		if (srv->pfds[0].revents) {
			char buf[64];

			while (read(srv->wake[0], buf, sizeof(buf)) > 0)
				;
			if (atomic_load(&srv->stop) && !stopping) {
				stopping = true;
				linger = ibc_deadline(srv->linger_ms);
				if (srv->njoined && atomic_load(&srv->stop) == 1)
					ibc_info("rendezvous server: rank 0 is done; serving until the %d other ranks close their connections",
						 srv->njoined);
			}
		}
		for (int i = 0; i < srv->nlisten; i++)
			if (srv->pfds[1 + i].revents & POLLIN)
				srv_accept(srv, srv->pfds[1 + i].fd);
		for (int i = srv->nclients - 1; i >= 0; i--) {
			struct srv_client *c = srv->clients[i];
			short re = srv->pfds[PFD_CLIENT0(srv) + i].revents;

			if (i >= srv->nclients || c->dead)
				continue;
			if (re & POLLOUT)
				client_flush(srv, c);
			if (re & (POLLIN | POLLHUP | POLLERR))
				client_read(srv, c);
		}
		rdv_hs_expire(srv);
		for (int i = srv->nclients - 1; i >= 0; i--)
			if (srv->clients[i]->dead)
				srv_remove_client(srv, srv->clients[i]);
	}
	/* the ranks still connected learn that the server leaves on purpose (not a death of rank 0) */
	srv->closing = true;
	for (int i = 0; i < srv->nclients; i++) {
		struct ibc_rdv_msg bye = { .type = IBC_RDV_BYE };

		if (srv->clients[i]->rank >= 0 && !srv->clients[i]->left)
			rdv_srv_send(srv, srv->clients[i], &bye);
	}
	srv_end_detached(srv);
	return NULL;
}

static void srv_free(struct rdv_server *srv)
{
	while (srv->nclients)
		srv_remove_client(srv, srv->clients[srv->nclients - 1]);
	rdv_store_free(&srv->store, release_owner);
	for (int i = 0; i < srv->nlisten; i++)
		close(srv->pfds[1 + i].fd);
	if (srv->wake[0] >= 0) {
		close(srv->wake[0]);
		close(srv->wake[1]);
	}
	pthread_mutex_destroy(&srv->lock);
	free(srv->joined);
	free(srv->gone);
	free(srv->clients);
	free(srv->pfds);
	free(srv->scratch);
	free(srv);
}

/* How long rank 0's destroy waits for the other ranks to leave before serving in the background. */
#define SRV_STOP_WAIT_MS 25

/*
 * Servers rank 0 no longer holds but that still serve other ranks (see the top of this file).
 * At a normal exit the process waits for them (they end once the other ranks have gone, or at
 * their deadline, IBCOMM_TIMEOUT_MS); in a forked child (no thread) they are left alone.
 */
static pthread_mutex_t lingering_lock = PTHREAD_MUTEX_INITIALIZER;
static struct rdv_server *lingering;
static pthread_once_t lingering_once = PTHREAD_ONCE_INIT;

static void srv_wake(struct rdv_server *srv, int how)
{
	atomic_store(&srv->stop, how);
	while (write(srv->wake[1], "x", 1) < 0 && errno == EINTR)
		;
}

/* Takes srv off the lingering list; false when it was not on it (somebody else owns it). */
static bool lingering_take(struct rdv_server *srv)
{
	struct rdv_server **p;

	for (p = &lingering; *p; p = &(*p)->next_lingering) {
		if (*p == srv) {
			*p = srv->next_lingering;
			return true;
		}
	}
	return false;
}

static void lingering_at_exit(void)
{
	for (;;) {
		struct rdv_server *srv, **p;

		pthread_mutex_lock(&lingering_lock);
		for (p = &lingering; *p && (*p)->pid != getpid(); p = &(*p)->next_lingering)
			;
		srv = *p;
		if (srv)
			*p = srv->next_lingering;
		pthread_mutex_unlock(&lingering_lock);
		if (!srv)
			return;
		/* still serving the others: it ends once they are gone or at its deadline */
		pthread_join(srv->thread, NULL);
		srv_free(srv);
	}
}

static void lingering_init(void)
{
	atexit(lingering_at_exit);
}

/* The end of a lingering server's thread: it frees itself unless the exit handler took it. */
static void srv_end_detached(struct rdv_server *srv)
{
	bool mine;

	pthread_mutex_lock(&lingering_lock);
	mine = lingering_take(srv);
	pthread_mutex_unlock(&lingering_lock);
	if (!mine)
		return;
	pthread_detach(srv->thread);
	srv_free(srv);
}

/*
 * Stops a server of this process still lingering at root, before a new one binds it: the new
 * job at that address means the old one is over (init/destroy in a loop on one port).
 */
static void lingering_reclaim(const char *root)
{
	struct rdv_server *srv, **p;

	pthread_mutex_lock(&lingering_lock);
	for (p = &lingering; *p && ((*p)->pid != getpid() || strcmp((*p)->root, root)); p = &(*p)->next_lingering)
		;
	srv = *p;
	if (srv)
		*p = srv->next_lingering;
	pthread_mutex_unlock(&lingering_lock);
	if (!srv)
		return;
	srv_wake(srv, 2);
	pthread_join(srv->thread, NULL);
	srv_free(srv);
}

/* Listens at host:port, or adopts s->listen_fd (already bound by the caller or a launcher). */
static ibcomm_status_t srv_listen(struct rdv_server *srv, const ibc_settings_t *s, const char *host,
				  const char *port, char *err, size_t errlen)
{
	int fds[SRV_MAX_LISTEN], n = 0;
	char why[IBC_ERRLEN];
	ibcomm_status_t st;

	if (s->listen_fd >= 0) {
		if (!ibc_sock_is_listening(s->listen_fd)) {
			snprintf(err, errlen, "rank 0: the socket handed to the rendezvous server (fd %d) is not a listening TCP socket",
				 s->listen_fd);
			return IBCOMM_ERR_INVALID;
		}
		fcntl(s->listen_fd, F_SETFL, fcntl(s->listen_fd, F_GETFL) | O_NONBLOCK);
		fcntl(s->listen_fd, F_SETFD, FD_CLOEXEC);
		fds[n++] = s->listen_fd;
	} else {
		lingering_reclaim(srv->root);
		st = ibc_sock_listen(host, port, fds, SRV_MAX_LISTEN, &n, why, sizeof(why));
		if (st) {
			snprintf(err, errlen, "rank 0 cannot serve the rendezvous at %s: %s%s", srv->root, why,
				 strstr(why, "EADDRINUSE") ? "; choose another port in IBCOMM_ROOT" :
				 strstr(why, "not an address") ? " (rank 0 must run on the host IBCOMM_ROOT names)" : "");
			return st;
		}
	}
	for (int i = 0; i < n; i++)
		srv->pfds[1 + srv->nlisten++] = (struct pollfd){ .fd = fds[i], .events = POLLIN };
	return IBCOMM_OK;
}

ibcomm_status_t ibc_rdv_srv_start(const ibc_settings_t *s, const char *host, const char *port,
				  struct rdv_server **out, char *err, size_t errlen)
{
	struct rdv_server *srv;
	sigset_t all, old;
	ibcomm_status_t st = IBCOMM_ERR_NOMEM;

	srv = calloc(1, sizeof(*srv));
	if (!srv)
		goto err_nomem;
	srv->wake[0] = srv->wake[1] = -1;
	srv->size = s->nranks;
	srv->linger_ms = s->timeout_ms;
	srv->pid = getpid();
	snprintf(srv->root, sizeof(srv->root), "%s", s->root);
	snprintf(srv->key, sizeof(srv->key), "%s", s->job_key);
	pthread_mutex_init(&srv->lock, NULL);
	srv->joined = calloc((size_t)s->nranks, sizeof(*srv->joined));
	srv->gone = calloc((size_t)s->nranks, sizeof(*srv->gone));
	srv->scratch = malloc(IBC_RDV_MAX_FRAME);
	srv->pfds = calloc(1 + SRV_MAX_LISTEN, sizeof(*srv->pfds));
	if (rdv_store_init(&srv->store, (size_t)s->nranks) || !srv->joined || !srv->gone || !srv->scratch ||
	    !srv->pfds) {
		snprintf(err, errlen, "rank 0: out of memory starting the rendezvous server for %d ranks", s->nranks);
		goto err_free;
	}
	if (pipe2(srv->wake, O_NONBLOCK | O_CLOEXEC)) {
		srv->wake[0] = srv->wake[1] = -1;
		snprintf(err, errlen, "rank 0: cannot create the rendezvous server's wake pipe: %s", strerror(errno));
		st = IBCOMM_ERR_SYSTEM;
		goto err_free;
	}
	srv->pfds[0] = (struct pollfd){ .fd = srv->wake[0], .events = POLLIN };
	st = srv_listen(srv, s, host, port, err, errlen);
	if (st)
		goto err_free;

	/* the server thread takes no signals: they belong to the application's threads */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	errno = pthread_create(&srv->thread, NULL, srv_main, srv);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (errno) {
		snprintf(err, errlen, "rank 0: cannot start the rendezvous server thread: %s", strerror(errno));
		st = IBCOMM_ERR_SYSTEM;
		goto err_free;
	}
	ibc_info("rank 0: serving the rendezvous of %d ranks at %s", s->nranks, s->root);
	*out = srv;
	return IBCOMM_OK;

err_free:
	srv_free(srv);
	return st;
err_nomem:
	snprintf(err, errlen, "rank 0: out of memory starting the rendezvous server");
	return IBCOMM_ERR_NOMEM;
}

/* Whether a rank other than rank 0 is still connected (joined, not gone). */
static bool srv_others(struct rdv_server *srv)
{
	int n;

	pthread_mutex_lock(&srv->lock);
	n = srv->njoined;
	pthread_mutex_unlock(&srv->lock);
	return n > 0;
}

void ibc_rdv_srv_stop(struct rdv_server *srv, bool linger)
{
	/*
	 * Ranks destroying their communicators at about the same time as rank 0 (a job's end)
	 * are usually gone within a few milliseconds: then the server stops here, cleanly.
	 */
	for (uint64_t until = ibc_now_ms() + SRV_STOP_WAIT_MS; linger && srv_others(srv) && ibc_now_ms() < until;)
		poll(NULL, 0, 1);
	if (!linger || !srv_others(srv)) {
		srv_wake(srv, 2);
		pthread_join(srv->thread, NULL);
		srv_free(srv);
		return;
	}
	/*
	 * Registered now, after OpenSSL's own exit handler (the job-key handshake initialised it),
	 * so that this one runs first: the server thread ends while OpenSSL can still free its
	 * per-thread state.
	 */
	pthread_once(&lingering_once, lingering_init);
	pthread_mutex_lock(&lingering_lock);
	srv->next_lingering = lingering;
	lingering = srv;
	pthread_mutex_unlock(&lingering_lock);
	srv_wake(srv, 1); /* from here on the thread (or the exit handler) owns srv */
}

size_t ibc_rdv_srv_keys(struct rdv_server *srv)
{
	return atomic_load(&srv->nkeys);
}
