/*
 * tap.h - a minimal Test Anything Protocol producer for the unit tests.
 *
 *	plan_lazy();            or plan(N);
 *	ok(cond, "name %d", i);
 *	is_int(got, want, "name");
 *	is_str(got, want, "name");
 *	return done_testing();  exit status 0 only when every test passed
 *
 * Header-only (static functions) so each test is one .c file.
 */
#ifndef S3CACHEFS_TAP_H
#define S3CACHEFS_TAP_H

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static int tap_n;
static int tap_failed;
static int tap_planned = -1;

static inline void plan(int n)
{
	tap_planned = n;
	printf("1..%d\n", n);
}

static inline void plan_lazy(void)
{
	tap_planned = -1;
}

static inline __attribute__((format(printf, 2, 3))) int ok(int cond,
							   const char *fmt, ...)
{
	va_list ap;

	tap_n++;
	printf("%sok %d - ", cond ? "" : "not ", tap_n);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	if (!cond)
		tap_failed++;
	fflush(stdout);
	return cond;
}

static inline void diag(const char *fmt, ...)
	__attribute__((format(printf, 1, 2)));
static inline void diag(const char *fmt, ...)
{
	va_list ap;

	printf("# ");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
}

#define is_int(got, want, ...)                                           \
	do {                                                             \
		long long g_ = (long long)(got), w_ = (long long)(want); \
		if (!ok(g_ == w_, __VA_ARGS__))                          \
			diag("  got %lld, want %lld", g_, w_);           \
	} while (0)

#define is_str(got, want, ...)                                                 \
	do {                                                                   \
		const char *g_ = (got), *w_ = (want);                          \
		int same_ = (g_ == NULL && w_ == NULL) ||                      \
			    (g_ != NULL && w_ != NULL && strcmp(g_, w_) == 0); \
		if (!ok(same_, __VA_ARGS__))                                   \
			diag("  got '%s', want '%s'", g_ ? g_ : "(null)",      \
			     w_ ? w_ : "(null)");                              \
	} while (0)

static inline int done_testing(void)
{
	if (tap_planned < 0)
		printf("1..%d\n", tap_n);
	else if (tap_planned != tap_n)
		printf("# planned %d tests but ran %d\n", tap_planned, tap_n),
			tap_failed++;
	return tap_failed ? 1 : 0;
}

#endif
