# shellcheck shell=bash
# shellcheck disable=SC2034 # the settings below are used by run.sh
# Helpers for bench/run.sh: ports, process bookkeeping, nginx and downtime start/stop,
# /proc readings. Everything binds to 127.0.0.1; every process started here is
# remembered by PID and stopped by PID on exit.

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(dirname "$BENCH_DIR")
PY=${PYTHON:-python3}
TOOL=("$PY" "$BENCH_DIR/tools/dtbench.py")

SERVER_CPU=${SERVER_CPU:-0}   # the server under test (nginx proxy or downtime)
LOAD_CPU=${LOAD_CPU:-1}       # wrk, iperf3, the Python clients and the upstream nginx
DURATION=${DURATION:-10}      # seconds per wrk / iperf3 run
REPEAT=${REPEAT:-2}           # runs of every measurement
DOWNTIME_BIN=${DOWNTIME_BIN:-$REPO_DIR/target/release/downtime}
DT_LOG_LEVEL=${DT_LOG_LEVEL:-warn}
NGINX=${NGINX:-nginx}
STREAM_MODULE=${STREAM_MODULE:-/usr/lib/nginx/modules/ngx_stream_module.so}
CLK_TCK=$(getconf CLK_TCK)

PORT_BASE=${BENCH_PORT_BASE:-18000}
UP_PORT=$((PORT_BASE + 80))          # upstream nginx http
NGX_TCP_PORT=$((PORT_BASE + 81))     # nginx stream -> upstream (a, c, e)
NGX_BULK_PORT=$((PORT_BASE + 82))    # nginx stream 256k -> iperf3 (b)
NGX_BW1_PORT=$((PORT_BASE + 83))     # nginx stream proxy_download_rate 100000 (d reference)
NGX_BW2_PORT=$((PORT_BASE + 84))     # nginx stream proxy_download_rate 10000000 (d reference)
IPERF_PORT=$((PORT_BASE + 201))      # iperf3 server
NGX_503_PORT=$((PORT_BASE + 301))    # nginx http return 503 (f)
NGX_PROXY_PORT=$((PORT_BASE + 302))  # nginx http proxy_pass + keepalive (f)
NGX_TLS_PORT=$((PORT_BASE + 303))    # nginx https (TLS 1.3) return 503 (h)
DT_API_PORT=$((PORT_BASE + 474))     # downtime REST API
DT_TCP_PORT=$((PORT_BASE + 91))      # downtime proxy "tcp" -> upstream, no toxics (a, c, e)
DT_BULK_PORT=$((PORT_BASE + 92))     # downtime proxy "bulk" -> iperf3 (b)
DT_LAT_PORT=$((PORT_BASE + 93))      # downtime proxy "lat" -> upstream, latency toxic (c)
DT_BW_PORT=$((PORT_BASE + 94))       # downtime proxy "bw" -> upstream, bandwidth toxic (d)
DT_WEBLAT_PORT=$((PORT_BASE + 95))   # downtime HTTP proxy "weblat" -> upstream, TCP latency toxic (c)
DT_STREAM_PORT=$((PORT_BASE + 96))   # downtime proxy "stream" -> upstream, toxic churn (e)
DT_STANDIN_PORT=$((PORT_BASE + 97))  # downtime HTTP stand-in "standin", no upstream (f)
DT_WEB_PORT=$((PORT_BASE + 98))      # downtime HTTP proxy "web" -> upstream, no faults (f)
DT_WEB20_PORT=$((PORT_BASE + 99))    # downtime HTTP proxy "web20" -> upstream, 20 faults that never match (f)
DT_TLS_PORT=$((PORT_BASE + 100))     # downtime HTTPS stand-in "tlsstandin" ("tls": {}, local CA), no upstream (h)

STARTED_PIDS=()

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# Stop every process this script started, by PID: TERM, then KILL after 5 s.
cleanup() {
    local pid i
    for pid in "${STARTED_PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for i in $(seq 50); do
        local alive=0
        for pid in "${STARTED_PIDS[@]}"; do
            kill -0 "$pid" 2>/dev/null && alive=1
        done
        [ "$alive" = 0 ] && break
        sleep 0.1
    done
    for pid in "${STARTED_PIDS[@]}"; do
        kill -KILL "$pid" 2>/dev/null || true
    done
    STARTED_PIDS=()
    if [ -n "${WORK:-}" ] && [ -d "$WORK" ] && [ -z "${KEEP_WORK:-}" ]; then
        rm -rf "$WORK"
    fi
}

forget_pid() {
    local keep=() p
    for p in "${STARTED_PIDS[@]}"; do [ "$p" != "$1" ] && keep+=("$p"); done
    STARTED_PIDS=("${keep[@]}")
}

stop_pid() {
    local pid=$1 i
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    forget_pid "$pid"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {
    local port=$1 secs=${2:-10} i
    for i in $(seq $((secs * 10))); do
        port_open "$port" && return 0
        sleep 0.1
    done
    log "port $port did not open within ${secs}s"
    return 1
}

check_ports_free() {
    local p
    for p in "$@"; do
        if port_open "$p"; then
            log "port $p is already in use on 127.0.0.1 (set BENCH_PORT_BASE to move all ports)"
            return 1
        fi
    done
}

# utime+stime (clock ticks) summed over the given PIDs (a process's own line already
# covers all its threads).
cpu_ticks() {
    local total=0 pid t
    for pid in "$@"; do
        t=$(sed 's/.*) //' "/proc/$pid/stat" | awk '{print $12 + $13}')
        total=$((total + t))
    done
    echo "$total"
}

# VmRSS in KiB summed over the given PIDs.
rss_kib() {
    local total=0 pid r
    for pid in "$@"; do
        r=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status")
        total=$((total + r))
    done
    echo "$total"
}

hwm_kib() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }

children_of() { pgrep -P "$1" | tr '\n' ' '; }

# Established TCP connections whose local port is $1 (server side of a listener).
established_on() {
    ss -Htn state established "( sport = :$1 )" | wc -l
}

render() { # template output
    sed -e "s|@DIR@|$WORK|g" \
        -e "s|@NOFILE@|$NOFILE|g" \
        -e "s|@STREAM_MODULE@|$STREAM_MODULE|g" \
        -e "s|@UP_PORT@|$UP_PORT|g" \
        -e "s|@NGX_TCP_PORT@|$NGX_TCP_PORT|g" \
        -e "s|@NGX_BULK_PORT@|$NGX_BULK_PORT|g" \
        -e "s|@NGX_BW1_PORT@|$NGX_BW1_PORT|g" \
        -e "s|@NGX_BW2_PORT@|$NGX_BW2_PORT|g" \
        -e "s|@IPERF_PORT@|$IPERF_PORT|g" \
        -e "s|@NGX_503_PORT@|$NGX_503_PORT|g" \
        -e "s|@NGX_PROXY_PORT@|$NGX_PROXY_PORT|g" \
        -e "s|@NGX_TLS_PORT@|$NGX_TLS_PORT|g" \
        "$1" >"$2"
    # The 503 body of the HTTP reference: downtime's own maintenance answer, fetched at run
    # time (bench/run.sh writes it to $WORK/standin.body), as an nginx quoted string.
    if grep -q '@BODY_503@' "$2"; then
        "$PY" - "$2" "$WORK/standin.body" <<'PYEOF'
import sys
conf, body_file = sys.argv[1], sys.argv[2]
try:
    body = open(body_file, "rb").read().decode()
except OSError:
    body = '{"id": "maintenance", "message": "API is temporarily unavailable."}'
# nginx turns \n, \t, \r, \\, \' and \" inside quotes into the characters: escape every
# backslash and single quote so that the bytes sent are exactly the body's.
quoted = "'" + body.replace("\\", "\\\\").replace("'", "\\'") + "'"
text = open(conf).read().replace("@BODY_503@", quoted)
open(conf, "w").write(text)
PYEOF
    fi
}

# start_nginx NAME CPU PORT: runs nginx in the foreground (daemon off) with our own
# config, prefix and logs; sets NGX_PID_<NAME> to "master worker".
start_nginx() {
    local name=$1 cpu=$2 port=$3 conf="$WORK/$1.conf" pid
    render "$BENCH_DIR/nginx/$name.conf.in" "$conf"
    taskset -c "$cpu" "$NGINX" -p "$WORK/" -c "$conf" -e "$WORK/$name-error.log" \
        -g 'daemon off;' >"$WORK/$name.out" 2>&1 &
    pid=$!
    STARTED_PIDS+=("$pid")
    if ! wait_port "$port" 10; then
        cat "$WORK/$name.out" "$WORK/$name-error.log" >&2 2>/dev/null
        return 1
    fi
    sleep 0.2
    local workers
    workers=$(children_of "$pid")
    # shellcheck disable=SC2206
    STARTED_PIDS+=($workers)
    printf -v "NGX_PID_$name" '%s' "$pid $workers"
    log "nginx $name: master $pid workers $workers on cpu $cpu"
}

stop_nginx() {
    local name=$1 var="NGX_PID_$1" pid
    for pid in ${!var}; do stop_pid "$pid"; done
    printf -v "$var" '%s' ""
}

# --- downtime -------------------------------------------------------------------

DT_PID=""

dt_api() { # METHOD PATH [JSON] -> prints "STATUS BODY"
    local method=$1 path=$2 data=${3:-}
    local args=(-s -m 10 -A "downtime-bench/1" -o "$WORK/api.body" -w '%{http_code}' -X "$method")
    [ -n "$data" ] && args+=(-H 'Content-Type: application/json' --data "$data")
    local code
    code=$(curl "${args[@]}" "http://127.0.0.1:$DT_API_PORT$path") || code=000
    printf '%s %s\n' "$code" "$(head -c 300 "$WORK/api.body" 2>/dev/null)"
}

dt_expect() { # EXPECTED_STATUS METHOD PATH [JSON]
    local want=$1 out
    shift
    out=$(dt_api "$@")
    if [ "${out%% *}" != "$want" ]; then
        log "downtime API $1 $2 -> $out (wanted $want)"
        return 1
    fi
}

start_downtime() {
    if [ ! -x "$DOWNTIME_BIN" ]; then
        log "no downtime binary at $DOWNTIME_BIN (cargo build --release -p downtime)"
        return 1
    fi
    LOG_LEVEL=$DT_LOG_LEVEL taskset -c "$SERVER_CPU" "$DOWNTIME_BIN" serve \
        --host 127.0.0.1 --port "$DT_API_PORT" --seed 1 --db "${DT_DB:-$WORK/history.db}" \
        ${DT_CA_DIR:+--ca-dir "$DT_CA_DIR"} >"$WORK/downtime.log" 2>&1 &
    DT_PID=$!
    STARTED_PIDS+=("$DT_PID")
    local i
    for i in $(seq 100); do
        if curl -s -m 1 -A downtime-bench/1 "http://127.0.0.1:$DT_API_PORT/version" >/dev/null 2>&1; then
            log "downtime: pid $DT_PID on cpu $SERVER_CPU, api :$DT_API_PORT ($(curl -s -A downtime-bench/1 "http://127.0.0.1:$DT_API_PORT/version" | head -c 100))"
            return 0
        fi
        kill -0 "$DT_PID" 2>/dev/null || break
        sleep 0.1
    done
    log "downtime did not answer /version; log:"
    tail -20 "$WORK/downtime.log" >&2
    stop_pid "$DT_PID"
    DT_PID=""
    return 1
}

dt_http_proxy() { # NAME LISTEN_PORT [UPSTREAM_PORT]: an HTTP proxy (a stand-in without upstream)
    local up=""
    [ -n "${3:-}" ] && up=",\"upstream\":\"127.0.0.1:$3\""
    dt_api DELETE "/proxies/$1" >/dev/null
    dt_expect 201 POST /proxies \
        "{\"name\":\"$1\",\"protocol\":\"http\",\"listen\":\"127.0.0.1:$2\"$up}" &&
        wait_port "$2" 5
}

dt_tls_standin() { # NAME LISTEN_PORT: an HTTPS stand-in, leaf from the local CA ("tls": {})
    dt_api DELETE "/proxies/$1" >/dev/null
    dt_expect 201 POST /proxies \
        "{\"name\":\"$1\",\"protocol\":\"http\",\"listen\":\"127.0.0.1:$2\",\"tls\":{}}" &&
        wait_port "$2" 5
}

dt_proxy() { # NAME LISTEN_PORT UPSTREAM_PORT
    dt_api DELETE "/proxies/$1" >/dev/null
    dt_expect 201 POST /proxies \
        "{\"name\":\"$1\",\"listen\":\"127.0.0.1:$2\",\"upstream\":\"127.0.0.1:$3\"}" &&
        wait_port "$2" 5
}
