#!/usr/bin/env bash
# Builds the macronode and micronode images without a container daemon:
#   1. static binaries (x86_64-unknown-linux-musl, release) unless BIN_DIR
#      already holds them;
#   2. a build context with them, the CA bundle, /etc/passwd and /etc/group;
#   3. hadolint on the Dockerfile;
#   4. `buildah bud --isolation chroot` for each target;
#   5. OUT/oci (an OCI layout holding both) and OUT/<name>.tar, a
#      docker-archive that `docker load -i` accepts.
# Prints each image's uncompressed size. Tools: packaging/tools.sh.
# Usage: packaging/docker/build.sh OUT_DIR
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${1:?usage: build.sh OUT_DIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)
target=x86_64-unknown-linux-musl
# Uncompressed size budget of each image (30 MB).
budget=30000000
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -n1)

if [ -z "${BIN_DIR:-}" ]; then
  echo "== static binaries ($target, release)"
  (cd "$root" && cargo build --release --locked --target "$target" --bin macronode --bin micronode)
  BIN_DIR="${CARGO_TARGET_DIR:-$root/target}/$target/release"
fi
for b in macronode micronode; do
  file "$BIN_DIR/$b" | grep -Eq "static(ally|-pie) linked" || {
    echo "build.sh: $BIN_DIR/$b is not a static binary" >&2
    exit 1
  }
done

echo "== hadolint"
hadolint "$here/Dockerfile"

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
cp -r "$here/rootfs" "$ctx/rootfs"
mkdir "$ctx/data"
cp /etc/ssl/certs/ca-certificates.crt "$ctx/ca-certificates.crt"
for b in macronode micronode; do
  cp "$BIN_DIR/$b" "$ctx/$b"
  strip "$ctx/$b"
done

export STORAGE_DRIVER=${STORAGE_DRIVER:-vfs}
rm -rf "$out/oci"
for name in macronode micronode; do
  echo "== image $name:$version"
  buildah bud --quiet --format docker --isolation chroot --layers=false --target "$name" \
    --timestamp 0 -t "localhost/$name:$version" -f "$here/Dockerfile" "$ctx" >/dev/null
  buildah push --quiet "localhost/$name:$version" "oci:$out/oci:$name"
  rm -f "$out/$name.tar"
  buildah push --quiet "localhost/$name:$version" "docker-archive:$out/$name.tar:$name:$version"
  bytes=$(skopeo inspect --raw "oci:$out/oci:$name" | python3 -c '
import gzip, json, os, sys
m = json.load(sys.stdin)
blobs = sys.argv[1]
total = 0
for l in m["layers"]:
    d = l["digest"].split(":", 1)[1]
    path = os.path.join(blobs, d)
    with open(path, "rb") as f:
        head = f.read(2)
    if head == b"\x1f\x8b":
        with gzip.open(path) as g:
            while chunk := g.read(1 << 20):
                total += len(chunk)
    else:
        total += os.path.getsize(path)
print(total)' "$out/oci/blobs/sha256")
  echo "$name: $bytes bytes uncompressed ($(( bytes / 1024 / 1024 )) MiB)" | tee "$out/$name.size"
  if [ "$bytes" -gt "$budget" ]; then
    echo "build.sh: $name is $bytes bytes, over the budget of $budget" >&2
    exit 1
  fi
done
