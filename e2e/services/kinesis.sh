#!/usr/bin/env bash
# kinesis-mock (npm package kinesis-local, its JavaScript build) on a free port: Kinesis Data
# Streams with resharding, ChildShards, AT_TIMESTAMP and enhanced fan-out. In memory.
# usage: kinesis.sh up|down|env|status|start|stop|restart
set -euo pipefail
WS_NAME=kinesis
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
WS_VARS=(KINESIS_ENDPOINT)
WS_TIMEOUT=60

KINESIS_LOCAL_VERSION=${KINESIS_LOCAL_VERSION:-0.6.2}
PKG=$WS_CACHE/kinesis-local-$KINESIS_LOCAL_VERSION

svc_install() {
  ws_have curl || ws_apt_install curl
  ws_have node || ws_apt_install nodejs
  ws_have npm || ws_apt_install npm
  if [ -f "$PKG/.complete" ]; then return 0; fi
  ws_log "fetching kinesis-local@$KINESIS_LOCAL_VERSION into $PKG (npm pack, first time only)"
  local tmp
  tmp=$(mktemp -d "$WS_CACHE/.kinesis-local.XXXXXX")
  (cd "$tmp" && npm pack --silent "kinesis-local@$KINESIS_LOCAL_VERSION" >/dev/null) \
    || { rm -rf "$tmp"; ws_die "npm pack kinesis-local@$KINESIS_LOCAL_VERSION failed"; }
  tar -xzf "$tmp"/kinesis-local-*.tgz -C "$tmp" || { rm -rf "$tmp"; ws_die "unpacking failed"; }
  rm -rf "$PKG"
  mv "$tmp/package" "$PKG"
  rm -rf "$tmp"
  touch "$PKG/.complete"
}

svc_init() {
  ws_write_env "KINESIS_ENDPOINT=http://127.0.0.1:$(ws_free_port)" \
    "KINESIS_TLS_PORT=$(ws_free_port)"
}

svc_launch() {
  local port=${KINESIS_ENDPOINT##*:}
  # Stream and consumer state changes take 500 ms by default; tests wait for each.
  cd "$WS_DIR"
  ws_spawn env KINESIS_MOCK_PLAIN_PORT="$port" KINESIS_MOCK_TLS_PORT="$KINESIS_TLS_PORT" \
    KINESIS_MOCK_CERT_PATH="$PKG/server.json" LOG_LEVEL="${KINESIS_LOG_LEVEL:-WARN}" \
    CREATE_STREAM_DURATION=100ms DELETE_STREAM_DURATION=100ms \
    REGISTER_STREAM_CONSUMER_DURATION=100ms DEREGISTER_STREAM_CONSUMER_DURATION=100ms \
    MERGE_SHARDS_DURATION=100ms SPLIT_SHARD_DURATION=100ms UPDATE_SHARD_COUNT_DURATION=100ms \
    SHARD_LIMIT="${KINESIS_SHARD_LIMIT:-500}" \
    node "$PKG/main.js"
}

svc_ready() {
  curl -fsS -m 3 -o /dev/null "$KINESIS_ENDPOINT/healthcheck"
}

ws_main "$@"
