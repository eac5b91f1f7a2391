#!/usr/bin/env bash
# Plain HTTP/1.1 keep-alive proxying: the gateway (one worker thread) against Debian's nginx
# as a reverse proxy (one worker), same backend, same load tool, same run, alternating
# A B A B. Then the same with 10,000 extra routes loaded, the POST /config time of that
# configuration, and the gateway's resident memory.
#
# The gateway is the product binary, `silverback proxy` (mimalloc, the CLI's runtime), built
# in release unless GW_BIN names another binary taking the same flags (the
# `silverback-proxy` example `gateway` does: `GW_BIN=example`). GW2_BIN adds a second
# gateway to every round (A/B of two builds: nginx, gateway, gateway 2, ...). GW_ARGS and
# GW2_ARGS add `silverback proxy` flags to each (e.g. GW2_BIN=$GW_BIN GW2_ARGS="--headers off").
# Neither proxy writes an access log unless ACCESS_LOG=1, which has both log every request to
# a file in the same format (`gw_log_args` in nginx.sh).
#
# Needs: nginx (nginx-light), wrk, curl, python3, taskset. Usage:
#   bench/proxy/run.sh [ROUNDS=3] [DURATION=5s] [CONNECTIONS=50]
set -euo pipefail
ROUNDS=${1:-3}
DUR=${2:-5s}
CONNS=${3:-50}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
GW_BIN=${GW_BIN:-}
GW2_BIN=${GW2_BIN:-}
if [ -z "$GW_BIN" ]; then
  (cd "$ROOT" && cargo build -q --release -p silverback)
  GW_BIN=$CARGO_TARGET_DIR/release/silverback
elif [ "$GW_BIN" = example ]; then
  (cd "$ROOT" && cargo build -q --release -p silverback-proxy --example gateway)
  GW_BIN=$CARGO_TARGET_DIR/release/examples/gateway
fi
W=$(mktemp -d)
BE=19100 NGX=19101 GW=19102 ADMIN=19103 STATUS=19104 GW2=19105 ADMIN2=19106 STATUS2=19107
cleanup() {
  for p in "$W"/*.pid; do [ -f "$p" ] && kill "$(cat "$p")" 2>/dev/null || true; done
  [ -n "${GWPID:-}" ] && kill "$GWPID" 2>/dev/null || true
  [ -n "${GW2PID:-}" ] && kill "$GW2PID" 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT

# shellcheck source=bench/proxy/nginx.sh
. "$(dirname "$0")/nginx.sh"
start_nginx_pair
start_gw() { # bin port admin status extra-args -> pid
  local args=(--proxy-listen "127.0.0.1:$2 backlog=4096" --admin-listen "127.0.0.1:$3"
    --status-listen "127.0.0.1:$4")
  case "$(basename "$1")" in
    # shellcheck disable=SC2207 # the log flags are split on purpose
    silverback*) args=(proxy "${args[@]}" --nginx-worker-processes 1 --nginx-http-keepalive-requests 1000000
      $(gw_log_args "$2")) ;;
    *) args+=(--workers 1) ;;
  esac
  # shellcheck disable=SC2206 # the extra arguments are split on purpose
  args+=($5)
  taskset -c 0 "$1" "${args[@]}" >"$W/gw-$2.out" 2>"$W/gw-$2.err" &
  echo $!
}
GWPID=$(start_gw "$GW_BIN" $GW $ADMIN $STATUS "${GW_ARGS:-}")
GW2PID=
[ -n "$GW2_BIN" ] && GW2PID=$(start_gw "$GW2_BIN" $GW2 $ADMIN2 $STATUS2 "${GW2_ARGS:-}")
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$ADMIN/status" >/dev/null && break; sleep 0.1; done
if [ -n "$GW2_BIN" ]; then
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$ADMIN2/status" >/dev/null && break; sleep 0.1; done
fi

one_route() {
  printf '{"_format_version":"3.0","services":[{"name":"be","url":"http://127.0.0.1:%s","routes":[{"name":"all","paths":["/"]}]}]}' "$BE"
}
many_routes() {
  python3 - "$BE" <<'PY'
import json, sys
be = sys.argv[1]
svcs = [{"name": "be", "url": f"http://127.0.0.1:{be}", "routes": [
    {"name": "all", "paths": ["/"]},
    # Answers 426 to plain HTTP once this configuration serves (the run measures when).
    {"name": "serving-check", "paths": ["/serving-check"], "protocols": ["https"]}]}]
for i in range(10000):
    svcs.append({"name": f"svc-{i}", "url": f"http://127.0.0.1:{be}/s{i}",
                 "routes": [{"name": f"route-{i}", "hosts": [f"svc-{i}.example.test"], "paths": [f"/svc-{i}"]}]})
print(json.dumps({"_format_version": "3.0", "services": svcs}))
PY
}
post() { # file [admin port] -> prints status and seconds
  curl -s -o /dev/null -w '%{http_code} %{time_total}\n' -X POST -H 'content-type: application/json' \
    --data-binary @"$1" "http://127.0.0.1:${2:-$ADMIN}/config"
}
cpu_ticks() { # pid -> utime+stime of the whole process, in clock ticks
  awk '{print $14 + $15}' "/proc/$1/stat"
}
load() { # port pid -> "rps p99 cpu_us_per_request"
  local c0 c1 out
  c0=$(cpu_ticks "$2")
  out=$(taskset -c 1 wrk -t1 -c"$CONNS" -d"$DUR" --latency "http://127.0.0.1:$1/" | awk '
    /^ *[0-9]+ requests in/ {n=$1}
    /Requests\/sec/ {rps=$2}
    $1=="99%" {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v=v/1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v=v*1000}; p99=v}
    END {printf "%s %s %s\n", rps, p99, n}')
  c1=$(cpu_ticks "$2")
  # CPU time the proxy spent per request (µs): robust to the load tool's share of the machine.
  echo "$out" | awk -v c="$((c1 - c0))" -v hz="$(getconf CLK_TCK)" '{printf "%s %s %.1f\n", $1, $2, c / hz * 1e6 / $3}'
}

one_route > "$W/one.json"
many_routes > "$W/many.json"
echo "gateway: $GW_BIN ${GW_ARGS:-}${GW2_BIN:+, gateway 2: $GW2_BIN ${GW2_ARGS:-}}"
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "POST one route: $(post "$W/one.json")"
curl -sf "http://127.0.0.1:$GW/" >/dev/null
if [ -n "$GW2_BIN" ]; then
  echo "POST one route (gateway 2): $(post "$W/one.json" $ADMIN2)"
  curl -sf "http://127.0.0.1:$GW2/" >/dev/null
fi
echo "round  nginx_rps  nginx_p99_ms  nginx_cpu_us/req  gw_rps  gw_p99_ms  gw_cpu_us/req${GW2_BIN:+  gw2_rps  gw2_p99_ms  gw2_cpu_us/req}"
declare -a RN RG PN PG R2 P2 CN CG C2
for r in $(seq 1 "$ROUNDS"); do
  read -r n_rps n_p99 n_cpu < <(load $NGX "$NGXW")
  read -r g_rps g_p99 g_cpu < <(load $GW "$GWPID")
  line="$r  $n_rps  $n_p99  $n_cpu  $g_rps  $g_p99  $g_cpu"
  if [ -n "$GW2_BIN" ]; then
    read -r g2_rps g2_p99 g2_cpu < <(load $GW2 "$GW2PID")
    line="$line  $g2_rps  $g2_p99  $g2_cpu"
    R2+=("$g2_rps"); P2+=("$g2_p99"); C2+=("$g2_cpu")
  fi
  echo "$line"
  RN+=("$n_rps"); RG+=("$g_rps"); PN+=("$n_p99"); PG+=("$g_p99"); CN+=("$n_cpu"); CG+=("$g_cpu")
done
serve_time() { # file proxy_port admin_port -> seconds from sending POST /config until the new
  # configuration serves: its https-only /serving-check answers 426 (polled every 5 ms)
  python3 - "$1" "$2" "$3" <<'PY'
import http.client, sys, threading, time
body = open(sys.argv[1], "rb").read()
proxy, admin = int(sys.argv[2]), int(sys.argv[3])
# One keep-alive connection for the polls: a new connection per poll would take the gateway's
# CPU (the benchmark pins it to one core) away from the load it is timing.
probe = http.client.HTTPConnection("127.0.0.1", proxy, timeout=5)
def served():
    probe.request("GET", "/serving-check", headers={"Host": "x"})
    r = probe.getresponse(); r.read()
    return r.status == 426
assert not served(), "the new route already answers"
status = []
def post():
    c = http.client.HTTPConnection("127.0.0.1", admin, timeout=60)
    c.request("POST", "/config", body=body, headers={"Content-Type": "application/json"})
    r = c.getresponse(); r.read(); status.append((r.status, time.monotonic()))
t0 = time.monotonic()
th = threading.Thread(target=post); th.start()
while not served():
    if time.monotonic() - t0 > 30:
        sys.exit("not served within 30 s")
    time.sleep(0.005)
t1 = time.monotonic()
th.join()
print(f"{t1 - t0:.3f} s to serving (201 after {status[0][1] - t0:.3f} s)")
PY
}
echo "POST 10,000 extra routes: $(serve_time "$W/many.json" $GW $ADMIN)"
[ -n "$GW2_BIN" ] && echo "POST 10,000 extra routes (gateway 2): $(serve_time "$W/many.json" $GW2 $ADMIN2)"
echo "gateway RSS with 10,001 routes: $(awk '/VmRSS/ {print $2/1024 " MiB"}' /proc/$GWPID/status)"
# The 10k-route rounds alternate with nginx again: the 10k/1-route figure is the ratio of the
# two gateway/nginx ratios (robust to the machine's load changing between the two phases).
echo "round  nginx_rps  gw10k_rps  gw10k_p99_ms${GW2_BIN:+  gw2_10k_rps  gw2_10k_p99_ms}"
declare -a RM RM2 RN2
for r in $(seq 1 "$ROUNDS"); do
  read -r n_rps n_p99 _ < <(load $NGX "$NGXW")
  read -r m_rps m_p99 _ < <(load $GW "$GWPID")
  line="$r  $n_rps  $m_rps  $m_p99"
  if [ -n "$GW2_BIN" ]; then
    read -r m2_rps m2_p99 _ < <(load $GW2 "$GW2PID")
    line="$line  $m2_rps  $m2_p99"
    RM2+=("$m2_rps")
  fi
  echo "$line"
  RM+=("$m_rps"); RN2+=("$n_rps")
done
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "${RN[*]}" "${RG[*]}" "${PN[*]}" "${PG[*]}" "${RM[*]}" "${RN2[*]}" "${R2[*]:-}" "${P2[*]:-}" "${RM2[*]:-}" "${CN[*]}" "${CG[*]}" "${C2[*]:-}" <<'PY'
import statistics as s, sys
rn, rg, pn, pg, rm, rn2, r2, p2, rm2, cn, cg, c2 = ([float(x) for x in a.split()] for a in sys.argv[1:])
print(f"CPU per request, median: nginx {s.median(cn):.1f} us, gateway {s.median(cg):.1f} us" + (f", gateway 2 {s.median(c2):.1f} us" if c2 else ""))
def report(name, rg, pg, rm):
    ratios = [g / n for g, n in zip(rg, rn)]
    print(f"{name}: throughput gateway/nginx per round: {[round(x, 3) for x in ratios]}, median {s.median(ratios):.3f}")
    print(f"{name}: p99 ms median: nginx {s.median(pn):.3f}, gateway {s.median(pg):.3f}")
    one = s.median([g / n for g, n in zip(rg, rn)])
    many = s.median([g / n for g, n in zip(rm, rn2)])
    print(f"{name}: 10k routes vs 1 route: {many / one:.3f} (gateway/nginx {many:.3f} vs {one:.3f}; raw RPS medians {s.median(rm) / s.median(rg):.3f})")
report("gateway", rg, pg, rm)
if r2:
    report("gateway 2", r2, p2, rm2)
PY
