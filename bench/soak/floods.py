#!/usr/bin/env python3
"""Floods of the soak and abuse harness (bench/soak/run.sh), phases 2 to 4.

Standard library only; bounded in count and in time; one JSON object on stdout.

  flood      idle or slowloris connections against one listener, held until the server
             closes them or --hold seconds pass; when (and how) the server closed each
  ttlflood   toxic updates, each with a new ttl, over a few keep-alive connections; then a
             last short ttl, to check that the expiry timer still fires
  rlflood    requests with an X-Key header (distinct keys or one key): the stand-in for wrk
             when wrk is not installed
"""

import argparse
import asyncio
import json
import sys
import time

from soak import UA, out, raise_nofile, subcommands, summary_ms

# ------------------------------------------------------------------ raw async HTTP/1.1
async def read_response(reader):
    """Status, body and whether the server closes, of one HTTP/1.1 response."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length, chunked, close = 0, False, False
    for line in lines[1:]:
        k, _, v = line.partition(b":")
        k, v = k.strip().lower(), v.strip().lower()
        if k == b"content-length":
            length = int(v)
        elif k == b"transfer-encoding" and b"chunked" in v:
            chunked = True
        elif k == b"connection" and v == b"close":
            close = True
    if not chunked:
        return status, await reader.readexactly(length), close
    body = b""
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        body += await reader.readexactly(size + 2)
        if size == 0:
            return status, body, close


def request(method, path, port, body=None, extra=b""):
    data = json.dumps(body).encode() if body is not None else b""
    head = (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n").encode() + b"User-Agent: " + UA + b"\r\n" + extra
    if body is not None:
        head += f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n".encode()
    return head + b"\r\n" + data


# ------------------------------------------------------------------ flood
SLOW_HEAD = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: downtime-soak/1\r\nX-Slow: " + b"a" * 4000


async def flood_main(a):
    nofile = raise_nofile()
    t0 = time.monotonic()
    sem = asyncio.Semaphore(a.concurrency)
    conns, failed = [], []  # conns: [t_open, t_close, first bytes, writer, bytes trickled]

    async def one():
        async with sem:
            try:
                r, w = await asyncio.wait_for(asyncio.open_connection(a.host, a.port), a.timeout)
            except (OSError, asyncio.TimeoutError) as e:
                failed.append(repr(e))
                return
        c = [time.monotonic() - t0, None, b"", w, 0]
        conns.append(c)
        if a.mode == "slowloris":
            w.write(SLOW_HEAD[:1])
            c[4] = 1
        try:
            while True:  # until the server closes (or the hold ends: cancelled)
                data = await r.read(4096)
                if not c[2]:
                    c[2] = data[:40]
                if not data:
                    break
        except OSError as e:
            c[2] = c[2] or type(e).__name__.encode()
        c[1] = time.monotonic() - t0

    tasks = [asyncio.create_task(one()) for _ in range(a.count)]
    while len(conns) + len(failed) < a.count and time.monotonic() - t0 < a.timeout * 3:
        await asyncio.sleep(0.05)
    open_s = time.monotonic() - t0
    end = time.monotonic() + a.hold
    tick = time.monotonic()
    while time.monotonic() < end and any(c[1] is None for c in conns):
        await asyncio.sleep(0.05)
        if a.mode == "slowloris" and time.monotonic() - tick >= 1.0:
            tick += 1.0
            for c in conns:  # one more header byte per open connection, each second
                if c[1] is None and not c[3].is_closing() and c[4] < len(SLOW_HEAD):
                    c[3].write(SLOW_HEAD[c[4]:c[4] + 1])
                    c[4] += 1
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for c in conns:
        c[3].close()

    closed = [c for c in conns if c[1] is not None]
    life = [int((c[1] - c[0]) * 1e9) for c in closed]
    held = [x for x in life if x >= 1e9]  # not turned away at once: closed by a timeout
    answers = {}
    for c in closed:
        first = c[2]
        key = first.split(b" ", 2)[1].decode() if first.startswith(b"HTTP/") else (first.decode() or "no answer")
        answers[key] = answers.get(key, 0) + 1
    # most connections open at once (opens and closes as events)
    ev = sorted([(c[0], 1) for c in conns] + [(c[1], -1) for c in closed])
    peak = cur = 0
    for _, d in ev:
        cur += d
        peak = max(peak, cur)
    out({
        "mode": a.mode, "port": a.port, "nofile": nofile, "count": a.count,
        "opened": len(conns), "connect_failed": len(failed), "first_connect_errors": failed[:3],
        "open_seconds": round(open_s, 2), "peak_open": peak,
        "closed_by_server": len(closed), "still_open_at_end": len(conns) - len(closed),
        "closed_within_1s": sum(x < 1e9 for x in life),
        "lifetime_s": {k: (round(v / 1e3, 3) if isinstance(v, float) else v) for k, v in summary_ms(life).items()},
        "held_lifetime_s": {k: (round(v / 1e3, 3) if isinstance(v, float) else v) for k, v in summary_ms(held).items()},
        "last_close_s": round(max((c[1] for c in closed), default=0), 2),
        "answers": answers,
        "bytes_trickled_max": max((c[4] for c in conns), default=0),
    })


def cmd_flood(a):
    asyncio.run(flood_main(a))


# ------------------------------------------------------------------ ttlflood
async def ttl_main(a):
    host, _, port = a.api.rpartition(":")
    port = int(port)
    base = f"/proxies/{a.proxy}/toxics"
    lat, errors = [], []
    deadline = time.monotonic() + a.max_seconds
    per = a.updates // a.conns

    async def worker(k):
        name = f"ttl_{k}"
        r, w = await asyncio.open_connection(host, port)

        async def call(method, path, body):
            nonlocal r, w
            w.write(request(method, path, port, body))
            st, payload, close = await asyncio.wait_for(read_response(r), a.timeout)
            if close:
                w.close()
                r, w = await asyncio.open_connection(host, port)
            return st, payload

        st, payload = await call("POST", base, {"name": name, "type": "latency", "attributes": {"latency": 1}, "ttl": a.ttl})
        if st != 200:
            errors.append(f"create {name}: {st} {payload[:160]!r}")
            return 0
        done = 0
        for j in range(per):
            if time.monotonic() > deadline:
                break
            # a new ttl each time: every update replaces the toxic's expiry timer
            body = {"attributes": {"latency": 1 + j % 50}, "ttl": a.ttl + j % 1000}
            t0 = time.perf_counter_ns()
            try:
                st, payload = await call("POST", f"{base}/{name}", body)
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError) as e:
                errors.append(f"update {name}: {e!r}")
                break
            lat.append(time.perf_counter_ns() - t0)
            done += 1
            if st != 200:
                errors.append(f"update {name}: {st} {payload[:160]!r}")
        # last update: a short ttl, to check below that the timer still fires
        await call("POST", f"{base}/{name}", {"ttl": a.final_ttl})
        w.close()
        return done

    t0 = time.monotonic()
    counts = await asyncio.gather(*(worker(k) for k in range(a.conns)), return_exceptions=True)
    secs = time.monotonic() - t0
    await asyncio.sleep(a.final_ttl / 1000 + 2.0)
    r, w = await asyncio.open_connection(host, port)
    w.write(request("GET", base, port))
    st, payload, _ = await read_response(r)
    w.close()
    left = [t["name"] for t in json.loads(payload)] if st == 200 else None
    n = sum(c for c in counts if isinstance(c, int))
    out({
        "updates": n, "seconds": round(secs, 2), "rate": round(n / secs, 1), "update_ms": summary_ms(lat),
        "errors": len(errors) + sum(isinstance(c, BaseException) for c in counts),
        "first_errors": (errors + [repr(c) for c in counts if isinstance(c, BaseException)])[:5],
        "final_ttl_ms": a.final_ttl, "toxics_left_after_final_ttl": left,
    })


def cmd_ttlflood(a):
    asyncio.run(ttl_main(a))


# ------------------------------------------------------------------ rlflood (no wrk)
async def rl_main(a):
    raise_nofile()
    statuses, sent = {}, [0]
    deadline = time.monotonic() + a.max_seconds

    async def worker(k):
        r, w = await asyncio.open_connection(a.host, a.port)
        while sent[0] < a.count and time.monotonic() < deadline:
            sent[0] += 1
            key = f"k{sent[0]}" if a.keys == "distinct" else "k0"
            w.write(request("GET", "/", a.port, extra=f"X-Key: {key}\r\n".encode()))
            st, _, close = await read_response(r)
            statuses[st] = statuses.get(st, 0) + 1
            if close:
                w.close()
                r, w = await asyncio.open_connection(a.host, a.port)
        w.close()

    t0 = time.monotonic()
    await asyncio.gather(*(worker(k) for k in range(a.conns)), return_exceptions=True)
    secs = time.monotonic() - t0
    n = sum(statuses.values())
    out({"requests": n, "seconds": round(secs, 2), "rps": round(n / secs, 1), "statuses": statuses, "keys": a.keys})


def cmd_rlflood(a):
    asyncio.run(rl_main(a))


def main():
    ap, cmd = subcommands(__doc__)

    cmd("flood", cmd_flood, port=0, mode="idle", count=1000, hold=11.0, concurrency=256)
    cmd("ttlflood", cmd_ttlflood, api=None, proxy=None, updates=100000, conns=4, ttl=60000, final_ttl=1000,
        max_seconds=120.0)
    cmd("rlflood", cmd_rlflood, port=0, count=1000000, keys="distinct", conns=32, max_seconds=60.0)
    a = ap.parse_args()
    a.fn(a)


if __name__ == "__main__":
    sys.exit(main())
