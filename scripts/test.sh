#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, lints, then every unit and integration test
# (the integration tests start the real gateway and mock backends on loopback ephemeral ports).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo fmt --all -- --check
cargo clippy --locked --all-targets -- -D warnings
cargo test --locked
