/*
 * fileio.h - durable file writes and whole-file reads.
 */
#ifndef S3CACHEFS_FILEIO_H
#define S3CACHEFS_FILEIO_H

#include <stddef.h>
#include <sys/types.h>

/*
 * Write @len bytes to @path atomically: a temporary file in the same
 * directory, fsync when @durable, rename over @path, fsync of the directory
 * when @durable.  No reader ever sees a partial file.  0 or -errno; on
 * error the temporary file is removed.
 */
int write_file_atomic(const char *path, const void *data, size_t len,
		      mode_t mode, int durable);

/*
 * Read the whole of @path, at most @max bytes, into *out (NUL-terminated,
 * caller frees).  -EFBIG when larger, -errno otherwise.
 */
int read_file(const char *path, size_t max, char **out, size_t *out_len);

/* Write all of @len bytes at @off, retrying short writes and EINTR. */
int pwrite_all(int fd, const void *data, size_t len, off_t off);

/* Read up to @len bytes at @off, retrying EINTR and short reads; returns
 * bytes read (short only at end of file) or -errno. */
long pread_full(int fd, void *data, size_t len, off_t off);

#endif
