#!/usr/bin/env bash
# Loopback end-to-end benchmarks: downtime against nginx (Debian) as the reference.
#
# usage: bench/run.sh [a] [b] [c] [d] [e] [f] [g] [h] [all]  (default: a b c d e)
#   a  small request/response through a no-toxic TCP proxy (wrk, 64 keep-alive conns)
#   b  bulk TCP transfer (iperf3, one stream, both directions)
#   c  100 ms latency toxic: added latency p50/p99, small and 1 MiB responses, through a TCP
#      proxy and through an HTTP proxy (the TCP toxic beneath hyper)
#   d  bandwidth toxic accuracy at 100 and 10000 KB/s
#   e  idle connections' RSS; toxic add/remove API latency under 1000 streaming conns
#   f  HTTP proxies: the maintenance stand-in vs nginx return 503; pass-through vs nginx
#      proxy_pass (upstream keepalive); the same with 20 faults that do not match; 1 MiB bodies
#   g  cost of recording history: HTTP pass-through while a fault is added and removed on
#      another proxy every 20 ms, with history off (--db :memory:) and on (SQLite file)
#   h  TLS: an HTTPS stand-in ("tls": {}, leaf from the local CA made by `downtime ca`) vs
#      nginx ssl + return 503 (same body; its ECDSA P-256 leaf issued by openssl from the
#      same CA), TLS 1.3, tickets on: keep-alive (wrk -c64 over TLS), new handshakes (wrk
#      -H 'Connection: close'), openssl s_time -new and -reuse (resumption)
#
# Environment: REPEAT (2), DURATION (10 s per wrk/iperf3 run), LAT_SAMPLES (200),
# IDLE_CONNS (10000), STREAM_CONNS (1000), CHURN_CYCLES (200), CHURN_TOXIC (latency 10 ms
# downstream, as JSON; its name must be <type>_<stream> or given), DOWNTIME_BIN (target/release/downtime),
# SKIP_DOWNTIME=1, BENCH_PORT_BASE (18000), BENCH_OUT (results directory),
# SERVER_CPU (0), LOAD_CPU (1), KEEP_WORK=1 (keep the temp dir with configs and logs),
# HTTP_FAULTS (20: non-matching faults on proxy web20 in f), DT_DB (history file of the
# server under test: $WORK/history.db; g sets it itself), STIME_SECS (10: each openssl
# s_time run in h).
#
# The server under test runs on SERVER_CPU, everything else (load, upstream) on LOAD_CPU.
# Every load run is bounded in time; every process started here is stopped by PID.
set -uo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

TARGETS=()
for t in "$@"; do
    case "$t" in
        all) TARGETS=(a b c d e f g h) ;;
        a | b | c | d | e | f | g | h) TARGETS+=("$t") ;;
        -h | --help) sed -n '2,30p' "$0"; exit 0 ;;
        *) echo "unknown target: $t" >&2; exit 2 ;;
    esac
done
[ ${#TARGETS[@]} -eq 0 ] && TARGETS=(a b c d e)
want() { [[ " ${TARGETS[*]} " == *" $1 "* ]]; }

for tool in "$NGINX" wrk iperf3 taskset curl ss "$PY"; do
    command -v "$tool" >/dev/null || { echo "missing $tool: run bench/install.sh" >&2; exit 1; }
done
[ -f "$STREAM_MODULE" ] || { echo "missing $STREAM_MODULE: run bench/install.sh" >&2; exit 1; }

# Idle connections need two descriptors each in the proxy: take the hard limit.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
NOFILE=$(ulimit -n)

LAT_SAMPLES=${LAT_SAMPLES:-200}
IDLE_CONNS=${IDLE_CONNS:-10000}
STREAM_CONNS=${STREAM_CONNS:-1000}
CHURN_CYCLES=${CHURN_CYCLES:-200}
CHURN_TOXIC=${CHURN_TOXIC:-'{"type":"latency","stream":"downstream","attributes":{"latency":10}}'}

WORK=$(mktemp -d /tmp/downtime-bench.XXXXXX)
chmod 755 "$WORK" # nginx workers run as an unprivileged user
mkdir -p "$WORK/tmp" "$WORK/files"
OUT=${BENCH_OUT:-/tmp/downtime-bench-results/$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
RESULTS="$OUT/results.jsonl"
: >"$RESULTS"
trap cleanup EXIT
trap 'exit 130' INT TERM

emit() { # ID WHO VALUE REP
    [ -z "$3" ] && return 0
    printf '{"id":"%s","who":"%s","value":%s,"rep":%s}\n' "$1" "$2" "$3" "$4" >>"$RESULTS"
}
jget() { "$PY" -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2], {}, {"d": d}))' "$1" "$2"; }
calc() { awk "BEGIN { printf \"%.${2:-3}f\", $1 }"; }

{
    echo "date: $(date -Is)"
    echo "host: $(uname -srm), $(nproc) cpus, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)"
    echo "git: $(git -C "$REPO_DIR" rev-parse --short HEAD 2>/dev/null) $(git -C "$REPO_DIR" status --porcelain -- crates 2>/dev/null | wc -l) uncommitted files under crates/"
    echo "nginx: $("$NGINX" -v 2>&1)"
    echo "wrk: $(dpkg-query -W -f='${Version}' wrk 2>/dev/null), iperf3: $(iperf3 --version | head -1)"
    echo "downtime: $DOWNTIME_BIN ($(stat -c %y "$DOWNTIME_BIN" 2>/dev/null | cut -d. -f1))"
    echo "targets: ${TARGETS[*]}; REPEAT=$REPEAT DURATION=$DURATION nofile=$NOFILE server cpu $SERVER_CPU, load cpu $LOAD_CPU"
    echo "loadavg at start: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$OUT/meta.txt" >&2

# Files of known sizes served by the upstream.
truncate -s 1048576 "$WORK/files/1MiB.bin"
truncate -s 1000000 "$WORK/files/1MB.bin"
truncate -s 100000000 "$WORK/files/100MB.bin"

check_ports_free "$UP_PORT" "$NGX_TCP_PORT" "$NGX_BULK_PORT" "$NGX_BW1_PORT" "$NGX_BW2_PORT" \
    "$IPERF_PORT" "$NGX_503_PORT" "$NGX_PROXY_PORT" "$DT_API_PORT" "$DT_TCP_PORT" \
    "$DT_BULK_PORT" "$DT_LAT_PORT" "$DT_BW_PORT" "$DT_WEBLAT_PORT" "$DT_STREAM_PORT" \
    "$DT_STANDIN_PORT" "$DT_WEB_PORT" "$DT_WEB20_PORT" "$NGX_TLS_PORT" "$DT_TLS_PORT" || exit 1

# h: downtime's local CA in the work dir (serve --ca-dir), made before downtime starts
DT_CA_DIR=""
if want h && [ -z "${SKIP_DOWNTIME:-}" ] && [ -x "$DOWNTIME_BIN" ]; then
    if "$DOWNTIME_BIN" ca --ca-dir "$WORK/ca" >"$WORK/ca.out" 2>&1; then
        DT_CA_DIR=$WORK/ca
    else
        log "downtime ca --ca-dir $WORK/ca failed: $(head -3 "$WORK/ca.out")"
    fi
fi

# "master worker" PIDs, set by start_nginx
NGX_PID_stream="" NGX_PID_httpref="" NGX_PID_tlsref=""
start_nginx upstream "$LOAD_CPU" "$UP_PORT" || exit 1
start_nginx stream "$SERVER_CPU" "$NGX_TCP_PORT" || exit 1

HTTP_FAULTS=${HTTP_FAULTS:-20}
# dt_add_faults PROXY N: N status faults that match only paths no benchmark requests
dt_add_faults() {
    local i
    for i in $(seq "$2"); do
        dt_expect 200 POST "/proxies/$1/toxics" \
            "{\"type\":\"status\",\"name\":\"f$i\",\"attributes\":{\"status\":500},\"match\":{\"path\":\"/never-$i\"}}" ||
            return 1
    done
}

DT_OK=0
# (Re)start downtime and create its proxies; DT_OK=1 when that worked.
dt_setup() {
    DT_OK=0
    if [ -n "$DT_PID" ]; then
        cp "$WORK/downtime.log" "$OUT/downtime.$DT_PID.log" 2>/dev/null
        stop_pid "$DT_PID"
        DT_PID=""
    fi
    [ -z "${SKIP_DOWNTIME:-}" ] || return 1
    start_downtime || return 1
    if dt_proxy tcp "$DT_TCP_PORT" "$UP_PORT" &&
        dt_proxy bulk "$DT_BULK_PORT" "$IPERF_PORT" &&
        dt_proxy lat "$DT_LAT_PORT" "$UP_PORT" &&
        dt_proxy bw "$DT_BW_PORT" "$UP_PORT" &&
        dt_proxy stream "$DT_STREAM_PORT" "$UP_PORT" &&
        dt_http_proxy standin "$DT_STANDIN_PORT" &&
        dt_http_proxy web "$DT_WEB_PORT" "$UP_PORT" &&
        dt_http_proxy web20 "$DT_WEB20_PORT" "$UP_PORT" &&
        dt_http_proxy weblat "$DT_WEBLAT_PORT" "$UP_PORT" &&
        dt_add_faults web20 "$HTTP_FAULTS"; then
        DT_OK=1
    else
        log "creating downtime proxies failed"
    fi
}
dt_setup
[ "$DT_OK" = 1 ] && emit dt.rss_start downtime "$(calc "$(rss_kib "$DT_PID") / 1024" 1)" 1
[ "$DT_OK" = 1 ] || log "downtime is not available: its columns will be empty"

# run_wrk LABEL PORT PATH CONNS SECS [PIDS...]: sets WRK_REQS WRK_RPS CPU_US (per request)
run_wrk() {
    local label=$1 port=$2 path=$3 conns=$4 secs=$5
    shift 5
    local t0=0 t1=0
    [ $# -gt 0 ] && t0=$(cpu_ticks "$@")
    # WRK_SCHEME (http or https) and WRK_HEADER (one extra request header) for target h
    local hdr=()
    [ -n "${WRK_HEADER:-}" ] && hdr=(-H "$WRK_HEADER")
    taskset -c "$LOAD_CPU" wrk -t1 -c"$conns" -d"${secs}s" --timeout "${WRK_TIMEOUT:-2s}" --latency \
        "${hdr[@]}" "${WRK_SCHEME:-http}://127.0.0.1:$port$path" >"$OUT/$label.txt" 2>&1
    [ $# -gt 0 ] && t1=$(cpu_ticks "$@")
    WRK_REQS=$(awk '/requests in/ {print $1}' "$OUT/$label.txt")
    WRK_RPS=$(awk '/^Requests\/sec/ {print $2}' "$OUT/$label.txt")
    CPU_US=""
    if [ -n "$WRK_REQS" ] && [ "$WRK_REQS" -gt 0 ] && [ $# -gt 0 ]; then
        CPU_US=$(calc "($t1 - $t0) * 1000000 / $CLK_TCK / $WRK_REQS" 2)
    fi
    WRK_MBPS=$(awk '/^Transfer\/sec/ {v = $2; u = substr(v, length(v) - 1); v += 0;
        if (u == "GB") v *= 1024; else if (u == "KB") v /= 1024; else if (u != "MB") v /= 1048576;
        printf "%.1f", v * 1.048576}' "$OUT/$label.txt")  # wrk's MB are MiB: MB/s (10^6)
    WRK_NON2XX=$(awk '/^  Non-2xx/ {print $NF}' "$OUT/$label.txt")
    WRK_SOCKERR=$(awk -F'[ ,]+' '/Socket errors/ {print $5 + $7 + $9 + $11}' "$OUT/$label.txt")
    local errs
    errs=$(grep -E 'Socket errors|Non-2xx' "$OUT/$label.txt" | tr '\n' ' ')
    log "$label: ${WRK_RPS:-?} req/s, ${WRK_REQS:-?} requests, server cpu ${CPU_US:-?} us/req $errs"
}

wait_listen() { # PORT SECS: a listening socket exists (without connecting to it)
    for _ in $(seq $(($2 * 10))); do
        [ -n "$(ss -Htln "( sport = :$1 )")" ] && return 0
        sleep 0.1
    done
    return 1
}

# run_iperf LABEL PORT EXTRA [PIDS...]: sets IPERF_GBPS, CPU_MS_PER_GB
run_iperf() {
    local label=$1 port=$2 extra=$3
    shift 3
    taskset -c "$LOAD_CPU" iperf3 -s -1 -B 127.0.0.1 -p "$IPERF_PORT" >"$OUT/$label.server.txt" 2>&1 &
    local spid=$!
    STARTED_PIDS+=("$spid")
    wait_listen "$IPERF_PORT" 5 || log "iperf3 server did not listen"
    local t0=0 t1=0
    [ $# -gt 0 ] && t0=$(cpu_ticks "$@")
    # shellcheck disable=SC2086
    timeout $((DURATION + 20)) taskset -c "$LOAD_CPU" iperf3 -c 127.0.0.1 -p "$port" \
        -t "$DURATION" -J $extra >"$OUT/$label.json" 2>&1
    [ $# -gt 0 ] && t1=$(cpu_ticks "$@")
    sleep 0.5
    stop_pid "$spid"
    IPERF_GBPS=$(jget "$OUT/$label.json" 'round(d["end"]["sum_received"]["bits_per_second"] / 1e9, 2)' 2>/dev/null)
    local bytes
    bytes=$(jget "$OUT/$label.json" 'd["end"]["sum_received"]["bytes"]' 2>/dev/null)
    CPU_MS_PER_GB=""
    if [ -n "$bytes" ] && [ $# -gt 0 ]; then
        CPU_MS_PER_GB=$(calc "($t1 - $t0) * 1000 / $CLK_TCK / ($bytes / 1e9)" 1)
    fi
    log "$label: ${IPERF_GBPS:-?} Gbit/s, server cpu ${CPU_MS_PER_GB:-?} ms/GB"
}

# ---------------------------------------------------------------- a
target_a() {
    local rep
    for rep in $(seq "$REPEAT"); do
        run_wrk "a-direct-$rep" "$UP_PORT" / 64 "$DURATION"
        emit a.rps direct "$WRK_RPS" "$rep"
        # shellcheck disable=SC2086
        run_wrk "a-nginx-$rep" "$NGX_TCP_PORT" / 64 "$DURATION" $NGX_PID_stream
        emit a.rps nginx "$WRK_RPS" "$rep"
        emit a.cpu nginx "$CPU_US" "$rep"
        if [ "$DT_OK" = 1 ]; then
            run_wrk "a-downtime-$rep" "$DT_TCP_PORT" / 64 "$DURATION" "$DT_PID"
            emit a.rps downtime "$WRK_RPS" "$rep"
            emit a.cpu downtime "$CPU_US" "$rep"
        fi
    done
}

# ---------------------------------------------------------------- b
target_b() {
    local rep dir extra
    for rep in $(seq "$REPEAT"); do
        for dir in up down; do
            extra=""
            [ "$dir" = down ] && extra="-R"
            run_iperf "b-$dir-direct-$rep" "$IPERF_PORT" "$extra"
            emit "b.$dir" direct "$IPERF_GBPS" "$rep"
            # shellcheck disable=SC2086
            run_iperf "b-$dir-nginx-$rep" "$NGX_BULK_PORT" "$extra" $NGX_PID_stream
            emit "b.$dir" nginx "$IPERF_GBPS" "$rep"
            emit "b.${dir}_cpu" nginx "$CPU_MS_PER_GB" "$rep"
            if [ "$DT_OK" = 1 ]; then
                run_iperf "b-$dir-downtime-$rep" "$DT_BULK_PORT" "$extra" "$DT_PID"
                emit "b.$dir" downtime "$IPERF_GBPS" "$rep"
                emit "b.${dir}_cpu" downtime "$CPU_MS_PER_GB" "$rep"
            fi
        done
    done
}

# ---------------------------------------------------------------- c
run_latency() { # LABEL PROXY_PORT PATH
    taskset -c "$LOAD_CPU" "${TOOL[@]}" latency --direct "$UP_PORT" --proxy "$2" --path "$3" \
        --samples "$LAT_SAMPLES" >"$OUT/$1.json" 2>"$OUT/$1.err"
    if [ -s "$OUT/$1.json" ]; then
        LAT_P50=$(jget "$OUT/$1.json" 'd["added_p50_ms"]')
        LAT_P99=$(jget "$OUT/$1.json" 'd["added_p99_ms"]')
    else
        LAT_P50="" LAT_P99=""
        head -3 "$OUT/$1.err" >&2
    fi
    log "$1: added p50 ${LAT_P50:-?} ms, p99 ${LAT_P99:-?} ms (proxied minus direct median)"
}

target_c() {
    local rep size path toxic='{"type":"latency","stream":"downstream","attributes":{"latency":100}}'
    if [ "$DT_OK" = 1 ]; then
        local p
        for p in lat weblat; do
            dt_api DELETE "/proxies/$p/toxics/latency_downstream" >/dev/null
            dt_expect 200 POST "/proxies/$p/toxics" "$toxic" ||
                log "could not add the latency toxic to $p"
        done
    fi
    for rep in $(seq "$REPEAT"); do
        for size in small 1m; do
            path=/
            [ "$size" = 1m ] && path=/files/1MiB.bin
            run_latency "c-base-$size-nginx-$rep" "$NGX_TCP_PORT" "$path"
            emit "c.base_${size}_p50" nginx "$LAT_P50" "$rep"
            emit "c.base_${size}_p99" nginx "$LAT_P99" "$rep"
            if [ "$DT_OK" = 1 ]; then
                run_latency "c-base-$size-downtime-$rep" "$DT_TCP_PORT" "$path"
                emit "c.base_${size}_p50" downtime "$LAT_P50" "$rep"
                emit "c.base_${size}_p99" downtime "$LAT_P99" "$rep"
                run_latency "c-lat100-$size-downtime-$rep" "$DT_LAT_PORT" "$path"
                emit "c.${size}_p50" downtime "$LAT_P50" "$rep"
                emit "c.${size}_p99" downtime "$LAT_P99" "$rep"
                # the same toxic on an HTTP proxy: TCP toxic layer beneath hyper
                run_latency "c-httplat100-$size-downtime-$rep" "$DT_WEBLAT_PORT" "$path"
                emit "c.http_${size}_p50" downtime "$LAT_P50" "$rep"
                emit "c.http_${size}_p99" downtime "$LAT_P99" "$rep"
            fi
        done
    done
    if [ "$DT_OK" = 1 ]; then
        dt_api DELETE /proxies/lat/toxics/latency_downstream >/dev/null
        dt_api DELETE /proxies/weblat/toxics/latency_downstream >/dev/null
    fi
}

# ---------------------------------------------------------------- d
run_bw() { # LABEL PORT PATH EXPECTED_Bps
    taskset -c "$LOAD_CPU" "${TOOL[@]}" bandwidth --port "$2" --path "$3" --expect-rate "$4" \
        --max-seconds 40 >"$OUT/$1.json" 2>"$OUT/$1.err"
    BW_ERR=$(jget "$OUT/$1.json" 'd["error_pct"]' 2>/dev/null)
    log "$1: $(jget "$OUT/$1.json" 'd["bytes"], "bytes in", d["seconds"], "s =", d["rate_Bps"], "B/s"' 2>/dev/null), error ${BW_ERR:-?} %"
}

target_d() {
    local rep
    for rep in $(seq "$REPEAT"); do
        run_bw "d-100-nginx-$rep" "$NGX_BW1_PORT" /files/1MB.bin 100000
        emit d.100_err nginx "$BW_ERR" "$rep"
        run_bw "d-10000-nginx-$rep" "$NGX_BW2_PORT" /files/100MB.bin 10000000
        emit d.10000_err nginx "$BW_ERR" "$rep"
        if [ "$DT_OK" = 1 ]; then
            dt_api DELETE /proxies/bw/toxics/bandwidth_downstream >/dev/null
            dt_expect 200 POST /proxies/bw/toxics '{"type":"bandwidth","stream":"downstream","attributes":{"rate":100}}'
            run_bw "d-100-downtime-$rep" "$DT_BW_PORT" /files/1MB.bin 100000
            emit d.100_err downtime "$BW_ERR" "$rep"
            dt_api DELETE /proxies/bw/toxics/bandwidth_downstream >/dev/null
            dt_expect 200 POST /proxies/bw/toxics '{"type":"bandwidth","stream":"downstream","attributes":{"rate":10000}}'
            run_bw "d-10000-downtime-$rep" "$DT_BW_PORT" /files/100MB.bin 10000000
            emit d.10000_err downtime "$BW_ERR" "$rep"
            dt_api DELETE /proxies/bw/toxics/bandwidth_downstream >/dev/null
        fi
    done
}

# ---------------------------------------------------------------- e
# run_idle WHO PORT REP PIDS...: hold N idle proxied connections, read the proxy's RSS
run_idle() {
    local who=$1 port=$2 rep=$3
    shift 3
    local n=$IDLE_CONNS max=$(((NOFILE - 100) / 2))
    [ "$n" -gt "$max" ] && n=$max
    local label="e-idle-$who-$rep" before
    before=$(rss_kib "$@")
    rm -f "$WORK/idle.ready" "$WORK/idle.stop"
    taskset -c "$LOAD_CPU" "${TOOL[@]}" idle --port "$port" --count "$n" --hold 180 \
        --ready-file "$WORK/idle.ready" --stop-file "$WORK/idle.stop" >"$OUT/$label.json" 2>"$OUT/$label.err" &
    local tpid=$!
    STARTED_PIDS+=("$tpid")
    for _ in $(seq 1800); do
        [ -f "$WORK/idle.ready" ] && break
        kill -0 "$tpid" 2>/dev/null || break
        sleep 0.1
    done
    sleep 2
    local rss up
    rss=$(rss_kib "$@")
    up=$(established_on "$UP_PORT")
    touch "$WORK/idle.stop"
    wait "$tpid" 2>/dev/null
    forget_pid "$tpid"
    sleep 2
    local after opened
    after=$(rss_kib "$@")
    opened=$(jget "$OUT/$label.json" 'd["opened"]' 2>/dev/null)
    log "$label: ${opened:-?} of $n connections open ($up established at the upstream), RSS $((before / 1024)) -> $((rss / 1024)) MiB, $((after / 1024)) MiB after closing; $(cat "$OUT/$label.json" 2>/dev/null)"
    emit e.idle_n "$who" "${opened:-}" "$rep"
    emit e.idle_up "$who" "$up" "$rep"
    emit e.idle_rss "$who" "$(calc "$rss / 1024" 1)" "$rep"
    emit e.idle_rss_after "$who" "$(calc "$after / 1024" 1)" "$rep"
    # Per-connection cost, so that a run with fewer than 10,000 connections (descriptor
    # limit) can be scaled: (RSS with N - RSS before) / N, times 10,000, plus RSS before.
    if [ -n "$opened" ] && [ "$opened" -gt 0 ]; then
        emit e.idle_rss_10k "$who" "$(calc "($before + ($rss - $before) * 10000 / $opened) / 1024" 1)" "$rep"
    fi
}

# run_churn REP LOADED(0|1): toxic add/remove through the API, optionally under load
run_churn() {
    local rep=$1 loaded=$2 label wpid="" mid_rss="" conns="" pre_rss=""
    label="e-churn-$([ "$loaded" = 1 ] && echo load || echo idle)-$rep"
    if [ "$loaded" = 1 ]; then
        taskset -c "$LOAD_CPU" wrk -t1 -c"$STREAM_CONNS" -d30s --timeout 30s \
            "http://127.0.0.1:$DT_STREAM_PORT/files/1MiB.bin" >"$OUT/$label.wrk.txt" 2>&1 &
        wpid=$!
        STARTED_PIDS+=("$wpid")
        sleep 4
        conns=$(established_on "$DT_STREAM_PORT")
        pre_rss=$(rss_kib "$DT_PID")
        # server CPU use with streaming only (1 s sample), then during the churn
        local c0 c1 ns0 ns1
        c0=$(cpu_ticks "$DT_PID"); ns0=$(date +%s%N); sleep 1
        c1=$(cpu_ticks "$DT_PID"); ns1=$(date +%s%N)
        emit e.stream_cpu downtime "$(calc "($c1 - $c0) * 100 / $CLK_TCK / (($ns1 - $ns0) / 1e9)" 0)" "$rep"
        c0=$c1; ns0=$(date +%s%N)
    fi
    # The churn client shares the load core with wrk and the upstream: give it priority
    # so that its own scheduling delay is not charged to the server.
    taskset -c "$LOAD_CPU" nice -n -10 "${TOOL[@]}" churn --api "127.0.0.1:$DT_API_PORT" --proxy stream \
        --toxic "$CHURN_TOXIC" --cycles "$CHURN_CYCLES" --max-seconds 22 >"$OUT/$label.json" 2>"$OUT/$label.err"
    if [ -n "$wpid" ]; then
        mid_rss=$(rss_kib "$DT_PID")
        c1=$(cpu_ticks "$DT_PID"); ns1=$(date +%s%N)
        emit e.churn_cpu downtime "$(calc "($c1 - $c0) * 100 / $CLK_TCK / (($ns1 - $ns0) / 1e9)" 0)" "$rep"
        wait "$wpid" 2>/dev/null
        forget_pid "$wpid"
        sleep 2
        emit e.stream_rss downtime "$(calc "$pre_rss / 1024" 1)" "$rep"
        emit e.stream_rss_churn downtime "$(calc "$mid_rss / 1024" 1)" "$rep"
        emit e.stream_rss_after downtime "$(calc "$(rss_kib "$DT_PID") / 1024" 1)" "$rep"
        emit e.stream_conns downtime "$conns" "$rep"
        emit e.stream_rps downtime "$(awk '/^Requests\/sec/ {print $2}' "$OUT/$label.wrk.txt")" "$rep"
    fi
    local k
    for k in add remove version; do
        local p50 p99
        p50=$(jget "$OUT/$label.json" "d['${k}_ms']['p50']" 2>/dev/null)
        p99=$(jget "$OUT/$label.json" "d['${k}_ms']['p99']" 2>/dev/null)
        if [ "$loaded" = 1 ]; then
            emit "e.api_${k}_p50" downtime "$p50" "$rep"
            emit "e.api_${k}_p99" downtime "$p99" "$rep"
        else
            emit "e.api_${k}_p99_noload" downtime "$p99" "$rep"
        fi
    done
    log "$label: $(head -c 600 "$OUT/$label.json" 2>/dev/null) conns=${conns:-0} rss before churn $((${pre_rss:-0} / 1024)) MiB, at its end $((${mid_rss:-0} / 1024)) MiB"
}

# nginx's RSS with the same number of streaming connections, as a reference
nginx_stream_rss() {
    local rep=$1 label="e-stream-nginx-$1"
    # shellcheck disable=SC2086
    taskset -c "$LOAD_CPU" wrk -t1 -c"$STREAM_CONNS" -d12s --timeout 30s \
        "http://127.0.0.1:$NGX_TCP_PORT/files/1MiB.bin" >"$OUT/$label.wrk.txt" 2>&1 &
    local wpid=$!
    STARTED_PIDS+=("$wpid")
    sleep 6
    local conns rss
    conns=$(established_on "$NGX_TCP_PORT")
    # shellcheck disable=SC2086
    rss=$(rss_kib $NGX_PID_stream)
    wait "$wpid" 2>/dev/null
    forget_pid "$wpid"
    emit e.stream_rss nginx "$(calc "$rss / 1024" 1)" "$rep"
    emit e.stream_conns nginx "$conns" "$rep"
    emit e.stream_rps nginx "$(awk '/^Requests\/sec/ {print $2}' "$OUT/$label.wrk.txt")" "$rep"
    log "$label: $conns conns, RSS $((rss / 1024)) MiB"
}

target_e() {
    local rep
    for rep in $(seq "$REPEAT"); do
        # shellcheck disable=SC2086
        run_idle nginx "$NGX_TCP_PORT" "$rep" $NGX_PID_stream
        nginx_stream_rss "$rep"
        # a fresh downtime process for each repetition, so that the idle-connection RSS
        # is not inflated by memory kept from earlier targets or repetitions
        [ -z "${SKIP_DOWNTIME:-}" ] && dt_setup
        if [ "$DT_OK" = 1 ]; then
            run_idle downtime "$DT_TCP_PORT" "$rep" "$DT_PID"
            run_churn "$rep" 0
            run_churn "$rep" 1
            emit e.hwm downtime "$(calc "$(hwm_kib "$DT_PID") / 1024" 1)" "$rep"
        fi
    done
}

# ---------------------------------------------------------------- f
F_ERRS=0
# f_pair ID LABEL NGX_PORT DT_PORT PATH REP: nginx then downtime, same path, wrk -c64
f_pair() {
    local id=$1 label=$2 nport=$3 dport=$4 path=$5 rep=$6
    # shellcheck disable=SC2154,SC2086
    run_wrk "f-$label-nginx-$rep" "$nport" "$path" 64 "$DURATION" ${NGX_PID_httpref:-}
    emit "f.${id}_rps" nginx "$WRK_RPS" "$rep"
    emit "f.${id}_cpu" nginx "$CPU_US" "$rep"
    [ "$id" = 1m ] && emit f.1m_mbps nginx "$WRK_MBPS" "$rep"
    if [ "$DT_OK" = 1 ]; then
        run_wrk "f-$label-downtime-$rep" "$dport" "$path" 64 "$DURATION" "$DT_PID"
        emit "f.${id}_rps" downtime "$WRK_RPS" "$rep"
        emit "f.${id}_cpu" downtime "$CPU_US" "$rep"
        F_ERRS=$((F_ERRS + ${WRK_SOCKERR:-0}))
        [ "$id" != 503 ] && F_ERRS=$((F_ERRS + ${WRK_NON2XX:-0}))
        [ "$id" = 1m ] && emit f.1m_mbps downtime "$WRK_MBPS" "$rep"
    fi
}

# The responses each side gives, kept for the record (status line, headers, body size).
f_record_responses() {
    local who port
    for who in nginx-503:$NGX_503_PORT downtime-standin:$DT_STANDIN_PORT \
        nginx-proxy:$NGX_PROXY_PORT downtime-web:$DT_WEB_PORT downtime-web20:$DT_WEB20_PORT; do
        port=${who#*:}
        curl -s -m 5 -A downtime-bench/1 -D - -o "$OUT/f-response-${who%%:*}.body" \
            "http://127.0.0.1:$port/" >"$OUT/f-response-${who%%:*}.headers" 2>/dev/null
    done
    if cmp -s "$OUT/f-response-nginx-503.body" "$OUT/f-response-downtime-standin.body"; then
        log "f: nginx 503 and downtime stand-in bodies are identical ($(wc -c <"$OUT/f-response-nginx-503.body") bytes)"
    else
        log "f: WARNING: the nginx 503 body differs from downtime's stand-in body"
    fi
}

target_f() {
    # nginx's 503 gets the stand-in's own body: fetch it first
    if [ "$DT_OK" = 1 ]; then
        curl -s -m 5 -A downtime-bench/1 -o "$WORK/standin.body" "http://127.0.0.1:$DT_STANDIN_PORT/"
    fi
    start_nginx httpref "$SERVER_CPU" "$NGX_503_PORT" || return 1
    wait_port "$NGX_PROXY_PORT" 5
    f_record_responses
    local rep base faults
    for rep in $(seq "$REPEAT"); do
        F_ERRS=0 # downtime: socket errors, and non-2xx answers where 200 was due
        f_pair 503 503 "$NGX_503_PORT" "$DT_STANDIN_PORT" / "$rep"
        f_pair proxy proxy "$NGX_PROXY_PORT" "$DT_WEB_PORT" / "$rep"
        base=""
        [ "$DT_OK" = 1 ] && base=$WRK_RPS
        if [ "$DT_OK" = 1 ]; then
            # the same pass-through with HTTP_FAULTS configured faults that never match,
            # run right after the no-fault run (same conditions as far as possible)
            run_wrk "f-faults-downtime-$rep" "$DT_WEB20_PORT" / 64 "$DURATION" "$DT_PID"
            faults=$WRK_RPS
            emit f.faults_rps downtime "$faults" "$rep"
            emit f.faults_cpu downtime "$CPU_US" "$rep"
            F_ERRS=$((F_ERRS + ${WRK_SOCKERR:-0} + ${WRK_NON2XX:-0}))
            [ -n "$base" ] && [ -n "$faults" ] &&
                emit f.faults_cost downtime "$(calc "(1 - $faults / $base) * 100" 2)" "$rep"
        fi
        WRK_TIMEOUT=10s f_pair 1m 1m "$NGX_PROXY_PORT" "$DT_WEB_PORT" /files/1MiB.bin "$rep"
        [ "$DT_OK" = 1 ] && emit f.errors downtime "$F_ERRS" "$rep"
    done
    if [ "$DT_OK" = 1 ]; then
        dt_api GET /proxies/web20/toxics >"$OUT/f-web20-toxics.txt"
        emit f.rss downtime "$(calc "$(rss_kib "$DT_PID") / 1024" 1)" 1
    fi
    stop_nginx httpref
}

# g_churn SECS: adds and removes a latency toxic on proxy "tcp" every 20 ms for SECS
# seconds (two history events per cycle); runs on the load CPU, stops by itself.
g_churn() {
    local end=$((SECONDS + $1)) body='{"name":"churn","type":"latency","attributes":{"latency":1}}'
    while [ "$SECONDS" -lt "$end" ]; do
        dt_api POST /proxies/tcp/toxics "$body" >/dev/null
        dt_api DELETE /proxies/tcp/toxics/churn >/dev/null
        sleep 0.02
    done
}

# g_run LABEL REP: wrk against the pass-through proxy "web" while g_churn runs
g_run() {
    taskset -c "$LOAD_CPU" bash -c "$(declare -f g_churn dt_api); DT_API_PORT=$DT_API_PORT; g_churn $DURATION" &
    local churn=$!
    run_wrk "g-$1-$2" "$DT_WEB_PORT" / 64 "$DURATION" "$DT_PID"
    wait "$churn"
}

target_g() {
    local rep off on events
    for rep in $(seq "$REPEAT"); do
        DT_DB=:memory: dt_setup
        [ "$DT_OK" = 1 ] || return 1
        g_run off "$rep"
        off=$WRK_RPS
        emit g.off_rps downtime "$off" "$rep"
        rm -f "$WORK/history.db"*
        DT_DB=$WORK/history.db dt_setup
        [ "$DT_OK" = 1 ] || return 1
        g_run on "$rep"
        on=$WRK_RPS
        emit g.on_rps downtime "$on" "$rep"
        emit g.on_cpu downtime "$CPU_US" "$rep"
        events=$(curl -s -m 10 -A downtime-bench/1 "http://127.0.0.1:$DT_API_PORT/history/events?limit=1000" |
            "$PY" -c 'import json,sys; print(len(json.load(sys.stdin)))' 2>/dev/null)
        emit g.events downtime "$events" "$rep"
        [ -n "$off" ] && [ -n "$on" ] && emit g.cost downtime "$(calc "(1 - $on / $off) * 100" 2)" "$rep"
    done
}

# ---------------------------------------------------------------- h
STIME_SECS=${STIME_SECS:-10}
# h_certs: nginx's leaf, ECDSA P-256, issued with openssl from downtime's local CA
# ($DT_CA_DIR; without downtime, a P-256 CA made here with openssl) for the names
# downtime's default leaf carries (localhost, 127.0.0.1, ::1); chain leaf + CA, as downtime
# sends it.
h_certs() {
    local d=$WORK/tls ca=$DT_CA_DIR
    mkdir -p "$d"
    if [ -z "$ca" ]; then
        ca=$d/ca
        mkdir -p "$ca"
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
            -subj "/CN=bench CA" -keyout "$ca/downtime-ca-key.pem" -out "$ca/downtime-ca.pem" \
            2>"$d/openssl.err" || return 1
    fi
    H_CA=$ca/downtime-ca.pem
    printf '%s\n' 'subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1' 'extendedKeyUsage=serverAuth' \
        'keyUsage=critical,digitalSignature' 'basicConstraints=CA:FALSE' >"$d/ext.cnf"
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$d/nginx-key.pem" 2>>"$d/openssl.err" &&
        openssl req -new -key "$d/nginx-key.pem" -subj /CN=127.0.0.1 -out "$d/nginx.csr" 2>>"$d/openssl.err" &&
        openssl x509 -req -in "$d/nginx.csr" -CA "$H_CA" -CAkey "$ca/downtime-ca-key.pem" \
            -CAcreateserial -CAserial "$d/ca.srl" -days 30 -sha256 -extfile "$d/ext.cnf" \
            -out "$d/nginx-leaf.pem" 2>>"$d/openssl.err" &&
        cat "$d/nginx-leaf.pem" "$H_CA" >"$d/nginx-chain.pem" &&
        chmod 644 "$d"/nginx-*.pem
}

# run_stime LABEL PORT new|reuse PIDS...: openssl s_time, one connection at a time for
# STIME_SECS, each fetching / (HTTP/1.0, closed by the server); sets ST_RATE (connections
# per wall second), ST_CPU (server us per connection), ST_REUSED (% resumed: s_time prints
# 'r' for a resumed session, '*' for a full handshake)
run_stime() {
    local label=$1 port=$2 mode=$3
    shift 3
    local t0 t1 ns0 ns1 conns secs
    t0=$(cpu_ticks "$@")
    ns0=$(date +%s%N)
    timeout $((STIME_SECS + 20)) taskset -c "$LOAD_CPU" openssl s_time -connect "127.0.0.1:$port" \
        -"$mode" -time "$STIME_SECS" -tls1_3 -www / >"$OUT/$label.txt" 2>&1
    ns1=$(date +%s%N)
    t1=$(cpu_ticks "$@")
    # "N connections in S real seconds, ...": s_time's seconds are whole; time it here
    conns=$(awk '/connections in .* real seconds/ {print $1; exit}' "$OUT/$label.txt")
    secs=$(calc "($ns1 - $ns0) / 1e9" 3)
    ST_RATE="" ST_CPU="" ST_REUSED=""
    if [ -n "${conns:-}" ] && [ "$conns" -gt 0 ]; then
        ST_RATE=$(calc "$conns / $secs" 1)
        ST_CPU=$(calc "($t1 - $t0) * 1000000 / $CLK_TCK / $conns" 1)
        local r star
        r=$(grep -E '^[*r.]+$' "$OUT/$label.txt" | tr -cd 'r' | wc -c)
        star=$(grep -E '^[*r.]+$' "$OUT/$label.txt" | tr -cd '*' | wc -c)
        [ $((r + star)) -gt 0 ] && ST_REUSED=$(calc "$r * 100 / ($r + $star)" 1)
    fi
    log "$label: ${conns:-?} connections in ${secs:-?} s = ${ST_RATE:-?}/s, server cpu ${ST_CPU:-?} us/conn, resumed ${ST_REUSED:-?} %"
}

# h_side WHO PORT REP PIDS...: the four TLS measurements against one server
h_side() {
    local who=$1 port=$2 rep=$3
    shift 3
    WRK_SCHEME=https run_wrk "h-ka-$who-$rep" "$port" / 64 "$DURATION" "$@"
    emit h.ka_rps "$who" "$WRK_RPS" "$rep"
    emit h.ka_cpu "$who" "$CPU_US" "$rep"
    WRK_SCHEME=https WRK_HEADER='Connection: close' run_wrk "h-close-$who-$rep" "$port" / 64 "$DURATION" "$@"
    emit h.close_rps "$who" "$WRK_RPS" "$rep"
    emit h.close_cpu "$who" "$CPU_US" "$rep"
    emit h.close_errors "$who" "${WRK_SOCKERR:-0}" "$rep"
    run_stime "h-new-$who-$rep" "$port" new "$@"
    emit h.new_rate "$who" "$ST_RATE" "$rep"
    emit h.new_cpu "$who" "$ST_CPU" "$rep"
    run_stime "h-reuse-$who-$rep" "$port" reuse "$@"
    emit h.reuse_rate "$who" "$ST_RATE" "$rep"
    emit h.reuse_cpu "$who" "$ST_CPU" "$rep"
    emit h.reused_pct "$who" "$ST_REUSED" "$rep"
}

target_h() {
    command -v openssl >/dev/null || { log "h needs openssl"; return 1; }
    if [ "$DT_OK" = 1 ]; then
        [ -n "$DT_CA_DIR" ] || { log "h: no local CA for downtime"; return 1; }
        dt_tls_standin tlsstandin "$DT_TLS_PORT" || return 1
        curl -s -m 5 -A downtime-bench/1 --cacert "$DT_CA_DIR/downtime-ca.pem" \
            -o "$WORK/standin.body" "https://127.0.0.1:$DT_TLS_PORT/"
    fi
    h_certs || { log "h: could not issue nginx's leaf: $(tail -3 "$WORK/tls/openssl.err")"; return 1; }
    start_nginx tlsref "$SERVER_CPU" "$NGX_TLS_PORT" || return 1
    # what each side presents and negotiates, and the response, for the record
    local who port
    for who in nginx:$NGX_TLS_PORT downtime:$DT_TLS_PORT; do
        port=${who#*:}
        [ "${who%%:*}" = downtime ] && [ "$DT_OK" != 1 ] && continue
        timeout 10 openssl s_client -connect "127.0.0.1:$port" -servername localhost -CAfile "$H_CA" \
            -showcerts -brief </dev/null >"$OUT/h-handshake-${who%%:*}.txt" 2>&1
        curl -s -m 5 -A downtime-bench/1 --cacert "$H_CA" -D - -o "$OUT/h-response-${who%%:*}.body" \
            "https://127.0.0.1:$port/" >"$OUT/h-response-${who%%:*}.headers" 2>"$OUT/h-response-${who%%:*}.err"
        log "h: ${who%%:*}: $(grep -E 'Protocol version|Ciphersuite|Peer signature type|Server Temp Key|Verification' "$OUT/h-handshake-${who%%:*}.txt" | tr '\n' ';')"
    done
    if cmp -s "$OUT/h-response-nginx.body" "$OUT/h-response-downtime.body"; then
        log "h: nginx and downtime bodies are identical ($(wc -c <"$OUT/h-response-nginx.body") bytes)"
    else
        log "h: WARNING: the nginx 503 body differs from downtime's TLS stand-in body"
    fi
    local rep
    for rep in $(seq "$REPEAT"); do
        # shellcheck disable=SC2086
        h_side nginx "$NGX_TLS_PORT" "$rep" $NGX_PID_tlsref
        [ "$DT_OK" = 1 ] && h_side downtime "$DT_TLS_PORT" "$rep" "$DT_PID"
    done
    stop_nginx tlsref
    [ "$DT_OK" = 1 ] && dt_api DELETE /proxies/tlsstandin >/dev/null
    return 0
}

for t in "${TARGETS[@]}"; do
    log "=== target $t"
    "target_$t"
done

if [ "$DT_OK" = 1 ]; then
    if kill -0 "$DT_PID" 2>/dev/null; then
        emit dt.rss_end downtime "$(calc "$(rss_kib "$DT_PID") / 1024" 1)" 1
    else
        log "downtime exited during the run; log tail:"
        tail -20 "$WORK/downtime.log" >&2
    fi
    cp "$WORK/downtime.log" "$OUT/downtime.$DT_PID.log" 2>/dev/null
fi
echo "loadavg at end: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT/meta.txt" >&2

"${TOOL[@]}" report "$RESULTS" | tee "$OUT/summary.txt"
echo "raw results: $OUT" >&2
