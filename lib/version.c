/* ibcomm_version(): the version of the library that runs (the headers have IBCOMM_VERSION_CODE). */
#include "ibc.h"

int ibcomm_version(void)
{
	return IBCOMM_VERSION_CODE;
}
