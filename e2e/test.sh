#!/usr/bin/env bash
# The test command: starts the real services the tests need, then runs every test of the
# workspace. Services already given by the environment (S3_ENDPOINT, …) are used as they are.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/weir-target}"
export CARGO_TERM_COLOR=never

services=(moto kafka postgres redis pubsub)
# Services whose absence only skips their tests (they print "skipped: no emulator").
optional=(pubsub)
started=()
cleanup() {
  for s in "${started[@]}"; do e2e/services/"$s".sh down >/dev/null 2>&1 || true; done
}
trap cleanup EXIT

for s in "${services[@]}"; do
  echo "test.sh: starting $s" >&2
  if ! env_lines=$(e2e/services/"$s".sh up); then
    if [[ " ${optional[*]} " == *" $s "* ]]; then
      echo "test.sh: *** $s could not start: its tests will say skipped ***" >&2
      continue
    fi
    exit 1
  fi
  started+=("$s")
  while IFS= read -r line; do
    [ -n "$line" ] && export "${line?}"
  done <<<"$env_lines"
done

cargo fmt --all --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo build --release -p weir-runtime --bin weir
cargo test --workspace
