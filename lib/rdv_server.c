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
 *
 * This file holds the server's thread and lifecycle; the clients' connections and I/O are in
 * rdv_srv_client.c, the per-message handlers in rdv_srv_msg.c (shared state: rdv_server.h).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "rdv_server.h"

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
				rdv_srv_accept(srv, srv->pfds[1 + i].fd);
		for (int i = srv->nclients - 1; i >= 0; i--) {
			struct srv_client *c = srv->clients[i];
			short re = srv->pfds[PFD_CLIENT0(srv) + i].revents;

			if (i >= srv->nclients || c->dead)
				continue;
			if (re & POLLOUT)
				rdv_srv_client_flush(srv, c);
			if (re & (POLLIN | POLLHUP | POLLERR))
				rdv_srv_client_read(srv, c);
		}
		rdv_hs_expire(srv);
		/* (a removal may find others dead: srv_host_lost) */
		for (int i = srv->nclients - 1; i >= 0; i--)
			if (srv->clients[i]->dead) {
				rdv_srv_remove_client(srv, srv->clients[i]);
				i = srv->nclients;
			}
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
		rdv_srv_remove_client(srv, srv->clients[srv->nclients - 1]);
	rdv_store_free(&srv->store, rdv_srv_release_owner);
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
