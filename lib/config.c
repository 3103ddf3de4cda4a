/*
 * Settings of a communicator: the fields of ibcomm_config_t override the IBCOMM_*
 * environment, which overrides the defaults. Every bad value is an error that names the
 * variable (or config field) and the value; nothing is silently ignored or clamped.
 */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ibc.h"
#include "sock.h"
#include "launch/launch.h"

/* ---- algorithms ---- */

static const char *const coll_names[IBC_COLL_COUNT] = {
	[IBC_COLL_ALLREDUCE] = "allreduce",	    [IBC_COLL_BROADCAST] = "broadcast",
	[IBC_COLL_REDUCE] = "reduce",		    [IBC_COLL_ALLGATHER] = "allgather",
	[IBC_COLL_REDUCE_SCATTER] = "reduce_scatter", [IBC_COLL_GATHER] = "gather",
	[IBC_COLL_SCATTER] = "scatter",		    [IBC_COLL_ALLTOALL] = "alltoall",
	[IBC_COLL_BARRIER] = "barrier",
	[IBC_COLL_ALLGATHERV] = "allgatherv",	    [IBC_COLL_ALLTOALLV] = "alltoallv",
};

static const char *const algo_names[IBC_ALGO_COUNT] = {
	[IBC_ALGO_AUTO] = "auto",     [IBC_ALGO_RING] = "ring",	      [IBC_ALGO_RD] = "rd",
	[IBC_ALGO_TREE] = "tree",     [IBC_ALGO_PIPELINE] = "pipeline", [IBC_ALGO_LINEAR] = "linear",
	[IBC_ALGO_PAIRWISE] = "pairwise", [IBC_ALGO_DISSEM] = "dissem", [IBC_ALGO_HIER] = "hier",
};

#define A(x) (1u << IBC_ALGO_##x)
/* The algorithms each collective implements (the algorithm code relies on this table). */
static const unsigned coll_algos[IBC_COLL_COUNT] = {
	[IBC_COLL_ALLREDUCE] = A(AUTO) | A(RING) | A(RD) | A(TREE) | A(HIER),
	[IBC_COLL_BROADCAST] = A(AUTO) | A(TREE) | A(PIPELINE) | A(RD) | A(HIER),
	[IBC_COLL_REDUCE] = A(AUTO) | A(TREE) | A(LINEAR),
	[IBC_COLL_ALLGATHER] = A(AUTO) | A(RING) | A(LINEAR) | A(RD),
	[IBC_COLL_REDUCE_SCATTER] = A(AUTO) | A(RING) | A(LINEAR),
	[IBC_COLL_GATHER] = A(AUTO) | A(TREE) | A(LINEAR),
	[IBC_COLL_SCATTER] = A(AUTO) | A(TREE) | A(LINEAR),
	[IBC_COLL_ALLTOALL] = A(AUTO) | A(PAIRWISE) | A(LINEAR),
	[IBC_COLL_BARRIER] = A(AUTO) | A(DISSEM) | A(TREE),
	[IBC_COLL_ALLGATHERV] = A(AUTO) | A(RING) | A(LINEAR),
	[IBC_COLL_ALLTOALLV] = A(AUTO) | A(PAIRWISE) | A(LINEAR),
};
#undef A

const char *ibc_algo_name(enum ibc_algo a)
{
	return (unsigned)a < IBC_ALGO_COUNT ? algo_names[a] : "?";
}

const char *ibc_coll_name(enum ibc_coll c)
{
	return (unsigned)c < IBC_COLL_COUNT ? coll_names[c] : "?";
}

/* Appends the names of the algorithms in mask, comma separated, to buf. */
static void list_algos(unsigned mask, char *buf, size_t len)
{
	size_t off = 0;

	buf[0] = '\0';
	for (int a = 0; a < IBC_ALGO_COUNT; a++) {
		if (!(mask & (1u << a)))
			continue;
		int n = snprintf(buf + off, len - off, "%s%s", off ? ", " : "", algo_names[a]);
		if (n < 0 || (size_t)n >= len - off)
			return;
		off += (size_t)n;
	}
}

static void list_colls(char *buf, size_t len)
{
	size_t off = 0;

	buf[0] = '\0';
	for (int c = 0; c < IBC_COLL_COUNT; c++) {
		int n = snprintf(buf + off, len - off, "%s%s", off ? ", " : "", coll_names[c]);
		if (n < 0 || (size_t)n >= len - off)
			return;
		off += (size_t)n;
	}
}

/* Case-insensitive lookup of n bytes of s in names[0..count); -1 when absent. */
static int lookup(const char *const *names, int count, const char *s, size_t n)
{
	for (int i = 0; i < count; i++)
		if (strlen(names[i]) == n && !strncasecmp(names[i], s, n))
			return i;
	return -1;
}

static void trim(const char **s, size_t *n)
{
	while (*n && isspace((unsigned char)**s)) {
		(*s)++;
		(*n)--;
	}
	while (*n && isspace((unsigned char)(*s)[*n - 1]))
		(*n)--;
}

/*
 * "" or NULL: every collective auto. A bare value ("ring") applies to every collective that
 * implements it. Otherwise a comma-separated list of coll=value.
 */
ibcomm_status_t ibc_algo_parse(const char *str, enum ibc_algo algo[IBC_COLL_COUNT], char *err, size_t errlen)
{
	enum ibc_algo out[IBC_COLL_COUNT] = { IBC_ALGO_AUTO };
	unsigned seen = 0;
	char valid[160];
	const char *p;

	if (!str || !*str)
		goto done;

	if (!strchr(str, '=') && !strchr(str, ',')) {
		const char *s = str;
		size_t n = strlen(str);
		int a, hits = 0;

		trim(&s, &n);
		a = lookup(algo_names, IBC_ALGO_COUNT, s, n);
		if (a < 0) {
			list_algos((1u << IBC_ALGO_COUNT) - 1, valid, sizeof(valid));
			snprintf(err, errlen,
				 "IBCOMM_ALGO='%s' is not an algorithm (valid: %s; or a list such as allreduce=ring,broadcast=tree)",
				 str, valid);
			return IBCOMM_ERR_INVALID;
		}
		for (int c = 0; c < IBC_COLL_COUNT; c++) {
			if (coll_algos[c] & (1u << a)) {
				out[c] = (enum ibc_algo)a;
				hits++;
			}
		}
		if (!hits) /* cannot happen with the tables above; kept for table edits */
			goto bad_bare;
		goto done;
	}

	p = str;
	for (;;) {
		const char *end = strchr(p, ',');
		size_t n = end ? (size_t)(end - p) : strlen(p);
		const char *eq = memchr(p, '=', n);
		const char *cs = p, *as;
		size_t cn, an;
		int c, a;

		if (!eq) {
			snprintf(err, errlen,
				 "IBCOMM_ALGO='%s': item '%.*s' is not of the form collective=algorithm (a bare algorithm is only accepted alone)",
				 str, (int)n, p);
			return IBCOMM_ERR_INVALID;
		}
		cn = (size_t)(eq - p);
		as = eq + 1;
		an = n - cn - 1;
		trim(&cs, &cn);
		trim(&as, &an);
		c = lookup(coll_names, IBC_COLL_COUNT, cs, cn);
		if (c < 0) {
			list_colls(valid, sizeof(valid));
			snprintf(err, errlen, "IBCOMM_ALGO='%s': unknown collective '%.*s' (valid: %s)", str, (int)cn, cs,
				 valid);
			return IBCOMM_ERR_INVALID;
		}
		a = lookup(algo_names, IBC_ALGO_COUNT, as, an);
		if (a < 0 || !(coll_algos[c] & (1u << a))) {
			list_algos(coll_algos[c], valid, sizeof(valid));
			snprintf(err, errlen, "IBCOMM_ALGO='%s': '%.*s' is not an algorithm of %s (valid: %s)", str,
				 (int)an, as, coll_names[c], valid);
			return IBCOMM_ERR_INVALID;
		}
		if (seen & (1u << c)) {
			snprintf(err, errlen, "IBCOMM_ALGO='%s': %s is given twice", str, coll_names[c]);
			return IBCOMM_ERR_INVALID;
		}
		seen |= 1u << c;
		out[c] = (enum ibc_algo)a;
		if (!end)
			break;
		p = end + 1;
	}
done:
	memcpy(algo, out, sizeof(out));
	return IBCOMM_OK;

bad_bare:
	snprintf(err, errlen, "IBCOMM_ALGO='%s' is not an algorithm of any collective", str);
	return IBCOMM_ERR_INVALID;
}

/* ---- settings ---- */

/* A field of cfg is known when the caller's struct (cfg->size bytes) contains it. */
#define CFG_HAS(cfg, field) \
	((cfg) && (cfg)->size >= offsetof(ibcomm_config_t, field) + sizeof((cfg)->field))

/* A string field of cfg, or NULL when the caller's struct does not have it. */
#define CFG_STR(cfg, field) (CFG_HAS(cfg, field) ? (cfg)->field : NULL)

/* The environment variable, or NULL when unset or empty. */
static const char *env(const char *name)
{
	const char *v = getenv(name);

	return v && *v ? v : NULL;
}

/* Parses a whole decimal number in [lo, hi]. */
static ibcomm_status_t parse_long(const char *name, const char *val, long lo, long hi, long *out, char *err,
				  size_t errlen)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(val, &end, 10);
	if (end == val || isspace((unsigned char)val[0]) || !(isdigit((unsigned char)val[0]) || val[0] == '-' ||
							       val[0] == '+')) {
		snprintf(err, errlen, "%s='%s' is not a number", name, val);
		return IBCOMM_ERR_INVALID;
	}
	if (*end) {
		snprintf(err, errlen, "%s='%s' is not a number (trailing '%s')", name, val, end);
		return IBCOMM_ERR_INVALID;
	}
	if (errno == ERANGE || v < lo || v > hi) {
		snprintf(err, errlen, "%s='%s' is out of range (%ld..%ld)", name, val, lo, hi);
		return IBCOMM_ERR_INVALID;
	}
	*out = v;
	return IBCOMM_OK;
}

/*
 * IBCOMM_ROOT_FD: the rendezvous socket ibcomm_run bound and listens on, inherited by rank 0,
 * so that no other process can take the port between the launcher's choice and rank 0's
 * bind. The first communicator of the process adopts it (its server closes it at the end);
 * later ones bind the port themselves, as without the variable. Anything else is ignored.
 */
static ibcomm_status_t take_root_fd(int port, int *fd, char *err, size_t errlen)
{
	static atomic_bool taken;
	const char *v = env("IBCOMM_ROOT_FD");
	ibcomm_status_t st;
	long n;

	if (!v || atomic_exchange(&taken, true))
		return IBCOMM_OK;
	st = parse_long("IBCOMM_ROOT_FD", v, 3, INT_MAX, &n, err, errlen);
	if (st)
		return st;
	/*
	 * The variable reaches rank 0's descendants too (a test starting its own jobs), without the
	 * socket or with another IBCOMM_ROOT: only a socket listening on this very port is ours.
	 */
	if (ibc_sock_is_listening((int)n) && ibc_sock_port((int)n) == port)
		*fd = (int)n;
	return IBCOMM_OK;
}

static ibcomm_status_t copy_str(const char *name, const char *val, char *dst, size_t cap, char *err,
				size_t errlen)
{
	size_t n = strlen(val);

	if (n >= cap) {
		snprintf(err, errlen, "%s='%.40s...' is too long (%zu bytes; at most %zu)", name, val, n, cap - 1);
		return IBCOMM_ERR_INVALID;
	}
	memcpy(dst, val, n + 1);
	return IBCOMM_OK;
}

/* Launchers whose environment gives rank and size, most specific first (see below). */
static const struct launcher {
	const char *rank, *size;
} launchers[] = {
	/*
	 * Open MPI and PMI before Slurm: under `mpirun` inside a Slurm allocation the
	 * processes inherit SLURM_PROCID/SLURM_NTASKS of the batch step, which do not
	 * describe them; the variables of the launcher that started the process do.
	 */
	{ "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE" },
	{ "PMI_RANK", "PMI_SIZE" },
	{ "SLURM_PROCID", "SLURM_NTASKS" },
};

/* A string field: from cfg when set and non-empty, else the environment variable. */
static const char *pick_str(const char *cfgval, const char *var, const char **name, const char *cfgname)
{
	if (cfgval && *cfgval) {
		*name = cfgname;
		return cfgval;
	}
	*name = var;
	return env(var);
}

/* ifname gets cfgval when set, else IBCOMM_IFNAME, else "" (cap >= IF_NAMESIZE). */
static ibcomm_status_t load_ifname(const char *cfgval, char *ifname, size_t cap, char *err, size_t errlen)
{
	const char *name, *v = pick_str(cfgval, "IBCOMM_IFNAME", &name, "ibcomm_config_t.ifname");

	ifname[0] = '\0';
	if (!v)
		return IBCOMM_OK;
	if (strlen(v) >= IF_NAMESIZE) {
		snprintf(err, errlen, "%s='%s' is too long (interface names have at most %d bytes)", name, v,
			 IF_NAMESIZE - 1);
		return IBCOMM_ERR_INVALID;
	}
	return copy_str(name, v, ifname, cap, err, errlen);
}

ibcomm_status_t ibc_settings_ifname(char *ifname, size_t cap, char *err, size_t errlen)
{
	return load_ifname(NULL, ifname, cap, err, errlen);
}

/*
 * A size in bytes: a whole decimal number, optionally followed by K, M or G (binary: 1K =
 * 1024), in [lo, hi].
 */
static ibcomm_status_t parse_bytes(const char *name, const char *val, uint64_t lo, uint64_t hi, uint64_t *out,
				   char *err, size_t errlen)
{
	unsigned long long v;
	unsigned shift = 0;
	char *end;

	errno = 0;
	v = strtoull(val, &end, 10);
	if (end == val || !isdigit((unsigned char)val[0])) {
		snprintf(err, errlen, "%s='%s' is not a number of bytes (e.g. 65536, 64K, 16M, 1G)", name, val);
		return IBCOMM_ERR_INVALID;
	}
	if (*end) {
		switch (*end) {
		case 'k': case 'K': shift = 10; break;
		case 'm': case 'M': shift = 20; break;
		case 'g': case 'G': shift = 30; break;
		default: shift = 99;
		}
		if (shift == 99 || end[1]) {
			snprintf(err, errlen, "%s='%s' is not a number of bytes (trailing '%s'; suffixes: K, M, G)",
				 name, val, end);
			return IBCOMM_ERR_INVALID;
		}
	}
	if (errno == ERANGE || (shift && v > (ULLONG_MAX >> shift)) || (v << shift) < lo || (v << shift) > hi) {
		snprintf(err, errlen, "%s='%s' is out of range (%llu..%llu bytes)", name, val, (unsigned long long)lo,
			 (unsigned long long)hi);
		return IBCOMM_ERR_INVALID;
	}
	*out = (uint64_t)v << shift;
	return IBCOMM_OK;
}

/*
 * One numeric knob: the config field when the caller's struct has it and it is not -1 (any
 * other negative value is an error), else the variable, else *out stays (the default).
 */
static ibcomm_status_t knob(bool has, int64_t cfgval, const char *field, const char *var, bool bytes, uint64_t lo,
			    uint64_t hi, uint64_t *out, char *err, size_t errlen)
{
	const char *v;

	if (has && cfgval != -1) {
		if (cfgval < 0 || (uint64_t)cfgval < lo || (uint64_t)cfgval > hi) {
			snprintf(err, errlen, "ibcomm_config_t.%s=%lld is out of range (%llu..%llu; -1: %s or the default)",
				 field, (long long)cfgval, (unsigned long long)lo, (unsigned long long)hi, var);
			return IBCOMM_ERR_INVALID;
		}
		*out = (uint64_t)cfgval;
		return IBCOMM_OK;
	}
	v = env(var);
	if (!v)
		return IBCOMM_OK;
	if (bytes)
		return parse_bytes(var, v, lo, hi, out, err, errlen);
	{
		long n;
		ibcomm_status_t st = parse_long(var, v, (long)lo, (long)IBC_MIN(hi, (uint64_t)LONG_MAX), &n, err,
						errlen);
		if (!st)
			*out = (uint64_t)n;
		return st;
	}
}

#define KNOB(field, var, bytes, lo, hi, dst)                                                                     \
	do {                                                                                                      \
		uint64_t k_ = (dst);                                                                              \
		st = knob(CFG_HAS(cfg, field), CFG_HAS(cfg, field) ? (int64_t)cfg->field : -1, #field, var, bytes, \
			  lo, hi, &k_, err, errlen);                                                              \
		if (st)                                                                                           \
			return st;                                                                                \
		(dst) = k_;                                                                                       \
	} while (0)

/* Transport geometry, the memory cap, the p2p bound, and the test hooks. */
static ibcomm_status_t load_knobs(const ibcomm_config_t *cfg, ibc_settings_t *t, char *err, size_t errlen)
{
	uint64_t env_k[3] = { t->shm_chunk, t->shm_slots, t->rdma_spin_us };
	ibcomm_status_t st;

	KNOB(tcp_chunk, "IBCOMM_TCP_CHUNK", true, 1, IBC_KNOB_TCP_CHUNK_MAX, t->tcp_chunk);
	KNOB(tcp_slots, "IBCOMM_TCP_SLOTS", false, 1, IBC_KNOB_TCP_SLOTS_MAX, t->tcp_slots);
	KNOB(tcp_spin_us, "IBCOMM_TCP_SPIN_US", false, 0, IBC_KNOB_SPIN_MAX, t->tcp_spin_us);
	KNOB(rdma_chunk, "IBCOMM_RDMA_CHUNK", true, IBC_KNOB_RDMA_CHUNK_MIN, IBC_KNOB_RDMA_CHUNK_MAX, t->rdma_chunk);
	KNOB(rdma_slots, "IBCOMM_RDMA_SLOTS", false, IBC_KNOB_RDMA_SLOTS_MIN, IBC_KNOB_RDMA_SLOTS_MAX, t->rdma_slots);
	/* no ibcomm_config_t fields (the public struct stays as it is): environment only */
	st = knob(false, -1, "shm_chunk", "IBCOMM_SHM_CHUNK", true, IBC_KNOB_SHM_CHUNK_MIN, IBC_KNOB_SHM_CHUNK_MAX,
		  &env_k[0], err, errlen);
	if (!st)
		st = knob(false, -1, "shm_slots", "IBCOMM_SHM_SLOTS", false, 1, IBC_KNOB_SHM_SLOTS_MAX, &env_k[1], err,
			  errlen);
	if (!st)
		st = knob(false, -1, "rdma_spin_us", "IBCOMM_RDMA_SPIN_US", false, 0, IBC_KNOB_SPIN_MAX, &env_k[2], err,
			  errlen);
	if (st)
		return st;
	t->shm_chunk = env_k[0];
	t->shm_slots = env_k[1];
	t->rdma_spin_us = env_k[2];
	KNOB(mem_limit, "IBCOMM_MEM_LIMIT", true, IBC_MIN_MEM_LIMIT, (uint64_t)INT64_MAX, t->mem_limit);
	KNOB(p2p_unexpected_max, "IBCOMM_P2P_UNEXPECTED_MAX", true, 0, (uint64_t)INT64_MAX, t->p2p_unexpected_max);
	if (t->p2p_unexpected_max > t->mem_limit) {
		snprintf(err, errlen,
			 "IBCOMM_P2P_UNEXPECTED_MAX=%llu is over IBCOMM_MEM_LIMIT=%llu (the unexpected messages a communicator holds count against the cap)",
			 (unsigned long long)t->p2p_unexpected_max, (unsigned long long)t->mem_limit);
		return IBCOMM_ERR_INVALID;
	}
#ifdef IBCOMM_TEST_HOOKS
	/* a test hook of the RDMA transport (test_force_qp_error), not a user setting: only in a
	 * build configured with --enable-test-hooks, never read from a user's job */
	const char *v = env("IBCOMM_TEST_QP_ERROR_AFTER");

	if (v) {
		long n;

		st = parse_long("IBCOMM_TEST_QP_ERROR_AFTER", v, 0, LONG_MAX, &n, err, errlen);
		if (st)
			return st;
		t->test_qp_error_after = (uint64_t)n;
	}
	/* a test hook of the host map (lib/hosts.c, transports/shm/shm_host.c): pretends another host */
	v = env("IBCOMM_TEST_HOST");
	if (v)
		snprintf(t->test_host, sizeof(t->test_host), "%s", v);
	/* a test hook of transports/mix: sleep slices so long that only the doorbell can end a
	 * sleep in time (a lost wake-up then fails the test instead of costing a slice) */
	v = env("IBCOMM_TEST_MIX_SLICE_MS");
	if (v) {
		long n;

		st = parse_long("IBCOMM_TEST_MIX_SLICE_MS", v, 1, INT32_MAX, &n, err, errlen);
		if (st)
			return st;
		t->test_mix_slice_ms = (unsigned long)n;
	}
#endif
	return IBCOMM_OK;
}
#undef KNOB

ibcomm_status_t ibc_settings_load(const ibcomm_config_t *cfg, ibc_settings_t *s, char *err, size_t errlen)
{
	ibc_settings_t t;
	struct ibc_launch li = { .kind = IBC_LAUNCH_NONE };
	const char *v, *name, *rank_name = NULL, *size_name = NULL;
	char rank_val[32], size_val[32];
	ibcomm_status_t st;
	long n;

	memset(&t, 0, sizeof(t));
	t.rank = -1;
	t.nranks = -1;
	t.transport = IBC_TP_AUTO;
	t.gid_index = -1;
	t.listen_fd = -1;
	t.timeout_ms = IBCOMM_DEFAULT_TIMEOUT_MS;
	t.debug = IBC_LOG_WARN;
	t.tcp_spin_us = IBC_DEFAULT_TCP_SPIN_US;
	t.rdma_spin_us = IBC_DEFAULT_RDMA_SPIN_US;
	t.mem_limit = IBC_DEFAULT_MEM_LIMIT;
	t.p2p_unexpected_max = IBC_DEFAULT_P2P_UNEXPECTED_MAX;

	if (cfg && cfg->size < offsetof(ibcomm_config_t, rank) + sizeof(cfg->rank)) {
		snprintf(err, errlen,
			 "ibcomm_config_t.size=%zu is too small: initialise the config with IBCOMM_CONFIG_INIT",
			 cfg->size);
		return IBCOMM_ERR_INVALID;
	}

	/* IBCOMM_DEBUG first, so that what follows is logged at the requested level. */
	v = pick_str(CFG_STR(cfg, debug), "IBCOMM_DEBUG", &name, "ibcomm_config_t.debug");
	if (v) {
		int l = ibc_log_parse(v);

		if (l < 0) {
			snprintf(err, errlen, "%s='%s' is not a level (valid: WARN, INFO, TRACE)", name, v);
			return IBCOMM_ERR_INVALID;
		}
		t.debug = l;
	}

	/* rank and size: cfg, IBCOMM_RANK/IBCOMM_SIZE, else a launcher's variables */
	if (CFG_HAS(cfg, rank) && cfg->rank >= 0) {
		t.rank = cfg->rank;
		rank_name = "ibcomm_config_t.rank";
		snprintf(rank_val, sizeof(rank_val), "%d", cfg->rank);
	} else if ((v = env("IBCOMM_RANK"))) {
		st = parse_long("IBCOMM_RANK", v, 0, INT_MAX - 1, &n, err, errlen);
		if (st)
			return st;
		t.rank = (int)n;
		rank_name = "IBCOMM_RANK";
		snprintf(rank_val, sizeof(rank_val), "%.30s", v);
	}
	if (CFG_HAS(cfg, nranks) && cfg->nranks >= 0) {
		if (cfg->nranks < 1) {
			snprintf(err, errlen, "ibcomm_config_t.nranks=%d is out of range (at least 1)", cfg->nranks);
			return IBCOMM_ERR_INVALID;
		}
		t.nranks = cfg->nranks;
		size_name = "ibcomm_config_t.nranks";
		snprintf(size_val, sizeof(size_val), "%d", cfg->nranks);
	} else if ((v = env("IBCOMM_SIZE"))) {
		st = parse_long("IBCOMM_SIZE", v, 1, INT_MAX, &n, err, errlen);
		if (st)
			return st;
		t.nranks = (int)n;
		size_name = "IBCOMM_SIZE";
		snprintf(size_val, sizeof(size_val), "%.30s", v);
	}
	/* a launcher (PMIx, PMI-1, Slurm: lib/launch) for what is still unset, the address included */
	if (t.rank < 0 || t.nranks < 0 || !pick_str(CFG_STR(cfg, root), "IBCOMM_ROOT", &name, "")) {
		st = ibc_launch_detect(&li, err, errlen);
		if (st)
			return st;
		if (li.kind != IBC_LAUNCH_NONE && t.rank < 0) {
			t.rank = li.rank;
			rank_name = li.name;
			snprintf(rank_val, sizeof(rank_val), "%d", li.rank);
		}
		if (li.kind != IBC_LAUNCH_NONE && t.nranks < 0) {
			t.nranks = li.size;
			size_name = li.name;
			snprintf(size_val, sizeof(size_val), "%d", li.size);
		}
	}
	for (size_t i = 0; i < IBC_ARRAY_SIZE(launchers) && (t.rank < 0 || t.nranks < 0); i++) {
		const char *r = env(launchers[i].rank), *z = env(launchers[i].size);

		if (!r || !z)
			continue;
		if (t.rank < 0) {
			st = parse_long(launchers[i].rank, r, 0, INT_MAX - 1, &n, err, errlen);
			if (st)
				return st;
			t.rank = (int)n;
			rank_name = launchers[i].rank;
			snprintf(rank_val, sizeof(rank_val), "%.30s", r);
		}
		if (t.nranks < 0) {
			st = parse_long(launchers[i].size, z, 1, INT_MAX, &n, err, errlen);
			if (st)
				return st;
			t.nranks = (int)n;
			size_name = launchers[i].size;
			snprintf(size_val, sizeof(size_val), "%.30s", z);
		}
	}
	if (t.rank < 0) {
		snprintf(err, errlen,
			 "the rank is not set: set IBCOMM_RANK (or ibcomm_config_t.rank), or start the process with srun, mpirun or a PMI launcher");
		return IBCOMM_ERR_INVALID;
	}
	if (t.nranks < 0) {
		snprintf(err, errlen,
			 "the number of ranks is not set: set IBCOMM_SIZE (or ibcomm_config_t.nranks), or start the process with srun, mpirun or a PMI launcher");
		return IBCOMM_ERR_INVALID;
	}
	if (t.rank >= t.nranks) {
		snprintf(err, errlen, "%s=%s is not below %s=%s (ranks are 0..size-1)", rank_name, rank_val, size_name,
			 size_val);
		return IBCOMM_ERR_INVALID;
	}

	/* rendezvous address */
	v = pick_str(CFG_STR(cfg, root), "IBCOMM_ROOT", &name, "ibcomm_config_t.root");
	if (!v && li.kind != IBC_LAUNCH_NONE) {
		if (li.rank != t.rank || li.size != t.nranks) {
			snprintf(err, errlen,
				 "%s=%s and %s=%s, but %s says rank %d of %d: the rendezvous address comes from %s, so they must agree (unset them, or set IBCOMM_ROOT too)",
				 rank_name, rank_val, size_name, size_val, li.name, li.rank, li.size, li.name);
			return IBCOMM_ERR_INVALID;
		}
		/* agreed at the end, once the deadline and the interface are known */
	} else if (!v) {
		snprintf(err, errlen,
			 "IBCOMM_ROOT is not set: give the rendezvous address host:port (rank 0 serves it there), e.g. IBCOMM_ROOT=node0:29500, or start the processes with srun, mpirun or mpiexec%s",
			 getenv("PMIX_RANK") ? " (PMIX_RANK is set, but this ibcomm was built without PMIx: configure --with-pmix)" : "");
		return IBCOMM_ERR_INVALID;
	} else {
		char host[256], port[8];
		const char *why;

		if (strlen(v) >= sizeof(t.root)) {
			snprintf(err, errlen, "%s='%.40s...' is too long (at most %zu bytes)", name, v,
				 sizeof(t.root) - 1);
			return IBCOMM_ERR_INVALID;
		}
		if (ibc_root_parse(v, host, sizeof(host), port, sizeof(port), &why)) {
			snprintf(err, errlen, "%s='%s' is not a rendezvous address: %s", name, v, why);
			return IBCOMM_ERR_INVALID;
		}
		memcpy(t.root, v, strlen(v) + 1);
		if (t.rank == 0 && !strcmp(name, "IBCOMM_ROOT")) {
			st = take_root_fd(atoi(port), &t.listen_fd, err, errlen);
			if (st)
				return st;
		}
	}

	v = pick_str(CFG_STR(cfg, transport), "IBCOMM_TRANSPORT", &name,
		     "ibcomm_config_t.transport");
	if (v) {
		if (!strcasecmp(v, "auto"))
			t.transport = IBC_TP_AUTO;
		else if (!strcasecmp(v, "tcp"))
			t.transport = IBC_TP_TCP;
		else if (!strcasecmp(v, "rdma"))
			t.transport = IBC_TP_RDMA;
		else if (!strcasecmp(v, "shm"))
			t.transport = IBC_TP_SHM;
		else {
			snprintf(err, errlen, "%s='%s' is not a transport (valid: auto, rdma, shm, tcp)", name, v);
			return IBCOMM_ERR_INVALID;
		}
	}

	v = pick_str(CFG_STR(cfg, device), "IBCOMM_DEVICE", &name,
		     "ibcomm_config_t.device");
	if (v) {
		const char *colon = strchr(v, ':');
		size_t dn = colon ? (size_t)(colon - v) : strlen(v);

		if (!dn) {
			snprintf(err, errlen, "%s='%s': the device name is empty (expected name[:port])", name, v);
			return IBCOMM_ERR_INVALID;
		}
		if (dn >= sizeof(t.device)) {
			snprintf(err, errlen, "%s='%.40s...' is too long (device names have at most %zu bytes)", name, v,
				 sizeof(t.device) - 1);
			return IBCOMM_ERR_INVALID;
		}
		if (colon) {
			char *end;
			long p;

			errno = 0;
			p = strtol(colon + 1, &end, 10);
			if (!isdigit((unsigned char)colon[1]) || *end || errno || p < 1 || p > 255) {
				snprintf(err, errlen, "%s='%s': the port '%s' is not a number in 1..255 (expected name[:port])",
					 name, v, colon + 1);
				return IBCOMM_ERR_INVALID;
			}
			t.ib_port = (int)p;
		}
		memcpy(t.device, v, dn);
		t.device[dn] = '\0';
	}

	if (CFG_HAS(cfg, gid_index) && cfg->gid_index >= 0) {
		t.gid_index = cfg->gid_index;
	} else if ((v = env("IBCOMM_GID_INDEX"))) {
		st = parse_long("IBCOMM_GID_INDEX", v, 0, INT_MAX, &n, err, errlen);
		if (st)
			return st;
		t.gid_index = (int)n;
	}

	st = load_ifname(CFG_STR(cfg, ifname), t.ifname, sizeof(t.ifname), err, errlen);
	if (st)
		return st;

	if (CFG_HAS(cfg, timeout_ms) && cfg->timeout_ms >= 0) {
		t.timeout_ms = cfg->timeout_ms;
	} else if ((v = env("IBCOMM_TIMEOUT_MS"))) {
		st = parse_long("IBCOMM_TIMEOUT_MS", v, 0, LONG_MAX / 2, &n, err, errlen);
		if (st)
			return st;
		t.timeout_ms = n;
	}

	v = pick_str(CFG_STR(cfg, algo), "IBCOMM_ALGO", &name, "ibcomm_config_t.algo");
	st = ibc_algo_parse(v, t.algo, err, errlen);
	if (st)
		return st;

	v = pick_str(CFG_STR(cfg, job_key), "IBCOMM_JOB_KEY", &name,
		     "ibcomm_config_t.job_key");
	if (v) {
		if (strlen(v) >= sizeof(t.job_key)) {
			/* never echo a secret */
			snprintf(err, errlen, "%s is too long (%zu bytes; at most %zu)", name, strlen(v),
				 sizeof(t.job_key) - 1);
			return IBCOMM_ERR_INVALID;
		}
		memcpy(t.job_key, v, strlen(v) + 1);
	}

	st = load_knobs(cfg, &t, err, errlen);
	if (st)
		return st;

	if (!t.root[0]) { /* from the launcher, last: rank 0 binds a port here */
		st = ibc_launch_root(&li, t.ifname, t.timeout_ms, t.root, sizeof(t.root), &t.listen_fd, err, errlen);
		if (st)
			return st;
	}

	*s = t;
	return IBCOMM_OK;
}

/* ---- the memory cap ---- */

ibcomm_status_t ibc_mem_check(struct ibcomm *comm, const char *tp, uint64_t bytes, const char *how,
			      const char *knobs, bool explicit)
{
	if (bytes <= ibc_mem_limit(comm))
		return IBCOMM_OK;
	if (comm->part_mem)
		return ibc_err(comm, explicit ? IBCOMM_ERR_INVALID : IBCOMM_ERR_NOMEM,
			       "rank %d: the %s part of the %s transport would allocate and pin %llu bytes (%s), over its share "
			       "of IBCOMM_MEM_LIMIT=%llu: %llu bytes (%s divides the cap between its parts by the ranks each "
			       "serves): %s %s, or raise IBCOMM_MEM_LIMIT (or ibcomm_config_t.mem_limit)",
			       comm->rank, tp, comm->part_of ? comm->part_of : "mixed", (unsigned long long)bytes, how,
			       (unsigned long long)ibc_mem_cap(comm), (unsigned long long)comm->part_mem,
			       comm->part_of ? comm->part_of : "the mix",
			       explicit ? "lower" : "this communicator is too large for the default geometry: set smaller",
			       knobs);
	return ibc_err(comm, explicit ? IBCOMM_ERR_INVALID : IBCOMM_ERR_NOMEM,
		       "rank %d: the %s transport would allocate and pin %llu bytes (%s), over IBCOMM_MEM_LIMIT=%llu: "
		       "%s %s, or raise IBCOMM_MEM_LIMIT (or ibcomm_config_t.mem_limit)",
		       comm->rank, tp, (unsigned long long)bytes, how, (unsigned long long)ibc_mem_cap(comm),
		       explicit ? "lower" : "this communicator is too large for the default geometry: set smaller",
		       knobs);
}
