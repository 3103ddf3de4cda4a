/* Reading a launcher's variables: one rule for every launcher (launch.h). */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "launch.h"

const char *ibc_launch_env(const char *name)
{
	const char *v = getenv(name);

	return v && *v ? v : NULL;
}

ibcomm_status_t ibc_launch_num(const char *launcher, const char *name, const char *v, long lo, long hi, long *out,
			       char *err, size_t errlen)
{
	char *end;
	long n;

	errno = 0;
	n = strtol(v, &end, 10);
	if (!isdigit((unsigned char)v[0]) || *end || errno || n < lo || n > hi) {
		snprintf(err, errlen, "%s: %s='%s' is not a number in %ld..%ld", launcher, name, v, lo, hi);
		return IBCOMM_ERR_INVALID;
	}
	*out = n;
	return IBCOMM_OK;
}
