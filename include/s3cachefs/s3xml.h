/*
 * s3xml.h - streaming, size-bounded parsing of S3's XML bodies with expat.
 *
 * A parser is fed the body in pieces as they arrive from the network, never
 * more than max_bytes in all, and keeps only the fields S3 callers use.
 * Whatever kind was asked for, a body whose root element is <Error> fills
 * the error result instead (S3 may answer 200 with an error body, for
 * example to CompleteMultipartUpload): check s3_xml_is_error() first.
 *
 * Listing keys, CommonPrefixes and NextMarker are URL-decoded when the body
 * says <EncodingType>url</EncodingType>, wherever that element stands; any
 * other EncodingType is refused (-EPROTO) rather than misread.
 * A listed key or CommonPrefix whose decoding holds a NUL ("%00") is left
 * out of the page, as no C string can hold it.
 *
 * Bounds: the whole body (max_bytes, which must be > 0), each kept field
 * (64 KiB, -EMSGSIZE) and nesting (32 levels, -EPROTO); DOCTYPE and entity
 * declarations are refused.  Feeding after a successful finish is -EINVAL.
 */
#ifndef S3CACHEFS_S3XML_H
#define S3CACHEFS_S3XML_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct s3_list_entry {
	char *key;  /* decoded */
	char *etag; /* as sent, quotes included: "\"abc\"", or NULL */
	uint64_t size;
	int64_t mtime; /* LastModified, seconds since the epoch */
};

struct s3_list_page {
	struct s3_list_entry *entries;
	size_t n_entries;
	char **prefixes; /* CommonPrefixes, decoded */
	size_t n_prefixes;
	bool truncated; /* IsTruncated */
	/*
	 * NextContinuationToken (or NextMarker), or NULL.  A truncated V1
	 * listing without a delimiter has none: page on from the last key.
	 */
	char *next_token;
};

struct s3_error_info {
	char *code;	  /* "NoSuchKey", ... or NULL */
	char *message;	  /* or NULL */
	char *request_id; /* or NULL */
	char *region;	  /* <Region>, sent with AuthorizationHeaderMalformed */
	char *endpoint;	  /* <Endpoint>, sent with PermanentRedirect */
};

struct s3_delete_failure {
	char *key;     /* never NULL */
	char *code;    /* or NULL */
	char *message; /* or NULL */
};

enum s3_xml_kind {
	S3_XML_LIST,	     /* ListBucketResult (V1 or V2) */
	S3_XML_ERROR,	     /* Error */
	S3_XML_INITIATE_MPU, /* InitiateMultipartUploadResult: UploadId */
	S3_XML_COMPLETE_MPU, /* CompleteMultipartUploadResult: ETag */
	S3_XML_COPY,	     /* CopyObjectResult or CopyPartResult: ETag */
	S3_XML_DELETE,	     /* DeleteResult: Deleted keys and Errors */
};

struct s3_xml;

/* Limits that callers use unless they have a reason not to. */
#define S3_XML_MAX_LIST (16u << 20) /* a 1,000-key page is well under 1 MiB */
#define S3_XML_MAX_SMALL (256u << 10)

/* New parser for @kind that accepts at most @max_bytes.  0 or -ENOMEM. */
int s3_xml_new(enum s3_xml_kind kind, size_t max_bytes, struct s3_xml **out);

/*
 * Feed the next @len bytes.  0; -EMSGSIZE once the total passes max_bytes;
 * -EPROTO when the XML is malformed or not of the expected shape; -ENOMEM.
 * After an error every later call returns the same error.
 */
int s3_xml_feed(struct s3_xml *x, const void *data, size_t len);

/* End of body: 0, or -EPROTO when it was empty, truncated or malformed. */
int s3_xml_finish(struct s3_xml *x);

/* NULL-safe. */
void s3_xml_free(struct s3_xml *x);

/* After a successful finish: the root element was <Error>. */
bool s3_xml_is_error(const struct s3_xml *x);

/*
 * Take the results out (ownership moves to the caller; the parser keeps
 * nothing).  Each returns -EINVAL when the kind does not match or finish
 * has not succeeded.  take_string gives UploadId (INITIATE_MPU) or ETag
 * (COMPLETE_MPU, COPY), NULL when absent.
 */
int s3_xml_take_list(struct s3_xml *x, struct s3_list_page *out);
int s3_xml_take_error(struct s3_xml *x, struct s3_error_info *out);
int s3_xml_take_string(struct s3_xml *x, char **out);
int s3_xml_take_delete(struct s3_xml *x, struct s3_delete_failure **out,
		       size_t *n_out);

/* One-shot helper: new + feed + finish.  On success *out is the parser. */
int s3_xml_parse(enum s3_xml_kind kind, const void *body, size_t len,
		 size_t max_bytes, struct s3_xml **out);

/* Release what the takes returned; NULL-safe, leave the struct zeroed. */
void s3_list_page_release(struct s3_list_page *p);
void s3_error_info_release(struct s3_error_info *e);
void s3_delete_failures_free(struct s3_delete_failure *f, size_t n);

#endif
