/*
 * http.h - the only code that touches libcurl.
 *
 * A struct http is a pool of reusable curl easy handles that share one DNS
 * cache, one TLS session cache and one connection cache, so every request
 * rides a warm keep-alive connection when one exists.  http_perform() makes
 * exactly one attempt; retrying is the caller's policy (s3/retry.h), since
 * only the caller knows whether a request is safe to repeat and must sign it
 * again.
 *
 * Thread-safe: any number of threads may call http_perform() at once.
 */
#ifndef S3CACHEFS_HTTP_H
#define S3CACHEFS_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct http;

struct http_conf {
	uint32_t connect_timeout_ms; /* TCP + TLS handshake */
	uint32_t io_timeout_ms;	     /* abort when no byte moves this long */
	const char *ca_bundle;	     /* PEM file, or NULL for the system's */
	bool insecure;		     /* skip TLS verification (tests only) */
	unsigned max_idle;	     /* idle handles kept in the pool */
};

/*
 * Called for each response header; return 0 or -errno to abort.  The status
 * line comes first as the pseudo-header ":status" with the numeric code as
 * its value, so callbacks know the status before any body byte arrives.
 */
typedef int (*http_header_fn)(void *ctx, const char *name, size_t name_len,
			      const char *value, size_t value_len);
/* Called with each piece of the response body; 0 or -errno to abort. */
typedef int (*http_sink_fn)(void *ctx, const void *data, size_t len);
/* Fill up to @len bytes of the request body; bytes given, or -errno. */
typedef ssize_t (*http_source_fn)(void *ctx, void *buf, size_t len);

struct http_request {
	const char *method; /* "GET", "HEAD", "PUT", "POST", "DELETE" */
	const char *url;    /* may hold signed query parameters: never logged */
	const char *const *headers; /* "Name: value" lines */
	size_t n_headers;
	/* request body: @body_len bytes read from @source (PUT and POST) */
	uint64_t body_len;
	http_source_fn source;
	void *source_ctx;
	/* the whole attempt, connecting included; 0: no limit */
	uint32_t timeout_ms;
	/* response */
	http_header_fn on_header;
	http_sink_fn on_body;
	void *ctx;
};

struct http_stats {
	uint64_t requests;
	uint64_t connects; /* new connections made */
	uint64_t bytes_in;
	uint64_t bytes_out;
};

/* Build the pool.  0, -EINVAL (bad conf) or -ENOMEM. */
int http_open(const struct http_conf *conf, struct http **out);

/* NULL-safe.  No request may be in flight. */
void http_close(struct http *h);

/*
 * One attempt.  Returns 0 when a complete HTTP response arrived, whatever its
 * status (written to *status); otherwise a transport error:
 *   -ECONNREFUSED  nothing listens there
 *   -EHOSTUNREACH  name does not resolve or host unreachable
 *   -ETIMEDOUT     connect or I/O timeout
 *   -ECONNRESET    connection reset or closed mid-response (also when a
 *                  kept-alive connection died under a request whose body
 *                  curl cannot rewind: the caller's retry resends it)
 *   -EPIPE         body shorter than its Content-Length
 *   -EPROTO        TLS or HTTP protocol failure
 *   -EACCES        TLS certificate not trusted
 *   -EINVAL        malformed URL
 *   the -errno a callback returned, unchanged
 * A callback's error is returned as it is, so callers can tell theirs apart.
 */
int http_perform(struct http *h, const struct http_request *req, long *status);

/* Counters since open (atomic snapshot per field). */
void http_get_stats(struct http *h, struct http_stats *out);

/* The libcurl version string, for --version. */
const char *http_version(void);

#endif
