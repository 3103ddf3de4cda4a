/*
 * A stand-in bootstrap (lib/bootstrap.h) for transport tests: put/get backed by one file per
 * key in a directory shared by forked processes. put writes a temporary file and renames it,
 * so get never sees half a value; get polls (every few ms) until the key exists, the
 * deadline passes or *cancel is set. No failure notices: nothing to watch, nobody dead.
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

struct fake_boot {
	ibc_boot_t base;
	char dir[256];
};

static void key_path(const struct fake_boot *f, const char *key, char *path, size_t cap)
{
	size_t n = (size_t)snprintf(path, cap, "%s/", f->dir);

	for (; *key && n + 1 < cap; key++)
		path[n++] = *key == '/' ? '%' : *key;
	path[n] = '\0';
}

static ibcomm_status_t fake_put(ibc_boot_t *b, const char *key, const void *val, size_t len, char *err,
				size_t errlen)
{
	char path[512], tmp[600];
	int fd;

	key_path((struct fake_boot *)b, key, path, sizeof(path));
	snprintf(tmp, sizeof(tmp), "%s.tmp%d", path, (int)getpid());
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (fd < 0 || write(fd, val, len) != (ssize_t)len || close(fd) || rename(tmp, path)) {
		snprintf(err, errlen, "fake bootstrap: writing %s: %s", path, strerror(errno));
		return IBCOMM_ERR_RENDEZVOUS;
	}
	return IBCOMM_OK;
}

static ibcomm_status_t fake_get(ibc_boot_t *b, const char *key, void *val, size_t cap, size_t *len,
				ibc_deadline_t dl, const atomic_int *cancel, char *err, size_t errlen)
{
	char path[512];

	key_path((struct fake_boot *)b, key, path, sizeof(path));
	for (;;) {
		int fd = open(path, O_RDONLY);

		if (fd >= 0) {
			char dummy;
			ssize_t n = read(fd, cap ? val : &dummy, cap ? cap : 0);

			close(fd);
			if (n < 0) {
				snprintf(err, errlen, "fake bootstrap: reading %s: %s", path, strerror(errno));
				return IBCOMM_ERR_RENDEZVOUS;
			}
			if (len)
				*len = (size_t)n;
			return IBCOMM_OK;
		}
		if (cancel && atomic_load(cancel)) {
			snprintf(err, errlen, "fake bootstrap: waiting for key %s: aborted", key);
			return IBCOMM_ERR_ABORTED;
		}
		if (ibc_deadline_left(dl) == 0) {
			snprintf(err, errlen, "fake bootstrap: timed out waiting for key %s", key);
			return IBCOMM_ERR_TIMEOUT;
		}
		poll(NULL, 0, 5);
	}
}

static void fake_drop(ibc_boot_t *b, const char *ns, int nmembers)
{
	(void)b;
	(void)ns;
	(void)nmembers;
}

static int fake_fd(ibc_boot_t *b)
{
	(void)b;
	return -1;
}

static unsigned fake_poll(ibc_boot_t *b, bool readable)
{
	(void)b;
	(void)readable;
	return 0;
}

static bool fake_dead(ibc_boot_t *b, int rank, char *why, size_t whylen)
{
	(void)b;
	(void)rank;
	(void)why;
	(void)whylen;
	return false;
}

static void fake_interrupt(ibc_boot_t *b)
{
	(void)b; /* get() polls its cancel flag every few ms */
}

static void fake_ref(ibc_boot_t *b)
{
	(void)b;
}

static void fake_unref(ibc_boot_t *b, bool abandon)
{
	(void)b;
	(void)abandon; /* the test frees it with fake_rdv_free() */
}

static const struct ibc_boot_ops fake_ops = {
	.name = "fake",
	.put = fake_put,
	.get = fake_get,
	.drop = fake_drop,
	.fd = fake_fd,
	.poll = fake_poll,
	.dead = fake_dead,
	.interrupt = fake_interrupt,
	.ref = fake_ref,
	.unref = fake_unref,
};

ibc_boot_t *fake_rdv_new(const char *dir)
{
	struct fake_boot *f = calloc(1, sizeof(*f));

	if (!f)
		return NULL;
	f->base.ops = &fake_ops;
	snprintf(f->dir, sizeof(f->dir), "%s", dir);
	return &f->base;
}

void fake_rdv_free(ibc_boot_t *b)
{
	free(b);
}
