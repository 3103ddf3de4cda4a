/*
 * Internal to the rendezvous: the messages exchanged between ranks and rank 0's server, and
 * the parsing of "host:port" addresses. Exposed for unit tests and fuzz targets; the rest of
 * the library uses the ibc_rdv_* calls of ibc.h.
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
 *	BYE     server -> client   (empty)             (notice: the server stops on purpose)
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

#define IBC_RDV_MAGIC 0x52434249u /* "IBCR" in little-endian byte order */
#define IBC_RDV_VERSION 1
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
	uint32_t size;      /* JOIN, JOINED, AUTH_HELLO */
	const uint8_t *nonce; /* AUTH_HELLO, AUTH_CHALLENGE: IBC_RDV_NONCE_LEN bytes */
	const uint8_t *proof; /* AUTH_CHALLENGE, AUTH_PROOF: IBC_RDV_PROOF_LEN bytes */
	const char *key;    /* PUT, GET */
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

/*
 * Drops a reference like ibc_rdv_unref(), but when it is rank 0's last one the server stops
 * at once instead of serving until the other ranks are gone (for a failed or aborted job),
 * and the last hold of any rank goes without a goodbye, so the others hear it as dead.
 */
IBC_HIDDEN void ibc_rdv_abandon(struct ibc_rdv *rdv);

/*
 * Splits "host:port", "ipv4:port" or "[ipv6]:port" (config.c). host gets the host without
 * brackets, port the decimal port (1..65535). Returns 0, or -1 with a reason in why.
 */
IBC_HIDDEN int ibc_root_parse(const char *root, char *host, size_t hostlen, char *port, size_t portlen,
			      const char **why);

#endif
