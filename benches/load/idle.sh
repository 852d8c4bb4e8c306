#!/usr/bin/env bash
# Memory per idle keep-alive client connection, and whether it is handed back:
#
#   benches/load/idle.sh [CONNECTIONS] [BINARY CONF[:PORT:PATH] ...]
#
# PORT and PATH default to the gateway's 8080 and /v1/proxy/product; the bare Pingora proxy is
# `target/release/examples/bare_proxy benches/load/gateway.yaml:8084:/`.
#
# For each gateway build (binary and conf; default the release build on benches/load/gateway.yaml)
# and for nginx (when installed), in front of the same two mock backends (9001, 9002): open
# CONNECTIONS keep-alive client connections (default 5000), send one GET on each, keep them all
# open and idle, and read the proxy's RSS before, while they idle (growth per connection), and
# after they are closed and a burst of 64 connections has come and gone (memory handed back).
# Loopback only; every process started here is stopped by its PID.
set -euo pipefail
cd "$(dirname "$0")/../.."
connections=${1:-5000}
shift || true
if [ $# -eq 0 ]; then
  cargo build --release --locked --bin gateway >/dev/null 2>&1
  set -- ./target/release/gateway benches/load/gateway.yaml
fi
cargo build --release --locked --bin mock-backend >/dev/null 2>&1
ulimit -n "$(ulimit -Hn)"
work=$(mktemp -d /tmp/gateway-idle.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

./target/release/mock-backend 9001 >/dev/null 2>&1 & pids+=($!)
./target/release/mock-backend 9002 >/dev/null 2>&1 & pids+=($!)

rss_kib() { awk '/^VmRSS:/{print $2}' "/proc/$1/status"; }

# Opens the connections, one GET each, holds them, then closes them; prints the RSS of $1 at
# each stage (KiB): before, idle, after.
measure() {
  local pid=$1 port=$2 path=$3
  python3 - "$pid" "$port" "$path" "$connections" <<'PY'
import asyncio, sys
pid, port, path, n = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])

def rss():
    with open(f"/proc/{pid}/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))

async def one(request):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    length = next((int(l.split(b":")[1]) for l in head.split(b"\r\n")
                   if l.lower().startswith(b"content-length:")), 0)
    await reader.readexactly(length)
    return writer

async def main():
    request = f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode()
    before = rss()
    writers = []
    for start in range(0, n, 200):
        writers += await asyncio.gather(*(one(request) for _ in range(min(200, n - start))))
    await asyncio.sleep(2)
    idle = rss()
    for w in writers:
        w.close()
    await asyncio.sleep(2)
    # A burst that comes and goes, then quiet: what the allocator hands back.
    for _ in range(4):
        burst = await asyncio.gather(*(one(request) for _ in range(64)))
        for w in burst:
            w.close()
    await asyncio.sleep(3)
    print(before, idle, rss())

asyncio.run(main())
PY
}

report() {
  local name=$1 before=$2 idle=$3 after=$4
  printf '%-44s RSS %7.1f MiB -> %7.1f MiB idle (%6.2f KiB per connection) -> %7.1f MiB after\n' \
    "$name" "$(echo "$before / 1024" | bc -l)" "$(echo "$idle / 1024" | bc -l)" \
    "$(echo "($idle - $before) / $connections" | bc -l)" "$(echo "$after / 1024" | bc -l)"
}

while [ $# -ge 2 ]; do
  binary=$1
  IFS=: read -r conf port path <<<"$2"
  shift 2
  "$binary" -c "$conf" >/dev/null 2>&1 & gateway=$!
  pids+=("$gateway")
  # Until it listens (seconds under valgrind), within 60 s.
  for _ in $(seq 600); do
    (exec 3<>"/dev/tcp/127.0.0.1/${port:-8080}") 2>/dev/null && break
    sleep 0.1
  done
  sleep 1
  read -r before idle after < <(measure "$gateway" "${port:-8080}" "${path:-/v1/proxy/product}")
  report "$binary $(basename "$conf")" "$before" "$idle" "$after"
  kill "$gateway"; wait "$gateway" 2>/dev/null || true
done

if command -v nginx >/dev/null; then
  nginx_user=www-data
  id www-data >/dev/null 2>&1 || nginx_user="nobody nogroup"
  mkdir -p "$work/nginx"
  cat >"$work/nginx.conf" <<CONF
user $nginx_user;
worker_processes 1;
worker_rlimit_nofile $(ulimit -Hn);
daemon off;
pid $work/nginx.pid;
error_log $work/nginx.err;
events { worker_connections 20000; }
http {
  access_log off;
  client_body_temp_path $work/nginx/body;
  proxy_temp_path $work/nginx/proxy;
  fastcgi_temp_path $work/nginx/fastcgi;
  uwsgi_temp_path $work/nginx/uwsgi;
  scgi_temp_path $work/nginx/scgi;
  keepalive_timeout 60s;
  keepalive_requests 100000;
  upstream product { server 127.0.0.1:9001; server 127.0.0.1:9002; keepalive 64; }
  server {
    listen 127.0.0.1:8081;
    location /v1/proxy/product {
      proxy_pass http://product/;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
CONF
  nginx -c "$work/nginx.conf" >/dev/null 2>&1 & master=$!
  pids+=("$master")
  sleep 1
  worker=$(pgrep -P "$master" | head -n1)
  read -r before idle after < <(measure "$worker" 8081 /v1/proxy/product)
  report "nginx (its worker)" "$before" "$idle" "$after"
fi
