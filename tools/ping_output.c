/* ibcomm_ping: the report as text and as JSON, and the diagnosis of a rank that cannot join. */
#define _GNU_SOURCE
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ping.h"
#include "tool_util.h"

/* Messages are cut to their buffers on purpose: a long host name must not fail the report. */
#pragma GCC diagnostic ignored "-Wformat-truncation"

/* ---- output ---- */

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

/* One line per pair measured over tp (same_host_only: the pairs of ranks on one host). */
static void print_pairs_text(FILE *f, const struct job *j, const char *tp, const struct pair_result *res,
			     bool same_host_only)
{
	fprintf(f, "\npairs over %s%s (setup: first round trip, with connection set-up; latency: %d round trips of 8 bytes; bandwidth: %d x %zu bytes):\n",
		tp, same_host_only ? ", the pairs on one host" : "", j->o.iters, j->o.bw_iters, j->o.size);
	fprintf(f, "  %-11s %9s %9s %9s %9s %10s  %s\n", "pair", "setup ms", "min us", "median us", "p99 us", "MB/s",
		"result");
	for (int i = 0; i < j->npairs; i++) {
		const struct pair_result *x = &res[i];
		char pair[32];

		if (same_host_only && !same_host(j, j->pairs[i].a, j->pairs[i].b))
			continue;
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

/* The measurement of pair i over the transport IBCOMM_TRANSPORT=auto gives it; NULL when not measured. */
static const struct pair_result *route_result(const struct job *j, int i)
{
	const char *r = j->route[i];

	if (!strcmp(r, "shm"))
		return j->shm_tried ? &j->shm[i] : NULL;
	if (!strcmp(r, "rdma"))
		return j->rdma_tried ? &j->rdma[i] : NULL;
	return &j->tcp[i];
}

/* Each pair's transport under IBCOMM_TRANSPORT=auto, with that path's figures. */
static void print_routes_text(FILE *f, const struct job *j)
{
	fprintf(f, "\ntransport per pair under IBCOMM_TRANSPORT=auto: %s (shared memory within a host, the network between hosts):\n",
		j->auto_tp);
	fprintf(f, "  %-11s %-9s %-9s %9s %10s  %s\n", "pair", "transport", "hosts", "median us", "MB/s", "result");
	for (int i = 0; i < j->npairs; i++) {
		const struct pair_result *x = route_result(j, i);
		int a = j->pairs[i].a, b = j->pairs[i].b;
		char pair[32], hosts[32];

		snprintf(pair, sizeof(pair), "%d <-> %d", a, b);
		snprintf(hosts, sizeof(hosts), "%d%s%d", j->host_of ? j->host_of[a] : 0, same_host(j, a, b) ? " = " : " / ",
			 j->host_of ? j->host_of[b] : 0);
		if (!x)
			fprintf(f, "  %-11s %-9s %-9s %9s %10s  not measured (above)\n", pair, j->route[i], hosts, "-", "-");
		else if (x->ok)
			fprintf(f, "  %-11s %-9s %-9s %9.1f %10.1f  ok\n", pair, j->route[i], hosts, x->med_us, x->bw_MBps);
		else
			fprintf(f, "  %-11s %-9s %-9s %9s %10s  %s (above)\n", pair, j->route[i], hosts, "-", "-",
				x->skipped ? "skipped" : "FAILED");
	}
	fprintf(f, "  (hosts: the library's host of each rank, numbered in the order of their lowest ranks, from the host name, boot id and IPC namespace the ranks exchange; a rank without a writable /dev/shm is a host of its own)\n");
}

static bool no_rdma_anywhere(const struct job *j)
{
	for (int r = 0; r < j->size; r++)
		if (j->all[r].ndevs > 0)
			return false;
	return true;
}

void print_text(FILE *f, const struct job *j, bool ok)
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
		print_pairs_text(f, j, "tcp", j->tcp, false);
	if (j->rdma_tried)
		print_pairs_text(f, j, "rdma", j->rdma, false);
	else if (j->size >= 2)
		fprintf(f, "\nrdma: not measured (%s)\n",
			j->o.no_rdma ? "--no-rdma" :
			j->rdma_init_failed ? "every rank has a usable port, but the RDMA communicator could not be created: see the problems" :
			no_rdma_anywhere(j) ? "no rank has an RDMA device: TCP only, which is fine" :
					      "not every rank has a usable RDMA port: see the problems");
	if (j->shm_tried)
		print_pairs_text(f, j, "shm", j->shm, true);
	if (j->size >= 2)
		print_routes_text(f, j);
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
		tool_json_str(f, p->what);
		fputs(", \"fix\": ", f);
		tool_json_str(f, p->fix);
		fputc('}', f);
	}
	fprintf(f, "%s]", pl->n ? "\n  " : "");
}

static void json_pairs(FILE *f, const struct job *j, const char *tp, const struct pair_result *res, bool same_host_only,
		       bool *first)
{
	for (int i = 0; i < j->npairs; i++) {
		const struct pair_result *x = &res[i];

		if (same_host_only && !same_host(j, j->pairs[i].a, j->pairs[i].b))
			continue;
		fprintf(f, "%s\n    {\"transport\": \"%s\", \"a\": %d, \"b\": %d, \"ok\": %s, \"setup_ms\": ", *first ? "" : ",",
			tp, x->a, x->b, x->ok ? "true" : "false");
		*first = false;
		tool_json_num(f, "%.3f", x->ok ? x->setup_ms : NAN);
		fputs(", \"lat_min_us\": ", f);
		tool_json_num(f, "%.3f", x->ok ? x->min_us : NAN);
		fputs(", \"lat_median_us\": ", f);
		tool_json_num(f, "%.3f", x->ok ? x->med_us : NAN);
		fputs(", \"lat_p99_us\": ", f);
		tool_json_num(f, "%.3f", x->ok ? x->p99_us : NAN);
		fputs(", \"bw_MBps\": ", f);
		tool_json_num(f, "%.3f", x->ok ? x->bw_MBps : NAN);
		fputs(", \"error\": ", f);
		if (x->ok)
			fputs("null", f);
		else
			tool_json_str(f, x->err);
		fputc('}', f);
	}
}

void print_json(FILE *f, const struct job *j, bool ok)
{
	bool first = true;

	fprintf(f, "{\n  \"tool\": \"ibcomm_ping\",\n  \"ok\": %s,\n  \"nranks\": %d,\n  \"rendezvous\": ",
		ok ? "true" : "false", j->size);
	tool_json_str(f, j->root);
	fprintf(f, ",\n  \"transports\": [\"tcp\"%s%s],\n  \"auto_transport\": \"%s\",\n  \"ranks\": [",
		j->rdma_tried ? ", \"rdma\"" : "", j->shm_tried ? ", \"shm\"" : "", j->auto_tp);
	for (int r = 0; r < j->size; r++) {
		const struct ping_report *x = &j->all[r];

		fprintf(f, "%s\n    {\"rank\": %d, \"host\": ", r ? "," : "", r);
		tool_json_str(f, x->host);
		fprintf(f, ", \"host_group\": %d", j->host_of ? j->host_of[r] : 0);
		fputs(", \"tcp_interface\": ", f);
		tool_json_str(f, x->tcp_if);
		fputs(", \"tcp_address\": ", f);
		tool_json_str(f, x->tcp_addr);
		fputs(", \"memlock_bytes\": ", f);
		if (x->memlock == PING_MEMLOCK_UNLIMITED)
			fputs("null", f);
		else
			fprintf(f, "%llu", (unsigned long long)x->memlock);
		fprintf(f, ", \"memlock_unlimited\": %s, \"privileged\": %s, \"rdma_built\": %s, \"rdma_devices\": %d, \"rdma_note\": ",
			x->memlock == PING_MEMLOCK_UNLIMITED ? "true" : "false", x->privileged ? "true" : "false",
			x->rdma_built ? "true" : "false", x->ndevs);
		tool_json_str(f, x->rdma_note);
		fputs(", \"ports\": [", f);
		for (int i = 0; i < x->nports; i++) {
			const struct ping_port *p = &x->ports[i];

			fprintf(f, "%s\n      {\"device\": ", i ? "," : "");
			tool_json_str(f, p->dev);
			fprintf(f, ", \"port\": %d, \"state\": \"%s\", \"link_layer\": \"%s\", \"active_mtu\": %d, \"max_mtu\": %d, \"netdev\": ",
				p->port, ping_port_state_str(p->state), ll_str(p->link_layer), ibc_rdma_mtu_bytes(p->active_mtu),
				ibc_rdma_mtu_bytes(p->max_mtu));
			tool_json_str(f, p->netdev);
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
		json_pairs(f, j, "tcp", j->tcp, false, &first);
	if (j->rdma_tried)
		json_pairs(f, j, "rdma", j->rdma, false, &first);
	if (j->shm_tried)
		json_pairs(f, j, "shm", j->shm, true, &first);
	fprintf(f, "%s],\n  \"pair_transports\": [", first ? "" : "\n  ");
	for (int i = 0; i < j->npairs; i++) {
		const struct pair_result *x = route_result(j, i);

		fprintf(f, "%s\n    {\"a\": %d, \"b\": %d, \"transport\": \"%s\", \"measured\": %s, \"ok\": %s}", i ? "," : "",
			j->pairs[i].a, j->pairs[i].b, j->route[i], x ? "true" : "false", x && x->ok ? "true" : "false");
	}
	fprintf(f, "%s],\n", j->npairs ? "\n  " : "");
	json_problems(f, &j->pl);
	fprintf(f, ",\n  \"failed_pairs\": %d\n}\n", j->failed_pairs);
}

/* ---- a rank that cannot join: its own diagnosis ---- */

void init_fix(const char *root, bool pair, ibcomm_status_t st, const char *err, char *what, size_t wlen, char *fix,
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

void print_local_failure(const struct job *j, const struct ping_problems *pl, const char *why)
{
	FILE *f = stdout;

	if (j->o.json) {
		fprintf(f, "{\n  \"tool\": \"ibcomm_ping\",\n  \"ok\": false,\n  \"rank\": %d,\n  \"nranks\": %d,\n  \"rendezvous\": ",
			j->rank, j->size);
		tool_json_str(f, j->root);
		fputs(",\n  \"error\": ", f);
		tool_json_str(f, why);
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
