/*
 * Internal to rank 0's rendezvous server: its state, shared by rdv_server.c (the thread and
 * lifecycle), rdv_srv_client.c (connections and their I/O), rdv_srv_msg.c (JOIN/PUT/GET/DROP)
 * and rdv_srv_auth.c (the handshake before JOIN).
 */
#ifndef IBC_RDV_SERVER_H
#define IBC_RDV_SERVER_H

#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/types.h>

#include "auth.h"
#include "ibc.h"
#include "rdv_store.h"
#include "rendezvous.h"

#define SRV_MAX_LISTEN 4
#define SRV_IN_INIT 4096u

struct srv_client {
	int fd;                 /* -1 once closed */
	int idx;                /* index in srv->clients */
	char addr[64];          /* peer address, for logs */
	uint8_t *in;            /* received, not yet processed */
	size_t in_len, in_cap;
	uint8_t *out;           /* to send: out[out_off..out_len) */
	size_t out_off, out_len, out_cap;
	int rank;               /* -1 until joined */
	uint32_t join_req;
	int refs;               /* 1 while in srv->clients, +1 per parked GET */
	bool dead;              /* drop at the end of this loop iteration */
	bool close_after_flush; /* rejected: close once the ERROR is sent */
	bool left;              /* said LEAVE: its connection dropping is not a death */
	bool host_lost;         /* its connection timed out: its host stopped answering */
	/* job-key handshake (srv->key set): AUTH_HELLO, AUTH_PROOF, then JOIN */
	uint8_t auth;           /* SRV_AUTH_* */
	uint32_t auth_rank, auth_size; /* as claimed in AUTH_HELLO */
	uint8_t nonce_c[IBC_AUTH_NONCE_LEN], nonce_s[IBC_AUTH_NONCE_LEN];
	uint64_t hs_deadline;   /* not joined by then: dropped; 0 once joined (or gone) */
	struct srv_client *hs_prev, *hs_next; /* srv->hs_head list, in deadline order */
};

enum { SRV_AUTH_NONE, SRV_AUTH_CHALLENGED, SRV_AUTH_OK };

/* How a rank that had joined went away while the job was still assembling. */
enum { SRV_GONE_NO, SRV_GONE_LEFT, SRV_GONE_DROPPED };

struct rdv_server {
	pthread_t thread;
	int size;
	char root[256];
	long linger_ms;          /* after the stop request; 0: until every rank is gone */
	int wake[2];
	atomic_int stop;         /* 1: after the other ranks are gone; 2: at once */
	pid_t pid;               /* the process that started the thread (a fork has no thread) */
	struct rdv_server *next_lingering;
	int nlisten;
	/* pfds[0]: wake pipe, pfds[1..nlisten]: listening sockets, then one per client */
	struct pollfd *pfds;
	struct srv_client **clients;
	int nclients, cap;
	bool accept_paused;      /* out of file descriptors */

	pthread_mutex_t lock;    /* guards joined/njoined/gone against srv_missing() */
	struct srv_client **joined; /* by rank */
	int njoined;
	bool all_joined;
	uint8_t *gone;           /* by rank: joined, then went away before all had (SRV_GONE_*) */

	struct rdv_store store;  /* keys, values, parked GETs (rdv_store.h) */
	atomic_size_t nkeys;     /* keys stored + namespaces being dropped (tests) */
	uint8_t *scratch;        /* one encoded frame */
	bool closing;            /* stopping: connections dropping are not deaths */
	char key[sizeof(((ibc_settings_t *)0)->job_key)]; /* job key; "": no authentication */
	struct srv_client *hs_head, *hs_tail; /* connections that have not joined yet */
	char auth_note[320];     /* the last rank refused for its key (under lock), for timeouts */
};

#define PFD_CLIENT0(srv) (1 + (srv)->nlisten)

/* rdv_srv_client.c: the clients' connections */
IBC_HIDDEN void rdv_srv_client_put_ref(struct srv_client *c);
IBC_HIDDEN void rdv_srv_count(struct rdv_server *srv);
IBC_HIDDEN void rdv_srv_release_owner(void *owner);
IBC_HIDDEN void rdv_srv_send(struct rdv_server *srv, struct srv_client *c, const struct ibc_rdv_msg *m);
/* Marks c to be dropped at the end of this loop iteration (logs why once). */
IBC_HIDDEN void rdv_srv_drop_client(struct srv_client *c, const char *why);
IBC_HIDDEN void rdv_srv_client_flush(struct rdv_server *srv, struct srv_client *c);
IBC_HIDDEN void rdv_srv_client_read(struct rdv_server *srv, struct srv_client *c);
IBC_HIDDEN void rdv_srv_remove_client(struct rdv_server *srv, struct srv_client *c);
IBC_HIDDEN void rdv_srv_accept(struct rdv_server *srv, int lfd);

/* rdv_srv_msg.c: the per-message handlers */
IBC_HIDDEN void rdv_srv_handle(struct rdv_server *srv, struct srv_client *c, const struct ibc_rdv_msg *m);
/* Answers with an ERROR or AUTH_FAILED text and closes the connection once it is sent. */
IBC_HIDDEN void rdv_srv_refuse(struct rdv_server *srv, struct srv_client *c, uint8_t type, uint32_t req,
			       const char *text);
IBC_HIDDEN void rdv_srv_error(struct rdv_server *srv, struct srv_client *c, uint32_t req, const char *text);

/* rdv_srv_auth.c: connections that have not joined yet, and the job-key handshake */
IBC_HIDDEN void rdv_hs_add(struct rdv_server *srv, struct srv_client *c);
IBC_HIDDEN void rdv_hs_del(struct rdv_server *srv, struct srv_client *c);
IBC_HIDDEN void rdv_hs_expire(struct rdv_server *srv);
IBC_HIDDEN int rdv_hs_timeout(struct rdv_server *srv);
IBC_HIDDEN void rdv_srv_auth_hello(struct rdv_server *srv, struct srv_client *c, const struct ibc_rdv_msg *m);
IBC_HIDDEN void rdv_srv_auth_proof(struct rdv_server *srv, struct srv_client *c, const struct ibc_rdv_msg *m);
IBC_HIDDEN void rdv_srv_auth_rejected(struct rdv_server *srv, struct srv_client *c);
IBC_HIDDEN bool rdv_srv_authenticate(struct rdv_server *srv, struct srv_client *c, const struct ibc_rdv_msg *m);

#endif
