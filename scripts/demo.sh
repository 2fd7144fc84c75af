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
exec herd up --demo "$@"
