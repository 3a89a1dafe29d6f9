/*
 * s3cli.c - s3cachefs-s3, a small S3 command-line client on the library:
 * ls, stat, get, put, cp, rm, mb and check.  Handy for users, for the demo
 * and for debugging a mount's bucket with exactly the code the mount uses.
 *
 * Every failure prints exactly one line on stderr: the library logs the
 * failures it understands (with the S3 code and request id); when it did not
 * (log_error_count() unchanged), this tool says what failed.  Exit status:
 * 0 success, 1 the operation failed, 2 the command line is wrong.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "s3cachefs/buf.h"
#include "s3cachefs/creds.h"
#include "s3cachefs/fileio.h"
#include "s3cachefs/log.h"
#include "s3cachefs/options.h"
#include "s3cachefs/s3.h"

#define PROG "s3cachefs-s3"
#define EXIT_FAIL 1
#define EXIT_USAGE 2
#define MAX_META 16

extern char **environ;

struct uri {
	char *bucket;
	const char *key; /* points into bucket's allocation */
};

struct cli {
	struct options opts;
	struct s3 *s3;
	struct s3_creds creds;
	unsigned long errors_before;
};

static void usage(FILE *f)
{
	fprintf(f,
		"usage: " PROG " [-o OPT[,OPT...]]... [-v[v]] COMMAND ARGS\n"
		"\n"
		"commands (URIs are s3://BUCKET/KEY):\n"
		"  ls [-r] s3://BUCKET[/PREFIX]      list folders and objects "
		"(-r: every key)\n"
		"  stat s3://BUCKET/KEY              size, ETag, mtime, "
		"metadata\n"
		"  get [--range A-B|A-] [--if-match ETAG] [--if-none-match "
		"ETAG]\n"
		"      s3://BUCKET/KEY [FILE|-]      (FILE is left as it is "
		"when "
		"not modified)\n"
		"  put [--content-type T] [--meta NAME=VALUE]... FILE|- "
		"s3://BUCKET/KEY\n"
		"  cp s3://BUCKET/SRC s3://BUCKET/DST  server-side copy\n"
		"  rm [-r] s3://BUCKET/KEY...        delete keys (-r: "
		"everything in each folder)\n"
		"  mb s3://BUCKET                    create a bucket\n"
		"  check s3://BUCKET                 check bucket, credentials "
		"and region\n"
		"\n"
		"credentials: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
		"~/.aws/credentials\n"
		"(-o profile=), an s3fs passwd file (-o passwd_file=), or -o "
		"anonymous.\n"
		"Options may also be set as S3CACHEFS_<NAME> environment "
		"variables.\n\n");
}

/* One line for a failure the library did not already report. */
static int fail(struct cli *c, const char *what, const char *target, int rc)
{
	if (log_error_count() == c->errors_before) {
		if (rc == -ENOENT)
			fprintf(stderr, PROG ": %s '%s': no such object\n",
				what, target);
		else if (rc == -ESTALE)
			fprintf(stderr,
				PROG ": %s '%s': precondition failed: the "
				     "object changed (ETag differs)\n",
				what, target);
		else
			fprintf(stderr, PROG ": %s '%s': %s\n", what, target,
				strerror(-rc));
	}
	return EXIT_FAIL;
}

static int usage_error(const char *fmt, const char *arg)
{
	fprintf(stderr, PROG ": ");
	fprintf(stderr, fmt, arg ? arg : "");
	fprintf(stderr, " (see '" PROG " --help')\n");
	return EXIT_USAGE;
}

static int parse_uri(const char *s, bool need_key, struct uri *out)
{
	const char *b;
	char *slash;

	if (strncmp(s, "s3://", 5) != 0)
		return -EINVAL;
	b = s + 5;
	out->bucket = strdup(b);
	if (!out->bucket)
		return -ENOMEM;
	slash = strchr(out->bucket, '/');
	if (slash) {
		*slash = '\0';
		out->key = slash + 1;
	} else {
		out->key = out->bucket + strlen(out->bucket);
	}
	if (!*out->bucket || (need_key && !*out->key)) {
		free(out->bucket);
		out->bucket = NULL;
		return -EINVAL;
	}
	return 0;
}

/* Connect to @bucket with the options and credentials chain. */
static int cli_connect(struct cli *c, const char *bucket)
{
	struct buf err = BUF_INIT(4096);
	struct creds_conf cc;
	struct s3_conf conf;
	int rc;

	rc = options_to_s3_conf(&c->opts, bucket, &conf, &cc, &err);
	if (rc < 0) {
		fprintf(stderr, PROG ": %s\n", buf_str(&err));
		buf_release(&err);
		return EXIT_USAGE;
	}
	buf_release(&err);
	rc = creds_resolve(&cc, &c->creds);
	if (rc < 0)
		return fail(c, "credentials for", bucket, rc);
	if (!conf.region && c->creds.region)
		conf.region = c->creds.region;
	rc = s3_open(&conf, &c->creds, &c->s3);
	if (rc < 0)
		return fail(c, "connect to bucket", bucket, rc);
	return 0;
}

static void format_time(int64_t t, char out[32])
{
	time_t tt = (time_t)t;
	struct tm tm;

	gmtime_r(&tt, &tm);
	strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* ---------------------------------------------------------------------- */

/*
 * Print a key so that one entry is always one line: backslash and control
 * characters are escaped (\\, \t, \n, \r, \xHH); everything else, UTF-8
 * included, is printed as it is.
 */
static void print_key(const char *k)
{
	for (; *k; k++) {
		unsigned char c = (unsigned char)*k;

		if (c == '\\')
			fputs("\\\\", stdout);
		else if (c == '\t')
			fputs("\\t", stdout);
		else if (c == '\n')
			fputs("\\n", stdout);
		else if (c == '\r')
			fputs("\\r", stdout);
		else if (c < 0x20 || c == 0x7f)
			printf("\\x%02x", c);
		else
			putchar(c);
	}
	putchar('\n');
}

static int print_page(void *ctx, const struct s3_list_page *p)
{
	size_t i;
	char when[32];

	(void)ctx;
	for (i = 0; i < p->n_prefixes; i++) {
		fputs("PRE\t", stdout);
		print_key(p->prefixes[i]);
	}
	for (i = 0; i < p->n_entries; i++) {
		format_time(p->entries[i].mtime, when);
		printf("%" PRIu64 "\t%s\t", p->entries[i].size, when);
		print_key(p->entries[i].key);
	}
	return ferror(stdout) ? -EIO : 0;
}

static int cmd_ls(struct cli *c, int argc, char **argv)
{
	bool recursive = false;
	struct uri u = { 0 };
	int i, rc;

	for (i = 1; i < argc && argv[i][0] == '-' && argv[i][1]; i++) {
		if (strcmp(argv[i], "-r") == 0)
			recursive = true;
		else
			return usage_error("ls: unknown flag '%s'", argv[i]);
	}
	if (argc - i != 1 || parse_uri(argv[i], false, &u) < 0)
		return usage_error("ls: expected one s3://BUCKET[/PREFIX]%s",
				   NULL);
	rc = cli_connect(c, u.bucket);
	if (rc == 0) {
		rc = s3_list_all(c->s3, u.key, recursive ? NULL : "/",
				 print_page, NULL);
		if (rc == 0 && fflush(stdout) != 0)
			rc = -errno;
		rc = rc < 0 ? fail(c, "ls", argv[i], rc) : 0;
	}
	free(u.bucket);
	return rc;
}

static int cmd_stat(struct cli *c, int argc, char **argv)
{
	struct s3_object_info info = { 0 };
	struct uri u = { 0 };
	char when[32];
	size_t i;
	int rc;

	if (argc != 2 || parse_uri(argv[1], true, &u) < 0)
		return usage_error("stat: expected s3://BUCKET/KEY%s", NULL);
	rc = cli_connect(c, u.bucket);
	if (rc == 0) {
		rc = s3_head(c->s3, u.key, &info);
		if (rc < 0) {
			rc = fail(c, "stat", argv[1], rc);
		} else {
			format_time(info.mtime, when);
			printf("key: %s\nsize: %" PRIu64
			       "\netag: %s\nmtime: %s\ncontent-type: %s\n",
			       u.key, info.size, info.etag ? info.etag : "",
			       when,
			       info.content_type ? info.content_type : "");
			for (i = 0; i < info.n_meta; i++)
				printf("meta.%s: %s\n", info.meta[i].name,
				       info.meta[i].value);
		}
	}
	s3_object_info_release(&info);
	free(u.bucket);
	return rc;
}

struct fd_sink {
	int fd;
	uint64_t off;
	bool seekable;
};

static int fd_sink_write(void *ctx, const void *data, size_t len)
{
	struct fd_sink *s = ctx;
	const char *p = data;

	if (s->seekable) {
		int rc = pwrite_all(s->fd, data, len, (off_t)s->off);

		if (rc == 0)
			s->off += len;
		return rc;
	}
	while (len > 0) {
		ssize_t n = write(s->fd, p, len);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += n;
		len -= (size_t)n;
		s->off += (uint64_t)n;
	}
	return 0;
}

static int parse_range(const char *s, struct s3_get_opts *o)
{
	char *end;
	unsigned long long a, b;

	errno = 0;
	a = strtoull(s, &end, 10);
	if (errno || end == s || *end != '-' || s[0] == '-')
		return -EINVAL;
	o->offset = a;
	if (end[1] == '\0') {
		o->length = S3_TO_END;
		return 0;
	}
	s = end + 1;
	b = strtoull(s, &end, 10);
	if (errno || *end || s[0] == '-' || b < a)
		return -EINVAL;
	o->length = b - a + 1;
	return 0;
}

static int cmd_get(struct cli *c, int argc, char **argv)
{
	struct s3_get_opts go = { 0, S3_TO_END, NULL, NULL };
	struct fd_sink sink = { .fd = STDOUT_FILENO };
	struct s3_object_info info = { 0 };
	char tmp[PATH_MAX] = "";
	const char *dest = "-";
	struct uri u = { 0 };
	int i, rc;

	for (i = 1; i < argc && strncmp(argv[i], "--", 2) == 0; i++) {
		if (strcmp(argv[i], "--range") == 0 && i + 1 < argc) {
			if (parse_range(argv[++i], &go) < 0)
				return usage_error("get: bad range '%s': "
						   "expected A-B or A-",
						   argv[i]);
		} else if (strcmp(argv[i], "--if-match") == 0 && i + 1 < argc) {
			go.if_match = argv[++i];
		} else if (strcmp(argv[i], "--if-none-match") == 0 &&
			   i + 1 < argc) {
			go.if_none_match = argv[++i];
		} else {
			return usage_error("get: unknown flag '%s'", argv[i]);
		}
	}
	if (argc - i < 1 || argc - i > 2 || parse_uri(argv[i], true, &u) < 0)
		return usage_error("get: expected s3://BUCKET/KEY [FILE|-]%s",
				   NULL);
	if (argc - i == 2)
		dest = argv[i + 1];
	rc = cli_connect(c, u.bucket);
	if (rc != 0)
		goto out;
	if (strcmp(dest, "-") != 0) {
		/* written beside the target, renamed over it when complete */
		if ((size_t)snprintf(tmp, sizeof(tmp), "%s.s3tmp.XXXXXX",
				     dest) >= sizeof(tmp)) {
			rc = fail(c, "get: write", dest, -ENAMETOOLONG);
			goto out;
		}
		sink.fd = mkostemp(tmp, O_CLOEXEC);
		if (sink.fd < 0) {
			tmp[0] = '\0';
			rc = fail(c, "get: write", dest, -errno);
			goto out;
		}
		{
			mode_t mask = umask(0);

			umask(mask);
			fchmod(sink.fd, 0666 & ~mask);
		}
		sink.seekable = true;
	}
	rc = s3_get(c->s3, u.key, &go, fd_sink_write, &sink, &info);
	if (rc < 0) {
		rc = fail(c, "get", argv[i], rc);
		goto out;
	}
	if (info.not_modified) {
		/* the caller's copy is current: leave FILE as it is */
		log_info("'%s' not modified since ETag %s", argv[i],
			 go.if_none_match);
		rc = 0;
		goto out;
	}
	if (sink.seekable) {
		if (fsync(sink.fd) < 0 || close(sink.fd) < 0) {
			sink.fd = -1;
			rc = fail(c, "get: write", dest, -errno);
			goto out;
		}
		sink.fd = -1;
		if (rename(tmp, dest) < 0) {
			rc = fail(c, "get: rename to", dest, -errno);
			goto out;
		}
		tmp[0] = '\0';
	}
	rc = 0;
out:
	if (sink.seekable && sink.fd >= 0)
		close(sink.fd);
	if (tmp[0])
		unlink(tmp);
	s3_object_info_release(&info);
	free(u.bucket);
	return rc;
}

/* Copy standard input into an unlinked temporary file. */
static int spool_stdin(int *fd_out, uint64_t *len_out)
{
	char tmpl[] = "/tmp/s3cachefs-s3.XXXXXX";
	char chunk[1 << 16];
	uint64_t len = 0;
	int fd, rc = 0;

	fd = mkostemp(tmpl, O_CLOEXEC);
	if (fd < 0)
		return -errno;
	unlink(tmpl);
	for (;;) {
		ssize_t n = read(STDIN_FILENO, chunk, sizeof(chunk));

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			rc = -errno;
			break;
		}
		if (n == 0)
			break;
		rc = pwrite_all(fd, chunk, (size_t)n, (off_t)len);
		if (rc < 0)
			break;
		len += (uint64_t)n;
	}
	if (rc < 0) {
		close(fd);
		return rc;
	}
	*fd_out = fd;
	*len_out = len;
	return 0;
}

static int cmd_put(struct cli *c, int argc, char **argv)
{
	struct s3_meta meta[MAX_META];
	struct s3_put_opts po = { 0 };
	struct uri u = { 0 };
	struct stat st;
	uint64_t len = 0;
	char *etag = NULL;
	int i, fd = -1, rc;

	po.meta = meta;
	for (i = 1; i < argc && strncmp(argv[i], "--", 2) == 0; i++) {
		if (strcmp(argv[i], "--content-type") == 0 && i + 1 < argc) {
			po.content_type = argv[++i];
		} else if (strcmp(argv[i], "--meta") == 0 && i + 1 < argc) {
			char *eq = strchr(argv[++i], '=');

			if (!eq || eq == argv[i] || po.n_meta == MAX_META)
				return usage_error("put: bad --meta '%s': "
						   "expected NAME=VALUE",
						   argv[i]);
			*eq = '\0';
			meta[po.n_meta].name = argv[i];
			meta[po.n_meta].value = eq + 1;
			po.n_meta++;
		} else {
			return usage_error("put: unknown flag '%s'", argv[i]);
		}
	}
	if (argc - i != 2 || parse_uri(argv[i + 1], true, &u) < 0)
		return usage_error("put: expected FILE|- s3://BUCKET/KEY%s",
				   NULL);
	if (strcmp(argv[i], "-") == 0) {
		rc = spool_stdin(&fd, &len);
		if (rc < 0) {
			rc = fail(c, "put: read", "stdin", rc);
			goto out;
		}
	} else {
		fd = open(argv[i], O_RDONLY | O_CLOEXEC);
		if (fd < 0 || fstat(fd, &st) < 0) {
			rc = fail(c, "put: read", argv[i], -errno);
			goto out;
		}
		if (!S_ISREG(st.st_mode)) {
			rc = fail(c, "put: read", argv[i], -EISDIR);
			goto out;
		}
		len = (uint64_t)st.st_size;
	}
	rc = cli_connect(c, u.bucket);
	if (rc != 0)
		goto out;
	rc = s3_put_file(c->s3, u.key, fd, len, &po, &etag);
	rc = rc < 0 ? fail(c, "put", argv[i + 1], rc) : 0;
out:
	if (fd >= 0)
		close(fd);
	free(etag);
	free(u.bucket);
	return rc;
}

static int cmd_cp(struct cli *c, int argc, char **argv)
{
	struct uri a = { 0 }, b = { 0 };
	int rc;

	if (argc != 3 || parse_uri(argv[1], true, &a) < 0 ||
	    parse_uri(argv[2], true, &b) < 0) {
		free(a.bucket);
		return usage_error("cp: expected s3://BUCKET/SRC "
				   "s3://BUCKET/DST%s",
				   NULL);
	}
	if (strcmp(a.bucket, b.bucket) != 0) {
		free(a.bucket);
		free(b.bucket);
		return usage_error("cp: source and destination must be in one "
				   "bucket%s",
				   NULL);
	}
	rc = cli_connect(c, a.bucket);
	if (rc == 0) {
		rc = s3_copy(c->s3, a.key, b.key, NULL, NULL);
		rc = rc < 0 ? fail(c, "cp", argv[1], rc) : 0;
	}
	free(a.bucket);
	free(b.bucket);
	return rc;
}

struct key_list {
	char **keys;
	size_t n;
	size_t alloc;
};

static int key_list_add(struct key_list *l, const char *key)
{
	if (l->n == l->alloc) {
		size_t n = l->alloc ? l->alloc * 2 : 256;
		char **k = realloc(l->keys, n * sizeof(*k));

		if (!k)
			return -ENOMEM;
		l->keys = k;
		l->alloc = n;
	}
	l->keys[l->n] = strdup(key);
	if (!l->keys[l->n])
		return -ENOMEM;
	l->n++;
	return 0;
}

static int collect_keys(void *ctx, const struct s3_list_page *p)
{
	size_t i;
	int rc = 0;

	for (i = 0; i < p->n_entries && rc == 0; i++)
		rc = key_list_add(ctx, p->entries[i].key);
	return rc;
}

static int cmd_rm(struct cli *c, int argc, char **argv)
{
	struct key_list keys = { 0 };
	struct s3_delete_failure *failed = NULL;
	struct uri u = { 0 };
	bool recursive = false;
	size_t n_failed = 0, k;
	char *bucket = NULL;
	int i, first, rc = 0;

	for (i = 1; i < argc && argv[i][0] == '-'; i++) {
		if (strcmp(argv[i], "-r") == 0)
			recursive = true;
		else
			return usage_error("rm: unknown flag '%s'", argv[i]);
	}
	if (i == argc)
		return usage_error("rm: expected s3://BUCKET/KEY...%s", NULL);
	first = i;
	for (; i < argc; i++) {
		if (parse_uri(argv[i], !recursive, &u) < 0 ||
		    (bucket && strcmp(bucket, u.bucket) != 0)) {
			free(u.bucket);
			free(bucket);
			return usage_error("rm: bad or mixed-bucket URI '%s'",
					   argv[i]);
		}
		free(bucket);
		bucket = u.bucket;
		u.bucket = NULL;
	}
	rc = cli_connect(c, bucket);
	if (rc != 0)
		goto out;
	for (i = first; i < argc && rc == 0; i++) {
		const char *key = strchr(argv[i] + 5, '/');
		char *folder = NULL;

		key = key ? key + 1 : "";
		if (recursive) {
			/* "dir" means the folder dir/, never dir2/ or "dir" */
			if (*key && key[strlen(key) - 1] != '/') {
				if (asprintf(&folder, "%s/", key) < 0) {
					rc = fail(c, "rm", argv[i], -ENOMEM);
					break;
				}
				key = folder;
			}
			rc = s3_list_all(c->s3, key, NULL, collect_keys, &keys);
		} else {
			rc = key_list_add(&keys, key);
		}
		free(folder);
		if (rc < 0)
			rc = fail(c, "rm: list", argv[i], rc);
	}
	if (rc == 0 && keys.n == 1 && !recursive) {
		rc = s3_delete(c->s3, keys.keys[0]);
		rc = rc < 0 ? fail(c, "rm", argv[first], rc) : 0;
	} else if (rc == 0 && keys.n > 0) {
		rc = s3_delete_many(c->s3, (const char *const *)keys.keys,
				    keys.n, &failed, &n_failed);
		rc = rc < 0 ? fail(c, "rm", argv[first], rc) : 0;
	}
out:
	s3_delete_failures_free(failed, n_failed);
	for (k = 0; k < keys.n; k++)
		free(keys.keys[k]);
	free(keys.keys);
	free(bucket);
	return rc;
}

static int cmd_bucket(struct cli *c, int argc, char **argv, bool create)
{
	struct uri u = { 0 };
	int rc;

	if (argc != 2 || parse_uri(argv[1], false, &u) < 0 || *u.key) {
		free(u.bucket);
		return usage_error("%s: expected s3://BUCKET", argv[0]);
	}
	rc = cli_connect(c, u.bucket);
	if (rc == 0) {
		rc = create ? s3_create_bucket(c->s3) : s3_check_bucket(c->s3);
		if (rc < 0)
			rc = fail(c, argv[0], argv[1], rc);
		else if (!create)
			printf("ok: bucket '%s' answers with credentials from "
			       "%s\n",
			       u.bucket,
			       c->creds.source ? c->creds.source : "?");
	}
	free(u.bucket);
	return rc;
}

int main(int argc, char **argv)
{
	static const struct option long_opts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	struct buf err = BUF_INIT(4096);
	struct cli c = { 0 };
	enum log_level level;
	int opt, verbose = 0, rc;
	const char *cmd;

	log_init(PROG, LOG_LVL_WARN, false);
	if (options_init(&c.opts) < 0) {
		fprintf(stderr, PROG ": out of memory\n");
		return EXIT_FAIL;
	}
	if (options_load_env(&c.opts, environ, NULL, &err) < 0) {
		fprintf(stderr, PROG ": %s\n", buf_str(&err));
		rc = EXIT_USAGE;
		goto out;
	}
	/* options stop at the command: its own flags follow it */
	while ((opt = getopt_long(argc, argv, "+o:vhV", long_opts, NULL)) !=
	       -1) {
		switch (opt) {
		case 'o':
			if (options_parse_list(&c.opts, optarg, &err) < 0) {
				fprintf(stderr, PROG ": %s\n", buf_str(&err));
				rc = EXIT_USAGE;
				goto out;
			}
			break;
		case 'v':
			verbose++;
			break;
		case 'h':
			usage(stdout);
			options_help(stdout);
			rc = 0;
			goto out;
		case 'V':
			printf(PROG " " S3CACHEFS_VERSION " (%s)\n",
			       http_version());
			rc = 0;
			goto out;
		default:
			rc = usage_error("unknown flag%s", NULL);
			goto out;
		}
	}
	level = (enum log_level)c.opts.log_level;
	if (verbose && (int)level < (int)LOG_LVL_INFO + verbose - 1)
		level = (enum log_level)(LOG_LVL_INFO + verbose - 1);
	if (level > LOG_LVL_TRACE)
		level = LOG_LVL_TRACE;
	log_set_level(level);
	c.errors_before = log_error_count();
	if (optind >= argc) {
		rc = usage_error("missing command%s", NULL);
		goto out;
	}
	cmd = argv[optind];
	argc -= optind;
	argv += optind;
	if (strcmp(cmd, "ls") == 0)
		rc = cmd_ls(&c, argc, argv);
	else if (strcmp(cmd, "stat") == 0)
		rc = cmd_stat(&c, argc, argv);
	else if (strcmp(cmd, "get") == 0)
		rc = cmd_get(&c, argc, argv);
	else if (strcmp(cmd, "put") == 0)
		rc = cmd_put(&c, argc, argv);
	else if (strcmp(cmd, "cp") == 0)
		rc = cmd_cp(&c, argc, argv);
	else if (strcmp(cmd, "rm") == 0)
		rc = cmd_rm(&c, argc, argv);
	else if (strcmp(cmd, "mb") == 0)
		rc = cmd_bucket(&c, argc, argv, true);
	else if (strcmp(cmd, "check") == 0)
		rc = cmd_bucket(&c, argc, argv, false);
	else
		rc = usage_error("unknown command '%s'", cmd);
out:
	if (c.s3 && log_enabled(LOG_LVL_DEBUG)) {
		struct s3_stats st;
		uint64_t n = 0;
		int k;

		s3_get_stats(c.s3, &st);
		for (k = 0; k < S3_OP_COUNT; k++)
			n += st.requests[k];
		log_debug("stats: %" PRIu64 " requests over %" PRIu64
			  " connections, %" PRIu64 " retries, %" PRIu64
			  " bytes down, %" PRIu64 " bytes up",
			  n, st.connects, st.retries, st.bytes_down,
			  st.bytes_up);
	}
	s3_close(c.s3);
	creds_release(&c.creds);
	options_release(&c.opts);
	buf_release(&err);
	return rc;
}
