/*
 * test_retry.c - the retry policy: what is transient, the backoff ceilings
 * and jitter bounds, attempt and deadline limits.
 */
#include <errno.h>
#include <stdint.h>

#include "s3cachefs/retry.h"
#include "tap.h"

static void test_transient(void)
{
	ok(retry_is_transient(-ECONNREFUSED, 0, NULL), "refused is transient");
	ok(retry_is_transient(-ECONNRESET, 0, NULL), "reset is transient");
	ok(retry_is_transient(-ETIMEDOUT, 0, NULL), "timeout is transient");
	ok(retry_is_transient(-EPIPE, 0, NULL), "short body is transient");
	ok(!retry_is_transient(-EACCES, 0, NULL), "tls trust is final");
	ok(!retry_is_transient(-EINVAL, 0, NULL), "bad url is final");
	ok(!retry_is_transient(-ENOMEM, 0, NULL), "enomem is final");
	ok(retry_is_transient(0, 500, "InternalError"), "500 InternalError");
	ok(retry_is_transient(0, 503, "SlowDown"), "503 SlowDown");
	ok(retry_is_transient(0, 503, NULL), "503 without body");
	ok(retry_is_transient(0, 502, NULL), "502");
	ok(retry_is_transient(0, 504, NULL), "504");
	ok(retry_is_transient(0, 400, "RequestTimeout"),
	   "400 RequestTimeout is transient");
	ok(retry_is_transient(0, 403, "RequestTimeTooSkewed"),
	   "clock skew is re-signed and retried");
	ok(!retry_is_transient(0, 400, "InvalidArgument"), "400 is final");
	ok(!retry_is_transient(0, 403, "AccessDenied"), "403 is final");
	ok(!retry_is_transient(0, 404, "NoSuchKey"), "404 is final");
	ok(!retry_is_transient(0, 412, "PreconditionFailed"), "412 is final");
	ok(!retry_is_transient(0, 501, "NotImplemented"), "501 is final");
	ok(!retry_is_transient(0, 200, NULL), "200 is not retried");
}

static void test_backoff(void)
{
	struct retry_conf c = { .max_attempts = 6,
				.base_ms = 100,
				.cap_ms = 2000,
				.deadline_ms = 0 };
	unsigned a;

	/* the largest draw shows the ceiling: base * 2^(attempt-1), capped */
	is_int(retry_backoff_ms(&c, 1, false, UINT64_MAX - (UINT64_MAX % 101)),
	       0, "draw of 0 mod ceiling+1 gives 0");
	is_int(retry_backoff_ms(&c, 1, false, 100), 100,
	       "attempt 1 ceiling 100");
	is_int(retry_backoff_ms(&c, 2, false, 200), 200,
	       "attempt 2 ceiling 200");
	is_int(retry_backoff_ms(&c, 3, false, 400), 400,
	       "attempt 3 ceiling 400");
	is_int(retry_backoff_ms(&c, 3, false, 401), 0,
	       "draw wraps past ceiling");
	is_int(retry_backoff_ms(&c, 10, false, 2000), 2000, "capped at 2000");
	is_int(retry_backoff_ms(&c, 10, false, 2001), 0, "never above the cap");
	is_int(retry_backoff_ms(&c, 1, true, 400), 400,
	       "throttling starts four times higher");
	for (a = 1; a < 40; a++) {
		uint64_t r = 0x9e3779b97f4a7c15ULL * a;
		uint32_t ms = retry_backoff_ms(&c, a, a & 1, r);

		if (!ok(ms <= 2000, "attempt %u draw within cap", a))
			diag("got %u", ms);
	}
}

static void test_limits(void)
{
	struct retry_conf c = { .max_attempts = 3,
				.base_ms = 100,
				.cap_ms = 1000,
				.deadline_ms = 5000 };

	ok(retry_may_continue(&c, 1, 0, 100), "second attempt allowed");
	ok(retry_may_continue(&c, 2, 0, 100), "third attempt allowed");
	ok(!retry_may_continue(&c, 3, 0, 100), "no fourth attempt");
	ok(!retry_may_continue(&c, 1, 4950, 100), "sleep would pass deadline");
	ok(retry_may_continue(&c, 1, 4800, 100), "within the deadline");
	c.deadline_ms = 0;
	ok(retry_may_continue(&c, 1, 1000000, 100), "no deadline set");
}

int main(void)
{
	test_transient();
	test_backoff();
	test_limits();
	return done_testing();
}
