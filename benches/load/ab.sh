#!/usr/bin/env bash
# A/B of two gateway builds (or confs), interleaved in one run so both see the same machine:
#
#   benches/load/ab.sh BINARY_A CONF_A BINARY_B CONF_B [ROUNDS]
#
# Each round starts two mock backends (9001, 9002) and the gateway on 8080, all pinned to core 1,
# loads it with wrk pinned to core 0 (2 s warm-up, 5 s measured, 64 connections; with H2=1,
# h2load over h2c instead: 16 connections x 10 streams, 100,000 requests; with H2=tls, the same
# over TLS to 127.0.0.1:8443, for a conf like gateway-tls.yaml), and prints
# req/s, the gateway's CPU time per request (and its user-space and kernel parts) and its RSS
# after the load (each row marked A or B);
# at the end, the median CPU per request of each and the median of the rounds' paired
# differences (B against A, the steadier figure when the machine drifts), for all the CPU and for
# its user-space and kernel parts (a change to the proxy's own code shows in user space; the
# kernel's part, about half, mostly adds scatter). Loopback only; every
# process started here is stopped by its PID. With BROWSER=1, every request carries a browser's
# header fields (browser-headers.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
[ $# -ge 4 ] || { echo "usage: $0 BINARY_A CONF_A BINARY_B CONF_B [ROUNDS]" >&2; exit 2; }
rounds=${5:-2}
header_flags=()
# shellcheck source=browser-headers.sh
if [ -n "${BROWSER:-}" ]; then source benches/load/browser-headers.sh; fi
cargo build --release --locked --bin mock-backend >/dev/null 2>&1
# shellcheck source=tls-cert.sh
if [ "${H2:-}" = tls ]; then source benches/load/tls-cert.sh; fi

measure() {
  local binary=$1 conf=$2 pids=()
  taskset -c 1 ./target/release/mock-backend 9001 >/dev/null 2>&1 & pids+=($!)
  taskset -c 1 ./target/release/mock-backend 9002 >/dev/null 2>&1 & pids+=($!)
  taskset -c 1 "$binary" -c "$conf" >/dev/null 2>&1 & local gateway=$!
  pids+=("$gateway")
  sleep 1
  local url=http://127.0.0.1:8080/v1/proxy/product before after out requests
  [ "${H2:-}" = tls ] && url=https://127.0.0.1:8443/v1/proxy/product
  if [ -n "${H2:-}" ]; then
    # h2c with prior knowledge (or h2 over TLS, by ALPN): 16 connections of 10 streams each, a
    # fixed number of requests.
    timeout 30 taskset -c 0 h2load -t1 -c16 -m10 -n 20000 "${header_flags[@]}" "$url" >/dev/null
    before=$(awk '{print $14, $15}' "/proc/$gateway/stat")
    out=$(timeout 60 taskset -c 0 h2load -t1 -c16 -m10 -n 100000 "${header_flags[@]}" "$url")
    after=$(awk '{print $14, $15}' "/proc/$gateway/stat")
    # In wrk's words, for the lines below.
    out="$(echo "$out" | awk '/^finished in/{gsub(",","",$4); print "Requests/sec: " $4} /^requests:/{print $4 " requests in"}')"
  else
    timeout 15 taskset -c 0 wrk -t1 -c64 -d2s "${header_flags[@]}" "$url" >/dev/null
    before=$(awk '{print $14, $15}' "/proc/$gateway/stat")
    out=$(timeout 15 taskset -c 0 wrk -t1 -c64 -d5s "${header_flags[@]}" "$url")
    after=$(awk '{print $14, $15}' "/proc/$gateway/stat")
  fi
  local rss_kb
  rss_kb=$(awk '/^VmRSS:/{print $2}' "/proc/$gateway/status")
  kill "${pids[@]}"; wait "${pids[@]}" 2>/dev/null || true
  requests=$(echo "$out" | awk '/requests in/{print $1}')
  # Clock ticks (user, kernel) before and after, to microseconds a request.
  local user sys
  read -r user sys <<<"$(echo "$before $after" | awk -v hz="$(getconf CLK_TCK)" -v n="$requests" \
    '{printf "%.2f %.2f", ($3 - $1) * 1e6 / hz / n, ($4 - $2) * 1e6 / hz / n}')"
  printf '%-40s req/s %9s   gateway CPU %6s us/req (user %s, kernel %s)   RSS %5s MiB %s\n' "$binary" \
    "$(echo "$out" | awk '/Requests\/sec/{print $2}')" \
    "$(echo "$user + $sys" | bc)" "$user" "$sys" \
    "$(echo "scale=1; $rss_kb / 1024" | bc)" \
    "$(echo "$out" | grep -E 'Non-2xx|Socket errors' | tr -s ' ' || true)"
}

rows=$(mktemp)
trap 'rm -f "$rows"' EXIT
# The order alternates (A B, B A, ...): the second build of a round measured ~6 % slower than
# the first here whichever it was, and a fixed order would charge that to B.
for round in $(seq "$rounds"); do
  if [ $((round % 2)) -eq 1 ]; then
    measure "$1" "$2" | sed 's/^/A /' | tee -a "$rows"
    measure "$3" "$4" | sed 's/^/B /' | tee -a "$rows"
  else
    measure "$3" "$4" | sed 's/^/B /' | tee -a "$rows"
    measure "$1" "$2" | sed 's/^/A /' | tee -a "$rows"
  fi
done
# Each row starts with its build's letter; the CPU figure is the word after "CPU", its parts the
# words after "user" and "kernel".
python3 - "$rows" <<'PY'
import re, statistics, sys
rows = [re.search(r"^(A|B) .* CPU +([\d.]+) us/req \(user ([\d.]+), kernel ([\d.]+)\)", line)
        for line in open(sys.argv[1])]
rows = [(m[1], float(m[2]), float(m[3]), float(m[4])) for m in rows if m]
def median(build, field):
    return statistics.median(row[field] for row in rows if row[0] == build)
def paired(field):
    # Round by round, B against the A of its round: steadier than the medians when the machine drifts.
    a = [row[field] for row in rows if row[0] == "A"]
    b = [row[field] for row in rows if row[0] == "B"]
    return statistics.median((y - x) / x * 100 for x, y in zip(a, b))
rounds = sum(1 for row in rows if row[0] == "B")
print(f"medians of {rounds} rounds: A {median('A', 1):.2f} us/req (user {median('A', 2):.2f}, kernel {median('A', 3):.2f}), "
      f"B {median('B', 1):.2f} us/req (user {median('B', 2):.2f}, kernel {median('B', 3):.2f}); "
      f"paired median B vs A {paired(1):+.1f} % (user {paired(2):+.1f} %, kernel {paired(3):+.1f} %)")
PY
