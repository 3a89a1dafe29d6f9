"""Writes when things go wrong: the daemon killed mid-write or right after a
close, S3 refusing uploads, and a cache disk too small for a file. Results
are checked with boto3 and by looking at CACHE_DIR/staging/ (where written
data waits for its upload)."""

import errno
import os
import subprocess
import sys
import threading

import pytest

from conftest import wait_for
from mount import MiB, rand_bytes, read_file, s3_body, s3_meta, sha
from test_mount_write import assert_object, errno_of, wait_object, write_file


@pytest.fixture(autouse=True)
def umask022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def staged_files(cache_dir):
    root = cache_dir / "staging"
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def wait_staging_empty(m, timeout):
    wait_for(lambda: not staged_files(m.cache_dir), timeout,
             f"{m.cache_dir}/staging to empty (left: {staged_files(m.cache_dir)[:5]})", interval=0.1)


# ---- 10. kill -9 ---------------------------------------------------------------------------

# Copies SRC to DST in 1 MiB writes; after each write() that returned,
# PROGRESS holds the number of bytes acknowledged so far (replaced atomically).
WRITER = r"""
import os, sys
src, dst, progress = sys.argv[1:4]
fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
done = 0
with open(src, "rb") as s:
    while True:
        block = s.read(1 << 20)
        if not block:
            break
        view = memoryview(block)
        while view:
            n = os.write(fd, view)
            done += n
            view = view[n:]
            with open(progress + ".tmp", "w") as p:
                p.write(str(done))
            os.replace(progress + ".tmp", progress)
os.close(fd)
"""

TOTAL = 200 * MiB
KILL_AT = 50 * MiB


def test_kill9_mid_write_then_remount_resumes_upload(mount, s3, bucket, tmp_path):
    data = rand_bytes(TOTAL, "kill9-write")
    src = tmp_path / "source.bin"
    src.write_bytes(data)
    progress = tmp_path / "progress"
    m = mount(bucket)

    def acked():
        try:
            return int(progress.read_text())
        except FileNotFoundError:
            return 0

    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(src), str(m.path / "big"), str(progress)],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: acked() >= KILL_AT or writer.poll() is not None, 120, f"{KILL_AT} bytes acknowledged",
                 interval=0.005)
        assert writer.poll() is None, (
            f"the writer ended (rc {writer.returncode}) before the kill: {writer.stderr.read().decode()[-2000:]}")
        m.kill()  # SIGKILL, then fusermount3 -u -z
        rc = writer.wait(60)
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait(10)
        writer.stderr.close()
    assert rc != 0, "the writer did not fail when the daemon died"
    done = acked()
    assert KILL_AT <= done < TOTAL, done
    assert staged_files(m.cache_dir), "nothing staged in CACHE_DIR/staging after the kill"

    m.start()  # the same cache folder: the pending upload resumes on its own

    def uploaded():
        md = s3_meta(s3, bucket, "big")
        return md is not None

    wait_for(uploaded, 120, "the staged upload to reach the bucket after the remount", interval=0.25)
    body = s3.get_object(Bucket=bucket, Key="big")["Body"].read()
    n = len(body)
    assert done <= n <= TOTAL, f"the object has {n} bytes; {done} were acknowledged before the kill"
    assert sha(body) == sha(data[:n]), "the uploaded bytes are not the start of what was written"
    wait_staging_empty(m, 60)
    assert os.stat(m.path / "big").st_size == n
    m.unmount()


def test_kill9_right_after_close_keeps_the_object(mount, s3, bucket):
    data = rand_bytes(10 * MiB + 3, "kill-after-close")
    m = mount(bucket, chunk_size="1M")
    write_file(m.path / "closed", data)
    m.kill()
    assert_object(s3, bucket, "closed", data, "after close, before the remount")
    m.start()
    assert sha(read_file(m.path / "closed")) == sha(data)
    wait_staging_empty(m, 30)
    assert_object(s3, bucket, "closed", data, "after the remount")
    m.unmount()


# ---- 11. an upload the server refuses --------------------------------------------------------

def test_refused_upload_fails_close_then_is_retried(mount, s3, bucket, proxy):
    m = mount(bucket, endpoint=proxy.endpoint, chunk_size="64K", retries="1", timeout="5s", expect_errors=True)
    a, b = rand_bytes(300_000, "refused-a"), rand_bytes(200_000, "refused-b")
    # created while S3 still takes writes (a create may upload an empty object)
    fa = os.open(m.path / "refused", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    fb = os.open(m.path / "synced", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    proxy.add("500", count=None, method="PUT")
    proxy.add("500", count=None, method="POST")
    assert os.write(fa, a) == len(a)
    close_err = errno_of(lambda: os.close(fa))
    assert close_err in (errno.EIO, errno.EACCES), f"close: {errno.errorcode.get(close_err)}"
    assert proxy.injected["500"] >= 2, "the upload was not retried before close failed"
    assert s3_body(s3, bucket, "refused") != a, "the bucket holds the data although every PUT was refused"
    # kept, staged: readable through the mount
    assert os.stat(m.path / "refused").st_size == len(a)
    assert read_file(m.path / "refused") == a

    try:
        assert os.write(fb, b) == len(b)
        sync_err = errno_of(lambda: os.fsync(fb))
        assert sync_err in (errno.EIO, errno.EACCES), f"fsync: {errno.errorcode.get(sync_err)}"
    finally:
        try:
            os.close(fb)
        except OSError as e:
            assert e.errno in (errno.EIO, errno.EACCES), e
    assert read_file(m.path / "synced") == b

    proxy.clear()  # S3 takes writes again: the staged uploads go out in the background
    wait_object(s3, bucket, "refused", a, 90)
    wait_object(s3, bucket, "synced", b, 90)
    wait_staging_empty(m, 30)
    m.unmount()


# ---- 12. a file larger than the cache ------------------------------------------------------------

def test_write_larger_than_cache_fails_with_enospc(mount, s3, bucket, make_tmpfs):
    fs = make_tmpfs("48M")
    m = mount(bucket, cache_dir=str(fs / "cache"), cache_size="32M", chunk_size="1M", expect_errors=True)
    free = []
    stop = threading.Event()

    def sampler():
        while not stop.is_set():
            st = os.statvfs(fs)
            free.append(st.f_bavail * st.f_frsize)
            stop.wait(0.003)

    t = threading.Thread(target=sampler, daemon=True)
    t.start()
    block = rand_bytes(MiB, "space")
    err = None
    written = 0
    try:
        fd = os.open(m.path / "huge", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            for _ in range(64):
                view = memoryview(block)
                while view:
                    n = os.write(fd, view)
                    written += n
                    view = view[n:]
        except OSError as e:
            err = e
        try:
            os.close(fd)
        except OSError as e:
            err = err or e
    finally:
        stop.set()
        t.join(10)
    st = os.statvfs(fs)
    free.append(st.f_bavail * st.f_frsize)  # and once after the failure
    assert err is not None, "64 MiB were written and closed through a 32M cache on a 48M disk"
    assert err.errno == errno.ENOSPC, f"{err!r} after {written} bytes"
    assert len(free) >= 5, f"only {len(free)} samples"
    assert min(free) >= 8 * MiB, f"the cache's disk went down to {min(free)} free bytes"

    # the mount is still usable
    os.unlink(m.path / "huge")
    assert s3_meta(s3, bucket, "huge") is None
    small = rand_bytes(MiB, "space-small")
    write_file(m.path / "small", small)
    assert_object(s3, bucket, "small", small)
    assert read_file(m.path / "small") == small
    m.unmount()
    assert s3_meta(s3, bucket, "huge") is None, "the refused file reached the bucket"
