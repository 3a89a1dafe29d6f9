/*
 * parse.h - strict parsers for the values users type: sizes, durations,
 * booleans and bounded integers.  Each accepts the whole string or fails
 * with -EINVAL (malformed) or -ERANGE (out of range); nothing is written to
 * *out on failure.
 */
#ifndef S3CACHEFS_PARSE_H
#define S3CACHEFS_PARSE_H

#include <stdbool.h>
#include <stdint.h>

/*
 * A byte count: digits with an optional fraction and an optional unit,
 * binary as everywhere in storage tools: "4096", "500K", "500M", "20G",
 * "1.5T", "64KiB", "2MB" (K/M/G/T/P, with or without "B" or "iB", any case).
 */
int parse_size(const char *s, uint64_t *out);

/*
 * A duration in milliseconds: "250ms", "30s", "5m", "24h", "7d", "1w",
 * combinations like "1h30m" (units lowercase, largest first, each once),
 * fractions ("1.5h", rounded down to a millisecond), or a bare number of
 * seconds ("30").
 */
int parse_duration_ms(const char *s, uint64_t *out);

/* "1", "0", "yes", "no", "true", "false", "on", "off" (any case). */
int parse_bool(const char *s, bool *out);

/* A decimal integer in [min, max]. */
int parse_uint(const char *s, uint64_t min, uint64_t max, uint64_t *out);

#endif
