/*
 * s3_int.h - what client.c shares with the other files of the S3 client
 * (multipart.c), and nothing else includes.
 */
#ifndef S3CACHEFS_S3_INT_H
#define S3CACHEFS_S3_INT_H

#include "s3cachefs/s3.h"

/* The client's effective configuration (defaults applied). */
const struct s3_conf *s3_conf_of(const struct s3 *s);

#endif
