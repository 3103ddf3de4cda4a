/*
 * The host map of a communicator: which ranks share a host, from what the ranks exchange at
 * init (transports/shm/shm_host.c's identity: host name, boot id, IPC namespace, /dev/shm
 * usable; IBCOMM_TEST_HOST replaces the host name), never from launcher variables. Hosts are
 * numbered by their lowest rank. Init exchanges the identities once through the bootstrap
 * (one put and n gets per rank, the cost of the same-host check it replaces); split and dup
 * derive the child's map from the parent's without talking.
 *
 * The map also gives the ring order of the ring algorithms (ring.c) and the groups of the
 * hierarchical ones (hier.c).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ibc.h"

#define HOST_ID_MAX 400

void ibc_hosts_ring(int n, const int *host_of, int *order)
{
	int k = 0, nhosts = 0;

	for (int r = 0; r < n; r++)
		nhosts = IBC_MAX(nhosts, host_of[r] + 1);
	/* hosts are numbered by their lowest rank: host order is the order of first appearance */
	for (int h = 0; h < nhosts; h++)
		for (int r = 0; r < n; r++)
			if (host_of[r] == h)
				order[k++] = r;
}

void ibc_hosts_free(struct ibc_hosts *h)
{
	free(h->host_of);
	free(h->ring);
	memset(h, 0, sizeof(*h));
}

ibcomm_status_t ibc_hosts_set(struct ibcomm *comm, const int *key)
{
	struct ibc_hosts h = { 0 };
	int n = comm->size;
	bool contiguous = true;

	h.host_of = calloc((size_t)n, sizeof(int));
	h.ring = calloc(2 * (size_t)n, sizeof(int));
	if (!h.host_of || !h.ring) {
		ibc_hosts_free(&h);
		return ibc_err(comm, IBCOMM_ERR_NOMEM, "rank %d: out of memory for the host map of %d ranks", comm->rank, n);
	}
	/* renumber by first appearance: key[r] == key[q] for the same host, any values */
	for (int r = 0; r < n; r++) {
		int q = 0;

		while (key[q] != key[r])
			q++;
		h.host_of[r] = q < r ? h.host_of[q] : h.nhosts++;
	}
	for (int r = 0; r < n; r++) {
		if (h.host_of[r] != h.host_of[comm->rank])
			continue;
		if (r < comm->rank)
			h.local_rank++;
		h.local_size++;
	}
	ibc_hosts_ring(n, h.host_of, h.ring);
	for (int i = 0; i < n; i++) {
		h.ring[n + h.ring[i]] = i;
		contiguous &= h.ring[i] == i;
	}
	if (contiguous) { /* the ring in rank order already crosses each host boundary once */
		free(h.ring);
		h.ring = NULL;
	}
	ibc_hosts_free(&comm->hosts);
	comm->hosts = h;
	return IBCOMM_OK;
}

ibcomm_status_t ibc_hosts_init(struct ibcomm *comm)
{
	char ns[sizeof(comm->id) + 8], mine[HOST_ID_MAX], err[IBC_ERRLEN];
	size_t len = ibc_shm_host_id(comm, mine, sizeof(mine));
	size_t *lens = malloc((size_t)comm->size * sizeof(*lens));
	char *all = malloc((size_t)comm->size * HOST_ID_MAX);
	int *key = malloc((size_t)comm->size * sizeof(*key));
	ibcomm_status_t st;

	if (!lens || !all || !key) {
		st = ibc_err(comm, IBCOMM_ERR_NOMEM, "rank %d: out of memory for the host identities of %d ranks",
			     comm->rank, comm->size);
		goto out;
	}
	snprintf(ns, sizeof(ns), "%s/host", comm->id);
	st = ibc_boot_allgather(comm->boot, ns, comm->rank, comm->size, mine, len, all, HOST_ID_MAX, lens,
				ibc_deadline(comm->set.timeout_ms), &comm->aborted, err, sizeof(err));
	if (st) {
		st = ibc_err(comm, st, "rank %d: exchanging the host identities: %s", comm->rank, err);
		goto out;
	}
	/* key[r]: the lowest rank with r's identity (a longer one than fits counts as itself) */
	for (int r = 0; r < comm->size; r++) {
		key[r] = r;
		for (int q = 0; q < r && lens[r] <= HOST_ID_MAX; q++)
			if (lens[q] == lens[r] && !memcmp(all + (size_t)q * HOST_ID_MAX, all + (size_t)r * HOST_ID_MAX,
							 lens[r])) {
				key[r] = q;
				break;
			}
	}
	st = ibc_hosts_set(comm, key);
out:
	free(lens);
	free(all);
	free(key);
	return st;
}

int ibc_hosts_elsewhere(const struct ibcomm *comm, char *list, size_t cap)
{
	const struct ibc_hosts *h = &comm->hosts;
	size_t len = 0;
	int count = 0;
	bool dots = false; /* the list is full: "..." said so */

	list[0] = '\0';
	for (int r = 0; h->host_of && r < comm->size; r++) {
		if (h->host_of[r] == h->host_of[comm->rank])
			continue;
		if (len + 20 < cap)
			len += (size_t)snprintf(list + len, cap - len, "%s%d", count ? ", " : "", r);
		else if (!dots && len + 4 < cap) {
			len += (size_t)snprintf(list + len, cap - len, "...");
			dots = true;
		}
		count++;
	}
	return count;
}
