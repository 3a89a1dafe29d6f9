"""The cold read path in counts: connections kept warm for parallel
readers, chunks fetched as parallel sub-range GETs that cover each byte
once, and a changed object still failing a parallel fetch with EIO.

Every count comes from the server's request log or the daemon's stats
line; nothing here is timed.
"""

import subprocess
import errno
import os

import pytest

from mount import MiB, object_requests, put_many, rand_bytes, read_file, sha


def test_parallel_small_readers_fetch_their_own_files(mount, s3, bucket, proxy):
    # 8 readers of 12 small files each, every GET slowed so that they
    # overlap: each reader GETs its own file (no hand-off to the prefetch
    # threads, which would cap them at 4 in flight) and the pool keeps its
    # connections alive (curl's default cache of 5 would close some).
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
    # each reader fetched its own file: none went to the prefetch threads
    assert st["vfs.prefetches"] == 0, st
    assert st["s3.get"] >= len(keys)
    # one connection per reader, a few spares for lookups racing reads
    assert st["s3.connects"] <= 16, st
