"""Reading a bucket through a real s3cachefs mount: tree, attributes, bytes.

Every result is checked against boto3 (an independent client) and the
server's request log. The core read tests run under two option sets
(conftest.READ_OPTION_SETS): "raw" (defaults) and "zlib" (compress=zlib).
"""

import concurrent.futures
import errno
import os
import random
import stat
import subprocess
import threading
from pathlib import Path

import pytest

from conftest import new_bucket_name
from fakes3 import FakeS3
from mount import (
    MiB,
    list_requests,
    mixed_bytes,
    object_requests,
    put_many,
    rand_bytes,
    read_file,
    sha,
)

CHUNK = MiB


def walk_tree(root):
    """(files {relpath: os.stat_result}, dirs {relpath}) under a mountpoint."""
    files, dirs = {}, set()
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        for d in dirnames:
            dirs.add(os.path.normpath(os.path.join(rel, d)))
        for f in filenames:
            files[os.path.normpath(os.path.join(rel, f))] = os.lstat(os.path.join(dirpath, f))
    return files, dirs


def bucket_tree(s3, bucket, prefix=""):
    """What the mount should show, from boto3: ({relpath: (size, mtime)}, dirs)."""
    files, dirs = {}, set()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for o in page.get("Contents", []):
            key = o["Key"][len(prefix):]
            parts = key.rstrip("/").split("/")
            for i in range(1, len(parts)):
                dirs.add("/".join(parts[:i]))
            if key.endswith("/"):
                dirs.add(key.rstrip("/"))  # a marker object
            else:
                files[key] = (o["Size"], o["LastModified"].timestamp())
    return files, dirs


def run_ok(args, **kw):
    p = subprocess.run([str(a) for a in args], capture_output=True, timeout=120, **kw)
    assert p.returncode == 0, f"{args[0]} failed ({p.returncode}): {p.stderr.decode(errors='replace')}"
    return p.stdout


# ---- tree and attributes ---------------------------------------------------------

def test_tree_and_attributes_match_bucket(mount, s3, bucket, s3rver):
    items = {}
    # alpha/ and delta/ have marker objects too; beta/ and beta/gamma/ exist
    # only as common prefixes; marked/ only as a marker.
    for d in ("alpha", "beta/gamma", "delta"):
        for i in range(16):
            key = f"{d}/f{i:02d}.dat"
            items[key] = rand_bytes(i * 1037 + 1, key)
    items["top.txt"] = b"top level\n"
    items["empty"] = b""
    items["alpha/"] = b""
    items["delta/"] = b""
    items["marked/"] = b""
    put_many(s3, bucket, items)
    want_files, want_dirs = bucket_tree(s3, bucket)
    assert len(want_files) == 50
    assert want_dirs == {"alpha", "beta", "beta/gamma", "delta", "marked"}

    m = mount(bucket)
    s3rver.clear_log()
    out = run_ok(["ls", "-lR", m.path]).decode()
    for name in ("f00.dat", "f15.dat", "top.txt", "marked", "gamma"):
        assert name in out
    assert object_requests(s3rver, bucket, "HEAD") == [], "ls -lR sent HEAD requests"
    assert object_requests(s3rver, bucket, "GET") == [], "ls -lR read object data"
    lists = list_requests(s3rver, bucket)
    assert lists, "ls -lR of a cold mount sent no LIST"
    # one LIST per directory (one page each), not one per entry
    assert len(lists) <= 2 * (len(want_dirs) + 1), f"{len(lists)} LIST requests: {lists}"

    files, dirs = walk_tree(m.path)
    assert dirs == want_dirs
    assert set(files) == set(want_files)
    for rel, st in files.items():
        size, mtime = want_files[rel]
        assert stat.S_ISREG(st.st_mode), rel
        assert st.st_size == size, rel
        assert abs(st.st_mtime - mtime) <= 2, f"{rel}: mtime {st.st_mtime} vs LastModified {mtime}"
    for rel in dirs:
        assert stat.S_ISDIR(os.stat(m.path / rel).st_mode), rel
    assert object_requests(s3rver, bucket, "HEAD") == [], "stat of listed entries sent HEAD requests"
    assert read_file(m.path / "alpha" / "f03.dat") == items["alpha/f03.dat"]
    assert read_file(m.path / "empty") == b""
    m.unmount()


# ---- byte-exact reads of edge sizes -------------------------------------------------

SIZES = {
    "size0": 0,
    "size1": 1,
    "chunk-1": CHUNK - 1,
    "chunk": CHUNK,
    "chunk+1": CHUNK + 1,
    "big": 50 * MiB,
}


@pytest.fixture(scope="module")
def sized(s3):
    """A bucket holding one random file of each edge size (for chunk_size=1M)."""
    name = new_bucket_name()
    s3.create_bucket(Bucket=name)
    data = {k: rand_bytes(n, f"sized-{k}") for k, n in SIZES.items()}
    put_many(s3, name, {f"sizes/{k}": v for k, v in data.items()}, threads=6)
    return name, data


def test_read_sizes_with_cat(mount, sized, read_opts, tmp_path, s3rver):
    bucket, data = sized
    m = mount(bucket, chunk_size="1M", **read_opts)
    s3rver.clear_log()
    for name, want in data.items():
        src = m.path / "sizes" / name
        assert os.stat(src).st_size == len(want), name
        out = tmp_path / f"cat-{name}"
        with open(out, "wb") as f:
            p = subprocess.run(["cat", str(src)], stdout=f, stderr=subprocess.PIPE, timeout=120)
        assert p.returncode == 0, f"cat {name}: {p.stderr!r}"
        assert sha(out.read_bytes()) == sha(want), f"cat {name}: wrong bytes"
    # each chunk of each file was fetched at most once or twice, not per read
    gets = object_requests(s3rver, bucket, "GET")
    assert len(gets) <= 2 * (50 + 5), f"{len(gets)} GETs for 55 chunks"
    m.unmount()


# (file, skip, count): bs=1 cases first, then iflag=skip_bytes,count_bytes
DD_SMALL = [
    ("size1", 0, 1),
    ("size1", 1, 4),          # at EOF: nothing
    ("size0", 0, 3),
    ("chunk-1", CHUNK - 2, 10),  # runs past EOF
    ("chunk", CHUNK - 3, 3),
    ("chunk+1", CHUNK - 3, 7),   # across the boundary to the last byte
    ("big", 5 * CHUNK + 1, 5),
    ("big", 50 * MiB - 2, 9),
]
DD_LARGE = [
    ("big", 3 * CHUNK - 12345, 2 * CHUNK + 777),
    ("big", 17 * CHUNK + 13, 9 * CHUNK + 5),
    ("big", 50 * MiB - 1000, 5000),
    ("chunk", 1, CHUNK),
    ("chunk+1", 4097, CHUNK),
    ("big", 33 * CHUNK + 65535, 1),
]


def test_read_dd_odd_offsets(mount, sized, read_opts, tmp_path):
    bucket, data = sized
    m = mount(bucket, chunk_size="1M", **read_opts)
    out = tmp_path / "dd.out"
    for name, skip, count in DD_SMALL:
        run_ok(["dd", f"if={m.path / 'sizes' / name}", f"of={out}", "bs=1", f"skip={skip}",
                f"count={count}", "status=none"])
        assert out.read_bytes() == data[name][skip:skip + count], (name, skip, count)
    for name, skip, count in DD_LARGE:
        run_ok(["dd", f"if={m.path / 'sizes' / name}", f"of={out}", "bs=65536", "iflag=skip_bytes,count_bytes",
                f"skip={skip}", f"count={count}", "status=none"])
        assert sha(out.read_bytes()) == sha(data[name][skip:skip + count]), (name, skip, count)
    m.unmount()


def test_read_random_offsets(mount, sized, read_opts):
    bucket, data = sized
    m = mount(bucket, chunk_size="1M", **read_opts)
    rng = random.Random(42)
    names = list(data)
    fds = {n: os.open(m.path / "sizes" / n, os.O_RDONLY) for n in names}
    try:
        for _ in range(300):
            name = rng.choice(names)
            size = len(data[name])
            off = rng.randrange(size + 10) if rng.random() < 0.8 else rng.choice(
                [0, max(0, size - 1), size, CHUNK - 1, CHUNK, 7 * CHUNK - 1])
            n = rng.choice([1, 2, 4095, 4096, 65537, rng.randrange(1, 3 * CHUNK)])
            got = os.pread(fds[name], n, off)
            assert got == data[name][off:off + n], f"{name} pread({n}, {off})"
    finally:
        for fd in fds.values():
            os.close(fd)
    m.unmount()


def test_read_through_mmap(mount, sized, read_opts):
    import mmap

    bucket, data = sized
    m = mount(bucket, chunk_size="1M", **read_opts)
    rng = random.Random(7)
    for name, want in data.items():
        if not want:
            continue  # a zero-length file cannot be mapped
        with open(m.path / "sizes" / name, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            assert len(mm) == len(want)
            for _ in range(20):  # random pages first, cold
                off = rng.randrange(len(want))
                n = rng.randrange(1, 200_000)
                assert mm[off:off + n] == want[off:off + n], f"{name} mmap[{off}:{off + n}]"
            assert sha(mm[:]) == sha(want), f"{name}: mmap bytes differ"
    m.unmount()


# ---- concurrency -------------------------------------------------------------------

def test_32_concurrent_readers(mount, s3, bucket, read_opts):
    files = {f"conc/f{i}": (mixed_bytes if i % 2 else rand_bytes)(6 * MiB + i * 12345, f"conc{i}")
             for i in range(5)}
    put_many(s3, bucket, files)
    m = mount(bucket, chunk_size="1M", **read_opts)
    keys = sorted(files)
    start = threading.Barrier(32)

    def reader(t):
        rng = random.Random(t)
        start.wait(timeout=60)
        bad = []
        fds = {}
        try:
            for i in range(25):
                key = rng.choice(keys)
                if key not in fds:
                    fds[key] = os.open(m.path / key, os.O_RDONLY)
                want = files[key]
                off = rng.randrange(len(want))
                n = rng.randrange(1, 600_000)
                got = os.pread(fds[key], n, off)
                if got != want[off:off + n]:
                    bad.append((key, off, n, len(got)))
            if t % 8 == 0:  # some read a whole file sequentially
                key = keys[t // 8 % len(keys)]
                if sha(read_file(m.path / key)) != sha(files[key]):
                    bad.append((key, "whole"))
        finally:
            for fd in fds.values():
                os.close(fd)
        return bad

    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        results = list(pool.map(reader, range(32), timeout=240))
    bad = [b for r in results for b in r]
    assert not bad, f"wrong bytes: {bad[:10]}"
    m.unmount()


# ---- writes are refused ---------------------------------------------------------------

def test_ro_mount_refuses_writes_with_erofs(mount, s3, bucket):
    put_many(s3, bucket, {"w/existing": b"hello", "w/emptydir/": b"", "w/dir/x": b"x"})
    m = mount(bucket, ro=True)
    w = m.path / "w"

    def erofs(what, fn):
        with pytest.raises(OSError) as e:
            fn()
        assert e.value.errno == errno.EROFS, f"{what}: {e.value!r}"

    erofs("open w", lambda: open(w / "existing", "wb"))
    erofs("open a", lambda: open(w / "existing", "ab"))
    erofs("open r+", lambda: open(w / "existing", "r+b"))
    erofs("create", lambda: open(w / "new", "wb"))
    erofs("O_CREAT", lambda: os.open(w / "new2", os.O_CREAT | os.O_WRONLY, 0o644))
    erofs("mkdir", lambda: os.mkdir(w / "newdir"))
    erofs("rmdir", lambda: os.rmdir(w / "emptydir"))
    erofs("remove", lambda: os.remove(w / "existing"))
    erofs("rename", lambda: os.rename(w / "existing", w / "renamed"))
    erofs("truncate", lambda: os.truncate(w / "existing", 0))
    erofs("chmod", lambda: os.chmod(w / "existing", 0o600))
    erofs("symlink", lambda: os.symlink("existing", w / "link"))
    p = subprocess.run(["touch", str(w / "touched")], capture_output=True, timeout=30)
    assert p.returncode != 0 and b"Read-only file system" in p.stderr, p.stderr

    assert sorted(os.listdir(w)) == ["dir", "emptydir", "existing"]
    assert read_file(w / "existing") == b"hello"
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"])
    assert keys == ["w/dir/x", "w/emptydir/", "w/existing"]
    assert s3.get_object(Bucket=bucket, Key="w/existing")["Body"].read() == b"hello"
    m.unmount()


# ---- keys that cannot be file names -------------------------------------------------

L255 = "M" * 255
L256 = "N" * 256
D300 = "D" * 300

# Every key that cannot be a file name: an empty segment ('//', a leading
# '/'), a '.' or '..' segment, a segment over 255 bytes; and 'both', which
# is an object and a prefix at once (the directory is shown).
ODD_KEYS = {
    "ok": b"plain",
    "both": b"object named both",
    "both/inner": b"inside both",
    "weird//double": b"empty segment",
    "weird/fine": b"fine",
    "/lead": b"leading slash",
    "x/./y": b"dot",
    "x/../z": b"dotdot",
    "x/.": b"dot leaf",
    "x/..": b"dotdot leaf",
    "x/ok": b"x ok",
    ".": b"root dot",
    "..": b"root dotdot",
    "./hidden": b"under dot",
    f"long/{L255}": b"255 bytes is allowed",
    f"long/{L256}": b"256 bytes is not",
    f"{D300}/f": b"under a 300-byte directory",
}

# What the README's rule shows of ODD_KEYS: relpath -> bytes, and the dirs.
ODD_FILES = {
    "ok": b"plain",
    "both/inner": b"inside both",
    "weird/fine": b"fine",
    "x/ok": b"x ok",
    f"long/{L255}": b"255 bytes is allowed",
}
ODD_DIRS = {"both", "weird", "x", "long"}
ODD_ABSENT = ["weird/double", "x/y", "z", "x/z", "lead", "hidden", "y", f"long/{L256}"]


def check_odd_tree(m, want_files, want_dirs):
    files, dirs = walk_tree(m.path)
    assert dirs == want_dirs
    assert set(files) == set(want_files)
    for rel, data in want_files.items():
        assert read_file(m.path / rel) == data, rel
    assert sorted(os.listdir(m.path)) == sorted({p.split("/")[0] for p in want_files} | {
        d.split("/")[0] for d in want_dirs})
    found = run_ok(["find", m.path]).decode("utf-8", "surrogateescape").splitlines()
    rels = {os.path.relpath(p, m.path) for p in found} - {"."}
    assert rels == set(want_files) | want_dirs
    run_ok(["ls", "-lR", m.path])
    with pytest.raises(IsADirectoryError):
        open(m.path / "both", "rb")
    for rel in ODD_ABSENT:
        assert not os.path.lexists(m.path / rel), f"{rel} should not exist"


def test_name_rules_on_keys_s3rver_cannot_hold(mount):
    fake = FakeS3("odd-keys", ODD_KEYS).start()
    try:
        m = mount("odd-keys", endpoint=fake.endpoint)
        check_odd_tree(m, ODD_FILES, ODD_DIRS)
        assert m.alive()
        m.unmount()
    finally:
        fake.stop()


def test_name_rules_on_s3rver(mount, s3, bucket):
    items = {k: v for k, v in ODD_KEYS.items() if "//" not in k and not k.startswith("/")
             and "." not in k.split("/")[0] and "/./" not in k and "/../" not in k
             and not k.endswith(("/.", "/.."))}
    assert set(items) == {"ok", "both", "both/inner", "weird/fine", "x/ok", f"long/{L255}", f"long/{L256}",
                          f"{D300}/f"}
    put_many(s3, bucket, items)
    got = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]}
    assert got == set(items), "s3rver did not store the keys as given"
    m = mount(bucket)
    check_odd_tree(m, ODD_FILES, ODD_DIRS)
    assert m.alive()
    m.unmount()


# ---- prefix mounts -------------------------------------------------------------------

def test_prefix_mount_shows_only_the_prefix(mount, s3, bucket):
    items = {
        "sub/a.txt": b"a",
        "sub/deep/b.txt": b"bb",
        "sub/deep/more/c": rand_bytes(3 * MiB + 5, "c"),
        "sub/marker/": b"",
        "subway/x": b"not under sub/",
        "other/c": b"other",
        "top": b"top",
    }
    put_many(s3, bucket, items)
    m = mount(bucket, prefix="sub", chunk_size="1M")
    files, dirs = walk_tree(m.path)
    assert dirs == {"deep", "deep/more", "marker"}
    assert set(files) == {"a.txt", "deep/b.txt", "deep/more/c"}
    for rel in files:
        assert read_file(m.path / rel) == items["sub/" + rel], rel
        assert files[rel].st_size == len(items["sub/" + rel])
    assert not (m.path / "sub").exists() and not (m.path / "x").exists()
    m.unmount()


def test_unusual_but_valid_names(mount, s3, bucket):
    """Spaces, '+', '%', unicode and shell characters are plain file names."""
    keys = ["sp ace", "plus+sign", "pct%41", "ünïcødé/日本語", "q?x#y", "semi;colon,comma@at$!*'()", "-dash"]
    items = {k: rand_bytes(100 + i, k) for i, k in enumerate(keys)}
    put_many(s3, bucket, items)
    m = mount(bucket)
    files, dirs = walk_tree(m.path)
    assert set(files) == set(keys)
    assert dirs == {"ünïcødé"}
    for k, v in items.items():
        assert read_file(m.path / k) == v, k
    assert Path(m.path / "pct%41").stat().st_size == len(items["pct%41"])
    m.unmount()
