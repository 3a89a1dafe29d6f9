/*
 * writeback.c - staging files, uploads, and their resumption after a crash.
 *
 * struct wb_file is one staged key.  Its bytes are in the staging file for
 * the chunks whose bit is set in row.local; every other chunk reads as the
 * base version below row.base_size and as zeros above it.  A write first
 * makes each chunk it touches local (reserving its room in the cache and,
 * unless the write covers it, copying the base's bytes in), records the
 * bitmap in the store, and only then writes and returns.
 *
 * The row is created at the first change (write, truncate, attributes) or
 * at once for a new or truncated file, so an open that changes nothing
 * leaves nothing to resume.  gen counts changes, clean_gen is the gen the
 * bucket has: the file is dirty while they differ.
 *
 * Every access to a staging file goes through store/sealfile.h: sealed
 * ("ID.sealed") with the mount's key, plain ("ID") without; a sealed file
 * is uploaded from memory, since the S3 client reads bodies from plain
 * descriptors or memory only.  At start, check_staged() refuses a file
 * sealed under a key the mount does not have before anything is loaded.
 *
 * Locks: f->up serialises uploads of a file; f->io is taken for writing by
 * changes of the bytes (write, truncate, rename) and for reading by reads
 * and uploads, so an upload sends one consistent state; f->lock guards the
 * small fields (bitmap, sizes, gen) for the moments they are read or set;
 * w->lock guards the table of files and the references.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <dirent.h>

#include <openssl/crypto.h>

#include "s3cachefs/cache.h"
#include "s3cachefs/chunk.h"
#include "s3cachefs/fileio.h"
#include "s3cachefs/log.h"
#include "s3cachefs/meta.h"
#include "s3cachefs/s3.h"
#include "s3cachefs/sealfile.h"
#include "s3cachefs/writeback.h"

#define TABLE_SIZE 256
#define RETRY_MIN_MS 1000
#define PART_COPY_MIN (5ull << 20) /* S3's smallest part but the last */
#define MAX_PARTS 10000u
#define MAX_UPLOADERS 64u
/* a part is sent once the file holds this much past it, so that writes a
 * multithreaded FUSE loop hands over out of order land before it goes */
#define STREAM_SLACK (4ull << 20)
#define STREAM_INFLIGHT 4u /* parts of one file sent at once while written */

struct wb_file {
	struct wb_file *next; /* hash chain, w->lock */
	unsigned refs;	      /* w->lock */
	bool in_table;	      /* w->lock */
	pthread_mutex_t up;
	pthread_rwlock_t io;
	pthread_mutex_t lock;
	/* under lock: */
	struct meta_staged row; /* row.id 0: not stored yet */
	/* staging file, NULL until the first change; its bytes under f->io */
	struct seal_file *sf;
	/* the one before, when a discarded file was changed again: a reader
	 * may still use it, so it is closed with the file */
	struct seal_file *old_sf;
	uint64_t size;
	uint64_t gen, clean_gen;
	uint64_t reserved; /* bytes reserved in the cache */
	bool discarded;
	unsigned failures;
	int64_t retry_at_ms;
	/* parts sent while the file is still written, under lock */
	struct stream {
		char *upload_id; /* NULL until part 1's thread made it */
		char **etags;	 /* one per part started */
		unsigned cap;
		unsigned n_sent;       /* parts 1..n_sent started, in order */
		unsigned busy;	       /* parts' threads running (stream_cv) */
		bool broken;	       /* a change hit a sent part: not used */
		int rc;		       /* a part's failure */
		char *key;	       /* the key the upload is for */
		struct wb_attrs attrs; /* sent with the upload's creation */
	} st;
	pthread_cond_t stream_cv; /* with lock: st.busy went down */
	/* an upload's chunks still to copy into the cache, by a thread,
	 * under lock: due while cache_etag is set */
	char *cache_etag;
	uint64_t cache_gen, cache_size;
};

struct wb {
	struct wb_conf conf;
	char *staging;
	struct s3 *s3;
	struct meta *meta;
	struct cache *cache;
	pthread_mutex_t lock;
	pthread_cond_t wake;
	struct wb_file *table[TABLE_SIZE]; /* lock */
	bool stopping;			   /* lock */
	pthread_t threads[MAX_UPLOADERS];
	unsigned n_threads;
	struct wb_stats stats; /* atomics */
};

static void stream_more(struct wb *w, struct wb_file *f);
static void stream_drop(struct wb *w, struct wb_file *f);

#define STAT_ADD(w, field, n) \
	__atomic_fetch_add(&(w)->stats.field, (n), __ATOMIC_RELAXED)

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static size_t hash_key(const char *k)
{
	size_t h = 14695981039346656037ull;

	for (; *k; k++)
		h = (h ^ (unsigned char)*k) * 1099511628211ull;
	return h % TABLE_SIZE;
}

/* ---- the chunk bitmap (under f->lock) ---- */

static bool bit_get(const struct wb_file *f, uint64_t c)
{
	return c / 8 < f->row.local_len && (f->row.local[c / 8] >> (c % 8)) & 1;
}

static int bit_set(struct wb_file *f, uint64_t c)
{
	size_t need = (size_t)(c / 8 + 1);

	if (need > f->row.local_len) {
		uint8_t *p = realloc(f->row.local, need);

		if (!p)
			return -ENOMEM;
		memset(p + f->row.local_len, 0, need - f->row.local_len);
		f->row.local = p;
		f->row.local_len = need;
	}
	f->row.local[c / 8] |= (uint8_t)(1u << (c % 8));
	return 0;
}

static void bit_clear(struct wb_file *f, uint64_t c)
{
	if (c / 8 < f->row.local_len)
		f->row.local[c / 8] &= (uint8_t) ~(1u << (c % 8));
}

static uint64_t bits_count(const struct wb_file *f)
{
	uint64_t n = 0;
	size_t i;

	for (i = 0; i < f->row.local_len; i++)
		n += (uint64_t)__builtin_popcount(f->row.local[i]);
	return n;
}

/* True when chunk @c has bytes only the base holds (under f->lock). */
static bool needs_base(const struct wb *w, const struct wb_file *f, uint64_t c)
{
	return !bit_get(f, c) && f->row.base_etag &&
	       c * w->conf.chunk_size < f->row.base_size;
}

/* ---- files ---- */

/* The staging file of row @id: sealed with a key, plain without. */
static void staging_path_as(const struct wb *w, int64_t id, bool sealed,
			    char *out, size_t len)
{
	char name[32];

	seal_name(id, sealed, name, sizeof(name));
	snprintf(out, len, "%s/%s", w->staging, name);
}

static void staging_path(const struct wb *w, int64_t id, char *out, size_t len)
{
	staging_path_as(w, id, w->conf.key != NULL, out, len);
}

static struct wb_file *file_new(void)
{
	struct wb_file *f = calloc(1, sizeof(*f));

	if (!f)
		return NULL;
	pthread_mutex_init(&f->up, NULL);
	pthread_rwlock_init(&f->io, NULL);
	pthread_mutex_init(&f->lock, NULL);
	pthread_cond_init(&f->stream_cv, NULL);
	f->row.uid = f->row.gid = UINT32_MAX;
	return f;
}

static void file_free(struct wb_file *f)
{
	unsigned i;

	if (!f)
		return;
	/* a part's thread uses the staging descriptor until it is done */
	pthread_mutex_lock(&f->lock);
	while (f->st.busy)
		pthread_cond_wait(&f->stream_cv, &f->lock);
	pthread_mutex_unlock(&f->lock);
	for (i = 0; i < f->st.n_sent; i++)
		free(f->st.etags[i]);
	free(f->st.etags);
	free(f->st.upload_id);
	free(f->st.key);
	free(f->cache_etag);
	pthread_cond_destroy(&f->stream_cv);
	seal_close(f->sf);
	seal_close(f->old_sf);
	meta_staged_release(&f->row);
	pthread_mutex_destroy(&f->up);
	pthread_rwlock_destroy(&f->io);
	pthread_mutex_destroy(&f->lock);
	free(f);
}

/* Remove @f's staging file, row and reservation (f->lock held). */
static void drop_staging_locked(struct wb *w, struct wb_file *f)
{
	char path[PATH_MAX];

	if (f->row.id > 0) {
		meta_staged_delete(w->meta, f->row.id);
		staging_path(w, f->row.id, path, sizeof(path));
		if (unlink(path) < 0 && errno != ENOENT)
			log_warn("writeback: cannot remove '%s': %s", path,
				 strerror(errno));
		f->row.id = 0;
	}
	if (f->reserved) {
		cache_unreserve(w->cache, f->reserved);
		f->reserved = 0;
	}
}

static void table_remove_locked(struct wb *w, struct wb_file *f)
{
	struct wb_file **p;

	if (!f->in_table)
		return;
	for (p = &w->table[hash_key(f->row.key)]; *p; p = &(*p)->next) {
		if (*p == f) {
			*p = f->next;
			break;
		}
	}
	f->next = NULL;
	f->in_table = false;
	__atomic_fetch_sub(&w->stats.pending, 1, __ATOMIC_RELAXED);
}

static void table_add_locked(struct wb *w, struct wb_file *f)
{
	size_t h = hash_key(f->row.key);

	f->next = w->table[h];
	w->table[h] = f;
	f->in_table = true;
	STAT_ADD(w, pending, 1);
}

static struct wb_file *table_find_locked(struct wb *w, const char *key)
{
	struct wb_file *f;

	for (f = w->table[hash_key(key)]; f; f = f->next)
		if (strcmp(f->row.key, key) == 0)
			return f;
	return NULL;
}

/*
 * Make sure @f has a row and a staging file.  Under f->lock, and when
 * f->row.id is 0 also f->io held for writing: it replaces f->sf.
 */
static int ensure_stored_locked(struct wb *w, struct wb_file *f)
{
	struct seal_file *sf = NULL;
	char path[PATH_MAX];
	int rc;

	if (f->row.id > 0)
		return 0;
	f->row.created_ms = now_ms();
	rc = meta_staged_add(w->meta, &f->row);
	if (rc < 0) {
		log_error("writeback: cannot record '%s' as staged: %s",
			  f->row.key, strerror(-rc));
		return rc == -ENOMEM ? rc : -EIO;
	}
	staging_path(w, f->row.id, path, sizeof(path));
	rc = seal_create(path, w->conf.key, (uint64_t)f->row.id, &sf);
	if (rc == 0)
		rc = seal_truncate(sf, f->size);
	if (rc < 0) {
		log_error("writeback: cannot create staging file '%s': %s",
			  path, strerror(-rc));
		seal_close(sf);
		unlink(path);
		meta_staged_delete(w->meta, f->row.id);
		f->row.id = 0;
		return rc == -ENOSPC || rc == -ENOMEM ? rc : -EIO;
	}
	if (f->sf) {
		seal_close(f->old_sf);
		f->old_sf = f->sf;
	}
	f->sf = sf;
	return 0;
}

/* Store the row's current fields (under f->lock). */
static int save_locked(struct wb *w, struct wb_file *f)
{
	int rc = meta_staged_update(w->meta, &f->row);

	if (rc < 0) {
		log_error("writeback: cannot record changes of '%s': %s",
			  f->row.key, strerror(-rc));
		return rc == -ENOMEM ? rc : -EIO;
	}
	return 0;
}

/*
 * Copy the base's bytes of chunk @c into the staging file and mark it local
 * (its room reserved first).  f->io held; takes f->lock briefly.  Does not
 * save the row: the caller does, once for several chunks.
 */
static int make_local(struct wb *w, struct wb_file *f, uint64_t c, bool fill)
{
	uint64_t cs = w->conf.chunk_size, start = c * cs, end;
	char *base_etag = NULL;
	void *buf = NULL;
	int rc;

	rc = cache_reserve(w->cache, cs);
	if (rc < 0)
		return rc;
	pthread_mutex_lock(&f->lock);
	end = f->row.base_size < start + cs ? f->row.base_size : start + cs;
	if (fill && needs_base(w, f, c) && end > start &&
	    !(base_etag = strdup(f->row.base_etag)))
		rc = -ENOMEM;
	pthread_mutex_unlock(&f->lock);
	if (rc == 0 && base_etag) {
		buf = malloc((size_t)(end - start));
		if (!buf)
			rc = -ENOMEM;
		if (rc == 0)
			rc = w->conf.fill(w->conf.ctx, f->row.key, base_etag,
					  f->row.base_size, start, buf,
					  (size_t)(end - start));
		if (rc == 0)
			rc = seal_pwrite(f->sf, buf, (size_t)(end - start),
					 start);
	}
	pthread_mutex_lock(&f->lock);
	if (rc == 0 && !bit_get(f, c))
		rc = bit_set(f, c);
	else if (rc == 0)
		rc = 1; /* already local: give the reservation back */
	if (rc == 0)
		f->reserved += cs;
	pthread_mutex_unlock(&f->lock);
	if (rc != 0)
		cache_unreserve(w->cache, cs);
	if (buf)
		OPENSSL_cleanse(buf, (size_t)(end - start));
	free(buf);
	free(base_etag);
	return rc > 0 ? 0 : rc;
}

/* ---- public: finding and staging ---- */

struct wb_file *wb_find(struct wb *w, const char *key)
{
	struct wb_file *f;

	pthread_mutex_lock(&w->lock);
	f = table_find_locked(w, key);
	if (f)
		f->refs++;
	pthread_mutex_unlock(&w->lock);
	return f;
}

int wb_stage(struct wb *w, const char *key, const char *base_etag,
	     uint64_t base_size, const struct wb_attrs *attrs, bool truncate,
	     struct wb_file **out)
{
	struct wb_file *f, *nf;
	int rc = 0;

	nf = file_new();
	if (!nf || !(nf->row.key = strdup(key)) ||
	    (base_etag && !truncate &&
	     !(nf->row.base_etag = strdup(base_etag)))) {
		file_free(nf);
		return -ENOMEM;
	}
	if (!truncate && base_etag) {
		nf->row.base_size = base_size;
		nf->size = base_size;
	}
	if (attrs) {
		nf->row.mode = attrs->mode;
		nf->row.uid = attrs->uid;
		nf->row.gid = attrs->gid;
		nf->row.mtime = attrs->mtime;
	}
	pthread_mutex_lock(&w->lock);
	f = table_find_locked(w, key);
	if (f) {
		f->refs++;
		pthread_mutex_unlock(&w->lock);
		file_free(nf);
		if (truncate)
			rc = wb_truncate(w, f, 0);
		if (rc < 0) {
			wb_put(w, f);
			return rc;
		}
		*out = f;
		return 0;
	}
	nf->refs = 1;
	table_add_locked(w, nf);
	pthread_mutex_unlock(&w->lock);
	if (truncate || !base_etag) {
		/* a new or emptied file exists from now on, crash or not */
		pthread_rwlock_wrlock(&nf->io);
		pthread_mutex_lock(&nf->lock);
		rc = ensure_stored_locked(w, nf);
		nf->gen++;
		if (!nf->row.mtime)
			nf->row.mtime = time(NULL);
		pthread_mutex_unlock(&nf->lock);
		pthread_rwlock_unlock(&nf->io);
		if (rc < 0) {
			pthread_mutex_lock(&nf->lock);
			nf->discarded = true;
			pthread_mutex_unlock(&nf->lock);
			wb_put(w, nf);
			return rc;
		}
	}
	*out = nf;
	return 0;
}

void wb_put(struct wb *w, struct wb_file *f)
{
	bool gone = false;

	if (!f)
		return;
	pthread_mutex_lock(&w->lock);
	if (--f->refs == 0) {
		pthread_mutex_lock(&f->lock);
		if (f->discarded ||
		    (f->gen == f->clean_gen && !f->cache_etag)) {
			table_remove_locked(w, f);
			drop_staging_locked(w, f);
			gone = true;
		}
		pthread_mutex_unlock(&f->lock);
	}
	if (!gone && f->refs == 0)
		pthread_cond_signal(&w->wake); /* pending: for the thread */
	pthread_mutex_unlock(&w->lock);
	if (gone)
		file_free(f);
}

/* ---- bytes ---- */

ssize_t wb_read(struct wb *w, struct wb_file *f, void *buf, size_t size,
		uint64_t off)
{
	uint64_t cs = w->conf.chunk_size, end, pos;
	char *base_etag = NULL;
	ssize_t rc = 0;

	pthread_rwlock_rdlock(&f->io);
	pthread_mutex_lock(&f->lock);
	end = off >= f->size ? off
			     : (f->size - off < size ? f->size : off + size);
	if (f->row.base_etag && !(base_etag = strdup(f->row.base_etag)))
		rc = -ENOMEM;
	pthread_mutex_unlock(&f->lock);
	for (pos = off; rc == 0 && pos < end;) {
		uint64_t c = pos / cs,
			 stop = (c + 1) * cs < end ? (c + 1) * cs : end;
		uint64_t base_end = 0;
		bool from_base;

		pthread_mutex_lock(&f->lock);
		from_base = needs_base(w, f, c);
		if (from_base)
			base_end = f->row.base_size < stop ? f->row.base_size
							   : stop;
		pthread_mutex_unlock(&f->lock);
		if (from_base && pos < base_end) {
			rc = w->conf.fill(w->conf.ctx, f->row.key, base_etag,
					  f->row.base_size, pos,
					  (char *)buf + (pos - off),
					  (size_t)(base_end - pos));
			if (rc < 0)
				break;
			pos = base_end;
			continue;
		}
		if (!f->sf) {
			memset((char *)buf + (pos - off), 0,
			       (size_t)(stop - pos));
		} else {
			ssize_t n = seal_pread(f->sf, (char *)buf + (pos - off),
					       (size_t)(stop - pos), pos);

			if (n < 0) {
				rc = n;
				break;
			}
			/* a hole past the file's end on disk reads as zeros */
			if ((uint64_t)n < stop - pos)
				memset((char *)buf + (pos - off) + n, 0,
				       (size_t)(stop - pos - (uint64_t)n));
		}
		pos = stop;
	}
	pthread_rwlock_unlock(&f->io);
	free(base_etag);
	if (rc < 0) {
		log_debug("writeback: read of '%s' failed: %s", f->row.key,
			  strerror((int)-rc));
		return rc == -ENOMEM ? rc : -EIO;
	}
	return (ssize_t)(end - off);
}

ssize_t wb_write(struct wb *w, struct wb_file *f, const void *buf, size_t size,
		 uint64_t off)
{
	uint64_t cs = w->conf.chunk_size, end = off + size, c;
	bool changed_bits = false;
	int rc = 0;

	if (size == 0)
		return 0;
	if (off > (1ull << 50) || end > (1ull << 50))
		return -EFBIG;
	pthread_rwlock_wrlock(&f->io);
	pthread_mutex_lock(&f->lock);
	rc = ensure_stored_locked(w, f);
	pthread_mutex_unlock(&f->lock);
	for (c = off / cs; rc == 0 && c <= (end - 1) / cs; c++) {
		uint64_t start = c * cs, base_end;
		bool local, covered;

		pthread_mutex_lock(&f->lock);
		local = bit_get(f, c);
		base_end = f->row.base_size < start + cs ? f->row.base_size
							 : start + cs;
		pthread_mutex_unlock(&f->lock);
		if (local)
			continue;
		/* the write covers what the base has of this chunk */
		covered = off <= start && end >= base_end;
		rc = make_local(w, f, c, !covered);
		changed_bits = changed_bits || rc == 0;
	}
	pthread_mutex_lock(&f->lock);
	if (rc == 0 && changed_bits)
		rc = save_locked(w, f);
	pthread_mutex_unlock(&f->lock);
	if (rc == 0)
		rc = seal_pwrite(f->sf, buf, size, off);
	pthread_mutex_lock(&f->lock);
	if (rc == 0) {
		if (end > f->size)
			f->size = end;
		f->gen++;
		f->row.mtime = time(NULL);
		if (off < (uint64_t)f->st.n_sent * w->conf.part_size)
			f->st.broken = true;
	}
	pthread_mutex_unlock(&f->lock);
	pthread_rwlock_unlock(&f->io);
	if (rc == 0)
		stream_more(w, f);
	if (rc < 0) {
		log_debug("writeback: write to '%s' failed: %s", f->row.key,
			  strerror(-rc));
		return rc == -ENOSPC || rc == -ENOMEM || rc == -EDQUOT ? rc
								       : -EIO;
	}
	return (ssize_t)size;
}

int wb_truncate(struct wb *w, struct wb_file *f, uint64_t size)
{
	uint64_t cs = w->conf.chunk_size, c, n_chunks;
	int rc;

	pthread_rwlock_wrlock(&f->io);
	pthread_mutex_lock(&f->lock);
	rc = ensure_stored_locked(w, f);
	if (rc == 0)
		rc = seal_truncate(f->sf, size);
	if (rc == 0) {
		n_chunks = (size + cs - 1) / cs;
		for (c = n_chunks; c < f->row.local_len * 8ull; c++) {
			if (bit_get(f, c)) {
				bit_clear(f, c);
				cache_unreserve(w->cache, cs);
				f->reserved -= cs;
			}
		}
		if (size < f->row.base_size)
			f->row.base_size = size;
		if (size < (uint64_t)f->st.n_sent * w->conf.part_size)
			f->st.broken = true;
		f->size = size;
		f->gen++;
		f->row.mtime = time(NULL);
		rc = save_locked(w, f);
	}
	pthread_mutex_unlock(&f->lock);
	pthread_rwlock_unlock(&f->io);
	if (rc < 0)
		log_warn("writeback: truncate of '%s' failed: %s", f->row.key,
			 strerror(-rc));
	return rc;
}

void wb_set_attrs(struct wb *w, struct wb_file *f, const struct wb_attrs *a,
		  unsigned mask)
{
	bool io = false;

	pthread_mutex_lock(&f->lock);
	if (f->row.id <= 0) {
		/* the row and staging file are made below, and readers use
		 * f->sf under f->io only: hold it (it comes before f->lock) */
		pthread_mutex_unlock(&f->lock);
		pthread_rwlock_wrlock(&f->io);
		io = true;
		pthread_mutex_lock(&f->lock);
	}
	if (mask & WB_SET_MODE)
		f->row.mode = a->mode;
	if (mask & WB_SET_UID)
		f->row.uid = a->uid;
	if (mask & WB_SET_GID)
		f->row.gid = a->gid;
	if (mask & WB_SET_MTIME)
		f->row.mtime = a->mtime;
	if (f->st.n_sent)
		f->st.broken = true; /* the upload was made with the old ones */
	f->gen++;
	if (ensure_stored_locked(w, f) == 0)
		save_locked(w, f);
	pthread_mutex_unlock(&f->lock);
	if (io)
		pthread_rwlock_unlock(&f->io);
}

void wb_stat(struct wb *w, struct wb_file *f, struct wb_stat *out)
{
	(void)w;
	pthread_mutex_lock(&f->lock);
	out->size = f->size;
	out->attrs.mode = f->row.mode;
	out->attrs.uid = f->row.uid;
	out->attrs.gid = f->row.gid;
	out->attrs.mtime = f->row.mtime;
	out->dirty = f->gen != f->clean_gen;
	pthread_mutex_unlock(&f->lock);
}

void wb_discard(struct wb *w, struct wb_file *f)
{
	/* an upload in flight ends first, so the caller's DELETE comes after
	 * it and nothing it sent resurrects the key */
	pthread_mutex_lock(&f->up);
	pthread_mutex_lock(&w->lock);
	pthread_mutex_lock(&f->lock);
	f->discarded = true;
	table_remove_locked(w, f);
	/* the open descriptor keeps the bytes readable until the last put */
	drop_staging_locked(w, f);
	pthread_mutex_unlock(&f->lock);
	pthread_mutex_unlock(&w->lock);
	stream_drop(w, f);
	pthread_mutex_unlock(&f->up);
}

/* ---- upload ---- */

/* Make every chunk below @end that still needs the base local (f->io
 * held), then save the row. */
static int materialize(struct wb *w, struct wb_file *f, uint64_t from,
		       uint64_t end)
{
	uint64_t cs = w->conf.chunk_size, c;
	bool changed = false;
	int rc = 0;

	for (c = from / cs; rc == 0 && c * cs < end; c++) {
		bool need;

		pthread_mutex_lock(&f->lock);
		need = needs_base(w, f, c);
		pthread_mutex_unlock(&f->lock);
		if (need) {
			rc = make_local(w, f, c, true);
			changed = changed || rc == 0;
		}
	}
	if (changed) {
		pthread_mutex_lock(&f->lock);
		int src = save_locked(w, f);

		pthread_mutex_unlock(&f->lock);
		if (rc == 0)
			rc = src;
	}
	return rc;
}

void wb_attrs_meta(const struct wb_attrs *a, struct wb_meta *out)
{
	static const char *const names[4] = { "mode", "uid", "gid", "mtime" };
	const long long v[4] = { a->mode, a->uid, a->gid, (long long)a->mtime };
	size_t i;

	for (i = 0; i < 4; i++) {
		snprintf(out->val[i], sizeof(out->val[i]), "%lld", v[i]);
		out->meta[i].name = (char *)names[i];
		out->meta[i].value = out->val[i];
	}
	out->n = 4;
}

/* Record the multipart upload in progress (under f->lock). */
static int set_upload_id(struct wb_file *f, const char *id)
{
	char *c = NULL;

	if (id && !(c = strdup(id)))
		return -ENOMEM;
	free(f->row.upload_id);
	f->row.upload_id = c;
	return 0;
}

struct snapshot {
	char *key;
	char *base_etag;
	uint64_t base_size;
	uint64_t size;
	uint64_t gen;
	struct wb_attrs attrs;
};

/* ---- parts sent while the file is written ---- */

/*
 * A new file written from its start is sent part by part while it grows:
 * once it is bigger than multipart_threshold (so that it is a multipart
 * upload anyway: completing one costs the server a copy of the object,
 * which a single PUT does not) and holds a whole part (part_size) and
 * STREAM_SLACK beyond the parts already sent, the next part goes out on
 * a thread of its own, STREAM_INFLIGHT at most at once per file, read
 * from the plain staging file (never sealed ones); part 1's thread makes
 * the upload, the others start once its id is known.
 * upload() then sends only the rest, in parallel, and completes.  A write,
 * truncate, rename or attribute change that touches what was sent marks
 * the stream broken: it is aborted and the file uploaded the usual way.
 * The upload id is in the staged row, so a crash's leftover is aborted at
 * the next start.  The object's x-amz-meta-mtime is then the file's mtime
 * when the first part went (the upload's creation carries it), earlier
 * than the last write by at most the time the rest took to write.
 */
struct stream_job {
	struct wb *w;
	struct wb_file *f;
	char *key;
	unsigned idx;
	uint64_t off, len;
	int fd;
};

/* The attributes an upload of @f carries now (under f->lock). */
static void attrs_now_locked(const struct wb_file *f, struct wb_attrs *a)
{
	a->mode = f->row.mode ? f->row.mode : (S_IFREG | 0644);
	a->uid = f->row.uid != UINT32_MAX ? f->row.uid : getuid();
	a->gid = f->row.gid != UINT32_MAX ? f->row.gid : getgid();
	a->mtime = f->row.mtime ? f->row.mtime : time(NULL);
}

static void *stream_main(void *arg)
{
	struct stream_job *j = arg;
	struct wb *w = j->w;
	struct wb_file *f = j->f;
	struct s3_body body = { .fd = j->fd, .off = j->off, .len = j->len };
	struct wb_attrs attrs;
	char *id = NULL, *etag = NULL;
	int rc = 0;

	pthread_mutex_lock(&f->lock);
	if (f->st.upload_id && !(id = strdup(f->st.upload_id)))
		rc = -ENOMEM;
	attrs = f->st.attrs;
	pthread_mutex_unlock(&f->lock);
	if (rc == 0 && !id) {
		struct s3_put_opts opts = { 0 };
		struct wb_meta wm;

		wb_attrs_meta(&attrs, &wm);
		opts.meta = wm.meta;
		opts.n_meta = wm.n;
		rc = s3_mpu_create(w->s3, j->key, &opts, &id);
		pthread_mutex_lock(&f->lock);
		if (rc == 0 && !(f->st.upload_id = strdup(id)))
			rc = -ENOMEM;
		/* recorded, so that a crash's leftover is aborted */
		if (rc == 0 && f->row.id > 0 && set_upload_id(f, id) == 0)
			save_locked(w, f);
		pthread_mutex_unlock(&f->lock);
		if (rc == -ENOMEM && id)
			s3_mpu_abort(w->s3, j->key, id);
	}
	if (rc == 0)
		rc = s3_mpu_put_part(w->s3, j->key, id, j->idx + 1, &body,
				     &etag);
	pthread_mutex_lock(&f->lock);
	if (rc == 0) {
		f->st.etags[j->idx] = etag;
		etag = NULL;
	} else {
		f->st.rc = rc;
	}
	f->st.busy--;
	pthread_cond_broadcast(&f->stream_cv);
	/* f may be freed once this unlock lets a waiter in: no more use */
	pthread_mutex_unlock(&f->lock);
	free(id);
	free(etag);
	free(j->key);
	free(j);
	return NULL;
}

/* Start the next part of @f when it is ready; false when none was. */
static bool stream_one_locked(struct wb *w, struct wb_file *f)
{
	uint64_t part = w->conf.part_size, start;
	struct stream_job *j = NULL;
	pthread_attr_t attr;
	pthread_t t;
	bool started = false;
	int fd;

	fd = f->sf ? seal_plain_fd(f->sf) : -1;
	start = (uint64_t)f->st.n_sent * part;
	/* part 1's thread creates the upload: the others wait for its id */
	if (f->st.busy >= STREAM_INFLIGHT ||
	    (f->st.n_sent > 0 && !f->st.upload_id) || f->st.broken ||
	    f->st.rc || f->discarded || f->row.base_etag || fd < 0 ||
	    f->size < start + part + STREAM_SLACK ||
	    f->size <= w->conf.multipart_threshold + STREAM_SLACK)
		return false;
	if (f->st.n_sent + 1 >= MAX_PARTS) {
		f->st.broken = true;
		return false;
	}
	if (f->st.n_sent == f->st.cap) {
		unsigned cap = f->st.cap ? f->st.cap * 2 : 16;
		char **v = realloc(f->st.etags, cap * sizeof(*v));

		if (!v)
			return false;
		f->st.etags = v;
		f->st.cap = cap;
	}
	if (!f->st.key && !(f->st.key = strdup(f->row.key)))
		return false;
	j = calloc(1, sizeof(*j));
	if (!j || !(j->key = strdup(f->st.key))) {
		free(j);
		return false;
	}
	if (f->st.n_sent == 0)
		attrs_now_locked(f, &f->st.attrs);
	j->w = w;
	j->f = f;
	j->idx = f->st.n_sent;
	j->off = start;
	j->len = part;
	j->fd = fd;
	f->st.etags[j->idx] = NULL;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	if (pthread_create(&t, &attr, stream_main, j) == 0) {
		f->st.n_sent++;
		f->st.busy++;
		started = true;
		j = NULL;
	}
	pthread_attr_destroy(&attr);
	if (j)
		free(j->key);
	free(j);
	return started;
}

/* Start the parts of @f that are ready, STREAM_INFLIGHT at most at once. */
static void stream_more(struct wb *w, struct wb_file *f)
{
	pthread_mutex_lock(&f->lock);
	while (stream_one_locked(w, f))
		;
	pthread_mutex_unlock(&f->lock);
}

/* Take @f's stream out of it, once no part's thread runs. */
static void stream_take(struct wb_file *f, struct stream *out)
{
	pthread_mutex_lock(&f->lock);
	while (f->st.busy)
		pthread_cond_wait(&f->stream_cv, &f->lock);
	*out = f->st;
	memset(&f->st, 0, sizeof(f->st));
	pthread_mutex_unlock(&f->lock);
}

/* Abort (when @abort) and free a stream taken out of its file. */
static void stream_free(struct wb *w, struct stream *st, unsigned n_etags,
			bool abort)
{
	unsigned i;

	if (abort && st->upload_id)
		s3_mpu_abort(w->s3, st->key, st->upload_id);
	for (i = 0; i < n_etags; i++)
		free(st->etags[i]);
	free(st->etags);
	free(st->upload_id);
	free(st->key);
}

static void stream_drop(struct wb *w, struct wb_file *f)
{
	struct stream st;

	stream_take(f, &st);
	stream_free(w, &st, st.n_sent, true);
}

/*
 * Send what @f has past its streamed parts and complete the upload.  0
 * with *etag; 1 when there is no usable stream (a started one is aborted):
 * the caller uploads the usual way.  f->up and f->io (read) held.
 */
static int stream_finish(struct wb *w, struct wb_file *f, struct snapshot *sn,
			 char **etag)
{
	uint64_t part = w->conf.part_size, sent, rest = 0;
	struct stream st;
	unsigned n = 0;
	bool usable;
	int rc = 1, fd;

	stream_take(f, &st);
	if (!st.upload_id) {
		stream_free(w, &st, st.n_sent, false);
		return 1;
	}
	pthread_mutex_lock(&f->lock);
	fd = f->sf ? seal_plain_fd(f->sf) : -1;
	pthread_mutex_unlock(&f->lock);
	sent = (uint64_t)st.n_sent * part;
	usable = !st.broken && st.rc == 0 && fd >= 0 && !sn->base_etag &&
		 strcmp(st.key, sn->key) == 0 && sn->size >= sent &&
		 sn->attrs.mode == st.attrs.mode &&
		 sn->attrs.uid == st.attrs.uid &&
		 sn->attrs.gid == st.attrs.gid &&
		 sn->attrs.mtime >= st.attrs.mtime;
	if (usable) {
		rest = sn->size - sent;
		n = st.n_sent + (unsigned)((rest + part - 1) / part);
		if (n <= MAX_PARTS) {
			char **v = realloc(st.etags, n * sizeof(*v));

			if (v) {
				st.etags = v;
				memset(v + st.n_sent, 0,
				       (n - st.n_sent) * sizeof(*v));
				rc = 0;
			}
		}
	}
	if (rc == 0)
		rc = s3_mpu_put_fd_parts(w->s3, sn->key, st.upload_id, fd, sent,
					 rest, part, st.n_sent + 1,
					 st.etags + st.n_sent);
	if (rc == 0)
		rc = s3_mpu_complete(w->s3, sn->key, st.upload_id, st.etags, n,
				     etag);
	if (rc == 0) {
		sn->attrs.mtime = st.attrs.mtime; /* what the object carries */
		log_debug("writeback: '%s' streamed: %u of %u parts sent "
			  "while written",
			  sn->key, st.n_sent, n);
	} else if (rc < 0) {
		log_info("writeback: parts of '%s' sent while written are "
			 "dropped: %s",
			 sn->key, strerror(-rc));
		rc = 1;
	}
	pthread_mutex_lock(&f->lock);
	if (set_upload_id(f, NULL) == 0 && f->row.id > 0)
		save_locked(w, f);
	pthread_mutex_unlock(&f->lock);
	stream_free(w, &st, n > st.n_sent ? n : st.n_sent, rc != 0);
	return rc;
}

/*
 * The body of bytes [a, b) of @f: the plain staging file itself, or, when
 * sealed, those bytes decrypted into *mem (grown as needed; the caller
 * wipes and frees it).  f->io held.
 */
static int staged_body(struct wb_file *f, uint64_t a, uint64_t b,
		       unsigned char **mem, size_t *mem_len,
		       struct s3_body *body)
{
	size_t n = (size_t)(b - a);
	ssize_t got;

	memset(body, 0, sizeof(*body));
	body->fd = seal_plain_fd(f->sf);
	body->off = a;
	body->len = b - a;
	if (body->fd >= 0)
		return 0;
	if (n > *mem_len || !*mem) {
		unsigned char *p = malloc(n ? n : 1);

		if (!p)
			return -ENOMEM;
		if (*mem) {
			OPENSSL_cleanse(*mem, *mem_len);
			free(*mem);
		}
		*mem = p;
		*mem_len = n;
	}
	got = seal_pread(f->sf, *mem, n, a);
	if (got < 0)
		return (int)got;
	/* the size was snapshot under f->io: it cannot have shrunk */
	if ((size_t)got != n)
		return -EIO;
	body->data = *mem;
	body->off = 0;
	return 0;
}

static void wipe_free(unsigned char *p, size_t n)
{
	if (p)
		OPENSSL_cleanse(p, n);
	free(p);
}

/*
 * Multipart upload that copies the parts the file took unchanged from its
 * base and sends the others, one after the other.  Also how a sealed file
 * above the threshold is sent (its parts decrypted into memory one at a
 * time).  f->up and f->io (read) held.
 */
static int upload_with_copies(struct wb *w, struct wb_file *f,
			      const struct snapshot *sn,
			      const struct s3_put_opts *opts, char **etag)
{
	uint64_t cs = w->conf.chunk_size, part, a, b, c;
	char **etags = NULL, *upload_id = NULL;
	unsigned char *mem = NULL;
	size_t mem_len = 0;
	unsigned n_parts, i;
	int rc;

	part = (w->conf.part_size + cs - 1) / cs * cs;
	while ((sn->size + part - 1) / part > MAX_PARTS)
		part *= 2;
	n_parts = (unsigned)((sn->size + part - 1) / part);
	etags = calloc(n_parts, sizeof(*etags));
	if (!etags)
		return -ENOMEM;
	rc = s3_mpu_create(w->s3, sn->key, opts, &upload_id);
	if (rc < 0)
		goto out;
	pthread_mutex_lock(&f->lock);
	if (set_upload_id(f, upload_id) == 0)
		save_locked(w, f);
	pthread_mutex_unlock(&f->lock);
	for (i = 0; rc == 0 && i < n_parts; i++) {
		bool copy = true;

		a = (uint64_t)i * part;
		b = a + part < sn->size ? a + part : sn->size;
		if (b > sn->base_size ||
		    (b - a < PART_COPY_MIN && i + 1 < n_parts))
			copy = false;
		pthread_mutex_lock(&f->lock);
		for (c = a / cs; copy && c * cs < b; c++)
			if (!needs_base(w, f, c))
				copy = false;
		pthread_mutex_unlock(&f->lock);
		if (copy) {
			rc = s3_mpu_copy_part(w->s3, sn->key, upload_id, i + 1,
					      sn->key, sn->base_etag, a, b - a,
					      &etags[i]);
			if (rc == 0)
				STAT_ADD(w, parts_copied, 1);
		} else {
			struct s3_body body;

			rc = materialize(w, f, a, b);
			if (rc == 0)
				rc = staged_body(f, a, b, &mem, &mem_len,
						 &body);
			if (rc == 0)
				rc = s3_mpu_put_part(w->s3, sn->key, upload_id,
						     i + 1, &body, &etags[i]);
		}
	}
	if (rc == 0)
		rc = s3_mpu_complete(w->s3, sn->key, upload_id, etags, n_parts,
				     etag);
	if (rc < 0)
		s3_mpu_abort(w->s3, sn->key, upload_id);
	pthread_mutex_lock(&f->lock);
	if (set_upload_id(f, NULL) == 0)
		save_locked(w, f);
	pthread_mutex_unlock(&f->lock);
out:
	for (i = 0; i < n_parts; i++)
		free(etags[i]);
	free(etags);
	free(upload_id);
	wipe_free(mem, mem_len);
	return rc;
}

/* One PUT of a sealed file, decrypted into memory (at most the threshold). */
static int put_sealed(struct wb *w, struct wb_file *f,
		      const struct snapshot *sn, const struct s3_put_opts *opts,
		      char **etag)
{
	unsigned char *mem = NULL;
	size_t mem_len = 0;
	struct s3_body body;
	int rc;

	rc = staged_body(f, 0, sn->size, &mem, &mem_len, &body);
	if (rc == 0)
		rc = s3_put(w->s3, sn->key, &body, opts, etag);
	wipe_free(mem, mem_len);
	return rc;
}

/*
 * Put the chunks of the uploaded version that the staging file holds into
 * the cache under its new ETag, so reading back is a cache hit.  f->io held
 * (read).  Best effort: a chunk that does not fit is fetched when read.
 */
static void cache_uploaded(struct wb *w, struct wb_file *f,
			   const struct snapshot *sn, const char *etag)
{
	uint64_t cs = w->conf.chunk_size, c;
	char name[CHUNK_NAME_LEN + 1];
	char *buf = malloc((size_t)cs);

	cache_drop_object(w->cache, sn->key, etag);
	for (c = 0; buf && c * cs < sn->size; c++) {
		uint64_t len = sn->size - c * cs < cs ? sn->size - c * cs : cs;
		struct chunk_id id = { .endpoint = w->conf.endpoint,
				       .bucket = w->conf.bucket,
				       .key = sn->key,
				       .etag = etag,
				       .index = c };
		struct cache_ref ref = { .key = sn->key,
					 .etag = etag,
					 .index = c };
		bool need;
		ssize_t n;

		pthread_mutex_lock(&f->lock);
		need = needs_base(w, f, c);
		pthread_mutex_unlock(&f->lock);
		if (need || !f->sf)
			continue;
		n = seal_pread(f->sf, buf, (size_t)len, c * cs);
		if (n < 0)
			break;
		if ((uint64_t)n < len)
			memset(buf + n, 0, (size_t)(len - (uint64_t)n));
		chunk_name(&id, name);
		if (cache_put(w->cache, name, &ref, buf, (size_t)len) < 0)
			break;
	}
	wipe_free((unsigned char *)buf, buf ? (size_t)cs : 0);
}

/* The parent directory prefix of @key and its last segment. */
static void split_key(const char *key, char **dir, const char **name)
{
	const char *slash = strrchr(key, '/');

	*name = slash ? slash + 1 : key;
	*dir = strndup(key, slash ? (size_t)(slash - key + 1) : 0);
}

/* Record the uploaded version in the store and tell the layer above. */
static void publish(struct wb *w, const struct snapshot *sn, const char *etag)
{
	struct meta_object o = { 0 };
	struct wb_result r = { 0 };
	int64_t t = now_ms();
	const char *name;
	char *dir = NULL;

	o.key = sn->key;
	o.etag = (char *)etag;
	o.size = sn->size;
	o.mtime = t / 1000;
	o.checked_ms = t;
	o.expires_ms = t + (int64_t)w->conf.meta_ttl_ms;
	o.has_attrs = true;
	o.mode = sn->attrs.mode;
	o.uid = sn->attrs.uid;
	o.gid = sn->attrs.gid;
	o.attr_mtime = sn->attrs.mtime;
	meta_object_put(w->meta, &o);
	split_key(sn->key, &dir, &name);
	if (dir)
		meta_entry_add(w->meta, dir, name, false);
	free(dir);
	r.key = sn->key;
	r.etag = etag;
	r.size = sn->size;
	r.mtime = o.mtime;
	r.attrs = sn->attrs;
	if (w->conf.done)
		w->conf.done(w->conf.ctx, &r);
}

/* Upload @f if dirty (or always with @force).  f->up taken here. */
static int upload(struct wb *w, struct wb_file *f, bool force)
{
	struct wb_meta wm;
	struct s3_put_opts opts = { 0 };
	struct snapshot sn = { 0 };
	char *etag = NULL;
	bool copies = false;
	uint64_t cs = w->conf.chunk_size, c;
	int64_t t_start = now_ms();
	int rc = 0;

	pthread_mutex_lock(&f->up);
	pthread_rwlock_rdlock(&f->io);
	pthread_mutex_lock(&f->lock);
	if (f->discarded || (!force && f->gen == f->clean_gen)) {
		pthread_mutex_unlock(&f->lock);
		goto out;
	}
	sn.key = strdup(f->row.key);
	sn.base_etag = f->row.base_etag ? strdup(f->row.base_etag) : NULL;
	sn.base_size = f->row.base_size;
	sn.size = f->size;
	sn.gen = f->gen;
	sn.attrs.mode = f->row.mode ? f->row.mode : (S_IFREG | 0644);
	sn.attrs.uid = f->row.uid != UINT32_MAX ? f->row.uid : getuid();
	sn.attrs.gid = f->row.gid != UINT32_MAX ? f->row.gid : getgid();
	sn.attrs.mtime = f->row.mtime ? f->row.mtime : time(NULL);
	if (sn.base_etag && sn.size > w->conf.multipart_threshold) {
		uint64_t part = (w->conf.part_size + cs - 1) / cs * cs;

		/* a whole untouched part of the base is worth copying */
		for (c = 0; !copies && c * cs < sn.base_size; c += part / cs) {
			uint64_t k, end = c * cs + part;

			if (end > sn.base_size)
				break;
			copies = true;
			for (k = c; copies && k * cs < end; k++)
				copies = needs_base(w, f, k);
		}
	}
	pthread_mutex_unlock(&f->lock);
	if (!sn.key || (f->row.base_etag && !sn.base_etag)) {
		rc = -ENOMEM;
		goto out;
	}
	if (!f->sf) {
		/* never changed since it was staged: nothing to send */
		pthread_mutex_lock(&f->lock);
		f->clean_gen = sn.gen;
		pthread_mutex_unlock(&f->lock);
		goto out;
	}
	wb_attrs_meta(&sn.attrs, &wm);
	opts.meta = wm.meta;
	opts.n_meta = wm.n;
	rc = stream_finish(w, f, &sn, &etag);
	if (rc == 0) {
		STAT_ADD(w, streamed, 1);
	} else if (copies || (seal_is_sealed(f->sf) &&
			      sn.size > w->conf.multipart_threshold)) {
		rc = upload_with_copies(w, f, &sn, &opts, &etag);
	} else {
		rc = materialize(w, f, 0, sn.size);
		if (rc == 0 && seal_is_sealed(f->sf))
			rc = put_sealed(w, f, &sn, &opts, &etag);
		else if (rc == 0)
			rc = s3_put_file(w->s3, sn.key, seal_plain_fd(f->sf),
					 sn.size, &opts, &etag);
	}
	if (rc == 0 && !etag)
		rc = -EIO;
	if (rc < 0) {
		STAT_ADD(w, upload_failures, 1);
		pthread_mutex_lock(&f->lock);
		f->failures++;
		f->retry_at_ms =
			now_ms() +
			(int64_t)(RETRY_MIN_MS
				  << (f->failures < 10 ? f->failures : 10));
		if (f->retry_at_ms - now_ms() > (int64_t)w->conf.retry_max_ms)
			f->retry_at_ms = now_ms() + w->conf.retry_max_ms;
		pthread_mutex_unlock(&f->lock);
		log_warn("writeback: upload of '%s' failed: %s; it stays "
			 "staged and is retried",
			 sn.key, strerror(-rc));
		goto out;
	}
	STAT_ADD(w, uploads, 1);
	STAT_ADD(w, bytes_uploaded, sn.size);
	log_debug("writeback: uploaded '%s' (%llu bytes) in %lld ms", sn.key,
		  (unsigned long long)sn.size, (long long)(now_ms() - t_start));
	pthread_mutex_lock(&f->lock);
	/* its chunks go into the cache on an uploader thread, after the
	 * caller (a close) has its answer */
	free(f->cache_etag);
	f->cache_etag = strdup(etag);
	f->cache_gen = sn.gen;
	f->cache_size = sn.size;
	/* what was sent is now the base of what stays staged */
	if (set_upload_id(f, NULL) == 0) {
		free(f->row.base_etag);
		f->row.base_etag = etag;
		etag = NULL;
		f->row.base_size = sn.size;
	}
	f->row.mode = sn.attrs.mode;
	f->row.uid = sn.attrs.uid;
	f->row.gid = sn.attrs.gid;
	f->row.mtime = sn.attrs.mtime;
	f->clean_gen = sn.gen;
	f->failures = 0;
	f->retry_at_ms = 0;
	if (f->row.id > 0 && f->gen != f->clean_gen)
		save_locked(w, f);
	pthread_mutex_unlock(&f->lock);
	publish(w, &sn, f->row.base_etag);
out:
	pthread_rwlock_unlock(&f->io);
	pthread_mutex_unlock(&f->up);
	free(sn.key);
	free(sn.base_etag);
	free(etag);
	return rc;
}

int wb_flush(struct wb *w, struct wb_file *f)
{
	return upload(w, f, false);
}

int wb_rename(struct wb *w, struct wb_file *f, const char *new_key)
{
	struct wb_file *old;
	char *k = strdup(new_key);
	int rc;

	if (!k)
		return -ENOMEM;
	pthread_rwlock_wrlock(&f->io);
	pthread_mutex_lock(&f->lock);
	rc = ensure_stored_locked(w, f);
	pthread_mutex_unlock(&f->lock);
	/* every byte into the staging file: the old key's object goes away */
	if (rc == 0)
		rc = materialize(w, f, 0, f->size);
	if (rc < 0) {
		pthread_rwlock_unlock(&f->io);
		free(k);
		return rc;
	}
	old = wb_find(w, new_key);
	if (old && old != f)
		wb_discard(w, old);
	if (old)
		wb_put(w, old);
	pthread_mutex_lock(&w->lock);
	pthread_mutex_lock(&f->lock);
	table_remove_locked(w, f);
	free(f->row.key);
	f->row.key = k;
	f->st.broken = true; /* parts sent went to the old key */
	free(f->row.base_etag);
	f->row.base_etag = NULL;
	f->row.base_size = 0;
	f->gen++;
	rc = save_locked(w, f);
	if (!f->discarded)
		table_add_locked(w, f);
	pthread_mutex_unlock(&f->lock);
	pthread_mutex_unlock(&w->lock);
	pthread_rwlock_unlock(&f->io);
	if (rc == 0)
		rc = upload(w, f, true);
	return rc;
}

/* A new reference to every staged file whose key starts with @prefix. */
static int collect(struct wb *w, const char *prefix, struct wb_file ***out,
		   size_t *n)
{
	struct wb_file **v = NULL, *f;
	size_t len = strlen(prefix), i, cap = 0;

	*n = 0;
	pthread_mutex_lock(&w->lock);
	for (i = 0; i < TABLE_SIZE; i++) {
		for (f = w->table[i]; f; f = f->next) {
			if (strncmp(f->row.key, prefix, len) != 0)
				continue;
			if (*n == cap) {
				size_t nc = cap ? cap * 2 : 16;
				struct wb_file **nv =
					realloc(v, nc * sizeof(*nv));

				if (!nv) {
					pthread_mutex_unlock(&w->lock);
					while (*n)
						wb_put(w, v[--*n]);
					free(v);
					return -ENOMEM;
				}
				v = nv;
				cap = nc;
			}
			f->refs++;
			v[(*n)++] = f;
		}
	}
	pthread_mutex_unlock(&w->lock);
	*out = v;
	return 0;
}

int wb_each_under(struct wb *w, const char *prefix, wb_key_fn fn, void *ctx)
{
	struct wb_file **v = NULL;
	struct wb_stat st;
	size_t n = 0, i;
	int rc;

	rc = collect(w, prefix, &v, &n);
	for (i = 0; rc == 0 && i < n; i++) {
		wb_stat(w, v[i], &st);
		rc = fn(ctx, v[i]->row.key, &st);
	}
	for (i = 0; i < n; i++)
		wb_put(w, v[i]);
	free(v);
	return rc;
}

int wb_flush_under(struct wb *w, const char *prefix)
{
	struct wb_file **v = NULL;
	size_t n = 0, i;
	int rc, first = 0;

	rc = collect(w, prefix, &v, &n);
	for (i = 0; i < n; i++) {
		rc = upload(w, v[i], false);
		if (rc < 0 && !first)
			first = rc;
	}
	for (i = 0; i < n; i++)
		wb_put(w, v[i]);
	free(v);
	return first ? first : rc;
}

void wb_get_stats(struct wb *w, struct wb_stats *out)
{
	out->uploads = __atomic_load_n(&w->stats.uploads, __ATOMIC_RELAXED);
	out->upload_failures =
		__atomic_load_n(&w->stats.upload_failures, __ATOMIC_RELAXED);
	out->bytes_uploaded =
		__atomic_load_n(&w->stats.bytes_uploaded, __ATOMIC_RELAXED);
	out->parts_copied =
		__atomic_load_n(&w->stats.parts_copied, __ATOMIC_RELAXED);
	out->resumed = __atomic_load_n(&w->stats.resumed, __ATOMIC_RELAXED);
	out->streamed = __atomic_load_n(&w->stats.streamed, __ATOMIC_RELAXED);
	out->pending = __atomic_load_n(&w->stats.pending, __ATOMIC_RELAXED);
}

/* ---- the background uploader ---- */

/*
 * Copy the chunks of @f's last upload into the cache, unless @f changed
 * since (its staging file no longer holds that version).  f->io taken.
 */
static void cache_job(struct wb *w, struct wb_file *f)
{
	struct snapshot sn = { 0 };
	char *etag = NULL;
	int64_t t = now_ms();

	pthread_rwlock_rdlock(&f->io);
	pthread_mutex_lock(&f->lock);
	if (f->cache_etag && !f->discarded && f->gen == f->cache_gen &&
	    (sn.key = strdup(f->row.key))) {
		etag = f->cache_etag;
		f->cache_etag = NULL;
		sn.size = f->cache_size;
	}
	free(f->cache_etag);
	f->cache_etag = NULL;
	pthread_mutex_unlock(&f->lock);
	if (etag) {
		cache_uploaded(w, f, &sn, etag);
		log_debug("writeback: '%s' put in the cache in %lld ms", sn.key,
			  (long long)(now_ms() - t));
	}
	pthread_rwlock_unlock(&f->io);
	free(etag);
	free(sn.key);
}

/* A pending file nobody holds open whose retry time has come, or one with
 * chunks to cache (*cache set), with a reference; or NULL and *wait_ms
 * until the next one is due. */
static struct wb_file *next_due_locked(struct wb *w, int64_t *wait_ms,
				       bool *cache)
{
	int64_t t = now_ms(), soonest = INT64_MAX;
	struct wb_file *f;
	size_t i;

	for (i = 0; i < TABLE_SIZE; i++) {
		for (f = w->table[i]; f; f = f->next) {
			int64_t at;
			bool dirty;

			if (f->refs > 0)
				continue;
			pthread_mutex_lock(&f->lock);
			dirty = f->gen != f->clean_gen && !f->discarded;
			*cache = !dirty && f->cache_etag && !f->discarded;
			at = f->retry_at_ms;
			pthread_mutex_unlock(&f->lock);
			if (*cache) {
				f->refs++;
				return f;
			}
			if (!dirty)
				continue;
			if (at <= t) {
				f->refs++;
				return f;
			}
			if (at < soonest)
				soonest = at;
		}
	}
	*wait_ms = soonest == INT64_MAX ? 60000 : soonest - t;
	return NULL;
}

/*
 * One of the uploader threads.  While stopping, it goes on while a file is
 * due now and ends when none is: wb_close() then tries the ones waiting
 * for a retry once more itself.
 */
static void *uploader_main(void *arg)
{
	struct wb *w = arg;
	struct wb_file *f;
	int64_t wait_ms;
	bool cache;

	pthread_mutex_lock(&w->lock);
	for (;;) {
		f = next_due_locked(w, &wait_ms, &cache);
		if (f) {
			pthread_mutex_unlock(&w->lock);
			if (cache)
				cache_job(w, f);
			else
				upload(w, f, false);
			wb_put(w, f);
			pthread_mutex_lock(&w->lock);
			continue;
		}
		if (w->stopping)
			break;
		{
			struct timespec ts;

			clock_gettime(CLOCK_REALTIME, &ts);
			if (wait_ms > 60000)
				wait_ms = 60000;
			ts.tv_sec += wait_ms / 1000;
			ts.tv_nsec += (wait_ms % 1000) * 1000000;
			if (ts.tv_nsec >= 1000000000) {
				ts.tv_sec++;
				ts.tv_nsec -= 1000000000;
			}
			pthread_cond_timedwait(&w->wake, &w->lock, &ts);
		}
	}
	pthread_mutex_unlock(&w->lock);
	return NULL;
}

/* ---- start and stop ---- */

struct load_ctx {
	struct wb *w;
	/* rows to delete once the scan is over (meta is locked during it) */
	int64_t *drop;
	size_t n_drop;
	/* files loaded by the scan, linked by next, owned here until they
	 * go into the table once the scan is over: the table's and the
	 * cache's locks come before meta's, so the scan takes neither */
	struct wb_file *loaded;
};

static int drop_later(struct load_ctx *lc, int64_t id)
{
	int64_t *v = realloc(lc->drop, (lc->n_drop + 1) * sizeof(*v));

	if (!v)
		return -ENOMEM;
	v[lc->n_drop++] = id;
	lc->drop = v;
	return 0;
}

/*
 * What is on disk for a staged row, given the mount's key.  A row has a
 * plain file "ID" or a sealed one "ID.sealed"; both exist only after a
 * crash between the rename and the unlink of a conversion (here or in
 * crypt_rekey_cache), and then hold the same bytes.
 */
enum staged_state {
	ST_MISSING,   /* neither file */
	ST_READY,     /* in the mount's form (the other form is a leftover) */
	ST_CONVERT,   /* plain, and the mount has a key: seal it */
	ST_FOREIGN,   /* sealed under a key the mount does not have */
	ST_EPHEMERAL, /* sealed under an ephemeral key: gone for good */
	ST_DAMAGED,   /* sealed, but its header or length is impossible */
};

static enum staged_state staged_state(struct wb *w, int64_t id,
				      struct seal_info *info)
{
	char plain[PATH_MAX], sealed[PATH_MAX];
	const struct crypt_key *k = w->conf.key;
	bool have_plain;
	int rc;

	staging_path_as(w, id, false, plain, sizeof(plain));
	staging_path_as(w, id, true, sealed, sizeof(sealed));
	have_plain = access(plain, F_OK) == 0;
	rc = seal_probe(sealed, info);
	if (rc == 0 && k && strcmp(info->key_id, k->id_hex) == 0 &&
	    info->binding == (uint64_t)id)
		return ST_READY;
	if (have_plain)
		return k ? ST_CONVERT : ST_READY;
	if (rc == -ENOENT)
		return ST_MISSING;
	if (rc < 0 || info->binding != (uint64_t)id)
		return ST_DAMAGED;
	return info->ephemeral ? ST_EPHEMERAL : ST_FOREIGN;
}

/*
 * First pass over the staged rows, before anything is loaded: a file
 * sealed under a key this mount does not have is data not yet in S3, so
 * the mount refuses to start and names the key it needs.
 */
static int check_staged(void *ctx, const struct meta_staged *s)
{
	struct load_ctx *lc = ctx;
	struct wb *w = lc->w;
	struct seal_info info;
	char path[PATH_MAX];

	if (staged_state(w, s->id, &info) != ST_FOREIGN)
		return 0;
	staging_path_as(w, s->id, true, path, sizeof(path));
	if (w->conf.key)
		log_error("writeback: staging file '%s' of '%s' is encrypted "
			  "with key id %s, not this mount's key %s: mount "
			  "with that key, or rotate it with s3cachefs-ctl "
			  "rotate-key",
			  path, s->key, info.key_id, w->conf.key->id_hex);
	else
		log_error("writeback: staging file '%s' of '%s' is encrypted "
			  "with key id %s: mount with encrypt=aes-256-gcm "
			  "and that key",
			  path, s->key, info.key_id);
	return -EKEYREJECTED;
}

/* Seal the plain staging file of row @id under the mount's key. */
static int convert_plain(struct wb *w, int64_t id)
{
	char plain[PATH_MAX], sealed[PATH_MAX];
	struct seal_file *src = NULL;
	int rc;

	staging_path_as(w, id, false, plain, sizeof(plain));
	staging_path_as(w, id, true, sealed, sizeof(sealed));
	rc = seal_open(plain, NULL, (uint64_t)id, &src);
	if (rc == 0)
		rc = seal_copy(src, sealed, w->conf.key, (uint64_t)id);
	seal_close(src);
	if (rc == 0 && unlink(plain) < 0)
		rc = -errno;
	if (rc < 0)
		log_error("writeback: cannot encrypt staging file '%s': %s",
			  plain, strerror(-rc));
	else
		log_info("writeback: staging file '%s' was not encrypted: "
			 "encrypted it",
			 plain);
	return rc;
}

/*
 * Open the staging file of row @s into f->sf, as staged_state() says.  0;
 * 1 when there is nothing usable (logged when changes are lost); -errno to
 * stop the start.
 */
static int open_staged(struct wb *w, struct wb_file *f,
		       const struct meta_staged *s)
{
	char path[PATH_MAX], other[PATH_MAX];
	struct seal_info info;
	const char *why = NULL;
	int rc;

	staging_path(w, s->id, path, sizeof(path));
	staging_path_as(w, s->id, !w->conf.key, other, sizeof(other));
	switch (staged_state(w, s->id, &info)) {
	case ST_CONVERT:
		rc = convert_plain(w, s->id);
		if (rc < 0)
			return rc;
		break;
	case ST_READY:
		break;
	case ST_FOREIGN: /* check_staged() stopped the start before */
		return -EKEYREJECTED;
	case ST_EPHEMERAL:
		why = "was encrypted with an ephemeral key, which is gone";
		break;
	case ST_DAMAGED:
		why = "is damaged";
		break;
	case ST_MISSING:
		why = "is missing";
		break;
	}
	if (!why) {
		rc = seal_open(path, w->conf.key, (uint64_t)s->id, &f->sf);
		if (rc == 0) {
			/* a leftover of a conversion: the same bytes */
			unlink(other);
			return 0;
		}
		why = "cannot be opened";
	}
	if (bits_count(f) > 0)
		log_error("writeback: staging file '%s' of '%s' %s: its unsent "
			  "changes are lost",
			  path, s->key, why);
	unlink(path);
	unlink(other);
	return 1;
}

static int on_staged(void *ctx, const struct meta_staged *s)
{
	struct load_ctx *lc = ctx;
	struct wb *w = lc->w;
	struct wb_file *f = file_new();
	int rc;

	if (!f)
		return -ENOMEM;
	f->row = *s;
	f->row.key = strdup(s->key);
	f->row.base_etag = s->base_etag ? strdup(s->base_etag) : NULL;
	f->row.upload_id = s->upload_id ? strdup(s->upload_id) : NULL;
	f->row.local = s->local_len ? malloc(s->local_len) : NULL;
	if (!f->row.key || (s->base_etag && !f->row.base_etag) ||
	    (s->upload_id && !f->row.upload_id) ||
	    (s->local_len && !f->row.local)) {
		f->row.id = 0;
		file_free(f);
		return -ENOMEM;
	}
	if (s->local_len)
		memcpy(f->row.local, s->local, s->local_len);
	rc = open_staged(w, f, s);
	if (rc != 0) {
		f->row.id = 0;
		file_free(f);
		return rc > 0 ? drop_later(lc, s->id) : rc;
	}
	f->size = seal_size(f->sf);
	f->gen = 1; /* pending: changes the bucket may not have */
	f->reserved = bits_count(f) * w->conf.chunk_size;
	f->next = lc->loaded;
	lc->loaded = f;
	log_info("writeback: '%s' (%llu bytes) was not uploaded yet: "
		 "uploading it",
		 s->key, (unsigned long long)f->size);
	return 0;
}

/* Abort the multipart uploads a crash left behind. */
static void abort_leftovers(struct wb *w)
{
	struct wb_file *f;
	size_t i;

	for (i = 0; i < TABLE_SIZE; i++) {
		for (f = w->table[i]; f; f = f->next) {
			if (!f->row.upload_id)
				continue;
			s3_mpu_abort(w->s3, f->row.key, f->row.upload_id);
			set_upload_id(f, NULL);
			save_locked(w, f);
		}
	}
}

/* Remove staging files that no row names. */
static void remove_strays(struct wb *w)
{
	DIR *d = opendir(w->staging);
	struct dirent *de;

	if (!d)
		return;
	while ((de = readdir(d))) {
		int64_t id;
		bool sealed, named;
		struct wb_file *f;
		bool known = false;
		size_t i;

		if (strcmp(de->d_name, ".") == 0 ||
		    strcmp(de->d_name, "..") == 0)
			continue;
		/* only the form this mount writes is known; temporaries go */
		named = seal_name_parse(de->d_name, &id, &sealed) &&
			sealed == (w->conf.key != NULL);
		for (i = 0; named && i < TABLE_SIZE && !known; i++)
			for (f = w->table[i]; f && !known; f = f->next)
				known = f->row.id == id;
		if (!known) {
			char path[PATH_MAX];

			snprintf(path, sizeof(path), "%s/%s", w->staging,
				 de->d_name);
			unlink(path);
		}
	}
	closedir(d);
}

int wb_open(const struct wb_conf *conf, struct s3 *s, struct meta *m,
	    struct cache *c, struct wb **out)
{
	struct load_ctx lc = { 0 };
	struct wb *w;
	unsigned i, n;
	int rc;

	if (!conf->dir || !conf->fill || conf->chunk_size == 0 ||
	    conf->part_size < PART_COPY_MIN)
		return -EINVAL;
	w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	w->conf = *conf;
	if (!w->conf.retry_max_ms)
		w->conf.retry_max_ms = 300000;
	w->s3 = s;
	w->meta = m;
	w->cache = c;
	pthread_mutex_init(&w->lock, NULL);
	pthread_cond_init(&w->wake, NULL);
	lc.w = w;
	if (asprintf(&w->staging, "%s/staging", conf->dir) < 0) {
		w->staging = NULL;
		rc = -ENOMEM;
		goto fail;
	}
	if (mkdir(w->staging, 0700) < 0 && errno != EEXIST) {
		rc = -errno;
		log_error("writeback: cannot create '%s': %s", w->staging,
			  strerror(errno));
		goto fail;
	}
	rc = meta_staged_scan(m, check_staged, &lc);
	if (rc == 0)
		rc = meta_staged_scan(m, on_staged, &lc);
	/* into the table even after a failure: wb_close frees them */
	while (lc.loaded) {
		struct wb_file *f = lc.loaded;

		lc.loaded = f->next;
		f->next = NULL;
		cache_reserve_force(c, f->reserved);
		pthread_mutex_lock(&w->lock);
		table_add_locked(w, f);
		pthread_mutex_unlock(&w->lock);
		STAT_ADD(w, resumed, 1);
	}
	while (lc.n_drop)
		meta_staged_delete(m, lc.drop[--lc.n_drop]);
	free(lc.drop);
	if (rc < 0)
		goto fail;
	remove_strays(w);
	abort_leftovers(w);
	n = conf->uploaders ? conf->uploaders : 1;
	if (n > MAX_UPLOADERS)
		n = MAX_UPLOADERS;
	for (i = 0; i < n; i++) {
		if (pthread_create(&w->threads[i], NULL, uploader_main, w))
			break;
		w->n_threads++;
	}
	if (w->n_threads == 0) {
		rc = -ENOMEM;
		goto fail;
	}
	*out = w;
	return 0;
fail:
	wb_close(w);
	return rc;
}

void wb_close(struct wb *w)
{
	struct wb_file *f, *next;
	uint64_t pending;
	size_t i;

	if (!w)
		return;
	pthread_mutex_lock(&w->lock);
	w->stopping = true;
	pthread_cond_broadcast(&w->wake);
	pthread_mutex_unlock(&w->lock);
	pending = __atomic_load_n(&w->stats.pending, __ATOMIC_RELAXED);
	if (pending)
		log_info("writeback: %llu staged files: uploading them before "
			 "the end",
			 (unsigned long long)pending);
	/* the threads upload every file due now, then end */
	for (i = 0; i < w->n_threads; i++)
		pthread_join(w->threads[i], NULL);
	/* one more try for what waits for a retry, then leave it staged */
	for (i = 0; i < TABLE_SIZE; i++) {
		for (f = w->table[i]; f; f = next) {
			next = f->next;
			if (f->refs == 0)
				upload(w, f, false);
		}
	}
	for (i = 0; i < TABLE_SIZE; i++) {
		for (f = w->table[i]; f; f = next) {
			next = f->next;
			pthread_mutex_lock(&f->lock);
			if (f->gen == f->clean_gen && f->refs == 0)
				drop_staging_locked(w, f);
			if (f->reserved)
				cache_unreserve(w->cache, f->reserved);
			f->reserved = 0;
			pthread_mutex_unlock(&f->lock);
			file_free(f);
		}
		w->table[i] = NULL;
	}
	pthread_cond_destroy(&w->wake);
	pthread_mutex_destroy(&w->lock);
	free(w->staging);
	free(w);
}
