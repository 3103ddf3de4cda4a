/*
 * The address the TCP transport listens on: one decision, made here on plain inputs (the
 * settings and an interface list), used by the transport (tcp.c) and by ibcomm_ping, so
 * that the diagnosis names the address the library really takes.
 */
#ifndef IBC_TCP_ADDR_H
#define IBC_TCP_ADDR_H

#include <ifaddrs.h>
#include <net/if.h>
#include <stdbool.h>
#include <sys/socket.h>

#include "ibc.h"

typedef struct ibc_tcp_addr_choice {
	char ifname[IF_NAMESIZE];   /* the interface of the address; "lo" for loopback */
	struct sockaddr_storage ss; /* the address, port 0 */
	socklen_t sl;
	bool fallback;              /* no interface is up besides loopback: 127.0.0.1 */
} ibc_tcp_addr_choice_t;

/*
 * ifname (IBCOMM_IFNAME; "" or NULL: unset): its first IPv4 address, else its first IPv6
 * one. Unset: loopback when the rendezvous `root` is on loopback (::1 for [::1]), else the
 * first IPv4 address of an interface that is up and not loopback, else 127.0.0.1
 * (fallback). ifa is the interface list (getifaddrs, or one recorded by a test).
 * Returns IBCOMM_OK, or IBCOMM_ERR_INVALID with why naming IBCOMM_IFNAME (no such
 * interface, with the list; or no address on it).
 */
IBC_HIDDEN ibcomm_status_t ibc_tcp_choose_addr(const char *ifname, const char *root, const struct ifaddrs *ifa,
					       ibc_tcp_addr_choice_t *c, char *why, size_t whylen);

#endif
