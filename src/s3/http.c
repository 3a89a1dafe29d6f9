/*
 * http.c - libcurl behind a small request/response interface.
 *
 * Handles: a stack of idle easy handles (pool.lock).  A request pops one
 * (or makes one), resets it, sets every option it needs, performs, and pushes
 * it back, up to max_idle.  All handles share one CURLSH with the DNS cache,
 * TLS session cache and connection cache, each under its own mutex, so a
 * keep-alive connection opened by one thread serves the next request of any
 * thread.
 *
 * This file is the only one that includes curl.h: CURLcode becomes -errno
 * in curl_to_errno() and nowhere else.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>

#include "s3cachefs/http.h"
#include "s3cachefs/log.h"

#define SHARE_LOCKS 8

struct http {
	struct http_conf conf;
	char *ca_bundle; /* owned copy of conf.ca_bundle */
	CURLSH *share;
	pthread_mutex_t share_locks[SHARE_LOCKS];
	pthread_mutex_t lock; /* guards idle, n_idle */
	CURL **idle;
	unsigned n_idle;
	atomic_uint_fast64_t requests;
	atomic_uint_fast64_t connects;
	atomic_uint_fast64_t bytes_in;
	atomic_uint_fast64_t bytes_out;
};

/* Per-request state handed to curl's callbacks. */
struct xfer {
	const struct http_request *req;
	struct http *h;
	uint64_t sent; /* request body bytes given to curl */
	int cb_error;  /* first error a callback returned */
};

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static CURLcode global_rc;

static void global_init(void)
{
	global_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

const char *http_version(void)
{
	return curl_version();
}

static void share_lock(CURL *handle, curl_lock_data data,
		       curl_lock_access access, void *userp)
{
	struct http *h = userp;

	(void)handle;
	(void)access;
	pthread_mutex_lock(&h->share_locks[(unsigned)data % SHARE_LOCKS]);
}

static void share_unlock(CURL *handle, curl_lock_data data, void *userp)
{
	struct http *h = userp;

	(void)handle;
	pthread_mutex_unlock(&h->share_locks[(unsigned)data % SHARE_LOCKS]);
}

int http_open(const struct http_conf *conf, struct http **out)
{
	struct http *h;
	int i, rc = -ENOMEM;

	pthread_once(&global_once, global_init);
	if (global_rc != CURLE_OK) {
		log_error("cannot initialise libcurl: %s",
			  curl_easy_strerror(global_rc));
		return -EIO;
	}
	h = calloc(1, sizeof(*h));
	if (!h)
		return -ENOMEM;
	h->conf = *conf;
	if (!h->conf.max_idle)
		h->conf.max_idle = 16;
	for (i = 0; i < SHARE_LOCKS; i++)
		pthread_mutex_init(&h->share_locks[i], NULL);
	pthread_mutex_init(&h->lock, NULL);
	if (conf->ca_bundle) {
		h->ca_bundle = strdup(conf->ca_bundle);
		if (!h->ca_bundle)
			goto fail;
		h->conf.ca_bundle = h->ca_bundle;
	}
	h->idle = calloc(h->conf.max_idle, sizeof(*h->idle));
	if (!h->idle)
		goto fail;
	h->share = curl_share_init();
	if (!h->share)
		goto fail;
	curl_share_setopt(h->share, CURLSHOPT_LOCKFUNC, share_lock);
	curl_share_setopt(h->share, CURLSHOPT_UNLOCKFUNC, share_unlock);
	curl_share_setopt(h->share, CURLSHOPT_USERDATA, h);
	curl_share_setopt(h->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
	curl_share_setopt(h->share, CURLSHOPT_SHARE,
			  CURL_LOCK_DATA_SSL_SESSION);
	curl_share_setopt(h->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_CONNECT);
	*out = h;
	return 0;
fail:
	http_close(h);
	return rc;
}

void http_close(struct http *h)
{
	unsigned i;

	if (!h)
		return;
	for (i = 0; i < h->n_idle; i++)
		curl_easy_cleanup(h->idle[i]);
	if (h->share)
		curl_share_cleanup(h->share);
	for (i = 0; i < SHARE_LOCKS; i++)
		pthread_mutex_destroy(&h->share_locks[i]);
	pthread_mutex_destroy(&h->lock);
	free(h->idle);
	free(h->ca_bundle);
	free(h);
}

static CURL *handle_get(struct http *h)
{
	CURL *c = NULL;

	pthread_mutex_lock(&h->lock);
	if (h->n_idle)
		c = h->idle[--h->n_idle];
	pthread_mutex_unlock(&h->lock);
	if (c)
		curl_easy_reset(c);
	else
		c = curl_easy_init();
	return c;
}

static void handle_put(struct http *h, CURL *c)
{
	pthread_mutex_lock(&h->lock);
	if (h->n_idle < h->conf.max_idle) {
		h->idle[h->n_idle++] = c;
		c = NULL;
	}
	pthread_mutex_unlock(&h->lock);
	if (c)
		curl_easy_cleanup(c);
}

static size_t on_write(char *data, size_t size, size_t n, void *userp)
{
	struct xfer *x = userp;
	size_t len = size * n;
	int rc;

	atomic_fetch_add(&x->h->bytes_in, len);
	if (!x->req->on_body)
		return len;
	rc = x->req->on_body(x->req->ctx, data, len);
	if (rc < 0) {
		x->cb_error = rc;
		return 0; /* anything but len aborts the transfer */
	}
	return len;
}

static size_t on_read(char *data, size_t size, size_t n, void *userp)
{
	struct xfer *x = userp;
	const struct http_request *req = x->req;
	size_t want = size * n;
	uint64_t left = req->body_len - x->sent;
	ssize_t got;

	if (want > left)
		want = (size_t)left;
	if (want == 0)
		return 0;
	got = req->source(req->source_ctx, data, want);
	if (got < 0) {
		x->cb_error = (int)got;
		return CURL_READFUNC_ABORT;
	}
	if (got == 0) {
		/* the source ended before body_len: a short body */
		x->cb_error = -EIO;
		return CURL_READFUNC_ABORT;
	}
	want = (size_t)got;
	x->sent += want;
	atomic_fetch_add(&x->h->bytes_out, want);
	return want;
}

static size_t on_header(char *line, size_t size, size_t n, void *userp)
{
	struct xfer *x = userp;
	size_t len = size * n, name_len, v, end;
	int rc = 0;

	if (!x->req->on_header)
		return len;
	end = len;
	while (end > 0 && (line[end - 1] == '\r' || line[end - 1] == '\n'))
		end--;
	if (end >= 5 && strncmp(line, "HTTP/", 5) == 0) {
		/* status line: "HTTP/1.1 200 OK" */
		const char *sp = memchr(line, ' ', end);

		if (sp && (size_t)(sp - line) + 4 <= end)
			rc = x->req->on_header(x->req->ctx, ":status", 7,
					       sp + 1, 3);
	} else {
		const char *colon = memchr(line, ':', end);

		if (!colon)
			return len;
		name_len = (size_t)(colon - line);
		v = name_len + 1;
		while (v < end && (line[v] == ' ' || line[v] == '\t'))
			v++;
		rc = x->req->on_header(x->req->ctx, line, name_len, line + v,
				       end - v);
	}
	if (rc < 0) {
		x->cb_error = rc;
		return 0;
	}
	return len;
}

static int curl_to_errno(CURLcode c)
{
	switch (c) {
	case CURLE_OK:
		return 0;
	case CURLE_COULDNT_CONNECT:
		return -ECONNREFUSED;
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_RESOLVE_PROXY:
		return -EHOSTUNREACH;
	case CURLE_OPERATION_TIMEDOUT:
		return -ETIMEDOUT;
	case CURLE_PARTIAL_FILE:
		return -EPIPE;
	case CURLE_GOT_NOTHING:
	/* a kept-alive connection died under a request with a body: curl
	 * would resend it on a fresh one but cannot rewind our body source;
	 * the retry of the whole request re-reads it */
	case CURLE_SEND_FAIL_REWIND:
	case CURLE_SEND_ERROR:
	case CURLE_RECV_ERROR:
	case CURLE_HTTP2:
	case CURLE_HTTP2_STREAM:
		return -ECONNRESET;
	case CURLE_PEER_FAILED_VERIFICATION:
	case CURLE_SSL_CACERT_BADFILE:
	case CURLE_SSL_ISSUER_ERROR:
		return -EACCES;
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_WEIRD_SERVER_REPLY:
	case CURLE_UNSUPPORTED_PROTOCOL:
	case CURLE_BAD_CONTENT_ENCODING:
		return -EPROTO;
	case CURLE_URL_MALFORMAT:
		return -EINVAL;
	case CURLE_OUT_OF_MEMORY:
		return -ENOMEM;
	default:
		return -EIO;
	}
}

static int set_method(CURL *c, const struct http_request *req)
{
	const char *m = req->method;

	if (strcmp(m, "GET") == 0) {
		curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
	} else if (strcmp(m, "HEAD") == 0) {
		curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
	} else if (strcmp(m, "PUT") == 0 || strcmp(m, "POST") == 0) {
		/* one code path for bodies: an upload with the method named */
		curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
		curl_easy_setopt(c, CURLOPT_INFILESIZE_LARGE,
				 (curl_off_t)req->body_len);
		curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, m);
	} else if (strcmp(m, "DELETE") == 0) {
		curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, m);
	} else {
		return -EINVAL;
	}
	return 0;
}

int http_perform(struct http *h, const struct http_request *req, long *status)
{
	struct curl_slist *hdrs = NULL, *tmp;
	struct xfer x = { .req = req, .h = h };
	long io_s, code = 0, connects = 0;
	CURLcode cc;
	CURL *c;
	size_t i;
	int rc;

	c = handle_get(h);
	if (!c)
		return -ENOMEM;
	for (i = 0; i < req->n_headers; i++) {
		tmp = curl_slist_append(hdrs, req->headers[i]);
		if (!tmp) {
			rc = -ENOMEM;
			goto out;
		}
		hdrs = tmp;
	}
	/* no 100-continue round trip; no Accept header nobody asked for */
	for (i = 0; i < 2; i++) {
		tmp = curl_slist_append(hdrs, i == 0 ? "Expect:" : "Accept:");
		if (!tmp) {
			rc = -ENOMEM;
			goto out;
		}
		hdrs = tmp;
	}
	rc = set_method(c, req);
	if (rc < 0)
		goto out;
	io_s = (long)((h->conf.io_timeout_ms + 999) / 1000);
	curl_easy_setopt(c, CURLOPT_URL, req->url);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(c, CURLOPT_SHARE, h->share);
	/* the shared connection cache keeps this many idle connections;
	 * curl's default of 5 closes the extra ones of parallel readers */
	curl_easy_setopt(c, CURLOPT_MAXCONNECTS, (long)h->conf.max_idle);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS,
			 (long)h->conf.connect_timeout_ms);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)req->timeout_ms);
	curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
	curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, io_s > 0 ? io_s : 1L);
	curl_easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(c, CURLOPT_TCP_NODELAY, 1L);
	curl_easy_setopt(c, CURLOPT_BUFFERSIZE, 256L * 1024);
	curl_easy_setopt(c, CURLOPT_UPLOAD_BUFFERSIZE, 256L * 1024);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_write);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &x);
	curl_easy_setopt(c, CURLOPT_READFUNCTION, on_read);
	curl_easy_setopt(c, CURLOPT_READDATA, &x);
	curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(c, CURLOPT_HEADERDATA, &x);
	if (h->conf.ca_bundle)
		curl_easy_setopt(c, CURLOPT_CAINFO, h->conf.ca_bundle);
	if (h->conf.insecure) {
		curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 0L);
		curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 0L);
	}
	atomic_fetch_add(&h->requests, 1);
	cc = curl_easy_perform(c);
	if (curl_easy_getinfo(c, CURLINFO_NUM_CONNECTS, &connects) == CURLE_OK)
		atomic_fetch_add(&h->connects, (uint64_t)connects);
	if (x.cb_error) {
		rc = x.cb_error;
		goto out;
	}
	rc = curl_to_errno(cc);
	if (rc < 0) {
		log_debug("http: %s failed: %s (curl %d)", req->method,
			  curl_easy_strerror(cc), (int)cc);
		goto out;
	}
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
	*status = code;
out:
	curl_slist_free_all(hdrs);
	handle_put(h, c);
	return rc;
}

void http_get_stats(struct http *h, struct http_stats *out)
{
	out->requests = atomic_load(&h->requests);
	out->connects = atomic_load(&h->connects);
	out->bytes_in = atomic_load(&h->bytes_in);
	out->bytes_out = atomic_load(&h->bytes_out);
}
