/*
 * vfs.h - filesystem semantics on inode numbers, with no FUSE types.
 *
 * The vfs maps a bucket (optionally below a prefix) to a tree of inodes:
 * directories are common prefixes and "dir/" marker objects, files are
 * objects.  It answers lookups and listings from the metadata store while
 * their TTL holds and from S3 (LIST, HEAD) when it does not, and reads
 * files through the chunk cache, fetching missing chunks with ranged GETs
 * that carry If-Match with the ETag seen at open: parallel sub-range GETs
 * of 1 MiB per chunk, a reader returning once its own part is in.
 *
 * Names.  A key segment becomes a file name unless it cannot be one: empty
 * segments (from "//"), "." and "..", and segments over 255 bytes are not
 * shown.  When a key is both an object and a prefix ("a" and "a/b"), the
 * directory is shown and the object is not.  Any other bytes are names as
 * they are (control characters, no UTF-8).  A name a change makes (create,
 * mkdir, symlink, rename's target) must be UTF-8, as S3 keys are: -EILSEQ.
 *
 * Consistency.  An open file reads the version whose ETag it saw at open:
 * cached chunks are keyed by that ETag, fetched ones are asked for with
 * If-Match.  When S3 answers that the object changed (412), the read fails
 * with -EIO (logged), the object's metadata is expired, and the next open
 * sees the new version.  Metadata is trusted for meta_ttl, then revalidated
 * (HEAD, or LIST for directories); when S3 cannot be reached, what is known
 * is served and the failure logged.
 *
 * Inode numbers live as long as the kernel holds a lookup reference (the
 * lookup count of FUSE); the root is VFS_ROOT_INO and never forgotten.
 *
 * Thread-safe: every call may run concurrently with every other.
 */
#ifndef S3CACHEFS_VFS_H
#define S3CACHEFS_VFS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct s3;
struct meta;
struct cache;
struct crypt_key;

#define VFS_ROOT_INO 1
#define VFS_NAME_MAX 255

/*
 * When an open of a clean file checks that its ETag is still S3's:
 * TTL once meta_ttl has passed since S3 last said so; ALWAYS at every
 * open (a HEAD); NEVER: a known object's size and ETag are trusted for
 * good (lookups, getattr and opens ask S3 only about names they have no
 * row for; listings still expire), for data sets that do not change.
 */
enum vfs_validate { VFS_VALIDATE_TTL, VFS_VALIDATE_ALWAYS, VFS_VALIDATE_NEVER };

struct vfs_conf {
	const char *endpoint; /* chunk identity; "" for AWS */
	const char *bucket;
	const char *prefix;	  /* "" or a key prefix ending in '/' */
	uint64_t chunk_size;	  /* CHUNK_SIZE_MIN..CHUNK_SIZE_MAX */
	uint64_t meta_ttl_ms;	  /* trust metadata this long */
	uint64_t negative_ttl_ms; /* trust "no such name" this long */
	/*
	 * Listing a directory first lists its whole subtree without
	 * delimiter, up to this many keys, and stores every folder's listing
	 * from it (see tree.h); larger subtrees fall back to a listing of the
	 * directory alone.  0: never.
	 */
	uint64_t list_flat_keys;
	uint64_t readahead; /* largest window ahead of a reader */
	unsigned prefetch;  /* threads fetching ahead and parts of
				   * missing chunks (>= 1) */
	/* writes (see cache/writeback.h) */
	const char *cache_dir;	      /* staging files go below it */
	uint64_t part_size;	      /* multipart part size */
	uint64_t multipart_threshold; /* one PUT up to this size */
	bool writeback_async;	      /* close does not wait for the upload */
	unsigned uploaders; /* files uploaded at once in the background */
	bool ro;	    /* refuse every change with -EROFS */
	uint32_t uid, gid;  /* owner of what has no x-amz-meta-uid/gid */
	bool has_umask;	    /* clear umask's bits from every mode shown */
	uint32_t umask;
	enum vfs_validate validate; /* when vfs_open() asks S3 for the ETag */
	/*
	 * allow_other: modes and owners are what the kernel checks others
	 * against, so they are read before vfs_lookup and vfs_getattr give
	 * them out: a file's with a HEAD, a directory's from its "dir/"
	 * marker (HEAD, then kept for meta_ttl; no marker: the defaults).
	 * What could not be read yet shows no group or other permission bits.
	 */
	bool strict_attrs;
	/* encryption at rest: staging files are sealed with it, or plain
	 * when NULL (borrowed: it must outlive the vfs) */
	const struct crypt_key *key;
};

struct vfs_attr {
	uint64_t ino;
	bool is_dir;
	uint64_t size;
	int64_t mtime; /* seconds since the epoch */
	uint32_t mode; /* st_mode, type bits included */
	uint32_t uid, gid;
	bool tentative; /* x-amz-meta-* not read yet (seen only in a
			 * listing): default modes and owners.  Files, and
			 * with strict_attrs directories but the root */
	/* vfs_readdir: the entry may be gone or its attributes the writer's;
	 * link no inode for it, let the kernel look it up */
	bool name_only;
};

struct vfs_stats {
	uint64_t reads;		 /* vfs_read calls */
	uint64_t bytes_read;	 /* returned to readers */
	uint64_t chunk_hits;	 /* chunks served from the cache */
	uint64_t chunk_fetches;	 /* chunks fetched from S3 */
	uint64_t prefetches;	 /* of those, fetched ahead of a reader */
	uint64_t stale;		 /* reads failed by a changed object (412) */
	uint64_t cache_bypass;	 /* chunks served without the disk cache */
	uint64_t direct_reads;	 /* O_DIRECT reads sent straight to S3 */
	uint64_t written_behind; /* fetched chunks the writer thread admitted,
				  * while their fetcher went on */
};

/* How an open file's reads were served, for vfs_cache_info(). */
enum vfs_served {
	VFS_SERVED_UNKNOWN, /* not opened since the mount, or still open */
	VFS_SERVED_NONE,    /* opened, but no read reached the vfs */
	VFS_SERVED_CACHE,   /* every chunk read came from the cache */
	VFS_SERVED_S3,	    /* every chunk read came from S3 */
	VFS_SERVED_MIXED,   /* some of each */
	VFS_SERVED_DIRECT,  /* O_DIRECT: S3, the cache bypassed */
	VFS_SERVED_STAGED,  /* read through its staging file */
};

/* What the cache holds of one file (getfattr). */
struct vfs_cache_info {
	char *etag; /* owned (free()), NULL when not known yet */
	uint64_t size;
	uint64_t chunks;	   /* of the version @etag */
	uint64_t cached_chunks;	   /* of those, in the disk cache */
	uint64_t cached_bytes;	   /* their data bytes */
	bool staged;		   /* written through the mount, not uploaded */
	enum vfs_served last_open; /* of the last open released */
};

struct vfs;

/*
 * Build a vfs over @s, @m and @c (borrowed; they must outlive it) and start
 * its prefetch threads.  Strings of @conf are copied.  0, -ENOMEM, -EINVAL.
 */
int vfs_new(const struct vfs_conf *conf, struct s3 *s, struct meta *m,
	    struct cache *c, struct vfs **out);
void vfs_free(struct vfs *v); /* stops the threads; NULL-safe */

/*
 * Find @name in directory @parent.  On success *out is filled and the
 * inode's lookup count goes up by one.  -ENOENT (also for names the rules
 * above hide), -ENOTDIR, -ENAMETOOLONG, -EIO when S3 could not be asked
 * and nothing is known.
 */
int vfs_lookup(struct vfs *v, uint64_t parent, const char *name,
	       struct vfs_attr *out);

/* Drop @n lookup references of @ino; frees it at zero. */
void vfs_forget(struct vfs *v, uint64_t ino, uint64_t n);

/* Attributes of @ino, revalidated when their TTL has passed. -ENOENT for an
 * unknown inode. */
int vfs_getattr(struct vfs *v, uint64_t ino, struct vfs_attr *out);

/*
 * A snapshot of a directory's entries, taken at open ("." and ".." are the
 * caller's).  Entries are in byte order of name.
 */
struct vfs_dir;
int vfs_opendir(struct vfs *v, uint64_t ino, struct vfs_dir **out);
void vfs_releasedir(struct vfs *v, struct vfs_dir *d); /* NULL-safe */

/*
 * Called per entry from vfs_readdir: @attr->ino is valid; @next is the
 * offset of the following entry.  Return 0 when the entry was taken, 1
 * when the caller's buffer is full (the entry was not taken).
 */
typedef int (*vfs_dirent_fn)(void *ctx, const char *name,
			     const struct vfs_attr *attr, uint64_t next);

/*
 * Emit entries from offset @off (0 is the first) until @fn returns 1 or the
 * snapshot ends.  With @plus, each entry taken counts as a lookup (as
 * FUSE's readdirplus requires), except those marked name_only: every entry
 * of a snapshot taken before a change this mount made to the bucket
 * (unlink, rmdir, rename, upload, mkdir, ...), and files being written
 * (their attributes are the writer's).  Such
 * entries refresh no cached attributes.  0 or -errno.
 */
int vfs_readdir(struct vfs *v, struct vfs_dir *d, uint64_t off, bool plus,
		vfs_dirent_fn fn, void *ctx);

struct vfs_file;

/*
 * Open file @ino for reading: revalidates the ETag as conf->validate says
 * and fixes it for the life of the handle.  With O_DIRECT in @flags, reads
 * go to S3 (ranged GETs of exactly the bytes asked, If-Match on the ETag)
 * and neither read nor fill the cache.  *keep_cache is set when the
 * kernel's cached pages of this inode may be kept (the ETag is the one of
 * the previous open).  Write access (or O_TRUNC) stages the file; a staged
 * file is read through its staging.  -EISDIR, -ENOENT, -EROFS for write
 * access on a read-only mount.
 */
int vfs_open(struct vfs *v, uint64_t ino, int flags, struct vfs_file **out,
	     bool *keep_cache);

/*
 * True when the open of @f asked S3 about the object (or found it staged),
 * so that the attributes the kernel holds (its size above all) may be
 * older than the handle's.  Otherwise every attribute the kernel holds came
 * from a reply made from the same node, and needs no invalidation.
 */
bool vfs_file_attrs_moved(const struct vfs_file *f);

/*
 * Read up to @size bytes at @off into @buf.  Returns the bytes read (short
 * only at the end of the file), or -EIO (S3 unreachable after the configured
 * timeout, or the object changed since open).
 */
ssize_t vfs_read(struct vfs *v, struct vfs_file *f, void *buf, size_t size,
		 uint64_t off);

void vfs_release(struct vfs *v, struct vfs_file *f); /* NULL-safe */

/*
 * Changes.  Each refuses with -EROFS on a read-only mount and returns 0 or
 * -errno (-EIO when S3 could not be reached or refused for a reason of its
 * own, S3's meaning otherwise: -EACCES, -ENAMETOOLONG, ...).
 *
 * Written files are staged (cache/writeback.h) and uploaded at
 * vfs_flush() (close) and vfs_fsync(); with conf.writeback_async,
 * vfs_flush() does not upload: the staged file (durable locally) is
 * uploaded by the background uploaders once released, and only
 * vfs_fsync() and unmount wait for it.  A change made by path with no handle
 * (truncate, chmod, chown, utimens) is sent before the call returns.
 * Attributes are stored as s3fs stores them: x-amz-meta-mode (st_mode with
 * the type bits), -uid, -gid, -mtime.
 */

/* Create and open file @name (regular) in @parent, empty; *out gets its
 * attributes and one lookup reference. */
int vfs_create(struct vfs *v, uint64_t parent, const char *name, uint32_t mode,
	       int flags, uint32_t uid, uint32_t gid, struct vfs_attr *out,
	       struct vfs_file **fout);

/* Write @size bytes at @off (at the end with O_APPEND).  @size or -errno:
 * -ENOSPC when the cache cannot make room for them, -EBADF on a handle
 * opened read-only. */
ssize_t vfs_write(struct vfs *v, struct vfs_file *f, const void *buf,
		  size_t size, uint64_t off);

/* At close: upload what @f's file has that the bucket has not, and return
 * the upload's error; with conf.writeback_async, 0 at once (the upload is
 * left to the background). */
int vfs_flush(struct vfs *v, struct vfs_file *f);

/* fsync: upload what @f's file has that the bucket has not, whatever the
 * mode, waiting for an upload in flight; the upload's -errno. */
int vfs_fsync(struct vfs *v, struct vfs_file *f);

#define VFS_SET_MODE 1u
#define VFS_SET_UID 2u
#define VFS_SET_GID 4u
#define VFS_SET_MTIME 8u
#define VFS_SET_SIZE 16u

/* Change what @mask names; @f is the handle of an ftruncate/fchmod or
 * NULL.  *out gets the new attributes. */
int vfs_setattr(struct vfs *v, uint64_t ino, struct vfs_file *f, unsigned mask,
		uint64_t size, uint32_t mode, uint32_t uid, uint32_t gid,
		int64_t mtime, struct vfs_attr *out);

int vfs_unlink(struct vfs *v, uint64_t parent, const char *name);

/* Write the marker "name/" (x-amz-meta-mode of a directory). */
int vfs_mkdir(struct vfs *v, uint64_t parent, const char *name, uint32_t mode,
	      uint32_t uid, uint32_t gid, struct vfs_attr *out);

/* Delete the marker; -ENOTEMPTY when any key is below (implicit ones and
 * files being written included). */
int vfs_rmdir(struct vfs *v, uint64_t parent, const char *name);

/*
 * Rename a file (CopyObject, multipart copy above 5 GiB, then
 * DeleteObject) or a directory (every key below, one by one: not atomic;
 * a failure midway leaves the keys moved so far moved).  @flags: 0 or
 * RENAME_NOREPLACE (1); RENAME_EXCHANGE is -EINVAL.
 */
int vfs_rename(struct vfs *v, uint64_t parent, const char *name,
	       uint64_t newparent, const char *newname, unsigned flags);

/* A link stored as s3fs does: body = @target, mode S_IFLNK | 0777. */
int vfs_symlink(struct vfs *v, uint64_t parent, const char *name,
		const char *target, uint32_t uid, uint32_t gid,
		struct vfs_attr *out);

/* The target of link @ino, NUL-terminated in @buf of @size bytes. */
int vfs_readlink(struct vfs *v, uint64_t ino, char *buf, size_t size);

void vfs_get_stats(struct vfs *v, struct vfs_stats *out);

/*
 * The cache state of file @ino (no S3 request: what is known now).
 * 0, -ENOENT (unknown inode), -EISDIR, -ENOMEM.
 */
int vfs_cache_info(struct vfs *v, uint64_t ino, struct vfs_cache_info *out);

/* "cache", "s3", "mixed", "none", "direct", "staged" or "unknown". */
const char *vfs_served_name(enum vfs_served s);

#endif
