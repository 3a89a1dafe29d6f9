/*
 * options.c - the option table and every way of applying it: defaults,
 * "-o" lists, S3CACHEFS_* environment variables, config files and --help,
 * then the translation into the S3 client's and the credentials' conf.
 *
 * One static table, opt_table[], describes each option once: its name,
 * type, field of struct options, default (a string parsed by the same code
 * as user input, so defaults obey the same validation), range, help text
 * and --help group.  Environment variable names are derived from option
 * names (part_size -> S3CACHEFS_PART_SIZE).  Alias rows (s3fs's names) name
 * the option they stand for and hold nothing else; they have no variable.
 *
 * Values are checked completely before a field is touched, so a failed set
 * leaves struct options as it was.  An empty string value resets a string
 * option to "none", which lets a later source undo an earlier one.
 *
 * Every error is one line appended to the caller's buf, lowercase, without
 * full stop or newline; user-supplied text in it is cut short and has its
 * control characters replaced, so it cannot forge further log lines.
 */
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "s3cachefs/buf.h"
#include "s3cachefs/creds.h"
#include "s3cachefs/fileio.h"
#include "s3cachefs/log.h"
#include "s3cachefs/options.h"
#include "s3cachefs/parse.h"
#include "s3cachefs/s3.h"

#define ENV_PREFIX "S3CACHEFS_"
#define ENV_NAME_MAX 64
#define OPTIONS_FILE_MAX (1024 * 1024)
#define SHOW_MAX 72 /* bytes of user text quoted in a message */

#define KIB 1024ULL
#define MIB (1024 * KIB)
#define GIB (1024 * MIB)
#define MS_PER_HOUR (3600 * 1000ULL)
#define NO_MAX UINT64_MAX

enum opt_type {
	OPT_STRING,   /* char *, NULL when unset */
	OPT_BOOL,     /* bool; the bare word means true */
	OPT_SIZE,     /* uint64_t bytes, parse_size */
	OPT_DURATION, /* uint64_t milliseconds, parse_duration_ms */
	OPT_UINT,     /* uint64_t, decimal */
	OPT_ENUM,     /* unsigned index into choices */
	OPT_ID,	      /* int64_t user or group id, -1 unset; number or name */
	OPT_MODE,     /* int64_t permission bits 0..0777, -1 unset; octal */
};

struct opt_def {
	const char *name;
	const char *alias_of; /* for aliases: the option set; all else unset */
	enum opt_type type;
	size_t off;		    /* of the field in struct options */
	const char *def;	    /* default, parsed as input; NULL: none */
	uint64_t min, max;	    /* size, duration, uint */
	const char *const *choices; /* enum: NULL-terminated names */
	const char *arg;   /* string: placeholder shown by --help; enum: the
			  * choices as --help sums them up (NULL: all) */
	const char *group; /* --help heading */
	const char *help;  /* one line */
};

/*
 * offsetof() of a field, refusing to compile when the field does not have
 * the C type the row's kind stores, so a row can never write a uint64_t
 * over a bool.
 */
#define FIELD(f, T)                                                       \
	(offsetof(struct options, f) +                                    \
	 0 * sizeof(char[__builtin_types_compatible_p(                    \
				 __typeof__(((struct options *)0)->f), T) \
				 ? 1                                      \
				 : -1]))

#define O_STRING(f, a) .type = OPT_STRING, .off = FIELD(f, char *), .arg = (a)
#define O_BOOL(f) .type = OPT_BOOL, .off = FIELD(f, bool)
#define O_SIZE(f) .type = OPT_SIZE, .off = FIELD(f, uint64_t)
#define O_DURATION(f) .type = OPT_DURATION, .off = FIELD(f, uint64_t)
#define O_UINT(f) .type = OPT_UINT, .off = FIELD(f, uint64_t)
#define O_ENUM(f, c) .type = OPT_ENUM, .off = FIELD(f, unsigned), .choices = (c)
#define O_ID(f, a) .type = OPT_ID, .off = FIELD(f, int64_t), .arg = (a)
#define O_MODE(f) .type = OPT_MODE, .off = FIELD(f, int64_t), .arg = "OCTAL"

static const char *const signing_names[] = { "auto", "always", "never", NULL };
static const char *const cache_mode_names[] = { "persistent", "ephemeral",
						"memory", NULL };
static const char *const encrypt_names[] = { "none", "aes-256-gcm", "ephemeral",
					     NULL };
static const char *const validate_names[] = { "ttl", "always", "never", NULL };
static const char *const writeback_names[] = { "sync", "async", NULL };
static const char *const compress_names[] = { "none",	"zlib",	  "zlib:1",
					      "zlib:2", "zlib:3", "zlib:4",
					      "zlib:5", "zlib:6", "zlib:7",
					      "zlib:8", "zlib:9", NULL };
static const char *const level_names[] = { "error", "warn",  "info",
					   "debug", "trace", NULL };

/* The enums' values are indices into the name lists above. */
_Static_assert(OPT_SIGN_AUTO == 0 && OPT_SIGN_ALWAYS == 1 &&
		       OPT_SIGN_NEVER == 2,
	       "signing_names order");
_Static_assert(OPT_CACHE_PERSISTENT == 0 && OPT_CACHE_EPHEMERAL == 1 &&
		       OPT_CACHE_MEMORY == 2,
	       "cache_mode_names order");
_Static_assert(OPT_ENCRYPT_NONE == 0 && OPT_ENCRYPT_AES256GCM == 1 &&
		       OPT_ENCRYPT_EPHEMERAL == 2,
	       "encrypt_names order");
_Static_assert(OPT_VALIDATE_TTL == 0 && OPT_VALIDATE_ALWAYS == 1 &&
		       OPT_VALIDATE_NEVER == 2,
	       "validate_names order");
_Static_assert(OPT_WRITEBACK_SYNC == 0 && OPT_WRITEBACK_ASYNC == 1,
	       "writeback_names order");
_Static_assert(LOG_LVL_ERROR == 0 && LOG_LVL_WARN == 1 && LOG_LVL_INFO == 2 &&
		       LOG_LVL_DEBUG == 3 && LOG_LVL_TRACE == 4,
	       "level_names order");

/* http_conf holds 32-bit milliseconds */
#define HTTP_TIMEOUT_MAX (24 * MS_PER_HOUR)
_Static_assert(HTTP_TIMEOUT_MAX <= UINT32_MAX, "http timeouts fit");

static const struct opt_def opt_table[] = {
	/* S3 */
	{ .name = "endpoint",
	  O_STRING(endpoint, "URL"),
	  .group = "S3",
	  .help = "S3 endpoint, http[s]://host[:port][/base]; none: AWS" },
	{ .name = "url",
	  .alias_of = "endpoint",
	  .group = "S3",
	  .help = "same as endpoint (s3fs's name)" },
	{ .name = "region",
	  O_STRING(region, "NAME"),
	  .group = "S3",
	  .help = "region to sign for; none: $AWS_REGION, $AWS_DEFAULT_REGION, "
		  "the profile's, us-east-1" },
	{ .name = "path_style",
	  O_BOOL(path_style),
	  .def = "no",
	  .group = "S3",
	  .help = "always use path-style URLs (http://host/bucket/key)" },
	{ .name = "virtual_host",
	  O_BOOL(virtual_host),
	  .def = "no",
	  .group = "S3",
	  .help = "always use virtual-hosted URLs (http://bucket.host/key)" },
	{ .name = "ca_bundle",
	  O_STRING(ca_bundle, "FILE"),
	  .group = "S3",
	  .help = "PEM file of CA certificates; none: the system's" },
	{ .name = "insecure",
	  O_BOOL(insecure),
	  .def = "no",
	  .group = "S3",
	  .help = "do not verify TLS certificates (tests only)" },
	{ .name = "payload_signing",
	  O_ENUM(payload_signing, signing_names),
	  .def = "auto",
	  .group = "S3",
	  .help = "sign request bodies; auto: over http only" },
	/* credentials */
	{ .name = "profile",
	  O_STRING(profile, "NAME"),
	  .group = "credentials",
	  .help = "profile of ~/.aws/credentials and ~/.aws/config" },
	{ .name = "passwd_file",
	  O_STRING(passwd_file, "FILE"),
	  .group = "credentials",
	  .help = "s3fs passwd file, ACCESS:SECRET lines, mode 0600" },
	{ .name = "anonymous",
	  O_BOOL(anonymous),
	  .def = "no",
	  .group = "credentials",
	  .help = "send unsigned requests (public buckets)" },
	{ .name = "public_bucket",
	  .alias_of = "anonymous",
	  .group = "credentials",
	  .help = "same as anonymous (s3fs's name)" },
	/* network */
	{ .name = "connect_timeout",
	  O_DURATION(connect_timeout_ms),
	  .def = "10s",
	  .min = 1,
	  .max = HTTP_TIMEOUT_MAX,
	  .group = "network",
	  .help = "time allowed to connect, TLS handshake included" },
	{ .name = "io_timeout",
	  O_DURATION(io_timeout_ms),
	  .def = "30s",
	  .min = 1,
	  .max = HTTP_TIMEOUT_MAX,
	  .group = "network",
	  .help = "abort a transfer when no byte moves this long" },
	{ .name = "timeout",
	  O_DURATION(timeout_ms),
	  .def = "60s",
	  .min = 0,
	  .max = NO_MAX,
	  .group = "network",
	  .help = "whole request, retries included; 0: no limit" },
	{ .name = "retries",
	  O_UINT(retries),
	  .def = "5",
	  .min = 0,
	  .max = 100,
	  .group = "network",
	  .help = "attempts after the first for transient failures" },
	/* uploads */
	{ .name = "part_size",
	  O_SIZE(part_size),
	  .def = "16M",
	  .min = 5 * MIB,
	  .max = 5 * GIB,
	  .group = "uploads",
	  .help = "size of each multipart upload part" },
	{ .name = "multipart_threshold",
	  O_SIZE(multipart_threshold),
	  .def = "64M",
	  .min = 5 * MIB,
	  .max = NO_MAX,
	  .group = "uploads",
	  .help = "upload files larger than this in parts" },
	{ .name = "parallel",
	  O_UINT(parallel),
	  .def = "4",
	  .min = 1,
	  .max = 64,
	  .group = "uploads",
	  .help = "parts of one upload in flight at once" },
	{ .name = "writeback",
	  O_ENUM(writeback, writeback_names),
	  .def = "sync",
	  .group = "uploads",
	  .help = "sync: close waits for the upload; async: close returns "
		  "once staged, fsync and unmount wait" },
	{ .name = "uploads",
	  O_UINT(uploads),
	  .def = "8",
	  .min = 1,
	  .max = 64,
	  .group = "uploads",
	  .help = "closed files uploaded at once in the background" },
	/* cache */
	{ .name = "cache_dir",
	  O_STRING(cache_dir, "DIR"),
	  .group = "cache",
	  .help = "cache folder; none: $XDG_CACHE_HOME/s3cachefs/BUCKET-ID, "
		  "/var/cache/s3cachefs/BUCKET-ID for root" },
	{ .name = "cache",
	  O_ENUM(cache_mode, cache_mode_names),
	  .def = "persistent",
	  .group = "cache",
	  .help = "ephemeral: a private temporary folder removed at unmount; "
		  "memory: the same in RAM (/dev/shm)" },
	{ .name = "cache_size",
	  O_SIZE(cache_size),
	  .def = "10G",
	  .min = 4 * MIB,
	  .max = NO_MAX,
	  .group = "cache",
	  .help = "most disk space the cache takes, blocks and metadata "
		  "counted" },
	{ .name = "cache_min_free",
	  O_SIZE(cache_min_free),
	  .def = "1G",
	  .min = 0,
	  .max = NO_MAX,
	  .group = "cache",
	  .help = "space the cache leaves free on its filesystem" },
	{ .name = "chunk_size",
	  O_SIZE(chunk_size),
	  .def = "4M",
	  .min = 64 * KIB,
	  .max = 64 * MIB,
	  .group = "cache",
	  .help = "bytes per chunk: the unit fetched and cached" },
	{ .name = "compress",
	  O_ENUM(compress, compress_names),
	  .arg = "none|zlib|zlib:1..9",
	  .def = "none",
	  .group = "cache",
	  .help = "compress chunks on disk (zlib is level 6)" },
	{ .name = "meta_ttl",
	  O_DURATION(meta_ttl_ms),
	  .def = "60s",
	  .min = 0,
	  .max = 365 * 24 * MS_PER_HOUR,
	  .group = "cache",
	  .help = "trust sizes, ETags and listings this long, then "
		  "revalidate" },
	{ .name = "negative_ttl",
	  O_DURATION(negative_ttl_ms),
	  .def = "10s",
	  .min = 0,
	  .max = 365 * 24 * MS_PER_HOUR,
	  .group = "cache",
	  .help = "trust \"no such file\" this long" },
	{ .name = "list_flat",
	  O_UINT(list_flat),
	  .def = "5000",
	  .min = 0,
	  .max = 100000, /* ~200 bytes of memory per key while listing */
	  .group = "cache",
	  .help = "list a directory's whole subtree in one LIST of up to "
		  "this many keys (0: off)" },
	{ .name = "validate",
	  O_ENUM(validate, validate_names),
	  .def = "ttl",
	  .group = "cache",
	  .help = "when an open checks the ETag: after meta_ttl, at every "
		  "open, or never" },
	{ .name = "cache_max_entries",
	  O_UINT(cache_max_entries),
	  .def = "0",
	  .min = 0,
	  .max = NO_MAX,
	  .group = "cache",
	  .help = "most objects with cached data; 0: no limit" },
	{ .name = "cache_max_age",
	  O_DURATION(cache_max_age_ms),
	  .def = "0",
	  .min = 0,
	  .max = NO_MAX,
	  .group = "cache",
	  .help = "drop cached data unused this long; 0: never" },
	{ .name = "encrypt",
	  O_ENUM(encrypt, encrypt_names),
	  .def = "none",
	  .group = "cache",
	  .help = "encrypt chunks and staging files; ephemeral: with a key "
		  "made for this mount, cache wiped at unmount" },
	{ .name = "key_file",
	  O_STRING(key_file, "FILE"),
	  .group = "cache",
	  .help = "32-byte key (raw or 64 hex digits) for encrypt=aes-256-gcm; "
		  "none: $S3CACHEFS_ENCRYPTION_KEY" },
	{ .name = "readahead",
	  O_SIZE(readahead),
	  .def = "64M",
	  .min = 0,
	  .max = 1024 * MIB,
	  .group = "cache",
	  .help = "largest window fetched ahead of a sequential reader" },
	{ .name = "prefetch",
	  O_UINT(prefetch),
	  .def = "8",
	  .min = 1,
	  .max = 64,
	  .group = "cache",
	  .help = "threads fetching ahead of readers and parts of missing "
		  "chunks" },
	/* mount */
	{ .name = "ro",
	  O_BOOL(ro),
	  .def = "no",
	  .group = "mount",
	  .help = "mount read-only" },
	{ .name = "allow_other",
	  O_BOOL(allow_other),
	  .def = "no",
	  .group = "mount",
	  .help = "let users other than the mounting one access the mount" },
	{ .name = "uid",
	  O_ID(uid, "USER"),
	  .group = "mount",
	  .help = "owner of files without x-amz-meta-uid; none: the "
		  "mounting user" },
	{ .name = "gid",
	  O_ID(gid, "GROUP"),
	  .group = "mount",
	  .help = "group of files without x-amz-meta-gid; none: the "
		  "mounting user's" },
	{ .name = "umask",
	  O_MODE(umask),
	  .group = "mount",
	  .help = "permission bits cleared from every mode shown; none: "
		  "modes as stored (else 0644 and 0755)" },
	{ .name = "nonempty",
	  O_BOOL(nonempty),
	  .def = "no",
	  .group = "mount",
	  .help = "allow mounting over a folder that is not empty" },
	{ .name = "config",
	  O_STRING(config, "FILE"),
	  .group = "mount",
	  .help = "config file of name = value lines, read before the "
		  "environment and -o; none: ~/.config/s3cachefs/config "
		  "(not root), else /etc/s3cachefs.conf, when it exists" },
	/* logging */
	{ .name = "log_level",
	  O_ENUM(log_level, level_names),
	  .def = "warn",
	  .group = "logging",
	  .help = "least severe messages logged" },
};

#define N_OPTS (sizeof(opt_table) / sizeof(opt_table[0]))

/* Where a value came from, for the prefix of error messages. */
struct origin {
	const char *file; /* config file, with line */
	unsigned line;
	const char *env; /* environment variable name */
};

static void *field(struct options *o, const struct opt_def *d)
{
	return (char *)o + d->off;
}

/*
 * Copy at most @n bytes of @s (less at a NUL) into @out for quoting in a
 * message: control characters become '?', long text ends in "...".
 */
static void show(const char *s, size_t n, char out[SHOW_MAX + 4])
{
	size_t i;

	for (i = 0; i < n && s[i] != '\0' && i < SHOW_MAX; i++) {
		unsigned char c = (unsigned char)s[i];

		out[i] = c < 0x20 || c == 0x7f ? '?' : (char)c;
	}
	if (i < n && s[i] != '\0') {
		memcpy(out + i, "...", 3);
		i += 3;
	}
	out[i] = '\0';
}

/* Append one error line to @err (may be NULL), prefixed by its origin. */
static __attribute__((format(printf, 3, 4))) void
fail(struct buf *err, const struct origin *at, const char *fmt, ...)
{
	va_list ap;

	if (!err)
		return;
	if (at && at->file)
		buf_addf(err, "'%s' line %u: ", at->file, at->line);
	else if (at && at->env)
		buf_addf(err, "environment variable '%s': ", at->env);
	va_start(ap, fmt);
	buf_vaddf(err, fmt, ap);
	va_end(ap);
}

static const struct opt_def *find_def(const char *name, size_t len)
{
	size_t i;

	for (i = 0; i < N_OPTS; i++) {
		const char *n = opt_table[i].name;

		if (strlen(n) == len && memcmp(n, name, len) == 0)
			return &opt_table[i];
	}
	return NULL;
}

/* The row that holds the data of @d: itself, or the one it is alias of. */
static const struct opt_def *resolve(const struct opt_def *d)
{
	if (d->alias_of)
		d = find_def(d->alias_of, strlen(d->alias_of));
	return d;
}

/* "S3CACHEFS_" and the name in uppercase; "" when it would not fit. */
static void env_name(const struct opt_def *d, char out[ENV_NAME_MAX])
{
	size_t i, pre = strlen(ENV_PREFIX);

	if (pre + strlen(d->name) >= ENV_NAME_MAX) {
		out[0] = '\0';
		return;
	}
	memcpy(out, ENV_PREFIX, pre);
	for (i = 0; d->name[i]; i++) {
		char c = d->name[i];

		out[pre + i] = c >= 'a' && c <= 'z' ? (char)(c - 'a' + 'A') : c;
	}
	out[pre + i] = '\0';
}

/* @v as a value of type @t would be written: "16M", "1h30m", "5". */
static void format_value(enum opt_type t, uint64_t v, char *out, size_t size)
{
	static const char size_units[] = "PTGMK";
	int i, n = 0;

	if (t == OPT_SIZE) {
		for (i = 0; i < 5; i++) {
			uint64_t unit = 1ULL << (10 * (5 - i));

			if (v && v % unit == 0) {
				snprintf(out, size, "%llu%c",
					 (unsigned long long)(v / unit),
					 size_units[i]);
				return;
			}
		}
	} else if (t == OPT_DURATION && v) {
		static const struct {
			const char *name;
			uint64_t ms;
		} units[] = {
			{ "w", 7 * 24 * MS_PER_HOUR },
			{ "d", 24 * MS_PER_HOUR },
			{ "h", MS_PER_HOUR },
			{ "m", 60 * 1000 },
			{ "s", 1000 },
			{ "ms", 1 },
		};

		out[0] = '\0';
		for (i = 0; i < 6 && (size_t)n < size; i++) {
			if (v >= units[i].ms) {
				n += snprintf(
					out + n, size - (size_t)n, "%llu%s",
					(unsigned long long)(v / units[i].ms),
					units[i].name);
				v %= units[i].ms;
			}
		}
		return;
	}
	snprintf(out, size, "%llu", (unsigned long long)v);
}

/* The accepted range of a numeric option, "1-64" or "at least 5M". */
static void format_range(const struct opt_def *d, char *out, size_t size)
{
	char lo[48], hi[48];

	format_value(d->type, d->min, lo, sizeof(lo));
	format_value(d->type, d->max, hi, sizeof(hi));
	if (d->max == NO_MAX)
		snprintf(out, size, "at least %s", lo);
	else
		snprintf(out, size, "%s-%s", lo, hi);
}

/* The choices of an enum joined by @sep. */
static void format_choices(const struct opt_def *d, const char *sep, char *out,
			   size_t size)
{
	size_t i, n = 0;

	out[0] = '\0';
	for (i = 0; d->choices[i] && n < size; i++)
		n += (size_t)snprintf(out + n, size - n, "%s%s", i ? sep : "",
				      d->choices[i]);
}

/* Parse a number of type @d->type within its range. */
static int parse_number(const struct opt_def *d, const char *name,
			const char *value, const struct origin *at,
			struct buf *err, uint64_t *out)
{
	static const char *const what[] = {
		[OPT_SIZE] = "a size",
		[OPT_DURATION] = "a duration",
		[OPT_UINT] = "a number",
	};
	char shown[SHOW_MAX + 4], range[112];
	uint64_t v = 0;
	int rc;

	show(value, SIZE_MAX, shown);
	if (d->type == OPT_SIZE)
		rc = parse_size(value, &v);
	else if (d->type == OPT_DURATION)
		rc = parse_duration_ms(value, &v);
	else
		rc = parse_uint(value, 0, UINT64_MAX, &v);
	if (rc == -EINVAL) {
		fail(err, at, "option '%s': '%s' is not %s", name, shown,
		     what[d->type]);
		return rc;
	}
	if (rc == 0 && (v < d->min || v > d->max))
		rc = -ERANGE;
	if (rc < 0) {
		format_range(d, range, sizeof(range));
		fail(err, at, "option '%s': '%s' is out of range (%s)", name,
		     shown, range);
		return -EINVAL;
	}
	*out = v;
	return 0;
}

/* Octal digits only, at most 0777 ("022", "0077"). */
static int parse_octal(const char *s, uint64_t *out)
{
	uint64_t v = 0;

	if (*s == '\0')
		return -EINVAL;
	for (; *s; s++) {
		if (*s < '0' || *s > '7')
			return -EINVAL;
		v = v * 8 + (uint64_t)(*s - '0');
		if (v > 0777)
			return -ERANGE;
	}
	*out = v;
	return 0;
}

/*
 * A user (uid=) or group (gid=) id: a number, or a name looked up in the
 * passwd or group database.  "" unsets it (-1).
 */
static int parse_id(const struct opt_def *d, const char *name,
		    const char *value, const struct origin *at, struct buf *err,
		    int64_t *out)
{
	char shown[SHOW_MAX + 4];
	uint64_t v;

	if (*value == '\0') {
		*out = -1;
		return 0;
	}
	if (parse_uint(value, 0, UINT32_MAX - 1, &v) == 0) {
		*out = (int64_t)v;
		return 0;
	}
	if (strcmp(d->name, "uid") == 0) {
		struct passwd *pw = getpwnam(value);

		if (pw) {
			*out = pw->pw_uid;
			return 0;
		}
	} else {
		struct group *gr = getgrnam(value);

		if (gr) {
			*out = gr->gr_gid;
			return 0;
		}
	}
	show(value, SIZE_MAX, shown);
	fail(err, at, "option '%s': '%s' is no %s id or name", name, shown,
	     strcmp(d->name, "uid") == 0 ? "user" : "group");
	return -EINVAL;
}

/*
 * Validate @value for the option @d (an alias already resolved), called
 * @name by the user, and store it.  @value NULL is the bare word.
 */
static int set_value(struct options *o, const struct opt_def *d,
		     const char *name, const char *value,
		     const struct origin *at, struct buf *err)
{
	char shown[SHOW_MAX + 4], choices[128];
	char *copy = NULL;
	uint64_t v;
	bool b = true;
	size_t i;
	int rc;

	if (!value && d->type != OPT_BOOL) {
		fail(err, at, "option '%s' needs a value", name);
		return -EINVAL;
	}
	switch (d->type) {
	case OPT_STRING:
		if (*value != '\0') {
			copy = strdup(value);
			if (!copy)
				return -ENOMEM;
		}
		free(*(char **)field(o, d));
		*(char **)field(o, d) = copy;
		return 0;
	case OPT_BOOL:
		if (value && parse_bool(value, &b) < 0) {
			show(value, SIZE_MAX, shown);
			fail(err, at, "option '%s': '%s' is not a boolean",
			     name, shown);
			return -EINVAL;
		}
		*(bool *)field(o, d) = b;
		return 0;
	case OPT_SIZE:
	case OPT_DURATION:
	case OPT_UINT:
		rc = parse_number(d, name, value, at, err, &v);
		if (rc == 0)
			*(uint64_t *)field(o, d) = v;
		return rc;
	case OPT_ID:
		return parse_id(d, name, value, at, err,
				(int64_t *)field(o, d));
	case OPT_MODE:
		if (*value == '\0') {
			*(int64_t *)field(o, d) = -1;
			return 0;
		}
		if (parse_octal(value, &v) < 0) {
			show(value, SIZE_MAX, shown);
			fail(err, at,
			     "option '%s': '%s' is not an octal mode "
			     "(0-0777)",
			     name, shown);
			return -EINVAL;
		}
		*(int64_t *)field(o, d) = (int64_t)v;
		return 0;
	case OPT_ENUM:
		for (i = 0; d->choices[i]; i++) {
			if (strcasecmp(value, d->choices[i]) == 0) {
				*(unsigned *)field(o, d) = (unsigned)i;
				return 0;
			}
		}
		show(value, SIZE_MAX, shown);
		format_choices(d, ", ", choices, sizeof(choices));
		fail(err, at, "option '%s': '%s' is not one of %s", name, shown,
		     choices);
		return -EINVAL;
	}
	return -EINVAL;
}

/* Set the option called @name (@len bytes) from @value. */
static int set_named(struct options *o, const char *name, size_t len,
		     const char *value, const struct origin *at,
		     struct buf *err)
{
	char shown[SHOW_MAX + 4];
	const struct opt_def *d = find_def(name, len);

	show(name, len, shown);
	if (!d) {
		fail(err, at, "unknown option '%s'", shown);
		return -EINVAL;
	}
	return set_value(o, resolve(d), shown, value, at, err);
}

int options_init(struct options *o)
{
	size_t i;
	int rc;

	memset(o, 0, sizeof(*o));
	for (i = 0; i < N_OPTS; i++) {
		const struct opt_def *d = &opt_table[i];

		if (d->type == OPT_ID || d->type == OPT_MODE)
			*(int64_t *)field(o, d) = -1; /* unset */

		if (d->alias_of || !d->def)
			continue;
		rc = set_value(o, d, d->name, d->def, NULL, NULL);
		if (rc < 0) {
			options_release(o);
			return rc;
		}
	}
	return 0;
}

void options_release(struct options *o)
{
	size_t i;

	if (!o)
		return;
	for (i = 0; i < N_OPTS; i++) {
		const struct opt_def *d = &opt_table[i];

		if (d->type == OPT_STRING && !d->alias_of) {
			free(*(char **)field(o, d));
			*(char **)field(o, d) = NULL;
		}
	}
}

int options_set(struct options *o, const char *name, const char *value,
		struct buf *err)
{
	return set_named(o, name, strlen(name), value, NULL, err);
}

static bool is_blank(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' ||
	       c == '\f';
}

/* Cut the blanks off both ends of @s, in place. */
static char *trim(char *s)
{
	size_t n;

	while (is_blank(*s))
		s++;
	n = strlen(s);
	while (n > 0 && is_blank(s[n - 1]))
		s[--n] = '\0';
	return s;
}

/*
 * Apply one "name=value" or "name" item, already unescaped, in place.
 * Blanks around the name go; the value is kept as it is unless
 * @trim_value.  A blank item is skipped.
 */
static int apply_item(struct options *o, char *item, bool trim_value,
		      const struct origin *at, struct buf *err)
{
	char *eq = strchr(item, '='), *name, *value = NULL;
	char shown[SHOW_MAX + 4];

	if (eq) {
		*eq = '\0';
		value = trim_value ? trim(eq + 1) : eq + 1;
	}
	name = trim(item);
	if (*name == '\0') {
		if (!eq)
			return 0;
		show(value, SIZE_MAX, shown);
		fail(err, at, "no option name before '=%s'", shown);
		return -EINVAL;
	}
	return set_named(o, name, strlen(name), value, at, err);
}

int options_parse_list(struct options *o, const char *list, struct buf *err)
{
	struct buf item = BUF_INIT(BUF_NO_LIMIT);
	const char *p;
	int rc = 0;

	for (p = list;; p++) {
		if (*p == '\\') {
			if (p[1] == '\0') {
				fail(err, NULL,
				     "option list ends in a lone backslash");
				rc = -EINVAL;
				goto out;
			}
			rc = buf_addc(&item, *++p);
		} else if (*p != ',' && *p != '\0') {
			rc = buf_addc(&item, *p);
		} else if (item.len > 0) {
			rc = apply_item(o, item.data, false, NULL, err);
			buf_reset(&item);
		}
		if (rc < 0 || *p == '\0')
			goto out;
	}
out:
	buf_release(&item);
	return rc;
}

static bool ignored(const char *var, size_t len, const char *const *ignore)
{
	for (; ignore && *ignore; ignore++) {
		if (strlen(*ignore) == len && memcmp(*ignore, var, len) == 0)
			return true;
	}
	return false;
}

int options_load_env(struct options *o, char *const *envp,
		     const char *const *ignore, struct buf *err)
{
	size_t pre = strlen(ENV_PREFIX);
	char env[ENV_NAME_MAX], shown[SHOW_MAX + 4];
	struct origin at = { 0 };
	size_t i, len;
	int rc;

	for (; envp && *envp; envp++) {
		const char *var = *envp, *eq = strchr(var, '=');
		const struct opt_def *d = NULL;

		if (!eq || strncmp(var, ENV_PREFIX, pre) != 0)
			continue;
		len = (size_t)(eq - var);
		if (ignored(var, len, ignore))
			continue;
		for (i = 0; i < N_OPTS && !d; i++) {
			if (opt_table[i].alias_of)
				continue;
			env_name(&opt_table[i], env);
			if (strlen(env) == len && memcmp(env, var, len) == 0)
				d = &opt_table[i];
		}
		if (!d) {
			show(var, len, shown);
			fail(err, NULL, "unknown environment variable '%s'",
			     shown);
			return -EINVAL;
		}
		at.env = env;
		rc = set_value(o, d, d->name, eq + 1, &at, err);
		if (rc < 0)
			return rc;
	}
	return 0;
}

/*
 * Strip a comment from a config file line: one starts with '#' at the start
 * of the line or after a blank, so values like "a#b" keep their '#'.
 */
static void strip_comment(char *line)
{
	char *p;

	for (p = line; *p; p++) {
		if (*p == '#' && (p == line || is_blank(p[-1]))) {
			*p = '\0';
			return;
		}
	}
}

int options_parse_text(struct options *o, const char *text, size_t len,
		       const char *name, struct buf *err)
{
	struct origin at = { .file = name };
	char *copy, *line, *next;
	int rc = 0;

	if (memchr(text, '\0', len)) {
		fail(err, NULL, "config file '%s' holds a NUL byte", name);
		return -EINVAL;
	}
	copy = strndup(text, len);
	if (!copy)
		return -ENOMEM;
	for (line = copy; line; line = next) {
		next = strchr(line, '\n');
		if (next)
			*next++ = '\0';
		at.line++;
		strip_comment(line);
		rc = apply_item(o, line, true, &at, err);
		if (rc < 0)
			break;
	}
	free(copy);
	return rc;
}

int options_load_file(struct options *o, const char *path, struct buf *err)
{
	char *text = NULL;
	size_t len;
	int rc;

	rc = read_file(path, OPTIONS_FILE_MAX, &text, &len);
	if (rc == -ENOENT)
		return rc;
	if (rc == -EFBIG) {
		fail(err, NULL, "config file '%s' is larger than 1 MiB", path);
		goto out;
	}
	if (rc < 0) {
		fail(err, NULL, "cannot read config file '%s': %s", path,
		     strerror(-rc));
		goto out;
	}
	rc = options_parse_text(o, text, len, path, err);
out:
	free(text);
	return rc;
}

/* "name=TYPE" as --help shows it in its first column. */
static void format_usage(const struct opt_def *d, char *out, size_t size)
{
	const struct opt_def *r = resolve(d);
	char choices[128];

	switch (r->type) {
	case OPT_STRING:
		snprintf(out, size, "%s=%s", d->name, r->arg);
		break;
	case OPT_BOOL:
		snprintf(out, size, "%s[=BOOL]", d->name);
		break;
	case OPT_SIZE:
		snprintf(out, size, "%s=SIZE", d->name);
		break;
	case OPT_DURATION:
		snprintf(out, size, "%s=DURATION", d->name);
		break;
	case OPT_UINT:
		snprintf(out, size, "%s=N", d->name);
		break;
	case OPT_ENUM:
		/* a long list of choices may be summed up by the row */
		if (r->arg)
			snprintf(choices, sizeof(choices), "%s", r->arg);
		else
			format_choices(r, "|", choices, sizeof(choices));
		snprintf(out, size, "%s=%s", d->name, choices);
		break;
	case OPT_ID:
	case OPT_MODE:
		snprintf(out, size, "%s=%s", d->name, r->arg);
		break;
	}
}

static void help_row(FILE *f, const struct opt_def *d, int width)
{
	char usage[160], range[112], env[ENV_NAME_MAX];

	format_usage(d, usage, sizeof(usage));
	fprintf(f, "  %-*s  %s", width, usage, d->help);
	if (d->alias_of) {
		fputc('\n', f);
		return;
	}
	fputs(" (", f);
	if (d->def)
		fprintf(f, "default: %s; ", d->def);
	if (d->type == OPT_SIZE || d->type == OPT_DURATION ||
	    d->type == OPT_UINT) {
		if (d->min > 0 || d->max != NO_MAX) {
			format_range(d, range, sizeof(range));
			fprintf(f, "%s; ", range);
		}
	}
	env_name(d, env);
	fprintf(f, "env %s)\n", env);
}

void options_help(FILE *f)
{
	char usage[160];
	size_t i, j;
	int width = 0;

	for (i = 0; i < N_OPTS; i++) {
		int n;

		format_usage(&opt_table[i], usage, sizeof(usage));
		n = (int)strlen(usage);
		if (n > width)
			width = n;
	}
	/* groups in the order they first appear in the table */
	for (i = 0; i < N_OPTS; i++) {
		const char *group = opt_table[i].group;

		for (j = 0; j < i; j++) {
			if (strcmp(opt_table[j].group, group) == 0)
				break;
		}
		if (j < i)
			continue;
		fprintf(f, "%s%s options:\n", i ? "\n" : "", group);
		for (j = i; j < N_OPTS; j++) {
			if (strcmp(opt_table[j].group, group) == 0)
				help_row(f, &opt_table[j], width);
		}
	}
}

/* The region of the environment, as the AWS tools read it, or NULL. */
static const char *env_region(void)
{
	const char *r = getenv("AWS_REGION");

	if (!r || !*r)
		r = getenv("AWS_DEFAULT_REGION");
	return r && *r ? r : NULL;
}

int options_compress_level(unsigned index)
{
	if (index == 0 || index >= sizeof(compress_names) / sizeof(char *) - 1)
		return 0;
	return index == 1 ? 6 : (int)index - 1;
}

int options_to_s3_conf(const struct options *o, const char *bucket,
		       struct s3_conf *conf, struct creds_conf *cc,
		       struct buf *err)
{
	static const enum s3_payload_signing signing[] = {
		[OPT_SIGN_AUTO] = S3_SIGN_AUTO,
		[OPT_SIGN_ALWAYS] = S3_SIGN_ALWAYS,
		[OPT_SIGN_NEVER] = S3_SIGN_NEVER,
	};

	if (o->path_style && o->virtual_host) {
		fail(err, NULL,
		     "options 'path_style' and 'virtual_host' exclude each "
		     "other");
		return -EINVAL;
	}
	if (o->payload_signing >= sizeof(signing) / sizeof(signing[0]))
		return -EINVAL;

	s3_conf_defaults(conf);
	conf->endpoint = o->endpoint;
	conf->region = o->region ? o->region : env_region();
	conf->bucket = bucket;
	conf->addressing = o->path_style     ? S3_ADDR_PATH
			   : o->virtual_host ? S3_ADDR_VHOST
					     : S3_ADDR_AUTO;
	conf->payload_signing = signing[o->payload_signing];
	/* the table's ranges keep these within the narrower fields */
	conf->http.connect_timeout_ms = (uint32_t)o->connect_timeout_ms;
	conf->http.io_timeout_ms = (uint32_t)o->io_timeout_ms;
	conf->http.ca_bundle = o->ca_bundle;
	conf->http.insecure = o->insecure;
	conf->retry.max_attempts = (unsigned)o->retries + 1;
	conf->retry.deadline_ms = o->timeout_ms;
	conf->part_size = o->part_size;
	conf->multipart_threshold = o->multipart_threshold;
	conf->parallel = (unsigned)o->parallel;

	memset(cc, 0, sizeof(*cc));
	cc->passwd_file = o->passwd_file;
	cc->profile = o->profile;
	cc->bucket = bucket;
	cc->anonymous = o->anonymous;
	return 0;
}
