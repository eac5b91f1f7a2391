#!/usr/bin/env bash
# Where the other CPU's time goes: CPU 1 runs the backend nginx and wrk, and is the one that
# sets the pace in these benchmarks. For ROUNDS rounds, alternately behind the reference nginx
# proxy and behind the gateway (each on CPU 0), `wrk -t1 -c50` runs for 6 s while `perf record
# -C 1 -g` samples CPU 1 for 4 s of it. Prints, per round and proxy, the backend's CPU time
# per request, and the part of it spent in a few call paths:
#   - waking the proxy's reader of the answer (`sock_def_readable`: costly when the proxy
#     sleeps in epoll_wait and must be woken);
#   - going to sleep and waking again (`schedule`);
#   - parsing request headers (`ngx_http_parse_header_line`, `ngx_hash_find`).
# Needs: nginx (nginx-light), wrk, curl, perf, python3. Usage:
#   GW=path/to/silverback [GW_ARGS="--headers off"] bench/proxy/cpu1_profile.sh [ROUNDS=2]
set -euo pipefail
ROUNDS=${1:-2}
GW=${GW:?GW=path of a silverback binary}
W=$(mktemp -d)
BE=19330 NGX=19331 GA=19332
GP=
cleanup() {
  [ -n "$GP" ] && kill "$GP" 2>/dev/null || true
  for p in "$W"/*.pid; do [ -f "$p" ] && kill "$(cat "$p")" 2>/dev/null || true; done
  rm -rf "$W"
}
trap cleanup EXIT
# shellcheck source=bench/proxy/nginx.sh
. "$(dirname "$0")/nginx.sh"
start_nginx_pair
GP=$(start_gateway "$GW" $GA "${GW_ARGS:-}")
load_one_route $GA
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq "$ROUNDS"); do
  for who in "nginx:$NGX" "gateway:$GA"; do
    IFS=: read -r name port <<<"$who"
    taskset -c 1 wrk -t1 -c50 -d6s "http://127.0.0.1:$port/" >"$W/wrk.txt" &
    wp=$!
    sleep 1
    perf record -q -C 1 -F 4999 -g -o "$W/perf.data" -- sleep 4 2>/dev/null
    wait "$wp"
    n=$(awk '/requests in/ {print $1}' "$W/wrk.txt")
    perf script -i "$W/perf.data" -F comm,ip,sym 2>/dev/null >"$W/samples.txt"
    python3 - "$W/samples.txt" "$r" "$name" "$n" <<'PY'
import sys
path, r, name, n = sys.argv[1:]
blocks = [b.strip().split("\n") for b in open(path).read().split("\n\n") if b.strip()]
total = len(blocks)
# the backend's samples, each as the set of functions on its call chain
backend = [{l.split()[-1] for l in b[1:] if len(l.split()) >= 2} for b in blocks
           if b[0].split()[0] == "nginx"]
# sampled at 4999 Hz over 4 s of the 6 s run: microseconds per request of what matched
per_req = 1e6 / 4999 / (int(n) * 4 / 6)
def cost(keys=None):
    return per_req * sum(1 for fns in backend if keys is None or fns & set(keys))
print(f"round {r} {name:8s} requests {n:>8s}  backend {cost():5.2f} us/req:"
      f" waking the proxy {cost(['sock_def_readable']):4.2f},"
      f" sleeping {cost(['schedule', 'schedule_hrtimeout_range_clock']):4.2f},"
      f" header parsing {cost(['ngx_http_parse_header_line', 'ngx_hash_find']):4.2f}")
PY
  done
done
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
