#!/usr/bin/env bash
# Installs the Flink side of `cargo bench --bench kafka` (WEIR_BENCH_FLINK=1) once, into
# $WEIR_FLINK_HOME (default ~/.cache/weir-flink): a venv with PyFlink 2.3.0 from PyPI (a local
# MiniCluster; flink-dist's jars come in apache-flink-libraries) and Flink's Kafka SQL connector
# from Maven Central. No Kafka connector is built for Flink 2.3; 5.0.0-2.2, the newest for
# Flink 2.x, works with 2.3.0. Prints the venv's python on its last line.
set -euo pipefail
H=${WEIR_FLINK_HOME:-$HOME/.cache/weir-flink}
FLINK_VERSION=2.3.0
CONNECTOR=org.apache.flink:flink-sql-connector-kafka:5.0.0-2.2
JAR="$H/jars/flink-sql-connector-kafka-5.0.0-2.2.jar"
mkdir -p "$H/jars"
if [ ! -f "$H/venv/.complete-$FLINK_VERSION" ]; then
  echo "flink setup: installing apache-flink==$FLINK_VERSION into $H/venv (first time only)" >&2
  [ -x "$H/venv/bin/python" ] || python3 -m venv "$H/venv"
  # No pip cache: the wheels (~0.5 GB) would be kept twice.
  "$H/venv/bin/pip" install -q --no-cache-dir "apache-flink==$FLINK_VERSION" >&2
  touch "$H/venv/.complete-$FLINK_VERSION"
fi
if [ ! -f "$JAR" ]; then
  echo "flink setup: resolving $CONNECTOR from Maven Central (first time only)" >&2
  mvn -q dependency:copy -Dartifact="$CONNECTOR" -DoutputDirectory="$H/jars" >&2
fi
echo "$H/venv/bin/python"
