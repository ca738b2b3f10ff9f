"""Small TCP servers and socket helpers for the toxiproxy-python compatibility suite.

Everything binds to 127.0.0.1 only, and every blocking call carries a timeout.
"""

import socket
import threading
import time

# Upper bound for any single wait in these tests; generous on purpose.
LONG = 10.0


def free_port():
    """A port that was free on 127.0.0.1 a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def closed_port():
    """A port on 127.0.0.1 where (very probably) nothing listens."""
    return free_port()


class _Server:
    """A threaded TCP server on 127.0.0.1:0; subclasses implement handle(conn)."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.addr = "127.0.0.1:%d" % self.port
        self.accepted = 0
        self._stop = threading.Event()
        self._conns = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self):
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            conn.settimeout(LONG)
            with self._lock:
                self.accepted += 1
                self._conns.append(conn)
            threading.Thread(target=self._run, args=(conn,), daemon=True).start()

    def _run(self, conn):
        try:
            self.handle(conn)
        except OSError:
            pass
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def handle(self, conn):
        raise NotImplementedError

    def close(self):
        self._stop.set()
        self.sock.close()
        with self._lock:
            for c in self._conns:
                try:
                    c.close()
                except OSError:
                    pass
        self._thread.join(timeout=2)


class EchoServer(_Server):
    """Echoes every byte back until the client closes."""

    def handle(self, conn):
        while True:
            data = conn.recv(65536)
            if not data:
                return
            conn.sendall(data)


class GreeterServer(_Server):
    """Sends a greeting on connect, then closes the connection."""

    GREETING = b"hello from upstream\n"

    def handle(self, conn):
        conn.sendall(self.GREETING)


class SinkServer(_Server):
    """Records everything each client sends; never answers."""

    def __init__(self):
        self.received = []  # one bytearray per connection
        self.closed = []  # one threading.Event per connection: set when the client side closed
        super().__init__()

    def handle(self, conn):
        buf = bytearray()
        done = threading.Event()
        with self._lock:
            self.received.append(buf)
            self.closed.append(done)
        try:
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                buf.extend(data)
        finally:
            done.set()


def connect(port, timeout=LONG):
    """Opens a TCP connection to 127.0.0.1:port."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def port_of(listen):
    """Port number of a `host:port` listen string."""
    return int(listen.rsplit(":", 1)[1])


def recv_exactly(sock, n, timeout=LONG):
    """Reads n bytes or fails; returns the bytes."""
    deadline = time.monotonic() + timeout
    buf = bytearray()
    while len(buf) < n:
        remaining = deadline - time.monotonic()
        assert remaining > 0, "timed out after %r bytes of %d" % (len(buf), n)
        sock.settimeout(remaining)
        chunk = sock.recv(n - len(buf))
        assert chunk, "connection closed after %d of %d bytes" % (len(buf), n)
        buf.extend(chunk)
    return bytes(buf)


def read_until_closed(sock, timeout=LONG):
    """Reads until EOF, reset or timeout.

    Returns (data, outcome, elapsed) where outcome is "eof", "reset" or "timeout".
    """
    start = time.monotonic()
    deadline = start + timeout
    buf = bytearray()
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return bytes(buf), "timeout", time.monotonic() - start
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            return bytes(buf), "timeout", time.monotonic() - start
        except ConnectionResetError:
            return bytes(buf), "reset", time.monotonic() - start
        if not chunk:
            return bytes(buf), "eof", time.monotonic() - start
        buf.extend(chunk)


def round_trip(port, payload=b"ping", sock=None):
    """Sends payload through an echo proxy and times the echo. Returns seconds."""
    own = sock is None
    if own:
        sock = connect(port)
    try:
        start = time.monotonic()
        sock.sendall(payload)
        got = recv_exactly(sock, len(payload))
        elapsed = time.monotonic() - start
        assert got == payload
        return elapsed
    finally:
        if own:
            sock.close()


def assert_refused(port):
    """A connection to 127.0.0.1:port is refused (proxy down)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(LONG)
    try:
        err = s.connect_ex(("127.0.0.1", port))
    finally:
        s.close()
    assert err != 0, "connection to %d unexpectedly succeeded" % port


def wait_until(predicate, timeout=LONG, interval=0.05):
    """Polls predicate until it is truthy or the timeout passes; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)
