#!/usr/bin/env python3
"""A small web app that depends on a third-party "platform API".

It exists to rehearse outages with downtime: point PLATFORM_API_URL at a downtime proxy (or
stand-in), inject faults, and watch what the app does. Python 3 standard library only.

Endpoints:
  GET /healthz  always 200; never touches the dependency.
  GET /account  calls $PLATFORM_API_URL/account and answers JSON.

Two behaviours behind one flag (--mode or APP_MODE):
  resilient  the outbound call has a short deadline (--timeout-ms / APP_TIMEOUT_MS, default
             300 ms). On an error, a timeout, a 5xx or a 429 it answers 200 with the last
             good value (or, before any success, a clear placeholder) and "degraded": true.
             After a 429 or 503 carrying Retry-After it stops calling until that time passes.
  naive      no timeout at all: it blocks as long as the dependency does, and a failure of
             the dependency becomes a 502 (upstream answered an error) or a 500 (no answer).

Port: --port or PORT (default 5000; 0 picks a free one). Binds 127.0.0.1. The first line on
stdout is `listening on http://127.0.0.1:PORT`.
"""

import argparse
import json
import os
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DEFAULT_API_URL = "http://127.0.0.1:9/"  # the discard port: nothing answers there

# Ignore http_proxy/https_proxy from the environment: the dependency is always called
# directly, so the faults seen are the ones downtime injects.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class Dependency:
    """The platform API client, with the state the resilient mode keeps."""

    def __init__(self, base_url, mode, timeout_s):
        self.base_url = base_url.rstrip("/")
        self.mode = mode
        self.timeout_s = timeout_s
        self.lock = threading.Lock()
        self.last_good = None  # (value, unix time)
        self.pause_until = 0.0  # honours Retry-After from a 429/503

    def url(self, path):
        return self.base_url + path

    # -- naive ---------------------------------------------------------------------------

    def account_naive(self):
        """Blocks as long as the dependency does; errors propagate."""
        try:
            with OPENER.open(self.url("/account")) as resp:  # no timeout
                value = json.loads(resp.read().decode("utf-8"))
            return 200, {"account": value, "degraded": False, "source": "live"}
        except urllib.error.HTTPError as e:
            body = e.read().decode("utf-8", "replace")
            return 502, {
                "error": f"platform API answered {e.code}",
                "upstream_body": body,
            }
        except Exception as e:  # noqa: BLE001 - a naive app lets everything through
            return 500, {"error": f"{type(e).__name__}: {e}"}

    # -- resilient -----------------------------------------------------------------------

    def _fetch(self, out):
        """Runs in a worker thread: one call with a socket timeout; result into `out`."""
        try:
            with OPENER.open(self.url("/account"), timeout=self.timeout_s) as resp:
                out["value"] = json.loads(resp.read().decode("utf-8"))
        except urllib.error.HTTPError as e:
            out["status"] = e.code
            out["retry_after"] = e.headers.get("Retry-After")
            e.close()
        except Exception as e:  # noqa: BLE001
            out["error"] = f"{type(e).__name__}: {e}"

    def account_resilient(self):
        """Answers within the deadline (plus a little) whatever the dependency does."""
        now = time.time()
        with self.lock:
            paused = now < self.pause_until
        if paused:
            return self._fallback("backing off after Retry-After")

        # The socket timeout bounds each read; the join bounds the whole exchange, so a
        # body trickling in byte by byte cannot hold the request either.
        out = {}
        worker = threading.Thread(target=self._fetch, args=(out,), daemon=True)
        worker.start()
        worker.join(self.timeout_s)
        if worker.is_alive():
            return self._fallback(f"timed out after {int(self.timeout_s * 1000)} ms")
        if "value" in out:
            with self.lock:
                self.last_good = (out["value"], time.time())
            return 200, {"account": out["value"], "degraded": False, "source": "live"}
        if "status" in out:
            status = out["status"]
            retry_after = out.get("retry_after")
            if status in (429, 503) and retry_after and retry_after.isdigit():
                with self.lock:
                    self.pause_until = time.time() + int(retry_after)
            return self._fallback(f"platform API answered {status}")
        return self._fallback(out.get("error", "unknown error"))

    def _fallback(self, reason):
        with self.lock:
            cached = self.last_good
        if cached is not None:
            value, at = cached
            return 200, {
                "account": value,
                "degraded": True,
                "source": "cache",
                "cached_age_s": round(time.time() - at, 1),
                "reason": reason,
            }
        return 200, {
            "account": None,
            "degraded": True,
            "source": "none",
            "message": "Account details are temporarily unavailable; please try again shortly.",
            "reason": reason,
        }

    def account(self):
        if self.mode == "naive":
            return self.account_naive()
        return self.account_resilient()


def make_handler(dep, quiet):
    class Handler(BaseHTTPRequestHandler):
        server_version = "example-app/1"
        disable_nagle_algorithm = True

        def _send(self, status, payload):
            body = (json.dumps(payload) + "\n").encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("X-App-Mode", dep.mode)
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):  # noqa: N802 - http.server's naming
            path = self.path.split("?", 1)[0]
            if path == "/healthz":
                self._send(200, {"status": "ok", "mode": dep.mode})
            elif path == "/account":
                started = time.monotonic()
                status, payload = dep.account()
                payload["elapsed_ms"] = int((time.monotonic() - started) * 1000)
                self._send(status, payload)
            else:
                self._send(404, {"error": "not found"})

        def log_message(self, fmt, *args):
            if not quiet:
                sys.stderr.write(f"[{dep.mode}] {self.address_string()} {fmt % args}\n")

    return Handler


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--mode",
        choices=("resilient", "naive"),
        default=os.environ.get("APP_MODE", "resilient"),
        help="resilient (timeout + cached fallback) or naive (no timeout, errors propagate); "
        "env APP_MODE, default resilient",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("PORT", "5000")),
        help="port on 127.0.0.1 (0 = any free port); env PORT, default 5000",
    )
    parser.add_argument(
        "--timeout-ms",
        type=int,
        default=int(os.environ.get("APP_TIMEOUT_MS", "300")),
        help="resilient mode's deadline for the dependency; env APP_TIMEOUT_MS, default 300",
    )
    parser.add_argument("--quiet", action="store_true", help="no access log on stderr")
    args = parser.parse_args(argv)
    if args.mode not in ("resilient", "naive"):
        parser.error(f"APP_MODE must be resilient or naive, not {args.mode!r}")

    api_url = os.environ.get("PLATFORM_API_URL") or DEFAULT_API_URL
    dep = Dependency(api_url, args.mode, args.timeout_ms / 1000.0)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), make_handler(dep, args.quiet))
    server.daemon_threads = True
    host, port = server.server_address[:2]
    print(f"listening on http://{host}:{port}", flush=True)
    budget = f"{args.timeout_ms} ms" if args.mode == "resilient" else "none"
    print(f"mode={args.mode} PLATFORM_API_URL={api_url} timeout={budget}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
