/*
 * options.h - one table drives every way of setting an option: "-o name=value"
 * on the command line, S3CACHEFS_NAME environment variables, "name = value"
 * lines of a config file, and --help.
 *
 * Sources are applied in the order the caller chooses; the composition roots
 * use defaults < config file < environment < command line, so the last
 * source that sets a field wins.  Every error is one line naming the option
 * and, where it helps, the value ("unknown option 'foo'", "option
 * 'part_size': '3X' is not a size").  Secrets have no option: credentials
 * come from the chain of creds.h, never from a process's arguments.
 *
 * Every setter may also return -ENOMEM.  An empty value ("endpoint=")
 * resets a string option to none, so a later source can undo an earlier
 * one.  User text quoted in messages is cut to 72 characters with control
 * characters shown as '?', so a message is always one line.
 */
#ifndef S3CACHEFS_OPTIONS_H
#define S3CACHEFS_OPTIONS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

struct buf;
struct s3_conf;
struct creds_conf;

enum opt_addressing { OPT_ADDR_AUTO, OPT_ADDR_PATH, OPT_ADDR_VHOST };
enum opt_signing { OPT_SIGN_AUTO, OPT_SIGN_ALWAYS, OPT_SIGN_NEVER };

/* Every field is owned by the struct (strings freed by options_release). */
struct options {
	/* S3 */
	char *endpoint;	   /* endpoint=URL */
	char *region;	   /* region=NAME */
	bool path_style;   /* path_style: force path-style addressing */
	bool virtual_host; /* virtual_host: force virtual-hosted addressing */
	char *ca_bundle;   /* ca_bundle=FILE */
	bool insecure;	   /* insecure: do not verify TLS certificates */
	unsigned payload_signing; /* payload_signing=auto|always|never */
	/* credentials */
	char *profile;	   /* profile=NAME */
	char *passwd_file; /* passwd_file=FILE */
	bool anonymous;	   /* anonymous (alias public_bucket=1) */
	/* network */
	uint64_t connect_timeout_ms; /* connect_timeout=DURATION */
	uint64_t io_timeout_ms;	     /* io_timeout=DURATION */
	uint64_t timeout_ms;	     /* timeout=DURATION, whole request */
	uint64_t retries;	     /* retries=N */
	/* uploads */
	uint64_t part_size;	      /* part_size=SIZE */
	uint64_t multipart_threshold; /* multipart_threshold=SIZE */
	uint64_t parallel;	      /* parallel=N */
	/* cache */
	char *cache_dir;	 /* cache_dir=DIR; none: the per-user default */
	unsigned cache_mode;	 /* cache=persistent|ephemeral|memory */
	uint64_t cache_size;	 /* cache_size=SIZE, the cap on disk use */
	uint64_t cache_min_free; /* cache_min_free=SIZE left free on its fs */
	uint64_t chunk_size;	 /* chunk_size=SIZE */
	unsigned compress;	 /* compress=none|zlib|zlib:1..9 (index) */
	uint64_t meta_ttl_ms;	 /* meta_ttl=DURATION */
	uint64_t negative_ttl_ms; /* negative_ttl=DURATION */
	uint64_t readahead;	  /* readahead=SIZE, largest window */
	uint64_t prefetch;	  /* prefetch=N ranged GETs ahead of a reader */
	unsigned validate;	  /* validate=ttl|always|never */
	uint64_t list_flat;	  /* list_flat=N keys; 0: off */
	unsigned writeback;	  /* writeback=sync|async */
	uint64_t uploads;	  /* background uploads at once */
	uint64_t cache_max_entries; /* cache_max_entries=N; 0: no limit */
	uint64_t cache_max_age_ms;  /* cache_max_age=DURATION; 0: none */
	unsigned encrypt;	    /* encrypt=none|aes-256-gcm|ephemeral */
	char *key_file;		    /* key_file=FILE */
	/* mount */
	bool ro;	  /* ro: read-only mount */
	bool allow_other; /* allow_other: other users may access */
	int64_t uid;	  /* uid=USER; -1: unset */
	int64_t gid;	  /* gid=GROUP; -1: unset */
	int64_t umask;	  /* umask=OCTAL; -1: unset */
	bool nonempty;	  /* nonempty: mount over a non-empty folder */
	char *config;	  /* config=FILE (main reads it first) */
	/* logging */
	unsigned log_level; /* log_level=error|warn|info|debug|trace */
};

enum opt_cache_mode {
	OPT_CACHE_PERSISTENT,
	OPT_CACHE_EPHEMERAL,
	OPT_CACHE_MEMORY
};
enum opt_encrypt {
	OPT_ENCRYPT_NONE,
	OPT_ENCRYPT_AES256GCM,
	OPT_ENCRYPT_EPHEMERAL
};
enum opt_validate { OPT_VALIDATE_TTL, OPT_VALIDATE_ALWAYS, OPT_VALIDATE_NEVER };
enum opt_writeback { OPT_WRITEBACK_SYNC, OPT_WRITEBACK_ASYNC };

/*
 * zlib level of the compress= choice @index: 0 for none, 6 for plain
 * "zlib", 1..9 for "zlib:N".
 */
int options_compress_level(unsigned index);

/* Fill @o with the table's defaults.  0 or -ENOMEM. */
int options_init(struct options *o);

/* Free what @o owns; NULL-safe; @o may be initialised again. */
void options_release(struct options *o);

/*
 * Set one option by name.  @value NULL means the bare word ("path_style"),
 * allowed for booleans only, where it means true.  0, or -EINVAL with one
 * line appended to @err.
 */
int options_set(struct options *o, const char *name, const char *value,
		struct buf *err);

/*
 * A comma-separated list as -o takes it: "a=1,b,c=x".  A backslash escapes
 * the next character (so values may hold commas).  Stops at the first bad
 * item: 0 or -EINVAL with @err filled.
 */
int options_parse_list(struct options *o, const char *list, struct buf *err);

/*
 * Every S3CACHEFS_<NAME> variable of @envp (NULL-terminated, as environ):
 * S3CACHEFS_PART_SIZE=16M sets part_size.  Unknown S3CACHEFS_ variables are
 * refused like unknown -o options, except those in @ignore (NULL-terminated
 * list of full variable names, or NULL), which tools use for their own.
 */
int options_load_env(struct options *o, char *const *envp,
		     const char *const *ignore, struct buf *err);

/*
 * A config file: one "name = value" or bare "name" per line, '#' comments,
 * blank lines.  Errors name the file and line.  -ENOENT when it does not
 * exist (not logged: callers decide whether that matters); -EFBIG over
 * 1 MiB; other read errors as -errno; -EINVAL for a NUL byte or a bad line.
 */
int options_load_file(struct options *o, const char *path, struct buf *err);

/*
 * The text of a config file (@len bytes, named @name in errors), parsed as
 * options_load_file() parses a file: 0, -EINVAL (a NUL byte or a bad line,
 * @err filled) or -ENOMEM.
 */
int options_parse_text(struct options *o, const char *text, size_t len,
		       const char *name, struct buf *err);

/* Print every option with its type, default and help, grouped, to @f. */
void options_help(FILE *f);

/*
 * Translate into the S3 client's and the credentials' configuration.  The
 * conf structs borrow strings from @o, which must outlive them.  -EINVAL
 * when options contradict each other (path_style with virtual_host).
 */
int options_to_s3_conf(const struct options *o, const char *bucket,
		       struct s3_conf *conf, struct creds_conf *cc,
		       struct buf *err);

#endif
