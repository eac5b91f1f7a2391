#!/usr/bin/env bash
# How CPU 1 (the backend nginx and wrk, the CPU that sets the pace) is scheduled behind each
# proxy: the reference nginx, the tokio floor of bench/proxy/floor (`tokio`), the same floor
# spinning 30 µs before each park (`tokio+spin30`: it takes its events in larger batches), and
# with GW_BIN a gateway binary. For each proxy and round, `wrk -t1 -c50` runs for DUR while the
# scheduler's switch and wake-up events of both CPUs are recorded for 0.3 s (`perf record -e
# sched:sched_switch -e sched:sched_waking`), and the per-process counters are read for the
# whole run. Prints, per proxy (medians over the rounds):
#   - requests, and per request: the backend's sleeps, wrk's preemptions (involuntary context
#     switches), and the rescheduling interrupts CPU 1 received;
#   - the median length of a run of wrk and of the backend on CPU 1;
#   - when the proxy woke the backend while wrk ran, how long wrk had been running then.
# Needs: nginx (nginx-light), wrk, curl, perf (with access to the sched tracepoints), python3,
# cargo. Usage:
#   [GW_BIN=path/to/silverback] bench/proxy/cpu1_sched.sh [ROUNDS=3] [DUR=3s]
set -euo pipefail
ROUNDS=${1:-3}; DUR=${2:-3s}
HERE=$(cd "$(dirname "$0")" && pwd)
FLOOR_TARGET=${FLOOR_TARGET:-$HOME/.cache/silverback/target-floor}
CARGO_TARGET_DIR=$FLOOR_TARGET cargo build --quiet --release --manifest-path "$HERE/floor/Cargo.toml"
W=$(mktemp -d)
BE=19460 NGX=19461 TOK=19462 SPIN=19463 GW=19464
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
WHO=("nginx:$NGX" "tokio:$TOK")
FLOOR_PARK_SPIN_US=30 taskset -c 0 "$FLOOR_TARGET/release/tokio_floor" "127.0.0.1:$SPIN" "127.0.0.1:$BE" & PIDS+=($!)
WHO+=("tokio+spin30:$SPIN")
if [ -n "${GW_BIN:-}" ]; then
  P=$(start_gateway "$GW_BIN" $GW "${GW_ARGS:-}"); PIDS+=("$P"); load_one_route $GW
  WHO+=("gateway:$GW")
fi
sleep 0.5
for w in "${WHO[@]}"; do
  IFS=: read -r name port <<<"$w"
  curl -sf "http://127.0.0.1:$port/" | grep -q 'hello world' || { echo "$name does not proxy"; exit 1; }
done
# voluntary and involuntary context switches of process $1 (all its threads)
switches() { cat /proc/"$1"/task/*/status | awk '/^voluntary_ctxt/ {v += $2} /^nonvoluntary_ctxt/ {n += $2} END {print v, n}'; }
# rescheduling interrupts received by CPU 1
resched() { awk '$1 == "RES:" {print $3}' /proc/interrupts; }
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq "$ROUNDS"); do
  for w in "${WHO[@]}"; do
    IFS=: read -r name port <<<"$w"
    read -r bv0 _ < <(switches "$BEW"); i0=$(resched)
    taskset -c 1 wrk -t1 -c50 -d"$DUR" "http://127.0.0.1:$port/" >"$W/wrk.txt" & wp=$!
    sleep 0.2
    read -r _ wn0 < <(switches "$wp")
    sleep 0.8
    read -r _ wn1 < <(switches "$wp") # wrk's counters over 0.8 s, read long before it exits
    perf record -q -o "$W/sched.data" -e sched:sched_switch -e sched:sched_waking -a -- sleep 0.3 >/dev/null 2>&1
    wait "$wp"
    read -r bv1 _ < <(switches "$BEW"); i1=$(resched)
    n=$(awk '/requests in/ {print $1}' "$W/wrk.txt")
    perf script -i "$W/sched.data" 2>/dev/null >"$W/sched-$name-$r.txt"
    echo "$name $r $n $bv0 $bv1 $wn0 $wn1 $i0 $i1" >>"$W/counts.txt"
  done
done
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$W" "$DUR" "$BEW" <<'PY'
import collections, re, statistics as st, sys
w, dur, bew = sys.argv[1], float(sys.argv[2].rstrip("s")), sys.argv[3]
SW = re.compile(r"\[(\d+)\]\s+([\d.]+): sched:sched_switch: prev_comm=(\S+) prev_pid=(\d+) "
                r"prev_prio=\d+ prev_state=(\S+) ==> next_comm=(\S+) next_pid=(\d+)")
WK = re.compile(r"\[(\d+)\]\s+([\d.]+): sched:sched_waking: comm=(\S+) pid=(\d+) prio=\d+ target_cpu=(\d+)")

def trace(path):
    """Run lengths of wrk and the backend on CPU 1, and how long wrk had run when the
    backend was woken (µs)."""
    runs = collections.defaultdict(list)
    role = lambda pid, comm: "backend" if pid == bew else comm
    cur, since, into = None, None, []
    for line in open(path):
        m = SW.search(line)
        if m and m[1] == "001":
            t = float(m[2])
            if since is not None:
                runs[role(m[4], m[3])].append((t - since) * 1e6)
            cur, since = role(m[7], m[6]), t
            continue
        m = WK.search(line)
        if m and m[5] == "001" and m[4] == bew and cur == "wrk" and since is not None:
            into.append((float(m[2]) - since) * 1e6)
    return runs, into

by = collections.defaultdict(list)
for line in open(f"{w}/counts.txt"):
    name, r, n, bv0, bv1, wn0, wn1, i0, i1 = line.split()
    n = int(n)
    runs, into = trace(f"{w}/sched-{name}-{r}.txt")
    # wrk's counters cover 0.2 s .. 1.0 s of the run: scale to that share of its requests
    wshare = n * 0.8 / dur
    by[name].append((n, (int(bv1) - int(bv0)) / n, (int(wn1) - int(wn0)) / wshare,
                     (int(i1) - int(i0)) / n,
                     st.median(runs["wrk"]) if runs["wrk"] else 0,
                     st.median(runs["backend"]) if runs["backend"] else 0,
                     st.median(into) if into else 0))
print(f"{'proxy':13s} {'requests':>9s} {'backend sleeps/req':>18s} {'wrk preempted/req':>17s} "
      f"{'CPU 1 resched IRQs/req':>22s} {'wrk run us':>10s} {'backend run us':>14s} {'wrk ran us when backend woken':>29s}")
for name, v in by.items():
    med = [st.median(x[i] for x in v) for i in range(7)]
    print(f"{name:13s} {med[0]:9.0f} {med[1]:18.3f} {med[2]:17.3f} {med[3]:22.3f} {med[4]:10.0f} {med[5]:14.0f} {med[6]:29.0f}")
nginx = by["nginx"]
for name, v in by.items():
    if name != "nginx":
        ratios = [a[0] / b[0] for a, b in zip(v, nginx)]
        print(f"{name} vs nginx, per round: {[round(x, 3) for x in ratios]}")
PY
