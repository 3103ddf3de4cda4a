/* What every bootstrap gets for free, built on its put/get (bootstrap.h). */
#include <stdio.h>

#include "bootstrap.h"
#include "ibc.h"

ibcomm_status_t ibc_boot_allgather(ibc_boot_t *b, const char *ns, int rank, int n, const void *mine, size_t len,
				   void *all, size_t stride, size_t *lens, ibc_deadline_t dl, const atomic_int *cancel,
				   char *err, size_t errlen)
{
	char key[IBC_BOOT_MAX_KEY + 1], why[IBC_ERRLEN];
	ibcomm_status_t st;

	if (snprintf(key, sizeof(key), "%s/%d", ns, rank) >= (int)sizeof(key)) {
		snprintf(err, errlen, "rank %d: all-gather namespace '%.40s...' too long", rank, ns);
		return IBCOMM_ERR_INVALID;
	}
	st = ibc_boot_put(b, key, mine, len, why, sizeof(why));
	if (st) {
		snprintf(err, errlen, "%s", why);
		return st;
	}
	for (int r = 0; r < n; r++) {
		size_t got = 0;

		snprintf(key, sizeof(key), "%s/%d", ns, r);
		st = ibc_boot_get(b, key, all ? (char *)all + (size_t)r * stride : NULL, all ? stride : 0, &got, dl,
				  cancel, why, sizeof(why));
		if (st) {
			snprintf(err, errlen, "waiting for rank %d's part of %s: %s", r, ns, why);
			return st;
		}
		if (lens)
			lens[r] = got;
	}
	return IBCOMM_OK;
}
