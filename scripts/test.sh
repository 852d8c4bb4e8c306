#!/usr/bin/env bash
# The whole test suite, as CI runs it: the vendored Pingora crates against their releases and patches,
# formatting, lints, the fuzz targets compiling, every unit, integration and property
# test (the integration tests start the real gateway and mock backends on loopback ephemeral
# ports), the Kubernetes manifests against the API schemas, then the Docker image and compose
# checks (scripts/docker-check.sh: podman, several minutes on a fresh machine;
# `scripts/test.sh --no-docker` skips them).
set -euo pipefail
cd "$(dirname "$0")/.."
docker=yes
[ "${1:-}" = --no-docker ] && docker=no
bash scripts/setup.sh
bash scripts/check-vendor.sh
cargo fmt --all -- --check
cargo clippy --locked --all-targets -- -D warnings
# The fuzz targets live in a workspace of their own; they must keep compiling. Sharing the target
# directory reuses the dependencies just checked (seconds, not minutes).
cargo check --locked --manifest-path fuzz/Cargo.toml --target-dir target
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --locked 2>&1 | tee "$log"
# cargo prints one result line per test binary (the last is often the doc-tests' "0 passed"):
# close with the totals.
awk '/^test result:/ { passed += $4; failed += $6 } END { printf "tests: %d passed, %d failed\n", passed, failed }' "$log"
bash scripts/validate-kubernetes.sh
if [ "$docker" = yes ]; then
  bash scripts/docker-check.sh
fi
