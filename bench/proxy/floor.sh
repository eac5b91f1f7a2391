#!/usr/bin/env bash
# The floor of the proxy benchmark: what a proxy that only forwards bytes reaches against
# Debian's nginx as a reverse proxy in the same topology (each proxy on CPU 0, the backend
# nginx and `wrk -t1 -c50` on CPU 1), alternated in ROUNDS rounds. Runs the two floor proxies
# of bench/proxy/floor (tokio current-thread; io_uring with deferred task work; the tokio one
# again adding the bytes of the headers Kong adds, `tokio+kh`) and, with
# GW_BIN, a gateway binary beside them (`GW_ARGS` adds `silverback proxy` flags). Per proxy
# and round: requests, user + system CPU µs per request of the proxy, CPU 1's busy µs per
# request, and the backend worker's sleeps (voluntary context switches) per request. Then
# each proxy's geometric mean ratio to nginx with a 95% interval.
#
# Needs: nginx (nginx-light), wrk, curl, python3, taskset, bc, cargo. Usage:
#   [GW_BIN=path/to/silverback] [GW_ARGS=...] bench/proxy/floor.sh [ROUNDS=10] [DUR=3s]
set -euo pipefail
ROUNDS=${1:-10}; DUR=${2:-3s}
HERE=$(cd "$(dirname "$0")" && pwd)
FLOOR_TARGET=${FLOOR_TARGET:-$HOME/.cache/silverback/target-floor}
CARGO_TARGET_DIR=$FLOOR_TARGET cargo build --quiet --release --manifest-path "$HERE/floor/Cargo.toml"
W=$(mktemp -d)
BE=19430 NGX=19431 TOK=19432 URING=19433 GW=19434 TOKK=19437
PIDS=()
cleanup() { # every step runs even if one fails
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "$W"/*.pid; do [ -f "$p" ] && kill "$(cat "$p")" 2>/dev/null || true; done
  rm -rf "$W"
}
trap cleanup EXIT
# shellcheck source=bench/proxy/nginx.sh
. "$HERE/nginx.sh"
start_nginx_pair
BEW=$(pgrep -P "$(cat "$W/backend.pid")" | head -1) # the backend's worker
taskset -c 0 "$FLOOR_TARGET/release/tokio_floor" "127.0.0.1:$TOK" "127.0.0.1:$BE" & PIDS+=($!)
WHO=("nginx:$NGX:$NGXW" "tokio:$TOK:$!")
taskset -c 0 "$FLOOR_TARGET/release/uring_floor" "127.0.0.1:$URING" "127.0.0.1:$BE" & PIDS+=($!)
WHO+=("uring:$URING:$!")
# the tokio floor adding the bytes of Kong's default headers (upstream and to the client)
FLOOR_KONG_HEADERS=1 taskset -c 0 "$FLOOR_TARGET/release/tokio_floor" "127.0.0.1:$TOKK" "127.0.0.1:$BE" & PIDS+=($!)
WHO+=("tokio+kh:$TOKK:$!")
if [ -n "${GW_BIN:-}" ]; then
  P=$(start_gateway "$GW_BIN" $GW "${GW_ARGS:-}"); PIDS+=("$P"); load_one_route $GW
  WHO+=("gateway:$GW:$P")
fi
sleep 0.5
for w in "${WHO[@]}"; do
  IFS=: read -r name port _ <<<"$w"
  curl -sf "http://127.0.0.1:$port/" | grep -q 'hello world' || { echo "$name does not proxy"; exit 1; }
done
hz=$(getconf CLK_TCK)
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq "$ROUNDS"); do
  for w in "${WHO[@]}"; do
    IFS=: read -r name port pid <<<"$w"
    read -r u0 s0 < <(awk '{print $14, $15}' "/proc/$pid/stat"); v0=$(sleeps "$BEW"); o0=$(cpu1_busy)
    n=$(taskset -c 1 wrk -t1 -c50 -d"$DUR" "http://127.0.0.1:$port/" | awk '/requests in/ {print $1}')
    read -r u1 s1 < <(awk '{print $14, $15}' "/proc/$pid/stat"); v1=$(sleeps "$BEW"); o1=$(cpu1_busy)
    echo "$r $name $n $(echo "($u1 - $u0) * 1000000 / $hz / $n" | bc -l) $(echo "($s1 - $s0) * 1000000 / $hz / $n" | bc -l) $(echo "($o1 - $o0) * 1000000 / $hz / $n" | bc -l) $(echo "($v1 - $v0) / $n" | bc -l)"
  done
done >"$W/res.txt"
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$W/res.txt" <<'PY'
import math, statistics as st, sys
by = {}
for line in open(sys.argv[1]):
    r, name, n, u, s, c1, bs = line.split()
    by.setdefault(name, []).append((int(n), float(u), float(s), float(c1), float(bs)))
for name, v in by.items():
    print(f"{name:8s} requests median {st.median(x[0] for x in v):8.0f}  user {st.median(x[1] for x in v):5.2f} + system {st.median(x[2] for x in v):5.2f} us/req  CPU 1 {st.median(x[3] for x in v):5.2f} us/req  backend sleeps/req {st.median(x[4] for x in v):.3f}")
t = {2: 12.706, 3: 4.303, 4: 3.182, 5: 2.776, 6: 2.571, 7: 2.447, 8: 2.365, 9: 2.306, 10: 2.262}
for name in by:
    if name == "nginx":
        continue
    ratios = [a[0] / b[0] for a, b in zip(by[name], by["nginx"])]
    logs = [math.log(x) for x in ratios]
    m = st.mean(logs)
    line = f"{name:8s} vs nginx: per round {[round(x, 3) for x in ratios]}, geometric mean {math.exp(m):.3f}"
    if len(logs) > 1:
        half = t.get(len(logs), 1.96) * st.stdev(logs) / math.sqrt(len(logs))
        line += f" (95% {math.exp(m - half):.3f}-{math.exp(m + half):.3f})"
    print(line + f", {sum(x > 1 for x in ratios)} of {len(ratios)} rounds won")
PY
