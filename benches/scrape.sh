#!/usr/bin/env bash
# What a Prometheus scrape costs on a busy node: a release macronode with
# every role (so every documented series is present) serves 4 KiB object
# GETs through the gateway at about 20k req/s (wrk, CONNS connections that
# each wait 1 ms after every response; the achieved rate is printed), while
# benches/scrape_probe.py times GET /metrics next to GET /healthz on the
# same health-plane listener (the peer: same connection handling, trivial
# body), one pair every 20 ms. The same probe runs first on the idle node.
# Prints p50/p99 of both, idle and loaded, the ratios, and the share of
# those scrapes the node itself timed within 1 ms and 2.5 ms.
#
# Installs wrk and nginx from Debian's packages when missing (see
# benches/lib.sh). Every process listens on 127.0.0.1 and stops on exit.
#
#   benches/scrape.sh [DURATION]      # 40 s, CONNS=40 COUNT=1000 by default
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${1:-40}"
CONNS="${CONNS:-40}"
COUNT="${COUNT:-1000}"
BENCH_ROLES=all

. benches/lib.sh
bench_setup

head -c 4096 /dev/urandom > "$WORK/obj"
addr=$(put_object "$WORK/obj")
url="http://127.0.0.1:$SPORT/v1/o/$addr"
got=$(curl -s -o /dev/null -w '%{http_code} %{size_download}' "$url")
[ "$got" = "200 4096" ] || { echo "$url answered '$got'" >&2; exit 1; }
echo 'function delay() return 1 end' > "$WORK/pace.lua"

read -r i_m50 i_m99 i_h50 i_h99 size i_err i_s1 i_s25 <<<"$(python3 benches/scrape_probe.py "$HEALTH" "$COUNT")"

wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency -s "$WORK/pace.lua" "$url" > "$WORK/wrk.out" &
WRK=$!
# Let the load reach its rate before timing (a script, not a test).
sleep 2
read -r l_m50 l_m99 l_h50 l_h99 _ l_err l_s1 l_s25 <<<"$(python3 benches/scrape_probe.py "$HEALTH" "$COUNT")"
if kill -0 "$WRK" 2>/dev/null; then wait "$WRK"; else
  echo "wrk ended before the probe did: raise DURATION" >&2; exit 1; fi
read -r rps _ g50 g99 non2xx <<<"$(wrk_summary "$WORK/wrk.out")"

echo "load: $rps req/s of GET /v1/o (4 KiB), gateway p50 ${g50} ms p99 ${g99} ms, non-2xx $non2xx"
echo "scrape body: $size bytes; probe errors idle $i_err loaded $l_err"
printf '%-8s %-9s %10s %10s\n' state path p50_ms p99_ms
printf '%-8s %-9s %10s %10s\n' idle /metrics "$i_m50" "$i_m99" idle /healthz "$i_h50" "$i_h99" \
  loaded /metrics "$l_m50" "$l_m99" loaded /healthz "$l_h50" "$l_h99"
echo "server-side /metrics (the node's own histogram): idle ${i_s1}% <= 1 ms, ${i_s25}% <= 2.5 ms; loaded ${l_s1}% <= 1 ms, ${l_s25}% <= 2.5 ms"
python3 -c "print(f'ratios: loaded /metrics p99 / loaded /healthz p99 = {$l_m99/$l_h99:.2f}x; loaded / idle /metrics p99 = {$l_m99/$i_m99:.2f}x; /metrics p99 over /healthz p99 under load = {$l_m99-$l_h99:.3f} ms')"
