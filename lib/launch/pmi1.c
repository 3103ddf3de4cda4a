/*
 * PMI-1 over PMI_FD (MPICH's Hydra mpiexec, Intel MPI): a line protocol on a socket the
 * launcher opened for the process, "cmd=NAME key=value ...\n" both ways. ibcomm uses init,
 * get_maxes, get_my_kvsname, put, barrier_in/barrier_out and get. Every reply is decoded with
 * bounds checks (ibc_pmi1_decode, fuzzed in tests/fuzz/fuzz_pmi1.c) and every wait has the
 * init deadline: a launcher that answers garbage or nothing is an error naming PMI_FD.
 * The connection stays open for the life of the process and says finalize at exit (Hydra
 * takes a process that initialised PMI and exits without it as failed); each exchange uses
 * a key of its own.
 */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "launch.h"

ibcomm_status_t ibc_pmi1_decode(const char *buf, size_t len, struct ibc_pmi1_msg *m, const char **why)
{
	size_t i = 0;

	m->npairs = 0;
	if (len > IBC_PMI1_MAX_LINE) {
		*why = "the line is too long";
		return IBCOMM_ERR_INVALID;
	}
	for (size_t k = 0; k < len; k++) {
		if (buf[k] < 0x20 || buf[k] > 0x7e) {
			*why = "the line holds a byte that is not printable ASCII";
			return IBCOMM_ERR_INVALID;
		}
	}
	while (i < len) {
		size_t ks, ke, vs;

		while (i < len && buf[i] == ' ')
			i++;
		if (i == len)
			break;
		ks = i;
		while (i < len && buf[i] != '=' && buf[i] != ' ')
			i++;
		ke = i;
		if (i == len || buf[i] != '=') {
			*why = "a word without '=' (expected key=value)";
			return IBCOMM_ERR_INVALID;
		}
		if (ke == ks) {
			*why = "an empty key before '='";
			return IBCOMM_ERR_INVALID;
		}
		vs = ++i;
		while (i < len && buf[i] != ' ')
			i++;
		if (m->npairs == IBC_PMI1_MAX_PAIRS) {
			*why = "too many key=value pairs";
			return IBCOMM_ERR_INVALID;
		}
		m->pair[m->npairs].key = buf + ks;
		m->pair[m->npairs].keylen = ke - ks;
		m->pair[m->npairs].val = buf + vs;
		m->pair[m->npairs].vallen = i - vs;
		m->npairs++;
	}
	if (!m->npairs || m->pair[0].keylen != 3 || memcmp(m->pair[0].key, "cmd", 3) || !m->pair[0].vallen) {
		*why = "the line does not start with cmd=...";
		return IBCOMM_ERR_INVALID;
	}
	return IBCOMM_OK;
}

bool ibc_pmi1_get(const struct ibc_pmi1_msg *m, const char *key, char *out, size_t cap)
{
	size_t kl = strlen(key);

	for (int i = 0; i < m->npairs; i++) {
		if (m->pair[i].keylen != kl || memcmp(m->pair[i].key, key, kl))
			continue;
		if (m->pair[i].vallen >= cap)
			return false;
		memcpy(out, m->pair[i].val, m->pair[i].vallen);
		out[m->pair[i].vallen] = '\0';
		return true;
	}
	return false;
}

static struct {
	pthread_mutex_t lock;
	int fd;            /* -1 until initialised */
	char kvs[256];
	char in[IBC_PMI1_MAX_LINE + 1];
	size_t inlen;
} pmi = { PTHREAD_MUTEX_INITIALIZER, -1, "", "", 0 };

ibcomm_status_t ibc_pmi1_detect(struct ibc_launch *l, char *err, size_t errlen)
{
	const char *fd = ibc_launch_env("PMI_FD"), *r = ibc_launch_env("PMI_RANK"), *z = ibc_launch_env("PMI_SIZE");
	ibcomm_status_t st;
	long v;

	if (!fd)
		return IBCOMM_OK;
	st = ibc_launch_num("PMI-1", "PMI_FD", fd, 0, INT_MAX, &v, err, errlen);
	if (st)
		return st;
	if (!r || !z) {
		snprintf(err, errlen, "PMI-1: PMI_FD is set but %s is not (PMI_ID singleton start-up is not supported)",
			 r ? "PMI_SIZE" : "PMI_RANK");
		return IBCOMM_ERR_INVALID;
	}
	st = ibc_launch_num("PMI-1", "PMI_RANK", r, 0, INT_MAX - 1, &v, err, errlen);
	if (st)
		return st;
	l->rank = (int)v;
	st = ibc_launch_num("PMI-1", "PMI_SIZE", z, 1, INT_MAX, &v, err, errlen);
	if (st)
		return st;
	l->size = (int)v;
	if (l->rank >= l->size) {
		snprintf(err, errlen, "PMI-1: PMI_RANK=%s is not below PMI_SIZE=%s", r, z);
		return IBCOMM_ERR_INVALID;
	}
	l->local_rank = l->local_size = -1;
	l->kind = IBC_LAUNCH_PMI1;
	l->name = "PMI-1";
	return IBCOMM_OK;
}

/* line starts with "cmd=NAME": its name, for messages */
static void cmd_name(const char *line, char *out, size_t cap)
{
	snprintf(out, cap, "%.*s", (int)strcspn(line + 4, " \n"), line + 4);
}

static ibcomm_status_t send_line(const char *line, ibc_deadline_t dl, char *err, size_t errlen)
{
	char name[32];

	size_t len = strlen(line), off = 0;

	while (off < len) {
		struct pollfd p = { .fd = pmi.fd, .events = POLLOUT };
		ssize_t n;
		int rc = poll(&p, 1, ibc_deadline_left(dl));

		if (rc == 0) {
			snprintf(err, errlen, "PMI-1: the launcher at PMI_FD=%d does not take a request (timed out)", pmi.fd);
			return IBCOMM_ERR_TIMEOUT;
		}
		if (rc < 0 && errno == EINTR)
			continue;
		n = rc < 0 ? -1 : write(pmi.fd, line + off, len - off);
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (n <= 0) {
			cmd_name(line, name, sizeof(name));
			snprintf(err, errlen, "PMI-1: cannot send %s to the launcher at PMI_FD=%d: %s (has it gone?)", name,
				 pmi.fd, n < 0 ? strerror(errno) : "nothing written");
			return IBCOMM_ERR_RENDEZVOUS;
		}
		off += (size_t)n;
	}
	return IBCOMM_OK;
}

/* Reads one reply line and checks that its cmd is `want` (and rc, when present, is 0). */
static ibcomm_status_t recv_reply(const char *want, struct ibc_pmi1_msg *m, ibc_deadline_t dl, char *err,
				  size_t errlen)
{
	char rc[16];
	const char *why;
	char *nl;

	while (!(nl = memchr(pmi.in, '\n', pmi.inlen))) {
		struct pollfd p = { .fd = pmi.fd, .events = POLLIN };
		ssize_t n;
		int r;

		if (pmi.inlen == sizeof(pmi.in) - 1) {
			snprintf(err, errlen, "PMI-1: the launcher at PMI_FD=%d sent a line longer than %d bytes", pmi.fd,
				 IBC_PMI1_MAX_LINE);
			return IBCOMM_ERR_RENDEZVOUS;
		}
		r = poll(&p, 1, ibc_deadline_left(dl));
		if (r == 0) {
			snprintf(err, errlen, "PMI-1: no answer to %s from the launcher at PMI_FD=%d (timed out)", want,
				 pmi.fd);
			return IBCOMM_ERR_TIMEOUT;
		}
		if (r < 0 && errno == EINTR)
			continue;
		n = r < 0 ? -1 : read(pmi.fd, pmi.in + pmi.inlen, sizeof(pmi.in) - 1 - pmi.inlen);
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (n <= 0) {
			if (n)
				snprintf(err, errlen, "PMI-1: reading from the launcher at PMI_FD=%d failed (%s) while ibcomm waited for %s",
					 pmi.fd, strerror(errno), want);
			else
				snprintf(err, errlen, "PMI-1: the launcher at PMI_FD=%d closed the connection while ibcomm waited for %s",
					 pmi.fd, want);
			return IBCOMM_ERR_RENDEZVOUS;
		}
		pmi.inlen += (size_t)n;
	}
	if (ibc_pmi1_decode(pmi.in, (size_t)(nl - pmi.in), m, &why)) {
		char shown[61];
		size_t k;

		for (k = 0; k < sizeof(shown) - 1 && pmi.in + k < nl; k++) /* never echo control bytes */
			shown[k] = pmi.in[k] >= 0x20 && pmi.in[k] < 0x7f ? pmi.in[k] : '?';
		shown[k] = '\0';
		snprintf(err, errlen, "PMI-1: the launcher at PMI_FD=%d answered '%s' to %s: %s", pmi.fd, shown, want,
			 why);
		return IBCOMM_ERR_RENDEZVOUS;
	}
	if (m->pair[0].vallen != strlen(want) || memcmp(m->pair[0].val, want, strlen(want))) {
		snprintf(err, errlen, "PMI-1: the launcher at PMI_FD=%d answered cmd=%.*s where cmd=%s was expected",
			 pmi.fd, (int)IBC_MIN(m->pair[0].vallen, 40), m->pair[0].val, want);
		return IBCOMM_ERR_RENDEZVOUS;
	}
	if (ibc_pmi1_get(m, "rc", rc, sizeof(rc)) && strcmp(rc, "0")) {
		char msg[128] = "";

		ibc_pmi1_get(m, "msg", msg, sizeof(msg));
		snprintf(err, errlen, "PMI-1: the launcher at PMI_FD=%d answered %s with rc=%s %s", pmi.fd, want, rc, msg);
		return IBCOMM_ERR_RENDEZVOUS;
	}
	return IBCOMM_OK;
}

/* The decoded message points into pmi.in: consume the line only when the next one is read. */
static void consume_line(void)
{
	char *nl = memchr(pmi.in, '\n', pmi.inlen);
	size_t used = nl ? (size_t)(nl - pmi.in) + 1 : pmi.inlen;

	memmove(pmi.in, pmi.in + used, pmi.inlen - used);
	pmi.inlen -= used;
}

static ibcomm_status_t call(const char *line, const char *want, struct ibc_pmi1_msg *m, ibc_deadline_t dl,
			    char *err, size_t errlen)
{
	ibcomm_status_t st = send_line(line, dl, err, errlen);

	if (st)
		return st;
	st = recv_reply(want, m, dl, err, errlen);
	return st;
}

/* Hydra takes a process that initialised PMI and exits without finalize as failed (and kills its job). */
static void pmi_finalize(void)
{
	struct ibc_pmi1_msg m;
	char err[IBC_ERRLEN];

	pthread_mutex_lock(&pmi.lock);
	if (pmi.fd >= 0 && !call("cmd=finalize\n", "finalize_ack", &m, ibc_deadline(5000), err, sizeof(err)))
		consume_line();
	pmi.fd = -1;
	pthread_mutex_unlock(&pmi.lock);
}

static ibcomm_status_t pmi_init(ibc_deadline_t dl, char *err, size_t errlen)
{
	static bool registered;

	struct ibc_pmi1_msg m;
	ibcomm_status_t st;

	if (pmi.fd >= 0)
		return IBCOMM_OK;
	pmi.fd = atoi(getenv("PMI_FD"));
	pmi.inlen = 0;
	st = call("cmd=init pmi_version=1 pmi_subversion=1\n", "response_to_init", &m, dl, err, errlen);
	if (st)
		goto fail;
	consume_line();
	st = call("cmd=get_maxes\n", "maxes", &m, dl, err, errlen);
	if (st)
		goto fail;
	consume_line();
	st = call("cmd=get_my_kvsname\n", "my_kvsname", &m, dl, err, errlen);
	if (st)
		goto fail;
	if (!ibc_pmi1_get(&m, "kvsname", pmi.kvs, sizeof(pmi.kvs)) || !pmi.kvs[0]) {
		snprintf(err, errlen, "PMI-1: the launcher at PMI_FD=%d gave no kvsname", pmi.fd);
		st = IBCOMM_ERR_RENDEZVOUS;
		goto fail;
	}
	consume_line();
	if (!registered) {
		registered = true;
		atexit(pmi_finalize);
	}
	return IBCOMM_OK;
fail:
	pmi.fd = -1; /* try again from scratch next time (the connection is likely unusable) */
	return st;
}

ibcomm_status_t ibc_pmi1_exchange(const struct ibc_launch *l, unsigned gen, char *root, size_t rootlen,
				  long timeout_ms, char *err, size_t errlen)
{
	ibc_deadline_t dl = ibc_deadline(timeout_ms);
	struct ibc_pmi1_msg m;
	char line[IBC_PMI1_MAX_LINE], val[256];
	ibcomm_status_t st;

	pthread_mutex_lock(&pmi.lock);
	st = pmi_init(dl, err, errlen);
	if (st)
		goto out;
	if (l->rank == 0) {
		snprintf(line, sizeof(line), "cmd=put kvsname=%s key=ibcomm-root-%u value=%s\n", pmi.kvs, gen, root);
		st = call(line, "put_result", &m, dl, err, errlen);
		if (st)
			goto out;
		consume_line();
	}
	st = call("cmd=barrier_in\n", "barrier_out", &m, dl, err, errlen);
	if (st)
		goto out;
	consume_line();
	if (l->rank != 0) {
		snprintf(line, sizeof(line), "cmd=get kvsname=%s key=ibcomm-root-%u\n", pmi.kvs, gen);
		st = call(line, "get_result", &m, dl, err, errlen);
		if (st)
			goto out;
		if (!ibc_pmi1_get(&m, "value", val, sizeof(val)) || !val[0] || strlen(val) >= rootlen) {
			snprintf(err, errlen, "PMI-1: the launcher at PMI_FD=%d gave no usable value for ibcomm-root-%u",
				 pmi.fd, gen);
			st = IBCOMM_ERR_RENDEZVOUS;
			consume_line();
			goto out;
		}
		consume_line();
		snprintf(root, rootlen, "%s", val);
	}
out:
	if (st)
		pmi.inlen = 0; /* a half-read exchange: start the next one clean */
	pthread_mutex_unlock(&pmi.lock);
	return st;
}
