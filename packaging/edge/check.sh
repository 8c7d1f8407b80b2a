#!/usr/bin/env bash
# The ARM edge build: cross-builds macronode and micronode for
# aarch64-unknown-linux-gnu (Debian's cross gcc links, .cargo/config.toml),
# then, under qemu user-mode emulation:
#   - a smoke test of micronode --amnesia: /readyz 200, a PUT and a verified
#     GET (the aarch64 binary's own `ctl`, so the client's BLAKE3 runs on
#     aarch64 too), a name, a feed message, SIGTERM exit 0;
#   - the unit tests of crates/oap and roles/storage (byte order,
#     alignment, BLAKE3's SIMD paths), through cargo's qemu runner.
# PROFILE=release (what `make aarch64` builds) or dev (CI: the smoke and
# the tests need no optimiser). Tools: packaging/tools.sh.
# Usage: packaging/edge/check.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
# shellcheck source=packaging/lib.sh
. "$here/../lib.sh"
target=aarch64-unknown-linux-gnu
profile=${PROFILE:-dev}
dir=$([ "$profile" = dev ] && echo debug || echo "$profile")
qemu=(qemu-aarch64-static -L /usr/aarch64-linux-gnu)

cd "$root"
echo "== cross-build ($target, $profile)"
cargo build --locked --profile "$profile" --target "$target" --bin macronode --bin micronode
bin="${CARGO_TARGET_DIR:-$root/target}/$target/$dir"
file "$bin/micronode" | grep -q "ARM aarch64"

echo "== micronode --amnesia under qemu-aarch64"
work=$(mktemp -d)
pid=""
trap '[ -n "$pid" ] && kill -9 "$pid" 2>/dev/null; rm -rf "$work"' EXIT
mapfile -t ports < <(ephemeral_env)
started=$(date +%s.%N)
(cd "$work" && exec env "${ports[@]}" "${qemu[@]}" "$bin/micronode" run --amnesia) >"$work/log" 2>&1 &
pid=$!
# Emulated start-up is slow: up to two minutes.
wait_ready "$work/log" "$pid" 1200
metrics=$(ready_addr "$work/log" metrics)
gw=$(ready_addr "$work/log" omnigate)
curl -fsS "http://$metrics/readyz" >/dev/null
head -c 1500000 /dev/urandom >"$work/obj"
ctl=("${qemu[@]}" "$bin/micronode" ctl --url "http://$gw")
addr=$("${ctl[@]}" put "$work/obj" --quiet)
"${ctl[@]}" get "$addr" -o "$work/back" >/dev/null
cmp "$work/obj" "$work/back"
curl -fsS -o /dev/null -X PUT -d "{\"address\":\"$addr\",\"feed\":\"news\"}" "http://$gw/v1/names/edge/blob"
curl -fsS "http://$gw/v1/names/edge/blob" | grep -q "$addr"
curl -fsS -o /dev/null -X POST -d "hello from aarch64" "http://$gw/v1/topics/news/messages"
curl -fsS "http://$gw/v1/topics/news/messages" | grep -q "hello from aarch64"
kill -TERM "$pid"
code=0
wait "$pid" || code=$?
pid=""
[ "$code" -eq 0 ] || { cat "$work/log"; echo "edge: micronode exited $code after SIGTERM" >&2; exit 1; }
grep -q 'shutdown_complete=1' "$work/log"
[ -z "$(ls -A "$work" | grep -v -e '^log$' -e '^obj$' -e '^back$')" ] || { ls -la "$work"; echo "edge: amnesia wrote files" >&2; exit 1; }
python3 -c 'import sys; print(f"micronode (aarch64, qemu): ready, PUT+GET {sys.argv[1]} verified, name, feed message, SIGTERM exit 0 in {float(sys.argv[3]) - float(sys.argv[2]):.1f}s")' \
  "$addr" "$started" "$(date +%s.%N)"

echo "== crates/oap and roles/storage unit tests under qemu-aarch64"
cargo test --locked --target "$target" -p ron-oap -p ron-storage
