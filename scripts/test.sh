#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, lints, then every unit and integration test
# (the integration tests start the real gateway and mock backends on loopback ephemeral ports).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo fmt --all -- --check
cargo clippy --locked --all-targets -- -D warnings
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --locked 2>&1 | tee "$log"
# cargo prints one result line per test binary (the last is often the doc-tests' "0 passed"):
# close with the totals.
awk '/^test result:/ { passed += $4; failed += $6 } END { printf "tests: %d passed, %d failed\n", passed, failed }' "$log"
