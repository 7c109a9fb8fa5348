#!/usr/bin/env bash
# Processor lag at a steady load: events produced at RATE/s for SECONDS
# (default 20000/s for 60 s) while benches/lag_probe.py measures, per event,
# event time -> row visible in ClickHouse and event time -> result on the
# results topic (p50/p99, first 10 s not measured).
#   benches/processor_lag.sh [RATE] [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh
RATE=${1:-20000}
SECONDS_RUN=${2:-60}

bench_setup lag
export PULSE_CLICKHOUSE_DATABASE="${RUN}" PULSE_PROCESSOR_GROUP="$RUN-processor" \
  PULSE_PROCESSOR_LISTEN="127.0.0.1:28082"
start_bench_registry
start_process "$RUN-processor" "$BIN/pulse-processor"
trap 'stop_process "$RUN-processor"; stop_process "$RUN-registry"; drop_bench_data' EXIT
wait_until 60 curl -sf "127.0.0.1:28082/readyz" || die "processor not ready"

"$VENV/bin/python" benches/lag_probe.py --bootstrap "$PULSE_KAFKA_BOOTSTRAP" --results-topic "$RUN.results" \
  --clickhouse "$PULSE_CLICKHOUSE_URL" --database "$RUN" --seconds $((SECONDS_RUN + 5)) --skip-s 10 \
  > "$LOG_DIR/$RUN-probe.json" &
probe=$!
log "producing $RATE events/s for $SECONDS_RUN s"
sim=$("$BIN/pulse-simulate" --transport kafka --rate "$RATE" --duration-s "$SECONDS_RUN" --devices 1000 \
  --batch 500 --concurrency 4 --seed 5 2>/dev/null | tail -n 1)
wait "$probe"
python3 - "$sim" "$(cat "$LOG_DIR/$RUN-probe.json")" "$RATE" <<'PY'
import json, sys
sim, probe, rate = json.loads(sys.argv[1])["summary"], json.loads(sys.argv[2]), int(sys.argv[3])
print(f"\nload: {sim['events']} events in {sim['seconds']:.1f} s = {sim['events_per_second']:.0f}/s (target {rate}/s)")
print(f"{'event time ->':<28} {'events':>9} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
for name, label in [("clickhouse_visible", "row visible in ClickHouse"), ("results_topic", "result on results topic")]:
    s = probe[name]
    print(f"{label:<28} {s['events']:>9} {s['p50_ms']:8.0f} {s['p99_ms']:8.0f} {s['max_ms']:8.0f}")
print("ClickHouse visibility is polled every 50 ms (upper bound, 50 ms resolution); first 10 s not measured.")
PY
