"""A read-only, in-memory S3 bucket for keys s3rver cannot hold.

s3rver keeps objects as files named by their keys, so it refuses keys with
'//' and aliases '.' / '..' components to other keys (tests/s3rver/README.md).
S3 itself stores such keys as given, and a filesystem over S3 must survive
them. FakeS3 serves one bucket of fixed objects over HTTP/1.1 with what a
read-only client needs, as S3 answers it:

  HEAD /bkt, GET /bkt?location, ListObjects v1 and v2 (prefix, delimiter,
  max-keys, marker / start-after / continuation-token, encoding-type=url),
  HEAD and GET of objects with Range, If-Match and If-None-Match.

Keys are str; a key that is no valid UTF-8 is given as os.fsdecode() spells
its bytes (lone surrogates, "surrogateescape"), and goes on the wire as
those bytes. Signatures are not checked. Every request is logged as "METHOD TARGET", the
target as sent (still encoded), like the s3rver request log, so
mount.object_requests() and list_requests() work on it too.
"""

import hashlib
import http.server
import threading
import time
import urllib.parse
import uuid
from email.utils import formatdate
from xml.sax.saxutils import escape

NS = "http://s3.amazonaws.com/doc/2006-03-01/"
SE = "surrogateescape"


def _b(s):
    """A key's bytes (see the module comment)."""
    return s.encode("utf-8", SE)


class FakeS3:
    def __init__(self, bucket, objects, region="us-east-1"):
        """objects: {key: bytes}."""
        self.bucket = bucket
        self.region = region
        now = time.time()
        self.objects = {
            k: (v, '"%s"' % hashlib.md5(v).hexdigest(), now) for k, v in objects.items()
        }
        self.log = []
        self._lock = threading.Lock()
        self._httpd = None
        self._thread = None

    @property
    def endpoint(self):
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def start(self):
        fake = self

        class Handler(_Handler):
            server_fake = fake

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self):
        if self._httpd:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(timeout=5)
            self._httpd = None

    # same interface as conftest.S3rver's request log
    def log_lines(self):
        with self._lock:
            return list(self.log)

    def clear_log(self):
        with self._lock:
            self.log.clear()

    def count(self, method, contains=""):
        return sum(1 for line in self.log_lines() if line.startswith(method + " ") and contains in line)


def _iso(ts):
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(ts))


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_fake = None

    def log_message(self, fmt, *args):  # quiet
        pass

    # -- plumbing --
    def _send(self, status, body=b"", headers=None, head_only=False):
        self.send_response(status)
        self.send_header("x-amz-request-id", uuid.uuid4().hex[:16].upper())
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if "Content-Length" not in (headers or {}):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head_only and body:
            self.wfile.write(body)

    def _error(self, status, code, message, head_only=False):
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{code}</Code><Message>{escape(message)}</Message>"
            f"<RequestId>{uuid.uuid4().hex[:16].upper()}</RequestId></Error>"
        ).encode()
        self._send(status, body, {"Content-Type": "application/xml"}, head_only)

    def _drain(self):
        n = int(self.headers.get("Content-Length") or 0)
        if n:
            self.rfile.read(n)

    def _route(self, head_only):
        fake = self.server_fake
        with fake._lock:
            fake.log.append(f"{self.command} {self.path}")
        self._drain()
        raw_path, _, query = self.path.partition("?")
        path = urllib.parse.unquote(raw_path, errors=SE)  # '+' is literal in a path
        q = dict(urllib.parse.parse_qsl(query, keep_blank_values=True, errors=SE))
        base = f"/{fake.bucket}"
        if path in (base, base + "/"):
            if "location" in q:
                body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<LocationConstraint xmlns="{NS}">'
                        f"{'' if fake.region == 'us-east-1' else fake.region}</LocationConstraint>").encode()
                return self._send(200, body, {"Content-Type": "application/xml"}, head_only)
            if head_only:
                return self._send(200, headers={"x-amz-bucket-region": fake.region}, head_only=True)
            return self._list(q)
        if not path.startswith(base + "/"):
            return self._error(404, "NoSuchBucket", "The specified bucket does not exist", head_only)
        return self._object(path[len(base) + 1:], head_only)

    def do_GET(self):  # noqa: N802
        self._route(False)

    def do_HEAD(self):  # noqa: N802
        self._route(True)

    def _refuse(self):
        with self.server_fake._lock:
            self.server_fake.log.append(f"{self.command} {self.path}")
        self._drain()
        self._error(403, "AccessDenied", "read-only fake")

    do_PUT = do_POST = do_DELETE = _refuse  # noqa: N815

    # -- objects --
    def _object(self, key, head_only):
        obj = self.server_fake.objects.get(key)
        if obj is None:
            return self._error(404, "NoSuchKey", "The specified key does not exist.", head_only)
        data, etag, mtime = obj
        if_match = self.headers.get("If-Match")
        if if_match is not None and if_match.strip() not in (etag, etag.strip('"'), "*"):
            return self._error(412, "PreconditionFailed", "At least one of the pre-conditions you "
                               "specified did not hold", head_only)
        inm = self.headers.get("If-None-Match")
        if inm is not None and inm.strip() in (etag, etag.strip('"'), "*"):
            return self._send(304, headers={"ETag": etag}, head_only=True)
        headers = {
            "ETag": etag,
            "Last-Modified": formatdate(mtime, usegmt=True),
            "Content-Type": "application/octet-stream",
            "Accept-Ranges": "bytes",
        }
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes=") and "," not in rng:
            first, _, last = rng[6:].partition("-")
            size = len(data)
            try:
                if first == "":
                    n = int(last)
                    start, end = max(0, size - n), size - 1
                else:
                    start = int(first)
                    end = min(int(last), size - 1) if last else size - 1
            except ValueError:
                start = None
            if start is not None:
                if start >= size or (first == "" and int(last) == 0):
                    return self._error(416, "InvalidRange", "The requested range is not satisfiable",
                                       head_only)
                body = data[start:end + 1]
                headers["Content-Range"] = f"bytes {start}-{end}/{size}"
                headers["Content-Length"] = str(len(body))
                return self._send(206, body, headers, head_only)
        headers["Content-Length"] = str(len(data))
        return self._send(200, data, headers, head_only)

    # -- listings --
    def _list(self, q):
        fake = self.server_fake
        v2 = q.get("list-type") == "2"
        prefix = q.get("prefix", "")
        delim = q.get("delimiter", "")
        try:
            max_keys = max(0, min(1000, int(q.get("max-keys", "1000"))))
        except ValueError:
            return self._error(400, "InvalidArgument", "bad max-keys")
        url = q.get("encoding-type") == "url"
        token = q.get("continuation-token")
        if token:  # opaque, as S3's: the hex of the last key's bytes
            try:
                after = bytes.fromhex(token).decode("utf-8", SE)
            except ValueError:
                return self._error(400, "InvalidArgument", "bad continuation-token")
        else:
            after = q.get("start-after", "") if v2 else q.get("marker", "")
        keys = sorted((k for k in fake.objects if k.startswith(prefix)), key=_b)
        entries = []  # (sort key, kind, value)
        seen = set()
        for k in keys:
            rest = k[len(prefix):]
            if delim and delim in rest:
                cp = prefix + rest[: rest.index(delim) + len(delim)]
                if cp not in seen:
                    seen.add(cp)
                    entries.append((cp, "P", cp))
            else:
                entries.append((k, "K", k))
        entries = [e for e in entries if _b(e[0]) > _b(after)] if after else entries
        page, truncated = entries[:max_keys], len(entries) > max_keys

        def enc(s):
            return urllib.parse.quote_plus(_b(s), safe="/") if url else s

        out = [f'<?xml version="1.0" encoding="UTF-8"?>\n<ListBucketResult xmlns="{NS}">',
               f"<Name>{fake.bucket}</Name>", f"<Prefix>{escape(enc(prefix))}</Prefix>"]
        if delim:
            out.append(f"<Delimiter>{escape(enc(delim))}</Delimiter>")
        out.append(f"<MaxKeys>{max_keys}</MaxKeys>")
        if url:
            out.append("<EncodingType>url</EncodingType>")
        out.append(f"<IsTruncated>{'true' if truncated else 'false'}</IsTruncated>")
        if v2:
            out.append(f"<KeyCount>{len(page)}</KeyCount>")
            if q.get("continuation-token"):
                out.append(f"<ContinuationToken>{escape(q['continuation-token'])}</ContinuationToken>")
            if truncated:
                out.append(f"<NextContinuationToken>{_b(page[-1][0]).hex()}</NextContinuationToken>")
        else:
            out.append(f"<Marker>{escape(enc(after))}</Marker>")
            if truncated and delim:
                out.append(f"<NextMarker>{escape(enc(page[-1][0]))}</NextMarker>")
        for _, kind, value in page:
            if kind == "K":
                data, etag, mtime = fake.objects[value]
                out.append(
                    f"<Contents><Key>{escape(enc(value))}</Key><LastModified>{_iso(mtime)}</LastModified>"
                    f"<ETag>{escape(etag)}</ETag><Size>{len(data)}</Size>"
                    "<StorageClass>STANDARD</StorageClass></Contents>"
                )
        for _, kind, value in page:
            if kind == "P":
                out.append(f"<CommonPrefixes><Prefix>{escape(enc(value))}</Prefix></CommonPrefixes>")
        out.append("</ListBucketResult>")
        self._send(200, _b("".join(out)), {"Content-Type": "application/xml"})
