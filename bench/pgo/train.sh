#!/usr/bin/env bash
# The training run of a profile-guided build (bench/pgo/build.sh): drives an instrumented
# `silverback proxy` through what it does in production, so that the profile it writes at
# exit reflects the hot paths:
#   - POST /config of 2,001 services + routes (parse, validation, router compilation);
#   - plain HTTP/1.1 keep-alive GETs through the HTTP/1.1 fast path (wrk, 50 connections);
#   - requests to a host route, and POSTs with a body (hyper's path);
#   - the admin and status API (GET /status, /metrics).
# Traffic goes to Debian's nginx as the backend, on loopback.
#
# Needs: nginx (nginx-light), wrk, curl, python3. Usage: bench/pgo/train.sh INSTRUMENTED_BIN
set -euo pipefail
BIN=${1:?path of an instrumented silverback binary}
W=$(mktemp -d)
BE=19500 NGX=19501 GW=19502 ADMIN=19503 STATUS=19504
# shellcheck source=bench/proxy/nginx.sh
. "$(dirname "$0")/../proxy/nginx.sh"
backend_conf
nginx -c "$W/backend.conf" -p "$W" -e "$W/backend.err"
GWPID=
cleanup() {
  [ -n "$GWPID" ] && kill "$GWPID" 2>/dev/null || true
  [ -f "$W/backend.pid" ] && kill "$(cat "$W/backend.pid")" 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT
"$BIN" proxy --proxy-listen "127.0.0.1:$GW" --admin-listen "127.0.0.1:$ADMIN" \
  --status-listen "127.0.0.1:$STATUS" --nginx-worker-processes 1 --nginx-http-keepalive-requests 1000000 \
  --proxy-access-log off --admin-access-log off \
  >"$W/gw.out" 2>&1 &
GWPID=$!
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$ADMIN/status" >/dev/null && break; sleep 0.1; done
python3 - "$BE" 2000 >"$W/config.json" <<'PY'
import json, sys
be, n = sys.argv[1], int(sys.argv[2])
svcs = [{"name": "be", "url": f"http://127.0.0.1:{be}", "routes": [{"name": "all", "paths": ["/"]}]}]
for i in range(n):
    svcs.append({"name": f"svc-{i}", "url": f"http://127.0.0.1:{be}/s{i}",
                 "routes": [{"name": f"route-{i}", "hosts": [f"svc-{i}.example.test"],
                             "paths": [f"/svc-{i}"], "methods": ["GET", "POST"]}]})
print(json.dumps({"_format_version": "3.0", "services": svcs}))
PY
for _ in 1 2 3; do
  code=$(curl -s -o /dev/null -w '%{http_code}' -X POST -H 'content-type: application/json' \
    --data-binary @"$W/config.json" "http://127.0.0.1:$ADMIN/config")
  [ "$code" = 201 ] || { echo "POST /config answered $code" >&2; exit 1; }
done
wrk -t1 -c50 -d8s "http://127.0.0.1:$GW/" >/dev/null
wrk -t1 -c10 -d1s -H 'Host: svc-7.example.test' "http://127.0.0.1:$GW/svc-7/x" >/dev/null
cat >"$W/post.lua" <<'LUA'
wrk.method = "POST"
wrk.body = string.rep("x", 2048)
wrk.headers["Content-Type"] = "text/plain"
LUA
wrk -t1 -c10 -d1s -s "$W/post.lua" "http://127.0.0.1:$GW/" >/dev/null
for _ in $(seq 1 20); do
  curl -sf -o /dev/null "http://127.0.0.1:$ADMIN/status"
  curl -sf -o /dev/null "http://127.0.0.1:$STATUS/metrics"
done
# a clean exit writes the profile
kill -INT "$GWPID"
wait "$GWPID" || true
GWPID=
