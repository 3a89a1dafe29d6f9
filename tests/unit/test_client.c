/*
 * test_client.c - the S3 client's pure parts: the one status/code to errno
 * mapping, endpoint validation, and how keys become URLs and signed paths
 * under path-style and virtual-hosted addressing.  No request is sent.
 */
#include <errno.h>
#include <string.h>

#include "s3cachefs/buf.h"
#include "s3cachefs/creds.h"
#include "s3cachefs/log.h"
#include "s3cachefs/s3.h"
#include "tap.h"

static struct s3_creds anon = { .anonymous = true, .source = NULL };

static int open_client(const char *endpoint, const char *bucket,
		       enum s3_addressing addr, struct s3 **out)
{
	struct s3_conf conf;

	s3_conf_defaults(&conf);
	conf.endpoint = endpoint;
	conf.bucket = bucket;
	conf.addressing = addr;
	return s3_open(&conf, &anon, out);
}

static void check_url(const char *endpoint, const char *bucket,
		      enum s3_addressing addr, const char *key,
		      const char *want_url, const char *want_path)
{
	struct buf url = BUF_INIT(BUF_NO_LIMIT), path = BUF_INIT(BUF_NO_LIMIT);
	struct s3 *s = NULL;
	int rc = open_client(endpoint, bucket, addr, &s);

	if (!ok(rc == 0, "open %s bucket %s", endpoint ? endpoint : "(aws)",
		bucket)) {
		diag("rc %d", rc);
		return;
	}
	is_int(s3_url_for(s, key, &url, &path), 0, "url for '%s'",
	       key ? key : "(bucket)");
	is_str(buf_str(&url), want_url, "url of '%s' at %s", key ? key : "",
	       endpoint ? endpoint : "aws");
	is_str(buf_str(&path), want_path, "signed path of '%s'",
	       key ? key : "");
	buf_release(&url);
	buf_release(&path);
	s3_close(s);
}

static void test_errno_mapping(void)
{
	static const struct {
		long status;
		const char *code;
		int want;
	} cases[] = {
		{ 200, NULL, 0 },
		{ 204, NULL, 0 },
		{ 206, NULL, 0 },
		{ 404, "NoSuchKey", -ENOENT },
		{ 404, "NoSuchBucket", -ENOENT },
		{ 404, "NoSuchUpload", -ENOENT },
		{ 404, NULL, -ENOENT },
		{ 403, "AccessDenied", -EACCES },
		{ 403, "InvalidAccessKeyId", -EACCES },
		{ 403, "SignatureDoesNotMatch", -EACCES },
		{ 400, "ExpiredToken", -EACCES },
		{ 403, NULL, -EACCES },
		{ 412, "PreconditionFailed", -ESTALE },
		{ 412, NULL, -ESTALE },
		{ 400, "KeyTooLongError", -ENAMETOOLONG },
		{ 400, "EntityTooLarge", -EFBIG },
		{ 400, "AuthorizationHeaderMalformed", -EREMOTE },
		{ 301, "PermanentRedirect", -EREMOTE },
		{ 301, NULL, -EREMOTE },
		{ 416, "InvalidRange", -ERANGE },
		{ 501, "NotImplemented", -EOPNOTSUPP },
		{ 405, NULL, -EOPNOTSUPP },
		{ 409, "BucketNotEmpty", -ENOTEMPTY },
		{ 409, "BucketAlreadyOwnedByYou", -EEXIST },
		{ 409, NULL, -EBUSY },
		{ 400, "InvalidArgument", -EINVAL },
		{ 400, "MalformedXML", -EINVAL },
		{ 400, NULL, -EINVAL },
		{ 500, "InternalError", -EIO },
		{ 503, "SlowDown", -EIO },
		{ 400, "RequestTimeout", -ETIMEDOUT },
		{ 502, NULL, -EIO },
		{ 418, NULL, -EIO },
		{ 400, "SomeFutureCode", -EINVAL },
	};
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(*cases); i++)
		is_int(s3_status_to_errno(cases[i].status, cases[i].code),
		       cases[i].want, "%ld %s", cases[i].status,
		       cases[i].code ? cases[i].code : "(no code)");
}

static void test_addressing(void)
{
	check_url("http://127.0.0.1:9000", "demo", S3_ADDR_AUTO, "a/b c+d.txt",
		  "http://127.0.0.1:9000/demo/a/b%20c%2Bd.txt",
		  "/demo/a/b c+d.txt");
	check_url("http://127.0.0.1:9000/", "demo", S3_ADDR_AUTO, NULL,
		  "http://127.0.0.1:9000/demo", "/demo");
	check_url("http://localhost:9000", "demo", S3_ADDR_AUTO, "k",
		  "http://localhost:9000/demo/k", "/demo/k");
	check_url("http://[::1]:9000", "demo", S3_ADDR_AUTO, "k",
		  "http://[::1]:9000/demo/k", "/demo/k");
	check_url("https://s3.example.com", "demo", S3_ADDR_AUTO, "k=1&x",
		  "https://demo.s3.example.com/k%3D1%26x", "/k=1&x");
	check_url("https://s3.example.com", "demo", S3_ADDR_AUTO, NULL,
		  "https://demo.s3.example.com/", "/");
	check_url("https://s3.example.com", "My_Bucket", S3_ADDR_AUTO, "k",
		  "https://s3.example.com/My_Bucket/k", "/My_Bucket/k");
	check_url("https://s3.example.com", "a.b.c", S3_ADDR_AUTO, "k",
		  "https://s3.example.com/a.b.c/k", "/a.b.c/k");
	check_url("https://s3.example.com", "demo", S3_ADDR_PATH, "k",
		  "https://s3.example.com/demo/k", "/demo/k");
	check_url("http://127.0.0.1:9000", "demo", S3_ADDR_VHOST, "k",
		  "http://demo.127.0.0.1:9000/k", "/k");
	check_url("https://gw.example.com:8443/s3/", "demo", S3_ADDR_PATH,
		  "\xc3\xbc/x", "https://gw.example.com:8443/s3/demo/%C3%BC/x",
		  "/s3/demo/\xc3\xbc/x");
	check_url(NULL, "demo", S3_ADDR_AUTO, "k",
		  "https://demo.s3.amazonaws.com/k", "/k");
	check_url("http://127.0.0.1:9000", "demo", S3_ADDR_AUTO, "a//b/./../c",
		  "http://127.0.0.1:9000/demo/a//b/./../c",
		  "/demo/a//b/./../c");
}

static void test_bad_endpoints(void)
{
	static const char *const bad[] = {
		"127.0.0.1:9000",  "htp:/x",	      "ftp://host",
		"http://",	   "http://host:0",   "http://host:65536",
		"http://host:12a", "http://host:",    "http://user@host",
		"http://host?x=1", "http://host#f",   "http://ho st",
		"http://[::1",	   "http://host/%2e", "",
	};
	struct s3 *s = NULL;
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
		s = NULL;
		is_int(open_client(bad[i], "demo", S3_ADDR_AUTO, &s), -EINVAL,
		       "endpoint '%s' refused", bad[i]);
		s3_close(s);
	}
	is_int(open_client("https://s3.example.com", "a.b", S3_ADDR_VHOST, &s),
	       -EINVAL, "dotted bucket cannot be a TLS virtual host");
	is_int(open_client("http://h", "", S3_ADDR_AUTO, &s), -EINVAL,
	       "empty bucket refused");
	is_int(open_client("http://h", "a/b", S3_ADDR_AUTO, &s), -EINVAL,
	       "bucket with a slash refused");
}

static void test_part_size(void)
{
	struct s3_conf conf;
	struct s3 *s = NULL;

	s3_conf_defaults(&conf);
	conf.endpoint = "http://127.0.0.1:1";
	conf.bucket = "demo";
	conf.part_size = 1 << 20;
	is_int(s3_open(&conf, &anon, &s), -EINVAL, "1 MiB parts refused");
	conf.part_size = 6ull << 30;
	is_int(s3_open(&conf, &anon, &s), -EINVAL, "6 GiB parts refused");
	conf.part_size = 5u << 20;
	is_int(s3_open(&conf, &anon, &s), 0, "5 MiB parts accepted");
	s3_close(s);
}

int main(void)
{
	log_init("test_client", LOG_LVL_ERROR, false);
	test_errno_mapping();
	test_addressing();
	test_bad_endpoints();
	test_part_size();
	return done_testing();
}
