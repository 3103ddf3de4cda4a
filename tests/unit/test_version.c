/*
 * The version, written once in configure.ac (AC_INIT): the generated header's macros agree
 * with it and with each other, and ibcomm_version() of the shared library (this test links
 * libibcomm.la, not the core) returns the same code.
 */
#include <stdio.h>
#include <string.h>

#include <CUnit/Basic.h>

#include "ibcomm.h"
#include "../cunit_main.h"

static void test_macros(void)
{
	char s[64];

	CU_ASSERT_EQUAL(IBCOMM_VERSION_CODE, IBCOMM_VERSION_MAJOR * 10000 + IBCOMM_VERSION_MINOR * 100 + IBCOMM_VERSION_PATCH);
	CU_ASSERT(IBCOMM_VERSION_MINOR < 100 && IBCOMM_VERSION_PATCH < 100);
	snprintf(s, sizeof(s), "%d.%d.%d", IBCOMM_VERSION_MAJOR, IBCOMM_VERSION_MINOR, IBCOMM_VERSION_PATCH);
	CU_ASSERT_STRING_EQUAL(s, IBCOMM_VERSION_STRING);
	CU_ASSERT_STRING_EQUAL(IBCOMM_VERSION_STRING, IBCOMM_TEST_AC_VERSION); /* AC_INIT's, from make */
}

static void test_function(void)
{
	CU_ASSERT_EQUAL(ibcomm_version(), IBCOMM_VERSION_CODE);
	printf("\n    ibcomm_version() = %d (headers: %s)\n", ibcomm_version(), IBCOMM_VERSION_STRING);
}

int main(int argc, char **argv)
{
	static const struct cm_test tests[] = {
		{ "macros agree with AC_INIT", test_macros },
		{ "ibcomm_version() of the shared library", test_function },
	};

	return CM_MAIN1(argc, argv, "version", tests);
}
