#!/usr/bin/env bash
# Checks that each vendored crate (vendor/pingora-core, pingora-http, pingora-proxy, h2) is the
# published release plus vendor/<crate>.patch and nothing else (see vendor/README.md): a local
# edit to a vendored crate fails here instead of hiding in a copy of someone else's code.
#
# The releases come through cargo itself (a throwaway manifest that depends on the exact
# versions, then `cargo fetch`), so this works wherever cargo's own registry settings do.
#
# `scripts/check-vendor.sh --write` goes the other way after an edit to a vendored copy: it
# rewrites each vendor/<crate>.patch as the diff from the release to the copy (no timestamps,
# so a patch changes only where the code does).
set -euo pipefail
cd "$(dirname "$0")/.."
write=no
[ "${1:-}" = --write ] && write=yes
crates=(pingora-core pingora-http pingora-proxy h2)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

mkdir -p "$work/fetch/src"
touch "$work/fetch/src/lib.rs"
{
  printf '[package]\nname = "vendor-check"\nversion = "0.0.0"\nedition = "2021"\n\n[dependencies]\n'
  for crate in "${crates[@]}"; do
    version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "vendor/$crate/Cargo.toml" | head -n1)
    printf '%s = "=%s"\n' "$crate" "$version"
  done
} >"$work/fetch/Cargo.toml"
# Start from the project's lock so that only the releases themselves are new to cargo.
cp Cargo.lock "$work/fetch/Cargo.lock"
cargo fetch --quiet --manifest-path "$work/fetch/Cargo.toml"

cache="${CARGO_HOME:-$HOME/.cargo}/registry/cache"
for crate in "${crates[@]}"; do
  version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "vendor/$crate/Cargo.toml" | head -n1)
  archive=$(find "$cache" -name "$crate-$version.crate" -print -quit)
  if [ -z "$archive" ]; then
    echo "check-vendor: cargo fetched no $crate-$version.crate under $cache" >&2
    exit 1
  fi
  tar -xzf "$archive" -C "$work"
  release="$work/$crate-$version"
  rm -f "$release/.cargo-ok" "$release/Cargo.lock"
  if [ "$write" = yes ]; then
    mkdir -p "$work/$crate"
    mv "$release" "$work/$crate/a"
    cp -r "vendor/$crate" "$work/$crate/b"
    # diff exits 1 when the trees differ, which is the point; 2 is trouble.
    status=0
    (cd "$work/$crate" && diff -ruN a b) >"$work/$crate.diff" || status=$?
    [ "$status" -le 1 ] || { echo "check-vendor: diff failed for $crate" >&2; exit 1; }
    sed -E 's/^((---|\+\+\+) [^\t]+)\t.*$/\1/' "$work/$crate.diff" >"vendor/$crate.patch"
    echo "vendor: wrote vendor/$crate.patch"
    continue
  fi
  patch --quiet -p1 -d "$release" <"vendor/$crate.patch"
  if ! diff -r "$release" "vendor/$crate"; then
    echo "vendor/$crate is not $crate $version plus vendor/$crate.patch" >&2
    exit 1
  fi
  echo "vendor: $crate $version plus vendor/$crate.patch, nothing else"
done
