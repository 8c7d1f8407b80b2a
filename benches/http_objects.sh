#!/usr/bin/env bash
# Side-by-side HTTP object GETs on loopback: macronode's public gateway
# (omnigate, GET /v1/o/{address} served from the in-process storage handle,
# full admission stack on) against nginx serving the same bytes from disk, for
# 4 KiB and 1 MiB objects, with the same load tool (wrk), 64 connections,
# DURATION seconds each (default 20), ROUNDS rounds (default 3) alternating
# the two servers so drift on a noisy machine hits both alike. Prints each
# round, then the medians (req/s, MB/s, latency percentiles) for both and
# the ratios macronode/nginx.
#
# Installs wrk and nginx from Debian's packages when missing (needs root;
# see benches/lib.sh).
# Every process it starts listens on 127.0.0.1 only and is stopped on exit.
#
#   benches/http_objects.sh [DURATION] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${1:-20}"
ROUNDS="${2:-3}"
CONNS=64
THREADS=2

. benches/lib.sh
bench_setup

run_wrk() { # url -> "req/s MB/s p50ms p99ms"
  wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" --latency "$1" > "$WORK/wrk.out"
  wrk_summary "$WORK/wrk.out"
}

printf '%-6s %-10s %12s %10s %10s %10s\n' size server req/s MB/s p50_ms p99_ms
for size in 4096 1048576; do
  head -c "$size" /dev/urandom > "$WORK/www/obj-$size"
  chmod 644 "$WORK/www/obj-$size"
  addr=$(put_object "$WORK/www/obj-$size")
  # Both servers must answer 200 with the whole object before load starts.
  for url in "http://127.0.0.1:$SPORT/v1/o/$addr" "http://127.0.0.1:$NPORT/obj-$size"; do
    got=$(curl -s -o /dev/null -w '%{http_code} %{size_download}' "$url")
    [ "$got" = "200 $size" ] || { echo "$url answered '$got', expected '200 $size'" >&2; exit 1; }
  done
  : > "$WORK/rounds"
  for round in $(seq 1 "$ROUNDS"); do
    read -r m_rps m_mbs m_p50 m_p99 _ <<<"$(run_wrk "http://127.0.0.1:$SPORT/v1/o/$addr")"
    read -r n_rps n_mbs n_p50 n_p99 _ <<<"$(run_wrk "http://127.0.0.1:$NPORT/obj-$size")"
    echo "$m_rps $m_mbs $m_p50 $m_p99 $n_rps $n_mbs $n_p50 $n_p99" >> "$WORK/rounds"
    printf '%-6s %-10s %12s %10s %10s %10s  (round %s)\n' "$size" macronode "$m_rps" "$m_mbs" "$m_p50" "$m_p99" "$round"
    printf '%-6s %-10s %12s %10s %10s %10s  (round %s)\n' "$size" nginx "$n_rps" "$n_mbs" "$n_p50" "$n_p99" "$round"
  done
  python3 - "$size" "$WORK/rounds" <<'PY'
import statistics, sys
size = sys.argv[1]
rows = [list(map(float, l.split())) for l in open(sys.argv[2]) if l.strip()]
med = [statistics.median(c) for c in zip(*rows)]
m, n = med[:4], med[4:]
for name, v in (("macronode", m), ("nginx", n)):
    print(f"{size:<6} {name:<10} {v[0]:12.0f} {v[1]:10.1f} {v[2]:10.3f} {v[3]:10.3f}  (median of {len(rows)})")
print(f"{size:<6} ratio      req/s {m[0]/n[0]:.2f}x  MB/s {m[1]/max(n[1],1e-9):.2f}x  "
      f"p50 {m[2]/n[2]:.2f}x  p99 {m[3]/n[3]:.2f}x  (macronode/nginx, medians)")
PY
done
