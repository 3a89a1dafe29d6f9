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
 *   chunks     chunk file name -> key, ETag, index, bytes on disk, last access
 *   info       the schema version (PRAGMA user_version) and the source
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
	 * database records another source, every row is deleted first
	 * (logged at info): one cache directory serves one bucket.
	 */
	const char *source;
};

struct meta;

/*
 * Open or create the database, migrate it, and prepare statements.
 * 0, -ENOMEM, -EPROTO (schema newer than this program), -EIO (anything
 * else SQLite refused: logged with its message and the path).
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
};
void meta_object_release(struct meta_object *o); /* NULL-safe */

/* 0 and *out filled (caller releases), -ENOENT, or -EIO. */
int meta_object_get(struct meta *m, const char *key, struct meta_object *out);

/*
 * Insert or replace the object @o->key and drop any negative entry for it.
 * An existing row keeps its atime_ms when @o->atime_ms is 0.
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

/* Mark the listing of @dir due for a new LIST (expires_ms = 0). */
int meta_listing_expire(struct meta *m, const char *dir);

/* One chunk file the cache holds. */
struct meta_chunk {
	const char *name; /* chunk.h's file name */
	const char *key;
	const char *etag;
	uint64_t index;
	uint64_t disk_bytes;
	int64_t atime_ms;
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

/* Delete every row of every table but info. */
int meta_clear(struct meta *m);

#endif
