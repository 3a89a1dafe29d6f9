/*
 * testfs.h - file helpers shared by the unit tests that work on real
 * folders (chunk, crypt, sealfile): a checked snprintf for paths and
 * rm -rf.  Header-only, like tap.h.
 */
#ifndef S3CACHEFS_TESTFS_H
#define S3CACHEFS_TESTFS_H

#include <ftw.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

/* snprintf that aborts the test when @out is too small. */
static void xsnprintf(char *out, size_t size, const char *fmt, ...)
	__attribute__((format(printf, 3, 4), unused));
static void xsnprintf(char *out, size_t size, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(out, size, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= size) {
		fprintf(stderr, "path too long\n");
		abort();
	}
}

static inline int testfs_rm_one(const char *path, const struct stat *st,
				int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

/* Remove @path and everything below it; errors ignored. */
static inline void rm_rf(const char *path)
{
	nftw(path, testfs_rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

#endif
