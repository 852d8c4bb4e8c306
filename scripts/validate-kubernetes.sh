#!/usr/bin/env bash
# Renders the kustomize base and the demo overlay in deploy/kubernetes/ and validates every
# object against the Kubernetes API schemas (kubernetes-validate from PyPI, strict: unknown
# fields are errors). Installs what is missing: kubernetes-validate, and kubectl (Debian's
# kubernetes-client) for `kubectl kustomize`.
set -euo pipefail
cd "$(dirname "$0")/.."
kubernetes_version=1.37.0
# Run as a module: a freshly pip-installed command may not be on PATH yet (pyenv shims).
python3 -c 'import kubernetes_validate' 2>/dev/null \
  || python3 -m pip install -q --disable-pip-version-check kubernetes-validate==1.37.0
if ! command -v kubectl >/dev/null; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq kubernetes-client >/dev/null
fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for dir in deploy/kubernetes/base deploy/kubernetes/overlays/demo; do
  rendered="$out/$(echo "$dir" | tr / _).yaml"
  # kustomize warns that `bases` is deprecated; the overlay keeps it for old kustomize versions.
  kubectl kustomize "$dir" >"$rendered" 2>"$out/kustomize.log" \
    || { cat "$out/kustomize.log" >&2; exit 1; }
  python3 -m kubernetes_validate --strict --quiet -k "$kubernetes_version" "$rendered"
  echo "kubernetes: $dir: $(grep -c '^kind:' "$rendered") objects valid against Kubernetes $kubernetes_version"
done
