#!/usr/bin/env bash
# moto server (AWS mock: S3, Firehose, ...) on a free 127.0.0.1 port. Kinesis Data Streams come
# from kinesis.sh (moto's is wrong after a split and has no SubscribeToShard).
# usage: moto.sh up|down|env|status|start|stop|restart
set -euo pipefail
WS_NAME=moto
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
WS_VARS=(S3_ENDPOINT FIREHOSE_ENDPOINT AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_REGION)
WS_TIMEOUT=60

MOTO_VERSION=${MOTO_VERSION:-5.2.5}
VENV=$WS_CACHE/moto-$MOTO_VERSION-venv

svc_install() {
  ws_have curl || ws_apt_install curl
  if [ -f "$VENV/.complete" ] && "$VENV/bin/python" -c '' 2>/dev/null; then return 0; fi
  ws_log "installing moto[server]==$MOTO_VERSION into $VENV (pip, first time only)"
  ws_python -c 'import ensurepip, venv' 2>/dev/null || ws_apt_install python3-venv
  rm -rf "$VENV"
  ws_python -m venv "$VENV" >&2 || ws_die "python3 -m venv failed"
  "$VENV/bin/pip" install -q --disable-pip-version-check "moto[server]==$MOTO_VERSION" >&2 \
    || { rm -rf "$VENV"; ws_die "pip install moto[server]==$MOTO_VERSION failed"; }
  touch "$VENV/.complete"
}

svc_init() {
  local port url
  port=$(ws_free_port)
  url=http://127.0.0.1:$port
  ws_write_env "S3_ENDPOINT=$url" "FIREHOSE_ENDPOINT=$url" \
    AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1
}

svc_launch() {
  local port=${S3_ENDPOINT##*:}
  ws_spawn "$VENV/bin/moto_server" -H 127.0.0.1 -p "$port"
}

svc_ready() {
  # S3 ListBuckets on the root answers 200 with XML once the server is up.
  curl -fsS -m 3 -o /dev/null "$S3_ENDPOINT/"
}

ws_main "$@"
