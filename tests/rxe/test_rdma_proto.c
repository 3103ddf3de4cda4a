/*
 * The pure parts of the RDMA transport, on any host (no device): GID choice from recorded
 * GID tables, path MTU, the QP-info message (round trip; truncated, trailing, wrong magic or
 * version, out-of-range and random input rejected), immediate data and credit arithmetic,
 * the slot header, the UD address and the connect message of lazy connections.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <CUnit/Basic.h>

#include "rdma_proto.h"
#include "../cunit_main.h"

static void gid_v4(uint8_t g[16], int a, int b, int c, int d)
{
	memset(g, 0, 16);
	g[10] = g[11] = 0xff;
	g[12] = (uint8_t)a, g[13] = (uint8_t)b, g[14] = (uint8_t)c, g[15] = (uint8_t)d;
}

static void gid_ll(uint8_t g[16], uint8_t last)
{
	memset(g, 0, 16);
	g[0] = 0xfe, g[1] = 0x80, g[8] = 0x02, g[15] = last;
}

static void gid_global6(uint8_t g[16])
{
	memset(g, 0, 16);
	g[0] = 0x20, g[1] = 0x01, g[2] = 0x0d, g[3] = 0xb8, g[15] = 1;
}

static char why[256];

/* rxe on a dummy netdev with 10.77.0.1 (as measured): 0 = fe80 v2, 1 = ::ffff:10.77.0.1 v2. */
static void test_gid_rxe(void)
{
	ibc_rdma_gid_entry_t t[3] = { { 0 } };

	t[0].index = 0, gid_ll(t[0].gid, 1), t[0].type = IBC_GID_ROCE_V2;
	t[1].index = 1, gid_v4(t[1].gid, 10, 77, 0, 1), t[1].type = IBC_GID_ROCE_V2;
	t[2].index = 2; /* empty */
	CU_ASSERT_EQUAL(ibc_rdma_choose_gid(t, 3, -1, why, sizeof(why)), 1);
	/* forced index wins, even the link-local one */
	CU_ASSERT_EQUAL(ibc_rdma_choose_gid(t, 3, 0, why, sizeof(why)), 0);
	CU_ASSERT_EQUAL(ibc_rdma_choose_gid(t, 3, 2, why, sizeof(why)), -1);
	CU_ASSERT_PTR_NOT_NULL(strstr(why, "empty"));
	CU_ASSERT_EQUAL(ibc_rdma_choose_gid(t, 3, 7, why, sizeof(why)), -1);
	CU_ASSERT_PTR_NOT_NULL(strstr(why, "does not exist"));
}

/* mlx5-like: v1/v2 pairs per address; the v2 IPv4 one is chosen whatever the order. */
static void test_gid_mlx(void)
{
	ibc_rdma_gid_entry_t t[6] = { { 0 } };

	t[0].index = 0, gid_ll(t[0].gid, 5), t[0].type = IBC_GID_ROCE_V1;
	t[1].index = 1, gid_ll(t[1].gid, 5), t[1].type = IBC_GID_ROCE_V2;
	t[2].index = 2, gid_global6(t[2].gid), t[2].type = IBC_GID_ROCE_V1;
	t[3].index = 3, gid_global6(t[3].gid), t[3].type = IBC_GID_ROCE_V2;
	t[4].index = 4, gid_v4(t[4].gid, 192, 168, 1, 5), t[4].type = IBC_GID_ROCE_V1;
	t[5].index = 5, gid_v4(t[5].gid, 192, 168, 1, 5), t[5].type = IBC_GID_ROCE_V2;
	CU_ASSERT_EQUAL(ibc_rdma_choose_gid(t, 6, -1, why, sizeof(why)), 5);
	/* without the v2 IPv4 entry: the global v2 one */
	CU_ASSERT_EQUAL(ibc_rdma_choose_gid(t, 5, -1, why, sizeof(why)), 3);
	/* only v1: the IPv4 v1 entry, never a link-local one */
	t[1].type = IBC_GID_ROCE_V1, t[3].type = IBC_GID_ROCE_V1;
	CU_ASSERT_EQUAL(ibc_rdma_choose_gid(t, 5, -1, why, sizeof(why)), 4);
}

static void test_gid_none(void)
{
	ibc_rdma_gid_entry_t t[3] = { { 0 } };

	CU_ASSERT_EQUAL(ibc_rdma_choose_gid(t, 0, -1, why, sizeof(why)), -1);
	t[0].index = 0, gid_ll(t[0].gid, 1), t[0].type = IBC_GID_ROCE_V2;
	t[1].index = 1, gid_ll(t[1].gid, 2), t[1].type = IBC_GID_ROCE_V1;
	t[2].index = 2;
	CU_ASSERT_EQUAL(ibc_rdma_choose_gid(t, 3, -1, why, sizeof(why)), -1);
	CU_ASSERT_PTR_NOT_NULL(strstr(why, "IBCOMM_GID_INDEX"));
	/* an untyped (unreadable type) non-zero GID is not chosen automatically */
	gid_v4(t[2].gid, 10, 0, 0, 1);
	CU_ASSERT_EQUAL(ibc_rdma_choose_gid(t, 3, -1, why, sizeof(why)), -1);
}

static void test_gid_helpers(void)
{
	uint8_t g[16];
	char s[64];

	CU_ASSERT_EQUAL(ibc_rdma_gid_type_parse("RoCE v2\n", true), IBC_GID_ROCE_V2);
	CU_ASSERT_EQUAL(ibc_rdma_gid_type_parse("IB/RoCE v1\n", true), IBC_GID_ROCE_V1);
	CU_ASSERT_EQUAL(ibc_rdma_gid_type_parse("IB/RoCE v1\n", false), IBC_GID_IB);
	CU_ASSERT_EQUAL(ibc_rdma_gid_type_parse("", true), IBC_GID_NONE);
	CU_ASSERT_EQUAL(ibc_rdma_gid_type_parse(NULL, true), IBC_GID_NONE);
	gid_v4(g, 10, 77, 0, 1);
	CU_ASSERT_TRUE(ibc_rdma_gid_is_ipv4(g));
	CU_ASSERT_FALSE(ibc_rdma_gid_is_link_local(g));
	ibc_rdma_gid_str(g, s, sizeof(s));
	CU_ASSERT_STRING_EQUAL(s, "::ffff:10.77.0.1");
	gid_ll(g, 1);
	CU_ASSERT_TRUE(ibc_rdma_gid_is_link_local(g));
	ibc_rdma_gid_str(g, s, sizeof(s));
	CU_ASSERT_STRING_EQUAL(s, "fe80:0000:0000:0000:0200:0000:0000:0001");
}

static void test_mtu(void)
{
	CU_ASSERT_EQUAL(ibc_rdma_path_mtu(3, 5), 3);
	CU_ASSERT_EQUAL(ibc_rdma_path_mtu(5, 3), 3);
	CU_ASSERT_EQUAL(ibc_rdma_path_mtu(4, 4), 4);
	CU_ASSERT_EQUAL(ibc_rdma_path_mtu(1, 5), 1);
	CU_ASSERT_EQUAL(ibc_rdma_path_mtu(0, 3), 0);
	CU_ASSERT_EQUAL(ibc_rdma_path_mtu(3, 6), 0);
	CU_ASSERT_EQUAL(ibc_rdma_mtu_bytes(3), 1024);
	CU_ASSERT_EQUAL(ibc_rdma_mtu_bytes(5), 4096);
	CU_ASSERT_EQUAL(ibc_rdma_mtu_bytes(1), 256);
	CU_ASSERT_EQUAL(ibc_rdma_mtu_bytes(7), 0);
}

static ibc_rdma_info_t sample(void)
{
	ibc_rdma_info_t in;

	memset(&in, 0, sizeof(in));
	in.src = 3, in.dst = 7, in.link_layer = IBC_RDMA_LL_ETH, in.mtu = 3, in.lid = 0;
	in.qpn = 0x123456, in.psn = 0xabcdef;
	gid_v4(in.gid, 10, 77, 0, 1);
	in.nslots = 8, in.stride = 65536 + 64, in.max_chunk = 65536;
	in.ring_addr = 0x7f0012345000ull, in.ring_rkey = 0xdeadbeef;
	in.credit_addr = 0x7f0099999040ull, in.credit_rkey = 0x1234;
	return in;
}

/* The connect message: round trip, size bound, every truncation and bad fields rejected. */
static void test_cm(void)
{
	ibc_rdma_cm_t m, out;
	uint8_t buf[IBC_RDMA_CM_MAX + 16], bad[IBC_RDMA_CM_MAX + 16];
	size_t len;

	memset(&m, 0, sizeof(m));
	m.flags = IBC_RDMA_CM_HAVE_YOURS;
	memset(m.id, 'x', IBC_RDMA_CM_ID_MAX); /* the longest id */
	m.paired_qpn = 0x123456;
	m.info = sample();
	len = ibc_rdma_cm_encode(&m, buf, sizeof(buf));
	CU_ASSERT_TRUE_FATAL(len > 0 && len <= IBC_RDMA_CM_MAX);
	CU_ASSERT_TRUE_FATAL(ibc_rdma_cm_decode(buf, len, &out, why, sizeof(why)));
	CU_ASSERT_EQUAL(memcmp(&m, &out, sizeof(m)), 0);
	for (size_t n = 0; n < len; n++)
		CU_ASSERT_FALSE(ibc_rdma_cm_decode(buf, n, &out, why, sizeof(why)));
	CU_ASSERT_FALSE(ibc_rdma_cm_decode(buf, len + 1, &out, why, sizeof(why)));
	memcpy(bad, buf, len);
	bad[6] = 0x80; /* unknown flag */
	CU_ASSERT_FALSE(ibc_rdma_cm_decode(bad, len, &out, why, sizeof(why)));
	CU_ASSERT_PTR_NOT_NULL(strstr(why, "flags"));
	/* with the MAC (job key) at the end: still within one datagram, cut anywhere: refused */
	m.flags |= IBC_RDMA_CM_MAC;
	memset(m.mac, 0xa5, sizeof(m.mac));
	len = ibc_rdma_cm_encode(&m, buf, sizeof(buf));
	CU_ASSERT_TRUE_FATAL(len > IBC_RDMA_CM_MAC_LEN && len <= IBC_RDMA_CM_MAX);
	CU_ASSERT_EQUAL(memcmp(buf + len - IBC_RDMA_CM_MAC_LEN, m.mac, IBC_RDMA_CM_MAC_LEN), 0);
	CU_ASSERT_TRUE_FATAL(ibc_rdma_cm_decode(buf, len, &out, why, sizeof(why)));
	CU_ASSERT_EQUAL(memcmp(&m, &out, sizeof(m)), 0);
	for (size_t n = 0; n < len; n++)
		CU_ASSERT_FALSE(ibc_rdma_cm_decode(buf, n, &out, why, sizeof(why)));
	m.flags &= (uint8_t)~IBC_RDMA_CM_MAC;
	memset(m.mac, 0, sizeof(m.mac));
	/* HAVE_YOURS without a paired QP, a paired QP without HAVE_YOURS */
	m.paired_qpn = 0;
	len = ibc_rdma_cm_encode(&m, buf, sizeof(buf));
	CU_ASSERT_FALSE(ibc_rdma_cm_decode(buf, len, &out, why, sizeof(why)));
	m.flags = 0;
	m.paired_qpn = 5;
	len = ibc_rdma_cm_encode(&m, buf, sizeof(buf));
	CU_ASSERT_FALSE(ibc_rdma_cm_decode(buf, len, &out, why, sizeof(why)));
	/* an empty id, a bad QP info inside */
	m.paired_qpn = 0;
	m.id[0] = 0;
	CU_ASSERT_TRUE(ibc_rdma_cm_encode(&m, buf, sizeof(buf)) > 0);
	CU_ASSERT_FALSE(ibc_rdma_cm_decode(buf, ibc_rdma_cm_encode(&m, buf, sizeof(buf)), &out, why, sizeof(why)));
	snprintf(m.id, sizeof(m.id), "0.1.2");
	m.info.qpn = 0;
	CU_ASSERT_FALSE(ibc_rdma_cm_decode(buf, ibc_rdma_cm_encode(&m, buf, sizeof(buf)), &out, why, sizeof(why)));
	/* random bytes never decode */
	srand(7);
	for (int i = 0; i < 2000; i++) {
		size_t n = (size_t)rand() % sizeof(bad);

		for (size_t k = 0; k < n; k++)
			bad[k] = (uint8_t)rand();
		CU_ASSERT_FALSE(ibc_rdma_cm_decode(bad, n, &out, why, sizeof(why)));
	}
}

static void test_ud_addr(void)
{
	ibc_rdma_ud_addr_t a = { .rank = 3, .link_layer = IBC_RDMA_LL_ETH, .lid = 0, .qpn = 0x11 }, out;
	uint8_t buf[IBC_RDMA_UD_MAX + 4];
	size_t len;

	gid_v4(a.gid, 10, 77, 0, 1);
	len = ibc_rdma_ud_encode(&a, buf, sizeof(buf));
	CU_ASSERT_TRUE_FATAL(len > 0 && len <= IBC_RDMA_UD_MAX);
	CU_ASSERT_TRUE_FATAL(ibc_rdma_ud_decode(buf, len, &out, why, sizeof(why)));
	CU_ASSERT_EQUAL(memcmp(&a, &out, sizeof(a)), 0);
	for (size_t n = 0; n < len; n++)
		CU_ASSERT_FALSE(ibc_rdma_ud_decode(buf, n, &out, why, sizeof(why)));
	CU_ASSERT_FALSE(ibc_rdma_ud_decode(buf, len + 1, &out, why, sizeof(why)));
	memset(a.gid, 0, 16); /* RoCE without a GID */
	CU_ASSERT_FALSE(ibc_rdma_ud_decode(buf, ibc_rdma_ud_encode(&a, buf, sizeof(buf)), &out, why, sizeof(why)));
	a.link_layer = IBC_RDMA_LL_IB;
	a.qpn = 0x1000000;
	CU_ASSERT_FALSE(ibc_rdma_ud_decode(buf, ibc_rdma_ud_encode(&a, buf, sizeof(buf)), &out, why, sizeof(why)));
}

static void test_info_roundtrip(void)
{
	ibc_rdma_info_t in = sample(), out;
	uint8_t buf[IBC_RDMA_INFO_MAX];
	size_t len = ibc_rdma_info_encode(&in, buf, sizeof(buf));

	CU_ASSERT_TRUE_FATAL(len > 0 && len <= IBC_RDMA_INFO_MAX);
	CU_ASSERT_TRUE_FATAL(ibc_rdma_info_decode(buf, len, &out, why, sizeof(why)));
	CU_ASSERT_EQUAL(memcmp(&in, &out, sizeof(in)), 0);
	/* little-endian on the wire, whatever the host */
	CU_ASSERT_EQUAL(buf[0], 0x49);
	CU_ASSERT_EQUAL(buf[1], 0x52);
	CU_ASSERT_EQUAL(buf[4], IBC_RDMA_INFO_VERSION);
	CU_ASSERT_EQUAL(buf[5], 0);
	/* a too small output buffer is refused */
	CU_ASSERT_EQUAL(ibc_rdma_info_encode(&in, buf, len - 1), 0);
}

static void test_info_reject(void)
{
	ibc_rdma_info_t in = sample(), out, bad;
	uint8_t buf[IBC_RDMA_INFO_MAX + 1], copy[IBC_RDMA_INFO_MAX + 1];
	size_t len = ibc_rdma_info_encode(&in, buf, sizeof(buf));

	memset(&out, 0x5a, sizeof(out));
	bad = out;
	for (size_t l = 0; l < len; l++) {
		CU_ASSERT_FALSE(ibc_rdma_info_decode(buf, l, &out, why, sizeof(why)));
	}
	CU_ASSERT_EQUAL(memcmp(&out, &bad, sizeof(out)), 0); /* untouched on failure */
	buf[len] = 0;
	CU_ASSERT_FALSE(ibc_rdma_info_decode(buf, len + 1, &out, why, sizeof(why)));
	CU_ASSERT_PTR_NOT_NULL(strstr(why, "too long"));

	memcpy(copy, buf, len);
	copy[4] = 2; /* version */
	CU_ASSERT_FALSE(ibc_rdma_info_decode(copy, len, &out, why, sizeof(why)));
	CU_ASSERT_PTR_NOT_NULL(strstr(why, "version"));
	memcpy(copy, buf, len);
	copy[0] ^= 1; /* magic */
	CU_ASSERT_FALSE(ibc_rdma_info_decode(copy, len, &out, why, sizeof(why)));

#define REJECT(field, value)                                                    \
	do {                                                                    \
		ibc_rdma_info_t x = sample();                                   \
		uint8_t b[IBC_RDMA_INFO_MAX];                                   \
		size_t n;                                                       \
		x.field = value;                                                \
		n = ibc_rdma_info_encode(&x, b, sizeof(b));                     \
		CU_ASSERT_FALSE(ibc_rdma_info_decode(b, n, &out, why, sizeof(why))); \
	} while (0)
	REJECT(link_layer, 0);
	REJECT(link_layer, 3);
	REJECT(mtu, 0);
	REJECT(mtu, 6);
	REJECT(qpn, 0);
	REJECT(qpn, 0x1000000);
	REJECT(psn, 0x1000000);
	REJECT(nslots, 0);
	REJECT(nslots, 0x10000);
	REJECT(max_chunk, 0);
	REJECT(stride, 100);
	REJECT(ring_addr, 0);
	REJECT(credit_addr, 0);
	{
		ibc_rdma_info_t x = sample();
		uint8_t b[IBC_RDMA_INFO_MAX];
		size_t n;

		memset(x.gid, 0, 16);
		n = ibc_rdma_info_encode(&x, b, sizeof(b));
		CU_ASSERT_FALSE(ibc_rdma_info_decode(b, n, &out, why, sizeof(why)));
		x.link_layer = IBC_RDMA_LL_IB; /* InfiniBand needs no GID */
		x.lid = 7;
		n = ibc_rdma_info_encode(&x, b, sizeof(b));
		CU_ASSERT_TRUE(ibc_rdma_info_decode(b, n, &out, why, sizeof(why)));
	}
}

/* Random bytes and random single-byte corruptions: never a crash, never a bogus accept. */
static void test_info_garbage(void)
{
	ibc_rdma_info_t in = sample(), out;
	uint8_t good[IBC_RDMA_INFO_MAX], buf[2 * IBC_RDMA_INFO_MAX];
	size_t len = ibc_rdma_info_encode(&in, good, sizeof(good));
	unsigned seed = 12345;
	int accepted = 0;

	for (int i = 0; i < 20000; i++) {
		size_t n = (size_t)rand_r(&seed) % sizeof(buf);

		for (size_t k = 0; k < n; k++)
			buf[k] = (uint8_t)rand_r(&seed);
		accepted += ibc_rdma_info_decode(buf, n, &out, why, sizeof(why));
	}
	CU_ASSERT_EQUAL(accepted, 0);
	for (int i = 0; i < 20000; i++) {
		memcpy(buf, good, len);
		buf[(size_t)rand_r(&seed) % len] ^= (uint8_t)(1 + rand_r(&seed) % 255);
		if (ibc_rdma_info_decode(buf, len, &out, why, sizeof(why))) {
			/* a change in a free-valued field may decode; it must then be that value */
			CU_ASSERT_NOT_EQUAL(memcmp(&out, &in, sizeof(in)), 0);
		}
	}
}

static void test_imm_credit(void)
{
	uint32_t imm = ibc_rdma_imm_data(1, 7);

	CU_ASSERT_EQUAL(ibc_rdma_imm_chan(imm), 1);
	CU_ASSERT_FALSE(ibc_rdma_imm_is_credit(imm));
	CU_ASSERT_EQUAL(ibc_rdma_imm_low(imm), 7);
	imm = ibc_rdma_imm_data(0, 0xffff);
	CU_ASSERT_EQUAL(ibc_rdma_imm_chan(imm), 0);
	CU_ASSERT_EQUAL(ibc_rdma_imm_low(imm), 0xffff);
	imm = ibc_rdma_imm_credit(0, 0x12345);
	CU_ASSERT_TRUE(ibc_rdma_imm_is_credit(imm));
	CU_ASSERT_EQUAL(ibc_rdma_imm_chan(imm), 0);
	CU_ASSERT_EQUAL(ibc_rdma_imm_low(imm), 0x2345);
	/* reconstruction across the 16-bit wrap */
	CU_ASSERT_EQUAL(ibc_rdma_credit_update(0, 5), 5);
	CU_ASSERT_EQUAL(ibc_rdma_credit_update(5, 5), 5);
	CU_ASSERT_EQUAL(ibc_rdma_credit_update(0xfffe, 0x0003), 0x10003);
	CU_ASSERT_EQUAL(ibc_rdma_credit_update(0x3fffffffeull, ibc_rdma_imm_low(ibc_rdma_imm_credit(1, 0x400000004ull))),
			0x400000004ull);
}

static void test_hdr(void)
{
	uint8_t slot[IBC_RDMA_HDR];
	uint32_t tag, len, seq;

	memset(slot, 0, sizeof(slot));
	CU_ASSERT_FALSE(ibc_rdma_hdr_decode(slot, &tag, &len, &seq));
	ibc_rdma_hdr_encode(slot, 0xfeedf00d, 65536, 42);
	CU_ASSERT_TRUE(ibc_rdma_hdr_decode(slot, &tag, &len, &seq));
	CU_ASSERT_EQUAL(tag, 0xfeedf00d);
	CU_ASSERT_EQUAL(len, 65536);
	CU_ASSERT_EQUAL(seq, 42);
	CU_ASSERT_EQUAL(slot[4], 0x0d); /* little-endian */
}

int main(int argc, char **argv)
{
	static const struct cm_test tests[] = {
		{ "GID choice: rxe table", test_gid_rxe },
		{ "GID choice: v1/v2 pairs", test_gid_mlx },
		{ "GID choice: nothing routable", test_gid_none },
		{ "GID helpers", test_gid_helpers },
		{ "path MTU", test_mtu },
		{ "QP info round trip", test_info_roundtrip },
		{ "QP info rejects bad input", test_info_reject },
		{ "QP info random input", test_info_garbage },
		{ "immediate data and credits", test_imm_credit },
		{ "slot header", test_hdr },
		{ "connect message", test_cm },
		{ "UD address", test_ud_addr },
	};

	return CM_MAIN1(argc, argv, "rdma_proto", tests);
}
