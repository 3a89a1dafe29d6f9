/*
 * sealfile.h - files read and written at any offset, stored encrypted.
 *
 * The staging files of cache/writeback.h hold written data at random
 * offsets (pread, pwrite, ftruncate).  With a key (store/crypt.h) they are
 * kept as sealed files: a 64-byte header (magic, version, the key's id and
 * whether it was ephemeral, the file's binding id, a CRC) and then records
 * of SEAL_RECORD plaintext bytes, each stored as a fresh random 12-byte
 * nonce, the AES-256-GCM ciphertext and a 16-byte tag; only the last record
 * may be shorter.  A record's associated data is the header's identifying
 * bytes (magic, version, flags, key id, binding id), its index and its
 * length, so a record moved to another place, another file (another
 * binding id: writeback uses the staged row's id) or a file cut short
 * inside a record fails.  The logical size follows from the file's length
 * and is not stored.
 *
 * Holes.  A record whose stored bytes are all zero (nonce, ciphertext and
 * tag) was never written: it reads as zeros.  That keeps a truncate that
 * grows a file, or a write far past its end, cheap (the file system's
 * sparse zeros), as for a plain file.  The price: someone who can write the
 * cache folder can zero a whole record and it reads as zeros instead of
 * failing; changing any other byte, or cutting the file inside a record,
 * fails the read.  Cutting the file at a record boundary shortens it
 * undetected (the size is not sealed).
 *
 * Writes.  A write that covers a record's whole new length seals it
 * directly; a partial one reads the record, changes it and seals it again
 * under a new nonce (read-modify-write).  A file growing past a short last
 * record first rewrites that record at full length.  A crash in the middle
 * of a write or of a truncate that shortens a file can leave the record
 * being rewritten unreadable (its reads then fail with -EBADMSG), where a
 * plain file would hold a mix of old and new bytes.
 *
 * Without a key the same calls pass straight through to a plain file
 * (pread, pwrite, ftruncate), whose length is its size.
 *
 * Nonces are random: with one key, stay well below 2^32 record writes
 * (rotate the key, crypt_rekey_cache, long before).
 *
 * Threads: every call may run concurrently with every other on the same
 * file but seal_close(); reads run in parallel, a write or truncate alone
 * (an internal lock), so a read never sees a record half rewritten.
 */
#ifndef S3CACHEFS_SEALFILE_H
#define S3CACHEFS_SEALFILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "s3cachefs/crypt.h"

#define SEAL_RECORD 65536 /* plaintext bytes per record */
#define SEAL_SUFFIX ".sealed"

struct seal_file;

/* What the header of a sealed file says. */
struct seal_info {
	char key_id[CRYPT_ID_HEX + 1]; /* hex id of the key it needs */
	bool ephemeral;		       /* sealed with an ephemeral key */
	uint64_t binding;
	uint64_t size; /* logical size */
};

/*
 * The staging file name of row @id: "ID" plain, "ID.sealed" sealed, in
 * @out (at least 32 bytes).
 */
void seal_name(int64_t id, bool sealed, char *out, size_t len);

/* Parse such a name: true with *id and *sealed set, false otherwise. */
bool seal_name_parse(const char *name, int64_t *id, bool *sealed);

/*
 * Create @path (mode 0600; an existing file is emptied) as an empty file,
 * sealed under @key with binding @binding, or plain when @key is NULL.
 * @key is copied.  0 or -errno.
 */
int seal_create(const char *path, const struct crypt_key *key, uint64_t binding,
		struct seal_file **out);

/*
 * Open the existing @path: plain when @key is NULL, else a sealed file
 * that must be under @key with binding @binding.  0; -ENOENT; -EKEYREJECTED
 * when it is sealed under another key; -EBADMSG when it is not a sealed
 * file of this binding or its length is impossible; another -errno.
 */
int seal_open(const char *path, const struct crypt_key *key, uint64_t binding,
	      struct seal_file **out);

/*
 * Read the header of sealed file @path without a key.  0; -EBADMSG when
 * it is not a sealed file (a plain one, or damaged); -ENOENT or -errno.
 */
int seal_probe(const char *path, struct seal_info *out);

void seal_close(struct seal_file *sf); /* NULL-safe; wipes buffers */

/* The logical size. */
uint64_t seal_size(struct seal_file *sf);

/* True when @sf is sealed (opened or created with a key). */
bool seal_is_sealed(const struct seal_file *sf);

/* A plain file's descriptor (for zero-copy uploads); -1 when sealed. */
int seal_plain_fd(const struct seal_file *sf);

/*
 * Read up to @len bytes at @off: the bytes read, short only at the end of
 * the file (0 at or past it); -EBADMSG when a record fails authentication
 * (logged), -ENOMEM or another -errno.
 */
ssize_t seal_pread(struct seal_file *sf, void *buf, size_t len, uint64_t off);

/* Write all of @buf at @off, growing the file as needed.  0 or -errno. */
int seal_pwrite(struct seal_file *sf, const void *buf, size_t len,
		uint64_t off);

/* Set the size; new bytes read as zeros.  0 or -errno. */
int seal_truncate(struct seal_file *sf, uint64_t size);

/* fsync.  0 or -errno. */
int seal_sync(struct seal_file *sf);

/*
 * Copy the whole of @src into a new file @dst_path, sealed under @key
 * (plain when NULL) with binding @binding: written to a temporary beside
 * @dst_path, fsynced and renamed over it, so @dst_path is the old file or
 * the whole new one.  Runs of zeros a record long stay holes.  0 or -errno
 * (a failure of @src is -EBADMSG, logged).
 */
int seal_copy(struct seal_file *src, const char *dst_path,
	      const struct crypt_key *key, uint64_t binding);

#endif
