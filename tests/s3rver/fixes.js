'use strict';
// Fixes for s3rver 3.7.1 (ours), preloaded with `node -r`, so that the test
// server answers as AWS S3 does wherever our tests depend on it:
//
//   S3RVER_REGION=us-east-1 S3RVER_REQUEST_LOG=/tmp/requests.log \
//     node --openssl-legacy-provider -r /abs/path/fixes.js \
//     node_modules/s3rver/bin/s3rver.js -d DATA -a 127.0.0.1 -p PORT --silent
//
// Sections 1-5 (listing, long keys) come first; sections 6-14 further down
// add: 6 request log and request ids, 7 SigV4 verification and the region,
// 8 conditional GET/HEAD and ranges, 9 encoding-type=url, 10 copy-source
// decoding, 11 atomic verified writes and multipart as on S3, 12 the
// DeleteObjects checksum, 13 extra key pairs, 14 UploadPartCopy. Each says
// what and why.
// tests/integration/test_s3rver_fixes.py tests every one of them.
//
// Unpatched s3rver 3.7.1 on Node 20 has three listing bugs that would make a
// correct S3 filesystem look broken:
//  1. a CommonPrefix is reported only when an object sits directly inside it
//     (so 'x/y/z' alone makes 'x/' invisible in a delimiter listing of '');
//  2. keys come back in readdir order, not sorted, so paging with
//     marker / start-after / continuation-token loses or repeats keys;
//  3. a page that ends in CommonPrefixes (or has no objects) crashes the
//     controller, and ListObjectsV2 continuation tokens use DES, which Node 20
//     only has with --openssl-legacy-provider (without it: HTTP 500).
//  4. a key component longer than ~233 bytes cannot be stored (the file name
//     <component>._S3rver_metadata.json exceeds NAME_MAX): PUT fails, HEAD
//     answers 500, and an unhandled stream error can kill the server.
//  5. keys longer than S3's 1024-byte limit are accepted, and very long ones
//     exceed PATH_MAX on disk (500s and retries): they now get KeyTooLongError
//     (400) on writes and 404 on reads, as on S3.
// This file replaces FilesystemStore.listObjects with a full, sorted walk,
// fixes IsTruncated / NextMarker / NextContinuationToken / KeyCount, and
// stores long key components as a chain of directories named
// "<up to 200 bytes>\u0001" (decoded again when listing).

const { AsyncLocalStorage } = require('async_hooks');
const crypto = require('crypto');
const fs = require('fs');
const path = require('path');

const FilesystemStore = require('s3rver/lib/stores/filesystem');
const S3Object = require('s3rver/lib/models/object');
const bucketCtrl = require('s3rver/lib/controllers/bucket');

const S3Error = require('s3rver/lib/models/error');

const SUFFIX = '._S3rver_object';
const MAX_KEY = 1024;
const tooLong = key => typeof key === 'string' && Buffer.byteLength(key) > MAX_KEY;
const keyTooLong = key =>
  new S3Error('KeyTooLongError', 'Your key is too long', {
    Size: Buffer.byteLength(key),
    MaxSizeAllowed: MAX_KEY,
  });
const enoent = () => Object.assign(new Error('no such key'), { code: 'ENOENT' });
const P = FilesystemStore.prototype;
const orig = {
  getMetadata: P.getMetadata,
  existsObject: P.existsObject,
  putObject: P.putObject,
  copyObject: P.copyObject,
  initiateUpload: P.initiateUpload,
};
P.getMetadata = async function (bucket, key) {
  if (tooLong(key)) throw enoent();
  return orig.getMetadata.call(this, bucket, key);
};
P.existsObject = async function (bucket, key) {
  if (tooLong(key)) return false;
  return orig.existsObject.call(this, bucket, key);
};
P.putObject = async function (object) {
  if (tooLong(object.key)) throw keyTooLong(object.key);
  return orig.putObject.call(this, object);
};
P.copyObject = async function (srcBucket, srcKey, destBucket, destKey, ...rest) {
  if (tooLong(destKey)) throw keyTooLong(destKey);
  if (tooLong(srcKey)) throw enoent();
  return orig.copyObject.call(this, srcBucket, srcKey, destBucket, destKey, ...rest);
};
P.initiateUpload = async function (bucket, key, ...rest) {
  if (tooLong(key)) throw keyTooLong(key);
  return orig.initiateUpload.call(this, bucket, key, ...rest);
};

// One version of a key at a time.
// Why: an object is three files (bytes, metadata.json, object.md5) that
// stock s3rver reads and writes one after the other, and CopyObject copies
// the bytes over the destination in place. A GET racing a PUT, copy or
// DELETE of its key could pass If-Match on one version's ETag and serve
// another version's bytes, or a half-copied file (seen by
// test_mount_stress). On S3 a GET sees one version, whole. So the writers
// put the bytes in place by a rename and write the metadata under a lock
// per key, and a GET checks its conditions and opens the bytes under the
// same lock: the file it opened stays that version while it streams.
const keyLocks = new Map();
async function withKeyLock(bucket, key, fn) {
  const id = `${bucket}\0${key}`;
  const prev = keyLocks.get(id) || Promise.resolve();
  let release;
  const mine = new Promise(resolve => (release = resolve));
  const tail = prev.then(() => mine);
  keyLocks.set(id, tail);
  await prev;
  try {
    return await fn();
  } finally {
    release();
    if (keyLocks.get(id) === tail) keyLocks.delete(id);
  }
}
const readOrNull = file =>
  fs.promises.readFile(file).catch(err => {
    if (err.code === 'ENOENT') return null;
    throw err;
  });
const origCopyObjectChecked = P.copyObject;
P.copyObject = async function copyObject(srcBucket, srcKey, destBucket, destKey, replacementMetadata) {
  const src = this.getResourcePath(srcBucket, srcKey, 'object');
  const dest = this.getResourcePath(destBucket, destKey, 'object');
  if (tooLong(destKey) || tooLong(srcKey) || src === dest) {
    return withKeyLock(destBucket, destKey, () =>
      origCopyObjectChecked.call(this, srcBucket, srcKey, destBucket, destKey, replacementMetadata),
    );
  }
  await fs.promises.mkdir(path.dirname(dest), { recursive: true });
  const tmp = `${dest}.${crypto.randomBytes(6).toString('hex')}.tmp`;
  try {
    // the source's bytes and metadata of one version
    const [meta, md5] = await withKeyLock(srcBucket, srcKey, async () => {
      await fs.promises.copyFile(src, tmp);
      return Promise.all([
        readOrNull(this.getResourcePath(srcBucket, srcKey, 'metadata.json')),
        readOrNull(`${src}.md5`),
      ]);
    });
    await withKeyLock(destBucket, destKey, async () => {
      await fs.promises.rename(tmp, dest);
      const destMd5 = `${dest}.md5`;
      if (md5 !== null) await fs.promises.writeFile(destMd5, md5);
      else await fs.promises.unlink(destMd5).catch(() => {}); // recomputed when read
      if (replacementMetadata) await this.putMetadata(destBucket, destKey, replacementMetadata);
      else if (meta !== null) await fs.promises.writeFile(this.getResourcePath(destBucket, destKey, 'metadata.json'), meta);
    });
  } catch (err) {
    await fs.promises.unlink(tmp).catch(() => {});
    throw err;
  }
  return this.getMetadata(destBucket, destKey);
};
const origDeleteObject = P.deleteObject;
P.deleteObject = async function deleteObject(bucket, key) {
  return withKeyLock(bucket, key, () => origDeleteObject.call(this, bucket, key));
};
const als = new AsyncLocalStorage();

function* walkObjects(dir) {
  let names;
  try {
    names = fs.readdirSync(dir);
  } catch (err) {
    // ENAMETOOLONG: a prefix longer than any key this server can hold
    if (err.code === 'ENOENT' || err.code === 'ENOTDIR' || err.code === 'ENAMETOOLONG') return;
    throw err;
  }
  for (const name of names) {
    const p = path.join(dir, name);
    let st;
    try {
      st = fs.statSync(p);
    } catch (err) {
      if (err.code === 'ENOENT') continue; // deleted meanwhile
      throw err;
    }
    if (st.isDirectory()) yield* walkObjects(p);
    else if (name.endsWith(SUFFIX)) yield p;
  }
}

// ---- long key components
const MAXC = 200;
function chunkComponent(c) {
  if (Buffer.byteLength(c) <= MAXC) return [c];
  const out = [];
  let cur = '';
  for (const ch of c) {
    if (Buffer.byteLength(cur + ch) > MAXC) {
      out.push(cur);
      cur = '';
    }
    cur += ch;
  }
  out.push(cur);
  return out;
}
function encodeParts(key) {
  const res = [];
  for (const p of key.split('/')) {
    const ch = chunkComponent(p);
    ch.forEach((c, j) => res.push(j < ch.length - 1 ? c + '\u0001' : c));
  }
  return res;
}
const decodeRel = rel => rel.split('\u0001/').join('');

FilesystemStore.prototype.getResourcePath = function getResourcePath(bucket, key = '', resource) {
  const parts = encodeParts(FilesystemStore.encodeKeyPath(key));
  const last = parts.pop();
  return path.join(this.rootDirectory, bucket, ...parts, `${last}._S3rver_${resource}`);
};

FilesystemStore.prototype.deleteObject = async function deleteObject(bucket, key) {
  if (tooLong(key)) return;
  await Promise.all(
    ['object', 'object.md5', 'metadata.json'].map(r =>
      fs.promises.unlink(this.getResourcePath(bucket, key, r)).catch(err => {
        if (err.code !== 'ENOENT') throw err;
      }),
    ),
  );
  // clean up empty directories (the last part is embedded in the file name)
  const bucketPath = this.getBucketPath(bucket);
  const parts = encodeParts(FilesystemStore.encodeKeyPath(key));
  parts.pop();
  while (parts.length) {
    const dir = path.join(bucketPath, ...parts);
    try {
      if (fs.readdirSync(dir).length) break;
      fs.rmdirSync(dir);
    } catch (err) {
      if (err.code !== 'ENOENT' && err.code !== 'ENOTEMPTY') throw err;
      if (err.code === 'ENOTEMPTY') break;
    }
    parts.pop();
  }
};

const cmp = (a, b) => Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));

FilesystemStore.prototype.listObjects = async function listObjects(bucket, options) {
  const { delimiter = '', startAfter = '', prefix = '', maxKeys = Infinity } = options;
  const bucketPath = this.getBucketPath(bucket);
  if (tooLong(prefix)) {
    const empty = { objects: [], commonPrefixes: [], isTruncated: false, nextMarker: undefined };
    const st = als.getStore();
    if (st) st.result = empty;
    return empty;
  }
  const slash = prefix.lastIndexOf('/');
  const startDir = slash > 0 ? path.join(bucketPath, ...encodeParts(prefix.slice(0, slash))) : bucketPath;
  const keys = [];
  for (const p of walkObjects(startDir)) {
    const key = FilesystemStore.decodeKeyPath(
      decodeRel(path.relative(bucketPath, p).split(path.sep).join('/').slice(0, -SUFFIX.length)),
    );
    if (key.startsWith(prefix)) keys.push(key);
  }
  keys.sort(cmp);

  const objKeys = [];
  const commonPrefixes = [];
  let count = 0;
  let isTruncated = false;
  let nextMarker;
  let lastCp = null;
  for (const key of keys) {
    if (startAfter && cmp(key, startAfter) <= 0) continue;
    if (delimiter) {
      const idx = key.indexOf(delimiter, prefix.length);
      if (idx !== -1) {
        const cp = key.slice(0, idx + delimiter.length);
        if (cp === lastCp) continue;
        if (startAfter && cmp(cp, startAfter) <= 0) continue;
        if (count >= maxKeys) {
          isTruncated = true;
          break;
        }
        commonPrefixes.push(cp);
        lastCp = cp;
        nextMarker = cp;
        count++;
        continue;
      }
    }
    if (count >= maxKeys) {
      isTruncated = true;
      break;
    }
    objKeys.push(key);
    nextMarker = key;
    count++;
  }

  const metadata = await Promise.all(
    objKeys.map(key =>
      this.getMetadata(bucket, key).catch(err => {
        if (err.code === 'ENOENT') return undefined;
        throw err;
      }),
    ),
  );
  const objects = [];
  objKeys.forEach((key, i) => {
    if (metadata[i] !== undefined) objects.push(new S3Object(bucket, key, null, metadata[i]));
  });
  const result = { objects, commonPrefixes, isTruncated, nextMarker };
  const store = als.getStore();
  if (store) {
    store.result = result;
    // the stock controller dereferences the last object when truncated
    return { ...result, isTruncated: false };
  }
  return result;
};

function continuationToken(bucket, keyName) {
  // same format as s3rver's own (it deciphers these)
  const key = Buffer.alloc(8, 'S3RVER', 'utf8');
  const iv = crypto.randomBytes(8);
  iv[0] = (iv[0] & 0b00000011) | 0b11010100;
  const cipher = crypto.createCipheriv('des', key, iv);
  return Buffer.concat([iv, cipher.update(`us-east-1/${bucket}/${keyName}`, 'utf8'), cipher.final()]).toString(
    'base64',
  );
}

const origGetBucket = bucketCtrl.getBucket;
bucketCtrl.getBucket = function getBucket(ctx) {
  const store = {};
  return als.run(store, async () => {
    await origGetBucket(ctx);
    const body = ctx.body && ctx.body.ListBucketResult;
    const result = store.result;
    if (!body || !result) return;
    body.IsTruncated = result.isTruncated;
    if (ctx.query['list-type'] === '2') {
      body.KeyCount = result.objects.length + result.commonPrefixes.length;
      body.NextContinuationToken = result.isTruncated
        ? continuationToken(ctx.params.bucket, result.nextMarker)
        : undefined;
    } else {
      body.NextMarker = result.isTruncated && ctx.query['delimiter'] ? result.nextMarker : undefined;
    }
  });
};

// ===========================================================================
// AWS behaviours added for the integration tests
// ---------------------------------------------------------------------------
// Each section below makes s3rver answer as AWS S3 does where a test of our
// client depends on it; the client is never bent to the server. Environment:
//   S3RVER_REGION       region the server is in (default us-east-1)
//   S3RVER_REQUEST_LOG  file that gets one "METHOD PATH?QUERY" line a request
// ===========================================================================

const { Readable, Transform, pipeline } = require('stream');
const AWSAccount = require('s3rver/lib/models/account');
const objectCtrl = require('s3rver/lib/controllers/object');
const router = require('s3rver/lib/routes');

const REGION = process.env.S3RVER_REGION || 'us-east-1';
const REQUEST_LOG = process.env.S3RVER_REQUEST_LOG || '';
const MiB = 1024 * 1024;

const s3err = (code, message, detail, status) => {
  const err = new S3Error(code, message, detail);
  if (status) {
    err.status = status;
    err.expose = status < 500;
  }
  return err;
};
const sha256hex = data => crypto.createHash('sha256').update(data).digest('hex');
const hmac = (key, data) => crypto.createHmac('sha256', key).update(data).digest();
const hex2 = b => '%' + b.toString(16).toUpperCase().padStart(2, '0');

// Percent-escapes to bytes, leaving anything that is not a valid escape as
// its UTF-8 bytes (so canonicalization never throws on odd input).
function unescapeToBytes(s, plusIsSpace) {
  const out = [];
  for (let i = 0; i < s.length; ) {
    if (s[i] === '%' && /^[0-9A-Fa-f]{2}$/.test(s.slice(i + 1, i + 3))) {
      out.push(parseInt(s.slice(i + 1, i + 3), 16));
      i += 3;
    } else if (plusIsSpace && s[i] === '+') {
      out.push(0x20);
      i++;
    } else {
      const cp = s.codePointAt(i);
      const ch = String.fromCodePoint(cp);
      out.push(...Buffer.from(ch, 'utf8'));
      i += ch.length;
    }
  }
  return Buffer.from(out);
}
// AWS UriEncode(): every byte but the unreserved A-Za-z0-9-._~ escaped.
function awsUriEncode(bytes) {
  let out = '';
  for (const b of bytes) {
    const c = String.fromCharCode(b);
    out += /[A-Za-z0-9\-._~]/.test(c) ? c : hex2(b);
  }
  return out;
}

// ---- 6. request log and request ids --------------------------------------
// Why: tests count the requests the client sent (e.g. GETs after a cache
// hit), and the client logs the x-amz-request-id of each answer, which stock
// s3rver never sends. S3 sends x-amz-request-id / x-amz-id-2 on every answer
// and <RequestId> in every error body.
//
// These and the checks of sections 7 and 12 must run before s3rver's own
// middleware, so they are composed in front of the request logger, the first
// middleware s3rver installs (its module is replaced before s3rver loads it).
const loggerPath = require.resolve('s3rver/lib/middleware/logger');
const stockLogger = require(loggerPath);
const frontMiddleware = [];
require.cache[loggerPath].exports = function logger(app, silent) {
  const stock = stockLogger(app, silent);
  return async function front(ctx, next) {
    let i = 0;
    const step = () => (i < frontMiddleware.length ? frontMiddleware[i++](ctx, step) : stock(ctx, next));
    return step();
  };
};

frontMiddleware.push(async function requestLog(ctx, next) {
  if (REQUEST_LOG) fs.appendFileSync(REQUEST_LOG, `${ctx.method} ${ctx.req.url}\n`);
  return next();
});

frontMiddleware.push(async function requestId(ctx, next) {
  const id = crypto.randomBytes(8).toString('hex').toUpperCase();
  ctx.set('x-amz-request-id', id);
  ctx.set('x-amz-id-2', crypto.randomBytes(24).toString('base64'));
  try {
    await next();
  } catch (err) {
    const e = err instanceof S3Error ? err : S3Error.fromError(err);
    e.detail = { ...e.detail, RequestId: id };
    throw e;
  }
});

// ---- 7. SigV4 verification and the server's region -------------------------
// Why: stock s3rver accepts any SigV4 signature ("unimplemented"), so a wrong
// secret key, a wrong region or a client that signs something other than what
// it sends would all pass. S3 recomputes the signature (canonical URI and
// query re-encoded with UriEncode from the decoded request) and answers:
//   wrong region in the credential scope: 400 AuthorizationHeaderMalformed,
//     "the region 'X' is wrong; expecting 'Y'" and <Region>Y</Region>
//     (presigned URLs: AuthorizationQueryParametersError);
//   signature mismatch: 403 SignatureDoesNotMatch with the string to sign
//     and canonical request it computed.
// Unknown access keys, a missing x-amz-content-sha256 and clock skew are
// still refused by s3rver's own authentication middleware, after this.
// HEAD answers carry no body, so region errors also carry the
// x-amz-bucket-region header, as on S3.

function canonicalQuery(rawQuery, skip) {
  if (!rawQuery) return '';
  return rawQuery
    .split('&')
    .filter(p => p.length)
    .map(p => {
      const eq = p.indexOf('=');
      const name = awsUriEncode(unescapeToBytes(eq < 0 ? p : p.slice(0, eq), true));
      const value = awsUriEncode(unescapeToBytes(eq < 0 ? '' : p.slice(eq + 1), true));
      return [name, value];
    })
    .filter(([name]) => name !== skip)
    .sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0))
    .map(([n, v]) => `${n}=${v}`)
    .join('&');
}

function canonicalRequest(req, signedHeaders, payloadHash, skipQuery) {
  const q = req.url.indexOf('?');
  const rawPath = q < 0 ? req.url : req.url.slice(0, q);
  const rawQuery = q < 0 ? '' : req.url.slice(q + 1);
  const uri = rawPath
    .split('/')
    .map(seg => awsUriEncode(unescapeToBytes(seg, false)))
    .join('/') || '/';
  const values = new Map();
  for (let i = 0; i < req.rawHeaders.length; i += 2) {
    const name = req.rawHeaders[i].toLowerCase();
    if (!values.has(name)) values.set(name, []);
    values.get(name).push(req.rawHeaders[i + 1].trim().replace(/\s+/g, ' '));
  }
  const headers = signedHeaders
    .split(';')
    .map(h => `${h}:${(values.get(h) || []).join(',')}\n`)
    .join('');
  return [req.method, uri, canonicalQuery(rawQuery, skipQuery), headers, signedHeaders, payloadHash].join('\n');
}

const bucketOfPath = url => {
  const m = /^\/([^/?]+)/.exec(url);
  if (!m) return '';
  try {
    return decodeURIComponent(m[1]);
  } catch (err) {
    return '';
  }
};

async function wrongRegion(ctx, region, code, message) {
  const bucket = bucketOfPath(ctx.req.url);
  if (bucket && (await ctx.app.store.getBucket(bucket))) ctx.set('x-amz-bucket-region', REGION);
  return s3err(code, message, { Region: REGION });
}

function checkSignature(ctx, accessKeyId, date, region, service, signedHeaders, amzDate, payloadHash, provided, skip) {
  const account = AWSAccount.registry.get(accessKeyId);
  if (!account) return; // s3rver answers InvalidAccessKeyId
  const secret = account.accessKeys.get(accessKeyId);
  const scope = `${date}/${region}/${service}/aws4_request`;
  const creq = canonicalRequest(ctx.req, signedHeaders, payloadHash, skip);
  const stringToSign = ['AWS4-HMAC-SHA256', amzDate, scope, sha256hex(creq)].join('\n');
  let key = hmac(`AWS4${secret}`, date);
  key = hmac(hmac(hmac(key, region), service), 'aws4_request');
  const expected = hmac(key, stringToSign).toString('hex');
  if (expected !== provided) {
    throw s3err(
      'SignatureDoesNotMatch',
      'The request signature we calculated does not match the signature you provided. ' +
        'Check your key and signing method.',
      { AWSAccessKeyId: accessKeyId, StringToSign: stringToSign, SignatureProvided: provided, CanonicalRequest: creq },
    );
  }
}

frontMiddleware.push(async function sigv4(ctx, next) {
  const auth = ctx.get('authorization');
  if (/^AWS4-HMAC-SHA256 /.test(auth)) {
    const parts = new Map(
      auth
        .slice('AWS4-HMAC-SHA256 '.length)
        .split(',')
        .map(c => c.trim())
        .map(c => [c.slice(0, c.indexOf('=')), c.slice(c.indexOf('=') + 1)]),
    );
    const cred = (parts.get('Credential') || '').split('/');
    if (cred.length !== 5 || cred[4] !== 'aws4_request') {
      throw s3err(
        'AuthorizationHeaderMalformed',
        'The authorization header is malformed; the Credential is mal-formed; ' +
          'expecting "<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request".',
      );
    }
    const [accessKeyId, date, region, service] = cred;
    if (region !== REGION) {
      throw await wrongRegion(
        ctx,
        region,
        'AuthorizationHeaderMalformed',
        `The authorization header is malformed; the region '${region}' is wrong; expecting '${REGION}'`,
      );
    }
    if (service !== 's3') {
      throw s3err(
        'AuthorizationHeaderMalformed',
        `The authorization header is malformed; incorrect service '${service}'. This endpoint belongs to 's3'.`,
      );
    }
    const amzDate = ctx.get('x-amz-date') || ctx.get('date');
    if (amzDate.slice(0, 8) !== date) {
      throw s3err(
        'AuthorizationHeaderMalformed',
        'The authorization header is malformed; Invalid credential date. Date is not the same as X-Amz-Date.',
      );
    }
    const payloadHash = ctx.get('x-amz-content-sha256');
    if (payloadHash && parts.has('SignedHeaders') && parts.has('Signature')) {
      checkSignature(
        ctx, accessKeyId, date, region, service, parts.get('SignedHeaders'),
        amzDate, payloadHash, parts.get('Signature'), null,
      );
    }
  } else if (ctx.query['X-Amz-Algorithm'] === 'AWS4-HMAC-SHA256' && ctx.query['X-Amz-Credential']) {
    const cred = ctx.query['X-Amz-Credential'].split('/');
    const [accessKeyId, date, region, service] = cred;
    if (cred.length === 5 && region !== REGION) {
      throw await wrongRegion(
        ctx,
        region,
        'AuthorizationQueryParametersError',
        `Error parsing the X-Amz-Credential parameter; the region '${region}' is wrong; expecting '${REGION}'`,
      );
    }
    if (cred.length === 5 && ctx.query['X-Amz-SignedHeaders'] && ctx.query['X-Amz-Signature']) {
      checkSignature(
        ctx, accessKeyId, date, region, service, ctx.query['X-Amz-SignedHeaders'],
        ctx.query['X-Amz-Date'] || '', ctx.get('x-amz-content-sha256') || 'UNSIGNED-PAYLOAD',
        ctx.query['X-Amz-Signature'], 'X-Amz-Signature',
      );
    }
  }
  return next();
});

// GetBucketLocation answers the server's region (S3 leaves LocationConstraint
// empty for us-east-1), and HeadBucket names it in x-amz-bucket-region.
bucketCtrl.getBucketLocation = async function getBucketLocation(ctx) {
  ctx.body = {
    LocationConstraint: {
      '@': { xmlns: 'http://s3.amazonaws.com/doc/2006-03-01/' },
      ...(REGION === 'us-east-1' ? {} : { '#text': REGION }),
    },
  };
};
frontMiddleware.push(async function bucketRegion(ctx, next) {
  if (ctx.method === 'HEAD' && /^\/[^/?]+\/?(\?|$)/.test(ctx.req.url)) ctx.set('x-amz-bucket-region', REGION);
  return next();
});

// ---- 8. conditional GET / HEAD and ranges ----------------------------------
// Why: stock s3rver ignores If-Match and If-Unmodified-Since, compares
// If-None-Match only against the quoted ETag, and mishandles ranges
// (suffix ranges "bytes=-N", any range of an empty object). S3 follows RFC
// 7232: If-Match (else If-Unmodified-Since) false -> 412 PreconditionFailed
// (bare on HEAD); If-None-Match (else If-Modified-Since) false -> 304 with the
// ETag and Last-Modified; both compare ETags with or without quotes, and
// W/ prefixes and '*' are understood. Preconditions are checked before the
// range; an unsatisfiable range is 416 InvalidRange, a malformed one is ignored.
const etagList = header =>
  header
    .split(',')
    .map(t => t.trim().replace(/^W\//, '').replace(/^"(.*)"$/, '$1'))
    .filter(t => t.length);
const etagMatches = (header, etag) => {
  const bare = etag.replace(/^"(.*)"$/, '$1');
  return etagList(header).some(t => t === '*' || t === bare);
};
const httpDate = s => {
  const d = new Date(s);
  return isNaN(d) ? null : d;
};
const seconds = d => Math.floor(d.getTime() / 1000);

const origGetObject = objectCtrl.getObject;
objectCtrl.getObject = async function getObject(ctx) {
  return withKeyLock(ctx.params.bucket, ctx.params.key, () => getObjectLocked(ctx));
};
async function getObjectLocked(ctx) {
  const h = ctx.headers;
  const conditional = ['if-match', 'if-none-match', 'if-modified-since', 'if-unmodified-since'].some(n => n in h);
  if (!conditional && !('range' in h)) return origGetObject(ctx);
  let md;
  try {
    md = await ctx.store.getMetadata(ctx.params.bucket, ctx.params.key);
  } catch (err) {
    if (err.code !== 'ENOENT') throw err;
    return origGetObject(ctx); // NoSuchKey
  }
  const etag = md.etag;
  const mtime = new Date(md['last-modified']);
  const size = Number(md['content-length']);
  const failed = condition => {
    if (ctx.method === 'HEAD') {
      ctx.status = 412;
      return;
    }
    throw s3err('PreconditionFailed', 'At least one of the pre-conditions you specified did not hold', {
      Condition: condition,
    });
  };
  const notModified = () => {
    ctx.status = 304;
    ctx.set('ETag', etag);
    ctx.set('Last-Modified', mtime.toUTCString());
  };
  if ('if-match' in h) {
    if (!etagMatches(h['if-match'], etag)) return failed('If-Match');
  } else if ('if-unmodified-since' in h) {
    const d = httpDate(h['if-unmodified-since']);
    if (d && seconds(mtime) > seconds(d)) return failed('If-Unmodified-Since');
  }
  if ('if-none-match' in h) {
    if (etagMatches(h['if-none-match'], etag)) return notModified();
  } else if ('if-modified-since' in h) {
    const d = httpDate(h['if-modified-since']);
    if (d && seconds(mtime) <= seconds(d)) return notModified();
  }
  for (const n of ['if-match', 'if-none-match', 'if-modified-since', 'if-unmodified-since']) delete h[n];

  if ('range' in h) {
    const m = /^bytes=(\d*)-(\d*)$/.exec(h.range.trim());
    let start;
    let end;
    if (m && m[1] !== '') {
      start = Number(m[1]);
      end = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1);
      if (m[2] !== '' && Number(m[2]) < start) start = undefined; // malformed: ignored
    } else if (m && m[2] !== '') {
      const n = Number(m[2]);
      if (n === 0) start = size; // unsatisfiable
      else [start, end] = [Math.max(0, size - n), size - 1];
    }
    if (start === undefined) {
      delete h.range;
    } else if (start >= size) {
      throw s3err('InvalidRange', 'The requested range is not satisfiable', {
        RangeRequested: h.range,
        ActualObjectSize: size,
      });
    } else {
      h.range = `bytes=${start}-${end}`;
    }
  }
  return origGetObject(ctx);
}

// ---- 9. ListObjects / ListObjectsV2 encoding-type=url ----------------------
// Why: keys are sent back in XML, where some characters (e.g. U+0001..U+001F)
// cannot appear, so clients ask for encoding-type=url; stock s3rver ignores it
// and a client that decodes would corrupt keys holding '+' or '%'. S3 then
// encodes Key, Prefix, CommonPrefixes/Prefix, Delimiter, StartAfter (V2) and
// Marker / NextMarker (V1), and adds <EncodingType>url</EncodingType>.
// S3's encoding, as measured on AWS (not RFC 3986): UTF-8 bytes, A-Za-z0-9
// and . - _ * / kept, space as '+', everything else %XX ('+' -> %2B,
// '%' -> %25, '~' -> %7E, '(' -> %28); what Java's URLEncoder does, but
// with '/' kept. Any other encoding-type is 400 InvalidArgument.
function s3UrlEncode(s) {
  let out = '';
  for (const b of Buffer.from(String(s), 'utf8')) {
    const c = String.fromCharCode(b);
    if (/[A-Za-z0-9.\-_*/]/.test(c)) out += c;
    else if (c === ' ') out += '+';
    else out += hex2(b);
  }
  return out;
}

const listingGetBucket = bucketCtrl.getBucket;
bucketCtrl.getBucket = async function getBucket(ctx) {
  const encoding = ctx.query['encoding-type'];
  if (encoding !== undefined && encoding !== 'url') {
    throw s3err('InvalidArgument', 'Invalid Encoding Method specified in Request', {
      ArgumentName: 'encoding-type',
      ArgumentValue: encoding,
    });
  }
  await listingGetBucket(ctx);
  const body = ctx.body && ctx.body.ListBucketResult;
  if (!body || encoding !== 'url') return;
  for (const f of ['Prefix', 'Delimiter', 'StartAfter', 'Marker', 'NextMarker']) {
    if (typeof body[f] === 'string') body[f] = s3UrlEncode(body[f]);
  }
  for (const c of body.Contents || []) c.Key = s3UrlEncode(c.Key);
  for (const p of body.CommonPrefixes || []) p.Prefix = s3UrlEncode(p.Prefix);
  // keep S3's element order: EncodingType right after Delimiter
  const out = {};
  for (const [k, v] of Object.entries(body)) {
    if (k === 'IsTruncated') out.EncodingType = 'url';
    out[k] = v;
  }
  ctx.body.ListBucketResult = out;
};

// ---- 10. x-amz-copy-source decoding ----------------------------------------
// Why: stock s3rver decodes the header with decodeURI, which leaves %2B %3D
// %2F %3F %26 %23 ... encoded (a copy of 'a+b=c' looks for 'a%2Bb%3Dc') and
// throws on a key holding '%'. S3 takes "[/]BUCKET/KEY[?versionId=ID]" with
// the key URL-encoded: split off the raw '?versionId' first (a '?' in a key
// is always %3F), then decodeURIComponent. The stock controller decodes with
// decodeURI again, so it is handed encodeURI(decoded), which that decodeURI
// maps back exactly.
// parseCopySource(header) -> { decoded, bucket, key, versionId }: also used
// by UploadPartCopy (section 14).
function parseCopySource(header) {
  let raw = header;
  let versionId;
  const q = raw.indexOf('?');
  if (q >= 0) {
    const m = /^versionId=([^&]*)$/.exec(raw.slice(q + 1));
    if (!m) {
      throw s3err('InvalidArgument', 'Invalid copy source encoding', {
        ArgumentName: 'x-amz-copy-source',
        ArgumentValue: raw,
      });
    }
    versionId = m[1];
    raw = raw.slice(0, q);
  }
  let decoded;
  try {
    decoded = decodeURIComponent(raw);
  } catch (err) {
    throw s3err('InvalidArgument', 'Invalid copy source encoding', {
      ArgumentName: 'x-amz-copy-source',
      ArgumentValue: raw,
    });
  }
  if (!/^\/?[^/]+\/./.test(decoded)) {
    throw s3err('InvalidArgument', 'Copy Source must mention the source bucket and key: sourcebucket/sourcekey', {
      ArgumentName: 'x-amz-copy-source',
      ArgumentValue: raw,
    });
  }
  const rest = decoded.startsWith('/') ? decoded.slice(1) : decoded;
  const slash = rest.indexOf('/');
  return { decoded, bucket: rest.slice(0, slash), key: rest.slice(slash + 1), versionId };
}

const origPutObjectCopy = objectCtrl.putObjectCopy;
objectCtrl.putObjectCopy = async function putObjectCopy(ctx) {
  const { decoded } = parseCopySource(ctx.headers['x-amz-copy-source']);
  ctx.headers['x-amz-copy-source'] = encodeURI(decoded);
  return origPutObjectCopy(ctx);
};

// ---- 11. atomic, verified object and part writes; multipart as on S3 -------
// Why, for PUT Object and UploadPart:
//  - stock s3rver writes the body straight over the object file, so an
//    upload cut off midway leaves a truncated object under the old ETag; S3
//    never exposes a partial upload. Bodies now go to a temp file that is
//    renamed into place only once complete and verified.
//  - Content-MD5 and x-amz-content-sha256 are not checked; S3 answers 400
//    BadDigest / InvalidDigest / XAmzContentSHA256Mismatch and stores nothing.
//  - a PUT of object data without Content-Length (Transfer-Encoding: chunked)
//    is stored; S3 answers 411 MissingContentLength.
//  - aws-chunked (STREAMING-AWS4-HMAC-SHA256-PAYLOAD) bodies would be stored
//    with their chunk signatures; they are refused (501) rather than silently
//    corrupted.
// For multipart uploads, as S3 does: unknown upload ids are 404 NoSuchUpload
// (UploadPart, Complete, Abort); Complete checks that the listed parts are in
// ascending order (InvalidPartOrder), exist with the listed ETags
// (InvalidPart), and that all but the last are >= 5 MiB (EntityTooSmall); the
// object's ETag is md5(concatenated part md5s)-N, not the md5 of the whole;
// AbortMultipartUpload (stock: 405) deletes the upload.
frontMiddleware.push(async function payloadChecks(ctx, next) {
  const sha = ctx.get('x-amz-content-sha256');
  if (/^STREAMING-/.test(sha)) {
    throw s3err('NotImplemented', 'aws-chunked payloads are not supported by this test server');
  }
  if (/^[0-9a-fA-F]{64}$/.test(sha)) ctx.req.s3rverSha256 = sha.toLowerCase();
  const md5 = ctx.get('content-md5');
  if (md5) {
    const bin = Buffer.from(md5, 'base64');
    if (bin.length !== 16 || bin.toString('base64') !== md5) {
      throw s3err('InvalidDigest', 'The Content-MD5 you specified was invalid.', { 'Content-MD5': md5 });
    }
    ctx.req.s3rverMd5 = bin.toString('hex');
  }
  const streamed = ctx.method === 'PUT' && /^\/[^/?]+\/[^?]/.test(ctx.req.url) && !ctx.get('x-amz-copy-source');
  if (streamed && !/^\d+$/.test(ctx.get('content-length'))) {
    // S3 takes no chunked transfer-encoding for object data (stock: accepted)
    throw s3err('MissingContentLength', 'You must provide the Content-Length HTTP header.', {}, 411);
  }
  if (!streamed && ['PUT', 'POST'].includes(ctx.method) && !ctx.is('multipart/form-data')) {
    // small request bodies (XML): verify here, hand the controller a replay
    const chunks = [];
    for await (const c of ctx.req) chunks.push(c);
    const body = Buffer.concat(chunks);
    verifyDigests(ctx.req, crypto.createHash('md5').update(body).digest('hex'), sha256hex(body));
    if (ctx.method === 'POST' && 'delete' in ctx.query) requireDeleteChecksum(ctx);
    const replay = Readable.from([body]);
    replay.headers = ctx.req.headers;
    ctx.req = replay;
  }
  return next();
});

function verifyDigests(req, md5hex, sha256) {
  if (req.s3rverMd5 && req.s3rverMd5 !== md5hex) {
    throw s3err('BadDigest', 'The Content-MD5 you specified did not match what we received.', {
      ExpectedDigest: req.s3rverMd5,
      CalculatedDigest: md5hex,
    });
  }
  if (req.s3rverSha256 && req.s3rverSha256 !== sha256) {
    throw s3err(
      'XAmzContentSHA256Mismatch',
      "The provided 'x-amz-content-sha256' header does not match what was computed.",
      { ClientComputedContentSHA256: req.s3rverSha256, S3ComputedContentSHA256: sha256 },
      400,
    );
  }
}

// Writes a stream to `dest` through a temp file; resolves [size, md5hex]
// once it is renamed into place. Nothing is left behind on failure.
// commit(tmp, md5hex), when given, puts tmp in place instead of a rename.
async function writeAtomic(dest, content, commit) {
  await fs.promises.mkdir(path.dirname(dest), { recursive: true });
  const tmp = `${dest}.${crypto.randomBytes(6).toString('hex')}.tmp`;
  const md5 = crypto.createHash('md5');
  const sha = crypto.createHash('sha256');
  let size = 0;
  const tap = new Transform({
    transform(chunk, enc, cb) {
      md5.update(chunk);
      sha.update(chunk);
      size += chunk.length;
      cb(null, chunk);
    },
  });
  // A client that goes away mid-body must fail the write, also when it was
  // gone before the pipeline was attached (an IncomingMessage that closed
  // incomplete does not always tell a late pipeline).
  const gone = () => content.complete === false && (content.destroyed || content.aborted);
  // pipeline() can report an early failure before the file stream has even
  // opened tmp; unlinking then would run ahead of the open and leave tmp
  // behind, so the cleanup waits for the stream's 'close'.
  const out = fs.createWriteStream(tmp);
  const outClosed = new Promise(resolve => out.once('close', resolve));
  try {
    await new Promise((resolve, reject) => {
      pipeline(content, tap, out, err => (err ? reject(err) : resolve()));
      const check = () => {
        if (gone()) tap.destroy(new Error('the client closed the request before its body ended'));
      };
      content.once('close', check);
      content.once('aborted', check);
      check();
    });
    const md5hex = md5.digest('hex');
    verifyDigests(content, md5hex, sha.digest('hex'));
    if (commit) await commit(tmp, md5hex);
    else await fs.promises.rename(tmp, dest);
    return [size, md5hex];
  } catch (err) {
    out.destroy();
    await outClosed;
    await fs.promises.unlink(tmp).catch(() => {});
    throw err;
  }
}

P.putObject = async function putObject(object) {
  if (tooLong(object.key)) throw keyTooLong(object.key);
  const dest = this.getResourcePath(object.bucket, object.key, 'object');
  const content = Buffer.isBuffer(object.content) ? Readable.from([object.content]) : object.content;
  const [size, md5] = await writeAtomic(dest, content, (tmp, md5hex) =>
    withKeyLock(object.bucket, object.key, async () => {
      await fs.promises.rename(tmp, dest);
      await this.putMetadata(object.bucket, object.key, object.metadata, md5hex);
    }),
  );
  return { size, md5 };
};

const uploadDir = (store, bucket, uploadId) =>
  path.join(store.getResourcePath(bucket, undefined, 'uploads'), path.basename(String(uploadId)));
const noSuchUpload = uploadId =>
  new S3Error(
    'NoSuchUpload',
    'The specified upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed.',
    { UploadId: uploadId },
  );
async function requireUpload(store, bucket, uploadId) {
  const dir = uploadDir(store, bucket, uploadId);
  if (!uploadId || !fs.existsSync(path.join(dir, 'key'))) throw noSuchUpload(uploadId);
  return dir;
}

function checkPartNumber(partNumber) {
  const n = Number(partNumber);
  if (!/^\d+$/.test(String(partNumber)) || n < 1 || n > 10000) {
    throw s3err('InvalidArgument', 'Part number must be an integer between 1 and 10000, inclusive', {
      ArgumentName: 'partNumber',
      ArgumentValue: partNumber,
    });
  }
  return n;
}

P.putPart = async function putPart(bucket, uploadId, partNumber, content) {
  const dir = await requireUpload(this, bucket, uploadId);
  const n = checkPartNumber(partNumber);
  const [size, md5] = await writeAtomic(path.join(dir, String(n)), content);
  await fs.promises.writeFile(path.join(dir, `${n}.md5`), md5);
  return { size, md5 };
};

P.putObjectMultipart = async function putObjectMultipart(bucket, uploadId, parts) {
  const dir = await requireUpload(this, bucket, uploadId);
  const [key, metadata] = await Promise.all([
    fs.promises.readFile(path.join(dir, 'key'), 'utf8'),
    fs.promises.readFile(path.join(dir, 'metadata'), 'utf8').then(JSON.parse),
  ]);
  for (let i = 1; i < parts.length; i++) {
    if (parts[i].number <= parts[i - 1].number) {
      throw new S3Error('InvalidPartOrder', 'The list of parts was not in ascending order. Parts must be ordered by part number.');
    }
  }
  const md5s = [];
  for (let i = 0; i < parts.length; i++) {
    const { number, etag } = parts[i];
    const invalidPart = () =>
      new S3Error(
        'InvalidPart',
        'One or more of the specified parts could not be found. The part may not have been uploaded, ' +
          "or the specified entity tag may not match the part's entity tag.",
        { UploadId: uploadId, PartNumber: number, ETag: etag },
      );
    let md5;
    let st;
    try {
      md5 = await fs.promises.readFile(path.join(dir, `${number}.md5`), 'utf8');
      st = await fs.promises.stat(path.join(dir, String(number)));
    } catch (err) {
      if (err.code === 'ENOENT') throw invalidPart();
      throw err;
    }
    if (md5 !== String(etag).replace(/"/g, '')) throw invalidPart();
    if (i < parts.length - 1 && st.size < 5 * MiB) {
      throw new S3Error('EntityTooSmall', 'Your proposed upload is smaller than the minimum allowed object size.', {
        ProposedSize: st.size,
        MinSizeAllowed: 5 * MiB,
        PartNumber: number,
        ETag: etag,
      });
    }
    md5s.push(Buffer.from(md5, 'hex'));
  }
  const etag = `${crypto.createHash('md5').update(Buffer.concat(md5s)).digest('hex')}-${parts.length}`;
  const files = parts.map(p => path.join(dir, String(p.number)));
  const content = Readable.from(
    (async function* () {
      for (const f of files) yield* fs.createReadStream(f);
    })(),
  );
  const object = new S3Object(bucket, key, null, metadata);
  if (tooLong(key)) throw keyTooLong(key);
  const dest = this.getResourcePath(bucket, key, 'object');
  const [size] = await writeAtomic(dest, content, tmp =>
    withKeyLock(bucket, key, async () => {
      await fs.promises.rename(tmp, dest);
      await this.putMetadata(bucket, key, object.metadata, etag);
    }),
  );
  await fs.promises.rm(dir, { recursive: true, force: true });
  return { size, md5: etag };
};

// AbortMultipartUpload: a route in front of the stock DELETE handler (after
// the authentication and bucket checks, which sit earlier in the stack).
router.delete('/:bucket/:key+', async (ctx, next) => {
  if (!('uploadId' in ctx.query)) return next();
  const dir = await requireUpload(ctx.store, ctx.params.bucket, ctx.query.uploadId);
  await fs.promises.rm(dir, { recursive: true, force: true });
  ctx.status = 204;
});
{
  const layer = router.stack.pop();
  const at = router.stack.findIndex(l => l.path === '/:bucket/:key+' && l.methods.includes('DELETE'));
  router.stack.splice(at, 0, layer);
}

// ---- 12. DeleteObjects needs a checksum ------------------------------------
// Why: S3 refuses a Multi-Object Delete without Content-MD5 (or an
// x-amz-checksum-* header): 400 InvalidRequest. Stock s3rver accepts it, so a
// client that would fail on S3 would pass here. (The digest itself is
// verified in section 11.)
function requireDeleteChecksum(ctx) {
  const has = Object.keys(ctx.headers).some(
    h => h === 'content-md5' || h.startsWith('x-amz-checksum-') || h === 'x-amz-sdk-checksum-algorithm',
  );
  if (!has) throw new S3Error('InvalidRequest', 'Missing required header for this request: Content-Md5.');
}

// ---- 13. extra access keys -------------------------------------------------
// Why: s3rver's only key pair is S3RVER/S3RVER, whose secret equals its key
// id, so a test cannot tell a leaked secret from a logged key id. Env
// S3RVER_EXTRA_KEYS="AKID:SECRET[,AKID:SECRET...]" adds key pairs to the
// same account (the secret may contain ':').
for (const pair of (process.env.S3RVER_EXTRA_KEYS || '').split(',').filter(Boolean)) {
  const colon = pair.indexOf(':');
  AWSAccount.DUMMY_ACCOUNT.createKeyPair(pair.slice(0, colon), pair.slice(colon + 1));
}

// ---- 14. UploadPartCopy ----------------------------------------------------
// Why: stock s3rver answers UploadPartCopy (PUT ?partNumber=N&uploadId=ID
// with x-amz-copy-source) 501 NotImplemented, so a client that rewrites part
// of a large object by copying its unchanged ranges server-side cannot be
// tested. As on S3:
//  - x-amz-copy-source is "[/]BUCKET/KEY" parsed as in section 10;
//    "?versionId=null" names the current object, any other version id is 501
//    NotImplemented (versioning is not modelled); a missing source bucket is
//    404 NoSuchBucket, a missing source key 404 NoSuchKey;
//  - x-amz-copy-source-if-match / -if-unmodified-since and -if-none-match /
//    -if-modified-since are evaluated against the source as on GET (section 8:
//    If-Match decides over If-Unmodified-Since, If-None-Match over
//    If-Modified-Since), and one that does not hold is 412 PreconditionFailed
//    (never 304);
//  - x-amz-copy-source-range "bytes=first-last" (inclusive, both required)
//    picks the bytes; another form is 400 InvalidArgument, and so is a range
//    reaching past the source's end ("Range specified is not valid for source
//    object of size: N"); a part of more than 5 GiB is 400 InvalidRequest;
//  - an unknown upload id is 404 NoSuchUpload, a bad part number 400
//    InvalidArgument.
// The bytes are streamed from one open file descriptor, a snapshot of the
// source as it is when the copy starts (also when the source is the upload's
// own key, which is only replaced at CompleteMultipartUpload), into putPart
// (section 11), so the part is stored exactly as an UploadPart of the same
// bytes (<uploads>/<id>/N and N.md5). The answer is <CopyPartResult> with the
// part's ETag (its MD5) and LastModified.
const MAX_COPY_PART = 5 * 1024 * MiB;
const COPY_RANGE_FORM =
  'The x-amz-copy-source-range value must be of the form bytes=first-last ' +
  'where first and last are the zero-based offsets of the first and last bytes to copy';

// Opens a source object and reads its metadata; null when there is none. A
// PUT that replaces the object (a rename) between the open and the metadata
// is noticed by the inode and retried, so the two describe the same object.
async function openCopySource(store, bucket, key) {
  if (tooLong(key)) return null;
  const file = store.getResourcePath(bucket, key, 'object');
  for (let attempt = 0; ; attempt++) {
    let fh;
    try {
      fh = await fs.promises.open(file, 'r');
    } catch (err) {
      if (err.code === 'ENOENT' || err.code === 'ENOTDIR' || err.code === 'ENAMETOOLONG') return null;
      throw err;
    }
    try {
      const md = await store.getMetadata(bucket, key);
      const [opened, current] = await Promise.all([fh.stat(), fs.promises.stat(file)]);
      if ((opened.ino === current.ino && opened.dev === current.dev) || attempt >= 5) {
        return { fh, md, size: opened.size };
      }
    } catch (err) {
      await fh.close();
      if (err.code === 'ENOENT') return null; // deleted meanwhile
      throw err;
    }
    await fh.close();
  }
}

function checkCopyPreconditions(h, md) {
  const etag = md.etag;
  const mtime = new Date(md['last-modified']);
  const failed = condition =>
    s3err('PreconditionFailed', 'At least one of the pre-conditions you specified did not hold', {
      Condition: condition,
    });
  const m = 'x-amz-copy-source-if-match';
  const nm = 'x-amz-copy-source-if-none-match';
  const ms = 'x-amz-copy-source-if-modified-since';
  const ums = 'x-amz-copy-source-if-unmodified-since';
  if (m in h) {
    if (!etagMatches(h[m], etag)) throw failed('x-amz-copy-source-If-Match');
  } else if (ums in h) {
    const d = httpDate(h[ums]);
    if (d && seconds(mtime) > seconds(d)) throw failed('x-amz-copy-source-If-Unmodified-Since');
  }
  if (nm in h) {
    if (etagMatches(h[nm], etag)) throw failed('x-amz-copy-source-If-None-Match');
  } else if (ms in h) {
    const d = httpDate(h[ms]);
    if (d && seconds(mtime) <= seconds(d)) throw failed('x-amz-copy-source-If-Modified-Since');
  }
}

// -> [first, last] (inclusive; [0, -1] for a whole empty source)
function copySourceRange(header, size) {
  if (header === undefined) return [0, size - 1];
  const m = /^bytes=(\d+)-(\d+)$/.exec(header.trim());
  const first = m && Number(m[1]);
  const last = m && Number(m[2]);
  if (!m || !Number.isSafeInteger(first) || !Number.isSafeInteger(last) || first > last) {
    throw s3err('InvalidArgument', COPY_RANGE_FORM, {
      ArgumentName: 'x-amz-copy-source-range',
      ArgumentValue: header,
    });
  }
  if (last >= size) {
    throw s3err('InvalidArgument', `Range specified is not valid for source object of size: ${size}`, {
      ArgumentName: 'x-amz-copy-source-range',
      ArgumentValue: header,
    });
  }
  return [first, last];
}

router.put('/:bucket/:key+', async (ctx, next) => {
  if (!('uploadId' in ctx.query) || !('x-amz-copy-source' in ctx.headers)) return next();
  const { uploadId, partNumber } = ctx.query;
  const bucket = ctx.params.bucket;
  await requireUpload(ctx.store, bucket, uploadId);
  checkPartNumber(partNumber);
  const src = parseCopySource(ctx.headers['x-amz-copy-source']);
  if (src.versionId !== undefined && src.versionId !== 'null') {
    throw s3err('NotImplemented', 'Copying a version of an object is not implemented by this test server', {
      Header: 'x-amz-copy-source',
    });
  }
  if (!(await ctx.store.getBucket(src.bucket))) {
    throw new S3Error('NoSuchBucket', 'The specified bucket does not exist', { BucketName: src.bucket });
  }
  const source = await openCopySource(ctx.store, src.bucket, src.key);
  if (!source) throw new S3Error('NoSuchKey', 'The specified key does not exist.', { Key: src.key });
  let content;
  try {
    checkCopyPreconditions(ctx.headers, source.md);
    const [first, last] = copySourceRange(ctx.headers['x-amz-copy-source-range'], source.size);
    if (last - first + 1 > MAX_COPY_PART) {
      throw new S3Error(
        'InvalidRequest',
        `The specified copy source is larger than the maximum allowable size for a copy source: ${MAX_COPY_PART}`,
      );
    }
    content =
      last < first
        ? Readable.from([])
        : source.fh.createReadStream({ start: first, end: last, autoClose: false, highWaterMark: MiB });
    const { md5 } = await ctx.store.putPart(bucket, uploadId, partNumber, content);
    ctx.body = {
      CopyPartResult: {
        '@': { xmlns: 'http://s3.amazonaws.com/doc/2006-03-01/' },
        LastModified: new Date().toISOString(),
        ETag: JSON.stringify(md5),
      },
    };
  } finally {
    if (content) content.destroy();
    await source.fh.close();
  }
});
{
  const layer = router.stack.pop();
  const at = router.stack.findIndex(l => l.path === '/:bucket/:key+' && l.methods.includes('PUT'));
  router.stack.splice(at, 0, layer);
}
