/*
 * libFuzzer target: the RDMA QP-info decoder (transports/rdma/rdma_proto.h, decode only).
 * Any input is rejected with a reason or decoded into a valid message that encodes back to
 * the same bytes.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "rdma_proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t out[IBC_RDMA_INFO_MAX];
	ibc_rdma_info_t info;
	char why[256] = "";
	size_t n;

	if (!ibc_rdma_info_decode(data, size, &info, why, sizeof(why))) {
		if (!why[0] || !memchr(why, '\0', sizeof(why)))
			abort();
		return 0;
	}
	if (info.qpn == 0 || info.qpn > 0xffffff || info.nslots == 0 || info.stride < info.max_chunk)
		abort();
	n = ibc_rdma_info_encode(&info, out, sizeof(out));
	if (n != size || memcmp(out, data, size))
		abort();
	return 0;
}
