#!/usr/bin/env python3
"""Helpers of tools/bench/run.sh: the dataset, the workloads that are not fio,
the raw-S3 limits and the report.  Each subcommand prints one measurement
(seconds, MB/s, IOPS or files/s) on stdout; run.sh owns every process and
mount, this file starts none except cp/sync in `write`.

    s3bench.py populate LOCAL_DIR          make the dataset and upload it
    s3bench.py small DIR N                 read every small file, N readers: files/s
    s3bench.py ls DIR                      ls -lR DIR: seconds
    s3bench.py parquet PATH                parquet-like read of a file: seconds
    s3bench.py write SRC DST PREFIX        cp SRC to DST (a mount or local dir)
                                           until close [and durable under PREFIX]
    s3bench.py raw WHAT                    the raw-S3 limit WHAT (see raw_*)
    s3bench.py fio JSON_FILE bw|iops       a figure from fio's JSON output
    s3bench.py report TSV                  the markdown table

Environment: BENCH_ENDPOINT, BENCH_BUCKET, AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY and the dataset knobs of run.sh.
"""

import concurrent.futures
import json
import os
import random
import statistics
import subprocess
import sys
import time

MB = 1000 * 1000
MIB = 1024 * 1024
KIB = 1024


def knob(name, default):
    return int(os.environ.get(name, default))


# ---- dataset --------------------------------------------------------------------

def small_names():
    """The small files: tree/dNN/fNNNNN.bin, spread over SMALL_DIRS folders."""
    count, dirs = knob("SMALL_COUNT", 2000), knob("SMALL_DIRS", 40)
    return [f"tree/d{i % dirs:02d}/f{i:05d}.bin" for i in range(count)]


def parquet_layout(size):
    """A parquet-like file: 'PAR1', ROWGROUPS x COLS column chunks, a footer
    (JSON: offset and length of every chunk), its 4-byte length, 'PAR1'."""
    groups, cols = knob("PARQ_ROWGROUPS", 4), knob("PARQ_COLS", 8)
    chunk = (size - 64 * KIB) // (groups * cols)
    chunks = [[4 + (g * cols + c) * chunk, chunk] for g in range(groups) for c in range(cols)]
    footer = json.dumps({"groups": groups, "cols": cols, "chunks": chunks}).encode()
    footer += b" " * (64 * KIB - 12 - len(footer))
    return chunk, footer


def write_random(path, size, rng):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 4 * MIB)
            f.write(rng.randbytes(n))
            left -= n


def populate(local):
    """Generate the dataset under LOCAL (kept as the local-disk copy) and
    upload what the read workloads use; files already there are kept."""
    rng, sizes = random.Random(6), random.Random(7)
    files = {
        "big.bin": knob("BIG_MB", 1024) * MIB,
        "mid.bin": knob("MID_MB", 256) * MIB,
    }
    lo, hi = knob("SMALL_MIN_KB", 4), knob("SMALL_MAX_KB", 64)
    for name in small_names():
        files[name] = sizes.randint(lo * KIB, hi * KIB)
    for name, size in files.items():
        path = os.path.join(local, name)
        if not os.path.exists(path) or os.path.getsize(path) != size:
            write_random(path, size, rng)
    parq = os.path.join(local, "data.parquet")
    psize = knob("PARQ_MB", 128) * MIB
    if not os.path.exists(parq) or os.path.getsize(parq) != psize:
        _, footer = parquet_layout(psize)
        body = psize - 4 - len(footer) - 8
        with open(parq, "wb") as f:
            f.write(b"PAR1")
            left = body
            while left:
                n = min(left, 4 * MIB)
                f.write(rng.randbytes(n))
                left -= n
            f.write(footer + len(footer).to_bytes(4, "little") + b"PAR1")
    files["data.parquet"] = psize
    # What the write workload copies in: one file and a tree.
    wfiles = {"wsrc/big.bin": knob("WRITE_MB", 256) * MIB}
    for i in range(knob("WRITE_FILES", 500)):
        wfiles[f"wsrc/tree/d{i % 10}/w{i:05d}.bin"] = sizes.randint(lo * KIB, hi * KIB)
    for name, size in wfiles.items():
        path = os.path.join(local, name)
        if not os.path.exists(path) or os.path.getsize(path) != size:
            write_random(path, size, rng)

    s3 = client(len(files))
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        def put(name):
            with open(os.path.join(local, name), "rb") as f:
                s3.put_object(Bucket=bucket(), Key=name, Body=f)
        list(pool.map(put, sorted(files)))
    return len(files)


# ---- workloads on a path (the mount or the local copy) -------------------------------

def read_all(path):
    n = 0
    with open(path, "rb", buffering=0) as f:
        while True:
            b = f.read(MIB)
            if not b:
                return n
            n += len(b)


def small(root, readers):
    names = small_names()
    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(readers) as pool:
        list(pool.map(lambda n: read_all(os.path.join(root, n)), names))
    return len(names) / (time.monotonic() - t0)


def ls(root):
    t0 = time.monotonic()
    subprocess.run(["ls", "-lR", root], check=True, stdout=subprocess.DEVNULL)
    return time.monotonic() - t0


def parquet_reads(size, read_tail):
    """The reads of a parquet reader: tail, footer, 2 of the columns
    (PARQ_READ_COLS) of every row group.  read_tail(off, n) -> bytes."""
    tail = read_tail(size - 8, 8)
    if tail[4:] != b"PAR1":
        raise SystemExit("s3bench: parquet-like file has no 'PAR1' trailer")
    flen = int.from_bytes(tail[:4], "little")
    meta = json.loads(read_tail(size - 8 - flen, flen))
    want = [int(c) for c in os.environ.get("PARQ_READ_COLS", "1,5").split(",")]
    for g in range(meta["groups"]):
        for c in want:
            off, n = meta["chunks"][g * meta["cols"] + c]
            read_tail(off, n)


def parquet(path):
    t0 = time.monotonic()
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size

        def pread(off, n):
            out = bytearray()
            while len(out) < n:
                b = os.pread(fd, min(n - len(out), 4 * MIB), off + len(out))
                if not b:
                    raise SystemExit(f"s3bench: short read of '{path}'")
                out += b
            return bytes(out)

        parquet_reads(size, pread)
    finally:
        os.close(fd)
    return time.monotonic() - t0


def write(src, dst, prefix):
    """cp -r SRC into DST and sync: the time to close.  With PREFIX (DST is a
    mount), also poll the bucket until every file is there with its size:
    the time to durable.  Prints 'close durable'."""
    want = {}
    base = os.path.basename(src.rstrip("/"))
    if os.path.isdir(src):
        for d, _, fs in os.walk(src):
            for f in fs:
                p = os.path.join(d, f)
                want[f"{prefix}/{base}/{os.path.relpath(p, src)}"] = os.path.getsize(p)
    else:
        want[f"{prefix}/{base}"] = os.path.getsize(src)
    s3 = client(8) if prefix != "-" else None
    if s3:
        s3.head_bucket(Bucket=bucket())
    t0 = time.monotonic()
    subprocess.run(["cp", "-r", src, dst], check=True)
    subprocess.run(["sync", "-f", dst], check=True)
    close = time.monotonic() - t0
    if not s3:
        return f"{close:.4f} -"
    deadline = t0 + knob("WRITE_TIMEOUT", 300)
    while True:
        have = {}
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket(), Prefix=prefix + "/"):
            for o in page.get("Contents", []):
                have[o["Key"]] = o["Size"]
        if all(have.get(k) == v for k, v in want.items()):
            return f"{close:.4f} {time.monotonic() - t0:.4f}"
        if time.monotonic() > deadline:
            raise SystemExit(f"s3bench: '{prefix}' not durable after {knob('WRITE_TIMEOUT', 300)} s")
        time.sleep(0.05)


# ---- raw S3: the limits ---------------------------------------------------------------

def bucket():
    return os.environ["BENCH_BUCKET"]


def client(conns):
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3", endpoint_url=os.environ["BENCH_ENDPOINT"], region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, max_pool_connections=max(conns, 1),
                      retries={"max_attempts": 1}))


def get_range(s3, key, off, n):
    r = s3.get_object(Bucket=bucket(), Key=key, Range=f"bytes={off}-{off + n - 1}")
    got = 0
    for b in r["Body"].iter_chunks(MIB):
        got += len(b)
    return got


def raw_seq(streams):
    """big.bin in STREAMS concurrent ranged GETs (one per 1/STREAMS): MB/s."""
    s3 = client(streams)
    size = s3.head_object(Bucket=bucket(), Key="big.bin")["ContentLength"]
    part = -(-size // streams)
    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(streams) as pool:
        got = sum(pool.map(lambda i: get_range(s3, "big.bin", i * part, min(part, size - i * part)),
                           range(streams)))
    return got / MB / (time.monotonic() - t0)


def raw_rand(bs, ios):
    """The better of: IOS ranged GETs of BS bytes at random aligned offsets
    of mid.bin, one after the other on one connection (QD1), and fetching
    the whole of mid.bin on 4 streams then reading locally (when the file is
    small, that is how a client gets IOS reads done soonest): IOPS."""
    s3 = client(4)
    size = s3.head_object(Bucket=bucket(), Key="mid.bin")["ContentLength"]
    rng = random.Random(42)
    offs = [rng.randrange(size // bs) * bs for _ in range(ios)]
    t0 = time.monotonic()
    for off in offs:
        get_range(s3, "mid.bin", off, bs)
    qd1 = ios / (time.monotonic() - t0)
    part = -(-size // 4)
    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda i: get_range(s3, "mid.bin", i * part, min(part, size - i * part)), range(4)))
    return max(qd1, ios / (time.monotonic() - t0))


def raw_small(conns):
    """GET of every small file over CONNS keep-alive connections: files/s."""
    s3 = client(conns)
    names = small_names()
    s3.head_bucket(Bucket=bucket())

    def get(k):
        return len(s3.get_object(Bucket=bucket(), Key=k)["Body"].read())

    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(conns) as pool:
        list(pool.map(get, names))
    return len(names) / (time.monotonic() - t0)


def raw_list():
    """One flat ListObjectsV2 of tree/ (every page): seconds."""
    s3 = client(1)
    s3.head_bucket(Bucket=bucket())
    t0 = time.monotonic()
    n = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket(), Prefix="tree/"):
        n += len(page.get("Contents", []))
    if n != len(small_names()):
        raise SystemExit(f"s3bench: listing of 'tree/' gave {n} keys")
    return time.monotonic() - t0


def raw_parquet():
    """The parquet reader's reads as sequential ranged GETs: seconds."""
    s3 = client(1)
    s3.head_bucket(Bucket=bucket())
    t0 = time.monotonic()
    size = s3.head_object(Bucket=bucket(), Key="data.parquet")["ContentLength"]

    def read(off, n):
        r = s3.get_object(Bucket=bucket(), Key="data.parquet", Range=f"bytes={off}-{off + n - 1}")
        return r["Body"].read()

    parquet_reads(size, read)
    return time.monotonic() - t0


def raw_put(local, conns, tag):
    """PUT of the write workload's file (conns == 1) or tree (8): seconds."""
    s3 = client(conns)
    src = os.path.join(local, "wsrc")
    if conns == 1:
        paths = [os.path.join(src, "big.bin")]
    else:
        paths = [os.path.join(d, f) for d, _, fs in os.walk(os.path.join(src, "tree")) for f in fs]

    def put(p):
        with open(p, "rb") as f:
            s3.put_object(Bucket=bucket(), Key=f"rawput-{tag}/{os.path.relpath(p, src)}", Body=f)

    s3.head_bucket(Bucket=bucket())
    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(conns) as pool:
        list(pool.map(put, paths))
    return time.monotonic() - t0


# ---- fio and the report -------------------------------------------------------------------

def fio_figure(path, what):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    job = json.loads(text[text.index("{"):])["jobs"][0]["read"]
    if job["io_bytes"] <= 0:
        raise SystemExit(f"s3bench: fio read nothing (see '{path}')")
    return job["bw_bytes"] / MB if what == "bw" else job["iops"]


# row, label, unit, higher is better, limit row, limit label
ROWS = [
    ("seq_cold", "sequential read, cold", "MB/s", True, "raw_seq4", "ranged GETs on 4 streams"),
    ("seq_warm", "sequential read, warm", "MB/s", True, "local_seq", "local disk"),
    ("r4k_cold", "random 4 KiB QD1, cold", "IOPS", True, "raw_r4k", "QD1 ranged GETs or whole-file GET"),
    ("r4k_warm", "random 4 KiB QD1, warm", "IOPS", True, "local_r4k", "local disk"),
    ("r128k_cold", "random 128 KiB QD1, cold", "IOPS", True, "raw_r128k", "QD1 ranged GETs or whole-file GET"),
    ("r128k_warm", "random 128 KiB QD1, warm", "IOPS", True, "local_r128k", "local disk"),
    ("small1_cold", "small files, 1 reader, cold", "files/s", True, "raw_small1", "GETs on 1 connection"),
    ("small8_cold", "small files, 8 readers, cold", "files/s", True, "raw_small8", "GETs on 8 connections"),
    ("small1_warm", "small files, 1 reader, warm", "files/s", True, "local_small1", "local disk"),
    ("small8_warm", "small files, 8 readers, warm", "files/s", True, "local_small8", "local disk"),
    ("ls_fresh", "ls -lR, fresh mount", "s", False, "raw_list", "one flat listing"),
    ("ls_again", "ls -lR, again in the same mount", "s", False, "local_ls", "local disk"),
    ("ls_remount", "ls -lR, after a remount", "s", False, "local_ls", "local disk"),
    ("parq_cold", "parquet-like reads, cold", "s", False, "raw_parq", "the same ranged GETs"),
    ("parq_warm", "parquet-like reads, warm", "s", False, "local_parq", "local disk"),
    ("wbig_close", "big file written, close", "s", False, "local_wbig", "cp + sync on local disk"),
    ("wbig_durable", "big file written, durable", "s", False, "raw_put1", "one PUT"),
    ("wtree_close", "tree written, close", "s", False, "local_wtree", "cp + sync on local disk"),
    ("wtree_durable", "tree written, durable", "s", False, "raw_put8", "PUTs on 8 connections"),
]


def fmt(v):
    return f"{v:.3g}" if v < 1000 else f"{v:.0f}"


def report(tsv):
    """TSV lines 'system row value' -> markdown: the median of each, its
    ratio to the limit (rate / limit, or limit time / time)."""
    vals = {}
    with open(tsv, encoding="utf-8") as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3:
                vals.setdefault((parts[0], parts[1]), []).append(float(parts[2]))
    med = {k: (max(v) if k[1] == "rss_kib" else statistics.median(v)) for k, v in vals.items()}
    systems = []
    for (s, _) in vals:
        if s != "limit" and s not in systems:
            systems.append(s)
    out = ["| workload | unit | limit | " + " | ".join(systems) + " |",
           "|---|---|---|" + "---|" * len(systems)]
    for row, label, unit, higher, lrow, llabel in ROWS:
        cells = []
        lim = med.get(("limit", lrow))
        for s in systems:
            v = med.get((s, row))
            if v is None:
                cells.append("–")
            elif lim is None or v <= 0:
                cells.append(fmt(v))
            else:
                cells.append(f"{fmt(v)} ({(v / lim if higher else lim / v):.2f})")
        if all(c == "–" for c in cells):
            continue
        limtext = f"{fmt(lim)} {llabel}" if lim is not None else "–"
        if lrow == "raw_seq4" and ("limit", "raw_seq1") in med:
            limtext += f" (1 stream: {fmt(med[('limit', 'raw_seq1')])})"
        out.append(f"| {label} | {unit} | {limtext} | " + " | ".join(cells) + " |")
    out.append("| peak RSS of the daemon | MiB | – | " + " | ".join(
        fmt(med[(s, "rss_kib")] / 1024) if (s, "rss_kib") in med else "–" for s in systems) + " |")
    return "\n".join(out)


def main(argv):
    cmd, args = argv[1], argv[2:]
    if cmd == "populate":
        print(populate(args[0]))
    elif cmd == "small":
        print(f"{small(args[0], int(args[1])):.2f}")
    elif cmd == "ls":
        print(f"{ls(args[0]):.4f}")
    elif cmd == "parquet":
        print(f"{parquet(args[0]):.4f}")
    elif cmd == "write":
        print(write(args[0], args[1], args[2]))
    elif cmd == "raw":
        what = args[0]
        fns = {
            "seq1": lambda: raw_seq(1), "seq4": lambda: raw_seq(4),
            "r4k": lambda: raw_rand(4 * KIB, knob("FIO_4K_IOS", 500)),
            "r128k": lambda: raw_rand(128 * KIB, knob("FIO_128K_IOS", 200)),
            "small1": lambda: raw_small(1), "small8": lambda: raw_small(8),
            "list": raw_list, "parq": raw_parquet,
            "put1": lambda: raw_put(args[1], 1, args[2]),
            "put8": lambda: raw_put(args[1], 8, args[2]),
        }
        print(f"{fns[what]():.4f}")
    elif cmd == "fio":
        print(f"{fio_figure(args[0], args[1]):.2f}")
    elif cmd == "report":
        print(report(args[0]))
    else:
        raise SystemExit(f"s3bench: unknown command '{cmd}'")


if __name__ == "__main__":
    main(sys.argv)
