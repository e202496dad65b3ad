#!/usr/bin/env bash
# Runs every fuzz target (or those named) for a bounded time each; not part of the normal tests.
#   fuzz/run.sh                 # every target, FUZZ_SECONDS (default 120) each
#   FUZZ_SECONDS=600 fuzz/run.sh cel spec
# Needs a nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`). A crash leaves its
# input in fuzz/artifacts/<target>/; turn it into a regression test in the normal suite (see
# README.md) before fixing it. Exit status: non-zero when a target found a crash.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${FUZZ_SECONDS:-120}"
target_dir="${FUZZ_TARGET_DIR:-target}"
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(spec cel json_record file_line dead_letter_headers)
fi
cargo +nightly fuzz build --target-dir "$target_dir"
failed=()
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  echo "== $t: ${seconds}s"
  # -timeout: one input taking over 10 s is a hang; -rss_limit_mb: 2 GiB is an allocation bomb.
  cargo +nightly fuzz run --target-dir "$target_dir" "$t" "corpus/$t" "seeds/$t" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    >"corpus/$t.log" 2>&1 || true
  grep -E "stat::number_of_executed_units|stat::peak_rss_mb|SUMMARY|deadly signal|panicked at" \
    "corpus/$t.log" || true
  if grep -qE "SUMMARY|deadly signal|panicked|ERROR: libFuzzer" "corpus/$t.log"; then
    failed+=("$t")
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "crashes in: ${failed[*]} (inputs in fuzz/artifacts/)"
  exit 1
fi
echo "no crashes"
