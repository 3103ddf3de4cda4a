/*
 * Job-key authentication, shared by the rendezvous and the TCP transport.
 *
 * Both ends of a connection prove that they hold the job key (IBCOMM_JOB_KEY) without
 * sending it: each side contributes a fresh random nonce and answers with
 *
 *	HMAC-SHA256(key, "ibcomm-auth-1" | u8 role | connector nonce | acceptor nonce | u16 ctxlen | ctx)
 *
 * where role says who speaks (acceptor or connector, so a proof cannot be reflected back)
 * and ctx binds the proof to what the connection is for (rendezvous or TCP data, the
 * communicator, the ranks). The acceptor proves first; the connector checks that proof
 * before giving its own. Proofs are compared in constant time.
 *
 * An empty key means no authentication (the caller decides; these functions need a key).
 */
#ifndef IBC_AUTH_H
#define IBC_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ibc.h"

#define IBC_AUTH_NONCE_LEN 32u
#define IBC_AUTH_MAC_LEN 32u
#define IBC_AUTH_CTX_MAX 256u
/* A connection that has not authenticated (or said hello) by then is dropped. */
#define IBC_AUTH_HANDSHAKE_MS 5000

enum ibc_auth_role { IBC_AUTH_ACCEPTOR = 1, IBC_AUTH_CONNECTOR = 2 };

/* Fills nonce with fresh random bytes (getrandom, else OpenSSL's RAND_bytes). 0 or -1. */
IBC_HIDDEN int ibc_auth_nonce(uint8_t nonce[IBC_AUTH_NONCE_LEN]);

/* Plain HMAC-SHA256 (OpenSSL). 0 or -1. */
IBC_HIDDEN int ibc_auth_hmac_sha256(const void *key, size_t keylen, const void *data, size_t len,
				    uint8_t mac[IBC_AUTH_MAC_LEN]);

/*
 * The proof of `role` for the connection whose nonces are nc (connector) and na (acceptor)
 * and whose context is ctx[0..ctxlen), ctxlen <= IBC_AUTH_CTX_MAX. 0 or -1.
 */
IBC_HIDDEN int ibc_auth_proof(const char *key, enum ibc_auth_role role, const uint8_t nc[IBC_AUTH_NONCE_LEN],
			      const uint8_t na[IBC_AUTH_NONCE_LEN], const void *ctx, size_t ctxlen,
			      uint8_t mac[IBC_AUTH_MAC_LEN]);

/* True when mac is the proof of role (constant-time comparison). */
IBC_HIDDEN bool ibc_auth_check(const char *key, enum ibc_auth_role role, const uint8_t nc[IBC_AUTH_NONCE_LEN],
			       const uint8_t na[IBC_AUTH_NONCE_LEN], const void *ctx, size_t ctxlen,
			       const uint8_t mac[IBC_AUTH_MAC_LEN]);

#endif
