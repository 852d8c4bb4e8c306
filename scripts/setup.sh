#!/usr/bin/env bash
# Installs what building and testing the gateway needs beyond Rust itself: cmake and a C
# toolchain, for Pingora's vendored zlib-ng; C++, for the fuzz targets' libFuzzer; HAProxy, for
# the two-replica test; curl, for the image checks; patch, for the vendored Pingora crates'
# check; openssl, for the demo's certificate; grpcio (PyPI), for the gRPC tests.
# Idempotent; does nothing when they are already there.
set -euo pipefail

missing=()
command -v cmake >/dev/null || missing+=(cmake)
command -v cc >/dev/null || missing+=(build-essential)
# The fuzz targets' libFuzzer (checked to compile) is C++.
command -v c++ >/dev/null || missing+=(g++)
# The two-replica test (tests/replicas.rs) runs two gateways behind HAProxy.
command -v haproxy >/dev/null || missing+=(haproxy)
# scripts/docker-check.sh asks the gateway in the image; scripts/check-vendor.sh applies the
# patches to the Pingora releases.
command -v curl >/dev/null || missing+=(curl)
command -v patch >/dev/null || missing+=(patch)
# scripts/demo.sh makes its TLS certificate with the openssl command.
command -v openssl >/dev/null || missing+=(openssl)
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "setup: installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# The gRPC tests (tests/grpc.rs) run a real gRPC client and server: grpcio, from PyPI.
if ! python3 -c 'import grpc' 2>/dev/null; then
  echo "setup: installing grpcio"
  python3 -m pip install -q --disable-pip-version-check grpcio==1.85.3
fi
if ! command -v cargo >/dev/null; then
  echo "setup: Rust is missing: install Rust 1.95 or newer (https://rustup.rs), then run this again" >&2
  exit 1
fi
