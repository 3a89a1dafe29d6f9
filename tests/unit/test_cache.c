/*
 * test_cache.c - the chunk cache over a real metadata database and a real
 * chunk store in a temporary folder: admission and eviction in LRU order,
 * the cap checked after every put against the files themselves (not the
 * module's numbers), pins, reconciliation and persistence across reopen,
 * corrupt and missing files, batched access stamps, the background
 * watermarks, dropping an object's chunks, the free-space floor, the
 * entry and age limits, dropping by prefix, gc and verify, and concurrent
 * puts and reads checked against the invariants.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "s3cachefs/cache.h"
#include "s3cachefs/chunk.h"
#include "s3cachefs/log.h"
#include "s3cachefs/meta.h"
#include "tap.h"
#include "testfs.h"

#define KIB 1024ULL
#define MIB (1024 * KIB)
#define NAME_SZ (CHUNK_NAME_LEN + 1)
#define MAX_ROWS 512

static char root[] = "/tmp/test_cache.XXXXXX";

/* One cache directory: its database, its chunk store, its cache. */
struct env {
	char dir[256];
	struct cache_conf conf;
	struct meta *m;
	struct chunk_store *cs;
	struct cache *c;
};

static int64_t wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Wait for the wall clock's millisecond to change: distinct stamps. */
static void next_ms(void)
{
	struct timespec ts = { .tv_nsec = 200000 };
	int64_t t = wall_ms();

	while (wall_ms() == t)
		nanosleep(&ts, NULL);
}

static void nap_ms(long ms)
{
	struct timespec ts = { .tv_sec = ms / 1000,
			       .tv_nsec = (ms % 1000) * 1000000 };

	nanosleep(&ts, NULL);
}

static void name_of(const char *key, const char *etag, uint64_t index,
		    char out[NAME_SZ])
{
	struct chunk_id id = {
		.endpoint = "",
		.bucket = "b",
		.key = key,
		.etag = etag,
		.index = index,
	};

	chunk_name(&id, out);
}

static void fill(unsigned char *p, size_t len, unsigned seed)
{
	uint32_t x = seed * 2654435761u + 1;
	size_t i;

	for (i = 0; i < len; i++) {
		x ^= x << 13;
		x ^= x >> 17;
		x ^= x << 5;
		p[i] = (unsigned char)x;
	}
}

static uint64_t file_bytes(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 ? (uint64_t)st.st_blocks * 512 : 0;
}

static void chunk_path(const struct env *v, const char *name, char *out,
		       size_t n)
{
	snprintf(out, n, "%s/chunks/%.2s/%.64s", v->dir, name, name);
}

static bool on_disk(const struct env *v, const char *name)
{
	char p[512];

	chunk_path(v, name, p, sizeof(p));
	return access(p, F_OK) == 0;
}

static uint64_t walk_bytes;
static size_t walk_files;

static int walk_one(const char *path, const struct stat *st, int flag,
		    struct FTW *ftw)
{
	(void)path;
	(void)ftw;
	if (flag == FTW_F) {
		walk_bytes += (uint64_t)st->st_blocks * 512;
		walk_files++;
	}
	return 0;
}

/*
 * What the cache directory takes, measured here: every file under chunks/
 * plus meta.db and its WAL.  *files (may be NULL) gets the chunk files.
 */
static uint64_t disk_use(const struct env *v, size_t *files)
{
	char p[512];
	uint64_t total;

	walk_bytes = 0;
	walk_files = 0;
	snprintf(p, sizeof(p), "%s/chunks", v->dir);
	nftw(p, walk_one, 16, FTW_PHYS);
	total = walk_bytes;
	snprintf(p, sizeof(p), "%s/meta.db", v->dir);
	total += file_bytes(p);
	snprintf(p, sizeof(p), "%s/meta.db-wal", v->dir);
	total += file_bytes(p);
	if (files)
		*files = walk_files;
	return total;
}

static uint64_t wal_bytes(const struct env *v)
{
	char p[512];

	snprintf(p, sizeof(p), "%s/meta.db-wal", v->dir);
	return file_bytes(p);
}

/* The chunk rows, read straight from the database. */
struct row {
	char name[NAME_SZ];
	char key[64];
	char etag[32];
	uint64_t index;
	uint64_t disk_bytes;
	int64_t atime_ms;
};

struct rows {
	size_t n;
	struct row r[MAX_ROWS];
};

static int take_row(void *ctx, const struct meta_chunk *mc)
{
	struct rows *rs = ctx;
	struct row *r;

	if (rs->n == MAX_ROWS)
		return -ENOSPC;
	r = &rs->r[rs->n++];
	snprintf(r->name, sizeof(r->name), "%s", mc->name);
	snprintf(r->key, sizeof(r->key), "%s", mc->key);
	snprintf(r->etag, sizeof(r->etag), "%s", mc->etag);
	r->index = mc->index;
	r->disk_bytes = mc->disk_bytes;
	r->atime_ms = mc->atime_ms;
	return 0;
}

static struct rows *rows_get(const struct env *v)
{
	struct rows *rs = calloc(1, sizeof(*rs));

	if (rs && meta_chunk_scan(v->m, take_row, rs) < 0)
		rs->n = 0;
	return rs;
}

static const struct row *row_find(const struct rows *rs, const char *name)
{
	size_t i;

	for (i = 0; rs && i < rs->n; i++)
		if (strcmp(rs->r[i].name, name) == 0)
			return &rs->r[i];
	return NULL;
}

/* The rows of @v's database while its cache is closed. */
static struct rows *rows_closed(struct env *v)
{
	struct meta_conf mc = { .source = "test" };
	struct rows *rs = NULL;
	char p[512];

	snprintf(p, sizeof(p), "%s/meta.db", v->dir);
	mc.path = p;
	if (meta_open(&mc, &v->m) == 0) {
		rs = rows_get(v);
		meta_close(v->m);
		v->m = NULL;
	}
	return rs;
}

static bool has_row(const struct env *v, const char *name)
{
	struct rows *rs = rows_get(v);
	bool found = row_find(rs, name) != NULL;

	free(rs);
	return found;
}

static int env_open(struct env *v)
{
	struct meta_conf mc = { .source = "test" };
	struct chunk_store_conf cc = { .compress_level = 0 };
	char p[512];
	int rc;

	mkdir(v->dir, 0700);
	snprintf(p, sizeof(p), "%s/meta.db", v->dir);
	mc.path = p;
	rc = meta_open(&mc, &v->m);
	if (rc < 0)
		return rc;
	snprintf(p, sizeof(p), "%s/chunks", v->dir);
	cc.dir = p;
	rc = chunk_store_open(&cc, &v->cs);
	if (rc < 0)
		return rc;
	v->conf.dir = v->dir;
	return cache_open(&v->conf, v->m, v->cs, &v->c);
}

static void env_close(struct env *v)
{
	cache_close(v->c);
	chunk_store_close(v->cs);
	meta_close(v->m);
	v->c = NULL;
	v->cs = NULL;
	v->m = NULL;
}

static void env_init(struct env *v, const char *sub, uint64_t cap)
{
	memset(v, 0, sizeof(*v));
	snprintf(v->dir, sizeof(v->dir), "%s/%s", root, sub);
	v->conf.cap_bytes = cap;
	v->conf.high_pct = 100;
	v->conf.low_pct = 99;
	v->conf.flush_ms = 600000; /* only close flushes, unless a test says */
}

/* Put chunk (@key, "e1", @index) of @len bytes filled from @seed. */
static int put_chunk(struct env *v, const char *key, uint64_t index, size_t len,
		     char name[NAME_SZ])
{
	struct cache_ref ref = { .key = key, .etag = "\"e1\"", .index = index };
	unsigned char *data = malloc(len ? len : 1);
	int rc;

	name_of(key, "\"e1\"", index, name);
	fill(data, len, (unsigned)index + 7);
	rc = cache_put(v->c, name, &ref, data, len);
	free(data);
	return rc;
}

/*
 * The names of @order (least recently used first) that are no longer
 * cached form a prefix of it; *k gets its length.
 */
static bool evicted_prefix(struct cache *c, char (*order)[NAME_SZ], size_t n,
			   size_t *k)
{
	size_t i = 0;

	while (i < n && !cache_contains(c, order[i]))
		i++;
	*k = i;
	for (; i < n; i++)
		if (!cache_contains(c, order[i]))
			return false;
	return true;
}

/* Remove @i from @order, appending it at the end (most recently used). */
static void order_touch(char (*order)[NAME_SZ], size_t n, size_t i)
{
	char tmp[NAME_SZ];

	memcpy(tmp, order[i], NAME_SZ);
	memmove(order[i], order[i + 1], (n - i - 1) * NAME_SZ);
	memcpy(order[n - 1], tmp, NAME_SZ);
}

static void test_conf(void)
{
	struct env v;

	env_init(&v, "conf", 0);
	is_int(env_open(&v), -EINVAL, "cap 0 refused");
	env_close(&v);
	env_init(&v, "conf", MIB);
	v.conf.high_pct = 90;
	v.conf.low_pct = 90;
	is_int(env_open(&v), -EINVAL, "low = high refused");
	env_close(&v);
	env_init(&v, "conf", MIB);
	v.conf.high_pct = 101;
	is_int(env_open(&v), -EINVAL, "high > 100 refused");
	env_close(&v);
	env_init(&v, "conf", MIB);
	v.conf.high_pct = 80;
	v.conf.low_pct = 0;
	is_int(env_open(&v), -EINVAL, "default low 85 above high 80 refused");
	env_close(&v);
	env_init(&v, "conf", MIB);
	v.conf.high_pct = 0;
	v.conf.low_pct = 0;
	v.conf.flush_ms = 0;
	is_int(env_open(&v), 0, "zeros take the defaults");
	env_close(&v);
}

static void test_basic(void)
{
	unsigned char want[100000], got[100000];
	struct cache_ref ref = { .key = "k", .etag = "\"e1\"", .index = 0 };
	char a[NAME_SZ], b[NAME_SZ], x[NAME_SZ], p[512];
	struct cache_stats st, st2;
	struct env v;
	struct rows *rs;
	const struct row *r;
	uint64_t used;
	int fd;

	env_init(&v, "basic", 64 * MIB);
	if (!ok(env_open(&v) == 0, "open"))
		return;
	is_int(put_chunk(&v, "k", 0, sizeof(want), a), 0, "put");
	name_of("k", "\"e1\"", 1, b);
	fill(want, sizeof(want), 7);
	ok(cache_contains(v.c, a) && !cache_contains(v.c, b), "contains");
	is_int(cache_read(v.c, a, 0, got, sizeof(got)), sizeof(got),
	       "read whole");
	ok(memcmp(got, want, sizeof(got)) == 0, "bytes as put");
	is_int(cache_read(v.c, a, 99000, got, 5000), 1000,
	       "short read at the end");
	ok(memcmp(got, want + 99000, 1000) == 0, "bytes at an offset");
	is_int(cache_read(v.c, b, 0, got, 10), -ENOENT, "miss");
	is_int(cache_read(v.c, "nope", 0, got, 10), -EINVAL, "bad name read");
	is_int(cache_put(v.c, "nope", &ref, got, 10), -EINVAL, "bad name put");
	cache_get_stats(v.c, &st);
	ok(st.hits == 2 && st.misses == 1 && st.admitted == 1 && st.chunks == 1,
	   "stats: 2 hits, 1 miss, 1 admitted, 1 chunk");
	used = disk_use(&v, NULL);
	ok(used >= st.used_bytes && used - st.used_bytes <= 64 * KIB,
	   "used_bytes matches the disk (%" PRIu64 " vs %" PRIu64 ")",
	   st.used_bytes, used);
	rs = rows_get(&v);
	r = row_find(rs, a);
	chunk_path(&v, a, p, sizeof(p));
	ok(rs && rs->n == 1 && r && strcmp(r->key, "k") == 0 &&
		   strcmp(r->etag, "\"e1\"") == 0 && r->index == 0 &&
		   r->disk_bytes == file_bytes(p),
	   "one row with key, etag, index and disk bytes");
	free(rs);

	/* replacing adjusts use instead of adding */
	is_int(put_chunk(&v, "k", 0, 10000, a), 0, "replace with 10000 bytes");
	cache_get_stats(v.c, &st2);
	ok(st2.chunks == 1 && st2.used_bytes + 80000 < st.used_bytes,
	   "replace: 1 chunk, use down (%" PRIu64 " -> %" PRIu64 ")",
	   st.used_bytes, st2.used_bytes);
	is_int(cache_read(v.c, a, 0, got, sizeof(got)), 10000,
	       "read the replacement");

	/* a corrupt file: dropped, counted, never served */
	is_int(put_chunk(&v, "x", 0, 70000, x), 0, "put x");
	chunk_path(&v, x, p, sizeof(p));
	fd = open(p, O_RDWR);
	ok(fd >= 0 && pwrite(fd, "\xff\x00", 2, 70000) == 2, "corrupt x");
	if (fd >= 0)
		close(fd);
	is_int(cache_read(v.c, x, 0, got, sizeof(got)), -ENOENT,
	       "corrupt read is a miss");
	ok(!cache_contains(v.c, x), "corrupt chunk left the index");
	cache_get_stats(v.c, &st);
	is_int(st.corrupt, 1, "corrupt counted");
	ok(!on_disk(&v, x) && !has_row(&v, x), "corrupt: no file, no row");

	/* a file deleted behind the cache's back */
	is_int(put_chunk(&v, "x", 1, 5000, x), 0, "put x.1");
	chunk_path(&v, x, p, sizeof(p));
	unlink(p);
	is_int(cache_read(v.c, x, 0, got, sizeof(got)), -ENOENT,
	       "missing file is a miss");
	cache_get_stats(v.c, &st);
	ok(!cache_contains(v.c, x) && !has_row(&v, x) && st.corrupt == 1,
	   "missing: left the index and the rows, not counted corrupt");
	is_int(cache_evict_all(v.c), 0, "evict all");
	cache_get_stats(v.c, &st);
	ok(st.chunks == 0 && !on_disk(&v, a) && !has_row(&v, a),
	   "evict all: no chunks, files or rows");
	env_close(&v);
}

#define LRU_LEN 200000
#define LRU_FIRST 40

static char lru_order[160][NAME_SZ];
static size_t lru_n;

/* Put a new chunk, record it as most recent, check the cap on disk. */
static bool lru_put(struct env *v, const char *key, uint64_t i, bool *capped)
{
	char name[NAME_SZ];

	next_ms();
	if (put_chunk(v, key, i, LRU_LEN, name) != 0)
		return false;
	memcpy(lru_order[lru_n++], name, NAME_SZ);
	if (disk_use(v, NULL) > v->conf.cap_bytes)
		*capped = false;
	return true;
}

static void test_lru(void)
{
	unsigned char buf[LRU_LEN];
	bool capped = true, puts_ok = true, prefix = true;
	size_t k, k0, i;
	int64_t t_reads;
	uint64_t wal0;
	char s[3][NAME_SZ];
	struct rows *rs;
	const struct row *r;
	struct env v;

	env_init(&v, "lru", 6 * MIB);
	if (!ok(env_open(&v) == 0, "lru: open"))
		return;
	lru_n = 0;
	for (i = 0; i < LRU_FIRST; i++) {
		puts_ok &= lru_put(&v, "lru", i, &capped);
		prefix &= evicted_prefix(v.c, lru_order, lru_n, &k);
	}
	ok(puts_ok, "lru: %d puts", LRU_FIRST);
	ok(capped, "lru: disk use never above the cap after a put");
	ok(prefix, "lru: evicted are always the oldest");
	evicted_prefix(v.c, lru_order, lru_n, &k);
	ok(k > 0 && lru_n - k >= 10, "lru: %zu evicted, %zu kept", k,
	   lru_n - k);

	/* refresh the three oldest survivors: the middle one first */
	memcpy(s[0], lru_order[k], NAME_SZ);
	memcpy(s[1], lru_order[k + 1], NAME_SZ);
	memcpy(s[2], lru_order[k + 2], NAME_SZ);
	wal0 = wal_bytes(&v);
	t_reads = wall_ms();
	next_ms();
	ok(cache_read(v.c, s[1], 0, buf, 10) == 10, "lru: read s1");
	next_ms();
	ok(cache_read(v.c, s[0], 0, buf, 10) == 10, "lru: read s0");
	next_ms();
	for (i = 0; i < 50; i++)
		cache_read(v.c, s[2], 0, buf, sizeof(buf));
	order_touch(lru_order, lru_n, k + 1);
	order_touch(lru_order, lru_n, k);
	order_touch(lru_order, lru_n, k);
	is_int(wal_bytes(&v), wal0, "lru: 52 reads wrote nothing to SQLite");
	rs = rows_get(&v);
	r = row_find(rs, s[1]);
	ok(r && r->atime_ms < t_reads, "lru: row stamps not yet written");
	free(rs);

	k0 = k;
	for (i = 0; i < 5; i++) {
		puts_ok &= lru_put(&v, "lru", 100 + i, &capped);
		prefix &= evicted_prefix(v.c, lru_order, lru_n, &k);
	}
	ok(puts_ok && capped, "lru: 5 more puts, under the cap");
	ok(prefix, "lru: the refreshed order is the eviction order");
	ok(k >= k0 + 5 && cache_contains(v.c, s[0]) &&
		   cache_contains(v.c, s[1]) && cache_contains(v.c, s[2]),
	   "lru: %zu more evicted, the refreshed ones kept", k - k0);
	env_close(&v);

	/* stamps reached the rows at close */
	rs = rows_closed(&v);
	r = row_find(rs, s[1]);
	ok(r && r->atime_ms >= t_reads, "lru: close wrote the stamps");
	free(rs);

	/* reopen: same chunks, same order */
	if (!ok(env_open(&v) == 0, "lru: reopen"))
		return;
	ok(evicted_prefix(v.c, lru_order, lru_n, &i) && i == k,
	   "lru: reopen keeps the same chunks");
	prefix = true;
	for (i = 0; i < 40; i++) {
		puts_ok &= lru_put(&v, "lru", 200 + i, &capped);
		prefix &= evicted_prefix(v.c, lru_order, lru_n, &k);
	}
	ok(puts_ok && capped, "lru: 40 puts after reopen, under the cap");
	ok(prefix && !cache_contains(v.c, s[2]),
	   "lru: after reopen, eviction follows the persisted order");
	env_close(&v);
}

static void test_reconcile(void)
{
	char keep[NAME_SZ], gone[NAME_SZ], foreign[NAME_SZ], p[512];
	struct cache_stats st;
	struct env v;
	FILE *f;

	env_init(&v, "rec", 64 * MIB);
	if (!ok(env_open(&v) == 0, "rec: open"))
		return;
	put_chunk(&v, "rec", 0, 30000, keep);
	put_chunk(&v, "rec", 1, 30000, gone);
	env_close(&v);

	chunk_path(&v, gone, p, sizeof(p));
	unlink(p);
	name_of("someone-else", "\"x\"", 0, foreign);
	chunk_path(&v, foreign, p, sizeof(p));
	f = fopen(p, "w");
	if (f) {
		fputs("not ours", f);
		fclose(f);
	}
	snprintf(p, sizeof(p), "%s/chunks/00/junk", v.dir);
	f = fopen(p, "w");
	if (f)
		fclose(f);

	if (!ok(env_open(&v) == 0, "rec: reopen"))
		return;
	cache_get_stats(v.c, &st);
	ok(cache_contains(v.c, keep) && st.chunks == 1,
	   "rec: the intact chunk stays");
	ok(!cache_contains(v.c, gone) && !has_row(&v, gone),
	   "rec: a row without its file is deleted");
	ok(!on_disk(&v, foreign), "rec: a file without a row is deleted");
	ok(access(p, F_OK) < 0, "rec: a stray file is deleted");
	env_close(&v);
}

static void test_pins(void)
{
	char names[20][NAME_SZ], extra[NAME_SZ], last[NAME_SZ];
	struct cache_stats st, st2;
	size_t files, files2, i, n = 0, first = 0;
	bool all = true;
	struct env v;

	env_init(&v, "pins", 3 * MIB);
	if (!ok(env_open(&v) == 0, "pins: open"))
		return;
	for (i = 0; i < 20; i++)
		put_chunk(&v, "pins", i, 200000, names[i]);
	for (i = 0; i < 20; i++) {
		if (!cache_contains(v.c, names[i]))
			continue;
		if (!n)
			first = i;
		n++;
		all &= cache_pin(v.c, names[i]) == 0;
	}
	ok(all && n > 3 && first > 0, "pins: pinned all %zu cached chunks", n);
	cache_get_stats(v.c, &st);
	disk_use(&v, &files);
	name_of("pins", "\"e1\"", 100, extra);
	is_int(put_chunk(&v, "pins", 100, 200000, extra), -ENOSPC,
	       "pins: no room when everything is pinned");
	cache_get_stats(v.c, &st2);
	disk_use(&v, &files2);
	ok(st2.evicted == st.evicted && files2 == files &&
		   !on_disk(&v, extra) && !cache_contains(v.c, extra),
	   "pins: -ENOSPC evicted and wrote nothing");

	/* the two oldest unpinned: room comes from them alone */
	cache_unpin(v.c, names[first]);
	cache_unpin(v.c, names[first + 1]);
	is_int(put_chunk(&v, "pins", 100, 200000, extra), 0,
	       "pins: room once the oldest are unpinned");
	all = !cache_contains(v.c, names[first]) && cache_contains(v.c, extra);
	for (i = first + 2; i < 20; i++)
		all &= cache_contains(v.c, names[i]);
	ok(all, "pins: only unpinned ones went");

	is_int(cache_evict_all(v.c), 0, "pins: evict all");
	cache_get_stats(v.c, &st);
	ok(st.chunks == n - 2 && !cache_contains(v.c, extra) &&
		   !cache_contains(v.c, names[first + 1]),
	   "pins: evict all spares the pinned chunks only");

	/* dropping a pinned chunk's object dooms it */
	memcpy(last, names[19], NAME_SZ);
	is_int(cache_drop_object(v.c, "pins", NULL), 0, "pins: drop object");
	ok(!cache_contains(v.c, last) && on_disk(&v, last),
	   "pins: a dropped pinned chunk is hidden but kept on disk");
	is_int(cache_pin(v.c, last), -ENOENT, "pins: cannot pin it again");
	for (i = first + 2; i < 20; i++)
		cache_unpin(v.c, names[i]);
	cache_get_stats(v.c, &st);
	disk_use(&v, &files);
	ok(!on_disk(&v, last) && !has_row(&v, last) && st.chunks == 0 &&
		   files == 0,
	   "pins: the last unpin deleted the doomed chunks");
	is_int(cache_pin(v.c, extra), -ENOENT, "pins: pin of a missing chunk");
	cache_unpin(v.c, extra);
	env_close(&v);
}

static void test_drop(void)
{
	struct cache_ref ref = { 0 };
	char a1[3][NAME_SZ], a2[2][NAME_SZ], b1[NAME_SZ];
	unsigned char data[1000];
	bool all = true;
	struct env v;
	int i;

	env_init(&v, "drop", 64 * MIB);
	if (!ok(env_open(&v) == 0, "drop: open"))
		return;
	memset(data, 'd', sizeof(data));
	for (i = 0; i < 3; i++) {
		ref = (struct cache_ref){ .key = "a",
					  .etag = "e1",
					  .index = i };
		name_of("a", "e1", i, a1[i]);
		all &= cache_put(v.c, a1[i], &ref, data, sizeof(data)) == 0;
	}
	for (i = 0; i < 2; i++) {
		ref = (struct cache_ref){ .key = "a",
					  .etag = "e2",
					  .index = i };
		name_of("a", "e2", i, a2[i]);
		all &= cache_put(v.c, a2[i], &ref, data, sizeof(data)) == 0;
	}
	ref = (struct cache_ref){ .key = "b", .etag = "e1", .index = 0 };
	name_of("b", "e1", 0, b1);
	all &= cache_put(v.c, b1, &ref, data, sizeof(data)) == 0;
	ok(all, "drop: 6 puts");
	is_int(cache_drop_object(v.c, "a", "e2"), 0, "drop: a except e2");
	all = true;
	for (i = 0; i < 3; i++)
		all &= !cache_contains(v.c, a1[i]) && !on_disk(&v, a1[i]) &&
		       !has_row(&v, a1[i]);
	ok(all, "drop: a@e1 gone: index, files and rows");
	ok(cache_contains(v.c, a2[0]) && cache_contains(v.c, a2[1]) &&
		   cache_contains(v.c, b1),
	   "drop: a@e2 and b kept");
	is_int(cache_drop_object(v.c, "a", NULL), 0, "drop: all of a");
	ok(!cache_contains(v.c, a2[0]) && !cache_contains(v.c, a2[1]) &&
		   !on_disk(&v, a2[0]) && cache_contains(v.c, b1),
	   "drop: a gone, b kept");
	is_int(cache_drop_object(v.c, "nothing", NULL), 0, "drop: unknown key");
	env_close(&v);
}

/* Put chunk @index of object (@key, "e") with @len bytes of 'x'. */
static int put_obj_chunk(struct env *v, const char *key, uint64_t index,
			 size_t len, char name[NAME_SZ])
{
	struct cache_ref ref = { .key = key, .etag = "e", .index = index };
	static unsigned char data[8192];

	memset(data, 'x', sizeof(data));
	name_of(key, "e", index, name);
	return cache_put(v->c, name, &ref, data, len);
}

static void test_max_entries(void)
{
	char n[6][3][NAME_SZ], keys[6][8];
	unsigned char buf[16];
	struct cache_stats st;
	bool all = true;
	struct env v;
	int i, j;

	env_init(&v, "entries", 64 * MIB);
	v.conf.max_entries = 3;
	if (!ok(env_open(&v) == 0, "entries: open"))
		return;
	/* objects o0..o2, three chunks each */
	for (i = 0; i < 3; i++) {
		snprintf(keys[i], sizeof(keys[i]), "o%d", i);
		for (j = 0; j < 3; j++) {
			all &= put_obj_chunk(&v, keys[i], j, 1000, n[i][j]) ==
			       0;
			next_ms();
		}
	}
	ok(all, "entries: 9 puts");
	cache_get_stats(v.c, &st);
	ok(st.objects == 3 && st.chunks == 9, "entries: 3 objects, 9 chunks");
	is_int(st.data_bytes, 9000, "entries: data bytes summed");
	/* o0 read last: o1 is now the least recently used object */
	is_int(cache_read(v.c, n[0][2], 0, buf, sizeof(buf)), sizeof(buf),
	       "entries: read o0");
	next_ms();
	snprintf(keys[3], sizeof(keys[3]), "o3");
	is_int(put_obj_chunk(&v, keys[3], 0, 1000, n[3][0]), 0,
	       "entries: put a 4th object");
	cache_get_stats(v.c, &st);
	is_int(st.objects, 3, "entries: back at 3 objects");
	all = true;
	for (j = 0; j < 3; j++)
		all &= !cache_contains(v.c, n[1][j]) && !on_disk(&v, n[1][j]) &&
		       !has_row(&v, n[1][j]);
	ok(all, "entries: o1, least recently used, went whole");
	ok(cache_contains(v.c, n[0][0]) && cache_contains(v.c, n[0][1]) &&
		   cache_contains(v.c, n[2][0]) && cache_contains(v.c, n[3][0]),
	   "entries: o0 (chunks read or not), o2 and o3 kept");
	/* a second chunk of a cached object adds no object */
	is_int(put_obj_chunk(&v, keys[3], 1, 1000, n[3][1]), 0,
	       "entries: o3 chunk 1");
	cache_get_stats(v.c, &st);
	ok(st.objects == 3 && cache_contains(v.c, n[2][0]),
	   "entries: more chunks of one object evict nothing");
	/* a pinned object is skipped: the next one goes */
	next_ms();
	is_int(cache_pin(v.c, n[2][1]), 0, "entries: pin o2 (least recent)");
	snprintf(keys[4], sizeof(keys[4]), "o4");
	is_int(put_obj_chunk(&v, keys[4], 0, 1000, n[4][0]), 0,
	       "entries: put o4");
	ok(cache_contains(v.c, n[2][0]) && !cache_contains(v.c, n[0][0]),
	   "entries: pinned o2 skipped, o0 evicted in its place");
	cache_unpin(v.c, n[2][1]);
	env_close(&v);

	/* a lower limit at open evicts the least recent objects */
	v.conf.max_entries = 1;
	if (!ok(env_open(&v) == 0, "entries: reopen with 1"))
		return;
	cache_get_stats(v.c, &st);
	is_int(st.objects, 1, "entries: 1 object after reopen");
	ok(cache_contains(v.c, n[4][0]) && !cache_contains(v.c, n[3][0]),
	   "entries: the most recent object kept");
	is_int(st.data_bytes, 1000, "entries: data bytes follow");
	env_close(&v);
}

static void test_max_age(void)
{
	char old1[NAME_SZ], old2[NAME_SZ], young[NAME_SZ], fresh[NAME_SZ];
	struct cache_gc_result r;
	unsigned char buf[8];
	struct cache_stats st;
	int64_t t0;
	struct env v;

	env_init(&v, "age", 64 * MIB);
	v.conf.max_age_ms = 400;
	v.conf.flush_ms = 600000;
	if (!ok(env_open(&v) == 0, "age: open"))
		return;
	t0 = wall_ms();
	put_obj_chunk(&v, "a", 0, 100, old1);
	put_obj_chunk(&v, "a", 1, 100, old2);
	put_obj_chunk(&v, "b", 0, 100, young);
	/* keep b read while a ages past the limit */
	while (wall_ms() - t0 < 3000 &&
	       (cache_contains(v.c, old1) || cache_contains(v.c, old2))) {
		cache_read(v.c, young, 0, buf, sizeof(buf));
		nap_ms(20);
	}
	ok(!cache_contains(v.c, old1) && !cache_contains(v.c, old2) &&
		   !on_disk(&v, old1) && !has_row(&v, old2),
	   "age: unread chunks dropped by the thread within %lld ms",
	   (long long)(wall_ms() - t0));
	ok(cache_contains(v.c, young), "age: a chunk read meanwhile kept");
	cache_get_stats(v.c, &st);
	ok(st.expired == 2 && st.evicted == 2, "age: counted expired (%llu)",
	   (unsigned long long)st.expired);
	env_close(&v);

	/* gc --older-than, with no limit configured */
	env_init(&v, "age2", 64 * MIB);
	if (!ok(env_open(&v) == 0, "age: open without limit"))
		return;
	put_obj_chunk(&v, "a", 0, 100, old1);
	nap_ms(120);
	put_obj_chunk(&v, "b", 0, 100, fresh);
	is_int(cache_gc(v.c, 60, &r), 0, "age: gc older than 60 ms");
	ok(r.expired == 1 && !cache_contains(v.c, old1) &&
		   cache_contains(v.c, fresh),
	   "age: gc dropped the old chunk only");
	is_int(cache_gc(v.c, 0, &r), 0, "age: gc without age");
	ok(r.expired == 0 && cache_contains(v.c, fresh),
	   "age: no limit, nothing aged");
	env_close(&v);
}

static void test_drop_prefix(void)
{
	char a[NAME_SZ], ab[NAME_SZ], a_x[2][NAME_SZ], b[NAME_SZ];
	struct cache_drop_result r;
	struct env v;

	env_init(&v, "dprefix", 64 * MIB);
	if (!ok(env_open(&v) == 0, "prefix: open"))
		return;
	put_obj_chunk(&v, "d/a", 0, 100, a);
	put_obj_chunk(&v, "d/ab", 0, 100, ab);
	put_obj_chunk(&v, "d/a/x", 0, 100, a_x[0]);
	put_obj_chunk(&v, "d/a/x", 1, 100, a_x[1]);
	put_obj_chunk(&v, "e/b", 0, 100, b);
	is_int(cache_drop_prefix(v.c, "d/a", true, &r), 0, "prefix: exact d/a");
	ok(r.chunks == 1 && !cache_contains(v.c, a) &&
		   cache_contains(v.c, ab) && cache_contains(v.c, a_x[0]),
	   "prefix: exact drops that key only");
	is_int(cache_pin(v.c, a_x[1]), 0, "prefix: pin one of d/a/x");
	is_int(cache_drop_prefix(v.c, "d/a/", false, &r), 0,
	       "prefix: below d/a/");
	ok(r.chunks == 2 && r.bytes > 0 && !cache_contains(v.c, a_x[0]) &&
		   !cache_contains(v.c, a_x[1]) && on_disk(&v, a_x[1]),
	   "prefix: both counted; the pinned one hidden, still on disk");
	cache_unpin(v.c, a_x[1]);
	ok(!on_disk(&v, a_x[1]) && !has_row(&v, a_x[1]),
	   "prefix: the pinned one went at its unpin");
	ok(cache_contains(v.c, ab) && cache_contains(v.c, b),
	   "prefix: d/ab and e/b kept");
	is_int(cache_drop_prefix(v.c, "", false, &r), 0, "prefix: all");
	ok(r.chunks == 2 && !cache_contains(v.c, ab) && !cache_contains(v.c, b),
	   "prefix: \"\" drops everything");
	env_close(&v);
}

static void test_gc_verify(void)
{
	char n[4][NAME_SZ], stray[NAME_SZ], p[512];
	struct cache_verify_result vr;
	struct cache_gc_result r;
	struct cache_stats st;
	unsigned char buf[8];
	struct meta_chunk row = { 0 };
	uint64_t over, before;
	struct env v;
	FILE *f;
	int i;

	env_init(&v, "gc", 64 * MIB);
	if (!ok(env_open(&v) == 0, "gc: open"))
		return;
	for (i = 0; i < 4; i++)
		put_obj_chunk(&v, "g", i, 5000, n[i]);
	/* a file without a row, a row without a file, a lost file */
	name_of("stray", "e", 0, stray);
	chunk_path(&v, stray, p, sizeof(p));
	f = fopen(p, "w");
	if (f) {
		fputs("junk", f);
		fclose(f);
	}
	row.name = "abcdef0123456789abcdef0123456789"
		   "abcdef0123456789abcdef0123456789";
	row.key = "ghost";
	row.etag = "e";
	meta_chunk_put(v.m, &row);
	chunk_path(&v, n[3], p, sizeof(p));
	unlink(p);
	is_int(cache_gc(v.c, 0, &r), 0, "gc: run");
	ok(r.orphan_files == 1 && !on_disk(&v, stray),
	   "gc: stray file removed");
	ok(r.stale_rows == 1 && !has_row(&v, row.name),
	   "gc: stale row deleted");
	ok(r.missing == 1 && !cache_contains(v.c, n[3]) && !has_row(&v, n[3]),
	   "gc: entry of the lost file forgotten");
	ok(r.evicted == 0 && r.expired == 0 && r.capped == 0 &&
		   cache_contains(v.c, n[0]),
	   "gc: under every limit nothing evicted");

	/* verify: flip a byte of chunk 1's data */
	chunk_path(&v, n[1], p, sizeof(p));
	f = fopen(p, "r+b");
	if (f) {
		int ch;

		fseek(f, -100, SEEK_END);
		ch = fgetc(f);
		fseek(f, -100, SEEK_END);
		fputc(ch ^ 0xff, f);
		fclose(f);
	}
	is_int(cache_verify(v.c, &vr), 0, "verify: run");
	ok(vr.checked == 3 && vr.bad == 1,
	   "verify: 3 checked, 1 bad (%llu/%llu)",
	   (unsigned long long)vr.checked, (unsigned long long)vr.bad);
	ok(!cache_contains(v.c, n[1]) && !on_disk(&v, n[1]) &&
		   !has_row(&v, n[1]),
	   "verify: the bad chunk dropped");
	ok(cache_read(v.c, n[0], 0, buf, sizeof(buf)) == sizeof(buf) &&
		   cache_contains(v.c, n[2]),
	   "verify: good chunks kept");
	cache_get_stats(v.c, &st);
	ok(st.corrupt == 1 && st.evicted == 0, "verify: counted corrupt");

	/*
	 * gc: under the cap when it returns (the thread, kicked by the
	 * reservation, may have done part of the work meanwhile)
	 */
	for (i = 0; i < 8; i++)
		put_obj_chunk(&v, "k", i, 5000, stray);
	cache_get_stats(v.c, &st);
	over = 64 * MIB - st.used_bytes + 1;
	before = st.evicted;
	cache_reserve_force(v.c, over);
	is_int(cache_gc(v.c, 0, &r), 0, "gc: over the cap");
	cache_get_stats(v.c, &st);
	ok(st.evicted > before && st.used_bytes + over <= 64 * MIB,
	   "gc: under the cap when it returns");
	cache_unreserve(v.c, over);
	env_close(&v);
}

static void test_floor(void)
{
	struct statvfs sv;
	char name[NAME_SZ];
	struct cache_stats st;
	size_t files = 1;
	struct env v;

	env_init(&v, "floor", 64 * MIB);
	if (statvfs(root, &sv) < 0) {
		ok(0, "floor: statvfs");
		return;
	}
	v.conf.min_free_bytes =
		(uint64_t)sv.f_bavail * sv.f_frsize + 1024 * MIB;
	if (!ok(env_open(&v) == 0, "floor: open"))
		return;
	is_int(put_chunk(&v, "floor", 0, 1000, name), -ENOSPC,
	       "floor: -ENOSPC under the free-space floor");
	cache_get_stats(v.c, &st);
	disk_use(&v, &files);
	ok(files == 0 && !cache_contains(v.c, name) && st.admitted == 0,
	   "floor: nothing written");
	env_close(&v);
}

static void test_stamps(void)
{
	char name[NAME_SZ];
	unsigned char buf[10];
	const struct row *r;
	struct rows *rs;
	int64_t t0, deadline;
	bool seen = false;
	struct env v;

	env_init(&v, "stamps", 64 * MIB);
	v.conf.flush_ms = 50;
	if (!ok(env_open(&v) == 0, "stamps: open"))
		return;
	put_chunk(&v, "st", 0, 1000, name);
	next_ms();
	t0 = wall_ms();
	next_ms();
	cache_read(v.c, name, 0, buf, sizeof(buf));
	for (deadline = wall_ms() + 10000; !seen && wall_ms() < deadline;) {
		rs = rows_get(&v);
		r = row_find(rs, name);
		seen = r && r->atime_ms > t0;
		free(rs);
		if (!seen)
			nap_ms(5);
	}
	ok(seen, "stamps: the thread writes access stamps every flush_ms");
	env_close(&v);
}

static void test_watermarks(void)
{
	struct cache_stats st;
	int64_t deadline;
	uint64_t low;
	bool down = false, prefix;
	size_t i, k;
	struct env v;

	env_init(&v, "bg", 8 * MIB);
	v.conf.high_pct = 60;
	v.conf.low_pct = 30;
	low = v.conf.cap_bytes * 30 / 100;
	if (!ok(env_open(&v) == 0, "bg: open"))
		return;
	/* to about half the cap, then one big chunk past the high mark */
	lru_n = 0;
	for (i = 0; i < 19; i++) {
		put_chunk(&v, "bg", i, 200000, lru_order[lru_n]);
		lru_n++;
	}
	cache_get_stats(v.c, &st);
	ok(st.evicted == 0 && st.used_bytes < v.conf.cap_bytes / 100 * 57,
	   "bg: below the high watermark, nothing evicted");
	put_chunk(&v, "bg", 100, 1500000, lru_order[lru_n]);
	lru_n++;
	for (deadline = wall_ms() + 10000; !down && wall_ms() < deadline;) {
		cache_get_stats(v.c, &st);
		down = st.used_bytes <= low;
		if (!down)
			nap_ms(5);
	}
	ok(down && st.evicted > 0,
	   "bg: the thread evicted down to the low watermark (%" PRIu64
	   " <= %" PRIu64 ")",
	   st.used_bytes, low);
	ok(disk_use(&v, NULL) <= low + 128 * KIB, "bg: the disk agrees");
	prefix = evicted_prefix(v.c, lru_order, lru_n, &k);
	ok(prefix && k > 0 && k < lru_n, "bg: evicted the %zu oldest", k);
	env_close(&v);
}

#define CONC_NAMES 64
#define CONC_THREADS 4
#define CONC_OPS 400

static char conc_name[CONC_NAMES][NAME_SZ];
static char conc_key[CONC_NAMES][16];
static unsigned char *conc_data[CONC_NAMES];

static size_t conc_len(int k)
{
	return 20000 + (size_t)k * 8000;
}

struct worker {
	struct env *v;
	unsigned seed;
	int id;
	unsigned long reads, bad, puts_failed;
};

static void *conc_work(void *arg)
{
	struct worker *w = arg;
	struct cache *c = w->v->c;
	unsigned char *buf = malloc(conc_len(CONC_NAMES));
	struct cache_ref ref = { .etag = "e" };
	ssize_t n;
	int i, k, op, rc;

	for (i = 0; i < CONC_OPS && buf; i++) {
		k = rand_r(&w->seed) % CONC_NAMES;
		op = rand_r(&w->seed) % 100;
		if (op < 45) {
			ref.key = conc_key[k];
			rc = cache_put(c, conc_name[k], &ref, conc_data[k],
				       conc_len(k));
			if (rc != 0)
				w->puts_failed++;
		} else if (op < 97) {
			bool pin = op >= 90 && cache_pin(c, conc_name[k]) == 0;

			n = cache_read(c, conc_name[k], 0, buf,
				       conc_len(CONC_NAMES));
			w->reads++;
			if (n >= 0 && ((size_t)n != conc_len(k) ||
				       memcmp(buf, conc_data[k], (size_t)n)))
				w->bad++;
			if (n < 0 && n != -ENOENT)
				w->bad++;
			if (pin)
				cache_unpin(c, conc_name[k]);
		} else if (op < 99) {
			if (cache_drop_object(c, conc_key[k], NULL) < 0)
				w->bad++;
		} else if (w->id == 0) {
			cache_evict_all(c);
		}
	}
	free(buf);
	return NULL;
}

/*
 * Wait until the background thread is done: nothing evicted for 50 ms.
 * Use is then under the high watermark, so it stays idle.
 */
static void quiesce(struct cache *c)
{
	struct cache_stats a, b;
	int64_t deadline = wall_ms() + 10000;

	cache_get_stats(c, &a);
	while (wall_ms() < deadline) {
		nap_ms(50);
		cache_get_stats(c, &b);
		if (b.evicted == a.evicted)
			return;
		a = b;
	}
}

static void test_concurrency(void)
{
	struct worker w[CONC_THREADS];
	pthread_t t[CONC_THREADS];
	struct cache_stats st;
	unsigned long reads = 0, bad = 0, failed = 0;
	bool agree = true, rows_agree;
	size_t files, i, n = 0;
	struct rows *rs;
	struct env v;
	int k;

	env_init(&v, "conc", 10 * MIB);
	v.conf.high_pct = 95;
	v.conf.low_pct = 85;
	if (!ok(env_open(&v) == 0, "conc: open"))
		return;
	for (k = 0; k < CONC_NAMES; k++) {
		snprintf(conc_key[k], sizeof(conc_key[k]), "conc/%d", k);
		name_of(conc_key[k], "e", 0, conc_name[k]);
		conc_data[k] = malloc(conc_len(k));
		if (conc_data[k])
			fill(conc_data[k], conc_len(k), (unsigned)k);
	}
	for (k = 0; k < CONC_THREADS; k++) {
		w[k] = (struct worker){ .v = &v,
					.seed = 1234u + (unsigned)k,
					.id = k };
		pthread_create(&t[k], NULL, conc_work, &w[k]);
	}
	for (k = 0; k < CONC_THREADS; k++) {
		pthread_join(t[k], NULL);
		reads += w[k].reads;
		bad += w[k].bad;
		failed += w[k].puts_failed;
	}
	/* the thread may still be evicting after the last puts */
	quiesce(v.c);

	is_int(bad, 0, "conc: every read gave the right bytes or a miss");
	is_int(failed, 0, "conc: every put succeeded");
	cache_get_stats(v.c, &st);
	ok(st.hits + st.misses == reads, "conc: hits + misses = reads (%lu)",
	   reads);
	disk_use(&v, &files);
	for (k = 0; k < CONC_NAMES; k++) {
		bool in = cache_contains(v.c, conc_name[k]);

		agree &= in == on_disk(&v, conc_name[k]);
		n += in;
	}
	if (!ok(agree && files == n && st.chunks == n,
		"conc: index = files on disk (%zu chunks)", n))
		diag("agree %d, %zu files, %" PRIu64 " in stats", agree, files,
		     st.chunks);
	rs = rows_get(&v);
	rows_agree = rs && rs->n == n;
	for (i = 0; rs && i < rs->n; i++)
		rows_agree &= cache_contains(v.c, rs->r[i].name);
	ok(rows_agree, "conc: rows = index");
	free(rs);
	ok(disk_use(&v, NULL) <= v.conf.cap_bytes, "conc: under the cap");
	env_close(&v);

	/* and a restart finds the same */
	if (ok(env_open(&v) == 0, "conc: reopen")) {
		cache_get_stats(v.c, &st);
		disk_use(&v, &files);
		ok(st.chunks == n && files == n, "conc: reopen keeps %zu", n);
		env_close(&v);
	}
	for (k = 0; k < CONC_NAMES; k++)
		free(conc_data[k]);
}

int main(void)
{
	plan_lazy();
	log_init("test_cache", LOG_LVL_ERROR, false);
	if (!mkdtemp(root)) {
		ok(0, "mkdtemp");
		return done_testing();
	}
	test_conf();
	test_basic();
	test_lru();
	test_reconcile();
	test_pins();
	test_drop();
	test_floor();
	test_max_entries();
	test_max_age();
	test_drop_prefix();
	test_gc_verify();
	test_stamps();
	test_watermarks();
	test_concurrency();
	rm_rf(root);
	return done_testing();
}
