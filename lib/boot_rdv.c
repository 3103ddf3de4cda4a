/*
 * The rank-0 TCP rendezvous as a bootstrap (bootstrap.h): the ops table over rdv_client.c.
 */
#include "bootstrap.h"
#include "ibc.h"
#include "rendezvous.h"

static ibcomm_status_t rdv_put(ibc_boot_t *b, const char *key, const void *val, size_t len, char *err,
			       size_t errlen)
{
	return ibc_rdv_put(ibc_rdv_of(b), key, val, len, err, errlen);
}

static ibcomm_status_t rdv_get(ibc_boot_t *b, const char *key, void *val, size_t cap, size_t *len,
			       ibc_deadline_t dl, const atomic_int *cancel, char *err, size_t errlen)
{
	return ibc_rdv_get_cancel(ibc_rdv_of(b), key, val, cap, len, dl, cancel, err, errlen);
}

static void rdv_drop(ibc_boot_t *b, const char *ns, int nmembers)
{
	ibc_rdv_drop(ibc_rdv_of(b), ns, nmembers);
}

static int rdv_fd(ibc_boot_t *b)
{
	return ibc_rdv_fd(ibc_rdv_of(b));
}

static unsigned rdv_poll(ibc_boot_t *b, bool readable)
{
	return ibc_rdv_poll(ibc_rdv_of(b), readable);
}

static bool rdv_dead(ibc_boot_t *b, int rank, char *why, size_t whylen)
{
	return ibc_rdv_dead(ibc_rdv_of(b), rank, why, whylen);
}

static void rdv_interrupt(ibc_boot_t *b)
{
	ibc_rdv_interrupt(ibc_rdv_of(b));
}

static void rdv_ref(ibc_boot_t *b)
{
	ibc_rdv_ref(ibc_rdv_of(b));
}

static void rdv_unref(ibc_boot_t *b, bool abandon)
{
	if (abandon)
		ibc_rdv_abandon(ibc_rdv_of(b));
	else
		ibc_rdv_unref(ibc_rdv_of(b));
}

const struct ibc_boot_ops ibc_boot_rdv_ops = {
	.name = "rdv",
	.put = rdv_put,
	.get = rdv_get,
	.drop = rdv_drop,
	.fd = rdv_fd,
	.poll = rdv_poll,
	.dead = rdv_dead,
	.interrupt = rdv_interrupt,
	.ref = rdv_ref,
	.unref = rdv_unref,
};

ibcomm_status_t ibc_boot_rdv_open(const struct ibc_settings *s, ibc_deadline_t dl, ibc_boot_t **b, char *err,
				  size_t errlen)
{
	struct ibc_rdv *rdv;
	ibcomm_status_t st = ibc_rdv_open(s, dl, &rdv, err, errlen);

	if (!st)
		*b = ibc_rdv_boot(rdv);
	return st;
}
