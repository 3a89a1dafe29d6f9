/*
 * tree.h - the listings of folders, derived from the keys of one LIST.
 *
 * A LIST of prefix BASE with delimiter '/' gives BASE's files and its
 * sub-prefixes; a LIST without delimiter gives every key below BASE, from
 * which the listing of every folder below BASE follows.  Both go through
 * this module, so both obey the same name rules:
 *
 *   - a key's name is the segment after its folder; segments that are no
 *     file name (tree_name_ok) are hidden, and nothing below them is shown;
 *   - a key ending in '/' ("dir/", a folder marker) makes its folder exist,
 *     also when nothing else is in it;
 *   - a folder and a file of the same name: the folder is shown.
 *
 * Pure logic: no I/O, no locks.  Memory: one item per key plus one per
 * folder named on its path (at most depth items per key), all owned by the
 * tree; the caller bounds the keys it adds.
 */
#ifndef S3CACHEFS_TREE_H
#define S3CACHEFS_TREE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* One entry of one folder's listing.  Strings owned by the tree. */
struct tree_item {
	char *dir;  /* the folder's full prefix ("" or ending in '/') */
	char *name; /* one segment; "" marks that the folder exists */
	bool is_dir;
	/* files only: */
	char *etag; /* as listed, or "" */
	uint64_t size;
	int64_t mtime;
};

struct tree {
	char *base; /* the listed prefix, owned */
	size_t base_len;
	struct tree_item *it; /* owned; sorted by tree_finish() */
	size_t n, cap;
	char *last_key; /* the greatest key added, owned, or NULL */
	char *cut_key;	/* see tree_cut(), owned, or NULL */
};

/* True when @name (of @len bytes) may be a file name (vfs.h's rules). */
bool tree_name_ok(const char *name, size_t len);

/* Start a tree for a LIST of prefix @base ("" or ending in '/').  0 or
 * -ENOMEM; tree_release() either way. */
int tree_init(struct tree *t, const char *base);

/*
 * Add one listed object: its entry in its folder, and for each folder on
 * its path below @base, the folder's entry in its parent.  Keys outside
 * @base are ignored.  0 or -ENOMEM.
 */
int tree_add_key(struct tree *t, const char *key, const char *etag,
		 uint64_t size, int64_t mtime);

/* Add one common prefix of a delimiter listing of @base (its folder entry
 * only: its own listing is not known).  0 or -ENOMEM. */
int tree_add_prefix(struct tree *t, const char *prefix);

/*
 * The listing stops here, before its end: the folders holding the greatest
 * key added so far (base included) are not wholly known.  The rest of base
 * may then be added from a delimiter listing starting after that key.
 * 0 or -ENOMEM.
 */
int tree_cut(struct tree *t);

/*
 * Sort, drop duplicates, let folders win over files.  After tree_cut(),
 * drop every folder holding the key it was cut at, except base when
 * @base_complete (the rest of base was added since): only folders whose
 * keys all came are kept.
 */
void tree_finish(struct tree *t, bool base_complete);

/*
 * After tree_finish(), the folders in byte order: from index *i, set *dir
 * to the next folder, *e to its @n entries (markers left out) and advance
 * *i.  False when there is no folder left.
 */
bool tree_next_dir(const struct tree *t, size_t *i, const char **dir,
		   const struct tree_item **e, size_t *n);

void tree_release(struct tree *t); /* NULL-safe, idempotent */

#endif
