/*
 * vfs.c - the filesystem on inode numbers: names, attributes, listings and
 * reads through the chunk cache.
 *
 * Inodes.  struct node is one name the kernel holds a lookup reference to:
 * its path below the mount's prefix, whether it is a directory, and for
 * files the attributes last seen with when they stop being trusted.  Nodes
 * live in two hash tables (by inode number, by parent and name) under
 * v->lock, and are freed when their lookup count drops to zero.  The root
 * is created at start and never freed.
 *
 * Where answers come from, in order: the node's own attributes while fresh;
 * the metadata store (listings, objects, negative entries, and for a
 * folder a fresh object row below it) while fresh; S3
 * (LIST for directories, LIST + HEAD for one name, HEAD for one file); and
 * when S3 cannot be reached, whatever stale knowledge the store has.  S3 is
 * then considered offline for OFFLINE_MS, during which stale metadata is
 * served without asking, so a dead network costs one timeout, not one per
 * call.
 *
 * Reads.  A handle fixes the object's ETag at open.  Each chunk a read
 * touches is read from the cache, or else fetched whole with a ranged GET
 * carrying If-Match, admitted to the cache, and copied out.  A fetch in
 * flight is shared: a second reader of the same chunk (or the prefetcher)
 * waits for it instead of asking again (struct inflight).  When the cache
 * cannot take a chunk (disk full or failing), it is kept in a small ring of
 * memory chunks so that the reads that follow do not fetch it again.
 *
 * Readahead.  Each handle tracks where its reads end; reads that continue
 * near there are sequential and widen the window (one chunk, then x4 per
 * read up to conf.readahead); chunks in the window are queued to the prefetch threads.
 * A read elsewhere closes the window, so random reads fetch only the chunks
 * they touch.  Memory is bounded: each fetch holds one chunk, the fetches
 * are bounded by the FUSE threads plus the prefetch threads plus the
 * WRITE_QUEUE chunks waiting for the writer thread, the queue and the
 * memory ring have fixed sizes.
 *
 * Lock order: v->lock, then f->lock is never taken inside it (handles lock
 * only their own readahead state); no lock is held across S3, SQLite or
 * the cache except where noted.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "s3cachefs/buf.h"
#include "s3cachefs/cache.h"
#include "s3cachefs/chunk.h"
#include "s3cachefs/log.h"
#include "s3cachefs/meta.h"
#include "s3cachefs/s3.h"
#include "s3cachefs/strutil.h"
#include "s3cachefs/tree.h"
#include "s3cachefs/vfs.h"
#include "s3cachefs/writeback.h"

#define OFFLINE_MS 5000	      /* trust stale metadata after a failure */
#define SEQ_SLACK (2u << 20)  /* reads this near the last end continue it */
#define QUEUE_PER_THREAD 8    /* prefetch jobs queued per thread */
#define MEM_RING 4	      /* chunks kept in memory when the disk fails */
#define TOUCH_BATCH 64	      /* object access stamps written per batch */
#define TOUCH_MAX_AGE_MS 5000 /* ... or at least this often */
#define HASH_MIN 256
#define SMALL_GET_MAX (256u << 10) /* lookups GET files this small */
/* A chunk missing from the cache is fetched as parts: sub-range GETs of at
 * least PART_MIN bytes, at most PARTS_MAX of them (one bit each in a mask),
 * run in parallel by the reader that needs one and the idle prefetch
 * threads (a chunk fetched ahead of a reader is one GET).  A reader returns once its parts are in; the rest of the chunk
 * is left to the prefetch threads, for at most INFLIGHT_SOFT chunks at a
 * time (past that, a reader finishes its chunk before it returns).  Memory
 * in flight: at most (INFLIGHT_SOFT + prefetch threads + FUSE threads +
 * WRITE_QUEUE) chunks. */
#define PART_MIN (1u << 20)
#define PARTS_MAX 64
#define INFLIGHT_SOFT 8
/* A fetched chunk is written to the cache by a writer thread, so that the
 * thread that fetched it starts its next GET at once (a write took 3-40 ms
 * of each ~80 ms 4 MiB GET); at most WRITE_QUEUE chunks wait for it, past
 * that the fetching thread writes its chunk itself.  They stay readers'
 * to share (on v->inflight) until written. */
#define WRITE_QUEUE 8
/* A file read at random in small reads (not a reader of a few larger
 * pieces, like the columns of a Parquet file) that missed this many
 * chunks is fetched whole in the background, through the prefetch queue,
 * when it is at most RANDOM_WHOLE_MAX and a quarter of the cache's cap.
 * So is, under the same limits, a file whose handle's first read lands in
 * its last chunk and not at 0 (a Parquet, ORC or zip reader at the footer:
 * column reads follow); the reader's own chunk is put in flight first. */
#define RANDOM_WHOLE_MISSES 8
#define RANDOM_WHOLE_MAX (256ull << 20)
#define RANDOM_READ_MAX (256u << 10) /* reads that count as random ones */
/* Small files of a folder read one after the other: once two in a row
 * miss the cache, the next SPEC_AHEAD files of the folder's listing (in
 * name order) of at most SPEC_SMALL_MAX bytes are queued ahead, while the
 * cache stays under SPEC_CACHE_PCT % of its cap. */
#define SPEC_SMALL_MAX (256u << 10)
#define SPEC_AHEAD 8
#define SPEC_CACHE_PCT 80
#define SYMLINK_MAX 4095     /* longest target; smaller objects may be links */
#define NOFLAT_SLOTS 32	     /* subtrees remembered as too big to list flat */
#define LIST_PAGE_KEYS 1000u /* keys per page of a flat listing */

/* Attributes from user metadata (x-amz-meta-mode, -uid, -gid, -mtime). */
struct xattrs {
	bool known;
	uint32_t mode, uid, gid; /* 0 / UINT32_MAX: not given */
	int64_t mtime;		 /* 0: not given */
};

struct node {
	uint64_t ino;
	uint64_t parent;
	char *name; /* one segment; "" for the root */
	char *path; /* below the prefix: "" root, "a/b" */
	bool is_dir;
	uint64_t nlookup;
	/* files, all under v->lock */
	char *etag; /* or NULL when not known yet */
	uint64_t size;
	int64_t mtime;
	int64_t expires_ms; /* attributes trusted until */
	struct xattrs x;
	char *opened_etag;	/* ETag of the last open, for keep_cache */
	enum vfs_served served; /* by the last open released */
	/* a staged file is being renamed over this one: its upload's
	 * result (on_uploaded) is the new file's, not this node's */
	bool replaced;
	struct node *next_ino; /* hash chains */
	struct node *next_name;
};

struct dirent_snap {
	char *name;
	bool is_dir;
	uint64_t size;
	int64_t mtime;
	char *etag;
	struct xattrs x;
	bool staged; /* being written: size is the staged one, not etag's */
};

struct vfs_dir {
	struct vfs_dir *prev, *next; /* open directories, under v->lock */
	uint64_t ino;
	uint64_t names_gen; /* v->names_gen before the snapshot was taken */
	char *dir;	    /* its listing prefix, owned */
	struct dirent_snap *e;
	size_t n;
};

struct vfs_file {
	struct vfs_file *prev, *next; /* open files, under v->lock */
	uint64_t ino;
	char *key;
	char *etag;
	uint64_t size;
	struct wb_file *wb; /* staged: reads and writes go through it */
	int flags;	    /* of the open */
	bool attrs_moved; /* the open may have changed what the kernel knows */
	pthread_mutex_t lock; /* guards the readahead state below */
	uint64_t next_off;    /* end of the reads so far */
	uint64_t window;      /* bytes to keep fetched ahead; 0: random */
	uint64_t ra_next;     /* first chunk index not yet queued */
	uint64_t whole_next;  /* random: next chunk of the whole-file fetch */
	/* a footer reader (its first read landed in the file's last chunk,
	 * not at 0): the whole-file fetch covers chunks [0, whole_end) (the
	 * reader fetches its own, the rest); 0: not one */
	uint64_t whole_end;
	bool read_once;	       /* a read was made through this handle */
	uint64_t small_random; /* random reads of at most RANDOM_READ_MAX */
	uint64_t hits, misses; /* chunk reads by source, atomics */
	/* chunks [pf_lo, pf_hi) held a chunk this handle had fetched ahead
	 * (from S3): reading one is no cache hit.  Atomics. */
	uint64_t pf_lo, pf_hi;
};

/*
 * A chunk fetch in flight, shared by everyone who needs that chunk, on
 * v->inflight (oldest first) until it is settled: admitted to the cache
 * (or the ring) or failed.  Every field but data is under v->lock.  The
 * bytes of part p land in data at p * part, written only by the thread
 * that claimed p and read by others only once p's bit is in fetched.
 * Freed by the last of refs to leave once it is done.
 */
struct inflight {
	char name[CHUNK_NAME_LEN + 1];
	char *key, *etag; /* owned */
	uint64_t index;
	uint64_t len;  /* of the chunk */
	uint64_t part; /* bytes per part; the last may be shorter */
	unsigned n_parts;
	uint64_t claimed, fetched; /* bit p: part p taken, part p in data */
	unsigned busy;		   /* parts being fetched */
	unsigned waiters;	   /* readers waiting for parts */
	unsigned refs;		   /* threads using it */
	bool settling, done;
	int rc;	    /* the first part's failure, or 0 */
	char *data; /* len bytes, owned */
	struct inflight *next;
};

struct prefetch_job {
	char *key;
	char *etag;
	uint64_t index;
	uint64_t size; /* of the object */
};

struct mem_chunk {
	char name[CHUNK_NAME_LEN + 1]; /* "" when the slot is free */
	struct buf data;
	uint64_t stamp;
};

struct vfs {
	struct vfs_conf conf; /* strings owned */
	struct s3 *s3;
	struct meta *meta;
	struct cache *cache;
	struct wb *wb;

	pthread_mutex_t lock;
	/* under lock: */
	struct node **by_ino, **by_name;
	size_t n_buckets, n_nodes;
	uint64_t next_ino;
	int64_t started;	   /* seconds: the time shown for directories */
	struct inflight *inflight; /* oldest first */
	unsigned n_inflight;	   /* on that list */
	struct mem_chunk ring[MEM_RING];
	/* handles the kernel has not released yet, freed by vfs_free */
	struct vfs_file *files;
	struct vfs_dir *dirs;
	/* bumped by every change this mount makes to the bucket (unlink,
	 * rmdir, rename, upload, mkdir, symlink, attributes) once the metadata
	 * store has it: a directory snapshot or a LIST begun before may be
	 * older than the change (see changed()) */
	uint64_t names_gen;
	uint64_t ring_clock;
	int64_t offline_until_ms;
	char *spec_dir, *spec_name; /* the last small file that missed */
	/* prefixes holding more than conf.list_flat_keys keys, until when:
	 * their subtrees (and their ancestors') are not listed flat; strings
	 * owned, a ring of NOFLAT_SLOTS */
	struct {
		char *dir;
		int64_t until_ms;
	} noflat[NOFLAT_SLOTS];
	unsigned noflat_next;
	struct meta_touch *touches; /* pending object access stamps */
	char **touch_keys;
	size_t n_touches;
	int64_t touches_since_ms;

	/* renames over a node: begun, and one ended (see stale_open()),
	 * under lock */
	uint64_t replace_gen;
	pthread_cond_t rename_cond;

	/* prefetch queue, under lock */
	pthread_cond_t queue_cond;
	struct prefetch_job *queue;
	size_t q_cap, q_head, q_len;
	bool stopping;
	pthread_t *threads;
	unsigned n_threads;

	/* chunks fetched, waiting for the writer thread, each holding a
	 * reference; under lock */
	pthread_cond_t wq_cond;
	struct inflight *wq[WRITE_QUEUE];
	unsigned wq_head, wq_len;
	pthread_t writer;
	bool has_writer;

	struct vfs_stats stats; /* atomics */
};

#define STAT_ADD(v, field, n) \
	__atomic_fetch_add(&(v)->stats.field, (n), __ATOMIC_RELAXED)

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* S3 errors that say "cannot ask now", as opposed to an answer. */
static bool unavailable(int rc)
{
	switch (rc) {
	case -ECONNREFUSED:
	case -EHOSTUNREACH:
	case -ETIMEDOUT:
	case -ECONNRESET:
	case -EPIPE:
	case -EPROTO:
	case -EIO:
		return true;
	default:
		return false;
	}
}

static bool is_offline(struct vfs *v)
{
	bool off;

	pthread_mutex_lock(&v->lock);
	off = now_ms() < v->offline_until_ms;
	pthread_mutex_unlock(&v->lock);
	return off;
}

/* Note the outcome of asking S3: failures open the offline window. */
static void note_s3(struct vfs *v, int rc)
{
	if (!unavailable(rc))
		return;
	pthread_mutex_lock(&v->lock);
	if (now_ms() >= v->offline_until_ms)
		log_warn("s3 unreachable (%s): serving what the cache knows",
			 strerror(-rc));
	v->offline_until_ms = now_ms() + OFFLINE_MS;
	pthread_mutex_unlock(&v->lock);
}

/* ---- names ---- */

/* True when @name (of @len bytes) may be a file name (vfs.h's rules). */
static bool name_ok(const char *name, size_t len)
{
	return tree_name_ok(name, len);
}

/* A name a change may give (create, mkdir, symlink, rename's target) must
 * be UTF-8 too: S3 keys are, AWS refuses a PUT of other bytes and some
 * servers store it under another key ("%FF" for the byte 0xff), where it
 * would overwrite a file of that name.  0 or -EILSEQ. */
static int new_name_ok(const char *name)
{
	return utf8_valid(name, strlen(name)) ? 0 : -EILSEQ;
}

/* The S3 key of @path: prefix + path.  Caller frees. */
static char *key_of(struct vfs *v, const char *path)
{
	struct buf b = BUF_INIT(BUF_NO_LIMIT);

	if (buf_adds(&b, v->conf.prefix) < 0 || buf_adds(&b, path) < 0) {
		buf_release(&b);
		return NULL;
	}
	return buf_detach(&b, NULL);
}

/* The listing prefix of directory @path: "prefix/path/" ("prefix" at the
 * root).  Caller frees. */
static char *dir_prefix_of(struct vfs *v, const char *path)
{
	struct buf b = BUF_INIT(BUF_NO_LIMIT);

	if (buf_adds(&b, v->conf.prefix) < 0 || buf_adds(&b, path) < 0 ||
	    (*path && buf_addc(&b, '/') < 0)) {
		buf_release(&b);
		return NULL;
	}
	return buf_detach(&b, NULL);
}

static char *join_path(const char *dir, const char *name)
{
	struct buf b = BUF_INIT(BUF_NO_LIMIT);

	if ((*dir && (buf_adds(&b, dir) < 0 || buf_addc(&b, '/') < 0)) ||
	    buf_adds(&b, name) < 0) {
		buf_release(&b);
		return NULL;
	}
	return buf_detach(&b, NULL);
}

/* ---- the node tables (all under v->lock) ---- */

static size_t hash_u64(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdULL;
	x ^= x >> 33;
	return (size_t)x;
}

static size_t hash_name(uint64_t parent, const char *name)
{
	uint64_t h = 1469598103934665603ULL ^ hash_u64(parent);

	for (; *name; name++)
		h = (h ^ (unsigned char)*name) * 1099511628211ULL;
	return (size_t)h;
}

static struct node *node_by_ino(struct vfs *v, uint64_t ino)
{
	struct node *n = v->by_ino[hash_u64(ino) & (v->n_buckets - 1)];

	while (n && n->ino != ino)
		n = n->next_ino;
	return n;
}

static struct node *node_by_name(struct vfs *v, uint64_t parent,
				 const char *name)
{
	struct node *n =
		v->by_name[hash_name(parent, name) & (v->n_buckets - 1)];

	while (n && (n->parent != parent || strcmp(n->name, name) != 0))
		n = n->next_name;
	return n;
}

static void link_node(struct vfs *v, struct node *n)
{
	size_t i = hash_u64(n->ino) & (v->n_buckets - 1);
	size_t j = hash_name(n->parent, n->name) & (v->n_buckets - 1);

	n->next_ino = v->by_ino[i];
	v->by_ino[i] = n;
	n->next_name = v->by_name[j];
	v->by_name[j] = n;
}

/* Double the tables when they fill; on failure they stay as they were. */
static void grow_tables(struct vfs *v)
{
	struct node **old = v->by_ino, **bi, **bn;
	size_t i, old_n = v->n_buckets;

	if (v->n_nodes < v->n_buckets)
		return;
	bi = calloc(old_n * 2, sizeof(*bi));
	bn = calloc(old_n * 2, sizeof(*bn));
	if (!bi || !bn) {
		free(bi);
		free(bn);
		return;
	}
	free(v->by_name);
	v->by_ino = bi;
	v->by_name = bn;
	v->n_buckets = old_n * 2;
	for (i = 0; i < old_n; i++) {
		struct node *n = old[i], *next;

		for (; n; n = next) {
			next = n->next_ino;
			link_node(v, n);
		}
	}
	free(old);
}

static void unlink_node(struct vfs *v, struct node *n)
{
	struct node **p = &v->by_ino[hash_u64(n->ino) & (v->n_buckets - 1)];

	while (*p != n)
		p = &(*p)->next_ino;
	*p = n->next_ino;
	p = &v->by_name[hash_name(n->parent, n->name) & (v->n_buckets - 1)];
	while (*p != n)
		p = &(*p)->next_name;
	*p = n->next_name;
	v->n_nodes--;
}

static void node_free(struct node *n)
{
	if (!n)
		return;
	free(n->name);
	free(n->path);
	free(n->etag);
	free(n->opened_etag);
	free(n);
}

static int set_str(char **dst, const char *src)
{
	char *c = NULL;

	if (src && !(c = strdup(src)))
		return -ENOMEM;
	free(*dst);
	*dst = c;
	return 0;
}

/* Record file attributes on @n (under v->lock). */
static void node_set_attrs(struct node *n, const char *etag, uint64_t size,
			   int64_t mtime, int64_t expires_ms,
			   const struct xattrs *x)
{
	/* a node renamed over (or being renamed over) keeps what it knew: its
	 * key already holds another file */
	if (n->replaced || (n->parent == 0 && n->ino != VFS_ROOT_INO))
		return;
	if (!n->etag || !etag || strcmp(n->etag, etag) != 0) {
		if (set_str(&n->etag, etag) < 0)
			return; /* keep the old values; they expire */
		memset(&n->x, 0, sizeof(n->x));
	}
	if (x && x->known)
		n->x = *x;
	n->size = size;
	n->mtime = mtime;
	n->expires_ms = expires_ms;
}

/*
 * The node for @name in @parent, created when missing (nlookup 0), with its
 * kind set to @is_dir.  NULL on allocation failure.  Under v->lock.
 */
static struct node *node_get(struct vfs *v, struct node *parent,
			     const char *name, bool is_dir)
{
	struct node *n = node_by_name(v, parent->ino, name);

	if (n) {
		if (n->is_dir != is_dir) {
			/* the key changed kind on S3: a new inode */
			if (n->nlookup == 0) {
				unlink_node(v, n);
				node_free(n);
			} else {
				/* keep the old one reachable by ino only */
				struct node **p =
					&v->by_name[hash_name(n->parent,
							      n->name) &
						    (v->n_buckets - 1)];

				while (*p != n)
					p = &(*p)->next_name;
				*p = n->next_name;
				n->parent = 0; /* never matches a name again */
				p = &v->by_name[hash_name(0, n->name) &
						(v->n_buckets - 1)];
				n->next_name = *p;
				*p = n;
			}
			n = NULL;
		} else {
			return n;
		}
	}
	grow_tables(v);
	n = calloc(1, sizeof(*n));
	if (!n)
		return NULL;
	n->name = strdup(name);
	n->path = join_path(parent->path, name);
	if (!n->name || !n->path) {
		node_free(n);
		return NULL;
	}
	n->ino = v->next_ino++;
	n->parent = parent->ino;
	n->is_dir = is_dir;
	n->mtime = v->started; /* S3 has no directory times */
	link_node(v, n);
	v->n_nodes++;
	return n;
}

/* validate=never: a known object's metadata is trusted for good. */
static bool never(const struct vfs *v)
{
	return v->conf.validate == VFS_VALIDATE_NEVER;
}

static void fill_attr(const struct vfs *v, const struct node *n,
		      struct vfs_attr *a)
{
	uint32_t perm = n->is_dir ? 0755 : 0644,
		 type = n->is_dir ? S_IFDIR : S_IFREG;

	memset(a, 0, sizeof(*a));
	a->ino = n->ino;
	a->is_dir = n->is_dir;
	a->size = n->is_dir ? 0 : n->size;
	a->mtime = n->mtime;
	a->uid = v->conf.uid;
	a->gid = v->conf.gid;
	if (n->x.known) {
		if (n->x.mode) {
			perm = n->x.mode & 07777;
			if (!n->is_dir && S_ISLNK(n->x.mode))
				type = S_IFLNK;
		}
		if (n->x.uid != UINT32_MAX)
			a->uid = n->x.uid;
		if (n->x.gid != UINT32_MAX)
			a->gid = n->x.gid;
		if (n->x.mtime)
			a->mtime = n->x.mtime;
	}
	/* strict: directories too (their markers), the root excepted */
	a->tentative = !n->x.known && n->ino != VFS_ROOT_INO &&
		       (!n->is_dir || v->conf.strict_attrs);
	/* strict: what is not known yet is closed to others */
	if (a->tentative && v->conf.strict_attrs)
		perm &= ~077u;
	if (v->conf.has_umask)
		perm &= ~v->conf.umask;
	a->mode = type | perm;
}

/* Copy the path of @ino; -ENOENT when unknown, -ENOTDIR/-EISDIR by @want. */
static int path_of(struct vfs *v, uint64_t ino, int want_dir, char **path)
{
	struct node *n;
	int rc = 0;

	pthread_mutex_lock(&v->lock);
	n = node_by_ino(v, ino);
	if (!n)
		rc = -ENOENT;
	else if (want_dir == 1 && !n->is_dir)
		rc = -ENOTDIR;
	else if (want_dir == 0 && n->is_dir)
		rc = -EISDIR;
	else if (!(*path = strdup(n->path)))
		rc = -ENOMEM;
	pthread_mutex_unlock(&v->lock);
	return rc;
}

/* Link @h at the head of the list @head (both have prev/next). */
#define LIST_LINK(head, h)                  \
	do {                                \
		(h)->prev = NULL;           \
		(h)->next = (head);         \
		if (head)                   \
			(head)->prev = (h); \
		(head) = (h);               \
	} while (0)

#define LIST_UNLINK(head, h)                         \
	do {                                         \
		if ((h)->prev)                       \
			(h)->prev->next = (h)->next; \
		else                                 \
			(head) = (h)->next;          \
		if ((h)->next)                       \
			(h)->next->prev = (h)->prev; \
	} while (0)

static bool staged_attr(struct vfs *v, const char *key, struct vfs_attr *a);
static int stage_existing(struct vfs *v, uint64_t ino, const char *key,
			  bool truncate, struct wb_file **out);
static void on_uploaded(void *ctx, const struct wb_result *r);
static const char *path_of_key(const struct vfs *v, const char *key);
static int fill_base(void *ctx, const char *key, const char *etag,
		     uint64_t size, uint64_t off, void *buf, size_t len);

/* ---- user metadata ---- */

static uint32_t meta_u32(const struct s3_object_info *info, const char *name)
{
	const char *v = s3_meta_get(info, name);
	char *end;
	unsigned long long n;

	if (!v || !*v)
		return UINT32_MAX;
	errno = 0;
	n = strtoull(v, &end, 10);
	if (errno || (*end && *end != '.') || n >= UINT32_MAX)
		return UINT32_MAX;
	return (uint32_t)n;
}

/* What a HEAD says of the attributes, as s3fs stores them. */
static void xattrs_from_info(struct xattrs *x,
			     const struct s3_object_info *info)
{
	uint32_t mode = meta_u32(info, "mode");
	const char *mt = s3_meta_get(info, "mtime");

	memset(x, 0, sizeof(*x));
	x->known = true; /* also when none is given: nothing to ask again */
	x->mode = mode == UINT32_MAX ? 0 : mode;
	x->uid = meta_u32(info, "uid");
	x->gid = meta_u32(info, "gid");
	if (mt)
		x->mtime = strtoll(mt, NULL, 10);
	if (x->mtime < 0)
		x->mtime = 0;
}

static void xattrs_from_object(struct xattrs *x, const struct meta_object *o)
{
	memset(x, 0, sizeof(*x));
	x->known = o->has_attrs;
	x->mode = o->mode;
	x->uid = o->uid;
	x->gid = o->gid;
	x->mtime = o->attr_mtime;
}

static void xattrs_to_object(struct meta_object *o, const struct xattrs *x)
{
	o->has_attrs = x->known;
	o->mode = x->mode;
	o->uid = x->uid;
	o->gid = x->gid;
	o->attr_mtime = x->mtime;
}

/* ---- listings ---- */

struct list_ctx {
	struct vfs *v;
	const char *dir; /* listing prefix */
	size_t dir_len;
	struct dirent_snap *e;
	size_t n, cap;
	int rc;
};

static int snap_add(struct list_ctx *lc, const char *name, size_t len,
		    bool is_dir, const struct s3_list_entry *obj)
{
	struct dirent_snap *d;

	if (lc->n == lc->cap) {
		size_t cap = lc->cap ? lc->cap * 2 : 64;
		struct dirent_snap *e = realloc(lc->e, cap * sizeof(*e));

		if (!e)
			return -ENOMEM;
		lc->e = e;
		lc->cap = cap;
	}
	d = &lc->e[lc->n];
	memset(d, 0, sizeof(*d));
	d->name = strndup(name, len);
	if (!d->name)
		return -ENOMEM;
	d->is_dir = is_dir;
	if (obj) {
		d->size = obj->size;
		d->mtime = obj->mtime;
		d->etag = strdup(obj->etag ? obj->etag : "");
		if (!d->etag) {
			free(d->name);
			return -ENOMEM;
		}
	}
	lc->n++;
	return 0;
}

static void snap_free(struct dirent_snap *e, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		free(e[i].name);
		free(e[i].etag);
	}
	free(e);
}

static int snap_cmp(const void *a, const void *b)
{
	const struct dirent_snap *x = a, *y = b;
	int c = strcmp(x->name, y->name);

	/* a directory sorts before a file of the same name */
	return c ? c : (int)y->is_dir - (int)x->is_dir;
}

/* Sort and apply "the directory wins": drop a file named like a dir. */
static void snap_finish(struct list_ctx *lc)
{
	size_t i, o = 0;

	if (lc->n == 0)
		return; /* qsort may not be given NULL */
	qsort(lc->e, lc->n, sizeof(*lc->e), snap_cmp);
	for (i = 0; i < lc->n; i++) {
		if (o > 0 && strcmp(lc->e[o - 1].name, lc->e[i].name) == 0) {
			log_debug("key '%s%s' is also a prefix: the directory "
				  "is shown",
				  lc->dir, lc->e[i].name);
			free(lc->e[i].name);
			free(lc->e[i].etag);
			continue;
		}
		lc->e[o++] = lc->e[i];
	}
	lc->n = o;
}

/* A LIST read into a tree, stopped after @max keys (0: no bound). */
struct tree_ctx {
	struct tree t;
	uint64_t max, keys;
	char *first_key; /* owned */
	bool cut;	 /* stopped before the end */
};

static int on_tree_page(void *ctx, const struct s3_list_page *p)
{
	struct tree_ctx *tc = ctx;
	size_t i;
	int rc;

	for (i = 0; i < p->n_entries; i++) {
		const struct s3_list_entry *o = &p->entries[i];

		if (!tc->first_key) {
			tc->first_key = strdup(o->key);
			if (!tc->first_key)
				return -ENOMEM;
		}
		rc = tree_add_key(&tc->t, o->key, o->etag, o->size, o->mtime);
		if (rc < 0)
			return rc;
	}
	for (i = 0; i < p->n_prefixes; i++) {
		rc = tree_add_prefix(&tc->t, p->prefixes[i]);
		if (rc < 0)
			return rc;
	}
	tc->keys += p->n_entries + p->n_prefixes;
	if (tc->max && p->truncated && tc->keys >= tc->max) {
		tc->cut = true;
		return 1;
	}
	return 0;
}

/* True when @dir is known to hold more keys than a flat listing may read. */
static bool noflat(struct vfs *v, const char *dir)
{
	size_t len = strlen(dir), i;
	int64_t t = now_ms();
	bool found = false;

	pthread_mutex_lock(&v->lock);
	for (i = 0; i < NOFLAT_SLOTS && !found; i++)
		found = v->noflat[i].dir && v->noflat[i].until_ms > t &&
			strncmp(v->noflat[i].dir, dir, len) == 0;
	pthread_mutex_unlock(&v->lock);
	return found;
}

/* Remember the deepest folder holding both the first and the last key a
 * cut flat listing read: it alone holds more than the bound. */
static void note_noflat(struct vfs *v, const struct tree_ctx *tc)
{
	const char *a = tc->first_key, *b = tc->t.last_key;
	size_t len = 0, i;
	char *dir;

	if (!a || !b)
		return;
	for (i = 0; a[i] && a[i] == b[i]; i++)
		if (a[i] == '/')
			len = i + 1;
	if (len < tc->t.base_len)
		len = tc->t.base_len;
	dir = strndup(a, len);
	if (!dir)
		return;
	pthread_mutex_lock(&v->lock);
	i = v->noflat_next++ % NOFLAT_SLOTS;
	free(v->noflat[i].dir);
	v->noflat[i].dir = dir;
	v->noflat[i].until_ms = now_ms() + (int64_t)v->conf.meta_ttl_ms;
	pthread_mutex_unlock(&v->lock);
}

/* This mount changed the bucket, and the metadata store says so now. */
static void changed(struct vfs *v)
{
	pthread_mutex_lock(&v->lock);
	v->names_gen++;
	pthread_mutex_unlock(&v->lock);
}

static uint64_t changes_seen(struct vfs *v)
{
	uint64_t gen;

	pthread_mutex_lock(&v->lock);
	gen = v->names_gen;
	pthread_mutex_unlock(&v->lock);
	return gen;
}

/* Store every folder of @t (unless @keep_store: a LIST older than a change
 * of ours would bring back what we removed and hide what we made), and
 * copy the entries of lc->dir into @lc (may be NULL) when @t holds them. */
static int store_tree(struct vfs *v, const struct tree *t, int64_t fetched,
		      struct list_ctx *lc, bool keep_store)
{
	struct meta_entry *me = NULL;
	const struct tree_item *e;
	const char *dir;
	size_t i = 0, n, j, cap = 0;
	int64_t exp = fetched + (int64_t)v->conf.meta_ttl_ms;
	int rc = 0;

	while (tree_next_dir(t, &i, &dir, &e, &n)) {
		bool mine = lc && strcmp(dir, lc->dir) == 0;

		if (n > cap) {
			struct meta_entry *m = realloc(me, n * sizeof(*m));

			if (!m) {
				rc = -ENOMEM;
				goto out;
			}
			me = m;
			cap = n;
		}
		for (j = 0; j < n; j++) {
			memset(&me[j], 0, sizeof(me[j]));
			me[j].name = e[j].name;
			me[j].is_dir = e[j].is_dir;
			me[j].etag = e[j].etag;
			me[j].size = e[j].size;
			me[j].mtime = e[j].mtime;
			if (mine) {
				struct s3_list_entry o = {
					.etag = e[j].etag,
					.size = e[j].size,
					.mtime = e[j].mtime,
				};

				rc = snap_add(lc, e[j].name, strlen(e[j].name),
					      e[j].is_dir,
					      e[j].is_dir ? NULL : &o);
				if (rc < 0)
					goto out;
			}
		}
		/* the store is an optimisation: its failure is logged, not
		 * fatal */
		if (!keep_store)
			meta_listing_put(v->meta, dir, fetched, exp,
					 n ? me : NULL, n);
	}
out:
	free(me);
	return rc;
}

/*
 * LIST directory lc->dir from S3 and store it.  Fills lc.  First its whole
 * subtree without delimiter, up to conf.list_flat_keys keys: every folder
 * below is stored too.  When the subtree is bigger, the listing goes on
 * with delimiter after the last key read, which completes lc->dir alone;
 * the folders wholly read are stored too.
 */
static int list_from_s3(struct vfs *v, struct list_ctx *lc)
{
	struct tree_ctx tc = { 0 };
	const char *after = NULL;
	int64_t t = now_ms();
	uint64_t gen = changes_seen(v);
	int rc;

	rc = tree_init(&tc.t, lc->dir);
	if (rc < 0)
		goto out;
	if (v->conf.list_flat_keys && !noflat(v, lc->dir)) {
		tc.max = v->conf.list_flat_keys;
		rc = s3_list_pages(v->s3, lc->dir, NULL, NULL,
				   (unsigned)(tc.max < LIST_PAGE_KEYS
						      ? tc.max
						      : LIST_PAGE_KEYS),
				   on_tree_page, &tc);
		note_s3(v, rc);
		if (rc < 0 || !tc.cut)
			goto done;
		log_debug("list '%s': more than %llu keys below: the rest "
			  "with delimiter",
			  lc->dir, (unsigned long long)tc.max);
		note_noflat(v, &tc);
		rc = tree_cut(&tc.t);
		if (rc < 0)
			goto out;
		after = tc.t.cut_key;
	}
	tc.max = 0;
	rc = s3_list_pages(v->s3, lc->dir, "/", after, 0, on_tree_page, &tc);
	note_s3(v, rc);
done:
	if (rc < 0)
		goto out;
	tree_finish(&tc.t, true);
	rc = store_tree(v, &tc.t, t, lc, changes_seen(v) != gen);
out:
	tree_release(&tc.t);
	free(tc.first_key);
	return rc;
}

static int on_meta_entry(void *ctx, const struct meta_entry *e)
{
	struct list_ctx *lc = ctx;
	struct s3_list_entry obj = {
		.key = NULL,
		.etag = (char *)(e->etag ? e->etag : ""),
		.size = e->size,
		.mtime = e->mtime,
	};

	int rc = snap_add(lc, e->name, strlen(e->name), e->is_dir,
			  e->is_dir ? NULL : &obj);

	if (rc == 0 && !e->is_dir) {
		struct xattrs *x = &lc->e[lc->n - 1].x;

		x->known = e->has_attrs;
		x->mode = e->mode;
		x->uid = e->uid;
		x->gid = e->gid;
		x->mtime = e->attr_mtime;
	}
	return rc;
}

/*
 * The entries of directory @path: the stored listing while fresh, else a new
 * LIST, else (S3 unavailable) the stale stored listing.
 */
static int list_dir(struct vfs *v, const char *path, struct list_ctx *lc)
{
	int64_t expires = 0;
	int rc;

	lc->v = v;
	lc->dir = dir_prefix_of(v, path);
	if (!lc->dir)
		return -ENOMEM;
	lc->dir_len = strlen(lc->dir);
	rc = meta_listing_get(v->meta, lc->dir, &expires, on_meta_entry, lc);
	if (rc == 0 && (expires > now_ms() || is_offline(v)))
		return 0;
	snap_free(lc->e, lc->n);
	lc->e = NULL;
	lc->n = lc->cap = 0;
	rc = list_from_s3(v, lc);
	if (rc < 0 && unavailable(rc)) {
		snap_free(lc->e, lc->n);
		lc->e = NULL;
		lc->n = lc->cap = 0;
		if (meta_listing_get(v->meta, lc->dir, NULL, on_meta_entry,
				     lc) == 0)
			return 0;
	}
	return rc;
}

static void list_ctx_release(struct list_ctx *lc)
{
	snap_free(lc->e, lc->n);
	free((char *)lc->dir);
}

/* ---- lookup ---- */

/* What one name resolves to. */
struct found {
	bool is_dir;
	char *etag;
	uint64_t size;
	int64_t mtime;
	int64_t expires_ms;
	struct xattrs x;
};

static int found_from_object(struct found *f, struct meta_object *o)
{
	f->is_dir = false;
	xattrs_from_object(&f->x, o);
	f->etag = o->etag;
	o->etag = NULL;
	f->size = o->size;
	f->mtime = o->mtime;
	f->expires_ms = o->expires_ms;
	return 0;
}

static int on_any(void *ctx, const struct s3_list_page *p)
{
	bool *any = ctx;

	*any = p->n_entries > 0 || p->n_prefixes > 0;
	return 1;
}

/* @f and the object's row from what S3 said of file @key at @t. */
static void found_from_info(struct vfs *v, const char *key,
			    struct s3_object_info *info, int64_t t,
			    struct found *f)
{
	struct meta_object o = { 0 };

	o.key = (char *)key;
	o.etag = info->etag;
	o.size = info->size;
	o.mtime = info->mtime;
	o.checked_ms = t;
	o.expires_ms = t + (int64_t)v->conf.meta_ttl_ms;
	xattrs_from_info(&f->x, info);
	xattrs_to_object(&o, &f->x);
	meta_object_put(v->meta, &o);
	f->is_dir = false;
	f->etag = info->etag;
	info->etag = NULL;
	f->size = info->size;
	f->mtime = info->mtime;
	f->expires_ms = o.expires_ms;
}

static void name_chunk(struct vfs *v, const char *key, const char *etag,
		       uint64_t index, char name[CHUNK_NAME_LEN + 1]);

static int sink_small(void *ctx, const void *data, size_t len)
{
	int rc = buf_add(ctx, data, len);

	return rc == -EMSGSIZE ? -EIO : rc;
}

/*
 * Ask S3 about @key, which a fresh listing says is a file of @size bytes.
 * A file of at most SMALL_GET_MAX (and one chunk) is fetched with one GET
 * in place of a HEAD: its headers are the attributes and its bytes go to
 * the cache as chunk 0 of the version they came with, so the `cat` that
 * usually follows costs nothing more.  Larger ones get a HEAD.
 */
static int resolve_file_s3(struct vfs *v, const char *key, uint64_t size,
			   struct found *f)
{
	uint64_t want = v->conf.chunk_size < SMALL_GET_MAX ? v->conf.chunk_size
							   : SMALL_GET_MAX;
	struct s3_get_opts opts = { .offset = 0, .length = want };
	struct s3_object_info info = { 0 };
	struct buf data = BUF_INIT((size_t)want);
	char name[CHUNK_NAME_LEN + 1];
	int64_t t = now_ms();
	int rc;

	if (size > 0 && size <= want) {
		rc = s3_get(v->s3, key, &opts, sink_small, &data, &info);
		if (rc == 0 && info.etag && info.size == data.len &&
		    info.size > 0) {
			struct cache_ref ref = { .key = key,
						 .etag = info.etag,
						 .index = 0 };

			name_chunk(v, key, info.etag, 0, name);
			if (cache_put(v->cache, name, &ref, data.data,
				      data.len) == 0)
				STAT_ADD(v, chunk_fetches, 1);
		}
	} else {
		rc = s3_head(v->s3, key, &info);
	}
	note_s3(v, rc);
	if (rc == 0)
		found_from_info(v, key, &info, t, f);
	if (rc == -ENOENT)
		meta_negative_put(v->meta, key,
				  t + (int64_t)v->conf.negative_ttl_ms);
	s3_object_info_release(&info);
	buf_release(&data);
	return rc;
}

/*
 * Whether some key starts with @dir: with list_flat, one page of the
 * subtree without delimiter, whose folders are stored as list_from_s3()
 * stores them (an opendir that follows the lookup lists nothing); else one
 * page with delimiter.
 */
static int probe_dir(struct vfs *v, const char *dir, bool *any)
{
	struct tree_ctx tc = { 0 };
	int64_t t = now_ms();
	uint64_t gen = changes_seen(v);
	int rc;

	if (!v->conf.list_flat_keys)
		return s3_list_all(v->s3, dir, "/", on_any, any);
	rc = tree_init(&tc.t, dir);
	if (rc < 0)
		goto out;
	tc.max = v->conf.list_flat_keys < LIST_PAGE_KEYS
			 ? v->conf.list_flat_keys
			 : LIST_PAGE_KEYS;
	rc = s3_list_pages(v->s3, dir, NULL, NULL, (unsigned)tc.max,
			   on_tree_page, &tc);
	if (rc < 0)
		goto out;
	*any = tc.keys > 0;
	if (!*any)
		goto out;
	if (tc.cut) {
		rc = tree_cut(&tc.t);
		if (rc < 0)
			goto out;
	}
	tree_finish(&tc.t, false);
	rc = store_tree(v, &tc.t, t, NULL, changes_seen(v) != gen);
out:
	tree_release(&tc.t);
	free(tc.first_key);
	return rc;
}

/* Ask S3 what @key is: a directory (some key below key/), a file, or
 * nothing (-ENOENT). */
static int resolve_s3(struct vfs *v, const char *key, struct found *f)
{
	struct s3_object_info info = { 0 };
	char *dir = NULL;
	bool any = false;
	int64_t t = now_ms();
	int rc;

	if (asprintf(&dir, "%s/", key) < 0)
		return -ENOMEM;
	rc = probe_dir(v, dir, &any);
	if (rc == 0 && any) {
		f->is_dir = true;
		goto out;
	}
	if (rc == 0)
		rc = s3_head(v->s3, key, &info);
	if (rc < 0)
		goto out;
	found_from_info(v, key, &info, t, f);
out:
	note_s3(v, rc);
	if (rc == -ENOENT)
		meta_negative_put(v->meta, key,
				  t + (int64_t)v->conf.negative_ttl_ms);
	s3_object_info_release(&info);
	free(dir);
	return rc;
}

/* Resolve @name in directory @dir_path; see the order in the file comment. */
static int resolve(struct vfs *v, const char *dir_path, const char *name,
		   struct found *f)
{
	struct meta_object o = { 0 };
	char *dir = dir_prefix_of(v, dir_path), *key = NULL, *below = NULL;
	int64_t exp = 0, t = now_ms();
	bool is_dir = false, stale_ok = false;
	int rc;

	if (!dir || asprintf(&key, "%s%s", dir, name) < 0) {
		rc = -ENOMEM;
		goto out;
	}
	/* 1. the parent's listing */
	rc = meta_listing_find(v->meta, dir, name, &exp, &is_dir, &o);
	if (rc >= 0 && (exp > t || is_offline(v))) {
		if (rc == 1) {
			rc = -ENOENT;
		} else if (is_dir) {
			f->is_dir = true;
		} else {
			found_from_object(f, &o);
			f->expires_ms = exp;
		}
		goto out;
	}
	meta_object_release(&o);
	memset(&o, 0, sizeof(o));
	/* 1b. its own listing, stored by a listing of an ancestor or a probe
	 * of this name (resolve_s3) */
	if (asprintf(&below, "%s/", key) < 0) {
		below = NULL;
		rc = -ENOMEM;
		goto out;
	}
	if (meta_listing_expiry(v->meta, below, &exp) == 0 && exp > t) {
		f->is_dir = true;
		rc = 0;
		goto out;
	}
	/* 2. a negative entry */
	if (meta_negative_get(v->meta, key, &exp) == 0 && exp > t) {
		rc = -ENOENT;
		goto out;
	}
	/* 3. the object's row */
	rc = meta_object_get(v->meta, key, &o);
	if (rc == 0 && (o.expires_ms > t || is_offline(v) || never(v))) {
		found_from_object(f, &o);
		goto out;
	}
	stale_ok = rc == 0;
	/* 4. a fresh row of an object below it: a folder */
	if (meta_object_under(v->meta, below,
			      is_offline(v) || never(v) ? INT64_MIN : t) == 1) {
		f->is_dir = true;
		rc = 0;
		goto out;
	}
	/* 5. a fresh listing of the parent: one LIST answers every name in
	 * it, a file's attributes then come with its GET or HEAD */
	if (!is_offline(v)) {
		struct list_ctx lc = { 0 };
		struct meta_object lo = { 0 };

		exp = 0;
		rc = list_dir(v, dir_path, &lc);
		if (rc == 0)
			rc = meta_listing_find(v->meta, dir, name, &exp,
					       &is_dir, &lo);
		list_ctx_release(&lc);
		if (rc >= 0 && exp > t) {
			if (rc == 1)
				rc = -ENOENT;
			else if (is_dir)
				f->is_dir = true;
			else
				rc = resolve_file_s3(v, key, lo.size, f);
			meta_object_release(&lo);
			if (rc == 0 || rc == -ENOENT || !unavailable(rc))
				goto out;
		}
		meta_object_release(&lo);
	}
	/* 6. S3 */
	rc = resolve_s3(v, key, f);
	if (rc < 0 && unavailable(rc) && stale_ok)
		rc = found_from_object(f, &o);
out:
	meta_object_release(&o);
	free(dir);
	free(key);
	free(below);
	return rc;
}

/*
 * strict_attrs: the attributes of directory @name of @parent from its
 * marker "KEY/" (HEAD) into @x, unless its node knows them within
 * meta_ttl (then @x is left alone); no marker: the defaults.  When S3
 * cannot say, @x stays unknown.  0 or -ENOMEM.
 */
static int dir_xattrs(struct vfs *v, uint64_t parent, const char *dir_path,
		      const char *name, struct xattrs *x)
{
	struct s3_object_info info = { 0 };
	char *dir = NULL, *marker = NULL;
	struct node *n;
	bool known;
	int rc;

	pthread_mutex_lock(&v->lock);
	n = node_by_name(v, parent, name);
	known = n && n->is_dir && n->x.known && n->expires_ms > now_ms();
	pthread_mutex_unlock(&v->lock);
	if (known)
		return 0;
	dir = dir_prefix_of(v, dir_path);
	if (!dir || asprintf(&marker, "%s%s/", dir, name) < 0) {
		marker = NULL;
		rc = -ENOMEM;
		goto out;
	}
	rc = s3_head(v->s3, marker, &info);
	note_s3(v, rc);
	if (rc == 0) {
		xattrs_from_info(x, &info);
	} else if (rc == -ENOENT) {
		memset(x, 0, sizeof(*x));
		x->known = true; /* an implicit directory: the defaults */
		x->uid = x->gid = UINT32_MAX;
	}
	rc = 0;
out:
	s3_object_info_release(&info);
	free(marker);
	free(dir);
	return rc;
}

int vfs_lookup(struct vfs *v, uint64_t parent, const char *name,
	       struct vfs_attr *out)
{
	struct found f = { 0 };
	struct node *p, *n;
	char *dir_path = NULL;
	size_t len = strlen(name);
	uint64_t gen = changes_seen(v);
	int rc;

	if (len > VFS_NAME_MAX)
		return -ENAMETOOLONG;
	if (!name_ok(name, len))
		return -ENOENT;
	/* a name being renamed over answers once the rename ended, so an
	 * open that met the replaced node (-ESTALE) finds the new one */
	pthread_mutex_lock(&v->lock);
	while ((n = node_by_name(v, parent, name)) && n->replaced)
		pthread_cond_wait(&v->rename_cond, &v->lock);
	pthread_mutex_unlock(&v->lock);
	rc = path_of(v, parent, 1, &dir_path);
	if (rc < 0)
		return rc;
	{
		/* a file being written is there before S3 knows it */
		char *dir = dir_prefix_of(v, dir_path), *key = NULL;
		struct wb_file *wf = NULL;

		if (dir && asprintf(&key, "%s%s", dir, name) >= 0)
			wf = wb_find(v->wb, key);
		else
			key = NULL;
		free(dir);
		free(key);
		if (wf) {
			wb_put(v->wb, wf);
			f.is_dir = false;
			goto found;
		}
	}
	rc = resolve(v, dir_path, name, &f);
	if (rc < 0)
		goto out;
	/*
	 * LIST does not carry the attributes: a small file may be a link, and
	 * with strict_attrs the kernel checks other users against them
	 */
	if (!f.is_dir && !f.x.known &&
	    (v->conf.strict_attrs || (f.size > 0 && f.size <= SYMLINK_MAX))) {
		char *dir = dir_prefix_of(v, dir_path), *key = NULL;

		if (dir && asprintf(&key, "%s%s", dir, name) >= 0) {
			struct found g = { 0 };

			if (resolve_s3(v, key, &g) == 0 && !g.is_dir) {
				free(f.etag);
				f = g;
			} else {
				free(g.etag);
			}
			free(key);
		}
		free(dir);
	}
	/* strict: a directory's modes are its marker's */
	if (f.is_dir && v->conf.strict_attrs) {
		rc = dir_xattrs(v, parent, dir_path, name, &f.x);
		if (rc < 0)
			goto out;
	}
found:
	pthread_mutex_lock(&v->lock);
	p = node_by_ino(v, parent);
	n = p ? node_get(v, p, name, f.is_dir) : NULL;
	if (!n) {
		rc = p ? -ENOMEM : -ENOENT;
	} else {
		/* a change of ours since resolve() began (a rename onto the
		 * name, an upload) made @n's attributes newer than @f's */
		if (!f.is_dir && f.etag && !(n->etag && v->names_gen != gen))
			node_set_attrs(n, f.etag, f.size, f.mtime, f.expires_ms,
				       &f.x);
		if (f.is_dir && f.x.known) {
			n->x = f.x;
			n->expires_ms = now_ms() + (int64_t)v->conf.meta_ttl_ms;
		}
		n->nlookup++;
		fill_attr(v, n, out);
	}
	pthread_mutex_unlock(&v->lock);
	if (rc == 0 && !out->is_dir) {
		char *key = NULL;

		pthread_mutex_lock(&v->lock);
		n = node_by_ino(v, out->ino);
		if (n)
			key = key_of(v, n->path);
		pthread_mutex_unlock(&v->lock);
		if (key)
			staged_attr(v, key, out);
		free(key);
	}
out:
	if (rc < 0 && rc != -ENOENT && unavailable(rc))
		rc = -EIO;
	free(f.etag);
	free(dir_path);
	return rc;
}

void vfs_forget(struct vfs *v, uint64_t ino, uint64_t n)
{
	struct node *nd;

	if (ino == VFS_ROOT_INO)
		return;
	pthread_mutex_lock(&v->lock);
	nd = node_by_ino(v, ino);
	if (nd) {
		nd->nlookup = nd->nlookup > n ? nd->nlookup - n : 0;
		if (nd->nlookup == 0) {
			unlink_node(v, nd);
			node_free(nd);
		}
	}
	pthread_mutex_unlock(&v->lock);
}

/*
 * Bring the attributes of file @ino up to date when they expired: the
 * object's row if fresh, else HEAD; while S3 is offline, what the row
 * says.  @force: HEAD even when the row is fresh (validate=always).
 * 0 or -errno (-ENOENT: the object is gone).
 */
static int revalidate(struct vfs *v, uint64_t ino, const char *key, bool force)
{
	struct s3_object_info info = { 0 };
	struct meta_object o = { 0 };
	struct node *n;
	int64_t t = now_ms();
	char *old_etag = NULL;
	uint64_t gen = changes_seen(v);
	const char *kp;
	struct xattrs x;
	int rc;

	rc = meta_object_get(v->meta, key, &o);
	if (rc == 0 && !force &&
	    (o.expires_ms > t || is_offline(v) || never(v)))
		goto apply;
	rc = s3_head(v->s3, key, &info);
	note_s3(v, rc);
	if (rc == -ENOENT) {
		meta_object_delete(v->meta, key);
		meta_negative_put(v->meta, key,
				  t + (int64_t)v->conf.negative_ttl_ms);
		goto out;
	}
	if (rc < 0) {
		if (unavailable(rc) && o.key) {
			rc = 0; /* serve what we knew */
			goto apply;
		}
		goto out;
	}
	if (o.etag && info.etag && strcmp(o.etag, info.etag) != 0) {
		log_info("'%s' changed on s3", key);
		old_etag = o.etag;
		o.etag = NULL;
	}
	meta_object_release(&o);
	memset(&o, 0, sizeof(o));
	o.key = strdup(key);
	o.etag = info.etag;
	info.etag = NULL;
	if (!o.key || !o.etag) {
		rc = -ENOMEM;
		goto out;
	}
	o.size = info.size;
	o.mtime = info.mtime;
	o.checked_ms = t;
	o.expires_ms = t + (int64_t)v->conf.meta_ttl_ms;
	xattrs_from_info(&x, &info);
	xattrs_to_object(&o, &x);
	meta_object_put(v->meta, &o);
	if (old_etag)
		cache_drop_object(v->cache, key, o.etag);
apply:
	pthread_mutex_lock(&v->lock);
	n = node_by_ino(v, ino);
	/* after a change of ours @key may no longer be @ino's name (the
	 * caller took it from the path before), nor what we learnt the
	 * newest */
	kp = path_of_key(v, key);
	if (n && n->parent != 0 && kp && strcmp(n->path, kp) == 0 &&
	    !(n->etag && v->names_gen != gen)) {
		xattrs_from_object(&x, &o);
		node_set_attrs(n, o.etag, o.size, o.mtime,
			       o.expires_ms > t ? o.expires_ms : t + OFFLINE_MS,
			       &x);
	}
	pthread_mutex_unlock(&v->lock);
out:
	free(old_etag);
	meta_object_release(&o);
	s3_object_info_release(&info);
	return rc;
}

int vfs_getattr(struct vfs *v, uint64_t ino, struct vfs_attr *out)
{
	struct node *n;
	char *key = NULL;
	bool fresh = false, head = false;
	int rc = 0;

	pthread_mutex_lock(&v->lock);
	n = node_by_ino(v, ino);
	if (!n) {
		rc = -ENOENT;
	} else {
		/* strict: modes seen only in a listing are read first */
		head = v->conf.strict_attrs && !n->is_dir && !n->x.known;
		fresh = !head && (n->is_dir || n->expires_ms > now_ms() ||
				  (never(v) && n->etag));
		fill_attr(v, n, out);
		/* a detached node's path now names another file (a rename
		 * onto it, a new one): what it knew is all it has */
		if (!n->is_dir && n->parent != 0 && !n->replaced &&
		    !(key = key_of(v, n->path)))
			rc = -ENOMEM;
	}
	pthread_mutex_unlock(&v->lock);
	if (rc < 0 || !key)
		return rc;
	if (staged_attr(v, key, out)) {
		/* unless a rename over the node began meanwhile: the staged
		 * file is then the new one */
		pthread_mutex_lock(&v->lock);
		n = node_by_ino(v, ino);
		if (n && (n->replaced || n->parent == 0))
			fill_attr(v, n, out);
		pthread_mutex_unlock(&v->lock);
		free(key);
		return 0;
	}
	if (fresh) {
		free(key);
		return 0;
	}
	rc = revalidate(v, ino, key, head);
	free(key);
	if (rc < 0)
		return unavailable(rc) ? -EIO : rc;
	pthread_mutex_lock(&v->lock);
	n = node_by_ino(v, ino);
	if (n)
		fill_attr(v, n, out);
	else
		rc = -ENOENT;
	pthread_mutex_unlock(&v->lock);
	return rc;
}

/* ---- directories ---- */

static int on_staged_child(void *ctx, const char *key, const struct wb_stat *st)
{
	struct list_ctx *lc = ctx;
	const char *name = key + lc->dir_len;
	struct s3_list_entry obj = { .etag = (char *)"" };
	struct dirent_snap *e;
	size_t i;
	int rc;

	if (strchr(name, '/') || !name_ok(name, strlen(name)))
		return 0; /* deeper: its directory shows as a prefix */
	for (i = 0; i < lc->n; i++)
		if (!lc->e[i].is_dir && strcmp(lc->e[i].name, name) == 0)
			break;
	if (i == lc->n) {
		rc = snap_add(lc, name, strlen(name), false, &obj);
		if (rc < 0)
			return rc;
	}
	e = &lc->e[i];
	e->staged = true;
	e->size = st->size;
	if (st->attrs.mtime)
		e->mtime = st->attrs.mtime;
	return 0;
}

/* Files being written show in their directory before S3 has them. */
static int merge_staged(struct vfs *v, struct list_ctx *lc)
{
	size_t n = lc->n;
	int rc = wb_each_under(v->wb, lc->dir, on_staged_child, lc);

	if (rc == 0 && lc->n != n)
		snap_finish(lc);
	return rc;
}

int vfs_opendir(struct vfs *v, uint64_t ino, struct vfs_dir **out)
{
	struct list_ctx lc = { 0 };
	struct vfs_dir *d = NULL;
	char *path = NULL;
	uint64_t gen;
	int rc;

	rc = path_of(v, ino, 1, &path);
	if (rc < 0)
		return rc;
	pthread_mutex_lock(&v->lock);
	gen = v->names_gen;
	pthread_mutex_unlock(&v->lock);
	rc = list_dir(v, path, &lc);
	if (rc < 0)
		goto out;
	rc = merge_staged(v, &lc);
	if (rc < 0)
		goto out;
	d = calloc(1, sizeof(*d));
	if (!d) {
		rc = -ENOMEM;
		goto out;
	}
	d->ino = ino;
	d->names_gen = gen;
	if (!(d->dir = strdup(lc.dir))) {
		free(d);
		d = NULL;
		rc = -ENOMEM;
		goto out;
	}
	d->e = lc.e;
	d->n = lc.n;
	lc.e = NULL;
	lc.n = 0;
	pthread_mutex_lock(&v->lock);
	LIST_LINK(v->dirs, d);
	pthread_mutex_unlock(&v->lock);
	*out = d;
out:
	list_ctx_release(&lc);
	free(path);
	if (rc < 0 && unavailable(rc))
		rc = -EIO;
	return rc;
}

void vfs_releasedir(struct vfs *v, struct vfs_dir *d)
{
	if (!d)
		return;
	pthread_mutex_lock(&v->lock);
	LIST_UNLINK(v->dirs, d);
	pthread_mutex_unlock(&v->lock);
	snap_free(d->e, d->n);
	free(d->dir);
	free(d);
}

/* The names of the files being written in a folder, sorted. */
struct staged_names {
	size_t dir_len;
	char **names;
	size_t n, cap;
};

static int on_staged_name(void *ctx, const char *key, const struct wb_stat *st)
{
	struct staged_names *sn = ctx;
	const char *name = key + sn->dir_len;
	char **grown;

	(void)st;
	if (strchr(name, '/'))
		return 0;
	if (sn->n == sn->cap) {
		grown = realloc(sn->names,
				(sn->cap ? sn->cap * 2 : 8) * sizeof(*grown));
		if (!grown)
			return -ENOMEM;
		sn->names = grown;
		sn->cap = sn->cap ? sn->cap * 2 : 8;
	}
	if (!(sn->names[sn->n] = strdup(name)))
		return -ENOMEM;
	sn->n++;
	return 0;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool staged_has(const struct staged_names *sn, const char *name)
{
	return sn->n && bsearch(&name, sn->names, sn->n, sizeof(*sn->names),
				cmp_str) != NULL;
}

static void staged_names_release(struct staged_names *sn)
{
	size_t i;

	for (i = 0; i < sn->n; i++)
		free(sn->names[i]);
	free(sn->names);
}

int vfs_readdir(struct vfs *v, struct vfs_dir *d, uint64_t off, bool plus,
		vfs_dirent_fn fn, void *ctx)
{
	int64_t exp = now_ms() + (int64_t)v->conf.meta_ttl_ms;
	struct staged_names sn = { .dir_len = strlen(d->dir) };
	struct node *p, *n;
	struct vfs_attr a;
	bool stale, link;
	int rc;

	/* Files being written now: their node may hold the size of the version
	 * before, which the kernel must not take for the writer's.  (One that
	 * starts being written after this is safe: the kernel ignores
	 * attributes asked for before its own writes.) */
	rc = wb_each_under(v->wb, d->dir, on_staged_name, &sn);
	if (rc < 0)
		goto out;
	if (sn.n > 1)
		qsort(sn.names, sn.n, sizeof(*sn.names), cmp_str);
	pthread_mutex_lock(&v->lock);
	/* A snapshot older than a change of ours (a name removed must not
	 * come back, a new version must not get the old size): its entries
	 * refresh no attributes and give the kernel no inode (it looks each
	 * name up), as without plus. */
	stale = d->names_gen != v->names_gen;
	p = node_by_ino(v, d->ino);
	for (; off < d->n && p; off++) {
		const struct dirent_snap *e = &d->e[off];
		bool staged = !e->is_dir && staged_has(&sn, e->name);

		link = plus && !stale && !staged;
		n = node_get(v, p, e->name, e->is_dir);
		if (!n) {
			rc = -ENOMEM;
			break;
		}
		/* the snapshot may be older than what an open learnt; the size
		 * of a staged entry is not its etag's */
		if (!stale && !staged && !e->staged && !e->is_dir &&
		    (!n->etag || n->expires_ms <= now_ms()))
			node_set_attrs(n, e->etag, e->size, e->mtime, exp,
				       &e->x);
		fill_attr(v, n, &a);
		a.name_only = !link;
		if (fn(ctx, e->name, &a, off + 1) != 0) {
			if (n->nlookup == 0) {
				unlink_node(v, n);
				node_free(n);
			}
			break;
		}
		if (link) {
			n->nlookup++;
		} else if (n->nlookup == 0) {
			unlink_node(v, n);
			node_free(n);
		}
	}
	pthread_mutex_unlock(&v->lock);
out:
	staged_names_release(&sn);
	return rc;
}

/* ---- access stamps ---- */

/* Write the pending object access stamps.  Called with v->lock held; the
 * batch is taken out and written without it. */
static void flush_touches_locked(struct vfs *v)
{
	struct meta_touch *t = v->touches;
	char **keys = v->touch_keys;
	size_t i, n = v->n_touches;

	if (n == 0)
		return;
	v->touches = NULL;
	v->touch_keys = NULL;
	v->n_touches = 0;
	v->touches_since_ms = 0;
	pthread_mutex_unlock(&v->lock);
	meta_object_touch_many(v->meta, t, n);
	for (i = 0; i < n; i++)
		free(keys[i]);
	free(keys);
	free(t);
	pthread_mutex_lock(&v->lock);
}

/* Queue an access stamp for @key; written in batches, never one per read. */
static void touch_object(struct vfs *v, const char *key)
{
	int64_t t = now_ms();
	char *k = strdup(key);

	pthread_mutex_lock(&v->lock);
	if (!v->touches) {
		v->touches = calloc(TOUCH_BATCH, sizeof(*v->touches));
		v->touch_keys = calloc(TOUCH_BATCH, sizeof(char *));
		if (!v->touches || !v->touch_keys) {
			free(v->touches);
			free(v->touch_keys);
			v->touches = NULL;
			v->touch_keys = NULL;
		}
		v->touches_since_ms = t;
	}
	if (k && v->touches) {
		v->touch_keys[v->n_touches] = k;
		v->touches[v->n_touches].name = k;
		v->touches[v->n_touches].atime_ms = t;
		v->n_touches++;
		k = NULL;
	}
	if (v->n_touches == TOUCH_BATCH ||
	    (v->n_touches && t - v->touches_since_ms > TOUCH_MAX_AGE_MS))
		flush_touches_locked(v);
	pthread_mutex_unlock(&v->lock);
	free(k);
}

/* ---- files ---- */

static void file_free(struct vfs_file *f)
{
	if (!f)
		return;
	pthread_mutex_destroy(&f->lock);
	free(f->key);
	free(f->etag);
	free(f);
}

/*
 * A rename over a node uploads the new file under the node's key before it
 * moves the nodes: meanwhile the key holds a file this node's size does not
 * describe.  An open of such a node waits for the rename to end, and is
 * then stale: the kernel looks the name up again and opens the new file.
 *
 * wait_replaced(): at the start of an open; sets *gen for stale_open().
 * stale_open(): before the open is linked, with v->lock held: true when a
 * rename over the node began since (it waits for its end first).
 */
static bool stale_open(struct vfs *v, uint64_t ino, uint64_t gen)
{
	struct node *n;
	bool waited = false;

	while ((n = node_by_ino(v, ino)) && n->replaced) {
		waited = true;
		pthread_cond_wait(&v->rename_cond, &v->lock);
	}
	if (waited)
		return true;
	return v->replace_gen != gen &&
	       (!n || (n->ino != VFS_ROOT_INO && n->parent == 0));
}

static int wait_replaced(struct vfs *v, uint64_t ino, uint64_t *gen)
{
	bool stale;

	pthread_mutex_lock(&v->lock);
	*gen = v->replace_gen;
	stale = stale_open(v, ino, *gen);
	*gen = v->replace_gen;
	pthread_mutex_unlock(&v->lock);
	return stale ? -ESTALE : 0;
}

int vfs_open(struct vfs *v, uint64_t ino, int flags, struct vfs_file **out,
	     bool *keep_cache)
{
	struct vfs_file *f = NULL;
	struct node *n;
	char *path = NULL;
	bool writing = (flags & O_ACCMODE) != O_RDONLY || (flags & O_TRUNC);
	uint64_t gen;
	int rc;

	if (writing && v->conf.ro)
		return -EROFS;
	rc = wait_replaced(v, ino, &gen);
	if (rc < 0)
		return rc;
	rc = path_of(v, ino, 0, &path);
	if (rc < 0)
		return rc;
	f = calloc(1, sizeof(*f));
	if (!f || !(f->key = key_of(v, path))) {
		free(f);
		free(path);
		return -ENOMEM;
	}
	pthread_mutex_init(&f->lock, NULL);
	f->ino = ino;
	f->flags = flags;
	f->pf_lo = UINT64_MAX;
	if (writing)
		rc = stage_existing(v, ino, f->key, (flags & O_TRUNC) != 0,
				    &f->wb);
	else
		f->wb = wb_find(v->wb, f->key);
	if (rc < 0)
		goto out;
	if (f->wb) {
		/* what the kernel cached may predate the staged changes */
		*keep_cache = false;
		f->attrs_moved = true;
		pthread_mutex_lock(&v->lock);
		if (stale_open(v, ino, gen)) {
			pthread_mutex_unlock(&v->lock);
			wb_put(v->wb, f->wb);
			rc = -ESTALE;
			goto out;
		}
		LIST_LINK(v->files, f);
		pthread_mutex_unlock(&v->lock);
		goto out;
	}
	pthread_mutex_lock(&v->lock);
	n = node_by_ino(v, ino);
	switch (v->conf.validate) {
	case VFS_VALIDATE_ALWAYS:
		rc = 0;
		break;
	case VFS_VALIDATE_NEVER:
		rc = n && n->etag ? 1 : 0;
		break;
	default:
		rc = n && n->etag && n->expires_ms > now_ms() ? 1 : 0;
		break;
	}
	pthread_mutex_unlock(&v->lock);
	if (rc == 0) {
		/* the size the kernel holds may be older than what S3 says */
		f->attrs_moved = true;
		rc = revalidate(v, ino, f->key,
				v->conf.validate == VFS_VALIDATE_ALWAYS);
		if (rc < 0)
			goto out;
	}
	rc = 0;
	pthread_mutex_lock(&v->lock);
	n = node_by_ino(v, ino);
	if (stale_open(v, ino, gen)) {
		rc = -ESTALE;
	} else if (!n || !n->etag) {
		rc = -EIO;
	} else {
		*keep_cache =
			n->opened_etag && strcmp(n->opened_etag, n->etag) == 0;
		f->size = n->size;
		if (!(f->etag = strdup(n->etag)) ||
		    set_str(&n->opened_etag, n->etag) < 0)
			rc = -ENOMEM;
	}
	pthread_mutex_unlock(&v->lock);
	if (rc == 0) {
		touch_object(v, f->key);
		pthread_mutex_lock(&v->lock);
		LIST_LINK(v->files, f);
		pthread_mutex_unlock(&v->lock);
	}
out:
	free(path);
	if (rc < 0) {
		file_free(f);
		return unavailable(rc) ? -EIO : rc;
	}
	*out = f;
	return 0;
}

bool vfs_file_attrs_moved(const struct vfs_file *f)
{
	return f->attrs_moved;
}

/* How @f's reads were served, for its node's vfs_cache_info(). */
static enum vfs_served served_of(const struct vfs_file *f)
{
	uint64_t hits = __atomic_load_n(&f->hits, __ATOMIC_RELAXED);
	uint64_t misses = __atomic_load_n(&f->misses, __ATOMIC_RELAXED);

	if (f->wb)
		return VFS_SERVED_STAGED;
	if (f->flags & O_DIRECT)
		return misses ? VFS_SERVED_DIRECT : VFS_SERVED_NONE;
	if (hits && misses)
		return VFS_SERVED_MIXED;
	if (hits)
		return VFS_SERVED_CACHE;
	return misses ? VFS_SERVED_S3 : VFS_SERVED_NONE;
}

void vfs_release(struct vfs *v, struct vfs_file *f)
{
	struct node *n;

	if (!f)
		return;
	pthread_mutex_lock(&v->lock);
	LIST_UNLINK(v->files, f);
	n = node_by_ino(v, f->ino);
	if (n)
		n->served = served_of(f);
	pthread_mutex_unlock(&v->lock);
	if (f->wb)
		wb_put(v->wb, f->wb);
	file_free(f);
}

/* The identity and file name of chunk @index of @f's object version. */
static void name_chunk(struct vfs *v, const char *key, const char *etag,
		       uint64_t index, char name[CHUNK_NAME_LEN + 1])
{
	struct chunk_id id = {
		.endpoint = v->conf.endpoint,
		.bucket = v->conf.bucket,
		.key = key,
		.etag = etag,
		.index = index,
	};

	chunk_name(&id, name);
}

/* Copy from the memory ring; true when @name was there.  Under v->lock. */
static bool ring_read(struct vfs *v, const char *name, uint64_t off, void *out,
		      size_t len, size_t *got)
{
	size_t i;

	for (i = 0; i < MEM_RING; i++) {
		struct mem_chunk *m = &v->ring[i];

		if (strcmp(m->name, name) != 0)
			continue;
		*got = off >= m->data.len ? 0 : m->data.len - off;
		if (*got > len)
			*got = len;
		memcpy(out, m->data.data + off, *got);
		m->stamp = ++v->ring_clock;
		return true;
	}
	return false;
}

/* Keep @data as chunk @name in the ring, in place of the oldest. */
static void ring_put(struct vfs *v, const char *name, struct buf *data)
{
	struct mem_chunk *m = &v->ring[0];
	size_t i;

	pthread_mutex_lock(&v->lock);
	for (i = 1; i < MEM_RING; i++)
		if (v->ring[i].stamp < m->stamp)
			m = &v->ring[i];
	buf_release(&m->data);
	m->data = *data;
	buf_init(data, data->max);
	memcpy(m->name, name, sizeof(m->name));
	m->stamp = ++v->ring_clock;
	pthread_mutex_unlock(&v->lock);
}

/* Where a ranged GET lands: a part's place in its chunk's buffer, or an
 * O_DIRECT reader's buffer; more bytes than asked for are -EIO. */
struct part_sink {
	char *p;
	size_t cap, len;
};

static int sink_part(void *ctx, const void *data, size_t len)
{
	struct part_sink *d = ctx;

	if (len > d->cap - d->len)
		return -EIO; /* more than asked for */
	memcpy(d->p + d->len, data, len);
	d->len += len;
	return 0;
}

static uint64_t all_parts(const struct inflight *fl)
{
	return fl->n_parts == 64 ? UINT64_MAX : (1ull << fl->n_parts) - 1;
}

/*
 * The inflight fetch of chunk @name, or NULL.  A failed fetch stays on the
 * list until its last part running returns, and whoever comes meanwhile
 * gets its error: the kernel retries a failed read at once, and asking S3
 * again would let one read() outlast the timeout several times over.
 * Under v->lock.
 */
static struct inflight *inflight_find(struct vfs *v, const char *name)
{
	struct inflight *fl;

	for (fl = v->inflight; fl; fl = fl->next)
		if (strcmp(fl->name, name) == 0)
			return fl;
	return NULL;
}

static void inflight_free(struct inflight *fl)
{
	free(fl->key);
	free(fl->etag);
	free(fl->data);
	free(fl);
}

/* Start fetching chunk @index (@len bytes) of @key at @etag: a new entry
 * at the end of v->inflight with no part claimed, or NULL (-ENOMEM).
 * @whole: in one GET (a chunk fetched ahead: fewer, larger requests keep
 * more bytes in flight), else in parts (a reader waits for it).  Under
 * v->lock; wakes the prefetch threads to help. */
static struct inflight *inflight_new(struct vfs *v, const char *key,
				     const char *etag, uint64_t index,
				     uint64_t len, const char *name, bool whole)
{
	struct inflight *fl = calloc(1, sizeof(*fl)), **pp;

	if (!fl)
		return NULL;
	fl->key = strdup(key);
	fl->etag = strdup(etag);
	fl->data = malloc(len ? len : 1);
	if (!fl->key || !fl->etag || !fl->data) {
		inflight_free(fl);
		return NULL;
	}
	memcpy(fl->name, name, sizeof(fl->name));
	fl->index = index;
	fl->len = len;
	fl->part = (len + PARTS_MAX - 1) / PARTS_MAX;
	if (fl->part < PART_MIN)
		fl->part = PART_MIN;
	if (whole && len)
		fl->part = len;
	fl->n_parts = len ? (unsigned)((len + fl->part - 1) / fl->part) : 1;
	for (pp = &v->inflight; *pp; pp = &(*pp)->next)
		;
	*pp = fl;
	v->n_inflight++;
	pthread_cond_broadcast(&v->queue_cond);
	return fl;
}

/* Drop a reference to @fl; frees it when it was the last and the fetch
 * is settled.  Under v->lock. */
static void inflight_put(struct inflight *fl)
{
	if (--fl->refs == 0 && fl->done)
		inflight_free(fl);
}

/* Admit settled @fl to the cache (or the ring when the cache cannot take
 * it), then take it off v->inflight.  Called and returns with v->lock held,
 * by a thread holding a reference; drops the lock meanwhile. */
static void admit(struct vfs *v, struct inflight *fl)
{
	struct cache_ref ref = { .key = fl->key,
				 .etag = fl->etag,
				 .index = fl->index };
	struct inflight **pp;

	if (fl->rc == 0) {
		pthread_mutex_unlock(&v->lock);
		STAT_ADD(v, chunk_fetches, 1);
		if (cache_put(v->cache, fl->name, &ref, fl->data, fl->len) <
		    0) {
			struct buf copy = BUF_INIT(CHUNK_SIZE_MAX);

			STAT_ADD(v, cache_bypass, 1);
			if (buf_add(&copy, fl->data, fl->len) == 0)
				ring_put(v, fl->name, &copy);
			buf_release(&copy);
		}
		pthread_mutex_lock(&v->lock);
	}
	fl->done = true;
	for (pp = &v->inflight; *pp != fl; pp = &(*pp)->next)
		;
	*pp = fl->next;
	v->n_inflight--;
	pthread_cond_broadcast(&v->queue_cond);
}

/*
 * Every part of @fl is in, or one failed and none is still running: hand
 * it to the writer thread (with a reference of its own) when it has room,
 * else admit it here.  Called and returns with v->lock held, by a thread
 * holding a reference; may drop the lock meanwhile.
 */
static void settle(struct vfs *v, struct inflight *fl)
{
	fl->settling = true;
	if (fl->rc == 0 && v->has_writer && !v->stopping &&
	    v->wq_len < WRITE_QUEUE) {
		fl->refs++;
		STAT_ADD(v, written_behind, 1);
		v->wq[(v->wq_head + v->wq_len) % WRITE_QUEUE] = fl;
		v->wq_len++;
		pthread_cond_signal(&v->wq_cond);
		return;
	}
	admit(v, fl);
}

/* The writer thread: admits the chunks settle() hands it, oldest first,
 * until the vfs stops and none is left. */
static void *writer_main(void *arg)
{
	struct vfs *v = arg;
	struct inflight *fl;

	pthread_mutex_lock(&v->lock);
	for (;;) {
		if (v->wq_len == 0) {
			if (v->stopping)
				break;
			pthread_cond_wait(&v->wq_cond, &v->lock);
			continue;
		}
		fl = v->wq[v->wq_head];
		v->wq_head = (v->wq_head + 1) % WRITE_QUEUE;
		v->wq_len--;
		admit(v, fl);
		inflight_put(fl);
	}
	pthread_mutex_unlock(&v->lock);
	return NULL;
}

/*
 * GET part @p of @fl, which the caller claimed (and counted in busy),
 * with If-Match: the version the chunk names.  Settles @fl when it was
 * the last part running.  Called and returns with v->lock held (and a
 * reference to @fl); drops the lock for the request.
 */
static void fetch_part(struct vfs *v, struct inflight *fl, unsigned p)
{
	uint64_t off = (uint64_t)p * fl->part;
	uint64_t len = fl->len - off < fl->part ? fl->len - off : fl->part;
	struct s3_get_opts opts = {
		.offset = fl->index * v->conf.chunk_size + off,
		.length = len,
		.if_match = fl->etag,
	};
	struct part_sink d = { .p = fl->data + off, .cap = (size_t)len };
	int rc = 0;

	pthread_mutex_unlock(&v->lock);
	if (len)
		rc = s3_get(v->s3, fl->key, &opts, sink_part, &d, NULL);
	note_s3(v, rc);
	if (rc == 0 && d.len != len) {
		log_error("'%s': chunk %llu came with %zu bytes at %llu, not "
			  "%llu",
			  fl->key, (unsigned long long)fl->index, d.len,
			  (unsigned long long)off, (unsigned long long)len);
		rc = -EIO;
	}
	pthread_mutex_lock(&v->lock);
	fl->busy--;
	if (rc == 0) {
		fl->fetched |= 1ull << p;
	} else if (fl->rc == 0) {
		fl->rc = rc;
		fl->claimed = all_parts(fl); /* the rest is not worth a GET */
	}
	/* readers of this part need not wait for the chunk's admission */
	pthread_cond_broadcast(&v->queue_cond);
	if (fl->busy == 0 && fl->claimed == all_parts(fl) && !fl->settling)
		settle(v, fl);
	pthread_cond_broadcast(&v->queue_cond);
}

/* Claim the first unclaimed part of @fl within @mask: its number, or -1.
 * Under v->lock. */
static int claim(struct inflight *fl, uint64_t mask)
{
	uint64_t free_parts = mask & ~fl->claimed;
	int p;

	if (!free_parts || fl->rc)
		return -1;
	p = __builtin_ctzll(free_parts);
	fl->claimed |= 1ull << p;
	fl->busy++;
	return p;
}

/* Bits of the parts of @fl holding [off, off + len), len > 0. */
static uint64_t parts_of(const struct inflight *fl, uint64_t off, size_t len)
{
	uint64_t lo = off / fl->part, hi = (off + len - 1) / fl->part;

	if (hi >= fl->n_parts)
		hi = fl->n_parts - 1;
	if (lo > hi)
		lo = hi;
	return (hi - lo + 1 == 64 ? UINT64_MAX
				  : ((1ull << (hi - lo + 1)) - 1) << lo);
}

/*
 * Copy [off, off + len) of chunk @index into @out (count in *got): from
 * the ring, or from the fetch in flight for it, joined or started.  The
 * caller fetches the parts it needs that nobody has claimed and returns
 * once they are in; the prefetch threads fetch the rest.  -EAGAIN when
 * the chunk reached the cache since the caller looked.
 */
static int get_chunk(struct vfs *v, const char *key, const char *etag,
		     uint64_t index, uint64_t chunk_len, const char *name,
		     uint64_t off, void *out, size_t len, size_t *got)
{
	struct inflight *fl;
	uint64_t want;
	int rc, p;

	pthread_mutex_lock(&v->lock);
	if (ring_read(v, name, off, out, len, got)) {
		pthread_mutex_unlock(&v->lock);
		return 0;
	}
	fl = inflight_find(v, name);
	/* a fetch that ended since the caller looked may have cached it */
	if (!fl && cache_contains(v->cache, name)) {
		pthread_mutex_unlock(&v->lock);
		return -EAGAIN;
	}
	if (!fl)
		fl = inflight_new(v, key, etag, index, chunk_len, name, false);
	if (!fl) {
		pthread_mutex_unlock(&v->lock);
		return -ENOMEM;
	}
	fl->refs++;
	want = len ? parts_of(fl, off, len) : 0;
	fl->waiters++;
	while (!fl->rc && (fl->fetched & want) != want) {
		p = claim(fl, want);
		if (p >= 0)
			fetch_part(v, fl, (unsigned)p);
		else
			pthread_cond_wait(&v->queue_cond, &v->lock);
	}
	fl->waiters--;
	rc = fl->rc;
	if (rc == 0) {
		*got = off >= fl->len ? 0 : fl->len - off;
		if (*got > len)
			*got = len;
		memcpy(out, fl->data + off, *got);
		/* bound the chunks left for the prefetch threads to finish */
		while (v->n_inflight > INFLIGHT_SOFT &&
		       (p = claim(fl, all_parts(fl))) >= 0)
			fetch_part(v, fl, (unsigned)p);
	}
	inflight_put(fl);
	pthread_mutex_unlock(&v->lock);
	return rc;
}

/* Queue chunk @index of @key at @etag (an object of @size bytes) for the
 * prefetch threads.  0 when queued, 1 when cached or queued already,
 * -ENOSPC when the queue is full, -ENOMEM.  Under v->lock. */
static int queue_job(struct vfs *v, const char *key, const char *etag,
		     uint64_t index, uint64_t size)
{
	char name[CHUNK_NAME_LEN + 1];
	struct prefetch_job *j;
	size_t i;

	name_chunk(v, key, etag, index, name);
	if (cache_contains(v->cache, name) || inflight_find(v, name))
		return 1;
	if (v->q_len == v->q_cap)
		return -ENOSPC;
	for (i = 0; i < v->q_len; i++) {
		j = &v->queue[(v->q_head + i) % v->q_cap];
		if (j->index == index && strcmp(j->key, key) == 0 &&
		    strcmp(j->etag, etag) == 0)
			return 1;
	}
	j = &v->queue[(v->q_head + v->q_len) % v->q_cap];
	j->key = strdup(key);
	j->etag = strdup(etag);
	if (!j->key || !j->etag) {
		free(j->key);
		free(j->etag);
		return -ENOMEM;
	}
	j->index = index;
	j->size = size;
	v->q_len++;
	pthread_cond_broadcast(&v->queue_cond);
	return 0;
}

/* Queue chunk @index of @f for the prefetch threads, unless it is cached
 * or queued.  false when the queue is full. */
static bool prefetch(struct vfs *v, struct vfs_file *f, uint64_t index)
{
	bool ok = true;
	int rc;

	pthread_mutex_lock(&v->lock);
	rc = queue_job(v, f->key, f->etag, index, f->size);
	if (rc == -ENOSPC)
		ok = false;
	if (rc != 0)
		goto out;
	__atomic_fetch_add(&f->misses, 1, __ATOMIC_RELAXED); /* from S3 */
	if (index < __atomic_load_n(&f->pf_lo, __ATOMIC_RELAXED))
		__atomic_store_n(&f->pf_lo, index, __ATOMIC_RELAXED);
	if (index + 1 > __atomic_load_n(&f->pf_hi, __ATOMIC_RELAXED))
		__atomic_store_n(&f->pf_hi, index + 1, __ATOMIC_RELAXED);
out:
	pthread_mutex_unlock(&v->lock);
	return ok;
}

/* The oldest fetch in flight with a part nobody claimed, one a reader
 * waits for first, and a reference to it, claimed part in *p; NULL when
 * there is none.  Under v->lock. */
static struct inflight *claim_any(struct vfs *v, int *p)
{
	struct inflight *fl;
	int pass;

	for (pass = 0; pass < 2; pass++) {
		for (fl = v->inflight; fl; fl = fl->next) {
			if (pass == 0 && !fl->waiters)
				continue;
			*p = claim(fl, all_parts(fl));
			if (*p >= 0) {
				fl->refs++;
				return fl;
			}
		}
	}
	return NULL;
}

/* @f is read at random (@random: once it missed RANDOM_WHOLE_MISSES
 * chunks) or is a footer reader (f->whole_end): queue the rest of it, if
 * small enough, as far as the queue takes it. */
static void fetch_whole(struct vfs *v, struct vfs_file *f, bool random)
{
	uint64_t n = chunk_count_of(f->size, v->conf.chunk_size), i;
	struct cache_stats cs;

	if (f->size > RANDOM_WHOLE_MAX)
		return;
	pthread_mutex_lock(&f->lock);
	i = f->whole_next;
	if (f->whole_end) {
		n = f->whole_end;
	} else if (!random || f->small_random < RANDOM_WHOLE_MISSES ||
		   __atomic_load_n(&f->misses, __ATOMIC_RELAXED) <
			   RANDOM_WHOLE_MISSES) {
		i = n;
	}
	pthread_mutex_unlock(&f->lock);
	if (i >= n)
		return;
	cache_get_stats(v->cache, &cs);
	if (f->size > cs.cap_bytes / 4)
		return;
	while (i < n && prefetch(v, f, i))
		i++;
	pthread_mutex_lock(&f->lock);
	if (i > f->whole_next)
		f->whole_next = i;
	pthread_mutex_unlock(&f->lock);
}

/*
 * A prefetch thread: fetches the unclaimed parts of chunks in flight
 * (readers wait on those first), else starts the next queued chunk.
 */
static void *prefetch_main(void *arg)
{
	struct vfs *v = arg;
	char name[CHUNK_NAME_LEN + 1];
	struct prefetch_job j;
	struct inflight *fl;
	int p;

	pthread_mutex_lock(&v->lock);
	while (!v->stopping) {
		fl = claim_any(v, &p);
		if (fl) {
			fetch_part(v, fl, (unsigned)p);
			inflight_put(fl);
			continue;
		}
		if (v->q_len == 0) {
			pthread_cond_wait(&v->queue_cond, &v->lock);
			continue;
		}
		j = v->queue[v->q_head];
		v->q_head = (v->q_head + 1) % v->q_cap;
		v->q_len--;
		name_chunk(v, j.key, j.etag, j.index, name);
		if (!inflight_find(v, name) &&
		    !cache_contains(v->cache, name) &&
		    inflight_new(
			    v, j.key, j.etag, j.index,
			    chunk_len_of(j.index, j.size, v->conf.chunk_size),
			    name, true))
			STAT_ADD(v, prefetches, 1);
		free(j.key);
		free(j.etag);
	}
	pthread_mutex_unlock(&v->lock);
	return NULL;
}

/* The files a speculative fetch picks: the first SPEC_AHEAD names after
 * @after, in byte order, each owned. */
struct spec_ctx {
	const char *after;
	struct spec_pick {
		char *name, *etag;
		uint64_t size;
	} pick[SPEC_AHEAD];
	unsigned n;
};

static int on_spec_entry(void *ctx, const struct meta_entry *e)
{
	struct spec_ctx *sc = ctx;
	struct spec_pick p;
	unsigned i;

	if (e->is_dir || !e->etag || e->size == 0 || e->size > SPEC_SMALL_MAX ||
	    strcmp(e->name, sc->after) <= 0)
		return 0;
	if (sc->n == SPEC_AHEAD &&
	    strcmp(e->name, sc->pick[SPEC_AHEAD - 1].name) >= 0)
		return 0;
	p.name = strdup(e->name);
	p.etag = strdup(e->etag);
	p.size = e->size;
	if (!p.name || !p.etag) {
		free(p.name);
		free(p.etag);
		return -ENOMEM;
	}
	if (sc->n == SPEC_AHEAD) {
		sc->n--;
		free(sc->pick[sc->n].name);
		free(sc->pick[sc->n].etag);
	}
	for (i = sc->n; i > 0 && strcmp(sc->pick[i - 1].name, p.name) > 0; i--)
		sc->pick[i] = sc->pick[i - 1];
	sc->pick[i] = p;
	sc->n++;
	return 0;
}

/*
 * @f, a small file, is read from its start and missed the cache: when the
 * last small file that missed was another one of the same folder, queue
 * the next ones of the folder's fresh listing (see SPEC_AHEAD).
 */
static void speculate(struct vfs *v, struct vfs_file *f)
{
	const char *slash = strrchr(f->key, '/');
	size_t dlen = slash ? (size_t)(slash - f->key) + 1 : 0;
	struct spec_ctx sc = { .after = f->key + dlen };
	char name[CHUNK_NAME_LEN + 1], *dir, *base, *key = NULL;
	struct cache_stats cs;
	int64_t exp = 0;
	bool run;
	unsigned i;

	if (f->size > v->conf.chunk_size)
		return;
	name_chunk(v, f->key, f->etag, 0, name);
	if (cache_contains(v->cache, name))
		return;
	dir = strndup(f->key, dlen);
	base = strdup(sc.after);
	if (!dir || !base) {
		free(dir);
		free(base);
		return;
	}
	pthread_mutex_lock(&v->lock);
	run = v->spec_dir && strcmp(v->spec_dir, dir) == 0 &&
	      strcmp(v->spec_name, base) != 0;
	free(v->spec_dir);
	free(v->spec_name);
	v->spec_dir = dir;
	v->spec_name = base;
	pthread_mutex_unlock(&v->lock);
	if (!run)
		return;
	cache_get_stats(v->cache, &cs);
	if (cs.used_bytes + (uint64_t)SPEC_AHEAD * SPEC_SMALL_MAX >
	    cs.cap_bytes / 100 * SPEC_CACHE_PCT)
		return;
	/* dir is v->spec_dir: read it under the lock only */
	pthread_mutex_lock(&v->lock);
	dir = v->spec_dir ? strdup(v->spec_dir) : NULL;
	pthread_mutex_unlock(&v->lock);
	if (!dir)
		return;
	if (meta_listing_get(v->meta, dir, &exp, on_spec_entry, &sc) < 0 ||
	    exp <= now_ms())
		goto out;
	pthread_mutex_lock(&v->lock);
	for (i = 0; i < sc.n; i++) {
		if (asprintf(&key, "%s%s", dir, sc.pick[i].name) < 0)
			break;
		if (sc.pick[i].size <= v->conf.chunk_size &&
		    queue_job(v, key, sc.pick[i].etag, 0, sc.pick[i].size) ==
			    -ENOSPC)
			i = sc.n; /* full: the next read tries again */
		free(key);
	}
	pthread_mutex_unlock(&v->lock);
out:
	for (i = 0; i < sc.n; i++) {
		free(sc.pick[i].name);
		free(sc.pick[i].etag);
	}
	free(dir);
}

/* Put chunk @index of @f in flight, in parts, unless it is cached or in
 * flight already: the reader that is about to need it joins this fetch,
 * and the prefetch threads take its parts before any queued chunk. */
static void start_own(struct vfs *v, struct vfs_file *f, uint64_t index)
{
	char name[CHUNK_NAME_LEN + 1];

	name_chunk(v, f->key, f->etag, index, name);
	pthread_mutex_lock(&v->lock);
	if (!inflight_find(v, name) && !cache_contains(v->cache, name))
		inflight_new(v, f->key, f->etag, index,
			     chunk_len_of(index, f->size, v->conf.chunk_size),
			     name, false);
	pthread_mutex_unlock(&v->lock);
}

/* Update @f's readahead window for a read of [off, end) and queue the
 * chunks it now covers. */
static void read_ahead(struct vfs *v, struct vfs_file *f, uint64_t off,
		       uint64_t end)
{
	uint64_t cs = v->conf.chunk_size, first, last, i, window;
	uint64_t n = chunk_count_of(f->size, cs);
	bool footer;

	if (v->conf.readahead == 0)
		return;
	pthread_mutex_lock(&f->lock);
	/* a columnar reader (Parquet, ORC, zip) opens at the footer and then
	 * jumps around the file: fetch all of it */
	footer = !f->read_once && off > 0 && n > 1 &&
		 chunk_index_of(end - 1, cs) == n - 1 &&
		 chunk_index_of(off, cs) > 0 && f->size <= RANDOM_WHOLE_MAX;
	f->read_once = true;
	if (footer)
		f->whole_end = chunk_index_of(off, cs);
	if (off + SEQ_SLACK >= f->next_off && off <= f->next_off + SEQ_SLACK) {
		/* one chunk after a first read, then x4: a cold reader has
		 * every prefetch thread busy by its third read */
		f->window = f->window ? f->window * 4 : cs;
		if (f->window > v->conf.readahead)
			f->window = v->conf.readahead;
	} else {
		f->window = 0;
		f->ra_next = 0;
		if (end - off <= RANDOM_READ_MAX)
			f->small_random++;
	}
	if (end > f->next_off || f->window == 0)
		f->next_off = end;
	/* the chunks this read touches are the reader's own to fetch: a
	 * prefetch of them would only hand its GET to a busy thread */
	first = chunk_index_of(end - 1, cs) + 1;
	if (f->ra_next > first)
		first = f->ra_next;
	last = f->window ? chunk_index_of(end + f->window - 1, cs) : 0;
	if (last >= chunk_count_of(f->size, cs))
		last = chunk_count_of(f->size, cs) - 1;
	if (f->window && first <= last)
		f->ra_next = last + 1;
	/* another read of this handle may change it once unlocked */
	window = f->window;
	pthread_mutex_unlock(&f->lock);
	if (footer)
		start_own(v, f, chunk_index_of(off, cs));
	for (i = first; window && i <= last && f->size; i++)
		prefetch(v, f, i);
	if (f->size)
		fetch_whole(v, f, !window);
	if (off == 0 && f->size && f->size <= SPEC_SMALL_MAX)
		speculate(v, f);
}

/* A read failed with 412: the object changed since @f was opened. */
static void stale(struct vfs *v, struct vfs_file *f)
{
	struct node *nd;

	STAT_ADD(v, stale, 1);
	log_warn("'%s' changed on s3 while open: reopen it to read the new "
		 "version",
		 f->key);
	meta_object_expire(v->meta, f->key);
	pthread_mutex_lock(&v->lock);
	nd = node_by_ino(v, f->ino);
	if (nd)
		nd->expires_ms = 0;
	pthread_mutex_unlock(&v->lock);
}

/* Read [off, off + len) of chunk @index of @f into @out. */
static int read_chunk(struct vfs *v, struct vfs_file *f, uint64_t index,
		      uint64_t off, char *out, size_t len)
{
	uint64_t clen = chunk_len_of(index, f->size, v->conf.chunk_size);
	char name[CHUNK_NAME_LEN + 1];
	unsigned tries = 0;
	size_t got = 0;
	ssize_t n;
	int rc;

	name_chunk(v, f->key, f->etag, index, name);
	do {
		n = cache_read(v->cache, name, off, out, len);
		if (n >= 0 && (size_t)n == len) {
			STAT_ADD(v, chunk_hits, 1);
			if (index < __atomic_load_n(&f->pf_lo,
						    __ATOMIC_RELAXED) ||
			    index >= __atomic_load_n(&f->pf_hi,
						     __ATOMIC_RELAXED))
				__atomic_fetch_add(&f->hits, 1,
						   __ATOMIC_RELAXED);
			return 0;
		}
		rc = get_chunk(v, f->key, f->etag, index, clen, name, off, out,
			       len, &got);
	} while (rc == -EAGAIN && ++tries < 3);
	if (rc == -EAGAIN || (rc == 0 && got != len))
		rc = -EIO;
	if (rc == 0)
		__atomic_fetch_add(&f->misses, 1, __ATOMIC_RELAXED);
	if (rc == -ESTALE)
		stale(v, f);
	return rc;
}

/*
 * O_DIRECT: bytes [off, end) of @f's version straight from S3, neither
 * read from nor put into the cache.
 */
static int read_direct(struct vfs *v, struct vfs_file *f, char *out,
		       uint64_t off, uint64_t end)
{
	struct s3_get_opts opts = {
		.offset = off,
		.length = end - off,
		.if_match = f->etag,
	};
	struct part_sink d = { .p = out, .cap = (size_t)(end - off) };
	int rc;

	rc = s3_get(v->s3, f->key, &opts, sink_part, &d, NULL);
	note_s3(v, rc);
	if (rc == 0 && d.len != d.cap)
		rc = -EIO;
	if (rc == 0) {
		STAT_ADD(v, direct_reads, 1);
		__atomic_fetch_add(&f->misses, 1, __ATOMIC_RELAXED);
	}
	if (rc == -ESTALE)
		stale(v, f);
	return rc;
}

ssize_t vfs_read(struct vfs *v, struct vfs_file *f, void *buf, size_t size,
		 uint64_t off)
{
	uint64_t cs = v->conf.chunk_size, end, pos;
	int rc = 0;

	STAT_ADD(v, reads, 1);
	if (f->wb) {
		ssize_t n = wb_read(v->wb, f->wb, buf, size, off);

		if (n > 0)
			STAT_ADD(v, bytes_read, (uint64_t)n);
		return n;
	}
	if (off >= f->size || size == 0)
		return 0;
	end = f->size - off < size ? f->size : off + size;
	if (f->flags & O_DIRECT) {
		rc = read_direct(v, f, buf, off, end);
		if (rc < 0)
			return rc == -ENOMEM ? rc : -EIO;
		STAT_ADD(v, bytes_read, end - off);
		return (ssize_t)(end - off);
	}
	read_ahead(v, f, off, end);
	for (pos = off; pos < end;) {
		uint64_t index = chunk_index_of(pos, cs);
		uint64_t in = pos - index * cs;
		uint64_t n = cs - in < end - pos ? cs - in : end - pos;

		rc = read_chunk(v, f, index, in, (char *)buf + (pos - off),
				(size_t)n);
		if (rc < 0)
			break;
		pos += n;
	}
	/* Never the bytes before a failed chunk alone: FUSE takes a short
	 * read for the end of the file, and the kernel then cuts the file's
	 * size there (the reader saw a truncated file, no error). */
	if (rc < 0)
		return rc == -ENOMEM ? rc : -EIO;
	STAT_ADD(v, bytes_read, pos - off);
	return (ssize_t)(pos - off);
}

void vfs_get_stats(struct vfs *v, struct vfs_stats *out)
{
	out->reads = __atomic_load_n(&v->stats.reads, __ATOMIC_RELAXED);
	out->bytes_read =
		__atomic_load_n(&v->stats.bytes_read, __ATOMIC_RELAXED);
	out->chunk_hits =
		__atomic_load_n(&v->stats.chunk_hits, __ATOMIC_RELAXED);
	out->chunk_fetches =
		__atomic_load_n(&v->stats.chunk_fetches, __ATOMIC_RELAXED);
	out->prefetches =
		__atomic_load_n(&v->stats.prefetches, __ATOMIC_RELAXED);
	out->stale = __atomic_load_n(&v->stats.stale, __ATOMIC_RELAXED);
	out->cache_bypass =
		__atomic_load_n(&v->stats.cache_bypass, __ATOMIC_RELAXED);
	out->written_behind =
		__atomic_load_n(&v->stats.written_behind, __ATOMIC_RELAXED);
	out->direct_reads =
		__atomic_load_n(&v->stats.direct_reads, __ATOMIC_RELAXED);
}

const char *vfs_served_name(enum vfs_served s)
{
	switch (s) {
	case VFS_SERVED_NONE:
		return "none";
	case VFS_SERVED_CACHE:
		return "cache";
	case VFS_SERVED_S3:
		return "s3";
	case VFS_SERVED_MIXED:
		return "mixed";
	case VFS_SERVED_DIRECT:
		return "direct";
	case VFS_SERVED_STAGED:
		return "staged";
	default:
		return "unknown";
	}
}

int vfs_cache_info(struct vfs *v, uint64_t ino, struct vfs_cache_info *out)
{
	char name[CHUNK_NAME_LEN + 1];
	struct wb_file *wf;
	struct node *n;
	char *key = NULL, *path = NULL;
	uint64_t i, cs = v->conf.chunk_size;
	int rc;

	memset(out, 0, sizeof(*out));
	rc = path_of(v, ino, 0, &path);
	if (rc < 0)
		return rc;
	key = key_of(v, path);
	free(path);
	if (!key)
		return -ENOMEM;
	pthread_mutex_lock(&v->lock);
	n = node_by_ino(v, ino);
	if (!n) {
		rc = -ENOENT;
	} else if (n->is_dir) {
		rc = -EISDIR;
	} else {
		out->size = n->size;
		out->last_open = n->served;
		if (n->etag && !(out->etag = strdup(n->etag)))
			rc = -ENOMEM;
	}
	pthread_mutex_unlock(&v->lock);
	if (rc == 0) {
		wf = wb_find(v->wb, key);
		if (wf) {
			/* an uploaded file stays in the table until its
			 * chunks are cached: staged means not uploaded */
			struct wb_stat ws;

			wb_stat(v->wb, wf, &ws);
			out->staged = ws.dirty;
			wb_put(v->wb, wf);
		}
	}
	if (rc == 0 && out->etag) {
		out->chunks = chunk_count_of(out->size, cs);
		for (i = 0; i < out->chunks; i++) {
			name_chunk(v, key, out->etag, i, name);
			if (!cache_contains(v->cache, name))
				continue;
			out->cached_chunks++;
			out->cached_bytes += chunk_len_of(i, out->size, cs);
		}
	}
	free(key);
	if (rc < 0) {
		free(out->etag);
		out->etag = NULL;
	}
	return rc;
}

/* ---- life cycle ---- */

static int copy_conf(struct vfs_conf *dst, const struct vfs_conf *src)
{
	*dst = *src;
	dst->endpoint = strdup(src->endpoint ? src->endpoint : "");
	dst->bucket = strdup(src->bucket ? src->bucket : "");
	dst->prefix = strdup(src->prefix ? src->prefix : "");
	if (!dst->endpoint || !dst->bucket || !dst->prefix)
		return -ENOMEM;
	return 0;
}

int vfs_new(const struct vfs_conf *conf, struct s3 *s, struct meta *m,
	    struct cache *c, struct vfs **out)
{
	struct vfs *v;
	struct node *root;
	size_t plen = conf->prefix ? strlen(conf->prefix) : 0;
	unsigned i;
	int rc;

	if (conf->chunk_size < CHUNK_SIZE_MIN ||
	    conf->chunk_size > CHUNK_SIZE_MAX || conf->prefetch == 0 ||
	    (plen && conf->prefix[plen - 1] != '/') || !conf->bucket)
		return -EINVAL;
	v = calloc(1, sizeof(*v));
	if (!v)
		return -ENOMEM;
	pthread_mutex_init(&v->lock, NULL);
	pthread_cond_init(&v->queue_cond, NULL);
	pthread_cond_init(&v->rename_cond, NULL);
	pthread_cond_init(&v->wq_cond, NULL);
	v->s3 = s;
	v->meta = m;
	v->cache = c;
	v->next_ino = VFS_ROOT_INO + 1;
	v->n_buckets = HASH_MIN;
	v->by_ino = calloc(v->n_buckets, sizeof(*v->by_ino));
	v->by_name = calloc(v->n_buckets, sizeof(*v->by_name));
	v->q_cap = (size_t)conf->prefetch * QUEUE_PER_THREAD;
	v->queue = calloc(v->q_cap, sizeof(*v->queue));
	v->threads = calloc(conf->prefetch, sizeof(*v->threads));
	root = calloc(1, sizeof(*root));
	rc = copy_conf(&v->conf, conf);
	if (rc < 0 || !v->by_ino || !v->by_name || !v->queue || !v->threads ||
	    !root || !(root->name = strdup("")) || !(root->path = strdup(""))) {
		node_free(root);
		vfs_free(v);
		return -ENOMEM;
	}
	for (i = 0; i < MEM_RING; i++)
		buf_init(&v->ring[i].data, CHUNK_SIZE_MAX);
	root->ino = VFS_ROOT_INO;
	root->parent = VFS_ROOT_INO;
	root->is_dir = true;
	root->nlookup = 1;
	v->started = time(NULL);
	root->mtime = v->started;
	link_node(v, root);
	v->n_nodes = 1;
	for (i = 0; i < conf->prefetch; i++) {
		if (pthread_create(&v->threads[i], NULL, prefetch_main, v)) {
			vfs_free(v);
			return -ENOMEM;
		}
		v->n_threads++;
	}
	if (pthread_create(&v->writer, NULL, writer_main, v)) {
		vfs_free(v);
		return -ENOMEM;
	}
	v->has_writer = true;
	{
		struct wb_conf wc = {
			.dir = conf->cache_dir,
			.endpoint = v->conf.endpoint,
			.bucket = v->conf.bucket,
			.chunk_size = conf->chunk_size,
			.part_size =
				conf->part_size ? conf->part_size : (16u << 20),
			.multipart_threshold =
				conf->multipart_threshold
					? conf->multipart_threshold
					: (64u << 20),
			.meta_ttl_ms = conf->meta_ttl_ms,
			.uploaders = conf->uploaders,
			.key = conf->key,
			.fill = fill_base,
			.done = on_uploaded,
			.ctx = v,
		};

		rc = wb_open(&wc, s, m, c, &v->wb);
		if (rc < 0) {
			vfs_free(v);
			return rc;
		}
	}
	*out = v;
	return 0;
}

void vfs_free(struct vfs *v)
{
	size_t i;

	if (!v)
		return;
	/* handles the kernel never released give their references back */
	pthread_mutex_lock(&v->lock);
	for (struct vfs_file *f = v->files; f; f = f->next) {
		if (f->wb) {
			wb_put(v->wb, f->wb);
			f->wb = NULL;
		}
	}
	pthread_mutex_unlock(&v->lock);
	/* pending uploads get one more try, with the read path still up */
	wb_close(v->wb);
	v->wb = NULL;
	pthread_mutex_lock(&v->lock);
	v->stopping = true;
	pthread_cond_broadcast(&v->queue_cond);
	pthread_mutex_unlock(&v->lock);
	for (i = 0; i < v->n_threads; i++)
		pthread_join(v->threads[i], NULL);
	/* after the fetchers: it writes what they handed it, then ends */
	pthread_mutex_lock(&v->lock);
	pthread_cond_signal(&v->wq_cond);
	pthread_mutex_unlock(&v->lock);
	if (v->has_writer)
		pthread_join(v->writer, NULL);
	pthread_mutex_lock(&v->lock);
	flush_touches_locked(v);
	pthread_mutex_unlock(&v->lock);
	free(v->spec_dir);
	free(v->spec_name);
	/* fetches no thread finished: no reader is left to wait on them */
	while (v->inflight) {
		struct inflight *fl = v->inflight;

		v->inflight = fl->next;
		inflight_free(fl);
	}
	for (i = 0; v->queue && i < v->q_len; i++) {
		free(v->queue[(v->q_head + i) % v->q_cap].key);
		free(v->queue[(v->q_head + i) % v->q_cap].etag);
	}
	/* handles first: releasing one looks at its node */
	while (v->files)
		vfs_release(v, v->files);
	while (v->dirs)
		vfs_releasedir(v, v->dirs);
	for (i = 0; v->by_ino && i < v->n_buckets; i++) {
		struct node *n = v->by_ino[i], *next;

		for (; n; n = next) {
			next = n->next_ino;
			node_free(n);
		}
	}
	for (i = 0; i < MEM_RING; i++)
		buf_release(&v->ring[i].data);
	free(v->by_ino);
	free(v->by_name);
	free(v->queue);
	free(v->threads);
	free((char *)v->conf.endpoint);
	free((char *)v->conf.bucket);
	free((char *)v->conf.prefix);
	pthread_cond_destroy(&v->queue_cond);
	pthread_cond_destroy(&v->rename_cond);
	pthread_cond_destroy(&v->wq_cond);
	for (i = 0; i < NOFLAT_SLOTS; i++)
		free(v->noflat[i].dir);
	pthread_mutex_destroy(&v->lock);
	free(v);
}

/* ---- changes: writes, names, attributes ---- */

/* The node at @path (below the prefix), or NULL.  Under v->lock. */
static struct node *node_by_path_locked(struct vfs *v, const char *path)
{
	struct node *n = node_by_ino(v, VFS_ROOT_INO);
	const char *p = path, *slash;
	char seg[VFS_NAME_MAX + 1];

	while (n && *p) {
		size_t len;

		slash = strchr(p, '/');
		len = slash ? (size_t)(slash - p) : strlen(p);
		if (len > VFS_NAME_MAX)
			return NULL;
		memcpy(seg, p, len);
		seg[len] = '\0';
		n = node_by_name(v, n->ino, seg);
		p += len;
		if (*p == '/')
			p++;
	}
	return n;
}

/* Take @n out of the name table: its name now means something else; the
 * kernel may still hold its number.  Under v->lock. */
static void node_detach_locked(struct vfs *v, struct node *n)
{
	struct node **p;

	if (n->ino == VFS_ROOT_INO)
		return;
	if (n->nlookup == 0) {
		unlink_node(v, n);
		node_free(n);
		return;
	}
	p = &v->by_name[hash_name(n->parent, n->name) & (v->n_buckets - 1)];
	while (*p && *p != n)
		p = &(*p)->next_name;
	if (*p)
		*p = n->next_name;
	n->parent = 0; /* never matches a name again */
	/* pushed on its new chain, which keeps the nodes already on it */
	p = &v->by_name[hash_name(0, n->name) & (v->n_buckets - 1)];
	n->next_name = *p;
	*p = n;
}

/* The path below the prefix of @key, or NULL when it is outside. */
static const char *path_of_key(const struct vfs *v, const char *key)
{
	size_t plen = strlen(v->conf.prefix);

	return strncmp(key, v->conf.prefix, plen) == 0 ? key + plen : NULL;
}

/* Upcall of the writeback: an upload finished; show its version. */
static void on_uploaded(void *ctx, const struct wb_result *r)
{
	struct vfs *v = ctx;
	const char *path = path_of_key(v, r->key);
	struct xattrs x = {
		.known = true,
		.mode = r->attrs.mode,
		.uid = r->attrs.uid,
		.gid = r->attrs.gid,
		.mtime = r->attrs.mtime,
	};
	struct node *n;

	if (!path)
		return;
	pthread_mutex_lock(&v->lock);
	n = node_by_path_locked(v, path);
	if (n && !n->is_dir && !n->replaced) {
		node_set_attrs(n, r->etag, r->size, r->mtime,
			       now_ms() + (int64_t)v->conf.meta_ttl_ms, &x);
		/* the kernel's pages came through this mount's writes */
		set_str(&n->opened_etag, r->etag);
	}
	v->names_gen++; /* the writeback stored the new version first */
	pthread_mutex_unlock(&v->lock);
}

static int read_chunk(struct vfs *v, struct vfs_file *f, uint64_t index,
		      uint64_t off, char *out, size_t len);

/* Upcall of the writeback: bytes of a base version, through the cache. */
static int fill_base(void *ctx, const char *key, const char *etag,
		     uint64_t size, uint64_t off, void *buf, size_t len)
{
	struct vfs *v = ctx;
	struct vfs_file f = {
		.key = (char *)key,
		.etag = (char *)etag,
		.size = size,
	};
	uint64_t cs = v->conf.chunk_size, pos, end = off + len;
	int rc = 0;

	if (end > size)
		return -EIO;
	for (pos = off; rc == 0 && pos < end;) {
		uint64_t index = chunk_index_of(pos, cs), in = pos - index * cs;
		uint64_t n = cs - in < end - pos ? cs - in : end - pos;

		rc = read_chunk(v, &f, index, in, (char *)buf + (pos - off),
				(size_t)n);
		pos += n;
	}
	return rc;
}

/* Show a staged file's size and attributes in @a. */
static void overlay_staged(const struct wb_stat *st, struct vfs_attr *a)
{
	a->size = st->size;
	if (st->attrs.mtime)
		a->mtime = st->attrs.mtime;
	if (st->attrs.mode)
		a->mode = S_IFREG | (st->attrs.mode & 07777);
	if (st->attrs.uid != UINT32_MAX)
		a->uid = st->attrs.uid;
	if (st->attrs.gid != UINT32_MAX)
		a->gid = st->attrs.gid;
}

/* When @key is staged, overlay its state on @a; true if it was. */
static bool staged_attr(struct vfs *v, const char *key, struct vfs_attr *a)
{
	struct wb_file *wf = wb_find(v->wb, key);
	struct wb_stat st;

	if (!wf)
		return false;
	wb_stat(v->wb, wf, &st);
	wb_put(v->wb, wf);
	overlay_staged(&st, a);
	return true;
}

/* Key of @name in directory @parent; *node_out (may be NULL) the parent's
 * path.  0, -ENOENT, -ENOTDIR, -ENOMEM, -ENAMETOOLONG. */
static int child_key(struct vfs *v, uint64_t parent, const char *name,
		     char **key, char **dir_key)
{
	char *path = NULL, *dir = NULL;
	size_t len = strlen(name);
	int rc;

	if (len > VFS_NAME_MAX)
		return -ENAMETOOLONG;
	if (!name_ok(name, len))
		return -EINVAL;
	rc = path_of(v, parent, 1, &path);
	if (rc < 0)
		return rc;
	dir = dir_prefix_of(v, path);
	free(path);
	if (!dir)
		return -ENOMEM;
	if (asprintf(key, "%s%s", dir, name) < 0) {
		free(dir);
		return -ENOMEM;
	}
	if (dir_key)
		*dir_key = dir;
	else
		free(dir);
	return 0;
}

/* Fill @out for @name in @parent after a change: a node with one more
 * lookup.  Under no lock. */
static int new_entry(struct vfs *v, uint64_t parent, const char *name,
		     bool is_dir, const char *etag, uint64_t size,
		     const struct xattrs *x, struct vfs_attr *out)
{
	struct node *p, *n;
	int rc = 0;

	pthread_mutex_lock(&v->lock);
	p = node_by_ino(v, parent);
	n = p ? node_get(v, p, name, is_dir) : NULL;
	if (!n) {
		rc = p ? -ENOMEM : -ENOENT;
	} else {
		if (!is_dir)
			node_set_attrs(n, etag, size, time(NULL),
				       now_ms() + (int64_t)v->conf.meta_ttl_ms,
				       x);
		else if (x)
			n->x = *x;
		n->nlookup++;
		fill_attr(v, n, out);
	}
	pthread_mutex_unlock(&v->lock);
	return rc;
}

static void xattrs_meta(const struct xattrs *x, struct wb_meta *out)
{
	struct wb_attrs a = {
		.mode = x->mode, .uid = x->uid, .gid = x->gid, .mtime = x->mtime
	};

	wb_attrs_meta(&a, out);
}

/* PUT a small object @key with @data and attributes @x. */
static int put_small(struct vfs *v, const char *key, const void *data,
		     size_t len, const struct xattrs *x,
		     const char *content_type, char **etag)
{
	struct wb_meta wm;
	struct s3_put_opts opts = { .content_type = content_type };
	struct s3_body body = { .data = data, .fd = -1, .len = len };
	int rc;

	xattrs_meta(x, &wm);
	opts.meta = wm.meta;
	opts.n_meta = wm.n;
	rc = s3_put(v->s3, key, &body, &opts, etag);
	note_s3(v, rc);
	return rc;
}

static int to_user_errno(int rc)
{
	if (rc >= 0)
		return rc;
	if (unavailable(rc) || rc == -EREMOTE || rc == -ESTALE)
		return -EIO;
	return rc;
}

int vfs_create(struct vfs *v, uint64_t parent, const char *name, uint32_t mode,
	       int flags, uint32_t uid, uint32_t gid, struct vfs_attr *out,
	       struct vfs_file **fout)
{
	struct wb_attrs wa = {
		.mode = S_IFREG | (mode & 07777),
		.uid = uid,
		.gid = gid,
		.mtime = time(NULL),
	};
	struct xattrs x = { .known = true,
			    .mode = wa.mode,
			    .uid = uid,
			    .gid = gid,
			    .mtime = wa.mtime };
	struct vfs_file *f = NULL;
	char *key = NULL;
	int rc;

	if (v->conf.ro)
		return -EROFS;
	rc = new_name_ok(name);
	if (rc < 0)
		return rc;
	rc = child_key(v, parent, name, &key, NULL);
	if (rc < 0)
		return rc == -EINVAL ? -EPERM : rc;
	f = calloc(1, sizeof(*f));
	if (!f) {
		rc = -ENOMEM;
		goto out;
	}
	pthread_mutex_init(&f->lock, NULL);
	f->key = key;
	key = NULL;
	f->flags = flags;
	rc = wb_stage(v->wb, f->key, NULL, 0, &wa, true, &f->wb);
	if (rc < 0)
		goto out;
	meta_negative_delete(v->meta, f->key);
	rc = new_entry(v, parent, name, false, NULL, 0, &x, out);
	if (rc < 0)
		goto out;
	f->ino = out->ino;
	pthread_mutex_lock(&v->lock);
	LIST_LINK(v->files, f);
	pthread_mutex_unlock(&v->lock);
	*fout = f;
	f = NULL;
out:
	if (f) {
		if (f->wb) {
			wb_discard(v->wb, f->wb);
			wb_put(v->wb, f->wb);
		}
		file_free(f);
	}
	free(key);
	return rc;
}

ssize_t vfs_write(struct vfs *v, struct vfs_file *f, const void *buf,
		  size_t size, uint64_t off)
{
	struct wb_stat st;

	if (!f->wb)
		return -EBADF;
	if (f->flags & O_APPEND) {
		wb_stat(v->wb, f->wb, &st);
		off = st.size;
	}
	return wb_write(v->wb, f->wb, buf, size, off);
}

int vfs_flush(struct vfs *v, struct vfs_file *f)
{
	if (!f->wb || v->conf.writeback_async)
		return 0;
	return to_user_errno(wb_flush(v->wb, f->wb));
}

int vfs_fsync(struct vfs *v, struct vfs_file *f)
{
	if (!f->wb)
		return 0;
	return to_user_errno(wb_flush(v->wb, f->wb));
}

/* The staged file of @key, staging it on the current version first. */
static int stage_existing(struct vfs *v, uint64_t ino, const char *key,
			  bool truncate, struct wb_file **out)
{
	struct wb_attrs wa = { .uid = UINT32_MAX, .gid = UINT32_MAX };
	char *etag = NULL;
	uint64_t size = 0;
	struct node *n;
	int rc;

	*out = wb_find(v->wb, key);
	if (*out) {
		rc = truncate ? wb_truncate(v->wb, *out, 0) : 0;
		if (rc < 0) {
			wb_put(v->wb, *out);
			*out = NULL;
		}
		return rc;
	}
	rc = revalidate(v, ino, key, false);
	if (rc < 0)
		return rc;
	pthread_mutex_lock(&v->lock);
	n = node_by_ino(v, ino);
	if (!n || !n->etag) {
		rc = -ENOENT;
	} else {
		size = n->size;
		if (!(etag = strdup(n->etag)))
			rc = -ENOMEM;
		if (n->x.known) {
			wa.mode = n->x.mode;
			wa.uid = n->x.uid;
			wa.gid = n->x.gid;
		}
	}
	pthread_mutex_unlock(&v->lock);
	if (rc == 0)
		rc = wb_stage(v->wb, key, etag, size, &wa, truncate, out);
	free(etag);
	return rc;
}

struct vfs_setattr {
	unsigned mask; /* VFS_SET_* */
	uint64_t size;
	struct wb_attrs a;
};
_Static_assert(VFS_SET_MODE == WB_SET_MODE && VFS_SET_UID == WB_SET_UID &&
		       VFS_SET_GID == WB_SET_GID &&
		       VFS_SET_MTIME == WB_SET_MTIME,
	       "vfs and writeback masks agree");

/* Rewrite the attributes of object @key in place (CopyObject onto itself
 * with new metadata).  Under no lock. */
static int copy_attrs(struct vfs *v, uint64_t ino, const char *key, bool is_dir,
		      const struct vfs_setattr *sa, struct xattrs *x_out)
{
	struct s3_object_info info = { 0 };
	struct wb_meta wm;
	struct s3_copy_opts opts = { .replace_meta = true };
	struct xattrs x;
	struct meta_object o = { 0 };
	char *etag = NULL, *dkey = NULL;
	int64_t t = now_ms();
	int rc;

	if (is_dir && asprintf(&dkey, "%s/", key) < 0)
		return -ENOMEM;
	rc = s3_head(v->s3, dkey ? dkey : key, &info);
	if (rc == -ENOENT && is_dir) {
		memset(&info, 0, sizeof(info));
		rc = 0; /* an implicit directory: give it a marker */
	}
	if (rc < 0)
		goto out;
	xattrs_from_info(&x, &info);
	if (!x.mode)
		x.mode = is_dir ? (S_IFDIR | 0755) : (S_IFREG | 0644);
	if (x.uid == UINT32_MAX)
		x.uid = v->conf.uid;
	if (x.gid == UINT32_MAX)
		x.gid = v->conf.gid;
	if (!x.mtime)
		x.mtime = info.mtime ? info.mtime : time(NULL);
	if (sa->mask & WB_SET_MODE)
		x.mode = (x.mode & S_IFMT) | (sa->a.mode & 07777);
	if (sa->mask & WB_SET_UID)
		x.uid = sa->a.uid;
	if (sa->mask & WB_SET_GID)
		x.gid = sa->a.gid;
	if (sa->mask & WB_SET_MTIME)
		x.mtime = sa->a.mtime;
	if (is_dir) {
		rc = put_small(v, dkey, "", 0, &x, "application/x-directory",
			       &etag);
		goto done;
	}
	xattrs_meta(&x, &wm);
	opts.meta = wm.meta;
	opts.n_meta = wm.n;
	opts.content_type = info.content_type;
	opts.if_match = info.etag;
	rc = s3_copy(v->s3, key, key, &opts, &etag);
	note_s3(v, rc);
	if (rc < 0)
		goto out;
	o.key = (char *)key;
	o.etag = etag;
	o.size = info.size;
	o.mtime = t / 1000;
	o.checked_ms = t;
	o.expires_ms = t + (int64_t)v->conf.meta_ttl_ms;
	xattrs_to_object(&o, &x);
	meta_object_put(v->meta, &o);
	changed(v);
	/* same bytes, new ETag: the cached chunks are of the old one */
	cache_drop_object(v->cache, key, etag);
	pthread_mutex_lock(&v->lock);
	{
		struct node *n = node_by_ino(v, ino);

		if (n)
			node_set_attrs(n, etag, info.size, o.mtime,
				       o.expires_ms, &x);
	}
	pthread_mutex_unlock(&v->lock);
done:
	if (rc == 0)
		*x_out = x;
out:
	s3_object_info_release(&info);
	free(etag);
	free(dkey);
	return rc;
}

int vfs_setattr(struct vfs *v, uint64_t ino, struct vfs_file *f, unsigned mask,
		uint64_t size, uint32_t mode, uint32_t uid, uint32_t gid,
		int64_t mtime, struct vfs_attr *out)
{
	struct vfs_setattr sa = {
		.mask = mask,
		.size = size,
		.a = { .mode = mode, .uid = uid, .gid = gid, .mtime = mtime },
	};
	struct wb_file *wf = NULL;
	struct xattrs x;
	bool is_dir = false, own;
	char *path = NULL, *key = NULL;
	struct node *n;
	int rc;

	if (v->conf.ro)
		return -EROFS;
	rc = path_of(v, ino, -1, &path);
	if (rc < 0)
		return rc;
	pthread_mutex_lock(&v->lock);
	n = node_by_ino(v, ino);
	is_dir = n && n->is_dir;
	pthread_mutex_unlock(&v->lock);
	if (is_dir && (mask & VFS_SET_SIZE)) {
		rc = -EISDIR;
		goto out;
	}
	if (is_dir && ino == VFS_ROOT_INO) {
		rc = -EPERM; /* the bucket itself has no attributes */
		goto out;
	}
	key = key_of(v, path);
	if (!key) {
		rc = -ENOMEM;
		goto out;
	}
	if (is_dir) {
		rc = copy_attrs(v, ino, key, true, &sa, &x);
		if (rc == 0) {
			pthread_mutex_lock(&v->lock);
			n = node_by_ino(v, ino);
			if (n)
				n->x = x;
			pthread_mutex_unlock(&v->lock);
		}
		goto out;
	}
	/* the handle's staged file is used in place, never taken from it:
	 * the handle's reads and writes run at the same time */
	own = !(f && f->wb);
	wf = own ? wb_find(v->wb, key) : f->wb;
	if (!wf && (mask & VFS_SET_SIZE))
		rc = stage_existing(v, ino, key, size == 0, &wf);
	if (rc == 0 && wf) {
		if (mask & VFS_SET_SIZE)
			rc = wb_truncate(v->wb, wf, size);
		if (rc == 0 && (mask & ~VFS_SET_SIZE))
			wb_set_attrs(v->wb, wf, &sa.a, mask & ~VFS_SET_SIZE);
		/* no close of this handle will send the change: send it now */
		if (rc == 0 && own)
			rc = wb_flush(v->wb, wf);
	} else if (rc == 0) {
		rc = copy_attrs(v, ino, key, false, &sa, &x);
	}
	if (own && wf)
		wb_put(v->wb, wf);
out:
	free(path);
	free(key);
	if (rc < 0)
		return to_user_errno(rc);
	return vfs_getattr(v, ino, out);
}

int vfs_unlink(struct vfs *v, uint64_t parent, const char *name)
{
	struct wb_file *wf;
	char *key = NULL, *dir = NULL;
	struct node *p, *n;
	int rc;

	if (v->conf.ro)
		return -EROFS;
	rc = child_key(v, parent, name, &key, &dir);
	if (rc < 0)
		return rc == -EINVAL ? -ENOENT : rc;
	wf = wb_find(v->wb, key);
	if (wf) {
		wb_discard(v->wb, wf);
		wb_put(v->wb, wf);
	}
	rc = s3_delete(v->s3, key);
	note_s3(v, rc);
	if (rc < 0 && rc != -ENOENT)
		goto out;
	rc = 0;
	meta_object_delete(v->meta, key);
	meta_entry_remove(v->meta, dir, name);
	meta_negative_put(v->meta, key,
			  now_ms() + (int64_t)v->conf.negative_ttl_ms);
	cache_drop_object(v->cache, key, NULL);
	pthread_mutex_lock(&v->lock);
	p = node_by_ino(v, parent);
	n = p ? node_by_name(v, p->ino, name) : NULL;
	if (n && !n->is_dir)
		node_detach_locked(v, n);
	v->names_gen++;
	pthread_mutex_unlock(&v->lock);
out:
	free(key);
	free(dir);
	return to_user_errno(rc);
}

int vfs_mkdir(struct vfs *v, uint64_t parent, const char *name, uint32_t mode,
	      uint32_t uid, uint32_t gid, struct vfs_attr *out)
{
	struct xattrs x = {
		.known = true,
		.mode = S_IFDIR | (mode & 07777),
		.uid = uid,
		.gid = gid,
		.mtime = time(NULL),
	};
	char *key = NULL, *dir = NULL, *marker = NULL, *etag = NULL;
	int64_t t = now_ms();
	int rc;

	if (v->conf.ro)
		return -EROFS;
	rc = new_name_ok(name);
	if (rc < 0)
		return rc;
	rc = child_key(v, parent, name, &key, &dir);
	if (rc < 0)
		return rc == -EINVAL ? -EPERM : rc;
	if (asprintf(&marker, "%s/", key) < 0) {
		marker = NULL;
		rc = -ENOMEM;
		goto out;
	}
	rc = put_small(v, marker, "", 0, &x, "application/x-directory", &etag);
	if (rc < 0)
		goto out;
	meta_negative_delete(v->meta, key);
	meta_entry_add(v->meta, dir, name, true);
	/* an empty listing, fresh: listing it costs no request */
	meta_listing_put(v->meta, marker, t, t + (int64_t)v->conf.meta_ttl_ms,
			 NULL, 0);
	changed(v);
	rc = new_entry(v, parent, name, true, NULL, 0, &x, out);
out:
	free(key);
	free(dir);
	free(marker);
	free(etag);
	return to_user_errno(rc);
}

static int note_staged(void *ctx, const char *key, const struct wb_stat *st)
{
	(void)key;
	(void)st;
	*(bool *)ctx = true;
	return 1;
}

/* -ENOTEMPTY when anything is below directory prefix @dir (its own marker
 * aside), staged files included; 0 when empty. */
static int dir_empty(struct vfs *v, const char *dir)
{
	struct s3_list_page page = { 0 };
	bool staged = false;
	size_t i;
	int rc;

	wb_each_under(v->wb, dir, note_staged, &staged);
	if (staged)
		return -ENOTEMPTY;
	rc = s3_list_page(v->s3, dir, "/", NULL, 2, &page);
	note_s3(v, rc);
	if (rc < 0)
		return rc;
	if (page.n_prefixes > 0)
		rc = -ENOTEMPTY;
	for (i = 0; i < page.n_entries; i++)
		if (strcmp(page.entries[i].key, dir) != 0)
			rc = -ENOTEMPTY;
	s3_list_page_release(&page);
	return rc;
}

int vfs_rmdir(struct vfs *v, uint64_t parent, const char *name)
{
	char *key = NULL, *dir = NULL, *marker = NULL;
	struct node *p, *n;
	int rc;

	if (v->conf.ro)
		return -EROFS;
	rc = child_key(v, parent, name, &key, &dir);
	if (rc < 0)
		return rc == -EINVAL ? -ENOENT : rc;
	if (asprintf(&marker, "%s/", key) < 0) {
		marker = NULL;
		rc = -ENOMEM;
		goto out;
	}
	rc = dir_empty(v, marker);
	if (rc < 0)
		goto out;
	rc = s3_delete(v->s3, marker);
	note_s3(v, rc);
	if (rc < 0 && rc != -ENOENT)
		goto out;
	rc = 0;
	meta_forget_prefix(v->meta, marker);
	meta_entry_remove(v->meta, dir, name);
	meta_negative_put(v->meta, key,
			  now_ms() + (int64_t)v->conf.negative_ttl_ms);
	pthread_mutex_lock(&v->lock);
	p = node_by_ino(v, parent);
	n = p ? node_by_name(v, p->ino, name) : NULL;
	if (n && n->is_dir)
		node_detach_locked(v, n);
	v->names_gen++;
	pthread_mutex_unlock(&v->lock);
out:
	free(key);
	free(dir);
	free(marker);
	return to_user_errno(rc);
}

int vfs_symlink(struct vfs *v, uint64_t parent, const char *name,
		const char *target, uint32_t uid, uint32_t gid,
		struct vfs_attr *out)
{
	struct xattrs x = {
		.known = true,
		.mode = S_IFLNK | 0777,
		.uid = uid,
		.gid = gid,
		.mtime = time(NULL),
	};
	struct meta_object o = { 0 };
	char *key = NULL, *dir = NULL, *etag = NULL;
	size_t len = strlen(target);
	int64_t t = now_ms();
	int rc;

	if (v->conf.ro)
		return -EROFS;
	if (len == 0 || len > SYMLINK_MAX)
		return len ? -ENAMETOOLONG : -ENOENT;
	rc = new_name_ok(name);
	if (rc < 0)
		return rc;
	rc = child_key(v, parent, name, &key, &dir);
	if (rc < 0)
		return rc == -EINVAL ? -EPERM : rc;
	rc = put_small(v, key, target, len, &x, NULL, &etag);
	if (rc < 0)
		goto out;
	o.key = key;
	o.etag = etag;
	o.size = len;
	o.mtime = t / 1000;
	o.checked_ms = t;
	o.expires_ms = t + (int64_t)v->conf.meta_ttl_ms;
	xattrs_to_object(&o, &x);
	meta_object_put(v->meta, &o);
	meta_entry_add(v->meta, dir, name, false);
	changed(v);
	rc = new_entry(v, parent, name, false, etag, len, &x, out);
out:
	free(key);
	free(dir);
	free(etag);
	return to_user_errno(rc);
}

int vfs_readlink(struct vfs *v, uint64_t ino, char *buf, size_t size)
{
	struct vfs_file f = { 0 };
	struct node *n;
	char *path = NULL;
	int rc;

	rc = path_of(v, ino, 0, &path);
	if (rc < 0)
		return rc == -EISDIR ? -EINVAL : rc;
	f.key = key_of(v, path);
	free(path);
	if (!f.key)
		return -ENOMEM;
	rc = revalidate(v, ino, f.key, false);
	pthread_mutex_lock(&v->lock);
	n = node_by_ino(v, ino);
	if (rc < 0) {
		/* keep rc */
	} else if (!n || !n->etag || !n->x.known || !S_ISLNK(n->x.mode) ||
		   n->size == 0 || n->size > SYMLINK_MAX) {
		rc = -EINVAL;
	} else {
		f.size = n->size;
		if (!(f.etag = strdup(n->etag)))
			rc = -ENOMEM;
	}
	pthread_mutex_unlock(&v->lock);
	if (rc == 0 && f.size >= size)
		rc = -ENAMETOOLONG;
	if (rc == 0)
		rc = fill_base(v, f.key, f.etag, f.size, 0, buf,
			       (size_t)f.size);
	if (rc == 0)
		buf[f.size] = '\0';
	free(f.key);
	free(f.etag);
	return to_user_errno(rc);
}

#define COPY_MAX (5ull << 30)	 /* CopyObject's limit */
#define COPY_PART (512ull << 20) /* parts of a larger copy */

/* Server-side copy of @src (@size bytes, @etag) to @dst, metadata kept:
 * one CopyObject, or a multipart copy above 5 GiB. */
static int copy_object(struct vfs *v, const char *src, const char *dst,
		       const char *etag, uint64_t size, char **etag_out)
{
	struct s3_copy_opts co = { .if_match = etag };
	struct s3_object_info info = { 0 };
	struct s3_put_opts po = { 0 };
	char **etags = NULL, *upload_id = NULL;
	unsigned n_parts, i;
	int rc;

	if (size <= COPY_MAX) {
		rc = s3_copy(v->s3, src, dst, &co, etag_out);
		note_s3(v, rc);
		return rc;
	}
	rc = s3_head(v->s3, src, &info);
	if (rc < 0)
		return rc;
	po.content_type = info.content_type;
	po.meta = info.meta;
	po.n_meta = info.n_meta;
	n_parts = (unsigned)((size + COPY_PART - 1) / COPY_PART);
	etags = calloc(n_parts, sizeof(*etags));
	if (!etags) {
		rc = -ENOMEM;
		goto out;
	}
	rc = s3_mpu_create(v->s3, dst, &po, &upload_id);
	for (i = 0; rc == 0 && i < n_parts; i++) {
		uint64_t a = (uint64_t)i * COPY_PART;
		uint64_t len = size - a < COPY_PART ? size - a : COPY_PART;

		rc = s3_mpu_copy_part(v->s3, dst, upload_id, i + 1, src, etag,
				      a, len, &etags[i]);
	}
	if (rc == 0)
		rc = s3_mpu_complete(v->s3, dst, upload_id, etags, n_parts,
				     etag_out);
	else if (upload_id)
		s3_mpu_abort(v->s3, dst, upload_id);
out:
	for (i = 0; etags && i < n_parts; i++)
		free(etags[i]);
	free(etags);
	free(upload_id);
	s3_object_info_release(&info);
	note_s3(v, rc);
	return rc;
}

/* Give node @n (under v->lock) the name @name in @parent, and fix the
 * paths of everything below it. */
static int node_move_locked(struct vfs *v, struct node *n, struct node *parent,
			    const char *name)
{
	char *old_path = n->path, *nm = strdup(name);
	char *np = join_path(parent->path, name);
	size_t olen = strlen(old_path), i;

	if (!nm || !np) {
		free(nm);
		free(np);
		return -ENOMEM;
	}
	unlink_node(v, n);
	free(n->name);
	n->name = nm;
	n->path = np;
	n->parent = parent->ino;
	link_node(v, n);
	v->n_nodes++;
	if (n->is_dir) {
		for (i = 0; i < v->n_buckets; i++) {
			struct node *c;

			for (c = v->by_ino[i]; c; c = c->next_ino) {
				char *p;

				if (c == n ||
				    strncmp(c->path, old_path, olen) ||
				    c->path[olen] != '/')
					continue;
				if (asprintf(&p, "%s%s", np, c->path + olen) <
				    0)
					continue;
				free(c->path);
				c->path = p;
			}
		}
	}
	free(old_path);
	return 0;
}

struct move_ctx {
	struct vfs *v;
	const char *src, *dst; /* prefixes ending in '/' */
	size_t src_len;
	int rc;
};

static int on_move_page(void *ctx, const struct s3_list_page *p)
{
	struct move_ctx *mc = ctx;
	size_t i;

	for (i = 0; i < p->n_entries; i++) {
		const struct s3_list_entry *e = &p->entries[i];
		char *to = NULL, *etag = NULL;
		int rc;

		if (asprintf(&to, "%s%s", mc->dst, e->key + mc->src_len) < 0)
			return -ENOMEM;
		rc = copy_object(mc->v, e->key, to, e->etag, e->size, &etag);
		if (rc == 0) {
			rc = s3_delete(mc->v->s3, e->key);
			note_s3(mc->v, rc);
		}
		cache_drop_object(mc->v->cache, e->key, NULL);
		free(to);
		free(etag);
		if (rc < 0) {
			log_warn("rename: moving '%s' failed: %s; the keys "
				 "moved so far stay moved",
				 e->key, strerror(-rc));
			return rc;
		}
	}
	return 0;
}

/* Move every key below prefix @src to prefix @dst (not atomic). */
static int move_tree(struct vfs *v, const char *src, const char *dst)
{
	struct move_ctx mc = {
		.v = v, .src = src, .dst = dst, .src_len = strlen(src)
	};
	int rc;

	rc = wb_flush_under(v->wb, src);
	if (rc < 0)
		return rc;
	/* a listing taken page by page while keys leave it: start over
	 * until nothing is left */
	do {
		bool any = false;

		rc = s3_list_all(v->s3, src, NULL, on_any, &any);
		note_s3(v, rc);
		if (rc < 0 || !any)
			break;
		rc = s3_list_all(v->s3, src, NULL, on_move_page, &mc);
	} while (rc == 0);
	return rc;
}

/* What @key is: 1 directory, 0 file (with etag and size), -ENOENT. */
static int kind_of(struct vfs *v, uint64_t parent, const char *name,
		   char **etag, uint64_t *size)
{
	struct vfs_attr a;
	struct node *n;
	int rc;

	rc = vfs_lookup(v, parent, name, &a);
	if (rc < 0)
		return rc;
	pthread_mutex_lock(&v->lock);
	n = node_by_ino(v, a.ino);
	if (n && !n->is_dir && etag && n->etag)
		*etag = strdup(n->etag);
	if (size)
		*size = a.size;
	pthread_mutex_unlock(&v->lock);
	vfs_forget(v, a.ino, 1);
	return a.is_dir ? 1 : 0;
}

/* Mark (or unmark) the node named @name in folder @parent, if any, as
 * being replaced by a rename; see struct node. */
static void mark_replaced(struct vfs *v, uint64_t parent, const char *name,
			  bool on)
{
	struct node *n;

	pthread_mutex_lock(&v->lock);
	n = node_by_name(v, parent, name);
	if (n)
		n->replaced = on;
	if (on)
		v->replace_gen++;
	if (!on)
		pthread_cond_broadcast(&v->rename_cond);
	pthread_mutex_unlock(&v->lock);
}

int vfs_rename(struct vfs *v, uint64_t parent, const char *name,
	       uint64_t newparent, const char *newname, unsigned flags)
{
	char *src = NULL, *dst = NULL, *sdir = NULL, *ddir = NULL;
	char *etag = NULL, *new_etag = NULL, *sp = NULL, *dp = NULL;
	struct wb_file *wf = NULL;
	uint64_t size = 0;
	struct node *p, *np, *n, *old;
	bool marked = false;
	int skind, dkind, rc;

	if (v->conf.ro)
		return -EROFS;
	if (flags & ~1u) /* RENAME_NOREPLACE only */
		return -EINVAL;
	rc = child_key(v, parent, name, &src, &sdir);
	if (rc == 0)
		rc = child_key(v, newparent, newname, &dst, &ddir);
	if (rc == 0)
		rc = new_name_ok(newname);
	if (rc < 0)
		goto out;
	skind = kind_of(v, parent, name, &etag, &size);
	if (skind < 0) {
		rc = skind;
		goto out;
	}
	dkind = kind_of(v, newparent, newname, NULL, NULL);
	if (dkind >= 0 && (flags & 1u)) {
		rc = -EEXIST;
		goto out;
	}
	if (dkind < 0 && dkind != -ENOENT) {
		rc = dkind;
		goto out;
	}
	if (strcmp(src, dst) == 0)
		goto out;
	if (skind == 0) {
		if (dkind == 1) {
			rc = -EISDIR;
			goto out;
		}
		/* dst holds the new file (uploaded or copied) before the
		 * nodes move below: readers of the file it replaces must not
		 * see the new version under the old node */
		mark_replaced(v, newparent, newname, true);
		marked = true;
		wf = wb_find(v->wb, src);
		if (wf) {
			rc = wb_rename(v->wb, wf, dst);
		} else {
			struct wb_file *dw = wb_find(v->wb, dst);

			if (dw) {
				wb_discard(v->wb, dw);
				wb_put(v->wb, dw);
			}
			rc = etag ? copy_object(v, src, dst, etag, size,
						&new_etag)
				  : -EIO;
		}
		if (rc == 0) {
			rc = s3_delete(v->s3, src);
			note_s3(v, rc);
			if (rc == -ENOENT)
				rc = 0;
		}
		if (rc < 0)
			goto out;
		if (new_etag) {
			struct meta_object o = { 0 };

			/* the copy carries the source's attributes */
			if (meta_object_get(v->meta, src, &o) == 0) {
				int64_t t = now_ms();

				free(o.key);
				o.key = strdup(dst);
				free(o.etag);
				o.etag = strdup(new_etag);
				o.checked_ms = t;
				o.expires_ms = t + (int64_t)v->conf.meta_ttl_ms;
				if (o.key && o.etag)
					meta_object_put(v->meta, &o);
			}
			meta_object_release(&o);
			meta_entry_add(v->meta, ddir, newname, false);
		}
		meta_object_delete(v->meta, src);
		cache_drop_object(v->cache, src, NULL);
		cache_drop_object(v->cache, dst, new_etag);
	} else {
		if (dkind == 0) {
			rc = -ENOTDIR;
			goto out;
		}
		if (asprintf(&sp, "%s/", src) < 0 ||
		    asprintf(&dp, "%s/", dst) < 0) {
			rc = -ENOMEM;
			goto out;
		}
		if (strncmp(dp, sp, strlen(sp)) == 0) {
			rc = -EINVAL; /* into itself */
			goto out;
		}
		if (dkind == 1) {
			rc = dir_empty(v, dp);
			if (rc < 0)
				goto out;
		}
		rc = move_tree(v, sp, dp);
		meta_forget_prefix(v->meta, sp);
		meta_forget_prefix(v->meta, dp);
		if (rc < 0)
			goto out;
		meta_entry_add(v->meta, ddir, newname, true);
	}
	meta_entry_remove(v->meta, sdir, name);
	meta_negative_put(v->meta, src,
			  now_ms() + (int64_t)v->conf.negative_ttl_ms);
	meta_negative_delete(v->meta, dst);
	pthread_mutex_lock(&v->lock);
	p = node_by_ino(v, parent);
	np = node_by_ino(v, newparent);
	n = p ? node_by_name(v, p->ino, name) : NULL;
	old = np ? node_by_name(v, np->ino, newname) : NULL;
	if (old && old->replaced) {
		old->replaced = false;
		pthread_cond_broadcast(&v->rename_cond);
	}
	if (old && old != n)
		node_detach_locked(v, old);
	if (n && np)
		node_move_locked(v, n, np, newname);
	if (n && !n->is_dir && new_etag) {
		set_str(&n->etag, new_etag);
		n->expires_ms = now_ms() + (int64_t)v->conf.meta_ttl_ms;
	}
	v->names_gen++;
	pthread_mutex_unlock(&v->lock);
out:
	if (marked) /* wakes opens of the node it replaced or kept */
		mark_replaced(v, newparent, newname, false);
	if (wf)
		wb_put(v->wb, wf);
	free(src);
	free(dst);
	free(sdir);
	free(ddir);
	free(etag);
	free(new_etag);
	free(sp);
	free(dp);
	return to_user_errno(rc);
}
