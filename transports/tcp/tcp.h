/*
 * Wire format of the TCP transport (internal; tests include it to craft frames).
 *
 * Every frame starts with a 16-byte little-endian header, encoded with lib/wire.h:
 *   u8 version, u8 type, u8 chan, u8 flags, u32 tag, u32 len, u32 credits
 * followed by len payload bytes. A connection carries DATA from the rank that opened it to
 * the rank that accepted it, and CREDIT frames back. The opener's first frame is a HELLO
 * whose payload is:
 *   u32 magic, u32 rank, u32 size, u32 max_chunk, u32 nslots, u8 idlen, id[idlen] [, nonce[32]]
 *
 * With a job key (IBCOMM_JOB_KEY) both ends prove it before any DATA (lib/auth.h): the HELLO
 * ends with the connector's nonce; the acceptor answers CHALLENGE (its nonce[32], its
 * proof[32]); the connector checks that proof and sends PROOF (proof[32]); DATA follows.
 * The proofs cover both nonces and "tcp" | comm id | connector rank | acceptor rank | size.
 * An acceptor that refuses a connection (wrong or missing key) sends AUTH_FAILED (text) and
 * closes it. Handshake frames have chan, flags, tag and credits 0. Without a key a HELLO
 * has no nonce and DATA follows it at once.
 *
 * The parsing of every frame is in tcp_wire.c: pure functions on byte buffers (fuzzed by
 * tests/fuzz/fuzz_tcp_frame).
 */
#ifndef IBC_TCP_H
#define IBC_TCP_H

#include <stddef.h>
#include <stdint.h>

#include "ibc.h"

#define IBC_TCP_VERSION 1
#define IBC_TCP_HDR_LEN 16
#define IBC_TCP_MAGIC 0x54434249u /* "IBCT" */
#define IBC_TCP_HELLO_MIN 21u     /* HELLO payload without the id */
#define IBC_TCP_HELLO_MAX 128u

enum ibc_tcp_frame {
	IBC_TCP_HELLO = 1,
	IBC_TCP_DATA = 2,
	IBC_TCP_CREDIT = 3,
	IBC_TCP_CHALLENGE = 4,   /* acceptor -> connector: nonce, proof */
	IBC_TCP_PROOF = 5,       /* connector -> acceptor: proof */
	IBC_TCP_AUTH_FAILED = 6, /* acceptor -> connector: text, then close */
};
#define IBC_TCP_NONCE_LEN 32u /* = IBC_AUTH_NONCE_LEN */
#define IBC_TCP_PROOF_LEN 32u /* = IBC_AUTH_MAC_LEN */
#define IBC_TCP_TEXT_MAX 120u /* AUTH_FAILED text */

#define IBC_TCP_DEFAULT_CHUNK (512u * 1024u)
#define IBC_TCP_DEFAULT_SLOTS 4u
#define IBC_TCP_DEFAULT_SPIN_US 50u /* IBCOMM_TCP_SPIN_US */
#define IBC_TCP_MAX_CHUNK (1u << 30)
#define IBC_TCP_MAX_SLOTS 1024u

/* ---- tcp_wire.c ---- */

struct ibc_tcp_hdr {
	uint8_t version, type, chan, flags;
	uint32_t tag, len, credits;
};

struct ibc_tcp_hello {
	uint32_t rank, size, max_chunk, nslots;
	const char *id; /* not NUL-terminated */
	uint8_t idlen;
	const uint8_t *nonce; /* IBC_TCP_NONCE_LEN bytes; NULL: no job key */
};

/* The payload of a handshake frame after the HELLO; pointers into the decoded buffer. */
struct ibc_tcp_auth {
	const uint8_t *nonce; /* CHALLENGE */
	const uint8_t *proof; /* CHALLENGE, PROOF */
	const char *text;     /* AUTH_FAILED */
	size_t textlen;
};

IBC_HIDDEN void ibc_tcp_hdr_decode(const uint8_t buf[IBC_TCP_HDR_LEN], struct ibc_tcp_hdr *h);
IBC_HIDDEN void ibc_tcp_hdr_encode(uint8_t buf[IBC_TCP_HDR_LEN], const struct ibc_tcp_hdr *h);

/*
 * Checks the header of a handshake frame (HELLO, CHALLENGE, PROOF, AUTH_FAILED) that must
 * be of type `type`: version, zero fields, payload length within that type's bounds.
 * Returns 0, or -1 with a static reason in *why.
 */
IBC_HIDDEN int ibc_tcp_hs_check(const struct ibc_tcp_hdr *h, uint8_t type, const char **why);

/* Decodes a HELLO payload buf[0..len). 0, or -1 with *why. */
IBC_HIDDEN int ibc_tcp_hello_decode(const void *buf, size_t len, struct ibc_tcp_hello *h, const char **why);
/* Encodes a whole HELLO frame (header and payload); returns its length, 0 when it does not fit. */
IBC_HIDDEN size_t ibc_tcp_hello_encode(const struct ibc_tcp_hello *h, void *buf, size_t cap);

/* Decodes the payload of a CHALLENGE, PROOF or AUTH_FAILED frame. 0, or -1 with *why. */
IBC_HIDDEN int ibc_tcp_auth_decode(uint8_t type, const void *buf, size_t len, struct ibc_tcp_auth *a,
				   const char **why);
/* Encodes a whole CHALLENGE, PROOF or AUTH_FAILED frame; its length, 0 when invalid or too big. */
IBC_HIDDEN size_t ibc_tcp_auth_encode(uint8_t type, const struct ibc_tcp_auth *a, void *buf, size_t cap);

#endif
