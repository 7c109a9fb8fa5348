#!/usr/bin/env bash
# One single-node Kafka cluster (KRaft, combined broker+controller) on
# loopback, data under $PULSE_HOME/NAME. The stack's broker is NAME=kafka;
# fault tests start their own so that killing it disturbs nothing else.
#   scripts/kafka-node.sh start NAME PORT CONTROLLER_PORT
#   scripts/kafka-node.sh stop NAME     (SIGTERM, a clean shutdown)
#   scripts/kafka-node.sh kill NAME     (SIGKILL, a crash)
#   scripts/kafka-node.sh remove NAME   (stop and delete its data)
source "$(dirname "$0")/common.sh"

KAFKA_JAVA=(java -Xms256m -Xmx512m -XX:+UseG1GC -XX:MaxGCPauseMillis=20
  -Djava.awt.headless=true
  -Dlog4j2.configurationFile="$ROOT/stack/kafka/log4j2.properties"
  -cp "$KAFKA_LIBS/*")

start() {
  local name=$1 port=$2 controller_port=$3
  local dir="$PULSE_HOME/$name"
  mkdir -p "$dir/data"
  render "$ROOT/stack/kafka/server.properties.in" "$dir/server.properties" \
    "PORT=$port" "CONTROLLER_PORT=$controller_port" "DATA=$dir/data"
  if [ ! -f "$dir/data/meta.properties" ]; then
    local cluster_id; cluster_id=$("${KAFKA_JAVA[@]}" kafka.tools.StorageTool random-uuid)
    "${KAFKA_JAVA[@]}" kafka.tools.StorageTool format --standalone -t "$cluster_id" \
      -c "$dir/server.properties" >/dev/null
  fi
  start_process "$name" "${KAFKA_JAVA[@]}" kafka.Kafka "$dir/server.properties"
  wait_until 90 kcat -b "127.0.0.1:$port" -L -m 2 || die "Kafka $name did not become ready; see $LOG_DIR/$name.log"
}

case "${1:-}" in
  start) [ $# -eq 4 ] || die "usage: kafka-node.sh start NAME PORT CONTROLLER_PORT"; start "$2" "$3" "$4" ;;
  stop) stop_process "$2" ;;
  kill)
    if pid=$(live_pid "$2"); then
      kill -KILL "$pid"
      wait_until 30 bash -c "! kill -0 $pid" || die "$2 survived SIGKILL"
      rm -f "$RUN_DIR/$2.pid"
      log "$2 killed"
    fi
    ;;
  remove) stop_process "$2"; rm -rf "${PULSE_HOME:?}/$2" ;;
  *) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
