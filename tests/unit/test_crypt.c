/*
 * test_crypt.c - keys (files, the environment, ids, generation), AES-256-GCM
 * seal/open (round trips, associated data, every tampered byte, wrong key
 * or nonce), and key rotation of a whole cache folder (crypt_rekey_cache).
 *
 * Everything happens under a mkdtemp() folder removed at the end.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "s3cachefs/buf.h"
#include "s3cachefs/chunk.h"
#include "s3cachefs/crypt.h"
#include "s3cachefs/log.h"
#include "s3cachefs/sealfile.h"
#include "tap.h"
#include "testfs.h"

static char root[PATH_MAX];

static const char hex_a[] =
	"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

/* Write @len bytes to @root/@name with @mode; the path into @path. */
static void make_file(const char *name, const void *data, size_t len,
		      mode_t mode, char path[PATH_MAX])
{
	int fd;

	xsnprintf(path, PATH_MAX, "%s/%s", root, name);
	unlink(path);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (fd < 0 || write(fd, data, len) != (ssize_t)len)
		diag("cannot write '%s'", path);
	if (fd >= 0)
		close(fd);
	chmod(path, mode);
}

static bool one_line(const struct buf *b)
{
	return b->len > 0 && !strchr(buf_str(b), '\n');
}

static void test_ids(void)
{
	unsigned char raw[32], raw2[32];
	struct crypt_key a, a2, b, g1, g2;
	int i;

	for (i = 0; i < 32; i++) {
		raw[i] = (unsigned char)i;
		raw2[i] = (unsigned char)i;
	}
	raw2[31] ^= 1;
	crypt_key_from_bytes(raw, &a);
	crypt_key_from_bytes(raw, &a2);
	crypt_key_from_bytes(raw2, &b);
	is_int(strlen(a.id_hex), 16, "key id: 16 hex digits");
	is_str(a.id_hex, a2.id_hex, "key id is a function of the key");
	ok(strcmp(a.id_hex, b.id_hex) != 0, "keys differing in a bit: ids "
					    "differ");
	ok(crypt_key_same(&a, &a2) && !crypt_key_same(&a, &b),
	   "crypt_key_same by id");
	ok(crypt_key_same(NULL, NULL) && !crypt_key_same(&a, NULL),
	   "crypt_key_same with NULL");
	ok(!strstr(hex_a, a.id_hex), "the id is not a piece of the key");
	ok(!a.ephemeral, "a loaded key is not ephemeral");
	is_int(crypt_key_generate(&g1), 0, "generate a key");
	is_int(crypt_key_generate(&g2), 0, "generate another");
	ok(memcmp(g1.key, g2.key, 32) != 0 && strcmp(g1.id_hex, g2.id_hex),
	   "generated keys and ids differ");
	ok(g1.ephemeral, "a generated key is ephemeral");
	crypt_key_release(&g1);
	ok(g1.id_hex[0] == '\0' && memcmp(g1.key, (char[32]){ 0 }, 32) == 0,
	   "release wipes the key");
	crypt_key_release(NULL);
}

static void test_key_files(void)
{
	struct buf err = BUF_INIT(4096);
	struct crypt_key k, ref;
	unsigned char raw[32];
	char path[PATH_MAX], text[80];
	int i, rc;

	for (i = 0; i < 32; i++)
		raw[i] = (unsigned char)i;
	crypt_key_from_bytes(raw, &ref);

	make_file("raw", raw, 32, 0600, path);
	is_int(crypt_key_from_file(path, &k, &err), 0, "32 raw bytes");
	ok(memcmp(k.key, raw, 32) == 0, "raw key bytes");
	is_str(k.id_hex, ref.id_hex, "raw key id");

	xsnprintf(text, sizeof(text), "%s\n", hex_a);
	make_file("hexnl", text, strlen(text), 0600, path);
	is_int(crypt_key_from_file(path, &k, &err), 0, "64 hex + newline");
	ok(memcmp(k.key, raw, 32) == 0, "hex key bytes");
	make_file("hex", hex_a, 64, 0400, path);
	is_int(crypt_key_from_file(path, &k, &err), 0, "64 hex, mode 0400");
	for (i = 0; i < 64; i++)
		text[i] = (char)(hex_a[i] >= 'a' ? hex_a[i] - 32 : hex_a[i]);
	text[64] = '\r';
	text[65] = '\n';
	make_file("hexup", text, 66, 0600, path);
	is_int(crypt_key_from_file(path, &k, &err), 0,
	       "upper-case hex with CRLF");
	is_str(k.id_hex, ref.id_hex, "same key");

	static const struct {
		const char *name;
		size_t len;
		const char *want;
	} bad[] = {
		{ "len0", 0, "0 bytes" },    { "len31", 31, "31 bytes" },
		{ "len33", 33, "33 bytes" }, { "len63", 63, "63 bytes" },
		{ "len65", 65, "65 bytes" }, { "len200", 200, "too long" },
	};
	for (i = 0; i < (int)(sizeof(bad) / sizeof(*bad)); i++) {
		char data[200];

		memset(data, 'a', sizeof(data));
		make_file(bad[i].name, data, bad[i].len, 0600, path);
		buf_reset(&err);
		rc = crypt_key_from_file(path, &k, &err);
		is_int(rc, -EINVAL, "%s: -EINVAL", bad[i].name);
		ok(one_line(&err) && strstr(buf_str(&err), bad[i].want) &&
			   strstr(buf_str(&err), path),
		   "%s: one line naming the file: %s", bad[i].name,
		   buf_str(&err));
	}
	memcpy(text, hex_a, 64);
	text[10] = 'g';
	make_file("nothex", text, 64, 0600, path);
	buf_reset(&err);
	is_int(crypt_key_from_file(path, &k, &err), -EINVAL, "non-hex digit");
	ok(one_line(&err) && strstr(buf_str(&err), "hex") &&
		   !strstr(buf_str(&err), "0203040506"),
	   "non-hex: says so, never quotes the key: %s", buf_str(&err));

	make_file("open", hex_a, 64, 0644, path);
	buf_reset(&err);
	is_int(crypt_key_from_file(path, &k, &err), -EACCES,
	       "mode 0644 refused");
	ok(one_line(&err) && strstr(buf_str(&err), "others") &&
		   strstr(buf_str(&err), "0644") &&
		   strstr(buf_str(&err), "chmod 600"),
	   "mode 0644: %s", buf_str(&err));
	chmod(path, 0640);
	buf_reset(&err);
	is_int(crypt_key_from_file(path, &k, &err), -EACCES,
	       "mode 0640 refused");
	ok(strstr(buf_str(&err), "its group") != NULL, "0640: %s",
	   buf_str(&err));
	chmod(path, 0602);
	buf_reset(&err);
	is_int(crypt_key_from_file(path, &k, &err), -EACCES,
	       "mode 0602 refused");

	xsnprintf(path, sizeof(path), "%s/none", root);
	buf_reset(&err);
	is_int(crypt_key_from_file(path, &k, &err), -ENOENT, "missing file");
	ok(one_line(&err) && strstr(buf_str(&err), path), "missing: %s",
	   buf_str(&err));
	xsnprintf(path, sizeof(path), "%s/adir", root);
	mkdir(path, 0700);
	buf_reset(&err);
	is_int(crypt_key_from_file(path, &k, &err), -EINVAL, "a directory");
	ok(strstr(buf_str(&err), "not a regular file") != NULL, "directory: %s",
	   buf_str(&err));
	buf_release(&err);
}

static void test_env(void)
{
	struct buf err = BUF_INIT(4096);
	struct crypt_key k;
	char v[80];

	is_int(crypt_key_from_hex(hex_a, &k, &err), 0, "env: 64 hex digits");
	is_int(k.key[31], 0x1f, "env: last byte");
	xsnprintf(v, sizeof(v), "%.62s", hex_a);
	buf_reset(&err);
	is_int(crypt_key_from_hex(v, &k, &err), -EINVAL, "env: 62 digits");
	ok(one_line(&err) && strstr(buf_str(&err), CRYPT_KEY_ENV) &&
		   strstr(buf_str(&err), "62") && !strstr(buf_str(&err), v),
	   "env: names the variable, not the value: %s", buf_str(&err));
	xsnprintf(v, sizeof(v), "%s\n", hex_a);
	buf_reset(&err);
	is_int(crypt_key_from_hex(v, &k, &err), -EINVAL, "env: with newline");
	xsnprintf(v, sizeof(v), "%.63sx", hex_a);
	buf_reset(&err);
	is_int(crypt_key_from_hex(v, &k, &err), -EINVAL, "env: non-hex");
	ok(strstr(buf_str(&err), "non-hex") != NULL, "env: %s", buf_str(&err));
	buf_reset(&err);
	is_int(crypt_key_from_hex("", &k, &err), -EINVAL, "env: empty");
	buf_release(&err);
}

static void test_aead(void)
{
	static const size_t lens[] = { 0, 1, 15, 16, 17, 1000, 65536 };
	unsigned char raw[32], nonce[12], nonce2[12], tag[16], tag2[16];
	unsigned char *pt = malloc(65536), *ct = malloc(65536),
		      *out = malloc(65537);
	const char aad[] = "chunk 1234 block 7";
	struct crypt_key k, k2;
	size_t i, j;
	int good, fails;

	memset(raw, 7, sizeof(raw));
	crypt_key_from_bytes(raw, &k);
	raw[0] ^= 1;
	crypt_key_from_bytes(raw, &k2);
	for (i = 0; i < 65536; i++)
		pt[i] = (unsigned char)(i * 31 + 7);
	memset(nonce, 0x33, sizeof(nonce));
	good = 1;
	for (i = 0; i < sizeof(lens) / sizeof(*lens); i++) {
		size_t n = lens[i];

		good &= crypt_seal(&k, nonce, aad, sizeof(aad), pt, n, ct,
				   tag) == 0;
		good &= n < 16 || memcmp(ct, pt, n) != 0;
		memset(out, 0, n + 1);
		good &= crypt_open(&k, nonce, aad, sizeof(aad), ct, n, out,
				   tag) == 0;
		good &= memcmp(out, pt, n) == 0;
		good &= crypt_open(&k, nonce, NULL, 0, ct, n, out, tag) ==
			-EBADMSG;
	}
	ok(good, "seal/open round trips, 0 to 64 KiB; AAD required");
	memcpy(out, pt, 1000);
	ok(crypt_seal(&k, nonce, aad, sizeof(aad), out, 1000, out, tag2) == 0 &&
		   crypt_open(&k, nonce, aad, sizeof(aad), out, 1000, out,
			      tag2) == 0 &&
		   memcmp(out, pt, 1000) == 0,
	   "seal and open in place");

	crypt_seal(&k, nonce, aad, sizeof(aad), pt, 100, ct, tag);
	is_int(crypt_open(&k2, nonce, aad, sizeof(aad), ct, 100, out, tag),
	       -EBADMSG, "wrong key: -EBADMSG");
	memcpy(nonce2, nonce, 12);
	nonce2[11] ^= 1;
	is_int(crypt_open(&k, nonce2, aad, sizeof(aad), ct, 100, out, tag),
	       -EBADMSG, "wrong nonce: -EBADMSG");
	memset(out, 0x55, 100);
	crypt_open(&k, nonce, aad, sizeof(aad) - 1, ct, 100, out, tag);
	for (j = 0, good = 1; j < 100; j++)
		good &= out[j] == 0;
	ok(good, "a failed open leaves zeros, not plaintext");

	fails = 0;
	for (j = 0; j < 100; j++) {
		ct[j] ^= 0x80;
		fails += crypt_open(&k, nonce, aad, sizeof(aad), ct, 100, out,
				    tag) != -EBADMSG;
		ct[j] ^= 0x80;
	}
	for (j = 0; j < 16; j++) {
		tag[j] ^= 1;
		fails += crypt_open(&k, nonce, aad, sizeof(aad), ct, 100, out,
				    tag) != -EBADMSG;
		tag[j] ^= 1;
	}
	for (j = 0; j < sizeof(aad); j++) {
		char a2[sizeof(aad)];

		memcpy(a2, aad, sizeof(aad));
		a2[j] ^= 4;
		fails += crypt_open(&k, nonce, a2, sizeof(a2), ct, 100, out,
				    tag) != -EBADMSG;
	}
	is_int(fails, 0, "any changed byte of ciphertext, tag or AAD fails");
	is_int(crypt_open(&k, nonce, aad, sizeof(aad), ct, 99, out, tag),
	       -EBADMSG, "a cut ciphertext fails");
	is_int(crypt_open(&k, nonce, aad, sizeof(aad), ct, 100, out, tag), 0,
	       "and the untouched one still opens");

	{
		unsigned char b[12], o[12];

		memset(b, 0, sizeof(b));
		b[11] = 0xff;
		b[10] = 0xff;
		crypt_nonce_add(b, 1, o);
		ok(o[11] == 0 && o[10] == 0 && o[9] == 1, "nonce + 1 carries");
		memset(b, 0xff, sizeof(b));
		crypt_nonce_add(b, 2, o);
		ok(o[11] == 1 && o[0] == 0, "nonce wraps mod 2^96");
		memset(b, 0, sizeof(b));
		crypt_nonce_add(b, 0x0102030405060708ull, o);
		ok(o[4] == 1 && o[11] == 8 && o[3] == 0, "a 64-bit add");
	}
	{
		unsigned char r1[32], r2[32];

		ok(crypt_random(r1, 32) == 0 && crypt_random(r2, 32) == 0 &&
			   memcmp(r1, r2, 32) != 0,
		   "random bytes");
	}
	free(pt);
	free(ct);
	free(out);
}

/* ---- rotation of a cache folder ---- */

static void fill(unsigned char *p, size_t n, unsigned seed)
{
	size_t i;

	for (i = 0; i < n; i++)
		p[i] = (unsigned char)((i * 2654435761u + seed) >> 13);
}

static void chunk_name_of(int i, char out[65])
{
	char key[32];
	struct chunk_id id = {
		.endpoint = "", .bucket = "b", .etag = "\"e\"", .index = 0
	};

	xsnprintf(key, sizeof(key), "k%d", i);
	id.key = key;
	chunk_name(&id, out);
}

#define N_CHUNKS 12
#define STAGED 100000 /* bytes of each staging file */

/* A cache folder @dir with chunks and two staging files under @k. */
static void make_cache(const char *dir, const struct crypt_key *k)
{
	char chunks[PATH_MAX], staging[PATH_MAX], path[PATH_MAX], name[65];
	struct chunk_store_conf csc = { .key = k };
	struct chunk_store *cs = NULL;
	unsigned char *data = malloc(200000);
	int i;

	xsnprintf(chunks, sizeof(chunks), "%s/chunks", dir);
	xsnprintf(staging, sizeof(staging), "%s/staging", dir);
	mkdir(dir, 0700);
	mkdir(staging, 0700);
	for (i = 0; i < N_CHUNKS; i++) {
		csc.dir = chunks;
		csc.compress_level = i % 2 ? 6 : 0;
		if (chunk_store_open(&csc, &cs) < 0)
			break;
		fill(data, 200000, (unsigned)i);
		if (i % 2) /* compressible */
			memset(data, 'x', 150000);
		chunk_name_of(i, name);
		chunk_write(cs, name, data, 1000 + 10000 * (size_t)i, NULL);
		chunk_store_close(cs);
		cs = NULL;
	}
	for (i = 1; i <= 2; i++) {
		struct seal_file *sf = NULL;
		char sname[32];

		seal_name(i, k != NULL, sname, sizeof(sname));
		xsnprintf(path, sizeof(path), "%s/%s", staging, sname);
		fill(data, STAGED, (unsigned)(100 + i));
		if (seal_create(path, k, (uint64_t)i, &sf) == 0) {
			seal_pwrite(sf, data, STAGED, 0);
			seal_truncate(sf,
				      STAGED + 70000); /* a hole at the end */
		}
		seal_close(sf);
	}
	free(data);
}

/* 1 when every chunk and staging file of @dir reads right under @k. */
static int cache_reads(const char *dir, const struct crypt_key *k)
{
	char chunks[PATH_MAX], path[PATH_MAX], name[65], sname[32];
	struct chunk_store_conf csc = { .key = k };
	struct chunk_store *cs = NULL;
	unsigned char *data = malloc(200000), *buf = malloc(200000);
	int i, good = 1;

	xsnprintf(chunks, sizeof(chunks), "%s/chunks", dir);
	csc.dir = chunks;
	if (chunk_store_open(&csc, &cs) < 0)
		return 0;
	for (i = 0; i < N_CHUNKS; i++) {
		size_t n = 1000 + 10000 * (size_t)i;

		fill(data, 200000, (unsigned)i);
		if (i % 2)
			memset(data, 'x', 150000);
		chunk_name_of(i, name);
		if (chunk_read(cs, name, 0, buf, n) != (ssize_t)n ||
		    memcmp(buf, data, n) != 0) {
			diag("chunk %d does not read under %s", i,
			     k ? k->id_hex : "no key");
			good = 0;
		}
	}
	chunk_store_close(cs);
	for (i = 1; i <= 2; i++) {
		struct seal_file *sf = NULL;

		seal_name(i, k != NULL, sname, sizeof(sname));
		xsnprintf(path, sizeof(path), "%s/staging/%s", dir, sname);
		fill(data, STAGED, (unsigned)(100 + i));
		memset(data + STAGED, 0, 70000);
		if (seal_open(path, k, (uint64_t)i, &sf) != 0 ||
		    seal_size(sf) != STAGED + 70000 ||
		    seal_pread(sf, buf, 200000, 0) != STAGED + 70000 ||
		    memcmp(buf, data, STAGED + 70000) != 0) {
			diag("staging file %s does not read", path);
			good = 0;
		}
		seal_close(sf);
		seal_name(i, k == NULL, sname, sizeof(sname));
		xsnprintf(path, sizeof(path), "%s/staging/%s", dir, sname);
		if (access(path, F_OK) == 0) {
			diag("old form '%s' still there", path);
			good = 0;
		}
	}
	free(data);
	free(buf);
	return good;
}

static void test_rekey(void)
{
	struct crypt_key a, b, c;
	struct crypt_rekey_stats st;
	char dir[PATH_MAX], path[PATH_MAX], lock[PATH_MAX], name[65];
	unsigned char raw[32];
	int fd;

	memset(raw, 1, 32);
	crypt_key_from_bytes(raw, &a);
	memset(raw, 2, 32);
	crypt_key_from_bytes(raw, &b);
	memset(raw, 3, 32);
	crypt_key_from_bytes(raw, &c);
	xsnprintf(dir, sizeof(dir), "%s/cache", root);
	make_cache(dir, &a);
	ok(cache_reads(dir, &a), "rekey: the cache reads under A");

	is_int(crypt_rekey_cache(dir, &a, &b, &st), 0, "rekey A -> B");
	is_int(st.chunks_done, N_CHUNKS, "every chunk re-encrypted");
	is_int(st.staging_done, 2, "both staging files re-encrypted");
	is_int(st.chunks_dropped + st.skipped, 0, "nothing dropped or skipped");
	ok(cache_reads(dir, &b), "the cache reads under B");

	is_int(crypt_rekey_cache(dir, &a, &b, &st), 0, "rekey A -> B again");
	is_int(st.skipped, N_CHUNKS + 2, "all already under B: skipped");
	is_int(st.chunks_done + st.staging_done, 0, "nothing rewritten");

	is_int(crypt_rekey_cache(dir, &b, NULL, &st), 0, "rekey B -> none");
	is_int(st.chunks_done + st.staging_done, N_CHUNKS + 2, "all rewritten");
	ok(cache_reads(dir, NULL), "the cache reads without a key");
	is_int(crypt_rekey_cache(dir, NULL, &a, &st), 0, "rekey none -> A");
	ok(cache_reads(dir, &a), "the cache reads under A again");

	/* a chunk of a third key is dropped */
	{
		struct chunk_store_conf csc = { .key = &c };
		struct chunk_store *cs = NULL;
		char chunks[PATH_MAX];

		xsnprintf(chunks, sizeof(chunks), "%s/chunks", dir);
		csc.dir = chunks;
		chunk_store_open(&csc, &cs);
		chunk_name_of(99, name);
		chunk_write(cs, name, "abc", 3, NULL);
		chunk_store_close(cs);
		xsnprintf(path, sizeof(path), "%s/%.2s/%s", chunks, name, name);
	}
	is_int(crypt_rekey_cache(dir, &a, &b, &st), 0,
	       "rekey A -> B with a chunk of C");
	is_int(st.chunks_dropped, 1, "the chunk of C is dropped");
	ok(access(path, F_OK) != 0, "and deleted");
	ok(cache_reads(dir, &b), "the rest reads under B");

	/* a staging file of a third key stops it before any change */
	{
		struct seal_file *sf = NULL;

		xsnprintf(path, sizeof(path), "%s/staging/7.sealed", dir);
		seal_create(path, &c, 7, &sf);
		seal_pwrite(sf, "data", 4, 0);
		seal_close(sf);
	}
	is_int(crypt_rekey_cache(dir, &b, &a, &st), -EKEYREJECTED,
	       "a staging file of C: -EKEYREJECTED");
	is_int(st.chunks_done + st.staging_done, 0, "nothing rewritten");
	ok(cache_reads(dir, &b), "the cache still reads under B");
	unlink(path);

	/* a mount holds the folder */
	xsnprintf(lock, sizeof(lock), "%s/lock", dir);
	/* flock conflicts between open files, even of one process */
	fd = open(lock, O_RDWR | O_CREAT, 0600);
	ok(fd >= 0 && flock(fd, LOCK_EX | LOCK_NB) == 0, "hold the lock");
	is_int(crypt_rekey_cache(dir, &b, &a, &st), -EBUSY,
	       "a locked folder: -EBUSY");
	if (fd >= 0)
		close(fd);
	xsnprintf(path, sizeof(path), "%s/nope", root);
	is_int(crypt_rekey_cache(path, &b, &a, &st), -ENOENT,
	       "a missing folder: -ENOENT");
}

int main(void)
{
	const char *tmp = getenv("TMPDIR");

	log_init("test_crypt", LOG_LVL_WARN, false);
	xsnprintf(root, sizeof(root), "%s/test_crypt.XXXXXX",
		  tmp && *tmp ? tmp : "/tmp");
	if (!mkdtemp(root)) {
		perror("mkdtemp");
		return 1;
	}
	plan_lazy();
	test_ids();
	test_key_files();
	test_env();
	test_aead();
	test_rekey();
	rm_rf(root);
	return done_testing();
}
