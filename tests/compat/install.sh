#!/usr/bin/env bash
# Installs everything the client-library compatibility suites need (idempotent).
#
#   tests/compat/install.sh
#
# Expects a Debian machine with Rust (cargo), python3 + pip and node + npm.
#  * C libraries for the Rust test's dev-dependency toxiproxy_rust (reqwest 0.11 with
#    native-tls => openssl-sys): pkg-config and libssl-dev, from Debian's packages.
#  * Python: a virtualenv at tests/compat/python/.venv with requirements.txt
#    (toxiproxy-python==0.1.1, pytest). Falls back to installing python3-venv if needed.
#  * Node: `npm ci` in tests/compat/node (toxiproxy-node-client, from package-lock.json).
#  * Rust: `cargo fetch` so the Rust test builds offline afterwards.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
PY="${PYTHON:-python3}"

log() { printf '[compat/install] %s\n' "$*"; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null 2>&1; then sudo "$@"; else
    log "need root for: $*"; return 1; fi
}

APT_UPDATED=0
apt_install() {
  command -v apt-get >/dev/null 2>&1 || { log "apt-get not available; please install: $*"; return 1; }
  if [ "$APT_UPDATED" = 0 ]; then
    as_root apt-get update -qq
    APT_UPDATED=1
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

# --- system packages -----------------------------------------------------------
need=()
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
if ! { command -v pkg-config >/dev/null 2>&1 && pkg-config --exists openssl; }; then
  need+=(libssl-dev)
fi
if [ "${#need[@]}" -gt 0 ]; then
  log "installing Debian packages: ${need[*]}"
  apt_install "${need[@]}"
else
  log "pkg-config and libssl-dev present"
fi

# --- python --------------------------------------------------------------------
VENV="$HERE/python/.venv"
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
  rm -rf "$VENV"
  log "creating virtualenv $VENV"
  if ! "$PY" -m venv "$VENV" >/dev/null 2>&1; then
    rm -rf "$VENV"
    log "python venv module missing; installing python3-venv"
    apt_install python3-venv
    "$PY" -m venv "$VENV"
  fi
fi
log "pip install -r tests/compat/python/requirements.txt"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$HERE/python/requirements.txt"

# --- node ----------------------------------------------------------------------
log "npm ci in tests/compat/node"
(cd "$HERE/node" && npm ci --no-audit --no-fund --loglevel=error)

# --- rust ----------------------------------------------------------------------
log "cargo fetch"
(cd "$REPO" && cargo fetch --quiet)

log "done"
