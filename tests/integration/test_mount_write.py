"""Writing through a real s3cachefs mount: what reaches the bucket.

Every result is checked with boto3 (an independent client) and the server's
request log, never only through the mount. Objects carry s3fs's metadata
(x-amz-meta-mode/uid/gid/mtime); directories are "dir/" marker objects;
symlinks are objects whose body is the target. Crashes, refused uploads and
a full cache disk are in test_mount_write_crash.py.
"""

import concurrent.futures
import errno
import filecmp
import hashlib
import os
import random
import re
import stat
import subprocess
import time

import pytest

from conftest import wait_for
from faultproxy import FaultProxy
from mount import (
    MiB,
    object_requests,
    put_many,
    rand_bytes,
    read_file,
    s3_body,
    s3_keys,
    s3_meta,
    sha,
)

KiB = 1024
S_REG_644 = stat.S_IFREG | 0o644  # 33188
S_DIR_755 = stat.S_IFDIR | 0o755  # 16877
S_LNK_777 = stat.S_IFLNK | 0o777  # 41471


@pytest.fixture(autouse=True)
def umask022():
    """New files are 0644 and directories 0755 whatever the caller's umask."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def write_file(path, data, mode=0o644):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
    finally:
        os.close(fd)


def run_ok(args, **kw):
    p = subprocess.run([str(a) for a in args], capture_output=True, timeout=180, **kw)
    assert p.returncode == 0, f"{args[0]} failed ({p.returncode}): {p.stderr.decode(errors='replace')}"
    return p.stdout


def assert_object(s3, bucket, key, want, what=None):
    got = s3_body(s3, bucket, key)
    assert got is not None, f"{what or key}: no object {key!r} in the bucket"
    assert len(got) == len(want) and sha(got) == sha(want), (
        f"{what or key}: the bucket holds {len(got)} bytes, want {len(want)}; "
        f"first difference at {first_diff(got, want)}")


def first_diff(a, b):
    n = min(len(a), len(b))
    for off in range(0, n, 65536):
        if a[off:off + 65536] != b[off:off + 65536]:
            for i in range(off, min(off + 65536, n)):
                if a[i] != b[i]:
                    return i
    return n if len(a) != len(b) else None


def wait_object(s3, bucket, key, want, timeout, what=None):
    """Polls boto3 until the object holds exactly `want`."""
    def ok():
        got = s3_body(s3, bucket, key)
        return got is not None and len(got) == len(want) and sha(got) == sha(want)

    try:
        wait_for(ok, timeout, f"{what or key} to hold {len(want)} bytes in the bucket", interval=0.2)
    except TimeoutError:
        assert_object(s3, bucket, key, want, what)  # the precise message
        raise


def check_s3fs_meta(s3, bucket, key, mode, t0=None, t1=None, uid=None, gid=None):
    """The object carries s3fs's metadata: decimal mode with type bits,
    uid, gid and a decimal mtime (within [t0, t1] when given)."""
    md = s3_meta(s3, bucket, key)
    assert md is not None, f"no object {key!r}"
    assert md.get("mode") == str(mode), f"{key}: x-amz-meta-mode {md.get('mode')!r}, want {mode} ({oct(mode)}): {md}"
    assert md.get("uid") == str(os.getuid() if uid is None else uid), f"{key}: uid {md}"
    assert md.get("gid") == str(os.getgid() if gid is None else gid), f"{key}: gid {md}"
    mtime = md.get("mtime")
    assert mtime is not None and re.fullmatch(r"\d+", mtime), f"{key}: x-amz-meta-mtime {mtime!r} is not decimal seconds"
    if t0 is not None:
        assert int(t0) - 2 <= int(mtime) <= int(t1) + 2, f"{key}: mtime {mtime} outside [{t0:.0f}, {t1:.0f}]"
    return md


def errno_of(fn):
    with pytest.raises(OSError) as e:
        fn()
    return e.value.errno


def query_names(line):
    """The parameter names of a request-log line's query."""
    query = line.partition(" ")[2].partition("?")[2]
    return {kv.partition("=")[0] for kv in query.split("&") if kv}


def writes_of(server, bucket):
    """Every request-log line that changes something in `bucket`."""
    out = []
    for line in server.log_lines():
        method, _, target = line.partition(" ")
        if method in ("PUT", "POST", "DELETE") and (target == f"/{bucket}" or target.startswith(
                (f"/{bucket}/", f"/{bucket}?"))):
            out.append(line)
    return out


# ---- 1. create, write, close ----------------------------------------------------------

CH = 256 * KiB


def test_create_write_close_sizes(mount, s3, bucket, s3rver):
    m = mount(bucket, chunk_size="256K", multipart_threshold="8M", part_size="5M")
    sizes = {"s0": 0, "s1": 1, "chunk-1": CH - 1, "chunk": CH, "chunk+1": CH + 1, "3chunks+5": 3 * CH + 5}
    data = {name: rand_bytes(n, f"size-{name}") for name, n in sizes.items()}
    for name, want in data.items():
        t0 = time.time()
        with open(m.path / name, "wb") as f:
            f.write(want)
        t1 = time.time()
        # close() has returned: the object is there, nothing to wait for
        assert_object(s3, bucket, name, want)
        check_s3fs_meta(s3, bucket, name, S_REG_644, t0, t1)
        assert os.stat(m.path / name).st_size == len(want)

    # above multipart_threshold: a multipart upload of 5 parts (5+5+5+5+3 MiB)
    big = rand_bytes(23 * MiB, "big23")
    s3rver.clear_log()
    write_file(m.path / "big", big)
    assert_object(s3, bucket, "big", big)
    check_s3fs_meta(s3, bucket, "big", S_REG_644)
    inits = [r for r in object_requests(s3rver, bucket, "POST", "big") if "uploads" in query_names(r)]
    assert inits, f"no CreateMultipartUpload (POST ?uploads) for a 23 MiB file: {s3rver.log_lines()[:20]}"
    parts = {int(re.search(r"partNumber=(\d+)", r).group(1))
             for r in object_requests(s3rver, bucket, "PUT", "big") if "partNumber=" in r}
    assert parts == {1, 2, 3, 4, 5}, f"parts uploaded: {sorted(parts)}"
    completes = [r for r in object_requests(s3rver, bucket, "POST", "big") if "uploadId=" in r]
    assert completes, "no CompleteMultipartUpload (POST ?uploadId=)"
    assert "-" in s3.head_object(Bucket=bucket, Key="big")["ETag"], "the object's ETag is not a multipart one"
    m.unmount()


def test_sequential_and_random_offset_writes(mount, s3, bucket):
    m = mount(bucket, chunk_size="64K")
    rng = random.Random(11)

    # many small sequential writes
    want = rand_bytes(1536 * KiB + 7, "seq")
    with open(m.path / "seq", "wb", buffering=0) as f:
        off = 0
        while off < len(want):
            n = rng.choice([1, 17, 4096, 65535, 65536, 65537, rng.randrange(1, 150_000)])
            f.write(want[off:off + n])
            off += n
    assert_object(s3, bucket, "seq", want)

    # pwrite at random offsets, out of order, leaving holes
    writes = [(300 * KiB, b"tail-bytes"), (10, b"x"), (64 * KiB - 3, b"across-edge"), (5 * 64 * KiB, b"Q" * 70_000),
              (200_000, rand_bytes(9000, "mid"))]
    want = bytearray()
    fd = os.open(m.path / "holes", os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for off, chunk in writes:
            assert os.pwrite(fd, chunk, off) == len(chunk)
            if len(want) < off + len(chunk):
                want += bytes(off + len(chunk) - len(want))
            want[off:off + len(chunk)] = chunk
        assert os.pread(fd, len(want) + 100, 0) == bytes(want), "holes did not read as zeros through the fd"
    finally:
        os.close(fd)
    want = bytes(want)
    assert want[11:1000] == bytes(989)
    assert read_file(m.path / "holes") == want
    assert_object(s3, bucket, "holes", want)
    m.unmount()


def test_append_to_existing_object(mount, s3, bucket):
    old = rand_bytes(100_000, "append-old")  # spans two 64K chunks
    s3.put_object(Bucket=bucket, Key="ap/log", Body=old)
    m = mount(bucket, chunk_size="64K")
    with open(m.path / "ap" / "log", "ab") as f:
        f.write(b"first append\n")
    want = old + b"first append\n"
    assert_object(s3, bucket, "ap/log", want)

    more = rand_bytes(150_000, "append-more")
    fd = os.open(m.path / "ap" / "log", os.O_WRONLY | os.O_APPEND)
    try:
        os.lseek(fd, 0, os.SEEK_SET)  # O_APPEND writes go to the end anyway
        for i in range(0, len(more), 40_000):
            os.write(fd, more[i:i + 40_000])
    finally:
        os.close(fd)
    want += more
    assert_object(s3, bucket, "ap/log", want)
    assert read_file(m.path / "ap" / "log") == want
    check_s3fs_meta(s3, bucket, "ap/log", S_REG_644)
    m.unmount()


def test_truncate_and_ftruncate(mount, s3, bucket):
    data = rand_bytes(300_000, "trunc")
    put_many(s3, bucket, {"t/path": data, "t/fd": data})
    m = mount(bucket, chunk_size="64K")
    p = m.path / "t" / "path"

    # truncate(path, n): no open, no close; the upload may happen at once
    # or in the background, so the bucket is polled
    os.truncate(p, 100_000)
    assert os.stat(p).st_size == 100_000
    wait_object(s3, bucket, "t/path", data[:100_000], 20, "truncate(path) shorter")
    os.truncate(p, 500_000)
    want = data[:100_000] + bytes(400_000)
    assert os.stat(p).st_size == 500_000
    assert read_file(p) == want
    wait_object(s3, bucket, "t/path", want, 20, "truncate(path) longer")
    os.truncate(p, 0)
    wait_object(s3, bucket, "t/path", b"", 20, "truncate(path) to 0")

    q = m.path / "t" / "fd"
    with open(q, "r+b") as f:
        f.truncate(65_537)
        assert os.fstat(f.fileno()).st_size == 65_537
    assert_object(s3, bucket, "t/fd", data[:65_537], "ftruncate shorter")
    with open(q, "r+b") as f:
        f.truncate(4 * 65_536 + 3)
        f.seek(200_000)
        f.write(b"after the hole")
    want = bytearray(data[:65_537] + bytes(4 * 65_536 + 3 - 65_537))
    want[200_000:200_014] = b"after the hole"
    assert_object(s3, bucket, "t/fd", bytes(want), "ftruncate longer, then a write")
    assert read_file(q) == bytes(want)
    # O_TRUNC on an existing object
    with open(q, "wb") as f:
        f.write(b"short")
    assert_object(s3, bucket, "t/fd", b"short", "O_TRUNC")
    m.unmount()


# ---- 2. fsync ----------------------------------------------------------------------------

def test_fsync_uploads_what_is_written_so_far(mount, s3, bucket):
    m = mount(bucket, chunk_size="64K")
    a, b, c = rand_bytes(300_000, "fs-a"), rand_bytes(70_000, "fs-b"), rand_bytes(5, "fs-c")
    fd = os.open(m.path / "fs", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, a)
        os.fsync(fd)
        assert_object(s3, bucket, "fs", a, "after the first fsync")
        os.write(fd, b)
        os.fsync(fd)
        assert_object(s3, bucket, "fs", a + b, "after the second fsync")
        os.pwrite(fd, c, 10)
        os.write(fd, c)
    finally:
        os.close(fd)
    want = a[:10] + c + a[15:] + b + c
    assert_object(s3, bucket, "fs", want, "after close")
    m.unmount()


# ---- 3. metadata ---------------------------------------------------------------------------

def test_chmod_chown_utime_reach_s3_and_survive_a_new_cache(mount, s3, bucket):
    m = mount(bucket, chunk_size="64K")
    p = m.path / "meta"
    data = rand_bytes(200_000, "meta")
    t0 = time.time()
    write_file(p, data, mode=0o640)
    t1 = time.time()
    check_s3fs_meta(s3, bucket, "meta", stat.S_IFREG | 0o640, t0, t1)

    os.chmod(p, 0o600)
    wait_for(lambda: (s3_meta(s3, bucket, "meta") or {}).get("mode") == str(stat.S_IFREG | 0o600), 10,
             "chmod to reach x-amz-meta-mode")
    os.chown(p, 1234, 5678)
    wait_for(lambda: (s3_meta(s3, bucket, "meta") or {}).get("uid") == "1234"
             and s3_meta(s3, bucket, "meta").get("gid") == "5678", 10, "chown to reach x-amz-meta-uid/gid")
    os.utime(p, (1500000000, 1500000000))
    wait_for(lambda: (s3_meta(s3, bucket, "meta") or {}).get("mtime") == "1500000000", 10,
             "utime to reach x-amz-meta-mtime")
    check_s3fs_meta(s3, bucket, "meta", stat.S_IFREG | 0o600, uid=1234, gid=5678)
    assert_object(s3, bucket, "meta", data, "bytes after chmod/chown/utime")

    def check(st, where):
        assert st.st_mode == stat.S_IFREG | 0o600, f"{where}: mode {oct(st.st_mode)}"
        assert (st.st_uid, st.st_gid) == (1234, 5678), where
        assert int(st.st_mtime) == 1500000000, f"{where}: mtime {st.st_mtime}"
        assert st.st_size == len(data), where

    check(os.stat(p), "same mount")
    m.unmount()
    m2 = mount(bucket, chunk_size="64K")  # a new, empty cache folder
    check(os.stat(m2.path / "meta"), "new cache")
    assert read_file(m2.path / "meta") == data
    m2.unmount()


def test_s3fs_metadata_put_by_boto3_is_shown(mount, s3, bucket):
    s3.put_object(Bucket=bucket, Key="m/exe", Body=b"#!/bin/sh\necho hi\n",
                  Metadata={"mode": "33261", "uid": "1234", "gid": "5678", "mtime": "1600000000"})
    s3.put_object(Bucket=bucket, Key="m/plain", Body=b"no metadata")
    m = mount(bucket)
    st = os.stat(m.path / "m" / "exe")
    assert st.st_mode == 0o100755, oct(st.st_mode)
    assert (st.st_uid, st.st_gid) == (1234, 5678)
    assert st.st_mtime == 1600000000, st.st_mtime
    assert read_file(m.path / "m" / "exe") == b"#!/bin/sh\necho hi\n"
    plain = os.stat(m.path / "m" / "plain")
    assert plain.st_mode == 0o100644 and plain.st_uid == os.getuid(), (oct(plain.st_mode), plain.st_uid)
    m.unmount()


# ---- 4. directories -------------------------------------------------------------------------

def test_mkdir_rmdir_and_not_empty(mount, s3, bucket):
    put_many(s3, bucket, {"imp/child": b"implicit dir child", "bm/": b""})
    m = mount(bucket)
    t0 = time.time()
    os.mkdir(m.path / "d1", 0o755)
    t1 = time.time()
    assert s3_body(s3, bucket, "d1/") == b"", "mkdir made no empty 'd1/' object"
    check_s3fs_meta(s3, bucket, "d1/", S_DIR_755, t0, t1)
    assert stat.S_ISDIR(os.stat(m.path / "d1").st_mode)
    assert "d1" in os.listdir(m.path)

    os.rmdir(m.path / "d1")
    assert s3_meta(s3, bucket, "d1/") is None, "rmdir left the marker"
    assert not os.path.exists(m.path / "d1")

    os.rmdir(m.path / "bm")  # a marker put with boto3
    assert s3_keys(s3, bucket, "bm") == []

    # a child put with boto3, no marker
    assert errno_of(lambda: os.rmdir(m.path / "imp")) == errno.ENOTEMPTY
    assert s3_keys(s3, bucket, "imp") == ["imp/child"]

    # the only content is a file made through the mount
    os.mkdir(m.path / "d2")
    write_file(m.path / "d2" / "f", b"child")
    assert errno_of(lambda: os.rmdir(m.path / "d2")) == errno.ENOTEMPTY
    assert s3_keys(s3, bucket, "d2/") == ["d2/", "d2/f"]
    assert read_file(m.path / "d2" / "f") == b"child"

    # nested mkdir, then removing bottom-up works
    os.makedirs(m.path / "n1" / "n2" / "n3")
    assert s3_keys(s3, bucket, "n1/") == ["n1/", "n1/n2/", "n1/n2/n3/"]
    assert errno_of(lambda: os.rmdir(m.path / "n1")) == errno.ENOTEMPTY
    os.rmdir(m.path / "n1" / "n2" / "n3")
    os.rmdir(m.path / "n1" / "n2")
    os.rmdir(m.path / "n1")
    assert s3_keys(s3, bucket, "n1") == []
    assert errno_of(lambda: os.mkdir(m.path / "d2")) == errno.EEXIST
    m.unmount()


def test_rm_r_removes_every_key_below(mount, s3, bucket):
    # boto3 keys: implicit dirs and a marker; the mount adds more below
    put_many(s3, bucket, {"tree/a": b"a", "tree/x/y/z": rand_bytes(70_000, "z"), "tree/m/": b"",
                          "tree/m/in": b"in", "treeside": b"not below tree/"})
    m = mount(bucket, chunk_size="64K")
    os.makedirs(m.path / "tree" / "made" / "deep")
    write_file(m.path / "tree" / "made" / "f", rand_bytes(130_000, "f"))
    write_file(m.path / "tree" / "made" / "deep" / "g", b"g")
    write_file(m.path / "tree" / "x" / "new", b"new")
    os.symlink("../a", m.path / "tree" / "made" / "link")
    assert len(s3_keys(s3, bucket, "tree/")) == 10
    run_ok(["rm", "-r", m.path / "tree"])
    assert s3_keys(s3, bucket, "tree/") == [], "rm -r left keys"
    assert s3_keys(s3, bucket) == ["treeside"]
    assert not os.path.lexists(m.path / "tree")
    assert os.listdir(m.path) == ["treeside"]
    m.unmount()


# ---- 5. rename --------------------------------------------------------------------------------

def test_rename_file(mount, s3, bucket, s3rver):
    s3.put_object(Bucket=bucket, Key="r/dst", Body=b"old content of dst")
    s3.put_object(Bucket=bucket, Key="r/remote", Body=rand_bytes(600_000, "remote"))
    m = mount(bucket, chunk_size="64K")
    r = m.path / "r"
    os.mkdir(r / "sub")

    a = rand_bytes(300_000, "ren-a")
    write_file(r / "a", a, mode=0o600)
    os.utime(r / "a", (1555555555, 1555555555))
    wait_for(lambda: (s3_meta(s3, bucket, "r/a") or {}).get("mtime") == "1555555555", 10, "utime")
    os.rename(r / "a", r / "sub" / "b")
    assert s3_meta(s3, bucket, "r/a") is None, "the old key is still there"
    assert_object(s3, bucket, "r/sub/b", a)
    check_s3fs_meta(s3, bucket, "r/sub/b", stat.S_IFREG | 0o600)
    assert s3_meta(s3, bucket, "r/sub/b")["mtime"] == "1555555555", "rename lost the mtime"
    assert not os.path.lexists(r / "a")
    assert read_file(r / "sub" / "b") == a
    st = os.stat(r / "sub" / "b")
    assert st.st_mode == stat.S_IFREG | 0o600 and int(st.st_mtime) == 1555555555

    # onto an existing file: replaced
    src = rand_bytes(70_000, "ren-src")
    write_file(r / "src", src)
    os.rename(r / "src", r / "dst")
    assert s3_meta(s3, bucket, "r/src") is None
    assert_object(s3, bucket, "r/dst", src)
    assert read_file(r / "dst") == src
    assert sorted(os.listdir(r)) == ["dst", "remote", "sub"]

    # a file written and closed, renamed at once (3 MiB: several chunks)
    fresh = rand_bytes(3 * MiB + 1, "ren-fresh")
    with open(r / "fresh", "wb") as f:
        f.write(fresh)
    os.rename(r / "fresh", r / "fresh2")
    assert s3_meta(s3, bucket, "r/fresh") is None
    assert_object(s3, bucket, "r/fresh2", fresh)

    # an object never read through the mount
    remote = s3_body(s3, bucket, "r/remote")
    os.rename(r / "remote", r / "remote2")
    assert s3_meta(s3, bucket, "r/remote") is None
    assert_object(s3, bucket, "r/remote2", remote)
    assert read_file(r / "remote2") == remote

    # rsync's way: a hidden temporary, then a rename over the name
    tmp = r / ".name.Xa1b2C"
    v1 = rand_bytes(90_000, "rsync-1")
    write_file(tmp, v1)
    os.rename(tmp, r / "name")
    v2 = rand_bytes(50_000, "rsync-2")
    write_file(tmp, v2)
    os.rename(tmp, r / "name")
    assert_object(s3, bucket, "r/name", v2)
    assert read_file(r / "name") == v2
    assert s3_keys(s3, bucket, "r/") == ["r/dst", "r/fresh2", "r/name", "r/remote2", "r/sub/", "r/sub/b"]
    m.unmount()


def test_rename_directory_tree(mount, s3, bucket):
    rng = random.Random(5)
    remote = {f"src/{p}": rand_bytes(rng.randrange(0, 150_000), p) for p in
              ("r1", "deep/r2", "deep/deeper/r3", "marked/r4")}
    remote["src/marked/"] = b""
    remote["src/emptymarker/"] = b""
    put_many(s3, bucket, remote)
    put_many(s3, bucket, {"full/keep": b"keep", "srcx": b"sibling"})
    m = mount(bucket, chunk_size="64K")
    src = m.path / "src"
    made = {"src/w1": rand_bytes(200_000, "w1"), "src/deep/w2": b"w2", "src/new/sub/w3": rand_bytes(65_536, "w3")}
    os.makedirs(src / "new" / "sub")
    for k, v in made.items():
        write_file(m.path / k, v)
    os.symlink("../r1", src / "deep" / "ln")
    before = s3_keys(s3, bucket, "src/")
    assert len(before) == 12, before

    # onto a non-empty directory: refused, nothing moved
    assert errno_of(lambda: os.rename(src, m.path / "full")) == errno.ENOTEMPTY
    assert s3_keys(s3, bucket, "src/") == before
    assert s3_keys(s3, bucket, "full/") == ["full/keep"]

    os.rename(src, m.path / "dst")
    assert s3_keys(s3, bucket, "src/") == [], "keys left under the old prefix"
    after = s3_keys(s3, bucket, "dst/")
    assert after == sorted("dst/" + k[4:] for k in before)
    for k, v in {**remote, **made}.items():
        assert_object(s3, bucket, "dst/" + k[4:], v)
        if not k.endswith("/"):
            assert read_file(m.path / "dst" / k[4:]) == v, k
    assert s3_body(s3, bucket, "dst/deep/ln") == b"../r1"
    assert os.readlink(m.path / "dst" / "deep" / "ln") == "../r1"
    assert not os.path.lexists(src)
    assert sorted(os.listdir(m.path)) == ["dst", "full", "srcx"]
    assert s3_body(s3, bucket, "srcx") == b"sibling"
    m.unmount()


# ---- 6. symlinks ---------------------------------------------------------------------------------

def test_symlink_stored_as_s3fs_does(mount, s3, bucket):
    m = mount(bucket)
    os.symlink("target/path", m.path / "l")
    assert s3_body(s3, bucket, "l") == b"target/path"
    md = s3_meta(s3, bucket, "l")
    assert md.get("mode") == str(S_LNK_777), md
    assert os.readlink(m.path / "l") == "target/path"
    assert stat.S_ISLNK(os.lstat(m.path / "l").st_mode)
    assert os.lstat(m.path / "l").st_size == len("target/path")
    assert errno_of(lambda: os.symlink("other", m.path / "l")) == errno.EEXIST
    m.unmount()

    m2 = mount(bucket)  # fresh cache
    assert os.readlink(m2.path / "l") == "target/path"
    m2.unmount()


def test_symlink_put_by_boto3_is_a_symlink(mount, s3, bucket):
    s3.put_object(Bucket=bucket, Key="links/s", Body=b"../some/target", Metadata={"mode": "41471"})
    s3.put_object(Bucket=bucket, Key="links/f", Body=b"a file")
    m = mount(bucket)
    assert os.readlink(m.path / "links" / "s") == "../some/target"
    assert stat.S_ISLNK(os.lstat(m.path / "links" / "s").st_mode)
    m.unmount()

    # Fresh cache, the name first, then the listing: the attributes learnt
    # by the lookup's HEAD are kept.  (A listing alone does not HEAD its
    # files - `ls -l` must cost no request per entry - so a link that was
    # only ever listed shows as a file until it is looked up: README.)
    m2 = mount(bucket)
    assert stat.S_ISLNK(os.lstat(m2.path / "links" / "s").st_mode)
    assert sorted(os.listdir(m2.path / "links")) == ["f", "s"]
    assert os.readlink(m2.path / "links" / "s") == "../some/target"
    assert stat.S_ISREG(os.lstat(m2.path / "links" / "f").st_mode)
    out = run_ok(["ls", "-l", m2.path / "links"]).decode()
    assert "s -> ../some/target" in out, out
    m2.unmount()


# ---- 7. read-after-write from the cache -----------------------------------------------------------

def ls_size(directory, name):
    out = run_ok(["ls", "-ln", directory]).decode()
    for line in out.splitlines():
        fields = line.split()
        if len(fields) >= 9 and fields[-1] == name:
            return int(fields[4])
    raise AssertionError(f"{name} not in ls -ln output:\n{out}")


def test_read_after_write_is_served_from_cache(mount, s3, bucket, s3rver):
    s3.put_object(Bucket=bucket, Key="raw/old", Body=b"ten bytes!")
    m = mount(bucket, chunk_size="256K", meta_ttl="1h")
    d = m.path / "raw"
    assert sorted(os.listdir(d)) == ["old"]  # the listing is now cached for an hour
    assert os.stat(d / "old").st_size == 10

    new = rand_bytes(MiB + 12345, "raw-new")
    old2 = rand_bytes(700_000, "raw-old2")
    write_file(d / "new", new)
    write_file(d / "old", old2)
    assert_object(s3, bucket, "raw/new", new)
    assert_object(s3, bucket, "raw/old", old2)

    s3rver.clear_log()
    assert sorted(os.listdir(d)) == ["new", "old"]
    assert os.stat(d / "new").st_size == len(new)
    assert os.stat(d / "old").st_size == len(old2)
    assert {e.name: e.stat().st_size for e in os.scandir(d)} == {"new": len(new), "old": len(old2)}
    assert ls_size(d, "new") == len(new) and ls_size(d, "old") == len(old2)
    assert sha(read_file(d / "new")) == sha(new)
    assert sha(read_file(d / "old")) == sha(old2)
    assert object_requests(s3rver, bucket, "GET") == [], "reading back what was just written fetched it"
    m.unmount()

    m.remount()
    s3rver.clear_log()
    assert sha(read_file(d / "new")) == sha(new)
    assert sha(read_file(d / "old")) == sha(old2)
    assert object_requests(s3rver, bucket, "GET") == [], "after a remount, written data was fetched again"
    m.unmount()


# ---- 8. random operations against a local model ------------------------------------------------------

RAND_STEPS = 3000
RAND_MAX = 3 * MiB
EDGE = 64 * KiB


def test_random_operations_match_a_local_file(mount, s3, bucket, tmp_path):
    rng = random.Random(1234)
    m = mount(bucket, chunk_size="64K")
    mp, lp = m.path / "rand", tmp_path / "rand.local"
    flags = os.O_RDWR | os.O_CREAT
    fds = {}

    def reopen(trunc=False):
        for fd in fds.values():
            os.close(fd)
        f = flags | (os.O_TRUNC if trunc else 0)
        fds.update(m=os.open(mp, f, 0o644), l=os.open(lp, f, 0o644),
                   ma=os.open(mp, os.O_WRONLY | os.O_APPEND), la=os.open(lp, os.O_WRONLY | os.O_APPEND))

    def offset(limit):
        if rng.random() < 0.4:  # at a chunk edge
            return max(0, min(limit, rng.randrange(0, limit // EDGE + 2) * EDGE + rng.choice([-1, 0, 1])))
        return rng.randrange(0, limit + 1)

    reopen(trunc=True)
    counts = {}
    try:
        for step in range(RAND_STEPS):
            size = os.fstat(fds["l"]).st_size
            r = rng.random()
            if r < 0.50:
                off = offset(min(size + 300 * KiB, RAND_MAX))
                n = rng.choice([1, rng.randrange(1, 4096), rng.randrange(1, 200 * KiB)])
                n = max(1, min(n, RAND_MAX + 200 * KiB - off))
                data = rng.randbytes(n)
                op = ("pwrite", off, n)
                assert os.pwrite(fds["m"], data, off) == n, op
                os.pwrite(fds["l"], data, off)
            elif r < 0.65:
                new = offset(size) if rng.random() < 0.5 else offset(RAND_MAX)
                op = ("ftruncate", new)
                os.ftruncate(fds["m"], new)
                os.ftruncate(fds["l"], new)
            elif r < 0.80:
                n = rng.randrange(1, 100 * KiB) if size < RAND_MAX else 0
                data = rng.randbytes(n)
                op = ("append", n)
                assert os.write(fds["ma"], data) == n, op
                os.write(fds["la"], data)
            elif r < 0.83:
                op = ("reopen",)
                reopen()
            else:
                off, n = offset(size + 1000), rng.randrange(1, 300 * KiB)
                op = ("pread", off, n)
                assert os.pread(fds["m"], n, off) == os.pread(fds["l"], n, off), (step, op)
            counts[op[0]] = counts.get(op[0], 0) + 1
            want = os.pread(fds["l"], RAND_MAX + 400 * KiB, 0)
            got = os.pread(fds["m"], RAND_MAX + 400 * KiB, 0)
            if got != want:
                pytest.fail(f"step {step} {op}: the mount shows {len(got)} bytes, the local file {len(want)}; "
                            f"first difference at {first_diff(got, want)}")
            assert os.fstat(fds["m"]).st_size == len(want), (step, op)
    finally:
        for fd in fds.values():
            os.close(fd)
    assert min(counts.values()) >= 20 and len(counts) == 5, counts
    want = lp.read_bytes()
    assert len(want) > 100 * KiB, "the file ended nearly empty: pick another seed"
    assert_object(s3, bucket, "rand", want, "after the random operations")
    assert read_file(mp) == want
    m.unmount()
    m.remount()
    assert read_file(mp) == want, "after a remount"
    assert_object(s3, bucket, "rand", want, "after a remount")
    m.unmount()


# ---- 9. cp -r in and out --------------------------------------------------------------------------------

def test_cp_r_tree_in_and_out(mount, s3, bucket, tmp_path):
    rng = random.Random(99)
    src = tmp_path / "tree"
    dirs = [""]
    for i in range(30):
        parent = rng.choice(dirs)
        dirs.append(f"{parent}/d{i}" if parent else f"d{i}")
    files = {}
    for i in range(500):
        d = rng.choice(dirs)
        rel = f"{d}/f{i:03d}" if d else f"f{i:03d}"
        size = rng.choice([0, 1, rng.randrange(0, 64 * KiB + 1), rng.randrange(0, 64 * KiB + 1)])
        files[rel] = rng.randbytes(size)
    for d in dirs:
        (src / d).mkdir(parents=True, exist_ok=True)
    for rel, data in files.items():
        (src / rel).write_bytes(data)

    m = mount(bucket, chunk_size="64K")
    run_ok(["cp", "-r", src, m.path / "tree"])
    out = tmp_path / "back"
    run_ok(["cp", "-r", m.path / "tree", out])
    cmp = filecmp.dircmp(src, out)

    def same(c):
        assert not c.left_only and not c.right_only and not c.diff_files and not c.funny_files, (
            c.left, c.left_only, c.right_only, c.diff_files)
        for sub in c.subdirs.values():
            same(sub)

    same(cmp)
    for rel, data in files.items():  # filecmp compares sizes and bytes (shallow=False for equal stats)
        assert (out / rel).read_bytes() == data, rel

    keys = s3_keys(s3, bucket, "tree/")
    file_keys = [k for k in keys if not k.endswith("/")]
    assert file_keys == sorted(f"tree/{rel}" for rel in files)
    assert [k for k in keys if k.endswith("/")] == sorted(f"tree/{d}/" if d else "tree/" for d in dirs)

    def digest(rel):
        return rel, hashlib.md5(s3_body(s3, bucket, f"tree/{rel}")).hexdigest()

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        got = dict(pool.map(digest, files))
    bad = [rel for rel, data in files.items() if got[rel] != hashlib.md5(data).hexdigest()]
    assert not bad, f"{len(bad)} objects differ: {bad[:10]}"
    m.unmount()


# ---- 13. -o ro -------------------------------------------------------------------------------------------

def test_ro_mount_refuses_every_write(mount, s3, bucket, s3rver):
    put_many(s3, bucket, {"w/existing": b"hello", "w/emptydir/": b"", "w/dir/x": b"x"})
    s3rver.clear_log()
    m = mount(bucket, ro=True)
    w = m.path / "w"
    cases = {
        "open w": lambda: open(w / "existing", "wb"),
        "open a": lambda: open(w / "existing", "ab"),
        "open r+": lambda: open(w / "existing", "r+b"),
        "create": lambda: open(w / "new", "wb"),
        "O_CREAT": lambda: os.open(w / "new2", os.O_CREAT | os.O_WRONLY, 0o644),
        "truncate": lambda: os.truncate(w / "existing", 0),
        "mkdir": lambda: os.mkdir(w / "newdir"),
        "rmdir": lambda: os.rmdir(w / "emptydir"),
        "unlink": lambda: os.unlink(w / "existing"),
        "rename": lambda: os.rename(w / "existing", w / "renamed"),
        "rename dir": lambda: os.rename(w / "dir", w / "dir2"),
        "chmod": lambda: os.chmod(w / "existing", 0o600),
        "chown": lambda: os.chown(w / "existing", 1234, 5678),
        "utime": lambda: os.utime(w / "existing", (1, 1)),
        "utime now": lambda: os.utime(w / "existing"),
        "symlink": lambda: os.symlink("existing", w / "link"),
    }
    wrong = {what: errno.errorcode.get(errno_of(fn), "?") for what, fn in cases.items()}
    wrong = {k: v for k, v in wrong.items() if v != "EROFS"}
    assert not wrong, f"not refused with EROFS: {wrong}"
    assert sorted(os.listdir(w)) == ["dir", "emptydir", "existing"]
    assert read_file(w / "existing") == b"hello"
    m.unmount()
    assert writes_of(s3rver, bucket) == [], "a read-only mount sent writes"
    assert s3_keys(s3, bucket) == ["w/dir/x", "w/emptydir/", "w/existing"]
    assert s3_body(s3, bucket, "w/existing") == b"hello"


# ---- 14. in-place change of a large object -----------------------------------------------------------------

class _CountingSocket:
    def __init__(self, sock, rec):
        self._sock, self._rec = sock, rec

    def sendall(self, data):
        self._rec["sent"] += len(data)
        return self._sock.sendall(data)

    def __getattr__(self, name):
        return getattr(self._sock, name)


class RecordingProxy(FaultProxy):
    """A FaultProxy that also records every request's headers and the bytes
    of each answer: what s3rver's request log cannot show (Range,
    x-amz-copy-source, x-amz-copy-source-range, Content-Length)."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.records = []

    def _forward(self, client, rfile, method, request, fault):
        head = request.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
        headers = {}
        for line in head[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        rec = {"method": method, "target": head[0].split(" ")[1], "headers": headers, "sent": 0}
        with self._lock:
            self.records.append(rec)
        return super()._forward(_CountingSocket(client, rec), rfile, method, request, fault)


@pytest.fixture
def recording_proxy(s3rver):
    p = RecordingProxy("127.0.0.1", s3rver.port)
    p.start()
    yield p
    p.stop()


def test_in_place_change_reuses_unchanged_ranges(mount, s3, bucket, recording_proxy):
    big = rand_bytes(24 * MiB, "inplace")
    s3.put_object(Bucket=bucket, Key="big", Body=big)
    m = mount(bucket, endpoint=recording_proxy.endpoint, chunk_size="1M", part_size="5M",
              multipart_threshold="8M")
    recording_proxy.records.clear()
    patch = rand_bytes(100, "patch")
    with open(m.path / "big", "r+b") as f:
        f.seek(12 * MiB)
        f.write(patch)
    want = big[:12 * MiB] + patch + big[12 * MiB + 100:]
    assert_object(s3, bucket, "big", want)

    recs = [r for r in recording_proxy.records if r["target"].split("?")[0] == f"/{bucket}/big"]
    got_bytes = sum(r["sent"] for r in recs if r["method"] == "GET")
    copies = [r for r in recs if r["method"] == "PUT" and "partNumber=" in r["target"]
              and "x-amz-copy-source" in r["headers"]]
    uploaded = sum(int(r["headers"].get("content-length", 0)) for r in recs
                   if r["method"] == "PUT" and "x-amz-copy-source" not in r["headers"])
    summary = [(r["method"], r["target"][:80], r["headers"].get("range"), r["headers"].get("x-amz-copy-source-range"),
                r["headers"].get("content-length")) for r in recs]
    assert got_bytes <= 8 * MiB, f"{got_bytes} bytes fetched to change 100 bytes of 24 MiB: {summary}"
    assert copies, f"no UploadPartCopy (PUT ?partNumber with x-amz-copy-source): {summary}"
    assert uploaded <= 8 * MiB, f"{uploaded} bytes uploaded to change 100 bytes: {summary}"
    m.unmount()


# ---- 15. unlink --------------------------------------------------------------------------------------------

def test_unlink(mount, s3, bucket):
    s3.put_object(Bucket=bucket, Key="u/remote", Body=b"never read")
    m = mount(bucket, chunk_size="64K")
    u = m.path / "u"
    os.mkdir(u / "sub")
    write_file(u / "mine", rand_bytes(100_000, "mine"))
    assert s3_meta(s3, bucket, "u/mine") is not None
    os.unlink(u / "mine")
    assert s3_meta(s3, bucket, "u/mine") is None, "unlink left the key"
    assert errno_of(lambda: os.stat(u / "mine")) == errno.ENOENT
    os.unlink(u / "remote")
    assert s3_meta(s3, bucket, "u/remote") is None
    assert errno_of(lambda: os.stat(u / "remote")) == errno.ENOENT
    assert errno_of(lambda: os.unlink(u / "remote")) == errno.ENOENT

    # unlinked while open for writing: nothing is uploaded at close
    fd = os.open(u / "open", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, rand_bytes(200_000, "open-1"))
        os.unlink(u / "open")
        assert errno_of(lambda: os.stat(u / "open")) == errno.ENOENT
        os.write(fd, rand_bytes(1000, "open-2"))
    finally:
        os.close(fd)
    assert s3_meta(s3, bucket, "u/open") is None, "an unlinked file was uploaded at close"
    assert os.listdir(u) == ["sub"]
    m.unmount()  # whatever was pending is done by now
    assert s3_keys(s3, bucket, "u/") == ["u/sub/"], "an unlinked file reached the bucket after close"


# ---- 20. the I/O size tools pick -----------------------------------------------------------------

def test_preferred_io_size_is_one_mib(mount, s3, bucket):
    """st_blksize is what cp, Python and most tools size their writes by:
    1 MiB, the largest request FUSE takes, not 4 KiB pages (128 KiB for cp)."""
    m = mount(bucket)
    write_file(m.path / "f", rand_bytes(3 * MiB, "blksize"))
    assert os.stat(m.path / "f").st_blksize == MiB
    assert os.stat(m.path).st_blksize == MiB
    m.unmount()
