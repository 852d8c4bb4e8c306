#!/usr/bin/env bash
# Builds the project's Dockerfile with rootful podman and runs the image, with no container registry:
# the base images the Dockerfile names (debian:bookworm-slim, rust:1.95-bookworm) are made locally
# first (debootstrap from the machine's own Debian mirror; the host's Rust toolchain copied in).
#
# Usage (from the project root):  scripts/docker/verify-image.sh [TAG]
# Then, e.g.:                       podman run -d --name gw -p 127.0.0.1:18080:8080 TAG
# Each podman call needs the same environment: source scripts/docker/env.sh first.
#
# Vendored from the workplace's shared/docker/ (with env.sh and rust-image.Dockerfile) so that CI,
# which has only this repository, can run scripts/docker-check.sh.
#
# Known limits here: no BuildKit-only syntax (COPY --link), HEALTHCHECK kept only with --format docker,
# images are close stand-ins for the official ones, not the same bytes.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
tag=${1:-localhost/gateway:test}
# shellcheck source=env.sh
source "$here/env.sh"

if ! command -v podman >/dev/null || ! command -v debootstrap >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    podman buildah debootstrap runc uidmap containernetworking-plugins golang-github-containers-common >/dev/null
fi
mkdir -p "$PODMAN_HOME/tmp"

if ! podman image exists docker.io/library/debian:bookworm-slim; then
  mirror=$(sed -n 's/^URIs: *\(http[^ ]*\/debian\)$/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n1)
  [ -n "$mirror" ] || mirror=$(awk '$1=="deb"{print $2; exit}' /etc/apt/sources.list 2>/dev/null)
  rootfs=$PODMAN_HOME/rootfs
  [ -d "$rootfs/usr" ] || debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >/dev/null
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/*
  tar --numeric-owner -C "$rootfs" -c . | podman import --change 'CMD ["bash"]' - docker.io/library/debian:bookworm-slim
fi

if ! podman image exists docker.io/library/rust:1.95-bookworm; then
  toolchain=$(rustc --print sysroot)
  podman build --pull=never --network host \
    -v "$toolchain:/src-toolchain:ro" -v "$(command -v rustup):/src-rustup:ro" \
    -t docker.io/library/rust:1.95-bookworm -f "$here/rust-image.Dockerfile" "$here"
fi

# The registries are reached through an intercepting proxy with its own CA: lend the host's bundle.
podman build --pull=never --network host --format docker \
  -v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro \
  -t "$tag" .
echo "built $tag"
