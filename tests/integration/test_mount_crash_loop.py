"""kill -9 at random moments, in a loop with a fixed seed (issue 7, item 2).

Each round mounts through the mount helper (mount-helpers/mount.s3cachefs,
as built; the daemon detaches as under mount(8)), runs readers of cached
and uncached files, writers creating and overwriting files and, through a
4 MiB cache_size smaller than what is read, eviction, all at once; then
SIGKILLs the daemon at a seeded moment.  After each kill:

- the dead FUSE mount is still there (stat fails with ENOTCONN) and the
  next mount through the helper clears it, saying so on one line;
- meta.db passes PRAGMA integrity_check (read-only, before the remount);
- after the remount has finished the pending uploads (CACHE_DIR/staging
  empty), `s3cachefs-ctl verify` drops no chunk, every acknowledged write
  is in the bucket byte-exact (boto3), and every file read through the
  mount equals what boto3 reads.

A write is acknowledged when close() returned 0: with writeback=sync the
object is then in S3; with writeback=async it is staged (durable on the
local disk) and must reach S3 once the next mount uploads it.  Some async
writes also fsync() first.  A write in flight at the kill may leave either
the previous object or a prefix of the new bytes, nothing else.

Rounds and seed are fixed; a failure message names the seed and round.
"""

import errno
import json
import os
import random
import signal
import subprocess
import threading
import time
from pathlib import Path

from conftest import BUILD_DIR, SANITIZED, need, wait_for
from mount import (MOUNT_TIMEOUT, Mount, chunk_files, error_lines, integrity_check, is_mounted, pids_with_arg,
                   put_many, rand_bytes, s3_keys)

HELPER = BUILD_DIR / "mount-helpers" / "mount.s3cachefs"
CTL = BUILD_DIR / "tools" / "s3cachefs-ctl"
SEED = 20261121
ROUNDS = 20
KiB = 1024
N_READ = 10  # read-only files under r/, about 6 MiB in all: more than the cache
WRITERS = 2
KEYS_PER_WRITER = 3
READERS = 3
SANITIZER_LOGS = ("ASAN_OPTIONS", "UBSAN_OPTIONS", "TSAN_OPTIONS")


class HelperMount(Mount):
    """A Mount started through the mount helper (no -f: the daemon
    detaches). start() does not require the mountpoint to be free: a dead
    mount left by a kill is the helper's to clear."""

    def argv(self):
        argv = super().argv()
        argv[0] = str(HELPER)
        return argv

    def start(self, timeout=MOUNT_TIMEOUT):
        err_path = self.factory.logdir / f"{self.path.name}.run{len(self.runs) + 1}.stderr"
        self.runs.append(err_path)
        with open(err_path, "wb") as err:
            self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                                         env=self.env, start_new_session=True)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError(f"the helper did not return in {timeout}s: {self.stderr_text()!r}")
        assert rc == 0, f"the helper failed (rc {rc}): {self.stderr_text()!r}"
        pids = pids_with_arg(str(self.path))
        assert len(pids) == 1, f"expected one daemon for {self.path}, found {pids}"
        self.daemon_pid = pids[0]
        os.stat(self.path)
        return self

    def crash(self):
        """SIGKILL the daemon and leave its dead mount behind."""
        os.kill(self.daemon_pid, signal.SIGKILL)
        wait_for(lambda: not self.alive(), 10, f"killed daemon {self.daemon_pid} to go")
        self.daemon_pid = None


class Model:
    """What the bucket must hold under w*/: the last acknowledged bytes of
    each key, and the bytes of writes in flight (not acknowledged)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.acked = {}  # key -> bytes (None: never written)
        self.inflight = {}  # key -> bytes being written

    def begin(self, key, data):
        with self.lock:
            self.inflight[key] = data

    def ack(self, key, data):
        with self.lock:
            self.acked[key] = data
            del self.inflight[key]


def writer(m, model, rng, wid, mode, stop, counts):
    """Creates and overwrites its own keys until the daemon dies."""
    try:
        while not stop.is_set():
            key = f"w{wid}/f{rng.randrange(KEYS_PER_WRITER)}"
            data = rng.randbytes(rng.choice([1, 3 * KiB, 70 * KiB, 200 * KiB, 450 * KiB]))
            use_fsync = mode == "async" and rng.random() < 0.5
            model.begin(key, data)
            fd = os.open(m.path / key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                for off in range(0, len(data), 64 * KiB):
                    view = memoryview(data)[off:off + 64 * KiB]
                    while view:
                        view = view[os.write(fd, view):]
                if use_fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)  # its error (the upload's, ENOTCONN) propagates
            model.ack(key, data)
            counts["writes"] += 1
    except OSError as e:
        if e.errno not in (errno.ENOTCONN, errno.ECONNABORTED):
            counts["errors"].append(f"writer {wid}: {e!r}")


def reader(m, files, rng, rid, stop, counts):
    """Reads r/ files whole (cached or not), or a random range of one,
    until the daemon dies; every read that succeeds must be byte-exact."""
    keys = sorted(files)
    try:
        while not stop.is_set():
            key = rng.choice(keys)
            want = files[key]
            with open(m.path / key, "rb") as f:
                if rng.random() < 0.5:
                    got, lo = f.read(), 0
                else:
                    lo = rng.randrange(len(want))
                    f.seek(lo)
                    got = f.read(rng.randrange(1, 300 * KiB))
            if got != want[lo:lo + len(got)] or (lo == 0 and len(got) != len(want)):
                counts["errors"].append(f"reader {rid}: {key} at {lo}: {len(got)} wrong bytes")
                return
            counts["reads"] += 1
    except OSError as e:
        if e.errno not in (errno.ENOTCONN, errno.ECONNABORTED):
            counts["errors"].append(f"reader {rid}: {e!r}")


def staged(cache_dir):
    root = Path(cache_dir) / "staging"
    return sorted(p.name for p in root.rglob("*") if p.is_file()) if root.exists() else []


def ctl_verify(cache_dir, env):
    p = subprocess.run([str(CTL), "-C", str(cache_dir), "verify"], capture_output=True,
                       stdin=subprocess.DEVNULL, env=env, timeout=120)
    return p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")


def sanitizer_env(tmp_path):
    """The daemon detaches (stderr: /dev/null): have the sanitizers write
    their reports to files instead, appended to the caller's options."""
    logs = tmp_path / "sanitizer"
    logs.mkdir()
    env = {}
    for var in SANITIZER_LOGS:
        old = os.environ.get(var, "")
        env[var] = (old + ":" if old else "") + f"log_path={logs / var.split('_')[0].lower()}"
    return logs, env


def test_kill9_loop(mount, s3, bucket, tmp_path):
    need(HELPER.is_file() and os.access(HELPER, os.X_OK), f"helper {HELPER} (build with meson/ninja)")
    need(CTL.is_file() and os.access(CTL, os.X_OK), f"tool {CTL} (build with meson/ninja)")
    rng = random.Random(SEED)
    files = {f"r/f{i}": rand_bytes(rng.randrange(300 * KiB, 900 * KiB), f"crash-loop-{i}") for i in range(N_READ)}
    put_many(s3, bucket, files)
    san_logs, san_env = sanitizer_env(tmp_path)

    cache = mount.new_dir("cache")
    mode = rng.choice(["sync", "async"])
    options = {"endpoint": mount.endpoint, "cache_dir": str(cache), "cache_min_free": "0", "log_level": "info",
               "cache_size": "4M", "chunk_size": "64K", "writeback": mode}
    m = HelperMount(mount, bucket, mount.new_dir("mnt"), cache, options, mount.env(san_env), False, True)
    mount.mounts.append(m)  # the fixture's teardown unmounts it and kills what is left
    m.start()
    for i in range(WRITERS):
        os.mkdir(m.path / f"w{i}")
    ctl_env = mount.env({"S3CACHEFS_ENDPOINT": mount.endpoint})
    model = Model()
    totals = {"reads": 0, "writes": 0, "killed_mid_write": 0}
    window = (0.1, 0.6) if SANITIZED else (0.1, 1.0)
    t0 = time.monotonic()

    for rnd in range(ROUNDS):
        where = f"seed {SEED}, round {rnd} (writeback={mode})"
        stop = threading.Event()
        counts = {"reads": 0, "writes": 0, "errors": []}
        threads = [threading.Thread(target=writer, daemon=True,
                                    args=(m, model, random.Random(f"{SEED}/{rnd}/w{i}"), i, mode, stop, counts))
                   for i in range(WRITERS)]
        threads += [threading.Thread(target=reader, daemon=True,
                                     args=(m, files, random.Random(f"{SEED}/{rnd}/r{i}"), i, stop, counts))
                    for i in range(READERS)]
        for t in threads:
            t.start()
        time.sleep(rng.uniform(*window))  # the seeded moment of the kill, not a wait for a condition
        m.crash()
        stop.set()
        for t in threads:
            t.join(30)
        assert not any(t.is_alive() for t in threads), f"{where}: a worker hangs on the dead mount"
        assert not counts["errors"], f"{where}: {counts['errors']}"
        totals["reads"] += counts["reads"]
        totals["writes"] += counts["writes"]

        # the dead mount is left behind
        assert is_mounted(m.path), f"{where}: no mount left by the kill"
        # stat may still answer from the attributes the kernel caches
        # (meta_ttl); statfs always asks the daemon
        errs = []
        for _ in range(2):
            try:
                os.statvfs(m.path)
                errs.append(0)
            except OSError as e:
                errs.append(e.errno)
        # the first access may see the abort itself
        assert errs[0] in (errno.ENOTCONN, errno.ECONNABORTED) and errs[1] == errno.ENOTCONN, (
            f"{where}: statfs of the dead mount: {[errno.errorcode.get(e, e) for e in errs]}")

        check = integrity_check(cache / "meta.db")
        assert check == ["ok"], f"{where}: integrity_check of meta.db: {check[:10]}"

        # the remount (this round's checks, then the next round's work)
        mode = rng.choice(["sync", "async"])
        m.options["writeback"] = mode
        m.start()
        text = m.stderr_text()
        lines = [line for line in text.splitlines() if line.startswith("mount.s3cachefs: ")]
        assert len(lines) == 1 and "stale mount" in lines[0], f"{where}: the helper's output on the remount: {text}"
        assert not error_lines(text), f"{where}: error lines on the remount: {error_lines(text)}"
        wait_for(lambda: not staged(cache), 60, f"{where}: pending uploads to finish (staged: {staged(cache)})",
                 interval=0.05)

        rc, out, err = ctl_verify(cache, ctl_env)
        assert rc == 0 and out.startswith("verify: checked ") and out.strip().endswith(" dropped 0 bad"), (
            f"{where}: s3cachefs-ctl verify: rc {rc}, {out!r} {err!r}")

        # every acknowledged write is in S3; one in flight left the old or a prefix of the new
        with model.lock:
            inflight, model.inflight = model.inflight, {}
        totals["killed_mid_write"] += len(inflight)
        in_bucket = {k: s3.get_object(Bucket=bucket, Key=k)["Body"].read()
                     for k in s3_keys(s3, bucket, "w") if not k.endswith("/")}  # not the mkdir markers
        for key in sorted(set(in_bucket) | set(model.acked) | set(inflight)):
            got, acked = in_bucket.get(key), model.acked.get(key)
            if key in inflight:
                new = inflight[key]
                assert got == acked or (got is not None and new.startswith(got)), (
                    f"{where}: {key}: the bucket holds {None if got is None else len(got)} bytes, neither the "
                    f"acknowledged {None if acked is None else len(acked)} nor a prefix of the {len(new)} in flight")
                if got is not None:
                    model.acked[key] = got
            else:
                assert got == acked, (
                    f"{where}: {key}: acknowledged write lost: the bucket holds "
                    f"{None if got is None else len(got)} bytes, acknowledged {None if acked is None else len(acked)}")

        # every read through the mount equals what boto3 reads
        for key, want in [*in_bucket.items(), *files.items()]:
            with open(m.path / key, "rb") as f:
                got = f.read()
            assert got == want, f"{where}: {key} read through the mount differs from boto3 ({len(got)} bytes)"
        for i in range(WRITERS):
            names = sorted(os.listdir(m.path / f"w{i}"))
            want = sorted(k.split("/")[1] for k in in_bucket if k.startswith(f"w{i}/") and k != f"w{i}/")
            assert names == want, f"{where}: listing of w{i}/: {names}, the bucket has {want}"

    took = time.monotonic() - t0
    assert totals["writes"] >= ROUNDS and totals["reads"] >= ROUNDS, f"too little work done: {totals}"
    assert totals["killed_mid_write"] >= ROUNDS // 2, f"the kills missed the writes: {totals}"
    st = json.loads(subprocess.run([str(CTL), "-C", str(cache), "stats", "--json"], capture_output=True, check=True,
                                   stdin=subprocess.DEVNULL, env=ctl_env, timeout=60).stdout)
    assert st["evictions"] > 0, f"the cap forced no eviction: {st}"
    assert 0 < st["bytes_on_disk"] <= st["cap_bytes"], st
    assert len(chunk_files(cache)) > 0
    m.unmount()
    reports = sorted(san_logs.iterdir())
    assert not reports, f"sanitizer reports: {[p.read_text(errors='replace')[:2000] for p in reports]}"
    print(f"seed {SEED}: {ROUNDS} rounds in {took:.1f}s, {totals}")
