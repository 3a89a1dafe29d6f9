/*
 * test_admin.c - the pure parts of s3cachefs-ctl's commands: parsing the
 * command line, the wire form (encode, decode, round trips with awkward
 * keys, malformed requests), and JSON strings.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "s3cachefs/admin.h"
#include "s3cachefs/buf.h"
#include "s3cachefs/log.h"
#include "tap.h"

static int parse(const char *line, struct admin_cmd *c, struct buf *err)
{
	char *copy = strdup(line), *argv[16], *save = NULL, *w;
	int argc = 0, rc;

	for (w = strtok_r(copy, " ", &save); w && argc < 16;
	     w = strtok_r(NULL, " ", &save))
		argv[argc++] = w;
	buf_reset(err);
	rc = admin_parse(argc, argv, c, err);
	free(copy);
	return rc;
}

static void test_parse(void)
{
	static const char *const bad[] = {
		"",
		"frob",
		"stats x",
		"stats --in-mount",
		"ls a b",
		"ls --older-than 1s",
		"clear a b",
		"gc x",
		"gc --older-than",
		"gc --older-than 0",
		"gc --older-than soon",
		"gc --json",
		"verify --json",
		"warm",
		"evict",
		"warm -x",
	};
	struct buf err = BUF_INIT(1024);
	struct admin_cmd c;
	char w0[] = "warm", w1[] = "--", w2[] = "-dash", w3[] = "--json";
	char *argv[] = { w0, w1, w2, w3 };
	size_t i;

	is_int(parse("stats --json", &c, &err), 0, "stats --json");
	ok(c.kind == ADMIN_STATS && c.json && c.n == 0, "stats fields");
	admin_cmd_release(&c);
	is_int(parse("ls --json d/", &c, &err), 0, "ls --json PREFIX");
	ok(c.kind == ADMIN_LS && c.json && c.n == 1 &&
		   strcmp(c.targets[0], "d/") == 0,
	   "ls fields");
	admin_cmd_release(&c);
	is_int(parse("gc --older-than 30d", &c, &err), 0, "gc --older-than");
	ok(c.older_than_ms == 30ULL * 86400 * 1000, "30d in ms");
	admin_cmd_release(&c);
	is_int(parse("gc --older-than=90s", &c, &err), 0, "--older-than=");
	ok(c.older_than_ms == 90000, "90s");
	admin_cmd_release(&c);
	is_int(parse("warm a b/ c", &c, &err), 0, "warm three");
	ok(c.kind == ADMIN_WARM && c.n == 3 && !c.in_mount, "warm fields");
	admin_cmd_release(&c);
	is_int(parse("evict --in-mount x", &c, &err), 0, "evict --in-mount");
	ok(c.in_mount, "in_mount");
	admin_cmd_release(&c);
	is_int(admin_parse(4, argv, &c, &err), 0, "'--' ends flags");
	ok(c.n == 2 && strcmp(c.targets[0], "-dash") == 0 &&
		   strcmp(c.targets[1], "--json") == 0,
	   "words after '--' are targets");
	admin_cmd_release(&c);
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		is_int(parse(bad[i], &c, &err), -EINVAL, "refused: '%s'",
		       bad[i]);
		ok(err.len > 0 && !strchr(buf_str(&err), '\n'), "one line: %s",
		   buf_str(&err));
	}
	admin_cmd_release(NULL);
	buf_release(&err);
}

static void round_trip(const char *const *targets, size_t n)
{
	struct admin_cmd c = { .kind = ADMIN_EVICT, .in_mount = true };
	struct buf line = BUF_INIT(BUF_NO_LIMIT), err = BUF_INIT(1024);
	struct admin_cmd back;
	bool same;
	size_t i;

	c.targets = (char **)targets;
	c.n = n;
	is_int(admin_encode(&c, &line), 0, "encode");
	ok(!strchr(buf_str(&line), '\n') && !strchr(buf_str(&line), '\t'),
	   "one line: %s", buf_str(&line));
	is_int(admin_decode(buf_str(&line), &back, &err), 0, "decode: %s",
	       buf_str(&err));
	same = back.kind == ADMIN_EVICT && back.in_mount && back.n == n;
	for (i = 0; same && i < n; i++)
		same = strcmp(back.targets[i], targets[i]) == 0;
	ok(same, "round trip of %zu targets", n);
	admin_cmd_release(&back);
	buf_release(&line);
	buf_release(&err);
}

static void test_wire(void)
{
	static const char *const t1[] = { "plain",     "with space", "100%",
					  "tab\there", "nl\nx",	     "" };
	static const char *const t2[] = { "--json", "-x", "utf8 \xc3\xa9",
					  "%41" };
	static const char *const bad[] = { "",	       "stats%",
					   "stats%4",  "stats%zz",
					   "ls a%00b", "stats  --json",
					   "nosuch" };
	struct admin_cmd c = { .kind = ADMIN_GC, .older_than_ms = 1234 };
	struct buf line = BUF_INIT(BUF_NO_LIMIT), err = BUF_INIT(1024);
	struct admin_cmd back;
	size_t i;

	round_trip(t1, sizeof(t1) / sizeof(t1[0]));
	round_trip(t2, sizeof(t2) / sizeof(t2[0]));
	is_int(admin_encode(&c, &line), 0, "encode gc");
	is_int(admin_decode(buf_str(&line), &back, &err), 0, "decode gc");
	ok(back.kind == ADMIN_GC && back.older_than_ms == 1234,
	   "gc --older-than round trip: %s", buf_str(&line));
	admin_cmd_release(&back);
	buf_reset(&line);
	c = (struct admin_cmd){ .kind = ADMIN_STATS, .json = true };
	admin_encode(&c, &line);
	is_str(buf_str(&line), "stats --json", "stats --json on the wire");
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		buf_reset(&err);
		is_int(admin_decode(bad[i], &back, &err), -EINVAL,
		       "malformed: '%s'", bad[i]);
		ok(err.len > 0, "with a reason");
	}
	buf_release(&line);
	buf_release(&err);
}

static void test_json(void)
{
	struct buf b = BUF_INIT(BUF_NO_LIMIT);

	admin_json_str(&b, "a\"b\\c\n\x01 \xc3\xa9 \xff end");
	is_str(buf_str(&b),
	       "\"a\\\"b\\\\c\\u000a\\u0001 \xc3\xa9 \\ufffd end\"",
	       "json string escapes, UTF-8 kept, bad bytes replaced");
	buf_reset(&b);
	admin_json_str(&b, "\xe2\x82");
	is_str(buf_str(&b), "\"\\ufffd\\ufffd\"", "truncated sequence");
	buf_release(&b);
}

int main(void)
{
	plan_lazy();
	log_init("test_admin", LOG_LVL_ERROR, false);
	test_parse();
	test_wire();
	test_json();
	return done_testing();
}
