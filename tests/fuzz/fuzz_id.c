/*
 * libFuzzer target: the embedding id decoder (lib/id_codec.c). The input, cut or padded with
 * zeros to IBCOMM_ID_BYTES, is rejected with a reason or decoded into an id that encodes
 * back to the same bytes and formats to an address ibc_root_parse accepts.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "id.h"
#include "rendezvous.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	ibcomm_id_t id, again;
	struct ibc_id d;
	const char *why = NULL;
	char root[300], host[256], port[8];

	memset(&id, 0, sizeof(id));
	memcpy(id.bytes, data, size < IBCOMM_ID_BYTES ? size : IBCOMM_ID_BYTES);
	if (ibc_id_decode(&id, &d, &why)) {
		if (!why)
			abort();
		return 0;
	}
	ibc_id_encode(&d, &again);
	if (memcmp(&id, &again, sizeof(id)))
		abort();
	ibc_id_root(&d, root, sizeof(root));
	if (ibc_root_parse(root, host, sizeof(host), port, sizeof(port), &why))
		abort();
	return 0;
}
