/*
 * Logging to stderr. Each communicator filters by its own level (its settings' debug);
 * code without a communicator uses the process default, IBCOMM_DEBUG read once.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "ibc.h"

static const char *const level_names[] = { "ERROR", "WARN", "INFO", "TRACE" };

static pthread_once_t default_once = PTHREAD_ONCE_INIT;
static int default_level = IBC_LOG_WARN;

int ibc_log_parse(const char *s)
{
	for (int i = IBC_LOG_WARN; s && i <= IBC_LOG_TRACE; i++)
		if (!strcasecmp(s, level_names[i]))
			return i;
	return -1;
}

/* A bad IBCOMM_DEBUG is reported by ibcomm_init (config.c); here it only leaves WARN. */
static void read_default(void)
{
	int l = ibc_log_parse(getenv("IBCOMM_DEBUG"));

	if (l >= 0)
		default_level = l;
}

int ibc_log_default(void)
{
	pthread_once(&default_once, read_default);
	return default_level;
}

void ibc_log_at(int threshold, int level, const char *fmt, ...)
{
	char line[1024];
	va_list ap;
	int n;

	if (level > threshold || level < 0 || level > IBC_LOG_TRACE)
		return;
	n = snprintf(line, sizeof(line), "ibcomm %s [pid %d]: ", level_names[level], (int)getpid());
	va_start(ap, fmt);
	vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
	va_end(ap);
	fprintf(stderr, "%s\n", line);
}
