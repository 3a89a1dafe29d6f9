/*
 * test_options.c - the option table through every door: defaults, single
 * sets of each type with their exact error texts, -o lists with escapes,
 * environment variables, config files, --help, the order of precedence the
 * composition roots use, and the translation into s3_conf and creds_conf.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "s3cachefs/buf.h"
#include "s3cachefs/creds.h"
#include "s3cachefs/options.h"
#include "s3cachefs/s3.h"
#include "tap.h"

#define MIB (1024ULL * 1024)
#define GIB (1024 * MIB)

/* Every option and alias the table must have, with its variable. */
static const struct {
	const char *name;
	const char *env; /* NULL for aliases */
} all_options[] = {
	{ "endpoint", "S3CACHEFS_ENDPOINT" },
	{ "url", NULL },
	{ "region", "S3CACHEFS_REGION" },
	{ "path_style", "S3CACHEFS_PATH_STYLE" },
	{ "virtual_host", "S3CACHEFS_VIRTUAL_HOST" },
	{ "ca_bundle", "S3CACHEFS_CA_BUNDLE" },
	{ "insecure", "S3CACHEFS_INSECURE" },
	{ "payload_signing", "S3CACHEFS_PAYLOAD_SIGNING" },
	{ "profile", "S3CACHEFS_PROFILE" },
	{ "passwd_file", "S3CACHEFS_PASSWD_FILE" },
	{ "anonymous", "S3CACHEFS_ANONYMOUS" },
	{ "public_bucket", NULL },
	{ "connect_timeout", "S3CACHEFS_CONNECT_TIMEOUT" },
	{ "io_timeout", "S3CACHEFS_IO_TIMEOUT" },
	{ "timeout", "S3CACHEFS_TIMEOUT" },
	{ "retries", "S3CACHEFS_RETRIES" },
	{ "part_size", "S3CACHEFS_PART_SIZE" },
	{ "multipart_threshold", "S3CACHEFS_MULTIPART_THRESHOLD" },
	{ "parallel", "S3CACHEFS_PARALLEL" },
	{ "cache_dir", "S3CACHEFS_CACHE_DIR" },
	{ "cache", "S3CACHEFS_CACHE" },
	{ "cache_size", "S3CACHEFS_CACHE_SIZE" },
	{ "cache_min_free", "S3CACHEFS_CACHE_MIN_FREE" },
	{ "chunk_size", "S3CACHEFS_CHUNK_SIZE" },
	{ "compress", "S3CACHEFS_COMPRESS" },
	{ "meta_ttl", "S3CACHEFS_META_TTL" },
	{ "negative_ttl", "S3CACHEFS_NEGATIVE_TTL" },
	{ "readahead", "S3CACHEFS_READAHEAD" },
	{ "prefetch", "S3CACHEFS_PREFETCH" },
	{ "ro", "S3CACHEFS_RO" },
	{ "allow_other", "S3CACHEFS_ALLOW_OTHER" },
	{ "log_level", "S3CACHEFS_LOG_LEVEL" },
};

#define N(a) (sizeof(a) / sizeof((a)[0]))

/* environ holds writable strings; the literals here are never written */
#define E(s) ((char *)(s))

static char tmpdir[] = "/tmp/test_options.XXXXXX";

static const char *const tmp_files[] = {
	"good.conf", "bad_name.conf", "bad_value.conf", "bare.conf",
	"nul.conf",  "empty.conf",    "big.conf",	"prec.conf",
};

static void remove_tmpdir(void)
{
	char path[512];
	size_t i;

	for (i = 0; i < sizeof(tmp_files) / sizeof(tmp_files[0]); i++) {
		snprintf(path, sizeof(path), "%s/%s", tmpdir, tmp_files[i]);
		unlink(path);
	}
	if (rmdir(tmpdir) < 0)
		diag("could not remove '%s'", tmpdir);
}

/* One options_set, returning its rc and leaving its message in @err. */
static int set(struct options *o, const char *name, const char *value,
	       struct buf *err)
{
	buf_reset(err);
	return options_set(o, name, value, err);
}

/* Write @text as file @name in tmpdir; its path goes to @path. */
static void write_conf(const char *name, const char *text, size_t len,
		       char *path, size_t size)
{
	FILE *f;

	snprintf(path, size, "%s/%s", tmpdir, name);
	f = fopen(path, "wb");
	if (!f) {
		ok(0, "cannot create '%s'", path);
		return;
	}
	fwrite(text, 1, len, f);
	fclose(f);
}

static void test_defaults(void)
{
	struct options o;

	is_int(options_init(&o), 0, "every default of the table parses");
	is_str(o.endpoint, NULL, "endpoint: none");
	is_str(o.region, NULL, "region: none");
	ok(!o.path_style && !o.virtual_host, "addressing: auto");
	is_str(o.ca_bundle, NULL, "ca_bundle: none");
	ok(!o.insecure, "insecure: off");
	is_int(o.payload_signing, OPT_SIGN_AUTO, "payload_signing: auto");
	is_str(o.profile, NULL, "profile: none");
	is_str(o.passwd_file, NULL, "passwd_file: none");
	ok(!o.anonymous, "anonymous: off");
	is_int(o.connect_timeout_ms, 10000, "connect_timeout: 10s");
	is_int(o.io_timeout_ms, 30000, "io_timeout: 30s");
	is_int(o.timeout_ms, 60000, "timeout: 60s");
	is_int(o.retries, 5, "retries: 5");
	is_int(o.part_size, 16 * MIB, "part_size: 16M");
	is_int(o.multipart_threshold, 64 * MIB, "multipart_threshold: 64M");
	is_int(o.parallel, 4, "parallel: 4");
	is_int(o.log_level, 1, "log_level: warn");
	is_str(o.cache_dir, NULL, "cache_dir: none");
	is_int(o.cache_mode, OPT_CACHE_PERSISTENT, "cache: persistent");
	is_int(o.cache_size, 10 * GIB, "cache_size: 10G");
	is_int(o.cache_min_free, 1 * GIB, "cache_min_free: 1G");
	is_int(o.chunk_size, 4 * MIB, "chunk_size: 4M");
	is_int(options_compress_level(o.compress), 0, "compress: none");
	is_int(o.meta_ttl_ms, 60000, "meta_ttl: 60s");
	is_int(o.negative_ttl_ms, 10000, "negative_ttl: 10s");
	is_int(o.readahead, 64 * MIB, "readahead: 64M");
	is_int(o.prefetch, 8, "prefetch: 8");
	ok(!o.ro && !o.allow_other, "ro, allow_other: off");
	options_release(&o);
	options_release(&o);
	options_release(NULL);
	ok(1, "options_release is idempotent and NULL-safe");
	is_int(options_init(&o), 0, "options_init again after release");
	options_release(&o);
}

static void test_set(void)
{
	struct buf err = BUF_INIT(BUF_NO_LIMIT);
	struct options o;

	options_init(&o);

	/* strings */
	is_int(set(&o, "endpoint", "http://127.0.0.1:9000", &err), 0,
	       "set endpoint");
	is_str(o.endpoint, "http://127.0.0.1:9000", "endpoint stored");
	is_int(set(&o, "endpoint", "http://h2", &err), 0, "set it again");
	is_str(o.endpoint, "http://h2", "previous value replaced");
	is_int(set(&o, "url", "http://h3", &err), 0, "alias url");
	is_str(o.endpoint, "http://h3", "url sets endpoint");
	is_int(set(&o, "endpoint", "", &err), 0, "empty string");
	is_str(o.endpoint, NULL, "empty string resets to none");
	is_int(set(&o, "region", "eu-west-1", &err), 0, "set region");
	is_str(o.region, "eu-west-1", "region stored");
	is_int(set(&o, "ca_bundle", "/etc/ca.pem", &err), 0, "ca_bundle");
	is_str(o.ca_bundle, "/etc/ca.pem", "ca_bundle stored");
	is_int(set(&o, "profile", "dev", &err), 0, "profile");
	is_str(o.profile, "dev", "profile stored");
	is_int(set(&o, "passwd_file", "/p w", &err), 0, "passwd_file");
	is_str(o.passwd_file, "/p w", "spaces kept in values");

	/* compress choices and their zlib levels */
	is_int(set(&o, "compress", "zlib", &err), 0, "compress=zlib");
	is_int(options_compress_level(o.compress), 6, "zlib means level 6");
	is_int(set(&o, "compress", "zlib:1", &err), 0, "compress=zlib:1");
	is_int(options_compress_level(o.compress), 1, "zlib:1 is level 1");
	is_int(set(&o, "compress", "ZLIB:9", &err), 0, "compress=ZLIB:9");
	is_int(options_compress_level(o.compress), 9, "zlib:9 is level 9");
	is_int(set(&o, "compress", "zlib:0", &err), -EINVAL, "zlib:0 refused");
	is_int(set(&o, "compress", "none", &err), 0, "compress=none");
	is_int(options_compress_level(o.compress), 0, "none is level 0");
	is_int(set(&o, "cache", "ephemeral", &err), 0, "cache=ephemeral");
	is_int(o.cache_mode, OPT_CACHE_EPHEMERAL, "ephemeral stored");
	is_int(set(&o, "chunk_size", "1k", &err), -EINVAL,
	       "chunk_size under 64K refused");
	buf_reset(&err);

	/* bools */
	is_int(set(&o, "path_style", NULL, &err), 0, "bare bool");
	ok(o.path_style, "bare word means true");
	is_int(set(&o, "path_style", "off", &err), 0, "bool off");
	ok(!o.path_style, "off means false");
	is_int(set(&o, "insecure", "YES", &err), 0, "bool YES");
	ok(o.insecure, "YES means true");
	is_int(set(&o, "virtual_host", "1", &err), 0, "bool 1");
	ok(o.virtual_host, "1 means true");
	is_int(set(&o, "public_bucket", NULL, &err), 0, "alias public_bucket");
	ok(o.anonymous, "public_bucket sets anonymous");
	is_int(set(&o, "public_bucket", "0", &err), 0, "public_bucket=0");
	ok(!o.anonymous, "public_bucket=0 clears anonymous");
	is_int(set(&o, "anonymous", "true", &err), 0, "anonymous=true");
	ok(o.anonymous, "anonymous set");

	/* numbers */
	is_int(set(&o, "part_size", "32M", &err), 0, "part_size=32M");
	is_int(o.part_size, 32 * MIB, "part_size stored");
	is_int(set(&o, "part_size", "5M", &err), 0, "part_size at minimum");
	is_int(set(&o, "part_size", "5G", &err), 0, "part_size at maximum");
	is_int(o.part_size, 5 * GIB, "part_size 5G");
	is_int(set(&o, "multipart_threshold", "1T", &err), 0, "threshold 1T");
	is_int(o.multipart_threshold, 1024 * GIB, "threshold stored");
	is_int(set(&o, "connect_timeout", "1500ms", &err), 0, "1500ms");
	is_int(o.connect_timeout_ms, 1500, "connect_timeout stored");
	is_int(set(&o, "io_timeout", "2m", &err), 0, "io_timeout=2m");
	is_int(o.io_timeout_ms, 120000, "io_timeout stored");
	is_int(set(&o, "timeout", "0", &err), 0, "timeout=0");
	is_int(o.timeout_ms, 0, "timeout 0: no limit");
	is_int(set(&o, "timeout", "1h30m", &err), 0, "timeout=1h30m");
	is_int(o.timeout_ms, 5400000, "timeout stored");
	is_int(set(&o, "retries", "0", &err), 0, "retries=0");
	is_int(o.retries, 0, "retries stored");
	is_int(set(&o, "parallel", "64", &err), 0, "parallel=64");
	is_int(o.parallel, 64, "parallel stored");
	is_int(set(&o, "parallel", "1", &err), 0, "parallel=1");

	/* enums */
	is_int(set(&o, "payload_signing", "never", &err), 0, "signing never");
	is_int(o.payload_signing, OPT_SIGN_NEVER, "signing stored");
	is_int(set(&o, "payload_signing", "ALWAYS", &err), 0, "any case");
	is_int(o.payload_signing, OPT_SIGN_ALWAYS, "signing always");
	is_int(set(&o, "log_level", "trace", &err), 0, "log_level=trace");
	is_int(o.log_level, 4, "log_level stored");
	is_int(set(&o, "log_level", "error", &err), 0, "log_level=error");
	is_int(o.log_level, 0, "log_level error");
	is_str(buf_str(&err), "", "no message on success");

	options_release(&o);
	buf_release(&err);
}

static void test_set_errors(void)
{
	static const struct {
		const char *name, *value, *msg;
	} cases[] = {
		{ "foo", "1", "unknown option 'foo'" },
		{ "foo", NULL, "unknown option 'foo'" },
		{ "", "1", "unknown option ''" },
		{ "Parallel", "2", "unknown option 'Parallel'" },
		{ "S3CACHEFS_PARALLEL", "2",
		  "unknown option 'S3CACHEFS_PARALLEL'" },
		{ "endpoint", NULL, "option 'endpoint' needs a value" },
		{ "url", NULL, "option 'url' needs a value" },
		{ "part_size", NULL, "option 'part_size' needs a value" },
		{ "timeout", NULL, "option 'timeout' needs a value" },
		{ "parallel", NULL, "option 'parallel' needs a value" },
		{ "log_level", NULL, "option 'log_level' needs a value" },
		{ "insecure", "maybe",
		  "option 'insecure': 'maybe' is not a boolean" },
		{ "insecure", "", "option 'insecure': '' is not a boolean" },
		{ "public_bucket", "x",
		  "option 'public_bucket': 'x' is not a boolean" },
		{ "part_size", "3X", "option 'part_size': '3X' is not a size" },
		{ "part_size", "", "option 'part_size': '' is not a size" },
		{ "part_size", "-1", "option 'part_size': '-1' is not a size" },
		{ "part_size", "4M",
		  "option 'part_size': '4M' is out of range (5M-5G)" },
		{ "part_size", "5.5G",
		  "option 'part_size': '5.5G' is out of range (5M-5G)" },
		{ "part_size", "18446744073709551616",
		  "option 'part_size': '18446744073709551616' is out of range "
		  "(5M-5G)" },
		{ "multipart_threshold", "1M",
		  "option 'multipart_threshold': '1M' is out of range "
		  "(at least 5M)" },
		{ "timeout", "5x", "option 'timeout': '5x' is not a duration" },
		{ "timeout", "30m1h",
		  "option 'timeout': '30m1h' is not a duration" },
		{ "connect_timeout", "0",
		  "option 'connect_timeout': '0' is out of range (1ms-1d)" },
		{ "io_timeout", "2d",
		  "option 'io_timeout': '2d' is out of range (1ms-1d)" },
		{ "retries", "x", "option 'retries': 'x' is not a number" },
		{ "retries", "1.5", "option 'retries': '1.5' is not a number" },
		{ "retries", "101",
		  "option 'retries': '101' is out of range (0-100)" },
		{ "parallel", "100",
		  "option 'parallel': '100' is out of range (1-64)" },
		{ "parallel", "0",
		  "option 'parallel': '0' is out of range (1-64)" },
		{ "parallel", "99999999999999999999",
		  "option 'parallel': '99999999999999999999' is out of range "
		  "(1-64)" },
		{ "payload_signing", "maybe",
		  "option 'payload_signing': 'maybe' is not one of auto, "
		  "always, never" },
		{ "log_level", "loud",
		  "option 'log_level': 'loud' is not one of error, warn, info, "
		  "debug, trace" },
		/* user text cannot break the line */
		{ "part_size", "1\nfake: line",
		  "option 'part_size': '1?fake: line' is not a size" },
		{ "bad\tname", "1", "unknown option 'bad?name'" },
		{ "part_size",
		  "0123456789012345678901234567890123456789012345678901234567"
		  "890123456789012345678901234567890123456789",
		  "option 'part_size': '01234567890123456789012345678901234567"
		  "8901234567890123456789012345678901...' is out of range "
		  "(5M-5G)" },
		{ "part_size",
		  "x123456789012345678901234567890123456789012345678901234567"
		  "890123456789012345678901234567890123456789",
		  "option 'part_size': 'x1234567890123456789012345678901234567"
		  "8901234567890123456789012345678901...' is not a size" },
	};
	struct buf err = BUF_INIT(BUF_NO_LIMIT);
	struct options o, before;
	size_t i;

	options_init(&o);
	memcpy(&before, &o, sizeof(o));
	for (i = 0; i < N(cases); i++) {
		int rc = set(&o, cases[i].name, cases[i].value, &err);

		is_int(rc, -EINVAL, "set '%s' fails", cases[i].msg);
		is_str(buf_str(&err), cases[i].msg, "message %zu", i);
	}
	ok(memcmp(&o, &before, sizeof(o)) == 0,
	   "failed sets left the options untouched");

	/* messages append */
	buf_reset(&err);
	buf_adds(&err, "mount: ");
	options_set(&o, "foo", "1", &err);
	is_str(buf_str(&err), "mount: unknown option 'foo'", "appended");
	ok(options_set(&o, "foo", NULL, NULL) == -EINVAL, "@err may be NULL");

	options_release(&o);
	buf_release(&err);
}

static void test_list(void)
{
	struct buf err = BUF_INIT(BUF_NO_LIMIT);
	struct options o;
	int rc;

	options_init(&o);
	rc = options_parse_list(&o, "parallel=8,path_style,region=us-west-2",
				&err);
	is_int(rc, 0, "simple list");
	is_int(o.parallel, 8, "parallel from list");
	ok(o.path_style, "bare bool from list");
	is_str(o.region, "us-west-2", "region from list");

	rc = options_parse_list(&o, "", &err);
	is_int(rc, 0, "empty list");
	rc = options_parse_list(&o, ",,,parallel=2,,,", &err);
	is_int(rc, 0, "empty items skipped");
	is_int(o.parallel, 2, "parallel=2");
	rc = options_parse_list(&o, " parallel =3,\tinsecure , ,", &err);
	is_int(rc, 0, "blanks around names trimmed");
	is_int(o.parallel, 3, "parallel=3");
	ok(o.insecure, "insecure");
	rc = options_parse_list(&o, "profile= a b ", &err);
	is_int(rc, 0, "value with blanks");
	is_str(o.profile, " a b ", "blanks in list values kept");
	is_int(options_parse_list(&o, "profile=", &err), 0, "reset profile");
	buf_reset(&err);
	rc = options_parse_list(&o, "parallel=3 ", &err);
	is_int(rc, -EINVAL, "so a number with a blank is refused");
	is_str(buf_str(&err), "option 'parallel': '3 ' is not a number",
	       "its message");
	buf_reset(&err);

	rc = options_parse_list(&o, "profile=a\\,b\\\\c\\=d,retries=1", &err);
	is_int(rc, 0, "escapes");
	is_str(o.profile, "a,b\\c=d", "escaped comma, backslash and equals");
	is_int(o.retries, 1, "item after escaped comma");
	rc = options_parse_list(&o, "endpoint=http://h/x=y", &err);
	is_int(rc, 0, "value with '='");
	is_str(o.endpoint, "http://h/x=y", "split at the first '='");
	rc = options_parse_list(&o, "url=http://a\\,b,public_bucket", &err);
	is_int(rc, 0, "aliases in a list");
	is_str(o.endpoint, "http://a,b", "url alias");
	ok(o.anonymous, "public_bucket alias");
	rc = options_parse_list(&o, "ca_bundle=", &err);
	is_int(rc, 0, "empty value");
	is_str(o.ca_bundle, NULL, "empty value resets");
	is_str(buf_str(&err), "", "no message so far");

	rc = options_parse_list(&o, "parallel=5,foo=1,retries=9", &err);
	is_int(rc, -EINVAL, "unknown option in a list");
	is_str(buf_str(&err), "unknown option 'foo'", "its message");
	is_int(o.parallel, 5, "items before the bad one applied");
	is_int(o.retries, 1, "items after the bad one not applied");

	buf_reset(&err);
	rc = options_parse_list(&o, "part_size=3X", &err);
	is_int(rc, -EINVAL, "bad value in a list");
	is_str(buf_str(&err), "option 'part_size': '3X' is not a size",
	       "its message");

	buf_reset(&err);
	rc = options_parse_list(&o, "parallel", &err);
	is_int(rc, -EINVAL, "bare non-bool in a list");
	is_str(buf_str(&err), "option 'parallel' needs a value", "message");

	buf_reset(&err);
	rc = options_parse_list(&o, "region=x\\", &err);
	is_int(rc, -EINVAL, "trailing backslash");
	is_str(buf_str(&err), "option list ends in a lone backslash",
	       "its message");

	buf_reset(&err);
	rc = options_parse_list(&o, "=5", &err);
	is_int(rc, -EINVAL, "item without a name");
	is_str(buf_str(&err), "no option name before '=5'", "its message");

	options_release(&o);
	buf_release(&err);
}

static void test_env(void)
{
	struct buf err = BUF_INIT(BUF_NO_LIMIT);
	struct options o;
	int rc;

	options_init(&o);
	{
		char *const envp[] = {
			E("HOME=/root"),
			E("S3CACHEFS=1"),
			E("S3CACHEFS_PART_SIZE=32M"),
			E("S3CACHEFS_ENDPOINT=http://e:9000"),
			E("S3CACHEFS_PATH_STYLE=yes"),
			E("S3CACHEFS_PAYLOAD_SIGNING=never"),
			E("S3CACHEFS_TIMEOUT=2m"),
			E("S3CACHEFS_TOOL_THING=whatever"),
			E("s3cachefs_parallel=9"),
			E("AWS_REGION=eu-central-1"),
			NULL,
		};
		const char *const ignore[] = { "S3CACHEFS_TOOL_THING", NULL };

		rc = options_load_env(&o, envp, ignore, &err);
		is_int(rc, 0, "environment loaded");
		is_str(buf_str(&err), "", "no message");
		is_int(o.part_size, 32 * MIB, "S3CACHEFS_PART_SIZE");
		is_str(o.endpoint, "http://e:9000", "S3CACHEFS_ENDPOINT");
		ok(o.path_style, "S3CACHEFS_PATH_STYLE");
		is_int(o.payload_signing, OPT_SIGN_NEVER, "signing from env");
		is_int(o.timeout_ms, 120000, "S3CACHEFS_TIMEOUT");
		is_int(o.parallel, 4, "lowercase variables are not ours");
		is_str(o.region, NULL, "AWS_REGION is not an option");
	}
	{
		char *const envp[] = { E("S3CACHEFS_ENDPOINT="), NULL };

		rc = options_load_env(&o, envp, NULL, &err);
		is_int(rc, 0, "empty variable");
		is_str(o.endpoint, NULL, "empty variable resets a string");
	}
	{
		char *const envp[] = { E("S3CACHEFS_RETRIES=7"),
				       E("S3CACHEFS_FOO=1"),
				       E("S3CACHEFS_PARALLEL=9"), NULL };

		rc = options_load_env(&o, envp, NULL, &err);
		is_int(rc, -EINVAL, "unknown variable refused");
		is_str(buf_str(&err),
		       "unknown environment variable 'S3CACHEFS_FOO'",
		       "its message");
		is_int(o.retries, 7, "variables before it applied");
		is_int(o.parallel, 4, "variables after it not applied");
	}
	{
		char *const envp[] = { E("S3CACHEFS_FOO=1"), NULL };
		const char *const ignore[] = { "S3CACHEFS_FO", "S3CACHEFS_FOOO",
					       NULL };

		buf_reset(&err);
		rc = options_load_env(&o, envp, ignore, &err);
		is_int(rc, -EINVAL, "ignore list matches whole names only");
	}
	{
		char *const envp[] = { E("S3CACHEFS_URL=http://x"), NULL };

		buf_reset(&err);
		rc = options_load_env(&o, envp, NULL, &err);
		is_int(rc, -EINVAL, "aliases have no variable");
		is_str(buf_str(&err),
		       "unknown environment variable 'S3CACHEFS_URL'",
		       "its message");
	}
	{
		char *const envp[] = { E("S3CACHEFS_PART_SIZE=3X"), NULL };

		buf_reset(&err);
		rc = options_load_env(&o, envp, NULL, &err);
		is_int(rc, -EINVAL, "bad value in a variable");
		is_str(buf_str(&err),
		       "environment variable 'S3CACHEFS_PART_SIZE': option "
		       "'part_size': '3X' is not a size",
		       "its message names the variable");
	}
	{
		char *const envp[] = { E("S3CACHEFS_PARALLEL=100"), NULL };

		buf_reset(&err);
		rc = options_load_env(&o, envp, NULL, &err);
		is_int(rc, -EINVAL, "out of range variable");
		is_str(buf_str(&err),
		       "environment variable 'S3CACHEFS_PARALLEL': option "
		       "'parallel': '100' is out of range (1-64)",
		       "its message");
	}
	{
		char *const envp[] = { E("S3CACHEFS_ANONYMOUS="), NULL };

		buf_reset(&err);
		rc = options_load_env(&o, envp, NULL, &err);
		is_int(rc, -EINVAL, "empty bool variable");
	}
	rc = options_load_env(&o, NULL, NULL, &err);
	is_int(rc, 0, "NULL environment");

	/* every option has its variable */
	{
		size_t i;

		for (i = 0; i < N(all_options); i++) {
			char var[128];
			char *envp[2] = { var, NULL };

			if (!all_options[i].env)
				continue;
			snprintf(var, sizeof(var), "%s=", all_options[i].env);
			buf_reset(&err);
			rc = options_load_env(&o, envp, NULL, &err);
			ok(strstr(buf_str(&err), "unknown") == NULL,
			   "'%s' is known", all_options[i].env);
		}
	}
	options_release(&o);
	buf_release(&err);
}

static void test_file(void)
{
	static const char good[] = "# s3cachefs.conf\r\n"
				   "\r\n"
				   "endpoint = http://10.0.0.1:9000\r\n"
				   "   region=eu-west-3   \n"
				   "\tpath_style\n"
				   "parallel = 12 # inline comment\n"
				   "profile = a#b\n"
				   "  # indented comment\n"
				   "public_bucket = yes\n"
				   "timeout=\t90s\t\n"
				   "log_level = debug"; /* no final newline */
	static const char bad_name[] = "# line 1\nparallel = 2\nfoo = 1\n"
				       "retries = 9\n";
	static const char bad_value[] = "parallel = 2\n"
					"part_size = 3X\n";
	static const char bare_nonbool[] = "\n\nretries\n";
	static const char nul[] = "parallel = 2\n\0retries = 1\n";
	char path[512], msg[640];
	struct buf err = BUF_INIT(BUF_NO_LIMIT);
	struct options o;
	int rc;

	options_init(&o);
	write_conf("good.conf", good, sizeof(good) - 1, path, sizeof(path));
	rc = options_load_file(&o, path, &err);
	is_int(rc, 0, "config file loaded");
	is_str(buf_str(&err), "", "no message");
	is_str(o.endpoint, "http://10.0.0.1:9000", "endpoint, CRLF stripped");
	is_str(o.region, "eu-west-3", "name=value with blanks around");
	ok(o.path_style, "bare bool");
	is_int(o.parallel, 12, "trailing comment stripped");
	is_str(o.profile, "a#b", "'#' inside a value kept");
	ok(o.anonymous, "alias in a file");
	is_int(o.timeout_ms, 90000, "tabs around the value");
	is_int(o.log_level, 3, "last line without newline");

	write_conf("bad_name.conf", bad_name, sizeof(bad_name) - 1, path,
		   sizeof(path));
	buf_reset(&err);
	rc = options_load_file(&o, path, &err);
	is_int(rc, -EINVAL, "unknown option in a file");
	snprintf(msg, sizeof(msg), "'%s' line 3: unknown option 'foo'", path);
	is_str(buf_str(&err), msg, "message names file and line");
	is_int(o.parallel, 2, "lines before applied");
	is_int(o.retries, 5, "lines after not applied");

	write_conf("bad_value.conf", bad_value, sizeof(bad_value) - 1, path,
		   sizeof(path));
	buf_reset(&err);
	rc = options_load_file(&o, path, &err);
	is_int(rc, -EINVAL, "bad value in a file");
	snprintf(msg, sizeof(msg),
		 "'%s' line 2: option 'part_size': '3X' is not a size", path);
	is_str(buf_str(&err), msg, "message names file, line and value");

	write_conf("bare.conf", bare_nonbool, sizeof(bare_nonbool) - 1, path,
		   sizeof(path));
	buf_reset(&err);
	rc = options_load_file(&o, path, &err);
	is_int(rc, -EINVAL, "bare non-bool in a file");
	snprintf(msg, sizeof(msg),
		 "'%s' line 3: option 'retries' needs a value", path);
	is_str(buf_str(&err), msg, "its message");

	write_conf("nul.conf", nul, sizeof(nul) - 1, path, sizeof(path));
	buf_reset(&err);
	rc = options_load_file(&o, path, &err);
	is_int(rc, -EINVAL, "NUL byte in a file");
	snprintf(msg, sizeof(msg), "config file '%s' holds a NUL byte", path);
	is_str(buf_str(&err), msg, "its message");

	write_conf("empty.conf", "", 0, path, sizeof(path));
	buf_reset(&err);
	is_int(options_load_file(&o, path, &err), 0, "empty file");

	snprintf(path, sizeof(path), "%s/missing.conf", tmpdir);
	buf_reset(&err);
	rc = options_load_file(&o, path, &err);
	is_int(rc, -ENOENT, "missing file: -ENOENT");
	is_str(buf_str(&err), "", "missing file: no message");

	buf_reset(&err);
	rc = options_load_file(&o, tmpdir, &err);
	is_int(rc, -EISDIR, "directory refused");
	snprintf(msg, sizeof(msg),
		 "cannot read config file '%s': Is a directory", tmpdir);
	is_str(buf_str(&err), msg, "its message");

	{
		size_t n = 1024 * 1024 + 1;
		char *big = malloc(n);

		if (big) {
			memset(big, '#', n);
			write_conf("big.conf", big, n, path, sizeof(path));
			free(big);
			buf_reset(&err);
			rc = options_load_file(&o, path, &err);
			is_int(rc, -EFBIG, "file over 1 MiB refused");
			snprintf(msg, sizeof(msg),
				 "config file '%s' is larger than 1 MiB", path);
			is_str(buf_str(&err), msg, "its message");
		}
	}
	options_release(&o);
	buf_release(&err);
}

/* defaults < file < environment < command line, as the roots apply them */
static void test_precedence(void)
{
	static const char conf[] = "parallel = 2\nregion = file-region\n"
				   "retries = 1\nprofile = file\n";
	char *const envp[] = { E("S3CACHEFS_PARALLEL=3"),
			       E("S3CACHEFS_RETRIES=2"), NULL };
	struct buf err = BUF_INIT(BUF_NO_LIMIT);
	struct options o;
	char path[512];

	options_init(&o);
	write_conf("prec.conf", conf, sizeof(conf) - 1, path, sizeof(path));
	is_int(options_load_file(&o, path, &err), 0, "file");
	is_int(options_load_env(&o, envp, NULL, &err), 0, "environment");
	is_int(options_parse_list(&o, "parallel=8,profile=", &err), 0, "-o");
	is_int(o.parallel, 8, "command line beats environment and file");
	is_int(o.retries, 2, "environment beats file");
	is_str(o.region, "file-region", "file beats default");
	is_str(o.profile, NULL, "command line can reset to none");
	is_int(o.part_size, 16 * MIB, "default stays when no one sets it");
	options_release(&o);
	buf_release(&err);
}

static void test_s3_conf(void)
{
	struct buf err = BUF_INIT(BUF_NO_LIMIT);
	struct s3_conf conf, defaults;
	struct creds_conf cc;
	struct options o;
	int rc;

	s3_conf_defaults(&defaults);
	unsetenv("AWS_REGION");
	unsetenv("AWS_DEFAULT_REGION");
	options_init(&o);
	rc = options_to_s3_conf(&o, "bkt", &conf, &cc, &err);
	is_int(rc, 0, "defaults translate");
	is_str(conf.endpoint, NULL, "endpoint none: AWS");
	is_str(conf.region, NULL, "region none without environment");
	is_str(conf.bucket, "bkt", "bucket");
	is_int(conf.addressing, S3_ADDR_AUTO, "addressing auto");
	is_int(conf.payload_signing, S3_SIGN_AUTO, "signing auto");
	is_int(conf.http.connect_timeout_ms, 10000, "connect timeout");
	is_int(conf.http.io_timeout_ms, 30000, "io timeout");
	is_str(conf.http.ca_bundle, NULL, "ca_bundle");
	ok(!conf.http.insecure, "secure");
	is_int(conf.http.max_idle, defaults.http.max_idle,
	       "max_idle from s3_conf_defaults");
	is_int(conf.retry.max_attempts, 6, "max_attempts = retries + 1");
	is_int(conf.retry.deadline_ms, 60000, "deadline = timeout");
	is_int(conf.retry.base_ms, defaults.retry.base_ms,
	       "base_ms from s3_conf_defaults");
	is_int(conf.retry.cap_ms, defaults.retry.cap_ms,
	       "cap_ms from s3_conf_defaults");
	is_int(conf.part_size, 16 * MIB, "part_size");
	is_int(conf.multipart_threshold, 64 * MIB, "multipart_threshold");
	is_int(conf.parallel, 4, "parallel");
	is_str(cc.passwd_file, NULL, "passwd_file");
	is_str(cc.profile, NULL, "profile");
	is_str(cc.bucket, "bkt", "creds bucket");
	ok(!cc.anonymous, "not anonymous");

	setenv("AWS_DEFAULT_REGION", "ap-south-1", 1);
	options_to_s3_conf(&o, "bkt", &conf, &cc, &err);
	is_str(conf.region, "ap-south-1", "AWS_DEFAULT_REGION fallback");
	setenv("AWS_REGION", "", 1);
	options_to_s3_conf(&o, "bkt", &conf, &cc, &err);
	is_str(conf.region, "ap-south-1", "empty AWS_REGION ignored");
	setenv("AWS_REGION", "eu-north-1", 1);
	options_to_s3_conf(&o, "bkt", &conf, &cc, &err);
	is_str(conf.region, "eu-north-1", "AWS_REGION before the default");

	rc = options_parse_list(&o,
				"endpoint=http://m:9000,region=r1,path_style,"
				"payload_signing=always,connect_timeout=1s,"
				"io_timeout=2s,timeout=0,retries=0,"
				"part_size=8M,multipart_threshold=1G,"
				"parallel=16,ca_bundle=/ca.pem,insecure,"
				"passwd_file=/pw,profile=p,anonymous",
				&err);
	is_int(rc, 0, "options set");
	rc = options_to_s3_conf(&o, "b2", &conf, &cc, &err);
	is_int(rc, 0, "translated");
	is_str(conf.endpoint, "http://m:9000", "endpoint");
	ok(conf.endpoint == o.endpoint, "strings are borrowed");
	is_str(conf.region, "r1", "region option beats the environment");
	is_int(conf.addressing, S3_ADDR_PATH, "path_style");
	is_int(conf.payload_signing, S3_SIGN_ALWAYS, "signing always");
	is_int(conf.http.connect_timeout_ms, 1000, "connect timeout");
	is_int(conf.http.io_timeout_ms, 2000, "io timeout");
	is_str(conf.http.ca_bundle, "/ca.pem", "ca_bundle");
	ok(conf.http.insecure, "insecure");
	is_int(conf.retry.max_attempts, 1, "retries=0: one attempt");
	is_int(conf.retry.deadline_ms, 0, "timeout=0: no deadline");
	is_int(conf.part_size, 8 * MIB, "part_size");
	is_int(conf.multipart_threshold, GIB, "multipart_threshold");
	is_int(conf.parallel, 16, "parallel");
	is_str(cc.passwd_file, "/pw", "passwd_file");
	is_str(cc.profile, "p", "profile");
	is_str(cc.bucket, "b2", "creds bucket");
	ok(cc.anonymous, "anonymous");

	options_set(&o, "payload_signing", "never", &err);
	options_set(&o, "path_style", "no", &err);
	options_set(&o, "virtual_host", NULL, &err);
	options_to_s3_conf(&o, "b2", &conf, &cc, &err);
	is_int(conf.addressing, S3_ADDR_VHOST, "virtual_host");
	is_int(conf.payload_signing, S3_SIGN_NEVER, "signing never");

	options_set(&o, "path_style", NULL, &err);
	buf_reset(&err);
	memset(&conf, 0x5a, sizeof(conf));
	rc = options_to_s3_conf(&o, "b2", &conf, &cc, &err);
	is_int(rc, -EINVAL, "path_style with virtual_host refused");
	is_str(buf_str(&err),
	       "options 'path_style' and 'virtual_host' exclude each other",
	       "its message");
	{
		struct s3_conf poison;

		memset(&poison, 0x5a, sizeof(poison));
		ok(memcmp(&conf, &poison, sizeof(conf)) == 0,
		   "conf untouched on failure");
	}

	unsetenv("AWS_REGION");
	unsetenv("AWS_DEFAULT_REGION");
	options_release(&o);
	buf_release(&err);
}

static void test_help(void)
{
	char *text = NULL;
	size_t len = 0, i;
	FILE *f = open_memstream(&text, &len);

	if (!ok(f != NULL, "open_memstream"))
		return;
	options_help(f);
	fclose(f);
	for (i = 0; i < N(all_options); i++) {
		char word[64];

		snprintf(word, sizeof(word), "  %s", all_options[i].name);
		ok(strstr(text, word) != NULL, "help shows '%s'",
		   all_options[i].name);
		if (all_options[i].env)
			ok(strstr(text, all_options[i].env) != NULL,
			   "help shows '%s'", all_options[i].env);
	}
	ok(strstr(text, "S3 options:\n") &&
		   strstr(text, "credentials options:") &&
		   strstr(text, "network options:") &&
		   strstr(text, "uploads options:") &&
		   strstr(text, "logging options:"),
	   "help has every group");
	ok(strstr(text, "part_size=SIZE") != NULL, "size type shown");
	ok(strstr(text, "(default: 16M; 5M-5G; env S3CACHEFS_PART_SIZE)") !=
		   NULL,
	   "default, range and variable shown");
	ok(strstr(text, "payload_signing=auto|always|never") != NULL,
	   "choices shown");
	ok(strstr(text, "path_style[=BOOL]") != NULL, "bool shown");
	ok(strstr(text, "connect_timeout=DURATION") != NULL, "duration shown");
	ok(strstr(text, "parallel=N") != NULL, "number shown");
	ok(strstr(text, "endpoint=URL") != NULL, "string placeholder shown");
	ok(strstr(text, "same as endpoint") != NULL, "alias explained");
	ok(text[len - 1] == '\n', "ends with a newline");
	{
		/* help columns line up: every help text starts at one column */
		const char *line = text;
		int col = -1, aligned = 1;

		while (line && *line) {
			const char *nl = strchr(line, '\n');

			if (line[0] == ' ' && line[1] == ' ') {
				const char *p = line + 2;
				int c;

				while (*p && *p != ' ')
					p++;
				while (*p == ' ')
					p++;
				c = (int)(p - line);
				if (col < 0)
					col = c;
				aligned &= c == col;
			}
			line = nl ? nl + 1 : NULL;
		}
		ok(aligned && col > 0, "help is aligned");
	}
	{
		char *line, *save = NULL;

		for (line = strtok_r(text, "\n", &save); line;
		     line = strtok_r(NULL, "\n", &save))
			diag("%s", line);
	}
	free(text);
}

int main(void)
{
	plan_lazy();
	if (!mkdtemp(tmpdir)) {
		ok(0, "mkdtemp");
		return done_testing();
	}
	test_defaults();
	test_set();
	test_set_errors();
	test_list();
	test_env();
	test_file();
	test_precedence();
	test_s3_conf();
	test_help();
	remove_tmpdir();
	return done_testing();
}
