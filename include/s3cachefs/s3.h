/*
 * s3.h - the S3 client: one bucket, the operations every layer above uses.
 *
 * Each call signs (SigV4, or nothing for anonymous access), sends through the
 * shared connection pool, retries what is safe to retry (s3/retry.h) and
 * returns 0 or a negative errno.  HTTP status and S3 error code become an
 * errno in exactly one place, s3_status_to_errno().  Failures are logged
 * once here, with the S3 code, message and request id; the expected ones
 * (NoSuchKey on HEAD/GET, a failed precondition) only at debug level.
 *
 * Errors callers see:
 *   -ENOENT        no such key, bucket or upload
 *   -EACCES        access denied, bad credentials or signature
 *   -ESTALE        If-Match failed: the object changed
 *   -EINVAL        S3 refused the request as malformed
 *   -ENAMETOOLONG  key over 1,024 bytes
 *   -EFBIG         entity too large
 *   -EREMOTE       the bucket lives in another region (logged with it)
 *   -EIO           any other S3 failure
 *   transport errors of http.h (-ECONNREFUSED, -ETIMEDOUT, ...) once
 *   retries are spent
 *
 * Thread-safe: one struct s3 serves any number of threads.
 */
#ifndef S3CACHEFS_S3_H
#define S3CACHEFS_S3_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "s3cachefs/http.h"
#include "s3cachefs/retry.h"
#include "s3cachefs/s3xml.h"

struct buf;
struct s3_creds;

enum s3_addressing {
	S3_ADDR_AUTO = 0, /* path-style for IP hosts, localhost, dotted names */
	S3_ADDR_PATH,	  /* http://host/bucket/key */
	S3_ADDR_VHOST,	  /* http://bucket.host/key */
};

enum s3_payload_signing {
	S3_SIGN_AUTO =
		0, /* hash bodies over http, UNSIGNED-PAYLOAD over https */
	S3_SIGN_ALWAYS,
	S3_SIGN_NEVER,
};

struct s3_conf {
	/* "http://127.0.0.1:9000" or "https://host[:port][/base]"; NULL: AWS */
	const char *endpoint;
	const char *region; /* NULL: "us-east-1" */
	const char *bucket;
	enum s3_addressing addressing;
	enum s3_payload_signing payload_signing;
	struct http_conf http;
	struct retry_conf retry;
	uint64_t part_size;	      /* multipart part size */
	uint64_t multipart_threshold; /* s3_put_file goes multipart above */
	unsigned parallel;	      /* parts in flight at once */
};

/* Defaults for everything but endpoint, region and bucket. */
void s3_conf_defaults(struct s3_conf *conf);

/* User metadata, x-amz-meta-NAME: NAME in lowercase, without the prefix. */
struct s3_meta {
	char *name;
	char *value;
};

struct s3_object_info {
	uint64_t size;	    /* whole object, also on a ranged GET */
	char *etag;	    /* as S3 sends it, quotes included */
	int64_t mtime;	    /* Last-Modified, seconds since the epoch */
	char *content_type; /* or NULL */
	struct s3_meta *meta;
	size_t n_meta;
	bool not_modified; /* GET with If-None-Match matched: no body came */
};

void s3_object_info_release(struct s3_object_info *info);
/* Value of user metadata @name (lowercase), or NULL. */
const char *s3_meta_get(const struct s3_object_info *info, const char *name);

/* A request body: @len bytes of memory at @data, or of file @fd at @off. */
struct s3_body {
	const void *data;
	int fd; /* -1 for memory */
	uint64_t off;
	uint64_t len;
};

struct s3_put_opts {
	const char *content_type;   /* or NULL */
	const struct s3_meta *meta; /* user metadata to store */
	size_t n_meta;
};

struct s3_get_opts {
	uint64_t offset;
	uint64_t length;	   /* S3_TO_END for the rest of the object */
	const char *if_match;	   /* ETag, or NULL */
	const char *if_none_match; /* ETag, or NULL */
};
#define S3_TO_END UINT64_MAX

struct s3_copy_opts {
	const char *if_match;	  /* source ETag, or NULL */
	bool replace_meta;	  /* use the fields below, not the source's */
	const char *content_type; /* with replace_meta */
	const struct s3_meta *meta;
	size_t n_meta;
};

enum s3_op {
	S3_OP_HEAD,
	S3_OP_GET,
	S3_OP_PUT,
	S3_OP_LIST,
	S3_OP_COPY,
	S3_OP_DELETE,
	S3_OP_MULTIPART,
	S3_OP_OTHER,
	S3_OP_COUNT
};

struct s3_stats {
	uint64_t requests[S3_OP_COUNT]; /* attempts, retries included */
	uint64_t retries;
	uint64_t errors;
	uint64_t connects; /* new TCP connections: the rest rode warm ones */
	uint64_t bytes_down;
	uint64_t bytes_up;
};

struct s3;

/*
 * Build a client for conf->bucket.  Strings are copied.  -EINVAL (logged:
 * malformed endpoint, bad bucket name, part size out of S3's range),
 * -ENOMEM.  Makes no request.
 */
int s3_open(const struct s3_conf *conf, const struct s3_creds *creds,
	    struct s3 **out);
void s3_close(struct s3 *s); /* NULL-safe */

/*
 * Check that the bucket exists and that the credentials and region work,
 * with one small listing.  0 or the errno, logged with a sentence that
 * says what to fix.
 */
int s3_check_bucket(struct s3 *s);

/* Create the bucket (in the configured region). */
int s3_create_bucket(struct s3 *s);

int s3_head(struct s3 *s, const char *key, struct s3_object_info *out);

/*
 * GET @key, streaming the body into @sink in order.  A transfer cut short
 * is resumed from the next byte with If-Match on the ETag first seen, so the
 * sink never sees a byte twice nor bytes of two versions.  A range starting
 * at or past the end yields no bytes and returns 0.  @info (may be NULL)
 * receives the object's attributes.
 */
int s3_get(struct s3 *s, const char *key, const struct s3_get_opts *opts,
	   http_sink_fn sink, void *sink_ctx, struct s3_object_info *info);

/* Single-request PUT.  *etag_out (may be NULL) receives the new ETag. */
int s3_put(struct s3 *s, const char *key, const struct s3_body *body,
	   const struct s3_put_opts *opts, char **etag_out);

/*
 * Upload @len bytes of @fd from offset 0: one PUT up to the threshold,
 * else a multipart upload of conf->parallel parts in flight at once,
 * aborted on failure.
 */
int s3_put_file(struct s3 *s, const char *key, int fd, uint64_t len,
		const struct s3_put_opts *opts, char **etag_out);

/* Multipart pieces, for callers that drive parts themselves. */
int s3_mpu_create(struct s3 *s, const char *key, const struct s3_put_opts *opts,
		  char **upload_id);
int s3_mpu_put_part(struct s3 *s, const char *key, const char *upload_id,
		    unsigned part_no, const struct s3_body *body,
		    char **etag_out);
int s3_mpu_copy_part(struct s3 *s, const char *key, const char *upload_id,
		     unsigned part_no, const char *src_key,
		     const char *src_etag, uint64_t off, uint64_t len,
		     char **etag_out);
int s3_mpu_complete(struct s3 *s, const char *key, const char *upload_id,
		    char *const *part_etags, unsigned n_parts, char **etag_out);
int s3_mpu_abort(struct s3 *s, const char *key, const char *upload_id);

/*
 * Send bytes [off, off + len) of @fd as parts of @part_size bytes (the last
 * shorter), numbered from @first_no, conf->parallel in flight at once;
 * etags[i] receives part first_no + i's ETag (the caller frees them).
 * Does not abort the upload.  0 or the first -errno.
 */
int s3_mpu_put_fd_parts(struct s3 *s, const char *key, const char *upload_id,
			int fd, uint64_t off, uint64_t len, uint64_t part_size,
			unsigned first_no, char **etags);

/*
 * One ListObjectsV2 page (encoding-type=url, decoded by the parser).
 * @token is NULL for the first page.  @max_keys 0 means S3's default.
 */
int s3_list_page(struct s3 *s, const char *prefix, const char *delimiter,
		 const char *token, unsigned max_keys,
		 struct s3_list_page *out);

/* Called once per page; return 0 to go on, 1 to stop early, or -errno. */
typedef int (*s3_list_fn)(void *ctx, const struct s3_list_page *page);

/* Every page of a listing, in order; 0 or -errno. */
int s3_list_all(struct s3 *s, const char *prefix, const char *delimiter,
		s3_list_fn fn, void *ctx);

/*
 * The same with pages of at most @max_keys keys (0: S3's default), of the
 * keys after @start_after (NULL or "": from the first).
 */
int s3_list_pages(struct s3 *s, const char *prefix, const char *delimiter,
		  const char *start_after, unsigned max_keys, s3_list_fn fn,
		  void *ctx);

/* Server-side copy within the bucket (up to 5 GiB). */
int s3_copy(struct s3 *s, const char *src_key, const char *dst_key,
	    const struct s3_copy_opts *opts, char **etag_out);

/* Delete one key; deleting a missing key succeeds, as on S3. */
int s3_delete(struct s3 *s, const char *key);

/*
 * Delete @n keys, 1,000 per request.  Keys S3 could not delete are returned
 * in *failed (caller frees with s3_delete_failures_free), and the call
 * returns -EIO when there are any.
 */
int s3_delete_many(struct s3 *s, const char *const *keys, size_t n,
		   struct s3_delete_failure **failed, size_t *n_failed);

void s3_get_stats(struct s3 *s, struct s3_stats *out);

/* "get", "put", ... for stats output. */
const char *s3_op_name(enum s3_op op);

/*
 * The one mapping from an HTTP status and S3 error code (may be NULL) to a
 * negative errno; 0 for 2xx.
 */
int s3_status_to_errno(long status, const char *code);

/*
 * The URL for @key (NULL or "" for the bucket itself) without query, and the
 * raw path SigV4 signs, as this client addresses them.  Appends to @url and
 * @path (either may be NULL).  0 or -ENOMEM.
 */
int s3_url_for(const struct s3 *s, const char *key, struct buf *url,
	       struct buf *path);

#endif
