#!/usr/bin/env bash
# Drill runner benchmark: 50 probes at 10 requests/s each for 20 s.
# Measures the runner's own CPU (user+sys of the `drill run` process / wall time) and how late
# each planned action happened. The server and the probe target run in their own process on
# core 0; the runner on core 1.
#
#   cargo build --release -p downtime && bench/drill/run.sh [PROBES] [RATE]
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
BIN="${DOWNTIME_BIN:-$REPO/target/release/downtime}"
PROBES="${1:-50}"
RATE="${2:-10}"
API_PORT="${API_PORT:-18574}"
TARGET_PORT="${TARGET_PORT:-18575}"
DEP_PORT="${DEP_PORT:-18576}"
WORK="$(mktemp -d)"
SERVER_PID=""
cleanup() { [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

LOG_LEVEL=warn taskset -c 0 "$BIN" serve --host 127.0.0.1 --port "$API_PORT" >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 100); do curl -sf "127.0.0.1:$API_PORT/version" >/dev/null && break; sleep 0.1; done
curl -sf -XPOST "127.0.0.1:$API_PORT/proxies" -d "{\"name\":\"target\",\"protocol\":\"http\",\"listen\":\"127.0.0.1:$TARGET_PORT\"}" >/dev/null
curl -sf -XPOST "127.0.0.1:$API_PORT/proxies" -d "{\"name\":\"dep\",\"protocol\":\"http\",\"listen\":\"127.0.0.1:$DEP_PORT\"}" >/dev/null

python3 "$HERE/make_drill.py" "http://127.0.0.1:$API_PORT" "$TARGET_PORT" "$PROBES" "$RATE" >"$WORK/drill.toml"
"$BIN" drill check "$WORK/drill.toml" >"$WORK/check.txt"
/usr/bin/time -f "%U %S %e" -o "$WORK/time.txt" taskset -c 1 "$BIN" drill run "$WORK/drill.toml" --quiet --report "$WORK/report.json" >/dev/null || true
read -r user sys wall <"$WORK/time.txt"
python3 - "$user" "$sys" "$wall" <<'PY'
import sys
u, s, w = map(float, sys.argv[1:])
print(f'{{"runner_cpu_s": {u + s:.2f}, "wall_s": {w:.2f}, "runner_cpu_pct_of_one_core": {100 * (u + s) / w:.1f}}}')
PY
python3 "$HERE/timing.py" "$WORK/check.txt" "$WORK/report.json"
