# Sourced by the proxy benchmarks. Needs W (a scratch directory), BE (backend port) and NGX
# (proxy port).

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
# does: the upstream request's Host (the upstream's), X-Forwarded-*, X-Real-IP, the request id
# and Via, and the answer's Via, latency and request id headers. Both proxies then put the
# same bytes on the wire for the backend and the client to parse. Prints the directives.
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

# Starts the backend (CPU 1) and the reference nginx reverse proxy (one worker, CPU 0,
# keep-alive upstream), and sets NGXW to the proxy's worker pid.
start_nginx_pair() {
  backend_conf
  cat >"$W/proxy.conf" <<CONF
worker_processes 1; pid $W/proxy.pid; error_log $W/proxy.err; events { worker_connections 4096; }
http { access_log off; upstream be { server 127.0.0.1:$BE; keepalive 256; keepalive_requests 1000000; }
  server { listen 127.0.0.1:$NGX backlog=4096; keepalive_requests 1000000;
  location / { proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection "";
  $(kong_headers) } } }
CONF
  taskset -c 1 nginx -c "$W/backend.conf" -p "$W" -e "$W/backend.err"
  taskset -c 0 nginx -c "$W/proxy.conf" -p "$W" -e "$W/proxy.err"
  for _ in $(seq 1 50); do [ -s "$W/proxy.pid" ] && break; sleep 0.1; done
  NGXW=$(pgrep -P "$(cat "$W/proxy.pid")" | head -1) # the worker that does the proxying
}
