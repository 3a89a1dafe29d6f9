/*
 * sigv4.c - AWS Signature Version 4 as S3 wants it: the canonical request,
 * the string to sign and the Authorization header value, from request parts,
 * credentials and a time that the caller supplies.
 *
 * Pure: no I/O, no clock, no global state.  Each call appends to the
 * caller's buf and frees its own temporaries; when a call fails the output
 * buf is left exactly as it was, so a caller never sends half a header.
 *
 * S3 differs from the generic algorithm in two ways, both deliberate here:
 * the path is percent-encoded once (other services encode it twice), and it
 * is never normalised, because "a/./b", "a//b" and "a/../b" are three
 * different S3 keys and the server signs the path as it was sent.
 *
 * Secrets: the key chain HMAC("AWS4" + secret, date) -> region -> service ->
 * "aws4_request" only ever lives in this file's stack frames (or, for an
 * unusually long secret, one heap block) and is wiped with OPENSSL_cleanse()
 * on every way out.  Only the final MAC, which is public, reaches an output
 * buffer.
 *
 * Inputs that cannot be signed or sent are refused with -EINVAL rather than
 * silently mangled: a header name that is not an HTTP token, a header value
 * holding CR or LF (that would be header injection), a path not starting
 * with '/', a malformed X-Amz-Date, or scope parts that would break the
 * Credential field.
 */
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "s3cachefs/buf.h"
#include "s3cachefs/sigv4.h"
#include "s3cachefs/strutil.h"

#define SHA256_LEN 32
#define AMZ_DATE_LEN 16	 /* YYYYMMDDTHHMMSSZ */
#define SCOPE_DATE_LEN 8 /* YYYYMMDD */

/* "AWS4" + secret fits in this much stack for every real-world secret. */
#define KEY_STACK_MAX 128

/* One query parameter once encoded; the strings live in a shared buf. */
struct qpair {
	size_t name_off;
	size_t value_off;
	const char *name;
	const char *value;
};

/* One header: its lowercased name and where it stood in the input. */
struct hdr {
	const char *name;  /* lowercased copy in canonical_headers()'s arena */
	const char *value; /* borrowed from the input */
	size_t order;	   /* input position: repeated names keep their order */
};

/* Drop whatever was appended to @b after @len: the "unchanged on error" rule */
static void buf_cut(struct buf *b, size_t len)
{
	if (b->data && len <= b->len) {
		b->len = len;
		b->data[len] = '\0';
	}
}

/* ASCII only, unlike tolower(), which follows the locale */
static char ascii_lower(char c)
{
	return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

static bool is_ws(char c)
{
	return c == ' ' || c == '\t';
}

/* RFC 9110 tchar: what a method or a header name may be made of. */
static bool is_tchar(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       (c >= '0' && c <= '9') ||
	       (c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static bool is_token(const char *s)
{
	if (!s || !*s)
		return false;
	for (; *s; s++)
		if (!is_tchar((unsigned char)*s))
			return false;
	return true;
}

/*
 * A part of the credential scope (access key, region, service): printable,
 * no space, and neither '/' nor ',' which delimit the Credential field.
 */
static bool is_scope_part(const char *s)
{
	if (!s || !*s)
		return false;
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;

		if (c <= ' ' || c >= 0x7f || c == '/' || c == ',')
			return false;
	}
	return true;
}

static bool is_amz_date(const char *s)
{
	size_t i;

	if (!s || strlen(s) != AMZ_DATE_LEN)
		return false;
	for (i = 0; i < AMZ_DATE_LEN; i++) {
		if (i == 8) {
			if (s[i] != 'T')
				return false;
		} else if (i == AMZ_DATE_LEN - 1) {
			if (s[i] != 'Z')
				return false;
		} else if (s[i] < '0' || s[i] > '9') {
			return false;
		}
	}
	return true;
}

/* The payload hash ends the canonical request: one printable word. */
static bool is_payload_hash(const char *s)
{
	if (!s || !*s)
		return false;
	for (; *s; s++)
		if ((unsigned char)*s <= ' ' || (unsigned char)*s >= 0x7f)
			return false;
	return true;
}

static int check_scope(const struct sigv4_input *in)
{
	if (!is_amz_date(in->amz_date) || !is_scope_part(in->region) ||
	    !is_scope_part(in->service))
		return -EINVAL;
	return 0;
}

static int qpair_cmp(const void *a, const void *b)
{
	const struct qpair *x = a, *y = b;
	int c = strcmp(x->name, y->name);

	return c ? c : strcmp(x->value, y->value);
}

int sigv4_canonical_query(const struct sigv4_kv *q, size_t n, struct buf *out)
{
	struct buf enc = BUF_INIT(BUF_NO_LIMIT);
	struct qpair *pairs = NULL;
	size_t i, start = out->len;
	int rc = 0;

	if (n == 0)
		return 0;
	if (!q)
		return -EINVAL;
	pairs = calloc(n, sizeof(*pairs));
	if (!pairs)
		return -ENOMEM;

	/*
	 * Sorting is on the encoded form ("%60" sorts before "_" although '`'
	 * comes after '_'), so encode everything first, NUL-separated in one
	 * buf, and take pointers only once it has stopped moving.
	 */
	for (i = 0; i < n; i++) {
		const char *v = q[i].value ? q[i].value : "";

		if (!q[i].name) {
			rc = -EINVAL;
			goto out;
		}
		pairs[i].name_off = enc.len;
		rc = uri_encode(&enc, q[i].name, strlen(q[i].name), false);
		if (rc == 0)
			rc = buf_addc(&enc, '\0');
		if (rc < 0)
			goto out;
		pairs[i].value_off = enc.len;
		rc = uri_encode(&enc, v, strlen(v), false);
		if (rc == 0)
			rc = buf_addc(&enc, '\0');
		if (rc < 0)
			goto out;
	}
	for (i = 0; i < n; i++) {
		pairs[i].name = enc.data + pairs[i].name_off;
		pairs[i].value = enc.data + pairs[i].value_off;
	}
	qsort(pairs, n, sizeof(*pairs), qpair_cmp);

	for (i = 0; i < n; i++) {
		rc = buf_addf(out, "%s%s=%s", i ? "&" : "", pairs[i].name,
			      pairs[i].value);
		if (rc < 0)
			goto out;
	}
out:
	if (rc < 0)
		buf_cut(out, start);
	free(pairs);
	buf_release(&enc);
	return rc;
}

static int hdr_cmp(const void *a, const void *b)
{
	const struct hdr *x = a, *y = b;
	int c = strcmp(x->name, y->name);

	if (c)
		return c;
	return x->order < y->order ? -1 : x->order > y->order;
}

/* Append @s trimmed, with each inner run of blanks collapsed to one space. */
static int add_trimmed(struct buf *out, const char *s)
{
	const char *end, *run;
	int rc = 0;

	while (is_ws(*s))
		s++;
	end = s + strlen(s);
	while (end > s && is_ws(end[-1]))
		end--;
	while (s < end && rc == 0) {
		if (is_ws(*s)) {
			/* end[-1] is not blank, so this stops before end */
			while (is_ws(*s))
				s++;
			rc = buf_addc(out, ' ');
		} else {
			run = s;
			while (s < end && !is_ws(*s))
				s++;
			rc = buf_add(out, run, (size_t)(s - run));
		}
	}
	return rc;
}

/*
 * Append the canonical header block ("name:v1,v2\n" per distinct name,
 * sorted) to @out and the signed header list ("a;b") to @signed_hdrs.
 */
static int canonical_headers(const struct sigv4_kv *h, size_t n,
			     struct buf *out, struct buf *signed_hdrs)
{
	struct hdr *v = NULL;
	char *arena = NULL, *p;
	size_t i, j, k, total = 0;
	int rc = 0;

	if (!h || n == 0)
		return -EINVAL;
	for (i = 0; i < n; i++) {
		if (!is_token(h[i].name) || !h[i].value ||
		    strpbrk(h[i].value, "\r\n"))
			return -EINVAL;
		total += strlen(h[i].name) + 1;
	}
	v = calloc(n, sizeof(*v));
	arena = malloc(total);
	if (!v || !arena) {
		rc = -ENOMEM;
		goto out;
	}
	for (i = 0, p = arena; i < n; i++) {
		const char *s = h[i].name;

		v[i].name = p;
		v[i].value = h[i].value;
		v[i].order = i;
		for (; *s; s++)
			*p++ = ascii_lower(*s);
		*p++ = '\0';
	}
	qsort(v, n, sizeof(*v), hdr_cmp);

	for (i = 0; i < n; i = j) {
		for (j = i + 1; j < n && strcmp(v[j].name, v[i].name) == 0; j++)
			;
		rc = buf_addf(out, "%s:", v[i].name);
		for (k = i; k < j && rc == 0; k++) {
			if (k > i)
				rc = buf_addc(out, ',');
			if (rc == 0)
				rc = add_trimmed(out, v[k].value);
		}
		if (rc == 0)
			rc = buf_addc(out, '\n');
		if (rc == 0)
			rc = buf_addf(signed_hdrs, "%s%s", i ? ";" : "",
				      v[i].name);
		if (rc < 0)
			goto out;
	}
out:
	free(arena);
	free(v);
	return rc;
}

/*
 * Append the canonical request to @out and the signed header list to
 * @signed_hdrs (which the Authorization value repeats).  On failure either
 * may hold a partial result; the public callers cut them back.
 */
static int build_canonical_request(const struct sigv4_input *in,
				   struct buf *out, struct buf *signed_hdrs)
{
	int rc;

	if (!in || !is_token(in->method) || !in->path || in->path[0] != '/' ||
	    !is_payload_hash(in->payload_hash))
		return -EINVAL;

	rc = buf_addf(out, "%s\n", in->method);
	if (rc < 0)
		return rc;
	/* once, '/' kept, no normalisation: S3 keys are taken literally */
	rc = uri_encode(out, in->path, strlen(in->path), true);
	if (rc == 0)
		rc = buf_addc(out, '\n');
	if (rc == 0)
		rc = sigv4_canonical_query(in->query, in->n_query, out);
	if (rc == 0)
		rc = buf_addc(out, '\n');
	if (rc == 0)
		rc = canonical_headers(in->headers, in->n_headers, out,
				       signed_hdrs);
	if (rc == 0)
		rc = buf_addf(out, "\n%s\n%s", buf_str(signed_hdrs),
			      in->payload_hash);
	return rc;
}

int sigv4_canonical_request(const struct sigv4_input *in, struct buf *out)
{
	struct buf signed_hdrs = BUF_INIT(BUF_NO_LIMIT);
	size_t start = out->len;
	int rc;

	rc = build_canonical_request(in, out, &signed_hdrs);
	if (rc < 0)
		buf_cut(out, start);
	buf_release(&signed_hdrs);
	return rc;
}

int sigv4_string_to_sign(const struct sigv4_input *in,
			 const char *canonical_request, struct buf *out)
{
	char hash[2 * SHA256_LEN + 1];
	int rc;

	if (!in || !canonical_request)
		return -EINVAL;
	rc = check_scope(in);
	if (rc < 0)
		return rc;
	sha256_hex(canonical_request, strlen(canonical_request), hash);
	/* buf_addf appends all or nothing */
	return buf_addf(
		out, SIGV4_ALGORITHM "\n%s\n%.8s/%s/%s/aws4_request\n%s",
		in->amz_date, in->amz_date, in->region, in->service, hash);
}

static int hmac_sha256(const void *key, size_t key_len, const void *msg,
		       size_t msg_len, unsigned char out[SHA256_LEN])
{
	unsigned int len = 0;

	if (key_len > INT_MAX)
		return -EINVAL;
	/* HMAC() only fails when OpenSSL cannot allocate its context */
	if (!HMAC(EVP_sha256(), key, (int)key_len, msg, msg_len, out, &len) ||
	    len != SHA256_LEN)
		return -ENOMEM;
	return 0;
}

/*
 * kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service),
 *                 "aws4_request")
 */
static int derive_signing_key(const char *secret, const struct sigv4_input *in,
			      unsigned char key[SHA256_LEN])
{
	unsigned char stack_k0[KEY_STACK_MAX];
	unsigned char *k0 = stack_k0;
	unsigned char a[SHA256_LEN], b[SHA256_LEN];
	size_t secret_len = strlen(secret), k0_len;
	int rc;

	if (secret_len > INT_MAX - 4)
		return -EINVAL;
	k0_len = secret_len + 4;
	if (k0_len > sizeof(stack_k0)) {
		k0 = malloc(k0_len);
		if (!k0)
			return -ENOMEM;
	}
	memcpy(k0, "AWS4", 4);
	memcpy(k0 + 4, secret, secret_len);

	rc = hmac_sha256(k0, k0_len, in->amz_date, SCOPE_DATE_LEN, a);
	if (rc < 0)
		goto out;
	rc = hmac_sha256(a, sizeof(a), in->region, strlen(in->region), b);
	if (rc < 0)
		goto out;
	rc = hmac_sha256(b, sizeof(b), in->service, strlen(in->service), a);
	if (rc < 0)
		goto out;
	rc = hmac_sha256(a, sizeof(a), "aws4_request", 12, key);
out:
	OPENSSL_cleanse(k0, k0_len);
	if (k0 != stack_k0)
		free(k0);
	OPENSSL_cleanse(a, sizeof(a));
	OPENSSL_cleanse(b, sizeof(b));
	return rc;
}

int sigv4_authorization(const struct sigv4_input *in,
			const struct sigv4_creds *creds, struct buf *out)
{
	struct buf creq = BUF_INIT(BUF_NO_LIMIT);
	struct buf sts = BUF_INIT(BUF_NO_LIMIT);
	struct buf signed_hdrs = BUF_INIT(BUF_NO_LIMIT);
	unsigned char key[SHA256_LEN], mac[SHA256_LEN];
	char sig[2 * SHA256_LEN + 1];
	int rc;

	if (!in || !creds || !is_scope_part(creds->access_key) ||
	    !creds->secret_key || !creds->secret_key[0])
		return -EINVAL;
	rc = check_scope(in);
	if (rc < 0)
		return rc;

	rc = build_canonical_request(in, &creq, &signed_hdrs);
	if (rc == 0)
		rc = sigv4_string_to_sign(in, buf_str(&creq), &sts);
	if (rc < 0)
		goto out;
	rc = derive_signing_key(creds->secret_key, in, key);
	if (rc < 0)
		goto out;
	rc = hmac_sha256(key, sizeof(key), sts.data, sts.len, mac);
	if (rc < 0)
		goto out;
	hex_encode(mac, sizeof(mac), sig);
	/* all or nothing, so @out is untouched on failure */
	rc = buf_addf(out,
		      SIGV4_ALGORITHM " Credential=%s/%.8s/%s/%s/aws4_request, "
				      "SignedHeaders=%s, Signature=%s",
		      creds->access_key, in->amz_date, in->region, in->service,
		      buf_str(&signed_hdrs), sig);
out:
	OPENSSL_cleanse(key, sizeof(key));
	buf_release(&signed_hdrs);
	buf_release(&sts);
	buf_release(&creq);
	return rc;
}
