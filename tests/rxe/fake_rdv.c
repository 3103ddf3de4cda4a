/*
 * A file-based stand-in for the rendezvous (lib/rendezvous.c) so the RDMA transport is
 * tested alone: ibc_rdv_put writes DIR/<key with '/' -> '_'> atomically (rename), and
 * ibc_rdv_get polls for it until the deadline. Processes forked from one parent share DIR.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ibc.h"
#include "fake_rdv.h"

struct ibc_rdv {
	char dir[256];
};

struct ibc_rdv *fake_rdv_new(const char *dir)
{
	struct ibc_rdv *r = calloc(1, sizeof(*r));

	if (r)
		snprintf(r->dir, sizeof(r->dir), "%s", dir);
	return r;
}

void fake_rdv_free(struct ibc_rdv *r)
{
	free(r);
}

static void key_path(const struct ibc_rdv *r, const char *key, char *path, size_t cap)
{
	int n = snprintf(path, cap, "%s/", r->dir);

	for (const char *k = key; *k && (size_t)n + 1 < cap; k++)
		path[n++] = *k == '/' ? '_' : *k;
	path[n] = 0;
}

ibcomm_status_t ibc_rdv_put(struct ibc_rdv *rdv, const char *key, const void *val, size_t len, char *err,
			    size_t errlen)
{
	char path[512], tmp[600];
	FILE *f;

	key_path(rdv, key, path, sizeof(path));
	snprintf(tmp, sizeof(tmp), "%s.tmp%d", path, (int)getpid());
	f = fopen(tmp, "wb");
	if (!f || fwrite(val, 1, len, f) != len || fclose(f) || rename(tmp, path)) {
		snprintf(err, errlen, "fake rendezvous: cannot write %s: %s", path, strerror(errno));
		return IBCOMM_ERR_RENDEZVOUS;
	}
	return IBCOMM_OK;
}

ibcomm_status_t ibc_rdv_get(struct ibc_rdv *rdv, const char *key, void *val, size_t cap, size_t *len,
			    ibc_deadline_t dl, char *err, size_t errlen)
{
	char path[512];

	key_path(rdv, key, path, sizeof(path));
	for (;;) {
		FILE *f = fopen(path, "rb");

		if (f) {
			size_t n = fread(val, 1, cap, f);
			long total;

			fseek(f, 0, SEEK_END);
			total = ftell(f);
			fclose(f);
			*len = total > 0 ? (size_t)total : n;
			return IBCOMM_OK;
		}
		if (dl && ibc_now_ms() >= dl) {
			snprintf(err, errlen, "fake rendezvous: key %s did not appear in time", key);
			return IBCOMM_ERR_TIMEOUT;
		}
		usleep(5000);
	}
}

ibcomm_status_t ibc_rdv_get_cancel(struct ibc_rdv *rdv, const char *key, void *val, size_t cap, size_t *len,
				   ibc_deadline_t dl, const atomic_int *cancel, char *err, size_t errlen)
{
	(void)cancel;
	return ibc_rdv_get(rdv, key, val, cap, len, dl, err, errlen);
}

/* No failure notices in the fake: nobody is ever reported dead. */
int ibc_rdv_fd(struct ibc_rdv *rdv)
{
	(void)rdv;
	return -1;
}

unsigned ibc_rdv_poll(struct ibc_rdv *rdv, bool readable)
{
	(void)rdv;
	(void)readable;
	return 0;
}

bool ibc_rdv_dead(struct ibc_rdv *rdv, int rank, char *why, size_t whylen)
{
	(void)rdv;
	(void)rank;
	(void)why;
	(void)whylen;
	return false;
}
