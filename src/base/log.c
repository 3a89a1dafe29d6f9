/*
 * log.c - leveled logging to stderr or syslog.
 *
 * The level is read without a lock on every call (an atomic int); the
 * destination changes only in log_init(), which callers run before starting
 * threads or after daemonizing, when no other thread logs.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "s3cachefs/log.h"

static atomic_int log_level = LOG_LVL_WARN;
static const char *log_ident = "s3cachefs";
/* switched by log_init while other threads may log: atomic */
static atomic_bool log_syslog;
static atomic_ulong log_errors;

static const char *const level_names[] = {
	[LOG_LVL_ERROR] = "error", [LOG_LVL_WARN] = "warn",
	[LOG_LVL_INFO] = "info",   [LOG_LVL_DEBUG] = "debug",
	[LOG_LVL_TRACE] = "trace",
};

void log_init(const char *ident, enum log_level level, bool use_syslog)
{
	if (atomic_load(&log_syslog) && !use_syslog)
		closelog();
	/* the identity is set once, before any thread starts */
	log_ident = ident ? ident : "s3cachefs";
	atomic_store(&log_level, level);
	if (use_syslog)
		openlog(log_ident, LOG_PID | LOG_NDELAY, LOG_DAEMON);
	atomic_store(&log_syslog, use_syslog);
}

void log_set_level(enum log_level level)
{
	atomic_store(&log_level, level);
}

enum log_level log_get_level(void)
{
	return (enum log_level)atomic_load(&log_level);
}

bool log_enabled(enum log_level level)
{
	return (int)level <= atomic_load(&log_level);
}

int log_parse_level(const char *s, enum log_level *out)
{
	size_t i;

	for (i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
		if (strcasecmp(s, level_names[i]) == 0) {
			*out = (enum log_level)i;
			return 0;
		}
	}
	if (strcasecmp(s, "warning") == 0) {
		*out = LOG_LVL_WARN;
		return 0;
	}
	return -EINVAL;
}

static int syslog_priority(enum log_level level)
{
	switch (level) {
	case LOG_LVL_ERROR:
		return LOG_ERR;
	case LOG_LVL_WARN:
		return LOG_WARNING;
	case LOG_LVL_INFO:
		return LOG_INFO;
	default:
		return LOG_DEBUG;
	}
}

unsigned long log_error_count(void)
{
	return atomic_load(&log_errors);
}

void log_msg(enum log_level level, const char *fmt, ...)
{
	char line[2048];
	int saved_errno = errno;
	size_t n = 0;
	va_list ap;
	int w;

	if (!log_enabled(level))
		return;
	if (level == LOG_LVL_ERROR)
		atomic_fetch_add(&log_errors, 1);
	if (!atomic_load(&log_syslog)) {
		w = snprintf(line, sizeof(line), "%s: ", log_ident);
		if (w > 0)
			n = (size_t)w < sizeof(line) ? (size_t)w : 0;
		if (level != LOG_LVL_ERROR) {
			w = snprintf(line + n, sizeof(line) - n,
				     "%s: ", level_names[level]);
			if (w > 0 && (size_t)w < sizeof(line) - n)
				n += (size_t)w;
		}
	}
	va_start(ap, fmt);
	w = vsnprintf(line + n, sizeof(line) - n, fmt, ap);
	va_end(ap);
	if (w > 0)
		n += (size_t)w;
	if (n > sizeof(line) - 2)
		n = sizeof(line) - 2; /* truncated: keep room for the newline */
	if (atomic_load(&log_syslog)) {
		line[n] = '\0';
		syslog(syslog_priority(level), "%s", line);
	} else {
		line[n++] = '\n';
		/* one write per line: concurrent lines never interleave */
		if (write(STDERR_FILENO, line, n) < 0) {
			/* nowhere left to report it */
		}
	}
	errno = saved_errno;
}
