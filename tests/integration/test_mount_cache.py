"""The chunk cache behind a real mount: reuse across remounts, the size cap,
corrupt and missing chunk files, crashes, compression, and what a reader
sees when an object changes behind the mount.

Request counts come from the server's log (mount.object_requests /
list_requests); bytes are compared with what boto3 wrote.
"""

import errno
import os
import re
import subprocess
import threading
import time

import pytest

from mount import (
    MiB,
    chunk_files,
    disk_usage,
    list_requests,
    mixed_bytes,
    object_requests,
    put_many,
    rand_bytes,
    read_file,
    sha,
    warn_lines,
)
from conftest import wait_for

CHUNK_NAME_RE = re.compile(r"^[0-9a-f]{64}$")


def sample_tree():
    return {
        "r/a": mixed_bytes(3 * MiB, "a"),
        "r/b": rand_bytes(MiB + 17, "b"),
        "r/sub/c": mixed_bytes(5 * MiB // 2, "c"),
        "r/sub/d": b"ten bytes!",
        "r/e": b"",
        "r/m/": b"",
        "top": rand_bytes(700_000, "top"),
    }


def vm_hwm_kib(pid):
    """The kernel's peak resident size of process @pid, in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmHWM in /proc/{pid}/status")


def read_all(m, items):
    for key, data in items.items():
        if key.endswith("/"):
            assert os.path.isdir(m.path / key), key
            continue
        assert sha(read_file(m.path / key)) == sha(data), f"{key}: wrong bytes"


def ls_lR(path):
    p = subprocess.run(["ls", "-lR", str(path)], capture_output=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return p.stdout.decode("utf-8", "replace")


def requests_on(server, bucket):
    """Every request on the bucket's objects and listings."""
    return (object_requests(server, bucket, "GET") + object_requests(server, bucket, "HEAD")
            + list_requests(server, bucket))


# ---- persistence ---------------------------------------------------------------------

def test_remount_reuses_cache(mount, s3, bucket, s3rver, read_opts):
    items = sample_tree()
    put_many(s3, bucket, items)
    m = mount(bucket, chunk_size="1M", meta_ttl="1h", **read_opts)
    ls_lR(m.path)
    read_all(m, items)
    m.unmount()

    m.remount()
    s3rver.clear_log()
    out = ls_lR(m.path)
    names = {line.rsplit(" ", 1)[-1] for line in out.splitlines()}
    assert {"a", "b", "c", "d", "e", "m", "sub", "top"} <= names, out
    assert list_requests(s3rver, bucket) == [], "ls -lR after a remount within meta_ttl listed again"
    read_all(m, items)
    assert object_requests(s3rver, bucket, "GET") == [], "a remount fetched cached chunks again"
    assert object_requests(s3rver, bucket, "HEAD") == [], "metadata within meta_ttl was revalidated"
    stats = m.unmount()
    assert stats is not None, "no stats line at exit (log_level=info)"
    assert stats["vfs.fetches"] == 0 and stats["cache.misses"] == 0, stats
    assert stats["cache.hits"] > 0, stats


def test_remount_after_ttl_revalidates_only(mount, s3, bucket, s3rver, read_opts):
    items = sample_tree()
    put_many(s3, bucket, items)
    m = mount(bucket, chunk_size="1M", meta_ttl="1s", **read_opts)
    ls_lR(m.path)
    read_all(m, items)
    last_use = time.monotonic()
    m.unmount()

    m.remount()
    wait_for(lambda: time.monotonic() > last_use + 1.5, 10, "meta_ttl=1s to pass")
    s3rver.clear_log()
    ls_lR(m.path)
    read_all(m, items)
    lists = list_requests(s3rver, bucket)
    heads = object_requests(s3rver, bucket, "HEAD")
    assert lists or heads, "metadata past meta_ttl was not revalidated"
    assert object_requests(s3rver, bucket, "GET") == [], "revalidation fetched unchanged data again"
    nfiles = sum(1 for k in items if not k.endswith("/"))
    assert len(heads) <= 2 * nfiles, f"{len(heads)} HEADs for {nfiles} files: {heads}"
    stats = m.unmount()
    assert stats is not None and stats["vfs.fetches"] == 0, stats


def test_ephemeral_cache_is_removed_at_unmount(mount, s3, bucket, tmp_path):
    data = rand_bytes(3 * MiB, "eph")
    s3.put_object(Bucket=bucket, Key="e/f", Body=data)
    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir()
    m = mount(bucket, cache_dir=False, cache="ephemeral", chunk_size="1M", env={"TMPDIR": str(tmpdir)})
    assert read_file(m.path / "e" / "f") == data
    made = list(tmpdir.iterdir())
    assert len(made) == 1 and made[0].is_dir(), f"expected one private cache folder in TMPDIR: {made}"
    assert chunk_files(made[0]), f"no chunk files in {made[0]}"
    stats = m.unmount()
    assert list(tmpdir.iterdir()) == [], "the ephemeral cache folder outlived the mount"
    assert not (tmp_path / "home" / ".cache" / "s3cachefs").exists()
    assert stats is not None and stats["cache.used"] > 0, stats


# ---- the cap -----------------------------------------------------------------------------

def test_cap_holds_while_reading_three_times_its_size(mount, s3, bucket, read_opts, make_tmpfs):
    cap = 8 * MiB
    files = {f"cap/f{i}": rand_bytes(4 * MiB, f"cap{i}") for i in range(7)}  # 28 MiB
    put_many(s3, bucket, files)
    # The cache gets a file system of its own, so that one statvfs() is an
    # atomic sample of everything it holds; walking the folder is not (a
    # chunk evicted behind the walk and its successor ahead of it would
    # both be counted).
    fs = make_tmpfs("64M")
    empty = os.statvfs(fs)
    m = mount(bucket, cache_dir=str(fs / "cache"), cache_size="8M", chunk_size="1M", **read_opts)
    samples = []
    stop = threading.Event()

    def used():
        st = os.statvfs(fs)
        return (empty.f_bfree - st.f_bfree) * st.f_frsize

    def sampler():
        while not stop.is_set():
            samples.append(used())
            stop.wait(0.003)

    t = threading.Thread(target=sampler, daemon=True)
    t.start()
    try:
        for order in (sorted(files), sorted(files, reverse=True)):
            for key in order:
                assert sha(read_file(m.path / key)) == sha(files[key]), key
    finally:
        stop.set()
        t.join(10)
    assert len(samples) >= 20, f"only {len(samples)} samples"
    assert max(samples) <= cap, f"cache used {max(samples)} bytes on disk, cap {cap} (samples {len(samples)})"
    assert max(samples) > cap // 2, f"the cache hardly filled ({max(samples)} bytes): nothing was tested"
    hwm = vm_hwm_kib(m.proc.pid)
    stats = m.unmount()
    assert disk_usage(m.cache_dir) <= cap
    assert stats is not None, "no stats line"
    assert stats["cache.cap"] == cap and stats["cache.used"] <= cap, stats
    assert stats["cache.evicted"] > 0, stats
    # the peak resident size the daemon reports is the kernel's own figure
    # (not pytest's, say), give or take the kernel's per-cpu RSS counter slack
    peak = stats["proc.peak_rss_kib"]
    assert hwm - 1024 <= peak < hwm + 64 * 1024, f"peak_rss_kib {peak}, VmHWM {hwm} KiB before unmount"


# ---- damaged caches -------------------------------------------------------------------------

def test_corrupted_chunk_is_detected_and_fetched_again(mount, s3, bucket, s3rver, read_opts):
    data = mixed_bytes(4 * MiB + 100, "corrupt")
    s3.put_object(Bucket=bucket, Key="c/file", Body=data)
    m = mount(bucket, chunk_size="1M", meta_ttl="1h", **read_opts)
    assert read_file(m.path / "c" / "file") == data
    m.unmount()

    chunks = chunk_files(m.cache_dir)
    assert len(chunks) == 5, chunks
    victim = max(chunks, key=lambda p: p.stat().st_size)
    good = victim.read_bytes()
    pos = len(good) // 2
    victim.write_bytes(good[:pos] + bytes([good[pos] ^ 0xFF]) + good[pos + 1:])

    m.remount()
    s3rver.clear_log()
    assert read_file(m.path / "c" / "file") == data, "a corrupted chunk was served"
    gets = object_requests(s3rver, bucket, "GET", "c/file")
    assert len(gets) == 1, f"expected one GET for the corrupted chunk: {gets}"
    stats = m.unmount()
    assert stats is not None and stats["cache.corrupt"] == 1, (
        f"stats {stats}; warn lines: {warn_lines(m.stderr_text())}")
    assert not victim.exists() or victim.read_bytes() == good, "the chunk file was not replaced"

    m.remount()
    s3rver.clear_log()
    assert read_file(m.path / "c" / "file") == data
    assert object_requests(s3rver, bucket, "GET") == [], "the refetched chunk was not cached again"
    m.unmount()


def test_missing_and_stray_chunk_files_are_reconciled(mount, s3, bucket, s3rver):
    data = rand_bytes(4 * MiB, "reconcile")
    s3.put_object(Bucket=bucket, Key="f", Body=data)
    m = mount(bucket, chunk_size="1M", meta_ttl="1h")
    assert read_file(m.path / "f") == data
    m.unmount()

    chunks = chunk_files(m.cache_dir)
    assert len(chunks) == 4, chunks
    chunks[1].unlink()  # a row without its file
    shard = m.cache_dir / "chunks" / "ab"
    shard.mkdir(exist_ok=True)
    stray = shard / ("ab" + "5" * 62)  # a file without a row
    stray.write_bytes(b"junk" * 1000)

    m.remount()
    s3rver.clear_log()
    assert read_file(m.path / "f") == data
    gets = object_requests(s3rver, bucket, "GET", "f")
    assert len(gets) == 1, f"expected one GET for the missing chunk: {gets}"
    wait_for(lambda: not stray.exists(), 15, "the stray chunk file to be removed")
    m.unmount()


def test_kill9_mid_read_then_remount_recovers(mount, s3, bucket, s3rver, proxy):
    data = rand_bytes(24 * MiB, "kill9")
    s3.put_object(Bucket=bucket, Key="k9/big", Body=data)
    # slow GETs down so that the kill lands mid-read
    proxy.add("delay=0.3", count=None, method="GET", path=f"/{bucket}/k9/big")
    m = mount(bucket, endpoint=proxy.endpoint, chunk_size="1M", meta_ttl="1h")
    s3rver.clear_log()
    errors = []

    def reader():
        try:
            read_file(m.path / "k9" / "big")
        except OSError as e:
            errors.append(e)

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    wait_for(lambda: len(object_requests(s3rver, bucket, "GET", "k9/big")) >= 3, 60, "chunk GETs")
    assert t.is_alive(), "the read finished before the kill: nothing tested"
    m.kill()
    t.join(30)
    assert not t.is_alive(), "a read hung after the daemon was killed"
    proxy.clear()

    m.start()
    assert sha(read_file(m.path / "k9" / "big")) == sha(data)

    def no_partial_files():
        return all(CHUNK_NAME_RE.match(p.name) for p in chunk_files(m.cache_dir))

    wait_for(no_partial_files, 15, "leftover temporary chunk files to be cleaned up")
    stats = m.unmount()
    assert stats is not None and stats["cache.corrupt"] == 0, stats

    m.remount()
    s3rver.clear_log()
    assert sha(read_file(m.path / "k9" / "big")) == sha(data)
    assert object_requests(s3rver, bucket, "GET") == []
    m.unmount()


# ---- compression -----------------------------------------------------------------------------

def test_zlib_stores_compressible_chunks_smaller(mount, s3, bucket):
    text = b"".join(b"%08d the quick brown fox jumps over the lazy dog\n" % i for i in range(150_000))
    text = text[: 8 * MiB]
    s3.put_object(Bucket=bucket, Key="z/text", Body=text)
    mz = mount(bucket, chunk_size="1M", compress="zlib")
    assert read_file(mz.path / "z" / "text") == text
    mz.unmount()
    zsize = sum(p.stat().st_size for p in chunk_files(mz.cache_dir))
    assert 0 < zsize < len(text) // 4, f"zlib chunks take {zsize} bytes for {len(text)}"

    mr = mount(bucket, chunk_size="1M")
    assert read_file(mr.path / "z" / "text") == text
    mr.unmount()
    rsize = sum(p.stat().st_size for p in chunk_files(mr.cache_dir))
    assert rsize >= len(text), f"raw chunks take {rsize} bytes for {len(text)}"

    mz.remount()
    assert read_file(mz.path / "z" / "text") == text
    stats = mz.unmount()
    assert stats is not None and stats["vfs.fetches"] == 0, stats


# ---- consistency -------------------------------------------------------------------------------

def test_object_replaced_behind_the_mount_is_seen_after_ttl(mount, s3, bucket, read_opts):
    versions = [mixed_bytes(300_000, "v1"), mixed_bytes(500_000, "v2"), mixed_bytes(100_000, "v3")]
    s3.put_object(Bucket=bucket, Key="obj", Body=versions[0])
    m = mount(bucket, meta_ttl="1s", chunk_size="64K", **read_opts)
    path = m.path / "obj"
    assert read_file(path) == versions[0]
    for old, new in zip(versions, versions[1:]):
        s3.put_object(Bucket=bucket, Key="obj", Body=new)

        def sees_new():
            got = read_file(path)
            if got not in (old, new):
                raise AssertionError(
                    f"read {len(got)} bytes that are neither version (old {len(old)}, new {len(new)}); "
                    f"old prefix match {got[:1000] == old[:1000]}, new prefix match {got[:1000] == new[:1000]}")
            return got == new

        wait_for(sees_new, 20, f"the new {len(new)}-byte version", interval=0.05)
        for _ in range(3):
            assert read_file(path) == new, "went back to the old version"
        assert os.stat(path).st_size == len(new)


def test_open_file_keeps_its_version(mount, s3, bucket, read_opts):
    old, new = rand_bytes(16 * MiB, "open-v1"), rand_bytes(16 * MiB, "open-v2")
    far = 12 * MiB
    s3.put_object(Bucket=bucket, Key="big", Body=old)
    m = mount(bucket, chunk_size="64K", meta_ttl="1s", expect_errors=True, **read_opts)
    path = m.path / "big"
    fd = os.open(path, os.O_RDONLY)
    try:
        assert os.pread(fd, 65536, 0) == old[:65536]
        s3.put_object(Bucket=bucket, Key="big", Body=new)
        with pytest.raises(OSError) as e:
            got = os.pread(fd, 65536, far)
            pytest.fail(f"read of an uncached range after the object changed returned "
                        f"{'old' if got == old[far:far + 65536] else 'new' if got == new[far:far + 65536] else 'other'} data")
        assert e.value.errno == errno.EIO, e.value
        assert os.pread(fd, 65536, 0) == old[:65536], "the open file's cached start changed version"
    finally:
        os.close(fd)

    def fresh_open_sees_new():
        try:
            with open(path, "rb") as f:
                head = f.read(65536)
                f.seek(far)
                mid = f.read(65536)
        except OSError as e:
            if e.errno == errno.EIO:
                return False  # opened as the old version, then met the new one: allowed
            raise
        pair = (head, mid)
        if pair == (new[:65536], new[far:far + 65536]):
            return True
        assert pair == (old[:65536], old[far:far + 65536]), "one open file mixed two versions"
        return False

    wait_for(fresh_open_sees_new, 20, "a fresh open to read the new version", interval=0.1)
    assert sha(read_file(path)) == sha(new)
    m.unmount()


def test_negative_lookups_are_cached_then_expire(mount, s3, bucket, s3rver):
    m = mount(bucket, negative_ttl="5s", meta_ttl="5s")
    p = m.path / "nothere"
    s3rver.clear_log()
    t0 = time.monotonic()
    with pytest.raises(FileNotFoundError):
        os.stat(p)
    first = requests_on(s3rver, bucket)
    assert first, "a lookup of a missing name asked S3 nothing"
    with pytest.raises(FileNotFoundError):
        os.stat(p)
    with pytest.raises(FileNotFoundError):
        open(p, "rb")
    assert requests_on(s3rver, bucket) == first, "a negative lookup within negative_ttl asked S3 again"

    s3.put_object(Bucket=bucket, Key="nothere", Body=b"now it is here")
    # the steps above take far less than the 5 s negative_ttl, even sanitized
    assert time.monotonic() - t0 < 4.0, "the steps above took most of negative_ttl"
    with pytest.raises(FileNotFoundError):
        os.stat(p)
    assert requests_on(s3rver, bucket) == first, "the key put within negative_ttl was looked up again"
    wait_for(lambda: os.path.exists(p), 5 + 5 + 10, "the new key to appear", interval=0.1)
    assert read_file(p) == b"now it is here"
    m.unmount()


def test_chunk_size_change_drops_the_cached_chunks(mount, s3, bucket, s3rver):
    # chunk 1 at 1 MiB is bytes 1-2 MiB, at 2 MiB it is bytes 2-4 MiB: a
    # cache kept across the change would serve the wrong bytes
    data = rand_bytes(4 * MiB, "chunksize")
    s3.put_object(Bucket=bucket, Key="f", Body=data)
    m = mount(bucket, chunk_size="1M")
    assert read_file(m.path / "f") == data
    wait_for(lambda: len(chunk_files(m.cache_dir)) == 4, 10, "four 1 MiB chunks cached")
    m.unmount()
    m.remount(chunk_size="2M")
    subprocess.run(["sh", "-c", "echo 3 > /proc/sys/vm/drop_caches"], check=True)
    with open(m.path / "f", "rb") as f:
        f.seek(2 * MiB + 5)
        assert f.read(100) == data[2 * MiB + 5:2 * MiB + 105]
    assert read_file(m.path / "f") == data
    stats = m.unmount()
    assert stats["cache.admitted"] == 2, stats  # both 2 MiB chunks fetched anew
    assert any("held chunks of 1048576 bytes, not chunk_size=2097152: dropped 4" in line
               for line in warn_lines(m.stderr_text())), m.stderr_text()
    # the same size again keeps them
    m.remount(chunk_size="2M")
    assert read_file(m.path / "f") == data
    assert m.unmount()["vfs.fetches"] == 0
