"""Starting and stopping the daemon: SIGTERM, daemon mode, bad input, a
cache folder already in use."""

import errno
import os
import signal

import pytest

from faultproxy import closed_port
from mount import PROG, is_mounted, pids_with_arg, rand_bytes, read_file


def one_line(rc, err, rc_want=None):
    """A failure to start: non-zero exit (rc_want if given) and exactly one
    stderr line "s3cachefs: ..."."""
    if rc_want is None:
        assert rc not in (0, None), f"expected failure, got rc {rc}; stderr {err!r}"
    else:
        assert rc == rc_want, f"expected rc {rc_want}, got {rc}; stderr {err!r}"
    lines = err.splitlines()
    assert len(lines) == 1, f"expected one stderr line, got {len(lines)}: {err!r}"
    assert lines[0].startswith(PROG) and lines[0][len(PROG):].strip(), f"bad line {lines[0]!r}"
    return lines[0]


def test_sigterm_unmounts_cleanly(mount, s3, bucket):
    s3.put_object(Bucket=bucket, Key="f", Body=b"data")
    m = mount(bucket)
    assert read_file(m.path / "f") == b"data"
    m.proc.send_signal(signal.SIGTERM)
    stats = m.wait_exit()  # exit 0, mount gone, clean log
    assert stats is not None and stats["vfs.reads"] >= 1, stats


def test_daemon_mode_mounts_and_unmounts(mount, s3, bucket):
    data = rand_bytes(2 * 1024 * 1024 + 3, "daemon")
    s3.put_object(Bucket=bucket, Key="d/f", Body=data)
    m = mount(bucket, foreground=False)
    assert m.proc.returncode == 0
    assert m.daemon_pid != m.proc.pid
    assert read_file(m.path / "d" / "f") == data
    m.unmount()  # fusermount3 -u; waits for the daemon process to be gone
    assert not pids_with_arg(str(m.path))


BAD_OPTIONS = [
    ("unknown-option", "no_such_option=1", 2),
    ("bad-size", "cache_size=12Q", 2),
    ("cache-below-minimum", "cache_size=1M", 2),
    ("chunk-too-big", "chunk_size=128M", 2),
    ("chunk-too-small", "chunk_size=4K", 2),
    ("bad-compress", "compress=lz4", 2),
    ("bad-duration", "meta_ttl=soon", 2),
]


@pytest.mark.parametrize("opt,rc", [(o, r) for _, o, r in BAD_OPTIONS], ids=[i for i, _, _ in BAD_OPTIONS])
def test_bad_option(mount, bucket, s3rver, tmp_path, opt, rc):
    mp = mount.new_dir("mnt")
    got_rc, err = mount.run([bucket, mp, "-f", "-o", f"endpoint={s3rver.endpoint},cache_dir={tmp_path / 'c'},{opt}"])
    one_line(got_rc, err, rc)
    assert not is_mounted(mp)


def test_bad_arguments(mount, bucket, s3rver, tmp_path):
    ep = f"endpoint={s3rver.endpoint},cache_dir={tmp_path / 'c'},cache_min_free=0"
    mp = mount.new_dir("mnt")
    # no mountpoint, no arguments at all
    one_line(*mount.run([bucket, "-f", "-o", ep]), 2)
    one_line(*mount.run([]), 2)
    # a mountpoint that is a file, or missing
    f = tmp_path / "a-file"
    f.write_bytes(b"x")
    one_line(*mount.run([bucket, f, "-f", "-o", ep]))
    one_line(*mount.run([bucket, tmp_path / "missing", "-f", "-o", ep]))
    assert not is_mounted(f) and not is_mounted(mp)


@pytest.mark.parametrize("foreground", [True, False], ids=["fg", "daemon"])
def test_missing_bucket(mount, s3rver, tmp_path, foreground):
    mp = mount.new_dir("mnt")
    args = ["no-such-bucket-here", mp, "-o", f"endpoint={s3rver.endpoint},cache_dir={tmp_path / 'c'},cache_min_free=0"]
    if foreground:
        args.insert(2, "-f")
    one_line(*mount.run(args), 1)
    assert not is_mounted(mp)
    assert not pids_with_arg(str(mp))


def test_unreachable_endpoint_at_start(mount, bucket, tmp_path):
    mp = mount.new_dir("mnt")
    ep = f"endpoint=http://127.0.0.1:{closed_port()},timeout=3s,cache_dir={tmp_path / 'c'},cache_min_free=0"
    one_line(*mount.run([bucket, mp, "-f", "-o", ep], timeout=30), 1)
    assert not is_mounted(mp)


def test_second_mount_on_same_cache_dir_is_refused(mount, s3, bucket, s3rver):
    s3.put_object(Bucket=bucket, Key="f", Body=b"first")
    m = mount(bucket)
    mp2 = mount.new_dir("mnt")
    rc, err = mount.run([bucket, mp2, "-f", "-o",
                         f"endpoint={s3rver.endpoint},cache_dir={m.cache_dir},cache_min_free=0"])
    line = one_line(rc, err, 1)
    assert "in use" in line, line
    assert not is_mounted(mp2)
    assert read_file(m.path / "f") == b"first"
    m.unmount()
    m.remount()  # the lock went with the first daemon
    assert read_file(m.path / "f") == b"first"
    m.unmount()



def test_dead_mount_is_named_even_with_cached_attributes(mount, s3, bucket, s3rver, tmp_path):
    # After kill -9 the kernel still answers stat() of the root from the
    # attributes it cached; the daemon must still see the mount is dead.
    s3.put_object(Bucket=bucket, Key="f", Body=b"x")
    m = mount(bucket)
    assert os.stat(m.path).st_ino == 1
    m.proc.kill()
    m.proc.wait(10)
    assert is_mounted(m.path)
    os.stat(m.path)  # answered from the kernel's cache: no ENOTCONN here
    with pytest.raises(OSError) as e:
        os.statvfs(m.path)
    assert e.value.errno == errno.ENOTCONN
    rc, err = mount.run([bucket, m.path, "-f", "-o",
                         f"endpoint={s3rver.endpoint},cache_dir={tmp_path / 'c2'},cache_min_free=0"])
    line = one_line(rc, err, 1)
    assert "dead FUSE mount" in line and "fusermount3 -u" in line, line
