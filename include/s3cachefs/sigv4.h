/*
 * sigv4.h - AWS Signature Version 4, pure: request parts, credentials and a
 * time in; canonical request, string to sign and Authorization header out.
 * No I/O, no clock, no global state; OpenSSL for SHA-256 and HMAC.
 *
 * S3 rules are applied: the path is URI-encoded once, '/' kept, and never
 * normalised ("a/./b" and "a//b" are distinct S3 keys).  Query names and
 * values are encoded with '/' escaped and sorted by encoded name, then value.
 * Header names are lowercased and sorted; values are trimmed and inner runs
 * of white space collapsed to one space; repeated names are joined with ','
 * in the order given.
 *
 * Every function leaves @out as it was on error, and returns 0, -ENOMEM,
 * -EMSGSIZE (a bounded @out is full) or -EINVAL for input that cannot be
 * signed: a missing method, path or date; no headers; a header name that is
 * not an HTTP token; CR or LF in a header value (header injection); an empty
 * region, service or access key, or one holding white space, '/' or ','.
 * A NULL query value counts as "".  payload_hash may be any single printable
 * word (hex, UNSIGNED-PAYLOAD, S3's STREAMING-* values).  The caller puts
 * "host" and "x-amz-date" (equal to amz_date) among the headers: the signer
 * signs what it is given and does not add or check them.
 */
#ifndef S3CACHEFS_SIGV4_H
#define S3CACHEFS_SIGV4_H

#include <stddef.h>

struct buf;

struct sigv4_kv {
	const char *name;
	const char *value; /* "" for a query parameter with no value */
};

struct sigv4_input {
	const char *method; /* "GET", "PUT", ... */
	/* raw, not encoded, starts with '/': "/bucket/dir/my key" */
	const char *path;
	/* raw, not encoded: the signer encodes them (same as the URL) */
	const struct sigv4_kv *query;
	size_t n_query;
	/* every header to sign, "host" and "x-amz-date" included */
	const struct sigv4_kv *headers;
	size_t n_headers;
	/* lowercase hex SHA-256 of the body, or "UNSIGNED-PAYLOAD" */
	const char *payload_hash;
	const char *region;   /* "us-east-1" */
	const char *service;  /* "s3" */
	const char *amz_date; /* "YYYYMMDDTHHMMSSZ", the x-amz-date value */
};

struct sigv4_creds {
	const char *access_key;
	const char *secret_key;
};

#define SIGV4_ALGORITHM "AWS4-HMAC-SHA256"
#define SIGV4_UNSIGNED_PAYLOAD "UNSIGNED-PAYLOAD"
#define SIGV4_EMPTY_SHA256 \
	"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

/*
 * Append the canonical query string of @q (@n pairs) to @out: the same
 * string the request URL must carry after '?'.
 */
int sigv4_canonical_query(const struct sigv4_kv *q, size_t n, struct buf *out);

/* Append the canonical request of @in to @out.  0, -EINVAL or -ENOMEM. */
int sigv4_canonical_request(const struct sigv4_input *in, struct buf *out);

/*
 * Append the string to sign for @in to @out, given its canonical request.
 * 0, -EINVAL or -ENOMEM.
 */
int sigv4_string_to_sign(const struct sigv4_input *in,
			 const char *canonical_request, struct buf *out);

/*
 * Append the value of the Authorization header to @out:
 * "AWS4-HMAC-SHA256 Credential=AKID/DATE/REGION/SERVICE/aws4_request,
 *  SignedHeaders=a;b, Signature=hex".  0, -EINVAL or -ENOMEM.
 * The secret key never reaches @out.
 */
int sigv4_authorization(const struct sigv4_input *in,
			const struct sigv4_creds *creds, struct buf *out);

#endif
