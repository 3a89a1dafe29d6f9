/*
 * test_meta.c - the metadata store: objects and their attributes,
 * negatives, listings joined with objects, single entries, forgetting a
 * prefix, chunk rows, staged rows, clear; on ":memory:" and on a file for
 * WAL, reopen, migration from version 1, source change (refused while
 * staged rows exist), schema refusal; and many threads at once.
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
	bool has_attrs[MAX_SEEN];
	uint32_t mode[MAX_SEEN], uid[MAX_SEEN], gid[MAX_SEEN];
	int64_t attr_mtime[MAX_SEEN];
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
	s->has_attrs[s->n] = e->has_attrs;
	s->mode[s->n] = e->mode;
	s->uid[s->n] = e->uid;
	s->gid[s->n] = e->gid;
	s->attr_mtime[s->n] = e->attr_mtime;
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
	uint64_t data_len[MAX_SEEN];
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
	s->data_len[s->n] = c->data_len;
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

/* Index of entry @name among @s's entries, or -1. */
static int entry_at(const struct seen_entries *s, const char *name)
{
	int i;

	for (i = 0; i < s->n; i++)
		if (strcmp(s->name[i], name) == 0)
			return i;
	return -1;
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
	{
		struct meta_object head = { .key = (char *)"d/c.txt",
					    .etag = (char *)"\"c2\"",
					    .size = 21,
					    .checked_ms = 6000,
					    .expires_ms = 66000 };
		struct meta_entry stale[] = {
			{ .name = "c.txt", .etag = "\"c1\"", .size = 20 },
		};

		is_int(meta_object_put(m, &head), 0, "HEAD refresh");
		/* a LIST begun before it does not undo it */
		is_int(meta_listing_put(m, "d/old/", 5500, 65500, stale, 1), 0,
		       "older listing elsewhere");
		is_int(meta_object_put(
			       m,
			       &(struct meta_object){ .key = (char *)"d/c.txt",
						      .etag = (char *)"\"c1\"",
						      .size = 20,
						      .checked_ms = 5500,
						      .expires_ms = 65500 }),
		       0, "older row put");
		is_int(meta_object_get(m, "d/c.txt", &o), 0, "get c.txt");
		is_str(o.etag, "\"c2\"",
		       "an older row does not replace a newer");
		meta_object_release(&o);
	}
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

	is_int(meta_listing_expiry(m, "d/sub/", &exp), 0, "listing expiry");
	is_int(exp, 65000, "listing expiry read");
	is_int(meta_listing_expiry(m, "nope/", &exp), -ENOENT,
	       "no listing: no expiry");
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

/* An object with attributes, as a HEAD would store it. */
/* checked_ms of put_attrs(): a row newer than a listing needs more */
static int64_t attrs_checked_ms = 1000;

static int put_attrs(struct meta *m, const char *key, const char *etag,
		     uint32_t mode, uint32_t uid, uint32_t gid,
		     int64_t attr_mtime)
{
	struct meta_object o = { .key = (char *)key,
				 .etag = (char *)etag,
				 .size = 1,
				 .mtime = 1700000000,
				 .checked_ms = attrs_checked_ms,
				 .expires_ms = 2000,
				 .has_attrs = true,
				 .mode = mode,
				 .uid = uid,
				 .gid = gid,
				 .attr_mtime = attr_mtime };

	return meta_object_put(m, &o);
}

static void test_attrs(struct meta *m)
{
	struct meta_object in = { .key = (char *)"at/f",
				  .etag = (char *)"\"a1\"",
				  .size = 10,
				  .mtime = 1700000000,
				  .checked_ms = 100,
				  .expires_ms = 200,
				  .has_attrs = true,
				  .mode = 0100640,
				  .uid = 1000,
				  .gid = (uint32_t)-1,
				  .attr_mtime = 1600000000 };
	struct meta_object o;

	is_int(meta_object_put(m, &in), 0, "put with attributes");
	is_int(meta_object_get(m, "at/f", &o), 0, "get with attributes");
	ok(o.has_attrs, "has_attrs");
	is_int(o.mode, 0100640, "mode");
	is_int(o.uid, 1000, "uid");
	ok(o.gid == (uint32_t)-1, "gid (uint32_t)-1 round-trips");
	is_int(o.attr_mtime, 1600000000, "attr_mtime");
	meta_object_release(&o);

	/* a LIST-like refresh of the same version keeps them */
	in.has_attrs = false;
	in.mode = 0;
	in.uid = in.gid = 0;
	in.attr_mtime = 0;
	in.size = 11;
	in.expires_ms = 300;
	is_int(meta_object_put(m, &in), 0, "put without attributes, same etag");
	is_int(meta_object_get(m, "at/f", &o), 0, "get");
	ok(o.has_attrs, "same etag: attributes kept");
	is_int(o.mode, 0100640, "mode kept");
	is_int(o.uid, 1000, "uid kept");
	ok(o.gid == (uint32_t)-1, "gid kept");
	is_int(o.attr_mtime, 1600000000, "attr_mtime kept");
	is_int(o.size, 11, "the other fields still updated");
	is_int(o.expires_ms, 300, "expiry updated");
	meta_object_release(&o);

	/* new attributes replace the old ones, same etag or not */
	in.has_attrs = true;
	in.mode = 040755;
	in.uid = (uint32_t)-1;
	in.gid = 0;
	in.attr_mtime = 5;
	is_int(meta_object_put(m, &in), 0, "put new attributes, same etag");
	is_int(meta_object_get(m, "at/f", &o), 0, "get");
	ok(o.has_attrs, "has_attrs");
	is_int(o.mode, 040755, "mode replaced");
	ok(o.uid == (uint32_t)-1, "uid (uint32_t)-1 round-trips");
	is_int(o.gid, 0, "gid 0 replaced -1");
	is_int(o.attr_mtime, 5, "attr_mtime replaced");
	meta_object_release(&o);

	/* another version: what we knew was about the old one */
	in.has_attrs = false;
	in.etag = (char *)"\"a2\"";
	is_int(meta_object_put(m, &in), 0,
	       "put without attributes, other etag");
	is_int(meta_object_get(m, "at/f", &o), 0, "get");
	ok(!o.has_attrs, "other etag: attributes forgotten");
	is_str(o.etag, "\"a2\"", "new etag");
	meta_object_release(&o);
	in.etag = (char *)"\"a2\"";
	is_int(meta_object_put(m, &in), 0, "put again, same etag");
	is_int(meta_object_get(m, "at/f", &o), 0, "get");
	ok(!o.has_attrs, "forgotten attributes do not come back");
	meta_object_release(&o);

	in.has_attrs = true;
	in.etag = (char *)"\"a3\"";
	in.mode = 0100600;
	in.uid = 7;
	in.gid = 8;
	in.attr_mtime = 9;
	is_int(meta_object_put(m, &in), 0, "put attributes with a new etag");
	is_int(meta_object_get(m, "at/f", &o), 0, "get");
	ok(o.has_attrs && o.mode == 0100600 && o.uid == 7 && o.gid == 8 &&
		   o.attr_mtime == 9,
	   "the new version's attributes");
	meta_object_release(&o);

	is_int(put_obj(m, "at/plain", "p", 1, 0), 0, "put plain object");
	is_int(meta_object_get(m, "at/plain", &o), 0, "get plain object");
	ok(!o.has_attrs, "no attributes on insert without them");
	meta_object_release(&o);
}

static void test_listing_attrs(struct meta *m)
{
	/* entries' own attribute fields are ignored by meta_listing_put() */
	struct meta_entry e[] = {
		{ .name = "dir", .is_dir = true },
		{ .name = "kept", .etag = "\"k1\"", .size = 1 },
		{ .name = "changed", .etag = "\"c2\"", .size = 2 },
		{ .name = "new",
		  .etag = "\"n1\"",
		  .size = 3,
		  .has_attrs = true,
		  .mode = 0100777,
		  .uid = 5,
		  .gid = 5,
		  .attr_mtime = 5 },
	};
	struct seen_entries s;
	struct meta_object o;
	bool is_dir;
	int i;

	put_attrs(m, "la/kept", "\"k1\"", 0100644, 1000, 1001, 1500000000);
	put_attrs(m, "la/changed", "\"c1\"", 0100600, 2000, 2001, 1500000001);
	is_int(meta_listing_put(m, "la/", 3000, 4000, e, 4), 0,
	       "put listing over objects with attributes");

	is_int(meta_object_get(m, "la/kept", &o), 0, "get kept");
	ok(o.has_attrs && o.mode == 0100644 && o.uid == 1000 && o.gid == 1001 &&
		   o.attr_mtime == 1500000000,
	   "listing with the same etag keeps the attributes");
	is_int(o.checked_ms, 3000, "and still refreshes checked_ms");
	meta_object_release(&o);
	is_int(meta_object_get(m, "la/changed", &o), 0, "get changed");
	ok(!o.has_attrs, "listing with another etag forgets them");
	is_str(o.etag, "\"c2\"", "changed's new etag");
	meta_object_release(&o);
	is_int(meta_object_get(m, "la/new", &o), 0, "get new");
	ok(!o.has_attrs, "entry attribute fields ignored by listing put");
	meta_object_release(&o);

	memset(&s, 0, sizeof(s));
	is_int(meta_listing_get(m, "la/", NULL, collect_entry, &s), 0,
	       "get listing with attributes");
	is_int(s.n, 4, "four entries");
	i = entry_at(&s, "kept");
	ok(i >= 0 && s.has_attrs[i] && s.mode[i] == 0100644 &&
		   s.uid[i] == 1000 && s.gid[i] == 1001 &&
		   s.attr_mtime[i] == 1500000000,
	   "listing reports kept's attributes");
	i = entry_at(&s, "changed");
	ok(i >= 0 && !s.has_attrs[i], "changed listed without attributes");
	i = entry_at(&s, "dir");
	ok(i >= 0 && s.is_dir[i] && !s.has_attrs[i],
	   "directory without attributes");

	/* a HEAD after the LIST shows through the listing */
	attrs_checked_ms = 5000;
	put_attrs(m, "la/changed", "\"c2\"", 0100400, 3000, 3001, 1500000002);
	memset(&s, 0, sizeof(s));
	meta_listing_get(m, "la/", NULL, collect_entry, &s);
	i = entry_at(&s, "changed");
	ok(i >= 0 && s.has_attrs[i] && s.mode[i] == 0100400 &&
		   s.uid[i] == 3000 && s.gid[i] == 3001 &&
		   s.attr_mtime[i] == 1500000002,
	   "listing reports attributes stored after it");

	is_int(meta_listing_find(m, "la/", "kept", NULL, &is_dir, &o), 0,
	       "find kept");
	ok(!is_dir && o.has_attrs && o.mode == 0100644 && o.uid == 1000 &&
		   o.gid == 1001 && o.attr_mtime == 1500000000,
	   "find fills the object's attributes");
	meta_object_release(&o);
	is_int(meta_listing_find(m, "la/", "new", NULL, &is_dir, &o), 0,
	       "find new");
	ok(!o.has_attrs, "find: new has no attributes");
	meta_object_release(&o);
	meta_object_delete(m, "la/kept");
	is_int(meta_listing_find(m, "la/", "kept", NULL, &is_dir, &o), 0,
	       "find kept without its object row");
	ok(!o.has_attrs, "no object row: no attributes");
	meta_object_release(&o);
}

static void test_entries(struct meta *m)
{
	struct meta_entry e[] = { { .name = "f", .etag = "\"f\"", .size = 1 } };
	struct meta_entry sub[] = { { .name = "g", .etag = "\"g\"" } };
	struct seen_entries s;
	struct meta_object o;
	int64_t exp = -1;
	bool is_dir = false;
	int n = 0;

	is_int(meta_entry_add(m, "en/", "x", false), 0,
	       "add entry without listing");
	is_int(meta_listing_get(m, "en/", &exp, count_entry, &n), -ENOENT,
	       "no listing created");
	is_int(meta_entry_remove(m, "en/", "x"), 0,
	       "remove entry without listing");

	meta_listing_put(m, "en/", 100, 200, e, 1);
	meta_listing_put(m, "en/sub/", 100, 300, sub, 1);
	is_int(meta_entry_add(m, "en/", "d", true), 0, "add directory entry");
	is_int(meta_entry_add(m, "en/", "b", false), 0, "add file entry");
	put_obj(m, "en/b", "\"b\"", 7, 0);
	memset(&s, 0, sizeof(s));
	is_int(meta_listing_get(m, "en/", &exp, collect_entry, &s), 0,
	       "get listing");
	is_int(exp, 200, "listing expiry left alone");
	is_int(s.n, 3, "three entries");
	is_str(s.name[0], "b", "b first");
	ok(!s.is_dir[0], "b a file");
	is_str(s.etag[0], "\"b\"", "b joined with its object");
	is_int(s.size[0], 7, "b's size");
	is_str(s.name[1], "d", "then d");
	ok(s.is_dir[1], "d a directory");
	is_str(s.name[2], "f", "then f");

	is_int(meta_entry_add(m, "en/", "b", true), 0, "replace b as a dir");
	is_int(meta_listing_find(m, "en/", "b", &exp, &is_dir, NULL), 0,
	       "find b");
	ok(is_dir, "b replaced: now a directory");
	is_int(exp, 200, "expiry still the listing's");
	memset(&s, 0, sizeof(s));
	meta_listing_get(m, "en/", NULL, collect_entry, &s);
	is_int(s.n, 3, "replacing added no entry");

	is_int(meta_entry_remove(m, "en/", "b"), 0, "remove b");
	is_int(meta_listing_find(m, "en/", "b", &exp, &is_dir, NULL), 1,
	       "b gone from the listing");
	is_int(meta_object_get(m, "en/b", &o), 0,
	       "remove leaves the object row");
	meta_object_release(&o);
	is_int(meta_entry_remove(m, "en/", "b"), 0, "remove again");
	is_int(meta_entry_remove(m, "en/", "g"), 0,
	       "remove a name of another listing");
	n = 0;
	is_int(meta_listing_get(m, "en/sub/", &exp, count_entry, &n), 0,
	       "sub listing");
	ok(n == 1 && exp == 300, "sub listing untouched");
	n = 0;
	meta_listing_get(m, "en/", NULL, count_entry, &n);
	is_int(n, 2, "d and f left");
}

/* Whether the object @key is stored. */
static bool has_obj(struct meta *m, const char *key)
{
	struct meta_object o;

	if (meta_object_get(m, key, &o) != 0)
		return false;
	meta_object_release(&o);
	return true;
}

static bool has_listing(struct meta *m, const char *dir)
{
	int n = 0;

	return meta_listing_get(m, dir, NULL, count_entry, &n) == 0;
}

static bool has_negative(struct meta *m, const char *key)
{
	int64_t exp;

	return meta_negative_get(m, key, &exp) == 0;
}

static int count_staged(void *ctx, const struct meta_staged *s)
{
	(void)s;
	(*(int *)ctx)++;
	return 0;
}

static void test_forget(struct meta *m)
{
	static const char *const gone_a_slash[] = {
		"a/", "a/x", "a/%", "a/_", "a/sub/y",
	};
	static const char *const kept_a_slash[] = {
		"a", "ab", "a0", "a.b", "a_1", "a%1", "b/x", "ba/x",
	};
	struct meta_entry ae[] = { { .name = "x", .etag = "x" },
				   { .name = "sub", .is_dir = true } };
	struct meta_entry se[] = { { .name = "y", .etag = "y" } };
	struct meta_entry be[] = { { .name = "x", .etag = "x" } };
	struct meta_entry re[] = { { .name = "a", .is_dir = true },
				   { .name = "b", .is_dir = true } };
	struct meta_staged st = { .key = (char *)"a/x", .created_ms = 1 };
	struct meta_chunk c = {
		.name = "fc", .key = "a/x", .etag = "x", .disk_bytes = 1
	};
	struct seen_chunks sc;
	size_t i;
	int n;

	for (i = 0; i < sizeof(gone_a_slash) / sizeof(gone_a_slash[0]); i++)
		put_obj(m, gone_a_slash[i], "e", 1, 0);
	for (i = 0; i < sizeof(kept_a_slash) / sizeof(kept_a_slash[0]); i++)
		put_obj(m, kept_a_slash[i], "e", 1, 0);
	meta_listing_put(m, "", 1, 2, re, 2);
	meta_listing_put(m, "a/", 1, 2, ae, 2);
	meta_listing_put(m, "a/sub/", 1, 2, se, 1);
	meta_listing_put(m, "ab/", 1, 2, be, 1);
	meta_listing_put(m, "b/", 1, 2, be, 1);
	meta_negative_put(m, "a/n", 5);
	meta_negative_put(m, "a/sub/n", 5);
	meta_negative_put(m, "a/", 5);
	meta_negative_put(m, "a", 5);
	meta_negative_put(m, "ab", 5);
	meta_negative_put(m, "a_", 5);
	meta_negative_put(m, "a%", 5);
	is_int(meta_chunk_put(m, &c), 0, "chunk of a/x");
	is_int(meta_staged_add(m, &st), 0, "staged a/x");

	is_int(meta_forget_prefix(m, "a/"), 0, "forget a/");
	for (i = 0; i < sizeof(gone_a_slash) / sizeof(gone_a_slash[0]); i++)
		ok(!has_obj(m, gone_a_slash[i]), "object '%s' forgotten",
		   gone_a_slash[i]);
	for (i = 0; i < sizeof(kept_a_slash) / sizeof(kept_a_slash[0]); i++)
		ok(has_obj(m, kept_a_slash[i]), "object '%s' kept",
		   kept_a_slash[i]);
	ok(!has_listing(m, "a/"), "listing a/ forgotten");
	ok(!has_listing(m, "a/sub/"), "listing a/sub/ forgotten");
	ok(has_listing(m, "ab/"), "listing ab/ kept");
	ok(has_listing(m, "b/"), "listing b/ kept");
	n = 0;
	is_int(meta_listing_get(m, "", NULL, count_entry, &n), 0,
	       "root listing kept");
	is_int(n, 2, "with its entry for a: the caller's to remove");
	ok(!has_negative(m, "a/n"), "negative a/n forgotten");
	ok(!has_negative(m, "a/sub/n"), "negative a/sub/n forgotten");
	ok(!has_negative(m, "a/"), "negative a/ forgotten");
	ok(has_negative(m, "a") && has_negative(m, "ab") &&
		   has_negative(m, "a_") && has_negative(m, "a%"),
	   "negatives a, ab, a_, a%% kept");

	/* re-listing a/ shows no stale entries survived under it */
	meta_listing_put(m, "a/", 1, 2, NULL, 0);
	n = 0;
	meta_listing_get(m, "a/", NULL, count_entry, &n);
	is_int(n, 0, "entries of a/ forgotten");

	/* '_' and '%' are plain bytes, not LIKE wildcards */
	is_int(meta_forget_prefix(m, "a_"), 0, "forget a_");
	ok(!has_obj(m, "a_1"), "a_1 forgotten");
	ok(!has_negative(m, "a_"), "negative a_ forgotten");
	ok(has_obj(m, "ab") && has_obj(m, "a%1") && has_obj(m, "a0"),
	   "ab, a%%1, a0 kept");
	is_int(meta_forget_prefix(m, "a%"), 0, "forget a%%");
	ok(!has_obj(m, "a%1"), "a%%1 forgotten");
	ok(has_obj(m, "ab") && has_obj(m, "a.b") && has_negative(m, "ab"),
	   "ab and a.b kept");

	/* bytes 0xff: the end of the range carries into the byte before */
	put_obj(m, "x\xff", "e", 1, 0);
	put_obj(m,
		"x\xff\xff"
		"1",
		"e", 1, 0);
	put_obj(m, "x\xfe", "e", 1, 0);
	put_obj(m, "y", "e", 1, 0);
	put_obj(m, "\xff\xff", "e", 1, 0);
	is_int(meta_forget_prefix(m, "x\xff"), 0, "forget x\\xff");
	ok(!has_obj(m, "x\xff") && !has_obj(m, "x\xff\xff"
					       "1"),
	   "keys under x\\xff forgotten");
	ok(has_obj(m, "x\xfe") && has_obj(m, "y") && has_obj(m, "\xff\xff"),
	   "x\\xfe, y and \\xff\\xff kept");
	is_int(meta_forget_prefix(m, "\xff"), 0, "forget \\xff");
	ok(!has_obj(m, "\xff\xff"), "\\xff\\xff forgotten");
	ok(has_obj(m, "y") && has_obj(m, "x\xfe"), "y and x\\xfe kept");

	is_int(meta_forget_prefix(m, "a"), 0, "forget a");
	ok(!has_obj(m, "a") && !has_obj(m, "ab") && !has_obj(m, "a0") &&
		   !has_obj(m, "a.b"),
	   "a, ab, a0, a.b forgotten");
	ok(!has_listing(m, "ab/"), "listing ab/ forgotten");
	ok(!has_negative(m, "a") && !has_negative(m, "ab"),
	   "negatives a and ab forgotten");
	ok(has_obj(m, "b/x") && has_obj(m, "ba/x") && has_listing(m, "b/"),
	   "b/x, ba/x and listing b/ kept");

	is_int(meta_forget_prefix(m, ""), 0, "forget everything");
	ok(!has_obj(m, "b/x") && !has_obj(m, "y") && !has_obj(m, "t/1"),
	   "every object forgotten");
	ok(!has_listing(m, "b/") && !has_listing(m, "") &&
		   !has_listing(m, "d/sub/"),
	   "every listing forgotten");
	ok(!has_negative(m, "d/q"), "every negative forgotten");

	memset(&sc, 0, sizeof(sc));
	meta_chunk_scan(m, collect_chunk, &sc);
	ok(chunk_at(&sc, "fc") >= 0, "chunk rows kept");
	n = 0;
	is_int(meta_staged_scan(m, count_staged, &n), 0, "scan staged");
	is_int(n, 1, "staged row kept");
	is_int(meta_staged_delete(m, st.id), 0, "drop the staged row");
	c.name = "fc";
	meta_chunk_delete_many(m, &c.name, 1);
}

static void put_chunk(struct meta *m, const char *name, const char *key,
		      const char *etag, uint64_t idx, uint64_t bytes)
{
	struct meta_chunk c = { .name = name,
				.key = key,
				.etag = etag,
				.index = idx,
				.disk_bytes = bytes,
				.atime_ms = 10,
				.data_len = bytes / 2 };

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
		is_int(s.data_len[i], 2000, "c4 data length");
	}

	memset(&s, 0, sizeof(s));
	is_int(meta_chunk_scan_prefix(m, "k", collect_chunk, &s), 0,
	       "scan prefix k");
	ok(s.n == 4 && strcmp(s.name[0], "c1") == 0 &&
		   strcmp(s.name[1], "c2") == 0 &&
		   strcmp(s.name[2], "c3") == 0 && strcmp(s.name[3], "c4") == 0,
	   "prefix k: every row, by key, etag, index");
	memset(&s, 0, sizeof(s));
	is_int(meta_chunk_scan_prefix(m, "k2", collect_chunk, &s), 0,
	       "scan prefix k2");
	ok(s.n == 1 && strcmp(s.name[0], "c4") == 0, "prefix k2: c4 only");
	memset(&s, 0, sizeof(s));
	is_int(meta_chunk_scan_prefix(m, "", collect_chunk, &s), 0,
	       "scan prefix \"\"");
	is_int(s.n, 4, "empty prefix: all");
	memset(&s, 0, sizeof(s));
	is_int(meta_chunk_scan_prefix(m, "k3", collect_chunk, &s), 0,
	       "scan prefix k3");
	is_int(s.n, 0, "none");

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

/* Staged rows as the callback saw them, copied. */
struct seen_staged {
	int n;
	int stop_at;
	struct {
		int64_t id;
		char key[64];
		bool base_etag_null;
		char base_etag[64];
		uint64_t base_size;
		bool local_null;
		size_t local_len;
		uint8_t local[512];
		uint32_t mode, uid, gid;
		int64_t mtime;
		bool upload_id_null;
		char upload_id[64];
		int64_t created_ms;
	} row[MAX_SEEN];
};

static int collect_staged(void *ctx, const struct meta_staged *st)
{
	struct seen_staged *s = ctx;

	if (s->n >= MAX_SEEN || st->local_len > sizeof(s->row[0].local))
		return -E2BIG;
	s->row[s->n].id = st->id;
	snprintf(s->row[s->n].key, sizeof(s->row[0].key), "%s", st->key);
	s->row[s->n].base_etag_null = st->base_etag == NULL;
	snprintf(s->row[s->n].base_etag, sizeof(s->row[0].base_etag), "%s",
		 st->base_etag ? st->base_etag : "");
	s->row[s->n].base_size = st->base_size;
	s->row[s->n].local_null = st->local == NULL;
	s->row[s->n].local_len = st->local_len;
	if (st->local_len)
		memcpy(s->row[s->n].local, st->local, st->local_len);
	s->row[s->n].mode = st->mode;
	s->row[s->n].uid = st->uid;
	s->row[s->n].gid = st->gid;
	s->row[s->n].mtime = st->mtime;
	s->row[s->n].upload_id_null = st->upload_id == NULL;
	snprintf(s->row[s->n].upload_id, sizeof(s->row[0].upload_id), "%s",
		 st->upload_id ? st->upload_id : "");
	s->row[s->n].created_ms = st->created_ms;
	s->n++;
	if (s->stop_at && s->n == s->stop_at)
		return -ECANCELED;
	return 0;
}

/* Compare row @i of @s with @want, field by field. */
static void is_staged(const struct seen_staged *s, int i,
		      const struct meta_staged *want, const char *what)
{
	if (!ok(i < s->n, "%s: scanned", what))
		return;
	is_int(s->row[i].id, want->id, "%s: id", what);
	is_str(s->row[i].key, want->key, "%s: key", what);
	is_int(s->row[i].base_etag_null, want->base_etag == NULL,
	       "%s: base_etag NULL or not", what);
	is_str(s->row[i].base_etag, want->base_etag ? want->base_etag : "",
	       "%s: base_etag", what);
	ok(s->row[i].base_size == want->base_size, "%s: base_size", what);
	is_int(s->row[i].local_len, want->local_len, "%s: local_len", what);
	if (want->local_len == 0)
		ok(s->row[i].local_null, "%s: local NULL when empty", what);
	else
		ok(!s->row[i].local_null &&
			   s->row[i].local_len == want->local_len &&
			   memcmp(s->row[i].local, want->local,
				  want->local_len) == 0,
		   "%s: local bytes", what);
	is_int(s->row[i].mode, want->mode, "%s: mode", what);
	ok(s->row[i].uid == want->uid, "%s: uid", what);
	ok(s->row[i].gid == want->gid, "%s: gid", what);
	is_int(s->row[i].mtime, want->mtime, "%s: mtime", what);
	is_int(s->row[i].upload_id_null, want->upload_id == NULL,
	       "%s: upload_id NULL or not", what);
	is_str(s->row[i].upload_id, want->upload_id ? want->upload_id : "",
	       "%s: upload_id", what);
	is_int(s->row[i].created_ms, want->created_ms, "%s: created_ms", what);
}

static void test_staged(struct meta *m)
{
	uint8_t big[300], one[1] = { 0x81 }, empty[1] = { 0 };
	struct meta_staged a = { .key = (char *)"s/a",
				 .base_size = 5000000000ULL,
				 .mode = 0100644,
				 .uid = (uint32_t)-1,
				 .gid = 7,
				 .created_ms = 111 };
	struct meta_staged b = { .key = (char *)"s/b",
				 .base_etag = (char *)"\"base\"",
				 .base_size = 0,
				 .local = big,
				 .local_len = sizeof(big),
				 .mode = 0100600,
				 .uid = 1000,
				 .gid = (uint32_t)-1,
				 .mtime = 1700000000,
				 .upload_id = (char *)"up-1",
				 .created_ms = 222 };
	struct meta_staged c = { .key = (char *)"s/c", .created_ms = 333 };
	struct meta_staged dup = { .key = (char *)"s/a", .id = -5 };
	struct meta_staged ghost = { .key = (char *)"s/ghost", .id = 999999 };
	struct seen_staged *s;
	unsigned long before;
	size_t i;

	s = calloc(1, sizeof(*s));
	if (!ok(s != NULL, "allocate"))
		return;
	for (i = 0; i < sizeof(big); i++)
		big[i] = (uint8_t)(i * 7 + 3);
	big[10] = 0; /* a NUL byte inside the BLOB */

	is_int(meta_staged_scan(m, collect_staged, s), 0, "scan no rows");
	is_int(s->n, 0, "no staged rows");

	is_int(meta_staged_add(m, &a), 0, "add a");
	ok(a.id > 0, "a's id > 0");
	is_int(meta_staged_add(m, &b), 0, "add b");
	ok(b.id > a.id, "b's id after a's");
	is_int(meta_staged_add(m, &c), 0, "add c");
	ok(c.id > b.id, "c's id after b's");

	before = log_error_count();
	is_int(meta_staged_add(m, &dup), -EEXIST, "duplicate key: -EEXIST");
	is_int(dup.id, -5, "id left alone on failure");
	is_int(log_error_count() - before, 0, "-EEXIST not logged");

	memset(s, 0, sizeof(*s));
	is_int(meta_staged_scan(m, collect_staged, s), 0, "scan");
	is_int(s->n, 3, "three rows");
	is_staged(s, 0, &a, "a (NULL strings, no local)");
	is_staged(s, 1, &b, "b (300-byte local)");
	is_staged(s, 2, &c, "c");

	/* update b: new key (a rename), smaller bitmap, no upload, no base */
	b.key = (char *)"s/b2";
	b.base_etag = NULL;
	b.base_size = 77;
	b.local = one;
	b.local_len = 1;
	b.mode = 0100755;
	b.uid = 1;
	b.gid = 2;
	b.mtime = 3;
	b.upload_id = NULL;
	b.created_ms = 444;
	is_int(meta_staged_update(m, &b), 0, "update b, renamed");
	/* and a gains what b lost */
	a.base_etag = (char *)"\"ae\"";
	a.upload_id = (char *)"up-a";
	a.local = big;
	a.local_len = sizeof(big);
	is_int(meta_staged_update(m, &a), 0, "update a");
	memset(s, 0, sizeof(*s));
	meta_staged_scan(m, collect_staged, s);
	is_int(s->n, 3, "still three rows");
	is_staged(s, 0, &a, "a updated");
	is_staged(s, 1, &b, "b updated");

	before = log_error_count();
	c.key = (char *)"s/a";
	c.created_ms = 555;
	is_int(meta_staged_update(m, &c), -EEXIST,
	       "update onto another row's key: -EEXIST");
	is_int(log_error_count() - before, 0, "not logged");
	c.key = (char *)"s/c";
	c.created_ms = 333;
	memset(s, 0, sizeof(*s));
	meta_staged_scan(m, collect_staged, s);
	is_staged(s, 2, &c, "c unchanged after the clash");
	is_staged(s, 0, &a, "a unchanged after the clash");

	is_int(meta_staged_update(m, &ghost), -ENOENT, "update missing id");
	memset(s, 0, sizeof(*s));
	meta_staged_scan(m, collect_staged, s);
	is_int(s->n, 3, "no row made by a missing update");

	/* a non-NULL bitmap of length 0 is no bitmap */
	c.local = empty;
	c.local_len = 0;
	is_int(meta_staged_update(m, &c), 0, "update c, empty local");
	a.local = NULL;
	a.local_len = 0;
	is_int(meta_staged_update(m, &a), 0, "update a, local dropped");
	memset(s, 0, sizeof(*s));
	meta_staged_scan(m, collect_staged, s);
	is_staged(s, 0, &a, "a without local");
	is_staged(s, 2, &c, "c with empty local");

	memset(s, 0, sizeof(*s));
	s->stop_at = 2;
	is_int(meta_staged_scan(m, collect_staged, s), -ECANCELED,
	       "scan callback stops");
	is_int(s->n, 2, "after two rows");

	is_int(meta_staged_delete(m, b.id), 0, "delete b");
	is_int(meta_staged_delete(m, b.id), 0, "delete b again");
	memset(s, 0, sizeof(*s));
	meta_staged_scan(m, collect_staged, s);
	is_int(s->n, 2, "two rows left");
	ok(s->n == 2 && s->row[0].id == a.id && s->row[1].id == c.id,
	   "a and c, in id order");
	is_int(meta_staged_update(m, &b), -ENOENT, "update deleted row");

	/* a key freed by a rename or delete can be staged again */
	b.key = (char *)"s/b";
	is_int(meta_staged_add(m, &b), 0, "add s/b again");
	ok(b.id > c.id, "new id after c's");
	is_int(meta_staged_delete(m, b.id), 0, "delete it");
	is_int(meta_staged_delete(m, c.id), 0, "delete c");
	/* a stays for test_clear() */

	meta_staged_release(NULL);
	{
		struct meta_staged h = { 0 };

		h.key = strdup("k");
		h.base_etag = strdup("e");
		h.upload_id = strdup("u");
		h.local = malloc(3);
		h.local_len = 3;
		h.id = 4;
		meta_staged_release(&h);
		ok(!h.key && !h.base_etag && !h.upload_id && !h.local &&
			   h.local_len == 0 && h.id == 0,
		   "release frees and clears the struct");
	}
	free(s);
}

static void test_clear(struct meta *m)
{
	struct meta_entry e[] = { { .name = "b", .etag = "\"b\"" } };
	struct meta_entry root[] = { { .name = "d", .is_dir = true } };
	struct seen_staged *s = calloc(1, sizeof(*s));
	struct meta_object o;
	int64_t exp;
	int n = 0;

	/* rows in every table, whatever the tests before left */
	put_obj(m, "big", "x", 1, 0);
	meta_listing_put(m, "d/", 1, 2, e, 1);
	meta_listing_put(m, "", 1, 2, root, 1);
	meta_negative_put(m, "d/q", 3);
	put_chunk(m, "cc", "d/b", "\"b\"", 0, 1);
	ok(has_obj(m, "d/b") && has_obj(m, "big") && has_listing(m, "d/") &&
		   has_listing(m, "") && has_negative(m, "d/q"),
	   "rows to clear");

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
	if (s) {
		is_int(meta_staged_scan(m, collect_staged, s), 0,
		       "scan staged after clear");
		ok(s->n == 1 && strcmp(s->row[0].key, "s/a") == 0,
		   "clear keeps the staged row");
		free(s);
	}
	is_int(meta_clear(m), 0, "clear an empty store");
}

struct seen_counters {
	int n;
	char name[8][32];
	uint64_t value[8];
};

static int collect_counter(void *ctx, const struct meta_counter *c)
{
	struct seen_counters *s = ctx;

	if (s->n >= 8)
		return -E2BIG;
	snprintf(s->name[s->n], sizeof(s->name[0]), "%s", c->name);
	s->value[s->n] = c->value;
	s->n++;
	return 0;
}

static void test_counters(struct meta *m)
{
	struct meta_counter a[] = { { "hits", 3 },
				    { "misses", 0 },
				    { "bytes", 5000000000ULL } };
	struct meta_counter b[] = { { "hits", 4 }, { "misses", 2 } };
	struct seen_counters s;
	char *v = NULL;

	memset(&s, 0, sizeof(s));
	is_int(meta_counters_scan(m, collect_counter, &s), 0, "scan counters");
	is_int(s.n, 0, "none yet");
	is_int(meta_counters_add(m, a, 3), 0, "add counters");
	is_int(meta_counters_add(m, b, 2), 0, "add again");
	is_int(meta_counters_add(m, b, 0), 0, "add nothing");
	memset(&s, 0, sizeof(s));
	is_int(meta_counters_scan(m, collect_counter, &s), 0, "scan counters");
	ok(s.n == 3 && strcmp(s.name[0], "bytes") == 0 &&
		   s.value[0] == 5000000000ULL &&
		   strcmp(s.name[1], "hits") == 0 && s.value[1] == 7 &&
		   strcmp(s.name[2], "misses") == 0 && s.value[2] == 2,
	   "counters summed, in name order, 64-bit");

	is_int(meta_info_get(m, "cap", &v), -ENOENT, "no info 'cap'");
	is_int(meta_info_put(m, "cap", "123"), 0, "put info");
	is_int(meta_info_put(m, "source", "x"), -EINVAL,
	       "source is not for meta_info_put");
	is_int(meta_info_get(m, "cap", &v), 0, "get info");
	is_str(v ? v : "", "123", "its value");
	free(v);
	v = NULL;
	is_int(meta_info_put(m, "cap", "456"), 0, "replace info");
	meta_info_get(m, "cap", &v);
	is_str(v ? v : "", "456", "replaced");
	free(v);
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

/* A database as version 1 of meta.c left it, with a row in every table. */
static const char v1_db[] =
	"CREATE TABLE info (k TEXT PRIMARY KEY, v TEXT) WITHOUT ROWID;"
	"CREATE TABLE objects (key TEXT PRIMARY KEY, etag TEXT NOT NULL,"
	" size INTEGER NOT NULL, mtime INTEGER NOT NULL,"
	" checked_ms INTEGER NOT NULL, expires_ms INTEGER NOT NULL,"
	" atime_ms INTEGER NOT NULL) WITHOUT ROWID;"
	"CREATE TABLE listings (dir TEXT PRIMARY KEY,"
	" fetched_ms INTEGER NOT NULL, expires_ms INTEGER NOT NULL)"
	" WITHOUT ROWID;"
	"CREATE TABLE entries (dir TEXT NOT NULL, name TEXT NOT NULL,"
	" is_dir INTEGER NOT NULL, PRIMARY KEY (dir, name)) WITHOUT ROWID;"
	"CREATE TABLE negatives (key TEXT PRIMARY KEY,"
	" expires_ms INTEGER NOT NULL) WITHOUT ROWID;"
	"CREATE TABLE chunks (name TEXT PRIMARY KEY, key TEXT NOT NULL,"
	" etag TEXT NOT NULL, idx INTEGER NOT NULL,"
	" disk_bytes INTEGER NOT NULL, atime_ms INTEGER NOT NULL)"
	" WITHOUT ROWID;"
	"CREATE INDEX chunks_key ON chunks (key);"
	"INSERT INTO info VALUES ('source', 'src|M');"
	"INSERT INTO objects VALUES ('v/f', '\"vf\"', 6000000000, 1700000000,"
	" 11, 22, 33);"
	"INSERT INTO listings VALUES ('v/', 44, 55);"
	"INSERT INTO entries VALUES ('v/', 'f', 0), ('v/', 'sub', 1);"
	"INSERT INTO negatives VALUES ('v/none', 66);"
	"INSERT INTO chunks VALUES ('vc', 'v/f', '\"vf\"', 3, 77, 88);"
	"PRAGMA user_version = 1;";

static void test_migrate(void)
{
	struct meta_staged st = { .key = (char *)"v/new", .created_ms = 1 };
	struct seen_entries s;
	struct seen_chunks c;
	struct meta *m = NULL;
	struct meta_object o;
	char text[256];
	int64_t exp = 0;
	int n;

	remove_db();
	is_int(raw_exec(v1_db), SQLITE_OK, "make a version 1 database");
	is_int(open_file("src|M", &m), 0, "open version 1");
	if (!m)
		return;
	raw_text("PRAGMA user_version", text, sizeof(text));
	is_str(text, "3", "migrated to version 3");

	is_int(meta_object_get(m, "v/f", &o), 0, "object kept");
	is_str(o.etag, "\"vf\"", "its etag");
	ok(o.size == 6000000000ULL, "its size");
	ok(o.mtime == 1700000000 && o.checked_ms == 11 && o.expires_ms == 22 &&
		   o.atime_ms == 33,
	   "its times");
	ok(!o.has_attrs, "no attributes after migration");
	meta_object_release(&o);
	memset(&s, 0, sizeof(s));
	is_int(meta_listing_get(m, "v/", &exp, collect_entry, &s), 0,
	       "listing kept");
	is_int(exp, 55, "its expiry");
	ok(s.n == 2 && strcmp(s.name[0], "f") == 0 && !s.is_dir[0] &&
		   strcmp(s.etag[0], "\"vf\"") == 0 && !s.has_attrs[0] &&
		   strcmp(s.name[1], "sub") == 0 && s.is_dir[1],
	   "its entries, joined with the object");
	is_int(meta_negative_get(m, "v/none", &exp), 0, "negative kept");
	is_int(exp, 66, "its expiry");
	memset(&c, 0, sizeof(c));
	meta_chunk_scan(m, collect_chunk, &c);
	ok(c.n == 1 && strcmp(c.name[0], "vc") == 0 && c.index[0] == 3 &&
		   c.disk_bytes[0] == 77 && c.atime_ms[0] == 88,
	   "chunk kept");
	n = 0;
	is_int(meta_staged_scan(m, count_staged, &n), 0, "staged table there");
	is_int(n, 0, "and empty");
	is_int(meta_staged_add(m, &st), 0, "and usable");
	is_int(put_attrs(m, "v/f", "\"vf\"", 0100644, 1, 2, 3), 0,
	       "attributes storable");
	is_int(meta_object_get(m, "v/f", &o), 0, "get");
	ok(o.has_attrs && o.mode == 0100644 && o.uid == 1 && o.gid == 2 &&
		   o.attr_mtime == 3,
	   "attributes on a migrated row");
	meta_object_release(&o);
	meta_close(m);
	m = NULL;
	raw_text("SELECT v FROM info WHERE k = 'source'", text, sizeof(text));
	is_str(text, "src|M", "source kept");
	is_int(open_file("src|M", &m), 0, "reopen version 3");
	n = 0;
	meta_staged_scan(m, count_staged, &n);
	is_int(n, 1, "staged row persists");
	meta_close(m);
	remove_db();
}

static const char v2_db[] =
	"CREATE TABLE info (k TEXT PRIMARY KEY, v TEXT) WITHOUT ROWID;"
	"CREATE TABLE objects (key TEXT PRIMARY KEY, etag TEXT NOT NULL,"
	" size INTEGER NOT NULL, mtime INTEGER NOT NULL,"
	" checked_ms INTEGER NOT NULL, expires_ms INTEGER NOT NULL,"
	" atime_ms INTEGER NOT NULL, has_attrs INTEGER NOT NULL DEFAULT 0,"
	" mode INTEGER NOT NULL DEFAULT 0,"
	" uid INTEGER NOT NULL DEFAULT 4294967295,"
	" gid INTEGER NOT NULL DEFAULT 4294967295,"
	" attr_mtime INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID;"
	"CREATE TABLE listings (dir TEXT PRIMARY KEY,"
	" fetched_ms INTEGER NOT NULL, expires_ms INTEGER NOT NULL)"
	" WITHOUT ROWID;"
	"CREATE TABLE entries (dir TEXT NOT NULL, name TEXT NOT NULL,"
	" is_dir INTEGER NOT NULL, PRIMARY KEY (dir, name)) WITHOUT ROWID;"
	"CREATE TABLE negatives (key TEXT PRIMARY KEY,"
	" expires_ms INTEGER NOT NULL) WITHOUT ROWID;"
	"CREATE TABLE chunks (name TEXT PRIMARY KEY, key TEXT NOT NULL,"
	" etag TEXT NOT NULL, idx INTEGER NOT NULL,"
	" disk_bytes INTEGER NOT NULL, atime_ms INTEGER NOT NULL)"
	" WITHOUT ROWID;"
	"CREATE INDEX chunks_key ON chunks (key);"
	"CREATE TABLE staged (id INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE,"
	" base_etag TEXT, base_size INTEGER NOT NULL, local BLOB,"
	" mode INTEGER NOT NULL, uid INTEGER NOT NULL, gid INTEGER NOT NULL,"
	" mtime INTEGER NOT NULL, upload_id TEXT,"
	" created_ms INTEGER NOT NULL);"
	"INSERT INTO info VALUES ('source', 'src|V2');"
	"INSERT INTO chunks VALUES ('vc', 'v/f', '\"vf\"', 3, 77, 88);"
	"INSERT INTO staged (key, base_size, mode, uid, gid, mtime,"
	" created_ms) VALUES ('v/s', 0, 0, 0, 0, 0, 1);"
	"PRAGMA user_version = 2;";

static void test_migrate_v2(void)
{
	struct meta_counter one = { "hits", 1 };
	struct seen_counters sc;
	struct seen_chunks c;
	struct meta *m = NULL;
	char text[256];
	int n = 0;

	remove_db();
	is_int(raw_exec(v2_db), SQLITE_OK, "make a version 2 database");
	is_int(open_file("src|V2", &m), 0, "open version 2");
	if (!m)
		return;
	raw_text("PRAGMA user_version", text, sizeof(text));
	is_str(text, "3", "v2 migrated to version 3");
	memset(&c, 0, sizeof(c));
	meta_chunk_scan(m, collect_chunk, &c);
	ok(c.n == 1 && strcmp(c.name[0], "vc") == 0 && c.index[0] == 3 &&
		   c.disk_bytes[0] == 77 && c.atime_ms[0] == 88 &&
		   c.data_len[0] == 0,
	   "v2 chunk kept, data length not known");
	meta_staged_scan(m, count_staged, &n);
	is_int(n, 1, "v2 staged row kept");
	is_int(meta_counters_add(m, &one, 1), 0, "counters table usable");
	memset(&sc, 0, sizeof(sc));
	meta_counters_scan(m, collect_counter, &sc);
	ok(sc.n == 1 && sc.value[0] == 1, "counter stored");
	meta_close(m);
	m = NULL;
	/* a new source clears counters with the rest, keeps staged rows */
	remove_db();
	is_int(raw_exec(v2_db), SQLITE_OK, "version 2 again");
	raw_exec("DELETE FROM staged");
	is_int(open_file("src|V2", &m), 0, "open");
	meta_counters_add(m, &one, 1);
	meta_close(m);
	m = NULL;
	is_int(open_file("src|OTHER", &m), 0, "open with another source");
	memset(&sc, 0, sizeof(sc));
	if (m)
		meta_counters_scan(m, collect_counter, &sc);
	is_int(sc.n, 0, "counters reset with the source");
	meta_close(m);
	remove_db();
}

static void test_file(void)
{
	struct meta_entry e[] = { { .name = "f", .etag = "\"f\"", .size = 1 } };
	struct meta_chunk c = {
		.name = "c", .key = "d/f", .etag = "\"f\"", .disk_bytes = 9
	};
	struct meta_staged st = { .key = (char *)"d/w", .created_ms = 1 };
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
	/* unobservable through the API, since a listing put clears first */
	is_int(meta_entry_add(m, "nolist/", "x", false), 0,
	       "add entry without listing, on file");
	raw_text("SELECT count(*) FROM entries WHERE dir = 'nolist/'", text,
		 sizeof(text));
	is_str(text, "0", "no stray entry row without a listing");
	is_int(meta_listing_put(m, "fp/sub/", 1, 99, e, 1), 0,
	       "listing below fp/");
	is_int(meta_listing_put(m, "fpx/", 1, 99, e, 1), 0, "listing fpx/");
	is_int(meta_forget_prefix(m, "fp/"), 0, "forget fp/ on file");
	raw_text("SELECT count(*) FROM entries WHERE dir = 'fp/sub/'", text,
		 sizeof(text));
	is_str(text, "0", "entries below fp/ deleted, not just hidden");
	raw_text("SELECT count(*) FROM entries WHERE dir = 'fpx/'", text,
		 sizeof(text));
	is_str(text, "1", "entries of fpx/ kept");
	meta_forget_prefix(m, "fpx/");
	ok(exists("-wal"), "write-ahead log in use");
	meta_close(m);
	m = NULL;
	ok(!exists("-wal"), "log checkpointed and removed on close");
	raw_text("PRAGMA journal_mode", text, sizeof(text));
	is_str(text, "wal", "journal mode is wal");
	raw_text("PRAGMA user_version", text, sizeof(text));
	is_str(text, "3", "schema version 3");
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
	is_int(meta_staged_add(m, &st), 0, "a staged row of A");
	meta_close(m);
	m = NULL;

	/* A's unuploaded writes pin the cache to A */
	snprintf(logfile, sizeof(logfile), "%s/log", tmpdir);
	{
		unsigned long before = log_error_count();
		char want[256];

		saved = stderr_to(logfile);
		n = open_file("src|B", &m2);
		stderr_back(saved, logfile, text, sizeof(text));
		is_int(n, -EBUSY, "another source with staged rows: -EBUSY");
		ok(m2 == (struct meta *)&m, "*out untouched");
		is_int(log_error_count() - before, 1, "refusal logged once");
		snprintf(want, sizeof(want),
			 "meta: cache dir '%s' holds 1 file written to "
			 "'src|A' and not yet uploaded: mount that bucket to "
			 "finish them, or use another cache_dir",
			 tmpdir);
		ok(strstr(text, want) != NULL,
		   "refusal says why and what to do");
		if (!strstr(text, want))
			diag("  log: %s", text);
	}
	raw_text("SELECT v FROM info WHERE k = 'source'", text, sizeof(text));
	is_str(text, "src|A", "source unchanged");
	raw_text("SELECT count(*) FROM objects", text, sizeof(text));
	is_str(text, "1", "objects unchanged");
	is_int(open_file("src|A", &m), 0, "reopen A");
	is_int(meta_object_get(m, "d/h", &o), 0, "A's object still there");
	meta_object_release(&o);
	n = 0;
	meta_staged_scan(m, count_staged, &n);
	is_int(n, 1, "A's staged row still there");
	is_int(meta_staged_delete(m, st.id), 0, "A's upload finishes");
	meta_close(m);
	m = NULL;

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
	is_str(text, "3", "at version 3");

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
		/* fetched after put_obj()'s checked_ms: it replaces the rows */
		if (meta_listing_put(w->m, dir, i + 1000, i + 2000, e, 10) != 0)
			w->errors++;
		if (meta_listing_find(w->m, dir, names[0], &exp, &is_dir, &o) !=
		    0)
			w->errors++;
		else if (is_dir || strcmp(o.etag, "\"l\"") != 0 ||
			 exp != i + 2000 || o.atime_ms != i + 1)
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
		    n != 10 || exp != ROUNDS - 1 + 2000)
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
	test_attrs(m);
	test_listing_attrs(m);
	test_entries(m);
	test_forget(m);
	test_chunks(m);
	test_staged(m);
	test_clear(m);
	test_counters(m);
	test_threads(m, "memory");
	meta_close(m);

	snprintf(tmpdir, sizeof(tmpdir), "%s/test_meta.XXXXXX",
		 base && strlen(base) < 32 ? base : "/tmp");
	if (!ok(mkdtemp(tmpdir) != NULL, "temporary directory"))
		return done_testing();
	snprintf(dbpath, sizeof(dbpath), "%s/meta.db", tmpdir);
	test_migrate();
	test_migrate_v2();
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
