/*
 * Rank 0's rendezvous server (rdv_server.h): its clients' connections, buffered
 * non-blocking I/O and framing, accepting them, and removing them (a joined rank that went
 * away without LEAVE is announced to the others).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "rdv_server.h"
#include "sock.h"

void rdv_srv_client_put_ref(struct srv_client *c)
{
	if (--c->refs == 0) {
		free(c->in);
		free(c->out);
		free(c);
	}
}

/* Publishes the size of the key table (before any reply, so that a client sees it current). */
void rdv_srv_count(struct rdv_server *srv)
{
	atomic_store(&srv->nkeys, srv->store.nentries + srv->store.ndrops);
}

void rdv_srv_release_owner(void *owner)
{
	rdv_srv_client_put_ref(owner);
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

void rdv_srv_client_flush(struct rdv_server *srv, struct srv_client *c)
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
	rdv_srv_client_flush(srv, c);
}

void rdv_srv_client_read(struct rdv_server *srv, struct srv_client *c)
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
			c->host_lost = errno == ETIMEDOUT || errno == EHOSTUNREACH;
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
			rdv_srv_handle(srv, c, &m);
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
	ibc_sock_keepalive(fd); /* a rank whose host is lost is announced dead (srv_announce_death) */
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

/* Whether two client addresses ("host:port", "[v6]:port") name the same host. */
static bool same_host(const char *a, const char *b)
{
	const char *ca = strrchr(a, ':'), *cb = strrchr(b, ':');

	return ca && cb && ca - a == cb - b && !strncmp(a, b, (size_t)(ca - a));
}

/*
 * lost's connection timed out: its host stopped answering. The other ranks of that host are
 * lost with it, but their own keep-alive may give up seconds later (each connection probes on
 * its own schedule), so a survivor's first error would name only some. A connection from that
 * host that got no answer for two probe rounds (IBC_KEEPALIVE_IDLE_S + 2 x _INTVL_S; a live
 * host's kernel answers each probe within a round trip) is dropped now as well.
 */
static void srv_host_lost(struct rdv_server *srv, const struct srv_client *lost)
{
	const unsigned silent_ms = (IBC_KEEPALIVE_IDLE_S + 2 * IBC_KEEPALIVE_INTVL_S) * 1000;

	for (int i = 0; i < srv->nclients; i++) {
		struct srv_client *c = srv->clients[i];
		struct tcp_info ti;
		socklen_t len = sizeof(ti);
		char why[160];

		if (c == lost || c->dead || c->left || c->rank < 0 || c->fd < 0 || !same_host(c->addr, lost->addr))
			continue;
		if (getsockopt(c->fd, IPPROTO_TCP, TCP_INFO, &ti, &len) || ti.tcpi_last_ack_recv < silent_ms)
			continue;
		snprintf(why, sizeof(why), "its host stopped answering (rank %d's connection from it timed out; nothing from this one for %u ms)",
			 lost->rank, ti.tcpi_last_ack_recv);
		rdv_srv_drop_client(c, why);
		c->host_lost = true;
	}
}

void rdv_srv_remove_client(struct rdv_server *srv, struct srv_client *c)
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
		if (died && c->host_lost)
			srv_host_lost(srv, c);
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
	rdv_srv_client_put_ref(c);
	if (srv->accept_paused) {
		srv->accept_paused = false;
		for (int i = 0; i < srv->nlisten; i++)
			srv->pfds[1 + i].events = POLLIN;
	}
}

void rdv_srv_accept(struct rdv_server *srv, int lfd)
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
