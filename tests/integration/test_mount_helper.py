"""mount(8), fstab and systemd: mount.s3cachefs and s3cachefs@.service on
real mounts against s3rver.

The build tree's helper is installed as /sbin/mount.s3cachefs (a symlink,
made only when no such file exists and removed at the end of the session),
so "mount -t s3cachefs" and "mount -T FSTAB" run it as they would an
installed one; it finds the build tree's daemon by itself.  The daemon runs
in the background (no -f), as mount(8) runs it.  Bytes read through the
mounts are compared with what boto3 put; "allow_other" is checked by
reading as another user (nobody), which a mount without it refuses.
Needs root, for mount(8).
"""

import errno
import os
import re
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest

from conftest import ACCESS_KEY, BUILD_DIR, DAEMON, REPO_ROOT, SANITIZER_RE, SECRET_KEY, need, wait_for
from mount import SANITIZER_OPTION_VARS, fusermount, is_mounted, pids_with_arg, rand_bytes, read_file

HELPER = BUILD_DIR / "mount-helpers" / "mount.s3cachefs"
UNIT = BUILD_DIR / "mount-helpers" / "s3cachefs@.service"
SBIN_HELPER = Path("/sbin/mount.s3cachefs")
PROG = "mount.s3cachefs: "
NOBODY = 65534
TIMEOUT = 30


@pytest.fixture(scope="session")
def helper(daemon_bin, fuse_available):
    """/sbin/mount.s3cachefs is the build tree's helper for the session."""
    need(os.geteuid() == 0, "root, to run mount(8)")
    need(shutil.which("mount") and shutil.which("umount"), "mount(8) and umount(8)")
    need(HELPER.is_file() and os.access(HELPER, os.X_OK), f"helper {HELPER} (build with meson/ninja)")
    made = False
    if os.path.lexists(SBIN_HELPER):
        need(os.path.realpath(SBIN_HELPER) == os.path.realpath(HELPER),
             f"{SBIN_HELPER} free for the test (it is another helper)")
    else:
        os.symlink(HELPER, SBIN_HELPER)
        made = True
    yield HELPER
    if made:
        os.unlink(SBIN_HELPER)


class Mounts:
    """Mount points in a folder every user may traverse (for the nobody
    reads), the environment mount(8) runs with, and the cleanup of every
    mount and daemon a test leaves."""

    def __init__(self, tmp_path, endpoint):
        self.tmp_path = tmp_path
        self.endpoint = endpoint
        self.root = Path(tempfile.mkdtemp(prefix="s3cachefs-helper-"))
        os.chmod(self.root, 0o755)
        self.points = []
        self.home = tmp_path / "home"
        self.home.mkdir()

    def env(self, extra=None):
        e = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "S3CACHEFS_"))}
        e.update(HOME=str(self.home), AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY)
        # the daemons detach (stderr /dev/null): sanitizer reports go to
        # files, which cleanup() reads
        for var in SANITIZER_OPTION_VARS:
            e[var] = ":".join(filter(None, [e.get(var), f"log_path={self.tmp_path}/sanitizer"]))
        e.update(extra or {})
        return e

    def point(self):
        p = self.root / f"mnt{len(self.points)}"
        p.mkdir()
        p.chmod(0o755)
        self.points.append(p)
        return p

    def opts(self, cache_dir):
        """The -o list every mount here needs, cache_dir escaped for -o."""
        cd = str(cache_dir).replace("\\", "\\\\").replace(",", "\\,")
        return f"endpoint={self.endpoint},cache_dir={cd},cache_min_free=0"

    def run(self, args, env=None, timeout=TIMEOUT):
        p = subprocess.run([str(a) for a in args], capture_output=True, stdin=subprocess.DEVNULL,
                           env=self.env(env), timeout=timeout)
        return p.returncode, p.stderr.decode("utf-8", errors="replace")

    def daemon(self, mp):
        """The one daemon serving mp."""
        pids = pids_with_arg(str(mp))
        assert len(pids) == 1, f"expected one daemon for {mp}, found {pids}"
        return pids[0]

    def wait_gone(self, mp):
        wait_for(lambda: not pids_with_arg(str(mp)) and not is_mounted(mp), TIMEOUT,
                 f"daemon of {mp} to exit and its mount to go")

    def cleanup(self):
        problems = []
        for mp in self.points:
            if is_mounted(mp) and fusermount(mp).returncode != 0:
                fusermount(mp, lazy=True)
            try:
                wait_for(lambda: not pids_with_arg(str(mp)), TIMEOUT, f"daemon of {mp} to exit")
            except TimeoutError:
                problems.append(f"daemon of {mp} ignored the unmount: killed")
                for pid in pids_with_arg(str(mp)):
                    os.kill(pid, signal.SIGKILL)
            if is_mounted(mp):
                fusermount(mp, lazy=True)
        if not any(is_mounted(mp) for mp in self.points):
            shutil.rmtree(self.root, ignore_errors=True)
        for report in sorted(self.tmp_path.glob("sanitizer.*")):
            bad = [ln for ln in report.read_text(errors="replace").splitlines() if SANITIZER_RE.search(ln)]
            if bad:
                problems.append(f"{report.name}: sanitizer report: {bad[:10]}")
        return problems


@pytest.fixture
def mounts(helper, s3rver, tmp_path):
    m = Mounts(tmp_path, s3rver.endpoint)
    yield m
    problems = m.cleanup()
    if problems:
        pytest.fail("teardown:\n" + "\n".join(problems), pytrace=False)


def one_line(rc, err):
    """A failure of the helper: non-zero status, one "mount.s3cachefs: "
    line on stderr."""
    assert rc != 0, f"expected a failure; stderr {err!r}"
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(PROG), f"expected one {PROG!r} line: {err!r}"
    return lines[0]


def mountinfo(mp):
    """(fstype, source, mount options, super options) of mp's mount."""
    want = os.path.realpath(mp)
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        for line in f:
            left, right = line.split(" - ", 1)
            fields = left.split()
            if fields[4] == want:
                fstype, source, sopts = right.split()[:3]
                return fstype, source, fields[5].split(","), sopts.split(",")
    raise AssertionError(f"{mp} is not in /proc/self/mountinfo")


def read_as_nobody(path):
    """(returncode, stdout, stderr) of cat as uid/gid 65534."""
    p = subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                        "cat", str(path)], capture_output=True, stdin=subprocess.DEVNULL, timeout=TIMEOUT)
    return p.returncode, p.stdout, p.stderr.decode(errors="replace")


def put_tree(s3, bucket):
    files = {"top.bin": rand_bytes(1024 * 1024 + 7, "helper-top"),
             "dir/sub.txt": b"through mount(8)\n"}
    for key, body in files.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)
    return files


def check_tree(mp, files):
    for key, body in files.items():
        assert read_file(mp / key) == body, f"{key} differs from what boto3 put"


# ---- mount -t s3cachefs --------------------------------------------------------

def test_mount_t_mounts_reads_and_umount_unmounts(mounts, s3, bucket, tmp_path):
    files = put_tree(s3, bucket)
    mp = mounts.point()
    cache = tmp_path / "cache,with comma"  # the escape reaches the daemon intact
    rc, err = mounts.run(["mount", "-v", "-t", "s3cachefs", bucket, mp,
                          "-o", "_netdev,nofail,comment=x-y," + mounts.opts(cache)])
    assert rc == 0, err
    # the daemon's first process exits only once mounted: no wait needed
    assert is_mounted(mp), f"not mounted when mount(8) returned: {err!r}"
    ran = [line for line in err.splitlines() if line.startswith(PROG + "running: ")]
    assert len(ran) == 1, err
    assert f" {bucket} {mp} -o " in ran[0] and "_netdev" not in ran[0] and "comment" not in ran[0], ran
    fstype, source, _, sopts = mountinfo(mp)
    assert fstype == "fuse.s3cachefs" and source.endswith(bucket), (fstype, source)
    assert "allow_other" not in sopts
    check_tree(mp, files)
    assert (cache / "meta.db").is_file(), f"cache_dir with an escaped comma not used: {list(tmp_path.iterdir())}"
    # without allow_other, other users are refused by the kernel
    rc2, out, _ = read_as_nobody(mp / "dir" / "sub.txt")
    assert rc2 != 0 and out == b""
    mounts.daemon(mp)
    rc, err = mounts.run(["umount", mp])
    assert rc == 0, err
    mounts.wait_gone(mp)


def test_mount_f_does_nothing(mounts, bucket, tmp_path):
    mp = mounts.point()
    rc, err = mounts.run(["mount", "-f", "-v", "-t", "s3cachefs", bucket, mp,
                          "-o", "_netdev,x-systemd.automount,uid=1000,gid=1000,umask=022,allow_other,"
                          + mounts.opts(tmp_path / "c")])
    assert rc == 0, err
    assert not is_mounted(mp) and not pids_with_arg(str(mp))
    assert not (tmp_path / "c").exists()
    would = [line for line in err.splitlines() if line.startswith(PROG + "would run: ")]
    assert len(would) == 1, err
    cmd = would[0][len(PROG + "would run: "):].split()
    assert cmd[:4] == [os.path.realpath(DAEMON), bucket, str(mp), "-o"], cmd
    assert cmd[4].split(",")[:5] == ["rw", "uid=1000", "gid=1000", "umask=022", "allow_other"], cmd


def test_fstab_line_with_systemd_options_and_allow_other(mounts, s3, bucket, tmp_path):
    files = put_tree(s3, bucket)
    mp = mounts.point()
    fstab = tmp_path / "fstab"
    fstab.write_text(
        "# s3cachefs test\n"
        f"{bucket} {mp} s3cachefs _netdev,allow_other,noauto,x-systemd.automount,"
        f"{mounts.opts(tmp_path / 'cache')} 0 0\n")
    rc, err = mounts.run(["mount", "-T", fstab, mp])
    assert rc == 0, err
    assert is_mounted(mp), err
    fstype, source, _, sopts = mountinfo(mp)
    assert fstype == "fuse.s3cachefs" and source.endswith(bucket), (fstype, source)
    assert "allow_other" in sopts, sopts
    check_tree(mp, files)
    # allow_other in effect: another user reads the same bytes
    rc, out, err = read_as_nobody(mp / "top.bin")
    assert rc == 0, err
    assert out == files["top.bin"]
    rc, err = mounts.run(["umount", mp])
    assert rc == 0, err
    mounts.wait_gone(mp)


def test_stale_mount_is_cleared_before_mounting(mounts, s3, bucket, tmp_path):
    files = put_tree(s3, bucket)
    mp = mounts.point()
    args = ["mount", "-t", "s3cachefs", bucket, mp, "-o", mounts.opts(tmp_path / "cache")]
    rc, err = mounts.run(args)
    assert rc == 0, err
    os.kill(mounts.daemon(mp), signal.SIGKILL)
    wait_for(lambda: not pids_with_arg(str(mp)), TIMEOUT, "killed daemon to go")
    with pytest.raises(OSError) as e:
        os.stat(mp)
    # the stale mount is there (the first access may see the abort itself)
    assert e.value.errno in (errno.ENOTCONN, errno.ECONNABORTED), e.value
    rc, err = mounts.run(args)
    assert rc == 0, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(PROG) and "stale mount" in lines[0], err
    os.stat(mp)
    check_tree(mp, files)
    rc, err = mounts.run(["umount", mp])
    assert rc == 0, err
    mounts.wait_gone(mp)


def test_daemon_not_found(mounts, bucket, tmp_path):
    mp = mounts.point()
    # through mount(8): S3CACHEFS_BIN names no program
    rc, err = mounts.run(["mount", "-t", "s3cachefs", bucket, mp, "-o", mounts.opts(tmp_path / "c")],
                         env={"S3CACHEFS_BIN": str(tmp_path / "no-such-daemon")})
    assert "S3CACHEFS_BIN" in one_line(rc, err)
    # a helper with no daemon beside it, on PATH or in the usual places
    fallbacks = ["/usr/bin/s3cachefs", "/usr/local/bin/s3cachefs"]
    configured = re.search(r"^CONFIGURED_BINDIR='([^']*)'$", HELPER.read_text(), re.M).group(1)
    fallbacks.append(f"{configured}/s3cachefs")
    need(not any(os.path.exists(f) for f in fallbacks), f"no s3cachefs installed in {fallbacks}")
    lone = tmp_path / "lone" / "mount.s3cachefs"
    lone.parent.mkdir()
    shutil.copy2(HELPER, lone)
    empty = tmp_path / "empty-path"
    empty.mkdir()
    rc, err = mounts.run([lone, bucket, mp, "-o", mounts.opts(tmp_path / "c")],
                         env={"PATH": f"{empty}:/usr/bin:/bin"})
    assert "cannot find the daemon" in one_line(rc, err)
    assert rc == 1
    assert not is_mounted(mp) and not (tmp_path / "c").exists()


@pytest.mark.parametrize("args", [
    [],
    ["only-bucket"],
    ["b", "/mnt", "extra"],
    ["b", "/mnt", "-x"],
    ["b", "/mnt", "-o"],
    ["b", "/mnt", "-t", "nfs"],
], ids=["none", "no-dir", "extra", "bad-flag", "o-no-value", "other-type"])
def test_helper_usage_errors(helper, args):
    p = subprocess.run([str(helper), *args], capture_output=True, stdin=subprocess.DEVNULL, timeout=TIMEOUT)
    line = one_line(p.returncode, p.stderr.decode(errors="replace"))
    assert p.returncode == 2, line


def test_helper_is_posix_sh_and_shellcheck_clean():
    src = REPO_ROOT / "mount-helpers" / "mount.s3cachefs.in"
    assert src.read_text().startswith("#!/bin/sh\n")
    for sh in ["dash", "sh"]:
        if shutil.which(sh):
            p = subprocess.run([sh, "-n", str(src)], capture_output=True, timeout=30)
            assert p.returncode == 0 and not p.stderr, p.stderr
    need(shutil.which("shellcheck"), "shellcheck (apt-get install shellcheck)")
    p = subprocess.run(["shellcheck", "-s", "sh", str(src)], capture_output=True, timeout=60)
    assert p.returncode == 0, p.stdout.decode(errors="replace")


# ---- s3cachefs@.service ---------------------------------------------------------

def unit_service_section():
    """{key: [values]} of the unit's [Service] and [Unit] sections."""
    keys = {}
    section = None
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
            continue
        k, _, v = line.partition("=")
        keys.setdefault(f"{section}{k}", []).append(v)
    return keys


def test_unit_is_valid(tmp_path):
    need(UNIT.is_file() and HELPER.is_file(), f"{UNIT} and {HELPER} (build with meson/ninja)")
    keys = unit_service_section()
    assert keys["[Service]Type"] == ["forking"]
    assert keys["[Service]EnvironmentFile"] == ["/etc/s3cachefs/%i.env"]
    assert keys["[Service]KillSignal"] == ["SIGTERM"]
    assert keys["[Service]Restart"] == ["on-failure"]
    assert "network-online.target" in keys["[Unit]After"][0].split()
    assert "network-online.target" in keys["[Unit]Wants"][0].split()
    exec_start = keys["[Service]ExecStart"][0].split()
    assert exec_start[0].endswith("/mount.s3cachefs") and os.path.isabs(exec_start[0])
    assert exec_start[1:] == ["${BUCKET}", "${MOUNTPOINT}", "-o", "${OPTIONS}"]
    analyze = shutil.which("systemd-analyze")
    if analyze:
        # the unit as installed, but with the helper where it exists here
        d = tmp_path / "units"
        d.mkdir()
        (d / UNIT.name).write_text(UNIT.read_text().replace(exec_start[0], str(HELPER)))
        p = subprocess.run([analyze, "verify", "--man=no", str(d / "s3cachefs@check.service")],
                           capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
        out = (p.stdout + p.stderr).decode(errors="replace")
        assert p.returncode == 0 and not out.strip(), f"systemd-analyze verify: {out}"


def expand(cmdline, env):
    """A unit's command line, split and with ${NAME} words replaced as
    systemd does (one argument each, empty when unset); a leading '-'
    (ignore failure) removed."""
    words = cmdline.lstrip("-").split()
    return [env.get(w[2:-1], "") if re.fullmatch(r"\$\{\w+\}", w) else w for w in words]


def test_unit_commands_mount_stop_and_clear_a_stale_mount(mounts, s3, bucket, tmp_path):
    """Runs the unit's ExecStart and ExecStopPost as systemd would, with the
    variables of an instance's environment file."""
    files = put_tree(s3, bucket)
    mp = mounts.point()
    keys = unit_service_section()
    env = {"BUCKET": bucket, "MOUNTPOINT": str(mp), "OPTIONS": mounts.opts(tmp_path / "cache")}
    start = expand(keys["[Service]ExecStart"][0], env)
    start[0] = str(HELPER)  # the build tree's, not the install path
    stop_post = expand(keys["[Service]ExecStopPost"][0], env)

    # Type=forking: started means mounted
    rc, err = mounts.run(start)
    assert rc == 0, err
    assert is_mounted(mp), err
    check_tree(mp, files)
    # stop: KillSignal=SIGTERM unmounts, the daemon exits
    os.kill(mounts.daemon(mp), signal.SIGTERM)
    mounts.wait_gone(mp)

    # a crash leaves a stale mount; ExecStopPost clears it
    rc, err = mounts.run(start)
    assert rc == 0, err
    os.kill(mounts.daemon(mp), signal.SIGKILL)
    wait_for(lambda: not pids_with_arg(str(mp)), TIMEOUT, "killed daemon to go")
    assert is_mounted(mp)
    rc, err = mounts.run(stop_post)
    assert rc == 0, err
    assert not is_mounted(mp)
    os.stat(mp)
    # and with an empty OPTIONS the helper passes no -o at all
    rc, err = mounts.run([*start[:-1], "", "-fv"])
    assert rc == 0, err
    assert err.rstrip().endswith(f" {bucket} {mp}"), err
