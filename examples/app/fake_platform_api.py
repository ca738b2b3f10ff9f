#!/usr/bin/env python3
"""A tiny stand-in for the real platform API, to put behind a downtime pass-through proxy.

GET /account answers 200 with a JSON account; anything else is a JSON 404.
Port: --port or PORT (default 5001; 0 picks a free one). Binds 127.0.0.1.
The first line on stdout is `listening on http://127.0.0.1:PORT`.
Python 3 standard library only.
"""

import argparse
import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

COUNTER = {"n": 0}
COUNTER_LOCK = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    server_version = "fake-platform-api/1"
    protocol_version = "HTTP/1.1"  # keep-alive, so downtime's upstream pool is exercised
    # Headers and body are two writes; without this, Nagle + delayed ACK add ~40 ms to
    # every answer on a reused keep-alive connection.
    disable_nagle_algorithm = True
    quiet = False

    def _send(self, status, payload):
        body = (json.dumps(payload) + "\n").encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):  # noqa: N802 - http.server's naming
        path = self.path.split("?", 1)[0]
        if path == "/account":
            with COUNTER_LOCK:
                COUNTER["n"] += 1
                served = COUNTER["n"]
            self._send(
                200,
                {
                    "id": "01234567-89ab-cdef-0123-456789abcdef",
                    "email": "dev@example.com",
                    "name": "Example Developer",
                    "plan": "standard",
                    "served": served,
                },
            )
        else:
            self._send(404, {"id": "not_found", "message": "Not found."})

    def log_message(self, fmt, *args):
        if not self.quiet:
            sys.stderr.write(f"[fake-api] {self.address_string()} {fmt % args}\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("PORT", "5001")),
        help="port on 127.0.0.1 (0 = any free one); env PORT, default 5001",
    )
    parser.add_argument("--quiet", action="store_true", help="no access log on stderr")
    args = parser.parse_args(argv)
    Handler.quiet = args.quiet
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    host, port = server.server_address[:2]
    print(f"listening on http://{host}:{port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
