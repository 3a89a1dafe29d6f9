/*
 * test_meta.c - the metadata store: objects, negatives, listings joined
 * with objects, chunk rows, clear; on ":memory:" and on a file for WAL,
 * reopen, source change, schema refusal; and many threads at once.
 *
 * Only src/ is barred from sqlite3.h: this test opens the database file
 * directly to check what meta.c wrote and to fake a newer schema.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#include "s3cachefs/log.h"
#include "s3cachefs/meta.h"
#include "tap.h"

#define MAX_SEEN 16

static char tmpdir[64];
static char dbpath[128];

static struct meta *open_mem(void)
{
	struct meta_conf conf = { .path = ":memory:", .source = "mem|b" };
	struct meta *m = NULL;

	if (meta_open(&conf, &m) != 0)
		return NULL;
	return m;
}

static int open_file(const char *source, struct meta **m)
{
	struct meta_conf conf = { .path = dbpath, .source = source };

	return meta_open(&conf, m);
}

/* Listing entries as the callback saw them, copied. */
struct seen_entries {
	int n;
	int stop_at; /* return -ECANCELED on this visit (1-based); 0: never */
	char name[MAX_SEEN][64];
	bool is_dir[MAX_SEEN];
	bool etag_null[MAX_SEEN];
	char etag[MAX_SEEN][64];
	uint64_t size[MAX_SEEN];
	int64_t mtime[MAX_SEEN];
};

static int collect_entry(void *ctx, const struct meta_entry *e)
{
	struct seen_entries *s = ctx;

	if (s->n >= MAX_SEEN)
		return -E2BIG;
	snprintf(s->name[s->n], sizeof(s->name[0]), "%s", e->name);
	s->is_dir[s->n] = e->is_dir;
	s->etag_null[s->n] = e->etag == NULL;
	snprintf(s->etag[s->n], sizeof(s->etag[0]), "%s",
		 e->etag ? e->etag : "");
	s->size[s->n] = e->size;
	s->mtime[s->n] = e->mtime;
	s->n++;
	if (s->stop_at && s->n == s->stop_at)
		return -ECANCELED;
	return 0;
}

/* Chunk rows as the callback saw them, copied. */
struct seen_chunks {
	int n;
	int stop_at;
	char name[MAX_SEEN][80];
	char key[MAX_SEEN][64];
	char etag[MAX_SEEN][64];
	uint64_t index[MAX_SEEN];
	uint64_t disk_bytes[MAX_SEEN];
	int64_t atime_ms[MAX_SEEN];
};

static int collect_chunk(void *ctx, const struct meta_chunk *c)
{
	struct seen_chunks *s = ctx;

	if (s->n >= MAX_SEEN)
		return -E2BIG;
	snprintf(s->name[s->n], sizeof(s->name[0]), "%s", c->name);
	snprintf(s->key[s->n], sizeof(s->key[0]), "%s", c->key);
	snprintf(s->etag[s->n], sizeof(s->etag[0]), "%s", c->etag);
	s->index[s->n] = c->index;
	s->disk_bytes[s->n] = c->disk_bytes;
	s->atime_ms[s->n] = c->atime_ms;
	s->n++;
	if (s->stop_at && s->n == s->stop_at)
		return -ECANCELED;
	return 0;
}

static int count_chunk(void *ctx, const struct meta_chunk *c)
{
	(void)c;
	(*(int *)ctx)++;
	return 0;
}

static int count_entry(void *ctx, const struct meta_entry *e)
{
	(void)e;
	(*(int *)ctx)++;
	return 0;
}

/* Index of chunk @name among @s's rows, or -1. */
static int chunk_at(const struct seen_chunks *s, const char *name)
{
	int i;

	for (i = 0; i < s->n; i++)
		if (strcmp(s->name[i], name) == 0)
			return i;
	return -1;
}

static int put_obj(struct meta *m, const char *key, const char *etag,
		   uint64_t size, int64_t atime_ms)
{
	struct meta_object o = { .key = (char *)key,
				 .etag = (char *)etag,
				 .size = size,
				 .mtime = 1700000000,
				 .checked_ms = 1000,
				 .expires_ms = 2000,
				 .atime_ms = atime_ms };

	return meta_object_put(m, &o);
}

static void test_objects(struct meta *m)
{
	struct meta_object o = { .key = (char *)"sentinel" };
	struct meta_object in = { .key = (char *)"a/b",
				  .etag = (char *)"\"e1\"",
				  .size = 5000000000ULL,
				  .mtime = 1700000001,
				  .checked_ms = 1111,
				  .expires_ms = 2222,
				  .atime_ms = 0 };
	const char *odd = "日本/ü x%_'\";--";
	int64_t exp;

	is_int(meta_object_get(m, "a/b", &o), -ENOENT, "get of missing key");
	is_str(o.key, "sentinel", "failed get leaves *out alone");

	is_int(meta_object_put(m, &in), 0, "put object");
	is_int(meta_object_get(m, "a/b", &o), 0, "get object");
	is_str(o.key, "a/b", "key");
	is_str(o.etag, "\"e1\"", "etag");
	ok(o.size == 5000000000ULL, "size past 32 bits");
	is_int(o.mtime, 1700000001, "mtime");
	is_int(o.checked_ms, 1111, "checked_ms");
	is_int(o.expires_ms, 2222, "expires_ms");
	is_int(o.atime_ms, 0, "atime 0 on insert");
	meta_object_release(&o);
	ok(o.key == NULL && o.etag == NULL, "release clears the struct");
	meta_object_release(NULL);

	in.atime_ms = 1234;
	is_int(meta_object_put(m, &in), 0, "put with atime");
	in.atime_ms = 0;
	in.etag = (char *)"\"e2\"";
	in.size = 7;
	in.expires_ms = 3333;
	is_int(meta_object_put(m, &in), 0, "update with atime 0");
	is_int(meta_object_get(m, "a/b", &o), 0, "get updated");
	is_str(o.etag, "\"e2\"", "etag updated");
	is_int(o.size, 7, "size updated");
	is_int(o.expires_ms, 3333, "expiry updated");
	is_int(o.atime_ms, 1234, "atime kept when put with 0");
	meta_object_release(&o);

	in.atime_ms = 5678;
	is_int(meta_object_put(m, &in), 0, "update with atime");
	is_int(meta_object_get(m, "a/b", &o), 0, "get");
	is_int(o.atime_ms, 5678, "atime replaced when given");
	meta_object_release(&o);

	is_int(meta_object_expire(m, "a/b"), 0, "expire");
	is_int(meta_object_get(m, "a/b", &o), 0, "get expired");
	is_int(o.expires_ms, 0, "expires_ms 0");
	is_str(o.etag, "\"e2\"", "expire keeps etag");
	is_int(o.checked_ms, 1111, "expire keeps checked_ms");
	meta_object_release(&o);
	is_int(meta_object_expire(m, "no/such"), 0, "expire of missing key");

	is_int(put_obj(m, "big", "x", UINT64_MAX - 1, 0), 0, "put huge size");
	is_int(meta_object_get(m, "big", &o), 0, "get huge size");
	ok(o.size == UINT64_MAX - 1, "unsigned 64-bit size round-trips");
	meta_object_release(&o);

	is_int(put_obj(m, odd, "\"odd\"", 1, 0), 0, "put odd key");
	is_int(put_obj(m, "a/b/", "\"slash\"", 2, 0), 0, "put a/b/");
	is_int(meta_object_get(m, odd, &o), 0, "get odd key");
	is_str(o.key, odd, "odd key round-trips");
	is_str(o.etag, "\"odd\"", "odd key's etag");
	meta_object_release(&o);
	is_int(meta_object_get(m, "a/b/", &o), 0, "get a/b/");
	is_str(o.etag, "\"slash\"", "a/b/ is not a/b");
	meta_object_release(&o);
	is_int(meta_object_get(m, "a/", &o), -ENOENT, "no prefix matching");

	is_int(meta_negative_put(m, "a/c", 99), 0, "negative for a/c");
	is_int(put_obj(m, "a/c", "\"c\"", 3, 0), 0, "put a/c");
	is_int(meta_negative_get(m, "a/c", &exp), -ENOENT,
	       "object put drops its negative");

	is_int(meta_object_delete(m, "a/b"), 0, "delete");
	is_int(meta_object_get(m, "a/b", &o), -ENOENT, "deleted");
	is_int(meta_object_delete(m, "a/b"), 0, "delete again");
	is_int(meta_object_get(m, "a/b/", &o), 0, "sibling key survives");
	meta_object_release(&o);

	{
		unsigned long before = log_error_count();
		struct meta_object bad = { .key = (char *)"k", .etag = NULL };

		is_int(meta_object_put(m, &bad), -EINVAL, "NULL etag refused");
		is_int(log_error_count() - before, 1, "logged once");
		is_int(meta_object_get(m, "k", &o), -ENOENT, "nothing stored");
	}
}

static void test_touch(struct meta *m)
{
	struct meta_touch t[] = {
		{ .name = "t/1", .atime_ms = 100 },
		{ .name = "t/missing", .atime_ms = 200 },
		{ .name = "t/3", .atime_ms = 300 },
	};
	struct meta_object o;

	put_obj(m, "t/1", "1", 1, 0);
	put_obj(m, "t/2", "2", 2, 42);
	put_obj(m, "t/3", "3", 3, 0);
	is_int(meta_object_touch_many(m, t, 3), 0, "touch many");
	is_int(meta_object_touch_many(m, t, 0), 0, "touch none");
	is_int(meta_object_get(m, "t/1", &o), 0, "get t/1");
	is_int(o.atime_ms, 100, "t/1 touched");
	meta_object_release(&o);
	is_int(meta_object_get(m, "t/2", &o), 0, "get t/2");
	is_int(o.atime_ms, 42, "t/2 untouched");
	meta_object_release(&o);
	is_int(meta_object_get(m, "t/3", &o), 0, "get t/3");
	is_int(o.atime_ms, 300, "t/3 touched");
	is_str(o.etag, "3", "touch keeps etag");
	meta_object_release(&o);
	is_int(meta_object_get(m, "t/missing", &o), -ENOENT,
	       "touch creates no row");
}

static void test_negatives(struct meta *m)
{
	int64_t exp = -1;

	is_int(meta_negative_get(m, "n/x", &exp), -ENOENT, "no negative");
	is_int(exp, -1, "*expires_ms untouched on -ENOENT");
	is_int(meta_negative_put(m, "n/x", 5000), 0, "put negative");
	is_int(meta_negative_get(m, "n/x", &exp), 0, "get negative");
	is_int(exp, 5000, "its expiry");
	is_int(meta_negative_put(m, "n/x", 1), 0, "put again, expired");
	is_int(meta_negative_get(m, "n/x", &exp), 0, "expired still found");
	is_int(exp, 1, "expiry replaced");
	is_int(meta_negative_delete(m, "n/x"), 0, "delete negative");
	is_int(meta_negative_get(m, "n/x", &exp), -ENOENT, "deleted");
	is_int(meta_negative_delete(m, "n/x"), 0, "delete missing");
}

static void test_listings(struct meta *m)
{
	/* out of order; byte order is Z < a < b < c.txt < é */
	struct meta_entry e[] = {
		{ .name = "b", .etag = "\"b1\"", .size = 10, .mtime = 111 },
		{ .name = "a", .is_dir = true },
		{ .name = "é", .etag = "\"u\"", .size = 30, .mtime = 333 },
		{ .name = "c.txt", .etag = "\"c\"", .size = 20, .mtime = 222 },
		{ .name = "Z", .etag = "\"z\"", .size = 40, .mtime = 444 },
	};
	static const char *const order[] = { "Z", "a", "b", "c.txt", "é" };
	struct meta_entry sub[] = { { .name = "deep", .etag = "d" } };
	struct meta_entry again[] = {
		{ .name = "new", .is_dir = true },
		{ .name = "b", .etag = "\"b2\"", .size = 11, .mtime = 112 },
	};
	struct meta_entry dup[] = {
		{ .name = "x", .etag = "1" },
		{ .name = "x", .is_dir = true },
	};
	struct meta_entry root[] = { { .name = "d", .is_dir = true } };
	struct seen_entries s;
	struct meta_object o = { .key = (char *)"sentinel" };
	int64_t exp = -1, neg;
	bool is_dir = true;
	unsigned long before;
	int i, n;

	is_int(meta_listing_get(m, "d/", &exp, collect_entry, &s), -ENOENT,
	       "no listing yet");
	is_int(meta_listing_find(m, "d/", "b", &exp, &is_dir, &o), -ENOENT,
	       "find without listing");
	is_int(exp, -1, "*expires_ms untouched on -ENOENT");

	/* an older row for d/b with an atime, and negatives to be dropped */
	put_obj(m, "d/b", "\"b0\"", 9, 777);
	meta_negative_put(m, "d/b", 9999);
	meta_negative_put(m, "d/a", 9999);
	meta_negative_put(m, "d/q", 9999);

	is_int(meta_listing_put(m, "d/", 5000, 65000, e, 5), 0, "put listing");
	is_int(meta_listing_put(m, "d/sub/", 5000, 65000, sub, 1), 0,
	       "put sub listing");
	is_int(meta_listing_put(m, "", 5000, 65000, root, 1), 0,
	       "put root listing");

	memset(&s, 0, sizeof(s));
	is_int(meta_listing_get(m, "d/", &exp, collect_entry, &s), 0,
	       "get listing");
	is_int(exp, 65000, "listing expiry");
	is_int(s.n, 5, "five entries, none from d/sub/");
	for (i = 0; i < 5 && i < s.n; i++)
		is_str(s.name[i], order[i], "entry %d in byte order", i);
	ok(s.is_dir[1] && s.etag_null[1], "a is a directory, etag NULL");
	ok(!s.is_dir[2], "b is a file");
	is_str(s.etag[2], "\"b1\"", "b's etag from the listing");
	is_int(s.size[2], 10, "b's size");
	is_int(s.mtime[2], 111, "b's mtime");
	is_str(s.etag[3], "\"c\"", "c.txt's etag");
	is_int(s.size[3], 20, "c.txt's size");
	is_int(s.size[4], 30, "é's size");
	is_int(s.mtime[0], 444, "Z's mtime");

	is_int(meta_object_get(m, "d/b", &o), 0, "listing wrote d/b");
	is_str(o.etag, "\"b1\"", "object etag from listing");
	is_int(o.checked_ms, 5000, "checked_ms = fetched_ms");
	is_int(o.expires_ms, 65000, "object expiry = listing expiry");
	is_int(o.atime_ms, 777, "listing keeps the atime");
	meta_object_release(&o);
	is_int(meta_object_get(m, "d/c.txt", &o), 0, "listing wrote d/c.txt");
	is_int(o.atime_ms, 0, "new object atime 0");
	meta_object_release(&o);
	is_int(meta_object_get(m, "d/a", &o), -ENOENT,
	       "no object row for a directory");
	is_int(meta_negative_get(m, "d/b", &neg), -ENOENT,
	       "file's negative dropped");
	is_int(meta_negative_get(m, "d/a", &neg), -ENOENT,
	       "directory's negative dropped");
	is_int(meta_negative_get(m, "d/q", &neg), 0, "unrelated negative kept");

	/* a HEAD refresh shows through the listing; a lost row still lists */
	put_obj(m, "d/c.txt", "\"c2\"", 21, 0);
	meta_object_delete(m, "d/Z");
	memset(&s, 0, sizeof(s));
	is_int(meta_listing_get(m, "d/", NULL, collect_entry, &s), 0,
	       "get listing, NULL expiry");
	is_int(s.n, 5, "still five entries");
	is_str(s.etag[3], "\"c2\"", "c.txt shows its object's new etag");
	is_int(s.size[3], 21, "and new size");
	is_str(s.name[0], "Z", "Z listed without its object row");
	ok(!s.is_dir[0] && !s.etag_null[0], "as a file with a non-NULL etag");
	is_str(s.etag[0], "", "etag \"\"");
	is_int(s.size[0], 0, "size 0");
	is_int(s.mtime[0], 0, "mtime 0");

	exp = -1;
	is_int(meta_listing_find(m, "d/", "b", &exp, &is_dir, &o), 0,
	       "find file");
	ok(!is_dir, "file is no dir");
	is_int(exp, 65000, "find gives the listing expiry");
	is_str(o.key, "d/b", "object key is dir + name");
	is_str(o.etag, "\"b1\"", "object etag");
	is_int(o.size, 10, "object size");
	is_int(o.mtime, 111, "object mtime");
	is_int(o.atime_ms, 777, "object atime");
	meta_object_release(&o);
	o.key = (char *)"sentinel";
	is_int(meta_listing_find(m, "d/", "a", &exp, &is_dir, &o), 0,
	       "find dir");
	ok(is_dir, "is_dir set");
	is_str(o.key, "sentinel", "obj untouched for a directory");
	is_int(meta_listing_find(m, "d/", "b", NULL, &is_dir, NULL), 0,
	       "find with NULL expiry and obj");
	exp = -1;
	is_int(meta_listing_find(m, "d/", "nope", &exp, &is_dir, &o), 1,
	       "name not in listing");
	is_int(exp, 65000, "expiry given for 1 too");
	is_int(meta_listing_find(m, "d/", "Z", &exp, &is_dir, &o), 0,
	       "find file without object row");
	is_str(o.key, "d/Z", "its key");
	is_str(o.etag, "", "its etag \"\"");
	is_int(o.expires_ms, 0, "due for revalidation");
	meta_object_release(&o);
	is_int(meta_listing_find(m, "", "d", &exp, &is_dir, &o), 0,
	       "find in the root listing");
	ok(is_dir, "d is a directory");
	is_int(meta_listing_find(m, "x/", "b", &exp, &is_dir, &o), -ENOENT,
	       "find in unlisted dir");

	memset(&s, 0, sizeof(s));
	s.stop_at = 2;
	is_int(meta_listing_get(m, "d/", &exp, collect_entry, &s), -ECANCELED,
	       "callback error stops the walk");
	is_int(s.n, 2, "after two entries");
	n = 0;
	is_int(meta_listing_get(m, "d/", &exp, count_entry, &n), 0,
	       "walk again after a stop");
	is_int(n, 5, "all five");

	is_int(meta_listing_expire(m, "d/"), 0, "expire listing");
	is_int(meta_listing_find(m, "d/", "b", &exp, &is_dir, NULL), 0,
	       "find after expire");
	is_int(exp, 0, "listing expiry 0");

	is_int(meta_listing_put(m, "d/", 6000, 66000, again, 2), 0,
	       "replace listing");
	memset(&s, 0, sizeof(s));
	is_int(meta_listing_get(m, "d/", &exp, collect_entry, &s), 0,
	       "get replaced");
	is_int(s.n, 2, "old entries dropped");
	is_str(s.name[0], "b", "b first");
	is_str(s.etag[0], "\"b2\"", "b's new etag");
	is_str(s.name[1], "new", "then new");
	is_int(exp, 66000, "new expiry");
	is_int(meta_listing_find(m, "d/", "c.txt", &exp, &is_dir, NULL), 1,
	       "c.txt gone from listing");
	is_int(meta_object_get(m, "d/b", &o), 0, "d/b");
	is_int(o.checked_ms, 6000, "d/b checked again");
	is_int(o.atime_ms, 777, "atime still kept");
	meta_object_release(&o);
	n = 0;
	is_int(meta_listing_get(m, "d/sub/", &exp, count_entry, &n), 0,
	       "sub listing untouched");
	is_int(n, 1, "its one entry");

	before = log_error_count();
	is_int(meta_listing_put(m, "d/", 7000, 77000, dup, 2), -EINVAL,
	       "duplicate names refused");
	is_int(log_error_count() - before, 1, "logged once");
	memset(&s, 0, sizeof(s));
	is_int(meta_listing_get(m, "d/", &exp, collect_entry, &s), 0,
	       "listing after refused put");
	ok(s.n == 2 && exp == 66000, "rolled back: previous listing intact");
	is_int(meta_object_get(m, "d/x", &o), -ENOENT,
	       "rolled back: no object row");

	is_int(meta_listing_put(m, "e/", 1, 2, NULL, 0), 0, "empty listing");
	n = 0;
	is_int(meta_listing_get(m, "e/", &exp, count_entry, &n), 0,
	       "empty listing exists");
	is_int(n, 0, "with no entries");
	is_int(meta_listing_find(m, "e/", "x", &exp, &is_dir, NULL), 1,
	       "find in empty listing");
}

static void put_chunk(struct meta *m, const char *name, const char *key,
		      const char *etag, uint64_t idx, uint64_t bytes)
{
	struct meta_chunk c = { .name = name,
				.key = key,
				.etag = etag,
				.index = idx,
				.disk_bytes = bytes,
				.atime_ms = 10 };

	if (meta_chunk_put(m, &c) != 0)
		ok(0, "put chunk %s", name);
}

static void test_chunks(struct meta *m)
{
	struct meta_touch t[] = { { .name = "c1", .atime_ms = 50 },
				  { .name = "missing", .atime_ms = 60 } };
	const char *const del[] = { "c1", "c2", "missing" };
	struct seen_chunks s;
	int i;

	memset(&s, 0, sizeof(s));
	is_int(meta_chunk_scan(m, collect_chunk, &s), 0, "scan empty");
	is_int(s.n, 0, "no chunks");

	put_chunk(m, "c1", "k", "e1", 0, 1000);
	put_chunk(m, "c2", "k", "e1", 1, 2000);
	put_chunk(m, "c3", "k", "e2", 0, 3000);
	put_chunk(m, "c4", "k2", "e1", 5000000000ULL, 4000);

	memset(&s, 0, sizeof(s));
	is_int(meta_chunk_scan(m, collect_chunk, &s), 0, "scan");
	is_int(s.n, 4, "four chunks");
	i = chunk_at(&s, "c4");
	ok(i >= 0, "c4 scanned");
	if (i >= 0) {
		is_str(s.key[i], "k2", "c4 key");
		is_str(s.etag[i], "e1", "c4 etag");
		ok(s.index[i] == 5000000000ULL, "c4 index past 32 bits");
		is_int(s.disk_bytes[i], 4000, "c4 disk bytes");
		is_int(s.atime_ms[i], 10, "c4 atime");
	}

	memset(&s, 0, sizeof(s));
	is_int(meta_chunk_scan_other(m, "k", "e2", collect_chunk, &s), 0,
	       "scan other than e2");
	ok(s.n == 2 && chunk_at(&s, "c1") >= 0 && chunk_at(&s, "c2") >= 0,
	   "k's e1 chunks: c1 and c2");
	memset(&s, 0, sizeof(s));
	is_int(meta_chunk_scan_other(m, "k", NULL, collect_chunk, &s), 0,
	       "scan other than NULL");
	ok(s.n == 3 && chunk_at(&s, "c3") >= 0, "all three of k");
	memset(&s, 0, sizeof(s));
	is_int(meta_chunk_scan_other(m, "k2", "e1", collect_chunk, &s), 0,
	       "scan k2 other than its etag");
	is_int(s.n, 0, "none");
	memset(&s, 0, sizeof(s));
	is_int(meta_chunk_scan_other(m, "nokey", NULL, collect_chunk, &s), 0,
	       "scan unknown key");
	is_int(s.n, 0, "none");

	is_int(meta_chunk_touch_many(m, t, 2), 0, "touch chunks");
	put_chunk(m, "c2", "k", "e1", 1, 2500);
	memset(&s, 0, sizeof(s));
	meta_chunk_scan(m, collect_chunk, &s);
	is_int(s.n, 4, "touch and replace add no row");
	i = chunk_at(&s, "c1");
	is_int(i >= 0 ? s.atime_ms[i] : -1, 50, "c1 touched");
	i = chunk_at(&s, "c2");
	is_int(i >= 0 ? s.disk_bytes[i] : 0, 2500, "c2 replaced");
	i = chunk_at(&s, "c3");
	is_int(i >= 0 ? s.atime_ms[i] : -1, 10, "c3 untouched");

	memset(&s, 0, sizeof(s));
	s.stop_at = 1;
	is_int(meta_chunk_scan(m, collect_chunk, &s), -ECANCELED,
	       "scan callback stops");
	is_int(s.n, 1, "after one row");

	is_int(meta_chunk_delete_many(m, del, 3), 0, "delete many");
	is_int(meta_chunk_delete_many(m, del, 0), 0, "delete none");
	memset(&s, 0, sizeof(s));
	meta_chunk_scan(m, collect_chunk, &s);
	ok(s.n == 2 && chunk_at(&s, "c3") >= 0 && chunk_at(&s, "c4") >= 0,
	   "c3 and c4 left");
}

static void test_clear(struct meta *m)
{
	struct meta_object o;
	int64_t exp;
	int n = 0;

	is_int(meta_clear(m), 0, "clear");
	is_int(meta_object_get(m, "d/b", &o), -ENOENT, "objects cleared");
	is_int(meta_object_get(m, "big", &o), -ENOENT, "all objects");
	is_int(meta_listing_get(m, "d/", &exp, count_entry, &n), -ENOENT,
	       "listings cleared");
	is_int(meta_listing_get(m, "", &exp, count_entry, &n), -ENOENT,
	       "root listing too");
	is_int(meta_negative_get(m, "d/q", &exp), -ENOENT, "negatives cleared");
	is_int(meta_chunk_scan(m, count_chunk, &n), 0, "scan after clear");
	is_int(n, 0, "chunks cleared");
	is_int(meta_clear(m), 0, "clear an empty store");
}

/* A statement run directly on the test database. */
static int raw_exec(const char *sql)
{
	sqlite3 *db = NULL;
	int src;

	src = sqlite3_open(dbpath, &db);
	if (src == SQLITE_OK)
		src = sqlite3_exec(db, sql, NULL, NULL, NULL);
	sqlite3_close(db);
	return src;
}

/* The first column of @sql's first row, as text into @out. */
static void raw_text(const char *sql, char *out, size_t len)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *st = NULL;

	snprintf(out, len, "(none)");
	if (sqlite3_open(dbpath, &db) == SQLITE_OK &&
	    sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK &&
	    sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0))
		snprintf(out, len, "%s",
			 (const char *)sqlite3_column_text(st, 0));
	sqlite3_finalize(st);
	sqlite3_close(db);
}

static bool exists(const char *suffix)
{
	char p[160];

	snprintf(p, sizeof(p), "%s%s", dbpath, suffix);
	return access(p, F_OK) == 0;
}

static void remove_db(void)
{
	static const char *const suffixes[] = { "", "-wal", "-shm",
						"-journal" };
	char p[160];
	size_t i;

	for (i = 0; i < sizeof(suffixes) / sizeof(suffixes[0]); i++) {
		snprintf(p, sizeof(p), "%s%s", dbpath, suffixes[i]);
		unlink(p);
	}
}

/* Send stderr to @file; returns the saved descriptor for stderr_back(). */
static int stderr_to(const char *file)
{
	int fd, saved;

	fflush(stderr);
	saved = dup(STDERR_FILENO);
	fd = open(file, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (saved < 0 || fd < 0)
		return -1;
	dup2(fd, STDERR_FILENO);
	close(fd);
	return saved;
}

/* Put stderr back and read what went to @file into @out. */
static void stderr_back(int saved, const char *file, char *out, size_t len)
{
	FILE *f;
	size_t n = 0;

	fflush(stderr);
	dup2(saved, STDERR_FILENO);
	close(saved);
	f = fopen(file, "r");
	if (f) {
		n = fread(out, 1, len - 1, f);
		fclose(f);
	}
	out[n] = '\0';
	unlink(file);
}

static void test_file(void)
{
	struct meta_entry e[] = { { .name = "f", .etag = "\"f\"", .size = 1 } };
	struct meta_chunk c = {
		.name = "c", .key = "d/f", .etag = "\"f\"", .disk_bytes = 9
	};
	struct meta *m = NULL, *m2 = (struct meta *)&m;
	struct meta_object o;
	char text[4096], logfile[160];
	int64_t exp;
	int n, saved;

	remove_db();
	is_int(open_file("src|A", &m), 0, "create file database");
	is_int(meta_listing_put(m, "d/", 1, 99, e, 1), 0, "listing on file");
	is_int(meta_chunk_put(m, &c), 0, "chunk on file");
	is_int(meta_negative_put(m, "d/g", 55), 0, "negative on file");
	is_int(put_obj(m, "d/h", "\"h\"", 8, 4), 0, "object on file");
	ok(exists("-wal"), "write-ahead log in use");
	meta_close(m);
	m = NULL;
	ok(!exists("-wal"), "log checkpointed and removed on close");
	raw_text("PRAGMA journal_mode", text, sizeof(text));
	is_str(text, "wal", "journal mode is wal");
	raw_text("PRAGMA user_version", text, sizeof(text));
	is_str(text, "1", "schema version 1");
	raw_text("SELECT v FROM info WHERE k = 'source'", text, sizeof(text));
	is_str(text, "src|A", "source recorded");

	is_int(open_file("src|A", &m), 0, "reopen, same source");
	is_int(meta_object_get(m, "d/f", &o), 0, "object kept");
	is_str(o.etag, "\"f\"", "with its etag");
	meta_object_release(&o);
	is_int(meta_object_get(m, "d/h", &o), 0, "other object kept");
	is_int(o.atime_ms, 4, "with its atime");
	meta_object_release(&o);
	n = 0;
	is_int(meta_listing_get(m, "d/", &exp, count_entry, &n), 0,
	       "listing kept");
	ok(n == 1 && exp == 99, "with its entry and expiry");
	is_int(meta_negative_get(m, "d/g", &exp), 0, "negative kept");
	n = 0;
	meta_chunk_scan(m, count_chunk, &n);
	is_int(n, 1, "chunk kept");
	is_int(meta_clear(m), 0, "clear file database");
	meta_close(m);
	m = NULL;
	raw_text("SELECT v FROM info WHERE k = 'source'", text, sizeof(text));
	is_str(text, "src|A", "clear keeps the source");

	is_int(open_file("src|A", &m), 0, "reopen");
	is_int(put_obj(m, "d/h", "\"h\"", 8, 4), 0, "store again");
	meta_chunk_put(m, &c);
	meta_close(m);
	m = NULL;

	snprintf(logfile, sizeof(logfile), "%s/log", tmpdir);
	log_set_level(LOG_LVL_INFO);
	saved = stderr_to(logfile);
	n = open_file("src|B", &m);
	stderr_back(saved, logfile, text, sizeof(text));
	log_set_level(LOG_LVL_ERROR);
	is_int(n, 0, "reopen, another source");
	ok(strstr(text, "meta: cache held 'src|A', now 'src|B': cleared") !=
		   NULL,
	   "source change logged");
	is_int(meta_object_get(m, "d/h", &o), -ENOENT, "objects cleared");
	n = 0;
	meta_chunk_scan(m, count_chunk, &n);
	is_int(n, 0, "chunks cleared");
	is_int(put_obj(m, "d/i", "\"i\"", 8, 0), 0, "store for B");
	meta_close(m);
	m = NULL;
	raw_text("SELECT v FROM info WHERE k = 'source'", text, sizeof(text));
	is_str(text, "src|B", "new source recorded");
	is_int(open_file("src|B", &m), 0, "reopen B");
	is_int(meta_object_get(m, "d/i", &o), 0, "B's object kept");
	meta_object_release(&o);
	meta_close(m);
	m = NULL;

	is_int(raw_exec("PRAGMA user_version = 99"), SQLITE_OK,
	       "fake a newer schema");
	{
		unsigned long before = log_error_count();

		is_int(open_file("src|B", &m2), -EPROTO,
		       "newer schema refused");
		ok(m2 == (struct meta *)&m, "*out untouched on failure");
		is_int(log_error_count() - before, 1, "refusal logged once");
	}
	raw_text("PRAGMA user_version", text, sizeof(text));
	is_str(text, "99", "refused database left as it was");
	raw_text("SELECT count(*) FROM objects", text, sizeof(text));
	is_str(text, "1", "and its rows too");

	/* an empty file is an empty database: created in place */
	remove_db();
	close(open(dbpath, O_WRONLY | O_CREAT, 0600));
	is_int(open_file("src|C", &m), 0, "empty file gets the schema");
	meta_close(m);
	m = NULL;
	raw_text("PRAGMA user_version", text, sizeof(text));
	is_str(text, "1", "at version 1");

	remove_db();
	{
		FILE *f = fopen(dbpath, "w");
		unsigned long before = log_error_count();
		int i;

		for (i = 0; f && i < 100; i++)
			fputs("this is not a database at all\n", f);
		if (f)
			fclose(f);
		is_int(open_file("src|C", &m), -EIO, "not a database: -EIO");
		is_int(log_error_count() - before, 1, "logged once");
	}
	remove_db();
	meta_close(NULL);
}

#define THREADS 4
#define ROUNDS 500

struct worker {
	struct meta *m;
	int id;
	int errors;
};

static void *work(void *arg)
{
	struct worker *w = arg;
	struct meta_entry e[10];
	struct meta_touch t[2];
	char names[10][16], key[64], etag[32], chunk[64], neg[64], dir[16];
	struct meta_object o;
	struct meta_chunk c;
	bool is_dir;
	int64_t exp;
	int i, j, n;

	snprintf(dir, sizeof(dir), "t%d/", w->id);
	for (i = 0; i < ROUNDS; i++) {
		snprintf(key, sizeof(key), "%sf%03d", dir, i);
		snprintf(etag, sizeof(etag), "\"%d.%d\"", w->id, i);
		snprintf(chunk, sizeof(chunk), "c%d-%03d", w->id, i);
		snprintf(neg, sizeof(neg), "%sn%03d", dir, i);
		if (put_obj(w->m, key, etag, (uint64_t)i, 0) != 0)
			w->errors++;
		if (meta_object_get(w->m, key, &o) != 0)
			w->errors++;
		else if (strcmp(o.etag, etag) != 0 || o.size != (uint64_t)i)
			w->errors++;
		meta_object_release(&o);
		if (meta_negative_put(w->m, neg, i) != 0)
			w->errors++;
		c = (struct meta_chunk){ .name = chunk,
					 .key = key,
					 .etag = etag,
					 .index = (uint64_t)i,
					 .disk_bytes = 100,
					 .atime_ms = i };
		if (meta_chunk_put(w->m, &c) != 0)
			w->errors++;
		t[0] = (struct meta_touch){ .name = chunk, .atime_ms = i + 1 };
		t[1] = (struct meta_touch){ .name = key, .atime_ms = i + 1 };
		if (meta_chunk_touch_many(w->m, t, 1) != 0 ||
		    meta_object_touch_many(w->m, t + 1, 1) != 0)
			w->errors++;
		if (i % 10 != 9)
			continue;
		for (j = 0; j < 10; j++) {
			snprintf(names[j], sizeof(names[j]), "f%03d", i - j);
			e[j] = (struct meta_entry){ .name = names[j],
						    .etag = "\"l\"",
						    .size = (uint64_t)j };
		}
		if (meta_listing_put(w->m, dir, i, i + 1000, e, 10) != 0)
			w->errors++;
		if (meta_listing_find(w->m, dir, names[0], &exp, &is_dir, &o) !=
		    0)
			w->errors++;
		else if (is_dir || strcmp(o.etag, "\"l\"") != 0 ||
			 exp != i + 1000 || o.atime_ms != i + 1)
			w->errors++;
		meta_object_release(&o);
		n = 0;
		if (meta_chunk_scan_other(w->m, key, NULL, count_chunk, &n) !=
			    0 ||
		    n != 1)
			w->errors++;
	}
	return NULL;
}

static void test_threads(struct meta *m, const char *what)
{
	pthread_t th[THREADS];
	struct worker w[THREADS];
	struct meta_object o;
	char key[32];
	int64_t exp;
	int i, n, errors = 0, started = 0;

	for (i = 0; i < THREADS; i++) {
		w[i] = (struct worker){ .m = m, .id = i };
		if (pthread_create(&th[i], NULL, work, &w[i]) == 0)
			started++;
	}
	is_int(started, THREADS, "%s: %d threads started", what, THREADS);
	for (i = 0; i < started; i++) {
		pthread_join(th[i], NULL);
		errors += w[i].errors;
	}
	is_int(errors, 0, "%s: %d x %d rounds without an error", what, THREADS,
	       ROUNDS);
	n = 0;
	is_int(meta_chunk_scan(m, count_chunk, &n), 0, "%s: scan", what);
	is_int(n, THREADS * ROUNDS, "%s: every chunk row there", what);
	for (i = 0; i < THREADS; i++) {
		snprintf(key, sizeof(key), "t%d/", i);
		n = 0;
		if (meta_listing_get(m, key, &exp, count_entry, &n) != 0 ||
		    n != 10 || exp != ROUNDS - 1 + 1000)
			break;
	}
	is_int(i, THREADS, "%s: each thread's last listing", what);
	is_int(meta_object_get(m, "t3/f499", &o), 0, "%s: last object", what);
	is_int(o.atime_ms, ROUNDS, "%s: with its last touch", what);
	meta_object_release(&o);
	is_int(meta_negative_get(m, "t2/n123", &exp), 0, "%s: negative", what);
	is_int(exp, 123, "%s: its expiry", what);
}

int main(void)
{
	struct meta *m;
	const char *base = getenv("TMPDIR");

	log_init("test_meta", LOG_LVL_ERROR, false);
	plan_lazy();

	m = open_mem();
	ok(m != NULL, "open :memory:");
	if (!m)
		return done_testing();
	test_objects(m);
	test_touch(m);
	test_negatives(m);
	test_listings(m);
	test_chunks(m);
	test_clear(m);
	test_threads(m, "memory");
	meta_close(m);

	snprintf(tmpdir, sizeof(tmpdir), "%s/test_meta.XXXXXX",
		 base && strlen(base) < 32 ? base : "/tmp");
	if (!ok(mkdtemp(tmpdir) != NULL, "temporary directory"))
		return done_testing();
	snprintf(dbpath, sizeof(dbpath), "%s/meta.db", tmpdir);
	test_file();

	if (open_file("threads", &m) == 0) {
		test_threads(m, "file");
		meta_close(m);
	} else {
		ok(0, "open file for threads");
	}
	remove_db();
	rmdir(tmpdir);
	return done_testing();
}
