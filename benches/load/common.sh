# Shared by tls.sh, h2.sh, instructions.sh and scripts/bolt.sh (sourced, not run): a work folder
# removed on exit with every process started into `pids`, a self-signed certificate for
# localhost, a gateway conf with a TLS listener, the median of a list, and the head of an nginx
# conf whose `http` block the caller completes.

work=$(mktemp -d "/tmp/gateway-$(basename "$0" .sh)-bench.XXXXXX")
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# $work/server.crt and $work/server.key, for localhost and 127.0.0.1, valid for two days.
make_certificate() {
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=localhost" \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -keyout "$work/server.key" -out "$work/server.crt" 2>/dev/null
}

# $work/gateway.yaml: one worker, a short grace period, no admin listener and no status block,
# plaintext on LISTEN and TLS (make_certificate's) on TLS_LISTEN, the services in
# $work/services.yaml, and POOL idle backend connections kept for reuse (default 128, Pingora's
# own; give it what the nginx compared with keeps, its `keepalive`).
#   gateway_conf LISTEN TLS_LISTEN [POOL]
gateway_conf() {
  cat >"$work/gateway.yaml" <<EOF
---
version: 1
threads: 1
upstream_keepalive_pool_size: ${3:-128}
pid_file: $work/gateway.pid
upgrade_sock: $work/upgrade.sock
grace_period_seconds: 1
graceful_shutdown_timeout_seconds: 1
gateway:
  listen: $1
  admin_listen: "off"
  services: services.yaml
  status_log: false
  tls:
    listen: $2
    certificates:
      - cert: server.crt
        key: server.key
EOF
}

# The start of an nginx conf writing only under $work, up to the opening of `http {`; NAME (default
# nginx) names its pid file and error log, so two instances can run side by side.
nginx_conf_head() {
  local nginx_user=www-data name=${1:-nginx}
  id www-data >/dev/null 2>&1 || nginx_user="nobody nogroup"
  cat <<HEAD
user $nginx_user;
worker_processes 1;
daemon off;
pid $work/$name.pid;
error_log $work/$name.err;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $work/body;
  proxy_temp_path $work/proxy;
  fastcgi_temp_path $work/fastcgi;
  uwsgi_temp_path $work/uwsgi;
  scgi_temp_path $work/scgi;
HEAD
}

# $work/backends.conf: the backends as an nginx of their own, as in the HTTP/1.1 harness (run.sh),
# one server per PORT answering "Hello from PORT". One nginx serving both a proxy and its backends
# would pass each request to itself within one event loop, which no deployment does. No limit on
# requests a connection: nginx's default (1,000) would close the proxies' connections.
nginx_backends_conf() {
  {
    nginx_conf_head backends
    echo "  keepalive_requests 100000000;"
    local port
    for port in "$@"; do
      echo "  server { listen 127.0.0.1:$port; location / { return 200 \"Hello from $port\\n\"; } }"
    done
    echo "}"
  } >"$work/backends.conf"
}

# The median of the numbers on standard input (whitespace-separated).
median() {
  tr ' ' '\n' | grep . | sort -g | awk '{v[NR]=$1} END {print (NR%2 ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2)}'
}
