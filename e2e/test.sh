#!/usr/bin/env bash
# The test command: starts the real services the tests need, then runs every test of the
# workspace. Services already given by the environment (S3_ENDPOINT, …) are used as they are.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/weir-target}"
export CARGO_TERM_COLOR=never
# A fresh machine builds everything once: incremental state only costs time and disk there.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
t0=$SECONDS
phase() { echo "test.sh: [$((SECONDS - t0)) s] $*" >&2; }

services=(moto kafka postgres mariadb redis opensearch hdfs kinesis pubsub kube)
# Started in the background, awaited before the tests: kube's first start builds the control
# plane from Go modules (~10 min on a fresh 2-core machine), which overlaps the cargo builds.
background=(kube)
# Services whose absence only skips their tests (they print "skipped: no emulator").
optional=(pubsub)
started=()
declare -A bg_pid=()
bg_out=$(mktemp -d)
cleanup() {
  for s in "${!bg_pid[@]}"; do kill "${bg_pid[$s]}" 2>/dev/null || true; wait "${bg_pid[$s]}" 2>/dev/null || true; done
  for s in "${started[@]}"; do e2e/services/"$s".sh down >/dev/null 2>&1 || true; done
  rm -rf "$bg_out"
}
trap cleanup EXIT

export_env() {
  while IFS= read -r line; do
    [ -n "$line" ] && export "${line?}"
  done <<<"$1"
}

for s in "${services[@]}"; do
  started+=("$s")
  if [[ " ${background[*]} " == *" $s "* ]]; then
    echo "test.sh: starting $s in the background" >&2
    e2e/services/"$s".sh up >"$bg_out/$s" &
    bg_pid[$s]=$!
    continue
  fi
  echo "test.sh: starting $s" >&2
  if ! env_lines=$(e2e/services/"$s".sh up); then
    if [[ " ${optional[*]} " == *" $s "* ]]; then
      echo "test.sh: *** $s could not start: its tests will say skipped ***" >&2
      continue
    fi
    exit 1
  fi
  export_env "$env_lines"
done

phase "services started"
cargo fmt --all --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
# The runtime with no connector feature (a few seconds warm): the core must not lean on a module
# that only some features compile.
cargo check -p weir-runtime --no-default-features --quiet
phase "clippy clean"
# Builds every test binary (and the `weir`/`weir-operator` binaries the e2e tests run) while
# the control plane may still be building.
cargo test --workspace --no-run
phase "tests built"
for s in "${!bg_pid[@]}"; do
  phase "waiting for $s"
  wait "${bg_pid[$s]}" || { echo "test.sh: $s failed to start" >&2; exit 1; }
  unset "bg_pid[$s]"
  export_env "$(cat "$bg_out/$s")"
done
phase "all services up"
cargo test --workspace --no-fail-fast
phase "tests passed"
