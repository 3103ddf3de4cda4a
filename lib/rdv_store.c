/*
 * The rendezvous server's key-value table (rdv_store.h). O(1) per PUT and GET; a DROP walks
 * the table once, when the last member of a communicator is done with it.
 */
#include <stdlib.h>
#include <string.h>

#include "rdv_store.h"

struct rdv_drop {
	char *prefix;
	size_t n;
	uint32_t seen;
	struct rdv_drop *next;
};

static uint64_t hash_key(const char *k, size_t n)
{
	uint64_t h = 1469598103934665603ull; /* FNV-1a */

	for (size_t i = 0; i < n; i++) {
		h ^= (unsigned char)k[i];
		h *= 1099511628211ull;
	}
	return h;
}

int rdv_store_init(struct rdv_store *s, size_t hint)
{
	memset(s, 0, sizeof(*s));
	s->nbuckets = 64;
	while (s->nbuckets < hint * 2 && s->nbuckets < ((size_t)1 << 24))
		s->nbuckets *= 2;
	s->buckets = calloc(s->nbuckets, sizeof(*s->buckets));
	return s->buckets ? 0 : -1;
}

/* Keeps the load factor below 1 (a failed grow only makes chains longer). */
static void grow(struct rdv_store *s)
{
	size_t nb = s->nbuckets * 2;
	struct rdv_entry **b = calloc(nb, sizeof(*b)), *e;

	if (!b)
		return;
	for (size_t i = 0; i < s->nbuckets; i++) {
		while ((e = s->buckets[i])) {
			s->buckets[i] = e->next;
			e->next = b[e->hash & (nb - 1)];
			b[e->hash & (nb - 1)] = e;
		}
	}
	free(s->buckets);
	s->buckets = b;
	s->nbuckets = nb;
}

struct rdv_entry *rdv_store_lookup(struct rdv_store *s, const char *key, size_t n, bool create)
{
	uint64_t h = hash_key(key, n);
	struct rdv_entry *e;

	for (e = s->buckets[h & (s->nbuckets - 1)]; e; e = e->next)
		if (e->hash == h && e->keylen == n && !memcmp(e->key, key, n))
			return e;
	if (!create)
		return NULL;
	if (s->nentries >= s->nbuckets)
		grow(s);
	e = calloc(1, sizeof(*e));
	if (!e)
		return NULL;
	e->key = malloc(n);
	if (!e->key) {
		free(e);
		return NULL;
	}
	memcpy(e->key, key, n);
	e->keylen = n;
	e->hash = h;
	e->next = s->buckets[h & (s->nbuckets - 1)];
	s->buckets[h & (s->nbuckets - 1)] = e;
	s->nentries++;
	return e;
}

static size_t delete_prefix(struct rdv_store *s, const char *prefix, size_t n)
{
	size_t deleted = 0;

	for (size_t i = 0; i < s->nbuckets; i++) {
		struct rdv_entry **pe = &s->buckets[i], *e;

		while ((e = *pe)) {
			if (e->waiters || e->keylen < n || memcmp(e->key, prefix, n)) {
				pe = &e->next;
				continue;
			}
			*pe = e->next;
			free(e->key);
			free(e->val);
			free(e);
			s->nentries--;
			deleted++;
		}
	}
	return deleted;
}

size_t rdv_store_drop(struct rdv_store *s, const char *prefix, size_t n, uint32_t count)
{
	struct rdv_drop **pd, *d;
	size_t deleted;

	for (pd = &s->drops; (d = *pd); pd = &d->next)
		if (d->n == n && !memcmp(d->prefix, prefix, n))
			break;
	if (!d && count > 1) {
		d = calloc(1, sizeof(*d));
		if (!d || !(d->prefix = malloc(n))) {
			free(d);
			return 0; /* out of memory: the keys stay, nothing breaks */
		}
		memcpy(d->prefix, prefix, n);
		d->n = n;
		d->next = s->drops;
		s->drops = d;
		s->ndrops++;
		pd = &s->drops;
	}
	if (d && ++d->seen < count)
		return 0;
	deleted = delete_prefix(s, prefix, n);
	if (d) {
		*pd = d->next;
		free(d->prefix);
		free(d);
		s->ndrops--;
	}
	return deleted;
}

void rdv_store_free(struct rdv_store *s, void (*release)(void *owner))
{
	struct rdv_drop *d;

	for (size_t i = 0; s->buckets && i < s->nbuckets; i++) {
		struct rdv_entry *e;

		while ((e = s->buckets[i])) {
			struct rdv_waiter *w;

			s->buckets[i] = e->next;
			while ((w = e->waiters)) {
				e->waiters = w->next;
				release(w->owner);
				free(w);
			}
			free(e->key);
			free(e->val);
			free(e);
		}
	}
	while ((d = s->drops)) {
		s->drops = d->next;
		free(d->prefix);
		free(d);
	}
	free(s->buckets);
	memset(s, 0, sizeof(*s));
}
