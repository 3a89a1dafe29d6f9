"""The promises of docs/SECURITY.md, one test (or more) each, on real mounts.

- The cache folder and everything in it are private (0700 folders, 0600
  files and socket) and owned by the mounting user, even under umask 000;
  a folder found wider is tightened, one owned by another user refused.
- Without allow_other another user gets nothing from the mount (EACCES);
  with it, the kernel holds them to the modes shown (default_permissions).
- The control socket serves only the mount's user (and root).
- No secret (secret key, session token, encryption key, signature,
  Authorization header) reaches the log at the debug and trace levels,
  errors (403, refused or malformed credentials files) included.

The second user is uid/gid 65534 (nobody), reached with setpriv(1).  What
reached S3 is checked with boto3.
"""

import base64
import json
import os
import shutil
import socket
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

from conftest import ACCESS_KEY, ALT_ACCESS_KEY, ALT_SECRET_KEY, BUILD_DIR, SECRET_KEY, need, wait_for
from mount import MiB, PROG, chunk_files, rand_bytes, read_file, s3_body, s3_keys

NOBODY = 65534
CTL = BUILD_DIR / "tools" / "s3cachefs-ctl"
SESSION_TOKEN = "FwoGZXIvYXdzEJr//////////wEaDSecurityTestSessionToken+Zk9Qx7w=="

# Run as nobody: try each "op:path" and print, per op, "ok" or the errno name.
PROBE = r"""
import errno, json, os, sys
os.umask(0o022)
out = []
for spec in sys.argv[1:]:
    op, _, path = spec.partition(":")
    try:
        if op == "stat":
            os.stat(path)
        elif op == "list":
            os.listdir(path)
        elif op == "read":
            with open(path, "rb") as f:
                f.read()
        elif op == "write":
            with open(path, "r+b") as f:
                f.write(b"nobody was here")
        elif op == "create":
            with open(path, "xb") as f:
                f.write(b"nobody was here")
        elif op == "mkdir":
            os.mkdir(path)
        elif op == "unlink":
            os.unlink(path)
        elif op == "chmod":
            os.chmod(path, 0o777)
        out.append("ok")
    except OSError as e:
        out.append(errno.errorcode.get(e.errno, str(e.errno)))
print(json.dumps(out))
"""


def as_nobody(argv, timeout=60):
    need(shutil.which("setpriv"), "setpriv (util-linux)")
    need(os.geteuid() == 0, "root, to act as a second user")
    return subprocess.run(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *argv],
        capture_output=True, stdin=subprocess.DEVNULL, timeout=timeout,
        env={"PATH": "/usr/bin:/bin", "HOME": "/"}, cwd="/",
    )


def probe(*specs):
    """[(op, path), ...] tried as nobody -> ["ok" | "EACCES" | ...]."""
    p = as_nobody(["/usr/bin/python3", "-c", PROBE, *[f"{op}:{path}" for op, path in specs]])
    assert p.returncode == 0, p.stderr.decode(errors="replace")
    return json.loads(p.stdout)


@pytest.fixture
def public_dir():
    """A folder nobody can traverse (0755), outside pytest's 0700 tmp dirs,
    so that what nobody is refused is refused by the mount, not the path."""
    d = Path(tempfile.mkdtemp(prefix="s3cfs-sec-", dir="/tmp"))
    os.chmod(d, 0o755)
    yield d
    # the mount fixture (requested after this one) has unmounted by now
    for sub in d.iterdir():
        if sub.name == "cache":
            shutil.rmtree(sub)
    for sub in d.iterdir():
        sub.rmdir()
    d.rmdir()


def new_mountpoint(public_dir, name="mnt"):
    mp = public_dir / name
    mp.mkdir()
    os.chmod(mp, 0o755)
    return mp


# ---- the cache folder ----------------------------------------------------------

def walk_modes(root):
    """{path relative to root: (kind, mode bits, uid, gid)} of root and
    everything under it (lstat; entries that vanish meanwhile are skipped)."""
    out = {}
    paths = [Path(root)]
    for dirpath, dirnames, filenames in os.walk(root):
        paths += [Path(dirpath) / n for n in dirnames + filenames]
    for p in paths:
        try:
            st = os.lstat(p)
        except FileNotFoundError:
            continue
        kind = ("dir" if stat.S_ISDIR(st.st_mode) else "file" if stat.S_ISREG(st.st_mode)
                else "sock" if stat.S_ISSOCK(st.st_mode) else "other")
        out[str(p.relative_to(root))] = (kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
    return out


def not_private(modes):
    """Entries that are not 0700 folders, 0600 files or a 0600 socket owned
    by us."""
    want = {"dir": 0o700, "file": 0o600, "sock": 0o600}
    return {p: (k, oct(m), uid) for p, (k, m, uid, _) in modes.items()
            if want.get(k) != m or uid != os.geteuid()}


@pytest.fixture
def umask000():
    old = os.umask(0)
    yield
    os.umask(old)


def ctl(home, endpoint, *args, env=None):
    """s3cachefs-ctl with the test server's credentials: its stdout."""
    need(CTL.is_file(), f"tool {CTL} (build with meson/ninja)")
    e = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "S3CACHEFS_"))}
    e.update(HOME=str(home), AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY,
             S3CACHEFS_ENDPOINT=endpoint, **(env or {}))
    p = subprocess.run([str(CTL), *[str(a) for a in args]], capture_output=True,
                       stdin=subprocess.DEVNULL, env=e, timeout=60)
    assert p.returncode == 0, (args, p.stderr.decode(errors="replace"))
    return p.stdout.decode()


@pytest.mark.parametrize("where", ["cache_dir", "default_root"])
def test_cache_folder_private_under_umask_000(umask000, mount, s3, bucket, tmp_path, where, request):
    data = rand_bytes(3 * MiB + 17, "sec-read")
    s3.put_object(Bucket=bucket, Key="d/r", Body=data)
    cache_dir = tmp_path / "cache" / "deep" if where == "cache_dir" else False
    key_env = {"S3CACHEFS_ENCRYPTION_KEY": os.urandom(32).hex()}
    crypt = {} if where == "cache_dir" else {"encrypt": "aes-256-gcm", "env": key_env}
    m = mount(bucket, cache_dir=cache_dir, chunk_size="1M", writeback="async", **crypt)
    if where == "default_root":
        # root's default root (another user's: $XDG_CACHE_HOME/s3cachefs)
        root = Path("/var/cache/s3cachefs")
        found = [p for p in root.iterdir() if p.name.startswith(bucket + "-")]
        assert len(found) == 1, found
        cdir = found[0]
        request.addfinalizer(lambda: shutil.rmtree(cdir, ignore_errors=True))
        walk = cdir  # other mounts' folders may sit beside it
        st = os.stat(root)
        assert (stat.S_IMODE(st.st_mode), st.st_uid) == (0o700, os.geteuid())
    else:
        # both levels are made by the daemon
        walk = tmp_path / "cache"
        cdir = cache_dir
    assert read_file(m.path / "d" / "r") == data
    wait_for(lambda: len(chunk_files(cdir)) >= 4, 10, "4 chunks cached")
    new = rand_bytes(2 * MiB + 5, "sec-write")
    with open(m.path / "d" / "w", "wb", buffering=0) as f:
        f.write(new)
        os.mkdir(m.path / "d" / "sub")
        ctl(tmp_path, mount.endpoint, "-C", cdir, "stats")
        # while a file is open for writing: its staging file, meta.db's
        # WAL, the socket and the lock all exist
        during = walk_modes(walk)
    wait_for(lambda: s3_body(s3, bucket, "d/w") == new, 10, "the async upload")
    names = {Path(p).name for p in during} | {str(Path(p).parent.name) for p in during}
    for want in ("lock", "meta.db", "meta.db-wal", "meta.db-shm", "ctl.sock", "staging", "chunks"):
        assert want in names, f"{want} not seen in the cache folder: {sorted(during)}"
    assert any(k == "file" and "staging/" in p for p, (k, *_) in during.items()), sorted(during)
    assert not_private(during) == {}, "while mounted"
    m.unmount()
    after = walk_modes(walk)
    assert len([p for p, (k, *_) in after.items() if k == "file" and "chunks/" in p]) >= 4, sorted(after)
    assert not_private(after) == {}, "after unmount"
    # s3cachefs-ctl on the unmounted folder (itself under umask 000):
    # clear, then warm writes chunks again
    opts = [] if where == "cache_dir" else ["-o", "encrypt=aes-256-gcm"]
    ctl(tmp_path, mount.endpoint, "-C", cdir, *opts, "clear", env=key_env)
    assert chunk_files(cdir) == []
    ctl(tmp_path, mount.endpoint, "-C", cdir, *opts, "warm", "d/", env=key_env)
    offline = walk_modes(walk)
    assert len([p for p, (k, *_) in offline.items() if k == "file" and "chunks/" in p]) >= 4, sorted(offline)
    assert not_private(offline) == {}, "after s3cachefs-ctl"


def test_loose_cache_folder_is_tightened_and_a_foreign_one_refused(mount, s3, bucket, tmp_path):
    s3.put_object(Bucket=bucket, Key="f", Body=b"x" * 1000)
    loose = tmp_path / "loose"
    loose.mkdir()
    os.chmod(loose, 0o777)
    m = mount(bucket, cache_dir=loose)
    assert stat.S_IMODE(os.stat(loose).st_mode) == 0o700
    assert f"cache folder '{loose}' made private (0700)" in m.stderr_text()
    assert read_file(m.path / "f") == b"x" * 1000
    m.unmount()

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    os.chown(foreign, NOBODY, NOBODY)
    os.chmod(foreign, 0o700)
    mp = mount.new_dir("mnt")
    rc, err = mount.run([bucket, mp, "-f", "-o", f"endpoint={mount.endpoint},cache_dir={foreign}"])
    lines = err.splitlines()
    assert rc == 1 and len(lines) == 1 and lines[0].startswith(PROG), (rc, err)
    assert f"cache folder '{foreign}' belongs to uid {NOBODY}" in err, err
    assert os.listdir(foreign) == [], "nothing may be created in a foreign cache folder"


# ---- allow_other and default_permissions ---------------------------------------

def test_second_user_is_refused_without_allow_other(public_dir, mount, s3, bucket):
    s3.put_object(Bucket=bucket, Key="pub", Body=b"public bytes")
    s3.put_object(Bucket=bucket, Key="dir/f", Body=b"in a folder")
    mp = new_mountpoint(public_dir)
    # the path itself lets nobody in: what is refused below is the mount's doing
    assert probe(("stat", mp), ("list", mp)) == ["ok", "ok"]
    m = mount(bucket, mountpoint=mp)
    assert read_file(m.path / "pub") == b"public bytes"  # the mounting user gets in
    got = probe(("stat", mp), ("list", mp), ("stat", mp / "pub"), ("read", mp / "pub"),
                ("list", mp / "dir"), ("create", mp / "new"), ("mkdir", mp / "newdir"))
    assert got == ["EACCES"] * 7, got
    m.unmount()
    assert s3_keys(s3, bucket) == ["dir/f", "pub"]


def test_allow_other_holds_others_to_the_modes(public_dir, mount, s3, bucket, s3rver):
    def meta(mode, uid):
        return {"mode": str(mode), "uid": str(uid), "gid": str(uid)}

    s3.put_object(Bucket=bucket, Key="pub", Body=b"no metadata: 0644, the mounter's")
    # bigger than a link could be: LIST alone would show them 0644
    s3.put_object(Bucket=bucket, Key="secret", Body=b"root only " * 1000, Metadata=meta(0o100600, 0))
    s3.put_object(Bucket=bucket, Key="empty-secret", Body=b"", Metadata=meta(0o100600, 0))
    s3.put_object(Bucket=bucket, Key="nobodys", Body=b"nobody's own " * 1000,
                  Metadata=meta(0o100600, NOBODY))
    s3.put_object(Bucket=bucket, Key="d/secret2", Body=b"root only " * 1000, Metadata=meta(0o100640, 0))
    # directories: an implicit one (d), markers 0700 for root and 0777
    s3.put_object(Bucket=bucket, Key="priv/", Body=b"", Metadata=meta(0o040700, 0))
    s3.put_object(Bucket=bucket, Key="priv/inner", Body=b"behind a 0700 folder")
    s3.put_object(Bucket=bucket, Key="open/", Body=b"", Metadata=meta(0o040777, 0))
    mp = new_mountpoint(public_dir)
    m = mount(bucket, mountpoint=mp, allow_other=True, meta_ttl="1h")
    # the mounter lists first (readdirplus hands the kernel LIST's view),
    # then nobody lists and acts on every name
    assert sorted(os.listdir(m.path)) == ["d", "empty-secret", "nobodys", "open", "priv", "pub", "secret"]
    assert os.listdir(m.path / "d") == ["secret2"]
    got = probe(("list", mp), ("read", mp / "pub"), ("write", mp / "pub"), ("chmod", mp / "pub"),
                ("read", mp / "secret"), ("read", mp / "empty-secret"), ("read", mp / "d" / "secret2"),
                ("read", mp / "nobodys"), ("write", mp / "nobodys"),
                ("create", mp / "new"), ("unlink", mp / "pub"), ("mkdir", mp / "d" / "x"),
                ("list", mp / "priv"), ("read", mp / "priv" / "inner"), ("create", mp / "open" / "byn"))
    assert got == ["ok", "ok", "EACCES", "EPERM",
                   "EACCES", "EACCES", "EACCES",
                   "ok", "ok",
                   "EACCES", "EACCES", "EACCES",
                   "EACCES", "EACCES", "ok"], got
    # what the mounter sees is what nobody was held to
    modes = {n: (stat.S_IMODE(os.stat(m.path / n).st_mode), os.stat(m.path / n).st_uid)
             for n in ("pub", "secret", "empty-secret", "nobodys", "d/secret2", "d", "priv", "open",
                       "open/byn")}
    assert modes == {"pub": (0o644, 0), "secret": (0o600, 0), "empty-secret": (0o600, 0),
                     "nobodys": (0o600, NOBODY), "d/secret2": (0o640, 0), "d": (0o755, 0),
                     "priv": (0o700, 0), "open": (0o777, 0), "open/byn": (0o644, NOBODY)}, modes
    m.unmount()
    # what reached S3: only what the modes allowed, a new file as its maker's
    assert s3_body(s3, bucket, "pub") == b"no metadata: 0644, the mounter's"
    assert s3_body(s3, bucket, "nobodys").startswith(b"nobody was here")
    assert s3_body(s3, bucket, "open/byn") == b"nobody was here"
    assert s3.head_object(Bucket=bucket, Key="open/byn")["Metadata"]["uid"] == str(NOBODY)
    assert s3_keys(s3, bucket) == ["d/secret2", "empty-secret", "nobodys", "open/", "open/byn",
                                   "priv/", "priv/inner", "pub", "secret"]


def test_allow_other_unreadable_modes_close_the_file(public_dir, mount, s3, bucket, proxy):
    """With allow_other, a file whose modes cannot be read yet (its HEAD
    fails) is closed to others, not opened to them by LIST's defaults; once
    S3 answers, its own modes apply."""
    s3.put_object(Bucket=bucket, Key="secret", Body=b"root only " * 1000,
                  Metadata={"mode": str(0o100600), "uid": "0", "gid": "0"})
    s3.put_object(Bucket=bucket, Key="shared", Body=b"for all " * 1000,
                  Metadata={"mode": str(0o100644), "uid": "0", "gid": "0"})
    s3.put_object(Bucket=bucket, Key="dir/", Body=b"",
                  Metadata={"mode": str(0o040755), "uid": "0", "gid": "0"})
    s3.put_object(Bucket=bucket, Key="dir/f", Body=b"in an open folder")
    mp = new_mountpoint(public_dir)
    m = mount(bucket, mountpoint=mp, allow_other=True, meta_ttl="1h", endpoint=proxy.endpoint,
              retries="0", expect_errors=True)
    proxy.add("500", count=None, method="HEAD")
    assert sorted(os.listdir(m.path)) == ["dir", "secret", "shared"]  # LIST works
    got = probe(("read", mp / "secret"), ("read", mp / "shared"), ("list", mp / "dir"))
    assert all(r in ("EACCES", "EIO") for r in got), got
    assert proxy.injected["500"] >= 3, proxy.log
    proxy.clear()
    assert probe(("read", mp / "secret"), ("read", mp / "shared"), ("list", mp / "dir")) == \
        ["EACCES", "ok", "ok"]
    m.unmount()


def test_setuid_bits_from_s3_have_no_effect(public_dir, mount, s3, bucket):
    """Whoever can write to the bucket can set x-amz-meta-mode=0104755 with
    uid 0: the mount is always nosuid,nodev, even when "suid,dev" is asked.
    A device's mode shows a regular file."""
    need(os.path.exists("/usr/bin/id"), "/usr/bin/id")
    s3.put_object(Bucket=bucket, Key="id", Body=Path("/usr/bin/id").read_bytes(),
                  Metadata={"mode": str(0o104755), "uid": "0", "gid": "0"})
    # a device's mode (char 1,3 is /dev/null's numbers, were any given)
    s3.put_object(Bucket=bucket, Key="dev", Body=b"not a device",
                  Metadata={"mode": str(stat.S_IFCHR | 0o666), "uid": "0", "gid": "0"})
    mp = new_mountpoint(public_dir)
    m = mount(bucket, mountpoint=mp, allow_other=True, suid=True, dev=True)
    st = os.stat(m.path / "id")
    assert stat.S_IMODE(st.st_mode) == 0o4755 and st.st_uid == 0, oct(st.st_mode)  # shown as stored
    st = os.stat(m.path / "dev")
    assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o666, oct(st.st_mode)
    assert read_file(m.path / "dev") == b"not a device"
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        opts = [line.split()[5].split(",") for line in f if line.split()[4] == str(mp)]
    assert len(opts) == 1 and "nosuid" in opts[0] and "nodev" in opts[0], opts
    p = as_nobody([str(mp / "id"), "-u"])
    assert p.returncode == 0 and p.stdout == b"65534\n", p  # not 0: the bit is ignored
    m.unmount()


# ---- the control socket --------------------------------------------------------

CONNECT = r"""
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    s.connect(sys.argv[1])
except OSError as e:
    print("connect:", e.strerror); sys.exit(0)
out = b""
if len(sys.argv) > 2:
    s.sendall(sys.argv[2].encode() + b"\n")
while True:
    try:
        b = s.recv(65536)
    except ConnectionResetError:
        out += b"<reset>"
        break
    if not b:
        break
    out += b
sys.stdout.write(out.decode(errors="replace"))
"""


def ctl_request(sock_path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(str(sock_path))
        s.sendall(b"stats\n")
        out = b""
        while True:
            b = s.recv(65536)
            if not b:
                return out.decode(errors="replace")
            out += b
    finally:
        s.close()


def test_ctl_socket_serves_only_the_mounts_user(public_dir, mount, s3, bucket):
    cdir = public_dir / "cache"
    s3.put_object(Bucket=bucket, Key="f", Body=rand_bytes(MiB, "ctl"))
    m = mount(bucket, cache_dir=cdir, chunk_size="1M")
    read_file(m.path / "f")
    cached = wait_for(lambda: len(chunk_files(cdir)), 10, "a chunk cached")
    sock = cdir / "ctl.sock"
    assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600
    ours = ctl_request(sock)
    assert ours.endswith("s 0\n") and "permission denied" not in ours, ours
    # the 0700 folder keeps nobody from the socket
    p = as_nobody(["/usr/bin/python3", "-c", CONNECT, str(sock)])
    assert p.stdout.decode().strip() == "connect: Permission denied", p
    # with the folder and the socket opened up, the daemon itself refuses
    os.chmod(cdir, 0o711)
    os.chmod(sock, 0o666)
    for cmd in ("stats", "clear"):
        p = as_nobody(["/usr/bin/python3", "-c", CONNECT, str(sock), cmd])
        out = p.stdout.decode()
        assert out == "e permission denied: not the mount's user\ns -13\n", (cmd, out, p.stderr)
    assert len(chunk_files(cdir)) == cached, "nobody's clear ran"
    os.chmod(cdir, 0o700)
    m.unmount()


# ---- no secret in the logs -----------------------------------------------------

def secrets_in(text, secrets):
    """The secrets (name -> string) found in text, and the markers of a
    signature or an Authorization header (case-insensitive)."""
    found = [name for name, s in secrets.items() if s and s in text]
    low = text.lower()
    for marker in ("signature=", "x-amz-signature", "authorization:", "x-amz-security-token:",
                   "credential=" + ALT_ACCESS_KEY.lower()):
        if marker in low:
            found.append(marker)
    return found


def key_forms(key):
    return {"key hex": key.hex(), "key HEX": key.hex().upper(),
            "key base64": base64.b64encode(key).decode(),
            "key base64url": base64.urlsafe_b64encode(key).decode().rstrip("=")}


def debug_mount(mount, bucket, flag, **kw):
    """A mount with -d (debug log and FUSE's trace on stderr) or -f with
    log_level=trace."""
    if flag == "-d":
        m = mount(bucket, start=False, log_level=None, **kw)
        argv = m.argv
        m.argv = lambda: argv() + ["-d"]
    else:
        m = mount(bucket, start=False, log_level="trace", **kw)
    return m.start()


def exercise(m, s3, bucket, tag):
    """Reads (cached and not), a sync write, a rename and a delete."""
    data = rand_bytes(MiB + 333, tag)
    s3.put_object(Bucket=bucket, Key=f"{tag}/r", Body=data)
    assert read_file(m.path / tag / "r") == data
    assert read_file(m.path / tag / "r") == data
    (m.path / tag / "w").write_bytes(data[:5000])
    os.rename(m.path / tag / "w", m.path / tag / "w2")
    os.unlink(m.path / tag / "r")
    assert s3_body(s3, bucket, f"{tag}/w2") == data[:5000]
    assert s3_body(s3, bucket, f"{tag}/r") is None


def test_no_secret_in_debug_logs(mount, s3, bucket, tmp_path):
    enc_key = os.urandom(32)
    raw_key = os.urandom(32)
    secrets = {"secret key": ALT_SECRET_KEY, "session token": SESSION_TOKEN,
               "wrong secret": "WRONGwrongWRONGwrongWRONGwrong0123456789",
               **key_forms(enc_key), **{"raw " + k: v for k, v in key_forms(raw_key).items()}}
    logs = {}

    # 1. environment credentials with a session token, key from $S3CACHEFS_ENCRYPTION_KEY, -d
    env_creds = {"AWS_ACCESS_KEY_ID": ALT_ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": ALT_SECRET_KEY,
                 "AWS_SESSION_TOKEN": SESSION_TOKEN, "S3CACHEFS_ENCRYPTION_KEY": enc_key.hex()}
    m = debug_mount(mount, bucket, "-d", env=env_creds, encrypt="aes-256-gcm", expect_errors=True)
    exercise(m, s3, bucket, "env")
    m.unmount()
    logs["env -d"] = m.stderr_text()
    assert "unique:" in logs["env -d"], "no FUSE trace: " + logs["env -d"][-2000:]

    # 2. a passwd file and a raw key file, log_level=trace
    no_env = {"AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None}
    pw = tmp_path / "passwd-s3fs"
    pw.write_text(f"{ALT_ACCESS_KEY}:{ALT_SECRET_KEY}\n")
    os.chmod(pw, 0o600)
    kf = tmp_path / "raw.key"
    kf.write_bytes(raw_key)
    os.chmod(kf, 0o600)
    m = debug_mount(mount, bucket, "trace", env=no_env, passwd_file=str(pw),
                    encrypt="aes-256-gcm", key_file=str(kf), writeback="async")
    exercise(m, s3, bucket, "pw")
    m.unmount()
    logs["passwd trace"] = m.stderr_text()

    # 3. a profile of a shared credentials file with a session token, -d
    cf = tmp_path / "credentials"
    cf.write_text(f"[sec]\naws_access_key_id = {ALT_ACCESS_KEY}\n"
                  f"aws_secret_access_key = {ALT_SECRET_KEY}\naws_session_token = {SESSION_TOKEN}\n")
    os.chmod(cf, 0o600)
    m = debug_mount(mount, bucket, "-d", env={**no_env, "AWS_SHARED_CREDENTIALS_FILE": str(cf)},
                    profile="sec", expect_errors=True)
    exercise(m, s3, bucket, "prof")
    m.unmount()
    logs["profile -d"] = m.stderr_text()
    # the sessions ran with the credentials meant, and logged requests
    for name, source, token in (("env -d", "environment", True), ("passwd trace", "passwd file", False),
                                ("profile -d", "profile", True)):
        text = logs[name]
        chosen = [line for line in text.splitlines() if "debug: credentials from " + source in line]
        assert len(chosen) == 1 and f"'{ALT_ACCESS_KEY[:4]}...'" in chosen[0], (name, chosen)
        assert ("session token" in chosen[0]) == token, chosen
        assert "s3: GET" in text and "s3: PUT" in text, name

    # 4. errors: a wrong secret (403 at startup), refused and malformed files
    mp = mount.new_dir("mnt")
    base = f"endpoint={mount.endpoint},cache_dir={mount.new_dir('cache')}"
    rc, err = mount.run([bucket, mp, "-d", "-o", base],
                        env={"AWS_ACCESS_KEY_ID": ALT_ACCESS_KEY,
                             "AWS_SECRET_ACCESS_KEY": secrets["wrong secret"],
                             "AWS_SESSION_TOKEN": SESSION_TOKEN})
    assert rc == 1 and "signature" in err.lower(), (rc, err)
    logs["403 -d"] = err
    bad_files = {
        "loose": (f"{ALT_ACCESS_KEY}:{ALT_SECRET_KEY}\n", 0o644),
        "no colon": (f"{ALT_SECRET_KEY}\n", 0o600),
        "three colons": (f"{bucket}:{ALT_ACCESS_KEY}:{ALT_SECRET_KEY}:{SESSION_TOKEN}\n", 0o600),
    }
    for name, (text, mode) in bad_files.items():
        f = tmp_path / f"bad-{name.replace(' ', '-')}"
        f.write_text(text)
        os.chmod(f, mode)
        rc, err = mount.run([bucket, mp, "-d", "-o", f"{base},passwd_file={f}"], env=no_env)
        assert rc != 0 and str(f) in err, (name, rc, err)
        logs[f"passwd {name}"] = err
    bad_ini = tmp_path / "bad-credentials"
    bad_ini.write_text(f"[sec]\naws_access_key_id = {ALT_ACCESS_KEY}\n{ALT_SECRET_KEY}\n")
    os.chmod(bad_ini, 0o600)
    rc, err = mount.run([bucket, mp, "-d", "-o", f"{base},profile=sec"],
                        env={**no_env, "AWS_SHARED_CREDENTIALS_FILE": str(bad_ini)})
    assert rc != 0 and str(bad_ini) in err, (rc, err)
    logs["credentials malformed"] = err
    kf_loose = tmp_path / "loose.key"
    kf_loose.write_text(enc_key.hex() + "\n")
    os.chmod(kf_loose, 0o644)
    rc, err = mount.run([bucket, mp, "-d", "-o", f"{base},encrypt=aes-256-gcm,key_file={kf_loose}"])
    assert rc != 0 and str(kf_loose) in err, (rc, err)
    logs["key file loose"] = err
    rc, err = mount.run([bucket, mp, "-d", "-o", f"{base},encrypt=aes-256-gcm"],
                        env={"S3CACHEFS_ENCRYPTION_KEY": enc_key.hex() + "zz"})
    assert rc == 2, (rc, err)
    logs["key env malformed"] = err

    leaks = {name: secrets_in(text, secrets) for name, text in logs.items()}
    assert all(not v for v in leaks.values()), leaks
    # bytes too: the raw key may hold any byte
    for run in m.factory.mounts:
        for path in run.runs:
            assert raw_key not in path.read_bytes(), path
