/*
 * Tagged point-to-point on channel IBC_CHAN_P2P. A message is a run of chunks all carrying
 * the user's tag; the first starts with a header (wire version, payload length) so the
 * receiver checks the size. Messages are matched by (peer, tag) in order: a receive first
 * looks among the messages that arrived before their receive, then takes the peer's chunks,
 * setting aside (copying to the heap) whole messages that carry another tag.
 *
 * What is set aside is bounded: at most set.p2p_unexpected_max bytes per communicator
 * (IBCOMM_P2P_UNEXPECTED_MAX). A message that would go over it is not taken: its first
 * chunk stays in the transport's slot (held here, to be taken by the receive that matches
 * it), the rest stays with the sender, who waits for credits (flow control), and the
 * receive that met it fails with IBCOMM_ERR_NOMEM naming the limit. Nothing is dropped, and
 * no size a peer declares is allocated beyond the limit.
 */
#include <stdlib.h>
#include <string.h>

#include "ibc.h"
#include "wire.h"
#include "algo/algo.h"

#define P2P_HDR 12 /* u32 wire version, u64 payload bytes */

struct ibc_p2p_msg {
	struct ibc_p2p_msg *next;
	int peer;
	uint32_t tag;
	size_t len;
	unsigned char data[];
};

struct ibc_p2p_state {
	uint64_t held, peak;  /* bytes of the messages on comm->unexpected: now, at most */
	bool *has_head;       /* per peer: the first chunk of a message not taken (over the limit) */
	ibc_chunk_t *head;
};

/* Frees the messages received but never matched (declared in ibc.h; ibcomm_destroy calls it). */
void ibc_p2p_cleanup(struct ibcomm *comm)
{
	struct ibc_p2p_msg *m, *next;

	for (m = comm->unexpected; m; m = next) {
		next = m->next;
		free(m);
	}
	comm->unexpected = NULL;
	if (comm->p2p) { /* held chunks go with the transport, destroyed before */
		free(comm->p2p->has_head);
		free(comm->p2p->head);
		free(comm->p2p);
		comm->p2p = NULL;
	}
}

void ibc_p2p_held(const struct ibcomm *comm, uint64_t *now, uint64_t *peak)
{
	*now = comm->p2p ? comm->p2p->held : 0;
	*peak = comm->p2p ? comm->p2p->peak : 0;
}

static struct ibc_p2p_state *p2p_state(struct ibcomm *comm)
{
	struct ibc_p2p_state *p = comm->p2p;

	if (p)
		return p;
	p = calloc(1, sizeof(*p));
	if (!p)
		return NULL;
	p->has_head = calloc((size_t)comm->size, sizeof(*p->has_head));
	p->head = calloc((size_t)comm->size, sizeof(*p->head));
	if (!p->has_head || !p->head) {
		free(p->has_head);
		free(p->head);
		free(p);
		return NULL;
	}
	comm->p2p = p;
	return p;
}

/* Whether `bytes` more may be set aside within the limit. */
static bool fits(const struct ibcomm *comm, const struct ibc_p2p_state *p, uint64_t bytes)
{
	return bytes <= comm->set.p2p_unexpected_max && p->held <= comm->set.p2p_unexpected_max - bytes;
}

static ibcomm_status_t over_limit(struct ibcomm *comm, const char *what, uint64_t bytes)
{
	return ibc_err(comm, IBCOMM_ERR_NOMEM, "%s: setting it aside would hold %llu bytes of unexpected messages "
		       "(now %llu), over IBCOMM_P2P_UNEXPECTED_MAX=%llu: receive the messages that came first, or "
		       "raise IBCOMM_P2P_UNEXPECTED_MAX (or ibcomm_config_t.p2p_unexpected_max)", what,
		       (unsigned long long)(comm->p2p ? comm->p2p->held + bytes : bytes),
		       (unsigned long long)(comm->p2p ? comm->p2p->held : 0),
		       (unsigned long long)comm->set.p2p_unexpected_max);
}

static void unexpected_append(struct ibcomm *comm, struct ibc_p2p_msg *m)
{
	struct ibc_p2p_msg **pp = &comm->unexpected;

	comm->p2p->held += m->len;
	if (comm->p2p->held > comm->p2p->peak)
		comm->p2p->peak = comm->p2p->held;

	while (*pp)
		pp = &(*pp)->next;
	m->next = NULL;
	*pp = m;
}

ibcomm_status_t ibc_p2p_check(struct ibcomm *comm, const char *fn, const void *buf, size_t count,
			      ibcomm_dtype_t dtype, int peer, size_t *bytes)
{
	if (!comm)
		return ibc_err_thread(IBCOMM_ERR_INVALID, "%s: comm is NULL", fn);
	if (comm->failed)
		return comm->failed;
	if (atomic_load(&comm->aborted))
		return ibc_err(comm, IBCOMM_ERR_ABORTED, "%s on rank %d: the communicator was aborted", fn,
			       comm->rank);
	if (!ibc_dtype_valid(dtype))
		return ibc_err(comm, IBCOMM_ERR_INVALID, "%s on rank %d: dtype %d is not an ibcomm_dtype_t", fn,
			       comm->rank, (int)dtype);
	if (peer < 0 || peer >= comm->size)
		return ibc_err(comm, IBCOMM_ERR_INVALID, "%s on rank %d: peer %d is not a rank of this %d-rank "
			       "communicator", fn, comm->rank, peer, comm->size);
	if (__builtin_mul_overflow(count, ibcomm_dtype_size(dtype), bytes) || *bytes > PTRDIFF_MAX)
		return ibc_err(comm, IBCOMM_ERR_INVALID, "%s on rank %d: count %zu is too large", fn, comm->rank,
			       count);
	if (!buf && count)
		return ibc_err(comm, IBCOMM_ERR_INVALID, "%s on rank %d: buf is NULL with count %zu", fn, comm->rank,
			       count);
	return IBCOMM_OK;
}

static ibcomm_status_t p2p_fail(struct ibcomm *comm, ibcomm_status_t st)
{
	if (st == IBCOMM_ERR_PEER || st == IBCOMM_ERR_TRANSPORT)
		comm->failed = st;
	return st;
}

/*
 * A send, resumable (lib/nbc.c): *off counts the payload bytes sent, *started says whether the
 * header went. Without `wait`, returns IBC_AGAIN when the peer has no free slot (nothing of a
 * chunk is sent then), to be called again later; chunks of one message stay consecutive on the
 * channel as long as the caller starts no other send to this peer meanwhile.
 */
int ibc_p2p_send_step(struct ibcomm *comm, const void *buf, size_t count, ibcomm_dtype_t dtype, int peer,
		      uint32_t tag, ibc_deadline_t dl, bool *started, size_t *off, bool wait)
{
	static const char fn[] = "ibcomm_send";
	size_t bytes, first;
	unsigned char *head;
	ibc_wbuf_t w;
	ibcomm_status_t st;
	int rc = IBCOMM_OK;

	if ((st = ibc_p2p_check(comm, fn, buf, count, dtype, peer, &bytes)))
		return st;
	if (peer == comm->rank) {
		struct ibc_p2p_state *p = p2p_state(comm);
		struct ibc_p2p_msg *m;
		char what[128];

		if (!p)
			return ibc_err(comm, IBCOMM_ERR_NOMEM, "%s on rank %d: out of memory", fn, comm->rank);
		if (!fits(comm, p, bytes)) {
			snprintf(what, sizeof(what), "%s on rank %d: a message of %zu bytes with tag %u to itself", fn,
				 comm->rank, bytes, tag);
			return over_limit(comm, what, bytes);
		}
		m = malloc(sizeof(*m) + bytes);
		if (!m)
			return ibc_err(comm, IBCOMM_ERR_NOMEM, "%s on rank %d: no memory for %zu bytes to itself", fn,
				       comm->rank, bytes);
		m->peer = peer;
		m->tag = tag;
		m->len = bytes;
		if (bytes)
			memcpy(m->data, buf, bytes);
		unexpected_append(comm, m);
		return IBCOMM_OK;
	}
	if (comm->tp->max_chunk <= P2P_HDR)
		return ibc_err(comm, IBCOMM_ERR_UNSUPPORTED, "%s on rank %d: transport chunks of %zu bytes cannot "
			       "hold a message header", fn, comm->rank, comm->tp->max_chunk);
	first = IBC_MIN(bytes, comm->tp->max_chunk - P2P_HDR);
	if (!*started) {
		head = malloc(P2P_HDR + first);
		if (!head)
			return ibc_err(comm, IBCOMM_ERR_NOMEM, "%s on rank %d: no memory for a message header", fn,
				       comm->rank);
		w = ibc_wbuf(head, P2P_HDR + first);
		ibc_w_u32(&w, IBC_WIRE_VERSION);
		ibc_w_u64(&w, bytes);
		ibc_w_bytes(&w, buf, first);
		rc = ibc_put(comm->tp, peer, IBC_CHAN_P2P, tag, head, w.len, wait, dl);
		free(head);
		if (rc == IBCOMM_OK) {
			*started = true;
			*off = first;
		}
	}
	while (rc == IBCOMM_OK && *off < bytes) {
		size_t n = IBC_MIN(comm->tp->max_chunk, bytes - *off);

		rc = ibc_put(comm->tp, peer, IBC_CHAN_P2P, tag, (const char *)buf + *off, n, wait, dl);
		if (rc == IBCOMM_OK)
			*off += n;
	}
	if (rc == IBC_AGAIN && ibc_deadline_left(dl) == 0)
		rc = IBCOMM_ERR_TIMEOUT;
	if (rc == IBCOMM_ERR_TIMEOUT)
		return ibc_err(comm, IBCOMM_ERR_TIMEOUT, "%s on rank %d: timed out after %ld ms sending %zu bytes "
			       "with tag %u to rank %d: is it receiving?", fn, comm->rank, comm->set.timeout_ms,
			       bytes, tag, peer);
	return rc < 0 ? p2p_fail(comm, rc) : rc;
}

ibcomm_status_t ibcomm_send(ibcomm_t *comm, const void *buf, size_t count, ibcomm_dtype_t dtype, int peer,
			    uint32_t tag)
{
	bool started = false;
	size_t off = 0;

	if (comm && ibc_nbc_busy(comm)) /* after the pending requests (lib/nbc.c) */
		return ibc_nbc_p2p(comm, true, (void *)buf, count, dtype, peer, tag, NULL);
	return ibc_p2p_send_step(comm, buf, count, dtype, peer, tag, comm ? ibc_call_deadline(comm) : 0, &started,
				 &off, true);
}

/* Takes the chunks of a message after its first, copying them to dst[got..total) (dst may be NULL). */
static ibcomm_status_t take_rest(struct ibcomm *comm, int peer, uint32_t tag, unsigned char *dst, size_t got,
				 size_t total, ibc_deadline_t dl)
{
	while (got < total) {
		ibc_chunk_t ch;
		int rc = ibc_get(comm->tp, peer, IBC_CHAN_P2P, &ch, true, dl);
		bool bad;

		if (rc < 0)
			return rc;
		bad = ch.tag != tag || ch.len > total - got || !ch.len;
		if (!bad && dst)
			memcpy(dst + got, ch.data, ch.len);
		got += ch.len;
		rc = ibc_release(comm->tp, &ch);
		if (bad)
			return ibc_err(comm, IBCOMM_ERR_TRANSPORT, "ibcomm_recv on rank %d: broken message from rank "
				       "%d: a chunk of %zu bytes with tag %u inside a message with tag %u", comm->rank,
				       peer, ch.len, ch.tag, tag);
		if (rc < 0)
			return rc;
	}
	return IBCOMM_OK;
}

static ibcomm_status_t size_mismatch(struct ibcomm *comm, int peer, uint32_t tag, size_t got, size_t want)
{
	return ibc_err(comm, IBCOMM_ERR_MISMATCH, "ibcomm_recv on rank %d: the message from rank %d with tag %u "
		       "has %zu bytes, the receive expects %zu", comm->rank, peer, tag, got, want);
}

#define P2P_ASIDE 2 /* take_message: another tag's message went onto the unexpected list */

/*
 * Takes the next whole message from peer: into buf when it carries tag (IBCOMM_OK, or
 * _MISMATCH when its size differs: consumed either way), else onto the unexpected list
 * (P2P_ASIDE). Without `wait`, IBC_AGAIN when no message has begun to arrive; once one has,
 * its rest is waited for (its sender is sending it).
 */
static int take_message(struct ibcomm *comm, void *buf, size_t bytes, int peer, uint32_t tag, ibc_deadline_t dl,
			bool wait)
{
	struct ibc_p2p_state *p = p2p_state(comm);
	struct ibc_p2p_msg *m = NULL;
	unsigned char *dst;
	uint32_t version;
	uint64_t total;
	ibc_chunk_t ch;
	ibc_rbuf_t r;
	size_t first;
	bool match;
	int rc;

	if (!p)
		return ibc_err(comm, IBCOMM_ERR_NOMEM, "ibcomm_recv on rank %d: out of memory", comm->rank);
	if (p->has_head[peer]) { /* a message left in the transport by an earlier receive */
		ch = p->head[peer];
		p->has_head[peer] = false;
	} else if ((rc = ibc_get(comm->tp, peer, IBC_CHAN_P2P, &ch, wait, dl)) != IBCOMM_OK) {
		return rc;
	}
	r = ibc_rbuf(ch.data, ch.len);
	version = ibc_r_u32(&r);
	total = ibc_r_u64(&r);
	first = ch.len - r.off;
	if (!r.ok || version != IBC_WIRE_VERSION || total > PTRDIFF_MAX || first > total) {
		ibc_release(comm->tp, &ch);
		return ibc_err(comm, IBCOMM_ERR_TRANSPORT, "ibcomm_recv on rank %d: bad message header from rank %d "
			       "(%zu bytes, wire version %u, expected %u)", comm->rank, peer, ch.len, version,
			       IBC_WIRE_VERSION);
	}
	match = ch.tag == tag;
	if (match) {
		dst = total == bytes ? buf : NULL;
	} else {
		char what[200];

		/* the size is the peer's word: allocate it only within the limit */
		if (fits(comm, p, total))
			m = malloc(sizeof(*m) + total);
		if (!m) {
			p->head[peer] = ch; /* left in its slot: the sender waits for credits */
			p->has_head[peer] = true;
			snprintf(what, sizeof(what), "ibcomm_recv on rank %d: waiting for tag %u from rank %d, the next "
				 "message from it has tag %u and %llu bytes", comm->rank, tag, peer, ch.tag,
				 (unsigned long long)total);
			if (fits(comm, p, total))
				return ibc_err(comm, IBCOMM_ERR_NOMEM, "%s: no memory to set it aside (it stays queued)",
					       what);
			return over_limit(comm, what, total);
		}
		dst = m->data;
		tag = ch.tag;
	}
	if (dst && first)
		memcpy(dst, (const unsigned char *)ch.data + r.off, first);
	if ((rc = ibc_release(comm->tp, &ch)) < 0 || (rc = take_rest(comm, peer, tag, dst, first, total, dl))) {
		free(m);
		return rc;
	}
	if (match)
		return total == bytes ? IBCOMM_OK : size_mismatch(comm, peer, tag, total, bytes);
	m->peer = peer;
	m->tag = tag;
	m->len = total;
	unexpected_append(comm, m);
	return P2P_ASIDE;
}

/*
 * A receive. Without `wait` (lib/nbc.c), IBC_AGAIN while no matching message has arrived
 * (others are set aside meanwhile) and a receive from itself waits for the send; with it, a
 * receive from itself needs the send first.
 */
int ibc_p2p_recv_try(struct ibcomm *comm, void *buf, size_t count, ibcomm_dtype_t dtype, int peer, uint32_t tag,
		     ibc_deadline_t dl, bool wait)
{
	static const char fn[] = "ibcomm_recv";
	struct ibc_p2p_msg **pp;
	size_t bytes;
	ibcomm_status_t st;
	int rc;

	if ((st = ibc_p2p_check(comm, fn, buf, count, dtype, peer, &bytes)))
		return st;
	for (pp = &comm->unexpected; *pp; pp = &(*pp)->next) {
		struct ibc_p2p_msg *m = *pp;

		if (m->peer != peer || m->tag != tag)
			continue;
		*pp = m->next;
		comm->p2p->held -= m->len;
		st = m->len == bytes ? IBCOMM_OK : size_mismatch(comm, peer, tag, m->len, bytes);
		if (!st && bytes)
			memcpy(buf, m->data, bytes);
		free(m);
		return st;
	}
	if (peer == comm->rank && wait)
		return ibc_err(comm, IBCOMM_ERR_INVALID, "%s on rank %d: no message with tag %u was sent to itself "
			       "(a receive from self needs the send first)", fn, comm->rank, tag);
	rc = peer == comm->rank ? IBC_AGAIN : P2P_ASIDE;
	while (rc == P2P_ASIDE)
		rc = take_message(comm, buf, bytes, peer, tag, dl, wait);
	if (rc == IBC_AGAIN && ibc_deadline_left(dl) == 0)
		rc = IBCOMM_ERR_TIMEOUT;
	if (rc == IBCOMM_ERR_TIMEOUT)
		return ibc_err(comm, IBCOMM_ERR_TIMEOUT, "%s on rank %d: timed out after %ld ms waiting for a message "
			       "with tag %u from rank %d", fn, comm->rank, comm->set.timeout_ms, tag, peer);
	return rc == IBC_AGAIN ? rc : p2p_fail(comm, rc);
}

ibcomm_status_t ibcomm_recv(ibcomm_t *comm, void *buf, size_t count, ibcomm_dtype_t dtype, int peer, uint32_t tag)
{
	if (comm && ibc_nbc_busy(comm)) /* after the pending requests (lib/nbc.c) */
		return ibc_nbc_p2p(comm, false, buf, count, dtype, peer, tag, NULL);
	return ibc_p2p_recv_try(comm, buf, count, dtype, peer, tag, comm ? ibc_call_deadline(comm) : 0, true);
}
