#!/usr/bin/env bash
# Checks that vendor/pingora-proxy is the published pingora-proxy release plus
# vendor/pingora-proxy.patch and nothing else (see vendor/README.md): a local edit to the
# vendored crate fails here instead of hiding in a copy of someone else's code.
set -euo pipefail
cd "$(dirname "$0")/.."
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' vendor/pingora-proxy/Cargo.toml | head -n1)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
curl -sSfL --retry 3 --max-time 60 \
  "https://static.crates.io/crates/pingora-proxy/pingora-proxy-$version.crate" | tar -xz -C "$work"
release="$work/pingora-proxy-$version"
rm -f "$release/.cargo-ok" "$release/Cargo.lock"
patch --quiet -p1 -d "$release" < vendor/pingora-proxy.patch
if ! diff -r "$release" vendor/pingora-proxy; then
  echo "vendor/pingora-proxy is not pingora-proxy $version plus vendor/pingora-proxy.patch" >&2
  exit 1
fi
echo "vendor: pingora-proxy $version plus vendor/pingora-proxy.patch, nothing else"
