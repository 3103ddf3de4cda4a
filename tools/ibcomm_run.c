/*
 * ibcomm_run: starts the N ranks of an ibcomm job on this machine.
 *
 *   ibcomm_run -n N [--transport T] [--timeout S] [--host ADDR] [--bind core|none] [--] PROG [ARGS...]
 *
 * It listens on a free TCP port of ADDR for the rendezvous and hands that socket to rank 0
 * (IBCOMM_ROOT_FD), sets IBCOMM_RANK, IBCOMM_SIZE, IBCOMM_ROOT, IBCOMM_JOB_KEY (and
 * IBCOMM_TRANSPORT) for each rank, and prefixes every line
 * the ranks print with "[R] ". Its exit status is the one of the first rank to fail
 * (128 + signal for a rank killed by a signal), 124 on --timeout, 0 when all succeed. When
 * one rank fails, the others get a short grace period, then SIGTERM, then SIGKILL: nothing
 * is left running. Each rank runs in its own process group so that whatever it starts is
 * ended with it. --bind core pins rank r to the r-th CPU the launcher may run on (as mpirun
 * does by default when the ranks do not outnumber the cores).
 */
#define _GNU_SOURCE /* pipe2, ppoll, strsignal */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "sock.h"
#include "tool_util.h"

#define RUN_MAX_RANKS 4096
#define RUN_LINE_MAX (64 * 1024)  /* longer lines are split, each piece prefixed */
#define RUN_GRACE_NS 1000000000LL /* a failure: the others may end on their own ... */
#define RUN_TERM_NS 2000000000LL  /* ... then SIGTERM, and SIGKILL this long after */
#define RUN_DRAIN_NS 1000000000LL /* output still open once every rank has ended */
#define RUN_EXIT_USAGE 2
#define RUN_EXIT_TIMEOUT 124

struct run_stream {
	int fd;       /* read end of the rank's pipe; -1 once closed */
	int out;      /* 1 or 2: where its lines go */
	size_t len;   /* bytes of the pending partial line */
	char *buf;    /* RUN_LINE_MAX bytes */
};

struct run_rank {
	pid_t pid;    /* also its process group; 0 before fork */
	bool running; /* not yet reaped */
	bool ended_by_us;
	struct run_stream s[2];
};

struct run_job {
	int nranks;
	struct run_rank *ranks;
	int running;
	int exit_code;        /* of the first rank to fail; 0 while none has */
	int failed_rank;      /* -1 while none has */
	bool timed_out;
	int64_t term_at;      /* when to send SIGTERM to the ranks still running; 0: not planned */
	int64_t kill_at;      /* when to send SIGKILL; 0: not planned */
	int64_t timeout_at;   /* --timeout; 0: none */
	int64_t drain_until;  /* once all ranks ended: stop waiting for their output */
	double timeout_s;
	bool bind;            /* --bind core */
	cpu_set_t cpus;       /* the CPUs the launcher may run on (for --bind) */
};

static volatile sig_atomic_t run_got_chld;
static volatile sig_atomic_t run_got_signal; /* last SIGINT/SIGTERM/SIGHUP received */
static volatile sig_atomic_t run_signal_count;

static void run_on_signal(int sig)
{
	if (sig == SIGCHLD) {
		run_got_chld = 1;
		return;
	}
	run_got_signal = sig;
	run_signal_count++;
}

static void run_usage(FILE *f)
{
	fprintf(f,
		"Usage: ibcomm_run -n N [options] [--] PROG [ARGS...]\n"
		"Starts N ranks of PROG on this machine, wired together for ibcomm_init_env().\n"
		"\n"
		"  -n, --np N           number of ranks (1..%d)\n"
		"  -t, --transport T    sets IBCOMM_TRANSPORT=T for every rank (auto, rdma, tcp)\n"
		"  -T, --timeout S      end the whole job after S seconds (exit status 124)\n"
		"  -H, --host ADDR      rendezvous address, where rank 0 listens (default 127.0.0.1)\n"
		"  -b, --bind core|none core: rank r runs on the r-th CPU the launcher may use (a rank\n"
		"                       beyond the CPUs is not bound); none (default): where the kernel picks\n"
		"  -h, --help           this help\n"
		"\n"
		"Sets IBCOMM_RANK, IBCOMM_SIZE, IBCOMM_ROOT=ADDR:PORT (a free port), and IBCOMM_JOB_KEY\n"
		"(fresh random, unless already set). Every output line is prefixed with \"[RANK] \".\n"
		"Exit status: that of the first rank to fail (128+N for a rank killed by signal N),\n"
		"124 on timeout, 2 on a usage error, 0 when every rank succeeds.\n",
		RUN_MAX_RANKS);
}

/* Writes all of buf; output errors (a closed pipe) are ignored: the ranks keep running. */
static void run_write_all(int fd, const char *buf, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, buf, len);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return;
		}
		buf += n;
		len -= (size_t)n;
	}
}

/* Writes "[R] " + line + "\n" in one write() so that lines of different ranks never mix. */
static void run_emit_line(int rank, int out, const char *line, size_t len)
{
	char stackbuf[4096];
	char prefix[24];
	int plen = snprintf(prefix, sizeof(prefix), "[%d] ", rank);
	size_t total = (size_t)plen + len + 1;
	char *buf = total <= sizeof(stackbuf) ? stackbuf : malloc(total);

	if (!buf) {
		/* no memory for one piece: three writes still carry the line */
		run_write_all(out, prefix, (size_t)plen);
		run_write_all(out, line, len);
		run_write_all(out, "\n", 1);
		return;
	}
	memcpy(buf, prefix, (size_t)plen);
	memcpy(buf + plen, line, len);
	buf[total - 1] = '\n';
	run_write_all(out, buf, total);
	if (buf != stackbuf)
		free(buf);
}

/* Emits the complete lines of s, keeps the partial last one (unless flush). */
static void run_emit(int rank, struct run_stream *s, bool flush)
{
	size_t start = 0;

	for (size_t i = 0; i < s->len; i++) {
		if (s->buf[i] == '\n') {
			run_emit_line(rank, s->out, s->buf + start, i - start);
			start = i + 1;
		}
	}
	if (start < s->len && (flush || (start == 0 && s->len == RUN_LINE_MAX))) {
		run_emit_line(rank, s->out, s->buf + start, s->len - start);
		start = s->len;
	}
	memmove(s->buf, s->buf + start, s->len - start);
	s->len -= start;
}

static void run_close_stream(int rank, struct run_stream *s)
{
	if (s->fd < 0)
		return;
	run_emit(rank, s, true);
	close(s->fd);
	s->fd = -1;
}

/* Reads what is available on s; closes it at EOF or on error. True when it read something. */
static bool run_read_stream(int rank, struct run_stream *s)
{
	ssize_t n = read(s->fd, s->buf + s->len, RUN_LINE_MAX - s->len);

	if (n < 0 && (errno == EINTR || errno == EAGAIN))
		return false;
	if (n <= 0) {
		run_close_stream(rank, s);
		return false;
	}
	s->len += (size_t)n;
	run_emit(rank, s, false);
	return true;
}

static void run_signal_ranks(struct run_job *job, int sig)
{
	for (int r = 0; r < job->nranks; r++) {
		struct run_rank *rk = &job->ranks[r];

		if (rk->pid <= 0 || !rk->running)
			continue;
		rk->ended_by_us = true;
		kill(-rk->pid, sig);
	}
}

/* Plans the end of the ranks still running: SIGTERM at term_at, SIGKILL RUN_TERM_NS later. */
static void run_plan_end(struct run_job *job, int64_t term_at)
{
	if (job->term_at == 0 && job->kill_at == 0)
		job->term_at = term_at;
}

static void run_record_exit(struct run_job *job, int r, int status)
{
	struct run_rank *rk = &job->ranks[r];
	int code = 0;

	/* what the rank printed last comes before the news of its end */
	for (int k = 0; k < 2; k++)
		while (rk->s[k].fd >= 0 && run_read_stream(r, &rk->s[k]))
			;

	rk->running = false;
	job->running--;
	if (WIFEXITED(status)) {
		code = WEXITSTATUS(status);
		if (code != 0 && !rk->ended_by_us)
			fprintf(stderr, "ibcomm_run: rank %d exited with status %d\n", r, code);
	} else if (WIFSIGNALED(status)) {
		int sig = WTERMSIG(status);

		code = 128 + sig;
		if (!rk->ended_by_us)
			fprintf(stderr, "ibcomm_run: rank %d killed by signal %d (%s)\n", r, sig, strsignal(sig));
	}
	if (code != 0 && job->failed_rank < 0 && !job->timed_out) {
		job->failed_rank = r;
		job->exit_code = code;
		if (job->running > 0) {
			fprintf(stderr, "ibcomm_run: rank %d failed: ending the %d other rank(s)\n", r,
				job->running);
			run_plan_end(job, tool_now_ns() + RUN_GRACE_NS);
		}
	}
}

static void run_reap(struct run_job *job)
{
	for (;;) {
		int status;
		pid_t pid = waitpid(-1, &status, WNOHANG);

		if (pid <= 0)
			return;
		for (int r = 0; r < job->nranks; r++) {
			if (job->ranks[r].pid == pid && job->ranks[r].running) {
				run_record_exit(job, r, status);
				break;
			}
		}
	}
}

/*
 * The rendezvous socket: ibcomm_run listens on host:0 itself and rank 0 inherits the socket
 * (IBCOMM_ROOT_FD), so no other process can take the port before rank 0 serves it.
 */
static int root_fd = -1;

/* Listens on host:0; writes "host:port" to out. */
static int run_listen_root(const char *host, char *out, size_t outlen)
{
	char why[256];
	int n;

	if (ibc_sock_listen(host, "0", &root_fd, 1, &n, why, sizeof(why))) {
		fprintf(stderr, "ibcomm_run: --host: %s\n", why);
		return -1;
	}
	if (ibc_sock_bound(root_fd, out, outlen) < 0) {
		fprintf(stderr, "ibcomm_run: --host: getsockname: %s\n", strerror(errno));
		return -1;
	}
	return 0;
}

static int run_make_job_key(void)
{
	unsigned char raw[16];
	char hex[2 * sizeof(raw) + 1];
	const char *set = getenv("IBCOMM_JOB_KEY");
	size_t got = 0;

	if (set && set[0])
		return 0;
	while (got < sizeof(raw)) {
		ssize_t n = getrandom(raw + got, sizeof(raw) - got, 0);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			fprintf(stderr, "ibcomm_run: getrandom: %s\n", strerror(errno));
			return -1;
		}
		got += (size_t)n;
	}
	for (size_t i = 0; i < sizeof(raw); i++)
		snprintf(hex + 2 * i, 3, "%02x", raw[i]);
	return setenv("IBCOMM_JOB_KEY", hex, 1);
}

/* --bind core: the r-th CPU of cpus only (nothing when r is beyond them). */
static void run_bind_rank(int r, const cpu_set_t *cpus)
{
	cpu_set_t one;
	int seen = 0;

	for (int c = 0; c < CPU_SETSIZE; c++) {
		if (!CPU_ISSET(c, cpus) || seen++ != r)
			continue;
		CPU_ZERO(&one);
		CPU_SET(c, &one);
		if (sched_setaffinity(0, sizeof(one), &one))
			fprintf(stderr, "ibcomm_run: rank %d: cannot bind to CPU %d: %s\n", r, c, strerror(errno));
		return;
	}
}

/*
 * In the child: becomes rank r and execs prog; never returns. Rank 0 reads the launcher's
 * standard input unless it is a terminal (a rank is not in the terminal's foreground
 * process group: reading would stop it); the other ranks read /dev/null.
 */
static void run_exec_rank(const struct run_job *job, int r, int outfd, int errfd, char **argv, const sigset_t *oldmask)
{
	char rank[16];

	setpgid(0, 0);
	signal(SIGINT, SIG_DFL);
	signal(SIGTERM, SIG_DFL);
	signal(SIGHUP, SIG_DFL);
	signal(SIGCHLD, SIG_DFL);
	signal(SIGPIPE, SIG_DFL);
	sigprocmask(SIG_SETMASK, oldmask, NULL);
	if (dup2(outfd, STDOUT_FILENO) < 0 || dup2(errfd, STDERR_FILENO) < 0)
		_exit(127);
	if (job->bind)
		run_bind_rank(r, &job->cpus);
	if (r != 0 || isatty(STDIN_FILENO)) {
		int devnull = open("/dev/null", O_RDONLY);

		if (devnull >= 0) {
			dup2(devnull, STDIN_FILENO);
			close(devnull);
		}
	}
	snprintf(rank, sizeof(rank), "%d", r);
	setenv("IBCOMM_RANK", rank, 1);
	if (r == 0 && root_fd >= 0) {
		char fd[16];

		snprintf(fd, sizeof(fd), "%d", root_fd);
		fcntl(root_fd, F_SETFD, 0); /* the other ranks' copies close at exec */
		setenv("IBCOMM_ROOT_FD", fd, 1);
	} else {
		unsetenv("IBCOMM_ROOT_FD");
	}
	execvp(argv[0], argv);
	fprintf(stderr, "ibcomm_run: rank %d: cannot run %s: %s\n", r, argv[0], strerror(errno));
	_exit(127);
}

static int run_start_rank(struct run_job *job, int r, char **argv, const sigset_t *oldmask)
{
	struct run_rank *rk = &job->ranks[r];
	int out[2], err[2];
	pid_t pid;

	if (pipe2(out, O_CLOEXEC) < 0)
		goto err_msg;
	if (pipe2(err, O_CLOEXEC) < 0)
		goto err_close_out;
	pid = fork();
	if (pid < 0)
		goto err_close_err;
	if (pid == 0)
		run_exec_rank(job, r, out[1], err[1], argv, oldmask);
	setpgid(pid, pid); /* also in the child: whichever runs first, no signal is lost */
	close(out[1]);
	close(err[1]);
	fcntl(out[0], F_SETFL, O_NONBLOCK);
	fcntl(err[0], F_SETFL, O_NONBLOCK);
	rk->pid = pid;
	rk->running = true;
	rk->s[0].fd = out[0];
	rk->s[1].fd = err[0];
	job->running++;
	return 0;

err_close_err:
	close(err[0]);
	close(err[1]);
err_close_out:
	close(out[0]);
	close(out[1]);
err_msg:
	fprintf(stderr, "ibcomm_run: cannot start rank %d: %s\n", r, strerror(errno));
	return -1;
}

/* Acts on the deadlines that have passed; returns the poll timeout in ms (-1: none). */
static int run_deadlines(struct run_job *job)
{
	int64_t now = tool_now_ns();
	int64_t next = 0;

	if (job->timeout_at && now >= job->timeout_at && !job->timed_out) {
		job->timed_out = true;
		fprintf(stderr, "ibcomm_run: timeout: the job ran for %g s: ending it\n", job->timeout_s);
		job->term_at = 0;
		job->kill_at = 0;
		run_plan_end(job, now);
	}
	if (job->term_at && now >= job->term_at) {
		run_signal_ranks(job, SIGTERM);
		job->term_at = 0;
		job->kill_at = now + RUN_TERM_NS;
	}
	if (job->kill_at && now >= job->kill_at) {
		run_signal_ranks(job, SIGKILL);
		job->kill_at = 0;
	}
	if (job->running == 0 && job->drain_until && now >= job->drain_until)
		return 0;
	if (job->timeout_at && !job->timed_out)
		next = job->timeout_at;
	if (job->term_at && (!next || job->term_at < next))
		next = job->term_at;
	if (job->kill_at && (!next || job->kill_at < next))
		next = job->kill_at;
	if (job->running == 0 && job->drain_until && (!next || job->drain_until < next))
		next = job->drain_until;
	if (!next)
		return -1;
	return next <= now ? 0 : (int)((next - now + 999999) / 1000000);
}

static void run_on_launcher_signal(struct run_job *job, int sig, int count)
{
	if (count > 1) {
		fprintf(stderr, "ibcomm_run: signal %d again: killing the ranks\n", sig);
		run_signal_ranks(job, SIGKILL);
		return;
	}
	fprintf(stderr, "ibcomm_run: got signal %d (%s): forwarding it to the ranks\n", sig, strsignal(sig));
	run_signal_ranks(job, sig);
	if (job->exit_code == 0 && job->failed_rank < 0)
		job->exit_code = 128 + sig;
	/* a rank that ignores it is ended like any other after a failure */
	job->term_at = 0;
	job->kill_at = tool_now_ns() + RUN_GRACE_NS + RUN_TERM_NS;
}

static int run_loop(struct run_job *job, const sigset_t *waitmask)
{
	struct pollfd *pfd = calloc((size_t)job->nranks * 2, sizeof(*pfd));
	int seen_signals = 0;

	if (!pfd) {
		fprintf(stderr, "ibcomm_run: out of memory\n");
		run_signal_ranks(job, SIGKILL);
		return 1;
	}
	for (;;) {
		int nfd = 0, timeout_ms;

		if (run_got_chld) {
			run_got_chld = 0;
			run_reap(job);
		}
		if (run_signal_count != seen_signals) {
			seen_signals = run_signal_count;
			run_on_launcher_signal(job, run_got_signal, seen_signals);
		}
		if (job->running == 0 && !job->drain_until) {
			/* whatever the ranks started in their process groups ends with them */
			for (int r = 0; r < job->nranks; r++)
				if (job->ranks[r].pid > 0)
					kill(-job->ranks[r].pid, SIGKILL);
			job->drain_until = tool_now_ns() + RUN_DRAIN_NS;
		}
		timeout_ms = run_deadlines(job);
		for (int r = 0; r < job->nranks; r++) {
			for (int k = 0; k < 2; k++) {
				if (job->ranks[r].s[k].fd < 0)
					continue;
				pfd[nfd].fd = job->ranks[r].s[k].fd;
				pfd[nfd].events = POLLIN;
				pfd[nfd].revents = 0;
				nfd++;
			}
		}
		if (job->running == 0 && (nfd == 0 || timeout_ms == 0))
			break;
		if (ppoll(pfd, (nfds_t)nfd,
			  timeout_ms < 0 ? NULL
					 : &(struct timespec){ timeout_ms / 1000, (timeout_ms % 1000) * 1000000L },
			  waitmask) < 0) {
			if (errno == EINTR)
				continue;
			fprintf(stderr, "ibcomm_run: poll: %s\n", strerror(errno));
			run_signal_ranks(job, SIGKILL);
			job->exit_code = job->exit_code ? job->exit_code : 1;
			job->timeout_at = 0;
			job->term_at = 0;
			job->kill_at = 0;
			job->drain_until = tool_now_ns();
			continue;
		}
		nfd = 0;
		for (int r = 0; r < job->nranks; r++) {
			for (int k = 0; k < 2; k++) {
				struct run_stream *s = &job->ranks[r].s[k];

				if (s->fd < 0)
					continue;
				if (pfd[nfd++].revents)
					run_read_stream(r, s);
			}
		}
	}
	for (int r = 0; r < job->nranks; r++)
		for (int k = 0; k < 2; k++)
			run_close_stream(r, &job->ranks[r].s[k]);
	free(pfd);
	if (job->timed_out)
		return RUN_EXIT_TIMEOUT;
	return job->exit_code;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "np", required_argument, NULL, 'n' },
		{ "transport", required_argument, NULL, 't' },
		{ "timeout", required_argument, NULL, 'T' },
		{ "host", required_argument, NULL, 'H' },
		{ "bind", required_argument, NULL, 'b' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct run_job job = { .failed_rank = -1 };
	const char *host = "127.0.0.1", *transport = NULL;
	struct sigaction sa = { .sa_handler = run_on_signal };
	sigset_t block, oldmask;
	char root[300], size[16];
	long nranks = 0;
	int opt, rc;

	while ((opt = getopt_long(argc, argv, "+n:t:T:H:b:h", longopts, NULL)) != -1) {
		switch (opt) {
		case 'n':
			if (!tool_parse_long(optarg, 1, RUN_MAX_RANKS, &nranks)) {
				fprintf(stderr, "ibcomm_run: -n %s: expected a number of ranks from 1 to %d\n",
					optarg, RUN_MAX_RANKS);
				return RUN_EXIT_USAGE;
			}
			break;
		case 't':
			transport = optarg;
			break;
		case 'T': {
			char *end;

			errno = 0;
			job.timeout_s = strtod(optarg, &end);
			if (errno || end == optarg || *end || !(job.timeout_s > 0) || job.timeout_s > 1e9) {
				fprintf(stderr, "ibcomm_run: --timeout %s: expected a positive number of seconds\n",
					optarg);
				return RUN_EXIT_USAGE;
			}
			break;
		}
		case 'H':
			host = optarg;
			break;
		case 'b':
			if (strcmp(optarg, "core") && strcmp(optarg, "none")) {
				fprintf(stderr, "ibcomm_run: --bind %s: expected core or none\n", optarg);
				return RUN_EXIT_USAGE;
			}
			job.bind = !strcmp(optarg, "core");
			if (job.bind && sched_getaffinity(0, sizeof(job.cpus), &job.cpus)) {
				fprintf(stderr, "ibcomm_run: --bind core: sched_getaffinity: %s\n", strerror(errno));
				return 1;
			}
			break;
		case 'h':
			run_usage(stdout);
			return 0;
		default:
			run_usage(stderr);
			return RUN_EXIT_USAGE;
		}
	}
	if (nranks == 0 || optind >= argc) {
		fprintf(stderr, "ibcomm_run: %s\n", nranks == 0 ? "-n N is required" : "no program to run");
		run_usage(stderr);
		return RUN_EXIT_USAGE;
	}

	/* a closed 0, 1 or 2 would be taken by a pipe and lost at exec */
	for (int fd = 0; fd <= 2; fd++)
		if (fcntl(fd, F_GETFD) < 0 && open("/dev/null", fd == 0 ? O_RDONLY : O_WRONLY) < 0)
			return 1;
	if (run_listen_root(host, root, sizeof(root)) < 0 || run_make_job_key() < 0)
		return 1;
	snprintf(size, sizeof(size), "%ld", nranks);
	/* the ranks' output goes through pipes: tell them whether a person watches (progress lines) */
	if (setenv("IBCOMM_RUN_TTY", isatty(STDERR_FILENO) ? "1" : "0", 1) < 0 ||
	    setenv("IBCOMM_ROOT", root, 1) < 0 || setenv("IBCOMM_SIZE", size, 1) < 0 ||
	    (transport && setenv("IBCOMM_TRANSPORT", transport, 1) < 0)) {
		fprintf(stderr, "ibcomm_run: setenv: %s\n", strerror(errno));
		return 1;
	}

	job.nranks = (int)nranks;
	job.ranks = calloc((size_t)nranks, sizeof(*job.ranks));
	if (!job.ranks) {
		fprintf(stderr, "ibcomm_run: out of memory\n");
		return 1;
	}
	for (int r = 0; r < job.nranks; r++) {
		for (int k = 0; k < 2; k++) {
			job.ranks[r].s[k].fd = -1;
			job.ranks[r].s[k].out = k == 0 ? STDOUT_FILENO : STDERR_FILENO;
			job.ranks[r].s[k].buf = malloc(RUN_LINE_MAX);
			if (!job.ranks[r].s[k].buf) {
				fprintf(stderr, "ibcomm_run: out of memory\n");
				rc = 1;
				goto err_free;
			}
		}
	}

	/* Signals stay blocked except inside ppoll(): no wakeup is lost, no handler races. */
	sigemptyset(&block);
	sigaddset(&block, SIGCHLD);
	sigaddset(&block, SIGINT);
	sigaddset(&block, SIGTERM);
	sigaddset(&block, SIGHUP);
	sigprocmask(SIG_BLOCK, &block, &oldmask);
	sigemptyset(&sa.sa_mask);
	sigaction(SIGCHLD, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	if (job.timeout_s > 0)
		job.timeout_at = tool_now_ns() + (int64_t)(job.timeout_s * 1e9);
	for (int r = 0; r < job.nranks; r++) {
		if (run_start_rank(&job, r, argv + optind, &oldmask) < 0) {
			if (job.failed_rank < 0) {
				job.failed_rank = r;
				job.exit_code = 1;
			}
			run_plan_end(&job, tool_now_ns());
			break;
		}
		if (r == 0 && root_fd >= 0) { /* rank 0's now: closed here, the port is free once rank 0 is done */
			close(root_fd);
			root_fd = -1;
		}
	}
	{
		sigset_t waitmask = oldmask;

		sigdelset(&waitmask, SIGCHLD);
		sigdelset(&waitmask, SIGINT);
		sigdelset(&waitmask, SIGTERM);
		sigdelset(&waitmask, SIGHUP);
		rc = run_loop(&job, &waitmask);
	}
err_free:
	for (int r = 0; r < job.nranks; r++) {
		free(job.ranks[r].s[0].buf);
		free(job.ranks[r].s[1].buf);
	}
	free(job.ranks);
	return rc;
}
