#!/usr/bin/env bash
# User and system CPU per request, and throughput, of Debian's nginx as a reverse proxy and of
# two gateway builds, alternated in ROUNDS rounds of `wrk -t1 -c50 -dDUR` (each proxy on CPU 0,
# the backend nginx and wrk on CPU 1). Per round: utime and stime of the proxy process over the
# round, divided by the requests served, and the busy time of CPU 1 (backend and wrk) per
# request likewise (and the backend nginx's own user and system time per request, the rest
# being wrk's and interrupts'), how busy each CPU was, and the rescheduling interrupts CPU 1
# took per request (wakeups of the backend or wrk sent from CPU 0), and how often per request
# the backend's worker and the proxy went to sleep (voluntary context switches: a process that
# sleeps has run out of work and must be woken again). Prints medians, the per-round
# throughput ratios to nginx, and A/B per round.
#
# Per gateway, the geometric mean of its throughput ratios to nginx with a 95% interval, and
# a two-sided sign test of "the gateway wins as many rounds as nginx".
#
# Needs: nginx (nginx-light), wrk, curl, python3, taskset, bc. Usage:
#   A=path/to/silverback B=path/to/other/silverback [A_ARGS="--headers off"] [B_ARGS=...] \
#     bench/proxy/cpu_split.sh [ROUNDS=10] [DUR=3s]
# (A and B may be the same binary with different A_ARGS/B_ARGS: extra `silverback proxy` flags.)
set -euo pipefail
ROUNDS=${1:-10}; DUR=${2:-3s}
A=${A:?A=path of a silverback binary}; B=${B:?B=path of another silverback binary}
W=$(mktemp -d)
BE=19230 NGX=19231 GA=19232 GB=19235
PA=; PB=
cleanup() { # every step runs even if one fails (set -e would end the trap early)
  [ -n "$PA" ] && kill "$PA" 2>/dev/null || true
  [ -n "$PB" ] && kill "$PB" 2>/dev/null || true
  for p in "$W"/*.pid; do [ -f "$p" ] && kill "$(cat "$p")" 2>/dev/null || true; done
  rm -rf "$W"
}
trap cleanup EXIT
# shellcheck source=bench/proxy/nginx.sh
. "$(dirname "$0")/nginx.sh"
start_nginx_pair
BEW=$(pgrep -P "$(cat "$W/backend.pid")" | head -1) # the backend's worker
echo "A: $A ${A_ARGS:-}"; echo "B: $B ${B_ARGS:-}"
PA=$(start_gateway "$A" $GA "${A_ARGS:-}"); PB=$(start_gateway "$B" $GB "${B_ARGS:-}")
for p in $GA $GB; do load_one_route $p; done
cpu0_busy() { awk '$1 == "cpu0" {print $2 + $3 + $4 + $7 + $8}' /proc/stat; }
# Rescheduling interrupts taken by CPU 1 (wakeups sent to it from CPU 0).
cpu1_res() { awk '$1 == "RES:" {print $3}' /proc/interrupts; }
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq "$ROUNDS"); do
  for who in "nginx:$NGX:$NGXW" "A:$GA:$PA" "B:$GB:$PB"; do
    IFS=: read -r name port pid <<<"$who"
    read -r u0 s0 < <(awk '{print $14, $15}' "/proc/$pid/stat")
    read -r bu0 bs0 < <(awk '{print $14, $15}' "/proc/$BEW/stat")
    v0=$(sleeps "$BEW"); w0=$(sleeps "$pid")
    o0=$(cpu1_busy); z0=$(cpu0_busy); i0=$(cpu1_res); t0=$(date +%s.%N)
    n=$(taskset -c 1 wrk -t1 -c50 -d"$DUR" "http://127.0.0.1:$port/" | awk '/requests in/ {print $1}')
    read -r u1 s1 < <(awk '{print $14, $15}' "/proc/$pid/stat")
    read -r bu1 bs1 < <(awk '{print $14, $15}' "/proc/$BEW/stat")
    o1=$(cpu1_busy); z1=$(cpu0_busy); i1=$(cpu1_res); t1=$(date +%s.%N)
    v1=$(sleeps "$BEW"); w1=$(sleeps "$pid")
    hz=$(getconf CLK_TCK)
    echo "$r $name $n $(echo "($u1 - $u0) * 1000000 / $hz / $n" | bc -l) $(echo "($s1 - $s0) * 1000000 / $hz / $n" | bc -l) $(echo "($o1 - $o0) * 1000000 / $hz / $n" | bc -l) $(echo "($z1 - $z0) / $hz / ($t1 - $t0)" | bc -l) $(echo "($o1 - $o0) / $hz / ($t1 - $t0)" | bc -l) $(echo "($i1 - $i0) / $n" | bc -l) $(echo "($bu1 - $bu0) * 1000000 / $hz / $n" | bc -l) $(echo "($bs1 - $bs0) * 1000000 / $hz / $n" | bc -l) $(echo "($v1 - $v0) / $n" | bc -l) $(echo "($w1 - $w0) / $n" | bc -l)"
  done
done >"$W/res.txt"
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$W/res.txt" <<'PY'
import math, statistics as st, sys
by = {}
for line in open(sys.argv[1]):
    r, name, n, u, s, o, b0, b1, res, bu, bs, bsl, psl = line.split()
    by.setdefault(name, []).append((int(n), float(u), float(s), float(o), float(b0), float(b1), float(res), float(bu), float(bs), float(bsl), float(psl)))
for name, v in by.items():
    print(f"{name:5s} requests median {st.median(x[0] for x in v):8.0f}  user us/req {st.median(x[1] for x in v):6.2f}  system us/req {st.median(x[2] for x in v):6.2f}  CPU 1 (backend + wrk) us/req {st.median(x[3] for x in v):6.2f} (backend user {st.median(x[7] for x in v):5.2f} system {st.median(x[8] for x in v):5.2f})  busy CPU 0 {st.median(x[4] for x in v):.2f} CPU 1 {st.median(x[5] for x in v):.2f}  CPU 1 resched IRQs/req {st.median(x[6] for x in v):.3f}  sleeps/req backend {st.median(x[9] for x in v):.3f} proxy {st.median(x[10] for x in v):.3f}")
rounds = len(by["nginx"])
for name in ("A", "B"):
    ratios = [by[name][i][0] / by["nginx"][i][0] for i in range(rounds)]
    print(f"{name} throughput vs nginx per round {[round(x, 3) for x in ratios]}, median {st.median(ratios):.3f}")
    logs = [math.log(x) for x in ratios]
    m = st.mean(logs)
    se = st.stdev(logs) / math.sqrt(len(logs)) if len(logs) > 1 else float("nan")
    wins = sum(x > 1 for x in ratios)
    n = len(ratios)
    tail = sum(math.comb(n, k) for k in range(min(wins, n - wins) + 1)) / 2 ** n
    print(f"{name} geometric mean {math.exp(m):.3f} (95% interval {math.exp(m - 1.96 * se):.3f}-{math.exp(m + 1.96 * se):.3f}), "
          f"rounds won {wins}/{n}, sign test p={min(1.0, 2 * tail):.3f}")
print(f"A/B per round: requests {st.median(by['A'][i][0] / by['B'][i][0] for i in range(rounds)):.3f}, user CPU {st.median(by['A'][i][1] / by['B'][i][1] for i in range(rounds)):.3f}")
PY
