"""The fault proxy itself, driven by boto3 and raw sockets."""

import hashlib
import http.client
import os
import socket
import time

import pytest
from botocore.exceptions import ClientError

from conftest import boto3_client
from faultproxy import SilentServer, closed_port


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
