/*
 * admin.c - the commands of s3cachefs-ctl (see admin.h), over the metadata
 * store, the chunk store, the cache and the S3 client of one cache folder.
 *
 * Why here and not in the tool: a mounted cache may only be changed by the
 * process that holds it (its index is in memory), so the daemon runs the
 * commands for the tool; an unmounted one is changed by the tool itself.
 * Both run this code, so both behave alike.
 *
 * Counters: a.flushed holds the in-memory counters' values at the last
 * admin_flush() (all zero at admin_new(): the process's counters start
 * at zero); the store holds the sum of every flush of every process.
 * Reading them and flushing are under a.lock, so a stats never counts a
 * gain twice nor misses one.
 *
 * warm: the objects under the targets are listed first (one LIST per
 * target, no delimiter), their rows written (so that the vfs finds them
 * without a HEAD while meta_ttl lasts), then a pool of conf.parallel
 * workers (the caller among them) takes chunk jobs in order from a shared
 * cursor, fetching each chunk not cached with a ranged GET carrying
 * If-Match on the listed ETag, and admitting it under the name the vfs
 * gives it.  Output and the cursor are under warm.lock.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "s3cachefs/admin.h"
#include "s3cachefs/buf.h"
#include "s3cachefs/cache.h"
#include "s3cachefs/chunk.h"
#include "s3cachefs/log.h"
#include "s3cachefs/strutil.h"
#include "s3cachefs/meta.h"
#include "s3cachefs/parse.h"
#include "s3cachefs/s3.h"

#define PROGRESS_EVERY_MS 200
#define MAX_PARALLEL 16

/* The counters kept over the cache's life, by index. */
enum counter {
	C_HITS,
	C_MISSES,
	C_ADMITTED,
	C_EVICTIONS,
	C_EVICTED_BYTES,
	C_EXPIRED,
	C_CORRUPT,
	C_DISK_ERRORS,
	C_BYTES_DOWN,
	C_BYTES_UP,
	C_RETRIES,
	C_ERRORS,
	C_WRONG_KEY,
	C_REQ, /* S3_OP_COUNT of them: requests by kind */
	NCOUNTERS = C_REQ + S3_OP_COUNT
};

static const char *const counter_names[C_REQ] = {
	"hits",		  "misses",	   "admitted",
	"evictions",	  "evicted_bytes", "expired",
	"corrupt",	  "disk_errors",   "bytes_downloaded",
	"bytes_uploaded", "retries",	   "errors",
	"wrong_key",
};

struct admin {
	struct admin_conf conf; /* strings point to the copies below */
	char *cache_dir, *source, *endpoint, *bucket, *prefix;
	struct meta *m;
	struct chunk_store *cs;
	struct cache *c;
	struct s3 *s3;
	atomic_bool cancel;
	pthread_mutex_t lock;	     /* guards flushed */
	uint64_t flushed[NCOUNTERS]; /* lock */
};

/* One command being run: where its output goes. */
struct run {
	struct admin *a;
	const struct admin_cmd *cmd;
	admin_emit_fn emit;
	void *ctx;
	unsigned long errors_before;
};

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- parsing ---- */

static const struct {
	const char *name;
	enum admin_kind kind;
	size_t min, max; /* targets */
	bool json, in_mount, older_than;
} cmds[] = {
	{ "stats", ADMIN_STATS, 0, 0, true, false, false },
	{ "ls", ADMIN_LS, 0, 1, true, true, false },
	{ "clear", ADMIN_CLEAR, 0, 1, false, true, false },
	{ "gc", ADMIN_GC, 0, 0, false, false, true },
	{ "verify", ADMIN_VERIFY, 0, 0, false, false, false },
	{ "warm", ADMIN_WARM, 1, SIZE_MAX, false, true, false },
	{ "evict", ADMIN_EVICT, 1, SIZE_MAX, false, true, false },
};

#define NCMDS (sizeof(cmds) / sizeof(cmds[0]))

void admin_cmd_release(struct admin_cmd *c)
{
	size_t i;

	if (!c)
		return;
	for (i = 0; i < c->n; i++)
		free(c->targets[i]);
	free(c->targets);
	memset(c, 0, sizeof(*c));
}

static int add_target(struct admin_cmd *c, const char *t)
{
	char **v = realloc(c->targets, (c->n + 1) * sizeof(*v));

	if (!v)
		return -ENOMEM;
	c->targets = v;
	v[c->n] = strdup(t);
	if (!v[c->n])
		return -ENOMEM;
	c->n++;
	return 0;
}

int admin_parse(int argc, char *const *argv, struct admin_cmd *out,
		struct buf *err)
{
	struct admin_cmd c = { 0 };
	const char *name, *arg, *val;
	bool flags = true;
	size_t k;
	int i, rc = 0;

	if (argc < 1) {
		buf_adds(err, "missing command");
		return -EINVAL;
	}
	name = argv[0];
	for (k = 0; k < NCMDS && strcmp(cmds[k].name, name) != 0; k++)
		;
	if (k == NCMDS) {
		buf_addf(err, "unknown command '%.72s'", name);
		return -EINVAL;
	}
	c.kind = cmds[k].kind;
	for (i = 1; i < argc && rc == 0; i++) {
		arg = argv[i];
		if (!flags || arg[0] != '-' || arg[1] == '\0') {
			rc = add_target(&c, arg);
			if (rc < 0)
				buf_adds(err, "out of memory");
			continue;
		}
		if (strcmp(arg, "--") == 0) {
			flags = false;
		} else if (strcmp(arg, "--json") == 0 && cmds[k].json) {
			c.json = true;
		} else if (strcmp(arg, "--in-mount") == 0 && cmds[k].in_mount) {
			c.in_mount = true;
		} else if (cmds[k].older_than &&
			   (strcmp(arg, "--older-than") == 0 ||
			    strncmp(arg, "--older-than=", 13) == 0)) {
			val = arg[12] == '=' ? arg + 13 : NULL;
			if (!val && i + 1 < argc)
				val = argv[++i];
			if (!val) {
				buf_addf(err,
					 "%s: flag '--older-than' needs a "
					 "duration",
					 name);
				rc = -EINVAL;
			} else if (parse_duration_ms(val, &c.older_than_ms) <
					   0 ||
				   c.older_than_ms == 0) {
				buf_addf(err,
					 "%s: '%.72s' is not a duration above "
					 "0 (e.g. 30d, 12h, 90s)",
					 name, val);
				rc = -EINVAL;
			}
		} else {
			buf_addf(err, "%s: unknown flag '%.72s'", name, arg);
			rc = -EINVAL;
		}
	}
	if (rc == 0 && (c.n < cmds[k].min || c.n > cmds[k].max)) {
		if (c.n < cmds[k].min)
			buf_addf(err, "%s: expected a PATH", name);
		else if (cmds[k].max == 0)
			buf_addf(err, "%s: takes no argument, got '%.72s'",
				 name, c.targets[0]);
		else
			buf_addf(err, "%s: takes one PREFIX at most", name);
		rc = -EINVAL;
	}
	if (rc < 0) {
		admin_cmd_release(&c);
		return rc;
	}
	*out = c;
	return 0;
}

int admin_escape(struct buf *out, const char *s)
{
	int rc = 0;

	for (; *s && rc == 0; s++) {
		unsigned char ch = (unsigned char)*s;

		if (ch <= 0x20 || ch == '%' || ch == 0x7f)
			rc = buf_addf(out, "%%%02X", ch);
		else
			rc = buf_addc(out, (char)ch);
	}
	return rc;
}

static const char *kind_name(enum admin_kind kind)
{
	size_t k;

	for (k = 0; k < NCMDS; k++)
		if (cmds[k].kind == kind)
			return cmds[k].name;
	return "?";
}

int admin_encode(const struct admin_cmd *c, struct buf *out)
{
	char dur[48];
	size_t i;
	int rc;

	rc = buf_adds(out, kind_name(c->kind));
	if (rc == 0 && c->json)
		rc = buf_adds(out, " --json");
	if (rc == 0 && c->in_mount)
		rc = buf_adds(out, " --in-mount");
	if (rc == 0 && c->older_than_ms) {
		snprintf(dur, sizeof(dur), " --older-than %" PRIu64 "ms",
			 c->older_than_ms);
		rc = buf_adds(out, dur);
	}
	if (rc == 0 && c->n)
		rc = buf_adds(out, " --");
	for (i = 0; i < c->n && rc == 0; i++) {
		rc = buf_addc(out, ' ');
		if (rc == 0 && !c->targets[i][0])
			rc = buf_adds(out, "%00"); /* the empty word */
		else if (rc == 0)
			rc = admin_escape(out, c->targets[i]);
	}
	return rc;
}

/* Undo admin_escape() of @n bytes at @s into a new string. */
static int unescape(const char *s, size_t n, char **out)
{
	char *d = malloc(n + 1), *p = d;
	size_t i;
	int hi, lo;

	if (!d)
		return -ENOMEM;
	for (i = 0; i < n; i++) {
		if (s[i] != '%') {
			*p++ = s[i];
			continue;
		}
		if (i + 2 >= n) {
			free(d);
			return -EINVAL;
		}
		hi = hex_value(s[i + 1]);
		lo = hex_value(s[i + 2]);
		if (hi < 0 || lo < 0) {
			free(d);
			return -EINVAL;
		}
		/* %00 alone is the empty word; elsewhere NUL is refused */
		if (hi == 0 && lo == 0 && !(n == 3 && i == 0)) {
			free(d);
			return -EINVAL;
		}
		if (hi || lo)
			*p++ = (char)(hi * 16 + lo);
		i += 2;
	}
	*p = '\0';
	*out = d;
	return 0;
}

int admin_decode(const char *line, struct admin_cmd *out, struct buf *err)
{
	char **words = NULL, **v;
	size_t n = 0, i, len;
	const char *p = line, *end;
	int rc = 0;

	while (*p && rc == 0) {
		end = strchr(p, ' ');
		len = end ? (size_t)(end - p) : strlen(p);
		v = realloc(words, (n + 1) * sizeof(*v));
		if (!v) {
			rc = -ENOMEM;
			break;
		}
		words = v;
		if (len == 0) {
			rc = -EINVAL;
			break;
		}
		rc = unescape(p, len, &words[n]);
		if (rc == 0)
			n++;
		p += len;
		if (*p == ' ')
			p++;
	}
	if (rc == -EINVAL)
		buf_adds(err, "malformed request");
	else if (rc == -ENOMEM)
		buf_adds(err, "out of memory");
	if (rc == 0)
		rc = admin_parse((int)n, words, out, err);
	for (i = 0; i < n; i++)
		free(words[i]);
	free(words);
	return rc;
}

/* ---- output ---- */

static int emit(struct run *r, enum admin_line kind, const char *text)
{
	return r->emit(r->ctx, kind, text);
}

static __attribute__((format(printf, 3, 4))) int
emitf(struct run *r, enum admin_line kind, const char *fmt, ...)
{
	struct buf b = BUF_INIT(BUF_NO_LIMIT);
	va_list ap;
	int rc;

	va_start(ap, fmt);
	rc = buf_vaddf(&b, fmt, ap);
	va_end(ap);
	if (rc == 0)
		rc = emit(r, kind, buf_str(&b));
	buf_release(&b);
	return rc;
}

/*
 * The command failed with @rc: say why in one ADMIN_ERR line, unless the
 * caller already saw a logged error line.  Returns @rc.
 */
static __attribute__((format(printf, 3, 4))) int failf(struct run *r, int rc,
						       const char *fmt, ...)
{
	struct buf b = BUF_INIT(BUF_NO_LIMIT);
	va_list ap;

	if (r->a->conf.caller_sees_log && log_error_count() != r->errors_before)
		return rc;
	va_start(ap, fmt);
	if (buf_vaddf(&b, fmt, ap) == 0)
		emit(r, ADMIN_ERR, buf_str(&b));
	va_end(ap);
	buf_release(&b);
	return rc;
}

/* A key for a line of output: backslash and control bytes escaped. */
static int key_text(struct buf *out, const char *k)
{
	int rc = 0;

	for (; *k && rc == 0; k++) {
		unsigned char ch = (unsigned char)*k;

		if (ch == '\\')
			rc = buf_adds(out, "\\\\");
		else if (ch < 0x20 || ch == 0x7f)
			rc = buf_addf(out, "\\x%02x", ch);
		else
			rc = buf_addc(out, (char)ch);
	}
	return rc;
}

int admin_json_str(struct buf *out, const char *v)
{
	const unsigned char *p = (const unsigned char *)v;
	int rc = buf_addc(out, '"');
	size_t n, i;

	while (*p && rc == 0) {
		if (*p == '"' || *p == '\\') {
			rc = buf_addf(out, "\\%c", *p);
			p++;
			continue;
		}
		if (*p < 0x20) {
			rc = buf_addf(out, "\\u%04x", *p);
			p++;
			continue;
		}
		/* the length of a valid UTF-8 sequence here, or 0 */
		n = *p < 0x80		  ? 1
		    : (*p & 0xe0) == 0xc0 ? 2
		    : (*p & 0xf0) == 0xe0 ? 3
		    : (*p & 0xf8) == 0xf0 ? 4
					  : 0;
		for (i = 1; i < n; i++)
			if ((p[i] & 0xc0) != 0x80)
				n = 0;
		if (n == 0) {
			rc = buf_adds(out, "\\ufffd");
			p++;
			continue;
		}
		rc = buf_add(out, p, n);
		p += n;
	}
	if (rc == 0)
		rc = buf_addc(out, '"');
	return rc;
}

/* ---- counters ---- */

static void counters_now(struct admin *a, uint64_t v[NCOUNTERS])
{
	struct cache_stats cs = { 0 };
	struct s3_stats ss = { 0 };
	int i;

	if (a->c)
		cache_get_stats(a->c, &cs);
	if (a->s3)
		s3_get_stats(a->s3, &ss);
	v[C_HITS] = cs.hits;
	v[C_MISSES] = cs.misses;
	v[C_ADMITTED] = cs.admitted;
	v[C_EVICTIONS] = cs.evicted;
	v[C_EVICTED_BYTES] = cs.evicted_bytes;
	v[C_EXPIRED] = cs.expired;
	v[C_CORRUPT] = cs.corrupt;
	v[C_DISK_ERRORS] = cs.disk_errors;
	v[C_BYTES_DOWN] = ss.bytes_down;
	v[C_BYTES_UP] = ss.bytes_up;
	v[C_RETRIES] = ss.retries;
	v[C_ERRORS] = ss.errors;
	v[C_WRONG_KEY] = cs.wrong_key;
	for (i = 0; i < S3_OP_COUNT; i++)
		v[C_REQ + i] = ss.requests[i];
}

/* "requests.get" and the like; the others from counter_names. */
static void counter_name(int i, char *out, size_t n)
{
	if (i < C_REQ)
		snprintf(out, n, "%s", counter_names[i]);
	else
		snprintf(out, n, "requests.%s",
			 s3_op_name((enum s3_op)(i - C_REQ)));
}

int admin_flush(struct admin *a)
{
	struct meta_counter mc[NCOUNTERS];
	char names[NCOUNTERS][32];
	uint64_t now[NCOUNTERS];
	int i, rc;

	pthread_mutex_lock(&a->lock);
	counters_now(a, now);
	for (i = 0; i < NCOUNTERS; i++) {
		counter_name(i, names[i], sizeof(names[i]));
		mc[i].name = names[i];
		mc[i].value = now[i] - a->flushed[i];
	}
	rc = meta_counters_add(a->m, mc, NCOUNTERS);
	if (rc == 0)
		memcpy(a->flushed, now, sizeof(now));
	pthread_mutex_unlock(&a->lock);
	return rc;
}

static int take_counter(void *ctx, const struct meta_counter *c)
{
	uint64_t *v = ctx;
	char name[32];
	int i;

	for (i = 0; i < NCOUNTERS; i++) {
		counter_name(i, name, sizeof(name));
		if (strcmp(name, c->name) == 0) {
			v[i] = c->value;
			break;
		}
	}
	return 0;
}

/* The counters over the cache's life: the store's plus what is not in it. */
static int counters_total(struct admin *a, uint64_t v[NCOUNTERS])
{
	uint64_t now[NCOUNTERS];
	int i, rc;

	memset(v, 0, NCOUNTERS * sizeof(*v));
	pthread_mutex_lock(&a->lock);
	rc = meta_counters_scan(a->m, take_counter, v);
	counters_now(a, now);
	for (i = 0; i < NCOUNTERS; i++)
		v[i] += now[i] - a->flushed[i];
	pthread_mutex_unlock(&a->lock);
	return rc;
}

/* ---- stats ---- */

static int count_staged(void *ctx, const struct meta_staged *s)
{
	(void)s;
	(*(uint64_t *)ctx)++;
	return 0;
}

static int cmd_stats(struct run *r)
{
	struct admin *a = r->a;
	struct buf b = BUF_INIT(BUF_NO_LIMIT);
	uint64_t v[NCOUNTERS], staged = 0, lookups;
	struct cache_stats cs = { 0 };
	double rate;
	int i, rc;

	rc = counters_total(a, v);
	if (rc == 0)
		rc = meta_staged_scan(a->m, count_staged, &staged);
	if (rc < 0)
		return failf(r, rc, "stats: cannot read the metadata of '%s'",
			     a->conf.cache_dir);
	if (a->c)
		cache_get_stats(a->c, &cs);
	lookups = v[C_HITS] + v[C_MISSES];
	rate = lookups ? (double)v[C_HITS] / (double)lookups : 0.0;
	if (r->cmd->json) {
		rc = buf_adds(&b, "{\"cache_dir\":");
		rc |= admin_json_str(&b, a->conf.cache_dir);
		rc |= buf_adds(&b, ",\"bucket\":");
		rc |= admin_json_str(&b, a->conf.bucket);
		rc |= buf_adds(&b, ",\"endpoint\":");
		rc |= admin_json_str(&b, a->conf.endpoint);
		rc |= buf_addf(
			&b,
			",\"mounted\":%s,\"entries\":%" PRIu64
			",\"chunks\":%" PRIu64 ",\"bytes_on_disk\":%" PRIu64
			",\"logical_bytes\":%" PRIu64 ",\"cap_bytes\":%" PRIu64
			",\"max_entries\":%" PRIu64 ",\"max_age_ms\":%" PRIu64
			",\"staged_files\":%" PRIu64 ",\"hit_rate\":%.4f",
			a->conf.live ? "true" : "false", cs.objects, cs.chunks,
			cs.used_bytes, cs.data_bytes, cs.cap_bytes,
			cs.max_entries, cs.max_age_ms, staged, rate);
		for (i = 0; i < C_REQ; i++)
			rc |= buf_addf(&b, ",\"%s\":%" PRIu64, counter_names[i],
				       v[i]);
		rc |= buf_adds(&b, ",\"requests\":{");
		for (i = 0; i < S3_OP_COUNT; i++)
			rc |= buf_addf(&b, "%s\"%s\":%" PRIu64, i ? "," : "",
				       s3_op_name((enum s3_op)i), v[C_REQ + i]);
		rc |= buf_adds(&b, "}}");
		if (rc == 0)
			rc = emit(r, ADMIN_OUT, buf_str(&b));
		else
			rc = -ENOMEM;
		buf_release(&b);
		return rc;
	}
	rc = emitf(r, ADMIN_OUT, "cache dir:        %s", a->conf.cache_dir);
	if (rc == 0)
		rc = emitf(r, ADMIN_OUT, "bucket:           %s%s%s",
			   a->conf.bucket, a->conf.endpoint[0] ? " at " : "",
			   a->conf.endpoint);
	if (rc == 0)
		rc = emitf(r, ADMIN_OUT, "state:            %s",
			   a->conf.live ? "mounted" : "not mounted");
	if (rc == 0)
		rc = emitf(r, ADMIN_OUT,
			   "entries:          %" PRIu64 " objects in %" PRIu64
			   " chunks (limit %" PRIu64 ", 0: none)",
			   cs.objects, cs.chunks, cs.max_entries);
	if (rc == 0)
		rc = emitf(r, ADMIN_OUT,
			   "bytes on disk:    %" PRIu64 " of %" PRIu64 " (cap)",
			   cs.used_bytes, cs.cap_bytes);
	if (rc == 0)
		rc = emitf(r, ADMIN_OUT, "logical bytes:    %" PRIu64,
			   cs.data_bytes);
	if (rc == 0)
		rc = emitf(r, ADMIN_OUT,
			   "hit rate:         %.1f%% (%" PRIu64
			   " hits, %" PRIu64 " misses)",
			   rate * 100.0, v[C_HITS], v[C_MISSES]);
	if (rc == 0)
		rc = emitf(r, ADMIN_OUT,
			   "evictions:        %" PRIu64 " chunks, %" PRIu64
			   " bytes (%" PRIu64 " for age; max age %" PRIu64
			   " ms, 0: none)",
			   v[C_EVICTIONS], v[C_EVICTED_BYTES], v[C_EXPIRED],
			   cs.max_age_ms);
	if (rc == 0)
		rc = emitf(r, ADMIN_OUT,
			   "corrupt chunks:   %" PRIu64
			   " (under another key %" PRIu64
			   ", disk errors %" PRIu64 ")",
			   v[C_CORRUPT], v[C_WRONG_KEY], v[C_DISK_ERRORS]);
	if (rc == 0)
		rc = emitf(r, ADMIN_OUT, "downloaded:       %" PRIu64 " bytes",
			   v[C_BYTES_DOWN]);
	if (rc == 0)
		rc = emitf(r, ADMIN_OUT, "uploaded:         %" PRIu64 " bytes",
			   v[C_BYTES_UP]);
	for (i = 0; i < S3_OP_COUNT && rc == 0; i++) {
		if (i)
			rc = buf_adds(&b, ", ");
		if (rc == 0)
			rc = buf_addf(&b, "%s %" PRIu64,
				      s3_op_name((enum s3_op)i), v[C_REQ + i]);
	}
	if (rc == 0)
		rc = emitf(r, ADMIN_OUT,
			   "requests:         %s (retries %" PRIu64
			   ", errors %" PRIu64 ")",
			   buf_str(&b), v[C_RETRIES], v[C_ERRORS]);
	if (rc == 0)
		rc = emitf(r, ADMIN_OUT, "files being written: %" PRIu64,
			   staged);
	buf_release(&b);
	return rc;
}

/* ---- targets ---- */

/* The key (or key prefix) target @t stands for: caller frees. */
static char *target_key(const struct run *r, const char *t)
{
	char *k = NULL;

	if (r->cmd->in_mount) {
		if (asprintf(&k, "%s%s", r->a->conf.prefix, t) < 0)
			k = NULL;
	} else {
		k = strdup(t);
	}
	return k;
}

/* Whether @key is under target key @t (see struct admin_cmd). */
static bool under(const char *key, const char *t)
{
	size_t n = strlen(t);

	if (n == 0 || t[n - 1] == '/')
		return strncmp(key, t, n) == 0;
	return strncmp(key, t, n) == 0 && (key[n] == '\0' || key[n] == '/');
}

/* ---- ls ---- */

struct ls_obj {
	char *key, *etag;
	uint64_t chunks, data, disk;
};

struct ls_ctx {
	struct ls_obj *v;
	size_t n, cap;
};

static int ls_row(void *ctx, const struct meta_chunk *mc)
{
	struct ls_ctx *l = ctx;
	struct ls_obj *o = l->n ? &l->v[l->n - 1] : NULL;
	const char *etag = mc->etag ? mc->etag : "";

	if (!mc->key)
		return 0;
	if (!o || strcmp(o->key, mc->key) != 0 || strcmp(o->etag, etag) != 0) {
		if (l->n == l->cap) {
			size_t cap = l->cap ? 2 * l->cap : 64;
			struct ls_obj *v = realloc(l->v, cap * sizeof(*v));

			if (!v)
				return -ENOMEM;
			l->v = v;
			l->cap = cap;
		}
		o = &l->v[l->n];
		memset(o, 0, sizeof(*o));
		o->key = strdup(mc->key);
		o->etag = strdup(etag);
		l->n++;
		if (!o->key || !o->etag)
			return -ENOMEM;
	}
	o->chunks++;
	o->data += mc->data_len;
	o->disk += mc->disk_bytes;
	return 0;
}

static int cmd_ls(struct run *r)
{
	struct buf b = BUF_INIT(BUF_NO_LIMIT);
	struct ls_ctx l = { 0 };
	struct meta_object mo;
	char *prefix;
	uint64_t size;
	bool known;
	size_t i;
	int rc;

	prefix = target_key(r, r->cmd->n ? r->cmd->targets[0] : "");
	if (!prefix)
		return failf(r, -ENOMEM, "out of memory");
	rc = meta_chunk_scan_prefix(r->a->m, prefix, ls_row, &l);
	if (rc < 0) {
		rc = failf(r, rc, "ls: cannot read the metadata of '%s'",
			   r->a->conf.cache_dir);
		goto out;
	}
	if (r->cmd->json)
		rc = buf_addc(&b, '[');
	for (i = 0; i < l.n && rc == 0; i++) {
		known = meta_object_get(r->a->m, l.v[i].key, &mo) == 0;
		size = known && strcmp(mo.etag, l.v[i].etag) == 0 ? mo.size : 0;
		if (known)
			meta_object_release(&mo);
		if (r->cmd->json) {
			rc = buf_adds(&b, i ? ",{\"key\":" : "{\"key\":");
			rc |= admin_json_str(&b, l.v[i].key);
			rc |= buf_adds(&b, ",\"etag\":");
			rc |= admin_json_str(&b, l.v[i].etag);
			rc |= buf_addf(&b,
				       ",\"size\":%" PRIu64
				       ",\"cached_bytes\":%" PRIu64
				       ",\"chunks\":%" PRIu64
				       ",\"disk_bytes\":%" PRIu64 "}",
				       size, l.v[i].data, l.v[i].chunks,
				       l.v[i].disk);
			rc = rc ? -ENOMEM : 0;
			continue;
		}
		buf_reset(&b);
		if (size)
			rc = buf_addf(&b, "%" PRIu64 "\t%" PRIu64 "\t",
				      l.v[i].data, size);
		else
			rc = buf_addf(&b, "%" PRIu64 "\t-\t", l.v[i].data);
		if (rc == 0)
			rc = buf_addf(&b, "%" PRIu64 "\t", l.v[i].chunks);
		if (rc == 0)
			rc = key_text(&b, l.v[i].key);
		if (rc == 0)
			rc = emit(r, ADMIN_OUT, buf_str(&b));
	}
	if (rc == 0 && r->cmd->json) {
		rc = buf_addc(&b, ']');
		if (rc == 0)
			rc = emit(r, ADMIN_OUT, buf_str(&b));
	}
	if (rc == -ENOMEM)
		rc = failf(r, rc, "out of memory");
out:
	for (i = 0; i < l.n; i++) {
		free(l.v[i].key);
		free(l.v[i].etag);
	}
	free(l.v);
	free(prefix);
	buf_release(&b);
	return rc;
}

/* ---- clear, evict ---- */

static int need_cache(struct run *r)
{
	if (r->a->c)
		return 0;
	return failf(r, -EINVAL, "%s: no cache open", kind_name(r->cmd->kind));
}

/* Drop what target key @t covers, adding to @sum. */
static int drop_target(struct run *r, const char *t, bool raw,
		       struct cache_drop_result *sum)
{
	struct cache_drop_result d = { 0 };
	size_t n = strlen(t);
	char *below = NULL;
	int rc;

	if (raw || n == 0 || t[n - 1] == '/') {
		rc = cache_drop_prefix(r->a->c, t, false, &d);
	} else {
		rc = cache_drop_prefix(r->a->c, t, true, &d);
		sum->chunks += d.chunks;
		sum->bytes += d.bytes;
		memset(&d, 0, sizeof(d));
		if (rc == 0 && asprintf(&below, "%s/", t) < 0) {
			below = NULL;
			rc = -ENOMEM;
		}
		if (rc == 0)
			rc = cache_drop_prefix(r->a->c, below, false, &d);
		free(below);
	}
	sum->chunks += d.chunks;
	sum->bytes += d.bytes;
	return rc;
}

struct staged_count {
	const char *prefix;
	uint64_t n;
};

static int count_staged_under(void *ctx, const struct meta_staged *s)
{
	struct staged_count *sc = ctx;

	if (strncmp(s->key, sc->prefix, strlen(sc->prefix)) == 0)
		sc->n++;
	return 0;
}

static int cmd_drop(struct run *r)
{
	struct cache_drop_result sum = { 0 };
	struct staged_count sc = { 0 };
	bool clear = r->cmd->kind == ADMIN_CLEAR;
	const char *what = clear ? "clear" : "evict";
	char *key = NULL;
	size_t i;
	int rc;

	rc = need_cache(r);
	if (rc < 0)
		return rc;
	if (clear && r->cmd->n == 0) {
		rc = drop_target(r, "", true, &sum);
		sc.prefix = "";
	}
	for (i = 0; i < r->cmd->n && rc == 0; i++) {
		free(key);
		key = target_key(r, r->cmd->targets[i]);
		if (!key) {
			rc = -ENOMEM;
			break;
		}
		rc = drop_target(r, key, clear, &sum);
		if (clear)
			sc.prefix = key;
	}
	if (rc < 0) {
		rc = failf(r, rc, "%s: %s", what, strerror(-rc));
		goto out;
	}
	if (clear)
		meta_staged_scan(r->a->m, count_staged_under, &sc);
	rc = emitf(r, ADMIN_OUT,
		   "%s: dropped %" PRIu64 " chunks, %" PRIu64 " bytes on disk",
		   what, sum.chunks, sum.bytes);
	if (rc == 0 && sc.n)
		rc = emitf(r, ADMIN_OUT,
			   "%s: kept %" PRIu64 " file%s being written", what,
			   sc.n, sc.n == 1 ? "" : "s");
out:
	free(key);
	return rc;
}

/* ---- gc, verify ---- */

static int cmd_gc(struct run *r)
{
	struct cache_gc_result g = { 0 };
	struct cache_stats cs;
	int rc;

	rc = need_cache(r);
	if (rc == 0)
		rc = cache_gc(r->a->c, r->cmd->older_than_ms, &g);
	if (rc < 0)
		return failf(r, rc, "gc: %s", strerror(-rc));
	if (!r->a->conf.live) {
		/* the tool opened the cache for this: count its reconciling */
		cache_get_stats(r->a->c, &cs);
		g.orphan_files += cs.open_orphans;
		g.stale_rows += cs.open_stale;
	}
	return emitf(r, ADMIN_OUT,
		     "gc: evicted %" PRIu64 " chunks over the cap, %" PRIu64
		     " too old, %" PRIu64 " over the entry limit (%" PRIu64
		     " bytes); removed %" PRIu64 " orphan files, %" PRIu64
		     " stale rows, %" PRIu64 " lost chunks",
		     g.evicted, g.expired, g.capped, g.freed_bytes,
		     g.orphan_files, g.stale_rows, g.missing);
}

static int cmd_verify(struct run *r)
{
	struct cache_verify_result v = { 0 };
	int rc;

	rc = need_cache(r);
	if (rc == 0)
		rc = cache_verify(r->a->c, &v);
	if (rc < 0)
		return failf(r, rc,
			     "verify: stopped after %" PRIu64 " chunks: %s",
			     v.checked, strerror(-rc));
	return emitf(r, ADMIN_OUT,
		     "verify: checked %" PRIu64 " chunks, dropped %" PRIu64
		     " bad",
		     v.checked, v.bad);
}

/* ---- warm ---- */

struct warm_obj {
	char *key, *etag;
	uint64_t size;
	int64_t mtime;
	uint64_t left; /* chunks not done yet */
	int rc;	       /* first failure */
};

struct warm {
	struct run *r;
	const char *target; /* while listing: the target's key */
	bool matched;	    /* while listing: the target matched an object */
	struct warm_obj *v;
	size_t n, cap;
	uint64_t bytes_total;
	pthread_mutex_t lock; /* guards everything below and the output */
	size_t next_obj;
	uint64_t next_idx;
	size_t objs_done, failed;
	uint64_t bytes_done, fetched;
	int stop_rc; /* the output failed or the command was cancelled */
	int64_t last_progress;
};

static int warm_page(void *ctx, const struct s3_list_page *p)
{
	struct warm *w = ctx;
	struct warm_obj *o;
	size_t i, k;

	for (i = 0; i < p->n_entries; i++) {
		const struct s3_list_entry *e = &p->entries[i];
		size_t klen = strlen(e->key);

		if (!under(e->key, w->target))
			continue;
		/* directory markers hold no data */
		if (klen && e->key[klen - 1] == '/')
			continue;
		w->matched = true;
		/* targets may overlap: each object once */
		for (k = 0; k < w->n; k++)
			if (strcmp(w->v[k].key, e->key) == 0)
				break;
		if (k < w->n)
			continue;
		if (w->n == w->cap) {
			size_t cap = w->cap ? 2 * w->cap : 64;
			struct warm_obj *v = realloc(w->v, cap * sizeof(*v));

			if (!v)
				return -ENOMEM;
			w->v = v;
			w->cap = cap;
		}
		o = &w->v[w->n];
		memset(o, 0, sizeof(*o));
		o->key = strdup(e->key);
		o->etag = strdup(e->etag ? e->etag : "");
		o->size = e->size;
		o->mtime = e->mtime;
		w->n++;
		if (!o->key || !o->etag)
			return -ENOMEM;
		w->bytes_total += e->size;
	}
	return atomic_load(&w->r->a->cancel) ? -ECANCELED : 0;
}

/* Under w.lock: a progress line when due (or @force). */
static void warm_progress_locked(struct warm *w, bool force)
{
	int64_t t = mono_ms();
	char line[128];

	if (!force && t - w->last_progress < PROGRESS_EVERY_MS)
		return;
	w->last_progress = t;
	snprintf(line, sizeof(line), "%zu %zu %" PRIu64 " %" PRIu64,
		 w->objs_done, w->n, w->bytes_done, w->bytes_total);
	if (emit(w->r, ADMIN_PROGRESS, line) < 0 && !w->stop_rc)
		w->stop_rc = -EPIPE;
}

/* Under w.lock: object @o is done. */
static void warm_obj_done_locked(struct warm *w, struct warm_obj *o)
{
	struct buf b = BUF_INIT(BUF_NO_LIMIT);
	int rc;

	w->objs_done++;
	if (o->rc)
		w->failed++;
	rc = buf_adds(&b, o->rc ? "failed " : "warmed ");
	if (rc == 0)
		rc = key_text(&b, o->key);
	if (rc == 0 && o->rc)
		rc = buf_addf(&b, ": %s",
			      o->rc == -ESTALE ? "it changed on S3"
					       : strerror(-o->rc));
	else if (rc == 0)
		rc = buf_addf(&b, " (%" PRIu64 " bytes)", o->size);
	if (rc == 0)
		rc = emit(w->r, o->rc ? ADMIN_OUT : ADMIN_ITEM, buf_str(&b));
	if (rc < 0 && !w->stop_rc)
		w->stop_rc = rc == -ENOMEM ? rc : -EPIPE;
	buf_release(&b);
	warm_progress_locked(w, true);
}

static int sink_buf(void *ctx, const void *data, size_t len)
{
	int rc = buf_add(ctx, data, len);

	return rc == -EMSGSIZE ? -EIO : rc;
}

/* Fetch and admit chunk @index of @o unless cached: 0 or -errno. */
static int warm_chunk(struct warm *w, const struct warm_obj *o, uint64_t index,
		      struct buf *data, bool *fetched)
{
	struct admin *a = w->r->a;
	uint64_t len = chunk_len_of(index, o->size, a->conf.chunk_size);
	struct chunk_id id = {
		.endpoint = a->conf.endpoint,
		.bucket = a->conf.bucket,
		.key = o->key,
		.etag = o->etag,
		.index = index,
	};
	struct s3_get_opts opts = {
		.offset = index * a->conf.chunk_size,
		.length = len,
		.if_match = o->etag,
	};
	struct cache_ref ref = { .key = o->key,
				 .etag = o->etag,
				 .index = index };
	char name[CHUNK_NAME_LEN + 1];
	int rc;

	*fetched = false;
	chunk_name(&id, name);
	if (cache_contains(a->c, name))
		return 0;
	buf_reset(data);
	rc = buf_grow(data, len);
	if (rc == 0)
		rc = s3_get(a->s3, o->key, &opts, sink_buf, data, NULL);
	if (rc == 0 && data->len != len) {
		log_warn("'%s': chunk %" PRIu64 " came with %zu bytes, not "
			 "%" PRIu64,
			 o->key, index, data->len, len);
		rc = -EIO;
	}
	if (rc == 0)
		rc = cache_put(a->c, name, &ref, data->data, data->len);
	if (rc == 0)
		*fetched = true;
	return rc;
}

static void *warm_worker(void *arg)
{
	struct warm *w = arg;
	struct buf data = BUF_INIT(CHUNK_SIZE_MAX);
	uint64_t cs = w->r->a->conf.chunk_size, index, len;
	struct warm_obj *o;
	bool fetched;
	int rc;

	for (;;) {
		pthread_mutex_lock(&w->lock);
		if (!w->stop_rc && atomic_load(&w->r->a->cancel))
			w->stop_rc = -ECANCELED;
		/* objects without data are done already */
		while (w->next_obj < w->n && w->v[w->next_obj].size == 0)
			w->next_obj++;
		if (w->stop_rc || w->next_obj >= w->n) {
			pthread_mutex_unlock(&w->lock);
			break;
		}
		o = &w->v[w->next_obj];
		index = w->next_idx;
		if (index + 1 >= chunk_count_of(o->size, cs)) {
			w->next_obj++;
			w->next_idx = 0;
		} else {
			w->next_idx++;
		}
		rc = o->rc;
		pthread_mutex_unlock(&w->lock);

		fetched = false;
		/* after a failure the object's other chunks are skipped */
		if (rc == 0)
			rc = warm_chunk(w, o, index, &data, &fetched);
		len = chunk_len_of(index, o->size, cs);

		pthread_mutex_lock(&w->lock);
		w->bytes_done += len;
		if (fetched)
			w->fetched += len;
		if (rc < 0 && !o->rc)
			o->rc = rc;
		if (--o->left == 0)
			warm_obj_done_locked(w, o);
		else
			warm_progress_locked(w, false);
		pthread_mutex_unlock(&w->lock);
	}
	buf_release(&data);
	return NULL;
}

/* Rows for the objects, so that the vfs knows them without asking S3. */
static int warm_rows(struct warm *w)
{
	struct admin *a = w->r->a;
	int64_t t = now_ms();
	struct meta_object mo;
	size_t i;
	int rc = 0;

	for (i = 0; i < w->n && rc == 0; i++) {
		memset(&mo, 0, sizeof(mo));
		mo.key = w->v[i].key;
		mo.etag = w->v[i].etag;
		mo.size = w->v[i].size;
		mo.mtime = w->v[i].mtime;
		mo.checked_ms = t;
		mo.expires_ms = t + (int64_t)a->conf.meta_ttl_ms;
		rc = meta_object_put(a->m, &mo);
		w->v[i].left = chunk_count_of(w->v[i].size, a->conf.chunk_size);
	}
	return rc;
}

static int cmd_warm(struct run *r)
{
	struct admin *a = r->a;
	struct warm w = { .r = r };
	pthread_t th[MAX_PARALLEL];
	unsigned nth = 0, want;
	int64_t t0 = mono_ms();
	double secs;
	char *key = NULL;
	uint64_t chunks = 0;
	size_t i;
	int rc = 0;

	rc = need_cache(r);
	if (rc < 0)
		return rc;
	if (!a->s3)
		return failf(r, -ENOTCONN, "warm: no connection to bucket '%s'",
			     a->conf.bucket);
	pthread_mutex_init(&w.lock, NULL);
	for (i = 0; i < r->cmd->n && rc == 0; i++) {
		free(key);
		key = target_key(r, r->cmd->targets[i]);
		if (!key) {
			rc = failf(r, -ENOMEM, "out of memory");
			break;
		}
		w.target = key;
		w.matched = false;
		rc = s3_list_all(a->s3, key, NULL, warm_page, &w);
		if (rc < 0)
			rc = failf(r, rc, "warm: cannot list '%s': %s", key,
				   strerror(-rc));
		else if (!w.matched)
			rc = failf(r, -ENOENT, "warm: no object at '%s'", key);
	}
	if (rc == 0) {
		rc = warm_rows(&w);
		if (rc < 0)
			rc = failf(r, rc, "warm: cannot record objects in '%s'",
				   a->conf.cache_dir);
	}
	if (rc < 0)
		goto out;
	for (i = 0; i < w.n; i++) {
		chunks += w.v[i].left;
		if (w.v[i].left == 0) {
			pthread_mutex_lock(&w.lock);
			warm_obj_done_locked(&w, &w.v[i]);
			pthread_mutex_unlock(&w.lock);
		}
	}
	want = a->conf.parallel ? a->conf.parallel : 1;
	if (want > MAX_PARALLEL)
		want = MAX_PARALLEL;
	if (chunks < want)
		want = chunks ? (unsigned)chunks : 1;
	/* the caller is one of the workers */
	for (nth = 0; nth + 1 < want; nth++)
		if (pthread_create(&th[nth], NULL, warm_worker, &w) != 0)
			break;
	warm_worker(&w);
	for (i = 0; i < nth; i++)
		pthread_join(th[i], NULL);
	if (w.stop_rc) {
		rc = w.stop_rc == -ECANCELED
			     ? failf(r, w.stop_rc, "warm: cancelled")
			     : w.stop_rc;
		goto out;
	}
	secs = (double)(mono_ms() - t0) / 1000.0;
	rc = emitf(r, ADMIN_OUT,
		   "warm: %zu objects, %" PRIu64 " bytes (%" PRIu64
		   " fetched) in %.1f s",
		   w.n - w.failed, w.bytes_done, w.fetched, secs);
	if (rc == 0 && w.failed)
		rc = failf(r, -EIO, "warm: %zu of %zu objects failed", w.failed,
			   w.n);
out:
	for (i = 0; i < w.n; i++) {
		free(w.v[i].key);
		free(w.v[i].etag);
	}
	free(w.v);
	free(key);
	pthread_mutex_destroy(&w.lock);
	return rc;
}

/* ---- the module ---- */

int admin_run(struct admin *a, const struct admin_cmd *cmd,
	      admin_emit_fn emit_fn, void *ctx)
{
	struct run r = { .a = a,
			 .cmd = cmd,
			 .emit = emit_fn,
			 .ctx = ctx,
			 .errors_before = log_error_count() };

	if (atomic_load(&a->cancel))
		return failf(&r, -ECANCELED, "the mount is stopping");
	switch (cmd->kind) {
	case ADMIN_STATS:
		return cmd_stats(&r);
	case ADMIN_LS:
		return cmd_ls(&r);
	case ADMIN_CLEAR:
	case ADMIN_EVICT:
		return cmd_drop(&r);
	case ADMIN_GC:
		return cmd_gc(&r);
	case ADMIN_VERIFY:
		return cmd_verify(&r);
	case ADMIN_WARM:
		return cmd_warm(&r);
	}
	return failf(&r, -EINVAL, "unknown command");
}

void admin_cancel(struct admin *a)
{
	atomic_store(&a->cancel, true);
}

void admin_recorded(struct meta *m, const char *k, uint64_t *out)
{
	char *v = NULL;
	uint64_t n;

	if (meta_info_get(m, k, &v) == 0 &&
	    parse_uint(v, 0, UINT64_MAX, &n) == 0)
		*out = n;
	free(v);
}

/* Write the limits the tool needs offline (see admin.h). */
static void record(struct admin *a)
{
	const struct {
		const char *k;
		uint64_t v;
	} kv[] = {
		{ "cache_size", a->conf.cap_bytes },
		{ "cache_min_free", a->conf.min_free_bytes },
		{ "cache_max_entries", a->conf.max_entries },
		{ "cache_max_age_ms", a->conf.max_age_ms },
		{ "chunk_size", a->conf.chunk_size },
		{ "compress_level", (uint64_t)a->conf.compress_level },
	};
	char v[32];
	size_t i;

	/* failures are logged by meta; the tool then uses its options */
	for (i = 0; i < sizeof(kv) / sizeof(kv[0]); i++) {
		snprintf(v, sizeof(v), "%" PRIu64, kv[i].v);
		meta_info_put(a->m, kv[i].k, v);
	}
}

static int dup_or_empty(const char *s, char **out)
{
	*out = strdup(s ? s : "");
	return *out ? 0 : -ENOMEM;
}

int admin_new(const struct admin_conf *conf, struct meta *m,
	      struct chunk_store *cs, struct cache *c, struct s3 *s3,
	      struct admin **out)
{
	struct admin *a;
	int rc;

	if (!conf || !m || !out || !conf->chunk_size)
		return -EINVAL;
	a = calloc(1, sizeof(*a));
	if (!a)
		return -ENOMEM;
	a->conf = *conf;
	a->cs = cs;
	a->c = c;
	a->s3 = s3;
	pthread_mutex_init(&a->lock, NULL);
	rc = dup_or_empty(conf->cache_dir, &a->cache_dir);
	if (rc == 0)
		rc = dup_or_empty(conf->source, &a->source);
	if (rc == 0)
		rc = dup_or_empty(conf->endpoint, &a->endpoint);
	if (rc == 0)
		rc = dup_or_empty(conf->bucket, &a->bucket);
	if (rc == 0)
		rc = dup_or_empty(conf->prefix, &a->prefix);
	if (rc < 0) {
		admin_free(a);
		return rc;
	}
	a->conf.cache_dir = a->cache_dir;
	a->conf.source = a->source;
	a->conf.endpoint = a->endpoint;
	a->conf.bucket = a->bucket;
	a->conf.prefix = a->prefix;
	a->m = m;
	if (conf->record)
		record(a);
	*out = a;
	return 0;
}

void admin_free(struct admin *a)
{
	if (!a)
		return;
	if (a->m)
		admin_flush(a);
	pthread_mutex_destroy(&a->lock);
	free(a->cache_dir);
	free(a->source);
	free(a->endpoint);
	free(a->bucket);
	free(a->prefix);
	free(a);
}
