#!/usr/bin/env bash
# Proxied throughput through an upstream of 1 target vs 4 targets (round-robin), the
# gateway (`silverback proxy`, one worker thread) in front of one nginx backend that listens
# on 4 ports, `wrk` on the other core. Rounds alternate 1 and 4 targets on the same running
# gateway (a POST /config between them), so both are measured in the same minutes.
#
# Needs: nginx (nginx-light), wrk, curl, python3, taskset. Usage:
#   bench/balancer/run.sh [ROUNDS=5] [DURATION=5s] [CONNECTIONS=50]
set -euo pipefail
ROUNDS=${1:-5}
DUR=${2:-5s}
CONNS=${3:-50}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
(cd "$ROOT" && cargo build -q --release -p silverback)
BIN=$CARGO_TARGET_DIR/release/silverback
W=$(mktemp -d)
BE=19200 GW=19210 ADMIN=19211 STATUS=19212

cleanup() {
  [ -f "$W/backend.pid" ] && kill "$(cat "$W/backend.pid")" 2>/dev/null || true
  [ -n "${GWPID:-}" ] && kill "$GWPID" 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT

cat > "$W/backend.conf" <<CONF
worker_processes 1; pid $W/backend.pid; error_log $W/backend.err; events { worker_connections 4096; }
http { access_log off; server {
  listen 127.0.0.1:$BE backlog=4096; listen 127.0.0.1:$((BE+1)) backlog=4096;
  listen 127.0.0.1:$((BE+2)) backlog=4096; listen 127.0.0.1:$((BE+3)) backlog=4096;
  keepalive_requests 1000000; location / { return 200 "hello world\n"; } } }
CONF
taskset -c 1 nginx -c "$W/backend.conf" -p "$W" -e "$W/backend.err"
taskset -c 0 "$BIN" proxy --proxy-listen "127.0.0.1:$GW backlog=4096" --admin-listen "127.0.0.1:$ADMIN" \
  --status-listen "127.0.0.1:$STATUS" --nginx-worker-processes 1 --log-level error \
  --proxy-access-log off --admin-access-log off 2>"$W/gw.err" &
GWPID=$!
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$ADMIN/status" >/dev/null && break; sleep 0.1; done

pool() { # number of targets -> declarative JSON
  python3 - "$BE" "$1" <<'PY'
import json, sys
be, n = int(sys.argv[1]), int(sys.argv[2])
print(json.dumps({"_format_version": "3.0",
  "upstreams": [{"name": "pool", "targets": [{"target": f"127.0.0.1:{be + i}"} for i in range(n)]}],
  "services": [{"name": "be", "host": "pool", "port": 80, "routes": [{"name": "all", "paths": ["/"]}]}]}))
PY
}
pool 1 > "$W/one.json"
pool 4 > "$W/four.json"
apply() {
  curl -sf -o /dev/null -X POST -H 'content-type: application/json' --data-binary @"$1" "http://127.0.0.1:$ADMIN/config"
  curl -sf "http://127.0.0.1:$GW/" >/dev/null
}
load() {
  taskset -c 1 wrk -t1 -c"$CONNS" -d"$DUR" --latency "http://127.0.0.1:$GW/" | awk '
    /Requests\/sec/ {rps=$2}
    $1=="99%" {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v=v/1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v=v*1000}; p99=v}
    END {printf "%s %s\n", rps, p99}'
}
echo "round  one_target_rps  one_p99_ms  four_targets_rps  four_p99_ms"
declare -a R1 R4
for r in $(seq 1 "$ROUNDS"); do
  apply "$W/one.json"; read -r o_rps o_p99 < <(load)
  apply "$W/four.json"; read -r f_rps f_p99 < <(load)
  echo "$r  $o_rps  $o_p99  $f_rps  $f_p99"
  R1+=("$o_rps"); R4+=("$f_rps")
done
python3 - "${R1[*]}" "${R4[*]}" <<'PY'
import statistics as s, sys
r1, r4 = ([float(x) for x in a.split()] for a in sys.argv[1:])
ratios = [f / o for f, o in zip(r4, r1)]
print(f"4 targets / 1 target per round: {[round(x, 3) for x in ratios]}, median {s.median(ratios):.3f}")
PY
