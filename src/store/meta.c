/*
 * meta.c - the metadata store on SQLite.
 *
 * This is the only file that includes sqlite3.h: SQLITE_* codes become
 * -errno in errno_of() and nowhere else, and every failure is logged once,
 * here, with the database path, what was being done and SQLite's message.
 *
 * Locking: one connection, opened SQLITE_OPEN_NOMUTEX, behind one pthread
 * mutex (meta.lock).  Every public function holds it from start to end, so
 * the connection, the prepared statements and bind_rc are used by one
 * thread at a time, and a read of several statements (a listing row, then
 * its entries) sees one state without a read transaction.  Callbacks run
 * with the mutex held and a statement stepping.
 *
 * Statements: prepared once in meta_open(), after migration (they name the
 * tables), and reset with their bindings cleared after every use: between
 * public calls no statement is active, so none holds a lock on the file.
 * A failed bind is remembered in bind_rc and reported by the next step().
 *
 * Schema: PRAGMA user_version counts the migrations applied; migrations[v]
 * takes a database from version v to v + 1.  meta_open() applies the
 * missing ones and sets user_version in one transaction, and refuses a
 * database with a version it does not know.  The info table holds the
 * 'source' the cache belongs to; opening with another source empties every
 * other table (a NULL conf->source neither checks nor records it).
 *
 * Listings: entries hold (dir, name, is_dir) only; a file's attributes live
 * in its objects row (key = dir || name), joined on read, so that a HEAD
 * refreshing an object is seen through the listing too.  A file entry whose
 * object row is gone is still reported, with etag "", size 0 and mtime 0
 * (and from meta_listing_find() checked_ms = expires_ms = atime_ms = 0, so
 * it is due for revalidation).  Directory entries report etag NULL.
 * Replacing a listing drops its entries but keeps the object rows of files
 * that left it: their chunks are the evictor's business.
 *
 * Strings are bound as TEXT with their byte length and compared with
 * SQLite's BINARY collation (memcmp), so keys are arbitrary byte strings
 * and entries come back in byte order of name.  Unsigned 64-bit values are
 * stored as SQLite's signed integers and cast back: every value round-trips.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <sqlite3.h>

#include "s3cachefs/log.h"
#include "s3cachefs/meta.h"

#define BUSY_TIMEOUT_MS 5000

/* Version 1: the tables of meta.h. */
static const char *const schema_v1[] = {
	"CREATE TABLE info (k TEXT PRIMARY KEY, v TEXT) WITHOUT ROWID",
	"CREATE TABLE objects (key TEXT PRIMARY KEY, etag TEXT NOT NULL,"
	" size INTEGER NOT NULL, mtime INTEGER NOT NULL,"
	" checked_ms INTEGER NOT NULL, expires_ms INTEGER NOT NULL,"
	" atime_ms INTEGER NOT NULL) WITHOUT ROWID",
	"CREATE TABLE listings (dir TEXT PRIMARY KEY,"
	" fetched_ms INTEGER NOT NULL, expires_ms INTEGER NOT NULL)"
	" WITHOUT ROWID",
	"CREATE TABLE entries (dir TEXT NOT NULL, name TEXT NOT NULL,"
	" is_dir INTEGER NOT NULL, PRIMARY KEY (dir, name)) WITHOUT ROWID",
	"CREATE TABLE negatives (key TEXT PRIMARY KEY,"
	" expires_ms INTEGER NOT NULL) WITHOUT ROWID",
	"CREATE TABLE chunks (name TEXT PRIMARY KEY, key TEXT NOT NULL,"
	" etag TEXT NOT NULL, idx INTEGER NOT NULL,"
	" disk_bytes INTEGER NOT NULL, atime_ms INTEGER NOT NULL)"
	" WITHOUT ROWID",
	"CREATE INDEX chunks_key ON chunks (key)",
	NULL,
};

/* migrations[v] takes version v to v + 1; append, never edit. */
static const char *const *const migrations[] = {
	schema_v1,
};

#define SCHEMA_VERSION ((int)(sizeof(migrations) / sizeof(migrations[0])))

enum stmt_id {
	ST_BEGIN,
	ST_COMMIT,
	ST_ROLLBACK,
	ST_INFO_GET,
	ST_INFO_PUT,
	ST_OBJ_GET,
	ST_OBJ_PUT,
	ST_OBJ_DELETE,
	ST_OBJ_EXPIRE,
	ST_OBJ_TOUCH,
	ST_NEG_PUT,
	ST_NEG_GET,
	ST_NEG_DELETE,
	ST_LIST_GET,
	ST_LIST_PUT,
	ST_LIST_EXPIRE,
	ST_ENT_CLEAR,
	ST_ENT_PUT,
	ST_ENT_SCAN,
	ST_ENT_FIND,
	ST_CHUNK_PUT,
	ST_CHUNK_DELETE,
	ST_CHUNK_TOUCH,
	ST_CHUNK_SCAN,
	ST_CHUNK_SCAN_OTHER,
	ST_CLEAR_OBJECTS,
	ST_CLEAR_LISTINGS,
	ST_CLEAR_ENTRIES,
	ST_CLEAR_NEGATIVES,
	ST_CLEAR_CHUNKS,
	ST_COUNT
};

/* Entries, each file with its object row when there is one. */
#define JOIN_OBJECT                                 \
	" FROM entries AS e LEFT JOIN objects AS o" \
	" ON e.is_dir = 0 AND o.key = e.dir || e.name"

#define CHUNK_COLUMNS "SELECT name, key, etag, idx, disk_bytes, atime_ms"

/*
 * Objects and negatives take their key as ?1 || ?2, so that a listing binds
 * (dir, name) and the other callers (key, ""), without building the key.
 */
static const char *const stmt_sql[ST_COUNT] = {
	[ST_BEGIN] = "BEGIN IMMEDIATE",
	[ST_COMMIT] = "COMMIT",
	[ST_ROLLBACK] = "ROLLBACK",
	[ST_INFO_GET] = "SELECT v FROM info WHERE k = ?1",
	[ST_INFO_PUT] = "INSERT OR REPLACE INTO info (k, v) VALUES (?1, ?2)",
	[ST_OBJ_GET] = "SELECT etag, size, mtime, checked_ms, expires_ms,"
		       " atime_ms FROM objects WHERE key = ?1",
	[ST_OBJ_PUT] = "INSERT INTO objects (key, etag, size, mtime,"
		       " checked_ms, expires_ms, atime_ms)"
		       " VALUES (?1 || ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
		       " ON CONFLICT (key) DO UPDATE SET etag = excluded.etag,"
		       " size = excluded.size, mtime = excluded.mtime,"
		       " checked_ms = excluded.checked_ms,"
		       " expires_ms = excluded.expires_ms,"
		       " atime_ms = CASE excluded.atime_ms WHEN 0 THEN atime_ms"
		       " ELSE excluded.atime_ms END",
	[ST_OBJ_DELETE] = "DELETE FROM objects WHERE key = ?1",
	[ST_OBJ_EXPIRE] = "UPDATE objects SET expires_ms = 0 WHERE key = ?1",
	[ST_OBJ_TOUCH] = "UPDATE objects SET atime_ms = ?2 WHERE key = ?1",
	[ST_NEG_PUT] = "INSERT OR REPLACE INTO negatives (key, expires_ms)"
		       " VALUES (?1, ?2)",
	[ST_NEG_GET] = "SELECT expires_ms FROM negatives WHERE key = ?1",
	[ST_NEG_DELETE] = "DELETE FROM negatives WHERE key = ?1 || ?2",
	[ST_LIST_GET] = "SELECT expires_ms FROM listings WHERE dir = ?1",
	[ST_LIST_PUT] = "INSERT OR REPLACE INTO listings"
			" (dir, fetched_ms, expires_ms) VALUES (?1, ?2, ?3)",
	[ST_LIST_EXPIRE] = "UPDATE listings SET expires_ms = 0 WHERE dir = ?1",
	[ST_ENT_CLEAR] = "DELETE FROM entries WHERE dir = ?1",
	[ST_ENT_PUT] = "INSERT INTO entries (dir, name, is_dir)"
		       " VALUES (?1, ?2, ?3)",
	[ST_ENT_SCAN] =
		"SELECT e.name, e.is_dir, o.etag, o.size, o.mtime" JOIN_OBJECT
		" WHERE e.dir = ?1 ORDER BY e.name",
	[ST_ENT_FIND] =
		"SELECT e.is_dir, e.dir || e.name, o.etag, o.size,"
		" o.mtime, o.checked_ms, o.expires_ms, o.atime_ms" JOIN_OBJECT
		" WHERE e.dir = ?1 AND e.name = ?2",
	[ST_CHUNK_PUT] = "INSERT OR REPLACE INTO chunks"
			 " (name, key, etag, idx, disk_bytes, atime_ms)"
			 " VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
	[ST_CHUNK_DELETE] = "DELETE FROM chunks WHERE name = ?1",
	[ST_CHUNK_TOUCH] = "UPDATE chunks SET atime_ms = ?2 WHERE name = ?1",
	[ST_CHUNK_SCAN] = CHUNK_COLUMNS " FROM chunks",
	[ST_CHUNK_SCAN_OTHER] = CHUNK_COLUMNS " FROM chunks WHERE key = ?1"
					      " AND (?2 IS NULL OR etag <> ?2)",
	[ST_CLEAR_OBJECTS] = "DELETE FROM objects",
	[ST_CLEAR_LISTINGS] = "DELETE FROM listings",
	[ST_CLEAR_ENTRIES] = "DELETE FROM entries",
	[ST_CLEAR_NEGATIVES] = "DELETE FROM negatives",
	[ST_CLEAR_CHUNKS] = "DELETE FROM chunks",
};

struct meta {
	char *path;	      /* for log lines */
	pthread_mutex_t lock; /* guards db, st, bind_rc */
	sqlite3 *db;
	sqlite3_stmt *st[ST_COUNT];
	int bind_rc; /* first failed bind since the last reset */
};

static int errno_of(int src)
{
	switch (src & 0xff) {
	case SQLITE_NOMEM:
		return -ENOMEM;
	case SQLITE_CONSTRAINT:
		/* a broken precondition: duplicate entry, NULL key or ETag */
		return -EINVAL;
	default:
		return -EIO;
	}
}

/* Log @src (with @subj quoted when not NULL) and return its -errno. */
static int fail(struct meta *m, int src, const char *what, const char *subj)
{
	/* the connection's message is richer, when it is about @src */
	const char *msg = (sqlite3_errcode(m->db) & 0xff) == (src & 0xff)
				  ? sqlite3_errmsg(m->db)
				  : sqlite3_errstr(src);

	if (subj)
		log_error("meta: '%s': %s '%s': %s", m->path, what, subj, msg);
	else
		log_error("meta: '%s': %s: %s", m->path, what, msg);
	return errno_of(src);
}

static void bind_str(struct meta *m, sqlite3_stmt *st, int i, const char *s)
{
	int src;

	if (s)
		src = sqlite3_bind_text64(st, i, s, strlen(s), SQLITE_STATIC,
					  SQLITE_UTF8);
	else
		src = sqlite3_bind_null(st, i);
	if (src != SQLITE_OK && m->bind_rc == SQLITE_OK)
		m->bind_rc = src;
}

static void bind_i64(struct meta *m, sqlite3_stmt *st, int i, int64_t v)
{
	int src = sqlite3_bind_int64(st, i, (sqlite3_int64)v);

	if (src != SQLITE_OK && m->bind_rc == SQLITE_OK)
		m->bind_rc = src;
}

/* Make @st ready for its next use. */
static void finish(struct meta *m, sqlite3_stmt *st)
{
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	m->bind_rc = SQLITE_OK;
}

/*
 * Step @st once: 1 when a row is ready (the caller reads it, then steps
 * again or calls finish()), 0 when done, -errno (logged) on failure.  On 0
 * and -errno the statement is finished.
 */
static int step(struct meta *m, sqlite3_stmt *st, const char *what,
		const char *subj)
{
	int src = m->bind_rc;
	int rc = 0;

	if (src == SQLITE_OK) {
		src = sqlite3_step(st);
		if (src == SQLITE_ROW)
			return 1;
		if (src == SQLITE_DONE)
			src = SQLITE_OK;
	}
	if (src != SQLITE_OK)
		rc = fail(m, src, what, subj);
	finish(m, st);
	return rc;
}

static int run(struct meta *m, enum stmt_id id, const char *what,
	       const char *subj)
{
	return step(m, m->st[id], what, subj);
}

/* Column @i as a string: 0 with *out (NULL for SQL NULL), or -ENOMEM. */
static int column_str(sqlite3_stmt *st, int i, const char **out)
{
	const char *s = (const char *)sqlite3_column_text(st, i);

	/* a value that gives no text means SQLite ran out of memory */
	if (!s && sqlite3_column_type(st, i) != SQLITE_NULL)
		return -ENOMEM;
	*out = s;
	return 0;
}

static int tx_begin(struct meta *m)
{
	return run(m, ST_BEGIN, "begin", NULL);
}

/* Commit when @rc is 0, else roll back; @rc, or the commit's error. */
static int tx_end(struct meta *m, int rc)
{
	if (rc == 0) {
		rc = run(m, ST_COMMIT, "commit", NULL);
		if (rc == 0)
			return 0;
	}
	/* some errors (I/O, full disk, no memory) already rolled back */
	if (!sqlite3_get_autocommit(m->db))
		run(m, ST_ROLLBACK, "rollback", NULL);
	return rc;
}

static int exec_sql(struct meta *m, const char *sql, const char *what)
{
	int src = sqlite3_exec(m->db, sql, NULL, NULL, NULL);

	return src == SQLITE_OK ? 0 : fail(m, src, what, NULL);
}

/* Run a one-row query made for meta_open(): @sql's first column. */
static int query_once(struct meta *m, const char *sql, const char *what,
		      int (*take)(sqlite3_stmt *st, void *ctx), void *ctx)
{
	sqlite3_stmt *st = NULL;
	int src, rc = 0;

	src = sqlite3_prepare_v2(m->db, sql, -1, &st, NULL);
	if (src == SQLITE_OK)
		src = sqlite3_step(st);
	if (src == SQLITE_ROW)
		src = take(st, ctx);
	else if (src == SQLITE_DONE)
		src = SQLITE_OK;
	if (src != SQLITE_OK)
		rc = fail(m, src, what, NULL);
	sqlite3_finalize(st);
	return rc;
}

static int take_int(sqlite3_stmt *st, void *ctx)
{
	*(int *)ctx = sqlite3_column_int(st, 0);
	return SQLITE_OK;
}

static int take_mode(sqlite3_stmt *st, void *ctx)
{
	const char *mode = (const char *)sqlite3_column_text(st, 0);

	if (!mode)
		return SQLITE_NOMEM;
	/* e.g. a file system without shared memory: work on, but say so */
	if (strcasecmp(mode, "wal") != 0)
		log_warn("meta: '%s': journal mode is '%s', not 'wal'",
			 (const char *)ctx, mode);
	return SQLITE_OK;
}

static int configure(struct meta *m)
{
	int rc;

	sqlite3_busy_timeout(m->db, BUSY_TIMEOUT_MS);
	if (strcmp(m->path, ":memory:") != 0) {
		rc = query_once(m, "PRAGMA journal_mode = WAL",
				"set journal mode", take_mode, m->path);
		if (rc < 0)
			return rc;
	}
	return exec_sql(m,
			"PRAGMA synchronous = NORMAL;"
			" PRAGMA foreign_keys = OFF;"
			/*
			 * The WAL counts against the cache's cap: checkpoint
			 * every 1 MiB of it and truncate it back after.
			 */
			" PRAGMA wal_autocheckpoint = 256;"
			" PRAGMA journal_size_limit = 1048576",
			"set pragmas");
}

/* Bring the schema to SCHEMA_VERSION, in one transaction. */
static int migrate(struct meta *m)
{
	char sql[64];
	const char *const *s;
	int version = 0, from;
	int rc;

	rc = exec_sql(m, "BEGIN IMMEDIATE", "begin");
	if (rc < 0)
		return rc;
	rc = query_once(m, "PRAGMA user_version", "read schema version",
			take_int, &version);
	if (rc < 0)
		goto out;
	if (version > SCHEMA_VERSION) {
		log_error("meta: '%s': schema version %d is newer than this "
			  "program's (%d): use a newer s3cachefs or another "
			  "cache directory",
			  m->path, version, SCHEMA_VERSION);
		rc = -EPROTO;
		goto out;
	}
	if (version < 0) {
		log_error("meta: '%s': invalid schema version %d", m->path,
			  version);
		rc = -EPROTO;
		goto out;
	}
	from = version;
	for (; version < SCHEMA_VERSION; version++) {
		for (s = migrations[version]; *s && rc == 0; s++)
			rc = exec_sql(m, *s, "migrate");
		if (rc < 0)
			goto out;
	}
	if (from != version) {
		snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", version);
		rc = exec_sql(m, sql, "set schema version");
		if (rc == 0)
			log_debug("meta: '%s': schema version %d -> %d",
				  m->path, from, version);
	}
out:
	if (rc == 0)
		rc = exec_sql(m, "COMMIT", "commit");
	if (rc < 0 && !sqlite3_get_autocommit(m->db))
		sqlite3_exec(m->db, "ROLLBACK", NULL, NULL, NULL);
	return rc;
}

static int prepare_all(struct meta *m)
{
	int i, src;

	for (i = 0; i < ST_COUNT; i++) {
		src = sqlite3_prepare_v3(m->db, stmt_sql[i], -1,
					 SQLITE_PREPARE_PERSISTENT, &m->st[i],
					 NULL);
		if (src != SQLITE_OK)
			return fail(m, src, "prepare", stmt_sql[i]);
	}
	return 0;
}

/* Delete every row of every table but info; the caller holds a transaction. */
static int clear_tables(struct meta *m)
{
	int id, rc = 0;

	for (id = ST_CLEAR_OBJECTS; id <= ST_CLEAR_CHUNKS && rc == 0; id++)
		rc = run(m, (enum stmt_id)id, "clear", NULL);
	return rc;
}

/* Record @source, first emptying a cache that held another one. */
static int check_source(struct meta *m, const char *source)
{
	sqlite3_stmt *st = m->st[ST_INFO_GET];
	const char *s = NULL;
	char *old = NULL;
	bool same = false;
	int rc;

	rc = tx_begin(m);
	if (rc < 0)
		return rc;
	bind_str(m, st, 1, "source");
	rc = step(m, st, "read", "source");
	if (rc == 1) {
		rc = column_str(st, 0, &s);
		if (rc == 0 && s) {
			same = strcmp(s, source) == 0;
			old = strdup(s);
			if (!old)
				rc = -ENOMEM;
		}
		finish(m, st);
	}
	if (rc < 0 || same)
		goto out;
	if (old)
		rc = clear_tables(m);
	if (rc < 0)
		goto out;
	st = m->st[ST_INFO_PUT];
	bind_str(m, st, 1, "source");
	bind_str(m, st, 2, source);
	rc = step(m, st, "write", "source");
out:
	rc = tx_end(m, rc);
	if (rc == 0 && old && !same)
		log_info("meta: cache held '%s', now '%s': cleared", old,
			 source);
	free(old);
	return rc;
}

int meta_open(const struct meta_conf *conf, struct meta **out)
{
	struct meta *m;
	int src, rc;

	if (!conf || !conf->path)
		return -EINVAL;
	m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	pthread_mutex_init(&m->lock, NULL);
	m->path = strdup(conf->path);
	if (!m->path) {
		rc = -ENOMEM;
		goto out;
	}
	src = sqlite3_open_v2(conf->path, &m->db,
			      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
				      SQLITE_OPEN_NOMUTEX,
			      NULL);
	if (src != SQLITE_OK) {
		rc = m->db ? fail(m, src, "open", NULL) : -ENOMEM;
		goto out;
	}
	rc = configure(m);
	if (rc == 0)
		rc = migrate(m);
	if (rc == 0)
		rc = prepare_all(m);
	if (rc == 0 && conf->source)
		rc = check_source(m, conf->source);
out:
	if (rc < 0) {
		meta_close(m);
		return rc;
	}
	*out = m;
	return 0;
}

void meta_close(struct meta *m)
{
	int i;

	if (!m)
		return;
	for (i = 0; i < ST_COUNT; i++)
		sqlite3_finalize(m->st[i]);
	/* in WAL mode the last close checkpoints and removes -wal and -shm */
	if (m->db && sqlite3_close(m->db) != SQLITE_OK)
		log_error("meta: '%s': close: %s", m->path,
			  sqlite3_errmsg(m->db));
	pthread_mutex_destroy(&m->lock);
	free(m->path);
	free(m);
}

void meta_object_release(struct meta_object *o)
{
	if (!o)
		return;
	free(o->key);
	free(o->etag);
	memset(o, 0, sizeof(*o));
}

/*
 * Fill @o from the row of @st, columns @col on: etag, size, mtime,
 * checked_ms, expires_ms, atime_ms; a NULL etag (no object row) reads "".
 */
static int object_from_row(sqlite3_stmt *st, int col, const char *key,
			   struct meta_object *o)
{
	const char *etag;
	int rc;

	rc = column_str(st, col, &etag);
	if (rc < 0)
		return rc;
	o->key = strdup(key);
	o->etag = strdup(etag ? etag : "");
	if (!o->key || !o->etag) {
		meta_object_release(o);
		return -ENOMEM;
	}
	o->size = (uint64_t)sqlite3_column_int64(st, col + 1);
	o->mtime = sqlite3_column_int64(st, col + 2);
	o->checked_ms = sqlite3_column_int64(st, col + 3);
	o->expires_ms = sqlite3_column_int64(st, col + 4);
	o->atime_ms = sqlite3_column_int64(st, col + 5);
	return 0;
}

int meta_object_get(struct meta *m, const char *key, struct meta_object *out)
{
	sqlite3_stmt *st = m->st[ST_OBJ_GET];
	struct meta_object o = { 0 };
	int rc;

	pthread_mutex_lock(&m->lock);
	bind_str(m, st, 1, key);
	rc = step(m, st, "get object", key);
	if (rc == 1) {
		rc = object_from_row(st, 0, key, &o);
		finish(m, st);
	} else if (rc == 0) {
		rc = -ENOENT;
	}
	pthread_mutex_unlock(&m->lock);
	if (rc == 0)
		*out = o;
	return rc;
}

/* Upsert the object (@prefix @name) and drop its negative entry. */
static int put_object(struct meta *m, const char *prefix, const char *name,
		      const char *etag, uint64_t size, int64_t mtime,
		      int64_t checked_ms, int64_t expires_ms, int64_t atime_ms)
{
	sqlite3_stmt *st = m->st[ST_OBJ_PUT];
	int rc;

	bind_str(m, st, 1, prefix);
	bind_str(m, st, 2, name);
	bind_str(m, st, 3, etag);
	bind_i64(m, st, 4, (int64_t)size);
	bind_i64(m, st, 5, mtime);
	bind_i64(m, st, 6, checked_ms);
	bind_i64(m, st, 7, expires_ms);
	bind_i64(m, st, 8, atime_ms);
	rc = step(m, st, "put object", name);
	if (rc < 0)
		return rc;
	st = m->st[ST_NEG_DELETE];
	bind_str(m, st, 1, prefix);
	bind_str(m, st, 2, name);
	return step(m, st, "delete negative", name);
}

int meta_object_put(struct meta *m, const struct meta_object *o)
{
	int rc;

	pthread_mutex_lock(&m->lock);
	rc = tx_begin(m);
	if (rc == 0)
		rc = tx_end(m, put_object(m, "", o->key, o->etag, o->size,
					  o->mtime, o->checked_ms,
					  o->expires_ms, o->atime_ms));
	pthread_mutex_unlock(&m->lock);
	return rc;
}

/* Run the statement @id on ?1 = @key; @what names it in a log line. */
static int run_key(struct meta *m, enum stmt_id id, const char *key,
		   const char *what)
{
	int rc;

	pthread_mutex_lock(&m->lock);
	bind_str(m, m->st[id], 1, key);
	rc = run(m, id, what, key);
	pthread_mutex_unlock(&m->lock);
	return rc;
}

int meta_object_delete(struct meta *m, const char *key)
{
	return run_key(m, ST_OBJ_DELETE, key, "delete object");
}

int meta_object_expire(struct meta *m, const char *key)
{
	return run_key(m, ST_OBJ_EXPIRE, key, "expire object");
}

/* Run @id (?1 name, ?2 atime) for each of @t in one transaction. */
static int touch_many(struct meta *m, enum stmt_id id,
		      const struct meta_touch *t, size_t n, const char *what)
{
	sqlite3_stmt *st = m->st[id];
	size_t i;
	int rc;

	if (n == 0)
		return 0;
	pthread_mutex_lock(&m->lock);
	rc = tx_begin(m);
	if (rc < 0)
		goto out;
	for (i = 0; i < n && rc == 0; i++) {
		bind_str(m, st, 1, t[i].name);
		bind_i64(m, st, 2, t[i].atime_ms);
		rc = step(m, st, what, t[i].name);
	}
	rc = tx_end(m, rc);
out:
	pthread_mutex_unlock(&m->lock);
	return rc;
}

int meta_object_touch_many(struct meta *m, const struct meta_touch *t, size_t n)
{
	return touch_many(m, ST_OBJ_TOUCH, t, n, "touch object");
}

int meta_negative_put(struct meta *m, const char *key, int64_t expires_ms)
{
	sqlite3_stmt *st = m->st[ST_NEG_PUT];
	int rc;

	pthread_mutex_lock(&m->lock);
	bind_str(m, st, 1, key);
	bind_i64(m, st, 2, expires_ms);
	rc = step(m, st, "put negative", key);
	pthread_mutex_unlock(&m->lock);
	return rc;
}

int meta_negative_get(struct meta *m, const char *key, int64_t *expires_ms)
{
	sqlite3_stmt *st = m->st[ST_NEG_GET];
	int64_t exp = 0;
	int rc;

	pthread_mutex_lock(&m->lock);
	bind_str(m, st, 1, key);
	rc = step(m, st, "get negative", key);
	if (rc == 1) {
		exp = sqlite3_column_int64(st, 0);
		finish(m, st);
		rc = 0;
	} else if (rc == 0) {
		rc = -ENOENT;
	}
	pthread_mutex_unlock(&m->lock);
	if (rc == 0)
		*expires_ms = exp;
	return rc;
}

int meta_negative_delete(struct meta *m, const char *key)
{
	sqlite3_stmt *st = m->st[ST_NEG_DELETE];
	int rc;

	pthread_mutex_lock(&m->lock);
	bind_str(m, st, 1, key);
	bind_str(m, st, 2, "");
	rc = step(m, st, "delete negative", key);
	pthread_mutex_unlock(&m->lock);
	return rc;
}

int meta_listing_put(struct meta *m, const char *dir, int64_t fetched_ms,
		     int64_t expires_ms, const struct meta_entry *e, size_t n)
{
	sqlite3_stmt *st;
	size_t i;
	int rc;

	pthread_mutex_lock(&m->lock);
	rc = tx_begin(m);
	if (rc < 0)
		goto out;
	bind_str(m, m->st[ST_ENT_CLEAR], 1, dir);
	rc = run(m, ST_ENT_CLEAR, "clear listing", dir);
	for (i = 0; i < n && rc == 0; i++) {
		st = m->st[ST_ENT_PUT];
		bind_str(m, st, 1, dir);
		bind_str(m, st, 2, e[i].name);
		bind_i64(m, st, 3, e[i].is_dir);
		rc = step(m, st, "put entry", e[i].name);
		if (rc < 0)
			break;
		if (!e[i].is_dir) {
			/* also drops the negative; atime 0 keeps the row's */
			rc = put_object(m, dir, e[i].name, e[i].etag, e[i].size,
					e[i].mtime, fetched_ms, expires_ms, 0);
		} else {
			st = m->st[ST_NEG_DELETE];
			bind_str(m, st, 1, dir);
			bind_str(m, st, 2, e[i].name);
			rc = step(m, st, "delete negative", e[i].name);
		}
	}
	if (rc == 0) {
		st = m->st[ST_LIST_PUT];
		bind_str(m, st, 1, dir);
		bind_i64(m, st, 2, fetched_ms);
		bind_i64(m, st, 3, expires_ms);
		rc = step(m, st, "put listing", dir);
	}
	rc = tx_end(m, rc);
out:
	pthread_mutex_unlock(&m->lock);
	return rc;
}

/* The expiry of the listing of @dir: 0, -ENOENT, or -errno. */
static int listing_expiry(struct meta *m, const char *dir, int64_t *out)
{
	sqlite3_stmt *st = m->st[ST_LIST_GET];
	int rc;

	bind_str(m, st, 1, dir);
	rc = step(m, st, "get listing", dir);
	if (rc == 0)
		return -ENOENT;
	if (rc < 0)
		return rc;
	*out = sqlite3_column_int64(st, 0);
	finish(m, st);
	return 0;
}

int meta_listing_get(struct meta *m, const char *dir, int64_t *expires_ms,
		     meta_entry_fn fn, void *ctx)
{
	sqlite3_stmt *st = m->st[ST_ENT_SCAN];
	struct meta_entry e;
	int64_t exp = 0;
	int rc;

	pthread_mutex_lock(&m->lock);
	rc = listing_expiry(m, dir, &exp);
	if (rc < 0)
		goto out;
	bind_str(m, st, 1, dir);
	while ((rc = step(m, st, "get listing", dir)) == 1) {
		memset(&e, 0, sizeof(e));
		e.is_dir = sqlite3_column_int(st, 1) != 0;
		rc = column_str(st, 0, &e.name);
		if (rc == 0 && !e.is_dir)
			rc = column_str(st, 2, &e.etag);
		if (rc == 0 && !e.is_dir) {
			if (!e.etag)
				e.etag = "";
			e.size = (uint64_t)sqlite3_column_int64(st, 3);
			e.mtime = sqlite3_column_int64(st, 4);
		}
		if (rc == 0)
			rc = fn(ctx, &e);
		if (rc < 0) {
			finish(m, st);
			break;
		}
	}
out:
	pthread_mutex_unlock(&m->lock);
	if (rc == 0 && expires_ms)
		*expires_ms = exp;
	return rc;
}

int meta_listing_find(struct meta *m, const char *dir, const char *name,
		      int64_t *expires_ms, bool *is_dir,
		      struct meta_object *obj)
{
	sqlite3_stmt *st = m->st[ST_ENT_FIND];
	struct meta_object o = { 0 };
	const char *key;
	int64_t exp = 0;
	bool dir_entry = false;
	int rc;

	pthread_mutex_lock(&m->lock);
	rc = listing_expiry(m, dir, &exp);
	if (rc < 0)
		goto out;
	bind_str(m, st, 1, dir);
	bind_str(m, st, 2, name);
	rc = step(m, st, "find entry", name);
	if (rc == 0) {
		rc = 1;
		goto out;
	}
	if (rc < 0)
		goto out;
	dir_entry = sqlite3_column_int(st, 0) != 0;
	rc = 0;
	if (!dir_entry && obj) {
		rc = column_str(st, 1, &key);
		if (rc == 0)
			rc = object_from_row(st, 2, key, &o);
	}
	finish(m, st);
out:
	pthread_mutex_unlock(&m->lock);
	if (rc >= 0 && expires_ms)
		*expires_ms = exp;
	if (rc == 0 && is_dir)
		*is_dir = dir_entry;
	if (rc == 0 && !dir_entry && obj)
		*obj = o;
	return rc;
}

int meta_listing_expire(struct meta *m, const char *dir)
{
	return run_key(m, ST_LIST_EXPIRE, dir, "expire listing");
}

int meta_chunk_put(struct meta *m, const struct meta_chunk *c)
{
	sqlite3_stmt *st = m->st[ST_CHUNK_PUT];
	int rc;

	pthread_mutex_lock(&m->lock);
	bind_str(m, st, 1, c->name);
	bind_str(m, st, 2, c->key);
	bind_str(m, st, 3, c->etag);
	bind_i64(m, st, 4, (int64_t)c->index);
	bind_i64(m, st, 5, (int64_t)c->disk_bytes);
	bind_i64(m, st, 6, c->atime_ms);
	rc = step(m, st, "put chunk", c->name);
	pthread_mutex_unlock(&m->lock);
	return rc;
}

int meta_chunk_delete_many(struct meta *m, const char *const *names, size_t n)
{
	sqlite3_stmt *st = m->st[ST_CHUNK_DELETE];
	size_t i;
	int rc;

	if (n == 0)
		return 0;
	pthread_mutex_lock(&m->lock);
	rc = tx_begin(m);
	if (rc < 0)
		goto out;
	for (i = 0; i < n && rc == 0; i++) {
		bind_str(m, st, 1, names[i]);
		rc = step(m, st, "delete chunk", names[i]);
	}
	rc = tx_end(m, rc);
out:
	pthread_mutex_unlock(&m->lock);
	return rc;
}

int meta_chunk_touch_many(struct meta *m, const struct meta_touch *t, size_t n)
{
	return touch_many(m, ST_CHUNK_TOUCH, t, n, "touch chunk");
}

/* Call @fn per row of @st (CHUNK_COLUMNS, bound); the caller holds the lock. */
static int scan_chunks(struct meta *m, sqlite3_stmt *st, meta_chunk_fn fn,
		       void *ctx, const char *subj)
{
	struct meta_chunk c;
	int rc;

	while ((rc = step(m, st, "scan chunks", subj)) == 1) {
		memset(&c, 0, sizeof(c));
		rc = column_str(st, 0, &c.name);
		if (rc == 0)
			rc = column_str(st, 1, &c.key);
		if (rc == 0)
			rc = column_str(st, 2, &c.etag);
		c.index = (uint64_t)sqlite3_column_int64(st, 3);
		c.disk_bytes = (uint64_t)sqlite3_column_int64(st, 4);
		c.atime_ms = sqlite3_column_int64(st, 5);
		if (rc == 0)
			rc = fn(ctx, &c);
		if (rc < 0) {
			finish(m, st);
			break;
		}
	}
	return rc;
}

int meta_chunk_scan(struct meta *m, meta_chunk_fn fn, void *ctx)
{
	int rc;

	pthread_mutex_lock(&m->lock);
	rc = scan_chunks(m, m->st[ST_CHUNK_SCAN], fn, ctx, NULL);
	pthread_mutex_unlock(&m->lock);
	return rc;
}

int meta_chunk_scan_other(struct meta *m, const char *key, const char *etag,
			  meta_chunk_fn fn, void *ctx)
{
	sqlite3_stmt *st = m->st[ST_CHUNK_SCAN_OTHER];
	int rc;

	pthread_mutex_lock(&m->lock);
	bind_str(m, st, 1, key);
	bind_str(m, st, 2, etag);
	rc = scan_chunks(m, st, fn, ctx, key);
	pthread_mutex_unlock(&m->lock);
	return rc;
}

int meta_clear(struct meta *m)
{
	int rc;

	pthread_mutex_lock(&m->lock);
	rc = tx_begin(m);
	if (rc == 0)
		rc = tx_end(m, clear_tables(m));
	pthread_mutex_unlock(&m->lock);
	return rc;
}
