/*
 * test_sealfile.c - sealed (and plain) random-access files: names, the
 * on-disk layout, thousands of seeded random writes, truncates, reads and
 * reopens compared with a plain buffer, holes, tampering of every kind,
 * wrong keys and bindings, and seal_copy between keys.
 *
 * Everything happens under a mkdtemp() folder removed at the end.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zlib.h>

#include "s3cachefs/crypt.h"
#include "s3cachefs/log.h"
#include "s3cachefs/sealfile.h"
#include "tap.h"
#include "testfs.h"

#define R SEAL_RECORD
#define RD (SEAL_RECORD + 28)
#define HDR 64
#define MAX_SIZE (12 * R + 1234)

static char root[PATH_MAX];
static struct crypt_key key_a, key_b;

static uint64_t rnd(uint64_t *s)
{
	uint64_t x = *s;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	*s = x;
	return x;
}

static void path_of(const char *name, char out[PATH_MAX])
{
	xsnprintf(out, PATH_MAX, "%s/%s", root, name);
}

static off_t file_len(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 ? st.st_size : -1;
}

static unsigned char *slurp(const char *path, size_t *len)
{
	off_t n = file_len(path);
	unsigned char *p = n >= 0 ? malloc((size_t)n + 1) : NULL;
	int fd = open(path, O_RDONLY);

	if (!p || fd < 0 || pread(fd, p, (size_t)n, 0) != n) {
		free(p);
		p = NULL;
	}
	if (fd >= 0)
		close(fd);
	*len = p ? (size_t)n : 0;
	return p;
}

static void poke(const char *path, off_t off, const void *b, size_t n)
{
	int fd = open(path, O_RDWR);

	if (fd < 0 || pwrite(fd, b, n, off) != (ssize_t)n)
		diag("cannot patch '%s'", path);
	if (fd >= 0)
		close(fd);
}

static void flip(const char *path, off_t off)
{
	unsigned char c = 0;
	int fd = open(path, O_RDWR);

	if (fd < 0 || pread(fd, &c, 1, off) != 1)
		diag("cannot read '%s'", path);
	c ^= 0x40;
	if (fd < 0 || pwrite(fd, &c, 1, off) != 1)
		diag("cannot write '%s'", path);
	if (fd >= 0)
		close(fd);
}

static void test_names(void)
{
	char n[32];
	int64_t id = 0;
	bool sealed = false;

	seal_name(42, false, n, sizeof(n));
	is_str(n, "42", "plain name");
	seal_name(42, true, n, sizeof(n));
	is_str(n, "42.sealed", "sealed name");
	ok(seal_name_parse("42.sealed", &id, &sealed) && id == 42 && sealed,
	   "parse a sealed name");
	ok(seal_name_parse("7", &id, &sealed) && id == 7 && !sealed,
	   "parse a plain name");
	ok(!seal_name_parse("0", &id, &sealed) &&
		   !seal_name_parse("42.sealed.tmp", &id, &sealed) &&
		   !seal_name_parse("42.tmp", &id, &sealed) &&
		   !seal_name_parse("x1", &id, &sealed) &&
		   !seal_name_parse("", &id, &sealed) &&
		   !seal_name_parse("99999999999999999999", &id, &sealed),
	   "other names are not ours");
}

static void test_layout(void)
{
	char path[PATH_MAX];
	struct seal_file *sf = NULL;
	unsigned char *data = malloc(2 * R), *file = NULL;
	size_t flen = 0;
	struct seal_info info;

	memset(data, 'Q', 2 * R);
	path_of("layout", path);
	is_int(seal_create(path, &key_a, 5, &sf), 0, "create sealed");
	is_int(file_len(path), HDR, "an empty sealed file is its header");
	is_int(seal_pwrite(sf, data, R + 100, 0), 0, "write 64 KiB + 100");
	is_int(seal_size(sf), R + 100, "size");
	is_int(file_len(path), HDR + RD + 100 + 28,
	       "length: header, one full record, one short");
	seal_close(sf);
	file = slurp(path, &flen);
	ok(file && !memmem(file, flen, data, 32),
	   "no run of plaintext in the file");
	ok(file && memcmp(file, "S3CSTAGE", 8) == 0, "magic");
	ok(file && memcmp(file + 16, key_a.id, 8) == 0, "key id at 16");
	is_int(seal_probe(path, &info), 0, "probe");
	is_str(info.key_id, key_a.id_hex, "probe: key id");
	is_int(info.binding, 5, "probe: binding");
	is_int(info.size, R + 100, "probe: size");
	ok(!info.ephemeral, "probe: not ephemeral");
	free(file);

	{
		struct crypt_key e;

		crypt_key_generate(&e);
		path_of("eph", path);
		seal_create(path, &e, 1, &sf);
		seal_close(sf);
		ok(seal_probe(path, &info) == 0 && info.ephemeral,
		   "an ephemeral key is marked");
		crypt_key_release(&e);
	}
	path_of("plainfile", path);
	is_int(seal_create(path, NULL, 5, &sf), 0, "create plain");
	seal_pwrite(sf, data, 1000, 10);
	ok(seal_plain_fd(sf) >= 0 && !seal_is_sealed(sf),
	   "plain: a descriptor, not sealed");
	seal_close(sf);
	is_int(file_len(path), 1010, "plain: the file is the data");
	is_int(seal_probe(path, &info), -EBADMSG,
	       "plain: probe says not "
	       "sealed");
	free(data);
}

/*
 * Thousands of seeded random operations on @sf against a model buffer;
 * reopens now and then.  1 when every read matched.
 */
static int random_ops(const char *path, const struct crypt_key *k,
		      uint64_t seed, int n_ops)
{
	unsigned char *model = calloc(1, MAX_SIZE + 3 * R);
	unsigned char *buf = malloc(MAX_SIZE + 3 * R);
	unsigned char *got = malloc(MAX_SIZE + 3 * R);
	struct seal_file *sf = NULL;
	uint64_t size = 0, s = seed;
	int i, good = 1;

	if (seal_create(path, k, 9, &sf) < 0)
		return 0;
	for (i = 0; i < n_ops && good; i++) {
		uint64_t op = rnd(&s) % 100, off, len;

		if (op < 45) { /* write */
			uint64_t kind = rnd(&s) % 4;

			len = kind == 0	  ? 1 + rnd(&s) % 300
			      : kind == 1 ? 1 + rnd(&s) % (R + 500)
			      : kind == 2 ? R * (1 + rnd(&s) % 3)
					  : 1 + rnd(&s) % (3 * R);
			off = rnd(&s) % 3 == 0 ? rnd(&s) % 4 * R
					       : rnd(&s) % (size + 2 * R + 1);
			if (off + len > MAX_SIZE)
				continue;
			for (uint64_t j = 0; j < len; j++)
				buf[j] = (unsigned char)rnd(&s);
			if (seal_pwrite(sf, buf, (size_t)len, off) != 0) {
				diag("op %d: write failed", i);
				good = 0;
				break;
			}
			memcpy(model + off, buf, (size_t)len);
			if (off + len > size)
				size = off + len;
		} else if (op < 60) { /* truncate */
			uint64_t n = rnd(&s) % 3 == 0
					     ? rnd(&s) % 5 * R
					     : rnd(&s) % (MAX_SIZE + 1);

			if (seal_truncate(sf, n) != 0) {
				diag("op %d: truncate failed", i);
				good = 0;
				break;
			}
			if (n < size)
				memset(model + n, 0, (size_t)(size - n));
			size = n;
		} else if (op < 95) { /* read */
			ssize_t want, r;

			off = rnd(&s) % (size + R + 1);
			len = rnd(&s) % 2 ? rnd(&s) % 5000 : rnd(&s) % (4 * R);
			want = off >= size
				       ? 0
				       : (ssize_t)(size - off < len ? size - off
								    : len);
			r = seal_pread(sf, got, (size_t)len, off);
			if (r != want ||
			    (want && memcmp(got, model + off, (size_t)want))) {
				diag("op %d: read [%llu,+%llu) of %llu: %zd", i,
				     (unsigned long long)off,
				     (unsigned long long)len,
				     (unsigned long long)size, r);
				good = 0;
			}
		} else { /* reopen */
			seal_close(sf);
			sf = NULL;
			if (seal_open(path, k, 9, &sf) != 0) {
				diag("op %d: reopen failed", i);
				good = 0;
				break;
			}
		}
		if (seal_size(sf) != size) {
			diag("op %d: size %llu, want %llu", i,
			     (unsigned long long)seal_size(sf),
			     (unsigned long long)size);
			good = 0;
		}
	}
	if (good && sf) {
		seal_close(sf);
		sf = NULL;
		good = seal_open(path, k, 9, &sf) == 0 &&
		       seal_size(sf) == size &&
		       seal_pread(sf, got, MAX_SIZE, 0) == (ssize_t)size &&
		       memcmp(got, model, (size_t)size) == 0;
		if (!good)
			diag("final whole read differs");
	}
	seal_close(sf);
	free(model);
	free(buf);
	free(got);
	return good;
}

static void test_random(void)
{
	char path[PATH_MAX];
	uint64_t seed;

	path_of("random-plain", path);
	ok(random_ops(path, NULL, 11, 1500), "plain: 1500 random ops");
	for (seed = 1; seed <= 3; seed++) {
		path_of("random-sealed", path);
		ok(random_ops(path, &key_a, seed * 7919, 1500),
		   "sealed, seed %llu: 1500 random ops match the model",
		   (unsigned long long)seed);
	}
}

static void test_holes(void)
{
	char path[PATH_MAX];
	struct seal_file *sf = NULL;
	unsigned char buf[100], zero[100] = { 0 };
	struct stat st;

	path_of("holes", path);
	seal_create(path, &key_a, 3, &sf);
	is_int(seal_truncate(sf, 100ull * R + 5), 0, "grow to 6.25 MiB");
	ok(stat(path, &st) == 0 && st.st_blocks * 512 < 64 * 1024,
	   "growing writes nothing: %lld bytes on disk",
	   (long long)st.st_blocks * 512);
	is_int(seal_pread(sf, buf, 100, 50ull * R), 100, "read a hole");
	ok(memcmp(buf, zero, 100) == 0, "a hole reads as zeros");
	is_int(seal_pwrite(sf, "abc", 3, 200ull * R), 0,
	       "write far past "
	       "the end");
	is_int(seal_size(sf), 200ull * R + 3, "size");
	is_int(seal_pread(sf, buf, 10, 100ull * R), 10,
	       "the old short last record grew");
	ok(memcmp(buf, zero, 10) == 0, "and reads as zeros");
	seal_close(sf);
	sf = NULL;
	is_int(seal_open(path, &key_a, 3, &sf), 0, "reopen");
	is_int(seal_pread(sf, buf, 3, 200ull * R), 3, "read back");
	ok(memcmp(buf, "abc", 3) == 0, "bytes");
	seal_close(sf);
}

static void test_tamper(void)
{
	char path[PATH_MAX], other[PATH_MAX];
	struct seal_file *sf = NULL;
	unsigned char *data = malloc(3 * R), *buf = malloc(3 * R);
	unsigned char zeros[RD];
	size_t i;
	int fails = 0;

	memset(zeros, 0, sizeof(zeros));
	for (i = 0; i < 3 * R; i++)
		data[i] = (unsigned char)(i * 7 + 1);
	path_of("tamper", path);
	seal_create(path, &key_a, 4, &sf);
	seal_pwrite(sf, data, 3 * R, 0);
	seal_close(sf);
	sf = NULL;

	is_int(seal_open(path, &key_b, 4, &sf), -EKEYREJECTED,
	       "another key: -EKEYREJECTED");
	is_int(seal_open(path, &key_a, 5, &sf), -EBADMSG,
	       "another binding: -EBADMSG");
	is_int(seal_open(path, NULL, 4, &sf), 0,
	       "without a key it is just a file");
	seal_close(sf);
	sf = NULL;

	/* every byte of the middle record's nonce, some of its data, tag */
	for (i = 0; i < RD; i += (i < 40 || i > RD - 40) ? 1 : 997) {
		off_t off = HDR + RD + (off_t)i;
		ssize_t r;

		flip(path, off);
		if (seal_open(path, &key_a, 4, &sf) != 0) {
			fails++;
			continue;
		}
		r = seal_pread(sf, buf, 10, R + 5);
		if (r != -EBADMSG)
			fails++;
		if (seal_pread(sf, buf, R, 0) != R || memcmp(buf, data, R) != 0)
			fails++; /* the other records still read */
		seal_close(sf);
		sf = NULL;
		/* restore: rewrite the file */
		seal_create(path, &key_a, 4, &sf);
		seal_pwrite(sf, data, 3 * R, 0);
		seal_close(sf);
		sf = NULL;
	}
	is_int(fails, 0, "a changed byte of a record fails only that record");
	fails = 0;

	/* header bytes */
	for (i = 0; i < HDR; i++) {
		unsigned char h = 0;
		int fd = open(path, O_RDWR);

		if (fd < 0 || pread(fd, &h, 1, (off_t)i) != 1)
			fails++;
		h ^= 0x20;
		if (fd >= 0 && pwrite(fd, &h, 1, (off_t)i) != 1)
			fails++;
		if (seal_open(path, &key_a, 4, &sf) == 0) {
			fails++;
			seal_close(sf);
			sf = NULL;
		}
		h ^= 0x20;
		if (fd >= 0 && pwrite(fd, &h, 1, (off_t)i) != 1)
			fails++;
		if (fd >= 0)
			close(fd);
	}
	is_int(fails, 0, "a changed header byte: the file does not open");

	/* records swapped */
	{
		size_t flen;
		unsigned char *f = slurp(path, &flen);

		if (f) {
			poke(path, HDR, f + HDR + RD, RD);
			poke(path, HDR + RD, f + HDR, RD);
		}
		seal_open(path, &key_a, 4, &sf);
		is_int(seal_pread(sf, buf, 10, 0), -EBADMSG,
		       "swapped records fail");
		seal_close(sf);
		sf = NULL;
		if (f)
			poke(path, HDR, f + HDR, 2 * RD);
		free(f);
	}

	/* a cut file */
	if (truncate(path, HDR + 2 * RD + 10) < 0)
		diag("truncate failed");
	is_int(seal_open(path, &key_a, 4, &sf), -EBADMSG,
	       "cut inside a record's overhead: -EBADMSG");
	if (truncate(path, HDR + 2 * RD + 100) < 0)
		diag("truncate failed");
	is_int(seal_open(path, &key_a, 4, &sf), 0,
	       "cut inside a record's data: opens");
	is_int(seal_pread(sf, buf, 10, 2 * R), -EBADMSG,
	       "but its last record fails");
	is_int(seal_pread(sf, buf, 10, R), 10, "the others read");
	seal_close(sf);
	sf = NULL;

	/* a zeroed record is a hole: the documented limit */
	seal_create(path, &key_a, 4, &sf);
	seal_pwrite(sf, data, 3 * R, 0);
	seal_close(sf);
	sf = NULL;
	poke(path, HDR + RD, zeros, RD);
	seal_open(path, &key_a, 4, &sf);
	ok(seal_pread(sf, buf, R, R) == R && memcmp(buf, zeros, R) == 0,
	   "a record zeroed on disk reads as a hole (documented)");
	seal_close(sf);
	sf = NULL;

	/* a copy under another row's name */
	path_of("tamper-copy", other);
	seal_create(path, &key_a, 4, &sf);
	seal_pwrite(sf, data, 3 * R, 0);
	seal_close(sf);
	sf = NULL;
	if (rename(path, other) < 0)
		diag("rename failed");
	is_int(seal_open(other, &key_a, 8, &sf), -EBADMSG,
	       "opened as row 8: -EBADMSG");
	{
		unsigned char h[64];
		int fd = open(other, O_RDWR);
		uint32_t crc;

		/* rewrite the binding with a valid CRC: the records fail */
		if (fd < 0 || pread(fd, h, 64, 0) != 64)
			diag("cannot read header");
		h[24] = 8;
		crc = (uint32_t)crc32(0, h, 60);
		h[60] = (unsigned char)crc;
		h[61] = (unsigned char)(crc >> 8);
		h[62] = (unsigned char)(crc >> 16);
		h[63] = (unsigned char)(crc >> 24);
		if (fd >= 0 && pwrite(fd, h, 64, 0) != 64)
			diag("cannot write header");
		if (fd >= 0)
			close(fd);
	}
	is_int(seal_open(other, &key_a, 8, &sf), 0,
	       "with its binding edited it opens as row 8");
	is_int(seal_pread(sf, buf, 10, 0), -EBADMSG,
	       "but no record authenticates");
	seal_close(sf);
	free(data);
	free(buf);
}

static void test_copy(void)
{
	char a[PATH_MAX], b[PATH_MAX], c[PATH_MAX];
	struct seal_file *sf = NULL, *sb = NULL, *sc = NULL;
	unsigned char *data = malloc(4 * R), *buf = malloc(40 * R);
	struct stat st;
	size_t i;

	for (i = 0; i < 4 * R; i++)
		data[i] = (unsigned char)(i % 251 + 1);
	path_of("copy-a", a);
	path_of("copy-b", b);
	path_of("copy-c", c);
	seal_create(a, NULL, 6, &sf);
	seal_pwrite(sf, data, 4 * R, 0);
	seal_truncate(sf, 30 * R + 77); /* a long hole */
	is_int(seal_copy(sf, b, &key_a, 6), 0, "copy plain -> sealed");
	seal_close(sf);
	sf = NULL;
	is_int(seal_open(b, &key_a, 6, &sb), 0, "open the copy");
	is_int(seal_size(sb), 30 * R + 77, "same size");
	ok(seal_pread(sb, buf, 40 * R, 0) == 30 * R + 77 &&
		   memcmp(buf, data, 4 * R) == 0 && buf[30 * R + 76] == 0 &&
		   buf[10 * R] == 0,
	   "same bytes, zeros where the hole was");
	ok(stat(b, &st) == 0 && st.st_blocks * 512 < 8 * R,
	   "the hole stayed a hole (%lld bytes on disk)",
	   (long long)st.st_blocks * 512);
	is_int(seal_copy(sb, c, &key_b, 6), 0, "copy A -> B");
	is_int(seal_copy(sb, b, &key_b, 6), 0, "copy over itself, A -> B");
	seal_close(sb);
	sb = NULL;
	is_int(seal_open(b, &key_b, 6, &sb), 0, "now under B");
	is_int(seal_copy(sb, c, NULL, 6), 0, "copy B -> plain");
	is_int(seal_open(c, NULL, 6, &sc), 0, "open plain");
	ok(seal_pread(sc, buf, 40 * R, 0) == 30 * R + 77 &&
		   memcmp(buf, data, 4 * R) == 0,
	   "round trip to plaintext");
	ok(access(b, F_OK) == 0, "source kept");
	{
		char tmp[PATH_MAX + 8];

		xsnprintf(tmp, sizeof(tmp), "%s.tmp", c);
		ok(access(tmp, F_OK) != 0, "no temporary left");
	}
	seal_close(sb);
	seal_close(sc);
	free(data);
	free(buf);
}

struct conc {
	struct seal_file *sf;
	int id, errors;
};

/* Thread 0 rewrites parts of records; the others read across them. */
static void *conc_main(void *arg)
{
	struct conc *c = arg;
	unsigned char buf[3 * R];
	uint64_t s = 1000 + (uint64_t)c->id;
	int i;

	for (i = 0; i < 400; i++) {
		uint64_t off = rnd(&s) % (3 * R), n = 1 + rnd(&s) % (R / 2);

		if (off + n > 3 * R)
			n = 3 * R - off;
		if (c->id == 0) {
			memset(buf, (int)(i & 0xff), (size_t)n);
			if (seal_pwrite(c->sf, buf, (size_t)n, off) != 0)
				c->errors++;
		} else if (seal_pread(c->sf, buf, (size_t)n, off) !=
			   (ssize_t)n) {
			c->errors++;
		}
	}
	return NULL;
}

static void test_concurrency(void)
{
	struct conc c[4];
	pthread_t t[4];
	char path[PATH_MAX];
	struct seal_file *sf = NULL;
	unsigned char *data = calloc(1, 3 * R);
	int i, errors = 0;

	path_of("conc", path);
	seal_create(path, &key_a, 1, &sf);
	seal_pwrite(sf, data, 3 * R, 0);
	for (i = 0; i < 4; i++) {
		c[i] = (struct conc){ .sf = sf, .id = i };
		pthread_create(&t[i], NULL, conc_main, &c[i]);
	}
	for (i = 0; i < 4; i++) {
		pthread_join(t[i], NULL);
		errors += c[i].errors;
	}
	is_int(errors, 0,
	       "reads during partial rewrites never see half a "
	       "record");
	seal_close(sf);
	free(data);
}

int main(void)
{
	const char *tmp = getenv("TMPDIR");
	unsigned char raw[32];

	log_init("test_sealfile", LOG_LVL_ERROR, false);
	xsnprintf(root, sizeof(root), "%s/test_sealfile.XXXXXX",
		  tmp && *tmp ? tmp : "/tmp");
	if (!mkdtemp(root)) {
		perror("mkdtemp");
		return 1;
	}
	memset(raw, 0x11, 32);
	crypt_key_from_bytes(raw, &key_a);
	memset(raw, 0x22, 32);
	crypt_key_from_bytes(raw, &key_b);
	plan_lazy();
	test_names();
	test_layout();
	test_random();
	test_holes();
	test_tamper();
	test_copy();
	test_concurrency();
	rm_rf(root);
	return done_testing();
}
