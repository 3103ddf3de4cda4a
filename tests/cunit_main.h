/*
 * The main() of every CUnit test program (tests/cunit_main.c): registers the suites, runs
 * them, prints CUnit's summary and the tests that were skipped, and exits as automake's test
 * harness expects: 0 passed, 1 failed, 77 skipped (nothing ran), 99 could not run.
 *
 * A test that cannot run here (no RDMA device, no IPv6 loopback, not root, ...) calls
 * cm_skip("why") and returns: CUnit counts it as passed, the summary lists it as skipped,
 * and a program whose every test was skipped exits 77, so `make check` says SKIP instead of
 * PASS. A program that cannot run at all returns cm_skip_all("why") from main().
 */
#ifndef CM_CUNIT_MAIN_H
#define CM_CUNIT_MAIN_H

#include <stddef.h>

#include <CUnit/CUnit.h>

struct cm_test {
	const char *name;
	CU_TestFunc fn;
};

struct cm_suite {
	const char *name;
	const struct cm_test *tests;
	size_t ntests;
};

#define CM_COUNT(a) (sizeof(a) / sizeof((a)[0]))
/* { "name", tests, CM_COUNT(tests) } from an array of struct cm_test */
#define CM_SUITE(name, tests) { (name), (tests), CM_COUNT(tests) }
/* cm_main() of one suite */
#define CM_MAIN1(argc, argv, name, tests) cm_main((argc), (argv), &(const struct cm_suite)CM_SUITE(name, tests), 1)

#define CM_EXIT_SKIP 77
#define CM_EXIT_ERROR 99

/*
 * Runs the suites and returns main()'s status. Only the tests whose name contains a filter
 * run: argv[1] when given, else $HX_ONLY when set and not empty (no test matching is a skip).
 */
int cm_main(int argc, char **argv, const struct cm_suite *suites, size_t nsuites);
/* In a test: it cannot run here (the reason, printf-style); the test then returns. */
void cm_skip(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* In main(), before cm_main(): nothing can run here. Prints the reason; returns 77. */
int cm_skip_all(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
