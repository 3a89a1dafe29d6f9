"""A fault-injecting HTTP/1.1 proxy for the integration tests.

FaultProxy listens on a free loopback port and forwards every request to an
upstream S3 server byte for byte (request line, headers including Host, which
SigV4 signs, and body), one upstream connection per request, while the client
side keeps its connection alive. Rules decide which requests get a fault:

    proxy.add("503", count=2, method="PUT")          # S3 SlowDown, not forwarded
    proxy.add("500", count=None)                      # InternalError, every request
    proxy.add("reset", method="GET", path="/bkt/k")   # half the body, then RST
    proxy.add("short", count=2, method="GET")         # full Content-Length, half the body, FIN
    proxy.add("delay=1.5", method="GET")              # wait before forwarding

The first rule that matches a request and has count left (None: unlimited)
is used up by one. proxy.injected counts the faults injected by name, and
proxy.log lists (method, target, fault-or-None) for every request seen.

SilentServer accepts TCP connections and never answers, and closed_port()
names a loopback port with nothing listening: endpoints for timeout tests.
"""

import collections
import socket
import struct
import threading
import time
import uuid

FAULTS = ("503", "500", "reset", "short", "delay")

_ERRORS = {
    "503": (503, "Slow Down", "SlowDown", "Please reduce your request rate."),
    "500": (500, "Internal Server Error", "InternalError", "We encountered an internal error. Please try again."),
}


class _Closed(Exception):
    """The peer closed the connection."""


def _read_head(f):
    """Reads up to and including the blank line; None on a clean EOF."""
    lines = []
    while True:
        line = f.readline(65537)
        if not line:
            if lines:
                raise _Closed("eof inside a message head")
            return None
        if not lines and line in (b"\r\n", b"\n"):
            continue  # stray CRLF between messages (RFC 9112 2.2)
        lines.append(line)
        if line in (b"\r\n", b"\n"):
            return b"".join(lines)


def _parse_head(head):
    lines = head.decode("latin-1").split("\r\n")
    start = lines[0].split(" ", 2)
    headers = []
    for line in lines[1:]:
        if not line:
            break
        name, _, value = line.partition(":")
        headers.append((name.strip().lower(), value.strip()))
    return start, headers


def _header(headers, name):
    for k, v in headers:
        if k == name:
            return v
    return None


def _read_exact(f, n):
    data = f.read(n)
    if len(data) != n:
        raise _Closed(f"eof after {len(data)} of {n} body bytes")
    return data


def _read_chunked(f):
    """Reads a chunked body; returns its raw framing, trailers included."""
    out = []
    while True:
        line = f.readline(65537)
        if not line:
            raise _Closed("eof in chunked body")
        out.append(line)
        size = int(line.split(b";")[0].strip() or b"0", 16)
        if size == 0:
            while True:
                t = f.readline(65537)
                if not t:
                    raise _Closed("eof in chunked trailer")
                out.append(t)
                if t in (b"\r\n", b"\n"):
                    return b"".join(out)
        out.append(_read_exact(f, size + 2))


def _read_body(f, headers):
    te = (_header(headers, "transfer-encoding") or "").lower()
    if "chunked" in te:
        return _read_chunked(f)
    n = int(_header(headers, "content-length") or 0)
    return _read_exact(f, n) if n else b""


class _Rule:
    def __init__(self, fault, count, method, path, seconds):
        self.fault = fault
        self.remaining = count
        self.method = method
        self.path = path
        self.seconds = seconds

    def matches(self, method, target):
        if self.remaining is not None and self.remaining <= 0:
            return False
        if self.method and self.method.upper() != method:
            return False
        return not self.path or self.path in target


class FaultProxy:
    def __init__(self, upstream_host, upstream_port, host="127.0.0.1"):
        self.upstream = (upstream_host, upstream_port)
        self.host = host
        self.port = None
        self.injected = collections.Counter()
        self.log = []
        self._rules = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._listener = None
        self._threads = []
        self._socks = set()

    @property
    def endpoint(self):
        return f"http://{self.host}:{self.port}"

    # -- configuration ------------------------------------------------------
    def add(self, fault, count=1, method=None, path=None):
        """Adds a rule. fault: '503', '500', 'reset', 'short' or 'delay=SECONDS'."""
        seconds = None
        if fault.startswith("delay="):
            fault, seconds = "delay", float(fault.split("=", 1)[1])
        if fault not in FAULTS or (fault == "delay" and seconds is None):
            raise ValueError(f"unknown fault {fault!r}")
        with self._lock:
            self._rules.append(_Rule(fault, count, method, path, seconds))

    def clear(self):
        with self._lock:
            self._rules.clear()

    def _match(self, method, target):
        with self._lock:
            for rule in self._rules:
                if rule.matches(method, target):
                    if rule.remaining is not None:
                        rule.remaining -= 1
                    self.injected[rule.fault] += 1
                    self.log.append((method, target, rule.fault))
                    return rule
            self.log.append((method, target, None))
            return None

    # -- life cycle ---------------------------------------------------------
    def start(self):
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((self.host, 0))
        self._listener.listen(64)
        self._listener.settimeout(0.1)
        self.port = self._listener.getsockname()[1]
        self._spawn(self._accept_loop)
        return self

    def stop(self):
        self._stop.set()
        with self._lock:
            socks = list(self._socks)
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in list(self._threads):
            t.join(timeout=5)
        if self._listener:
            self._listener.close()
        for s in socks:
            s.close()
        alive = [t for t in self._threads if t.is_alive()]
        assert not alive, f"fault proxy threads still running: {alive}"

    def _spawn(self, fn, *args):
        t = threading.Thread(target=fn, args=args, daemon=True)
        self._threads.append(t)
        t.start()

    def _track(self, s):
        with self._lock:
            self._socks.add(s)
        return s

    def _untrack(self, s):
        with self._lock:
            self._socks.discard(s)
        s.close()

    def _accept_loop(self):
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            client.settimeout(None)
            self._spawn(self._serve, self._track(client))

    # -- one client connection ----------------------------------------------
    def _serve(self, client):
        rfile = client.makefile("rb")
        try:
            while not self._stop.is_set():
                head = _read_head(rfile)
                if head is None:
                    return
                (method, target, version), headers = _parse_head(head)
                rule = self._match(method, target)
                if (_header(headers, "expect") or "").lower() == "100-continue":
                    client.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
                body = _read_body(rfile, headers)
                close = (_header(headers, "connection") or "").lower() == "close" or version == "HTTP/1.0"
                fault = rule.fault if rule else None
                if fault in _ERRORS:
                    self._send_error(client, fault, method, close)
                elif fault == "delay" and self._stop.wait(rule.seconds):
                    return
                elif not self._forward(client, rfile, method, head + body, fault):
                    return
                if close:
                    return
        except (_Closed, OSError, ValueError, IndexError):
            return
        finally:
            rfile.close()
            self._untrack(client)

    def _send_error(self, client, fault, method, close):
        status, reason, code, message = _ERRORS[fault]
        rid = uuid.uuid4().hex[:16].upper()
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{code}</Code><Message>{message}</Message>"
            f"<RequestId>{rid}</RequestId><HostId>faultproxy</HostId></Error>"
        ).encode()
        head = (
            f"HTTP/1.1 {status} {reason}\r\n"
            "Content-Type: application/xml\r\n"
            f"Content-Length: {len(body)}\r\n"
            f"x-amz-request-id: {rid}\r\n"
            f"Date: {time.strftime('%a, %d %b %Y %H:%M:%S GMT', time.gmtime())}\r\n"
            f"Connection: {'close' if close else 'keep-alive'}\r\n\r\n"
        ).encode()
        client.sendall(head if method == "HEAD" else head + body)

    def _forward(self, client, rfile, method, request, fault):
        """Relays one exchange; False when the client connection is done."""
        up = self._track(socket.create_connection(self.upstream, timeout=60))
        ufile = up.makefile("rb")
        try:
            up.sendall(request)
            while True:
                head = _read_head(ufile)
                if head is None:
                    raise _Closed("upstream closed before answering")
                (_, status, _), headers = _parse_head(head)
                if not status.startswith("1"):
                    break  # skip interim answers (100 Continue)
            if method == "HEAD" or status in ("204", "304"):
                length = 0
            elif _header(headers, "content-length") is not None and "chunked" not in (
                _header(headers, "transfer-encoding") or ""
            ).lower():
                length = int(_header(headers, "content-length"))
            else:
                length = None  # chunked or close-delimited: buffered below
            if fault in ("short", "reset"):
                body = ufile.read(length) if length is not None else self._rest(ufile, headers)
                client.sendall(head + body[: len(body) // 2])
                if fault == "reset":
                    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                return False
            client.sendall(head)
            if length is None:
                client.sendall(self._rest(ufile, headers))
                if "chunked" not in (_header(headers, "transfer-encoding") or "").lower():
                    return False  # close-delimited
            else:
                left = length
                while left:
                    chunk = ufile.read(min(left, 1 << 16))
                    if not chunk:
                        raise _Closed("upstream closed inside a body")
                    client.sendall(chunk)
                    left -= len(chunk)
            return (_header(headers, "connection") or "").lower() != "close"
        finally:
            ufile.close()
            self._untrack(up)

    @staticmethod
    def _rest(ufile, headers):
        if "chunked" in (_header(headers, "transfer-encoding") or "").lower():
            return _read_chunked(ufile)
        return ufile.read()


class SilentServer:
    """Accepts TCP connections and never answers (nor reads)."""

    def __init__(self, host="127.0.0.1"):
        self.host = host
        self.port = None
        self.accepted = 0
        self._stop = threading.Event()
        self._conns = []
        self._listener = None
        self._thread = None

    @property
    def endpoint(self):
        return f"http://{self.host}:{self.port}"

    def start(self):
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind((self.host, 0))
        self._listener.listen(64)
        self._listener.settimeout(0.1)
        self.port = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def _loop(self):
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self._conns.append(conn)
            self.accepted += 1

    def stop(self):
        self._stop.set()
        self._thread.join(timeout=5)
        self._listener.close()
        for c in self._conns:
            c.close()


def closed_port(host="127.0.0.1"):
    """A loopback port with nothing listening (connections are refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]
