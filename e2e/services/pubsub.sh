#!/usr/bin/env bash
# Google Cloud Pub/Sub emulator (from the google-cloud-cli-pubsub-emulator package) on a free
# 127.0.0.1 port. In-memory: stop/start loses topics and subscriptions.
# usage: pubsub.sh up|down|env|status|start|stop|restart
set -euo pipefail
WS_NAME=pubsub
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
WS_VARS=(PUBSUB_EMULATOR_HOST)
WS_TIMEOUT=90

REL=platform/pubsub-emulator/bin/cloud-pubsub-emulator

find_emulator() {
  local d
  if [ -n "${PUBSUB_EMULATOR_BIN:-}" ]; then
    [ -x "$PUBSUB_EMULATOR_BIN" ] && echo "$PUBSUB_EMULATOR_BIN"
    return
  fi
  for d in /usr/lib/google-cloud-sdk /usr/share/google-cloud-sdk /opt/google-cloud-sdk \
    "${HOME:-/root}/google-cloud-sdk" "$WS_CACHE/google-cloud-sdk"; do
    if [ -x "$d/$REL" ]; then echo "$d/$REL"; return 0; fi
  done
  if ws_have gcloud; then
    d=$(gcloud info --format='value(installation.sdk_root)' 2>/dev/null || true)
    if [ -n "$d" ] && [ -x "$d/$REL" ]; then echo "$d/$REL"; return 0; fi
  fi
  return 1
}

svc_install() {
  ws_require_java
  ws_have curl || ws_apt_install curl
  EMULATOR=$(find_emulator) && return 0
  if [ -n "${PUBSUB_EMULATOR_BIN:-}" ]; then ws_die "PUBSUB_EMULATOR_BIN=$PUBSUB_EMULATOR_BIN is not executable"; fi
  # The emulator ships only in Google's own apt repository (package
  # google-cloud-cli-pubsub-emulator) / gcloud components; neither Debian, PyPI, npm nor
  # Maven Central carries it, so it cannot be installed from the registries reachable here.
  if apt-cache policy google-cloud-cli-pubsub-emulator 2>/dev/null | grep -q 'Candidate: [0-9]'; then
    ws_apt_install google-cloud-cli-pubsub-emulator
    EMULATOR=$(find_emulator) && return 0
  fi
  ws_die "Pub/Sub emulator not found ($REL under the Cloud SDK root). It comes with the \
google-cloud-cli-pubsub-emulator package from Google's apt repository, which is not reachable \
from this machine. Install it, set PUBSUB_EMULATOR_BIN=/path/to/cloud-pubsub-emulator, or point \
PUBSUB_EMULATOR_HOST at a running emulator."
}

svc_init() {
  ws_write_env "PUBSUB_EMULATOR_HOST=127.0.0.1:$(ws_free_port)"
}

svc_launch() {
  [ -n "${EMULATOR:-}" ] || svc_install
  echo "$EMULATOR" >"$WS_DIR/emulator.path"
  CLOUD_PUBSUB_EMULATOR_OPTS=${CLOUD_PUBSUB_EMULATOR_OPTS:--Xmx512m} \
    ws_spawn "$EMULATOR" --host=127.0.0.1 --port="${PUBSUB_EMULATOR_HOST##*:}"
}

svc_ready() {
  # the emulator answers "Ok" on GET /
  [ "$(curl -fsS -m 3 "http://$PUBSUB_EMULATOR_HOST/" 2>/dev/null)" = Ok ]
}

ws_main "$@"
