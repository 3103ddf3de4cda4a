/*
 * The TCP transport's frames (layout in tcp.h): pure encoders and decoders on byte buffers,
 * so that every byte a peer (or a stranger) sends is parsed by code that the fuzzer reaches.
 */
#include <string.h>

#include "tcp.h"
#include "wire.h"

void ibc_tcp_hdr_decode(const uint8_t buf[IBC_TCP_HDR_LEN], struct ibc_tcp_hdr *h)
{
	ibc_rbuf_t r = ibc_rbuf(buf, IBC_TCP_HDR_LEN);

	h->version = ibc_r_u8(&r);
	h->type = ibc_r_u8(&r);
	h->chan = ibc_r_u8(&r);
	h->flags = ibc_r_u8(&r);
	h->tag = ibc_r_u32(&r);
	h->len = ibc_r_u32(&r);
	h->credits = ibc_r_u32(&r);
}

void ibc_tcp_hdr_encode(uint8_t buf[IBC_TCP_HDR_LEN], const struct ibc_tcp_hdr *h)
{
	ibc_wbuf_t w = ibc_wbuf(buf, IBC_TCP_HDR_LEN);

	ibc_w_u8(&w, h->version);
	ibc_w_u8(&w, h->type);
	ibc_w_u8(&w, h->chan);
	ibc_w_u8(&w, h->flags);
	ibc_w_u32(&w, h->tag);
	ibc_w_u32(&w, h->len);
	ibc_w_u32(&w, h->credits);
}

static int fail(const char **why, const char *text)
{
	if (why)
		*why = text;
	return -1;
}

int ibc_tcp_hs_check(const struct ibc_tcp_hdr *h, uint8_t type, const char **why)
{
	uint32_t min, max;

	if (h->version != IBC_TCP_VERSION)
		return fail(why, "not an ibcomm TCP frame (wrong wire version)");
	if (h->type != type) {
		/* a refusal may come instead of a challenge */
		if (!(type == IBC_TCP_CHALLENGE && h->type == IBC_TCP_AUTH_FAILED))
			return fail(why, "unexpected frame type during the handshake");
		type = IBC_TCP_AUTH_FAILED;
	}
	if (h->chan || h->flags || h->tag || h->credits)
		return fail(why, "handshake frame with nonzero channel, flags, tag or credits");
	switch (type) {
	case IBC_TCP_HELLO:
		min = IBC_TCP_HELLO_MIN;
		max = IBC_TCP_HELLO_MAX;
		break;
	case IBC_TCP_CHALLENGE:
		min = max = IBC_TCP_NONCE_LEN + IBC_TCP_PROOF_LEN;
		break;
	case IBC_TCP_PROOF:
		min = max = IBC_TCP_PROOF_LEN;
		break;
	case IBC_TCP_AUTH_FAILED:
		min = 0;
		max = IBC_TCP_TEXT_MAX;
		break;
	default:
		return fail(why, "not a handshake frame type");
	}
	if (h->len < min || h->len > max)
		return fail(why, "handshake frame length out of range");
	return 0;
}

int ibc_tcp_hello_decode(const void *buf, size_t len, struct ibc_tcp_hello *h, const char **why)
{
	ibc_rbuf_t r = ibc_rbuf(buf, len);
	struct ibc_tcp_hello t = { 0 };
	uint32_t magic;

	magic = ibc_r_u32(&r);
	t.rank = ibc_r_u32(&r);
	t.size = ibc_r_u32(&r);
	t.max_chunk = ibc_r_u32(&r);
	t.nslots = ibc_r_u32(&r);
	t.idlen = ibc_r_u8(&r);
	t.id = (const char *)ibc_r_bytes(&r, t.idlen);
	if (!r.ok)
		return fail(why, "malformed hello (truncated)");
	if (magic != IBC_TCP_MAGIC)
		return fail(why, "malformed hello (bad magic)");
	if (r.len - r.off == IBC_TCP_NONCE_LEN)
		t.nonce = ibc_r_bytes(&r, IBC_TCP_NONCE_LEN);
	if (!ibc_r_done(&r))
		return fail(why, "malformed hello (trailing bytes)");
	if (t.size == 0 || t.size > INT32_MAX || t.rank >= t.size)
		return fail(why, "hello with a rank or size out of range");
	*h = t;
	return 0;
}

size_t ibc_tcp_hello_encode(const struct ibc_tcp_hello *h, void *buf, size_t cap)
{
	size_t plen = IBC_TCP_HELLO_MIN + h->idlen + (h->nonce ? IBC_TCP_NONCE_LEN : 0);
	struct ibc_tcp_hdr hdr = { .version = IBC_TCP_VERSION, .type = IBC_TCP_HELLO, .len = (uint32_t)plen };
	ibc_wbuf_t w;

	if (cap < IBC_TCP_HDR_LEN || plen > IBC_TCP_HELLO_MAX || (h->idlen && !h->id))
		return 0;
	ibc_tcp_hdr_encode(buf, &hdr);
	w = ibc_wbuf((uint8_t *)buf + IBC_TCP_HDR_LEN, cap - IBC_TCP_HDR_LEN);
	ibc_w_u32(&w, IBC_TCP_MAGIC);
	ibc_w_u32(&w, h->rank);
	ibc_w_u32(&w, h->size);
	ibc_w_u32(&w, h->max_chunk);
	ibc_w_u32(&w, h->nslots);
	ibc_w_u8(&w, h->idlen);
	ibc_w_bytes(&w, h->id, h->idlen);
	if (h->nonce)
		ibc_w_bytes(&w, h->nonce, IBC_TCP_NONCE_LEN);
	return w.ok ? IBC_TCP_HDR_LEN + w.len : 0;
}

int ibc_tcp_auth_decode(uint8_t type, const void *buf, size_t len, struct ibc_tcp_auth *a, const char **why)
{
	ibc_rbuf_t r = ibc_rbuf(buf, len);
	struct ibc_tcp_auth t = { 0 };

	switch (type) {
	case IBC_TCP_CHALLENGE:
		t.nonce = ibc_r_bytes(&r, IBC_TCP_NONCE_LEN);
		t.proof = ibc_r_bytes(&r, IBC_TCP_PROOF_LEN);
		break;
	case IBC_TCP_PROOF:
		t.proof = ibc_r_bytes(&r, IBC_TCP_PROOF_LEN);
		break;
	case IBC_TCP_AUTH_FAILED:
		if (len > IBC_TCP_TEXT_MAX)
			return fail(why, "refusal text too long");
		t.text = (const char *)ibc_r_bytes(&r, len);
		t.textlen = len;
		break;
	default:
		return fail(why, "not an authentication frame");
	}
	if (!ibc_r_done(&r))
		return fail(why, r.ok ? "authentication frame too long" : "authentication frame truncated");
	*a = t;
	return 0;
}

size_t ibc_tcp_auth_encode(uint8_t type, const struct ibc_tcp_auth *a, void *buf, size_t cap)
{
	struct ibc_tcp_hdr hdr = { .version = IBC_TCP_VERSION, .type = type };
	ibc_wbuf_t w;

	if (cap < IBC_TCP_HDR_LEN)
		return 0;
	w = ibc_wbuf((uint8_t *)buf + IBC_TCP_HDR_LEN, cap - IBC_TCP_HDR_LEN);
	switch (type) {
	case IBC_TCP_CHALLENGE:
		if (!a->nonce || !a->proof)
			return 0;
		ibc_w_bytes(&w, a->nonce, IBC_TCP_NONCE_LEN);
		ibc_w_bytes(&w, a->proof, IBC_TCP_PROOF_LEN);
		break;
	case IBC_TCP_PROOF:
		if (!a->proof)
			return 0;
		ibc_w_bytes(&w, a->proof, IBC_TCP_PROOF_LEN);
		break;
	case IBC_TCP_AUTH_FAILED:
		if (a->textlen > IBC_TCP_TEXT_MAX || (a->textlen && !a->text))
			return 0;
		ibc_w_bytes(&w, a->text, a->textlen);
		break;
	default:
		return 0;
	}
	if (!w.ok)
		return 0;
	hdr.len = (uint32_t)w.len;
	ibc_tcp_hdr_encode(buf, &hdr);
	return IBC_TCP_HDR_LEN + w.len;
}
