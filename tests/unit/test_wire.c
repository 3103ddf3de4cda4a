/*
 * Unit tests of lib/wire.h: round trips of every field type, little-endian byte order checked
 * byte by byte, writer overflow, reader truncation, ibc_r_done.
 */
#include <stdio.h>
#include <string.h>

#include <CUnit/Basic.h>

#include "wire.h"
#include "../cunit_main.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

static void test_roundtrip(void)
{
	uint8_t buf[64];
	static const char blob[] = "ibcomm";
	ibc_wbuf_t w = ibc_wbuf(buf, sizeof(buf));
	ibc_rbuf_t r;
	const uint8_t *b;

	ibc_w_u8(&w, 0xab);
	ibc_w_u16(&w, 0xbeef);
	ibc_w_u32(&w, 0xdeadbeefu);
	ibc_w_u64(&w, 0x0123456789abcdefull);
	ibc_w_bytes(&w, blob, sizeof(blob));
	ibc_w_bytes(&w, NULL, 0);
	ibc_w_u64(&w, UINT64_MAX);
	ibc_w_u8(&w, 0);
	CU_ASSERT_TRUE(w.ok);
	CU_ASSERT_EQUAL(w.len, 1 + 2 + 4 + 8 + sizeof(blob) + 8 + 1);

	r = ibc_rbuf(buf, w.len);
	CU_ASSERT_EQUAL(ibc_r_u8(&r), 0xab);
	CU_ASSERT_EQUAL(ibc_r_u16(&r), 0xbeef);
	CU_ASSERT_EQUAL(ibc_r_u32(&r), 0xdeadbeefu);
	CU_ASSERT_EQUAL(ibc_r_u64(&r), 0x0123456789abcdefull);
	b = ibc_r_bytes(&r, sizeof(blob));
	CU_ASSERT_PTR_NOT_NULL_FATAL(b);
	CU_ASSERT_EQUAL(memcmp(b, blob, sizeof(blob)), 0);
	CU_ASSERT_PTR_NOT_NULL(ibc_r_bytes(&r, 0));
	CU_ASSERT_FALSE(ibc_r_done(&r));
	CU_ASSERT_EQUAL(ibc_r_u64(&r), UINT64_MAX);
	CU_ASSERT_FALSE(ibc_r_done(&r)); /* one byte left */
	CU_ASSERT_EQUAL(ibc_r_u8(&r), 0);
	CU_ASSERT_TRUE(r.ok);
	CU_ASSERT_TRUE(ibc_r_done(&r));
}

/* Extremes and single bits of every width survive a round trip. */
static void test_roundtrip_values(void)
{
	uint8_t buf[15 * 13];
	ibc_wbuf_t w = ibc_wbuf(buf, sizeof(buf));
	ibc_rbuf_t r;
	unsigned bad = 0;

	for (int i = 0; i < 64; i += 5) {
		ibc_w_u8(&w, (uint8_t)(1u << (i % 8)));
		ibc_w_u16(&w, (uint16_t)(1u << (i % 16)));
		ibc_w_u32(&w, 1u << (i % 32));
		ibc_w_u64(&w, 1ull << i);
	}
	CU_ASSERT_TRUE(w.ok);
	r = ibc_rbuf(buf, w.len);
	for (int i = 0; i < 64; i += 5) {
		bad += ibc_r_u8(&r) != (uint8_t)(1u << (i % 8));
		bad += ibc_r_u16(&r) != (uint16_t)(1u << (i % 16));
		bad += ibc_r_u32(&r) != 1u << (i % 32);
		bad += ibc_r_u64(&r) != 1ull << i;
	}
	CU_ASSERT_EQUAL(bad, 0);
	CU_ASSERT_TRUE(ibc_r_done(&r));
}

static void test_little_endian(void)
{
	uint8_t buf[16];
	ibc_wbuf_t w = ibc_wbuf(buf, sizeof(buf));
	static const uint8_t want[15] = {
		0x5a,                                                  /* u8 */
		0x34, 0x12,                                            /* u16 0x1234 */
		0x78, 0x56, 0x34, 0x12,                                /* u32 0x12345678 */
		0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01,        /* u64 0x0102030405060708 */
	};
	static const uint8_t in[8] = { 0xf0, 0xde, 0xbc, 0x9a, 0x78, 0x56, 0x34, 0x12 };
	ibc_rbuf_t r = ibc_rbuf(in, sizeof(in));

	memset(buf, 0xee, sizeof(buf));
	ibc_w_u8(&w, 0x5a);
	ibc_w_u16(&w, 0x1234);
	ibc_w_u32(&w, 0x12345678u);
	ibc_w_u64(&w, 0x0102030405060708ull);
	CU_ASSERT_TRUE(w.ok);
	CU_ASSERT_EQUAL(w.len, sizeof(want));
	for (size_t i = 0; i < sizeof(want); i++)
		CU_ASSERT_EQUAL(buf[i], want[i]);
	CU_ASSERT_EQUAL(buf[15], 0xee); /* nothing past len */

	/* Reading: the first byte is the least significant. */
	CU_ASSERT_EQUAL(ibc_r_u64(&r), 0x123456789abcdef0ull);
	r = ibc_rbuf(in, sizeof(in));
	CU_ASSERT_EQUAL(ibc_r_u32(&r), 0x9abcdef0u);
	CU_ASSERT_EQUAL(ibc_r_u16(&r), 0x5678);
	CU_ASSERT_EQUAL(ibc_r_u8(&r), 0x34);
	CU_ASSERT_EQUAL(ibc_r_u8(&r), 0x12);
	CU_ASSERT_TRUE(ibc_r_done(&r));
}

static void test_writer_overflow(void)
{
	uint8_t buf[16];
	static const uint8_t blob[32];

	/* Each width one byte too long for what is left. */
	for (size_t cap = 0; cap < 8; cap++) {
		ibc_wbuf_t w;

		memset(buf, 0xee, sizeof(buf));
		w = ibc_wbuf(buf, cap);
		ibc_w_u64(&w, 0x0102030405060708ull);
		CU_ASSERT_FALSE(w.ok);
		CU_ASSERT_EQUAL(w.len, 0);
		CU_ASSERT_EQUAL(buf[0], 0xee); /* nothing written */
	}
	ibc_wbuf_t w = ibc_wbuf(buf, 3);
	ibc_w_u16(&w, 1);
	CU_ASSERT_TRUE(w.ok);
	ibc_w_u16(&w, 2);
	CU_ASSERT_FALSE(w.ok);
	CU_ASSERT_EQUAL(w.len, 2);
	/* Once failed, stays failed even when a later field would fit. */
	ibc_w_u8(&w, 3);
	CU_ASSERT_FALSE(w.ok);
	CU_ASSERT_EQUAL(w.len, 2);

	w = ibc_wbuf(buf, 5);
	ibc_w_u32(&w, 1);
	ibc_w_u8(&w, 2);
	CU_ASSERT_TRUE(w.ok); /* exactly full */
	ibc_w_u8(&w, 3);
	CU_ASSERT_FALSE(w.ok);

	w = ibc_wbuf(buf, sizeof(buf));
	ibc_w_bytes(&w, blob, sizeof(blob));
	CU_ASSERT_FALSE(w.ok);
	CU_ASSERT_EQUAL(w.len, 0);
	/* A length that would wrap the bound check. */
	w = ibc_wbuf(buf, sizeof(buf));
	ibc_w_u8(&w, 1);
	ibc_w_bytes(&w, blob, SIZE_MAX);
	CU_ASSERT_FALSE(w.ok);
	w = ibc_wbuf(NULL, 0);
	ibc_w_u8(&w, 1);
	CU_ASSERT_FALSE(w.ok);
}

static void test_reader_truncated(void)
{
	static const uint8_t in[8] = { 1, 2, 3, 4, 5, 6, 7, 8 };
	ibc_rbuf_t r;

	/* Every width, from every shorter buffer: ok = false and a zero value. */
	for (size_t len = 0; len < 8; len++) {
		r = ibc_rbuf(in, len);
		CU_ASSERT_EQUAL(ibc_r_u64(&r), 0);
		CU_ASSERT_FALSE(r.ok);
		CU_ASSERT_FALSE(ibc_r_done(&r));
		if (len < 4) {
			r = ibc_rbuf(in, len);
			CU_ASSERT_EQUAL(ibc_r_u32(&r), 0);
			CU_ASSERT_FALSE(r.ok);
		}
		if (len < 2) {
			r = ibc_rbuf(in, len);
			CU_ASSERT_EQUAL(ibc_r_u16(&r), 0);
			CU_ASSERT_FALSE(r.ok);
		}
		if (len < 1) {
			r = ibc_rbuf(in, len);
			CU_ASSERT_EQUAL(ibc_r_u8(&r), 0);
			CU_ASSERT_FALSE(r.ok);
		}
		r = ibc_rbuf(in, len);
		CU_ASSERT_PTR_NULL(ibc_r_bytes(&r, len + 1));
		CU_ASSERT_FALSE(r.ok);
	}
	/* Truncated in the middle of a message; later reads fail too, even ones that fit. */
	r = ibc_rbuf(in, 6);
	CU_ASSERT_EQUAL(ibc_r_u32(&r), 0x04030201u);
	CU_ASSERT_TRUE(r.ok);
	CU_ASSERT_EQUAL(ibc_r_u32(&r), 0);
	CU_ASSERT_FALSE(r.ok);
	CU_ASSERT_EQUAL(ibc_r_u8(&r), 0);
	CU_ASSERT_EQUAL(ibc_r_u16(&r), 0);
	CU_ASSERT_FALSE(ibc_r_done(&r));
	/* A length that would wrap the bound check. */
	r = ibc_rbuf(in, sizeof(in));
	ibc_r_u8(&r);
	CU_ASSERT_PTR_NULL(ibc_r_bytes(&r, SIZE_MAX));
	CU_ASSERT_FALSE(r.ok);
}

static void test_done(void)
{
	static const uint8_t in[4] = { 1, 2, 3, 4 };
	ibc_rbuf_t r = ibc_rbuf(in, 0);

	CU_ASSERT_TRUE(ibc_r_done(&r)); /* empty and nothing read */
	r = ibc_rbuf(in, sizeof(in));
	CU_ASSERT_FALSE(ibc_r_done(&r));
	ibc_r_u16(&r);
	CU_ASSERT_FALSE(ibc_r_done(&r)); /* trailing bytes */
	ibc_r_u16(&r);
	CU_ASSERT_TRUE(ibc_r_done(&r));
	ibc_r_u8(&r);
	CU_ASSERT_FALSE(ibc_r_done(&r)); /* overrun */
	CU_ASSERT_EQUAL(IBC_WIRE_VERSION, 1);
}

int main(int argc, char **argv)
{
	static const struct cm_test tests[] = {
		{ "round trip", test_roundtrip },
		{ "round trip of extremes", test_roundtrip_values },
		{ "little-endian byte order", test_little_endian },
		{ "writer overflow", test_writer_overflow },
		{ "reader truncated input", test_reader_truncated },
		{ "ibc_r_done", test_done },
	};

	return CM_MAIN1(argc, argv, "wire", tests);
}
