#!/usr/bin/env bash
# One ClickHouse server on loopback, data under $PULSE_HOME/NAME. The
# stack's server is NAME=clickhouse; outage tests start their own.
#   scripts/clickhouse-node.sh start NAME HTTP_PORT TCP_PORT
#   scripts/clickhouse-node.sh stop NAME
#   scripts/clickhouse-node.sh remove NAME   (stop and delete its data)
#   scripts/clickhouse-node.sh freeze|thaw NAME   (SIGSTOP/SIGCONT: a server that hangs)
source "$(dirname "$0")/common.sh"

start() {
  local name=$1 http_port=$2 tcp_port=$3
  local dir="$PULSE_HOME/$name"
  mkdir -p "$dir/log" "$dir/data" "$dir/tmp" "$dir/user_files" "$dir/format_schemas"
  render "$ROOT/stack/clickhouse/config.xml.in" "$dir/config.xml" \
    "DIR=$dir" "HTTP_PORT=$http_port" "TCP_PORT=$tcp_port"
  cp "$ROOT/stack/clickhouse/users.xml" "$dir/users.xml"
  start_process "$name" /usr/sbin/clickhouse-server --config-file="$dir/config.xml"
  wait_until 60 bash -c "curl -sf 'http://127.0.0.1:$http_port/?query=SELECT%201' | grep -q 1" \
    || die "ClickHouse $name did not become ready; see $dir/log"
}

case "${1:-}" in
  start) [ $# -eq 4 ] || die "usage: clickhouse-node.sh start NAME HTTP_PORT TCP_PORT"; start "$2" "$3" "$4" ;;
  stop) signal_process "$2" CONT; stop_process "$2" ;;
  remove) signal_process "$2" CONT; stop_process "$2"; rm -rf "${PULSE_HOME:?}/$2" ;;
  freeze) signal_process "$2" STOP ;;
  thaw) signal_process "$2" CONT ;;
  *) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
