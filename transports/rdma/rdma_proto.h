/*
 * Pure parts of the RDMA transport, on plain data (no verbs types), so that they are unit
 * tested without a device: the choice of the GID and of the path MTU, the QP-info message
 * exchanged through the rendezvous, the immediate data and the per-slot header.
 */
#ifndef IBC_RDMA_PROTO_H
#define IBC_RDMA_PROTO_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "wire.h"

/* ---- GID choice ---- */

enum ibc_rdma_gid_type {
	IBC_GID_NONE = 0,   /* empty entry (all zero) or its type could not be read */
	IBC_GID_IB,         /* "IB/RoCE v1" on an InfiniBand port */
	IBC_GID_ROCE_V1,    /* "IB/RoCE v1" on an Ethernet port */
	IBC_GID_ROCE_V2     /* "RoCE v2" */
};

/* One entry of a port's GID table, as recorded from sysfs / ibv_query_gid. */
typedef struct ibc_rdma_gid_entry {
	int index;
	uint8_t gid[16];
	enum ibc_rdma_gid_type type;
} ibc_rdma_gid_entry_t;

/* The type as sysfs spells it (gid_attrs/types/<i>); an Ethernet port's v1 is RoCE v1. */
static inline enum ibc_rdma_gid_type ibc_rdma_gid_type_parse(const char *s, bool ethernet)
{
	if (!s)
		return IBC_GID_NONE;
	if (strncmp(s, "RoCE v2", 7) == 0)
		return IBC_GID_ROCE_V2;
	if (strncmp(s, "IB/RoCE v1", 10) == 0)
		return ethernet ? IBC_GID_ROCE_V1 : IBC_GID_IB;
	return IBC_GID_NONE;
}

static inline bool ibc_rdma_gid_is_zero(const uint8_t gid[16])
{
	for (int i = 0; i < 16; i++)
		if (gid[i])
			return false;
	return true;
}

/* ::ffff:a.b.c.d */
static inline bool ibc_rdma_gid_is_ipv4(const uint8_t gid[16])
{
	static const uint8_t prefix[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
	return memcmp(gid, prefix, 12) == 0;
}

/* fe80::/10 */
static inline bool ibc_rdma_gid_is_link_local(const uint8_t gid[16])
{
	return gid[0] == 0xfe && (gid[1] & 0xc0) == 0x80;
}

/* Text form for messages: "::ffff:10.77.0.1" or full IPv6 hex groups. */
static inline void ibc_rdma_gid_str(const uint8_t gid[16], char *buf, size_t cap)
{
	if (ibc_rdma_gid_is_ipv4(gid)) {
		snprintf(buf, cap, "::ffff:%u.%u.%u.%u", gid[12], gid[13], gid[14], gid[15]);
		return;
	}
	snprintf(buf, cap, "%02x%02x:%02x%02x:%02x%02x:%02x%02x:%02x%02x:%02x%02x:%02x%02x:%02x%02x", gid[0],
		 gid[1], gid[2], gid[3], gid[4], gid[5], gid[6], gid[7], gid[8], gid[9], gid[10], gid[11], gid[12],
		 gid[13], gid[14], gid[15]);
}

/*
 * Chooses the GID index of an Ethernet (RoCE) port from its table. With forced >= 0 that
 * index must exist and be non-empty. Otherwise, in order: the first RoCE v2 IPv4-mapped GID,
 * the first RoCE v2 global (not link-local) GID, the first RoCE v1 IPv4-mapped GID. A
 * link-local fe80:: GID is never chosen automatically (not routable across hosts).
 * Returns the index, or -1 with a reason in why.
 */
static inline int ibc_rdma_choose_gid(const ibc_rdma_gid_entry_t *tab, int n, int forced, char *why, size_t whylen)
{
	int v2_global = -1, v1_ipv4 = -1;

	if (forced >= 0) {
		for (int i = 0; i < n; i++) {
			if (tab[i].index != forced)
				continue;
			if (ibc_rdma_gid_is_zero(tab[i].gid) || tab[i].type == IBC_GID_NONE) {
				snprintf(why, whylen, "GID index %d is empty", forced);
				return -1;
			}
			return forced;
		}
		snprintf(why, whylen, "GID index %d does not exist (the table has %d entries)", forced, n);
		return -1;
	}
	for (int i = 0; i < n; i++) {
		const ibc_rdma_gid_entry_t *e = &tab[i];

		if (ibc_rdma_gid_is_zero(e->gid) || ibc_rdma_gid_is_link_local(e->gid))
			continue;
		if (e->type == IBC_GID_ROCE_V2 && ibc_rdma_gid_is_ipv4(e->gid))
			return e->index;
		if (e->type == IBC_GID_ROCE_V2 && v2_global < 0)
			v2_global = e->index;
		if (e->type == IBC_GID_ROCE_V1 && ibc_rdma_gid_is_ipv4(e->gid) && v1_ipv4 < 0)
			v1_ipv4 = e->index;
	}
	if (v2_global >= 0)
		return v2_global;
	if (v1_ipv4 >= 0)
		return v1_ipv4;
	snprintf(why, whylen,
		 "no routable RoCE GID (only empty or link-local fe80:: entries among %d): give the netdev an IP address, or set IBCOMM_GID_INDEX",
		 n);
	return -1;
}

/* ---- MTU ---- */

/* IB MTU enum values (as enum ibv_mtu): 1=256 2=512 3=1024 4=2048 5=4096. */
static inline bool ibc_rdma_mtu_valid(int mtu)
{
	return mtu >= 1 && mtu <= 5;
}
static inline int ibc_rdma_mtu_bytes(int mtu)
{
	return ibc_rdma_mtu_valid(mtu) ? 128 << mtu : 0;
}
/* The path MTU: the smaller active MTU of both ends; 0 when either is invalid. */
static inline int ibc_rdma_path_mtu(int local, int remote)
{
	if (!ibc_rdma_mtu_valid(local) || !ibc_rdma_mtu_valid(remote))
		return 0;
	return local < remote ? local : remote;
}

/* ---- the QP-info message (carried by the connect message below) ---- */

#define IBC_RDMA_INFO_MAGIC 0x41445249u /* "IRDA" */
#define IBC_RDMA_INFO_VERSION 1
#define IBC_RDMA_INFO_MAX 128 /* encoded size bound */

enum { IBC_RDMA_LL_IB = 1, IBC_RDMA_LL_ETH = 2 };

typedef struct ibc_rdma_info {
	uint32_t src, dst;        /* the publishing rank and the peer it is meant for */
	uint8_t link_layer;       /* IBC_RDMA_LL_* */
	uint8_t mtu;              /* active MTU, IB enum */
	uint16_t lid;
	uint32_t qpn, psn;        /* 24 bits each */
	uint8_t gid[16];
	uint32_t nslots;          /* receive ring geometry the publisher exposes to dst */
	uint32_t stride;          /* bytes between slots */
	uint32_t max_chunk;       /* payload bytes per slot */
	uint64_t ring_addr;       /* chan c, slot s at ring_addr + (c * nslots + s) * stride */
	uint32_t ring_rkey;
	uint64_t credit_addr;     /* IBC_NCHAN u64 credit words that dst writes into */
	uint32_t credit_rkey;
} ibc_rdma_info_t;

/* Encodes info into buf; returns its length, or 0 when cap is too small. */
static inline size_t ibc_rdma_info_encode(const ibc_rdma_info_t *in, void *buf, size_t cap)
{
	ibc_wbuf_t w = ibc_wbuf(buf, cap);

	ibc_w_u32(&w, IBC_RDMA_INFO_MAGIC);
	ibc_w_u16(&w, IBC_RDMA_INFO_VERSION);
	ibc_w_u32(&w, in->src);
	ibc_w_u32(&w, in->dst);
	ibc_w_u8(&w, in->link_layer);
	ibc_w_u8(&w, in->mtu);
	ibc_w_u16(&w, in->lid);
	ibc_w_u32(&w, in->qpn);
	ibc_w_u32(&w, in->psn);
	ibc_w_bytes(&w, in->gid, 16);
	ibc_w_u32(&w, in->nslots);
	ibc_w_u32(&w, in->stride);
	ibc_w_u32(&w, in->max_chunk);
	ibc_w_u64(&w, in->ring_addr);
	ibc_w_u32(&w, in->ring_rkey);
	ibc_w_u64(&w, in->credit_addr);
	ibc_w_u32(&w, in->credit_rkey);
	return w.ok ? w.len : 0;
}

/*
 * Decodes and validates; false (with a reason in why) on truncated, trailing, wrong-magic,
 * wrong-version or out-of-range input. *out is written only on success.
 */
static inline bool ibc_rdma_info_decode(const void *buf, size_t len, ibc_rdma_info_t *out, char *why, size_t whylen)
{
	ibc_rbuf_t r = ibc_rbuf(buf, len);
	ibc_rdma_info_t in;
	uint32_t magic;
	uint16_t version;
	const uint8_t *gid;

	memset(&in, 0, sizeof(in));
	magic = ibc_r_u32(&r);
	version = ibc_r_u16(&r);
	if (r.ok && magic != IBC_RDMA_INFO_MAGIC) {
		snprintf(why, whylen, "not an RDMA QP-info message (magic 0x%08x)", magic);
		return false;
	}
	if (r.ok && version != IBC_RDMA_INFO_VERSION) {
		snprintf(why, whylen, "QP-info version %u, this library speaks %u", version, IBC_RDMA_INFO_VERSION);
		return false;
	}
	in.src = ibc_r_u32(&r);
	in.dst = ibc_r_u32(&r);
	in.link_layer = ibc_r_u8(&r);
	in.mtu = ibc_r_u8(&r);
	in.lid = ibc_r_u16(&r);
	in.qpn = ibc_r_u32(&r);
	in.psn = ibc_r_u32(&r);
	gid = ibc_r_bytes(&r, 16);
	if (gid)
		memcpy(in.gid, gid, 16);
	in.nslots = ibc_r_u32(&r);
	in.stride = ibc_r_u32(&r);
	in.max_chunk = ibc_r_u32(&r);
	in.ring_addr = ibc_r_u64(&r);
	in.ring_rkey = ibc_r_u32(&r);
	in.credit_addr = ibc_r_u64(&r);
	in.credit_rkey = ibc_r_u32(&r);
	if (!ibc_r_done(&r)) {
		snprintf(why, whylen, "QP-info message of %zu bytes is %s", len, r.ok ? "too long" : "truncated");
		return false;
	}
	if (in.link_layer != IBC_RDMA_LL_IB && in.link_layer != IBC_RDMA_LL_ETH) {
		snprintf(why, whylen, "QP-info: bad link layer %u", in.link_layer);
		return false;
	}
	if (!ibc_rdma_mtu_valid(in.mtu)) {
		snprintf(why, whylen, "QP-info: bad MTU code %u", in.mtu);
		return false;
	}
	if (in.qpn == 0 || in.qpn > 0xffffff || in.psn > 0xffffff) {
		snprintf(why, whylen, "QP-info: bad QP number 0x%x or PSN 0x%x", in.qpn, in.psn);
		return false;
	}
	if (in.link_layer == IBC_RDMA_LL_ETH && ibc_rdma_gid_is_zero(in.gid)) {
		snprintf(why, whylen, "QP-info: empty GID on a RoCE port");
		return false;
	}
	if (in.nslots == 0 || in.nslots > 0xffff || in.max_chunk == 0 || in.stride < in.max_chunk ||
	    (uint64_t)in.stride * in.nslots * 2 > (1ull << 40)) {
		snprintf(why, whylen, "QP-info: bad ring geometry (%u slots, stride %u, chunk %u)", in.nslots,
			 in.stride, in.max_chunk);
		return false;
	}
	if (in.ring_addr == 0 || in.credit_addr == 0) {
		snprintf(why, whylen, "QP-info: null ring or credit address");
		return false;
	}
	*out = in;
	return true;
}

/* ---- lazy connections (rdma_cm_ud.c): a rank's UD address and the connect message ---- */

/* The Q_Key of every connect datagram (bit 31 clear: not a privileged key). */
#define IBC_RDMA_QKEY 0x1bc50001u

/* Published once per communicator under "<comm id>/rdma/ud/<rank>". */
#define IBC_RDMA_UD_MAGIC 0x55445249u /* "IRDU" */
#define IBC_RDMA_UD_VERSION 1
#define IBC_RDMA_UD_MAX 48 /* encoded size bound */

typedef struct ibc_rdma_ud_addr {
	uint32_t rank;
	uint8_t link_layer; /* IBC_RDMA_LL_* */
	uint16_t lid;
	uint32_t qpn;       /* the UD QP that receives connect messages, 24 bits */
	uint8_t gid[16];
} ibc_rdma_ud_addr_t;

static inline size_t ibc_rdma_ud_encode(const ibc_rdma_ud_addr_t *a, void *buf, size_t cap)
{
	ibc_wbuf_t w = ibc_wbuf(buf, cap);

	ibc_w_u32(&w, IBC_RDMA_UD_MAGIC);
	ibc_w_u16(&w, IBC_RDMA_UD_VERSION);
	ibc_w_u32(&w, a->rank);
	ibc_w_u8(&w, a->link_layer);
	ibc_w_u16(&w, a->lid);
	ibc_w_u32(&w, a->qpn);
	ibc_w_bytes(&w, a->gid, 16);
	return w.ok ? w.len : 0;
}

/* Decodes and validates; false (with a reason in why) on bad input. *out written only on success. */
static inline bool ibc_rdma_ud_decode(const void *buf, size_t len, ibc_rdma_ud_addr_t *out, char *why, size_t whylen)
{
	ibc_rbuf_t r = ibc_rbuf(buf, len);
	ibc_rdma_ud_addr_t a;
	uint32_t magic;
	uint16_t version;
	const uint8_t *gid;

	memset(&a, 0, sizeof(a));
	magic = ibc_r_u32(&r);
	version = ibc_r_u16(&r);
	if (r.ok && (magic != IBC_RDMA_UD_MAGIC || version != IBC_RDMA_UD_VERSION)) {
		snprintf(why, whylen, "not an RDMA UD address of version %u (magic 0x%08x, version %u)",
			 IBC_RDMA_UD_VERSION, magic, version);
		return false;
	}
	a.rank = ibc_r_u32(&r);
	a.link_layer = ibc_r_u8(&r);
	a.lid = ibc_r_u16(&r);
	a.qpn = ibc_r_u32(&r);
	gid = ibc_r_bytes(&r, 16);
	if (gid)
		memcpy(a.gid, gid, 16);
	if (!ibc_r_done(&r)) {
		snprintf(why, whylen, "RDMA UD address of %zu bytes is %s", len, r.ok ? "too long" : "truncated");
		return false;
	}
	if (a.link_layer != IBC_RDMA_LL_IB && a.link_layer != IBC_RDMA_LL_ETH) {
		snprintf(why, whylen, "RDMA UD address: bad link layer %u", a.link_layer);
		return false;
	}
	if (a.qpn == 0 || a.qpn > 0xffffff) {
		snprintf(why, whylen, "RDMA UD address: bad QP number 0x%x", a.qpn);
		return false;
	}
	if (a.link_layer == IBC_RDMA_LL_ETH && ibc_rdma_gid_is_zero(a.gid)) {
		snprintf(why, whylen, "RDMA UD address: empty GID on a RoCE port");
		return false;
	}
	*out = a;
	return true;
}

/*
 * The connect message, one UD datagram: the sender's QP info for the receiver (src, dst
 * inside) and what the sender knows. HAVE_YOURS: the sender connected its QP to the
 * receiver's QP paired_qpn (it is in RTR: the receiver may write). READY: the sender knows
 * the receiver is in RTR too (no answer needed). MAC: the job has a key (IBCOMM_JOB_KEY), and
 * the message ends with IBC_RDMA_CM_MAC_LEN bytes of HMAC-SHA256 under it over every byte
 * before them (rdma_cm_ud.c computes and checks it; this file only carries it).
 */
#define IBC_RDMA_CM_MAGIC 0x43445249u /* "IRDC" */
#define IBC_RDMA_CM_VERSION 1
#define IBC_RDMA_CM_MAX 224   /* encoded size bound: fits a UD datagram on any path MTU (>= 256) */
#define IBC_RDMA_CM_ID_MAX 63 /* communicator id bytes */
#define IBC_RDMA_CM_MAC_LEN 32
enum { IBC_RDMA_CM_HAVE_YOURS = 1, IBC_RDMA_CM_READY = 2, IBC_RDMA_CM_MAC = 4 };

typedef struct ibc_rdma_cm {
	uint8_t flags;                   /* IBC_RDMA_CM_* */
	char id[IBC_RDMA_CM_ID_MAX + 1]; /* the communicator's id, NUL-terminated */
	uint32_t paired_qpn;             /* with HAVE_YOURS: the receiver's QP the sender connected to; else 0 */
	ibc_rdma_info_t info;            /* the sender's QP for the receiver */
	uint8_t mac[IBC_RDMA_CM_MAC_LEN]; /* with MAC: the last bytes of the message */
} ibc_rdma_cm_t;

static inline size_t ibc_rdma_cm_encode(const ibc_rdma_cm_t *m, void *buf, size_t cap)
{
	uint8_t info[IBC_RDMA_INFO_MAX];
	size_t idlen = strnlen(m->id, sizeof(m->id)), ilen = ibc_rdma_info_encode(&m->info, info, sizeof(info));
	ibc_wbuf_t w = ibc_wbuf(buf, cap);

	if (!ilen || idlen > IBC_RDMA_CM_ID_MAX)
		return 0;
	ibc_w_u32(&w, IBC_RDMA_CM_MAGIC);
	ibc_w_u16(&w, IBC_RDMA_CM_VERSION);
	ibc_w_u8(&w, m->flags);
	ibc_w_u8(&w, (uint8_t)idlen);
	ibc_w_bytes(&w, m->id, idlen);
	ibc_w_u32(&w, m->paired_qpn);
	ibc_w_u16(&w, (uint16_t)ilen);
	ibc_w_bytes(&w, info, ilen);
	if (m->flags & IBC_RDMA_CM_MAC)
		ibc_w_bytes(&w, m->mac, IBC_RDMA_CM_MAC_LEN);
	return w.ok ? w.len : 0;
}

/* Decodes and validates (the QP info with ibc_rdma_info_decode); *out written only on success. */
static inline bool ibc_rdma_cm_decode(const void *buf, size_t len, ibc_rdma_cm_t *out, char *why, size_t whylen)
{
	ibc_rbuf_t r = ibc_rbuf(buf, len);
	ibc_rdma_cm_t m;
	const uint8_t *id, *info, *mac = NULL;
	uint32_t magic;
	uint16_t version, ilen;
	uint8_t idlen;

	memset(&m, 0, sizeof(m));
	magic = ibc_r_u32(&r);
	version = ibc_r_u16(&r);
	if (r.ok && magic != IBC_RDMA_CM_MAGIC) {
		snprintf(why, whylen, "not an RDMA connect message (magic 0x%08x)", magic);
		return false;
	}
	if (r.ok && version != IBC_RDMA_CM_VERSION) {
		snprintf(why, whylen, "RDMA connect message version %u, this library speaks %u", version,
			 IBC_RDMA_CM_VERSION);
		return false;
	}
	m.flags = ibc_r_u8(&r);
	idlen = ibc_r_u8(&r);
	id = ibc_r_bytes(&r, idlen);
	m.paired_qpn = ibc_r_u32(&r);
	ilen = ibc_r_u16(&r);
	info = ibc_r_bytes(&r, ilen);
	if (r.ok && (m.flags & IBC_RDMA_CM_MAC))
		mac = ibc_r_bytes(&r, IBC_RDMA_CM_MAC_LEN);
	if (!ibc_r_done(&r) || !id || !info || ((m.flags & IBC_RDMA_CM_MAC) && !mac)) {
		snprintf(why, whylen, "RDMA connect message of %zu bytes is %s", len, r.ok ? "too long" : "truncated");
		return false;
	}
	if (m.flags & ~(IBC_RDMA_CM_HAVE_YOURS | IBC_RDMA_CM_READY | IBC_RDMA_CM_MAC)) {
		snprintf(why, whylen, "RDMA connect message: unknown flags 0x%x", m.flags);
		return false;
	}
	if (idlen == 0 || idlen > IBC_RDMA_CM_ID_MAX || memchr(id, 0, idlen)) {
		snprintf(why, whylen, "RDMA connect message: bad communicator id (%u bytes)", idlen);
		return false;
	}
	memcpy(m.id, id, idlen);
	if (mac)
		memcpy(m.mac, mac, IBC_RDMA_CM_MAC_LEN);
	if ((m.flags & IBC_RDMA_CM_HAVE_YOURS) ? (m.paired_qpn == 0 || m.paired_qpn > 0xffffff) : m.paired_qpn != 0) {
		snprintf(why, whylen, "RDMA connect message: paired QP 0x%x with flags 0x%x", m.paired_qpn, m.flags);
		return false;
	}
	if (!ibc_rdma_info_decode(info, ilen, &m.info, why, whylen))
		return false;
	*out = m;
	return true;
}

/* ---- immediate data and slot header ---- */

/*
 * imm (host order before htonl): bit 31 channel, bit 30 credit flag; data: bits 0-15 the
 * slot; credit: bits 0-15 the low 16 bits of the receiver's released count on that channel.
 */
#define IBC_RDMA_IMM_CHAN 0x80000000u
#define IBC_RDMA_IMM_CREDIT 0x40000000u

static inline uint32_t ibc_rdma_imm_data(int chan, uint32_t slot)
{
	return (chan ? IBC_RDMA_IMM_CHAN : 0) | (slot & 0xffff);
}
static inline uint32_t ibc_rdma_imm_credit(int chan, uint64_t released)
{
	return (chan ? IBC_RDMA_IMM_CHAN : 0) | IBC_RDMA_IMM_CREDIT | (uint32_t)(released & 0xffff);
}
static inline int ibc_rdma_imm_chan(uint32_t imm)
{
	return (imm & IBC_RDMA_IMM_CHAN) ? 1 : 0;
}
static inline bool ibc_rdma_imm_is_credit(uint32_t imm)
{
	return (imm & IBC_RDMA_IMM_CREDIT) != 0;
}
static inline uint32_t ibc_rdma_imm_low(uint32_t imm)
{
	return imm & 0xffff;
}
/* The full released count from its low 16 bits: never behind old, less than 2^16 ahead. */
static inline uint64_t ibc_rdma_credit_update(uint64_t old, uint32_t low16)
{
	return old + ((low16 - (uint32_t)old) & 0xffff);
}

/* Each slot starts with this header; the payload follows at IBC_RDMA_HDR bytes. */
#define IBC_RDMA_HDR 64u
#define IBC_RDMA_HDR_MAGIC 0x4348u /* "HC" */

static inline void ibc_rdma_hdr_encode(void *slot, uint32_t tag, uint32_t len, uint32_t seq)
{
	ibc_wbuf_t w = ibc_wbuf(slot, 16);

	ibc_w_u16(&w, IBC_RDMA_HDR_MAGIC);
	ibc_w_u16(&w, 0);
	ibc_w_u32(&w, tag);
	ibc_w_u32(&w, len);
	ibc_w_u32(&w, seq);
}
static inline bool ibc_rdma_hdr_decode(const void *slot, uint32_t *tag, uint32_t *len, uint32_t *seq)
{
	ibc_rbuf_t r = ibc_rbuf(slot, 16);
	uint16_t magic = ibc_r_u16(&r);

	(void)ibc_r_u16(&r);
	*tag = ibc_r_u32(&r);
	*len = ibc_r_u32(&r);
	*seq = ibc_r_u32(&r);
	return r.ok && magic == IBC_RDMA_HDR_MAGIC;
}

#endif
