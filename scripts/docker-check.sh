#!/usr/bin/env bash
# Builds the Dockerfile and checks the image for real, with podman (no Docker engine runs on
# these machines): ../shared/docker/verify-image.sh builds it, then two mock backends and the
# gateway run from the image on the host network, curl through the gateway must alternate
# between them, and SIGTERM must stop the gateway with exit code 0 within docker's 10 s.
# Uses ports 8080, 9001 and 9002 on loopback; removes every container it started.
set -euo pipefail
cd "$(dirname "$0")/.."
shared=../shared/docker
[ -f "$shared/verify-image.sh" ] || { echo "docker-check: needs $shared/verify-image.sh" >&2; exit 2; }
tag=localhost/gateway:check
bash "$shared/verify-image.sh" "$tag"
# shellcheck source=/dev/null
source "$shared/env.sh"

containers=(gateway-check-9001 gateway-check-9002 gateway-check)
cleanup() { podman rm -f "${containers[@]}" >/dev/null 2>&1 || true; }
trap cleanup EXIT
cleanup
for port in 9001 9002; do
  podman run -d --name "gateway-check-$port" --entrypoint /usr/local/bin/mock-backend "$tag" "$port" >/dev/null
done
podman run -d --name gateway-check "$tag" >/dev/null

for _ in $(seq 100); do
  curl -fs localhost:8080/v1/proxy/product >/dev/null 2>&1 && break
  sleep 0.2
done
answers=$(for _ in 1 2 3 4; do curl -fs localhost:8080/v1/proxy/product; done)
expected=$(printf 'Hello from 9001\nHello from 9002\nHello from 9001\nHello from 9002')
if [ "$(echo "$answers" | sort)" != "$(echo "$expected" | sort)" ] || [ "$(echo "$answers" | uniq | wc -l)" != 4 ]; then
  echo "docker-check: FAIL: no alternation through the container:"; echo "$answers"; exit 1
fi
echo "docker-check: alternation through the container: ok"

started=$(date +%s.%N)
podman stop -t 10 gateway-check >/dev/null
took=$(echo "$(date +%s.%N) - $started" | bc)
code=$(podman inspect gateway-check --format '{{.State.ExitCode}}')
user=$(podman inspect gateway-check --format '{{.Config.User}}')
echo "docker-check: SIGTERM -> exit $code after ${took}s, running as user '$user'"
[ "$code" = 0 ] || { echo "docker-check: FAIL: exit code $code"; exit 1; }
[ "$(echo "$took < 10" | bc)" = 1 ] || { echo "docker-check: FAIL: took ${took}s"; exit 1; }
[ -n "$user" ] && [ "$user" != root ] || { echo "docker-check: FAIL: runs as root"; exit 1; }
echo "docker-check: ok"
