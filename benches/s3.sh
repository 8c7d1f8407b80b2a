#!/usr/bin/env bash
# Side-by-side, on loopback, the storage role on an S3 bucket
# (storage.backend = "s3", s3s-fs as the server) against a plain client of
# the same server:
#  - GETs of 4 KiB and 1 MiB objects through omnigate (fetched from the
#    bucket and verified every time: read cache off, "cold"; and with
#    the read cache on and warm) next to wrk GETting the same bytes stored
#    as one S3 object straight from s3s-fs (a second s3s-fs on the same
#    root that takes unsigned requests, since wrk cannot sign). Same tool,
#    64 connections, DURATION seconds each (default 10).
#  - 64 MiB PUT through a resumable upload (1 MiB parts, the body cap)
#    next to an S3 multipart upload of the same bytes in 8 MiB parts (S3's
#    minimum is 5 MiB) straight to s3s-fs, both from one Python client on
#    one keep-alive connection (benches/s3_put.py).
# The PUT runs twice: with the node signing its request payloads (the
# default, storage.s3.sign_payload = "auto", over http://: a SHA-256 pass
# per byte sent, on both ends, that the unsigned direct client does not
# pay) and without (sign_payload = "never", the default over https://).
# Prints each figure and its ratio against its peer from the same run.
# Installs wrk (Debian) and s3s-fs (packaging/tools.sh) when missing.
# Every process listens on 127.0.0.1 only and is stopped on exit.
#
#   benches/s3.sh [DURATION]
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${1:-10}"
CONNS=64
THREADS=2

. benches/lib.sh
need wrk || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk curl >/dev/null; }
need s3s-fs || bash packaging/tools.sh
cargo build --release --quiet

WORK="$(mktemp -d)"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

ROOT="$WORK/s3"
mkdir -p "$ROOT/bench"
SIGNED=$(free_port); ANON=$(free_port)
s3s-fs --host 127.0.0.1 --port "$SIGNED" --access-key bench --secret-key bench-secret "$ROOT" >"$WORK/s3-signed.log" 2>&1 &
PIDS+=($!)
s3s-fs --host 127.0.0.1 --port "$ANON" "$ROOT" >"$WORK/s3-anon.log" 2>&1 &
PIDS+=($!)
for port in "$SIGNED" "$ANON"; do
  for _ in $(seq 1 200); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.05; done
done

# Starts a node (omnigate, storage, index in RAM; objects in the bucket)
# with read cache $1 bytes and storage.s3.sign_payload $2 (default
# "auto"); sets SPORT, HEALTH and NODE_PID.
start_node() {
  SPORT=$(free_port); HEALTH="127.0.0.1:$(free_port)"
  cat > "$WORK/node.toml" <<TOML
amnesia = true
[log]
filter = "warn"
[metrics]
addr = "$HEALTH"
[admin]
addr = "127.0.0.1:0"
[omnigate]
addr = "127.0.0.1:$SPORT"
[storage]
backend = "s3"
read_cache_bytes = $1
[storage.s3]
endpoint = "http://127.0.0.1:$SIGNED"
bucket = "bench"
allow_http = true
prefix = "node"
sign_payload = "${2:-auto}"
TOML
  AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench-secret \
    ./target/release/macronode run --config "$WORK/node.toml" --roles omnigate,storage,index >"$WORK/node.log" 2>&1 &
  NODE_PID=$!
  PIDS+=("$NODE_PID")
  wait_ready
}

stop_node() { kill "$NODE_PID"; wait "$NODE_PID" 2>/dev/null || true; }

run_wrk() { # url -> "req/s MB/s p50ms p99ms", after a 2 s warm-up (connections, pools)
  wrk -t"$THREADS" -c"$CONNS" -d2s "$1" > /dev/null
  wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" --latency "$1" > "$WORK/wrk.out"
  wrk_summary "$WORK/wrk.out"
}

for size in 4096 1048576; do
  head -c "$size" /dev/urandom > "$WORK/obj-$size"
  curl -fsS -o /dev/null -X PUT --data-binary "@$WORK/obj-$size" "http://127.0.0.1:$ANON/bench/direct/obj-$size"
done

printf '%-8s %-6s %-12s %10s %9s %8s %8s\n' cache size server req/s MB/s p50_ms p99_ms
for cache in 0 67108864; do
  label=$([ "$cache" = 0 ] && echo cold || echo warm)
  start_node "$cache"
  for size in 4096 1048576; do
    addr=$(curl -fsS -X PUT --data-binary "@$WORK/obj-$size" "http://127.0.0.1:$SPORT/v1/o" |
      python3 -c 'import json,sys; print(json.load(sys.stdin)["address"])')
    node_url="http://127.0.0.1:$SPORT/v1/o/$addr"
    direct_url="http://127.0.0.1:$ANON/bench/direct/obj-$size"
    for url in "$node_url" "$direct_url"; do
      got=$(curl -s -o /dev/null -w '%{http_code} %{size_download}' "$url")
      [ "$got" = "200 $size" ] || { echo "$url answered '$got'" >&2; exit 1; }
    done
    read -r m_rps m_mbs m_p50 m_p99 _ <<<"$(run_wrk "$node_url")"
    read -r d_rps d_mbs d_p50 d_p99 _ <<<"$(run_wrk "$direct_url")"
    printf '%-8s %-6s %-12s %10s %9s %8s %8s\n' "$label" "$size" macronode "$m_rps" "$m_mbs" "$m_p50" "$m_p99"
    printf '%-8s %-6s %-12s %10s %9s %8s %8s\n' "$label" "$size" s3s-fs "$d_rps" "$d_mbs" "$d_p50" "$d_p99"
    python3 -c "print(f'{\"$label\":<8} {$size:<6} ratio        req/s {$m_rps/$d_rps:.2f}x  p99 {$m_p99/$d_p99:.2f}x  (macronode/s3s-fs)')"
  done
  if [ "$cache" != 0 ]; then
    echo "# PUT, the node signing its payloads (the default over http://)"
    python3 benches/s3_put.py "127.0.0.1:$SPORT" "127.0.0.1:$ANON" bench
  fi
  stop_node
done
echo '# PUT, the node not signing payloads, as the direct client (sign_payload = "never"; the default over https://)'
start_node 67108864 never
python3 benches/s3_put.py "127.0.0.1:$SPORT" "127.0.0.1:$ANON" bench
stop_node
