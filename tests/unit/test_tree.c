/*
 * test_tree.c - folder listings derived from a flat key list and from a
 * delimiter listing: markers, folders holding only folders, hidden names,
 * a folder beside a file of the same name, a listing cut short; keys of
 * every awkward kind give the same listings both ways.
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

/* The listing of @dir as a delimiter LIST of @keys would give it (S3's
 * rules: Contents for keys with no '/' after @dir, one CommonPrefix per
 * first segment otherwise), rendered.  Caller frees. */
static char *render_delimited(const char *const *keys, const char *dir)
{
	size_t len = strlen(dir), i;
	struct tree t;
	char *got;

	if (tree_init(&t, dir) < 0)
		return NULL;
	for (i = 0; keys[i]; i++) {
		const char *rest = keys[i] + len, *slash;
		char *prefix;

		if (strncmp(keys[i], dir, len) != 0)
			continue;
		slash = strchr(rest, '/');
		if (!slash) {
			tree_add_key(&t, keys[i], "\"e\"", 1, 2);
			continue;
		}
		prefix = strndup(keys[i], (size_t)(slash + 1 - keys[i]));
		if (prefix)
			tree_add_prefix(&t, prefix);
		free(prefix);
	}
	tree_finish(&t, true);
	got = render(&t);
	tree_release(&t);
	return got;
}

/* Every folder of the flat tree of @keys lists as its delimiter LIST. */
static void check_both_ways(const char *const *keys, const char *want,
			    const char *what)
{
	const struct tree_item *e;
	const char *dir;
	struct tree t;
	size_t i = 0, n, j, dirs = 0;
	char *got;

	is_int(tree_init(&t, ""), 0, "%s: init", what);
	for (j = 0; keys[j]; j++)
		tree_add_key(&t, keys[j], "\"e\"", 1, 2);
	tree_finish(&t, false);
	got = render(&t);
	is_str(got, want, "%s: flat", what);
	free(got);
	while (tree_next_dir(&t, &i, &dir, &e, &n)) {
		struct buf b = BUF_INIT(BUF_NO_LIMIT);
		char *flat, *delim = render_delimited(keys, dir);

		buf_adds(&b, *dir ? dir : "(root)");
		buf_addc(&b, ':');
		for (j = 0; j < n; j++) {
			if (j)
				buf_addc(&b, ',');
			buf_adds(&b, e[j].name);
			if (e[j].is_dir)
				buf_addc(&b, '/');
		}
		flat = buf_detach(&b, NULL);
		is_str(delim, flat, "%s: '%s' by delimiter", what, dir);
		free(flat);
		free(delim);
		dirs++;
	}
	ok(dirs > 1, "%s: %zu folders compared", what, dirs);
	tree_release(&t);
}

/* 64 bytes; names of 255 and 256 bytes are built from it */
#define N64 "NNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNN"
#define N255                                                                   \
	N64 N64 N64 "NNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNN" \
		    "NNNNNNN"
#define N256 N64 N64 N64 N64

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
	static const char *const awkward[] = {
		"",
		"\x01"
		"ctl",
		"\x7f",
		"..",
		"../up",
		".",
		"./in",
		"//x",
		"/lead",
		"a//b",
		"a/.",
		"a/..",
		"a/../b",
		"a/./b",
		"a/ok",
		"b\\s",
		"caf\xc3\xa9",
		"cafe\xcc\x81",
		"d/",
		"d/x",
		"f",
		"f/",
		"h/../x",
		"long/" N255,
		"long/" N256,
		"m/",
		"sp ace",
		"tab\tx",
		"trail//",
		"x",
		"x/",
		"x/y",
		"\xc0\xaf/f",
		"\xff",
		N256 "/f",
		NULL,
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
	check_both_ways(
		awkward,
		"(root):\x01"
		"ctl,a/,b\\s,cafe\xcc\x81,caf\xc3\xa9,d/,f/,h/,"
		"long/,m/,sp ace,tab\tx,trail/,x/,\x7f,\xc0\xaf/,\xff | "
		"a/:ok | d/:x | f/: | h/: | long/:" N255
		" | m/: | trail/: | x/:y | \xc0\xaf/:f",
		"awkward keys");
	return done_testing();
}
