/*
 * The rendezvous: a small TCP key-value store through which the ranks of a job find each
 * other. Rank 0 serves it from a thread; every rank, rank 0 included, is a client.
 *
 * - Joining: a client connects (retrying with backoff: ranks start in any order) and sends
 *   JOIN(rank, size); the server answers every JOIN once all `size` ranks have joined.
 * - PUT(key, value) stores a value; GET(key) is parked by the server until the key exists.
 * - The server is one thread polling the listening sockets, the clients and a wake pipe,
 *   with buffered non-blocking I/O per client; its work per message is O(1) (hash table),
 *   so rank 0's work is linear in the number of ranks. A client that sends garbage is
 *   dropped and logged, never trusted.
 * - The client is shared by the communicators of a job (reference counted) and may be used
 *   by several threads: requests carry ids, one thread at a time reads the socket and
 *   hands replies to their requesters; replies nobody waits for any more (a GET that timed
 *   out) are discarded.
 * - Rank 0's server keeps serving after rank 0's last reference is gone until every other
 *   rank has closed its connection (or the timeout passes): a rank still finishing its last
 *   collective may need an address from the rendezvous.
 *
 * Message layout: rendezvous.h.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "auth.h"
#include "ibc.h"
#include "rendezvous.h"
#include "wire.h"

_Static_assert(IBC_RDV_NONCE_LEN == IBC_AUTH_NONCE_LEN && IBC_RDV_PROOF_LEN == IBC_AUTH_MAC_LEN,
	       "rendezvous auth fields follow lib/auth.h");

/* ======================================================================================= */
/* Messages                                                                                */
/* ======================================================================================= */

static int set_why(const char **why, const char *text)
{
	if (why)
		*why = text;
	return IBCOMM_ERR_INVALID;
}

int ibc_rdv_frame_len(const void *buf, size_t avail, size_t *frame_len, const char **why)
{
	ibc_rbuf_t r;
	uint32_t magic, len;
	uint8_t version, type;
	uint16_t flags;

	if (avail < IBC_RDV_HDR_LEN)
		return IBC_AGAIN;
	r = ibc_rbuf(buf, IBC_RDV_HDR_LEN);
	magic = ibc_r_u32(&r);
	version = ibc_r_u8(&r);
	type = ibc_r_u8(&r);
	flags = ibc_r_u16(&r);
	(void)ibc_r_u32(&r); /* request id */
	len = ibc_r_u32(&r);
	if (magic != IBC_RDV_MAGIC)
		return set_why(why, "bad magic (not an ibcomm rendezvous message)");
	if (version != IBC_RDV_VERSION)
		return set_why(why, "unsupported rendezvous protocol version (mixed ibcomm versions?)");
	if ((type < IBC_RDV_JOIN || type > IBC_RDV_ERROR) && (type < IBC_RDV_LEAVE || type > IBC_RDV_BYE) &&
	    (type < IBC_RDV_AUTH_HELLO || type > IBC_RDV_AUTH_FAILED))
		return set_why(why, "unknown message type");
	if (flags)
		return set_why(why, "unknown flags");
	if (len > IBC_RDV_MAX_BODY)
		return set_why(why, "body longer than the largest message");
	*frame_len = IBC_RDV_HDR_LEN + len;
	return IBCOMM_OK;
}

static bool read_key(ibc_rbuf_t *r, struct ibc_rdv_msg *m, const char **why)
{
	uint16_t n = ibc_r_u16(r);
	const uint8_t *p;

	if (!r->ok) {
		set_why(why, "truncated key");
		return false;
	}
	if (n == 0 || n > IBC_RDV_MAX_KEY) {
		set_why(why, "key length out of range (1..256)");
		return false;
	}
	p = ibc_r_bytes(r, n);
	if (!p) {
		set_why(why, "truncated key");
		return false;
	}
	if (memchr(p, '\0', n)) {
		set_why(why, "key holds a NUL byte");
		return false;
	}
	m->key = (const char *)p;
	m->keylen = n;
	return true;
}

static bool read_val(ibc_rbuf_t *r, struct ibc_rdv_msg *m, const char **why)
{
	uint32_t n = ibc_r_u32(r);
	const uint8_t *p;

	if (!r->ok) {
		set_why(why, "truncated value");
		return false;
	}
	if (n > IBC_RDV_MAX_VAL) {
		set_why(why, "value longer than 64 KiB");
		return false;
	}
	p = ibc_r_bytes(r, n);
	if (!p) {
		set_why(why, "truncated value");
		return false;
	}
	m->val = p;
	m->vallen = n;
	return true;
}

ibcomm_status_t ibc_rdv_decode(const void *buf, size_t len, struct ibc_rdv_msg *m, const char **why)
{
	struct ibc_rdv_msg t = { 0 };
	size_t flen;
	ibc_rbuf_t r;
	int rc;

	rc = ibc_rdv_frame_len(buf, len, &flen, why);
	if (rc == IBC_AGAIN)
		return set_why(why, "truncated header");
	if (rc)
		return IBCOMM_ERR_INVALID;
	if (len < flen)
		return set_why(why, "truncated body");
	if (len > flen)
		return set_why(why, "bytes after the end of the message");

	r = ibc_rbuf(buf, len);
	(void)ibc_r_u32(&r);
	(void)ibc_r_u8(&r);
	t.type = ibc_r_u8(&r);
	(void)ibc_r_u16(&r);
	t.req = ibc_r_u32(&r);
	(void)ibc_r_u32(&r);

	switch (t.type) {
	case IBC_RDV_JOIN:
		t.rank = ibc_r_u32(&r);
		t.size = ibc_r_u32(&r);
		if (r.ok && (t.size == 0 || t.size > INT32_MAX || t.rank >= t.size))
			return set_why(why, "JOIN with a rank or size out of range");
		break;
	case IBC_RDV_JOINED:
		t.size = ibc_r_u32(&r);
		if (r.ok && (t.size == 0 || t.size > INT32_MAX))
			return set_why(why, "JOINED with a size out of range");
		break;
	case IBC_RDV_PUT:
		if (!read_key(&r, &t, why) || !read_val(&r, &t, why))
			return IBCOMM_ERR_INVALID;
		break;
	case IBC_RDV_GET:
		if (!read_key(&r, &t, why))
			return IBCOMM_ERR_INVALID;
		break;
	case IBC_RDV_VALUE:
		if (!read_val(&r, &t, why))
			return IBCOMM_ERR_INVALID;
		break;
	case IBC_RDV_AUTH_HELLO:
		t.rank = ibc_r_u32(&r);
		t.size = ibc_r_u32(&r);
		t.nonce = ibc_r_bytes(&r, IBC_RDV_NONCE_LEN);
		if (r.ok && (t.size == 0 || t.size > INT32_MAX || t.rank >= t.size))
			return set_why(why, "AUTH_HELLO with a rank or size out of range");
		break;
	case IBC_RDV_AUTH_CHALLENGE:
		t.nonce = ibc_r_bytes(&r, IBC_RDV_NONCE_LEN);
		t.proof = ibc_r_bytes(&r, IBC_RDV_PROOF_LEN);
		break;
	case IBC_RDV_AUTH_PROOF:
		t.proof = ibc_r_bytes(&r, IBC_RDV_PROOF_LEN);
		break;
	case IBC_RDV_ERROR:
	case IBC_RDV_AUTH_FAILED: {
		uint16_t n = ibc_r_u16(&r);
		const uint8_t *p;

		if (r.ok && n > IBC_RDV_MAX_TEXT)
			return set_why(why, "error text too long");
		p = ibc_r_bytes(&r, n);
		if (!p)
			return set_why(why, "truncated error text");
		t.text = (const char *)p;
		t.textlen = n;
		break;
	}
	case IBC_RDV_DEAD:
		t.rank = ibc_r_u32(&r);
		if (r.ok && t.rank > INT32_MAX)
			return set_why(why, "DEAD with a rank out of range");
		break;
	case IBC_RDV_PUT_OK:
	case IBC_RDV_LEAVE:
	case IBC_RDV_BYE:
	case IBC_RDV_AUTH_OK:
		break;
	}
	if (!r.ok)
		return set_why(why, "truncated body");
	if (!ibc_r_done(&r))
		return set_why(why, "bytes after the end of the body");
	*m = t;
	return IBCOMM_OK;
}

static bool write_key(ibc_wbuf_t *w, const struct ibc_rdv_msg *m)
{
	if (!m->key || m->keylen == 0 || m->keylen > IBC_RDV_MAX_KEY || memchr(m->key, '\0', m->keylen))
		return false;
	ibc_w_u16(w, (uint16_t)m->keylen);
	ibc_w_bytes(w, m->key, m->keylen);
	return true;
}

static bool write_val(ibc_wbuf_t *w, const struct ibc_rdv_msg *m)
{
	if (m->vallen > IBC_RDV_MAX_VAL || (m->vallen && !m->val))
		return false;
	ibc_w_u32(w, (uint32_t)m->vallen);
	ibc_w_bytes(w, m->val, m->vallen);
	return true;
}

size_t ibc_rdv_encode(const struct ibc_rdv_msg *m, void *buf, size_t cap)
{
	ibc_wbuf_t w = ibc_wbuf(buf, cap), h;
	size_t body;

	ibc_w_u32(&w, IBC_RDV_MAGIC);
	ibc_w_u8(&w, IBC_RDV_VERSION);
	ibc_w_u8(&w, m->type);
	ibc_w_u16(&w, 0);
	ibc_w_u32(&w, m->req);
	ibc_w_u32(&w, 0); /* body length, patched below */

	switch (m->type) {
	case IBC_RDV_JOIN:
		if (m->size == 0 || m->size > INT32_MAX || m->rank >= m->size)
			return 0;
		ibc_w_u32(&w, m->rank);
		ibc_w_u32(&w, m->size);
		break;
	case IBC_RDV_JOINED:
		if (m->size == 0 || m->size > INT32_MAX)
			return 0;
		ibc_w_u32(&w, m->size);
		break;
	case IBC_RDV_PUT:
		if (!write_key(&w, m) || !write_val(&w, m))
			return 0;
		break;
	case IBC_RDV_GET:
		if (!write_key(&w, m))
			return 0;
		break;
	case IBC_RDV_VALUE:
		if (!write_val(&w, m))
			return 0;
		break;
	case IBC_RDV_AUTH_HELLO:
		if (m->size == 0 || m->size > INT32_MAX || m->rank >= m->size || !m->nonce)
			return 0;
		ibc_w_u32(&w, m->rank);
		ibc_w_u32(&w, m->size);
		ibc_w_bytes(&w, m->nonce, IBC_RDV_NONCE_LEN);
		break;
	case IBC_RDV_AUTH_CHALLENGE:
		if (!m->nonce || !m->proof)
			return 0;
		ibc_w_bytes(&w, m->nonce, IBC_RDV_NONCE_LEN);
		ibc_w_bytes(&w, m->proof, IBC_RDV_PROOF_LEN);
		break;
	case IBC_RDV_AUTH_PROOF:
		if (!m->proof)
			return 0;
		ibc_w_bytes(&w, m->proof, IBC_RDV_PROOF_LEN);
		break;
	case IBC_RDV_ERROR:
	case IBC_RDV_AUTH_FAILED:
		if (m->textlen > IBC_RDV_MAX_TEXT || (m->textlen && !m->text))
			return 0;
		ibc_w_u16(&w, (uint16_t)m->textlen);
		ibc_w_bytes(&w, m->text, m->textlen);
		break;
	case IBC_RDV_DEAD:
		if (m->rank > INT32_MAX)
			return 0;
		ibc_w_u32(&w, m->rank);
		break;
	case IBC_RDV_PUT_OK:
	case IBC_RDV_LEAVE:
	case IBC_RDV_BYE:
	case IBC_RDV_AUTH_OK:
		break;
	default:
		return 0;
	}
	if (!w.ok)
		return 0;
	body = w.len - IBC_RDV_HDR_LEN;
	h = ibc_wbuf((uint8_t *)buf + 12, 4);
	ibc_w_u32(&h, (uint32_t)body);
	return w.len;
}

/* ======================================================================================= */
/* Server (rank 0)                                                                         */
/* ======================================================================================= */

#define SRV_MAX_LISTEN 4
#define SRV_IN_INIT 4096u

struct srv_client {
	int fd;                 /* -1 once closed */
	int idx;                /* index in srv->clients */
	char addr[64];          /* peer address, for logs */
	uint8_t *in;            /* received, not yet processed */
	size_t in_len, in_cap;
	uint8_t *out;           /* to send: out[out_off..out_len) */
	size_t out_off, out_len, out_cap;
	int rank;               /* -1 until joined */
	uint32_t join_req;
	int refs;               /* 1 while in srv->clients, +1 per parked GET */
	bool dead;              /* drop at the end of this loop iteration */
	bool close_after_flush; /* rejected: close once the ERROR is sent */
	bool left;              /* said LEAVE: its connection dropping is not a death */
	/* job-key handshake (srv->key set): AUTH_HELLO, AUTH_PROOF, then JOIN */
	uint8_t auth;           /* SRV_AUTH_* */
	uint32_t auth_rank, auth_size; /* as claimed in AUTH_HELLO */
	uint8_t nonce_c[IBC_AUTH_NONCE_LEN], nonce_s[IBC_AUTH_NONCE_LEN];
	uint64_t hs_deadline;   /* not joined by then: dropped; 0 once joined (or gone) */
	struct srv_client *hs_prev, *hs_next; /* srv->hs_head list, in deadline order */
};

enum { SRV_AUTH_NONE, SRV_AUTH_CHALLENGED, SRV_AUTH_OK };

/* How a rank that had joined went away while the job was still assembling. */
enum { SRV_GONE_NO, SRV_GONE_LEFT, SRV_GONE_DROPPED };

struct srv_waiter {
	struct srv_client *c;
	uint32_t req;
	struct srv_waiter *next;
};

struct srv_entry {
	uint64_t hash;
	char *key;
	size_t keylen;
	uint8_t *val;
	size_t vallen;
	bool has_val;
	struct srv_waiter *waiters; /* parked GETs */
	struct srv_entry *next;
};

struct rdv_server {
	pthread_t thread;
	int size;
	char root[256];
	long linger_ms;          /* after the stop request; 0: until every rank is gone */
	int wake[2];
	atomic_int stop;         /* 1: after the other ranks are gone; 2: at once */
	int nlisten;
	/* pfds[0]: wake pipe, pfds[1..nlisten]: listening sockets, then one per client */
	struct pollfd *pfds;
	struct srv_client **clients;
	int nclients, cap;
	bool accept_paused;      /* out of file descriptors */

	pthread_mutex_t lock;    /* guards joined/njoined/gone against srv_missing() */
	struct srv_client **joined; /* by rank */
	int njoined;
	bool all_joined;
	uint8_t *gone;           /* by rank: joined, then went away before all had (SRV_GONE_*) */

	struct srv_entry **buckets;
	size_t nbuckets, nentries;
	uint8_t *scratch;        /* one encoded frame */
	bool closing;            /* stopping: connections dropping are not deaths */
	char key[sizeof(((ibc_settings_t *)0)->job_key)]; /* job key; "": no authentication */
	struct srv_client *hs_head, *hs_tail; /* connections that have not joined yet */
	char auth_note[320];     /* the last rank refused for its key (under lock), for timeouts */
};

#define PFD_CLIENT0(srv) (1 + (srv)->nlisten)

static uint64_t hash_key(const char *k, size_t n)
{
	uint64_t h = 1469598103934665603ull; /* FNV-1a */

	for (size_t i = 0; i < n; i++) {
		h ^= (unsigned char)k[i];
		h *= 1099511628211ull;
	}
	return h;
}

static struct srv_entry *srv_lookup(struct rdv_server *srv, const char *key, size_t n, bool create)
{
	uint64_t h = hash_key(key, n);
	struct srv_entry *e;

	for (e = srv->buckets[h & (srv->nbuckets - 1)]; e; e = e->next)
		if (e->hash == h && e->keylen == n && !memcmp(e->key, key, n))
			return e;
	if (!create)
		return NULL;

	if (srv->nentries >= srv->nbuckets) { /* grow: keep the load factor below 1 */
		size_t nb = srv->nbuckets * 2;
		struct srv_entry **b = calloc(nb, sizeof(*b));

		if (b) {
			for (size_t i = 0; i < srv->nbuckets; i++) {
				while ((e = srv->buckets[i])) {
					srv->buckets[i] = e->next;
					e->next = b[e->hash & (nb - 1)];
					b[e->hash & (nb - 1)] = e;
				}
			}
			free(srv->buckets);
			srv->buckets = b;
			srv->nbuckets = nb;
		}
	}
	e = calloc(1, sizeof(*e));
	if (!e)
		return NULL;
	e->key = malloc(n);
	if (!e->key) {
		free(e);
		return NULL;
	}
	memcpy(e->key, key, n);
	e->keylen = n;
	e->hash = h;
	e->next = srv->buckets[h & (srv->nbuckets - 1)];
	srv->buckets[h & (srv->nbuckets - 1)] = e;
	srv->nentries++;
	return e;
}

static void client_put_ref(struct srv_client *c)
{
	if (--c->refs == 0) {
		free(c->in);
		free(c->out);
		free(c);
	}
}

static void client_drop(struct srv_client *c, const char *why)
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

static void srv_send(struct rdv_server *srv, struct srv_client *c, const struct ibc_rdv_msg *m)
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
			client_drop(c, "out of memory for its replies");
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
static void srv_refuse(struct rdv_server *srv, struct srv_client *c, uint8_t type, uint32_t req, const char *text)
{
	struct ibc_rdv_msg m = { .type = type, .req = req, .text = text, .textlen = strlen(text) };

	if (m.textlen > IBC_RDV_MAX_TEXT)
		m.textlen = IBC_RDV_MAX_TEXT;
	if (type == IBC_RDV_AUTH_FAILED)
		ibc_warn("rendezvous server: refusing %s: %s", c->addr, text);
	else
		ibc_info("rendezvous server: refusing %s: %s", c->addr, text);
	srv_send(srv, c, &m);
	c->close_after_flush = true;
	if (!c->out_len)
		c->dead = true;
}

static void srv_send_error(struct rdv_server *srv, struct srv_client *c, uint32_t req, const char *text)
{
	srv_refuse(srv, c, IBC_RDV_ERROR, req, text);
}

/* ---- job-key authentication (lib/auth.h) ---- */

/* What the proofs of a rendezvous connection are bound to (client and server alike). */
static size_t rdv_auth_ctx(uint32_t rank, uint32_t size, uint8_t ctx[16])
{
	ibc_wbuf_t w = ibc_wbuf(ctx, 16);

	ibc_w_bytes(&w, "rdv", 3);
	ibc_w_u32(&w, rank);
	ibc_w_u32(&w, size);
	return w.len;
}

/* Connections that have not joined yet, oldest (earliest deadline) first. */
static void hs_add(struct rdv_server *srv, struct srv_client *c)
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

static void hs_del(struct rdv_server *srv, struct srv_client *c)
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
static void hs_expire(struct rdv_server *srv)
{
	uint64_t now = ibc_now_ms();
	struct srv_client *c;

	while ((c = srv->hs_head) && c->hs_deadline <= now) {
		hs_del(srv, c);
		if (!c->dead)
			client_drop(c, c->close_after_flush ? "it did not read its refusal within the handshake time" :
				       c->auth == SRV_AUTH_NONE ? "it sent no JOIN within the handshake time" :
								  "it did not finish authenticating within the handshake time");
	}
}

/* Milliseconds until the next handshake deadline, -1 for none. */
static int hs_timeout(struct rdv_server *srv)
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
	srv_refuse(srv, c, IBC_RDV_AUTH_FAILED, req, text);
}

/* AUTH_HELLO: answer with our nonce and our proof of the key. */
static void srv_auth_hello(struct rdv_server *srv, struct srv_client *c, const struct ibc_rdv_msg *m)
{
	struct ibc_rdv_msg reply = { .type = IBC_RDV_AUTH_CHALLENGE, .req = m->req };
	uint8_t ctx[16], proof[IBC_AUTH_MAC_LEN];
	size_t ctxlen = rdv_auth_ctx(m->rank, m->size, ctx);

	if (!srv->key[0]) {
		srv_auth_fail(srv, c, m->req, m->rank,
			      "the job key does not match: this rank has a job key (IBCOMM_JOB_KEY) but rank 0 has none");
		return;
	}
	if (c->auth != SRV_AUTH_NONE || c->rank >= 0) {
		client_drop(c, "AUTH_HELLO sent twice");
		return;
	}
	memcpy(c->nonce_c, m->nonce, IBC_AUTH_NONCE_LEN);
	c->auth_rank = m->rank;
	c->auth_size = m->size;
	if (ibc_auth_nonce(c->nonce_s) ||
	    ibc_auth_proof(srv->key, IBC_AUTH_ACCEPTOR, c->nonce_c, c->nonce_s, ctx, ctxlen, proof)) {
		srv_send_error(srv, c, m->req, "rank 0 cannot compute an authentication challenge (no random bytes?)");
		return;
	}
	reply.nonce = c->nonce_s;
	reply.proof = proof;
	c->auth = SRV_AUTH_CHALLENGED;
	srv_send(srv, c, &reply);
}

/* AUTH_PROOF: the client's proof, over the same nonces. */
static void srv_auth_proof(struct rdv_server *srv, struct srv_client *c, const struct ibc_rdv_msg *m)
{
	struct ibc_rdv_msg reply = { .type = IBC_RDV_AUTH_OK, .req = m->req };
	uint8_t ctx[16];
	size_t ctxlen = rdv_auth_ctx(c->auth_rank, c->auth_size, ctx);
	char text[160];

	if (c->auth != SRV_AUTH_CHALLENGED) {
		client_drop(c, "AUTH_PROOF without a challenge");
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
	srv_send(srv, c, &reply);
}

/* AUTH_FAILED from a client: our proof did not match its key; it goes away. */
static void srv_auth_rejected(struct rdv_server *srv, struct srv_client *c)
{
	char text[64];

	if (c->auth != SRV_AUTH_CHALLENGED) {
		client_drop(c, "AUTH_FAILED without a challenge");
		return;
	}
	snprintf(text, sizeof(text), "the job key of rank %u does not match rank 0's", c->auth_rank);
	pthread_mutex_lock(&srv->lock);
	snprintf(srv->auth_note, sizeof(srv->auth_note), "rank %u (from %s) was refused: %s", c->auth_rank,
		 c->addr, text);
	pthread_mutex_unlock(&srv->lock);
	client_drop(c, text);
}

/*
 * With a job key, a JOIN is admitted only on a connection that proved the key, for the rank
 * and size it authenticated as; it is refused otherwise (the reply is sent here).
 */
static bool srv_authenticate(struct rdv_server *srv, struct srv_client *c, const struct ibc_rdv_msg *m)
{
	if (!srv->key[0])
		return true;
	if (c->auth != SRV_AUTH_OK) {
		srv_auth_fail(srv, c, m->req, m->rank,
			      "the job key does not match: rank 0 requires a job key (IBCOMM_JOB_KEY) and this rank did not authenticate");
		return false;
	}
	if (m->rank != c->auth_rank || m->size != c->auth_size) {
		client_drop(c, "JOIN as another rank than it authenticated as");
		return false;
	}
	return true;
}

static void srv_join(struct rdv_server *srv, struct srv_client *c, const struct ibc_rdv_msg *m)
{
	struct ibc_rdv_msg reply = { .type = IBC_RDV_JOINED, .size = (uint32_t)srv->size };
	char text[IBC_ERRLEN];

	if (c->rank >= 0) {
		client_drop(c, "JOIN sent twice");
		return;
	}
	if (!srv_authenticate(srv, c, m))
		return;
	if ((int)m->size != srv->size) {
		snprintf(text, sizeof(text),
			 "rank %u says the job has %u ranks but rank 0 serves %d at %s: IBCOMM_SIZE (or the launcher's size) differs between ranks",
			 m->rank, m->size, srv->size, srv->root);
		srv_send_error(srv, c, m->req, text);
		return;
	}
	pthread_mutex_lock(&srv->lock);
	if (srv->joined[m->rank]) {
		pthread_mutex_unlock(&srv->lock);
		snprintf(text, sizeof(text),
			 "rank %u has already joined (from %s): two processes were given the same rank", m->rank,
			 srv->joined[m->rank]->addr);
		srv_send_error(srv, c, m->req, text);
		return;
	}
	srv->joined[m->rank] = c;
	srv->njoined++;
	srv->gone[m->rank] = SRV_GONE_NO;
	c->rank = (int)m->rank;
	c->join_req = m->req;
	hs_del(srv, c);
	ibc_trace("rendezvous server: rank %u joined from %s (%d of %d)", m->rank, c->addr, srv->njoined, srv->size);
	if (srv->all_joined) { /* a rank coming back after everybody had joined */
		pthread_mutex_unlock(&srv->lock);
		reply.req = m->req;
		srv_send(srv, c, &reply);
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
		srv_send(srv, srv->joined[r], &reply);
	}
}

static void srv_put(struct rdv_server *srv, struct srv_client *c, const struct ibc_rdv_msg *m)
{
	struct ibc_rdv_msg reply = { .type = IBC_RDV_PUT_OK, .req = m->req };
	struct srv_entry *e = srv_lookup(srv, m->key, m->keylen, true);
	struct srv_waiter *w;
	uint8_t *v;

	if (!e) {
		srv_send_error(srv, c, m->req, "the rendezvous server (rank 0) is out of memory");
		return;
	}
	v = malloc(m->vallen ? m->vallen : 1);
	if (!v) {
		srv_send_error(srv, c, m->req, "the rendezvous server (rank 0) is out of memory");
		return;
	}
	memcpy(v, m->val, m->vallen);
	free(e->val);
	e->val = v;
	e->vallen = m->vallen;
	e->has_val = true;

	while ((w = e->waiters)) {
		struct ibc_rdv_msg value = { .type = IBC_RDV_VALUE, .req = w->req, .val = e->val, .vallen = e->vallen };

		e->waiters = w->next;
		srv_send(srv, w->c, &value);
		client_put_ref(w->c);
		free(w);
	}
	srv_send(srv, c, &reply);
}

static void srv_get(struct rdv_server *srv, struct srv_client *c, const struct ibc_rdv_msg *m)
{
	struct srv_entry *e = srv_lookup(srv, m->key, m->keylen, true);
	struct srv_waiter *w;

	if (!e) {
		srv_send_error(srv, c, m->req, "the rendezvous server (rank 0) is out of memory");
		return;
	}
	if (e->has_val) {
		struct ibc_rdv_msg value = { .type = IBC_RDV_VALUE, .req = m->req, .val = e->val, .vallen = e->vallen };

		srv_send(srv, c, &value);
		return;
	}
	w = malloc(sizeof(*w));
	if (!w) {
		srv_send_error(srv, c, m->req, "the rendezvous server (rank 0) is out of memory");
		return;
	}
	w->c = c;
	w->req = m->req;
	w->next = e->waiters;
	e->waiters = w;
	c->refs++;
}

static void srv_handle(struct rdv_server *srv, struct srv_client *c, const struct ibc_rdv_msg *m)
{
	switch (m->type) {
	case IBC_RDV_JOIN:
		srv_join(srv, c, m);
		break;
	case IBC_RDV_PUT:
	case IBC_RDV_GET:
		if (c->rank < 0) {
			client_drop(c, m->type == IBC_RDV_PUT ? "PUT before JOIN" : "GET before JOIN");
			return;
		}
		if (m->type == IBC_RDV_PUT)
			srv_put(srv, c, m);
		else
			srv_get(srv, c, m);
		break;
	case IBC_RDV_LEAVE:
		c->left = true;
		ibc_trace("rendezvous server: %s (rank %d) leaves", c->addr, c->rank);
		break;
	case IBC_RDV_AUTH_HELLO:
		srv_auth_hello(srv, c, m);
		break;
	case IBC_RDV_AUTH_PROOF:
		srv_auth_proof(srv, c, m);
		break;
	case IBC_RDV_AUTH_FAILED:
		srv_auth_rejected(srv, c);
		break;
	default:
		client_drop(c, "sent a message only the server sends");
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
				client_drop(c, "message too large");
				return;
			}
			p = realloc(c->in, cap);
			if (!p) {
				client_drop(c, "out of memory for its requests");
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
				client_drop(c, "closed in the middle of a message");
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
				client_drop(c, why);
				return;
			}
			if (c->in_len - off < flen)
				break;
			if (ibc_rdv_decode(c->in + off, flen, &m, &why)) {
				client_drop(c, why);
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
	hs_add(srv, c);
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
			srv_send(srv, c, &m);
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
	hs_del(srv, c);
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
static void srv_missing(struct rdv_server *srv, char *buf, size_t len)
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
			int hs = hs_timeout(srv);

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
		hs_expire(srv);
		for (int i = srv->nclients - 1; i >= 0; i--)
			if (srv->clients[i]->dead)
				srv_remove_client(srv, srv->clients[i]);
	}
	/* the ranks still connected learn that the server leaves on purpose (not a death of rank 0) */
	srv->closing = true;
	for (int i = 0; i < srv->nclients; i++) {
		struct ibc_rdv_msg bye = { .type = IBC_RDV_BYE };

		if (srv->clients[i]->rank >= 0 && !srv->clients[i]->left)
			srv_send(srv, srv->clients[i], &bye);
	}
	return NULL;
}

static void srv_free(struct rdv_server *srv)
{
	while (srv->nclients)
		srv_remove_client(srv, srv->clients[srv->nclients - 1]);
	for (size_t i = 0; srv->buckets && i < srv->nbuckets; i++) {
		struct srv_entry *e;

		while ((e = srv->buckets[i])) {
			struct srv_waiter *w;

			srv->buckets[i] = e->next;
			while ((w = e->waiters)) {
				e->waiters = w->next;
				client_put_ref(w->c);
				free(w);
			}
			free(e->key);
			free(e->val);
			free(e);
		}
	}
	for (int i = 0; i < srv->nlisten; i++)
		close(srv->pfds[1 + i].fd);
	if (srv->wake[0] >= 0) {
		close(srv->wake[0]);
		close(srv->wake[1]);
	}
	pthread_mutex_destroy(&srv->lock);
	free(srv->buckets);
	free(srv->joined);
	free(srv->gone);
	free(srv->clients);
	free(srv->pfds);
	free(srv->scratch);
	free(srv);
}

/* Binds every address of host:port; EADDRINUSE on any of them is an error. */
static ibcomm_status_t srv_listen(struct rdv_server *srv, const char *host, const char *port, char *err,
				  size_t errlen)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE };
	struct addrinfo *res, *ai;
	bool has_v4 = false;
	int rc, last_errno = 0;

	rc = getaddrinfo(host, port, &hints, &res);
	if (rc) {
		snprintf(err, errlen, "rank 0 cannot serve the rendezvous at %s: cannot resolve '%s': %s", srv->root,
			 host, gai_strerror(rc));
		return IBCOMM_ERR_RENDEZVOUS;
	}
	for (ai = res; ai; ai = ai->ai_next)
		if (ai->ai_family == AF_INET)
			has_v4 = true;
	for (ai = res; ai && srv->nlisten < SRV_MAX_LISTEN; ai = ai->ai_next) {
		int one = 1, fd;

		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
		if (fd < 0) {
			last_errno = errno;
			continue;
		}
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (ai->ai_family == AF_INET6 && has_v4) /* "::" and "0.0.0.0" both bound: keep them apart */
			setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) || listen(fd, SOMAXCONN)) {
			last_errno = errno;
			close(fd);
			if (last_errno == EADDRINUSE) {
				freeaddrinfo(res);
				snprintf(err, errlen,
					 "rank 0 cannot serve the rendezvous at %s: port %s is taken (EADDRINUSE) by another process; choose another port in IBCOMM_ROOT",
					 srv->root, port);
				return IBCOMM_ERR_RENDEZVOUS;
			}
			continue;
		}
		srv->pfds[1 + srv->nlisten] = (struct pollfd){ .fd = fd, .events = POLLIN };
		srv->nlisten++;
	}
	freeaddrinfo(res);
	if (!srv->nlisten) {
		if (last_errno == EADDRNOTAVAIL)
			snprintf(err, errlen,
				 "rank 0 cannot serve the rendezvous at %s: '%s' is not an address of this host (rank 0 must run on the host IBCOMM_ROOT names)",
				 srv->root, host);
		else
			snprintf(err, errlen, "rank 0 cannot serve the rendezvous at %s: %s", srv->root,
				 strerror(last_errno));
		return IBCOMM_ERR_RENDEZVOUS;
	}
	return IBCOMM_OK;
}

static ibcomm_status_t srv_start(const ibc_settings_t *s, const char *host, const char *port,
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
	snprintf(srv->root, sizeof(srv->root), "%s", s->root);
	snprintf(srv->key, sizeof(srv->key), "%s", s->job_key);
	pthread_mutex_init(&srv->lock, NULL);
	srv->nbuckets = 64;
	while (srv->nbuckets < (size_t)s->nranks * 2 && srv->nbuckets < ((size_t)1 << 24))
		srv->nbuckets *= 2;
	srv->buckets = calloc(srv->nbuckets, sizeof(*srv->buckets));
	srv->joined = calloc((size_t)s->nranks, sizeof(*srv->joined));
	srv->gone = calloc((size_t)s->nranks, sizeof(*srv->gone));
	srv->scratch = malloc(IBC_RDV_MAX_FRAME);
	srv->pfds = calloc(1 + SRV_MAX_LISTEN, sizeof(*srv->pfds));
	if (!srv->buckets || !srv->joined || !srv->gone || !srv->scratch || !srv->pfds) {
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
	if (s->listen_fd >= 0) { /* already listening at root (ibcomm_get_id, a launcher's port 0) */
		srv->pfds[1] = (struct pollfd){ .fd = s->listen_fd, .events = POLLIN };
		srv->nlisten = 1;
		fcntl(s->listen_fd, F_SETFL, fcntl(s->listen_fd, F_GETFL) | O_NONBLOCK);
	} else {
		st = srv_listen(srv, host, port, err, errlen);
		if (st)
			goto err_free;
	}

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

/* Asks the server to stop (after the other ranks are gone, when linger) and waits for it. */
static void srv_stop(struct rdv_server *srv, bool linger)
{
	atomic_store(&srv->stop, linger ? 1 : 2);
	while (write(srv->wake[1], "x", 1) < 0 && errno == EINTR)
		;
	pthread_join(srv->thread, NULL);
	srv_free(srv);
}

/* ======================================================================================= */
/* Client (every rank)                                                                     */
/* ======================================================================================= */

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
	atomic_int refs;
	atomic_bool no_bye;       /* a communicator failed: leave without a goodbye (seen as dead) */
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
			 "the rendezvous server at %s (rank 0) has stopped (rank 0 destroyed its communicator)", rdv->root);
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

/* Connects to host:port, retrying with backoff until dl: rank 0 may not be up yet. */
static ibcomm_status_t rdv_connect(struct ibc_rdv *rdv, const char *host, const char *port, ibc_deadline_t dl,
				   char *err, size_t errlen)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
	int backoff = 10, last_errno = ECONNREFUSED, attempts = 0;
	uint64_t start = ibc_now_ms();

	for (;;) {
		struct addrinfo *res, *ai;
		int rc = getaddrinfo(host, port, &hints, &res);

		attempts++;
		if (rc && rc != EAI_AGAIN) {
			snprintf(err, errlen, "rank %d: cannot resolve the rendezvous host '%s' (IBCOMM_ROOT=%s): %s",
				 rdv->rank, host, rdv->root, gai_strerror(rc));
			return IBCOMM_ERR_RENDEZVOUS;
		}
		for (ai = rc ? NULL : res; ai; ai = ai->ai_next) {
			int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
			int one = 1, soerr = 0;
			socklen_t sl = sizeof(soerr);

			if (fd < 0) {
				last_errno = errno;
				continue;
			}
			if (connect(fd, ai->ai_addr, ai->ai_addrlen)) {
				if (errno == EINPROGRESS) {
					struct pollfd pfd = { .fd = fd, .events = POLLOUT };
					int left = ibc_deadline_left(dl);

					if (left < 0 || left > 5000) /* then the next address */
						left = 5000;
					if (poll(&pfd, 1, left) <= 0)
						soerr = ETIMEDOUT;
					else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl))
						soerr = errno;
				} else {
					soerr = errno;
				}
			}
			if (soerr) {
				last_errno = soerr;
				close(fd);
				continue;
			}
			setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
			rdv->fd = fd;
			freeaddrinfo(res);
			ibc_trace("rank %d: connected to the rendezvous at %s after %d attempts", rdv->rank, rdv->root,
				  attempts);
			return IBCOMM_OK;
		}
		if (!rc)
			freeaddrinfo(res);
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
		srv_stop(rdv->srv, linger);
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
	size_t ctxlen = rdv_auth_ctx((uint32_t)s->rank, (uint32_t)s->nranks, ctx);
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
		st = srv_start(s, host, port, &rdv->srv, err, errlen);
		if (st)
			goto err_free;
	}
	st = rdv_connect(rdv, host, port, dl, err, errlen);
	if (st)
		goto err_free;

	if (s->job_key[0]) {
		st = rdv_authenticate(rdv, s, dl, err, errlen);
		if (st)
			goto err_free;
	} else if (!atomic_flag_test_and_set(&noted_no_key)) {
		ibc_info("rank %d: IBCOMM_JOB_KEY is not set: no authentication; any process that can reach %s or this rank's ports can join the job or send it data",
			 s->rank, s->root);
	}
	m.rank = (uint32_t)s->rank;
	m.size = (uint32_t)s->nranks;
	st = rdv_call(rdv, &m, &p, dl, NULL, err, errlen);
	if (st == IBCOMM_ERR_TIMEOUT) {
		if (rdv->srv) {
			char missing[384];

			srv_missing(rdv->srv, missing, sizeof(missing));
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
	 * once instead of at their deadline.
	 */
	atomic_store(&rdv->no_bye, true);
	if (atomic_fetch_sub(&rdv->refs, 1) == 1)
		rdv_free(rdv, false);
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

/* ---- failure notices (see ibc.h) ---- */

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
			 "rank %d died: the rendezvous server saw its connection drop without a goodbye (killed or crashed)",
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
