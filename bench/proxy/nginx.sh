# Sourced by the proxy benchmarks. Needs W (a scratch directory), BE (backend port) and NGX
# (proxy port). Also starts the gateways under test the same way in each script.

# Writes $W/backend.conf: the backend nginx (one worker, answers "hello world\n"), its pid in
# $W/backend.pid.
backend_conf() {
  cat >"$W/backend.conf" <<CONF
worker_processes 1; pid $W/backend.pid; error_log $W/backend.err; events { worker_connections 4096; }
http { access_log off; server { listen 127.0.0.1:$BE backlog=4096; keepalive_requests 1000000;
  location / { return 200 "hello world\n"; } } }
CONF
}

# (Not KONG_HEADERS: that is Kong's `headers` setting, which the gateway reads.)
# With NGINX_KONG_HEADERS=1, the reference nginx sets what the gateway sets, as Kong's own nginx
# does: the upstream request's Host (the upstream's), `Connection: keep-alive`, X-Forwarded-*,
# X-Real-IP, the request id and Via, and the answer's Via, latency and request id headers. Both
# proxies then put the same bytes on the wire for the backend and the client to parse. Prints
# the directives.
kong_headers() {
  [ "${NGINX_KONG_HEADERS:-}" = 1 ] || return 0
  cat <<DIRECTIVES
proxy_set_header Host 127.0.0.1:$BE; proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
  proxy_set_header X-Forwarded-Proto \$scheme; proxy_set_header X-Forwarded-Host \$host;
  proxy_set_header X-Forwarded-Port \$server_port; proxy_set_header X-Forwarded-Path \$uri;
  proxy_set_header X-Real-IP \$remote_addr; proxy_set_header X-Kong-Request-Id \$request_id;
  proxy_set_header Via "1.1 kong/3.10.0"; add_header Via "1.1 kong/3.10.0";
  add_header X-Kong-Upstream-Latency 0; add_header X-Kong-Proxy-Latency 0;
  add_header X-Kong-Request-Id \$request_id;
DIRECTIVES
}

# The reference nginx's upstream `Connection`: none for plain `proxy_pass`, Kong's
# `keep-alive` with NGINX_KONG_HEADERS=1.
upstream_connection() {
  if [ "${NGINX_KONG_HEADERS:-}" = 1 ]; then echo keep-alive; else echo '""'; fi
}

# The access logs. Unset ACCESS_LOG: neither proxy logs (the comparison of the proxying
# itself). ACCESS_LOG=1: both write a line per request to a file in $W, in the same format
# (Kong's `kong_log_format`, whose `$kong_request_id` is nginx's `$request_id` here).
# gw_log_args PORT: the gateway's flags; ngx_access_log: the reference nginx's directives.
gw_log_args() {
  if [ "${ACCESS_LOG:-}" = 1 ]; then
    echo "--proxy-access-log $W/gw-access-$1.log --admin-access-log off"
  else
    echo "--proxy-access-log off --admin-access-log off"
  fi
}
ngx_access_log() {
  if [ "${ACCESS_LOG:-}" = 1 ]; then
    echo "log_format kong '\$remote_addr - \$remote_user [\$time_local] \"\$request\" \$status \$body_bytes_sent \"\$http_referer\" \"\$http_user_agent\" kong_request_id: \"\$request_id\"'; access_log $W/ngx-access.log kong;"
  else
    echo "access_log off;"
  fi
}

# Starts the backend (CPU 1) and the reference nginx reverse proxy (one worker, CPU 0,
# keep-alive upstream), and sets NGXW to the proxy's worker pid.
start_nginx_pair() {
  backend_conf
  cat >"$W/proxy.conf" <<CONF
worker_processes 1; pid $W/proxy.pid; error_log $W/proxy.err; events { worker_connections 4096; }
http { $(ngx_access_log) upstream be { server 127.0.0.1:$BE; keepalive 256; keepalive_requests 1000000; }
  server { listen 127.0.0.1:$NGX backlog=4096; keepalive_requests 1000000;
  location / { proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection $(upstream_connection);
  $(kong_headers) } } }
CONF
  taskset -c 1 nginx -c "$W/backend.conf" -p "$W" -e "$W/backend.err"
  taskset -c 0 nginx -c "$W/proxy.conf" -p "$W" -e "$W/proxy.err"
  for _ in $(seq 1 50); do [ -s "$W/proxy.pid" ] && break; sleep 0.1; done
  NGXW=$(pgrep -P "$(cat "$W/proxy.pid")" | head -1) # the worker that does the proxying
}

# Starts gateway binary $1 on CPU 0 with one worker: proxy on port $2, admin on $2+1, status on
# $2+2, extra `silverback proxy` flags $3 (split on spaces); output in $W/gw-$2.out. Prints its
# pid.
start_gateway() {
  # shellcheck disable=SC2086 # the extra arguments are split on purpose
  taskset -c 0 "$1" proxy --proxy-listen "127.0.0.1:$2 backlog=4096" --admin-listen "127.0.0.1:$(($2 + 1))" \
    --status-listen "127.0.0.1:$(($2 + 2))" --nginx-worker-processes 1 \
    --nginx-http-keepalive-requests 1000000 $(gw_log_args "$2") $3 >"$W/gw-$2.out" 2>&1 &
  echo $!
}

# Waits for the gateway on port $1 to answer (or fails, showing its output), then loads one
# service on the backend with a route for `/`.
load_one_route() {
  printf '{"_format_version":"3.0","services":[{"name":"be","url":"http://127.0.0.1:%s","routes":[{"name":"all","paths":["/"]}]}]}' "$BE" >"$W/one.json"
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$(($1 + 1))/status" >/dev/null && break; sleep 0.1; done
  curl -sf "http://127.0.0.1:$(($1 + 1))/status" >/dev/null || { echo "the gateway on port $1 did not start:"; cat "$W/gw-$1.out"; exit 1; }
  curl -sf -o /dev/null -X POST -H 'content-type: application/json' --data-binary @"$W/one.json" "http://127.0.0.1:$(($1 + 1))/config"
}

# Busy time of CPU 1 (the backend and wrk, and whatever else runs there), in clock ticks.
cpu1_busy() { awk '$1 == "cpu1" {print $2 + $3 + $4 + $7 + $8}' /proc/stat; }
# Voluntary context switches of process $1, all its threads (a process that sleeps has run out
# of work and must be woken again).
sleeps() { cat /proc/"$1"/task/*/status | awk '/^voluntary_ctxt_switches/ {n += $2} END {print n}'; }
