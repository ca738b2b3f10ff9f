"""Starts one downtime server for the session and points toxiproxy-python at it.

toxiproxy-python talks to `APIConsumer.host`/`APIConsumer.port` (class attributes,
default 127.0.0.1:8474); `Toxiproxy().update_api_consumer(host, port)` changes them,
so the suite runs against a server on a free port.

Environment:
  DOWNTIME_BIN  path of the downtime binary (default: <repo>/target/debug/downtime)
  DOWNTIME_API  host:port of an already running server to use instead of starting one
"""

import os
import pathlib
import re
import subprocess
import tempfile
import time

import pytest
import requests

from toxiproxy import Toxiproxy
from toxiproxy.api import APIConsumer

import helpers

REPO = pathlib.Path(__file__).resolve().parents[3]
STARTUP_TIMEOUT = 30.0


def _version_answers(host, port):
    try:
        r = requests.get("http://%s:%d/version" % (host, port), timeout=1)
        return r.status_code == 200
    except requests.RequestException:
        return False


def _bound_port(log_path):
    """The port from the line `downtime serve` prints once bound, or None before it."""
    text = pathlib.Path(log_path).read_text(errors="replace")
    match = re.search(r"^downtime API listening on http://127\.0\.0\.1:(\d+)$", text, re.M)
    return int(match.group(1)) if match else None


def _start_server():
    """Starts `downtime serve` on port 0 (the kernel picks: no race for a free port) with
    `--db :memory:` (no history file in the repo); returns (proc, port, log path)."""
    binary = os.environ.get("DOWNTIME_BIN", str(REPO / "target" / "debug" / "downtime"))
    if not os.path.exists(binary):
        pytest.exit("downtime binary not found at %s (run cargo build -p downtime)" % binary, 2)
    log = tempfile.NamedTemporaryFile(prefix="downtime-py-", suffix=".log", delete=False)
    proc = subprocess.Popen(
        [binary, "serve", "--host", "127.0.0.1", "--port", "0", "--db", ":memory:"],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline and proc.poll() is None:
        port = _bound_port(log.name)
        if port is not None and _version_answers("127.0.0.1", port):
            return proc, port, log.name
        time.sleep(0.05)
    # Did not come up: stop exactly this process.
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=10)
    log.close()
    last_log = pathlib.Path(log.name).read_text(errors="replace")
    pytest.exit("downtime did not answer GET /version within %ss; log:\n%s" % (STARTUP_TIMEOUT, last_log), 2)


@pytest.fixture(scope="session")
def api():
    """(host, port) of the API under test; the server is ours unless DOWNTIME_API is set."""
    external = os.environ.get("DOWNTIME_API")
    if external:
        host, port = external.rsplit(":", 1)
        Toxiproxy().update_api_consumer(host, int(port))
        yield host, int(port)
        return
    proc, port, log_path = _start_server()
    Toxiproxy().update_api_consumer("127.0.0.1", port)
    try:
        yield "127.0.0.1", port
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        os.unlink(log_path)


@pytest.fixture
def tp(api):
    """A toxiproxy-python client on a server with no proxies (cleaned before and after)."""
    client = Toxiproxy()
    assert (APIConsumer.host, APIConsumer.port) == api
    client.destroy_all()
    yield client
    client.destroy_all()


@pytest.fixture
def base_url(api):
    return "http://%s:%d" % api


@pytest.fixture
def echo():
    server = helpers.EchoServer()
    yield server
    server.close()


@pytest.fixture
def greeter():
    server = helpers.GreeterServer()
    yield server
    server.close()


@pytest.fixture
def sink():
    server = helpers.SinkServer()
    yield server
    server.close()
