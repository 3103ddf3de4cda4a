/*
 * libFuzzer target: the rendezvous message decoder (lib/rendezvous.h). Any input is either
 * rejected with a reason or decoded into fields that lie inside it; a decoded message
 * encodes back to exactly the same bytes. Built by tests/fuzz/run-fuzz.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "rendezvous.h"

static void inside(const void *p, size_t n, const uint8_t *data, size_t size)
{
	if (p && ((const uint8_t *)p < data || (const uint8_t *)p + n > data + size))
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static uint8_t out[IBC_RDV_MAX_FRAME];
	struct ibc_rdv_msg m;
	const char *why = NULL;
	size_t flen = 0, n;
	int rc;

	rc = ibc_rdv_frame_len(data, size, &flen, &why);
	if (rc == IBCOMM_OK && (flen < IBC_RDV_HDR_LEN || flen > IBC_RDV_MAX_FRAME))
		abort();
	if (rc != IBCOMM_OK && rc != IBC_AGAIN && !why)
		abort();

	why = NULL;
	if (ibc_rdv_decode(data, size, &m, &why) != IBCOMM_OK) {
		if (!why)
			abort();
		return 0;
	}
	if (rc != IBCOMM_OK || flen != size)
		abort(); /* decode accepted what the framing rejects */
	inside(m.key, m.keylen, data, size);
	inside(m.val, m.vallen, data, size);
	inside(m.text, m.textlen, data, size);
	inside(m.nonce, IBC_RDV_NONCE_LEN, data, size);
	inside(m.proof, IBC_RDV_PROOF_LEN, data, size);
	n = ibc_rdv_encode(&m, out, sizeof(out));
	if (n != size || memcmp(out, data, size))
		abort(); /* decode and encode disagree */
	return 0;
}
