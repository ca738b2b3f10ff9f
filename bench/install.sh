#!/usr/bin/env bash
# Install what bench/run.sh needs on a Debian machine (idempotent; run as root or with sudo).
#   nginx + libnginx-mod-stream  the reference server; the stream (TCP proxy) module is a
#                                separate package: /usr/lib/nginx/modules/ngx_stream_module.so
#   wrk, iperf3                  load generators
#   util-linux (taskset), iproute2 (ss), procps, curl, python3 (standard library only)
# Debian's packages start no nginx or iperf3 service here (no init system in containers;
# where there is one, the default service is not touched by bench/run.sh, which runs its own
# nginx with its own config on ports 18000+).
set -euo pipefail

PKGS=(nginx libnginx-mod-stream wrk iperf3 util-linux iproute2 procps curl python3)

SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO=sudo

missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}"
    $SUDO apt-get update -qq
    # iperf3 asks whether to start a daemon: noninteractive keeps the default (no)
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

test -f /usr/lib/nginx/modules/ngx_stream_module.so
echo "bench tools present: $(nginx -v 2>&1), wrk $(dpkg-query -W -f='${Version}' wrk), $(iperf3 --version | head -1)"
