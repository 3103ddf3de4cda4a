/* The shared main() of the CUnit test programs: see cunit_main.h. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <CUnit/Basic.h>

#include "cunit_main.h"

#define CM_MAX_SKIPS 64

struct cm_skipped {
	char test[160];
	char why[200];
};

static struct cm_skipped cm_skips[CM_MAX_SKIPS];
static unsigned cm_nskips; /* tests skipped (may exceed CM_MAX_SKIPS: the rest are counted only) */
static const void *cm_last; /* the test last counted, so that a second cm_skip() in it counts once */

void cm_skip(const char *fmt, ...)
{
	CU_pTest t = CU_get_current_test();
	CU_pSuite s = CU_get_current_suite();
	char why[200];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	printf("SKIPPED (%s) ", why);
	fflush(stdout);
	if (!t || t == cm_last)
		return;
	cm_last = t;
	if (cm_nskips < CM_MAX_SKIPS) {
		struct cm_skipped *k = &cm_skips[cm_nskips];

		snprintf(k->test, sizeof(k->test), "%s: %s", s && s->pName ? s->pName : "?", t->pName ? t->pName : "?");
		snprintf(k->why, sizeof(k->why), "%s", why);
	}
	cm_nskips++;
}

int cm_skip_all(const char *fmt, ...)
{
	va_list ap;

	printf("SKIP: ");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	return CM_EXIT_SKIP;
}

int cm_main(int argc, char **argv, const struct cm_suite *suites, size_t nsuites)
{
	const char *only = argc > 1 ? argv[1] : getenv("HX_ONLY");
	unsigned failed, run, added = 0;

	setvbuf(stderr, NULL, _IOLBF, 0);
	if (only && !*only)
		only = NULL;
	if (CU_initialize_registry() != CUE_SUCCESS)
		return CM_EXIT_ERROR;
	for (size_t i = 0; i < nsuites; i++) {
		CU_pSuite s = CU_add_suite(suites[i].name, NULL, NULL);

		if (!s)
			goto err;
		for (size_t j = 0; j < suites[i].ntests; j++) {
			if (only && !strstr(suites[i].tests[j].name, only))
				continue;
			if (!CU_add_test(s, suites[i].tests[j].name, suites[i].tests[j].fn))
				goto err;
			added++;
		}
	}
	if (!added) {
		CU_cleanup_registry();
		return cm_skip_all("no test matches \"%s\"", only ? only : "");
	}
	CU_basic_set_mode(CU_BRM_VERBOSE);
	CU_basic_run_tests();
	/* CU_basic_run_tests() returns 0 even when tests fail: count them before cleaning up */
	failed = CU_get_number_of_tests_failed() + CU_get_number_of_suites_failed();
	run = CU_get_number_of_tests_run();
	CU_cleanup_registry();
	if (cm_nskips) {
		printf("\nSkipped %u of %u tests:\n", cm_nskips, run);
		for (unsigned i = 0; i < cm_nskips && i < CM_MAX_SKIPS; i++)
			printf("  SKIPPED %s (%s)\n", cm_skips[i].test, cm_skips[i].why);
		if (cm_nskips > CM_MAX_SKIPS)
			printf("  ... and %u more\n", cm_nskips - CM_MAX_SKIPS);
	}
	if (failed)
		return 1;
	return run && cm_nskips >= run ? CM_EXIT_SKIP : 0;
err:
	CU_cleanup_registry();
	return CM_EXIT_ERROR;
}
