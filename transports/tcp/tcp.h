/*
 * Wire format of the TCP transport (internal; tests include it to craft frames).
 *
 * Every frame starts with a 16-byte little-endian header, encoded with lib/wire.h:
 *   u8 version, u8 type, u8 chan, u8 flags, u32 tag, u32 len, u32 credits
 * followed by len payload bytes. A connection carries DATA from the rank that opened it to
 * the rank that accepted it, and CREDIT frames back. The opener's first frame is a HELLO
 * whose payload is:
 *   u32 magic, u32 rank, u32 size, u32 max_chunk, u32 nslots, u8 idlen, id[idlen]
 */
#ifndef IBC_TCP_H
#define IBC_TCP_H

#define IBC_TCP_VERSION 1
#define IBC_TCP_HDR_LEN 16
#define IBC_TCP_MAGIC 0x54434249u /* "IBCT" */
#define IBC_TCP_HELLO_MIN 21u     /* HELLO payload without the id */
#define IBC_TCP_HELLO_MAX 128u

enum ibc_tcp_frame { IBC_TCP_HELLO = 1, IBC_TCP_DATA = 2, IBC_TCP_CREDIT = 3 };

#define IBC_TCP_DEFAULT_CHUNK (512u * 1024u)
#define IBC_TCP_DEFAULT_SLOTS 4u
#define IBC_TCP_DEFAULT_SPIN_US 50u /* IBCOMM_TCP_SPIN_US */
#define IBC_TCP_MAX_CHUNK (1u << 30)
#define IBC_TCP_MAX_SLOTS 1024u

#endif
