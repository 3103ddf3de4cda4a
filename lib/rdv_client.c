/*
 * The rendezvous client (every rank, rank 0 included): joins, then PUT/GET/DROP for the
 * communicators of the job, and hears the server's failure notices (DEAD, BYE).
 *
 * - Joining: a client connects (retrying with backoff: ranks start in any order) and sends
 *   JOIN(rank, size); the server answers every JOIN once all `size` ranks have joined.
 * - The client is shared by the communicators of a job (reference counted) and may be used
 *   by several threads: requests carry ids, one thread at a time reads the socket and
 *   hands replies to their requesters; replies nobody waits for any more (a GET that timed
 *   out) are discarded.
 * - Rank 0's last reference does not wait for the other ranks: its server serves on in the
 *   background (rdv_server.c).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "auth.h"
#include "ibc.h"
#include "rendezvous.h"
#include "sock.h"

/* A request waiting for its reply. */
struct rdv_pending {
	uint32_t req;
	uint8_t type;             /* request type */
	bool done;
	ibcomm_status_t st;
	void *val;                /* GET: destination */
	size_t cap, len;
	char text[IBC_RDV_MAX_TEXT + 1]; /* ERROR reply */
	struct rdv_pending *next;
};

struct ibc_rdv {
	ibc_boot_t boot;          /* the bootstrap interface (boot_rdv.c) */
	atomic_int refs;
	atomic_bool no_bye;       /* the last hold was a failed communicator: no goodbye (seen as dead) */
	pthread_mutex_t lock;     /* everything below but `in`, which the reader owns */
	pthread_cond_t cond;
	int fd;
	bool reading;             /* a thread is reading the socket */
	bool broken;
	char broken_why[IBC_ERRLEN];
	uint32_t next_req;
	struct rdv_pending *pending;
	uint8_t *in;              /* received, not yet dispatched */
	size_t in_len;
	uint8_t *scratch;         /* one encoded frame */
	int rank, size;
	long timeout_ms;
	char root[256];
	struct rdv_server *srv;   /* rank 0 */
	int wake[2];              /* ibc_rdv_interrupt() wakes the reader */
	bool bye;                 /* the server said it stops on purpose */
	uint8_t *dead;            /* per rank: 0 alive, RDV_DIED (DEAD notice), RDV_SERVER_DIED (rank 0) */
	atomic_uint gen;          /* grows with every rank found dead */
};

#define RDV_DIED 1
#define RDV_SERVER_DIED 2

/* Records that rank died (first reason wins). Called with the lock held. */
static void rdv_mark_dead(struct ibc_rdv *rdv, uint32_t rank, uint8_t kind)
{
	if (rank >= (uint32_t)rdv->size || rdv->dead[rank])
		return;
	rdv->dead[rank] = kind;
	atomic_fetch_add(&rdv->gen, 1);
	ibc_info("rank %d: the rendezvous reports rank %u dead%s", rdv->rank, rank,
		 kind == RDV_SERVER_DIED ? " (its connection to the rendezvous server, rank 0, dropped)" : "");
}

/* The rendezvous connection is gone. Called with the lock held. */
static void rdv_lost(struct ibc_rdv *rdv, const char *why)
{
	rdv->broken = true;
	if (rdv->bye) {
		snprintf(rdv->broken_why, sizeof(rdv->broken_why),
			 "the rendezvous server at %s (rank 0) has stopped: rank 0 destroyed its communicators and its process has ended (or its server's timeout passed); new communicators and first connections need it",
			 rdv->root);
		return;
	}
	snprintf(rdv->broken_why, sizeof(rdv->broken_why), "%s", why);
	/* rank 0's own client: its server is in this process and alive */
	if (!rdv->srv)
		rdv_mark_dead(rdv, 0, RDV_SERVER_DIED);
}

static void cond_wait_until(pthread_cond_t *cond, pthread_mutex_t *lock, ibc_deadline_t dl)
{
	struct timespec ts;
	uint64_t left;

	if (!dl) {
		pthread_cond_wait(cond, lock);
		return;
	}
	clock_gettime(CLOCK_MONOTONIC, &ts);
	left = (uint64_t)ibc_deadline_left(dl);
	ts.tv_sec += (time_t)(left / 1000);
	ts.tv_nsec += (long)(left % 1000) * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	pthread_cond_timedwait(cond, lock, &ts);
}

/* Hands the complete frames of rdv->in to their requests. Called with the lock held. */
static void rdv_dispatch(struct ibc_rdv *rdv)
{
	size_t off = 0;

	for (;;) {
		struct ibc_rdv_msg m;
		struct rdv_pending *p;
		const char *why = NULL;
		size_t flen;
		int rc;

		rc = ibc_rdv_frame_len(rdv->in + off, rdv->in_len - off, &flen, &why);
		if (rc == IBC_AGAIN || (!rc && rdv->in_len - off < flen))
			break;
		if (rc || ibc_rdv_decode(rdv->in + off, flen, &m, &why)) {
			rdv->broken = true;
			snprintf(rdv->broken_why, sizeof(rdv->broken_why), "the rendezvous server at %s sent garbage (%s)",
				 rdv->root, why);
			return;
		}
		off += flen;
		if (m.type == IBC_RDV_DEAD) {
			rdv_mark_dead(rdv, m.rank, RDV_DIED);
			continue;
		}
		if (m.type == IBC_RDV_BYE) {
			rdv->bye = true;
			continue;
		}
		for (p = rdv->pending; p && p->req != m.req; p = p->next)
			;
		if (!p) {
			ibc_trace("rank %d: discarding a stale rendezvous reply (request %u)", rdv->rank, m.req);
			continue;
		}
		p->done = true;
		if (m.type == IBC_RDV_ERROR || m.type == IBC_RDV_AUTH_FAILED) {
			p->st = m.type == IBC_RDV_ERROR ? IBCOMM_ERR_RENDEZVOUS : IBCOMM_ERR_AUTH;
			snprintf(p->text, sizeof(p->text), "%.*s", (int)m.textlen, m.text);
		} else if ((p->type == IBC_RDV_JOIN && m.type == IBC_RDV_JOINED) ||
			   (p->type == IBC_RDV_PUT && m.type == IBC_RDV_PUT_OK) ||
			   (p->type == IBC_RDV_GET && m.type == IBC_RDV_VALUE) ||
			   (p->type == IBC_RDV_AUTH_HELLO && m.type == IBC_RDV_AUTH_CHALLENGE) ||
			   (p->type == IBC_RDV_AUTH_PROOF && m.type == IBC_RDV_AUTH_OK)) {
			p->st = IBCOMM_OK;
			if (m.type == IBC_RDV_VALUE) {
				p->len = m.vallen;
				if (p->cap && m.vallen)
					memcpy(p->val, m.val, IBC_MIN(p->cap, m.vallen));
			} else if (m.type == IBC_RDV_AUTH_CHALLENGE && p->cap >= IBC_RDV_NONCE_LEN + IBC_RDV_PROOF_LEN) {
				/* the server's nonce, then its proof */
				memcpy(p->val, m.nonce, IBC_RDV_NONCE_LEN);
				memcpy((uint8_t *)p->val + IBC_RDV_NONCE_LEN, m.proof, IBC_RDV_PROOF_LEN);
				p->len = IBC_RDV_NONCE_LEN + IBC_RDV_PROOF_LEN;
			}
		} else {
			p->st = IBCOMM_ERR_RENDEZVOUS;
			snprintf(p->text, sizeof(p->text), "the server answered with message type %d to a request of type %d",
				 m.type, p->type);
		}
	}
	if (off) {
		memmove(rdv->in, rdv->in + off, rdv->in_len - off);
		rdv->in_len -= off;
	}
}

/* Reads what the socket has (waiting until dl). Called without the lock, as the reader. */
static int rdv_read(struct ibc_rdv *rdv, ibc_deadline_t dl, char *why, size_t whylen)
{
	struct pollfd pfd[2] = { { .fd = rdv->fd, .events = POLLIN }, { .fd = rdv->wake[0], .events = POLLIN } };
	ssize_t n;
	int rc;

	rc = poll(pfd, 2, ibc_deadline_left(dl));
	if (rc < 0) {
		if (errno == EINTR)
			return IBCOMM_OK;
		snprintf(why, whylen, "poll on the rendezvous connection: %s", strerror(errno));
		return -1;
	}
	if (rc == 0)
		return IBCOMM_ERR_TIMEOUT;
	if (pfd[1].revents) { /* ibc_rdv_interrupt(): the callers look at their cancel flags */
		char buf[64];

		while (read(rdv->wake[0], buf, sizeof(buf)) > 0)
			;
		if (!pfd[0].revents)
			return IBCOMM_OK;
	}
	n = recv(rdv->fd, rdv->in + rdv->in_len, IBC_RDV_MAX_FRAME - rdv->in_len, 0);
	if (n < 0) {
		if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)
			return IBCOMM_OK;
		snprintf(why, whylen, "the connection to the rendezvous server at %s failed: %s", rdv->root,
			 strerror(errno));
		return -1;
	}
	if (n == 0) {
		snprintf(why, whylen, "the rendezvous server at %s (rank 0) closed the connection", rdv->root);
		return -1;
	}
	rdv->in_len += (size_t)n;
	return IBCOMM_OK;
}

static int send_all(int fd, const uint8_t *p, size_t len, ibc_deadline_t dl)
{
	while (len) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL);

		if (n < 0) {
			struct pollfd pfd = { .fd = fd, .events = POLLOUT };

			if (errno == EINTR)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK)
				return -1;
			n = poll(&pfd, 1, ibc_deadline_left(dl));
			if (n == 0) {
				errno = ETIMEDOUT;
				return -1;
			}
			continue;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* The first rank found dead, or -1. Called with the lock held. */
static int rdv_first_dead(const struct ibc_rdv *rdv)
{
	for (int r = 0; r < rdv->size; r++)
		if (rdv->dead[r])
			return r;
	return -1;
}

/*
 * Sends m and waits until dl for its reply, which p receives. Returns IBCOMM_OK (p->st
 * tells the server's answer), IBCOMM_ERR_TIMEOUT, IBCOMM_ERR_RENDEZVOUS (connection lost:
 * why in err), IBCOMM_ERR_ABORTED (*cancel became non-zero) or, for a GET, IBCOMM_ERR_PEER
 * (a rank died meanwhile: the key may never come).
 */
static ibcomm_status_t rdv_call(struct ibc_rdv *rdv, struct ibc_rdv_msg *m, struct rdv_pending *p,
				ibc_deadline_t dl, const atomic_int *cancel, char *err, size_t errlen)
{
	ibcomm_status_t st = IBCOMM_OK;
	struct rdv_pending **pp;
	unsigned gen0 = atomic_load(&rdv->gen);
	size_t n;

	pthread_mutex_lock(&rdv->lock);
	if (rdv->broken) {
		snprintf(err, errlen, "rank %d: %s", rdv->rank, rdv->broken_why);
		pthread_mutex_unlock(&rdv->lock);
		return IBCOMM_ERR_RENDEZVOUS;
	}
	if (++rdv->next_req == 0)
		rdv->next_req = 1;
	m->req = p->req = rdv->next_req;
	p->type = m->type;
	n = ibc_rdv_encode(m, rdv->scratch, IBC_RDV_MAX_FRAME);
	if (!n) {
		snprintf(err, errlen, "rank %d: cannot encode a rendezvous request of type %d", rdv->rank, m->type);
		pthread_mutex_unlock(&rdv->lock);
		return IBCOMM_ERR_INVALID;
	}
	if (send_all(rdv->fd, rdv->scratch, n, dl)) {
		if (errno == ETIMEDOUT) {
			/* a partial frame may be out: the stream is unusable from now on */
			snprintf(rdv->broken_why, sizeof(rdv->broken_why),
				 "a request to the rendezvous server at %s timed out while being sent", rdv->root);
		} else {
			snprintf(rdv->broken_why, sizeof(rdv->broken_why),
				 "cannot send to the rendezvous server at %s: %s", rdv->root, strerror(errno));
		}
		rdv->broken = true;
		pthread_cond_broadcast(&rdv->cond);
		snprintf(err, errlen, "rank %d: %s", rdv->rank, rdv->broken_why);
		pthread_mutex_unlock(&rdv->lock);
		return IBCOMM_ERR_RENDEZVOUS;
	}
	p->next = rdv->pending;
	rdv->pending = p;

	while (!p->done && !rdv->broken) {
		if (cancel && atomic_load(cancel)) {
			st = IBCOMM_ERR_ABORTED;
			snprintf(err, errlen, "rank %d: a rendezvous request was aborted", rdv->rank);
			break;
		}
		/*
		 * Another rank's death does not stop the lookup (the key may belong to a live rank of
		 * a split communicator); the server's does: the key can never come.
		 */
		if (m->type == IBC_RDV_GET && atomic_load(&rdv->gen) != gen0 && rdv->dead[0] == RDV_SERVER_DIED) {
			st = IBCOMM_ERR_PEER;
			snprintf(err, errlen, "rank %d: rank 0 (the rendezvous server) died while this rank waited for the rendezvous",
				 rdv->rank);
			break;
		}
		if (!rdv->reading) {
			char why[IBC_ERRLEN];
			int rc;

			rdv->reading = true;
			pthread_mutex_unlock(&rdv->lock);
			rc = rdv_read(rdv, dl, why, sizeof(why));
			pthread_mutex_lock(&rdv->lock);
			rdv->reading = false;
			if (rc < 0 && rc != IBCOMM_ERR_TIMEOUT) {
				rdv_lost(rdv, why);
			} else if (rc == IBCOMM_OK) {
				rdv_dispatch(rdv);
			}
			pthread_cond_broadcast(&rdv->cond);
			if (rc == IBCOMM_ERR_TIMEOUT && !p->done) {
				st = IBCOMM_ERR_TIMEOUT;
				break;
			}
		} else {
			cond_wait_until(&rdv->cond, &rdv->lock, dl);
			if (!p->done && dl && ibc_deadline_left(dl) == 0) {
				st = IBCOMM_ERR_TIMEOUT;
				break;
			}
		}
	}
	for (pp = &rdv->pending; *pp; pp = &(*pp)->next) {
		if (*pp == p) {
			*pp = p->next;
			break;
		}
	}
	if (!p->done && st == IBCOMM_OK && m->type == IBC_RDV_GET && rdv_first_dead(rdv) == 0) {
		st = IBCOMM_ERR_PEER; /* the server went with rank 0 */
		snprintf(err, errlen, "rank %d: rank 0 (the rendezvous server) died while this rank waited for it",
			 rdv->rank);
	} else if (!p->done && st == IBCOMM_OK) {
		st = IBCOMM_ERR_RENDEZVOUS;
		snprintf(err, errlen, "rank %d: %s", rdv->rank, rdv->broken_why);
	}
	pthread_mutex_unlock(&rdv->lock);
	return st;
}

/*
 * For ibc_rdv_open(): whether the connection was lost before the server answered the JOIN
 * (then the connection is closed and the client is as before rdv_connect()).
 */
static bool rdv_join_lost(struct ibc_rdv *rdv)
{
	if (rdv->srv || !rdv->broken || rdv->fd < 0 || rdv->pending)
		return false;
	close(rdv->fd);
	rdv->fd = -1;
	rdv->broken = false;
	rdv->bye = false;
	rdv->broken_why[0] = '\0';
	rdv->in_len = 0;
	memset(rdv->dead, 0, (size_t)rdv->size);
	return true;
}

/* Connects to host:port, retrying with backoff until dl: rank 0 may not be up yet. */
static ibcomm_status_t rdv_connect(struct ibc_rdv *rdv, const char *host, const char *port, ibc_deadline_t dl,
				   char *err, size_t errlen)
{
	int backoff = 10, last_errno = ECONNREFUSED, attempts = 0;
	uint64_t start = ibc_now_ms();

	for (;;) {
		const char *why = NULL;
		int fd = ibc_sock_connect(host, port, false, dl, -1, NULL, &why);

		attempts++;
		if (fd >= 0) {
			ibc_sock_keepalive(fd); /* a lost rank 0 host: rdv_lost() */
			rdv->fd = fd;
			ibc_trace("rank %d: connected to the rendezvous at %s after %d attempts", rdv->rank, rdv->root,
				  attempts);
			return IBCOMM_OK;
		}
		if (why && errno != EAGAIN) {
			snprintf(err, errlen, "rank %d: cannot resolve the rendezvous host '%s' (IBCOMM_ROOT=%s): %s",
				 rdv->rank, host, rdv->root, why);
			return IBCOMM_ERR_RENDEZVOUS;
		}
		if (!why)
			last_errno = errno;
		if (dl && ibc_deadline_left(dl) == 0) {
			snprintf(err, errlen,
				 "rank %d: could not reach the rendezvous at %s within %llu ms (%d attempts, last error: %s): is rank 0 running there?",
				 rdv->rank, rdv->root, (unsigned long long)(ibc_now_ms() - start), attempts,
				 strerror(last_errno));
			return IBCOMM_ERR_RENDEZVOUS;
		}
		{
			int left = ibc_deadline_left(dl);

			poll(NULL, 0, left >= 0 && left < backoff ? left : backoff);
		}
		backoff = IBC_MIN(backoff * 2, 500);
	}
}

static void rdv_free(struct ibc_rdv *rdv, bool linger)
{
	if (rdv->fd >= 0) {
		/* a goodbye, so that the server does not report this rank dead */
		struct ibc_rdv_msg leave = { .type = IBC_RDV_LEAVE };
		size_t n = ibc_rdv_encode(&leave, rdv->scratch, IBC_RDV_MAX_FRAME);

		if (!rdv->broken && !atomic_load(&rdv->no_bye) && n)
			send_all(rdv->fd, rdv->scratch, n, ibc_deadline(1000));
		close(rdv->fd);
	}
	if (rdv->srv)
		ibc_rdv_srv_stop(rdv->srv, linger);
	if (rdv->wake[0] >= 0) {
		close(rdv->wake[0]);
		close(rdv->wake[1]);
	}
	pthread_cond_destroy(&rdv->cond);
	pthread_mutex_destroy(&rdv->lock);
	free(rdv->dead);
	free(rdv->in);
	free(rdv->scratch);
	free(rdv);
}

/* The answer to one authentication request, as an error message (0 when it succeeded). */
static ibcomm_status_t rdv_auth_reply(struct ibc_rdv *rdv, ibcomm_status_t st, const struct rdv_pending *p,
				      const char *what, char *err, size_t errlen)
{
	if (st == IBCOMM_ERR_TIMEOUT) {
		snprintf(err, errlen, "rank %d: the rendezvous server at %s did not answer its %s within %ld ms",
			 rdv->rank, rdv->root, what, rdv->timeout_ms);
		return st;
	}
	if (st)
		return st;
	if (p->st) {
		snprintf(err, errlen, "rank %d: the rendezvous at %s refused to admit it: %s", rdv->rank, rdv->root,
			 p->text);
		return p->st;
	}
	return IBCOMM_OK;
}

/*
 * Proves the job key to the server and checks the server's proof (AUTH_* in rendezvous.h):
 * a rank with another key learns it here, before it could take a rank's place.
 */
static ibcomm_status_t rdv_authenticate(struct ibc_rdv *rdv, const ibc_settings_t *s, ibc_deadline_t dl, char *err,
					size_t errlen)
{
	uint8_t nc[IBC_AUTH_NONCE_LEN], got[IBC_AUTH_NONCE_LEN + IBC_AUTH_MAC_LEN], proof[IBC_AUTH_MAC_LEN], ctx[16];
	struct ibc_rdv_msg m = { .type = IBC_RDV_AUTH_HELLO, .rank = (uint32_t)s->rank, .size = (uint32_t)s->nranks,
				 .nonce = nc };
	struct rdv_pending p = { .val = got, .cap = sizeof(got) };
	size_t ctxlen = ibc_rdv_auth_ctx((uint32_t)s->rank, (uint32_t)s->nranks, ctx);
	ibcomm_status_t st;

	if (ibc_auth_nonce(nc)) {
		snprintf(err, errlen, "rank %d: no random bytes for the job-key authentication: %s", s->rank,
			 strerror(errno));
		return IBCOMM_ERR_SYSTEM;
	}
	st = rdv_call(rdv, &m, &p, dl, NULL, err, errlen);
	st = rdv_auth_reply(rdv, st, &p, "authentication hello", err, errlen);
	if (st)
		return st;
	if (p.len != sizeof(got) ||
	    !ibc_auth_check(s->job_key, IBC_AUTH_ACCEPTOR, nc, got, ctx, ctxlen, got + IBC_AUTH_NONCE_LEN)) {
		static const char text[] = "the job key does not match (rank 0's proof failed this rank's check)";
		struct ibc_rdv_msg f = { .type = IBC_RDV_AUTH_FAILED, .text = text, .textlen = sizeof(text) - 1 };
		size_t n;

		/* tell the server why this rank goes away (best effort), so rank 0 can say so */
		pthread_mutex_lock(&rdv->lock);
		n = ibc_rdv_encode(&f, rdv->scratch, IBC_RDV_MAX_FRAME);
		if (n)
			send_all(rdv->fd, rdv->scratch, n, ibc_deadline(1000));
		rdv->broken = true; /* no LEAVE: it never joined */
		snprintf(rdv->broken_why, sizeof(rdv->broken_why), "job key mismatch");
		pthread_mutex_unlock(&rdv->lock);
		snprintf(err, errlen,
			 "rank %d: the job key (IBCOMM_JOB_KEY) does not match rank 0's: the rendezvous server at %s proved a different key; every rank of a job needs the same key",
			 s->rank, s->root);
		return IBCOMM_ERR_AUTH;
	}
	if (ibc_auth_proof(s->job_key, IBC_AUTH_CONNECTOR, nc, got, ctx, ctxlen, proof)) {
		snprintf(err, errlen, "rank %d: cannot compute the job-key proof (OpenSSL HMAC failed)", s->rank);
		return IBCOMM_ERR_SYSTEM;
	}
	m = (struct ibc_rdv_msg){ .type = IBC_RDV_AUTH_PROOF, .proof = proof };
	p = (struct rdv_pending){ 0 };
	st = rdv_call(rdv, &m, &p, dl, NULL, err, errlen);
	st = rdv_auth_reply(rdv, st, &p, "authentication proof", err, errlen);
	if (st)
		return st;
	ibc_trace("rank %d: authenticated to the rendezvous at %s with the job key", s->rank, s->root);
	return IBCOMM_OK;
}

ibcomm_status_t ibc_rdv_open(const ibc_settings_t *s, ibc_deadline_t dl, struct ibc_rdv **out, char *err,
			     size_t errlen)
{
	static atomic_flag noted_no_key = ATOMIC_FLAG_INIT;

	struct ibc_rdv_msg m = { .type = IBC_RDV_JOIN };
	struct rdv_pending p = { 0 };
	pthread_condattr_t ca;
	struct ibc_rdv *rdv;
	char host[256], port[8];
	const char *why;
	ibcomm_status_t st;

	if (s->nranks < 1 || s->rank < 0 || s->rank >= s->nranks) {
		snprintf(err, errlen, "rendezvous: rank %d is out of range for %d ranks", s->rank, s->nranks);
		return IBCOMM_ERR_INVALID;
	}
	if (ibc_root_parse(s->root, host, sizeof(host), port, sizeof(port), &why)) {
		snprintf(err, errlen, "IBCOMM_ROOT='%s' is not a rendezvous address: %s", s->root, why);
		return IBCOMM_ERR_INVALID;
	}
	rdv = calloc(1, sizeof(*rdv));
	if (!rdv)
		goto err_nomem;
	rdv->in = malloc(IBC_RDV_MAX_FRAME);
	rdv->scratch = malloc(IBC_RDV_MAX_FRAME);
	rdv->dead = calloc((size_t)s->nranks, 1);
	if (!rdv->in || !rdv->scratch || !rdv->dead) {
		free(rdv->in);
		free(rdv->scratch);
		free(rdv->dead);
		free(rdv);
		goto err_nomem;
	}
	rdv->boot.ops = &ibc_boot_rdv_ops;
	atomic_init(&rdv->refs, 1);
	atomic_init(&rdv->no_bye, false);
	atomic_init(&rdv->gen, 0);
	rdv->fd = -1;
	if (pipe2(rdv->wake, O_NONBLOCK | O_CLOEXEC)) {
		snprintf(err, errlen, "rank %d: cannot create the rendezvous client's wake pipe: %s", s->rank,
			 strerror(errno));
		free(rdv->in);
		free(rdv->scratch);
		free(rdv->dead);
		free(rdv);
		return IBCOMM_ERR_SYSTEM;
	}
	rdv->rank = s->rank;
	rdv->size = s->nranks;
	rdv->timeout_ms = s->timeout_ms;
	snprintf(rdv->root, sizeof(rdv->root), "%s", s->root);
	pthread_mutex_init(&rdv->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&rdv->cond, &ca);
	pthread_condattr_destroy(&ca);

	if (s->rank == 0) {
		st = ibc_rdv_srv_start(s, host, port, &rdv->srv, err, errlen);
		if (st)
			goto err_free;
	}
	if (!s->job_key[0] && !atomic_flag_test_and_set(&noted_no_key))
		ibc_info("rank %d: IBCOMM_JOB_KEY is not set: no authentication; any process that can reach %s or this rank's ports can join the job or send it data",
			 s->rank, s->root);
	m.rank = (uint32_t)s->rank;
	m.size = (uint32_t)s->nranks;
	for (;;) {
		p = (struct rdv_pending){ 0 };
		st = rdv_connect(rdv, host, port, dl, err, errlen);
		if (st)
			goto err_free;
		st = s->job_key[0] ? rdv_authenticate(rdv, s, dl, err, errlen) : IBCOMM_OK;
		if (!st)
			st = rdv_call(rdv, &m, &p, dl, NULL, err, errlen);
		/*
		 * The connection dropped before any answer: a server of an earlier job at this
		 * address that was stopping (init and destroy in a loop on one port, rank 0 not
		 * there yet). Connect again until the deadline; rank 0's own server never does this.
		 */
		if (st != IBCOMM_ERR_RENDEZVOUS || !rdv_join_lost(rdv) || (dl && ibc_deadline_left(dl) == 0))
			break;
		poll(NULL, 0, 10);
	}
	if (st == IBCOMM_ERR_TIMEOUT) {
		if (rdv->srv) {
			char missing[384];

			ibc_rdv_srv_missing(rdv->srv, missing, sizeof(missing));
			snprintf(err, errlen,
				 "rank 0: timed out after %ld ms waiting for all %d ranks to join the rendezvous at %s; missing ranks: %s",
				 s->timeout_ms, s->nranks, s->root, missing);
		} else {
			snprintf(err, errlen,
				 "rank %d: timed out after %ld ms waiting for all %d ranks to join the rendezvous at %s (rank 0's error names the missing ranks)",
				 s->rank, s->timeout_ms, s->nranks, s->root);
		}
		goto err_free;
	}
	if (st)
		goto err_free;
	if (p.st) {
		st = p.st;
		snprintf(err, errlen, "rank %d: the rendezvous at %s refused to admit it: %s", s->rank, s->root, p.text);
		goto err_free;
	}
	ibc_info("rank %d: all %d ranks have joined the rendezvous at %s", s->rank, s->nranks, s->root);
	*out = rdv;
	return IBCOMM_OK;

err_free:
	rdv_free(rdv, false);
	return st;
err_nomem:
	snprintf(err, errlen, "rank %d: out of memory opening the rendezvous", s->rank);
	return IBCOMM_ERR_NOMEM;
}

void ibc_rdv_ref(struct ibc_rdv *rdv)
{
	atomic_fetch_add(&rdv->refs, 1);
}

void ibc_rdv_unref(struct ibc_rdv *rdv)
{
	if (rdv && atomic_fetch_sub(&rdv->refs, 1) == 1)
		rdv_free(rdv, true);
}

void ibc_rdv_abandon(struct ibc_rdv *rdv)
{
	if (!rdv)
		return;
	/*
	 * No goodbye when this rank's last hold goes: the server then reports it dead, and ranks
	 * still waiting for it (over RDMA a dead or broken writer raises no completion) fail at
	 * once instead of at their deadline. Only the last hold decides: a failed or aborted
	 * communicator destroyed while others of the job live on (an aborted dup) says nothing
	 * about how the rank ends; marking the whole client would make its normal destroy of
	 * the world communicator later look like a death to ranks still finishing its last call.
	 */
	if (atomic_fetch_sub(&rdv->refs, 1) == 1) {
		atomic_store(&rdv->no_bye, true);
		rdv_free(rdv, false);
	}
}

static bool key_ok(struct ibc_rdv *rdv, const char *key, const char *op, char *err, size_t errlen)
{
	size_t n = key ? strlen(key) : 0;

	if (n == 0 || n > IBC_RDV_MAX_KEY) {
		snprintf(err, errlen, "rank %d: rendezvous %s: the key must have 1..%u bytes (it has %zu)", rdv->rank,
			 op, IBC_RDV_MAX_KEY, n);
		return false;
	}
	return true;
}

ibcomm_status_t ibc_rdv_put(struct ibc_rdv *rdv, const char *key, const void *val, size_t len, char *err,
			    size_t errlen)
{
	struct ibc_rdv_msg m = { .type = IBC_RDV_PUT, .val = val, .vallen = len };
	struct rdv_pending p = { 0 };
	ibcomm_status_t st;

	if (!key_ok(rdv, key, "PUT", err, errlen))
		return IBCOMM_ERR_INVALID;
	if (len > IBC_RDV_MAX_VAL || (len && !val)) {
		snprintf(err, errlen, "rank %d: rendezvous PUT '%s': the value must have at most %u bytes (it has %zu)",
			 rdv->rank, key, IBC_RDV_MAX_VAL, len);
		return IBCOMM_ERR_INVALID;
	}
	m.key = key;
	m.keylen = strlen(key);
	st = rdv_call(rdv, &m, &p, ibc_deadline(rdv->timeout_ms), NULL, err, errlen);
	if (st == IBCOMM_ERR_TIMEOUT) {
		snprintf(err, errlen, "rank %d: rendezvous PUT '%s' got no answer from %s within %ld ms", rdv->rank, key,
			 rdv->root, rdv->timeout_ms);
		return st;
	}
	if (st)
		return st;
	if (p.st) {
		snprintf(err, errlen, "rank %d: rendezvous PUT '%s' refused by %s: %s", rdv->rank, key, rdv->root, p.text);
		return p.st;
	}
	return IBCOMM_OK;
}

ibcomm_status_t ibc_rdv_get(struct ibc_rdv *rdv, const char *key, void *val, size_t cap, size_t *len,
			    ibc_deadline_t dl, char *err, size_t errlen)
{
	return ibc_rdv_get_cancel(rdv, key, val, cap, len, dl, NULL, err, errlen);
}

ibcomm_status_t ibc_rdv_get_cancel(struct ibc_rdv *rdv, const char *key, void *val, size_t cap, size_t *len,
				   ibc_deadline_t dl, const atomic_int *cancel, char *err, size_t errlen)
{
	struct ibc_rdv_msg m = { .type = IBC_RDV_GET };
	struct rdv_pending p = { .val = val, .cap = val ? cap : 0 };
	ibcomm_status_t st;

	if (!key_ok(rdv, key, "GET", err, errlen))
		return IBCOMM_ERR_INVALID;
	m.key = key;
	m.keylen = strlen(key);
	st = rdv_call(rdv, &m, &p, dl, cancel, err, errlen);
	if (st == IBCOMM_ERR_TIMEOUT) {
		snprintf(err, errlen,
			 "rank %d: rendezvous GET '%s' timed out: no rank published it at %s before the deadline", rdv->rank,
			 key, rdv->root);
		return st;
	}
	if (st)
		return st;
	if (p.st) {
		snprintf(err, errlen, "rank %d: rendezvous GET '%s' refused by %s: %s", rdv->rank, key, rdv->root, p.text);
		return p.st;
	}
	if (len)
		*len = p.len;
	return IBCOMM_OK;
}

void ibc_rdv_drop(struct ibc_rdv *rdv, const char *prefix, int nmembers)
{
	struct ibc_rdv_msg m = { .type = IBC_RDV_DROP, .key = prefix, .keylen = prefix ? strlen(prefix) : 0,
				 .size = (uint32_t)nmembers };
	size_t n;

	if (nmembers < 1)
		return;
	pthread_mutex_lock(&rdv->lock);
	n = rdv->broken ? 0 : ibc_rdv_encode(&m, rdv->scratch, IBC_RDV_MAX_FRAME);
	/* no reply to wait for; a send that cannot finish breaks the stream like any other */
	if (n && send_all(rdv->fd, rdv->scratch, n, ibc_deadline(100))) {
		rdv->broken = true;
		snprintf(rdv->broken_why, sizeof(rdv->broken_why), "cannot send to the rendezvous server at %s: %s",
			 rdv->root, strerror(errno));
		pthread_cond_broadcast(&rdv->cond);
	}
	pthread_mutex_unlock(&rdv->lock);
}

ibc_boot_t *ibc_rdv_boot(struct ibc_rdv *rdv)
{
	return &rdv->boot;
}

struct ibc_rdv *ibc_rdv_of(ibc_boot_t *b)
{
	return (struct ibc_rdv *)((char *)b - offsetof(struct ibc_rdv, boot));
}

struct rdv_server *ibc_rdv_server(struct ibc_rdv *rdv)
{
	return rdv->srv;
}

/* ---- failure notices (see rendezvous.h) ---- */

int ibc_rdv_fd(struct ibc_rdv *rdv)
{
	int fd;

	pthread_mutex_lock(&rdv->lock);
	fd = rdv->broken ? -1 : rdv->fd;
	pthread_mutex_unlock(&rdv->lock);
	return fd;
}

unsigned ibc_rdv_poll(struct ibc_rdv *rdv, bool readable)
{
	if (readable) {
		pthread_mutex_lock(&rdv->lock);
		/* a thread inside rdv_call() reads the socket itself and dispatches the notices */
		if (!rdv->reading && !rdv->broken && rdv->in_len < IBC_RDV_MAX_FRAME) {
			ssize_t n = recv(rdv->fd, rdv->in + rdv->in_len, IBC_RDV_MAX_FRAME - rdv->in_len, MSG_DONTWAIT);
			char why[IBC_ERRLEN];

			if (n > 0) {
				rdv->in_len += (size_t)n;
				rdv_dispatch(rdv);
			} else if (n == 0) {
				snprintf(why, sizeof(why), "the rendezvous server at %s (rank 0) closed the connection",
					 rdv->root);
				rdv_lost(rdv, why);
			} else if (errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK) {
				snprintf(why, sizeof(why), "the connection to the rendezvous server at %s failed: %s",
					 rdv->root, strerror(errno));
				rdv_lost(rdv, why);
			}
			pthread_cond_broadcast(&rdv->cond);
		}
		pthread_mutex_unlock(&rdv->lock);
	}
	return atomic_load(&rdv->gen);
}

bool ibc_rdv_dead(struct ibc_rdv *rdv, int rank, char *why, size_t whylen)
{
	uint8_t kind = 0;

	if (rank < 0 || rank >= rdv->size)
		return false;
	pthread_mutex_lock(&rdv->lock);
	kind = rdv->dead[rank];
	pthread_mutex_unlock(&rdv->lock);
	if (kind == RDV_SERVER_DIED)
		snprintf(why, whylen, "rank 0 (the rendezvous server) died: the connection to it dropped");
	else if (kind)
		snprintf(why, whylen,
			 "rank %d died: the rendezvous server saw its connection drop without a goodbye (killed or crashed, or its host stopped answering)",
			 rank);
	return kind != 0;
}

void ibc_rdv_interrupt(struct ibc_rdv *rdv)
{
	int saved = errno;
	ssize_t n = write(rdv->wake[1], "x", 1);

	(void)n;
	errno = saved;
}
