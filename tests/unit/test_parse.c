/*
 * test_parse.c - tables of good and bad input for every parser of parse.h,
 * with the overflow boundaries of 64-bit results, and a check that nothing
 * is written to *out on failure.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "s3cachefs/parse.h"
#include "tap.h"

#define KI 1024ULL
#define MI (KI * KI)
#define GI (MI * KI)
#define TI (GI * KI)
#define PI (TI * KI)
#define SENTINEL 0xdeadbeefULL

struct u64_case {
	const char *in;
	int rc;
	uint64_t want;
};

#define N(a) (sizeof(a) / sizeof((a)[0]))

/* @s for a TAP test name: control characters escaped, so lines stay whole. */
static const char *vis(const char *s)
{
	static char out[256];
	size_t n = 0;

	for (; *s && n + 5 < sizeof(out); s++) {
		unsigned char c = (unsigned char)*s;

		if (c < 0x20 || c == 0x7f)
			n += (size_t)snprintf(out + n, sizeof(out) - n,
					      "\\x%02x", c);
		else
			out[n++] = (char)c;
	}
	out[n] = '\0';
	return out;
}

static const struct u64_case size_cases[] = {
	{ "0", 0, 0 },
	{ "1", 0, 1 },
	{ "4096", 0, 4096 },
	{ "007", 0, 7 },
	{ "1B", 0, 1 },
	{ "512b", 0, 512 },
	{ "1K", 0, KI },
	{ "1k", 0, KI },
	{ "500K", 0, 500 * KI },
	{ "1KB", 0, KI },
	{ "1kb", 0, KI },
	{ "1Kb", 0, KI },
	{ "64KiB", 0, 64 * KI },
	{ "64kib", 0, 64 * KI },
	{ "64KIB", 0, 64 * KI },
	{ "500M", 0, 500 * MI },
	{ "2MB", 0, 2 * MI },
	{ "2MiB", 0, 2 * MI },
	{ "20G", 0, 20 * GI },
	{ "20g", 0, 20 * GI },
	{ "1GiB", 0, GI },
	{ "1T", 0, TI },
	{ "1.5T", 0, TI + TI / 2 },
	{ "1P", 0, PI },
	{ "3pb", 0, 3 * PI },
	{ "1.5G", 0, 1610612736ULL },
	{ "0.5K", 0, 512 },
	{ "0.5", 0, 0 },
	{ "1.9", 0, 1 },
	{ "1.1K", 0, 1126 }, /* 1126.4 rounded down */
	{ "0.0001K", 0, 0 },
	{ "0.001K", 0, 1 },
	{ "1.999999999999999999999999K", 0, 2047 },
	{ "1.000000000000000000000000000000000001K", 0, 1024 },
	{ "0.99999999999999999999999999999P", 0, PI - 1 },
	{ "16M", 0, 16 * MI },
	{ "5G", 0, 5 * GI },
	/* the 64-bit edge */
	{ "18446744073709551615", 0, UINT64_MAX },
	{ "18446744073709551615B", 0, UINT64_MAX },
	{ "18446744073709551615.999", 0, UINT64_MAX },
	{ "18446744073709551616", -ERANGE, 0 },
	{ "99999999999999999999999", -ERANGE, 0 },
	{ "16383P", 0, 16383 * PI },
	{ "16383.999999999999999P", 0, UINT64_MAX - 1 },
	{ "16384P", -ERANGE, 0 },
	{ "16777215T", 0, 16777215 * TI },
	{ "16777216T", -ERANGE, 0 },
	{ "17179869184G", -ERANGE, 0 },
	{ "18014398509481983K", 0, 18014398509481983ULL * KI },
	{ "18014398509481984K", -ERANGE, 0 },
	/* malformed */
	{ "", -EINVAL, 0 },
	{ " 5", -EINVAL, 0 },
	{ "5 ", -EINVAL, 0 },
	{ "5 K", -EINVAL, 0 },
	{ "\t5", -EINVAL, 0 },
	{ "5\n", -EINVAL, 0 },
	{ "-1", -EINVAL, 0 },
	{ "+1", -EINVAL, 0 },
	{ "1e3", -EINVAL, 0 },
	{ "0x10", -EINVAL, 0 },
	{ "16E", -EINVAL, 0 }, /* exa is not a unit */
	{ "1Z", -EINVAL, 0 },
	{ "K", -EINVAL, 0 },
	{ "KB", -EINVAL, 0 },
	{ "B", -EINVAL, 0 },
	{ ".5K", -EINVAL, 0 },
	{ "1.", -EINVAL, 0 },
	{ "1.K", -EINVAL, 0 },
	{ "1.5.5", -EINVAL, 0 },
	{ "1,5K", -EINVAL, 0 },
	{ "1KK", -EINVAL, 0 },
	{ "1KBB", -EINVAL, 0 },
	{ "1KiBB", -EINVAL, 0 },
	{ "1Ki", -EINVAL, 0 },
	{ "1iB", -EINVAL, 0 },
	{ "1BB", -EINVAL, 0 },
	{ "1bit", -EINVAL, 0 },
	{ "3X", -EINVAL, 0 },
	{ "1 ", -EINVAL, 0 },
	{ "1K ", -EINVAL, 0 },
	{ "99999999999999999999999X", -EINVAL, 0 }, /* syntax before range */
	{ "inf", -EINVAL, 0 },
	{ "nan", -EINVAL, 0 },
};

#define SEC 1000ULL
#define MIN (60 * SEC)
#define HOUR (60 * MIN)
#define DAY (24 * HOUR)
#define WEEK (7 * DAY)

static const struct u64_case duration_cases[] = {
	{ "0", 0, 0 },
	{ "0s", 0, 0 },
	{ "0ms", 0, 0 },
	{ "30", 0, 30 * SEC },
	{ "250ms", 0, 250 },
	{ "30s", 0, 30 * SEC },
	{ "5m", 0, 5 * MIN },
	{ "24h", 0, 24 * HOUR },
	{ "7d", 0, 7 * DAY },
	{ "1w", 0, WEEK },
	{ "1h30m", 0, HOUR + 30 * MIN },
	{ "1m30s", 0, MIN + 30 * SEC },
	{ "2s500ms", 0, 2500 },
	{ "1w2d3h4m5s6ms", 0,
	  WEEK + 2 * DAY + 3 * HOUR + 4 * MIN + 5 * SEC + 6 },
	{ "1d1ms", 0, DAY + 1 },
	{ "90m", 0, 90 * MIN },
	{ "1.5s", 0, 1500 },
	{ "1.5h", 0, 90 * MIN },
	{ "0.5", 0, 500 },
	{ "0.25s", 0, 250 },
	{ "1.5ms", 0, 1 },
	{ "0.0005s", 0, 0 },
	{ "0.001s", 0, 1 },
	{ "1.9999999999999999999999s", 0, 1999 },
	{ "007s", 0, 7 * SEC },
	/* the 64-bit edge */
	{ "18446744073709551615ms", 0, UINT64_MAX },
	{ "18446744073709551616ms", -ERANGE, 0 },
	{ "18446744073709551s", 0, 18446744073709551000ULL },
	{ "18446744073709551s615ms", 0, UINT64_MAX },
	{ "18446744073709551s616ms", -ERANGE, 0 },
	{ "18446744073709552s", -ERANGE, 0 },
	{ "18446744073709551", 0, 18446744073709551000ULL },
	{ "18446744073709552", -ERANGE, 0 },
	{ "18446744073709551615", -ERANGE, 0 },
	{ "30500568904w", 0, 30500568904ULL * WEEK },
	{ "30500568905w", -ERANGE, 0 },
	{ "30500568904w6d", 0, 30500568904ULL * WEEK + 6 * DAY },
	{ "30500568904w7d", -ERANGE, 0 },
	{ "99999999999999999999999w", -ERANGE, 0 },
	/* malformed */
	{ "", -EINVAL, 0 },
	{ " 5s", -EINVAL, 0 },
	{ "5s ", -EINVAL, 0 },
	{ "1h 30m", -EINVAL, 0 },
	{ "-1s", -EINVAL, 0 },
	{ "-1", -EINVAL, 0 },
	{ "+1s", -EINVAL, 0 },
	{ "1e3", -EINVAL, 0 },
	{ "0x10", -EINVAL, 0 },
	{ "s", -EINVAL, 0 },
	{ "ms", -EINVAL, 0 },
	{ "1x", -EINVAL, 0 },
	{ "1y", -EINVAL, 0 },
	{ "1S", -EINVAL, 0 },
	{ "1H", -EINVAL, 0 },
	{ "1M", -EINVAL, 0 },
	{ "1sec", -EINVAL, 0 },
	{ "1mss", -EINVAL, 0 },
	{ "1h30", -EINVAL, 0 }, /* bare seconds only on their own */
	{ "30m1h", -EINVAL, 0 },
	{ "1h1h", -EINVAL, 0 },
	{ "1s1m", -EINVAL, 0 },
	{ "1ms1s", -EINVAL, 0 },
	{ "1.s", -EINVAL, 0 },
	{ ".5s", -EINVAL, 0 },
	{ "1..5s", -EINVAL, 0 },
	{ "1h-30m", -EINVAL, 0 },
	{ "1h,30m", -EINVAL, 0 },
	{ "99999999999999999999999x", -EINVAL, 0 }, /* syntax before range */
	{ "99999999999999999999999w1y", -EINVAL, 0 },
};

static void test_sizes(void)
{
	size_t i;

	for (i = 0; i < N(size_cases); i++) {
		const struct u64_case *c = &size_cases[i];
		uint64_t v = SENTINEL;
		int rc = parse_size(c->in, &v);

		is_int(rc, c->rc, "parse_size('%s') returns %d", vis(c->in),
		       c->rc);
		if (c->rc == 0)
			ok(v == c->want, "parse_size('%s') = %llu (got %llu)",
			   vis(c->in), (unsigned long long)c->want,
			   (unsigned long long)v);
		else
			ok(v == SENTINEL, "parse_size('%s') leaves *out",
			   vis(c->in));
	}
}

static void test_durations(void)
{
	size_t i;

	for (i = 0; i < N(duration_cases); i++) {
		const struct u64_case *c = &duration_cases[i];
		uint64_t v = SENTINEL;
		int rc = parse_duration_ms(c->in, &v);

		is_int(rc, c->rc, "parse_duration_ms('%s') returns %d",
		       vis(c->in), c->rc);
		if (c->rc == 0)
			ok(v == c->want,
			   "parse_duration_ms('%s') = %llu (got %llu)",
			   vis(c->in), (unsigned long long)c->want,
			   (unsigned long long)v);
		else
			ok(v == SENTINEL, "parse_duration_ms('%s') leaves *out",
			   vis(c->in));
	}
}

static void test_long_fraction(void)
{
	/* a fraction far longer than any integer type holds */
	size_t n = 100000;
	char *s = malloc(n + 4);
	uint64_t v = 0;

	if (!ok(s != NULL, "allocated a long fraction"))
		return;
	memset(s, '9', n + 3);
	s[0] = '1';
	s[1] = '.';
	s[n + 2] = 'G';
	s[n + 3] = '\0';
	is_int(parse_size(s, &v), 0, "size with 100000 fraction digits");
	ok(v == 2 * GI - 1, "rounded down below 2G");
	s[n + 2] = 's';
	is_int(parse_duration_ms(s, &v), 0, "duration with long fraction");
	ok(v == 1999, "rounded down to 1999ms");
	free(s);
}

static void test_bools(void)
{
	static const struct {
		const char *in;
		int rc;
		bool want;
	} cases[] = {
		{ "1", 0, true },
		{ "0", 0, false },
		{ "yes", 0, true },
		{ "no", 0, false },
		{ "true", 0, true },
		{ "false", 0, false },
		{ "on", 0, true },
		{ "off", 0, false },
		{ "YES", 0, true },
		{ "No", 0, false },
		{ "TRUE", 0, true },
		{ "False", 0, false },
		{ "On", 0, true },
		{ "OFF", 0, false },
		{ "", -EINVAL, false },
		{ "2", -EINVAL, false },
		{ "-1", -EINVAL, false },
		{ "01", -EINVAL, false },
		{ "y", -EINVAL, false },
		{ "n", -EINVAL, false },
		{ "t", -EINVAL, false },
		{ "yes ", -EINVAL, false },
		{ " yes", -EINVAL, false },
		{ "enable", -EINVAL, false },
		{ "maybe", -EINVAL, false },
		{ "truee", -EINVAL, false },
		{ "onn", -EINVAL, false },
		{ "of", -EINVAL, false },
	};
	size_t i;

	for (i = 0; i < N(cases); i++) {
		bool v = !cases[i].want, sentinel = v;
		int rc = parse_bool(cases[i].in, &v);

		is_int(rc, cases[i].rc, "parse_bool('%s') returns %d",
		       cases[i].in, cases[i].rc);
		if (cases[i].rc == 0)
			ok(v == cases[i].want, "parse_bool('%s') = %d",
			   cases[i].in, cases[i].want);
		else
			ok(v == sentinel, "parse_bool('%s') leaves *out",
			   cases[i].in);
	}
	{
		/* failure must leave either value untouched */
		bool t = true, f = false;

		parse_bool("bad", &t);
		parse_bool("bad", &f);
		ok(t == true && f == false, "parse_bool failure leaves *out");
	}
}

static void test_uints(void)
{
	static const struct {
		const char *in;
		uint64_t min, max;
		int rc;
		uint64_t want;
	} cases[] = {
		{ "0", 0, 10, 0, 0 },
		{ "10", 0, 10, 0, 10 },
		{ "1", 1, 64, 0, 1 },
		{ "64", 1, 64, 0, 64 },
		{ "007", 0, 10, 0, 7 },
		{ "0", 1, 64, -ERANGE, 0 },
		{ "65", 1, 64, -ERANGE, 0 },
		{ "100", 1, 64, -ERANGE, 0 },
		{ "5", 5, 5, 0, 5 },
		{ "4", 5, 5, -ERANGE, 0 },
		{ "18446744073709551615", 0, UINT64_MAX, 0, UINT64_MAX },
		{ "18446744073709551615", 0, UINT64_MAX - 1, -ERANGE, 0 },
		{ "18446744073709551616", 0, UINT64_MAX, -ERANGE, 0 },
		{ "18446744073709551620", 0, UINT64_MAX, -ERANGE, 0 },
		{ "99999999999999999999999", 0, UINT64_MAX, -ERANGE, 0 },
		{ "", 0, 10, -EINVAL, 0 },
		{ " 5", 0, 10, -EINVAL, 0 },
		{ "5 ", 0, 10, -EINVAL, 0 },
		{ "-1", 0, 10, -EINVAL, 0 },
		{ "+1", 0, 10, -EINVAL, 0 },
		{ "1.0", 0, 10, -EINVAL, 0 },
		{ "1e3", 0, 10000, -EINVAL, 0 },
		{ "0x10", 0, 100, -EINVAL, 0 },
		{ "1K", 0, 10000, -EINVAL, 0 },
		{ "ten", 0, 100, -EINVAL, 0 },
		{ "99999999999999999999999x", 0, 1, -EINVAL, 0 },
	};
	size_t i;

	for (i = 0; i < N(cases); i++) {
		uint64_t v = SENTINEL;
		int rc =
			parse_uint(cases[i].in, cases[i].min, cases[i].max, &v);

		is_int(rc, cases[i].rc, "parse_uint('%s', %llu, %llu) = %d",
		       cases[i].in, (unsigned long long)cases[i].min,
		       (unsigned long long)cases[i].max, cases[i].rc);
		if (cases[i].rc == 0)
			ok(v == cases[i].want, "parse_uint('%s') = %llu",
			   cases[i].in, (unsigned long long)cases[i].want);
		else
			ok(v == SENTINEL, "parse_uint('%s') leaves *out",
			   cases[i].in);
	}
}

int main(void)
{
	plan_lazy();
	test_sizes();
	test_durations();
	test_long_fraction();
	test_bools();
	test_uints();
	return done_testing();
}
