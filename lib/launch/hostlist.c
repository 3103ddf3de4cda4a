/*
 * Slurm hostlist expressions, as in SLURM_STEP_NODELIST: comma-separated host expressions,
 * each plain text with bracketed ranges, "node[01-04,07]", "rack[1-2]-n[1-3]", "login1".
 * A range keeps the zero padding of its lower bound (node[08-10]: node08 node09 node10).
 * Anything else (unbalanced brackets, a reversed range, an empty name) is an error that
 * says where; never a guess.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "launch.h"

struct hl {
	char **hosts;
	size_t n, cap;
	const char *list; /* for messages */
	char *why;
	size_t whylen;
	ibcomm_status_t st;
};

static bool host_char(char c)
{
	return isalnum((unsigned char)c) || c == '-' || c == '.' || c == '_';
}

static int add(struct hl *h, const char *name, size_t len)
{
	char *s;

	if (h->n == IBC_HOSTLIST_MAX) {
		snprintf(h->why, h->whylen, "more than %d hosts", IBC_HOSTLIST_MAX);
		h->st = IBCOMM_ERR_INVALID;
		return -1;
	}
	if (h->n == h->cap) {
		size_t cap = h->cap ? h->cap * 2 : 16;
		char **p = realloc(h->hosts, cap * sizeof(*p));

		if (!p)
			goto nomem;
		h->hosts = p;
		h->cap = cap;
	}
	s = malloc(len + 1);
	if (!s)
		goto nomem;
	memcpy(s, name, len);
	s[len] = '\0';
	h->hosts[h->n++] = s;
	return 0;
nomem:
	snprintf(h->why, h->whylen, "out of memory");
	h->st = IBCOMM_ERR_NOMEM;
	return -1;
}

static int bad(struct hl *h, const char *at, const char *what)
{
	snprintf(h->why, h->whylen, "%s at offset %zu ('%.20s')", what, (size_t)(at - h->list), at);
	h->st = IBCOMM_ERR_INVALID;
	return -1;
}

/* Reads a decimal number of at most 9 digits at *p; its digit count in *width. */
static int number(struct hl *h, const char **p, long *v, int *width)
{
	const char *s = *p;

	if (!isdigit((unsigned char)*s))
		return bad(h, s, "a number was expected in the range");
	*v = 0;
	*width = 0;
	while (isdigit((unsigned char)*s)) {
		if (++*width > 9)
			return bad(h, *p, "a number in a range is too long");
		*v = *v * 10 + (*s++ - '0');
	}
	*p = s;
	return 0;
}

/* Expands expr[0..len) after prefix (plen bytes of buf, the name built so far). */
static int expand(struct hl *h, char *buf, size_t plen, const char *expr, size_t len)
{
	const char *end = expr + len, *open = memchr(expr, '[', len), *close, *p;
	size_t tlen = open ? (size_t)(open - expr) : len;

	for (size_t i = 0; i < tlen; i++) {
		if (expr[i] == ']')
			return bad(h, expr + i, "']' without '['");
		if (!host_char(expr[i]))
			return bad(h, expr + i, "a character that is not a letter, digit, '-', '.' or '_'");
	}
	if (plen + tlen >= 256)
		return bad(h, expr, "a host name longer than 255 bytes");
	memcpy(buf + plen, expr, tlen);
	plen += tlen;
	if (!open) {
		if (!plen)
			return bad(h, expr, "an empty host name");
		return add(h, buf, plen);
	}
	close = memchr(open, ']', (size_t)(end - open));
	if (!close)
		return bad(h, open, "'[' without ']'");
	for (p = open + 1; p < close;) {
		long lo, hi;
		int w, w2;

		if (number(h, &p, &lo, &w))
			return -1;
		hi = lo;
		if (*p == '-') {
			p++;
			if (number(h, &p, &hi, &w2))
				return -1;
			if (hi < lo)
				return bad(h, p, "a range whose end is below its start");
		}
		if (p < close && *p != ',')
			return bad(h, p, "',' or ']' was expected in the range");
		if (*p == ',') {
			p++;
			if (p == close)
				return bad(h, p, "an empty range");
		}
		for (long v = lo; v <= hi; v++) {
			char num[16];
			int n = snprintf(num, sizeof(num), "%0*ld", w, v);

			if (plen + (size_t)n >= 256)
				return bad(h, open, "a host name longer than 255 bytes");
			memcpy(buf + plen, num, (size_t)n);
			if (expand(h, buf, plen + (size_t)n, close + 1, (size_t)(end - close - 1)))
				return -1;
		}
	}
	if (open + 1 == close)
		return bad(h, open, "empty brackets");
	return 0;
}

ibcomm_status_t ibc_hostlist_expand(const char *list, char ***hosts, size_t *n, char *why, size_t whylen)
{
	struct hl h = { .list = list, .why = why, .whylen = whylen, .st = IBCOMM_OK };
	char buf[256];
	const char *p = list;

	if (!list || !*list) {
		snprintf(why, whylen, "it is empty");
		return IBCOMM_ERR_INVALID;
	}
	for (;;) {
		const char *e = p;
		int depth = 0;

		while (*e && (*e != ',' || depth)) {
			if (*e == '[' && ++depth > 1) {
				bad(&h, e, "nested '['");
				goto err;
			}
			if (*e == ']')
				depth = 0;
			e++;
		}
		if (e == p) {
			bad(&h, p, "an empty host expression");
			goto err;
		}
		if (expand(&h, buf, 0, p, (size_t)(e - p)))
			goto err;
		if (!*e)
			break;
		p = e + 1;
	}
	*hosts = h.hosts;
	*n = h.n;
	return IBCOMM_OK;
err:
	ibc_hostlist_free(h.hosts, h.n);
	return h.st;
}

void ibc_hostlist_free(char **hosts, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(hosts[i]);
	free(hosts);
}
