# Shared settings of the project's scripts. Sourced, never run.
# Everything a run writes lives under $PULSE_HOME (default: .pulse in the
# checkout); downloads and build outputs that can be reused across checkouts
# live under $PULSE_CACHE (default: ~/.cache/pulse).

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PULSE_HOME="${PULSE_HOME:-$ROOT/.pulse}"
PULSE_CACHE="${PULSE_CACHE:-$HOME/.cache/pulse}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PULSE_CACHE/target}"

KAFKA_VERSION=4.3.1
KAFKA_LIBS="$PULSE_CACHE/kafka-$KAFKA_VERSION/libs"
VENV="$PULSE_CACHE/venv"

KAFKA_PORT="${PULSE_KAFKA_PORT:-19092}"
KAFKA_CONTROLLER_PORT="${PULSE_KAFKA_CONTROLLER_PORT:-19093}"
CLICKHOUSE_HTTP_PORT="${PULSE_CLICKHOUSE_HTTP_PORT:-18123}"
CLICKHOUSE_TCP_PORT="${PULSE_CLICKHOUSE_TCP_PORT:-19000}"
MQTT_PORT="${PULSE_MQTT_PORT:-11883}"
REGISTRY_PORT="${PULSE_REGISTRY_PORT:-18081}"
REGISTRY_METRICS_PORT="${PULSE_REGISTRY_METRICS_PORT:-18083}"
INGEST_PORT="${PULSE_INGEST_PORT:-18080}"
PROCESSOR_PORT="${PULSE_PROCESSOR_PORT:-18082}"
QUERY_API_PORT="${PULSE_QUERY_API_PORT:-18090}"
WORKER_PORT="${PULSE_WORKER_PORT:-18095}"
# The S3-compatible test server: versitygw (Apache-2.0) over a directory,
# built from the Go module proxy into the cache.
S3_PORT="${PULSE_S3_PORT:-19100}"
VERSITYGW_VERSION="v1.8.0"
VERSITYGW="$PULSE_CACHE/versitygw-$VERSITYGW_VERSION/versitygw"
S3_BUCKET="pulse-test"
S3_ACCESS_KEY="pulse-test-access"
S3_SECRET_KEY="pulse-test-secret-key"
# The OCR models (PP-OCRv6 detection and recognition, the orientation
# classifier), taken out of RapidOCR's wheel, pinned by hash in
# scripts/ocr-models.txt.
OCR_MODELS="$PULSE_CACHE/ocr-models-rapidocr-3.10.0"
# The font the meter snapshots are drawn in (Debian's fonts-dejavu-core).
OCR_FONT="/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"

RUN_DIR="$PULSE_HOME/run"
LOG_DIR="$PULSE_HOME/logs"
mkdir -p "$RUN_DIR" "$LOG_DIR"

log() { printf '[pulse] %s\n' "$*" >&2; }
die() { printf '[pulse] error: %s\n' "$*" >&2; exit 1; }

# Waits until "$@" succeeds, polling every 0.2 s, for at most $1 seconds.
wait_until() {
  local deadline=$(( $(date +%s) + $1 )); shift
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$deadline" ] || return 1
    sleep 0.2
  done
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# The pid in a pid file, if that process is still alive.
live_pid() {
  local f="$RUN_DIR/$1.pid"
  [ -f "$f" ] || return 1
  local pid; pid=$(cat "$f")
  kill -0 "$pid" 2>/dev/null && echo "$pid"
}

signal_process() { # name signal: signals the process if it runs
  local pid
  if pid=$(live_pid "$1"); then kill -"$2" "$pid"; fi
}

# Starts a long-running process in its own session, logging to $LOG_DIR/NAME.log.
start_process() {
  local name=$1; shift
  if live_pid "$name" >/dev/null; then
    log "$name already running (pid $(live_pid "$name"))"
    return 0
  fi
  setsid "$@" >>"$LOG_DIR/$name.log" 2>&1 < /dev/null &
  echo $! > "$RUN_DIR/$name.pid"
  log "$name started (pid $!, log $LOG_DIR/$name.log)"
}

# Sends SIGTERM to a process this project started and waits for it to exit.
stop_process() {
  local name=$1 pid
  pid=$(live_pid "$name") || { rm -f "$RUN_DIR/$name.pid"; return 0; }
  kill -TERM "$pid" 2>/dev/null || true
  if ! wait_until 30 bash -c "! kill -0 $pid"; then
    log "$name did not stop within 30 s; killing it"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$RUN_DIR/$name.pid"
  log "$name stopped"
}

render() { # template destination key=value...: replaces @key@ with value
  local src=$1 dst=$2; shift 2
  local text; text=$(cat "$src")
  for kv in "$@"; do text=${text//@${kv%%=*}@/${kv#*=}}; done
  printf '%s\n' "$text" > "$dst"
}

ort_dylib() {
  ls "$VENV"/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.* 2>/dev/null | head -n 1
}

# The settings every Pulse binary and test reads.
export_stack_env() {
  export PULSE_KAFKA_BOOTSTRAP="127.0.0.1:$KAFKA_PORT"
  export PULSE_CLICKHOUSE_URL="http://127.0.0.1:$CLICKHOUSE_HTTP_PORT"
  export PULSE_REGISTRY_URL="http://127.0.0.1:$REGISTRY_PORT"
  export PULSE_MQTT_URL="mqtt://127.0.0.1:$MQTT_PORT"
  export PULSE_MODEL_PATH="$ROOT/processor/model/anomaly.onnx"
  export PULSE_PYTHON="$VENV/bin/python"
  ORT_DYLIB_PATH="$(ort_dylib)"
  export ORT_DYLIB_PATH
  export PULSE_BIN_DIR="$CARGO_TARGET_DIR/debug"
  export PULSE_S3_ENDPOINT="http://127.0.0.1:$S3_PORT"
  export PULSE_S3_BUCKET="$S3_BUCKET"
  export PULSE_S3_ACCESS_KEY="$S3_ACCESS_KEY"
  export PULSE_S3_SECRET_KEY="$S3_SECRET_KEY"
  export PULSE_OCR_MODEL_DIR="$OCR_MODELS"
  export PULSE_OCR_FONT="$OCR_FONT"
}
