"""Listings behind a real mount: one flat LIST serves a whole subtree
(list_flat=N), a subtree bigger than the bound falls back to one listing per
directory, derived listings expire with meta_ttl, and a remount within
meta_ttl lists nothing.

Request counts come from the server's log (mount.list_requests); what the
mount shows is compared with what boto3 says the bucket holds.
"""

import os
import subprocess
import time

from mount import list_requests, put_many
from conftest import wait_for


def awkward_tree():
    """40 folders, some holding only folders, markers, a key beside a
    prefix of the same name, an empty folder that is only a marker."""
    items = {}
    for i in range(8):
        for j in range(4):
            items[f"d{i}/s{j}/f{i}{j}.txt"] = f"file {i} {j}\n".encode() * 500
    items["deep/only/folders/here/leaf"] = b"x" * 5000
    items["marker/"] = b""
    items["marker/inner/"] = b""
    items["clash"] = b"a file named like a folder"
    items["clash/inside"] = b"y" * 5000
    items["top.txt"] = b"z" * 5000
    return items


def expected_walk(items):
    """{dir: sorted names} of the tree the keys describe, "" the root, with
    the directory winning over a file of the same name."""
    dirs = {"": set()}
    for key in items:
        parts = key.split("/")
        for n in range(1, len(parts)):
            parent = "/".join(parts[: n - 1])
            dirs.setdefault(parent, set()).add(parts[n - 1] + "/")
            dirs.setdefault("/".join(parts[:n]), set())
        if parts[-1]:
            parent = "/".join(parts[:-1])
            if (parts[-1] + "/") not in dirs.setdefault(parent, set()):
                dirs[parent].add(parts[-1])
    # a file named like a folder added before the folder was seen
    for d, names in dirs.items():
        for name in list(names):
            if not name.endswith("/") and name + "/" in names:
                names.discard(name)
    return {d: sorted(n.rstrip("/") for n in names) for d, names in dirs.items()}


def walk(root):
    """{dir: sorted names} as the mount shows it (os.walk: a readdir per
    folder and a stat per name)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        out["" if rel == "." else rel] = sorted(dirnames + filenames)
        for name in filenames:
            os.lstat(os.path.join(dirpath, name))
    return out


def ls_lR(path):
    p = subprocess.run(["ls", "-lR", str(path)], capture_output=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return p.stdout.decode("utf-8", "replace")


def find(path):
    p = subprocess.run(["find", str(path)], capture_output=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return sorted(os.path.relpath(line, path) for line in p.stdout.decode().splitlines())


def test_ls_lR_of_40_folders_costs_one_list(mount, s3, bucket, s3rver):
    items = awkward_tree()
    put_many(s3, bucket, items)
    want = expected_walk(items)
    assert len(want) >= 40
    m = mount(bucket, meta_ttl="1h")
    s3rver.clear_log()
    out = ls_lR(m.path)
    lists = list_requests(s3rver, bucket)
    assert len(lists) == 1, f"ls -lR of {len(want)} folders: {lists}"
    assert "delimiter" not in lists[0], lists
    assert walk(m.path) == want
    assert "f73.txt" in out and "leaf" in out, out
    # the mount's sizes are the bucket's
    assert os.path.getsize(m.path / "d3/s2/f32.txt") == len(items["d3/s2/f32.txt"])
    assert os.path.isdir(m.path / "clash"), "a folder loses to a file of its name"
    assert os.listdir(m.path / "marker/inner") == []
    assert len(list_requests(s3rver, bucket)) == 1, "walking the tree listed again"


def test_find_in_a_subfolder_costs_one_flat_list(mount, s3, bucket, s3rver):
    items = awkward_tree()
    put_many(s3, bucket, items)
    m = mount(bucket, meta_ttl="1h")
    s3rver.clear_log()
    got = find(m.path / "d5")
    assert got == sorted(["."] + [f"s{j}" for j in range(4)] + [f"s{j}/f5{j}.txt" for j in range(4)])
    lists = list_requests(s3rver, bucket)
    # the lookup of d5 lists its parent, the root, flat (under the bound),
    # which serves the opendirs below too
    assert len(lists) == 1, lists
    assert "prefix=" not in lists[0] and "delimiter" not in lists[0], lists
    # after a remount within meta_ttl, d5 is known from the stored listings
    m.unmount()
    m.remount()
    s3rver.clear_log()
    assert find(m.path / "d5") == got
    assert list_requests(s3rver, bucket) == [], "a remount within meta_ttl listed again"


def test_subtree_bigger_than_the_bound_lists_per_directory(mount, s3, bucket, s3rver):
    items = {f"big/{i:03d}": b"b" * 100 for i in range(25)}
    items.update({"small/a/1": b"1", "small/b/1": b"2", "z": b"3"})
    put_many(s3, bucket, items)
    want = expected_walk(items)
    m = mount(bucket, meta_ttl="1h", list_flat="10")
    s3rver.clear_log()
    assert walk(m.path) == want
    lists = list_requests(s3rver, bucket)
    flat = [line for line in lists if "delimiter" not in line]
    # root: flat (cut after 10 keys of big/), then the rest of the root
    # with delimiter after big/009; big/: alone (it alone holds more than
    # 10 keys, so no flat try); small/: flat, which also gives small/a/ and
    # small/b/.
    assert len(flat) == 2, lists
    assert len(lists) == 4, lists
    rest = [line for line in lists if "start-after=" in line]
    assert len(rest) == 1 and "start-after=big%2F009" in rest[0], lists
    assert any("prefix=small%2F" in line for line in flat), lists


def test_derived_listings_expire_with_meta_ttl(mount, s3, bucket, s3rver):
    items = awkward_tree()
    put_many(s3, bucket, items)
    m = mount(bucket, meta_ttl="1s")
    ls_lR(m.path)
    listed = time.monotonic()
    s3.put_object(Bucket=bucket, Key="d2/s1/new.txt", Body=b"new")
    wait_for(lambda: time.monotonic() > listed + 1.5, 10, "meta_ttl=1s to pass")
    s3rver.clear_log()
    assert "new.txt" in os.listdir(m.path / "d2/s1")
    assert list_requests(s3rver, bucket), "an expired derived listing was served"


def test_remount_within_meta_ttl_lists_nothing(mount, s3, bucket, s3rver):
    items = awkward_tree()
    put_many(s3, bucket, items)
    m = mount(bucket, meta_ttl="1h")
    first = ls_lR(m.path)
    m.unmount()
    m.remount()
    s3rver.clear_log()
    assert ls_lR(m.path) == first
    assert walk(m.path) == expected_walk(items)
    assert list_requests(s3rver, bucket) == [], "a remount within meta_ttl listed again"


def test_list_flat_0_lists_each_directory(mount, s3, bucket, s3rver):
    items = awkward_tree()
    put_many(s3, bucket, items)
    want = expected_walk(items)
    m = mount(bucket, meta_ttl="1h", list_flat="0")
    s3rver.clear_log()
    assert walk(m.path) == want
    lists = list_requests(s3rver, bucket)
    assert all("delimiter" in line for line in lists), lists
    assert len(lists) == len(want), lists


def test_lookup_lists_the_parent_then_the_subtree_once(mount, s3, bucket, s3rver):
    items = {f"big/{i:03d}": b"b" * 100 for i in range(25)}
    items.update({"small/a/1": b"1", "small/b/1": b"2", "small/b/c/2": b"3"})
    put_many(s3, bucket, items)
    m = mount(bucket, meta_ttl="1h", list_flat="10")
    s3rver.clear_log()
    # looking small/ up lists its parent, the root: a flat page cut at the
    # bound, then the rest with delimiter after its last key; small/'s
    # subtree (3 keys, under the bound) is then listed flat once, and the
    # folders below it cost nothing more
    assert walk(m.path / "small") == {"": ["a", "b"], "a": ["1"], "b": ["1", "c"], "b/c": ["2"]}
    lists = list_requests(s3rver, bucket)
    assert len(lists) == 3, lists
    assert "prefix=" not in lists[0] and "max-keys=10" in lists[0] and "delimiter" not in lists[0], lists
    assert "delimiter=%2F" in lists[1] and "start-after=big%2F009" in lists[1], lists
    assert "prefix=small%2F" in lists[2] and "delimiter" not in lists[2], lists
    # big/ alone is over the bound (its 25 keys cut the root's flat page):
    # it is remembered, and listed with delimiter at once, in one request
    s3rver.clear_log()
    assert sorted(os.listdir(m.path / "big")) == [f"{i:03d}" for i in range(25)]
    lists = list_requests(s3rver, bucket)
    assert len(lists) == 1 and "prefix=big%2F" in lists[0] and "delimiter=%2F" in lists[0], lists
