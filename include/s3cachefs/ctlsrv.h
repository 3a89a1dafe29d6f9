/*
 * ctlsrv.h - the control socket of a mount, CACHE_DIR/ctl.sock, through
 * which s3cachefs-ctl runs its commands (admin.h) in the daemon that holds
 * the cache.
 *
 * Protocol, one connection per command: the tool sends one line, the
 * command as admin_encode() writes it, then '\n'; the daemon answers with
 * lines "K TEXT\n", K being
 *
 *   o   a line of output          i   an object warmed (ADMIN_ITEM)
 *   p   progress (ADMIN_PROGRESS) e   why the command failed
 *
 * and ends with "s N\n", N the command's result (0 or -errno), then closes.
 * A connection without a final "s" line was cut (the mount stopped).
 *
 * Access: the socket is mode 0600, and connections from another user than
 * the daemon's (root excepted) are refused.
 *
 * Threads: one accepts, and also flushes the counters (admin_flush) every
 * flush_ms; each connection is served by a thread of its own, so a long
 * warm does not hold up a stats.
 */
#ifndef S3CACHEFS_CTLSRV_H
#define S3CACHEFS_CTLSRV_H

#include <stdint.h>

struct admin;

#define CTLSRV_SOCKET "ctl.sock"

struct ctlsrv_conf {
	const char *cache_dir; /* absolute; the caller holds its lock */
	uint32_t flush_ms;     /* admin_flush() this often (5000) */
};

struct ctlsrv;

/*
 * Listen on CACHE_DIR/ctl.sock, replacing a stale socket file (the caller
 * holds the cache's lock, so nobody else listens there), and start the
 * thread.  @a is borrowed and must outlive the server.  0 or -errno
 * (logged).
 */
int ctlsrv_start(const struct ctlsrv_conf *conf, struct admin *a,
		 struct ctlsrv **out);

/*
 * Stop accepting, cancel the commands running (admin_cancel()), cut their
 * connections, wait for their threads, remove the socket file and flush
 * the counters one last time.  NULL-safe.
 */
void ctlsrv_stop(struct ctlsrv *s);

/*
 * Connect to the socket of @cache_dir (any path length): 0 with *fd, or
 * -ENOENT (no socket file), -ECONNREFUSED (nobody listens: stale), or
 * another -errno.  Not logged.
 */
int ctlsrv_connect(const char *cache_dir, int *fd);

#endif
