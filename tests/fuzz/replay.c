/*
 * replay.c - runs a fuzz target over every file of its corpus, as a plain
 * regression test (TAP, one line per file) in builds without libFuzzer.
 * A crash, an assertion or a sanitizer report fails the test.
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "s3cachefs/fileio.h"
#include "../unit/tap.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int by_name(const struct dirent **a, const struct dirent **b)
{
	return strcmp((*a)->d_name, (*b)->d_name);
}

int main(int argc, char **argv)
{
	struct dirent **names = NULL;
	char path[4096];
	int i, n;

	if (argc != 2) {
		fprintf(stderr, "usage: %s CORPUS_DIR\n", argv[0]);
		return 2;
	}
	n = scandir(argv[1], &names, NULL, by_name);
	if (!ok(n > 0, "corpus '%s' has files", argv[1]))
		return done_testing();
	for (i = 0; i < n; i++) {
		char *data = NULL;
		size_t len = 0;

		if (names[i]->d_name[0] != '.') {
			snprintf(path, sizeof(path), "%s/%s", argv[1],
				 names[i]->d_name);
			if (ok(read_file(path, 1 << 20, &data, &len) == 0,
			       "read %s", names[i]->d_name))
				ok(LLVMFuzzerTestOneInput((const uint8_t *)data,
							  len) == 0,
				   "replay %s", names[i]->d_name);
			free(data);
		}
		free(names[i]);
	}
	free(names);
	return done_testing();
}
