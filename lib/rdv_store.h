/*
 * The rendezvous server's key-value table (rank 0): a hash table of keys, their values and
 * the GETs parked until a key exists, and the namespaces being dropped (DROP). Used by the
 * server thread only: no locking.
 */
#ifndef IBC_RDV_STORE_H
#define IBC_RDV_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct rdv_waiter {
	void *owner;                /* the server's client, which the GET came from */
	uint32_t req;
	struct rdv_waiter *next;
};

struct rdv_entry {
	uint64_t hash;
	char *key;
	size_t keylen;
	uint8_t *val;
	size_t vallen;
	bool has_val;
	struct rdv_waiter *waiters; /* parked GETs */
	struct rdv_entry *next;
};

struct rdv_drop;                    /* a namespace some members have dropped */

struct rdv_store {
	struct rdv_entry **buckets;
	size_t nbuckets, nentries;
	struct rdv_drop *drops;
	size_t ndrops;
};

/* An empty table sized for about `hint` keys. Returns 0, or -1 out of memory. */
int rdv_store_init(struct rdv_store *s, size_t hint);
/* The entry of key (created empty when `create`), or NULL (absent, or out of memory). */
struct rdv_entry *rdv_store_lookup(struct rdv_store *s, const char *key, size_t n, bool create);
/*
 * One member is done with the keys under prefix; at the `count`-th DROP of the same prefix
 * they are deleted (entries with parked GETs stay). Returns how many keys were deleted.
 */
size_t rdv_store_drop(struct rdv_store *s, const char *prefix, size_t n, uint32_t count);
/* Frees everything; release() is called for the owner of each parked GET. */
void rdv_store_free(struct rdv_store *s, void (*release)(void *owner));

#endif
