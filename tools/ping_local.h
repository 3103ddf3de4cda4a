/*
 * ibcomm_ping's view of this rank: the settings as the library reads them, and the TCP
 * address and RDMA device, port and GID the library would choose, through the library's
 * own decisions (ibc_settings_load, ibc_tcp_choose_addr, ibc_rdma_choose) on inputs
 * passed in (the host's, or recorded ones in tests).
 */
#ifndef PING_LOCAL_H
#define PING_LOCAL_H

#include <ifaddrs.h>
#include <stdbool.h>

#include "ibc.h"
#include "ping_diag.h"
#include "rdma_info.h"

/*
 * The settings of a communicator of this process with rendezvous root (any other variable
 * from the environment, as ibcomm_init reads them). A bad value is recorded as a problem
 * naming it (the library's message), and the defaults are used for the report.
 */
void ping_settings(const char *root, int rank, ibc_settings_t *set, struct ping_problems *pl);

/* Fills r->tcp_if/tcp_addr with the TCP transport's choice on ifa; false (and a problem) when IBCOMM_IFNAME cannot work. */
bool ping_tcp_choice(const ibc_settings_t *set, const struct ifaddrs *ifa, struct ping_report *r,
		     struct ping_problems *pl);

/*
 * Fills r->ports (what the report shows), r->use and each port's gid_used with the RDMA
 * transport's choice on sys, and records the problems of the device and GID settings.
 */
void ping_rdma_choice(const ibc_settings_t *set, const ibc_rdma_sys_t *sys, struct ping_report *r,
		      struct ping_problems *pl);

#endif
