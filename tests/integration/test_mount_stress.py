"""Concurrency: 64 readers and 8 writers over one shared tree of a real
mount, for S3CACHEFS_STRESS_SECONDS (default 120 s, 30 s when sanitized),
with a cache several times smaller than the tree so eviction churns all the
time.

What is asserted, each from the README:
  - no reader ever sees a wrong byte: static files (put with boto3) read
    byte-exact at every range; a whole-file read of a writer's file is
    exactly one complete version (every version is self-describing: a header
    naming it, then bytes derived from its name), never a mix of two.  The
    only failures allowed are the documented ones of a file replaced or
    removed while open or being opened, and only for a reader that
    overlapped such a change of its key: ENOENT, ESTALE at open, EIO ("if
    the object changes on S3 while a file is open, a read that needs a
    chunk not yet cached fails with EIO"), and a read cut short (the known
    limitation of a rename over a file being read: a prefix of one version,
    never a wrong byte; counted as version_short_racing);
  - close() of every write returns 0 (writeback=sync: the object is in S3)
    and a read-back by the writer gives what it wrote;
  - the cache cap holds throughout: "cache_size caps the bytes the folder
    takes on disk (file system blocks, headers and the database counted)",
    and staged chunks count against it.  A sampler stops the daemon
    (SIGSTOP, so the folder is one consistent snapshot), sums st_blocks * 512
    of the chunk files, meta.db and its WAL and the staging files, resumes
    it, and records the maximum;
  - at the end, with boto3: every writer key holds its last version byte
    for byte, removed keys and temporary names are gone; the daemon is alive
    and exits 0 with a clean log (the mount fixture fails the test on a
    sanitizer report); s3cachefs-ctl verify drops no chunk; meta.db passes
    PRAGMA integrity_check; the stats agree with the files on disk.
"""

import contextlib
import errno
import hashlib
import json
import os
import random
import signal
import subprocess
import threading
import time

from conftest import ACCESS_KEY, BUILD_DIR, SANITIZED, SECRET_KEY, need
from mount import MiB, integrity_check, put_many, s3_body, s3_keys

SECONDS = float(os.environ.get("S3CACHEFS_STRESS_SECONDS", "30" if SANITIZED else "120"))
READERS = 64
WRITERS = 8
KEYS_PER_WRITER = 3
CAP = 32 * MiB
CHUNK = 256 * 1024
SEED = 7
# how long the end may wait for a reader or writer to finish its last step
JOIN_TIMEOUT = 120
SAMPLE_EVERY = 0.05
CTL = BUILD_DIR / "tools" / "s3cachefs-ctl"

# ---- content: every byte derived from a name, so a read can be checked -------

BLOCK = 64 * 1024
_BASE = random.Random(SEED).randbytes(4 * MiB)
_BASE2 = _BASE + _BASE[:BLOCK]


def _block(name, i):
    h = hashlib.blake2b(f"{name}/{i}".encode(), digest_size=8).digest()
    start = int.from_bytes(h, "little") % len(_BASE)
    return memoryview(_BASE2)[start:start + BLOCK]


def expected(name, off, length):
    """Bytes [off, off+length) of the content called name: 64 KiB blocks,
    each a slice of a random buffer at an offset hashed from (name, block),
    so a shifted, swapped or foreign range never matches."""
    out = bytearray()
    end = off + length
    i = off // BLOCK
    while i * BLOCK < end:
        b = _block(name, i)
        lo = max(off, i * BLOCK) - i * BLOCK
        hi = min(end, (i + 1) * BLOCK) - i * BLOCK
        out += b[lo:hi]
        i += 1
    return bytes(out)


HEADER_LEN = 64


def version_bytes(vid, size):
    """A writer's version: a header naming it and its length, then bytes
    derived from its id."""
    head = f"S3CFS-STRESS id={vid} len={size}\n".encode().ljust(HEADER_LEN, b".")
    assert len(head) == HEADER_LEN and size >= HEADER_LEN
    return head + expected(vid, HEADER_LEN, size - HEADER_LEN)


def header_words(data):
    """The name=value words of a version's header line."""
    return dict(w.split("=", 1) for w in data[:HEADER_LEN].split(b"\n")[0].decode("latin-1").split()[1:]
                if "=" in w)


def check_version(data):
    """None when data is exactly one complete version, else what is wrong."""
    if len(data) < HEADER_LEN:
        return f"{len(data)} bytes, shorter than a header: {data[:80]!r}"
    words = header_words(data)
    if not data.startswith(b"S3CFS-STRESS ") or "id" not in words or "len" not in words:
        return f"no version header: {data[:80]!r}"
    if int(words["len"]) != len(data):
        return f"version {words['id']} says {words['len']} bytes, read {len(data)}"
    want = version_bytes(words["id"], len(data))
    if data != want:
        at = next(i for i in range(len(data)) if data[i] != want[i])
        end = at
        while end < len(data) and data[end] != want[end]:
            end += 1
        return (f"version {words['id']} ({len(data)} bytes) differs from byte {at} to {end}: "
                f"{whose(data, at)}")
    return None


def whose(data, at):
    """Which version (or zeros) the bytes at `at` come from, for reports."""
    piece = data[at:at + 256]
    if piece == bytes(len(piece)):
        return "zeros"
    for w in range(WRITERS):
        for serial in range(1, 2000):
            vid = f"w{w}.{serial}"
            if expected(vid, at, len(piece)) == piece:
                return f"bytes of version {vid} at the same offset"
    return "bytes of no known version"


# ---- the tree ------------------------------------------------------------------

FOLDERS = [f"d{i}" for i in range(4)]


def static_tree():
    """{key: size}: per folder 2 files of many chunks, 6 of a few, 8 tiny
    (one empty); about four times the cap in all."""
    rng = random.Random(SEED)
    tree = {}
    for d in FOLDERS:
        for j in range(2):
            tree[f"{d}/big{j}"] = rng.randrange(9 * MiB, 12 * MiB)
        for j in range(6):
            tree[f"{d}/mid{j}"] = rng.randrange(CHUNK // 2, 5 * CHUNK)
        for j in range(8):
            tree[f"{d}/tiny{j}"] = 0 if (d, j) == ("d0", 0) else rng.randrange(1, 5000)
    return tree


WRITE_SIZES = [HEADER_LEN, 3000, 70_000, CHUNK - 1, CHUNK + 1, 700_000, 1_500_000]


class Run:
    """What the threads share."""

    def __init__(self, root):
        self.root = root
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.errors = []  # (who, what), guarded by lock
        self.counts = {}  # guarded by lock
        # writer key -> its last version id or None (removed), written only by
        # its owner thread; readers only read names
        self.state = {}
        # writer key -> changes begun + changes ended (odd: one under way),
        # written only by its owner thread
        self.seq = {}

    @contextlib.contextmanager
    def changing(self, *keys):
        """A writer's change (rename, unlink) of keys: readers that overlap
        one may see the documented ENOENT or EIO, no other reader may."""
        for k in keys:
            self.seq[k] += 1
        try:
            yield
        finally:
            for k in keys:
                self.seq[k] += 1

    def error(self, who, what):
        with self.lock:
            self.errors.append(f"{who}: {what}")
            if len(self.errors) > 200:
                self.stop.set()

    def count(self, what, n=1):
        with self.lock:
            self.counts[what] = self.counts.get(what, 0) + n


def writer_keys(w):
    """The keys writer w replaces, renames and removes; readers read them."""
    return [f"{FOLDERS[(w + k) % len(FOLDERS)]}/w{w}-k{k}" for k in range(KEYS_PER_WRITER)]


def private_key(w):
    """The key writer w overwrites in place; nobody else reads it."""
    return f"{FOLDERS[w % len(FOLDERS)]}/w{w}-p"


# ---- readers --------------------------------------------------------------------

def read_all(fd, size_hint):
    parts = []
    off = 0
    while True:
        b = os.pread(fd, max(size_hint - off, 1 << 20) if size_hint > off else 1 << 20, off)
        if not b:
            return b"".join(parts)
        parts.append(b)
        off += len(b)


def reader(run, tree, n):
    rng = random.Random(f"{SEED}-reader-{n}")
    static = sorted(tree)
    wkeys = [k for w in range(WRITERS) for k in writer_keys(w)]
    who = f"reader {n}"
    while not run.stop.is_set():
        r = rng.random()
        try:
            if r < 0.70:
                read_static(run, tree, rng, rng.choice(static), who)
            elif r < 0.95:
                read_version(run, rng.choice(wkeys), who)
            else:
                d = rng.choice(FOLDERS)
                names = set(os.listdir(os.path.join(run.root, d)))
                missing = {k.split("/")[1] for k in static if k.startswith(d + "/")} - names
                if missing:
                    run.error(who, f"ls {d}: static files missing: {sorted(missing)[:5]}")
                run.count("listings")
        except Exception as e:  # noqa: BLE001 - every failure is a finding
            run.error(who, f"{type(e).__name__}: {e}")


def read_static(run, tree, rng, key, who):
    path = os.path.join(run.root, key)
    size = tree[key]
    fd = os.open(path, os.O_RDONLY)
    try:
        if rng.random() < 0.5:
            # drop the kernel's pages so reads reach the daemon
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        st = os.fstat(fd)
        if st.st_size != size:
            run.error(who, f"{key}: size {st.st_size}, want {size}")
            return
        if rng.random() < 0.3 or size < 8192:
            data = read_all(fd, size)
            if data != expected(key, 0, size):
                run.error(who, f"{key}: whole-file read of {len(data)} bytes is wrong")
            run.count("static_whole")
            return
        for _ in range(rng.randrange(1, 8)):
            off = rng.randrange(0, size)
            length = rng.choice([1, 4096, 65536, 200_000, 600_000, 3 * CHUNK])
            data = os.pread(fd, length, off)
            want = expected(key, off, min(length, size - off))
            if data != want:
                at = next((i for i in range(min(len(data), len(want))) if data[i] != want[i]),
                          min(len(data), len(want)))
                run.error(who, f"{key}: pread({length}, {off}) gave {len(data)} bytes, "
                               f"want {len(want)}, first difference at +{at}")
            run.count("static_ranges")
    finally:
        os.close(fd)


def read_version(run, key, who):
    path = os.path.join(run.root, key)
    seq = run.seq[key]
    before = run.state[key]

    def changed():
        return seq % 2 == 1 or run.seq[key] != seq

    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        if before is not None and not changed():
            run.error(who, f"{key}: ENOENT, but it holds {before} and nothing changed it")
        run.count("version_enoent")
        return
    except OSError as e:
        # documented: an open racing a rename over the name may be stale
        if e.errno != errno.ESTALE or not changed():
            raise
        run.count("version_estale")
        return
    try:
        size = os.fstat(fd).st_size
        try:
            data = read_all(fd, size)
        except OSError as e:
            # documented: replaced or removed while open
            if e.errno in (errno.EIO, errno.ENOENT):
                if not changed():
                    run.error(who, f"{key}: {errno.errorcode[e.errno]} while nothing changed it")
                run.count("version_eio")
                return
            raise
    finally:
        os.close(fd)
    bad = check_version(data)
    if bad and changed() and is_version_prefix(data):
        # the documented limitation (README, Consistency): a read racing a
        # rename over its file may come back short, never with wrong bytes
        run.count("version_short_racing")
        return
    if bad:
        run.error(who, f"{key}: {bad} (size at open {size}; now {describe(path)}; "
                       f"changes of the key during the read: {run.seq[key] - seq})")
    run.count("version_whole")


def is_version_prefix(data):
    """Whether data is the start of one version, cut short."""
    if len(data) < HEADER_LEN or not data.startswith(b"S3CFS-STRESS "):
        return False
    words = header_words(data)
    if "id" not in words or "len" not in words or int(words["len"]) <= len(data):
        return False
    return data == version_bytes(words["id"], int(words["len"]))[:len(data)]


def describe(path):
    """What the mount says of a file now, for reports."""
    out = []
    try:
        out.append(f"size {os.stat(path).st_size}")
        for name in ("etag", "staged", "last_open"):
            try:
                out.append(f"{name} {os.getxattr(path, 'user.s3cachefs.' + name).decode()}")
            except OSError as e:
                out.append(f"{name} ({e.strerror})")
    except OSError as e:
        out.append(e.strerror)
    return ", ".join(out)


# ---- writers ----------------------------------------------------------------------

def write_file(path, data, rng):
    """open(O_CREAT | O_TRUNC), writes of varied sizes, close (writeback=sync:
    close returns the upload's error).  An OSError says which call failed."""
    phase = "open"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        phase = "write"
        off = 0
        while off < len(data):
            step = rng.choice([4096, 65536, 131072, 1 << 20])
            off += os.write(fd, data[off:off + step])
    except OSError as e:
        raise OSError(e.errno, f"{phase}: {e.strerror}", path) from None
    finally:
        phase = "close"
        try:
            os.close(fd)
        except OSError as e:
            raise OSError(e.errno, f"close: {e.strerror}", path) from None


def writer(run, w):
    rng = random.Random(f"{SEED}-writer-{w}")
    keys = writer_keys(w)
    who = f"writer {w}"
    serial = 0
    step = "start"
    while not run.stop.is_set():
        try:
            r = rng.random()
            k = rng.choice(keys)
            path = os.path.join(run.root, k)
            if r < 0.15 and run.state[k] is not None:
                step = f"unlink {k}"
                with run.changing(k):
                    os.unlink(path)
                    run.state[k] = None
                run.count("unlinks")
                continue
            if r < 0.30 and run.state[k] is not None:
                other = rng.choice([x for x in keys if x != k])
                step = f"rename {k} to {other}"
                with run.changing(k, other):
                    os.rename(path, os.path.join(run.root, other))
                    run.state[other], run.state[k] = run.state[k], None
                run.count("renames")
                continue
            serial += 1
            vid = f"w{w}.{serial}"
            data = version_bytes(vid, rng.choice(WRITE_SIZES))
            if r < 0.75:
                # a new version replaces the old one whole: written under a
                # temporary name, then renamed over it, so a reader opens
                # one complete version or the next
                tmp = os.path.join(os.path.dirname(path), f".tmp-w{w}")
                step = f"write {tmp}"
                write_file(tmp, data, rng)
                step = f"rename {tmp} to {k}"
                with run.changing(k):
                    os.rename(tmp, path)
                    run.state[k] = vid
                run.count("replaces")
            else:
                # in place, on the writer's private key (readers could see it
                # half written, as on any file system)
                k = private_key(w)
                path = os.path.join(run.root, k)
                step = f"overwrite {k}"
                write_file(path, data, rng)
                run.count("overwrites")
            run.state[k] = vid
            step = f"read back {k}"
            with open(path, "rb") as f:
                back = f.read()
            if back != data:
                run.error(who, f"{k}: read-back of {vid} after close: {check_version(back)}")
        except Exception as e:  # noqa: BLE001 - every failure is a finding
            run.error(who, f"{step}: {type(e).__name__}: {e}")
            run.stop.wait(0.1)  # do not spin on a persistent failure


# ---- the cap ----------------------------------------------------------------------

def blocks(path):
    try:
        return os.lstat(path).st_blocks * 512
    except FileNotFoundError:
        return 0


def cache_usage(cache_dir):
    """{'chunks', 'staging', 'meta', 'other', 'nchunks'}: bytes on disk
    (st_blocks * 512) of the chunk files, the staging files, meta.db with
    its WAL, and the rest of the folder."""
    use = {"chunks": 0, "staging": 0, "meta": 0, "other": 0, "nchunks": 0, "tmp": 0, "wal": 0}
    for dirpath, _, names in os.walk(cache_dir, onerror=lambda e: None):
        rel = os.path.relpath(dirpath, cache_dir).split(os.sep)[0]
        for name in names:
            b = blocks(os.path.join(dirpath, name))
            if rel == "chunks":
                use["chunks"] += b
                use["nchunks"] += 1
                if ".tmp." in name:  # a chunk being written (its reservation covers it)
                    use["tmp"] += b
            elif rel == "staging":
                use["staging"] += b
            elif rel == "." and name in ("meta.db", "meta.db-wal"):
                use["meta"] += b
                if name == "meta.db-wal":
                    use["wal"] += b
            else:
                use["other"] += b
    return use


def capped(use):
    """What cache_size caps (see the README's "The cache" and "Writes")."""
    return use["chunks"] + use["staging"] + use["meta"]


def sampler(run, pid, cache_dir, out):
    """Every SAMPLE_EVERY: freeze the daemon, measure, thaw; keep the
    sample with the most capped bytes."""
    while not run.stop.wait(SAMPLE_EVERY):
        os.kill(pid, signal.SIGSTOP)
        try:
            use = cache_usage(cache_dir)
            if capped(use) > CAP:
                # for the report: what the staging files hold, frozen
                staging = os.path.join(cache_dir, "staging")
                use["staging_files"] = sorted(
                    (n, os.lstat(os.path.join(staging, n)).st_size, blocks(os.path.join(staging, n)))
                    for n in os.listdir(staging))
        finally:
            os.kill(pid, signal.SIGCONT)
        out["samples"] = out.get("samples", 0) + 1
        out["meta_max"] = max(out.get("meta_max", 0), use["meta"])
        if "max" not in out or capped(use) > capped(out["max"]):
            out["max"] = use


# ---- the test ----------------------------------------------------------------------

def ctl(*args):
    need(CTL.is_file() and os.access(CTL, os.X_OK), f"tool {CTL} (build with meson/ninja)")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "S3CACHEFS_"))}
    env.update(AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY)
    p = subprocess.run([str(CTL), *[str(a) for a in args]], capture_output=True,
                       stdin=subprocess.DEVNULL, env=env, timeout=120)
    out, err = p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")
    assert p.returncode == 0 and err == "", f"s3cachefs-ctl {args}: rc {p.returncode}: {err!r}"
    return out


def test_readers_and_writers_under_a_small_cache(mount, s3, bucket):
    tree = static_tree()
    put_many(s3, bucket, {k: expected(k, 0, n) for k, n in tree.items()})
    assert sum(tree.values()) > 3 * CAP
    m = mount(bucket, cache_size=str(CAP), chunk_size=str(CHUNK), readahead="4M",
              log_level=os.environ.get("STRESS_LOG", "info"))
    run = Run(str(m.path))
    for w in range(WRITERS):
        for k in writer_keys(w) + [private_key(w)]:
            run.state[k] = None
            run.seq[k] = 0
    sample = {}
    threads = [threading.Thread(target=reader, args=(run, tree, n), name=f"reader{n}")
               for n in range(READERS)]
    threads += [threading.Thread(target=writer, args=(run, w), name=f"writer{w}")
                for w in range(WRITERS)]
    samp = threading.Thread(target=sampler, args=(run, m.proc.pid, m.cache_dir, sample))
    try:
        for t in threads:
            t.start()
        samp.start()
        run.stop.wait(SECONDS)
    finally:
        run.stop.set()
        deadline = time.monotonic() + JOIN_TIMEOUT
        for t in threads + [samp]:
            if t.ident is not None:
                t.join(max(0.1, deadline - time.monotonic()))
    hung = [t.name for t in threads + [samp] if t.is_alive()]
    assert not hung, f"stuck in a call on the mount after {JOIN_TIMEOUT}s (deadlock?): {hung[:10]}"
    assert m.alive(), (f"the daemon died (status {m.proc.returncode}); errors seen: {run.errors[:5]}; "
                       f"log: {m.stderr_text()[-4000:]}")
    assert not run.errors, f"{len(run.errors)} errors, the first ones:\n" + "\n".join(run.errors[:20])
    c = run.counts
    print(f"stress {SECONDS:.0f}s: {json.dumps(c, sort_keys=True)}; cap samples {sample.get('samples')}, "
          f"max {sample.get('max')}")

    # it did run, concurrently, and churned the cache
    assert c.get("static_ranges", 0) + c.get("static_whole", 0) >= READERS, c
    assert c.get("version_whole", 0) > 0 and c.get("replaces", 0) >= WRITERS, c
    # the known limitation stays rare (2-4 per 2-minute run against
    # thousands of whole reads when it was measured)
    assert c.get("version_short_racing", 0) * 50 <= c["version_whole"], c
    assert sample.get("samples", 0) >= 10, sample
    worst = sample["max"]
    assert capped(worst) <= CAP, f"cache use {capped(worst)} over the cap {CAP}: {worst}"

    live = json.loads(ctl("-C", m.cache_dir, "stats", "--json"))
    assert live["cap_bytes"] == CAP and live["bytes_on_disk"] <= CAP, live
    assert live["evictions"] > 0, f"the cache never evicted: {live}"

    # what reached S3 (boto3): each writer key's last version, nothing else
    want = {k: v for k, v in run.state.items() if v is not None}
    for k, vid in sorted(want.items()):
        body = s3_body(s3, bucket, k)
        assert body is not None, f"{k}: last version {vid} is not in S3"
        bad = check_version(body)
        assert bad is None and body.startswith(f"S3CFS-STRESS id={vid} ".encode()), (
            f"{k}: S3 holds {body[:60]!r} ({bad}), want version {vid}")
    keys = set(s3_keys(s3, bucket))
    assert keys == set(tree) | set(want), (
        f"unexpected keys {sorted(keys - set(tree) - set(want))[:10]}, "
        f"missing {sorted(set(tree) | set(want) - keys)[:10]}")

    out = ctl("-C", m.cache_dir, "verify")
    assert out.strip().endswith("dropped 0 bad"), out
    st = m.unmount()
    assert st["cache.corrupt"] == 0 and st["cache.disk_errors"] == 0, st
    after = cache_usage(m.cache_dir)
    assert after["staging"] == 0, after
    assert st["cache.chunks"] == after["nchunks"], (st, after)
    # used is the chunk files plus meta.db and its WAL as last measured
    assert after["chunks"] <= st["cache.used"] <= after["chunks"] + max(sample["meta_max"], after["meta"]), (
        st, after, sample["meta_max"])
    assert integrity_check(m.cache_dir / "meta.db") == ["ok"]


def test_create_after_rename_while_listing(mount, s3, bucket):
    """A name renamed away while other threads list its folder can be
    created again at once: a directory snapshot taken before the rename
    must not give the kernel the old name back (it did: open(O_CREAT) then
    failed with ENOENT for meta_ttl)."""
    s3.put_object(Bucket=bucket, Key="d/x", Body=b"x")
    m = mount(bucket)
    d = m.path / "d"
    stop = threading.Event()
    errors = []

    def lister():
        while not stop.is_set():
            try:
                os.listdir(d)
            except OSError as e:
                errors.append(f"listdir: {e}")

    listers = [threading.Thread(target=lister) for _ in range(4)]
    for t in listers:
        t.start()
    try:
        for i in range(60):
            tmp = d / ".tmp"
            data = version_bytes(f"r.{i}", HEADER_LEN + i)
            try:
                write_file(tmp, data, random.Random(i))
                os.rename(tmp, d / f"k{i % 3}")
            except OSError as e:
                errors.append(f"round {i}: {e}")
                if len(errors) > 5:
                    break
    finally:
        stop.set()
        for t in listers:
            t.join(JOIN_TIMEOUT)
    assert not errors, errors
    for k in range(3):
        last = max(i for i in range(60) if i % 3 == k)
        assert s3_body(s3, bucket, f"d/k{k}") == version_bytes(f"r.{last}", HEADER_LEN + last)
    assert s3_body(s3, bucket, "d/.tmp") is None


def test_overwrite_while_listing_reads_back_whole(mount, s3, bucket):
    """A file overwritten in place (bigger each time) while other threads
    list its folder reads back whole after close: a listing must not hand
    the kernel the size of the version before, in the middle of the
    writes (it did: the read-back stopped at the old size)."""
    s3.put_object(Bucket=bucket, Key="d/p", Body=version_bytes("p.0", HEADER_LEN))
    m = mount(bucket)
    d = m.path / "d"
    stop = threading.Event()
    errors = []

    def lister():
        while not stop.is_set():
            try:
                for e in os.scandir(d):
                    e.stat()
            except OSError as e:
                errors.append(f"listing: {e}")

    listers = [threading.Thread(target=lister) for _ in range(4)]
    for t in listers:
        t.start()
    try:
        for i in range(1, 41):
            data = version_bytes(f"p.{i}", HEADER_LEN + i * 7919)
            write_file(d / "p", data, random.Random(i))
            with open(d / "p", "rb") as f:
                back = f.read()
            if back != data:
                errors.append(f"round {i}: read back {check_version(back)}")
                break
    finally:
        stop.set()
        for t in listers:
            t.join(JOIN_TIMEOUT)
    assert not errors, errors
    assert s3_body(s3, bucket, "d/p") == data
