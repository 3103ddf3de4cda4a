/* File-based fake of the rendezvous for transport tests (see fake_rdv.c). */
#ifndef IBC_FAKE_RDV_H
#define IBC_FAKE_RDV_H

struct ibc_rdv;
struct ibc_rdv *fake_rdv_new(const char *dir);
void fake_rdv_free(struct ibc_rdv *r);

#endif
