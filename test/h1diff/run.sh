#!/usr/bin/env bash
# Conformance of the gateway's HTTP/1 parsing with nginx's (Kong's proxy is nginx): starts a
# backend nginx, Debian's nginx as a reverse proxy in front of it, and the gateway with one
# route to the same backend, then sends each raw request of cases.py to both proxies and
# compares the answers (diff.py). Exits 1 on a difference that cases.py does not state.
#
# Needs: nginx (nginx-light), curl, python3. Usage:
#   test/h1diff/run.sh [GATEWAY_BIN] [-v]
# (GATEWAY_BIN defaults to the debug build of `silverback` under $CARGO_TARGET_DIR.)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BIN=${1:-${CARGO_TARGET_DIR:-$ROOT/target}/debug/silverback}
[ -x "$BIN" ] || { echo "no gateway binary at $BIN (cargo build -p silverback)"; exit 1; }
W=$(mktemp -d)
BE=19400 NGX=19401 GW=19402
PGW=
cleanup() {
  [ -n "$PGW" ] && kill "$PGW" 2>/dev/null || true
  for p in "$W"/*.pid; do [ -f "$p" ] && kill "$(cat "$p")" 2>/dev/null || true; done
  rm -rf "$W"
}
trap cleanup EXIT
# shellcheck source=bench/proxy/nginx.sh
. "$ROOT/bench/proxy/nginx.sh"
start_nginx_pair
PGW=$(start_gateway "$BIN" $GW "")
load_one_route $GW
cd "$HERE" && python3 diff.py $NGX $GW "${2:-}"
