/*
 * Runs a program as a user would, for the tests of the tools: extra environment, stdout and
 * stderr collected (stderr optionally a terminal), a signal once it has printed enough, and
 * a bounded time (SIGKILL after the limit: the test fails rather than hangs).
 */
#ifndef IBCOMM_TEST_PROC_RUNNER_H
#define IBCOMM_TEST_PROC_RUNNER_H

#include <stdbool.h>
#include <stddef.h>

#define PROC_LIMIT_S 60 /* the default time limit */

struct proc_out {
	char *out; /* stdout, NUL-terminated */
	size_t outlen;
	char *err; /* stderr, NUL-terminated */
	size_t errlen;
	int status;     /* exit status, 128+signal when killed */
	double seconds; /* how long it ran */
};

struct proc_opts {
	char *const *env;  /* "NAME=VALUE" strings added to its environment; NULL-terminated */
	bool err_tty;      /* its stderr is a pseudo-terminal (what is written there is collected) */
	int signal;        /* > 0: sent to it once its stdout holds signal_lines lines */
	int signal_lines;
	int limit_s;       /* killed after this many seconds; 0: PROC_LIMIT_S */
};

/*
 * Runs argv (argv[0] a path) with opts (NULL: none) and waits for it. 0 with o filled (free
 * it with proc_out_free), or -1 when it could not be started. With TEST_VERBOSE set in the
 * environment, prints each run's status and output on stderr.
 */
int proc_run(char *const argv[], const struct proc_opts *opts, struct proc_out *o);
void proc_out_free(struct proc_out *o);

#endif
