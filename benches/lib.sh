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
