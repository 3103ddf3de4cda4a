/*
 * PMIx (Open MPI's mpirun, srun --mpi=pmix): rank, size, local rank and local size from the
 * PMIx server of the launcher; rank 0's rendezvous address published with PMIx_Put and
 * PMIx_Commit and read by the others after a PMIx_Fence that has the init deadline
 * (PMIX_TIMEOUT). PMIx is initialised once per process and finalised at exit (launchers take
 * a process that initialised PMIx and exits without finalising as failed).
 */
#include <pmix.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "launch.h"

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static bool inited;
static pmix_proc_t me;

bool ibc_pmix_present(void)
{
	return true;
}

static void finalize(void)
{
	PMIx_Finalize(NULL, 0);
}

static ibcomm_status_t pmix_up(char *err, size_t errlen)
{
	pmix_status_t rc;

	if (inited)
		return IBCOMM_OK;
	rc = PMIx_Init(&me, NULL, 0);
	if (rc != PMIX_SUCCESS) {
		snprintf(err, errlen,
			 "PMIx: PMIx_Init failed: %s (PMIX_RANK/PMIX_NAMESPACE are set, but the launcher's PMIx server cannot be reached; unset them or set IBCOMM_ROOT)",
			 PMIx_Error_string(rc));
		return IBCOMM_ERR_RENDEZVOUS;
	}
	inited = true;
	atexit(finalize);
	return IBCOMM_OK;
}

/* A number from the PMIx job data; -1 when absent. */
static long get_num(const pmix_proc_t *p, const char *key)
{
	pmix_value_t *v = NULL;
	long n = -1;

	if (PMIx_Get(p, key, NULL, 0, &v) != PMIX_SUCCESS || !v)
		return -1;
	switch (v->type) {
	case PMIX_UINT32:
		n = v->data.uint32;
		break;
	case PMIX_UINT16:
		n = v->data.uint16;
		break;
	case PMIX_INT:
		n = v->data.integer;
		break;
	case PMIX_PROC_RANK:
		n = v->data.rank;
		break;
	default:
		break;
	}
	PMIX_VALUE_RELEASE(v);
	return n;
}

ibcomm_status_t ibc_pmix_detect(struct ibc_launch *l, char *err, size_t errlen)
{
	pmix_proc_t wild;
	ibcomm_status_t st;
	long size;

	pthread_mutex_lock(&lock);
	st = pmix_up(err, errlen);
	if (st)
		goto out;
	PMIX_LOAD_PROCID(&wild, me.nspace, PMIX_RANK_WILDCARD);
	size = get_num(&wild, PMIX_JOB_SIZE);
	if (size < 1 || me.rank >= (pmix_rank_t)size) {
		snprintf(err, errlen, "PMIx: the launcher gives rank %u but no usable job size (PMIX_JOB_SIZE)",
			 (unsigned)me.rank);
		st = IBCOMM_ERR_RENDEZVOUS;
		goto out;
	}
	l->kind = IBC_LAUNCH_PMIX;
	l->name = "PMIx";
	l->rank = (int)me.rank;
	l->size = (int)size;
	l->local_rank = (int)get_num(&me, PMIX_LOCAL_RANK);
	l->local_size = (int)get_num(&wild, PMIX_LOCAL_SIZE);
out:
	pthread_mutex_unlock(&lock);
	return st;
}

ibcomm_status_t ibc_pmix_exchange(const struct ibc_launch *l, unsigned gen, char *root, size_t rootlen,
				  long timeout_ms, char *err, size_t errlen)
{
	pmix_proc_t wild, p0;
	pmix_info_t info[2];
	pmix_value_t v, *got = NULL;
	pmix_status_t rc;
	bool collect = true;
	int secs = timeout_ms > 0 ? (int)IBC_MAX(1, (timeout_ms + 999) / 1000) : 0;
	char key[64];
	ibcomm_status_t st = IBCOMM_ERR_RENDEZVOUS;

	snprintf(key, sizeof(key), "ibcomm.root.%u", gen);
	pthread_mutex_lock(&lock);
	if (l->rank == 0) {
		PMIX_VALUE_LOAD(&v, root, PMIX_STRING);
		rc = PMIx_Put(PMIX_GLOBAL, key, &v);
		PMIX_VALUE_DESTRUCT(&v);
		if (rc == PMIX_SUCCESS)
			rc = PMIx_Commit();
		if (rc != PMIX_SUCCESS) {
			snprintf(err, errlen, "PMIx: rank 0 cannot publish the rendezvous address: %s",
				 PMIx_Error_string(rc));
			goto out;
		}
	}
	PMIX_LOAD_PROCID(&wild, me.nspace, PMIX_RANK_WILDCARD);
	PMIX_INFO_LOAD(&info[0], PMIX_COLLECT_DATA, &collect, PMIX_BOOL);
	PMIX_INFO_LOAD(&info[1], PMIX_TIMEOUT, &secs, PMIX_INT);
	rc = PMIx_Fence(&wild, 1, info, secs ? 2 : 1);
	PMIX_INFO_DESTRUCT(&info[0]);
	PMIX_INFO_DESTRUCT(&info[1]);
	if (rc != PMIX_SUCCESS) {
		snprintf(err, errlen, "PMIx: PMIx_Fence over the %d ranks failed%s: %s", l->size,
			 rc == PMIX_ERR_TIMEOUT ? " (timed out: a rank did not start or does not call ibcomm_init)" : "",
			 PMIx_Error_string(rc));
		if (rc == PMIX_ERR_TIMEOUT)
			st = IBCOMM_ERR_TIMEOUT;
		goto out;
	}
	if (l->rank != 0) {
		PMIX_LOAD_PROCID(&p0, me.nspace, 0);
		rc = PMIx_Get(&p0, key, NULL, 0, &got);
		if (rc != PMIX_SUCCESS || !got || got->type != PMIX_STRING || !got->data.string ||
		    strlen(got->data.string) >= rootlen) {
			snprintf(err, errlen, "PMIx: no usable rendezvous address from rank 0 (%s): %s", key,
				 rc != PMIX_SUCCESS ? PMIx_Error_string(rc) : "wrong type or too long");
			if (got)
				PMIX_VALUE_RELEASE(got);
			goto out;
		}
		snprintf(root, rootlen, "%s", got->data.string);
		PMIX_VALUE_RELEASE(got);
	}
	st = IBCOMM_OK;
out:
	pthread_mutex_unlock(&lock);
	return st;
}
