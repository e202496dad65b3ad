#!/usr/bin/env bash
# HDFS: Hadoop's MiniDFSCluster (org.apache.hadoop:hadoop-minicluster from Maven Central, started
# by hdfs/WeirMiniDfs.java), one namenode on a free 127.0.0.1 port and one datanode, data under the
# run dir, permissions off.
# usage: hdfs.sh up|down|env|status|start|stop|restart
#   stop/start keep the data and the namenode port.
set -euo pipefail
WS_NAME=hdfs
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
WS_VARS=(HDFS_URL)
WS_TIMEOUT=120

HADOOP_VERSION=${HDFS_HADOOP_VERSION:-3.4.1}
HDFS_HOME=$WS_CACHE/hadoop-minicluster-$HADOOP_VERSION
SRC=$WS_HERE/hdfs/WeirMiniDfs.java
CLASSES=$HDFS_HOME/classes
READY=$WS_DIR/ready

svc_install() {
  ws_require_java
  ws_have javac || ws_die "javac not found on PATH (a JDK 17+ is required)"
  # MiniDFSCluster lives in hadoop-hdfs's test jar, which hadoop-minicluster brings with
  # hadoop-common's; YARN and MapReduce (the other half of the minicluster) are left out.
  # jackson-core is pinned to the version Hadoop builds with: Maven's nearest-wins would pick an
  # older one from a transitive dependency, which jackson-databind 2.12 cannot load.
  # MiniDFSCluster also calls Mockito and JUnit, which Hadoop's build has in test scope.
  local pom
  pom=$(cat <<POM
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>weir.e2e.services</groupId>
  <artifactId>hdfs-runtime</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.hadoop</groupId>
      <artifactId>hadoop-minicluster</artifactId>
      <version>$HADOOP_VERSION</version>
      <exclusions>
        <exclusion><groupId>org.apache.hadoop</groupId><artifactId>hadoop-yarn-*</artifactId></exclusion>
        <exclusion><groupId>org.apache.hadoop</groupId><artifactId>hadoop-mapreduce-*</artifactId></exclusion>
        <exclusion><groupId>ch.qos.logback</groupId><artifactId>*</artifactId></exclusion>
      </exclusions>
    </dependency>
    <dependency>
      <groupId>com.fasterxml.jackson.core</groupId>
      <artifactId>jackson-core</artifactId>
      <version>2.12.7</version>
    </dependency>
    <dependency><groupId>org.mockito</groupId><artifactId>mockito-core</artifactId><version>2.28.2</version></dependency>
    <dependency><groupId>junit</groupId><artifactId>junit</artifactId><version>4.13.2</version></dependency>
  </dependencies>
</project>
POM
)
  local pom_sum
  pom_sum=$(printf '%s' "$pom" | sha256sum | cut -d' ' -f1)
  if [ "$(cat "$HDFS_HOME/libs/.complete" 2>/dev/null)" != "$pom_sum" ]; then
    ws_log "resolving org.apache.hadoop:hadoop-minicluster:$HADOOP_VERSION from Maven Central (first time only)"
    mkdir -p "$HDFS_HOME"
    rm -rf "$HDFS_HOME/libs"
    printf '%s\n' "$pom" >"$HDFS_HOME/pom.xml"
    ws_mvn -f "$HDFS_HOME/pom.xml" dependency:copy-dependencies -DincludeScope=runtime \
      -DoutputDirectory="$HDFS_HOME/libs" >&2 || ws_die "maven could not resolve hadoop-minicluster $HADOOP_VERSION"
    echo "$pom_sum" >"$HDFS_HOME/libs/.complete"
  fi
  local sum
  sum=$(cat "$SRC" "$WS_HERE/hdfs/log4j.properties" | sha256sum | cut -d' ' -f1)
  if [ "$(cat "$CLASSES/.source-sha256" 2>/dev/null)" != "$sum" ]; then
    ws_log "compiling $SRC"
    rm -rf "$CLASSES"
    mkdir -p "$CLASSES"
    javac -nowarn -d "$CLASSES" -cp "$HDFS_HOME/libs/*" "$SRC" >&2 || ws_die "javac WeirMiniDfs.java failed"
    cp "$WS_HERE/hdfs/log4j.properties" "$CLASSES/"
    echo "$sum" >"$CLASSES/.source-sha256"
  fi
}

svc_init() {
  mkdir -p "$WS_DIR/data"
  ws_write_env "HDFS_URL=hdfs://127.0.0.1:$(ws_free_port)"
}

svc_launch() {
  local heap=${HDFS_HEAP:-384m}
  rm -f "$READY"
  ws_spawn java "-Xms$heap" "-Xmx$heap" -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
    -Djava.awt.headless=true -Dfile.encoding=UTF-8 -Djava.net.preferIPv4Stack=true \
    -cp "$CLASSES:$HDFS_HOME/libs/*" WeirMiniDfs "$WS_DIR/data" "${HDFS_URL##*:}" "$READY"
}

svc_ready() {
  [ -s "$READY" ] && ws_port_open "${HDFS_URL##*:}"
}

ws_main "$@"
