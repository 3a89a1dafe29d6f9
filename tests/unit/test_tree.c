/*
 * test_tree.c - folder listings derived from a flat key list and from a
 * delimiter listing: markers, folders holding only folders, hidden names,
 * a folder beside a file of the same name, a listing cut short.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "s3cachefs/buf.h"
#include "s3cachefs/tree.h"
#include "tap.h"

/* Every folder as "dir:name,dir/,..." joined by " | ".  Caller frees. */
static char *render(const struct tree *t)
{
	struct buf b = BUF_INIT(BUF_NO_LIMIT);
	const struct tree_item *e;
	const char *dir;
	size_t i = 0, n, j;

	while (tree_next_dir(t, &i, &dir, &e, &n)) {
		if (b.len)
			buf_adds(&b, " | ");
		buf_adds(&b, *dir ? dir : "(root)");
		buf_addc(&b, ':');
		for (j = 0; j < n; j++) {
			if (j)
				buf_addc(&b, ',');
			buf_adds(&b, e[j].name);
			if (e[j].is_dir)
				buf_addc(&b, '/');
		}
	}
	return buf_detach(&b, NULL);
}

static void check_flat(const char *base, const char *const *keys, bool done,
		       const char *want, const char *what)
{
	struct tree t;
	char *got;
	size_t i;

	is_int(tree_init(&t, base), 0, "%s: init", what);
	for (i = 0; keys[i]; i++)
		is_int(tree_add_key(&t, keys[i], "\"e\"", 1, 2), 0,
		       "%s: add '%s'", what, keys[i]);
	if (!done)
		is_int(tree_cut(&t), 0, "%s: cut", what);
	tree_finish(&t, false);
	got = render(&t);
	is_str(got, want, "%s", what);
	free(got);
	tree_release(&t);
}

int main(void)
{
	static const char *const nested[] = {
		"a/b/c/f1", "a/b/c/f2", "a/g", "top", NULL,
	};
	static const char *const markers[] = {
		"e/", "m/", "m/x/", "m/x/y", NULL,
	};
	static const char *const clash[] = {
		"d", "d/in", "k", "k/", NULL,
	};
	static const char *const hidden[] = {
		"ok", "w//z", "w/./z", "w/../z", "w/good", "x/", NULL,
	};
	static const char *const below[] = {
		"p/", "p/q/r", "p/s", "pz", NULL,
	};
	static const char *const cut[] = {
		"a/1", "b/c/1", "b/c/2", "b/d/1", NULL,
	};
	struct tree t;
	const struct tree_item *e;
	const char *dir;
	size_t i = 0, n;
	char *got;

	ok(tree_name_ok("a", 1) && !tree_name_ok(".", 1) &&
		   !tree_name_ok("..", 2) && tree_name_ok("...", 3) &&
		   !tree_name_ok("", 0) && !tree_name_ok("a/b", 3),
	   "name rules");

	check_flat("", nested, true,
		   "(root):a/,top | a/:b/,g | a/b/:c/ | a/b/c/:f1,f2",
		   "folders holding only folders");
	check_flat("", markers, true, "(root):e/,m/ | e/: | m/:x/ | m/x/:y",
		   "markers make (empty) folders");
	check_flat("", clash, true, "(root):d/,k/ | d/:in | k/:",
		   "a folder wins over a file of its name");
	check_flat("", hidden, true, "(root):ok,w/,x/ | w/:good | x/:",
		   "names that are no file name are hidden");
	check_flat("p/", below, true, "p/:q/,s | p/q/:r",
		   "a base: its marker, keys outside");
	check_flat("", cut, false, "a/:1 | b/c/:1,2",
		   "a cut listing keeps only folders wholly read");

	/* the entries carry the listed attributes */
	is_int(tree_init(&t, ""), 0, "attrs: init");
	is_int(tree_add_key(&t, "f", "\"x\"", 42, 7), 0, "attrs: add");
	tree_finish(&t, true);
	ok(tree_next_dir(&t, &i, &dir, &e, &n) && n == 1, "attrs: one entry");
	ok(n == 1 && strcmp(e[0].etag, "\"x\"") == 0 && e[0].size == 42 &&
		   e[0].mtime == 7 && !e[0].is_dir,
	   "attrs: ETag, size and mtime kept");
	tree_release(&t);

	/* a delimiter listing: files and common prefixes of the base only */
	is_int(tree_init(&t, "b/"), 0, "delimiter: init");
	tree_add_key(&t, "b/", NULL, 0, 0);
	tree_add_key(&t, "b/f", NULL, 3, 0);
	tree_add_key(&t, "b/s", NULL, 3, 0);
	tree_add_prefix(&t, "b/s/");
	tree_add_prefix(&t, "b//");
	tree_add_prefix(&t, "b/t/");
	tree_finish(&t, true);
	got = render(&t);
	is_str(got, "b/:f,s/,t/", "delimiter: same rules, no sub-listings");
	free(got);
	tree_release(&t);
	tree_release(&t);

	/* cut, then the rest of the base from a delimiter listing */
	is_int(tree_init(&t, ""), 0, "cut+rest: init");
	tree_add_key(&t, "a/1", NULL, 1, 0);
	tree_add_key(&t, "b/c/1", NULL, 1, 0);
	tree_add_key(&t, "b/d/1", NULL, 1, 0);
	is_int(tree_cut(&t), 0, "cut+rest: cut");
	tree_add_prefix(&t, "b/");
	tree_add_prefix(&t, "e/");
	tree_add_key(&t, "f", NULL, 1, 0);
	tree_finish(&t, true);
	got = render(&t);
	is_str(got, "(root):a/,b/,e/,f | a/:1 | b/c/:1",
	       "cut+rest: the base is whole, the cut folders are not");
	free(got);
	tree_release(&t);
	return done_testing();
}
