#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine, as root: install what is missing
# (scripts/setup.sh), lint, and run every test (unit, integration and end-to-end on real
# clusters with runc, CRIU and NATS). .ci/run runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
if ! cargo nextest --version >/dev/null 2>&1; then
  echo "installing cargo-nextest..." >&2
  cargo install --locked cargo-nextest
fi
cargo fmt --all --check
cargo clippy --locked --workspace --all-targets -- -D warnings
# Test clusters keep 1 GiB free (tests/common/mod.rs); say how much there is, so a run
# that fails for want of disk says so at its start.
df -h --output=avail,target / /var/lib | sed 's/^/disk: /' >&2
cargo nextest run --locked --workspace --no-fail-fast "$@"
