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
 * other table but staged (a NULL conf->source neither checks nor records
 * it), or, when staged rows exist, fails with -EBUSY and changes nothing:
 * they are acknowledged writes still owed to the old source's bucket.
 *
 * Attributes: an object row's has_attrs, mode, uid, gid and attr_mtime
 * come from a HEAD or our own upload.  An upsert without them (a LIST, or
 * a HEAD that found none) keeps the row's while its ETag is the same, since
 * S3 cannot change an object's metadata without changing the object, and
 * drops them (has_attrs 0) when the ETag changed.  Rows without attributes
 * hold mode 0, uid and gid 4294967295 ((uint32_t)-1), attr_mtime 0.
 *
 * Prefixes: meta_forget_prefix() selects keys by a range (prefix <= key <
 * successor), not LIKE, so '%' and '_' in keys are plain bytes.
 *
 * Staged rows: never deleted by meta_clear() or a source change; only
 * meta_staged_delete() removes one.  Their ids are rowids, so an id may be
 * handed out again once its row and every higher one are deleted.
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

/*
 * Version 2: objects gain the attributes of their user metadata
 * (has_attrs 0 for every existing row: nothing is known about them yet;
 * uid and gid default to 4294967295, (uint32_t)-1: not given), and the
 * staged table holds the files written through the mount.  An INTEGER
 * PRIMARY KEY is the rowid: meta_staged_add() reads it back.
 */
static const char *const schema_v2[] = {
	"ALTER TABLE objects ADD COLUMN has_attrs INTEGER NOT NULL DEFAULT 0",
	"ALTER TABLE objects ADD COLUMN mode INTEGER NOT NULL DEFAULT 0",
	"ALTER TABLE objects ADD COLUMN uid INTEGER NOT NULL"
	" DEFAULT 4294967295",
	"ALTER TABLE objects ADD COLUMN gid INTEGER NOT NULL"
	" DEFAULT 4294967295",
	"ALTER TABLE objects ADD COLUMN attr_mtime INTEGER NOT NULL DEFAULT 0",
	"CREATE TABLE staged (id INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE,"
	" base_etag TEXT, base_size INTEGER NOT NULL, local BLOB,"
	" mode INTEGER NOT NULL, uid INTEGER NOT NULL, gid INTEGER NOT NULL,"
	" mtime INTEGER NOT NULL, upload_id TEXT,"
	" created_ms INTEGER NOT NULL)",
	NULL,
};

/*
 * Version 3: chunks gain data_len, the bytes of object data they hold (0
 * for rows of older versions: not known until the chunk is stored again),
 * and the counters table keeps statistics over the cache's life.
 */
static const char *const schema_v3[] = {
	"ALTER TABLE chunks ADD COLUMN data_len INTEGER NOT NULL DEFAULT 0",
	"CREATE TABLE counters (name TEXT PRIMARY KEY,"
	" value INTEGER NOT NULL) WITHOUT ROWID",
	NULL,
};

/* migrations[v] takes version v to v + 1; append, never edit. */
static const char *const *const migrations[] = {
	schema_v1,
	schema_v2,
	schema_v3,
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
	ST_ENT_ADD,
	ST_ENT_REMOVE,
	ST_FORGET_OBJECTS,
	ST_FORGET_LISTINGS,
	ST_FORGET_ENTRIES,
	ST_FORGET_NEGATIVES,
	ST_STAGED_ADD,
	ST_STAGED_UPDATE,
	ST_STAGED_DELETE,
	ST_STAGED_SCAN,
	ST_STAGED_COUNT,
	ST_CLEAR_OBJECTS,
	ST_CLEAR_LISTINGS,
	ST_CLEAR_ENTRIES,
	ST_CLEAR_NEGATIVES,
	ST_CLEAR_CHUNKS,
	ST_CLEAR_COUNTERS,
	ST_CHUNK_SCAN_PREFIX,
	ST_COUNTER_ADD,
	ST_COUNTER_SCAN,
	ST_OBJ_UNDER,
	ST_COUNT
};

/* Entries, each file with its object row when there is one. */
#define JOIN_OBJECT                                 \
	" FROM entries AS e LEFT JOIN objects AS o" \
	" ON e.is_dir = 0 AND o.key = e.dir || e.name"

#define CHUNK_COLUMNS \
	"SELECT name, key, etag, idx, disk_bytes, atime_ms, data_len"

/* Whether an upsert of objects keeps the row's attributes (see put_object()). */
#define KEEP_ATTRS "excluded.has_attrs = 0 AND etag = excluded.etag"

/*
 * Rows whose @col starts with ?1, ?2 being the least string above all of
 * them (see bind_prefix()).  A range, unlike LIKE or GLOB, has no wildcard
 * characters, and both of its ends bound the search of the primary key.
 */
#define PREFIX_RANGE(col) " WHERE " col " >= ?1 AND " col " < ?2"

#define STAGED_COLUMNS                                             \
	"key, base_etag, base_size, local, mode, uid, gid, mtime," \
	" upload_id, created_ms"

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
	/* ST_OBJ_GET and ST_ENT_FIND: the columns of object_from_row() */
	[ST_OBJ_GET] = "SELECT etag, size, mtime, checked_ms, expires_ms,"
		       " atime_ms, has_attrs, mode, uid, gid, attr_mtime"
		       " FROM objects WHERE key = ?1",
	/* SET expressions read the row as it was: etag is the old one */
	[ST_OBJ_PUT] = "INSERT INTO objects (key, etag, size, mtime,"
		       " checked_ms, expires_ms, atime_ms, has_attrs, mode,"
		       " uid, gid, attr_mtime)"
		       " VALUES (?1 || ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10,"
		       " ?11, ?12, ?13)"
		       " ON CONFLICT (key) DO UPDATE SET etag = excluded.etag,"
		       " size = excluded.size, mtime = excluded.mtime,"
		       " checked_ms = excluded.checked_ms,"
		       " expires_ms = excluded.expires_ms,"
		       " atime_ms = CASE excluded.atime_ms WHEN 0 THEN atime_ms"
		       " ELSE excluded.atime_ms END,"
		       " has_attrs = CASE WHEN " KEEP_ATTRS " THEN has_attrs"
		       " ELSE excluded.has_attrs END,"
		       " mode = CASE WHEN " KEEP_ATTRS " THEN mode"
		       " ELSE excluded.mode END,"
		       " uid = CASE WHEN " KEEP_ATTRS " THEN uid"
		       " ELSE excluded.uid END,"
		       " gid = CASE WHEN " KEEP_ATTRS " THEN gid"
		       " ELSE excluded.gid END,"
		       " attr_mtime = CASE WHEN " KEEP_ATTRS " THEN attr_mtime"
		       " ELSE excluded.attr_mtime END"
		       /* what a LIST or HEAD begun before a change of the
			* mount's learnt never replaces what the change wrote */
		       " WHERE excluded.checked_ms >= checked_ms",
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
		"SELECT e.name, e.is_dir, o.etag, o.size, o.mtime, o.has_attrs,"
		" o.mode, o.uid, o.gid, o.attr_mtime" JOIN_OBJECT
		" WHERE e.dir = ?1 ORDER BY e.name",
	[ST_ENT_FIND] =
		"SELECT e.is_dir, e.dir || e.name, o.etag, o.size, o.mtime,"
		" o.checked_ms, o.expires_ms, o.atime_ms, o.has_attrs, o.mode,"
		" o.uid, o.gid, o.attr_mtime" JOIN_OBJECT
		" WHERE e.dir = ?1 AND e.name = ?2",
	[ST_CHUNK_PUT] = "INSERT OR REPLACE INTO chunks"
			 " (name, key, etag, idx, disk_bytes, atime_ms,"
			 " data_len) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
	[ST_CHUNK_DELETE] = "DELETE FROM chunks WHERE name = ?1",
	[ST_CHUNK_TOUCH] = "UPDATE chunks SET atime_ms = ?2 WHERE name = ?1",
	[ST_CHUNK_SCAN] = CHUNK_COLUMNS " FROM chunks",
	[ST_CHUNK_SCAN_OTHER] = CHUNK_COLUMNS " FROM chunks WHERE key = ?1"
					      " AND (?2 IS NULL OR etag <> ?2)",
	[ST_ENT_ADD] = "INSERT OR REPLACE INTO entries (dir, name, is_dir)"
		       " SELECT ?1, ?2, ?3 WHERE EXISTS"
		       " (SELECT 1 FROM listings WHERE dir = ?1)",
	[ST_ENT_REMOVE] = "DELETE FROM entries WHERE dir = ?1 AND name = ?2",
	[ST_FORGET_OBJECTS] = "DELETE FROM objects" PREFIX_RANGE("key"),
	[ST_FORGET_LISTINGS] = "DELETE FROM listings" PREFIX_RANGE("dir"),
	[ST_FORGET_ENTRIES] = "DELETE FROM entries" PREFIX_RANGE("dir"),
	[ST_FORGET_NEGATIVES] = "DELETE FROM negatives" PREFIX_RANGE("key"),
	/* staged rows: ?1 the id (update only), ?2.. bind_staged()'s fields */
	[ST_STAGED_ADD] = "INSERT INTO staged (" STAGED_COLUMNS ")"
			  " VALUES (?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
	[ST_STAGED_UPDATE] = "UPDATE staged SET key = ?2, base_etag = ?3,"
			     " base_size = ?4, local = ?5, mode = ?6, uid = ?7,"
			     " gid = ?8, mtime = ?9, upload_id = ?10,"
			     " created_ms = ?11 WHERE id = ?1",
	[ST_STAGED_DELETE] = "DELETE FROM staged WHERE id = ?1",
	[ST_STAGED_SCAN] = "SELECT id, " STAGED_COLUMNS " FROM staged"
			   " ORDER BY id",
	[ST_STAGED_COUNT] = "SELECT count(*) FROM staged",
	[ST_CLEAR_OBJECTS] = "DELETE FROM objects",
	[ST_CLEAR_LISTINGS] = "DELETE FROM listings",
	[ST_CLEAR_ENTRIES] = "DELETE FROM entries",
	[ST_CLEAR_NEGATIVES] = "DELETE FROM negatives",
	[ST_CLEAR_CHUNKS] = "DELETE FROM chunks",
	[ST_CLEAR_COUNTERS] = "DELETE FROM counters",
	[ST_CHUNK_SCAN_PREFIX] = CHUNK_COLUMNS
	" FROM chunks" PREFIX_RANGE("key") " ORDER BY key, etag, idx",
	[ST_COUNTER_ADD] = "INSERT INTO counters (name, value) VALUES (?1, ?2)"
			   " ON CONFLICT (name) DO UPDATE"
			   " SET value = value + excluded.value",
	[ST_COUNTER_SCAN] = "SELECT name, value FROM counters ORDER BY name",
	[ST_OBJ_UNDER] = "SELECT 1 FROM objects" PREFIX_RANGE(
		"key") " AND expires_ms > ?3 LIMIT 1",
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

/* A BLOB of @len bytes at @p; SQL NULL when @len is 0. */
static void bind_blob(struct meta *m, sqlite3_stmt *st, int i, const void *p,
		      size_t len)
{
	int src;

	if (len)
		src = sqlite3_bind_blob64(st, i, p, len, SQLITE_STATIC);
	else
		src = sqlite3_bind_null(st, i);
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

/*
 * Step @st, a write that returns no row, to its end: 0, -EEXIST (not
 * logged) when it would break a UNIQUE constraint, or -errno (logged).
 */
static int step_unique(struct meta *m, sqlite3_stmt *st, const char *what,
		       const char *subj)
{
	int src = m->bind_rc;
	int rc = 0;

	if (src == SQLITE_OK) {
		src = sqlite3_step(st);
		if (src == SQLITE_DONE)
			src = SQLITE_OK;
	}
	if (src == SQLITE_CONSTRAINT &&
	    sqlite3_extended_errcode(m->db) == SQLITE_CONSTRAINT_UNIQUE)
		rc = -EEXIST;
	else if (src != SQLITE_OK)
		rc = fail(m, src, what, subj);
	finish(m, st);
	return rc;
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

	for (id = ST_CLEAR_OBJECTS; id <= ST_CLEAR_COUNTERS && rc == 0; id++)
		rc = run(m, (enum stmt_id)id, "clear", NULL);
	return rc;
}

/*
 * Refuse (-EBUSY, logged) to empty a cache that holds staged rows of @old:
 * they are writes acknowledged to a user and not yet in @old's bucket.
 */
static int check_staged(struct meta *m, const char *old)
{
	sqlite3_stmt *st = m->st[ST_STAGED_COUNT];
	const char *slash = strrchr(m->path, '/');
	int64_t n = 0;
	int dir_len;
	int rc;

	rc = step(m, st, "count staged", NULL);
	if (rc < 0)
		return rc;
	if (rc == 1) {
		n = sqlite3_column_int64(st, 0);
		finish(m, st);
	}
	if (n == 0)
		return 0;
	/* the database lives in the cache directory: name that to the user */
	if (!slash)
		dir_len = 1;
	else
		dir_len = slash == m->path ? 1 : (int)(slash - m->path);
	log_error("meta: cache dir '%.*s' holds %lld file%s written to '%s' "
		  "and not yet uploaded: mount that bucket to finish them, or "
		  "use another cache_dir",
		  dir_len, slash ? m->path : ".", (long long)n,
		  n == 1 ? "" : "s", old);
	return -EBUSY;
}

/*
 * Record @source, first emptying a cache that held another one, unless
 * that one has staged rows (-EBUSY).
 */
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
		rc = check_staged(m, old);
	if (rc == 0 && old)
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

/* Read the attribute columns @col on (has_attrs, mode, uid, gid, attr_mtime). */
static void attrs_from_row(sqlite3_stmt *st, int col, bool *has_attrs,
			   uint32_t *mode, uint32_t *uid, uint32_t *gid,
			   int64_t *attr_mtime)
{
	/* NULL (no object row) reads 0: no attributes */
	*has_attrs = sqlite3_column_int(st, col) != 0;
	if (!*has_attrs) {
		*mode = 0;
		*uid = *gid = (uint32_t)-1;
		*attr_mtime = 0;
		return;
	}
	*mode = (uint32_t)sqlite3_column_int64(st, col + 1);
	*uid = (uint32_t)sqlite3_column_int64(st, col + 2);
	*gid = (uint32_t)sqlite3_column_int64(st, col + 3);
	*attr_mtime = sqlite3_column_int64(st, col + 4);
}

/*
 * Fill @o from the row of @st, columns @col on: etag, size, mtime,
 * checked_ms, expires_ms, atime_ms, then attrs_from_row()'s; a NULL etag
 * (no object row) reads "".  Without attributes, @o gets the "not given"
 * values: mode 0, uid and gid (uint32_t)-1, attr_mtime 0.
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
	attrs_from_row(st, col + 6, &o->has_attrs, &o->mode, &o->uid, &o->gid,
		       &o->attr_mtime);
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

/*
 * Upsert the object (@prefix @name) and drop its negative entry.  With
 * @attrs NULL or without has_attrs, an existing row keeps its attributes
 * when its ETag is @etag and loses them (has_attrs 0) otherwise.
 */
static int put_object(struct meta *m, const char *prefix, const char *name,
		      const char *etag, uint64_t size, int64_t mtime,
		      int64_t checked_ms, int64_t expires_ms, int64_t atime_ms,
		      const struct meta_object *attrs)
{
	sqlite3_stmt *st = m->st[ST_OBJ_PUT];
	bool has = attrs && attrs->has_attrs;
	int rc;

	bind_str(m, st, 1, prefix);
	bind_str(m, st, 2, name);
	bind_str(m, st, 3, etag);
	bind_i64(m, st, 4, (int64_t)size);
	bind_i64(m, st, 5, mtime);
	bind_i64(m, st, 6, checked_ms);
	bind_i64(m, st, 7, expires_ms);
	bind_i64(m, st, 8, atime_ms);
	/* rows without attributes hold the "not given" values */
	bind_i64(m, st, 9, has);
	bind_i64(m, st, 10, has ? attrs->mode : 0);
	bind_i64(m, st, 11, has ? attrs->uid : (uint32_t)-1);
	bind_i64(m, st, 12, has ? attrs->gid : (uint32_t)-1);
	bind_i64(m, st, 13, has ? attrs->attr_mtime : 0);
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
					  o->expires_ms, o->atime_ms, o));
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
					e[i].mtime, fetched_ms, expires_ms, 0,
					NULL);
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
			attrs_from_row(st, 5, &e.has_attrs, &e.mode, &e.uid,
				       &e.gid, &e.attr_mtime);
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

int meta_listing_expiry(struct meta *m, const char *dir, int64_t *expires_ms)
{
	int rc;

	pthread_mutex_lock(&m->lock);
	rc = listing_expiry(m, dir, expires_ms);
	pthread_mutex_unlock(&m->lock);
	return rc;
}

int meta_listing_expire(struct meta *m, const char *dir)
{
	return run_key(m, ST_LIST_EXPIRE, dir, "expire listing");
}

int meta_entry_add(struct meta *m, const char *dir, const char *name,
		   bool is_dir)
{
	sqlite3_stmt *st = m->st[ST_ENT_ADD];
	int rc;

	pthread_mutex_lock(&m->lock);
	bind_str(m, st, 1, dir);
	bind_str(m, st, 2, name);
	bind_i64(m, st, 3, is_dir);
	rc = step(m, st, "add entry", name);
	pthread_mutex_unlock(&m->lock);
	return rc;
}

int meta_entry_remove(struct meta *m, const char *dir, const char *name)
{
	sqlite3_stmt *st = m->st[ST_ENT_REMOVE];
	int rc;

	pthread_mutex_lock(&m->lock);
	bind_str(m, st, 1, dir);
	bind_str(m, st, 2, name);
	rc = step(m, st, "remove entry", name);
	pthread_mutex_unlock(&m->lock);
	return rc;
}

/*
 * Bind ?1 and ?2 of a PREFIX_RANGE statement to select the strings that
 * start with @prefix.  ?2 is @prefix with its last byte that is not 0xff
 * incremented and what follows that byte dropped, which @end has room
 * for; when there is no such byte (@prefix is "" or all 0xff), an empty
 * BLOB, since SQLite sorts every TEXT value below every BLOB.
 */
static void bind_prefix(struct meta *m, sqlite3_stmt *st, const char *prefix,
			char *end)
{
	size_t len = strlen(prefix);
	int src;

	bind_str(m, st, 1, prefix);
	while (len > 0 && (unsigned char)prefix[len - 1] == 0xff)
		len--;
	if (len == 0) {
		src = sqlite3_bind_zeroblob(st, 2, 0);
		if (src != SQLITE_OK && m->bind_rc == SQLITE_OK)
			m->bind_rc = src;
		return;
	}
	memcpy(end, prefix, len - 1);
	end[len - 1] = (char)((unsigned char)prefix[len - 1] + 1);
	end[len] = '\0';
	bind_str(m, st, 2, end);
}

int meta_object_under(struct meta *m, const char *prefix, int64_t after_ms)
{
	sqlite3_stmt *st = m->st[ST_OBJ_UNDER];
	char *end;
	int rc;

	end = malloc(strlen(prefix) + 1);
	if (!end)
		return -ENOMEM;
	pthread_mutex_lock(&m->lock);
	bind_prefix(m, st, prefix, end);
	bind_i64(m, st, 3, after_ms);
	rc = step(m, st, "find object below", prefix);
	if (rc == 1)
		finish(m, st);
	pthread_mutex_unlock(&m->lock);
	free(end);
	return rc;
}

int meta_forget_prefix(struct meta *m, const char *prefix)
{
	static const enum stmt_id ids[] = { ST_FORGET_OBJECTS,
					    ST_FORGET_LISTINGS,
					    ST_FORGET_ENTRIES,
					    ST_FORGET_NEGATIVES };
	char *end;
	size_t i;
	int rc;

	/* the range's end: no longer than @prefix */
	end = malloc(strlen(prefix) + 1);
	if (!end)
		return -ENOMEM;
	pthread_mutex_lock(&m->lock);
	rc = tx_begin(m);
	if (rc < 0)
		goto out;
	for (i = 0; i < sizeof(ids) / sizeof(ids[0]) && rc == 0; i++) {
		bind_prefix(m, m->st[ids[i]], prefix, end);
		rc = run(m, ids[i], "forget prefix", prefix);
	}
	rc = tx_end(m, rc);
out:
	pthread_mutex_unlock(&m->lock);
	free(end);
	return rc;
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
	bind_i64(m, st, 7, (int64_t)c->data_len);
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
		c.data_len = (uint64_t)sqlite3_column_int64(st, 6);
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

int meta_chunk_scan_prefix(struct meta *m, const char *prefix, meta_chunk_fn fn,
			   void *ctx)
{
	sqlite3_stmt *st = m->st[ST_CHUNK_SCAN_PREFIX];
	char *end;
	int rc;

	end = malloc(strlen(prefix) + 1);
	if (!end)
		return -ENOMEM;
	pthread_mutex_lock(&m->lock);
	bind_prefix(m, st, prefix, end);
	rc = scan_chunks(m, st, fn, ctx, prefix);
	pthread_mutex_unlock(&m->lock);
	free(end);
	return rc;
}

int meta_counters_add(struct meta *m, const struct meta_counter *c, size_t n)
{
	sqlite3_stmt *st = m->st[ST_COUNTER_ADD];
	size_t i;
	int rc;

	if (n == 0)
		return 0;
	pthread_mutex_lock(&m->lock);
	rc = tx_begin(m);
	if (rc < 0)
		goto out;
	for (i = 0; i < n && rc == 0; i++) {
		if (c[i].value == 0)
			continue;
		bind_str(m, st, 1, c[i].name);
		bind_i64(m, st, 2, (int64_t)c[i].value);
		rc = step(m, st, "add counter", c[i].name);
	}
	rc = tx_end(m, rc);
out:
	pthread_mutex_unlock(&m->lock);
	return rc;
}

int meta_counters_scan(struct meta *m, meta_counter_fn fn, void *ctx)
{
	sqlite3_stmt *st = m->st[ST_COUNTER_SCAN];
	struct meta_counter c;
	int rc;

	pthread_mutex_lock(&m->lock);
	while ((rc = step(m, st, "scan counters", NULL)) == 1) {
		rc = column_str(st, 0, &c.name);
		c.value = (uint64_t)sqlite3_column_int64(st, 1);
		if (rc == 0 && c.name)
			rc = fn(ctx, &c);
		if (rc < 0) {
			finish(m, st);
			break;
		}
	}
	pthread_mutex_unlock(&m->lock);
	return rc;
}

int meta_info_get(struct meta *m, const char *k, char **out)
{
	sqlite3_stmt *st = m->st[ST_INFO_GET];
	const char *v = NULL;
	char *copy = NULL;
	int rc;

	pthread_mutex_lock(&m->lock);
	bind_str(m, st, 1, k);
	rc = step(m, st, "read", k);
	if (rc == 1) {
		rc = column_str(st, 0, &v);
		if (rc == 0 && !v)
			rc = -ENOENT;
		if (rc == 0) {
			copy = strdup(v);
			if (!copy)
				rc = -ENOMEM;
		}
		finish(m, st);
	} else if (rc == 0) {
		rc = -ENOENT;
	}
	pthread_mutex_unlock(&m->lock);
	if (rc == 0)
		*out = copy;
	return rc;
}

int meta_info_put(struct meta *m, const char *k, const char *v)
{
	sqlite3_stmt *st = m->st[ST_INFO_PUT];
	int rc;

	if (strcmp(k, "source") == 0)
		return -EINVAL;
	pthread_mutex_lock(&m->lock);
	bind_str(m, st, 1, k);
	bind_str(m, st, 2, v);
	rc = step(m, st, "write", k);
	pthread_mutex_unlock(&m->lock);
	return rc;
}

void meta_staged_release(struct meta_staged *s)
{
	if (!s)
		return;
	free(s->key);
	free(s->base_etag);
	free(s->local);
	free(s->upload_id);
	memset(s, 0, sizeof(*s));
}

/* Bind the fields of @s but its id to ?2.. of ST_STAGED_ADD or _UPDATE. */
static void bind_staged(struct meta *m, sqlite3_stmt *st,
			const struct meta_staged *s)
{
	bind_str(m, st, 2, s->key);
	bind_str(m, st, 3, s->base_etag);
	bind_i64(m, st, 4, (int64_t)s->base_size);
	bind_blob(m, st, 5, s->local, s->local_len);
	bind_i64(m, st, 6, s->mode);
	bind_i64(m, st, 7, s->uid);
	bind_i64(m, st, 8, s->gid);
	bind_i64(m, st, 9, s->mtime);
	bind_str(m, st, 10, s->upload_id);
	bind_i64(m, st, 11, s->created_ms);
}

int meta_staged_add(struct meta *m, struct meta_staged *s)
{
	sqlite3_stmt *st = m->st[ST_STAGED_ADD];
	int rc;

	pthread_mutex_lock(&m->lock);
	bind_staged(m, st, s);
	rc = step_unique(m, st, "add staged", s->key);
	if (rc == 0)
		s->id = sqlite3_last_insert_rowid(m->db);
	pthread_mutex_unlock(&m->lock);
	return rc;
}

int meta_staged_update(struct meta *m, const struct meta_staged *s)
{
	sqlite3_stmt *st = m->st[ST_STAGED_UPDATE];
	int rc;

	pthread_mutex_lock(&m->lock);
	bind_i64(m, st, 1, s->id);
	bind_staged(m, st, s);
	rc = step_unique(m, st, "update staged", s->key);
	if (rc == 0 && sqlite3_changes(m->db) == 0)
		rc = -ENOENT;
	pthread_mutex_unlock(&m->lock);
	return rc;
}

int meta_staged_delete(struct meta *m, int64_t id)
{
	sqlite3_stmt *st = m->st[ST_STAGED_DELETE];
	int rc;

	pthread_mutex_lock(&m->lock);
	bind_i64(m, st, 1, id);
	rc = run(m, ST_STAGED_DELETE, "delete staged", NULL);
	pthread_mutex_unlock(&m->lock);
	return rc;
}

/* A copy of @st's column @i (a string, or NULL), into *out: 0 or -ENOMEM. */
static int column_dup(sqlite3_stmt *st, int i, char **out)
{
	const char *s;
	int rc;

	rc = column_str(st, i, &s);
	if (rc < 0)
		return rc;
	*out = NULL;
	if (s) {
		*out = strdup(s);
		if (!*out)
			return -ENOMEM;
	}
	return 0;
}

/*
 * Fill @s from the row of ST_STAGED_SCAN (id, then STAGED_COLUMNS): 0, or
 * -ENOMEM with @s released.
 */
static int staged_from_row(sqlite3_stmt *st, struct meta_staged *s)
{
	const void *blob;
	int rc;

	memset(s, 0, sizeof(*s));
	s->id = sqlite3_column_int64(st, 0);
	rc = column_dup(st, 1, &s->key);
	if (rc == 0)
		rc = column_dup(st, 2, &s->base_etag);
	if (rc == 0)
		rc = column_dup(st, 9, &s->upload_id);
	if (rc < 0)
		goto out;
	/* _blob() before _bytes(); a zero-length BLOB reads NULL too */
	blob = sqlite3_column_blob(st, 4);
	s->local_len = (size_t)sqlite3_column_bytes(st, 4);
	if (s->local_len) {
		s->local = malloc(s->local_len);
		if (!blob || !s->local) {
			rc = -ENOMEM;
			goto out;
		}
		memcpy(s->local, blob, s->local_len);
	}
	s->base_size = (uint64_t)sqlite3_column_int64(st, 3);
	s->mode = (uint32_t)sqlite3_column_int64(st, 5);
	s->uid = (uint32_t)sqlite3_column_int64(st, 6);
	s->gid = (uint32_t)sqlite3_column_int64(st, 7);
	s->mtime = sqlite3_column_int64(st, 8);
	s->created_ms = sqlite3_column_int64(st, 10);
out:
	if (rc < 0)
		meta_staged_release(s);
	return rc;
}

int meta_staged_scan(struct meta *m, meta_staged_fn fn, void *ctx)
{
	sqlite3_stmt *st = m->st[ST_STAGED_SCAN];
	struct meta_staged s;
	int rc;

	pthread_mutex_lock(&m->lock);
	while ((rc = step(m, st, "scan staged", NULL)) == 1) {
		/* a copy: the callback cannot scribble on SQLite's buffers */
		rc = staged_from_row(st, &s);
		if (rc == 0)
			rc = fn(ctx, &s);
		meta_staged_release(&s);
		if (rc < 0) {
			finish(m, st);
			break;
		}
	}
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
