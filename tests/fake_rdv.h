/* File-backed fake bootstrap for transport tests (see fake_rdv.c). */
#ifndef IBC_FAKE_RDV_H
#define IBC_FAKE_RDV_H

#include "bootstrap.h"

ibc_boot_t *fake_rdv_new(const char *dir);
void fake_rdv_free(ibc_boot_t *b);

#endif
