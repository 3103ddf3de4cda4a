/*
 * scale_probe: what a communicator costs per rank, under a launcher:
 *
 *   ibcomm_run -n N [--transport tcp|rdma] -- tests/rxe/scale_probe [COUNT]
 *
 * Each rank measures ibcomm_init_env() (wall time; it includes waiting for the last rank to
 * join), its memory after init (VmRSS, VmHWM of /proc/self/status), a first and a second
 * ring allreduce of COUNT int32 (default 65536; IBCOMM_ALGO=allreduce=ring unless set: the
 * first makes the connections), the memory after them, and the queue pairs its
 * transport made for it (tp->cnt.qps: RDMA only), then an ibcomm_dup and the same allreduce
 * on it: the dup must not open the RDMA device again (the process's open
 * /dev/infiniband/uverbs* descriptors stay as they were). Rank 0 prints a line per rank and
 * min / mean / max of each figure. Exit status 1 on a wrong sum, a dup that reopened the
 * device, or (RDMA, 8 ranks or more) QPs to every peer where the ring needs a few.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ibc.h"

enum { F_INIT_US, F_RSS, F_HWM, F_FIRST_US, F_SECOND_US, F_RSS2, F_HWM2, F_QPS, F_DUP_QPS, F_FDS, F_DUP_FDS, F_BAD, NF };
static const char *const fname[NF] = { "init_ms", "rss_kib", "hwm_kib", "allreduce1_ms", "allreduce2_ms", "rss_kib_after",
				       "hwm_kib_after", "qps", "dup_qps", "uverbs_fds", "dup_uverbs_fds", "errors" };

static int64_t now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* VmRSS and VmHWM in KiB. */
static void mem_kib(int64_t *rss, int64_t *hwm)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	long v;

	*rss = *hwm = -1;
	while (f && fgets(line, sizeof(line), f)) {
		if (sscanf(line, "VmRSS: %ld", &v) == 1)
			*rss = v;
		if (sscanf(line, "VmHWM: %ld", &v) == 1)
			*hwm = v;
	}
	if (f)
		fclose(f);
}

/* Descriptors of this process open on an RDMA device (one per ibv_open_device). */
static int64_t uverbs_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	char path[300], target[300];
	int64_t n = 0;
	ssize_t len;

	while (d && (e = readdir(d))) {
		snprintf(path, sizeof(path), "/proc/self/fd/%s", e->d_name);
		len = readlink(path, target, sizeof(target) - 1);
		if (len <= 0)
			continue;
		target[len] = 0;
		if (strstr(target, "/dev/infiniband/uverbs"))
			n++;
	}
	if (d)
		closedir(d);
	return n;
}

/* One allreduce of count int32 (rank r contributes r + i); the number of wrong elements. */
static int64_t allreduce(ibcomm_t *comm, int32_t *in, int32_t *out, size_t count, ibcomm_status_t *st)
{
	int n = ibcomm_size(comm), r = ibcomm_rank(comm);
	int64_t bad = 0;

	for (size_t i = 0; i < count; i++)
		in[i] = (int32_t)(r + (int)(i % 1000));
	*st = ibcomm_allreduce(comm, in, out, count, IBCOMM_INT32, IBCOMM_SUM);
	if (*st)
		return (int64_t)count;
	for (size_t i = 0; i < count; i++)
		if (out[i] != (int32_t)(n * (n - 1) / 2 + n * (int)(i % 1000)))
			bad++;
	return bad;
}

int main(int argc, char **argv)
{
	size_t count = argc > 1 ? strtoul(argv[1], NULL, 0) : 65536;
	int64_t f[NF] = { 0 }, *all = NULL, t0, fds0;
	ibcomm_t *comm = NULL, *dup = NULL;
	ibcomm_status_t st;
	int32_t *in, *out;
	int n, rank, ret = 1;

	setenv("IBCOMM_ALGO", "allreduce=ring", 0);
	in = calloc(count ? count : 1, sizeof(*in));
	out = calloc(count ? count : 1, sizeof(*out));
	if (!in || !out)
		return 1;
	fds0 = uverbs_fds();
	t0 = now_us();
	st = ibcomm_init_env(&comm);
	if (st) {
		fprintf(stderr, "scale_probe: ibcomm_init_env: %s: %s\n", ibcomm_strerror(st), ibcomm_last_error(NULL));
		return 1;
	}
	f[F_INIT_US] = now_us() - t0;
	mem_kib(&f[F_RSS], &f[F_HWM]);
	n = ibcomm_size(comm);
	rank = ibcomm_rank(comm);
	f[F_FDS] = uverbs_fds() - fds0;
	t0 = now_us();
	f[F_BAD] = allreduce(comm, in, out, count, &st);
	f[F_FIRST_US] = now_us() - t0;
	if (st)
		fprintf(stderr, "scale_probe: rank %d: allreduce: %s\n", rank, ibcomm_last_error(comm));
	t0 = now_us();
	f[F_BAD] += allreduce(comm, in, out, count, &st);
	f[F_SECOND_US] = now_us() - t0;
	if (st)
		fprintf(stderr, "scale_probe: rank %d: second allreduce: %s\n", rank, ibcomm_last_error(comm));
	mem_kib(&f[F_RSS2], &f[F_HWM2]);
	f[F_QPS] = comm->tp->cnt.qps;
	st = ibcomm_dup(comm, &dup);
	if (st) {
		fprintf(stderr, "scale_probe: rank %d: dup: %s\n", rank, ibcomm_last_error(comm));
		goto out;
	}
	f[F_DUP_FDS] = uverbs_fds() - fds0;
	f[F_BAD] += allreduce(dup, in, out, count, &st);
	if (st)
		fprintf(stderr, "scale_probe: rank %d: allreduce on the dup: %s\n", rank, ibcomm_last_error(dup));
	f[F_DUP_QPS] = dup->tp->cnt.qps;
	all = calloc((size_t)n * NF, sizeof(*all));
	if (!all)
		goto out;
	st = ibcomm_gather(comm, f, all, NF, IBCOMM_INT64, 0);
	if (st) {
		fprintf(stderr, "scale_probe: rank %d: gather: %s\n", rank, ibcomm_last_error(comm));
		goto out;
	}
	ret = 0;
	if (rank == 0) {
		bool rdma = strcmp(ibcomm_transport(comm), "rdma") == 0;

		printf("scale_probe: %d ranks, transport %s, allreduce of %zu int32 (%s)\n", n, ibcomm_transport(comm),
		       count, getenv("IBCOMM_ALGO"));
		printf("%-14s", "rank");
		for (int k = 0; k < NF; k++)
			printf(" %13s", fname[k]);
		printf("\n");
		for (int r = 0; r < n; r++) {
			int64_t *g = all + (size_t)r * NF;

			printf("%-14d", r);
			for (int k = 0; k < NF; k++)
				if (k == F_INIT_US || k == F_FIRST_US || k == F_SECOND_US)
					printf(" %13.1f", g[k] / 1000.0);
				else
					printf(" %13lld", (long long)g[k]);
			printf("\n");
			if (g[F_BAD]) {
				printf("scale_probe: FAIL: rank %d: %lld wrong elements\n", r, (long long)g[F_BAD]);
				ret = 1;
			}
			if (rdma && g[F_DUP_FDS] != g[F_FDS]) {
				printf("scale_probe: FAIL: rank %d: the dup opened the RDMA device again (%lld descriptors, %lld before)\n",
				       r, (long long)g[F_DUP_FDS], (long long)g[F_FDS]);
				ret = 1;
			}
			if (rdma && n >= 8 && g[F_QPS] >= n - 1) {
				printf("scale_probe: FAIL: rank %d: %lld QPs for a ring allreduce on %d ranks (lazy: fewer than %d)\n",
				       r, (long long)g[F_QPS], n, n - 1);
				ret = 1;
			}
		}
		for (int s = 0; s < 3; s++) {
			printf("%-14s", s == 0 ? "min" : s == 1 ? "mean" : "max");
			for (int k = 0; k < NF; k++) {
				double v = s == 0 ? 1e300 : s == 1 ? 0 : -1e300;

				for (int r = 0; r < n; r++) {
					double x = (double)all[(size_t)r * NF + k];

					v = s == 0 ? (x < v ? x : v) : s == 1 ? v + x / n : (x > v ? x : v);
				}
				if (k == F_INIT_US || k == F_FIRST_US || k == F_SECOND_US)
					v /= 1000.0;
				printf(" %13.1f", v);
			}
			printf("\n");
		}
		printf("scale_probe: %s\n", ret ? "FAIL" : "ok");
	}
out:
	if (dup)
		ibcomm_destroy(dup);
	ibcomm_destroy(comm);
	free(all);
	free(in);
	free(out);
	return ret;
}
