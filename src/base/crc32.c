/*
 * crc32.c - CRC-32 by carry-less multiplication, zlib for the rest.
 *
 * The folding follows Intel's "Fast CRC Computation for Generic
 * Polynomials Using PCLMULQDQ Instruction" (Gopal et al., 2009), in the
 * bit-reflected domain of the gzip polynomial 0x104C11DB7: four 128-bit
 * lanes are folded 64 bytes at a time, then into one lane, then to 64 bits,
 * then Barrett-reduced to 32 bits.  It takes a multiple of 16 bytes, at
 * least 64; zlib does the head (none) and the tail (< 16 bytes).  The
 * constants are x^(k) mod P for the fold distances, as in the paper's
 * appendix.  tests/unit/test_crc32.c checks it against zlib on every
 * length up to a few KiB and on random data.
 */
#include <stdatomic.h>
#include <stdint.h>
#include <zlib.h>

#include "s3cachefs/crc32.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define HAVE_CLMUL 1
#include <immintrin.h>
#else
#define HAVE_CLMUL 0
#endif

#define CLMUL_MIN 64 /* below this zlib is as fast */

#if HAVE_CLMUL
__attribute__((target("pclmul,sse4.1"))) static uint32_t
crc32_clmul(uint32_t crc, const unsigned char *buf, size_t len)
{
	static const uint64_t k1k2[2]
		__attribute__((aligned(16))) = { 0x0154442bd4ULL,
						 0x01c6e41596ULL };
	static const uint64_t k3k4[2]
		__attribute__((aligned(16))) = { 0x01751997d0ULL,
						 0x00ccaa009eULL };
	static const uint64_t k5k0[2]
		__attribute__((aligned(16))) = { 0x0163cd6124ULL, 0 };
	static const uint64_t poly[2]
		__attribute__((aligned(16))) = { 0x01db710641ULL,
						 0x01f7011641ULL };
	__m128i x0, x1, x2, x3, x4, x5, x6, x7, x8, y5, y6, y7, y8;

	x1 = _mm_loadu_si128((const __m128i *)(const void *)(buf + 0x00));
	x2 = _mm_loadu_si128((const __m128i *)(const void *)(buf + 0x10));
	x3 = _mm_loadu_si128((const __m128i *)(const void *)(buf + 0x20));
	x4 = _mm_loadu_si128((const __m128i *)(const void *)(buf + 0x30));
	x1 = _mm_xor_si128(x1, _mm_cvtsi32_si128((int)crc));
	x0 = _mm_load_si128((const __m128i *)(const void *)k1k2);
	buf += 64;
	len -= 64;
	while (len >= 64) {
		x5 = _mm_clmulepi64_si128(x1, x0, 0x00);
		x6 = _mm_clmulepi64_si128(x2, x0, 0x00);
		x7 = _mm_clmulepi64_si128(x3, x0, 0x00);
		x8 = _mm_clmulepi64_si128(x4, x0, 0x00);
		x1 = _mm_clmulepi64_si128(x1, x0, 0x11);
		x2 = _mm_clmulepi64_si128(x2, x0, 0x11);
		x3 = _mm_clmulepi64_si128(x3, x0, 0x11);
		x4 = _mm_clmulepi64_si128(x4, x0, 0x11);
		y5 = _mm_loadu_si128(
			(const __m128i *)(const void *)(buf + 0x00));
		y6 = _mm_loadu_si128(
			(const __m128i *)(const void *)(buf + 0x10));
		y7 = _mm_loadu_si128(
			(const __m128i *)(const void *)(buf + 0x20));
		y8 = _mm_loadu_si128(
			(const __m128i *)(const void *)(buf + 0x30));
		x1 = _mm_xor_si128(_mm_xor_si128(x1, x5), y5);
		x2 = _mm_xor_si128(_mm_xor_si128(x2, x6), y6);
		x3 = _mm_xor_si128(_mm_xor_si128(x3, x7), y7);
		x4 = _mm_xor_si128(_mm_xor_si128(x4, x8), y8);
		buf += 64;
		len -= 64;
	}
	/* four lanes into one */
	x0 = _mm_load_si128((const __m128i *)(const void *)k3k4);
	x5 = _mm_clmulepi64_si128(x1, x0, 0x00);
	x1 = _mm_clmulepi64_si128(x1, x0, 0x11);
	x1 = _mm_xor_si128(_mm_xor_si128(x1, x2), x5);
	x5 = _mm_clmulepi64_si128(x1, x0, 0x00);
	x1 = _mm_clmulepi64_si128(x1, x0, 0x11);
	x1 = _mm_xor_si128(_mm_xor_si128(x1, x3), x5);
	x5 = _mm_clmulepi64_si128(x1, x0, 0x00);
	x1 = _mm_clmulepi64_si128(x1, x0, 0x11);
	x1 = _mm_xor_si128(_mm_xor_si128(x1, x4), x5);
	while (len >= 16) {
		x2 = _mm_loadu_si128((const __m128i *)(const void *)buf);
		x5 = _mm_clmulepi64_si128(x1, x0, 0x00);
		x1 = _mm_clmulepi64_si128(x1, x0, 0x11);
		x1 = _mm_xor_si128(_mm_xor_si128(x1, x2), x5);
		buf += 16;
		len -= 16;
	}
	/* 128 bits to 64 */
	x2 = _mm_clmulepi64_si128(x1, x0, 0x10);
	x3 = _mm_setr_epi32(~0, 0, ~0, 0);
	x1 = _mm_srli_si128(x1, 8);
	x1 = _mm_xor_si128(x1, x2);
	x0 = _mm_loadl_epi64((const __m128i *)(const void *)k5k0);
	x2 = _mm_srli_si128(x1, 4);
	x1 = _mm_and_si128(x1, x3);
	x1 = _mm_clmulepi64_si128(x1, x0, 0x00);
	x1 = _mm_xor_si128(x1, x2);
	/* Barrett reduction to 32 bits */
	x0 = _mm_load_si128((const __m128i *)(const void *)poly);
	x2 = _mm_and_si128(x1, x3);
	x2 = _mm_clmulepi64_si128(x2, x0, 0x10);
	x2 = _mm_and_si128(x2, x3);
	x2 = _mm_clmulepi64_si128(x2, x0, 0x00);
	x1 = _mm_xor_si128(x1, x2);
	return (uint32_t)_mm_extract_epi32(x1, 1);
}
#endif

/* 0 unknown, 1 zlib, 2 clmul */
static atomic_int impl;

static int pick(void)
{
	int v = atomic_load_explicit(&impl, memory_order_relaxed);

	if (v)
		return v;
#if HAVE_CLMUL
	__builtin_cpu_init();
	v = __builtin_cpu_supports("pclmul") && __builtin_cpu_supports("sse4.1")
		    ? 2
		    : 1;
#else
	v = 1;
#endif
	atomic_store_explicit(&impl, v, memory_order_relaxed);
	return v;
}

uint32_t crc32_update(uint32_t crc, const void *p, size_t len)
{
	const unsigned char *b = p;

#if HAVE_CLMUL
	if (len >= CLMUL_MIN && pick() == 2) {
		size_t n = len & ~(size_t)15;

		crc = ~crc32_clmul(~crc, b, n);
		b += n;
		len -= n;
	}
#endif
	if (len)
		crc = (uint32_t)crc32_z(crc, b, len);
	return crc;
}

int crc32_is_accelerated(void)
{
	return pick() == 2;
}
