"""tools/bench/run.sh, the benchmark for users, on a tiny dataset.

A whole run (REPS=1, no delay, s3cachefs only) must print a table with a
figure and a ratio for every workload and the daemon's peak RSS, leave the
copied files in the bucket (read from s3rver's own store, not through our
code), and leave no mount and no process behind, also when interrupted
(SIGINT, as Ctrl-C).  A bad knob fails at once with one line.  The delay
relay passes bytes through unchanged.  No timing is asserted: speed is what
the tool reports, not what this test checks.
"""

import os
import re
import shutil
import signal
import subprocess
import sys
from urllib.parse import urlparse

import pytest

from conftest import REPO_ROOT, boto3_client, free_port, need, wait_for
from mount import is_mounted, pids_with_arg, rand_bytes, read_file

RUN = REPO_ROOT / "tools" / "bench" / "run.sh"
RELAY = REPO_ROOT / "tools" / "bench" / "delayproxy.py"
TINY = {
    "QUICK": "1", "BIG_MB": "4", "MID_MB": "2", "PARQ_MB": "1", "SMALL_COUNT": "20",
    "SMALL_DIRS": "4", "WRITE_MB": "2", "WRITE_FILES": "8", "FIO_4K_IOS": "40",
    "FIO_128K_IOS": "10", "REPS": "1", "DELAY_MS": "0", "SYSTEMS": "s3cachefs",
}
ROWS = [
    "sequential read, cold", "sequential read, warm",
    "random 4 KiB QD1, cold", "random 4 KiB QD1, warm",
    "random 128 KiB QD1, cold", "random 128 KiB QD1, warm",
    "small files, 1 reader, cold", "small files, 8 readers, cold",
    "small files, 1 reader, warm", "small files, 8 readers, warm",
    "ls -lR, fresh mount", "ls -lR, again in the same mount", "ls -lR, after a remount",
    "parquet-like reads, cold", "parquet-like reads, warm",
    "big file written, close", "big file written, durable",
    "tree written, close", "tree written, durable",
]
NUM = r"[0-9]+(?:\.[0-9]+)?(?:e[+-]?[0-9]+)?"


@pytest.fixture
def bench_env(daemon_bin, fuse_available, s3rver_ready, tmp_path):
    need(os.geteuid() == 0, "root (drop_caches)")
    need(shutil.which("fio"), "fio (apt-get install fio)")
    # The daemon refuses S3CACHEFS_* variables it does not know (the
    # test suite's own, such as S3CACHEFS_BUILD_DIR).
    env = {k: v for k, v in os.environ.items() if not k.startswith("S3CACHEFS_")}
    env.update(TINY)
    env.update(OURS_BIN=str(daemon_bin), WORK_DIR=str(tmp_path / "work"),
               RESULTS_DIR=str(tmp_path / "results"), LABEL="t")
    return env


def pids_mentioning(text):
    """Live processes with TEXT anywhere in their command line."""
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == os.getpid():
            continue
        try:
            cmd = open(f"/proc/{d}/cmdline", "rb").read()
            state = open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and os.fsencode(text) in cmd:
            found.append(int(d))
    return found


def left_behind(work):
    """Mounts and live processes the run left under WORK_DIR."""
    out = []
    if is_mounted(work / "mnt"):
        out.append(f"mount {work / 'mnt'}")
    out += [f"pid {p}: {open(f'/proc/{p}/cmdline', 'rb').read()!r}" for p in pids_mentioning(str(work))]
    return out


def test_quick_run_prints_every_row_with_a_ratio(bench_env, tmp_path):
    work = tmp_path / "work"
    p = subprocess.run([str(RUN)], env=bench_env, capture_output=True, text=True, timeout=240,
                       stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stderr[-3000:]
    assert left_behind(work) == []

    reports = list((tmp_path / "results").glob("*-t.md"))
    assert len(reports) == 1
    table = reports[0].read_text()
    assert table.strip() in p.stdout
    header = [ln for ln in table.splitlines() if ln.startswith("| workload")]
    assert header == ["| workload | unit | limit | s3cachefs |"]
    for row in ROWS:
        m = re.search(rf"^\| {re.escape(row)} \| \S+ \| ({NUM}) [^|]+ \| ({NUM}) \(({NUM})\) \|$",
                      table, re.M)
        assert m, f"no figure and ratio for '{row}' in:\n{table}"
        assert float(m.group(1)) > 0 and float(m.group(2)) > 0 and float(m.group(3)) > 0
    m = re.search(rf"^\| peak RSS of the daemon \| MiB \| – \| ({NUM}) \|$", table, re.M)
    assert m and 1 < float(m.group(1)) < 256, table

    # The copies reached the bucket: s3rver's own files, byte for byte.
    store = work / "s3rver" / "bench" / "w-s3cachefs-1"
    data = work / "data" / "wsrc"
    assert read_file(store / "big.bin._S3rver_object") == read_file(data / "big.bin")
    copied = sorted(p.relative_to(store / "tree") for p in (store / "tree").rglob("*._S3rver_object")
                    if p.name != "._S3rver_object")  # not the "dir/" markers
    assert len(copied) == int(TINY["WRITE_FILES"])
    for rel in copied:
        src = data / "tree" / str(rel).removesuffix("._S3rver_object")
        assert read_file(store / "tree" / rel) == read_file(src)


@pytest.mark.parametrize("knob,value,says", [
    ("SYSTEMS", "s3cachefs nosuch", "unknown system 'nosuch'"),
    ("WORKLOADS", "seq bogus", "unknown workload 'bogus'"),
    ("REPS", "two", "REPS must be a whole number"),
])
def test_bad_knob_is_one_line_and_starts_nothing(bench_env, tmp_path, knob, value, says):
    bench_env[knob] = value
    p = subprocess.run([str(RUN)], env=bench_env, capture_output=True, text=True, timeout=60,
                       stdin=subprocess.DEVNULL)
    assert p.returncode != 0
    assert p.stderr.count("\n") == 1 and says in p.stderr, p.stderr
    assert not (tmp_path / "work").exists()


def test_ctrl_c_unmounts_and_stops_everything(bench_env, tmp_path):
    work = tmp_path / "work"
    bench_env.update(WORKLOADS="seq", DELAY_MS="5")
    p = subprocess.Popen([str(RUN)], env=bench_env, stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: is_mounted(work / "mnt") or p.poll() is not None, 120,
                 "the benchmark's first mount")
        assert p.poll() is None, p.stdout.read()[-2000:]
        # The server and the daemon run now, and the relay, a child of run.sh.
        assert len(pids_mentioning(str(work))) >= 2
        relays = [r for r in pids_with_arg(str(RELAY)) if parent(r) == p.pid]
        assert len(relays) == 1
        p.send_signal(signal.SIGINT)
        out, _ = p.communicate(timeout=120)
    finally:
        if p.poll() is None:  # a failed assertion: still stop what it started
            p.send_signal(signal.SIGINT)
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    assert p.returncode == 130, out[-2000:]
    assert left_behind(work) == []
    assert [r for r in relays if r in pids_with_arg(str(RELAY))] == []


def parent(pid):
    try:
        return int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
    except OSError:
        return None


def test_delay_relay_passes_bytes_unchanged(s3rver, bucket):
    port = free_port()
    target = urlparse(s3rver.endpoint).port
    relay = subprocess.Popen([sys.executable, str(RELAY), str(port), str(target), "3"],
                             stdin=subprocess.DEVNULL)
    try:
        def answers():
            import socket
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                return True
            except OSError:
                return False

        wait_for(answers, 10, "the delay relay")
        via = boto3_client(f"http://127.0.0.1:{port}")
        direct = boto3_client(s3rver.endpoint)
        body = rand_bytes(3 * 1024 * 1024 + 17, "relay")
        before = s3rver.count("PUT", f"/{bucket}/k")
        via.put_object(Bucket=bucket, Key="k", Body=body)
        assert s3rver.count("PUT", f"/{bucket}/k") == before + 1
        assert direct.get_object(Bucket=bucket, Key="k")["Body"].read() == body
        assert via.get_object(Bucket=bucket, Key="k")["Body"].read() == body
        got = via.get_object(Bucket=bucket, Key="k", Range="bytes=1000000-2000000")["Body"].read()
        assert got == body[1000000:2000001]
    finally:
        relay.send_signal(signal.SIGINT)
        relay.wait(timeout=10)
