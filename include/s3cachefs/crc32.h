/*
 * crc32.h - CRC-32 (the zlib/gzip polynomial), fast where the CPU allows.
 *
 * The same value as zlib's crc32_z(), computed with carry-less multiplies
 * (PCLMULQDQ, folding 64 bytes at a time) on x86-64 CPUs that have them
 * and by zlib otherwise; which one is chosen once, at the first call.  The
 * chunk files check every 64 KiB block they serve with it, so it sits on
 * every cache hit: zlib's table code does about 6 GB/s, the folded one
 * several times that.
 *
 * Thread-safe, no allocation.
 */
#ifndef S3CACHEFS_CRC32_H
#define S3CACHEFS_CRC32_H

#include <stddef.h>
#include <stdint.h>

/* CRC-32 of @len bytes at @p, continuing from @crc (0 to start). */
uint32_t crc32_update(uint32_t crc, const void *p, size_t len);

/* True when crc32_update() uses the folded (PCLMULQDQ) code. */
int crc32_is_accelerated(void);

#endif
