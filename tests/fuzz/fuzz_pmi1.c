/*
 * libFuzzer target: the PMI-1 reply decoder (lib/launch/pmi1.c, ibc_pmi1_decode). Any
 * input is rejected with a reason or decoded into pairs that lie inside the input, each with
 * a non-empty key, the first cmd=<something>.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "launch/launch.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *buf = (const char *)data, *why = NULL;
	struct ibc_pmi1_msg m;
	char v[64];

	if (ibc_pmi1_decode(buf, size, &m, &why)) {
		if (!why)
			abort();
		return 0;
	}
	if (m.npairs < 1 || m.npairs > IBC_PMI1_MAX_PAIRS)
		abort();
	/* cmd is found exactly when its value fits (never truncated) */
	if (ibc_pmi1_get(&m, "cmd", v, sizeof(v)) != (m.pair[0].vallen < sizeof(v)))
		abort();
	for (int i = 0; i < m.npairs; i++) {
		if (!m.pair[i].keylen || m.pair[i].key < buf || m.pair[i].key + m.pair[i].keylen > buf + size ||
		    m.pair[i].val < buf || m.pair[i].val + m.pair[i].vallen > buf + size ||
		    memchr(m.pair[i].key, '=', m.pair[i].keylen) || memchr(m.pair[i].val, ' ', m.pair[i].vallen))
			abort();
	}
	return 0;
}
