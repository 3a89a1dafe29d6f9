"""Shared fixtures of the integration tests.

Run with Debian's interpreter, which has boto3 (python3-boto3):

    /usr/bin/python3 -m pytest tests/integration

An S3 server (s3rver, pinned in tests/s3rver and preloaded with
tests/s3rver/fixes.js so that it answers as AWS S3 does) runs on a free
loopback port for the whole session. Tests check results through boto3, an
independent client, never through the tool under test alone.

Environment:
  S3CACHEFS_BUILD_DIR   meson build dir (default: <repo>/build)
  CI=true               a missing tool, node or FUSE fails instead of skipping
  S3CACHEFS_SANITIZED=1 every tool run must leave no sanitizer report
"""

import itertools
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

try:
    import boto3
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.config import Config
    from botocore.credentials import Credentials
except ImportError:  # pragma: no cover - reported by need() below
    boto3 = None

from faultproxy import FaultProxy

REPO_ROOT = Path(__file__).resolve().parents[2]
S3RVER_DIR = REPO_ROOT / "tests" / "s3rver"
BUILD_DIR = Path(os.environ.get("S3CACHEFS_BUILD_DIR", REPO_ROOT / "build"))
TOOL = BUILD_DIR / "tools" / "s3cachefs-s3"
IN_CI = os.environ.get("CI") == "true"
SANITIZED = os.environ.get("S3CACHEFS_SANITIZED") == "1"

ACCESS_KEY = "S3RVER"
SECRET_KEY = "S3RVER"
REGION = "us-east-1"
# A second key pair of the same account (fixes.js S3RVER_EXTRA_KEYS) whose
# secret differs from its key id, so tests can look for leaked secrets.
ALT_ACCESS_KEY = "AKIAIOSFODNN7EXAMPLE"
ALT_SECRET_KEY = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYzEXAMPLEKEY"

SANITIZER_RE = re.compile(r"runtime error|AddressSanitizer|LeakSanitizer|ThreadSanitizer")


def need(ok, what):
    """Skip (loudly) when a prerequisite is missing; under CI=true, fail."""
    if ok:
        return
    msg = f"prerequisite missing: {what}"
    if IN_CI:
        pytest.fail(msg + " (CI=true: failing instead of skipping)", pytrace=False)
    sys.stderr.write(f"\n*** SKIPPING: {msg} ***\n")
    pytest.skip(msg)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(cond, timeout, what, interval=0.02):
    """Poll cond() until it returns a true value or the deadline passes."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def boto3_client(endpoint, region=REGION, access_key=ACCESS_KEY, secret_key=SECRET_KEY, **cfg):
    settings = dict(
        s3={"addressing_style": "path"},
        retries={"total_max_attempts": 2, "mode": "standard"},
        connect_timeout=5,
        read_timeout=60,
        max_pool_connections=16,
    )
    verify = cfg.pop("verify", None)
    settings.update(cfg)
    config = Config(**settings)
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        verify=verify,
        region_name=region,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        config=config,
    )


class S3rver:
    """One s3rver process on a free loopback port, with a request log."""

    def __init__(self, workdir, region=None, extra_env=None, extra_args=None, tls=None):
        """tls: (cert_pem, key_pem, ca_pem) paths to serve HTTPS with."""
        self.extra_args = list(extra_args or [])
        self.tls = tls
        if tls:
            self.extra_args += ["--cert", str(tls[0]), "--key", str(tls[1])]
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.data_dir = self.workdir / "data"
        self.log_path = self.workdir / "requests.log"
        self.out_path = self.workdir / "s3rver.out"
        self.region = region or REGION
        self.extra_env = extra_env or {}
        self.proc = None
        self.port = None

    @property
    def endpoint(self):
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def start(self, timeout=30):
        env = dict(os.environ)
        env.update(
            S3RVER_REGION=self.region,
            S3RVER_REQUEST_LOG=str(self.log_path),
            S3RVER_EXTRA_KEYS=f"{ALT_ACCESS_KEY}:{ALT_SECRET_KEY}",
        )
        env.update(self.extra_env)
        self.log_path.touch()
        # The port can be taken between free_port() and node's bind: retry.
        for _ in range(3):
            self.port = free_port()
            out = open(self.out_path, "wb")
            self.proc = subprocess.Popen(
                [
                    "node",
                    "--openssl-legacy-provider",
                    "-r",
                    str(S3RVER_DIR / "fixes.js"),
                    str(S3RVER_DIR / "node_modules" / "s3rver" / "bin" / "s3rver.js"),
                    "-d", str(self.data_dir),
                    "-a", "127.0.0.1",
                    "-p", str(self.port),
                    "--silent",
                    *self.extra_args,
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=str(S3RVER_DIR),
            )
            out.close()
            try:
                self._wait_ready(timeout)
                return self
            except RuntimeError:
                if b"EADDRINUSE" not in self.out_path.read_bytes():
                    raise
        raise RuntimeError("s3rver: no free port after 3 tries")

    def _wait_ready(self, timeout):
        deadline = time.monotonic() + timeout

        def port_open():
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"s3rver exited with {self.proc.returncode}:\n"
                    + self.out_path.read_text(errors="replace")
                )
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return True
            except OSError:
                return False

        wait_for(port_open, timeout, f"s3rver to listen on {self.port}")
        client = boto3_client(self.endpoint, region=self.region,
                              **({"verify": str(self.tls[2])} if self.tls else {}))

        def answers():
            port_open()
            try:
                client.list_buckets()
                return True
            except Exception:  # noqa: BLE001 - not up yet
                return False

        wait_for(answers, max(1.0, deadline - time.monotonic()), "s3rver to answer ListBuckets")

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None

    # -- request log (one "METHOD PATH?QUERY" line per request) ------------
    def log_lines(self):
        return self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()

    def clear_log(self):
        self.log_path.write_bytes(b"")

    def count(self, method, contains=""):
        return sum(
            1
            for line in self.log_lines()
            if line.startswith(method + " ") and contains in line
        )


@pytest.fixture(scope="session")
def s3rver_ready():
    """Installs the pinned s3rver (npm ci) once, if needed."""
    need(shutil.which("node"), "node (apt-get install nodejs npm)")
    need(boto3 is not None, "boto3 for /usr/bin/python3 (apt-get install python3-boto3)")
    if not (S3RVER_DIR / "node_modules" / "s3rver" / "package.json").exists():
        need(shutil.which("npm"), "npm (apt-get install npm)")
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"],
            cwd=str(S3RVER_DIR),
            check=True,
            timeout=300,
            stdin=subprocess.DEVNULL,
        )
    return True


@pytest.fixture(scope="session")
def s3rver(s3rver_ready, tmp_path_factory):
    server = S3rver(tmp_path_factory.mktemp("s3rver")).start()
    yield server
    server.stop()


@pytest.fixture
def start_s3rver(s3rver_ready, tmp_path_factory):
    """Starts extra servers (e.g. in another region); stopped after the test."""
    started = []

    def start(**kw):
        server = S3rver(tmp_path_factory.mktemp("s3rver-extra"), **kw).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def s3(s3rver):
    return boto3_client(s3rver.endpoint)


_bucket_seq = itertools.count()


def new_bucket_name():
    return f"t{next(_bucket_seq)}-{uuid.uuid4().hex[:16]}"


@pytest.fixture
def bucket(s3):
    name = new_bucket_name()
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture
def request_log(s3rver):
    """The session server's request log, cleared for this test."""
    s3rver.clear_log()
    return s3rver


def sign_headers(endpoint, method, path, body=b"", headers=None, region=REGION,
                 access_key=ACCESS_KEY, secret_key=SECRET_KEY, unsigned_payload=False):
    """SigV4 headers (Host included) for a request sent to endpoint + path
    with path and query exactly as given."""
    req = AWSRequest(method=method, url=endpoint + path, data=body, headers=dict(headers or {}))
    if unsigned_payload:
        req.context["client_config"] = Config(s3={"payload_signing_enabled": False})
    S3SigV4Auth(Credentials(access_key, secret_key), "s3", region).add_auth(req)
    sent = dict(req.headers.items())
    sent.setdefault("Host", endpoint.split("//", 1)[1])
    return sent


@pytest.fixture
def raw(s3rver):
    """raw(method, path, ...) -> (status, headers, body): one SigV4-signed
    HTTP request whose path and query go on the wire exactly as given."""
    import http.client

    def request(method, path, body=b"", headers=None, endpoint=None, region=REGION,
                access_key=ACCESS_KEY, secret_key=SECRET_KEY, sign=True, timeout=30):
        endpoint = endpoint or s3rver.endpoint
        host = endpoint.split("//", 1)[1]
        if sign:
            sent = sign_headers(endpoint, method, path, body, headers, region, access_key, secret_key)
        else:
            sent = dict(headers or {}, Host=host)
        conn = http.client.HTTPConnection(host, timeout=timeout)
        try:
            conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            for k, v in sent.items():
                conn.putheader(k, v)
            if body and "Content-Length" not in sent:
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body if body else None)
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
        finally:
            conn.close()

    return request


@pytest.fixture(scope="session")
def tool():
    need(TOOL.is_file() and os.access(TOOL, os.X_OK), f"tool binary {TOOL} (build with meson/ninja)")
    return TOOL


@pytest.fixture
def cli(tool, s3rver, tmp_path):
    """cli(*args, ...) -> (returncode, stdout bytes, stderr text).

    Runs the tool with the test server's endpoint and credentials, HOME in a
    temp dir (no real ~/.aws) and no AWS_* / S3CACHEFS_* from the caller's
    environment. env entries override (None removes one); endpoint= points it
    elsewhere (e.g. the fault proxy). Always under a subprocess timeout.
    """
    home = tmp_path / "home"
    home.mkdir()

    def run(*args, input=None, timeout=120, env=None, endpoint=None, cwd=None):
        e = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "S3CACHEFS_"))}
        e.update(
            HOME=str(home),
            AWS_ACCESS_KEY_ID=ACCESS_KEY,
            AWS_SECRET_ACCESS_KEY=SECRET_KEY,
            S3CACHEFS_ENDPOINT=endpoint or s3rver.endpoint,
        )
        for k, v in (env or {}).items():
            if v is None:
                e.pop(k, None)
            else:
                e[k] = v
        p = subprocess.run(
            [str(tool), *[str(a) for a in args]],
            input=input if input is not None else b"",
            capture_output=True,
            env=e,
            timeout=timeout,
            cwd=str(cwd or tmp_path),
        )
        err = p.stderr.decode("utf-8", errors="replace")
        if SANITIZED:
            bad = [line for line in err.splitlines() if SANITIZER_RE.search(line)]
            assert not bad, f"sanitizer report from {args}:\n{err}"
        return p.returncode, p.stdout, err

    return run


@pytest.fixture
def proxy(s3rver):
    """A fault-injecting proxy in front of the session server."""
    p = FaultProxy("127.0.0.1", s3rver.port)
    p.start()
    yield p
    p.stop()


@pytest.fixture(scope="session")
def fuse_available():
    """For mount tests: /dev/fuse and fusermount3 must be there."""
    need(os.path.exists("/dev/fuse") and os.access("/dev/fuse", os.R_OK | os.W_OK), "/dev/fuse")
    need(shutil.which("fusermount3"), "fusermount3 (apt-get install fuse3)")
    return True


# ---- mounts (tests/integration/mount.py) ------------------------------------

DAEMON = BUILD_DIR / "src" / "s3cachefs"

# The option sets the core read tests run under.
READ_OPTION_SETS = {"raw": {}, "zlib": {"compress": "zlib"}}


@pytest.fixture(scope="session")
def daemon_bin():
    need(DAEMON.is_file() and os.access(DAEMON, os.X_OK), f"daemon binary {DAEMON} (build with meson/ninja)")
    return DAEMON


@pytest.fixture
def mount(daemon_bin, fuse_available, s3rver, tmp_path):
    """A factory of daemon runs on real FUSE mounts (see mount.py):
    mount(bucket, **options) -> Mount, mount.run(args) -> (rc, stderr).
    Teardown unmounts and kills everything it started and fails the test on
    unexpected error or sanitizer lines in any daemon log."""
    from mount import MountFactory  # not at the top: mount.py imports this file

    factory = MountFactory(daemon_bin, s3rver.endpoint, tmp_path)
    yield factory
    problems = factory.cleanup()
    if problems:
        pytest.fail("mount teardown:\n" + "\n".join(problems), pytrace=False)


@pytest.fixture(params=list(READ_OPTION_SETS), ids=list(READ_OPTION_SETS))
def read_opts(request):
    """Option set for the core read tests: default ("raw") and compress=zlib."""
    return dict(READ_OPTION_SETS[request.param])


@pytest.fixture
def make_tmpfs(tmp_path):
    """make_tmpfs(size) mounts a tmpfs of that size (root only) and returns
    its path; every one is unmounted at teardown."""
    need(os.geteuid() == 0, "root, to mount a tmpfs")
    made = []

    def make(size):
        path = tmp_path / f"tmpfs-{len(made)}"
        path.mkdir()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                           capture_output=True, timeout=30)
        need(r.returncode == 0, f"mount -t tmpfs: {r.stderr.decode(errors='replace').strip()}")
        made.append(path)
        return path

    yield make
    for path in made:
        r = subprocess.run(["umount", str(path)], capture_output=True, timeout=30)
        if r.returncode != 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)


@pytest.fixture
def small_tmpfs(make_tmpfs):
    """A 2 MiB tmpfs (root only), unmounted at teardown."""
    return make_tmpfs("2M")
