#!/usr/bin/env bash
# Builds the images of real server software that Herd's tests and benchmarks move (the
# workload matrix, tests/apps.rs and bench/apps): each a Debian 12 root filesystem with one
# server from Debian's packages, configured as packaged (its own user, its own config), with
# only what a test needs changed (listening on the container's address, clients from the
# host allowed). Idempotent: an image is rebuilt only when this script changes.
#
#   scripts/apps-images.sh            build what is missing
#   scripts/apps-images.sh --list     print NAME PATH of every image
#
# Images (rootfs tarballs for `herd image import NAME FILE`), in $APPS_DIR:
#   postgres.tar   PostgreSQL 15 (postgres), its cluster 'main' initialised
#   redis.tar      Redis 7 (redis)
#   nginx.tar      nginx (www-data workers)
#   mosquitto.tar  Mosquitto 2 MQTT broker (mosquitto), persistence on
#   tomcat.tar     Tomcat 10 on OpenJDK 17 (tomcat)
# The base (debootstrap minbase) is shared; every package is downloaded once.
# The clients the tests drive them with run from $APPS_DIR/clients (pgbench and psql in
# /usr/lib/postgresql/15/bin, redis-benchmark, redis-cli, mosquitto_pub/sub) through `chroot`,
# and wrk from the host.
set -euo pipefail

log() { printf '\033[1mapps-images:\033[0m %s\n' "$*" >&2; }
die() { printf 'apps-images: error: %s\n' "$*" >&2; exit 1; }

APPS_DIR=${HERD_APPS_DIR:-/var/cache/herd-setup/apps}
MIRROR=${HERD_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
IMAGES=(postgres redis nginx mosquitto tomcat clients)

if [ "${1:-}" = "--list" ]; then
  for i in "${IMAGES[@]}"; do [ "$i" = clients ] || echo "$i $APPS_DIR/$i.tar"; done
  exit 0
fi
[ "$(id -u)" = 0 ] || die "run as root (debootstrap and chroot)"
command -v debootstrap >/dev/null || die "debootstrap is missing: apt-get install debootstrap"

packages() {
  case "$1" in
    postgres) echo postgresql-15 ;;
    redis) echo redis-server ;;
    nginx) echo nginx-light ;;
    mosquitto) echo mosquitto ;;
    tomcat) echo tomcat10 ;;
    # pgbench comes with the server's package in Debian 12 (it is not started here).
    clients) echo postgresql-15 redis-tools mosquitto-clients ;;
  esac
}

# What each server needs beyond Debian's defaults to serve the test's clients (configure_NAME
# ROOT; none for the clients).
configure_postgres() {
  local conf=$1/etc/postgresql/15/main
  echo "listen_addresses = '*'" >> "$conf/postgresql.conf"
  echo "max_connections = 200" >> "$conf/postgresql.conf"
  echo "host all all 0.0.0.0/0 trust" >> "$conf/pg_hba.conf"
  mkdir -p "$1/var/run/postgresql" && chroot "$1" chown postgres:postgres /var/run/postgresql
}
configure_redis() {
  sed -i -e 's/^bind .*/bind 0.0.0.0/' -e 's/^protected-mode yes/protected-mode no/' \
    -e 's/^daemonize yes/daemonize no/' -e 's/^maxclients .*//' "$1/etc/redis/redis.conf"
  echo "maxclients 20000" >> "$1/etc/redis/redis.conf"
}
configure_nginx() {
  sed -i -e 's/^\s*worker_connections .*/\tworker_connections 20000;/' "$1/etc/nginx/nginx.conf"
  sed -i -e 's/^worker_processes .*/worker_processes 2;\nworker_rlimit_nofile 40000;/' "$1/etc/nginx/nginx.conf"
  grep -q 'daemon off' "$1/etc/nginx/nginx.conf" || echo 'daemon off;' >> "$1/etc/nginx/nginx.conf"
}
configure_mosquitto() {
  printf 'listener 1883 0.0.0.0\nallow_anonymous true\nmax_queued_messages 100000\n' \
    > "$1/etc/mosquitto/conf.d/herd-tests.conf"
  # Debian's service makes its pid file's directory (systemd's RuntimeDirectory).
  mkdir -p "$1/run/mosquitto" && chroot "$1" chown mosquitto:mosquitto /run/mosquitto
}
configure_tomcat() {
  # Tomcat reads its configuration from CATALINA_BASE, as Debian's service sets it.
  mkdir -p "$1/var/lib/tomcat10/webapps/ROOT"
  [ -f "$1/var/lib/tomcat10/webapps/ROOT/index.html" ] \
    || echo '<html><body>tomcat</body></html>' > "$1/var/lib/tomcat10/webapps/ROOT/index.html"
}
configure_clients() { :; }

# Everything but what runs: caches, documentation, man pages, translations.
trim() {
  local root=$1
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* \
    "$root"/usr/share/man/* "$root"/usr/share/info/*
  find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name 'C*' ! -name 'en*' -exec rm -rf {} + 2>/dev/null || true
}

# What an image is built from: the suite, its packages and how it is configured and trimmed
# (a change to any of them rebuilds it; other edits of this script do not).
stamp_of() { echo "$SUITE $(packages "$1") $( { declare -f "configure_$1" trim 2>/dev/null; } | sha256sum | cut -c1-16)"; }

mkdir -p "$APPS_DIR"
base=$APPS_DIR/base
archives=$APPS_DIR/archives
mkdir -p "$archives/partial"
if [ "$(cat "$base.stamp" 2>/dev/null)" != "$(stamp_of base)" ]; then
  log "debootstrap of Debian $SUITE (minbase, about two minutes)"
  rm -rf "$base" "$base.new"
  debootstrap --variant=minbase --cache-dir="$archives" "$SUITE" "$base.new" "$MIRROR" > "$APPS_DIR/base.log" 2>&1 \
    || die "debootstrap failed; see $APPS_DIR/base.log"
  printf '#!/bin/sh\nexit 101\n' > "$base.new/usr/sbin/policy-rc.d" && chmod 0755 "$base.new/usr/sbin/policy-rc.d"
  mv "$base.new" "$base" && stamp_of base > "$base.stamp"
fi

for name in "${IMAGES[@]}"; do
  out=$APPS_DIR/$name.tar
  [ "$name" = clients ] && out=$APPS_DIR/clients/.built
  [ -e "$out" ] && [ "$(cat "$APPS_DIR/$name.stamp" 2>/dev/null)" = "$(stamp_of "$name")" ] && continue
  log "building $name ($(packages "$name"))"
  root=$APPS_DIR/$name.rootfs
  rm -rf "$root" && cp -a "$base" "$root"
  mount --bind "$archives" "$root/var/cache/apt/archives"
  mount -t proc proc "$root/proc"
  built=0
  {
    chroot "$root" apt-get update -qq \
      && chroot "$root" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        $(packages "$name")
  } > "$APPS_DIR/$name.log" 2>&1 && built=1
  umount "$root/proc" "$root/var/cache/apt/archives"
  [ "$built" = 1 ] || die "installing $(packages "$name") failed; see $APPS_DIR/$name.log"
  "configure_$name" "$root"
  trim "$root"
  if [ "$name" = clients ]; then
    rm -rf "$APPS_DIR/clients" && mv "$root" "$APPS_DIR/clients" && touch "$out"
  else
    tar --numeric-owner --xattrs -C "$root" -cf "$out.new" . && mv "$out.new" "$out"
    rm -rf "$root"
  fi
  stamp_of "$name" > "$APPS_DIR/$name.stamp"
done
log "ready: $(for i in "${IMAGES[@]}"; do [ "$i" = clients ] || printf '%s ' "$i"; done)in $APPS_DIR"
