/*
 * Little-endian, bounds-checked encoding of everything that crosses a process.
 * A writer appends into a fixed buffer and remembers overflow; a reader consumes from a
 * received buffer and remembers any read past its end. Check ->ok once at the end.
 */
#ifndef IBC_WIRE_H
#define IBC_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define IBC_WIRE_VERSION 1

typedef struct ibc_wbuf {
	uint8_t *p;
	size_t cap, len;
	bool ok;
} ibc_wbuf_t;

typedef struct ibc_rbuf {
	const uint8_t *p;
	size_t len, off;
	bool ok;
} ibc_rbuf_t;

static inline ibc_wbuf_t ibc_wbuf(void *p, size_t cap)
{
	return (ibc_wbuf_t){ .p = p, .cap = cap, .len = 0, .ok = true };
}
static inline ibc_rbuf_t ibc_rbuf(const void *p, size_t len)
{
	return (ibc_rbuf_t){ .p = p, .len = len, .off = 0, .ok = true };
}

static inline void ibc_w_bytes(ibc_wbuf_t *w, const void *src, size_t n)
{
	if (!w->ok || n > w->cap - w->len) {
		w->ok = false;
		return;
	}
	if (n)
		memcpy(w->p + w->len, src, n);
	w->len += n;
}
static inline void ibc_w_u8(ibc_wbuf_t *w, uint8_t v)
{
	ibc_w_bytes(w, &v, 1);
}
static inline void ibc_w_u16(ibc_wbuf_t *w, uint16_t v)
{
	uint8_t b[2] = { (uint8_t)v, (uint8_t)(v >> 8) };
	ibc_w_bytes(w, b, 2);
}
static inline void ibc_w_u32(ibc_wbuf_t *w, uint32_t v)
{
	uint8_t b[4];
	for (int i = 0; i < 4; i++)
		b[i] = (uint8_t)(v >> (8 * i));
	ibc_w_bytes(w, b, 4);
}
static inline void ibc_w_u64(ibc_wbuf_t *w, uint64_t v)
{
	uint8_t b[8];
	for (int i = 0; i < 8; i++)
		b[i] = (uint8_t)(v >> (8 * i));
	ibc_w_bytes(w, b, 8);
}

static inline const uint8_t *ibc_r_bytes(ibc_rbuf_t *r, size_t n)
{
	if (!r->ok || n > r->len - r->off) {
		r->ok = false;
		return NULL;
	}
	const uint8_t *p = r->p + r->off;
	r->off += n;
	return p;
}
static inline uint8_t ibc_r_u8(ibc_rbuf_t *r)
{
	const uint8_t *b = ibc_r_bytes(r, 1);
	return b ? b[0] : 0;
}
static inline uint16_t ibc_r_u16(ibc_rbuf_t *r)
{
	const uint8_t *b = ibc_r_bytes(r, 2);
	return b ? (uint16_t)(b[0] | b[1] << 8) : 0;
}
static inline uint32_t ibc_r_u32(ibc_rbuf_t *r)
{
	const uint8_t *b = ibc_r_bytes(r, 4);
	uint32_t v = 0;
	for (int i = 0; b && i < 4; i++)
		v |= (uint32_t)b[i] << (8 * i);
	return v;
}
static inline uint64_t ibc_r_u64(ibc_rbuf_t *r)
{
	const uint8_t *b = ibc_r_bytes(r, 8);
	uint64_t v = 0;
	for (int i = 0; b && i < 8; i++)
		v |= (uint64_t)b[i] << (8 * i);
	return v;
}
/* True when the whole buffer was consumed without overrun. */
static inline bool ibc_r_done(const ibc_rbuf_t *r)
{
	return r->ok && r->off == r->len;
}

#endif
