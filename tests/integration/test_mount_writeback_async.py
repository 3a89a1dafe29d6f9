"""-o writeback=async through a real mount: close returns once the file is
staged, uploads run in the background several at once, fsync and unmount
wait for them, a crash leaves them for the next mount.

A gate in front of the server holds every PUT (and multipart POST) until the
test opens it, so "not uploaded yet" is observed, not timed. What reached
the bucket is checked with boto3.
"""

import os
import signal
import threading

import pytest

from conftest import wait_for
from faultproxy import FaultProxy
from mount import rand_bytes, read_file, s3_body, sha

WAIT = 30


class GateProxy(FaultProxy):
    """Forwards everything; while closed, holds uploads (PUT, POST) before
    forwarding them. Counts the uploads held at once."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.open_ = threading.Event()
        self.open_.set()
        self.drop = threading.Event()
        self.cv = threading.Condition()
        self.inflight = 0
        self.max_inflight = 0
        self.held_targets = []

    def close_gate(self):
        self.open_.clear()

    def open_gate(self):
        self.open_.set()

    def _forward(self, client, rfile, method, request, fault):
        held = method in ("PUT", "POST") and not self.open_.is_set()
        if held:
            target = request.split(b" ", 2)[1].decode("latin-1")
            with self.cv:
                self.inflight += 1
                self.max_inflight = max(self.max_inflight, self.inflight)
                self.held_targets.append(target)
            while not self.open_.wait(0.05):
                if self._stop.is_set() or self.drop.is_set():
                    with self.cv:
                        self.inflight -= 1
                    return False
        try:
            return super()._forward(client, rfile, method, request, fault)
        finally:
            if held:
                with self.cv:
                    self.inflight -= 1

    def drop_held(self):
        """Closes the connections of the held uploads without forwarding
        them, then opens the gate."""
        self.drop.set()
        wait_for(lambda: self.inflight == 0, WAIT, "held uploads to be dropped")
        self.drop.clear()
        self.open_gate()

    def held(self, key):
        with self.cv:
            return any(t.split("?")[0].endswith("/" + key) for t in self.held_targets)


@pytest.fixture
def gate(s3rver):
    p = GateProxy("127.0.0.1", s3rver.port)
    p.start()
    yield p
    p.stop()  # what is still held is dropped, never forwarded


def write_file(path, data):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


def in_thread(fn):
    """Runs fn in a thread; returns (thread, result dict)."""
    out = {}

    def run():
        try:
            out["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - reported by the test
            out["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, out


def joined(t, out, what):
    t.join(WAIT)
    assert not t.is_alive(), f"{what} did not return"
    if "error" in out:
        raise out["error"]
    return out.get("value")


def wait_object(s3, bucket, key, want):
    wait_for(lambda: s3_body(s3, bucket, key) == want, WAIT, f"{key!r} in the bucket")


def staging_files(m):
    d = m.cache_dir / "staging"
    return [n for n in os.listdir(d)] if d.exists() else []


def test_close_returns_before_the_upload(mount, s3, bucket, gate):
    m = mount(bucket, endpoint=gate.endpoint, writeback="async")
    data = rand_bytes(300_000, "async-close")
    gate.close_gate()
    t, out = in_thread(lambda: write_file(m.path / "f", data))
    joined(t, out, "write and close with S3 holding the upload")
    wait_for(lambda: gate.held("f"), WAIT, "the background upload of 'f' to start")
    assert s3_body(s3, bucket, "f") is None, "the object exists although its PUT is held"
    # the mount shows the new content meanwhile
    assert os.stat(m.path / "f").st_size == len(data)
    assert sha(read_file(m.path / "f")) == sha(data)
    gate.open_gate()
    wait_object(s3, bucket, "f", data)
    m.unmount()


def test_fsync_uploads_before_close(mount, s3, bucket):
    m = mount(bucket, writeback="async")
    data = rand_bytes(200_000, "async-fsync")
    fd = os.open(m.path / "g", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        assert os.write(fd, data) == len(data)
        os.fsync(fd)
        # the file is still open: only fsync can have sent it
        assert s3_body(s3, bucket, "g") == data, "fsync returned before the object was in the bucket"
    finally:
        os.close(fd)
    m.unmount()


def test_unmount_waits_for_every_upload(mount, s3, bucket, gate):
    m = mount(bucket, endpoint=gate.endpoint, writeback="async")
    files = {f"u/{i}": rand_bytes(50_000 + i, f"unmount-{i}") for i in range(6)}
    os.mkdir(m.path / "u")
    gate.close_gate()
    for k, v in files.items():
        write_file(m.path / k, v)
    wait_for(lambda: gate.inflight >= 1, WAIT, "an upload to start")
    assert all(s3_body(s3, bucket, k) is None for k in files)
    t, out = in_thread(m.unmount)
    gate.open_gate()
    joined(t, out, "unmount")
    for k, v in files.items():
        assert s3_body(s3, bucket, k) == v, f"{k!r} not uploaded when the daemon exited"
    assert staging_files(m) == [], "staging files left after a clean unmount"


def test_kill_after_close_then_remount_uploads(mount, s3, bucket, gate):
    m = mount(bucket, endpoint=gate.endpoint, writeback="async")
    data = rand_bytes(400_000, "async-crash")
    gate.close_gate()
    write_file(m.path / "crash", data)
    wait_for(lambda: gate.held("crash"), WAIT, "the upload of 'crash' to start")
    m.kill()
    gate.drop_held()  # the killed daemon's PUT never reaches S3
    assert s3_body(s3, bucket, "crash") is None
    m.remount()
    wait_object(s3, bucket, "crash", data)
    m.unmount()


def test_many_files_upload_in_parallel(mount, s3, bucket, gate):
    m = mount(bucket, endpoint=gate.endpoint, writeback="async", uploads="8")
    files = {f"t/d{i % 5}/f{i}": rand_bytes(1000 + 97 * i, f"many-{i}") for i in range(100)}
    for i in range(5):
        os.makedirs(m.path / f"t/d{i}")
    gate.close_gate()
    t, out = in_thread(lambda: [write_file(m.path / k, v) for k, v in files.items()])
    joined(t, out, "writing 100 files with S3 holding every upload")
    # the uploads go out several at once
    wait_for(lambda: gate.inflight >= 8, WAIT, "8 uploads in flight at once")
    gate.open_gate()
    m.unmount()
    assert gate.max_inflight >= 8
    for k, v in files.items():
        got = s3_body(s3, bucket, k)
        assert got is not None and sha(got) == sha(v), f"{k!r} differs in the bucket"


def test_error_after_close_is_retried_and_logged(mount, s3, bucket, proxy):
    m = mount(bucket, endpoint=proxy.endpoint, writeback="async", retries="1", expect_errors=True)
    data = rand_bytes(100_000, "async-error")
    proxy.add("500", count=None, method="PUT")
    write_file(m.path / "e", data)  # close succeeds: the upload is later
    wait_for(lambda: "upload of 'e' failed" in m.stderr_text(), WAIT, "the failed upload to be logged")
    wait_for(lambda: proxy.injected["500"] >= 4, WAIT, "the upload to be retried")
    assert s3_body(s3, bucket, "e") is None
    proxy.clear()
    wait_object(s3, bucket, "e", data)
    m.unmount()


def test_unlink_of_a_pending_upload_leaves_no_object(mount, s3, bucket, gate):
    m = mount(bucket, endpoint=gate.endpoint, writeback="async")
    gate.close_gate()
    write_file(m.path / "gone", rand_bytes(100_000, "gone"))
    wait_for(lambda: gate.held("gone"), WAIT, "the upload of 'gone' to start")
    t, out = in_thread(lambda: os.unlink(m.path / "gone"))
    gate.open_gate()
    joined(t, out, "unlink")
    assert s3_body(s3, bucket, "gone") is None, "the object came back after unlink"
    assert not os.path.exists(m.path / "gone")
    m.unmount()
    assert s3_body(s3, bucket, "gone") is None, "the object came back after unmount"


def test_rename_of_a_pending_upload(mount, s3, bucket, gate):
    m = mount(bucket, endpoint=gate.endpoint, writeback="async")
    data = rand_bytes(150_000, "moved")
    gate.close_gate()
    write_file(m.path / "src", data)
    wait_for(lambda: gate.held("src"), WAIT, "the upload of 'src' to start")
    t, out = in_thread(lambda: os.rename(m.path / "src", m.path / "dst"))
    gate.open_gate()
    joined(t, out, "rename")
    assert s3_body(s3, bucket, "dst") == data
    assert s3_body(s3, bucket, "src") is None, "the old name is still in the bucket"
    m.unmount()
    assert s3_body(s3, bucket, "src") is None, "the old name came back after unmount"
    assert s3_body(s3, bucket, "dst") == data


def in_syscall(tid, nr):
    """Whether thread @tid of this process is blocked in system call @nr."""
    try:
        with open(f"/proc/self/task/{tid}/syscall") as f:
            return f.read().split()[0] == str(nr)
    except (FileNotFoundError, IndexError):
        return False


OPENAT = 257  # x86_64


def test_open_during_a_rename_over_reads_one_whole_version(mount, s3, bucket, gate):
    """A staged file renamed over another is uploaded under the new name
    before the names move.  An open of the old file in that window (its
    inode still holds the old size) must not read the new bytes cut to the
    old size: it waits for the rename, then opens the new file."""
    old, new = rand_bytes(3000, "over-old"), rand_bytes(262_145, "over-new")
    s3.put_object(Bucket=bucket, Key="dst", Body=old)
    m = mount(bucket, endpoint=gate.endpoint, writeback="async", meta_ttl="1h")
    assert read_file(m.path / "dst") == old  # the kernel holds size 3000
    fd = os.open(m.path / "tmp", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(fd, new)  # kept open: the rename moves the staged file
        gate.close_gate()
        t, out = in_thread(lambda: os.rename(m.path / "tmp", m.path / "dst"))
        wait_for(lambda: gate.held("dst"), WAIT, "the rename's upload under 'dst'")
        tid = {}

        def reader():
            tid["id"] = threading.get_native_id()
            return read_file(m.path / "dst")

        rt, rout = in_thread(reader)
        # the open lands in the window: it either returns (the bug: it reads
        # the new file under the old size) or waits for the rename
        wait_for(lambda: not rt.is_alive() or ("id" in tid and in_syscall(tid["id"], OPENAT)),
                 WAIT, "the reader to open 'dst' during the rename")
        gate.open_gate()
        joined(t, out, "rename")
        got = joined(rt, rout, "read of 'dst'")
    finally:
        os.close(fd)
    assert got in (old, new), f"read {len(got)} bytes, neither version whole"
    assert read_file(m.path / "dst") == new
    m.unmount()
    assert s3_body(s3, bucket, "dst") == new


def test_sync_mode_close_waits(mount, s3, bucket, gate):
    """The default: close returns only once the object is in the bucket."""
    m = mount(bucket, endpoint=gate.endpoint)
    data = rand_bytes(120_000, "sync-close")
    gate.close_gate()
    t, out = in_thread(lambda: write_file(m.path / "s", data))
    wait_for(lambda: gate.held("s"), WAIT, "the upload of 's' to start")
    assert t.is_alive(), "close returned while its upload was held"
    gate.open_gate()
    joined(t, out, "close")
    assert s3_body(s3, bucket, "s") == data
    m.unmount()


# ---- parts sent while a big file is written ---------------------------------------------------

def part_puts(proxy, key):
    return [t for m, t, _ in list(proxy.log)
            if m == "PUT" and t.split("?")[0].endswith("/" + key) and "partNumber=" in t]


@pytest.mark.parametrize("writeback", ["sync", "async"])
def test_big_file_parts_go_before_close(mount, s3, bucket, proxy, writeback):
    m = mount(bucket, endpoint=proxy.endpoint, writeback=writeback, part_size="5M", chunk_size="1M",
              multipart_threshold="8M")
    MiB = 1 << 20
    data = rand_bytes(23 * MiB + 12345, "stream")
    fd = os.open(m.path / "big", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for off in range(0, 15 * MiB, MiB):
            assert os.pwrite(fd, data[off:off + MiB], off) == MiB
        # still open: the first parts are on their way already
        wait_for(lambda: len(part_puts(proxy, "big")) >= 1, WAIT, "a part sent before close")
        for off in range(15 * MiB, len(data), MiB):
            chunk = data[off:off + MiB]
            assert os.pwrite(fd, chunk, off) == len(chunk)
    finally:
        os.close(fd)
    if writeback == "async":
        m.unmount()
    assert s3_body(s3, bucket, "big") == data
    # 5 parts of 5 MiB, each sent once, no single PUT of the whole
    targets = part_puts(proxy, "big")
    assert len(targets) == 5, targets
    assert sorted(int(t.split("partNumber=")[1].split("&")[0]) for t in targets) == [1, 2, 3, 4, 5]
    if writeback == "sync":
        m.unmount()


def test_big_file_rewritten_start_is_uploaded_whole(mount, s3, bucket, proxy):
    """Overwriting a part already sent drops the parts: the object is still exact."""
    m = mount(bucket, endpoint=proxy.endpoint, part_size="5M", chunk_size="1M", multipart_threshold="8M")
    MiB = 1 << 20
    data = bytearray(rand_bytes(16 * MiB, "restream"))
    fd = os.open(m.path / "re", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        assert os.pwrite(fd, bytes(data), 0) == len(data)
        wait_for(lambda: len(part_puts(proxy, "re")) >= 1, WAIT, "a part sent before close")
        patch = rand_bytes(1000, "patch")
        data[100:1100] = patch
        assert os.pwrite(fd, patch, 100) == len(patch)
    finally:
        os.close(fd)
    assert s3_body(s3, bucket, "re") == bytes(data)
    aborts = [t for meth, t, _ in list(proxy.log) if meth == "DELETE" and "uploadId=" in t]
    assert aborts, "the parts sent before the change were not aborted"
    m.unmount()


def test_sigterm_waits_for_every_upload(mount, s3, bucket, gate):
    m = mount(bucket, endpoint=gate.endpoint, writeback="async")
    files = {f"t{i}": rand_bytes(30_000 + i, f"term-{i}") for i in range(4)}
    gate.close_gate()
    for k, v in files.items():
        write_file(m.path / k, v)
    wait_for(lambda: gate.inflight >= 1, WAIT, "an upload to start")
    m.proc.send_signal(signal.SIGTERM)
    gate.open_gate()
    m.wait_exit()
    for k, v in files.items():
        assert s3_body(s3, bucket, k) == v, f"{k!r} not uploaded when the daemon exited"
    assert staging_files(m) == []
