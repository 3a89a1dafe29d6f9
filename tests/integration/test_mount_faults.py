"""A mount when S3 or the cache disk fails: cached data is still served,
uncached reads fail with EIO within the timeout, a full cache disk makes
reads fall through to S3, and nothing hangs."""

import errno
import os
import time

import pytest

from conftest import SANITIZED, boto3_client
from mount import MiB, error_lines, rand_bytes, read_file, sha, warn_lines

TIMEOUT = 3  # -o timeout=3s: a whole S3 request, retries included
SLACK = 8 if SANITIZED else 4  # process scheduling, the kernel's split reads


def warm(m, cached, uncached):
    """List and stat both files (metadata cached), read only `cached`."""
    names = sorted(os.listdir(m.path / "d"))
    assert names == ["cached", "uncached"], names
    assert os.stat(m.path / "d" / "uncached").st_size == len(uncached)
    assert sha(read_file(m.path / "d" / "cached")) == sha(cached)


def check_unreachable(m, cached, uncached):
    t = time.monotonic()
    assert sha(read_file(m.path / "d" / "cached")) == sha(cached)
    took = time.monotonic() - t
    assert took < TIMEOUT, f"reading cached data took {took:.1f}s: it waited on S3"

    for attempt in range(2):
        t = time.monotonic()
        with pytest.raises(OSError) as e:
            with open(m.path / "d" / "uncached", "rb") as f:
                f.read(65536)
        took = time.monotonic() - t
        assert e.value.errno == errno.EIO, e.value
        assert took <= TIMEOUT + SLACK, f"attempt {attempt}: EIO after {took:.1f}s, timeout={TIMEOUT}s"

    assert sorted(os.listdir(m.path / "d")) == ["cached", "uncached"]
    assert os.stat(m.path / "d" / "cached").st_size == len(cached)


@pytest.fixture
def two_files():
    return rand_bytes(3 * MiB, "cached"), rand_bytes(3 * MiB, "uncached")


def test_stopped_server_cached_data_still_served(mount, start_s3rver, two_files):
    cached, uncached = two_files
    server = start_s3rver()
    c = boto3_client(server.endpoint)
    c.create_bucket(Bucket="gone")
    c.put_object(Bucket="gone", Key="d/cached", Body=cached)
    c.put_object(Bucket="gone", Key="d/uncached", Body=uncached)
    m = mount("gone", endpoint=server.endpoint, timeout=f"{TIMEOUT}s", meta_ttl="1h", chunk_size="1M",
              expect_errors=True)
    warm(m, cached, uncached)
    server.stop()  # connections are now refused
    check_unreachable(m, cached, uncached)
    t = time.monotonic()
    m.unmount()
    assert time.monotonic() - t < 15


def test_silent_server_cached_data_still_served(mount, s3, bucket, proxy, two_files):
    cached, uncached = two_files
    s3.put_object(Bucket=bucket, Key="d/cached", Body=cached)
    s3.put_object(Bucket=bucket, Key="d/uncached", Body=uncached)
    m = mount(bucket, endpoint=proxy.endpoint, timeout=f"{TIMEOUT}s", meta_ttl="1h", chunk_size="1M",
              expect_errors=True)
    warm(m, cached, uncached)
    proxy.add("delay=600", count=None)  # accepts requests, never answers
    check_unreachable(m, cached, uncached)
    t = time.monotonic()
    m.unmount()
    assert time.monotonic() - t < 15
    proxy.clear()


def test_full_cache_disk_falls_through_to_s3(mount, s3, bucket, small_tmpfs):
    data = rand_bytes(10 * MiB, "full")
    s3.put_object(Bucket=bucket, Key="full/f", Body=data)
    cache = small_tmpfs / "cache"
    cache.mkdir()
    m = mount(bucket, cache_dir=cache, cache_size="64M", chunk_size="1M")
    for _ in range(2):
        assert sha(read_file(m.path / "full" / "f")) == sha(data)
    with open(m.path / "full" / "f", "rb") as f:
        for off in (9 * MiB + 5, 3, 5 * MiB - 1):
            f.seek(off)
            assert f.read(100_000) == data[off:off + 100_000]
    m.unmount()
    text = m.stderr_text()
    about_disk = [line for line in warn_lines(text) + error_lines(text)
                  if any(w in line.lower() for w in ("space", "full", "disk", "enospc", "cache", str(cache)))]
    assert len(about_disk) <= 1, f"the full cache disk was logged more than once: {about_disk}"
