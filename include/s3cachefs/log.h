/*
 * log.h - the one logging module.
 *
 * Every message goes through log_msg(): to stderr (foreground, tools, tests)
 * or to syslog (daemonized).  Messages are lowercase, with no full stop, and
 * quote their subject (git).  Never pass a secret, a signature or a signed URL
 * to these functions.
 *
 * Thread-safe: one write(2) per line on stderr, so lines of concurrent
 * threads never interleave.
 */
#ifndef S3CACHEFS_LOG_H
#define S3CACHEFS_LOG_H

#include <stdbool.h>

enum log_level {
	LOG_LVL_ERROR = 0,
	LOG_LVL_WARN,
	LOG_LVL_INFO,
	LOG_LVL_DEBUG,
	LOG_LVL_TRACE,
};

/*
 * Set where messages go.  @ident prefixes every stderr line ("ident: ...")
 * and names the syslog identity; it is borrowed and must outlive logging.
 * May be called again (for example after daemonizing).
 */
void log_init(const char *ident, enum log_level level, bool use_syslog);

void log_set_level(enum log_level level);
enum log_level log_get_level(void);

/* True when a message at @level would be emitted: guards costly formatting. */
bool log_enabled(enum log_level level);

/* Parse "error", "warn", "info", "debug" or "trace"; 0 or -EINVAL. */
int log_parse_level(const char *s, enum log_level *out);

/*
 * How many error-level messages were emitted so far.  A tool compares it
 * before and after a call to know whether the library already told the user
 * what went wrong, so that every failure gives exactly one line.
 */
unsigned long log_error_count(void);

void log_msg(enum log_level level, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

#define log_error(...) log_msg(LOG_LVL_ERROR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_LVL_WARN, __VA_ARGS__)
#define log_info(...) log_msg(LOG_LVL_INFO, __VA_ARGS__)
#define log_debug(...)                                       \
	do {                                                 \
		if (log_enabled(LOG_LVL_DEBUG))              \
			log_msg(LOG_LVL_DEBUG, __VA_ARGS__); \
	} while (0)
#define log_trace(...)                                       \
	do {                                                 \
		if (log_enabled(LOG_LVL_TRACE))              \
			log_msg(LOG_LVL_TRACE, __VA_ARGS__); \
	} while (0)

#endif
