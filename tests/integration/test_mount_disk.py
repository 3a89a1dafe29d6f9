"""Disk trouble under a running mount (issue 7, item 3):

- the cache's disk (a small tmpfs) fills up;
- the cache folder turns read-only (a read-only bind mount over it: new
  files are refused, files already open stay writable);
- the cache's file system fails (ext4 with errors=remount-ro, made to fail
  through its trigger_fs_error: every write is refused, open files too).

Reads still succeed from S3 byte-exact, writes fail with ENOSPC or EIO and
a log line naming the cause, the mount keeps answering (ls, stat, df), and
nothing is corrupted: meta.db passes PRAGMA integrity_check,
`s3cachefs-ctl verify` drops no chunk after a remount, a refused write
leaves the bucket as it was, earlier writes stay intact, and once the disk
is fine again writes and caching work.

Results are checked with boto3.  Needs root (tmpfs, bind and loop mounts).
"""

import errno
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import BUILD_DIR, need, wait_for
from mount import MiB, chunk_files, error_lines, integrity_check, rand_bytes, read_file, s3_body, sha, warn_lines
from test_mount_write import assert_object, write_file

CTL = BUILD_DIR / "tools" / "s3cachefs-ctl"


@pytest.fixture(autouse=True)
def umask022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def ctl_verify(mount, cache_dir):
    need(CTL.is_file() and os.access(CTL, os.X_OK), f"tool {CTL} (build with meson/ninja)")
    p = subprocess.run([str(CTL), "-C", str(cache_dir), "verify"], capture_output=True, stdin=subprocess.DEVNULL,
                       env=mount.env({"S3CACHEFS_ENDPOINT": mount.endpoint}), timeout=120)
    out = p.stdout.decode(errors="replace")
    assert p.returncode == 0 and out.startswith("verify: checked ") and out.strip().endswith(" dropped 0 bad"), (
        p.returncode, out, p.stderr.decode(errors="replace"))
    return out


def write_errno(path, data, trunc=True):
    """The errno of writing data to path (open, write or close), 0 when it
    worked; trunc=False: in place, from offset 0."""
    err = 0
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if trunc else 0), 0o644)
    except OSError as e:
        print(f"{path.name}: open: {e!r}")
        return e.errno
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    except OSError as e:
        print(f"{path.name}: write after {len(data) - len(view)}: {e!r}")
        err = e.errno
    try:
        os.close(fd)
    except OSError as e:
        print(f"{path.name}: close: {e!r}")
        err = err or e.errno
    return err


def lines_about(text, *words):
    """The warning and error lines of a daemon log that mention one of words."""
    return [line for line in warn_lines(text) + error_lines(text) if any(w in line for w in words)]


def still_answers(m, keys):
    """ls, stat and df answer on the mount."""
    names = set(os.listdir(m.path))
    assert set(keys) <= names, names
    for k in keys:
        os.stat(m.path / k)
    os.statvfs(m.path)


def check_after_remount(m, files):
    """Unmounted: meta.db is sound; remounted: verify drops nothing and
    every file reads as the bucket holds it."""
    assert integrity_check(m.cache_dir / "meta.db") == ["ok"]
    m.start()
    for key, want in files.items():
        assert sha(read_file(m.path / key)) == sha(want), f"{key} after the remount"
    ctl_verify(m.factory, m.cache_dir)


def test_cache_disk_fills_up(mount, s3, bucket, make_tmpfs):
    fs = make_tmpfs("16M")
    big = rand_bytes(6 * MiB, "disk-big")
    s3.put_object(Bucket=bucket, Key="big", Body=big)
    m = mount(bucket, cache_dir=str(fs / "cache"), cache_size="64M", chunk_size="256K", expect_errors=True)
    earlier, old = rand_bytes(300_000, "disk-earlier"), rand_bytes(200_000, "disk-old")
    write_file(m.path / "earlier", earlier)
    write_file(m.path / "over", old)
    assert_object(s3, bucket, "earlier", earlier)

    # the disk fills: a ballast takes all but 64 KiB
    ballast = fs / "ballast"
    with open(ballast, "wb") as f:
        try:
            while True:
                f.write(b"\0" * (256 * 1024))
                f.flush()
        except OSError as e:
            assert e.errno == errno.ENOSPC, e
    os.truncate(ballast, os.stat(ballast).st_size - 64 * 1024)

    # reads still succeed, from S3
    for _ in range(2):
        assert sha(read_file(m.path / "big")) == sha(big)
    with open(m.path / "big", "rb") as f:
        f.seek(5 * MiB + 17)
        assert f.read(300_000) == big[5 * MiB + 17:5 * MiB + 17 + 300_000]

    # writes that cannot be staged fail
    new, newer = rand_bytes(2 * MiB, "disk-new"), rand_bytes(2 * MiB, "disk-newer")
    e = write_errno(m.path / "new", new)
    assert e in (errno.ENOSPC, errno.EIO), f"a 2 MiB write on a full disk: {errno.errorcode.get(e, e)}"
    e = write_errno(m.path / "over", newer, trunc=False)
    assert e in (errno.ENOSPC, errno.EIO), f"an in-place write on a full disk: {errno.errorcode.get(e, e)}"
    # and change nothing in the bucket: open(O_CREAT) made "new" at most
    assert s3_body(s3, bucket, "new") in (None, b""), "a refused write reached the bucket"
    assert_object(s3, bucket, "over", old, "an in-place write refused for want of space")
    assert_object(s3, bucket, "earlier", earlier)
    # with O_TRUNC the file is empty (the truncation succeeded), never part of the refused bytes
    e = write_errno(m.path / "over", newer)
    assert e in (errno.ENOSPC, errno.EIO), f"an overwrite on a full disk: {errno.errorcode.get(e, e)}"
    assert s3_body(s3, bucket, "over") in (old, b""), "a refused overwrite reached the bucket"
    still_answers(m, ["big", "earlier", "over"])
    assert read_file(m.path / "earlier") == earlier

    text = m.stderr_text()
    about = lines_about(text, "no room for", "No space left")
    assert [line for line in about if "written data" in line or "No space left" in line], (
        f"no log line names the full disk for the writes:\n{text[-3000:]}")
    assert len(about) <= 4, f"the full disk was logged {len(about)} times: {about}"

    # room again: writes and caching work
    os.unlink(ballast)
    for key in ("new", "over"):
        try:
            os.unlink(m.path / key)
        except FileNotFoundError:
            pass
    write_file(m.path / "new", new)
    assert_object(s3, bucket, "new", new)
    write_file(m.path / "over", newer)
    assert_object(s3, bucket, "over", newer)
    m.unmount()
    check_after_remount(m, {"big": big, "earlier": earlier, "new": new, "over": newer})
    wait_for(lambda: len(chunk_files(m.cache_dir)) >= 24, 10, "big's 24 chunks to be cached")
    m.unmount()


@pytest.fixture
def ro_bind():
    """ro_bind(D) makes folder D read-only (a read-only bind mount over
    itself: chmod does not stop root); undo() makes it writable again."""
    need(os.geteuid() == 0, "root, for bind mounts")
    made = []

    class Bind:
        def __init__(self, d):
            self.d = str(d)
            self.up = False

        def on(self):
            r = subprocess.run(["mount", "--bind", self.d, self.d], capture_output=True, timeout=30)
            need(r.returncode == 0, f"mount --bind: {r.stderr.decode(errors='replace').strip()}")
            self.up = True
            r = subprocess.run(["mount", "-o", "remount,bind,ro", self.d], capture_output=True, timeout=30)
            assert r.returncode == 0, r.stderr.decode(errors="replace")
            return self

        def undo(self):
            if not self.up:
                return
            r = subprocess.run(["umount", self.d], capture_output=True, timeout=30)
            if r.returncode != 0:  # a chunk file still open through it
                subprocess.run(["umount", "-l", self.d], capture_output=True, timeout=30, check=True)
            self.up = False

    def make(d):
        b = Bind(d).on()
        made.append(b)
        return b

    yield make
    for b in made:
        b.undo()


def test_cache_dir_turns_read_only(mount, s3, bucket, ro_bind):
    files = {f"f{i}": rand_bytes(1 * MiB + i, f"ro-{i}") for i in range(4)}
    for key, body in files.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)
    m = mount(bucket, chunk_size="256K", expect_errors=True)
    earlier = rand_bytes(300_000, "ro-earlier")
    write_file(m.path / "earlier", earlier)
    assert read_file(m.path / "f0") == files["f0"]  # cached before
    wait_for(lambda: len(chunk_files(m.cache_dir)) >= 4, 10, "f0's chunks to be cached")

    bind = ro_bind(m.cache_dir)
    try:
        # reads still succeed: cached, and uncached from S3
        for key in ("f0", "f1", "f1", "f2"):
            assert sha(read_file(m.path / key)) == sha(files[key]), key
        # writes fail with ENOSPC or EIO and leave the bucket as it was
        for key in ("new", "f2", "earlier"):
            e = write_errno(m.path / key, rand_bytes(100_000, f"ro-w-{key}"))
            assert e in (errno.ENOSPC, errno.EIO), f"{key}: a write into a read-only cache: {errno.errorcode.get(e, e)}"
        assert s3_body(s3, bucket, "new") in (None, b""), "a refused write reached the bucket"
        assert_object(s3, bucket, "f2", files["f2"], "an overwrite refused by a read-only cache")
        assert_object(s3, bucket, "earlier", earlier)
        still_answers(m, ["f0", "f1", "f2", "earlier"])
        assert read_file(m.path / "earlier") == earlier
        text = m.stderr_text()
        about = lines_about(text, "Read-only file system", "EROFS", "read-only")
        assert about, f"no log line names the read-only cache:\n{text[-3000:]}"
        assert len(about) <= 6, f"the read-only cache was logged {len(about)} times: {about}"
    finally:
        bind.undo()

    # writable again: writes and caching work
    later = rand_bytes(400_000, "ro-later")
    write_file(m.path / "later", later)
    assert_object(s3, bucket, "later", later)
    write_file(m.path / "new", later)
    assert_object(s3, bucket, "new", later)
    before = len(chunk_files(m.cache_dir))
    assert read_file(m.path / "f3") == files["f3"]
    wait_for(lambda: len(chunk_files(m.cache_dir)) >= before + 4, 10, "f3's chunks to be cached")
    m.unmount()
    files.update(later=later, earlier=earlier, new=later)
    check_after_remount(m, files)
    m.unmount()


@pytest.fixture
def ext4_fs(tmp_path):
    """An ext4 loop filesystem mounted with errors=remount-ro (root only);
    .fail() has the kernel turn it read-only as on an I/O error (the
    journal aborted: even files already open refuse writes); .repair()
    unmounts it, runs e2fsck and mounts it again."""
    need(os.geteuid() == 0, "root, to mount a loop filesystem")
    need(shutil.which("mkfs.ext4") and shutil.which("e2fsck"), "mkfs.ext4 and e2fsck (e2fsprogs)")

    class Ext4:
        def __init__(self):
            self.image = tmp_path / "ext4.img"
            self.path = tmp_path / "ext4"
            self.path.mkdir()
            with open(self.image, "wb") as f:
                f.truncate(64 * MiB)
            r = subprocess.run(["mkfs.ext4", "-q", "-F", str(self.image)], capture_output=True, timeout=60)
            assert r.returncode == 0, r.stderr.decode(errors="replace")
            self.mounted = False

        def mount(self):
            r = subprocess.run(["mount", "-o", "loop,errors=remount-ro", str(self.image), str(self.path)],
                               capture_output=True, timeout=30)
            need(r.returncode == 0, f"mount -o loop: {r.stderr.decode(errors='replace').strip()}")
            self.mounted = True
            dev = subprocess.run(["findmnt", "-n", "-o", "SOURCE", str(self.path)], capture_output=True,
                                 timeout=30, check=True).stdout.decode().strip()
            self.sysfs = Path("/sys/fs/ext4") / os.path.basename(dev) / "trigger_fs_error"
            need(self.sysfs.exists(), f"{self.sysfs} (ext4's error trigger)")
            return self

        def fail(self):
            self.sysfs.write_text("s3cachefs test: the cache disk fails\n")
            wait_for(lambda: "ro" in self.options() or "emergency_ro" in self.options(), 10,
                     f"{self.path} to turn read-only")

        def options(self):
            return subprocess.run(["findmnt", "-n", "-o", "OPTIONS", str(self.path)], capture_output=True,
                                  timeout=30).stdout.decode().strip().split(",")

        def umount(self):
            if self.mounted:
                r = subprocess.run(["umount", str(self.path)], capture_output=True, timeout=30)
                if r.returncode != 0:
                    subprocess.run(["umount", "-l", str(self.path)], capture_output=True, timeout=30)
                self.mounted = False

        def repair(self):
            self.umount()
            r = subprocess.run(["e2fsck", "-f", "-y", str(self.image)], capture_output=True, timeout=60)
            assert r.returncode in (0, 1), f"e2fsck: rc {r.returncode}: {r.stdout.decode(errors='replace')}"
            return self.mount()

    fs = Ext4().mount()
    yield fs
    fs.umount()


def test_cache_fs_turns_read_only_on_error(ext4_fs, mount, s3, bucket):
    files = {f"f{i}": rand_bytes(1 * MiB + i, f"ext4-{i}") for i in range(4)}
    for key, body in files.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)
    cache = ext4_fs.path / "cache"
    m = mount(bucket, cache_dir=str(cache), chunk_size="256K", expect_errors=True)
    earlier = rand_bytes(300_000, "ext4-earlier")
    write_file(m.path / "earlier", earlier)
    assert read_file(m.path / "f0") == files["f0"]
    wait_for(lambda: len(chunk_files(cache)) >= 4, 10, "f0's chunks to be cached")

    ext4_fs.fail()
    # reads still succeed: cached, and uncached from S3
    for key in ("f0", "f1", "f1", "f2"):
        assert sha(read_file(m.path / key)) == sha(files[key]), key
    # writes fail with ENOSPC or EIO and leave the bucket as it was
    for key, trunc in (("new", True), ("f2", False), ("earlier", True)):
        e = write_errno(m.path / key, rand_bytes(100_000, f"ext4-w-{key}"), trunc=trunc)
        assert e in (errno.ENOSPC, errno.EIO), f"{key}: a write into a failed cache disk: {errno.errorcode.get(e, e)}"
    assert s3_body(s3, bucket, "new") in (None, b""), "a refused write reached the bucket"
    assert_object(s3, bucket, "f2", files["f2"], "an overwrite refused by a failed cache disk")
    assert s3_body(s3, bucket, "earlier") in (earlier, b""), "a refused overwrite reached the bucket"
    still_answers(m, ["f0", "f1", "f2", "earlier"])
    text = m.stderr_text()
    about = lines_about(text, "Read-only file system", "read-only")
    assert about, f"no log line names the read-only cache disk:\n{text[-3000:]}"
    assert len(about) <= 10, f"the read-only cache disk was logged {len(about)} times: {about}"

    # the unmount still works; the disk is repaired; nothing is corrupted
    m.unmount()
    ext4_fs.repair()
    assert integrity_check(cache / "meta.db") == ["ok"]
    m.start()
    for key in ("f0", "f1", "f2"):
        assert sha(read_file(m.path / key)) == sha(files[key]), f"{key} after the repair"
    ctl_verify(m.factory, cache)
    later = rand_bytes(400_000, "ext4-later")
    write_file(m.path / "later", later)
    assert_object(s3, bucket, "later", later)
    before = len(chunk_files(cache))
    assert read_file(m.path / "f3") == files["f3"]
    wait_for(lambda: len(chunk_files(cache)) >= before + 4, 10, "f3's chunks to be cached")
    m.unmount()
