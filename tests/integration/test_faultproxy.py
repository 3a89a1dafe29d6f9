"""The fault proxy itself, driven by boto3 and raw sockets."""

import hashlib
import http.client
import http.server
import os
import socket
import threading
import time

import pytest
from botocore.exceptions import ClientError

from conftest import boto3_client
from faultproxy import FaultProxy, SilentServer, closed_port


def raw_get(port, path, headers=None):
    """GET over a fresh socket; returns (status line, headers, body bytes read until EOF/RST, error)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    req = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n"
    req += "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items()) + "\r\n"
    sock.sendall(req.encode())
    data = b""
    err = None
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except ConnectionResetError as e:
        err = e
    sock.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    hdrs = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return lines[0], hdrs, body, err


@pytest.fixture
def public_obj(s3, bucket):
    # s3rver serves unsigned requests, which lets raw sockets test framing
    data = os.urandom(100_000)
    s3.put_object(Bucket=bucket, Key="obj", Body=data)
    return bucket, data


def test_forwards_unchanged_with_keepalive(proxy, public_obj):
    bucket, data = public_obj
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    for _ in range(3):
        conn.request("GET", f"/{bucket}/obj")
        r = conn.getresponse()
        assert r.status == 200
        assert r.read() == data
    conn.close()
    assert [m for m, _, _ in proxy.log] == ["GET"] * 3
    assert sum(proxy.injected.values()) == 0


def test_short_sends_full_length_half_body(proxy, public_obj):
    bucket, data = public_obj
    proxy.add("short", method="GET")
    status, headers, body, err = raw_get(proxy.port, f"/{bucket}/obj")
    assert status.startswith("HTTP/1.1 200")
    assert int(headers["content-length"]) == len(data)
    assert body == data[: len(data) // 2]
    assert err is None
    assert proxy.injected["short"] == 1
    # the rule is used up
    status, _, body, _ = raw_get(proxy.port, f"/{bucket}/obj")
    assert body == data


def test_reset_sends_rst(proxy, public_obj):
    bucket, data = public_obj
    proxy.add("reset", method="GET", path="/obj")
    _, headers, body, err = raw_get(proxy.port, f"/{bucket}/obj")
    assert isinstance(err, ConnectionResetError)
    assert len(body) <= len(data) // 2
    assert proxy.injected["reset"] == 1


def test_slowdown_then_success_with_boto3(proxy, s3, bucket):
    proxy.add("503", count=2, method="PUT")
    client = boto3_client(proxy.endpoint, retries={"total_max_attempts": 3, "mode": "standard"})
    client.put_object(Bucket=bucket, Key="k", Body=b"v" * 10_000)
    assert proxy.injected["503"] == 2
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"v" * 10_000


def test_500_every_request(proxy, bucket):
    proxy.add("500", count=None)
    client = boto3_client(proxy.endpoint, retries={"total_max_attempts": 1})
    for _ in range(3):
        with pytest.raises(ClientError) as e:
            client.head_object(Bucket=bucket, Key="k")
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
    with pytest.raises(ClientError) as e:
        client.get_object(Bucket=bucket, Key="k")
    assert e.value.response["Error"]["Code"] == "InternalError"
    assert proxy.injected["500"] == 4


def test_delay(proxy, public_obj):
    bucket, data = public_obj
    proxy.add("delay=0.5", method="GET")
    t = time.monotonic()
    _, _, body, _ = raw_get(proxy.port, f"/{bucket}/obj")
    assert time.monotonic() - t >= 0.5
    assert body == data


def test_large_put_through_proxy(proxy, s3, bucket):
    data = os.urandom(6 * 1024 * 1024)
    client = boto3_client(proxy.endpoint)
    client.put_object(Bucket=bucket, Key="big", Body=data)
    got = s3.get_object(Bucket=bucket, Key="big")["Body"].read()
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()


def test_unknown_fault_rejected(proxy):
    with pytest.raises(ValueError):
        proxy.add("explode")


def test_silent_server_and_closed_port():
    server = SilentServer().start()
    try:
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=1)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        with pytest.raises(socket.timeout):
            sock.recv(1)
        sock.close()
    finally:
        server.stop()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", closed_port()), timeout=1)


# ---- rates ----------------------------------------------------------------------

def binomial_ok(k, n, p):
    """k successes out of n within 4 standard deviations of n*p."""
    sd = (n * p * (1 - p)) ** 0.5
    return abs(k - n * p) <= 4 * sd


class _Upstream(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    body = bytes(range(256)) * 64

    def do_GET(self):  # noqa: N802 - http.server's name
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def fast_upstream():
    """A tiny keep-alive HTTP server: the rate tests need many requests, fast."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    server.daemon_threads = True
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield server.server_address[1], _Upstream.body
    server.shutdown()
    server.server_close()
    t.join(5)


@pytest.mark.parametrize("fault", ["503", "500", "short", "reset", "delay"])
def test_rate_is_honoured_and_reproducible(fast_upstream, fault):
    port, data = fast_upstream
    bucket = "b"
    n, rate = 400, 0.1
    outcomes = []
    for _ in range(2):  # two proxies, same seed: the same requests get the fault
        p = FaultProxy("127.0.0.1", port).start()
        try:
            p.set_rate(fault, rate, seed=7, seconds=(0.0, 0.002))
            conn = None
            seen = []
            for _ in range(n):
                conn = conn or http.client.HTTPConnection("127.0.0.1", p.port, timeout=10)
                try:
                    conn.request("GET", f"/{bucket}/obj")
                    r = conn.getresponse()
                    body = r.read()
                    seen.append(r.status == 200 and body == data)
                except (http.client.HTTPException, OSError):
                    seen.append(False)
                    conn.close()
                    conn = None
            if conn:
                conn.close()
            injected = [f for _, _, f in p.log]
        finally:
            p.stop()
        assert len(injected) == n
        k = sum(1 for f in injected if f == fault)
        assert binomial_ok(k, n, rate), f"{fault}: {k} of {n} at rate {rate}"
        # what the client saw agrees with the log: a fault fails the request,
        # except latency, which only slows it
        if fault == "delay":
            assert all(seen)
        else:
            assert seen == [f is None for f in injected]
        outcomes.append(injected)
    assert outcomes[0] == outcomes[1]


def test_rate_zero_and_one(proxy, public_obj):
    bucket, data = public_obj
    proxy.set_rate("500", 0.0, seed=1)
    assert raw_get(proxy.port, f"/{bucket}/obj")[2] == data
    proxy.clear()
    proxy.set_rate("500", 1.0, seed=1)
    for _ in range(3):
        assert raw_get(proxy.port, f"/{bucket}/obj")[0].startswith("HTTP/1.1 500")
    assert proxy.injected["500"] == 3


def test_rate_filters_and_rules_first(proxy, public_obj):
    bucket, data = public_obj
    proxy.add("503", count=1)
    proxy.set_rate("500", 1.0, method="PUT")
    assert raw_get(proxy.port, f"/{bucket}/obj")[0].startswith("HTTP/1.1 503")
    assert raw_get(proxy.port, f"/{bucket}/obj")[2] == data  # a GET: the PUT rate does not apply
    assert dict(proxy.injected) == {"503": 1}


def test_rate_rejects_bad_values(proxy):
    with pytest.raises(ValueError):
        proxy.set_rate("explode", 0.1)
    with pytest.raises(ValueError):
        proxy.set_rate("500", 1.5)
    with pytest.raises(ValueError):
        proxy.set_rate("delay", 0.1, seconds=(0.3, 0.1))


@pytest.mark.parametrize("fault", ["short", "reset"])
def test_bodiless_answer_is_cut(proxy, s3, bucket, fault):
    # a PUT answers with no body: its head is cut, though the server stored it
    proxy.add(fault, method="PUT")
    client = boto3_client(proxy.endpoint, retries={"total_max_attempts": 1})
    with pytest.raises(Exception):  # noqa: B017 - botocore's connection errors vary
        client.put_object(Bucket=bucket, Key="cut", Body=b"x" * 1000)
    assert proxy.injected[fault] == 1
    assert s3.get_object(Bucket=bucket, Key="cut")["Body"].read() == b"x" * 1000


# ---- dark mode ------------------------------------------------------------------

def test_dark_blackholes_then_light_restores(proxy, public_obj):
    bucket, data = public_obj
    client = boto3_client(proxy.endpoint, retries={"total_max_attempts": 1}, connect_timeout=1, read_timeout=1)
    assert client.get_object(Bucket=bucket, Key="obj")["Body"].read() == data
    proxy.go_dark()
    assert proxy.dark
    # a new connection is accepted (TCP handshake done) but nothing answers
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=1)
    sock.sendall(f"GET /{bucket}/obj HTTP/1.1\r\nHost: 127.0.0.1:{proxy.port}\r\n\r\n".encode())
    with pytest.raises(socket.timeout):
        sock.recv(1)
    t = time.monotonic()
    with pytest.raises(Exception):  # noqa: B017 - botocore's ReadTimeoutError
        client.get_object(Bucket=bucket, Key="obj")
    assert time.monotonic() - t < 5
    assert proxy.stalled >= 2
    proxy.go_light()
    assert not proxy.dark
    # the request held in the dark is answered now, and new ones are too
    sock.settimeout(10)
    got = b""
    while b"\r\n\r\n" not in got:
        got += sock.recv(65536)
    assert got.startswith(b"HTTP/1.1 200")
    sock.close()
    assert client.get_object(Bucket=bucket, Key="obj")["Body"].read() == data


def test_dark_stalls_a_transfer_in_flight(proxy, s3, bucket):
    big = os.urandom(32 * 1024 * 1024)
    s3.put_object(Bucket=bucket, Key="big", Body=big)
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
    sock.sendall(f"GET /{bucket}/big HTTP/1.1\r\nHost: 127.0.0.1:{proxy.port}\r\n\r\n".encode())
    got = b""
    while len(got) < 1024 * 1024:
        chunk = sock.recv(1 << 16)
        assert chunk
        got += chunk
    proxy.go_dark()
    # drain what was already in flight (socket buffers), then it stalls
    sock.settimeout(0.5)
    with pytest.raises(socket.timeout):
        while True:
            chunk = sock.recv(1 << 16)
            assert chunk, "the body ended while dark"
            got += chunk
    head, _, body = got.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert len(body) < len(big)
    proxy.go_light()
    sock.settimeout(10)
    while len(body) < len(big):
        chunk = sock.recv(1 << 20)
        assert chunk
        body += chunk
    sock.close()
    assert hashlib.sha256(body).digest() == hashlib.sha256(big).digest()


def test_dark_refused_then_light_on_same_port(proxy, public_obj):
    bucket, data = public_obj
    port = proxy.port
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", f"/{bucket}/obj")
    assert conn.getresponse().read() == data
    proxy.go_dark("refused")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1)
    # the kept-alive connection was reset
    with pytest.raises((http.client.HTTPException, OSError)):
        conn.request("GET", f"/{bucket}/obj")
        conn.getresponse().read()
    conn.close()
    proxy.go_light()
    assert proxy.port == port
    assert raw_get(port, f"/{bucket}/obj")[2] == data


def test_dark_after_stalls_mid_body(proxy, s3, bucket):
    big = os.urandom(8 * 1024 * 1024)
    s3.put_object(Bucket=bucket, Key="big", Body=big)
    proxy.go_dark_after(3 * 1024 * 1024)
    assert not proxy.dark
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
    sock.sendall(f"GET /{bucket}/big HTTP/1.1\r\nHost: 127.0.0.1:{proxy.port}\r\n\r\n".encode())
    got = b""
    sock.settimeout(0.5)
    with pytest.raises(socket.timeout):
        while True:
            chunk = sock.recv(1 << 16)
            assert chunk, "the body ended"
            got += chunk
    assert proxy.dark
    _, _, body = got.partition(b"\r\n\r\n")
    assert 3 * 1024 * 1024 <= len(body) < len(big)
    proxy.go_light()
    sock.settimeout(10)
    while len(body) < len(big):
        chunk = sock.recv(1 << 20)
        assert chunk
        body += chunk
    sock.close()
    assert body == big
