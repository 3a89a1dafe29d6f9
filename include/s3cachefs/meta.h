/*
 * meta.h - the metadata store: the only code that includes sqlite3.h.
 *
 * One SQLite database (CACHE_DIR/meta.db, WAL mode, synchronous=NORMAL)
 * holds what the mount knows about the bucket and about its cache:
 *
 *   objects    key -> ETag, size, mtime, last access, checked-at, expiry
 *   listings   directory prefix -> fetched-at, expiry
 *   entries    (directory prefix, name) -> file or directory
 *   negatives  key -> expiry of "there is no such file or directory"
 *   chunks     chunk file name -> key, ETag, index, bytes on disk, last access,
 *              bytes of data
 *   staged     files written through the mount and not yet (or not wholly)
 *              uploaded: key, the version they were based on, which
 *              chunks the staging file holds, the attributes to upload
 *   counters   name -> a statistic summed over the cache's life (hits,
 *              requests, ...): see meta_counters_add()
 *   info       the schema version (PRAGMA user_version), the source, and
 *              what other modules record with meta_info_put()
 *
 * The schema is versioned: meta_open() migrates an older database in one
 * transaction and refuses a newer one (-EPROTO, logged).  Statements are
 * prepared once and reused.  Every multi-row change runs in one
 * transaction.  Times are milliseconds since the epoch (wall clock, since
 * they outlive the process), except mtime, in seconds.
 *
 * Keys and prefixes are full S3 keys ("dir/sub/" for a directory prefix,
 * "" for the root of the bucket).
 *
 * Thread-safe: one connection behind one mutex.  Callbacks run with that
 * mutex held and must not call back into this module.
 */
#ifndef S3CACHEFS_META_H
#define S3CACHEFS_META_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct meta_conf {
	const char *path; /* database file, or ":memory:" */
	/*
	 * What the cache holds, e.g. "http://127.0.0.1:9000|bucket".  When the
	 * database records another source, every row but the staged ones is
	 * deleted first (logged at info): one cache directory serves one
	 * bucket.  When it also holds staged rows, meta_open() fails instead
	 * (-EBUSY, logged) and changes nothing.  NULL: neither checked nor
	 * recorded.
	 */
	const char *source;
};

struct meta;

/*
 * Open or create the database, migrate it, and prepare statements.
 * 0, -ENOMEM, -EPROTO (schema newer than this program), -EBUSY (staged rows
 * of another source, see struct meta_conf), -EIO (anything else SQLite
 * refused: logged with its message and the path).
 */
int meta_open(const struct meta_conf *conf, struct meta **out);
void meta_close(struct meta *m); /* NULL-safe */

/* One object as last seen on S3.  Strings owned by the struct. */
struct meta_object {
	char *key;
	char *etag;
	uint64_t size;
	int64_t mtime;	    /* seconds since the epoch (Last-Modified) */
	int64_t checked_ms; /* when S3 last confirmed these values */
	int64_t expires_ms; /* trusted until then */
	int64_t atime_ms;   /* last read through the mount; 0: never */
	/*
	 * Attributes from the object's user metadata (x-amz-meta-mode, -uid,
	 * -gid, -mtime, as s3fs writes them), known only after a HEAD or our
	 * own upload: LIST does not carry them.  With has_attrs false the
	 * four fields are meaningless.  meta_object_put() with has_attrs
	 * false keeps the stored attributes when the ETag is unchanged and
	 * forgets them when it changed; meta_listing_put() does the same.
	 */
	bool has_attrs;
	uint32_t mode;	    /* st_mode with the file type bits; 0: not given */
	uint32_t uid, gid;  /* (uint32_t)-1: not given */
	int64_t attr_mtime; /* x-amz-meta-mtime, seconds; 0: not given */
};
void meta_object_release(struct meta_object *o); /* NULL-safe */

/* 0 and *out filled (caller releases), -ENOENT, or -EIO. */
int meta_object_get(struct meta *m, const char *key, struct meta_object *out);

/*
 * 1 when some object whose key starts with @prefix has a row that expires
 * after @after_ms, 0 when none, or -errno.  One indexed range read (it
 * stops at the first such row).  So a folder whose files were looked at
 * within the TTL is known to be a folder without asking S3.
 */
int meta_object_under(struct meta *m, const char *prefix, int64_t after_ms);

/*
 * Insert or replace the object @o->key and drop any negative entry for it.
 * An existing row keeps its atime_ms when @o->atime_ms is 0, and stays as
 * it is when its checked_ms is later than @o's (what a LIST or HEAD begun
 * before a change learnt never replaces what the change wrote; the same
 * holds for the rows of meta_listing_put()).
 */
int meta_object_put(struct meta *m, const struct meta_object *o);

/* Delete the object's row (0 also when there was none). */
int meta_object_delete(struct meta *m, const char *key);

/* Mark the object due for revalidation (expires_ms = 0). */
int meta_object_expire(struct meta *m, const char *key);

/* A last-access stamp, batched by the caller. */
struct meta_touch {
	const char *name; /* object key, or chunk name */
	int64_t atime_ms;
};

/* Set atime_ms of many objects (or chunks) in one transaction. */
int meta_object_touch_many(struct meta *m, const struct meta_touch *t,
			   size_t n);

/* Record that nothing exists at @key until @expires_ms. */
int meta_negative_put(struct meta *m, const char *key, int64_t expires_ms);

/* 0 with *expires_ms when a negative entry exists (expired or not), or
 * -ENOENT. */
int meta_negative_get(struct meta *m, const char *key, int64_t *expires_ms);

int meta_negative_delete(struct meta *m, const char *key);

/* An entry of a directory listing.  Strings borrowed. */
struct meta_entry {
	const char *name; /* one path segment, no '/' */
	bool is_dir;
	/* files only: */
	const char *etag;
	uint64_t size;
	int64_t mtime;
	/* files only, from the object row (see struct meta_object); ignored
	 * by meta_listing_put() */
	bool has_attrs;
	uint32_t mode, uid, gid;
	int64_t attr_mtime;
};

/*
 * Replace the listing of directory @dir (a prefix ending in '/', or "") with
 * @n entries, in one transaction: the listing row gets @fetched_ms and
 * @expires_ms; each file entry also inserts or updates its object row
 * (key = dir + name, checked_ms = @fetched_ms, expires_ms = @expires_ms,
 * atime kept) and drops negative entries for it.  Entry names are unique.
 */
int meta_listing_put(struct meta *m, const char *dir, int64_t fetched_ms,
		     int64_t expires_ms, const struct meta_entry *e, size_t n);

/* Called per entry, in byte order of name: 0 to go on, -errno to stop. */
typedef int (*meta_entry_fn)(void *ctx, const struct meta_entry *e);

/*
 * Visit the stored listing of @dir; files carry the attributes of their
 * object rows.  *expires_ms (may be NULL) receives the listing's expiry.
 * 0, -ENOENT when @dir has no stored listing, or the first -errno of @fn.
 */
int meta_listing_get(struct meta *m, const char *dir, int64_t *expires_ms,
		     meta_entry_fn fn, void *ctx);

/*
 * Look up @name in the stored listing of @dir.  Returns 0 when found
 * (*is_dir set; for a file *obj filled when @obj is not NULL, caller
 * releases), 1 when the listing exists but holds no such name, -ENOENT when
 * there is no stored listing.  *expires_ms receives the listing's expiry
 * in both the 0 and 1 cases.
 */
int meta_listing_find(struct meta *m, const char *dir, const char *name,
		      int64_t *expires_ms, bool *is_dir,
		      struct meta_object *obj);

/* 0 with *expires_ms when @dir has a stored listing (expired or not), or
 * -ENOENT. */
int meta_listing_expiry(struct meta *m, const char *dir, int64_t *expires_ms);

/* Mark the listing of @dir due for a new LIST (expires_ms = 0). */
int meta_listing_expire(struct meta *m, const char *dir);

/*
 * Add (or replace) entry @name of the stored listing of @dir, leaving the
 * listing's times alone; a no-op (0) when @dir has no stored listing.  For
 * a file, the caller stores its object row with meta_object_put().
 */
int meta_entry_add(struct meta *m, const char *dir, const char *name,
		   bool is_dir);

/* Remove entry @name from the stored listing of @dir (0 also when absent). */
int meta_entry_remove(struct meta *m, const char *dir, const char *name);

/*
 * Forget everything stored about keys starting with @prefix (bytewise: no
 * wildcards; "" is every key), in one transaction: objects, listings and
 * entries of directories whose prefix starts with @prefix, negatives.
 * (Used after a directory is renamed or removed.)  Chunk rows are the
 * cache's and staged rows are kept; the entry naming @prefix in its
 * parent's listing is the caller's, with meta_entry_remove().
 */
int meta_forget_prefix(struct meta *m, const char *prefix);

/* One chunk file the cache holds. */
struct meta_chunk {
	const char *name; /* chunk.h's file name */
	const char *key;
	const char *etag;
	uint64_t index;
	uint64_t disk_bytes;
	int64_t atime_ms;
	uint64_t data_len; /* object bytes it holds; 0: not known (schema v2) */
};

int meta_chunk_put(struct meta *m, const struct meta_chunk *c);

/* Delete @n chunk rows in one transaction (missing rows are fine). */
int meta_chunk_delete_many(struct meta *m, const char *const *names, size_t n);

/* Set atime_ms of many chunks in one transaction (missing rows skipped). */
int meta_chunk_touch_many(struct meta *m, const struct meta_touch *t, size_t n);

/* Called per chunk row: 0 to go on, -errno to stop. */
typedef int (*meta_chunk_fn)(void *ctx, const struct meta_chunk *c);

/* Visit every chunk row (any order). */
int meta_chunk_scan(struct meta *m, meta_chunk_fn fn, void *ctx);

/* Visit the chunk rows of object @key whose ETag is not @etag (may be NULL
 * for all of them). */
int meta_chunk_scan_other(struct meta *m, const char *key, const char *etag,
			  meta_chunk_fn fn, void *ctx);

/*
 * Visit the chunk rows whose key starts with @prefix (bytewise; "" is every
 * row), ordered by key, ETag and index.
 */
int meta_chunk_scan_prefix(struct meta *m, const char *prefix, meta_chunk_fn fn,
			   void *ctx);

/* A named counter.  @name borrowed. */
struct meta_counter {
	const char *name;
	uint64_t value;
};

/*
 * Add each @c[i].value to counter @c[i].name (created at 0), in one
 * transaction; zero values are skipped.  Counters only grow, and are reset
 * with the rest of the cache when its source changes (see meta_conf).
 */
int meta_counters_add(struct meta *m, const struct meta_counter *c, size_t n);

/* Called per counter, in byte order of name: 0 to go on, -errno to stop. */
typedef int (*meta_counter_fn)(void *ctx, const struct meta_counter *c);

int meta_counters_scan(struct meta *m, meta_counter_fn fn, void *ctx);

/*
 * The info value @k: 0 with *out (caller frees), -ENOENT, or -errno.  "source"
 * is the source recorded by meta_open().
 */
int meta_info_get(struct meta *m, const char *k, char **out);

/* Set info @k to @v; "source" is meta_open()'s alone (-EINVAL). */
int meta_info_put(struct meta *m, const char *k, const char *v);

/*
 * A file written through the mount whose upload has not finished: the
 * staging file CACHE_DIR/staging/<id> holds the file's bytes for the
 * chunks whose bit is set in @local (bit i of byte i / 8, LSB first);
 * other chunks read as the base object's bytes below base_size, zeros
 * above.  The staging file's length is the file's size.
 *
 * A row is written before the writer is told a write succeeded, so after a
 * crash every acknowledged byte is found again (see cache/writeback).
 * Strings and @local owned by the struct.
 */
struct meta_staged {
	int64_t id;	    /* assigned by meta_staged_add(); > 0 */
	char *key;	    /* full S3 key, unique among staged rows */
	char *base_etag;    /* version the file started from, or NULL */
	uint64_t base_size; /* bytes of the base still part of the file */
	uint8_t *local;	    /* chunk bitmap, may be NULL when local_len 0 */
	size_t local_len;   /* bytes of @local */
	uint32_t mode;	    /* st_mode to upload; 0: default */
	uint32_t uid, gid;  /* (uint32_t)-1: not given */
	int64_t mtime;	    /* seconds; 0: the upload's time */
	char *upload_id;    /* multipart upload in progress, or NULL */
	int64_t created_ms;
};
void meta_staged_release(struct meta_staged *s); /* NULL-safe */

/*
 * Insert @s (its id is ignored) and set s->id.  -EEXIST when a row for
 * s->key exists.
 */
int meta_staged_add(struct meta *m, struct meta_staged *s);

/* Replace every field of row s->id (key included: a rename).  -ENOENT when
 * there is no such row, -EEXIST when another row has s->key. */
int meta_staged_update(struct meta *m, const struct meta_staged *s);

/* Delete row @id (0 also when there was none). */
int meta_staged_delete(struct meta *m, int64_t id);

/* Called per staged row, in id order: 0 to go on, -errno to stop.  @s is
 * borrowed for the call. */
typedef int (*meta_staged_fn)(void *ctx, const struct meta_staged *s);

/* Visit every staged row. */
int meta_staged_scan(struct meta *m, meta_staged_fn fn, void *ctx);

/* Delete every row of every table but info and staged (counters included):
 * staged rows are data not yet in S3 and are never dropped with the cache. */
int meta_clear(struct meta *m);

#endif
