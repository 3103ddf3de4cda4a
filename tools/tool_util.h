/*
 * Small helpers shared by the command-line tools (ibcomm_run, ibcomm_bench, ibcomm_ping) and
 * their tests: a monotonic clock, option values with range checks, JSON output. libc only,
 * so that a tool or test that does not link the library can use them.
 */
#ifndef IBCOMM_TOOL_UTIL_H
#define IBCOMM_TOOL_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* CLOCK_MONOTONIC, in seconds and in nanoseconds. */
double tool_now_s(void);
int64_t tool_now_ns(void);

/* A whole decimal number in [min, max], nothing after it. False (out untouched) otherwise. */
bool tool_parse_long(const char *s, long min, long max, long *out);
bool tool_parse_int(const char *s, int min, int max, int *out);

/*
 * A byte count: "8", "64K", "1M", "2G" (powers of 1024, either case), a trailing B accepted
 * ("64KB"). Whole numbers only, 0 allowed; false on anything else or on overflow.
 */
bool tool_parse_size(const char *s, size_t *out);

/* s as a JSON string, quoted: ", \ and newline escaped, other control bytes as \u00XX. */
void tool_json_str(FILE *f, const char *s);
/* v with fmt (a double conversion), or null when it is not finite (JSON has no NaN). */
void tool_json_num(FILE *f, const char *fmt, double v);

/* Whether the file at path starts with the PNG signature. */
bool tool_file_is_png(const char *path);

#endif
