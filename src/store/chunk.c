/*
 * chunk.c - chunk files: naming, the on-disk format, checked reads and
 * atomic writes, and the startup scan.
 *
 * Why: the cache must never serve bytes it cannot vouch for, and a crash
 * must never leave half a chunk under a chunk's name.  So every file
 * carries its own identity and checksums, every read checks what it
 * relies on, and every write goes through a temporary and a rename.
 *
 * Layout: DIR/XY/NAME, NAME = 64 lowercase hex digits of SHA-256 over
 * (u64 BE length, bytes) of endpoint, bucket, key and ETag, then the index
 * as u64 BE; XY = the first two digits of NAME.  Temporaries are
 * DIR/XY/NAME.tmp.PID.N in the same shard, so the rename never crosses a
 * file system.
 *
 * File format.  All integers little-endian, encoded byte by byte (never a
 * struct dump).  Version 1 is plaintext, written by a store without a key:
 *
 *   off  size  field
 *     0     8  magic "S3CCHUNK"
 *     8     2  format version (1)
 *    10     2  flags: bit 0 = payload is zlib (compress2) output;
 *              any other bit set makes the file invalid
 *    12     4  reserved, written 0, must read 0
 *    16    32  identity: the raw SHA-256 the file name is the hex of
 *    48     8  data_len: bytes of data (uncompressed), <= CHUNK_SIZE_MAX
 *    56     8  stored_len: bytes of payload after the header
 *    64     4  n_blocks = ceil(data_len / CHUNK_BLOCK)
 *    68  4*nb  CRC-32 (zlib) of each CHUNK_BLOCK of the uncompressed data,
 *              the last block possibly short
 *  68+4nb   4  CRC-32 of header bytes [0, 68 + 4 * n_blocks)
 *  72+4nb      payload: stored_len bytes
 *
 * Version 2 is sealed (AES-256-GCM, store/crypt.h), written by a store with
 * a key.  It holds no plaintext CRC (that would leak the data):
 *
 *     0    16  magic, version (2), flags as above but bit 1 (sealed) must
 *              be set, reserved
 *    16    40  identity, data_len, stored_len as above
 *    64     4  n_segs = ceil(stored_len / CHUNK_BLOCK)
 *    68     8  key id (struct crypt_key.id)
 *    76    12  nonce: random, fresh for every file written
 *    88     4  CRC-32 of header bytes [0, 88)
 *    92 16*ns  GCM tag of each segment
 *  92+16ns     payload: stored_len bytes of ciphertext
 *
 * The payload (the data, or its zlib output: compress, then encrypt) is
 * cut into segments of CHUNK_BLOCK bytes, the last possibly short.
 * Segment i is sealed on its own under nonce + i (a 96-bit big-endian sum,
 * so no two segments of any two files share a nonce unless two random
 * nonces fall within 1024 of each other) with associated data = header
 * bytes [0, 88) || u32 BE i.  So a raw chunk still reads and decrypts only
 * the 64 KiB blocks a read touches; the identity, lengths, flags and key id
 * are bound to every segment (a file renamed to another chunk's name, or
 * with any header byte changed, fails), and segments cannot be swapped.
 *
 * Raw: stored_len == data_len.  Compressed: 0 < stored_len < data_len; a
 * chunk is stored compressed only when that makes it smaller.  The file
 * size is exactly header + stored_len.
 *
 * Keys.  A store with a key serves only version 2 files under that key's
 * id; a store without one serves only version 1.  Any other file (a
 * plaintext chunk under a key, a sealed one without a key or under another
 * key) is deleted, counted in wrong_key and reported as -ENOKEY: to the
 * cache it is a miss, like a failed check, but not corruption.
 *
 * Invariants: a file under a chunk name was complete when renamed there;
 * a read returns data only after the header and the CRC (or tag) of every
 * block it copies from were checked; a file that fails a check is unlinked
 * (if the name still refers to it), counted and reported once as -EBADMSG.
 *
 * Open files.  Reads through chunk_read_cached() keep up to fdc_max chunk
 * files open (least recently used closed first), each with its checked
 * header, so that a hit costs one pread instead of an open, a header read
 * and a close, and the kernel's readahead state of the file lives on
 * between reads.  A plaintext raw block whose CRC passed through an open
 * file is not checked again through that file: chunk files are never
 * written in place (every write is a new file renamed over the name), so
 * the bytes behind an open fd cannot change from our side, and a read
 * first fstat()s the fd and drops it when its size, mtime or ctime moved
 * (someone wrote into the file), which checks everything again.  A name is
 * dropped from the cache after it is renamed over (store_file), removed
 * (chunk_remove) or failed a check (unlink_if_same); fdc_seq counts those
 * drops, and a reader that opened a file adds it only if no drop happened
 * since it began, so no fd to a replaced or deleted file is ever kept (it
 * would hold the old file's disk space, uncounted by the cache's cap).
 * An fd dropped while a reader uses it is closed by its last reader
 * (refs).  Bound: fdc_max entries of about 17 KiB (the header holds up to
 * MAX_BLOCKS CRCs) and one fd each.
 *
 * Concurrency: no state is shared between calls but the stats (atomics),
 * the temporary counter (atomic) and tmp_lock.  Writers hold tmp_lock
 * shared while their temporary exists; chunk_scan() takes it exclusive
 * before deleting a temporary carrying this process's PID, so it never
 * deletes a write in flight yet still removes leftovers of a previous
 * process that had the same PID.  fdc_lock guards the open-file cache; no
 * I/O is done under it but close().
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <zlib.h>

#include "s3cachefs/chunk.h"
#include "s3cachefs/crc32.h"
#include "s3cachefs/crypt.h"
#include "s3cachefs/fileio.h"
#include "s3cachefs/log.h"
#include "s3cachefs/strutil.h"

#define CHUNK_MAGIC "S3CCHUNK"
#define CHUNK_VERSION 1	       /* plaintext */
#define CHUNK_VERSION_SEALED 2 /* AES-256-GCM */
#define CHUNK_FLAG_ZLIB 0x0001u
#define CHUNK_FLAG_SEALED 0x0002u
#define HDR_FIXED 68 /* bytes before the block CRCs */
#define MAX_BLOCKS (CHUNK_SIZE_MAX / CHUNK_BLOCK)
#define HDR_SIZE(nb) (HDR_FIXED + 4 * (size_t)(nb) + 4)
#define SHDR_FIXED 88 /* sealed: bytes the header CRC covers, the AAD */
#define SHDR_SIZE(ns) (SHDR_FIXED + 4 + CRYPT_TAG_LEN * (size_t)(ns))
#define HDR_MAX SHDR_SIZE(MAX_BLOCKS) /* the larger of the two */
#define SEG_AAD_LEN (SHDR_FIXED + 4)
#define TMP_TAG ".tmp."
/* "NAME.tmp.PID.N" with room to spare */
#define TMP_NAME_MAX (CHUNK_NAME_LEN + 64)

struct chunk_store {
	char *dir;	    /* for messages */
	int dirfd;	    /* conf->dir, O_DIRECTORY; every path is relative */
	int compress_level; /* 0..9 */
	bool durable;
	bool has_key;	      /* key is set: write and read sealed files */
	struct crypt_key key; /* a copy, wiped at close */
	atomic_bool told_key; /* the first wrong-key file was logged */
	/* shared by a writer while its temporary exists; see the top */
	pthread_rwlock_t tmp_lock;
	atomic_uint_fast64_t tmp_seq; /* the N of temporaries */
	atomic_uint_fast64_t written, compressed, corrupt, read_errors,
		write_errors, wrong_key;
	atomic_uint_fast64_t opens; /* files opened for reading */
	/* the open-file cache (see "Open files" at the top) */
	pthread_mutex_t fdc_lock;
	struct open_chunk **fdc_table; /* fdc_lock; fdc_buckets chains */
	size_t fdc_buckets;	       /* a power of two; 0: no cache */
	size_t fdc_max;		       /* entries at most */
	size_t fdc_n;		       /* fdc_lock; entries linked */
	struct open_chunk *fdc_head, *fdc_tail; /* fdc_lock; LRU */
	uint64_t fdc_seq; /* fdc_lock; names dropped so far */
	bool fdc_ready;	  /* fdc_lock was initialized */
};

static int fdc_init(struct chunk_store *cs, int want);
static void fdc_free(struct chunk_store *cs);

/* A parsed, checked header. */
struct chunk_hdr {
	uint16_t flags;
	bool sealed; /* version 2 */
	uint64_t data_len;
	uint64_t stored_len;
	uint32_t n_blocks; /* of data (plaintext) or of payload (sealed) */
	size_t size;	   /* header bytes on disk */
	unsigned char key_id[CRYPT_ID_LEN];
	unsigned char nonce[CRYPT_NONCE_LEN];
	unsigned char aad[SHDR_FIXED]; /* sealed: header bytes [0, 88) */
	union {
		uint32_t crc[MAX_BLOCKS];
		unsigned char tag[MAX_BLOCKS][CRYPT_TAG_LEN];
	} u;
};

/*
 * A chunk file held open by the open-file cache, with its checked header.
 * fd, st and h never change once it is made; ok[] only gains bits.
 */
struct open_chunk {
	char name[CHUNK_NAME_LEN + 1];
	int fd;
	struct stat st;	    /* at open: what the file must still be */
	struct chunk_hdr h; /* checked at open, key included */
	/* plaintext raw blocks whose CRC passed through this fd */
	atomic_uint_fast64_t ok[MAX_BLOCKS / 64];
	unsigned refs; /* fdc_lock; readers, +1 while linked */
	bool linked;   /* fdc_lock; in the table and the LRU */
	struct open_chunk *hnext, *prev, *next; /* fdc_lock */
};

static void put_le16(unsigned char *p, uint16_t v)
{
	p[0] = (unsigned char)v;
	p[1] = (unsigned char)(v >> 8);
}

static void put_le32(unsigned char *p, uint32_t v)
{
	int i;

	for (i = 0; i < 4; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

static void put_le64(unsigned char *p, uint64_t v)
{
	int i;

	for (i = 0; i < 8; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

static uint16_t get_le16(const unsigned char *p)
{
	return (uint16_t)(p[0] | (p[1] << 8));
}

static uint32_t get_le32(const unsigned char *p)
{
	uint32_t v = 0;
	int i;

	for (i = 3; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

static uint64_t get_le64(const unsigned char *p)
{
	uint64_t v = 0;
	int i;

	for (i = 7; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

static uint32_t crc32_of(const void *p, size_t n)
{
	return crc32_update(0, p, n);
}

static uint64_t ceil_blocks(uint64_t len)
{
	return (len + CHUNK_BLOCK - 1) / CHUNK_BLOCK;
}

/* Segments of a sealed payload: at least one, so every file has a tag. */
static uint64_t seg_count(uint64_t stored_len)
{
	return stored_len ? ceil_blocks(stored_len) : 1;
}

static int hex_val(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* @name must be valid. */
static void name_to_digest(const char *name, unsigned char out[32])
{
	int i;

	for (i = 0; i < 32; i++)
		out[i] = (unsigned char)(hex_val(name[2 * i]) << 4 |
					 hex_val(name[2 * i + 1]));
}

/* "XY/NAME" relative to the store folder. */
static void rel_path(const char *name, char out[CHUNK_NAME_LEN + 4])
{
	out[0] = name[0];
	out[1] = name[1];
	out[2] = '/';
	memcpy(out + 3, name, CHUNK_NAME_LEN + 1);
}

static void hash_field(EVP_MD_CTX *ctx, const void *p, uint64_t len, int *ok)
{
	unsigned char be[8];
	int i;

	for (i = 0; i < 8; i++)
		be[i] = (unsigned char)(len >> (56 - 8 * i));
	*ok &= EVP_DigestUpdate(ctx, be, sizeof(be));
	if (len)
		*ok &= EVP_DigestUpdate(ctx, p, len);
}

void chunk_name(const struct chunk_id *id, char out[CHUNK_NAME_LEN + 1])
{
	const char *fields[4] = { id->endpoint, id->bucket, id->key, id->etag };
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned char be[8];
	unsigned int mdlen = 0;
	EVP_MD_CTX *ctx;
	int i, ok;

	ctx = EVP_MD_CTX_new();
	ok = ctx && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
	for (i = 0; ok && i < 4; i++) {
		const char *f = fields[i] ? fields[i] : "";

		hash_field(ctx, f, strlen(f), &ok);
	}
	for (i = 0; i < 8; i++)
		be[i] = (unsigned char)(id->index >> (56 - 8 * i));
	ok = ok && EVP_DigestUpdate(ctx, be, sizeof(be)) &&
	     EVP_DigestFinal_ex(ctx, md, &mdlen) && mdlen == 32;
	EVP_MD_CTX_free(ctx);
	/*
	 * The API cannot fail, and any made-up name could alias another
	 * object's data: stopping is the only safe answer (out of memory).
	 */
	if (!ok) {
		log_error("sha-256 of chunk identity failed");
		abort();
	}
	hex_encode(md, 32, out);
}

bool chunk_name_valid(const char *s)
{
	int i;

	if (!s)
		return false;
	for (i = 0; i < CHUNK_NAME_LEN; i++)
		if (hex_val(s[i]) < 0)
			return false;
	return s[CHUNK_NAME_LEN] == '\0';
}

/* Create @path and its missing parents with @mode; 0 or -errno, logged. */
static int mkdir_p(const char *path, mode_t mode)
{
	char *p = NULL, *s;
	int rc;

	rc = str_dup(path, &p);
	if (rc < 0)
		return rc;
	for (s = p + 1;; s++) {
		char c = *s;

		if (c != '/' && c != '\0')
			continue;
		*s = '\0';
		if (mkdir(p, mode) < 0 && errno != EEXIST) {
			rc = -errno;
			log_error("cannot create '%s': %s", p, strerror(-rc));
			goto out;
		}
		*s = c;
		if (c == '\0')
			break;
	}
out:
	free(p);
	return rc;
}

int chunk_store_open(const struct chunk_store_conf *conf,
		     struct chunk_store **out)
{
	struct chunk_store *cs = NULL;
	pthread_rwlockattr_t attr;
	bool lock_init = false;
	char shard[3];
	int rc, i;

	if (!conf->dir || !*conf->dir || conf->compress_level < 0 ||
	    conf->compress_level > 9)
		return -EINVAL;
	cs = calloc(1, sizeof(*cs));
	if (!cs)
		return -ENOMEM;
	cs->dirfd = -1;
	rc = str_dup(conf->dir, &cs->dir);
	if (rc < 0)
		goto out;
	cs->compress_level = conf->compress_level;
	cs->durable = conf->durable;
	if (conf->key) {
		cs->key = *conf->key;
		cs->has_key = true;
	}
	atomic_init(&cs->told_key, false);
	atomic_init(&cs->tmp_seq, 0);
	atomic_init(&cs->written, 0);
	atomic_init(&cs->compressed, 0);
	atomic_init(&cs->corrupt, 0);
	atomic_init(&cs->read_errors, 0);
	atomic_init(&cs->write_errors, 0);
	atomic_init(&cs->wrong_key, 0);
	atomic_init(&cs->opens, 0);
	rc = fdc_init(cs, conf->open_files);
	if (rc < 0)
		goto out;
	/* chunk_scan() must not starve behind a stream of writes */
	pthread_rwlockattr_init(&attr);
	pthread_rwlockattr_setkind_np(
		&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	rc = -pthread_rwlock_init(&cs->tmp_lock, &attr);
	pthread_rwlockattr_destroy(&attr);
	if (rc < 0)
		goto out;
	lock_init = true;

	rc = mkdir_p(cs->dir, 0700);
	if (rc < 0)
		goto out;
	cs->dirfd = open(cs->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (cs->dirfd < 0) {
		rc = -errno;
		log_error("cannot open '%s': %s", cs->dir, strerror(-rc));
		goto out;
	}
	for (i = 0; i < 256; i++) {
		snprintf(shard, sizeof(shard), "%02x", i);
		if (mkdirat(cs->dirfd, shard, 0700) < 0 && errno != EEXIST) {
			rc = -errno;
			log_error("cannot create '%s/%s': %s", cs->dir, shard,
				  strerror(-rc));
			goto out;
		}
	}
	*out = cs;
	cs = NULL;
out:
	if (cs) {
		if (cs->dirfd >= 0)
			close(cs->dirfd);
		if (lock_init)
			pthread_rwlock_destroy(&cs->tmp_lock);
		fdc_free(cs);
		crypt_key_release(&cs->key);
		free(cs->dir);
		free(cs);
	}
	return rc;
}

void chunk_store_close(struct chunk_store *cs)
{
	if (!cs)
		return;
	fdc_free(cs);
	close(cs->dirfd);
	pthread_rwlock_destroy(&cs->tmp_lock);
	crypt_key_release(&cs->key);
	free(cs->dir);
	free(cs);
}

static void stat_inc(atomic_uint_fast64_t *c)
{
	atomic_fetch_add_explicit(c, 1, memory_order_relaxed);
}

/* ---- the open-file cache: bookkeeping (see "Open files" at the top) */

/*
 * Size the cache: @want entries (0: CHUNK_OPEN_FILES, < 0: none), but at
 * most a quarter of the fd limit, which the rest of the process needs.
 */
static int fdc_init(struct chunk_store *cs, int want)
{
	struct rlimit rl;
	size_t max = want == 0 ? CHUNK_OPEN_FILES : want < 0 ? 0 : (size_t)want;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 &&
	    rl.rlim_cur != RLIM_INFINITY && max > rl.rlim_cur / 4)
		max = (size_t)(rl.rlim_cur / 4);
	pthread_mutex_init(&cs->fdc_lock, NULL);
	cs->fdc_ready = true;
	cs->fdc_max = max;
	if (max == 0)
		return 0;
	cs->fdc_buckets = 16;
	while (cs->fdc_buckets < 2 * max)
		cs->fdc_buckets *= 2;
	cs->fdc_table = calloc(cs->fdc_buckets, sizeof(*cs->fdc_table));
	if (!cs->fdc_table) {
		cs->fdc_buckets = 0;
		return -ENOMEM;
	}
	return 0;
}

static void oc_free(struct open_chunk *oc)
{
	if (!oc)
		return;
	if (oc->fd >= 0)
		close(oc->fd);
	if (oc->h.sealed)
		OPENSSL_cleanse(&oc->h, sizeof(oc->h));
	free(oc);
}

/* Close every cached file.  No reader may be running. */
static void fdc_free(struct chunk_store *cs)
{
	struct open_chunk *oc, *next;

	for (oc = cs->fdc_head; oc; oc = next) {
		next = oc->next;
		oc_free(oc);
	}
	cs->fdc_head = cs->fdc_tail = NULL;
	cs->fdc_n = 0;
	free(cs->fdc_table);
	cs->fdc_table = NULL;
	if (cs->fdc_ready)
		pthread_mutex_destroy(&cs->fdc_lock);
	cs->fdc_ready = false;
	cs->fdc_buckets = 0;
	cs->fdc_max = 0;
}

/* FNV-1a of the name's first 16 hex digits: they are a hash already. */
static size_t fdc_bucket(const struct chunk_store *cs, const char *name)
{
	uint64_t h = 1469598103934665603ULL;
	int i;

	for (i = 0; i < 16; i++)
		h = (h ^ (unsigned char)name[i]) * 1099511628211ULL;
	return (size_t)(h & (cs->fdc_buckets - 1));
}

static struct open_chunk *fdc_find_locked(const struct chunk_store *cs,
					  const char *name)
{
	struct open_chunk *oc;

	for (oc = cs->fdc_table[fdc_bucket(cs, name)]; oc; oc = oc->hnext)
		if (memcmp(oc->name, name, CHUNK_NAME_LEN) == 0)
			return oc;
	return NULL;
}

static void fdc_lru_unlink_locked(struct chunk_store *cs, struct open_chunk *oc)
{
	if (oc->prev)
		oc->prev->next = oc->next;
	else
		cs->fdc_head = oc->next;
	if (oc->next)
		oc->next->prev = oc->prev;
	else
		cs->fdc_tail = oc->prev;
	oc->prev = oc->next = NULL;
}

static void fdc_lru_push_locked(struct chunk_store *cs, struct open_chunk *oc)
{
	oc->prev = NULL;
	oc->next = cs->fdc_head;
	if (cs->fdc_head)
		cs->fdc_head->prev = oc;
	cs->fdc_head = oc;
	if (!cs->fdc_tail)
		cs->fdc_tail = oc;
}

/*
 * Take @oc out of the table and the LRU and give up the table's reference.
 * Returns @oc when that was the last one (the caller frees it, unlocked).
 */
static struct open_chunk *fdc_unlink_locked(struct chunk_store *cs,
					    struct open_chunk *oc)
{
	struct open_chunk **pp = &cs->fdc_table[fdc_bucket(cs, oc->name)];

	while (*pp != oc)
		pp = &(*pp)->hnext;
	*pp = oc->hnext;
	oc->hnext = NULL;
	fdc_lru_unlink_locked(cs, oc);
	oc->linked = false;
	cs->fdc_n--;
	return --oc->refs == 0 ? oc : NULL;
}

/* The cached file of @name with a reference for the caller, or NULL. */
static struct open_chunk *fdc_get(struct chunk_store *cs, const char *name,
				  uint64_t *seq)
{
	struct open_chunk *oc = NULL;

	if (!cs->fdc_buckets)
		return NULL;
	pthread_mutex_lock(&cs->fdc_lock);
	oc = fdc_find_locked(cs, name);
	if (oc) {
		oc->refs++;
		fdc_lru_unlink_locked(cs, oc);
		fdc_lru_push_locked(cs, oc);
	}
	*seq = cs->fdc_seq;
	pthread_mutex_unlock(&cs->fdc_lock);
	return oc;
}

/* Give back a reference from fdc_get() or fdc_add(). */
static void fdc_put(struct chunk_store *cs, struct open_chunk *oc)
{
	bool last;

	if (!cs->fdc_buckets) {
		oc_free(oc);
		return;
	}
	pthread_mutex_lock(&cs->fdc_lock);
	last = --oc->refs == 0;
	pthread_mutex_unlock(&cs->fdc_lock);
	if (last)
		oc_free(oc);
}

/*
 * Keep @oc (one reference, the caller's) in the cache, unless a name was
 * dropped since @seq (it may be this one, and @oc the file it replaced) or
 * @name is there already.  The least recently used entries go to make room.
 */
static void fdc_add(struct chunk_store *cs, struct open_chunk *oc, uint64_t seq)
{
	struct open_chunk *gone[4] = { NULL };
	size_t i, ngone = 0;
	size_t b;

	if (!cs->fdc_buckets)
		return;
	pthread_mutex_lock(&cs->fdc_lock);
	if (seq != cs->fdc_seq || fdc_find_locked(cs, oc->name))
		goto out;
	while (cs->fdc_n >= cs->fdc_max && ngone < 4)
		gone[ngone++] = fdc_unlink_locked(cs, cs->fdc_tail);
	if (cs->fdc_n >= cs->fdc_max)
		goto out;
	b = fdc_bucket(cs, oc->name);
	oc->hnext = cs->fdc_table[b];
	cs->fdc_table[b] = oc;
	fdc_lru_push_locked(cs, oc);
	oc->linked = true;
	oc->refs++;
	cs->fdc_n++;
out:
	pthread_mutex_unlock(&cs->fdc_lock);
	for (i = 0; i < ngone; i++)
		oc_free(gone[i]);
}

/*
 * Forget the cached file of @name: any (@st NULL), or only when it is the
 * file @st.  Always counts as a drop for fdc_add().
 */
static void fdc_drop(struct chunk_store *cs, const char *name,
		     const struct stat *st)
{
	struct open_chunk *oc, *gone = NULL;

	if (!cs->fdc_buckets)
		return;
	pthread_mutex_lock(&cs->fdc_lock);
	cs->fdc_seq++;
	oc = fdc_find_locked(cs, name);
	if (oc && (!st || (oc->st.st_dev == st->st_dev &&
			   oc->st.st_ino == st->st_ino)))
		gone = fdc_unlink_locked(cs, oc);
	pthread_mutex_unlock(&cs->fdc_lock);
	oc_free(gone);
}

/*
 * Space a file takes: st_blocks * 512, but never less than its size rounded
 * up to 512, since some file systems report blocks late (delayed
 * allocation, compression, inline data) and the cap must not undercount.
 */
static uint64_t disk_bytes_of(const struct stat *st)
{
	uint64_t blocks = (uint64_t)st->st_blocks * 512;
	uint64_t size = ((uint64_t)st->st_size + 511) / 512 * 512;

	return blocks > size ? blocks : size;
}

/* Encode the header of @len bytes of @data stored as @stored_len bytes. */
static size_t encode_header(unsigned char *h, const char *name,
			    const unsigned char *data, size_t len,
			    uint16_t flags, uint64_t stored_len)
{
	uint32_t nb = (uint32_t)ceil_blocks(len);
	size_t off = HDR_FIXED;
	uint32_t i;

	memcpy(h, CHUNK_MAGIC, 8);
	put_le16(h + 8, CHUNK_VERSION);
	put_le16(h + 10, flags);
	put_le32(h + 12, 0);
	name_to_digest(name, h + 16);
	put_le64(h + 48, len);
	put_le64(h + 56, stored_len);
	put_le32(h + 64, nb);
	for (i = 0; i < nb; i++) {
		size_t start = (size_t)i * CHUNK_BLOCK;
		size_t n =
			len - start < CHUNK_BLOCK ? len - start : CHUNK_BLOCK;

		put_le32(h + off, crc32_of(data + start, n));
		off += 4;
	}
	put_le32(h + off, crc32_of(h, off));
	return off + 4;
}

/* Open shard @name[0..1] as a directory, creating it when missing. */
static int open_shard(struct chunk_store *cs, const char *name)
{
	char shard[3] = { name[0], name[1], '\0' };
	int fd;

	fd = openat(cs->dirfd, shard, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 && errno == ENOENT) {
		if (mkdirat(cs->dirfd, shard, 0700) < 0 && errno != EEXIST)
			return -errno;
		fd = openat(cs->dirfd, shard,
			    O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	}
	return fd < 0 ? -errno : fd;
}

/* Create a fresh temporary for @name in @shardfd; its name into @tmp. */
static int create_tmp(struct chunk_store *cs, int shardfd, const char *name,
		      char tmp[TMP_NAME_MAX])
{
	int tries, fd;

	/* EEXIST only from a leftover of an earlier process with our PID */
	for (tries = 0; tries < 100; tries++) {
		uint64_t n = atomic_fetch_add_explicit(&cs->tmp_seq, 1,
						       memory_order_relaxed);

		snprintf(tmp, TMP_NAME_MAX, "%s" TMP_TAG "%ld.%" PRIu64, name,
			 (long)getpid(), n);
		fd = openat(shardfd, tmp,
			    O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
		if (fd >= 0 || errno != EEXIST)
			return fd < 0 ? -errno : fd;
	}
	return -EEXIST;
}

/* The associated data of segment @i of a sealed file. */
static void seg_aad(const unsigned char *fixed, uint32_t i,
		    unsigned char out[SEG_AAD_LEN])
{
	memcpy(out, fixed, SHDR_FIXED);
	out[SHDR_FIXED] = (unsigned char)(i >> 24);
	out[SHDR_FIXED + 1] = (unsigned char)(i >> 16);
	out[SHDR_FIXED + 2] = (unsigned char)(i >> 8);
	out[SHDR_FIXED + 3] = (unsigned char)i;
}

/*
 * Encode a sealed header for @data_len bytes of data stored as @payload
 * (@stored_len bytes) into @h, and the payload's ciphertext into @ct.
 * *hdr_len receives the header's length.  0 or -errno.
 */
static int encode_sealed(struct chunk_store *cs, unsigned char *h,
			 const char *name, uint64_t data_len, uint16_t flags,
			 const unsigned char *payload, uint64_t stored_len,
			 unsigned char *ct, size_t *hdr_len)
{
	uint32_t ns = (uint32_t)seg_count(stored_len), i;
	unsigned char nonce[CRYPT_NONCE_LEN], aad[SEG_AAD_LEN];
	int rc;

	memcpy(h, CHUNK_MAGIC, 8);
	put_le16(h + 8, CHUNK_VERSION_SEALED);
	put_le16(h + 10, flags | CHUNK_FLAG_SEALED);
	put_le32(h + 12, 0);
	name_to_digest(name, h + 16);
	put_le64(h + 48, data_len);
	put_le64(h + 56, stored_len);
	put_le32(h + 64, ns);
	memcpy(h + 68, cs->key.id, CRYPT_ID_LEN);
	rc = crypt_random(h + 76, CRYPT_NONCE_LEN);
	if (rc < 0)
		return rc;
	put_le32(h + SHDR_FIXED, crc32_of(h, SHDR_FIXED));
	for (i = 0; i < ns; i++) {
		size_t start = (size_t)i * CHUNK_BLOCK;
		size_t n = stored_len - start < CHUNK_BLOCK
				   ? (size_t)(stored_len - start)
				   : CHUNK_BLOCK;

		crypt_nonce_add(h + 76, i, nonce);
		seg_aad(h, i, aad);
		rc = crypt_seal(&cs->key, nonce, aad, sizeof(aad),
				payload + start, n, ct + start,
				h + SHDR_FIXED + 4 + CRYPT_TAG_LEN * (size_t)i);
		if (rc < 0)
			return rc;
	}
	*hdr_len = SHDR_SIZE(ns);
	return 0;
}

/*
 * Write chunk @name: @len bytes of @data, whose payload is @payload
 * (@stored_len bytes: the data itself, or its zlib output with
 * CHUNK_FLAG_ZLIB in @flags), plaintext or sealed as the store's key says,
 * through a temporary and a rename.  See chunk_write().
 */
static int store_file(struct chunk_store *cs, const char *name,
		      const unsigned char *data, size_t len,
		      const unsigned char *payload, uint64_t stored_len,
		      uint16_t flags, uint64_t *disk_bytes)
{
	unsigned char *buf = NULL;
	char tmp[TMP_NAME_MAX] = "";
	const char *what = "";
	int shardfd = -1, fd = -1, rc;
	bool locked = false, io = false;
	size_t hdr_len;
	struct stat st;

	if (cs->has_key) {
		uint64_t ns = seg_count(stored_len);

		buf = malloc(SHDR_SIZE(ns) + (size_t)stored_len);
		if (!buf)
			return -ENOMEM;
		rc = encode_sealed(cs, buf, name, len, flags, payload,
				   stored_len, buf + SHDR_SIZE(ns), &hdr_len);
		if (rc < 0)
			goto out;
		payload = buf + hdr_len;
	} else {
		buf = malloc(HDR_SIZE(ceil_blocks(len)));
		if (!buf)
			return -ENOMEM;
		hdr_len =
			encode_header(buf, name, data, len, flags, stored_len);
	}

	io = true;
	what = "open shard";
	rc = open_shard(cs, name);
	if (rc < 0)
		goto out;
	shardfd = rc;
	pthread_rwlock_rdlock(&cs->tmp_lock);
	locked = true;
	what = "create temporary";
	rc = create_tmp(cs, shardfd, name, tmp);
	if (rc < 0) {
		tmp[0] = '\0';
		goto out;
	}
	fd = rc;
	what = "write";
	rc = pwrite_all(fd, buf, hdr_len, 0);
	if (rc == 0 && stored_len)
		rc = pwrite_all(fd, payload, stored_len, (off_t)hdr_len);
	if (rc < 0)
		goto out;
	what = "fsync";
	if (cs->durable && fsync(fd) < 0) {
		rc = -errno;
		goto out;
	}
	what = "stat";
	if (fstat(fd, &st) < 0) {
		rc = -errno;
		goto out;
	}
	what = "close";
	rc = close(fd);
	fd = -1;
	if (rc < 0) {
		rc = -errno;
		goto out;
	}
	what = "rename";
	if (renameat(shardfd, tmp, shardfd, name) < 0) {
		rc = -errno;
		goto out;
	}
	tmp[0] = '\0';
	pthread_rwlock_unlock(&cs->tmp_lock);
	locked = false;
	fdc_drop(cs, name, NULL); /* after the rename: see "Open files" */
	what = "fsync folder of";
	if (cs->durable && fsync(shardfd) < 0) {
		rc = -errno;
		/* "no file of that name was created" */
		unlinkat(shardfd, name, 0);
		fdc_drop(cs, name, NULL);
		goto out;
	}
	stat_inc(&cs->written);
	if (flags & CHUNK_FLAG_ZLIB)
		stat_inc(&cs->compressed);
	if (disk_bytes)
		*disk_bytes = disk_bytes_of(&st);
	rc = 0;
out:
	if (fd >= 0)
		close(fd);
	if (tmp[0])
		unlinkat(shardfd, tmp, 0);
	if (locked)
		pthread_rwlock_unlock(&cs->tmp_lock);
	if (shardfd >= 0)
		close(shardfd);
	if (rc < 0 && io) {
		stat_inc(&cs->write_errors);
		/* the cache says it once, rate-limited, with its view */
		log_debug("cannot %s chunk '%s/%.2s/%s': %s", what, cs->dir,
			  name, name, strerror(-rc));
	}
	free(buf);
	return rc;
}

int chunk_write(struct chunk_store *cs, const char *name, const void *data,
		size_t len, uint64_t *disk_bytes)
{
	unsigned char *z = NULL;
	const unsigned char *payload = data;
	uint64_t stored_len = len;
	uint16_t flags = 0;
	int rc;

	if (!chunk_name_valid(name) || len > CHUNK_SIZE_MAX || (len && !data))
		return -EINVAL;
	if (cs->compress_level > 0 && len > 1) {
		/* a buffer of len - 1 makes "not smaller" a Z_BUF_ERROR */
		uLongf zlen = len - 1;

		z = malloc(len);
		if (!z)
			return -ENOMEM;
		rc = compress2(z, &zlen, data, len, cs->compress_level);
		if (rc == Z_MEM_ERROR) {
			rc = -ENOMEM;
			goto out;
		}
		if (rc == Z_OK && zlen < len) {
			payload = z;
			stored_len = zlen;
			flags = CHUNK_FLAG_ZLIB;
		}
	}
	rc = store_file(cs, name, data, len, payload, stored_len, flags,
			disk_bytes);
out:
	free(z);
	return rc;
}

/*
 * A check failed: delete the file if @name still is @st (a writer may have
 * replaced it meanwhile), count and report it.  Returns -EBADMSG.
 */
/* Delete chunk @name if it still is the file @st (a writer may have
 * replaced it meanwhile). */
static void unlink_if_same(struct chunk_store *cs, const char *name,
			   const struct stat *st)
{
	char rel[CHUNK_NAME_LEN + 4];
	struct stat now;

	rel_path(name, rel);
	if (fstatat(cs->dirfd, rel, &now, AT_SYMLINK_NOFOLLOW) == 0 &&
	    now.st_dev == st->st_dev && now.st_ino == st->st_ino)
		unlinkat(cs->dirfd, rel, 0);
	fdc_drop(cs, name, st);
}

static int corrupt(struct chunk_store *cs, const char *name,
		   const struct stat *st, const char *what)
{
	unlink_if_same(cs, name, st);
	stat_inc(&cs->corrupt);
	log_warn("chunk '%s' failed its check: %s; deleted", name, what);
	return -EBADMSG;
}

/*
 * A file that belongs to another key (or to none): delete it like corrupt()
 * does, but count it apart.  Said once per store at info level: after a
 * key change every old chunk goes this way.  Returns -ENOKEY.
 */
static int wrong_key(struct chunk_store *cs, const char *name,
		     const struct stat *st, const char *what)
{
	unlink_if_same(cs, name, st);
	stat_inc(&cs->wrong_key);
	if (!atomic_exchange(&cs->told_key, true))
		log_info("chunk '%s' is %s; deleted, as every such chunk will "
			 "be when read",
			 name, what);
	else
		log_debug("chunk '%s' is %s; deleted", name, what);
	return -ENOKEY;
}

/* Check the plaintext (version 1) header in @buf (@got bytes read). */
static int parse_plain(const unsigned char *buf, size_t got,
		       struct chunk_hdr *h, const char **what)
{
	uint32_t i;

	h->n_blocks = get_le32(buf + 64);
	*what = "bad block count";
	if (h->n_blocks > MAX_BLOCKS)
		return -EBADMSG;
	h->size = HDR_SIZE(h->n_blocks);
	*what = "truncated header";
	if (got < h->size)
		return -EBADMSG;
	*what = "header crc mismatch";
	if (crc32_of(buf, h->size - 4) != get_le32(buf + h->size - 4))
		return -EBADMSG;
	/* from here on the header is as written, unless written wrong */
	h->flags = get_le16(buf + 10);
	h->data_len = get_le64(buf + 48);
	h->stored_len = get_le64(buf + 56);
	*what = "unknown flags";
	if ((h->flags & ~CHUNK_FLAG_ZLIB) || get_le32(buf + 12) != 0)
		return -EBADMSG;
	*what = "bad lengths";
	if (h->data_len > CHUNK_SIZE_MAX ||
	    h->n_blocks != ceil_blocks(h->data_len))
		return -EBADMSG;
	for (i = 0; i < h->n_blocks; i++)
		h->u.crc[i] = get_le32(buf + HDR_FIXED + 4 * (size_t)i);
	return 0;
}

/* Check the sealed (version 2) header in @buf (@got bytes read). */
static int parse_sealed(const unsigned char *buf, size_t got,
			struct chunk_hdr *h, const char **what)
{
	*what = "truncated header";
	if (got < SHDR_FIXED + 4)
		return -EBADMSG;
	*what = "header crc mismatch";
	if (crc32_of(buf, SHDR_FIXED) != get_le32(buf + SHDR_FIXED))
		return -EBADMSG;
	h->sealed = true;
	h->flags = get_le16(buf + 10);
	h->data_len = get_le64(buf + 48);
	h->stored_len = get_le64(buf + 56);
	h->n_blocks = get_le32(buf + 64);
	*what = "unknown flags";
	if ((h->flags & ~(CHUNK_FLAG_ZLIB | CHUNK_FLAG_SEALED)) ||
	    !(h->flags & CHUNK_FLAG_SEALED) || get_le32(buf + 12) != 0)
		return -EBADMSG;
	*what = "bad lengths";
	if (h->data_len > CHUNK_SIZE_MAX ||
	    h->n_blocks != seg_count(h->stored_len))
		return -EBADMSG;
	h->size = SHDR_SIZE(h->n_blocks);
	*what = "truncated header";
	if (got < h->size)
		return -EBADMSG;
	memcpy(h->key_id, buf + 68, CRYPT_ID_LEN);
	memcpy(h->nonce, buf + 76, CRYPT_NONCE_LEN);
	memcpy(h->aad, buf, SHDR_FIXED);
	memcpy(h->u.tag, buf + SHDR_FIXED + 4,
	       CRYPT_TAG_LEN * (size_t)h->n_blocks);
	return 0;
}

/*
 * Read and check the header of the open file @fd (@st its fstat), of
 * either version; which key it needs is checked apart (key_check).  0, or
 * a static description of what failed in *what (-EBADMSG), or -errno.
 */
static int read_header(int fd, const struct stat *st, const char *name,
		       struct chunk_hdr *h, const char **what)
{
	unsigned char buf[HDR_MAX];
	unsigned char digest[32];
	uint16_t version;
	long got;
	int rc;

	got = pread_full(fd, buf, sizeof(buf), 0);
	if (got < 0)
		return (int)got;
	*what = "truncated header";
	if ((size_t)got < HDR_FIXED)
		return -EBADMSG;
	*what = "bad magic";
	if (memcmp(buf, CHUNK_MAGIC, 8) != 0)
		return -EBADMSG;
	version = get_le16(buf + 8);
	h->sealed = false;
	if (version == CHUNK_VERSION)
		rc = parse_plain(buf, (size_t)got, h, what);
	else if (version == CHUNK_VERSION_SEALED)
		rc = parse_sealed(buf, (size_t)got, h, what);
	else
		rc = -EBADMSG;
	if (rc < 0) {
		if (version != CHUNK_VERSION && version != CHUNK_VERSION_SEALED)
			*what = "unknown format version";
		return rc;
	}
	*what = "bad lengths";
	if (h->flags & CHUNK_FLAG_ZLIB) {
		if (h->stored_len == 0 || h->stored_len >= h->data_len)
			return -EBADMSG;
	} else if (h->stored_len != h->data_len) {
		return -EBADMSG;
	}
	name_to_digest(name, digest);
	*what = "identity mismatch";
	if (memcmp(buf + 16, digest, 32) != 0)
		return -EBADMSG;
	*what = "file size mismatch";
	if ((uint64_t)st->st_size != h->size + h->stored_len)
		return -EBADMSG;
	return 0;
}

/*
 * May @key (NULL: none) read the file of header @h?  0, or -EKEYREJECTED
 * with what is wrong in *what.
 */
static int key_check(const struct chunk_hdr *h, const struct crypt_key *key,
		     const char **what)
{
	if (!h->sealed && key)
		*what = "not encrypted, but the store has a key";
	else if (h->sealed && !key)
		*what = "encrypted, but the store has no key";
	else if (h->sealed && memcmp(h->key_id, key->id, CRYPT_ID_LEN) != 0)
		*what = "encrypted with another key";
	else
		return 0;
	return -EKEYREJECTED;
}

/* True when block @b of the data, at @p, matches its CRC in @h. */
static bool block_ok(const struct chunk_hdr *h, uint64_t b,
		     const unsigned char *p)
{
	uint64_t start = b * CHUNK_BLOCK;
	uint64_t n = h->data_len - start < CHUNK_BLOCK ? h->data_len - start
						       : CHUNK_BLOCK;

	return crc32_of(p, (size_t)n) == h->u.crc[b];
}

/*
 * Decrypt segment @i of a sealed payload in place: @p holds its ciphertext
 * (the segment's length follows from the header).  0, -EBADMSG when it
 * fails authentication, or -ENOMEM/-EIO.
 */
static int open_seg(const struct crypt_key *key, const struct chunk_hdr *h,
		    uint64_t i, unsigned char *p)
{
	unsigned char nonce[CRYPT_NONCE_LEN], aad[SEG_AAD_LEN];
	uint64_t start = i * CHUNK_BLOCK;
	size_t n = h->stored_len - start < CHUNK_BLOCK
			   ? (size_t)(h->stored_len - start)
			   : CHUNK_BLOCK;

	crypt_nonce_add(h->nonce, i, nonce);
	seg_aad(h->aad, (uint32_t)i, aad);
	return crypt_open(key, nonce, aad, sizeof(aad), p, n, p, h->u.tag[i]);
}

/*
 * Open chunk @name and check its header, but not which key it needs.  On
 * success *fdp, *st and *h are set; on -EBADMSG the file was handled by
 * corrupt().
 */
static int open_file(struct chunk_store *cs, const char *name, int *fdp,
		     struct stat *st, struct chunk_hdr *h)
{
	char rel[CHUNK_NAME_LEN + 4];
	const char *what = "";
	int fd = -1, rc;

	if (!chunk_name_valid(name))
		return -EINVAL;
	rel_path(name, rel);
	fd = openat(cs->dirfd, rel, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		rc = -errno;
		what = "open";
		goto out;
	}
	if (fstat(fd, st) < 0) {
		rc = -errno;
		what = "stat";
		goto out;
	}
	if (!S_ISREG(st->st_mode)) {
		rc = S_ISDIR(st->st_mode) ? -EISDIR : -EIO;
		what = "open";
		goto out;
	}
	rc = read_header(fd, st, name, h, &what);
	if (rc == -EBADMSG) {
		rc = corrupt(cs, name, st, what);
		goto out;
	}
	if (rc < 0) {
		what = "read header of";
		goto out;
	}
	*fdp = fd;
	fd = -1;
out:
	if (rc < 0 && rc != -ENOENT && rc != -EBADMSG && rc != -ENOMEM) {
		stat_inc(&cs->read_errors);
		log_debug("cannot %s chunk '%s/%s': %s", what, cs->dir, rel,
			  strerror(-rc));
	}
	if (fd >= 0)
		close(fd);
	return rc;
}

/* open_file(), then the file must be readable with the store's key. */
static int open_checked(struct chunk_store *cs, const char *name, int *fdp,
			struct stat *st, struct chunk_hdr *h)
{
	const char *what = "";
	int rc;

	rc = open_file(cs, name, fdp, st, h);
	if (rc < 0)
		return rc;
	if (key_check(h, cs->has_key ? &cs->key : NULL, &what) < 0) {
		close(*fdp);
		*fdp = -1;
		return wrong_key(cs, name, st, what);
	}
	return 0;
}

/* A read of the payload failed (@got < 0) or came short: say which. */
static ssize_t read_failed(struct chunk_store *cs, const char *name,
			   const struct stat *st, long got)
{
	if (got >= 0) /* the size was checked: the file shrank under us */
		return corrupt(cs, name, st, "short read");
	stat_inc(&cs->read_errors);
	log_debug("cannot read chunk '%s/%.2s/%s': %s", cs->dir, name, name,
		  strerror((int)-got));
	return got;
}

/*
 * Copy [off, end) of raw chunk data, reading and checking (plaintext) or
 * authenticating (sealed, with @key) whole blocks: only those it touches.
 */
static ssize_t read_raw(struct chunk_store *cs, const struct crypt_key *key,
			const char *name, int fd, const struct stat *st,
			const struct chunk_hdr *h, uint64_t off, uint64_t end,
			void *out)
{
	uint64_t b0 = off / CHUNK_BLOCK, b1 = (end - 1) / CHUNK_BLOCK, b;
	uint64_t start = b0 * CHUNK_BLOCK;
	uint64_t stop = (b1 + 1) * CHUNK_BLOCK;
	unsigned char *scratch = NULL;
	ssize_t rc;
	long got;

	if (stop > h->data_len)
		stop = h->data_len;
	scratch = malloc((size_t)(stop - start));
	if (!scratch)
		return -ENOMEM;
	got = pread_full(fd, scratch, (size_t)(stop - start),
			 (off_t)(h->size + start));
	if (got < 0 || (uint64_t)got != stop - start) {
		rc = read_failed(cs, name, st, got);
		goto out;
	}
	for (b = b0; b <= b1; b++) {
		unsigned char *p = scratch + (b - b0) * CHUNK_BLOCK;

		if (h->sealed) {
			rc = open_seg(key, h, b, p);
			if (rc == -EBADMSG)
				rc = corrupt(cs, name, st,
					     "authentication failed");
			if (rc < 0)
				goto out;
		} else if (!block_ok(h, b, p)) {
			rc = corrupt(cs, name, st, "data crc mismatch");
			goto out;
		}
	}
	memcpy(out, scratch + (off - start), (size_t)(end - off));
	rc = (ssize_t)(end - off);
out:
	if (scratch && h->sealed)
		OPENSSL_cleanse(scratch, (size_t)(stop - start));
	free(scratch);
	return rc;
}

/*
 * Read, authenticate or check, and inflate the whole of an open chunk.
 * *data receives the data (data_len bytes, at least one allocated) and,
 * when @payload is not NULL, *payload the plaintext payload (stored_len
 * bytes; the data itself when raw, then *payload == *data).  Both belong to
 * the caller (free *payload only when it differs from *data).
 */
static int load_all(struct chunk_store *cs, const struct crypt_key *key,
		    const char *name, int fd, const struct stat *st,
		    const struct chunk_hdr *h, unsigned char **data,
		    unsigned char **payload)
{
	unsigned char *z = NULL, *d = NULL;
	bool zlib = h->flags & CHUNK_FLAG_ZLIB;
	uLongf dlen = (uLongf)h->data_len;
	uLong zlen = (uLong)h->stored_len;
	uint64_t b;
	long got;
	int rc, zrc;

	z = malloc((size_t)h->stored_len + 1);
	if (!z)
		return -ENOMEM;
	got = pread_full(fd, z, (size_t)h->stored_len, (off_t)h->size);
	if (got < 0 || (uint64_t)got != h->stored_len) {
		rc = (int)read_failed(cs, name, st, got);
		goto out;
	}
	for (b = 0; h->sealed && b < h->n_blocks; b++) {
		rc = open_seg(key, h, b, z + b * CHUNK_BLOCK);
		if (rc == -EBADMSG)
			rc = corrupt(cs, name, st, "authentication failed");
		if (rc < 0)
			goto out;
	}
	if (zlib) {
		d = malloc((size_t)h->data_len);
		if (!d) {
			rc = -ENOMEM;
			goto out;
		}
		zrc = uncompress2(d, &dlen, z, &zlen);
		if (zrc == Z_MEM_ERROR) {
			rc = -ENOMEM;
			goto out;
		}
		if (zrc != Z_OK || dlen != h->data_len ||
		    zlen != h->stored_len) {
			rc = corrupt(cs, name, st, "bad compressed data");
			goto out;
		}
	} else {
		d = z;
	}
	for (b = 0; !h->sealed && b < h->n_blocks; b++) {
		if (!block_ok(h, b, d + b * CHUNK_BLOCK)) {
			rc = corrupt(cs, name, st, "data crc mismatch");
			goto out;
		}
	}
	*data = d;
	if (payload) {
		*payload = z;
		z = NULL;
	} else if (z == d) {
		z = NULL;
	}
	d = NULL;
	rc = 0;
out:
	if (d && d != z) {
		OPENSSL_cleanse(d, (size_t)h->data_len);
		free(d);
	}
	if (z) {
		OPENSSL_cleanse(z, (size_t)h->stored_len);
		free(z);
	}
	return rc;
}

/*
 * Authenticate a sealed file's header by opening its last segment: for the
 * calls that return no data (an empty range, chunk_data_len), which must
 * not trust lengths that nobody vouched for.
 */
static int auth_header(struct chunk_store *cs, const char *name, int fd,
		       const struct stat *st, const struct chunk_hdr *h)
{
	uint64_t last = h->n_blocks - 1, start = last * CHUNK_BLOCK;
	size_t n = (size_t)(h->stored_len - start);
	unsigned char *p;
	long got;
	int rc;

	if (!h->sealed)
		return 0;
	p = malloc(n + 1);
	if (!p)
		return -ENOMEM;
	got = pread_full(fd, p, n, (off_t)(h->size + start));
	if (got < 0 || (size_t)got != n) {
		rc = (int)read_failed(cs, name, st, got);
		goto out;
	}
	rc = open_seg(&cs->key, h, last, p);
	if (rc == -EBADMSG)
		rc = corrupt(cs, name, st, "authentication failed");
	OPENSSL_cleanse(p, n);
out:
	free(p);
	return rc;
}

ssize_t chunk_read(struct chunk_store *cs, const char *name, uint64_t off,
		   void *out, size_t len)
{
	unsigned char *data = NULL;
	struct chunk_hdr h;
	struct stat st;
	uint64_t end;
	int fd = -1;
	ssize_t rc;

	rc = open_checked(cs, name, &fd, &st, &h);
	if (rc < 0)
		return rc;
	if (off >= h.data_len || len == 0) {
		rc = auth_header(cs, name, fd, &st, &h);
		goto out;
	}
	end = h.data_len - off < len ? h.data_len : off + len;
	if (h.flags & CHUNK_FLAG_ZLIB) {
		rc = load_all(cs, &cs->key, name, fd, &st, &h, &data, NULL);
		if (rc == 0) {
			memcpy(out, data + off, (size_t)(end - off));
			rc = (ssize_t)(end - off);
			OPENSSL_cleanse(data, (size_t)h.data_len);
		}
	} else {
		rc = read_raw(cs, &cs->key, name, fd, &st, &h, off, end, out);
	}
out:
	free(data);
	close(fd);
	return rc;
}

/* True when the open file of @oc is still as it was opened: nobody wrote
 * into it (chunk files are never written in place; see the top). */
static bool oc_unchanged(const struct open_chunk *oc)
{
	struct stat now;

	return fstat(oc->fd, &now) == 0 && now.st_size == oc->st.st_size &&
	       now.st_mtim.tv_sec == oc->st.st_mtim.tv_sec &&
	       now.st_mtim.tv_nsec == oc->st.st_mtim.tv_nsec &&
	       now.st_ctim.tv_sec == oc->st.st_ctim.tv_sec &&
	       now.st_ctim.tv_nsec == oc->st.st_ctim.tv_nsec;
}

static bool oc_block_ok(struct open_chunk *oc, uint64_t b)
{
	return atomic_load_explicit(&oc->ok[b / 64], memory_order_acquire) &
	       (1ULL << (b % 64));
}

static void oc_block_set(struct open_chunk *oc, uint64_t b)
{
	atomic_fetch_or_explicit(&oc->ok[b / 64], 1ULL << (b % 64),
				 memory_order_release);
}

/*
 * Copy [off, end) of a plaintext raw chunk through its open file: straight
 * into @out when every block it touches was checked through this fd
 * before, or when it starts and ends on block bounds (then the blocks are
 * checked in @out); through read_raw()'s scratch buffer otherwise.
 */
static ssize_t read_plain(struct chunk_store *cs, struct open_chunk *oc,
			  uint64_t off, uint64_t end, unsigned char *out)
{
	const struct chunk_hdr *h = &oc->h;
	uint64_t b0 = off / CHUNK_BLOCK, b1 = (end - 1) / CHUNK_BLOCK, b;
	bool checked = true;
	ssize_t rc;
	long got;

	for (b = b0; b <= b1 && checked; b++)
		checked = oc_block_ok(oc, b);
	if (checked || (off % CHUNK_BLOCK == 0 &&
			(end % CHUNK_BLOCK == 0 || end == h->data_len))) {
		got = pread_full(oc->fd, out, (size_t)(end - off),
				 (off_t)(h->size + off));
		if (got < 0 || (uint64_t)got != end - off)
			return read_failed(cs, oc->name, &oc->st, got);
		for (b = b0; !checked && b <= b1; b++)
			if (!block_ok(h, b, out + (b - b0) * CHUNK_BLOCK))
				return corrupt(cs, oc->name, &oc->st,
					       "data crc mismatch");
		rc = (ssize_t)(end - off);
	} else {
		rc = read_raw(cs, NULL, oc->name, oc->fd, &oc->st, h, off, end,
			      out);
	}
	for (b = b0; rc >= 0 && !checked && b <= b1; b++)
		oc_block_set(oc, b);
	return rc;
}

/*
 * The open file of chunk @name with a reference: the cached one when it is
 * unchanged, else a newly opened and checked one, cached when there is
 * room (see "Open files").
 */
static int oc_get(struct chunk_store *cs, const char *name,
		  struct open_chunk **out)
{
	struct open_chunk *oc;
	uint64_t seq = 0;
	int rc;

	if (!chunk_name_valid(name))
		return -EINVAL;
	oc = fdc_get(cs, name, &seq);
	if (oc && !oc_unchanged(oc)) {
		log_debug("chunk '%s' changed on disk since it was opened",
			  name);
		fdc_drop(cs, name, &oc->st);
		fdc_put(cs, oc);
		oc = fdc_get(cs, name, &seq); /* for the new seq */
		if (oc) {
			fdc_put(cs, oc);
			oc = NULL;
		}
	}
	if (oc) {
		*out = oc;
		return 0;
	}
	oc = calloc(1, sizeof(*oc));
	if (!oc)
		return -ENOMEM;
	oc->fd = -1;
	memcpy(oc->name, name, CHUNK_NAME_LEN + 1);
	rc = open_checked(cs, name, &oc->fd, &oc->st, &oc->h);
	if (rc < 0) {
		oc_free(oc);
		return rc;
	}
	stat_inc(&cs->opens);
	oc->refs = 1;
	fdc_add(cs, oc, seq);
	*out = oc;
	return 0;
}

ssize_t chunk_read_cached(struct chunk_store *cs, const char *name,
			  uint64_t off, void *out, size_t len)
{
	struct open_chunk *oc = NULL;
	unsigned char *data = NULL;
	const struct chunk_hdr *h;
	uint64_t end;
	ssize_t rc;

	rc = oc_get(cs, name, &oc);
	if (rc < 0)
		return rc;
	h = &oc->h;
	if (off >= h->data_len || len == 0) {
		rc = auth_header(cs, name, oc->fd, &oc->st, h);
		goto out;
	}
	end = h->data_len - off < len ? h->data_len : off + len;
	if (h->flags & CHUNK_FLAG_ZLIB) {
		rc = load_all(cs, &cs->key, name, oc->fd, &oc->st, h, &data,
			      NULL);
		if (rc == 0) {
			memcpy(out, data + off, (size_t)(end - off));
			rc = (ssize_t)(end - off);
			OPENSSL_cleanse(data, (size_t)h->data_len);
		}
	} else if (h->sealed) {
		rc = read_raw(cs, &cs->key, name, oc->fd, &oc->st, h, off, end,
			      out);
	} else {
		rc = read_plain(cs, oc, off, end, out);
	}
out:
	free(data);
	fdc_put(cs, oc);
	return rc;
}

int chunk_data_len(struct chunk_store *cs, const char *name, uint64_t *out)
{
	struct chunk_hdr h;
	struct stat st;
	int fd = -1, rc;

	rc = open_checked(cs, name, &fd, &st, &h);
	if (rc < 0)
		return rc;
	rc = auth_header(cs, name, fd, &st, &h);
	close(fd);
	if (rc == 0)
		*out = h.data_len;
	return rc;
}

int chunk_rekey(struct chunk_store *cs, const char *name,
		const struct crypt_key *from)
{
	unsigned char *data = NULL, *payload = NULL;
	struct chunk_hdr h;
	const char *what = "";
	struct stat st;
	int fd = -1, rc;

	rc = open_file(cs, name, &fd, &st, &h);
	if (rc < 0)
		return rc;
	if (key_check(&h, cs->has_key ? &cs->key : NULL, &what) == 0) {
		rc = 1; /* already as the store writes it */
		goto out;
	}
	if (key_check(&h, from, &what) < 0) {
		close(fd);
		fd = -1;
		rc = wrong_key(cs, name, &st, what);
		goto out;
	}
	rc = load_all(cs, from, name, fd, &st, &h, &data, &payload);
	if (rc < 0)
		goto out;
	rc = store_file(cs, name, data, (size_t)h.data_len, payload,
			h.stored_len, h.flags & CHUNK_FLAG_ZLIB, NULL);
	OPENSSL_cleanse(data, (size_t)h.data_len);
	if (payload != data)
		OPENSSL_cleanse(payload, (size_t)h.stored_len);
out:
	if (payload != data)
		free(payload);
	free(data);
	if (fd >= 0)
		close(fd);
	return rc;
}

int chunk_remove(struct chunk_store *cs, const char *name)
{
	char rel[CHUNK_NAME_LEN + 4];

	if (!chunk_name_valid(name))
		return -EINVAL;
	rel_path(name, rel);
	if (unlinkat(cs->dirfd, rel, 0) < 0 && errno != ENOENT) {
		int rc = -errno;

		log_warn("cannot remove chunk '%s/%s': %s", cs->dir, rel,
			 strerror(-rc));
		return rc;
	}
	fdc_drop(cs, name, NULL); /* after the unlink: see "Open files" */
	return 0;
}

/* True when temporary @ent was made by this process (PID after TMP_TAG). */
static bool tmp_is_ours(const char *ent)
{
	const char *p = strstr(ent, TMP_TAG);
	char *endp;
	long pid;

	if (!p)
		return false;
	errno = 0;
	pid = strtol(p + strlen(TMP_TAG), &endp, 10);
	return errno == 0 && *endp == '.' && pid == (long)getpid();
}

/* Delete the non-chunk entry @ent of shard @shard (open as @sfd). */
static void scan_delete(struct chunk_store *cs, int sfd, const char *shard,
			const char *ent)
{
	bool ours = tmp_is_ours(ent);
	int rc = 0;

	/* a temporary of ours may be a write in flight: wait it out */
	if (ours)
		pthread_rwlock_wrlock(&cs->tmp_lock);
	if (unlinkat(sfd, ent, 0) < 0 && errno != ENOENT)
		rc = -errno;
	if (ours)
		pthread_rwlock_unlock(&cs->tmp_lock);
	if (rc < 0)
		log_warn("cannot remove '%s/%s/%s': %s", cs->dir, shard, ent,
			 strerror(-rc));
	else if (!strstr(ent, TMP_TAG))
		log_info("removed stray file '%s/%s/%s'", cs->dir, shard, ent);
}

/* Open shard @shard for scanning; a missing or non-folder one is remade. */
static int scan_open_shard(struct chunk_store *cs, const char *shard)
{
	int sfd, rc;

	sfd = openat(cs->dirfd, shard, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (sfd >= 0)
		return sfd;
	rc = -errno;
	if (rc == -ENOTDIR) {
		/* the store is ours: a non-folder in a shard's place is junk */
		log_warn("replacing non-folder '%s/%s' with a folder", cs->dir,
			 shard);
		if (unlinkat(cs->dirfd, shard, 0) == 0 || errno == ENOENT)
			rc = -ENOENT;
	}
	if (rc == -ENOENT) {
		if (mkdirat(cs->dirfd, shard, 0700) < 0 && errno != EEXIST)
			rc = -errno;
		else
			rc = -ENOENT; /* made: nothing to visit */
	}
	if (rc != -ENOENT)
		log_warn("cannot open '%s/%s': %s", cs->dir, shard,
			 strerror(-rc));
	return rc;
}

static int scan_shard(struct chunk_store *cs, int i, chunk_scan_fn fn,
		      void *ctx)
{
	char shard[3];
	struct dirent *de;
	DIR *d = NULL;
	int sfd, rc;

	snprintf(shard, sizeof(shard), "%02x", i);
	sfd = scan_open_shard(cs, shard);
	if (sfd < 0)
		return sfd == -ENOENT ? 0 : sfd;
	d = fdopendir(sfd);
	if (!d) {
		rc = -errno;
		close(sfd);
		log_warn("cannot open '%s/%s': %s", cs->dir, shard,
			 strerror(-rc));
		return rc;
	}
	for (;;) {
		struct stat st;

		errno = 0;
		de = readdir(d);
		if (!de) {
			rc = -errno;
			if (rc < 0)
				log_warn("cannot read '%s/%s': %s", cs->dir,
					 shard, strerror(-rc));
			break;
		}
		if (strcmp(de->d_name, ".") == 0 ||
		    strcmp(de->d_name, "..") == 0)
			continue;
		if (!chunk_name_valid(de->d_name) ||
		    memcmp(de->d_name, shard, 2) != 0) {
			scan_delete(cs, sfd, shard, de->d_name);
			continue;
		}
		if (fstatat(sfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
			if (errno == ENOENT)
				continue;
			rc = -errno;
			log_warn("cannot stat '%s/%s/%s': %s", cs->dir, shard,
				 de->d_name, strerror(-rc));
			break;
		}
		/* a folder cannot be unlinked; anything else is not a chunk */
		if (!S_ISREG(st.st_mode)) {
			if (!S_ISDIR(st.st_mode))
				scan_delete(cs, sfd, shard, de->d_name);
			continue;
		}
		rc = fn(ctx, de->d_name, disk_bytes_of(&st));
		if (rc < 0)
			break;
	}
	closedir(d);
	return rc;
}

int chunk_scan(struct chunk_store *cs, chunk_scan_fn fn, void *ctx)
{
	int i, rc;

	for (i = 0; i < 256; i++) {
		rc = scan_shard(cs, i, fn, ctx);
		if (rc < 0)
			return rc;
	}
	return 0;
}

void chunk_get_stats(struct chunk_store *cs, struct chunk_stats *out)
{
	out->written = atomic_load(&cs->written);
	out->compressed = atomic_load(&cs->compressed);
	out->corrupt = atomic_load(&cs->corrupt);
	out->read_errors = atomic_load(&cs->read_errors);
	out->write_errors = atomic_load(&cs->write_errors);
	out->wrong_key = atomic_load(&cs->wrong_key);
	out->opens = atomic_load(&cs->opens);
}
