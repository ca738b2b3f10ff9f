#!/usr/bin/env bash
# Soak and abuse harness for downtime (issue 10, item 8): one `downtime serve` (SQLite history
# file, status listener), its own upstreams, four phases, one summary, one JSON result file.
#
# usage: bench/soak/run.sh            (about 4 minutes with the defaults)
#   1 soak      SOAK_CONNS connections (as many as the descriptor limit allows) through a TCP
#               proxy to an echo upstream, STREAM_CONNS of them streaming verified bytes, while
#               byte-preserving toxics change CHURN_RATE times/s and GET /version is timed
#   2 floods    idle connections, then slowloris, against the API, the status listener and an
#               HTTP proxy, one at a time, /version timed throughout
#   3 rate limit RL_REQUESTS requests with distinct X-Key values against a rate_limit fault
#               keyed by that header, against runs with one key (before and after)
#   4 ttl       TTL_UPDATES toxic updates, each with a new ttl, over TTL_CONNS connections
# The server's RSS, open descriptors and CPU are sampled every 250 ms throughout.
#
# Environment: SOAK_SECS (60), SOAK_CONNS (10000), STREAM_CONNS (1000), STREAM_KBPS (64, per
# stream), CHURN_RATE (100 toxic calls/s), PROBE_MS (20), FLOOD_CONNS (10000), SLOW_CONNS
# (1000), FLOOD_HOLD (11 s: past the server's 10 s header timeout), RL_SECS (8, each one-key
# run), RL_REQUESTS (1000000), RL_MAX_SECS (60), TTL_UPDATES (100000), TTL_CONNS (4),
# TTL_MAX_SECS (90), AFTER_SECS (5: the "after" reading), SOAK_PORT_BASE (19000), SOAK_OUT
# (results directory), DOWNTIME_BIN (else /tmp/bench-target/release/downtime if built after
# HEAD was committed, else HEAD is built there from a temporary git worktree), SERVER_CPU (0),
# LOAD_CPU (1), KEEP_WORK=1, DT_LOG_LEVEL (warn).
#
# Everything binds to 127.0.0.1; every load is bounded in count and time; every process
# started here is stopped by PID (lib.sh's cleanup).
set -uo pipefail

SOAK_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
USER_BIN=${DOWNTIME_BIN:-}
# shellcheck source=bench/lib.sh
source "$SOAK_DIR/../lib.sh" # log, cleanup, stop_pid, wait_port, cpu_ticks, dt_api, dt_expect
case "${1:-}" in -h | --help) sed -n '2,26p' "$0"; exit 0 ;; esac

SOAK_SECS=${SOAK_SECS:-60}
SOAK_CONNS=${SOAK_CONNS:-10000}
STREAM_CONNS=${STREAM_CONNS:-1000}
STREAM_KBPS=${STREAM_KBPS:-64}
CHURN_RATE=${CHURN_RATE:-100}
PROBE_MS=${PROBE_MS:-20}
FLOOD_CONNS=${FLOOD_CONNS:-10000}
SLOW_CONNS=${SLOW_CONNS:-1000}
FLOOD_HOLD=${FLOOD_HOLD:-11}
RL_SECS=${RL_SECS:-8}
RL_REQUESTS=${RL_REQUESTS:-1000000}
RL_MAX_SECS=${RL_MAX_SECS:-60}
TTL_UPDATES=${TTL_UPDATES:-100000}
TTL_CONNS=${TTL_CONNS:-4}
TTL_MAX_SECS=${TTL_MAX_SECS:-90}
AFTER_SECS=${AFTER_SECS:-5}

BASE=${SOAK_PORT_BASE:-19000}
DT_API_PORT=$((BASE + 474)) # lib.sh's dt_api talks to this one
STATUS_PORT=$((BASE + 476)) # --status-listen
SOAK_PORT=$((BASE + 1))     # TCP proxy "soak" -> echo (phase 1)
WEB_PORT=$((BASE + 2))      # HTTP proxy "web" -> hello (phase 2)
RL_PORT=$((BASE + 3))       # HTTP stand-in "rl" with the rate_limit fault (phase 3)
TTL_PORT=$((BASE + 4))      # TCP proxy "ttl" -> echo, whose toxics phase 4 updates
ECHO_PORT=$((BASE + 80))
HELLO_PORT=$((BASE + 81))
export PYTHONDONTWRITEBYTECODE=1   # floods.py imports soak.py: no __pycache__ in the tree
SOAK=("$PY" "$SOAK_DIR/soak.py")     # upstreams, sampler, phase 1
FLOODS=("$PY" "$SOAK_DIR/floods.py") # phases 2 to 4
ON_LOAD=(taskset -c "$LOAD_CPU")
PRIO=(taskset -c "$LOAD_CPU" nice -n -10) # the measuring clients: ahead of the load on core 1
PROBE_S=$(awk "BEGIN { print $PROBE_MS / 1000 }")

for tool in taskset curl "$PY" git; do
    command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }
done
# Each proxied connection costs the server two descriptors (client and upstream side); the
# server raises its own soft limit to the hard one, which it inherits from here.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
NOFILE=$(ulimit -n)

WORK=$(mktemp -d /tmp/downtime-soak.XXXXXX)
OUT=${SOAK_OUT:-/tmp/downtime-soak-results/$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
: >"$OUT/marks.jsonl"
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- the binary: given, recent, or built from HEAD in a worktree (not in the shared target/)
build_head() {
    local wt=/tmp/soak-src rc
    [ -e "$wt" ] && { log "$wt already exists: remove it (git worktree remove) or set DOWNTIME_BIN"; return 1; }
    git -C "$REPO_DIR" worktree add --detach "$wt" HEAD >"$OUT/build.log" 2>&1 || return 1
    BIN_COMMIT=$(git -C "$wt" rev-parse --short HEAD)
    log "building $BIN_COMMIT into /tmp/bench-target (log: $OUT/build.log)"
    (cd "$wt" && CARGO_TARGET_DIR=/tmp/bench-target timeout 3600 cargo build --release -p downtime) >>"$OUT/build.log" 2>&1
    rc=$?
    git -C "$REPO_DIR" worktree remove --force "$wt"
    return $rc
}
BUILT=/tmp/bench-target/release/downtime
if [ -n "$USER_BIN" ]; then
    DOWNTIME_BIN=$USER_BIN
    BIN_COMMIT="given by DOWNTIME_BIN"
elif [ -x "$BUILT" ] && [ "$(stat -c %Y "$BUILT")" -ge "$(git -C "$REPO_DIR" log -1 --format=%ct HEAD)" ]; then
    DOWNTIME_BIN=$BUILT
    BIN_COMMIT="built after $(git -C "$REPO_DIR" rev-parse --short HEAD) was committed"
else
    build_head || { log "build failed: $(tail -5 "$OUT/build.log")"; exit 1; }
    DOWNTIME_BIN=$BUILT
fi

mark() { # PHASE EVENT: the phase boundaries the report cuts the samples at
    printf '{"phase":"%s","event":"%s","t":%s,"loadavg":"%s"}\n' "$1" "$2" "$(date +%s.%3N)" "$(loadavg)" >>"$OUT/marks.jsonl"
}
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
# bg VAR CMD...: start CMD in the background, remember its PID (stopped by PID on exit)
bg() {
    local var=$1
    shift
    "$@" &
    printf -v "$var" '%s' "$!"
    STARTED_PIDS+=("$!")
}
reap() { wait "$1" 2>/dev/null; forget_pid "$1"; }
wait_file() { # FILE SECS PID: until FILE exists, PID exits or SECS pass
    local i
    for i in $(seq $(($2 * 10))); do
        [ -e "$1" ] && return 0
        kill -0 "$3" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}
# the "after" reading: the sampler's values AFTER_SECS after the load ended
# Then one second of /version calls and another reading ("nudged"): mimalloc gives freed
# pages back when the server allocates again, so an idle server can show memory that is
# already free; the nudged reading tells retained-but-free memory from live memory.
settle() {
    mark "$1" end
    sleep "$AFTER_SECS.5"
    mark "$1" after
    ls -l "/proc/$DT_PID/fd" >"$OUT/fds-after-$1.txt" 2>&1
    "${PRIO[@]}" "${SOAK[@]}" probe --api "127.0.0.1:$DT_API_PORT" --interval 0.005 --seconds 1 >/dev/null 2>&1
    sleep 0.3
    mark "$1" nudged
}

check_ports_free "$DT_API_PORT" "$STATUS_PORT" "$SOAK_PORT" "$WEB_PORT" "$RL_PORT" "$TTL_PORT" \
    "$ECHO_PORT" "$HELLO_PORT" || exit 1

{
    echo "{"
    echo "\"date\": \"$(date -Is)\","
    echo "\"host\": \"$(uname -srm), $(nproc) cpus, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)\","
    echo "\"git_head\": \"$(git -C "$REPO_DIR" rev-parse --short HEAD)\", \"binary_commit\": \"$BIN_COMMIT\","
    echo "\"binary\": \"$DOWNTIME_BIN ($(stat -c %y "$DOWNTIME_BIN" | cut -d. -f1))\","
    echo "\"nofile\": $NOFILE, \"server_cpu\": $SERVER_CPU, \"load_cpu\": $LOAD_CPU,"
    echo "\"loadavg_start\": \"$(loadavg)\","
    echo "\"uptime_start\": \"$(uptime)\","
} >"$OUT/meta.part"
top -b -n1 -w 200 2>/dev/null | head -20 >"$OUT/top-start.txt" # who else uses the machine
# ... and throughout, every 5 s (bounded: 15 minutes): the report names other busy processes
bg TOP_PID top -b -d 5 -n 180 -w 200 >"$OUT/top.txt" 2>/dev/null
log "out: $OUT; binary $DOWNTIME_BIN ($BIN_COMMIT); nofile $NOFILE; load average $(loadavg)"

# --- upstreams (core 1), downtime (core 0), sampler (core 1)
bg UP_PID "${ON_LOAD[@]}" "${SOAK[@]}" upstream --echo-port "$ECHO_PORT" --http-port "$HELLO_PORT" --max-seconds 1800
wait_port "$ECHO_PORT" 10 && wait_port "$HELLO_PORT" 10 || exit 1

LOG_LEVEL=$DT_LOG_LEVEL taskset -c "$SERVER_CPU" "$DOWNTIME_BIN" serve --host 127.0.0.1 \
    --port "$DT_API_PORT" --seed 1 --db "$WORK/history.db" --status-listen "127.0.0.1:$STATUS_PORT" \
    >"$OUT/downtime.log" 2>&1 &
DT_PID=$!
STARTED_PIDS+=("$DT_PID")
for _ in $(seq 100); do
    curl -s -m 1 -A downtime-soak/1 -o /dev/null "http://127.0.0.1:$DT_API_PORT/version" && break
    kill -0 "$DT_PID" 2>/dev/null || break
    sleep 0.1
done
wait_port "$STATUS_PORT" 5 || { log "downtime did not start:"; tail -20 "$OUT/downtime.log" >&2; exit 1; }
log "downtime pid $DT_PID on cpu $SERVER_CPU: $(curl -s -A downtime-soak/1 "http://127.0.0.1:$DT_API_PORT/version")"

mkproxy() { # NAME LISTEN_PORT [UPSTREAM_PORT] [http]
    local up="" proto=""
    [ -n "${3:-}" ] && up=",\"upstream\":\"127.0.0.1:$3\""
    [ -n "${4:-}" ] && proto=',"protocol":"http"'
    dt_expect 201 POST /proxies "{\"name\":\"$1\",\"listen\":\"127.0.0.1:$2\"$up$proto}" && wait_port "$2" 5
}
mkproxy soak "$SOAK_PORT" "$ECHO_PORT" && mkproxy web "$WEB_PORT" "$HELLO_PORT" http &&
    mkproxy rl "$RL_PORT" "" http && mkproxy ttl "$TTL_PORT" "$ECHO_PORT" || exit 1
# One request through the HTTP proxy now, before the baseline: it leaves a pooled upstream
# connection (one descriptor) that would otherwise be charged to the first flood.
WEB_ANSWER=$(curl -s -m 5 -A downtime-soak/1 "http://127.0.0.1:$WEB_PORT/")

: >"$OUT/samples.jsonl"
bg SAMPLER_PID "${PRIO[@]}" "${SOAK[@]}" sample --pid "$DT_PID" --out "$OUT/samples.jsonl" \
    --stop-file "$WORK/sample.stop" --max-seconds 1800
sleep 2 # a few samples of the idle server: the baseline
ls -l "/proc/$DT_PID/fd" >"$OUT/fds-start.txt" 2>&1 # what the descriptors are, for the record

# ---------------------------------------------------------------- 1. soak
phase_soak() {
    local n=$(((NOFILE - 200) / 2))
    [ "$n" -gt "$SOAK_CONNS" ] && n=$SOAK_CONNS
    log "1. soak: $n connections ($STREAM_CONNS streaming at $STREAM_KBPS KB/s each), ${SOAK_SECS}s of toxic churn at $CHURN_RATE/s"
    mark soak start
    bg CL_PID "${ON_LOAD[@]}" "${SOAK[@]}" soak --port "$SOAK_PORT" --conns "$n" --streams "$STREAM_CONNS" \
        --rate-kbps "$STREAM_KBPS" --ready-file "$WORK/soak.ready" --stop-file "$WORK/soak.stop" \
        --max-seconds $((SOAK_SECS + 180)) >"$OUT/soak.json" 2>"$OUT/soak.err"
    wait_file "$WORK/soak.ready" 120 "$CL_PID" || log "soak clients not ready: $(tail -3 "$OUT/soak.err")"
    log "1. soak: $(cat "$WORK/soak.ready" 2>/dev/null) connections open; churn and probes start"
    mark soak streaming
    local churn probe
    bg churn "${PRIO[@]}" "${SOAK[@]}" churn --api "127.0.0.1:$DT_API_PORT" --proxy soak --rate "$CHURN_RATE" \
        --seconds "$SOAK_SECS" --timeout 5 >"$OUT/soak-churn.json" 2>"$OUT/soak-churn.err"
    bg probe "${PRIO[@]}" "${SOAK[@]}" probe --api "127.0.0.1:$DT_API_PORT" --interval "$PROBE_S" \
        --seconds "$SOAK_SECS" --timeout 5 >"$OUT/soak-probe.json" 2>"$OUT/soak-probe.err"
    reap "$churn"
    reap "$probe"
    touch "$WORK/soak.stop" # the churn removed its toxics: the clients drain, check, close
    reap "$CL_PID"
    settle soak
    log "1. soak: $(head -c 400 "$OUT/soak.json")"
}

# ---------------------------------------------------------------- 2. floods
flood_one() { # LISTENER PORT MODE COUNT
    local label="flood-$1-$3" probe
    rm -f "$WORK/probe.stop"
    mark "$label" start
    # kept-alive /version every PROBE_MS, and a fresh connection every 250 ms; the probe's
    # connection is open before the flood, as an operator's would be
    bg probe "${PRIO[@]}" "${SOAK[@]}" probe --api "127.0.0.1:$DT_API_PORT" --interval "$PROBE_S" \
        --seconds $((FLOOD_HOLD + 60)) --stop-file "$WORK/probe.stop" --fresh-interval 0.25 --timeout 5 \
        >"$OUT/$label-probe.json" 2>"$OUT/$label-probe.err"
    sleep 0.5
    timeout $((FLOOD_HOLD + 90)) "${ON_LOAD[@]}" "${FLOODS[@]}" flood --port "$2" --mode "$3" --count "$4" \
        --hold "$FLOOD_HOLD" >"$OUT/$label.json" 2>"$OUT/$label.err"
    touch "$WORK/probe.stop"
    reap "$probe"
    settle "$label"
    log "2. $label: $(head -c 300 "$OUT/$label.json")"
}

phase_floods() {
    local n=$((NOFILE - 200))
    [ "$n" -gt "$FLOOD_CONNS" ] && n=$FLOOD_CONNS
    log "2. floods: $n idle / $SLOW_CONNS slowloris connections per listener; HTTP proxy answered '$WEB_ANSWER'"
    flood_one api "$DT_API_PORT" idle "$n"
    flood_one status "$STATUS_PORT" idle "$n"
    flood_one http "$WEB_PORT" idle "$n"
    flood_one api "$DT_API_PORT" slowloris "$SLOW_CONNS"
    flood_one status "$STATUS_PORT" slowloris "$SLOW_CONNS"
    flood_one http "$WEB_PORT" slowloris "$SLOW_CONNS"
}

# ---------------------------------------------------------------- 3. rate-limit keys
rl_run() { # LABEL MODE SECS: wrk -c64 against the stand-in with keys.lua, server CPU per request
    local t0 t1
    t0=$(cpu_ticks "$DT_PID")
    "${ON_LOAD[@]}" wrk -t1 -c64 -d"${3}s" --timeout 5s -s "$SOAK_DIR/keys.lua" \
        "http://127.0.0.1:$RL_PORT/" -- "$2" >"$OUT/$1.txt" 2>&1
    t1=$(cpu_ticks "$DT_PID")
    local reqs rps
    reqs=$(awk '/requests in/ {print $1}' "$OUT/$1.txt")
    rps=$(awk '/^Requests\/sec/ {print $2}' "$OUT/$1.txt")
    printf '{"requests":%s,"rps":%s,"secs":%s,"server_cpu_ticks":%s,"clk_tck":%s,"socket_errors":"%s"}\n' \
        "${reqs:-0}" "${rps:-0}" "$3" $((t1 - t0)) "$CLK_TCK" \
        "$(grep -E 'Socket errors' "$OUT/$1.txt" | tr -d '\n')" >"$OUT/$1.json"
    log "3. $1: ${reqs:-?} requests, ${rps:-?} req/s"
    RL_RPS=${rps:-0}
}

phase_rl() {
    # limit 1,000,000 per second: no key is ever refused, so both runs take the same path
    # (take a token, then the stand-in's answer) and differ only in how many keys the
    # fault tracks (it keeps at most 100,000, least recently used first out)
    dt_expect 200 POST /proxies/rl/toxics \
        '{"name":"rl","type":"rate_limit","attributes":{"limit":1000000,"period_ms":1000,"key_header":"x-key"}}' || return 1
    curl -s -m 5 -A downtime-soak/1 -H 'X-Key: probe' -D "$OUT/rl-sample.headers" -o /dev/null "http://127.0.0.1:$RL_PORT/"
    mark rl start
    if command -v wrk >/dev/null; then
        rl_run rl-one-1 one "$RL_SECS"
        # long enough for RL_REQUESTS distinct keys at the one-key rate (+5 %), bounded
        local secs
        secs=$(awk -v n="$RL_REQUESTS" -v r="$RL_RPS" -v m="$RL_MAX_SECS" \
            'BEGIN { s = (r > 0) ? int(n * 1.05 / r) + 2 : m; print (s > m) ? m : s }')
        mark rl distinct
        rl_run rl-distinct distinct "$secs"
        mark rl distinct_end
        rl_run rl-one-2 one "$RL_SECS"
    else
        log "3. no wrk: the Python client instead (slower: it, not the server, sets the rate)"
        local k
        for k in one-1:one distinct:distinct one-2:one; do
            [ "${k%%:*}" = distinct ] && mark rl distinct
            "${ON_LOAD[@]}" "${FLOODS[@]}" rlflood --port "$RL_PORT" --keys "${k#*:}" \
                --count "$([ "${k#*:}" = one ] && echo 200000 || echo "$RL_REQUESTS")" \
                --max-seconds "$RL_MAX_SECS" >"$OUT/rl-${k%%:*}.json" 2>"$OUT/rl-${k%%:*}.err"
            [ "${k%%:*}" = distinct ] && mark rl distinct_end
        done
    fi
    settle rl
    dt_api DELETE /proxies/rl/toxics/rl >/dev/null
}

# ---------------------------------------------------------------- 4. ttl updates
phase_ttl() {
    log "4. ttl: $TTL_UPDATES toxic updates with a ttl over $TTL_CONNS connections"
    mark ttl start
    timeout $((TTL_MAX_SECS + 60)) "${ON_LOAD[@]}" "${FLOODS[@]}" ttlflood --api "127.0.0.1:$DT_API_PORT" --proxy ttl \
        --updates "$TTL_UPDATES" --conns "$TTL_CONNS" --max-seconds "$TTL_MAX_SECS" \
        >"$OUT/ttl.json" 2>"$OUT/ttl.err"
    settle ttl
    log "4. ttl: $(head -c 300 "$OUT/ttl.json")"
}

phase_soak
phase_floods
phase_rl
phase_ttl

touch "$WORK/sample.stop"
reap "$SAMPLER_PID"
stop_pid "$TOP_PID"
top -b -n1 -w 200 2>/dev/null | head -20 >"$OUT/top-end.txt"
ALIVE=false
kill -0 "$DT_PID" 2>/dev/null && ALIVE=true
ls -l "/proc/$DT_PID/fd" >"$OUT/fds-end.txt" 2>&1
{
    cat "$OUT/meta.part"
    echo "\"loadavg_end\": \"$(loadavg)\","
    echo "\"uptime_end\": \"$(uptime)\","
    echo "\"server_alive\": $ALIVE,"
    echo "\"server_threads\": \"$(awk '/^Threads:/ {print $2}' "/proc/$DT_PID/status" 2>/dev/null)\","
    echo "\"log_lines\": $(wc -l <"$OUT/downtime.log"),"
    echo "\"log_panics\": $(grep -ci panic "$OUT/downtime.log"),"
    echo "\"log_first_lines\": $("$PY" -c 'import json,sys; print(json.dumps(open(sys.argv[1]).read().splitlines()[:8]))' "$OUT/downtime.log"),"
    echo "\"settings\": {\"SOAK_SECS\": $SOAK_SECS, \"SOAK_CONNS\": $SOAK_CONNS, \"STREAM_CONNS\": $STREAM_CONNS, \"STREAM_KBPS\": $STREAM_KBPS, \"CHURN_RATE\": $CHURN_RATE, \"PROBE_MS\": $PROBE_MS, \"FLOOD_CONNS\": $FLOOD_CONNS, \"SLOW_CONNS\": $SLOW_CONNS, \"FLOOD_HOLD\": $FLOOD_HOLD, \"RL_REQUESTS\": $RL_REQUESTS, \"TTL_UPDATES\": $TTL_UPDATES, \"AFTER_SECS\": $AFTER_SECS}"
    echo "}"
} >"$OUT/meta.json"
rm -f "$OUT/meta.part"
[ "$ALIVE" = true ] || log "downtime exited during the run; log tail: $(tail -5 "$OUT/downtime.log")"

"$PY" "$SOAK_DIR/report.py" "$OUT" | tee "$OUT/summary.txt"
log "raw results: $OUT (result.json, summary.txt, samples.jsonl, per-phase JSON, downtime.log)"
