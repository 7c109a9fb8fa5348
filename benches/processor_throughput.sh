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
trap 'stop_process "$RUN-processor" || true; stop_process "$RUN-registry"; drop_bench_data' EXIT

log "producing $EVENTS events"
"$BIN/pulse-simulate" --transport kafka --rate 0 --count "$EVENTS" --devices 1000 --batch 1000 \
  --concurrency 4 --seed 7 >/dev/null 2>&1

# Seconds from $2 (a start time) until database $1 holds every event, and
# the pace once started (benches/until_stored.py).
until_stored() { python3 benches/until_stored.py "$PULSE_CLICKHOUSE_URL" "$1" "$EVENTS" "$2"; }
# CPU seconds (user + system) process $1 has used so far.
cpu_s() { awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15) / hz }' "/proc/$1/stat" 2>/dev/null || echo 0; }
# CPU seconds the broker and ClickHouse have used so far, "kafka clickhouse".
servers_cpu() { echo "$(cpu_s "$(live_pid kafka)") $(cpu_s "$(live_pid clickhouse)")"; }

log "Pulse processor"
read -r kafka0 clickhouse0 < <(servers_cpu)
start=$(date +%s.%N)
PULSE_CLICKHOUSE_DATABASE="${RUN}_pulse" PULSE_PROCESSOR_GROUP="$RUN-pulse" \
  PULSE_PROCESSOR_LISTEN="127.0.0.1:28082" RUST_LOG=info start_process "$RUN-processor" "$BIN/pulse-processor"
read -r pulse_s pulse_pace < <(until_stored "${RUN}_pulse" "$start")
# Where the processor's time went, from its own stage histograms.
stages=$(curl -sf 127.0.0.1:28082/metrics | grep -E '^pulse_processor_[a-z_]+_seconds_(sum|count)' || true)
pulse_cpu=$(cpu_s "$(live_pid "$RUN-processor")")
# Its peak resident memory (KiB): the backlog keeps batches at their maximum.
pulse_rss=$(awk '/^VmHWM/ { print $2 }' "/proc/$(live_pid "$RUN-processor")/status" 2>/dev/null || echo 0)
read -r kafka1 clickhouse1 < <(servers_cpu)
stop_process "$RUN-processor"

log "Python reference pipeline"
java -cp "$KAFKA_LIBS/*" -Dlog4j2.configurationFile="$ROOT/stack/kafka/log4j2.properties" \
  org.apache.kafka.tools.TopicCommand --bootstrap-server "$PULSE_KAFKA_BOOTSTRAP" --create \
  --topic "$RUN.reference-results" --partitions 6 --replication-factor 1 >/dev/null
read -r kafka2 clickhouse2 < <(servers_cpu)
start=$(date +%s.%N)
summary="$PULSE_HOME/$RUN-reference.json"
"$VENV/bin/python" benches/reference/pipeline.py --bootstrap "$PULSE_KAFKA_BOOTSTRAP" \
  --registry "$PULSE_REGISTRY_URL" --topic "$RUN.telemetry" --results-topic "$RUN.reference-results" \
  --group "$RUN-reference" --database "${RUN}_reference" --events "$EVENTS" >"$summary" &
reference=$!
read -r reference_s reference_pace < <(until_stored "${RUN}_reference" "$start")
read -r kafka3 clickhouse3 < <(servers_cpu)
wait "$reference"
reference_cpu=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["cpu_seconds"])' "$summary")

python3 - "$EVENTS" "$pulse_s" "$reference_s" "$stages" "$pulse_pace" "$reference_pace" \
  "$pulse_cpu $kafka0 $clickhouse0 $kafka1 $clickhouse1" \
  "$reference_cpu $kafka2 $clickhouse2 $kafka3 $clickhouse3" "${pulse_rss:-0}" <<'PY'
import sys
events, pulse, ref = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
pulse_pace, ref_pace = float(sys.argv[5]), float(sys.argv[6])
stages = {}
for line in sys.argv[4].splitlines():
    name, value = line.rsplit(" ", 1)
    stage, kind = name.removeprefix("pulse_processor_").rsplit("_seconds_", 1)
    stages.setdefault(stage, {})[kind] = float(value)
if stages:
    print(f"\nPulse processor stages: {'stage':<18} {'batches':>8} {'seconds':>8}")
    for stage, v in sorted(stages.items(), key=lambda kv: -kv[1].get("sum", 0)):
        print(f"{'':<24}{stage:<18} {v.get('count', 0):8.0f} {v.get('sum', 0):8.2f}")
print(f"\n{'pipeline':<38} {'seconds':>8} {'events/s':>9} {'x ref':>6} {'rows/s once started':>20} {'x ref':>6}")
for name, s, pace in [("Python reference (benches/reference)", ref, ref_pace), ("Pulse processor", pulse, pulse_pace)]:
    print(f"{name:<38} {s:8.2f} {events / s:9.0f} {ref / s:6.2f} {pace:20.0f} {pace / ref_pace:6.2f}")
print(f"\nCPU seconds while each ran: {'pipeline':>9} {'Kafka':>6} {'ClickHouse':>10} {'pipeline x ref':>15}")
cpu = {}
for name, arg in [("Python reference", sys.argv[8]), ("Pulse processor", sys.argv[7])]:
    own, k0, c0, k1, c1 = map(float, arg.split())
    cpu[name] = own
    print(f"{name:<27}{own:9.2f} {k1 - k0:6.2f} {c1 - c0:10.2f} {cpu['Python reference'] / max(own, 1e-9):15.2f}")
print(f"\nPulse processor peak RSS: {int(sys.argv[9]) / 1024:.0f} MiB")
print(f"\n{events} events, 1000 devices. seconds: from the pipeline's start until every event is a row in")
print("ClickHouse (start-up included: connecting, joining the consumer group, migrations, state restore);")
print("rows/s once started: from the first row stored until the last.")
PY
