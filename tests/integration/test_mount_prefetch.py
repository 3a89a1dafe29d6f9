"""The cold read path in counts: connections kept warm for parallel
readers, chunks fetched as parallel sub-range GETs that cover each byte
once, and a changed object still failing a parallel fetch with EIO.

Every count comes from the server's request log or the daemon's stats
line; nothing here is timed.
"""

import errno
import os
import subprocess
import threading

import pytest

from conftest import wait_for
from faultproxy import FaultProxy
from mount import MiB, chunk_files, list_requests, object_requests, put_many, rand_bytes, read_file, sha


class RangeProxy(FaultProxy):
    """A FaultProxy that also records the Range header of every GET of an
    object: self.ranges[key] = [(first, last), ...] in arrival order."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.ranges = {}
        self._rlock = threading.Lock()

    def _forward(self, client, rfile, method, request, fault):
        head = request.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
        target = head[0].split(" ")[1]
        if method == "GET" and "?" not in target:
            rng = next((h.split(":", 1)[1].strip() for h in head[1:] if h.lower().startswith("range:")), None)
            key = target.split("/", 2)[2]
            if rng:
                first, _, last = rng.removeprefix("bytes=").partition("-")
                rng = (int(first), int(last))
            with self._rlock:
                self.ranges.setdefault(key, []).append(rng)
        return super()._forward(client, rfile, method, request, fault)

    def got(self, key):
        with self._rlock:
            return list(self.ranges.get(key, []))


@pytest.fixture
def range_proxy(s3rver):
    p = RangeProxy("127.0.0.1", s3rver.port)
    p.start()
    yield p
    p.stop()


def assert_tiles(ranges, size, part):
    """The ranges are sub-range GETs of at most `part` bytes that together
    cover [0, size) with each byte exactly once."""
    assert all(r is not None for r in ranges), f"a GET without Range: {ranges}"
    pos = 0
    for first, last in sorted(ranges):
        assert first == pos, f"gap or overlap at {pos}: {sorted(ranges)}"
        assert last - first + 1 <= part, f"part {first}-{last} over {part} bytes"
        pos = last + 1
    assert pos == size, f"covered {pos} of {size} bytes"


def test_parallel_small_readers_fetch_their_own_files(mount, s3, bucket, proxy):
    # 8 readers of 12 small files each, every GET slowed so that they
    # overlap: each file is fetched once (by its reader, or ahead of it).
    # That connections are kept is shown by the two-round test below.
    items = {f"d/f{i:03d}": rand_bytes(8192 + i, f"small{i}") for i in range(96)}
    put_many(s3, bucket, items)
    proxy.add("delay=0.05", count=None, method="GET")
    m = mount(bucket, endpoint=proxy.endpoint)
    keys = sorted(items)
    # 8 cat processes, 12 files each, as a shell user would run them
    paths = "\n".join(os.path.join(m.path, k) for k in keys)
    out = subprocess.run(["xargs", "-d", "\n", "-P", "8", "-n", "12", "cat"], input=paths.encode(),
                         capture_output=True, timeout=120, check=True).stdout
    assert len(out) == sum(len(items[k]) for k in keys)
    for k in keys[:3]:
        assert sha(read_file(os.path.join(m.path, k))) == sha(items[k])
    st = m.unmount()
    # each file fetched once, by its reader or ahead of it
    assert st["s3.get"] == len(keys), st
    # one connection per reader, a few spares for lookups racing reads
    assert st["s3.connects"] <= 16, st


def test_a_reader_fetches_the_chunk_it_reads_itself(mount, s3, bucket, request_log):
    # no hand-off of the chunk under a read to the prefetch threads (that
    # capped 8 readers at 4 GETs in flight)
    s3.put_object(Bucket=bucket, Key="one", Body=b"x" * 9000)
    s3.put_object(Bucket=bucket, Key="two", Body=rand_bytes(3 * MiB, "two"))
    m = mount(bucket, chunk_size="1M")
    os.listdir(m.path)
    assert read_file(m.path / "one") == b"x" * 9000
    with open(m.path / "two", "rb") as f:
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_RANDOM)
        f.read(4096)
    st = m.unmount()
    # "two": its chunk 0 by the reader, chunk 1 (the window) ahead of it
    assert st["vfs.prefetches"] <= 1, st


def test_sequential_read_fetches_parts_covering_each_byte_once(mount, s3, bucket, range_proxy):
    # 2 full 4 MiB chunks and a short one
    size = 10 * MiB + 12345
    data = rand_bytes(size, "seq")
    s3.put_object(Bucket=bucket, Key="big", Body=data)
    m = mount(bucket, endpoint=range_proxy.endpoint, chunk_size="4M")
    assert sha(read_file(m.path / "big")) == sha(data)
    # a reader is answered before the writer thread stores its chunk, and
    # the stats line is written before the writer's queue is drained
    wait_for(lambda: len(chunk_files(m.cache_dir)) == 3, 10, "3 chunks cached")
    st = m.unmount()
    ranges = range_proxy.got("big")
    # chunks fetched ahead of the reader come whole, each byte once
    assert_tiles(ranges, size, 4 * MiB)
    # chunk 0, which the reader waited for, came in four 1 MiB parts
    assert sorted(r for r in ranges if r[0] < 4 * MiB) == [(i * MiB, (i + 1) * MiB - 1) for i in range(4)]
    assert st["vfs.fetches"] == 3 and st["cache.chunks"] == 3, st
    # each written to the cache by the writer thread, not by the thread
    # that fetched it (which went on to its next GET)
    assert st["vfs.behind"] == 3, st


def test_random_read_gets_its_part_and_the_chunk_completes(mount, s3, bucket, range_proxy):
    # one 4 KiB read deep in a 4 MiB chunk: the bytes come back right, and
    # the rest of the chunk is fetched once, in the background
    size = 4 * MiB
    data = rand_bytes(size, "rand")
    s3.put_object(Bucket=bucket, Key="r", Body=data)
    m = mount(bucket, endpoint=range_proxy.endpoint, chunk_size="4M")
    off = 3 * MiB + 5000
    with open(m.path / "r", "rb", buffering=0) as f:
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_RANDOM)
        assert os.pread(f.fileno(), 4096, off) == data[off:off + 4096]
    wait_for(lambda: len(range_proxy.got("r")) == 4, 20, "the chunk's 4 parts")
    assert_tiles(range_proxy.got("r"), size, MiB)
    wait_for(lambda: len(chunk_files(m.cache_dir)) == 1, 10, "the chunk cached")
    # now a hit: no more GETs
    with open(m.path / "r", "rb") as f:
        assert sha(f.read()) == sha(data)
    st = m.unmount()
    assert len(range_proxy.got("r")) == 4
    assert st["vfs.fetches"] == 1 and st["cache.chunks"] == 1, st


def test_object_changed_during_parallel_fetch_gives_eio(mount, s3, bucket, request_log):
    # chunk 2 is neither read nor within the window fetched ahead of the
    # first read: its 4 parts are fetched after the object changed
    old, new = rand_bytes(12 * MiB, "v1"), rand_bytes(12 * MiB, "v2")
    s3.put_object(Bucket=bucket, Key="big", Body=old)
    m = mount(bucket, chunk_size="4M", meta_ttl="1h", expect_errors=True)
    path = m.path / "big"
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
        assert os.pread(fd, 4096, 0) == old[:4096]
        s3.put_object(Bucket=bucket, Key="big", Body=new)
        with pytest.raises(OSError) as e:
            got = os.pread(fd, 4096, 10 * MiB)
            pytest.fail(f"read after the change returned {'old' if got == old[10 * MiB:10 * MiB + 4096] else 'other'} data")
        assert e.value.errno == errno.EIO
    finally:
        os.close(fd)
    # the object's metadata expired: the next open sees the new version
    with open(path, "rb") as f:
        f.seek(10 * MiB)
        assert f.read(4096) == new[10 * MiB:10 * MiB + 4096]
    st = m.unmount()
    assert st["vfs.stale"] >= 1, st


# chunks far enough apart (over 2 MiB) that no read continues the last one
PICKS = [0, 12, 3, 15, 6, 18, 9, 21, 1, 13, 4, 16]


def random_reads(path, chunk, seed):
    """4 KiB reads at a random offset of each chunk of PICKS, page cache
    bypassed (FADV_RANDOM, distinct chunks); returns [(offset, bytes)]."""
    import random
    rnd = random.Random(seed)
    out = []
    with open(path, "rb", buffering=0) as f:
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_RANDOM)
        for c in PICKS:
            off = c * chunk + rnd.randrange(chunk - 4096)
            out.append((off, os.pread(f.fileno(), 4096, off)))
    return out


def test_file_read_at_random_is_fetched_whole_once(mount, s3, bucket, range_proxy):
    chunk, n = MiB, 24
    data = rand_bytes(n * chunk, "whole")
    s3.put_object(Bucket=bucket, Key="w", Body=data)
    m = mount(bucket, endpoint=range_proxy.endpoint, chunk_size="1M")
    for off, got in random_reads(m.path / "w", chunk, 1):
        assert got == data[off:off + 4096]
    # the other chunks come in the background, each once
    wait_for(lambda: len(range_proxy.got("w")) >= n, 20, "every chunk of the file")
    with open(m.path / "w", "rb") as f:
        assert sha(f.read()) == sha(data)
    st = m.unmount()
    assert_tiles(range_proxy.got("w"), len(data), chunk)
    assert st["cache.chunks"] == n, st


def test_random_reads_of_a_file_too_big_for_the_cache_fetch_only_what_is_read(mount, s3, bucket, range_proxy):
    # 24 MiB, over a quarter of a 16 MiB cache
    chunk, n = MiB, 24
    data = rand_bytes(n * chunk, "big-for-cache")
    s3.put_object(Bucket=bucket, Key="w", Body=data)
    m = mount(bucket, endpoint=range_proxy.endpoint, chunk_size="1M", cache_size="16M")
    for off, got in random_reads(m.path / "w", chunk, 2):
        assert got == data[off:off + 4096]
    st = m.unmount()
    # the 12 chunks read and at most the one after each (the window of a
    # read that looked sequential), never the whole file
    assert len(range_proxy.got("w")) <= 2 * len(PICKS), range_proxy.got("w")
    assert st["vfs.prefetches"] <= len(PICKS), st


def test_cold_cat_of_small_files_costs_one_get_each(mount, s3, bucket, request_log):
    # a folder's files cat'ed by name on a fresh mount, no ls first: the
    # first lookup lists the folder, every file then costs one GET (the
    # first at its lookup, which takes the attributes from its headers and
    # puts its bytes in the cache for the read that follows; the others at
    # their read, the listing answering their lookups)
    items = {f"d/f{i:02d}": rand_bytes(5000 + i, f"cat{i}") for i in range(20)}
    put_many(s3, bucket, items)
    m = mount(bucket)
    request_log.clear_log()
    for k in sorted(items):
        assert read_file(m.path / k) == items[k]
    m.unmount()
    assert len(object_requests(request_log, bucket, "GET")) == len(items)
    assert object_requests(request_log, bucket, "HEAD") == []
    # the root's listing (to find d) and d's
    assert len(list_requests(request_log, bucket)) <= 2, list_requests(request_log, bucket)


def test_small_files_read_one_by_one_are_fetched_ahead(mount, s3, bucket, request_log):
    # 30 small files and a big one in a folder: once two files in a row
    # missed, the next 8 small ones (in name order) come ahead of the
    # reader; the big one never does
    items = {f"d/f{i:02d}": rand_bytes(3000 + i, f"spec{i}") for i in range(30)}
    items["d/f05big"] = rand_bytes(300 * 1024, "big")
    put_many(s3, bucket, items)
    m = mount(bucket)
    os.listdir(m.path / "d")
    for k in ("d/f00", "d/f01"):
        assert read_file(m.path / k) == items[k]
    ahead = [f"d/f{i:02d}" for i in range(2, 10)]
    wait_for(lambda: all(object_requests(request_log, bucket, "GET", k) for k in ahead), 20,
             "the next 8 small files fetched ahead")
    for k in ahead:
        assert read_file(m.path / k) == items[k]
    m.unmount()
    for k in ahead:
        assert len(object_requests(request_log, bucket, "GET", k)) == 1, k
    assert object_requests(request_log, bucket, "GET", "d/f05big") == []
    # the reader stopped at f09: at most 8 files past the last one read
    fetched = {k for k in items if object_requests(request_log, bucket, "GET", k)}
    assert max(fetched) <= "d/f17", sorted(fetched)


def footer_read(path, size, cols):
    """A Parquet reader's pattern: the 8-byte tail first (not offset 0),
    then the footer before it, then a few column chunks [(off, len)]."""
    with open(path, "rb", buffering=0) as f:
        fd = f.fileno()
        out = [(size - 8, os.pread(fd, 8, size - 8)), (size - 8 - 5000, os.pread(fd, 5000, size - 8 - 5000))]
        for off, n in cols:
            out.append((off, os.pread(fd, n, off)))
    return out


def test_footer_read_fetches_the_whole_file_once(mount, s3, bucket, range_proxy):
    # 8 chunks of 1 MiB: the tail read makes the rest arrive in the
    # background, each byte once, column reads joining the fetches
    chunk, n = MiB, 8
    data = rand_bytes(n * chunk - 777, "parquet")
    s3.put_object(Bucket=bucket, Key="p.parquet", Body=data)
    m = mount(bucket, endpoint=range_proxy.endpoint, chunk_size="1M")
    for off, got in footer_read(m.path / "p.parquet", len(data), [(100, 70000), (3 * MiB + 5, 300000)]):
        assert got == data[off:off + len(got)]
    wait_for(lambda: sum(last - first + 1 for first, last in range_proxy.got("p.parquet")) >= len(data), 20,
             "every byte of the file")
    with open(m.path / "p.parquet", "rb") as f:
        assert sha(f.read()) == sha(data)
    st = m.unmount()
    # chunks fetched ahead come whole; the tail's chunk in 1 MiB parts
    assert_tiles(range_proxy.got("p.parquet"), len(data), chunk)
    assert st["cache.chunks"] == n and st["vfs.fetches"] == n, st


def test_footer_read_of_a_file_too_big_for_the_cache_fetches_what_is_read(mount, s3, bucket, range_proxy):
    # 24 MiB, over a quarter of a 16 MiB cache: the tail and the columns
    # only
    chunk, n = MiB, 24
    data = rand_bytes(n * chunk, "parquet-big")
    s3.put_object(Bucket=bucket, Key="p.parquet", Body=data)
    m = mount(bucket, endpoint=range_proxy.endpoint, chunk_size="1M", cache_size="16M")
    cols = [(4 * MiB + 10, 4096), (12 * MiB + 10, 4096)]
    for off, got in footer_read(m.path / "p.parquet", len(data), cols):
        assert got == data[off:off + len(got)]
    st = m.unmount()
    # the tail's chunk, the two column chunks, and at most the one after
    # each (a window of a read that looked sequential)
    got = range_proxy.got("p.parquet")
    assert len({first // chunk for first, _ in got}) <= 5, got
    assert st["cache.chunks"] <= 5, st


class GateProxy(RangeProxy):
    """A RangeProxy that holds every ranged GET starting below self.below
    until self.open is set."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.below = 0
        self.open = threading.Event()
        self.held = 0  # GETs that reached the gate while it was shut

    def _forward(self, client, rfile, method, request, fault):
        head = request.split(b"\r\n\r\n", 1)[0].decode("latin-1")
        for h in head.split("\r\n")[1:]:
            if method == "GET" and h.lower().startswith("range: bytes="):
                if int(h.split("=", 1)[1].split("-")[0]) < self.below and not self.open.is_set():
                    with self._rlock:
                        self.held += 1
                    self.open.wait(20)
        return super()._forward(client, rfile, method, request, fault)


def test_object_changed_during_footer_fetch_gives_eio(mount, s3, bucket, s3rver):
    # the whole-file fetch started by the tail read is held until the
    # object changed: its GETs (If-Match) meet the new version, so every
    # read of the rest of the file fails with EIO and the object expires
    old, new = rand_bytes(8 * MiB, "pv1"), rand_bytes(8 * MiB, "pv2")
    s3.put_object(Bucket=bucket, Key="p.parquet", Body=old)
    gate = GateProxy("127.0.0.1", s3rver.port)
    gate.below = 7 * MiB
    gate.start()
    try:
        m = mount(bucket, endpoint=gate.endpoint, chunk_size="1M", meta_ttl="1h", expect_errors=True)
        path = m.path / "p.parquet"
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
            assert os.pread(fd, 8, len(old) - 8) == old[-8:]
            # the whole-file fetch is under way, held at the gate
            wait_for(lambda: gate.held >= 2, 20, "the whole-file fetch")
            s3.put_object(Bucket=bucket, Key="p.parquet", Body=new)
            gate.open.set()
            for c in range(7):
                with pytest.raises(OSError) as e:
                    os.pread(fd, 4096, c * MiB + 100)
                    pytest.fail(f"chunk {c} read after the change")
                assert e.value.errno == errno.EIO
        finally:
            os.close(fd)
        # the object's metadata expired: the next open sees the new version
        with open(path, "rb") as f:
            f.seek(3 * MiB)
            assert f.read(4096) == new[3 * MiB:3 * MiB + 4096]
        st = m.unmount()
    finally:
        gate.open.set()
        gate.stop()
    assert st["vfs.stale"] >= 1, st


def test_default_prefetch_keeps_eight_gets_in_flight(mount, s3, bucket, s3rver):
    # a footer read of a 16-chunk file: with every GET of the rest held,
    # the default 8 prefetch threads each have one in flight (4 did before)
    data = rand_bytes(16 * MiB, "eight")
    s3.put_object(Bucket=bucket, Key="p.parquet", Body=data)
    gate = GateProxy("127.0.0.1", s3rver.port)
    gate.below = 15 * MiB
    gate.start()
    try:
        m = mount(bucket, endpoint=gate.endpoint, chunk_size="1M")
        with open(m.path / "p.parquet", "rb", buffering=0) as f:
            assert os.pread(f.fileno(), 8, len(data) - 8) == data[-8:]
            wait_for(lambda: gate.held >= 8, 20, "8 GETs held at the gate")
            gate.open.set()
            assert os.pread(f.fileno(), 4096, 5 * MiB) == data[5 * MiB:5 * MiB + 4096]
            # the rest of the file is read from the fetches, none again
            f.seek(0)
            assert sha(f.read()) == sha(data)
        st = m.unmount()
    finally:
        gate.open.set()
        gate.stop()
    assert_tiles(gate.got("p.parquet"), len(data), MiB)
    assert st["cache.chunks"] == 16, st


def test_third_sequential_read_queues_sixteen_chunks(mount, s3, bucket, range_proxy):
    # 1 MiB chunks, three 1 MiB reads from the start, page cache bypassed:
    # the window is 1 chunk after the first, 4 after the second, 16 after
    # the third (doubling gave 4), so chunks 0..18 are fetched
    data = rand_bytes(40 * MiB, "window")
    s3.put_object(Bucket=bucket, Key="w", Body=data)
    m = mount(bucket, endpoint=range_proxy.endpoint, chunk_size="1M")
    with open(m.path / "w", "rb", buffering=0) as f:
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_RANDOM)
        for i in range(3):
            assert os.pread(f.fileno(), MiB, i * MiB) == data[i * MiB:(i + 1) * MiB]
    wait_for(lambda: len(range_proxy.got("w")) >= 19, 20, "the chunks of the window")
    st = m.unmount()
    assert sorted(first // MiB for first, _ in range_proxy.got("w")) == list(range(19)), range_proxy.got("w")
    # all but chunk 0, the first read's own
    assert st["vfs.prefetches"] == 18, st


def test_connections_of_parallel_readers_are_kept_between_rounds(mount, s3, bucket, s3rver):
    # two rounds of 8 readers whose GETs are all held at once: the second
    # round reuses the first round's 8 connections (curl's default cache
    # of 5 would close 3 of them, and the second round would open 3 more)
    items = {f"d{r}{i}/f": rand_bytes(64 * 1024, f"conn{r}{i}") for r in range(2) for i in range(8)}
    put_many(s3, bucket, items)
    gate = GateProxy("127.0.0.1", s3rver.port)
    gate.below = 1  # every GET from offset 0
    gate.start()
    try:
        m = mount(bucket, endpoint=gate.endpoint)
        os.listdir(m.path)  # the one LIST, before the gate matters
        for r in range(2):
            gate.open.clear()
            gate.held = 0
            got = {}

            def read(key):
                got[key] = read_file(m.path / key)

            threads = [threading.Thread(target=read, args=(f"d{r}{i}/f",)) for i in range(8)]
            for t in threads:
                t.start()
            wait_for(lambda: gate.held >= 8, 20, f"8 GETs of round {r} held at once")
            gate.open.set()
            for t in threads:
                t.join(30)
            assert all(got.get(f"d{r}{i}/f") == items[f"d{r}{i}/f"] for i in range(8)), r
        st = m.unmount()
    finally:
        gate.open.set()
        gate.stop()
    assert st["s3.get"] == 16, st
    assert st["s3.connects"] <= 9, st  # 8 readers, perhaps one more for the LIST
