/*
 * xml.c - streaming, size-bounded parsing of S3 response bodies with expat.
 *
 * The body is pushed through expat as it arrives; start, end and
 * character-data handlers keep only the fields S3 callers use and drop the
 * rest.  Elements are recognised by local name (anything up to the last ':'
 * is a namespace prefix and ignored; xmlns attributes are ignored) and by
 * where they stand, so ListBucketResult/Prefix (the request prefix) is not
 * mistaken for ListBucketResult/CommonPrefixes/Prefix.
 *
 * States: FEEDING (new, taking bytes), DONE (finish succeeded: results may
 * be taken, the expat parser is gone) and FAILED (err holds the first error,
 * which every later feed or finish returns).
 *
 * Invariants:
 *  - fed <= max_bytes; the text of one field never exceeds FIELD_MAX and
 *    elements never nest deeper than MAX_DEPTH, so memory stays linear in
 *    max_bytes whatever the body is.
 *  - A body with a DOCTYPE is refused before any declaration in it is read,
 *    so no entity can be defined: no billion laughs, no external entities.
 *  - slot != SLOT_NONE exactly while inside a leaf element whose text is
 *    kept; that text accumulates in text, as expat may deliver it in many
 *    pieces (feeding one byte at a time gives the same results).
 *  - Everything parsed so far is owned by the struct and freed by
 *    s3_xml_free whatever the state; the takes move it out.
 *  - Keys and prefixes are kept as sent and URL-decoded once, at finish,
 *    because <EncodingType> may come after them.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <expat.h>

#include "s3cachefs/buf.h"
#include "s3cachefs/s3xml.h"
#include "s3cachefs/strutil.h"

/* S3 keys are at most 1024 bytes (3 KiB URL-encoded); tokens are shorter. */
#define FIELD_MAX (64u << 10)
/* S3 bodies nest four deep; this stops <a><a><a>... from costing memory. */
#define MAX_DEPTH 32
/* Elements whose names matter are at most this deep (root is depth 1). */
#define PATH_DEPTH 4
/* XML_Parse takes an int length. */
#define FEED_CHUNK (1 << 20)

enum state { ST_FEEDING, ST_DONE, ST_FAILED };

/* Local names that matter; TOK_OTHER for every other element. */
enum tok {
	TOK_OTHER,
	TOK_LIST_BUCKET_RESULT,
	TOK_ERROR,
	TOK_INITIATE_RESULT,
	TOK_COMPLETE_RESULT,
	TOK_COPY_OBJECT_RESULT,
	TOK_COPY_PART_RESULT,
	TOK_DELETE_RESULT,
	TOK_CONTENTS,
	TOK_COMMON_PREFIXES,
	TOK_KEY,
	TOK_ETAG,
	TOK_SIZE,
	TOK_LAST_MODIFIED,
	TOK_PREFIX,
	TOK_IS_TRUNCATED,
	TOK_NEXT_CONTINUATION_TOKEN,
	TOK_NEXT_MARKER,
	TOK_ENCODING_TYPE,
	TOK_CODE,
	TOK_MESSAGE,
	TOK_REQUEST_ID,
	TOK_REGION,
	TOK_ENDPOINT,
	TOK_UPLOAD_ID,
};

static const struct {
	const char *name;
	enum tok tok;
} tok_names[] = {
	{ "ListBucketResult", TOK_LIST_BUCKET_RESULT },
	{ "Error", TOK_ERROR },
	{ "InitiateMultipartUploadResult", TOK_INITIATE_RESULT },
	{ "CompleteMultipartUploadResult", TOK_COMPLETE_RESULT },
	{ "CopyObjectResult", TOK_COPY_OBJECT_RESULT },
	{ "CopyPartResult", TOK_COPY_PART_RESULT },
	{ "DeleteResult", TOK_DELETE_RESULT },
	{ "Contents", TOK_CONTENTS },
	{ "CommonPrefixes", TOK_COMMON_PREFIXES },
	{ "Key", TOK_KEY },
	{ "ETag", TOK_ETAG },
	{ "Size", TOK_SIZE },
	{ "LastModified", TOK_LAST_MODIFIED },
	{ "Prefix", TOK_PREFIX },
	{ "IsTruncated", TOK_IS_TRUNCATED },
	{ "NextContinuationToken", TOK_NEXT_CONTINUATION_TOKEN },
	{ "NextMarker", TOK_NEXT_MARKER },
	{ "EncodingType", TOK_ENCODING_TYPE },
	{ "Code", TOK_CODE },
	{ "Message", TOK_MESSAGE },
	{ "RequestId", TOK_REQUEST_ID },
	{ "Region", TOK_REGION },
	{ "Endpoint", TOK_ENDPOINT },
	{ "UploadId", TOK_UPLOAD_ID },
};

/* Leaf elements whose text is kept, and where it goes. */
enum slot {
	SLOT_NONE,
	SLOT_ENTRY_KEY,
	SLOT_ENTRY_ETAG,
	SLOT_ENTRY_SIZE,
	SLOT_ENTRY_MTIME,
	SLOT_PREFIX,
	SLOT_IS_TRUNCATED,
	SLOT_CONTINUATION,
	SLOT_NEXT_MARKER,
	SLOT_ENCODING,
	SLOT_ERR_CODE,
	SLOT_ERR_MESSAGE,
	SLOT_ERR_REQUEST_ID,
	SLOT_ERR_REGION,
	SLOT_ERR_ENDPOINT,
	SLOT_STRING,
	SLOT_DEL_KEY,
	SLOT_DEL_CODE,
	SLOT_DEL_MESSAGE,
};

struct s3_xml {
	enum s3_xml_kind kind;
	enum state state;
	int err;      /* first error, sticky; 0 while none */
	XML_Parser p; /* NULL once DONE */
	size_t max_bytes;
	size_t fed;
	bool root_seen;
	bool is_error; /* the root element is <Error> */

	size_t depth;		       /* open elements; the root is 1 */
	enum tok path[PATH_DEPTH + 1]; /* path[d]: element at depth d */
	enum slot slot;		       /* leaf being read, or SLOT_NONE */
	struct buf text;	       /* its text so far, at most FIELD_MAX */

	/* S3_XML_LIST */
	struct s3_list_page page;
	size_t entries_alloc;
	size_t prefixes_alloc;
	struct s3_list_entry entry; /* the <Contents> being read */
	char *prefix;		    /* the <CommonPrefixes> being read */
	char *continuation;
	char *next_marker;
	bool url_encoded;

	/* S3_XML_ERROR, or any kind whose body was <Error> */
	struct s3_error_info error;

	/* S3_XML_INITIATE_MPU, S3_XML_COMPLETE_MPU, S3_XML_COPY */
	char *string;

	/* S3_XML_DELETE */
	struct s3_delete_failure *fails;
	size_t n_fails;
	size_t fails_alloc;
	struct s3_delete_failure fail; /* the DeleteResult/<Error> being read */
};

static void entry_release(struct s3_list_entry *e)
{
	free(e->key);
	free(e->etag);
	memset(e, 0, sizeof(*e));
}

static void failure_release(struct s3_delete_failure *f)
{
	free(f->key);
	free(f->code);
	free(f->message);
	memset(f, 0, sizeof(*f));
}

/* Record the first error and make expat stop at the end of this callback. */
static void fail(struct s3_xml *x, int rc)
{
	if (!x->err)
		x->err = rc;
	if (x->p)
		XML_StopParser(x->p, XML_FALSE);
}

static enum tok tok_of(const XML_Char *name)
{
	const char *local = strrchr(name, ':');
	size_t i;

	local = local ? local + 1 : name;
	for (i = 0; i < sizeof(tok_names) / sizeof(tok_names[0]); i++)
		if (strcmp(local, tok_names[i].name) == 0)
			return tok_names[i].tok;
	return TOK_OTHER;
}

static bool root_ok(enum s3_xml_kind kind, enum tok t)
{
	switch (kind) {
	case S3_XML_LIST:
		return t == TOK_LIST_BUCKET_RESULT;
	case S3_XML_ERROR:
		return false; /* only <Error>, checked by the caller */
	case S3_XML_INITIATE_MPU:
		return t == TOK_INITIATE_RESULT;
	case S3_XML_COMPLETE_MPU:
		return t == TOK_COMPLETE_RESULT;
	case S3_XML_COPY:
		return t == TOK_COPY_OBJECT_RESULT || t == TOK_COPY_PART_RESULT;
	case S3_XML_DELETE:
		return t == TOK_DELETE_RESULT;
	}
	return false;
}

/* Which slot an element @t opened at depth x->depth fills, if any. */
static enum slot slot_for(const struct s3_xml *x, enum tok t)
{
	size_t d = x->depth;

	if (x->is_error) {
		if (d != 2)
			return SLOT_NONE;
		switch (t) {
		case TOK_CODE:
			return SLOT_ERR_CODE;
		case TOK_MESSAGE:
			return SLOT_ERR_MESSAGE;
		case TOK_REQUEST_ID:
			return SLOT_ERR_REQUEST_ID;
		case TOK_REGION:
			return SLOT_ERR_REGION;
		case TOK_ENDPOINT:
			return SLOT_ERR_ENDPOINT;
		default:
			return SLOT_NONE;
		}
	}

	switch (x->kind) {
	case S3_XML_LIST:
		/* The header promises EncodingType wherever it stands. */
		if (t == TOK_ENCODING_TYPE)
			return SLOT_ENCODING;
		if (d == 2 && t == TOK_IS_TRUNCATED)
			return SLOT_IS_TRUNCATED;
		if (d == 2 && t == TOK_NEXT_CONTINUATION_TOKEN)
			return SLOT_CONTINUATION;
		if (d == 2 && t == TOK_NEXT_MARKER)
			return SLOT_NEXT_MARKER;
		if (d == 3 && x->path[2] == TOK_CONTENTS) {
			switch (t) {
			case TOK_KEY:
				return SLOT_ENTRY_KEY;
			case TOK_ETAG:
				return SLOT_ENTRY_ETAG;
			case TOK_SIZE:
				return SLOT_ENTRY_SIZE;
			case TOK_LAST_MODIFIED:
				return SLOT_ENTRY_MTIME;
			default:
				return SLOT_NONE;
			}
		}
		if (d == 3 && x->path[2] == TOK_COMMON_PREFIXES &&
		    t == TOK_PREFIX)
			return SLOT_PREFIX;
		return SLOT_NONE;
	case S3_XML_INITIATE_MPU:
		return d == 2 && t == TOK_UPLOAD_ID ? SLOT_STRING : SLOT_NONE;
	case S3_XML_COMPLETE_MPU:
	case S3_XML_COPY:
		return d == 2 && t == TOK_ETAG ? SLOT_STRING : SLOT_NONE;
	case S3_XML_DELETE:
		if (d != 3 || x->path[2] != TOK_ERROR)
			return SLOT_NONE;
		switch (t) {
		case TOK_KEY:
			return SLOT_DEL_KEY;
		case TOK_CODE:
			return SLOT_DEL_CODE;
		case TOK_MESSAGE:
			return SLOT_DEL_MESSAGE;
		default:
			return SLOT_NONE;
		}
	case S3_XML_ERROR:
		break;
	}
	return SLOT_NONE;
}

static bool is_xml_space(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* The text of the current leaf without surrounding XML whitespace. */
static const char *trimmed(struct buf *b)
{
	char *s = b->data;

	if (!s)
		return "";
	while (b->len && is_xml_space(s[b->len - 1]))
		s[--b->len] = '\0';
	while (is_xml_space(*s))
		s++;
	return s;
}

static int parse_u64(const char *s, uint64_t *out)
{
	uint64_t v = 0;

	if (!*s)
		return -EPROTO;
	for (; *s; s++) {
		unsigned int dig;

		if (*s < '0' || *s > '9')
			return -EPROTO;
		dig = (unsigned int)(*s - '0');
		if (v > (UINT64_MAX - dig) / 10)
			return -EPROTO;
		v = v * 10 + dig;
	}
	*out = v;
	return 0;
}

/* Move the text of the current leaf into *@dst, replacing a repeat. */
static int take_text(struct s3_xml *x, char **dst)
{
	char *s = buf_detach(&x->text, NULL);

	if (!s)
		return -ENOMEM;
	free(*dst);
	*dst = s;
	return 0;
}

static int store_slot(struct s3_xml *x)
{
	const char *v;
	int64_t t;

	switch (x->slot) {
	case SLOT_NONE:
		return 0;
	case SLOT_ENTRY_KEY:
		return take_text(x, &x->entry.key);
	case SLOT_ENTRY_ETAG:
		return take_text(x, &x->entry.etag);
	case SLOT_ENTRY_SIZE:
		return parse_u64(trimmed(&x->text), &x->entry.size);
	case SLOT_ENTRY_MTIME:
		if (parse_iso8601(trimmed(&x->text), &t) < 0)
			return -EPROTO;
		x->entry.mtime = t;
		return 0;
	case SLOT_PREFIX:
		return take_text(x, &x->prefix);
	case SLOT_IS_TRUNCATED:
		v = trimmed(&x->text);
		if (strcmp(v, "true") == 0)
			x->page.truncated = true;
		else if (strcmp(v, "false") == 0)
			x->page.truncated = false;
		else
			return -EPROTO;
		return 0;
	case SLOT_CONTINUATION:
		return take_text(x, &x->continuation);
	case SLOT_NEXT_MARKER:
		return take_text(x, &x->next_marker);
	case SLOT_ENCODING:
		/* Any other encoding would leave keys we cannot read. */
		v = trimmed(&x->text);
		if (strcmp(v, "url") == 0)
			x->url_encoded = true;
		else if (*v)
			return -EPROTO;
		return 0;
	case SLOT_ERR_CODE:
		return take_text(x, &x->error.code);
	case SLOT_ERR_MESSAGE:
		return take_text(x, &x->error.message);
	case SLOT_ERR_REQUEST_ID:
		return take_text(x, &x->error.request_id);
	case SLOT_ERR_REGION:
		return take_text(x, &x->error.region);
	case SLOT_ERR_ENDPOINT:
		return take_text(x, &x->error.endpoint);
	case SLOT_STRING:
		return take_text(x, &x->string);
	case SLOT_DEL_KEY:
		return take_text(x, &x->fail.key);
	case SLOT_DEL_CODE:
		return take_text(x, &x->fail.code);
	case SLOT_DEL_MESSAGE:
		return take_text(x, &x->fail.message);
	}
	return 0;
}

/* Make room for one more of @size bytes in *@arr holding @n of *@alloc. */
static int grow(void **arr, size_t n, size_t *alloc, size_t size)
{
	size_t want;
	void *p;

	if (n < *alloc)
		return 0;
	want = *alloc ? *alloc * 2 : 16;
	if (want > SIZE_MAX / size)
		return -ENOMEM;
	p = realloc(*arr, want * size);
	if (!p)
		return -ENOMEM;
	*arr = p;
	*alloc = want;
	return 0;
}

static int push_entry(struct s3_xml *x)
{
	struct s3_list_page *pg = &x->page;
	void *arr = pg->entries;
	int rc;

	/* S3 never lists an object without a key. */
	if (!x->entry.key || !*x->entry.key)
		return -EPROTO;
	rc = grow(&arr, pg->n_entries, &x->entries_alloc, sizeof(*pg->entries));
	pg->entries = arr;
	if (rc < 0)
		return rc;
	pg->entries[pg->n_entries++] = x->entry;
	memset(&x->entry, 0, sizeof(x->entry));
	return 0;
}

static int push_prefix(struct s3_xml *x)
{
	struct s3_list_page *pg = &x->page;
	void *arr = pg->prefixes;
	int rc;

	if (!x->prefix || !*x->prefix)
		return -EPROTO;
	rc = grow(&arr, pg->n_prefixes, &x->prefixes_alloc,
		  sizeof(*pg->prefixes));
	pg->prefixes = arr;
	if (rc < 0)
		return rc;
	pg->prefixes[pg->n_prefixes++] = x->prefix;
	x->prefix = NULL;
	return 0;
}

static int push_failure(struct s3_xml *x)
{
	void *arr = x->fails;
	int rc;

	if (!x->fail.key)
		return -EPROTO;
	rc = grow(&arr, x->n_fails, &x->fails_alloc, sizeof(*x->fails));
	x->fails = arr;
	if (rc < 0)
		return rc;
	x->fails[x->n_fails++] = x->fail;
	memset(&x->fail, 0, sizeof(x->fail));
	return 0;
}

static void XMLCALL on_start(void *ud, const XML_Char *name,
			     const XML_Char **atts)
{
	struct s3_xml *x = ud;
	enum tok t;

	(void)atts;
	if (x->err)
		return;
	/* A field we keep holds text only. */
	if (x->slot != SLOT_NONE || x->depth >= MAX_DEPTH) {
		fail(x, -EPROTO);
		return;
	}
	x->depth++;
	t = tok_of(name);
	if (x->depth <= PATH_DEPTH)
		x->path[x->depth] = t;
	if (x->depth == 1) {
		x->root_seen = true;
		if (t == TOK_ERROR)
			x->is_error = true;
		else if (!root_ok(x->kind, t))
			fail(x, -EPROTO);
		return;
	}
	x->slot = slot_for(x, t);
	buf_reset(&x->text);
}

static void XMLCALL on_end(void *ud, const XML_Char *name)
{
	struct s3_xml *x = ud;
	size_t d = x->depth;
	int rc = 0;

	(void)name;
	if (x->err)
		return;
	x->depth--;
	if (x->slot != SLOT_NONE) {
		rc = store_slot(x);
		x->slot = SLOT_NONE;
	} else if (d == 2 && !x->is_error) {
		if (x->kind == S3_XML_LIST && x->path[2] == TOK_CONTENTS)
			rc = push_entry(x);
		else if (x->kind == S3_XML_LIST &&
			 x->path[2] == TOK_COMMON_PREFIXES)
			rc = push_prefix(x);
		else if (x->kind == S3_XML_DELETE && x->path[2] == TOK_ERROR)
			rc = push_failure(x);
	}
	if (rc < 0)
		fail(x, rc);
}

static void XMLCALL on_text(void *ud, const XML_Char *s, int len)
{
	struct s3_xml *x = ud;
	int rc;

	if (x->err || x->slot == SLOT_NONE || len <= 0)
		return;
	rc = buf_add(&x->text, s, (size_t)len);
	if (rc < 0)
		fail(x, rc);
}

static void XMLCALL on_doctype(void *ud, const XML_Char *name,
			       const XML_Char *sysid, const XML_Char *pubid,
			       int has_internal_subset)
{
	(void)name;
	(void)sysid;
	(void)pubid;
	(void)has_internal_subset;
	fail(ud, -EPROTO);
}

static void XMLCALL on_entity(void *ud, const XML_Char *name, int is_param,
			      const XML_Char *value, int value_len,
			      const XML_Char *base, const XML_Char *sysid,
			      const XML_Char *pubid, const XML_Char *notation)
{
	(void)name;
	(void)is_param;
	(void)value;
	(void)value_len;
	(void)base;
	(void)sysid;
	(void)pubid;
	(void)notation;
	fail(ud, -EPROTO);
}

static int XMLCALL on_external_entity(XML_Parser p, const XML_Char *context,
				      const XML_Char *base,
				      const XML_Char *sysid,
				      const XML_Char *pubid)
{
	(void)p;
	(void)context;
	(void)base;
	(void)sysid;
	(void)pubid;
	return XML_STATUS_ERROR;
}

/* XML_Parse failed: keep our own error, else map expat's. */
static int parse_failed(struct s3_xml *x)
{
	if (!x->err)
		x->err = XML_GetErrorCode(x->p) == XML_ERROR_NO_MEMORY
				 ? -ENOMEM
				 : -EPROTO;
	x->state = ST_FAILED;
	return x->err;
}

int s3_xml_new(enum s3_xml_kind kind, size_t max_bytes, struct s3_xml **out)
{
	struct s3_xml *x = calloc(1, sizeof(*x));

	if (!x)
		return -ENOMEM;
	x->kind = kind;
	x->max_bytes = max_bytes;
	x->state = ST_FEEDING;
	buf_init(&x->text, FIELD_MAX);
	x->p = XML_ParserCreate(NULL);
	if (!x->p) {
		free(x);
		return -ENOMEM;
	}
	XML_SetUserData(x->p, x);
	XML_SetElementHandler(x->p, on_start, on_end);
	XML_SetCharacterDataHandler(x->p, on_text);
	XML_SetStartDoctypeDeclHandler(x->p, on_doctype);
	XML_SetEntityDeclHandler(x->p, on_entity);
	XML_SetExternalEntityRefHandler(x->p, on_external_entity);
	XML_SetParamEntityParsing(x->p, XML_PARAM_ENTITY_PARSING_NEVER);
	*out = x;
	return 0;
}

int s3_xml_feed(struct s3_xml *x, const void *data, size_t len)
{
	const char *p = data;

	if (x->state == ST_FAILED)
		return x->err;
	if (x->state != ST_FEEDING)
		return -EINVAL;
	if (len > x->max_bytes - x->fed) {
		x->err = -EMSGSIZE;
		x->state = ST_FAILED;
		return x->err;
	}
	x->fed += len;
	while (len) {
		int n = len > FEED_CHUNK ? FEED_CHUNK : (int)len;

		if (XML_Parse(x->p, p, n, XML_FALSE) != XML_STATUS_OK)
			return parse_failed(x);
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Replace the URL-encoded *@s by its decoding. */
static int decode_in_place(char **s)
{
	char *d = NULL;
	int rc;

	if (!*s)
		return 0;
	rc = uri_decode(*s, strlen(*s), true, &d, NULL);
	if (rc == -EINVAL)
		rc = -EPROTO;
	if (rc < 0)
		goto out;
	free(*s);
	*s = d;
	d = NULL;
out:
	free(d);
	return rc;
}

/*
 * Decode a listed key or prefix: 1 when it holds an escaped NUL ("%00"),
 * which no C string can hold.  S3 may store such a key; it is left out of
 * the page (a hidden name) rather than failing the whole listing.
 */
static int decode_listed(char **s)
{
	if (*s && strstr(*s, "%00"))
		return 1;
	return decode_in_place(s);
}

/* The listing is complete: decode it and choose the next token. */
static int finish_list(struct s3_xml *x)
{
	struct s3_list_page *pg = &x->page;
	size_t i, o;
	int rc;

	if (x->url_encoded) {
		for (i = o = 0; i < pg->n_entries; i++) {
			rc = decode_listed(&pg->entries[i].key);
			if (rc < 0)
				return rc;
			if (rc == 1) {
				entry_release(&pg->entries[i]);
			} else if (o++ < i) {
				pg->entries[o - 1] = pg->entries[i];
				memset(&pg->entries[i], 0,
				       sizeof(*pg->entries));
			}
		}
		pg->n_entries = o;
		for (i = o = 0; i < pg->n_prefixes; i++) {
			rc = decode_listed(&pg->prefixes[i]);
			if (rc < 0)
				return rc;
			if (rc == 1) {
				free(pg->prefixes[i]);
				pg->prefixes[i] = NULL;
			} else if (o++ < i) {
				pg->prefixes[o - 1] = pg->prefixes[i];
				pg->prefixes[i] = NULL;
			}
		}
		pg->n_prefixes = o;
		/* V1 encodes NextMarker, a key; V2's token is opaque. */
		rc = decode_in_place(&x->next_marker);
		if (rc < 0)
			return rc;
	}
	if (x->continuation) {
		pg->next_token = x->continuation;
		x->continuation = NULL;
	} else {
		pg->next_token = x->next_marker;
		x->next_marker = NULL;
	}
	return 0;
}

int s3_xml_finish(struct s3_xml *x)
{
	int rc;

	if (x->state == ST_FAILED)
		return x->err;
	if (x->state == ST_DONE)
		return 0;
	if (XML_Parse(x->p, "", 0, XML_TRUE) != XML_STATUS_OK)
		return parse_failed(x);
	/* expat rejects a body without a root; this is belt and braces. */
	rc = x->root_seen && x->depth == 0 ? 0 : -EPROTO;
	if (rc == 0 && x->kind == S3_XML_LIST && !x->is_error)
		rc = finish_list(x);
	if (rc < 0) {
		x->err = rc;
		x->state = ST_FAILED;
		return rc;
	}
	XML_ParserFree(x->p);
	x->p = NULL;
	buf_release(&x->text);
	x->state = ST_DONE;
	return 0;
}

void s3_xml_free(struct s3_xml *x)
{
	if (!x)
		return;
	if (x->p)
		XML_ParserFree(x->p);
	buf_release(&x->text);
	s3_list_page_release(&x->page);
	entry_release(&x->entry);
	free(x->prefix);
	free(x->continuation);
	free(x->next_marker);
	s3_error_info_release(&x->error);
	free(x->string);
	s3_delete_failures_free(x->fails, x->n_fails);
	failure_release(&x->fail);
	free(x);
}

bool s3_xml_is_error(const struct s3_xml *x)
{
	return x->state == ST_DONE && x->is_error;
}

/* Finish succeeded and the body was of kind @kind. */
static bool can_take(const struct s3_xml *x, enum s3_xml_kind kind)
{
	if (x->state != ST_DONE)
		return false;
	if (x->is_error)
		return kind == S3_XML_ERROR;
	return x->kind == kind;
}

int s3_xml_take_list(struct s3_xml *x, struct s3_list_page *out)
{
	if (!can_take(x, S3_XML_LIST))
		return -EINVAL;
	*out = x->page;
	memset(&x->page, 0, sizeof(x->page));
	x->entries_alloc = 0;
	x->prefixes_alloc = 0;
	return 0;
}

int s3_xml_take_error(struct s3_xml *x, struct s3_error_info *out)
{
	if (!can_take(x, S3_XML_ERROR))
		return -EINVAL;
	*out = x->error;
	memset(&x->error, 0, sizeof(x->error));
	return 0;
}

int s3_xml_take_string(struct s3_xml *x, char **out)
{
	if (!can_take(x, S3_XML_INITIATE_MPU) &&
	    !can_take(x, S3_XML_COMPLETE_MPU) && !can_take(x, S3_XML_COPY))
		return -EINVAL;
	*out = x->string;
	x->string = NULL;
	return 0;
}

int s3_xml_take_delete(struct s3_xml *x, struct s3_delete_failure **out,
		       size_t *n_out)
{
	if (!can_take(x, S3_XML_DELETE))
		return -EINVAL;
	*out = x->fails;
	*n_out = x->n_fails;
	x->fails = NULL;
	x->n_fails = 0;
	x->fails_alloc = 0;
	return 0;
}

int s3_xml_parse(enum s3_xml_kind kind, const void *body, size_t len,
		 size_t max_bytes, struct s3_xml **out)
{
	struct s3_xml *x = NULL;
	int rc;

	rc = s3_xml_new(kind, max_bytes, &x);
	if (rc < 0)
		goto out;
	rc = s3_xml_feed(x, body, len);
	if (rc == 0)
		rc = s3_xml_finish(x);
	if (rc == 0) {
		*out = x;
		x = NULL;
	}
out:
	s3_xml_free(x);
	return rc;
}

void s3_list_page_release(struct s3_list_page *p)
{
	size_t i;

	if (!p)
		return;
	for (i = 0; i < p->n_entries; i++)
		entry_release(&p->entries[i]);
	free(p->entries);
	for (i = 0; i < p->n_prefixes; i++)
		free(p->prefixes[i]);
	free(p->prefixes);
	free(p->next_token);
	memset(p, 0, sizeof(*p));
}

void s3_error_info_release(struct s3_error_info *e)
{
	if (!e)
		return;
	free(e->code);
	free(e->message);
	free(e->request_id);
	free(e->region);
	free(e->endpoint);
	memset(e, 0, sizeof(*e));
}

void s3_delete_failures_free(struct s3_delete_failure *f, size_t n)
{
	size_t i;

	if (!f)
		return;
	for (i = 0; i < n; i++)
		failure_release(&f[i]);
	free(f);
}
