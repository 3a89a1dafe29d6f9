/*
 * tree.c - folder listings derived from the keys of one LIST (see tree.h).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "s3cachefs/log.h"
#include "s3cachefs/tree.h"
#include "s3cachefs/vfs.h"

bool tree_name_ok(const char *name, size_t len)
{
	if (len == 0 || len > VFS_NAME_MAX)
		return false;
	if (name[0] == '.' && (len == 1 || (len == 2 && name[1] == '.')))
		return false;
	return memchr(name, '/', len) == NULL && memchr(name, 0, len) == NULL;
}

static void item_free(struct tree_item *e)
{
	free(e->dir);
	free(e->name);
	free(e->etag);
}

/* Append an item: folder = the first @dir_len bytes of @key. */
static int add_item(struct tree *t, const char *key, size_t dir_len,
		    const char *name, size_t name_len, bool is_dir,
		    const char *etag, uint64_t size, int64_t mtime)
{
	struct tree_item *e;

	if (t->n == t->cap) {
		size_t cap = t->cap ? t->cap * 2 : 64;
		struct tree_item *it = realloc(t->it, cap * sizeof(*it));

		if (!it)
			return -ENOMEM;
		t->it = it;
		t->cap = cap;
	}
	e = &t->it[t->n];
	memset(e, 0, sizeof(*e));
	e->dir = strndup(key, dir_len);
	e->name = strndup(name, name_len);
	e->is_dir = is_dir;
	if (!is_dir && *name) {
		e->etag = strdup(etag ? etag : "");
		e->size = size;
		e->mtime = mtime;
	}
	if (!e->dir || !e->name || (!is_dir && *name && !e->etag)) {
		item_free(e);
		return -ENOMEM;
	}
	t->n++;
	return 0;
}

int tree_init(struct tree *t, const char *base)
{
	memset(t, 0, sizeof(*t));
	t->base = strdup(base);
	if (!t->base)
		return -ENOMEM;
	t->base_len = strlen(base);
	return add_item(t, base, t->base_len, "", 0, true, NULL, 0, 0);
}

static int note_last(struct tree *t, const char *key)
{
	if (t->last_key && strcmp(t->last_key, key) >= 0)
		return 0;
	free(t->last_key);
	t->last_key = strdup(key);
	return t->last_key ? 0 : -ENOMEM;
}

int tree_add_key(struct tree *t, const char *key, const char *etag,
		 uint64_t size, int64_t mtime)
{
	size_t dir_len = t->base_len;
	int rc;

	if (strncmp(key, t->base, t->base_len) != 0)
		return 0;
	rc = note_last(t, key);
	if (rc < 0)
		return rc;
	for (;;) {
		const char *seg = key + dir_len;
		const char *slash = strchr(seg, '/');
		size_t len = slash ? (size_t)(slash - seg) : strlen(seg);

		if (*seg == '\0')
			return 0; /* the folder's own marker */
		if (!tree_name_ok(seg, len)) {
			log_debug("key '%s' has no file name: not shown", key);
			return 0;
		}
		if (!slash)
			return add_item(t, key, dir_len, seg, len, false, etag,
					size, mtime);
		rc = add_item(t, key, dir_len, seg, len, true, NULL, 0, 0);
		if (rc == 0)
			rc = add_item(t, key, dir_len + len + 1, "", 0, true,
				      NULL, 0, 0);
		if (rc < 0)
			return rc;
		dir_len += len + 1;
	}
}

int tree_add_prefix(struct tree *t, const char *prefix)
{
	const char *seg = prefix + t->base_len;
	size_t len;

	if (strncmp(prefix, t->base, t->base_len) != 0)
		return 0;
	len = strlen(seg);
	if (len > 0 && seg[len - 1] == '/')
		len--;
	if (!tree_name_ok(seg, len)) {
		log_debug("prefix '%s' has no file name: not shown", prefix);
		return 0;
	}
	return add_item(t, prefix, t->base_len, seg, len, true, NULL, 0, 0);
}

static int item_cmp(const void *a, const void *b)
{
	const struct tree_item *x = a, *y = b;
	int c = strcmp(x->dir, y->dir);

	if (c == 0)
		c = strcmp(x->name, y->name);
	/* a folder sorts before a file of the same name */
	return c ? c : (int)y->is_dir - (int)x->is_dir;
}

int tree_cut(struct tree *t)
{
	free(t->cut_key);
	t->cut_key = strdup(t->last_key ? t->last_key : t->base);
	return t->cut_key ? 0 : -ENOMEM;
}

void tree_finish(struct tree *t, bool base_complete)
{
	size_t i, o = 0;

	if (t->n == 0)
		return;
	qsort(t->it, t->n, sizeof(*t->it), item_cmp);
	for (i = 0; i < t->n; i++) {
		struct tree_item *e = &t->it[i];
		const struct tree_item *p = o > 0 ? &t->it[o - 1] : NULL;

		if (t->cut_key &&
		    strncmp(t->cut_key, e->dir, strlen(e->dir)) == 0 &&
		    !(base_complete && strcmp(e->dir, t->base) == 0)) {
			item_free(e); /* its folder may hold more */
			continue;
		}
		if (p && strcmp(p->dir, e->dir) == 0 &&
		    strcmp(p->name, e->name) == 0) {
			if (!e->is_dir && p->is_dir)
				log_debug("key '%s%s' is also a prefix: the "
					  "directory is shown",
					  e->dir, e->name);
			item_free(e);
			continue;
		}
		t->it[o++] = *e;
	}
	t->n = o;
}

bool tree_next_dir(const struct tree *t, size_t *i, const char **dir,
		   const struct tree_item **e, size_t *n)
{
	size_t j = *i, k;

	if (j >= t->n)
		return false;
	*dir = t->it[j].dir;
	while (j < t->n && strcmp(t->it[j].dir, *dir) == 0 &&
	       t->it[j].name[0] == '\0')
		j++;
	for (k = j; k < t->n && strcmp(t->it[k].dir, *dir) == 0; k++)
		;
	*e = &t->it[j];
	*n = k - j;
	*i = k;
	return true;
}

void tree_release(struct tree *t)
{
	size_t i;

	if (!t)
		return;
	for (i = 0; i < t->n; i++)
		item_free(&t->it[i]);
	free(t->it);
	free(t->base);
	free(t->last_key);
	free(t->cut_key);
	memset(t, 0, sizeof(*t));
}
