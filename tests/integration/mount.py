"""Running the s3cachefs daemon on real FUSE mounts, for the mount tests.

The `mount` fixture (conftest.py) hands out a MountFactory:

    m = mount(bucket, chunk_size="1M")       # -f, waits for the mount
    m.path, m.cache_dir, m.stderr_text()
    m.unmount()                              # fusermount3 -u, exit 0, clean log
    m.remount(meta_ttl="1h")                 # same mountpoint and cache_dir
    m.stats()                                # the last run's "stats:" line
    rc, err = mount.run(args)                # one run that must fail to start

Every daemon gets a clean environment (no AWS_* / S3CACHEFS_* from the
caller, HOME and XDG_CACHE_HOME in the test's tmp dir, the test server's
credentials), endpoint= the session server unless told otherwise,
cache_dir= a fresh folder in tmp_path, cache_min_free=0 (the test disk's
free space is not ours to assume) and log_level=info (so a clean exit prints
the stats line). Teardown always unmounts (fusermount3 -u, then -z) and kills
what is left, and fails the test when a log holds an error-level line or a
sanitizer report, unless the mount was started with expect_errors=True.

A watchdog per test SIGKILLs the test's daemons when the test runs past
S3CACHEFS_TEST_DEADLINE seconds (default 300): a hung FUSE request then
fails with ENOTCONN instead of hanging the suite.
"""

import concurrent.futures
import hashlib
import os
import random
import re
import signal
import sqlite3
import subprocess
import threading
import urllib.parse
from pathlib import Path

from conftest import ACCESS_KEY, SANITIZER_RE, SECRET_KEY, wait_for

MiB = 1024 * 1024
PROG = "s3cachefs: "
# sanitizer runtimes' options; log_path= sends their reports to files
SANITIZER_OPTION_VARS = ("ASAN_OPTIONS", "UBSAN_OPTIONS", "TSAN_OPTIONS")
MOUNT_TIMEOUT = 30 if os.environ.get("S3CACHEFS_SANITIZED") == "1" else 20
EXIT_TIMEOUT = 30
TEST_DEADLINE = float(os.environ.get("S3CACHEFS_TEST_DEADLINE", "300"))

# "s3cachefs: warn: ..." etc.; an error-level line has no level word.
LEVEL_RE = re.compile(r"^s3cachefs: (warn|info|debug|trace): ")
STATS_RE = re.compile(r"stats: (vfs .*)$")


# ---- logs ---------------------------------------------------------------------

def error_lines(text):
    """Lines of a daemon log that report an error: error-level log lines
    ("s3cachefs: " with no level word; the stats line excepted), anything
    with ERROR, libfuse's own complaints and sanitizer reports."""
    bad = []
    for line in text.splitlines():
        if SANITIZER_RE.search(line) or "ERROR" in line or line.startswith("fuse: "):
            bad.append(line)
        elif line.startswith(PROG) and not LEVEL_RE.match(line) and not STATS_RE.search(line):
            bad.append(line)
    return bad


def warn_lines(text):
    return [line for line in text.splitlines() if line.startswith(PROG + "warn: ")]


def parse_stats(text):
    """The last stats line as {"vfs.reads": N, "cache.corrupt": N, ...};
    None when there is none."""
    found = None
    for line in text.splitlines():
        m = STATS_RE.search(line)
        if m:
            found = m.group(1)
    if found is None:
        return None
    stats = {}
    for group in found.split(";"):
        words = group.split()
        if not words:
            continue
        name = words[0]
        for kv in words[1:]:
            k, sep, v = kv.partition("=")
            assert sep, f"bad stats item {kv!r} in {found!r}"
            stats[f"{name}.{k}"] = int(v)
    return stats


# ---- the server's request log -------------------------------------------------

def _split(line):
    method, _, target = line.partition(" ")
    path, _, query = target.partition("?")
    return method, urllib.parse.unquote(path), query


def object_requests(server, bucket, method, key=None):
    """Request-log lines of `method` on objects of `bucket` (on `key` only,
    when given). Bucket-level requests (LIST, HeadBucket) are not counted."""
    base = f"/{bucket}/"
    out = []
    for line in server.log_lines():
        m, path, _ = _split(line)
        if m != method or not path.startswith(base) or len(path) == len(base):
            continue
        if key is None or path == base + key:
            out.append(line)
    return out


def list_requests(server, bucket):
    """LIST requests on `bucket` (ListObjects v1 or v2: a GET of the bucket
    itself that is not a location or other sub-resource query)."""
    out = []
    for line in server.log_lines():
        m, path, query = _split(line)
        if m == "GET" and path in (f"/{bucket}", f"/{bucket}/"):
            names = {kv.partition("=")[0] for kv in query.split("&") if kv}
            if not names & {"location", "acl", "policy", "versioning", "uploads", "cors"}:
                out.append(line)
    return out


# ---- data and disk ------------------------------------------------------------

def rand_bytes(n, seed):
    return random.Random(seed).randbytes(n)


def mixed_bytes(n, seed):
    """About half random, half repetitive text per 64 KiB: zlib shrinks
    most chunks, and a wrong offset never matches by accident."""
    rng = random.Random(seed)
    out = bytearray()
    while len(out) < n:
        out += rng.randbytes(2048)
        word = f"line {rng.randrange(10**6)} of seed {seed!r};\n".encode()
        out += (word * (2048 // len(word) + 1))[:2048]
    return bytes(out[:n])


def sha(data):
    return hashlib.sha256(data).hexdigest()


def put_many(s3, bucket, items, threads=8):
    """items: {key: bytes}, uploaded 8 at a time."""
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda kv: s3.put_object(Bucket=bucket, Key=kv[0], Body=kv[1]), items.items()))


def read_file(path):
    with open(path, "rb") as f:
        return f.read()


def disk_usage(root):
    """Sum of st_blocks*512 of every file under root, directories not
    counted (files may vanish while we walk)."""
    total = 0
    for dirpath, _, filenames in os.walk(root, onerror=lambda e: None):
        for name in filenames:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
            except FileNotFoundError:
                pass
    return total


def chunk_files(cache_dir):
    """Every regular file under CACHE_DIR/chunks, sorted."""
    root = Path(cache_dir) / "chunks"
    return sorted(p for p in root.rglob("*") if p.is_file())


def is_mounted(path):
    """From /proc/self/mountinfo: never touches the (maybe hung) mount."""
    want = os.path.realpath(path)
    with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
        for line in f:
            fields = line.split()
            mp = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])
            if mp == want:
                return True
    return False


def pids_with_arg(arg):
    """Processes whose command line holds `arg` (a unique tmp path of the
    test): how a daemonized child started by a test is found again."""
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == os.getpid():
            continue
        try:
            cmd = Path(f"/proc/{d}/cmdline").read_bytes().split(b"\0")
            state = Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and os.fsencode(arg) in cmd:
            found.append(int(d))
    return found


def fusermount(path, lazy=False):
    args = ["fusermount3", "-u"] + (["-z"] if lazy else []) + [str(path)]
    return subprocess.run(args, capture_output=True, timeout=30, stdin=subprocess.DEVNULL)


# ---- one mount ----------------------------------------------------------------

class MountFailed(AssertionError):
    pass


class Mount:
    """One mountpoint and cache folder; each start() is one daemon run."""

    def __init__(self, factory, source, path, cache_dir, options, env, foreground, expect_errors):
        self.factory = factory
        self.source = source
        self.path = Path(path)
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.options = dict(options)
        self.env = env
        self.foreground = foreground
        self.expect_errors = expect_errors
        self.proc = None
        self.daemon_pid = None  # without -f: the detached daemon
        self.runs = []  # stderr files, one per run
        self.checked = set()

    # -- command line --
    def argv(self):
        opts = []
        for k, v in self.options.items():
            if v is None or v is False:
                continue
            opts.append(k if v is True else f"{k}={v}")
        argv = [str(self.factory.binary), self.source, str(self.path)]
        if self.foreground:
            argv.append("-f")
        if opts:
            argv += ["-o", ",".join(opts)]
        return argv

    # -- life cycle --
    def start(self, timeout=MOUNT_TIMEOUT):
        assert self.proc is None or self.proc.poll() is not None, "already running"
        assert not is_mounted(self.path), f"{self.path} is still mounted"
        err_path = self.factory.logdir / f"{self.path.name}.run{len(self.runs) + 1}.stderr"
        self.runs.append(err_path)
        env = self.env
        if not self.foreground:
            # a detached daemon's stderr is /dev/null: its sanitizer
            # reports go to files ERR_PATH.san.PID, read with its log
            env = dict(env)
            for var in SANITIZER_OPTION_VARS:
                env[var] = ":".join(filter(None, [env.get(var), f"log_path={err_path}.san"]))
        with open(err_path, "wb") as err:
            self.proc = subprocess.Popen(
                self.argv(), stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                env=env, start_new_session=True,
            )
        if not self.foreground:
            try:
                rc = self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                raise MountFailed(f"daemon start did not return in {timeout}s: {self.stderr_text()!r}")
            if rc != 0:
                raise MountFailed(f"daemon start failed (rc {rc}): {self.stderr_text()!r}")
            wait_for(lambda: is_mounted(self.path), timeout, f"mount at {self.path}")
            pids = pids_with_arg(str(self.path))
            assert len(pids) == 1, f"expected one daemon process for {self.path}, found {pids}"
            self.daemon_pid = pids[0]
            os.stat(self.path)
            return self

        def up():
            if self.proc.poll() is not None:
                raise MountFailed(
                    f"daemon exited with {self.proc.returncode} before mounting: {self.stderr_text()!r}"
                )
            return is_mounted(self.path) and os.path.ismount(self.path)

        try:
            wait_for(up, timeout, f"mount at {self.path}")
        except TimeoutError:
            self.kill()
            raise MountFailed(f"no mount within {timeout}s: {self.stderr_text()!r}")
        return self

    def alive(self):
        if self.foreground:
            return self.proc is not None and self.proc.poll() is None
        return self.daemon_pid is not None and bool(
            [p for p in pids_with_arg(str(self.path)) if p == self.daemon_pid])

    def unmount(self, timeout=EXIT_TIMEOUT):
        """fusermount3 -u (retried while the mount is busy), then the daemon
        must exit 0 and its log be clean. Returns the stats (or None)."""
        assert self.alive(), f"daemon is not running: {self.stderr_text()!r}"
        last = []

        def unmounted():
            r = fusermount(self.path)
            last[:] = [r]
            return r.returncode == 0

        try:
            wait_for(unmounted, 10, f"fusermount3 -u {self.path}", interval=0.2)
        except TimeoutError as e:
            raise AssertionError(f"{e}: {last[0].stderr.decode(errors='replace').strip()}") from None
        return self.wait_exit(timeout)

    def wait_exit(self, timeout=EXIT_TIMEOUT):
        """The daemon exits (after an unmount or a signal): exit 0, no
        mount left, clean log. Returns the stats of the run (or None)."""
        if self.foreground:
            try:
                rc = self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise AssertionError(f"daemon did not exit within {timeout}s: {self.stderr_text()!r}")
            assert rc == 0, f"daemon exit status {rc}: {self.stderr_text()!r}"
        else:
            wait_for(lambda: not self.alive(), timeout, f"daemon {self.daemon_pid} to exit")
            self.daemon_pid = None
        assert not is_mounted(self.path), f"{self.path} still mounted after the daemon exited"
        self.check_log()
        return self.stats()

    def remount(self, **changes):
        """Starts again with the same mountpoint and cache_dir; changes
        override options (None removes one)."""
        if self.alive():
            self.unmount()
        for k, v in changes.items():
            if v is None:
                self.options.pop(k, None)
            else:
                self.options[k] = v
        return self.start()

    def kill(self):
        """SIGKILL the daemon (a test's crash, or cleanup) and lazily
        unmount what it leaves."""
        if self.foreground and self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        if not self.foreground and self.daemon_pid is not None:
            if self.alive():
                os.kill(self.daemon_pid, signal.SIGKILL)
                wait_for(lambda: not self.alive(), 10, "killed daemon to go")
            self.daemon_pid = None
        if is_mounted(self.path):
            fusermount(self.path, lazy=True)

    def cleanup(self):
        """Teardown: unmount, kill what is left. Returns problems found."""
        problems = []
        if self.alive():
            if fusermount(self.path).returncode != 0:
                fusermount(self.path, lazy=True)
            if self.foreground:
                try:
                    rc = self.proc.wait(EXIT_TIMEOUT)
                    if rc != 0:
                        problems.append(f"daemon for {self.path} exited with {rc} at teardown")
                except subprocess.TimeoutExpired:
                    problems.append(f"daemon for {self.path} ignored the unmount: killed")
            else:
                try:
                    wait_for(lambda: not self.alive(), EXIT_TIMEOUT, "daemon to exit")
                except TimeoutError:
                    problems.append(f"daemon for {self.path} ignored the unmount: killed")
        if is_mounted(self.path):
            fusermount(self.path, lazy=True)
        self.kill()
        for i in range(len(self.runs)):
            if i in self.checked:
                continue
            bad = self.bad_lines(self.stderr_text(i))
            if bad:
                problems.append(f"{self.runs[i].name}: unexpected error or sanitizer lines: {bad[:10]}")
        return problems

    # -- logs --
    def stderr_text(self, run=-1):
        """The run's stderr, then the sanitizer reports a detached
        daemon wrote to files."""
        if not self.runs:
            return ""
        path = self.runs[run]
        texts = [path.read_text(encoding="utf-8", errors="replace")]
        for san in sorted(path.parent.glob(f"{path.name}.san.*")):
            texts.append(san.read_text(encoding="utf-8", errors="replace"))
        return "".join(texts)

    def check_log(self, run=-1):
        self.checked.add(range(len(self.runs))[run])  # teardown need not report it again
        text = self.stderr_text(run)
        bad = self.bad_lines(text)
        assert not bad, f"unexpected error or sanitizer lines in the daemon log: {bad}\n--- log:\n{text[-4000:]}"

    def bad_lines(self, text):
        """Error lines (unless expect_errors) and sanitizer reports (always)."""
        if self.expect_errors:
            return [line for line in text.splitlines() if SANITIZER_RE.search(line)]
        return error_lines(text)

    def stats(self, run=-1):
        return parse_stats(self.stderr_text(run))

    def __repr__(self):
        return f"<Mount {self.source} at {self.path}>"


class MountFactory:
    def __init__(self, binary, endpoint, tmp_path):
        self.binary = binary
        self.endpoint = endpoint
        self.tmp_path = Path(tmp_path)
        self.logdir = self.tmp_path / "logs"
        self.logdir.mkdir(exist_ok=True)
        self.home = self.tmp_path / "home"
        self.home.mkdir(exist_ok=True)
        self.mounts = []
        self.seq = 0
        self.watchdog_fired = False
        self._watchdog = threading.Timer(TEST_DEADLINE, self._fire)
        self._watchdog.daemon = True
        self._watchdog.start()

    def _fire(self):
        self.watchdog_fired = True
        for m in list(self.mounts):
            try:
                m.kill()
            except Exception:  # noqa: BLE001 - best effort
                pass

    def env(self, extra=None):
        e = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "S3CACHEFS_"))}
        e.update(
            HOME=str(self.home),
            XDG_CACHE_HOME=str(self.home / ".cache"),
            AWS_ACCESS_KEY_ID=ACCESS_KEY,
            AWS_SECRET_ACCESS_KEY=SECRET_KEY,
        )
        for k, v in (extra or {}).items():
            if v is None:
                e.pop(k, None)
            else:
                e[k] = v
        return e

    def new_dir(self, stem):
        self.seq += 1
        d = self.tmp_path / f"{stem}{self.seq}"
        d.mkdir()
        return d

    def __call__(self, bucket, *, prefix=None, endpoint=None, cache_dir=None, foreground=True,
                 expect_errors=False, env=None, start=True, mountpoint=None, **opts):
        """Mounts bucket (or bucket:/prefix). Options are keyword arguments
        (True: a bare flag; None: leave out). cache_dir=False: pass none."""
        source = bucket if prefix is None else f"{bucket}:/{prefix}"
        if cache_dir is None:
            cache_dir = self.new_dir("cache")
        options = {"endpoint": endpoint or self.endpoint}
        if cache_dir:
            options["cache_dir"] = str(cache_dir)
        options.update(cache_min_free="0", log_level="info")
        options.update(opts)
        path = mountpoint or self.new_dir("mnt")
        m = Mount(self, source, path, cache_dir, options, self.env(env), foreground, expect_errors)
        self.mounts.append(m)
        if start:
            m.start()
        return m

    def run(self, args, env=None, timeout=60):
        """One run of the daemon that is expected to fail to start:
        (returncode, stderr text). Whatever it mounted anyway is undone."""
        args = [str(a) for a in args]
        try:
            p = subprocess.run([str(self.binary), *args], capture_output=True, stdin=subprocess.DEVNULL,
                               env=self.env(env), timeout=timeout)
        finally:
            for a in args:
                if os.path.isabs(a) and is_mounted(a):
                    fusermount(a, lazy=True)
                    for pid in pids_with_arg(a):
                        os.kill(pid, signal.SIGKILL)
        return p.returncode, p.stderr.decode("utf-8", errors="replace")

    def cleanup(self):
        self._watchdog.cancel()
        problems = []
        for m in reversed(self.mounts):
            problems += m.cleanup()
        if self.watchdog_fired:
            problems.insert(0, f"watchdog: the test ran past {TEST_DEADLINE}s; its daemons were killed")
        return problems


# ---- what reached the bucket (write tests) ---------------------------------------

def integrity_check(db):
    """PRAGMA integrity_check of the cache's meta.db, on a read-only
    connection of Python's sqlite3 (not ours): its rows, ["ok"] if sound."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return [row[0] for row in con.execute("PRAGMA integrity_check")]
    finally:
        con.close()


def s3_body(s3, bucket, key):
    """The object's bytes through boto3, or None when there is no such key."""
    try:
        return s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except s3.exceptions.NoSuchKey:
        return None


def s3_keys(s3, bucket, prefix=""):
    """Every key under prefix, sorted (all pages)."""
    out = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        out += [o["Key"] for o in page.get("Contents", [])]
    return sorted(out)


def s3_meta(s3, bucket, key):
    """head_object's user metadata ({'mode': ..., 'uid': ...}), or None."""
    from botocore.exceptions import ClientError

    try:
        return s3.head_object(Bucket=bucket, Key=key)["Metadata"]
    except ClientError as e:
        if e.response["ResponseMetadata"]["HTTPStatusCode"] == 404:
            return None
        raise
