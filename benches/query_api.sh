#!/usr/bin/env bash
# Query API benchmarks, each side by side with its baseline in the same run:
#  1. hot reads (devices, series, a page of events, aggregates) for 10 s each
#     at 16 concurrent requests through the API with its cache off and on,
#     next to the same statements sent straight to ClickHouse's HTTP
#     interface: req/s, p50, p99;
#  2. WebSocket fan-out: CLIENTS dashboards on one API while results are
#     published at 100/s for 20 s: publish -> received p50/p99 per client,
#     next to one plain Kafka consumer of the results topic.
# EVENTS events of one tenant (100 devices, the last 24 hours) are generated
# in ClickHouse first.
#   benches/query_api.sh [EVENTS] [CLIENTS]
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh
EVENTS=${1:-1000000}
CLIENTS=${2:-1000}
# Each WebSocket client is a socket on both ends.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

bench_setup query
DB="$RUN"
ch() { curl -sSf "$PULSE_CLICKHOUSE_URL/?database=$1" --data-binary @- >/dev/null; }
echo "CREATE DATABASE $DB" | ch default
for f in schemas/clickhouse/0*.sql; do sed "s/{db}/$DB/g" "$f" | ch "$DB"; done
END_MS=$(( $(date +%s) * 1000 ))
FROM_MS=$(( END_MS - 86400000 ))
log "generating $EVENTS events in ClickHouse database $DB"
ch "$DB" <<SQL
INSERT INTO events (tenant_id, source_id, event_id, kind, event_time, event_time_ms, schema_id,
  reading_names, reading_values, event_type, properties_json, firmware_version, score, is_anomaly,
  model_version, processed_ms, device_seq, feature_names, feature_values)
SELECT 'bench', concat('device-', toString(100 + number % 100)), concat('evt-', toString(number)),
  'telemetry', toDateTime(intDiv(t, 1000)), t, 1,
  ['temperature_c', 'humidity_pct'], [18 + (number % 97) / 10, 50 + (number % 89) / 10],
  '', '{}', '2.1.0', (number % 1000) / 1000, (number % 1000) >= 990, 'pca-ae-2', t + 300,
  intDiv(number, 100) + 1, [], []
FROM (SELECT number, $FROM_MS + intDiv(number * 86400000, $EVENTS) AS t FROM system.numbers LIMIT $EVENTS)
SQL

SECRET="$LOG_DIR/$RUN-hs256.secret"
head -c 48 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$SECRET"
TOKEN=$("$BIN/pulse-token" --jwt-hs256-secret-file "$SECRET" --tenant bench --role dashboard)
export PULSE_CLICKHOUSE_DATABASE="$DB" PULSE_JWT_HS256_SECRET_FILE="$SECRET" \
  PULSE_QUERY_RATE_LIMIT=1000000 PULSE_QUERY_RATE_BURST=1000000
PULSE_QUERY_LISTEN=127.0.0.1:28090 start_process "$RUN-api" "$BIN/pulse-query-api"
PULSE_QUERY_LISTEN=127.0.0.1:28091 PULSE_QUERY_CACHE_TTL_MS=0 start_process "$RUN-api-nocache" "$BIN/pulse-query-api"
trap 'stop_process "$RUN-api"; stop_process "$RUN-api-nocache"; drop_bench_data' EXIT
for port in 28090 28091; do
  wait_until 60 curl -sf "127.0.0.1:$port/readyz" || die "query API on $port not ready"
done

"$BIN/pulse-query-load" http --api http://127.0.0.1:28090 --api-nocache http://127.0.0.1:28091 \
  --token "$TOKEN" --clickhouse "$PULSE_CLICKHOUSE_URL" --database "$DB" --tenant bench \
  --device device-107 --from-ms "$FROM_MS" --to-ms "$END_MS"
"$BIN/pulse-query-load" ws-fanout --url "ws://127.0.0.1:28090/v1/stream?access_token=$TOKEN" \
  --clients "$CLIENTS" --bootstrap "$PULSE_KAFKA_BOOTSTRAP" --topic "$RUN.results" --tenant bench
