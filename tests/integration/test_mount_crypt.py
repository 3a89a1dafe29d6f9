"""Encryption at rest on real mounts: encrypt=aes-256-gcm with a key file or
S3CACHEFS_ENCRYPTION_KEY, and encrypt=ephemeral.

What reached S3 is checked with boto3; what the cache holds by reading every
file under the cache folder for the plaintext; cache reuse by counting GETs
in the server's request log.
"""

import os
import random
import secrets
from pathlib import Path

import pytest

import test_mount_write
from conftest import wait_for
from mount import MiB, PROG, is_mounted, object_requests, read_file, s3_body, sha

KiB = 1024


def canary_bytes(n, seed):
    """Distinctive data: text lines no other file holds, cut with random
    runs, so a plaintext copy anywhere is found by a few needles."""
    rng = random.Random(seed)
    out = bytearray()
    i = 0
    while len(out) < n:
        out += f"S3CFS-PLAINTEXT-CANARY {seed} line {i:08d} ".encode() * 4
        out += rng.randbytes(256)
        i += 1
    return bytes(out[:n])


def needles(data):
    """48-byte windows of data spread over it (at least 64 KiB apart)."""
    step = max(64 * KiB, len(data) // 16)
    return [data[o:o + 48] for o in range(0, len(data) - 48, step)]


def files_with_plaintext(cache_dir, data):
    """Files under cache_dir that hold any needle of data."""
    found = []
    ns = needles(data)
    for p in sorted(Path(cache_dir).rglob("*")):
        if not p.is_file():
            continue
        try:
            blob = p.read_bytes()
        except FileNotFoundError:
            continue
        if any(n in blob for n in ns):
            found.append(str(p))
    return found


def chunk_files(cache_dir):
    return sorted(p for p in (Path(cache_dir) / "chunks").rglob("*") if p.is_file())


def staging_files(cache_dir):
    root = Path(cache_dir) / "staging"
    return sorted(p for p in root.iterdir() if p.is_file()) if root.exists() else []


def new_key_file(dirpath, name="key", raw=False, mode=0o600):
    key = secrets.token_bytes(32)
    path = Path(dirpath) / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, key if raw else (key.hex() + "\n").encode())
    finally:
        os.close(fd)
    os.chmod(path, mode)
    return path, key


def gets(s3rver, bucket):
    return object_requests(s3rver, bucket, "GET")


@pytest.fixture(autouse=True)
def umask022():
    """New files are 0644 whatever the caller's umask (the reused write
    tests check modes)."""
    old = os.umask(0o022)
    yield
    os.umask(old)


@pytest.fixture
def keys(tmp_path):
    d = tmp_path / "keys"
    d.mkdir()
    return d


def test_no_plaintext_on_disk_and_the_cache_is_reused(mount, s3, bucket, s3rver, keys):
    kf, _ = new_key_file(keys)
    old = canary_bytes(3 * MiB + 12345, "read")
    s3.put_object(Bucket=bucket, Key="r/old", Body=old)
    m = mount(bucket, chunk_size="1M", meta_ttl="1h", encrypt="aes-256-gcm", key_file=str(kf))
    assert sha(read_file(m.path / "r" / "old")) == sha(old)
    wait_for(lambda: len(chunk_files(m.cache_dir)) >= 4, 10, "4 chunks cached")
    chunks = chunk_files(m.cache_dir)
    for c in chunks:
        head = c.read_bytes()[:12]
        assert head[:8] == b"S3CCHUNK" and head[8:10] == b"\x02\x00", f"{c} is not a sealed chunk: {head!r}"

    # a file being written: its staging file, while it is open
    new = canary_bytes(2 * MiB + 77, "write")
    with open(m.path / "w-new", "wb", buffering=0) as f:
        f.write(new[:MiB + 5])
        f.write(new[MiB + 5:])
        staged = staging_files(m.cache_dir)
        assert staged and all(p.name.endswith(".sealed") for p in staged), staged
        assert any(p.stat().st_size > 2 * MiB for p in staged), [(p, p.stat().st_size) for p in staged]
        assert files_with_plaintext(m.cache_dir, new) == [], "plaintext of a file being written in the cache"
    assert s3_body(s3, bucket, "w-new") == new, "the object in S3 is not what was written"
    assert files_with_plaintext(m.cache_dir, old) == [], "plaintext of a read object in the cache"
    assert files_with_plaintext(m.cache_dir, new) == [], "plaintext of a written object in the cache"
    m.unmount()

    m.remount()
    s3rver.clear_log()
    assert sha(read_file(m.path / "r" / "old")) == sha(old)
    assert sha(read_file(m.path / "w-new")) == sha(new)
    assert gets(s3rver, bucket) == [], "the right key: reads must come from the cache"
    stats = m.unmount()
    assert stats["vfs.fetches"] == 0 and stats["cache.hits"] > 0, stats


def test_wrong_key_or_no_key_over_an_encrypted_cache(mount, s3, bucket, s3rver, keys):
    ka, _ = new_key_file(keys, "a")
    kb, _ = new_key_file(keys, "b", raw=True)
    data = canary_bytes(2 * MiB + 3, "wrong")
    s3.put_object(Bucket=bucket, Key="f", Body=data)
    m = mount(bucket, chunk_size="1M", meta_ttl="1h", encrypt="aes-256-gcm", key_file=str(ka))
    assert read_file(m.path / "f") == data
    m.unmount()

    m.remount(key_file=str(kb))
    s3rver.clear_log()
    assert sha(read_file(m.path / "f")) == sha(data), "wrong key: the bytes must come from S3, right"
    assert len(gets(s3rver, bucket)) >= 3, "wrong key: every chunk must be fetched again"
    assert "encrypted with another key" in m.stderr_text(), m.stderr_text()[-2000:]
    assert files_with_plaintext(m.cache_dir, data) == []
    stats = m.unmount()
    # counted as chunks of another key, not as corruption
    assert stats["cache.wrong_key"] >= 3 and stats["cache.corrupt"] == 0, stats

    m.remount(encrypt=None, key_file=None)
    s3rver.clear_log()
    assert sha(read_file(m.path / "f")) == sha(data), "no key over an encrypted cache: wrong bytes"
    assert len(gets(s3rver, bucket)) >= 3, "no key: encrypted chunks must not be served"
    m.unmount()

    # and back: plaintext chunks are not served under a key
    m.remount(encrypt="aes-256-gcm", key_file=str(ka))
    s3rver.clear_log()
    assert sha(read_file(m.path / "f")) == sha(data)
    assert len(gets(s3rver, bucket)) >= 3, "plaintext chunks must not be served under a key"
    assert files_with_plaintext(m.cache_dir, data) == []
    m.unmount()


def test_key_from_the_environment_and_refused_keys(mount, s3, bucket, s3rver, keys, tmp_path):
    kf, key = new_key_file(keys)
    data = canary_bytes(700 * KiB, "env")
    s3.put_object(Bucket=bucket, Key="e", Body=data)
    m = mount(bucket, meta_ttl="1h", encrypt="aes-256-gcm", env={"S3CACHEFS_ENCRYPTION_KEY": key.hex()})
    assert read_file(m.path / "e") == data
    environ = Path(f"/proc/{m.proc.pid}/environ").read_bytes()
    assert key.hex().encode() not in environ, "the key is still in the daemon's environment"
    assert key.hex() not in m.stderr_text()
    m.unmount()
    # the same key from a file: the same cache
    m.env.pop("S3CACHEFS_ENCRYPTION_KEY")
    m.remount(key_file=str(kf))
    s3rver.clear_log()
    assert read_file(m.path / "e") == data
    assert gets(s3rver, bucket) == [], "the same key from a file must read the same cache"
    m.unmount()

    base = f"endpoint={s3rver.endpoint},cache_dir={tmp_path / 'refused'},encrypt=aes-256-gcm"
    mp = mount.new_dir("mnt")
    os.chmod(kf, 0o644)
    rc, err = mount.run([bucket, mp, "-f", "-o", f"{base},key_file={kf}"])
    lines = err.splitlines()
    assert rc != 0 and len(lines) == 1 and lines[0].startswith(PROG), (rc, err)
    assert "chmod 600" in err and str(kf) in err, err
    rc, err = mount.run([bucket, mp, "-f", "-o", base])
    lines = err.splitlines()
    assert rc == 2 and len(lines) == 1 and "needs a key" in err, (rc, err)
    rc, err = mount.run([bucket, mp, "-f", "-o", base], env={"S3CACHEFS_ENCRYPTION_KEY": "abc"})
    assert rc == 2 and len(err.splitlines()) == 1 and "64 hex digits" in err, (rc, err)
    assert not is_mounted(mp)


def test_ephemeral_key_wipes_the_cache(mount, s3, bucket, tmp_path):
    old = canary_bytes(MiB + 1, "eph-old")
    s3.put_object(Bucket=bucket, Key="d/old", Body=old)
    m = mount(bucket, chunk_size="256K", encrypt="ephemeral")
    assert read_file(m.path / "d" / "old") == old
    new = canary_bytes(3 * MiB // 2, "eph-new")
    with open(m.path / "d" / "new", "wb") as f:
        f.write(new)
        assert files_with_plaintext(m.cache_dir, new) == []
    assert chunk_files(m.cache_dir), "nothing cached"
    assert files_with_plaintext(m.cache_dir, old) == []
    assert "(ephemeral)" in m.stderr_text()
    m.unmount()
    left = sorted(str(p.relative_to(m.cache_dir)) for p in Path(m.cache_dir).rglob("*"))
    assert left == ["lock"], f"the cache folder still holds {left}"
    assert s3_body(s3, bucket, "d/new") == new
    assert s3_body(s3, bucket, "d/old") == old


def kill_with_a_file_staged(m, name, data):
    """Write data to name and kill -9 the daemon before the file is closed:
    the file stays staged."""
    fd = os.open(m.path / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        assert os.write(fd, data) == len(data)
        m.kill()
    finally:
        try:
            os.close(fd)
        except OSError:
            pass  # the mount is gone


def test_staged_data_needs_its_key(mount, s3, bucket, s3rver, keys, tmp_path):
    ka, _ = new_key_file(keys, "a")
    kb, _ = new_key_file(keys, "b")
    data = canary_bytes(MiB + 99, "staged")
    m = mount(bucket, chunk_size="256K", encrypt="aes-256-gcm", key_file=str(ka))
    id_a = m.stderr_text().split("key id ")[1].split()[0]
    kill_with_a_file_staged(m, "pending", data)
    staged = staging_files(m.cache_dir)
    assert [p.name.endswith(".sealed") for p in staged] == [True], staged
    assert files_with_plaintext(m.cache_dir, data) == []
    assert s3_body(s3, bucket, "pending") is None

    # another key, or none: refused, naming the key needed; nothing dropped
    for opts in (f"encrypt=aes-256-gcm,key_file={kb}", "encrypt=none"):
        rc, err = mount.run([bucket, m.path, "-f", "-o",
                             f"endpoint={s3rver.endpoint},cache_dir={m.cache_dir},{opts}"])
        errors = [line for line in err.splitlines() if line.startswith(PROG) and ": warn: " not in line
                  and ": info: " not in line]
        assert rc == 1 and len(errors) == 1, (rc, err)
        assert f"key id {id_a}" in errors[0] and "pending" in errors[0], errors
        assert staging_files(m.cache_dir) == staged, "a refused start changed the staging files"

    m.start()  # the right key: the upload resumes
    wait_for(lambda: s3_body(s3, bucket, "pending") == data, 60, "the staged file to be uploaded", interval=0.2)
    wait_for(lambda: staging_files(m.cache_dir) == [], 30, "staging to empty", interval=0.1)
    m.unmount()


def test_plain_staging_file_is_sealed_by_a_mount_with_a_key(mount, s3, bucket, keys):
    ka, _ = new_key_file(keys)
    data = canary_bytes(600 * KiB, "convert")
    m = mount(bucket, chunk_size="256K")
    kill_with_a_file_staged(m, "plain-pending", data)
    staged = staging_files(m.cache_dir)
    assert len(staged) == 1 and not staged[0].name.endswith(".sealed"), staged
    assert files_with_plaintext(m.cache_dir, data) == [str(staged[0])]
    m.options.update(encrypt="aes-256-gcm", key_file=str(ka))
    m.start()
    wait_for(lambda: s3_body(s3, bucket, "plain-pending") == data, 60, "the staged file to be uploaded",
             interval=0.2)
    assert "was not encrypted: encrypted it" in m.stderr_text()
    assert files_with_plaintext(m.cache_dir, data) == []
    m.unmount()


def test_ephemeral_crash_leftovers_are_reported_lost(mount, s3, bucket):
    data = canary_bytes(300 * KiB, "eph-crash")
    m = mount(bucket, chunk_size="256K", encrypt="ephemeral", expect_errors=True)
    kill_with_a_file_staged(m, "doomed", data)
    assert staging_files(m.cache_dir)
    m.start()  # another ephemeral key: the old one is gone for good
    err = m.stderr_text()
    assert "encrypted with an ephemeral key, which is gone" in err and "doomed" in err, err[-2000:]
    assert staging_files(m.cache_dir) == []
    m.unmount()
    assert s3_body(s3, bucket, "doomed") is None


# ---- the write path, sealed -----------------------------------------------------------

def keyed(mount, key_file):
    """A mount factory that mounts with encryption under key_file."""
    def make(bucket, **opts):
        return mount(bucket, encrypt="aes-256-gcm", key_file=str(key_file), **opts)
    return make


def test_random_operations_on_a_sealed_staging_file(mount, s3, bucket, tmp_path, keys):
    kf, _ = new_key_file(keys)
    test_mount_write.test_random_operations_match_a_local_file(keyed(mount, kf), s3, bucket, tmp_path)


def test_sequential_and_random_offset_writes_sealed(mount, s3, bucket, keys):
    kf, _ = new_key_file(keys)
    test_mount_write.test_sequential_and_random_offset_writes(keyed(mount, kf), s3, bucket)


def test_large_sealed_file_goes_multipart(mount, s3, bucket, s3rver, keys):
    kf, _ = new_key_file(keys)
    data = canary_bytes(13 * MiB + 5, "multipart")
    old = canary_bytes(12 * MiB, "multipart-base")
    s3.put_object(Bucket=bucket, Key="base", Body=old)
    m = mount(bucket, chunk_size="1M", part_size="5M", multipart_threshold="8M", encrypt="aes-256-gcm",
              key_file=str(kf))
    s3rver.clear_log()
    with open(m.path / "big", "wb") as f:
        for off in range(0, len(data), MiB):
            f.write(data[off:off + MiB])
    assert s3_body(s3, bucket, "big") == data
    assert "-" in s3.head_object(Bucket=bucket, Key="big")["ETag"], "not a multipart upload"
    parts = [r for r in object_requests(s3rver, bucket, "PUT", "big") if "partNumber=" in r]
    assert len(parts) == 3, parts

    # an in-place change of a large object: untouched parts are copied
    with open(m.path / "base", "r+b") as f:
        f.seek(11 * MiB + 3)
        f.write(b"CHANGED")
    want = old[:11 * MiB + 3] + b"CHANGED" + old[11 * MiB + 10:]
    assert s3_body(s3, bucket, "base") == want
    assert files_with_plaintext(m.cache_dir, data) == []
    assert files_with_plaintext(m.cache_dir, old) == []
    m.unmount()


def test_ephemeral_unmount_says_what_is_lost(mount, s3, bucket, proxy):
    data = canary_bytes(200 * KiB, "eph-lost")
    m = mount(bucket, endpoint=proxy.endpoint, chunk_size="64K", retries="1", timeout="5s", encrypt="ephemeral",
              expect_errors=True)
    fd = os.open(m.path / "lost", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    proxy.add("500", count=None, method="PUT")
    proxy.add("500", count=None, method="POST")
    assert os.write(fd, data) == len(data)
    with pytest.raises(OSError):
        os.close(fd)  # the upload is refused: the file stays staged
    assert staging_files(m.cache_dir)
    m.unmount()  # one more refused try, then the key and the cache go
    lost = [line for line in m.stderr_text().splitlines() if "could not be uploaded" in line]
    assert lost == [f"{PROG}'lost' could not be uploaded and is lost with the ephemeral key"], lost
    left = sorted(str(p.relative_to(m.cache_dir)) for p in Path(m.cache_dir).rglob("*"))
    assert left == ["lock"], f"the cache folder still holds {left}"
    assert s3_body(s3, bucket, "lost") != data
