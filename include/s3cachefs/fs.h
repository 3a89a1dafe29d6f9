/*
 * fs.h - the FUSE adapter: serves a struct vfs through libfuse3's low-level
 * API on one mount point.
 *
 * This is the only module that includes fuse_lowlevel.h.  It turns kernel
 * requests into vfs calls and vfs answers into replies: attributes into
 * struct stat (mode 0755 for directories, 0644 for files, owned by
 * conf->uid and conf->gid), "no such name" into a negative entry the kernel
 * caches for conf->negative_timeout, and every request that would modify the
 * tree into EROFS.  libfuse's own messages go through log.h.
 *
 * Reads arrive in requests of up to FS_MAX_IO bytes: the adapter asks the
 * kernel for FUSE_MAX_PAGES pages per request and, when the process may
 * (root), raises the mount's readahead to FS_MAX_IO, without which the
 * kernel splits cached reads into 128 KiB requests.  Every inode's
 * st_blksize is FS_MAX_IO too, so cp and other tools that size their
 * buffers by it write (and read) 1 MiB per call, one FUSE request each,
 * not 128 KiB.
 *
 * Life cycle: fs_new, fs_mount, fs_run (returns on unmount or on SIGTERM,
 * SIGINT or SIGHUP), fs_unmount, fs_free.  Not thread-safe itself: call
 * these from one thread; the request handlers run on libfuse's worker
 * threads and may run concurrently.
 */
#ifndef S3CACHEFS_FS_H
#define S3CACHEFS_FS_H

#include <stdbool.h>
#include <sys/types.h>

struct vfs;

/* The largest read the kernel is asked to send in one request. */
#define FS_MAX_IO (1024 * 1024)

struct fs_conf {
	const char *fsname;	 /* "s3cachefs:BUCKET", shown by mount(8) */
	double entry_timeout;	 /* seconds the kernel trusts a name */
	double attr_timeout;	 /* seconds it trusts attributes */
	double negative_timeout; /* seconds it trusts "no such name" */
	bool allow_other;	 /* let other users in (and root) */
	bool ro;		 /* mount read-only */
	/* mount flags passed through (libfuse adds nosuid,nodev anyway) */
	bool nosuid, nodev, noexec;
	uid_t uid; /* owner of every inode */
	gid_t gid;
	unsigned max_threads; /* worker threads at most; 0: libfuse's */
	bool debug;	      /* log every request (libfuse's -d) */
	const char
		*cache_dir; /* shown as the root's user.s3cachefs.cache_dir */
};

struct fs;

/*
 * Build an adapter serving @v (borrowed: it must outlive the fs).  Strings
 * of @conf are copied.  0 or -ENOMEM.
 */
int fs_new(const struct fs_conf *conf, struct vfs *v, struct fs **out);

/*
 * Create the FUSE session, install the signal handlers that end fs_run()
 * (SIGTERM, SIGINT, SIGHUP; SIGPIPE is ignored) and mount on @mountpoint
 * (an absolute path to a directory).  0; -EBUSY when an s3cachefs mount is
 * already there, -EIO when libfuse refused (both logged, one line);
 * -ENOMEM.
 */
int fs_mount(struct fs *f, const char *mountpoint);

/*
 * Serve requests on libfuse's multithreaded loop until the file system is
 * unmounted or one of the signals above arrives.  0 on either, or -errno
 * when the loop failed (logged).
 */
int fs_run(struct fs *f);

/* Unmount (when mounted) and restore the signal handlers.  Idempotent. */
void fs_unmount(struct fs *f);

/* fs_unmount, then free the session and @f.  NULL-safe. */
void fs_free(struct fs *f);

#endif
