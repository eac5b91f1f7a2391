#!/usr/bin/env bash
# User-space instructions per proxied request, counted by callgrind (exact, and not inflated
# by other processes on the machine, unlike CPU time): the gateway (`silverback proxy`, one
# worker) and Debian's nginx as a reverse proxy (one process), each in front of the same nginx
# backend, driven by client.py (10 keep-alive connections, requests in lock-step).
# Each is run twice, with 200 and 2,200 requests; the difference divided by 2,000 removes the
# start-up and shut-down cost.
#
# Needs: valgrind, nginx (nginx-light), curl, python3. Usage:
#   [ROUTES=10000] [SKIP_NGINX=1] [KEEP=FILE] bench/proxy/instructions.sh [GATEWAY_BIN [extra gateway flags...]]
# (KEEP=FILE: the callgrind profile of the gateway's longer run is kept there, for callgrind_annotate.)
# (ACCESS_LOG=1: both proxies write an access log, in the same format; see nginx.sh.)
# (GATEWAY_BIN defaults to the release build of `silverback`, built here.)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
if [ $# -eq 0 ]; then
  (cd "$ROOT" && cargo build -q --release -p silverback)
  set -- "$CARGO_TARGET_DIR/release/silverback"
fi
BIN=$1; shift
W=$(mktemp -d); BE=19300; NGX=19301; GW=19302; ADMIN=19303; STATUS=19304
# shellcheck source=bench/proxy/nginx.sh
. "$(dirname "$0")/nginx.sh"
backend_conf
cat > "$W/proxy.conf" <<CONF
daemon off; master_process off; worker_processes 1; pid $W/proxy.pid; error_log $W/proxy.err;
events { worker_connections 4096; }
http { $(ngx_access_log) upstream be { server 127.0.0.1:$BE; keepalive 256; keepalive_requests 1000000; }
  server { listen 127.0.0.1:$NGX backlog=4096; keepalive_requests 1000000;
  location / { proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection "";
  $(kong_headers) } } }
CONF
nginx -c "$W/backend.conf" -p "$W" -e "$W/backend.err"
trap 'kill "$(cat "$W/backend.pid")" 2>/dev/null; rm -rf "$W"' EXIT
printf '{"_format_version":"3.0","services":[{"name":"be","url":"http://127.0.0.1:%s","routes":[{"name":"all","paths":["/"]}]}]}' $BE >"$W/one.json"
if [ -n "${ROUTES:-}" ]; then
  # ROUTES=N: N extra services + routes (distinct hosts and paths) loaded beside the one used.
  python3 - "$BE" "$ROUTES" >"$W/one.json" <<'PY'
import json, sys
be, n = sys.argv[1], int(sys.argv[2])
svcs = [{"name": "be", "url": f"http://127.0.0.1:{be}", "routes": [{"name": "all", "paths": ["/"]}]}]
for i in range(n):
    svcs.append({"name": f"svc-{i}", "url": f"http://127.0.0.1:{be}/s{i}",
                 "routes": [{"name": f"route-{i}", "hosts": [f"svc-{i}.example.test"], "paths": [f"/svc-{i}"]}]})
print(json.dumps({"_format_version": "3.0", "services": svcs}))
PY
fi

total() { grep -E "^(summary|totals):" "$W/cg.out" | head -1 | awk '{print $2}'; }
gateway() { # requests per connection -> instructions of the whole run
  valgrind --tool=callgrind --callgrind-out-file="$W/cg.out" "$BIN" proxy --proxy-listen "127.0.0.1:$GW" \
    --admin-listen "127.0.0.1:$ADMIN" --status-listen "127.0.0.1:$STATUS" --nginx-worker-processes 1 \
    --nginx-http-keepalive-requests 1000000 $(gw_log_args "$GW") "$@" \
    >"$W/gw.out" 2>&1 &
  local pid=$!
  for _ in $(seq 300); do curl -sf "http://127.0.0.1:$ADMIN/status" >/dev/null && break; sleep 0.2; done
  local code
  code=$(curl -s -o /dev/null -w '%{http_code}' -X POST -H 'content-type: application/json' \
    --data-binary @"$W/one.json" "http://127.0.0.1:$ADMIN/config")
  [ "$code" = 201 ] || { echo "POST /config answered $code" >&2; exit 1; }
  python3 "$ROOT/bench/proxy/client.py" $GW 10 "$R" >/dev/null
  kill -INT $pid; wait $pid || true
  total
}
reference() { # requests per connection -> instructions of the whole run
  valgrind --tool=callgrind --callgrind-out-file="$W/cg.out" nginx -c "$W/proxy.conf" -p "$W" \
    -e "$W/proxy.err" >/dev/null 2>&1 &
  local pid=$!
  for _ in $(seq 300); do curl -s -o /dev/null "http://127.0.0.1:$NGX/" && break; sleep 0.2; done
  python3 "$ROOT/bench/proxy/client.py" $NGX 10 "$R" >/dev/null
  kill -QUIT $pid; wait $pid || true
  total
}
R=20 a=$(gateway "$@"); R=220 b=$(gateway "$@")
[ -n "${KEEP:-}" ] && cp "$W/cg.out" "$KEEP"
echo "gateway: $(( (b - a) / 2000 )) instructions per request ($BIN $*${ROUTES:+, $ROUTES extra routes})"
[ -n "${SKIP_NGINX:-}" ] && exit 0
R=20 a=$(reference); R=220 b=$(reference)
echo "nginx:   $(( (b - a) / 2000 )) instructions per request"
