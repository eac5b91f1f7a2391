#!/usr/bin/env bash
# Plain HTTP/1.1 keep-alive proxying: the gateway (one worker thread) against Debian's nginx
# as a reverse proxy (one worker), same backend, same load tool, same run, alternating
# A B A B. Then the same with 10,000 extra routes loaded, the POST /config time of that
# configuration, and the gateway's resident memory.
#
# Needs: nginx (nginx-light), wrk, curl, python3, taskset. Usage:
#   bench/proxy/run.sh [ROUNDS=3] [DURATION=5s] [CONNECTIONS=50]
set -euo pipefail
ROUNDS=${1:-3}
DUR=${2:-5s}
CONNS=${3:-50}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
(cd "$ROOT" && cargo build -q --release -p silverback-proxy --example gateway)
GW_BIN=$CARGO_TARGET_DIR/release/examples/gateway
W=$(mktemp -d)
BE=19100 NGX=19101 GW=19102 ADMIN=19103 STATUS=19104

cleanup() {
  for p in "$W"/*.pid; do [ -f "$p" ] && kill "$(cat "$p")" 2>/dev/null || true; done
  [ -n "${GWPID:-}" ] && kill "$GWPID" 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT

cat > "$W/backend.conf" <<CONF
worker_processes 1; pid $W/backend.pid; error_log $W/backend.err; events { worker_connections 4096; }
http { access_log off; server { listen 127.0.0.1:$BE backlog=4096; keepalive_requests 1000000;
  location / { return 200 "hello world\n"; } } }
CONF
cat > "$W/proxy.conf" <<CONF
worker_processes 1; pid $W/proxy.pid; error_log $W/proxy.err; events { worker_connections 4096; }
http { access_log off; upstream be { server 127.0.0.1:$BE; keepalive 256; keepalive_requests 1000000; }
  server { listen 127.0.0.1:$NGX backlog=4096; keepalive_requests 1000000;
  location / { proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
CONF
taskset -c 1 nginx -c "$W/backend.conf" -p "$W" -e "$W/backend.err"
taskset -c 0 nginx -c "$W/proxy.conf" -p "$W" -e "$W/proxy.err"
taskset -c 0 "$GW_BIN" --proxy-listen "127.0.0.1:$GW backlog=4096" --admin-listen "127.0.0.1:$ADMIN" \
  --status-listen "127.0.0.1:$STATUS" --workers 1 2>"$W/gw.err" &
GWPID=$!
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$ADMIN/status" >/dev/null && break; sleep 0.1; done

one_route() {
  printf '{"_format_version":"3.0","services":[{"name":"be","url":"http://127.0.0.1:%s","routes":[{"name":"all","paths":["/"]}]}]}' "$BE"
}
many_routes() {
  python3 - "$BE" <<'PY'
import json, sys
be = sys.argv[1]
svcs = [{"name": "be", "url": f"http://127.0.0.1:{be}", "routes": [{"name": "all", "paths": ["/"]}]}]
for i in range(10000):
    svcs.append({"name": f"svc-{i}", "url": f"http://127.0.0.1:{be}/s{i}",
                 "routes": [{"name": f"route-{i}", "hosts": [f"svc-{i}.example.test"], "paths": [f"/svc-{i}"]}]})
print(json.dumps({"_format_version": "3.0", "services": svcs}))
PY
}
post() { # file -> prints seconds
  curl -s -o /dev/null -w '%{http_code} %{time_total}\n' -X POST -H 'content-type: application/json' \
    --data-binary @"$1" "http://127.0.0.1:$ADMIN/config"
}
load() { # port -> "rps p99"
  taskset -c 1 wrk -t1 -c"$CONNS" -d"$DUR" --latency "http://127.0.0.1:$1/" | awk '
    /Requests\/sec/ {rps=$2}
    $1=="99%" {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v=v/1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v=v*1000}; p99=v}
    END {printf "%s %s\n", rps, p99}'
}

one_route > "$W/one.json"
many_routes > "$W/many.json"
echo "POST one route: $(post "$W/one.json")"
curl -sf "http://127.0.0.1:$GW/" >/dev/null
echo "round  nginx_rps  nginx_p99_ms  gw_rps  gw_p99_ms"
declare -a RN RG PN PG
for r in $(seq 1 "$ROUNDS"); do
  read -r n_rps n_p99 < <(load $NGX)
  read -r g_rps g_p99 < <(load $GW)
  echo "$r  $n_rps  $n_p99  $g_rps  $g_p99"
  RN+=("$n_rps"); RG+=("$g_rps"); PN+=("$n_p99"); PG+=("$g_p99")
done
echo "POST 10,000 extra routes: $(post "$W/many.json") (status, seconds)"
echo "gateway RSS with 10,001 routes: $(awk '/VmRSS/ {print $2/1024 " MiB"}' /proc/$GWPID/status)"
echo "round  gw10k_rps  gw10k_p99_ms"
declare -a RM
for r in $(seq 1 "$ROUNDS"); do
  read -r m_rps m_p99 < <(load $GW)
  echo "$r  $m_rps  $m_p99"
  RM+=("$m_rps")
done
python3 - "${RN[*]}" "${RG[*]}" "${PN[*]}" "${PG[*]}" "${RM[*]}" <<'PY'
import statistics as s, sys
rn, rg, pn, pg, rm = ([float(x) for x in a.split()] for a in sys.argv[1:])
ratios = [g / n for g, n in zip(rg, rn)]
print(f"throughput gateway/nginx per round: {[round(x, 3) for x in ratios]}, median {s.median(ratios):.3f}")
print(f"p99 ms median: nginx {s.median(pn):.3f}, gateway {s.median(pg):.3f}")
print(f"10k routes vs 1 route (gateway): {s.median(rm) / s.median(rg):.3f}")
PY
