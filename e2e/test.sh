#!/usr/bin/env bash
# The test command: starts the real services the tests need, then runs every test of the
# workspace. Services already given by the environment (S3_ENDPOINT, …) are used as they are.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/weir-target}"
export CARGO_TERM_COLOR=never

services=(moto kafka postgres redis opensearch)
started=()
cleanup() {
  for s in "${started[@]}"; do e2e/services/"$s".sh down >/dev/null 2>&1 || true; done
}
trap cleanup EXIT

for s in "${services[@]}"; do
  echo "test.sh: starting $s" >&2
  env_lines=$(e2e/services/"$s".sh up)
  started+=("$s")
  while IFS= read -r line; do
    [ -n "$line" ] && export "${line?}"
  done <<<"$env_lines"
done

cargo fmt --all --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo build --release -p weir-runtime --bin weir
cargo test --workspace
