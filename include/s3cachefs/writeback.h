/*
 * writeback.h - files written through the mount: staging, upload, resume.
 *
 * A file being written is staged: its bytes live in CACHE_DIR/staging/<id>,
 * and a row of the metadata store (struct meta_staged) says which chunks of
 * that file hold them.  The other chunks are still the base object's (the
 * version the file was opened from), read through @fill when needed, so
 * that opening a large object to change a few bytes downloads only the
 * chunks it touches.  The staging file's length is the file's size.
 *
 * Durability.  The row is written (and its chunk bitmap updated) before a
 * write that starts a new chunk returns, so after a crash every
 * acknowledged byte is found again: wb_open() loads the rows and the
 * uploader threads upload them.  wb_flush() uploads and returns the
 * upload's error; a file whose upload failed stays staged and is retried
 * by the threads with a growing delay, never dropped.
 *
 * Background uploads.  A dirty file nobody holds (its last wb_put) is
 * uploaded by one of conf->uploaders threads, several files at once, so a
 * layer above that does not call wb_flush() at close (writeback=async)
 * gets its files uploaded in parallel.  wb_discard() waits for an upload
 * of the file in flight, so a DELETE after it is the last word.
 * wb_close() lets the threads upload every file that is due, then tries
 * once more the ones waiting for a retry.
 *
 * Streaming.  A new file written from its start, once bigger than
 * multipart_threshold, sends each whole part (part_size) on a thread of
 * its own while the writer goes on (at most 4 parts in flight per file,
 * read from the plain staging file), and its upload
 * at flush sends only the rest.  A change of what was sent drops those
 * parts (aborted) and the upload is made the usual way.  The object's
 * x-amz-meta-mtime is then the mtime when its first part went.
 *
 * Upload.  One PUT, or a multipart upload of parallel parts above the
 * client's threshold; when a large file still has whole parts of its base
 * untouched, those parts are copied server-side (UploadPartCopy from the
 * base version, with If-Match) instead of downloaded and sent again.  Every
 * upload carries the attributes as s3fs stores them (x-amz-meta-mode,
 * -uid, -gid, -mtime).  Once uploaded, the object's row and its parent's
 * listing are updated, @done tells the layer above, and an uploader thread
 * then copies the staged chunks into the cache under the new ETag (the
 * file stays staged, and read from its staging file, until it has; a
 * change before that drops the copy), so that a close does not wait for
 * it.
 *
 * Encryption at rest.  With conf->key every staging file is a sealed file
 * (store/sealfile.h) named "ID.sealed", ID the staged row's id, which is
 * also its binding: a file copied to another row's name fails.  Without a
 * key it is the plain file "ID".  At start, a plain staging file found by a
 * mount with a key is sealed (and the plain one removed); a file sealed
 * under a key the mount does not have makes wb_open() fail with
 * -EKEYREJECTED and one error line naming the key id needed (it is data
 * not yet in S3: never dropped, never read as garbage), unless that key was
 * ephemeral, in which case it can never be read again: the loss is logged
 * as an error, one line per key, and the row dropped.  A sealed file is
 * uploaded from memory: one PUT up to multipart_threshold (that much
 * memory), else a multipart upload whose parts are decrypted and sent one
 * at a time (part_size of memory; not in parallel).
 *
 * Space.  Each chunk the staging file holds is reserved in the cache
 * (cache_reserve), evicting cached chunks to make room; a write that
 * cannot be given room fails with -ENOSPC.
 *
 * Thread-safe.  Lock order: f->up, f->io, w->lock, f->lock.
 */
#ifndef S3CACHEFS_WRITEBACK_H
#define S3CACHEFS_WRITEBACK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "s3cachefs/s3.h"

struct s3;
struct crypt_key;
struct meta;
struct cache;

/* Attributes a file is uploaded with; see struct meta_object. */
struct wb_attrs {
	uint32_t mode; /* with type bits; 0: regular file, 0644 */
	uint32_t uid, gid;
	int64_t mtime; /* seconds; 0: now */
};

/*
 * The user metadata s3fs stores attributes in (x-amz-meta-mode, -uid,
 * -gid, -mtime, decimal), built in this one place for every upload, copy
 * and marker.  wb_attrs_meta() fills @out; out->meta/out->n point into it.
 */
struct wb_meta {
	struct s3_meta meta[4];
	char val[4][24];
	size_t n;
};
void wb_attrs_meta(const struct wb_attrs *a, struct wb_meta *out);

/* What an upload produced, passed to @done.  Strings borrowed. */
struct wb_result {
	const char *key;
	const char *etag;
	uint64_t size;
	int64_t mtime;
	struct wb_attrs attrs;
};

/*
 * Read bytes [off, off + len) of version @etag of @key (@size bytes) into
 * @buf: the layer above's read path, cache first.  0 or -errno.
 */
typedef int (*wb_fill_fn)(void *ctx, const char *key, const char *etag,
			  uint64_t size, uint64_t off, void *buf, size_t len);

/* Called after each successful upload, with no lock of this module held. */
typedef void (*wb_done_fn)(void *ctx, const struct wb_result *r);

struct wb_conf {
	const char *dir; /* CACHE_DIR; staging files go in DIR/staging */
	const char *endpoint, *bucket; /* cache chunk identity */
	uint64_t chunk_size;
	uint64_t part_size;	      /* multipart part size (>= 5 MiB) */
	uint64_t multipart_threshold; /* one PUT up to this size */
	uint64_t meta_ttl_ms;	      /* uploaded objects' rows trusted */
	uint32_t retry_max_ms;	      /* longest delay between retries */
	unsigned uploaders; /* background upload threads, 1..64; 0: 1 */
	/* NULL: plain staging files; else sealed with it (borrowed: it must
	 * outlive the wb) */
	const struct crypt_key *key;
	wb_fill_fn fill;
	wb_done_fn done;
	void *ctx;
};

struct wb;
struct wb_file;

/*
 * Create DIR/staging, load the staged rows (removing staging files without
 * a row and logging rows without a file), reserve their space, and start
 * the thread that uploads them.  0, -ENOMEM, -EINVAL, -EKEYREJECTED (a
 * staging file needs another key, logged; see above), or the errno of the
 * staging directory (logged).
 */
int wb_open(const struct wb_conf *conf, struct s3 *s, struct meta *m,
	    struct cache *c, struct wb **out);

/* Try once more to upload every pending file, stop the thread, free.
 * What still fails stays staged for the next mount.  NULL-safe. */
void wb_close(struct wb *w);

/* The staged file of @key with a new reference, or NULL. */
struct wb_file *wb_find(struct wb *w, const char *key);

/*
 * The staged file of @key, created when there is none: based on version
 * @base_etag (@base_size bytes) of the object, or empty when @base_etag is
 * NULL.  @attrs (may be NULL) are the attributes to upload.  With
 * @truncate the file starts empty either way.  Returns a new reference.
 * 0, -ENOMEM, -EIO (the staging file or row could not be made, logged).
 */
int wb_stage(struct wb *w, const char *key, const char *base_etag,
	     uint64_t base_size, const struct wb_attrs *attrs, bool truncate,
	     struct wb_file **out);

/*
 * Drop a reference.  At the last one a file with nothing left to upload
 * is removed (staging file and row); a pending one stays for the thread.
 */
void wb_put(struct wb *w, struct wb_file *f);

/* Bytes read (short only at the end), or -errno. */
ssize_t wb_read(struct wb *w, struct wb_file *f, void *buf, size_t size,
		uint64_t off);

/* Write all of @buf at @off.  @size, or -ENOSPC, -EIO, -EFBIG. */
ssize_t wb_write(struct wb *w, struct wb_file *f, const void *buf, size_t size,
		 uint64_t off);

int wb_truncate(struct wb *w, struct wb_file *f, uint64_t size);

/* Change the attributes to upload (fields with their mask bit). */
#define WB_SET_MODE 1u
#define WB_SET_UID 2u
#define WB_SET_GID 4u
#define WB_SET_MTIME 8u
void wb_set_attrs(struct wb *w, struct wb_file *f, const struct wb_attrs *a,
		  unsigned mask);

struct wb_stat {
	uint64_t size;
	struct wb_attrs attrs; /* mtime: of the last change */
	bool dirty;	       /* changes not uploaded yet */
};
void wb_stat(struct wb *w, struct wb_file *f, struct wb_stat *out);

/*
 * Upload @f when it has changes the bucket has not seen.  0, or the
 * upload's -errno (the file stays staged and is retried).
 */
int wb_flush(struct wb *w, struct wb_file *f);

/* The file was deleted: never upload it; its staging goes at once. */
void wb_discard(struct wb *w, struct wb_file *f);

/*
 * Move @f to @new_key (a staged file there is discarded) and upload it
 * there.  The old key is the caller's to delete.  0 or -errno.
 */
int wb_rename(struct wb *w, struct wb_file *f, const char *new_key);

/* Called per staged key below a prefix; 0 to go on. */
typedef int (*wb_key_fn)(void *ctx, const char *key, const struct wb_stat *st);

/* Visit the staged files whose key starts with @prefix. */
int wb_each_under(struct wb *w, const char *prefix, wb_key_fn fn, void *ctx);

/* Upload every staged file whose key starts with @prefix; first -errno. */
int wb_flush_under(struct wb *w, const char *prefix);

struct wb_stats {
	uint64_t uploads;
	uint64_t upload_failures;
	uint64_t bytes_uploaded;
	uint64_t parts_copied; /* UploadPartCopy parts */
	uint64_t streamed;     /* uploads begun while the file was written */
	uint64_t resumed;      /* files found staged at start */
	uint64_t pending;      /* files staged now */
};
void wb_get_stats(struct wb *w, struct wb_stats *out);

#endif
