/*
 * test_creds.c - the two pure parsers on good and malformed text, then the
 * whole resolution chain in a temporary HOME: which source wins for each
 * pair, AWS_PROFILE and the file-path variables, passwd file modes, and the
 * errors for a named file or profile that is missing.
 *
 * Every resolution runs with stderr redirected to a file and the log at
 * debug level; the captured text is checked for the secrets of the test
 * (all contain "SeCrEt", "ToKeN" or, past their first four characters,
 * "KEYID"), so that no path, success or failure, ever logs one.
 *
 * A /etc/passwd-s3fs on the machine would answer where nothing else does:
 * the tests that expect "nothing found" are skipped then.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "s3cachefs/creds.h"
#include "s3cachefs/fileio.h"
#include "s3cachefs/log.h"
#include "tap.h"
#include "testfs.h"

#define AK_ENV "AKIAKEYIDENV0001"
#define AK_DEF "AKIAKEYIDDEF0001"
#define AK_DEV "AKIAKEYIDDEV0001"
#define AK_CFG "AKIAKEYIDCFG0001"
#define AK_PWD "AKIAKEYIDPWD0001"
#define AK_HOM "AKIAKEYIDHOM0001"

static char root[] = "/tmp/test_creds.XXXXXX";
static char home[4096];
static char cap_path[4096];
static char *last_log;
static int home_n;
static bool etc_present;

/* -------- helpers -------- */

static void put_file(const char *path, const char *text, mode_t mode)
{
	size_t len = strlen(text);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

	if (fd < 0 || pwrite_all(fd, text, len, 0) < 0 || fchmod(fd, mode) < 0)
		diag("cannot write '%s'", path);
	if (fd >= 0)
		close(fd);
}

/* @buf = home + "/" + @rel */
static const char *in_home(char *buf, size_t size, const char *rel)
{
	snprintf(buf, size, "%s/%s", home, rel);
	return buf;
}

static void put_home(const char *rel, const char *text, mode_t mode)
{
	char path[4200];

	put_file(in_home(path, sizeof(path), rel), text, mode);
}

/* A fresh empty HOME with a .aws directory, and no AWS variable set. */
static void new_home(void)
{
	static const char *const vars[] = {
		"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
		"AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
		"AWS_PROFILE",	     "AWS_SHARED_CREDENTIALS_FILE",
		"AWS_CONFIG_FILE",
	};
	char path[4200];
	size_t i;

	snprintf(home, sizeof(home), "%s/home%d", root, ++home_n);
	if (mkdir(home, 0700) < 0 ||
	    mkdir(in_home(path, sizeof(path), ".aws"), 0700) < 0)
		diag("cannot make '%s'", home);
	setenv("HOME", home, 1);
	for (i = 0; i < sizeof(vars) / sizeof(vars[0]); i++)
		unsetenv(vars[i]);
}

static int cap_saved = -1;

static void cap_start(void)
{
	int fd;

	fflush(stderr);
	fd = open(cap_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	cap_saved = dup(2);
	if (fd < 0 || cap_saved < 0 || dup2(fd, 2) < 0)
		diag("cannot redirect stderr");
	if (fd >= 0)
		close(fd);
}

static char *cap_stop(void)
{
	char *text = NULL;

	fflush(stderr);
	dup2(cap_saved, 2);
	close(cap_saved);
	cap_saved = -1;
	if (read_file(cap_path, 1 << 20, &text, NULL) < 0)
		return strdup("");
	return text;
}

static bool log_has(const char *s)
{
	return last_log && strstr(last_log, s);
}

/* creds_resolve() with stderr captured in last_log, checked for secrets. */
static int resolve(const struct creds_conf *conf, struct s3_creds *c,
		   const char *name)
{
	int rc;

	cap_start();
	rc = creds_resolve(conf, c);
	free(last_log);
	last_log = cap_stop();
	ok(!strstr(last_log, "SeCrEt") && !strstr(last_log, "ToKeN") &&
		   !strstr(last_log, "KEYID"),
	   "%s: no secret in the log", name);
	if (!ok(rc == 0 || rc == -ENOENT || rc == -EINVAL || rc == -EACCES,
		"%s: known return code", name))
		diag("  rc %d", rc);
	return rc;
}

static void skip_if_etc(const char *name)
{
	ok(1, "%s # skip /etc/passwd-s3fs exists on this machine", name);
}

/* -------- pure parsers -------- */

static void test_passwd_parser(void)
{
	struct s3_creds c = { 0 };
	static char old[] = "old";
	static const char *const bad[] = {
		"AKSeCrEt\n",	    "AK:SeCrEt:x:y\n", "AK :SeCrEt\n",
		"AK:Se CrEt\n",	    "[default]\n",     "AK:\n",
		":SeCrEt\n",	    "b::SeCrEt\n",     ":AK:SeCrEt\n",
		"ok:SeCrEt\nbad\n",
	};
	size_t i;

	is_int(creds_parse_passwd("AK1:SeCrEt1\n", NULL, &c), 0, "generic");
	is_str(c.access_key, "AK1", "generic: access key");
	is_str(c.secret_key, "SeCrEt1", "generic: secret key");
	creds_release(&c);

	is_int(creds_parse_passwd("AKG:SeCrEtG\nmine:AKB:SeCrEtB\n", "mine",
				  &c),
	       0, "bucket line after generic");
	is_str(c.access_key, "AKB", "bucket line wins over generic");
	is_str(c.secret_key, "SeCrEtB", "bucket line's secret");
	creds_release(&c);

	is_int(creds_parse_passwd("mine:AKB:SeCrEtB\nAKG:SeCrEtG", "mine", &c),
	       0, "bucket line before generic, no final newline");
	is_str(c.access_key, "AKB", "bucket line still wins");
	creds_release(&c);

	is_int(creds_parse_passwd("other:AKO:SeCrEtO\nAKG:SeCrEtG\n", "mine",
				  &c),
	       0, "other bucket's line");
	is_str(c.access_key, "AKG", "other bucket's line ignored");
	creds_release(&c);

	is_int(creds_parse_passwd("mine:AKB:SeCrEtB\n", NULL, &c), -ENOENT,
	       "bucket line without a bucket: -ENOENT");
	is_int(creds_parse_passwd("other:AKO:SeCrEtO\n", "mine", &c), -ENOENT,
	       "only other buckets: -ENOENT");
	is_int(creds_parse_passwd("", NULL, &c), -ENOENT, "empty: -ENOENT");
	is_int(creds_parse_passwd("# AK:SeCrEt\n\n  \n", NULL, &c), -ENOENT,
	       "comments only: -ENOENT");
	ok(!c.access_key && !c.secret_key, "nothing written on -ENOENT");

	is_int(creds_parse_passwd("# comment\r\n\r\n \t\n  AK:SeCrEt \t\r\n",
				  NULL, &c),
	       0, "comments, blank lines, CRLF, surrounding whitespace");
	is_str(c.access_key, "AK", "CRLF: access key");
	is_str(c.secret_key, "SeCrEt", "CRLF: secret trimmed");
	creds_release(&c);

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		is_int(creds_parse_passwd(bad[i], "b", &c), -EINVAL,
		       "malformed %zu: -EINVAL", i);

	is_int(creds_parse_passwd("AK1:SeCrEt1\nAK2:SeCrEt2\n", NULL, &c),
	       -EINVAL, "two generic lines: -EINVAL, as s3fs");
	is_int(creds_parse_passwd("b:AK1:SeCrEt1\nb:AK2:SeCrEt2\n", "b", &c),
	       -EINVAL, "two lines for our bucket: -EINVAL, as s3fs");
	is_int(creds_parse_passwd("o:AK1:SeCrEt1\no:AK2:SeCrEt2\nAK:SeCrEt\n",
				  "b", &c),
	       0, "two lines for another bucket: ignored");
	creds_release(&c);

	c.access_key = old;
	is_int(creds_parse_passwd("AK:\n", NULL, &c), -EINVAL,
	       "missing secret: -EINVAL");
	ok(c.access_key == old && !c.secret_key, "nothing written on -EINVAL");
	c.access_key = NULL;

	c.access_key = strdup("previous");
	is_int(creds_parse_passwd("AK:SeCrEt\n", NULL, &c), 0,
	       "over earlier values");
	is_str(c.access_key, "AK", "earlier value replaced");
	creds_release(&c);
	ok(!c.access_key && !c.secret_key && !c.source, "release zeroes");
	creds_release(&c);
	creds_release(NULL);
	ok(1, "release twice and NULL");
}

static void test_ini_parser(void)
{
	struct s3_creds c = { 0 };
	static char old[] = "old";
	static const char *const bad[] = {
		"[default\naws_access_key_id = AK\n",
		"[default]\njunk\n",
		"aws_access_key_id = AK\n[default]\n",
		"[default]\n= value\n",
		"[default] trailing\n",
		"[]\n",
		"[default]\naws_secret_access_key SeCrEt\n",
	};
	const char *multi = "[default]\n"
			    "aws_access_key_id = AKD\n"
			    "aws_secret_access_key = SeCrEtD\n"
			    "\n"
			    "[dev]\n"
			    "aws_access_key_id=AKV\n"
			    "aws_secret_access_key=SeCrEtV\n"
			    "aws_session_token = ToKeN==\n"
			    "[other]\n"
			    "aws_access_key_id = AKO\n";
	size_t i;

	is_int(creds_parse_ini(multi, "default", &c), 0, "[default]");
	is_str(c.access_key, "AKD", "default: access key");
	is_str(c.secret_key, "SeCrEtD", "default: secret key");
	ok(!c.session_token && !c.region, "default: no token, no region");
	creds_release(&c);

	is_int(creds_parse_ini(multi, "dev", &c), 0, "[dev]");
	is_str(c.access_key, "AKV", "dev: access key");
	is_str(c.secret_key, "SeCrEtV", "dev: secret key");
	is_str(c.session_token, "ToKeN==", "dev: session token, '=' kept");
	creds_release(&c);

	is_int(creds_parse_ini(multi, "missing", &c), -ENOENT,
	       "missing section: -ENOENT");
	is_int(creds_parse_ini("", "default", &c), -ENOENT, "empty: -ENOENT");
	is_int(creds_parse_ini("[Default]\naws_access_key_id = A\n", "default",
			       &c),
	       -ENOENT, "section names are case-sensitive");
	is_int(creds_parse_ini("[default]\n", "default", &c), 0,
	       "empty section: 0");
	ok(!c.access_key && !c.secret_key, "empty section: nothing set");

	is_int(creds_parse_ini("[profile dev]\nregion = eu-west-1\n",
			       "profile dev", &c),
	       0, "[profile dev]");
	is_str(c.region, "eu-west-1", "profile form: region");
	creds_release(&c);
	is_int(creds_parse_ini("[profile dev]\nregion = eu-west-1\n", "dev",
			       &c),
	       -ENOENT, "[profile dev] is not [dev]");
	is_int(creds_parse_ini("[  profile \t dev ] ; note\nregion=x\n",
			       "profile dev", &c),
	       0, "blanks inside the header, comment after it");
	is_str(c.region, "x", "blanks in header: region");
	creds_release(&c);

	is_int(creds_parse_ini("# top comment\n"
			       "; another\n"
			       "  [dev]  \r\n"
			       "\tAWS_Access_Key_ID\t=\tAKV  \r\n"
			       "  # indented comment\r\n"
			       "Aws_Secret_Access_Key: SeCrEtV\r\n",
			       "dev", &c),
	       0, "whitespace, CRLF, comments, key case, ':'");
	is_str(c.access_key, "AKV", "whitespace: access key");
	is_str(c.secret_key, "SeCrEtV", "':' separator: secret key");
	creds_release(&c);

	is_int(creds_parse_ini("[default]\n"
			       "s3 =\n"
			       "    region = nested\n"
			       "    max_concurrent_requests = 20\n"
			       "\n"
			       "        aws_access_key_id = NESTED\n"
			       "region = us-west-2\n"
			       "aws_access_key_id = AK\n"
			       "  continued = line\n"
			       "unknown_key = whatever\n",
			       "default", &c),
	       0, "sub-sections");
	is_str(c.region, "us-west-2", "sub-section keys skipped");
	is_str(c.access_key, "AK", "continuation lines skipped");
	creds_release(&c);

	is_int(creds_parse_ini("[default]\naws_access_key_id = A1\n"
			       "aws_access_key_id = A2\n",
			       "default", &c),
	       0, "repeated key");
	is_str(c.access_key, "A2", "repeated key: last wins");
	creds_release(&c);

	/* region merge: a config section adds to what credentials gave */
	is_int(creds_parse_ini(multi, "dev", &c), 0, "merge: credentials");
	is_int(creds_parse_ini("[profile dev]\nregion = ap-south-1\n",
			       "profile dev", &c),
	       0, "merge: config");
	is_str(c.access_key, "AKV", "merge: keys untouched");
	is_str(c.session_token, "ToKeN==", "merge: token untouched");
	is_str(c.region, "ap-south-1", "merge: region added");
	creds_release(&c);

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		is_int(creds_parse_ini(bad[i], "default", &c), -EINVAL,
		       "malformed %zu: -EINVAL", i);
	is_int(creds_parse_ini("[other]\njunk\n[default]\n", "default", &c),
	       -EINVAL, "malformed in another section: -EINVAL");

	c.region = old;
	is_int(creds_parse_ini("[default]\nregion = new\njunk\n", "default",
			       &c),
	       -EINVAL, "error after a value");
	ok(c.region == old && !c.access_key, "nothing written on -EINVAL");
	is_int(creds_parse_ini("[x]\nregion = new\n", "default", &c), -ENOENT,
	       "values of other sections");
	ok(c.region == old, "nothing written on -ENOENT");
	c.region = NULL;
}

/* -------- resolution -------- */

static const char *def_creds = "[default]\n"
			       "aws_access_key_id = " AK_DEF "\n"
			       "aws_secret_access_key = SeCrEtDEF\n"
			       "[dev]\n"
			       "aws_access_key_id = " AK_DEV "\n"
			       "aws_secret_access_key = SeCrEtDEV\n"
			       "aws_session_token = ToKeNDEV\n";

static void set_env_keys(void)
{
	setenv("AWS_ACCESS_KEY_ID", AK_ENV, 1);
	setenv("AWS_SECRET_ACCESS_KEY", "SeCrEtENV", 1);
}

static void test_precedence(void)
{
	struct creds_conf conf = { 0 };
	struct s3_creds c = { 0 };
	char pwd[4200], want[4400];

	/* anonymous over everything */
	new_home();
	set_env_keys();
	put_home(".aws/credentials", def_creds, 0600);
	put_file(in_home(pwd, sizeof(pwd), "pwd"), AK_PWD ":SeCrEtPWD\n", 0600);
	conf.anonymous = true;
	conf.passwd_file = pwd;
	conf.profile = "dev";
	is_int(resolve(&conf, &c, "anonymous"), 0, "anonymous: 0");
	ok(c.anonymous && !c.access_key && !c.secret_key && !c.session_token,
	   "anonymous: no keys");
	is_str(c.source, "anonymous", "anonymous: source");
	creds_release(&c);

	/* passwd_file over profile= and the environment */
	conf.anonymous = false;
	is_int(resolve(&conf, &c, "passwd_file"), 0, "passwd_file: 0");
	is_str(c.access_key, AK_PWD, "passwd_file over profile= and env");
	is_str(c.secret_key, "SeCrEtPWD", "passwd_file: secret");
	snprintf(want, sizeof(want), "passwd file '%s'", pwd);
	is_str(c.source, want, "passwd_file: source");
	ok(!c.session_token && !c.region, "passwd_file: no token or region");
	creds_release(&c);

	/* profile= over the environment */
	conf.passwd_file = NULL;
	is_int(resolve(&conf, &c, "profile="), 0, "profile=: 0");
	is_str(c.access_key, AK_DEV, "profile= over env");
	is_str(c.session_token, "ToKeNDEV", "profile=: token");
	snprintf(want, sizeof(want), "profile 'dev' in '%s/.aws/credentials'",
		 home);
	is_str(c.source, want, "profile=: source");
	creds_release(&c);

	/* the environment over the default profile */
	conf.profile = NULL;
	setenv("AWS_SESSION_TOKEN", "ToKeNENV", 1);
	is_int(resolve(&conf, &c, "env"), 0, "env: 0");
	is_str(c.access_key, AK_ENV, "env over the shared files");
	is_str(c.secret_key, "SeCrEtENV", "env: secret");
	is_str(c.session_token, "ToKeNENV", "env: session token");
	is_str(c.source, "environment", "env: source");
	creds_release(&c);

	unsetenv("AWS_SESSION_TOKEN");
	setenv("AWS_SECURITY_TOKEN", "ToKeNOLD", 1);
	is_int(resolve(&conf, &c, "legacy token"), 0, "legacy token: 0");
	is_str(c.session_token, "ToKeNOLD", "AWS_SECURITY_TOKEN accepted");
	creds_release(&c);
	unsetenv("AWS_SECURITY_TOKEN");

	/* half of the environment: warned, then the default profile */
	unsetenv("AWS_SECRET_ACCESS_KEY");
	is_int(resolve(&conf, &c, "half env"), 0, "half env: 0");
	is_str(c.access_key, AK_DEF, "half env: falls to the default profile");
	ok(log_has("'AWS_SECRET_ACCESS_KEY'"), "half env: missing one named");
	creds_release(&c);
	unsetenv("AWS_ACCESS_KEY_ID");
	setenv("AWS_SECRET_ACCESS_KEY", "SeCrEtENV", 1);
	is_int(resolve(&conf, &c, "other half env"), 0, "other half env: 0");
	ok(log_has("'AWS_ACCESS_KEY_ID'"), "other half: missing one named");
	creds_release(&c);
	unsetenv("AWS_SECRET_ACCESS_KEY");

	/* the default profile over ~/.passwd-s3fs */
	put_home(".passwd-s3fs", AK_HOM ":SeCrEtHOM\n", 0600);
	is_int(resolve(&conf, &c, "profile over passwd"), 0,
	       "profile over ~/.passwd-s3fs: 0");
	is_str(c.access_key, AK_DEF, "default profile over ~/.passwd-s3fs");
	creds_release(&c);

	/* AWS_PROFILE */
	setenv("AWS_PROFILE", "dev", 1);
	is_int(resolve(&conf, &c, "AWS_PROFILE"), 0, "AWS_PROFILE: 0");
	is_str(c.access_key, AK_DEV, "AWS_PROFILE selects the profile");
	creds_release(&c);
	conf.profile = "default";
	is_int(resolve(&conf, &c, "profile= over AWS_PROFILE"), 0,
	       "profile= over AWS_PROFILE: 0");
	is_str(c.access_key, AK_DEF, "profile= over AWS_PROFILE");
	creds_release(&c);
	conf.profile = NULL;
	setenv("AWS_PROFILE", "nosuch", 1);
	is_int(resolve(&conf, &c, "AWS_PROFILE missing"), -EINVAL,
	       "AWS_PROFILE naming a missing profile: -EINVAL");
	ok(log_has("'nosuch'"), "missing AWS_PROFILE: named in the log");
	unsetenv("AWS_PROFILE");

	/* ~/.passwd-s3fs when nothing else has keys */
	put_home(".aws/credentials", "[other]\nregion = x\n", 0600);
	is_int(resolve(&conf, &c, "home passwd"), 0, "~/.passwd-s3fs: 0");
	is_str(c.access_key, AK_HOM, "~/.passwd-s3fs used last");
	snprintf(want, sizeof(want), "passwd file '%s/.passwd-s3fs'", home);
	is_str(c.source, want, "~/.passwd-s3fs: source");
	creds_release(&c);

	/* ~/.passwd-s3fs with a line for our bucket */
	put_home(".passwd-s3fs", AK_HOM ":SeCrEtHOM\nbkt:" AK_PWD ":SeCrEtB\n",
		 0600);
	conf.bucket = "bkt";
	is_int(resolve(&conf, &c, "home passwd bucket"), 0,
	       "~/.passwd-s3fs bucket line: 0");
	is_str(c.access_key, AK_PWD, "~/.passwd-s3fs: bucket line wins");
	creds_release(&c);
	conf.bucket = NULL;

	/* ~/.passwd-s3fs without a usable line: on to /etc, then nothing */
	put_home(".passwd-s3fs", "# nothing\n", 0600);
	if (etc_present) {
		skip_if_etc("empty ~/.passwd-s3fs: -ENOENT");
	} else {
		is_int(resolve(&conf, &c, "empty home passwd"), -ENOENT,
		       "empty ~/.passwd-s3fs: -ENOENT");
		ok(log_has("no credentials found") &&
			   log_has("tried: environment") &&
			   log_has(".passwd-s3fs'") &&
			   log_has("'/etc/passwd-s3fs'"),
		   "nothing found: places tried listed");
	}
}

static void test_shared_files(void)
{
	struct creds_conf conf = { 0 };
	struct s3_creds c = { 0 };
	char path[4200], path2[4200], want[4400];

	/* region of the profile from the config file */
	new_home();
	put_home(".aws/credentials", def_creds, 0600);
	put_home(".aws/config",
		 "[default]\nregion = us-east-2\n"
		 "[profile dev]\nregion = eu-west-1\n"
		 "[dev]\nregion = wrong\n",
		 0600);
	is_int(resolve(&conf, &c, "default region"), 0, "default region: 0");
	is_str(c.region, "us-east-2", "region of [default] in config");
	creds_release(&c);
	conf.profile = "dev";
	is_int(resolve(&conf, &c, "dev region"), 0, "dev region: 0");
	is_str(c.region, "eu-west-1", "[profile dev] before [dev] in config");
	is_str(c.access_key, AK_DEV, "dev region: keys from credentials");
	creds_release(&c);

	/* bare [dev] in config, [profile default] for default */
	put_home(".aws/config",
		 "[profile default]\nregion = r-default\n"
		 "[dev]\nregion = r-dev\n",
		 0600);
	is_int(resolve(&conf, &c, "bare dev"), 0, "bare [dev] in config: 0");
	is_str(c.region, "r-dev", "bare [dev] accepted in config");
	creds_release(&c);
	conf.profile = NULL;
	is_int(resolve(&conf, &c, "profile default"), 0, "[profile default]");
	is_str(c.region, "r-default", "[profile default] accepted in config");
	creds_release(&c);

	/* keys in the config file only; the credentials file wins */
	put_home(".aws/config",
		 "[profile cfg]\naws_access_key_id = " AK_CFG "\n"
		 "aws_secret_access_key = SeCrEtCFG\nregion = r-cfg\n"
		 "[profile dev]\naws_access_key_id = " AK_CFG "\n"
		 "aws_secret_access_key = SeCrEtCFG\nregion = r-dev\n",
		 0600);
	conf.profile = "cfg";
	is_int(resolve(&conf, &c, "config keys"), 0, "keys in config: 0");
	is_str(c.access_key, AK_CFG, "keys from the config file");
	snprintf(want, sizeof(want), "profile 'cfg' in '%s/.aws/config'", home);
	is_str(c.source, want, "config keys: source names config");
	creds_release(&c);
	conf.profile = "dev";
	is_int(resolve(&conf, &c, "both files"), 0, "both files: 0");
	is_str(c.access_key, AK_DEV, "credentials file wins over config");
	is_str(c.secret_key, "SeCrEtDEV", "credentials file's secret");
	is_str(c.region, "r-dev", "region still from config");
	creds_release(&c);

	/* AWS_SHARED_CREDENTIALS_FILE and AWS_CONFIG_FILE */
	snprintf(path, sizeof(path), "%s/elsewhere-creds", root);
	snprintf(path2, sizeof(path2), "%s/elsewhere-config", root);
	put_file(path,
		 "[dev]\naws_access_key_id = " AK_ENV "\n"
		 "aws_secret_access_key = SeCrEtELSE\n",
		 0600);
	put_file(path2, "[profile dev]\nregion = r-else\n", 0600);
	setenv("AWS_SHARED_CREDENTIALS_FILE", path, 1);
	setenv("AWS_CONFIG_FILE", path2, 1);
	is_int(resolve(&conf, &c, "file variables"), 0, "file variables: 0");
	is_str(c.access_key, AK_ENV, "AWS_SHARED_CREDENTIALS_FILE used");
	is_str(c.region, "r-else", "AWS_CONFIG_FILE used");
	snprintf(want, sizeof(want), "profile 'dev' in '%s'", path);
	is_str(c.source, want, "file variables: source");
	creds_release(&c);

	put_home("moved-creds", def_creds, 0600);
	setenv("AWS_SHARED_CREDENTIALS_FILE", "~/moved-creds", 1);
	setenv("AWS_CONFIG_FILE", "~/no-such-config", 1);
	is_int(resolve(&conf, &c, "tilde"), 0, "'~/' in the variable: 0");
	is_str(c.access_key, AK_DEV, "'~/' expanded to HOME");
	ok(!c.region, "absent config file: no region");
	creds_release(&c);

	/* HOME unset: the password database gives the home directory */
	unsetenv("HOME");
	setenv("AWS_SHARED_CREDENTIALS_FILE", path, 1);
	setenv("AWS_CONFIG_FILE", path2, 1);
	is_int(resolve(&conf, &c, "no HOME"), 0, "HOME unset: 0");
	is_str(c.access_key, AK_ENV, "HOME unset: variables still used");
	creds_release(&c);
	setenv("HOME", home, 1);
	unsetenv("AWS_SHARED_CREDENTIALS_FILE");
	unsetenv("AWS_CONFIG_FILE");

	/* profiles that are missing or hold no key pair */
	conf.profile = "nosuch";
	is_int(resolve(&conf, &c, "missing profile"), -EINVAL,
	       "missing profile=: -EINVAL");
	ok(log_has("'nosuch'") && log_has("/.aws/credentials'") &&
		   log_has("/.aws/config'"),
	   "missing profile: profile and files named");

	new_home();
	put_home(".aws/config", "[default]\nregion = r-only\n", 0600);
	put_home(".passwd-s3fs", AK_HOM ":SeCrEtHOM\n", 0600);
	conf.profile = NULL;
	is_int(resolve(&conf, &c, "region-only default"), 0,
	       "default profile with a region only: 0");
	is_str(c.access_key, AK_HOM, "region-only default: chain goes on");
	ok(!c.region, "region-only default: no region from an unused profile");
	creds_release(&c);
	conf.profile = "default";
	is_int(resolve(&conf, &c, "region-only named"), -EINVAL,
	       "named profile without keys: -EINVAL");
	ok(log_has("has no aws_access_key_id"), "no keys: said so");

	put_home(".aws/credentials",
		 "[default]\naws_secret_access_key = SeCrEtHALF\n", 0600);
	conf.profile = NULL;
	is_int(resolve(&conf, &c, "half profile"), -EINVAL,
	       "profile with half a key pair: -EINVAL");
	ok(log_has("no aws_access_key_id"), "half profile: missing key named");

	put_home(".aws/credentials",
		 "[default]\naws_secret_access_key SeCrEtBAD\n", 0600);
	is_int(resolve(&conf, &c, "malformed credentials"), -EINVAL,
	       "malformed credentials file: -EINVAL");
	ok(log_has("/.aws/credentials' line 2"), "malformed: file and line");
}

static void test_passwd_files(void)
{
	struct creds_conf conf = { 0 };
	struct s3_creds c = { 0 };
	static char untouched[] = "untouched";
	char pwd[4200];

	new_home();
	in_home(pwd, sizeof(pwd), "pwd");
	conf.passwd_file = pwd;

	put_file(pwd, AK_PWD ":SeCrEtPWD\n", 0644);
	c.source = untouched;
	is_int(resolve(&conf, &c, "mode 0644"), -EACCES, "mode 0644: -EACCES");
	ok(c.source == untouched && !c.access_key, "failure: *out untouched");
	c.source = NULL;
	ok(log_has(pwd) && log_has("chmod 600"), "mode 0644: path and fix");

	put_file(pwd, AK_PWD ":SeCrEtPWD\n", 0640);
	is_int(resolve(&conf, &c, "mode 0640"), -EACCES, "mode 0640: -EACCES");
	put_file(pwd, AK_PWD ":SeCrEtPWD\n", 0700);
	is_int(resolve(&conf, &c, "mode 0700"), -EACCES, "mode 0700: -EACCES");
	put_file(pwd, AK_PWD ":SeCrEtPWD\n", 0400);
	is_int(resolve(&conf, &c, "mode 0400"), 0, "mode 0400: 0");
	creds_release(&c);
	put_file(pwd, AK_PWD ":SeCrEtPWD\n", 0600);
	is_int(resolve(&conf, &c, "mode 0600"), 0, "mode 0600: 0");
	is_str(c.access_key, AK_PWD, "mode 0600: key");
	creds_release(&c);

	put_file(pwd, "# keys\n" AK_PWD ":SeCrEt PWD\n", 0600);
	is_int(resolve(&conf, &c, "malformed passwd"), -EINVAL,
	       "malformed passwd file: -EINVAL");
	ok(log_has(pwd) && log_has("line 2"), "malformed: file and line");

	put_file(pwd, "other:" AK_PWD ":SeCrEtPWD\n", 0600);
	conf.bucket = "mine";
	is_int(resolve(&conf, &c, "no line"), -ENOENT,
	       "named passwd file without our line: -ENOENT");
	ok(log_has(pwd) && log_has("'mine'"), "no line: file and bucket");
	conf.bucket = NULL;

	in_home(pwd, sizeof(pwd), "nosuch");
	set_env_keys();
	is_int(resolve(&conf, &c, "missing passwd"), -ENOENT,
	       "named missing passwd file: -ENOENT, env not used");
	ok(log_has(pwd) && log_has("does not exist"), "missing: named");
	unsetenv("AWS_ACCESS_KEY_ID");
	unsetenv("AWS_SECRET_ACCESS_KEY");

	in_home(pwd, sizeof(pwd), ".aws");
	is_int(resolve(&conf, &c, "directory"), -EINVAL,
	       "passwd file that is a directory: -EINVAL");
	ok(log_has("not a regular file"), "directory: said so");

	/* a default passwd file with a loose mode stops the chain, as s3fs */
	conf.passwd_file = NULL;
	put_home(".passwd-s3fs", AK_HOM ":SeCrEtHOM\n", 0604);
	is_int(resolve(&conf, &c, "loose default"), -EACCES,
	       "~/.passwd-s3fs mode 0604: -EACCES");
	ok(log_has("others"), "loose default: others named");

	/* nothing anywhere */
	new_home();
	if (etc_present) {
		skip_if_etc("nothing found: -ENOENT");
	} else {
		c.source = untouched;
		is_int(resolve(&conf, &c, "nothing"), -ENOENT,
		       "nothing found: -ENOENT");
		ok(c.source == untouched, "nothing found: *out untouched");
		c.source = NULL;
		ok(log_has("-o anonymous"), "nothing found: hints given");
	}
}

/* Failures with secrets all around: none may reach the log. */
static void test_no_secret_logged(void)
{
	struct creds_conf conf = { 0 };
	struct s3_creds c = { 0 };
	char pwd[4200];

	new_home();
	setenv("AWS_SECRET_ACCESS_KEY", "SeCrEtLONE", 1);
	setenv("AWS_SESSION_TOKEN", "ToKeNLONE", 1);
	put_home(".aws/credentials",
		 "[default]\naws_secret_access_key = SeCrEtHALF\n"
		 "aws_session_token = ToKeNHALF\n",
		 0600);
	is_int(resolve(&conf, &c, "secrets: half everywhere"), -EINVAL,
	       "secrets: half env, half profile");
	put_home(".aws/credentials", "[default]\nSeCrEtKEY\n", 0600);
	is_int(resolve(&conf, &c, "secrets: bad ini"), -EINVAL,
	       "secrets: malformed ini line");
	put_home(".aws/credentials", "[default\nToKeN\n", 0600);
	is_int(resolve(&conf, &c, "secrets: bad header"), -EINVAL,
	       "secrets: malformed header");
	conf.passwd_file = in_home(pwd, sizeof(pwd), "pwd");
	put_file(pwd, AK_PWD ":SeCrEt:ToKeN:x\n", 0600);
	is_int(resolve(&conf, &c, "secrets: bad passwd"), -EINVAL,
	       "secrets: malformed passwd line");
	put_file(pwd, AK_PWD ":SeCrEtPWD\n", 0666);
	is_int(resolve(&conf, &c, "secrets: loose passwd"), -EACCES,
	       "secrets: loose passwd mode");
	put_file(pwd, AK_PWD ":SeCrEtPWD\n", 0600);
	is_int(resolve(&conf, &c, "secrets: success"), 0, "secrets: success");
	ok(log_has("AKIA...") && log_has("passwd file"),
	   "debug line: source and masked key");
	creds_release(&c);
	unsetenv("AWS_SECRET_ACCESS_KEY");
	unsetenv("AWS_SESSION_TOKEN");
}

int main(void)
{
	plan_lazy();
	log_init("test_creds", LOG_LVL_DEBUG, false);
	etc_present = access("/etc/passwd-s3fs", F_OK) == 0;

	test_passwd_parser();
	test_ini_parser();

	if (!mkdtemp(root)) {
		ok(0, "mkdtemp");
		return done_testing();
	}
	snprintf(cap_path, sizeof(cap_path), "%s/stderr", root);
	test_precedence();
	test_shared_files();
	test_passwd_files();
	test_no_secret_logged();

	free(last_log);
	rm_rf(root);
	return done_testing();
}
