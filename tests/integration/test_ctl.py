"""s3cachefs-ctl on real mounts (live, through the daemon's control socket)
and on unmounted cache folders (offline, in the tool itself), and the cache
policies cache_max_entries and cache_max_age.

What reached S3 is counted in the server's request log; objects written
through the mount are checked with boto3.
"""

import fcntl
import json
import os
import pty
import shutil
import stat
import subprocess
import time

import pytest

from conftest import ACCESS_KEY, BUILD_DIR, SECRET_KEY, need, wait_for
from mount import (
    MiB,
    chunk_files,
    object_requests,
    put_many,
    rand_bytes,
    read_file,
    s3_body,
    sha,
)

CTL = BUILD_DIR / "tools" / "s3cachefs-ctl"
PREFIX = "s3cachefs-ctl: "


@pytest.fixture
def ctl(s3rver, tmp_path, mount):
    """ctl(*args) -> (rc, stdout, stderr) of s3cachefs-ctl, with the test
    server's endpoint and credentials and a private HOME."""
    need(CTL.is_file() and os.access(CTL, os.X_OK), f"tool {CTL} (build with meson/ninja)")
    home = tmp_path / "ctlhome"
    home.mkdir(exist_ok=True)

    def run(*args, env=None, timeout=120, tty=False):
        e = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "S3CACHEFS_"))}
        e.update(HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"),
                 AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY,
                 S3CACHEFS_ENDPOINT=s3rver.endpoint)
        e.update(env or {})
        argv = [str(CTL), *[str(a) for a in args]]
        if tty:
            return run_on_pty(argv, e, timeout)
        p = subprocess.run(argv, capture_output=True, stdin=subprocess.DEVNULL, env=e, timeout=timeout)
        return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")

    return run


def run_on_pty(argv, env, timeout):
    """Run with stdout on a pseudo-terminal: (rc, what it printed, stderr)."""
    master, slave = pty.openpty()
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=slave, stderr=subprocess.PIPE, env=env)
    os.close(slave)
    out = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            try:
                b = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not b:
                break
            out += b
        err = p.stderr.read()
        rc = p.wait(timeout=max(1, deadline - time.monotonic()))
    finally:
        os.close(master)
        if p.poll() is None:
            p.kill()
            p.wait()
    return rc, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")


def ok(res):
    rc, out, err = res
    assert rc == 0, f"rc {rc}: {err!r}"
    assert err == "", f"unexpected stderr: {err!r}"
    return out


def one_error(res, want_rc):
    rc, out, err = res
    assert rc == want_rc, f"rc {rc}, want {want_rc}: {err!r}"
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(PREFIX) and lines[0][len(PREFIX):].strip(), (
        f"want one error line, got {err!r}")
    return lines[0]


def stats(ctl, cache_dir):
    return json.loads(ok(ctl("-C", cache_dir, "stats", "--json")))


def ls(ctl, cache_dir, *args):
    return {o["key"]: o for o in json.loads(ok(ctl("-C", cache_dir, "ls", "--json", *args)))}


def read_uncached(path):
    """Read through the mount, not the kernel's page cache of the file."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        chunks = []
        while True:
            b = os.read(fd, 1 << 20)
            if not b:
                return b"".join(chunks)
            chunks.append(b)
    finally:
        os.close(fd)


def gets(server, bucket, key=None):
    return object_requests(server, bucket, "GET", key)


# ---- the command line ------------------------------------------------------------

def test_usage_errors_and_missing_folder(ctl, tmp_path):
    assert "stats [--json]" in ok(ctl("--help"))
    for args in ([], ["frobnicate"], ["stats", "extra"], ["gc", "--older-than", "soon"],
                 ["gc", "--older-than"], ["warm"], ["ls", "a", "b"], ["stats", "--bogus"],
                 ["-Q", "stats"], ["-o", "no_such_option=1", "stats"], ["gc"]):
        one_error(ctl(*args), 2)
    line = one_error(ctl("-C", tmp_path / "nowhere", "stats"), 1)
    assert "nowhere" in line, line
    (tmp_path / "plain").mkdir()
    line = one_error(ctl("-C", tmp_path / "plain", "stats"), 1)
    assert "not an s3cachefs cache folder" in line, line


# ---- live ---------------------------------------------------------------------------

def test_live_stats_ls_evict_clear_then_offline(ctl, mount, s3, bucket, s3rver):
    big = rand_bytes(10 * MiB, "big")
    small = rand_bytes(300_000, "small")
    put_many(s3, bucket, {"d/big": big, "d/small": small, "other": b"x" * 1000})
    m = mount(bucket, chunk_size="1M", meta_ttl="1h")
    cache = m.cache_dir

    assert read_file(m.path / "d" / "big") == big
    st = stats(ctl, cache)
    assert st["mounted"] is True and st["bucket"] == bucket and st["endpoint"] == s3rver.endpoint, st
    assert st["misses"] > 0, st
    assert st["bytes_downloaded"] >= 10 * MiB, st
    assert st["requests"]["get"] >= 10, st
    assert st["entries"] == 1 and st["chunks"] == 10, st
    assert st["logical_bytes"] == 10 * MiB, st
    assert st["bytes_on_disk"] >= 10 * MiB and st["cap_bytes"] > 0, st
    hits0 = st["hits"]

    assert read_uncached(m.path / "d" / "big") == big
    assert read_file(m.path / "d" / "small") == small
    st = stats(ctl, cache)
    assert st["hits"] >= hits0 + 10, st
    assert st["entries"] == 2, st
    text = ok(ctl("-C", cache, "stats"))
    assert "hit rate:" in text and "mounted" in text, text

    listed = ls(ctl, cache)
    assert set(listed) == {"d/big", "d/small"}, listed
    assert listed["d/big"]["cached_bytes"] == 10 * MiB and listed["d/big"]["size"] == 10 * MiB
    assert listed["d/big"]["chunks"] == 10
    assert listed["d/small"]["cached_bytes"] == 300_000
    lines = ok(ctl("-C", cache, "ls", "d/s")).splitlines()
    assert lines == ["300000\t300000\t1\td/small"], lines

    # evict one object: the next read fetches it again, the other stays
    out = ok(ctl("-C", cache, "evict", "d/big"))
    assert "dropped 10 chunks" in out, out
    assert set(ls(ctl, cache)) == {"d/small"}
    s3rver.clear_log()
    assert read_uncached(m.path / "d" / "big") == big
    assert len(gets(s3rver, bucket, "d/big")) >= 10, "an evicted file was read without GETs"
    assert read_uncached(m.path / "d" / "small") == small
    assert gets(s3rver, bucket, "d/small") == [], "evict dropped another object"

    # clear everything: every read fetches again
    out = ok(ctl("-C", cache, "clear"))
    assert "dropped 11 chunks" in out, out
    assert ls(ctl, cache) == {}
    assert stats(ctl, cache)["entries"] == 0
    s3rver.clear_log()
    assert read_uncached(m.path / "d" / "small") == small
    assert len(gets(s3rver, bucket, "d/small")) == 1
    live = stats(ctl, cache)

    m.unmount()
    # offline: the counters outlived the mount
    st = stats(ctl, cache)
    assert st["mounted"] is False, st
    for k in ("hits", "misses", "bytes_downloaded", "evictions"):
        assert st[k] >= live[k], (k, st, live)
    assert st["requests"]["get"] >= live["requests"]["get"], st
    assert st["entries"] == 1, st
    # a second mount adds to them
    m.remount()
    assert read_uncached(m.path / "d" / "small") == small
    again = stats(ctl, cache)
    assert again["hits"] > st["hits"], (again, st)
    m.unmount()


def test_clear_keeps_data_being_written(ctl, mount, s3, bucket):
    s3.put_object(Bucket=bucket, Key="cached", Body=b"c" * 200_000)
    m = mount(bucket, chunk_size="64K")
    assert read_file(m.path / "cached") == b"c" * 200_000
    data = rand_bytes(3 * MiB + 5, "staged")
    fd = os.open(m.path / "new", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data[: 2 * MiB])
        out = ok(ctl("-C", m.cache_dir, "clear"))
        assert "kept 1 file being written" in out, out
        os.write(fd, data[2 * MiB:])
    finally:
        os.close(fd)
    assert s3_body(s3, bucket, "new") == data, "clear lost data being written"
    assert "cached" not in ls(ctl, m.cache_dir)
    m.unmount()


def test_warm_live_and_offline_then_reads_make_no_gets(ctl, mount, s3, bucket, s3rver):
    files = {f"w/f{i}": rand_bytes(700_000 + i, f"w{i}") for i in range(4)}
    files["w/sub/deep"] = rand_bytes(2 * MiB + 3, "deep")
    files["w/empty"] = b""
    files["wx"] = b"not below w/"
    put_many(s3, bucket, files)
    m = mount(bucket, chunk_size="256K", meta_ttl="1h")
    res = ctl("-C", m.cache_dir, "warm", "w")
    out = ok(res)
    lines = out.splitlines()
    warmed = sorted(line.split()[1] for line in lines if line.startswith("warmed "))
    assert warmed == sorted(k for k in files if k.startswith("w/")), out
    assert "\r" not in out, "a progress bar on a pipe"
    assert lines[-1].startswith("warm: 6 objects"), out
    listed = ls(ctl, m.cache_dir)
    assert "wx" not in listed and listed["w/sub/deep"]["cached_bytes"] == 2 * MiB + 3

    s3rver.clear_log()
    for key, data in files.items():
        if key.startswith("w/"):
            assert sha(read_file(m.path / key)) == sha(data), key
    assert gets(s3rver, bucket) == [], "warmed files were fetched again"
    one_error(ctl("-C", m.cache_dir, "warm", "nothing/here"), 1)
    m.unmount()

    # offline: the tool fetches with the recorded endpoint and chunk size
    s3.put_object(Bucket=bucket, Key="late/obj", Body=rand_bytes(900_000, "late"))
    out = ok(ctl("-C", m.cache_dir, "warm", "late/"))
    assert "warmed late/obj (900000 bytes)" in out, out
    m.remount()
    s3rver.clear_log()
    assert read_file(m.path / "late" / "obj") == rand_bytes(900_000, "late")
    assert gets(s3rver, bucket) == [], "an object warmed offline was fetched again"
    m.unmount()


def test_warm_on_a_terminal_draws_a_progress_bar(ctl, mount, s3, bucket, s3rver):
    files = {f"t/f{i}": rand_bytes(600_000, f"t{i}") for i in range(3)}
    put_many(s3, bucket, files)
    m = mount(bucket, chunk_size="128K", meta_ttl="1h")
    rc, out, err = ctl("-C", m.cache_dir, "warm", "t/", tty=True)
    assert rc == 0 and err == "", (rc, err)
    assert "\r[" in out and "3/3 objects" in out and "MiB/s" in out, repr(out)
    assert "warmed " not in out, "per-object lines on a terminal"
    assert out.rstrip().splitlines()[-1].split("\r")[-1].lstrip("\x1b[K").startswith("warm: 3 objects"), repr(out)
    s3rver.clear_log()
    for key, data in files.items():
        assert read_file(m.path / key) == data
    assert gets(s3rver, bucket) == []
    m.unmount()


def test_verify_live_drops_a_corrupt_chunk(ctl, mount, s3, bucket, s3rver):
    data = rand_bytes(4 * MiB, "verify")
    s3.put_object(Bucket=bucket, Key="v", Body=data)
    m = mount(bucket, chunk_size="1M", meta_ttl="1h")
    assert read_file(m.path / "v") == data
    # a reader is answered before the writer thread stores its chunk
    wait_for(lambda: len(chunk_files(m.cache_dir)) == 4, 10, "4 chunks cached")
    out = ok(ctl("-C", m.cache_dir, "verify"))
    assert out.strip() == "verify: checked 4 chunks, dropped 0 bad", out
    victim = chunk_files(m.cache_dir)[2]
    raw = bytearray(victim.read_bytes())
    raw[len(raw) // 2] ^= 0x55
    victim.write_bytes(bytes(raw))
    out = ok(ctl("-C", m.cache_dir, "verify"))
    assert out.strip() == "verify: checked 4 chunks, dropped 1 bad", out
    assert not victim.exists()
    assert stats(ctl, m.cache_dir)["corrupt"] == 1
    s3rver.clear_log()
    assert read_uncached(m.path / "v") == data
    assert len(gets(s3rver, bucket, "v")) == 1, "the dropped chunk was not fetched again, once"
    m.unmount()


def test_gc_offline_removes_old_data_and_orphans(ctl, mount, s3, bucket):
    put_many(s3, bucket, {"g/a": rand_bytes(500_000, "ga"), "g/b": rand_bytes(500_000, "gb")})
    m = mount(bucket, chunk_size="256K")
    read_file(m.path / "g" / "a")
    t_a = time.monotonic()
    m.unmount()
    # b, read now, is younger than the limit; a is older
    m.remount()
    wait_for(lambda: time.monotonic() > t_a + 2.5, 10, "a to age")
    read_file(m.path / "g" / "b")
    m.unmount()
    stray = m.cache_dir / "chunks" / "ab" / ("ab" + "1" * 62)
    stray.write_bytes(b"junk")
    out = ok(ctl("-C", m.cache_dir, "gc", "--older-than", "2s"))
    assert "removed 1 orphan files" in out and " 2 too old" in out, out
    assert not stray.exists()
    assert set(ls(ctl, m.cache_dir)) == {"g/b"}
    out = ok(ctl("-C", m.cache_dir, "evict", "g/b"))
    assert ls(ctl, m.cache_dir) == {} and chunk_files(m.cache_dir) == [], out


def test_lock_held_without_socket_is_one_error(ctl, mount, s3, bucket):
    m = mount(bucket)
    sock = m.cache_dir / "ctl.sock"
    assert stat.S_ISSOCK(sock.stat().st_mode) and stat.S_IMODE(sock.stat().st_mode) == 0o600
    m.unmount()
    assert not sock.exists(), "the socket outlived the mount"
    # a stale socket file (a killed daemon's) is replaced at the next mount
    sock.write_bytes(b"stale")
    m.remount()
    assert stats(ctl, m.cache_dir)["mounted"] is True
    m.unmount()
    fd = os.open(m.cache_dir / "lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        line = one_error(ctl("-C", m.cache_dir, "stats"), 1)
        assert "does not answer" in line, line
    finally:
        os.close(fd)
    assert stats(ctl, m.cache_dir)["mounted"] is False


def test_path_inside_mount(ctl, mount, s3, bucket, s3rver):
    put_many(s3, bucket, {"pre/p/one": rand_bytes(400_000, "one"), "pre/p/two": b"2" * 1000})
    m = mount(bucket, prefix="pre", chunk_size="256K", meta_ttl="1h")
    assert os.getxattr(m.path, "user.s3cachefs.cache_dir") == str(m.cache_dir).encode()
    # a path outside any mount: the tool asks for -C
    line = one_error(ctl("warm", m.cache_dir), 2)  # a usage error
    assert "give -C" in line, line
    out = ok(ctl("warm", m.path / "p"))
    assert "warmed pre/p/one" in out and "warmed pre/p/two" in out, out
    s3rver.clear_log()
    assert read_file(m.path / "p" / "one") == rand_bytes(400_000, "one")
    assert gets(s3rver, bucket) == []
    assert "pre/p/one" in json.loads(ok(ctl("ls", "--json", m.path / "p")))[0]["key"]
    ok(ctl("evict", m.path / "p" / "one"))
    assert set(ls(ctl, m.cache_dir)) == {"pre/p/two"}
    m.unmount()


def test_without_c_every_default_folder_is_reported(ctl, mount, s3, bucket):
    need(os.geteuid() == 0, "root: the daemon's default cache root is /var/cache/s3cachefs")
    s3.put_object(Bucket=bucket, Key="k", Body=b"z" * 70_000)
    m = mount(bucket, cache_dir=False, chunk_size="64K")
    try:
        assert read_file(m.path / "k") == b"z" * 70_000
        reports = json.loads(ok(ctl("stats", "--json")))
        assert isinstance(reports, list), reports
        ours = [r for r in reports if r["bucket"] == bucket]
        assert len(ours) == 1 and ours[0]["mounted"] is True, reports
        assert ours[0]["cache_dir"].startswith("/var/cache/s3cachefs/" + bucket + "-"), ours
        assert ours[0]["logical_bytes"] == 70_000, ours
        listing = json.loads(ok(ctl("ls", "--json")))
        mine = [x for x in listing if x["cache_dir"] == ours[0]["cache_dir"]]
        assert len(mine) == 1 and [o["key"] for o in mine[0]["objects"]] == ["k"], listing
        m.unmount()
    finally:
        if m.alive():
            m.unmount()
        for d in os.listdir("/var/cache/s3cachefs"):
            if d.startswith(bucket + "-"):
                shutil.rmtree(os.path.join("/var/cache/s3cachefs", d))


# ---- the policies ---------------------------------------------------------------------

def test_cache_max_entries(ctl, mount, s3, bucket, s3rver):
    files = {f"e/f{i}": rand_bytes(300_000, f"e{i}") for i in range(4)}
    put_many(s3, bucket, files)
    m = mount(bucket, chunk_size="64K", meta_ttl="1h", cache_max_entries="2")
    for key in sorted(files):
        assert read_file(m.path / key) == files[key]
    st = stats(ctl, m.cache_dir)
    assert st["entries"] <= 2 and st["max_entries"] == 2, st
    assert set(ls(ctl, m.cache_dir)) == {"e/f2", "e/f3"}, "not the two most recently read"
    s3rver.clear_log()
    assert read_file(m.path / "e" / "f3") == files["e/f3"]
    assert gets(s3rver, bucket) == []
    m.unmount()
    st = stats(ctl, m.cache_dir)
    assert st["entries"] <= 2 and st["evictions"] >= 10, st


def test_cache_max_age(ctl, mount, s3, bucket):
    s3.put_object(Bucket=bucket, Key="old", Body=rand_bytes(500_000, "old"))
    m = mount(bucket, chunk_size="64K", cache_max_age="2s")
    t0 = time.monotonic()
    assert read_file(m.path / "old") == rand_bytes(500_000, "old")
    assert stats(ctl, m.cache_dir)["max_age_ms"] == 2000
    wait_for(lambda: stats(ctl, m.cache_dir)["entries"] == 0, 15, "unused data to go", interval=0.2)
    assert time.monotonic() - t0 >= 2.0, "data went before it was 2 s old"
    assert stats(ctl, m.cache_dir)["expired"] >= 8
    m.unmount()


def test_rotate_key(ctl, mount, s3, bucket, s3rver, tmp_path):
    from test_mount_crypt import canary_bytes, files_with_plaintext, new_key_file

    ka, _ = new_key_file(tmp_path, "a")
    kb, _ = new_key_file(tmp_path, "b")
    data = canary_bytes(3 * MiB + 5, "rotate")
    s3.put_object(Bucket=bucket, Key="f", Body=data)
    m = mount(bucket, chunk_size="1M", meta_ttl="1h", encrypt="aes-256-gcm", key_file=str(ka))
    assert read_file(m.path / "f") == data
    # a mount holds the key: refused, nothing changed
    line = one_error(ctl("-C", m.cache_dir, "-o", f"key_file={ka}", "rotate-key", "--new-key-file", kb), 1)
    assert "unmount" in line, line
    one_error(ctl("-C", m.cache_dir, "rotate-key"), 2)
    m.unmount()

    out = ok(ctl("-C", m.cache_dir, "-o", f"key_file={ka}", "rotate-key", "--new-key-file", kb))
    assert "4 chunks re-encrypted, 0 dropped" in out, out
    # the new key reads the cache without a request
    m.remount(key_file=str(kb))
    s3rver.clear_log()
    assert read_file(m.path / "f") == data
    assert gets(s3rver, bucket) == []
    m.unmount()
    assert files_with_plaintext(m.cache_dir, data) == []

    # to plain, from the variable's key: the chunks then hold the data as it is
    env = {"S3CACHEFS_ENCRYPTION_KEY": kb.read_text().strip()}
    out = ok(ctl("-C", m.cache_dir, "rotate-key", "--decrypt", env=env))
    assert "rotated to plain: 4 chunks" in out, out
    assert files_with_plaintext(m.cache_dir, data) != []
    m.remount(encrypt="none", key_file=None)
    s3rver.clear_log()
    assert read_file(m.path / "f") == data
    assert gets(s3rver, bucket) == []
