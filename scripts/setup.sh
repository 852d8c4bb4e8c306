#!/usr/bin/env bash
# Installs what building and testing the gateway needs beyond Rust itself: cmake and a C
# toolchain, for Pingora's vendored zlib-ng, and HAProxy, for the two-replica test.
# Idempotent; does nothing when they are already there.
set -euo pipefail

missing=()
command -v cmake >/dev/null || missing+=(cmake)
command -v cc >/dev/null || missing+=(build-essential)
# The two-replica test (tests/replicas.rs) runs two gateways behind HAProxy.
command -v haproxy >/dev/null || missing+=(haproxy)
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "setup: installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if ! command -v cargo >/dev/null; then
  echo "setup: Rust is missing: install Rust 1.95 or newer (https://rustup.rs), then run this again" >&2
  exit 1
fi
