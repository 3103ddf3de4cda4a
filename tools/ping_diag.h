/*
 * ibcomm_ping's per-rank report, its wire form, and the diagnoses: pure functions on
 * plain data (recorded GID tables, MTUs, limits), unit tested without a device.
 */
#ifndef PING_DIAG_H
#define PING_DIAG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rdma_proto.h"

#define PING_MAX_PORTS 4     /* (device, port) pairs reported per rank */
#define PING_MAX_GIDS 16     /* non-empty GID entries reported per port */
#define PING_MAX_PROBLEMS 8  /* problems a rank reports about itself */
#define PING_REPORT_BYTES 16384 /* fixed size of one encoded report (gathered to rank 0) */
#define PING_MEMLOCK_MIN (64ull << 20)
#define PING_MEMLOCK_UNLIMITED UINT64_MAX
#define PING_PORT_ACTIVE 4 /* ibv_port_state numbering */

struct ping_problem {
	int rank;         /* the rank it concerns; -1: the job */
	int peer;         /* the other rank of a pair problem; -1: none */
	char what[384];   /* what is wrong, with the names and values involved */
	char fix[320];    /* the change to make, in one line */
};

struct ping_problems {
	int n;
	int dropped;      /* problems not recorded for lack of room */
	struct ping_problem *v;
	int cap;
};

struct ping_gid {
	ibc_rdma_gid_entry_t e;  /* index, raw GID, type */
	uint8_t prefix;          /* IPv4-mapped: prefix length of the address on its netdev; 0 unknown */
};

struct ping_port {
	char dev[64];
	int port;
	int state;        /* ibv_port_state numbering: 4 = ACTIVE */
	int link_layer;   /* IBC_RDMA_LL_IB / IBC_RDMA_LL_ETH / 0 */
	int active_mtu;   /* IB MTU enum */
	int max_mtu;
	char netdev[32];
	int ngids;
	struct ping_gid gids[PING_MAX_GIDS];
	int gid_used;     /* GID index the RDMA transport would use; -1: none */
};

struct ping_report {
	int rank;
	char host[64];
	char tcp_if[32];      /* interface of the TCP transport's address; "" unknown */
	char tcp_addr[64];    /* the address it listens on (port 0 here) */
	uint64_t memlock;     /* RLIMIT_MEMLOCK soft limit in bytes; PING_MEMLOCK_UNLIMITED */
	bool privileged;      /* root or CAP_IPC_LOCK: the limit does not apply */
	bool rdma_built;      /* the library has the RDMA transport */
	int ndevs;            /* RDMA devices found */
	int nports;
	struct ping_port ports[PING_MAX_PORTS];
	int use;              /* index in ports[] the RDMA transport would use; -1 none */
	char rdma_note[256];
	int nproblems;
	struct ping_problem problems[PING_MAX_PROBLEMS];
};

/* Appends a problem (fix then the printf-style description); counts it as dropped when full. */
void ping_problem_add(struct ping_problems *pl, int rank, int peer, const char *fix, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));

/* "RoCEv2", "RoCEv1", "IB", "?" */
const char *ping_gid_type_str(int type);
/* "DOWN", "INIT", "ARMED", "ACTIVE", ... (ibv_port_state numbering) */
const char *ping_port_state_str(int state);
/* "IPv4", "link-local", "IPv6" */
const char *ping_gid_family_str(const uint8_t gid[16]);

/*
 * The GID the transport would use on port p with IBCOMM_GID_INDEX = forced (-1: automatic),
 * through ibc_rdma_choose_gid(); sets p->gid_used, and records as problems the GIDs that
 * cannot work across hosts (link-local fe80:: only or forced, RoCEv1 where v2 exists or
 * only RoCEv1, empty table, a forced index that is empty or missing). Returns the number
 * of problems added.
 */
int ping_diag_gids(struct ping_port *p, int forced, int rank, struct ping_problems *pl);
/*
 * The same diagnosis with the choice already made (by the library on the whole table, see
 * ibc_rdma_choose): idx is the GID index used with IBCOMM_GID_INDEX = forced (-1: none,
 * why says why), autoidx the automatic one (-1: none). p->gids must hold those entries.
 */
int ping_diag_gids_chosen(struct ping_port *p, int forced, int idx, int autoidx, const char *why, int rank,
			  struct ping_problems *pl);

/* A host whose RDMA devices have no ACTIVE port (an ACTIVE port not chosen is diagnosed elsewhere). */
int ping_diag_ports(const struct ping_report *r, struct ping_problems *pl);

/* Memlock below PING_MEMLOCK_MIN (not unlimited, not privileged) on a host with RDMA. */
int ping_diag_memlock(uint64_t memlock, bool privileged, bool has_rdma, int rank, struct ping_problems *pl);

/*
 * Between the ports two ranks would use: link layers that differ, RoCE GID types that
 * differ, IPv4 GIDs on different subnets, active MTUs that differ. rdma_ok: the pair was
 * measured over RDMA and worked: RoCEv2 GIDs on different subnets are then routed (an L3
 * fabric), not a problem.
 */
int ping_diag_pair(const struct ping_report *a, const struct ping_report *b, bool rdma_ok, struct ping_problems *pl);

/* The port a report says the RDMA transport would use, or NULL. */
const struct ping_port *ping_used_port(const struct ping_report *r);
/* The entry of p with GID index idx, or NULL. */
const struct ping_gid *ping_port_gid(const struct ping_port *p, int idx);

/* Encodes r into buf (exactly PING_REPORT_BYTES, zero padded). False when it does not fit. */
bool ping_report_encode(const struct ping_report *r, void *buf, size_t cap);
/* Decodes and bounds-checks; false with a reason in why. *r is written only on success. */
bool ping_report_decode(const void *buf, size_t len, struct ping_report *r, char *why, size_t whylen);

#endif
