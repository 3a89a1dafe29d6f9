/*
 * fuzz_creds.c - libFuzzer target for the two pure parsers of creds.h.
 *
 * The input, NUL-terminated, is parsed as a passwd file (without a bucket
 * and for bucket "b") and as an INI file (sections "default", "profile dev"
 * and "dev", overlaid on one another as the resolver does with credentials
 * and config).  On success the fields must be NUL-terminated strings no
 * longer than the input; everything is released, so leaks and double frees
 * show up under ASan.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "s3cachefs/creds.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(const struct s3_creds *c, size_t size)
{
	const char *const fields[] = { c->access_key, c->secret_key,
				       c->session_token, c->region };
	size_t i;

	for (i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
		if (fields[i] && strlen(fields[i]) > size)
			abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const sections[] = { "default", "profile dev",
						"dev" };
	struct s3_creds c = { 0 };
	char *text;
	size_t i;

	text = malloc(size + 1);
	if (!text)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';

	if (creds_parse_passwd(text, NULL, &c) == 0)
		check(&c, size);
	creds_release(&c);
	if (creds_parse_passwd(text, "b", &c) == 0)
		check(&c, size);
	creds_release(&c);

	for (i = 0; i < sizeof(sections) / sizeof(sections[0]); i++)
		if (creds_parse_ini(text, sections[i], &c) == 0)
			check(&c, size);
	creds_release(&c);

	free(text);
	return 0;
}
