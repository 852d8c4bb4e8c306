#!/usr/bin/env bash
# The demo of the original design: two mock backends on 9001 and 9002, and the gateway on 8080
# with the shipped conf (conf/gateway.yaml, conf/config.yaml). Ctrl-C stops all three.
#
#   curl localhost:8080/v1/proxy/product     # alternates "Hello from 9001" / "Hello from 9002"
#   kill "$(cat /tmp/gateway-demo-9002.pid)" # stop one replica and watch its breaker open
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release --locked --bins

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
./target/release/gateway -c conf/gateway.yaml
