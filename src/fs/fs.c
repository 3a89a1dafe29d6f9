/*
 * fs.c - the thin libfuse3 low-level adapter over the vfs.
 *
 * Every handler does the same three things: take the request's arguments,
 * make one vfs call, turn its answer into one reply.  The logic (names,
 * caching, S3) lives in the vfs; what lives here is what only FUSE knows:
 *
 * Lookup counts.  Each successful lookup reply, and each entry of a
 * readdirplus reply, gives the kernel one reference to an inode, which it
 * returns with forget.  vfs_lookup and vfs_readdir(plus) take the reference;
 * when the reply cannot be delivered (the request was interrupted) a lookup
 * gives it back at once.  "." and ".." are not linked by the kernel, so they
 * are emitted here without a vfs inode and never counted.
 *
 * Directory offsets.  0 and 1 are "." and ".."; entry k of the vfs snapshot
 * is at k + 2, and each entry carries the offset of the one after it.
 *
 * Negative entries.  A name that does not exist is answered with inode 0
 * and the negative timeout, which the kernel caches like a name.
 *
 * Large reads.  libfuse 3 asks for FUSE_MAX_PAGES with max_write as the
 * request size, which we set to FS_MAX_IO, so direct reads arrive in up to
 * 1 MiB.  Reads through the page cache are cut to the readahead window of the
 * mount's backing device, 128 KiB unless raised: the kernel caps it at INIT
 * to what it offered, so once INIT is done (at the first request that is not
 * INIT) we write FS_MAX_IO to /sys/class/bdi/MAJ:MIN/read_ahead_kb.  Only
 * root may; others keep 128 KiB requests (logged at debug).
 *
 * allow_other.  The kernel checks other users against the modes we give it
 * (default_permissions, always on), so with allow_other the vfs reads a
 * file's or directory's modes (HEAD of the object or of its marker)
 * before it gives them out (vfs_conf.strict_attrs),
 * and an entry whose modes came from LIST only (a readdirplus entry,
 * vfs_attr.tentative) is given with timeouts of 0: the kernel looks it up
 * again before it checks anyone against it.
 *
 * Changes go to the vfs with the caller's uid, gid and umask; with -o ro
 * the kernel refuses them first (the mount is MS_RDONLY) and the vfs
 * refuses them again.  Hard links, devices and extended attributes are
 * not stored in S3: EPERM and ENOTSUP.
 *
 * State: f->tuned is the one field handlers write (atomically); the rest is
 * set before fs_run and only read while the loop runs.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <fuse_lowlevel.h>

#include "s3cachefs/buf.h"
#include "s3cachefs/fs.h"
#include "s3cachefs/log.h"
#include "s3cachefs/strutil.h"
#include "s3cachefs/vfs.h"

/* What statfs reports: 1 PiB of 4 KiB blocks, all free; 2^32 inodes. */
#define STATFS_BSIZE 4096
#define STATFS_BLOCKS ((1ULL << 50) / STATFS_BSIZE)
#define STATFS_FILES (1ULL << 32)

/* Workers the loop keeps idle before ending the extra ones. */
#define IDLE_THREADS 10

#if FUSE_VERSION >= FUSE_MAKE_VERSION(3, 12)
/*
 * At FUSE_USE_VERSION 35 the header maps fuse_session_loop_mt to the 3.2
 * loop, whose config cannot bound the worker threads (libfuse >= 3.12 then
 * allows 10).  The 3.12 loop takes the opaque config of fuse_loop_cfg_*,
 * which can; libfuse exports it under this name.
 */
int fuse_session_loop_mt_312(struct fuse_session *se,
			     struct fuse_loop_config *config);
#endif

struct fs {
	struct fs_conf conf; /* fsname and cache_dir point to our copies */
	char *fsname;
	char *cache_dir;
	char *mountpoint;
	struct vfs *vfs;
	struct fuse_session *se;
	bool signals; /* our signal handlers are installed */
	bool mounted;
	char ra_path[64];  /* sysfs read_ahead_kb of the mount, or "" */
	atomic_bool tuned; /* ra_path was written (or given up on) */
};

/* ---- libfuse's messages through log.h ---- */

static void fs_log(enum fuse_log_level level, const char *fmt, va_list ap)
{
	enum log_level l;
	char msg[1024];
	size_t n;

	if (level <= FUSE_LOG_ERR)
		l = LOG_LVL_ERROR;
	else if (level == FUSE_LOG_WARNING)
		l = LOG_LVL_WARN;
	else if (level <= FUSE_LOG_INFO)
		l = LOG_LVL_INFO;
	else
		l = LOG_LVL_DEBUG;
	if (!log_enabled(l))
		return;
	vsnprintf(msg, sizeof(msg), fmt, ap);
	/* libfuse ends its lines with a newline; log_msg adds its own */
	n = strlen(msg);
	while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
		msg[--n] = '\0';
	if (n > 0)
		log_msg(l, "%s", msg);
}

/* ---- readahead of the mount's backing device ---- */

/*
 * The mount on top of @mountpoint per /proc/self/mountinfo (the last line
 * for it): its device number and file system type (at most 63 bytes).
 * stat() of a FUSE mount point would wait for its session loop, which may
 * not be running.  0, -ENOENT when nothing is mounted there, or -errno.
 */
static int mountinfo_find(const char *mountpoint, unsigned *maj, unsigned *min,
			  char type[64])
{
	char *line = NULL;
	size_t cap = 0;
	int rc = -ENOENT;
	FILE *mi;

	mi = fopen("/proc/self/mountinfo", "re");
	if (!mi)
		return -errno;
	while (getline(&line, &cap, mi) > 0) {
		char mp[PATH_MAX], t[64], *sep;
		unsigned a, b;

		/* ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS ... - TYPE ... */
		if (sscanf(line, "%*u %*u %u:%u %*s %4095s", &a, &b, mp) != 3)
			continue;
		sep = strstr(line, " - ");
		if (!sep || sscanf(sep + 3, "%63s", t) != 1)
			continue;
		unescape_octal(mp);
		if (strcmp(mp, mountpoint) != 0)
			continue;
		*maj = a;
		*min = b;
		memcpy(type, t, sizeof(t));
		rc = 0;
	}
	free(line);
	fclose(mi);
	return rc;
}

/* Remember the sysfs readahead file of our mount on @mountpoint. */
static void find_ra_path(struct fs *f, const char *mountpoint)
{
	unsigned maj, min;
	char type[64];
	int rc;

	rc = mountinfo_find(mountpoint, &maj, &min, type);
	if (rc == 0 && strncmp(type, "fuse", 4) == 0)
		snprintf(f->ra_path, sizeof(f->ra_path),
			 "/sys/class/bdi/%u:%u/read_ahead_kb", maj, min);
	else
		log_debug("mount on '%s' not found in mountinfo: %s",
			  mountpoint, strerror(rc < 0 ? -rc : ENOENT));
}

/*
 * Refuse to stack on a mount of ours: the first one's unmount would take
 * the top one away (unmounting goes by path) and leave its own orphaned.
 */
static int check_not_mounted(const char *mountpoint)
{
	unsigned maj, min;
	char type[64];

	if (mountinfo_find(mountpoint, &maj, &min, type) == 0 &&
	    strcmp(type, "fuse.s3cachefs") == 0) {
		log_error("mount point '%s' is already an s3cachefs mount",
			  mountpoint);
		return -EBUSY;
	}
	return 0;
}

/* Raise the readahead once, after INIT (see the top of the file). */
static void tune_once(struct fs *f)
{
	char val[32];
	int fd, n;

	if (atomic_load_explicit(&f->tuned, memory_order_relaxed) ||
	    atomic_exchange(&f->tuned, true))
		return;
	if (!f->ra_path[0])
		return;
	n = snprintf(val, sizeof(val), "%d\n", FS_MAX_IO / 1024);
	fd = open(f->ra_path, O_WRONLY | O_CLOEXEC);
	if (fd < 0 || write(fd, val, (size_t)n) != n)
		log_debug("cannot raise readahead in '%s': %s (reads through "
			  "the page cache come in 128 KiB)",
			  f->ra_path, strerror(errno));
	else
		log_debug("readahead of the mount set to %d KiB in '%s'",
			  FS_MAX_IO / 1024, f->ra_path);
	if (fd >= 0)
		close(fd);
}

/* ---- attributes ---- */

static void attr_to_stat(const struct fs *f, const struct vfs_attr *a,
			 struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = a->ino;
	if (a->is_dir) {
		st->st_mode = S_IFDIR | 0755;
		st->st_nlink = 2;
	} else {
		st->st_mode = S_IFREG | 0644;
		st->st_nlink = 1;
	}
	if (a->mode)
		st->st_mode = a->mode;
	st->st_uid = a->mode ? a->uid : f->conf.uid;
	st->st_gid = a->mode ? a->gid : f->conf.gid;
	st->st_size = (off_t)a->size;
	st->st_blksize = FS_MAX_IO; /* cp and friends write 1 MiB at a time */
	st->st_blocks = (blkcnt_t)((a->size + 511) / 512);
	st->st_atim.tv_sec = (time_t)a->mtime;
	st->st_mtim.tv_sec = (time_t)a->mtime;
	st->st_ctim.tv_sec = (time_t)a->mtime;
}

static void attr_to_entry(const struct fs *f, const struct vfs_attr *a,
			  struct fuse_entry_param *e)
{
	memset(e, 0, sizeof(*e));
	e->ino = a->ino;
	e->attr_timeout = f->conf.attr_timeout;
	e->entry_timeout = f->conf.entry_timeout;
	/* allow_other: a readdirplus entry's modes come from LIST only; the
	 * kernel asks again (lookup, which reads them) before it checks */
	if (f->conf.allow_other && a->tentative)
		e->attr_timeout = e->entry_timeout = 0;
	attr_to_stat(f, a, &e->attr);
}

/* ---- handlers ---- */

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
	(void)userdata;
	if (conn->capable & FUSE_CAP_ASYNC_READ)
		conn->want |= FUSE_CAP_ASYNC_READ;
	/* every listing carries attributes: always plus, never adaptive */
	if (conn->capable & FUSE_CAP_READDIRPLUS)
		conn->want |= FUSE_CAP_READDIRPLUS;
	conn->want &= ~(unsigned)FUSE_CAP_READDIRPLUS_AUTO;
	/* inode numbers die with their last forget: no NFS file handles */
	conn->want &= ~(unsigned)FUSE_CAP_EXPORT_SUPPORT;
	/* libfuse derives max_pages (FUSE_MAX_PAGES) from max_write */
	conn->max_write = FS_MAX_IO;
	/* max_readahead stays at what the kernel offered, its maximum */
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fs *f = fuse_req_userdata(req);
	struct fuse_entry_param e;
	struct vfs_attr a;
	int rc;

	tune_once(f);
	rc = vfs_lookup(f->vfs, parent, name, &a);
	if (rc == -ENOENT && f->conf.negative_timeout > 0) {
		memset(&e, 0, sizeof(e));
		e.entry_timeout = f->conf.negative_timeout;
		fuse_reply_entry(req, &e);
		return;
	}
	if (rc < 0) {
		fuse_reply_err(req, -rc);
		return;
	}
	attr_to_entry(f, &a, &e);
	if (fuse_reply_entry(req, &e) != 0)
		vfs_forget(f->vfs, a.ino, 1);
}

static void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	struct fs *f = fuse_req_userdata(req);

	vfs_forget(f->vfs, ino, nlookup);
	fuse_reply_none(req);
}

static void op_forget_multi(fuse_req_t req, size_t count,
			    struct fuse_forget_data *forgets)
{
	struct fs *f = fuse_req_userdata(req);
	size_t i;

	for (i = 0; i < count; i++)
		vfs_forget(f->vfs, forgets[i].ino, forgets[i].nlookup);
	fuse_reply_none(req);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino,
		       struct fuse_file_info *fi)
{
	struct fs *f = fuse_req_userdata(req);
	struct vfs_attr a;
	struct stat st;
	int rc;

	(void)fi;
	tune_once(f);
	rc = vfs_getattr(f->vfs, ino, &a);
	if (rc < 0) {
		fuse_reply_err(req, -rc);
		return;
	}
	attr_to_stat(f, &a, &st);
	fuse_reply_attr(
		req, &st,
		f->conf.allow_other && a.tentative ? 0 : f->conf.attr_timeout);
}

static void op_opendir(fuse_req_t req, fuse_ino_t ino,
		       struct fuse_file_info *fi)
{
	struct fs *f = fuse_req_userdata(req);
	struct vfs_dir *d = NULL;
	int rc;

	tune_once(f);
	rc = vfs_opendir(f->vfs, ino, &d);
	if (rc < 0) {
		fuse_reply_err(req, -rc);
		return;
	}
	fi->fh = (uint64_t)(uintptr_t)d;
	if (fuse_reply_open(req, fi) != 0)
		vfs_releasedir(f->vfs, d);
}

/* One readdir reply being filled. */
struct dir_fill {
	struct fs *f;
	fuse_req_t req;
	char *buf;
	size_t size; /* what the kernel asked for */
	size_t len;  /* used so far */
	bool plus;
};

/* Add one entry: 0, or 1 when it does not fit (nothing added). */
static int dir_add(struct dir_fill *d, const char *name,
		   const struct fuse_entry_param *e, off_t next)
{
	size_t room = d->size - d->len, n;

	if (d->plus)
		n = fuse_add_direntry_plus(d->req, d->buf + d->len, room, name,
					   e, next);
	else
		n = fuse_add_direntry(d->req, d->buf + d->len, room, name,
				      &e->attr, next);
	if (n > room)
		return 1;
	d->len += n;
	return 0;
}

/* "." or "..": inode 0 in the entry, so the kernel links nothing. */
static int dir_add_dot(struct dir_fill *d, const char *name, fuse_ino_t ino,
		       off_t next)
{
	struct fuse_entry_param e;

	memset(&e, 0, sizeof(e));
	e.attr.st_ino = ino;
	e.attr.st_mode = S_IFDIR;
	return dir_add(d, name, &e, next);
}

static int dir_entry(void *ctx, const char *name, const struct vfs_attr *attr,
		     uint64_t next)
{
	struct dir_fill *d = ctx;
	struct fuse_entry_param e;

	attr_to_entry(d->f, attr, &e);
	if (attr->name_only)
		e.ino = 0; /* as for "." and "..": the kernel links nothing */
	return dir_add(d, name, &e, (off_t)(next + 2));
}

static void readdir_common(fuse_req_t req, fuse_ino_t ino, size_t size,
			   off_t off, struct fuse_file_info *fi, bool plus)
{
	struct vfs_dir *dir = (struct vfs_dir *)(uintptr_t)fi->fh;
	struct dir_fill d = { .req = req, .size = size, .plus = plus };
	int rc = 0;

	d.f = fuse_req_userdata(req);
	d.buf = malloc(size ? size : 1);
	if (!d.buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	if (off < 0)
		off = 0;
	if (off == 0 && dir_add_dot(&d, ".", ino, 1) != 0)
		goto reply;
	if (off <= 1 && dir_add_dot(&d, "..", ino, 2) != 0)
		goto reply;
	rc = vfs_readdir(d.f->vfs, dir, off < 2 ? 0 : (uint64_t)off - 2, plus,
			 dir_entry, &d);
reply:
	/* what was gathered before a failure is still good */
	if (rc < 0 && d.len == 0)
		fuse_reply_err(req, -rc);
	else
		fuse_reply_buf(req, d.buf, d.len);
	free(d.buf);
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi)
{
	readdir_common(req, ino, size, off, fi, false);
}

static void op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size,
			   off_t off, struct fuse_file_info *fi)
{
	readdir_common(req, ino, size, off, fi, true);
}

static void op_releasedir(fuse_req_t req, fuse_ino_t ino,
			  struct fuse_file_info *fi)
{
	struct fs *f = fuse_req_userdata(req);

	(void)ino;
	vfs_releasedir(f->vfs, (struct vfs_dir *)(uintptr_t)fi->fh);
	fuse_reply_err(req, 0);
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs *f = fuse_req_userdata(req);
	struct vfs_file *file = NULL;
	bool keep_cache = false;
	int rc;

	tune_once(f);
	rc = vfs_open(f->vfs, ino, fi->flags, &file, &keep_cache);
	if (rc < 0) {
		fuse_reply_err(req, -rc);
		return;
	}
	fi->fh = (uint64_t)(uintptr_t)file;
	fi->keep_cache = keep_cache;
	/* O_DIRECT: every read reaches the vfs, which sends it to S3 */
	fi->direct_io = (fi->flags & O_DIRECT) != 0;
	/*
	 * The open asked S3 and may have found a new version: the kernel may
	 * still hold the old size until its attribute timeout, and would clip
	 * reads to it.  (Without keep_cache the kernel drops its pages of the
	 * inode at open by itself; an open that did not ask S3 changed no
	 * attribute the kernel holds, so a first open in a warm mount costs
	 * no extra message.)
	 */
	if (!keep_cache && vfs_file_attrs_moved(file))
		fuse_lowlevel_notify_inval_inode(f->se, ino, -1, 0);
	/* nothing to write back: spare the kernel a FLUSH per close */
	fi->noflush =
		(fi->flags & O_ACCMODE) == O_RDONLY && !(fi->flags & O_TRUNC);
	if (fuse_reply_open(req, fi) != 0)
		vfs_release(f->vfs, file);
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	struct fs *f = fuse_req_userdata(req);
	struct vfs_file *file = (struct vfs_file *)(uintptr_t)fi->fh;
	char *buf;
	ssize_t n;

	(void)ino;
	if (off < 0) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	/* vfs_read fills this buffer directly; the reply is the only copy */
	buf = malloc(size ? size : 1);
	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	n = vfs_read(f->vfs, file, buf, size, (uint64_t)off);
	if (n < 0)
		fuse_reply_err(req, (int)-n);
	else
		fuse_reply_buf(req, buf, (size_t)n);
	free(buf);
}

static void op_release(fuse_req_t req, fuse_ino_t ino,
		       struct fuse_file_info *fi)
{
	struct fs *f = fuse_req_userdata(req);

	(void)ino;
	vfs_release(f->vfs, (struct vfs_file *)(uintptr_t)fi->fh);
	fuse_reply_err(req, 0);
}

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct fs *f = fuse_req_userdata(req);
	struct statvfs st;

	(void)ino;
	tune_once(f);
	memset(&st, 0, sizeof(st));
	st.f_bsize = STATFS_BSIZE;
	st.f_frsize = STATFS_BSIZE;
	st.f_blocks = STATFS_BLOCKS;
	st.f_bfree = STATFS_BLOCKS;
	st.f_bavail = STATFS_BLOCKS;
	st.f_files = STATFS_FILES;
	st.f_ffree = STATFS_FILES;
	st.f_favail = STATFS_FILES;
	st.f_namemax = VFS_NAME_MAX;
	fuse_reply_statfs(req, &st);
}

/* ---- changes ---- */

static void reply_entry_or_err(fuse_req_t req, struct fs *f, int rc,
			       const struct vfs_attr *a)
{
	struct fuse_entry_param e;

	if (rc < 0) {
		fuse_reply_err(req, -rc);
		return;
	}
	attr_to_entry(f, a, &e);
	if (fuse_reply_entry(req, &e) != 0)
		vfs_forget(f->vfs, a->ino, 1);
}

static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr,
		       int to_set, struct fuse_file_info *fi)
{
	struct fs *f = fuse_req_userdata(req);
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	struct vfs_file *file =
		fi ? (struct vfs_file *)(uintptr_t)fi->fh : NULL;
	unsigned mask = 0;
	int64_t mtime = 0;
	struct vfs_attr a;
	struct stat st;
	int rc;

	if (to_set & FUSE_SET_ATTR_MODE)
		mask |= VFS_SET_MODE;
	if (to_set & FUSE_SET_ATTR_UID)
		mask |= VFS_SET_UID;
	if (to_set & FUSE_SET_ATTR_GID)
		mask |= VFS_SET_GID;
	if (to_set & FUSE_SET_ATTR_SIZE)
		mask |= VFS_SET_SIZE;
	if (to_set & FUSE_SET_ATTR_MTIME_NOW) {
		mask |= VFS_SET_MTIME;
		mtime = time(NULL);
	} else if (to_set & FUSE_SET_ATTR_MTIME) {
		mask |= VFS_SET_MTIME;
		mtime = attr->st_mtim.tv_sec;
	}
	(void)ctx;
	if (mask == 0) {
		/* atime or ctime alone: S3 keeps neither */
		rc = vfs_getattr(f->vfs, ino, &a);
	} else if ((to_set & FUSE_SET_ATTR_SIZE) && attr->st_size < 0) {
		rc = -EINVAL;
	} else {
		rc = vfs_setattr(f->vfs, ino, file, mask,
				 (uint64_t)attr->st_size, attr->st_mode,
				 attr->st_uid, attr->st_gid, mtime, &a);
	}
	if (rc < 0) {
		fuse_reply_err(req, -rc);
		return;
	}
	attr_to_stat(f, &a, &st);
	fuse_reply_attr(req, &st, f->conf.attr_timeout);
}

static void op_create(fuse_req_t req, fuse_ino_t parent, const char *name,
		      mode_t mode, struct fuse_file_info *fi)
{
	struct fs *f = fuse_req_userdata(req);
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	struct vfs_file *file = NULL;
	struct fuse_entry_param e;
	struct vfs_attr a;
	int rc;

	tune_once(f);
	rc = vfs_create(f->vfs, parent, name, mode & ~ctx->umask, fi->flags,
			ctx->uid, ctx->gid, &a, &file);
	if (rc < 0) {
		fuse_reply_err(req, -rc);
		return;
	}
	attr_to_entry(f, &a, &e);
	fi->fh = (uint64_t)(uintptr_t)file;
	if (fuse_reply_create(req, &e, fi) != 0) {
		vfs_release(f->vfs, file);
		vfs_forget(f->vfs, a.ino, 1);
	}
}

static void op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name,
		     mode_t mode, dev_t rdev)
{
	struct fs *f = fuse_req_userdata(req);
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	struct vfs_file *file = NULL;
	struct vfs_attr a;
	int rc;

	(void)rdev;
	if (!S_ISREG(mode)) {
		fuse_reply_err(req, EPERM); /* S3 holds no devices or fifos */
		return;
	}
	rc = vfs_create(f->vfs, parent, name, mode & ~ctx->umask, O_WRONLY,
			ctx->uid, ctx->gid, &a, &file);
	if (rc == 0) {
		rc = vfs_flush(f->vfs, file);
		vfs_release(f->vfs, file);
		if (rc < 0)
			vfs_forget(f->vfs, a.ino, 1);
	}
	reply_entry_or_err(req, f, rc, &a);
}

static void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name,
		     mode_t mode)
{
	struct fs *f = fuse_req_userdata(req);
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	struct vfs_attr a;
	int rc;

	rc = vfs_mkdir(f->vfs, parent, name, mode & ~ctx->umask, ctx->uid,
		       ctx->gid, &a);
	reply_entry_or_err(req, f, rc, &a);
}

static void op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fs *f = fuse_req_userdata(req);

	fuse_reply_err(req, -vfs_unlink(f->vfs, parent, name));
}

static void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fs *f = fuse_req_userdata(req);

	fuse_reply_err(req, -vfs_rmdir(f->vfs, parent, name));
}

static void op_symlink(fuse_req_t req, const char *link, fuse_ino_t parent,
		       const char *name)
{
	struct fs *f = fuse_req_userdata(req);
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	struct vfs_attr a;
	int rc;

	rc = vfs_symlink(f->vfs, parent, name, link, ctx->uid, ctx->gid, &a);
	reply_entry_or_err(req, f, rc, &a);
}

static void op_readlink(fuse_req_t req, fuse_ino_t ino)
{
	struct fs *f = fuse_req_userdata(req);
	char buf[4097];
	int rc;

	rc = vfs_readlink(f->vfs, ino, buf, sizeof(buf));
	if (rc < 0)
		fuse_reply_err(req, -rc);
	else
		fuse_reply_readlink(req, buf);
}

static void op_rename(fuse_req_t req, fuse_ino_t parent, const char *name,
		      fuse_ino_t newparent, const char *newname,
		      unsigned int flags)
{
	struct fs *f = fuse_req_userdata(req);

	fuse_reply_err(req, -vfs_rename(f->vfs, parent, name, newparent,
					newname, flags));
}

/* S3 has no hard links. */
static void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent,
		    const char *newname)
{
	(void)ino;
	(void)newparent;
	(void)newname;
	fuse_reply_err(req, EPERM);
}

static void op_write(fuse_req_t req, fuse_ino_t ino, const char *buf,
		     size_t size, off_t off, struct fuse_file_info *fi)
{
	struct fs *f = fuse_req_userdata(req);
	ssize_t n;

	(void)ino;
	if (off < 0) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	n = vfs_write(f->vfs, (struct vfs_file *)(uintptr_t)fi->fh, buf, size,
		      (uint64_t)off);
	if (n < 0)
		fuse_reply_err(req, (int)-n);
	else
		fuse_reply_write(req, (size_t)n);
}

static void op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs *f = fuse_req_userdata(req);

	(void)ino;
	fuse_reply_err(
		req, -vfs_flush(f->vfs, (struct vfs_file *)(uintptr_t)fi->fh));
}

static void op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync,
		     struct fuse_file_info *fi)
{
	struct fs *f = fuse_req_userdata(req);

	(void)ino;
	(void)datasync;
	fuse_reply_err(
		req, -vfs_fsync(f->vfs, (struct vfs_file *)(uintptr_t)fi->fh));
}

static void op_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name,
			const char *value, size_t size, int flags)
{
	(void)ino;
	(void)name;
	(void)value;
	(void)size;
	(void)flags;
	fuse_reply_err(req, ENOTSUP);
}

static void op_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	(void)ino;
	(void)name;
	fuse_reply_err(req, ENOTSUP);
}

/*
 * Read-only extended attributes that show the cache state: on a file,
 * user.s3cachefs.{etag,cached_bytes,cached_chunks,last_open,staged}; on
 * the root, user.s3cachefs.cache_dir (how s3cachefs-ctl finds the cache of
 * a path).  Other directories have none.
 */
#define XATTR_PREFIX "user.s3cachefs."
#define XATTR_MAX 6

struct xattr_set {
	const char *name[XATTR_MAX]; /* without XATTR_PREFIX */
	char value[XATTR_MAX][PATH_MAX];
	size_t n;
};

static void xattr_add(struct xattr_set *x, const char *name, const char *fmt,
		      ...) __attribute__((format(printf, 3, 4)));

static void xattr_add(struct xattr_set *x, const char *name, const char *fmt,
		      ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(x->value[x->n], sizeof(x->value[x->n]), fmt, ap);
	va_end(ap);
	x->name[x->n++] = name;
}

/* The attributes of @ino; 0 or -errno. */
static int xattrs_of(struct fs *f, fuse_ino_t ino, struct xattr_set *x)
{
	struct vfs_cache_info ci;
	int rc;

	x->n = 0;
	if (ino == FUSE_ROOT_ID) {
		if (f->cache_dir[0])
			xattr_add(x, "cache_dir", "%s", f->cache_dir);
		return 0;
	}
	rc = vfs_cache_info(f->vfs, ino, &ci);
	if (rc == -EISDIR)
		return 0;
	if (rc < 0)
		return rc;
	if (ci.etag)
		xattr_add(x, "etag", "%s", ci.etag);
	xattr_add(x, "cached_bytes", "%llu",
		  (unsigned long long)ci.cached_bytes);
	xattr_add(x, "cached_chunks", "%llu/%llu",
		  (unsigned long long)ci.cached_chunks,
		  (unsigned long long)ci.chunks);
	xattr_add(x, "last_open", "%s", vfs_served_name(ci.last_open));
	xattr_add(x, "staged", "%s", ci.staged ? "yes" : "no");
	free(ci.etag);
	return 0;
}

/* Reply with @len bytes of @data as getxattr/listxattr want: the size
 * when @size is 0, ERANGE when it does not fit. */
static void reply_xattr_data(fuse_req_t req, const char *data, size_t len,
			     size_t size)
{
	if (size == 0)
		fuse_reply_xattr(req, len);
	else if (len > size)
		fuse_reply_err(req, ERANGE);
	else
		fuse_reply_buf(req, data, len);
}

static void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name,
			size_t size)
{
	struct fs *f = fuse_req_userdata(req);
	struct xattr_set *x = NULL;
	size_t i, pre = strlen(XATTR_PREFIX);
	int rc;

	/* ls -l asks every file for security.selinux: answer without
	 * looking at the cache */
	if (strncmp(name, XATTR_PREFIX, pre) != 0) {
		fuse_reply_err(req, ENODATA);
		return;
	}
	x = malloc(sizeof(*x));
	if (!x) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	rc = xattrs_of(f, ino, x);
	if (rc < 0) {
		fuse_reply_err(req, -rc);
		goto out;
	}
	for (i = 0; i < x->n; i++) {
		if (strncmp(name, XATTR_PREFIX, pre) == 0 &&
		    strcmp(name + pre, x->name[i]) == 0) {
			reply_xattr_data(req, x->value[i], strlen(x->value[i]),
					 size);
			goto out;
		}
	}
	fuse_reply_err(req, ENODATA);
out:
	free(x);
}

static void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	struct fs *f = fuse_req_userdata(req);
	struct xattr_set *x = malloc(sizeof(*x));
	struct buf list = BUF_INIT(BUF_NO_LIMIT);
	size_t i;
	int rc;

	if (!x) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	rc = xattrs_of(f, ino, x);
	for (i = 0; rc == 0 && i < x->n; i++) {
		rc = buf_addf(&list, "%s%s", XATTR_PREFIX, x->name[i]);
		if (rc == 0)
			rc = buf_addc(&list, '\0');
	}
	if (rc < 0)
		fuse_reply_err(req, -rc);
	else
		reply_xattr_data(req, list.data, list.len, size);
	buf_release(&list);
	free(x);
}

static const struct fuse_lowlevel_ops fs_ops = {
	.init = op_init,
	.lookup = op_lookup,
	.forget = op_forget,
	.forget_multi = op_forget_multi,
	.getattr = op_getattr,
	.opendir = op_opendir,
	.readdir = op_readdir,
	.readdirplus = op_readdirplus,
	.releasedir = op_releasedir,
	.open = op_open,
	.read = op_read,
	.release = op_release,
	.statfs = op_statfs,
	.setattr = op_setattr,
	.mknod = op_mknod,
	.mkdir = op_mkdir,
	.unlink = op_unlink,
	.rmdir = op_rmdir,
	.readlink = op_readlink,
	.flush = op_flush,
	.fsync = op_fsync,
	.symlink = op_symlink,
	.rename = op_rename,
	.link = op_link,
	.create = op_create,
	.write = op_write,
	.setxattr = op_setxattr,
	.removexattr = op_removexattr,
	.getxattr = op_getxattr,
	.listxattr = op_listxattr,
};

/* ---- life cycle ---- */

int fs_new(const struct fs_conf *conf, struct vfs *v, struct fs **out)
{
	struct fs *f;

	f = calloc(1, sizeof(*f));
	if (!f)
		return -ENOMEM;
	f->conf = *conf;
	f->fsname = strdup(conf->fsname ? conf->fsname : "s3cachefs");
	f->cache_dir = strdup(conf->cache_dir ? conf->cache_dir : "");
	if (!f->fsname || !f->cache_dir) {
		free(f->fsname);
		free(f->cache_dir);
		free(f);
		return -ENOMEM;
	}
	f->conf.fsname = f->fsname;
	f->conf.cache_dir = f->cache_dir;
	f->vfs = v;
	atomic_init(&f->tuned, false);
	fuse_set_log_func(fs_log);
	*out = f;
	return 0;
}

/* Append ",NAME" or ",NAME=VALUE" with fuse_opt's escapes in VALUE. */
static int add_opt(struct buf *b, const char *name, const char *value)
{
	int rc = buf_addf(b, "%s%s", b->len ? "," : "", name);

	if (rc == 0 && value) {
		rc = buf_addc(b, '=');
		for (; rc == 0 && *value; value++) {
			if (*value == ',' || *value == '\\')
				rc = buf_addc(b, '\\');
			if (rc == 0)
				rc = buf_addc(b, *value);
		}
	}
	return rc;
}

int fs_mount(struct fs *f, const char *mountpoint)
{
	struct buf opts = BUF_INIT(BUF_NO_LIMIT);
	char *argv[5] = { NULL };
	struct fuse_args args = FUSE_ARGS_INIT(0, NULL);
	int argc = 0, rc;

	rc = check_not_mounted(mountpoint);
	if (rc < 0)
		return rc;
	rc = add_opt(&opts, "fsname", f->fsname);
	if (rc == 0)
		rc = add_opt(&opts, "subtype", "s3cachefs");
	if (rc == 0)
		rc = add_opt(&opts, "default_permissions", NULL);
	if (rc == 0 && f->conf.allow_other)
		rc = add_opt(&opts, "allow_other", NULL);
	if (rc == 0 && f->conf.ro)
		rc = add_opt(&opts, "ro", NULL);
	if (rc == 0 && f->conf.nosuid)
		rc = add_opt(&opts, "nosuid", NULL);
	if (rc == 0 && f->conf.nodev)
		rc = add_opt(&opts, "nodev", NULL);
	if (rc == 0 && f->conf.noexec)
		rc = add_opt(&opts, "noexec", NULL);
	if (rc < 0)
		goto out;
	f->mountpoint = strdup(mountpoint);
	if (!f->mountpoint) {
		rc = -ENOMEM;
		goto out;
	}

	argv[argc++] = (char *)"s3cachefs";
	if (f->conf.debug)
		argv[argc++] = (char *)"-d";
	argv[argc++] = (char *)"-o";
	argv[argc++] = opts.data;
	args.argc = argc;
	args.argv = argv;
	args.allocated = 0;

	log_debug("fuse options '%s'", opts.data);
	f->se = fuse_session_new(&args, &fs_ops, sizeof(fs_ops), f);
	if (!f->se) {
		rc = -EIO;
		goto out;
	}
	if (fuse_set_signal_handlers(f->se) != 0) {
		rc = -EIO;
		goto out;
	}
	f->signals = true;
	if (fuse_session_mount(f->se, mountpoint) != 0) {
		rc = -EIO;
		goto out;
	}
	f->mounted = true;
	find_ra_path(f, mountpoint);
	rc = 0;
out:
	fuse_opt_free_args(&args);
	buf_release(&opts);
	return rc;
}

int fs_run(struct fs *f)
{
	int rc;

#if FUSE_VERSION >= FUSE_MAKE_VERSION(3, 12)
	struct fuse_loop_config *cfg = fuse_loop_cfg_create();

	if (!cfg)
		return -ENOMEM;
	fuse_loop_cfg_set_clone_fd(cfg, 1);
	fuse_loop_cfg_set_idle_threads(cfg, IDLE_THREADS);
	if (f->conf.max_threads)
		fuse_loop_cfg_set_max_threads(cfg, f->conf.max_threads);
	rc = fuse_session_loop_mt_312(f->se, cfg);
	fuse_loop_cfg_destroy(cfg);
#else
	struct fuse_loop_config cfg = { .clone_fd = 1,
					.max_idle_threads = IDLE_THREADS };

	rc = fuse_session_loop_mt(f->se, &cfg);
#endif
	/* a signal from fuse_set_signal_handlers() ends it as it should */
	if (rc > 0) {
		log_info("signal %d: unmounting '%s'", rc, f->mountpoint);
		rc = 0;
	} else if (rc < 0) {
		log_error("fuse loop on '%s' failed: %s", f->mountpoint,
			  strerror(-rc));
	}
	return rc;
}

void fs_unmount(struct fs *f)
{
	if (f->mounted) {
		fuse_session_unmount(f->se);
		f->mounted = false;
	}
	if (f->signals) {
		fuse_remove_signal_handlers(f->se);
		f->signals = false;
	}
}

void fs_free(struct fs *f)
{
	if (!f)
		return;
	fs_unmount(f);
	if (f->se)
		fuse_session_destroy(f->se);
	fuse_set_log_func(NULL);
	free(f->mountpoint);
	free(f->fsname);
	free(f->cache_dir);
	free(f);
}
