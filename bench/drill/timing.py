#!/usr/bin/env python3
"""Compares the drill report's events with the planned timeline of `drill check`.
Usage: timing.py CHECK_OUTPUT REPORT_JSON"""
import json
import re
import sys

planned = []
for line in open(sys.argv[1]):
    m = re.match(r"\s*([0-9.]+)s\s+(inject|set|remove) (.*)", line)
    if m:
        planned.append((float(m.group(1)) * 1000, m.group(2) + " " + m.group(3)))
report = json.load(open(sys.argv[2]))
events = [(e["at_ms"], e["what"]) for e in report["events"] if re.match(r"(inject|set|remove) ", e["what"])]
assert len(events) == len(planned), (events, planned)
errors = []
for (p_ms, p_what), (e_ms, e_what) in zip(planned, events):
    assert p_what == e_what, (p_what, e_what)
    errors.append(e_ms - p_ms)
print(json.dumps({
    "actions": len(errors),
    "max_late_ms": max(errors),
    "min_late_ms": min(errors),
    "samples": sum(p["samples"] for p in report["phases"]),
    "outcome": report["outcome"],
}))
