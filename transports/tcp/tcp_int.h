/*
 * The TCP transport's private definitions, shared by its files (not installed; tests do not
 * include it):
 *   tcp.c          the transport ops: put, get, release, wait, interrupt, create, destroy
 *   tcp_conn.c     connections, their list and state, the frames they receive, accept
 *   tcp_auth.c     the job-key handshake of data connections (lib/auth.h)
 *   tcp_progress.c credits, the poll() loop, writing frames, opening connections
 *   tcp_wire.c     the wire format (tcp.h)
 * See tcp.c for how the transport works.
 */
#ifndef IBC_TCP_INT_H
#define IBC_TCP_INT_H

#include <netinet/in.h>
#include <poll.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "auth.h"
#include "ibc.h"
#include "tcp.h"

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
	int extra_fd;      /* wait_fd(): also polled for POLLIN (never read); -1: none */
	bool extra_ready;  /* it was readable in the last progress() */
	struct ibc_notices notes; /* members the rendezvous reported dead */
};

/* ---- tcp_conn.c ---- */

IBC_HIDDEN const char *ibc_tcp_chan_name(int chan);
IBC_HIDDEN bool ibc_tcp_aborted(const struct tcp *t);
IBC_HIDDEN ibcomm_status_t ibc_tcp_abort_err(struct tcp *t, const char *what);
IBC_HIDDEN void ibc_tcp_conn_reset(struct tcp_conn *c, enum tcp_conn_kind kind, int peer);
IBC_HIDDEN void ibc_tcp_conn_list(struct tcp *t, struct tcp_conn *c);
IBC_HIDDEN void ibc_tcp_conn_close(struct tcp *t, struct tcp_conn *c);
IBC_HIDDEN void ibc_tcp_pending_free(struct tcp *t, struct tcp_conn *c);
IBC_HIDDEN int ibc_tcp_pending_drop(struct tcp *t, struct tcp_conn *c, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
IBC_HIDDEN void ibc_tcp_peer_mark_dead(struct tcp_peer *p, ibcomm_status_t st, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
IBC_HIDDEN ibcomm_status_t ibc_tcp_dead_err(struct tcp *t, int peer, const char *op, int chan);
IBC_HIDDEN ibcomm_status_t ibc_tcp_notices_check(struct tcp *t, bool readable);
IBC_HIDDEN ibcomm_status_t ibc_tcp_proto_err(struct tcp *t, struct tcp_conn *c, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
IBC_HIDDEN void ibc_tcp_ring_free(struct tcp_ring *r);
IBC_HIDDEN ibcomm_status_t ibc_tcp_conn_read(struct tcp *t, struct tcp_conn *c, unsigned *events);
IBC_HIDDEN void ibc_tcp_accept_all(struct tcp *t);

/* ---- tcp_auth.c ---- */

IBC_HIDDEN int ibc_tcp_hello_done(struct tcp *t, struct tcp_conn *c, unsigned *events);
IBC_HIDDEN int ibc_tcp_auth_challenge_done(struct tcp *t, struct tcp_conn *c, unsigned *events);
IBC_HIDDEN ibcomm_status_t ibc_tcp_connect_auth(struct tcp *t, int peer, int chan, ibc_deadline_t dl);

/* ---- tcp_progress.c ---- */

IBC_HIDDEN void ibc_tcp_credits_flush(struct tcp *t, struct tcp_peer *p);
IBC_HIDDEN ibcomm_status_t ibc_tcp_progress(struct tcp *t, struct tcp_conn *wout, int timeout, unsigned *events);
IBC_HIDDEN ibcomm_status_t ibc_tcp_send_frame(struct tcp *t, int peer, int chan, const uint8_t *hdr, const void *buf,
					      size_t len, ibc_deadline_t dl, const char *op);
IBC_HIDDEN ibcomm_status_t ibc_tcp_connect(struct tcp *t, int peer, int chan, ibc_deadline_t dl);

#endif
