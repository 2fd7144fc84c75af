#!/usr/bin/env bash
# Runs each fuzz target (fuzz/, cargo fuzz, libFuzzer) for a given time, one at a time at the
# lowest priority, and prints per target: time, executions, and crashes, timeouts and
# out-of-memory inputs found (kept in fuzz/artifacts/<target>/). See docs/design/fuzzing.md.
#
#   bench/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (default: 60 s, every target)
#
# Needs cargo-fuzz (installed if missing). On a stable toolchain its nightly-only flags are
# allowed with RUSTC_BOOTSTRAP=1. A hang (-timeout), an allocation over 512 MiB
# (-malloc_limit_mb) or a process over 2 GiB (-rss_limit_mb) counts as a finding, like a panic.
# Scratch files go to $HERD_FUZZ_TMP (default: the system's temporary directory).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
export RUSTC_BOOTSTRAP=1
secs=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(image_archive oci_manifest checkpoint transfer api_request)

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz..." >&2
  cargo install --locked cargo-fuzz
fi
build=(-s none --codegen-units 16)

# The seeds, made from real samples by crates/herd-fuzz (read-only corpora beside
# fuzz/corpus/<target>, where libFuzzer keeps what it finds).
cargo run -q -p herd-fuzz --bin herd-fuzz-seeds -- fuzz/seeds >/dev/null
nice -n 19 cargo fuzz build "${build[@]}" --fuzz-dir fuzz >&2

max_len() {
  case $1 in
    image_archive | checkpoint) echo 65536 ;;
    oci_manifest | transfer) echo 16384 ;;
    *) echo 8192 ;;
  esac
}

printf '%-14s %8s %12s %10s %8s %9s %5s  %s\n' target seconds executions exec/s crashes timeouts ooms peak_rss_mb
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t" "fuzz/regressions/$t"
  before=$(ls "fuzz/artifacts/$t" | wc -l)
  log=$(mktemp)
  start=$(date +%s)
  set +e
  nice -n 19 cargo fuzz run "${build[@]}" --fuzz-dir fuzz "$t" \
    "fuzz/corpus/$t" "fuzz/seeds/$t" "fuzz/regressions/$t" -- \
    -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=512 \
    -max_len="$(max_len "$t")" -print_final_stats=1 -artifact_prefix="fuzz/artifacts/$t/" >"$log" 2>&1
  set -e
  took=$(($(date +%s) - start))
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "$log" | tail -1)
  new=$(ls -t "fuzz/artifacts/$t" | head -n $(($(ls "fuzz/artifacts/$t" | wc -l) - before)))
  count() { printf '%s\n' "$new" | grep -c "^$1-" || true; }
  printf '%-14s %8s %12s %10s %8s %9s %5s  %s\n' "$t" "$took" "${execs:-?}" "${rate:-?}" \
    "$(count crash)" "$(count timeout)" "$(count oom)" "${rss:-?}"
  if [ -n "$new" ]; then
    for f in $new; do echo "  found: fuzz/artifacts/$t/$f" ; done
    grep -m3 -E "panicked at|ERROR: libFuzzer|SUMMARY" "$log" | sed 's/^/  /' || true
  fi
  cp "$log" "fuzz/artifacts/$t/last-run.log" || true
  rm -f "$log"
done
