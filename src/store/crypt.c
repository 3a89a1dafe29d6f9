/*
 * crypt.c - keys (from a file, the environment, or at random) and
 * AES-256-GCM seal/open of buffers, over OpenSSL's EVP interface only.
 *
 * Why a module of its own: the chunk store and the sealed staging files
 * both encrypt, and the rules about keys (where they come from, what a key
 * file may look like, that they are wiped and never logged) belong in one
 * place.
 *
 * Key ids: the first CRYPT_ID_LEN bytes of SHA-256 over a fixed domain
 * string and the key.  A truncated hash of a 256-bit random key tells
 * nothing usable about the key, yet two keys get different ids.
 *
 * Cipher contexts: each call makes and frees its own EVP context, so no
 * state is shared between threads; the key schedule is redone per call,
 * which costs little next to a 64 KiB block (see the timing the chunk
 * unit test prints).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "s3cachefs/buf.h"
#include "s3cachefs/crypt.h"
#include "s3cachefs/fileio.h"
#include "s3cachefs/strutil.h"

#define ID_DOMAIN "s3cachefs key id v1"
#define HEX_LEN (2 * CRYPT_KEY_LEN)
/* the longest key file worth reading: 64 hex digits and "\r\n" */
#define KEY_FILE_MAX (HEX_LEN + 2)

/* 64 hex digits at @s into @raw; false when any is not a hex digit. */
static bool parse_hex_key(const char *s, unsigned char raw[CRYPT_KEY_LEN])
{
	int i, hi, lo;

	for (i = 0; i < CRYPT_KEY_LEN; i++) {
		hi = hex_value(s[2 * i]);
		lo = hex_value(s[2 * i + 1]);
		if (hi < 0 || lo < 0)
			return false;
		raw[i] = (unsigned char)(hi << 4 | lo);
	}
	return true;
}

void crypt_key_from_bytes(const unsigned char raw[CRYPT_KEY_LEN],
			  struct crypt_key *out)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	EVP_MD_CTX *ctx;
	int ok;

	memset(out, 0, sizeof(*out));
	memcpy(out->key, raw, CRYPT_KEY_LEN);
	ctx = EVP_MD_CTX_new();
	ok = ctx && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) &&
	     EVP_DigestUpdate(ctx, ID_DOMAIN, strlen(ID_DOMAIN)) &&
	     EVP_DigestUpdate(ctx, raw, CRYPT_KEY_LEN) &&
	     EVP_DigestFinal_ex(ctx, md, &mdlen) && mdlen >= CRYPT_ID_LEN;
	EVP_MD_CTX_free(ctx);
	/* only out of memory gets here; a made-up id could match a wrong key */
	if (!ok)
		abort();
	memcpy(out->id, md, CRYPT_ID_LEN);
	hex_encode(out->id, CRYPT_ID_LEN, out->id_hex);
	OPENSSL_cleanse(md, sizeof(md));
}

int crypt_key_from_hex(const char *value, struct crypt_key *out,
		       struct buf *err)
{
	unsigned char raw[CRYPT_KEY_LEN];
	int rc = 0;

	if (!value || strlen(value) != HEX_LEN || !parse_hex_key(value, raw)) {
		buf_addf(err,
			 "%s must be 64 hex digits (a 32-byte key), "
			 "not %zu characters%s",
			 CRYPT_KEY_ENV, value ? strlen(value) : (size_t)0,
			 value && strlen(value) == HEX_LEN
				 ? " with a non-hex digit"
				 : "");
		rc = -EINVAL;
		goto out;
	}
	crypt_key_from_bytes(raw, out);
out:
	OPENSSL_cleanse(raw, sizeof(raw));
	return rc;
}

/* Parse the @len bytes of a key file named @path. */
static int parse_key_file(const char *path, const unsigned char *data,
			  size_t len, struct crypt_key *out, struct buf *err)
{
	unsigned char raw[CRYPT_KEY_LEN];
	size_t n = len;
	int rc = 0;

	if (len == CRYPT_KEY_LEN) {
		crypt_key_from_bytes(data, out);
		return 0;
	}
	if (n > 0 && data[n - 1] == '\n')
		n--;
	if (n > 0 && data[n - 1] == '\r')
		n--;
	if (n != HEX_LEN) {
		buf_addf(err,
			 "key file '%s' holds %zu bytes: expected 32 raw "
			 "bytes or 64 hex digits",
			 path, len);
		return -EINVAL;
	}
	if (memchr(data, '\0', n) || !parse_hex_key((const char *)data, raw)) {
		buf_addf(err,
			 "key file '%s' holds 64 characters that are not all "
			 "hex digits",
			 path);
		rc = -EINVAL;
		goto out;
	}
	crypt_key_from_bytes(raw, out);
out:
	OPENSSL_cleanse(raw, sizeof(raw));
	return rc;
}

int crypt_key_from_file(const char *path, struct crypt_key *out,
			struct buf *err)
{
	unsigned char data[KEY_FILE_MAX + 1];
	struct stat st;
	long got = 0;
	int fd = -1, rc = 0;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0) {
		rc = -errno;
		buf_addf(err, "cannot open key file '%s': %s", path,
			 strerror(-rc));
		goto out;
	}
	if (fstat(fd, &st) < 0) {
		rc = -errno;
		buf_addf(err, "cannot stat key file '%s': %s", path,
			 strerror(-rc));
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		rc = -EINVAL;
		buf_addf(err, "key file '%s' is not a regular file", path);
		goto out;
	}
	if (st.st_mode & (S_IRWXG | S_IRWXO)) {
		rc = -EACCES;
		buf_addf(err,
			 "key file '%s' is accessible by %s (mode %04o): "
			 "chmod 600 it",
			 path, st.st_mode & S_IRWXO ? "others" : "its group",
			 (unsigned int)(st.st_mode & 07777));
		goto out;
	}
	/* one byte more than any valid file, to tell "too long" */
	got = pread_full(fd, data, sizeof(data), 0);
	if (got < 0) {
		rc = (int)got;
		buf_addf(err, "cannot read key file '%s': %s", path,
			 strerror(-rc));
		goto out;
	}
	if ((size_t)got > KEY_FILE_MAX) {
		rc = -EINVAL;
		buf_addf(err,
			 "key file '%s' is too long: expected 32 raw bytes or "
			 "64 hex digits",
			 path);
		goto out;
	}
	rc = parse_key_file(path, data, (size_t)got, out, err);
out:
	OPENSSL_cleanse(data, sizeof(data));
	if (fd >= 0)
		close(fd);
	return rc;
}

int crypt_key_generate(struct crypt_key *out)
{
	unsigned char raw[CRYPT_KEY_LEN];

	if (RAND_bytes(raw, sizeof(raw)) != 1)
		return -EIO;
	crypt_key_from_bytes(raw, out);
	out->ephemeral = true;
	OPENSSL_cleanse(raw, sizeof(raw));
	return 0;
}

void crypt_key_release(struct crypt_key *k)
{
	if (k)
		OPENSSL_cleanse(k, sizeof(*k));
}

bool crypt_key_same(const struct crypt_key *a, const struct crypt_key *b)
{
	if (!a || !b)
		return a == b;
	return memcmp(a->id, b->id, CRYPT_ID_LEN) == 0;
}

int crypt_random(void *out, size_t n)
{
	if (n > INT_MAX || RAND_bytes(out, (int)n) != 1)
		return -EIO;
	return 0;
}

void crypt_nonce_add(const unsigned char base[CRYPT_NONCE_LEN], uint64_t n,
		     unsigned char out[CRYPT_NONCE_LEN])
{
	unsigned carry = 0;
	int i;

	for (i = CRYPT_NONCE_LEN - 1; i >= 0; i--) {
		unsigned sum = base[i] + (unsigned)(n & 0xff) + carry;

		out[i] = (unsigned char)sum;
		carry = sum >> 8;
		n >>= 8;
	}
}

/* A context set up for @k and @nonce, encrypting or decrypting. */
static int gcm_init(EVP_CIPHER_CTX **out, const struct crypt_key *k,
		    const unsigned char *nonce, int enc)
{
	EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();

	if (!ctx)
		return -ENOMEM;
	if (EVP_CipherInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL, enc) !=
		    1 ||
	    EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, CRYPT_NONCE_LEN,
				NULL) != 1 ||
	    EVP_CipherInit_ex(ctx, NULL, NULL, k->key, nonce, enc) != 1) {
		EVP_CIPHER_CTX_free(ctx);
		return -EIO;
	}
	*out = ctx;
	return 0;
}

int crypt_seal(const struct crypt_key *k, const unsigned char *nonce,
	       const void *aad, size_t aad_len, const void *in, size_t len,
	       void *out, unsigned char *tag)
{
	EVP_CIPHER_CTX *ctx = NULL;
	int n = 0, rc;

	if (len > INT_MAX || aad_len > INT_MAX)
		return -EINVAL;
	rc = gcm_init(&ctx, k, nonce, 1);
	if (rc < 0)
		return rc;
	rc = -EIO;
	if (aad_len && EVP_EncryptUpdate(ctx, NULL, &n, aad, (int)aad_len) != 1)
		goto out;
	if (len && EVP_EncryptUpdate(ctx, out, &n, in, (int)len) != 1)
		goto out;
	if (EVP_EncryptFinal_ex(ctx, (unsigned char *)out + (len ? n : 0),
				&n) != 1 ||
	    EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, CRYPT_TAG_LEN,
				tag) != 1)
		goto out;
	rc = 0;
out:
	EVP_CIPHER_CTX_free(ctx);
	return rc;
}

int crypt_open(const struct crypt_key *k, const unsigned char *nonce,
	       const void *aad, size_t aad_len, const void *in, size_t len,
	       void *out, const unsigned char *tag)
{
	unsigned char t[CRYPT_TAG_LEN];
	EVP_CIPHER_CTX *ctx = NULL;
	int n = 0, rc;

	if (len > INT_MAX || aad_len > INT_MAX)
		return -EINVAL;
	rc = gcm_init(&ctx, k, nonce, 0);
	if (rc < 0)
		return rc;
	memcpy(t, tag, sizeof(t));
	rc = -EIO;
	if (aad_len && EVP_DecryptUpdate(ctx, NULL, &n, aad, (int)aad_len) != 1)
		goto out;
	if (len && EVP_DecryptUpdate(ctx, out, &n, in, (int)len) != 1)
		goto out;
	if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, CRYPT_TAG_LEN, t) !=
	    1)
		goto out;
	if (EVP_DecryptFinal_ex(ctx, (unsigned char *)out + (len ? n : 0),
				&n) != 1) {
		/* never leave unauthenticated plaintext behind */
		if (len)
			OPENSSL_cleanse(out, len);
		rc = -EBADMSG;
		goto out;
	}
	rc = 0;
out:
	EVP_CIPHER_CTX_free(ctx);
	return rc;
}
