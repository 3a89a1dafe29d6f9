"""s3cachefs-s3, the S3 command-line tool, against the test server.

Written to the tool's spec (usage in tools/s3cli.c). Every result is checked
through boto3, an independent client, never through the tool alone.
"""

import concurrent.futures
import hashlib
import random
import re
import time
from datetime import timezone

import pytest

from conftest import ALT_ACCESS_KEY, ALT_SECRET_KEY, new_bucket_name
from faultproxy import SilentServer, closed_port
from helpers import PREFIX, ok, one_error_line

MiB = 1024 * 1024
MARGIN = 2.5  # seconds allowed past a configured timeout (process start, exit)
ISO_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")

# Key names that need encoding somewhere (path, query, XML, copy source).
SPECIAL_KEYS = [
    "sp ace",
    "plus+sign",
    "pct%41",
    "eq=&amp",
    "q?x#y",
    "til~de",
    "ünïcødé/日本語",
    "mixed +%=&?#~ ü/x y",
    "semi;colon,comma@at$!*'()",
]


def sha(data):
    return hashlib.sha256(data).hexdigest()


def rand_bytes(n, seed):
    return random.Random(seed).randbytes(n)


def parse_ls(out):
    """-> (prefixes, {key: (size, mtime)}), with duplicate detection."""
    prefixes, objects = [], {}
    text = out.decode("utf-8")
    for line in text.split("\n"):
        if not line:
            continue
        if line.startswith("PRE\t"):
            prefixes.append(line[4:])
            continue
        size, mtime, key = line.split("\t", 2)
        assert ISO_RE.match(mtime), f"bad mtime in {line!r}"
        assert key not in objects, f"key listed twice: {key!r}"
        objects[key] = (int(size), mtime)
    assert text == "" or text.endswith("\n")
    return prefixes, objects


def boto3_list(s3, bucket, prefix="", delimiter=None):
    kw = {"Bucket": bucket, "Prefix": prefix}
    if delimiter:
        kw["Delimiter"] = delimiter
    prefixes, objects = [], {}
    for page in s3.get_paginator("list_objects_v2").paginate(**kw):
        prefixes += [p["Prefix"] for p in page.get("CommonPrefixes", [])]
        for o in page.get("Contents", []):
            objects[o["Key"]] = (o["Size"], o["LastModified"])
    return prefixes, objects


def put_many(s3, bucket, items, threads=8):
    """items: {key: bytes}, uploaded 8 at a time."""
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda kv: s3.put_object(Bucket=bucket, Key=kv[0], Body=kv[1]), items.items()))


def parse_stat(out):
    fields = {}
    for line in out.decode("utf-8").splitlines():
        name, sep, value = line.partition(": ")
        assert sep, f"bad stat line {line!r}"
        fields[name] = value
    return fields


# ---- put / get ------------------------------------------------------------------

@pytest.mark.slow
def test_multipart_put_50mib_roundtrip(cli, s3, bucket, tmp_path, request_log):
    data = rand_bytes(50 * MiB, seed=50)
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    ok(*cli("-o", "multipart_threshold=16M,part_size=8M", "put", src, f"s3://{bucket}/big/file.bin"))

    got = s3.get_object(Bucket=bucket, Key="big/file.bin")
    assert got["ContentLength"] == len(data)
    assert sha(got["Body"].read()) == sha(data)
    etag = got["ETag"].strip('"')
    assert etag.endswith("-7"), f"not a 7-part multipart ETag: {etag}"
    assert request_log.count("PUT", "partNumber=") == 7

    dst = tmp_path / "dst.bin"
    ok(*cli("get", f"s3://{bucket}/big/file.bin", dst))
    assert sha(dst.read_bytes()) == sha(data)
    rc, out, err = cli("get", f"s3://{bucket}/big/file.bin", "-")
    assert sha(ok(rc, out, err)) == sha(data)
    rc, out, err = cli("get", f"s3://{bucket}/big/file.bin")  # default: stdout
    assert sha(ok(rc, out, err)) == sha(data)


def test_put_from_stdin_multipart(cli, s3, bucket):
    data = rand_bytes(20 * MiB, seed=20)
    ok(*cli("-o", "multipart_threshold=8M,part_size=5M", "put", "-", f"s3://{bucket}/stdin", input=data))
    got = s3.get_object(Bucket=bucket, Key="stdin")
    assert sha(got["Body"].read()) == sha(data)
    assert got["ETag"].strip('"').endswith("-4")


def test_small_put_is_single_request(cli, s3, bucket, tmp_path, request_log):
    data = rand_bytes(100_000, seed=1)
    (tmp_path / "f").write_bytes(data)
    ok(*cli("put", tmp_path / "f", f"s3://{bucket}/small"))
    got = s3.get_object(Bucket=bucket, Key="small")
    assert got["Body"].read() == data
    assert got["ETag"] == '"%s"' % hashlib.md5(data).hexdigest()
    assert request_log.count("PUT", f"/{bucket}/small") == 1


@pytest.mark.parametrize("key", SPECIAL_KEYS)
def test_put_special_key(cli, s3, bucket, tmp_path, key):
    data = rand_bytes(3000, seed=key)
    (tmp_path / "f").write_bytes(data)
    ok(*cli("put", tmp_path / "f", f"s3://{bucket}/{key}"))
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == data
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == [key]


@pytest.mark.parametrize("key", SPECIAL_KEYS)
def test_get_special_key(cli, s3, bucket, tmp_path, key):
    data = rand_bytes(3000, seed=key)
    s3.put_object(Bucket=bucket, Key=key, Body=data)
    assert ok(*cli("get", f"s3://{bucket}/{key}")) == data
    ok(*cli("get", f"s3://{bucket}/{key}", tmp_path / "out"))
    assert (tmp_path / "out").read_bytes() == data


def test_zero_byte_object(cli, s3, bucket, tmp_path):
    (tmp_path / "empty").write_bytes(b"")
    ok(*cli("put", tmp_path / "empty", f"s3://{bucket}/empty-by-tool"))
    assert s3.head_object(Bucket=bucket, Key="empty-by-tool")["ContentLength"] == 0
    s3.put_object(Bucket=bucket, Key="empty-by-boto3", Body=b"")
    assert ok(*cli("get", f"s3://{bucket}/empty-by-boto3")) == b""
    ok(*cli("get", f"s3://{bucket}/empty-by-boto3", tmp_path / "got"))
    assert (tmp_path / "got").read_bytes() == b""
    assert parse_stat(ok(*cli("stat", f"s3://{bucket}/empty-by-boto3")))["size"] == "0"
    _, objects = parse_ls(ok(*cli("ls", f"s3://{bucket}/")))
    assert {k: v[0] for k, v in objects.items()} == {"empty-by-tool": 0, "empty-by-boto3": 0}


@pytest.mark.parametrize(
    "rng,sl",
    [("100-199", slice(100, 200)), ("100-", slice(100, None)), ("0-0", slice(0, 1)),
     ("9990-20000", slice(9990, None))],
)
def test_get_range(cli, s3, bucket, rng, sl):
    data = rand_bytes(10_000, seed=7)
    s3.put_object(Bucket=bucket, Key="r", Body=data)
    assert ok(*cli("get", "--range", rng, f"s3://{bucket}/r")) == data[sl]


def test_get_if_match(cli, s3, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"version 1")
    old = s3.head_object(Bucket=bucket, Key="k")["ETag"]
    assert ok(*cli("get", "--if-match", old, f"s3://{bucket}/k")) == b"version 1"
    assert ok(*cli("get", "--if-match", old.strip('"'), f"s3://{bucket}/k")) == b"version 1"
    s3.put_object(Bucket=bucket, Key="k", Body=b"version 2")
    rc, out, err = cli("get", "--if-match", old, f"s3://{bucket}/k")
    one_error_line(rc, err, 1)
    assert out == b""


def test_get_to_file_failure_leaves_file_alone(cli, bucket, tmp_path):
    d = tmp_path / "dl"
    d.mkdir()
    (d / "target").write_bytes(b"old contents")
    rc, _, err = cli("get", f"s3://{bucket}/missing", d / "target")
    one_error_line(rc, err, 1)
    assert (d / "target").read_bytes() == b"old contents"
    assert [p.name for p in d.iterdir()] == ["target"], "temp file left behind"


def test_get_to_file_replaces_atomically(cli, s3, bucket, tmp_path):
    d = tmp_path / "dl"
    d.mkdir()
    (d / "target").write_bytes(b"old contents, longer than the new")
    s3.put_object(Bucket=bucket, Key="k", Body=b"new")
    ok(*cli("get", f"s3://{bucket}/k", d / "target"))
    assert (d / "target").read_bytes() == b"new"
    assert [p.name for p in d.iterdir()] == ["target"], "temp file left behind"


def test_get_missing_key(cli, bucket):
    rc, out, err = cli("get", f"s3://{bucket}/no/such key")
    one_error_line(rc, err, 1)
    assert out == b""


# ---- stat / metadata ---------------------------------------------------------------

def test_stat(cli, s3, bucket):
    key = "dir/ünï file+1"
    s3.put_object(Bucket=bucket, Key=key, Body=b"x" * 1234, Metadata={"color": "blue"}, ContentType="text/plain")
    head = s3.head_object(Bucket=bucket, Key=key)
    st = parse_stat(ok(*cli("stat", f"s3://{bucket}/{key}")))
    assert st["key"] == key
    assert st["size"] == "1234"
    assert st["etag"] == head["ETag"]
    assert st["etag"].startswith('"')
    assert st["content-type"] == "text/plain"
    assert st["meta.color"] == "blue"
    assert ISO_RE.match(st["mtime"])
    mtime = head["LastModified"].astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert st["mtime"] == mtime


def test_stat_missing(cli, bucket):
    rc, out, err = cli("stat", f"s3://{bucket}/missing")
    one_error_line(rc, err, 1)


def test_put_meta_and_content_type(cli, s3, bucket, tmp_path):
    (tmp_path / "f").write_bytes(b"{}")
    ok(*cli("put", "--content-type", "application/json", "--meta", "color=blue", "--meta", "owner=ci user",
            tmp_path / "f", f"s3://{bucket}/m.json"))
    head = s3.head_object(Bucket=bucket, Key="m.json")
    assert head["ContentType"] == "application/json"
    assert head["Metadata"] == {"color": "blue", "owner": "ci user"}


# ---- cp / rm / mb / check -----------------------------------------------------------

@pytest.mark.parametrize("key", ["plain", "a+b=c&d", "sp ace/ünï%41?#"])
def test_cp(cli, s3, bucket, key):
    data = rand_bytes(5000, seed=key)
    s3.put_object(Bucket=bucket, Key=key, Body=data, Metadata={"color": "blue"})
    ok(*cli("cp", f"s3://{bucket}/{key}", f"s3://{bucket}/copy of {key}"))
    got = s3.get_object(Bucket=bucket, Key=f"copy of {key}")
    assert got["Body"].read() == data
    assert got["Metadata"] == {"color": "blue"}
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == data


def test_cp_missing_source(cli, bucket):
    rc, _, err = cli("cp", f"s3://{bucket}/missing", f"s3://{bucket}/dst")
    one_error_line(rc, err, 1)


def test_rm_one_and_several(cli, s3, bucket):
    for k in ["a", "b c", "d+e", "keep"]:
        s3.put_object(Bucket=bucket, Key=k, Body=b"x")
    ok(*cli("rm", f"s3://{bucket}/a"))
    assert sorted(boto3_list(s3, bucket)[1]) == ["b c", "d+e", "keep"]
    ok(*cli("rm", f"s3://{bucket}/b c", f"s3://{bucket}/d+e"))
    assert sorted(boto3_list(s3, bucket)[1]) == ["keep"]


def test_rm_recursive_means_the_folder(cli, s3, bucket):
    """rm -r s3://b/dir removes the folder dir/ and nothing that merely
    shares the string prefix (dir2/..., the key 'dir' itself)."""
    doomed = ["dir/a", "dir/sub/b c"]
    keep = ["dir", "dir2/x", "dirt"]
    for k in doomed + keep:
        s3.put_object(Bucket=bucket, Key=k, Body=b"x")
    ok(*cli("rm", "-r", f"s3://{bucket}/dir"))
    assert sorted(boto3_list(s3, bucket)[1]) == sorted(keep)


def test_ls_escapes_control_characters(cli, s3, bucket):
    """One entry is one line even when a key holds a tab, a newline or a
    backslash: those are escaped as \\t, \\n and \\\\."""
    keys = {"tab\there": r"tab\there", "new\nline": r"new\nline",
            "back\\slash": "back\\\\slash", "bell\x07": r"bell\x07"}
    for k in keys:
        s3.put_object(Bucket=bucket, Key=k, Body=b"12")
    out = ok(*cli("ls", "-r", f"s3://{bucket}"))
    lines = out.decode().splitlines()
    assert len(lines) == len(keys)
    shown = sorted(line.split("\t", 2)[2] for line in lines)
    assert shown == sorted(keys.values())


@pytest.mark.slow
def test_rm_recursive_1200(cli, s3, bucket, request_log):
    doomed = {f"del/{i // 100:02d}/k {i:04d}+x": b"" for i in range(1200)}
    keep = {"delx/keep": b"1", "keep/x": b"2", "del": b"3", "de/l": b"4"}
    put_many(s3, bucket, {**doomed, **keep})
    assert len(boto3_list(s3, bucket, "del/")[1]) == 1200
    request_log.clear_log()
    ok(*cli("rm", "-r", f"s3://{bucket}/del/"))
    assert boto3_list(s3, bucket, "del/")[1] == {}
    assert sorted(boto3_list(s3, bucket)[1]) == sorted(keep)
    assert request_log.count("POST", "delete") == 2, "expected 2 DeleteObjects requests (1,000 keys each)"


def test_mb_and_check(cli, s3):
    name = new_bucket_name()
    ok(*cli("mb", f"s3://{name}"))
    s3.head_bucket(Bucket=name)
    ok(*cli("check", f"s3://{name}"))


# ---- listing --------------------------------------------------------------------------

FOLDERS = ["", "dir one/", "ünïcødé/日本語/", "plus+dir/", "pct%25dir/", "eq=amp&/", "q?hash#/",
           "tilde~/deep/er/", "dir one/sub dir/"]
NAMES = ["file name", "plus+sign", "per%cent", "eq=val", "amp&er", "ques?tion", "hash#tag", "til~de",
         "ünïcødé", "日本語", "mixed +%=&?#~ ü", "plain"]


@pytest.fixture(scope="module")
def listing_bucket(tool, s3):
    name = new_bucket_name()
    s3.create_bucket(Bucket=name)
    items = {}
    for i in range(2500):
        key = f"{FOLDERS[i % len(FOLDERS)]}{NAMES[i % len(NAMES)]}-{i:04d}" + (".txt" if i % 3 else "")
        items[key] = b"x" * (i % 17)
    put_many(s3, name, items)
    return name


def test_ls_recursive_2500(cli, s3, listing_bucket):
    prefixes, objects = parse_ls(ok(*cli("ls", "-r", f"s3://{listing_bucket}")))
    assert prefixes == []
    _, want = boto3_list(s3, listing_bucket)
    assert len(want) == 2500
    assert {k: v[0] for k, v in objects.items()} == {k: v[0] for k, v in want.items()}
    for k, (_, mtime) in objects.items():
        assert mtime == want[k][1].astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.mark.parametrize("prefix", ["", "dir one/", "ünïcødé/", "plus+", "pct%25dir/p", "q?hash#/"])
def test_ls_recursive_prefix(cli, s3, listing_bucket, prefix):
    prefixes, objects = parse_ls(ok(*cli("ls", "-r", f"s3://{listing_bucket}/{prefix}")))
    _, want = boto3_list(s3, listing_bucket, prefix)
    assert want
    assert prefixes == []
    assert {k: v[0] for k, v in objects.items()} == {k: v[0] for k, v in want.items()}


@pytest.mark.parametrize("prefix", ["", "dir one/", "dir one", "ünïcødé/", "tilde~/deep/", "eq=amp&/", "q?hash#/", "nothing/"])
def test_ls_folder(cli, s3, listing_bucket, prefix):
    """Non-recursive: PRE lines and objects as list_objects_v2 Delimiter='/'
    gives them, the prefix used exactly as given."""
    prefixes, objects = parse_ls(ok(*cli("ls", f"s3://{listing_bucket}/{prefix}")))
    want_prefixes, want = boto3_list(s3, listing_bucket, prefix, "/")
    assert sorted(prefixes) == sorted(want_prefixes)
    assert {k: v[0] for k, v in objects.items()} == {k: v[0] for k, v in want.items()}


# ---- faults through the proxy --------------------------------------------------------------

def test_get_survives_short_and_reset(cli, s3, bucket, proxy, tmp_path):
    data = rand_bytes(8 * MiB, seed=8)
    s3.put_object(Bucket=bucket, Key="eight", Body=data)
    proxy.add("short", count=2, method="GET", path=f"/{bucket}/eight")
    proxy.add("reset", count=1, method="GET", path=f"/{bucket}/eight")
    ok(*cli("-o", "retries=5", "get", f"s3://{bucket}/eight", tmp_path / "out", endpoint=proxy.endpoint))
    assert sha((tmp_path / "out").read_bytes()) == sha(data)
    assert proxy.injected["short"] == 2
    assert proxy.injected["reset"] == 1


def test_get_to_stdout_survives_short(cli, s3, bucket, proxy):
    data = rand_bytes(8 * MiB, seed=9)
    s3.put_object(Bucket=bucket, Key="eight", Body=data)
    proxy.add("short", count=2, method="GET", path=f"/{bucket}/eight")
    rc, out, err = cli("-o", "retries=5", "get", f"s3://{bucket}/eight", endpoint=proxy.endpoint)
    assert sha(ok(rc, out, err)) == sha(data), "stdout must carry each byte once, in order"
    assert proxy.injected["short"] == 2


def test_put_survives_slowdown(cli, s3, bucket, proxy, tmp_path):
    data = rand_bytes(MiB, seed=3)
    (tmp_path / "f").write_bytes(data)
    proxy.add("503", count=2, method="PUT")
    ok(*cli("-o", "retries=5", "put", tmp_path / "f", f"s3://{bucket}/slow", endpoint=proxy.endpoint))
    assert proxy.injected["503"] == 2
    assert s3.get_object(Bucket=bucket, Key="slow")["Body"].read() == data


def test_multipart_put_survives_faults(cli, s3, bucket, proxy, tmp_path):
    data = rand_bytes(12 * MiB, seed=12)
    (tmp_path / "f").write_bytes(data)
    proxy.add("503", count=1, method="PUT", path="partNumber=2")
    proxy.add("500", count=1, method="POST", path="uploadId=")
    ok(*cli("-o", "retries=5,multipart_threshold=5M,part_size=5M", "put", tmp_path / "f",
            f"s3://{bucket}/mp", endpoint=proxy.endpoint))
    got = s3.get_object(Bucket=bucket, Key="mp")
    assert sha(got["Body"].read()) == sha(data)
    assert got["ETag"].strip('"').endswith("-3")
    assert proxy.injected["503"] == 1 and proxy.injected["500"] == 1


def test_500_on_every_request_fails(cli, s3, bucket, proxy):
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    proxy.add("500", count=None)
    t = time.monotonic()
    rc, out, err = cli("-o", "timeout=10s", "get", f"s3://{bucket}/k", endpoint=proxy.endpoint, timeout=60)
    elapsed = time.monotonic() - t
    one_error_line(rc, err, 1)
    assert out == b""
    assert elapsed < 10 + MARGIN
    assert proxy.injected["500"] >= 2, "expected the tool to retry a 500"


# ---- bad input ---------------------------------------------------------------------------

def timed(cli, *args, **kw):
    t = time.monotonic()
    rc, out, err = cli(*args, **kw)
    return rc, out, err, time.monotonic() - t


def test_unreachable_endpoint(cli, bucket):
    rc, _, err, elapsed = timed(cli, "-o", "timeout=5s", "ls", f"s3://{bucket}/",
                                endpoint=f"http://127.0.0.1:{closed_port()}", timeout=60)
    one_error_line(rc, err, 1)
    assert elapsed < 5 + MARGIN


def test_silent_endpoint_times_out(cli, bucket):
    server = SilentServer().start()
    try:
        rc, _, err, elapsed = timed(cli, "-o", "io_timeout=2s,timeout=5s", "ls", f"s3://{bucket}/",
                                    endpoint=server.endpoint, timeout=60)
    finally:
        server.stop()
    one_error_line(rc, err, 1)
    assert server.accepted >= 1
    assert elapsed < 5 + MARGIN


def test_wrong_access_key(cli, bucket):
    rc, _, err, elapsed = timed(cli, "-o", "timeout=10s", "ls", f"s3://{bucket}/",
                                env={"AWS_ACCESS_KEY_ID": "AKIANOSUCHKEY0000000"})
    one_error_line(rc, err, 1)
    assert elapsed < 10 + MARGIN


def test_wrong_secret(cli, bucket):
    rc, _, err, elapsed = timed(cli, "-o", "timeout=10s", "ls", f"s3://{bucket}/",
                                env={"AWS_SECRET_ACCESS_KEY": "not-the-secret"})
    one_error_line(rc, err, 1)
    assert elapsed < 10 + MARGIN


@pytest.mark.parametrize("args", [["ls", "s3://no-such-bucket-0/"], ["get", "s3://no-such-bucket-0/k"],
                                  ["check", "s3://no-such-bucket-0"]])
def test_missing_bucket(cli, args):
    rc, _, err, elapsed = timed(cli, "-o", "timeout=10s", *args)
    line = one_error_line(rc, err, 1)
    assert "no-such-bucket-0" in line
    assert elapsed < 10 + MARGIN


@pytest.mark.parametrize("cmd", ["check", "ls", "stat", "get"])
def test_wrong_region(cli, s3, bucket, cmd):
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    uri = {"check": f"s3://{bucket}", "ls": f"s3://{bucket}/"}.get(cmd, f"s3://{bucket}/k")
    rc, out, err, elapsed = timed(cli, "-o", "region=eu-west-1,timeout=10s", cmd, uri)
    line = one_error_line(rc, err, 1)
    assert "us-east-1" in line, "the message must name the bucket's region"
    assert elapsed < 10 + MARGIN


@pytest.mark.parametrize("endpoint", ["htp:/x", "127.0.0.1:9000", "http://", "http://127.0.0.1:notaport",
                                      "ftp://127.0.0.1:21", "http://[::1"])
def test_malformed_endpoint(cli, bucket, endpoint):
    rc, _, err, elapsed = timed(cli, "-o", f"endpoint={endpoint},timeout=5s", "ls", f"s3://{bucket}/",
                                env={"S3CACHEFS_ENDPOINT": None})
    one_error_line(rc, err)
    assert rc in (1, 2)
    assert elapsed < 5 + MARGIN


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["frobnicate"],
        ["frobnicate", "s3://b/k"],
        ["get"],
        ["stat"],
        ["ls"],
        ["put", "only-one-arg"],
        ["cp", "s3://b/x"],
        ["rm"],
        ["mb"],
        ["check"],
        ["-o", "nosuchopt=1", "ls", "s3://b/"],
        ["-o", "retries=many", "ls", "s3://b/"],
        ["ls", "not-a-uri"],
        ["get", "--range", "abc", "s3://b/k"],
        ["get", "--bogus-flag", "s3://b/k"],
    ],
)
def test_usage_errors(cli, args):
    rc, out, err, elapsed = timed(cli, *args, timeout=30)
    one_error_line(rc, err, 2)
    assert out == b""
    assert elapsed < 5


# ---- secrets -----------------------------------------------------------------------------

SESSION_TOKEN = "FwoGZXIvYXdzEXAMPLESESSIONTOKENvalue/with+chars=="


def assert_no_secret(out, err):
    blob = out.decode("utf-8", "replace") + err
    for secret in (ALT_SECRET_KEY, SESSION_TOKEN):
        assert secret not in blob
        assert secret.replace("/", "%2F").replace("+", "%2B") not in blob
    # nor a long-enough piece of the secret key
    for i in range(len(ALT_SECRET_KEY) - 12):
        assert ALT_SECRET_KEY[i:i + 12] not in blob


@pytest.mark.parametrize(
    "args,expect_rc",
    [
        (["ls", "s3://{b}/"], 0),
        (["get", "s3://{b}/k"], 0),
        (["get", "s3://{b}/missing"], 1),
        (["-o", "region=eu-west-1", "check", "s3://{b}"], 1),
    ],
)
def test_debug_log_has_no_secrets(cli, s3, bucket, args, expect_rc):
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    env = {"AWS_ACCESS_KEY_ID": ALT_ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": ALT_SECRET_KEY,
           "AWS_SESSION_TOKEN": SESSION_TOKEN}
    rc, out, err = cli("-vv", *[a.format(b=bucket) for a in args], env=env)
    assert rc == expect_rc, err
    assert err.strip(), "-vv logged nothing"
    assert_no_secret(out, err)


def test_debug_log_names_status(cli, bucket):
    rc, out, err = cli("-vv", "ls", f"s3://{bucket}/")
    ok(rc, out, err)
    assert "200" in err, "-vv must log each request's status"


def test_wrong_secret_with_debug_log(cli, bucket):
    rc, out, err = cli("-vv", "ls", f"s3://{bucket}/",
                       env={"AWS_ACCESS_KEY_ID": ALT_ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": ALT_SECRET_KEY + "x"})
    assert rc == 1
    blob = out.decode("utf-8", "replace") + err
    assert ALT_SECRET_KEY not in blob
