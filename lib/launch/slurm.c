/*
 * Slurm without PMI (srun --mpi=none): rank and size from SLURM_PROCID and
 * SLURM_STEP_NUM_TASKS (SLURM_NTASKS), the rendezvous at the first host of
 * SLURM_STEP_NODELIST, on the first port of SLURM_STEP_RESV_PORTS (srun --resv-ports) or
 * else IBC_SLURM_PORT_BASE + (job id * 16 + step id) mod IBC_SLURM_PORT_SPAN: every rank
 * computes the same address without talking. Two steps of one job running at once with the
 * same port are told apart by the step id; a port taken by another program is an error.
 */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "launch.h"

ibcomm_status_t ibc_slurm_detect(struct ibc_launch *l, char *err, size_t errlen)
{
	const char *r = ibc_launch_env("SLURM_PROCID"), *nl = ibc_launch_env("SLURM_STEP_NODELIST");
	const char *szname = ibc_launch_env("SLURM_STEP_NUM_TASKS") ? "SLURM_STEP_NUM_TASKS" : "SLURM_NTASKS";
	const char *sz = ibc_launch_env(szname), *lr = ibc_launch_env("SLURM_LOCALID");
	ibcomm_status_t st;
	long v;

	if (!r || !nl)
		return IBCOMM_OK;
	if (!sz) {
		snprintf(err, errlen, "Slurm: SLURM_PROCID is set but neither SLURM_STEP_NUM_TASKS nor SLURM_NTASKS is");
		return IBCOMM_ERR_INVALID;
	}
	st = ibc_launch_num("Slurm", "SLURM_PROCID", r, 0, INT_MAX - 1, &v, err, errlen);
	if (st)
		return st;
	l->rank = (int)v;
	st = ibc_launch_num("Slurm", szname, sz, 1, INT_MAX, &v, err, errlen);
	if (st)
		return st;
	l->size = (int)v;
	if (l->rank >= l->size) {
		snprintf(err, errlen, "Slurm: SLURM_PROCID=%s is not below %s=%s", r, szname, sz);
		return IBCOMM_ERR_INVALID;
	}
	l->local_rank = l->local_size = -1;
	if (lr) {
		st = ibc_launch_num("Slurm", "SLURM_LOCALID", lr, 0, INT_MAX - 1, &v, err, errlen);
		if (st)
			return st;
		l->local_rank = (int)v;
	}
	l->kind = IBC_LAUNCH_SLURM;
	l->name = "Slurm";
	return IBCOMM_OK;
}

ibcomm_status_t ibc_slurm_port(const char *job, const char *step, const char *resv, int *port, char *err,
			       size_t errlen)
{
	ibcomm_status_t st;
	long j, s;

	if (resv) { /* "12000-12010" or "12000,12005": the first port is this step's */
		char *end;
		long p;

		errno = 0;
		p = strtol(resv, &end, 10);
		if (!isdigit((unsigned char)resv[0]) || errno || p < 1 || p > 65535 ||
		    (*end && *end != '-' && *end != ',')) {
			snprintf(err, errlen,
				 "Slurm: SLURM_STEP_RESV_PORTS='%s' is not a port range (expected e.g. 12000-12010)", resv);
			return IBCOMM_ERR_INVALID;
		}
		*port = (int)p;
		return IBCOMM_OK;
	}
	if (!job || !step) {
		snprintf(err, errlen, "Slurm: %s is not set: cannot derive the rendezvous port (set IBCOMM_ROOT)",
			 job ? "SLURM_STEP_ID" : "SLURM_JOB_ID");
		return IBCOMM_ERR_INVALID;
	}
	st = ibc_launch_num("Slurm", "SLURM_JOB_ID", job, 0, LONG_MAX / 32, &j, err, errlen);
	if (st)
		return st;
	/* batch and extern steps are large sentinels (0xfffffffb...): fold them in */
	st = ibc_launch_num("Slurm", "SLURM_STEP_ID", step, 0, 0xffffffffL, &s, err, errlen);
	if (st)
		return st;
	*port = IBC_SLURM_PORT_BASE + (int)((j * 16 + s % 16) % IBC_SLURM_PORT_SPAN);
	return IBCOMM_OK;
}

/* Whether name is this host (short names compared). */
static bool is_this_host(const char *name)
{
	char me[256];
	size_t mn, nn;

	if (gethostname(me, sizeof(me)))
		return false;
	me[sizeof(me) - 1] = '\0';
	/* compare short names: Slurm node names are usually short, host names sometimes not */
	mn = strcspn(me, ".");
	nn = strcspn(name, ".");
	return mn == nn && !strncmp(me, name, mn);
}

ibcomm_status_t ibc_slurm_root(const struct ibc_launch *l, char *host, size_t hostlen, int *port, char *err,
			       size_t errlen)
{
	const char *nl = ibc_launch_env("SLURM_STEP_NODELIST");
	char why[160], **hosts;
	ibcomm_status_t st;
	size_t n;

	st = ibc_hostlist_expand(nl, &hosts, &n, why, sizeof(why));
	if (st) {
		snprintf(err, errlen, "Slurm: SLURM_STEP_NODELIST='%.200s' is not a host list: %s", nl ? nl : "", why);
		return st;
	}
	if (strlen(hosts[0]) >= hostlen) {
		ibc_hostlist_free(hosts, n);
		snprintf(err, errlen, "Slurm: the first host of SLURM_STEP_NODELIST is too long");
		return IBCOMM_ERR_INVALID;
	}
	snprintf(host, hostlen, "%s", hosts[0]);
	ibc_hostlist_free(hosts, n);
	st = ibc_slurm_port(ibc_launch_env("SLURM_JOB_ID"), ibc_launch_env("SLURM_STEP_ID"), ibc_launch_env("SLURM_STEP_RESV_PORTS"), port, err,
			    errlen);
	if (st)
		return st;
	if (l->rank == 0 && !is_this_host(host)) {
		char me[256] = "?";

		gethostname(me, sizeof(me));
		me[sizeof(me) - 1] = '\0';
		snprintf(err, errlen,
			 "Slurm: rank 0 runs on '%s', not on '%s', the first host of SLURM_STEP_NODELIST where the other ranks look for the rendezvous (a task distribution that moves rank 0 away? use srun -m block, or set IBCOMM_ROOT)",
			 me, host);
		return IBCOMM_ERR_RENDEZVOUS;
	}
	return IBCOMM_OK;
}
