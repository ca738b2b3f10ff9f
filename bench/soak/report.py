#!/usr/bin/env python3
"""Summary of one bench/soak/run.sh run: reads the results directory (meta.json,
marks.jsonl, samples.jsonl and each phase's JSON), prints a readable summary with the
targets of issue 10 (met / MISSED) and writes result.json next to them.

usage: report.py RESULTS_DIR
"""

import json
import os
import sys
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")
FLOODS = [(lst, mode) for mode in ("idle", "slowloris") for lst in ("api", "status", "http")]
LISTENER = {"api": "control API", "status": "status listener", "http": "HTTP proxy"}


def load(d, name):
    try:
        with open(os.path.join(d, name)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def lines(d, name):
    try:
        with open(os.path.join(d, name)) as f:
            return [json.loads(x) for x in f if x.strip()]
    except OSError:
        return []


def readings(samples, marks, phase):
    """RSS / FDs before (last sample at the start), peak (start to end), after (last sample
    at the "after" mark, AFTER_SECS past the end), and the server's CPU use over the load."""
    m = {x["event"]: x["t"] for x in marks if x["phase"] == phase}
    if not {"start", "end", "after"} <= m.keys() or not samples:
        return None
    before = [s for s in samples if s["t"] <= m["start"]] or samples[:1]
    during = [s for s in samples if m["start"] <= s["t"] <= m["end"]] or before[-1:]
    after = [s for s in samples if s["t"] <= m["after"]]
    b, a = before[-1], after[-1]
    nudged = [s for s in samples if s["t"] <= m["nudged"]][-1] if "nudged" in m else a
    secs = max(1e-3, m["end"] - m["start"])
    cpu_end = [s for s in samples if s["t"] <= m["end"]][-1]["cpu"]
    r = {
        "rss_mib": [round(b["rss_kib"] / 1024, 1), round(max(s["rss_kib"] for s in during) / 1024, 1),
                    round(a["rss_kib"] / 1024, 1)],
        "fds": [b["fds"], max(s["fds"] for s in during), a["fds"]],
        "rss_mib_nudged": round(nudged["rss_kib"] / 1024, 1),
        "seconds": round(secs, 1),
        "server_cpu_pct": round((cpu_end - b["cpu"]) / CLK_TCK / secs * 100, 1),
        "marks": m,
    }
    if "distinct" in m and "distinct_end" in m:  # the rate-limit run with distinct keys
        win = [s for s in samples if m["distinct"] <= s["t"] <= m["distinct_end"]]
        if win:
            r["distinct_peak_rss_mib"] = round(max(s["rss_kib"] for s in win) / 1024, 1)
    return r


def fd_kinds(d, name):
    """Descriptor kinds of an `ls -l /proc/PID/fd` listing: socket, eventpoll, a file path..."""
    kinds = {}
    try:
        with open(os.path.join(d, name)) as f:
            for line in f:
                if " -> " in line:
                    t = line.rstrip().split(" -> ", 1)[1]
                    t = "socket" if t.startswith("socket:") else t.replace("anon_inode:", "").strip("[]")
                    kinds[t] = kinds.get(t, 0) + 1
    except OSError:
        return None
    return kinds


def fd_diff(d, before, after):
    a, b = fd_kinds(d, before), fd_kinds(d, after)
    if a is None or b is None:
        return ""
    delta = {k: b.get(k, 0) - a.get(k, 0) for k in set(a) | set(b)}
    return ", ".join(f"{v:+d} {k}" for k, v in sorted(delta.items()) if v)


OURS = {"downtime", "python3", "python", "wrk", "top", "taskset", "timeout", "nice", "curl", "bash", "sleep"}


def other_busy(d, t0, threshold=10.0):
    """Processes other than the harness's at >= threshold % CPU in top's 5 s snapshots:
    {name: (snapshots, max %)} and [(epoch of the snapshot, [(name, %)])]. top prints local
    clock times: they are placed on the day of t0 (the run's first mark)."""
    seen, snaps, cur = {}, [], None
    day = time.mktime(time.localtime(t0)[:3] + (0, 0, 0, 0, 0, -1))
    try:
        with open(os.path.join(d, "top.txt")) as f:
            for line in f:
                if line.startswith("top - "):
                    h, m, s = (int(x) for x in line.split()[2].split(":"))
                    t = day + h * 3600 + m * 60 + s
                    cur = (t + 86400 if t < t0 - 43200 else t, [])  # past midnight
                    snaps.append(cur)
                    continue
                cols = line.split()
                if len(cols) >= 12 and cols[0].isdigit() and len(snaps) > 1:  # the first is since boot
                    try:
                        cpu = float(cols[8])
                    except ValueError:
                        continue
                    name = " ".join(cols[11:])[:30]
                    if cpu >= threshold and cols[11] not in OURS:
                        n, mx = seen.get(name, (0, 0.0))
                        seen[name] = (n + 1, max(mx, cpu))
                        cur[1].append((name, cpu))
    except OSError:
        return None, []
    return seen, snaps[1:]


def busy_during(snaps, start, end):
    """The other processes busy in the snapshots between start and end (5 s of slack)."""
    found = {}
    for t, procs in snaps:
        if start - 5 <= t <= end + 5:
            for name, cpu in procs:
                found[name] = max(found.get(name, 0.0), cpu)
    return found


def ms(s, keys=("p50", "p99", "max")):
    if not s or not s.get("n"):
        return "-"
    return " / ".join(f"{s[k]:.2f}" for k in keys) + f" ms (n={s['n']})"


def verdict(ok):
    return "n/a" if ok is None else ("met" if ok else "MISSED")


def main():
    d = sys.argv[1]
    meta = load(d, "meta.json") or {}
    marks, samples = lines(d, "marks.jsonl"), lines(d, "samples.jsonl")
    res = {"meta": meta, "phases": {}, "targets": []}
    out = []
    p = out.append

    def target(name, ok, detail, phase=None):
        others = ((res["phases"].get(phase) or {}).get("readings") or {}).get("other_busy") if phase else None
        if others:
            detail += " [DISTURBED: " + ", ".join(f"{k} {v:.0f} %" for k, v in others.items()) + "]"
        res["targets"].append({"target": name, "met": ok, "detail": detail, "disturbed": bool(others)})

    def read_line(phase, label):
        r = readings(samples, marks, phase)
        res["phases"].setdefault(phase, {})["readings"] = r
        if r:
            others = busy_during(snaps, r["marks"]["start"], r["marks"]["end"])
            r["other_busy"] = others
            if others:  # the server shares core 0 with whatever else runs unpinned
                p(f"  {label:<22} DISTURBED: " + ", ".join(f"{k} up to {v:.0f} % CPU" for k, v in others.items()))
            p(f"  {label:<22} RSS {r['rss_mib'][0]} / {r['rss_mib'][1]} / {r['rss_mib'][2]} ({r['rss_mib_nudged']}) MiB, "
              f"FDs {r['fds'][0]} / {r['fds'][1]} / {r['fds'][2]}, server CPU {r['server_cpu_pct']} % over {r['seconds']} s")
        return r

    p(f"downtime soak and abuse run, {meta.get('date', '?')}, HEAD {meta.get('git_head', '?')}, binary {meta.get('binary_commit', '?')}")
    p(f"  {meta.get('binary', '?')}; {meta.get('server_threads', '?')} server threads; nofile {meta.get('nofile')}; server on CPU {meta.get('server_cpu')}, load on CPU {meta.get('load_cpu')}")
    p(f"  load average: start {meta.get('loadavg_start')}, end {meta.get('loadavg_end')}")
    busy, snaps = other_busy(d, marks[0]["t"] if marks else time.time())
    if busy is not None:
        res["other_busy_processes"] = {k: {"snapshots": n, "max_cpu_pct": mx} for k, (n, mx) in busy.items()}
        desc = ", ".join(f"{k} in {n} (max {mx:.0f} %)" for k, (n, mx) in sorted(busy.items(), key=lambda x: -x[1][0])[:6])
        p(f"  other processes at >= 10 % CPU in {len(snaps)} top snapshots (every 5 s): {desc or 'none'}")
    p(f"  server alive at the end: {meta.get('server_alive')}; log: {meta.get('log_lines')} lines, "
      f"{meta.get('log_panics')} mentioning a panic")
    p("  (RSS and FDs are before / peak / 5 s after the load, RSS in parentheses after 1 s of /version")
    p("   calls that follow; CPU is % of one core over the load)")

    # ---- 1. soak
    soak, churn, probe = load(d, "soak.json"), load(d, "soak-churn.json"), load(d, "soak-probe.json")
    res["phases"]["soak"] = {"clients": soak, "churn": churn, "probe": probe}
    p("")
    p("1. Soak")
    if soak:
        p(f"  connections: {soak['opened']} of {soak['target']} opened ({soak['open_failed']} failed) in "
          f"{soak['open_seconds']} s: {soak['streams']} streaming, {soak['idle']} idle")
        p(f"  streamed {soak['stream_seconds']} s at {soak['stream_MBps']} MB/s verified; drained in {soak['drain_seconds']} s")
        p(f"  bytes sent {soak['bytes_sent']:,}, verified {soak['bytes_verified']:,}, lost {soak['bytes_lost']:,}, "
          f"mismatched {soak['bytes_bad']:,} ({soak['conns_mismatch']} connections with a mismatch)")
        p(f"  streams that died: {soak['streams_died']}; idle connections checked after the soak: "
          f"{soak['idle_checked']}, failed {soak['idle_failed']}")
        for e in soak["first_errors"] + soak["first_deaths"] + soak["first_open_errors"] + soak["first_idle_errors"]:
            p(f"    ! {e}")
    if churn:
        p(f"  toxic calls: {churn['ops']} in {churn['seconds']} s ({churn['rate']}/s), {churn['errors']} errors")
        for k in ("all", "add", "update", "remove"):
            p(f"    {k:<7} p50 / p99 / max {ms(churn[k + '_ms'])}")
        for e in churn["first_errors"]:
            p(f"    ! {e}")
    if probe:
        p(f"  GET /version every 20 ms: p50 / p99 / max {ms(probe['version_ms'])}, {probe['errors']} errors; "
          f"slowest {probe['slowest'][:3]} (ms, s into the soak)")
    for name, x in (("toxic calls", churn), ("/version", probe)):
        if x and x.get("per_second_max_ms"):
            p(f"  slowest {name} per second, ms: {' '.join(f'{v:.0f}' for v in x['per_second_max_ms'])}")
    read_line("soak", "server")
    if churn and probe:
        c, v = churn["all_ms"], probe["version_ms"]
        ok = bool(c.get("n")) and bool(v.get("n")) and max(c["p99"], v["p99"]) <= 10 and max(c["max"], v["max"]) <= 50
        target("API p99 <= 10 ms and max <= 50 ms during the soak", ok,
               f"toxic calls p99 {c.get('p99')} max {c.get('max')} ms; /version p99 {v.get('p99')} max {v.get('max')} ms",
               "soak")
    if soak:
        bad = soak["bytes_lost"] + soak["bytes_bad"]
        target("0 bytes lost or reordered", bad == 0 and soak["bytes_verified"] > 0,
               f"{soak['bytes_verified']:,} verified, {soak['bytes_lost']:,} lost, {soak['bytes_bad']:,} mismatched, "
               f"{soak['streams_died']} streams died")

    # ---- 2. floods
    p("")
    p("2. Floods (one listener at a time; /version kept-alive every 20 ms and fresh every 250 ms)")
    for lst, mode in FLOODS:
        label = f"flood-{lst}-{mode}"
        f, pr = load(d, label + ".json"), load(d, label + "-probe.json")
        res["phases"][label] = {"flood": f, "probe": pr}
        if not f:
            p(f"  {mode} -> {LISTENER[lst]}: no result")
            continue
        life = f["held_lifetime_s"]
        p(f"  {mode} -> {LISTENER[lst]}: {f['opened']} opened ({f['connect_failed']} failed) in {f['open_seconds']} s, "
          f"at most {f['peak_open']} open at once")
        p(f"    closed by the server: {f['closed_by_server']}: {f['closed_within_1s']} within 1 s of opening, "
          f"{life.get('n', 0)} after {life.get('min', 0)}-{life.get('max', 0)} s (median {life.get('p50', 0)} s); "
          f"still open at the end: {f['still_open_at_end']}; first bytes {f['answers']}")
        if pr:
            p(f"    /version kept-alive p50 / p99 / max {ms(pr['version_ms'])}, {pr['errors']} errors; "
              f"fresh connections {ms(pr.get('fresh_ms'))} {pr.get('fresh_status')}")
        read_line(label, "    server")
        if pr and mode == "idle":
            v, fr = pr["version_ms"], pr.get("fresh_ms") or {}
            fresh_ok = set((pr.get("fresh_status") or {}).keys()) <= {"200"} and fr.get("max", 1e9) < 50
            ok = bool(v.get("n")) and v["max"] < 50 and pr["errors"] == 0
            target(f"idle flood of the {LISTENER[lst]}: /version < 50 ms", ok and fresh_ok,
                   f"kept-alive max {v.get('max')} ms ({pr['errors']} errors); fresh connections max {fr.get('max')} ms, "
                   f"answers {pr.get('fresh_status')}" + ("" if fresh_ok or not ok else
                                                          " (met for a connection opened before the flood only)"),
                   label)

    # ---- 3. rate-limit keys
    p("")
    p("3. Rate-limit key flood (stand-in with rate_limit keyed by X-Key, never refusing; wrk -c64)")
    runs = {k: load(d, f"rl-{k}.json") for k in ("one-1", "distinct", "one-2")}
    res["phases"]["rl"] = {"runs": runs}
    for k, r in runs.items():
        if r:
            cpu = f", server CPU {r['server_cpu_ticks'] / r['clk_tck'] / max(1, r['requests']) * 1e6:.1f} us/request" \
                if "server_cpu_ticks" in r else ""
            p(f"  {k:<9} {r['requests']:>9,} requests at {r['rps']:,.0f} req/s{cpu} {r.get('socket_errors') or r.get('statuses', '')}")
    rl = read_line("rl", "server")
    if runs["distinct"] and runs["one-1"]:
        ones = [r["rps"] for r in (runs["one-1"], runs["one-2"]) if r]
        base = sum(ones) / len(ones)
        ratio = runs["distinct"]["rps"] / base if base else 0
        peak = (rl or {}).get("distinct_peak_rss_mib")
        n = runs["distinct"]["requests"]
        p(f"  distinct keys / one key (mean of the runs before and after): {ratio:.3f}; peak RSS with distinct keys {peak} MiB")
        target("1,000,000 distinct keys: RSS < 100 MiB", None if n < 1_000_000 else (peak is not None and peak < 100),
               f"{n:,} distinct keys sent; peak RSS {peak} MiB")
        target("1,000,000 distinct keys: throughput within 10 % of one key", None if n < 1_000_000 else ratio >= 0.9,
               f"{runs['distinct']['rps']:,.0f} vs {base:,.0f} req/s = {ratio:.3f}", "rl")

    # ---- 4. ttl updates
    p("")
    p("4. TTL-update flood")
    ttl = load(d, "ttl.json")
    res["phases"]["ttl"] = {"flood": ttl}
    if ttl:
        p(f"  {ttl['updates']:,} updates in {ttl['seconds']} s ({ttl['rate']:,.0f}/s), p50 / p99 / max {ms(ttl['update_ms'])}, "
          f"{ttl['errors']} errors; toxics left {ttl['final_ttl_ms'] / 1000 + 2:.0f} s after a last "
          f"{ttl['final_ttl_ms']} ms ttl: {ttl['toxics_left_after_final_ttl']}")
        for e in ttl["first_errors"]:
            p(f"    ! {e}")
    read_line("ttl", "server")

    # ---- memory and descriptors back after each phase
    rec = []
    prev = "fds-start.txt"
    for phase, v in res["phases"].items():
        r = v.get("readings")
        if r:
            rss_ok = r["rss_mib"][2] <= 1.2 * r["rss_mib"][0]
            fd_ok = r["fds"][2] <= r["fds"][0]
            extra = "" if fd_ok else fd_diff(d, prev, f"fds-after-{phase}.txt")
            rec.append((phase, rss_ok and fd_ok, f"{phase}: RSS {r['rss_mib'][0]} -> {r['rss_mib'][2]} "
                                                 f"({r['rss_mib_nudged']}) MiB, "
                                                 f"FDs {r['fds'][0]} -> {r['fds'][2]}" + (f" ({extra})" if extra else "")))
            prev = f"fds-after-{phase}.txt"
    if rec:
        first = samples[0] if samples else None
        last = samples[-1] if samples else None
        missed = [x[2] for x in rec if not x[1]]
        target("RSS within 20 % of its start and FDs at baseline 5 s after each load", not missed,
               ("; ".join(missed) if missed else f"all {len(rec)} phases") +
               (f" (whole run: RSS {first['rss_kib'] / 1024:.1f} -> {last['rss_kib'] / 1024:.1f} MiB, "
                f"FDs {first['fds']} -> {last['fds']})" if first else ""))

    p("")
    p("Targets")
    for t in res["targets"]:
        p(f"  {verdict(t['met']):<6} {t['target']}: {t['detail']}")
    print("\n".join(out))
    with open(os.path.join(d, "result.json"), "w") as f:
        json.dump(res, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
