/*
 * cache.h - the chunk cache: chunk files kept under a byte cap, least
 * recently used out first.
 *
 * The cache owns an in-memory index of every chunk file (name -> bytes on
 * disk, last access, pins), loaded from the metadata store at open and
 * reconciled with the files: rows without files and files without rows are
 * deleted.  The index is the truth while mounted; the store's chunk rows
 * follow it (a row per admitted chunk, deleted on eviction) and last-access
 * stamps are written in batches by the background thread, never one
 * SQLite write per read.
 *
 * Use counts bytes actually taken on disk: each chunk file's st_blocks *
 * 512 plus the metadata database and its WAL.  Admission (cache_put) evicts
 * unpinned chunks, least recently used first, until the new chunk fits
 * under cap_bytes and leaves min_free_bytes free on the filesystem; if it
 * cannot (everything left is pinned) it returns -ENOSPC and stores nothing.
 * A background thread wakes every flush_ms or when use passes high_pct of
 * the cap, evicts down to low_pct, and writes pending access stamps.
 *
 * Two more limits, both off at 0: max_entries caps the objects (key and
 * ETag) that have chunks cached; going over evicts the least recently used
 * objects' chunks whole.  max_age_ms drops chunks not read for that long;
 * the background thread checks it at least every minute (every quarter of
 * the age when that is shorter), and cache_gc() on demand.
 *
 * A chunk being read (cache_read) is pinned for the duration, so eviction
 * never deletes it under the reader.
 *
 * Disk faults: a failing or full cache disk makes cache_put and cache_read
 * return an error the caller treats as a miss (it goes to S3); such errors
 * are logged at warn at most once per ten minutes for each kind (read,
 * write, no room), at debug otherwise.
 *
 * Thread-safe.
 */
#ifndef S3CACHEFS_CACHE_H
#define S3CACHEFS_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct meta;
struct chunk_store;

struct cache_conf {
	const char *dir;	 /* CACHE_DIR: statvfs and meta.db size */
	uint64_t cap_bytes;	 /* cache_size=; > 0 */
	uint64_t min_free_bytes; /* cache_min_free= */
	unsigned high_pct;	 /* background eviction above this (95) */
	unsigned low_pct;	 /* ... down to this (85) */
	uint32_t flush_ms;	 /* access stamps written this often (5000) */
	uint64_t max_entries;	 /* cache_max_entries=; 0: no limit */
	uint64_t max_age_ms;	 /* cache_max_age=; 0: no limit */
};

/* What a chunk belongs to, recorded in its row.  Strings borrowed. */
struct cache_ref {
	const char *key;
	const char *etag;
	uint64_t index;
};

struct cache_stats {
	uint64_t used_bytes; /* chunk files + metadata, on disk */
	uint64_t cap_bytes;
	uint64_t chunks;
	uint64_t hits;	 /* cache_read served */
	uint64_t misses; /* cache_read found nothing */
	uint64_t admitted;
	uint64_t evicted;
	uint64_t evicted_bytes;
	uint64_t corrupt;   /* chunks that failed their check */
	uint64_t wrong_key; /* chunks under another key (or none): dropped */
	uint64_t disk_errors;
	uint64_t expired;    /* of evicted: for cache_max_age */
	uint64_t objects;    /* objects (key and ETag) with chunks */
	uint64_t data_bytes; /* object bytes the chunks hold */
	uint64_t max_entries;
	uint64_t max_age_ms;
	/* what cache_open() reconciled: files without rows removed, rows
	 * without files deleted */
	uint64_t open_orphans;
	uint64_t open_stale;
	/* chunk files opened by cache_read (the store keeps them open, so
	 * a repeated hit does not count) */
	uint64_t file_opens;
};

struct cache;

/*
 * Load the index from @m, reconcile it with the files of @cs, evict down to
 * the cap, and start the background thread.  @m and @cs are borrowed and
 * must outlive the cache.  0, -ENOMEM, -EINVAL (bad conf), or the errno of
 * the scan (logged).
 */
int cache_open(const struct cache_conf *conf, struct meta *m,
	       struct chunk_store *cs, struct cache **out);

/* Stop the thread, write pending stamps, free.  NULL-safe. */
void cache_close(struct cache *c);

/*
 * Copy bytes [off, off + len) of cached chunk @name into @out, through the
 * chunk store's open-file cache (chunk_read_cached); the chunk is
 * pinned meanwhile and its access time updated (in memory).  Returns the
 * bytes copied (short only at the chunk's end), -ENOENT when not cached
 * (also after dropping a chunk that failed its check), or another -errno
 * for a disk error.
 */
ssize_t cache_read(struct cache *c, const char *name, uint64_t off, void *out,
		   size_t len);

/* True when chunk @name is in the index (no disk access). */
bool cache_contains(struct cache *c, const char *name);

/*
 * Pin chunk @name as cache_read() does for its duration, without reading it
 * or touching its access time, until the matching cache_unpin(): it is not
 * evicted meanwhile, and cache_drop_object() only marks it to go at its
 * last unpin.  Pins nest.  0, or -ENOENT when it is not cached.  For tests,
 * and for a caller holding a chunk across several reads.
 */
int cache_pin(struct cache *c, const char *name);

/* Undo one cache_pin() of @name. */
void cache_unpin(struct cache *c, const char *name);

/*
 * Admit @len bytes as chunk @name of @ref, evicting as needed first.  0,
 * -ENOSPC (no room could be made), or the -errno of writing.  Storing a
 * name already present replaces it.
 */
int cache_put(struct cache *c, const char *name, const struct cache_ref *ref,
	      const void *data, size_t len);

/*
 * Delete the chunks of object @key whose ETag is not @keep_etag (NULL: all
 * of them); a pinned one goes at its last unpin.  0 or -errno.
 */
int cache_drop_object(struct cache *c, const char *key, const char *keep_etag);

/*
 * Count @bytes of data kept elsewhere in the cache directory (files being
 * written) against the cap, evicting chunks first as cache_put() does.
 * 0, or -ENOSPC when no room can be made (nothing is reserved then).
 */
int cache_reserve(struct cache *c, uint64_t bytes);

/* Reserve @bytes without evicting or failing: for staged data found again
 * at start, which is there whether it fits or not. */
void cache_reserve_force(struct cache *c, uint64_t bytes);

/* Give back @bytes of cache_reserve()/cache_reserve_force(). */
void cache_unreserve(struct cache *c, uint64_t bytes);

/* What cache_drop_prefix() dropped (pinned chunks doomed included). */
struct cache_drop_result {
	uint64_t chunks;
	uint64_t bytes; /* on disk */
};

/*
 * Delete the chunks of every object whose key starts with @prefix ("" is
 * all of them), or, with @exact, of object @prefix only; as
 * cache_drop_object() does: a pinned chunk goes at its last unpin, one
 * being written stays.  Staged files are not chunks: never touched.  *out
 * (may be NULL) counts what went.  0 or -errno.
 */
int cache_drop_prefix(struct cache *c, const char *prefix, bool exact,
		      struct cache_drop_result *out);

struct cache_gc_result {
	uint64_t evicted;      /* chunks evicted to get under the cap */
	uint64_t expired;      /* ... not read within the age limit */
	uint64_t capped;       /* ... of objects over max_entries */
	uint64_t freed_bytes;  /* on disk, by the three above */
	uint64_t orphan_files; /* chunk files without an entry, removed */
	uint64_t missing;      /* entries whose file was gone or bad */
	uint64_t stale_rows;   /* rows without an entry, deleted */
};

/*
 * Enforce now, in this order: the age limit (@older_than_ms, or when 0 the
 * conf's max_age_ms), the entry limit, the cap and the free-space floor
 * (all the way under the cap, not to the low watermark); then remove chunk
 * files the index does not know (temporaries of dead processes too), forget
 * entries whose file is gone, and delete rows the index does not know.
 * Pinned chunks stay.  *out (may be NULL) says what went.  0 or -errno.
 */
int cache_gc(struct cache *c, uint64_t older_than_ms,
	     struct cache_gc_result *out);

struct cache_verify_result {
	uint64_t checked; /* chunks read whole */
	uint64_t bad;	  /* of those, dropped: failed a check or unreadable */
};

/*
 * Read every cached chunk whole, checking its header and CRCs, without
 * touching access times; a chunk that fails is dropped (counted corrupt,
 * not evicted) as cache_read() drops one.  0 or -ENOMEM (what was checked
 * so far is in *out).
 */
int cache_verify(struct cache *c, struct cache_verify_result *out);

/* Evict everything unpinned (for tests and tools).  0 or -errno. */
int cache_evict_all(struct cache *c);

void cache_get_stats(struct cache *c, struct cache_stats *out);

#endif
