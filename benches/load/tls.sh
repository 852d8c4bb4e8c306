#!/usr/bin/env bash
# TLS side by side, in one run: the gateway and nginx terminate TLS with the same certificate
# (made here) in front of the same two nginx backends, and wrk measures
#   - keep-alive throughput: 64 connections reusing their TLS sessions, and
#   - new handshakes: every request on a new connection (`Connection: close`), so requests/s is
#     full TLS handshakes per second (no session resumption: wrk opens fresh sessions).
# Rounds are interleaved (gateway, nginx, gateway, nginx, ...) so both see the same machine;
# the table gives medians and the gateway/nginx ratios. Proxies and backends on core 1, wrk on
# core 0; loopback only; every process is stopped by its PID.
#
#   benches/load/tls.sh [ROUNDS]        # default 3; builds the release gateway first
#
# GATEWAY_BIN measures another build of the gateway (say target/release/gateway-bolt,
# scripts/bolt.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-3}
bash scripts/setup.sh
command -v nginx >/dev/null && command -v wrk >/dev/null || {
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx wrk >/dev/null
}
cargo build --release --locked --bin gateway >/dev/null 2>&1

# shellcheck source=common.sh
source benches/load/common.sh
make_certificate

nginx_backends_conf 9101 9102
{
  nginx_conf_head
  cat <<EOF
  upstream product { server 127.0.0.1:9101; server 127.0.0.1:9102; keepalive 64; }
  server {
    listen 127.0.0.1:8444 ssl;
    ssl_certificate $work/server.crt;
    ssl_certificate_key $work/server.key;
    ssl_protocols TLSv1.2 TLSv1.3;
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
product: ["http://127.0.0.1:9101", "http://127.0.0.1:9102"]
EOF
gateway_conf 127.0.0.1:18080 127.0.0.1:8443

taskset -c 1 nginx -c "$work/backends.conf" -p "$work" & pids+=($!)
taskset -c 1 nginx -c "$work/nginx.conf" -p "$work" & pids+=($!)
taskset -c 1 "${GATEWAY_BIN:-./target/release/gateway}" -c "$work/gateway.yaml" >"$work/gateway.log" 2>&1 & pids+=($!)
for _ in $(seq 100); do
  curl -skf https://127.0.0.1:8443/v1/proxy/product >/dev/null \
    && curl -skf https://127.0.0.1:8444/v1/proxy/product >/dev/null && break
  sleep 0.1
done

# req/s of one 5 s wrk run (after a 1 s warm-up) against port $1, with extra wrk args.
measure() {
  local port=$1; shift
  timeout 20 taskset -c 0 wrk -t1 -c64 -d1s "$@" "https://127.0.0.1:$port/v1/proxy/product" >/dev/null
  timeout 20 taskset -c 0 wrk -t1 -c64 -d5s "$@" "https://127.0.0.1:$port/v1/proxy/product" \
    | awk '/Requests\/sec/{print $2}'
}

declare -A results
for round in $(seq "$rounds"); do
  for mode in keepalive handshakes; do
    args=()
    [ "$mode" = handshakes ] && args=(-H "Connection: close")
    for who in gateway nginx; do
      port=8443; [ "$who" = nginx ] && port=8444
      rps=$(measure "$port" "${args[@]}")
      results[$who-$mode]+="$rps "
      echo "round $round  $mode  $who  $rps req/s" >&2
    done
  done
done

printf '%-34s %12s %12s %8s\n' "TLS ($rounds interleaved rounds, medians)" gateway nginx ratio
for mode in keepalive handshakes; do
  g=$(echo "${results[gateway-$mode]}" | median)
  n=$(echo "${results[nginx-$mode]}" | median)
  label="keep-alive requests/s"; [ "$mode" = handshakes ] && label="new TLS handshakes/s (1 req each)"
  printf '%-34s %12.0f %12.0f %7.2fx\n' "$label" "$g" "$n" "$(echo "$g / $n" | bc -l)"
done
