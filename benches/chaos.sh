#!/usr/bin/env bash
# The runbook's chaos drills at full length (RUNBOOK, "Chaos drills"), on
# release nodes on loopback; tests/chaos.rs and tests/multihost.rs are the
# CI-sized ones. Each figure is reported next to its own baseline from the
# same run:
#
#   1. hedge    — a remote storage with a slow tail (150 ms ± 20 ms on 4 %
#                 of its calls): GET p50/p95/p99 at 200 req/s with no
#                 fault, with the fault and hedged reads, and with the
#                 fault and hedging off (hot reload).
#   2. errors   — 1 % injected storage errors for the window at 200 req/s:
#                 the share of failed requests, and /readyz throughout.
#   3. overload — storage answering in 50 ms, inflight_max = 32: 16 clients
#                 (half the cap: the unloaded baseline) then 64 (twice it):
#                 admitted p95 against the baseline's, how fast the excess
#                 is shed, /readyz during the load and after it.
#   4. soak     — every role, 300 GET/s for SOAK_SECONDS (default 600)
#                 with a storage fault (20 ms on 10 % of calls) switched
#                 on and off every minute: open FDs and RSS each minute.
#
#   bash benches/chaos.sh            # all four
#   DRILLS="hedge overload" bash benches/chaos.sh
#   SOAK_SECONDS=120 DRILL_SECONDS=10 bash benches/chaos.sh
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=packaging/lib.sh
. packaging/lib.sh

DRILLS=${DRILLS:-"hedge errors overload soak"}
DRILL_SECONDS=${DRILL_SECONDS:-20}
SOAK_SECONDS=${SOAK_SECONDS:-600}
command -v curl >/dev/null && command -v python3 >/dev/null || {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq curl python3 >/dev/null
}
cargo build --release --quiet
bin=./target/release/macronode
WORK=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# node NAME ROLES [TOML…]: starts a node (every listener on an ephemeral
# loopback port, then the extra TOML) and waits for it; its log is
# $WORK/NAME.log.
node() {
  local name=$1 roles=$2
  shift 2
  {
    echo "data_dir = \"$WORK/$name-data\""
    echo '[log]'; echo 'filter = "warn,macronode::node=info"'
    for l in metrics admin omnigate overlay registry storage index mailbox; do
      echo "[$l]"; echo 'addr = "127.0.0.1:0"'
    done
    echo '[chaos]'; echo 'enabled = true'
    printf '%s\n' "$@"
  } | python3 -c '
import sys, re
# Later tables of the same name are merged into the first (TOML allows one).
text = sys.stdin.read()
tables, order = {}, []
cur = ""
for line in text.splitlines():
    m = re.fullmatch(r"\[([a-z_.]+)\]", line.strip())
    if m:
        cur = m.group(1)
        if cur not in tables:
            tables[cur] = []; order.append(cur)
        continue
    tables.setdefault(cur, [])
    if cur not in order: order.insert(0, cur)
    tables[cur].append(line)
out = []
for t in order:
    if t: out.append(f"[{t}]")
    out += tables[t]
print("\n".join(out))
' >"$WORK/$name.toml"
  RON_CONFIG="" "$bin" run --config "$WORK/$name.toml" --roles "$roles" >"$WORK/$name.log" 2>&1 &
  pids+=($!)
  eval "${name}_pid=$!"
  wait_ready "$WORK/$name.log" "$!" 600
}
addr() { ready_addr "$WORK/$1.log" "$2"; }
metric() { # HEALTH SERIES-PREFIX: the sum of the matching series
  curl -s "http://$1/metrics" | python3 -c '
import sys
p = sys.argv[1]
print(sum(float(l.rsplit(" ", 1)[1]) for l in sys.stdin if l.startswith(p)))' "$2"
}
inject() { # ADMIN JSON: the fault id
  curl -sf -X POST -d "$2" "http://$1/api/v1/chaos" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])'
}
clear_faults() { curl -sf -X DELETE "http://$1/api/v1/chaos" >/dev/null; }
rate() { # GATE PATH RATE SECONDS → "sent rate p50 p95 p99 ttfb95 errors"
  python3 benches/rate.py "$1" "$2" "$3" "$4"
}
put() { # GATE FILE → address
  curl -fsS -X PUT --data-binary "@$2" "http://$1/v1/o" | python3 -c 'import json,sys; print(json.load(sys.stdin)["address"])'
}
ratio() { python3 -c "import sys; a, b = float(sys.argv[1]), float(sys.argv[2]); print(f'{a / b:.2f}')" "$1" "$2"; }
head -c 4096 /dev/urandom >"$WORK/obj4k"
results=()

for drill in $DRILLS; do
case $drill in
hedge)
  node store storage
  node gate omnigate,index "[omnigate]" "hedge_read = true" \
    "[omnigate.downstream]" "storage = \"http://$(addr store storage)\""
  g=$(addr gate omnigate); ga=$(addr gate admin); gh=$(addr gate metrics)
  a=$(put "$g" "$WORK/obj4k")
  rate "$g" "/v1/o/$a" 200 5 >/dev/null # warm: connections, hedge delay samples
  base=$(rate "$g" "/v1/o/$a" 200 "$DRILL_SECONDS")
  inject "$ga" '{"target":"storage","fault":"latency","ms":150,"jitter_ms":20,"rate":0.04}' >/dev/null
  hedged=$(rate "$g" "/v1/o/$a" 200 "$DRILL_SECONDS")
  won=$(metric "$gh" 'omnigate_hedged_reads_total{outcome="hedge_won"}')
  sed -i 's/hedge_read = true/hedge_read = false/' "$WORK/gate.toml"
  kill -HUP "$gate_pid"
  for _ in $(seq 1 100); do # until the reload is in force
    [ "$(metric "$gh" config_version)" = "2.0" ] && break
    sleep 0.1
  done
  unhedged=$(rate "$g" "/v1/o/$a" 200 "$DRILL_SECONDS")
  clear_faults "$ga"
  read -r _ _ b50 b95 b99 _ _ <<<"$base"
  read -r _ _ h50 h95 h99 _ he <<<"$hedged"
  read -r _ _ u50 u95 u99 _ _ <<<"$unhedged"
  results+=("hedge: no fault p50/p95/p99 $b50/$b95/$b99 ms; 150±20 ms on 4 % of storage calls, hedged: $h50/$h95/$h99 ms (p95 $(ratio "$h95" "$b95")× baseline, $he errors, hedge_won $won); not hedged: $u50/$u95/$u99 ms (p99 $(ratio "$u99" "$h99")× hedged)")
  kill "$gate_pid" "$store_pid"; wait "$gate_pid" "$store_pid" 2>/dev/null || true
  ;;
errors)
  node err omnigate,storage,index
  g=$(addr err omnigate); ea=$(addr err admin); eh=$(addr err metrics)
  a=$(put "$g" "$WORK/obj4k")
  inject "$ea" '{"target":"storage","fault":"error","rate":0.01}' >/dev/null
  ( end=$((SECONDS + DRILL_SECONDS)); while [ $SECONDS -lt $end ]; do
      curl -s -o /dev/null -w '%{http_code}\n' "http://$eh/readyz"; sleep 0.5; done ) >"$WORK/readyz-errors" &
  out=$(rate "$g" "/v1/o/$a" 200 "$DRILL_SECONDS")
  wait $! || true
  read -r sent _ _ p95 _ _ errs <<<"$out"
  not_ready=$(grep -vc '^200$' "$WORK/readyz-errors" || true)
  polls=$(wc -l <"$WORK/readyz-errors")
  injected=$(metric "$eh" 'chaos_faults_injected_total{target="storage",fault="error"}')
  results+=("errors: 1 % injected on storage for ${DRILL_SECONDS}s at 200 req/s: $errs of $sent failed ($(python3 -c "print(f'{100*$errs/$sent:.2f}')") %; $injected injected), p95 $p95 ms; /readyz not 200 in $not_ready of $polls polls")
  clear_faults "$ea"
  kill "$err_pid"; wait "$err_pid" 2>/dev/null || true
  ;;
overload)
  node over omnigate,storage,index "[omnigate]" "inflight_max = 32"
  g=$(addr over omnigate); oa=$(addr over admin); oh=$(addr over metrics)
  a=$(put "$g" "$WORK/obj4k")
  inject "$oa" '{"target":"storage","fault":"latency","ms":50}' >/dev/null
  base=$(python3 benches/chaos_load.py "$g" "/v1/o/$a" 16 "$DRILL_SECONDS" "$oh")
  loaded=$(python3 benches/chaos_load.py "$g" "/v1/o/$a" 64 "$DRILL_SECONDS" "$oh")
  clear_faults "$oa"
  results+=("overload: $(python3 - "$base" "$loaded" <<'PY'
import json, sys
b, l = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(f"storage at 50 ms, inflight_max 32: 16 clients (unloaded baseline) admitted p95 {b['admitted_ms']['p95']} ms, "
      f"{b['by_status']}; 64 clients admitted p95 {l['admitted_ms']['p95']} ms "
      f"({l['admitted_ms']['p95'] / b['admitted_ms']['p95']:.2f}× baseline), shed {l['by_status'].get('503', 0)} "
      f"at p95 {l['shed_ms']['p95']} ms, {l['by_status']}; /readyz 503 in {100 * l['readyz_503_share']:.0f} % of polls "
      f"during the load (baseline {100 * b['readyz_503_share']:.0f} %), 200 again {l['readyz_recovered_after_s']} s after it")
PY
)")
  kill "$over_pid"; wait "$over_pid" 2>/dev/null || true
  ;;
soak)
  node soak omnigate,storage,index,mailbox,registry,overlay
  g=$(addr soak omnigate); sa=$(addr soak admin); sh=$(addr soak metrics)
  a=$(put "$g" "$WORK/obj4k")
  rss() { metric "$sh" 'process_resident_memory_bytes'; }
  fds() { metric "$sh" 'process_open_fds'; }
  samples=()
  minutes=$(( (SOAK_SECONDS + 59) / 60 ))
  for m in $(seq 1 "$minutes"); do
    if [ $((m % 2)) -eq 0 ]; then
      inject "$sa" '{"target":"storage","fault":"latency","ms":20,"rate":0.1}' >/dev/null
    else
      clear_faults "$sa"
    fi
    out=$(rate "$g" "/v1/o/$a" 300 60)
    read -r sent _ _ p95 _ _ errs <<<"$out"
    samples+=("$m $(fds) $(rss) $sent $errs $p95")
  done
  clear_faults "$sa"
  results+=("soak: $(printf '%s\n' "${samples[@]}" | python3 -c '
import sys
rows = [l.split() for l in sys.stdin if l.strip()]
fds = [float(r[1]) for r in rows]; rss = [float(r[2]) / 2**20 for r in rows]
sent = sum(int(r[3]) for r in rows); errs = sum(int(r[4]) for r in rows)
print(f"{len(rows)} min at 300 GET/s (fault on every other minute): {sent} requests, {errs} failed; "
      f"open FDs per minute {[int(f) for f in fds]}; RSS MiB {[round(r, 1) for r in rss]}; "
      f"after the first minute FDs {fds[-1] - fds[1 if len(fds) > 1 else 0]:+.0f}, "
      f"RSS {rss[-1] / rss[1 if len(rss) > 1 else 0]:.2f}×")')")
  kill "$soak_pid"; wait "$soak_pid" 2>/dev/null || true
  ;;
*) echo "unknown drill $drill" >&2; exit 2 ;;
esac
done

echo
echo "== chaos drills ($(git rev-parse --short HEAD 2>/dev/null || echo '?'))"
printf '%s\n' "${results[@]}"
