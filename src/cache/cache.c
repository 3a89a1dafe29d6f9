/*
 * cache.c - the chunk cache: an in-memory index of the chunk files, kept
 * under a byte cap by deleting the least recently used first.
 *
 * Why: a read must find its chunk without touching SQLite, and the cap must
 * hold at every admission, so while mounted the truth is an index in
 * memory; the chunk rows of the metadata store follow it, so that the next
 * mount starts with the same chunks in the same LRU order.
 *
 * Index: a chained hash table keyed by chunk name, and an intrusive doubly
 * linked LRU list of the ready entries (head: most recently used).  An
 * entry is
 *
 *   a placeholder  while a first cache_put() of its name writes the file:
 *                  in the table only, so that nobody deletes the name
 *                  under the write; invisible to readers; not in the LRU
 *   ready          once its file exists: in the table and the LRU, its
 *                  bytes in chunk_bytes, its row written
 *   doomed         ready, but deleted as soon as nobody holds it: by
 *                  cache_drop_object() while pinned, or after a reader found
 *                  its file missing or corrupt while others held it.
 *                  Invisible to readers; a new write of the name revives it
 *
 * Objects: each ready entry that knows its object (key and ETag) hangs on
 * a struct obj, which counts its ready entries and sits in a second LRU
 * list ordered by the object's latest access.  nobjs counts the objects
 * with at least one ready entry; an object is freed with its last entry.
 * cache_max_entries caps nobjs: going over evicts the least recently used
 * objects whole (an object with a pinned or written chunk is skipped).
 * cache_max_age drops chunks not accessed for that long; the LRU list is
 * in access order, so the pass walks from its tail and stops at the first
 * chunk young enough (a wall clock stepping back may delay some: they go
 * at a later pass).  The thread checks both at every pass, at least every
 * AGE_CHECK_MAX_MS.
 *
 * cache_evict_all() skips pinned entries without dooming them (they are in
 * use, and the request is about space); cache_drop_object() dooms them,
 * since an old version's chunks are garbage once their readers are done.
 *
 * Invariants, all under cache.lock:
 *   - an entry leaves the table only with pins == 0 and writers == 0, so a
 *     reader or writer may keep its pointer without the lock;
 *   - a chunk file is deleted only under the lock, by whoever takes its
 *     entry out, and only when no writer counts on the entry: the index and
 *     the files agree, and an eviction never deletes a file that a
 *     concurrent cache_put() just renamed into place;
 *   - chunk rows are written and deleted under the lock, right after the
 *     index changes, so the rows follow the index in its order;
 *   - chunk_bytes sums the disk_bytes of ready entries; reserved sums the
 *     estimates of admissions in flight; meta_bytes is meta.db plus its WAL
 *     as last measured (at each admission and background pass);
 *   - ndirty counts the entries whose access stamp is not in their row;
 *     they were all read since the last flush, so they sit near the head.
 *
 * Outside the lock: chunk_write() and chunk_read() (the slow parts), and
 * the background thread's one transaction of access stamps per pass.
 *
 * Admission charges a chunk its data and header rounded up to 4 KiB, one
 * more 4 KiB block (file-system metadata), and META_SLACK for the WAL
 * growth of its own row write, made after meta_bytes was measured.
 * Admissions and reservations fill the cache up to meta_margin() short of
 * the cap: meta.db and its WAL also grow by the rows others write (the
 * vfs's objects and listings, staged files) until the next measurement.
 *
 * Logging: chunk.c and meta.c log their own failures with the path; this
 * file adds the cache's view of a failing disk (read, write, no room) at
 * warn at most once per WARN_EVERY_MS for each kind, and at debug
 * otherwise, so a full or failing disk is one line, not one per read.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>

#include "s3cachefs/cache.h"
#include "s3cachefs/chunk.h"
#include "s3cachefs/log.h"
#include "s3cachefs/meta.h"

#define BLOCK 4096ULL
/* chunk.h's fixed header fields, generously; CRCs come on top */
#define HEADER_FIXED 128ULL
/* WAL frames of one row write: a few pages of 4 KiB plus frame headers */
#define META_SLACK (64 * 1024ULL)
/* at most this much of the cap is kept for meta.db's growth: see the top */
#define META_MARGIN_MAX (1024 * 1024ULL)
/* chunks deleted per hold of the lock by long passes, and rows per batch */
#define EVICT_BATCH 64
/* a failing disk is logged at warn at most this often per kind */
#define WARN_EVERY_MS (10 * 60 * 1000LL)
#define TABLE_MIN 1024
/* the thread checks the age limit at least this often */
#define AGE_CHECK_MAX_MS 60000
#define AGE_CHECK_MIN_MS 100

enum doom {
	DOOM_NONE,
	DOOM_DROP, /* cache_drop_object(): counted as evicted */
	DOOM_BAD,  /* file missing or corrupt: not counted as evicted */
};

struct entry;

/* One version of one object with ready chunks.  Every field under lock. */
struct obj {
	uint64_t nchunks;	 /* ready entries on the list below */
	struct entry *chunks;	 /* its entries, via onext/oprev */
	struct obj *hnext;	 /* hash chain */
	struct obj *prev, *next; /* object LRU (head: most recent) */
	const char *etag;	 /* points into key's allocation */
	char key[];		 /* key NUL etag NUL */
};

/* Every field is under cache.lock. */
struct entry {
	char name[CHUNK_NAME_LEN + 1];
	uint64_t disk_bytes; /* ready: what its file takes on disk */
	uint64_t data_len;   /* ready: object bytes it holds */
	struct obj *obj;     /* ready: its object, or NULL when not known */
	struct entry *onext, *oprev; /* the object's entries */
	int64_t atime_ms;	     /* last access, wall clock */
	uint64_t gen;	  /* completed writes, to tell a replaced file */
	unsigned pins;	  /* readers in chunk_read(), cache_pin() */
	unsigned writers; /* cache_put() calls in chunk_write() */
	bool ready;
	bool stamp_dirty;   /* atime_ms not yet in its row */
	bool seen;	    /* cache_open() only: its file was found */
	unsigned char doom; /* enum doom */
	struct entry *hnext;
	struct entry *prev, *next; /* LRU, ready entries only */
};

struct cache {
	struct cache_conf conf; /* defaults applied; conf.dir is dir */
	char *dir;
	char *db_path, *wal_path;
	struct meta *m;
	struct chunk_store *cs;
	pthread_t thread;
	bool thread_started;

	pthread_mutex_t lock;
	pthread_cond_t wake;	   /* to the thread: kick or stop (lock) */
	struct entry **table;	   /* lock; nbuckets chains */
	size_t nbuckets;	   /* lock; a power of two */
	size_t nentries;	   /* lock; placeholders included */
	struct entry *head, *tail; /* lock; the LRU */
	uint64_t nready;	   /* lock */
	uint64_t chunk_bytes;	   /* lock */
	uint64_t data_bytes;	   /* lock; data_len of ready entries */
	struct obj **otable;	   /* lock; onbuckets chains */
	size_t onbuckets;	   /* lock; a power of two */
	uint64_t nobjs;		   /* lock; objects in otable */
	struct obj *ohead, *otail; /* lock; the object LRU */
	uint64_t meta_bytes;	   /* lock */
	uint64_t reserved;	   /* lock */
	size_t ndirty;		   /* lock */
	bool stop, kick;	   /* lock */
	/* lock: when a failure of that kind was last logged at warn; written
	 * data refused has its own, so a write's ENOSPC is still said after
	 * reads were refused room */
	int64_t warned_read, warned_write, warned_room, warned_staging;
	struct cache_stats st; /* lock; the counters only */
};

/* Strings collected from a scan, owned. */
struct str_list {
	char **v;
	size_t n, cap;
};

/* Names whose rows go in one transaction. */
struct row_batch {
	size_t n;
	const char *ptrs[EVICT_BATCH];
	char names[EVICT_BATCH][CHUNK_NAME_LEN + 1];
};

/*
 * How far an eviction must go: chunk_bytes + meta_bytes + reserved + extra
 * at most max_used, and avail + freed at least min_free + extra.
 */
struct goal {
	uint64_t max_used;
	uint64_t extra;	   /* bytes about to be added */
	uint64_t avail;	   /* free bytes when the pass began, reserved off */
	uint64_t min_free; /* the floor */
	uint64_t freed;	   /* bytes evicted so far */
};

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint64_t sat_add(uint64_t a, uint64_t b)
{
	return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

static uint64_t round_up(uint64_t n, uint64_t to)
{
	return (n + to - 1) / to * to;
}

/* @pct percent of @n, without overflow. */
static uint64_t pct_of(uint64_t n, unsigned pct)
{
	return n / 100 * pct + n % 100 * pct / 100;
}

/* Room kept under the cap for metadata written by others: see the top.
 * A 32nd of the cap, at most 1 MiB (about one WAL between checkpoints). */
static uint64_t meta_margin(uint64_t cap)
{
	return cap / 32 < META_MARGIN_MAX ? cap / 32 : META_MARGIN_MAX;
}

/* What admitting @len bytes may take: see the top. */
static uint64_t need_of(size_t len)
{
	uint64_t crcs = 4 * (((uint64_t)len + CHUNK_BLOCK - 1) / CHUNK_BLOCK);

	return round_up(len + HEADER_FIXED + crcs, BLOCK) + BLOCK + META_SLACK;
}

static char *path_join(const char *dir, const char *leaf)
{
	size_t n = strlen(dir) + 1 + strlen(leaf) + 1;
	char *p = malloc(n);

	if (p)
		snprintf(p, n, "%s/%s", dir, leaf);
	return p;
}

static int str_list_add(struct str_list *l, const char *s)
{
	char **v;
	size_t cap;

	if (l->n == l->cap) {
		cap = l->cap ? 2 * l->cap : 64;
		v = realloc(l->v, cap * sizeof(*v));
		if (!v)
			return -ENOMEM;
		l->v = v;
		l->cap = cap;
	}
	l->v[l->n] = strdup(s);
	if (!l->v[l->n])
		return -ENOMEM;
	l->n++;
	return 0;
}

static void str_list_release(struct str_list *l)
{
	size_t i;

	for (i = 0; i < l->n; i++)
		free(l->v[i]);
	free(l->v);
	memset(l, 0, sizeof(*l));
}

/* Hash table */

static size_t bucket_of(size_t nbuckets, const char *name)
{
	uint64_t h = 14695981039346656037ULL; /* FNV-1a */

	for (; *name; name++) {
		h ^= (unsigned char)*name;
		h *= 1099511628211ULL;
	}
	return (size_t)(h & (nbuckets - 1));
}

static struct entry *table_find(const struct cache *c, const char *name)
{
	struct entry *e = c->table[bucket_of(c->nbuckets, name)];

	while (e && strcmp(e->name, name) != 0)
		e = e->hnext;
	return e;
}

/* Double the buckets; without memory, chains just grow longer. */
static void table_grow(struct cache *c)
{
	size_t n = c->nbuckets * 2, i, b;
	struct entry **t = calloc(n, sizeof(*t));
	struct entry *e, *next;

	if (!t)
		return;
	for (i = 0; i < c->nbuckets; i++) {
		for (e = c->table[i]; e; e = next) {
			next = e->hnext;
			b = bucket_of(n, e->name);
			e->hnext = t[b];
			t[b] = e;
		}
	}
	free(c->table);
	c->table = t;
	c->nbuckets = n;
}

static void table_add(struct cache *c, struct entry *e)
{
	size_t b;

	if (c->nentries >= c->nbuckets)
		table_grow(c);
	b = bucket_of(c->nbuckets, e->name);
	e->hnext = c->table[b];
	c->table[b] = e;
	c->nentries++;
}

static void table_del(struct cache *c, struct entry *e)
{
	struct entry **p = &c->table[bucket_of(c->nbuckets, e->name)];

	while (*p != e)
		p = &(*p)->hnext;
	*p = e->hnext;
	c->nentries--;
}

/* LRU list */

static void lru_unlink(struct cache *c, struct entry *e)
{
	if (e->prev)
		e->prev->next = e->next;
	else
		c->head = e->next;
	if (e->next)
		e->next->prev = e->prev;
	else
		c->tail = e->prev;
	e->prev = e->next = NULL;
}

static void lru_push(struct cache *c, struct entry *e)
{
	e->prev = NULL;
	e->next = c->head;
	if (c->head)
		c->head->prev = e;
	else
		c->tail = e;
	c->head = e;
}

/* Objects */

static size_t obj_bucket(size_t nbuckets, const char *key, const char *etag)
{
	uint64_t h = 14695981039346656037ULL; /* FNV-1a over key NUL etag */
	const char *p;

	for (p = key;; p++) {
		h ^= (unsigned char)*p;
		h *= 1099511628211ULL;
		if (!*p)
			break;
	}
	for (p = etag; *p; p++) {
		h ^= (unsigned char)*p;
		h *= 1099511628211ULL;
	}
	return (size_t)(h & (nbuckets - 1));
}

static struct obj *obj_find_locked(const struct cache *c, const char *key,
				   const char *etag)
{
	struct obj *o = c->otable[obj_bucket(c->onbuckets, key, etag)];

	while (o && (strcmp(o->key, key) != 0 || strcmp(o->etag, etag) != 0))
		o = o->hnext;
	return o;
}

/* Double the buckets; without memory, chains just grow longer. */
static void obj_table_grow(struct cache *c)
{
	size_t n = c->onbuckets * 2, i, b;
	struct obj **t = calloc(n, sizeof(*t));
	struct obj *o, *next;

	if (!t)
		return;
	for (i = 0; i < c->onbuckets; i++) {
		for (o = c->otable[i]; o; o = next) {
			next = o->hnext;
			b = obj_bucket(n, o->key, o->etag);
			o->hnext = t[b];
			t[b] = o;
		}
	}
	free(c->otable);
	c->otable = t;
	c->onbuckets = n;
}

static void obj_lru_unlink(struct cache *c, struct obj *o)
{
	if (o->prev)
		o->prev->next = o->next;
	else
		c->ohead = o->next;
	if (o->next)
		o->next->prev = o->prev;
	else
		c->otail = o->prev;
	o->prev = o->next = NULL;
}

static void obj_touch_locked(struct cache *c, struct obj *o)
{
	if (!o || c->ohead == o)
		return;
	obj_lru_unlink(c, o);
	o->next = c->ohead;
	if (c->ohead)
		c->ohead->prev = o;
	else
		c->otail = o;
	c->ohead = o;
}

/* The object (@key, @etag), made when new; NULL without memory. */
static struct obj *obj_get_locked(struct cache *c, const char *key,
				  const char *etag)
{
	size_t klen = strlen(key), elen = strlen(etag), b;
	struct obj *o = obj_find_locked(c, key, etag);

	if (o)
		return o;
	o = calloc(1, sizeof(*o) + klen + elen + 2);
	if (!o)
		return NULL;
	memcpy(o->key, key, klen + 1);
	memcpy(o->key + klen + 1, etag, elen + 1);
	o->etag = o->key + klen + 1;
	if (c->nobjs >= c->onbuckets)
		obj_table_grow(c);
	b = obj_bucket(c->onbuckets, key, etag);
	o->hnext = c->otable[b];
	c->otable[b] = o;
	c->nobjs++;
	/* at the tail: obj_touch_locked() puts it where it belongs */
	o->prev = c->otail;
	if (c->otail)
		c->otail->next = o;
	else
		c->ohead = o;
	c->otail = o;
	return o;
}

/* Hang ready entry @e on object (@key, @etag), when memory allows. */
static void obj_attach_locked(struct cache *c, struct entry *e, const char *key,
			      const char *etag)
{
	struct obj *o = obj_get_locked(c, key, etag);

	e->obj = o;
	if (!o)
		return;
	e->oprev = NULL;
	e->onext = o->chunks;
	if (o->chunks)
		o->chunks->oprev = e;
	o->chunks = e;
	o->nchunks++;
}

/* Take @e off its object; the object goes with its last entry. */
static void obj_detach_locked(struct cache *c, struct entry *e)
{
	struct obj *o = e->obj;
	struct obj **p;

	if (!o)
		return;
	if (e->oprev)
		e->oprev->onext = e->onext;
	else
		o->chunks = e->onext;
	if (e->onext)
		e->onext->oprev = e->oprev;
	e->onext = e->oprev = NULL;
	e->obj = NULL;
	if (--o->nchunks)
		return;
	p = &c->otable[obj_bucket(c->onbuckets, o->key, o->etag)];
	while (*p != o)
		p = &(*p)->hnext;
	*p = o->hnext;
	obj_lru_unlink(c, o);
	c->nobjs--;
	free(o);
}

static bool visible(const struct entry *e)
{
	return e && e->ready && e->doom == DOOM_NONE;
}

static bool evictable(const struct entry *e)
{
	return e->pins == 0 && e->writers == 0;
}

/* True when a failure logged at @*last may be logged at warn again. */
static bool warn_due_locked(int64_t *last)
{
	int64_t t = now_ms();

	if (*last && t - *last < WARN_EVERY_MS)
		return false;
	*last = t;
	return true;
}

static uint64_t used_locked(const struct cache *c)
{
	return c->chunk_bytes + c->meta_bytes + c->reserved;
}

/* Space @path takes on disk; 0 when it does not exist. */
static uint64_t file_bytes(const char *path)
{
	struct stat st;

	if (stat(path, &st) < 0)
		return 0;
	return (uint64_t)st.st_blocks * 512;
}

static void measure_meta_locked(struct cache *c)
{
	c->meta_bytes = file_bytes(c->db_path) + file_bytes(c->wal_path);
}

/* Free bytes on the cache's file system, in-flight admissions off. */
static uint64_t avail_locked(const struct cache *c)
{
	struct statvfs sv;
	uint64_t a;

	/* not knowing is no reason to refuse chunks */
	if (statvfs(c->dir, &sv) < 0)
		return UINT64_MAX;
	a = (uint64_t)sv.f_bavail * sv.f_frsize;
	return a > c->reserved ? a - c->reserved : 0;
}

/* Wake the thread when use passed the high watermark. */
static void kick_locked(struct cache *c)
{
	if (c->kick ||
	    used_locked(c) < pct_of(c->conf.cap_bytes, c->conf.high_pct))
		return;
	c->kick = true;
	pthread_cond_signal(&c->wake);
}

/* Deleting chunks */

static void rows_flush_locked(struct cache *c, struct row_batch *b)
{
	/* a failure is logged by meta; such rows go at the next open */
	if (b->n)
		meta_chunk_delete_many(c->m, b->ptrs, b->n);
	b->n = 0;
}

static void rows_add_locked(struct cache *c, struct row_batch *b,
			    const char *name)
{
	if (b->n == EVICT_BATCH)
		rows_flush_locked(c, b);
	memcpy(b->names[b->n], name, CHUNK_NAME_LEN + 1);
	b->ptrs[b->n] = b->names[b->n];
	b->n++;
}

/*
 * Take ready entry @e (no pins, no writers) out, delete its file, and add
 * its name to @b; @evicted counts it as evicted.
 */
static void entry_drop_locked(struct cache *c, struct entry *e,
			      struct row_batch *b, bool evicted)
{
	/* a failure is logged by chunk; the file goes at the next open */
	if (chunk_remove(c->cs, e->name) < 0)
		c->st.disk_errors++;
	rows_add_locked(c, b, e->name);
	if (evicted) {
		c->st.evicted++;
		c->st.evicted_bytes += e->disk_bytes;
	}
	lru_unlink(c, e);
	obj_detach_locked(c, e);
	c->chunk_bytes -= e->disk_bytes;
	c->data_bytes -= e->data_len;
	c->nready--;
	if (e->stamp_dirty)
		c->ndirty--;
	table_del(c, e);
	free(e);
}

/*
 * After a pin or a writer went: free a placeholder nobody writes, and drop
 * a doomed entry nobody holds.
 */
static void entry_settle_locked(struct cache *c, struct entry *e)
{
	struct row_batch b;

	if (e->pins || e->writers)
		return;
	if (!e->ready) {
		table_del(c, e);
		free(e);
		return;
	}
	if (e->doom == DOOM_NONE)
		return;
	b.n = 0;
	entry_drop_locked(c, e, &b, e->doom == DOOM_DROP);
	rows_flush_locked(c, &b);
}

/* True when @g holds once @more further bytes are gone. */
static bool goal_met(const struct cache *c, const struct goal *g, uint64_t more)
{
	uint64_t used = used_locked(c);

	used = used > more ? used - more : 0;
	return sat_add(used, g->extra) <= g->max_used &&
	       sat_add(g->avail, sat_add(g->freed, more)) >=
		       sat_add(g->min_free, g->extra);
}

/* Whether evicting every unpinned entry could meet @g. */
static bool goal_reachable_locked(const struct cache *c, const struct goal *g)
{
	const struct entry *e;
	uint64_t more = 0;

	for (e = c->tail; e && !goal_met(c, g, more); e = e->prev)
		if (evictable(e))
			more += e->disk_bytes;
	return goal_met(c, g, more);
}

/*
 * Evict least recently used first, never @keep, until @g is met or @max
 * chunks went.  Returns how many went.
 */
static size_t evict_locked(struct cache *c, struct goal *g, size_t max,
			   const struct entry *keep)
{
	struct entry *e, *prev;
	struct row_batch b;
	size_t n = 0;

	b.n = 0;
	for (e = c->tail; e && n < max && !goal_met(c, g, 0); e = prev) {
		prev = e->prev;
		if (e == keep || !evictable(e))
			continue;
		g->freed += e->disk_bytes;
		entry_drop_locked(c, e, &b, true);
		n++;
	}
	rows_flush_locked(c, &b);
	return n;
}

/*
 * Make room for @need more bytes under the cap and above the floor, or
 * evict nothing and return -ENOSPC when even evicting every unpinned chunk
 * would not do.
 */
static int make_room_locked(struct cache *c, uint64_t need)
{
	struct goal g = {
		.max_used = c->conf.cap_bytes - meta_margin(c->conf.cap_bytes),
		.extra = need,
		.min_free = c->conf.min_free_bytes,
	};
	int tries;

	measure_meta_locked(c);
	g.avail = avail_locked(c);
	/* again only when the row deletes grew the WAL past the slack */
	for (tries = 0; tries < 4; tries++) {
		if (goal_met(c, &g, 0))
			return 0;
		if (!goal_reachable_locked(c, &g))
			return -ENOSPC;
		evict_locked(c, &g, SIZE_MAX, NULL);
		measure_meta_locked(c);
	}
	return goal_met(c, &g, 0) ? 0 : -ENOSPC;
}

/* True when every chunk of @o may be evicted now. */
static bool obj_evictable(const struct obj *o)
{
	const struct entry *e;

	for (e = o->chunks; e; e = e->onext)
		if (!evictable(e))
			return false;
	return true;
}

/*
 * Evict least recently used objects whole, never @keep nor one with a
 * chunk in use, until at most @max objects are left or @limit chunks
 * went.  Returns the chunks evicted.
 */
static size_t evict_objects_locked(struct cache *c, uint64_t max, size_t limit,
				   const struct obj *keep)
{
	struct obj *o, *prev;
	struct row_batch b;
	size_t n = 0;

	b.n = 0;
	for (o = c->otail; o && c->nobjs > max && n < limit; o = prev) {
		prev = o->prev;
		if (o == keep || !obj_evictable(o))
			continue;
		/* the last entry's drop frees @o */
		while (o->nchunks > 1) {
			entry_drop_locked(c, o->chunks, &b, true);
			n++;
		}
		entry_drop_locked(c, o->chunks, &b, true);
		n++;
	}
	rows_flush_locked(c, &b);
	return n;
}

/*
 * Evict chunks last accessed before @cutoff_ms, least recently used first,
 * at most @limit.  Returns how many went.
 */
static size_t evict_aged_locked(struct cache *c, int64_t cutoff_ms,
				size_t limit)
{
	struct entry *e, *prev;
	struct row_batch b;
	size_t n = 0;

	b.n = 0;
	for (e = c->tail; e && n < limit && e->atime_ms < cutoff_ms; e = prev) {
		prev = e->prev;
		if (!evictable(e))
			continue;
		entry_drop_locked(c, e, &b, true);
		c->st.expired++;
		n++;
	}
	rows_flush_locked(c, &b);
	return n;
}

/* Let others in between batches of a long pass; true to go on. */
static bool yield_locked(struct cache *c)
{
	pthread_mutex_unlock(&c->lock);
	pthread_mutex_lock(&c->lock);
	return !c->stop;
}

/* The age and entry limits, a batch per hold of the lock.  Counts went. */
static uint64_t enforce_limits_locked(struct cache *c, uint64_t max_age_ms)
{
	uint64_t n = 0;
	size_t k;

	if (max_age_ms) {
		int64_t cutoff = now_ms() - (int64_t)max_age_ms;

		do {
			k = evict_aged_locked(c, cutoff, EVICT_BATCH);
			n += k;
		} while (k == EVICT_BATCH && yield_locked(c));
	}
	if (c->conf.max_entries) {
		do {
			k = evict_objects_locked(c, c->conf.max_entries,
						 EVICT_BATCH, NULL);
			n += k;
		} while (k >= EVICT_BATCH && yield_locked(c));
	}
	return n;
}

/* Admission */

/*
 * The file of @e was written (@disk_bytes, holding @len bytes of data):
 * make it ready, write its row, and keep the entry limit.
 */
static void install_locked(struct cache *c, struct entry *e,
			   const struct cache_ref *ref, uint64_t disk_bytes,
			   uint64_t len)
{
	struct goal trim = { .max_used = c->conf.cap_bytes };
	const char *etag = ref->etag ? ref->etag : "";
	struct meta_chunk row;

	if (e->ready) {
		c->chunk_bytes -= e->disk_bytes;
		c->data_bytes -= e->data_len;
		lru_unlink(c, e);
		/* the same name is the same object, unless told otherwise */
		if (e->obj && (strcmp(e->obj->key, ref->key) != 0 ||
			       strcmp(e->obj->etag, etag) != 0))
			obj_detach_locked(c, e);
	} else {
		e->ready = true;
		c->nready++;
	}
	lru_push(c, e);
	if (!e->obj)
		obj_attach_locked(c, e, ref->key, etag);
	obj_touch_locked(c, e->obj);
	e->disk_bytes = disk_bytes;
	e->data_len = len;
	c->chunk_bytes += disk_bytes;
	c->data_bytes += len;
	e->atime_ms = now_ms();
	e->gen++;
	e->doom = DOOM_NONE;
	c->st.admitted++;

	row.name = e->name;
	row.key = ref->key;
	row.etag = etag;
	row.index = ref->index;
	row.disk_bytes = disk_bytes;
	row.atime_ms = e->atime_ms;
	row.data_len = len;
	/*
	 * A failure is logged by meta; the chunk serves until the next open,
	 * which deletes a file without a row.
	 */
	meta_chunk_put(c->m, &row);

	/* only if the estimate fell short, which it should not */
	if (used_locked(c) > c->conf.cap_bytes)
		evict_locked(c, &trim, SIZE_MAX, e);
	if (c->conf.max_entries && c->nobjs > c->conf.max_entries)
		evict_objects_locked(c, c->conf.max_entries, SIZE_MAX, e->obj);
	kick_locked(c);
}

int cache_reserve(struct cache *c, uint64_t bytes)
{
	bool first;
	int rc;

	pthread_mutex_lock(&c->lock);
	rc = make_room_locked(c, bytes);
	if (rc == 0) {
		c->reserved += bytes;
		kick_locked(c);
	} else {
		first = warn_due_locked(&c->warned_staging);
		pthread_mutex_unlock(&c->lock);
		log_msg(first ? LOG_LVL_WARN : LOG_LVL_DEBUG,
			"cache: no room for %llu bytes of written data in "
			"'%s': "
			"the cap or the free-space floor is reached",
			(unsigned long long)bytes, c->dir);
		return rc;
	}
	pthread_mutex_unlock(&c->lock);
	return 0;
}

void cache_reserve_force(struct cache *c, uint64_t bytes)
{
	pthread_mutex_lock(&c->lock);
	c->reserved += bytes;
	kick_locked(c);
	pthread_mutex_unlock(&c->lock);
}

void cache_unreserve(struct cache *c, uint64_t bytes)
{
	pthread_mutex_lock(&c->lock);
	c->reserved = c->reserved > bytes ? c->reserved - bytes : 0;
	pthread_mutex_unlock(&c->lock);
}

int cache_put(struct cache *c, const char *name, const struct cache_ref *ref,
	      const void *data, size_t len)
{
	uint64_t need, disk_bytes = 0;
	struct entry *e;
	bool first;
	int rc;

	if (!chunk_name_valid(name) || !ref || !ref->key || (len && !data) ||
	    len > CHUNK_SIZE_MAX)
		return -EINVAL;
	need = need_of(len);

	pthread_mutex_lock(&c->lock);
	rc = make_room_locked(c, need);
	if (rc < 0) {
		first = warn_due_locked(&c->warned_room);
		pthread_mutex_unlock(&c->lock);
		log_msg(first ? LOG_LVL_WARN : LOG_LVL_DEBUG,
			"cache: no room for chunk '%s' in '%s': the cap or "
			"the free-space floor is reached and the rest is in "
			"use",
			name, c->dir);
		return rc;
	}
	e = table_find(c, name);
	if (!e) {
		e = calloc(1, sizeof(*e));
		if (!e) {
			pthread_mutex_unlock(&c->lock);
			return -ENOMEM;
		}
		memcpy(e->name, name, CHUNK_NAME_LEN + 1);
		table_add(c, e);
	}
	e->writers++;
	c->reserved += need;
	kick_locked(c);
	pthread_mutex_unlock(&c->lock);

	rc = chunk_write(c->cs, name, data, len, &disk_bytes);

	pthread_mutex_lock(&c->lock);
	c->reserved -= need;
	e->writers--;
	first = false;
	if (rc == 0) {
		install_locked(c, e, ref, disk_bytes, len);
	} else if (rc != -ENOMEM) {
		c->st.disk_errors++;
		first = warn_due_locked(&c->warned_write);
	}
	/* after a failure the old file, if any, is still there */
	entry_settle_locked(c, e);
	pthread_mutex_unlock(&c->lock);
	if (rc < 0 && rc != -ENOMEM)
		log_msg(first ? LOG_LVL_WARN : LOG_LVL_DEBUG,
			"cache: cannot store chunk '%s': %s", name,
			strerror(-rc));
	return rc;
}

/* Reading */

ssize_t cache_read(struct cache *c, const char *name, uint64_t off, void *out,
		   size_t len)
{
	struct entry *e;
	bool first = false;
	uint64_t gen;
	ssize_t n;

	if (!chunk_name_valid(name) || (len && !out))
		return -EINVAL;
	pthread_mutex_lock(&c->lock);
	e = table_find(c, name);
	if (!visible(e)) {
		c->st.misses++;
		pthread_mutex_unlock(&c->lock);
		return -ENOENT;
	}
	e->pins++;
	lru_unlink(c, e);
	lru_push(c, e);
	obj_touch_locked(c, e->obj);
	e->atime_ms = now_ms();
	if (!e->stamp_dirty) {
		e->stamp_dirty = true;
		c->ndirty++;
	}
	gen = e->gen;
	pthread_mutex_unlock(&c->lock);

	n = chunk_read_cached(c->cs, name, off, out, len);

	pthread_mutex_lock(&c->lock);
	e->pins--;
	if (n >= 0) {
		c->st.hits++;
	} else if (n == -EBADMSG || n == -ENOENT || n == -ENOKEY) {
		if (n == -EBADMSG)
			c->st.corrupt++;
		else if (n == -ENOKEY)
			c->st.wrong_key++;
		c->st.misses++;
		/* unless a writer replaced the file meanwhile, it is gone */
		if (e->gen == gen && !e->writers && e->doom == DOOM_NONE)
			e->doom = DOOM_BAD;
		n = -ENOENT;
	} else if (n != -ENOMEM) {
		c->st.disk_errors++;
		first = warn_due_locked(&c->warned_read);
	}
	entry_settle_locked(c, e);
	pthread_mutex_unlock(&c->lock);
	if (n < 0 && n != -ENOENT && n != -ENOMEM)
		log_msg(first ? LOG_LVL_WARN : LOG_LVL_DEBUG,
			"cache: cannot read chunk '%s': %s", name,
			strerror((int)-n));
	return n;
}

bool cache_contains(struct cache *c, const char *name)
{
	bool found;

	if (!chunk_name_valid(name))
		return false;
	pthread_mutex_lock(&c->lock);
	found = visible(table_find(c, name));
	pthread_mutex_unlock(&c->lock);
	return found;
}

int cache_pin(struct cache *c, const char *name)
{
	struct entry *e;
	int rc = -ENOENT;

	if (!chunk_name_valid(name))
		return -ENOENT;
	pthread_mutex_lock(&c->lock);
	e = table_find(c, name);
	if (visible(e)) {
		e->pins++;
		rc = 0;
	}
	pthread_mutex_unlock(&c->lock);
	return rc;
}

void cache_unpin(struct cache *c, const char *name)
{
	struct entry *e;

	if (!chunk_name_valid(name))
		return;
	pthread_mutex_lock(&c->lock);
	e = table_find(c, name);
	if (e && e->pins) {
		e->pins--;
		entry_settle_locked(c, e);
	}
	pthread_mutex_unlock(&c->lock);
}

/* Dropping */

static int collect_name(void *ctx, const struct meta_chunk *mc)
{
	return mc->name ? str_list_add(ctx, mc->name) : 0;
}

/* Rows of object @key exactly, from a prefix scan. */
struct exact_ctx {
	const char *key;
	struct str_list *names;
};

static int collect_exact(void *ctx, const struct meta_chunk *mc)
{
	struct exact_ctx *x = ctx;

	if (!mc->name || !mc->key || strcmp(mc->key, x->key) != 0)
		return 0;
	return str_list_add(x->names, mc->name);
}

/*
 * Drop the chunks named by @names (rows of the store): a pinned one is
 * doomed to go at its last unpin, one being written stays.  Counts what
 * goes into @out (may be NULL).
 */
static void drop_names(struct cache *c, const struct str_list *names,
		       struct cache_drop_result *out)
{
	struct cache_drop_result r = { 0 };
	struct row_batch b;
	struct entry *e;
	size_t i;

	b.n = 0;
	pthread_mutex_lock(&c->lock);
	for (i = 0; i < names->n; i++) {
		/* rows that cannot name a chunk go at the next open */
		if (!chunk_name_valid(names->v[i]))
			continue;
		e = table_find(c, names->v[i]);
		if (!e) {
			/* a row the index does not know: just the row */
			rows_add_locked(c, &b, names->v[i]);
		} else if (!e->ready || e->writers) {
			/* being written: the writer's version stands */
		} else if (e->pins) {
			if (e->doom == DOOM_NONE) {
				e->doom = DOOM_DROP;
				r.chunks++;
				r.bytes += e->disk_bytes;
			}
		} else {
			r.chunks++;
			r.bytes += e->disk_bytes;
			entry_drop_locked(c, e, &b, true);
		}
		/* let readers in between batches */
		if (b.n == EVICT_BATCH) {
			rows_flush_locked(c, &b);
			pthread_mutex_unlock(&c->lock);
			pthread_mutex_lock(&c->lock);
		}
	}
	rows_flush_locked(c, &b);
	pthread_mutex_unlock(&c->lock);
	if (out)
		*out = r;
}

int cache_drop_object(struct cache *c, const char *key, const char *keep_etag)
{
	struct str_list names = { 0 };
	int rc;

	if (!key)
		return -EINVAL;
	rc = meta_chunk_scan_other(c->m, key, keep_etag, collect_name, &names);
	if (rc == 0)
		drop_names(c, &names, NULL);
	str_list_release(&names);
	return rc;
}

int cache_drop_prefix(struct cache *c, const char *prefix, bool exact,
		      struct cache_drop_result *out)
{
	struct str_list names = { 0 };
	struct exact_ctx x = { .key = prefix, .names = &names };
	int rc;

	if (!prefix)
		return -EINVAL;
	if (exact)
		rc = meta_chunk_scan_prefix(c->m, prefix, collect_exact, &x);
	else
		rc = meta_chunk_scan_prefix(c->m, prefix, collect_name, &names);
	if (rc == 0)
		drop_names(c, &names, out);
	str_list_release(&names);
	return rc;
}

int cache_evict_all(struct cache *c)
{
	/* the metadata keeps use above 0: every unpinned chunk goes */
	struct goal g = { .max_used = 0, .avail = UINT64_MAX };
	uint64_t rounds;

	pthread_mutex_lock(&c->lock);
	/* bounded, in case puts keep coming */
	rounds = c->nready / EVICT_BATCH + 1;
	while (rounds--) {
		if (evict_locked(c, &g, EVICT_BATCH, NULL) < EVICT_BATCH)
			break;
		pthread_mutex_unlock(&c->lock);
		pthread_mutex_lock(&c->lock);
	}
	pthread_mutex_unlock(&c->lock);
	return 0;
}

void cache_get_stats(struct cache *c, struct cache_stats *out)
{
	struct chunk_stats cst;

	chunk_get_stats(c->cs, &cst);
	pthread_mutex_lock(&c->lock);
	*out = c->st;
	out->used_bytes = c->chunk_bytes + c->meta_bytes;
	out->cap_bytes = c->conf.cap_bytes;
	out->chunks = c->nready;
	out->objects = c->nobjs;
	out->data_bytes = c->data_bytes;
	out->max_entries = c->conf.max_entries;
	out->max_age_ms = c->conf.max_age_ms;
	out->file_opens = cst.opens;
	pthread_mutex_unlock(&c->lock);
}

/* The background thread */

/* Write the stamps taken since the last flush in one transaction. */
static void flush_stamps(struct cache *c)
{
	char(*names)[CHUNK_NAME_LEN + 1] = NULL;
	struct meta_touch *t = NULL;
	struct entry *e;
	size_t n = 0, want, i;

	pthread_mutex_lock(&c->lock);
	want = c->ndirty;
	if (want) {
		t = malloc(want * sizeof(*t));
		names = malloc(want * sizeof(*names));
	}
	if (!t || !names) {
		/* nothing to do, or try again at the next pass */
		pthread_mutex_unlock(&c->lock);
		goto out;
	}
	for (e = c->head; e && n < want; e = e->next) {
		if (!e->stamp_dirty)
			continue;
		memcpy(names[n], e->name, CHUNK_NAME_LEN + 1);
		t[n].name = names[n];
		t[n].atime_ms = e->atime_ms;
		e->stamp_dirty = false;
		n++;
	}
	c->ndirty -= n;
	pthread_mutex_unlock(&c->lock);

	if (meta_chunk_touch_many(c->m, t, n) == 0)
		goto out;
	/* logged by meta: keep the stamps for the next pass */
	pthread_mutex_lock(&c->lock);
	for (i = 0; i < n; i++) {
		e = table_find(c, names[i]);
		if (e && e->ready && !e->stamp_dirty) {
			e->stamp_dirty = true;
			c->ndirty++;
		}
	}
	pthread_mutex_unlock(&c->lock);
out:
	free(t);
	free(names);
}

/*
 * Write pending stamps, then, when use is past the high watermark or free
 * space under the floor, evict down to the low watermark and above the
 * floor, a batch per hold of the lock.
 */
static void bg_pass(struct cache *c)
{
	struct goal g = {
		.max_used = pct_of(c->conf.cap_bytes, c->conf.low_pct),
		.min_free = c->conf.min_free_bytes,
	};

	flush_stamps(c);
	pthread_mutex_lock(&c->lock);
	measure_meta_locked(c);
	g.avail = avail_locked(c);
	if (used_locked(c) >= pct_of(c->conf.cap_bytes, c->conf.high_pct) ||
	    g.avail < g.min_free) {
		while (!c->stop &&
		       evict_locked(c, &g, EVICT_BATCH, NULL) == EVICT_BATCH) {
			pthread_mutex_unlock(&c->lock);
			pthread_mutex_lock(&c->lock);
		}
	}
	if (!c->stop)
		enforce_limits_locked(c, c->conf.max_age_ms);
	pthread_mutex_unlock(&c->lock);
}

/* How long the thread sleeps between passes. */
static uint32_t period_ms(const struct cache_conf *conf)
{
	uint64_t p = conf->flush_ms, age;

	if (conf->max_age_ms) {
		age = conf->max_age_ms / 4;
		if (age < AGE_CHECK_MIN_MS)
			age = AGE_CHECK_MIN_MS;
		if (age > AGE_CHECK_MAX_MS)
			age = AGE_CHECK_MAX_MS;
		if (age < p)
			p = age;
	}
	return (uint32_t)p;
}

static void *bg_main(void *arg)
{
	struct cache *c = arg;
	uint32_t period = period_ms(&c->conf);
	struct timespec dl;

	pthread_mutex_lock(&c->lock);
	while (!c->stop) {
		clock_gettime(CLOCK_MONOTONIC, &dl);
		dl.tv_sec += period / 1000;
		dl.tv_nsec += (long)(period % 1000) * 1000000;
		if (dl.tv_nsec >= 1000000000) {
			dl.tv_sec++;
			dl.tv_nsec -= 1000000000;
		}
		while (!c->stop && !c->kick)
			if (pthread_cond_timedwait(&c->wake, &c->lock, &dl) ==
			    ETIMEDOUT)
				break;
		if (c->stop)
			break;
		c->kick = false;
		pthread_mutex_unlock(&c->lock);
		bg_pass(c);
		pthread_mutex_lock(&c->lock);
	}
	pthread_mutex_unlock(&c->lock);
	return NULL;
}

/* Maintenance: gc and verify */

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool sorted_has(const struct str_list *l, const char *name)
{
	return l->n && bsearch(&name, l->v, l->n, sizeof(*l->v), cmp_str);
}

static int scan_name(void *ctx, const char *name, uint64_t disk_bytes)
{
	(void)disk_bytes;
	return str_list_add(ctx, name);
}

/* Evict down to the cap and above the floor now, whatever the watermarks. */
static void gc_cap_locked(struct cache *c)
{
	struct goal g = {
		.max_used = c->conf.cap_bytes,
		.min_free = c->conf.min_free_bytes,
	};

	measure_meta_locked(c);
	g.avail = avail_locked(c);
	while (evict_locked(c, &g, EVICT_BATCH, NULL) == EVICT_BATCH)
		if (!yield_locked(c))
			break;
}

/*
 * Files without an entry go; entries whose file is gone or unreadable go
 * (rows too).  @files: the names chunk_scan() found, sorted.
 */
static void gc_files_locked(struct cache *c, const struct str_list *files,
			    struct cache_gc_result *r)
{
	struct entry *e, *prev;
	struct row_batch b;
	uint64_t len;
	size_t i;
	int rc;

	for (i = 0; i < files->n; i++)
		if (!table_find(c, files->v[i]) &&
		    chunk_remove(c->cs, files->v[i]) == 0)
			r->orphan_files++;
	b.n = 0;
	for (e = c->tail; e; e = prev) {
		prev = e->prev;
		if (!evictable(e) || sorted_has(files, e->name))
			continue;
		/* stored after the scan, or really gone? */
		rc = chunk_data_len(c->cs, e->name, &len);
		if (rc != -ENOENT && rc != -EBADMSG && rc != -ENOKEY)
			continue;
		entry_drop_locked(c, e, &b, false);
		r->missing++;
	}
	rows_flush_locked(c, &b);
}

/* Rows the index does not know go. */
static void gc_rows_locked(struct cache *c, const struct str_list *rows,
			   struct cache_gc_result *r)
{
	struct row_batch b;
	size_t i;

	b.n = 0;
	for (i = 0; i < rows->n; i++) {
		if (table_find(c, rows->v[i]))
			continue;
		rows_add_locked(c, &b, rows->v[i]);
		r->stale_rows++;
	}
	rows_flush_locked(c, &b);
}

int cache_gc(struct cache *c, uint64_t older_than_ms,
	     struct cache_gc_result *out)
{
	struct str_list files = { 0 }, rows = { 0 };
	struct cache_gc_result r = { 0 };
	uint64_t age, ev0, bytes0, exp0;
	int rc;

	flush_stamps(c);
	pthread_mutex_lock(&c->lock);
	ev0 = c->st.evicted;
	bytes0 = c->st.evicted_bytes;
	exp0 = c->st.expired;
	age = older_than_ms ? older_than_ms : c->conf.max_age_ms;
	enforce_limits_locked(c, age);
	r.expired = c->st.expired - exp0;
	r.capped = c->st.evicted - ev0 - r.expired;
	gc_cap_locked(c);
	r.evicted = c->st.evicted - ev0 - r.expired - r.capped;
	r.freed_bytes = c->st.evicted_bytes - bytes0;
	pthread_mutex_unlock(&c->lock);

	rc = chunk_scan(c->cs, scan_name, &files);
	if (rc < 0) {
		log_error("cache: cannot scan the chunk files of '%s': %s",
			  c->dir, strerror(-rc));
		goto out;
	}
	if (files.n)
		qsort(files.v, files.n, sizeof(*files.v), cmp_str);
	pthread_mutex_lock(&c->lock);
	gc_files_locked(c, &files, &r);
	pthread_mutex_unlock(&c->lock);

	rc = meta_chunk_scan(c->m, collect_name, &rows);
	if (rc < 0)
		goto out;
	pthread_mutex_lock(&c->lock);
	gc_rows_locked(c, &rows, &r);
	pthread_mutex_unlock(&c->lock);
out:
	str_list_release(&files);
	str_list_release(&rows);
	if (out)
		*out = r;
	return rc;
}

/*
 * Check chunk @name whole into *@buf (grown as needed).  0 when good, 1
 * when it was bad and was dropped, -ENOMEM.
 */
static int verify_one(struct cache *c, const char *name, char **buf,
		      size_t *cap)
{
	uint64_t len = 0, gen;
	struct entry *e;
	ssize_t n;
	char *p;
	int rc;

	pthread_mutex_lock(&c->lock);
	e = table_find(c, name);
	if (!visible(e)) {
		pthread_mutex_unlock(&c->lock);
		return 0;
	}
	e->pins++;
	gen = e->gen;
	pthread_mutex_unlock(&c->lock);

	rc = chunk_data_len(c->cs, name, &len);
	if (rc == 0 && len > *cap) {
		p = realloc(*buf, len);
		if (!p) {
			rc = -ENOMEM;
		} else {
			*buf = p;
			*cap = len;
		}
	}
	if (rc == 0) {
		n = chunk_read(c->cs, name, 0, *buf, len);
		rc = n < 0 ? (int)n : (uint64_t)n == len ? 0 : -EBADMSG;
	}

	pthread_mutex_lock(&c->lock);
	e->pins--;
	if (rc == -EBADMSG)
		c->st.corrupt++;
	else if (rc == -ENOKEY)
		c->st.wrong_key++;
	if (rc < 0 && rc != -ENOMEM) {
		/* unless a writer replaced the file meanwhile, it is bad */
		if (e->gen == gen && !e->writers && e->doom == DOOM_NONE)
			e->doom = DOOM_BAD;
		rc = 1;
	}
	entry_settle_locked(c, e);
	pthread_mutex_unlock(&c->lock);
	return rc;
}

int cache_verify(struct cache *c, struct cache_verify_result *out)
{
	struct cache_verify_result r = { 0 };
	struct str_list names = { 0 };
	struct entry *e;
	size_t cap = 0, i;
	char *buf = NULL;
	int rc = 0;

	pthread_mutex_lock(&c->lock);
	for (e = c->head; e && rc == 0; e = e->next)
		if (visible(e))
			rc = str_list_add(&names, e->name);
	pthread_mutex_unlock(&c->lock);
	for (i = 0; i < names.n && rc == 0; i++) {
		rc = verify_one(c, names.v[i], &buf, &cap);
		if (rc >= 0) {
			r.checked++;
			r.bad += (uint64_t)rc;
			rc = 0;
		}
	}
	free(buf);
	str_list_release(&names);
	if (out)
		*out = r;
	return rc;
}

/* Opening: load, reconcile */

struct loaded {
	char name[CHUNK_NAME_LEN + 1];
	uint64_t disk_bytes;
	uint64_t data_len;
	int64_t atime_ms;
	char *ident; /* owned: key NUL etag NUL */
};

struct load_ctx {
	struct loaded *v;
	size_t n, cap;
	struct str_list bad; /* rows that cannot name a chunk file */
};

static int load_row(void *ctx, const struct meta_chunk *mc)
{
	struct load_ctx *l = ctx;
	size_t cap, klen, elen;
	struct loaded *v;
	char *ident;

	if (!chunk_name_valid(mc->name))
		return mc->name ? str_list_add(&l->bad, mc->name) : 0;
	if (l->n == l->cap) {
		cap = l->cap ? 2 * l->cap : 1024;
		v = realloc(l->v, cap * sizeof(*v));
		if (!v)
			return -ENOMEM;
		l->v = v;
		l->cap = cap;
	}
	klen = strlen(mc->key ? mc->key : "");
	elen = strlen(mc->etag ? mc->etag : "");
	ident = malloc(klen + elen + 2);
	if (!ident)
		return -ENOMEM;
	memcpy(ident, mc->key ? mc->key : "", klen + 1);
	memcpy(ident + klen + 1, mc->etag ? mc->etag : "", elen + 1);
	memcpy(l->v[l->n].name, mc->name, CHUNK_NAME_LEN + 1);
	l->v[l->n].disk_bytes = mc->disk_bytes;
	l->v[l->n].data_len = mc->data_len;
	l->v[l->n].atime_ms = mc->atime_ms;
	l->v[l->n].ident = ident;
	l->n++;
	return 0;
}

static int by_atime(const void *pa, const void *pb)
{
	const struct loaded *a = pa, *b = pb;

	if (a->atime_ms != b->atime_ms)
		return a->atime_ms < b->atime_ms ? -1 : 1;
	return strcmp(a->name, b->name);
}

/* Build the index from the rows, least recently used first in. */
static int load_index_locked(struct cache *c, struct str_list *bad)
{
	struct load_ctx l = { 0 };
	struct entry *e;
	size_t i;
	int rc;

	rc = meta_chunk_scan(c->m, load_row, &l);
	if (rc < 0) {
		if (rc == -ENOMEM)
			log_error("cache: out of memory loading the chunk "
				  "index of '%s'",
				  c->dir);
		goto out;
	}
	if (l.n) /* qsort may not be given NULL */
		qsort(l.v, l.n, sizeof(*l.v), by_atime);
	for (i = 0; i < l.n; i++) {
		e = calloc(1, sizeof(*e));
		if (!e) {
			rc = -ENOMEM;
			goto out;
		}
		memcpy(e->name, l.v[i].name, CHUNK_NAME_LEN + 1);
		e->disk_bytes = l.v[i].disk_bytes;
		e->data_len = l.v[i].data_len;
		e->atime_ms = l.v[i].atime_ms;
		e->ready = true;
		table_add(c, e);
		lru_push(c, e);
		obj_attach_locked(c, e, l.v[i].ident,
				  l.v[i].ident + strlen(l.v[i].ident) + 1);
		obj_touch_locked(c, e->obj);
		c->data_bytes += e->data_len;
		c->nready++;
	}
out:
	for (i = 0; i < l.n; i++)
		free(l.v[i].ident);
	free(l.v);
	*bad = l.bad;
	return rc;
}

struct scan_ctx {
	struct cache *c;
	struct str_list orphans; /* files without a row */
};

static int scan_file(void *ctx, const char *name, uint64_t disk_bytes)
{
	struct scan_ctx *s = ctx;
	struct entry *e = table_find(s->c, name);

	if (!e)
		return str_list_add(&s->orphans, name);
	e->seen = true;
	e->disk_bytes = disk_bytes;
	return 0;
}

/*
 * Make the index and the files agree: delete files without a row, forget
 * (and delete) rows without a file, take each file's real size.
 */
static int reconcile_locked(struct cache *c, struct str_list *stale)
{
	struct scan_ctx s = { .c = c };
	struct entry *e, *next;
	size_t removed = 0, i;
	int rc;

	rc = chunk_scan(c->cs, scan_file, &s);
	if (rc < 0) {
		log_error("cache: cannot scan the chunk files of '%s': %s",
			  c->dir, strerror(-rc));
		goto out;
	}
	for (i = 0; i < s.orphans.n; i++)
		if (chunk_remove(c->cs, s.orphans.v[i]) == 0)
			removed++;
	for (e = c->head; e; e = next) {
		next = e->next;
		if (e->seen) {
			c->chunk_bytes += e->disk_bytes;
			continue;
		}
		rc = str_list_add(stale, e->name);
		if (rc < 0)
			goto out;
		lru_unlink(c, e);
		obj_detach_locked(c, e);
		c->data_bytes -= e->data_len;
		table_del(c, e);
		c->nready--;
		free(e);
	}
	/* a failure is logged by meta; the rows go at the next open */
	meta_chunk_delete_many(c->m, (const char *const *)stale->v, stale->n);
	c->st.open_orphans = removed;
	c->st.open_stale = stale->n;
	log_info("cache: %" PRIu64 " chunks, %" PRIu64 " bytes; removed %zu "
		 "orphan files, %zu stale rows",
		 c->nready, c->chunk_bytes, removed, stale->n);
out:
	str_list_release(&s.orphans);
	return rc;
}

static void cache_free(struct cache *c)
{
	struct entry *e, *next;
	size_t i;

	for (i = 0; c->table && i < c->nbuckets; i++) {
		for (e = c->table[i]; e; e = next) {
			next = e->hnext;
			free(e);
		}
	}
	free(c->table);
	for (i = 0; c->otable && i < c->onbuckets; i++) {
		struct obj *o, *onext;

		for (o = c->otable[i]; o; o = onext) {
			onext = o->hnext;
			free(o);
		}
	}
	free(c->otable);
	pthread_cond_destroy(&c->wake);
	pthread_mutex_destroy(&c->lock);
	free(c->dir);
	free(c->db_path);
	free(c->wal_path);
	free(c);
}

/* Apply defaults to @conf and check it; 0 or -EINVAL (logged). */
static int conf_check(struct cache_conf *conf)
{
	if (!conf->high_pct)
		conf->high_pct = 95;
	if (!conf->low_pct)
		conf->low_pct = 85;
	if (!conf->flush_ms)
		conf->flush_ms = 5000;
	if (!conf->cap_bytes) {
		log_error("cache: the cache size must be above 0");
		return -EINVAL;
	}
	if (conf->high_pct > 100 || conf->low_pct >= conf->high_pct) {
		log_error("cache: watermarks low %u%% and high %u%% must "
			  "satisfy low < high <= 100",
			  conf->low_pct, conf->high_pct);
		return -EINVAL;
	}
	return 0;
}

int cache_open(const struct cache_conf *conf, struct meta *m,
	       struct chunk_store *cs, struct cache **out)
{
	struct str_list stale = { 0 };
	struct cache *c = NULL;
	struct goal g = { 0 };
	pthread_condattr_t ca;
	int rc;

	if (!conf || !conf->dir || !m || !cs || !out)
		return -EINVAL;
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->conf = *conf;
	c->m = m;
	c->cs = cs;
	pthread_mutex_init(&c->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&c->wake, &ca);
	pthread_condattr_destroy(&ca);
	rc = conf_check(&c->conf);
	if (rc < 0)
		goto out;
	c->dir = strdup(conf->dir);
	c->db_path = path_join(conf->dir, "meta.db");
	c->wal_path = path_join(conf->dir, "meta.db-wal");
	c->nbuckets = TABLE_MIN;
	c->table = calloc(c->nbuckets, sizeof(*c->table));
	c->onbuckets = TABLE_MIN;
	c->otable = calloc(c->onbuckets, sizeof(*c->otable));
	if (!c->dir || !c->db_path || !c->wal_path || !c->table || !c->otable) {
		rc = -ENOMEM;
		goto out;
	}
	c->conf.dir = c->dir;

	pthread_mutex_lock(&c->lock);
	rc = load_index_locked(c, &stale);
	if (rc == 0)
		rc = reconcile_locked(c, &stale);
	if (rc == 0) {
		g.max_used = c->conf.cap_bytes;
		g.min_free = c->conf.min_free_bytes;
		measure_meta_locked(c);
		g.avail = avail_locked(c);
		evict_locked(c, &g, SIZE_MAX, NULL);
		enforce_limits_locked(c, c->conf.max_age_ms);
	}
	pthread_mutex_unlock(&c->lock);
	if (rc < 0)
		goto out;

	rc = -pthread_create(&c->thread, NULL, bg_main, c);
	if (rc < 0) {
		log_error("cache: cannot start the eviction thread: %s",
			  strerror(-rc));
		goto out;
	}
	c->thread_started = true;
	*out = c;
	c = NULL;
out:
	str_list_release(&stale);
	if (c)
		cache_free(c);
	return rc;
}

void cache_close(struct cache *c)
{
	if (!c)
		return;
	if (c->thread_started) {
		pthread_mutex_lock(&c->lock);
		c->stop = true;
		pthread_cond_signal(&c->wake);
		pthread_mutex_unlock(&c->lock);
		pthread_join(c->thread, NULL);
	}
	flush_stamps(c);
	cache_free(c);
}
