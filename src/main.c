/*
 * main.c - s3cachefs, the daemon: the composition root.
 *
 *   s3cachefs BUCKET[:/PREFIX] MOUNTPOINT [-f] [-d] [-o OPT[,OPT...]]...
 *
 * Options are applied in this order, the last one winning: the table's
 * defaults, the config file (config= from the environment or -o, else
 * ~/.config/s3cachefs/config for a user, else /etc/s3cachefs.conf, when
 * it exists), S3CACHEFS_* environment variables, then each -o list in
 * turn.
 * The generic options mount(8) and fstab pass (rw, nosuid, _netdev, ...) are
 * accepted; nosuid, nodev and noexec reach the kernel, the rest is dropped.
 *
 * Startup builds, in this order, and teardown frees in reverse: logging;
 * options; credentials and the S3 client; a check of the bucket; the cache
 * folder and its lock; the metadata store; the chunk store; the cache; the
 * vfs; the FUSE adapter and its mount; s3cachefs-ctl's control socket
 * (stopped first, before the mount goes).  Then requests are served until the
 * file system is unmounted or SIGTERM, SIGINT or SIGHUP arrives, the stats
 * line is logged, and the process exits 0.
 *
 * Errors: every failure prints exactly one line, "s3cachefs: ...", on
 * stderr; the library logs what it understands and this file says the
 * rest (log_error_count() tells which happened).  Exit status 1 for a
 * runtime failure, 2 for a wrong command line or option.
 *
 * Daemonizing.  Without -f the process forks before it builds anything: the
 * cache and the vfs start threads, which a fork after them would lose.  The
 * child does all the work with the terminal's stderr, so startup errors
 * still reach the user; once mounted it detaches (setsid, syslog, /dev/null)
 * and tells the parent, which then exits 0.  If the child exits first, the
 * parent exits with its status.
 *
 * The mount point must exist, be a folder, not be mounted on already, and
 * be empty (unless -o nonempty); a dead FUSE mount there is named as such.
 * The process runs with umask 077: the cache folder is made 0700 (also
 * when it exists with wider bits) and every file in it is 0600.  A cache
 * folder owned by another user is refused.
 * cache=memory puts the cache in a private folder of /dev/shm (RAM),
 * removed at exit, with no free-space floor: cache_size is its limit.
 *
 * S3 unreachable at startup: when the cache folder already holds a metadata
 * store, the mount goes on with a warning and serves what is cached; with no
 * cache to serve, it is fatal.
 *
 * Encryption at rest (store/crypt.h): encrypt=aes-256-gcm takes its key from
 * key_file=, else from $S3CACHEFS_ENCRYPTION_KEY (wiped from the
 * environment once read); neither is exit status 2.  encrypt=ephemeral
 * makes a random key for this mount only: at unmount, after the writeback
 * has uploaded what it can, every staged file still not uploaded is logged
 * as an error (one line per key: it is lost with the key) and the cache
 * folder's whole content (chunks, staging, meta.db) is deleted but the
 * lock file.  The key goes to the chunk store and, through the vfs, to the
 * writeback; it is never logged (its id is).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <pwd.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "s3cachefs/admin.h"
#include "s3cachefs/buf.h"
#include "s3cachefs/cache.h"
#include "s3cachefs/chunk.h"
#include "s3cachefs/creds.h"
#include "s3cachefs/ctlsrv.h"
#include "s3cachefs/crypt.h"
#include "s3cachefs/fs.h"
#include "s3cachefs/http.h"
#include "s3cachefs/log.h"
#include "s3cachefs/meta.h"
#include "s3cachefs/options.h"
#include "s3cachefs/s3.h"
#include "s3cachefs/strutil.h"
#include "s3cachefs/vfs.h"

#define PROG "s3cachefs"
#define DEFAULT_CONFIG "/etc/s3cachefs.conf"
/* cache=memory: a private folder on this tmpfs (RAM) */
#define MEMORY_DIR "/dev/shm"
#define EXIT_FAIL 1
#define EXIT_USAGE 2

/* FUSE worker threads: requests wait on S3, so more than libfuse's 10. */
#define MAX_THREADS 32
/* Hex digits of SHA-256("ENDPOINT|BUCKET") naming the default cache. */
#define CACHE_ID_LEN 12

extern char **environ;

/* S3CACHEFS_* variables that are not options: the key is a secret. */
static const char *const ignored_env[] = { CRYPT_KEY_ENV, "S3CACHEFS_BIN",
					   NULL };

/*
 * Mount options of mount(8) and fstab that mean nothing here: accepted and
 * dropped.  rw, ro, [no]suid, [no]dev and [no]exec are handled apart.
 */
static const char *const generic_opts[] = {
	"auto",		 "noauto",   "user",	   "nouser",	 "users",
	"owner",	 "group",    "_netdev",	   "nofail",	 "defaults",
	"atime",	 "noatime",  "relatime",   "norelatime", "strictatime",
	"nostrictatime", "diratime", "nodiratime", "lazytime",	 "nolazytime",
	"async",	 NULL
};

/* What the command line says, beyond the option table. */
struct args {
	char *bucket;	  /* owned */
	char *prefix;	  /* owned: "" or "dir/sub/" */
	char *mountpoint; /* owned, absolute */
	bool foreground, debug;
	bool nosuid, nodev, noexec;
	char **lists; /* owned: the -o lists in order (strings borrowed) */
	size_t n_lists;
};

/* Everything built, torn down in reverse by app_release(). */
struct app {
	struct options o;
	struct args a;
	enum log_level level;
	char *source; /* "ENDPOINT|BUCKET": identity of the cache */
	struct s3_creds creds;
	struct s3 *s3;
	char *cache_dir; /* absolute */
	bool ephemeral;	 /* cache_dir is ours, removed at exit */
	int lock_fd;
	struct meta *meta;
	struct chunk_store *chunks;
	struct cache *cache;
	struct vfs *vfs;
	struct fs *fs;
	struct admin *admin; /* s3cachefs-ctl's commands ... */
	struct ctlsrv *ctl;  /* ... through CACHE_DIR/ctl.sock */
	int notify_fd; /* daemonized child: tells the parent it is ready */
	struct crypt_key key; /* with have_key; wiped at release */
	bool have_key;
};

static void usage(FILE *f)
{
	fprintf(f,
		"usage: " PROG " BUCKET[:/PREFIX] MOUNTPOINT [-f] [-d] "
		"[-o OPT[,OPT...]]...\n"
		"\n"
		"Mount an S3 bucket (or a folder of it) read-through a "
		"persistent local\nchunk cache.\n"
		"\n"
		"  -f             stay in the foreground, log to stderr\n"
		"  -d             -f, log_level=debug and every FUSE request\n"
		"  -o OPT,...     options below; also S3CACHEFS_<NAME> "
		"environment variables\n"
		"  -h, --help     this help\n"
		"  -V, --version  the version\n"
		"\n"
		"Credentials: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
		"~/.aws/credentials\n"
		"(-o profile=), an s3fs passwd file (-o passwd_file=), or "
		"-o anonymous.\n"
		"Generic mount options (rw, nosuid, nodev, noexec, _netdev, "
		"nofail, ...) are\naccepted.\n\n");
}

static int usage_error(const char *fmt, const char *arg)
{
	fprintf(stderr, PROG ": ");
	fprintf(stderr, fmt, arg);
	fprintf(stderr, " (see '" PROG " --help')\n");
	return EXIT_USAGE;
}

/*
 * One line for a failure of @what, unless the library already logged one
 * since @before.  Returns EXIT_FAIL.
 */
static int fail(unsigned long before, const char *what, const char *target,
		int rc)
{
	if (log_error_count() == before)
		log_error("%s '%s': %s", what, target, strerror(-rc));
	return EXIT_FAIL;
}

/* ---- command line ---- */

/*
 * Split "BUCKET[:/PREFIX]" and normalise PREFIX to "dir/sub/" (or ""): no
 * leading or trailing '/', no empty, "." or ".." segment.
 */
static int parse_source(const char *s, struct args *a)
{
	const char *colon = strchr(s, ':');
	struct buf pre = BUF_INIT(BUF_NO_LIMIT);
	const char *p, *end, *seg;
	size_t n;

	n = colon ? (size_t)(colon - s) : strlen(s);
	if (n == 0)
		return usage_error("missing bucket name in '%s'", s);
	a->bucket = strndup(s, n);
	if (!a->bucket)
		return usage_error("out of memory%s", "");
	p = colon ? colon + 1 : "";
	end = p + strlen(p);
	while (*p == '/')
		p++;
	while (end > p && end[-1] == '/')
		end--;
	while (p < end) {
		seg = p;
		while (p < end && *p != '/')
			p++;
		n = (size_t)(p - seg);
		if (n == 0 || (n == 1 && seg[0] == '.') ||
		    (n == 2 && seg[0] == '.' && seg[1] == '.')) {
			buf_release(&pre);
			return usage_error("bad prefix in '%s': empty, '.' or "
					   "'..' segment",
					   s);
		}
		if (buf_add(&pre, seg, n) < 0 || buf_addc(&pre, '/') < 0) {
			buf_release(&pre);
			return usage_error("out of memory%s", "");
		}
		p++; /* past the '/' (or past end, which ends the loop) */
	}
	a->prefix = buf_detach(&pre, NULL);
	if (!a->prefix)
		return usage_error("out of memory%s", "");
	return 0;
}

static bool is_generic_opt(const char *item, size_t len)
{
	size_t i;

	if (len >= 2 && strncmp(item, "x-", 2) == 0)
		return true; /* x-systemd.*, x-gvfs-*: for other programs */
	if (len >= 8 && strncmp(item, "comment=", 8) == 0)
		return true;
	for (i = 0; generic_opts[i]; i++)
		if (strlen(generic_opts[i]) == len &&
		    strncmp(generic_opts[i], item, len) == 0)
			return true;
	return false;
}

/* Is @item (of @len bytes) the word @w? */
static bool item_is(const char *item, size_t len, const char *w)
{
	return strlen(w) == len && strncmp(item, w, len) == 0;
}

/*
 * Apply one -o list: mount(8)'s generic options are taken out (the mount
 * flags among them noted in @a), the rest goes to the option table.  Items
 * keep their backslash escapes, which options_parse_list undoes.
 */
static int apply_opt_list(struct options *o, struct args *a, const char *list,
			  struct buf *err)
{
	struct buf rest = BUF_INIT(BUF_NO_LIMIT);
	const char *p = list, *item;
	int rc = 0;

	while (rc == 0) {
		size_t len;

		item = p;
		while (*p && *p != ',') {
			if (*p == '\\' && p[1])
				p++;
			p++;
		}
		len = (size_t)(p - item);
		if (item_is(item, len, "rw")) {
			/* in place, so that "ro,rw" ends read-write */
			item = "ro=no";
			len = strlen(item);
		}
		if (item_is(item, len, "nosuid") ||
		    item_is(item, len, "suid")) {
			a->nosuid = item[0] == 'n';
		} else if (item_is(item, len, "nodev") ||
			   item_is(item, len, "dev")) {
			a->nodev = item[0] == 'n';
		} else if (item_is(item, len, "noexec") ||
			   item_is(item, len, "exec")) {
			a->noexec = item[0] == 'n';
		} else if (!is_generic_opt(item, len)) {
			if (rest.len)
				rc = buf_addc(&rest, ',');
			if (rc == 0)
				rc = buf_add(&rest, item, len);
		}
		if (!*p)
			break;
		p++;
	}
	if (rc < 0)
		buf_adds(err, "out of memory");
	else if (rc == 0 && rest.len)
		rc = options_parse_list(o, rest.data, err);
	buf_release(&rest);
	return rc;
}

/*
 * The file system type mounted on @path (a realpath), copied into @type;
 * false when nothing is mounted there.
 */
static bool mounted_on(const char *path, char *type, size_t size)
{
	FILE *f = fopen("/proc/self/mountinfo", "re");
	char *line = NULL, *save, *tok, *mnt = NULL, *dash;
	size_t cap = 0;
	bool found = false;
	int i;

	if (!f)
		return false;
	while (!found && getline(&line, &cap, f) > 0) {
		/* id parent major:minor root MOUNTPOINT ... - TYPE ... */
		dash = strstr(line, " - ");
		tok = strtok_r(line, " ", &save);
		for (i = 0; tok && i < 4; i++)
			tok = strtok_r(NULL, " ", &save);
		mnt = tok;
		if (!mnt || !dash)
			continue;
		unescape_octal(mnt);
		if (strcmp(mnt, path) != 0)
			continue;
		found = true;
		tok = strtok_r(dash + 3, " ", &save);
		snprintf(type, size, "%s", tok ? tok : "?");
	}
	free(line);
	fclose(f);
	return found;
}

static void log_dead_mount(const char *path)
{
	log_error("mount point '%s' is a dead FUSE mount (its daemon is "
		  "gone): unmount it first with 'fusermount3 -u'",
		  path);
}

/*
 * Refuse a mount point that is already mounted on, or that holds files
 * (which the mount would hide) unless -o nonempty.  0 or EXIT_FAIL.
 */
static int check_mountpoint(struct app *app)
{
	char type[64];
	struct dirent *e;
	DIR *d;
	bool empty = true;

	if (mounted_on(app->a.mountpoint, type, sizeof(type))) {
		struct statfs sf;

		/* after kill -9 the kernel may still answer stat() from
		 * cached attributes; statfs always asks the daemon */
		if (statfs(app->a.mountpoint, &sf) < 0 && errno == ENOTCONN) {
			log_dead_mount(app->a.mountpoint);
			return EXIT_FAIL;
		}
		log_error("mount point '%s' is busy: a %s file system is "
			  "already mounted there",
			  app->a.mountpoint, type);
		return EXIT_FAIL;
	}
	if (app->o.nonempty)
		return 0;
	d = opendir(app->a.mountpoint);
	if (!d) {
		log_error("mount point '%s': %s", app->a.mountpoint,
			  strerror(errno));
		return EXIT_FAIL;
	}
	while (empty && (e = readdir(d)))
		empty = strcmp(e->d_name, ".") == 0 ||
			strcmp(e->d_name, "..") == 0;
	closedir(d);
	if (!empty) {
		log_error("mount point '%s' is not empty: the mount would "
			  "hide its files (-o nonempty to mount anyway)",
			  app->a.mountpoint);
		return EXIT_FAIL;
	}
	return 0;
}

/*
 * Parse the command line into @app.  0 to go on, -1 when --help or
 * --version was answered (exit 0), or the exit status of an error.
 */
/*
 * The config file to read: config= from the environment or the -o lists
 * (the last one wins), else the default when it exists.  *path is NULL
 * for none; it is owned by the caller.
 */
static int find_config(struct app *app, char **path, struct buf *err)
{
	struct options probe;
	const char *xdg = getenv("XDG_CONFIG_HOME"), *home = getenv("HOME");
	char *def = NULL;
	size_t i;
	int rc;

	*path = NULL;
	rc = options_init(&probe);
	if (rc == 0)
		rc = options_load_env(&probe, environ, ignored_env, err);
	for (i = 0; rc == 0 && i < app->a.n_lists; i++)
		rc = apply_opt_list(&probe, &app->a, app->a.lists[i], err);
	if (rc == 0 && probe.config) {
		*path = probe.config;
		probe.config = NULL;
	} else if (rc == 0) {
		/* root: /etc; a user: ~/.config/s3cachefs/config, else /etc */
		if (geteuid() != 0 && xdg && xdg[0] == '/')
			rc = asprintf(&def, "%s/s3cachefs/config", xdg);
		else if (geteuid() != 0 && home && home[0] == '/')
			rc = asprintf(&def, "%s/.config/s3cachefs/config",
				      home);
		rc = rc < 0 ? -ENOMEM : 0;
		if (def && access(def, F_OK) == 0) {
			*path = def;
			def = NULL;
		} else if (access(DEFAULT_CONFIG, F_OK) == 0 &&
			   !(*path = strdup(DEFAULT_CONFIG))) {
			rc = -ENOMEM;
		}
	}
	if (rc == -ENOMEM)
		buf_adds(err, "out of memory");
	free(def);
	options_release(&probe);
	return rc;
}

/*
 * Apply every source in order, the last one winning: the table's
 * defaults, the config file, S3CACHEFS_* variables, the -o lists.
 */
static int apply_sources(struct app *app, struct buf *err)
{
	char *config = NULL;
	size_t i;
	int rc;

	rc = find_config(app, &config, err);
	if (rc == 0 && config) {
		rc = options_load_file(&app->o, config, err);
		if (rc == -ENOENT)
			buf_addf(err, "config file '%s': %s", config,
				 strerror(ENOENT));
		else if (rc < 0 && rc != -EINVAL && rc != -ENOMEM)
			buf_addf(err, "config file '%s': %s", config,
				 strerror(-rc));
	}
	if (rc == 0)
		rc = options_load_env(&app->o, environ, ignored_env, err);
	for (i = 0; rc == 0 && i < app->a.n_lists; i++)
		rc = apply_opt_list(&app->o, &app->a, app->a.lists[i], err);
	free(config);
	return rc;
}

static int parse_args(struct app *app, int argc, char **argv)
{
	static const struct option long_opts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	struct buf err = BUF_INIT(4096);
	char real[PATH_MAX], flag[3] = "-?";
	struct stat st;
	int opt, rc = 0;

	opterr = 0; /* one line per failure: ours */
	while ((opt = getopt_long(argc, argv, "fdo:hV", long_opts, NULL)) !=
	       -1) {
		switch (opt) {
		case 'f':
			app->a.foreground = true;
			break;
		case 'd':
			app->a.foreground = true;
			app->a.debug = true;
			break;
		case 'o': {
			char **l = realloc(app->a.lists,
					   (app->a.n_lists + 1) * sizeof(*l));

			if (!l) {
				log_error("out of memory");
				rc = EXIT_FAIL;
				goto out;
			}
			app->a.lists = l;
			l[app->a.n_lists++] = optarg;
			break;
		}
		case 'h':
			usage(stdout);
			options_help(stdout);
			rc = -1;
			goto out;
		case 'V':
			printf(PROG " " S3CACHEFS_VERSION " (%s)\n",
			       http_version());
			rc = -1;
			goto out;
		default:
			flag[1] = (char)optopt;
			if (optopt == 'o')
				rc = usage_error("flag '-o' needs a value%s",
						 "");
			else
				rc = usage_error("unknown flag '%s'",
						 optopt ? flag
							: argv[optind - 1]);
			goto out;
		}
	}
	if (argc - optind != 2) {
		rc = usage_error(argc - optind < 2
					 ? "expected BUCKET[:/PREFIX] and "
					   "MOUNTPOINT%s"
					 : "too many arguments%s",
				 "");
		goto out;
	}
	if (apply_sources(app, &err) < 0) {
		fprintf(stderr, PROG ": %s\n", buf_str(&err));
		rc = EXIT_USAGE;
		goto out;
	}
	rc = parse_source(argv[optind], &app->a);
	if (rc != 0)
		goto out;
	if (stat(argv[optind + 1], &st) < 0) {
		if (errno == ENOTCONN)
			log_dead_mount(argv[optind + 1]);
		else
			log_error("mount point '%s': %s", argv[optind + 1],
				  strerror(errno));
		rc = EXIT_FAIL;
		goto out;
	}
	if (!S_ISDIR(st.st_mode)) {
		log_error("mount point '%s' is not a directory",
			  argv[optind + 1]);
		rc = EXIT_FAIL;
		goto out;
	}
	if (!realpath(argv[optind + 1], real) ||
	    !(app->a.mountpoint = strdup(real))) {
		log_error("mount point '%s': %s", argv[optind + 1],
			  strerror(errno));
		rc = EXIT_FAIL;
		goto out;
	}
	rc = check_mountpoint(app);
out:
	buf_release(&err);
	return rc;
}

/* ---- daemon ---- */

/*
 * Fork; the parent waits for the child to be ready and returns its exit
 * status in *status (true returned), the child returns false with
 * app->notify_fd set.
 */
static bool daemon_fork(struct app *app, int *status)
{
	int p[2], st;
	pid_t pid;
	ssize_t n;
	char c;

	if (pipe2(p, O_CLOEXEC) < 0) {
		log_error("cannot daemonize: pipe: %s", strerror(errno));
		*status = EXIT_FAIL;
		return true;
	}
	pid = fork();
	if (pid < 0) {
		log_error("cannot daemonize: fork: %s", strerror(errno));
		close(p[0]);
		close(p[1]);
		*status = EXIT_FAIL;
		return true;
	}
	if (pid == 0) {
		close(p[0]);
		app->notify_fd = p[1];
		return false;
	}
	close(p[1]);
	do
		n = read(p[0], &c, 1);
	while (n < 0 && errno == EINTR);
	close(p[0]);
	if (n == 1) {
		*status = 0;
		return true;
	}
	/* the child ended without being ready: it said why */
	while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
		;
	if (WIFEXITED(st))
		*status = WEXITSTATUS(st);
	else
		*status = EXIT_FAIL;
	if (WIFSIGNALED(st))
		log_error("mount process killed by signal %d", WTERMSIG(st));
	return true;
}

/* The mount is up: leave the terminal and let the parent exit. */
static void daemon_ready(struct app *app)
{
	int fd;

	if (app->notify_fd < 0)
		return;
	setsid();
	if (chdir("/") < 0) {
		/* "/" always exists; nothing depends on the cwd */
	}
	log_init(PROG, app->level, true);
	fd = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (fd >= 0) {
		dup2(fd, STDIN_FILENO);
		dup2(fd, STDOUT_FILENO);
		dup2(fd, STDERR_FILENO);
		if (fd > STDERR_FILENO)
			close(fd);
	}
	if (write(app->notify_fd, "", 1) != 1)
		log_warn("cannot tell the parent process: %s", strerror(errno));
	close(app->notify_fd);
	app->notify_fd = -1;
}

/* ---- the cache folder ---- */

/* mkdir -p with @mode for the folders it creates; 0 or -errno. */
static int mkdir_p(const char *path, mode_t mode)
{
	struct stat st;
	char *p, *s;
	int rc = 0;

	p = strdup(path);
	if (!p)
		return -ENOMEM;
	for (s = p + 1;; s++) {
		if (*s == '/' || *s == '\0') {
			char c = *s;

			*s = '\0';
			if (mkdir(p, mode) < 0 && errno != EEXIST) {
				rc = -errno;
				break;
			}
			*s = c;
			if (!c)
				break;
		}
	}
	free(p);
	if (rc == 0 && stat(path, &st) < 0)
		rc = -errno;
	if (rc == 0 && !S_ISDIR(st.st_mode))
		rc = -ENOTDIR;
	return rc;
}

/*
 * The default folder, $XDG_CACHE_HOME/s3cachefs/BUCKET-ID (else
 * ~/.cache/s3cachefs/..., /var/cache/s3cachefs/... for root).
 */
static int default_cache_dir(const struct app *app, char **out)
{
	const char *xdg = getenv("XDG_CACHE_HOME");
	const char *home = getenv("HOME");
	char hex[65];
	int n;

	sha256_hex(app->source, strlen(app->source), hex);
	hex[CACHE_ID_LEN] = '\0';
	if (geteuid() == 0) {
		n = asprintf(out, "/var/cache/s3cachefs/%s-%s", app->a.bucket,
			     hex);
	} else if (xdg && xdg[0] == '/') {
		n = asprintf(out, "%s/s3cachefs/%s-%s", xdg, app->a.bucket,
			     hex);
	} else {
		if (!home || home[0] != '/') {
			struct passwd *pw = getpwuid(getuid());

			home = pw ? pw->pw_dir : NULL;
		}
		if (!home) {
			log_error("no home folder for the cache: set "
				  "cache_dir= or $XDG_CACHE_HOME");
			return -ENOENT;
		}
		n = asprintf(out, "%s/.cache/s3cachefs/%s-%s", home,
			     app->a.bucket, hex);
	}
	return n < 0 ? -ENOMEM : 0;
}

/* The folder's absolute path, for when the daemon leaves its cwd. */
static int make_absolute(char **path)
{
	char real[PATH_MAX], *s;

	if (!realpath(*path, real))
		return -errno;
	s = strdup(real);
	if (!s)
		return -ENOMEM;
	free(*path);
	*path = s;
	return 0;
}

/* Where the cache lives (not created): persistent folders only. */
static int cache_dir_path(struct app *app)
{
	if (app->o.cache_mode != OPT_CACHE_PERSISTENT)
		return 0;
	if (app->o.cache_dir && app->o.cache_dir[0]) {
		app->cache_dir = strdup(app->o.cache_dir);
		return app->cache_dir ? 0 : -ENOMEM;
	}
	return default_cache_dir(app, &app->cache_dir);
}

/* Create (or, ephemeral, make up) the folder; 0 or EXIT_FAIL (logged). */
static int cache_dir_create(struct app *app)
{
	const char *tmp = getenv("TMPDIR");
	struct stat st;
	int rc;

	if (app->o.cache_mode == OPT_CACHE_MEMORY)
		tmp = MEMORY_DIR;
	if (app->o.cache_mode != OPT_CACHE_PERSISTENT) {
		if (app->o.cache_dir && app->o.cache_dir[0])
			log_warn("cache_dir '%s' unused: cache=%s uses a "
				 "temporary folder",
				 app->o.cache_dir,
				 app->o.cache_mode == OPT_CACHE_MEMORY
					 ? "memory"
					 : "ephemeral");
		if (asprintf(&app->cache_dir, "%s/s3cachefs.XXXXXX",
			     tmp && *tmp ? tmp : "/tmp") < 0) {
			app->cache_dir = NULL;
			log_error("out of memory");
			return EXIT_FAIL;
		}
		if (!mkdtemp(app->cache_dir)) {
			log_error("cannot create a temporary cache folder in "
				  "'%s': %s",
				  tmp && *tmp ? tmp : "/tmp", strerror(errno));
			return EXIT_FAIL;
		}
		app->ephemeral = true;
	} else {
		rc = mkdir_p(app->cache_dir, 0700);
		if (rc < 0) {
			log_error("cannot create cache folder '%s': %s",
				  app->cache_dir, strerror(-rc));
			return EXIT_FAIL;
		}
		if (stat(app->cache_dir, &st) < 0) {
			log_error("cannot stat cache folder '%s': %s",
				  app->cache_dir, strerror(errno));
			return EXIT_FAIL;
		}
		/*
		 * Another user who owns the folder can swap its chunk files
		 * (served to everyone under allow_other) and read what we
		 * cache: refused, as ssh refuses a foreign ~/.ssh.
		 */
		if (st.st_uid != geteuid()) {
			log_error("cache folder '%s' belongs to uid %u, not to "
				  "the mounting user (uid %u)",
				  app->cache_dir, (unsigned)st.st_uid,
				  (unsigned)geteuid());
			return EXIT_FAIL;
		}
		/* private: a folder made by hand or by an older version */
		if (st.st_mode & 077) {
			if (chmod(app->cache_dir, 0700) < 0) {
				log_error("cache folder '%s' is open to other "
					  "users and cannot be made private: "
					  "%s",
					  app->cache_dir, strerror(errno));
				return EXIT_FAIL;
			}
			log_info("cache folder '%s' made private (0700)",
				 app->cache_dir);
		}
	}
	rc = make_absolute(&app->cache_dir);
	if (rc < 0) {
		log_error("cache folder '%s': %s", app->cache_dir,
			  strerror(-rc));
		return EXIT_FAIL;
	}
	return 0;
}

/* One mount per cache folder: an exclusive flock on CACHE_DIR/lock. */
static int cache_dir_lock(struct app *app)
{
	char *path = NULL;
	int rc = 0;

	if (asprintf(&path, "%s/lock", app->cache_dir) < 0) {
		log_error("out of memory");
		return EXIT_FAIL;
	}
	app->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (app->lock_fd < 0) {
		log_error("cannot open '%s': %s", path, strerror(errno));
		rc = EXIT_FAIL;
	} else if (flock(app->lock_fd, LOCK_EX | LOCK_NB) < 0) {
		if (errno == EWOULDBLOCK)
			log_error("cache folder '%s' is in use by another "
				  "mount",
				  app->cache_dir);
		else
			log_error("cannot lock '%s': %s", path,
				  strerror(errno));
		rc = EXIT_FAIL;
	}
	free(path);
	return rc;
}

static bool has_meta_db(const char *dir)
{
	char *path = NULL;
	bool ok;

	if (!dir || asprintf(&path, "%s/meta.db", dir) < 0)
		return false;
	ok = access(path, F_OK) == 0;
	free(path);
	return ok;
}

/* Failures that say S3 could not be reached, not that it refused. */
static bool transport_error(int rc)
{
	switch (-rc) {
	case ECONNREFUSED:
	case ECONNRESET:
	case ETIMEDOUT:
	case EHOSTUNREACH:
	case ENETUNREACH:
	case EPIPE:
	case EIO:
		return true;
	default:
		return false;
	}
}

static int rm_entry(const char *path, const struct stat *st, int flag,
		    struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	if (remove(path) < 0)
		log_warn("cannot remove '%s': %s", path, strerror(errno));
	return 0;
}

/* ---- encryption at rest ---- */

/* The key encrypt= asks for: 0, or the exit status (said). */
static int load_key(struct app *app)
{
	struct buf err = BUF_INIT(4096);
	char *env = getenv(CRYPT_KEY_ENV);
	const char *file = app->o.key_file;
	int rc = 0;

	if (app->o.encrypt == OPT_ENCRYPT_NONE)
		goto out;
	if (app->o.encrypt == OPT_ENCRYPT_EPHEMERAL) {
		if (file && *file)
			log_warn("key_file '%s' unused: encrypt=ephemeral "
				 "makes its own key",
				 file);
		if (crypt_key_generate(&app->key) < 0) {
			log_error("cannot make an encryption key: no "
				  "randomness");
			rc = EXIT_FAIL;
		}
	} else if (file && *file) {
		rc = crypt_key_from_file(file, &app->key, &err);
	} else if (env && *env) {
		rc = crypt_key_from_hex(env, &app->key, &err);
	} else {
		buf_adds(&err, "encrypt=aes-256-gcm needs a key: "
			       "key_file=FILE or $" CRYPT_KEY_ENV);
		rc = -EINVAL;
	}
	if (rc < 0) {
		fprintf(stderr, PROG ": %s\n", buf_str(&err));
		rc = EXIT_USAGE;
	}
	app->have_key = rc == 0;
	if (app->have_key)
		log_info("encryption at rest with key id %s%s", app->key.id_hex,
			 app->key.ephemeral ? " (ephemeral)" : "");
out:
	/* the daemon's environment is readable in /proc: keep no secret */
	if (env)
		explicit_bzero(env, strlen(env));
	buf_release(&err);
	return rc;
}

static int log_lost(void *ctx, const struct meta_staged *s)
{
	(void)ctx;
	log_error("'%s' could not be uploaded and is lost with the "
		  "ephemeral key",
		  s->key);
	return 0;
}

/* Everything in the cache folder but the lock (which we still hold). */
static void wipe_cache_dir(const char *dir)
{
	struct dirent *de;
	char *path;
	DIR *d;

	d = opendir(dir);
	if (!d) {
		log_warn("cannot wipe cache folder '%s': %s", dir,
			 strerror(errno));
		return;
	}
	while ((de = readdir(d))) {
		if (strcmp(de->d_name, ".") == 0 ||
		    strcmp(de->d_name, "..") == 0 ||
		    strcmp(de->d_name, "lock") == 0)
			continue;
		if (asprintf(&path, "%s/%s", dir, de->d_name) < 0)
			continue;
		nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
		free(path);
	}
	closedir(d);
}

/* ---- composition ---- */

/* Credentials and the S3 client, and a first look at the bucket. */
static int open_s3(struct app *app)
{
	struct buf err = BUF_INIT(4096);
	struct creds_conf cc;
	struct s3_conf conf;
	unsigned long before;
	int rc;

	/* curl reads the CA file at each new connection: after chdir("/") */
	if (app->o.ca_bundle && app->o.ca_bundle[0] &&
	    app->o.ca_bundle[0] != '/' && make_absolute(&app->o.ca_bundle) < 0)
		log_debug("ca_bundle '%s' left relative", app->o.ca_bundle);
	rc = options_to_s3_conf(&app->o, app->a.bucket, &conf, &cc, &err);
	if (rc < 0) {
		fprintf(stderr, PROG ": %s\n", buf_str(&err));
		buf_release(&err);
		return EXIT_USAGE;
	}
	buf_release(&err);
	before = log_error_count();
	rc = creds_resolve(&cc, &app->creds);
	if (rc < 0)
		return fail(before, "credentials for bucket", app->a.bucket,
			    rc);
	if (!conf.region && app->creds.region)
		conf.region = app->creds.region;
	before = log_error_count();
	rc = s3_open(&conf, &app->creds, &app->s3);
	if (rc < 0)
		return fail(before, "connect to bucket", app->a.bucket, rc);
	before = log_error_count();
	rc = s3_check_bucket(app->s3);
	if (rc < 0) {
		if (transport_error(rc) && has_meta_db(app->cache_dir)) {
			log_warn("bucket '%s' unreachable: serving what the "
				 "cache in '%s' holds",
				 app->a.bucket, app->cache_dir);
			return 0;
		}
		return fail(before, "bucket", app->a.bucket, rc);
	}
	return 0;
}

/* The stores under the cache folder, the cache and the vfs. */
/*
 * Chunk N of an object is bytes [N * chunk_size, ...): chunks cached under
 * another chunk_size would serve the wrong bytes, so when the cache's
 * recorded size differs they are dropped (staged files are not chunks).
 * A cache from before the size was recorded is taken as it is.
 */
static int check_chunk_size(struct app *app)
{
	struct cache_drop_result dropped = { 0 };
	char now[32], *was = NULL;
	int rc;

	snprintf(now, sizeof(now), "%" PRIu64, app->o.chunk_size);
	rc = meta_info_get(app->meta, "chunk_size", &was);
	if (rc == 0 && strcmp(was, now) != 0) {
		rc = cache_drop_prefix(app->cache, "", false, &dropped);
		log_warn("cache '%s' held chunks of %s bytes, not "
			 "chunk_size=%s: "
			 "dropped %" PRIu64 " of them",
			 app->cache_dir, was, now, dropped.chunks);
	} else if (rc == -ENOENT) {
		rc = 0;
	}
	if (rc == 0 && (!was || strcmp(was, now) != 0))
		rc = meta_info_put(app->meta, "chunk_size", now);
	free(was);
	return rc;
}

static int open_stores(struct app *app)
{
	struct chunk_store_conf csc = { 0 };
	struct cache_conf cac = { 0 };
	struct meta_conf mc = { 0 };
	struct vfs_conf vc = { 0 };
	char *db = NULL, *chunks = NULL;
	unsigned long before = log_error_count();
	int rc;

	if (asprintf(&db, "%s/meta.db", app->cache_dir) < 0)
		db = NULL;
	if (asprintf(&chunks, "%s/chunks", app->cache_dir) < 0)
		chunks = NULL;
	if (!db || !chunks) {
		rc = fail(before, "cache folder", app->cache_dir, -ENOMEM);
		goto out;
	}
	mc.path = db;
	mc.source = app->source;
	rc = meta_open(&mc, &app->meta);
	if (rc < 0) {
		rc = fail(before, "cannot open metadata store", db, rc);
		goto out;
	}
	csc.dir = chunks;
	csc.compress_level = options_compress_level(app->o.compress);
	csc.durable = false;
	csc.key = app->have_key ? &app->key : NULL;
	rc = chunk_store_open(&csc, &app->chunks);
	if (rc < 0) {
		rc = fail(before, "cannot open chunk store", chunks, rc);
		goto out;
	}
	cac.dir = app->cache_dir;
	cac.cap_bytes = app->o.cache_size;
	/* in RAM the cap is the limit: /dev/shm is often small */
	cac.min_free_bytes = app->o.cache_mode == OPT_CACHE_MEMORY
				     ? 0
				     : app->o.cache_min_free;
	cac.high_pct = 95;
	cac.low_pct = 85;
	cac.flush_ms = 5000;
	cac.max_entries = app->o.cache_max_entries;
	cac.max_age_ms = app->o.cache_max_age_ms;
	rc = cache_open(&cac, app->meta, app->chunks, &app->cache);
	if (rc < 0) {
		rc = fail(before, "cannot open cache", app->cache_dir, rc);
		goto out;
	}
	rc = check_chunk_size(app);
	if (rc < 0) {
		rc = fail(before, "cannot check the chunk size of cache",
			  app->cache_dir, rc);
		goto out;
	}
	vc.endpoint = app->o.endpoint ? app->o.endpoint : "";
	vc.bucket = app->a.bucket;
	vc.prefix = app->a.prefix;
	vc.chunk_size = app->o.chunk_size;
	vc.meta_ttl_ms = app->o.meta_ttl_ms;
	vc.negative_ttl_ms = app->o.negative_ttl_ms;
	vc.list_flat_keys = app->o.list_flat;
	vc.readahead = app->o.readahead;
	vc.prefetch = (unsigned)app->o.prefetch;
	vc.cache_dir = app->cache_dir;
	vc.part_size = app->o.part_size;
	vc.multipart_threshold = app->o.multipart_threshold;
	vc.writeback_async = app->o.writeback == OPT_WRITEBACK_ASYNC;
	vc.uploaders = (unsigned)app->o.uploads;
	vc.ro = app->o.ro;
	vc.uid = app->o.uid >= 0 ? (uint32_t)app->o.uid : getuid();
	vc.gid = app->o.gid >= 0 ? (uint32_t)app->o.gid : getgid();
	vc.strict_attrs = app->o.allow_other;
	vc.has_umask = app->o.umask >= 0;
	vc.umask = vc.has_umask ? (uint32_t)app->o.umask : 0;
	vc.validate =
		app->o.validate == OPT_VALIDATE_ALWAYS	? VFS_VALIDATE_ALWAYS
		: app->o.validate == OPT_VALIDATE_NEVER ? VFS_VALIDATE_NEVER
							: VFS_VALIDATE_TTL;
	vc.key = app->have_key ? &app->key : NULL;
	rc = vfs_new(&vc, app->s3, app->meta, app->cache, &app->vfs);
	if (rc < 0) {
		rc = fail(before, "cannot start the file system for bucket",
			  app->a.bucket, rc);
		goto out;
	}
	rc = 0;
out:
	free(db);
	free(chunks);
	return rc;
}

static int mount_fs(struct app *app)
{
	struct fs_conf fc = { 0 };
	char *fsname = NULL;
	unsigned long before = log_error_count();
	int rc;

	/*
	 * The source as mount(8) and fstab name it (the type shows as
	 * fuse.s3cachefs), so that "mount -a" sees the line is mounted.
	 */
	if (asprintf(&fsname, "%s%s%.*s", app->a.bucket,
		     app->a.prefix[0] ? ":/" : "",
		     app->a.prefix[0] ? (int)strlen(app->a.prefix) - 1 : 0,
		     app->a.prefix) < 0)
		return fail(before, "mount", app->a.mountpoint, -ENOMEM);
	fc.fsname = fsname;
	fc.entry_timeout = (double)app->o.meta_ttl_ms / 1000.0;
	fc.attr_timeout = fc.entry_timeout;
	fc.negative_timeout = (double)app->o.negative_ttl_ms / 1000.0;
	fc.allow_other = app->o.allow_other;
	fc.ro = app->o.ro;
	fc.nosuid = app->a.nosuid;
	fc.nodev = app->a.nodev;
	fc.noexec = app->a.noexec;
	fc.uid = app->o.uid >= 0 ? (uid_t)app->o.uid : getuid();
	fc.gid = app->o.gid >= 0 ? (gid_t)app->o.gid : getgid();
	fc.cache_dir = app->cache_dir;
	fc.max_threads = MAX_THREADS;
	fc.debug = app->a.debug;
	rc = fs_new(&fc, app->vfs, &app->fs);
	free(fsname);
	if (rc < 0)
		return fail(before, "mount", app->a.mountpoint, rc);
	rc = fs_mount(app->fs, app->a.mountpoint);
	if (rc < 0)
		return fail(before, "mount", app->a.mountpoint, rc);
	return 0;
}

/* s3cachefs-ctl's socket; without it only the tool's live mode is lost. */
static void start_ctl(struct app *app)
{
	struct admin_conf ac = { 0 };
	struct ctlsrv_conf sc = { 0 };
	sigset_t stop, old;

	ac.cache_dir = app->cache_dir;
	ac.source = app->source;
	ac.endpoint = app->o.endpoint ? app->o.endpoint : "";
	ac.bucket = app->a.bucket;
	ac.prefix = app->a.prefix;
	ac.chunk_size = app->o.chunk_size;
	ac.meta_ttl_ms = app->o.meta_ttl_ms;
	ac.parallel = (unsigned)app->o.parallel;
	ac.live = true;
	ac.record = true;
	ac.cap_bytes = app->o.cache_size;
	ac.min_free_bytes = app->o.cache_mode == OPT_CACHE_MEMORY
				    ? 0
				    : app->o.cache_min_free;
	ac.max_entries = app->o.cache_max_entries;
	ac.max_age_ms = app->o.cache_max_age_ms;
	ac.compress_level = options_compress_level(app->o.compress);
	sc.cache_dir = app->cache_dir;
	sc.flush_ms = 5000;
	/* as for the cache's threads: the signals are the main thread's */
	sigemptyset(&stop);
	sigaddset(&stop, SIGTERM);
	sigaddset(&stop, SIGINT);
	sigaddset(&stop, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &stop, &old);
	if (admin_new(&ac, app->meta, app->chunks, app->cache, app->s3,
		      &app->admin) < 0 ||
	    ctlsrv_start(&sc, app->admin, &app->ctl) < 0)
		log_warn("no control socket in '%s': s3cachefs-ctl works on "
			 "this cache only once it is unmounted",
			 app->cache_dir);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
}

/* Stop the socket and write the counters: before the vfs and cache go. */
static void stop_ctl(struct app *app)
{
	ctlsrv_stop(app->ctl);
	app->ctl = NULL;
	admin_free(app->admin);
	app->admin = NULL;
}

/*
 * The peak resident size of this process in KiB, -1 if unknown: VmHWM, not
 * getrusage's ru_maxrss, which keeps the peak of whatever process exec'd us.
 */
static long peak_rss_kib(void)
{
	char line[128];
	long kib = -1;
	FILE *fp = fopen("/proc/self/status", "re");

	if (!fp)
		return -1;
	while (fgets(line, sizeof(line), fp))
		if (sscanf(line, "VmHWM: %ld kB", &kib) == 1)
			break;
	fclose(fp);
	return kib;
}

/* The one stats line, in key=value form: tests parse it. */
static void log_stats(struct app *app)
{
	struct vfs_stats vs = { 0 };
	struct cache_stats cs = { 0 };
	struct s3_stats ss = { 0 };
	long peak_kib = peak_rss_kib();

	if (!log_enabled(LOG_LVL_INFO))
		return;
	if (app->vfs)
		vfs_get_stats(app->vfs, &vs);
	if (app->cache)
		cache_get_stats(app->cache, &cs);
	if (app->s3)
		s3_get_stats(app->s3, &ss);
	log_info("stats: vfs reads=%" PRIu64 " bytes=%" PRIu64
		 " chunk_hits=%" PRIu64 " fetches=%" PRIu64
		 " prefetches=%" PRIu64 " stale=%" PRIu64 " bypass=%" PRIu64
		 " behind=%" PRIu64 "; cache used=%" PRIu64 " cap=%" PRIu64
		 " chunks=%" PRIu64 " hits=%" PRIu64 " misses=%" PRIu64
		 " admitted=%" PRIu64 " evicted=%" PRIu64 " corrupt=%" PRIu64
		 " wrong_key=%" PRIu64 " disk_errors=%" PRIu64 " opens=%" PRIu64
		 "; s3 get=%" PRIu64 " head=%" PRIu64 " list=%" PRIu64
		 " retries=%" PRIu64 " errors=%" PRIu64 " connects=%" PRIu64
		 "; proc peak_rss_kib=%ld",
		 vs.reads, vs.bytes_read, vs.chunk_hits, vs.chunk_fetches,
		 vs.prefetches, vs.stale, vs.cache_bypass, vs.written_behind,
		 cs.used_bytes, cs.cap_bytes, cs.chunks, cs.hits, cs.misses,
		 cs.admitted, cs.evicted, cs.corrupt, cs.wrong_key,
		 cs.disk_errors, cs.file_opens, ss.requests[S3_OP_GET],
		 ss.requests[S3_OP_HEAD], ss.requests[S3_OP_LIST], ss.retries,
		 ss.errors, ss.connects, peak_kib);
}

/* Build everything, serve, and say how it went: the exit status. */
static int run(struct app *app)
{
	unsigned long before = log_error_count();
	int rc;

	if (asprintf(&app->source, "%s|%s",
		     app->o.endpoint ? app->o.endpoint : "",
		     app->a.bucket) < 0) {
		app->source = NULL;
		log_error("out of memory");
		return EXIT_FAIL;
	}
	rc = cache_dir_path(app);
	if (rc < 0)
		return fail(before, "cache folder for bucket", app->a.bucket,
			    rc);
	rc = load_key(app);
	if (rc == 0)
		rc = open_s3(app);
	if (rc == 0)
		rc = cache_dir_create(app);
	if (rc == 0)
		rc = cache_dir_lock(app);
	if (rc == 0) {
		/*
		 * The cache's and the vfs's threads must not take the signals
		 * that end the loop: the handler only sets a flag, which the
		 * main thread sees when its wait is interrupted.
		 */
		sigset_t stop, old;

		sigemptyset(&stop);
		sigaddset(&stop, SIGTERM);
		sigaddset(&stop, SIGINT);
		sigaddset(&stop, SIGHUP);
		pthread_sigmask(SIG_BLOCK, &stop, &old);
		rc = open_stores(app);
		pthread_sigmask(SIG_SETMASK, &old, NULL);
	}
	if (rc == 0)
		rc = mount_fs(app);
	if (rc != 0)
		return rc;
	start_ctl(app);
	daemon_ready(app); /* logs go to syslog from here when detached */
	log_info("mounted '%s%s%s' on '%s', cache in '%s'", app->a.bucket,
		 app->a.prefix[0] ? ":/" : "", app->a.prefix, app->a.mountpoint,
		 app->cache_dir);
	rc = fs_run(app->fs) < 0 ? EXIT_FAIL : 0;
	stop_ctl(app);
	fs_unmount(app->fs);
	log_stats(app);
	return rc;
}

static void app_release(struct app *app)
{
	/* only a cache this run locked and served, with the key gone */
	bool wipe = app->o.encrypt == OPT_ENCRYPT_EPHEMERAL && app->vfs &&
		    !app->ephemeral;

	stop_ctl(app);
	fs_free(app->fs);
	vfs_free(app->vfs);
	if (app->vfs && app->o.encrypt == OPT_ENCRYPT_EPHEMERAL)
		meta_staged_scan(app->meta, log_lost, NULL);
	cache_close(app->cache);
	chunk_store_close(app->chunks);
	meta_close(app->meta);
	if (wipe)
		wipe_cache_dir(app->cache_dir);
	if (app->lock_fd >= 0)
		close(app->lock_fd);
	if (app->ephemeral)
		nftw(app->cache_dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	crypt_key_release(&app->key);
	free(app->cache_dir);
	s3_close(app->s3);
	creds_release(&app->creds);
	free(app->source);
	if (app->notify_fd >= 0)
		close(app->notify_fd);
	free(app->a.bucket);
	free(app->a.prefix);
	free(app->a.mountpoint);
	free(app->a.lists);
	options_release(&app->o);
}

int main(int argc, char **argv)
{
	struct app app = { .lock_fd = -1, .notify_fd = -1 };
	int rc;

	/* the cache folder and every file in it are private: 0700/0600 */
	umask(077);
	log_init(PROG, LOG_LVL_WARN, false);
	if (options_init(&app.o) < 0) {
		fprintf(stderr, PROG ": out of memory\n");
		return EXIT_FAIL;
	}
	rc = parse_args(&app, argc, argv);
	if (rc != 0) {
		rc = rc < 0 ? 0 : rc;
		goto out;
	}
	app.level =
		app.a.debug ? LOG_LVL_DEBUG : (enum log_level)app.o.log_level;
	log_set_level(app.level);
	if (!app.a.foreground && daemon_fork(&app, &rc))
		goto out;
	rc = run(&app);
out:
	app_release(&app);
	return rc;
}
