/*
 * ibcomm_ping's parts: the options, the job (this rank's report, rank 0's view of every
 * rank and pair), and the functions its files share. ibcomm_ping.c: options, helpers, the
 * local report and main; ping_measure.c: the pairs and their measurement (TCP, then RDMA, then
 * shared memory for the pairs on one host) and the transport IBCOMM_TRANSPORT=auto gives each;
 * ping_output.c: the text and JSON reports and a rank's own failure; ping_local.c and
 * ping_diag.c: the library's choices on this host and the diagnoses.
 */
#ifndef PING_H
#define PING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "ibcomm.h"
#include "ping_diag.h"

#define PING_DEFAULT_PORT 18515 /* as ibv_rc_pingpong */
#define PING_DEFAULT_TIMEOUT_MS 60000L
#define PING_SERVER_TIMEOUT_MS 600000L /* a server waits for a person to start the client */
#define PING_MAX_JOB_PROBLEMS 256
#define PING_SAMPLE 8
#define PING_RESULT_BYTES 512
#define PING_ERR_BYTES 512
#define PING_EXIT_USAGE 2

enum { TAG_SETUP = 0x50490001, TAG_LAT, TAG_BW, TAG_ACK };

struct opts {
	bool server;
	const char *peer;      /* HOST[:PORT] of the server (client mode) */
	int port;              /* -1: default */
	const char *bind;      /* server address, default 0.0.0.0 */
	bool json;
	const char *output;
	int iters;
	size_t size;
	int bw_iters;
	int sample;
	unsigned seed;
	long timeout_ms;       /* -1: environment or default */
	bool no_rdma;
};

struct pair {
	int a, b;
};

struct pair_result {
	int a, b;
	bool ok, skipped;
	double setup_ms, min_us, med_us, p99_us, bw_MBps;
	char err[400];
};

struct job {
	struct opts o;
	int rank, size;
	char root[300];
	bool pair_mode;
	ibcomm_t *ctl;
	struct ping_report me;
	struct ping_report *all;    /* rank 0 */
	struct pair *pairs;
	int npairs;
	struct pair_result *tcp, *rdma, *shm; /* rank 0: per pair */
	bool rdma_tried;
	bool rdma_init_failed;      /* every rank had a port, but the RDMA communicator failed */
	/* the host map of the control communicator (the library's, from what the ranks exchanged:
	 * host name, boot id, IPC namespace; a rank without a writable /dev/shm is a host of its
	 * own): hosts numbered by their lowest rank, the same on every rank */
	const int *host_of;
	int nshm_pairs;             /* pairs of ranks on one host */
	bool shm_tried;             /* measured over shared memory (a communicator per host) */
	const char **route;         /* rank 0, per pair: what IBCOMM_TRANSPORT=auto carries it on */
	char auto_tp[16];           /* rank 0: what ibcomm_transport() says under auto, e.g. "shm+tcp" */
	struct ping_problem *pv;
	struct ping_problems pl;    /* rank 0: the job's problems */
	int failed_pairs;
};

/* ibcomm_ping.c */
bool split_hostport(const char *s, char *host, size_t hostlen, int *port);
void join_hostport(const char *host, int port, char *out, size_t cap);
int free_port(const char *host);

/* ping_output.c */
void init_fix(const char *root, bool pair, ibcomm_status_t st, const char *err, char *what, size_t wlen, char *fix,
		     size_t flen);
void print_local_failure(const struct job *j, const struct ping_problems *pl, const char *why);
void print_text(FILE *f, const struct job *j, bool ok);
void print_json(FILE *f, const struct job *j, bool ok);

/* ping_measure.c */
bool make_pairs(struct job *j);
ibcomm_status_t measure(struct job *j, ibcomm_t *m, const char *tp, struct pair_result *res, const bool *only,
			const int *mrank, bool broken);
void rdma_phase(struct job *j);
bool same_host(const struct job *j, int a, int b);
void shm_phase(struct job *j);
void auto_routes(struct job *j);

#endif
