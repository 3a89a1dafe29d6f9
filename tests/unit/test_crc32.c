/*
 * test_crc32.c - crc32_update() gives zlib's crc32_z() value for every
 * length, alignment and starting value, on the folded path and the tail.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "s3cachefs/crc32.h"
#include "tap.h"

static uint32_t ref(uint32_t crc, const unsigned char *p, size_t n)
{
	return (uint32_t)crc32_z(crc, p, n);
}

int main(void)
{
	size_t big = 4u << 20, n, a, bad = 0;
	unsigned char *buf = malloc(big + 64);
	uint32_t seed = 12345, start;

	if (!buf)
		return 1;
	for (n = 0; n < big + 64; n++) {
		seed = seed * 1103515245u + 12345u;
		buf[n] = (unsigned char)(seed >> 16);
	}
	diag("accelerated: %d", crc32_is_accelerated());
	/* every length to 4200 at every alignment mod 16 */
	for (a = 0; a < 16; a++)
		for (n = 0; n <= 4200; n++)
			if (crc32_update(0, buf + a, n) != ref(0, buf + a, n))
				bad++;
	is_int((int)bad, 0, "every length 0..4200 at 16 alignments");
	/* continuing from a value, as a block split in two would */
	bad = 0;
	for (n = 0; n < 2000; n += 7) {
		start = ref(0, buf, n);
		if (crc32_update(start, buf + n, 3000) !=
		    ref(start, buf + n, 3000))
			bad++;
		if (crc32_update(crc32_update(0, buf, n), buf + n, 5000) !=
		    ref(0, buf, n + 5000))
			bad++;
	}
	is_int((int)bad, 0, "continues from a running value");
	ok(crc32_update(0, buf, 65536) == ref(0, buf, 65536), "64 KiB block");
	ok(crc32_update(0, buf + 3, big) == ref(0, buf + 3, big),
	   "4 MiB unaligned");
	memset(buf, 0, 4096);
	ok(crc32_update(0, buf, 4096) == ref(0, buf, 4096), "zeros");
	memset(buf, 0xff, 4096);
	ok(crc32_update(0, buf, 4096) == ref(0, buf, 4096), "ones");
	ok(crc32_update(0, "123456789", 9) == 0xCBF43926u, "check value");
	free(buf);
	return done_testing();
}
