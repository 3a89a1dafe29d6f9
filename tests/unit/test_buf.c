/*
 * test_buf.c - the bounded buffer: growth, the bound, formatting, detach.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "s3cachefs/buf.h"
#include "tap.h"

int main(void)
{
	struct buf b = BUF_INIT(BUF_NO_LIMIT);
	struct buf small;
	char big[5000];
	size_t len;
	char *p;
	int i;

	is_str(buf_str(&b), "", "empty buf reads as empty string");
	is_int(buf_adds(&b, "abc"), 0, "append");
	is_int(buf_addc(&b, 'd'), 0, "append char");
	is_int(buf_addf(&b, "-%d-%s", 42, "x"), 0, "append formatted");
	is_str(buf_str(&b), "abcd-42-x", "contents");
	is_int(b.len, 9, "length counts no NUL");
	memset(big, 'z', sizeof(big));
	for (i = 0; i < 100; i++)
		buf_add(&b, big, sizeof(big));
	is_int(b.len, 9 + 100 * sizeof(big), "grows past many doublings");
	ok(b.data[b.len] == '\0', "always NUL-terminated");
	buf_reset(&b);
	is_int(b.len, 0, "reset empties");
	is_str(buf_str(&b), "", "reset leaves a valid string");

	buf_init(&small, 8);
	is_int(buf_adds(&small, "12345678"), 0, "fills to the bound");
	is_int(buf_addc(&small, '9'), -EMSGSIZE, "one past the bound fails");
	is_str(buf_str(&small), "12345678", "failed append leaves contents");
	is_int(buf_addf(&small, "%s", "x"), -EMSGSIZE, "formatted over bound");
	p = buf_detach(&small, &len);
	is_str(p, "12345678", "detach gives the string");
	is_int(len, 8, "detach gives the length");
	ok(small.data == NULL && small.len == 0, "detach empties the buf");
	free(p);
	p = buf_detach(&small, &len);
	ok(p != NULL && *p == '\0' && len == 0, "detach of empty gives \"\"");
	free(p);
	buf_release(&b);
	buf_release(&b);
	buf_release(NULL);
	ok(1, "release is idempotent and NULL-safe");
	return done_testing();
}
