/*
 * client.c - S3 operations on one bucket over the shared HTTP pool.
 *
 * Every operation is described by a struct req (method, key, query, extra
 * headers, body, where the response body goes) and run by s3_do(), which
 * signs each attempt afresh, performs it, classifies the outcome, and
 * retries transient failures with backoff until the attempts or the
 * deadline run out.  Retrying never duplicates or corrupts data:
 *   - request bodies are re-read from memory or with pread() per attempt;
 *   - XML response bodies are parsed into a fresh parser per attempt;
 *   - a GET whose body was cut short resumes at the next undelivered byte
 *     with If-Match on the ETag of the first response, so the caller's sink
 *     sees every byte once and all of them from one object version.
 *
 * The outcome of the last attempt becomes an errno in s3_status_to_errno()
 * (the only such mapping) and is logged once, in s3_fail(), with the S3 code,
 * message and request id.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "s3cachefs/buf.h"
#include "s3cachefs/creds.h"
#include "s3cachefs/fileio.h"
#include "s3cachefs/log.h"
#include "s3cachefs/s3.h"
#include "s3cachefs/sigv4.h"
#include "s3cachefs/strutil.h"
#include "s3_int.h"

#define MAX_QUERY 8
#define MAX_HEADERS 48
#define ERROR_BODY_MAX S3_XML_MAX_SMALL

struct s3 {
	struct s3_conf conf; /* strings point into the fields below */
	char *endpoint;	     /* as given, for messages */
	char *bucket;
	char *region;
	bool https;
	char *host;	 /* host[:port] of the endpoint, port only if given */
	char *base_path; /* path prefix of the endpoint, "" or "/x" */
	bool vhost;	 /* virtual-hosted addressing resolved */
	bool sign_payload;
	/* credentials: immutable after open */
	bool anonymous;
	char *access_key;
	char *secret_key;
	char *session_token;
	char *creds_source;
	struct http *http;
	/* counters, updated atomically by any thread */
	atomic_uint_fast64_t requests[S3_OP_COUNT];
	atomic_uint_fast64_t retries;
	atomic_uint_fast64_t errors;
	atomic_uint_fast64_t bytes_down;
	atomic_uint_fast64_t bytes_up;
};

/* One request, as the operations describe it to s3_do(). */
struct req {
	enum s3_op op;
	const char *name;   /* "GET", "HEAD", "LIST"... for logs */
	const char *method; /* HTTP method */
	const char *key;    /* NULL: the bucket itself */
	struct sigv4_kv query[MAX_QUERY];
	size_t n_query;
	struct sigv4_kv headers[MAX_HEADERS]; /* names lowercase */
	size_t n_headers;
	const struct s3_body *body; /* NULL: none */
	/* 2xx bodies go to the sink (GET) or to an XML parser of xml_kind */
	http_sink_fn sink;
	void *sink_ctx;
	bool want_xml;
	enum s3_xml_kind xml_kind;
	struct s3_xml *xml; /* out: the parser after success, caller frees */
	struct s3_object_info *info; /* out: response attributes, or NULL */
	/* GET only */
	uint64_t range_off;
	uint64_t range_len; /* S3_TO_END: open-ended */
	bool ranged;
	const char *if_match;
	const char *if_none_match;
	bool quiet_enoent; /* NoSuchKey is an answer, not a failure */
	bool quiet_estale; /* a failed precondition likewise */
	/* out */
	long status;
};

/* State of one attempt, reset before each. */
struct attempt {
	struct s3 *s;
	struct req *r;
	long status;
	struct s3_object_info info;
	char *request_id;
	char *bucket_region;
	uint64_t content_range_total; /* from Content-Range, or UINT64_MAX */
	bool have_length;
	uint64_t content_length;
	struct s3_xml *xml; /* 2xx XML, or error body */
	bool xml_is_error;  /* xml holds a non-2xx body */
	int xml_rc;
	/* GET resume bookkeeping, kept across attempts by the caller */
	uint64_t *delivered; /* bytes handed to the sink so far */
	uint64_t skip;	     /* bytes of a 200 answer to drop (Range ignored) */
	uint64_t range_start; /* first byte this attempt asked for */
	bool skip_known;      /* skip was decided for this response */
};

struct body_src {
	const struct s3_body *body;
	uint64_t pos;
};

static const char *const op_names[S3_OP_COUNT] = {
	[S3_OP_HEAD] = "head",
	[S3_OP_GET] = "get",
	[S3_OP_PUT] = "put",
	[S3_OP_LIST] = "list",
	[S3_OP_COPY] = "copy",
	[S3_OP_DELETE] = "delete",
	[S3_OP_MULTIPART] = "multipart",
	[S3_OP_OTHER] = "other",
};

const char *s3_op_name(enum s3_op op)
{
	return op < S3_OP_COUNT ? op_names[op] : "?";
}

void s3_conf_defaults(struct s3_conf *conf)
{
	memset(conf, 0, sizeof(*conf));
	conf->addressing = S3_ADDR_AUTO;
	conf->payload_signing = S3_SIGN_AUTO;
	conf->http.connect_timeout_ms = 10000;
	conf->http.io_timeout_ms = 30000;
	conf->http.max_idle = 32;
	conf->retry.max_attempts = 6;
	conf->retry.base_ms = 100;
	conf->retry.cap_ms = 5000;
	conf->retry.deadline_ms = 60000;
	conf->part_size = 16u << 20;
	conf->multipart_threshold = 64u << 20;
	conf->parallel = 4;
}

const struct s3_conf *s3_conf_of(const struct s3 *s)
{
	return &s->conf;
}

/* ---------------------------------------------------------------------- */
/* object info */

void s3_object_info_release(struct s3_object_info *info)
{
	size_t i;

	if (!info)
		return;
	free(info->etag);
	free(info->content_type);
	for (i = 0; i < info->n_meta; i++) {
		free(info->meta[i].name);
		free(info->meta[i].value);
	}
	free(info->meta);
	memset(info, 0, sizeof(*info));
}

const char *s3_meta_get(const struct s3_object_info *info, const char *name)
{
	size_t i;

	for (i = 0; i < info->n_meta; i++)
		if (strcmp(info->meta[i].name, name) == 0)
			return info->meta[i].value;
	return NULL;
}

/* ---------------------------------------------------------------------- */
/* errors */

struct code_errno {
	const char *code;
	int err;
};

static const struct code_errno code_table[] = {
	{ "NoSuchKey", -ENOENT },
	{ "NoSuchBucket", -ENOENT },
	{ "NoSuchUpload", -ENOENT },
	{ "NoSuchVersion", -ENOENT },
	{ "AccessDenied", -EACCES },
	{ "AllAccessDisabled", -EACCES },
	{ "AccountProblem", -EACCES },
	{ "InvalidAccessKeyId", -EACCES },
	{ "SignatureDoesNotMatch", -EACCES },
	{ "InvalidSecurity", -EACCES },
	{ "ExpiredToken", -EACCES },
	{ "InvalidToken", -EACCES },
	{ "TokenRefreshRequired", -EACCES },
	{ "PreconditionFailed", -ESTALE },
	{ "KeyTooLongError", -ENAMETOOLONG },
	{ "EntityTooLarge", -EFBIG },
	{ "MaxMessageLengthExceeded", -EFBIG },
	{ "AuthorizationHeaderMalformed", -EREMOTE },
	{ "PermanentRedirect", -EREMOTE },
	{ "TemporaryRedirect", -EREMOTE },
	{ "IllegalLocationConstraintException", -EREMOTE },
	{ "InvalidRange", -ERANGE },
	{ "NotImplemented", -EOPNOTSUPP },
	{ "MethodNotAllowed", -EOPNOTSUPP },
	{ "BucketAlreadyOwnedByYou", -EEXIST },
	{ "BucketAlreadyExists", -EEXIST },
	{ "BucketNotEmpty", -ENOTEMPTY },
	{ "InvalidBucketName", -EINVAL },
	{ "InvalidArgument", -EINVAL },
	{ "InvalidRequest", -EINVAL },
	{ "InvalidURI", -EINVAL },
	{ "MalformedXML", -EINVAL },
	{ "InvalidPart", -EINVAL },
	{ "InvalidPartOrder", -EINVAL },
	{ "EntityTooSmall", -EINVAL },
	{ "InvalidDigest", -EINVAL },
	{ "MissingContentLength", -EINVAL },
	{ "QuotaExceeded", -EDQUOT },
	{ "RequestTimeout", -ETIMEDOUT },
};

int s3_status_to_errno(long status, const char *code)
{
	size_t i;

	if (status >= 200 && status < 300)
		return 0;
	if (code) {
		for (i = 0; i < sizeof(code_table) / sizeof(*code_table); i++)
			if (strcmp(code, code_table[i].code) == 0)
				return code_table[i].err;
	}
	switch (status) {
	case 301:
	case 307:
		return -EREMOTE;
	case 400:
	case 411:
		return -EINVAL;
	case 401:
	case 403:
		return -EACCES;
	case 404:
		return -ENOENT;
	case 405:
	case 501:
		return -EOPNOTSUPP;
	case 409:
		return -EBUSY;
	case 412:
		return -ESTALE;
	case 416:
		return -ERANGE;
	default:
		return -EIO;
	}
}

static const char *transport_text(int rc)
{
	switch (rc) {
	case -ECONNREFUSED:
		return "connection refused";
	case -EHOSTUNREACH:
		return "host not found or unreachable";
	case -ETIMEDOUT:
		return "timed out";
	case -ECONNRESET:
		return "connection reset";
	case -EPIPE:
		return "response body cut short";
	case -EPROTO:
		return "TLS or HTTP protocol error";
	case -EACCES:
		return "TLS certificate not trusted (see -o ca_bundle=)";
	default:
		return strerror(-rc);
	}
}

/*
 * Log the final failure of @r once, in words that say what to fix.  @rc is
 * the mapped errno; @a the last attempt (status 0: no response).
 */
static void s3_fail(struct s3 *s, const struct req *r, struct attempt *a,
		    int transport_rc, int rc, const struct s3_error_info *e)
{
	const char *code = e && e->code ? e->code : NULL;
	const char *msg = e && e->message ? e->message : "";
	const char *rid = e && e->request_id ? e->request_id : a->request_id;
	const char *key = r->key ? r->key : "";
	const char *region = e && e->region ? e->region : a->bucket_region;

	atomic_fetch_add(&s->errors, 1);
	if ((rc == -ENOENT && r->quiet_enoent &&
	     (!code || strcmp(code, "NoSuchBucket") != 0)) ||
	    (rc == -ESTALE && r->quiet_estale)) {
		log_debug("%s '%s': %s", r->name, key,
			  code ? code : strerror(-rc));
		return;
	}
	if (transport_rc < 0) {
		log_error("cannot reach '%s': %s", s->endpoint,
			  transport_text(transport_rc));
		return;
	}
	if (a->status == 0) {
		/* failed before anything was sent (no memory, bad request) */
		log_error("%s '%s': %s", r->name, key, strerror(-rc));
		return;
	}
	if (code && strcmp(code, "NoSuchBucket") == 0) {
		log_error("bucket '%s' does not exist at '%s'", s->bucket,
			  s->endpoint);
	} else if (rc == -EREMOTE && region) {
		log_error("bucket '%s' is in region '%s', not '%s': use -o "
			  "region=%s",
			  s->bucket, region, s->region, region);
	} else if (code && strcmp(code, "InvalidAccessKeyId") == 0) {
		log_error("the access key from %s is not known to the server "
			  "(InvalidAccessKeyId, request id %s)",
			  s->creds_source, rid ? rid : "none");
	} else if (code && strcmp(code, "SignatureDoesNotMatch") == 0) {
		log_error("the server rejected the signature: check the secret "
			  "key from %s (SignatureDoesNotMatch, request id %s)",
			  s->creds_source, rid ? rid : "none");
	} else if (rc == -EACCES) {
		log_error("%s '%s': access denied with credentials from %s "
			  "(%s, request id %s)",
			  r->name, key, s->creds_source, code ? code : "403",
			  rid ? rid : "none");
	} else if (code) {
		log_error("%s '%s': %s: %s (HTTP %ld, request id %s)", r->name,
			  key, code, msg, a->status, rid ? rid : "none");
	} else {
		log_error("%s '%s': HTTP %ld %s (request id %s)", r->name, key,
			  a->status,
			  rc == -ENOENT ? "not found" : strerror(-rc),
			  rid ? rid : "none");
	}
}

/* ---------------------------------------------------------------------- */
/* addressing */

static bool host_is_ip_or_local(const char *host)
{
	size_t i, n = strcspn(host, ":");
	bool digits_dots = n > 0;

	if (host[0] == '[')
		return true; /* IPv6 literal */
	if ((n == 9 && strncasecmp(host, "localhost", 9) == 0) ||
	    (n > 10 && strncasecmp(host + n - 10, ".localhost", 10) == 0))
		return true;
	for (i = 0; i < n; i++)
		if (!(host[i] == '.' || (host[i] >= '0' && host[i] <= '9')))
			digits_dots = false;
	return digits_dots;
}

/* A bucket name that can be a DNS label of a virtual host. */
static bool bucket_dns_ok(const char *b, bool https)
{
	size_t i, n = strlen(b);

	if (n < 3 || n > 63)
		return false;
	for (i = 0; i < n; i++) {
		char c = b[i];

		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		      c == '-' || (c == '.' && !https)))
			return false;
	}
	return b[0] != '-' && b[n - 1] != '-';
}

static bool bucket_name_ok(const char *b)
{
	size_t i, n = strlen(b);

	if (n == 0 || n > 255)
		return false;
	for (i = 0; i < n; i++) {
		char c = b[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      (c >= '0' && c <= '9') || c == '-' || c == '.' ||
		      c == '_'))
			return false;
	}
	return true;
}

/*
 * Split "scheme://host[:port][/path]" into its parts; anything else is
 * refused so that a typo gives a message rather than a request to nowhere.
 */
static int parse_endpoint(struct s3 *s, const char *url)
{
	const char *p, *auth, *end, *colon;
	size_t n;

	if (strncasecmp(url, "https://", 8) == 0) {
		s->https = true;
		auth = url + 8;
	} else if (strncasecmp(url, "http://", 7) == 0) {
		s->https = false;
		auth = url + 7;
	} else {
		return -EINVAL;
	}
	end = auth + strcspn(auth, "/?#");
	if (*end == '?' || *end == '#' || end == auth)
		return -EINVAL;
	if (auth[0] == '[') {
		const char *close = memchr(auth, ']', (size_t)(end - auth));

		if (!close)
			return -EINVAL;
		colon = close + 1 < end && close[1] == ':' ? close + 1 : NULL;
		if (close + 1 < end && !colon)
			return -EINVAL;
	} else {
		colon = memchr(auth, ':', (size_t)(end - auth));
		for (p = auth; p < (colon ? colon : end); p++)
			if (!((*p >= 'a' && *p <= 'z') ||
			      (*p >= 'A' && *p <= 'Z') ||
			      (*p >= '0' && *p <= '9') || *p == '-' ||
			      *p == '.' || *p == '_'))
				return -EINVAL;
		if (p == auth)
			return -EINVAL;
	}
	if (colon) {
		unsigned long port = 0;

		if (colon + 1 == end || end - colon > 6)
			return -EINVAL;
		for (p = colon + 1; p < end; p++) {
			if (*p < '0' || *p > '9')
				return -EINVAL;
			port = port * 10 + (unsigned long)(*p - '0');
		}
		if (port == 0 || port > 65535)
			return -EINVAL;
	}
	s->host = strndup(auth, (size_t)(end - auth));
	if (!s->host)
		return -ENOMEM;
	n = strlen(end);
	while (n > 0 && end[n - 1] == '/')
		n--;
	if (strchr(end, '?') || strchr(end, '#') || strchr(end, '%'))
		return -EINVAL;
	s->base_path = strndup(end, n);
	return s->base_path ? 0 : -ENOMEM;
}

int s3_url_for(const struct s3 *s, const char *key, struct buf *url,
	       struct buf *path)
{
	struct buf raw = BUF_INIT(BUF_NO_LIMIT);
	int rc;

	rc = buf_adds(&raw, s->base_path);
	if (rc == 0 && !s->vhost)
		rc = buf_addf(&raw, "/%s", s->bucket);
	if (rc == 0 && (s->vhost || (key && *key)))
		rc = buf_addc(&raw, '/');
	if (rc == 0 && key)
		rc = buf_adds(&raw, key);
	if (rc == 0 && url) {
		rc = buf_addf(url, "%s://", s->https ? "https" : "http");
		if (rc == 0 && s->vhost)
			rc = buf_addf(url, "%s.", s->bucket);
		if (rc == 0)
			rc = buf_adds(url, s->host);
		if (rc == 0)
			rc = uri_encode(url, raw.data, raw.len, true);
	}
	if (rc == 0 && path)
		rc = buf_add(path, raw.data, raw.len);
	buf_release(&raw);
	return rc;
}

/* ---------------------------------------------------------------------- */
/* open / close */

static int copy_creds(struct s3 *s, const struct s3_creds *c)
{
	s->anonymous = c->anonymous;
	if (c->source && !(s->creds_source = strdup(c->source)))
		return -ENOMEM;
	if (!s->creds_source &&
	    !(s->creds_source = strdup(c->anonymous ? "anonymous" : "options")))
		return -ENOMEM;
	if (c->anonymous)
		return 0;
	if (!c->access_key || !c->secret_key)
		return -EINVAL;
	s->access_key = strdup(c->access_key);
	s->secret_key = strdup(c->secret_key);
	if (!s->access_key || !s->secret_key)
		return -ENOMEM;
	if (c->session_token && !(s->session_token = strdup(c->session_token)))
		return -ENOMEM;
	return 0;
}

int s3_open(const struct s3_conf *conf, const struct s3_creds *creds,
	    struct s3 **out)
{
	struct s3 *s;
	const char *region = conf->region ? conf->region : "us-east-1";
	int rc = -ENOMEM;

	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->conf = *conf;
	if (!conf->bucket || !bucket_name_ok(conf->bucket)) {
		log_error("invalid bucket name '%s'",
			  conf->bucket ? conf->bucket : "");
		rc = -EINVAL;
		goto fail;
	}
	s->bucket = strdup(conf->bucket);
	s->region = strdup(region);
	if (conf->endpoint)
		s->endpoint = strdup(conf->endpoint);
	else if (strcmp(region, "us-east-1") == 0)
		s->endpoint = strdup("https://s3.amazonaws.com");
	else if (asprintf(&s->endpoint, "https://s3.%s.amazonaws.com", region) <
		 0)
		s->endpoint = NULL;
	if (!s->bucket || !s->region || !s->endpoint)
		goto fail;
	rc = parse_endpoint(s, s->endpoint);
	if (rc == -EINVAL) {
		log_error(
			"malformed endpoint '%s': expected http://HOST[:PORT] "
			"or https://HOST[:PORT][/PATH]",
			s->endpoint);
		goto fail;
	}
	if (rc < 0)
		goto fail;
	switch (conf->addressing) {
	case S3_ADDR_PATH:
		s->vhost = false;
		break;
	case S3_ADDR_VHOST:
		if (!bucket_dns_ok(s->bucket, s->https)) {
			log_error("bucket '%s' cannot be a host name: use -o "
				  "path_style",
				  s->bucket);
			rc = -EINVAL;
			goto fail;
		}
		s->vhost = true;
		break;
	default:
		s->vhost = !host_is_ip_or_local(s->host) &&
			   bucket_dns_ok(s->bucket, s->https);
		break;
	}
	s->sign_payload = conf->payload_signing == S3_SIGN_ALWAYS ||
			  (conf->payload_signing == S3_SIGN_AUTO && !s->https);
	if (conf->part_size < (5u << 20) || conf->part_size > (5ull << 30)) {
		log_error("part size %" PRIu64
			  " is outside S3's 5 MiB to 5 GiB",
			  conf->part_size);
		rc = -EINVAL;
		goto fail;
	}
	if (s->conf.parallel == 0)
		s->conf.parallel = 1;
	if (s->conf.retry.max_attempts == 0)
		s->conf.retry.max_attempts = 1;
	rc = copy_creds(s, creds);
	if (rc < 0)
		goto fail;
	s->conf.endpoint = s->endpoint;
	s->conf.bucket = s->bucket;
	s->conf.region = s->region;
	s->conf.http.ca_bundle = conf->http.ca_bundle;
	rc = http_open(&s->conf.http, &s->http);
	if (rc < 0)
		goto fail;
	s->conf.http.ca_bundle = NULL; /* http keeps its own copy */
	log_debug("s3: bucket '%s' at '%s' (%s addressing, region %s, "
		  "credentials from %s)",
		  s->bucket, s->endpoint, s->vhost ? "virtual-hosted" : "path",
		  s->region, s->creds_source);
	*out = s;
	return 0;
fail:
	s3_close(s);
	return rc;
}

static void free_secret(char *p)
{
	if (p) {
		OPENSSL_cleanse(p, strlen(p));
		free(p);
	}
}

void s3_close(struct s3 *s)
{
	if (!s)
		return;
	http_close(s->http);
	free(s->endpoint);
	free(s->bucket);
	free(s->region);
	free(s->host);
	free(s->base_path);
	free(s->access_key);
	free_secret(s->secret_key);
	free_secret(s->session_token);
	free(s->creds_source);
	free(s);
}

void s3_get_stats(struct s3 *s, struct s3_stats *out)
{
	struct http_stats hs;
	int i;

	http_get_stats(s->http, &hs);
	out->connects = hs.connects;
	for (i = 0; i < S3_OP_COUNT; i++)
		out->requests[i] = atomic_load(&s->requests[i]);
	out->retries = atomic_load(&s->retries);
	out->errors = atomic_load(&s->errors);
	out->bytes_down = atomic_load(&s->bytes_down);
	out->bytes_up = atomic_load(&s->bytes_up);
}

/* ---------------------------------------------------------------------- */
/* request plumbing */

static int req_query(struct req *r, const char *name, const char *value)
{
	if (r->n_query >= MAX_QUERY)
		return -E2BIG;
	r->query[r->n_query].name = name;
	r->query[r->n_query].value = value ? value : "";
	r->n_query++;
	return 0;
}

static int req_header(struct req *r, const char *name, const char *value)
{
	if (r->n_headers >= MAX_HEADERS)
		return -E2BIG;
	r->headers[r->n_headers].name = name;
	r->headers[r->n_headers].value = value;
	r->n_headers++;
	return 0;
}

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void sleep_ms(uint32_t ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000 };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static uint64_t random64(void)
{
	uint64_t v = 0;

	if (getrandom(&v, sizeof(v), GRND_NONBLOCK) != sizeof(v))
		v = now_ms() * 0x9e3779b97f4a7c15ULL;
	return v;
}

static ssize_t body_read(void *ctx, void *out, size_t len)
{
	struct body_src *src = ctx;
	const struct s3_body *b = src->body;
	long got;

	if (len > b->len - src->pos)
		len = (size_t)(b->len - src->pos);
	if (len == 0)
		return 0;
	if (b->fd < 0) {
		memcpy(out, (const char *)b->data + src->pos, len);
		got = (long)len;
	} else {
		got = pread_full(b->fd, out, len, (off_t)(b->off + src->pos));
		if (got < 0)
			return got;
		if (got == 0)
			return -EIO; /* the file shrank under the upload */
	}
	src->pos += (uint64_t)got;
	return got;
}

/* SHA-256 of a body, for signed payloads. */
static int body_sha256(const struct s3_body *b, char out[65])
{
	unsigned char md[32];
	EVP_MD_CTX *ctx = NULL;
	char *chunk = NULL;
	uint64_t pos = 0;
	int rc = 0;

	if (!b || b->len == 0) {
		strcpy(out, SIGV4_EMPTY_SHA256);
		return 0;
	}
	if (b->fd < 0) {
		sha256_hex(b->data, (size_t)b->len, out);
		return 0;
	}
	ctx = EVP_MD_CTX_new();
	chunk = malloc(1 << 20);
	if (!ctx || !chunk || !EVP_DigestInit_ex(ctx, EVP_sha256(), NULL)) {
		rc = -ENOMEM;
		goto out;
	}
	while (pos < b->len) {
		size_t want = b->len - pos < (1 << 20) ? (size_t)(b->len - pos)
						       : (1 << 20);
		long got =
			pread_full(b->fd, chunk, want, (off_t)(b->off + pos));

		if (got <= 0) {
			rc = got < 0 ? (int)got : -EIO;
			goto out;
		}
		EVP_DigestUpdate(ctx, chunk, (size_t)got);
		pos += (uint64_t)got;
	}
	EVP_DigestFinal_ex(ctx, md, NULL);
	hex_encode(md, 32, out);
out:
	EVP_MD_CTX_free(ctx);
	free(chunk);
	return rc;
}

static bool name_is(const char *name, size_t n, const char *want)
{
	return strlen(want) == n && strncasecmp(name, want, n) == 0;
}

static int dup_n(const char *v, size_t n, char **out)
{
	char *p = strndup(v, n);

	if (!p)
		return -ENOMEM;
	free(*out);
	*out = p;
	return 0;
}

static int parse_u64(const char *v, size_t n, uint64_t *out)
{
	uint64_t x = 0;
	size_t i;

	if (n == 0 || n > 20)
		return -EINVAL;
	for (i = 0; i < n; i++) {
		if (v[i] < '0' || v[i] > '9' || x > (UINT64_MAX - 9) / 10)
			return -EINVAL;
		x = x * 10 + (uint64_t)(v[i] - '0');
	}
	*out = x;
	return 0;
}

static int add_meta(struct s3_object_info *info, const char *name,
		    size_t name_len, const char *value, size_t value_len)
{
	struct s3_meta *m;
	size_t i;

	m = realloc(info->meta, (info->n_meta + 1) * sizeof(*m));
	if (!m)
		return -ENOMEM;
	info->meta = m;
	m = &info->meta[info->n_meta];
	m->name = strndup(name, name_len);
	m->value = strndup(value, value_len);
	if (!m->name || !m->value) {
		free(m->name);
		free(m->value);
		return -ENOMEM;
	}
	for (i = 0; i < name_len; i++)
		if (m->name[i] >= 'A' && m->name[i] <= 'Z')
			m->name[i] = (char)(m->name[i] - 'A' + 'a');
	info->n_meta++;
	return 0;
}

static int on_header(void *ctx, const char *name, size_t n, const char *v,
		     size_t vn)
{
	struct attempt *a = ctx;
	char tmp[64];
	int64_t t;

	if (name_is(name, n, ":status")) {
		uint64_t st = 0;

		/* a new response (after a redirect or 1xx): start over */
		if (parse_u64(v, vn, &st) == 0)
			a->status = (long)st;
		return 0;
	}
	if (name_is(name, n, "etag"))
		return dup_n(v, vn, &a->info.etag);
	if (name_is(name, n, "x-amz-request-id"))
		return dup_n(v, vn, &a->request_id);
	if (name_is(name, n, "x-amz-bucket-region"))
		return dup_n(v, vn, &a->bucket_region);
	if (name_is(name, n, "content-type"))
		return dup_n(v, vn, &a->info.content_type);
	if (name_is(name, n, "content-length")) {
		if (parse_u64(v, vn, &a->content_length) == 0)
			a->have_length = true;
		return 0;
	}
	if (name_is(name, n, "content-range")) {
		/* "bytes 0-9/1234" or "bytes * /1234" */
		const char *slash = memchr(v, '/', vn);
		uint64_t total;

		if (slash && parse_u64(slash + 1, vn - (size_t)(slash + 1 - v),
				       &total) == 0)
			a->content_range_total = total;
		return 0;
	}
	if (name_is(name, n, "last-modified")) {
		if (vn < sizeof(tmp)) {
			memcpy(tmp, v, vn);
			tmp[vn] = '\0';
			if (parse_http_date(tmp, &t) == 0)
				a->info.mtime = t;
		}
		return 0;
	}
	if (n > 11 && strncasecmp(name, "x-amz-meta-", 11) == 0)
		return add_meta(&a->info, name + 11, n - 11, v, vn);
	return 0;
}

static int on_body(void *ctx, const void *data, size_t len)
{
	struct attempt *a = ctx;
	struct req *r = a->r;
	int rc;

	atomic_fetch_add(&a->s->bytes_down, len);
	if (a->status >= 200 && a->status < 300 && r->sink) {
		if (!a->skip_known) {
			/* 200 to a ranged request: the server ignored Range */
			a->skip = a->status == 200 ? a->range_start : 0;
			a->skip_known = true;
		}
		if (a->skip) {
			size_t drop = a->skip < len ? (size_t)a->skip : len;

			a->skip -= drop;
			data = (const char *)data + drop;
			len -= drop;
		}
		if (r->ranged && r->range_len != S3_TO_END) {
			uint64_t left = r->range_len - *a->delivered;

			if (len > left)
				len = (size_t)left; /* Range was ignored */
		}
		if (len == 0)
			return 0;
		rc = r->sink(r->sink_ctx, data, len);
		if (rc == 0)
			*a->delivered += len;
		return rc;
	}
	if (a->status >= 200 && a->status < 300 && !r->want_xml)
		return 0; /* a body nobody asked for */
	if (!a->xml) {
		bool ok = a->status >= 200 && a->status < 300;

		a->xml_is_error = !ok;
		a->xml_rc = s3_xml_new(ok ? r->xml_kind : S3_XML_ERROR,
				       ok ? S3_XML_MAX_LIST : ERROR_BODY_MAX,
				       &a->xml);
		if (a->xml_rc < 0)
			return a->xml_rc;
	}
	if (a->xml_rc == 0)
		a->xml_rc = s3_xml_feed(a->xml, data, len);
	/* a bad error body is not a transport failure: keep reading */
	return a->xml_is_error ? 0 : a->xml_rc;
}

static void attempt_reset(struct attempt *a)
{
	s3_object_info_release(&a->info);
	free(a->request_id);
	free(a->bucket_region);
	s3_xml_free(a->xml);
	a->request_id = NULL;
	a->bucket_region = NULL;
	a->xml = NULL;
	a->xml_rc = 0;
	a->xml_is_error = false;
	a->status = 0;
	a->have_length = false;
	a->content_length = 0;
	a->content_range_total = UINT64_MAX;
	a->skip = 0;
	a->skip_known = false;
	a->range_start = 0;
}

static int sort_headers_cmp(const void *x, const void *y)
{
	return strcmp(((const struct sigv4_kv *)x)->name,
		      ((const struct sigv4_kv *)y)->name);
}

/*
 * Build URL and header lines for one attempt and sign them.  @hdrs
 * receives "Name: value" lines in @lines, which owns the text.
 */
static int build_request(struct s3 *s, struct req *r, const char *amz_date,
			 const char *payload_hash, const char *range,
			 struct buf *url, struct buf *lines,
			 const char **hdr_ptrs, size_t *n_hdrs)
{
	struct sigv4_kv hv[MAX_HEADERS + 8];
	struct buf path = BUF_INIT(BUF_NO_LIMIT);
	struct buf auth = BUF_INIT(BUF_NO_LIMIT);
	struct buf hostv = BUF_INIT(BUF_NO_LIMIT);
	size_t n = 0, i, *offs = NULL;
	int rc;

	rc = s3_url_for(s, r->key, url, &path);
	if (rc == 0 && r->n_query) {
		rc = buf_addc(url, '?');
		if (rc == 0)
			rc = sigv4_canonical_query(r->query, r->n_query, url);
	}
	if (rc == 0)
		rc = s->vhost ? buf_addf(&hostv, "%s.%s", s->bucket, s->host)
			      : buf_adds(&hostv, s->host);
	if (rc < 0)
		goto out;
	hv[n++] = (struct sigv4_kv){ "host", buf_str(&hostv) };
	for (i = 0; i < r->n_headers; i++)
		hv[n++] = r->headers[i];
	if (range)
		hv[n++] = (struct sigv4_kv){ "range", range };
	if (!s->anonymous) {
		hv[n++] = (struct sigv4_kv){ "x-amz-date", amz_date };
		hv[n++] = (struct sigv4_kv){ "x-amz-content-sha256",
					     payload_hash };
		if (s->session_token)
			hv[n++] = (struct sigv4_kv){ "x-amz-security-token",
						     s->session_token };
	}
	qsort(hv, n, sizeof(hv[0]), sort_headers_cmp);
	if (!s->anonymous) {
		struct sigv4_input in = {
			.method = r->method,
			.path = buf_str(&path),
			.query = r->query,
			.n_query = r->n_query,
			.headers = hv,
			.n_headers = n,
			.payload_hash = payload_hash,
			.region = s->region,
			.service = "s3",
			.amz_date = amz_date,
		};
		struct sigv4_creds cr = { s->access_key, s->secret_key };

		rc = sigv4_authorization(&in, &cr, &auth);
		if (rc < 0)
			goto out;
	}
	/* the lines are built in one buffer; pointers are fixed up after */
	offs = calloc(n + 1, sizeof(*offs));
	if (!offs) {
		rc = -ENOMEM;
		goto out;
	}
	for (i = 0; i < n && rc == 0; i++) {
		offs[i] = lines->len;
		rc = buf_addf(lines, "%s: %s", hv[i].name, hv[i].value);
		if (rc == 0)
			rc = buf_addc(lines, '\0');
	}
	if (rc == 0 && !s->anonymous) {
		offs[n] = lines->len;
		rc = buf_addf(lines, "Authorization: %s", buf_str(&auth));
		if (rc == 0)
			rc = buf_addc(lines, '\0');
	}
	if (rc < 0)
		goto out;
	for (i = 0; i < n; i++)
		hdr_ptrs[i] = lines->data + offs[i];
	if (!s->anonymous) {
		hdr_ptrs[n] = lines->data + offs[n];
		n++;
	}
	*n_hdrs = n;
out:
	free(offs);
	if (auth.data)
		OPENSSL_cleanse(auth.data, auth.len);
	buf_release(&auth);
	buf_release(&path);
	buf_release(&hostv);
	return rc;
}

/*
 * Run @r with retries.  On success the response attributes are moved to
 * r->info and a 2xx XML parser to r->xml.  Returns 0 or the final -errno
 * (logged once).
 */
static int s3_do(struct s3 *s, struct req *r)
{
	const char *hdr_ptrs[MAX_HEADERS + 8];
	struct attempt a = { .s = s, .r = r };
	struct s3_error_info err = { 0 };
	char payload_hash[65], amz_date[17], range[64];
	const char *etag_seen = r->if_match;
	char *etag_copy = NULL;
	uint64_t delivered = 0, start = now_ms(), t0;
	unsigned attempt_no;
	int rc = 0, transport_rc = 0;
	bool done = false;

	a.delivered = &delivered;
	a.content_range_total = UINT64_MAX;
	if (s->anonymous)
		strcpy(payload_hash, SIGV4_UNSIGNED_PAYLOAD);
	else if (r->body && s->sign_payload)
		rc = body_sha256(r->body, payload_hash);
	else
		strcpy(payload_hash,
		       r->body ? SIGV4_UNSIGNED_PAYLOAD : SIGV4_EMPTY_SHA256);
	if (rc < 0)
		return rc;

	for (attempt_no = 1;; attempt_no++) {
		struct buf url = BUF_INIT(BUF_NO_LIMIT);
		struct buf lines = BUF_INIT(BUF_NO_LIMIT);
		struct body_src src = { .body = r->body };
		struct http_request hr = { 0 };
		const char *range_p = NULL;
		size_t n_hdrs = 0, base_headers = r->n_headers;
		uint32_t pause;
		long status = 0;

		attempt_reset(&a);
		s3_error_info_release(&err);
		rc = 0;
		if (r->ranged || delivered) {
			uint64_t off = r->range_off + delivered;

			if (r->range_len == S3_TO_END)
				snprintf(range, sizeof(range),
					 "bytes=%" PRIu64 "-", off);
			else
				snprintf(range, sizeof(range),
					 "bytes=%" PRIu64 "-%" PRIu64, off,
					 r->range_off + r->range_len - 1);
			range_p = range;
			a.range_start = off;
		}
		/* resume only the version we started with */
		if (etag_seen)
			rc = req_header(r, "if-match", etag_seen);
		if (rc == 0 && r->if_none_match)
			rc = req_header(r, "if-none-match", r->if_none_match);
		format_amz_date(time(NULL), amz_date);
		if (rc == 0)
			rc = build_request(s, r, amz_date, payload_hash,
					   range_p, &url, &lines, hdr_ptrs,
					   &n_hdrs);
		r->n_headers = base_headers;
		if (rc < 0) {
			buf_release(&url);
			buf_release(&lines);
			break;
		}
		hr.method = r->method;
		hr.url = buf_str(&url);
		hr.headers = hdr_ptrs;
		hr.n_headers = n_hdrs;
		if (r->body) {
			hr.body_len = r->body->len;
			hr.source = body_read;
			hr.source_ctx = &src;
		}
		hr.on_header = on_header;
		hr.on_body = on_body;
		hr.ctx = &a;
		/*
		 * The deadline bounds each attempt too, so a server that
		 * accepts and then says nothing costs `timeout`, not
		 * io_timeout per retry.  A whole-object GET streams for as
		 * long as it makes progress: its size is the caller's.
		 */
		if (s->conf.retry.deadline_ms &&
		    !(r->op == S3_OP_GET && r->range_len == S3_TO_END)) {
			uint64_t spent = now_ms() - start;
			uint64_t left =
				spent < s->conf.retry.deadline_ms
					? s->conf.retry.deadline_ms - spent
					: 1;

			hr.timeout_ms =
				left > UINT32_MAX ? UINT32_MAX : (uint32_t)left;
		}
		atomic_fetch_add(&s->requests[r->op], 1);
		t0 = now_ms();
		transport_rc = http_perform(s->http, &hr, &status);
		buf_release(&url);
		buf_release(&lines);
		if (transport_rc == 0)
			a.status = status;
		if (r->body)
			atomic_fetch_add(&s->bytes_up, src.pos);
		log_debug("s3: %s '%s'%s%s -> %ld%s%s in %" PRIu64
			  " ms (request id %s)",
			  r->name, r->key ? r->key : "", range_p ? " " : "",
			  range_p ? range_p : "", transport_rc ? 0 : a.status,
			  transport_rc ? ": " : "",
			  transport_rc ? transport_text(transport_rc) : "",
			  now_ms() - t0, a.request_id ? a.request_id : "none");

		/* remember the version this GET is reading */
		if (r->sink && !etag_seen && a.info.etag && a.status >= 200 &&
		    a.status < 300) {
			etag_copy = strdup(a.info.etag);
			etag_seen = etag_copy;
		}
		if (transport_rc == 0 && a.status >= 200 && a.status < 300) {
			if (a.xml_rc == 0 && r->want_xml) {
				if (!a.xml)
					a.xml_rc = s3_xml_new(r->xml_kind, 1,
							      &a.xml);
				if (a.xml_rc == 0)
					a.xml_rc = s3_xml_finish(a.xml);
			}
			if (a.xml_rc == 0 && r->want_xml &&
			    s3_xml_is_error(a.xml)) {
				/* 200 with an <Error> body */
				s3_xml_take_error(a.xml, &err);
				a.status = 500;
				rc = s3_status_to_errno(500, err.code);
			} else if (a.xml_rc < 0) {
				log_error("%s '%s': unreadable response from "
					  "'%s' (%s)",
					  r->name, r->key ? r->key : "",
					  s->endpoint, strerror(-a.xml_rc));
				rc = -EPROTO;
				atomic_fetch_add(&s->errors, 1);
				break;
			} else {
				rc = 0;
				done = true;
				break;
			}
		} else if (transport_rc == 0 && a.status == 304) {
			a.info.not_modified = true;
			rc = 0;
			done = true;
			break;
		} else if (transport_rc == 0 && a.status == 416 && r->sink) {
			/* a range at or past the end: no bytes, no error */
			rc = 0;
			done = true;
			break;
		} else if (transport_rc == 0) {
			if (a.xml && a.xml_is_error &&
			    s3_xml_finish(a.xml) == 0 && s3_xml_is_error(a.xml))
				s3_xml_take_error(a.xml, &err);
			/*
			 * A HEAD answer has no body: a bucket in another region
			 * shows only in x-amz-bucket-region.  Name it as S3
			 * does in the bodies of other requests.
			 */
			if (!err.code && a.bucket_region &&
			    strcmp(a.bucket_region, s->region) != 0 &&
			    (a.status == 301 || a.status == 400))
				err.code =
					strdup("AuthorizationHeaderMalformed");
			rc = s3_status_to_errno(a.status, err.code);
		} else {
			rc = transport_rc;
		}
		if (!retry_is_transient(transport_rc, a.status, err.code))
			break;
		pause = retry_backoff_ms(
			&s->conf.retry, attempt_no,
			a.status == 503 ||
				(err.code && strcmp(err.code, "SlowDown") == 0),
			random64());
		if (!retry_may_continue(&s->conf.retry, attempt_no,
					now_ms() - start, pause))
			break;
		atomic_fetch_add(&s->retries, 1);
		log_info("s3: %s '%s' failed (%s), retry %u in %u ms", r->name,
			 r->key ? r->key : "",
			 transport_rc ? transport_text(transport_rc)
			 : err.code   ? err.code
				      : "server error",
			 attempt_no, pause);
		sleep_ms(pause);
	}

	if (done) {
		if (a.content_range_total != UINT64_MAX)
			a.info.size = a.content_range_total;
		else if (a.have_length)
			a.info.size = a.content_length;
		if (r->info) {
			s3_object_info_release(r->info);
			*r->info = a.info;
			memset(&a.info, 0, sizeof(a.info));
		}
		if (r->want_xml) {
			r->xml = a.xml;
			a.xml = NULL;
		}
	} else {
		if (rc == 0)
			rc = -EIO;
		s3_fail(s, r, &a, transport_rc, rc, &err);
	}
	r->status = a.status;
	attempt_reset(&a);
	s3_error_info_release(&err);
	free(etag_copy);
	return rc;
}

/* ---------------------------------------------------------------------- */
/* operations */

static void req_init(struct req *r, enum s3_op op, const char *name,
		     const char *method, const char *key)
{
	memset(r, 0, sizeof(*r));
	r->op = op;
	r->name = name;
	r->method = method;
	r->key = key;
	r->range_len = S3_TO_END;
}

static int check_key(const char *key)
{
	if (!key || !*key) {
		log_error("empty object key");
		return -EINVAL;
	}
	if (strlen(key) > 1024) {
		log_error("key '%.64s...' is longer than S3's 1024 bytes", key);
		return -ENAMETOOLONG;
	}
	return 0;
}

int s3_head(struct s3 *s, const char *key, struct s3_object_info *out)
{
	struct req r;
	int rc = check_key(key);

	if (rc < 0)
		return rc;
	req_init(&r, S3_OP_HEAD, "HEAD", "HEAD", key);
	r.info = out;
	r.quiet_enoent = true;
	return s3_do(s, &r);
}

int s3_get(struct s3 *s, const char *key, const struct s3_get_opts *opts,
	   http_sink_fn sink, void *sink_ctx, struct s3_object_info *info)
{
	struct s3_get_opts none = { 0, S3_TO_END, NULL, NULL };
	struct req r;
	int rc = check_key(key);

	if (rc < 0)
		return rc;
	if (!opts)
		opts = &none;
	if (opts->length == 0)
		return info ? s3_head(s, key, info) : 0;
	req_init(&r, S3_OP_GET, "GET", "GET", key);
	r.sink = sink;
	r.sink_ctx = sink_ctx;
	r.info = info;
	r.quiet_enoent = true;
	r.quiet_estale = true;
	r.if_match = opts->if_match;
	r.if_none_match = opts->if_none_match;
	r.range_off = opts->offset;
	r.range_len = opts->length;
	r.ranged = opts->offset != 0 || opts->length != S3_TO_END;
	if (r.ranged && opts->length != S3_TO_END &&
	    opts->offset + opts->length < opts->offset)
		return -EINVAL;
	return s3_do(s, &r);
}

/* Headers for a new object's attributes; @store keeps composed names. */
static int put_headers(struct req *r, const struct s3_put_opts *o,
		       const char **names)
{
	size_t i;
	int rc = 0;

	if (!o)
		return 0;
	if (o->content_type)
		rc = req_header(r, "content-type", o->content_type);
	if (o->n_meta > 16)
		return -E2BIG;
	for (i = 0; i < o->n_meta && rc == 0; i++) {
		char *name;

		if (asprintf(&name, "x-amz-meta-%s", o->meta[i].name) < 0)
			return -ENOMEM;
		names[i] = name;
		rc = req_header(r, name, o->meta[i].value);
	}
	return rc;
}

static void free_names(const char **names, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		free((char *)names[i]);
}

int s3_put(struct s3 *s, const char *key, const struct s3_body *body,
	   const struct s3_put_opts *opts, char **etag_out)
{
	const char *names[16] = { 0 };
	struct s3_object_info info = { 0 };
	struct req r;
	int rc = check_key(key);

	if (rc < 0)
		return rc;
	req_init(&r, S3_OP_PUT, "PUT", "PUT", key);
	r.body = body;
	r.info = &info;
	rc = put_headers(&r, opts, names);
	if (rc == 0)
		rc = s3_do(s, &r);
	if (rc == 0 && etag_out) {
		*etag_out = info.etag;
		info.etag = NULL;
	}
	free_names(names, 16);
	s3_object_info_release(&info);
	return rc;
}

/* Take the one string result (UploadId, ETag) out of a finished parser. */
static int take_string(struct req *r, char **out)
{
	char *v = NULL;
	int rc = s3_xml_take_string(r->xml, &v);

	s3_xml_free(r->xml);
	r->xml = NULL;
	if (rc == 0 && !v)
		rc = -EPROTO;
	if (rc == 0)
		*out = v;
	return rc;
}

int s3_mpu_create(struct s3 *s, const char *key, const struct s3_put_opts *opts,
		  char **upload_id)
{
	const char *names[16] = { 0 };
	struct req r;
	int rc = check_key(key);

	if (rc < 0)
		return rc;
	req_init(&r, S3_OP_MULTIPART, "CREATE-MULTIPART", "POST", key);
	req_query(&r, "uploads", "");
	r.want_xml = true;
	r.xml_kind = S3_XML_INITIATE_MPU;
	rc = put_headers(&r, opts, names);
	if (rc == 0)
		rc = s3_do(s, &r);
	if (rc == 0) {
		rc = take_string(&r, upload_id);
		if (rc < 0)
			log_error("create multipart '%s': no upload id in the "
				  "answer",
				  key);
	}
	free_names(names, 16);
	return rc;
}

int s3_mpu_put_part(struct s3 *s, const char *key, const char *upload_id,
		    unsigned part_no, const struct s3_body *body,
		    char **etag_out)
{
	struct s3_object_info info = { 0 };
	char num[16];
	struct req r;
	int rc;

	snprintf(num, sizeof(num), "%u", part_no);
	req_init(&r, S3_OP_MULTIPART, "UPLOAD-PART", "PUT", key);
	req_query(&r, "partNumber", num);
	req_query(&r, "uploadId", upload_id);
	r.body = body;
	r.info = &info;
	rc = s3_do(s, &r);
	if (rc == 0 && !info.etag)
		rc = -EPROTO;
	if (rc == 0) {
		*etag_out = info.etag;
		info.etag = NULL;
	}
	s3_object_info_release(&info);
	return rc;
}

/* "/bucket/key" percent-encoded, as x-amz-copy-source wants it. */
static int copy_source(struct s3 *s, const char *src_key, struct buf *out)
{
	int rc = buf_addc(out, '/');

	if (rc == 0)
		rc = uri_encode(out, s->bucket, strlen(s->bucket), false);
	if (rc == 0)
		rc = buf_addc(out, '/');
	if (rc == 0)
		rc = uri_encode(out, src_key, strlen(src_key), true);
	return rc;
}

int s3_mpu_copy_part(struct s3 *s, const char *key, const char *upload_id,
		     unsigned part_no, const char *src_key,
		     const char *src_etag, uint64_t off, uint64_t len,
		     char **etag_out)
{
	struct buf src = BUF_INIT(4096);
	char num[16], range[64];
	struct req r;
	int rc;

	if (len == 0)
		return -EINVAL;
	snprintf(num, sizeof(num), "%u", part_no);
	snprintf(range, sizeof(range), "bytes=%" PRIu64 "-%" PRIu64, off,
		 off + len - 1);
	req_init(&r, S3_OP_MULTIPART, "UPLOAD-PART-COPY", "PUT", key);
	req_query(&r, "partNumber", num);
	req_query(&r, "uploadId", upload_id);
	rc = copy_source(s, src_key, &src);
	if (rc == 0)
		rc = req_header(&r, "x-amz-copy-source", buf_str(&src));
	if (rc == 0)
		rc = req_header(&r, "x-amz-copy-source-range", range);
	if (rc == 0 && src_etag)
		rc = req_header(&r, "x-amz-copy-source-if-match", src_etag);
	r.want_xml = true;
	r.xml_kind = S3_XML_COPY;
	if (rc == 0)
		rc = s3_do(s, &r);
	if (rc == 0)
		rc = take_string(&r, etag_out);
	buf_release(&src);
	return rc;
}

/* Append @s with the five XML specials escaped. */
static int xml_escape(struct buf *b, const char *s)
{
	int rc = 0;

	for (; *s && rc == 0; s++) {
		switch (*s) {
		case '&':
			rc = buf_adds(b, "&amp;");
			break;
		case '<':
			rc = buf_adds(b, "&lt;");
			break;
		case '>':
			rc = buf_adds(b, "&gt;");
			break;
		case '"':
			rc = buf_adds(b, "&quot;");
			break;
		case '\'':
			rc = buf_adds(b, "&apos;");
			break;
		case '\t':
		case '\n':
		case '\r':
			rc = buf_addf(b, "&#%d;", *s);
			break;
		default:
			if ((unsigned char)*s < 0x20)
				return -EINVAL; /* XML 1.0 cannot carry it */
			rc = buf_addc(b, *s);
		}
	}
	return rc;
}

int s3_mpu_complete(struct s3 *s, const char *key, const char *upload_id,
		    char *const *part_etags, unsigned n_parts, char **etag_out)
{
	struct buf xml = BUF_INIT(BUF_NO_LIMIT);
	struct s3_body body = { .fd = -1 };
	struct s3_object_info info = { 0 };
	struct req r;
	unsigned i;
	char *etag = NULL;
	int rc;

	rc = buf_adds(&xml, "<CompleteMultipartUpload>");
	for (i = 0; i < n_parts && rc == 0; i++) {
		rc = buf_addf(&xml, "<Part><PartNumber>%u</PartNumber><ETag>",
			      i + 1);
		if (rc == 0)
			rc = xml_escape(&xml, part_etags[i]);
		if (rc == 0)
			rc = buf_adds(&xml, "</ETag></Part>");
	}
	if (rc == 0)
		rc = buf_adds(&xml, "</CompleteMultipartUpload>");
	if (rc < 0)
		goto out;
	body.data = xml.data;
	body.len = xml.len;
	req_init(&r, S3_OP_MULTIPART, "COMPLETE-MULTIPART", "POST", key);
	req_query(&r, "uploadId", upload_id);
	req_header(&r, "content-type", "application/xml");
	r.body = &body;
	r.want_xml = true;
	r.xml_kind = S3_XML_COMPLETE_MPU;
	/* NoSuchUpload is what a retry whose first attempt's answer was lost
	 * sees: logged below only when the object says it was not that */
	r.quiet_enoent = true;
	rc = s3_do(s, &r);
	if (rc == 0) {
		rc = take_string(&r, &etag);
	} else if (r.status == 404 || r.status >= 500) {
		/*
		 * A retried complete whose first attempt succeeded finds no
		 * upload any more.  If the object now carries a multipart
		 * ETag of this many parts, the upload did complete.
		 */
		char suffix[16];

		snprintf(suffix, sizeof(suffix), "-%u\"", n_parts);
		if (s3_head(s, key, &info) == 0 && info.etag &&
		    strlen(info.etag) > strlen(suffix) &&
		    strcmp(info.etag + strlen(info.etag) - strlen(suffix),
			   suffix) == 0) {
			log_info("complete multipart '%s': already completed",
				 key);
			etag = info.etag;
			info.etag = NULL;
			rc = 0;
		} else if (rc == -ENOENT) {
			log_error("complete multipart '%s': the upload does "
				  "not exist (NoSuchUpload)",
				  key);
		}
	}
	if (rc == 0 && etag_out) {
		*etag_out = etag;
		etag = NULL;
	}
out:
	free(etag);
	s3_object_info_release(&info);
	buf_release(&xml);
	return rc;
}

int s3_mpu_abort(struct s3 *s, const char *key, const char *upload_id)
{
	struct req r;

	req_init(&r, S3_OP_MULTIPART, "ABORT-MULTIPART", "DELETE", key);
	req_query(&r, "uploadId", upload_id);
	r.quiet_enoent = true;
	return s3_do(s, &r);
}

static int list_page(struct s3 *s, const char *prefix, const char *delimiter,
		     const char *start_after, const char *token,
		     unsigned max_keys, struct s3_list_page *out)
{
	char mk[16];
	struct req r;
	int rc;

	req_init(&r, S3_OP_LIST, "LIST", "GET", NULL);
	req_query(&r, "list-type", "2");
	req_query(&r, "encoding-type", "url");
	if (prefix && *prefix)
		req_query(&r, "prefix", prefix);
	if (delimiter && *delimiter)
		req_query(&r, "delimiter", delimiter);
	if (start_after && *start_after)
		req_query(&r, "start-after", start_after);
	if (token)
		req_query(&r, "continuation-token", token);
	if (max_keys) {
		snprintf(mk, sizeof(mk), "%u", max_keys);
		req_query(&r, "max-keys", mk);
	}
	r.want_xml = true;
	r.xml_kind = S3_XML_LIST;
	rc = s3_do(s, &r);
	if (rc == 0)
		rc = s3_xml_take_list(r.xml, out);
	s3_xml_free(r.xml);
	return rc;
}

int s3_list_page(struct s3 *s, const char *prefix, const char *delimiter,
		 const char *token, unsigned max_keys, struct s3_list_page *out)
{
	return list_page(s, prefix, delimiter, NULL, token, max_keys, out);
}

int s3_list_all(struct s3 *s, const char *prefix, const char *delimiter,
		s3_list_fn fn, void *ctx)
{
	return s3_list_pages(s, prefix, delimiter, NULL, 0, fn, ctx);
}

int s3_list_pages(struct s3 *s, const char *prefix, const char *delimiter,
		  const char *start_after, unsigned max_keys, s3_list_fn fn,
		  void *ctx)
{
	struct s3_list_page page = { 0 };
	char *token = NULL;
	int rc;

	for (;;) {
		rc = list_page(s, prefix, delimiter, start_after, token,
			       max_keys, &page);
		if (rc < 0)
			break;
		rc = fn(ctx, &page);
		if (rc != 0)
			break;
		if (!page.truncated)
			break;
		if (!page.next_token || !*page.next_token ||
		    (token && strcmp(token, page.next_token) == 0)) {
			log_error("list '%s': the server said there is more "
				  "but gave no new continuation token",
				  prefix ? prefix : "");
			rc = -EPROTO;
			break;
		}
		free(token);
		token = page.next_token;
		page.next_token = NULL;
		s3_list_page_release(&page);
	}
	s3_list_page_release(&page);
	free(token);
	return rc < 0 ? rc : 0;
}

int s3_check_bucket(struct s3 *s)
{
	struct s3_list_page page = { 0 };
	int rc = s3_list_page(s, NULL, "/", NULL, 1, &page);

	s3_list_page_release(&page);
	return rc;
}

int s3_create_bucket(struct s3 *s)
{
	struct buf xml = BUF_INIT(4096);
	struct s3_body body = { .fd = -1 };
	struct req r;
	int rc = 0;

	req_init(&r, S3_OP_OTHER, "CREATE-BUCKET", "PUT", NULL);
	if (strcmp(s->region, "us-east-1") != 0) {
		rc = buf_addf(&xml,
			      "<CreateBucketConfiguration><LocationConstraint>"
			      "%s</LocationConstraint>"
			      "</CreateBucketConfiguration>",
			      s->region);
		body.data = xml.data;
		body.len = xml.len;
		r.body = &body;
	}
	if (rc == 0)
		rc = s3_do(s, &r);
	buf_release(&xml);
	return rc;
}

int s3_copy(struct s3 *s, const char *src_key, const char *dst_key,
	    const struct s3_copy_opts *opts, char **etag_out)
{
	const char *names[16] = { 0 };
	struct buf src = BUF_INIT(4096);
	struct s3_put_opts po = { 0 };
	struct req r;
	int rc = check_key(src_key);

	if (rc == 0)
		rc = check_key(dst_key);
	if (rc < 0)
		return rc;
	req_init(&r, S3_OP_COPY, "COPY", "PUT", dst_key);
	rc = copy_source(s, src_key, &src);
	if (rc == 0)
		rc = req_header(&r, "x-amz-copy-source", buf_str(&src));
	if (rc == 0 && opts && opts->if_match)
		rc = req_header(&r, "x-amz-copy-source-if-match",
				opts->if_match);
	if (rc == 0)
		rc = req_header(&r, "x-amz-metadata-directive",
				opts && opts->replace_meta ? "REPLACE"
							   : "COPY");
	if (rc == 0 && opts && opts->replace_meta) {
		po.content_type = opts->content_type;
		po.meta = opts->meta;
		po.n_meta = opts->n_meta;
		rc = put_headers(&r, &po, names);
	}
	r.want_xml = true;
	r.xml_kind = S3_XML_COPY;
	if (rc == 0)
		rc = s3_do(s, &r);
	if (rc == 0) {
		char *etag = NULL;

		rc = take_string(&r, &etag);
		if (rc == 0 && etag_out)
			*etag_out = etag;
		else
			free(etag);
	}
	free_names(names, 16);
	buf_release(&src);
	return rc;
}

int s3_delete(struct s3 *s, const char *key)
{
	struct req r;
	int rc = check_key(key);

	if (rc < 0)
		return rc;
	req_init(&r, S3_OP_DELETE, "DELETE", "DELETE", key);
	r.quiet_enoent = true;
	rc = s3_do(s, &r);
	return rc == -ENOENT && r.status == 404 ? 0 : rc;
}

static int content_md5(const void *data, size_t len, char out[32])
{
	unsigned char md[16];
	unsigned int n = 0;

	if (!EVP_Digest(data, len, md, &n, EVP_md5(), NULL))
		return -EIO;
	EVP_EncodeBlock((unsigned char *)out, md, 16);
	return 0;
}

/* One DeleteObjects request for up to 1,000 keys. */
static int delete_batch(struct s3 *s, const char *const *keys, size_t n,
			struct s3_delete_failure **failed, size_t *n_failed)
{
	struct buf xml = BUF_INIT(BUF_NO_LIMIT);
	struct s3_body body = { .fd = -1 };
	struct s3_delete_failure *f = NULL, *all;
	size_t i, nf = 0;
	char md5[32];
	struct req r;
	int rc;

	rc = buf_adds(&xml, "<Delete><Quiet>true</Quiet>");
	for (i = 0; i < n && rc == 0; i++) {
		rc = buf_adds(&xml, "<Object><Key>");
		if (rc == 0)
			rc = xml_escape(&xml, keys[i]);
		if (rc == 0)
			rc = buf_adds(&xml, "</Key></Object>");
	}
	if (rc == 0)
		rc = buf_adds(&xml, "</Delete>");
	if (rc == 0)
		rc = content_md5(xml.data, xml.len, md5);
	if (rc < 0)
		goto out;
	body.data = xml.data;
	body.len = xml.len;
	req_init(&r, S3_OP_DELETE, "DELETE-MANY", "POST", NULL);
	req_query(&r, "delete", "");
	req_header(&r, "content-md5", md5);
	req_header(&r, "content-type", "application/xml");
	r.body = &body;
	r.want_xml = true;
	r.xml_kind = S3_XML_DELETE;
	rc = s3_do(s, &r);
	if (rc == 0)
		rc = s3_xml_take_delete(r.xml, &f, &nf);
	s3_xml_free(r.xml);
	if (rc < 0 || nf == 0)
		goto out;
	all = realloc(*failed, (*n_failed + nf) * sizeof(*all));
	if (!all) {
		s3_delete_failures_free(f, nf);
		rc = -ENOMEM;
		goto out;
	}
	memcpy(all + *n_failed, f, nf * sizeof(*f));
	free(f);
	*failed = all;
	*n_failed += nf;
out:
	buf_release(&xml);
	return rc;
}

int s3_delete_many(struct s3 *s, const char *const *keys, size_t n,
		   struct s3_delete_failure **failed, size_t *n_failed)
{
	size_t done = 0, i, batch;
	int rc = 0;

	*failed = NULL;
	*n_failed = 0;
	while (done < n && rc == 0) {
		batch = n - done < 1000 ? n - done : 1000;
		rc = delete_batch(s, keys + done, batch, failed, n_failed);
		if (rc == -EINVAL) {
			/* a key XML cannot carry: delete one by one */
			for (i = 0, rc = 0; i < batch && rc == 0; i++)
				rc = s3_delete(s, keys[done + i]);
		}
		done += batch;
	}
	if (rc == 0 && *n_failed) {
		log_error("delete: %zu keys could not be deleted, first '%s': "
			  "%s",
			  *n_failed, (*failed)[0].key ? (*failed)[0].key : "",
			  (*failed)[0].code ? (*failed)[0].code : "error");
		rc = -EIO;
	}
	return rc;
}
