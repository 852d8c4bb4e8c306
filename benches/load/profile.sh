#!/usr/bin/env bash
# Where a proxy's CPU goes under load: a flat perf profile, grouped.
#
#   benches/load/profile.sh OUT PORT PATH BINARY [ARGS...]
#
# Starts two mock backends (9001, 9002) and the proxy (`BINARY ARGS...`, listening on PORT) on
# core 1, loads `http://127.0.0.1:PORT/PATH` with wrk on core 0 (64 connections, 8 s) and samples
# the proxy with `perf record -e cpu-clock` (no hardware counters needed) for 5 s in the middle.
# Writes OUT.wrk, OUT.data and OUT.txt (the samples grouped: kernel, allocator, header maps,
# bytes, tokio, Pingora, the gateway's own code). Loopback only; every process it starts is
# stopped by its PID. E.g.
#   benches/load/profile.sh /tmp/gw 8080 /v1/proxy/product target/release/gateway -c benches/load/gateway.yaml
#   benches/load/profile.sh /tmp/bare 8084 / target/release/examples/bare_proxy -c benches/load/gateway.yaml
set -euo pipefail
cd "$(dirname "$0")/../.."
[ $# -ge 4 ] || { echo "usage: $0 OUT PORT PATH BINARY [ARGS...]" >&2; exit 2; }
out=$1 port=$2 path=$3
shift 3
command -v perf >/dev/null || { echo "profile.sh needs perf (Debian: linux-perf)" >&2; exit 2; }
cargo build --release --locked --bin mock-backend >/dev/null 2>&1
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT
taskset -c 1 ./target/release/mock-backend 9001 >/dev/null 2>&1 & pids+=($!)
taskset -c 1 ./target/release/mock-backend 9002 >/dev/null 2>&1 & pids+=($!)
taskset -c 1 "$@" >/dev/null 2>&1 & proxy=$!
pids+=("$proxy")
sleep 1
timeout 20 taskset -c 0 wrk -t1 -c64 -d8s "http://127.0.0.1:$port$path" >"$out.wrk" & load=$!
sleep 2
perf record -F 1999 -e cpu-clock -p "$proxy" -o "$out.data" -- sleep 5 >/dev/null 2>&1
wait "$load"
perf report -i "$out.data" --no-children --sort dso,symbol --stdio 2>/dev/null | python3 -c '
import re, sys
groups = {}
for line in sys.stdin:
    m = re.match(r"\s*([\d.]+)%\s+(\S+)\s+\[(.)\]\s+(.*)", line)
    if not m:
        continue
    pct, dso, sym = float(m.group(1)), m.group(2), m.group(4)
    if dso.startswith("[kernel"): g = "kernel (syscalls, TCP, scheduling)"
    elif dso == "[vdso]": g = "vdso clock reads"
    elif re.search(r"\bmi_|_mi_|malloc|free", sym): g = "allocator (mimalloc)"
    elif re.search(r"memmove|memcpy|memset", sym): g = "memcpy/memmove"
    elif sym.startswith("bytes::"): g = "bytes (Bytes clone/drop)"
    elif re.search(r"header::map|pingora_http|case_header|HeaderMap|httparse", sym): g = "header maps and parsing"
    elif "gateway::" in sym: g = "the gateway'"'"'s own code (its hooks)"
    elif "tokio::" in sym: g = "tokio (tasks, channels, timers, readiness)"
    elif "pingora" in sym: g = "other Pingora (proxy and session futures, pool)"
    else: g = "other"
    groups[g] = groups.get(g, 0) + pct
for g, v in sorted(groups.items(), key=lambda kv: -kv[1]):
    print(f"{v:5.1f}%  {g}")
' >"$out.txt"
grep "Requests/sec" "$out.wrk"
cat "$out.txt"
