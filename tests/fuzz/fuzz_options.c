/*
 * fuzz_options.c - libFuzzer target for the parsers users reach directly:
 * the whole input as an "-o" list (options_parse_list()), as the text of a
 * config file (options_parse_text()), as S3CACHEFS_* variables, one per
 * line (options_load_env()), and through parse_size(), parse_duration_ms(),
 * parse_bool() and parse_uint().  Whatever parses is translated with
 * options_to_s3_conf(), as main does next.
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
#include "s3cachefs/creds.h"
#include "s3cachefs/options.h"
#include "s3cachefs/parse.h"
#include "s3cachefs/s3.h"

#define SENTINEL 0x5eed5eed5eed5eedULL

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_rc(int rc, uint64_t v)
{
	assert(rc == 0 || rc == -EINVAL || rc == -ERANGE);
	if (rc < 0)
		assert(v == SENTINEL);
}

/* One error line; on success the options translate without a crash. */
static void check_parsed(const struct options *o, int rc, struct buf *err)
{
	struct s3_conf conf;
	struct creds_conf cc;

	assert(rc == 0 || rc == -EINVAL || rc == -ENOMEM);
	if (rc == -EINVAL)
		assert(err->len > 0 && strchr(buf_str(err), '\n') == NULL);
	buf_reset(err);
	if (rc == 0) {
		rc = options_to_s3_conf(o, "bucket", &conf, &cc, err);
		assert(rc == 0 || rc == -EINVAL || rc == -ENOMEM);
		if (rc == -EINVAL)
			assert(err->len > 0 &&
			       strchr(buf_str(err), '\n') == NULL);
		buf_reset(err);
	}
}

/* @s split at newlines into an environment. */
static int parse_env(struct options *o, const char *s, struct buf *err)
{
	static const char *const ignore[] = { "S3CACHEFS_IGNORED", NULL };
	char *env[65], *copy, *p;
	size_t n = 0;
	int rc;

	copy = strdup(s);
	if (!copy)
		return -ENOMEM;
	for (p = copy; p && n < 64; n++) {
		env[n] = p;
		p = strchr(p, '\n');
		if (p)
			*p++ = '\0';
	}
	env[n] = NULL;
	rc = options_load_env(o, env, ignore, err);
	free(copy);
	return rc;
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
		check_parsed(&o, rc, &err);
		options_release(&o);
	}
	if (options_init(&o) == 0) {
		rc = options_parse_text(&o, (const char *)data, size, "fuzz",
					&err);
		check_parsed(&o, rc, &err);
		options_release(&o);
	}
	if (options_init(&o) == 0) {
		rc = parse_env(&o, s, &err);
		check_parsed(&o, rc, &err);
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
