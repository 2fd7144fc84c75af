#!/usr/bin/env bash
# The main job, from a fresh Debian 12 machine, as root: install what is missing
# (scripts/setup.sh), build Herd, put `herd` on PATH, and start a local cluster with a demo
# container (`herd up --demo`). The cluster runs until Ctrl-C; use `herd` from another shell.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
echo "building herd (release)..." >&2
cargo build --release --locked --bin herd
install -m 0755 target/release/herd /usr/local/bin/herd
# The demo's busybox needs little room: its nodes keep 1 GiB free rather than the default 5 %
# of the disk, which on a large, nearly full disk (CI's: 11.8 GiB free of 252) refuses even
# busybox. Set HERD_NODE_DISK_RESERVE to keep another reserve.
export HERD_NODE_DISK_RESERVE="${HERD_NODE_DISK_RESERVE:-1g}"
exec herd up --demo "$@"
