/* Monotonic time and deadlines (absolute, in ms; 0 means none). */
#include <limits.h>
#include <time.h>

#include "ibc.h"

uint64_t ibc_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

ibc_deadline_t ibc_deadline(long timeout_ms)
{
	if (timeout_ms <= 0)
		return 0;
	return ibc_now_ms() + (uint64_t)timeout_ms;
}

int ibc_deadline_left(ibc_deadline_t dl)
{
	uint64_t now;

	if (!dl)
		return -1;
	now = ibc_now_ms();
	if (now >= dl)
		return 0;
	return dl - now > INT_MAX ? INT_MAX : (int)(dl - now);
}
