/*
 * The host map of a communicator: which ranks share a host, from what the ranks exchange at
 * init (transports/shm/shm_host.c's identity: host name, boot id, IPC namespace; a rank that
 * cannot use /dev/shm is a host of its own; IBCOMM_TEST_HOST replaces the host name), never
 * from launcher variables. Hosts are numbered by their lowest rank. Init exchanges them once
 * through the bootstrap, for every transport (ibc_hosts_init); split and dup derive the
 * child's map from the parent's without talking.
 *
 * The map also gives the ring order of the ring algorithms (ring.c) and the groups of the
 * hierarchical ones (hier.c).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ibc.h"
#include "wire.h"

#define HOST_ID_MAX 400
#define HOSTMAP_VERSION 1

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

/* key[r]: the lowest rank with r's identity (one longer than fits counts as itself). */
static void keys_of(int n, const char *all, const size_t *lens, int *key)
{
	for (int r = 0; r < n; r++) {
		key[r] = r;
		for (int q = 0; q < r && lens[r] <= HOST_ID_MAX; q++)
			if (lens[q] == lens[r] &&
			    !memcmp(all + (size_t)q * HOST_ID_MAX, all + (size_t)r * HOST_ID_MAX, lens[r])) {
				key[r] = q;
				break;
			}
	}
}

/* The map as rank 0 publishes it: version, n, then key[r] for each rank (u32 each, LE). */
static size_t map_len(int n)
{
	return 1 + 4 + 4 * (size_t)n;
}

ibcomm_status_t ibc_hosts_map_decode(struct ibcomm *comm, const void *val, size_t len, int *key)
{
	ibc_rbuf_t rb = ibc_rbuf(val, len);
	uint8_t version = ibc_r_u8(&rb);
	uint32_t n = ibc_r_u32(&rb);
	bool ok = rb.ok && version == HOSTMAP_VERSION && n == (uint32_t)comm->size;

	for (int r = 0; ok && r < comm->size; r++) {
		uint32_t k = ibc_r_u32(&rb);

		/* the lowest rank of each host: itself its host's key */
		ok = k <= (uint32_t)r && (k == (uint32_t)r || key[k] == (int)k);
		key[r] = (int)k;
	}
	if (ok && ibc_r_done(&rb))
		return IBCOMM_OK;
	return ibc_err(comm, IBCOMM_ERR_RENDEZVOUS,
		       "rank %d: the host map from rank 0 is malformed (%zu bytes, version %u, %u ranks; expected "
		       "version %u, %d ranks)", comm->rank, len, version, n, HOSTMAP_VERSION, comm->size);
}

/*
 * Every rank publishes its identity; rank 0 reads them all, works out the map and publishes
 * it as one value, which the others read: 3n requests to the rendezvous rather than n^2 (a
 * map too large for one value: every rank reads every identity).
 */
ibcomm_status_t ibc_hosts_init(struct ibcomm *comm)
{
	char ns[sizeof(comm->id) + 16], mine[HOST_ID_MAX], err[IBC_ERRLEN];
	size_t len = ibc_shm_host_id(comm, mine, sizeof(mine)), mlen = map_len(comm->size), got = 0;
	bool all_read = comm->rank == 0 || mlen > IBC_BOOT_MAX_VAL;
	int n = all_read ? comm->size : 0;
	size_t *lens = malloc((size_t)IBC_MAX(n, 1) * sizeof(*lens));
	char *all = malloc((size_t)IBC_MAX(n, 1) * HOST_ID_MAX);
	uint8_t *map = malloc(mlen);
	int *key = malloc((size_t)comm->size * sizeof(*key));
	ibc_deadline_t dl = ibc_deadline(comm->set.timeout_ms);
	ibcomm_status_t st;

	if (!lens || !all || !map || !key) {
		st = ibc_err(comm, IBCOMM_ERR_NOMEM, "rank %d: out of memory for the host map of %d ranks", comm->rank,
			     comm->size);
		goto out;
	}
	/* publishes this rank's identity, and reads every rank's when all_read (n ranks) */
	snprintf(ns, sizeof(ns), "%s/host", comm->id);
	st = ibc_boot_allgather(comm->boot, ns, comm->rank, n, mine, len, all, HOST_ID_MAX, lens, dl, &comm->aborted,
				err, sizeof(err));
	if (st) {
		st = ibc_err(comm, st, "rank %d: exchanging the host identities: %s", comm->rank, err);
		goto out;
	}
	if (n == comm->size) {
		keys_of(n, all, lens, key);
	} else {
		snprintf(ns, sizeof(ns), "%s/hostmap", comm->id);
		st = ibc_boot_get(comm->boot, ns, map, mlen, &got, dl, &comm->aborted, err, sizeof(err));
		if (st) {
			st = ibc_err(comm, st, "rank %d: waiting for the host map from rank 0: %s", comm->rank, err);
			goto out;
		}
		if ((st = ibc_hosts_map_decode(comm, map, got, key)))
			goto out;
	}
	if (comm->rank == 0 && comm->size > 1 && mlen <= IBC_BOOT_MAX_VAL) {
		ibc_wbuf_t wb = ibc_wbuf(map, mlen);

		ibc_w_u8(&wb, HOSTMAP_VERSION);
		ibc_w_u32(&wb, (uint32_t)comm->size);
		for (int r = 0; r < comm->size; r++)
			ibc_w_u32(&wb, (uint32_t)key[r]);
		snprintf(ns, sizeof(ns), "%s/hostmap", comm->id);
		st = ibc_boot_put(comm->boot, ns, map, wb.len, err, sizeof(err));
		if (st) {
			st = ibc_err(comm, st, "rank 0: publishing the host map: %s", err);
			goto out;
		}
	}
	st = ibc_hosts_set(comm, key);
out:
	free(lens);
	free(all);
	free(map);
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
