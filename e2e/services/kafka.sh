#!/usr/bin/env bash
# Apache Kafka 4.x broker (jars from Maven Central), single-node KRaft, on a free 127.0.0.1 port.
# usage: kafka.sh up|down|env|status|start|stop|restart
#   stop/start keep the data and the ports (for broker-outage tests).
# Tools: `kafka.sh tool <main class> args...` runs a bundled tool, e.g.
#   kafka.sh tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$KAFKA_BOOTSTRAP" --list
# `kafka.sh classpath` prints the classpath (broker + tools jars).
# Besides PLAINTEXT the broker listens on SASL_PLAINTEXT and SASL_SSL (PLAIN, SCRAM-SHA-256 and
# SCRAM-SHA-512 for user $KAFKA_SASL_USERNAME / $KAFKA_SASL_PASSWORD; TLS with a test CA in
# $KAFKA_CA_FILE), for the tests of secured connections; PLAIN also knows Azure Event Hubs' user
# $ConnectionString, whose password is a connection string ending in
# SharedAccessKey=$KAFKA_SASL_PASSWORD (the eventhubs profile's tests).
set -euo pipefail
WS_NAME=kafka
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
WS_VARS=(KAFKA_BOOTSTRAP KAFKA_SASL_BOOTSTRAP KAFKA_SASL_SSL_BOOTSTRAP KAFKA_CA_FILE KAFKA_SASL_USERNAME KAFKA_SASL_PASSWORD)
SASL_USER=weir
SASL_PASSWORD=weir-secret
# Azure Event Hubs' login, for the eventhubs profile's tests: PLAIN with the literal user
# $ConnectionString and a connection string as password. Not printed as a variable (its `;`
# would break `eval "$(kafka.sh up | sed 's/^/export /')"`): the tests build the same string
# (runtime/tests/it/kafka_sink/eventhubs.rs).
EVENTHUBS_CONNECTION_STRING="Endpoint=sb://weir-test.servicebus.windows.net/;SharedAccessKeyName=weir;SharedAccessKey=$SASL_PASSWORD"
KEYSTORE_PASSWORD=weir-test
WS_TIMEOUT=120

# 4.4.0's kafka-tools artifact is not on Maven Central; 4.3.1 is complete.
KAFKA_VERSION=${KAFKA_VERSION:-4.3.1}
# log4j2 binding for slf4j 1.7 (the slf4j-api Kafka uses); same log4j as kafka's log4j-core.
LOG4J_VERSION=${KAFKA_LOG4J_VERSION:-2.25.4}
KHOME=$WS_CACHE/kafka-$KAFKA_VERSION
CP="$KHOME/libs/*"

svc_install() {
  ws_require_java
  [ -f "$KHOME/libs/.complete" ] && return 0
  ws_log "resolving org.apache.kafka:kafka_2.13:$KAFKA_VERSION + tools from Maven Central (first time only)"
  mkdir -p "$KHOME"
  rm -rf "$KHOME/libs"
  cat >"$KHOME/pom.xml" <<POM
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>weir.e2e.services</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>$KAFKA_VERSION</version>
    </dependency>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka-tools</artifactId>
      <version>$KAFKA_VERSION</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>$LOG4J_VERSION</version>
    </dependency>
  </dependencies>
</project>
POM
  ws_mvn -f "$KHOME/pom.xml" dependency:copy-dependencies -DincludeScope=runtime \
    -DoutputDirectory="$KHOME/libs" >&2 || ws_die "maven could not resolve kafka $KAFKA_VERSION"
  cat >"$KHOME/log4j2.properties" <<'LOG'
status = warn
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRefs = out
rootLogger.appenderRef.out.ref = OUT
logger.statechange.name = state.change.logger
logger.statechange.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
LOG
  cat >"$KHOME/log4j2-tools.properties" <<'LOG'
status = warn
appender.err.type = Console
appender.err.name = ERR
appender.err.target = SYSTEM_ERR
appender.err.layout.type = PatternLayout
appender.err.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRefs = err
rootLogger.appenderRef.err.ref = ERR
LOG
  touch "$KHOME/libs/.complete"
}

# Kafka cluster id: 16 random bytes, base64url without padding, not starting with '-'.
random_cluster_id() {
  ws_python -c 'import base64, os
while True:
    u = base64.urlsafe_b64encode(os.urandom(16)).rstrip(b"=").decode()
    if not u.startswith("-"):
        print(u); break'
}

kjava() {
  java -Xmx256m -XX:TieredStopAtLevel=1 -Dlog4j2.configurationFile="$KHOME/log4j2.properties" -cp "$CP" "$@"
}

# A test CA and a broker certificate it signed for 127.0.0.1 (PKCS12 keystore for the broker,
# PEM CA for clients).
make_certs() {
  local d=$WS_DIR/tls pw=$KEYSTORE_PASSWORD
  rm -rf "$d" && mkdir -p "$d"
  local kt=(keytool -storetype PKCS12 -storepass "$pw")
  "${kt[@]}" -genkeypair -alias ca -keyalg RSA -keysize 2048 -validity 3650 -dname CN=weir-test-ca \
    -ext bc:c -keystore "$d/ca.p12" -keypass "$pw"
  "${kt[@]}" -exportcert -rfc -alias ca -keystore "$d/ca.p12" -file "$d/ca.pem"
  "${kt[@]}" -genkeypair -alias broker -keyalg RSA -keysize 2048 -validity 3650 -dname CN=localhost \
    -keystore "$d/broker.p12" -keypass "$pw"
  "${kt[@]}" -certreq -alias broker -keystore "$d/broker.p12" -file "$d/broker.csr"
  "${kt[@]}" -gencert -alias ca -keystore "$d/ca.p12" -infile "$d/broker.csr" -outfile "$d/broker.crt" \
    -rfc -validity 3650 -ext SAN=IP:127.0.0.1,DNS:localhost -ext EKU=serverAuth
  "${kt[@]}" -importcert -noprompt -alias ca -file "$d/ca.pem" -keystore "$d/broker.p12"
  "${kt[@]}" -importcert -noprompt -alias broker -file "$d/broker.crt" -keystore "$d/broker.p12"
}

svc_init() {
  local port cport sport tport
  port=$(ws_free_port)
  cport=$(ws_free_port)
  while [ "$cport" = "$port" ]; do cport=$(ws_free_port); done
  sport=$(ws_free_port)
  while [ "$sport" = "$port" ] || [ "$sport" = "$cport" ]; do sport=$(ws_free_port); done
  tport=$(ws_free_port)
  while [ "$tport" = "$port" ] || [ "$tport" = "$cport" ] || [ "$tport" = "$sport" ]; do tport=$(ws_free_port); done
  mkdir -p "$WS_DIR/data"
  make_certs >>"$WS_LOG" 2>&1 || { tail -n 20 "$WS_LOG" >&2; ws_die "keytool failed making the test certificates"; }
  local plain="org.apache.kafka.common.security.plain.PlainLoginModule required user_$SASL_USER=\"$SASL_PASSWORD\" user_\$ConnectionString=\"$EVENTHUBS_CONNECTION_STRING\";"
  local scram="org.apache.kafka.common.security.scram.ScramLoginModule required;"
  cat >"$WS_DIR/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport,SASL_PLAINTEXT://127.0.0.1:$sport,SASL_SSL://127.0.0.1:$tport
advertised.listeners=PLAINTEXT://127.0.0.1:$port,SASL_PLAINTEXT://127.0.0.1:$sport,SASL_SSL://127.0.0.1:$tport
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL
sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512
listener.name.sasl_plaintext.plain.sasl.jaas.config=$plain
listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config=$scram
listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config=$scram
listener.name.sasl_ssl.plain.sasl.jaas.config=$plain
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=$scram
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=$scram
ssl.keystore.location=$WS_DIR/tls/broker.p12
ssl.keystore.type=PKCS12
ssl.keystore.password=$KEYSTORE_PASSWORD
ssl.key.password=$KEYSTORE_PASSWORD
log.dirs=$WS_DIR/data
num.partitions=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
transaction.max.timeout.ms=${KAFKA_TRANSACTION_MAX_TIMEOUT_MS:-900000}
num.network.threads=2
num.io.threads=4
num.recovery.threads.per.data.dir=1
PROPS
  kjava kafka.tools.StorageTool format --standalone -t "$(random_cluster_id)" \
    -c "$WS_DIR/server.properties" \
    --add-scram "SCRAM-SHA-256=[name=$SASL_USER,password=$SASL_PASSWORD]" \
    --add-scram "SCRAM-SHA-512=[name=$SASL_USER,password=$SASL_PASSWORD]" >>"$WS_LOG" 2>&1 \
    || { tail -n 20 "$WS_LOG" >&2; ws_die "kafka storage format failed"; }
  ws_write_env "KAFKA_BOOTSTRAP=127.0.0.1:$port" "KAFKA_SASL_BOOTSTRAP=127.0.0.1:$sport" \
    "KAFKA_SASL_SSL_BOOTSTRAP=127.0.0.1:$tport" "KAFKA_CA_FILE=$WS_DIR/tls/ca.pem" \
    "KAFKA_SASL_USERNAME=$SASL_USER" "KAFKA_SASL_PASSWORD=$SASL_PASSWORD"
}

svc_launch() {
  # Readiness looks for the start line only in log output written after this point.
  wc -c <"$WS_LOG" | tr -d ' ' >"$WS_DIR/log.offset"
  # shellcheck disable=SC2086 # KAFKA_HEAP_OPTS is a list of JVM flags
  ws_spawn java ${KAFKA_HEAP_OPTS:--Xmx512m -Xms256m} -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -Djava.awt.headless=true -Dlog4j2.configurationFile="$KHOME/log4j2.properties" \
    -cp "$CP" kafka.Kafka "$WS_DIR/server.properties"
}

svc_stop() {
  # controlled shutdown can take a few seconds; TERM, then KILL after 40 s
  local pid
  pid=$(ws_pid 2>/dev/null || true)
  if [ -n "$pid" ]; then ws_kill_group "$pid" 40; fi
}

svc_ready() {
  local host=${KAFKA_BOOTSTRAP%:*} port=${KAFKA_BOOTSTRAP##*:}
  ws_port_open "$port" "$host" || return 1
  # our own instance: also wait for the broker to be fully started (unfenced)
  if [ -s "$WS_DIR/log.offset" ] && [ "$KAFKA_BOOTSTRAP" = "$(ws_env_get KAFKA_BOOTSTRAP 2>/dev/null)" ]; then
    tail -c +"$(($(cat "$WS_DIR/log.offset") + 1))" "$WS_LOG" | grep -q 'Kafka Server started'
  fi
}

case "${1:-}" in
  classpath)
    svc_install
    echo "$CP"
    ;;
  tool)
    # kafka.sh tool <main class> args...  (tool logging: WARN to stderr)
    shift
    [ $# -ge 1 ] || ws_die "usage: kafka.sh tool <main class, e.g. org.apache.kafka.tools.TopicCommand> args..."
    svc_install
    exec java -Xmx256m -XX:TieredStopAtLevel=1 -Dlog4j2.configurationFile="$KHOME/log4j2-tools.properties" \
      -cp "$CP" "$@"
    ;;
  *) ws_main "$@" ;;
esac
