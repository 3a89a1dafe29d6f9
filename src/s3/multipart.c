/*
 * multipart.c - upload a file as one PUT or as a multipart upload with
 * several parts in flight.
 *
 * Workers take the next part number from a shared counter (up.lock), read
 * their slice of the file with pread() (so they share the descriptor without
 * sharing an offset), and store the part's ETag in its slot.  The first
 * failure stops the others from taking new parts; the upload is then
 * aborted so no orphaned parts keep costing storage.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "s3cachefs/log.h"
#include "s3cachefs/s3.h"
#include "s3_int.h"

#define MAX_PARTS 10000u
#define MAX_WORKERS 64u

struct upload {
	struct s3 *s;
	const char *key;
	const char *upload_id;
	int fd;
	uint64_t base;	   /* file offset of the first part */
	unsigned first_no; /* its part number */
	uint64_t len;
	uint64_t part_size;
	unsigned n_parts;
	char **etags; /* one slot per part, each written by one worker */
	pthread_mutex_t lock; /* guards next and rc */
	unsigned next;	      /* next part to take, 0-based */
	int rc;		      /* first failure, or 0 */
};

static void *upload_worker(void *arg)
{
	struct upload *up = arg;

	for (;;) {
		struct s3_body body = { .fd = up->fd };
		unsigned part;
		int rc;

		pthread_mutex_lock(&up->lock);
		if (up->rc < 0 || up->next >= up->n_parts) {
			pthread_mutex_unlock(&up->lock);
			break;
		}
		part = up->next++;
		pthread_mutex_unlock(&up->lock);

		body.off = (uint64_t)part * up->part_size;
		body.len = up->len - body.off < up->part_size
				   ? up->len - body.off
				   : up->part_size;
		body.off += up->base;
		rc = s3_mpu_put_part(up->s, up->key, up->upload_id,
				     up->first_no + part, &body,
				     &up->etags[part]);
		if (rc < 0) {
			pthread_mutex_lock(&up->lock);
			if (up->rc == 0)
				up->rc = rc;
			pthread_mutex_unlock(&up->lock);
			break;
		}
	}
	return NULL;
}

/* The part size: the configured one, grown to keep within 10,000 parts. */
static uint64_t choose_part_size(uint64_t len, uint64_t want)
{
	uint64_t min = (len + MAX_PARTS - 1) / MAX_PARTS;

	if (want < min)
		want = (min + (1u << 20) - 1) & ~(uint64_t)((1u << 20) - 1);
	return want;
}

/* Run up->n_parts parts on conf->parallel workers; the first -errno. */
static int run_workers(const struct s3_conf *conf, struct upload *up)
{
	pthread_t threads[MAX_WORKERS];
	unsigned i, n_threads, started = 0;

	n_threads = conf->parallel < up->n_parts ? conf->parallel : up->n_parts;
	if (n_threads > MAX_WORKERS)
		n_threads = MAX_WORKERS;
	for (i = 0; i < n_threads; i++) {
		if (pthread_create(&threads[i], NULL, upload_worker, up) != 0)
			break;
		started++;
	}
	if (started == 0)
		upload_worker(up); /* no thread to be had: do it here */
	for (i = 0; i < started; i++)
		pthread_join(threads[i], NULL);
	return up->rc;
}

int s3_mpu_put_fd_parts(struct s3 *s, const char *key, const char *upload_id,
			int fd, uint64_t off, uint64_t len, uint64_t part_size,
			unsigned first_no, char **etags)
{
	struct upload up = { .s = s,
			     .key = key,
			     .upload_id = upload_id,
			     .fd = fd,
			     .base = off,
			     .first_no = first_no,
			     .len = len,
			     .part_size = part_size,
			     .etags = etags };
	int rc;

	if (len == 0 || part_size == 0)
		return 0;
	up.n_parts = (unsigned)((len + part_size - 1) / part_size);
	pthread_mutex_init(&up.lock, NULL);
	rc = run_workers(s3_conf_of(s), &up);
	pthread_mutex_destroy(&up.lock);
	return rc;
}

static int put_multipart(struct s3 *s, const char *key, int fd, uint64_t len,
			 const struct s3_put_opts *opts, char **etag_out)
{
	const struct s3_conf *conf = s3_conf_of(s);
	struct upload up = {
		.s = s, .key = key, .fd = fd, .first_no = 1, .len = len
	};
	char *upload_id = NULL;
	unsigned i;
	int rc;

	up.part_size = choose_part_size(len, conf->part_size);
	up.n_parts = (unsigned)((len + up.part_size - 1) / up.part_size);
	if (up.part_size > (5ull << 30)) {
		log_error("put '%s': %" PRIu64 " bytes is more than S3 allows",
			  key, len);
		return -EFBIG;
	}
	up.etags = calloc(up.n_parts, sizeof(*up.etags));
	if (!up.etags)
		return -ENOMEM;
	pthread_mutex_init(&up.lock, NULL);
	rc = s3_mpu_create(s, key, opts, &upload_id);
	if (rc < 0)
		goto out;
	up.upload_id = upload_id;
	rc = run_workers(conf, &up);
	if (rc == 0)
		rc = s3_mpu_complete(s, key, upload_id, up.etags, up.n_parts,
				     etag_out);
	if (rc < 0 && s3_mpu_abort(s, key, upload_id) == 0)
		log_info("put '%s': multipart upload aborted", key);
out:
	for (i = 0; i < up.n_parts; i++)
		free(up.etags[i]);
	free(up.etags);
	free(upload_id);
	pthread_mutex_destroy(&up.lock);
	return rc;
}

int s3_put_file(struct s3 *s, const char *key, int fd, uint64_t len,
		const struct s3_put_opts *opts, char **etag_out)
{
	const struct s3_conf *conf = s3_conf_of(s);
	struct s3_body body = { .fd = fd, .off = 0, .len = len };

	if (len <= conf->multipart_threshold)
		return s3_put(s, key, &body, opts, etag_out);
	return put_multipart(s, key, fd, len, opts, etag_out);
}
