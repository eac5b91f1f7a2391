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

# Starts the backend (CPU 1) and the reference nginx reverse proxy (one worker, CPU 0,
# keep-alive upstream), and sets NGXW to the proxy's worker pid.
start_nginx_pair() {
  backend_conf
  cat >"$W/proxy.conf" <<CONF
worker_processes 1; pid $W/proxy.pid; error_log $W/proxy.err; events { worker_connections 4096; }
http { access_log off; upstream be { server 127.0.0.1:$BE; keepalive 256; keepalive_requests 1000000; }
  server { listen 127.0.0.1:$NGX backlog=4096; keepalive_requests 1000000;
  location / { proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
CONF
  taskset -c 1 nginx -c "$W/backend.conf" -p "$W" -e "$W/backend.err"
  taskset -c 0 nginx -c "$W/proxy.conf" -p "$W" -e "$W/proxy.err"
  for _ in $(seq 1 50); do [ -s "$W/proxy.pid" ] && break; sleep 0.1; done
  NGXW=$(pgrep -P "$(cat "$W/proxy.pid")" | head -1) # the worker that does the proxying
}
