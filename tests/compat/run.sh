#!/usr/bin/env bash
# Runs the client-library compatibility suites against a freshly built downtime.
#
#   tests/compat/install.sh          # once (idempotent)
#   tests/compat/run.sh              # python + node suites
#   tests/compat/run.sh python       # one suite: python | node | rust
#
# Each suite starts its own `downtime serve --host 127.0.0.1 --port <free port>`,
# waits (bounded) for GET /version and stops exactly that process at the end.
# The Rust suite (crates/downtime/tests/it/toxiproxy_rust_client.rs) normally runs with
# `cargo test`; `run.sh rust` runs just that test target.
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
cd "$REPO"

suites=("$@")
[ "${#suites[@]}" -eq 0 ] && suites=(python node)

log() { printf '[compat/run] %s\n' "$*"; }

if [ -n "${DOWNTIME_BIN:-}" ]; then
  log "using $DOWNTIME_BIN (no build)"
else
  log "cargo build -p downtime"
  if ! cargo build -p downtime --quiet; then
    log "build failed"
    exit 1
  fi
fi
TARGET_DIR="${CARGO_TARGET_DIR:-$REPO/target}"
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$REPO/$TARGET_DIR" ;; esac
export DOWNTIME_BIN="${DOWNTIME_BIN:-$TARGET_DIR/debug/downtime}"
if [ ! -x "$DOWNTIME_BIN" ]; then
  log "binary not found: $DOWNTIME_BIN"
  exit 1
fi

run_python() {
  local py="$HERE/python/.venv/bin/python"
  if [ ! -x "$py" ] || ! "$py" -c 'import toxiproxy, pytest' 2>/dev/null; then
    log "python deps missing: run tests/compat/install.sh"
    return 1
  fi
  log "python suite (toxiproxy-python)"
  (cd "$HERE/python" && "$py" -m pytest)
}

run_node() {
  if [ ! -d "$HERE/node/node_modules/toxiproxy-node-client" ]; then
    log "node deps missing: run tests/compat/install.sh"
    return 1
  fi
  log "node suite (toxiproxy-node-client)"
  (cd "$HERE/node" && node --test test/)
}

run_rust() {
  log "rust suite (toxiproxy_rust)"
  cargo test -p downtime --test it toxiproxy_rust_client::
}

status=0
results=()
for suite in "${suites[@]}"; do
  case "$suite" in
    python) run_python ;;
    node) run_node ;;
    rust) run_rust ;;
    *) log "unknown suite: $suite (python|node|rust)"; status=2; continue ;;
  esac
  rc=$?
  if [ "$rc" -eq 0 ]; then results+=("$suite=ok"); else results+=("$suite=FAILED($rc)"); status=1; fi
done
log "results: ${results[*]}"
exit "$status"
