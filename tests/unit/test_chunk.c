/*
 * test_chunk.c - chunk files: naming, chunk math, the on-disk format, round
 * trips raw and compressed, reads across block boundaries, every kind of
 * corruption, the scan, failed writes, and concurrent writers and readers.
 * Then the same for chunks sealed under a key (format 2, checked against
 * an independent decryption), keys that do not match, rekeying, and the
 * cost of decryption on warm reads (printed, not asserted).
 *
 * Everything happens under a mkdtemp() folder removed at the end.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <zlib.h>

#include "s3cachefs/chunk.h"
#include "s3cachefs/crypt.h"
#include "s3cachefs/log.h"
#include "tap.h"
#include "testfs.h"

#define CB CHUNK_BLOCK

static char root[PATH_MAX];

/* snprintf that stops the test on truncation (no path here is long). */
static uint64_t rnd_next(uint64_t *s)
{
	uint64_t x = *s;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	*s = x;
	return x;
}

static void fill_random(unsigned char *p, size_t n, uint64_t seed)
{
	uint64_t s = seed * 0x9e3779b97f4a7c15ull + 1;
	size_t i;

	for (i = 0; i < n; i++)
		p[i] = (unsigned char)(rnd_next(&s) >> 24);
}

static void fill_text(unsigned char *p, size_t n)
{
	static const char line[] = "the quick brown fox jumps over the dog\n";
	size_t i;

	for (i = 0; i < n; i++)
		p[i] = (unsigned char)line[i % (sizeof(line) - 1)];
}

static void sub_dir(const char *name, char out[PATH_MAX])
{
	xsnprintf(out, PATH_MAX, "%s/%s", root, name);
}

static void chunk_path(const char *dir, const char *name, char out[PATH_MAX])
{
	xsnprintf(out, PATH_MAX, "%s/%.2s/%s", dir, name, name);
}

/* Level 6 stores are also durable, so the fsync paths run too. */
static struct chunk_store *open_store(const char *dir, int level)
{
	struct chunk_store_conf conf = { .dir = dir,
					 .compress_level = level,
					 .durable = level == 6 };
	struct chunk_store *cs = NULL;
	int rc = chunk_store_open(&conf, &cs);

	if (rc < 0) {
		diag("cannot open store '%s': %d", dir, rc);
		exit(1);
	}
	return cs;
}

static void name_of(const char *key, uint64_t index, char out[65])
{
	struct chunk_id id = { .endpoint = "http://127.0.0.1:9000",
			       .bucket = "bucket",
			       .key = key,
			       .etag = "\"0123456789abcdef\"",
			       .index = index };

	chunk_name(&id, out);
}

static bool exists(const char *path)
{
	struct stat st;

	return lstat(path, &st) == 0;
}

static off_t file_size(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 ? st.st_size : -1;
}

static void flip_byte(const char *path, off_t off)
{
	unsigned char c = 0;
	int fd = open(path, O_RDWR);

	if (fd < 0 || pread(fd, &c, 1, off) != 1)
		diag("cannot read '%s' at %lld", path, (long long)off);
	c ^= 0x5a;
	if (fd < 0 || pwrite(fd, &c, 1, off) != 1)
		diag("cannot write '%s' at %lld", path, (long long)off);
	if (fd >= 0)
		close(fd);
}

/* Number of entries of @dir whose name contains @part ("" for all). */
static int count_entries(const char *dir, const char *part)
{
	struct dirent *de;
	DIR *d = opendir(dir);
	int n = 0;

	if (!d)
		return -1;
	while ((de = readdir(d)))
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..") &&
		    strstr(de->d_name, part))
			n++;
	closedir(d);
	return n;
}

/* Read the whole of @path into a malloc'd buffer. */
static unsigned char *slurp(const char *path, size_t *len)
{
	off_t size = file_size(path);
	unsigned char *p;
	int fd;

	if (size < 0)
		return NULL;
	p = malloc((size_t)size + 1);
	fd = open(path, O_RDONLY);
	if (!p || fd < 0 || pread(fd, p, (size_t)size, 0) != size) {
		free(p);
		if (fd >= 0)
			close(fd);
		return NULL;
	}
	close(fd);
	*len = (size_t)size;
	return p;
}

static uint64_t le(const unsigned char *p, int n)
{
	uint64_t v = 0;

	while (n-- > 0)
		v = (v << 8) | p[n];
	return v;
}

static int hexval(char c)
{
	return c <= '9' ? c - '0' : c - 'a' + 10;
}

/* The naming rule, spelled out independently of chunk.c. */
static void expected_name(const struct chunk_id *id, char out[65])
{
	const char *f[4] = { id->endpoint, id->bucket, id->key, id->etag };
	unsigned char buf[4096], md[32];
	unsigned int mdlen;
	size_t n = 0, l;
	int i, j;

	for (i = 0; i < 4; i++) {
		l = strlen(f[i]);
		for (j = 0; j < 8; j++)
			buf[n++] = (unsigned char)((uint64_t)l >> (56 - 8 * j));
		memcpy(buf + n, f[i], l);
		n += l;
	}
	for (j = 0; j < 8; j++)
		buf[n++] = (unsigned char)(id->index >> (56 - 8 * j));
	EVP_Digest(buf, n, md, &mdlen, EVP_sha256(), NULL);
	for (i = 0; i < 32; i++)
		xsnprintf(out + 2 * i, 3, "%02x", md[i]);
}

static void test_naming(void)
{
	struct chunk_id a = { "", "bkt", "dir/file", "\"e1\"", 7 };
	struct chunk_id b;
	char n1[65], n2[65], want[65];

	chunk_name(&a, n1);
	chunk_name(&a, n2);
	is_str(n1, n2, "name is deterministic");
	ok(chunk_name_valid(n1) && strlen(n1) == 64,
	   "name is 64 lowercase hex");
	expected_name(&a, want);
	is_str(n1, want, "name = sha-256 of length-prefixed fields + index");

	b = a;
	b.endpoint = "http://x";
	chunk_name(&b, n2);
	ok(strcmp(n1, n2) != 0, "endpoint changes the name");
	b = a;
	b.bucket = "bkt2";
	chunk_name(&b, n2);
	ok(strcmp(n1, n2) != 0, "bucket changes the name");
	b = a;
	b.key = "dir/file2";
	chunk_name(&b, n2);
	ok(strcmp(n1, n2) != 0, "key changes the name");
	b = a;
	b.etag = "\"e2\"";
	chunk_name(&b, n2);
	ok(strcmp(n1, n2) != 0, "etag changes the name");
	b = a;
	b.index = 8;
	chunk_name(&b, n2);
	ok(strcmp(n1, n2) != 0, "index changes the name");
	b = a;
	b.index = 7ull << 56;
	chunk_name(&b, n2);
	ok(strcmp(n1, n2) != 0, "index is hashed as 64 bits");

	a.key = "ab";
	a.etag = "c";
	b = a;
	b.key = "a";
	b.etag = "bc";
	chunk_name(&a, n1);
	chunk_name(&b, n2);
	ok(strcmp(n1, n2) != 0, "key 'ab'/etag 'c' differs from 'a'/'bc'");
	a.endpoint = "";
	a.bucket = "x";
	b = a;
	b.endpoint = "x";
	b.bucket = "";
	chunk_name(&a, n1);
	chunk_name(&b, n2);
	ok(strcmp(n1, n2) != 0, "endpoint ''/bucket 'x' differs from 'x'/''");

	ok(!chunk_name_valid(NULL), "NULL is not a name");
	ok(!chunk_name_valid(""), "'' is not a name");
	memset(want, 'a', 64);
	want[64] = '\0';
	ok(chunk_name_valid(want), "64 x 'a' is a name");
	want[63] = '\0';
	ok(!chunk_name_valid(want), "63 digits is not a name");
	want[63] = 'a';
	want[10] = 'A';
	ok(!chunk_name_valid(want), "uppercase is not a name");
	want[10] = 'g';
	ok(!chunk_name_valid(want), "non-hex is not a name");
	{
		char longer[66];

		memset(longer, '0', 65);
		longer[65] = '\0';
		ok(!chunk_name_valid(longer), "65 digits is not a name");
	}
}

static void test_math(void)
{
	static const uint64_t sizes[] = { CHUNK_SIZE_MIN, 4u << 20,
					  CHUNK_SIZE_MAX };
	size_t i;

	for (i = 0; i < sizeof(sizes) / sizeof(*sizes); i++) {
		uint64_t cs = sizes[i];
		int good = 1;

		good &= chunk_index_of(0, cs) == 0;
		good &= chunk_index_of(1, cs) == 0;
		good &= chunk_index_of(cs - 1, cs) == 0;
		good &= chunk_index_of(cs, cs) == 1;
		good &= chunk_index_of(cs + 1, cs) == 1;
		good &= chunk_index_of(5 * cs + 3, cs) == 5;

		good &= chunk_count_of(0, cs) == 0;
		good &= chunk_count_of(1, cs) == 1;
		good &= chunk_count_of(cs - 1, cs) == 1;
		good &= chunk_count_of(cs, cs) == 1;
		good &= chunk_count_of(cs + 1, cs) == 2;

		good &= chunk_len_of(0, 0, cs) == 0;
		good &= chunk_len_of(0, 1, cs) == 1;
		good &= chunk_len_of(1, 1, cs) == 0;
		good &= chunk_len_of(0, cs - 1, cs) == cs - 1;
		good &= chunk_len_of(0, cs, cs) == cs;
		good &= chunk_len_of(1, cs, cs) == 0;
		good &= chunk_len_of(0, cs + 1, cs) == cs;
		good &= chunk_len_of(1, cs + 1, cs) == 1;
		good &= chunk_len_of(2, cs + 1, cs) == 0;
		ok(good, "chunk math for chunk size %llu",
		   (unsigned long long)cs);
	}
}

/* The exact bytes of a raw and of a compressed file. */
static void test_format(void)
{
	char dir[PATH_MAX], path[PATH_MAX], name[65];
	unsigned char *data = malloc(3 * CB), *file = NULL, *inflated = NULL;
	struct chunk_store *cs;
	size_t flen = 0, len = CB + 10, hs;
	uLongf dlen;
	int i, good;

	sub_dir("format", dir);
	cs = open_store(dir, 0);
	fill_random(data, len, 1);
	name_of("format/raw", 0, name);
	is_int(chunk_write(cs, name, data, len, NULL), 0, "write raw chunk");
	chunk_path(dir, name, path);
	file = slurp(path, &flen);
	ok(file != NULL, "file is in shard '%.2s'", name);
	if (!file)
		goto out;
	hs = 72 + 4 * 2;
	is_int(flen, hs + len, "raw file = header + data");
	ok(memcmp(file, "S3CCHUNK", 8) == 0, "magic");
	is_int(le(file + 8, 2), 1, "version 1, little-endian");
	is_int(le(file + 10, 2), 0, "flags 0 when raw");
	is_int(le(file + 12, 4), 0, "reserved 0");
	good = 1;
	for (i = 0; i < 32; i++)
		good &= file[16 + i] ==
			(hexval(name[2 * i]) << 4 | hexval(name[2 * i + 1]));
	ok(good, "identity = the name's digest");
	is_int(le(file + 48, 8), len, "data_len");
	is_int(le(file + 56, 8), len, "stored_len = data_len when raw");
	is_int(le(file + 64, 4), 2, "n_blocks");
	is_int(le(file + 68, 4), crc32(0, data, CB), "crc of block 0");
	is_int(le(file + 72, 4), crc32(0, data + CB, 10), "crc of block 1");
	is_int(le(file + 76, 4), crc32(0, file, 76), "crc of the header");
	ok(memcmp(file + hs, data, len) == 0, "payload is the data");
	free(file);
	file = NULL;
	chunk_store_close(cs);

	cs = open_store(dir, 9);
	len = 3 * CB;
	fill_text(data, len);
	name_of("format/zlib", 0, name);
	is_int(chunk_write(cs, name, data, len, NULL), 0, "write zlib chunk");
	chunk_path(dir, name, path);
	file = slurp(path, &flen);
	ok(file != NULL, "file is there");
	if (!file)
		goto out;
	hs = 72 + 4 * 3;
	is_int(le(file + 10, 2), 1, "flags bit 0 when compressed");
	is_int(le(file + 48, 8), len, "data_len is uncompressed length");
	ok(le(file + 56, 8) < len, "stored_len smaller");
	is_int(flen, hs + le(file + 56, 8), "file = header + stored_len");
	is_int(le(file + 64, 4), 3, "n_blocks of uncompressed data");
	is_int(le(file + 76, 4), crc32(0, data + 2 * CB, CB), "crc block 2");
	inflated = malloc(len);
	dlen = len;
	ok(inflated &&
		   uncompress(inflated, &dlen, file + hs, flen - hs) == Z_OK &&
		   dlen == len && memcmp(inflated, data, len) == 0,
	   "payload is zlib of the data");
out:
	chunk_store_close(cs);
	free(inflated);
	free(file);
	free(data);
}

/* Check ranges of chunk @name against @data (@len); 1 when all match. */
static int check_ranges(struct chunk_store *cs, const char *name,
			const unsigned char *data, size_t len,
			unsigned char *buf)
{
	const uint64_t r[][2] = {
		{ 0, len },	{ 0, len + 100 },   { 1, len },
		{ 1, 1 },	{ CB - 1, 2 },	    { CB - 3, CB + 10 },
		{ CB, CB },	{ CB + 1, 3 * CB }, { len / 2, 7 },
		{ len - 1, 1 }, { len - 1, 100 },   { len ? len - 2 : 0, 2 },
		{ len, 1 },	{ len + 1, 10 },    { UINT64_MAX - 5, 10 },
		{ 3, 0 },
	};
	size_t i;

	for (i = 0; i < sizeof(r) / sizeof(*r); i++) {
		uint64_t off = r[i][0], n = r[i][1], want;
		ssize_t got;

		if (off > len + 1 && off != UINT64_MAX - 5)
			continue; /* only meaningful for longer chunks */
		want = off >= len ? 0 : (len - off < n ? len - off : n);
		memset(buf, 0xee, want + 1);
		got = chunk_read(cs, name, off, buf, (size_t)n);
		if (got != (ssize_t)want ||
		    (want && memcmp(buf, data + off, want) != 0) ||
		    buf[want] != 0xee) {
			diag("read [%llu, +%llu) of %zu: got %zd, want %llu",
			     (unsigned long long)off, (unsigned long long)n,
			     len, got, (unsigned long long)want);
			return 0;
		}
	}
	return 1;
}

static void test_roundtrip(void)
{
	static const int levels[] = { 0, 1, 6, 9 };
	static const size_t lens[] = { 0, 1, CB - 1, CB, CB + 1, 4u << 20 };
	size_t maxlen = 4u << 20;
	unsigned char *data = malloc(maxlen), *buf = malloc(maxlen + 200);
	size_t li;
	int l, kind;

	for (l = 0; l < 4; l++) {
		char dir[PATH_MAX], sub[32];
		struct chunk_store *cs;
		int good = 1, disk_good = 1, flag_good = 1;

		xsnprintf(sub, sizeof(sub), "rt%d", levels[l]);
		sub_dir(sub, dir);
		cs = open_store(dir, levels[l]);
		for (li = 0; li < sizeof(lens) / sizeof(*lens); li++) {
			for (kind = 0; kind < 2; kind++) {
				size_t len = lens[li];
				struct chunk_stats s0, s1;
				char name[65], key[64], path[PATH_MAX];
				uint64_t disk = 0, dlen = 0;
				int want_z =
					levels[l] > 0 && kind == 1 && len >= 64;
				unsigned char hdr[12];
				int fd, rc;

				if (kind)
					fill_text(data, len);
				else
					fill_random(data, len, len + 7);
				xsnprintf(key, sizeof(key), "rt/%zu/%d", len,
					  kind);
				name_of(key, li, name);
				chunk_get_stats(cs, &s0);
				rc = chunk_write(cs, name, data, len, &disk);
				chunk_get_stats(cs, &s1);
				if (rc != 0 || s1.written != s0.written + 1 ||
				    s1.compressed !=
					    s0.compressed + (uint64_t)want_z) {
					diag("write %s len %zu level %d: rc "
					     "%d, "
					     "compressed +%llu",
					     kind ? "text" : "random", len,
					     levels[l], rc,
					     (unsigned long long)(s1.compressed -
								  s0.compressed));
					good = 0;
				}
				chunk_path(dir, name, path);
				if (disk % 512 ||
				    disk < (uint64_t)file_size(path))
					disk_good = 0;
				fd = open(path, O_RDONLY);
				if (fd < 0 ||
				    pread(fd, hdr, sizeof(hdr), 0) != 12 ||
				    (int)le(hdr + 10, 2) != want_z)
					flag_good = 0;
				if (fd >= 0)
					close(fd);
				if (chunk_data_len(cs, name, &dlen) != 0 ||
				    dlen != len) {
					diag("data_len of %zu: %llu", len,
					     (unsigned long long)dlen);
					good = 0;
				}
				if (!check_ranges(cs, name, data, len, buf))
					good = 0;
			}
		}
		ok(good, "level %d: round trips, stats, ranges", levels[l]);
		ok(flag_good, "level %d: text compressed, random raw on disk",
		   levels[l]);
		ok(disk_good,
		   "level %d: disk_bytes >= file size, multiple of 512",
		   levels[l]);
		{
			struct chunk_stats s;

			chunk_get_stats(cs, &s);
			ok(s.corrupt == 0 && s.read_errors == 0 &&
				   s.write_errors == 0,
			   "level %d: no error counted", levels[l]);
		}
		chunk_store_close(cs);
	}
	free(data);
	free(buf);
}

/* Write @data as @name, then flip the byte at @off of its file. */
static void write_and_flip(struct chunk_store *cs, const char *dir,
			   const char *name, const void *data, size_t len,
			   off_t off)
{
	char path[PATH_MAX];

	if (chunk_write(cs, name, data, len, NULL) != 0)
		diag("write of '%s' failed", name);
	chunk_path(dir, name, path);
	if (off >= 0)
		flip_byte(path, off);
}

/* Expect -EBADMSG from a read of @name, the file gone and one more corrupt. */
static void expect_bad(struct chunk_store *cs, const char *dir,
		       const char *name, uint64_t off, size_t n,
		       const char *what)
{
	unsigned char buf[64];
	char path[PATH_MAX];
	struct chunk_stats s0, s1;
	ssize_t rc;

	chunk_path(dir, name, path);
	chunk_get_stats(cs, &s0);
	rc = chunk_read(cs, name, off, buf, n < sizeof(buf) ? n : sizeof(buf));
	chunk_get_stats(cs, &s1);
	is_int(rc, -EBADMSG, "%s: -EBADMSG", what);
	ok(!exists(path), "%s: file deleted", what);
	is_int(s1.corrupt - s0.corrupt, 1, "%s: counted corrupt", what);
	is_int(chunk_read(cs, name, off, buf, 1), -ENOENT, "%s: then -ENOENT",
	       what);
}

static void set_le_buf(unsigned char *b, uint64_t v, int n)
{
	int i;

	for (i = 0; i < n; i++)
		b[i] = (unsigned char)(v >> (8 * i));
}

static void set_le(const char *path, off_t off, uint64_t v, int n)
{
	unsigned char b[8];
	int fd = open(path, O_RDWR);

	set_le_buf(b, v, n);
	if (fd < 0 || pwrite(fd, b, (size_t)n, off) != n)
		diag("cannot patch '%s'", path);
	if (fd >= 0)
		close(fd);
}

/* Patch a header field of @path and recompute the header CRC. */
static void patch_header(const char *path, off_t off, uint64_t v, int n)
{
	unsigned char h[72 + 4 * 1024];
	uint32_t nb;
	int fd;

	set_le(path, off, v, n);
	fd = open(path, O_RDONLY);
	if (fd < 0 || pread(fd, h, sizeof(h), 0) < 68) {
		diag("cannot read header of '%s'", path);
		if (fd >= 0)
			close(fd);
		return;
	}
	close(fd);
	nb = (uint32_t)le(h + 64, 4);
	set_le(path, 68 + 4 * (off_t)nb, crc32(0, h, 68 + 4 * nb), 4);
}

/*
 * Replace the payload of compressed chunk file @path (header @hs bytes) by
 * zlib of @n bytes of @data plus @extra garbage bytes, fixing stored_len
 * and the header CRC so that only the payload is wrong.
 */
static void replace_payload(const char *path, size_t hs,
			    const unsigned char *data, size_t n, int extra)
{
	uLongf zlen = compressBound(n) + (uLongf)extra;
	unsigned char *z = malloc(zlen), h[72 + 4 * 1024];
	int fd = open(path, O_RDWR);

	zlen -= (uLongf)extra;
	if (fd < 0 || pread(fd, h, hs, 0) != (ssize_t)hs ||
	    compress2(z, &zlen, data, n, 6) != Z_OK) {
		diag("cannot rewrite '%s'", path);
		goto out;
	}
	memset(z + zlen, 0x42, (size_t)extra);
	zlen += (uLongf)extra;
	set_le_buf(h + 56, zlen, 8);
	set_le_buf(h + hs - 4, crc32(0, h, (uInt)(hs - 4)), 4);
	if (ftruncate(fd, 0) < 0 || pwrite(fd, h, hs, 0) != (ssize_t)hs ||
	    pwrite(fd, z, zlen, (off_t)hs) != (ssize_t)zlen)
		diag("cannot rewrite '%s'", path);
out:
	if (fd >= 0)
		close(fd);
	free(z);
}

static void test_corruption(void)
{
	size_t len = 3 * CB + 100;
	unsigned char *data = malloc(len), *buf = malloc(len);
	char dir[PATH_MAX], path[PATH_MAX], name[65], other[65];
	struct chunk_store *cs, *zs;
	size_t hs = 72 + 4 * 4;
	uint64_t dlen;
	int fd;

	sub_dir("corrupt", dir);
	cs = open_store(dir, 0);
	fill_random(data, len, 42);
	name_of("corrupt/a", 0, name);
	chunk_path(dir, name, path);

	/* payload byte in block 2 */
	write_and_flip(cs, dir, name, data, len, (off_t)(hs + 2 * CB + 5));
	is_int(chunk_read(cs, name, 0, buf, CB), CB,
	       "blocks not read are not checked: read of block 0 works");
	ok(memcmp(buf, data, CB) == 0, "and returns the data");
	is_int(chunk_read(cs, name, CB + 10, buf, CB - 20), CB - 20,
	       "read within block 1 works");
	is_int(chunk_data_len(cs, name, &dlen), 0,
	       "data_len checks only the header");
	expect_bad(cs, dir, name, 2 * CB - 3, 10, "raw payload flip");

	write_and_flip(cs, dir, name, data, len, (off_t)(hs + len - 1));
	expect_bad(cs, dir, name, len - 1, 1, "flip in last short block");

	write_and_flip(cs, dir, name, data, len, 0);
	expect_bad(cs, dir, name, 0, 1, "magic flip");
	write_and_flip(cs, dir, name, data, len, 8);
	expect_bad(cs, dir, name, 0, 1, "version flip");
	write_and_flip(cs, dir, name, data, len, 20);
	expect_bad(cs, dir, name, 0, 1, "identity byte flip");
	write_and_flip(cs, dir, name, data, len, 50);
	expect_bad(cs, dir, name, 0, 1, "data_len flip");
	write_and_flip(cs, dir, name, data, len, 64);
	expect_bad(cs, dir, name, 0, 1, "n_blocks flip");
	write_and_flip(cs, dir, name, data, len, 70);
	expect_bad(cs, dir, name, 0, 1, "block crc flip");
	write_and_flip(cs, dir, name, data, len, (off_t)hs - 1);
	expect_bad(cs, dir, name, 0, 1, "header crc flip");

	write_and_flip(cs, dir, name, data, len, 40);
	is_int(chunk_data_len(cs, name, &dlen), -EBADMSG,
	       "data_len of a bad header: -EBADMSG");
	ok(!exists(path), "and the file is deleted");

	/* headers whose CRC matches but whose fields do not make sense */
	write_and_flip(cs, dir, name, data, len, -1);
	patch_header(path, 10, 2, 2);
	expect_bad(cs, dir, name, 0, 1, "unknown flag");
	write_and_flip(cs, dir, name, data, len, -1);
	patch_header(path, 12, 1, 4);
	expect_bad(cs, dir, name, 0, 1, "reserved set");
	write_and_flip(cs, dir, name, data, len, -1);
	patch_header(path, 56, len - 1, 8);
	expect_bad(cs, dir, name, 0, 1, "raw stored_len != data_len");
	write_and_flip(cs, dir, name, data, len, -1);
	patch_header(path, 48, len + 1, 8);
	expect_bad(cs, dir, name, 0, 1, "data_len vs size");
	write_and_flip(cs, dir, name, data, len, -1);
	patch_header(path, 48, 5 * CB, 8);
	expect_bad(cs, dir, name, 0, 1, "data_len vs n_blocks");
	write_and_flip(cs, dir, name, data, len, -1);
	patch_header(path, 10, 1, 2);
	expect_bad(cs, dir, name, 0, 1, "zlib flag on raw data");

	write_and_flip(cs, dir, name, data, len, -1);
	if (truncate(path, (off_t)(hs + len - 1)) < 0)
		diag("truncate failed");
	expect_bad(cs, dir, name, 0, 1, "truncated by one byte");
	write_and_flip(cs, dir, name, data, len, -1);
	if (truncate(path, 40) < 0)
		diag("truncate failed");
	expect_bad(cs, dir, name, 0, 1, "truncated inside the header");
	write_and_flip(cs, dir, name, data, len, -1);
	if (truncate(path, 0) < 0)
		diag("truncate failed");
	expect_bad(cs, dir, name, 0, 1, "empty file");
	write_and_flip(cs, dir, name, data, len, -1);
	if (truncate(path, (off_t)(hs + len + 1)) < 0)
		diag("truncate failed");
	expect_bad(cs, dir, name, 0, 1, "one byte too long");

	/* another chunk's file under this name */
	name_of("corrupt/b", 0, other);
	write_and_flip(cs, dir, name, data, len, -1);
	{
		char opath[PATH_MAX], cmd[2 * PATH_MAX + 16];

		chunk_path(dir, other, opath);
		xsnprintf(cmd, sizeof(cmd), "cp '%s' '%s'", path, opath);
		ok(system(cmd) == 0, "copy a chunk under another name");
		expect_bad(cs, dir, other, 0, 1, "wrong identity");
		is_int(chunk_read(cs, name, 0, buf, len), len,
		       "the original still reads");
	}

	/* compressed: the whole payload is checked on any read */
	zs = open_store(dir, 6);
	fill_text(data, len);
	name_of("corrupt/z", 0, name);
	chunk_path(dir, name, path);
	write_and_flip(zs, dir, name, data, len, -1);
	fd = open(path, O_RDONLY);
	{
		unsigned char h[16];

		ok(fd >= 0 && pread(fd, h, 12, 0) == 12 && le(h + 10, 2) == 1,
		   "text chunk is stored compressed");
	}
	if (fd >= 0)
		close(fd);
	flip_byte(path, file_size(path) - 100);
	expect_bad(zs, dir, name, 0, 1, "compressed payload flip");
	write_and_flip(zs, dir, name, data, len, -1);
	flip_byte(path, file_size(path) - 1);
	expect_bad(zs, dir, name, 0, 1, "compressed trailer flip");
	write_and_flip(zs, dir, name, data, len, (off_t)hs + 2);
	expect_bad(zs, dir, name, len - 1, 1, "compressed stream header flip");
	write_and_flip(zs, dir, name, data, len, -1);
	if (truncate(path, file_size(path) - 1) < 0)
		diag("truncate failed");
	expect_bad(zs, dir, name, 0, 1, "compressed truncated");
	/* valid zlib streams that do not match the header */
	{
		unsigned char *other_data = malloc(len);

		memcpy(other_data, data, len);
		other_data[CB + 3] ^= 1;
		write_and_flip(zs, dir, name, data, len, -1);
		replace_payload(path, hs, other_data, len, 0);
		expect_bad(zs, dir, name, 0, 1,
			   "stream of other data (block crc)");
		write_and_flip(zs, dir, name, data, len, -1);
		replace_payload(path, hs, data, len - 1, 0);
		expect_bad(zs, dir, name, 0, 1, "stream one byte short");
		write_and_flip(zs, dir, name, data, len, -1);
		replace_payload(path, hs, data, len, 1);
		expect_bad(zs, dir, name, 0, 1, "garbage after the stream");
		write_and_flip(zs, dir, name, data, len, -1);
		replace_payload(path, hs, data, len, 0);
		is_int(chunk_read(zs, name, 5, buf, 10), 10,
		       "a faithful rewrite still reads (control)");
		free(other_data);
	}
	chunk_store_close(zs);
	chunk_store_close(cs);
	free(data);
	free(buf);
}

struct scan_seen {
	char names[16][65];
	uint64_t disk[16];
	int n;
	int stop_after;
};

static int scan_cb(void *ctx, const char *name, uint64_t disk_bytes)
{
	struct scan_seen *s = ctx;

	if (s->n < 16) {
		xsnprintf(s->names[s->n], 65, "%s", name);
		s->disk[s->n] = disk_bytes;
	}
	s->n++;
	if (s->stop_after && s->n >= s->stop_after)
		return -ECANCELED;
	return 0;
}

static void touch(const char *path)
{
	int fd = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0600);

	if (fd < 0 || write(fd, "junk", 4) != 4)
		diag("cannot create '%s'", path);
	if (fd >= 0)
		close(fd);
}

static void test_scan(void)
{
	char dir[PATH_MAX], path[PATH_MAX], names[5][65], junk[8][PATH_MAX];
	unsigned char data[1000];
	struct scan_seen seen = { 0 };
	struct chunk_store *cs;
	int i, j, found, good, nj = 0;
	char up[65], wrong[65];

	sub_dir("scan", dir);
	cs = open_store(dir, 0);
	fill_random(data, sizeof(data), 3);
	for (i = 0; i < 5; i++) {
		char key[16];

		xsnprintf(key, sizeof(key), "scan/%d", i);
		name_of(key, 0, names[i]);
		chunk_write(cs, names[i], data, sizeof(data) - (size_t)i, NULL);
	}
	xsnprintf(junk[nj++], PATH_MAX, "%s/%.2s/%s.tmp.999999.1", dir,
		  names[0], names[0]);
	xsnprintf(junk[nj++], PATH_MAX, "%s/%.2s/%s.tmp.%ld.7", dir, names[1],
		  names[1], (long)getpid());
	xsnprintf(junk[nj++], PATH_MAX, "%s/00/junk.txt", dir);
	xsnprintf(up, sizeof(up), "%s", names[2]);
	for (i = 0; i < 64; i++)
		if (up[i] >= 'a' && up[i] <= 'f')
			up[i] = (char)(up[i] - 'a' + 'A');
	xsnprintf(junk[nj++], PATH_MAX, "%s/%.2s/%s", dir, names[2], up);
	xsnprintf(wrong, sizeof(wrong), "%s", names[3]);
	wrong[0] = wrong[0] == '0' ? '1' : '0';
	xsnprintf(junk[nj++], PATH_MAX, "%s/%.2s/%s", dir, names[4], wrong);
	for (i = 0; i < nj; i++)
		touch(junk[i]);
	xsnprintf(path, sizeof(path), "%s/%.2s/%s.link", dir, names[0],
		  names[0]);
	if (symlink("nowhere", path) < 0)
		diag("symlink failed");
	xsnprintf(junk[nj++], PATH_MAX, "%s", path);

	/* shards 7e (a file in its place) and 7f (missing) get remade */
	xsnprintf(path, sizeof(path), "%s/7f", dir);
	rm_rf(path);
	xsnprintf(path, sizeof(path), "%s/7e", dir);
	rm_rf(path);
	touch(path);

	is_int(chunk_scan(cs, scan_cb, &seen), 0, "scan succeeds");
	is_int(seen.n, 5, "scan visits exactly the 5 chunks");
	good = 1;
	for (i = 0; i < 5; i++) {
		found = 0;
		for (j = 0; j < seen.n && j < 16; j++) {
			if (strcmp(seen.names[j], names[i]) == 0) {
				found++;
				chunk_path(dir, names[i], path);
				if (seen.disk[j] % 512 ||
				    seen.disk[j] < (uint64_t)file_size(path))
					good = 0;
			}
		}
		if (found != 1)
			good = 0;
	}
	ok(good, "each chunk once, with sane disk bytes");
	good = 1;
	for (i = 0; i < nj; i++) {
		if (exists(junk[i])) {
			diag("still there: %s", junk[i]);
			good = 0;
		}
	}
	ok(good, "temporaries, junk, misplaced names and symlinks deleted");
	{
		struct stat st;

		xsnprintf(path, sizeof(path), "%s/7f", dir);
		ok(stat(path, &st) == 0 && S_ISDIR(st.st_mode),
		   "missing shard recreated");
		xsnprintf(path, sizeof(path), "%s/7e", dir);
		ok(stat(path, &st) == 0 && S_ISDIR(st.st_mode),
		   "file in a shard's place replaced by a folder");
	}
	for (i = 0; i < 5; i++) {
		chunk_path(dir, names[i], path);
		if (!exists(path))
			break;
	}
	is_int(i, 5, "chunks survive the scan");

	memset(&seen, 0, sizeof(seen));
	seen.stop_after = 2;
	is_int(chunk_scan(cs, scan_cb, &seen), -ECANCELED,
	       "scan stops at the callback's error");
	is_int(seen.n, 2, "and calls it no more");

	chunk_path(dir, names[0], path);
	is_int(chunk_remove(cs, names[0]), 0, "remove");
	ok(!exists(path), "file gone");
	is_int(chunk_remove(cs, names[0]), 0, "remove of a missing chunk: 0");
	is_int(chunk_remove(cs, "nope"), -EINVAL, "remove of a bad name");
	memset(&seen, 0, sizeof(seen));
	chunk_scan(cs, scan_cb, &seen);
	is_int(seen.n, 4, "removed chunk no longer scanned");
	chunk_store_close(cs);
}

static void test_write_failures(void)
{
	char dir[PATH_MAX], path[PATH_MAX], shard[PATH_MAX], away[PATH_MAX];
	unsigned char *data = malloc(200000), buf[16];
	struct chunk_stats s0, s1;
	struct chunk_store *cs;
	struct rlimit rl, small;
	char name[65];
	uint64_t disk = 12345;
	int rc;

	sub_dir("fail", dir);
	cs = open_store(dir, 0);
	fill_random(data, 200000, 9);
	name_of("fail/a", 0, name);
	chunk_path(dir, name, path);
	xsnprintf(shard, sizeof(shard), "%s/%.2s", dir, name);
	xsnprintf(away, sizeof(away), "%s/away", dir);

	is_int(chunk_write(cs, "bad", data, 10, NULL), -EINVAL,
	       "write of a bad name");
	is_int(chunk_write(cs, name, data, CHUNK_SIZE_MAX + 1, NULL), -EINVAL,
	       "write over CHUNK_SIZE_MAX");
	is_int(chunk_read(cs, "bad", 0, buf, 1), -EINVAL, "read of a bad name");
	chunk_get_stats(cs, &s0);
	is_int(chunk_read(cs, name, 0, buf, 1), -ENOENT, "read of no file");
	chunk_get_stats(cs, &s1);
	ok(s1.read_errors == s0.read_errors && s1.corrupt == s0.corrupt,
	   "a missing file is not an error");

	/* the shard is a regular file */
	ok(rename(shard, away) == 0, "move the shard away");
	touch(shard);
	chunk_get_stats(cs, &s0);
	rc = chunk_write(cs, name, data, 1000, &disk);
	chunk_get_stats(cs, &s1);
	ok(rc < 0, "write into a non-folder shard fails (%d)", rc);
	is_int(disk, 12345, "disk_bytes untouched on failure");
	is_int(s1.write_errors - s0.write_errors, 1, "counted write error");
	is_int(count_entries(away, ""), 0, "no temporary left");
	is_int(file_size(shard), 4, "the file in the shard's place untouched");
	unlink(shard);
	ok(rename(away, shard) == 0, "put the shard back");

	/* the final name is a non-empty folder: the rename fails */
	xsnprintf(away, sizeof(away), "%s/sub", path);
	ok(mkdir(path, 0700) == 0 && mkdir(away, 0700) == 0,
	   "make a folder in the chunk's place");
	chunk_get_stats(cs, &s0);
	rc = chunk_write(cs, name, data, 1000, NULL);
	chunk_get_stats(cs, &s1);
	ok(rc < 0, "write over a folder fails (%d)", rc);
	is_int(s1.write_errors - s0.write_errors, 1, "counted write error");
	is_int(s1.written - s0.written, 0, "not counted written");
	is_int(count_entries(shard, ".tmp."), 0, "no temporary left");
	rm_rf(path);

	/* the file size limit makes the write itself fail */
	signal(SIGXFSZ, SIG_IGN);
	getrlimit(RLIMIT_FSIZE, &rl);
	small = rl;
	small.rlim_cur = 4096;
	setrlimit(RLIMIT_FSIZE, &small);
	rc = chunk_write(cs, name, data, 200000, NULL);
	setrlimit(RLIMIT_FSIZE, &rl);
	is_int(rc, -EFBIG, "write past RLIMIT_FSIZE fails with -EFBIG");
	is_int(count_entries(shard, ".tmp."), 0, "no temporary left");
	ok(!exists(path), "no file of that name");

	/* missing shard folders are recreated on write */
	rm_rf(shard);
	is_int(chunk_write(cs, name, data, 1000, NULL), 0,
	       "write into a removed shard recreates it");
	is_int(chunk_read(cs, name, 0, data + 100000, 1000), 1000,
	       "and reads back");
	ok(memcmp(data, data + 100000, 1000) == 0, "same bytes");
	chunk_store_close(cs);
	free(data);
}

#define CONC_THREADS 4
#define CONC_ITERS 150
#define CONC_MAX (3 * CB + 8)

struct conc {
	struct chunk_store *cs;
	const char *name;
	int id;
	int errors;
	int reads;
};

static size_t conc_len(uint64_t seed)
{
	return 8 + (size_t)(seed * 2654435761u % (3 * CB));
}

static void conc_fill(unsigned char *p, uint64_t seed)
{
	size_t len = conc_len(seed);
	int i;

	if (seed & 1)
		fill_random(p + 8, len - 8, seed);
	else
		memset(p + 8, (int)(seed & 0xff), len - 8);
	for (i = 0; i < 8; i++)
		p[i] = (unsigned char)(seed >> (8 * i));
}

static void *conc_main(void *arg)
{
	struct conc *c = arg;
	unsigned char *w = malloc(CONC_MAX), *r = malloc(CONC_MAX),
		      *e = malloc(CONC_MAX);
	uint64_t s = (uint64_t)c->id + 1;
	int i;

	for (i = 0; i < CONC_ITERS; i++) {
		uint64_t op = rnd_next(&s) % 10;

		if (op < 4) {
			uint64_t seed = ((uint64_t)c->id << 32) | (uint64_t)i;
			int rc;

			conc_fill(w, seed);
			rc = chunk_write(c->cs, c->name, w, conc_len(seed),
					 NULL);
			if (rc != 0) {
				diag("thread %d: write: %d", c->id, rc);
				c->errors++;
			}
		} else if (op == 4 && c->id == 0) {
			chunk_remove(c->cs, c->name);
		} else {
			ssize_t n = chunk_read(c->cs, c->name, 0, r, CONC_MAX);
			uint64_t seed;

			if (n == -ENOENT)
				continue;
			if (n < 8) {
				diag("thread %d: read: %zd", c->id, n);
				c->errors++;
				continue;
			}
			seed = le(r, 8);
			conc_fill(e, seed);
			if ((size_t)n != conc_len(seed) ||
			    memcmp(r, e, (size_t)n) != 0) {
				diag("thread %d: torn read", c->id);
				c->errors++;
			}
			c->reads++;
		}
	}
	free(w);
	free(r);
	free(e);
	return NULL;
}

static void test_concurrency(void)
{
	struct conc c[CONC_THREADS];
	pthread_t t[CONC_THREADS];
	struct chunk_stats st;
	struct chunk_store *cs;
	char dir[PATH_MAX], name[65];
	int i, errors = 0, reads = 0;

	sub_dir("conc", dir);
	cs = open_store(dir, 1);
	name_of("conc", 0, name);
	for (i = 0; i < CONC_THREADS; i++) {
		c[i] = (struct conc){ .cs = cs, .name = name, .id = i };
		pthread_create(&t[i], NULL, conc_main, &c[i]);
	}
	for (i = 0; i < CONC_THREADS; i++) {
		pthread_join(t[i], NULL);
		errors += c[i].errors;
		reads += c[i].reads;
	}
	is_int(errors, 0, "concurrent writers and readers: no error");
	ok(reads > 0, "readers saw whole contents %d times", reads);
	chunk_get_stats(cs, &st);
	ok(st.corrupt == 0 && st.write_errors == 0 && st.read_errors == 0,
	   "no corruption or I/O error counted");
	ok(st.compressed > 0 && st.compressed < st.written,
	   "both raw and compressed writes happened");
	{
		char shard[PATH_MAX];

		xsnprintf(shard, sizeof(shard), "%s/%.2s", dir, name);
		is_int(count_entries(shard, ".tmp."), 0, "no temporaries left");
	}
	chunk_store_close(cs);
}

/* ---- sealed chunks ---- */

static struct crypt_key key_a, key_b;

static struct chunk_store *open_keyed(const char *dir, int level,
				      const struct crypt_key *key)
{
	struct chunk_store_conf conf = { .dir = dir,
					 .compress_level = level,
					 .key = key };
	struct chunk_store *cs = NULL;

	if (chunk_store_open(&conf, &cs) < 0) {
		diag("cannot open store '%s'", dir);
		exit(1);
	}
	return cs;
}

static void be32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)(v >> 24);
	p[1] = (unsigned char)(v >> 16);
	p[2] = (unsigned char)(v >> 8);
	p[3] = (unsigned char)v;
}

/*
 * Decrypt segment @i of sealed file image @file (header @hs bytes) with
 * OpenSSL directly, as the format says: nonce = header nonce + i, AAD =
 * header[0, 88) || be32(i).  1 when it authenticates.
 */
static int open_segment(const unsigned char *file, size_t hs, uint32_t i,
			size_t n, const struct crypt_key *k, unsigned char *out)
{
	unsigned char nonce[12], aad[92], tag[16];
	EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
	unsigned carry = i;
	int len = 0, good, j;

	memcpy(nonce, file + 76, 12);
	for (j = 11; j >= 0; j--) {
		carry += nonce[j];
		nonce[j] = (unsigned char)carry;
		carry >>= 8;
	}
	memcpy(aad, file, 88);
	be32(aad + 88, i);
	memcpy(tag, file + 92 + 16 * i, 16);
	good = EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, k->key,
				  nonce) == 1 &&
	       EVP_DecryptUpdate(ctx, NULL, &len, aad, 92) == 1 &&
	       (n == 0 ||
		EVP_DecryptUpdate(ctx, out, &len, file + hs + (size_t)i * CB,
				  (int)n) == 1) &&
	       EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, 16, tag) == 1 &&
	       EVP_DecryptFinal_ex(ctx, out + (n ? len : 0), &len) == 1;
	EVP_CIPHER_CTX_free(ctx);
	return good;
}

static bool contains(const unsigned char *hay, size_t n,
		     const unsigned char *needle, size_t m)
{
	return memmem(hay, n, needle, m) != NULL;
}

static void test_sealed_format(void)
{
	char dir[PATH_MAX], path[PATH_MAX], name[65];
	size_t len = CB + 10, flen = 0, hs, zlen;
	unsigned char *data = malloc(3 * CB), *out = malloc(3 * CB);
	unsigned char *file = NULL, *z = malloc(3 * CB);
	struct chunk_store *cs;
	uLongf dlen;
	int good, i;

	sub_dir("sealed-format", dir);
	cs = open_keyed(dir, 0, &key_a);
	fill_text(data, len);
	name_of("sealed/raw", 0, name);
	is_int(chunk_write(cs, name, data, len, NULL), 0, "sealed: write raw");
	chunk_path(dir, name, path);
	file = slurp(path, &flen);
	if (!ok(file != NULL, "sealed: file there"))
		goto out;
	hs = 92 + 16 * 2;
	is_int(flen, hs + len, "sealed raw file = header + data");
	ok(memcmp(file, "S3CCHUNK", 8) == 0, "sealed: magic");
	is_int(le(file + 8, 2), 2, "sealed: version 2");
	is_int(le(file + 10, 2), 2, "sealed: flags bit 1 only (raw)");
	is_int(le(file + 12, 4), 0, "sealed: reserved 0");
	good = 1;
	for (i = 0; i < 32; i++)
		good &= file[16 + i] ==
			(hexval(name[2 * i]) << 4 | hexval(name[2 * i + 1]));
	ok(good, "sealed: identity = the name's digest");
	is_int(le(file + 48, 8), len, "sealed: data_len");
	is_int(le(file + 56, 8), len, "sealed: stored_len");
	is_int(le(file + 64, 4), 2, "sealed: n_segs");
	ok(memcmp(file + 68, key_a.id, 8) == 0, "sealed: key id");
	is_int(le(file + 88, 4), crc32(0, file, 88), "sealed: header crc");
	ok(!contains(file, flen, data, 64) &&
		   !contains(file, flen, data + CB, 10),
	   "sealed: no plaintext in the file");
	ok(open_segment(file, hs, 0, CB, &key_a, out) &&
		   memcmp(out, data, CB) == 0,
	   "sealed: segment 0 decrypts independently");
	ok(open_segment(file, hs, 1, 10, &key_a, out) &&
		   memcmp(out, data + CB, 10) == 0,
	   "sealed: segment 1 under nonce + 1");
	ok(!open_segment(file, hs, 0, CB, &key_b, out),
	   "sealed: another key does not open it");
	free(file);
	file = NULL;
	chunk_store_close(cs);

	/* compressed: compress, then encrypt */
	cs = open_keyed(dir, 6, &key_a);
	len = 3 * CB;
	fill_text(data, len);
	name_of("sealed/zlib", 0, name);
	is_int(chunk_write(cs, name, data, len, NULL), 0, "sealed: write zlib");
	chunk_path(dir, name, path);
	file = slurp(path, &flen);
	if (!ok(file != NULL, "sealed zlib: file there"))
		goto out;
	zlen = (size_t)le(file + 56, 8);
	hs = 92 + 16 * ((zlen + CB - 1) / CB);
	is_int(le(file + 10, 2), 3, "sealed zlib: flags bits 0 and 1");
	ok(zlen < len, "sealed zlib: stored_len smaller");
	is_int(flen, hs + zlen, "sealed zlib: file = header + stored_len");
	good = 1;
	for (i = 0; (size_t)i * CB < zlen; i++) {
		size_t n =
			zlen - (size_t)i * CB < CB ? zlen - (size_t)i * CB : CB;

		good &= open_segment(file, hs, (uint32_t)i, n, &key_a,
				     z + (size_t)i * CB);
	}
	dlen = len;
	ok(good && uncompress(out, &dlen, z, zlen) == Z_OK && dlen == len &&
		   memcmp(out, data, len) == 0,
	   "sealed zlib: payload = encrypted zlib of the data");
out:
	chunk_store_close(cs);
	free(file);
	free(data);
	free(out);
	free(z);
}

static void test_sealed_roundtrip(void)
{
	static const size_t lens[] = { 0, 1, CB - 1, CB, CB + 1, 4u << 20 };
	size_t maxlen = 4u << 20, li, f1len = 0, f2len = 0;
	unsigned char *data = malloc(maxlen), *buf = malloc(maxlen + 200);
	unsigned char *f1 = NULL, *f2 = NULL;
	char dir[PATH_MAX], path[PATH_MAX], name[65];
	int level, kind;

	for (level = 0; level <= 6; level += 6) {
		struct chunk_store *cs;
		struct chunk_stats st;
		int good = 1;
		char sub[32];

		xsnprintf(sub, sizeof(sub), "sealed-rt%d", level);
		sub_dir(sub, dir);
		cs = open_keyed(dir, level, &key_a);
		for (li = 0; li < sizeof(lens) / sizeof(*lens); li++) {
			for (kind = 0; kind < 2; kind++) {
				size_t len = lens[li];
				uint64_t dlen = 0;
				char key[64];

				if (kind)
					fill_text(data, len);
				else
					fill_random(data, len, len + 3);
				xsnprintf(key, sizeof(key), "srt/%zu/%d", len,
					  kind);
				name_of(key, 0, name);
				if (chunk_write(cs, name, data, len, NULL) ||
				    chunk_data_len(cs, name, &dlen) ||
				    dlen != len ||
				    !check_ranges(cs, name, data, len, buf)) {
					diag("sealed level %d len %zu kind %d",
					     level, len, kind);
					good = 0;
				}
			}
		}
		ok(good, "sealed level %d: round trips and ranges", level);
		chunk_get_stats(cs, &st);
		ok(st.corrupt == 0 && st.wrong_key == 0 && st.read_errors == 0,
		   "sealed level %d: nothing counted bad", level);
		ok(level == 0 || st.compressed > 0,
		   "sealed level %d: text compressed", level);
		chunk_store_close(cs);
	}

	/* the same data twice: a fresh nonce, so different bytes */
	{
		struct chunk_store *cs = open_keyed(dir, 0, &key_a);

		fill_text(data, 1000);
		name_of("srt/twice", 0, name);
		chunk_path(dir, name, path);
		chunk_write(cs, name, data, 1000, NULL);
		f1 = slurp(path, &f1len);
		chunk_write(cs, name, data, 1000, NULL);
		f2 = slurp(path, &f2len);
		ok(f1 && f2 && f1len == f2len &&
			   memcmp(f1 + 76, f2 + 76, 12) != 0 &&
			   memcmp(f1 + f1len - 1000, f2 + f2len - 1000, 1000),
		   "sealed: rewriting the same data uses a new nonce");
		chunk_store_close(cs);
	}
	free(f1);
	free(f2);
	free(data);
	free(buf);
}

/* Expect -ENOKEY (@wrong_key) or -EBADMSG, the file gone, and the matching
 * count of the stats up by one. */
static void expect_sealed_bad(struct chunk_store *cs, const char *dir,
			      const char *name, uint64_t off, size_t n,
			      bool wrong_key, const char *what)
{
	unsigned char buf[128];
	char path[PATH_MAX];
	struct chunk_stats s0, s1;
	ssize_t rc;

	chunk_path(dir, name, path);
	chunk_get_stats(cs, &s0);
	rc = chunk_read(cs, name, off, buf, n < sizeof(buf) ? n : sizeof(buf));
	chunk_get_stats(cs, &s1);
	is_int(rc, wrong_key ? -ENOKEY : -EBADMSG, "%s: %s", what,
	       wrong_key ? "-ENOKEY" : "-EBADMSG");
	ok(!exists(path), "%s: file deleted", what);
	if (wrong_key)
		ok(s1.wrong_key == s0.wrong_key + 1 && s1.corrupt == s0.corrupt,
		   "%s: counted as wrong key", what);
	else
		ok(s1.corrupt == s0.corrupt + 1 && s1.wrong_key == s0.wrong_key,
		   "%s: counted corrupt", what);
}

/* Patch a sealed header field and recompute the header CRC. */
static void patch_sealed(const char *path, off_t off, uint64_t v, int n)
{
	unsigned char h[88];
	int fd;

	set_le(path, off, v, n);
	fd = open(path, O_RDONLY);
	if (fd < 0 || pread(fd, h, 88, 0) != 88)
		diag("cannot read '%s'", path);
	if (fd >= 0)
		close(fd);
	set_le(path, 88, crc32(0, h, 88), 4);
}

static void test_sealed_tamper(void)
{
	size_t len = 3 * CB + 100, hs = 92 + 16 * 4, i, flen = 0;
	unsigned char *data = malloc(len), *buf = malloc(len), *file = NULL;
	char dir[PATH_MAX], path[PATH_MAX], name[65], other[65];
	char opath[PATH_MAX];
	struct chunk_store *cs;
	uint64_t dlen;
	int fails = 0;

	sub_dir("sealed-tamper", dir);
	cs = open_keyed(dir, 0, &key_a);
	fill_random(data, len, 77);
	name_of("tamper/a", 0, name);
	chunk_path(dir, name, path);

	write_and_flip(cs, dir, name, data, len, (off_t)(hs + 2 * CB + 5));
	is_int(chunk_read(cs, name, 0, buf, CB), CB,
	       "sealed: blocks not read are not decrypted: block 0 reads");
	ok(memcmp(buf, data, CB) == 0, "sealed: and returns the data");
	expect_sealed_bad(cs, dir, name, 2 * CB + 1, 10, false,
			  "sealed payload flip");
	write_and_flip(cs, dir, name, data, len, (off_t)(92 + 16 + 3));
	expect_sealed_bad(cs, dir, name, CB, 1, false, "sealed tag flip");

	/* every header byte, one at a time: never served */
	for (i = 0; i < hs; i++) {
		ssize_t rc;

		write_and_flip(cs, dir, name, data, len, (off_t)i);
		rc = chunk_read(cs, name, 0, buf, len);
		if (rc != -EBADMSG || exists(path))
			fails++;
	}
	is_int(fails, 0,
	       "sealed: a flip of any header byte fails a whole read");

	/* headers edited with a matching CRC: the tags catch them */
	write_and_flip(cs, dir, name, data, len, -1);
	patch_sealed(path, 76, 12345, 8);
	expect_sealed_bad(cs, dir, name, 0, 1, false, "nonce edited");
	write_and_flip(cs, dir, name, data, len, -1);
	patch_sealed(path, 48, len - 1, 8);
	set_le(path, 56, len - 1, 8);
	patch_sealed(path, 56, len - 1, 8);
	if (truncate(path, (off_t)(hs + len - 1)) < 0)
		diag("truncate failed");
	expect_sealed_bad(cs, dir, name, 0, 1, false,
			  "lengths edited consistently");
	write_and_flip(cs, dir, name, data, len, -1);
	patch_sealed(path, 48, len - 1, 8);
	patch_sealed(path, 56, len - 1, 8);
	if (truncate(path, (off_t)(hs + len - 1)) < 0)
		diag("truncate failed");
	is_int(chunk_data_len(cs, name, &dlen), -EBADMSG,
	       "data_len of an edited header: -EBADMSG (authenticated)");
	write_and_flip(cs, dir, name, data, len, -1);
	patch_sealed(path, 48, 0, 8);
	patch_sealed(path, 56, 0, 8);
	patch_sealed(path, 64, 1, 4);
	if (truncate(path, 92 + 16) < 0)
		diag("truncate failed");
	expect_sealed_bad(cs, dir, name, 0, 10, false,
			  "made-up empty chunk (read past its end)");
	write_and_flip(cs, dir, name, data, len, -1);
	patch_sealed(path, 10, 3, 2);
	expect_sealed_bad(cs, dir, name, 0, 1, false, "zlib flag added");

	/* two blocks swapped: each is bound to its place */
	write_and_flip(cs, dir, name, data, len, -1);
	free(file);
	file = slurp(path, &flen);
	if (file) {
		int fd = open(path, O_RDWR);

		if (fd < 0 ||
		    pwrite(fd, file + hs, CB, (off_t)(hs + CB)) != CB ||
		    pwrite(fd, file + hs + CB, CB, (off_t)hs) != CB ||
		    pwrite(fd, file + 92, 16, 92 + 16) != 16 ||
		    pwrite(fd, file + 92 + 16, 16, 92) != 16)
			diag("swap failed");
		if (fd >= 0)
			close(fd);
	}
	expect_sealed_bad(cs, dir, name, 0, 1, false, "blocks swapped");

	/* a sealed file copied under another chunk's name */
	write_and_flip(cs, dir, name, data, len, -1);
	free(file);
	file = slurp(path, &flen);
	name_of("tamper/b", 0, other);
	chunk_path(dir, other, opath);
	if (!file || rename(path, opath) < 0)
		diag("rename failed");
	expect_sealed_bad(cs, dir, other, 0, 1, false, "renamed chunk");
	{
		int fd = open(opath, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		int j;

		/* again, with its identity edited to match (CRC fixed) */
		if (fd < 0 || !file ||
		    pwrite(fd, file, flen, 0) != (ssize_t)flen)
			diag("copy failed");
		if (fd >= 0)
			close(fd);
		for (j = 0; j < 32; j++)
			set_le(opath, 16 + j,
			       (uint64_t)(hexval(other[2 * j]) << 4 |
					  hexval(other[2 * j + 1])),
			       1);
		patch_sealed(opath, 12, 0, 4);
	}
	expect_sealed_bad(cs, dir, other, 0, 1, false,
			  "renamed chunk with its identity edited");

	/* a cut file */
	write_and_flip(cs, dir, name, data, len, -1);
	if (truncate(path, (off_t)(hs + len - 1)) < 0)
		diag("truncate failed");
	expect_sealed_bad(cs, dir, name, 0, 1, false, "sealed file cut");
	chunk_store_close(cs);
	free(file);
	free(data);
	free(buf);
}

static void test_sealed_keys(void)
{
	char dir[PATH_MAX], path[PATH_MAX], name[65];
	struct chunk_store *a, *b, *plain;
	unsigned char data[1000], buf[1000];
	uint64_t dlen = 0;

	sub_dir("sealed-keys", dir);
	a = open_keyed(dir, 0, &key_a);
	b = open_keyed(dir, 0, &key_b);
	plain = open_keyed(dir, 0, NULL);
	fill_text(data, sizeof(data));
	name_of("keys/x", 0, name);
	chunk_path(dir, name, path);

	chunk_write(a, name, data, sizeof(data), NULL);
	is_int(chunk_read(a, name, 0, buf, sizeof(buf)), sizeof(buf),
	       "key A reads its chunk");
	expect_sealed_bad(b, dir, name, 0, 10, true, "key B reads A's chunk");
	chunk_write(a, name, data, sizeof(data), NULL);
	expect_sealed_bad(plain, dir, name, 0, 10, true,
			  "a store without a key reads A's chunk");
	chunk_write(plain, name, data, sizeof(data), NULL);
	expect_sealed_bad(a, dir, name, 0, 10, true,
			  "key A reads a plaintext chunk");
	chunk_write(plain, name, data, sizeof(data), NULL);
	is_int(chunk_data_len(a, name, &dlen), -ENOKEY,
	       "data_len of a plaintext chunk under a key: -ENOKEY");
	ok(!exists(path), "and it is deleted");
	chunk_write(b, name, data, sizeof(data), NULL);
	is_int(chunk_data_len(b, name, &dlen), 0, "key B: data_len");
	is_int(dlen, sizeof(data), "key B: data_len value");
	chunk_store_close(a);
	chunk_store_close(b);
	chunk_store_close(plain);
}

static void test_sealed_rekey(void)
{
	char dir[PATH_MAX], raw[65], zname[65], path[PATH_MAX];
	struct chunk_store *a, *b, *plain;
	size_t len = 2 * CB + 7;
	unsigned char *data = malloc(len), *buf = malloc(len), hdr[12];
	int fd;

	sub_dir("sealed-rekey", dir);
	a = open_keyed(dir, 6, &key_a);
	b = open_keyed(dir, 0, &key_b);
	plain = open_keyed(dir, 0, NULL);
	fill_text(data, len);
	name_of("rekey/z", 0, zname);
	chunk_write(a, zname, data, len, NULL);
	is_int(chunk_rekey(b, zname, &key_a), 0, "rekey A -> B");
	is_int(chunk_read(b, zname, 0, buf, len), len, "B reads it");
	ok(memcmp(buf, data, len) == 0, "same data");
	chunk_path(dir, zname, path);
	fd = open(path, O_RDONLY);
	ok(fd >= 0 && pread(fd, hdr, 12, 0) == 12 && le(hdr + 10, 2) == 3,
	   "still compressed after rekey (flags 3)");
	if (fd >= 0)
		close(fd);
	is_int(chunk_rekey(b, zname, &key_a), 1, "rekey again: nothing to do");
	is_int(chunk_rekey(plain, zname, &key_b), 0, "rekey B -> plaintext");
	is_int(chunk_read(plain, zname, 0, buf, len), len,
	       "plaintext store reads it");
	ok(memcmp(buf, data, len) == 0, "same data in plaintext");
	is_int(chunk_rekey(a, zname, NULL), 0, "rekey plaintext -> A");
	is_int(chunk_read(a, zname, 1, buf, 100), 100, "A reads it");
	ok(memcmp(buf, data + 1, 100) == 0, "same bytes");
	is_int(chunk_rekey(b, zname, &key_b), -ENOKEY,
	       "rekey from a key it is not under: -ENOKEY");
	ok(!exists(path), "and it is dropped");
	fill_random(data, len, 5);
	name_of("rekey/raw", 0, raw);
	chunk_write(plain, raw, data, len, NULL);
	is_int(chunk_rekey(b, raw, NULL), 0, "raw plaintext -> B");
	is_int(chunk_read(b, raw, CB + 3, buf, 4), 4, "B reads a range");
	ok(memcmp(buf, data + CB + 3, 4) == 0, "same bytes");
	chunk_store_close(a);
	chunk_store_close(b);
	chunk_store_close(plain);
	free(data);
	free(buf);
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/*
 * Seconds per chunk_read of @n bytes at random offsets (or at 0): the best
 * of 5 batches of @rounds, since the machine is shared.
 */
static double time_reads(struct chunk_store *cs, const char *name, size_t chunk,
			 size_t n, int rounds, unsigned char *buf)
{
	uint64_t seed = 99;
	double best = 1e9;
	int i, batch;

	for (batch = 0; batch < 5; batch++) {
		double t0 = now_s(), t;

		for (i = 0; i < rounds; i++) {
			uint64_t off =
				n < chunk ? rnd_next(&seed) % (chunk - n) : 0;

			if (chunk_read(cs, name, off, buf, n) != (ssize_t)n) {
				diag("bench read failed");
				return 0;
			}
		}
		t = (now_s() - t0) / rounds;
		if (t < best)
			best = t;
	}
	return best;
}

/*
 * The cost of encryption on warm reads of a cached 4 MiB chunk (page
 * cache hot): a 4 KiB random read and the whole chunk.  Printed only.
 */
static void bench_sealed(void)
{
	size_t chunk = 4u << 20;
	unsigned char *data = malloc(chunk), *buf = malloc(chunk);
	char dir[PATH_MAX], name[65];
	struct chunk_store *plain, *sealed;
	double p4, s4, pw, sw;

	sub_dir("bench", dir);
	plain = open_keyed(dir, 0, NULL);
	sealed = open_keyed(dir, 0, &key_a);
	fill_random(data, chunk, 1);
	name_of("bench/plain", 0, name);
	chunk_write(plain, name, data, chunk, NULL);
	time_reads(plain, name, chunk, chunk, 2, buf);
	p4 = time_reads(plain, name, chunk, 4096, 400, buf);
	pw = time_reads(plain, name, chunk, chunk, 10, buf);
	name_of("bench/sealed", 0, name);
	chunk_write(sealed, name, data, chunk, NULL);
	time_reads(sealed, name, chunk, chunk, 2, buf);
	s4 = time_reads(sealed, name, chunk, 4096, 400, buf);
	sw = time_reads(sealed, name, chunk, chunk, 10, buf);
	diag("warm 4 KiB random read of a 4 MiB chunk: plaintext %.1f us, "
	     "sealed %.1f us (%.2fx)",
	     p4 * 1e6, s4 * 1e6, s4 / p4);
	diag("warm 4 MiB read of a 4 MiB chunk: plaintext %.2f ms "
	     "(%.0f MB/s), sealed %.2f ms (%.0f MB/s, %.2fx)",
	     pw * 1e3, chunk / pw / 1e6, sw * 1e3, chunk / sw / 1e6, sw / pw);
	ok(p4 > 0 && s4 > 0 && pw > 0 && sw > 0, "benchmark ran");
	chunk_store_close(plain);
	chunk_store_close(sealed);
	free(data);
	free(buf);
}

/* Open fds of this process whose target lies under @dir. */
static int fds_under(const char *dir)
{
	char link[PATH_MAX], target[PATH_MAX];
	struct dirent *de;
	DIR *d = opendir("/proc/self/fd");
	size_t n = strlen(dir);
	ssize_t len;
	int count = 0;

	if (!d)
		return -1;
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		xsnprintf(link, sizeof(link), "/proc/self/fd/%s", de->d_name);
		len = readlink(link, target, sizeof(target) - 1);
		if (len <= 0)
			continue;
		target[len] = '\0';
		if (strncmp(target, dir, n) == 0 && target[n] == '/')
			count++;
	}
	closedir(d);
	return count;
}

static struct chunk_store *open_fdc(const char *dir, int open_files)
{
	struct chunk_store_conf conf = { .dir = dir, .open_files = open_files };
	struct chunk_store *cs = NULL;

	if (chunk_store_open(&conf, &cs) < 0) {
		diag("cannot open store '%s'", dir);
		exit(1);
	}
	return cs;
}

static uint64_t opens_of(struct chunk_store *cs)
{
	struct chunk_stats st;

	chunk_get_stats(cs, &st);
	return st.opens;
}

/*
 * chunk_read_cached(): the open-file cache.  A repeated read opens nothing;
 * a name written again, removed or corrupted is never served from the old
 * file; in-place writes to an open file are caught; the cache is bounded.
 */
static void test_open_files(void)
{
	size_t len = 4 * CHUNK_BLOCK + 100, hs = 68 + 4 * 5 + 4;
	unsigned char *a = malloc(len), *b = malloc(len), *out = malloc(len);
	char dir[PATH_MAX], path[PATH_MAX], n1[65], n2[65], n3[65];
	struct chunk_store *cs;
	struct chunk_stats st;
	ssize_t r;
	int i;

	fill_random(a, len, 71);
	fill_random(b, len, 72);
	sub_dir("openfiles", dir);
	cs = open_fdc(dir, 2);
	name_of("of/1", 0, n1);
	name_of("of/2", 0, n2);
	name_of("of/3", 0, n3);
	ok(chunk_write(cs, n1, a, len, NULL) == 0 &&
		   chunk_write(cs, n2, b, len, NULL) == 0 &&
		   chunk_write(cs, n3, a, len, NULL) == 0,
	   "open files: three chunks written");

	/* a hit opens once, then reads through the open file */
	for (i = 0; i < 5; i++) {
		r = chunk_read_cached(cs, n1, (uint64_t)i * 1000, out, 4096);
		if (r != 4096 || memcmp(out, a + i * 1000, 4096) != 0)
			break;
	}
	ok(i == 5, "open files: five reads return the data");
	is_int((int)opens_of(cs), 1, "open files: five reads, one open");
	is_int(fds_under(dir), 1, "open files: the file stays open");
	r = chunk_read_cached(cs, n1, 0, out, len);
	ok(r == (ssize_t)len && memcmp(out, a, len) == 0,
	   "open files: whole chunk through the open file");
	r = chunk_read_cached(cs, n1, CHUNK_BLOCK - 10, out, 20);
	ok(r == 20 && memcmp(out, a + CHUNK_BLOCK - 10, 20) == 0,
	   "open files: across a block bound, checked blocks");

	/* bounded: the least recently used goes */
	ok(chunk_read_cached(cs, n2, 0, out, 10) == 10 &&
		   chunk_read_cached(cs, n3, 0, out, 10) == 10,
	   "open files: two more chunks read");
	is_int(fds_under(dir), 2, "open files: never more than open_files");
	ok(chunk_read_cached(cs, n1, 0, out, 10) == 10 && opens_of(cs) == 4,
	   "open files: the evicted one is opened again");

	/* written again: the new file is read, not the old one */
	ok(chunk_write(cs, n1, b, len, NULL) == 0, "open files: n1 rewritten");
	r = chunk_read_cached(cs, n1, 5, out, 100);
	ok(r == 100 && memcmp(out, b + 5, 100) == 0,
	   "open files: a rewritten chunk serves its new bytes");
	is_int((int)opens_of(cs), 5, "open files: ... from a new open");

	/* removed: not served, and its fd is closed (no space kept) */
	ok(chunk_remove(cs, n1) == 0, "open files: n1 removed");
	is_int((int)chunk_read_cached(cs, n1, 0, out, 10), -ENOENT,
	       "open files: a removed chunk is -ENOENT");
	is_int(fds_under(dir), 1, "open files: its fd was closed");

	/* written into while open: caught, checked again, dropped */
	chunk_path(dir, n2, path);
	ok(chunk_read_cached(cs, n2, 0, out, len) == (ssize_t)len,
	   "open files: n2 read whole (every block checked)");
	flip_byte(path, (off_t)(hs + 2 * CHUNK_BLOCK + 7));
	is_int((int)chunk_read_cached(cs, n2, 2 * CHUNK_BLOCK, out, 100),
	       -EBADMSG, "open files: a byte changed in place is caught");
	ok(!exists(path), "open files: ... and the file deleted");
	is_int(fds_under(dir), 1, "open files: ... and closed");
	chunk_get_stats(cs, &st);
	is_int((int)st.corrupt, 1, "open files: counted corrupt once");

	/* corrupt before the first read: caught like chunk_read() */
	ok(chunk_write(cs, n2, b, len, NULL) == 0, "open files: n2 again");
	flip_byte(path, (off_t)(hs + 3 * CHUNK_BLOCK + 1));
	ok(chunk_read_cached(cs, n2, 0, out, 100) == 100,
	   "open files: a good block of it reads");
	is_int((int)chunk_read_cached(cs, n2, 3 * CHUNK_BLOCK, out, 100),
	       -EBADMSG, "open files: its bad block does not");
	chunk_store_close(cs);
	is_int(fds_under(dir), 0, "open files: close closes them all");

	/* open_files < 0: no cache, every read opens */
	cs = open_fdc(dir, -1);
	for (i = 0; i < 3; i++)
		chunk_read_cached(cs, n3, 0, out, 10);
	is_int((int)opens_of(cs), 3,
	       "open files: off, three reads open thrice");
	is_int(fds_under(dir), 0, "open files: off, none kept");
	chunk_store_close(cs);
	free(a);
	free(b);
	free(out);
}

int main(void)
{
	const char *tmp = getenv("TMPDIR");

	log_init("test_chunk", LOG_LVL_WARN, false);
	xsnprintf(root, sizeof(root), "%s/test_chunk.XXXXXX",
		  tmp && *tmp ? tmp : "/tmp");
	if (!mkdtemp(root)) {
		perror("mkdtemp");
		return 1;
	}
	plan_lazy();
	{
		unsigned char ka[32], kb[32];

		memset(ka, 0xa1, sizeof(ka));
		memset(kb, 0xb2, sizeof(kb));
		crypt_key_from_bytes(ka, &key_a);
		crypt_key_from_bytes(kb, &key_b);
	}
	test_naming();
	test_math();
	test_format();
	test_roundtrip();
	test_corruption();
	test_open_files();
	test_scan();
	test_write_failures();
	test_concurrency();
	test_sealed_format();
	test_sealed_roundtrip();
	test_sealed_tamper();
	test_sealed_keys();
	test_sealed_rekey();
	bench_sealed();
	rm_rf(root);
	ok(!exists(root), "temporary folder removed");
	return done_testing();
}
