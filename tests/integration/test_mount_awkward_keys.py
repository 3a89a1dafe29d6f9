"""Keys of every awkward kind give one consistent tree, the one README's
"What you see" describes, and never crash the mount.

The keys: control characters (\\x01..\\x1f, \\x7f), invalid UTF-8 (lone
bytes, truncated sequences, overlongs, encoded surrogates), 1,024-byte keys
with short and with over-255-byte segments, '.' and '..' segments, a
leading '/', '/' runs, trailing '/' (markers with and without a body), keys
that clash with prefixes ('a' and 'a/b'; 'd/' and 'd/x'; 'x', 'x/' and
'x/y'), '\\', '%', '+', space, '*', one name spelt in NFC and in NFD, a
64-folder-deep path.

s3rver holds every key here that is valid UTF-8 with no empty, '.' or '..'
segment (it keeps objects as files; boto3 lists them back unchanged, which
the tests check). It cannot hold the rest: it stores a PUT of "%FF" as the
three characters "%FF", and '.', '..' and '//' alias or refuse. Those go to
FakeS3 (fakes3.py), which holds any bytes and answers as S3 does.

Each tree is read through the mount in five ways that must agree on every
name, type and size: a flat listing (list_flat default), listings with
delimiter (list_flat=0), flat listings cut after one key (list_flat=1, the
rest with delimiter), a remount within meta_ttl that lists no folder again
(from meta.db), and lookups by name before any listing (list_flat default
and 0). The model the tree is
checked against is expected_tree() below, written from README's rules.
"""

import errno
import os
import random
import stat
import subprocess
import unicodedata
import urllib.parse

import pytest

from conftest import SANITIZED
from fakes3 import FakeS3
from mount import list_requests, put_many, s3_body, s3_keys

SE = "surrogateescape"


def kb(key):
    """A key's bytes (keys not valid UTF-8 are spelt with surrogateescape)."""
    return key.encode("utf-8", SE)


def exactly(prefix, n, seg=100):
    """A key of exactly n bytes: prefix, then segments of `seg` bytes."""
    parts, size = [prefix.rstrip("/")], len(prefix.rstrip("/"))
    while size + 1 + seg < n:
        parts.append("s" * seg)
        size += 1 + seg
    parts.append("e" * (n - size - 1))
    key = "/".join(parts)
    assert len(kb(key)) == n
    return key


# one LIST per folder with list_flat=0: kept shallower under the sanitizers
DEPTH = 32 if SANITIZED else 64
CTRL = [chr(c) for c in range(1, 32)] + ["\x7f"]
NFC = unicodedata.normalize("NFC", "caf\u00e9")
NFD = unicodedata.normalize("NFD", "caf\u00e9")
assert kb(NFC) != kb(NFD)


def s3rver_keys():
    """{key: body}: every kind s3rver can hold."""
    keys = {}
    for c in CTRL:
        keys[f"ctl/c{ord(c):02x}{c}end"] = f"control {ord(c)}".encode()
    keys["ctl/\n"] = b"only a newline"
    keys["ctl/dir\x01\t/f\x1b"] = b"control chars in a folder name"
    for name in ["back\\slash", "pct%41", "pct%", "plus+x", "sp ace", " lead", "trail ", "star*", "q?x#y",
                 "~tilde", ".hidden", "...", "..x", "x..", "\u00fcn\u00ef", "\u65e5\u672c", "emoji\U0001f600",
                 "amp&lt;", "<tag>"]:
        keys["odd/" + name] = kb(name) + b" body"
    keys[f"nf/{NFC}"] = b"NFC spelling"
    keys[f"nf/{NFD}"] = b"NFD spelling"
    # 1,024 bytes, S3's maximum
    keys[exactly("long/short", 1024)] = b"1024 bytes in short segments"
    keys[exactly("long/big", 1024, 255)] = b"1024 bytes, 255-byte segments"
    keys[exactly("long/hidden", 1024, 300)] = b"1024 bytes, 300-byte segments"
    keys["long/" + "L" * 255] = b"255 bytes is a name"
    keys["long/" + "N" * 256] = b"256 bytes is not"
    keys["long/" + "D" * 300 + "/under"] = b"under a 300-byte folder"
    keys["k" * 1024] = b"a 1024-byte name"
    # markers
    keys["mk/empty/"] = b""
    keys["mk/body/"] = b"a marker with a body"
    keys["mk/nested/a/b/"] = b""
    # key and prefix clashes
    keys["clash/a"] = b"file a"
    keys["clash/a/b"] = b"a/b"
    keys["clash/d/"] = b""
    keys["clash/d/x"] = b"d/x"
    keys["clash/x"] = b"file x"
    keys["clash/x/"] = b"marker x/"
    keys["clash/x/y"] = b"x/y"
    keys["clash/f"] = b"file f"
    keys["clash/f/"] = b""
    keys["clash/g"] = b"file g"
    keys["clash/g/"] = b"marker g/ with body"
    # deep
    keys["deep/" + "d/" * DEPTH + "leaf"] = f"{DEPTH} folders down".encode()
    keys["plain"] = b"plain"
    return keys


def fake_keys():
    """{key: body}: the kinds s3rver cannot hold, beside a few it can."""
    keys = {k: v for k, v in s3rver_keys().items() if k.startswith(("clash/", "mk/", "plain", "ctl/c0"))}
    for name, raw in [("ff", b"\xff"), ("c3", b"\xc3"), ("e282", b"\xe2\x82"), ("overlong", b"\xc0\xaf"),
                      ("surrogate", b"\xed\xa0\x80"), ("fe", b"\xfe\xfe"), ("mid", b"a\x80b")]:
        keys["bad/" + name + raw.decode("utf-8", SE)] = b"invalid utf-8 " + name.encode()
    keys["bad/dir\udcff/f"] = b"in a folder whose name is no UTF-8"
    keys["bad/\udcc0\udcaf"] = b"overlong '/' alone"
    for k in ["/lead", "//x", "slash/a//b", "slash/a///c", "slash/ok", "slash/trail//", "dot/./b", "dot/../b",
              "dot/.", "dot/..", "dot/ok", ".", "..", "./under", "../up", "dot/x/../y/z", "dot/.../ok",
              "dot/.d/", "dot/../", "dot/./"]:
        keys[k] = f"odd key {k}".encode()
    # NUL: no C string holds it, the key is left out of the listing (beside
    # other keys, so that no folder depends on it alone)
    keys["nul\x00x"] = b"NUL at the top"
    keys["clash/nul\x00"] = b"NUL in a folder"
    keys["ctl/c0\x00/f"] = b"NUL in a folder name"
    keys["onlybad/../x"] = b"folder with only a hidden key"
    keys["onlybad2//x"] = b"folder with only an empty segment"
    return keys


# ---- the rules (README, "What you see") ----------------------------------------

def name_ok(seg):
    return 1 <= len(seg) <= 255 and seg not in (b".", b"..")


def expected_tree(keys):
    """(files {relpath bytes: body}, dirs {relpath bytes}) that `keys`
    ({key: body}) show: each key's segments are walked from the top; a
    segment that is no name hides the key, but the folders above it show;
    a key ending in '/' makes its folder; a folder wins over a file of the
    same name; a key holding NUL is not listed at all."""
    files, dirs = {}, set()
    for key, body in keys.items():
        if "\x00" in key:
            continue  # left out of the listing
        segs = kb(key).split(b"/")
        path = []
        for i, seg in enumerate(segs):
            last = i == len(segs) - 1
            if last and seg == b"":
                break  # a marker
            if not name_ok(seg):
                break
            path.append(seg)
            if last:
                files[b"/".join(path)] = body
            else:
                dirs.add(b"/".join(path))
    return {p: b for p, b in files.items() if p not in dirs}, dirs


# ---- what the mount shows -------------------------------------------------------

def walk(root):
    """{relpath bytes: ("d" | "f", size)} by readdir (os.walk) and lstat."""
    root = os.fsencode(root)
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            rel = os.path.relpath(p, root)
            assert stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode), (rel, oct(st.st_mode))
            out[rel] = ("d", 0) if stat.S_ISDIR(st.st_mode) else ("f", st.st_size)
    return out


def model(files, dirs):
    out = {p: ("f", len(b)) for p, b in files.items()}
    out.update({d: ("d", 0) for d in dirs})
    return out


def run_ok(args):
    p = subprocess.run([os.fsencode(str(a)) if not isinstance(a, bytes) else a for a in args],
                       capture_output=True, timeout=120)
    assert p.returncode == 0, f"{args[0]} failed ({p.returncode}): {p.stderr.decode(errors='replace')}"
    return p.stdout


def check_tree(m, files, dirs):
    """Every way of listing shows the model, every file reads byte-exact."""
    want = model(files, dirs)
    got = walk(m.path)
    assert set(got) - set(want) == set(), "shown but not in the model"
    assert set(want) - set(got) == set(), "in the model but not shown"
    assert got == want
    found = run_ok(["find", m.path, "-print0"]).split(b"\0")
    root = os.fsencode(str(m.path))
    assert {os.path.relpath(p, root) for p in found if p} - {b"."} == set(want)
    assert run_ok(["ls", "-lR", m.path])
    for rel, body in files.items():
        with open(os.path.join(root, rel), "rb") as f:
            assert f.read() == body, rel
    assert m.alive()


def hidden_names(keys, files, dirs):
    """Paths a key seems to name but the rules hide (relpath bytes): the
    key's segments joined, where a segment is no name."""
    shown = set(files) | dirs
    out = set()
    for key in keys:
        if "\x00" in key:
            continue  # no path can name it
        segs = [s for s in kb(key).split(b"/") if s]
        p = b"/".join(segs)
        if p and p not in shown and all(len(s) <= 255 for s in segs) and b"." not in segs and b".." not in segs:
            parent = os.path.dirname(p)
            if parent == b"" or parent in dirs:
                out.add(p)
    return out


def check_lookups_first(m, keys, files, dirs):
    """A fresh mount: stat of every path before any listing, in a random
    order, then the names the rules hide are not there."""
    root = os.fsencode(str(m.path))
    want = model(files, dirs)
    order = sorted(want)
    random.Random(7).shuffle(order)
    for rel in order:
        st = os.lstat(os.path.join(root, rel))
        kind = ("d", 0) if stat.S_ISDIR(st.st_mode) else ("f", st.st_size)
        assert kind == want[rel], rel
    for rel in sorted(hidden_names(keys, files, dirs)):
        with pytest.raises(FileNotFoundError):
            os.lstat(os.path.join(root, rel))
    with pytest.raises(OSError) as e:
        os.lstat(os.path.join(root, b"long", b"N" * 256))
    assert e.value.errno in (errno.ENAMETOOLONG, errno.ENOENT)


def folder_lists(server, name, files):
    """LIST requests for folders.  A lookup of a listed file of 1 to 4,095
    bytes (maybe an s3fs link, README) asks S3 even within meta_ttl, and
    its probe for a folder of that name (prefix "file/") is no listing."""
    out = []
    for line in list_requests(server, name):
        q = dict(urllib.parse.parse_qsl(line.partition("?")[2], errors=SE))
        prefix = kb(q.get("prefix", ""))
        if not (prefix.endswith(b"/") and files.get(prefix[:-1]) is not None
                and 0 < len(files[prefix[:-1]]) < 4096):
            out.append(line)
    return out


def check_all_ways(mount, name, keys, server, endpoint=None):
    """The ways of reading the tree of `keys` in bucket `name`."""
    files, dirs = expected_tree(keys)
    ep = {"endpoint": endpoint} if endpoint else {}
    for flat in (None, "0", "1"):
        m = mount(name, list_flat=flat, meta_ttl="1h", **ep)
        check_tree(m, files, dirs)
        if flat is None:
            m.unmount()
            m.remount()
            server.clear_log()  # after the start's own bucket check
            check_tree(m, files, dirs)
            assert folder_lists(server, name, files) == [], "a remount within meta_ttl listed again"
        m.unmount()
    for flat in (None, "0"):  # a lookup probes folders flat, or by delimiter
        m = mount(name, list_flat=flat, **ep)
        check_lookups_first(m, keys, files, dirs)
        check_tree(m, files, dirs)
        m.unmount()


def test_the_model_follows_the_rules():
    """The model says what README says, on one key of each kind."""
    files, dirs = expected_tree({
        "a": b"1", "a/b": b"2", "d/": b"", "d/x": b"3", "x": b"4", "x/": b"5", "m/": b"6",
        "/lead": b"", "s//t": b"", "h/../x": b"", "p/q/./r": b"", "L" * 256: b"", "c\x01": b"7",
    })
    assert dirs == {b"a", b"d", b"x", b"m", b"s", b"h", b"p", b"p/q"}
    assert files == {b"a/b": b"2", b"d/x": b"3", b"c\x01": b"7"}


def test_awkward_keys_on_s3rver(mount, s3, bucket, s3rver):
    keys = s3rver_keys()
    put_many(s3, bucket, keys)
    assert s3_keys(s3, bucket) == sorted(keys), "s3rver did not keep the keys as given"
    files, dirs = expected_tree(keys)
    for rel, body in files.items():
        key = rel.decode()
        if key in keys:
            assert s3_body(s3, bucket, key) == body, key
    # the rules at work on this set
    assert b"clash/a" in dirs and b"clash/x" in dirs and b"clash/f" in dirs and b"clash/g" in dirs
    assert b"mk/empty" in dirs and b"mk/body" in dirs and b"mk/nested/a/b" in dirs
    assert kb(f"nf/{NFC}") in files and kb(f"nf/{NFD}") in files
    assert kb(exactly("long/short", 1024)) in files and kb(exactly("long/big", 1024, 255)) in files
    assert not any(p.startswith(b"long/hidden/") for p in set(files) | dirs)
    assert b"k" * 1024 not in files
    check_all_ways(mount, bucket, keys, s3rver)


def test_awkward_keys_s3rver_cannot_hold(mount):
    keys = fake_keys()
    files, dirs = expected_tree(keys)
    assert b"bad/ff\xff" in files and b"bad/overlong\xc0\xaf" in files and b"bad/dir\xff" in dirs
    assert b"slash" in dirs and b"slash/a" in dirs and b"slash/trail" in dirs
    assert b"onlybad" in dirs and b"onlybad2" in dirs
    assert not any(p.startswith((b"lead", b"x", b"up", b"under")) for p in files)
    fake = FakeS3("awkward-keys", keys).start()
    try:
        check_all_ways(mount, "awkward-keys", keys, fake, endpoint=fake.endpoint)
    finally:
        fake.stop()



NEW_OK = [b"c\x01x", b"tab\tx", b"nl\nx", b"\x7f", b"esc\x1b[0m", b"cr\r", b"\x1f", b"caf\xc3\xa9"]
NEW_BAD = [b"w\xffx", b"w\xc3", b"w\xc0\xaf", b"w\xed\xa0\x80", b"\xfe"]


def test_new_names_with_control_chars_or_invalid_utf8(mount, s3, bucket):
    """Control characters reach S3 as they are and read back; a name that is
    no UTF-8 is refused with EILSEQ (S3 keys are UTF-8) and nothing is sent."""
    m = mount(bucket)
    root = os.fsencode(str(m.path))
    os.mkdir(os.path.join(root, b"dir\x02"))
    want = {"dir\x02/": b""}
    for name in NEW_OK:
        for rel in (name, b"dir\x02/" + name):
            with open(os.path.join(root, rel), "wb") as f:
                f.write(b"body of " + rel)
            want[rel.decode()] = b"body of " + rel
    for name in NEW_BAD:
        path = os.path.join(root, name)
        for what, act in [("create", lambda: open(path, "wb")), ("mkdir", lambda: os.mkdir(path)),
                          ("symlink", lambda: os.symlink(b"plain", path)),
                          ("rename", lambda: os.rename(os.path.join(root, NEW_OK[0]), path))]:
            with pytest.raises(OSError) as e:
                act()
            assert e.value.errno == errno.EILSEQ, (what, name, e.value)
            assert not os.path.lexists(path), (what, name)
    assert s3_keys(s3, bucket) == sorted(want)
    for key, body in want.items():
        assert s3_body(s3, bucket, key) == body, key
    for key, body in want.items():
        if not key.endswith("/"):
            with open(os.path.join(root, os.fsencode(key)), "rb") as f:
                assert f.read() == body, key
    m.unmount()
    # a second mount with a cold cache shows what S3 holds
    m2 = mount(bucket)
    files, dirs = expected_tree(want)
    check_tree(m2, files, dirs)
    m2.unmount()

