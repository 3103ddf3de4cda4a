/*
 * What this host's RDMA devices look like, for diagnostics (ibcomm_ping): devices, ports
 * with state, link layer and MTU, and each port's GID table with types, netdevs and the
 * IPv4 prefix of the address behind each IPv4-mapped GID. Read through libibverbs and
 * /sys/class/infiniband; returned as plain structs so that verbs types stay in
 * transports/rdma/. rdma_info_stub.c answers "not built with rdma-core" instead.
 */
#ifndef IBC_RDMA_INFO_H
#define IBC_RDMA_INFO_H

#include <stdbool.h>
#include <stdint.h>

#include "ibc.h"
#include "rdma_proto.h"

#define IBC_RI_MAX_DEVS 8
#define IBC_RI_MAX_PORTS 4
#define IBC_RI_MAX_GIDS 32 /* non-empty entries recorded per port */

/* Port states, as enum ibv_port_state numbers them. */
enum { IBC_RI_PORT_DOWN = 1, IBC_RI_PORT_INIT = 2, IBC_RI_PORT_ARMED = 3, IBC_RI_PORT_ACTIVE = 4 };

typedef struct ibc_ri_gid {
	ibc_rdma_gid_entry_t e; /* index, raw GID, type */
	char netdev[32];        /* gid_attrs/ndevs/<index>; "" when unknown */
	uint8_t prefix;         /* IPv4-mapped GID: prefix length of that address on netdev; 0 unknown */
} ibc_ri_gid_t;

typedef struct ibc_ri_port {
	int port;          /* 1-based port number */
	int state;         /* IBC_RI_PORT_* (or another ibv_port_state value) */
	int link_layer;    /* IBC_RDMA_LL_IB, IBC_RDMA_LL_ETH, 0 unknown */
	int active_mtu;    /* IB MTU enum (1=256 .. 5=4096) */
	int max_mtu;
	uint16_t lid;
	int gid_tbl_len;   /* size of the hardware table */
	int ngids;         /* non-empty entries in gids[] */
	ibc_ri_gid_t gids[IBC_RI_MAX_GIDS];
	char netdev[32];   /* netdev of the first GID that names one */
} ibc_ri_port_t;

typedef struct ibc_ri_dev {
	char name[64];
	int nports;        /* ports recorded in ports[] */
	ibc_ri_port_t ports[IBC_RI_MAX_PORTS];
} ibc_ri_dev_t;

typedef struct ibc_rdma_sys {
	bool built;        /* this library was built with rdma-core */
	int ndevs;
	ibc_ri_dev_t devs[IBC_RI_MAX_DEVS];
	char note[256];    /* why the list is empty or incomplete; "" otherwise */
} ibc_rdma_sys_t;

/*
 * Fills *sys with what the host has. Having no device is not an error (ndevs 0, note says
 * why). Returns IBCOMM_OK, or IBCOMM_ERR_INVALID when sys is NULL.
 */
IBC_HIDDEN ibcomm_status_t ibc_rdma_info_query(ibc_rdma_sys_t *sys);

#endif
