#!/usr/bin/env bash
# micronode on an edge box's budget (issue: RSS idle ≤ 32 MiB, RSS ≤ 1.15 ×
# stored bytes + 40 MiB through a fill-and-evict cycle). A release
# micronode with its defaults (amnesia, storage.max_bytes = 64 MiB) on
# loopback; lib.sh's nginx (2 workers) idle beside it as the peer in the
# same run. Prints:
#   - resident memory (VmRSS) idle after /readyz 200, and nginx's (all
#     its processes);
#   - the highest RSS under RATE req/s of 4 KiB GETs for SECS seconds
#     (benches/rate.py, open loop), with the load's latency line;
#   - a fill-and-evict cycle: FILL_MIB objects of 1 MiB PUT through the
#     gateway (3× the budget by default), RSS and storage_bytes_stored after
#     each, the worst RSS ÷ (1.15 × stored + 40 MiB) (≤ 1.00 meets the
#     bound) and the evictions.
# Cold start is `cargo bench --bench cold_start` (micronode beside macronode).
#
# Run: bash benches/edge.sh        (SECS=60 RATE=500 FILL_MIB=192)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=benches/lib.sh
. benches/lib.sh

SECS=${SECS:-60}
RATE=${RATE:-500}
FILL_MIB=${FILL_MIB:-192}

BENCH_BIN=micronode BENCH_ROLES=all bench_setup
sleep 1

rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
nginx_kib() {
  local master total=0 p
  master=$(cat "$WORK/nginx.pid")
  for p in $master $(cat "/proc/$master/task/$master/children"); do
    total=$((total + $(rss_kib "$p")))
  done
  echo "$total"
}

idle=$(rss_kib "$NODE_PID")
peer=$(nginx_kib)
echo "idle RSS: micronode $((idle / 1024)) MiB, nginx (master + 2 workers) $((peer / 1024)) MiB, ratio $(python3 -c "print(f'{$idle/$peer:.2f}')")"

head -c 4096 /dev/urandom > "$WORK/obj"
addr=$(put_object "$WORK/obj")
max=0
( while kill -0 "$NODE_PID" 2>/dev/null; do rss_kib "$NODE_PID"; sleep 0.5; done > "$WORK/rss.log" ) &
sampler=$!
line=$(python3 benches/rate.py "127.0.0.1:$SPORT" "/v1/o/$addr" "$RATE" "$SECS")
kill "$sampler" 2>/dev/null || true
max=$(sort -n "$WORK/rss.log" | tail -1)
echo "under $RATE req/s of 4 KiB GETs for ${SECS}s: max RSS $((max / 1024)) MiB (sent rate p50_ms p95_ms p99_ms ttfb_p95_ms errors: $line)"

python3 - "$NODE_PID" "$SPORT" "$HEALTH" "$FILL_MIB" <<'PY'
import http.client, os, re, sys
pid, port, health, mib = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
def rss():
    for l in open(f"/proc/{pid}/status"):
        if l.startswith("VmRSS"):
            return int(l.split()[1]) * 1024
def metric(name):
    h, p = health.rsplit(":", 1)
    c = http.client.HTTPConnection(h, int(p), timeout=10)
    c.request("GET", "/metrics")
    body = c.getresponse().read().decode()
    return float(re.search(rf"^{name} (\S+)", body, re.M).group(1))
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
worst, worst_at, peak, refused = 0.0, None, 0, 0
for i in range(mib):
    conn.request("PUT", "/v1/o", body=os.urandom(1 << 20))
    r = conn.getresponse(); r.read()
    if r.status != 201:
        refused += 1
    stored, now = metric("storage_bytes_stored"), rss()
    peak = max(peak, now)
    ratio = now / (1.15 * stored + 40 * 2**20)
    if ratio > worst:
        worst, worst_at = ratio, (i + 1, stored, now)
n, stored, at = worst_at
print(f"fill-and-evict: {mib} × 1 MiB PUT, budget {metric('storage_max_bytes') / 2**20:.0f} MiB, "
      f"{metric('storage_evictions_total'):.0f} evictions, {refused} refused; "
      f"peak RSS {peak / 2**20:.1f} MiB, final stored {metric('storage_bytes_stored') / 2**20:.1f} MiB")
print(f"  worst RSS / (1.15 × stored + 40 MiB) = {worst:.2f} (after PUT {n}: stored "
      f"{stored / 2**20:.1f} MiB, RSS {at / 2**20:.1f} MiB)")
PY
