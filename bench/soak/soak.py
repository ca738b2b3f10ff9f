#!/usr/bin/env python3
"""Load tools of the soak and abuse harness (bench/soak/run.sh): the upstreams, the sampler
and phase 1. The floods of phases 2 to 4 are in floods.py.

Standard library only. Every command is bounded in count and in time, talks to the
address it is given (run.sh only ever passes 127.0.0.1) and prints one JSON object on
stdout (upstream and sample write nothing but their own files).

  upstream   echo server (TCP) and a tiny HTTP/1.1 server answering 200 "hello"
  sample     RSS (VmRSS), open descriptors and CPU ticks of a PID every 250 ms, as JSONL
  soak       N connections through a TCP proxy to the echo upstream: most idle, S streaming
             deterministic bytes verified byte for byte on the way back
  churn      add / update / remove byte-preserving toxics at a fixed rate; call latencies
  probe      GET /version on a kept-alive connection at a fixed interval (and optionally
             on a fresh connection every so often); latencies and status codes
"""

import argparse
import asyncio
import json
import os
import random
import socket
import sys
import threading
import time

# Helpers shared with the other benchmarks: percentiles, the kept-alive API client, the
# descriptor limit.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
from dtbench import Api, raise_nofile, summary_ms  # noqa: E402

UA = b"downtime-soak/1"


def out(obj):
    print(json.dumps(obj), flush=True)


# ------------------------------------------------------------------ upstream
class Echo(asyncio.Protocol):
    """Writes back what it reads; stops reading while its write buffer is full, so a slow
    reader on the other side slows the sender instead of growing memory here."""

    def connection_made(self, transport):
        self.t = transport
        transport.set_write_buffer_limits(high=256 * 1024)

    def data_received(self, data):
        self.t.write(data)

    def pause_writing(self):
        self.t.pause_reading()

    def resume_writing(self):
        self.t.resume_reading()


class Hello(asyncio.Protocol):
    """Answers every request head with 200 "hello" (keep-alive); request bodies are not
    expected (the harness only sends GETs)."""

    ANSWER = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"

    def connection_made(self, transport):
        self.t, self.buf = transport, b""

    def data_received(self, data):
        self.buf += data
        while b"\r\n\r\n" in self.buf:
            _, _, self.buf = self.buf.partition(b"\r\n\r\n")
            self.t.write(self.ANSWER)


def cmd_upstream(a):
    raise_nofile()

    async def main():
        loop = asyncio.get_running_loop()
        s1 = await loop.create_server(Echo, a.host, a.echo_port, backlog=4096)
        s2 = await loop.create_server(Hello, a.host, a.http_port, backlog=4096)
        async with s1, s2:
            await asyncio.sleep(a.max_seconds)  # bounded: run.sh stops it by PID before

    asyncio.run(main())


# ------------------------------------------------------------------ sample
def proc_reading(pid):
    with open(f"/proc/{pid}/status") as f:
        rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return rss, fds, int(fields[11]) + int(fields[12])  # utime + stime, clock ticks


def cmd_sample(a):
    next_t, end = time.monotonic(), time.monotonic() + a.max_seconds
    with open(a.out, "a") as f:
        while time.monotonic() < end and not os.path.exists(a.stop_file):
            try:
                rss, fds, cpu = proc_reading(a.pid)
            except (OSError, StopIteration):
                break  # the server is gone: run.sh reports it
            f.write(json.dumps({"t": round(time.time(), 3), "rss_kib": rss, "fds": fds, "cpu": cpu}) + "\n")
            f.flush()
            next_t += a.interval
            time.sleep(max(0.0, next_t - time.monotonic()))


# ------------------------------------------------------------------ soak
P = 1_048_573  # pattern period (a prime): a shifted or reordered stream cannot line up again


class Conn:
    __slots__ = ("i", "r", "w", "base", "sent", "recv", "verified", "bad_at", "died", "space")

    def __init__(self, i, r, w):
        self.i, self.r, self.w = i, r, w
        self.base = (i * 7919) % P  # each connection starts at its own place in the pattern
        self.sent = self.recv = self.verified = 0
        self.bad_at = None  # stream offset of the first byte that did not match
        self.died = None
        self.space = asyncio.Event()


def first_diff(a, b):
    return next((k for k in range(min(len(a), len(b))) if a[k] != b[k]), min(len(a), len(b)))


async def soak_main(a):
    nofile = raise_nofile()
    pattern = memoryview(random.Random(a.seed).randbytes(P) * 2)  # doubled: slices wrap freely
    t0 = time.monotonic()
    stop = asyncio.Event()
    errors = []
    sem = asyncio.Semaphore(256)  # connects in flight: stay well inside the listen backlog

    def check(c, data):
        """Count what came back at stream offset c.recv; remember the first mismatch."""
        n, off = len(data), (c.base + c.recv) % P
        if c.bad_at is None:
            if data == pattern[off:off + n]:
                c.verified += n
            else:
                c.bad_at = c.recv + first_diff(data, pattern[off:off + n])
                errors.append(f"conn {c.i}: mismatch at stream offset {c.bad_at}")
        c.recv += n

    async def ping(c, n=16):
        """n pattern bytes there and back: the connection carries data end to end."""
        off = (c.base + c.sent) % P
        c.w.write(pattern[off:off + n])
        c.sent += n
        check(c, await asyncio.wait_for(c.r.readexactly(n), a.timeout))

    async def open_one(i):
        async with sem:
            r, w = await asyncio.wait_for(asyncio.open_connection(a.host, a.port), a.timeout)
        c = Conn(i, r, w)
        await ping(c)
        return c

    opened = await asyncio.gather(*(open_one(i) for i in range(a.conns)), return_exceptions=True)
    conns = [c for c in opened if isinstance(c, Conn)]
    failed = [repr(e) for e in opened if not isinstance(e, Conn)]
    open_s = time.monotonic() - t0
    streams = conns[: a.streams]
    idle = conns[a.streams:]
    if a.ready_file:
        with open(a.ready_file, "w") as f:
            json.dump({"opened": len(conns), "failed": len(failed)}, f)

    chunk = a.chunk
    interval = chunk / (a.rate_kbps * 1000.0)  # per connection: rate_kbps KB/s

    async def writer(c):
        nxt = time.monotonic() + random.random() * interval  # spread the streams' ticks
        while not stop.is_set() and c.died is None:
            while c.sent - c.recv >= a.window and not stop.is_set() and c.died is None:
                c.space.clear()
                try:
                    await asyncio.wait_for(c.space.wait(), 0.5)
                except asyncio.TimeoutError:
                    pass
            if stop.is_set() or c.died is not None:
                break
            off = (c.base + c.sent) % P
            c.w.write(pattern[off:off + chunk])
            c.sent += chunk
            await c.w.drain()
            nxt += interval
            now = time.monotonic()
            if nxt < now - 1.0:
                nxt = now  # behind by more than a second (a slow toxic): no burst to catch up
            await asyncio.sleep(max(0.0, nxt - now))

    async def reader(c):
        while True:
            try:
                data = await c.r.read(65536)
            except (OSError, asyncio.IncompleteReadError) as e:
                c.died = repr(e)
                break
            if not data:
                c.died = "EOF"
                break
            check(c, data)
            c.space.set()
            if stop.is_set() and c.recv >= c.sent:
                break  # drained: everything written came back

    async def watch_stop():
        end = t0 + a.max_seconds
        while not os.path.exists(a.stop_file) and time.monotonic() < end:
            await asyncio.sleep(0.2)
        stop.set()

    t_stream = time.monotonic()
    readers = [asyncio.create_task(reader(c)) for c in streams]
    writers = [asyncio.create_task(writer(c)) for c in streams]
    await watch_stop()
    stream_s = time.monotonic() - t_stream
    _, stuck = await asyncio.wait(writers, timeout=a.drain_timeout) if writers else (set(), set())
    for t in stuck:  # a write that cannot finish (the proxy stopped reading): counted as lost
        t.cancel()
    # Drain: what is still in the proxy (a bandwidth toxic removed at the very end has
    # flushed by now) must come back, within drain_timeout.
    t_drain = time.monotonic()
    while time.monotonic() - t_drain < a.drain_timeout:
        if all(c.recv >= c.sent or c.died for c in streams):
            break
        await asyncio.sleep(0.05)
    pending = [c for c in streams if c.recv < c.sent and not c.died]
    for t in readers:
        t.cancel()
    drain_s = time.monotonic() - t_drain
    # The idle connections, after the whole soak: still working end to end?
    checks = await asyncio.gather(*(ping(c) for c in idle if c.died is None), return_exceptions=True)
    idle_failed = [repr(e) for e in checks if isinstance(e, BaseException)]
    for c in conns:
        c.w.close()

    sent = sum(c.sent for c in conns)
    recv = sum(c.recv for c in conns)
    verified = sum(c.verified for c in conns)
    died = [c for c in streams if c.died and not (c.died == "EOF" and c.recv >= c.sent)]
    out({
        "nofile": nofile, "target": a.conns, "opened": len(conns), "open_failed": len(failed),
        "first_open_errors": failed[:3], "open_seconds": round(open_s, 2),
        "streams": len(streams), "idle": len(idle), "stream_seconds": round(stream_s, 2),
        "drain_seconds": round(drain_s, 2), "drain_incomplete": len(pending),
        "bytes_sent": sent, "bytes_received": recv, "bytes_verified": verified,
        "bytes_lost": sent - recv,  # written but never came back
        "bytes_bad": recv - verified,  # came back, but from the first mismatch on
        "conns_mismatch": sum(c.bad_at is not None for c in conns),
        "streams_died": len(died), "first_deaths": [f"conn {c.i}: {c.died}" for c in died[:3]],
        "first_errors": errors[:5],
        "idle_checked": len(checks), "idle_failed": len(idle_failed), "first_idle_errors": idle_failed[:3],
        "stream_MBps": round(verified / stream_s / 1e6, 2) if stream_s else None,
    })


def cmd_soak(a):
    asyncio.run(soak_main(a))


# ------------------------------------------------------------------ churn
# Only toxics that must not lose or reorder bytes (a latency with jitter must still keep
# order). The attribute choices are small enough that a removal always flushes in time.
def toxic_attributes(kind, rng):
    if kind == "latency":
        lat = rng.choice((1, 5, 20))
        return {"latency": lat, "jitter": rng.choice((0, lat // 2, lat))}
    if kind == "bandwidth":
        return {"rate": rng.choice((64, 512, 4096))}  # KB/s, per connection
    size = rng.choice((64, 256, 1024))
    return {"average_size": size, "size_variation": size // 2, "delay": rng.choice((0, 20, 100))}


def cmd_churn(a):
    api = Api(a.api, a.timeout)
    rng = random.Random(a.seed)
    base = f"/proxies/{a.proxy}/toxics"
    present = set()
    lat = {"add": [], "update": [], "remove": []}
    errors = []
    period = 1.0 / a.rate
    t_start = time.monotonic()
    nxt, end = t_start, t_start + a.seconds

    per_sec = {}  # second of the run -> slowest call in it, ms: a stall at start or steady?

    def do(op, method, path, body, want):
        try:
            st, payload, ns = api.call(method, path, body)
        except Exception as e:  # noqa: BLE001 - OSError, timeouts, http.client errors: latency = the timeout
            errors.append(f"{op} {path}: {e!r}")
            lat[op].append(int(a.timeout * 1e9))
            return False
        lat[op].append(ns)
        sec = int(time.monotonic() - t_start)
        per_sec[sec] = max(per_sec.get(sec, 0), round(ns / 1e6, 1))
        if st != want:
            errors.append(f"{op} {path}: {st} {payload[:160]!r}")
        return st == want

    while time.monotonic() < end:
        now = time.monotonic()
        if now < nxt:
            time.sleep(nxt - now)
        nxt = max(nxt + period, time.monotonic() - period)  # a fixed rate, no catch-up burst
        kind = rng.choice(("latency", "bandwidth", "slicer"))
        stream = rng.choice(("upstream", "downstream"))
        name = f"{kind}_{stream}"
        if name not in present:
            body = {"name": name, "type": kind, "stream": stream, "attributes": toxic_attributes(kind, rng)}
            if do("add", "POST", base, body, 200):
                present.add(name)
        elif rng.random() < 0.5:
            if do("remove", "DELETE", f"{base}/{name}", None, 204):
                present.discard(name)
        else:
            do("update", "POST", f"{base}/{name}", {"attributes": toxic_attributes(kind, rng)}, 200)
    secs = time.monotonic() - t_start
    for name in sorted(present):  # leave the proxy as it was found
        do("remove", "DELETE", f"{base}/{name}", None, 204)
    every = lat["add"] + lat["update"] + lat["remove"]
    out({
        "ops": len(every), "seconds": round(secs, 2), "rate": round(len(every) / secs, 1),
        "all_ms": summary_ms(every), **{f"{k}_ms": summary_ms(v) for k, v in lat.items()},
        "errors": len(errors), "first_errors": errors[:5],
        "per_second_max_ms": [per_sec.get(k, 0) for k in range(int(secs) + 1)],
    })


# ------------------------------------------------------------------ probe
def cmd_probe(a):
    api = Api(a.api, a.timeout)
    host, _, port = a.api.rpartition(":")
    t_start = time.monotonic()
    end = t_start + a.seconds
    keep, slow, errors = [], [], []
    per_sec = {}  # second of the run -> slowest /version in it, ms
    fresh, fresh_status = [], {}
    halt = threading.Event()

    def fresh_loop():
        """GET /version on a new connection each time: can a new client get in?"""
        while not halt.is_set():
            t0 = time.perf_counter_ns()
            try:
                s = socket.create_connection((host, int(port)), timeout=a.fresh_timeout)
                s.sendall(b"GET /version HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: " + UA + b"\r\nConnection: close\r\n\r\n")
                first = s.recv(64)
                s.close()
                code = first.split(b" ", 2)[1].decode() if first.startswith(b"HTTP/") else "closed"
            except OSError as e:
                code = type(e).__name__
            fresh.append(time.perf_counter_ns() - t0)
            fresh_status[code] = fresh_status.get(code, 0) + 1
            halt.wait(a.fresh_interval)

    th = None
    if a.fresh_interval > 0:
        th = threading.Thread(target=fresh_loop, daemon=True)
        th.start()
    nxt = t_start
    while time.monotonic() < end and not (a.stop_file and os.path.exists(a.stop_file)):
        now = time.monotonic()
        if now < nxt:
            time.sleep(nxt - now)
        nxt = max(nxt + a.interval, time.monotonic() - a.interval)
        try:
            st, _, ns = api.call("GET", "/version")
            if st != 200:
                errors.append(f"status {st}")
        except Exception as e:  # noqa: BLE001 - OSError, timeouts, http.client errors
            errors.append(repr(e))
            ns = int(a.timeout * 1e9)
        keep.append(ns)
        sec = int(time.monotonic() - t_start)
        per_sec[sec] = max(per_sec.get(sec, 0), round(ns / 1e6, 1))
        slow.append((ns, round(time.monotonic() - t_start, 2)))
        slow = sorted(slow, reverse=True)[:5]  # the five slowest, with when they happened
    halt.set()
    if th:
        th.join(a.fresh_timeout + 1)
    res = {"seconds": round(time.monotonic() - t_start, 2), "version_ms": summary_ms(keep),
           "slowest": [[round(ns / 1e6, 2), t] for ns, t in slow],
           "per_second_max_ms": [per_sec.get(k, 0) for k in range(max(per_sec, default=0) + 1)],
           "errors": len(errors), "first_errors": errors[:5]}
    if th:
        res.update(fresh_ms=summary_ms(fresh), fresh_status=fresh_status)
    out(res)


def subcommands(doc):
    """A parser and `cmd(name, fn, **args)`, which adds a subcommand with --host, --timeout
    and one flag per keyword (its default; None makes it required): shared by both tools."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)

    def cmd(name, fn, **args):
        p = sub.add_parser(name)
        p.add_argument("--host", default="127.0.0.1")
        p.add_argument("--timeout", type=float, default=10.0)
        for k, v in args.items():
            kw = {"required": True} if v is None else {"default": v, "type": type(v)}
            p.add_argument("--" + k.replace("_", "-"), **kw)
        p.set_defaults(fn=fn)

    return ap, cmd


def main():
    ap, cmd = subcommands(__doc__)

    cmd("upstream", cmd_upstream, echo_port=0, http_port=0, max_seconds=900.0)
    cmd("sample", cmd_sample, pid=0, out=None, stop_file=None, interval=0.25, max_seconds=900.0)
    cmd("soak", cmd_soak, port=0, conns=10000, streams=1000, rate_kbps=64.0, chunk=4096, window=65536,
        seed=1, ready_file="", stop_file=None, max_seconds=300.0, drain_timeout=15.0)
    cmd("churn", cmd_churn, api=None, proxy=None, rate=100.0, seconds=60.0, seed=1)
    cmd("probe", cmd_probe, api=None, interval=0.02, seconds=60.0, stop_file="", fresh_interval=0.0,
        fresh_timeout=2.0)
    a = ap.parse_args()
    a.fn(a)


if __name__ == "__main__":
    sys.exit(main())
