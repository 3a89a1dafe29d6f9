/*
 * creds.c - find the S3 key pair: anonymous, passwd_file=, profile=, the
 * environment, the AWS shared files, then s3fs's default passwd files (the
 * order and its reasons are in creds.h).
 *
 * Two pure parsers do the reading: creds_parse_passwd() for s3fs's format
 * and creds_parse_ini() for ~/.aws/credentials and ~/.aws/config.  They scan
 * the text in place and copy only the fields they return, so the only heap
 * copies of a secret are the file buffer and the final strings; both are
 * wiped with OPENSSL_cleanse() before they are freed.
 *
 * Invariants: no secret (secret key, session token) is ever passed to the
 * log or put in an error; the access key id appears only at debug level and
 * cut to its first four characters.  Parse errors name a line and a static
 * reason, never the line's text.  creds_resolve() builds the result in a
 * local struct and hands it over only on success.
 *
 * Choices where the sources disagree or say nothing, following s3fs and the
 * AWS CLI (botocore) where sensible:
 *  - passwd files: like s3fs, a line with whitespace inside or starting with
 *    '[' is malformed, and two lines for the same target (two generic lines,
 *    or two for the bucket we mount) are refused as ambiguous; lines for
 *    other buckets are checked for form only.  Mode: no group or other bits
 *    and no execute bit, except that /etc/passwd-s3fs may be group-readable
 *    (0640), as s3fs allows.
 *  - INI files: keys are case-insensitive ('=' or ':' separates them from
 *    values, as in Python's configparser), section names are not; an indented
 *    line after a key continues that key (sub-sections such as "s3 =") and is
 *    skipped; '#' and ';' start comment lines; values are taken verbatim,
 *    trimmed, with no inline comments.  A key line before any section, a line
 *    with no separator or an unclosed header is malformed.  When a key repeats
 *    the last one wins.
 *  - For one profile, the credentials file wins over the config file key by
 *    key (botocore).  In the config file "[profile NAME]" is tried before
 *    "[NAME]" ("[default]" before "[profile default]").
 *  - A profile that was asked for (profile= or AWS_PROFILE) must exist and
 *    hold a key pair; the default profile may be absent or hold other things
 *    (a region alone), and then the chain goes on.  A profile holding only
 *    one half of the pair is malformed either way.
 */
#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "s3cachefs/buf.h"
#include "s3cachefs/creds.h"
#include "s3cachefs/fileio.h"
#include "s3cachefs/log.h"
#include "s3cachefs/strutil.h"

#define CREDS_FILE_MAX (1024 * 1024)
#define ETC_PASSWD_S3FS "/etc/passwd-s3fs"
#define DEFAULT_PROFILE "default"

/* Where a parse failed, for the caller to log with the file name. */
struct parse_err {
	int line;
	const char *why; /* static text, never a piece of the input */
};

/* A piece of the input text. */
struct span {
	const char *p;
	size_t n;
};

/* The shared files to read, either may be NULL (no home directory). */
struct aws_paths {
	char *creds;
	char *config;
};

static bool is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}

/* Wipe and free a NUL-terminated secret; NULL-safe. */
static void secret_free(char **p)
{
	if (!*p)
		return;
	OPENSSL_cleanse(*p, strlen(*p));
	free(*p);
	*p = NULL;
}

/* Wipe and free the text of a file that may hold secrets; NULL-safe. */
static void text_free(char *text, size_t len)
{
	if (!text)
		return;
	OPENSSL_cleanse(text, len);
	free(text);
}

static int span_dup(struct span s, char **out)
{
	char *p = malloc(s.n + 1);

	if (!p)
		return -ENOMEM;
	memcpy(p, s.p, s.n);
	p[s.n] = '\0';
	*out = p;
	return 0;
}

static struct span span_trim(struct span s)
{
	while (s.n && is_space(s.p[0])) {
		s.p++;
		s.n--;
	}
	while (s.n && is_space(s.p[s.n - 1]))
		s.n--;
	return s;
}

/*
 * Cut the next line off *cur: false at the end of the text.  *line is the
 * line trimmed of surrounding whitespace (so of a trailing '\r') and
 * *indent the number of whitespace bytes before it.
 */
static bool next_line(const char **cur, struct span *line, size_t *indent)
{
	const char *p = *cur, *nl;
	struct span raw;

	if (!*p)
		return false;
	nl = strchr(p, '\n');
	raw.p = p;
	raw.n = nl ? (size_t)(nl - p) : strlen(p);
	*cur = nl ? nl + 1 : p + raw.n;
	*line = span_trim(raw);
	*indent = (size_t)(line->p - raw.p);
	return true;
}

static int parse_passwd(const char *text, const char *bucket,
			struct s3_creds *out, struct parse_err *err)
{
	struct span generic[2], mine[2], f[3];
	bool have_generic = false, have_mine = false;
	struct span line, *pick;
	const char *cur = text, *c;
	char *ak = NULL, *sk = NULL;
	size_t indent, i, nf;
	int lineno = 0, rc = 0;

	while (next_line(&cur, &line, &indent)) {
		lineno++;
		err->line = lineno;
		if (!line.n || line.p[0] == '#')
			continue;
		for (i = 0; i < line.n; i++)
			if (is_space(line.p[i]))
				break;
		if (i < line.n) {
			err->why = "whitespace inside the line";
			return -EINVAL;
		}
		if (line.p[0] == '[') {
			err->why =
				"an INI section header: passwd files hold "
				"ACCESS:SECRET or BUCKET:ACCESS:SECRET lines";
			return -EINVAL;
		}
		/* split on ':' into at most three fields */
		nf = 0;
		f[0].p = line.p;
		for (c = line.p; c < line.p + line.n; c++) {
			if (*c != ':')
				continue;
			if (++nf > 2) {
				err->why = "more than two ':'";
				return -EINVAL;
			}
			f[nf - 1].n = (size_t)(c - f[nf - 1].p);
			f[nf].p = c + 1;
		}
		f[nf].n = (size_t)(line.p + line.n - f[nf].p);
		if (nf == 0) {
			err->why = "no ':' (expected ACCESS:SECRET or "
				   "BUCKET:ACCESS:SECRET)";
			return -EINVAL;
		}
		for (i = 0; i <= nf; i++) {
			if (f[i].n)
				continue;
			if (i == nf)
				err->why = "empty secret key";
			else if (i == nf - 1)
				err->why = "empty access key";
			else
				err->why = "empty bucket name";
			return -EINVAL;
		}
		if (nf == 1) {
			if (have_generic) {
				err->why = "a second ACCESS:SECRET line";
				return -EINVAL;
			}
			generic[0] = f[0];
			generic[1] = f[1];
			have_generic = true;
			continue;
		}
		if (!bucket || strlen(bucket) != f[0].n ||
		    memcmp(bucket, f[0].p, f[0].n) != 0)
			continue;
		if (have_mine) {
			err->why = "a second line for the same bucket";
			return -EINVAL;
		}
		mine[0] = f[1];
		mine[1] = f[2];
		have_mine = true;
	}
	err->line = 0;
	err->why = NULL;

	if (have_mine)
		pick = mine;
	else if (have_generic)
		pick = generic;
	else
		return -ENOENT;
	rc = span_dup(pick[0], &ak);
	if (rc == 0)
		rc = span_dup(pick[1], &sk);
	if (rc < 0)
		goto out;
	secret_free(&out->access_key);
	secret_free(&out->secret_key);
	out->access_key = ak;
	out->secret_key = sk;
	ak = NULL;
	sk = NULL;
out:
	secret_free(&ak);
	secret_free(&sk);
	return rc;
}

int creds_parse_passwd(const char *text, const char *bucket,
		       struct s3_creds *out)
{
	struct parse_err err = { 0, NULL };

	return parse_passwd(text, bucket, out, &err);
}

/* Header text @name equals @want, runs of whitespace matching one another. */
static bool section_is(struct span name, const char *want)
{
	size_t i = 0;

	while (i < name.n && *want) {
		if (is_space(name.p[i]) && is_space(*want)) {
			while (i < name.n && is_space(name.p[i]))
				i++;
			while (is_space(*want))
				want++;
			continue;
		}
		if (name.p[i] != *want)
			return false;
		i++;
		want++;
	}
	return i == name.n && *want == '\0';
}

/* The field of @c that INI key @key fills, or NULL for a key we ignore. */
static char **ini_field(struct s3_creds *c, struct span key)
{
	static const struct {
		const char *key;
		size_t off;
	} fields[] = {
		{ "aws_access_key_id", offsetof(struct s3_creds, access_key) },
		{ "aws_secret_access_key",
		  offsetof(struct s3_creds, secret_key) },
		{ "aws_session_token",
		  offsetof(struct s3_creds, session_token) },
		{ "region", offsetof(struct s3_creds, region) },
	};
	size_t i;

	for (i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
		if (strlen(fields[i].key) == key.n &&
		    strncasecmp(fields[i].key, key.p, key.n) == 0)
			return (char **)((char *)c + fields[i].off);
	return NULL;
}

/* Move each field set in @from over the same field of @to. */
static void creds_overlay(struct s3_creds *to, struct s3_creds *from)
{
	if (from->access_key) {
		secret_free(&to->access_key);
		to->access_key = from->access_key;
		from->access_key = NULL;
	}
	if (from->secret_key) {
		secret_free(&to->secret_key);
		to->secret_key = from->secret_key;
		from->secret_key = NULL;
	}
	if (from->session_token) {
		secret_free(&to->session_token);
		to->session_token = from->session_token;
		from->session_token = NULL;
	}
	if (from->region) {
		free(to->region);
		to->region = from->region;
		from->region = NULL;
	}
}

static int parse_ini(const char *text, const char *section,
		     struct s3_creds *out, struct parse_err *err)
{
	struct s3_creds got = { 0 };
	bool in_section = false, seen_header = false, found = false;
	bool in_value = false;
	struct span line, name, key, val, rest;
	const char *cur = text, *sep, *end;
	size_t indent, key_indent = 0;
	char **field;
	char *copy;
	int lineno = 0, rc = 0;

	while (next_line(&cur, &line, &indent)) {
		lineno++;
		err->line = lineno;
		if (!line.n || line.p[0] == '#' || line.p[0] == ';')
			continue;
		/* deeper than the last key: its continuation or sub-section */
		if (in_value && indent > key_indent)
			continue;
		in_value = false;
		if (line.p[0] == '[') {
			end = memchr(line.p, ']', line.n);
			if (!end) {
				err->why = "section header without ']'";
				rc = -EINVAL;
				goto out;
			}
			rest.p = end + 1;
			rest.n = (size_t)(line.p + line.n - rest.p);
			rest = span_trim(rest);
			if (rest.n && rest.p[0] != '#' && rest.p[0] != ';') {
				err->why = "text after a section header";
				rc = -EINVAL;
				goto out;
			}
			name.p = line.p + 1;
			name.n = (size_t)(end - name.p);
			name = span_trim(name);
			if (!name.n) {
				err->why = "empty section name";
				rc = -EINVAL;
				goto out;
			}
			seen_header = true;
			in_section = section_is(name, section);
			found = found || in_section;
			continue;
		}
		if (!seen_header) {
			err->why = "a key before any section header";
			rc = -EINVAL;
			goto out;
		}
		sep = NULL;
		for (end = line.p; end < line.p + line.n; end++) {
			if (*end == '=' || *end == ':') {
				sep = end;
				break;
			}
		}
		if (!sep) {
			err->why = "no '=' in the line";
			rc = -EINVAL;
			goto out;
		}
		key.p = line.p;
		key.n = (size_t)(sep - line.p);
		key = span_trim(key);
		if (!key.n) {
			err->why = "empty key";
			rc = -EINVAL;
			goto out;
		}
		in_value = true;
		key_indent = indent;
		if (!in_section)
			continue;
		field = ini_field(&got, key);
		if (!field)
			continue;
		val.p = sep + 1;
		val.n = (size_t)(line.p + line.n - val.p);
		rc = span_dup(span_trim(val), &copy);
		if (rc < 0)
			goto out;
		secret_free(field);
		*field = copy;
	}
	err->line = 0;
	err->why = NULL;
	if (!found) {
		rc = -ENOENT;
		goto out;
	}
	creds_overlay(out, &got);
out:
	creds_release(&got);
	return rc;
}

int creds_parse_ini(const char *text, const char *section, struct s3_creds *out)
{
	struct parse_err err = { 0, NULL };

	return parse_ini(text, section, out, &err);
}

void creds_release(struct s3_creds *c)
{
	if (!c)
		return;
	secret_free(&c->access_key);
	secret_free(&c->secret_key);
	secret_free(&c->session_token);
	free(c->region);
	free(c->source);
	memset(c, 0, sizeof(*c));
}

/*
 * Read the whole of @path into *text (NUL-terminated; wipe it with
 * text_free()) and its length into *len, with its status in *st.  Opened
 * non-blocking so that a FIFO in its place cannot hang us.  -errno of open()
 * (so -ENOENT when absent), -EISDIR or -EINVAL when not a regular file,
 * -EFBIG past CREDS_FILE_MAX, -EILSEQ when it holds a NUL byte, -ENOMEM.
 * Does not log.
 */
static int read_secret_file(const char *path, struct stat *st, char **text,
			    size_t *len)
{
	char *data = NULL;
	size_t size = 0;
	long got;
	int fd, rc = 0;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0)
		return -errno;
	if (fstat(fd, st) < 0) {
		rc = -errno;
		goto out;
	}
	if (!S_ISREG(st->st_mode)) {
		rc = S_ISDIR(st->st_mode) ? -EISDIR : -EINVAL;
		goto out;
	}
	if ((unsigned long long)st->st_size > CREDS_FILE_MAX) {
		rc = -EFBIG;
		goto out;
	}
	size = (size_t)st->st_size;
	data = malloc(size + 1);
	if (!data) {
		rc = -ENOMEM;
		goto out;
	}
	got = pread_full(fd, data, size, 0);
	if (got < 0) {
		rc = (int)got;
		goto out;
	}
	data[got] = '\0';
	if (memchr(data, '\0', (size_t)got)) {
		rc = -EILSEQ;
		goto out;
	}
	*text = data;
	*len = (size_t)got;
	data = NULL;
out:
	text_free(data, size);
	close(fd);
	return rc;
}

/* Log a failure of read_secret_file() on @path (@what names the kind). */
static int log_read_error(const char *what, const char *path, int rc)
{
	switch (rc) {
	case -EISDIR:
	case -EINVAL:
		log_error("%s '%s' is not a regular file", what, path);
		return -EINVAL;
	case -EFBIG:
		log_error("%s '%s' is larger than %d bytes", what, path,
			  CREDS_FILE_MAX);
		return -EINVAL;
	case -EILSEQ:
		log_error("%s '%s' holds a NUL byte", what, path);
		return -EINVAL;
	default:
		log_error("cannot read %s '%s': %s", what, path, strerror(-rc));
		return rc;
	}
}

/* s3fs's rule: 0600 or stricter, except /etc/passwd-s3fs may be 0640. */
static int check_passwd_mode(const char *path, mode_t mode)
{
	bool etc = strcmp(path, ETC_PASSWD_S3FS) == 0;
	mode_t bad = S_IRWXG | S_IRWXO;

	if (etc)
		bad &= ~(mode_t)S_IRGRP;
	if (mode & bad) {
		log_error("passwd file '%s' is accessible by %s (mode %04o): "
			  "chmod %s it",
			  path, mode & S_IRWXO ? "others" : "its group",
			  (unsigned int)(mode & 07777), etc ? "640" : "600");
		return -EACCES;
	}
	if (mode & S_IXUSR) {
		log_error("passwd file '%s' is executable (mode %04o): "
			  "chmod %s it",
			  path, (unsigned int)(mode & 07777),
			  etc ? "640" : "600");
		return -EACCES;
	}
	return 0;
}

/*
 * The key pair for @bucket from the passwd file @path into *c.  @named: the
 * user gave the path, so its absence is an error.  0; -ENOENT when the file
 * is absent (logged only when @named) or has no line for us (logged as an
 * error when @named, at debug level otherwise); -EACCES, -EINVAL or -errno,
 * logged.
 */
static int load_passwd(const char *path, const char *bucket, bool named,
		       struct s3_creds *c)
{
	struct parse_err err = { 0, NULL };
	struct buf src = BUF_INIT(BUF_NO_LIMIT);
	struct stat st;
	char *text = NULL;
	size_t len = 0;
	int rc;

	rc = read_secret_file(path, &st, &text, &len);
	if (rc == -ENOENT) {
		if (named)
			log_error("passwd file '%s' does not exist", path);
		else
			log_debug("no passwd file '%s'", path);
		goto out;
	}
	if (rc < 0) {
		rc = log_read_error("passwd file", path, rc);
		goto out;
	}
	rc = check_passwd_mode(path, st.st_mode);
	if (rc < 0)
		goto out;
	rc = parse_passwd(text, bucket, c, &err);
	if (rc == -EINVAL) {
		log_error("passwd file '%s' line %d: %s", path, err.line,
			  err.why);
		goto out;
	}
	if (rc == -ENOENT) {
		if (named && bucket)
			log_error("passwd file '%s' has no line for bucket "
				  "'%s' and no ACCESS:SECRET line",
				  path, bucket);
		else if (named)
			log_error("passwd file '%s' has no ACCESS:SECRET line",
				  path);
		else
			log_debug("passwd file '%s' has no line for us", path);
		goto out;
	}
	if (rc < 0)
		goto out;
	rc = buf_addf(&src, "passwd file '%s'", path);
	if (rc < 0)
		goto out;
	c->source = buf_detach(&src, NULL);
	if (!c->source)
		rc = -ENOMEM;
out:
	buf_release(&src);
	text_free(text, len);
	return rc;
}

/*
 * Parse the shared file @path for the first of @sections (NULL-terminated)
 * present, overlaying the fields on *c.  0, -ENOENT (file or sections
 * absent), -EINVAL or -errno (logged).
 */
static int load_ini(const char *path, const char *const *sections,
		    struct s3_creds *c)
{
	struct parse_err err = { 0, NULL };
	struct stat st;
	char *text = NULL;
	size_t len = 0;
	int rc = -ENOENT;

	if (!path)
		goto out;
	rc = read_secret_file(path, &st, &text, &len);
	if (rc == -ENOENT) {
		log_debug("no shared file '%s'", path);
		goto out;
	}
	if (rc < 0) {
		rc = log_read_error("file", path, rc);
		goto out;
	}
	for (; *sections; sections++) {
		rc = parse_ini(text, *sections, c, &err);
		if (rc != -ENOENT)
			break;
	}
	if (rc == -EINVAL)
		log_error("'%s' line %d: %s", path, err.line, err.why);
out:
	text_free(text, len);
	return rc;
}

/* "'a' or 'b'", "'a'" or "no file", for messages about the shared files. */
static void describe_paths(struct buf *b, const struct aws_paths *ap)
{
	if (ap->creds && ap->config)
		buf_addf(b, "'%s' or '%s'", ap->creds, ap->config);
	else if (ap->creds || ap->config)
		buf_addf(b, "'%s'", ap->creds ? ap->creds : ap->config);
	else
		buf_adds(b, "no file (no home directory)");
}

/* An empty value counts as absent, as in botocore. */
static void drop_empty(char **field)
{
	if (*field && !**field)
		secret_free(field);
}

/*
 * The key pair of profile @name from the shared files into *c, the
 * credentials file winning over the config file key by key.  @named: the
 * user asked for this profile.  0; -ENOENT when the profile is absent or
 * holds no key pair and was not @named (not logged); -EINVAL (logged) when
 * it was @named and is absent or holds no key pair, or when it holds only
 * half of one; -errno (logged).
 */
static int load_profile(const struct aws_paths *ap, const char *name,
			bool named, struct s3_creds *c)
{
	struct s3_creds from_creds = { 0 }, got = { 0 };
	struct buf b = BUF_INIT(BUF_NO_LIMIT);
	const char *creds_sections[2] = { name, NULL };
	const char *config_sections[3] = { NULL, NULL, NULL };
	const char *key_file;
	char *prefixed = NULL;
	bool found;
	int rc;

	rc = buf_addf(&b, "profile %s", name);
	if (rc < 0)
		goto out;
	prefixed = buf_detach(&b, NULL);
	if (!prefixed) {
		rc = -ENOMEM;
		goto out;
	}
	/* "[default]" before "[profile default]", "[profile x]" before "[x]" */
	if (strcmp(name, DEFAULT_PROFILE) == 0) {
		config_sections[0] = name;
		config_sections[1] = prefixed;
	} else {
		config_sections[0] = prefixed;
		config_sections[1] = name;
	}

	rc = load_ini(ap->config, config_sections, &got);
	if (rc < 0 && rc != -ENOENT)
		goto out;
	found = rc == 0;
	rc = load_ini(ap->creds, creds_sections, &from_creds);
	if (rc < 0 && rc != -ENOENT)
		goto out;
	found = found || rc == 0;
	key_file = from_creds.access_key ? ap->creds : ap->config;
	creds_overlay(&got, &from_creds);
	drop_empty(&got.access_key);
	drop_empty(&got.secret_key);
	drop_empty(&got.session_token);
	drop_empty(&got.region);

	if (!found || (!got.access_key && !got.secret_key)) {
		rc = -ENOENT;
		if (!named)
			goto out;
		rc = -EINVAL;
		describe_paths(&b, ap);
		if (!found)
			log_error("profile '%s' not found in %s", name,
				  buf_str(&b));
		else
			log_error("profile '%s' has no aws_access_key_id and "
				  "aws_secret_access_key in %s (role_arn, sso "
				  "and credential_process are not supported)",
				  name, buf_str(&b));
		goto out;
	}
	if (!got.access_key || !got.secret_key) {
		describe_paths(&b, ap);
		log_error("profile '%s' has %s but no %s in %s", name,
			  got.access_key ? "aws_access_key_id"
					 : "aws_secret_access_key",
			  got.access_key ? "aws_secret_access_key"
					 : "aws_access_key_id",
			  buf_str(&b));
		rc = -EINVAL;
		goto out;
	}
	rc = buf_addf(&b, "profile '%s' in '%s'", name, key_file);
	if (rc < 0)
		goto out;
	got.source = buf_detach(&b, NULL);
	if (!got.source) {
		rc = -ENOMEM;
		goto out;
	}
	creds_release(c);
	*c = got;
	memset(&got, 0, sizeof(got));
out:
	creds_release(&from_creds);
	creds_release(&got);
	buf_release(&b);
	free(prefixed);
	return rc;
}

/* getenv() that treats an empty value as unset. */
static const char *env_get(const char *name)
{
	const char *v = getenv(name);

	return v && *v ? v : NULL;
}

/*
 * The key pair from the environment into *c.  0; -ENOENT when neither half
 * is set, or when only one is (warned, naming the missing one); -ENOMEM.
 */
static int load_env(struct s3_creds *c)
{
	const char *ak = env_get("AWS_ACCESS_KEY_ID");
	const char *sk = env_get("AWS_SECRET_ACCESS_KEY");
	const char *token = env_get("AWS_SESSION_TOKEN");
	struct s3_creds got = { 0 };
	int rc;

	if (!ak && !sk)
		return -ENOENT;
	if (!ak || !sk) {
		log_warn("'%s' is set but '%s' is not: ignoring the "
			 "environment for credentials",
			 ak ? "AWS_ACCESS_KEY_ID" : "AWS_SECRET_ACCESS_KEY",
			 ak ? "AWS_SECRET_ACCESS_KEY" : "AWS_ACCESS_KEY_ID");
		return -ENOENT;
	}
	if (!token)
		token = env_get("AWS_SECURITY_TOKEN"); /* older SDKs' name */
	rc = str_dup(ak, &got.access_key);
	if (rc == 0)
		rc = str_dup(sk, &got.secret_key);
	if (rc == 0 && token)
		rc = str_dup(token, &got.session_token);
	if (rc == 0)
		rc = str_dup("environment", &got.source);
	if (rc < 0)
		goto out;
	creds_release(c);
	*c = got;
	memset(&got, 0, sizeof(got));
out:
	creds_release(&got);
	return rc;
}

/* $HOME, or the password database's entry: 0, -ENOENT (none), -ENOMEM. */
static int home_dir(char **out)
{
	const char *home = env_get("HOME");
	struct passwd pw, *res = NULL;
	char *tmp = NULL;
	size_t size = 16384;
	int rc;

	if (home)
		return str_dup(home, out);
	tmp = malloc(size);
	if (!tmp)
		return -ENOMEM;
	rc = getpwuid_r(getuid(), &pw, tmp, size, &res);
	if (rc != 0 || !res || !res->pw_dir || !*res->pw_dir)
		rc = -ENOENT;
	else
		rc = str_dup(res->pw_dir, out);
	free(tmp);
	return rc;
}

/*
 * The path in $@env (a leading "~/" meaning @home), else @home/@rel, else
 * NULL: 0 or -ENOMEM.
 */
static int shared_path(const char *env, const char *home, const char *rel,
		       char **out)
{
	struct buf b = BUF_INIT(BUF_NO_LIMIT);
	const char *v = env_get(env);
	int rc = 0;

	*out = NULL;
	if (v && home && strncmp(v, "~/", 2) == 0)
		rc = buf_addf(&b, "%s%s", home, v + 1);
	else if (v)
		rc = buf_adds(&b, v);
	else if (home)
		rc = buf_addf(&b, "%s/%s", home, rel);
	else
		goto out;
	if (rc < 0)
		goto out;
	*out = buf_detach(&b, NULL);
	if (!*out)
		rc = -ENOMEM;
out:
	buf_release(&b);
	return rc;
}

/* At debug level, where the keys came from, the access key id cut short. */
static void log_chosen(const struct s3_creds *c)
{
	if (!log_enabled(LOG_LVL_DEBUG))
		return;
	if (c->anonymous) {
		log_debug("no credentials: anonymous requests");
		return;
	}
	log_debug("credentials from %s (access key '%.4s...'%s%s%s)", c->source,
		  strlen(c->access_key) >= 16 ? c->access_key : "",
		  c->session_token ? ", session token" : "",
		  c->region ? ", region " : "", c->region ? c->region : "");
}

int creds_resolve(const struct creds_conf *conf, struct s3_creds *out)
{
	struct s3_creds c = { 0 };
	struct aws_paths ap = { NULL, NULL };
	struct buf tried = BUF_INIT(BUF_NO_LIMIT);
	struct buf b = BUF_INIT(BUF_NO_LIMIT);
	const char *profile;
	char *home = NULL, *path = NULL;
	int rc;

	if (conf->anonymous) {
		c.anonymous = true;
		rc = str_dup("anonymous", &c.source);
		goto done;
	}
	if (conf->passwd_file) {
		rc = load_passwd(conf->passwd_file, conf->bucket, true, &c);
		goto done;
	}

	rc = home_dir(&home);
	if (rc == -ENOENT)
		log_debug("no home directory: skipping the files under it");
	else if (rc < 0)
		goto out;
	rc = shared_path("AWS_SHARED_CREDENTIALS_FILE", home,
			 ".aws/credentials", &ap.creds);
	if (rc == 0)
		rc = shared_path("AWS_CONFIG_FILE", home, ".aws/config",
				 &ap.config);
	if (rc < 0)
		goto out;

	if (conf->profile) {
		rc = load_profile(&ap, conf->profile, true, &c);
		goto done;
	}

	rc = load_env(&c);
	if (rc != -ENOENT)
		goto done;
	buf_adds(&tried, "environment");

	profile = env_get("AWS_PROFILE");
	rc = load_profile(&ap, profile ? profile : DEFAULT_PROFILE, !!profile,
			  &c);
	if (rc != -ENOENT)
		goto done;
	buf_addf(&tried, ", profile '%s' in ",
		 profile ? profile : DEFAULT_PROFILE);
	describe_paths(&tried, &ap);

	if (home) {
		rc = buf_addf(&b, "%s/.passwd-s3fs", home);
		if (rc < 0)
			goto out;
		path = buf_detach(&b, NULL);
		if (!path) {
			rc = -ENOMEM;
			goto out;
		}
		rc = load_passwd(path, conf->bucket, false, &c);
		if (rc != -ENOENT)
			goto done;
		buf_addf(&tried, ", '%s'", path);
	}
	rc = load_passwd(ETC_PASSWD_S3FS, conf->bucket, false, &c);
	if (rc != -ENOENT)
		goto done;
	buf_addf(&tried, ", '%s'", ETC_PASSWD_S3FS);

	log_error("no credentials found (tried: %s): set AWS_ACCESS_KEY_ID "
		  "and AWS_SECRET_ACCESS_KEY, use -o profile= or "
		  "-o passwd_file=, or -o anonymous for a public bucket",
		  buf_str(&tried));
	rc = -ENOENT;
	goto out;
done:
	if (rc < 0)
		goto out;
	log_chosen(&c);
	*out = c;
	memset(&c, 0, sizeof(c));
out:
	creds_release(&c);
	free(ap.creds);
	free(ap.config);
	free(home);
	free(path);
	buf_release(&tried);
	buf_release(&b);
	return rc;
}
