/* The embedding id's encoding (lib/id.h): no state, so the fuzz target links it alone. */
#include <arpa/inet.h>
#include <net/if.h>
#include <stdio.h>
#include <string.h>

#include "id.h"
#include "wire.h"

static uint32_t fnv1a(const uint8_t *p, size_t n)
{
	uint32_t h = 2166136261u;

	for (size_t i = 0; i < n; i++)
		h = (h ^ p[i]) * 16777619u;
	return h;
}

void ibc_id_encode(const struct ibc_id *d, ibcomm_id_t *id)
{
	ibc_wbuf_t w = ibc_wbuf(id->bytes, sizeof(id->bytes));

	memset(id, 0, sizeof(*id));
	ibc_w_u32(&w, IBC_ID_MAGIC);
	ibc_w_u8(&w, IBC_ID_VERSION);
	ibc_w_u8(&w, d->family);
	ibc_w_u16(&w, d->port);
	ibc_w_bytes(&w, d->addr, 16);
	ibc_w_bytes(&w, d->key, IBC_ID_KEY_LEN);
	ibc_w_u32(&w, d->pid);
	ibc_w_bytes(&w, d->boot_id, 16);
	ibc_w_u32(&w, d->scope);
	w.len = IBCOMM_ID_BYTES - 4;
	ibc_w_u32(&w, fnv1a(id->bytes, IBCOMM_ID_BYTES - 4));
}

ibcomm_status_t ibc_id_decode(const ibcomm_id_t *id, struct ibc_id *d, const char **why)
{
	ibc_rbuf_t r = ibc_rbuf(id->bytes, sizeof(id->bytes));
	struct ibc_id t;
	uint32_t magic, sum;
	uint8_t version;
	const uint8_t *p;

	magic = ibc_r_u32(&r);
	version = ibc_r_u8(&r);
	if (magic != IBC_ID_MAGIC) {
		*why = "it is not an ibcomm id (bad magic: not made by ibcomm_get_id, or not copied whole)";
		return IBCOMM_ERR_INVALID;
	}
	if (version != IBC_ID_VERSION) {
		*why = "it was made by another version of ibcomm (unknown id version)";
		return IBCOMM_ERR_INVALID;
	}
	if (fnv1a(id->bytes, IBCOMM_ID_BYTES - 4) != (sum = (uint32_t)id->bytes[124] | (uint32_t)id->bytes[125] << 8 |
							       (uint32_t)id->bytes[126] << 16 |
							       (uint32_t)id->bytes[127] << 24)) {
		*why = "its checksum does not match (the bytes were changed or truncated on the way)";
		return IBCOMM_ERR_INVALID;
	}
	t.family = ibc_r_u8(&r);
	t.port = ibc_r_u16(&r);
	p = ibc_r_bytes(&r, 16);
	if (p)
		memcpy(t.addr, p, 16);
	p = ibc_r_bytes(&r, IBC_ID_KEY_LEN);
	if (p)
		memcpy(t.key, p, IBC_ID_KEY_LEN);
	t.pid = ibc_r_u32(&r);
	p = ibc_r_bytes(&r, 16);
	if (p)
		memcpy(t.boot_id, p, 16);
	t.scope = ibc_r_u32(&r);
	p = ibc_r_bytes(&r, IBCOMM_ID_BYTES - 4 - r.off);
	if (!r.ok || !p) {
		*why = "it is truncated";
		return IBCOMM_ERR_INVALID;
	}
	for (size_t i = 0; i < IBCOMM_ID_BYTES - 4 - 80; i++) {
		if (p[i]) {
			*why = "its reserved bytes are not zero";
			return IBCOMM_ERR_INVALID;
		}
	}
	if (t.family != 4 && t.family != 6) {
		*why = "its address family is neither IPv4 nor IPv6";
		return IBCOMM_ERR_INVALID;
	}
	if (!t.port) {
		*why = "its port is 0";
		return IBCOMM_ERR_INVALID;
	}
	if (t.family == 4) {
		for (int i = 4; i < 16; i++)
			if (t.addr[i]) {
				*why = "its IPv4 address has stray bytes";
				return IBCOMM_ERR_INVALID;
			}
		if (t.scope) {
			*why = "an IPv4 address with an IPv6 scope";
			return IBCOMM_ERR_INVALID;
		}
	}
	(void)sum;
	*d = t;
	return IBCOMM_OK;
}

void ibc_id_root(const struct ibc_id *d, char *buf, size_t len)
{
	char host[INET6_ADDRSTRLEN], scope[IF_NAMESIZE + 1] = "";

	if (d->family == 4) {
		inet_ntop(AF_INET, d->addr, host, sizeof(host));
		snprintf(buf, len, "%s:%u", host, d->port);
		return;
	}
	inet_ntop(AF_INET6, d->addr, host, sizeof(host));
	if (d->scope && if_indextoname(d->scope, scope + 1))
		scope[0] = '%';
	snprintf(buf, len, "[%s%s]:%u", host, scope, d->port);
}
