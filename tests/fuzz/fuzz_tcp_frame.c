/*
 * libFuzzer target: the TCP transport's frame parsing (transports/tcp/tcp_wire.c), as a
 * receiver meets it: a 16-byte header checked for each handshake frame type, then its
 * payload decoded (HELLO, CHALLENGE, PROOF, AUTH_FAILED); and every decoder on the raw
 * input. Whatever is accepted lies inside the input and encodes back to the same bytes.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tcp.h"

static void inside(const void *p, size_t n, const uint8_t *data, size_t size)
{
	if (p && ((const uint8_t *)p < data || (const uint8_t *)p + n > data + size))
		abort();
}

static void payload(uint8_t type, const uint8_t *data, size_t size)
{
	uint8_t out[IBC_TCP_HDR_LEN + IBC_TCP_HELLO_MAX + IBC_TCP_TEXT_MAX];
	const char *why = NULL;
	size_t n;

	if (type == IBC_TCP_HELLO) {
		struct ibc_tcp_hello h;

		if (ibc_tcp_hello_decode(data, size, &h, &why)) {
			if (!why)
				abort();
			return;
		}
		inside(h.id, h.idlen, data, size);
		inside(h.nonce, IBC_TCP_NONCE_LEN, data, size);
		if (h.rank >= h.size)
			abort();
		n = ibc_tcp_hello_encode(&h, out, sizeof(out));
		/* encodable when within the frame limit: then the same bytes */
		if (size <= IBC_TCP_HELLO_MAX &&
		    (n != IBC_TCP_HDR_LEN + size || memcmp(out + IBC_TCP_HDR_LEN, data, size)))
			abort();
	} else {
		struct ibc_tcp_auth a;

		if (ibc_tcp_auth_decode(type, data, size, &a, &why)) {
			if (!why)
				abort();
			return;
		}
		inside(a.nonce, IBC_TCP_NONCE_LEN, data, size);
		inside(a.proof, IBC_TCP_PROOF_LEN, data, size);
		inside(a.text, a.textlen, data, size);
		n = ibc_tcp_auth_encode(type, &a, out, sizeof(out));
		if (n != IBC_TCP_HDR_LEN + size || memcmp(out + IBC_TCP_HDR_LEN, data, size))
			abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint8_t types[] = { IBC_TCP_HELLO, IBC_TCP_CHALLENGE, IBC_TCP_PROOF, IBC_TCP_AUTH_FAILED };

	/* every decoder on the raw bytes */
	for (size_t i = 0; i < sizeof(types); i++)
		payload(types[i], data, size);

	/* a header, then what follows it as its payload */
	if (size >= IBC_TCP_HDR_LEN) {
		uint8_t back[IBC_TCP_HDR_LEN];
		struct ibc_tcp_hdr h;

		ibc_tcp_hdr_decode(data, &h);
		ibc_tcp_hdr_encode(back, &h);
		if (memcmp(back, data, IBC_TCP_HDR_LEN))
			abort();
		for (size_t i = 0; i < sizeof(types); i++) {
			const char *why = NULL;

			if (ibc_tcp_hs_check(&h, types[i], &why)) {
				if (!why)
					abort();
				continue;
			}
			if (h.len > IBC_TCP_HELLO_MAX)
				abort(); /* the payload buffer of a handshake is that big */
			if (size - IBC_TCP_HDR_LEN >= h.len)
				payload(h.type, data + IBC_TCP_HDR_LEN, h.len);
		}
	}
	return 0;
}
