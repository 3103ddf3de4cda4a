/*
 * The embedding id (ibcomm_id_t, IBCOMM_ID_BYTES bytes), little-endian:
 *
 *	 0 u32 magic "IBID"   4 u8 version (1)   5 u8 family (4: IPv4, 6: IPv6)   6 u16 port
 *	 8 addr[16] (IPv4: 4 bytes then zeros)   24 key[32] (random job key)
 *	56 u32 creator pid   60 boot_id[16] (the creator's /proc/sys/kernel/random/boot_id)
 *	76 u32 IPv6 scope id   80..123 zero   124 u32 checksum (FNV-1a of bytes 0..123)
 *
 * Exposed for the unit tests and the fuzz target (tests/fuzz/fuzz_id.c).
 */
#ifndef IBC_ID_H
#define IBC_ID_H

#include "ibc.h"

#define IBC_ID_MAGIC 0x44494249u /* "IBID" */
#define IBC_ID_VERSION 1
#define IBC_ID_KEY_LEN 32

struct ibc_id {
	uint8_t family; /* 4 or 6 */
	uint16_t port;
	uint8_t addr[16];
	uint8_t key[IBC_ID_KEY_LEN];
	uint32_t pid;
	uint8_t boot_id[16];
	uint32_t scope;
};

IBC_HIDDEN void ibc_id_encode(const struct ibc_id *d, ibcomm_id_t *id);
/* Decodes and checks every field; IBCOMM_ERR_INVALID with *why on anything wrong. */
IBC_HIDDEN ibcomm_status_t ibc_id_decode(const ibcomm_id_t *id, struct ibc_id *d, const char **why);
/* "host:port" of d (brackets for IPv6). */
IBC_HIDDEN void ibc_id_root(const struct ibc_id *d, char *buf, size_t len);

#endif
