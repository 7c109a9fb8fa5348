#!/usr/bin/env bash
# Processor throughput, Kafka -> features + inference -> ClickHouse (+ results
# topic), side by side in one run on one machine: Pulse's processor against
# the Python reference pipeline in benches/reference/pipeline.py (confluent-
# kafka, fastavro, onnxruntime, clickhouse-connect) doing the same work on
# the same events. Each is timed from its start until every event is a row
# in ClickHouse.
#   benches/processor_throughput.sh [EVENTS]      (default 200000)
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh
EVENTS=${1:-200000}

bench_setup pbench
"$VENV/bin/pip" install -q --disable-pip-version-check -r benches/reference/requirements.txt
start_bench_registry
trap 'stop_process "$RUN-processor" || true; stop_process "$RUN-registry"' EXIT

log "producing $EVENTS events"
"$BIN/pulse-simulate" --transport kafka --rate 0 --count "$EVENTS" --devices 1000 --batch 1000 \
  --concurrency 4 --seed 7 >/dev/null 2>&1

rows() { curl -sf "$PULSE_CLICKHOUSE_URL/?database=$1" --data-binary 'SELECT count() FROM events' 2>/dev/null || echo 0; }
log "Pulse processor"
start=$(date +%s.%N)
PULSE_CLICKHOUSE_DATABASE="${RUN}_pulse" PULSE_PROCESSOR_GROUP="$RUN-pulse" \
  PULSE_PROCESSOR_LISTEN="127.0.0.1:28082" start_process "$RUN-processor" "$BIN/pulse-processor"
while [ "$(rows "${RUN}_pulse")" -lt "$EVENTS" ]; do sleep 0.1; done
pulse_s=$(python3 -c "import sys; print(float(sys.argv[2]) - float(sys.argv[1]))" "$start" "$(date +%s.%N)")
stop_process "$RUN-processor"

log "Python reference pipeline"
java -cp "$KAFKA_LIBS/*" -Dlog4j2.configurationFile="$ROOT/stack/kafka/log4j2.properties" \
  org.apache.kafka.tools.TopicCommand --bootstrap-server "$PULSE_KAFKA_BOOTSTRAP" --create \
  --topic "$RUN.reference-results" --partitions 6 --replication-factor 1 >/dev/null
start=$(date +%s.%N)
"$VENV/bin/python" benches/reference/pipeline.py --bootstrap "$PULSE_KAFKA_BOOTSTRAP" \
  --registry "$PULSE_REGISTRY_URL" --topic "$RUN.telemetry" --results-topic "$RUN.reference-results" \
  --group "$RUN-reference" --database "${RUN}_reference" --events "$EVENTS" >/dev/null
while [ "$(rows "${RUN}_reference")" -lt "$EVENTS" ]; do sleep 0.1; done
reference_s=$(python3 -c "import sys; print(float(sys.argv[2]) - float(sys.argv[1]))" "$start" "$(date +%s.%N)")

python3 - "$EVENTS" "$pulse_s" "$reference_s" <<'PY'
import sys
events, pulse, ref = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
print(f"\n{'pipeline':<44} {'seconds':>8} {'events/s':>10} {'x reference':>11}")
for name, s in [("Python reference (benches/reference)", ref), ("Pulse processor", pulse)]:
    print(f"{name:<44} {s:8.2f} {events / s:10.0f} {ref / s:11.2f}")
print(f"\n{events} events, 1000 devices; each timed from start until every event is a row in ClickHouse.")
PY
