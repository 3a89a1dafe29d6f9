/*
 * strutil.h - small pure string helpers shared by the layers: hex, URI
 * encoding as S3 and SigV4 want it, ETag normalisation, time formats.
 */
#ifndef S3CACHEFS_STRUTIL_H
#define S3CACHEFS_STRUTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

struct buf;

/* Lowercase hex of @n bytes into @out, which holds 2 * n + 1 bytes. */
void hex_encode(const unsigned char *in, size_t n, char *out);

/* The value of hex digit @c (either case), or -1. */
int hex_value(char c);

/* Undo the octal escapes ("\040" for a space) of a /proc/self/mountinfo
 * field, in place. */
void unescape_octal(char *s);

/*
 * Append @s (@n bytes) percent-encoded as RFC 3986 / SigV4 require: the
 * unreserved characters A-Z a-z 0-9 - . _ ~ stay, '/' stays when
 * @keep_slash, every other byte becomes %XX with uppercase hex.
 * 0, -ENOMEM or -EMSGSIZE.
 */
int uri_encode(struct buf *out, const char *s, size_t n, bool keep_slash);

/*
 * Decode %XX escapes of @s (@n bytes); when @plus_is_space, '+' decodes to a
 * space (form encoding, as S3 uses for encoding-type=url listings).  Returns
 * a new NUL-terminated string in *out (caller frees) and its length in
 * *out_len (may be NULL).  -EINVAL on a malformed or NUL-producing escape,
 * -ENOMEM.
 */
int uri_decode(const char *s, size_t n, bool plus_is_space, char **out,
	       size_t *out_len);

/* SHA-256 of @len bytes as 64 lowercase hex digits and a NUL. */
void sha256_hex(const void *data, size_t len, char out[65]);

/*
 * Parse an ISO 8601 UTC time as S3 lists it ("2009-10-12T17:50:30.000Z",
 * fraction optional) into seconds since the epoch.  0 or -EINVAL.
 */
int parse_iso8601(const char *s, int64_t *out);

/*
 * Parse an HTTP date (IMF-fixdate, "Sun, 06 Nov 1994 08:49:37 GMT", as S3
 * sends Last-Modified) into seconds since the epoch.  0 or -EINVAL.
 */
int parse_http_date(const char *s, int64_t *out);

/* Format @t as "YYYYMMDDTHHMMSSZ" (SigV4's X-Amz-Date), UTC. */
void format_amz_date(time_t t, char out[17]);

/* True when @s (@n bytes) is valid UTF-8 with no overlong form or surrogate. */
bool utf8_valid(const char *s, size_t n);

/* strdup that returns -ENOMEM instead of NULL: *out owned by the caller. */
int str_dup(const char *s, char **out);

/* Constant-time comparison of two equal-length byte strings. */
bool mem_equal_ct(const void *a, const void *b, size_t n);

#endif
