"""The warm read path: cache hits go through chunk files the daemon keeps
open (chunk_read_cached), and that never weakens the checks.

Counts come from the daemon's stats line (cache.opens: chunk files opened
to serve hits; cache.hits), from /proc/PID/fd, and from the server's
request log; bytes are compared with what boto3 wrote.  The kernel's page
cache of a file is dropped with posix_fadvise(DONTNEED) so that every read
reaches the daemon again.
"""

import os
import time

from mount import (
    MiB,
    chunk_files,
    list_requests,
    mixed_bytes,
    object_requests,
    put_many,
    rand_bytes,
    read_file,
    sha,
)
from conftest import wait_for


def drop_page_cache(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def open_chunk_fds(pid, cache_dir):
    """Chunk files the process holds open."""
    root = os.path.realpath(os.path.join(cache_dir, "chunks")) + "/"
    out = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith(root):
            out.add(target)
    return out


def warm_mount(mount, s3, bucket, key, data, **opts):
    """Mount, read @key once (its chunks are fetched and cached), then
    remount: a mount whose every read is a hit."""
    s3.put_object(Bucket=bucket, Key=key, Body=data)
    m = mount(bucket, chunk_size="1M", meta_ttl="1h", **opts)
    assert read_file(m.path / key) == data
    m.unmount()
    m.remount()
    return m


def test_repeated_hits_do_not_reopen_chunk_files(mount, s3, bucket, s3rver):
    data = rand_bytes(4 * MiB + 100, "warm")
    m = warm_mount(mount, s3, bucket, "w/file", data)
    chunks = chunk_files(m.cache_dir)
    assert len(chunks) == 5, chunks
    s3rver.clear_log()
    for _ in range(3):
        assert sha(read_file(m.path / "w" / "file")) == sha(data)
        drop_page_cache(m.path / "w" / "file")
    held = open_chunk_fds(m.proc.pid, m.cache_dir)
    assert held == {os.path.realpath(p) for p in chunks}, f"chunk files held open: {held}"
    assert object_requests(s3rver, bucket, "GET") == [], "a hit went to S3"
    stats = m.unmount()
    assert stats is not None, "no stats line at exit"
    assert stats["cache.hits"] >= 15 and stats["cache.misses"] == 0, stats
    assert stats["cache.opens"] == 5, f"each chunk file must be opened once: {stats}"


def test_chunk_corrupted_while_open_is_detected(mount, s3, bucket, s3rver):
    data = mixed_bytes(3 * MiB, "open-corrupt")
    m = warm_mount(mount, s3, bucket, "c/file", data)
    assert read_file(m.path / "c" / "file") == data  # every block checked once
    drop_page_cache(m.path / "c" / "file")
    victim = max(chunk_files(m.cache_dir), key=lambda p: p.stat().st_size)
    assert os.path.realpath(victim) in open_chunk_fds(m.proc.pid, m.cache_dir)
    with open(victim, "r+b") as f:  # in place: the daemon's fd sees it
        f.seek(victim.stat().st_size // 2)
        b = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([b[0] ^ 0xFF]))
    s3rver.clear_log()
    assert read_file(m.path / "c" / "file") == data, "a corrupted chunk was served"
    gets = object_requests(s3rver, bucket, "GET", "c/file")
    assert len(gets) == 1, f"expected one GET for the corrupted chunk: {gets}"
    stats = m.unmount()
    assert stats is not None and stats["cache.corrupt"] == 1, stats


def test_warm_lookups_of_folders_ask_s3_nothing(mount, s3, bucket, s3rver):
    items = {f"t/d{i % 5}/f{i:02d}": rand_bytes(1000 + 37 * i, f"s{i}") for i in range(20)}
    put_many(s3, bucket, items)
    m = mount(bucket, meta_ttl="1h")
    for key, data in items.items():  # by path: lookups, no listing
        assert read_file(m.path / key) == data
    m.unmount()

    m.remount()
    s3rver.clear_log()
    for key, data in items.items():
        assert read_file(m.path / key) == data
    assert list_requests(s3rver, bucket) == [], "a folder known from its files' rows was listed"
    assert object_requests(s3rver, bucket, "GET") == [] and object_requests(s3rver, bucket, "HEAD") == []
    m.unmount()



def test_folder_rows_past_the_ttl_are_not_trusted(mount, s3, bucket, s3rver):
    items = {f"u/d{i % 2}/f{i}": rand_bytes(500 + i, f"u{i}") for i in range(4)}
    put_many(s3, bucket, items)
    m = mount(bucket, meta_ttl="1s")
    for key, data in items.items():
        assert read_file(m.path / key) == data
    last_use = time.monotonic()
    m.unmount()

    m.remount()
    wait_for(lambda: time.monotonic() > last_use + 1.5, 10, "meta_ttl=1s to pass")
    s3rver.clear_log()
    assert read_file(m.path / "u" / "d1" / "f1") == items["u/d1/f1"]
    lists = list_requests(s3rver, bucket)
    # one flat LIST of the root may serve both folders
    assert len(lists) >= 1, f"expired rows were trusted for the folders: {lists}"
    m.unmount()
