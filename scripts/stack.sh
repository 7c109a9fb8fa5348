#!/usr/bin/env bash
# Starts, checks and stops the local stack: Kafka (KRaft), ClickHouse and
# Mosquitto on loopback, with all data under $PULSE_HOME. Starting twice is
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

status() {
  local name rc=0
  for name in kafka clickhouse mosquitto; do
    if pid=$(live_pid "$name"); then echo "$name: running (pid $pid)"; else echo "$name: stopped"; rc=1; fi
  done
  return $rc
}

case "${1:-}" in
  start)
    bash "$ROOT/scripts/clickhouse-node.sh" start clickhouse "$CLICKHOUSE_HTTP_PORT" "$CLICKHOUSE_TCP_PORT"
    start_mosquitto
    bash "$ROOT/scripts/kafka-node.sh" start kafka "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT"
    log "stack ready: Kafka 127.0.0.1:$KAFKA_PORT, ClickHouse http://127.0.0.1:$CLICKHOUSE_HTTP_PORT, MQTT 127.0.0.1:$MQTT_PORT"
    ;;
  stop)
    for name in kafka mosquitto clickhouse; do stop_process "$name"; done
    ;;
  status) status ;;
  reset)
    for name in kafka mosquitto clickhouse; do stop_process "$name"; done
    rm -rf "$PULSE_HOME/kafka" "$PULSE_HOME/clickhouse" "$PULSE_HOME/mosquitto"
    log "stack data removed"
    ;;
  *) die "usage: scripts/stack.sh start|stop|status|reset" ;;
esac
