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

Rates give each request the fault with a probability, drawn from a seeded
random.Random (one per rate; the same request sequence gets the same faults):

    proxy.set_rate("503", 0.10, seed=1)              # also "500", "reset", "short"
    proxy.set_rate("delay", 0.10, seed=1, seconds=(0.05, 0.3))  # uniform latency

Count rules are looked at first, then the rates in the order they were set.
When an answer has no body (a PUT, a HEAD), "reset" and "short" send none of
it: the server did the work, the client never learns it.

Dark mode makes the server unreachable until go_light():

    proxy.go_dark()             # blackhole: connections are accepted, nothing
                                # is answered, transfers in flight stall
    proxy.go_dark("refused")    # the listener is closed (connections refused)
                                # and open client connections are reset
    proxy.go_light()            # everything forwards again, same port
    proxy.go_dark_after(2 << 20)  # dark once 2 MiB more of answer bodies
                                  # went through: a transfer stalls mid-body

proxy.stalled counts the requests that waited in the dark.

SilentServer accepts TCP connections and never answers, and closed_port()
names a loopback port with nothing listening: endpoints for timeout tests.
"""

import collections
import random
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


class _Rate:
    def __init__(self, fault, fraction, seed, method, path, seconds):
        self.fault = fault
        self.fraction = fraction
        self.rng = random.Random(seed)
        self.method = method
        self.path = path
        self.seconds = seconds  # (low, high) for "delay"

    def draw(self, method, target):
        """A _Rule to apply to this request, or None. Called under the lock."""
        if self.method and self.method.upper() != method:
            return None
        if self.path and self.path not in target:
            return None
        if self.rng.random() >= self.fraction:
            return None
        seconds = self.rng.uniform(*self.seconds) if self.fault == "delay" else None
        return _Rule(self.fault, None, None, None, seconds)


class FaultProxy:
    def __init__(self, upstream_host, upstream_port, host="127.0.0.1"):
        self.upstream = (upstream_host, upstream_port)
        self.host = host
        self.port = None
        self.injected = collections.Counter()
        self.log = []
        self._rules = []
        self._rates = []
        self.stalled = 0
        self._refused = False
        self._dark_after = None  # (body bytes left, how), under _lock
        self._light = threading.Event()
        self._light.set()
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

    def set_rate(self, fault, fraction, seed=0, method=None, path=None, seconds=(0.05, 0.3)):
        """Each matching request independently gets fault with probability
        fraction (0..1), from random.Random(seed). fault: '503', '500',
        'reset', 'short' or 'delay' (uniform in seconds=(low, high))."""
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}")
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"fraction {fraction!r} is not within 0..1")
        low, high = seconds
        if not 0 <= low <= high:
            raise ValueError(f"bad delay range {seconds!r}")
        with self._lock:
            self._rates.append(_Rate(fault, fraction, seed, method, path, (low, high)))

    def clear(self):
        """Drops every rule and rate (dark mode is left as it is)."""
        with self._lock:
            self._rules.clear()
            self._rates.clear()

    def count(self, fault):
        """How many times fault has been injected so far."""
        with self._lock:
            return self.injected[fault]

    def requests(self):
        """How many requests the proxy has seen."""
        with self._lock:
            return len(self.log)

    def _match(self, method, target):
        with self._lock:
            found = None
            for rule in self._rules:
                if rule.matches(method, target):
                    if rule.remaining is not None:
                        rule.remaining -= 1
                    found = rule
                    break
            for rate in self._rates if found is None else ():
                found = rate.draw(method, target)
                if found:
                    break
            if found:
                self.injected[found.fault] += 1
            self.log.append((method, target, found.fault if found else None))
            return found

    # -- dark mode ----------------------------------------------------------
    @property
    def dark(self):
        return not self._light.is_set()

    def go_dark(self, how="blackhole"):
        """Makes the server unreachable: 'blackhole' (accepted, never
        answered; transfers in flight stall) or 'refused' (listener closed,
        open client connections reset)."""
        if how not in ("blackhole", "refused"):
            raise ValueError(f"unknown dark mode {how!r}")
        self._refused = how == "refused"
        self._light.clear()
        if how == "refused":
            with self._lock:
                listener, self._listener = self._listener, None
                socks = list(self._socks)
            if listener:
                try:
                    listener.shutdown(socket.SHUT_RDWR)  # stops listening now
                except OSError:
                    pass
                listener.close()
            for s in socks:
                try:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def go_dark_after(self, nbytes, how="blackhole"):
        """Goes dark (as go_dark(how)) once nbytes more bytes of answer
        bodies have been relayed: the transfer that crosses it stalls."""
        if how not in ("blackhole", "refused"):
            raise ValueError(f"unknown dark mode {how!r}")
        with self._lock:
            self._dark_after = (nbytes, how)

    def _relayed(self, n):
        with self._lock:
            if self._dark_after is None:
                return
            left, how = self._dark_after
            left -= n
            self._dark_after = (left, how) if left > 0 else None
        if left <= 0:
            self.go_dark(how)

    def go_light(self):
        """Everything forwards again (a closed listener is reopened on the
        same port)."""
        self._refused = False
        if self._listener is None:
            self._listen(self.port)
            self._spawn(self._accept_loop, self._listener)
        self._light.set()

    def _wait_light(self):
        """Stalls while dark; raises _Closed when the proxy stops."""
        if self._light.is_set():
            return
        if self._refused:
            raise _Closed("refused while dark")
        with self._lock:
            self.stalled += 1
        while not self._light.wait(0.05):
            if self._stop.is_set():
                raise _Closed("proxy stopped while dark")

    # -- life cycle ---------------------------------------------------------
    def start(self):
        self._listen(0)
        self._spawn(self._accept_loop, self._listener)
        return self

    def _listen(self, port):
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, port))
        listener.listen(64)
        listener.settimeout(0.1)
        self.port = listener.getsockname()[1]
        self._listener = listener

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
        with self._lock:
            listener, self._listener = self._listener, None
        if listener:
            listener.close()
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

    def _accept_loop(self, listener):
        while not self._stop.is_set():
            try:
                client, _ = listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            client.settimeout(None)
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # head and body go apart
            self._spawn(self._serve, self._track(client))

    # -- one client connection ----------------------------------------------
    def _serve(self, client):
        rfile = client.makefile("rb")
        try:
            while not self._stop.is_set():
                head = _read_head(rfile)
                if head is None:
                    return
                self._wait_light()
                (method, target, version), headers = _parse_head(head)
                rule = self._match(method, target)
                if (_header(headers, "expect") or "").lower() == "100-continue":
                    client.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
                body = _read_body(rfile, headers)
                self._wait_light()
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
        up.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
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
            self._wait_light()
            if fault in ("short", "reset"):
                body = ufile.read(length) if length is not None else self._rest(ufile, headers)
                # no body to cut: send no answer at all
                if body:
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
                    self._wait_light()
                    client.sendall(chunk)
                    left -= len(chunk)
                    self._relayed(len(chunk))
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
