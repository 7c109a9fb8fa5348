#!/usr/bin/env bash
# Starts, checks and stops the local stack: Kafka (KRaft), ClickHouse,
# Mosquitto and an S3-compatible server (versitygw) on loopback, with all data under $PULSE_HOME. Starting twice is
# harmless; stop stops only the processes this script started.
#   scripts/stack.sh start|stop|status|reset
source "$(dirname "$0")/common.sh"

start_mosquitto() {
  local dir="$PULSE_HOME/mosquitto"
  mkdir -p "$dir/data"
  render "$ROOT/stack/mosquitto/mosquitto.conf.in" "$dir/mosquitto.conf" \
    "DIR=$dir" "PORT=$MQTT_PORT" "USER=$(id -un)"
  start_process mosquitto /usr/sbin/mosquitto -c "$dir/mosquitto.conf"
  wait_until 30 port_open "$MQTT_PORT" || die "Mosquitto did not start; see $dir/mosquitto.log"
}

# versitygw's posix backend serves each directory under its root as a
# bucket, so the tests' bucket is a directory made before it starts.
start_s3() {
  local dir="$PULSE_HOME/s3"
  mkdir -p "$dir/root/$S3_BUCKET"
  start_process s3 env ROOT_ACCESS_KEY_ID="$S3_ACCESS_KEY" ROOT_SECRET_ACCESS_KEY="$S3_SECRET_KEY" \
    "$VERSITYGW" --port "127.0.0.1:$S3_PORT" --quiet posix "$dir/root"
  wait_until 30 port_open "$S3_PORT" || die "versitygw did not start; see $LOG_DIR/s3.log"
}

status() {
  local name rc=0
  for name in kafka clickhouse mosquitto s3; do
    if pid=$(live_pid "$name"); then echo "$name: running (pid $pid)"; else echo "$name: stopped"; rc=1; fi
  done
  return $rc
}

case "${1:-}" in
  start)
    bash "$ROOT/scripts/clickhouse-node.sh" start clickhouse "$CLICKHOUSE_HTTP_PORT" "$CLICKHOUSE_TCP_PORT"
    start_mosquitto
    start_s3
    bash "$ROOT/scripts/kafka-node.sh" start kafka "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT"
    log "stack ready: Kafka 127.0.0.1:$KAFKA_PORT, ClickHouse http://127.0.0.1:$CLICKHOUSE_HTTP_PORT, MQTT 127.0.0.1:$MQTT_PORT, S3 http://127.0.0.1:$S3_PORT"
    ;;
  stop)
    for name in kafka mosquitto s3 clickhouse; do stop_process "$name"; done
    ;;
  status) status ;;
  reset)
    for name in kafka mosquitto s3 clickhouse; do stop_process "$name"; done
    rm -rf "$PULSE_HOME/kafka" "$PULSE_HOME/clickhouse" "$PULSE_HOME/mosquitto" "$PULSE_HOME/s3"
    log "stack data removed"
    ;;
  *) die "usage: scripts/stack.sh start|stop|status|reset" ;;
esac
