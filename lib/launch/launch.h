/*
 * Launchers: rank, size and the rendezvous address from whatever started the process, so
 * that nobody types IBCOMM_ROOT. Detection order (first that applies wins; IBCOMM_* and the
 * config struct still override everything):
 *
 *	1. PMIx    PMIX_RANK or PMIX_NAMESPACE set (Open MPI's mpirun, srun --mpi=pmix)
 *	2. PMI-1   PMI_FD set (MPICH's Hydra mpiexec)
 *	3. Slurm   SLURM_STEP_NODELIST and SLURM_PROCID set (srun --mpi=none)
 *
 * With PMIx and PMI-1, rank 0 binds port 0 on the interface IBCOMM_IFNAME rules choose and
 * publishes the address; the others read it after a fence/barrier. With Slurm alone, the
 * address is the first host of SLURM_STEP_NODELIST and a port derived from the job and step
 * ids (or the first of SLURM_STEP_RESV_PORTS).
 */
#ifndef IBC_LAUNCH_H
#define IBC_LAUNCH_H

#include "ibc.h"

enum ibc_launcher { IBC_LAUNCH_NONE, IBC_LAUNCH_PMIX, IBC_LAUNCH_PMI1, IBC_LAUNCH_SLURM };

struct ibc_launch {
	enum ibc_launcher kind;
	const char *name;          /* "PMIx", "PMI-1", "Slurm" */
	int rank, size;
	int local_rank, local_size; /* -1 when the launcher does not say */
};

/* Slurm without PMI: ports derived from the job and step ids lie in [BASE, BASE + SPAN). */
#define IBC_SLURM_PORT_BASE 21000
#define IBC_SLURM_PORT_SPAN 4000

/*
 * Finds the launcher that started this process and fills l (kind IBC_LAUNCH_NONE when none).
 * A launcher variable that is present but malformed is IBCOMM_ERR_INVALID naming it.
 */
/* A launcher's variable: its value, or NULL when unset or empty (launch_env.c). */
IBC_HIDDEN const char *ibc_launch_env(const char *name);
/* v as a decimal number in lo..hi, else IBCOMM_ERR_INVALID naming the launcher and the variable. */
IBC_HIDDEN ibcomm_status_t ibc_launch_num(const char *launcher, const char *name, const char *v, long lo, long hi,
					  long *out, char *err, size_t errlen);
IBC_HIDDEN ibcomm_status_t ibc_launch_detect(struct ibc_launch *l, char *err, size_t errlen);

/*
 * The rendezvous address of the job, agreed through launcher l: root gets "host:port"; on
 * rank 0, *listen_fd gets a socket already listening there (for ibc_settings_t.listen_fd),
 * elsewhere -1. Every rank of the job must call it the same number of times.
 */
IBC_HIDDEN ibcomm_status_t ibc_launch_root(const struct ibc_launch *l, const char *ifname, long timeout_ms,
					   char *root, size_t rootlen, int *listen_fd, char *err, size_t errlen);

/*
 * Binds port `port` (0: any) on the address IBCOMM_IFNAME rules choose (ifname, else the first
 * IPv4 address of an interface that is up and not loopback, else 127.0.0.1; wildcard when
 * `any`) and listens. Returns the socket and its "host:port" (for others to connect to).
 */
IBC_HIDDEN ibcomm_status_t ibc_launch_listen(const char *ifname, bool any, int port, int *fd, char *addr,
					     size_t addrlen, char *err, size_t errlen);

/* launch/pmix.c (or pmix_stub.c when built without PMIx) */
IBC_HIDDEN bool ibc_pmix_present(void);
IBC_HIDDEN ibcomm_status_t ibc_pmix_detect(struct ibc_launch *l, char *err, size_t errlen);
IBC_HIDDEN ibcomm_status_t ibc_pmix_exchange(const struct ibc_launch *l, unsigned gen, char *root, size_t rootlen,
					     long timeout_ms, char *err, size_t errlen);

/* launch/pmi1.c: PMI-1 over PMI_FD */
#define IBC_PMI1_MAX_LINE 1024
#define IBC_PMI1_MAX_PAIRS 16
struct ibc_pmi1_msg {
	int npairs;
	struct {
		const char *key, *val; /* point into the decoded line (not NUL-terminated) */
		size_t keylen, vallen;
	} pair[IBC_PMI1_MAX_PAIRS];
};
/*
 * Decodes one PMI-1 reply line buf[0..len) (without its '\n'): space-separated key=value
 * pairs, the first of them cmd=...; printable ASCII only. Returns IBCOMM_OK or
 * IBCOMM_ERR_INVALID with *why set.
 */
IBC_HIDDEN ibcomm_status_t ibc_pmi1_decode(const char *buf, size_t len, struct ibc_pmi1_msg *m, const char **why);
/* The value of key in m, copied NUL-terminated into out; false when absent or too long. */
IBC_HIDDEN bool ibc_pmi1_get(const struct ibc_pmi1_msg *m, const char *key, char *out, size_t cap);
IBC_HIDDEN ibcomm_status_t ibc_pmi1_detect(struct ibc_launch *l, char *err, size_t errlen);
IBC_HIDDEN ibcomm_status_t ibc_pmi1_exchange(const struct ibc_launch *l, unsigned gen, char *root, size_t rootlen,
					     long timeout_ms, char *err, size_t errlen);

/* launch/slurm.c */
IBC_HIDDEN ibcomm_status_t ibc_slurm_detect(struct ibc_launch *l, char *err, size_t errlen);
/* host and port of the rendezvous of this step; rank 0 also checks it runs on that host. */
IBC_HIDDEN ibcomm_status_t ibc_slurm_root(const struct ibc_launch *l, char *host, size_t hostlen, int *port,
					  char *err, size_t errlen);
/* The port of job `job`, step `step`, from SLURM_STEP_RESV_PORTS (resv, may be NULL) or derived. */
IBC_HIDDEN ibcomm_status_t ibc_slurm_port(const char *job, const char *step, const char *resv, int *port,
					  char *err, size_t errlen);

/* launch/hostlist.c: Slurm hostlist expressions ("node[01-04,07],login1") */
#define IBC_HOSTLIST_MAX 65536
/*
 * Expands list into *hosts (an array of *n malloc'ed strings; free with ibc_hostlist_free).
 * Returns IBCOMM_OK, IBCOMM_ERR_INVALID with a reason in why, or IBCOMM_ERR_NOMEM.
 */
IBC_HIDDEN ibcomm_status_t ibc_hostlist_expand(const char *list, char ***hosts, size_t *n, char *why,
					       size_t whylen);
IBC_HIDDEN void ibc_hostlist_free(char **hosts, size_t n);

#endif
