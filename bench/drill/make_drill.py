#!/usr/bin/env python3
"""Writes the benchmark drill: N probes at R requests/s each against an HTTP stand-in,
with a 5-level ramp on a second proxy. Usage: make_drill.py API TARGET_PORT N RATE > file"""
import sys

api, target_port, n, rate = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
interval_ms = int(1000 / rate)
print(f'name = "runner benchmark: {n} probes at {rate:g}/s"')
print(f'server = "{api}"')
print('seed = 1\nbaseline = "5s"\nrecovery = "5s"\n')
for i in range(n):
    print("[[probe]]")
    print(f'name = "p{i}"')
    print(f'url = "http://127.0.0.1:{target_port}/p{i}"')
    print(f'interval = "{interval_ms}ms"\ntimeout = "1s"')
    print('expect = { status = "503" }\n')
print('[[step]]\nname = "ramp"\nduration = "10s"\nramp = { from = 0.2, to = 1.0, steps = 5 }')
print('[[step.fault]]\nproxy = "dep"\ntype = "status"\nattributes = { status = 500 }\n')
