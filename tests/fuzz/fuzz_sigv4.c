/*
 * fuzz_sigv4.c - libFuzzer target for SigV4 canonicalization (sigv4.h) and
 * the URI encoding it rests on (strutil.h).
 *
 * Input: the first byte picks the payload hash, the region and the output
 * bound; the rest is lines: the method, the raw path, the query
 * ("a=1&b&c=" split at '&' and the first '='), then one "name:value"
 * header per line.  Beyond memory safety it checks what holds for any
 * input:
 *   - every call returns 0, -EINVAL, -ENOMEM or -EMSGSIZE and leaves @out
 *     as it was on error;
 *   - a canonical request is method, URI, query, one line per distinct
 *     header name, a blank line, the signed names and the payload hash; its
 *     URI and query hold only unreserved characters, '/', '=', '&' and %XX
 *     escapes in uppercase hex, and decode back to the path;
 *   - signing is deterministic, and the Authorization value has the fixed
 *     shape and never holds the secret key.
 */
#undef NDEBUG /* the checks below are the point, in release builds too */
#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "s3cachefs/buf.h"
#include "s3cachefs/sigv4.h"
#include "s3cachefs/strutil.h"

#define MAX_KV 32
#define SECRET "wJalrXUtnFEMI/K7MDENG+bPxRfiCYzEXAMPLEKEY"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const payloads[] = { SIGV4_EMPTY_SHA256,
					SIGV4_UNSIGNED_PAYLOAD,
					"STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
					"not a hash" };
static const char *const regions[] = { "us-east-1", "eu-west-1", "", "a b" };

static void check_rc(int rc)
{
	assert(rc == 0 || rc == -EINVAL || rc == -ENOMEM || rc == -EMSGSIZE);
}

/* The call left @b as it was: same length and bytes as @before. */
static void check_kept(const struct buf *b, const char *before, size_t len)
{
	assert(b->len == len);
	assert(len == 0 || memcmp(b->data, before, len) == 0);
}

static bool escaped_ok(const char *s, size_t n, const char *extra)
{
	size_t i;

	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		if (isalnum(c) || strchr("-._~", c) || strchr(extra, c))
			continue;
		if (c != '%' || i + 2 >= n ||
		    !isxdigit((unsigned char)s[i + 1]) ||
		    !isxdigit((unsigned char)s[i + 2]) ||
		    islower((unsigned char)s[i + 1]) ||
		    islower((unsigned char)s[i + 2]))
			return false;
		i += 2;
	}
	return true;
}

/* Distinct header names, compared without case. */
static size_t distinct_names(const struct sigv4_kv *h, size_t n)
{
	size_t i, j, d = 0;

	for (i = 0; i < n; i++) {
		for (j = 0; j < i; j++)
			if (strcasecmp(h[i].name, h[j].name) == 0)
				break;
		d += j == i;
	}
	return d;
}

/* The canonical request's shape, and its URI decoding back to the path. */
static void check_canonical(const struct sigv4_input *in, const char *cr,
			    size_t len)
{
	const char *uri, *query, *end;
	size_t lines = 0, i;
	char *decoded = NULL;
	size_t dlen;

	for (i = 0; i < len; i++) {
		assert(cr[i] != '\r' && cr[i] != '\0');
		lines += cr[i] == '\n';
	}
	assert(lines == 5 + distinct_names(in->headers, in->n_headers));
	assert(strncmp(cr, in->method, strlen(in->method)) == 0);
	uri = cr + strlen(in->method);
	assert(*uri++ == '\n');
	query = strchr(uri, '\n');
	assert(escaped_ok(uri, (size_t)(query - uri), "/"));
	assert(uri_decode(uri, (size_t)(query - uri), false, &decoded, &dlen) ==
	       0);
	assert(dlen == strlen(in->path) && strcmp(decoded, in->path) == 0);
	free(decoded);
	query++;
	end = strchr(query, '\n');
	assert(escaped_ok(query, (size_t)(end - query), "=&"));
	assert(len >= strlen(in->payload_hash) &&
	       strcmp(cr + len - strlen(in->payload_hash), in->payload_hash) ==
		       0);
}

/* The Authorization value: fixed prefix, 64 hex digits, no secret. */
static void check_authorization(const struct sigv4_input *in, const char *a)
{
	const char *sig = strstr(a, ", Signature=");
	size_t i;

	assert(strncmp(a, SIGV4_ALGORITHM " Credential=AKID/", 32) == 0);
	assert(strstr(a, in->region) && strstr(a, "/aws4_request, "));
	assert(sig && strlen(sig + 12) == 64);
	for (i = 0; i < 64; i++)
		assert(isxdigit((unsigned char)sig[12 + i]) &&
		       !isupper((unsigned char)sig[12 + i]));
	assert(!strstr(a, SECRET));
}

/* Run @fn twice: same rc, same output, @out untouched on error. */
#define SIGN_TWICE(call, out, rc)                                              \
	do {                                                                   \
		struct buf again_ = BUF_INIT((out)->max);                      \
		size_t before_ = (out)->len;                                   \
		int rc2_;                                                      \
		rc = call(out);                                                \
		check_rc(rc);                                                  \
		if (rc < 0)                                                    \
			check_kept(out, "", before_);                          \
		rc2_ = call(&again_);                                          \
		assert(rc2_ == rc);                                            \
		if (rc == 0)                                                   \
			assert(again_.len == (out)->len &&                     \
			       memcmp(again_.data, (out)->data, again_.len) == \
				       0);                                     \
		buf_release(&again_);                                          \
	} while (0)

static const struct sigv4_input *g_in;
static const struct sigv4_creds *g_creds;

static int canon(struct buf *out)
{
	return sigv4_canonical_request(g_in, out);
}

static int auth(struct buf *out)
{
	return sigv4_authorization(g_in, g_creds, out);
}

/* Split @s at @sep into at most @max pieces; returns the count. */
static size_t split(char *s, char sep, char **piece, size_t max)
{
	size_t n = 0;

	while (s && n < max) {
		piece[n++] = s;
		s = strchr(s, sep);
		if (s)
			*s++ = '\0';
	}
	return n;
}

static void round_trip(const char *s)
{
	struct buf e = BUF_INIT(BUF_NO_LIMIT);
	char *d = NULL;
	size_t dlen;
	int slash;

	for (slash = 0; slash < 2; slash++) {
		buf_reset(&e);
		if (uri_encode(&e, s, strlen(s), slash) != 0)
			continue;
		assert(escaped_ok(buf_str(&e), e.len, slash ? "/" : ""));
		assert(uri_decode(buf_str(&e), e.len, false, &d, &dlen) == 0);
		assert(dlen == strlen(s) && strcmp(d, s) == 0);
		free(d);
	}
	buf_release(&e);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct sigv4_kv query[MAX_KV], headers[MAX_KV];
	char *lines[3 + MAX_KV], *pairs[MAX_KV];
	struct sigv4_creds creds = { "AKID", SECRET };
	struct sigv4_input in = { 0 };
	struct buf out = BUF_INIT(BUF_NO_LIMIT);
	size_t n, nq, i;
	char *text;
	uint8_t pick;
	int rc;

	if (size < 1)
		return 0;
	pick = data[0];
	text = strndup((const char *)data + 1, size - 1);
	if (!text)
		return 0;
	if (memmem(data, size, "EXAMPLEKEY", 10))
		goto out; /* the secret's tail: "no secret in out" would lie */
	out.max = pick & 0x80 ? 64 + (size_t)(pick & 0x3f) * 8 : BUF_NO_LIMIT;
	n = split(text, '\n', lines, 3 + MAX_KV);
	if (n < 2)
		goto out;
	round_trip(lines[1]);
	in.method = lines[0];
	in.path = lines[1];
	nq = n > 2 && lines[2][0] ? split(lines[2], '&', pairs, MAX_KV) : 0;
	for (i = 0; i < nq; i++) {
		char *eq = strchr(pairs[i], '=');

		query[i].name = pairs[i];
		query[i].value = eq ? eq + 1 : NULL;
		if (eq)
			*eq = '\0';
	}
	in.query = query;
	in.n_query = nq;
	in.n_headers = 0;
	for (i = 3; i < n; i++) {
		char *colon = strchr(lines[i], ':');

		if (!colon)
			continue;
		*colon = '\0';
		headers[in.n_headers].name = lines[i];
		headers[in.n_headers].value = colon + 1;
		in.n_headers++;
	}
	in.headers = headers;
	in.payload_hash = payloads[pick & 3];
	in.region = regions[(pick >> 2) & 3];
	in.service = "s3";
	in.amz_date = "20130524T000000Z";
	g_in = &in;
	g_creds = &creds;

	SIGN_TWICE(canon, &out, rc);
	if (rc == 0)
		check_canonical(&in, buf_str(&out), out.len);
	buf_reset(&out);
	SIGN_TWICE(auth, &out, rc);
	if (rc == 0)
		check_authorization(&in, buf_str(&out));
out:
	buf_release(&out);
	free(text);
	return 0;
}
