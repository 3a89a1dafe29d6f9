/*
 * test_xml.c - s3xml against captured and realistic S3 bodies.
 *
 * The bodies live in tests/unit/xml/.  Every body is parsed whole, one byte
 * at a time and in random splits, and the results (rendered as text by
 * render()) must be identical.  Then the fields are checked one by one, and
 * hostile or broken bodies must fail with the documented error.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "s3cachefs/buf.h"
#include "s3cachefs/s3xml.h"
#include "tap.h"

#define MAX S3_XML_MAX_LIST

struct body {
	char *data;
	size_t len;
};

static struct body load(const char *name)
{
	struct body b = { NULL, 0 };
	char path[512];
	FILE *f;
	long n;

	snprintf(path, sizeof(path), "%s/xml/%s", SRCDIR, name);
	f = fopen(path, "rb");
	if (!f) {
		diag("cannot open '%s'", path);
		exit(1);
	}
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fseek(f, 0, SEEK_SET);
	b.data = malloc((size_t)n + 1);
	if (!b.data || fread(b.data, 1, (size_t)n, f) != (size_t)n) {
		diag("cannot read '%s'", path);
		exit(1);
	}
	b.data[n] = '\0';
	b.len = (size_t)n;
	fclose(f);
	return b;
}

static const char *nz(const char *s)
{
	return s ? s : "(null)";
}

/* Take every result out of a finished parser and render it as text. */
static void render(enum s3_xml_kind kind, struct s3_xml *x, struct buf *out)
{
	if (s3_xml_is_error(x)) {
		struct s3_error_info e;

		if (s3_xml_take_error(x, &e) < 0) {
			buf_adds(out, "take_error failed\n");
			return;
		}
		buf_addf(out, "error %s|%s|%s|%s|%s\n", nz(e.code),
			 nz(e.message), nz(e.request_id), nz(e.region),
			 nz(e.endpoint));
		s3_error_info_release(&e);
		return;
	}
	switch (kind) {
	case S3_XML_LIST: {
		struct s3_list_page p;
		size_t i;

		if (s3_xml_take_list(x, &p) < 0) {
			buf_adds(out, "take_list failed\n");
			return;
		}
		for (i = 0; i < p.n_entries; i++)
			buf_addf(out, "entry %s|%s|%llu|%lld\n",
				 p.entries[i].key, nz(p.entries[i].etag),
				 (unsigned long long)p.entries[i].size,
				 (long long)p.entries[i].mtime);
		for (i = 0; i < p.n_prefixes; i++)
			buf_addf(out, "prefix %s\n", p.prefixes[i]);
		buf_addf(out, "truncated %d next %s\n", p.truncated,
			 nz(p.next_token));
		s3_list_page_release(&p);
		break;
	}
	case S3_XML_ERROR:
		buf_adds(out, "not an error\n");
		break;
	case S3_XML_INITIATE_MPU:
	case S3_XML_COMPLETE_MPU:
	case S3_XML_COPY: {
		char *s = NULL;

		if (s3_xml_take_string(x, &s) < 0) {
			buf_adds(out, "take_string failed\n");
			return;
		}
		buf_addf(out, "string %s\n", nz(s));
		free(s);
		break;
	}
	case S3_XML_DELETE: {
		struct s3_delete_failure *f = NULL;
		size_t n = 0, i;

		if (s3_xml_take_delete(x, &f, &n) < 0) {
			buf_adds(out, "take_delete failed\n");
			return;
		}
		for (i = 0; i < n; i++)
			buf_addf(out, "fail %s|%s|%s\n", f[i].key,
				 nz(f[i].code), nz(f[i].message));
		s3_delete_failures_free(f, n);
		break;
	}
	}
}

/* xorshift, so the random splits are the same on every run. */
static uint32_t rng_state;

static uint32_t rng(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 17;
	rng_state ^= rng_state << 5;
	return rng_state;
}

/*
 * Parse @b as @kind fed in pieces: whole when @step is 0, @step bytes at a
 * time when positive, random sizes up to -@step when negative.  Returns the
 * feed or finish error, or 0 with the results rendered into @out.
 */
static int parse_split(enum s3_xml_kind kind, const struct body *b, size_t max,
		       int step, struct buf *out)
{
	struct s3_xml *x = NULL;
	size_t off = 0;
	int rc;

	rc = s3_xml_new(kind, max, &x);
	if (rc < 0)
		return rc;
	while (off < b->len) {
		size_t n = b->len - off;

		if (step > 0 && n > (size_t)step)
			n = (size_t)step;
		else if (step < 0)
			/* Zero-length feeds included. */
			n = rng() % ((size_t)-step + 1);
		if (n > b->len - off)
			n = b->len - off;
		rc = s3_xml_feed(x, b->data + off, n);
		if (rc < 0)
			goto out;
		off += n;
	}
	rc = s3_xml_finish(x);
	if (rc == 0)
		render(kind, x, out);
out:
	s3_xml_free(x);
	return rc;
}

/* Every split of @name gives what parsing it whole gives. */
static void check_splits(const char *name, enum s3_xml_kind kind, int want_rc)
{
	struct body b = load(name);
	struct buf whole = BUF_INIT(BUF_NO_LIMIT);
	struct buf part = BUF_INIT(BUF_NO_LIMIT);
	int rc, i, same = 1;

	rc = parse_split(kind, &b, MAX, 0, &whole);
	is_int(rc, want_rc, "%s: parses whole with %d", name, want_rc);
	rc = parse_split(kind, &b, MAX, 1, &part);
	is_int(rc, want_rc, "%s: one byte at a time gives %d", name, want_rc);
	is_str(buf_str(&part), buf_str(&whole),
	       "%s: one byte at a time gives the same results", name);
	rng_state = 2463534242u;
	for (i = 0; i < 50; i++) {
		buf_reset(&part);
		rc = parse_split(kind, &b, MAX, i % 2 ? -7 : -64, &part);
		if (rc != want_rc || strcmp(buf_str(&part), buf_str(&whole))) {
			diag("split run %d: rc %d\n%s", i, rc, buf_str(&part));
			same = 0;
		}
	}
	ok(same, "%s: 50 random splits give the same results", name);
	buf_release(&whole);
	buf_release(&part);
	free(b.data);
}

/* Parse the file @name whole; *@x is the parser on success. */
static int parse_file(const char *name, enum s3_xml_kind kind,
		      struct s3_xml **x)
{
	struct body b = load(name);
	int rc = s3_xml_parse(kind, b.data, b.len, MAX, x);

	free(b.data);
	return rc;
}

static int parse_str(const char *s, enum s3_xml_kind kind, size_t max)
{
	struct s3_xml *x = NULL;
	int rc = s3_xml_parse(kind, s, strlen(s), max, &x);

	s3_xml_free(x);
	return rc;
}

static void test_list_v2(void)
{
	struct s3_xml *x = NULL;
	struct s3_list_page p;
	char *s = (char *)"untouched";

	is_int(parse_file("list_v2.xml", S3_XML_LIST, &x), 0, "v2 parses");
	ok(!s3_xml_is_error(x), "v2 is not an error");
	is_int(s3_xml_take_string(x, &s), -EINVAL, "v2: take_string refused");
	is_str(s, "untouched", "v2: refused take leaves out alone");
	is_int(s3_xml_take_list(x, &p), 0, "v2: take_list");
	is_int(p.n_entries, 3, "v2: three entries");
	is_str(p.entries[0].key, "photos/2006/index.html", "v2: key 0");
	is_str(p.entries[0].etag, "\"fba9dede5f27731c9771645a39863328\"",
	       "v2: etag keeps its quotes");
	is_int(p.entries[0].size, 434234, "v2: size 0");
	is_int(p.entries[0].mtime, 1255369830, "v2: mtime 0");
	is_str(p.entries[1].key, "photos/a&b <c>.jpg",
	       "v2: entities decoded in key");
	is_int(p.entries[1].size, 17179869184ll, "v2: 16 GiB size");
	is_int(p.entries[1].mtime, 1709251199, "v2: leap day mtime");
	is_str(p.entries[1].etag, "\"9b2cf535f27731c974343645a3985328-3\"",
	       "v2: multipart etag");
	is_int(p.entries[2].size, 0, "v2: empty object");
	is_int(p.entries[2].mtime, 0, "v2: epoch mtime");
	is_int(p.n_prefixes, 2, "v2: two common prefixes, not the request one");
	is_str(p.prefixes[0], "photos/2006/", "v2: prefix 0");
	is_str(p.prefixes[1], "photos/2007/", "v2: prefix 1");
	ok(p.truncated, "v2: truncated");
	is_str(p.next_token, "1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=",
	       "v2: continuation token");
	s3_list_page_release(&p);
	ok(p.entries == NULL && p.n_entries == 0 && p.next_token == NULL,
	   "release zeroes the page");
	s3_list_page_release(&p);
	s3_list_page_release(NULL);
	is_int(s3_xml_take_list(x, &p), 0, "second take gives an empty page");
	ok(p.n_entries == 0 && p.entries == NULL && p.next_token == NULL,
	   "the parser kept nothing");
	s3_xml_free(x);
}

static void test_list_v1(void)
{
	struct s3_xml *x = NULL;
	struct s3_list_page p;

	is_int(parse_file("list_v1.xml", S3_XML_LIST, &x), 0, "v1 parses");
	is_int(s3_xml_take_list(x, &p), 0, "v1: take_list");
	is_int(p.n_entries, 1, "v1: one entry");
	is_str(p.entries[0].key, "my-second-image.jpg", "v1: key");
	is_int(p.entries[0].size, 434234, "v1: size with indentation");
	is_int(p.n_prefixes, 1, "v1: one prefix");
	is_str(p.prefixes[0], "my-third-image.jpg/", "v1: prefix");
	ok(p.truncated, "v1: truncated");
	is_str(p.next_token, "my-third-image.jpg",
	       "v1: NextMarker is the token");
	s3_list_page_release(&p);
	s3_xml_free(x);
}

static void test_list_encoded(void)
{
	static const char *const keys[] = {
		"dir one/my file (1).txt",
		"dir one/caf\xc3\xa9-\xe2\x9c\x93-\xf0\x9f\x98\x80",
		"dir one/a+b",
		"dir one/100%",
		"dir one/k=v&x=y",
	};
	struct s3_xml *x = NULL;
	struct s3_list_page p;
	size_t i;

	is_int(parse_file("list_encoded.xml", S3_XML_LIST, &x), 0,
	       "url-encoded listing parses");
	is_int(s3_xml_take_list(x, &p), 0, "encoded: take_list");
	is_int(p.n_entries, 5, "encoded: five entries");
	for (i = 0; i < 5 && i < p.n_entries; i++)
		is_str(p.entries[i].key, keys[i], "encoded: key %zu", i);
	is_int(p.n_prefixes, 2, "encoded: two prefixes");
	is_str(p.prefixes[0], "dir one/sub dir/", "encoded: prefix 0");
	is_str(p.prefixes[1], "dir one/\xe6\x97\xa5\xe6\x9c\xac/",
	       "encoded: prefix 1");
	ok(!p.truncated, "encoded: not truncated");
	is_str(p.next_token, NULL, "encoded: no token");
	s3_list_page_release(&p);
	s3_xml_free(x);

	/* V1 encodes NextMarker too; EncodingType may come first. */
	{
		static const char body[] =
			"<ListBucketResult><EncodingType>url</EncodingType>"
			"<IsTruncated>true</IsTruncated>"
			"<NextMarker>a+b%2Bc</NextMarker>"
			"<Contents><Key>a+b%2Bc</Key></Contents>"
			"</ListBucketResult>";

		is_int(s3_xml_parse(S3_XML_LIST, body, strlen(body), MAX, &x),
		       0, "encoded v1 parses");
		is_int(s3_xml_take_list(x, &p), 0, "encoded v1: take");
		is_str(p.entries[0].key, "a b+c", "encoded v1: key");
		is_str(p.next_token, "a b+c", "encoded v1: NextMarker decoded");
		s3_list_page_release(&p);
		s3_xml_free(x);
	}

	is_int(parse_str("<ListBucketResult><Contents><Key>a%zz</Key>"
			 "</Contents><EncodingType>url</EncodingType>"
			 "</ListBucketResult>",
			 S3_XML_LIST, MAX),
	       -EPROTO, "bad escape in an encoded key");
	{
		/* a key or prefix decoding to a NUL is left out, the rest
		 * stays, also when a bad escape follows it */
		static const char body[] =
			"<ListBucketResult><Contents><Key>a%00b</Key></"
			"Contents>"
			"<Contents><Key>ok%41</Key></Contents>"
			"<Contents><Key>%00</Key></Contents>"
			"<CommonPrefixes><Prefix>p%00/</Prefix></"
			"CommonPrefixes>"
			"<CommonPrefixes><Prefix>q/</Prefix></CommonPrefixes>"
			"<EncodingType>url</EncodingType></ListBucketResult>";

		is_int(s3_xml_parse(S3_XML_LIST, body, strlen(body), MAX, &x),
		       0, "keys decoding to a NUL: parses");
		is_int(s3_xml_take_list(x, &p), 0, "NUL keys: take");
		is_int(p.n_entries, 1, "NUL keys: one entry left");
		is_str(p.n_entries ? p.entries[0].key : NULL, "okA",
		       "NUL keys: the other key");
		is_int(p.n_prefixes, 1, "NUL keys: one prefix left");
		is_str(p.n_prefixes ? p.prefixes[0] : NULL, "q/",
		       "NUL keys: the other prefix");
		s3_list_page_release(&p);
		s3_xml_free(x);
	}
	is_int(parse_str("<ListBucketResult><Contents><Key>a%00b</Key>"
			 "</Contents><Contents><Key>ok</Key></Contents>"
			 "<Contents><Key>a%zz</Key></Contents>"
			 "<EncodingType>url</EncodingType></ListBucketResult>",
			 S3_XML_LIST, MAX),
	       -EPROTO, "bad escape after a NUL key");
	is_int(parse_str("<ListBucketResult><CommonPrefixes><Prefix>a%2"
			 "</Prefix></CommonPrefixes>"
			 "<EncodingType>url</EncodingType></ListBucketResult>",
			 S3_XML_LIST, MAX),
	       -EPROTO, "truncated escape in an encoded prefix");
	is_int(parse_str("<ListBucketResult><EncodingType>base64</EncodingType>"
			 "</ListBucketResult>",
			 S3_XML_LIST, MAX),
	       -EPROTO, "unknown encoding type");
	{
		static const char body[] =
			"<ListBucketResult><Contents><Key>a+b%2Bc</Key>"
			"</Contents></ListBucketResult>";

		is_int(s3_xml_parse(S3_XML_LIST, body, strlen(body), MAX, &x),
		       0, "plain listing parses");
		is_int(s3_xml_take_list(x, &p), 0, "plain: take");
		is_str(p.entries[0].key, "a+b%2Bc",
		       "without EncodingType keys stay as sent");
		s3_list_page_release(&p);
		s3_xml_free(x);
	}
}

static void test_list_misc(void)
{
	struct s3_xml *x = NULL;
	struct s3_list_page p;
	static const char prefixed[] =
		"<s3:ListBucketResult xmlns:s3=\"http://s3.amazonaws.com/doc/"
		"2006-03-01/\"><s3:Prefix>req/</s3:Prefix><s3:Contents>"
		"<s3:Key>req/k</s3:Key><s3:Size>7</s3:Size></s3:Contents>"
		"<s3:NextMarker>m</s3:NextMarker>"
		"<s3:NextContinuationToken>t</s3:NextContinuationToken>"
		"</s3:ListBucketResult>";

	is_int(parse_file("list_empty.xml", S3_XML_LIST, &x), 0,
	       "empty listing parses");
	is_int(s3_xml_take_list(x, &p), 0, "empty: take");
	ok(p.n_entries == 0 && p.entries == NULL && p.n_prefixes == 0 &&
		   p.prefixes == NULL && !p.truncated && !p.next_token,
	   "empty: nothing at all");
	s3_list_page_release(&p);
	s3_xml_free(x);

	is_int(s3_xml_parse(S3_XML_LIST, prefixed, strlen(prefixed), MAX, &x),
	       0, "namespace-prefixed listing parses");
	is_int(s3_xml_take_list(x, &p), 0, "prefixed: take");
	is_int(p.n_entries, 1, "prefixed: one entry");
	is_str(p.entries[0].key, "req/k", "prefixed: key");
	is_str(p.entries[0].etag, NULL, "prefixed: absent ETag is NULL");
	is_int(p.entries[0].size, 7, "prefixed: size");
	is_int(p.n_prefixes, 0, "prefixed: request Prefix is not a prefix");
	is_str(p.next_token, "t", "continuation token wins over NextMarker");
	s3_list_page_release(&p);
	s3_xml_free(x);

	is_int(parse_str("<ListBucketResult><Contents><Key>k</Key><Size>"
			 "18446744073709551615</Size></Contents>"
			 "</ListBucketResult>",
			 S3_XML_LIST, MAX),
	       0, "largest size");
	is_int(parse_str("<ListBucketResult><Contents><Key>k</Key><Size>"
			 "18446744073709551616</Size></Contents>"
			 "</ListBucketResult>",
			 S3_XML_LIST, MAX),
	       -EPROTO, "size overflow");
	is_int(parse_str("<ListBucketResult><Contents><Key>k</Key>"
			 "<Size>12a</Size></Contents></ListBucketResult>",
			 S3_XML_LIST, MAX),
	       -EPROTO, "non-numeric size");
	is_int(parse_str("<ListBucketResult><Contents><Key>k</Key>"
			 "<Size>-1</Size></Contents></ListBucketResult>",
			 S3_XML_LIST, MAX),
	       -EPROTO, "negative size");
	is_int(parse_str("<ListBucketResult><Contents><Key>k</Key>"
			 "<Size></Size></Contents></ListBucketResult>",
			 S3_XML_LIST, MAX),
	       -EPROTO, "empty size");
	is_int(parse_str("<ListBucketResult><Contents><Key>k</Key>"
			 "<LastModified>yesterday</LastModified></Contents>"
			 "</ListBucketResult>",
			 S3_XML_LIST, MAX),
	       -EPROTO, "bad LastModified");
	is_int(parse_str("<ListBucketResult><IsTruncated>maybe</IsTruncated>"
			 "</ListBucketResult>",
			 S3_XML_LIST, MAX),
	       -EPROTO, "bad IsTruncated");
	is_int(parse_str("<ListBucketResult><Contents><Size>1</Size>"
			 "</Contents></ListBucketResult>",
			 S3_XML_LIST, MAX),
	       -EPROTO, "entry without a key");
	is_int(parse_str("<ListBucketResult><CommonPrefixes>"
			 "</CommonPrefixes></ListBucketResult>",
			 S3_XML_LIST, MAX),
	       -EPROTO, "common prefix without a prefix");
	is_int(parse_str("<ListBucketResult><Contents><Key>a<b/></Key>"
			 "</Contents></ListBucketResult>",
			 S3_XML_LIST, MAX),
	       -EPROTO, "element inside a key");
	is_int(parse_str("<ListAllMyBucketsResult></ListAllMyBucketsResult>",
			 S3_XML_LIST, MAX),
	       -EPROTO, "wrong root for a listing");
}

static void check_error(const char *name, enum s3_xml_kind kind,
			const char *code, const char *message,
			const char *request_id, const char *region,
			const char *endpoint)
{
	struct s3_xml *x = NULL;
	struct s3_error_info e;
	struct s3_list_page p;

	is_int(parse_file(name, kind, &x), 0, "%s parses", name);
	ok(s3_xml_is_error(x), "%s: is an error", name);
	is_int(s3_xml_take_list(x, &p), -EINVAL, "%s: not a listing", name);
	is_int(s3_xml_take_error(x, &e), 0, "%s: take_error", name);
	is_str(e.code, code, "%s: code", name);
	is_str(e.message, message, "%s: message", name);
	is_str(e.request_id, request_id, "%s: request id", name);
	is_str(e.region, region, "%s: region", name);
	is_str(e.endpoint, endpoint, "%s: endpoint", name);
	s3_error_info_release(&e);
	ok(!e.code && !e.message && !e.request_id, "%s: release zeroes", name);
	s3_error_info_release(NULL);
	s3_xml_free(x);
}

static void test_errors(void)
{
	struct s3_xml *x = NULL;

	check_error("error_nosuchkey.xml", S3_XML_ERROR, "NoSuchKey",
		    "The specified key does not exist.", "4442587FB7D0A2F9",
		    NULL, NULL);
	check_error("error_nosuchbucket.xml", S3_XML_LIST, "NoSuchBucket",
		    "The specified bucket does not exist", "R7XK8ZQ2M3N4P5Q6",
		    NULL, NULL);
	check_error("error_authheader.xml", S3_XML_LIST,
		    "AuthorizationHeaderMalformed",
		    "The authorization header is malformed; the region "
		    "'us-east-1' is wrong; expecting 'eu-west-1'",
		    "9D3E5B6A1C2F4E70", "eu-west-1", NULL);
	check_error("error_redirect.xml", S3_XML_ERROR, "PermanentRedirect",
		    "The bucket you are attempting to access must be addressed "
		    "using the specified endpoint. Please send all future "
		    "requests to this endpoint.",
		    "0A1B2C3D4E5F6A7B", NULL,
		    "example-bucket.s3.eu-central-1.amazonaws.com");
	check_error("error_slowdown.xml", S3_XML_DELETE, "SlowDown",
		    "Please reduce your request rate.", "1F2E3D4C5B6A7988",
		    NULL, NULL);
	check_error("complete_error.xml", S3_XML_COMPLETE_MPU, "InternalError",
		    "We encountered an internal error. Please try again.",
		    "656c76696e6727732072657175657374", NULL, NULL);
	is_int(parse_file("list_v2.xml", S3_XML_ERROR, &x), -EPROTO,
	       "a listing is not an error body");
	ok(x == NULL, "failed parse leaves out alone");
}

static void check_string(const char *name, enum s3_xml_kind kind,
			 const char *want)
{
	struct s3_xml *x = NULL;
	struct s3_error_info e;
	char *s = NULL;

	is_int(parse_file(name, kind, &x), 0, "%s parses", name);
	ok(!s3_xml_is_error(x), "%s: not an error", name);
	is_int(s3_xml_take_error(x, &e), -EINVAL, "%s: no error to take", name);
	is_int(s3_xml_take_string(x, &s), 0, "%s: take_string", name);
	is_str(s, want, "%s: value", name);
	free(s);
	is_int(s3_xml_take_string(x, &s), 0, "%s: take again", name);
	is_str(s, NULL, "%s: the parser kept nothing", name);
	s3_xml_free(x);
}

static void test_results(void)
{
	struct s3_xml *x = NULL;
	struct s3_delete_failure *f = NULL, sentinel;
	size_t n = 99;

	check_string(
		"initiate.xml", S3_XML_INITIATE_MPU,
		"VXBsb2FkIElEIGZvciA2aWWpbmcncyBteS1tb3ZpZS5tMnRzIHVwbG9hZA");
	check_string("complete.xml", S3_XML_COMPLETE_MPU,
		     "\"3858f62230ac3c915f300c664312c11f-9\"");
	check_string("copy_object.xml", S3_XML_COPY,
		     "\"9b2cf535f27731c974343645a3985328\"");
	check_string("copy_part.xml", S3_XML_COPY,
		     "\"9b2cf535f27731c974343645a3985328\"");
	is_int(parse_file("copy_object.xml", S3_XML_COMPLETE_MPU, &x), -EPROTO,
	       "copy result is not a complete result");
	is_int(parse_file("initiate.xml", S3_XML_COPY, &x), -EPROTO,
	       "initiate result is not a copy result");
	is_int(parse_str("<CompleteMultipartUploadResult><Key>k</Key>"
			 "</CompleteMultipartUploadResult>",
			 S3_XML_COMPLETE_MPU, MAX),
	       0, "complete result without an ETag parses");

	is_int(parse_file("delete.xml", S3_XML_DELETE, &x), 0,
	       "delete result parses");
	is_int(s3_xml_take_delete(x, &f, &n), 0, "delete: take");
	is_int(n, 2, "delete: two failures, deleted keys ignored");
	if (n == 2) {
		is_str(f[0].key, "sample2.txt", "delete: key 0");
		is_str(f[0].code, "AccessDenied", "delete: code 0");
		is_str(f[0].message, "Access Denied", "delete: message 0");
		is_str(f[1].key, "locked/file.bin", "delete: key 1");
		is_str(f[1].code, "InternalError", "delete: code 1");
	}
	s3_delete_failures_free(f, n);
	s3_delete_failures_free(NULL, 0);
	s3_xml_free(x);

	is_int(parse_file("delete_ok.xml", S3_XML_DELETE, &x), 0,
	       "all-deleted result parses");
	f = &sentinel;
	is_int(s3_xml_take_delete(x, &f, &n), 0, "all-deleted: take");
	ok(f == NULL && n == 0, "all-deleted: no failures");
	s3_xml_free(x);
}

static void test_hostile(void)
{
	struct body b;
	struct buf big = BUF_INIT(BUF_NO_LIMIT);
	struct s3_xml *x = NULL;
	int i;

	is_int(parse_file("billion_laughs.xml", S3_XML_ERROR, &x), -EPROTO,
	       "billion laughs refused");
	is_int(parse_file("xxe.xml", S3_XML_ERROR, &x), -EPROTO,
	       "external entity refused");
	is_int(parse_str("<!DOCTYPE Error><Error><Code>c</Code></Error>",
			 S3_XML_ERROR, MAX),
	       -EPROTO, "any DOCTYPE refused");
	is_int(parse_str("<Error><Code>&foo;</Code></Error>", S3_XML_ERROR,
			 MAX),
	       -EPROTO, "undefined entity");
	is_int(parse_str("<Error><Code>&#0;</Code></Error>", S3_XML_ERROR, MAX),
	       -EPROTO, "NUL character reference");
	is_int(parse_str("", S3_XML_ERROR, MAX), -EPROTO, "empty body");
	is_int(parse_str("   \n", S3_XML_LIST, MAX), -EPROTO,
	       "whitespace-only body");
	is_int(parse_str("<Error><Code>x</Code>", S3_XML_ERROR, MAX), -EPROTO,
	       "truncated body");
	is_int(parse_str("<Error><Code>x</Cod></Error>", S3_XML_ERROR, MAX),
	       -EPROTO, "mismatched tag");
	is_int(parse_str("<Error></Error><Error></Error>", S3_XML_ERROR, MAX),
	       -EPROTO, "two roots");
	is_int(parse_str("<Error a='1' a='2'></Error>", S3_XML_ERROR, MAX),
	       -EPROTO, "duplicate attribute");
	is_int(parse_str("HTTP/1.1 500 oops", S3_XML_ERROR, MAX), -EPROTO,
	       "not XML at all");
	is_int(parse_str("<Foo/>", S3_XML_ERROR, MAX), -EPROTO,
	       "wrong root for an error");
	is_int(parse_str("<DeleteResult/>", S3_XML_LIST, MAX), -EPROTO,
	       "wrong root for a listing");

	b = load("list_v2.xml");
	is_int(s3_xml_parse(S3_XML_LIST, b.data, b.len, b.len, &x), 0,
	       "body of exactly max_bytes");
	s3_xml_free(x);
	x = NULL;
	is_int(s3_xml_parse(S3_XML_LIST, b.data, b.len, b.len - 1, &x),
	       -EMSGSIZE, "one byte over max_bytes");
	ok(x == NULL, "failed parse leaves out alone");
	is_int(s3_xml_new(S3_XML_LIST, 100, &x), 0, "new");
	is_int(s3_xml_feed(x, b.data, 60), 0, "first 60 bytes fit");
	is_int(s3_xml_feed(x, b.data + 60, 60), -EMSGSIZE, "next 60 do not");
	is_int(s3_xml_feed(x, b.data + 60, 1), -EMSGSIZE, "sticky on feed");
	is_int(s3_xml_finish(x), -EMSGSIZE, "sticky on finish");
	ok(!s3_xml_is_error(x), "failed parse is not an error body");
	{
		struct s3_list_page p;

		is_int(s3_xml_take_list(x, &p), -EINVAL,
		       "no take after a failure");
	}
	s3_xml_free(x);

	is_int(s3_xml_new(S3_XML_LIST, MAX, &x), 0, "new");
	is_int(s3_xml_feed(x, "<Nope>", 6), -EPROTO, "wrong root at feed");
	is_int(s3_xml_feed(x, b.data, b.len), -EPROTO, "sticky -EPROTO");
	is_int(s3_xml_finish(x), -EPROTO, "sticky -EPROTO at finish");
	s3_xml_free(x);

	is_int(s3_xml_new(S3_XML_LIST, MAX, &x), 0, "new");
	{
		struct s3_list_page p;

		is_int(s3_xml_feed(x, b.data, b.len), 0, "feed");
		is_int(s3_xml_take_list(x, &p), -EINVAL,
		       "no take before finish");
		is_int(s3_xml_finish(x), 0, "finish");
		is_int(s3_xml_finish(x), 0, "finish twice");
		is_int(s3_xml_feed(x, " ", 1), -EINVAL, "no feed after finish");
	}
	s3_xml_free(x);
	s3_xml_free(NULL);
	free(b.data);

	/* A 100 KiB key passes the 64 KiB field bound. */
	buf_adds(&big, "<ListBucketResult><Contents><Key>");
	for (i = 0; i < 100 * 1024; i++)
		buf_addc(&big, 'k');
	buf_adds(&big, "</Key></Contents></ListBucketResult>");
	is_int(parse_str(buf_str(&big), S3_XML_LIST, MAX), -EMSGSIZE,
	       "huge key refused");
	/* Text that is not kept is not bounded by it. */
	buf_reset(&big);
	buf_adds(&big, "<ListBucketResult><Contents><Key>k</Key><Owner>"
		       "<DisplayName>");
	for (i = 0; i < 100 * 1024; i++)
		buf_addc(&big, 'd');
	buf_adds(&big, "</DisplayName></Owner></Contents></ListBucketResult>");
	is_int(parse_str(buf_str(&big), S3_XML_LIST, MAX), 0,
	       "huge ignored field is fine");
	/* Deep nesting is refused long before it costs memory. */
	buf_reset(&big);
	buf_adds(&big, "<ListBucketResult>");
	for (i = 0; i < 100000; i++)
		buf_adds(&big, "<a>");
	is_int(parse_str(buf_str(&big), S3_XML_LIST, MAX), -EPROTO,
	       "deep nesting refused");
	/* Many entries are fine as long as the body fits. */
	buf_reset(&big);
	buf_adds(&big, "<ListBucketResult>");
	for (i = 0; i < 5000; i++)
		buf_addf(&big,
			 "<Contents><Key>k%d</Key><Size>%d</Size>"
			 "</Contents>",
			 i, i);
	buf_adds(&big, "</ListBucketResult>");
	{
		struct s3_list_page p;

		is_int(s3_xml_parse(S3_XML_LIST, big.data, big.len, MAX, &x), 0,
		       "5000 entries parse");
		is_int(s3_xml_take_list(x, &p), 0, "take 5000");
		is_int(p.n_entries, 5000, "5000 entries");
		is_str(p.entries[4999].key, "k4999", "last key");
		is_int(p.entries[4999].size, 4999, "last size");
		s3_list_page_release(&p);
		s3_xml_free(x);
	}
	buf_release(&big);
}

int main(void)
{
	static const struct {
		const char *name;
		enum s3_xml_kind kind;
		int rc;
	} files[] = {
		{ "list_v2.xml", S3_XML_LIST, 0 },
		{ "list_v1.xml", S3_XML_LIST, 0 },
		{ "list_encoded.xml", S3_XML_LIST, 0 },
		{ "list_empty.xml", S3_XML_LIST, 0 },
		{ "error_nosuchkey.xml", S3_XML_ERROR, 0 },
		{ "error_nosuchbucket.xml", S3_XML_LIST, 0 },
		{ "error_authheader.xml", S3_XML_ERROR, 0 },
		{ "error_redirect.xml", S3_XML_LIST, 0 },
		{ "error_slowdown.xml", S3_XML_ERROR, 0 },
		{ "complete_error.xml", S3_XML_COMPLETE_MPU, 0 },
		{ "initiate.xml", S3_XML_INITIATE_MPU, 0 },
		{ "complete.xml", S3_XML_COMPLETE_MPU, 0 },
		{ "copy_object.xml", S3_XML_COPY, 0 },
		{ "copy_part.xml", S3_XML_COPY, 0 },
		{ "delete.xml", S3_XML_DELETE, 0 },
		{ "delete_ok.xml", S3_XML_DELETE, 0 },
		{ "billion_laughs.xml", S3_XML_ERROR, -EPROTO },
		{ "xxe.xml", S3_XML_ERROR, -EPROTO },
		{ "list_v2.xml", S3_XML_COPY, -EPROTO },
	};
	size_t i;

	plan_lazy();
	for (i = 0; i < sizeof(files) / sizeof(files[0]); i++)
		check_splits(files[i].name, files[i].kind, files[i].rc);
	test_list_v2();
	test_list_v1();
	test_list_encoded();
	test_list_misc();
	test_errors();
	test_results();
	test_hostile();
	return done_testing();
}
