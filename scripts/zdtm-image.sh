#!/usr/bin/env bash
# Builds CRIU's own test suite (ZDTM, test/zdtm/static in the CRIU source that setup.sh
# unpacks) and an image that holds it, for bench/zdtm and its CI subset (bench/tests/zdtm.rs):
# a Debian 12 root filesystem (the base of scripts/apps-images.sh, with libaio1 and python3
# from Debian's packages) with the suite's test
# programs in /zdtm/static, each with its .desc, .checkskip and the command the suite's own
# Makefile starts it with (/zdtm/static/commands: NAME<TAB>COMMAND). Also builds CRIU's
# Python bindings, which the suite's own runner (test/zdtm.py, the plain-CRIU baseline)
# imports. Idempotent: rebuilt only when CRIU's build or this script changes.
#
#   scripts/zdtm-image.sh            build what is missing
#   scripts/zdtm-image.sh --path     print the image's path
set -euo pipefail

log() { printf '\033[1mzdtm-image:\033[0m %s\n' "$*" >&2; }
die() { printf 'zdtm-image: error: %s\n' "$*" >&2; exit 1; }

CACHE=/var/cache/herd-setup
OUT_DIR=$CACHE/zdtm
IMAGE=$OUT_DIR/zdtm.tar
if [ "${1:-}" = "--path" ]; then echo "$IMAGE"; exit 0; fi
[ "$(id -u)" = 0 ] || die "run as root (chroot)"

CRIU_STAMP=/usr/local/share/herd/criu.build
[ -f "$CRIU_STAMP" ] || die "CRIU is not built: run scripts/setup.sh first"
CRIU_VERSION=$(cut -d' ' -f1 "$CRIU_STAMP")
SRC=$CACHE/criu/criu-$CRIU_VERSION
RUNDIR=$(cut -d' ' -f2 "$CRIU_STAMP")
BASE=$CACHE/apps/base
ARCHIVES=$CACHE/apps/archives
[ -d "$SRC/test/zdtm/static" ] || die "$SRC has no test suite: run scripts/setup.sh first"
[ -d "$BASE" ] || die "$BASE is missing: run scripts/apps-images.sh first"

stamp="$(cat "$CRIU_STAMP") $(sha256sum "$0" | cut -c1-16)"
if [ -f "$IMAGE" ] && [ "$(cat "$OUT_DIR/stamp" 2>/dev/null)" = "$stamp" ]; then
  exit 0
fi
mkdir -p "$OUT_DIR"

log "building CRIU's test suite (about a minute)"
# -k: one test that does not build (netns_sub_veth needs libnl-route) must not stop the rest.
make -k -j"$(nproc)" -C "$SRC/test/zdtm/static" > "$OUT_DIR/build.log" 2>&1 || true
make -j"$(nproc)" -C "$SRC" RUNDIR="$RUNDIR" lib >> "$OUT_DIR/build.log" 2>&1 \
  || die "building CRIU's Python bindings failed; see $OUT_DIR/build.log"

static=$SRC/test/zdtm/static
# The tests the suite's Makefile starts (TST; the TST_STATE ones run on the host's tables).
tests=$(make -s --no-print-directory -C "$static" -f Makefile -f - print-tests <<'MK'
print-tests: ; @echo $(TST)
MK
)
# libaio1: socket_aio and aio00 link it; python3: some tests' .checkskip are Python scripts;
# iptables, nftables, iproute2: the socket-tcp-* tests that reset or track connections run them.
PACKAGES="libaio1 python3 iptables nftables iproute2"
root=$OUT_DIR/rootfs
rm -rf "$root" && cp -a "$BASE" "$root"
mount --bind "$ARCHIVES" "$root/var/cache/apt/archives"
mount -t proc proc "$root/proc"
installed=0
{
  chroot "$root" apt-get update -qq \
    && chroot "$root" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $PACKAGES
} > "$OUT_DIR/packages.log" 2>&1 && installed=1
umount "$root/proc" "$root/var/cache/apt/archives"
[ "$installed" = 1 ] || die "installing $PACKAGES failed; see $OUT_DIR/packages.log"
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* "$root"/usr/share/man/*

dest=$root/zdtm/static
mkdir -p "$dest"
# The suite's own start commands (its Makefile's NAME.pid rules, made even where a run left
# NAME.pid behind), run from /zdtm/static: one dry run of make for all of them.
starts=$OUT_DIR/starts
make -n -B -s --no-print-directory -C "$static" $(printf '%s.pid ' $tests) 2>/dev/null | grep -F -- "--pidfile=" > "$starts" || true
: > "$dest/commands"
: > "$dest/hooked"
built=0
for t in $tests; do
  if [ ! -x "$static/$t" ]; then continue; fi
  cp -a "$static/$t" "$dest/"
  for extra in desc checkskip; do
    if [ -e "$static/$t.$extra" ]; then cp -a "$static/$t.$extra" "$dest/"; fi
  done
  cmd=$(grep -F -- "--pidfile=$t.pid " "$starts" | head -1 || true)
  [ -n "$cmd" ] || die "no start command for $t in the suite's Makefile"
  printf '%s\t%s\n' "$t" "$cmd" >> "$dest/commands"
  # A test whose hook sets up or tears down something on the host when zdtm.py runs it
  # (cgroups, links, firewall rules); hooks that only inspect the images or the sockets
  # around a dump are not needed to run it.
  if [ -e "$static/$t.hook" ] && grep -qE -- '--(post-start|pre-restore|clean)' "$static/$t.hook"; then
    printf '%s\n' "$t" >> "$dest/hooked"
  fi
  built=$((built + 1))
done
# Tests run as an unprivileged user (zdtm.py's ZDTM_UID) and write next to themselves.
chmod 0777 "$dest"
tar --numeric-owner --xattrs -C "$root" -cf "$IMAGE.new" . && mv "$IMAGE.new" "$IMAGE"
cp "$dest/commands" "$dest/hooked" "$OUT_DIR/"
rm -rf "$root"
echo "$stamp" > "$OUT_DIR/stamp"
log "ready: $built tests in $IMAGE"
