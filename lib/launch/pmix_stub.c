/* Built without PMIx (configure --with-pmix=no, or libpmix-dev absent): no PMIx launcher. */
#include <stdio.h>

#include "launch.h"

bool ibc_pmix_present(void)
{
	return false;
}

ibcomm_status_t ibc_pmix_detect(struct ibc_launch *l __attribute__((unused)), char *err, size_t errlen)
{
	snprintf(err, errlen, "PMIx: this ibcomm was built without PMIx");
	return IBCOMM_ERR_UNSUPPORTED;
}

ibcomm_status_t ibc_pmix_exchange(const struct ibc_launch *l __attribute__((unused)),
				  unsigned gen __attribute__((unused)), char *root __attribute__((unused)),
				  size_t rootlen __attribute__((unused)), long timeout_ms __attribute__((unused)),
				  char *err, size_t errlen)
{
	snprintf(err, errlen, "PMIx: this ibcomm was built without PMIx");
	return IBCOMM_ERR_UNSUPPORTED;
}
