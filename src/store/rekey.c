/*
 * rekey.c - key rotation of an unmounted cache folder: crypt_rekey_cache()
 * (declared in store/crypt.h).
 *
 * Why here: rotation rewrites chunk files (store/chunk.h) and staging files
 * (store/sealfile.h), so it sits above both; crypt.c stays below them.
 *
 * Order: take the folder's lock; check every staging file (data not yet in
 * S3) before changing anything, so a file under a third key stops the run
 * with nothing changed; rewrite the staging files; then the chunks, which
 * may be dropped since they are only a cache.  Every file is rewritten
 * through a temporary and a rename, and a file already under the new key is
 * left as it is, so an interrupted run is finished by running it again.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "s3cachefs/chunk.h"
#include "s3cachefs/crypt.h"
#include "s3cachefs/log.h"
#include "s3cachefs/sealfile.h"

/* A staging file to rewrite. */
struct staged {
	char name[64];
	int64_t id;
	bool sealed;
};

struct rekey {
	const char *dir;
	const struct crypt_key *old_key, *new_key;
	char staging[PATH_MAX];
	struct staged *todo; /* owned */
	size_t n_todo;
	struct chunk_store *cs; /* chunks, written under new_key */
	struct crypt_rekey_stats st;
};

/* Does a staging file sealed as @info (or plain: NULL) belong to @k? */
static bool under(const struct seal_info *info, const struct crypt_key *k)
{
	if (!info || !k)
		return !info && !k;
	return strcmp(info->key_id, k->id_hex) == 0;
}

/* Check staging file @name; add it to the list when it needs rewriting. */
static int check_one(struct rekey *rk, const char *name)
{
	struct seal_info info, *ip = NULL;
	char path[PATH_MAX + 64];
	struct staged *v;
	int64_t id;
	bool sealed;
	int rc;

	if ((size_t)snprintf(path, sizeof(path), "%s/%s", rk->staging, name) >=
	    sizeof(path))
		return 0; /* not a name of ours */
	if (!seal_name_parse(name, &id, &sealed)) {
		/* a temporary of an interrupted copy, or not ours */
		if (strlen(name) > 4 &&
		    !strcmp(name + strlen(name) - 4, ".tmp"))
			unlink(path);
		return 0;
	}
	if (sealed) {
		rc = seal_probe(path, &info);
		if (rc < 0 || info.binding != (uint64_t)id) {
			log_error("staging file '%s' is damaged or unreadable",
				  path);
			return rc < 0 && rc != -EBADMSG ? rc : -EBADMSG;
		}
		ip = &info;
	}
	if (under(ip, rk->new_key)) {
		rk->st.skipped++;
		return 0;
	}
	if (!under(ip, rk->old_key)) {
		log_error("staging file '%s' is %s%s, under neither the old "
			  "key nor the new one",
			  path, ip ? "encrypted with key id " : "not encrypted",
			  ip ? ip->key_id : "");
		return -EKEYREJECTED;
	}
	v = realloc(rk->todo, (rk->n_todo + 1) * sizeof(*v));
	if (!v)
		return -ENOMEM;
	rk->todo = v;
	v += rk->n_todo++;
	seal_name(id, sealed, v->name, sizeof(v->name));
	v->id = id;
	v->sealed = sealed;
	return 0;
}

static int check_staging(struct rekey *rk)
{
	struct dirent *de;
	DIR *d;
	int rc = 0;

	d = opendir(rk->staging);
	if (!d) {
		if (errno == ENOENT)
			return 0;
		rc = -errno;
		log_error("cannot open '%s': %s", rk->staging, strerror(-rc));
		return rc;
	}
	while (rc == 0 && (de = readdir(d))) {
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			rc = check_one(rk, de->d_name);
	}
	closedir(d);
	return rc;
}

static int rewrite_staged(struct rekey *rk, const struct staged *s)
{
	char from[PATH_MAX + 64], to[PATH_MAX + 64], name[32];
	struct seal_file *src = NULL;
	int rc;

	snprintf(from, sizeof(from), "%s/%s", rk->staging, s->name);
	seal_name(s->id, rk->new_key != NULL, name, sizeof(name));
	snprintf(to, sizeof(to), "%s/%s", rk->staging, name);
	rc = seal_open(from, s->sealed ? rk->old_key : NULL, (uint64_t)s->id,
		       &src);
	if (rc == 0)
		rc = seal_copy(src, to, rk->new_key, (uint64_t)s->id);
	seal_close(src);
	if (rc == 0 && strcmp(from, to) != 0 && unlink(from) < 0)
		rc = -errno;
	if (rc < 0)
		log_error("cannot re-encrypt staging file '%s': %s", from,
			  strerror(-rc));
	else
		rk->st.staging_done++;
	return rc;
}

static int rekey_chunk(void *ctx, const char *name, uint64_t disk_bytes)
{
	struct rekey *rk = ctx;
	int rc;

	(void)disk_bytes;
	rc = chunk_rekey(rk->cs, name, rk->old_key);
	if (rc == 0)
		rk->st.chunks_done++;
	else if (rc == 1)
		rk->st.skipped++;
	else if (rc == -EBADMSG || rc == -ENOKEY)
		rk->st.chunks_dropped++;
	else if (rc != -ENOENT) {
		log_error("cannot re-encrypt chunk '%s' in '%s/chunks': %s",
			  name, rk->dir, strerror(-rc));
		return rc;
	}
	return 0;
}

/* Hold the folder's lock, as a mount does: -EBUSY when one holds it. */
static int lock_dir(const char *dir, int *fdp)
{
	char path[PATH_MAX];
	int fd, rc;

	snprintf(path, sizeof(path), "%s/lock", dir);
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0) {
		rc = -errno;
		log_error("cannot open '%s': %s", path, strerror(-rc));
		return rc;
	}
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		rc = errno == EWOULDBLOCK ? -EBUSY : -errno;
		if (rc == -EBUSY)
			log_error("cache folder '%s' is in use by a mount: "
				  "unmount it first",
				  dir);
		else
			log_error("cannot lock '%s': %s", path, strerror(-rc));
		close(fd);
		return rc;
	}
	*fdp = fd;
	return 0;
}

int crypt_rekey_cache(const char *cache_dir, const struct crypt_key *old_key,
		      const struct crypt_key *new_key,
		      struct crypt_rekey_stats *out)
{
	struct rekey rk = { .dir = cache_dir,
			    .old_key = old_key,
			    .new_key = new_key };
	struct chunk_store_conf csc = { 0 };
	char chunks[PATH_MAX];
	struct stat st;
	int lock_fd = -1, rc;
	size_t i;

	if (stat(cache_dir, &st) < 0)
		rc = -errno;
	else
		rc = S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
	if (rc < 0) {
		log_error("cache folder '%s': %s", cache_dir, strerror(-rc));
		goto out;
	}
	snprintf(rk.staging, sizeof(rk.staging), "%s/staging", cache_dir);
	snprintf(chunks, sizeof(chunks), "%s/chunks", cache_dir);
	rc = lock_dir(cache_dir, &lock_fd);
	if (rc < 0)
		goto out;
	rc = check_staging(&rk);
	for (i = 0; rc == 0 && i < rk.n_todo; i++)
		rc = rewrite_staged(&rk, &rk.todo[i]);
	if (rc < 0)
		goto out;
	if (stat(chunks, &st) < 0 && errno == ENOENT)
		goto out; /* no chunk yet */
	csc.dir = chunks;
	csc.key = new_key;
	rc = chunk_store_open(&csc, &rk.cs);
	if (rc == 0)
		rc = chunk_scan(rk.cs, rekey_chunk, &rk);
out:
	chunk_store_close(rk.cs);
	if (lock_fd >= 0)
		close(lock_fd);
	free(rk.todo);
	if (out)
		*out = rk.st;
	return rc;
}
