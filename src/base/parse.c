/*
 * parse.c - strict parsers for the values users type in options, config
 * files and environment variables: sizes, durations, booleans and bounded
 * integers.
 *
 * Every parser takes the whole string or nothing: no surrounding space, no
 * sign, no exponent, no hex, no empty string.  Syntax is checked before
 * range, so "99999999999999999999X" is -EINVAL and "99999999999999999999"
 * is -ERANGE.  *out is written only on success.
 *
 * Fractions ("1.5G", "0.25s") are computed exactly with integers and
 * rounded down, so "1.1K" gives the same byte count on every machine, and
 * a fraction of any length cannot overflow.
 *
 * Size units are binary and case-insensitive: K M G T P, each optionally
 * followed by "B" or "iB"; a bare "B" means bytes.  Duration units are
 * lowercase only ("M" would read as months): w d h m s ms, combined in
 * decreasing order without repeats ("1h30m", not "30m1h"); a number without
 * a unit is seconds, and only on its own.
 */
#include <ctype.h>
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>

#include "s3cachefs/parse.h"

/* A scanned "DIGITS[.DIGITS]": where its two digit runs are. */
struct number {
	const char *int_s;
	size_t int_n;
	const char *frac_s;
	size_t frac_n;
};

static bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}

static size_t digit_run(const char *s)
{
	size_t n = 0;

	while (is_digit(s[n]))
		n++;
	return n;
}

/*
 * Scan "DIGITS[.DIGITS]" at *sp and advance past it.  A fraction needs
 * digits on both sides of the dot.  0 or -EINVAL.
 */
static int scan_number(const char **sp, struct number *num)
{
	const char *s = *sp;

	num->int_s = s;
	num->int_n = digit_run(s);
	if (num->int_n == 0)
		return -EINVAL;
	s += num->int_n;
	num->frac_s = NULL;
	num->frac_n = 0;
	if (*s == '.') {
		num->frac_s = s + 1;
		num->frac_n = digit_run(s + 1);
		if (num->frac_n == 0)
			return -EINVAL;
		s += 1 + num->frac_n;
	}
	*sp = s;
	return 0;
}

/* Decimal digits to an integer: 0 or -ERANGE. */
static int digits_to_u64(const char *s, size_t n, uint64_t *out)
{
	uint64_t v = 0;
	size_t i;

	for (i = 0; i < n; i++) {
		unsigned d = (unsigned)(s[i] - '0');

		if (v > (UINT64_MAX - d) / 10)
			return -ERANGE;
		v = v * 10 + d;
	}
	*out = v;
	return 0;
}

/*
 * floor(num * mult): 0 or -ERANGE.  @mult must stay below UINT64_MAX / 10.
 *
 * The fraction 0.d1...dn times mult is evaluated by Horner's rule from the
 * last digit, q = d_i * mult + q / 10, then divided by ten once more.
 * Taking the floor at each step gives the exact floor of the whole, since
 * floor(floor(x) / 10) == floor(x / 10), and q stays below 10 * mult.
 */
static int scale_number(const struct number *num, uint64_t mult, uint64_t *out)
{
	uint64_t v, q = 0;
	size_t i;
	int rc;

	rc = digits_to_u64(num->int_s, num->int_n, &v);
	if (rc < 0)
		return rc;
	if (v > UINT64_MAX / mult)
		return -ERANGE;
	v *= mult;
	for (i = num->frac_n; i > 0; i--)
		q = (uint64_t)(num->frac_s[i - 1] - '0') * mult + q / 10;
	q /= 10;
	if (v > UINT64_MAX - q)
		return -ERANGE;
	*out = v + q;
	return 0;
}

/* The multiplier of a size unit that makes up the whole of @s. */
static int size_unit(const char *s, uint64_t *mult)
{
	static const char prefixes[] = "kmgtp";
	const char *p;

	if (*s == '\0') {
		*mult = 1;
		return 0;
	}
	if (strcasecmp(s, "b") == 0) {
		*mult = 1;
		return 0;
	}
	p = strchr(prefixes, tolower((unsigned char)s[0]));
	if (!p)
		return -EINVAL;
	s++;
	if (*s != '\0' && strcasecmp(s, "b") != 0 && strcasecmp(s, "ib") != 0)
		return -EINVAL;
	*mult = (uint64_t)1 << (10 * (p - prefixes + 1));
	return 0;
}

int parse_size(const char *s, uint64_t *out)
{
	struct number num;
	uint64_t mult, v;
	int rc;

	rc = scan_number(&s, &num);
	if (rc < 0)
		return rc;
	rc = size_unit(s, &mult);
	if (rc < 0)
		return rc;
	rc = scale_number(&num, mult, &v);
	if (rc < 0)
		return rc;
	*out = v;
	return 0;
}

/* Duration units, largest first: their order is the order they may appear. */
static const struct {
	const char *name;
	uint64_t ms;
} duration_units[] = {
	{ "w", 7 * 24 * 3600 * 1000ULL },
	{ "d", 24 * 3600 * 1000ULL },
	{ "h", 3600 * 1000ULL },
	{ "m", 60 * 1000ULL },
	{ "s", 1000ULL },
	{ "ms", 1ULL },
};

#define N_DURATION_UNITS (sizeof(duration_units) / sizeof(duration_units[0]))

/*
 * The unit at *sp, advancing past it; -1 when none.  "ms" is tried before
 * "m" so that "5ms" is not five minutes followed by junk.
 */
static int duration_unit(const char **sp)
{
	size_t i, best = N_DURATION_UNITS, best_len = 0;

	for (i = 0; i < N_DURATION_UNITS; i++) {
		size_t n = strlen(duration_units[i].name);

		if (n > best_len &&
		    strncmp(*sp, duration_units[i].name, n) == 0) {
			best = i;
			best_len = n;
		}
	}
	if (best == N_DURATION_UNITS)
		return -1;
	*sp += best_len;
	return (int)best;
}

int parse_duration_ms(const char *s, uint64_t *out)
{
	bool overflow = false;
	uint64_t total = 0;
	int prev = -1;

	if (*s == '\0')
		return -EINVAL;
	while (*s != '\0') {
		struct number num;
		uint64_t mult, v;
		int unit, rc;

		rc = scan_number(&s, &num);
		if (rc < 0)
			return rc;
		unit = duration_unit(&s);
		if (unit < 0) {
			/* a bare number is seconds, and must stand alone */
			if (*s != '\0' || prev >= 0)
				return -EINVAL;
			mult = 1000;
		} else {
			if (unit <= prev)
				return -EINVAL;
			prev = unit;
			mult = duration_units[unit].ms;
		}
		if (scale_number(&num, mult, &v) < 0 || v > UINT64_MAX - total)
			overflow = true;
		else
			total += v;
	}
	if (overflow)
		return -ERANGE;
	*out = total;
	return 0;
}

int parse_bool(const char *s, bool *out)
{
	static const char *const yes[] = { "1", "yes", "true", "on" };
	static const char *const no[] = { "0", "no", "false", "off" };
	size_t i;

	for (i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
		if (strcasecmp(s, yes[i]) == 0) {
			*out = true;
			return 0;
		}
		if (strcasecmp(s, no[i]) == 0) {
			*out = false;
			return 0;
		}
	}
	return -EINVAL;
}

int parse_uint(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
	size_t n = digit_run(s);
	uint64_t v;
	int rc;

	if (n == 0 || s[n] != '\0')
		return -EINVAL;
	rc = digits_to_u64(s, n, &v);
	if (rc < 0)
		return rc;
	if (v < min || v > max)
		return -ERANGE;
	*out = v;
	return 0;
}
