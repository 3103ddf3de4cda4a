/*
 * A stand-in for the rendezvous in transport tests: ibc_rdv_put/get backed by one file per
 * key in a directory shared by forked processes. put writes a temporary file and renames it,
 * so get never sees half a value; get polls (every few ms) until the key exists or the
 * deadline passes.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ibc.h"
#include "fake_rdv.h"

struct ibc_rdv {
	char dir[256];
};

struct ibc_rdv *fake_rdv_new(const char *dir)
{
	struct ibc_rdv *rdv = calloc(1, sizeof(*rdv));

	if (rdv)
		snprintf(rdv->dir, sizeof(rdv->dir), "%s", dir);
	return rdv;
}

void fake_rdv_free(struct ibc_rdv *rdv)
{
	free(rdv);
}

static void key_path(const struct ibc_rdv *rdv, const char *key, char *path, size_t cap)
{
	size_t n = (size_t)snprintf(path, cap, "%s/", rdv->dir);

	for (; *key && n + 1 < cap; key++)
		path[n++] = *key == '/' ? '%' : *key;
	path[n] = '\0';
}

ibcomm_status_t ibc_rdv_put(struct ibc_rdv *rdv, const char *key, const void *val, size_t len, char *err,
			    size_t errlen)
{
	char path[512], tmp[600];
	int fd;

	key_path(rdv, key, path, sizeof(path));
	snprintf(tmp, sizeof(tmp), "%s.tmp%d", path, (int)getpid());
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (fd < 0 || write(fd, val, len) != (ssize_t)len || close(fd) || rename(tmp, path)) {
		snprintf(err, errlen, "fake rendezvous: writing %s: %s", path, strerror(errno));
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
		int fd = open(path, O_RDONLY);

		if (fd >= 0) {
			ssize_t n = read(fd, val, cap);

			close(fd);
			if (n < 0) {
				snprintf(err, errlen, "fake rendezvous: reading %s: %s", path, strerror(errno));
				return IBCOMM_ERR_RENDEZVOUS;
			}
			*len = (size_t)n;
			return IBCOMM_OK;
		}
		if (ibc_deadline_left(dl) == 0) {
			snprintf(err, errlen, "fake rendezvous: timed out waiting for key %s", key);
			return IBCOMM_ERR_TIMEOUT;
		}
		poll(NULL, 0, 5);
	}
}

/* No failure notices from the file-backed rendezvous: nothing to watch, nobody reported dead. */
ibcomm_status_t ibc_rdv_get_cancel(struct ibc_rdv *rdv, const char *key, void *val, size_t cap, size_t *len,
				   ibc_deadline_t dl, const atomic_int *cancel, char *err, size_t errlen)
{
	(void)cancel;
	return ibc_rdv_get(rdv, key, val, cap, len, dl, err, errlen);
}

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
