#!/usr/bin/env bash
# Builds the Dockerfile and checks the image for real, with podman (no Docker engine runs on
# these machines; scripts/docker/verify-image.sh makes the base images locally and builds it):
#
# 1. two mock backends and the gateway run from the image on the host network: curl through
#    the gateway must alternate between them, and SIGTERM must stop the gateway with exit
#    code 0 within docker's 10 s, running as a non-root user;
# 2. compose.yaml, run by podman-compose on its own bridge network (service names resolved by
#    the network's DNS): the same alternation, and the admin listener answering on the host's
#    loopback with the demo token only.
#
# 3. compose's TLS listener on 8443 answers curl --cacert with the demo-only certificate.
#
# Uses ports 8080, 8443, 9001, 9002 and 9091 on loopback; removes every container it started.
set -euo pipefail
cd "$(dirname "$0")/.."
tag=localhost/gateway:check
bash scripts/docker/verify-image.sh "$tag"
# shellcheck source=docker/env.sh
source scripts/docker/env.sh

# Run as a module: a freshly pip-installed command may not be on PATH yet (pyenv shims).
python3 -c 'import podman_compose' 2>/dev/null \
  || python3 -m pip install -q --disable-pip-version-check podman-compose==1.3.0
if [ ! -x /usr/lib/cni/dnsname ]; then
  # Name resolution between compose services on podman's CNI networks.
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq golang-github-containernetworking-plugin-dnsname >/dev/null
fi

containers=(gateway-check-9001 gateway-check-9002 gateway-check)
compose() { python3 -m podman_compose -p gateway-check "$@"; }
cleanup() {
  podman rm -f "${containers[@]}" >/dev/null 2>&1 || true
  compose down >/dev/null 2>&1 || true
}
trap cleanup EXIT
cleanup

# Four answers through localhost:8080 must alternate between the two backends.
check_alternation() {
  local what=$1 answers expected
  for _ in $(seq 100); do
    curl -fs localhost:8080/v1/proxy/product >/dev/null 2>&1 && break
    sleep 0.2
  done
  answers=$(for _ in 1 2 3 4; do curl -fs localhost:8080/v1/proxy/product; done)
  expected=$(printf 'Hello from 9001\nHello from 9001\nHello from 9002\nHello from 9002')
  if [ "$(echo "$answers" | sort)" != "$expected" ] || [ "$(echo "$answers" | uniq | wc -l)" != 4 ]; then
    echo "docker-check: FAIL: no alternation through $what:"; echo "$answers"; exit 1
  fi
  echo "docker-check: alternation through $what: ok"
}

for port in 9001 9002; do
  podman run -d --name "gateway-check-$port" --entrypoint /usr/local/bin/mock-backend "$tag" "$port" >/dev/null
done
podman run -d --name gateway-check "$tag" >/dev/null
check_alternation "the container"

started=$(date +%s.%N)
podman stop -t 10 gateway-check >/dev/null
took=$(echo "$(date +%s.%N) - $started" | bc)
code=$(podman inspect gateway-check --format '{{.State.ExitCode}}')
user=$(podman inspect gateway-check --format '{{.Config.User}}')
echo "docker-check: SIGTERM -> exit $code after ${took}s, running as user '$user'"
[ "$code" = 0 ] || { echo "docker-check: FAIL: exit code $code"; exit 1; }
[ "$(echo "$took < 10" | bc)" = 1 ] || { echo "docker-check: FAIL: took ${took}s"; exit 1; }
[ -n "$user" ] && [ "$user" != root ] || { echo "docker-check: FAIL: runs as root"; exit 1; }
podman rm -f "${containers[@]}" >/dev/null

# compose.yaml names the image gateway:local and builds it; it is built already.
podman tag "$tag" gateway:local
compose up -d --no-build >/dev/null
check_alternation "compose.yaml's gateway"
admin() { curl -s -o /dev/null -w '%{http_code}' "$@" localhost:9091/status; }
[ "$(admin -H 'Authorization: Bearer change-me')" = 200 ] && [ "$(admin)" = 401 ] \
  || { echo "docker-check: FAIL: compose admin listener: $(admin -H 'Authorization: Bearer change-me') / $(admin)"; exit 1; }
echo "docker-check: compose admin listener behind its token: ok"
tls=$(curl -fs --cacert deploy/compose/tls/demo-only.crt https://localhost:8443/v1/proxy/product) \
  || { echo "docker-check: FAIL: compose TLS listener on 8443"; exit 1; }
case "$tls" in "Hello from 900"*) ;; *) echo "docker-check: FAIL: TLS answer: $tls"; exit 1 ;; esac
echo "docker-check: compose TLS listener with the demo certificate: ok"
echo "docker-check: ok"
