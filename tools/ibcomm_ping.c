/*
 * ibcomm_ping: can these ranks talk, how well, and if not, why and what to change.
 *
 *   ibcomm_run -n 4 -- ibcomm_ping [--json] [-o FILE]     every rank of a job (or mpirun, srun)
 *   ibcomm_ping --server [--port P]                       by hand, on one host (rank 0)
 *   ibcomm_ping HOST[:PORT]                               on the other host (rank 1)
 *   ibcomm_ping                                           alone: this host's report only
 *
 * Every rank reports its host, RDMA devices, ports and GID tables (with the GID the RDMA
 * transport would use), its memlock limit and the TCP address it would use; rank 0 gathers
 * the reports (fixed-size little-endian records), then every pair of ring and tree
 * neighbours (plus a sample when there are more than 8 ranks) measures connection set-up,
 * 8-byte round-trip latency and bandwidth over TCP, over RDMA when every rank has a usable
 * port, and over shared memory for the pairs on one host; then says which transport
 * IBCOMM_TRANSPORT=auto carries each pair on. Problems are printed each with a one-line fix; the exit status is 1 when a
 * pair fails or a problem is found, 2 on a usage error.
 */
#define _GNU_SOURCE
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <ifaddrs.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "ibc.h"
#include "ping.h"
#include "sock.h"
#include "tool_util.h"
#include "ping_local.h"

/* Messages are cut to their buffers on purpose: a long host name must not fail the report. */
#pragma GCC diagnostic ignored "-Wformat-truncation"

/* ---- small helpers ---- */

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: ibcomm_ping [options]                 under ibcomm_run, mpirun or srun (every rank)\n"
		"       ibcomm_ping --server [--port P]       by hand: rank 0, on one host\n"
		"       ibcomm_ping HOST[:PORT] [options]     by hand: rank 1, on the other host\n"
		"Checks that the ranks can talk, measures each pair of neighbours, names what is wrong.\n"
		"\n"
		"  -s, --server         serve the rendezvous of a 2-rank job (rank 0)\n"
		"  -p, --port P         its TCP port (default %d; 0: a free one, printed)\n"
		"  -B, --bind ADDR      the server's address (default 0.0.0.0; [::] for IPv6)\n"
		"  -j, --json           JSON instead of tables\n"
		"  -o, --output FILE    write the report to FILE (rank 0) instead of stdout\n"
		"  -n, --iters N        round trips for the latency (default 1000)\n"
		"  -S, --size BYTES     message size for the bandwidth (default 4M; K, M suffixes)\n"
		"  -b, --bw-iters N     messages for the bandwidth (default 8)\n"
		"  -k, --sample K       extra random pairs when there are more than 8 ranks (default %d)\n"
		"  -r, --seed N         seed of that sample\n"
		"  -T, --timeout S      deadline of each step in seconds (default IBCOMM_TIMEOUT_MS, else 60)\n"
		"  -R, --no-rdma        test TCP only\n"
		"  -h, --help           this help\n"
		"Exit status: 0 when every pair works and no problem is found, 1 otherwise, 2 on a usage error.\n",
		PING_DEFAULT_PORT, PING_SAMPLE);
}

static bool parse_size(const char *s, size_t *out)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (errno || end == s || v < 1)
		return false;
	switch (*end) {
	case 'k': case 'K': v *= 1024; end++; break;
	case 'm': case 'M': v *= 1024 * 1024; end++; break;
	case 'g': case 'G': v *= 1024.0 * 1024 * 1024; end++; break;
	default: break;
	}
	if (*end || v > (double)(1ull << 34))
		return false;
	*out = (size_t)v;
	return true;
}

/*
 * Splits "host:port", "[v6]:port" (the library's own parser, lib/sock.c), or "[v6]", "v6" or
 * "host" without a port: port stays as given then.
 */
bool split_hostport(const char *s, char *host, size_t hostlen, int *port)
{
	const char *why, *colon = strchr(s, ':');
	char ps[8];
	size_t n = strlen(s);

	if (ibc_root_parse(s, host, hostlen, ps, sizeof(ps), &why) == 0) {
		*port = atoi(ps);
		return true;
	}
	if (s[0] == '[') {
		if (n < 3 || s[n - 1] != ']' || n - 2 >= hostlen)
			return false;
		memcpy(host, s + 1, n - 2);
		host[n - 2] = '\0';
		return true;
	}
	if ((colon && colon == strrchr(s, ':')) || n >= hostlen)
		return false; /* "host:" with a bad port, or too long */
	memcpy(host, s, n + 1);
	return true;
}

void join_hostport(const char *host, int port, char *out, size_t cap)
{
	snprintf(out, cap, strchr(host, ':') ? "[%s]:%d" : "%s:%d", host, port);
}

/* A free TCP port on host (lib/sock.c: bind port 0, read it, release it). 0 on failure. */
int free_port(const char *host)
{
	char addr[300], why[200];
	const char *colon;

	if (ibc_sock_free_port(host, addr, sizeof(addr), why, sizeof(why)))
		return 0;
	colon = strrchr(addr, ':');
	return colon ? atoi(colon + 1) : 0;
}

/* ---- the local report ---- */

static void local_report(struct job *j, struct ping_problems *pl, bool *fatal)
{
	struct ping_report *r = &j->me;
	ibc_rdma_sys_t *sys;
	struct ifaddrs *ifa;
	ibc_settings_t set;
	struct rlimit rl;

	memset(r, 0, sizeof(*r));
	r->rank = j->rank;
	if (gethostname(r->host, sizeof(r->host)))
		snprintf(r->host, sizeof(r->host), "?");
	r->host[sizeof(r->host) - 1] = '\0';
	/* the library's settings and choices, as a communicator of this process would make them */
	ping_settings(j->root, r->rank, &set, pl);
	if (getifaddrs(&ifa)) {
		snprintf(r->tcp_addr, sizeof(r->tcp_addr), "?");
		*fatal = false;
	} else {
		*fatal = !ping_tcp_choice(&set, ifa, r, pl);
		freeifaddrs(ifa);
	}
	if (getrlimit(RLIMIT_MEMLOCK, &rl) == 0)
		r->memlock = rl.rlim_cur == RLIM_INFINITY ? PING_MEMLOCK_UNLIMITED : (uint64_t)rl.rlim_cur;
	else
		r->memlock = PING_MEMLOCK_UNLIMITED;
	r->privileged = geteuid() == 0;
	sys = calloc(1, sizeof(*sys));
	if (sys) {
		ibc_rdma_info_query(sys, set.gid_index);
		ping_rdma_choice(&set, sys, r, pl);
		free(sys);
	} else {
		r->use = -1;
		snprintf(r->rdma_note, sizeof(r->rdma_note), "out of memory listing RDMA devices");
	}
	ping_diag_memlock(r->memlock, r->privileged, r->use >= 0, r->rank, pl);
}

/* ---- main ---- */

static int parse_opts(int argc, char **argv, struct opts *o)
{
	static const struct option longopts[] = {
		{ "server", no_argument, NULL, 's' },    { "port", required_argument, NULL, 'p' },
		{ "bind", required_argument, NULL, 'B' }, { "json", no_argument, NULL, 'j' },
		{ "output", required_argument, NULL, 'o' }, { "iters", required_argument, NULL, 'n' },
		{ "size", required_argument, NULL, 'S' }, { "bw-iters", required_argument, NULL, 'b' },
		{ "sample", required_argument, NULL, 'k' }, { "seed", required_argument, NULL, 'r' },
		{ "timeout", required_argument, NULL, 'T' }, { "no-rdma", no_argument, NULL, 'R' },
		{ "help", no_argument, NULL, 'h' },      { NULL, 0, NULL, 0 }
	};
	int opt;
	long v;
	double d;
	char *end;

	*o = (struct opts){ .port = -1, .bind = "0.0.0.0", .iters = 1000, .size = 4u << 20, .bw_iters = 8,
			    .sample = PING_SAMPLE, .timeout_ms = -1 };
	while ((opt = getopt_long(argc, argv, "sp:B:jo:n:S:b:k:r:T:Rh", longopts, NULL)) != -1) {
		switch (opt) {
		case 's': o->server = true; break;
		case 'p':
			if (!tool_parse_long(optarg, 0, 65535, &v))
				goto bad;
			o->port = (int)v;
			break;
		case 'B': o->bind = optarg; break;
		case 'j': o->json = true; break;
		case 'o': o->output = optarg; break;
		case 'n':
			if (!tool_parse_long(optarg, 1, 10000000, &v))
				goto bad;
			o->iters = (int)v;
			break;
		case 'S':
			if (!parse_size(optarg, &o->size))
				goto bad;
			break;
		case 'b':
			if (!tool_parse_long(optarg, 1, 1000000, &v))
				goto bad;
			o->bw_iters = (int)v;
			break;
		case 'k':
			if (!tool_parse_long(optarg, 0, 100000, &v))
				goto bad;
			o->sample = (int)v;
			break;
		case 'r':
			if (!tool_parse_long(optarg, 0, 0x7fffffff, &v))
				goto bad;
			o->seed = (unsigned)v;
			break;
		case 'T':
			errno = 0;
			d = strtod(optarg, &end);
			if (errno || end == optarg || *end || d <= 0 || d > 1e6)
				goto bad;
			o->timeout_ms = (long)(d * 1000);
			break;
		case 'R': o->no_rdma = true; break;
		case 'h': usage(stdout); exit(0);
		default: usage(stderr); return -1;
		}
	}
	if (optind < argc)
		o->peer = argv[optind++];
	if (optind < argc || (o->server && o->peer)) {
		fprintf(stderr, "ibcomm_ping: %s\n", o->server ? "--server takes no HOST" : "one HOST[:PORT] at most");
		usage(stderr);
		return -1;
	}
	return 0;
bad:
	fprintf(stderr, "ibcomm_ping: bad value '%s' for -%c\n", optarg, opt);
	usage(stderr);
	return -1;
}

static bool launched(void)
{
	static const char *const vars[] = { "IBCOMM_RANK", "SLURM_PROCID", "OMPI_COMM_WORLD_RANK", "PMI_RANK" };

	for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++)
		if (getenv(vars[i]))
			return true;
	return false;
}

static void emit(struct job *j, bool ok, bool json, char **text, size_t *len)
{
	FILE *f = open_memstream(text, len);

	if (!f) {
		*text = NULL;
		*len = 0;
		return;
	}
	if (json)
		print_json(f, j, ok);
	else
		print_text(f, j, ok);
	fclose(f);
}

int main(int argc, char **argv)
{
	struct job j = { 0 };
	struct ping_problem local_v[PING_MAX_PROBLEMS];
	struct ping_problems local = { .v = local_v, .cap = PING_MAX_PROBLEMS };
	ibcomm_config_t cfg = IBCOMM_CONFIG_INIT;
	uint8_t *mine = NULL, *all = NULL;
	char *text = NULL, *ctext = NULL;
	size_t textlen = 0, ctextlen = 0;
	bool client_json = false;
	int32_t code = 1, len32;
	bool fatal, ok;
	ibcomm_status_t st;
	const char *env_to;

	if (parse_opts(argc, argv, &j.o))
		return PING_EXIT_USAGE;
	setvbuf(stdout, NULL, _IOLBF, 0);
	env_to = getenv("IBCOMM_TIMEOUT_MS");
	if (j.o.timeout_ms < 0 && !(env_to && *env_to))
		j.o.timeout_ms = j.o.server ? PING_SERVER_TIMEOUT_MS : PING_DEFAULT_TIMEOUT_MS;

	/* who we are: a launched rank, one end of a pair, or alone */
	if (j.o.server || j.o.peer) {
		char host[256] = "";
		int port = j.o.port >= 0 ? j.o.port : PING_DEFAULT_PORT;

		j.pair_mode = true;
		j.size = 2;
		if (j.o.server) {
			j.rank = 0;
			snprintf(host, sizeof(host), "%s", j.o.bind);
			if (host[0] == '[' && strchr(host, ']')) {
				memmove(host, host + 1, strlen(host));
				*strchr(host, ']') = '\0';
			}
			if (port == 0)
				port = free_port(host);
			if (port <= 0) {
				fprintf(stderr, "ibcomm_ping: no free TCP port on %s\n", host);
				return 1;
			}
		} else {
			j.rank = 1;
			if (!split_hostport(j.o.peer, host, sizeof(host), &port) || port <= 0) {
				fprintf(stderr, "ibcomm_ping: '%s' is not HOST[:PORT] with a port from 1 to 65535\n", j.o.peer);
				return PING_EXIT_USAGE;
			}
		}
		join_hostport(host, port, j.root, sizeof(j.root));
		cfg.rank = j.rank;
		cfg.nranks = 2;
		cfg.root = j.root;
	} else if (!launched()) {
		int port = free_port("127.0.0.1");

		j.rank = 0;
		j.size = 1;
		join_hostport("127.0.0.1", port, j.root, sizeof(j.root));
		cfg.rank = 0;
		cfg.nranks = 1;
		cfg.root = j.root;
	} else {
		const char *r = getenv("IBCOMM_RANK"), *n = getenv("IBCOMM_SIZE"), *root = getenv("IBCOMM_ROOT");

		j.rank = r ? atoi(r) : -1;
		j.size = n ? atoi(n) : -1;
		snprintf(j.root, sizeof(j.root), "%s", root ? root : "(IBCOMM_ROOT unset)");
	}
	cfg.transport = "tcp"; /* the control communicator; RDMA is measured on its own */
	cfg.timeout_ms = j.o.timeout_ms;

	local_report(&j, &local, &fatal);
	if (fatal) {
		print_local_failure(&j, &local, "this rank cannot join the job");
		return 1;
	}
	if (j.o.server) {
		printf("ibcomm_ping: server listening on %s (on the other host run: ibcomm_ping %s:%s)\n", j.root,
		       j.me.host, strrchr(j.root, ':') + 1);
		fflush(stdout);
	}
	st = ibcomm_init(&cfg, &j.ctl);
	if (st) {
		char what[sizeof(local_v[0].what)], fix[sizeof(local_v[0].fix)];

		init_fix(j.root, j.o.server, st, ibcomm_last_error(NULL), what, sizeof(what), fix, sizeof(fix));
		if (local.n == local.cap)
			local.n--; /* the reason init failed comes first in importance */
		ping_problem_add(&local, j.rank, -1, fix, "%s", what);
		print_local_failure(&j, &local, ibcomm_strerror(st));
		return 1;
	}
	j.rank = ibcomm_rank(j.ctl);
	j.size = ibcomm_size(j.ctl);
	j.host_of = j.ctl->hosts.host_of; /* the library's host map, the same on every rank */
	j.me.rank = j.rank;
	j.me.nproblems = local.n < PING_MAX_PROBLEMS ? local.n : PING_MAX_PROBLEMS;
	memcpy(j.me.problems, local_v, (size_t)j.me.nproblems * sizeof(local_v[0]));
	for (int i = 0; i < j.me.nproblems; i++)
		j.me.problems[i].rank = j.rank;

	/* gather the reports */
	mine = malloc(PING_REPORT_BYTES);
	if (j.rank == 0)
		all = malloc((size_t)j.size * PING_REPORT_BYTES);
	j.pv = calloc(PING_MAX_JOB_PROBLEMS, sizeof(*j.pv));
	j.pl = (struct ping_problems){ .v = j.pv, .cap = PING_MAX_JOB_PROBLEMS };
	if (!mine || (j.rank == 0 && !all) || !j.pv || !make_pairs(&j)) {
		fprintf(stderr, "ibcomm_ping: rank %d: out of memory\n", j.rank);
		goto out_abort;
	}
	if (!ping_report_encode(&j.me, mine, PING_REPORT_BYTES)) {
		fprintf(stderr, "ibcomm_ping: rank %d: the report does not fit in %d bytes\n", j.rank, PING_REPORT_BYTES);
		goto out_abort;
	}
	st = ibcomm_gather(j.ctl, mine, all, PING_REPORT_BYTES, IBCOMM_UINT8, 0);
	if (st) {
		fprintf(stdout, "ibcomm_ping: rank %d: gathering the reports failed: %s\n", j.rank, ibcomm_last_error(j.ctl));
		goto out_abort;
	}
	if (j.rank == 0) {
		j.all = calloc((size_t)j.size, sizeof(*j.all));
		j.tcp = calloc((size_t)j.npairs + 1, sizeof(*j.tcp));
		j.rdma = calloc((size_t)j.npairs + 1, sizeof(*j.rdma));
		j.shm = calloc((size_t)j.npairs + 1, sizeof(*j.shm));
		j.route = calloc((size_t)j.npairs + 1, sizeof(*j.route));
		if (!j.all || !j.tcp || !j.rdma || !j.shm || !j.route) {
			fprintf(stderr, "ibcomm_ping: rank 0: out of memory\n");
			goto out_abort;
		}
		for (int r = 0; r < j.size; r++) {
			char why[256];

			if (!ping_report_decode(all + (size_t)r * PING_REPORT_BYTES, PING_REPORT_BYTES, &j.all[r], why,
						sizeof(why))) {
				memset(&j.all[r], 0, sizeof(j.all[r]));
				j.all[r].rank = r;
				j.all[r].use = -1;
				ping_problem_add(&j.pl, r, -1, "run the same ibcomm_ping version on every rank",
						 "rank %d's report is unreadable: %s", r, why);
				continue;
			}
			for (int i = 0; i < j.all[r].nproblems; i++)
				ping_problem_add(&j.pl, r, -1, j.all[r].problems[i].fix, "%s", j.all[r].problems[i].what);
		}
	}

	/* TCP: fresh connections on a duplicate, so that the first round trip includes set-up */
	if (j.size >= 2) {
		ibcomm_t *m = NULL;

		st = ibcomm_dup(j.ctl, &m);
		if (st) {
			fprintf(stdout, "ibcomm_ping: rank %d: cannot create the measuring communicator: %s\n", j.rank,
				ibcomm_last_error(j.ctl));
			goto out_abort;
		}
		st = measure(&j, m, "tcp", j.tcp, NULL, NULL, false);
		ibcomm_destroy(m);
		if (st) {
			fprintf(stdout, "ibcomm_ping: rank %d: the control communicator failed: %s\n", j.rank,
				ibcomm_last_error(j.ctl));
			goto out_abort;
		}
	}

	/* RDMA when every rank has a usable port */
	if (j.size >= 2) {
		int32_t go = 0;

		if (j.rank == 0 && !j.o.no_rdma) {
			const char *tp = getenv("IBCOMM_TRANSPORT");

			go = !(tp && !strcasecmp(tp, "tcp"));
			for (int r = 0; r < j.size; r++)
				go &= j.all[r].rdma_built && j.all[r].use >= 0;
		}
		if (ibcomm_broadcast(j.ctl, &go, 1, IBCOMM_INT32, 0))
			goto out_abort;
		if (go)
			rdma_phase(&j);
	}

	/* shared memory for the pairs on one host, the path IBCOMM_TRANSPORT=auto takes for them */
	for (int i = 0; i < j.npairs; i++)
		j.nshm_pairs += same_host(&j, j.pairs[i].a, j.pairs[i].b);
	if (j.nshm_pairs)
		shm_phase(&j);

	/* verdict, report, and the same exit status on every rank */
	if (j.pair_mode) {
		int32_t cjson = j.o.json; /* the client's choice of format, for the copy it prints */

		if (ibcomm_broadcast(j.ctl, &cjson, 1, IBCOMM_INT32, 1))
			goto out_abort;
		client_json = cjson != 0;
	}
	if (j.rank == 0) {
		/* after the measurements: a RoCEv2 pair across subnets that worked is routed */
		for (int i = 0; i < j.npairs; i++)
			ping_diag_pair(&j.all[j.pairs[i].a], &j.all[j.pairs[i].b], j.rdma_tried && j.rdma[i].ok, &j.pl);
		for (int i = 0; i < j.npairs; i++) {
			j.failed_pairs += !j.tcp[i].ok;
			if (j.rdma_tried)
				j.failed_pairs += !j.rdma[i].ok;
			if (j.shm_tried && same_host(&j, j.pairs[i].a, j.pairs[i].b))
				j.failed_pairs += !j.shm[i].ok;
		}
		auto_routes(&j);
		ok = j.failed_pairs == 0 && j.pl.n + j.pl.dropped == 0;
		code = ok ? 0 : 1;
		emit(&j, ok, j.o.json, &text, &textlen);
		if (j.pair_mode)
			emit(&j, ok, client_json, &ctext, &ctextlen);
		if (!text) {
			code = 1;
		} else if (j.o.output) {
			FILE *f = fopen(j.o.output, "w");

			if (!f || fwrite(text, 1, textlen, f) != textlen || fclose(f)) {
				fprintf(stderr, "ibcomm_ping: cannot write %s: %s\n", j.o.output, strerror(errno));
				code = 1;
			}
		} else {
			fwrite(text, 1, textlen, stdout);
			fflush(stdout);
		}
	}
	if (ibcomm_broadcast(j.ctl, &code, 1, IBCOMM_INT32, 0))
		code = 1;
	if (j.pair_mode) {
		/* the client prints the same report */
		len32 = j.rank == 0 && ctext ? (int32_t)ctextlen : 0;
		if (ibcomm_broadcast(j.ctl, &len32, 1, IBCOMM_INT32, 0) == IBCOMM_OK && len32 > 0) {
			char *buf = j.rank == 0 ? ctext : malloc((size_t)len32);

			if (buf && ibcomm_broadcast(j.ctl, buf, (size_t)len32, IBCOMM_UINT8, 0) == IBCOMM_OK && j.rank != 0) {
				fwrite(buf, 1, (size_t)len32, stdout);
				fflush(stdout);
			}
			if (j.rank != 0)
				free(buf);
		}
	}
	ibcomm_barrier(j.ctl);
	ibcomm_destroy(j.ctl);
	free(text);
	free(ctext);
	free(mine);
	free(all);
	free(j.all);
	free(j.tcp);
	free(j.rdma);
	free(j.shm);
	free((void *)j.route);
	free(j.pairs);
	free(j.pv);
	return code;

out_abort:
	ibcomm_abort(j.ctl);
	ibcomm_destroy(j.ctl);
	free(mine);
	free(all);
	free(j.all);
	free(j.tcp);
	free(j.rdma);
	free(j.shm);
	free((void *)j.route);
	free(j.pairs);
	free(j.pv);
	return 1;
}
