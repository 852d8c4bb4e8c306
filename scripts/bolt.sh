#!/usr/bin/env bash
# The release gateway with its machine code laid out by BOLT from a training run; with --pgo
# (what the Dockerfile ships), compiled from a profile first. The layout keeps the compiler's
# output and only places it differently: the paths a request takes made straight and packed
# together, code no request ran moved apart. On this project's 2-core VM it cut the
# instruction-cache misses a request by ~40 %, and the gateway's CPU a request by about a fifth,
# its user-space part by ~30 % (docs/performance.md, "eleventh session").
#
#   scripts/bolt.sh            # target/release/gateway-bolt
#   scripts/bolt.sh --bare     # and target/release/examples/bare_proxy-bolt, for benchmarks
#   scripts/bolt.sh --pgo      # the gateway compiled from a profile first, then laid out (the image's)
#
# 1. The release binary, linked with its relocations kept (`--emit-relocs`: BOLT moves code and
#    must know what points where). Only the final link changes; dependencies are not rebuilt.
# 2. A copy instrumented by llvm-bolt serves a training load on loopback in front of two mock
#    backends: HTTP/1.1 keep-alive GETs with a load tool's head and a browser's, POSTs with a
#    body, h2c, and HTTP/2 and HTTP/1.1 over TLS (a certificate made here). It writes its
#    profile when it exits.
# 3. llvm-bolt lays the binary out from that profile.
# 4. The result serves the same loads once more, and every request must succeed.
#
# With --pgo, the binary laid out is first compiled from a profile (rustc's profile-guided
# optimisation): a build instrumented by rustc (`-Cprofile-generate`, in target/pgo-generate)
# serves the same training load, in front of mock backends from that same build, and the release
# build is made again from what it recorded (`-Cprofile-use`, in target/pgo-use/gateway, its
# relocations kept; the mock backend too, which is what the image ships). Two more full builds
# and no plain one; on this VM the gateway then runs ~25 % fewer instructions a request
# (docs/performance.md, "twelfth session"). With --bare too, bare_proxy gets the same, trained on
# its own (target/pgo-use/bare_proxy). Needs llvm-profdata from the toolchain
# (`rustup component add llvm-tools`).
#
# Needs llvm-bolt and merge-fdata (Debian: bolt-19 or later; the newest installed is used, or
# $LLVM_BOLT_DIR), wrk, h2load (nghttp2-client), readelf, openssl and curl. Uses ports 18080 and 18443
# (the gateway), 8084 (bare_proxy's own) and 9001, 9002 (the mock backends: bare_proxy's fixed
# backends) on loopback; every process started here is stopped by its PID.
set -euo pipefail
cd "$(dirname "$0")/.."
bare=no
pgo=no
for arg in "$@"; do
  case $arg in
    --bare) bare=yes ;;
    --pgo) pgo=yes ;;
    *) echo "usage: $0 [--bare] [--pgo]" >&2; exit 2 ;;
  esac
done

# The newest LLVM with llvm-bolt. No match is not an error here: the check below says what is
# missing (a failed `ls` in a pipeline would end the script under `set -e` without a word).
bolt_dir=${LLVM_BOLT_DIR:-}
if [ -z "$bolt_dir" ]; then
  for dir in $(printf '%s\n' /usr/lib/llvm-*/bin | sort -t- -k2 -n); do
    if [ -x "$dir/llvm-bolt" ]; then bolt_dir=$dir; fi
  done
fi
for tool in "$bolt_dir/llvm-bolt" "$bolt_dir/merge-fdata" "$(command -v wrk)" "$(command -v h2load)"; do
  [ -x "$tool" ] || { echo "bolt.sh needs llvm-bolt and merge-fdata (Debian: bolt-19), wrk and h2load (nghttp2-client)" >&2; exit 2; }
done

# shellcheck source=../benches/load/common.sh
source benches/load/common.sh

# BINARY (cargo's target flags follow) linked with its relocations kept. Cargo keeps the plain
# build and this one apart (a fingerprint and an output for each set of flags) and puts the one
# asked for in place, so neither undoes the other.
link_with_relocations() {
  local binary=$1; shift
  cargo rustc --release --locked "$@" -- -C link-arg=-Wl,--emit-relocs
  check_relocations "$binary"
}

# An instrumented build (cargo's target flags follow), recording into target/pgo. The Dockerfile
# builds the dependencies with these same flags, in a layer of its own.
instrumented_build() {
  RUSTFLAGS="-Cprofile-generate=$PWD/target/pgo" \
    cargo build --release --locked "$@" --target-dir target/pgo-generate
}

check_relocations() {
  readelf -S "$1" | grep -q '\.rela\.text' \
    || { echo "bolt.sh: $1 has no relocations to lay it out with" >&2; exit 1; }
}

if [ "$pgo" = yes ]; then
  profdata=""
  for tool in "$(rustc --print sysroot)"/lib/rustlib/*/bin/llvm-profdata; do
    if [ -x "$tool" ]; then profdata=$tool; fi
  done
  [ -x "$profdata" ] || { echo "bolt.sh --pgo needs llvm-profdata (rustup component add llvm-tools)" >&2; exit 2; }
  rm -rf target/pgo && mkdir -p target/pgo
  # Both of the gateway's binaries instrumented; the mock backends' counts are never merged.
  # bare_proxy in a build of its own: an example brings the dev-dependencies' features along.
  instrumented_build --bins
  [ "$bare" = yes ] && instrumented_build --example bare_proxy
  backend=target/pgo-generate/release/mock-backend
else
  cargo build --release --locked --bin mock-backend
  backend=target/release/mock-backend
  link_with_relocations target/release/gateway --bin gateway
  if [ "$bare" = yes ]; then
    link_with_relocations target/release/examples/bare_proxy --example bare_proxy
  fi
fi

make_certificate
head -c 2048 /dev/urandom >"$work/body"
echo 'product: ["http://127.0.0.1:9001", "http://127.0.0.1:9002"]' >"$work/services.yaml"
gateway_conf 127.0.0.1:18080 127.0.0.1:18443

"$backend" 9001 >/dev/null 2>&1 & pids+=($!)
"$backend" 9002 >/dev/null 2>&1 & pids+=($!)

# shellcheck source=../benches/load/browser-headers.sh
source benches/load/browser-headers.sh

# Fails unless a load tool's output (wrk's or h2load's) says every request got a 2xx answer.
all_succeeded() {
  local what=$1 out=$2
  if echo "$out" | grep -qE 'Non-2xx|Socket errors' \
    || echo "$out" | awk '/^requests:/ {total = $2; if ($8 != $2 || $10 + $12 + $14 != 0) bad = 1}
        /^status codes:/ && $3 != total {bad = 1} END {exit !bad}'; then
    echo "bolt.sh: $what: not every request succeeded:" >&2
    echo "$out" >&2
    return 1
  fi
}

# The training load (and the check): HTTP/1.1 to URL; with TLS_URL, h2c to URL too, and HTTP/2
# and HTTP/1.1 over TLS to TLS_URL (bare_proxy speaks HTTP/1.1 alone).
load() {
  local url=$1 tls_url=${2:-}
  all_succeeded "HTTP/1.1 GETs" "$(timeout 30 wrk -t1 -c32 -d3s "$url")"
  all_succeeded "HTTP/1.1 GETs, browser head" "$(timeout 30 wrk -t1 -c16 -d1s "${header_flags[@]}" "$url")"
  all_succeeded "HTTP/1.1 POSTs" "$(timeout 30 h2load --h1 -c8 -n 4000 -d "$work/body" "$url")"
  if [ -n "$tls_url" ]; then
    all_succeeded "h2c" "$(timeout 30 h2load -c8 -m10 -n 20000 "$url")"
    all_succeeded "HTTP/2 over TLS" "$(timeout 30 h2load -c8 -m10 -n 10000 "$tls_url")"
    all_succeeded "HTTP/1.1 over TLS" "$(timeout 30 wrk -t1 -c16 -d1s "$tls_url")"
  fi
}

# Waits (up to 10 s) until URL answers.
wait_for() {
  for _ in $(seq 100); do
    curl -skf -o /dev/null "$1" && return 0
    sleep 0.1
  done
  echo "bolt.sh: nothing answers at $1" >&2
  return 1
}

# Runs BINARY with `-c CONF` under `load` (at URL and TLS_URL), then stops it with SIGTERM: a
# graceful exit, at which an instrumented binary writes its profile. It must exit cleanly.
serve() {
  local binary=$1 conf=$2 url=$3 tls_url=$4 pid
  "$binary" -c "$conf" >"$work/serve.log" 2>&1 & pid=$!
  pids+=("$pid")
  wait_for "$url"
  load "$url" "$tls_url"
  kill "$pid"
  wait "$pid" || { echo "bolt.sh: $binary did not exit cleanly:" >&2; cat "$work/serve.log" >&2; return 1; }
  # Gone: the cleanup must not signal its PID, which may be another process's by then.
  unset 'pids[-1]'
}

# Instruments BINARY, trains it with `load` (run with `-c CONF`, loaded at URL and TLS_URL), lays
# it out into OUT, and checks OUT under the same load.
bolt() {
  local binary=$1 out=$2 conf=$3 url=$4 tls_url=${5:-}
  mkdir -p "$(dirname "$out")"
  "$bolt_dir/llvm-bolt" "$binary" -instrument -instrumentation-file="$work/profile" \
    -instrumentation-file-append-pid -o "$work/instrumented" >"$work/bolt.log" 2>&1 \
    || { cat "$work/bolt.log" >&2; return 1; }
  for stage in train check; do
    local run="$work/instrumented"
    [ "$stage" = check ] && run=$out
    serve "$run" "$conf" "$url" "$tls_url"
    if [ "$stage" = train ]; then
      "$bolt_dir/merge-fdata" "$work"/profile.*.fdata >"$work/profile.fdata" 2>/dev/null
      rm -f "$work"/profile.*.fdata
      "$bolt_dir/llvm-bolt" "$binary" -o "$out" -data="$work/profile.fdata" \
        -reorder-blocks=ext-tsp -reorder-functions=cdsort -split-functions -split-all-cold \
        -split-eh -icf=1 -use-gnu-stack >"$work/bolt.log" 2>&1 \
        || { cat "$work/bolt.log" >&2; return 1; }
    fi
  done
  echo "bolt.sh: $out"
}

# Serves the instrumented BINARY (target/pgo-generate/release/BINARY) under `load` at URL and
# TLS_URL, merges what it recorded, and compiles it again from that profile, relocations kept,
# into target/pgo-use/NAME, NAME being its file name (cargo's target flags follow).
compile_from_profile() {
  local binary=$1 url=$2 tls_url=$3 name
  shift 3
  name=$(basename "$binary")
  LLVM_PROFILE_FILE="$PWD/target/pgo/$name-%p-%m.profraw" \
    serve "target/pgo-generate/release/$binary" "$work/gateway.yaml" "$url" "$tls_url"
  "$profdata" merge -o "target/pgo/$name.profdata" target/pgo/"$name"-*.profraw
  RUSTFLAGS="-Cprofile-use=$PWD/target/pgo/$name.profdata -Clink-arg=-Wl,--emit-relocs" \
    cargo build --release --locked "$@" --target-dir "target/pgo-use/$name"
  check_relocations "target/pgo-use/$name/release/$binary"
}

# Where each proxy is loaded: the gateway over HTTP/1.1, h2c and TLS, bare_proxy over HTTP/1.1.
gateway_url=http://127.0.0.1:18080/v1/proxy/product
gateway_tls_url=https://127.0.0.1:18443/v1/proxy/product
bare_url=http://127.0.0.1:8084/

gateway=target/release/gateway
bare_proxy=target/release/examples/bare_proxy
if [ "$pgo" = yes ]; then
  # Both of the gateway's binaries, so that the image's mock-backend comes from this build too.
  compile_from_profile gateway "$gateway_url" "$gateway_tls_url" --bins
  gateway=target/pgo-use/gateway/release/gateway
  if [ "$bare" = yes ]; then
    compile_from_profile examples/bare_proxy "$bare_url" "" --example bare_proxy
    bare_proxy=target/pgo-use/bare_proxy/release/examples/bare_proxy
  fi
fi
bolt "$gateway" target/release/gateway-bolt "$work/gateway.yaml" "$gateway_url" "$gateway_tls_url"
if [ "$bare" = yes ]; then
  bolt "$bare_proxy" target/release/examples/bare_proxy-bolt "$work/gateway.yaml" "$bare_url"
fi
