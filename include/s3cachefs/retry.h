/*
 * retry.h - pure retry policy for S3 requests: what may be tried again and
 * how long to wait, with capped exponential backoff and full jitter.
 */
#ifndef S3CACHEFS_RETRY_H
#define S3CACHEFS_RETRY_H

#include <stdbool.h>
#include <stdint.h>

struct retry_conf {
	unsigned max_attempts; /* total attempts, first included (>= 1) */
	uint32_t base_ms;      /* first backoff ceiling */
	uint32_t cap_ms;       /* largest backoff ceiling */
	uint64_t deadline_ms;  /* whole operation, retries included; 0: none */
};

/*
 * Is the outcome of one attempt worth another?  @rc is the attempt's
 * result: 0 when an HTTP response came back (then @status and @s3_code,
 * which may be NULL, describe it), or a transport error from http_perform.
 * Transient: connection refused/reset, timeouts, short bodies, HTTP 500,
 * 502, 503, 504, and the codes SlowDown, RequestTimeout, InternalError,
 * ServiceUnavailable, OperationAborted, RequestTimeTooSkewed.
 */
bool retry_is_transient(int rc, long status, const char *s3_code);

/*
 * Milliseconds to sleep before attempt @attempt (1 for the first retry):
 * uniformly random in [0, min(cap, base * 2^(attempt-1))], using @rnd (any
 * 64-bit random value) for the draw.  Throttling (@throttled, for SlowDown
 * and 503) starts from a ceiling four times higher.
 */
uint32_t retry_backoff_ms(const struct retry_conf *c, unsigned attempt,
			  bool throttled, uint64_t rnd);

/*
 * May another attempt start?  @attempt_done is how many attempts were made,
 * @elapsed_ms the time since the first, @sleep_ms the planned backoff.
 * False when out of attempts or when sleeping would pass the deadline.
 */
bool retry_may_continue(const struct retry_conf *c, unsigned attempt_done,
			uint64_t elapsed_ms, uint32_t sleep_ms);

#endif
