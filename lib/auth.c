/* Job-key challenge-response (see auth.h): nonces and HMAC-SHA256 proofs from OpenSSL. */
#define _GNU_SOURCE
#include <errno.h>
#include <string.h>
#include <sys/random.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "auth.h"
#include "wire.h"

#define AUTH_LABEL "ibcomm-auth-1"

int ibc_auth_nonce(uint8_t nonce[IBC_AUTH_NONCE_LEN])
{
	size_t got = 0;

	while (got < IBC_AUTH_NONCE_LEN) {
		ssize_t n = getrandom(nonce + got, IBC_AUTH_NONCE_LEN - got, 0);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	if (got == IBC_AUTH_NONCE_LEN)
		return 0;
	return RAND_bytes(nonce, (int)IBC_AUTH_NONCE_LEN) == 1 ? 0 : -1;
}

int ibc_auth_hmac_sha256(const void *key, size_t keylen, const void *data, size_t len, uint8_t mac[IBC_AUTH_MAC_LEN])
{
	unsigned int maclen = 0;

	if (keylen > INT32_MAX)
		return -1;
	if (!HMAC(EVP_sha256(), key, (int)keylen, data, len, mac, &maclen) || maclen != IBC_AUTH_MAC_LEN)
		return -1;
	return 0;
}

int ibc_auth_proof(const char *key, enum ibc_auth_role role, const uint8_t nc[IBC_AUTH_NONCE_LEN],
		   const uint8_t na[IBC_AUTH_NONCE_LEN], const void *ctx, size_t ctxlen, uint8_t mac[IBC_AUTH_MAC_LEN])
{
	uint8_t msg[sizeof(AUTH_LABEL) + 1 + 2 * IBC_AUTH_NONCE_LEN + 2 + IBC_AUTH_CTX_MAX];
	ibc_wbuf_t w = ibc_wbuf(msg, sizeof(msg));
	int rc;

	if (!key || !key[0] || ctxlen > IBC_AUTH_CTX_MAX || (ctxlen && !ctx))
		return -1;
	ibc_w_bytes(&w, AUTH_LABEL, sizeof(AUTH_LABEL) - 1);
	ibc_w_u8(&w, (uint8_t)role);
	ibc_w_bytes(&w, nc, IBC_AUTH_NONCE_LEN);
	ibc_w_bytes(&w, na, IBC_AUTH_NONCE_LEN);
	ibc_w_u16(&w, (uint16_t)ctxlen);
	ibc_w_bytes(&w, ctx, ctxlen);
	if (!w.ok)
		return -1;
	rc = ibc_auth_hmac_sha256(key, strlen(key), msg, w.len, mac);
	OPENSSL_cleanse(msg, sizeof(msg));
	return rc;
}

bool ibc_auth_check(const char *key, enum ibc_auth_role role, const uint8_t nc[IBC_AUTH_NONCE_LEN],
		    const uint8_t na[IBC_AUTH_NONCE_LEN], const void *ctx, size_t ctxlen,
		    const uint8_t mac[IBC_AUTH_MAC_LEN])
{
	uint8_t want[IBC_AUTH_MAC_LEN];
	bool ok;

	if (ibc_auth_proof(key, role, nc, na, ctx, ctxlen, want))
		return false;
	ok = CRYPTO_memcmp(want, mac, IBC_AUTH_MAC_LEN) == 0;
	OPENSSL_cleanse(want, sizeof(want));
	return ok;
}
