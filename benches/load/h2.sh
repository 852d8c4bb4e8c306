#!/usr/bin/env bash
# HTTP/2 side by side, in one run, with h2load (Debian's nghttp2-client):
#   - h2c (prior knowledge) and h2 over TLS: the gateway and nginx (`http2` on) in front of the
#     same two nginx backends (HTTP/1.1, keep-alive);
#   - gRPC unary calls: through the gateway (`protocol: http2`, a path prefix) against straight
#     to the mock backend's gRPC service (`mock-backend --h2`).
# Rounds are interleaved, medians and ratios printed. Proxies and backends on core 1, h2load on
# core 0 (one thread, 16 connections, 10 streams each); loopback only; processes stopped by PID.
#
#   benches/load/h2.sh [ROUNDS]        # default 3; builds the release binaries first
#
# GATEWAY_BIN measures another build of the gateway (say target/release/gateway-bolt,
# scripts/bolt.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-3}
bash scripts/setup.sh
command -v nginx >/dev/null && command -v h2load >/dev/null || {
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx nghttp2-client >/dev/null
}
cargo build --release --locked --bins >/dev/null 2>&1

# shellcheck source=common.sh
source benches/load/common.sh
make_certificate

nginx_backends_conf 9201 9202
{
  nginx_conf_head
  cat <<EOF
  # No limit on requests a connection: nginx's default (1,000) sends the clients of its HTTP/2
  # listener a GOAWAY, after which h2load counts the rest of that connection's requests failed.
  keepalive_requests 1000000;
  # 16 connections of 10 streams are up to 160 requests at once: with fewer idle connections kept
  # (64, say), nginx closes and opens backend connections all the time.
  upstream product { server 127.0.0.1:9201; server 127.0.0.1:9202; keepalive 256; }
  server {
    listen 127.0.0.1:8282 http2;
    listen 127.0.0.1:8444 ssl http2;
    ssl_certificate $work/server.crt;
    ssl_certificate_key $work/server.key;
    location /v1/proxy/product {
      proxy_pass http://product/;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
EOF
} >"$work/nginx.conf"
cat >"$work/services.yaml" <<EOF
product: ["http://127.0.0.1:9201", "http://127.0.0.1:9202"]
echo:
  backends: ["http://127.0.0.1:9203"]
  protocol: http2
  path_prefixes: [/mock.Echo/]
EOF
# The gateway keeps as many idle backend connections as nginx (`keepalive 256` above): with
# Pingora's default of 128, below the 160 requests in flight, it closed and opened one backend
# connection every ~20 requests.
gateway_conf 127.0.0.1:18180 127.0.0.1:18443 256
# One gRPC message: no compression, 5 bytes, "hello".
printf '\x00\x00\x00\x00\x05hello' >"$work/grpc-message"

taskset -c 1 nginx -c "$work/backends.conf" -p "$work" & pids+=($!)
taskset -c 1 nginx -c "$work/nginx.conf" -p "$work" & pids+=($!)
taskset -c 1 ./target/release/mock-backend --h2 9203 >/dev/null & pids+=($!)
taskset -c 1 "${GATEWAY_BIN:-./target/release/gateway}" -c "$work/gateway.yaml" >"$work/gateway.log" 2>&1 & pids+=($!)
for _ in $(seq 100); do
  curl -sf --http2-prior-knowledge http://127.0.0.1:18180/v1/proxy/product >/dev/null \
    && curl -sf --http2-prior-knowledge http://127.0.0.1:8282/v1/proxy/product >/dev/null && break
  sleep 0.1
done

# req/s of one h2load run: URL, then extra h2load arguments. Failed requests are reported on
# standard error: the rate counts only those that succeeded.
measure() {
  local url=$1 out failed; shift
  out=$(timeout 60 taskset -c 0 h2load -t1 -c16 -m10 -n 40000 "$@" "$url" 2>/dev/null)
  failed=$(echo "$out" | sed -n 's/^requests:.* \([0-9]*\) failed.*/\1/p')
  [ "${failed:-0}" = 0 ] || echo "warning: $url: $failed requests failed" >&2
  echo "$out" | awk '/^finished in/{gsub(",", "", $4); print $4}'
}

grpc=(-d "$work/grpc-message" -H "content-type: application/grpc" -H "te: trailers")
declare -A results
for round in $(seq "$rounds"); do
  results[gateway-h2c]+="$(measure http://127.0.0.1:18180/v1/proxy/product) "
  results[nginx-h2c]+="$(measure http://127.0.0.1:8282/v1/proxy/product) "
  results[gateway-h2]+="$(measure https://127.0.0.1:18443/v1/proxy/product) "
  results[nginx-h2]+="$(measure https://127.0.0.1:8444/v1/proxy/product) "
  results[gateway-grpc]+="$(measure http://127.0.0.1:18180/mock.Echo/Unary "${grpc[@]}") "
  results[direct-grpc]+="$(measure http://127.0.0.1:9203/mock.Echo/Unary "${grpc[@]}") "
  echo "round $round: $(for k in "${!results[@]}"; do printf '%s=%s ' "$k" "$(echo ${results[$k]} | awk '{print $NF}')"; done)" >&2
done

row() {
  local label=$1 a b
  a=$(echo "${results[$2]}" | median)
  b=$(echo "${results[$3]}" | median)
  printf '%-40s %12.0f %12.0f %7.2fx\n' "$label" "$a" "$b" "$(echo "$a / $b" | bc -l)"
}
printf '%-40s %12s %12s %8s\n' "HTTP/2 ($rounds rounds, medians, req/s)" gateway other ratio
row "h2c, against nginx" gateway-h2c nginx-h2c
row "h2 over TLS, against nginx" gateway-h2 nginx-h2
row "gRPC unary, against direct" gateway-grpc direct-grpc
