/*
 * fuzz_options.c - libFuzzer target for the parsers users reach directly:
 * an "-o" list through options_parse_list(), and the whole input through
 * parse_size(), parse_duration_ms(), parse_bool() and parse_uint().
 *
 * Beyond memory safety it checks the contracts that hold for any input:
 * a failed parse leaves *out alone and returns -EINVAL or -ERANGE, an error
 * message is one line, and a failed set does not leak.
 */
#undef NDEBUG /* the checks below are the point, in release builds too */
#include <assert.h>
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "s3cachefs/buf.h"
#include "s3cachefs/options.h"
#include "s3cachefs/parse.h"

#define SENTINEL 0x5eed5eed5eed5eedULL

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_rc(int rc, uint64_t v)
{
	assert(rc == 0 || rc == -EINVAL || rc == -ERANGE);
	if (rc < 0)
		assert(v == SENTINEL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct buf err = BUF_INIT(4096);
	struct options o;
	uint64_t v;
	bool b;
	char *s;
	int rc;

	s = malloc(size + 1);
	if (!s)
		return 0;
	memcpy(s, data, size);
	s[size] = '\0';

	if (options_init(&o) == 0) {
		rc = options_parse_list(&o, s, &err);
		assert(rc == 0 || rc == -EINVAL || rc == -ENOMEM);
		if (rc == -EINVAL)
			assert(err.len > 0 &&
			       strchr(buf_str(&err), '\n') == NULL);
		options_release(&o);
	}

	v = SENTINEL;
	check_rc(parse_size(s, &v), v);
	v = SENTINEL;
	check_rc(parse_duration_ms(s, &v), v);
	v = SENTINEL;
	check_rc(parse_uint(s, 0, UINT64_MAX, &v), v);
	v = SENTINEL;
	rc = parse_uint(s, 1, 64, &v);
	check_rc(rc, v);
	assert(rc < 0 || (v >= 1 && v <= 64));
	rc = parse_bool(s, &b);
	assert(rc == 0 || rc == -EINVAL);

	buf_release(&err);
	free(s);
	return 0;
}
