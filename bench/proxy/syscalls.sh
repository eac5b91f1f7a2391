#!/usr/bin/env bash
# System calls per proxied request of the gateway and of Debian's nginx as a reverse proxy
# (each on CPU 0, the backend nginx and `wrk -t1 -c50` on CPU 1, alternated ROUNDS times):
# `perf stat` counts the proxy process's epoll_wait, recvfrom and writev calls for the whole
# `wrk` run, divided by the requests `wrk` reports. A proxy that is not saturated drains its
# queue and goes back to epoll_wait after a few events; one that is saturated takes events in
# large batches.
#
# Needs: perf (linux-perf), nginx (nginx-light), wrk, curl, taskset, root (tracepoints). Usage:
#   bench/proxy/syscalls.sh GATEWAY_BIN [ROUNDS=2] [DUR=4s]
set -euo pipefail
BIN=${1:?usage: syscalls.sh GATEWAY_BIN [ROUNDS] [DUR]}; ROUNDS=${2:-2}; DUR=${3:-4s}
W=$(mktemp -d)
BE=19240 NGX=19241 GW=19250
PID=
cleanup() { # every step runs even if one fails
  [ -n "$PID" ] && kill "$PID" 2>/dev/null || true
  for p in "$W"/*.pid; do [ -f "$p" ] && kill "$(cat "$p")" 2>/dev/null || true; done
  rm -rf "$W"
}
trap cleanup EXIT
# shellcheck source=bench/proxy/nginx.sh
. "$(dirname "$0")/nginx.sh"
start_nginx_pair
PID=$(start_gateway "$BIN" $GW "")
load_one_route $GW
EVENTS=syscalls:sys_enter_epoll_wait,syscalls:sys_enter_recvfrom,syscalls:sys_enter_writev
for r in $(seq "$ROUNDS"); do
  for who in "nginx:$NGX:$NGXW" "gateway:$GW:$PID"; do
    IFS=: read -r name port pid <<<"$who"
    perf stat -x, -e "$EVENTS" -p "$pid" -o "$W/perf.csv" -- \
      taskset -c 1 wrk -t1 -c50 -d"$DUR" "http://127.0.0.1:$port/" >"$W/wrk.out" 2>&1
    n=$(awk '/requests in/ {print $1}' "$W/wrk.out")
    printf 'round %s %-8s requests %8s' "$r" "$name" "$n"
    awk -F, -v n="$n" '/syscalls:/ {sub("syscalls:sys_enter_", "", $3); printf "  %s/req %.3f", $3, $1 / n}' "$W/perf.csv"
    echo
  done
done
