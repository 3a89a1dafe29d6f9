"""Running s3cachefs as a service: configuration sources, ownership and
permissions, validate=, O_DIRECT, cache=memory, the cache-state extended
attributes, mount point checks, a private cache folder, SIGTERM with a file
still open, and what the logs say (and never say).

Every file is checked against what boto3 wrote or reads back; request
counts come from the server's log.
"""

import os
import signal
import socket
import stat
import subprocess
import threading

import pytest

from conftest import ALT_ACCESS_KEY, ALT_SECRET_KEY, wait_for
from mount import (
    MiB,
    chunk_files,
    is_mounted,
    object_requests,
    rand_bytes,
    read_file,
    s3_body,
)

PROG = "s3cachefs: "


def one_line(rc, err, want_rc):
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == want_rc, f"exit {rc}, want {want_rc}: {err!r}"
    assert len(lines) == 1, f"expected one stderr line, got {len(lines)}: {err!r}"
    assert lines[0].startswith(PROG), lines[0]
    return lines[0]


def perm(path):
    return stat.S_IMODE(os.stat(path).st_mode)


# ---- configuration ----------------------------------------------------------


def test_config_file_then_environment_then_o(mount, s3, bucket, tmp_path):
    s3.put_object(Bucket=bucket, Key="f", Body=b"x")
    conf = tmp_path / "s3cachefs.conf"
    conf.write_text("# sizes and durations take units\n"
                    "umask = 077\n"
                    "cache_size = 500M\n"
                    "meta_ttl = 5m\n"
                    "\n"
                    "cache_max_age = 24h\n")
    # the config file alone
    m = mount(bucket, config=str(conf))
    assert perm(m.path / "f") == 0o600
    m.unmount()
    # the environment beats the file (and may name the file itself)
    m = mount(bucket, env={"S3CACHEFS_CONFIG": str(conf), "S3CACHEFS_UMASK": "027"})
    assert perm(m.path / "f") == 0o640
    m.unmount()
    # -o beats both
    m = mount(bucket, env={"S3CACHEFS_CONFIG": str(conf), "S3CACHEFS_UMASK": "027"}, umask="022")
    assert perm(m.path / "f") == 0o644
    assert read_file(m.path / "f") == b"x"
    m.unmount()


@pytest.mark.parametrize("text, env, words", [
    ("cache_size = 12Q\n", {}, ["line 1", "cache_size", "12Q"]),
    ("meta_ttl = 5m\nbogus_option = 1\n", {}, ["line 2", "bogus_option"]),
    ("", {"S3CACHEFS_NO_SUCH": "1"}, ["S3CACHEFS_NO_SUCH"]),
    ("", {"S3CACHEFS_META_TTL": "ten"}, ["S3CACHEFS_META_TTL", "ten"]),
])
def test_bad_configuration_is_one_line(mount, bucket, s3rver, tmp_path, text, env, words):
    conf = tmp_path / "bad.conf"
    conf.write_text(text)
    mp = mount.new_dir("mnt")
    rc, err = mount.run([bucket, mp, "-f", "-o", f"endpoint={s3rver.endpoint},config={conf}"], env=env)
    line = one_line(rc, err, 2)
    for w in words:
        assert w in line, (w, line)
    assert not is_mounted(mp)


def test_missing_config_file_is_named(mount, bucket, s3rver, tmp_path):
    mp = mount.new_dir("mnt")
    rc, err = mount.run([bucket, mp, "-f", "-o", f"endpoint={s3rver.endpoint},config={tmp_path}/nope.conf"])
    line = one_line(rc, err, 2)
    assert "nope.conf" in line, line


# ---- ownership and permissions ----------------------------------------------


def test_uid_gid_umask(mount, s3, bucket):
    s3.put_object(Bucket=bucket, Key="plain", Body=b"p")
    s3.put_object(Bucket=bucket, Key="d/owned", Body=b"o",
                  Metadata={"uid": "1234", "gid": "4321", "mode": str(0o100666)})
    m = mount(bucket, uid="nobody", gid="65533", umask="027")
    st = os.stat(m.path / "plain")
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (65534, 65533, 0o640)
    st = os.stat(m.path / "d")
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (65534, 65533, 0o750)
    # what the object says wins over uid=/gid=; umask still applies
    st = os.stat(m.path / "d" / "owned")
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1234, 4321, 0o640)
    assert read_file(m.path / "d" / "owned") == b"o"


def test_bad_uid_is_refused(mount, bucket, s3rver):
    mp = mount.new_dir("mnt")
    rc, err = mount.run([bucket, mp, "-f", "-o", f"endpoint={s3rver.endpoint},uid=no-such-user-here"])
    assert "no-such-user-here" in one_line(rc, err, 2)


def as_nobody(*argv):
    return subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *argv],
                          capture_output=True, timeout=30)


@pytest.fixture
def open_mountpoint():
    """A mount point another user can reach (pytest's tmp dirs are 0700)."""
    import tempfile

    d = tempfile.mkdtemp(prefix="s3cachefs-mnt-")
    os.chmod(d, 0o755)
    yield d
    if not is_mounted(d):
        os.rmdir(d)


def test_allow_other(mount, s3, bucket, open_mountpoint):
    from pathlib import Path

    s3.put_object(Bucket=bucket, Key="f", Body=b"shared")
    mp = Path(open_mountpoint)
    p = as_nobody("ls", str(mp))
    assert p.returncode == 0, p  # the folder itself is open to nobody
    m = mount(bucket, mountpoint=mp)
    p = as_nobody("cat", str(mp / "f"))
    assert p.returncode != 0 and b"Permission denied" in p.stderr, p
    m.unmount()
    m = mount(bucket, mountpoint=mp, allow_other=True)
    p = as_nobody("cat", str(mp / "f"))
    assert p.returncode == 0 and p.stdout == b"shared", p
    # default_permissions: the modes shown are enforced for that user
    p = as_nobody("sh", "-c", f"echo x > {mp}/f")
    assert p.returncode != 0 and b"Permission denied" in p.stderr, p
    assert s3.get_object(Bucket=bucket, Key="f")["Body"].read() == b"shared"
    m.unmount()


# ---- validate= and O_DIRECT ----------------------------------------------------


def test_validate_always_asks_at_every_open(mount, s3, bucket, s3rver):
    s3.put_object(Bucket=bucket, Key="f", Body=b"v1")
    m = mount(bucket, validate="always", meta_ttl="1h")
    assert read_file(m.path / "f") == b"v1"
    heads = len(object_requests(s3rver, bucket, "HEAD", "f"))
    s3.put_object(Bucket=bucket, Key="f", Body=b"v2")  # same size
    assert read_file(m.path / "f") == b"v2"  # within the TTL: seen at open
    assert len(object_requests(s3rver, bucket, "HEAD", "f")) == heads + 1


def test_validate_never_trusts_what_it_knows(mount, s3, bucket, s3rver):
    s3.put_object(Bucket=bucket, Key="f", Body=b"v1")
    m = mount(bucket, validate="never", meta_ttl="0")
    assert read_file(m.path / "f") == b"v1"
    s3.put_object(Bucket=bucket, Key="f", Body=b"v2")
    before = len(s3rver.log_lines())
    for _ in range(3):
        assert read_file(m.path / "f") == b"v1"
    assert s3rver.log_lines()[before:] == []  # no request at all
    # a new file is still found: names it has no row for are asked about
    s3.put_object(Bucket=bucket, Key="g", Body=b"new")
    assert read_file(m.path / "g") == b"new"


def test_o_direct_reads_bypass_the_cache(mount, s3, bucket, s3rver):
    data = rand_bytes(3 * MiB + 5, "direct")
    s3.put_object(Bucket=bucket, Key="f", Body=data)
    m = mount(bucket, chunk_size="1M")
    for _ in range(2):
        before = len(object_requests(s3rver, bucket, "GET", "f"))
        fd = os.open(m.path / "f", os.O_RDONLY | os.O_DIRECT)
        try:
            got = b"".join(iter(lambda: os.read(fd, MiB), b""))
        finally:
            os.close(fd)
        assert got == data
        assert len(object_requests(s3rver, bucket, "GET", "f")) > before  # each time from S3
    assert chunk_files(m.cache_dir) == []  # and nothing cached
    assert os.getxattr(m.path / "f", "user.s3cachefs.last_open") == b"direct"
    assert read_file(m.path / "f") == data  # a normal open still works, and caches
    # (a reader is answered before the writer thread stores its chunk)
    wait_for(lambda: len(chunk_files(m.cache_dir)) == 4, 10, "4 chunks cached")


# ---- cache=memory -------------------------------------------------------------


def shm_folders():
    return {p for p in os.listdir("/dev/shm") if p.startswith("s3cachefs.")}


def test_cache_memory_lives_in_ram_and_goes_at_exit(mount, s3, bucket, s3rver):
    data = rand_bytes(2 * MiB, "mem")
    s3.put_object(Bucket=bucket, Key="f", Body=data)
    before = shm_folders()
    m = mount(bucket, cache_dir=False, cache="memory", chunk_size="1M", cache_size="8M")
    assert read_file(m.path / "f") == data
    new = shm_folders() - before
    assert len(new) == 1, new
    folder = "/dev/shm/" + new.pop()
    assert perm(folder) == 0o700
    # a reader is answered before its chunk is written to the cache
    wait_for(lambda: len(chunk_files(folder)) == 2, 10, "both chunks cached in RAM")
    gets = len(object_requests(s3rver, bucket, "GET", "f"))
    subprocess.run(["sh", "-c", "echo 3 > /proc/sys/vm/drop_caches"], check=True)
    assert read_file(m.path / "f") == data
    assert len(object_requests(s3rver, bucket, "GET", "f")) == gets  # served from RAM
    m.unmount()
    assert not os.path.exists(folder)


# ---- extended attributes --------------------------------------------------------


def xattrs(path):
    return {k: os.getxattr(path, k).decode() for k in os.listxattr(path)}


def test_xattrs_show_the_cache_state(mount, s3, bucket):
    data = rand_bytes(3 * MiB, "x")
    etag = s3.put_object(Bucket=bucket, Key="d/f", Body=data)["ETag"]
    # readahead=0: no chunk fetched ahead, nor the whole file for a read
    # at its end (the footer pattern), so one read caches one chunk
    m = mount(bucket, chunk_size="1M", readahead="0")
    f = m.path / "d" / "f"
    x = xattrs(f)
    assert x["user.s3cachefs.etag"] == etag
    assert x["user.s3cachefs.cached_bytes"] == "0"
    assert x["user.s3cachefs.cached_chunks"] == "0/3"
    assert x["user.s3cachefs.last_open"] == "unknown"
    assert x["user.s3cachefs.staged"] == "no"
    with open(f, "rb") as fh:
        fh.seek(2 * MiB + 10)
        assert fh.read(100) == data[2 * MiB + 10:2 * MiB + 110]
    wait_for(lambda: xattrs(f)["user.s3cachefs.cached_bytes"] == str(MiB), 10, "the chunk cached")
    x = xattrs(f)
    assert x["user.s3cachefs.cached_bytes"] == str(MiB)
    assert x["user.s3cachefs.cached_chunks"] == "1/3"
    assert x["user.s3cachefs.last_open"] == "s3"
    assert read_file(f) == data
    wait_for(lambda: xattrs(f)["user.s3cachefs.cached_bytes"] == str(3 * MiB), 10, "all cached")
    subprocess.run(["sh", "-c", "echo 3 > /proc/sys/vm/drop_caches"], check=True)
    assert read_file(f) == data
    assert xattrs(f)["user.s3cachefs.last_open"] == "cache"
    # getfattr -d, as a user would ask
    p = subprocess.run(["getfattr", "-d", str(f)], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0 and f'user.s3cachefs.etag="\\"{etag.strip(chr(34))}\\""' in p.stdout, p
    # the root tells where the cache is; other folders have nothing
    assert xattrs(m.path) == {"user.s3cachefs.cache_dir": str(m.cache_dir)}
    assert xattrs(m.path / "d") == {}
    # a file being written is staged until it is closed
    with open(m.path / "d" / "new", "wb") as w:
        w.write(b"staged bytes")
        w.flush()
        assert os.getxattr(m.path / "d" / "new", "user.s3cachefs.staged") == b"yes"
    assert os.getxattr(m.path / "d" / "new", "user.s3cachefs.staged") == b"no"
    with pytest.raises(OSError) as e:
        os.getxattr(f, "user.s3cachefs.nonsense")
    assert e.value.errno == 61  # ENODATA


# ---- mount point, cache folder -------------------------------------------------


def test_nonempty_and_busy_mount_points(mount, s3, bucket, s3rver):
    s3.put_object(Bucket=bucket, Key="f", Body=b"f")
    mp = mount.new_dir("mnt")
    (mp / "local").write_bytes(b"mine")
    base = f"endpoint={s3rver.endpoint},cache_min_free=0"
    line = one_line(*mount.run([bucket, mp, "-f", "-o", f"{base},cache_dir={mount.new_dir('c')}"]), 1)
    assert "not empty" in line and str(mp) in line, line
    assert not is_mounted(mp)
    m = mount(bucket, mountpoint=mp, nonempty=True)
    assert read_file(m.path / "f") == b"f"
    # (a relative path: mount.run() would unmount an absolute one it finds mounted)
    rel = os.path.relpath(mp)
    line = one_line(*mount.run([bucket, rel, "-f", "-o", f"{base},nonempty,cache_dir={mount.new_dir('c')}"]), 1)
    assert "busy" in line and "already mounted" in line, line
    assert read_file(m.path / "f") == b"f"  # the first mount is untouched
    m.unmount()
    assert (mp / "local").read_bytes() == b"mine"


def test_cache_folder_is_private(mount, s3, bucket, tmp_path):
    s3.put_object(Bucket=bucket, Key="f", Body=rand_bytes(MiB, "p"))
    cache = tmp_path / "loose"
    cache.mkdir(mode=0o755)
    os.chmod(cache, 0o755)
    old = os.umask(0)
    try:
        m = mount(bucket, cache_dir=cache, chunk_size="256K")
    finally:
        os.umask(old)
    assert perm(cache) == 0o700
    with open(m.path / "w", "wb") as w:  # a staging file too
        w.write(b"x" * 1000)
        w.flush()
        assert read_file(m.path / "f")
        files = [os.path.join(d, n) for d, _, ns in os.walk(cache) for n in ns]
        dirs = [os.path.join(d, n) for d, ns, _ in os.walk(cache) for n in ns]
    assert len(files) >= 6, files  # meta.db, lock, 4 chunks, staging
    assert {oct(perm(p)) for p in files if os.path.exists(p)} == {"0o600"}
    assert {oct(perm(p)) for p in dirs} == {"0o700"}


# ---- signals ---------------------------------------------------------------------


def test_sigterm_uploads_a_file_still_open(mount, s3, bucket):
    m = mount(bucket)
    data = rand_bytes(3 * MiB + 1, "term")
    fd = os.open(m.path / "open", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        assert os.write(fd, data) == len(data)
        assert s3_body(s3, bucket, "open") is None  # not closed: not uploaded yet
        m.proc.send_signal(signal.SIGTERM)
        m.wait_exit()
    finally:
        try:
            os.close(fd)
        except OSError:
            pass  # the mount is gone
    assert s3_body(s3, bucket, "open") == data


# ---- logs -----------------------------------------------------------------------


def test_debug_log_has_every_request_and_no_secret(mount, s3, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=rand_bytes(100_000, "log"))
    env = {"AWS_ACCESS_KEY_ID": ALT_ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": ALT_SECRET_KEY}
    m = mount(bucket, env=env, log_level="debug")
    assert len(read_file(m.path / "k")) == 100_000
    (m.path / "w").write_bytes(b"written")
    m.unmount()
    log = m.stderr_text()
    import re

    get = re.compile(r"s3: GET 'k' bytes=\d+-\d+ -> 206 in \d+ ms \(request id [0-9A-F]+\)")
    put = re.compile(r"s3: PUT 'w' -> 200 in \d+ ms \(request id [0-9A-F]+\)")
    assert get.search(log), log[-3000:]
    assert put.search(log), log[-3000:]
    for secret in (ALT_SECRET_KEY, "Signature=", "X-Amz-Signature", "Authorization", "AWS4-HMAC"):
        assert secret not in log, secret


@pytest.fixture
def syslog_socket(tmp_path):
    """A datagram socket at /dev/log that keeps what is logged; whatever
    was at /dev/log before is put back afterwards."""
    moved = None
    if os.path.lexists("/dev/log"):
        moved = f"/dev/log.s3cachefs-test-{os.getpid()}"
        os.rename("/dev/log", moved)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("/dev/log")
    lines = []
    stop = threading.Event()

    def pump():
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                lines.append(sock.recv(65536).decode("utf-8", "replace"))
            except socket.timeout:
                continue
            except OSError:
                return

    t = threading.Thread(target=pump, daemon=True)
    t.start()
    try:
        yield lines
    finally:
        stop.set()
        t.join(5)
        sock.close()
        os.unlink("/dev/log")
        if moved:
            os.rename(moved, "/dev/log")


def test_daemonized_logs_go_to_syslog(mount, s3, bucket, syslog_socket):
    s3.put_object(Bucket=bucket, Key="f", Body=b"syslog")
    m = mount(bucket, foreground=False, log_level="info")
    assert read_file(m.path / "f") == b"syslog"
    wait_for(lambda: any("s3cachefs" in ln and "mounted" in ln for ln in syslog_socket), 10,
             "the 'mounted' line in syslog")
    m.unmount()
    wait_for(lambda: any("stats:" in ln for ln in syslog_socket), 10, "the stats line in syslog")
    # once detached, nothing more reaches the terminal
    assert "mounted" not in m.stderr_text() and "stats:" not in m.stderr_text()
