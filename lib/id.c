/*
 * ibcomm_get_id / ibcomm_init_rank: a job started by the caller's own channel (NCCL's
 * pattern). The creator keeps the listening socket of each id it made, keyed by the id's
 * job key, until its ibcomm_init_rank as rank 0 hands it to the rendezvous server: the port
 * cannot be taken in between, and an id is good for one communicator.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "auth.h"
#include "id.h"
#include "launch/launch.h"
#include "rendezvous.h"
#include "wire.h"

/* This boot's identity: an id from another machine or boot never names this process. */
static void boot_id(uint8_t out[16])
{
	char s[64];
	int fd = open("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC);
	ssize_t n = fd >= 0 ? read(fd, s, sizeof(s) - 1) : -1;
	int j = 0;

	memset(out, 0, 16);
	if (fd >= 0)
		close(fd);
	for (ssize_t i = 0; i < n && j < 32; i++) {
		unsigned v;
		char c = s[i];

		if (c >= '0' && c <= '9')
			v = (unsigned)(c - '0');
		else if (c >= 'a' && c <= 'f')
			v = (unsigned)(c - 'a' + 10);
		else
			continue;
		out[j / 2] |= (uint8_t)(v << (j % 2 ? 0 : 4));
		j++;
	}
}

/* The ids this process made and has not used yet. */
struct made {
	struct made *next;
	uint8_t key[IBC_ID_KEY_LEN];
	int fd;                     /* listening; -1 once used */
};
static pthread_mutex_t made_lock = PTHREAD_MUTEX_INITIALIZER;
static struct made *made;

ibcomm_status_t ibcomm_get_id(ibcomm_id_t *id)
{
	char addr[300], err[IBC_ERRLEN - 64], host[256], port[8], ifname[IF_NAMESIZE];
	struct ibc_id d = { 0 };
	struct made *m;
	const char *why;
	ibcomm_status_t st;
	int fd;

	if (!id)
		return ibc_err_thread(IBCOMM_ERR_INVALID, "ibcomm_get_id: id is NULL");
	m = calloc(1, sizeof(*m));
	if (!m)
		return ibc_err_thread(IBCOMM_ERR_NOMEM, "ibcomm_get_id: out of memory");
	if (ibc_auth_nonce(d.key)) {
		free(m);
		return ibc_err_thread(IBCOMM_ERR_SYSTEM, "ibcomm_get_id: no random bytes for the job key");
	}
	st = ibc_settings_ifname(ifname, sizeof(ifname), err, sizeof(err));
	if (!st)
		st = ibc_launch_listen(ifname, false, 0, &fd, addr, sizeof(addr), err, sizeof(err));
	if (st) {
		free(m);
		return ibc_err_thread(st, "ibcomm_get_id: %s", err);
	}
	if (ibc_root_parse(addr, host, sizeof(host), port, sizeof(port), &why)) {
		close(fd);
		free(m);
		return ibc_err_thread(IBCOMM_ERR_SYSTEM, "ibcomm_get_id: %s: %s", addr, why);
	}
	if (strchr(host, ':')) {
		char *pct = strchr(host, '%');

		d.family = 6;
		if (pct) {
			d.scope = if_nametoindex(pct + 1);
			*pct = '\0';
		}
		inet_pton(AF_INET6, host, d.addr);
	} else {
		d.family = 4;
		inet_pton(AF_INET, host, d.addr);
	}
	d.port = (uint16_t)atoi(port);
	d.pid = (uint32_t)getpid();
	boot_id(d.boot_id);
	memcpy(m->key, d.key, IBC_ID_KEY_LEN);
	m->fd = fd;
	pthread_mutex_lock(&made_lock);
	m->next = made;
	made = m;
	pthread_mutex_unlock(&made_lock);
	ibc_id_encode(&d, id);
	ibc_info("ibcomm_get_id: the rendezvous of the new id is at %s", addr);
	return IBCOMM_OK;
}

/* Takes the listening socket of the id with key, made by this process; -1 when none. */
static int take_fd(const uint8_t *key, bool *used)
{
	int fd = -1;

	*used = false;
	pthread_mutex_lock(&made_lock);
	for (struct made *m = made; m; m = m->next) {
		if (memcmp(m->key, key, IBC_ID_KEY_LEN))
			continue;
		fd = m->fd;
		*used = fd < 0;
		m->fd = -1;
		break;
	}
	pthread_mutex_unlock(&made_lock);
	return fd;
}

ibcomm_status_t ibcomm_init_rank(const ibcomm_id_t *id, int rank, int nranks, const ibcomm_config_t *cfg,
				 ibcomm_t **comm)
{
	ibcomm_config_t c = IBCOMM_CONFIG_INIT;
	char root[300], key[2 * IBC_ID_KEY_LEN + 1];
	uint8_t boot[16];
	struct ibc_id d;
	const char *why;
	ibcomm_status_t st;
	int fd = -1;

	if (!id)
		return ibc_err_thread(IBCOMM_ERR_INVALID, "ibcomm_init_rank: id is NULL");
	if (!comm)
		return ibc_err_thread(IBCOMM_ERR_INVALID, "ibcomm_init_rank: comm is NULL");
	if (ibc_id_decode(id, &d, &why))
		return ibc_err_thread(IBCOMM_ERR_INVALID, "ibcomm_init_rank: the id is not usable: %s", why);
	if (nranks < 1 || rank < 0 || rank >= nranks)
		return ibc_err_thread(IBCOMM_ERR_INVALID,
				      "ibcomm_init_rank: rank %d of nranks %d is out of range (0 <= rank < nranks)", rank,
				      nranks);
	ibc_id_root(&d, root, sizeof(root));
	if (cfg) {
		if (cfg->size < offsetof(ibcomm_config_t, rank) + sizeof(cfg->rank))
			return ibc_err_thread(IBCOMM_ERR_INVALID,
					      "ibcomm_init_rank: ibcomm_config_t.size=%zu is too small: initialise the config with IBCOMM_CONFIG_INIT",
					      cfg->size);
		if (cfg->rank >= 0 && cfg->rank != rank)
			return ibc_err_thread(IBCOMM_ERR_INVALID,
					      "ibcomm_init_rank: ibcomm_config_t.rank=%d disagrees with the argument rank=%d",
					      cfg->rank, rank);
		if (cfg->nranks >= 0 && cfg->nranks != nranks)
			return ibc_err_thread(IBCOMM_ERR_INVALID,
					      "ibcomm_init_rank: ibcomm_config_t.nranks=%d disagrees with the argument nranks=%d",
					      cfg->nranks, nranks);
		if (cfg->root && *cfg->root && strcmp(cfg->root, root))
			return ibc_err_thread(IBCOMM_ERR_INVALID,
					      "ibcomm_init_rank: ibcomm_config_t.root='%s' disagrees with the id's rendezvous address %s",
					      cfg->root, root);
		memcpy(&c, cfg, IBC_MIN(cfg->size, sizeof(c)));
		c.size = sizeof(c);
	}
	if (rank == 0) {
		bool used = false;

		boot_id(boot);
		/* a forked child holds a copy of its parent's ids: the pid tells them apart */
		fd = d.pid == (uint32_t)getpid() && !memcmp(boot, d.boot_id, 16) ? take_fd(d.key, &used) : -1;
		if (fd < 0 && used && d.pid == (uint32_t)getpid())
			return ibc_err_thread(IBCOMM_ERR_INVALID,
					      "ibcomm_init_rank: rank 0: this id was already used for a communicator (an id is good for one: call ibcomm_get_id again)");
		if (fd < 0)
			return ibc_err_thread(IBCOMM_ERR_INVALID,
					      "ibcomm_init_rank: rank 0 must be the process that called ibcomm_get_id (pid %u%s), not pid %u: pass the id to the other ranks and make its creator rank 0",
					      (unsigned)d.pid, memcmp(boot, d.boot_id, 16) ? " on another machine or boot" : "",
					      (unsigned)getpid());
	}
	for (int i = 0; i < IBC_ID_KEY_LEN; i++)
		snprintf(key + 2 * i, 3, "%02x", d.key[i]);
	c.rank = rank;
	c.nranks = nranks;
	c.root = root;
	c.job_key = key;
	st = ibc_comm_init(&c, fd, comm);
	explicit_bzero(key, sizeof(key));
	return st;
}
