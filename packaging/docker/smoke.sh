#!/usr/bin/env bash
# Smoke test of the images build.sh made, with no container daemon: each
# image is unpacked (umoci) and its entrypoint started from the rootfs as
# the image's user, with the image's environment, in a mount namespace
# where the rootfs is read-only (/proc and /dev mounted as a runtime
# would, and for macronode a volume at /data). Then: /readyz 200, the
# healthcheck command, a PUT and a verified GET, SIGTERM → exit 0, and the
# rootfs unchanged (macronode's state only in its volume). The
# docker-archive tarballs are checked to hold what `docker load` reads.
# Usage: packaging/docker/smoke.sh OUT_DIR
set -euo pipefail
# Mount namespaces, bind mounts and chroot need root.
[ "$(id -u)" -eq 0 ] || exec sudo -E bash "$0" "$@"
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=packaging/lib.sh
. "$here/../lib.sh"
out=$(cd "${1:?usage: smoke.sh OUT_DIR}" && pwd)
work=$(mktemp -d)
pid=""
cleanup() {
  [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# Listing of a tree: path, type, mode, owner, size, mtime (what a write changes).
snapshot() { (cd "$1" && find . -xdev \( -path ./proc -o -path ./dev -o -path ./data \) -prune -o -printf '%p %y %m %U:%G %s %T@\n' | sort); }

for name in macronode micronode; do
  echo "== smoke $name"
  tar="$out/$name.tar"
  python3 - "$tar" "$name" <<'PY'
import json, sys, tarfile
path, name = sys.argv[1], sys.argv[2]
with tarfile.open(path) as t:
    manifest = json.load(t.extractfile("manifest.json"))
    assert len(manifest) == 1, manifest
    m = manifest[0]
    assert any(tag.rsplit("/", 1)[-1].startswith(f"{name}:") for tag in m["RepoTags"]), m["RepoTags"]
    names = set(t.getnames())
    for layer in m["Layers"]:
        assert layer in names, f"layer {layer} missing"
    cfg = json.load(t.extractfile(m["Config"]))["config"]
assert cfg["Entrypoint"] == [f"/{name}"], cfg["Entrypoint"]
assert cfg["User"] == "65532:65532", cfg["User"]
assert cfg["StopSignal"] == "SIGTERM", cfg
assert cfg["Healthcheck"]["Test"] == ["CMD", f"/{name}", "probe"], cfg["Healthcheck"]
for p in ["9909/tcp", "9444/tcp", "9445/tcp", "9445/udp", "9446/tcp"]:
    assert p in cfg["ExposedPorts"], (p, cfg["ExposedPorts"])
if name == "macronode":
    assert cfg["Cmd"] == ["run"] and "/data" in cfg["Volumes"], cfg
else:
    assert cfg["Cmd"] == ["run", "--amnesia"] and not cfg.get("Volumes"), cfg
print(f"{path}: docker-archive with {m['RepoTags']}, entrypoint {cfg['Entrypoint']} {cfg['Cmd']}")
PY
  skopeo inspect "docker-archive:$tar" >/dev/null

  bundle="$work/$name"
  umoci unpack --image "$out/oci:$name" "$bundle" >/dev/null
  rootfs="$bundle/rootfs"
  # Mount points a runtime creates, then the state to compare against.
  mkdir -p "$rootfs/proc" "$rootfs/dev"
  before=$(snapshot "$rootfs")
  # The process the image describes: args, env, user, cwd.
  eval "$(python3 - "$bundle/config.json" <<'PY'
import json, shlex, sys
p = json.load(open(sys.argv[1]))["process"]
print("args=(" + " ".join(shlex.quote(a) for a in p["args"]) + ")")
print("envs=(" + " ".join(shlex.quote(e) for e in p["env"]) + ")")
print(f"uid={p['user']['uid']} gid={p['user']['gid']} cwd={shlex.quote(p['cwd'])}")
PY
)"
  [ "$uid" = 65532 ] && [ "$gid" = 65532 ] || { echo "smoke: $name runs as $uid:$gid" >&2; exit 1; }
  volume=""
  if [ "$name" = macronode ]; then
    volume="$work/$name-volume"
    mkdir -p "$volume"
    chown 65532:65532 "$volume"
  fi
  # Every listener on an ephemeral loopback port; the addresses come from
  # the ready=1 log line.
  mapfile -t ports < <(ephemeral_env)
  log="$work/$name.log"
  unshare -m sh -c '
    set -e
    rootfs=$1 volume=$2; shift 2
    mount --bind "$rootfs" "$rootfs"
    mount -t proc proc "$rootfs/proc"
    mount --rbind /dev "$rootfs/dev"
    [ -n "$volume" ] && mount --bind "$volume" "$rootfs/data"
    mount -o remount,bind,ro "$rootfs"
    exec "$@"
  ' sh "$rootfs" "$volume" env -i "${envs[@]}" "${ports[@]}" \
    chroot --userspec="$uid:$gid" "$rootfs" "${args[@]}" >"$log" 2>&1 &
  pid=$!
  wait_ready "$log" "$pid"
  addr() { ready_addr "$log" "$1"; }
  metrics=$(addr metrics)
  gateway=$(addr omnigate)
  curl -fsS "http://$metrics/readyz" >/dev/null
  # The image's HEALTHCHECK command, run as it would be (no shell in the image).
  env -i "${envs[@]}" chroot --userspec="$uid:$gid" "$rootfs" "/$name" probe --addr "$metrics" >/dev/null
  body="$work/body"
  head -c 300000 /dev/urandom >"$body"
  # The image's own binary as the client: put checks the address the
  # node answers against the file's BLAKE3, get verifies what it receives.
  ctl=("$rootfs/$name" ctl --url "http://$gateway")
  got=$("${ctl[@]}" put "$body" --quiet)
  "${ctl[@]}" get "$got" -o "$work/back" >/dev/null
  cmp "$body" "$work/back"
  # SIGTERM: drain and exit 0.
  kill -TERM "$pid"
  code=0
  wait "$pid" || code=$?
  pid=""
  [ "$code" -eq 0 ] || { cat "$log"; echo "smoke: $name exited $code after SIGTERM" >&2; exit 1; }
  grep -q 'shutdown_complete=1' "$log"
  after=$(snapshot "$rootfs")
  if [ "$before" != "$after" ]; then
    diff <(echo "$before") <(echo "$after") || true
    echo "smoke: $name changed its root file system" >&2
    exit 1
  fi
  if [ -n "$volume" ]; then
    [ -f "$volume/storage.redb" ] || { ls -la "$volume"; echo "smoke: no state in the volume" >&2; exit 1; }
  fi
  echo "$name: ready, probe ok, PUT+GET $got verified, SIGTERM exit 0, rootfs unchanged${volume:+, state in the /data volume}"
done
