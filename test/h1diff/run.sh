#!/usr/bin/env bash
# Conformance of the gateway's HTTP/1 handling with nginx's (Kong's proxy is nginx):
# 1. requests: a backend nginx, Debian's nginx as a reverse proxy in front of it, and the
#    gateway with a route to the same backend; each raw request of cases.py goes to both
#    proxies and the answers are compared (diff.py);
# 2. upstream answers: a raw backend (upstream.py) answers `/u/<case>` with a scripted
#    response of every shape; a second nginx and the gateway proxy to it, compared alike.
# Exits 1 on a difference that the case lists do not state.
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
BE=19400 NGX=19401 GW=19402 UP=19410 NGX2=19411
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
# the second reference proxy, in front of the raw backend
cat >"$W/up.conf" <<CONF
worker_processes 1; pid $W/up.pid; error_log $W/up.err; events { worker_connections 1024; }
http { access_log off; upstream raw { server 127.0.0.1:$UP; keepalive 16; }
  server { listen 127.0.0.1:$NGX2; location / { proxy_pass http://raw; proxy_http_version 1.1;
  proxy_set_header Connection ""; } } }
CONF
nginx -c "$W/up.conf" -p "$W" -e "$W/up.err"
PGW=$(start_gateway "$BIN" $GW "")
load_one_route $GW
# and the raw backend's route on the gateway
printf '{"_format_version":"3.0","services":[{"name":"be","url":"http://127.0.0.1:%s","routes":[{"name":"all","paths":["/"]}]},{"name":"raw","url":"http://127.0.0.1:%s","routes":[{"name":"raw","paths":["/u/"],"strip_path":false}]}]}' "$BE" "$UP" >"$W/two.json"
curl -sf -o /dev/null -X POST -H 'content-type: application/json' --data-binary @"$W/two.json" "http://127.0.0.1:$((GW + 1))/config"
cd "$HERE"
status=0
python3 diff.py $NGX $GW "${2:-}" || status=1
python3 upstream.py $UP $NGX2 $GW "${2:-}" || status=1
exit $status
