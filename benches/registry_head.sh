#!/usr/bin/env bash
# GET /registry/head on loopback next to etcd 3.4 answering a single-key
# read through its v3 JSON gateway (POST /v3/kv/range), with the same load
# tool (wrk), threads, connections and duration, in one run. Prints req/s
# and p50/p99 for both and the ratios registry/etcd.
#
# Installs wrk and etcd-server from Debian's packages when missing (needs
# root). Both servers listen on 127.0.0.1 only and are stopped on exit.
#
#   benches/registry_head.sh [DURATION]
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${1:-20}"
CONNS=64
THREADS=2

need() { command -v "$1" >/dev/null 2>&1; }
if ! need wrk || ! need etcd || ! need curl || ! need python3; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk etcd-server curl python3 >/dev/null
fi
cargo build --release --quiet

WORK="$(mktemp -d)"
cleanup() {
  [ -n "${NODE_PID:-}" ] && kill "$NODE_PID" 2>/dev/null || true
  [ -n "${ETCD_PID:-}" ] && kill "$ETCD_PID" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
RPORT=$(free_port); MPORT=$(free_port); EPORT=$(free_port); PPORT=$(free_port)

cat > "$WORK/node.toml" <<TOML
data_dir = "$WORK/data"
[log]
filter = "warn"
[metrics]
addr = "127.0.0.1:$MPORT"
[admin]
addr = "127.0.0.1:0"
[registry]
addr = "127.0.0.1:$RPORT"
TOML
./target/release/macronode run --config "$WORK/node.toml" --roles registry >"$WORK/node.log" 2>&1 &
NODE_PID=$!
etcd --data-dir "$WORK/etcd" --listen-client-urls "http://127.0.0.1:$EPORT" \
  --advertise-client-urls "http://127.0.0.1:$EPORT" \
  --listen-peer-urls "http://127.0.0.1:$PPORT" \
  --initial-advertise-peer-urls "http://127.0.0.1:$PPORT" \
  --initial-cluster "default=http://127.0.0.1:$PPORT" \
  --log-level error >"$WORK/etcd.log" 2>&1 &
ETCD_PID=$!
for _ in $(seq 1 400); do
  r=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$MPORT/readyz" || true)
  e=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$EPORT/health" || true)
  [ "$r" = "200" ] && [ "$e" = "200" ] && break
  sleep 0.05
done
# One key in etcd holding a head-sized value; both must answer before load.
VALUE=$(curl -fsS "http://127.0.0.1:$RPORT/registry/head" | base64 -w0)
curl -fsS -X POST "http://127.0.0.1:$EPORT/v3/kv/put" \
  -d "{\"key\":\"aGVhZA==\",\"value\":\"$VALUE\"}" >/dev/null
curl -fsS -X POST "http://127.0.0.1:$EPORT/v3/kv/range" -d '{"key":"aGVhZA=="}' | grep -q '"kvs"'

cat > "$WORK/range.lua" <<'LUA'
wrk.method = "POST"
wrk.body = '{"key":"aGVhZA=="}'
wrk.headers["Content-Type"] = "application/json"
LUA

run_wrk() { # url [script] -> "req/s p50ms p99ms"
  wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" --latency ${2:+-s "$2"} "$1" > "$WORK/wrk.out"
  read -r rps _ p50 p99 bad <<<"$(python3 benches/wrk_summary.py "$WORK/wrk.out")"
  [ "$bad" = 0 ] || { echo "non-2xx answers during the run:" >&2; cat "$WORK/wrk.out" >&2; exit 1; }
  echo "$rps $p50 $p99"
}

read -r r_rps r_p50 r_p99 <<<"$(run_wrk "http://127.0.0.1:$RPORT/registry/head")"
read -r e_rps e_p50 e_p99 <<<"$(run_wrk "http://127.0.0.1:$EPORT/v3/kv/range" "$WORK/range.lua")"
printf '%-10s %10s %8s %8s\n' server req/s p50_ms p99_ms
printf '%-10s %10s %8s %8s\n' registry "$r_rps" "$r_p50" "$r_p99"
printf '%-10s %10s %8s %8s\n' etcd "$e_rps" "$e_p50" "$e_p99"
python3 -c "print(f'ratio registry/etcd: req/s {$r_rps/$e_rps:.2f}x  p50 {$r_p50/$e_p50:.2f}x  p99 {$r_p99/$e_p99:.2f}x  (goal req/s >= 2x)')"
