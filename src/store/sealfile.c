/*
 * sealfile.c - random-access files stored as AES-256-GCM records, or plain.
 *
 * Why: staging files hold data not yet in S3, written at any offset; with
 * encryption at rest they must be as encrypted as the chunks, and as
 * cheap to change at random as the plain files they replace.  Fixed-size
 * records, each sealed on its own, give both: a write re-seals only the
 * records it touches.
 *
 * Layout (integers little-endian unless said otherwise):
 *
 *   off  size  field
 *     0     8  magic "S3CSTAGE"
 *     8     2  version (1)
 *    10     2  flags: bit 0 = the key was ephemeral; others must be 0
 *    12     4  reserved, 0
 *    16     8  key id (struct crypt_key.id)
 *    24     8  binding id
 *    32    28  reserved, 0
 *    60     4  CRC-32 of bytes [0, 60)
 *    64        records: record r at 64 + r * (SEAL_RECORD + 28):
 *              nonce (12), ciphertext (n bytes), tag (16), where
 *              n = SEAL_RECORD but for the last record, which may be short
 *
 * Record r of a file of logical size S holds plaintext bytes
 * [r * SEAL_RECORD, min(S, (r + 1) * SEAL_RECORD)); its associated data is
 * header bytes [0, 32) || u64 BE r || u32 BE n.  S follows from the file's
 * length L: with B = L - 64, S = (B / RD) * SEAL_RECORD + (B % RD ?
 * B % RD - 28 : 0), RD = SEAL_RECORD + 28; a remainder of 1..28 bytes is
 * impossible (-EBADMSG).
 *
 * State: the descriptor, the header (sealed), a copy of the key, and the
 * size, which only writes and truncates change.  lock is held shared by
 * reads and exclusive by writes and truncates, so a read never sees a
 * record half rewritten (a record may hold bytes of two chunks of a staged
 * file, written and read by different threads).  Invariant between calls:
 * the file's length is disk_len(size).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <zlib.h>

#include "s3cachefs/crypt.h"
#include "s3cachefs/fileio.h"
#include "s3cachefs/log.h"
#include "s3cachefs/sealfile.h"
#include "s3cachefs/strutil.h"

#define MAGIC "S3CSTAGE"
#define VERSION 1
#define FLAG_EPHEMERAL 0x0001u
#define HDR_LEN 64
#define HDR_AAD 32 /* header bytes bound to every record */
#define OVER (CRYPT_NONCE_LEN + CRYPT_TAG_LEN)
#define R ((uint64_t)SEAL_RECORD)
#define RD (R + OVER)
#define AAD_LEN (HDR_AAD + 8 + 4)
#define COPY_STEP (16 * SEAL_RECORD)

struct seal_file {
	int fd;
	char *path; /* for messages */
	bool sealed;
	struct crypt_key key;	    /* sealed: a copy, wiped at close */
	unsigned char hdr[HDR_LEN]; /* sealed: as on disk */
	pthread_rwlock_t lock;
	uint64_t size; /* logical; see the top; lock */
};

static void put_le(unsigned char *p, uint64_t v, int n)
{
	int i;

	for (i = 0; i < n; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t get_le(const unsigned char *p, int n)
{
	uint64_t v = 0;
	int i;

	for (i = n - 1; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

static void put_be(unsigned char *p, uint64_t v, int n)
{
	int i;

	for (i = 0; i < n; i++)
		p[i] = (unsigned char)(v >> (8 * (n - 1 - i)));
}

static uint32_t crc32_of(const void *p, size_t n)
{
	return (uint32_t)crc32_z(crc32(0L, Z_NULL, 0), p, n);
}

void seal_name(int64_t id, bool sealed, char *out, size_t len)
{
	snprintf(out, len, "%lld%s", (long long)id, sealed ? SEAL_SUFFIX : "");
}

bool seal_name_parse(const char *name, int64_t *id, bool *sealed)
{
	const char *p = name;
	long long v = 0;

	if (*p < '1' || *p > '9')
		return false;
	for (; *p >= '0' && *p <= '9'; p++) {
		if (v > (LLONG_MAX - 9) / 10)
			return false;
		v = v * 10 + (*p - '0');
	}
	if (*p && strcmp(p, SEAL_SUFFIX) != 0)
		return false;
	*id = v;
	*sealed = *p != '\0';
	return true;
}

/* The file length of a sealed file of logical size @size. */
static uint64_t disk_len(uint64_t size)
{
	return HDR_LEN + size / R * RD + (size % R ? size % R + OVER : 0);
}

/* The logical size of a sealed file @len bytes long; false if none. */
static bool size_of_len(uint64_t len, uint64_t *size)
{
	uint64_t body, rem;

	if (len < HDR_LEN)
		return false;
	body = len - HDR_LEN;
	rem = body % RD;
	if (rem && rem <= OVER)
		return false;
	*size = body / RD * R + (rem ? rem - OVER : 0);
	return true;
}

static uint64_t rec_off(uint64_t r)
{
	return HDR_LEN + r * RD;
}

/* Plaintext bytes of record @r in a file of @size bytes (0 past it). */
static size_t rec_len(uint64_t size, uint64_t r)
{
	uint64_t start = r * R;

	if (start >= size)
		return 0;
	return (size_t)(size - start < R ? size - start : R);
}

static void rec_aad(const struct seal_file *sf, uint64_t r, size_t n,
		    unsigned char out[AAD_LEN])
{
	memcpy(out, sf->hdr, HDR_AAD);
	put_be(out + HDR_AAD, r, 8);
	put_be(out + HDR_AAD + 8, n, 4);
}

static bool all_zero(const unsigned char *p, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (p[i])
			return false;
	return true;
}

/* Seal the @n bytes at @p as record @r into @disk (@n + OVER bytes). */
static int seal_rec(struct seal_file *sf, uint64_t r, const unsigned char *p,
		    size_t n, unsigned char *disk)
{
	unsigned char aad[AAD_LEN];
	int rc;

	rc = crypt_random(disk, CRYPT_NONCE_LEN);
	if (rc < 0)
		return rc;
	/* an all-zero nonce marks a hole */
	if (all_zero(disk, CRYPT_NONCE_LEN))
		disk[CRYPT_NONCE_LEN - 1] = 1;
	rec_aad(sf, r, n, aad);
	return crypt_seal(&sf->key, disk, aad, sizeof(aad), p, n,
			  disk + CRYPT_NONCE_LEN, disk + CRYPT_NONCE_LEN + n);
}

/*
 * Open record @r, stored as @disk (@n + OVER bytes), into @p (@n bytes).
 * *hole (may be NULL) says whether it was never written.  0, -EBADMSG
 * (logged) or -errno.
 */
static int open_rec(struct seal_file *sf, uint64_t r, const unsigned char *disk,
		    size_t n, unsigned char *p, bool *hole)
{
	unsigned char aad[AAD_LEN];
	int rc;

	if (all_zero(disk, CRYPT_NONCE_LEN) && all_zero(disk, n + OVER)) {
		memset(p, 0, n);
		if (hole)
			*hole = true;
		return 0;
	}
	if (hole)
		*hole = false;
	rec_aad(sf, r, n, aad);
	rc = crypt_open(&sf->key, disk, aad, sizeof(aad),
			disk + CRYPT_NONCE_LEN, n, p,
			disk + CRYPT_NONCE_LEN + n);
	if (rc == -EBADMSG)
		log_warn("sealed file '%s': record %" PRIu64 " failed "
			 "authentication",
			 sf->path, r);
	return rc;
}

/* Read record @r's @n stored bytes into @p; -EBADMSG when cut short. */
static int read_rec(struct seal_file *sf, uint64_t r, size_t n,
		    unsigned char *p, bool *hole)
{
	unsigned char *disk = malloc(n + OVER);
	long got;
	int rc;

	if (!disk)
		return -ENOMEM;
	got = pread_full(sf->fd, disk, n + OVER, (off_t)rec_off(r));
	if (got < 0)
		rc = (int)got;
	else if ((size_t)got != n + OVER)
		rc = -EBADMSG;
	else
		rc = open_rec(sf, r, disk, n, p, hole);
	free(disk);
	return rc;
}

/*
 * Rewrite record @r, now @n_old bytes long, as its first @n_new bytes
 * (zeros added when longer) at the end of the file; a hole stays a hole.
 * The file's length becomes that of a file ending with this record.
 */
static int resize_last(struct seal_file *sf, uint64_t r, size_t n_old,
		       size_t n_new)
{
	unsigned char *p = NULL, *disk = NULL;
	bool hole = false;
	int rc;

	p = calloc(1, R);
	disk = malloc(RD);
	if (!p || !disk) {
		rc = -ENOMEM;
		goto out;
	}
	rc = read_rec(sf, r, n_old, p, &hole);
	if (rc < 0)
		goto out;
	if (!hole) {
		if (n_new < n_old)
			memset(p + n_new, 0, n_old - n_new);
		rc = seal_rec(sf, r, p, n_new, disk);
		if (rc == 0)
			rc = pwrite_all(sf->fd, disk, n_new + OVER,
					(off_t)rec_off(r));
	}
	if (rc == 0 &&
	    ftruncate(sf->fd, (off_t)(rec_off(r) + n_new + OVER)) < 0)
		rc = -errno;
out:
	if (p)
		OPENSSL_cleanse(p, R);
	free(p);
	free(disk);
	return rc;
}

static void encode_header(struct seal_file *sf, uint64_t binding)
{
	unsigned char *h = sf->hdr;

	memset(h, 0, HDR_LEN);
	memcpy(h, MAGIC, 8);
	put_le(h + 8, VERSION, 2);
	put_le(h + 10, sf->key.ephemeral ? FLAG_EPHEMERAL : 0, 2);
	memcpy(h + 16, sf->key.id, CRYPT_ID_LEN);
	put_le(h + 24, binding, 8);
	put_le(h + 60, crc32_of(h, 60), 4);
}

/* Check header @h; fill @info.  0 or -EBADMSG. */
static int decode_header(const unsigned char *h, struct seal_info *info)
{
	uint16_t flags = (uint16_t)get_le(h + 10, 2);

	if (memcmp(h, MAGIC, 8) != 0 || get_le(h + 8, 2) != VERSION ||
	    get_le(h + 60, 4) != crc32_of(h, 60) || (flags & ~FLAG_EPHEMERAL) ||
	    get_le(h + 12, 4) != 0 || !all_zero(h + 32, 28))
		return -EBADMSG;
	hex_encode(h + 16, CRYPT_ID_LEN, info->key_id);
	info->ephemeral = flags & FLAG_EPHEMERAL;
	info->binding = get_le(h + 24, 8);
	return 0;
}

static struct seal_file *file_new(const char *path, const struct crypt_key *key)
{
	struct seal_file *sf = calloc(1, sizeof(*sf));

	if (!sf)
		return NULL;
	sf->fd = -1;
	if (str_dup(path, &sf->path) < 0) {
		free(sf);
		return NULL;
	}
	pthread_rwlock_init(&sf->lock, NULL);
	if (key) {
		sf->key = *key;
		sf->sealed = true;
	}
	return sf;
}

void seal_close(struct seal_file *sf)
{
	if (!sf)
		return;
	if (sf->fd >= 0)
		close(sf->fd);
	pthread_rwlock_destroy(&sf->lock);
	crypt_key_release(&sf->key);
	free(sf->path);
	free(sf);
}

int seal_create(const char *path, const struct crypt_key *key, uint64_t binding,
		struct seal_file **out)
{
	struct seal_file *sf = file_new(path, key);
	int rc = 0;

	if (!sf)
		return -ENOMEM;
	sf->fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (sf->fd < 0) {
		rc = -errno;
		goto out;
	}
	if (sf->sealed) {
		encode_header(sf, binding);
		rc = pwrite_all(sf->fd, sf->hdr, HDR_LEN, 0);
		if (rc < 0)
			goto out;
	}
	*out = sf;
	sf = NULL;
out:
	seal_close(sf);
	return rc;
}

int seal_probe(const char *path, struct seal_info *out)
{
	unsigned char h[HDR_LEN];
	struct seal_info info;
	struct stat st;
	long got;
	int fd, rc;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0) {
		rc = -errno;
		goto out;
	}
	got = pread_full(fd, h, HDR_LEN, 0);
	if (got < 0) {
		rc = (int)got;
		goto out;
	}
	rc = -EBADMSG;
	if (got != HDR_LEN || decode_header(h, &info) < 0 ||
	    !size_of_len((uint64_t)st.st_size, &info.size))
		goto out;
	*out = info;
	rc = 0;
out:
	close(fd);
	return rc;
}

int seal_open(const char *path, const struct crypt_key *key, uint64_t binding,
	      struct seal_file **out)
{
	struct seal_file *sf = file_new(path, key);
	struct seal_info info;
	struct stat st;
	long got;
	int rc = 0;

	if (!sf)
		return -ENOMEM;
	sf->fd = open(path, O_RDWR | O_CLOEXEC);
	if (sf->fd < 0 || fstat(sf->fd, &st) < 0) {
		rc = -errno;
		goto out;
	}
	if (!sf->sealed) {
		sf->size = (uint64_t)st.st_size;
		goto done;
	}
	got = pread_full(sf->fd, sf->hdr, HDR_LEN, 0);
	if (got < 0) {
		rc = (int)got;
		goto out;
	}
	rc = -EBADMSG;
	if (got != HDR_LEN || decode_header(sf->hdr, &info) < 0)
		goto out;
	if (memcmp(sf->hdr + 16, key->id, CRYPT_ID_LEN) != 0) {
		rc = -EKEYREJECTED;
		goto out;
	}
	if (info.binding != binding ||
	    !size_of_len((uint64_t)st.st_size, &sf->size))
		goto out;
	rc = 0;
done:
	*out = sf;
	sf = NULL;
out:
	seal_close(sf);
	return rc;
}

uint64_t seal_size(struct seal_file *sf)
{
	uint64_t n;

	pthread_rwlock_rdlock(&sf->lock);
	n = sf->size;
	pthread_rwlock_unlock(&sf->lock);
	return n;
}

bool seal_is_sealed(const struct seal_file *sf)
{
	return sf->sealed;
}

int seal_plain_fd(const struct seal_file *sf)
{
	return sf->sealed ? -1 : sf->fd;
}

static ssize_t pread_locked(struct seal_file *sf, void *buf, size_t len,
			    uint64_t off)
{
	unsigned char *disk = NULL, *tmp = NULL, *out = buf;
	uint64_t end, r0, r1, r, base, total;
	ssize_t rc;
	long got;

	if (off >= sf->size || len == 0)
		return 0;
	end = sf->size - off < len ? sf->size : off + len;
	if (!sf->sealed) {
		got = pread_full(sf->fd, buf, (size_t)(end - off), (off_t)off);
		if (got >= 0 && (uint64_t)got < end - off)
			/* a plain file shrank under us: what is past is zeros */
			memset(out + got, 0,
			       (size_t)(end - off - (uint64_t)got));
		return got < 0 ? got : (ssize_t)(end - off);
	}
	r0 = off / R;
	r1 = (end - 1) / R;
	base = rec_off(r0);
	total = rec_off(r1) + rec_len(sf->size, r1) + OVER - base;
	disk = malloc((size_t)total);
	tmp = malloc(R);
	if (!disk || !tmp) {
		rc = -ENOMEM;
		goto out;
	}
	got = pread_full(sf->fd, disk, (size_t)total, (off_t)base);
	if (got < 0 || (uint64_t)got != total) {
		rc = got < 0 ? got : -EBADMSG;
		if (rc == -EBADMSG)
			log_warn("sealed file '%s' is shorter than its size",
				 sf->path);
		goto out;
	}
	for (r = r0; r <= r1; r++) {
		size_t n = rec_len(sf->size, r);
		uint64_t rs = r * R, a = off > rs ? off : rs;
		uint64_t b = end < rs + n ? end : rs + n;
		unsigned char *d = disk + (rec_off(r) - base);

		if (a == rs && b == rs + n) {
			rc = open_rec(sf, r, d, n, out + (rs - off), NULL);
		} else {
			rc = open_rec(sf, r, d, n, tmp, NULL);
			if (rc == 0)
				memcpy(out + (a - off), tmp + (a - rs),
				       (size_t)(b - a));
		}
		if (rc < 0) {
			OPENSSL_cleanse(buf, (size_t)(end - off));
			goto out;
		}
	}
	rc = (ssize_t)(end - off);
out:
	if (tmp)
		OPENSSL_cleanse(tmp, R);
	free(tmp);
	free(disk);
	return rc;
}

/* Undo a failed write's growth: the length must stay disk_len(size). */
static void restore_len(struct seal_file *sf)
{
	struct stat st;

	if (fstat(sf->fd, &st) == 0 &&
	    (uint64_t)st.st_size > disk_len(sf->size) &&
	    ftruncate(sf->fd, (off_t)disk_len(sf->size)) < 0)
		log_warn("sealed file '%s': cannot undo a failed write: %s",
			 sf->path, strerror(errno));
}

ssize_t seal_pread(struct seal_file *sf, void *buf, size_t len, uint64_t off)
{
	ssize_t rc;

	pthread_rwlock_rdlock(&sf->lock);
	rc = pread_locked(sf, buf, len, off);
	pthread_rwlock_unlock(&sf->lock);
	return rc;
}

static int pwrite_locked(struct seal_file *sf, const void *buf, size_t len,
			 uint64_t off)
{
	const unsigned char *in = buf;
	unsigned char *disk = NULL, *plain = NULL;
	uint64_t end = off + len, new_size, r0, r1, r, base, total;
	int rc = 0;

	if (len == 0)
		return 0;
	if (end < off)
		return -EFBIG;
	new_size = end > sf->size ? end : sf->size;
	if (!sf->sealed) {
		rc = pwrite_all(sf->fd, buf, len, (off_t)off);
		if (rc == 0)
			sf->size = new_size;
		return rc;
	}
	/* a short last record the write does not touch grows to full */
	if (sf->size % R && off >= (sf->size / R + 1) * R) {
		r = sf->size / R;
		rc = resize_last(sf, r, rec_len(sf->size, r), (size_t)R);
		if (rc < 0)
			goto out;
		sf->size = (r + 1) * R;
	}
	r0 = off / R;
	r1 = (end - 1) / R;
	base = rec_off(r0);
	total = rec_off(r1) + rec_len(new_size, r1) + OVER - base;
	disk = malloc((size_t)total);
	plain = malloc(R);
	if (!disk || !plain) {
		rc = -ENOMEM;
		goto out;
	}
	for (r = r0; r <= r1; r++) {
		size_t n = rec_len(new_size, r), n_old = rec_len(sf->size, r);
		uint64_t rs = r * R, a = off > rs ? off : rs;
		uint64_t b = end < rs + n ? end : rs + n;
		const unsigned char *src = in + (rs > off ? rs - off : 0);

		if (a != rs || b != rs + n) {
			/* read-modify-write */
			memset(plain, 0, n);
			if (n_old)
				rc = read_rec(sf, r, n_old, plain, NULL);
			if (rc < 0)
				goto out;
			memcpy(plain + (a - rs), in + (a - off),
			       (size_t)(b - a));
			src = plain;
		}
		rc = seal_rec(sf, r, src, n, disk + (rec_off(r) - base));
		if (rc < 0)
			goto out;
	}
	rc = pwrite_all(sf->fd, disk, (size_t)total, (off_t)base);
	if (rc == 0)
		sf->size = new_size;
out:
	if (rc < 0)
		restore_len(sf);
	if (plain)
		OPENSSL_cleanse(plain, R);
	free(plain);
	free(disk);
	return rc;
}

int seal_pwrite(struct seal_file *sf, const void *buf, size_t len, uint64_t off)
{
	int rc;

	pthread_rwlock_wrlock(&sf->lock);
	rc = pwrite_locked(sf, buf, len, off);
	pthread_rwlock_unlock(&sf->lock);
	return rc;
}

static int truncate_locked(struct seal_file *sf, uint64_t size)
{
	int rc = 0;

	if (!sf->sealed) {
		if (ftruncate(sf->fd, (off_t)size) < 0)
			return -errno;
		sf->size = size;
		return 0;
	}
	if (size == sf->size)
		return 0;
	if (size > sf->size && sf->size % R) {
		/* the short last record grows first: a consistent step */
		uint64_t r = sf->size / R;
		size_t n = rec_len(size, r);

		rc = resize_last(sf, r, rec_len(sf->size, r), n);
		if (rc < 0)
			goto out;
		sf->size = r * R + n;
	} else if (size < sf->size && size % R) {
		/* the record cut becomes the last: not atomic (see header) */
		uint64_t r = size / R;

		rc = resize_last(sf, r, rec_len(sf->size, r), rec_len(size, r));
		if (rc < 0)
			goto out;
		sf->size = size;
	}
	if (ftruncate(sf->fd, (off_t)disk_len(size)) < 0) {
		rc = -errno;
		goto out;
	}
	sf->size = size;
out:
	if (rc < 0)
		restore_len(sf);
	return rc;
}

int seal_truncate(struct seal_file *sf, uint64_t size)
{
	int rc;

	pthread_rwlock_wrlock(&sf->lock);
	rc = truncate_locked(sf, size);
	pthread_rwlock_unlock(&sf->lock);
	return rc;
}

int seal_sync(struct seal_file *sf)
{
	return fsync(sf->fd) < 0 ? -errno : 0;
}

/* fsync the folder holding @path. */
static int sync_parent(const char *path)
{
	const char *slash = strrchr(path, '/');
	char *dir = slash ? strndup(path, (size_t)(slash - path)) : NULL;
	int fd, rc = 0;

	if (slash && !dir)
		return -ENOMEM;
	fd = open(dir && *dir ? dir
		  : slash     ? "/"
			      : ".",
		  O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || fsync(fd) < 0)
		rc = -errno;
	if (fd >= 0)
		close(fd);
	free(dir);
	return rc;
}

int seal_copy(struct seal_file *src, const char *dst_path,
	      const struct crypt_key *key, uint64_t binding)
{
	struct seal_file *dst = NULL;
	unsigned char *buf = NULL;
	char *tmp = NULL;
	uint64_t off, i, size;
	int rc;

	if (asprintf(&tmp, "%s.tmp", dst_path) < 0) {
		tmp = NULL;
		return -ENOMEM;
	}
	buf = malloc(COPY_STEP);
	if (!buf) {
		rc = -ENOMEM;
		goto out;
	}
	size = seal_size(src);
	rc = seal_create(tmp, key, binding, &dst);
	for (off = 0; rc == 0 && off < size; off += COPY_STEP) {
		ssize_t n = seal_pread(src, buf, COPY_STEP, off);

		if (n < 0) {
			rc = (int)n;
			break;
		}
		for (i = 0; rc == 0 && i < (uint64_t)n; i += R) {
			size_t m = (uint64_t)n - i < R ? (size_t)(n - i) : R;

			if (!all_zero(buf + i, m))
				rc = seal_pwrite(dst, buf + i, m, off + i);
		}
	}
	if (rc == 0)
		rc = seal_truncate(dst, size);
	if (rc == 0)
		rc = seal_sync(dst);
	if (rc == 0 && rename(tmp, dst_path) < 0)
		rc = -errno;
	if (rc == 0)
		rc = sync_parent(dst_path);
out:
	seal_close(dst);
	if (rc < 0 && tmp)
		unlink(tmp);
	if (buf)
		OPENSSL_cleanse(buf, COPY_STEP);
	free(buf);
	free(tmp);
	return rc;
}
