/*
 * fuzz_keys.c - libFuzzer target for the mapping of S3 keys to the tree of
 * paths (tree.h), which every listing goes through.
 *
 * Input: the first byte picks the listed prefix and where a flat listing
 * is cut; the rest is keys separated by NUL bytes, which are sorted and
 * made unique as S3 returns them (sizes are the keys' positions).  Beyond
 * memory safety it checks what must hold for any keys:
 *   - every folder is the prefix or below it, every name is a file name
 *     (tree_name_ok), and a folder's entries are in strictly increasing
 *     byte order, so no name is shown twice;
 *   - a file entry is exactly a listed key, and no listed key lies below
 *     it (a folder and a file of one name show the folder); a folder entry
 *     has a listed key below it;
 *   - every folder's listing is the same whether derived from one flat
 *     LIST of the prefix or from a delimiter LIST of that folder;
 *   - a flat listing cut short and finished with a delimiter listing from
 *     the cut key (as the vfs does past list_flat) gives the prefix's
 *     listing unchanged, and keeps only folders it read whole.
 */
#undef NDEBUG /* the checks below are the point, in release builds too */
#include <assert.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "s3cachefs/tree.h"

#define MAX_KEYS 64

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const bases[] = { "", "a/", "a/b/", "\x01/" };

static int by_bytes(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool starts(const char *s, const char *prefix)
{
	return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* Entries of folder @dir in @t, or false when @t does not list it. */
static bool find_dir(const struct tree *t, const char *dir,
		     const struct tree_item **e, size_t *n)
{
	const char *d;
	size_t i = 0;

	while (tree_next_dir(t, &i, &d, e, n))
		if (strcmp(d, dir) == 0)
			return true;
	return false;
}

static bool same_listing(const struct tree_item *a, size_t na,
			 const struct tree_item *b, size_t nb)
{
	size_t i;

	if (na != nb)
		return false;
	for (i = 0; i < na; i++)
		if (strcmp(a[i].name, b[i].name) != 0 ||
		    a[i].is_dir != b[i].is_dir ||
		    (!a[i].is_dir && a[i].size != b[i].size))
			return false;
	return true;
}

/* Is "@dir@name" a listed key, and is any key below "@dir@name/"? */
static void look_up(char **keys, size_t n, const char *dir, const char *name,
		    bool *is_key, bool *has_below)
{
	size_t dl = strlen(dir), nl = strlen(name), i;

	*is_key = *has_below = false;
	for (i = 0; i < n; i++) {
		if (strncmp(keys[i], dir, dl) != 0 ||
		    strncmp(keys[i] + dl, name, nl) != 0)
			continue;
		if (keys[i][dl + nl] == '\0')
			*is_key = true;
		else if (keys[i][dl + nl] == '/')
			*has_below = true;
	}
}

static void check_folder(char **keys, size_t n, const char *base,
			 const char *dir, const struct tree_item *e, size_t ne)
{
	const char *p;
	size_t i;

	assert(starts(dir, base));
	for (p = dir + strlen(base); *p;) {
		const char *slash = strchr(p, '/');

		assert(slash && tree_name_ok(p, (size_t)(slash - p)));
		p = slash + 1;
	}
	for (i = 0; i < ne; i++) {
		bool is_key, has_below;

		assert(tree_name_ok(e[i].name, strlen(e[i].name)));
		assert(i == 0 || strcmp(e[i - 1].name, e[i].name) < 0);
		look_up(keys, n, dir, e[i].name, &is_key, &has_below);
		if (e[i].is_dir)
			assert(has_below);
		else
			assert(is_key && !has_below);
	}
}

/* A delimiter LIST of @dir, after @after (or from the start) into @t. */
static void add_delimited(struct tree *t, char **keys, size_t n,
			  const char *dir, const char *after)
{
	size_t dl = strlen(dir), i;
	char *last = NULL;

	for (i = 0; i < n; i++) {
		const char *slash;

		if (!starts(keys[i], dir) ||
		    (after && strcmp(keys[i], after) <= 0))
			continue;
		slash = strchr(keys[i] + dl, '/');
		if (!slash) {
			assert(tree_add_key(t, keys[i], "", i, 0) == 0);
			continue;
		}
		if (last && strncmp(last, keys[i], strlen(last)) == 0)
			continue;
		free(last);
		last = strndup(keys[i], (size_t)(slash - keys[i]) + 1);
		assert(last && tree_add_prefix(t, last) == 0);
	}
	free(last);
}

/* The delimiter listing of every folder of @flat equals the flat one. */
static void check_delimited(const struct tree *flat, char **keys, size_t n)
{
	const struct tree_item *e, *e2;
	const char *dir;
	size_t i = 0, ne, ne2;

	while (tree_next_dir(flat, &i, &dir, &e, &ne)) {
		struct tree t;

		assert(tree_init(&t, dir) == 0);
		add_delimited(&t, keys, n, dir, NULL);
		tree_finish(&t, true);
		assert(find_dir(&t, dir, &e2, &ne2) || ne == 0);
		if (ne)
			assert(same_listing(e, ne, e2, ne2));
		tree_release(&t);
	}
}

/* A flat listing of @base cut after @k keys, then the rest delimited. */
static void check_cut(const struct tree *flat, char **keys, size_t n,
		      const char *base, size_t k)
{
	const struct tree_item *e, *e2;
	const char *dir;
	size_t i, ne, ne2;
	struct tree t;

	assert(tree_init(&t, base) == 0);
	for (i = 0; i < k; i++)
		assert(tree_add_key(&t, keys[i], "", i, 0) == 0);
	assert(tree_cut(&t) == 0);
	add_delimited(&t, keys, n, base, t.cut_key ? t.cut_key : NULL);
	tree_finish(&t, true);
	i = 0;
	while (tree_next_dir(&t, &i, &dir, &e, &ne)) {
		/* every folder kept is one the whole listing has, unchanged */
		assert(find_dir(flat, dir, &e2, &ne2));
		assert(same_listing(e, ne, e2, ne2));
	}
	if (find_dir(flat, base, &e2, &ne2) && ne2) {
		assert(find_dir(&t, base, &e, &ne));
		assert(same_listing(e, ne, e2, ne2));
	}
	tree_release(&t);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const struct tree_item *e;
	char *keys[MAX_KEYS], *text;
	const char *base, *dir, *p;
	size_t n = 0, i, m, ne;
	struct tree flat;

	if (size < 1)
		return 0;
	base = bases[data[0] & 3];
	text = malloc(size);
	if (!text)
		return 0;
	memcpy(text, data + 1, size - 1);
	text[size - 1] = '\0';
	for (p = text; p < text + size - 1 && n < MAX_KEYS; p += strlen(p) + 1)
		if (*p)
			keys[n++] = (char *)p;
	qsort(keys, n, sizeof(keys[0]), by_bytes);
	for (i = m = 0; i < n; i++)
		if (m == 0 || strcmp(keys[m - 1], keys[i]) != 0)
			keys[m++] = keys[i];
	n = m;

	assert(tree_init(&flat, base) == 0);
	for (i = 0; i < n; i++)
		assert(tree_add_key(&flat, keys[i], "", i, 0) == 0);
	tree_finish(&flat, true);
	i = 0;
	while (tree_next_dir(&flat, &i, &dir, &e, &ne))
		check_folder(keys, n, base, dir, e, ne);
	check_delimited(&flat, keys, n);
	if (n)
		check_cut(&flat, keys, n, base, 1 + (data[0] >> 2) % n);
	tree_release(&flat);
	free(text);
	return 0;
}
