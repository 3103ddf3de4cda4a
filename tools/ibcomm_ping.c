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
 * 8-byte round-trip latency and bandwidth over TCP, and over RDMA when every rank has a
 * usable port. Problems are printed each with a one-line fix; the exit status is 1 when a
 * pair fails or a problem is found, 2 on a usage error.
 */
#define _GNU_SOURCE
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <ifaddrs.h>
#include <math.h>
#include <net/if.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "ibcomm.h"
#include "ping_diag.h"
#include "ping_local.h"
#include "rdma_info.h"
#include "wire.h"

/* Messages are cut to their buffers on purpose: a long host name must not fail the report. */
#pragma GCC diagnostic ignored "-Wformat-truncation"

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
	struct pair_result *tcp, *rdma; /* rank 0: per pair */
	bool rdma_tried;
	bool rdma_init_failed;      /* every rank had a port, but the RDMA communicator failed */
	struct ping_problem *pv;
	struct ping_problems pl;    /* rank 0: the job's problems */
	int failed_pairs;
};

/* ---- small helpers ---- */

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

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

static bool parse_int(const char *s, long min, long max, long *out)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < min || v > max)
		return false;
	*out = v;
	return true;
}

/* Splits "host:port", "[v6]:port", "[v6]", "v6" or "host"; port stays as given when absent. */
static bool split_hostport(const char *s, char *host, size_t hostlen, int *port)
{
	const char *colon;
	long p;

	if (s[0] == '[') {
		const char *close = strchr(s, ']');

		if (!close || (size_t)(close - s - 1) >= hostlen)
			return false;
		memcpy(host, s + 1, (size_t)(close - s - 1));
		host[close - s - 1] = '\0';
		if (!close[1])
			return true;
		if (close[1] != ':' || !parse_int(close + 2, 0, 65535, &p))
			return false;
		*port = (int)p;
		return true;
	}
	colon = strrchr(s, ':');
	if (colon && strchr(s, ':') != colon)
		colon = NULL; /* a bare IPv6 address */
	if (!colon) {
		if (strlen(s) >= hostlen)
			return false;
		strcpy(host, s);
		return true;
	}
	if ((size_t)(colon - s) >= hostlen || colon == s || !parse_int(colon + 1, 0, 65535, &p))
		return false;
	memcpy(host, s, (size_t)(colon - s));
	host[colon - s] = '\0';
	*port = (int)p;
	return true;
}

static void join_hostport(const char *host, int port, char *out, size_t cap)
{
	snprintf(out, cap, strchr(host, ':') ? "[%s]:%d" : "%s:%d", host, port);
}

/* A free TCP port on host: bind port 0, read it, release it. 0 on failure. */
static int free_port(const char *host)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE };
	struct addrinfo *res;
	int port = 0;

	if (getaddrinfo(host, "0", &hints, &res))
		return 0;
	for (struct addrinfo *ai = res; ai && !port; ai = ai->ai_next) {
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);
		int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);

		if (fd < 0)
			continue;
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && getsockname(fd, (struct sockaddr *)&ss, &sl) == 0)
			port = ntohs(ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port :
							       ((struct sockaddr_in6 *)&ss)->sin6_port);
		close(fd);
	}
	freeaddrinfo(res);
	return port;
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

/* ---- output ---- */

static void json_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\')
			fprintf(f, "\\%c", c);
		else if (c == '\n')
			fputs("\\n", f);
		else if (c < 0x20)
			fprintf(f, "\\u%04x", c);
		else
			fputc(c, f);
	}
	fputc('"', f);
}

static void json_num(FILE *f, double v)
{
	if (isfinite(v))
		fprintf(f, "%.3f", v);
	else
		fputs("null", f);
}

static const char *ll_str(int ll)
{
	return ll == IBC_RDMA_LL_ETH ? "Ethernet" : ll == IBC_RDMA_LL_IB ? "InfiniBand" : "?";
}

static void fmt_bytes(uint64_t v, char *buf, size_t cap)
{
	if (v == PING_MEMLOCK_UNLIMITED)
		snprintf(buf, cap, "unlimited");
	else if (v >= (1ull << 30) && v % (1ull << 30) == 0)
		snprintf(buf, cap, "%llu GiB", (unsigned long long)(v >> 30));
	else if (v >= (1ull << 20))
		snprintf(buf, cap, "%.0f MiB", v / 1048576.0);
	else
		snprintf(buf, cap, "%llu KiB", (unsigned long long)(v >> 10));
}

static void rdma_summary(const struct ping_report *r, char *buf, size_t cap)
{
	const struct ping_port *p = ping_used_port(r);

	if (p)
		snprintf(buf, cap, "%s:%d %s MTU %d GID %d", p->dev, p->port, ll_str(p->link_layer),
			 ibc_rdma_mtu_bytes(p->active_mtu), p->gid_used);
	else if (r->ndevs == 0)
		snprintf(buf, cap, "none (%s)", r->rdma_built ? "no RDMA device" : "built without rdma-core");
	else
		snprintf(buf, cap, "%d device(s), none usable", r->ndevs);
}

static bool same_ports(const struct ping_report *a, const struct ping_report *b)
{
	if (strcmp(a->host, b->host) || a->nports != b->nports || a->use != b->use)
		return false;
	for (int i = 0; i < a->nports; i++)
		if (memcmp(&a->ports[i], &b->ports[i], sizeof(a->ports[i])))
			return false;
	return true;
}

static void print_ports_text(FILE *f, const struct job *j)
{
	bool any = false;

	for (int r = 0; r < j->size; r++)
		any |= j->all[r].nports > 0;
	if (!any)
		return;
	fprintf(f, "\nRDMA ports (* the GID ibcomm uses):\n");
	for (int r = 0; r < j->size; r++) {
		const struct ping_report *x = &j->all[r];
		int same = -1;

		for (int q = 0; q < r && same < 0; q++)
			if (same_ports(&j->all[q], x))
				same = q;
		if (same >= 0) {
			fprintf(f, "  rank %d (%s): as rank %d\n", r, x->host, same);
			continue;
		}
		if (x->nports == 0)
			continue;
		for (int i = 0; i < x->nports; i++) {
			const struct ping_port *p = &x->ports[i];

			fprintf(f, "  rank %d (%s): %s:%d %s, %s, active MTU %d (max %d), netdev %s%s\n", r, x->host, p->dev,
				p->port, ping_port_state_str(p->state), ll_str(p->link_layer),
				ibc_rdma_mtu_bytes(p->active_mtu), ibc_rdma_mtu_bytes(p->max_mtu),
				p->netdev[0] ? p->netdev : "-", i == x->use ? " [in use]" : "");
			if (p->ngids)
				fprintf(f, "      %-5s %-7s %-11s %s\n", "index", "type", "kind", "GID");
			for (int g = 0; g < p->ngids; g++) {
				const struct ping_gid *e = &p->gids[g];
				char gs[64], pre[8] = "";

				ibc_rdma_gid_str(e->e.gid, gs, sizeof(gs));
				if (e->prefix)
					snprintf(pre, sizeof(pre), "/%u", e->prefix);
				fprintf(f, "    %c %-5d %-7s %-11s %s%s\n", e->e.index == p->gid_used ? '*' : ' ',
					e->e.index, ping_gid_type_str(e->e.type), ping_gid_family_str(e->e.gid), gs, pre);
			}
		}
	}
}

static void print_pairs_text(FILE *f, const struct job *j, const char *tp, const struct pair_result *res)
{
	fprintf(f, "\npairs over %s (setup: first round trip, with connection set-up; latency: %d round trips of 8 bytes; bandwidth: %d x %zu bytes):\n",
		tp, j->o.iters, j->o.bw_iters, j->o.size);
	fprintf(f, "  %-11s %9s %9s %9s %9s %10s  %s\n", "pair", "setup ms", "min us", "median us", "p99 us", "MB/s",
		"result");
	for (int i = 0; i < j->npairs; i++) {
		const struct pair_result *x = &res[i];
		char pair[32];

		snprintf(pair, sizeof(pair), "%d <-> %d", x->a, x->b);
		if (x->ok)
			fprintf(f, "  %-11s %9.3f %9.1f %9.1f %9.1f %10.1f  ok\n", pair, x->setup_ms, x->min_us, x->med_us,
				x->p99_us, x->bw_MBps);
		else
			fprintf(f, "  %-11s %9s %9s %9s %9s %10s  %s: %s\n", pair, "-", "-", "-", "-", "-",
				x->skipped ? "skipped" : "FAILED", x->err);
	}
}

/* The same problem of single ranks (same text and fix: the same host setup), printed once. */
static bool same_rank_problem(const struct ping_problem *a, const struct ping_problem *b)
{
	return a->peer < 0 && a->rank >= 0 && b->peer < 0 && b->rank >= 0 && !strcmp(a->what, b->what) &&
	       !strcmp(a->fix, b->fix);
}

/* Problems as printed: those of several ranks that read the same count once. */
static int distinct_problems(const struct ping_problems *pl)
{
	int n = pl->dropped;

	for (int i = 0; i < pl->n; i++) {
		bool seen = false;

		for (int k = 0; k < i && !seen; k++)
			seen = same_rank_problem(&pl->v[k], &pl->v[i]);
		n += !seen;
	}
	return n;
}

/* Problems of single ranks that read the same (same host setup) are printed once with their ranks. */
static void print_problems_text(FILE *f, const struct ping_problems *pl)
{
	bool *done;

	if (!pl->n)
		return;
	done = calloc((size_t)pl->n, sizeof(*done));
	fprintf(f, "\nproblems (%d):\n", distinct_problems(pl));
	for (int i = 0; i < pl->n; i++) {
		const struct ping_problem *p = &pl->v[i];
		int same = 0;

		if (done && done[i])
			continue;
		if (p->peer >= 0) {
			fprintf(f, "  ranks %d and %d: %s\n", p->rank, p->peer, p->what);
		} else if (p->rank < 0) {
			fprintf(f, "  %s\n", p->what);
		} else {
			for (int k = i + 1; done && k < pl->n; k++)
				same += same_rank_problem(&pl->v[k], p);
			if (!same) {
				fprintf(f, "  rank %d: %s\n", p->rank, p->what);
			} else {
				int shown = 0;

				fprintf(f, "  ranks %d", p->rank);
				for (int k = i + 1; k < pl->n; k++) {
					if (!same_rank_problem(&pl->v[k], p))
						continue;
					done[k] = true;
					if (++shown <= 15)
						fprintf(f, ",%d", pl->v[k].rank);
				}
				fprintf(f, "%s: %s\n", shown > 15 ? ",..." : "", p->what);
			}
		}
		fprintf(f, "    fix: %s\n", p->fix);
	}
	if (pl->dropped)
		fprintf(f, "  (%d more not shown)\n", pl->dropped);
	free(done);
}

static bool no_rdma_anywhere(const struct job *j)
{
	for (int r = 0; r < j->size; r++)
		if (j->all[r].ndevs > 0)
			return false;
	return true;
}

static void print_text(FILE *f, const struct job *j, bool ok)
{
	fprintf(f, "ibcomm_ping: %d rank%s, rendezvous %s\n", j->size, j->size == 1 ? "" : "s", j->root);
	fprintf(f, "  %4s  %-20s %-30s %-10s %s\n", "rank", "host", "tcp address (interface)", "memlock", "rdma");
	for (int r = 0; r < j->size; r++) {
		const struct ping_report *x = &j->all[r];
		char tcp[128], ml[32], rd[160];

		snprintf(tcp, sizeof(tcp), "%s (%s)", x->tcp_addr, x->tcp_if[0] ? x->tcp_if : "?");
		fmt_bytes(x->memlock, ml, sizeof(ml));
		rdma_summary(x, rd, sizeof(rd));
		fprintf(f, "  %4d  %-20s %-30s %-10s %s\n", r, x->host, tcp, ml, rd);
	}
	print_ports_text(f, j);
	if (j->size < 2)
		fprintf(f, "\n1 rank: no pair to measure (run it under ibcomm_run -n N, or --server / HOST by hand)\n");
	if (j->size >= 2)
		print_pairs_text(f, j, "tcp", j->tcp);
	if (j->rdma_tried)
		print_pairs_text(f, j, "rdma", j->rdma);
	else if (j->size >= 2)
		fprintf(f, "\nrdma: not measured (%s)\n",
			j->o.no_rdma ? "--no-rdma" :
			j->rdma_init_failed ? "every rank has a usable port, but the RDMA communicator could not be created: see the problems" :
			no_rdma_anywhere(j) ? "no rank has an RDMA device: TCP only, which is fine" :
					      "not every rank has a usable RDMA port: see the problems");
	print_problems_text(f, &j->pl);
	fprintf(f, "\nibcomm_ping: %s: %d rank%s, %d pair%s measured, %d failed, %d problem%s\n", ok ? "OK" : "FAILED",
		j->size, j->size == 1 ? "" : "s", j->npairs, j->npairs == 1 ? "" : "s", j->failed_pairs,
		distinct_problems(&j->pl), distinct_problems(&j->pl) == 1 ? "" : "s");
}

static void json_problems(FILE *f, const struct ping_problems *pl)
{
	fprintf(f, "  \"problems\": [");
	for (int i = 0; i < pl->n; i++) {
		const struct ping_problem *p = &pl->v[i];

		fprintf(f, "%s\n    {\"rank\": ", i ? "," : "");
		if (p->rank >= 0)
			fprintf(f, "%d", p->rank);
		else
			fputs("null", f);
		fputs(", \"peer\": ", f);
		if (p->peer >= 0)
			fprintf(f, "%d", p->peer);
		else
			fputs("null", f);
		fputs(", \"what\": ", f);
		json_str(f, p->what);
		fputs(", \"fix\": ", f);
		json_str(f, p->fix);
		fputc('}', f);
	}
	fprintf(f, "%s]", pl->n ? "\n  " : "");
}

static void json_pairs(FILE *f, const struct job *j, const char *tp, const struct pair_result *res, bool *first)
{
	for (int i = 0; i < j->npairs; i++) {
		const struct pair_result *x = &res[i];

		fprintf(f, "%s\n    {\"transport\": \"%s\", \"a\": %d, \"b\": %d, \"ok\": %s, \"setup_ms\": ", *first ? "" : ",",
			tp, x->a, x->b, x->ok ? "true" : "false");
		*first = false;
		json_num(f, x->ok ? x->setup_ms : NAN);
		fputs(", \"lat_min_us\": ", f);
		json_num(f, x->ok ? x->min_us : NAN);
		fputs(", \"lat_median_us\": ", f);
		json_num(f, x->ok ? x->med_us : NAN);
		fputs(", \"lat_p99_us\": ", f);
		json_num(f, x->ok ? x->p99_us : NAN);
		fputs(", \"bw_MBps\": ", f);
		json_num(f, x->ok ? x->bw_MBps : NAN);
		fputs(", \"error\": ", f);
		if (x->ok)
			fputs("null", f);
		else
			json_str(f, x->err);
		fputc('}', f);
	}
}

static void print_json(FILE *f, const struct job *j, bool ok)
{
	bool first = true;

	fprintf(f, "{\n  \"tool\": \"ibcomm_ping\",\n  \"ok\": %s,\n  \"nranks\": %d,\n  \"rendezvous\": ",
		ok ? "true" : "false", j->size);
	json_str(f, j->root);
	fprintf(f, ",\n  \"transports\": [\"tcp\"%s],\n  \"ranks\": [", j->rdma_tried ? ", \"rdma\"" : "");
	for (int r = 0; r < j->size; r++) {
		const struct ping_report *x = &j->all[r];

		fprintf(f, "%s\n    {\"rank\": %d, \"host\": ", r ? "," : "", r);
		json_str(f, x->host);
		fputs(", \"tcp_interface\": ", f);
		json_str(f, x->tcp_if);
		fputs(", \"tcp_address\": ", f);
		json_str(f, x->tcp_addr);
		fputs(", \"memlock_bytes\": ", f);
		if (x->memlock == PING_MEMLOCK_UNLIMITED)
			fputs("null", f);
		else
			fprintf(f, "%llu", (unsigned long long)x->memlock);
		fprintf(f, ", \"memlock_unlimited\": %s, \"privileged\": %s, \"rdma_built\": %s, \"rdma_devices\": %d, \"rdma_note\": ",
			x->memlock == PING_MEMLOCK_UNLIMITED ? "true" : "false", x->privileged ? "true" : "false",
			x->rdma_built ? "true" : "false", x->ndevs);
		json_str(f, x->rdma_note);
		fputs(", \"ports\": [", f);
		for (int i = 0; i < x->nports; i++) {
			const struct ping_port *p = &x->ports[i];

			fprintf(f, "%s\n      {\"device\": ", i ? "," : "");
			json_str(f, p->dev);
			fprintf(f, ", \"port\": %d, \"state\": \"%s\", \"link_layer\": \"%s\", \"active_mtu\": %d, \"max_mtu\": %d, \"netdev\": ",
				p->port, ping_port_state_str(p->state), ll_str(p->link_layer), ibc_rdma_mtu_bytes(p->active_mtu),
				ibc_rdma_mtu_bytes(p->max_mtu));
			json_str(f, p->netdev);
			fprintf(f, ", \"in_use\": %s, \"gid_used\": ", i == x->use ? "true" : "false");
			if (p->gid_used >= 0)
				fprintf(f, "%d", p->gid_used);
			else
				fputs("null", f);
			fputs(", \"gids\": [", f);
			for (int g = 0; g < p->ngids; g++) {
				char gs[64];

				ibc_rdma_gid_str(p->gids[g].e.gid, gs, sizeof(gs));
				fprintf(f, "%s{\"index\": %d, \"type\": \"%s\", \"kind\": \"%s\", \"gid\": \"%s\", \"prefix\": %u}",
					g ? ", " : "", p->gids[g].e.index, ping_gid_type_str(p->gids[g].e.type),
					ping_gid_family_str(p->gids[g].e.gid), gs, p->gids[g].prefix);
			}
			fputs("]}", f);
		}
		fprintf(f, "%s]}", x->nports ? "\n    " : "");
	}
	fputs("\n  ],\n  \"pairs\": [", f);
	if (j->size >= 2)
		json_pairs(f, j, "tcp", j->tcp, &first);
	if (j->rdma_tried)
		json_pairs(f, j, "rdma", j->rdma, &first);
	fprintf(f, "%s],\n", first ? "" : "\n  ");
	json_problems(f, &j->pl);
	fprintf(f, ",\n  \"failed_pairs\": %d\n}\n", j->failed_pairs);
}

/* ---- a rank that cannot join: its own diagnosis ---- */

static void init_fix(const char *root, bool pair, ibcomm_status_t st, const char *err, char *what, size_t wlen, char *fix,
		     size_t flen)
{
	char host[256] = "?";
	int port = 0;

	split_hostport(root, host, sizeof(host), &port);
	if (strstr(err, "could not reach the rendezvous")) {
		snprintf(what, wlen, "rendezvous unreachable at %s (IBCOMM_ROOT): %s", root, err);
		if (strstr(err, "refused"))
			snprintf(fix, flen,
				 "nothing listens on %s port %d: start rank 0 first (ibcomm_ping --server --port %d there), check the host and port, and let TCP port %d through its firewall",
				 host, port, port, port);
		else
			snprintf(fix, flen,
				 "%s port %d does not answer: check the address (ping %s) and open TCP port %d in the firewall of rank 0's host (firewall-cmd --add-port=%d/tcp, or iptables -I INPUT -p tcp --dport %d -j ACCEPT)",
				 host, port, host, port, port, port);
	} else if (strstr(err, "cannot resolve")) {
		snprintf(what, wlen, "rendezvous host of %s does not resolve: %s", root, err);
		snprintf(fix, flen, "check the name (getent hosts %s) or give rank 0's IP address in IBCOMM_ROOT", host);
	} else if (strstr(err, "EADDRINUSE")) {
		snprintf(what, wlen, "rendezvous port taken: %s", err);
		snprintf(fix, flen, "choose a free port (--port P, or another port in IBCOMM_ROOT), or stop what holds %d", port);
	} else if (strstr(err, "cannot serve the rendezvous")) {
		snprintf(what, wlen, "rank 0 cannot serve the rendezvous at %s: %s", root, err);
		snprintf(fix, flen, "IBCOMM_ROOT on rank 0 must be an address of rank 0's host (or 0.0.0.0)");
	} else if (st == IBCOMM_ERR_TIMEOUT && strstr(err, "missing ranks") && pair) {
		snprintf(what, wlen, "no client joined the server at %s within the deadline", root);
		snprintf(fix, flen,
			 "run 'ibcomm_ping THIS_HOST:%d' on the other host within --timeout, and let TCP port %d through this host's firewall",
			 port, port);
	} else if (st == IBCOMM_ERR_TIMEOUT && strstr(err, "missing ranks")) {
		snprintf(what, wlen, "not every rank joined the rendezvous at %s: %s", root, err);
		snprintf(fix, flen,
			 "start the missing ranks with IBCOMM_ROOT=%s and the same IBCOMM_SIZE, and let TCP port %d through the firewall",
			 root, port);
	} else if (st == IBCOMM_ERR_TIMEOUT) {
		snprintf(what, wlen, "the job did not assemble at %s: %s", root, err);
		snprintf(fix, flen, "start every rank with the same IBCOMM_SIZE and IBCOMM_ROOT; rank 0's output names the missing ranks");
	} else if (st == IBCOMM_ERR_AUTH) {
		snprintf(what, wlen, "%s", err);
		snprintf(fix, flen, "give every rank the same IBCOMM_JOB_KEY");
	} else {
		snprintf(what, wlen, "%s", err);
		snprintf(fix, flen, "correct the setting named above; IBCOMM_DEBUG=INFO shows more");
	}
}

static void print_local_failure(const struct job *j, const struct ping_problems *pl, const char *why)
{
	FILE *f = stdout;

	if (j->o.json) {
		fprintf(f, "{\n  \"tool\": \"ibcomm_ping\",\n  \"ok\": false,\n  \"rank\": %d,\n  \"nranks\": %d,\n  \"rendezvous\": ",
			j->rank, j->size);
		json_str(f, j->root);
		fputs(",\n  \"error\": ", f);
		json_str(f, why);
		fputs(",\n", f);
		json_problems(f, pl);
		fputs("\n}\n", f);
	} else {
		fprintf(f, "ibcomm_ping: rank %d of %d (%s), rendezvous %s: %s\n", j->rank, j->size, j->me.host, j->root, why);
		print_problems_text(f, pl);
		fprintf(f, "ibcomm_ping: FAILED\n");
	}
	fflush(f);
}

/* ---- measurements ---- */

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static void pair_fail(ibcomm_t *m, struct pair_result *res, const char *step)
{
	res->ok = false;
	snprintf(res->err, sizeof(res->err), "%s: %s", step, ibcomm_last_error(m));
}

/* Rank a drives, rank b answers; a's result is the pair's. */
static void measure_pair(ibcomm_t *m, const struct opts *o, int a, int b, double *rtt, void *big,
			 struct pair_result *res)
{
	int me = ibcomm_rank(m), peer = me == a ? b : a;
	uint8_t small[8] = { 0 };
	double t0;

	memset(res, 0, sizeof(*res));
	res->a = a;
	res->b = b;
	res->ok = true;
	if (me == a) {
		t0 = now_s();
		if (ibcomm_send(m, small, 1, IBCOMM_UINT8, peer, TAG_SETUP) ||
		    ibcomm_recv(m, small, 1, IBCOMM_UINT8, peer, TAG_SETUP))
			return pair_fail(m, res, "set-up round trip");
		res->setup_ms = (now_s() - t0) * 1e3;
		for (int i = -10; i < o->iters; i++) {
			t0 = now_s();
			if (ibcomm_send(m, small, 8, IBCOMM_UINT8, peer, TAG_LAT) ||
			    ibcomm_recv(m, small, 8, IBCOMM_UINT8, peer, TAG_LAT))
				return pair_fail(m, res, "latency round trip");
			if (i >= 0)
				rtt[i] = (now_s() - t0) * 1e6;
		}
		qsort(rtt, (size_t)o->iters, sizeof(*rtt), cmp_double);
		res->min_us = rtt[0];
		res->med_us = rtt[o->iters / 2];
		res->p99_us = rtt[(int)ceil(0.99 * o->iters) - 1];
		t0 = now_s();
		for (int i = 0; i < o->bw_iters; i++)
			if (ibcomm_send(m, big, o->size, IBCOMM_UINT8, peer, TAG_BW))
				return pair_fail(m, res, "bandwidth send");
		if (ibcomm_recv(m, small, 1, IBCOMM_UINT8, peer, TAG_ACK))
			return pair_fail(m, res, "bandwidth acknowledgement");
		res->bw_MBps = (double)o->size * o->bw_iters / (now_s() - t0) / 1e6;
		return;
	}
	if (ibcomm_recv(m, small, 1, IBCOMM_UINT8, peer, TAG_SETUP) ||
	    ibcomm_send(m, small, 1, IBCOMM_UINT8, peer, TAG_SETUP))
		return pair_fail(m, res, "set-up round trip");
	for (int i = -10; i < o->iters; i++)
		if (ibcomm_recv(m, small, 8, IBCOMM_UINT8, peer, TAG_LAT) ||
		    ibcomm_send(m, small, 8, IBCOMM_UINT8, peer, TAG_LAT))
			return pair_fail(m, res, "latency round trip");
	for (int i = 0; i < o->bw_iters; i++)
		if (ibcomm_recv(m, big, o->size, IBCOMM_UINT8, peer, TAG_BW))
			return pair_fail(m, res, "bandwidth receive");
	if (ibcomm_send(m, small, 1, IBCOMM_UINT8, peer, TAG_ACK))
		return pair_fail(m, res, "bandwidth acknowledgement");
}

static size_t result_encode(const struct pair_result *r, uint8_t *buf)
{
	ibc_wbuf_t w = ibc_wbuf(buf, PING_RESULT_BYTES);
	double v[5] = { r->setup_ms, r->min_us, r->med_us, r->p99_us, r->bw_MBps };
	size_t n = strnlen(r->err, sizeof(r->err) - 1);

	memset(buf, 0, PING_RESULT_BYTES);
	ibc_w_u32(&w, (uint32_t)r->a);
	ibc_w_u32(&w, (uint32_t)r->b);
	ibc_w_u8(&w, r->ok);
	for (int i = 0; i < 5; i++) {
		uint64_t u;

		memcpy(&u, &v[i], 8);
		ibc_w_u64(&w, u);
	}
	ibc_w_u16(&w, (uint16_t)n);
	ibc_w_bytes(&w, r->err, n);
	return w.ok ? PING_RESULT_BYTES : 0;
}

static bool result_decode(const uint8_t *buf, struct pair_result *r)
{
	ibc_rbuf_t rb = ibc_rbuf(buf, PING_RESULT_BYTES);
	double v[5];
	const uint8_t *s;
	uint16_t n;

	memset(r, 0, sizeof(*r));
	r->a = (int)ibc_r_u32(&rb);
	r->b = (int)ibc_r_u32(&rb);
	r->ok = ibc_r_u8(&rb) != 0;
	for (int i = 0; i < 5; i++) {
		uint64_t u = ibc_r_u64(&rb);

		memcpy(&v[i], &u, 8);
	}
	n = ibc_r_u16(&rb);
	if (n >= sizeof(r->err))
		return false;
	s = ibc_r_bytes(&rb, n);
	if (!rb.ok || !s)
		return false;
	memcpy(r->err, s, n);
	r->err[n] = '\0';
	r->setup_ms = v[0];
	r->min_us = v[1];
	r->med_us = v[2];
	r->p99_us = v[3];
	r->bw_MBps = v[4];
	return true;
}

/*
 * Measures every pair on m, one after the other, with the control communicator keeping the
 * ranks in step (an allgather of "my m has failed" flags before each pair) and carrying the
 * results of the pairs a rank drives to rank 0. This is the side of ranks other than 0;
 * returns an error only when the control communicator itself fails.
 */
static ibcomm_status_t measure_all(struct job *j, ibcomm_t *m)
{
	int32_t broken = 0, *flags = calloc((size_t)j->size, sizeof(*flags));
	double *rtt = malloc((size_t)j->o.iters * sizeof(*rtt));
	void *big = calloc(1, j->o.size);
	uint8_t rbuf[PING_RESULT_BYTES];
	ibcomm_status_t st = IBCOMM_OK;

	if (!flags || !rtt || !big) {
		fprintf(stderr, "ibcomm_ping: rank %d: out of memory\n", j->rank);
		st = IBCOMM_ERR_NOMEM;
		goto out;
	}
	for (int i = 0; i < j->npairs; i++) {
		int a = j->pairs[i].a, b = j->pairs[i].b;
		struct pair_result mine;

		st = ibcomm_allgather(j->ctl, &broken, flags, 1, IBCOMM_INT32);
		if (st)
			goto out;
		if (flags[a] || flags[b] || (j->rank != a && j->rank != b))
			continue;
		measure_pair(m, &j->o, a, b, rtt, big, &mine);
		if (!mine.ok)
			broken = 1;
		if (j->rank != a)
			continue;
		result_encode(&mine, rbuf);
		st = ibcomm_send(j->ctl, rbuf, PING_RESULT_BYTES, IBCOMM_UINT8, 0, TAG_ACK + 1);
		if (st)
			goto out;
	}
out:
	free(big);
	free(rtt);
	free(flags);
	return st;
}

/* Rank 0's side of measure_all: receives the results of pairs driven by other ranks. */
static ibcomm_status_t measure_all_root(struct job *j, ibcomm_t *m, const char *tp, struct pair_result *res)
{
	int32_t broken = 0, *flags = calloc((size_t)j->size, sizeof(*flags));
	double *rtt = malloc((size_t)j->o.iters * sizeof(*rtt));
	void *big = calloc(1, j->o.size);
	uint8_t rbuf[PING_RESULT_BYTES];
	ibcomm_status_t st = IBCOMM_OK;

	if (!flags || !rtt || !big) {
		fprintf(stderr, "ibcomm_ping: rank 0: out of memory\n");
		st = IBCOMM_ERR_NOMEM;
		goto out;
	}
	for (int i = 0; i < j->npairs; i++) {
		int a = j->pairs[i].a, b = j->pairs[i].b;

		memset(&res[i], 0, sizeof(res[i]));
		res[i].a = a;
		res[i].b = b;
		st = ibcomm_allgather(j->ctl, &broken, flags, 1, IBCOMM_INT32);
		if (st)
			goto out;
		if (flags[a] || flags[b]) {
			res[i].skipped = true;
			snprintf(res[i].err, sizeof(res[i].err), "the %s communicator of rank %d failed earlier", tp,
				 flags[a] ? a : b);
			continue;
		}
		if (a == 0 || b == 0) {
			measure_pair(m, &j->o, a, b, rtt, big, &res[i]);
			if (!res[i].ok)
				broken = 1;
			if (a == 0)
				continue;
			/* b == 0: the result comes from a */
		}
		st = ibcomm_recv(j->ctl, rbuf, PING_RESULT_BYTES, IBCOMM_UINT8, a, TAG_ACK + 1);
		if (st)
			goto out;
		if (!result_decode(rbuf, &res[i])) {
			res[i].ok = false;
			snprintf(res[i].err, sizeof(res[i].err), "rank %d sent a malformed result", a);
		}
		res[i].a = a;
		res[i].b = b;
	}
out:
	free(big);
	free(rtt);
	free(flags);
	return st;
}

static ibcomm_status_t measure(struct job *j, ibcomm_t *m, const char *tp, struct pair_result *res)
{
	return j->rank == 0 ? measure_all_root(j, m, tp, res) : measure_all(j, m);
}

/* ---- pairs ---- */

static void add_pair(struct job *j, int a, int b)
{
	if (a == b)
		return;
	for (int i = 0; i < j->npairs; i++)
		if ((j->pairs[i].a == a && j->pairs[i].b == b) || (j->pairs[i].a == b && j->pairs[i].b == a))
			return;
	j->pairs[j->npairs++] = (struct pair){ a, b };
}

/* Ring neighbours, binomial-tree edges, and a sample: the same list on every rank. */
static bool make_pairs(struct job *j)
{
	int n = j->size;
	uint64_t x = j->o.seed * 2654435761u + 88172645463325252ull;

	j->pairs = calloc((size_t)(2 * n + j->o.sample + 1), sizeof(*j->pairs));
	if (!j->pairs)
		return false;
	if (n < 2)
		return true;
	for (int r = 0; r < n; r++)
		add_pair(j, r, (r + 1) % n);
	for (int r = 1; r < n; r++)
		add_pair(j, r & (r - 1), r);
	if (n > 8) {
		for (int k = 0, tries = 0; k < j->o.sample && tries < 100 * j->o.sample; tries++) {
			int before = j->npairs, a, b;

			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
			a = (int)(x % (uint64_t)n);
			b = (int)((x >> 32) % (uint64_t)n);
			add_pair(j, a, b);
			k += j->npairs > before;
		}
	}
	return true;
}

/* ---- the RDMA phase ---- */

/* The one-line fix for an RDMA communicator that could not be created, from its error. */
static const char *rdma_init_fix(const char *err, const struct ping_report *r)
{
	if (strstr(err, "locked-memory") || strstr(err, "memlock") ||
	    (strstr(err, "ibv_reg_mr") && strstr(err, "Cannot allocate memory")))
		return r->memlock != PING_MEMLOCK_UNLIMITED && !r->privileged ?
			       "raise the memlock limit: ulimit -l unlimited in the job script, '* - memlock unlimited' in /etc/security/limits.conf, or LimitMEMLOCK=infinity for a systemd service" :
			       "the memory could not be pinned: check the memlock limit of the job (ulimit -l) and free memory";
	if (strstr(err, "cannot open RDMA device") && strstr(err, "Permission denied"))
		return "give the user access to /dev/infiniband/uverbs* (udev rule MODE=\"0666\" or the rdma group)";
	return "the message names the cause; IBCOMM_DEBUG=INFO IBCOMM_TRANSPORT=rdma shows more";
}

static void rdma_phase(struct job *j)
{
	ibcomm_config_t cfg = IBCOMM_CONFIG_INIT;
	char host[256] = "", root[300], err[PING_ERR_BYTES] = "";
	char *errs = NULL;
	int32_t port = 0, ok, *oks = NULL;
	int dummy = 0;
	ibcomm_t *m = NULL;
	ibcomm_status_t st;

	split_hostport(j->root, host, sizeof(host), &dummy);
	if (j->rank == 0)
		port = free_port(host);
	if (ibcomm_broadcast(j->ctl, &port, 1, IBCOMM_INT32, 0))
		return;
	if (port <= 0) {
		if (j->rank == 0)
			ping_problem_add(&j->pl, 0, -1, "check that rank 0 may bind TCP ports on its rendezvous address",
					 "no free TCP port on %s for the RDMA communicator's rendezvous", host);
		return;
	}
	join_hostport(host, port, root, sizeof(root));
	cfg.rank = j->rank;
	cfg.nranks = j->size;
	cfg.root = root;
	cfg.transport = "rdma";
	cfg.timeout_ms = j->o.timeout_ms;
	st = ibcomm_init(&cfg, &m);
	if (st)
		snprintf(err, sizeof(err), "%s", ibcomm_last_error(NULL));
	else if (strcmp(ibcomm_transport(m), "rdma"))
		snprintf(err, sizeof(err), "rank %d: asked for rdma, got %s", j->rank, ibcomm_transport(m));
	ok = !err[0];
	oks = calloc((size_t)j->size, sizeof(*oks));
	errs = j->rank == 0 ? calloc((size_t)j->size, PING_ERR_BYTES) : NULL;
	if (!oks || (j->rank == 0 && !errs))
		goto out;
	if (ibcomm_allgather(j->ctl, &ok, oks, 1, IBCOMM_INT32))
		goto out;
	if (ibcomm_gather(j->ctl, err, errs, PING_ERR_BYTES, IBCOMM_UINT8, 0))
		goto out;
	for (int r = 0; r < j->size; r++) {
		if (oks[r])
			continue;
		j->rdma_init_failed = true;
		if (j->rank == 0) {
			const char *e = errs + (size_t)r * PING_ERR_BYTES;

			errs[(size_t)r * PING_ERR_BYTES + PING_ERR_BYTES - 1] = '\0';
			ping_problem_add(&j->pl, r, -1, rdma_init_fix(e, &j->all[r]), "cannot create an RDMA communicator: %s",
					 e);
		}
		goto out; /* every rank sees the same flags */
	}
	j->rdma_tried = true;
	if (measure(j, m, "rdma", j->rdma))
		goto out;
	if (j->rank == 0) {
		for (int i = 0; i < j->npairs; i++) {
			if (j->rdma[i].ok || !j->tcp[i].ok)
				continue;
			ping_problem_add(&j->pl, j->rdma[i].a, j->rdma[i].b,
					 "check that both use RoCEv2 GIDs in one subnet (above), that UDP port 4791 is open between the hosts, and IBCOMM_DEBUG=INFO",
					 "reachable over TCP but not over RDMA: %s", j->rdma[i].err);
		}
	}
out:
	ibcomm_destroy(m);
	free(oks);
	free(errs);
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
			if (!parse_int(optarg, 0, 65535, &v))
				goto bad;
			o->port = (int)v;
			break;
		case 'B': o->bind = optarg; break;
		case 'j': o->json = true; break;
		case 'o': o->output = optarg; break;
		case 'n':
			if (!parse_int(optarg, 1, 10000000, &v))
				goto bad;
			o->iters = (int)v;
			break;
		case 'S':
			if (!parse_size(optarg, &o->size))
				goto bad;
			break;
		case 'b':
			if (!parse_int(optarg, 1, 1000000, &v))
				goto bad;
			o->bw_iters = (int)v;
			break;
		case 'k':
			if (!parse_int(optarg, 0, 100000, &v))
				goto bad;
			o->sample = (int)v;
			break;
		case 'r':
			if (!parse_int(optarg, 0, 0x7fffffff, &v))
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
		if (!j.all || !j.tcp || !j.rdma) {
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
		for (int i = 0; i < j.npairs; i++)
			ping_diag_pair(&j.all[j.pairs[i].a], &j.all[j.pairs[i].b], &j.pl);
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
		st = measure(&j, m, "tcp", j.tcp);
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

	/* verdict, report, and the same exit status on every rank */
	if (j.pair_mode) {
		int32_t cjson = j.o.json; /* the client's choice of format, for the copy it prints */

		if (ibcomm_broadcast(j.ctl, &cjson, 1, IBCOMM_INT32, 1))
			goto out_abort;
		client_json = cjson != 0;
	}
	if (j.rank == 0) {
		for (int i = 0; i < j.npairs; i++) {
			j.failed_pairs += !j.tcp[i].ok;
			if (j.rdma_tried)
				j.failed_pairs += !j.rdma[i].ok;
		}
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
	free(j.pairs);
	free(j.pv);
	return 1;
}
