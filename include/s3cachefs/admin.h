/*
 * admin.h - the commands of s3cachefs-ctl over one cache directory: stats,
 * ls, clear, gc, verify, warm and evict.
 *
 * One implementation serves both ways the tool works: inside the daemon,
 * behind the control socket (ctlsrv.h), for a mounted cache; and inside the
 * tool itself, over stores it opened, for a cache no mount holds.  Output
 * goes through a callback, line by line, so the socket can stream it and
 * the tool can print it.
 *
 * Statistics.  The counters of the cache (hits, misses, evictions, ...)
 * and of the S3 client (requests by kind, bytes) live in memory and start
 * at zero with each process; admin keeps them over the cache's life in the
 * metadata store's counters table (meta.h).  admin_flush() adds what the
 * in-memory counters gained since the last flush; the daemon calls it every
 * few seconds and at exit, the tool at the end of an offline command.  The
 * stats command reports the table plus what is not flushed yet.
 *
 * Names written to the store's info table at admin_new() by a daemon
 * (conf.record): "cache_size", "cache_min_free", "cache_max_entries",
 * "cache_max_age_ms", "chunk_size", "compress_level", decimal, so that the
 * tool, offline, works with the limits and chunk size of the last mount.
 *
 * Thread-safe: commands may run at once (a warm does not block a stats).
 */
#ifndef S3CACHEFS_ADMIN_H
#define S3CACHEFS_ADMIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct buf;
struct meta;
struct chunk_store;
struct cache;
struct s3;

enum admin_kind {
	ADMIN_STATS,
	ADMIN_LS,
	ADMIN_CLEAR,
	ADMIN_GC,
	ADMIN_VERIFY,
	ADMIN_WARM,
	ADMIN_EVICT,
};

/*
 * A parsed command.  Targets are keys or key prefixes of the bucket;
 * with in_mount, paths below the mount's root ("" the root, "dir/" a
 * directory, "dir/f" a file), which the daemon prefixes with its mount's
 * prefix.  A target ending in '/' (or "") means everything below it; any
 * other means that key and everything below key + "/".  clear and ls take
 * a raw key prefix instead.
 */
struct admin_cmd {
	enum admin_kind kind;
	bool json;		/* stats, ls: --json */
	bool in_mount;		/* --in-mount: targets are mount paths */
	uint64_t older_than_ms; /* gc --older-than; 0: the configured age */
	char **targets;		/* owned, n of them */
	size_t n;
};

/*
 * Parse @argc words from the command name on ("stats", "--json").  0, or
 * -EINVAL with one line in @err (the usage error: unknown command, flag or
 * a missing or extra argument, a bad duration).
 */
int admin_parse(int argc, char *const *argv, struct admin_cmd *out,
		struct buf *err);

void admin_cmd_release(struct admin_cmd *c); /* NULL-safe */

/*
 * The wire form of a command: one line (no '\n') of the words of @c,
 * separated by spaces, each with bytes up to space, '%' and DEL as %XX.
 * admin_decode() undoes it and parses the words with admin_parse().
 * 0, -ENOMEM, or -EINVAL (decode: malformed; @err says why).
 */
int admin_encode(const struct admin_cmd *c, struct buf *out);
int admin_decode(const char *line, struct admin_cmd *out, struct buf *err);

/* Percent-escape @s as admin_encode() does its words.  0 or -ENOMEM. */
int admin_escape(struct buf *out, const char *s);

/* What a line of output is. */
enum admin_line {
	ADMIN_OUT,	/* a line of the command's output */
	ADMIN_ITEM,	/* one per object warmed: for pipes, not terminals */
	ADMIN_PROGRESS, /* "OBJ_DONE OBJ_TOTAL BYTES_DONE BYTES_TOTAL" */
	ADMIN_ERR,	/* why the command failed: one line */
};

/*
 * Called per line (no '\n'; control characters of keys escaped).  0 to go
 * on, -errno to stop the command (the reader left).
 */
typedef int (*admin_emit_fn)(void *ctx, enum admin_line kind, const char *text);

struct admin_conf {
	const char *cache_dir;
	const char *source;   /* "ENDPOINT|BUCKET" */
	const char *endpoint; /* chunk identity; "" for AWS */
	const char *bucket;
	const char *prefix;   /* the mount's ("" or "dir/"), for in_mount */
	uint64_t chunk_size;  /* as the vfs names chunks */
	uint64_t meta_ttl_ms; /* warm: object rows trusted this long */
	unsigned parallel;    /* warm: chunk GETs in flight (>= 1) */
	bool live;	      /* in the daemon, for a mounted cache */
	/* the library's error lines reach the caller (the tool, offline):
	 * a failure then gets an ADMIN_ERR line only when none was logged */
	bool caller_sees_log;
	/* the daemon: write the limits below to the info table */
	bool record;
	uint64_t cap_bytes, min_free_bytes, max_entries, max_age_ms;
	int compress_level;
};

struct admin;

/*
 * Over @m, @cs and @c (borrowed; they must outlive it) and @s3 (borrowed,
 * NULL when there is none: warm then fails).  Strings of @conf are copied.
 * 0, -ENOMEM, -EINVAL.
 */
int admin_new(const struct admin_conf *conf, struct meta *m,
	      struct chunk_store *cs, struct cache *c, struct s3 *s3,
	      struct admin **out);

/* admin_flush(), then free.  No command may be running.  NULL-safe. */
void admin_free(struct admin *a);

/*
 * Run @cmd, emitting its output.  0, or -errno after an ADMIN_ERR line
 * (or, with caller_sees_log, a logged error line) that says why.
 */
int admin_run(struct admin *a, const struct admin_cmd *cmd, admin_emit_fn emit,
	      void *ctx);

/* Make running and later commands stop soon with -ECANCELED. */
void admin_cancel(struct admin *a);

/* Add the in-memory counters' gains to the store.  0 or -errno. */
int admin_flush(struct admin *a);

/*
 * Read a decimal value recorded by a daemon under info @k into *out;
 * untouched when there is none or it does not parse.
 */
void admin_recorded(struct meta *m, const char *k, uint64_t *out);

/*
 * Append @v, a JSON string with quotes, to @out.  Bytes that are not valid
 * UTF-8 are replaced by U+FFFD.  0 or -ENOMEM.
 */
int admin_json_str(struct buf *out, const char *v);

#endif
