/*
 * What this host's RDMA devices look like: devices, ports with state, link layer and MTU,
 * and each port's GID table with types, netdevs and the IPv4 prefix of the address behind
 * each IPv4-mapped GID. Read through libibverbs and /sys/class/infiniband; returned as
 * plain structs so that verbs types stay in transports/rdma/. rdma_info_stub.c answers
 * "not built with rdma-core" instead.
 *
 * ibc_rdma_choose() (rdma_choice.c) makes the RDMA transport's choice of device, port and
 * GID on such a description: the transport (rdma_dev.c) and ibcomm_ping both call it, on the
 * same reading, so the diagnosis names what the library really uses.
 */
#ifndef IBC_RDMA_INFO_H
#define IBC_RDMA_INFO_H

#include <stdbool.h>
#include <stdint.h>

#include "ibc.h"
#include "rdma_proto.h"

#define IBC_RI_MAX_DEVS 8
#define IBC_RI_MAX_PORTS 4
#define IBC_RI_MAX_GIDS 128 /* non-empty entries recorded per port */
#define IBC_RI_EMPTY_RUN 32 /* a table is read until this many empty entries in a row */

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
	int ngids;         /* non-empty entries in gids[], by index */
	ibc_ri_gid_t gids[IBC_RI_MAX_GIDS];
	char netdev[32];   /* netdev of the first GID that names one */
} ibc_ri_port_t;

typedef struct ibc_ri_dev {
	char name[64];
	int open_errno;    /* ibv_open_device failed with it (no ports read); 0 otherwise */
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
 * why). A GID table is read until IBC_RI_EMPTY_RUN empty entries in a row, but at least up
 * to gid_index (IBCOMM_GID_INDEX; -1: automatic). Returns IBCOMM_OK, or
 * IBCOMM_ERR_INVALID when sys is NULL.
 */
IBC_HIDDEN ibcomm_status_t ibc_rdma_info_query(ibc_rdma_sys_t *sys, int gid_index);

typedef struct ibc_rdma_choice {
	int dev;           /* index in sys->devs */
	int port_idx;      /* index in sys->devs[dev].ports */
	int port;          /* 1-based port number */
	int link_layer;    /* IBC_RDMA_LL_IB or IBC_RDMA_LL_ETH */
	int gid_index;     /* the GID the transport uses (InfiniBand: gid_index, else 0) */
	uint8_t gid[16];   /* its value; zero when the table does not hold it (InfiniBand) */
} ibc_rdma_choice_t;

/*
 * The RDMA transport's choice on sys with the settings device (IBCOMM_DEVICE name, "" or
 * NULL: any), ib_port (its :port, 0: the first active) and gid_index (-1: automatic):
 * the named device, or the first device with an active port; that port; and on Ethernet
 * (RoCE) the GID ibc_rdma_choose_gid() picks from the table. Returns IBCOMM_OK, or with why:
 * IBCOMM_ERR_INVALID (a setting matches nothing: no such device, port, or GID index),
 * IBCOMM_ERR_UNSUPPORTED (no device, no active port, no routable GID), IBCOMM_ERR_SYSTEM
 * (the named device cannot be opened).
 */
IBC_HIDDEN ibcomm_status_t ibc_rdma_choose(const ibc_rdma_sys_t *sys, const char *device, int ib_port, int gid_index,
					   ibc_rdma_choice_t *c, char *why, size_t whylen);

#endif
