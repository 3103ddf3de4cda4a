/* Logging to stderr, filtered by IBCOMM_DEBUG (WARN, INFO, TRACE; default WARN). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "ibc.h"

int ibc_log_level = IBC_LOG_WARN;

static const char *const level_names[] = { "ERROR", "WARN", "INFO", "TRACE" };

void ibc_log(int level, const char *fmt, ...)
{
	char line[1024];
	va_list ap;
	int n;

	if (level > ibc_log_level)
		return;
	n = snprintf(line, sizeof(line), "ibcomm %s [pid %d]: ", level_names[level], (int)getpid());
	va_start(ap, fmt);
	vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
	va_end(ap);
	fprintf(stderr, "%s\n", line);
}
