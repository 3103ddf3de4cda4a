/*
 * libFuzzer target: Slurm hostlist expansion (lib/launch/hostlist.c). Any input is rejected
 * with a reason or expands into 1..IBC_HOSTLIST_MAX non-empty host names of at most 255
 * letters, digits, '-', '.' and '_'.
 */
#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "launch/launch.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char list[512], why[160] = "", **hosts;
	size_t n;

	if (size >= sizeof(list))
		return 0;
	memcpy(list, data, size);
	list[size] = '\0';
	if (ibc_hostlist_expand(list, &hosts, &n, why, sizeof(why))) {
		if (!why[0])
			abort();
		return 0;
	}
	if (n < 1 || n > IBC_HOSTLIST_MAX)
		abort();
	for (size_t i = 0; i < n; i++) {
		size_t len = strlen(hosts[i]);

		if (!len || len > 255)
			abort();
		for (size_t k = 0; k < len; k++)
			if (!isalnum((unsigned char)hosts[i][k]) && !strchr("-._", hosts[i][k]))
				abort();
	}
	ibc_hostlist_free(hosts, n);
	return 0;
}
