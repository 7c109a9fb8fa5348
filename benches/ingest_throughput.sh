#!/usr/bin/env bash
# End-to-end ingest throughput, side by side in one run on one machine:
# Kafka's own producer perf tool (the ceiling) against Pulse's paths into
# Kafka: direct produce, batched HTTP, single-event HTTP (with p50/p99
# latency under load) and MQTT through the bridge. Same broker, same
# acks=all and idempotence, records of the same size as Pulse's events.
#   benches/ingest_throughput.sh [EVENTS]      (default 200000 per path)
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh
EVENTS=${1:-200000}

bench_setup bench
export PULSE_MQTT_TOPIC_ROOT="$RUN" PULSE_MQTT_CLIENT_ID="$RUN-bridge" \
  PULSE_INGEST_LISTEN="127.0.0.1:28080" PULSE_INGEST_URL="http://127.0.0.1:28080"
start_bench_registry
start_process "$RUN-ingest" "$BIN/pulse-ingest"
wait_until 60 curl -sf "$PULSE_INGEST_URL/readyz" || die "ingest not ready"
trap 'stop_process "$RUN-ingest"; stop_process "$RUN-registry"; drop_bench_data' EXIT

sim() { "$BIN/pulse-simulate" --rate 0 --count "$EVENTS" --devices 1000 "$@" 2>/dev/null | tail -n 1; }

log "direct produce (Avro, Confluent wire format)"
direct=$(sim --transport kafka --batch 500 --concurrency 4)
size=$(python3 -c 'import json,sys; print(round(json.loads(sys.argv[1])["summary"]["mean_event_bytes"]))' "$direct")

log "Kafka ProducerPerformance at $size-byte records"
java -cp "$KAFKA_LIBS/*" -Dlog4j2.configurationFile="$ROOT/stack/kafka/log4j2.properties" \
  org.apache.kafka.tools.TopicCommand --bootstrap-server "$PULSE_KAFKA_BOOTSTRAP" --create \
  --topic "$RUN.perf" --partitions 6 --replication-factor 1 >/dev/null
perf=$(java -Xmx512m -cp "$KAFKA_LIBS/*" -Dlog4j2.configurationFile="$ROOT/stack/kafka/log4j2.properties" \
  org.apache.kafka.tools.ProducerPerformance --topic "$RUN.perf" --num-records "$EVENTS" \
  --record-size "$size" --throughput -1 --producer-props bootstrap.servers="$PULSE_KAFKA_BOOTSTRAP" \
  acks=all enable.idempotence=true linger.ms=5 compression.type=lz4 | tail -n 1)

log "HTTP, batches of 500"
http_batch=$(sim --transport http --batch 500 --concurrency 4)
log "HTTP, single events, 32 concurrent clients"
http_single=$(sim --transport http --batch 1 --concurrency 32)
log "MQTT through the bridge"
mqtt=$(sim --transport mqtt --batch 100)

python3 - "$perf" "$direct" "$http_batch" "$http_single" "$mqtt" <<'PY'
import json, re, sys
perf = float(re.search(r"([\d.]+) records/sec", sys.argv[1]).group(1))
rows = [("Kafka ProducerPerformance (ceiling)", perf, None, None)]
names = ["direct produce (pulse-simulate --transport kafka)", "HTTP batches of 500", "HTTP single events x32", "MQTT via bridge"]
for name, raw in zip(names, sys.argv[2:]):
    s = json.loads(raw)["summary"]
    assert s["failures"] == 0, f"{name}: {s['failures']} failed sends"
    rows.append((name, s["events_per_second"], s["p50_ms"], s["p99_ms"]))
print(f"\n{'path':<52} {'events/s':>10} {'x ceiling':>9} {'p50 ms':>8} {'p99 ms':>8}")
for name, rate, p50, p99 in rows:
    fmt = lambda v: f"{v:8.2f}" if v is not None else f"{'':>8}"
    print(f"{name:<52} {rate:10.0f} {rate / perf:9.2f} {fmt(p50)} {fmt(p99)}")
print("\np50/p99: per request (HTTP), per batch (direct), per publish (MQTT).")
PY
