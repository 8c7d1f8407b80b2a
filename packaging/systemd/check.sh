#!/usr/bin/env bash
# Verifies the units: `systemd-analyze verify` must print nothing at all
# (an unknown key is only a warning there, so any output fails), and
# `systemd-analyze security --offline=true` must score each at most 2.0.
# verify runs against a root with the unit, the binary it starts and the
# host's own unit files, so nothing is installed on this machine.
# Usage: packaging/systemd/check.sh BIN_DIR
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin_dir=${1:?usage: check.sh BIN_DIR}
max_exposure=2.0
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/usr/bin" "$root/bin" "$root/usr/lib/systemd" "$root/etc/systemd/system"
cp -a /usr/lib/systemd/system "$root/usr/lib/systemd/"
cp "$(type -P kill)" "$root/bin/kill"
for unit in macronode micronode; do
  cp "$bin_dir/$unit" "$root/usr/bin/$unit"
  cp "$here/$unit.service" "$root/etc/systemd/system/"
  out=$(systemd-analyze verify --root="$root" "$unit.service" 2>&1) || {
    echo "$out" >&2
    echo "systemd: verify failed for $unit.service" >&2
    exit 1
  }
  if [ -n "$out" ]; then
    echo "$out" >&2
    echo "systemd: verify printed warnings for $unit.service" >&2
    exit 1
  fi
  score=$(systemd-analyze security --offline=true --no-pager "$here/$unit.service" 2>&1 |
    sed -n 's/.*Overall exposure level for .*: \([0-9.]*\).*/\1/p')
  [ -n "$score" ] || { echo "systemd: no exposure score for $unit.service" >&2; exit 1; }
  if ! python3 -c "import sys; sys.exit(0 if float('$score') <= $max_exposure else 1)"; then
    systemd-analyze security --offline=true --no-pager "$here/$unit.service" | grep '✗' >&2 || true
    echo "systemd: $unit.service exposure $score > $max_exposure" >&2
    exit 1
  fi
  echo "$unit.service: verify clean, exposure $score"
done
