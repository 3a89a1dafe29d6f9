"""The test server itself: each AWS behaviour tests/s3rver/fixes.js adds.

These run without the tool, straight over boto3 or raw signed HTTP, so a
failure of a tool test can be trusted to be the tool's.
"""

import hashlib
import base64
import os
import socket
import xml.etree.ElementTree as ET

import pytest
from botocore.exceptions import ClientError

from conftest import ALT_ACCESS_KEY, ALT_SECRET_KEY, boto3_client, new_bucket_name, sign_headers

NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"
MiB = 1024 * 1024


def xml(body):
    root = ET.fromstring(body)
    # s3rver uses two namespaces for its documents; strip whichever it is
    for el in root.iter():
        if "}" in el.tag:
            el.tag = el.tag.split("}", 1)[1]
    return root


def err_code(exc):
    return exc.response["Error"]["Code"]


# ---- a. conditional GET / HEAD ----------------------------------------------

@pytest.fixture
def obj(s3, bucket):
    s3.put_object(Bucket=bucket, Key="cond", Body=b"0123456789")
    etag = s3.head_object(Bucket=bucket, Key="cond")["ETag"]
    assert etag.startswith('"') and etag.endswith('"')
    return bucket, "cond", etag


@pytest.mark.parametrize("quoted", [True, False])
def test_if_match_true_returns_object(s3, obj, quoted):
    bucket, key, etag = obj
    tag = etag if quoted else etag.strip('"')
    assert s3.get_object(Bucket=bucket, Key=key, IfMatch=tag)["Body"].read() == b"0123456789"
    assert s3.head_object(Bucket=bucket, Key=key, IfMatch=tag)["ContentLength"] == 10


def test_if_match_false_get_is_412_with_error_body(raw, obj):
    bucket, key, _ = obj
    status, headers, body = raw("GET", f"/{bucket}/{key}", headers={"If-Match": '"0000"'})
    assert status == 412
    root = xml(body)
    assert root.tag == "Error"
    assert root.findtext("Code") == "PreconditionFailed"
    assert root.findtext("Condition") == "If-Match"


def test_if_match_false_head_is_bare_412(raw, obj):
    bucket, key, _ = obj
    status, _, body = raw("HEAD", f"/{bucket}/{key}", headers={"If-Match": "0000"})
    assert status == 412
    assert body == b""


@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize("quoted", [True, False])
def test_if_none_match(raw, obj, method, quoted):
    bucket, key, etag = obj
    tag = etag if quoted else etag.strip('"')
    status, headers, body = raw(method, f"/{bucket}/{key}", headers={"If-None-Match": tag})
    assert status == 304
    assert body == b""
    assert headers["etag"] == etag
    status, _, body = raw(method, f"/{bucket}/{key}", headers={"If-None-Match": '"other"'})
    assert status == 200
    assert body == (b"0123456789" if method == "GET" else b"")


def test_if_match_list_and_star(raw, obj):
    bucket, key, etag = obj
    status, _, _ = raw("GET", f"/{bucket}/{key}", headers={"If-Match": f'"x", {etag}'})
    assert status == 200
    status, _, _ = raw("GET", f"/{bucket}/{key}", headers={"If-Match": "*"})
    assert status == 200
    status, _, _ = raw("GET", f"/{bucket}/{key}", headers={"If-None-Match": "*"})
    assert status == 304


def test_precondition_checked_before_range(raw, obj):
    bucket, key, _ = obj
    status, _, _ = raw("GET", f"/{bucket}/{key}", headers={"If-Match": '"no"', "Range": "bytes=100-200"})
    assert status == 412


def test_missing_key_with_if_match_is_404(raw, bucket):
    status, _, body = raw("GET", f"/{bucket}/nope", headers={"If-Match": '"x"'})
    assert status == 404
    assert xml(body).findtext("Code") == "NoSuchKey"


@pytest.mark.parametrize(
    "rng,want,status",
    [
        ("bytes=2-4", b"234", 206),
        ("bytes=7-", b"789", 206),
        ("bytes=-3", b"789", 206),
        ("bytes=5-100", b"56789", 206),
        ("bytes=10-", None, 416),
        ("bytes=4-2", b"0123456789", 200),  # malformed: ignored, as on S3
    ],
)
def test_ranges(raw, obj, rng, want, status):
    bucket, key, _ = obj
    st, _, body = raw("GET", f"/{bucket}/{key}", headers={"Range": rng})
    assert st == status
    if want is not None:
        assert body == want
    else:
        assert xml(body).findtext("Code") == "InvalidRange"


def test_range_of_empty_object_is_416(s3, raw, bucket):
    s3.put_object(Bucket=bucket, Key="empty", Body=b"")
    st, _, body = raw("GET", f"/{bucket}/empty", headers={"Range": "bytes=0-0"})
    assert st == 416
    assert xml(body).findtext("Code") == "InvalidRange"


# ---- b. region and signatures -------------------------------------------------

def test_wrong_region_is_authorization_header_malformed(raw, bucket):
    status, headers, body = raw("GET", f"/{bucket}?list-type=2", region="eu-west-1")
    assert status == 400
    root = xml(body)
    assert root.findtext("Code") == "AuthorizationHeaderMalformed"
    assert root.findtext("Message") == (
        "The authorization header is malformed; the region 'eu-west-1' is wrong; expecting 'us-east-1'"
    )
    assert root.findtext("Region") == "us-east-1"
    assert root.findtext("RequestId") == headers["x-amz-request-id"]


def test_wrong_region_head_bucket_names_region_in_header(raw, bucket):
    status, headers, body = raw("HEAD", f"/{bucket}", region="eu-west-1")
    assert status == 400
    assert body == b""
    assert headers["x-amz-bucket-region"] == "us-east-1"


def test_server_in_another_region(start_s3rver, raw):
    server = start_s3rver(region="eu-central-1")
    s3 = boto3_client(server.endpoint, region="eu-central-1")
    s3.create_bucket(Bucket="regional", CreateBucketConfiguration={"LocationConstraint": "eu-central-1"})
    assert s3.get_bucket_location(Bucket="regional")["LocationConstraint"] == "eu-central-1"
    status, _, body = raw("GET", "/regional?list-type=2", endpoint=server.endpoint, region="us-east-1")
    assert status == 400
    assert xml(body).findtext("Region") == "eu-central-1"
    assert "expecting 'eu-central-1'" in xml(body).findtext("Message")


def test_us_east_1_location_is_empty(s3, bucket):
    assert s3.get_bucket_location(Bucket=bucket).get("LocationConstraint") in (None, "")


def test_wrong_secret_is_signature_mismatch(s3rver, bucket):
    bad = boto3_client(s3rver.endpoint, secret_key="not-the-secret")
    with pytest.raises(ClientError) as e:
        bad.list_objects_v2(Bucket=bucket)
    assert err_code(e.value) == "SignatureDoesNotMatch"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_wrong_access_key(s3rver, bucket):
    bad = boto3_client(s3rver.endpoint, access_key="NOSUCHKEY")
    with pytest.raises(ClientError) as e:
        bad.head_object(Bucket=bucket, Key="x")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    with pytest.raises(ClientError) as e:
        bad.list_objects_v2(Bucket=bucket)
    assert err_code(e.value) == "InvalidAccessKeyId"


def test_signed_path_must_match_sent_path(s3rver, bucket):
    # sign one key, send another: S3 recomputes from what it received
    import http.client

    hdrs = sign_headers(s3rver.endpoint, "GET", f"/{bucket}/a%20b")
    conn = http.client.HTTPConnection("127.0.0.1", s3rver.port, timeout=10)
    conn.putrequest("GET", f"/{bucket}/a+b", skip_host=True, skip_accept_encoding=True)
    for k, v in hdrs.items():
        conn.putheader(k, v)
    conn.endheaders()
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    assert resp.status == 403
    assert xml(body).findtext("Code") == "SignatureDoesNotMatch"


def test_special_keys_sign_and_roundtrip(s3, bucket):
    # the canonical URI of every character class verifies with botocore
    keys = ["a b", "a+b", "a%b", "q?x#y", "eq=&amp", "t~ilde!*'()", "ünï/日本語", "semi;colon,comma@at$"]
    for k in keys:
        s3.put_object(Bucket=bucket, Key=k, Body=k.encode())
    for k in keys:
        assert s3.get_object(Bucket=bucket, Key=k)["Body"].read() == k.encode()


def test_presigned_url(s3rver, bucket):
    import urllib.request

    s3 = boto3_client(s3rver.endpoint, signature_version="s3v4")
    s3.put_object(Bucket=bucket, Key="p q", Body=b"presigned")
    url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "p q"}, ExpiresIn=60)
    with urllib.request.urlopen(url, timeout=10) as r:
        assert r.read() == b"presigned"
    assert "X-Amz-Signature=" in url
    with pytest.raises(Exception) as e:
        urllib.request.urlopen(url.replace("X-Amz-Signature=", "X-Amz-Signature=0"), timeout=10)
    assert getattr(e.value, "code", None) == 403
    with pytest.raises(Exception) as e:
        urllib.request.urlopen(url.replace("us-east-1", "eu-west-1"), timeout=10)
    assert getattr(e.value, "code", None) == 400


def test_extra_key_pair(s3rver, bucket):
    alt = boto3_client(s3rver.endpoint, access_key=ALT_ACCESS_KEY, secret_key=ALT_SECRET_KEY)
    alt.put_object(Bucket=bucket, Key="alt", Body=b"x")
    assert alt.get_object(Bucket=bucket, Key="alt")["Body"].read() == b"x"


def test_request_id_headers_and_error_body(raw, bucket):
    status, headers, body = raw("GET", f"/{bucket}/missing")
    assert status == 404
    assert len(headers["x-amz-request-id"]) == 16
    assert headers["x-amz-id-2"]
    assert xml(body).findtext("RequestId") == headers["x-amz-request-id"]


# ---- c. encoding-type=url --------------------------------------------------------

ENC_KEYS = {
    "a b/c": "a+b/c",
    "a+b": "a%2Bb",
    "100%.csv": "100%25.csv",
    "eq=amp&q?h#": "eq%3Damp%26q%3Fh%23",
    "t~(x)*._-": "t%7E%28x%29*._-",
    "ünï/日本語": "%C3%BCn%C3%AF/%E6%97%A5%E6%9C%AC%E8%AA%9E",
    "ctl\x01x": "ctl%01x",
}


@pytest.fixture
def enc_bucket(s3, bucket):
    for k in ENC_KEYS:
        s3.put_object(Bucket=bucket, Key=k, Body=b"x")
    return bucket


@pytest.mark.parametrize("v2", [True, False])
def test_encoding_type_url_keys(raw, enc_bucket, v2):
    q = "list-type=2&encoding-type=url" if v2 else "encoding-type=url"
    status, _, body = raw("GET", f"/{enc_bucket}?{q}")
    assert status == 200
    root = xml(body)
    assert root.findtext("EncodingType") == "url"
    got = [c.findtext("Key") for c in root.findall("Contents")]
    want = [ENC_KEYS[k] for k in sorted(ENC_KEYS, key=lambda s: s.encode())]
    assert got == want


def test_encoding_type_url_prefixes_delimiter_start_after(raw, enc_bucket):
    status, _, body = raw("GET", f"/{enc_bucket}?list-type=2&encoding-type=url&delimiter=%2F&prefix=&start-after=a%2Bb")
    assert status == 200
    root = xml(body)
    assert root.findtext("Delimiter") == "/"
    assert root.findtext("StartAfter") == "a%2Bb"
    prefixes = [p.findtext("Prefix") for p in root.findall("CommonPrefixes")]
    assert prefixes == ["%C3%BCn%C3%AF/"]
    status, _, body = raw("GET", f"/{enc_bucket}?list-type=2&encoding-type=url&delimiter=%2F&prefix=a%20b%2F")
    root = xml(body)
    assert root.findtext("Prefix") == "a+b/"
    assert [c.findtext("Key") for c in root.findall("Contents")] == ["a+b/c"]
    status, _, body = raw("GET", f"/{enc_bucket}?list-type=2&encoding-type=url&delimiter=%2B")
    root = xml(body)
    assert root.findtext("Delimiter") == "%2B"
    assert [p.findtext("Prefix") for p in root.findall("CommonPrefixes")] == ["a%2B"]


def test_encoding_type_v1_marker(raw, enc_bucket):
    status, _, body = raw("GET", f"/{enc_bucket}?encoding-type=url&marker=a%20b%2Fc")
    root = xml(body)
    assert root.findtext("Marker") == "a+b/c"
    assert root.findtext("Contents/Key") == "a%2Bb"


def test_no_encoding_type_returns_raw_keys(raw, enc_bucket):
    status, _, body = raw("GET", f"/{enc_bucket}?list-type=2&prefix=a")
    root = xml(body)
    assert root.find("EncodingType") is None
    assert [c.findtext("Key") for c in root.findall("Contents")] == ["a b/c", "a+b"]


def test_bad_encoding_type(raw, bucket):
    status, _, body = raw("GET", f"/{bucket}?list-type=2&encoding-type=base64")
    assert status == 400
    assert xml(body).findtext("Code") == "InvalidArgument"


def test_boto3_decodes_what_server_encodes(s3, enc_bucket):
    # botocore asks for encoding-type=url and decodes with unquote_plus
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=enc_bucket)["Contents"]]
    assert sorted(keys) == sorted(ENC_KEYS)
    keys = [o["Key"] for o in s3.list_objects(Bucket=enc_bucket)["Contents"]]
    assert sorted(keys) == sorted(ENC_KEYS)


# ---- d. x-amz-copy-source ---------------------------------------------------------

COPY_KEYS = ["a+b=c", "sp ace", "pct%41", "q?x#y&z", "ünï/日本語", "slash/in/key"]


@pytest.mark.parametrize("key", COPY_KEYS)
def test_copy_special_keys_boto3(s3, bucket, key):
    s3.put_object(Bucket=bucket, Key=key, Body=key.encode())
    s3.copy_object(Bucket=bucket, Key="dst/" + key, CopySource={"Bucket": bucket, "Key": key})
    assert s3.get_object(Bucket=bucket, Key="dst/" + key)["Body"].read() == key.encode()


@pytest.mark.parametrize(
    "fmt",
    ["/{b}/{k}", "{b}/{k}", "/{b}/{k}?versionId=null", "{b}/{k}?versionId=abc"],
)
def test_copy_source_forms(s3, raw, bucket, fmt):
    from urllib.parse import quote

    key = "x+y=z%/é q"
    s3.put_object(Bucket=bucket, Key=key, Body=b"payload")
    src = fmt.format(b=bucket, k=quote(key, safe=""))
    status, _, body = raw("PUT", f"/{bucket}/copied", headers={"x-amz-copy-source": src})
    assert status == 200, body
    assert xml(body).tag == "CopyObjectResult"
    assert s3.get_object(Bucket=bucket, Key="copied")["Body"].read() == b"payload"


def test_copy_missing_source(raw, bucket):
    status, _, body = raw("PUT", f"/{bucket}/copied", headers={"x-amz-copy-source": f"/{bucket}/a%2Bb"})
    assert status == 404
    assert xml(body).findtext("Code") == "NoSuchKey"
    assert xml(body).findtext("Key") == "a+b"


# ---- e. request log -------------------------------------------------------------

def test_request_log(s3, request_log, bucket):
    s3.put_object(Bucket=bucket, Key="l o+g", Body=b"x")
    s3.get_object(Bucket=bucket, Key="l o+g")
    s3.get_object(Bucket=bucket, Key="l o+g")
    s3.list_objects_v2(Bucket=bucket, Prefix="l")
    lines = request_log.log_lines()
    assert f"PUT /{bucket}/l%20o%2Bg" in lines
    assert lines.count(f"GET /{bucket}/l%20o%2Bg") == 2
    assert request_log.count("GET", f"/{bucket}/l%20o%2Bg") == 2
    assert any(line.startswith(f"GET /{bucket}?") and "list-type=2" in line and "prefix=l" in line for line in lines)
    request_log.clear_log()
    assert request_log.log_lines() == []


# ---- 11./12. verified and atomic writes, multipart --------------------------------

def test_content_md5_mismatch_is_bad_digest(raw, s3, bucket):
    md5 = base64.b64encode(hashlib.md5(b"other").digest()).decode()
    status, _, body = raw("PUT", f"/{bucket}/k", body=b"data", headers={"Content-MD5": md5})
    assert status == 400
    assert xml(body).findtext("Code") == "BadDigest"
    with pytest.raises(ClientError):
        s3.head_object(Bucket=bucket, Key="k")


def test_sha256_mismatch(s3rver, s3, bucket):
    import http.client

    hdrs = sign_headers(s3rver.endpoint, "PUT", f"/{bucket}/k", body=b"signed body")
    assert hdrs["X-Amz-Content-SHA256"] == hashlib.sha256(b"signed body").hexdigest()
    conn = http.client.HTTPConnection("127.0.0.1", s3rver.port, timeout=10)
    conn.putrequest("PUT", f"/{bucket}/k", skip_host=True, skip_accept_encoding=True)
    for k, v in hdrs.items():
        conn.putheader(k, v)
    conn.putheader("Content-Length", "11")
    conn.endheaders(b"other body!")
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    assert resp.status == 400
    assert xml(body).findtext("Code") == "XAmzContentSHA256Mismatch"
    with pytest.raises(ClientError):
        s3.head_object(Bucket=bucket, Key="k")


def test_aborted_put_leaves_old_object(s3, s3rver, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"old contents")
    hdrs = sign_headers(s3rver.endpoint, "PUT", f"/{bucket}/k", headers={"Content-Length": "1000000"},
                        unsigned_payload=True)
    sock = socket.create_connection(("127.0.0.1", s3rver.port), timeout=10)
    head = f"PUT /{bucket}/k HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items()) + "\r\n"
    sock.sendall(head.encode() + b"x" * 1000)
    sock.close()
    # the server must keep serving the old object, whole, and drop the temp file
    import time

    def tmp_files():
        return [p for p in s3rver.data_dir.rglob("*.tmp")]

    deadline = time.monotonic() + 10
    while True:
        assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"old contents"
        if not tmp_files() or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert not tmp_files()
    assert s3.head_object(Bucket=bucket, Key="k")["ContentLength"] == 12


def test_multipart_etag_and_checks(s3, bucket):
    up = s3.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
    p1 = os.urandom(5 * MiB)
    p2 = b"tail"
    e1 = s3.upload_part(Bucket=bucket, Key="mp", UploadId=up, PartNumber=1, Body=p1)["ETag"]
    e2 = s3.upload_part(Bucket=bucket, Key="mp", UploadId=up, PartNumber=2, Body=p2)["ETag"]
    with pytest.raises(ClientError) as e:
        s3.complete_multipart_upload(
            Bucket=bucket, Key="mp", UploadId=up,
            MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e2}, {"PartNumber": 2, "ETag": e2}]},
        )
    assert err_code(e.value) == "InvalidPart"
    with pytest.raises(ClientError) as e:
        s3.complete_multipart_upload(
            Bucket=bucket, Key="mp", UploadId=up,
            MultipartUpload={"Parts": [{"PartNumber": 2, "ETag": e2}, {"PartNumber": 1, "ETag": e1}]},
        )
    assert err_code(e.value) == "InvalidPartOrder"
    r = s3.complete_multipart_upload(
        Bucket=bucket, Key="mp", UploadId=up,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]},
    )
    want = hashlib.md5(hashlib.md5(p1).digest() + hashlib.md5(p2).digest()).hexdigest() + "-2"
    assert r["ETag"] == f'"{want}"'
    head = s3.head_object(Bucket=bucket, Key="mp")
    assert head["ETag"] == f'"{want}"'
    assert head["ContentLength"] == len(p1) + len(p2)
    assert hashlib.sha256(s3.get_object(Bucket=bucket, Key="mp")["Body"].read()).digest() == hashlib.sha256(p1 + p2).digest()
    # the upload is gone once completed
    with pytest.raises(ClientError) as e:
        s3.upload_part(Bucket=bucket, Key="mp", UploadId=up, PartNumber=3, Body=b"x")
    assert err_code(e.value) == "NoSuchUpload"


def test_multipart_entity_too_small(s3, bucket):
    up = s3.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
    e1 = s3.upload_part(Bucket=bucket, Key="mp", UploadId=up, PartNumber=1, Body=b"small")["ETag"]
    e2 = s3.upload_part(Bucket=bucket, Key="mp", UploadId=up, PartNumber=2, Body=b"tail")["ETag"]
    with pytest.raises(ClientError) as e:
        s3.complete_multipart_upload(
            Bucket=bucket, Key="mp", UploadId=up,
            MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]},
        )
    assert err_code(e.value) == "EntityTooSmall"


def test_abort_multipart(s3, bucket):
    up = s3.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
    s3.upload_part(Bucket=bucket, Key="mp", UploadId=up, PartNumber=1, Body=b"x")
    s3.abort_multipart_upload(Bucket=bucket, Key="mp", UploadId=up)
    with pytest.raises(ClientError) as e:
        s3.abort_multipart_upload(Bucket=bucket, Key="mp", UploadId=up)
    assert err_code(e.value) == "NoSuchUpload"
    with pytest.raises(ClientError) as e:
        s3.upload_part(Bucket=bucket, Key="mp", UploadId="nonexistent", PartNumber=1, Body=b"x")
    assert err_code(e.value) == "NoSuchUpload"


def test_delete_objects_needs_content_md5(raw, s3, bucket):
    s3.put_object(Bucket=bucket, Key="d", Body=b"x")
    doc = b'<Delete><Object><Key>d</Key></Object></Delete>'
    status, _, body = raw("POST", f"/{bucket}?delete", body=doc)
    assert status == 400
    assert xml(body).findtext("Code") == "InvalidRequest"
    md5 = base64.b64encode(hashlib.md5(b"wrong").digest()).decode()
    status, _, body = raw("POST", f"/{bucket}?delete", body=doc, headers={"Content-MD5": md5})
    assert status == 400
    assert xml(body).findtext("Code") == "BadDigest"
    md5 = base64.b64encode(hashlib.md5(doc).digest()).decode()
    status, _, body = raw("POST", f"/{bucket}?delete", body=doc, headers={"Content-MD5": md5})
    assert status == 200
    with pytest.raises(ClientError):
        s3.head_object(Bucket=bucket, Key="d")


def test_delete_objects_batches_via_boto3(s3, bucket):
    s3.put_object(Bucket=bucket, Key="a b+c", Body=b"x")
    r = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "a b+c"}, {"Key": "absent"}]})
    assert sorted(d["Key"] for d in r["Deleted"]) == ["a b+c", "absent"]


def test_bucket_names_are_fresh(s3):
    a, b = new_bucket_name(), new_bucket_name()
    assert a != b


def test_wrong_region_head_object_names_region_in_header(raw, s3, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    status, headers, body = raw("HEAD", f"/{bucket}/k", region="eu-west-1")
    assert status == 400
    assert body == b""
    assert headers["x-amz-bucket-region"] == "us-east-1"


def test_chunked_put_is_411(s3rver, s3, bucket):
    import http.client

    hdrs = sign_headers(s3rver.endpoint, "PUT", f"/{bucket}/k", headers={"Transfer-Encoding": "chunked"},
                        unsigned_payload=True)
    assert hdrs["X-Amz-Content-SHA256"] == "UNSIGNED-PAYLOAD"
    conn = http.client.HTTPConnection("127.0.0.1", s3rver.port, timeout=10)
    conn.putrequest("PUT", f"/{bucket}/k", skip_host=True, skip_accept_encoding=True)
    for k, v in hdrs.items():
        conn.putheader(k, v)
    conn.endheaders(b"5\r\nhello\r\n0\r\n\r\n")
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    assert resp.status == 411, body
    assert xml(body).findtext("Code") == "MissingContentLength"
    with pytest.raises(ClientError):
        s3.head_object(Bucket=bucket, Key="k")


# ---- 14. UploadPartCopy ------------------------------------------------------------

def mpu_etag(*parts):
    return '"%s-%d"' % (hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest(), len(parts))


def complete(s3, bucket, key, upload_id, etags):
    return s3.complete_multipart_upload(
        Bucket=bucket, Key=key, UploadId=upload_id,
        MultipartUpload={"Parts": [{"PartNumber": i + 1, "ETag": e} for i, e in enumerate(etags)]},
    )


def assert_object(s3, bucket, key, want, etag):
    got = s3.get_object(Bucket=bucket, Key=key)
    data = got["Body"].read()
    assert len(data) == len(want)
    assert hashlib.sha256(data).hexdigest() == hashlib.sha256(want).hexdigest()  # byte-exact, short diff
    assert got["ETag"] == etag


def copy_part(s3, bucket, key, upload_id, n, src_key, src_bucket=None, **kw):
    r = s3.upload_part_copy(
        Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=n,
        CopySource={"Bucket": src_bucket or bucket, "Key": src_key}, **kw,
    )
    return r["CopyPartResult"]


def test_upload_part_copy_whole_source(s3, bucket):
    src_key = "src a+b=c%/ünï?#"
    src = os.urandom(6 * MiB + 123)
    tail = b"the tail"
    s3.put_object(Bucket=bucket, Key=src_key, Body=src)
    up = s3.create_multipart_upload(Bucket=bucket, Key="dst")["UploadId"]
    res = copy_part(s3, bucket, "dst", up, 1, src_key)
    assert res["ETag"] == '"%s"' % hashlib.md5(src).hexdigest()
    assert res["LastModified"].year >= 2020
    e2 = s3.upload_part(Bucket=bucket, Key="dst", UploadId=up, PartNumber=2, Body=tail)["ETag"]
    r = complete(s3, bucket, "dst", up, [res["ETag"], e2])
    assert r["ETag"] == mpu_etag(src, tail)
    assert_object(s3, bucket, "dst", src + tail, mpu_etag(src, tail))
    # the source is untouched
    assert s3.get_object(Bucket=bucket, Key=src_key)["Body"].read() == src


def test_upload_part_copy_from_another_bucket(s3, bucket):
    other = new_bucket_name()
    s3.create_bucket(Bucket=other)
    s3.put_object(Bucket=other, Key="s", Body=b"from elsewhere")
    up = s3.create_multipart_upload(Bucket=bucket, Key="dst")["UploadId"]
    e1 = copy_part(s3, bucket, "dst", up, 1, "s", src_bucket=other, CopySourceRange="bytes=5-13")["ETag"]
    complete(s3, bucket, "dst", up, [e1])
    assert_object(s3, bucket, "dst", b"elsewhere", mpu_etag(b"elsewhere"))


def test_upload_part_copy_ranges_mixed_with_upload_part(s3, bucket):
    src = os.urandom(16 * MiB)
    s3.put_object(Bucket=bucket, Key="src", Body=src)
    new = os.urandom(5 * MiB)
    up = s3.create_multipart_upload(Bucket=bucket, Key="dst")["UploadId"]
    r1 = copy_part(s3, bucket, "dst", up, 1, "src", CopySourceRange=f"bytes=0-{6 * MiB - 1}")
    e2 = s3.upload_part(Bucket=bucket, Key="dst", UploadId=up, PartNumber=2, Body=new)["ETag"]
    r3 = copy_part(s3, bucket, "dst", up, 3, "src", CopySourceRange=f"bytes={10 * MiB}-{16 * MiB - 1}")
    r4 = copy_part(s3, bucket, "dst", up, 4, "src", CopySourceRange="bytes=7-7")  # one byte
    parts = [src[:6 * MiB], new, src[10 * MiB:], src[7:8]]
    assert r1["ETag"] == '"%s"' % hashlib.md5(parts[0]).hexdigest()
    assert r3["ETag"] == '"%s"' % hashlib.md5(parts[2]).hexdigest()
    assert r4["ETag"] == '"%s"' % hashlib.md5(parts[3]).hexdigest()
    r = complete(s3, bucket, "dst", up, [r1["ETag"], e2, r3["ETag"], r4["ETag"]])
    assert r["ETag"] == mpu_etag(*parts)
    assert_object(s3, bucket, "dst", b"".join(parts), mpu_etag(*parts))


def test_upload_part_copy_replaces_a_part(s3, bucket):
    # a copied part overwrites an uploaded one of the same number, and back
    s3.put_object(Bucket=bucket, Key="src", Body=b"copied bytes")
    up = s3.create_multipart_upload(Bucket=bucket, Key="dst")["UploadId"]
    s3.upload_part(Bucket=bucket, Key="dst", UploadId=up, PartNumber=1, Body=b"uploaded")
    e1 = copy_part(s3, bucket, "dst", up, 1, "src")["ETag"]
    complete(s3, bucket, "dst", up, [e1])
    assert_object(s3, bucket, "dst", b"copied bytes", mpu_etag(b"copied bytes"))


def test_upload_part_copy_same_key_in_place_edit(s3, bucket):
    old = os.urandom(16 * MiB + 77)
    s3.put_object(Bucket=bucket, Key="obj", Body=old)
    old_etag = s3.head_object(Bucket=bucket, Key="obj")["ETag"]
    up = s3.create_multipart_upload(Bucket=bucket, Key="obj")["UploadId"]
    middle = bytes(b ^ 0xFF for b in old[6 * MiB:11 * MiB])
    r1 = copy_part(s3, bucket, "obj", up, 1, "obj", CopySourceRange=f"bytes=0-{6 * MiB - 1}",
                   CopySourceIfMatch=old_etag)
    e2 = s3.upload_part(Bucket=bucket, Key="obj", UploadId=up, PartNumber=2, Body=middle)["ETag"]
    r3 = copy_part(s3, bucket, "obj", up, 3, "obj", CopySourceRange=f"bytes={11 * MiB}-{len(old) - 1}",
                   CopySourceIfMatch=old_etag)
    # until Complete the object is the old one
    assert_object(s3, bucket, "obj", old, old_etag)
    parts = [old[:6 * MiB], middle, old[11 * MiB:]]
    r = complete(s3, bucket, "obj", up, [r1["ETag"], e2, r3["ETag"]])
    assert r["ETag"] == mpu_etag(*parts)
    want = b"".join(parts)
    assert len(want) == len(old) and want != old
    assert_object(s3, bucket, "obj", want, mpu_etag(*parts))


def test_upload_part_copy_reads_source_at_copy_time(s3, bucket):
    v1 = os.urandom(5 * MiB)
    v2 = os.urandom(5 * MiB)
    s3.put_object(Bucket=bucket, Key="obj", Body=v1)
    up = s3.create_multipart_upload(Bucket=bucket, Key="obj")["UploadId"]
    e1 = copy_part(s3, bucket, "obj", up, 1, "obj")["ETag"]
    s3.put_object(Bucket=bucket, Key="obj", Body=v2)
    e2 = copy_part(s3, bucket, "obj", up, 2, "obj", CopySourceRange="bytes=0-9")["ETag"]
    complete(s3, bucket, "obj", up, [e1, e2])
    assert_object(s3, bucket, "obj", v1 + v2[:10], mpu_etag(v1, v2[:10]))


def test_upload_part_copy_empty_source(s3, bucket):
    s3.put_object(Bucket=bucket, Key="empty", Body=b"")
    up = s3.create_multipart_upload(Bucket=bucket, Key="dst")["UploadId"]
    e1 = copy_part(s3, bucket, "dst", up, 1, "empty")["ETag"]
    assert e1 == '"%s"' % hashlib.md5(b"").hexdigest()
    complete(s3, bucket, "dst", up, [e1])
    assert_object(s3, bucket, "dst", b"", mpu_etag(b""))


def test_upload_part_copy_preconditions(s3, bucket):
    s3.put_object(Bucket=bucket, Key="src", Body=b"0123456789")
    etag = s3.head_object(Bucket=bucket, Key="src")["ETag"]
    up = s3.create_multipart_upload(Bucket=bucket, Key="dst")["UploadId"]
    for kw, condition in [
        ({"CopySourceIfMatch": '"0123"'}, "x-amz-copy-source-If-Match"),
        ({"CopySourceIfNoneMatch": etag}, "x-amz-copy-source-If-None-Match"),
        ({"CopySourceIfNoneMatch": etag.strip('"')}, "x-amz-copy-source-If-None-Match"),
    ]:
        with pytest.raises(ClientError) as e:
            copy_part(s3, bucket, "dst", up, 1, "src", **kw)
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
        assert err_code(e.value) == "PreconditionFailed"
        assert e.value.response["Error"]["Condition"] == condition
    # nothing was stored as part 1
    with pytest.raises(ClientError) as e:
        complete(s3, bucket, "dst", up, ['"%s"' % hashlib.md5(b"0123456789").hexdigest()])
    assert err_code(e.value) == "InvalidPart"
    # conditions that hold
    e1 = copy_part(s3, bucket, "dst", up, 1, "src", CopySourceIfMatch=etag, CopySourceIfNoneMatch='"other"',
                   CopySourceRange="bytes=2-4")["ETag"]
    complete(s3, bucket, "dst", up, [e1])
    assert_object(s3, bucket, "dst", b"234", mpu_etag(b"234"))


def test_upload_part_copy_precondition_error_body(raw, s3, bucket):
    s3.put_object(Bucket=bucket, Key="src", Body=b"x")
    up = s3.create_multipart_upload(Bucket=bucket, Key="dst")["UploadId"]
    status, headers, body = raw("PUT", f"/{bucket}/dst?partNumber=1&uploadId={up}",
                                headers={"x-amz-copy-source": f"/{bucket}/src", "x-amz-copy-source-if-match": '"no"'})
    assert status == 412
    root = xml(body)
    assert root.tag == "Error"
    assert root.findtext("Code") == "PreconditionFailed"
    assert root.findtext("RequestId") == headers["x-amz-request-id"]


def test_upload_part_copy_missing_source_and_upload(s3, bucket):
    s3.put_object(Bucket=bucket, Key="src", Body=b"x")
    up = s3.create_multipart_upload(Bucket=bucket, Key="dst")["UploadId"]
    with pytest.raises(ClientError) as e:
        copy_part(s3, bucket, "dst", up, 1, "no such+key")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    assert err_code(e.value) == "NoSuchKey"
    assert e.value.response["Error"]["Key"] == "no such+key"
    with pytest.raises(ClientError) as e:
        copy_part(s3, bucket, "dst", up, 1, "src", src_bucket=new_bucket_name())
    assert err_code(e.value) == "NoSuchBucket"
    with pytest.raises(ClientError) as e:
        copy_part(s3, bucket, "dst", "nonexistent", 1, "src")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    assert err_code(e.value) == "NoSuchUpload"
    s3.abort_multipart_upload(Bucket=bucket, Key="dst", UploadId=up)
    with pytest.raises(ClientError) as e:
        copy_part(s3, bucket, "dst", up, 1, "src")
    assert err_code(e.value) == "NoSuchUpload"


@pytest.mark.parametrize(
    "rng,message",
    [
        ("bytes=0-10", "Range specified is not valid for source object of size: 10"),
        ("bytes=10-10", "Range specified is not valid for source object of size: 10"),
        ("0-5", "must be of the form bytes=first-last"),
        ("bytes=5-", "must be of the form bytes=first-last"),
        ("bytes=-5", "must be of the form bytes=first-last"),
        ("bytes=5-2", "must be of the form bytes=first-last"),
        ("bytes=0-1,3-4", "must be of the form bytes=first-last"),
        ("bytes=a-b", "must be of the form bytes=first-last"),
    ],
)
def test_upload_part_copy_bad_range(s3, bucket, rng, message):
    s3.put_object(Bucket=bucket, Key="src", Body=b"0123456789")
    up = s3.create_multipart_upload(Bucket=bucket, Key="dst")["UploadId"]
    with pytest.raises(ClientError) as e:
        copy_part(s3, bucket, "dst", up, 1, "src", CopySourceRange=rng)
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert err_code(e.value) == "InvalidArgument"
    assert message in e.value.response["Error"]["Message"]
    assert e.value.response["Error"]["ArgumentName"] == "x-amz-copy-source-range"


@pytest.mark.parametrize("part", ["0", "10001", "x"])
def test_upload_part_copy_bad_part_number(raw, s3, bucket, part):
    s3.put_object(Bucket=bucket, Key="src", Body=b"x")
    up = s3.create_multipart_upload(Bucket=bucket, Key="dst")["UploadId"]
    status, _, body = raw("PUT", f"/{bucket}/dst?partNumber={part}&uploadId={up}",
                          headers={"x-amz-copy-source": f"/{bucket}/src"})
    assert status == 400
    assert xml(body).findtext("Code") == "InvalidArgument"


@pytest.mark.parametrize(
    "fmt",
    ["/{b}/{k}", "{b}/{k}", "/{b}/{k}?versionId=null"],
)
def test_upload_part_copy_source_forms(raw, s3, bucket, fmt):
    from urllib.parse import quote

    key = "x+y=z%/é q?#&"
    s3.put_object(Bucket=bucket, Key=key, Body=b"payload")
    up = s3.create_multipart_upload(Bucket=bucket, Key="dst")["UploadId"]
    src = fmt.format(b=bucket, k=quote(key, safe=""))
    status, _, body = raw("PUT", f"/{bucket}/dst?partNumber=1&uploadId={up}",
                          headers={"x-amz-copy-source": src, "x-amz-copy-source-range": "bytes=1-3"})
    assert status == 200, body
    root = xml(body)
    assert root.tag == "CopyPartResult"
    assert root.findtext("ETag") == '"%s"' % hashlib.md5(b"ayl").hexdigest()
    assert root.findtext("LastModified").endswith("Z")
    complete(s3, bucket, "dst", up, [root.findtext("ETag")])
    assert_object(s3, bucket, "dst", b"ayl", mpu_etag(b"ayl"))


def test_upload_part_copy_version_id_not_implemented(raw, s3, bucket):
    s3.put_object(Bucket=bucket, Key="src", Body=b"x")
    up = s3.create_multipart_upload(Bucket=bucket, Key="dst")["UploadId"]
    status, _, body = raw("PUT", f"/{bucket}/dst?partNumber=1&uploadId={up}",
                          headers={"x-amz-copy-source": f"/{bucket}/src?versionId=3HL4kqtJlcpXroDTDmJ"})
    assert status == 501
    assert xml(body).findtext("Code") == "NotImplemented"
