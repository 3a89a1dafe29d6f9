/*
 * server.c - the control socket of a mount (see ctlsrv.h).
 *
 * Why a socket: a mounted cache's index lives in the daemon's memory, so
 * commands that change the cache must run in the daemon.  The socket file
 * sits in the cache folder, which the daemon holds locked, so the tool
 * finds it from the folder alone.
 *
 * Addresses: sun_path holds 107 bytes, and cache folders can be deeper
 * than that; a longer path is reached through the folder's descriptor,
 * "/proc/self/fd/N/ctl.sock", which Linux resolves for bind and connect.
 *
 * States: running (the accept thread polls the socket and a wake-up pipe,
 * with a timeout to flush counters), then stopping (ctlsrv_stop: the pipe
 * wakes the thread, which exits; the admin is cancelled, every client's
 * connection shut down, and their threads waited for).  Client threads are
 * detached; srv.active counts them and srv.clients lists them, both under
 * srv.lock, and each takes itself off when done.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "s3cachefs/admin.h"
#include "s3cachefs/buf.h"
#include "s3cachefs/ctlsrv.h"
#include "s3cachefs/log.h"

#define REQUEST_MAX (64 * 1024)
#define REQUEST_TIMEOUT_S 10

struct client {
	struct ctlsrv *srv;
	int fd;
	struct client *next; /* srv.lock */
};

struct ctlsrv {
	struct admin *a;
	char *path; /* the socket file */
	int dirfd;  /* for long paths; -1 otherwise */
	int fd;	    /* listening */
	int wake[2];
	uint32_t flush_ms;
	pthread_t thread;
	bool started;
	pthread_mutex_t lock;
	pthread_cond_t idle;	/* active dropped to 0 (lock) */
	struct client *clients; /* lock */
	unsigned active;	/* lock */
	bool stopping;		/* lock */
};

/*
 * The address of @dir's socket in @sa: the path itself when it fits, else
 * through a descriptor of @dir left in *dirfd (the caller closes it).
 */
static int sock_addr(const char *dir, struct sockaddr_un *sa, int *dirfd)
{
	int n;

	memset(sa, 0, sizeof(*sa));
	sa->sun_family = AF_UNIX;
	*dirfd = -1;
	n = snprintf(sa->sun_path, sizeof(sa->sun_path), "%s/" CTLSRV_SOCKET,
		     dir);
	if (n > 0 && (size_t)n < sizeof(sa->sun_path))
		return 0;
	*dirfd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (*dirfd < 0)
		return -errno;
	snprintf(sa->sun_path, sizeof(sa->sun_path),
		 "/proc/self/fd/%d/" CTLSRV_SOCKET, *dirfd);
	return 0;
}

int ctlsrv_connect(const char *cache_dir, int *fd)
{
	struct sockaddr_un sa;
	int s, dirfd = -1, rc;

	rc = sock_addr(cache_dir, &sa, &dirfd);
	if (rc < 0)
		return rc;
	s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (s < 0) {
		rc = -errno;
		goto out;
	}
	if (connect(s, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		rc = -errno;
		close(s);
		goto out;
	}
	*fd = s;
out:
	if (dirfd >= 0)
		close(dirfd);
	return rc;
}

/* Write all of @len bytes; -EPIPE when the reader left. */
static int send_all(int fd, const char *p, size_t len)
{
	ssize_t n;

	while (len) {
		n = send(fd, p, len, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -EPIPE;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static int emit_sock(void *ctx, enum admin_line kind, const char *text)
{
	static const char tags[] = { [ADMIN_OUT] = 'o',
				     [ADMIN_ITEM] = 'i',
				     [ADMIN_PROGRESS] = 'p',
				     [ADMIN_ERR] = 'e' };
	struct client *c = ctx;
	struct buf b = BUF_INIT(BUF_NO_LIMIT);
	int rc;

	rc = buf_addf(&b, "%c %s\n", tags[kind], text);
	if (rc == 0)
		rc = send_all(c->fd, b.data, b.len);
	buf_release(&b);
	return rc;
}

/* Read the request line into @b (without '\n').  0 or -errno. */
static int read_request(int fd, struct buf *b)
{
	char chunk[512], *nl;
	ssize_t n;
	int rc;

	for (;;) {
		n = recv(fd, chunk, sizeof(chunk), 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -ECONNRESET;
		nl = memchr(chunk, '\n', (size_t)n);
		rc = buf_add(b, chunk, nl ? (size_t)(nl - chunk) : (size_t)n);
		if (rc < 0)
			return rc;
		if (nl)
			return 0;
	}
}

/* Another user than the daemon's (root excepted) is refused. */
static bool peer_allowed(int fd)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
		return false;
	return cred.uid == 0 || cred.uid == geteuid();
}

static void serve(struct client *c)
{
	struct buf req = BUF_INIT(REQUEST_MAX);
	struct buf err = BUF_INIT(1024);
	struct timeval tv = { .tv_sec = REQUEST_TIMEOUT_S };
	struct admin_cmd cmd = { 0 };
	char status[32];
	bool allowed;
	int rc;

	setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	/*
	 * The request is read first, also from a peer refused below: closing
	 * a unix socket with unread data resets the peer's, which could then
	 * lose our answer.
	 */
	allowed = peer_allowed(c->fd);
	rc = read_request(c->fd, &req);
	if (rc < 0 && allowed)
		goto out; /* nobody to answer */
	if (!allowed) {
		emit_sock(c, ADMIN_ERR,
			  "permission denied: not the mount's "
			  "user");
		rc = -EACCES;
		goto done;
	}
	rc = admin_decode(buf_str(&req), &cmd, &err);
	if (rc < 0) {
		emit_sock(c, ADMIN_ERR, buf_str(&err));
		goto done;
	}
	log_debug("ctl: '%s'", buf_str(&req));
	rc = admin_run(c->srv->a, &cmd, emit_sock, c);
done:
	snprintf(status, sizeof(status), "s %d\n", rc);
	send_all(c->fd, status, strlen(status));
out:
	admin_cmd_release(&cmd);
	buf_release(&req);
	buf_release(&err);
}

static void *client_main(void *arg)
{
	struct client *c = arg, **p;
	struct ctlsrv *s = c->srv;

	serve(c);
	pthread_mutex_lock(&s->lock);
	for (p = &s->clients; *p != c; p = &(*p)->next)
		;
	*p = c->next;
	close(c->fd);
	free(c);
	if (--s->active == 0)
		pthread_cond_broadcast(&s->idle);
	pthread_mutex_unlock(&s->lock);
	return NULL;
}

/* Serve connection @fd in a thread of its own. */
static void spawn(struct ctlsrv *s, int fd)
{
	struct client *c = calloc(1, sizeof(*c));
	pthread_attr_t attr;
	pthread_t th;
	int rc;

	if (!c) {
		close(fd);
		return;
	}
	c->srv = s;
	c->fd = fd;
	pthread_mutex_lock(&s->lock);
	if (s->stopping) {
		pthread_mutex_unlock(&s->lock);
		close(fd);
		free(c);
		return;
	}
	c->next = s->clients;
	s->clients = c;
	s->active++;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	rc = pthread_create(&th, &attr, client_main, c);
	pthread_attr_destroy(&attr);
	if (rc != 0) {
		s->clients = c->next;
		s->active--;
		close(fd);
		free(c);
		log_warn("ctl: cannot start a thread for a command: %s",
			 strerror(rc));
	}
	pthread_mutex_unlock(&s->lock);
}

static int64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void *accept_main(void *arg)
{
	struct ctlsrv *s = arg;
	struct pollfd pf[2] = { { .fd = s->fd, .events = POLLIN },
				{ .fd = s->wake[0], .events = POLLIN } };
	int64_t next_flush = mono_ms() + s->flush_ms, left;
	int n, fd;

	for (;;) {
		left = next_flush - mono_ms();
		n = poll(pf, 2, left > 0 ? (int)left : 0);
		if (n < 0 && errno != EINTR) {
			log_warn("ctl: poll: %s", strerror(errno));
			break;
		}
		if (n > 0 && pf[1].revents)
			break;
		if (n > 0 && (pf[0].revents & POLLIN)) {
			fd = accept4(s->fd, NULL, NULL, SOCK_CLOEXEC);
			if (fd >= 0)
				spawn(s, fd);
		}
		if (mono_ms() >= next_flush) {
			/* a failure is logged by meta: the next flush adds it */
			admin_flush(s->a);
			next_flush = mono_ms() + s->flush_ms;
		}
	}
	return NULL;
}

int ctlsrv_start(const struct ctlsrv_conf *conf, struct admin *a,
		 struct ctlsrv **out)
{
	struct sockaddr_un sa;
	struct ctlsrv *s;
	int dirfd = -1, rc;

	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->a = a;
	s->fd = -1;
	s->dirfd = -1;
	s->wake[0] = s->wake[1] = -1;
	s->flush_ms = conf->flush_ms ? conf->flush_ms : 5000;
	pthread_mutex_init(&s->lock, NULL);
	pthread_cond_init(&s->idle, NULL);
	if (asprintf(&s->path, "%s/" CTLSRV_SOCKET, conf->cache_dir) < 0) {
		s->path = NULL;
		rc = -ENOMEM;
		goto out;
	}
	rc = sock_addr(conf->cache_dir, &sa, &dirfd);
	if (rc < 0) {
		log_warn("ctl: cache folder '%s': %s", conf->cache_dir,
			 strerror(-rc));
		goto out;
	}
	s->dirfd = dirfd;
	/* we hold the folder's lock: a socket file there is stale */
	if (unlink(s->path) < 0 && errno != ENOENT)
		log_warn("ctl: cannot remove stale '%s': %s", s->path,
			 strerror(errno));
	s->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (s->fd < 0 || bind(s->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    chmod(s->path, 0600) < 0 || listen(s->fd, 16) < 0) {
		rc = -errno;
		log_warn("ctl: cannot listen on '%s': %s", s->path,
			 strerror(-rc));
		goto out;
	}
	if (pipe2(s->wake, O_CLOEXEC) < 0) {
		rc = -errno;
		log_warn("ctl: pipe: %s", strerror(-rc));
		goto out;
	}
	rc = -pthread_create(&s->thread, NULL, accept_main, s);
	if (rc < 0) {
		log_warn("ctl: cannot start the control thread: %s",
			 strerror(-rc));
		goto out;
	}
	s->started = true;
	*out = s;
	s = NULL;
out:
	if (s) {
		if (s->fd >= 0)
			unlink(s->path);
		ctlsrv_stop(s);
	}
	return rc;
}

void ctlsrv_stop(struct ctlsrv *s)
{
	struct client *c;

	if (!s)
		return;
	if (s->started) {
		if (write(s->wake[1], "", 1) != 1)
			log_warn("ctl: cannot wake the control thread: %s",
				 strerror(errno));
		pthread_join(s->thread, NULL);
		admin_cancel(s->a);
		pthread_mutex_lock(&s->lock);
		s->stopping = true;
		for (c = s->clients; c; c = c->next)
			shutdown(c->fd, SHUT_RDWR);
		while (s->active)
			pthread_cond_wait(&s->idle, &s->lock);
		pthread_mutex_unlock(&s->lock);
		unlink(s->path);
		admin_flush(s->a);
	}
	if (s->fd >= 0)
		close(s->fd);
	if (s->dirfd >= 0)
		close(s->dirfd);
	if (s->wake[0] >= 0)
		close(s->wake[0]);
	if (s->wake[1] >= 0)
		close(s->wake[1]);
	pthread_cond_destroy(&s->idle);
	pthread_mutex_destroy(&s->lock);
	free(s->path);
	free(s);
}
