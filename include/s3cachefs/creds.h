/*
 * creds.h - where S3 credentials come from, in this order:
 *
 *   1. anonymous, when asked for (public buckets: no signing at all);
 *   2. passwd_file= : s3fs's format, "ACCESS:SECRET" or
 *      "BUCKET:ACCESS:SECRET" lines, refused unless its mode is 0600 or
 *      stricter (no group or other bits; /etc/passwd-s3fs may be 0640,
 *      group-readable, as s3fs allows);
 *   3. profile= : that profile of the shared files (below), explicitly;
 *   4. the environment: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and
 *      AWS_SESSION_TOKEN;
 *   5. the shared files, profile AWS_PROFILE or "default":
 *      $AWS_SHARED_CREDENTIALS_FILE or ~/.aws/credentials, then
 *      $AWS_CONFIG_FILE or ~/.aws/config ("[profile NAME]" sections);
 *   6. s3fs's default passwd files: ~/.passwd-s3fs, /etc/passwd-s3fs.
 *
 * The first source that yields a key pair wins.  A profile in ~/.aws/config
 * may also give a region, returned for the caller to use when none was set.
 *
 * Secrets are never logged and never put in an error message; memory that
 * held them is wiped when released.
 */
#ifndef S3CACHEFS_CREDS_H
#define S3CACHEFS_CREDS_H

#include <stdbool.h>

struct s3_creds {
	char *access_key;    /* NULL when anonymous */
	char *secret_key;    /* NULL when anonymous */
	char *session_token; /* NULL when none */
	char *region;	     /* region of the profile used, or NULL */
	char *source;	     /* where they came from, for logs: no secret */
	bool anonymous;
};

struct creds_conf {
	const char *passwd_file; /* or NULL */
	const char *profile;	 /* or NULL */
	const char *bucket;	 /* for BUCKET:ACCESS:SECRET lines, or NULL */
	bool anonymous;
};

/*
 * Resolve the chain above into *out (caller releases).  0; -ENOENT when no
 * source has credentials (logged with the list of places tried); -EACCES
 * when a passwd file is readable by group or others; -EINVAL when a file
 * that is read is malformed (named or default: a broken ~/.passwd-s3fs
 * stops the chain, as in s3fs and the AWS CLI) or a named profile does not
 * exist or holds no key pair (logged, file and line, no secret).
 */
int creds_resolve(const struct creds_conf *conf, struct s3_creds *out);

/* Wipe and free; leaves *c zeroed.  NULL-safe. */
void creds_release(struct s3_creds *c);

/*
 * Pure parsers, for tests and fuzzing.  @text is the whole file.
 *
 * creds_parse_passwd: the line for @bucket ("BUCKET:ACCESS:SECRET") wins over
 * a bare "ACCESS:SECRET" line; '#' comments and blank lines skipped.
 * 0, -ENOENT (no usable line), -EINVAL (malformed line), -ENOMEM.
 *
 * creds_parse_ini: from the INI text of a shared credentials or config file,
 * the keys aws_access_key_id, aws_secret_access_key, aws_session_token and
 * region of section @section ("default", "profile dev", "dev"), keys and
 * values trimmed.  Fields not present stay untouched (so a config file can
 * add a region to what a credentials file gave).  0, -ENOENT (no such
 * section), -EINVAL (malformed), -ENOMEM.
 */
int creds_parse_passwd(const char *text, const char *bucket,
		       struct s3_creds *out);
int creds_parse_ini(const char *text, const char *section,
		    struct s3_creds *out);

#endif
