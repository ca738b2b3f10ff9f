#!/usr/bin/env bash
# End-to-end check of the seed scenario, with no test framework: starts the fake platform
# API, downtime (a stand-in and a pass-through proxy) and the example app in both modes, all
# on free ports; injects maintenance, latency and a rate limit; checks that the resilient app
# answers 200 within 1 s (degraded during the faults) and that the naive one answers 5xx or
# blocks. Kills only the processes it started. Exit 0 = pass, 1 = a check failed, 2 = setup.
#
#   examples/app/selftest.sh            # uses target/debug/downtime (built if missing)
#   DOWNTIME=/path/to/downtime examples/app/selftest.sh
#
# Needs bash, python3 and curl. The whole run is bounded by `timeout 60`.

set -u

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"

if [[ -z "${DOWNTIME:-}" ]]; then
    DOWNTIME="$root/target/debug/downtime"
    if [[ ! -x "$DOWNTIME" ]]; then
        echo "selftest: building downtime (cargo build -p downtime)" >&2
        (cd "$root" && cargo build -q -p downtime) || { echo "selftest: build failed" >&2; exit 2; }
    fi
fi
export DOWNTIME

# Bound the whole run: re-run this script under `timeout`, which sends SIGTERM at 60 s.
if [[ -z "${SELFTEST_BOUNDED:-}" ]]; then
    SELFTEST_BOUNDED=1 exec timeout 60 "$0" "$@"
fi

for tool in python3 curl; do
    command -v "$tool" >/dev/null || { echo "selftest: $tool not found" >&2; exit 2; }
done

work="$(mktemp -d "${TMPDIR:-/tmp}/downtime-selftest.XXXXXX")"
pids=()
failures=0

cleanup() {
    local status=$? pid
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null
    done
    if [[ $status -ne 0 || $failures -ne 0 || -n "${SELFTEST_KEEP:-}" ]]; then
        echo "selftest: logs kept in $work" >&2
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT
trap 'echo "selftest: interrupted or timed out" >&2; failures=$((failures + 1)); exit 1' INT TERM

# start NAME CMD... : runs CMD in the background, output in $work/NAME.out / .err
start() {
    local name="$1"
    shift
    "$@" >"$work/$name.out" 2>"$work/$name.err" &
    pids+=($!)
}

# first_match FILE REGEX : waits up to 10 s for a line matching REGEX, prints it
first_match() {
    local i line
    for ((i = 0; i < 100; i++)); do
        line="$(grep -m1 -E "$2" "$1" 2>/dev/null)" && { echo "$line"; return 0; }
        sleep 0.1
    done
    echo "selftest: no line matching '$2' in $1:" >&2
    cat "$1" "${1%.out}.err" >&2
    return 1
}

pass() { echo "  ok    $*"; }
fail() { echo "  FAIL  $*"; failures=$((failures + 1)); }

# get URL : sets $code, $secs (float) and $body; the client itself gives up after 10 s
get() {
    local out
    out="$(curl -s -o "$work/body" -w '%{http_code} %{time_total}' --max-time 10 "$1")"
    code="${out% *}"
    secs="${out#* }"
    body="$(cat "$work/body" 2>/dev/null)"
}

faster_than() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a < b) }'; }

# burst URL N : N requests back to back from one curl process (so they arrive within a few
# ms even on a busy machine); prints one line per request: CODE SECONDS BODY
burst() {
    local urls=() i
    for ((i = 0; i < $2; i++)); do urls+=("$1"); done
    curl -s --max-time 10 -w '\n@@ %{http_code} %{time_total}\n' "${urls[@]}" |
        awk '/^@@ / { print $2, $3, body; body = ""; next } { body = body $0 }'
}

# expect_resilient LABEL WANT_DEGRADED(true|false) [SOURCE]
expect_resilient() {
    get "$res/account"
    local what="resilient $1: $code in ${secs}s"
    if [[ "$code" != 200 ]]; then fail "$what (want 200) $body"; return; fi
    if ! faster_than "$secs" 1.0; then fail "$what (want < 1 s)"; return; fi
    if [[ "$body" != *"\"degraded\": $2"* ]]; then fail "$what (want degraded=$2) $body"; return; fi
    if [[ -n "${3:-}" && "$body" != *"\"source\": \"$3\""* ]]; then
        fail "$what (want source=$3) $body"
        return
    fi
    pass "$what, degraded=$2${3:+, source=$3}"
}

# expect_naive_5xx LABEL
expect_naive_5xx() {
    get "$naive/account"
    if [[ "$code" == 5?? ]]; then
        pass "naive $1: $code in ${secs}s"
    else
        fail "naive $1: $code in ${secs}s (want 5xx) $body"
    fi
}

toxic() { # toxic PROXY JSON
    local c
    c="$(curl -s -o "$work/toxic" -w '%{http_code}' -X POST "$api/proxies/$1/toxics" -d "$2")"
    [[ "$c" == 200 ]] || { echo "selftest: adding $2 to $1 answered $c: $(cat "$work/toxic")" >&2; exit 2; }
}
untoxic() { # untoxic PROXY NAME
    curl -s -o /dev/null -X DELETE "$api/proxies/$1/toxics/$2"
}

echo "selftest: starting fake platform API, downtime and the app (logs in $work)"
start api python3 "$here/fake_platform_api.py" --port 0 --quiet
upstream="$(first_match "$work/api.out" '^listening on ')" || exit 2
upstream="${upstream#listening on http://}"

cat >"$work/standin.toml" <<EOF
[[proxy]]
name = "platform-api"
protocol = "http"
listen = "127.0.0.1:0"

[[proxy]]
name = "platform-api-proxy"
protocol = "http"
listen = "127.0.0.1:0"
upstream = "$upstream"
EOF
start downtime "$DOWNTIME" serve --port 0 --config "$work/standin.toml"
api="$(first_match "$work/downtime.out" '^downtime API listening on ')" || exit 2
api="${api#downtime API listening on }"
proxy_url="$(first_match "$work/downtime.out" '^ *export PLATFORM_API_PROXY_URL=')" || exit 2
proxy_url="${proxy_url#*=}"
standin_url="$(first_match "$work/downtime.out" '^ *export PLATFORM_API_URL=')" || exit 2
standin_url="${standin_url#*=}"

PLATFORM_API_URL="$proxy_url" start res python3 "$here/app.py" --mode resilient --port 0 --quiet
PLATFORM_API_URL="$proxy_url" start naive python3 "$here/app.py" --mode naive --port 0 --quiet
PLATFORM_API_URL="$standin_url" start cold python3 "$here/app.py" --mode resilient --port 0 --quiet
PLATFORM_API_URL="$standin_url" start coldnaive python3 "$here/app.py" --mode naive --port 0 --quiet
res="$(first_match "$work/res.out" '^listening on ')" || exit 2
res="${res#listening on }"
naive="$(first_match "$work/naive.out" '^listening on ')" || exit 2
naive="${naive#listening on }"
cold="$(first_match "$work/cold.out" '^listening on ')" || exit 2
cold="${cold#listening on }"
coldnaive="$(first_match "$work/coldnaive.out" '^listening on ')" || exit 2
coldnaive="${coldnaive#listening on }"
echo "  api=$api proxy=$proxy_url stand-in=$standin_url upstream=http://$upstream"
echo "  resilient=$res naive=$naive (via proxy); $cold, $coldnaive (via stand-in)"

echo "baseline (no faults)"
expect_resilient "baseline" false live
get "$naive/account"
if [[ "$code" == 200 && "$body" == *'"source": "live"'* ]]; then
    pass "naive baseline: 200 in ${secs}s"
else
    fail "naive baseline: $code $body"
fi

echo "stand-in (always in maintenance), apps that never saw the real API"
get "$cold/account"
if [[ "$code" == 200 && "$body" == *'"degraded": true'* && "$body" == *'"source": "none"'* ]] &&
    faster_than "$secs" 1.0; then
    pass "resilient via stand-in: 200 in ${secs}s, degraded placeholder"
else
    fail "resilient via stand-in: $code in ${secs}s $body"
fi
get "$coldnaive/account"
if [[ "$code" == 5?? && "$body" == *maintenance* ]]; then
    pass "naive via stand-in: $code in ${secs}s, maintenance body passed through"
else
    fail "naive via stand-in: $code in ${secs}s $body"
fi

echo "maintenance on platform-api-proxy"
toxic platform-api-proxy '{"type":"maintenance"}'
expect_resilient "maintenance" true cache
expect_resilient "maintenance (again)" true cache
expect_naive_5xx "maintenance"
untoxic platform-api-proxy maintenance_downstream
expect_resilient "maintenance off" false live

echo "slow responses: http_latency 2000 ms"
toxic platform-api-proxy '{"type":"http_latency","attributes":{"latency":2000}}'
expect_resilient "latency" true cache
curl -s -o /dev/null --max-time 10 "$naive/account" &
naive_probe=$!
sleep 0.3
get "$naive/healthz"
if [[ "$code" == 200 ]] && faster_than "$secs" 1.0; then
    pass "naive /healthz while /account is blocked: 200 in ${secs}s"
else
    fail "naive /healthz while /account is blocked: $code in ${secs}s"
fi
wait "$naive_probe"
get "$naive/account"
if [[ "$code" == 200 ]] && ! faster_than "$secs" 1.9; then
    pass "naive latency: blocked for ${secs}s (no timeout of its own)"
else
    fail "naive latency: $code in ${secs}s (want a 2 s block)"
fi
untoxic platform-api-proxy http_latency_downstream

echo "rate limit: 2 requests per 3 s"
# A slow refill (one token per 1.5 s) keeps the check independent of the machine's load.
toxic platform-api-proxy '{"type":"rate_limit","attributes":{"limit":2,"period_ms":3000}}'
burst "$res/account" 5 >"$work/burst-res"
n_ok=0
seen=""
while read -r c t rest; do
    if [[ "$c" == 200 ]] && faster_than "$t" 1.0; then n_ok=$((n_ok + 1)); fi
    if [[ "$rest" == *'"degraded": true'* ]]; then seen+="degraded "; else seen+="live "; fi
done <"$work/burst-res"
if [[ $n_ok -eq 5 && "$seen" == "live live degraded degraded degraded " ]]; then
    pass "resilient rate-limited: 5 x 200 within 1 s: $seen"
else
    fail "resilient rate-limited: $n_ok of 5 fast 200s: $seen"
    cat "$work/burst-res"
fi
untoxic platform-api-proxy rate_limit_downstream
toxic platform-api-proxy '{"type":"rate_limit","attributes":{"limit":2,"period_ms":3000}}'
naive_codes="$(burst "$naive/account" 5 | awk '{ printf "%s ", $1 }')"
if [[ "$naive_codes" == "200 200 502 502 502 " ]]; then
    pass "naive rate-limited: $naive_codes"
else
    fail "naive rate-limited: $naive_codes(want 200 200 502 502 502)"
fi
untoxic platform-api-proxy rate_limit_downstream

echo "request journal"
journal="$(curl -s "$api/proxies/platform-api-proxy/requests?limit=1000")"
if python3 - "$journal" <<'EOF'; then
import json, sys
entries = json.loads(sys.argv[1])
faults = {e["fault"] for e in entries}
statuses = {e["status"] for e in entries}
want = {"maintenance_downstream", "http_latency_downstream", "rate_limit_downstream"}
missing = want - faults
ok = not missing and 429 in statuses and 503 in statuses
print(f"  {len(entries)} entries; faults seen: {sorted(f for f in faults if f)}; statuses: {sorted(statuses)}")
sys.exit(0 if ok else 1)
EOF
    pass "journal records the faults that answered"
else
    fail "journal misses faults or statuses"
fi

echo "recovery"
sleep 2.1 # the resilient app honours Retry-After (2 s here)
expect_resilient "after cleanup" false live

if [[ $failures -eq 0 ]]; then
    echo "selftest: PASS"
    exit 0
fi
echo "selftest: $failures check(s) FAILED"
exit 1
