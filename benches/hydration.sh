#!/usr/bin/env bash
# Hydration and range-start latency at a fixed request rate, on loopback.
#
# - GET /v1/view/{name} (index record, then storage size and the mailbox
#   feed in parallel) at RATE req/s, next to nginx serving a 4 KiB file at
#   the same rate from the same client: p50/p95/p99 and the ratio.
# - Ranged GET of 64 KiB from the middle of a 1 MiB object
#   (omnigate_range_start_latency_seconds is the server-side view of the
#   same thing), next to nginx answering the same range: p95 time to the
#   first body byte and the ratio.
#
# The client (benches/rate.py) is open-loop: latency counts from each
# request's scheduled time. Goal for hydration p95: < 5 ms.
#
#   benches/hydration.sh [RATE] [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
RATE="${1:-500}"
SECS="${2:-20}"

. benches/lib.sh
bench_setup

G="127.0.0.1:$SPORT"
head -c 4096 /dev/urandom > "$WORK/www/small"
head -c 1048576 /dev/urandom > "$WORK/www/big"
chmod 644 "$WORK/www/small" "$WORK/www/big"
small=$(put_object "$WORK/www/small")
big=$(put_object "$WORK/www/big")
curl -fsS -o /dev/null -X PUT -H 'content-type: application/json' \
  --data "{\"address\":\"$small\",\"content_type\":\"text/plain\",\"feed\":\"news\"}" \
  "http://$G/v1/names/site/home"
for i in $(seq 1 20); do
  curl -fsS -o /dev/null -X POST --data "message $i" "http://$G/v1/topics/news/messages"
done
# The view must be whole (no warnings) before load starts.
curl -fsS "http://$G/v1/view/site/home" | python3 -c '
import json, sys
v = json.load(sys.stdin)
assert not v["warnings"] and len(v["feed"]) == 10 and v["size"] == 4096, v'

RANGE="Range: bytes=524288-589823"
printf '%-22s %7s %9s %8s %8s %8s %9s %6s\n' case sent rate p50_ms p95_ms p99_ms ttfb95_ms errors
row() { printf '%-22s %7s %9s %8s %8s %8s %9s %6s\n' "$1" $2; }
v=$(python3 benches/rate.py "$G" /v1/view/site/home "$RATE" "$SECS")
row "view (macronode)" "$v"
n=$(python3 benches/rate.py "127.0.0.1:$NPORT" /small "$RATE" "$SECS")
row "4 KiB file (nginx)" "$n"
r=$(python3 benches/rate.py "$G" "/v1/o/$big" "$RATE" "$SECS" "$RANGE")
row "range (macronode)" "$r"
rn=$(python3 benches/rate.py "127.0.0.1:$NPORT" /big "$RATE" "$SECS" "$RANGE")
row "range (nginx)" "$rn"

python3 - "$v" "$n" "$r" "$rn" <<'PY'
import sys
v, n, r, rn = (list(map(float, a.split())) for a in sys.argv[1:])
print(f"view p95 {v[3]:.3f} ms ({v[3] / n[3]:.2f}x nginx 4 KiB file); goal < 5 ms: {'met' if v[3] < 5 else 'NOT met'}")
print(f"range start p95 {r[5]:.3f} ms ({r[5] / rn[5]:.2f}x nginx)")
PY
curl -fsS "http://$HEALTH/metrics" | grep -E '^omnigate_(hydration|range_start)_latency_seconds(_sum|_count)? ' || true
