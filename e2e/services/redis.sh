#!/usr/bin/env bash
# redis-server (Debian package) on a free 127.0.0.1 port, no persistence (REDIS_APPENDONLY=yes:
# an append-only file in the run directory, so a stop and start keeps the data).
# usage: redis.sh up|down|env|status|start|stop|restart
set -euo pipefail
WS_NAME=redis
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
WS_VARS=(REDIS_URL)
WS_TIMEOUT=30

svc_install() {
  if ! ws_have redis-server || ! ws_have redis-cli; then ws_apt_install redis-server redis-tools; fi
}

svc_init() {
  ws_write_env "REDIS_URL=redis://127.0.0.1:$(ws_free_port)/"
}

svc_launch() {
  local port=${REDIS_URL##*:}
  port=${port%%/*}
  ws_spawn redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly "${REDIS_APPENDONLY:-no}" \
    --daemonize no --dir "$WS_DIR"
}

svc_ready() {
  [ "$(redis-cli -u "$REDIS_URL" ping 2>/dev/null)" = PONG ]
}

ws_main "$@"
