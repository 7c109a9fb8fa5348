# Shared set-up of the end-to-end benchmark scripts: the stack, release
# binaries in $BIN, a run id in $RUN whose topics, schemas subject and
# registry belong to this run only. Sourced from the repository root.
#   bench_setup NAME   then   start_bench_registry
source scripts/common.sh

bench_setup() {
  bash scripts/install.sh >/dev/null
  bash scripts/stack.sh start >/dev/null
  export_stack_env
  log "building release binaries"
  cargo build --release --bins --quiet
  BIN="$CARGO_TARGET_DIR/release"
  RUN="$1$(date +%s)"
  export PULSE_TOPIC_PREFIX="$RUN." PULSE_REGISTRY_TOPIC="_${RUN}_schemas" RUST_LOG=warn \
    PULSE_REGISTRY_LISTEN="127.0.0.1:28081" PULSE_REGISTRY_URL="http://127.0.0.1:28081"
}

# Starts this run's schema registry and waits until it is ready.
start_bench_registry() {
  start_process "$RUN-registry" "$BIN/pulse-registry"
  wait_until 60 curl -sf "$PULSE_REGISTRY_URL/readyz" || die "registry not ready"
}

# Deletes what this run wrote, so that repeated runs do not fill the disk
# (a run of 1,000,000 events leaves gigabytes of records and rows): the
# topics named after $RUN (events, results, changelogs, schemas) and its
# ClickHouse databases. PULSE_BENCH_KEEP=1 keeps them for a look afterwards.
drop_bench_data() {
  [ "${PULSE_BENCH_KEEP:-0}" = 1 ] && return 0
  java -cp "$KAFKA_LIBS/*" -Dlog4j2.configurationFile="$ROOT/stack/kafka/log4j2.properties" \
    org.apache.kafka.tools.TopicCommand --bootstrap-server "$PULSE_KAFKA_BOOTSTRAP" --delete \
    --topic "(${RUN}.*|_${RUN}_.*)" --if-exists >/dev/null 2>&1 || log "could not delete the topics of $RUN"
  local db
  for db in $(curl -sf "$PULSE_CLICKHOUSE_URL/" --data-binary "SELECT name FROM system.databases WHERE name LIKE '${RUN}%'"); do
    curl -sf "$PULSE_CLICKHOUSE_URL/" --data-binary "DROP DATABASE IF EXISTS $db" >/dev/null ||
      log "could not drop database $db"
  done
}
