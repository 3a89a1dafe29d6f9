/*
 * fuzz_xml.c - libFuzzer target for s3xml.
 *
 * The first input byte chooses the kind (byte % 6) and how the rest is fed:
 * whole when byte / 6 is 0, else in pieces of that many bytes (1..42), so
 * the fuzzer also explores expat's partial-token paths.  Whatever parses
 * has every result taken and released, so leaks and double frees show up
 * under ASan.  The bound is small enough to reach -EMSGSIZE.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "s3cachefs/s3xml.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void take_all(struct s3_xml *x, enum s3_xml_kind kind)
{
	struct s3_list_page page;
	struct s3_error_info err;
	struct s3_delete_failure *fails = NULL;
	size_t n = 0;
	char *s = NULL;

	if (s3_xml_is_error(x)) {
		if (s3_xml_take_error(x, &err) == 0)
			s3_error_info_release(&err);
		return;
	}
	switch (kind) {
	case S3_XML_LIST:
		if (s3_xml_take_list(x, &page) == 0)
			s3_list_page_release(&page);
		break;
	case S3_XML_INITIATE_MPU:
	case S3_XML_COMPLETE_MPU:
	case S3_XML_COPY:
		if (s3_xml_take_string(x, &s) == 0)
			free(s);
		break;
	case S3_XML_DELETE:
		if (s3_xml_take_delete(x, &fails, &n) == 0)
			s3_delete_failures_free(fails, n);
		break;
	case S3_XML_ERROR:
		break;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct s3_xml *x = NULL;
	enum s3_xml_kind kind;
	size_t step, off = 0;
	int rc = 0;

	if (size < 1)
		return 0;
	kind = (enum s3_xml_kind)(data[0] % 6);
	step = data[0] / 6;
	data++;
	size--;
	if (s3_xml_new(kind, 64u << 10, &x) < 0)
		return 0;
	while (rc == 0 && off < size) {
		size_t n = size - off;

		if (step && n > step)
			n = step;
		rc = s3_xml_feed(x, data + off, n);
		off += n;
	}
	if (rc == 0)
		rc = s3_xml_finish(x);
	if (rc == 0)
		take_all(x, kind);
	s3_xml_free(x);
	return 0;
}
