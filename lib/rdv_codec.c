/*
 * The rendezvous messages (rendezvous.h): framing, decoding (every field bounds-checked) and
 * encoding. Shared by the server, the client and the fuzz target.
 */
#include <string.h>

#include "auth.h"
#include "ibc.h"
#include "rendezvous.h"
#include "wire.h"

_Static_assert(IBC_RDV_NONCE_LEN == IBC_AUTH_NONCE_LEN && IBC_RDV_PROOF_LEN == IBC_AUTH_MAC_LEN,
	       "rendezvous auth fields follow lib/auth.h");

static int set_why(const char **why, const char *text)
{
	if (why)
		*why = text;
	return IBCOMM_ERR_INVALID;
}

int ibc_rdv_frame_len(const void *buf, size_t avail, size_t *frame_len, const char **why)
{
	ibc_rbuf_t r;
	uint32_t magic, len;
	uint8_t version, type;
	uint16_t flags;

	if (avail < IBC_RDV_HDR_LEN)
		return IBC_AGAIN;
	r = ibc_rbuf(buf, IBC_RDV_HDR_LEN);
	magic = ibc_r_u32(&r);
	version = ibc_r_u8(&r);
	type = ibc_r_u8(&r);
	flags = ibc_r_u16(&r);
	(void)ibc_r_u32(&r); /* request id */
	len = ibc_r_u32(&r);
	if (magic != IBC_RDV_MAGIC)
		return set_why(why, "bad magic (not an ibcomm rendezvous message)");
	if (version != IBC_RDV_VERSION)
		return set_why(why, "unsupported rendezvous protocol version (mixed ibcomm versions?)");
	if ((type < IBC_RDV_JOIN || type > IBC_RDV_ERROR) && (type < IBC_RDV_LEAVE || type > IBC_RDV_DROP) &&
	    (type < IBC_RDV_AUTH_HELLO || type > IBC_RDV_AUTH_FAILED))
		return set_why(why, "unknown message type");
	if (flags)
		return set_why(why, "unknown flags");
	if (len > IBC_RDV_MAX_BODY)
		return set_why(why, "body longer than the largest message");
	*frame_len = IBC_RDV_HDR_LEN + len;
	return IBCOMM_OK;
}

static bool read_key(ibc_rbuf_t *r, struct ibc_rdv_msg *m, const char **why)
{
	uint16_t n = ibc_r_u16(r);
	const uint8_t *p;

	if (!r->ok) {
		set_why(why, "truncated key");
		return false;
	}
	if (n == 0 || n > IBC_RDV_MAX_KEY) {
		set_why(why, "key length out of range (1..256)");
		return false;
	}
	p = ibc_r_bytes(r, n);
	if (!p) {
		set_why(why, "truncated key");
		return false;
	}
	if (memchr(p, '\0', n)) {
		set_why(why, "key holds a NUL byte");
		return false;
	}
	m->key = (const char *)p;
	m->keylen = n;
	return true;
}

static bool read_val(ibc_rbuf_t *r, struct ibc_rdv_msg *m, const char **why)
{
	uint32_t n = ibc_r_u32(r);
	const uint8_t *p;

	if (!r->ok) {
		set_why(why, "truncated value");
		return false;
	}
	if (n > IBC_RDV_MAX_VAL) {
		set_why(why, "value longer than 64 KiB");
		return false;
	}
	p = ibc_r_bytes(r, n);
	if (!p) {
		set_why(why, "truncated value");
		return false;
	}
	m->val = p;
	m->vallen = n;
	return true;
}

ibcomm_status_t ibc_rdv_decode(const void *buf, size_t len, struct ibc_rdv_msg *m, const char **why)
{
	struct ibc_rdv_msg t = { 0 };
	size_t flen;
	ibc_rbuf_t r;
	int rc;

	rc = ibc_rdv_frame_len(buf, len, &flen, why);
	if (rc == IBC_AGAIN)
		return set_why(why, "truncated header");
	if (rc)
		return IBCOMM_ERR_INVALID;
	if (len < flen)
		return set_why(why, "truncated body");
	if (len > flen)
		return set_why(why, "bytes after the end of the message");

	r = ibc_rbuf(buf, len);
	(void)ibc_r_u32(&r);
	(void)ibc_r_u8(&r);
	t.type = ibc_r_u8(&r);
	(void)ibc_r_u16(&r);
	t.req = ibc_r_u32(&r);
	(void)ibc_r_u32(&r);

	switch (t.type) {
	case IBC_RDV_JOIN:
		t.rank = ibc_r_u32(&r);
		t.size = ibc_r_u32(&r);
		if (r.ok && (t.size == 0 || t.size > INT32_MAX || t.rank >= t.size))
			return set_why(why, "JOIN with a rank or size out of range");
		break;
	case IBC_RDV_JOINED:
		t.size = ibc_r_u32(&r);
		if (r.ok && (t.size == 0 || t.size > INT32_MAX))
			return set_why(why, "JOINED with a size out of range");
		break;
	case IBC_RDV_PUT:
		if (!read_key(&r, &t, why) || !read_val(&r, &t, why))
			return IBCOMM_ERR_INVALID;
		break;
	case IBC_RDV_GET:
		if (!read_key(&r, &t, why))
			return IBCOMM_ERR_INVALID;
		break;
	case IBC_RDV_DROP:
		if (!read_key(&r, &t, why))
			return IBCOMM_ERR_INVALID;
		t.size = ibc_r_u32(&r);
		if (r.ok && (t.size == 0 || t.size > INT32_MAX))
			return set_why(why, "DROP with a member count out of range");
		break;
	case IBC_RDV_VALUE:
		if (!read_val(&r, &t, why))
			return IBCOMM_ERR_INVALID;
		break;
	case IBC_RDV_AUTH_HELLO:
		t.rank = ibc_r_u32(&r);
		t.size = ibc_r_u32(&r);
		t.nonce = ibc_r_bytes(&r, IBC_RDV_NONCE_LEN);
		if (r.ok && (t.size == 0 || t.size > INT32_MAX || t.rank >= t.size))
			return set_why(why, "AUTH_HELLO with a rank or size out of range");
		break;
	case IBC_RDV_AUTH_CHALLENGE:
		t.nonce = ibc_r_bytes(&r, IBC_RDV_NONCE_LEN);
		t.proof = ibc_r_bytes(&r, IBC_RDV_PROOF_LEN);
		break;
	case IBC_RDV_AUTH_PROOF:
		t.proof = ibc_r_bytes(&r, IBC_RDV_PROOF_LEN);
		break;
	case IBC_RDV_ERROR:
	case IBC_RDV_AUTH_FAILED: {
		uint16_t n = ibc_r_u16(&r);
		const uint8_t *p;

		if (r.ok && n > IBC_RDV_MAX_TEXT)
			return set_why(why, "error text too long");
		p = ibc_r_bytes(&r, n);
		if (!p)
			return set_why(why, "truncated error text");
		t.text = (const char *)p;
		t.textlen = n;
		break;
	}
	case IBC_RDV_DEAD:
		t.rank = ibc_r_u32(&r);
		if (r.ok && t.rank > INT32_MAX)
			return set_why(why, "DEAD with a rank out of range");
		break;
	case IBC_RDV_PUT_OK:
	case IBC_RDV_LEAVE:
	case IBC_RDV_BYE:
	case IBC_RDV_AUTH_OK:
		break;
	}
	if (!r.ok)
		return set_why(why, "truncated body");
	if (!ibc_r_done(&r))
		return set_why(why, "bytes after the end of the body");
	*m = t;
	return IBCOMM_OK;
}

static bool write_key(ibc_wbuf_t *w, const struct ibc_rdv_msg *m)
{
	if (!m->key || m->keylen == 0 || m->keylen > IBC_RDV_MAX_KEY || memchr(m->key, '\0', m->keylen))
		return false;
	ibc_w_u16(w, (uint16_t)m->keylen);
	ibc_w_bytes(w, m->key, m->keylen);
	return true;
}

static bool write_val(ibc_wbuf_t *w, const struct ibc_rdv_msg *m)
{
	if (m->vallen > IBC_RDV_MAX_VAL || (m->vallen && !m->val))
		return false;
	ibc_w_u32(w, (uint32_t)m->vallen);
	ibc_w_bytes(w, m->val, m->vallen);
	return true;
}

size_t ibc_rdv_encode(const struct ibc_rdv_msg *m, void *buf, size_t cap)
{
	ibc_wbuf_t w = ibc_wbuf(buf, cap), h;
	size_t body;

	ibc_w_u32(&w, IBC_RDV_MAGIC);
	ibc_w_u8(&w, IBC_RDV_VERSION);
	ibc_w_u8(&w, m->type);
	ibc_w_u16(&w, 0);
	ibc_w_u32(&w, m->req);
	ibc_w_u32(&w, 0); /* body length, patched below */

	switch (m->type) {
	case IBC_RDV_JOIN:
		if (m->size == 0 || m->size > INT32_MAX || m->rank >= m->size)
			return 0;
		ibc_w_u32(&w, m->rank);
		ibc_w_u32(&w, m->size);
		break;
	case IBC_RDV_JOINED:
		if (m->size == 0 || m->size > INT32_MAX)
			return 0;
		ibc_w_u32(&w, m->size);
		break;
	case IBC_RDV_PUT:
		if (!write_key(&w, m) || !write_val(&w, m))
			return 0;
		break;
	case IBC_RDV_GET:
		if (!write_key(&w, m))
			return 0;
		break;
	case IBC_RDV_DROP:
		if (!write_key(&w, m) || m->size == 0 || m->size > INT32_MAX)
			return 0;
		ibc_w_u32(&w, m->size);
		break;
	case IBC_RDV_VALUE:
		if (!write_val(&w, m))
			return 0;
		break;
	case IBC_RDV_AUTH_HELLO:
		if (m->size == 0 || m->size > INT32_MAX || m->rank >= m->size || !m->nonce)
			return 0;
		ibc_w_u32(&w, m->rank);
		ibc_w_u32(&w, m->size);
		ibc_w_bytes(&w, m->nonce, IBC_RDV_NONCE_LEN);
		break;
	case IBC_RDV_AUTH_CHALLENGE:
		if (!m->nonce || !m->proof)
			return 0;
		ibc_w_bytes(&w, m->nonce, IBC_RDV_NONCE_LEN);
		ibc_w_bytes(&w, m->proof, IBC_RDV_PROOF_LEN);
		break;
	case IBC_RDV_AUTH_PROOF:
		if (!m->proof)
			return 0;
		ibc_w_bytes(&w, m->proof, IBC_RDV_PROOF_LEN);
		break;
	case IBC_RDV_ERROR:
	case IBC_RDV_AUTH_FAILED:
		if (m->textlen > IBC_RDV_MAX_TEXT || (m->textlen && !m->text))
			return 0;
		ibc_w_u16(&w, (uint16_t)m->textlen);
		ibc_w_bytes(&w, m->text, m->textlen);
		break;
	case IBC_RDV_DEAD:
		if (m->rank > INT32_MAX)
			return 0;
		ibc_w_u32(&w, m->rank);
		break;
	case IBC_RDV_PUT_OK:
	case IBC_RDV_LEAVE:
	case IBC_RDV_BYE:
	case IBC_RDV_AUTH_OK:
		break;
	default:
		return 0;
	}
	if (!w.ok)
		return 0;
	body = w.len - IBC_RDV_HDR_LEN;
	h = ibc_wbuf((uint8_t *)buf + 12, 4);
	ibc_w_u32(&h, (uint32_t)body);
	return w.len;
}


size_t ibc_rdv_auth_ctx(uint32_t rank, uint32_t size, uint8_t ctx[16])
{
	ibc_wbuf_t w = ibc_wbuf(ctx, 16);

	ibc_w_bytes(&w, "rdv", 3);
	ibc_w_u32(&w, rank);
	ibc_w_u32(&w, size);
	return w.len;
}
