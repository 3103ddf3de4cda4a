/* Runs a program for a test, bounded in time, output collected: see proc_runner.h. */
#define _GNU_SOURCE /* posix_openpt, ptsname, program_invocation_short_name */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "proc_runner.h"
#include "tool_util.h"

static void proc_append(char **buf, size_t *len, const char *data, size_t n)
{
	char *p = realloc(*buf, *len + n + 1);

	if (!p)
		abort();
	memcpy(p + *len, data, n);
	*len += n;
	p[*len] = '\0';
	*buf = p;
}

void proc_out_free(struct proc_out *o)
{
	free(o->out);
	free(o->err);
	memset(o, 0, sizeof(*o));
}

/* Where the child's stderr goes: a pipe, or a pseudo-terminal. fd[0] is read, fd[1] given. */
static int proc_err_channel(bool tty, int fd[2])
{
	if (!tty)
		return pipe(fd);
	/* the parent keeps the terminal side open until the child has it: no early EIO */
	fd[0] = posix_openpt(O_RDWR | O_NOCTTY);
	if (fd[0] < 0 || grantpt(fd[0]) < 0 || unlockpt(fd[0]) < 0)
		return -1;
	fd[1] = open(ptsname(fd[0]), O_RDWR | O_NOCTTY);
	return fd[1] < 0 ? -1 : 0;
}

static int proc_count_lines(const char *s)
{
	int lines = 0;

	for (; *s; s++)
		lines += *s == '\n';
	return lines;
}

int proc_run(char *const argv[], const struct proc_opts *opts, struct proc_out *o)
{
	static const struct proc_opts none;
	int limit_s, outp[2], errp[2] = { -1, -1 }, wst;
	bool signalled = false;
	double start, limit;
	pid_t pid;

	if (!opts)
		opts = &none;
	limit_s = opts->limit_s > 0 ? opts->limit_s : PROC_LIMIT_S;
	memset(o, 0, sizeof(*o));
	o->out = calloc(1, 1);
	o->err = calloc(1, 1);
	if (!o->out || !o->err || pipe(outp) < 0)
		return -1;
	if (proc_err_channel(opts->err_tty, errp) < 0)
		return -1;
	start = tool_now_s();
	limit = start + limit_s;
	pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		dup2(outp[1], 1);
		dup2(errp[1], 2);
		close(outp[0]);
		close(outp[1]);
		close(errp[0]);
		close(errp[1]);
		for (int i = 0; opts->env && opts->env[i]; i++)
			putenv(opts->env[i]);
		execv(argv[0], argv);
		_exit(127);
	}
	close(outp[1]);
	close(errp[1]);
	for (int fds[2] = { outp[0], errp[0] }; fds[0] >= 0 || fds[1] >= 0;) {
		/* poll() skips negative fds: a closed end stays in the set as -1 */
		struct pollfd pfd[2] = { { fds[0], POLLIN, 0 }, { fds[1], POLLIN, 0 } };
		double left = limit - tool_now_s();
		char buf[4096];

		if (left <= 0) {
			fprintf(stderr, "%s: %s still running after %d s: killing it\n", program_invocation_short_name,
				argv[0], limit_s);
			kill(pid, SIGKILL);
			limit = tool_now_s() + 3600;
			left = 3600;
		}
		if (poll(pfd, 2, (int)(left * 1000) + 1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		for (int k = 0; k < 2; k++) {
			ssize_t n;

			if (fds[k] < 0 || !pfd[k].revents)
				continue;
			n = read(fds[k], buf, sizeof(buf));
			if (n <= 0) { /* a terminal whose other side closed says EIO */
				close(fds[k]);
				fds[k] = -1;
			} else if (k == 0) {
				proc_append(&o->out, &o->outlen, buf, (size_t)n);
			} else {
				proc_append(&o->err, &o->errlen, buf, (size_t)n);
			}
		}
		if (opts->signal > 0 && !signalled && proc_count_lines(o->out) >= opts->signal_lines) {
			kill(pid, opts->signal);
			signalled = true;
		}
	}
	if (waitpid(pid, &wst, 0) < 0)
		return -1;
	o->seconds = tool_now_s() - start;
	o->status = WIFEXITED(wst) ? WEXITSTATUS(wst) : 128 + WTERMSIG(wst);
	if (getenv("TEST_VERBOSE"))
		fprintf(stderr, "--- %s: status %d\n--- stdout:\n%s--- stderr:\n%s", argv[0], o->status, o->out, o->err);
	return 0;
}
