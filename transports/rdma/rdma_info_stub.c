/* Built instead of rdma_info.c without rdma-core: lists device names from sysfs only. */
#include <dirent.h>
#include <stdio.h>
#include <string.h>

#include "rdma_info.h"

ibcomm_status_t ibc_rdma_info_query(ibc_rdma_sys_t *sys, int gid_index)
{
	DIR *d;
	struct dirent *e;

	(void)gid_index;
	if (!sys)
		return IBCOMM_ERR_INVALID;
	memset(sys, 0, sizeof(*sys));
	sys->built = false;
	snprintf(sys->note, sizeof(sys->note), "this libibcomm was built without rdma-core (no RDMA transport)");
	d = opendir("/sys/class/infiniband");
	if (!d)
		return IBCOMM_OK;
	while ((e = readdir(d)) && sys->ndevs < IBC_RI_MAX_DEVS) {
		if (e->d_name[0] == '.')
			continue;
		snprintf(sys->devs[sys->ndevs++].name, sizeof(sys->devs[0].name), "%.63s", e->d_name);
	}
	closedir(d);
	return IBCOMM_OK;
}
