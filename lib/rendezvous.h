/*
 * Internal to the rendezvous (the rank-0 TCP implementation of lib/bootstrap.h): the messages
 * exchanged between ranks and rank 0's server, the server and the client. Exposed for unit
 * tests and fuzz targets; the rest of the library uses the bootstrap interface only.
 *
 * Files: rdv_codec.c (messages), rdv_store.c (the server's key-value table), rdv_server.c and
 * rdv_srv_auth.c (rank 0's server), rdv_client.c (every rank), boot_rdv.c (the ops table).
 *
 * Every message is one frame: a 16-byte header then `len` bytes of body, all little-endian:
 *
 *	u32 magic ("IBCR")  u8 version  u8 type  u16 flags (0)  u32 request id  u32 body length
 *
 * Bodies by type (key: u16 length + bytes, 1..IBC_RDV_MAX_KEY, no NUL; value: u32 length +
 * bytes, 0..IBC_RDV_MAX_VAL; text: u16 length + bytes, 0..IBC_RDV_MAX_TEXT):
 *
 *	JOIN    client -> server   u32 rank, u32 size
 *	JOINED  server -> client   u32 size            (sent once all `size` ranks have joined)
 *	PUT     client -> server   key, value
 *	PUT_OK  server -> client   (empty)
 *	GET     client -> server   key                 (the server parks it until the key exists)
 *	VALUE   server -> client   value
 *	ERROR   server -> client   text                (duplicate rank, size mismatch, ...)
 *	LEAVE   client -> server   (empty)             (a clean goodbye: no reply)
 *	DEAD    server -> client   u32 rank            (notice: that rank's connection dropped
 *	                                                without a LEAVE: it died)
 *	BYE     server -> client   (empty)             (notice: the server stops on purpose, or
 *	                                                rank 0 has left and it may stop at any
 *	                                                time: its going is not a death of rank 0)
 *	DROP    client -> server   key, u32 count      (version 2; no reply: this rank is done with
 *	                                                every key starting with `key`; once `count`
 *	                                                ranks have sent the same DROP, those keys are
 *	                                                deleted; parked GETs keep their entries)
 *
 * With a job key (IBCOMM_JOB_KEY), a client authenticates before its JOIN (lib/auth.h):
 *
 *	AUTH_HELLO     client -> server   u32 rank, u32 size, nonce[32]
 *	AUTH_CHALLENGE server -> client   nonce[32], proof[32]   (the server's proof)
 *	AUTH_PROOF     client -> server   proof[32]              (the client's, once it checked the server's)
 *	AUTH_OK        server -> client   (empty)
 *	AUTH_FAILED    either way         text                   (the key does not match; then the
 *	                                                          connection closes)
 *
 * The proofs cover both nonces and "rdv" | u32 rank | u32 size. Without a key there is no
 * AUTH_* message; a server with a key answers a JOIN that did not authenticate with
 * AUTH_FAILED, and so does a server without a key to an AUTH_HELLO.
 *
 * A reply carries the request id of its request; notices (DEAD, BYE) carry request id 0.
 */
#ifndef IBC_RENDEZVOUS_H
#define IBC_RENDEZVOUS_H

#include <stddef.h>
#include <stdint.h>

#include "ibc.h"
#include "sock.h"

#define IBC_RDV_MAGIC 0x52434249u /* "IBCR" in little-endian byte order */
#define IBC_RDV_VERSION 2 /* 2: DROP */
#define IBC_RDV_HDR_LEN 16u
#define IBC_RDV_MAX_KEY 256u
#define IBC_RDV_MAX_VAL 65536u
#define IBC_RDV_MAX_TEXT 1024u
/* Largest body of any message (PUT). */
#define IBC_RDV_MAX_BODY (2u + IBC_RDV_MAX_KEY + 4u + IBC_RDV_MAX_VAL)
#define IBC_RDV_MAX_FRAME (IBC_RDV_HDR_LEN + IBC_RDV_MAX_BODY)

enum ibc_rdv_type {
	IBC_RDV_JOIN = 1,
	IBC_RDV_JOINED = 2,
	IBC_RDV_PUT = 3,
	IBC_RDV_PUT_OK = 4,
	IBC_RDV_GET = 5,
	IBC_RDV_VALUE = 6,
	IBC_RDV_ERROR = 7,
	/* failure notification (numbered apart from the request/reply types) */
	IBC_RDV_LEAVE = 16,
	IBC_RDV_DEAD = 17,
	IBC_RDV_BYE = 18,
	IBC_RDV_DROP = 19,
	/* job-key authentication (numbered apart too) */
	IBC_RDV_AUTH_HELLO = 32,
	IBC_RDV_AUTH_CHALLENGE = 33,
	IBC_RDV_AUTH_PROOF = 34,
	IBC_RDV_AUTH_OK = 35,
	IBC_RDV_AUTH_FAILED = 36,
};

#define IBC_RDV_NONCE_LEN 32u /* = IBC_AUTH_NONCE_LEN */
#define IBC_RDV_PROOF_LEN 32u /* = IBC_AUTH_MAC_LEN */

/* A decoded message. Pointers point into the decoded buffer (not NUL-terminated). */
struct ibc_rdv_msg {
	uint8_t type;       /* enum ibc_rdv_type */
	uint32_t req;       /* request id */
	uint32_t rank;      /* JOIN, DEAD, AUTH_HELLO */
	uint32_t size;      /* JOIN, JOINED, AUTH_HELLO; DROP: member count */
	const uint8_t *nonce; /* AUTH_HELLO, AUTH_CHALLENGE: IBC_RDV_NONCE_LEN bytes */
	const uint8_t *proof; /* AUTH_CHALLENGE, AUTH_PROOF: IBC_RDV_PROOF_LEN bytes */
	const char *key;    /* PUT, GET, DROP */
	size_t keylen;
	const void *val;    /* PUT, VALUE */
	size_t vallen;
	const char *text;   /* ERROR, AUTH_FAILED */
	size_t textlen;
};

/*
 * Checks the header at buf[0..avail) and gives the length of the whole frame. Returns
 * IBCOMM_OK, IBC_AGAIN when fewer than IBC_RDV_HDR_LEN bytes are there, or
 * IBCOMM_ERR_INVALID (bad magic, version, type, flags or body length) with *why set.
 */
IBC_HIDDEN int ibc_rdv_frame_len(const void *buf, size_t avail, size_t *frame_len, const char **why);

/*
 * Decodes exactly one frame buf[0..len): header and body, every field bounds-checked.
 * Returns IBCOMM_OK or IBCOMM_ERR_INVALID (truncated, trailing bytes, out-of-range fields,
 * unknown type or version) with *why (may be NULL) set to a static reason.
 */
IBC_HIDDEN ibcomm_status_t ibc_rdv_decode(const void *buf, size_t len, struct ibc_rdv_msg *m, const char **why);

/*
 * Encodes m into buf[0..cap). Returns the frame length, or 0 when m is invalid (a field out
 * of range) or does not fit.
 */
IBC_HIDDEN size_t ibc_rdv_encode(const struct ibc_rdv_msg *m, void *buf, size_t cap);

/* What the job-key proofs of a rendezvous connection are bound to: "rdv" | rank | size. */
IBC_HIDDEN size_t ibc_rdv_auth_ctx(uint32_t rank, uint32_t size, uint8_t ctx[16]);

/* ---- the client (rdv_client.c): every rank ---- */
struct ibc_rdv;

/* Rank 0 starts the server; every rank connects (retrying until the deadline) and joins. */
IBC_HIDDEN ibcomm_status_t ibc_rdv_open(const ibc_settings_t *s, ibc_deadline_t dl, struct ibc_rdv **rdv,
					char *err, size_t errlen);
IBC_HIDDEN void ibc_rdv_ref(struct ibc_rdv *rdv);
IBC_HIDDEN void ibc_rdv_unref(struct ibc_rdv *rdv);
/*
 * Drops a reference like ibc_rdv_unref(), but when it is the last one (the hold of a failed
 * or aborted communicator, nothing else) rank 0's server stops at once instead of serving on,
 * and the rank goes without a goodbye, so the others hear it as dead. A hold that is not the
 * last changes nothing: the rank's other communicators still end with a goodbye.
 */
IBC_HIDDEN void ibc_rdv_abandon(struct ibc_rdv *rdv);
IBC_HIDDEN ibcomm_status_t ibc_rdv_put(struct ibc_rdv *rdv, const char *key, const void *val, size_t len,
				       char *err, size_t errlen);
/* Waits until key exists; copies at most cap bytes into val, sets *len to its length. */
IBC_HIDDEN ibcomm_status_t ibc_rdv_get(struct ibc_rdv *rdv, const char *key, void *val, size_t cap, size_t *len,
				       ibc_deadline_t dl, char *err, size_t errlen);
/*
 * ibc_rdv_get() that also returns IBCOMM_ERR_ABORTED once *cancel is non-zero (woken by
 * ibc_rdv_interrupt()) and IBCOMM_ERR_PEER when rank 0 (the server) dies while it waits.
 */
IBC_HIDDEN ibcomm_status_t ibc_rdv_get_cancel(struct ibc_rdv *rdv, const char *key, void *val, size_t cap,
					      size_t *len, ibc_deadline_t dl, const atomic_int *cancel, char *err,
					      size_t errlen);
/* DROP (no reply, never blocks for long): this rank is done with the keys under prefix. */
IBC_HIDDEN void ibc_rdv_drop(struct ibc_rdv *rdv, const char *prefix, int nmembers);
/* Wakes the threads blocked in the rendezvous (they check their cancel flags). Async-signal-safe. */
IBC_HIDDEN void ibc_rdv_interrupt(struct ibc_rdv *rdv);
/*
 * Failure notices. The rendezvous server tells every rank when another rank's connection to
 * it drops without a goodbye (the rank died); when rank 0's process dies or exits, the others
 * lose the connection (after a BYE when it exits). Ranks are world ranks.
 * ibc_rdv_fd(): the connection to watch with poll() (POLLIN: a notice may be there), or -1.
 * ibc_rdv_poll(): processes what arrived, never blocking (reads only when `readable`);
 * returns a counter that grows whenever a rank is found dead (cheap: compare it).
 * ibc_rdv_dead(): whether world rank `rank` is known dead; if so, why names it.
 */
IBC_HIDDEN int ibc_rdv_fd(struct ibc_rdv *rdv);
IBC_HIDDEN unsigned ibc_rdv_poll(struct ibc_rdv *rdv, bool readable);
IBC_HIDDEN bool ibc_rdv_dead(struct ibc_rdv *rdv, int rank, char *why, size_t whylen);
/* The bootstrap head of rdv (boot_rdv.c), and back. */
IBC_HIDDEN ibc_boot_t *ibc_rdv_boot(struct ibc_rdv *rdv);
IBC_HIDDEN struct ibc_rdv *ibc_rdv_of(ibc_boot_t *b);
IBC_HIDDEN extern const struct ibc_boot_ops ibc_boot_rdv_ops;

/* ---- the server (rdv_server.c): rank 0 ---- */
struct rdv_server;

/* Serves s->nranks ranks on s->listen_fd when >= 0 (adopted), else at host:port. */
IBC_HIDDEN ibcomm_status_t ibc_rdv_srv_start(const ibc_settings_t *s, const char *host, const char *port,
					     struct rdv_server **out, char *err, size_t errlen);
/*
 * Rank 0 is done with the server. linger: it serves on in the background, without anybody
 * waiting for it, until the other ranks have gone (or the timeout passes, or the process
 * exits: then it says BYE first); else it says BYE and stops at once. Never blocks for long.
 */
IBC_HIDDEN void ibc_rdv_srv_stop(struct rdv_server *srv, bool linger);
/* For rank 0's join timeout: the ranks that never joined, those that went away. */
IBC_HIDDEN void ibc_rdv_srv_missing(struct rdv_server *srv, char *buf, size_t len);
/* Keys stored and namespaces waiting for their DROPs (tests: the table stays bounded). */
IBC_HIDDEN size_t ibc_rdv_srv_keys(struct rdv_server *srv);
/* rank 0's server, or NULL elsewhere. */
IBC_HIDDEN struct rdv_server *ibc_rdv_server(struct ibc_rdv *rdv);

#endif
