/*
 * ctl.c - s3cachefs-ctl, the tool for s3cachefs cache folders:
 *
 *   s3cachefs-ctl [-C CACHE_DIR] [-o OPT[,OPT...]]... COMMAND [ARGS]
 *
 * The commands themselves are admin.h's; this file finds the cache folder,
 * and runs the command where it must run:
 *
 *   - live: a mount holds the folder (its flock on CACHE_DIR/lock): the
 *     command goes to the daemon through CACHE_DIR/ctl.sock (ctlsrv.h),
 *     whose answer is printed as it streams in;
 *   - offline: nobody holds it: the tool takes the lock for the whole
 *     command (no mount can start meanwhile), opens the stores itself, with
 *     the limits and chunk size the last mount recorded, and runs the same
 *     command code in-process.
 *
 * Finding the folder: -C; else, when PATH arguments lie in an s3cachefs
 * mount (the longest mount point of type fuse.s3cachefs in
 * /proc/self/mountinfo that holds the path), the mount root's extended
 * attribute user.s3cachefs.cache_dir, the PATHs then being paths of the
 * mount; else, for stats and ls, every cache folder under the default
 * root (/var/cache/s3cachefs for root, else ${XDG_CACHE_HOME:-~/.cache}/
 * s3cachefs), one report each.
 *
 * Output: on a terminal, warm draws a progress bar; otherwise it prints one
 * line per object warmed.  Every failure is exactly one line on stderr,
 * "s3cachefs-ctl: ...".  Exit status: 0 done, 1 failed, 2 wrong command
 * line.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include "s3cachefs/admin.h"
#include "s3cachefs/buf.h"
#include "s3cachefs/cache.h"
#include "s3cachefs/chunk.h"
#include "s3cachefs/creds.h"
#include "s3cachefs/crypt.h"
#include "s3cachefs/ctlsrv.h"
#include "s3cachefs/http.h"
#include "s3cachefs/log.h"
#include "s3cachefs/strutil.h"
#include "s3cachefs/meta.h"
#include "s3cachefs/options.h"
#include "s3cachefs/s3.h"

#define PROG "s3cachefs-ctl"
#define EXIT_FAIL 1
#define EXIT_USAGE 2
#define XATTR_CACHE_DIR "user.s3cachefs.cache_dir"
#define FSTYPE "fuse.s3cachefs"

extern char **environ;

/* What one run of the tool works with. */
struct tool {
	struct options o;
	struct admin_cmd cmd;
	bool tty;	     /* stdout is a terminal */
	bool bar;	     /* a progress bar is drawn (no newline yet) */
	int64_t bar_t0;	     /* when the first progress came, ms */
	struct buf *collect; /* several caches, JSON: lines gathered here */
};

static void usage(FILE *f)
{
	fprintf(f,
		"usage: " PROG " [-C CACHE_DIR] [-o OPT[,OPT...]]... COMMAND "
		"[ARGS]\n"
		"\n"
		"Inspect and manage s3cachefs cache folders, mounted or not.\n"
		"\n"
		"commands:\n"
		"  stats [--json]             entries, bytes, hit rate, "
		"evictions, transfers,\n"
		"                             requests by kind, over the "
		"cache's life\n"
		"  ls [--json] [PREFIX]       cached objects: cached bytes, "
		"size, chunks, key\n"
		"  clear [PREFIX]             drop cached data (files being "
		"written are kept)\n"
		"  gc [--older-than DURATION] enforce the cap, "
		"cache_max_entries and\n"
		"                             cache_max_age (or DURATION) now; "
		"remove orphans\n"
		"  verify                     check every chunk, drop bad "
		"ones\n"
		"  warm PATH...               fetch objects or whole folders "
		"into the cache\n"
		"  evict PATH...              drop the cached data of objects "
		"or folders\n"
		"  rotate-key --new-key-file FILE | --decrypt\n"
		"                             re-encrypt an unmounted cache "
		"(chunks and\n"
		"                             staged files) from the key of "
		"key_file= or\n"
		"                             $" CRYPT_KEY_ENV " (none: plain) "
		"to FILE's, or to plain\n"
		"\n"
		"  -C CACHE_DIR   the cache folder; without it, PATHs inside a "
		"mount find it,\n"
		"                 and stats and ls report every folder under "
		"the default root\n"
		"  -o OPT,...     the daemon's options (endpoint, credentials, "
		"...: offline warm);\n"
		"                 also S3CACHEFS_<NAME> variables and -o "
		"config=FILE\n"
		"  -h, --help     this help;  -V, --version  the version\n"
		"\n"
		"With -C, PATH is a key or key prefix of the bucket (a "
		"trailing '/' or an\n"
		"existing folder means everything below); inside a mount, a "
		"file or folder.\n"
		"A mounted folder is worked on by its daemon; an unmounted "
		"one by this tool,\n"
		"which locks it meanwhile and applies the cap, limits and "
		"chunk size the\n"
		"last mount recorded (the options' when none was).\n"
		"\n"
		"stats --json prints one object (an array of them for several "
		"folders):\n"
		"  cache_dir, bucket, endpoint, mounted, entries (objects), "
		"chunks,\n"
		"  bytes_on_disk, logical_bytes, cap_bytes, max_entries, "
		"max_age_ms,\n"
		"  staged_files, hit_rate, hits, misses, admitted, evictions, "
		"evicted_bytes,\n"
		"  expired, corrupt, wrong_key, disk_errors, bytes_downloaded, "
		"bytes_uploaded, retries,\n"
		"  errors, requests {head, get, put, list, copy, delete, "
		"multipart, other}.\n"
		"ls --json prints an array of {key, etag, size, cached_bytes, "
		"chunks,\n"
		"  disk_bytes} (for several folders: [{cache_dir, objects}]).\n"
		"\n"
		"Exit status: 0 done, 1 failed, 2 wrong command line.\n\n");
}

static int usage_error(const char *fmt, const char *arg)
{
	fprintf(stderr, PROG ": ");
	fprintf(stderr, fmt, arg ? arg : "");
	fprintf(stderr, " (see '" PROG " --help')\n");
	return EXIT_USAGE;
}

static __attribute__((format(printf, 1, 2))) int fail(const char *fmt, ...)
{
	va_list ap;

	fputs(PROG ": ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return EXIT_FAIL;
}

static int64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- output ---- */

static void bar_end(struct tool *t)
{
	if (t->bar) {
		fputs("\r\033[K", stdout);
		t->bar = false;
	}
}

static void draw_bar(struct tool *t, const char *text)
{
	unsigned long long od, ot, bd, bt;
	char bar[31];
	double secs, frac;
	int i, fill;

	if (sscanf(text, "%llu %llu %llu %llu", &od, &ot, &bd, &bt) != 4)
		return;
	if (!t->bar_t0)
		t->bar_t0 = mono_ms();
	secs = (double)(mono_ms() - t->bar_t0) / 1000.0;
	frac = bt ? (double)bd / (double)bt : ot ? (double)od / (double)ot : 1;
	fill = (int)(frac * 30.0);
	for (i = 0; i < 30; i++)
		bar[i] = i < fill ? '#' : '.';
	bar[30] = '\0';
	printf("\r[%s] %llu/%llu objects, %.1f/%.1f MiB, %.1f MiB/s\033[K", bar,
	       od, ot, (double)bd / 1048576.0, (double)bt / 1048576.0,
	       secs > 0 ? (double)bd / 1048576.0 / secs : 0.0);
	fflush(stdout);
	t->bar = true;
}

static int emit_tool(void *ctx, enum admin_line kind, const char *text)
{
	struct tool *t = ctx;

	switch (kind) {
	case ADMIN_PROGRESS:
		if (t->tty)
			draw_bar(t, text);
		return 0;
	case ADMIN_ITEM:
		if (t->tty)
			return 0;
		break;
	case ADMIN_ERR:
		bar_end(t);
		fflush(stdout);
		fprintf(stderr, PROG ": %s\n", text);
		return 0;
	case ADMIN_OUT:
		break;
	}
	bar_end(t);
	if (t->collect) {
		buf_adds(t->collect, text);
		return 0;
	}
	if (puts(text) < 0 || (!t->tty && ferror(stdout)))
		return -EPIPE;
	if (t->tty)
		fflush(stdout);
	return 0;
}

/* ---- live: through the mount's socket ---- */

/*
 * Read the daemon's answer on @fd, line by line, to the end: the command's
 * result, or -ECONNRESET when it was cut.
 */
static int read_answer(struct tool *t, int fd)
{
	struct buf line = BUF_INIT(1 << 20);
	char chunk[4096], *nl, *p;
	enum admin_line kind;
	bool have_status = false;
	int status = -ECONNRESET;
	ssize_t n;
	size_t off;

	for (;;) {
		n = read(fd, chunk, sizeof(chunk));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		off = 0;
		while (off < (size_t)n) {
			p = chunk + off;
			nl = memchr(p, '\n', (size_t)n - off);
			if (buf_add(&line, p,
				    nl ? (size_t)(nl - p) : (size_t)n - off) <
			    0)
				goto out;
			if (!nl)
				break;
			off = (size_t)(nl - chunk) + 1;
			p = line.data ? line.data : (char *)"";
			if (line.len >= 2 && p[1] == ' ') {
				kind = p[0] == 'i'   ? ADMIN_ITEM
				       : p[0] == 'p' ? ADMIN_PROGRESS
				       : p[0] == 'e' ? ADMIN_ERR
						     : ADMIN_OUT;
				if (p[0] == 's') {
					status = atoi(p + 2);
					have_status = true;
				} else {
					emit_tool(t, kind, p + 2);
				}
			}
			buf_reset(&line);
		}
	}
out:
	buf_release(&line);
	return have_status ? status : -ECONNRESET;
}

static int run_live(struct tool *t, const char *dir)
{
	struct buf req = BUF_INIT(BUF_NO_LIMIT);
	int fd = -1, rc;

	rc = ctlsrv_connect(dir, &fd);
	if (rc < 0) {
		fail("cache folder '%s' is in use by a mount that does not "
		     "answer on its control socket: %s",
		     dir, strerror(-rc));
		goto out;
	}
	rc = admin_encode(&t->cmd, &req);
	if (rc == 0)
		rc = buf_addc(&req, '\n');
	if (rc == 0 && write(fd, req.data, req.len) != (ssize_t)req.len)
		rc = errno ? -errno : -EIO;
	if (rc < 0) {
		fail("cannot send the command to the mount of '%s': %s", dir,
		     strerror(-rc));
		goto out;
	}
	rc = read_answer(t, fd);
	bar_end(t);
	if (rc == -ECONNRESET)
		fail("the mount of '%s' ended the command early", dir);
out:
	if (fd >= 0)
		close(fd);
	buf_release(&req);
	return rc;
}

/* ---- offline: in-process ---- */

/* Split "ENDPOINT|BUCKET" (the last '|'); the strings are owned. */
static int split_source(const char *src, char **endpoint, char **bucket)
{
	const char *bar = strrchr(src, '|');

	if (!bar || !bar[1])
		return -EINVAL;
	*endpoint = strndup(src, (size_t)(bar - src));
	*bucket = strdup(bar + 1);
	return *endpoint && *bucket ? 0 : -ENOMEM;
}

/* The S3 client for offline warm: 0 or an exit status (said). */
static int open_s3(struct tool *t, const char *endpoint, const char *bucket,
		   struct s3_creds *creds, struct s3 **out)
{
	struct buf err = BUF_INIT(4096);
	unsigned long before = log_error_count();
	struct creds_conf cc;
	struct s3_conf conf;
	char *ep;
	int rc;

	/* chunks are named by the endpoint the mount used */
	ep = strdup(endpoint);
	if (!ep)
		return fail("out of memory");
	free(t->o.endpoint);
	t->o.endpoint = ep[0] ? ep : NULL;
	if (!ep[0])
		free(ep);
	rc = options_to_s3_conf(&t->o, bucket, &conf, &cc, &err);
	if (rc < 0) {
		fprintf(stderr, PROG ": %s\n", buf_str(&err));
		buf_release(&err);
		return EXIT_USAGE;
	}
	buf_release(&err);
	rc = creds_resolve(&cc, creds);
	if (rc == 0) {
		if (!conf.region && creds->region)
			conf.region = creds->region;
		rc = s3_open(&conf, creds, out);
	}
	if (rc < 0) {
		if (log_error_count() == before)
			fail("connect to bucket '%s': %s", bucket,
			     strerror(-rc));
		return EXIT_FAIL;
	}
	return 0;
}

static char *join(const char *dir, const char *leaf)
{
	char *p = NULL;

	if (asprintf(&p, "%s/%s", dir, leaf) < 0)
		return NULL;
	return p;
}

static int run_offline(struct tool *t, const char *dir)
{
	struct chunk_store_conf csc = { 0 };
	struct cache_conf cac = { 0 };
	struct admin_conf ac = { 0 };
	struct meta_conf mc = { 0 };
	struct s3_creds creds = { 0 };
	unsigned long before = log_error_count();
	char *db = join(dir, "meta.db"), *chunks = join(dir, "chunks");
	char *source = NULL, *endpoint = NULL, *bucket = NULL;
	struct chunk_store *cs = NULL;
	struct cache *c = NULL;
	struct admin *a = NULL;
	struct meta *m = NULL;
	struct s3 *s3 = NULL;
	uint64_t level;
	int rc;

	if (!db || !chunks) {
		rc = fail("out of memory");
		goto out;
	}
	mc.path = db;
	rc = meta_open(&mc, &m);
	if (rc < 0) {
		rc = log_error_count() == before
			     ? fail("cannot open the metadata in '%s': %s", dir,
				    strerror(-rc))
			     : EXIT_FAIL;
		goto out;
	}
	rc = meta_info_get(m, "source", &source);
	if (rc == 0)
		rc = split_source(source, &endpoint, &bucket);
	if (rc < 0) {
		rc = fail("'%s' is not an s3cachefs cache folder: no bucket "
			  "recorded",
			  dir);
		goto out;
	}
	/* what the last mount used, else the options */
	cac.cap_bytes = t->o.cache_size;
	cac.min_free_bytes = t->o.cache_min_free;
	cac.max_entries = t->o.cache_max_entries;
	cac.max_age_ms = t->o.cache_max_age_ms;
	ac.chunk_size = t->o.chunk_size;
	level = (uint64_t)options_compress_level(t->o.compress);
	admin_recorded(m, "cache_size", &cac.cap_bytes);
	admin_recorded(m, "cache_min_free", &cac.min_free_bytes);
	admin_recorded(m, "cache_max_entries", &cac.max_entries);
	admin_recorded(m, "cache_max_age_ms", &cac.max_age_ms);
	admin_recorded(m, "chunk_size", &ac.chunk_size);
	admin_recorded(m, "compress_level", &level);
	csc.dir = chunks;
	csc.compress_level = level <= 9 ? (int)level : 0;
	rc = chunk_store_open(&csc, &cs);
	if (rc == 0) {
		cac.dir = dir;
		cac.high_pct = 95;
		cac.low_pct = 85;
		rc = cache_open(&cac, m, cs, &c);
	}
	if (rc < 0) {
		rc = log_error_count() == before
			     ? fail("cannot open the cache in '%s': %s", dir,
				    strerror(-rc))
			     : EXIT_FAIL;
		goto out;
	}
	if (t->cmd.kind == ADMIN_WARM) {
		rc = open_s3(t, endpoint, bucket, &creds, &s3);
		if (rc != 0)
			goto out;
	}
	ac.cache_dir = dir;
	ac.source = source;
	ac.endpoint = endpoint;
	ac.bucket = bucket;
	ac.prefix = "";
	ac.meta_ttl_ms = t->o.meta_ttl_ms;
	ac.parallel = (unsigned)t->o.parallel;
	ac.caller_sees_log = true;
	rc = admin_new(&ac, m, cs, c, s3, &a);
	if (rc < 0) {
		rc = fail("cannot start on '%s': %s", dir, strerror(-rc));
		goto out;
	}
	rc = admin_run(a, &t->cmd, emit_tool, t) < 0 ? EXIT_FAIL : 0;
	bar_end(t);
out:
	admin_free(a); /* flushes the counters: before the cache goes */
	cache_close(c);
	chunk_store_close(cs);
	meta_close(m);
	s3_close(s3);
	creds_release(&creds);
	free(source);
	free(endpoint);
	free(bucket);
	free(db);
	free(chunks);
	return rc;
}

/* ---- one folder ---- */

static int run_dir(struct tool *t, const char *dir)
{
	char *lock = join(dir, "lock"), *db = join(dir, "meta.db");
	struct stat st;
	int fd = -1, rc;

	if (!lock || !db) {
		rc = fail("out of memory");
		goto out;
	}
	if (stat(dir, &st) < 0) {
		rc = fail("cache folder '%s': %s", dir, strerror(errno));
		goto out;
	}
	if (!S_ISDIR(st.st_mode)) {
		rc = fail("cache folder '%s' is not a folder", dir);
		goto out;
	}
	if (access(db, F_OK) < 0) {
		rc = fail("'%s' is not an s3cachefs cache folder: no meta.db",
			  dir);
		goto out;
	}
	fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0) {
		rc = fail("cannot open '%s': %s", lock, strerror(errno));
		goto out;
	}
	if (flock(fd, LOCK_EX | LOCK_NB) == 0) {
		rc = run_offline(t, dir);
	} else if (errno == EWOULDBLOCK) {
		rc = run_live(t, dir) < 0 ? EXIT_FAIL : 0;
	} else {
		rc = fail("cannot lock '%s': %s", lock, strerror(errno));
	}
out:
	if (fd >= 0)
		close(fd); /* releases the lock */
	free(lock);
	free(db);
	return rc;
}

/* ---- finding the folder ---- */

/* The longest s3cachefs mount point holding @path, or NULL (owned). */
static char *mount_of(const char *path)
{
	FILE *f = fopen("/proc/self/mountinfo", "re");
	char *line = NULL, *best = NULL, *mp, *sep, *save;
	size_t cap = 0, n, best_len = 0;
	int i;

	if (!f)
		return NULL;
	while (getline(&line, &cap, f) > 0) {
		mp = NULL;
		strtok_r(line, " ", &save);
		for (i = 1; i < 5; i++)
			mp = strtok_r(NULL, " ", &save);
		sep = strstr(save ? save : "", " - ");
		if (!mp || !sep || strncmp(sep + 3, FSTYPE " ", 15) != 0)
			continue;
		unescape_octal(mp);
		n = strlen(mp);
		if (strncmp(path, mp, n) != 0 ||
		    (path[n] != '/' && path[n] != '\0' && strcmp(mp, "/")))
			continue;
		if (n > best_len || !best) {
			free(best);
			best = strdup(mp);
			best_len = n;
		}
	}
	free(line);
	fclose(f);
	return best;
}

/* realpath of @p, or of its parent plus its last name when it is gone. */
static char *real_path(const char *p)
{
	char *r = realpath(p, NULL), *copy, *parent, *out = NULL;

	if (r || errno != ENOENT)
		return r;
	copy = strdup(p);
	if (!copy)
		return NULL;
	parent = realpath(dirname(copy), NULL);
	free(copy);
	copy = strdup(p);
	if (parent && copy &&
	    asprintf(&out, "%s/%s", strcmp(parent, "/") ? parent : "",
		     basename(copy)) < 0)
		out = NULL;
	free(parent);
	free(copy);
	return out;
}

/*
 * The cache folder of the mount holding the targets, which become paths of
 * that mount.  0 with *dir (owned), -1 when the first target is in no
 * mount, or an exit status (said).
 */
static int dir_from_mount(struct tool *t, char **dir)
{
	char *mnt = NULL, *real = NULL, *m, *rel, *v = NULL, buf[PATH_MAX];
	struct stat st;
	ssize_t n;
	size_t i;
	int rc = 0;

	for (i = 0; i < t->cmd.n && rc == 0; i++) {
		free(real);
		real = real_path(t->cmd.targets[i]);
		m = real ? mount_of(real) : NULL;

		if (!m) {
			rc = i == 0 ? -1
				    : fail("'%s' is not in the same mount as "
					   "'%s'",
					   t->cmd.targets[i],
					   t->cmd.targets[0]);
			break;
		}
		if (mnt && strcmp(mnt, m) != 0) {
			free(m);
			rc = fail("'%s' is not in the same mount as '%s'",
				  t->cmd.targets[i], t->cmd.targets[0]);
			break;
		}
		free(mnt);
		mnt = m;
		rel = real + strlen(mnt);
		while (*rel == '/')
			rel++;
		/* a folder means everything below it */
		if (stat(real, &st) == 0 && S_ISDIR(st.st_mode) && *rel) {
			if (asprintf(&v, "%s/", rel) < 0)
				v = NULL;
		} else {
			v = strdup(rel);
		}
		if (!v) {
			rc = fail("out of memory");
			break;
		}
		free(t->cmd.targets[i]);
		t->cmd.targets[i] = v;
		v = NULL;
	}
	if (rc == 0) {
		n = getxattr(mnt, XATTR_CACHE_DIR, buf, sizeof(buf) - 1);
		if (n <= 0) {
			rc = fail("mount '%s' does not tell its cache folder "
				  "(%s): give -C CACHE_DIR",
				  mnt, n < 0 ? strerror(errno) : "empty");
		} else {
			buf[n] = '\0';
			*dir = strdup(buf);
			t->cmd.in_mount = true;
			if (!*dir)
				rc = fail("out of memory");
		}
	}
	free(mnt);
	free(real);
	return rc;
}

/* The default root of cache folders (owned), as the daemon picks it. */
static char *default_root(void)
{
	const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
	struct passwd *pw;
	char *p = NULL;

	if (geteuid() == 0)
		return strdup("/var/cache/s3cachefs");
	if (xdg && xdg[0] == '/')
		return join(xdg, "s3cachefs");
	if (!home || home[0] != '/') {
		pw = getpwuid(getuid());
		home = pw ? pw->pw_dir : NULL;
	}
	if (home && asprintf(&p, "%s/.cache/s3cachefs", home) < 0)
		p = NULL;
	return p;
}

static int by_name(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Every folder of the default root, one report each. */
static int run_all(struct tool *t)
{
	char *root = default_root(), **dirs = NULL, **v, *db;
	struct buf out = BUF_INIT(BUF_NO_LIMIT);
	size_t n = 0, i;
	struct dirent *de;
	DIR *d;
	int rc = 0, r;

	if (!root)
		return fail("no home folder: give -C CACHE_DIR");
	d = opendir(root);
	while (d && (de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		v = realloc(dirs, (n + 1) * sizeof(*v));
		if (!v)
			break;
		dirs = v;
		dirs[n] = join(root, de->d_name);
		db = dirs[n] ? join(dirs[n], "meta.db") : NULL;
		if (db && access(db, F_OK) == 0)
			n++;
		else
			free(dirs[n]);
		free(db);
	}
	if (d)
		closedir(d);
	if (n == 0) {
		rc = fail("no cache folder in '%s': give -C CACHE_DIR", root);
		goto out;
	}
	qsort(dirs, n, sizeof(*dirs), by_name);
	if (t->cmd.json)
		buf_addc(&out, '[');
	for (i = 0; i < n; i++) {
		if (t->cmd.json) {
			struct buf one = BUF_INIT(BUF_NO_LIMIT);

			t->collect = &one;
			r = run_dir(t, dirs[i]);
			t->collect = NULL;
			if (r == 0 && one.len) {
				if (out.len > 1)
					buf_addc(&out, ',');
				if (t->cmd.kind == ADMIN_LS) {
					buf_adds(&out, "{\"cache_dir\":");
					admin_json_str(&out, dirs[i]);
					buf_addf(&out, ",\"objects\":%s}",
						 buf_str(&one));
				} else {
					buf_adds(&out, buf_str(&one));
				}
			}
			buf_release(&one);
		} else {
			if (i)
				putchar('\n');
			if (t->cmd.kind == ADMIN_LS)
				printf("%s:\n", dirs[i]);
			r = run_dir(t, dirs[i]);
		}
		if (r != 0)
			rc = r;
	}
	if (t->cmd.json) {
		buf_addc(&out, ']');
		puts(buf_str(&out));
	}
out:
	for (i = 0; i < n; i++)
		free(dirs[i]);
	free(dirs);
	free(root);
	buf_release(&out);
	return rc;
}

/* ---- options ---- */

/* S3CACHEFS_* variables that are not options. */
static const char *const ignored_env[] = { CRYPT_KEY_ENV, "S3CACHEFS_BIN",
					   NULL };

/* ---- rotate-key ---- */

/*
 * rotate-key --new-key-file FILE | --decrypt, on the unmounted folder
 * @dir: the old key is the daemon's (key_file=, else the variable, else
 * none: plain chunks).  Returns the exit status.
 */
static int rotate_key(struct tool *t, const char *dir, int argc, char **argv)
{
	struct crypt_key old_key, new_key;
	struct crypt_rekey_stats st = { 0 };
	struct buf err = BUF_INIT(4096);
	char *env = getenv(CRYPT_KEY_ENV);
	const char *new_file = NULL;
	bool have_old = false, have_new = false, decrypt = false;
	unsigned long before;
	int i, rc = 0;

	for (i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--decrypt") == 0)
			decrypt = true;
		else if (strcmp(argv[i], "--new-key-file") == 0 && i + 1 < argc)
			new_file = argv[++i];
		else
			return usage_error("rotate-key: unexpected '%s'",
					   argv[i]);
	}
	if (!dir)
		return usage_error("rotate-key works on an unmounted cache: "
				   "give -C CACHE_DIR%s",
				   "");
	if (decrypt == (new_file != NULL))
		return usage_error("rotate-key needs --new-key-file FILE or "
				   "--decrypt%s",
				   "");
	if (t->o.key_file && t->o.key_file[0])
		rc = crypt_key_from_file(t->o.key_file, &old_key, &err);
	else if (env && *env)
		rc = crypt_key_from_hex(env, &old_key, &err);
	have_old = rc == 0 &&
		   ((t->o.key_file && t->o.key_file[0]) || (env && *env));
	if (rc == 0 && new_file) {
		rc = crypt_key_from_file(new_file, &new_key, &err);
		have_new = rc == 0;
	}
	if (rc < 0) {
		rc = fail("%s", buf_str(&err));
		goto out;
	}
	before = log_error_count();
	rc = crypt_rekey_cache(dir, have_old ? &old_key : NULL,
			       have_new ? &new_key : NULL, &st);
	if (rc < 0 && log_error_count() != before) {
		rc = EXIT_FAIL; /* the library said why, in one line */
	} else if (rc == -EBUSY) {
		rc = fail("cache folder '%s' is mounted: unmount it first "
			  "(the mount holds the key)",
			  dir);
	} else if (rc == -EKEYREJECTED) {
		rc = fail("cache folder '%s' holds staged files under another "
			  "key: give that one as key_file= (nothing changed)",
			  dir);
	} else if (rc < 0) {
		rc = fail("rotate-key in '%s': %s", dir, strerror(-rc));
	} else {
		printf("rotated to %s%s: %" PRIu64
		       " chunks re-encrypted, %" PRIu64
		       " dropped (not readable with the old key), %" PRIu64
		       " staged files, %" PRIu64 " already done\n",
		       have_new ? "key id " : "plain",
		       have_new ? new_key.id_hex : "", st.chunks_done,
		       st.chunks_dropped, st.staging_done, st.skipped);
		rc = 0;
	}
out:
	if (have_old)
		crypt_key_release(&old_key);
	if (have_new)
		crypt_key_release(&new_key);
	if (env)
		explicit_bzero(env, strlen(env));
	buf_release(&err);
	return rc;
}

/* Defaults < config file < environment < -o lists. */
static int load_options(struct tool *t, char **lists, size_t n)
{
	struct buf err = BUF_INIT(4096);
	char *config = NULL;
	size_t i;
	int rc = 0, pass;

	for (pass = 0; pass < 2 && rc == 0; pass++) {
		if (pass == 1) {
			if (!t->o.config || !t->o.config[0])
				break;
			config = strdup(t->o.config);
			options_release(&t->o);
			if (!config || options_init(&t->o) < 0) {
				buf_adds(&err, "out of memory");
				rc = -ENOMEM;
				break;
			}
			rc = options_load_file(&t->o, config, &err);
			if (rc == -ENOENT)
				buf_addf(&err, "config file '%s': no such file",
					 config);
			if (rc < 0)
				break;
		}
		rc = options_load_env(&t->o, environ, ignored_env, &err);
		for (i = 0; i < n && rc == 0; i++)
			rc = options_parse_list(&t->o, lists[i], &err);
	}
	if (rc < 0)
		fprintf(stderr, PROG ": %s\n", buf_str(&err));
	free(config);
	buf_release(&err);
	return rc < 0 ? EXIT_USAGE : 0;
}

int main(int argc, char **argv)
{
	static const struct option long_opts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	struct buf err = BUF_INIT(4096);
	struct tool t = { 0 };
	char **lists = NULL, **v, *dir = NULL, flag[3] = "-?";
	const char *cdir = NULL;
	size_t nlists = 0;
	int opt, rc = 0;

	log_init(PROG, LOG_LVL_WARN, false);
	if (options_init(&t.o) < 0)
		return fail("out of memory");
	opterr = 0;
	while ((opt = getopt_long(argc, argv, "+C:o:hV", long_opts, NULL)) !=
	       -1) {
		switch (opt) {
		case 'C':
			cdir = optarg;
			break;
		case 'o':
			v = realloc(lists, (nlists + 1) * sizeof(*v));
			if (!v) {
				rc = fail("out of memory");
				goto out;
			}
			lists = v;
			lists[nlists++] = optarg;
			break;
		case 'h':
			usage(stdout);
			goto out;
		case 'V':
			printf(PROG " " S3CACHEFS_VERSION " (%s)\n",
			       http_version());
			goto out;
		default:
			flag[1] = (char)optopt;
			if (optopt == 'C' || optopt == 'o')
				rc = usage_error("flag '%s' needs a value",
						 flag);
			else
				rc = usage_error("unknown flag '%s'",
						 optopt ? flag
							: argv[optind - 1]);
			goto out;
		}
	}
	rc = load_options(&t, lists, nlists);
	if (rc != 0)
		goto out;
	log_set_level((enum log_level)t.o.log_level);
	if (optind < argc && strcmp(argv[optind], "rotate-key") == 0) {
		rc = rotate_key(&t, cdir, argc - optind, argv + optind);
		goto out;
	}
	if (admin_parse(argc - optind, argv + optind, &t.cmd, &err) < 0) {
		rc = usage_error("%s", buf_str(&err));
		goto out;
	}
	t.tty = isatty(STDOUT_FILENO);
	if (cdir) {
		rc = run_dir(&t, cdir);
		goto out;
	}
	rc = t.cmd.n ? dir_from_mount(&t, &dir) : -1;
	if (rc == 0) {
		rc = run_dir(&t, dir);
	} else if (rc == -1) {
		if (t.cmd.kind == ADMIN_STATS ||
		    (t.cmd.kind == ADMIN_LS && t.cmd.n == 0))
			rc = run_all(&t);
		else if (t.cmd.n)
			rc = usage_error("'%s' is not in an s3cachefs mount: "
					 "give -C CACHE_DIR",
					 t.cmd.targets[0]);
		else
			rc = usage_error("which cache? give -C CACHE_DIR%s",
					 "");
	}
out:
	if (fflush(stdout) != 0 && rc == 0)
		rc = EXIT_FAIL;
	admin_cmd_release(&t.cmd);
	options_release(&t.o);
	buf_release(&err);
	free(lists);
	free(dir);
	return rc;
}
