"""The manual pages: s3cachefs(1) documents every option the daemon's
--help lists (with the same default and variable) and nothing it does not;
both pages render without a warning; "meson install" puts the pages, the
mount helper and the systemd unit where the pages say they are."""

import json
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from conftest import BUILD_DIR, REPO_ROOT, need

MAN_DIR = REPO_ROOT / "tools" / "man"
PAGES = [MAN_DIR / "s3cachefs.1", MAN_DIR / "s3cachefs-ctl.1"]
DAEMON = BUILD_DIR / "src" / "s3cachefs"
CTL_COMMANDS = ["stats", "ls", "clear", "gc", "verify", "warm", "evict", "rotate-key"]
HELP_ROW = re.compile(r"^  ([a-z_]+)(?:=|\[=|\s)")


def render(page, width=80):
    """(returncode, text, warnings) of man -l, formatting stripped."""
    env = dict(os.environ, MANWIDTH=str(width), LC_ALL="C.UTF-8", MAN_KEEP_FORMATTING="")
    env.pop("MANPAGER", None)
    env.pop("PAGER", None)
    p = subprocess.run(["man", "--warnings", "-l", str(page)], capture_output=True, env=env,
                       stdin=subprocess.DEVNULL, timeout=60)
    return p.returncode, p.stdout.decode("utf-8"), p.stderr.decode("utf-8", errors="replace")


@pytest.fixture(scope="module")
def man():
    need(shutil.which("man"), "man (apt-get install man-db)")
    return render


def daemon_help():
    """{name: {"env": ..., "default": ..., "alias_of": ...}} from the
    option rows of "s3cachefs --help"."""
    need(DAEMON.is_file(), f"daemon binary {DAEMON} (build with meson/ninja)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("S3CACHEFS_")}
    p = subprocess.run([str(DAEMON), "--help"], capture_output=True, timeout=30, stdin=subprocess.DEVNULL, env=env)
    assert p.returncode == 0, p.stderr
    text = p.stdout.decode()
    opts = {}
    in_options = False
    for line in text.splitlines():
        if re.fullmatch(r"\S.* options:", line):
            in_options = True
            continue
        m = HELP_ROW.match(line) if in_options else None
        if not m:
            continue
        env = re.search(r"env (S3CACHEFS_\w+)", line)
        default = re.search(r"\(default: ([^;)]+)", line)
        alias = re.search(r"same as (\w+)", line)
        opts[m.group(1)] = {
            "env": env and env.group(1),
            "default": default.group(1) if default else None,
            "alias_of": alias and alias.group(1),
        }
    assert len(opts) > 40, f"parsed only {sorted(opts)} from --help:\n{text}"
    return opts


def section(text, name):
    """The lines of one top-level section of a rendered page."""
    lines = text.splitlines()
    start = lines.index(name)
    end = next((i for i in range(start + 1, len(lines)) if re.match(r"^[A-Z]", lines[i])), len(lines))
    return lines[start + 1:end]


def subsections(lines):
    """{heading: lines} of the .SS subsections of a section (headings at
    the 3-column indent); what comes before the first is under ""."""
    out = {"": []}
    cur = ""
    for line in lines:
        if re.match(r"^ {3}\S", line):
            cur = line.strip()
            out[cur] = []
        else:
            out[cur].append(line)
    return out


def entries(lines):
    """{tag: paragraph text} of the .TP items (tags at the 7-column indent),
    whitespace collapsed; a short tag shares its line with the text."""
    out = {}
    tag = None
    for line in lines:
        m = re.match(r"^ {7}(\S.*)$", line)
        if m:
            tag = m.group(1).split()[0].rstrip(",")
            out[tag] = m.group(1)
        elif tag and line.strip():
            out[tag] += " " + line.strip()
    return {k: re.sub(r"\s+", " ", v) for k, v in out.items()}


def option_name(tag):
    m = re.match(r"^([a-z_]+)(?:=|\[=|$)", tag)
    return m and m.group(1)


def test_every_option_of_help_is_documented(man):
    opts = daemon_help()
    rc, text, warnings = man(PAGES[0], width=200)
    assert rc == 0 and not warnings, warnings
    docs = {}
    groups = subsections(section(text, "OPTIONS"))
    for heading in ["S3", "Credentials", "Network", "Uploads", "Cache", "Mount", "Logging"]:
        for tag, para in entries(groups[heading]).items():
            name = option_name(tag)
            if name:
                assert name not in docs, f"{name} documented twice"
                docs[name] = para
    missing = sorted(set(opts) - set(docs))
    assert not missing, f"options of --help missing from s3cachefs.1: {missing}"
    extra = sorted(set(docs) - set(opts))
    assert not extra, f"s3cachefs.1 documents options --help does not list: {extra}"
    for name, o in opts.items():
        para = docs[name]
        if o["alias_of"]:
            assert f"same as {o['alias_of']}" in para, (name, para)
            continue
        assert o["env"] and o["env"] in para, f"{name}: variable {o['env']} not in {para!r}"
        m = re.search(r"Default: (\S+?)[.,]", para)
        assert m, f"{name}: no 'Default:' in {para!r}"
        assert m.group(1) == (o["default"] or "none"), f"{name}: --help default {o['default']}, page {m.group(1)}"


def test_flags_and_sections_are_documented(man):
    rc, text, _ = man(PAGES[0])
    flags = entries(subsections(section(text, "OPTIONS"))[""])
    for flag in ["-f", "-d", "-o", "-h", "-V"]:
        assert flag in flags, f"flag {flag} not documented: {sorted(flags)}"
    assert "--help" in flags["-h"] and "--version" in flags["-V"]
    for name in ["NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "CONFIGURATION", "CREDENTIALS", "CACHE",
                 "CONSISTENCY", "FSTAB", "SYSTEMD", "SIGNALS", "FILES", "EXIT STATUS", "SEE ALSO"]:
        assert name in text.splitlines(), f"no section {name}"
    config = " ".join(section(text, "CONFIGURATION"))
    for word in ["500M", "20G", "30s", "5m", "24h", "/etc/s3cachefs.conf"]:
        assert word in config, word
    signals = " ".join(section(text, "SIGNALS"))
    assert "SIGTERM" in signals and "SIGINT" in signals


def test_ctl_page_documents_every_command(man):
    rc, text, warnings = man(PAGES[1])
    assert rc == 0 and not warnings, warnings
    cmds = entries(section(text, "COMMANDS"))
    for cmd in CTL_COMMANDS:
        assert cmd in cmds, f"command {cmd} not documented: {sorted(cmds)}"
    assert "--json" in cmds["stats"] and "--json" in cmds["ls"]
    assert "--older-than" in cmds["gc"] and "--new-key-file" in cmds["rotate-key"]
    opts = entries(section(text, "OPTIONS"))
    assert "-C" in opts and "-o" in opts
    status = entries(section(text, "EXIT STATUS"))
    assert sorted(status) == ["0", "1", "2"], status


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
@pytest.mark.parametrize("width", [60, 80, 132])
def test_page_renders_without_warnings(man, page, width):
    rc, text, warnings = man(page, width)
    assert rc == 0, warnings
    assert not warnings.strip(), f"man --warnings at width {width}:\n{warnings}"
    assert text.startswith(page.stem.upper()), text[:200]
    if shutil.which("groff"):
        p = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z", str(page)], capture_output=True, timeout=60)
        assert p.returncode == 0 and not p.stderr, p.stderr.decode(errors="replace")


def meson_dirs():
    need(shutil.which("meson"), "meson")
    p = subprocess.run(["meson", "introspect", str(BUILD_DIR), "--buildoptions"], capture_output=True,
                       timeout=60, check=True)
    opts = {o["name"]: o["value"] for o in json.loads(p.stdout)}
    prefix = Path(opts["prefix"])
    return {k: prefix / opts[k] for k in ["bindir", "sbindir", "mandir", "datadir"]} | {"prefix": prefix}


def test_meson_install_puts_everything_where_documented(tmp_path):
    dirs = meson_dirs()
    dest = tmp_path / "dest"
    p = subprocess.run(["meson", "install", "-C", str(BUILD_DIR), "--no-rebuild", "--quiet", "--destdir", str(dest)],
                       capture_output=True, timeout=300, stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stderr.decode(errors="replace")

    def installed(path):
        return dest / Path(path).relative_to("/")

    for page in PAGES:
        got = installed(dirs["mandir"] / "man1" / page.name)
        assert got.read_bytes() == page.read_bytes(), got
    # man finds them there
    if shutil.which("man"):
        p = subprocess.run(["man", "-w", "s3cachefs-ctl"], capture_output=True, timeout=60,
                           env=dict(os.environ, MANPATH=str(installed(dirs["mandir"]))))
        assert p.stdout.decode().strip() == str(installed(dirs["mandir"] / "man1" / "s3cachefs-ctl.1"))

    helper = installed(dirs["sbindir"] / "mount.s3cachefs")
    mode = helper.stat().st_mode
    assert stat.S_ISREG(mode) and mode & 0o111 == 0o111, oct(mode)
    text = helper.read_text()
    assert f"CONFIGURED_BINDIR='{dirs['bindir']}'" in text and "@" not in text.split("CONFIGURED_BINDIR")[1][:3]
    assert installed(dirs["bindir"] / "s3cachefs").is_file()

    unit = installed(dirs["prefix"] / "lib" / "systemd" / "system" / "s3cachefs@.service")
    exec_start = re.search(r"^ExecStart=(\S+)", unit.read_text(), re.M).group(1)
    assert exec_start == str(dirs["sbindir"] / "mount.s3cachefs")
    assert "@" not in unit.read_text().replace("s3cachefs@", "")

    examples = installed(dirs["datadir"] / "doc" / "s3cachefs" / "examples")
    assert sorted(p.name for p in examples.iterdir()) == ["fstab.example", "s3cachefs.env.example"]
