#!/usr/bin/env bash
# Installs what the local stack needs, skipping whatever is already there:
# ClickHouse, Mosquitto and kcat from Debian's packages, the Apache Kafka jars
# from Maven Central (stack/kafka/pom.xml), and a Python environment with
# ONNX Runtime and the test clients from PyPI (scripts/requirements.txt).
source "$(dirname "$0")/common.sh"

install_debian_packages() {
  local missing=()
  command -v clickhouse-server >/dev/null || [ -x /usr/sbin/clickhouse-server ] || missing+=(clickhouse-server clickhouse-client)
  [ -x /usr/sbin/mosquitto ] || missing+=(mosquitto)
  command -v kcat >/dev/null || missing+=(kcat)
  command -v curl >/dev/null || missing+=(curl)
  command -v kubectl >/dev/null || missing+=(kubectl)
  command -v java >/dev/null || missing+=(openjdk-17-jre-headless)
  command -v mvn >/dev/null || missing+=(maven)
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing Debian packages: ${missing[*]}"
  local sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
}

install_kafka() {
  [ -f "$KAFKA_LIBS/.pom" ] && cmp -s "$KAFKA_LIBS/.pom" "$ROOT/stack/kafka/pom.xml" && return 0
  log "assembling Apache Kafka $KAFKA_VERSION from Maven Central"
  rm -rf "$KAFKA_LIBS.tmp"
  mvn -q -B -Dstyle.color=never -f "$ROOT/stack/kafka/pom.xml" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$KAFKA_LIBS.tmp"
  mkdir -p "$(dirname "$KAFKA_LIBS")"
  cp "$ROOT/stack/kafka/pom.xml" "$KAFKA_LIBS.tmp/.pom"
  rm -rf "$KAFKA_LIBS" && mv "$KAFKA_LIBS.tmp" "$KAFKA_LIBS"
}

install_python() {
  local stamp="$VENV/.requirements"
  if [ -f "$stamp" ] && cmp -s "$stamp" "$ROOT/scripts/requirements.txt"; then
    return 0
  fi
  log "installing the Python environment (ONNX Runtime, test clients) into $VENV"
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check -r "$ROOT/scripts/requirements.txt"
  cp "$ROOT/scripts/requirements.txt" "$stamp"
}

install_debian_packages
install_kafka
install_python
[ -n "$(ort_dylib)" ] || die "ONNX Runtime's shared library is missing from $VENV"
log "install complete"
