#!/usr/bin/env bash
# The demo of the original design: two mock backends on 9001 and 9002, and the gateway on 8080
# with the shipped conf (conf/gateway.yaml, conf/config.yaml), plus TLS on 8443 with a
# certificate made here for localhost (in /tmp/gateway-demo-tls, never committed). Ctrl-C
# stops all three.
#
#   curl localhost:8080/v1/proxy/product     # alternates "Hello from 9001" / "Hello from 9002"
#   curl --cacert /tmp/gateway-demo-tls/demo-ca.crt https://localhost:8443/v1/proxy/product
#   kill "$(cat /tmp/gateway-demo-9002.pid)" # stop one replica and watch its breaker open
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release --locked --bins

# A demo CA and a certificate it signs for localhost, made once and kept for later runs.
tls=/tmp/gateway-demo-tls
if [ ! -s "$tls/localhost.crt" ]; then
  mkdir -p "$tls"
  openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=gateway demo CA" \
    -keyout "$tls/demo-ca.key" -out "$tls/demo-ca.crt" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
    -keyout "$tls/localhost.key" -out "$tls/localhost.csr" 2>/dev/null
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >"$tls/san.ext"
  openssl x509 -req -days 30 -in "$tls/localhost.csr" -CA "$tls/demo-ca.crt" \
    -CAkey "$tls/demo-ca.key" -CAcreateserial -extfile "$tls/san.ext" \
    -out "$tls/localhost.crt" 2>/dev/null
fi
# The shipped conf, with the services file where it is and the TLS listener added.
conf="$tls/gateway.yaml"
sed "s|^  services: config.yaml|  services: $PWD/conf/config.yaml|" conf/gateway.yaml >"$conf"
cat >>"$conf" <<EOF
  tls:
    listen: 0.0.0.0:8443
    certificates:
      - cert: localhost.crt
        key: localhost.key
EOF

pids=()
stop() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
}
trap stop EXIT
for port in 9001 9002; do
  ./target/release/mock-backend "$port" &
  pids+=($!)
  echo $! > "/tmp/gateway-demo-$port.pid"
done
echo "demo: curl --cacert $tls/demo-ca.crt https://localhost:8443/v1/proxy/product"
./target/release/gateway -c "$conf"
