/*
 * buf.h - growable byte buffer with an upper bound (curl's dynbuf).
 *
 * A buf owns its memory.  data is NULL until the first append and is always
 * NUL-terminated after it (the NUL is not counted in len), so text can be
 * used as a C string.  An append that would take len past max fails with
 * -EMSGSIZE and leaves the buffer as it was: this is how every body read
 * from the network is bounded.
 */
#ifndef S3CACHEFS_BUF_H
#define S3CACHEFS_BUF_H

#include <stdarg.h>
#include <stddef.h>

struct buf {
	char *data;   /* NULL or len bytes followed by a NUL */
	size_t len;   /* bytes in use */
	size_t alloc; /* bytes allocated (len + 1 <= alloc) */
	size_t max;   /* len never exceeds this */
};

#define BUF_NO_LIMIT ((size_t)-1 / 2)
#define BUF_INIT(max_)             \
	{                          \
		NULL, 0, 0, (max_) \
	}

/* Start empty with the bound @max (BUF_NO_LIMIT for none). */
void buf_init(struct buf *b, size_t max);

/* Free the memory and return to the empty state; keeps max. NULL-safe. */
void buf_release(struct buf *b);

/* Drop the contents but keep the memory for reuse. */
void buf_reset(struct buf *b);

/* Make room for @extra more bytes: 0, -ENOMEM or -EMSGSIZE. */
int buf_grow(struct buf *b, size_t extra);

/* Append: 0, -ENOMEM or -EMSGSIZE; on error nothing was appended. */
int buf_add(struct buf *b, const void *data, size_t len);
int buf_adds(struct buf *b, const char *s);
int buf_addc(struct buf *b, char c);
int buf_addf(struct buf *b, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
int buf_vaddf(struct buf *b, const char *fmt, va_list ap)
	__attribute__((format(printf, 2, 0)));

/* Contents as a C string: "" when empty; owned by the buf. */
const char *buf_str(const struct buf *b);

/*
 * Hand the memory to the caller (free() it) and leave the buf empty.
 * Returns a NUL-terminated string, "" allocated when empty, or NULL on
 * ENOMEM.  @len, when not NULL, receives the length.
 */
char *buf_detach(struct buf *b, size_t *len);

#endif
