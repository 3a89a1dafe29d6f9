/*
 * crypt.h - encryption at rest: keys and AES-256-GCM seal/open of buffers.
 *
 * One key encrypts a cache folder's chunk files (store/chunk.h) and staging
 * files (store/sealfile.h).  A key is 32 bytes from a file (key_file=), from
 * the environment variable S3CACHEFS_ENCRYPTION_KEY, or made at random for
 * one mount (encrypt=ephemeral).  Its id, the first 8 bytes of
 * SHA-256("s3cachefs key id v1" || key) in hex, is written beside what it
 * sealed, so that a file sealed with another key is recognised as such
 * (and the key it needs can be named) without revealing anything usable
 * about the key.
 *
 * Sealing is AES-256-GCM through OpenSSL's EVP interface: a 12-byte nonce
 * that callers never reuse with one key (fresh random nonces, or a random
 * base plus a block index, see crypt_nonce_add), a 16-byte tag, and
 * associated data that binds the ciphertext to where it belongs.
 *
 * Key material lives only in struct crypt_key, is never logged, and is
 * wiped by crypt_key_release() (OPENSSL_cleanse).  Errors about what the
 * user gave (a key file, the variable) are one line in @err, naming the
 * file, never quoting the key.
 *
 * Thread-safe: every function may run concurrently; a key is read-only
 * once loaded.
 */
#ifndef S3CACHEFS_CRYPT_H
#define S3CACHEFS_CRYPT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct buf;

#define CRYPT_KEY_LEN 32
#define CRYPT_ID_LEN 8 /* raw bytes of a key id */
#define CRYPT_ID_HEX (2 * CRYPT_ID_LEN)
#define CRYPT_NONCE_LEN 12
#define CRYPT_TAG_LEN 16
#define CRYPT_KEY_ENV "S3CACHEFS_ENCRYPTION_KEY"

struct crypt_key {
	unsigned char key[CRYPT_KEY_LEN];
	unsigned char id[CRYPT_ID_LEN];
	char id_hex[CRYPT_ID_HEX + 1];
	bool ephemeral; /* made by crypt_key_generate: lost at unmount */
};

/* Fill @out from 32 raw key bytes (and compute its id).  Cannot fail. */
void crypt_key_from_bytes(const unsigned char raw[CRYPT_KEY_LEN],
			  struct crypt_key *out);

/*
 * Load the key of file @path: exactly 32 raw bytes, or 64 hex digits
 * (either case) with an optional trailing newline.  The file must be a
 * regular file not readable, writable or executable by its group or others
 * (as chmod 600 leaves it).  0; -ENOENT, -EACCES (mode), -EINVAL (form,
 * length) or another -errno, with one line in @err.
 */
int crypt_key_from_file(const char *path, struct crypt_key *out,
			struct buf *err);

/*
 * Parse @value, the content of S3CACHEFS_ENCRYPTION_KEY: 64 hex digits.
 * 0 or -EINVAL with one line in @err (which never quotes @value).
 */
int crypt_key_from_hex(const char *value, struct crypt_key *out,
		       struct buf *err);

/* A random key (RAND_bytes) marked ephemeral.  0 or -EIO. */
int crypt_key_generate(struct crypt_key *out);

/* Wipe @k (NULL-safe). */
void crypt_key_release(struct crypt_key *k);

/* True when @a and @b are the same key (by id). */
bool crypt_key_same(const struct crypt_key *a, const struct crypt_key *b);

/* @n cryptographically random bytes.  0 or -EIO. */
int crypt_random(void *out, size_t n);

/*
 * @base + @n as a 96-bit big-endian number (mod 2^96): the nonce of block
 * @n of something whose random nonce is @base.
 */
void crypt_nonce_add(const unsigned char base[CRYPT_NONCE_LEN], uint64_t n,
		     unsigned char out[CRYPT_NONCE_LEN]);

/*
 * AES-256-GCM: encrypt @len bytes of @in into @out (the same length; @out
 * may equal @in) under @k and @nonce, authenticating @aad too; the tag goes
 * to @tag.  @len and @aad_len at most INT_MAX.  0, -ENOMEM or -EIO.
 */
int crypt_seal(const struct crypt_key *k, const unsigned char *nonce,
	       const void *aad, size_t aad_len, const void *in, size_t len,
	       void *out, unsigned char *tag);

/*
 * The reverse: decrypt into @out and check @tag.  0; -EBADMSG when the
 * tag does not match (wrong key, nonce, aad or any changed byte), in which
 * case @out holds nothing usable (it is zeroed); -ENOMEM or -EIO.
 */
int crypt_open(const struct crypt_key *k, const unsigned char *nonce,
	       const void *aad, size_t aad_len, const void *in, size_t len,
	       void *out, const unsigned char *tag);

/*
 * Rotation of an UNMOUNTED cache folder (implemented in store/rekey.c,
 * above the chunk and sealed-file modules).
 *
 * Re-encrypt every chunk file (CACHE_DIR/chunks) and every staging file
 * (CACHE_DIR/staging) from @old_key to @new_key, each file atomically
 * (temporary and rename), so an interrupted run can be run again: files
 * already under @new_key are counted in skipped and left alone.  NULL
 * means plaintext on either side.  The folder's lock (CACHE_DIR/lock) is
 * held throughout: -EBUSY when a mount holds it.
 *
 * Staging files (data not yet in S3) are checked first: if any is neither
 * under @old_key nor under @new_key, or cannot be read, nothing is changed
 * and the call fails (-EKEYREJECTED, -EBADMSG or -errno, logged with the
 * file and the key id it needs).  Chunk files that do not decrypt under
 * @old_key (another key, damage) are deleted and counted in
 * chunks_dropped: they are only a cache.  meta.db is not touched; the next
 * mount reconciles its chunk rows with the files.
 *
 * 0 or -errno; *out (may be NULL) is filled either way.
 */
struct crypt_rekey_stats {
	uint64_t chunks_done;	 /* re-encrypted */
	uint64_t chunks_dropped; /* did not decrypt: deleted */
	uint64_t staging_done;	 /* re-encrypted */
	uint64_t skipped;	 /* already under @new_key */
};
int crypt_rekey_cache(const char *cache_dir, const struct crypt_key *old_key,
		      const struct crypt_key *new_key,
		      struct crypt_rekey_stats *out);

#endif
