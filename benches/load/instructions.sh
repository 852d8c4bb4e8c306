#!/usr/bin/env bash
# User-space instructions and heap allocations per proxied request, counted by valgrind's
# callgrind: the same binary and load give the same counts whatever else the machine is doing,
# so a change of a few percent shows where `ab.sh`'s CPU times (±10-30 % per round on this VM)
# cannot resolve it. Kernel time (syscalls, TCP) is not counted: `ab.sh` still has the last word
# on a change that moves work into or out of the kernel.
#
#   benches/load/instructions.sh [REQUESTS] [NAME=BINARY:CONF:PORT:PATH ...]
#
# Default: the release gateway on benches/load/gateway.yaml, and the bare Pingora proxy
# (examples/bare_proxy.rs). For each proxy, in front of two nginx backends on 9001 and 9002 (as
# in the shared harness, run.sh: a fixed 13-byte body; not under valgrind; the mock backend would
# echo every forwarded header back and so charge the gateway's extra request headers twice):
# start it under callgrind, warm it up (2,000 requests), zero the counters,
# send REQUESTS keep-alive GETs (default 20,000; h2load --h1, 16 connections, no pipelining),
# dump, and print instructions per request and allocations (calls into mimalloc's malloc, zalloc
# and realloc entry points, plain and aligned: what src/allocator.rs calls; and glibc's malloc,
# calloc and realloc) per request.
# With KEEP=DIR, each proxy's dump is kept as DIR/NAME.callgrind, for callgrind_annotate.
# With BROWSER=1, each request carries a browser's header fields too (browser-headers.sh).
# With H2=1, the requests are HTTP/2 over cleartext (h2c, prior knowledge), 10 streams at a time
# on each connection, instead of HTTP/1.1. With H2=tls, the same over TLS (ALPN h2): give each
# proxy a conf with a TLS listener and its port (benches/load/gateway-tls.yaml and 8443, whose
# certificate is made as ab.sh makes it); the count then includes the 16 connections' handshakes.
# With CACHE=1, callgrind simulates the caches too (about twice as slow), and each proxy's line
# adds its first-level instruction and data misses, its last-level misses and callgrind's cycle
# estimate (instructions + 10 a first-level miss + 100 a last-level one) per request.
# With NGINX=1, nginx is counted too, after the others: as a proxy on 8081 in front of the same
# backends, configured as run.sh's (upstream keep-alive, 64 connections), in one process
# (`master_process off`) so that callgrind sees its worker. Its allocations are glibc's (its
# per-request pools take most of what it needs in a few calls).
# Loopback only; every process started here is stopped by its PID.
set -euo pipefail
cd "$(dirname "$0")/../.."
requests=${1:-20000}
shift || true
command -v valgrind >/dev/null || { echo "instructions.sh needs valgrind" >&2; exit 2; }
command -v h2load >/dev/null || { echo "instructions.sh needs h2load (Debian: nghttp2-client)" >&2; exit 2; }
command -v nginx >/dev/null || { echo "instructions.sh needs nginx (Debian: nginx)" >&2; exit 2; }
if [ $# -eq 0 ]; then
  cargo build --release --locked --bin gateway --example bare_proxy >/dev/null 2>&1
  set -- "gateway=./target/release/gateway:benches/load/gateway.yaml:8080:/v1/proxy/product" \
    "bare_pingora=./target/release/examples/bare_proxy:benches/load/gateway.yaml:8084:/"
fi
scheme=http
if [ "${H2:-}" = tls ]; then
  [ -z "${NGINX:-}" ] || { echo "instructions.sh: NGINX=1 counts nginx over HTTP/1.1 or h2c, not with H2=tls" >&2; exit 2; }
  scheme=https
  # shellcheck source=tls-cert.sh
  source benches/load/tls-cert.sh
fi
# shellcheck source=common.sh
source benches/load/common.sh
{
  nginx_conf_head
  cat <<EOF
  keepalive_timeout 120s;
  keepalive_requests 100000000;
  server { listen 127.0.0.1:9001; location / { default_type text/plain; return 200 "ok from 9001\n"; } }
  server { listen 127.0.0.1:9002; location / { default_type text/plain; return 200 "ok from 9002\n"; } }
}
EOF
} >"$work/nginx.conf"
nginx -c "$work/nginx.conf" >/dev/null 2>&1 & pids+=($!)

# Waits (up to 60 s: valgrind starts slowly) until something answers on the port.
wait_listening() {
  local port=$1
  for _ in $(seq 600); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "instructions.sh: nothing listens on $port" >&2
  return 1
}

# Sums a callgrind dump: total instructions, and the calls into the allocator's entry points.
summarize() {
  python3 - "$@" <<'PY'
import re, sys
path, requests = sys.argv[1], int(sys.argv[2])
names, total, allocs, misses = {}, 0, 0, None
alloc = re.compile(r"^(mi_(malloc|zalloc|realloc)(_aligned)?|malloc|calloc|realloc)$")
pending_alloc = False
with open(path) as f:
    for line in f:
        if line.startswith("summary:"):
            counts = [int(n) for n in line.split()[1:]]
            total = counts[0]
            if len(counts) == 9:
                # With the cache simulation: Ir Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw.
                misses = (counts[3], counts[4] + counts[5], sum(counts[6:]))
        elif line.startswith(("fn=", "cfn=")):
            # A name is given once, with its number, wherever it first appears.
            m = re.match(r"c?fn=\((\d+)\)(?: (.*))?", line.strip())
            if m.group(2):
                names[m.group(1)] = m.group(2)
            pending_alloc = line.startswith("cfn=") and bool(alloc.match(names[m.group(1)]))
        elif line.startswith("calls=") and pending_alloc:
            allocs += int(line[6:].split()[0])
            pending_alloc = False
line = f"{total / requests:10.0f} instructions/request  {allocs / requests:6.2f} allocations/request"
if misses:
    i1, d1, ll = (m / requests for m in misses)
    # callgrind_annotate's cycle estimate: 10 cycles a first-level miss, 100 a last-level one.
    estimate = total / requests + 10 * (i1 + d1) + 100 * ll
    line += f"  misses: {i1:.0f} I1, {d1:.0f} D1, {ll:.1f} LL  cycle estimate {estimate:.0f}"
print(line)
PY
}

if [ -n "${NGINX:-}" ]; then
  mkdir -p "$work/proxy"
  # h2c with prior knowledge, as h2load speaks it with H2=1.
  listen_http2=""
  if [ -n "${H2:-}" ]; then listen_http2=" http2"; fi
  cat >"$work/nginx-proxy.conf" <<EOF
worker_processes 1;
master_process off;
daemon off;
pid $work/proxy/nginx.pid;
error_log $work/proxy/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_timeout 120s;
  keepalive_requests 100000000;
  client_body_temp_path $work/proxy/body;
  proxy_temp_path $work/proxy/proxy;
  fastcgi_temp_path $work/proxy/fastcgi;
  uwsgi_temp_path $work/proxy/uwsgi;
  scgi_temp_path $work/proxy/scgi;
  upstream product {
    server 127.0.0.1:9001;
    server 127.0.0.1:9002;
    keepalive 64;
    keepalive_requests 100000000;
  }
  server {
    listen 127.0.0.1:8081$listen_http2;
    location /v1/proxy/product {
      proxy_pass http://product;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
EOF
  set -- "$@" "nginx=$(command -v nginx):$work/nginx-proxy.conf:8081:/v1/proxy/product"
fi

cache_flags=()
if [ -n "${CACHE:-}" ]; then cache_flags=(--cache-sim=yes); fi

header_flags=()
# shellcheck source=browser-headers.sh
if [ -n "${BROWSER:-}" ]; then source benches/load/browser-headers.sh; fi
protocol_flags=(--h1)
if [ -n "${H2:-}" ]; then protocol_flags=(-m10); fi

for spec in "$@"; do
  IFS=: read -r binary conf port path <<<"${spec#*=}"
  name=${spec%%=*}
  out="$work/$name.callgrind"
  valgrind --tool=callgrind "${cache_flags[@]}" --callgrind-out-file="$out" --dump-instr=no \
    "$binary" -c "$conf" >"$work/$name.log" 2>&1 & proxy=$!
  pids+=("$proxy")
  wait_listening "$port"
  url="$scheme://127.0.0.1:$port$path"
  timeout 120 h2load "${protocol_flags[@]}" -c16 -n 2000 "${header_flags[@]}" "$url" >/dev/null
  callgrind_control --zero "$proxy" >/dev/null 2>&1
  load=$(timeout 600 h2load "${protocol_flags[@]}" -c16 -n "$requests" "${header_flags[@]}" "$url")
  callgrind_control --dump "$proxy" >/dev/null 2>&1
  kill "$proxy"; wait "$proxy" 2>/dev/null || true
  ok=$(echo "$load" | awk '/^status codes:/{print $3}')
  [ "$ok" = "$requests" ] || { echo "$name: only $ok of $requests answered 2xx" >&2; exit 1; }
  # The dump of the zeroed counters is the first numbered file.
  dump=$(ls "$out".* | sort | head -n1)
  printf '%-14s %s\n' "$name" "$(summarize "$dump" "$requests")"
  if [ -n "${KEEP:-}" ]; then mkdir -p "$KEEP" && cp "$dump" "$KEEP/$name.callgrind"; fi
done
