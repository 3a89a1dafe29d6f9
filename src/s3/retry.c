/*
 * retry.c - which outcomes are transient, and capped exponential backoff
 * with full jitter (the AWS architecture blog's "full jitter": sleep a
 * uniform draw below the ceiling, so clients that failed together do not
 * retry together).
 */
#include <errno.h>
#include <string.h>

#include "s3cachefs/retry.h"

static const char *const transient_codes[] = {
	"SlowDown",	      "RequestTimeout",	     "InternalError",
	"ServiceUnavailable", "OperationAborted",    "RequestTimeTooSkewed",
	"Throttling",	      "ThrottlingException", "RequestLimitExceeded",
	"BadDigest",
};

bool retry_is_transient(int rc, long status, const char *s3_code)
{
	size_t i;

	if (rc < 0) {
		switch (rc) {
		case -ECONNREFUSED:
		case -ECONNRESET:
		case -ETIMEDOUT:
		case -EPIPE:
		case -EHOSTUNREACH:
		case -EAGAIN:
			return true;
		default:
			return false;
		}
	}
	if (s3_code) {
		for (i = 0;
		     i < sizeof(transient_codes) / sizeof(*transient_codes);
		     i++)
			if (strcmp(s3_code, transient_codes[i]) == 0)
				return true;
	}
	return status == 500 || status == 502 || status == 503 ||
	       status == 504 || status == 429;
}

uint32_t retry_backoff_ms(const struct retry_conf *c, unsigned attempt,
			  bool throttled, uint64_t rnd)
{
	uint64_t ceiling = c->base_ms ? c->base_ms : 1;

	if (throttled)
		ceiling *= 4;
	while (attempt > 1 && ceiling < c->cap_ms) {
		ceiling *= 2;
		attempt--;
	}
	if (ceiling > c->cap_ms)
		ceiling = c->cap_ms;
	return (uint32_t)(rnd % (ceiling + 1));
}

bool retry_may_continue(const struct retry_conf *c, unsigned attempt_done,
			uint64_t elapsed_ms, uint32_t sleep_ms)
{
	if (attempt_done >= c->max_attempts)
		return false;
	if (c->deadline_ms && elapsed_ms + sleep_ms >= c->deadline_ms)
		return false;
	return true;
}
