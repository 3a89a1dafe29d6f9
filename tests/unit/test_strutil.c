/*
 * test_strutil.c - percent-encoding both ways, hex, SHA-256, the two time
 * formats S3 uses, UTF-8 validation.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "s3cachefs/buf.h"
#include "s3cachefs/strutil.h"
#include "tap.h"

static void check_encode(const char *in, bool slash, const char *want)
{
	struct buf b = BUF_INIT(BUF_NO_LIMIT);

	is_int(uri_encode(&b, in, strlen(in), slash), 0, "encode '%s'", in);
	is_str(buf_str(&b), want, "encoded '%s'", in);
	buf_release(&b);
}

static void check_decode(const char *in, bool plus, int want_rc,
			 const char *want)
{
	char *out = NULL;
	int rc = uri_decode(in, strlen(in), plus, &out, NULL);

	is_int(rc, want_rc, "decode '%s' rc", in);
	if (rc == 0)
		is_str(out, want, "decoded '%s'", in);
	free(out);
}

int main(void)
{
	unsigned char raw[] = { 0x00, 0x0f, 0xa5, 0xff };
	char hex[9], sha[65], date[17];
	int64_t t;

	hex_encode(raw, 4, hex);
	is_str(hex, "000fa5ff", "hex");
	sha256_hex("", 0, sha);
	is_str(sha,
	       "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85"
	       "5",
	       "sha256 of nothing");
	sha256_hex("abc", 3, sha);
	is_str(sha,
	       "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015a"
	       "d",
	       "sha256 of abc");

	check_encode("AZaz09-._~", false, "AZaz09-._~");
	check_encode("a b+c%d=e&f", true, "a%20b%2Bc%25d%3De%26f");
	check_encode("dir/sub/file", true, "dir/sub/file");
	check_encode("dir/sub", false, "dir%2Fsub");
	check_encode("\xc3\xbc", true, "%C3%BC");
	check_encode("*'()!$", true, "%2A%27%28%29%21%24");

	check_decode("a+b%2Bc%25", true, 0, "a b+c%");
	check_decode("a+b", false, 0, "a+b");
	check_decode("%C3%BC%e6%97%a5", false, 0, "\xc3\xbc\xe6\x97\xa5");
	check_decode("%", false, -EINVAL, NULL);
	check_decode("%4", false, -EINVAL, NULL);
	check_decode("%zz", false, -EINVAL, NULL);
	check_decode("%00", false, -EINVAL, NULL);
	check_decode("", false, 0, "");

	is_int(parse_iso8601("2009-10-12T17:50:30.000Z", &t), 0, "iso8601");
	is_int(t, 1255369830, "iso8601 value");
	is_int(parse_iso8601("2009-10-12T17:50:30Z", &t), 0, "no fraction");
	is_int(t, 1255369830, "no fraction value");
	is_int(parse_iso8601("2009-10-12 17:50:30", &t), -EINVAL, "no zone");
	is_int(parse_iso8601("2009-13-12T17:50:30Z", &t), -EINVAL, "month 13");
	is_int(parse_iso8601("garbage", &t), -EINVAL, "garbage");
	is_int(parse_http_date("Mon, 12 Oct 2009 17:50:30 GMT", &t), 0,
	       "http date");
	is_int(t, 1255369830, "http date value");
	is_int(parse_http_date("Mon, 12 Foo 2009 17:50:30 GMT", &t), -EINVAL,
	       "bad month name");
	is_int(parse_http_date("Mon, 12 Oct 2009 17:50:30 UTC", &t), -EINVAL,
	       "zone must be GMT");
	format_amz_date(1440938160, date);
	is_str(date, "20150830T123600Z", "amz date");

	ok(utf8_valid("plain", 5), "ascii is utf-8");
	ok(utf8_valid("\xe6\x97\xa5\xf0\x9f\x98\x80", 7), "cjk and emoji");
	ok(!utf8_valid("\xc0\xaf", 2), "overlong refused");
	ok(!utf8_valid("\xed\xa0\x80", 3), "surrogate refused");
	ok(!utf8_valid("\xe6\x97", 2), "truncated refused");
	ok(!utf8_valid("\xff", 1), "0xff refused");
	ok(mem_equal_ct("abc", "abc", 3) && !mem_equal_ct("abc", "abd", 3),
	   "constant-time compare");
	return done_testing();
}
