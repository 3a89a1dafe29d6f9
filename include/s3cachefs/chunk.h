/*
 * chunk.h - chunk files: the bytes of the cache on disk.
 *
 * A chunk is a fixed-size piece of one version of one object: bytes
 * [index * chunk_size, min(size, (index + 1) * chunk_size)) of the object
 * whose ETag was seen at open.  Its file is named by the SHA-256 of its
 * identity (endpoint, bucket, key, ETag, index), in hex, and lives in the
 * shard folder named by the first two hex digits:
 *
 *   DIR/ab/ab12...ef      (DIR is CACHE_DIR/chunks; 256 shards 00..ff)
 *
 * Each file holds a header (magic, format version, flags, the identity
 * digest, the data length, per-block CRC-32s of the data and a CRC-32 of
 * the header itself) then the data, raw or zlib-compressed.  A read checks
 * every part it relies on; a file that fails any check is deleted, counted
 * and reported as -EBADMSG, never served.
 *
 * Raw chunks carry one CRC-32 per CHUNK_BLOCK bytes so that a small random
 * read checks and reads only the blocks it touches.  Compressed chunks are
 * inflated whole and checked whole.
 *
 * Encryption at rest: a store given a key (store/crypt.h) writes every
 * chunk sealed with AES-256-GCM (compressed first when it compresses):
 * a fresh random nonce per file, one tag per CHUNK_BLOCK of payload in
 * place of the CRCs, the key's id and the chunk's identity bound to every
 * block, so a small read still decrypts only the blocks it touches.  Such
 * a store serves only chunks sealed under its key, a store without a key
 * only plaintext ones: any other chunk is deleted, counted in wrong_key and
 * reported as -ENOKEY: a miss, like a failed check, but not corruption.  The on-disk
 * formats are described in chunk.c.
 *
 * Files are written under a temporary name in the same shard ("NAME.tmp.
 * PID.N") and renamed into place, so a crash never leaves half a chunk
 * under a chunk's name; chunk_scan() removes leftover temporaries.
 *
 * This module knows nothing of caps, LRU or metadata (cache/cache.h does).
 * Thread-safe: calls on distinct or identical names may run at once; a
 * reader of a name being replaced sees the old or the new file, whole.
 *
 * Memory: besides the caller's buffers, a read allocates at most one
 * chunk's worth of scratch (raw: the blocks it touches; compressed: the
 * whole chunk), freed before it returns; the open-file cache holds
 * open_files entries of about 17 KiB each (4.3 MiB at the default 256).
 */
#ifndef S3CACHEFS_CHUNK_H
#define S3CACHEFS_CHUNK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct crypt_key;

#define CHUNK_NAME_LEN 64    /* hex SHA-256 */
#define CHUNK_BLOCK 65536    /* bytes per CRC-32 of a raw chunk */
#define CHUNK_SIZE_MIN 65536 /* chunk_size= bounds */
#define CHUNK_SIZE_MAX (64u * 1024 * 1024)
#define CHUNK_OPEN_FILES 256 /* chunk files kept open by default */

/* What a chunk is a piece of.  All strings borrowed. */
struct chunk_id {
	const char *endpoint; /* "" for AWS */
	const char *bucket;
	const char *key;  /* full S3 key */
	const char *etag; /* as S3 sent it, quotes included */
	uint64_t index;
};

/*
 * The file name of @id: 64 lowercase hex digits and a NUL.  Fields are
 * length-prefixed before hashing so that no two identities collide by
 * shifting bytes between fields.
 */
void chunk_name(const struct chunk_id *id, char out[CHUNK_NAME_LEN + 1]);

/* True when @s is 64 lowercase hex digits (a chunk name). */
bool chunk_name_valid(const char *s);

/* Chunk math: which chunks cover bytes [off, off + len) of an object. */
static inline uint64_t chunk_index_of(uint64_t off, uint64_t chunk_size)
{
	return off / chunk_size;
}

/* Data bytes of chunk @index of an object of @size bytes (0 past the end). */
static inline uint64_t chunk_len_of(uint64_t index, uint64_t size,
				    uint64_t chunk_size)
{
	uint64_t start = index * chunk_size;

	if (start >= size)
		return 0;
	return size - start < chunk_size ? size - start : chunk_size;
}

/* Number of chunks of an object of @size bytes. */
static inline uint64_t chunk_count_of(uint64_t size, uint64_t chunk_size)
{
	return (size + chunk_size - 1) / chunk_size;
}

struct chunk_store_conf {
	const char *dir;    /* the chunks folder; created with its shards */
	int compress_level; /* 0: store raw; 1..9: zlib level */
	bool durable;	    /* fsync file (and shard) around the rename */
	/* NULL: plaintext; else seal with this key (copied, wiped at close) */
	const struct crypt_key *key;
	/* chunk files chunk_read_cached() keeps open: 0 for CHUNK_OPEN_FILES,
	 * < 0 for none; never more than a quarter of RLIMIT_NOFILE */
	int open_files;
};

struct chunk_stats {
	uint64_t written;      /* files created */
	uint64_t compressed;   /* of those, stored compressed */
	uint64_t corrupt;      /* files that failed a check and were deleted */
	uint64_t read_errors;  /* I/O errors reading (not corruption) */
	uint64_t write_errors; /* I/O errors writing (ENOSPC included) */
	uint64_t wrong_key;    /* files of another key (or none), deleted */
	uint64_t opens;	       /* files chunk_read_cached() opened */
};

struct chunk_store;

/*
 * Open the store at conf->dir, creating it and the 256 shard folders as
 * needed (mode 0700).  The conf's strings are copied.  0, -ENOMEM or the
 * errno of mkdir (logged with the path).
 */
int chunk_store_open(const struct chunk_store_conf *conf,
		     struct chunk_store **out);
void chunk_store_close(struct chunk_store *cs); /* NULL-safe */

/*
 * Store @len bytes (at most CHUNK_SIZE_MAX) as the chunk @name, replacing
 * any file of that name.  Compressed when the store is configured to and the
 * result is smaller than the data, raw otherwise.  *disk_bytes (may be NULL)
 * receives the space the file takes on disk (st_blocks * 512, so headers
 * and block rounding are counted).  0 or -errno (-ENOSPC, -EIO, ...); on
 * error no file of that name was created and no temporary is left.
 */
int chunk_write(struct chunk_store *cs, const char *name, const void *data,
		size_t len, uint64_t *disk_bytes);

/*
 * Copy bytes [off, off + len) of the data of chunk @name into @out, after
 * checking the header (magic, version, identity = @name, header CRC) and the
 * CRC of every block read.  Returns the bytes copied (less than @len only at
 * the end of the chunk's data; 0 when @off is at or past it), -ENOENT when
 * there is no such file, -EBADMSG when it failed a check (the file was
 * deleted and counted), -ENOKEY when it is under another key or none (the
 * same), or another -errno for an I/O error.
 */
ssize_t chunk_read(struct chunk_store *cs, const char *name, uint64_t off,
		   void *out, size_t len);

/*
 * chunk_read() through the store's open-file cache, for the hot path: the
 * file of @name stays open (up to open_files of them, least recently used
 * closed first) with its checked header, so that a repeated read costs
 * an fstat() and one pread() into @out.  Same results and the same
 * guarantee: no byte is returned that did not pass its block's CRC (or
 * tag); a plaintext block that passed through the open file is not
 * checked again while the file stays open and unchanged (size, mtime and
 * ctime as at open; a chunk file is never written in place, so only
 * someone else writing into it changes them, and then the file is
 * reopened and checked again).  A name that is written again, removed or
 * fails a check is closed; a file opened while that happened is not kept.
 * Use chunk_read() to check every byte again (cache_verify).
 */
ssize_t chunk_read_cached(struct chunk_store *cs, const char *name,
			  uint64_t off, void *out, size_t len);

/* Data length recorded in chunk @name's header (header checked, and
 * authenticated when sealed).  Errors as chunk_read(). */
int chunk_data_len(struct chunk_store *cs, const char *name, uint64_t *out);

/*
 * Rewrite chunk @name as this store writes it (sealed under its key, or
 * plaintext without one) when it is readable with @from (NULL: a plaintext
 * chunk): same data, compressed or not as it was, through a temporary and
 * a rename.  For key rotation of an unmounted cache (crypt_rekey_cache).
 * 0 when rewritten; 1 when it already was as the store writes it (nothing
 * done); -ENOKEY when it is under neither key, -EBADMSG when it fails a
 * check (deleted, counted as wrong_key or corrupt); -ENOENT; another
 * -errno for I/O.
 */
int chunk_rekey(struct chunk_store *cs, const char *name,
		const struct crypt_key *from);

/* Delete chunk @name.  0 (also when it did not exist) or -errno. */
int chunk_remove(struct chunk_store *cs, const char *name);

/* Called by chunk_scan() per chunk file: 0 to go on, or -errno to stop. */
typedef int (*chunk_scan_fn)(void *ctx, const char *name, uint64_t disk_bytes);

/*
 * Visit every chunk file in every shard.  Temporaries and files whose names
 * are not chunk names (in a shard) are deleted on the way.  0 or the first
 * -errno (from @fn or from reading a folder).
 */
int chunk_scan(struct chunk_store *cs, chunk_scan_fn fn, void *ctx);

void chunk_get_stats(struct chunk_store *cs, struct chunk_stats *out);

#endif
