#!/usr/bin/env bash
# The load benchmark in one command: a release build of the gateway, then the side-by-side
# harness (run.sh) against nginx, HAProxy, the original Go design and direct-to-backend, on
# loopback only, bounded in time. Knobs are run.sh's environment variables (see README.md here),
# e.g. ROUNDS=5 CONNS=256 benches/load/bench.sh; GATEWAY_CONF picks another conf (the variants
# in this folder), and GATEWAY_BIN another build (say target/release/gateway-bolt, the image's
# layout: scripts/bolt.sh). `benches/load/bench.sh summary` re-prints the last table.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ "${1:-run}" = run ]; then
  bash scripts/setup.sh
  cargo build --release --locked --bins
fi
conf=${GATEWAY_CONF:-benches/load/gateway.yaml}
export GATEWAY_CMD="$(realpath "${GATEWAY_BIN:-target/release/gateway}") -c $PWD/$conf"
export GATEWAY_PORT=8080
export CONTENDERS=${CONTENDERS:-"direct nginx haproxy go gateway"}
exec bash benches/load/run.sh "$@"
